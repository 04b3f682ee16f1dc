//! `/api/v1/users`: the public status query (for now).

use aggregates::user::commands::normalize_email;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use projections::users::{self, EmailStatus};
use projections::ReadModel;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::envelope::Reply;
use crate::extract::{AppQuery, MinPosition};
use crate::routes::read_your_writes::require;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/users/status", get(status))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The email to ask about.
    pub email: String,
}

/// Whether an email has an account, and its state.
#[utoipa::path(
    get, path = "/api/v1/users/status", tag = "users",
    params(StatusQuery, ("X-Min-Position" = Option<String>, Header, description = "Wait until the read model has reached this log cursor")),
    responses(
        (status = 200, description = "The email's status", body = EmailStatus),
        (status = 404, description = "Switched off by configuration", body = crate::error::ErrorBody),
        (status = 422, description = "Missing or bad email", body = crate::error::ErrorBody),
        (status = 503, description = "Not caught up with X-Min-Position in time", body = crate::error::ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    min: MinPosition,
    AppQuery(q): AppQuery<StatusQuery>,
) -> Result<Reply<EmailStatus>, ApiError> {
    if !state.config.status_endpoint_enabled {
        return Err(ApiError::NotFound("no such route".into()));
    }
    require(&state, min, &[ReadModel::Users]).await?;
    let status = users::status_by_email(&state.pool, &normalize_email(&q.email)).await?;
    Ok(Reply::ok(status))
}
