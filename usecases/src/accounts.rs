//! Accounts: opening one (one account per email: the claim comes first and is given back
//! if the account is not opened), what admins change about a user (profile, plan, email,
//! role, deactivation), and ending sessions. Shared by the HTTP routes, the admin CLI and
//! the seed.
//!
//! Each operation is a command on an aggregate with the caller's metadata; changes that
//! could leave nobody able to administer (demoting, deactivating, erasing or re-addressing
//! the last active admin) run under [`crate::admin_guard`].

use aggregates::session::SessionCommand;
use aggregates::user::commands::{is_plausible_email, normalize_email};
use aggregates::user::{User, UserCommand, UserError, ROLE_ADMIN, ROLE_USER};
use aggregates::{EventMetadata, LogCursor};
use eventstore::email_claims::{self, Claim};
use eventstore::secrets::random_nonce;
use eventstore::{CommandBus, CommandError, CommandOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin_guard::with_admin_guard;
use crate::password_policy;
use crate::{Core, Error};

/// An email as accounts hold it (trimmed, lower-case), or 422 on `email`.
pub fn checked_email(email: &str) -> Result<String, Error> {
    let email = normalize_email(email);
    if !is_plausible_email(&email) {
        return Err(Error::invalid("email", "is not an email address"));
    }
    Ok(email)
}

/// How opening an account went.
pub enum Opened {
    /// The account is open: the outcome of its `RegisterUser`.
    New(CommandOutcome<aggregates::user::UserEvent>),
    /// The email belongs to this account already; nothing was appended.
    Taken(Uuid),
}

/// Open the account `register` describes for `email` (normalised): claim the email first
/// (one account per email across every process), run the command, and give the claim back
/// if the account was not opened. Registration, an admin's new user and the seeded admin
/// all open accounts here. (It takes the pool and the bus, not a [`Core`]: the seed runs
/// before there is one.)
pub async fn open_account(
    pool: &PgPool,
    users: &CommandBus<User>,
    email: &str,
    user_id: Uuid,
    register: UserCommand,
    meta: &EventMetadata,
) -> Result<Opened, Error> {
    match email_claims::claim(pool, email, user_id).await? {
        Claim::Claimed => {}
        Claim::TakenBy(owner) => return Ok(Opened::Taken(owner)),
    }
    match users.execute(&user_id.to_string(), register, meta).await {
        Ok(outcome) => Ok(Opened::New(outcome)),
        Err(e) => {
            email_claims::release(pool, email, user_id).await?;
            Err(e.into())
        }
    }
}

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
    state: &Core,
    new: NewUser,
    meta: &EventMetadata,
) -> Result<(Uuid, Option<LogCursor>), Error> {
    let email = checked_email(&new.email)?;
    let role = new.role.unwrap_or_else(|| ROLE_USER.to_owned());
    if role != ROLE_USER && role != ROLE_ADMIN {
        return Err(Error::invalid("role", "must be user or admin"));
    }
    let plan = new.plan.unwrap_or_else(|| state.plans.default.clone());
    check_plan(state, &plan)?;
    let display_name = new.display_name.map(|n| n.trim().to_owned());
    let password_hash = match &new.password {
        Some(p) => {
            password_policy::check(p, &email, display_name.as_deref())
                .map_err(|m| Error::invalid("password", m))?;
            Some(state.passwords.hash(p.clone()).await?)
        }
        None => None,
    };
    let user_id = Uuid::now_v7();
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
        now: state.clock.now(),
    };
    match open_account(&state.pool, &state.users, &email, user_id, command, meta).await? {
        Opened::New(outcome) => Ok((user_id, outcome.cursor)),
        Opened::Taken(_) => Err(Error::Conflict(
            "an account with this email exists already".into(),
        )),
    }
}

