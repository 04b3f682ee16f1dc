//! A user's audit trail: every event whose subject is the user (their account and what
//! they own: sessions, usage meters, conversations, uploads) and every event they caused,
//! in the log's order, each with who did it, from where, in which request, and a readable
//! summary. Read from the log itself, with personal values opened by their owners' keys.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use eventstore::log::HistoryFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::users::{page_of, user_id};
use super::Admin;
use crate::envelope::Reply;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub use usecases::audit::{strip_secrets, trail, Actor, ActorLabels, AuditEntry};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/users/{id}/history", get(history))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1-based (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<u32>,
    /// `asc` (the log's order, default) or `desc`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// Event types, comma-separated (for example `SessionStarted,LoginFailed`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub types: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// A page of a user's full event history (admin). Not `HistoryPage`: that name is
/// `GET /api/v1/users/me/history`'s (`HistoryEntry` items).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct HistoryPage {
    pub items: Vec<AuditEntry>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

/// A user's audit trail: every event of their account and of what they own (sessions,
/// usage, conversations, uploads) and every event they caused, in the log's order, each
/// with its actor, IP, user agent, request id, a readable summary and the payload.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}/history", operation_id = "get_user_history", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(("id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<HistoryQuery>,
) -> Result<Reply<HistoryPage>, ApiError> {
    let id = user_id(&id)?;
    let (page, per_page) = page_of(q.page, q.per_page, 500)?;
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::validation("order", "must be asc or desc")),
    };
    let types = super::type_list(q.types);
    if types.len() > 50 || types.iter().any(|t| t.len() > 100) {
        return Err(ApiError::validation("type", "at most 50 event types"));
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if since > until {
            return Err(ApiError::validation("since", "must not be after until"));
        }
    }
    let exists = projections::users::by_id(&state.pool, id).await?.is_some()
        || state
            .users
            .load(&id.to_string())
            .await
            .map(|u| u.registered)
            .unwrap_or(false);
    if !exists {
        return Err(ApiError::NotFound("no such user".into()));
    }
    let filter = HistoryFilter {
        types,
        since: q.since,
        until: q.until,
        newest_first,
        limit: per_page as i64,
        offset: (page as i64 - 1) * per_page as i64,
        own_only: false,
    };
    let (items, total) = trail(&state, id, &filter).await?;
    Ok(Reply::ok(HistoryPage {
        items,
        page,
        per_page,
        total,
    }))
}
