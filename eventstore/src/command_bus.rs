//! Executing commands: cqrs-es aggregates decide, and the bus appends their events itself.
//!
//! # The write path (docs/ARCHITECTURE.md, decision 29)
//! - **Per-aggregate batching.** Commands for one aggregate queue in this process; one task
//!   per busy aggregate takes everything queued (up to [`MAX_BATCH`]), decides the commands
//!   one after another on one loaded state, and appends all their events in **one
//!   statement**. A hot meter (one customer's backend reporting usage from 16 threads) pays
//!   one round trip and one commit for the whole queue, not one each. A command that is
//!   refused leaves the state as it was for the next one, so limits hold exactly.
//! - **One statement per append.** `INSERT … SELECT FROM unnest(…) RETURNING` the cursors:
//!   no `BEGIN`/`COMMIT` round trips and no read-back. The event ids are chosen here, so a
//!   connection lost while the statement ran is resolved by looking for them.
//! - **Group commit** (`group_commit`): appends of different aggregates that meet share
//!   one statement; a group that hits a unique violation runs each append alone.
//! - **Optimistic concurrency** across processes, as before: `(aggregate_type,
//!   aggregate_id, sequence)` is the primary key; a batch that loses the race (a unique
//!   violation) is reloaded and decided again, up to `max_attempts` times.
//! - **A state cache** (opt-in, [`CommandBus::with_cache`]): the state after the last batch,
//!   checked by sequence. A stale one cannot append (its sequence is taken: a conflict, so
//!   reload); a batch that appends nothing on a cached state checks the aggregate's sequence
//!   before its refusals are answered.
//! - **Commands with ids** ([`CommandBus::with_command_ids`]): the command's first event
//!   carries the id; a command whose id is already in the log is not decided again, and
//!   answers with the cursor of the event it appended then (`CommandOutcome::duplicate`).
//!
//! The batch runs in a task of its own, so a caller that goes away (a closed connection)
//! cannot leave its queue half done: every queued command is decided and answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::{EventMetadata, LogCursor};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::EventEnvelope;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use futures::FutureExt;
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::crypto::KeyStore;
use crate::encrypting_repository::EncryptingRepository;
use crate::group_commit::GroupCommit;

/// How many times a command is decided again after losing a race. Within a process the
/// commands on one aggregate queue and never race; across processes they do, and with the
/// jittered backoff below (2 ms doubling to 64 ms) twelve attempts keep the commands lost
/// to 409 under 1 in 1,000 with several instances hammering one aggregate.
const DEFAULT_MAX_ATTEMPTS: u32 = 12;

/// The most commands one batch decides and appends in one statement.
pub const MAX_BATCH: usize = 1000;

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The cursor of the last event the command appended; `None` when it appended none.
    /// For a duplicate, the cursor of the event the first run appended.
    pub cursor: Option<LogCursor>,
    /// The ids of the appended events, in order.
    pub event_ids: Vec<Uuid>,
    /// The aggregate's sequence after the command.
    pub sequence: u64,
    /// The events the command appended, in order.
    pub events: Vec<E>,
    /// The command's id was already in the log: it was not decided again.
    pub duplicate: bool,
}

impl<E> CommandOutcome<E> {
    /// The outcome of a command that appended nothing.
    pub fn nothing() -> Self {
        Self {
            cursor: None,
            event_ids: vec![],
            sequence: 0,
            events: vec![],
            duplicate: false,
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
    /// A real failure; its cause is kept (`source()`), to be logged where it is answered.
    #[error("event store: {0}")]
    Store(#[source] Cause),
    /// PostgreSQL could not be used just now (a restart, a failover, no free connection):
    /// nothing was decided or everything was rolled back; the caller may try again (503).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// What made the store fail, with its own chain of sources. Shareable: when a batch fails,
/// each of its commands answers with the same cause.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(e))
    }

    /// A cause that is only a message (no error value to keep).
    pub fn msg(message: impl Into<String>) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        Self(Arc::from(boxed))
    }

    fn boxed(e: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Self(Arc::from(e))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl<E: std::error::Error> CommandError<E> {
    /// A store failure, told apart by whether trying again may help.
    pub fn store(e: sqlx::Error) -> Self {
        Failure::from(e).into()
    }
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(e: AggregateError<E>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e) => Self::Unavailable(e.to_string()),
            AggregateError::UnexpectedError(e) => Failure::boxed(e).into(),
            other => Self::Store(Cause::msg(other.to_string())),
        }
    }
}

impl<E: std::error::Error> From<cqrs_es::persist::PersistenceError> for CommandError<E> {
    fn from(e: cqrs_es::persist::PersistenceError) -> Self {
        Failure::from(e).into()
    }
}

/// A failure of a whole batch (every command in it gets it).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Conflict,
    Store(Cause),
    Unavailable(String),
}

