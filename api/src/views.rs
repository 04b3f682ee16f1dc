//! How the API shows read model rows: a user's profile to its owner, a user to admins.
//! Shared by the routes and `chronicle admin --json`, so both print the same shape.

use chrono::{DateTime, Utc};
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

/// A user as admins see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminUser {
    #[serde(flatten)]
    pub profile: Profile,
    pub has_password: bool,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for AdminUser {
    fn from(u: UserRow) -> Self {
        Self {
            has_password: u.has_password,
            updated_at: u.updated_at,
            profile: Profile::from(u),
        }
    }
}
