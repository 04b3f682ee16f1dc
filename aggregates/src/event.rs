//! [`Event`]: every event Chronicle writes, of every aggregate, as one type.
//!
//! The log stores an event as its aggregate type, its event type and a payload
//! (`{"<EventType>": {fields}}`). Whatever reads the log to decide something (a projection,
//! a worker) decodes it once into this enum and matches on it, so that a new event, or a
//! new aggregate, fails to build wherever a decision about it is missing.

use cqrs_es::DomainEvent;

use crate::api_key::{self, ApiKeyEvent};
use crate::conversation::{self, ConversationEvent};
use crate::email_probe::{self, EmailProbeEvent};
use crate::meter::{self, MeterEvent};
use crate::session::{self, SessionEvent};
use crate::upload::{self, UploadEvent};
use crate::user::{self, UserEvent};

/// One event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    User(UserEvent),
    Session(SessionEvent),
    Meter(MeterEvent),
    Conversation(ConversationEvent),
    Upload(UploadEvent),
    ApiKey(ApiKeyEvent),
    EmailProbe(EmailProbeEvent),
}

/// Why a stored event is not one of [`Event`]'s.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no aggregate type {0:?}")]
    UnknownAggregate(String),
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
}

impl Event {
    /// Every aggregate type, in the order of [`Event`]'s variants.
    pub const AGGREGATE_TYPES: [&'static str; 7] = [
        user::AGGREGATE_TYPE,
        session::AGGREGATE_TYPE,
        meter::AGGREGATE_TYPE,
        conversation::AGGREGATE_TYPE,
        upload::AGGREGATE_TYPE,
        api_key::AGGREGATE_TYPE,
        email_probe::AGGREGATE_TYPE,
    ];

    /// The event an aggregate of `aggregate_type` stored as `payload` (upcast to the current
    /// version already: the event store does that when it reads).
    pub fn decode(aggregate_type: &str, payload: &serde_json::Value) -> Result<Self, DecodeError> {
        use serde::Deserialize;
        Ok(match aggregate_type {
            user::AGGREGATE_TYPE => Event::User(UserEvent::deserialize(payload)?),
            session::AGGREGATE_TYPE => Event::Session(SessionEvent::deserialize(payload)?),
            meter::AGGREGATE_TYPE => Event::Meter(MeterEvent::deserialize(payload)?),
            conversation::AGGREGATE_TYPE => {
                Event::Conversation(ConversationEvent::deserialize(payload)?)
            }
            upload::AGGREGATE_TYPE => Event::Upload(UploadEvent::deserialize(payload)?),
            api_key::AGGREGATE_TYPE => Event::ApiKey(ApiKeyEvent::deserialize(payload)?),
            email_probe::AGGREGATE_TYPE => {
                Event::EmailProbe(EmailProbeEvent::deserialize(payload)?)
            }
            other => return Err(DecodeError::UnknownAggregate(other.to_owned())),
        })
    }

    /// The aggregate type this event belongs to.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            Event::User(_) => user::AGGREGATE_TYPE,
            Event::Session(_) => session::AGGREGATE_TYPE,
            Event::Meter(_) => meter::AGGREGATE_TYPE,
            Event::Conversation(_) => conversation::AGGREGATE_TYPE,
            Event::Upload(_) => upload::AGGREGATE_TYPE,
            Event::ApiKey(_) => api_key::AGGREGATE_TYPE,
            Event::EmailProbe(_) => email_probe::AGGREGATE_TYPE,
        }
    }

    /// The event's type as the log stores it (`UserRegistered`, ...).
    pub fn event_type(&self) -> String {
        match self {
            Event::User(e) => e.event_type(),
            Event::Session(e) => e.event_type(),
            Event::Meter(e) => e.event_type(),
            Event::Conversation(e) => e.event_type(),
            Event::Upload(e) => e.event_type(),
            Event::ApiKey(e) => e.event_type(),
            Event::EmailProbe(e) => e.event_type(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn every_catalogued_example_decodes_to_its_own_type() {
        let entries = catalog::entries();
        assert!(!entries.is_empty());
        for entry in entries {
            let example: serde_json::Value =
                serde_json::from_str(&entry.example).expect("the example is JSON");
            let event = Event::decode(entry.aggregate_type, &example)
                .unwrap_or_else(|e| panic!("{} {}: {e}", entry.aggregate_type, entry.event_type));
            assert_eq!(event.aggregate_type(), entry.aggregate_type);
            assert_eq!(event.event_type(), entry.event_type);
        }
    }

    #[test]
    fn the_aggregate_types_are_the_catalogues() {
        let mut catalogued: Vec<&str> = catalog::entries()
            .into_iter()
            .map(|e| e.aggregate_type)
            .collect();
        catalogued.dedup();
        assert_eq!(catalogued, Event::AGGREGATE_TYPES);
    }

    #[test]
    fn an_unknown_aggregate_or_payload_is_an_error() {
        let payload = serde_json::json!({"UserReactivated": {}});
        assert!(Event::decode(user::AGGREGATE_TYPE, &payload).is_ok());
        assert!(matches!(
            Event::decode("invoice", &payload),
            Err(DecodeError::UnknownAggregate(t)) if t == "invoice"
        ));
        assert!(matches!(
            Event::decode(session::AGGREGATE_TYPE, &payload),
            Err(DecodeError::Payload(_))
        ));
    }
}
