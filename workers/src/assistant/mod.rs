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
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use eventstore::crypto::KeyStore;
use eventstore::CommandBus;
use futures::StreamExt;
use llm::{LlmClient, LlmConfig, LlmError};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::answer::Verdict;
use crate::backoff::Backoff;
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

    /// Run until `stop`: (re)connect with backoff, consume, repeat.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(model = %self.inner.client.model(), max_attempts = self.inner.max_attempts, "Assistant answers user messages");
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !stop.is_cancelled() {
            match self.consume(&stop).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Assistant cannot consume");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!("Assistant stopped");
    }

    async fn consumer(&self) -> Result<PullConsumer, anyhow::Error> {
        let stream = self
            .bus
            .jetstream
            .get_stream(&self.bus.config.stream)
            .await?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    description: Some("Chronicle assistant".to_owned()),
                    // A new assistant reads the whole stream; the max-age rule keeps it
                    // from answering history.
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    // single subject: nats-server 2.9 ignores `filter_subjects`
                    filter_subject: self
                        .bus
                        .config
                        .subject(aggregates::conversation::AGGREGATE_TYPE, EVENT_TYPE),
                    max_ack_pending: 64,
                    ..Default::default()
                },
            )
            .await?;
        Ok(consumer)
    }

    async fn consume(&self, stop: &CancellationToken) -> Result<(), anyhow::Error> {
        let consumer = self.consumer().await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(16)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        tracing::info!("Assistant is consuming");
        let mut in_flight = JoinSet::new();
        let result = loop {
            if in_flight.len() >= self.inner.tuning.concurrency {
                tokio::select! {
                    _ = stop.cancelled() => break Ok(()),
                    _ = in_flight.join_next() => continue,
                }
            }
            let next = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                m = messages.next() => m,
            };
            let message = match next {
                None => break Ok(()), // the pull stream ended: make a new one
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Assistant consumer stream hiccup");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let inner = self.inner.clone();
            let stop = stop.clone();
            in_flight.spawn(async move {
                let verdict = inner.handle(&message, &stop).await;
                respond(&message, verdict).await;
            });
        };
        // let the messages being answered finish (a stop cuts a model call short: the
        // message is left unacknowledged and comes back later)
        while in_flight.join_next().await.is_some() {}
        result
    }
}

async fn respond(message: &Message, verdict: Verdict) {
    let answer = match verdict {
        Verdict::Ack => message.ack().await,
        Verdict::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
        Verdict::Term => message.ack_with(AckKind::Term).await,
        Verdict::Leave => return,
    };
    if let Err(e) = answer {
        // the message comes back after ack_wait; the aggregate keeps it from being
        // answered twice
        tracing::debug!(error = %e, "Assistant cannot answer a message");
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
