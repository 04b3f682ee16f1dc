//! Upcasting: reading events stored at an earlier version as the current version.
//!
//! The log is append-only, so an event whose shape changed stays in the log as it was
//! written; every reader turns it into the current shape with [`upcast`] instead:
//! [`StoredEvent::from_row`](crate::log) and `from_envelope` (history, export, relay,
//! projectors, rebuild) and [`EncryptingRepository`](crate::encrypting_repository)
//! (loading aggregates through cqrs-es). Nothing rewrites the stored row.
//!
//! [`UPCASTERS`] is an ordered list of steps `(event_type, from_version) → to_version`;
//! [`upcast`] applies every step whose event type and version match, in list order, so
//! `1.0 → 2.0` followed by `2.0 → 3.0` takes a 1.0 event to 3.0. A step sees the payload as
//! stored, `{"<EventType>": {fields}}`, with personal values possibly still sealed
//! (`enc:v1:...`): it may add, rename or drop fields, never read a personal value.
//!
//! The rule for when an event needs a new version is in docs/EVENTS.md ("Versioning").

use aggregates::user::LOGIN_FAILED_WRONG_PASSWORD;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// One step: events of `event_type` at `from_version` become `to_version` through `apply`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: &'static str,
    pub to_version: &'static str,
    /// Takes the stored payload (`{"<EventType>": {fields}}`) to the next version's.
    pub apply: fn(Value) -> Value,
}

/// Every upcasting step, oldest first per event type.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "LoginFailed",
    from_version: "1.0",
    to_version: "2.0",
    apply: login_failed_v1_to_v2,
}];

/// `LoginFailed` 1.0 → 2.0: `reason` became required. 1.0 did not record why a sign-in
/// failed; a wrong password is what it counted, so that is the reason it reads with.
fn login_failed_v1_to_v2(payload: Value) -> Value {
    with_body(payload, "LoginFailed", |body| {
        body.entry("reason")
            .or_insert_with(|| Value::String(LOGIN_FAILED_WRONG_PASSWORD.to_owned()));
    })
}

/// Change the fields of a stored payload `{"<event_type>": {fields}}` in place; any other
/// shape is left as it is (the reader's deserialisation will say what is wrong).
pub fn with_body(
    mut payload: Value,
    event_type: &str,
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Value {
    if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
        change(body);
    }
    payload
}

/// Bring a stored event to the current version: the version it ends at and its payload.
/// An event at the current version (or of a type with no upcasters) comes back unchanged.
pub fn upcast(event_type: &str, version: &str, payload: Value) -> (String, Value) {
    upcast_with(UPCASTERS, event_type, version, payload)
}

/// [`upcast`] over a list of steps of one's own (tests).
pub fn upcast_with(
    steps: &[Upcaster],
    event_type: &str,
    version: &str,
    payload: Value,
) -> (String, Value) {
    let mut version = version.to_owned();
    let mut payload = payload;
    for step in steps {
        if step.event_type == event_type && step.from_version == version {
            payload = (step.apply)(payload);
            version = step.to_version.to_owned();
        }
    }
    (version, payload)
}

/// Whether [`upcast`] would change an event of this type and version.
pub fn needs_upcast(event_type: &str, version: &str) -> bool {
    UPCASTERS
        .iter()
        .any(|s| s.event_type == event_type && s.from_version == version)
}

/// [`upcast`] for an event as cqrs-es carries it.
pub fn upcast_serialized(mut event: SerializedEvent) -> SerializedEvent {
    if needs_upcast(&event.event_type, &event.event_version) {
        let payload = std::mem::take(&mut event.payload);
        let (version, payload) = upcast(&event.event_type, &event.event_version, payload);
        event.event_version = version;
        event.payload = payload;
    }
    event
}

/// [`upcast`] as a cqrs-es [`EventUpcaster`], for cqrs-es's own replay paths
/// (`ReplayStream::next`, `QueryReplay::with_upcasters`,
/// `PersistedEventStore::with_upcasters`): the same steps, not a second list.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChronicleUpcaster;

impl EventUpcaster for ChronicleUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        needs_upcast(event_type, event_version)
    }

    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        upcast_serialized(event)
    }
}

/// The upcasters to hand to cqrs-es where it asks for them.
pub fn cqrs_upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(ChronicleUpcaster)]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_v1_login_failed_reads_as_v2_with_wrong_password() {
        let (version, payload) = upcast(
            "LoginFailed",
            "1.0",
            json!({"LoginFailed": {"attempts": 3, "locked_until": null}}),
        );
        assert_eq!(version, "2.0");
        assert_eq!(
            payload,
            json!({"LoginFailed": {"attempts": 3, "locked_until": null, "reason": "wrong_password"}})
        );
    }

    #[test]
    fn current_events_and_other_types_are_left_alone() {
        let v2 =
            json!({"LoginFailed": {"attempts": 1, "locked_until": null, "reason": "no_password"}});
        assert_eq!(
            upcast("LoginFailed", "2.0", v2.clone()),
            ("2.0".to_owned(), v2)
        );
        let other =
            json!({"EmailVerified": {"method": "code", "verified_at": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            upcast("EmailVerified", "1.0", other.clone()),
            ("1.0".to_owned(), other)
        );
        // a shape the step does not expect is passed on untouched
        assert_eq!(
            upcast("LoginFailed", "1.0", json!("odd")),
            ("2.0".to_owned(), json!("odd"))
        );
    }

    #[test]
    fn steps_chain_in_list_order() {
        fn add_a(p: Value) -> Value {
            with_body(p, "E", |b| {
                b.insert("a".into(), json!(1));
            })
        }
        fn rename_a_to_b(p: Value) -> Value {
            with_body(p, "E", |b| {
                if let Some(a) = b.remove("a") {
                    b.insert("b".into(), a);
                }
            })
        }
        let steps = [
            Upcaster {
                event_type: "E",
                from_version: "1.0",
                to_version: "2.0",
                apply: add_a,
            },
            Upcaster {
                event_type: "E",
                from_version: "2.0",
                to_version: "3.0",
                apply: rename_a_to_b,
            },
        ];
        assert_eq!(
            upcast_with(&steps, "E", "1.0", json!({"E": {}})),
            ("3.0".to_owned(), json!({"E": {"b": 1}}))
        );
        assert_eq!(
            upcast_with(&steps, "E", "2.0", json!({"E": {"a": 7}})),
            ("3.0".to_owned(), json!({"E": {"b": 7}}))
        );
        assert_eq!(
            upcast_with(&steps, "E", "3.0", json!({"E": {"b": 7}})),
            ("3.0".to_owned(), json!({"E": {"b": 7}}))
        );
    }

    #[test]
    fn a_step_never_stays_at_its_version() {
        for s in UPCASTERS {
            assert_ne!(s.from_version, s.to_version, "{}", s.event_type);
        }
    }
}
