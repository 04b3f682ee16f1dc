//! Executing commands: cqrs-es over the plain postgres-es event store.
//!
//! `CqrsFramework::execute` returns nothing, yet a command must answer with the log cursor
//! of its last event, so the bus drives the store itself: load the aggregate, let it decide,
//! commit, then read back the committed events' cursors by aggregate id and sequence.
//! An optimistic-concurrency conflict (someone else appended to the same aggregate first)
//! reloads and re-decides a few times before it is reported.

use std::time::Duration;

use aggregates::{EventMetadata, LogCursor};
use cqrs_es::event_sink::EventSink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore};
use cqrs_es::EventEnvelope;
use cqrs_es::{Aggregate, AggregateError, EventStore};

use crate::crypto::KeyStore;
use crate::encrypting_repository::EncryptingRepository;
use rand::Rng;
use sqlx::PgPool;
use uuid::Uuid;

use crate::log::cursor_from_row;

/// How many times a command is decided again after losing a race.
const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The cursor of the last event the command appended; `None` when it appended none.
    pub cursor: Option<LogCursor>,
    /// The ids of the appended events, in order.
    pub event_ids: Vec<Uuid>,
    /// The aggregate's sequence after the command.
    pub sequence: u64,
    /// The events the command appended, in order.
    pub events: Vec<E>,
}

impl<E> CommandOutcome<E> {
    /// The outcome of a command that appended nothing.
    pub fn nothing() -> Self {
        Self {
            cursor: None,
            event_ids: vec![],
            sequence: 0,
            events: vec![],
        }
    }
}

/// How long reading back a committed command's cursors is retried while PostgreSQL is away.
const READ_BACK_FOR: Duration = Duration::from_secs(15);

/// Why a command failed: the domain said no, or the store could not do it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    /// Lost the race for the aggregate on every attempt.
    #[error("the aggregate kept changing under the command")]
    Conflict,
    #[error("event store: {0}")]
    Store(String),
    /// PostgreSQL could not be used just now (a restart, a failover, no free connection):
    /// nothing was decided or everything was rolled back; the caller may try again (503).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

impl<E: std::error::Error> CommandError<E> {
    /// A store failure, told apart by whether trying again may help.
    pub fn store(e: sqlx::Error) -> Self {
        if crate::unavailable::is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }

