//! What the account routes share: the profile shape, finding an account by email,
//! revoking sessions, the client's IP, and mapping domain refusals to HTTP.

use std::net::IpAddr;

use aggregates::session::{SessionCommand, SessionError};
use aggregates::user::UserError;
use aggregates::{EventMetadata, LogCursor};
use chrono::{DateTime, Utc};
use eventstore::CommandError;
use projections::users::UserRow;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{ApiError, AppState};

/// A user's profile as the API shows it to its owner.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    /// `user` or `admin`.
    pub role: String,
    pub plan: String,
    /// `pending_verification`, `active` or `disabled`.
    pub status: String,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub avatar_url: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

impl From<UserRow> for Profile {
    fn from(u: UserRow) -> Self {
        Self {
            avatar_url: u.avatar_url(),
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            plan: u.plan,
            status: u.status,
            email_verified: u.email_verified,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
            locale: u.locale,
            timezone: u.timezone,
        }
    }
}

/// The profile from the read model (after the caller waited for it when needed). The
/// callers know the account exists (it signed in, or a command just succeeded on it), so a
/// missing row means the read model is behind: 503 `not_caught_up`, never 404.
pub async fn profile(state: &AppState, user_id: Uuid) -> Result<Profile, ApiError> {
    projections::users::by_id(&state.pool, user_id)
        .await?
        .map(Profile::from)
        .ok_or(ApiError::NotCaughtUp)
}

pub fn client_ip(meta: &EventMetadata) -> Option<IpAddr> {
    meta.ip.as_deref().and_then(|ip| ip.parse().ok())
}

/// Revoke every live session of a user except `keep`; the cursor of the last revocation.
pub async fn revoke_sessions(
    state: &AppState,
    user_id: Uuid,
    reason: &str,
    keep: Option<Uuid>,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
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
            .await
            .map_err(session_error)?;
        last = outcome.cursor.or(last);
    }
    Ok(last)
}

/// How a refused user command answers.
pub fn user_error(e: CommandError<UserError>) -> ApiError {
    match e {
        CommandError::Domain(UserError::Invalid { field, message }) => {
            ApiError::validation(field, message)
        }
        CommandError::Domain(UserError::AlreadyRegistered) => {
            ApiError::Conflict("the account exists already".into())
        }
        CommandError::Domain(UserError::NotRegistered) => {
            ApiError::NotFound("no such account".into())
        }
        CommandError::Domain(UserError::AlreadyVerified)
        | CommandError::Domain(UserError::SecretInvalid) => ApiError::LinkInvalid,
        CommandError::Domain(UserError::SecretExpired) => ApiError::LinkExpired,
        CommandError::Domain(UserError::Locked { .. }) => ApiError::AccountLocked {
            retry_after_secs: 60,
        },
        CommandError::Domain(UserError::EmailNotVerified) => ApiError::EmailNotVerified,
        CommandError::Domain(UserError::Disabled) => ApiError::AccountDisabled,
        CommandError::Conflict => {
            ApiError::Conflict("the account was changed by another request; try again".into())
        }
        e @ (CommandError::Store(_) | CommandError::Unavailable(_)) => e.into(),
    }
}

/// How a refused session command answers.
pub fn session_error(e: CommandError<SessionError>) -> ApiError {
    match e {
        CommandError::Domain(SessionError::Expired) => ApiError::TokenExpired,
        CommandError::Domain(_) => ApiError::TokenInvalid,
        CommandError::Conflict => {
            ApiError::Conflict("the session was changed by another request; try again".into())
        }
        e @ (CommandError::Store(_) | CommandError::Unavailable(_)) => e.into(),
    }
}

/// "Firefox 128 on Linux" from a user agent.
pub fn device_name(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent else {
        return "Unknown device".into();
    };
    match woothee::parser::Parser::new().parse(ua) {
        Some(r) if r.name != "UNKNOWN" => {
            let os = if r.os == "UNKNOWN" { "" } else { r.os };
            if os.is_empty() {
                r.name.to_owned()
            } else {
                format!("{} on {}", r.name, os)
            }
        }
        _ => ua.chars().take(60).collect(),
    }
}
