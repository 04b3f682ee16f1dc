//! `/api/v1/users/me`: erasing my account, exporting my data, and my own history.
//!
//! History and export read the event log itself (by user, through an index), opening the
//! sealed personal values with my key: it is my audit trail, and the log is where it is
//! complete. Nothing of it is copied into a read model that erasure would have to scrub.

use aggregates::LogCursor;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use projections::sessions::SessionRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::envelope::Reply;
use crate::extract::{AppJson, AppQuery, RequestMeta};
use crate::views::profile;
use crate::views::Profile;
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

use usecases::audit::strip_secrets;

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
    let mut meta = meta;
    meta.actor_id = Some(auth.user_id.to_string());
    meta.actor_role = auth.role.clone();
    let cursor = usecases::erasure::erase_self(&state, auth.user_id, req.password, &meta).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = cursor.and_then(|c| c.to_string().parse().ok()) {
        response.headers_mut().insert("x-position", c);
    }
    Ok(response)
}
