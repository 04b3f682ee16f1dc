//! The projector: JetStream → one read model, through a durable pull consumer of its own.
//!
//! Each batch is applied in one PostgreSQL transaction together with the read model's
//! checkpoint, then acknowledged. Two guards keep it exact:
//! - the **log cursor** `(transaction_id, position)`: an event at or before the checkpoint
//!   has been applied already (a redelivery, a republished duplicate, or a rebuild got
//!   there first) and is skipped;
//! - the **stream sequence**: messages are applied in stream order only. A message that
//!   arrives ahead of one not yet applied (a redelivery can overtake) is not applied but
//!   handed back, so a later event can never move the checkpoint past an earlier one.
//!
//! Several processes: one projector per read model is active, the one holding its
//! [lease](crate::lease); the others stand by. The active one (re)makes the read model's
//! consumer at its checkpoint's next stream sequence each time it takes over, so nothing
//! the previous holder had been delivered waits for `ack_wait`, and one puller keeps the
//! stream's order (two pullers on one durable interleave, and the in-order guard would hand
//! back nearly everything). Read models spread over the processes: each takes its fair
//! share of the leases (a lease group) and gives back what it holds beyond it.
//!
//! A batch holding only messages of aggregates the read model does not read (a session's
//! events, for `usage`) needs no transaction: right after the checkpoint this projector
//! last left, it moves the checkpoint past them in one statement that checks the stored
//! stream sequence is still that one ([`checkpoint::advance_past`]). Anything else (an
//! event to apply, a gap, a checkpoint someone else moved) takes the transaction.
//!
//! Failures: PostgreSQL trouble is retried with backoff for as long as it lasts. An event
//! that cannot be applied (bad payload, broken invariant) is retried a few times; then the
//! read model stops and is marked failed (health and metrics show it, with the event id).
//! It is never skipped.

use std::time::{Duration, Instant};

use crate::lease::{Lease, STUCK_AFTER};
use aggregates::StreamEnvelope;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use eventstore::crypto::{CryptoError, KeyStore};
use eventstore::StoredEvent;
use projections::{checkpoint, ProjectionError, ReadModel};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::durable::{self, ConsumerSpec, Pull, StreamWorker};
use crate::EventBus;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub batch_size: usize,
    /// How many times an event that cannot be applied is tried before the read model stops.
    pub max_attempts: u32,
    pub ack_wait: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            max_attempts: 5,
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// What applying one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// How many messages, from the start of the batch, were consumed (applied or skipped)
    /// and may be acknowledged. The rest arrived out of order and go back.
    pub consumed: usize,
    pub applied: usize,
    /// The stream sequence the read model takes next.
    pub next_sequence: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("the read model is marked failed")]
    Stopped,
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Projection(ProjectionError::Database(e))
    }
}

/// A message decoded for applying.
pub struct Delivered {
    pub stream_sequence: u64,
    pub event: Result<StoredEvent, String>,
}

impl Delivered {
    pub fn from_message(message: &Message) -> Self {
        let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        Self::from_stream(stream_sequence, &message.payload)
    }

    /// A message read from the stream by its sequence.
    pub fn from_stream(stream_sequence: u64, payload: &[u8]) -> Self {
        let event = serde_json::from_slice::<StreamEnvelope>(payload)
            .map(StoredEvent::from_envelope)
            .map_err(|e| format!("undecodable envelope: {e}"));
        Self {
            stream_sequence,
            event,
        }
    }
}

/// The stream sequence a read model that has consumed up to `stream_sequence` takes next
/// (0: nothing yet, so the stream's first).
fn next_sequence(stream_sequence: u64, first_sequence: u64) -> u64 {
    if stream_sequence == 0 {
        first_sequence.max(1)
    } else {
        stream_sequence + 1
    }
}

pub struct Projector {
    pool: PgPool,
    bus: EventBus,
    model: ReadModel,
    config: ProjectorConfig,
    /// Opens events' sealed personal values before they are applied.
    keys: KeyStore,
    /// Whether this process applies the read model (none: always, for one run alone).
    lease: Option<Lease>,
    /// The checkpoint as this projector last wrote or read it (none: not since it connected).
    stored: std::sync::Mutex<Option<Stored>>,
}