pub fn check_plan(state: &Core, plan: &str) -> Result<(), Error> {
    if state.plans.get(plan).is_none() {
        let known: Vec<&str> = state.plans.plans.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::invalid(
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
    state: &Core,
    user_id: Uuid,
    changes: UserChanges,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    // one change of a user's email at a time, in the whole deployment
    let lock = eventstore::locks::lock(&state.pool, &format!("chronicle:user:{user_id}")).await?;
    let outcome = update_user_locked(state, user_id, changes, meta).await;
    lock.release().await;
    outcome
}

async fn update_user_locked(
    state: &Core,
    user_id: Uuid,
    changes: UserChanges,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let id = user_id.to_string();
    let current = state.users.load(&id).await?;
    if !current.registered || current.erased {
        return Err(Error::NotFound("no such user".into()));
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
                return Err(Error::Conflict("another account has this email".into()))
            }
        }
    }
    let outcome = apply_changes(state, user_id, &current, changes, new_email.clone(), meta).await;
    // whatever happened, the user holds exactly the claim of the email they have now
    let now_email = match state.users.load(&id).await {
        Ok(u) => normalize_email(&u.email),
        Err(_) => normalize_email(&current.email),
    };
    email_claims::release_all_but(&state.pool, user_id, &now_email).await?;
    outcome
}

async fn apply_changes(
    state: &Core,
    user_id: Uuid,
    current: &aggregates::user::User,
    changes: UserChanges,
    new_email: Option<String>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let id = user_id.to_string();
    let mut cursor = None;
    if let Some(display_name) = changes.display_name {
        let command = UserCommand::UpdateProfile {
            display_name: display_name.map(|n| n.trim().to_owned()),
            locale: current.locale.clone(),
            timezone: current.timezone.clone(),
        };
        let outcome = state.users.execute(&id, command, meta).await?;
        cursor = outcome.cursor.or(cursor);
    }
    if let Some(plan) = changes.plan {
        let outcome = state
            .users
            .execute(&id, UserCommand::ChangePlan { plan }, meta)
            .await?;
        cursor = outcome.cursor.or(cursor);
    }
    if let Some(email) = new_email {
        let command = UserCommand::ChangeEmail {
            email,
            nonce: random_nonce(),
            now: state.clock.now(),
        };
        let change = async {
            let outcome = state.users.execute(&id, command, meta).await?;
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
    state: &Core,
    user_id: Uuid,
    role: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    if role != ROLE_USER && role != ROLE_ADMIN {
        return Err(Error::invalid("role", "must be user or admin"));
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
    state: &Core,
    user_id: Uuid,
    reason: Option<String>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
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
    state: &Core,
    user_id: Uuid,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    run_user_command(state, user_id, UserCommand::Reactivate, meta).await
}

/// Erase a user and their personal data (the same erasure as the owner's own).
pub async fn erase(
    state: &Core,
    user_id: Uuid,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    with_admin_guard(state, user_id, "delete", async {
        crate::erasure::erase_user(state, user_id, "admin", meta).await
    })
    .await
}

/// End one session of a user, or all of them.
pub async fn end_sessions(
    state: &Core,
    user_id: Uuid,
    only: Option<Uuid>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    match only {
        None => revoke_sessions(state, user_id, "revoked by an admin", None, meta).await,
        Some(session_id) => {
            let row = projections::sessions::by_id(&state.pool, session_id)
                .await?
                .filter(|s| s.user_id == user_id)
                .ok_or_else(|| Error::NotFound("no such session".into()))?;
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
                .await?;
            Ok(outcome.cursor)
        }
    }
}

async fn run_user_command(
    state: &Core,
    user_id: Uuid,
    command: UserCommand,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let outcome = state
        .users
        .execute(&user_id.to_string(), command, meta)
        .await
        .map_err(|e| match e {
            CommandError::Domain(UserError::NotRegistered) => {
                Error::NotFound("no such user".into())
            }
            other => other.into(),
        })?;
    Ok(outcome.cursor)
}

/// Look up a user by email in the users read model (the CLI names users by email).
pub async fn user_id_by_email(state: &Core, email: &str) -> Result<Uuid, Error> {
    projections::users::by_email(&state.pool, &normalize_email(email))
        .await?
        .map(|u| u.id)
        .ok_or_else(|| Error::NotFound(format!("no user with email {}", email.trim())))
}

/// Revoke every live session of a user except `keep`; the cursor of the last revocation.
pub async fn revoke_sessions(
    state: &Core,
    user_id: Uuid,
    reason: &str,
    keep: Option<Uuid>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let now = state.clock.now();
    let live = projections::sessions::active_for_user(&state.pool, user_id, now).await?;
    let mut last = None;
    for s in live.into_iter().filter(|s| Some(s.id) != keep) {
        let outcome = state
            .sessions
            .execute(
                &s.id.to_string(),
                SessionCommand::Revoke {
                    reason: reason.to_owned(),
                },
                meta,
            )
            .await?;
        last = outcome.cursor.or(last);
    }
    Ok(last)
}
