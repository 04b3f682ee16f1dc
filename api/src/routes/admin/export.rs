//! `GET /api/v1/admin/events`: the event log in its order, filtered, as JSON pages with a
//! next cursor, or streamed as NDJSON (`Accept: application/x-ndjson`) or CSV
//! (`Accept: text/csv`) in batches, so any amount leaves in bounded memory.
//!
//! Each event is the envelope the NATS stream carries (docs/EVENTS.md). Personal values
//! are opened with their owners' keys by default (`personal=open`; erased users' read
//! `"[erased]"`), or left as stored (`personal=sealed`), exactly as the log and the stream
//! hold them. Secrets' derivatives (`password_hash`, `refresh_token_hash`, `nonce`,
//! `secret_hash`) are left out unless `secrets=keep` (a copy that must work the same); the
//! log holds them sealed too, so they are opened with `personal=open` and stay sealed with
//! `personal=sealed`.

use aggregates::{LogCursor, StreamEnvelope};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::Admin;
use crate::envelope::Reply;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub use usecases::export::{line, page, stream, ExportQuery, ExportSpec, Format, CSV_HEADER};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/events", get(export))
}

/// A page of the log.
/// One event as the log's export sends it (the shape of [`StreamEnvelope`], which the pure
/// `aggregates` crate cannot describe with utoipa; `docs/schemas/` has it as JSON Schema).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedEvent {
    /// The place of the event in the log's global order.
    #[schema(pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")]
    pub cursor: String,
    pub transaction_id: u64,
    pub position: u64,
    pub event_id: uuid::Uuid,
    /// `user`, `session`, `meter`, `conversation`, `upload`, `api_key`, `email_probe`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1-based, contiguous per aggregate.
    #[schema(minimum = 1)]
    pub sequence: u64,
    /// e.g. `UserRegistered` (also the payload's only key).
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: LoggedEventMetadata,
    /// `{"<EventType>": {fields}}`; each event's schema is in `docs/schemas/`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Who caused an event, from where, in which request.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedEventMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    pub actor_role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<LoggedEvent>)]
    pub items: Vec<StreamEnvelope>,
    /// Pass as `after` for the next page (the last item's cursor; the same `after` when
    /// the page is empty).
    #[schema(value_type = Option<String>)]
    pub next: Option<LogCursor>,
    /// Whether the page was full (there may be more right away).
    pub has_more: bool,
}

/// The event log in its order (`transaction_id`, `position`), filtered. JSON pages with a
/// next cursor by default; `Accept: application/x-ndjson` (or `text/csv`) streams every
/// matching event (or `limit` of them) in bounded memory.
#[utoipa::path(get, path = "/api/v1/admin/events", operation_id = "export_events", tag = "admin",
    security(("bearer" = []), ("admin_key" = [])), params(ExportQuery),
    responses((status = 200, description = "A page (JSON); with `Accept: application/x-ndjson` a stream of events, one JSON object a line; with `Accept: text/csv` the same as CSV (a header row first)",
               content((EventPage = "application/json"), (LoggedEvent = "application/x-ndjson"), (String = "text/csv"))),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    AppQuery(q): AppQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let spec = ExportSpec::from_query(q)?;
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if accept.contains("application/x-ndjson") {
        Some((Format::Ndjson, "application/x-ndjson"))
    } else if accept.contains("text/csv") {
        Some((Format::Csv, "text/csv; charset=utf-8"))
    } else {
        None
    };
    let Some((format, content_type)) = format else {
        let limit = spec.limit.unwrap_or(100);
        if limit > 1000 {
            return Err(ApiError::validation(
                "limit",
                "must be 1 to 1000 for a JSON page",
            ));
        }
        let items = page(&state.pool, &state.keys, &spec, limit).await?;
        let next = items.last().map(|e| e.cursor).or(Some(spec.after));
        let has_more = items.len() as u64 == limit;
        return Ok(Reply::ok(EventPage {
            items,
            next,
            has_more,
        })
        .into_response());
    };
    tracing::info!(by = ?admin.identity, ?format, "Streaming an export of the log");
    let header = (format == Format::Csv).then(|| Ok(Bytes::from_static(CSV_HEADER.as_bytes())));
    let (recheck_state, identity) = (state.clone(), admin.identity.clone());
    let chunks = stream(state.pool.clone(), state.keys.clone(), spec, format).then(move |chunk| {
        let (state, identity) = (recheck_state.clone(), identity.clone());
        async move {
            // a demoted admin or a revoked key stops the export at the next batch
            if super::still_allowed(&state, &identity).await {
                chunk
            } else {
                Err(std::io::Error::other("the export is no longer allowed"))
            }
        }
    });
    // fused: the compression layer may poll once more after the end
    let body = futures::stream::iter(header).chain(chunks).fuse();
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
