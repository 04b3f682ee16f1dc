//! `/api/v1/auth`: registration and email verification. Sign-in and sessions are in
//! [`super::sessions`], passwords in [`super::password`].
//!
//! Answers that could tell whether an email has an account (register, resend, forgot
//! password, a failed sign-in) are the same bytes and headers either way, carry no log
//! position, and leave the same trace in the log: an address with no account (or one that
//! refuses silently) appends to its [`aggregates::email_probe`] what a known one appends to
//! the user, and a path that appends fewer events skips the difference in positions
//! ([`eventstore::log::skip_positions`]). docs/ACCOUNTS.md, "Enumeration".

use aggregates::email_probe::{
    EmailProbeCommand, EmailProbeError, EmailProbeEvent, KIND_REGISTRATION, KIND_VERIFICATION,
};
use aggregates::user::{SecretMethod, UserCommand, UserError, UserEvent, ROLE_USER};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use eventstore::email_claims;
use eventstore::secrets::{random_nonce, Purpose};
use eventstore::CommandError;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::password_policy;
use crate::envelope::Reply;
use crate::error::user_error;
use crate::extract::client_ip;
use crate::extract::{AppQuery, JsonOrForm, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::views::profile;
use crate::views::Profile;
use crate::{ApiError, AppState};
pub use usecases::accounts::checked_email;
use usecases::accounts::{self, Opened};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route(
            "/api/v1/auth/resend-verification",
            post(resend_verification),
        )
        .route("/api/v1/auth/verify-email", post(verify_email))
        .route("/api/v1/auth/verify", get(verify_link))
        .route("/verify", get(verify_link))
}

const DISPLAY_NAME_MAX: usize = 100;

/// The body of every "we sent you a mail, if..." answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
    pub message: &'static str,
}

const CHECK_INBOX: &str = "If the address can receive mail, a message is on its way.";

/// Registration: email first, password optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "ada@example.com")]
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// 10 to 128 characters, not common, not the email. Optional.
    #[serde(default)]
    #[schema(min_length = 10, max_length = 128)]
    pub password: Option<String>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*[^\s\u0000-\u001F\u007F-\u009F\u2028\u2029][^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub display_name: Option<String>,
}

/// Register an account.
///
/// Answers 202 with the same body whether or not the email already has an account (its
/// owner is told by mail instead). A verification mail with a link and a 6-digit code is
/// sent. The log position of the command is in `X-Position`.
#[utoipa::path(
    post, path = "/api/v1/auth/register", operation_id = "register", tag = "auth",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted", body = Notice),
        (status = 400, description = "Malformed body", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid field", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::error::ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<RegisterRequest>,
) -> Result<Reply<Notice>, ApiError> {
    let started = tokio::time::Instant::now();
    let answer = register_account(&state, meta, req).await;
    at_the_floor(&state, started, answer).await
}

/// Answer no sooner than `ANONYMOUS_ANSWER_MIN_MS` after `started`: a known address costs a
/// few more queries than an unknown one (its user is loaded and its values opened), and
/// that difference must not show in the time an anonymous answer takes.
pub async fn at_the_floor<T>(state: &AppState, started: tokio::time::Instant, answer: T) -> T {
    tokio::time::sleep_until(started + state.config.anonymous_answer_floor).await;
    answer
}

