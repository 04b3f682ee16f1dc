//! `/api/v1/users/me`: erasing my account, exporting my data, and my own history.
//!
//! History and export read the event log itself (by user, through an index), opening the
//! sealed personal values with my key: it is my audit trail, and the log is where it is
//! complete. Nothing of it is copied into a read model that erasure would have to scrub.

use aggregates::user::UserCommand;
use aggregates::{EventMetadata, LogCursor};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use projections::sessions::SessionRow;
use projections::ReadModel;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, AppQuery, RequestMeta};
use crate::routes::account::{profile, user_error, Profile};
use crate::routes::read_your_writes::settle;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/me/history", get(history))
        .route("/api/v1/users/me/export", get(export))
}

/// The DELETE on `/api/v1/users/me` (merged into the `me` route).
pub fn erase_route() -> axum::routing::MethodRouter<AppState> {
    axum::routing::delete(erase_me)
}

use crate::routes::admin::audit::strip_secrets;

/// One entry of a user's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    #[schema(value_type = String)]
    pub cursor: LogCursor,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub recorded_at: DateTime<Utc>,
    pub actor_id: Option<String>,
    pub actor_role: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// What the event says (secret-derived fields left out).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl HistoryEntry {
    fn from_event(mut e: StoredEvent) -> Self {
        strip_secrets(&mut e.payload);
        let details = e
            .payload
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        Self {
            cursor: e.cursor,
            event_id: e.event_id,
            event_type: e.event_type,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            recorded_at: e.recorded_at,
            actor_id: e.metadata.actor_id,
            actor_role: e.metadata.actor_role,
            ip: e.metadata.ip,
            user_agent: e.metadata.user_agent,
            request_id: e.metadata.request_id,
            details,
        }
    }
}

