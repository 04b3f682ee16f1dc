//! Accounts (`users` table), keyed by user id, and the queries the API runs on them.
//!
//! Rows are guarded by the user's event sequence (`last_sequence`): event n of a user is
//! applied only on top of n-1, so applying an event twice changes nothing, and a gap is
//! reported instead of papered over.

use aggregates::session::SessionEvent;
use aggregates::user::{UserEvent, STATUS_ACTIVE, STATUS_DISABLED, STATUS_ERASED, STATUS_PENDING};
use aggregates::Event;
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use eventstore::crypto::ERASED;
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decoded::{aggregate_uuid, is_next};
use crate::{Decoded, ProjectionError};

/// Apply events in their order: the rows they touch are read once, the events folded into
/// them in memory, and the changed rows written with one statement. A batch is cut after
/// each event that frees an email (a change of address, an erasure), so that a later
/// registration of that address is written after the row that gave it up (emails are
/// unique, and one statement checks its rows in its own order).
pub async fn apply_all(
    conn: &mut PgConnection,
    events: Vec<Decoded<'_>>,
) -> Result<(), ProjectionError> {
    let mut chunk: Vec<(&StoredEvent, Uuid, Change)> = Vec::new();
    for event in events {
        let stored = event.stored;
        let Some((user_id, change)) = change(event)? else {
            continue;
        };
        let frees_an_email = matches!(
            change,
            Change::User(UserEvent::EmailChanged { .. } | UserEvent::UserErased { .. })
        );
        chunk.push((stored, user_id, change));
        if frees_an_email {
            fold_and_write(conn, std::mem::take(&mut chunk)).await?;
        }
    }
    fold_and_write(conn, chunk).await
}

/// What an event does to the read model: a user's own event, or a sign-in.
enum Change {
    User(UserEvent),
    SignedIn { at: DateTime<Utc> },
}

/// The user an event changes, and how (`None`: no user's row).
fn change(event: Decoded<'_>) -> Result<Option<(Uuid, Change)>, ProjectionError> {
    Ok(match event.event {
        Event::User(user_event) => Some((aggregate_uuid(event.stored)?, Change::User(user_event))),
        Event::Session(SessionEvent::SessionStarted {
            user_id,
            started_at,
            ..
        }) => Some((user_id, Change::SignedIn { at: started_at })),
        Event::Session(
            SessionEvent::RefreshTokenRotated { .. }
            | SessionEvent::RefreshTokenReuseDetected { .. }
            | SessionEvent::SessionRevoked { .. },
        )
        | Event::Meter(_)
        | Event::Conversation(_)
        | Event::Upload(_)
        | Event::ApiKey(_)
        | Event::EmailProbe(_) => None,
    })
}

