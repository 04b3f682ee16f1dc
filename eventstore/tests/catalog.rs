//! The event catalogue (`aggregates::catalog`, which cannot depend on this crate) agrees
//! with the read side: every earlier version it lists is upcast to the version it
//! documents as current.

use aggregates::catalog;
use eventstore::upcast::{upcast, UPCASTERS};
use serde_json::Value;

#[test]
fn every_earlier_version_in_the_catalogue_is_upcast_to_the_current_one() {
    for e in catalog::entries() {
        for old in &e.earlier {
            let (version, _) = upcast(&e.event_type, old.version, Value::Null);
            assert_eq!(
                version, e.version,
                "{} {} is catalogued but not upcast to {}",
                e.event_type, old.version, e.version
            );
        }
    }
}

#[test]
fn every_upcaster_ends_at_a_catalogued_current_version_and_is_listed_there() {
    let entries = catalog::entries();
    for step in UPCASTERS {
        let entry = entries
            .iter()
            .find(|e| e.event_type == step.event_type)
            .unwrap_or_else(|| panic!("{} is not catalogued", step.event_type));
        let (version, _) = upcast(step.event_type, step.from_version, Value::Null);
        assert_eq!(version, entry.version, "{}", step.event_type);
        assert!(
            entry.earlier.iter().any(|o| o.version == step.from_version),
            "{} {} is upcast but not listed as an earlier version in the catalogue",
            step.event_type,
            step.from_version
        );
    }
}
