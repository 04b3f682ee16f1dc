//! The one error type of the API, and the error envelope.
//!
//! Error policy:
//! - every error is `{ "code", "message", "data": null, "error": <kind> }`, plus `fields`
//!   (field → message) for validation;
//! - bad input is always a 4xx with a message that says what to fix, never a 500;
//! - an unexpected failure is a 500 `internal` whose body says nothing more; the cause is
//!   logged once, here, with the request's span (request id), never sent to the client;
//! - secrets never appear in a message.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request was understood but its content is not acceptable.
    #[error("{message}")]
    Validation {
        message: String,
        fields: BTreeMap<String, String>,
    },
    /// 400: the request could not be read (malformed JSON, a bad header).
    #[error("{message}")]
    BadRequest {
        message: String,
        fields: BTreeMap<String, String>,
    },
    /// 401: no credentials.
    #[error("sign in first")]
    Unauthorized,
    /// 401: the access token is not valid (forged, wrong audience, revoked session...).
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    /// 401: unknown email and wrong password alike.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("verify your email before signing in")]
    EmailNotVerified,
    #[error("the account is disabled")]
    AccountDisabled,
    /// 423 with Retry-After.
    #[error("too many failed sign-ins; try again later")]
    AccountLocked { retry_after_secs: u64 },
    #[error("not allowed")]
    Forbidden,
    /// 402: a plan limit is reached; `details` says which, the limit and what is used.
    #[error("{message}")]
    UpgradeRequired {
        message: String,
        details: serde_json::Value,
    },
    /// 429 with Retry-After.
    #[error("too many requests; try again later")]
    RateLimited { retry_after_secs: u64 },
    /// 400: a one-time link or code that is wrong, used, or replaced by a newer one.
    #[error("the link or code is not valid")]
    LinkInvalid,
    /// 400: a one-time link or code past its time.
    #[error("the link or code has expired")]
    LinkExpired,
    #[error("{0}")]
    NotFound(String),
    /// 409: lost a race for an aggregate on every retry.
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the read models did not reach the requested position in time.
    #[error("the read models have not reached the requested position yet")]
    NotCaughtUp,
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged with its chain of causes, never shown.
    #[error("internal error: {0}")]
    Internal(#[source] eventstore::Cause),
}

/// Every `error` kind an answer can carry: [`ApiError::kind`]'s, and those
/// [`crate::middleware::envelope_for_bare_errors`] gives errors axum makes itself. The
/// OpenAPI document lists them as `ErrorBody.error`'s enumeration.
pub const ERROR_KINDS: [&str; 21] = [
    "validation",
    "bad_request",
    "unauthorized",
    "token_invalid",
    "token_expired",
    "invalid_credentials",
    "email_not_verified",
    "account_disabled",
    "account_locked",
    "forbidden",
    "upgrade_required",
    "rate_limited",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "timeout",
    "not_caught_up",
    "unavailable",
    "internal",
];

/// `ErrorBody.details` with `upgrade_required`: which limit was reached (documentation of
/// the `details` the routes send).
#[derive(Debug, Serialize, ToSchema)]
pub struct UpgradeDetails {
    /// The caller's plan.
    pub plan: String,
    /// `messages`, `tokens`, `uploads` or `conversations`.
    pub kind: String,
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// The UTC day of a daily limit (absent for `conversations`, which is not daily).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<chrono::NaiveDate>,
}

