//! `/api/v1/admin`: running the service and auditing its users.
//!
//! Every route here takes an [`Admin`]: a signed-in user whose role is `admin` *now* (read
//! from the users read model on each request, so a demoted admin loses access at once), or
//! an admin API key in `X-Admin-Key`. Anyone else signed in gets 403; no credentials, 401.
//! The events an admin causes name them as the actor: the admin's user id with role
//! `admin`, or the key's id with role `api_key`.
//!
//! # Layout
//! - [`audit`]: a user's audit trail (history with actors and readable summaries).
//! - [`users`]: the user routes.
//! - [`insight`]: stats and projections.
//! - [`export`]: the event log, filtered, as JSON pages or an NDJSON/CSV stream.
//! - [`live`]: the event stream as it happens (server-sent events).
//!
//! What the routes do to users, keys and the log is the use cases'
//! ([`usecases::accounts`], [`usecases::api_keys`], [`usecases::admin_guard`],
//! [`usecases::audit`], [`usecases::export`]), shared with `chronicle admin` and
//! `chronicle events`.

pub mod audit;
pub mod export;
pub mod insight;
pub mod live;
pub mod users;

use usecases::api_keys;
pub use usecases::export::type_list;

use aggregates::api_key::ROLE_API_KEY;
use aggregates::user::ROLE_ADMIN;
use aggregates::EventMetadata;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Router;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::RequestMeta;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(users::router())
        .merge(audit::router())
        .merge(insight::router())
        .merge(live::router())
        .merge(export::router())
}

/// Who is acting as an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminIdentity {
    /// A signed-in user with the admin role.
    User(Uuid),
    /// An admin API key (its id).
    ApiKey(Uuid),
}

/// An authorised admin request, with the metadata its events are recorded with.
#[derive(Debug, Clone)]
pub struct Admin {
    pub identity: AdminIdentity,
    pub meta: EventMetadata,
}

impl Admin {
    /// The signed-in admin's user id (None for an API key).
    pub fn user_id(&self) -> Option<Uuid> {
        match self.identity {
            AdminIdentity::User(id) => Some(id),
            AdminIdentity::ApiKey(_) => None,
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let RequestMeta(meta) = RequestMeta::from_request_parts(parts, state).await?;
        if let Some(key) = parts.headers.get("x-admin-key") {
            let key = key.to_str().map_err(|_| ApiError::TokenInvalid)?;
            let id = api_keys::verify_api_key(state, key).await?;
            return Ok(Admin {
                identity: AdminIdentity::ApiKey(id),
                meta: meta.acting_as(id, ROLE_API_KEY),
            });
        }
        let auth = AuthUser::from_request_parts(parts, state).await?;
        // the role as it is now, not as it was when the token was issued
        if auth.current_role.as_deref() != Some(ROLE_ADMIN) {
            return Err(ApiError::Forbidden);
        }
        Ok(Admin {
            identity: AdminIdentity::User(auth.user_id),
            meta: meta.acting_as(auth.user_id, ROLE_ADMIN),
        })
    }
}

/// Whether whoever opened a long-running admin response (the live stream, a streamed
/// export) may still see it: an admin demoted, deactivated or erased, or a revoked key,
/// loses it within a batch or a few seconds.
pub async fn still_allowed(state: &AppState, identity: &AdminIdentity) -> bool {
    match identity {
        AdminIdentity::ApiKey(id) => state
            .api_keys
            .load(&id.to_string())
            .await
            .is_ok_and(|k| k.is_active()),
        AdminIdentity::User(id) => projections::users::by_id(&state.pool, *id)
            .await
            .ok()
            .flatten()
            .is_some_and(|u| u.role == ROLE_ADMIN && u.status == aggregates::user::STATUS_ACTIVE),
    }
}
