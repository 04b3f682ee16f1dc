//! `/api/v1/auth`: signing in and out, refreshing, and checking an access token.

use aggregates::session::{SessionCommand, SessionEvent, REVOKED_LOGOUT, REVOKED_LOGOUT_ALL};
use aggregates::user::{UserCommand, UserError, UserEvent};
use aggregates::{EventMetadata, LogCursor};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use eventstore::email_claims;
use eventstore::secrets::random_token;
use eventstore::CommandError;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::tokens::{parse_refresh_token, refresh_token};
use crate::auth::{cookies, AuthUser};
use crate::envelope::Reply;
use crate::error::session_error;
use crate::error::user_error;
use crate::extract::client_ip;
use crate::extract::device_name;
use crate::extract::{from_json, JsonOrForm, RequestMeta};
use crate::routes::auth::checked_email;
use crate::routes::read_your_writes::settle;
use crate::views::profile;
use crate::views::Profile;
use crate::{ApiError, AppState};
use usecases::accounts::revoke_sessions;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/logout-all", post(logout_all))
        .route("/api/v1/auth/verify", post(introspect))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// Tokens, as login and refresh answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Opaque; send it to `/refresh` (or let the HttpOnly cookie carry it).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Profile>,
}

fn duration(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::minutes(15))
}

/// Metadata of a request made by a known user.
fn as_user(meta: &EventMetadata, user_id: Uuid) -> EventMetadata {
    meta.acting_as(user_id, "user")
}

/// Answer with a token pair, as JSON and as cookies.
fn token_response(state: &AppState, pair: TokenPair, position: Option<LogCursor>) -> Response {
    let mut headers = HeaderMap::new();
    cookies::set_pair(
        &mut headers,
        &pair.access_token,
        pair.expires_in,
        &pair.refresh_token,
        state.config.refresh_token_ttl.as_secs() as i64,
        state.config.cookie_secure,
    );
    let mut reply = Reply::ok(pair);
    reply.position = position;
    (headers, reply).into_response()
}

fn issue_access(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    role: &str,
    now: DateTime<Utc>,
) -> Result<(String, i64), ApiError> {
    let ttl = duration(state.config.access_token_ttl);
    let token = state
        .tokens
        .issue(user_id, session_id, role, now, now + ttl)
        .map_err(ApiError::internal)?;
    Ok((token, ttl.num_seconds()))
}

/// Sign in. 200 with tokens and the profile; also sets HttpOnly cookies.
///
/// Unknown emails and wrong passwords get the same answer (`invalid_credentials`), in about
/// the same time. After repeated failures the account is locked for a growing while: 423
/// `account_locked` with `Retry-After`, even for the right password.
#[utoipa::path(
    post, path = "/api/v1/auth/login", operation_id = "login", tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 401, description = "`invalid_credentials`", body = crate::error::ErrorBody),
        (status = 403, description = "`email_not_verified` or `account_disabled`", body = crate::error::ErrorBody),
        (status = 423, description = "`account_locked`", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::error::ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<LoginRequest>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    match sign_in(&state, meta, req).await {
        Ok(signed_in) => Ok(signed_in),
        // a failure for a known and for an unknown address take the same time
        Err(e) => crate::routes::auth::at_the_floor(&state, started, Err(e)).await,
    }
}

