//! What admins can do, shared by the HTTP routes and the admin CLI (`chronicle admin`,
//! which builds an [`AppState`] on the database without serving HTTP).
//!
//! Each operation is a command on an aggregate with the admin's metadata; changes that could
//! leave nobody able to administer (demoting, deactivating or erasing the last active
//! admin) take a cluster-wide advisory lock, wait until the users read model has caught up
//! with the log, and count the admins that would remain.

use aggregates::api_key::{ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyEvent};
use aggregates::session::SessionCommand;
use aggregates::user::commands::normalize_email;
use aggregates::user::{UserCommand, ROLE_ADMIN, ROLE_USER, STATUS_ACTIVE};
use aggregates::{EventMetadata, LogCursor};
use chrono::{DateTime, Utc};
use eventstore::email_claims::{self, Claim};
use eventstore::secrets::{random_nonce, random_token};
use eventstore::CommandError;
use projections::ReadModel;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::password_policy;
use crate::routes::account::{revoke_sessions, session_error, user_error};
use crate::routes::auth::checked_email;
use crate::{ApiError, AppState};

/// Prefix of every admin API key.
pub const API_KEY_PREFIX: &str = "chk_";

/// A user an admin creates.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub email: String,
    /// None: the user gets an invitation (a mail with a link to set a password).
    pub password: Option<String>,
    pub display_name: Option<String>,
    /// `user` (default) or `admin`.
    pub role: Option<String>,
    /// The configuration's default plan when absent.
    pub plan: Option<String>,
    /// Created verified (no verification mail).
    pub verified: bool,
}

