//! The envelope every event travels in on the NATS stream (documented in `docs/EVENTS.md`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventMetadata, LogCursor};

/// One event of the log as published to JetStream, as JSON. Consumers in any language
/// keep `cursor` (or `transaction_id` + `position`) as their checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamEnvelope {
    /// The place of the event in the log's global order (opaque, sortable string).
    pub cursor: LogCursor,
    /// The two halves of `cursor`, for consumers that prefer numbers.
    pub transaction_id: u64,
    /// The event's position (compare `transaction_id` and `position` as a pair).
    pub position: u64,
    /// Unique id of the event; also the `Nats-Msg-Id` the relay publishes it with.
    pub event_id: Uuid,
    /// What the event belongs to: `user`, `session`, `meter`, `conversation`, `upload`,
    /// `api_key`.
    pub aggregate_type: String,
    /// Which one of them (a UUID; a meter's is `<user id>:<YYYY-MM-DD>`).
    pub aggregate_id: String,
    /// 1-based, contiguous per aggregate.
    pub sequence: u64,
    /// What happened, e.g. `UserRegistered` (also the payload's only key).
    pub event_type: String,
    /// The version of the payload's shape, e.g. `1.0`: the version current when the event
    /// was published (events of earlier versions in the log are upcast before publishing).
    pub event_version: String,
    /// When PostgreSQL stored the event (UTC).
    pub recorded_at: DateTime<Utc>,
    /// Who caused the event, from where, in which request.
    pub metadata: EventMetadata,
    /// The event's payload as stored: `{"<EventType>": { ...fields }}`.
    #[schemars(schema_with = "payload_schema")]
    pub payload: serde_json::Value,
}

/// Any event's stored form: an object with one key, the event type (each event's own
/// schema is in `docs/schemas/<aggregate>/<EventType>.v<major>.json`).
fn payload_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The event's payload as stored: `{\"<EventType>\": {fields}}`; its schema \
            is `schemas/<aggregate_type>/<event_type>.v<major version>.json`.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1
    })
}
