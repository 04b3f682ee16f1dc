//! The relay: event store → JetStream.
//!
//! One relay is active at a time: the one holding its [lease](crate::lease) (standbys
//! take over within a poll of the holder's death). It wakes on LISTEN/NOTIFY (`chronicle_events`) and on a
//! timer, reads the next batch of the log in global order (only finished transactions, so
//! it can never skip a slow one), publishes each event with `Nats-Msg-Id` = the event id,
//! awaits every ack, and only then moves its checkpoint. A crash between publish and
//! checkpoint republishes on restart; JetStream drops the duplicates within its duplicate
//! window, and projections skip anything at or before their own checkpoint anyway.

use std::time::Duration;

use crate::lease::{JobEnd, Lease, Patience, STUCK_AFTER};
use aggregates::LogCursor;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use eventstore::{log, relay_checkpoint, StoredEvent};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::EventBus;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The checkpoint's name (one relay per deployment: `default`).
    pub name: String,
    pub batch_size: i64,
    /// The fallback wake-up when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How long a publish waits for JetStream's ack before the batch is published again
    /// (under the same message ids). Short, so that after a stream leader's loss the relay
    /// asks the new leader soon instead of waiting on the old one.
    pub ack_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publishing to JetStream: {0}")]
    Publish(String),
    #[error("no progress for {0:?}: {1}")]
    Stuck(Duration, String),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub published: usize,
    pub duplicates: usize,
    pub checkpoint: LogCursor,
}

pub struct Relay {
    pool: PgPool,
    bus: EventBus,
    config: RelayConfig,
    /// Whether this process is the active relay (none: always, for a relay run alone).
    lease: Option<Lease>,
}

impl Relay {
    pub fn new(pool: PgPool, mut bus: EventBus, config: RelayConfig) -> Self {
        bus.jetstream.set_timeout(config.ack_timeout);
        Self {
            pool,
            bus,
            config,
            lease: None,
        }
    }

    /// Relay only while `lease` is held ([`Relay::lease_name`]).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The lease of the relay named `name`: one active per checkpoint.
    pub fn lease_name(name: &str) -> String {
        format!("chronicle-relay:{name}")
    }

    pub async fn checkpoint(&self) -> Result<LogCursor, sqlx::Error> {
        relay_checkpoint::load(&self.pool, &self.config.name).await
    }

    /// Read the next batch after the checkpoint, publish it, and move the checkpoint over
    /// the events JetStream acknowledged (a prefix of the batch: order is kept).
    pub async fn step(&self) -> Result<StepReport, RelayError> {
        let from = self.checkpoint().await?;
        self.step_from(from).await
    }

    /// [`Relay::step`] from `from`, the checkpoint as this relay last left it.
    async fn step_from(&self, from: LogCursor) -> Result<StepReport, RelayError> {
        let batch = log::read_after(&self.pool, from, self.config.batch_size).await?;
        if batch.is_empty() {
            return Ok(StepReport {
                published: 0,
                duplicates: 0,
                checkpoint: from,
            });
        }
        let (acked, duplicates, failure) = self.publish(&batch).await;
        let mut checkpoint = from;
        if acked > 0 {
            checkpoint = batch[acked - 1].cursor;
            relay_checkpoint::advance(&self.pool, &self.config.name, checkpoint).await?;
            metrics::counter!("chronicle_relay_published_total").increment(acked as u64);
            metrics::gauge!("chronicle_relay_checkpoint_position").set(checkpoint.position as f64);
        }
        match failure {
            Some(e) => Err(RelayError::Publish(e)),
            None => Ok(StepReport {
                published: acked,
                duplicates,
                checkpoint,
            }),
        }
    }

