//! Stored v1 events (fixtures: rows exactly as the log holds them, personal values sealed)
//! still read as today's Rust types once upcast, and `LoginFailed` 1.0 reads as 2.0.
//! Unit level: no database.

use std::path::{Path, PathBuf};

use aggregates::api_key::ApiKeyEvent;
use aggregates::conversation::ConversationEvent;
use aggregates::meter::MeterEvent;
use aggregates::session::SessionEvent;
use aggregates::upload::UploadEvent;
use aggregates::user::{User, UserEvent};
use cqrs_es::persist::{ReplayStream, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use eventstore::upcast::{cqrs_upcasters, upcast, upcast_serialized};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// One row of the `events` table, as stored.
#[derive(Debug, Clone, Deserialize)]
struct Fixture {
    aggregate_type: String,
    aggregate_id: String,
    sequence: usize,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

impl Fixture {
    fn serialized(&self) -> SerializedEvent {
        SerializedEvent::new(
            self.aggregate_id.clone(),
            self.sequence,
            self.aggregate_type.clone(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.payload.clone(),
            self.metadata.clone(),
        )
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// Every fixture, by file name, in name order.
fn fixtures() -> Vec<(String, Fixture)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("the fixture directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).expect("a fixture");
            let fixture: Fixture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, fixture)
        })
        .collect()
}

fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// The event as today's type: its type and version as the type says them.
fn as_current<E: DomainEvent + DeserializeOwned>(
    payload: &Value,
) -> Result<(String, String), String> {
    let event: E = serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
    Ok((event.event_type(), event.event_version()))
}

fn read_as_current(aggregate_type: &str, payload: &Value) -> Result<(String, String), String> {
    match aggregate_type {
        "user" => as_current::<UserEvent>(payload),
        "session" => as_current::<SessionEvent>(payload),
        "meter" => as_current::<MeterEvent>(payload),
        "conversation" => as_current::<ConversationEvent>(payload),
        "upload" => as_current::<UploadEvent>(payload),
        "api_key" => as_current::<ApiKeyEvent>(payload),
        other => Err(format!("unknown aggregate type {other}")),
    }
}

#[test]
fn the_fixtures_are_stored_v1_events_of_every_aggregate() {
    let all = fixtures();
    assert!(all.len() >= 7, "{} fixtures", all.len());
    for (name, f) in &all {
        assert_eq!(f.event_version, "1.0", "{name}");
        let keys: Vec<&String> = f.payload.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [&f.event_type],
            "{name}: stored as {{\"<EventType>\": ...}}"
        );
        assert!(f.sequence >= 1, "{name}");
    }
    let types: std::collections::BTreeSet<&str> =
        all.iter().map(|(_, f)| f.aggregate_type.as_str()).collect();
    for aggregate in [
        "user",
        "session",
        "meter",
        "conversation",
        "upload",
        "api_key",
    ] {
        assert!(types.contains(aggregate), "no fixture of {aggregate}");
    }
    assert!(all.iter().any(|(_, f)| f.event_type == "LoginFailed"));
    // the fixtures hold personal values as the log does: sealed
    let registered = fixture("user.UserRegistered.json");
    let email = registered.payload["UserRegistered"]["email"]
        .as_str()
        .expect("email");
    assert!(email.starts_with("enc:v1:"), "{email}");
}

#[test]
fn every_v1_fixture_deserialises_into_todays_types_after_upcast() {
    for (name, f) in fixtures() {
        let (version, payload) = upcast(&f.event_type, &f.event_version, f.payload.clone());
        let (event_type, current_version) = read_as_current(&f.aggregate_type, &payload)
            .unwrap_or_else(|e| panic!("{name} does not read as today's type after upcast: {e}"));
        assert_eq!(event_type, f.event_type, "{name}");
        assert_eq!(
            version, current_version,
            "{name}: upcast to {version}, but the code is at {current_version}"
        );
    }
}

#[test]
fn login_failed_v1_becomes_v2_with_reason_wrong_password() {
    for name in ["user.LoginFailed.json", "user.LoginFailed.locked.json"] {
        let f = fixture(name);
        // as stored it is a real 1.0 event: the 1.0 shape, and not today's
        serde_json::from_value::<aggregates::catalog::v1::UserEvent>(f.payload.clone())
            .unwrap_or_else(|e| panic!("{name} is not a 1.0 LoginFailed: {e}"));
        assert!(
            serde_json::from_value::<UserEvent>(f.payload.clone()).is_err(),
            "{name}: a 1.0 LoginFailed must not read as 2.0 without upcasting"
        );

        let (version, payload) = upcast(&f.event_type, &f.event_version, f.payload.clone());
        assert_eq!(version, "2.0");
        let before = &f.payload["LoginFailed"];
        let event: UserEvent = serde_json::from_value(payload).expect("a 2.0 LoginFailed");
        match event {
            UserEvent::LoginFailed {
                attempts,
                locked_until,
                reason,
            } => {
                assert_eq!(reason, "wrong_password");
                assert_eq!(json!(attempts), before["attempts"]);
                assert_eq!(
                    locked_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                    before["locked_until"].as_str().map(str::to_owned)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn upcasting_twice_changes_nothing_more() {
    for (name, f) in fixtures() {
        let once = upcast(&f.event_type, &f.event_version, f.payload.clone());
        let twice = upcast(&f.event_type, &once.0, once.1.clone());
        assert_eq!(once, twice, "{name}");
    }
}

#[test]
fn a_user_loads_from_stored_v1_events_the_way_the_repository_hands_them_to_cqrs_es() {
    // the user's first three events as stored: registered, verified, one failed sign-in (1.0)
    let mut user = User::default();
    for name in [
        "user.UserRegistered.json",
        "user.EmailVerified.json",
        "user.LoginFailed.json",
    ] {
        let serialized = upcast_serialized(fixture(name).serialized());
        let envelope = EventEnvelope::<User>::try_from(serialized)
            .unwrap_or_else(|e| panic!("{name}: cqrs-es cannot read it: {e}"));
        user.apply(envelope.payload);
    }
    assert!(user.registered && user.email_verified);
    assert_eq!(user.failed_logins, 1, "the 1.0 LoginFailed counted");

    // without upcasting cqrs-es refuses the 1.0 event
    assert!(
        EventEnvelope::<User>::try_from(fixture("user.LoginFailed.json").serialized()).is_err()
    );
}

#[tokio::test]
async fn cqrs_es_replays_upcast_through_the_same_function() {
    let (mut feed, mut stream) = ReplayStream::new(4);
    feed.push(Ok(fixture("user.LoginFailed.locked.json").serialized()))
        .await
        .expect("pushed");
    drop(feed);
    let envelope = stream
        .next::<User>(&cqrs_upcasters())
        .await
        .expect("an event")
        .expect("upcast and read");
    match envelope.payload {
        UserEvent::LoginFailed {
            attempts, reason, ..
        } => {
            assert_eq!(attempts, 5);
            assert_eq!(reason, "wrong_password");
        }
        other => panic!("{other:?}"),
    }
}
