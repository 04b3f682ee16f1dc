//! A user's audit trail: every event whose subject is the user (their account and what
//! they own: sessions, usage meters, conversations, uploads) and every event they caused,
//! in the log's order, each with who did it, from where, in which request, and a readable
//! summary. Read from the log itself, with personal values opened by their owners' keys;
//! secrets' derivatives are left out of everything shown ([`strip_secrets`]).

use std::collections::HashMap;

use aggregates::api_key::{ApiKey, ROLE_API_KEY};
use aggregates::metadata::{ROLE_ANONYMOUS, ROLE_SYSTEM};
use aggregates::LogCursor;
use chrono::{DateTime, Utc};
use eventstore::log::HistoryFilter;
use eventstore::StoredEvent;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{Core, Error};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    /// `user`, `admin`, `api_key`, `system` or `anonymous`.
    pub kind: String,
    /// The user's id, the key's id, or the worker's name.
    pub id: Option<String>,
    /// Something a person can read: an email, a key's name, a worker's name.
    pub label: String,
}

/// One entry of a user's audit trail.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
}

/// A page of a user's audit trail and how many entries match in all.
pub async fn trail(
    state: &Core,
    user_id: Uuid,
    filter: &HistoryFilter,
) -> Result<(Vec<AuditEntry>, i64), Error> {
    let (events, total) = eventstore::log::subject_history(&state.pool, user_id, filter).await?;
    let mut labels = ActorLabels::default();
    let mut out = Vec::with_capacity(events.len());
    for mut event in events {
        event.open(&state.keys).await?;
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
    pub async fn actor(&mut self, state: &Core, event: &StoredEvent) -> Result<Actor, Error> {
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

    async fn lookup(&self, state: &Core, id: &str, kind: &str) -> Result<String, Error> {
        let Ok(uuid) = id.parse::<Uuid>() else {
            return Ok(id.to_owned());
        };
        if kind == ROLE_API_KEY {
            let key: ApiKey = state.api_keys.load(id).await?;
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
