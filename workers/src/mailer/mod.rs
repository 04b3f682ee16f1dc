//! The mailer: consumes the event stream and sends the mails events call for.
//!
//! A durable pull consumer named [`CONSUMER`] reads every event subject; each message is
//! dealt with on its own:
//! 1. [`compose`] decides whether the event mails anyone (most do not: ack and move on);
//! 2. [`deliveries`] is asked whether this event id was dealt with before (then ack): this
//!    table, not the ack, makes a mail go out once across redeliveries and restarts;
//! 3. a mail-worthy event older than [`MailerTuning::max_age`] is recorded
//!    `skipped_stale` and not sent, so a mailer deployed onto an old stream mails nobody;
//! 4. the [`transport`] sends it (SMTP, or an `.eml` file in development), the delivery is
//!    recorded, then the message is acked. A failure is handed back with a NAK whose delay
//!    grows with the number of deliveries, and the mailer goes on with other messages.
//!
//! The mailer is only a consumer: the API never waits for it. Links, tokens and codes are
//! never logged; logs carry the kind, the recipient's domain and the event id.
//!
//! # Layout
//! - [`compose`]: event → mail (every event variant matched by name).
//! - [`templates`]: the mails' subjects, text and HTML.
//! - [`transport`]: SMTP URL forms, the MIME message, SMTP or `.eml`.
//! - [`deliveries`]: the `mail_deliveries` table.

pub mod compose;
pub mod deliveries;
pub mod templates;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use aggregates::StreamEnvelope;
use async_nats::jetstream::Message;
use eventstore::crypto::{KeyStore, ERASED};
use eventstore::personal::open_values;
use eventstore::secrets::Secrets;
use lettre::message::Mailbox;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use self::compose::Composer;
use self::deliveries::DeliveryStatus;
use self::templates::{recipient_domain, Mail};
use self::transport::{Handed, MessageError, Transport};
use crate::backoff::Backoff;
use crate::durable::{self, ConsumerSpec, Pull, StreamWorker, Verdict};
use crate::EventBus;

/// The durable consumer's name.
pub const CONSUMER: &str = "mailer";

#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// None: write each message as an `.eml` file under `data_dir/mail/` and log where.
    pub smtp_url: Option<String>,
    pub from: String,
    /// Base URL of the API, for links (`{public_url}/api/v1/auth/verify?token=...`).
    pub public_url: String,
    /// Where reset links point (`{frontend_url}/reset-password?token=...`); None: the API.
    pub frontend_url: Option<String>,
    pub data_dir: PathBuf,
}

/// Knobs with defaults that suit production; tests may shorten them.
#[derive(Debug, Clone)]
pub struct MailerTuning {
    /// Mail-worthy events older than this are recorded `skipped_stale`, not sent.
    pub max_age: chrono::Duration,
    /// How long JetStream waits for an ack before it delivers a message again.
    pub ack_wait: Duration,
    /// The NAK delay after the first failed delivery; doubles per delivery.
    pub first_retry_delay: Duration,
    /// ... up to this.
    pub max_retry_delay: Duration,
}

impl Default for MailerTuning {
    fn default() -> Self {
        Self {
            max_age: chrono::Duration::hours(24),
            ack_wait: Duration::from_secs(90),
            first_retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(300),
        }
    }
}

impl MailerTuning {
    /// The NAK delay for a message delivered `delivered` times (1 on the first delivery).
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let doublings = delivered.saturating_sub(1).clamp(0, 16) as u32;
        self.first_retry_delay
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_retry_delay)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP_URL: {0}")]
    Smtp(String),
    #[error("MAIL_FROM is not a mailbox (like `Chronicle <no-reply@example.com>`): {0}")]
    From(String),
}

pub struct Mailer {
    pool: PgPool,
    bus: EventBus,
    composer: Composer,
    transport: Transport,
    from: Mailbox,
    tuning: MailerTuning,
    /// Opens the sealed personal values (the recipient's address) of an event.
    keys: KeyStore,
}