async fn sign_in(
    state: &AppState,
    meta: aggregates::EventMetadata,
    req: LoginRequest,
) -> Result<Response, ApiError> {
    let email = checked_email(&req.email)?;
    state
        .limits
        .check_auth(client_ip(&meta), Some(&email))
        .await?;
    let Some(user_id) = email_claims::owner(&state.pool, &email).await? else {
        // as slow as a real check, and counted (and locked) like an account's failure
        let _ = state
            .passwords
            .verify(req.password, state.dummy_hash.to_string())
            .await;
        return Err(crate::routes::auth::probe_sign_in_failed(state, &meta, &email).await);
    };
    let user = state
        .users
        .load(&user_id.to_string())
        .await
        .map_err(user_error)?;
    let hash = user
        .password_hash
        .clone()
        .unwrap_or_else(|| state.dummy_hash.to_string());
    let password_ok = state
        .passwords
        .verify(req.password, hash)
        .await
        .map_err(ApiError::internal)?
        && user.password_hash.is_some();
    // The caller is the user only once the password is right; a wrong one is recorded
    // as an anonymous attempt (the audit trail must not blame the account's owner).
    let meta = if password_ok {
        as_user(&meta, user_id)
    } else {
        meta
    };
    let session_id = Uuid::now_v7();
    let now = state.clock.now();
    let outcome = state
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::Login {
                password_ok,
                session_id,
                now,
            },
            &meta,
        )
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        // claimed by a registration still in flight: no account yet, as for an unknown one
        Err(CommandError::Domain(UserError::NotRegistered)) => {
            return Err(crate::routes::auth::probe_sign_in_failed(state, &meta, &email).await)
        }
        Err(CommandError::Domain(UserError::Locked { until })) => {
            return Err(ApiError::AccountLocked {
                retry_after_secs: (until - now).num_seconds().max(1) as u64,
            })
        }
        Err(e) => return Err(user_error(e)),
    };
    for event in &outcome.events {
        if let UserEvent::LoginFailed { locked_until, .. } = event {
            return Err(match locked_until {
                Some(until) => ApiError::AccountLocked {
                    retry_after_secs: (*until - now).num_seconds().max(1) as u64,
                },
                None => ApiError::InvalidCredentials,
            });
        }
    }
    let secret = random_token();
    let started = state
        .sessions
        .execute(
            &session_id.to_string(),
            SessionCommand::StartSession {
                user_id,
                email: user.email.clone(),
                refresh_token_hash: state.secrets.refresh_token_hash(&secret),
                device: device_name(meta.user_agent.as_deref()),
                ip: meta.ip.clone(),
                user_agent: meta.user_agent.clone(),
                now,
                expires_at: now + duration(state.config.refresh_token_ttl),
            },
            &meta,
        )
        .await
        .map_err(session_error)?;
    settle(
        state,
        outcome.cursor.max(started.cursor),
        &[ReadModel::Users, ReadModel::Sessions],
    )
    .await;
    let (access_token, expires_in) = issue_access(state, user_id, session_id, &user.role, now)?;
    let pair = TokenPair {
        access_token,
        refresh_token: refresh_token(session_id, &secret),
        token_type: "Bearer",
        expires_in,
        user: Some(profile(state, user_id).await?),
    };
    tracing::info!(user.id = %user_id, session.id = %session_id, "Signed in");
    Ok(token_response(state, pair, started.cursor))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(min_length = 1, max_length = 512, pattern = "^[!-~]+$")]
    pub refresh_token: String,
}

