//! Who caused an event, from where, and in which request.
//!
//! cqrs-es stores metadata as a `HashMap<String, String>` per event; [`EventMetadata`] is
//! the typed view of it that every command carries. It is what makes the audit trail worth
//! having: every event in the log says who did it (actor id and role), from where (IP, user
//! agent), in which request, and what it was part of (correlation id) and caused by
//! (causation id: the request id for HTTP, the causing event's id for workers).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The role of whoever caused an event.
pub const ROLE_ANONYMOUS: &str = "anonymous";
pub const ROLE_SYSTEM: &str = "system";

/// The metadata recorded with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMetadata {
    /// The user (or worker) that caused the event; absent for anonymous requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// `anonymous`, `user`, `admin`, `api_key` or `system`.
    #[serde(default)]
    pub actor_role: String,
    /// The client's IP address (of an HTTP request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The client's `User-Agent` (of an HTTP request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request's `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Ties together everything one user action led to, across services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// What directly caused this event: a request id, or the id of an earlier event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl EventMetadata {
    /// Metadata for work a worker does on its own account.
    pub fn system(worker: &str) -> Self {
        Self {
            actor_id: Some(worker.to_owned()),
            actor_role: ROLE_SYSTEM.to_owned(),
            ..Self::default()
        }
    }

    /// The same request's metadata, with a known user as the actor.
    pub fn acting_as(&self, actor_id: impl ToString, actor_role: &str) -> Self {
        Self {
            actor_id: Some(actor_id.to_string()),
            actor_role: actor_role.to_owned(),
            ..self.clone()
        }
    }

    /// The map cqrs-es stores.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v.clone());
            }
        };
        put("actor_id", &self.actor_id);
        put("ip", &self.ip);
        put("user_agent", &self.user_agent);
        put("request_id", &self.request_id);
        put("correlation_id", &self.correlation_id);
        put("causation_id", &self.causation_id);
        map.insert("actor_role".to_owned(), self.actor_role.clone());
        map
    }

    /// The typed view of a stored map; unknown keys are ignored.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned();
        Self {
            actor_id: get("actor_id"),
            actor_role: get("actor_role").unwrap_or_default(),
            ip: get("ip"),
            user_agent: get("user_agent"),
            request_id: get("request_id"),
            correlation_id: get("correlation_id"),
            causation_id: get("causation_id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_stored_map() {
        let m = EventMetadata {
            actor_id: Some("u1".into()),
            actor_role: "user".into(),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("r1".into()),
            correlation_id: Some("c1".into()),
            causation_id: Some("r1".into()),
        };
        assert_eq!(EventMetadata::from_map(&m.to_map()), m);
    }
}
