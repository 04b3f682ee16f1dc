//! What admins can do to users, shared by the HTTP routes and the admin CLI (`chronicle admin`,
//! which builds an [`AppState`] on the database without serving HTTP).
//!
//! Each operation is a command on an aggregate with the admin's metadata; changes that could
//! leave nobody able to administer (demoting, deactivating or erasing the last active
//! admin) take a cluster-wide advisory lock, wait until the users read model has caught up
//! with the log, and count the admins that would remain.

use aggregates::session::SessionCommand;
use aggregates::user::commands::normalize_email;
use aggregates::user::{UserCommand, ROLE_ADMIN, ROLE_USER};
use aggregates::{EventMetadata, LogCursor};
use eventstore::email_claims::{self, Claim};
use eventstore::secrets::random_nonce;
use eventstore::CommandError;
use sqlx::Connection;
use uuid::Uuid;

use super::guard::with_admin_guard;
use crate::auth::password_policy;
use crate::routes::account::{revoke_sessions, session_error, user_error};
use crate::routes::auth::checked_email;
use crate::{ApiError, AppState};

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

/// Look up a user by email in the users read model (the CLI names users by email).
pub async fn user_id_by_email(state: &AppState, email: &str) -> Result<Uuid, ApiError> {
    projections::users::by_email(&state.pool, &normalize_email(email))
        .await?
        .map(|u| u.id)
        .ok_or_else(|| ApiError::NotFound(format!("no user with email {}", email.trim())))
}
