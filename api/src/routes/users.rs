//! `/api/v1/users`: the public status lookup and avatars.

use aggregates::user::commands::normalize_email;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use projections::users::{self, EmailStatus};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::envelope::Reply;
use crate::extract::client_ip;
use crate::extract::{AppQuery, RequestMeta};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/status", get(status))
        .route("/api/v1/users/{id}/avatar", get(avatar))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The email to ask about.
    #[param(format = Email, max_length = 254)]
    pub email: String,
}

/// Whether an email has an account, and its state. Rate limited per IP; can be switched
/// off (`USERS_STATUS_ENDPOINT=false`).
#[utoipa::path(
    get, path = "/api/v1/users/status", operation_id = "get_email_status", tag = "users",
    params(StatusQuery, ("X-Min-Position" = Option<String>, Header, description = "Wait until the read model has reached this log cursor")),
    responses(
        (status = 200, description = "The email's status", body = EmailStatus),
        (status = 404, description = "Switched off by configuration", body = crate::error::ErrorBody),
        (status = 422, description = "Missing or bad email", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::error::ErrorBody),
        (status = 503, description = "Not caught up with X-Min-Position in time", body = crate::error::ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    AppQuery(q): AppQuery<StatusQuery>,
) -> Result<Reply<EmailStatus>, ApiError> {
    if !state.config.status_endpoint_enabled {
        return Err(ApiError::NotFound("no such route".into()));
    }
    state.limits.check_status(client_ip(&meta))?;
    let status = users::status_by_email(&state.pool, &normalize_email(&q.email)).await?;
    Ok(Reply::ok(status))
}

/// A user's avatar image.
#[utoipa::path(get, path = "/api/v1/users/{id}/avatar", operation_id = "get_avatar", tag = "users",
    params(("id" = Uuid, Path, description = "The user")),
    responses((status = 200, description = "The image", content_type = "image/png"),
              (status = 404, description = "No such user or no avatar", body = crate::error::ErrorBody)))]
pub async fn avatar(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let none = || ApiError::NotFound("no avatar".into());
    let id: Uuid = id.parse().map_err(|_| none())?;
    let user = users::by_id(&state.pool, id).await?.ok_or_else(none)?;
    let (Some(sha), Some(ct)) = (user.avatar_sha256, user.avatar_content_type) else {
        return Err(none());
    };
    if !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(none());
    }
    let bytes = tokio::fs::read(state.config.data_dir.join("avatars").join(&sha))
        .await
        .map_err(|_| none())?;
    Ok((
        [
            (CONTENT_TYPE, ct),
            // the URL carries the content hash, so the image under it never changes
            (CACHE_CONTROL, "public, max-age=86400".to_owned()),
        ],
        bytes,
    )
        .into_response())
}
