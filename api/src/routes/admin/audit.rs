//! A user's audit trail: every event whose subject is the user (their account and what
//! they own: sessions, usage meters, conversations, uploads) and every event they caused,
//! in the log's order, each with who did it, from where, in which request, and a readable
//! summary. Read from the log itself, with personal values opened by their owners' keys.

use std::collections::HashMap;

use aggregates::api_key::{ApiKey, ROLE_API_KEY};
use aggregates::metadata::{ROLE_ANONYMOUS, ROLE_SYSTEM};
use aggregates::LogCursor;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use eventstore::log::HistoryFilter;
use eventstore::StoredEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::users::{page_of, user_id};
use super::Admin;
use crate::envelope::Reply;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/users/{id}/history", get(history))
}

/// Remove secrets' derivatives from a stored payload (`{"<EventType>": {fields}}`), in
/// place, sealed or opened: the catalogue's list (`SECRET_FIELDS`), the one the log seals.
/// Never shown in a history, even to admins.
pub fn strip_secrets(payload: &mut Value) {
    if let Some(body) = payload
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .and_then(Value::as_object_mut)
    {
        for key in aggregates::catalog::SECRET_FIELDS {
            body.remove(*key);
        }
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Actor {
    /// `user`, `admin`, `api_key`, `system` or `anonymous`.
    pub kind: String,
    /// The user's id, the key's id, or the worker's name.
    pub id: Option<String>,
    /// Something a person can read: an email, a key's name, a worker's name.
    pub label: String,
}

/// One entry of a user's audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    #[schema(value_type = String)]
    pub cursor: LogCursor,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// What the event means, in a sentence.
    pub summary: String,
    /// The stored event (`{"<EventType>": {...}}`), personal values opened, secrets'
    /// derivatives left out.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A page of a user's audit trail and how many entries match in all.
pub async fn trail(
    state: &AppState,
    user_id: Uuid,
    filter: &HistoryFilter,
) -> Result<(Vec<AuditEntry>, i64), ApiError> {
    let (events, total) = eventstore::log::subject_history(&state.pool, user_id, filter).await?;
    let mut labels = ActorLabels::default();
    let mut out = Vec::with_capacity(events.len());
    for mut event in events {
        event.open(&state.keys).await.map_err(ApiError::from)?;
        let actor = labels.actor(state, &event).await?;
        out.push(entry(event, actor));
    }
    Ok((out, total))
}

/// The entry for one (opened) event.
pub fn entry(event: StoredEvent, actor: Actor) -> AuditEntry {
    let mut payload = event.payload;
    strip_secrets(&mut payload);
    AuditEntry {
        summary: aggregates::describe::summary(&event.event_type, &payload),
        cursor: event.cursor,
        event_id: event.event_id,
        event_type: event.event_type,
        event_version: event.event_version,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        recorded_at: event.recorded_at,
        actor,
        ip: event.metadata.ip,
        user_agent: event.metadata.user_agent,
        request_id: event.metadata.request_id,
        payload,
    }
}

/// Names for actors, looked up once per request.
#[derive(Default)]
pub struct ActorLabels {
    known: HashMap<String, String>,
}

impl ActorLabels {
    pub async fn actor(
        &mut self,
        state: &AppState,
        event: &StoredEvent,
    ) -> Result<Actor, ApiError> {
        let role = event.metadata.actor_role.as_str();
        let id = event.metadata.actor_id.clone();
        let kind = match role {
            "" => ROLE_ANONYMOUS,
            r => r,
        }
        .to_owned();
        let label = match (&id, kind.as_str()) {
            (None, _) => "anonymous".to_owned(),
            (Some(id), ROLE_SYSTEM) => id.clone(),
            (Some(id), _) => match self.known.get(id) {
                Some(l) => l.clone(),
                None => {
                    let l = self.lookup(state, id, &kind).await?;
                    self.known.insert(id.clone(), l.clone());
                    l
                }
            },
        };
        Ok(Actor { kind, id, label })
    }

    async fn lookup(&self, state: &AppState, id: &str, kind: &str) -> Result<String, ApiError> {
        let Ok(uuid) = id.parse::<Uuid>() else {
            return Ok(id.to_owned());
        };
        if kind == ROLE_API_KEY {
            let key: ApiKey = state.api_keys.load(id).await.map_err(ApiError::from)?;
            return Ok(if key.created {
                format!("API key \"{}\"", key.name)
            } else {
                format!("API key {id}")
            });
        }
        Ok(projections::users::by_id(&state.pool, uuid)
            .await?
            .map(|u| u.email)
            .unwrap_or_else(|| id.to_owned()))
    }
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
