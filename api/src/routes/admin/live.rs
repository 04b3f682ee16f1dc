//! `GET /api/v1/admin/events/live`: the event log as it grows, as server-sent events.
//!
//! It follows the log itself (in its global order, finished transactions only, like the
//! relay), from the head when the request came or from `after` / `Last-Event-ID`, so a
//! reconnecting viewer misses nothing. Each message's id is the event's cursor.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use aggregates::LogCursor;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{Actor, ActorLabels};
use super::Admin;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/events/live", get(live))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Only these event types, comma-separated.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub types: Option<String>,
    /// Start after this cursor instead of at the head of the log (empty: the head).
    #[param(pattern = "^([0-9a-f]{16}-[0-9a-f]{16})?$")]
    pub after: Option<String>,
}

/// One message of the live stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEvent {
    #[schema(value_type = String)]
    pub cursor: LogCursor,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    /// Whose history the event belongs to, when it is a user's.
    pub subject_id: Option<Uuid>,
    pub summary: String,
}

const POLL: Duration = Duration::from_millis(250);
/// How often a live stream checks that its admin still is one.
const RECHECK: Duration = Duration::from_secs(10);

struct Follow {
    state: AppState,
    cursor: LogCursor,
    types: Vec<String>,
    pending: VecDeque<StoredEvent>,
    /// The subject of each pending event.
    subjects: HashMap<Uuid, Uuid>,
    labels: ActorLabels,
    identity: super::AdminIdentity,
    checked: std::time::Instant,
}

/// The event log as it happens (text/event-stream, event `event`, data [`LiveEvent`]).
#[utoipa::path(get, path = "/api/v1/admin/events/live", operation_id = "follow_events", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])),
    params(LiveQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor (as `after`)", pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")),
    responses((status = 200, description = "Server-sent events: `event: event`, `id` the event's cursor, `data` a `LiveEvent` as JSON",
               content_type = "text/event-stream", body = LiveEvent),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn live(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    AppQuery(q): AppQuery<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(v) => Some((
            "Last-Event-ID",
            v.to_str().map(str::to_owned).unwrap_or_default(),
        )),
        None => q
            .after
            .filter(|a| !a.trim().is_empty())
            .map(|a| ("after", a)),
    };
    let cursor = match resume {
        Some((field, c)) => c
            .trim()
            .parse::<LogCursor>()
            .map_err(|_| ApiError::validation(field, "is not a log cursor"))?,
        None => eventstore::log::head(&state.pool)
            .await?
            .unwrap_or(LogCursor::START),
    };
    let types = super::type_list(q.types);
    let follow = Follow {
        state,
        cursor,
        types,
        pending: VecDeque::new(),
        subjects: HashMap::new(),
        labels: ActorLabels::default(),
        identity: admin.identity,
        checked: std::time::Instant::now(),
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if f.checked.elapsed() >= RECHECK {
                // a demoted admin or a revoked key: the stream ends
                if !super::still_allowed(&f.state, &f.identity).await {
                    return None;
                }
                f.checked = std::time::Instant::now();
            }
            if let Some(mut e) = f.pending.pop_front() {
                if !f.types.is_empty() && !f.types.contains(&e.event_type) {
                    continue;
                }
                if e.open(&f.state.keys).await.is_err() {
                    continue;
                }
                let actor = match f.labels.actor(&f.state, &e).await {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                let subject_id = f.subjects.remove(&e.event_id);
                let message = LiveEvent {
                    summary: aggregates::describe::summary(&e.event_type, &e.payload),
                    cursor: e.cursor,
                    event_id: e.event_id,
                    event_type: e.event_type,
                    aggregate_type: e.aggregate_type,
                    aggregate_id: e.aggregate_id,
                    recorded_at: e.recorded_at,
                    actor,
                    subject_id,
                };
                let event = Event::default()
                    .event("event")
                    .id(message.cursor.to_string())
                    .json_data(&message)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
                return Some((Ok(event), f));
            }
            match eventstore::log::read_after(&f.state.pool, f.cursor, 500).await {
                Ok(batch) if !batch.is_empty() => {
                    if let Some(last) = batch.last() {
                        f.cursor = last.cursor;
                    }
                    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                    // whose history each event is in (a session's later events say no user)
                    let subjects = eventstore::log::subjects_of(&f.state.pool, &ids)
                        .await
                        .unwrap_or_default();
                    f.subjects = subjects.into_iter().collect();
                    f.pending.extend(batch);
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
