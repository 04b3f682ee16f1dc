//! Accounts (`users` table), keyed by user id, and the queries the API runs on them.
//!
//! Rows are guarded by the user's event sequence (`last_sequence`): event n of a user is
//! applied only on top of n-1, so applying an event twice changes nothing, and a gap is
//! reported instead of papered over.

use aggregates::session::{self, SessionEvent};
use aggregates::user::{
    UserEvent, AGGREGATE_TYPE, STATUS_ACTIVE, STATUS_DISABLED, STATUS_ERASED, STATUS_PENDING,
};
use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::ProjectionError;

pub async fn apply(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    if event.aggregate_type == session::AGGREGATE_TYPE {
        return apply_session(conn, event).await;
    }
    if event.aggregate_type != AGGREGATE_TYPE {
        return Ok(());
    }
    let user_event: UserEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::poison(event, format!("payload: {e}")))?;
    let user_id: Uuid = event
        .aggregate_id
        .parse()
        .map_err(|e| ProjectionError::poison(event, format!("aggregate id: {e}")))?;
    let sequence = event.sequence as i64;

    let last: Option<i64> = sqlx::query_scalar("select last_sequence from users where id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    match last {
        Some(last) if last >= sequence => return Ok(()), // seen already
        Some(last) if last != sequence - 1 => {
            return Err(ProjectionError::poison(
                event,
                format!("user {user_id} is at sequence {last}, event is {sequence}"),
            ))
        }
        None if sequence != 1 => {
            return Err(ProjectionError::poison(
                event,
                format!("user {user_id} has no row, event is sequence {sequence}"),
            ))
        }
        _ => {}
    }

    match user_event {
        UserEvent::UserRegistered {
            email,
            display_name,
            password_hash,
            role,
            plan,
            ..
        } => {
            sqlx::query(
                "insert into users (id, email, display_name, role, plan, status, email_verified, \
                 has_password, created_at, updated_at, last_sequence) \
                 values ($1, $2, $3, $4, $5, $6, false, $7, $8, $8, $9)",
            )
            .bind(user_id)
            .bind(&email)
            .bind(&display_name)
            .bind(&role)
            .bind(&plan)
            .bind(STATUS_PENDING)
            .bind(password_hash.is_some())
            .bind(event.recorded_at)
            .bind(sequence)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::EmailVerified { .. } => {
            sqlx::query(
                "update users set email_verified = true, \
                 status = case when status = $3 then $4 else status end, \
                 updated_at = $5, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(STATUS_PENDING)
            .bind(STATUS_ACTIVE)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::PasswordReset { .. } | UserEvent::PasswordChanged { .. } => {
            sqlx::query(
                "update users set has_password = true, updated_at = $3, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::ProfileUpdated {
            display_name,
            locale,
            timezone,
        } => {
            sqlx::query(
                "update users set display_name = $3, locale = $4, timezone = $5, updated_at = $6, \
                 last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(display_name)
            .bind(locale)
            .bind(timezone)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::PlanChanged { plan, .. } => {
            sqlx::query(
                "update users set plan = $3, updated_at = $4, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(plan)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::RoleChanged { role, .. } => {
            sqlx::query(
                "update users set role = $3, updated_at = $4, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(role)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::UserDeactivated { .. } => {
            sqlx::query(
                "update users set status = $3, updated_at = $4, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(STATUS_DISABLED)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::UserReactivated {} => {
            sqlx::query(
                "update users set status = case when email_verified then $3 else $4 end, \
                 updated_at = $5, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(STATUS_ACTIVE)
            .bind(STATUS_PENDING)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::EmailChanged { email } => {
            sqlx::query(
                "update users set email = $3, email_verified = false, \
                 status = case when status = $4 then $5 else status end, \
                 updated_at = $6, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(email)
            .bind(STATUS_ACTIVE)
            .bind(STATUS_PENDING)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::UserErased { .. } => {
            // Placeholders where personal data was; the same as a rebuild produces from
            // events whose sealed values no longer open.
            sqlx::query(
                "update users set email = $3, \
                 display_name = case when display_name is null then null else $3 end, \
                 locale = case when locale is null then null else $3 end, \
                 timezone = case when timezone is null then null else $3 end, \
                 avatar_content_type = null, avatar_sha256 = null, status = $4, \
                 updated_at = $5, last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(ERASED)
            .bind(STATUS_ERASED)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::AvatarChanged { sha256, .. } if sha256 == ERASED => {
            // replayed after an erasure: the image is gone with the key
            touch(conn, user_id, event).await?;
        }
        UserEvent::AvatarChanged {
            content_type,
            sha256,
            ..
        } => {
            sqlx::query(
                "update users set avatar_content_type = $3, avatar_sha256 = $4, updated_at = $5, \
                 last_sequence = $2 where id = $1",
            )
            .bind(user_id)
            .bind(sequence)
            .bind(content_type)
            .bind(sha256)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        // Events that change nothing shown here: only the sequence moves.
        UserEvent::DuplicateRegistrationAttempted { .. }
        | UserEvent::EmailVerificationRequested { .. }
        | UserEvent::EmailVerificationCodeRejected { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::FailedLoginsCleared { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCodeRejected { .. } => {
            touch(conn, user_id, event).await?;
        }
    }
    Ok(())
}

/// A sign-in is a session's `SessionStarted`: it sets the user's `last_login_at`. Keyed by
/// another aggregate, so no sequence guard: taking the later time is idempotent anyway.
async fn apply_session(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), ProjectionError> {
    let session_event: SessionEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::poison(event, format!("payload: {e}")))?;
    match session_event {
        SessionEvent::SessionStarted {
            user_id,
            started_at,
            ..
        } => {
            sqlx::query(
                "update users set last_login_at = greatest(last_login_at, $2) where id = $1",
            )
            .bind(user_id)
            .bind(started_at)
            .execute(conn)
            .await?;
        }
        SessionEvent::RefreshTokenRotated { .. }
        | SessionEvent::RefreshTokenReuseDetected { .. }
        | SessionEvent::SessionRevoked { .. } => {}
    }
    Ok(())
}

/// Record that an event of this user was seen without changing what the row shows.
async fn touch(conn: &mut PgConnection, id: Uuid, event: &StoredEvent) -> Result<(), sqlx::Error> {
    sqlx::query("update users set last_sequence = $2 where id = $1")
        .bind(id)
        .bind(event.sequence as i64)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from users").execute(conn).await?;
    Ok(())
}

/// What anyone may learn about an email (`GET /api/v1/users/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EmailStatus {
    pub exists: bool,
    pub email_verified: bool,
    /// `pending_verification`, `active`, `disabled`, or null when there is no account.
    pub status: Option<String>,
}

pub async fn status_by_email<'e>(
    db: impl PgExecutor<'e>,
    email: &str,
) -> Result<EmailStatus, sqlx::Error> {
    let row: Option<(bool, String)> =
        sqlx::query_as("select email_verified, status from users where email = $1")
            .bind(email)
            .fetch_optional(db)
            .await?;
    Ok(match row {
        Some((email_verified, status)) => EmailStatus {
            exists: true,
            email_verified,
            status: Some(status),
        },
        None => EmailStatus {
            exists: false,
            email_verified: false,
            status: None,
        },
    })
}

/// A user as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    pub plan: String,
    pub status: String,
    pub email_verified: bool,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub avatar_content_type: Option<String>,
    pub avatar_sha256: Option<String>,
    pub last_sequence: i64,
}

impl UserRow {
    /// Where the avatar is served, when there is one.
    pub fn avatar_url(&self) -> Option<String> {
        self.avatar_sha256.as_ref().map(|h| {
            format!(
                "/api/v1/users/{}/avatar?v={}",
                self.id,
                &h[..h.len().min(12)]
            )
        })
    }
}

const SELECT_USER: &str = "select id, email, display_name, role, plan, status, email_verified, \
     has_password, created_at, updated_at, last_login_at, locale, timezone, avatar_content_type, \
     avatar_sha256, last_sequence from users";

pub async fn by_id<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_USER} where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The plan and status of each of these users that the read model has: `(id, plan, status)`.
pub async fn plans_and_statuses<'e>(
    db: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as("select id, plan, status from users where id = any($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Every user, in id order (tests compare a rebuilt read model with the live one).
pub async fn all<'e>(db: impl PgExecutor<'e>) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_USER} order by id"))
        .fetch_all(db)
        .await
}

pub async fn by_email<'e>(
    db: impl PgExecutor<'e>,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_USER} where email = $1"))
        .bind(email)
        .fetch_optional(db)
        .await
}

/// How the admin's user list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSort {
    Created,
    LastLogin,
    Email,
}

/// The admin's user list: what to match, in which order, which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    /// A part of the email or display name, any case.
    pub q: Option<String>,
    pub status: Option<String>,
    pub role: Option<String>,
    pub plan: Option<String>,
    pub sort: UserSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

impl Default for UserFilter {
    fn default() -> Self {
        Self {
            q: None,
            status: None,
            role: None,
            plan: None,
            sort: UserSort::Created,
            descending: true,
            limit: 50,
            offset: 0,
        }
    }
}

/// `%` and `_` in what someone typed match themselves.
fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A page of users matching `filter`, and how many match in all.
pub async fn search<'e>(
    db: impl PgExecutor<'e> + Copy,
    filter: &UserFilter,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let pattern = filter.q.as_deref().map(like_pattern);
    let conditions = "($1::text is null or email ilike $1 or display_name ilike $1) \
         and ($2::text is null or status = $2) and ($3::text is null or role = $3) \
         and ($4::text is null or plan = $4)";
    let column = match filter.sort {
        UserSort::Created => "created_at",
        UserSort::LastLogin => "last_login_at",
        UserSort::Email => "email",
    };
    let direction = if filter.descending {
        "desc nulls last"
    } else {
        "asc nulls first"
    };
    let rows = sqlx::query_as(&format!(
        "{SELECT_USER} where {conditions} order by {column} {direction}, id limit $5 offset $6"
    ))
    .bind(&pattern)
    .bind(&filter.status)
    .bind(&filter.role)
    .bind(&filter.plan)
    .bind(filter.limit)
    .bind(filter.offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(&format!("select count(*) from users where {conditions}"))
        .bind(&pattern)
        .bind(&filter.status)
        .bind(&filter.role)
        .bind(&filter.plan)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// How many users have each value of `status`, `role` or `plan`.
pub async fn count_by<'e>(
    db: impl PgExecutor<'e>,
    column: CountBy,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let column = match column {
        CountBy::Status => "status",
        CountBy::Role => "role",
        CountBy::Plan => "plan",
    };
    sqlx::query_as(&format!(
        "select {column}, count(*) from users group by {column} order by {column}"
    ))
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountBy {
    Status,
    Role,
    Plan,
}

/// Admins who can act (verified, not deactivated, not erased), other than `except`.
pub async fn active_admins_except<'e>(
    db: impl PgExecutor<'e>,
    except: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from users where role = 'admin' and status = $2 and id <> $1",
    )
    .bind(except)
    .bind(STATUS_ACTIVE)
    .fetch_one(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn wildcards_typed_by_people_match_themselves() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
