//! The event repository cqrs-es writes through: postgres-es's, with personal values sealed
//! on the way in and opened on the way out. Aggregates see plaintext; the log (and so
//! the stream) holds ciphertext.
//!
//! Events stored at an earlier version are upcast ([`crate::upcast`]) on every load path
//! before cqrs-es deserialises them, so aggregates only ever see the current shapes.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;

use crate::crypto::KeyStore;
use crate::personal::{open_values, seal_event};
use crate::upcast::upcast_serialized;

pub struct EncryptingRepository {
    inner: PostgresEventRepository,
    keys: KeyStore,
}

impl EncryptingRepository {
    pub fn new(inner: PostgresEventRepository, keys: KeyStore) -> Self {
        Self { inner, keys }
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
                .map_err(|err| PersistenceError::UnknownError(Box::new(err)))?;
        }
        Ok(events)
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
        let mut sealed = events.to_vec();
        for e in sealed.iter_mut() {
            seal_event(
                &self.keys,
                &e.aggregate_type,
                &e.aggregate_id,
                &mut e.payload,
                &mut e.metadata,
            )
            .await
            .map_err(|err| PersistenceError::UnknownError(Box::new(err)))?;
        }
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
