//! Sign-ins (`sessions` table), keyed by session id; the API checks it on every
//! authenticated request, so a revoked session's access token stops working at once.
//! Guarded by the session's event sequence like `users`.

use aggregates::session::SessionEvent;
use aggregates::user::UserEvent;
use aggregates::Event;
use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decoded::erases;
use crate::{Decoded, ProjectionError};

pub async fn apply(conn: &mut PgConnection, event: &Decoded<'_>) -> Result<(), ProjectionError> {
    let session_event = match &event.event {
        Event::User(user_event) => return apply_user(conn, event, user_event).await,
        Event::Session(session_event) => session_event,
        Event::Meter(_)
        | Event::Conversation(_)
        | Event::Upload(_)
        | Event::ApiKey(_)
        | Event::EmailProbe(_) => return Ok(()),
    };
    let id = event.uuid()?;
    let sequence = event.sequence();
    if !event.is_next_in(conn, "sessions").await? {
        return Ok(());
    }
    match session_event {
        SessionEvent::SessionStarted {
            user_id,
            device,
            ip,
            user_agent,
            started_at,
            expires_at,
            ..
        } => {
            sqlx::query(
                "insert into sessions (id, user_id, device, ip, user_agent, created_at, last_seen_at, \
                 expires_at, last_sequence) values ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
            )
            .bind(id)
            .bind(user_id)
            .bind(device)
            .bind(ip)
            .bind(user_agent)
            .bind(started_at)
            .bind(expires_at)
            .bind(sequence)
            .execute(&mut *conn)
            .await?;
        }
        SessionEvent::RefreshTokenRotated {
            rotated_at,
            expires_at,
            ..
        } => {
            sqlx::query(
                "update sessions set last_seen_at = $3, expires_at = $4, last_sequence = $2 where id = $1",
            )
            .bind(id)
            .bind(sequence)
            .bind(rotated_at)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        }
        SessionEvent::SessionRevoked { reason } => {
            sqlx::query(
                "update sessions set revoked_at = $3, revoked_reason = $4, last_sequence = $2 where id = $1",
            )
            .bind(id)
            .bind(sequence)
            .bind(event.stored.recorded_at)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        }
        SessionEvent::RefreshTokenReuseDetected { .. } => {
            sqlx::query("update sessions set last_sequence = $2 where id = $1")
                .bind(id)
                .bind(sequence)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// An erased user's sessions end, and lose what identified the device.
async fn apply_user(
    conn: &mut PgConnection,
    event: &Decoded<'_>,
    user_event: &UserEvent,
) -> Result<(), ProjectionError> {
    if !erases(user_event) {
        return Ok(());
    }
    let user_id = event.uuid()?;
    sqlx::query(
        "update sessions set device = $2, \
         ip = case when ip is null then null else $2 end, \
         user_agent = case when user_agent is null then null else $2 end, \
         revoked_at = coalesce(revoked_at, $3), \
         revoked_reason = coalesce(revoked_reason, 'erased') where user_id = $1",
    )
    .bind(user_id)
    .bind(ERASED)
    .bind(event.stored.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from sessions").execute(conn).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

impl SessionRow {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

const SELECT: &str =
    "select id, user_id, device, ip, user_agent, created_at, last_seen_at, expires_at, \
     revoked_at, revoked_reason from sessions";

pub async fn by_id<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// What authenticating a request needs, in one query: the session, and the standing of
/// its user in the users read model (`None` while that has not caught up).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionStanding {
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub role: Option<String>,
    pub plan: Option<String>,
}

impl SessionStanding {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

pub async fn standing<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<SessionStanding>, sqlx::Error> {
    sqlx::query_as(
        "select s.user_id, s.expires_at, s.revoked_at, u.status, u.role, u.plan \
         from sessions s left join users u on u.id = s.user_id where s.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A user's sessions that are still usable, newest first.
pub async fn active_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} where user_id = $1 and revoked_at is null and expires_at > $2 order by created_at desc"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Every session of a user, live or not, newest first (for the user's export).
pub async fn all_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} where user_id = $1 order by created_at desc"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}