impl Failure {
    fn boxed(e: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        if crate::unavailable::is_unavailable_boxed(e.as_ref()) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(Cause::boxed(e))
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        if crate::unavailable::is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(Cause::new(e))
        }
    }
}

impl From<cqrs_es::persist::PersistenceError> for Failure {
    fn from(e: cqrs_es::persist::PersistenceError) -> Self {
        use cqrs_es::persist::PersistenceError;
        match e {
            PersistenceError::OptimisticLockError => Self::Conflict,
            PersistenceError::ConnectionError(e) => Self::Unavailable(e.to_string()),
            PersistenceError::UnknownError(e) => Self::boxed(e),
            other => Self::Store(Cause::new(other)),
        }
    }
}

impl<E: std::error::Error> From<Failure> for CommandError<E> {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Conflict => Self::Conflict,
            Failure::Store(e) => Self::Store(e),
            Failure::Unavailable(e) => Self::Unavailable(e),
        }
    }
}

type Answer<A> =
    Result<CommandOutcome<<A as Aggregate>::Event>, CommandError<<A as Aggregate>::Error>>;

/// The id a command carries, if any (see [`CommandBus::with_command_ids`]).
pub type CommandId<C> = fn(&C) -> Option<Uuid>;

/// A queued command and where its answer goes.
struct Pending<A: Aggregate> {
    command: A::Command,
    metadata: Value,
    reply: oneshot::Sender<Answer<A>>,
}

/// An aggregate's state at a sequence.
struct Loaded<A> {
    aggregate: A,
    sequence: u64,
    /// The sequence of its stored snapshot (0: none).
    snapshot_sequence: u64,
}

/// What was decided for one command of a batch, before the append.
enum Decided<A: Aggregate> {
    Refused(A::Error),
    /// Appended events `rows` of the batch (possibly none: a no-op).
    Appended {
        rows: std::ops::Range<usize>,
        events: Vec<A::Event>,
        sequence: u64,
    },
    /// Its id was in the log before this batch (with the event's cursor), or earlier in it.
    Duplicate(Uuid, Option<LogCursor>),
}