/// The error envelope (also documented in the OpenAPI document).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
    /// Stable machine-readable kind: `validation`, `not_found`, `conflict`, ...
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
    /// More about the error, for some kinds (`upgrade_required`: the limit and usage).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Validation {
            message: format!("{field}: {message}"),
            fields: BTreeMap::from([(field.to_owned(), message)]),
        }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::BadRequest {
            message: format!("{field}: {message}"),
            fields: BTreeMap::from([(field.to_owned(), message)]),
        }
    }

    /// 500 for a failure whose cause is kept (logged with its sources).
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(eventstore::Cause::new(e))
    }

    /// 500 for a broken expectation that has no error value (a message only).
    pub fn internal_msg(message: impl Into<String>) -> Self {
        Self::Internal(eventstore::Cause::msg(message))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized
            | Self::TokenInvalid
            | Self::TokenExpired
            | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::EmailNotVerified | Self::AccountDisabled | Self::Forbidden => {
                StatusCode::FORBIDDEN
            }
            Self::AccountLocked { .. } => StatusCode::LOCKED,
            Self::UpgradeRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::LinkInvalid | Self::LinkExpired => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotCaughtUp | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Validation { .. } | Self::BadRequest { .. } => "validation",
            Self::Unauthorized => "unauthorized",
            Self::TokenInvalid | Self::LinkInvalid => "token_invalid",
            Self::TokenExpired | Self::LinkExpired => "token_expired",
            Self::InvalidCredentials => "invalid_credentials",
            Self::EmailNotVerified => "email_not_verified",
            Self::AccountDisabled => "account_disabled",
            Self::AccountLocked { .. } => "account_locked",
            Self::Forbidden => "forbidden",
            Self::UpgradeRequired { .. } => "upgrade_required",
            Self::RateLimited { .. } => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::NotCaughtUp => "not_caught_up",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// An error envelope for any status and kind (used by middleware for errors axum makes).
pub fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    fields: Option<BTreeMap<String, String>>,
) -> Response {
    let body = ErrorBody {
        code: status.as_u16(),
        message: message.to_owned(),
        data: None,
        error: kind.to_owned(),
        fields,
        details: None,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.kind();
        let retry_after = match &self {
            ApiError::AccountLocked { retry_after_secs }
            | ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::NotCaughtUp | ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        let mut details = None;
        let (message, fields) = match self {
            ApiError::UpgradeRequired {
                message,
                details: d,
            } => {
                details = Some(d);
                (message, None)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %crate::error::chain(&cause), "Request failed");
                ("an unexpected error occurred".to_owned(), None)
            }
            ApiError::Validation { message, fields } | ApiError::BadRequest { message, fields } => {
                (message, Some(fields))
            }
            other => (other.to_string(), None),
        };
        let mut response = match details {
            Some(details) => {
                let body = ErrorBody {
                    code: status.as_u16(),
                    message: message.clone(),
                    data: None,
                    error: kind.to_owned(),
                    fields: None,
                    details: Some(details),
                };
                (status, Json(body)).into_response()
            }
            None => error_response(status, kind, &message, fields),
        };
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl ApiError {
    /// 503 with `Retry-After`: PostgreSQL is away for a moment (logged, never detailed).
    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "PostgreSQL unavailable");
        metrics::counter!("chronicle_database_unavailable_total").increment(1);
        Self::Unavailable("the database is unavailable; try again shortly".into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if eventstore::unavailable::is_unavailable(&e) {
            Self::database_unavailable(&e)
        } else {
            Self::internal(e)
        }
    }
}

/// An error and its sources, `outer: inner: innermost`, for the log (a source whose
/// message its error already ends with, as `event store: {cause}` does, is said once).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !out.ends_with(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        next = cause.source();
    }
    out
}

/// What is left of a command error once the route has mapped the domain's own refusals:
/// a lost race (409), the store away for a moment (503), or a real failure (500).
impl<E: std::error::Error> From<eventstore::CommandError<E>> for ApiError {
    fn from(e: eventstore::CommandError<E>) -> Self {
        use eventstore::CommandError;
        match e {
            CommandError::Conflict => {
                Self::Conflict("the resource kept changing; try again".into())
            }
            CommandError::Unavailable(cause) => Self::database_unavailable(&cause),
            CommandError::Store(cause) => Self::Internal(cause),
            CommandError::Domain(e) => Self::internal_msg(e.to_string()),
        }
    }
}

/// How a refused user command answers (the mapping is `api::error`'s).
pub fn user_error(e: eventstore::CommandError<aggregates::user::UserError>) -> ApiError {
    usecases::Error::from(e).into()
}

