//! `/api/v1/uploads`: files I store (multipart), list, download and delete. Each upload
//! counts as usage (`uploads`) against the plan; the type is told by content (PNG, JPEG,
//! WebP, GIF, PDF, or UTF-8 text), the size limited by `UPLOAD_MAX_BYTES`.

use aggregates::meter::KIND_UPLOADS;
use aggregates::upload::{UploadCommand, UploadError};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use eventstore::CommandError;
use projections::uploads::{self, UploadRow};
use projections::ReadModel;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::RequestMeta;
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

pub fn router(max_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/uploads",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(max_bytes + 64 * 1024)),
        )
        .route("/api/v1/uploads/{id}", get(get_one).delete(delete_one))
        .route("/api/v1/uploads/{id}/content", get(content))
}

/// What a file is, by its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok() {
        Some("text/plain; charset=utf-8")
    } else {
        None
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such upload".into())
}

/// An upload's form.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// PNG, JPEG, WebP, GIF, PDF or UTF-8 text (checked by content).
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// Store a file (multipart form, field `file`). 201 with the upload; 402 when the day's
/// uploads are used up; 413 too large; 415 a type not accepted.
#[utoipa::path(post, path = "/api/v1/uploads", operation_id = "create_upload", tag = "uploads", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data", description = "a `file` field"),
    responses((status = 201, body = UploadRow), (status = 402, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    mut form: Multipart,
) -> Result<Reply<UploadRow>, ApiError> {
    let too_large = |status: StatusCode| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("file", "the form could not be read")
        }
    };
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(|e| too_large(e.status()))? {
        if field.name() == Some("file") || field.file_name().is_some() {
            let name = field
                .file_name()
                .unwrap_or("upload")
                .chars()
                .filter(|c| !aggregates::text::is_forbidden_in_line(*c))
                .take(200)
                .collect::<String>();
            let bytes = field.bytes().await.map_err(|e| too_large(e.status()))?;
            file = Some((name, bytes));
            break;
        }
    }
    let (filename, bytes) =
        file.ok_or_else(|| ApiError::validation("file", "send the file in a `file` field"))?;
    if bytes.is_empty() {
        return Err(ApiError::validation("file", "is empty"));
    }
    if bytes.len() > state.config.upload_max_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    let content_type = sniff(&bytes).ok_or_else(|| {
        ApiError::UnsupportedMediaType("accepted: PNG, JPEG, WebP, GIF, PDF or UTF-8 text".into())
    })?;
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    // counted against the plan before anything is stored
    auth.charge(&state, KIND_UPLOADS, &meta).await?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let dir = state.config.data_dir.join("uploads");
    let path = dir.join(&sha256);
    if tokio::fs::metadata(&path).await.is_err() {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(ApiError::internal)?;
        let tmp = dir.join(format!(".{sha256}.{}", Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(ApiError::internal)?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(ApiError::internal)?;
    }
    let id = Uuid::now_v7();
    let outcome = state
        .uploads
        .execute(
            &id.to_string(),
            UploadCommand::StoreUpload {
                owner_id: auth.user_id,
                filename,
                content_type: content_type.to_owned(),
                size: bytes.len() as u64,
                sha256,
            },
            &meta,
        )
        .await
        .map_err(|e| match e {
            CommandError::Domain(UploadError::Invalid { field, message }) => {
                ApiError::validation(field, message)
            }
            other => other.into(),
        })?;
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Uploads]).await;
    let row = uploads::owned(&state.pool, auth.user_id, id)
        .await?
        .ok_or(ApiError::NotCaughtUp)?;
    let mut reply = Reply::ok(row).with_status(StatusCode::CREATED);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}

/// My uploads, newest first.
#[utoipa::path(get, path = "/api/v1/uploads", operation_id = "list_uploads", tag = "uploads", security(("bearer" = [])),
    responses((status = 200, body = Vec<UploadRow>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Reply<Vec<UploadRow>>, ApiError> {
    Ok(Reply::ok(uploads::list(&state.pool, auth.user_id).await?))
}

async fn mine(state: &AppState, auth: &AuthUser, id: &str) -> Result<UploadRow, ApiError> {
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    uploads::owned(&state.pool, auth.user_id, id)
        .await?
        .ok_or_else(not_found)
}

/// One of my uploads.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", operation_id = "get_upload", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = UploadRow), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Reply<UploadRow>, ApiError> {
    Ok(Reply::ok(mine(&state, &auth, &id).await?))
}

/// Download one of my uploads.
#[utoipa::path(get, path = "/api/v1/uploads/{id}/content", operation_id = "download_upload", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, description = "The file"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn content(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = mine(&state, &auth, &id).await?;
    let bytes = tokio::fs::read(state.config.data_dir.join("uploads").join(&row.sha256))
        .await
        .map_err(|_| not_found())?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        row.filename.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (CONTENT_TYPE, row.content_type),
            (CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// Delete one of my uploads.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", operation_id = "delete_upload", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_one(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = mine(&state, &auth, &id).await?;
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    let outcome = state
        .uploads
        .execute(
            &row.id.to_string(),
            UploadCommand::DeleteUpload { by: auth.user_id },
            &meta,
        )
        .await
        .map_err(|e| match e {
            CommandError::Domain(UploadError::NotFound) => not_found(),
            other => other.into(),
        })?;
    settle(&state, outcome.cursor, &[ReadModel::Uploads]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