/// Where a read model's stored checkpoint is.
#[derive(Debug, Clone, Copy)]
struct Stored {
    cursor: aggregates::LogCursor,
    stream_sequence: u64,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        bus: EventBus,
        model: ReadModel,
        config: ProjectorConfig,
        keys: KeyStore,
    ) -> Self {
        Self {
            pool,
            bus,
            model,
            config,
            keys,
            lease: None,
            stored: std::sync::Mutex::new(None),
        }
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Option<Stored>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch of messages of aggregates this read model does not read, right after the
    /// checkpoint this projector last left: moved past in one statement. `None`: the batch
    /// takes the transaction (an event to apply, a message that does not decode, a gap, or
    /// a checkpoint not known here or moved by someone else).
    async fn move_past(&self, batch: &[Delivered]) -> Result<Option<BatchOutcome>, sqlx::Error> {
        let Some(from) = *self.stored() else {
            return Ok(None);
        };
        if batch.is_empty() || from.stream_sequence == 0 {
            return Ok(None);
        }
        let (mut cursor, mut sequence) = (from.cursor, from.stream_sequence);
        for delivered in batch {
            let Ok(event) = &delivered.event else {
                return Ok(None);
            };
            if self.model.wants(&event.aggregate_type) {
                return Ok(None);
            }
            if delivered.stream_sequence <= sequence {
                continue; // delivered again; consumed before
            }
            if delivered.stream_sequence != sequence + 1 {
                return Ok(None);
            }
            sequence = delivered.stream_sequence;
            cursor = cursor.max(event.cursor);
        }
        let outcome = BatchOutcome {
            consumed: batch.len(),
            applied: 0,
            next_sequence: sequence + 1,
        };
        if sequence == from.stream_sequence {
            return Ok(Some(outcome));
        }
        let moved = checkpoint::advance_past(
            &self.pool,
            self.model,
            from.stream_sequence,
            sequence,
            cursor,
        )
        .await?;
        *self.stored() = moved.then_some(Stored {
            cursor,
            stream_sequence: sequence,
        });
        Ok(moved.then_some(outcome))
    }

    /// Apply only while `lease` is held ([`Projector::lease_name`]).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The group of the projectors' leases: spread over the projector processes.
    pub const LEASE_GROUP: &'static str = "chronicle-projectors";

    /// The lease of `model`'s projector: one active per read model.
    pub fn lease_name(model: ReadModel) -> String {
        format!("chronicle-projector:{}", model.name())
    }

    /// The durable consumer's name for this read model.
    pub fn consumer_name(model: ReadModel) -> String {
        format!("projection_{}", model.name())
    }

    /// Apply a batch in one transaction with the checkpoint. `first_sequence` is the
    /// stream's first sequence, where a read model with no stream position starts.
    pub async fn apply_batch(
        &self,
        batch: &[Delivered],
        first_sequence: u64,
    ) -> Result<BatchOutcome, ApplyError> {
        if let Some(outcome) = self.move_past(batch).await? {
            return Ok(outcome);
        }
        let mut tx = self.pool.begin().await?;
        // The read model is derived from the log: a commit lost in a crash is applied again
        // from the stream (`read_stream`), so it need not wait for its WAL to reach the disk.
        let cp = checkpoint::lock_relaxed(&mut tx, self.model).await?;
        if cp.status == checkpoint::FAILED {
            return Err(ApplyError::Stopped);
        }
        let mut cursor = cp.cursor;
        let mut stream_sequence = cp.stream_sequence;
        let mut consumed = 0;
        let mut applied = 0;
        let mut oldest_applied = None;
        // the events to apply, in order, applied together (a read model may fold them)
        let mut opened = Vec::with_capacity(batch.len());
        for delivered in batch {
            if delivered.stream_sequence <= stream_sequence {
                consumed += 1; // delivered again; consumed before
                continue;
            }
            let expected = next_sequence(stream_sequence, first_sequence);
            if delivered.stream_sequence > expected {
                break; // overtook an earlier message: hand it back
            }
            let event = match &delivered.event {
                Ok(e) => e,
                Err(reason) => {
                    return Err(ProjectionError::Poison {
                        event_id: uuid::Uuid::nil(),
                        event_type: format!("stream sequence {}", delivered.stream_sequence),
                        reason: reason.clone(),
                    }
                    .into())
                }
            };
            if event.cursor > cursor {
                cursor = event.cursor;
                // events of other aggregates only move the checkpoint
                if self.model.wants(&event.aggregate_type) {
                    let mut event = event.clone();
                    self.model
                        .open(&mut event, &self.keys)
                        .await
                        .map_err(|e| match e {
                            CryptoError::Database(db) => ProjectionError::Database(db),
                            other => ProjectionError::poison(&event, other),
                        })?;
                    applied += 1;
                    oldest_applied.get_or_insert(event.recorded_at);
                    opened.push(event);
                }
            }
            stream_sequence = delivered.stream_sequence;
            consumed += 1;
        }
        self.model.apply_all(&mut tx, &opened).await?;
        if consumed > 0 {
            checkpoint::advance(&mut tx, self.model, cursor, stream_sequence, applied as u64)
                .await?;
        }
        tx.commit().await?;
        *self.stored() = Some(Stored {
            cursor,
            stream_sequence,
        });
        if applied > 0 {
            metrics::counter!("chronicle_projection_events_total", "read_model" => self.model.name())
                .increment(applied as u64);
            metrics::gauge!("chronicle_projection_position", "read_model" => self.model.name())
                .set(cursor.position as f64);
            if let Some(t) = oldest_applied {
                let lag = (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("chronicle_projection_lag_seconds", "read_model" => self.model.name())
                    .record(lag);
            }
        }
        Ok(BatchOutcome {
            consumed,
            applied,
            next_sequence: next_sequence(stream_sequence, first_sequence),
        })
    }

    /// Run until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        // A restart is a retry: a read model that failed before gets another chance.
        if let Err(e) = checkpoint::clear_failure(&self.pool, self.model).await {
            tracing::warn!(read_model = %self.model, error = %e, "Cannot reset the read model's state");
        }
        metrics::gauge!("chronicle_projection_failed", "read_model" => self.model.name()).set(0.0);
        match self.lease.clone() {
            Some(lease) => {
                let label = self.label();
                crate::lease::while_held(lease, &stop, &label, |held| {
                    let this = &self;
                    async move { durable::run(this, &held, Some(STUCK_AFTER)).await }
                })
                .await
            }
            None => {
                durable::run(&self, &stop, None).await;
            }
        }
    }

    /// Apply a batch until it succeeds, the read model stops, or `stop`. Returns false
    /// when the projector should stop consuming.
    async fn handle(
        &self,
        batch: Vec<Message>,
        first_sequence: u64,
        stop: &CancellationToken,
    ) -> bool {
        // What to apply, in order, each beside the message to acknowledge for it (none for
        // one read from the stream to fill a gap).
        let mut delivered: Vec<Delivered> = batch.iter().map(Delivered::from_message).collect();
        let mut messages: Vec<Option<&Message>> = batch.iter().map(Some).collect();
        let mut start = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut poison_attempts = 0;
        let mut last_progress = Instant::now();
        loop {
            match self.apply_batch(&delivered[start..], first_sequence).await {
                Ok(outcome) => {
                    for m in messages[start..start + outcome.consumed].iter().flatten() {
                        let _ = m.ack().await;
                    }
                    start += outcome.consumed;
                    let Some(next) = delivered.get(start) else {
                        return true;
                    };
                    // Messages before this one are missing from the read model: in flight
                    // again after a hand-back, or acknowledged by a commit that a crash of
                    // PostgreSQL lost. Take them from the stream itself.
                    let gap = outcome.next_sequence..next.stream_sequence;
                    if outcome.consumed > 0 || messages[start].is_some() {
                        match self.read_stream(gap).await {
                            Ok(missing) if !missing.is_empty() => {
                                messages.splice(start..start, missing.iter().map(|_| None));
                                delivered.splice(start..start, missing);
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(read_model = %self.model, error = %e, "Cannot read a gap from the stream");
                            }
                        }
                    }
                    self.hand_back_after(&messages[start..], Duration::from_millis(50))
                        .await;
                    return true;
                }
                Err(ApplyError::Stopped) => {
                    self.hand_back_after(&messages[start..], Duration::from_secs(1))
                        .await;
                    return self.wait_until_running(stop).await;
                }
                Err(ApplyError::Projection(e)) => {
                    if !e.is_transient() {
                        poison_attempts += 1;
                        tracing::warn!(read_model = %self.model, attempt = poison_attempts, error = %e, "Cannot apply event");
                        if poison_attempts >= self.config.max_attempts {
                            self.fail(&e).await;
                            self.hand_back_after(&messages[start..], Duration::from_secs(1))
                                .await;
                            return self.wait_until_running(stop).await;
                        }
                    } else {
                        tracing::warn!(read_model = %self.model, error = %e, "Read model store unavailable; retrying");
                    }
                    if last_progress.elapsed() > self.config.ack_wait / 3 {
                        // Keep the messages ours while we retry, so they are not redelivered
                        // elsewhere meanwhile.
                        for m in messages[start..].iter().flatten() {
                            let _ = m.ack_with(AckKind::Progress).await;
                        }
                        last_progress = Instant::now();
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {
                            self.hand_back_after(&messages[start..], Duration::from_secs(1)).await;
                            return false;
                        }
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// The stream's messages in `sequences` (at most a batch), read straight from JetStream.
    async fn read_stream(
        &self,
        sequences: std::ops::Range<u64>,
    ) -> Result<Vec<Delivered>, anyhow::Error> {
        let until = sequences
            .end
            .min(sequences.start + self.config.batch_size as u64);
        if sequences.start >= until {
            return Ok(Vec::new());
        }
        let stream = self
            .bus
            .jetstream
            .get_stream(&self.bus.config.stream)
            .await?;
        let mut missing = Vec::with_capacity((until - sequences.start) as usize);
        for sequence in sequences.start..until {
            let message = stream.get_raw_message(sequence).await?;
            missing.push(Delivered::from_stream(sequence, &message.payload));
        }
        tracing::info!(read_model = %self.model, from = sequences.start, until, "Filling a gap from the stream");
        Ok(missing)
    }

    /// Give messages back to JetStream, to be delivered again after `delay`.
    async fn hand_back_after(&self, messages: &[Option<&Message>], delay: Duration) {
        for m in messages.iter().flatten() {
            let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }

    async fn fail(&self, error: &ProjectionError) {
        let event_id = match error {
            ProjectionError::Poison { event_id, .. } if !event_id.is_nil() => Some(*event_id),
            _ => None,
        };
        tracing::error!(read_model = %self.model, error = %error, "Read model stopped: an event keeps failing");
        metrics::gauge!("chronicle_projection_failed", "read_model" => self.model.name()).set(1.0);
        if let Err(e) =
            checkpoint::mark_failed(&self.pool, self.model, event_id, &error.to_string()).await
        {
            tracing::error!(read_model = %self.model, error = %e, "Cannot record the failure");
        }
    }

    /// Idle while the read model is failed; resume when a rebuild (or an operator) sets it
    /// running again.
    async fn wait_until_running(&self, stop: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Ok(Some(cp)) = checkpoint::load(&self.pool, self.model).await {
                if cp.status != checkpoint::FAILED {
                    metrics::gauge!("chronicle_projection_failed", "read_model" => self.model.name()).set(0.0);
                    return true;
                }
            }
        }
    }
}

impl StreamWorker for Projector {
    fn label(&self) -> String {
        format!("projector {}", self.model)
    }

    fn bus(&self) -> &EventBus {
        &self.bus
    }

    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            name: Self::consumer_name(self.model),
            description: format!("Chronicle read model {}", self.model),
            filter_subject: self.bus.config.all_subjects(),
            ack_wait: self.config.ack_wait,
            max_ack_pending: (self.config.batch_size * 4) as i64,
            batch: self.config.batch_size,
        }
    }

    /// The consumer is made afresh after the checkpoint each time the projector connects.
    async fn start_at(&self) -> anyhow::Result<Option<u64>> {
        // another process may have moved the checkpoint since this one last did
        *self.stored() = None;
        let checkpoint = checkpoint::load(&self.pool, self.model).await?;
        Ok(Some(checkpoint.map_or(1, |cp| {
            cp.stream_sequence.saturating_add(1).max(1)
        })))
    }

    /// Batches: what has arrived, up to `batch_size`, applied in one transaction.
    async fn consume(&self, pull: &mut Pull<'_>) -> anyhow::Result<()> {
        while let Some(first) = pull.next().await {
            let mut batch = vec![first];
            while batch.len() < self.config.batch_size {
                match pull.ready() {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            if !self.handle(batch, pull.first_sequence, pull.stop()).await {
                break;
            }
        }
        Ok(())
    }
}
