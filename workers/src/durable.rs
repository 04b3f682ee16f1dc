//! The skeleton every stream worker shares (the projector, the mailer, the assistant): a
//! durable JetStream pull consumer, created if missing and (re)connected with backoff for
//! as long as the worker runs; its messages pulled with the stop and the pull stream's
//! hiccups handled; and what a worker answers for a message ([`Verdict`]).
//!
//! A worker says what its consumer is ([`ConsumerSpec`]) and what it does with the messages
//! of one pull ([`StreamWorker::consume`]); [`run`] does the rest.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::lease::{JobEnd, Patience};
use crate::EventBus;

/// A durable consumer: every one reads the whole stream from its start (the first time),
/// acknowledges each message explicitly, and keeps its place across restarts.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The durable name (one per worker kind: instances of it share the consumer).
    pub name: String,
    pub description: String,
    /// One subject (a wildcard for all): nats-server 2.9 ignores `filter_subjects`.
    pub filter_subject: String,
    /// How long a delivered message is the worker's before JetStream delivers it again.
    pub ack_wait: Duration,
    /// How many delivered messages may wait for their answer at once.
    pub max_ack_pending: i64,
    /// How many messages one pull asks for.
    pub batch: usize,
}

/// A worker fed by one durable consumer.
pub trait StreamWorker: Sync {
    /// Who this is in logs (`mailer`, `projector users`).
    fn label(&self) -> String;
    fn bus(&self) -> &EventBus;
    fn spec(&self) -> ConsumerSpec;
    /// Where the consumer starts. `None` (the default): where the durable left off (the
    /// stream's start the first time). `Some(sequence)`: the worker keeps its own position
    /// (a projector's checkpoint), so the consumer is made afresh at that sequence each
    /// time [`run`] connects; nothing the durable had delivered to another process is
    /// waited for.
    fn start_at(&self) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send {
        async { Ok(None) }
    }
    /// Consume one pull until it ends or the worker stops (`Ok`: [`run`] pulls again if it
    /// still runs), or fails (`Err`: [`run`] reconnects after a backoff).
    /// Messages of the pull the worker has not taken when it stops are handed back.
    fn consume(&self, pull: &mut Pull<'_>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Run `worker` until `stop`: connect, consume, and connect again after a backoff while
/// NATS is away or the consumer cannot be had. With `stuck_after`, end
/// [`JobEnd::Stuck`] once connecting has failed for that long (a worker run under a lease,
/// whose standby may reach NATS).
pub async fn run(
    worker: &impl StreamWorker,
    stop: &CancellationToken,
    stuck_after: Option<Duration>,
) -> JobEnd {
    let label = worker.label();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut patience = Patience::new(stuck_after);
    while !stop.is_cancelled() {
        match pull_from(worker, &label, stop).await {
            Ok(()) => {
                patience.progressed();
                backoff.reset();
            }
            Err(e) => {
                if patience.exhausted() {
                    tracing::warn!(worker = %label, error = %e, "Worker cannot consume from this process");
                    return JobEnd::Stuck;
                }
                let delay = backoff.next_delay();
                tracing::warn!(worker = %label, error = %e, retry_in_ms = delay.as_millis() as u64, "Worker cannot consume");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    tracing::info!(worker = %label, "Worker stopped");
    JobEnd::Stopped
}

async fn pull_from(
    worker: &impl StreamWorker,
    label: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let bus = worker.bus();
    let spec = worker.spec();
    let mut stream = bus.jetstream.get_stream(&bus.config.stream).await?;
    let first_sequence = stream.info().await?.state.first_sequence;
    let start_at = worker.start_at().await?;
    let config = pull::Config {
        durable_name: Some(spec.name.clone()),
        description: Some(spec.description.clone()),
        deliver_policy: match start_at {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => DeliverPolicy::All,
        },
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        filter_subject: spec.filter_subject.clone(),
        max_ack_pending: spec.max_ack_pending,
        // A consumer made afresh at the worker's own position keeps nothing worth a copy:
        // one replica in memory is made at once (no Raft group to elect) and, should its
        // node die, is made again on another.
        num_replicas: usize::from(start_at.is_some()),
        memory_storage: start_at.is_some(),
        ..Default::default()
    };
    let consumer: PullConsumer = match start_at {
        None => stream.get_or_create_consumer(&spec.name, config).await?,
        Some(_) => {
            // made afresh: a start position cannot be changed on an existing consumer
            if let Err(e) = stream.delete_consumer(&spec.name).await {
                tracing::debug!(worker = %label, error = %e, "No consumer to replace");
            }
            stream.create_consumer(config).await?
        }
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        // two missed in a row end the pull: a consumer lost with its node is made again
        // within about 2 s
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    tracing::info!(worker = %label, consumer = %spec.name, ?start_at, "Worker is consuming");
    let mut pull = Pull {
        messages,
        stop,
        label,
        first_sequence,
        missed_heartbeats: 0,
        broken: None,
    };
    let consumed = worker.consume(&mut pull).await;
    if stop.is_cancelled() {
        pull.hand_back().await;
    }
    match pull.broken.take() {
        // the consumer is gone (its node died, another process made it afresh) or silent:
        // connect again, which makes it anew where needed
        Some(reason) if consumed.is_ok() && !stop.is_cancelled() => {
            Err(anyhow::anyhow!("the consumer stopped answering: {reason}"))
        }
        _ => consumed,
    }
}

/// The messages of one pull.
pub struct Pull<'a> {
    messages: pull::Stream,
    stop: &'a CancellationToken,
    label: &'a str,
    /// The stream's first sequence when this pull began (where a reader with no position
    /// starts).
    pub first_sequence: u64,
    /// Idle heartbeats missed in a row.
    missed_heartbeats: u32,
    /// Why the pull cannot go on (the worker then connects again).
    broken: Option<String>,
}

impl Pull<'_> {
    /// The next message. `None` once the worker stops or the pull stream ends (the
    /// worker returns `Ok` and [`run`] pulls again, connecting anew when the consumer is
    /// gone: deleted, its node lost, or two idle heartbeats missed in a row). A single
    /// hiccup (one missed heartbeat, a slow server) is logged and skipped. Cancel-safe.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => return None,
                m = self.messages.next() => m,
            };
            match next {
                None => return None,
                Some(Err(e)) => {
                    let gone = match e.kind() {
                        Kind::MissingHeartbeat => {
                            self.missed_heartbeats += 1;
                            self.missed_heartbeats >= 2
                        }
                        kind => ends_the_pull(kind),
                    };
                    if gone {
                        tracing::info!(worker = %self.label, error = %e, "The consumer is gone; connecting again");
                        self.broken = Some(e.to_string());
                        return None;
                    }
                    tracing::debug!(worker = %self.label, error = %e, "Consumer stream hiccup")
                }
                Some(Ok(m)) => {
                    self.missed_heartbeats = 0;
                    return Some(m);
                }
            }
        }
    }

    /// A message that has arrived already, without waiting (to fill a batch). An error
    /// that ends the pull (the consumer gone) is kept, so that [`run`] connects again
    /// after a backoff rather than at once.
    pub fn ready(&mut self) -> Option<Message> {
        match self.messages.next().now_or_never() {
            Some(Some(Ok(m))) => Some(m),
            Some(Some(Err(e))) => {
                if ends_the_pull(e.kind()) {
                    self.broken = Some(e.to_string());
                }
                None
            }
            _ => None,
        }
    }

    pub fn stop(&self) -> &CancellationToken {
        self.stop
    }

    /// Give back (NAK, for delivery at once) what has arrived and was not taken: the
    /// consumer's other instances get it now rather than after `ack_wait`.
    pub async fn hand_back(&mut self) {
        let mut handed = 0;
        while let Some(message) = self.ready() {
            if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(worker = %self.label, error = %e, "Cannot hand a message back");
            }
            handed += 1;
        }
        if handed > 0 {
            tracing::info!(worker = %self.label, handed, "Stopping: messages handed back");
        }
    }
}

/// Whether an error of the pull stream means its consumer is gone (deleted, its node
/// lost, or the pull refused), so the worker must connect again.
fn ends_the_pull(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::ConsumerDeleted | Kind::NoResponders | Kind::RequestLimitExceeded
    )
}

/// What a worker answers JetStream for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: never deliver it again.
    Ack,
    /// Deliver it again after this delay.
    Retry(Duration),
    /// It cannot ever be read: never deliver it again.
    Term,
    /// No answer: JetStream delivers it again after `ack_wait` (the worker is stopping).
    Leave,
}

impl Verdict {
    /// Tell JetStream. A lost answer only means the message comes back after `ack_wait`;
    /// the worker's own record (a delivery row, the aggregate) keeps its effect from
    /// happening twice.
    pub async fn answer(self, message: &Message, label: &str) {
        let answer = match self {
            Verdict::Ack => message.ack().await,
            Verdict::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Verdict::Term => message.ack_with(AckKind::Term).await,
            Verdict::Leave => return,
        };
        if let Err(e) = answer {
            tracing::debug!(worker = label, error = %e, "Worker cannot answer a message");
        }
    }
}