/// How a refused session command answers (the mapping is `api::error`'s).
pub fn session_error(e: eventstore::CommandError<aggregates::session::SessionError>) -> ApiError {
    usecases::Error::from(e).into()
}

/// The use cases' refusals and failures as the API answers them: the one place they are
/// mapped (the CLI maps the same error to its exit codes).
impl From<usecases::Error> for ApiError {
    fn from(e: usecases::Error) -> Self {
        use usecases::Error as E;
        match e {
            E::Invalid { field, message } => Self::validation(&field, message),
            E::NotFound(m) => Self::NotFound(m),
            E::Conflict(m) => Self::Conflict(m),
            E::NotCaughtUp => Self::NotCaughtUp,
            E::InvalidCredentials => Self::InvalidCredentials,
            E::TokenInvalid => Self::TokenInvalid,
            ref limit @ E::LimitReached {
                ref plan,
                ref kind,
                limit: max,
                used,
                day,
            } => Self::UpgradeRequired {
                message: limit.to_string(),
                details: match day {
                    Some(day) => {
                        serde_json::json!({"plan": plan, "kind": kind, "limit": max, "used": used, "remaining": max.saturating_sub(used), "day": day})
                    }
                    None => {
                        serde_json::json!({"plan": plan, "kind": kind, "limit": max, "used": used, "remaining": max.saturating_sub(used)})
                    }
                },
            },
            E::User(e) => user_refusal(e),
            E::Session(e) => match e {
                aggregates::session::SessionError::Expired => Self::TokenExpired,
                _ => Self::TokenInvalid,
            },
            E::Unavailable(cause) => Self::database_unavailable(&cause),
            E::Failed(cause) => Self::Internal(cause),
        }
    }
}

/// How the user aggregate's refusals answer.
fn user_refusal(e: aggregates::user::UserError) -> ApiError {
    use aggregates::user::UserError;
    match e {
        UserError::Invalid { field, message } => ApiError::validation(field, message),
        UserError::AlreadyRegistered => ApiError::Conflict("the account exists already".into()),
        UserError::NotRegistered => ApiError::NotFound("no such account".into()),
        UserError::AlreadyVerified | UserError::SecretInvalid => ApiError::LinkInvalid,
        UserError::SecretExpired => ApiError::LinkExpired,
        UserError::Locked { .. } => ApiError::AccountLocked {
            retry_after_secs: 60,
        },
        UserError::EmailNotVerified => ApiError::EmailNotVerified,
        UserError::Disabled => ApiError::AccountDisabled,
    }
}

impl From<eventstore::crypto::CryptoError> for ApiError {
    fn from(e: eventstore::crypto::CryptoError) -> Self {
        match e {
            eventstore::crypto::CryptoError::Database(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_cause_for_the_log_and_tells_the_client_nothing() {
        let io = std::io::Error::other("disk on fire");
        let e = ApiError::from(usecases::Error::Failed(eventstore::Cause::new(io)));
        assert_eq!(e.kind(), "internal");
        assert_eq!(chain(&e), "internal error: disk on fire");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn every_kind_an_error_can_carry_is_in_the_documented_list() {
        let errors = [
            ApiError::validation("f", "m"),
            ApiError::bad_request("f", "m"),
            ApiError::Unauthorized,
            ApiError::TokenInvalid,
            ApiError::TokenExpired,
            ApiError::InvalidCredentials,
            ApiError::EmailNotVerified,
            ApiError::AccountDisabled,
            ApiError::AccountLocked {
                retry_after_secs: 1,
            },
            ApiError::Forbidden,
            ApiError::UpgradeRequired {
                message: "m".into(),
                details: serde_json::Value::Null,
            },
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::LinkInvalid,
            ApiError::LinkExpired,
            ApiError::NotFound("m".into()),
            ApiError::Conflict("m".into()),
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType("m".into()),
            ApiError::NotCaughtUp,
            ApiError::Unavailable("m".into()),
            ApiError::internal_msg("m"),
        ];
        for e in &errors {
            assert!(
                ERROR_KINDS.contains(&e.kind()),
                "{} is not listed",
                e.kind()
            );
        }
    }
}
