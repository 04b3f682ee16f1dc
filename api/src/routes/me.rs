//! `/api/v1/users/me`: my profile, password, avatar and sessions.

use aggregates::session::{SessionCommand, REVOKED_BY_USER, REVOKED_PASSWORD_RESET};
use aggregates::user::UserCommand;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use projections::ReadModel;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{password_policy, AuthUser};
use crate::envelope::Reply;
use crate::error::session_error;
use crate::error::user_error;
use crate::extract::{AppJson, RequestMeta};
use crate::routes::read_your_writes::settle;
use crate::views::profile;
use crate::views::Profile;
use crate::{ApiError, AppState};
use usecases::accounts::revoke_sessions;

pub fn router(avatar_max_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/users/me",
            get(get_me)
                .patch(patch_me)
                .merge(crate::routes::privacy::erase_route()),
        )
        .route("/api/v1/users/me/password", post(change_password))
        .route(
            "/api/v1/users/me/avatar",
            // room for multipart framing around the image
            put(put_avatar).layer(DefaultBodyLimit::max(avatar_max_bytes + 16 * 1024)),
        )
        .route("/api/v1/users/me/sessions", get(list_sessions))
        .route("/api/v1/users/me/sessions/{id}", delete(revoke_session))
}

fn me_meta(meta: &aggregates::EventMetadata, auth: &AuthUser) -> aggregates::EventMetadata {
    meta.acting_as(auth.user_id, &auth.role)
}

/// My profile.
#[utoipa::path(get, path = "/api/v1/users/me", operation_id = "get_me", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "My profile", body = Profile),
              (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn get_me(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Reply<Profile>, ApiError> {
    Ok(Reply::ok(profile(&state, auth.user_id).await?))
}

/// `null` clears a field; an absent field stays as it is.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMe {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*[^\s\u0000-\u001F\u007F-\u009F\u2028\u2029][^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$"
    )]
    pub display_name: Option<Option<String>>,
    /// A language tag, e.g. `en-GB` (BCP 47 is the convention; the server keeps what it is
    /// given): 1 to 35 characters, not blank (it is trimmed), no control characters. `null`
    /// clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    #[schema(
        min_length = 1,
        max_length = 35,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub locale: Option<Option<String>>,
    /// A time zone, e.g. `Europe/Berlin` (an IANA name is the convention; the server keeps
    /// what it is given): 1 to 64 characters, not blank (it is trimmed), no control
    /// characters. `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub timezone: Option<Option<String>>,
}

/// Change my profile: `display_name`, `locale`, `timezone`.
#[utoipa::path(patch, path = "/api/v1/users/me", operation_id = "update_me", tag = "me", security(("bearer" = [])),
    request_body(content = PatchMe, content_type = "application/json"),
    responses((status = 200, description = "The new profile", body = Profile),
              (status = 422, description = "Invalid field", body = crate::error::ErrorBody)))]
pub async fn patch_me(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(patch): AppJson<PatchMe>,
) -> Result<Reply<Profile>, ApiError> {
    let current = state
        .users
        .load(&auth.user_id.to_string())
        .await
        .map_err(user_error)?;
    let trim = |v: Option<String>| v.map(|s| s.trim().to_owned());
    let command = UserCommand::UpdateProfile {
        display_name: patch.display_name.map(trim).unwrap_or(current.display_name),
        locale: patch.locale.map(trim).unwrap_or(current.locale),
        timezone: patch.timezone.map(trim).unwrap_or(current.timezone),
    };
    let outcome = state
        .users
        .execute(&auth.user_id.to_string(), command, &me_meta(&meta, &auth))
        .await
        .map_err(user_error)?;
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Users]).await;
    let mut reply = Reply::ok(profile(&state, auth.user_id).await?);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(min_length = 1, max_length = 1024)]
    pub current_password: String,
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub message: &'static str,
}