async fn register_account(
    state: &AppState,
    meta: aggregates::EventMetadata,
    req: RegisterRequest,
) -> Result<Reply<Notice>, ApiError> {
    let email = checked_email(&req.email)?;
    state
        .limits
        .check_auth(client_ip(&meta), Some(&email))
        .await?;
    let display_name = req.display_name.map(|n| n.trim().to_owned());
    if let Some(name) = &display_name {
        if name.is_empty() || name.chars().count() > DISPLAY_NAME_MAX {
            return Err(ApiError::validation(
                "display_name",
                format!("must be 1 to {DISPLAY_NAME_MAX} characters"),
            ));
        }
    }
    let password_hash = match req.password {
        Some(p) => {
            password_policy::check(&p, &email, display_name.as_deref())
                .map_err(|m| ApiError::validation("password", m))?;
            Some(state.passwords.hash(p).await.map_err(ApiError::internal)?)
        }
        None => None,
    };
    let user_id = Uuid::now_v7();
    // A new account appends two events (UserRegistered, EmailVerificationRequested); every
    // other path leaves the same trace.
    const REGISTRATION_EVENTS: usize = 2;
    let command = UserCommand::RegisterUser {
        user_id,
        email: email.clone(),
        password_hash,
        display_name,
        role: ROLE_USER.to_owned(),
        plan: state.plans.default.clone(),
        verified: false,
        verification_nonce: random_nonce(),
        invitation: false,
        now: state.clock.now(),
    };
    let cursor =
        match accounts::open_account(&state.pool, &state.users, &email, user_id, command, &meta)
            .await?
        {
            Opened::New(outcome) => {
                same_trace(&state.pool, REGISTRATION_EVENTS, outcome.event_ids.len()).await?;
                outcome.cursor
            }
            Opened::Taken(owner) => {
                match state
                    .users
                    .execute(
                        &owner.to_string(),
                        UserCommand::RecordDuplicateRegistration,
                        &meta,
                    )
                    .await
                {
                    Ok(outcome) => {
                        same_trace(&state.pool, REGISTRATION_EVENTS, outcome.event_ids.len())
                            .await?;
                        outcome.cursor
                    }
                    // claimed by a registration still in flight: nothing to tell its owner yet
                    Err(CommandError::Domain(UserError::NotRegistered)) => {
                        let cursor = probe(state, &meta, &email, KIND_REGISTRATION).await?;
                        same_trace(&state.pool, REGISTRATION_EVENTS, 1).await?;
                        cursor
                    }
                    Err(e) => return Err(user_error(e)),
                }
            }
        };
    // Waiting for the read model costs the same either way; the position is not told.
    let lagging = settle(state, cursor, &[ReadModel::Users]).await;
    Ok(Reply {
        status: StatusCode::ACCEPTED,
        data: Notice {
            message: CHECK_INBOX,
        },
        position: None,
        lagging,
    })
}

/// Skip the positions a path did not use, so that it looks like its twin in the log.
async fn same_trace(pool: &sqlx::PgPool, twin: usize, appended: usize) -> Result<(), ApiError> {
    let missing = twin.saturating_sub(appended) as u32;
    eventstore::log::skip_positions(pool, missing)
        .await
        .map_err(ApiError::from)
}

/// The metadata of a probe: no address, IP or user agent is kept for an address that has
/// no account (only the request id, to find the request in the logs).
fn probe_meta(meta: &aggregates::EventMetadata) -> aggregates::EventMetadata {
    aggregates::EventMetadata {
        ip: None,
        user_agent: None,
        ..meta.clone()
    }
}

/// Record on the address's `email_probe` what an anonymous request asked (one event, as a
/// known address appends on its user).
pub async fn probe(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    email: &str,
    kind: &'static str,
) -> Result<Option<aggregates::LogCursor>, ApiError> {
    let id = state.secrets.email_probe_id(email);
    let outcome = state
        .probes
        .execute(
            &id.to_string(),
            EmailProbeCommand::RecordProbe { kind },
            &probe_meta(meta),
        )
        .await
        .map_err(probe_error)?;
    Ok(outcome.cursor)
}

/// A failed sign-in with an address that has no account: counted and locked as an
/// account's would be, so 401 and 423 come alike for known and unknown addresses.
pub async fn probe_sign_in_failed(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    email: &str,
) -> ApiError {
    let now = state.clock.now();
    let id = state.secrets.email_probe_id(email);
    let outcome = state
        .probes
        .execute(
            &id.to_string(),
            EmailProbeCommand::FailSignIn { now },
            &probe_meta(meta),
        )
        .await;
    let locked = |until: chrono::DateTime<chrono::Utc>| ApiError::AccountLocked {
        retry_after_secs: (until - now).num_seconds().max(1) as u64,
    };
    match outcome {
        Ok(outcome) => match outcome.events.first() {
            Some(EmailProbeEvent::SignInFailed {
                locked_until: Some(until),
                ..
            }) => locked(*until),
            _ => ApiError::InvalidCredentials,
        },
        Err(CommandError::Domain(EmailProbeError::Locked { until })) => locked(until),
        Err(e) => probe_error(e),
    }
}

