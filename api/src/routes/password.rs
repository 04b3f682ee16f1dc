//! `/api/v1/auth`: forgotten passwords and resets.

use aggregates::session::REVOKED_PASSWORD_RESET;
use aggregates::user::{UserCommand, UserEvent};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use eventstore::email_claims;
use eventstore::secrets::{random_nonce, Purpose};
use projections::ReadModel;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::password_policy;
use crate::envelope::Reply;
use crate::error::user_error;
use crate::extract::client_ip;
use crate::extract::{JsonOrForm, RequestMeta};
use aggregates::email_probe::KIND_PASSWORD_RESET;
use usecases::accounts::revoke_sessions;

use crate::routes::auth::{checked_email, mail_if_known, EmailRequest, Notice};
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/forgot-password", post(forgot_password))
        .route("/api/v1/auth/reset-password", post(reset_password))
}

const RESET_SENT: &str = "If an account uses this address, a reset link and code are on their way.";

/// Ask for a password reset mail (link + code). 202 with the same body whatever the email.
#[utoipa::path(
    post, path = "/api/v1/auth/forgot-password", operation_id = "forgot_password", tag = "auth",
    request_body(content = EmailRequest, content_type = "application/json"),
    responses((status = 202, description = "Accepted", body = Notice),
              (status = 429, description = "Rate limited", body = crate::error::ErrorBody))
)]
pub async fn forgot_password(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<EmailRequest>,
) -> Result<Reply<Notice>, ApiError> {
    let now = state.clock.now();
    mail_if_known(
        &state,
        &meta,
        &req.email,
        RESET_SENT,
        KIND_PASSWORD_RESET,
        |_| UserCommand::RequestPasswordReset {
            nonce: random_nonce(),
            now,
            invitation: false,
        },
    )
    .await
}

/// Reset with the link's token, or with the email and the code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512, pattern = "^[!-~]+$")]
    pub token: Option<String>,
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

/// Set a new password with a reset link or code. Every session of the user is revoked,
/// and a notification mail is sent.
#[utoipa::path(
    post, path = "/api/v1/auth/reset-password", operation_id = "reset_password", tag = "auth",
    request_body(content = ResetPasswordRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Reset", body = Notice),
        (status = 400, description = "`token_invalid` or `token_expired`", body = crate::error::ErrorBody),
        (status = 422, description = "The password does not meet the policy", body = crate::error::ErrorBody),
    )
)]
pub async fn reset_password(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<ResetPasswordRequest>,
) -> Result<Reply<Notice>, ApiError> {
    let now = state.clock.now();
    // Who, and with which nonce (link) or code.
    let (user_id, link_nonce) = match (&req.token, &req.email, &req.code) {
        (Some(token), None, None) => {
            let (user_id, nonce) = state
                .secrets
                .open_link_token(Purpose::PasswordReset, token)
                .ok_or(ApiError::LinkInvalid)?;
            (user_id, Some(nonce))
        }
        (None, Some(email), Some(_)) => {
            let email = checked_email(email)?;
            state
                .limits
                .check_auth(client_ip(&meta), Some(&email))
                .await?;
            let user_id: Uuid = email_claims::owner(&state.pool, &email)
                .await?
                .ok_or(ApiError::LinkInvalid)?;
            (user_id, None)
        }
        _ => {
            return Err(ApiError::validation(
                "token",
                "send either a token, or an email and a code",
            ))
        }
    };
    let user = state
        .users
        .load(&user_id.to_string())
        .await
        .map_err(user_error)?;
    if !user.registered {
        return Err(ApiError::LinkInvalid);
    }
    password_policy::check(&req.new_password, &user.email, user.display_name.as_deref())
        .map_err(|m| ApiError::validation("new_password", m))?;
    let password_hash = state
        .passwords
        .hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    let command = match link_nonce {
        Some(nonce) => UserCommand::ResetPassword {
            nonce,
            password_hash,
            now,
        },
        None => {
            let code = req.code.unwrap_or_default();
            let code_ok = user.reset.as_ref().is_some_and(|p| {
                state
                    .secrets
                    .code_matches(Purpose::PasswordReset, user_id, &p.nonce, &code)
            });
            UserCommand::ResetPasswordWithCode {
                code_ok,
                password_hash,
                now,
            }
        }
    };
    let outcome = state
        .users
        .execute(&user_id.to_string(), command, &meta)
        .await
        .map_err(user_error)?;
    if outcome
        .events
        .iter()
        .any(|e| matches!(e, UserEvent::PasswordResetCodeRejected { .. }))
    {
        return Err(ApiError::LinkInvalid);
    }
    // the owner proved control of the address: earlier attempts no longer count
    state.limits.forgive_account(&user.email).await;
    let revoked = revoke_sessions(&state, user_id, REVOKED_PASSWORD_RESET, None, &meta).await?;
    let lagging = settle(
        &state,
        outcome.cursor.max(revoked),
        &[ReadModel::Users, ReadModel::Sessions],
    )
    .await;
    tracing::info!(user.id = %user_id, "Password reset; sessions revoked");
    Ok(Reply {
        status: StatusCode::OK,
        data: Notice {
            message: "Your password is reset. Sign in with the new one.",
        },
        position: outcome.cursor,
        lagging,
    })
}
