//! The assistant: consumes the event stream and answers every user message with the
//! configured model (docs/ASSISTANT.md).
//!
//! A durable pull consumer named [`CONSUMER`] reads `MessagePosted` events only. For each
//! message of role `user` ([`answer`]):
//! 1. a message older than [`AssistantTuning::max_age`] is skipped: a new deployment on an
//!    old stream answers no history;
//! 2. the `conversation` aggregate is asked whether the message is answered already (a
//!    reply or a recorded failure): then nothing is done, and the model is not called. This
//!    is what makes a redelivered or republished message, or a prompt posted with its
//!    reply by `POST /api/v1/chat`, cost nothing;
//! 3. the day's `tokens` are checked against the owner's plan ([`tokens`]); when used up,
//!    `AssistantFailed` ("tokens limit reached") is recorded instead of calling the model;
//! 4. the conversation's last messages (the `messages` read model, plaintext there) and the
//!    message itself (from the event, opened with the owner's key) go to the model;
//! 5. the reply is posted as a command (`PostMessage`, role `assistant`, id
//!    [`aggregates::conversation::reply_id`] of the message, so it can exist only once),
//!    then its tokens are recorded on the owner's meter.
//!
//! A transient failure (the model unreachable, 429, 5xx) hands the message back with a
//! NAK whose delay grows with the deliveries; after [`AssistantConfig::max_attempts`]
//! deliveries, or at once for any other refusal (4xx), `AssistantFailed` is recorded. Up
//! to [`AssistantTuning::concurrency`] messages are worked on at a time, so one slow answer
//! does not hold back everybody else's.
//!
//! Logs carry ids, kinds and reasons, never message contents or the API key.
//!
//! # Layout
//! - [`answer`]: one message, from the stream message to the verdict.
//! - [`tokens`]: the owner's plan, the day's tokens left, recording what a reply used.

pub mod answer;

use std::sync::Arc;
use std::time::Duration;

use aggregates::conversation::Conversation;
use aggregates::meter::Meter;
use aggregates::plan::Plans;
use eventstore::crypto::KeyStore;
use eventstore::CommandBus;
use llm::{LlmClient, LlmConfig, LlmError};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::durable::{self, ConsumerSpec, Pull, StreamWorker};
use crate::EventBus;

/// The durable consumer's name.
pub const CONSUMER: &str = "assistant";

/// The event the assistant reads.
const EVENT_TYPE: &str = "MessagePosted";

#[derive(Debug, Clone)]
pub struct AssistantConfig {
    pub llm: LlmConfig,
    /// Deliveries of one message before a transient failure is recorded as final.
    pub max_attempts: u32,
    pub plans: Plans,
    /// Snapshot meters as the API does (`METER_SNAPSHOT_EVERY`).
    pub meter_snapshot_every: u64,
    /// The time usage is recorded at and staleness is judged by (the API's clock).
    pub clock: Arc<dyn usecases::Clock>,
}

/// Knobs with defaults that suit production; tests may shorten them.
#[derive(Debug, Clone)]
pub struct AssistantTuning {
    /// User messages older than this are not answered.
    pub max_age: chrono::Duration,
    /// The NAK delay after the first failed delivery; doubles per delivery...
    pub first_retry_delay: Duration,
    /// ... up to this (a provider's longer `Retry-After` is honoured up to this too).
    pub max_retry_delay: Duration,
    /// Messages worked on at once.
    pub concurrency: usize,
}

impl Default for AssistantTuning {
    fn default() -> Self {
        Self {
            max_age: chrono::Duration::hours(1),
            first_retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(60),
            concurrency: 4,
        }
    }
}

impl AssistantTuning {
    /// The NAK delay for a message delivered `delivered` times (1 on the first delivery).
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let doublings = delivered.saturating_sub(1).clamp(0, 16) as u32;
        self.first_retry_delay
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_retry_delay)
    }

    /// Whether a message recorded at `recorded_at` is too old to answer at `now`.
    pub fn is_stale(
        &self,
        recorded_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        now - recorded_at > self.max_age
    }
}

