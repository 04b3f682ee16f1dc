//! Authentication: who is calling.
//!
//! An access token (JWT) arrives in `Authorization: Bearer` or in the HttpOnly cookie
//! `chronicle_access` (`__Host-chronicle_access` when cookies are Secure), never in a query
//! string. [`AuthUser`] verifies it, then checks on
//! every request that its session is still live (revoked or expired sessions stop working
//! at once) and that the user is not disabled.
//!
//! # Layout
//! - [`tokens`]: JWT access tokens and opaque refresh tokens.
//! - [`password_policy`]: what a password must be.
//! - [`rate_limit`]: per-IP and per-account limits.
//! - [`cookies`]: the auth cookies.

pub mod cookies;
pub use usecases::password_policy;
pub mod rate_limit;
pub mod tokens;

use aggregates::user::{STATUS_DISABLED, STATUS_ERASED};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use projections::{sessions, users};
use uuid::Uuid;

use crate::{ApiError, AppState};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    /// The role the users read model shows now (None while it has not caught up with a new
    /// account); `role` is the one in the token.
    pub current_role: Option<String>,
    /// The plan the users read model shows now (None while it has not caught up).
    pub current_plan: Option<String>,
}

impl AuthUser {
    /// The caller's plan, from the users read model as authentication read it (a plan
    /// change waits for the read model, so it is current); the default plan for a name the
    /// configuration no longer has.
    pub async fn plan(&self, state: &AppState) -> Result<aggregates::plan::Plan, ApiError> {
        let name = match &self.current_plan {
            Some(plan) => plan.clone(),
            None => {
                users::by_id(&state.pool, self.user_id)
                    .await?
                    .ok_or(ApiError::NotCaughtUp)?
                    .plan
            }
        };
        usecases::usage::plan_named(&state.plans, &name)
            .ok_or_else(|| ApiError::internal_msg("no plans configured"))
    }

    /// Count one of `kind` (a message, an upload) against the caller's plan's daily limit
    /// before it is accepted: 402 `upgrade_required` when the day's allowance is used up.
    pub async fn charge(
        &self,
        state: &AppState,
        kind: &str,
        meta: &aggregates::EventMetadata,
    ) -> Result<(), ApiError> {
        let plan = self.plan(state).await?;
        Ok(usecases::usage::charge(state, self.user_id, &plan, kind, meta).await?)
    }
}

/// A user's standing as the users read model shows it.
struct Standing {
    status: String,
    role: String,
    plan: String,
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            // only the name this deployment sets: with Secure cookies, a bare-named one
            // could have been planted by a sibling subdomain
            .or_else(|| {
                cookies::get_as_set(&parts.headers, cookies::ACCESS, state.config.cookie_secure)
            })
            .ok_or(ApiError::Unauthorized)?;
        let claims = state.tokens.verify(&token).map_err(|e| match e {
            tokens::TokenError::Expired => ApiError::TokenExpired,
            tokens::TokenError::Invalid => ApiError::TokenInvalid,
        })?;
        let user_id: Uuid = claims.sub.parse().map_err(|_| ApiError::TokenInvalid)?;
        let session_id: Uuid = claims.sid.parse().map_err(|_| ApiError::TokenInvalid)?;
        let now = state.clock.now();
        // The session must still be live, and its user neither disabled nor erased: one
        // query of the read models. A session so new that the read model has not caught up
        // is looked up in the event store, and its user in the users read model.
        let (live, user) = match sessions::standing(&state.pool, session_id).await? {
            Some(row) => {
                let user = row.status.clone().map(|status| Standing {
                    status,
                    role: row.role.clone().unwrap_or_default(),
                    plan: row.plan.clone().unwrap_or_default(),
                });
                (row.user_id == user_id && row.is_active(now), user)
            }
            None => {
                let s = state
                    .sessions
                    .load(&session_id.to_string())
                    .await
                    .map_err(ApiError::from)?;
                let live = s.started
                    && !s.revoked
                    && s.user_id == Some(user_id)
                    && s.expires_at.is_some_and(|e| e > now);
                let user = match live {
                    true => users::by_id(&state.pool, user_id).await?.map(|u| Standing {
                        status: u.status,
                        role: u.role,
                        plan: u.plan,
                    }),
                    false => None,
                };
                (live, user)
            }
        };
        if !live {
            return Err(ApiError::TokenInvalid);
        }
        if let Some(user) = &user {
            if user.status == STATUS_ERASED {
                return Err(ApiError::TokenInvalid);
            }
            if user.status == STATUS_DISABLED {
                return Err(ApiError::AccountDisabled);
            }
        }
        Ok(AuthUser {
            user_id,
            session_id,
            role: claims.role,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            current_plan: user.as_ref().map(|u| u.plan.clone()),
            current_role: user.map(|u| u.role),
        })
    }
}