/// Read the rows `changes` touch, fold the changes into them, write the changed rows.
async fn fold_and_write(
    conn: &mut PgConnection,
    changes: Vec<(&StoredEvent, Uuid, Change)>,
) -> Result<(), ProjectionError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = changes.iter().map(|(_, id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rows: HashMap<Uuid, UserRow> =
        sqlx::query_as::<_, UserRow>(&format!("{SELECT_USER} where id = any($1)"))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
    let mut changed = BTreeSet::new();
    for (event, id, change) in changes {
        if fold(&mut rows, id, event, change)? {
            changed.insert(id);
        }
    }
    write(conn, changed.iter().filter_map(|id| rows.get(id))).await?;
    Ok(())
}

/// One event into the rows in memory; whether a row changed.
fn fold(
    rows: &mut HashMap<Uuid, UserRow>,
    user_id: Uuid,
    event: &StoredEvent,
    change: Change,
) -> Result<bool, ProjectionError> {
    let user_event = match change {
        // keyed by another aggregate, so no sequence guard: the later time is idempotent
        Change::SignedIn { at, .. } => {
            let Some(row) = rows.get_mut(&user_id) else {
                return Ok(false);
            };
            if row.last_login_at.is_some_and(|t| t >= at) {
                return Ok(false);
            }
            row.last_login_at = Some(at);
            return Ok(true);
        }
        Change::User(e) => e,
    };
    let last = rows.get(&user_id).map(|r| r.last_sequence);
    if !is_next(event, last, format_args!("user {user_id}"))? {
        return Ok(false);
    }
    let sequence = event.sequence as i64;
    let at = event.recorded_at;
    if let UserEvent::UserRegistered {
        email,
        display_name,
        password_hash,
        role,
        plan,
        ..
    } = user_event
    {
        rows.insert(
            user_id,
            UserRow {
                id: user_id,
                email,
                display_name,
                role,
                plan,
                status: STATUS_PENDING.to_owned(),
                email_verified: false,
                has_password: password_hash.is_some(),
                created_at: at,
                updated_at: at,
                last_login_at: None,
                locale: None,
                timezone: None,
                avatar_content_type: None,
                avatar_sha256: None,
                last_sequence: sequence,
            },
        );
        return Ok(true);
    }
    let Some(row) = rows.get_mut(&user_id) else {
        // (sequence 1 is always a registration)
        return Err(ProjectionError::poison(
            event,
            format!("user {user_id} has no row"),
        ));
    };
    row.last_sequence = sequence;
    let mut updated = true;
    match user_event {
        UserEvent::UserRegistered { .. } => {}
        UserEvent::EmailVerified { .. } => {
            row.email_verified = true;
            if row.status == STATUS_PENDING {
                row.status = STATUS_ACTIVE.to_owned();
            }
        }
        UserEvent::PasswordReset { .. } | UserEvent::PasswordChanged { .. } => {
            row.has_password = true;
        }
        UserEvent::ProfileUpdated {
            display_name,
            locale,
            timezone,
        } => {
            row.display_name = display_name;
            row.locale = locale;
            row.timezone = timezone;
        }
        UserEvent::PlanChanged { plan, .. } => row.plan = plan,
        UserEvent::RoleChanged { role, .. } => row.role = role,
        UserEvent::UserDeactivated { .. } => row.status = STATUS_DISABLED.to_owned(),
        UserEvent::UserReactivated {} => {
            row.status = if row.email_verified {
                STATUS_ACTIVE
            } else {
                STATUS_PENDING
            }
            .to_owned();
        }
        UserEvent::EmailChanged { email } => {
            row.email = email;
            row.email_verified = false;
            if row.status == STATUS_ACTIVE {
                row.status = STATUS_PENDING.to_owned();
            }
        }
        UserEvent::UserErased { .. } => {
            // Placeholders where personal data was; the same as a rebuild produces from
            // events whose sealed values no longer open.
            let erased = |v: &mut Option<String>| {
                if v.is_some() {
                    *v = Some(ERASED.to_owned());
                }
            };
            row.email = ERASED.to_owned();
            erased(&mut row.display_name);
            erased(&mut row.locale);
            erased(&mut row.timezone);
            row.avatar_content_type = None;
            row.avatar_sha256 = None;
            row.status = STATUS_ERASED.to_owned();
        }
        // replayed after an erasure: the image is gone with the key
        UserEvent::AvatarChanged { sha256, .. } if sha256 == ERASED => updated = false,
        UserEvent::AvatarChanged {
            content_type,
            sha256,
            ..
        } => {
            row.avatar_content_type = Some(content_type);
            row.avatar_sha256 = Some(sha256);
        }
        // Events that change nothing shown here: only the sequence moves.
        UserEvent::DuplicateRegistrationAttempted { .. }
        | UserEvent::EmailVerificationRequested { .. }
        | UserEvent::EmailVerificationCodeRejected { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::FailedLoginsCleared { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCodeRejected { .. } => updated = false,
    }
    if updated {
        row.updated_at = at;
    }
    Ok(true)
}

/// Insert or replace these rows, with one statement.
async fn write<'a>(
    conn: &mut PgConnection,
    rows: impl Iterator<Item = &'a UserRow>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<&UserRow> = rows.collect();
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&UserRow) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    sqlx::query(
        "insert into users (id, email, display_name, role, plan, status, email_verified, \
         has_password, created_at, updated_at, last_login_at, locale, timezone, \
         avatar_content_type, avatar_sha256, last_sequence) \
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::bool[], $8::bool[], $9::timestamptz[], $10::timestamptz[], \
         $11::timestamptz[], $12::text[], $13::text[], $14::text[], $15::text[], $16::int8[]) \
         on conflict (id) do update set email = excluded.email, \
         display_name = excluded.display_name, role = excluded.role, plan = excluded.plan, \
         status = excluded.status, email_verified = excluded.email_verified, \
         has_password = excluded.has_password, created_at = excluded.created_at, \
         updated_at = excluded.updated_at, last_login_at = excluded.last_login_at, \
         locale = excluded.locale, timezone = excluded.timezone, \
         avatar_content_type = excluded.avatar_content_type, \
         avatar_sha256 = excluded.avatar_sha256, last_sequence = excluded.last_sequence",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.email.clone()).collect::<Vec<_>>())
    .bind(column(|r| r.display_name.clone()))
    .bind(rows.iter().map(|r| r.role.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.plan.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.email_verified).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.has_password).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_login_at).collect::<Vec<_>>())
    .bind(column(|r| r.locale.clone()))
    .bind(column(|r| r.timezone.clone()))
    .bind(column(|r| r.avatar_content_type.clone()))
    .bind(column(|r| r.avatar_sha256.clone()))
    .bind(rows.iter().map(|r| r.last_sequence).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("delete from users").execute(conn).await?;
    Ok(())
}

/// What anyone may learn about an email (`GET /api/v1/users/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// How many users have the avatar stored as `sha256` (a file shared by several stays).
pub async fn count_with_avatar<'e>(
    db: impl PgExecutor<'e>,
    sha256: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from users where avatar_sha256 = $1")
        .bind(sha256)
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