fn probe_error(e: CommandError<EmailProbeError>) -> ApiError {
    match e {
        CommandError::Domain(EmailProbeError::Locked { .. }) => ApiError::InvalidCredentials,
        other => other.into(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

/// Send the verification mail again (the previous link and code stop working).
///
/// 202 with the same body whatever the email.
#[utoipa::path(
    post, path = "/api/v1/auth/resend-verification", operation_id = "resend_verification", tag = "auth",
    request_body(content = EmailRequest, content_type = "application/json"),
    responses((status = 202, description = "Accepted", body = Notice),
              (status = 429, description = "Rate limited", body = crate::error::ErrorBody))
)]
pub async fn resend_verification(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<EmailRequest>,
) -> Result<Reply<Notice>, ApiError> {
    let now = state.clock.now();
    mail_if_known(
        &state,
        &meta,
        &req.email,
        CHECK_INBOX,
        KIND_VERIFICATION,
        |_| UserCommand::RequestEmailVerification {
            nonce: random_nonce(),
            now,
        },
    )
    .await
}

/// Ask an account, if the email has one, to send a mail (`command`); answer 202 with
/// `message` either way, so the answer tells nothing about the email. Refusals (a verified
/// account asking for verification, a disabled one) are silent for the same reason, and
/// they, like an unknown address, record a `kind` probe instead: one event either way.
pub async fn mail_if_known(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    email: &str,
    message: &'static str,
    kind: &'static str,
    command: impl FnOnce(Uuid) -> UserCommand,
) -> Result<Reply<Notice>, ApiError> {
    let started = tokio::time::Instant::now();
    let answer = mail_or_probe(state, meta, email, message, kind, command).await;
    at_the_floor(state, started, answer).await
}

async fn mail_or_probe(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    email: &str,
    message: &'static str,
    kind: &'static str,
    command: impl FnOnce(Uuid) -> UserCommand,
) -> Result<Reply<Notice>, ApiError> {
    let email = checked_email(email)?;
    state
        .limits
        .check_auth(client_ip(meta), Some(&email))
        .await?;
    let mut mailed = false;
    if let Some(owner) = email_claims::owner(&state.pool, &email).await? {
        match state
            .users
            .execute(&owner.to_string(), command(owner), meta)
            .await
        {
            Ok(outcome) => mailed = !outcome.event_ids.is_empty(),
            Err(CommandError::Domain(_)) => {}
            Err(e) => return Err(user_error(e)),
        }
    }
    if !mailed {
        probe(state, meta, &email, kind).await?;
    }
    Ok(Reply {
        status: StatusCode::ACCEPTED,
        data: Notice { message },
        position: None,
        lagging: vec![],
    })
}

/// Verify with the link's token, or with the email and the 6-digit code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512, pattern = "^[!-~]+$")]
    pub token: Option<String>,
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
}

async fn verify_with_token(
    state: &AppState,
    meta: &aggregates::EventMetadata,
    token: &str,
) -> Result<(Uuid, Option<aggregates::LogCursor>), ApiError> {
    let (user_id, nonce) = state
        .secrets
        .open_link_token(Purpose::EmailVerification, token)
        .ok_or(ApiError::LinkInvalid)?;
    let command = UserCommand::VerifyEmail {
        nonce,
        method: SecretMethod::Link,
        now: state.clock.now(),
    };
    let outcome = state
        .users
        .execute(&user_id.to_string(), command, meta)
        .await
        .map_err(user_error)?;
    Ok((user_id, outcome.cursor))
}