    /// Publish every event of `batch` and await the acks. Returns how many events, from
    /// the start of the batch, JetStream acknowledged; how many of those it had already;
    /// and the first failure, if any. Public so tests can publish without checkpointing
    /// (a crash between the two).
    pub async fn publish(&self, batch: &[StoredEvent]) -> (usize, usize, Option<String>) {
        let mut pending: Vec<Result<PublishAckFuture, String>> = Vec::with_capacity(batch.len());
        for event in batch {
            pending.push(self.send(event).await);
        }
        let mut acked = 0;
        let mut duplicates = 0;
        for ack in pending {
            let result = match ack {
                Ok(future) => future.await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    acked += 1;
                    if ack.duplicate {
                        duplicates += 1;
                    }
                }
                Err(e) => return (acked, duplicates, Some(e)),
            }
        }
        (acked, duplicates, None)
    }

    async fn send(&self, event: &StoredEvent) -> Result<PublishAckFuture, String> {
        let subject = self
            .bus
            .config
            .subject(&event.aggregate_type, &event.event_type);
        let envelope = event.clone().into_envelope();
        let payload = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(event.event_id.to_string())
            .header("Chronicle-Cursor", event.cursor.to_string().as_str())
            .header("Chronicle-Event-Type", event.event_type.as_str());
        self.bus
            .jetstream
            .send_publish(subject, message)
            .await
            .map_err(|e| e.to_string())
    }

    /// Run until `stop`: relay while this process holds the lease (always, without one).
    pub async fn run(self, stop: CancellationToken) {
        let label = format!("relay {}", self.config.name);
        match self.lease.clone() {
            Some(lease) => {
                let this = &self;
                crate::lease::while_held(lease, &stop, &label, |held| async move {
                    tracing::info!(relay = %this.config.name, "Relay is active");
                    this.relay_until(&held, Some(STUCK_AFTER)).await
                })
                .await
            }
            None => {
                self.relay_until(&stop, None).await;
            }
        }
        tracing::info!("Relay stopped");
    }

    /// Relay until `stop`, starting over after a backoff when PostgreSQL fails; with
    /// `stuck_after`, end [`JobEnd::Stuck`] when NATS refuses every publish for that long
    /// (a standby may reach it).
    async fn relay_until(&self, stop: &CancellationToken, stuck_after: Option<Duration>) -> JobEnd {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while !stop.is_cancelled() {
            match self.relay(stop, stuck_after).await {
                Ok(()) => {}
                Err(e @ RelayError::Stuck(..)) => {
                    tracing::warn!(error = %e, "Relay cannot publish from this process");
                    return JobEnd::Stuck;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Relay lost its footing; starting over");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        JobEnd::Stopped
    }

    async fn relay(
        &self,
        stop: &CancellationToken,
        stuck_after: Option<Duration>,
    ) -> Result<(), RelayError> {
        // A publish that fails is retried soon: after a stream leader's loss JetStream
        // answers again within about a second, and read-your-writes waits on us.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        self.ensure_stream(stop, stuck_after).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("chronicle_events").await?;
        let mut patience = Patience::new(stuck_after);
        // Where this relay left the checkpoint: read once, then kept (only the lease's
        // holder moves it; a standby that overlapped for an instant only makes us publish
        // again what JetStream drops as duplicates). Read again after any failure.
        let mut left_at: Option<LogCursor> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let from = match left_at.take() {
                Some(at) => at,
                None => self.checkpoint().await?,
            };
            match self.step_from(from).await {
                Ok(report) => {
                    left_at = Some(report.checkpoint);
                    patience.progressed();
                    backoff.reset();
                    if report.published as i64 >= self.config.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(RelayError::Database(e)) => return Err(RelayError::Database(e)),
                Err(e) => {
                    metrics::counter!("chronicle_relay_errors_total").increment(1);
                    if patience.exhausted() {
                        return Err(RelayError::Stuck(
                            stuck_after.unwrap_or_default(),
                            e.to_string(),
                        ));
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Relay could not publish");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                n = listener.recv() => { n?; }
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Create or update the stream, retrying while NATS is away (commands keep working
    /// meanwhile; the relay catches up), for at most `stuck_after` when set.
    async fn ensure_stream(
        &self,
        stop: &CancellationToken,
        stuck_after: Option<Duration>,
    ) -> Result<(), RelayError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut patience = Patience::new(stuck_after);
        loop {
            match self.bus.ensure_stream().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if patience.exhausted() {
                        return Err(RelayError::Stuck(
                            stuck_after.unwrap_or_default(),
                            e.to_string(),
                        ));
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot set up the JetStream stream");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