/// What every message's task needs.
struct Inner {
    pool: PgPool,
    keys: KeyStore,
    conversations: CommandBus<Conversation>,
    meters: CommandBus<Meter>,
    plans: Plans,
    clock: Arc<dyn usecases::Clock>,
    client: LlmClient,
    max_attempts: u32,
    tuning: AssistantTuning,
}

pub struct Assistant {
    bus: EventBus,
    /// JetStream waits this long for an ack before delivering a message again: longer than
    /// one model call and the commands after it.
    ack_wait: Duration,
    inner: Arc<Inner>,
}

impl Assistant {
    pub fn new(
        pool: PgPool,
        bus: EventBus,
        keys: KeyStore,
        config: AssistantConfig,
    ) -> Result<Self, LlmError> {
        let ack_wait = config.llm.timeout + Duration::from_secs(30);
        let client = LlmClient::new(config.llm)?;
        Ok(Self {
            bus,
            ack_wait,
            inner: Arc::new(Inner {
                conversations: CommandBus::new(pool.clone(), keys.clone(), ()).with_snapshots(100),
                meters: CommandBus::new(pool.clone(), keys.clone(), ())
                    .with_snapshots(config.meter_snapshot_every)
                    .with_max_attempts(20),
                pool,
                keys,
                plans: config.plans,
                clock: config.clock,
                client,
                max_attempts: config.max_attempts.max(1),
                tuning: AssistantTuning::default(),
            }),
        })
    }

    /// Replace the tuning (before `run`).
    pub fn with_tuning(mut self, tuning: AssistantTuning) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.tuning = tuning;
        }
        self
    }

    /// Run until `stop` (the shared durable-consumer skeleton: [`crate::durable`]).
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(model = %self.inner.client.model(), max_attempts = self.inner.max_attempts, "Assistant answers user messages");
        durable::run(&self, &stop, None).await;
    }
}

impl StreamWorker for Assistant {
    fn label(&self) -> String {
        "assistant".to_owned()
    }

    fn bus(&self) -> &EventBus {
        &self.bus
    }

    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            name: CONSUMER.to_owned(),
            description: "Chronicle assistant".to_owned(),
            // A new assistant reads the whole stream; the max-age rule keeps it from
            // answering history.
            filter_subject: self
                .bus
                .config
                .subject(aggregates::conversation::AGGREGATE_TYPE, EVENT_TYPE),
            ack_wait: self.ack_wait,
            max_ack_pending: 64,
            batch: 16,
        }
    }

    /// Up to `tuning.concurrency` messages answered at once (a model call takes seconds).
    async fn consume(&self, pull: &mut Pull<'_>) -> anyhow::Result<()> {
        let stop = pull.stop().clone();
        let mut in_flight = JoinSet::new();
        loop {
            if in_flight.len() >= self.inner.tuning.concurrency {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = in_flight.join_next() => continue,
                }
            }
            let next = tokio::select! {
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                m = pull.next() => m,
            };
            let Some(message) = next else {
                break; // stopped, or the pull stream ended: make a new one
            };
            let inner = self.inner.clone();
            let stop = stop.clone();
            in_flight.spawn(async move {
                let verdict = inner.handle(&message, &stop).await;
                verdict.answer(&message, "assistant").await;
            });
        }
        // let the messages being answered finish (a stop cuts a model call short: the
        // message is left unacknowledged and comes back later)
        while in_flight.join_next().await.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_deliveries_up_to_a_minute() {
        let t = AssistantTuning::default();
        assert_eq!(t.retry_delay(1), Duration::from_secs(1));
        assert_eq!(t.retry_delay(2), Duration::from_secs(2));
        assert_eq!(t.retry_delay(3), Duration::from_secs(4));
        assert_eq!(t.retry_delay(100), Duration::from_secs(60));
        assert_eq!(t.retry_delay(0), Duration::from_secs(1));
    }

    #[test]
    fn messages_older_than_an_hour_are_not_answered() {
        let t = AssistantTuning::default();
        let now = chrono::Utc::now();
        assert!(!t.is_stale(now - chrono::Duration::minutes(59), now));
        assert!(t.is_stale(now - chrono::Duration::minutes(61), now));
        // a clock a little behind the database's is no reason to skip
        assert!(!t.is_stale(now + chrono::Duration::seconds(5), now));
    }
}