/// Open an account. Returns the new user's id and the cursor of its last event.
pub async fn create_user(
    state: &AppState,
    new: NewUser,
    meta: &EventMetadata,
) -> Result<(Uuid, Option<LogCursor>), ApiError> {
    let email = checked_email(&new.email)?;
    let role = new.role.unwrap_or_else(|| ROLE_USER.to_owned());
    if role != ROLE_USER && role != ROLE_ADMIN {
        return Err(ApiError::validation("role", "must be user or admin"));
    }
    let plan = new.plan.unwrap_or_else(|| state.plans.default.clone());
    check_plan(state, &plan)?;
    let display_name = new.display_name.map(|n| n.trim().to_owned());
    let password_hash = match &new.password {
        Some(p) => {
            password_policy::check(p, &email, display_name.as_deref())
                .map_err(|m| ApiError::validation("password", m))?;
            Some(
                state
                    .passwords
                    .hash(p.clone())
                    .await
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    let user_id = Uuid::now_v7();
    match email_claims::claim(&state.pool, &email, user_id).await? {
        Claim::Claimed => {}
        Claim::TakenBy(_) => {
            return Err(ApiError::Conflict(
                "an account with this email exists already".into(),
            ))
        }
    }
    let now = state.clock.now();
    let command = UserCommand::RegisterUser {
        user_id,
        email: email.clone(),
        password_hash,
        display_name,
        role,
        plan,
        verified: new.verified,
        verification_nonce: random_nonce(),
        // without a password: an invitation mail to choose one (it verifies the address)
        invitation: new.password.is_none(),
        now,
    };
    let registered = state
        .users
        .execute(&user_id.to_string(), command, meta)
        .await;
    match registered {
        Ok(outcome) => Ok((user_id, outcome.cursor)),
        Err(e) => {
            email_claims::release(&state.pool, &email, user_id).await?;
            Err(user_error(e))
        }
    }
}

fn check_plan(state: &AppState, plan: &str) -> Result<(), ApiError> {
    if state.plans.get(plan).is_none() {
        let known: Vec<&str> = state.plans.plans.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiError::validation(
            "plan",
            format!("no such plan (known: {})", known.join(", ")),
        ));
    }
    Ok(())
}

/// What an admin may change about a user (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// `Some(None)` clears the display name.
    pub display_name: Option<Option<String>>,
    pub plan: Option<String>,
    /// A new email: unverified until the mail sent to it is answered.
    pub email: Option<String>,
}

/// Change a user's profile, plan or email. Returns the cursor of the last event.
pub async fn update_user(
    state: &AppState,
    user_id: Uuid,
    changes: UserChanges,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    // one change of a user's email at a time, in the whole deployment
    let mut lock = state.pool.acquire().await?.detach();
    sqlx::query("select pg_advisory_lock(hashtext('chronicle:user:' || $1))")
        .bind(user_id.to_string())
        .execute(&mut lock)
        .await?;
    let outcome = update_user_locked(state, user_id, changes, meta).await;
    let _ = lock.close().await;
    outcome
}

async fn update_user_locked(
    state: &AppState,
    user_id: Uuid,
    changes: UserChanges,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    let id = user_id.to_string();
    let current = state.users.load(&id).await.map_err(user_error)?;
    if !current.registered || current.erased {
        return Err(ApiError::NotFound("no such user".into()));
    }
    if let Some(plan) = &changes.plan {
        check_plan(state, plan)?;
    }
    let new_email = match &changes.email {
        Some(e) => Some(checked_email(e)?).filter(|e| *e != normalize_email(&current.email)),
        None => None,
    };
    // the new email first: a taken one changes nothing at all
    if let Some(email) = &new_email {
        match email_claims::claim(&state.pool, email, user_id).await? {
            Claim::Claimed => {}
            Claim::TakenBy(owner) if owner == user_id => {}
            Claim::TakenBy(_) => {
                return Err(ApiError::Conflict("another account has this email".into()))
            }
        }
    }
    let outcome = apply_changes(state, user_id, &current, changes, new_email.clone(), meta).await;
    // whatever happened, the user holds exactly the claim of the email they have now
    let now_email = match state.users.load(&id).await {
        Ok(u) => normalize_email(&u.email),
        Err(_) => normalize_email(&current.email),
    };
    sqlx::query("delete from email_claims where user_id = $1 and email <> $2")
        .bind(user_id)
        .bind(&now_email)
        .execute(&state.pool)
        .await?;
    outcome
}

async fn apply_changes(
    state: &AppState,
    user_id: Uuid,
    current: &aggregates::user::User,
    changes: UserChanges,
    new_email: Option<String>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    let id = user_id.to_string();
    let mut cursor = None;
    if let Some(display_name) = changes.display_name {
        let command = UserCommand::UpdateProfile {
            display_name: display_name.map(|n| n.trim().to_owned()),
            locale: current.locale.clone(),
            timezone: current.timezone.clone(),
        };
        let outcome = state
            .users
            .execute(&id, command, meta)
            .await
            .map_err(user_error)?;
        cursor = outcome.cursor.or(cursor);
    }
    if let Some(plan) = changes.plan {
        let outcome = state
            .users
            .execute(&id, UserCommand::ChangePlan { plan }, meta)
            .await
            .map_err(user_error)?;
        cursor = outcome.cursor.or(cursor);
    }
    if let Some(email) = new_email {
        let command = UserCommand::ChangeEmail {
            email,
            nonce: random_nonce(),
            now: state.clock.now(),
        };
        let change = async {
            let outcome = state
                .users
                .execute(&id, command, meta)
                .await
                .map_err(user_error)?;
            Ok(outcome.cursor)
        };
        // an admin with a new, unverified email cannot act until it is verified: that must
        // not leave the deployment without an active admin
        let changed = if current.role == ROLE_ADMIN {
            with_admin_guard(state, user_id, "change the email of", change).await?
        } else {
            change.await?
        };
        cursor = changed.or(cursor);
    }
    Ok(cursor)
}

/// Give a user another role (`user` or `admin`).
pub async fn set_role(
    state: &AppState,
    user_id: Uuid,
    role: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    if role != ROLE_USER && role != ROLE_ADMIN {
        return Err(ApiError::validation("role", "must be user or admin"));
    }
    let command = UserCommand::ChangeRole {
        role: role.to_owned(),
    };
    if role == ROLE_ADMIN {
        return run_user_command(state, user_id, command, meta).await;
    }
    with_admin_guard(state, user_id, "demote", async {
        run_user_command(state, user_id, command, meta).await
    })
    .await
}

/// Switch a user off: no sign-in, and every session is revoked at once.
pub async fn deactivate(
    state: &AppState,
    user_id: Uuid,
    reason: Option<String>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    with_admin_guard(state, user_id, "deactivate", async {
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let cursor =
            run_user_command(state, user_id, UserCommand::Deactivate { reason }, meta).await?;
        let revoked = revoke_sessions(state, user_id, "deactivated", None, meta).await?;
        Ok(revoked.or(cursor))
    })
    .await
}

/// Switch a deactivated user back on.
pub async fn reactivate(
    state: &AppState,
    user_id: Uuid,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    run_user_command(state, user_id, UserCommand::Reactivate, meta).await
}

/// Erase a user and their personal data (the same erasure as the owner's own).
pub async fn erase(
    state: &AppState,
    user_id: Uuid,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    with_admin_guard(state, user_id, "delete", async {
        crate::routes::privacy::erase_user(state, user_id, "admin", meta).await
    })
    .await
}

/// End one session of a user, or all of them.
pub async fn end_sessions(
    state: &AppState,
    user_id: Uuid,
    only: Option<Uuid>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    match only {
        None => revoke_sessions(state, user_id, "revoked by an admin", None, meta).await,
        Some(session_id) => {
            let row = projections::sessions::by_id(&state.pool, session_id)
                .await?
                .filter(|s| s.user_id == user_id)
                .ok_or_else(|| ApiError::NotFound("no such session".into()))?;
            if row.revoked_at.is_some() {
                return Ok(None);
            }
            let outcome = state
                .sessions
                .execute(
                    &session_id.to_string(),
                    SessionCommand::Revoke {
                        reason: "revoked by an admin".into(),
                    },
                    meta,
                )
                .await
                .map_err(session_error)?;
            Ok(outcome.cursor)
        }
    }
}

async fn run_user_command(
    state: &AppState,
    user_id: Uuid,
    command: UserCommand,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    let outcome = state
        .users
        .execute(&user_id.to_string(), command, meta)
        .await
        .map_err(|e| match e {
            CommandError::Domain(aggregates::user::UserError::NotRegistered) => {
                ApiError::NotFound("no such user".into())
            }
            other => user_error(other),
        })?;
    Ok(outcome.cursor)
}

/// Run `change` (which may take away `target`'s admin powers) only if another active admin
/// would remain. One such change at a time in the whole deployment (an advisory lock on a
/// connection of its own, held while the users read model catches up with the change).
pub(crate) async fn with_admin_guard<F>(
    state: &AppState,
    target: Uuid,
    verb: &str,
    change: F,
) -> Result<Option<LogCursor>, ApiError>
where
    F: std::future::Future<Output = Result<Option<LogCursor>, ApiError>>,
{
    let mut conn = state.pool.acquire().await?.detach();
    sqlx::query("select pg_advisory_lock(hashtext('chronicle:admins'))")
        .execute(&mut conn)
        .await?;
    let outcome = guarded(state, target, verb, change).await;
    // closing the connection releases the lock, whatever happened above
    let _ = conn.close().await;
    outcome
}

async fn guarded<F>(
    state: &AppState,
    target: Uuid,
    verb: &str,
    change: F,
) -> Result<Option<LogCursor>, ApiError>
where
    F: std::future::Future<Output = Result<Option<LogCursor>, ApiError>>,
{
    users_caught_up(state, None).await?;
    let row = projections::users::by_id(&state.pool, target)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    if row.role == ROLE_ADMIN && row.status == STATUS_ACTIVE {
        let others = projections::users::active_admins_except(&state.pool, target).await?;
        if others == 0 {
            return Err(ApiError::Conflict(format!(
                "cannot {verb} the last active admin; make another admin first"
            )));
        }
    }
    let cursor = change.await?;
    // Hold the lock until the read model shows the change. If it does not in time, the
    // change stands (it is committed); the next guarded change waits for it before it
    // counts admins (it waits for every committed event), so it cannot be counted twice.
    if users_caught_up(state, cursor).await.is_err() {
        tracing::warn!(user.id = %target, "The users read model is behind an admin change");
    }
    Ok(cursor)
}

/// Wait until the users read model has reached `cursor` (None: every event committed so
/// far, readable or not yet: a count made after this wait includes every earlier change).
pub async fn users_caught_up(state: &AppState, cursor: Option<LogCursor>) -> Result<(), ApiError> {
    let target = match cursor {
        Some(c) => Some(c),
        None => eventstore::log::last_committed(&state.pool).await?,
    };
    let Some(target) = target else { return Ok(()) };
    state
        .checkpoints
        .wait_for(
            &[ReadModel::Users, ReadModel::Sessions],
            target,
            state.config.read_your_writes_timeout,
        )
        .await
        .map_err(|_| ApiError::NotCaughtUp)
}

/// A new admin API key: its id and the key itself (shown once, never stored).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    /// `chk_<id>_<secret>`: send it as `X-Admin-Key`. Shown only now.
    pub key: String,
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Make an admin API key.
pub async fn create_api_key(
    state: &AppState,
    name: &str,
    created_by: &str,
    meta: &EventMetadata,
) -> Result<NewApiKey, ApiError> {
    let id = Uuid::now_v7();
    let secret = random_token();
    let command = ApiKeyCommand::CreateApiKey {
        name: name.to_owned(),
        secret_hash: secret_hash(&secret),
        created_by: created_by.to_owned(),
        now: state.clock.now(),
    };
    state
        .api_keys
        .execute(&id.to_string(), command, meta)
        .await
        .map_err(api_key_error)?;
    Ok(NewApiKey {
        id,
        name: name.trim().to_owned(),
        key: format!("{API_KEY_PREFIX}{}_{secret}", id.simple()),
    })
}

/// Revoke a key: it stops working at once (keys are checked against the event store).
pub async fn revoke_api_key(
    state: &AppState,
    id: Uuid,
    revoked_by: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    let command = ApiKeyCommand::RevokeApiKey {
        revoked_by: revoked_by.to_owned(),
        now: state.clock.now(),
    };
    let outcome = state
        .api_keys
        .execute(&id.to_string(), command, meta)
        .await
        .map_err(api_key_error)?;
    Ok(outcome.cursor)
}

fn api_key_error(e: CommandError<ApiKeyError>) -> ApiError {
    match e {
        CommandError::Domain(ApiKeyError::NotFound) => ApiError::NotFound("no such API key".into()),
        CommandError::Domain(ApiKeyError::BadName) => {
            ApiError::validation("name", "must be 1 to 100 printable characters")
        }
        CommandError::Domain(e) => ApiError::Conflict(e.to_string()),
        CommandError::Conflict => ApiError::Conflict("the key changed meanwhile; try again".into()),
        CommandError::Store(e) => ApiError::internal(e),
    }
}

/// Check a presented `X-Admin-Key`; the key's id when it is valid and not revoked.
pub async fn verify_api_key(state: &AppState, presented: &str) -> Result<Uuid, ApiError> {
    let (id, secret) = parse_api_key(presented).ok_or(ApiError::TokenInvalid)?;
    let key: ApiKey = state
        .api_keys
        .load(&id.to_string())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expected = key.secret_hash.as_bytes();
    let given = secret_hash(secret);
    let same = expected.len() == given.len()
        && expected
            .iter()
            .zip(given.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if key.is_active() && same {
        Ok(id)
    } else {
        Err(ApiError::TokenInvalid)
    }
}

fn parse_api_key(presented: &str) -> Option<(Uuid, &str)> {
    let rest = presented.trim().strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(32)?;
    let secret = secret.strip_prefix('_')?;
    if secret.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((Uuid::parse_str(id).ok()?, secret))
}

/// An admin API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last caused an event.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Every admin API key, oldest first, from the log.
pub async fn list_api_keys(state: &AppState) -> Result<Vec<ApiKeyInfo>, ApiError> {
    let filter = eventstore::log::LogFilter {
        aggregate_type: Some(aggregates::api_key::AGGREGATE_TYPE.to_owned()),
        ..Default::default()
    };
    let events =
        eventstore::log::read_filtered(&state.pool, LogCursor::START, &filter, 100_000).await?;
    let mut keys: Vec<ApiKeyInfo> = vec![];
    for event in events {
        let Ok(id) = event.aggregate_id.parse::<Uuid>() else {
            continue;
        };
        match serde_json::from_value::<ApiKeyEvent>(event.payload) {
            Ok(ApiKeyEvent::ApiKeyCreated {
                name,
                created_by,
                created_at,
                ..
            }) => keys.push(ApiKeyInfo {
                id,
                name,
                created_by,
                created_at: Some(created_at),
                revoked_at: None,
                last_used_at: None,
            }),
            Ok(ApiKeyEvent::ApiKeyRevoked { revoked_at, .. }) => {
                if let Some(k) = keys.iter_mut().find(|k| k.id == id) {
                    k.revoked_at = Some(revoked_at);
                }
            }
            Err(_) => {}
        }
    }
    for k in &mut keys {
        k.last_used_at = last_acted(&state.pool, &k.id.to_string()).await?;
    }
    Ok(keys)
}

async fn last_acted(
    conn: &sqlx::PgPool,
    actor_id: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("select max(recorded_at) from events where metadata ->> 'actor_id' = $1")
        .bind(actor_id)
        .fetch_one(conn)
        .await
}

/// Look up a user by email in the users read model (the CLI names users by email).
pub async fn user_id_by_email(state: &AppState, email: &str) -> Result<Uuid, ApiError> {
    projections::users::by_email(&state.pool, &normalize_email(email))
        .await?
        .map(|u| u.id)
        .ok_or_else(|| ApiError::NotFound(format!("no user with email {}", email.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_own_shape() {
        let id = Uuid::from_u128(42);
        let key = format!("chk_{}_abc_def-1", id.simple());
        assert_eq!(parse_api_key(&key), Some((id, "abc_def-1")));
        for bad in [
            "",
            "chk_",
            "chk_123_abc",
            &format!("chk_{}", id.simple()),
            &format!("chk_{}_", id.simple()),
            &format!("xyz_{}_abc", id.simple()),
            "chk_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz_abc",
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad}");
        }
    }
}