/// What the bus's tasks share: the queues and the cache.
struct Shared<A: Aggregate> {
    /// One entry per aggregate with a batch task running; its commands still to decide.
    queues: Mutex<HashMap<String, VecDeque<Pending<A>>>>,
    cache: Mutex<HashMap<String, Loaded<A>>>,
    /// Appends of different aggregates, grouped into one statement when they meet.
    appends: GroupCommit,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Executes commands of one aggregate type.
pub struct CommandBus<A: Aggregate> {
    repo: Arc<EncryptingRepository>,
    services: Arc<A::Services>,
    pool: PgPool,
    max_attempts: u32,
    /// Snapshot the aggregate every this many events (None: always replay in full).
    snapshot_every: Option<u64>,
    /// How many aggregates' states are kept between batches (0: none).
    cache_capacity: usize,
    command_id: Option<CommandId<A::Command>>,
    shared: Arc<Shared<A>>,
}

impl<A: Aggregate> Clone for CommandBus<A> {
    fn clone(&self) -> Self {
        Self {
            repo: self.repo.clone(),
            services: self.services.clone(),
            pool: self.pool.clone(),
            max_attempts: self.max_attempts,
            snapshot_every: self.snapshot_every,
            cache_capacity: self.cache_capacity,
            command_id: self.command_id,
            shared: self.shared.clone(),
        }
    }
}

impl<A> CommandBus<A>
where
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Event: Send + 'static,
    A::Error: Send + 'static,
    A::Services: Send + Sync + 'static,
{
    pub fn new(pool: PgPool, keys: KeyStore, services: A::Services) -> Self {
        let appends = GroupCommit::new(pool.clone());
        Self {
            repo: Arc::new(EncryptingRepository::new(pool.clone(), keys)),
            services: Arc::new(services),
            pool,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            snapshot_every: None,
            cache_capacity: 0,
            command_id: None,
            shared: Arc::new(Shared {
                queues: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                appends,
            }),
        }
    }

    /// Keep a snapshot of each aggregate, refreshed every `every` events, so loading one
    /// replays at most `every` events. Only for aggregates whose state holds no personal
    /// data and no secrets' derivatives (a snapshot is not sealed).
    pub fn with_snapshots(mut self, every: u64) -> Self {
        self.snapshot_every = Some(every.max(1));
        self
    }

    /// Keep the states of up to `capacity` aggregates in memory between batches. Only for
    /// aggregates whose state holds no personal data (erasure destroys a key, not a cache).
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Commands that carry an id are done at most once (see the module's documentation).
    pub fn with_command_ids(mut self, id: CommandId<A::Command>) -> Self {
        self.command_id = Some(id);
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Decide and append one command (queued behind the aggregate's others in this
    /// process); on a conflict, reload and decide again (up to `max_attempts`).
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Answer<A> {
        self.execute_all(aggregate_id, vec![(command, metadata.clone())])
            .await
            .pop()
            .unwrap_or_else(|| Err(CommandError::Store(Cause::msg("the command got no answer"))))
    }

    /// Decide several commands for one aggregate in order, appended together (in batches
    /// of at most [`MAX_BATCH`]); one answer per command, in order.
    pub async fn execute_all(
        &self,
        aggregate_id: &str,
        commands: Vec<(A::Command, EventMetadata)>,
    ) -> Vec<Answer<A>> {
        let mut answers = Vec::with_capacity(commands.len());
        let start = {
            let mut queues = locked(&self.shared.queues);
            let start = !queues.contains_key(aggregate_id);
            let queue = queues.entry(aggregate_id.to_owned()).or_default();
            for (command, metadata) in commands {
                let (reply, answer) = oneshot::channel();
                let metadata = serde_json::to_value(metadata.to_map()).unwrap_or(Value::Null);
                queue.push_back(Pending {
                    command,
                    metadata,
                    reply,
                });
                answers.push(answer);
            }
            start
        };
        if start {
            let bus = self.clone();
            let id = aggregate_id.to_owned();
            tokio::spawn(async move { bus.drain(id).await });
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.unwrap_or_else(|_| {
                Err(CommandError::Store(Cause::msg(
                    "the command's batch stopped before answering",
                )))
            }));
        }
        out
    }

    /// The aggregate's batch task: decide what is queued until nothing is.
    async fn drain(self, aggregate_id: String) {
        loop {
            let batch: Vec<Pending<A>> = {
                let mut queues = locked(&self.shared.queues);
                match queues.get_mut(&aggregate_id) {
                    Some(queue) if !queue.is_empty() => {
                        let n = queue.len().min(MAX_BATCH);
                        queue.drain(..n).collect()
                    }
                    _ => {
                        queues.remove(&aggregate_id);
                        return;
                    }
                }
            };
            // A panic in a decision fails its batch (the callers get an error), not the
            // aggregate's queue.
            let run = std::panic::AssertUnwindSafe(self.run_batch(&aggregate_id, batch));
            if run.catch_unwind().await.is_err() {
                tracing::error!(aggregate = A::TYPE, "A command panicked; its batch failed");
                locked(&self.shared.cache).remove(&aggregate_id);
            }
        }
    }

    async fn run_batch(&self, aggregate_id: &str, batch: Vec<Pending<A>>) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_batch(aggregate_id, &batch).await {
                Ok((answers, snapshot)) => {
                    for (pending, answer) in batch.into_iter().zip(answers) {
                        let outcome = match &answer {
                            Ok(_) => "ok",
                            Err(CommandError::Domain(_)) => "rejected",
                            Err(_) => "error",
                        };
                        metrics::counter!("chronicle_commands_total", "aggregate" => A::TYPE, "outcome" => outcome).increment(1);
                        let _ = pending.reply.send(answer);
                    }
                    if let Some((state, sequence)) = snapshot {
                        self.save_snapshot(aggregate_id, state, sequence).await;
                    }
                    return;
                }
                Err(Failure::Conflict) if attempt < self.max_attempts => {
                    locked(&self.shared.cache).remove(aggregate_id);
                    metrics::counter!("chronicle_command_conflicts_total", "aggregate" => A::TYPE, "outcome" => "retried").increment(1);
                    // Back off a little, with jitter, so racing processes spread out.
                    let base = 2u64.pow(attempt.min(6));
                    let jitter = rand::thread_rng().gen_range(0..=base * 2);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                Err(failure) => {
                    locked(&self.shared.cache).remove(aggregate_id);
                    if matches!(failure, Failure::Conflict) {
                        metrics::counter!("chronicle_command_conflicts_total", "aggregate" => A::TYPE, "outcome" => "gave_up").increment(1);
                    }
                    for pending in batch {
                        metrics::counter!("chronicle_commands_total", "aggregate" => A::TYPE, "outcome" => "error").increment(1);
                        let _ = pending.reply.send(Err(failure.clone().into()));
                    }
                    return;
                }
            }
        }
    }

    /// Decide the batch on the aggregate's state and append what it decided. The answers,
    /// and the state to snapshot when one is due.
    async fn try_batch(
        &self,
        aggregate_id: &str,
        batch: &[Pending<A>],
    ) -> Result<(Vec<Answer<A>>, Option<(Value, u64)>), Failure> {
        let cached = if self.cache_capacity > 0 {
            locked(&self.shared.cache).remove(aggregate_id)
        } else {
            None
        };
        let from_cache = cached.is_some();
        let loaded = match cached {
            Some(loaded) => loaded,
            None => self.load_loaded(aggregate_id).await?,
        };
        let ids: Vec<Option<Uuid>> = batch
            .iter()
            .map(|p| self.command_id.and_then(|id| id(&p.command)))
            .collect();
        let known: Vec<Uuid> = ids.iter().flatten().copied().collect();
        let before_batch = if known.is_empty() {
            HashMap::new()
        } else {
            crate::group_commit::find_events(&self.pool, &known).await?
        };

        let Loaded {
            aggregate: mut state,
            sequence: first_sequence,
            snapshot_sequence,
        } = loaded;
        let mut sequence = first_sequence;
        let mut decided: Vec<Decided<A>> = Vec::with_capacity(batch.len());
        let mut rows: Vec<SerializedEvent> = vec![];
        let mut row_ids: Vec<Uuid> = vec![];
        let mut in_batch: HashSet<Uuid> = HashSet::new();
        for (pending, id) in batch.iter().zip(&ids) {
            if let Some(id) = id {
                if let Some(cursor) = before_batch.get(id) {
                    decided.push(Decided::Duplicate(*id, Some(*cursor)));
                    continue;
                }
                if !in_batch.insert(*id) {
                    decided.push(Decided::Duplicate(*id, None));
                    continue;
                }
            }
            let before = state.clone();
            let sink = EventSink::default();
            match state
                .handle(pending.command.clone(), &self.services, &sink)
                .await
            {
                Err(e) => {
                    state = before;
                    decided.push(Decided::Refused(e));
                }
                Ok(()) => {
                    let events = sink.collect().await;
                    let start = rows.len();
                    for (k, event) in events.iter().enumerate() {
                        sequence += 1;
                        rows.push(SerializedEvent {
                            aggregate_id: aggregate_id.to_owned(),
                            sequence: sequence as usize,
                            aggregate_type: A::TYPE.to_owned(),
                            event_type: event.event_type(),
                            event_version: event.event_version(),
                            payload: serde_json::to_value(event)
                                .map_err(|e| Failure::Store(Cause::new(e)))?,
                            metadata: pending.metadata.clone(),
                        });
                        row_ids.push(match id {
                            Some(id) if k == 0 => *id,
                            _ => Uuid::new_v4(),
                        });
                    }
                    decided.push(Decided::Appended {
                        rows: start..rows.len(),
                        events,
                        sequence,
                    });
                }
            }
        }

        let cursors: HashMap<Uuid, LogCursor> = if rows.is_empty() {
            // Refusals decided on a cached state stand only if it is still the latest.
            if from_cache && self.stored_sequence(aggregate_id).await? != first_sequence {
                return Err(Failure::Conflict);
            }
            HashMap::new()
        } else {
            let sealed = self.repo.seal(&rows).await?;
            self.append(&sealed, &row_ids).await?
        };

        let snapshot = self
            .snapshot_every
            .filter(|every| sequence - snapshot_sequence >= *every)
            .and_then(|_| serde_json::to_value(&state).ok());
        let snapshot_sequence = if snapshot.is_some() {
            sequence
        } else {
            snapshot_sequence
        };
        if self.cache_capacity > 0 {
            let mut cache = locked(&self.shared.cache);
            if cache.len() >= self.cache_capacity {
                // evict a quarter, whichever the map yields first
                let evict: Vec<String> = cache
                    .keys()
                    .take(self.cache_capacity / 4 + 1)
                    .cloned()
                    .collect();
                for key in evict {
                    cache.remove(&key);
                }
            }
            cache.insert(
                aggregate_id.to_owned(),
                Loaded {
                    aggregate: state,
                    sequence,
                    snapshot_sequence,
                },
            );
        }

        let answers = decided
            .into_iter()
            .map(|d| match d {
                Decided::Refused(e) => Err(CommandError::Domain(e)),
                Decided::Appended {
                    rows,
                    events,
                    sequence,
                } => Ok(CommandOutcome {
                    cursor: rows
                        .clone()
                        .last()
                        .and_then(|i| cursors.get(&row_ids[i]).copied()),
                    event_ids: row_ids[rows].to_vec(),
                    sequence,
                    events,
                    duplicate: false,
                }),
                Decided::Duplicate(id, cursor) => Ok(CommandOutcome {
                    cursor: cursor.or_else(|| cursors.get(&id).copied()),
                    event_ids: vec![id],
                    sequence,
                    events: vec![],
                    duplicate: true,
                }),
            })
            .collect();
        Ok((answers, snapshot.map(|s| (s, sequence))))
    }

    /// Append sealed events; their cursors by event id. Concurrent appends of other
    /// aggregates may share the statement (`group_commit`). A unique violation (the
    /// aggregate moved on, or an event id is already taken) is a conflict; a connection
    /// lost mid-statement is resolved by looking for the events.
    async fn append(
        &self,
        rows: &[SerializedEvent],
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, LogCursor>, Failure> {
        self.shared.appends.append(rows, ids).await
    }

    /// The aggregate's last sequence in the log.
    async fn stored_sequence(&self, aggregate_id: &str) -> Result<u64, Failure> {
        let last: Option<i64> = sqlx::query_scalar(
            "select max(sequence) from events where aggregate_type = $1 and aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    /// Load an aggregate from the log: from its snapshot and the events after it when
    /// snapshots are on, else by replaying every event.
    async fn load_loaded(&self, aggregate_id: &str) -> Result<Loaded<A>, Failure> {
        let snapshot: Option<(i64, Value)> = match self.snapshot_every {
            None => None,
            Some(_) => sqlx::query_as(
                "select last_sequence, payload from snapshots where aggregate_type = $1 and aggregate_id = $2",
            )
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_optional(&self.pool)
            .await?,
        };
        // a snapshot that no longer deserialises (the state's shape changed) is ignored
        let (mut aggregate, mut sequence) = snapshot
            .and_then(|(seq, v)| {
                serde_json::from_value::<A>(v)
                    .ok()
                    .map(|a| (a, seq.max(0) as u64))
            })
            .unwrap_or_default();
        let snapshot_sequence = sequence;
        let events = if sequence == 0 {
            self.repo.get_events::<A>(aggregate_id).await?
        } else {
            self.repo
                .get_last_events::<A>(aggregate_id, sequence as usize)
                .await?
        };
        for serialized in events {
            let envelope: EventEnvelope<A> = serialized.try_into().map_err(Failure::from)?;
            sequence = envelope.sequence as u64;
            aggregate.apply(envelope.payload);
        }
        Ok(Loaded {
            aggregate,
            sequence,
            snapshot_sequence,
        })
    }

    /// Store the state after `sequence` as the aggregate's snapshot (never an older one).
    async fn save_snapshot(&self, aggregate_id: &str, state: Value, sequence: u64) {
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

    /// The aggregate's current state as the log holds it (for decisions that need IO
    /// first, such as checking a password against the stored hash before `Login`).
    pub async fn load(&self, aggregate_id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.load_loaded(aggregate_id).await?.aggregate)
    }
}
