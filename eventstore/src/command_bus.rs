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
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;

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
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(e: AggregateError<E>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Store(other.to_string()),
        }
    }
}

/// Executes commands of one aggregate type.
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<EncryptingRepository, A>,
    services: A::Services,
    pool: PgPool,
    max_attempts: u32,
}

impl<A> CommandBus<A>
where
    A: Aggregate + Send + Sync + 'static,
    A::Command: Clone + Send + Sync,
{
    pub fn new(pool: PgPool, keys: KeyStore, services: A::Services) -> Self {
        let repo = EncryptingRepository::new(PostgresEventRepository::new(pool.clone()), keys);
        Self {
            store: PersistedEventStore::new_event_store(repo),
            services,
            pool,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
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
        let mut context = self.store.load_aggregate(aggregate_id).await?;
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
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await?;
        let last = committed
            .last()
            .map(|e| e.sequence as u64)
            .unwrap_or(before);
        let mut outcome = self.read_back(aggregate_id, before, last).await?;
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
        .map_err(|e| CommandError::Store(e.to_string()))?;
        let mut event_ids = Vec::with_capacity(rows.len());
        let mut cursor = None;
        for row in &rows {
            use sqlx::Row;
            event_ids.push(
                row.try_get("event_id")
                    .map_err(|e| CommandError::Store(e.to_string()))?,
            );
            cursor = Some(cursor_from_row(row).map_err(|e| CommandError::Store(e.to_string()))?);
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
        Ok(self.store.load_aggregate(aggregate_id).await?.aggregate)
    }
}