/// Verify an email address. 200 with the profile; the link and code are single-use.
#[utoipa::path(
    post, path = "/api/v1/auth/verify-email", operation_id = "verify_email", tag = "auth",
    request_body(content = VerifyEmailRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Verified", body = Profile),
        (status = 400, description = "`token_invalid` or `token_expired`", body = crate::error::ErrorBody),
        (status = 422, description = "Neither a token nor an email and code", body = crate::error::ErrorBody),
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<VerifyEmailRequest>,
) -> Result<Reply<Profile>, ApiError> {
    let (user_id, cursor) = match (req.token, req.email, req.code) {
        (Some(token), None, None) => verify_with_token(&state, &meta, &token).await?,
        (None, Some(email), Some(code)) => {
            let email = checked_email(&email)?;
            state
                .limits
                .check_auth(client_ip(&meta), Some(&email))
                .await?;
            let user_id = email_claims::owner(&state.pool, &email)
                .await?
                .ok_or(ApiError::LinkInvalid)?;
            let user = state
                .users
                .load(&user_id.to_string())
                .await
                .map_err(user_error)?;
            let code_ok = user.verification.as_ref().is_some_and(|p| {
                state
                    .secrets
                    .code_matches(Purpose::EmailVerification, user_id, &p.nonce, &code)
            });
            let outcome = state
                .users
                .execute(
                    &user_id.to_string(),
                    UserCommand::VerifyEmailCode {
                        code_ok,
                        now: state.clock.now(),
                    },
                    &meta,
                )
                .await
                .map_err(user_error)?;
            if outcome
                .events
                .iter()
                .any(|e| matches!(e, UserEvent::EmailVerificationCodeRejected { .. }))
            {
                return Err(ApiError::LinkInvalid);
            }
            (user_id, outcome.cursor)
        }
        _ => {
            return Err(ApiError::validation(
                "token",
                "send either a token, or an email and a code",
            ))
        }
    };
    let lagging = settle(&state, cursor, &[ReadModel::Users]).await;
    let mut reply = Reply::ok(profile(&state, user_id).await?);
    reply.position = cursor;
    reply.lagging = lagging;
    Ok(reply)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyLinkQuery {
    /// The token from the verification mail.
    pub token: String,
}

/// The link in the verification mail: verifies, then redirects to the frontend
/// (`FRONTEND_URL/email-verified?status=verified|expired|invalid`) or shows a short page.
#[utoipa::path(
    get, path = "/api/v1/auth/verify", operation_id = "follow_verification_link", tag = "auth", params(VerifyLinkQuery),
    responses((status = 200, description = "Verified: a short HTML page (no FRONTEND_URL configured)", content_type = "text/html"),
              (status = 303, description = "Redirect to the frontend (FRONTEND_URL configured), for every outcome: `?status=verified|expired|invalid`"),
              (status = 400, description = "The link is expired, already used or not valid: a short HTML page (no FRONTEND_URL configured)", content_type = "text/html"))
)]
pub async fn verify_link(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    AppQuery(q): AppQuery<VerifyLinkQuery>,
) -> Response {
    let outcome = verify_with_token(&state, &meta, &q.token).await;
    let status = match &outcome {
        Ok((_, cursor)) => {
            settle(&state, *cursor, &[ReadModel::Users]).await;
            "verified"
        }
        Err(ApiError::LinkExpired) => "expired",
        Err(_) => "invalid",
    };
    if let Some(frontend) = &state.config.frontend_url {
        return Redirect::to(&format!("{frontend}/email-verified?status={status}")).into_response();
    }
    let (code, title, text) = match status {
        "verified" => (StatusCode::OK, "Email verified", "Your email address is verified. You can close this page and sign in."),
        "expired" => (StatusCode::BAD_REQUEST, "Link expired", "This link has expired. Ask for a new verification mail and use its link within 30 minutes."),
        _ => (StatusCode::BAD_REQUEST, "Link not valid", "This link is not valid, or it was already used."),
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
         <h1>{title}</h1><p>{text}</p></body></html>"
    );
    (code, Html(page)).into_response()
}