/// Exchange a refresh token (body, or the cookie) for a new pair. The old refresh token
/// is dead; presenting a dead one again revokes the whole session.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", operation_id = "refresh_tokens", tag = "auth",
    request_body(content = Option<RefreshRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "A new pair", body = TokenPair),
        (status = 401, description = "`token_invalid` or `token_expired`", body = crate::error::ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.limits.check_auth(client_ip(&meta), None).await?;
    let token = if body.iter().all(u8::is_ascii_whitespace) {
        cookies::get_as_set(&headers, cookies::REFRESH, state.config.cookie_secure)
            .ok_or(ApiError::Unauthorized)?
    } else {
        from_json::<RefreshRequest>(&body)?.refresh_token
    };
    let (session_id, secret) = parse_refresh_token(&token).ok_or(ApiError::TokenInvalid)?;
    let session = state
        .sessions
        .load(&session_id.to_string())
        .await
        .map_err(session_error)?;
    let user_id = session.user_id.ok_or(ApiError::TokenInvalid)?;
    let meta = as_user(&meta, user_id);
    let now = state.clock.now();
    let new_secret = random_token();
    let outcome = state
        .sessions
        .execute(
            &session_id.to_string(),
            SessionCommand::Refresh {
                presented_hash: state.secrets.refresh_token_hash(secret),
                new_hash: state.secrets.refresh_token_hash(&new_secret),
                now,
                expires_at: now + duration(state.config.refresh_token_ttl),
            },
            &meta,
        )
        .await
        .map_err(session_error)?;
    if outcome
        .events
        .iter()
        .any(|e| matches!(e, SessionEvent::RefreshTokenReuseDetected { .. }))
    {
        // make the revocation visible before answering: its access tokens die now
        settle(&state, outcome.cursor, &[ReadModel::Sessions]).await;
        tracing::warn!(session.id = %session_id, user.id = %user_id, "Refresh token reuse: session revoked");
        return Err(ApiError::TokenInvalid);
    }
    let user = projections::users::by_id(&state.pool, user_id)
        .await?
        .ok_or(ApiError::TokenInvalid)?;
    if user.status == aggregates::user::STATUS_ERASED {
        return Err(ApiError::TokenInvalid);
    }
    if user.status == aggregates::user::STATUS_DISABLED {
        return Err(ApiError::AccountDisabled);
    }
    let (access_token, expires_in) = issue_access(&state, user_id, session_id, &user.role, now)?;
    let pair = TokenPair {
        access_token,
        refresh_token: refresh_token(session_id, &new_secret),
        token_type: "Bearer",
        expires_in,
        user: None,
    };
    settle(&state, outcome.cursor, &[ReadModel::Sessions]).await;
    Ok(token_response(&state, pair, outcome.cursor))
}

fn signed_out(state: &AppState, cursor: Option<LogCursor>) -> Response {
    let mut headers = HeaderMap::new();
    cookies::clear(&mut headers, state.config.cookie_secure);
    if let Some(c) = cursor {
        if let Ok(v) = c.to_string().parse() {
            headers.insert("x-position", v);
        }
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Sign out of this session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", operation_id = "logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"),
              (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
) -> Result<Response, ApiError> {
    let meta = as_user(&meta, auth.user_id);
    let outcome = state
        .sessions
        .execute(
            &auth.session_id.to_string(),
            SessionCommand::Revoke {
                reason: REVOKED_LOGOUT.to_owned(),
            },
            &meta,
        )
        .await
        .map_err(session_error)?;
    settle(&state, outcome.cursor, &[ReadModel::Sessions]).await;
    Ok(signed_out(&state, outcome.cursor))
}

/// Sign out everywhere: every session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", operation_id = "logout_all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Signed out everywhere"),
              (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn logout_all(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
) -> Result<Response, ApiError> {
    let meta = as_user(&meta, auth.user_id);
    let mut cursor = revoke_sessions(&state, auth.user_id, REVOKED_LOGOUT_ALL, None, &meta).await?;
    // the current session too, even if the read model did not list it yet
    let own = state
        .sessions
        .execute(
            &auth.session_id.to_string(),
            SessionCommand::Revoke {
                reason: REVOKED_LOGOUT_ALL.to_owned(),
            },
            &meta,
        )
        .await
        .map_err(session_error)?;
    cursor = cursor.max(own.cursor);
    settle(&state, cursor, &[ReadModel::Sessions]).await;
    Ok(signed_out(&state, cursor))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub valid: bool,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// Check the bearer token: 200 when it is valid and its session is live.
#[utoipa::path(post, path = "/api/v1/auth/verify", operation_id = "introspect_token", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Valid", body = TokenInfo),
              (status = 401, description = "Not valid", body = crate::error::ErrorBody)))]
pub async fn introspect(auth: AuthUser) -> Reply<TokenInfo> {
    Reply::ok(TokenInfo {
        valid: true,
        user_id: auth.user_id,
        session_id: auth.session_id,
        expires_at: auth.expires_at,
    })
}