/// Change my password (the current one is required). My other sessions are signed out.
#[utoipa::path(post, path = "/api/v1/users/me/password", operation_id = "change_password", tag = "me", security(("bearer" = [])),
    request_body(content = ChangePassword, content_type = "application/json"),
    responses((status = 200, description = "Changed", body = Done),
              (status = 401, description = "`invalid_credentials`: the current password is wrong", body = crate::error::ErrorBody),
              (status = 422, description = "The new password does not meet the policy", body = crate::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<ChangePassword>,
) -> Result<Reply<Done>, ApiError> {
    let user = state
        .users
        .load(&auth.user_id.to_string())
        .await
        .map_err(user_error)?;
    let current_ok = match &user.password_hash {
        Some(h) => state
            .passwords
            .verify(req.current_password, h.clone())
            .await
            .map_err(ApiError::internal)?,
        None => false,
    };
    if !current_ok {
        return Err(ApiError::InvalidCredentials);
    }
    password_policy::check(&req.new_password, &user.email, user.display_name.as_deref())
        .map_err(|m| ApiError::validation("new_password", m))?;
    let password_hash = state
        .passwords
        .hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    let meta = me_meta(&meta, &auth);
    let outcome = state
        .users
        .execute(
            &auth.user_id.to_string(),
            UserCommand::ChangePassword { password_hash },
            &meta,
        )
        .await
        .map_err(user_error)?;
    let revoked = revoke_sessions(
        &state,
        auth.user_id,
        REVOKED_PASSWORD_RESET,
        Some(auth.session_id),
        &meta,
    )
    .await?;
    let lagging = settle(
        &state,
        outcome.cursor.max(revoked),
        &[ReadModel::Users, ReadModel::Sessions],
    )
    .await;
    Ok(Reply {
        status: StatusCode::OK,
        data: Done {
            message: "Your password is changed; your other sessions are signed out.",
        },
        position: outcome.cursor,
        lagging,
    })
}

/// The image formats accepted, told by their first bytes (never by the declared type).
fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The upload's bytes: a raw body, or the first file part of a multipart form.
async fn avatar_bytes(state: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large = |status: StatusCode| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("avatar", "could not be read")
        }
    };
    if ct.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, state)
            .await
            .map_err(|e| too_large(e.status()))?;
        while let Some(field) = form.next_field().await.map_err(|e| too_large(e.status()))? {
            if field.file_name().is_some()
                || field.name() == Some("avatar")
                || field.name() == Some("file")
            {
                return field.bytes().await.map_err(|e| too_large(e.status()));
            }
        }
        Err(ApiError::validation("avatar", "no file in the form"))
    } else if ct.starts_with("image/") || ct == "application/octet-stream" {
        Bytes::from_request(req, state)
            .await
            .map_err(|e| too_large(e.status()))
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send a PNG, JPEG or WebP image as the body, or as multipart/form-data".into(),
        ))
    }
}

/// The avatar as a form part.
#[derive(Debug, ToSchema)]
pub struct AvatarForm {
    /// A PNG, JPEG or WebP image.
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    pub avatar: Vec<u8>,
}

/// Upload my avatar: PNG, JPEG or WebP (checked by content), at most `AVATAR_MAX_BYTES`.
#[utoipa::path(put, path = "/api/v1/users/me/avatar", operation_id = "put_my_avatar", tag = "me", security(("bearer" = [])),
    request_body(description = "The image as the body (`image/png`, `image/jpeg`, `image/webp`), or as the `avatar` (or `file`) part of a form",
        content((AvatarForm = "multipart/form-data"), (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"))),
    responses((status = 200, description = "The new profile (with `avatar_url`)", body = Profile),
              (status = 413, description = "Too large", body = crate::error::ErrorBody),
              (status = 415, description = "Not an image we accept", body = crate::error::ErrorBody)))]
pub async fn put_avatar(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    req: Request,
) -> Result<Reply<Profile>, ApiError> {
    let bytes = avatar_bytes(&state, req).await?;
    if bytes.len() > state.config.avatar_max_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.is_empty() {
        return Err(ApiError::validation("avatar", "is empty"));
    }
    let content_type = sniff_image(&bytes).ok_or_else(|| {
        ApiError::UnsupportedMediaType("the file is not a PNG, JPEG or WebP image".into())
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let dir = state.config.data_dir.join("avatars");
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
    let outcome = state
        .users
        .execute(
            &auth.user_id.to_string(),
            UserCommand::ChangeAvatar {
                content_type: content_type.to_owned(),
                sha256,
                size: bytes.len() as u64,
            },
            &me_meta(&meta, &auth),
        )
        .await
        .map_err(user_error)?;
    let lagging = settle(&state, outcome.cursor, &[ReadModel::Users]).await;
    let mut reply = Reply::ok(profile(&state, auth.user_id).await?);
    reply.position = outcome.cursor;
    reply.lagging = lagging;
    Ok(reply)
}

/// One of my sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct MySession {
    pub id: Uuid,
    pub device: String,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session this request is made from.
    pub current: bool,
}

/// My live sessions, newest first.
#[utoipa::path(get, path = "/api/v1/users/me/sessions", operation_id = "list_my_sessions", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "My sessions", body = Vec<MySession>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Reply<Vec<MySession>>, ApiError> {
    let now = state.clock.now();
    let rows = projections::sessions::active_for_user(&state.pool, auth.user_id, now).await?;
    Ok(Reply::ok(
        rows.into_iter()
            .map(|s| MySession {
                current: s.id == auth.session_id,
                id: s.id,
                device: s.device,
                ip: s.ip,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
            })
            .collect(),
    ))
}

/// Sign one of my sessions out.
#[utoipa::path(delete, path = "/api/v1/users/me/sessions/{id}", operation_id = "revoke_my_session", tag = "me", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The session")),
    responses((status = 204, description = "Revoked"),
              (status = 404, description = "Not one of my sessions", body = crate::error::ErrorBody)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such session".into()))?;
    let session = state
        .sessions
        .load(&id.to_string())
        .await
        .map_err(session_error)?;
    if session.user_id != Some(auth.user_id) {
        return Err(ApiError::NotFound("no such session".into()));
    }
    let outcome = state
        .sessions
        .execute(
            &id.to_string(),
            SessionCommand::Revoke {
                reason: REVOKED_BY_USER.to_owned(),
            },
            &me_meta(&meta, &auth),
        )
        .await
        .map_err(session_error)?;
    settle(&state, outcome.cursor, &[ReadModel::Sessions]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::sniff_image;

    #[test]
    fn images_are_told_by_their_first_bytes() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"<svg xmlns="), None);
        assert_eq!(sniff_image(b"GIF89a"), None);
    }
}
