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
use eventstore::crypto::KeyStore;
use eventstore::log::LogFilter;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use super::Admin;
use crate::envelope::Reply;
use crate::extract::AppQuery;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/admin/events", get(export))
}

/// Events read from PostgreSQL per round trip while streaming.
const STREAM_BATCH: u64 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Start after this cursor (exclusive); empty is the start of the log.
    #[param(pattern = "^([0-9a-f]{16}-[0-9a-f]{16})?$")]
    pub after: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub types: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// The actor's id (a user id, an API key id, a worker's name).
    pub actor: Option<String>,
    /// JSON: the page size (1 to 1000, default 100: more is 422). Streams (NDJSON, CSV): at
    /// most this many (default: all).
    #[param(minimum = 1)]
    pub limit: Option<u64>,
    /// `open` (default: personal values opened) or `sealed` (as stored).
    #[param(pattern = "^(open|sealed)$")]
    pub personal: Option<String>,
    /// `omit` (default: secrets' derivatives such as `password_hash` left out) or `keep`
    /// (everything, for a copy that must work the same, e.g. `chronicle events import`).
    #[param(pattern = "^(omit|keep)$")]
    pub secrets: Option<String>,
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

/// What an export reads, checked.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub after: LogCursor,
    pub filter: LogFilter,
    pub limit: Option<u64>,
    pub open: bool,
    /// Keep secrets' derivatives (`password_hash`, `refresh_token_hash`, `nonce`, ...).
    pub keep_secrets: bool,
}

impl ExportSpec {
    pub fn from_query(q: ExportQuery) -> Result<Self, ApiError> {
        let after = match q.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(c) => c
                .parse()
                .map_err(|_| ApiError::validation("after", "is not a log cursor"))?,
            None => LogCursor::START,
        };
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s > u {
                return Err(ApiError::validation("since", "must not be after until"));
            }
        }
        let open = match q.personal.as_deref() {
            None | Some("open") => true,
            Some("sealed") => false,
            Some(_) => return Err(ApiError::validation("personal", "must be open or sealed")),
        };
        let keep_secrets = match q.secrets.as_deref() {
            None | Some("omit") => false,
            Some("keep") => true,
            Some(_) => return Err(ApiError::validation("secrets", "must be omit or keep")),
        };
        if q.limit == Some(0) {
            return Err(ApiError::validation("limit", "must be 1 or more"));
        }
        let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Self {
            after,
            filter: LogFilter {
                since: q.since,
                until: q.until,
                types: super::type_list(q.types),
                aggregate_type: text(q.aggregate_type),
                aggregate_id: text(q.aggregate_id),
                actor: text(q.actor),
            },
            limit: q.limit,
            open,
            keep_secrets,
        })
    }
}

/// One page of envelopes after `spec.after` (personal values opened, secrets' derivatives
/// left out, as `spec` says).
pub async fn page(
    pool: &PgPool,
    keys: &KeyStore,
    spec: &ExportSpec,
    limit: u64,
) -> Result<Vec<StreamEnvelope>, ApiError> {
    let events =
        eventstore::log::read_filtered(pool, spec.after, &spec.filter, limit as i64).await?;
    let mut out = Vec::with_capacity(events.len());
    for mut e in events {
        if spec.open {
            e.open(keys).await.map_err(ApiError::from)?;
        }
        if !spec.keep_secrets {
            super::audit::strip_secrets(&mut e.payload);
        }
        out.push(e.into_envelope());
    }
    Ok(out)
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// The CSV header line.
pub const CSV_HEADER: &str = "cursor,event_id,recorded_at,aggregate_type,aggregate_id,sequence,event_type,event_version,actor_id,actor_role,ip,user_agent,request_id,payload\n";

/// One envelope as a line of `format` (with its newline).
pub fn line(e: &StreamEnvelope, format: Format) -> String {
    match format {
        Format::Ndjson => {
            let mut s = serde_json::to_string(e).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Csv => {
            let m = &e.metadata;
            let fields = [
                e.cursor.to_string(),
                e.event_id.to_string(),
                e.recorded_at.to_rfc3339(),
                e.aggregate_type.clone(),
                e.aggregate_id.clone(),
                e.sequence.to_string(),
                e.event_type.clone(),
                e.event_version.clone(),
                m.actor_id.clone().unwrap_or_default(),
                m.actor_role.clone(),
                m.ip.clone().unwrap_or_default(),
                m.user_agent.clone().unwrap_or_default(),
                m.request_id.clone().unwrap_or_default(),
                e.payload.to_string(),
            ];
            let mut s = fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(",");
            s.push('\n');
            s
        }
    }
}

/// RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes; a
/// leading `=`, `+`, `-`, `@`, tab or carriage return is prefixed with `'` so spreadsheets do not run it.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

struct Streaming {
    pool: PgPool,
    keys: KeyStore,
    spec: ExportSpec,
    format: Format,
    sent: u64,
    done: bool,
    /// The readable head when the export began: it ends there even while writes go on
    /// (the next export, `after` its last cursor, gets the rest).
    end: Option<Option<LogCursor>>,
}

/// The log as an async stream of text chunks (one per batch), for any amount.
pub fn stream(
    pool: PgPool,
    keys: KeyStore,
    spec: ExportSpec,
    format: Format,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let state = Streaming {
        pool,
        keys,
        spec,
        format,
        sent: 0,
        done: false,
        end: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if s.end.is_none() {
            match eventstore::log::head(&s.pool).await {
                Ok(head) => s.end = Some(head),
                Err(e) => {
                    tracing::error!(error = %e, "Export stopped");
                    s.done = true;
                    return Some((Err(std::io::Error::other("the export stopped")), s));
                }
            }
        }
        let end = s.end.flatten();
        let want = match s.spec.limit {
            Some(limit) => STREAM_BATCH.min(limit - s.sent),
            None => STREAM_BATCH,
        };
        if want == 0 {
            return None;
        }
        match page(&s.pool, &s.keys, &s.spec, want).await {
            Ok(batch) if batch.is_empty() => None,
            Ok(mut batch) => {
                s.done = (batch.len() as u64) < want;
                let before = batch.len();
                batch.retain(|e| end.is_some_and(|end| e.cursor <= end));
                if batch.len() < before {
                    s.done = true;
                }
                if batch.is_empty() {
                    return None;
                }
                s.sent += batch.len() as u64;
                if let Some(last) = batch.last() {
                    s.spec.after = last.cursor;
                }
                let mut text = String::with_capacity(batch.len() * 512);
                for e in &batch {
                    text.push_str(&line(e, s.format));
                }
                Some((Ok(Bytes::from(text)), s))
            }
            Err(e) => {
                tracing::error!(error = %e, "Export stopped");
                s.done = true;
                Some((Err(std::io::Error::other("the export stopped")), s))
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