    fn boxed(e: &(dyn std::error::Error + 'static)) -> Self {
        if crate::unavailable::is_unavailable_boxed(e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(e: AggregateError<E>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e) => Self::Unavailable(e.to_string()),
            AggregateError::UnexpectedError(e) => Self::boxed(e.as_ref()),
            other => Self::Store(other.to_string()),
        }
    }
}

impl<E: std::error::Error> From<cqrs_es::persist::PersistenceError> for CommandError<E> {
    fn from(e: cqrs_es::persist::PersistenceError) -> Self {
        use cqrs_es::persist::PersistenceError;
        match e {
            PersistenceError::OptimisticLockError => Self::Conflict,
            PersistenceError::ConnectionError(e) => Self::Unavailable(e.to_string()),
            PersistenceError::UnknownError(e) => Self::boxed(e.as_ref()),
            other => Self::Store(other.to_string()),
        }
    }
}

/// Executes commands of one aggregate type.
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<EncryptingRepository, A>,
    /// The same repository, for loading from a snapshot (the store cannot).
    repo: EncryptingRepository,
    services: A::Services,
    pool: PgPool,
    max_attempts: u32,
    /// Snapshot the aggregate every this many events (None: always replay in full).
    snapshot_every: Option<u64>,
    /// Commands on one aggregate in this process take turns instead of racing (and
    /// retrying); across processes optimistic concurrency still decides.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl<A> CommandBus<A>
where
    A: Aggregate + Send + Sync + 'static,
    A::Command: Clone + Send + Sync,
{
    pub fn new(pool: PgPool, keys: KeyStore, services: A::Services) -> Self {
        let repo = || EncryptingRepository::new(pool.clone(), keys.clone());
        Self {
            store: PersistedEventStore::new_event_store(repo()),
            repo: repo(),
            services,
            pool,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            snapshot_every: None,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Keep a snapshot of each aggregate, refreshed every `every` events, so loading one
    /// replays at most `every` events. Only for aggregates whose state holds no personal
    /// data and no secrets' derivatives (a snapshot is not sealed).
    pub fn with_snapshots(mut self, every: u64) -> Self {
        self.snapshot_every = Some(every.max(1));
        self
    }

    fn lock_for(&self, aggregate_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = locks.get(aggregate_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() > 1024 {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(aggregate_id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Load an aggregate: from its snapshot and the events after it when snapshots are on,
    /// else by replaying every event. Returns the snapshot's sequence too.
    async fn load_context(
        &self,
        aggregate_id: &str,
    ) -> Result<(EventStoreAggregateContext<A>, u64), CommandError<A::Error>> {
        if self.snapshot_every.is_none() {
            return Ok((self.store.load_aggregate(aggregate_id).await?, 0));
        }
        let snapshot: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "select last_sequence, payload from snapshots where aggregate_type = $1 and aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(CommandError::store)?;
        // a snapshot that no longer deserialises (the state's shape changed) is ignored
        let (mut aggregate, mut sequence) = snapshot
            .and_then(|(seq, v)| {
                serde_json::from_value::<A>(v)
                    .ok()
                    .map(|a| (a, seq.max(0) as u64))
            })
            .unwrap_or_default();
        let snapshot_sequence = sequence;
        let events = self
            .repo
            .get_last_events::<A>(aggregate_id, sequence as usize)
            .await
            .map_err(CommandError::from)?;
        for serialized in events {
            let envelope: EventEnvelope<A> = serialized
                .try_into()
                .map_err(|e: cqrs_es::persist::PersistenceError| CommandError::from(e))?;
            sequence = envelope.sequence as u64;
            aggregate.apply(envelope.payload);
        }
        let context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: sequence as usize,
            current_snapshot: None,
        };
        Ok((context, snapshot_sequence))
    }

    /// Store the state after `sequence` as the aggregate's snapshot (never an older one).
    async fn save_snapshot(&self, aggregate_id: &str, state: serde_json::Value, sequence: u64) {
        let saved = sqlx::query(
            "insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             values ($1, $2, $3, 1, $4) on conflict (aggregate_type, aggregate_id) do update \
             set last_sequence = excluded.last_sequence, payload = excluded.payload, \
                 current_snapshot = snapshots.current_snapshot + 1 \
             where snapshots.last_sequence < excluded.last_sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(sequence as i64)
        .bind(state)
        .execute(&self.pool)
        .await;
        if let Err(e) = saved {
            // a missing snapshot only costs a longer replay next time
            tracing::warn!(aggregate = A::TYPE, error = %e, "Cannot save a snapshot");
        }
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Decide and append; on a conflict, reload and decide again (up to `max_attempts`).
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<CommandOutcome<A::Event>, CommandError<A::Error>> {
        let lock = self.lock_for(aggregate_id);
        let _turn = lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_once(aggregate_id, command.clone(), metadata).await {
                Err(CommandError::Conflict) if attempt < self.max_attempts => {
                    metrics::counter!("chronicle_command_conflicts_total", "aggregate" => A::TYPE, "outcome" => "retried").increment(1);
                    // Back off a little, with jitter, so racing commands spread out.
                    let base = 2u64.pow(attempt.min(6));
                    let jitter = rand::thread_rng().gen_range(0..=base * 2);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                Err(CommandError::Conflict) => {
                    metrics::counter!("chronicle_command_conflicts_total", "aggregate" => A::TYPE, "outcome" => "gave_up").increment(1);
                    return Err(CommandError::Conflict);
                }
                other => {
                    let outcome = match &other {
                        Ok(_) => "ok",
                        Err(CommandError::Domain(_)) => "rejected",
                        Err(_) => "error",
                    };
                    metrics::counter!("chronicle_commands_total", "aggregate" => A::TYPE, "outcome" => outcome).increment(1);
                    return other;
                }
            }
        }
    }

    async fn try_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<CommandOutcome<A::Event>, CommandError<A::Error>> {
        let (mut context, snapshot_sequence) = self.load_context(aggregate_id).await?;
        let before = context.current_sequence as u64;
        let sink = EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Domain)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(CommandOutcome {
                cursor: None,
                event_ids: vec![],
                sequence: before,
                events: vec![],
            });
        }
        let n = events.len() as u64;
        // The state after the command, for a snapshot. It is taken here, once: the events
        // were applied to it exactly once by the sink (postgres-es's snapshot stores apply
        // them a second time, the bug STACK-NOTES records).
        let snapshot = self
            .snapshot_every
            .filter(|every| before + n - snapshot_sequence >= *every)
            .and_then(|_| serde_json::to_value(&context.aggregate).ok());
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await?;
        if let Some(state) = snapshot {
            self.save_snapshot(aggregate_id, state, before + n).await;
        }
        let last = committed
            .last()
            .map(|e| e.sequence as u64)
            .unwrap_or(before);
        // The events are committed: from here on the command has succeeded, and a failure
        // to read its cursors back must not be reported as a failure (a caller retrying it
        // would run it twice). Read back through a blip of PostgreSQL.
        let deadline = tokio::time::Instant::now() + READ_BACK_FOR;
        let mut delay = Duration::from_millis(50);
        let mut outcome = loop {
            match self.read_back(aggregate_id, before, last).await {
                Err(CommandError::Unavailable(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(aggregate = A::TYPE, error = %e, "Reading a committed command back: PostgreSQL away, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => break other?,
            }
        };
        outcome.events = committed.into_iter().map(|e| e.payload).collect();
        Ok(outcome)
    }

    /// The committed events' ids and the cursor of the last one.
    async fn read_back(
        &self,
        aggregate_id: &str,
        before: u64,
        last: u64,
    ) -> Result<CommandOutcome<A::Event>, CommandError<A::Error>> {
        let rows = sqlx::query(
            "select transaction_id::text as transaction_id, position, event_id from events \
             where aggregate_type = $1 and aggregate_id = $2 and sequence > $3 and sequence <= $4 \
             order by sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(before as i64)
        .bind(last as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(CommandError::store)?;
        let mut event_ids = Vec::with_capacity(rows.len());
        let mut cursor = None;
        for row in &rows {
            use sqlx::Row;
            event_ids.push(row.try_get("event_id").map_err(CommandError::store)?);
            cursor = Some(cursor_from_row(row).map_err(CommandError::store)?);
        }
        Ok(CommandOutcome {
            cursor,
            event_ids,
            sequence: last,
            events: vec![],
        })
    }

    /// The aggregate's current state (for decisions that need IO first, such as checking a
    /// password against the stored hash before `Login` is decided).
    pub async fn load(&self, aggregate_id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.load_context(aggregate_id).await?.0.aggregate)
    }
}
