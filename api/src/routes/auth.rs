//! `/api/v1/auth`: registration (for now).

use aggregates::user::commands::{is_plausible_email, normalize_email};
use aggregates::user::{UserCommand, UserError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use eventstore::email_claims::{self, Claim};
use eventstore::CommandError;
use projections::ReadModel;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::envelope::{CommandAccepted, Reply};
use crate::extract::{JsonOrForm, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/auth/register", post(register))
}

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;
const DISPLAY_NAME_MAX: usize = 100;

/// Registration: email first, password optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 10 to 128 characters, not the email. Optional: an account may sign in by email link.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

impl RegisterRequest {
    fn validate(&self) -> Result<String, ApiError> {
        let email = normalize_email(&self.email);
        if !is_plausible_email(&email) {
            return Err(ApiError::validation("email", "is not an email address"));
        }
        if let Some(password) = &self.password {
            let n = password.chars().count();
            if n < PASSWORD_MIN {
                return Err(ApiError::validation(
                    "password",
                    format!("must be at least {PASSWORD_MIN} characters"),
                ));
            }
            if n > PASSWORD_MAX {
                return Err(ApiError::validation(
                    "password",
                    format!("must be at most {PASSWORD_MAX} characters"),
                ));
            }
            if normalize_email(password) == email {
                return Err(ApiError::validation("password", "must not be the email"));
            }
        }
        if let Some(name) = &self.display_name {
            if name.trim().is_empty() || name.chars().count() > DISPLAY_NAME_MAX {
                return Err(ApiError::validation(
                    "display_name",
                    format!("must be 1 to {DISPLAY_NAME_MAX} characters"),
                ));
            }
        }
        Ok(email)
    }
}

/// Register an account.
///
/// Answers 202 the same way whether or not the email already has an account: the owner of
/// an existing account is told by mail instead (no account enumeration here).
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; `data.position` is the log cursor", body = CommandAccepted),
        (status = 400, description = "Malformed body", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid field", body = crate::error::ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    JsonOrForm(req): JsonOrForm<RegisterRequest>,
) -> Result<Reply<CommandAccepted>, ApiError> {
    let email = req.validate()?;
    let password_hash = match req.password {
        Some(p) => Some(state.passwords.hash(p).await.map_err(ApiError::internal)?),
        None => None,
    };
    let user_id = Uuid::now_v7();
    let outcome = match email_claims::claim(&state.pool, &email, user_id).await? {
        Claim::Claimed => {
            let command = UserCommand::RegisterUser {
                user_id,
                email: email.clone(),
                password_hash,
                display_name: req.display_name.map(|n| n.trim().to_owned()),
            };
            let result = state
                .users
                .execute(&user_id.to_string(), command, &meta)
                .await;
            if result.is_err() {
                // the account was not opened: give the email back
                email_claims::release(&state.pool, &email, user_id).await?;
            }
            result.map_err(command_error)?
        }
        Claim::TakenBy(owner) => state
            .users
            .execute(
                &owner.to_string(),
                UserCommand::RecordDuplicateRegistration,
                &meta,
            )
            .await
            .or_else(|e| match e {
                // claimed by a registration still in flight: nothing to tell its owner yet
                CommandError::Domain(UserError::NotRegistered) => Ok(eventstore::CommandOutcome {
                    cursor: None,
                    event_ids: vec![],
                    sequence: 0,
                }),
                other => Err(command_error(other)),
            })?,
    };
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Users]).await;
    Ok(Reply {
        status: StatusCode::ACCEPTED,
        data: CommandAccepted {
            position: outcome.cursor,
        },
        position: outcome.cursor,
        lagging,
    })
}

/// How a failed user command answers.
pub fn command_error(e: CommandError<UserError>) -> ApiError {
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
        CommandError::Conflict => {
            ApiError::Conflict("the account was changed by another request; try again".into())
        }
        CommandError::Store(e) => ApiError::internal(e),
    }
}