impl Mailer {
    pub fn new(
        pool: PgPool,
        bus: EventBus,
        secrets: Secrets,
        keys: KeyStore,
        config: MailerConfig,
    ) -> Result<Self, MailerError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailerError::From(e.to_string()))?;
        let transport = Transport::from_config(config.smtp_url.as_deref(), &config.data_dir)?;
        Ok(Self {
            pool,
            bus,
            keys,
            composer: Composer::new(secrets, &config.public_url, config.frontend_url.as_deref()),
            transport,
            from,
            tuning: MailerTuning::default(),
        })
    }

    pub fn with_tuning(mut self, tuning: MailerTuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// Run until `stop` (the shared durable-consumer skeleton: [`crate::durable`]).
    pub async fn run(self, stop: CancellationToken) {
        match &self.transport {
            Transport::Smtp(_) => tracing::info!("Mailer sends over SMTP"),
            Transport::Files(dir) => {
                tracing::info!(dir = %dir.display(), "Mailer writes .eml files (no SMTP_URL)")
            }
        }
        durable::run(&self, &stop, None).await;
    }

    async fn handle(&self, message: &Message, stop: &CancellationToken) -> Verdict {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        match serde_json::from_slice::<StreamEnvelope>(&message.payload) {
            Ok(envelope) => {
                // older versions of an event are read as the current one (eventstore::upcast)
                let mut envelope = eventstore::StoredEvent::from_envelope(envelope).into_envelope();
                // opens the nonce too: links and codes are derived from it
                if let Err(e) = open_values(&self.keys, &mut [&mut envelope.payload]).await {
                    tracing::warn!(event_id = %envelope.event_id, error = %e, "Mailer cannot open an event's personal data");
                    return Verdict::Retry(self.tuning.retry_delay(delivered));
                }
                self.process(&envelope, delivered, stop).await
            }
            Err(e) => {
                tracing::error!(subject = %message.subject, error = %e, "Mailer cannot read a message: not an event envelope");
                Verdict::Term
            }
        }
    }

    fn is_stale(&self, envelope: &StreamEnvelope) -> bool {
        chrono::Utc::now() - envelope.recorded_at > self.tuning.max_age
    }

    /// Everything about one event, short of answering JetStream.
    async fn process(
        &self,
        envelope: &StreamEnvelope,
        delivered: i64,
        stop: &CancellationToken,
    ) -> Verdict {
        let event_id = envelope.event_id;
        let mail = match self.composer.compose(envelope) {
            Ok(None) => return Verdict::Ack,
            Ok(Some(mail)) => mail,
            Err(e) if self.is_stale(envelope) => {
                tracing::warn!(%event_id, event_type = %envelope.event_type, error = %e, "Mailer gives up on an old event it cannot read");
                return Verdict::Ack;
            }
            Err(e) => {
                // perhaps an event type newer than this build: try again later
                let delay = self.tuning.retry_delay(delivered);
                tracing::warn!(%event_id, event_type = %envelope.event_type, error = %e, retry_in_s = delay.as_secs(), "Mailer cannot read an event");
                return Verdict::Retry(delay);
            }
        };
        let kind = mail.kind.as_str();
        if mail.to == ERASED {
            tracing::debug!(%event_id, kind, "No mail: the recipient is erased");
            return Verdict::Ack;
        }
        let domain = recipient_domain(&mail.to);
        match deliveries::recorded(&self.pool, event_id).await {
            Ok(Some(status)) => {
                tracing::debug!(%event_id, kind, %status, "Mail dealt with before");
                return Verdict::Ack;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%event_id, kind, error = %e, "Mailer cannot read mail_deliveries");
                return Verdict::Retry(self.tuning.retry_delay(delivered));
            }
        }
        if self.is_stale(envelope) {
            tracing::info!(%event_id, kind, recipient_domain = domain, recorded_at = %envelope.recorded_at, "Mail skipped: the event is too old");
            metrics::counter!("chronicle_mail_skipped_total", "kind" => kind, "reason" => "stale")
                .increment(1);
            return self
                .record(event_id, &mail, DeliveryStatus::SkippedStale, stop)
                .await;
        }
        let message = match transport::build_message(&self.from, &mail, event_id) {
            Ok(m) => m,
            Err(MessageError::Recipient) => {
                tracing::warn!(%event_id, kind, recipient_domain = domain, "Mail skipped: the recipient is not a usable address");
                metrics::counter!("chronicle_mail_skipped_total", "kind" => kind, "reason" => "invalid_recipient")
                    .increment(1);
                return self
                    .record(event_id, &mail, DeliveryStatus::InvalidRecipient, stop)
                    .await;
            }
            Err(e @ MessageError::Build(_)) => {
                metrics::counter!("chronicle_mail_failures_total", "kind" => kind).increment(1);
                tracing::error!(%event_id, kind, error = %e, "Mailer cannot build a message");
                return Verdict::Retry(self.tuning.retry_delay(delivered));
            }
        };
        match self.transport.deliver(message, event_id).await {
            Ok(handed) => {
                metrics::counter!("chronicle_mail_sent_total", "kind" => kind).increment(1);
                let status = match &handed {
                    Handed::Sent => {
                        tracing::info!(%event_id, kind, recipient_domain = domain, "Mail sent");
                        DeliveryStatus::Sent
                    }
                    Handed::Written(path) => {
                        tracing::info!(%event_id, kind, recipient_domain = domain, path = %path.display(), "Mail written");
                        DeliveryStatus::Written
                    }
                };
                self.record(event_id, &mail, status, stop).await
            }
            Err(e) => {
                metrics::counter!("chronicle_mail_failures_total", "kind" => kind).increment(1);
                let delay = self.tuning.retry_delay(delivered);
                tracing::warn!(%event_id, kind, recipient_domain = domain, attempt = delivered, retry_in_s = delay.as_secs(), error = %e, "Mail not sent");
                Verdict::Retry(delay)
            }
        }
    }

    /// Record the outcome, retrying while PostgreSQL is away: once a mail is out, handing
    /// the message back would send it again.
    async fn record(
        &self,
        event_id: uuid::Uuid,
        mail: &Mail,
        status: DeliveryStatus,
        stop: &CancellationToken,
    ) -> Verdict {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match deliveries::record(&self.pool, event_id, mail.kind, &mail.to, status).await {
                Ok(()) => return Verdict::Ack,
                Err(e) => {
                    tracing::warn!(%event_id, kind = mail.kind.as_str(), error = %e, "Mailer cannot record a delivery; retrying");
                    if stop.is_cancelled() {
                        return Verdict::Leave;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}

impl StreamWorker for Mailer {
    fn label(&self) -> String {
        "mailer".to_owned()
    }

    fn bus(&self) -> &EventBus {
        &self.bus
    }

    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            name: CONSUMER.to_owned(),
            description: "Chronicle mailer".to_owned(),
            // A new mailer reads the whole stream; the max-age rule keeps old events from
            // being mailed.
            filter_subject: self.bus.config.all_subjects(),
            ack_wait: self.tuning.ack_wait,
            max_ack_pending: 256,
            batch: 32,
        }
    }

    /// One message at a time, each answered before the next.
    async fn consume(&self, pull: &mut Pull<'_>) -> anyhow::Result<()> {
        while let Some(message) = pull.next().await {
            let verdict = self.handle(&message, pull.stop()).await;
            if verdict == Verdict::Leave {
                return Ok(());
            }
            verdict.answer(&message, "mailer").await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_deliveries_up_to_five_minutes() {
        let t = MailerTuning::default();
        assert_eq!(t.retry_delay(1), Duration::from_secs(5));
        assert_eq!(t.retry_delay(2), Duration::from_secs(10));
        assert_eq!(t.retry_delay(4), Duration::from_secs(40));
        assert_eq!(t.retry_delay(7), Duration::from_secs(300));
        assert_eq!(t.retry_delay(1000), Duration::from_secs(300));
        assert_eq!(t.retry_delay(0), Duration::from_secs(5));
    }
}
