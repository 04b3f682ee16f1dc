//! The event log as analysts take it: pages of envelopes, or one stream of NDJSON or CSV
//! lines for any amount in bounded memory, filtered, with personal values opened or left
//! sealed and secrets' derivatives left out unless asked for. Served by
//! `GET /api/v1/admin/events` and `chronicle events export`.

use aggregates::{LogCursor, StreamEnvelope};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstore::crypto::KeyStore;
use eventstore::log::LogFilter;
use serde::Deserialize;
use sqlx::PgPool;

use crate::Error;

/// Events read from PostgreSQL per round trip while streaming.
const STREAM_BATCH: u64 = 1_000;

/// A comma-separated list of event types, blanks dropped.
pub fn type_list(raw: Option<String>) -> Vec<String> {
    raw.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// What an export asks for, as the query string or the command line says it.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Start after this cursor (exclusive); empty is the start of the log.
    #[cfg_attr(feature = "openapi", param(pattern = "^([0-9a-f]{16}-[0-9a-f]{16})?$"))]
    pub after: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", param(rename = "type"))]
    pub types: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// The actor's id (a user id, an API key id, a worker's name).
    pub actor: Option<String>,
    /// JSON: the page size (1 to 1000, default 100: more is 422). Streams (NDJSON, CSV): at
    /// most this many (default: all).
    #[cfg_attr(feature = "openapi", param(minimum = 1))]
    pub limit: Option<u64>,
    /// `open` (default: personal values opened) or `sealed` (as stored).
    #[cfg_attr(feature = "openapi", param(pattern = "^(open|sealed)$"))]
    pub personal: Option<String>,
    /// `omit` (default: secrets' derivatives such as `password_hash` left out) or `keep`
    /// (everything, for a copy that must work the same, e.g. `chronicle events import`).
    #[cfg_attr(feature = "openapi", param(pattern = "^(omit|keep)$"))]
    pub secrets: Option<String>,
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
    pub fn from_query(q: ExportQuery) -> Result<Self, Error> {
        let after = match q.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid("after", "is not a log cursor"))?,
            None => LogCursor::START,
        };
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s > u {
                return Err(Error::invalid("since", "must not be after until"));
            }
        }
        let open = match q.personal.as_deref() {
            None | Some("open") => true,
            Some("sealed") => false,
            Some(_) => return Err(Error::invalid("personal", "must be open or sealed")),
        };
        let keep_secrets = match q.secrets.as_deref() {
            None | Some("omit") => false,
            Some("keep") => true,
            Some(_) => return Err(Error::invalid("secrets", "must be omit or keep")),
        };
        if q.limit == Some(0) {
            return Err(Error::invalid("limit", "must be 1 or more"));
        }
        let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Self {
            after,
            filter: LogFilter {
                since: q.since,
                until: q.until,
                types: type_list(q.types),
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
) -> Result<Vec<StreamEnvelope>, Error> {
    let events =
        eventstore::log::read_filtered(pool, spec.after, &spec.filter, limit as i64).await?;
    let mut out = Vec::with_capacity(events.len());
    for mut e in events {
        if spec.open {
            e.open(keys).await?;
        }
        if !spec.keep_secrets {
            crate::audit::strip_secrets(&mut e.payload);
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
