//! The event repository cqrs-es writes through: postgres-es's, with personal values and
//! secrets' derivatives sealed on the way in and opened on the way out. Aggregates see
//! plaintext (a login compares the password hash, a refresh the token hash, a reset the
//! nonce, an API-key check the secret hash); the log (and so the stream) holds ciphertext.
//!
//! Events stored at an earlier version are upcast ([`crate::upcast`]) on every load path
//! before cqrs-es deserialises them, so aggregates only ever see the current shapes.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::{CryptoError, KeyStore};
use crate::personal::{
    has_open_secrets, open_values, seal_event, secret_owner, stored_subject, SecretOwner,
};
use crate::upcast::upcast_serialized;

pub struct EncryptingRepository {
    inner: PostgresEventRepository,
    /// The database `inner` writes to: for the owner of a session's later events.
    pool: PgPool,
    keys: KeyStore,
}

fn persistence(err: CryptoError) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(err))
}

impl EncryptingRepository {
    pub fn new(pool: PgPool, keys: KeyStore) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            pool,
            keys,
        }
    }

    /// Loaded events as aggregates read them: upcast to the current version (the
    /// upcasters see the payload as stored, as every other reader's do), then opened.
    async fn open(
        &self,
        events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events: Vec<SerializedEvent> = events.into_iter().map(upcast_serialized).collect();
        for e in events.iter_mut() {
            open_values(&self.keys, &mut [&mut e.payload, &mut e.metadata])
                .await
                .map_err(persistence)?;
        }
        Ok(events)
    }

    /// One aggregate's events as they are stored: personal values and secrets' derivatives
    /// sealed (the command bus appends them itself; see [`crate::command_bus`]).
    pub async fn seal(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut sealed = events.to_vec();
        // A commit is one aggregate's events. Its owner: a user an earlier event of this
        // commit names, else the log's subject of the aggregate (looked up at most once,
        // only for secrets in events that name no user, e.g. a session's rotation).
        let mut owner: Option<Uuid> = None;
        let mut looked_up = false;
        for e in sealed.iter_mut() {
            let aggregate_subject =
                match secret_owner(&e.aggregate_type, &e.aggregate_id, &e.payload) {
                    SecretOwner::User(user) => {
                        owner.get_or_insert(user);
                        None
                    }
                    SecretOwner::Aggregate
                        if owner.is_none() && !looked_up && has_open_secrets(&e.payload) =>
                    {
                        looked_up = true;
                        owner = stored_subject(&self.pool, &e.aggregate_type, &e.aggregate_id)
                            .await
                            .map_err(persistence)?;
                        owner
                    }
                    SecretOwner::Aggregate => owner,
                    SecretOwner::System => None,
                };
            seal_event(
                &self.keys,
                &e.aggregate_type,
                &e.aggregate_id,
                &mut e.payload,
                &mut e.metadata,
                aggregate_subject,
            )
            .await
            .map_err(persistence)?;
        }
        Ok(sealed)
    }
}

impl PersistedEventRepository for EncryptingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.inner.get_events::<A>(aggregate_id).await?;
        self.open(events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        self.open(events).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let sealed = self.seal(events).await?;
        self.inner.persist::<A>(&sealed, snapshot_update).await
    }

    /// Replays stream the log as stored (sealed, at the stored versions): cqrs-es upcasts
    /// them as it reads them, given [`crate::upcast::cqrs_upcasters`] (`ReplayStream::next`,
    /// `QueryReplay::with_upcasters`). Nothing in Chronicle replays this way; the log is
    /// read in global order through [`crate::log`], which upcasts too.
    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
