//! `mail_deliveries` (migration 0004): which events the mailer has dealt with.
//!
//! This table, not the JetStream ack, is what makes a mail go out once: a redelivered
//! message, a restarted mailer or a consumer recreated from the start of the stream all
//! find the event here and send nothing. The row is written after the transport accepted
//! the mail; a crash in between is the one window in which a mail can go out twice.

use sqlx::PgPool;
use uuid::Uuid;

use super::templates::{recipient_domain, MailKind};

/// Why a row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted by the SMTP server.
    Sent,
    /// Written as an `.eml` file (no `SMTP_URL`).
    Written,
    /// Older than the mailer's maximum age when first seen: not sent.
    SkippedStale,
    /// The recipient is not an address a mail can go to: not sent.
    InvalidRecipient,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Written => "written",
            DeliveryStatus::SkippedStale => "skipped_stale",
            DeliveryStatus::InvalidRecipient => "invalid_recipient",
        }
    }
}

/// The status recorded for `event_id`, if the mailer has dealt with it.
pub async fn recorded(pool: &PgPool, event_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar::<_, String>("select status from mail_deliveries where event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
}

/// Record what became of `event_id`'s mail. A row that exists already is kept (the first
/// outcome is the one that happened).
pub async fn record(
    pool: &PgPool,
    event_id: Uuid,
    kind: MailKind,
    recipient: &str,
    status: DeliveryStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into mail_deliveries (event_id, kind, recipient_domain, sent_at, status) \
         values ($1, $2, $3, now(), $4) on conflict (event_id) do nothing",
    )
    .bind(event_id)
    .bind(kind.as_str())
    .bind(recipient_domain(recipient).to_lowercase())
    .bind(status.as_str())
    .execute(pool)
    .await?;
    Ok(())
}