async fn my_events(
    state: &AppState,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<HistoryEntry>, i64), ApiError> {
    let (events, total) =
        eventstore::log::user_history(&state.pool, user_id, limit, offset).await?;
    let mut out = Vec::with_capacity(events.len());
    let me = user_id.to_string();
    for mut e in events {
        e.open(&state.keys).await.map_err(ApiError::from)?;
        let mut entry = HistoryEntry::from_event(e);
        if entry.actor_id.as_ref().is_some_and(|a| *a != me) {
            // someone else known acted (an admin, an API key): where they were is theirs, not mine
            entry.ip = None;
            entry.user_agent = None;
        }
        out.push(entry);
    }
    Ok((out, total))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1-based (default 1).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// 1 to 200 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryEntry>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

/// My own audit trail: what was done to my account and by me, when, from where. Newest first.
#[utoipa::path(get, path = "/api/v1/users/me/history", operation_id = "get_my_history", tag = "me", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of my history", body = HistoryPage),
              (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<Reply<HistoryPage>, ApiError> {
    let page = crate::extract::page_number(q.page)?;
    let per_page = q.per_page.unwrap_or(50);
    if !(1..=200).contains(&per_page) {
        return Err(ApiError::validation("per_page", "must be 1 to 200"));
    }
    let offset = (page as i64 - 1) * per_page as i64;
    let (items, total) = my_events(&state, auth.user_id, per_page as i64, offset).await?;
    Ok(Reply::ok(HistoryPage {
        items,
        page,
        per_page,
        total,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub exported_at: DateTime<Utc>,
    pub profile: Profile,
    pub sessions: Vec<SessionRow>,
    /// Every event of my history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Usage records (none are kept yet).
    #[schema(value_type = Vec<crate::routes::usage::DayUsage>, max_items = 0)]
    pub usage: Vec<Value>,
    /// Conversations and their messages (none are kept yet).
    #[schema(value_type = Vec<projections::conversations::ConversationRow>, max_items = 0)]
    pub conversations: Vec<Value>,
}

/// Everything Chronicle holds about me, as one JSON document.
#[utoipa::path(get, path = "/api/v1/users/me/export", operation_id = "export_my_data", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "All my data", body = Export),
              (status = 401, description = "Not signed in", body = crate::error::ErrorBody)))]
pub async fn export(State(state): State<AppState>, auth: AuthUser) -> Result<Response, ApiError> {
    let profile = profile(&state, auth.user_id).await?;
    let sessions = projections::sessions::all_for_user(&state.pool, auth.user_id).await?;
    let (mut history, _) = my_events(&state, auth.user_id, 100_000, 0).await?;
    history.reverse();
    let body = Export {
        exported_at: state.clock.now(),
        profile,
        sessions,
        history,
        usage: vec![],
        conversations: vec![],
    };
    let mut response = Reply::ok(body).into_response();
    let name = format!(
        "attachment; filename=\"chronicle-export-{}.json\"",
        auth.user_id
    );
    if let Ok(v) = name.parse() {
        response.headers_mut().insert("content-disposition", v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// Required when the account has a password.
    #[serde(default)]
    pub password: Option<String>,
}

/// Erase a user: record `UserErased`, delete their key (every sealed copy of their personal
/// data becomes unreadable), release their email, delete their avatar file, and wait until
/// the read models have scrubbed them. Shared with the admin's delete.
pub async fn erase_user(
    state: &AppState,
    user_id: Uuid,
    requested_by: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, ApiError> {
    let avatar = projections::users::by_id(&state.pool, user_id)
        .await?
        .and_then(|u| u.avatar_sha256);
    let outcome = state
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::EraseUser {
                requested_by: requested_by.to_owned(),
            },
            meta,
        )
        .await
        .map_err(user_error)?;
    state.keys.erase(user_id).await.map_err(ApiError::from)?;
    sqlx::query("delete from email_claims where user_id = $1")
        .bind(user_id)
        .execute(&state.pool)
        .await?;
    settle(
        state,
        outcome.cursor,
        &[
            ReadModel::Users,
            ReadModel::Sessions,
            ReadModel::Conversations,
            ReadModel::Uploads,
        ],
    )
    .await;
    if let Some(sha) = avatar.filter(|s| s.chars().all(|c| c.is_ascii_hexdigit())) {
        let shared: i64 = sqlx::query_scalar("select count(*) from users where avatar_sha256 = $1")
            .bind(&sha)
            .fetch_one(&state.pool)
            .await?;
        if shared == 0 {
            let _ = tokio::fs::remove_file(state.config.data_dir.join("avatars").join(&sha)).await;
        }
    }
    // uploaded files go too, unless another user stored the same bytes
    for sha in projections::uploads::hashes_of(&state.pool, user_id).await? {
        let shared: i64 = sqlx::query_scalar(
            "select count(*) from uploads where sha256 = $1 and owner_id <> $2 and deleted_at is null",
        )
        .bind(&sha)
        .bind(user_id)
        .fetch_one(&state.pool)
        .await?;
        if shared == 0 && sha.chars().all(|c| c.is_ascii_hexdigit()) {
            let _ = tokio::fs::remove_file(state.config.data_dir.join("uploads").join(&sha)).await;
        }
    }
    tracing::info!(user.id = %user_id, requested_by, "Erased a user");
    Ok(outcome.cursor)
}

/// Delete my account and erase my personal data (give the password when there is one).
/// The log keeps the events, but what was personal in them can no longer be read.
#[utoipa::path(delete, path = "/api/v1/users/me", operation_id = "erase_me", tag = "me", security(("bearer" = [])),
    request_body(content = EraseRequest, content_type = "application/json"),
    responses((status = 204, description = "Erased"),
              (status = 401, description = "Not signed in, or the password is wrong", body = crate::error::ErrorBody)))]
pub async fn erase_me(
    State(state): State<AppState>,
    RequestMeta(meta): RequestMeta,
    auth: AuthUser,
    AppJson(req): AppJson<EraseRequest>,
) -> Result<Response, ApiError> {
    let user = state
        .users
        .load(&auth.user_id.to_string())
        .await
        .map_err(user_error)?;
    if let Some(hash) = &user.password_hash {
        let given = req.password.ok_or(ApiError::InvalidCredentials)?;
        let ok = state
            .passwords
            .verify(given, hash.clone())
            .await
            .map_err(ApiError::internal)?;
        if !ok {
            return Err(ApiError::InvalidCredentials);
        }
    }
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    let is_admin = projections::users::by_id(&state.pool, auth.user_id)
        .await?
        .is_some_and(|u| u.role == aggregates::user::ROLE_ADMIN);
    let cursor = if is_admin {
        // the last active admin may not erase themselves: nobody could administer
        crate::routes::admin::guard::with_admin_guard(&state, auth.user_id, "delete", async {
            erase_user(&state, auth.user_id, "user", &meta).await
        })
        .await?
    } else {
        erase_user(&state, auth.user_id, "user", &meta).await?
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = cursor.and_then(|c| c.to_string().parse().ok()) {
        response.headers_mut().insert("x-position", c);
    }
    Ok(response)
}
