//! The event catalogue, generated from the Rust event types: one entry per event type with
//! its aggregate, current version, a one-line description, an example payload (a real
//! instance of the variant, serialised as stored: `{"<EventType>": {fields}}`) and the JSON
//! Schema of that stored form (derived with `schemars`).
//!
//! [`render_files`] turns it into the documents under `docs/`: one schema per event
//! (`docs/schemas/<aggregate>/<EventType>.v<major>.json`, earlier versions too), the
//! envelope's schema (`docs/schemas/envelope.json`) and the readable catalogue
//! (`docs/EVENT-CATALOG.md`). The test `aggregates/tests/catalog.rs` compares them with the
//! files checked in, so they cannot drift from the code; `UPDATE_CATALOG=1 cargo test -p
//! aggregates --test catalog` rewrites them.
//!
//! Every variant of every event enum must have an entry: each enum's descriptions are an
//! exhaustive `match` (a new variant does not compile without one), and [`problems`] checks
//! that the examples cover exactly the variants the enum's schema lists.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::api_key::{self, ApiKeyEvent};
use crate::conversation::{self, ConversationEvent};
use crate::email_probe::{self, EmailProbeEvent};
use crate::meter::{self, MeterEvent};
use crate::session::{self, SessionEvent};
use crate::upload::{self, UploadEvent};
use crate::user::{self, SecretMethod, UserEvent};
use crate::StreamEnvelope;

mod content;
mod render;

pub use content::v1;
use content::*;
use render::field_order;
pub use render::{render_files, render_markdown};

/// The subject prefix subjects are shown with (`CHRONICLE_SUBJECT_PREFIX`'s default).
pub const DEFAULT_SUBJECT_PREFIX: &str = "chronicle";

/// The JSON Schema dialect of every generated schema.
pub const SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Payload fields that hold personal data: their string values are sealed in the log
/// (`enc:v1:<user id>:<base64>`) by `eventstore::personal`, which uses this list.
pub const PERSONAL_FIELDS: &[&str] = &[
    "email",
    "display_name",
    "locale",
    "timezone",
    "device",
    "ip",
    "user_agent",
    "sha256",
    "title",
    "content",
    "filename",
];

/// Metadata keys that hold personal data, sealed the same way.
pub const PERSONAL_METADATA: &[&str] = &["ip", "user_agent"];

/// What the catalogue says of a personal field.
pub const SEALED_NOTE: &str = "sealed in the log (`enc:v1:...`)";

/// Payload fields that hold secrets' derivatives: argon2id password hashes, HMACs of
/// refresh tokens, the nonces one-time links and codes are derived from, the SHA-256 of an
/// API key's secret. Not personal data, but whoever holds them can attack the secret
/// offline (or, with the server secret, make links), so they are sealed like personal
/// data: with the owner's key (erasure destroys them too), or the system key when no user
/// owns them (API keys). `eventstore::personal` seals them; exports and histories leave
/// them out unless an admin asks (`secrets=keep`).
pub const SECRET_FIELDS: &[&str] = &[
    "password_hash",
    "refresh_token_hash",
    "nonce",
    "secret_hash",
];

/// What the catalogue says of a secret's derivative.
pub const SECRET_NOTE: &str =
    "secret's derivative: sealed in the log (`enc:v1:...`), left out of exports by default";

/// Where the generated documents live, relative to the workspace root.
pub const CATALOG_PATH: &str = "docs/EVENT-CATALOG.md";
pub const SCHEMAS_DIR: &str = "docs/schemas";
pub const ENVELOPE_SCHEMA_PATH: &str = "docs/schemas/envelope.json";

/// One event type at its current version.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub aggregate_type: &'static str,
    pub event_type: String,
    /// The current version (`DomainEvent::event_version`), e.g. `2.0`.
    pub version: String,
    pub description: &'static str,
    /// The example instance serialised as stored (`{"<EventType>": {fields}}`), pretty,
    /// fields in declaration order.
    pub example: String,
    /// The JSON Schema of the stored form.
    pub schema: Value,
    /// Earlier versions still in the log, oldest first (read as this version through
    /// `eventstore::upcast`).
    pub earlier: Vec<EarlierVersion>,
}

/// A version of an event that the log may still hold and readers upcast.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierVersion {
    pub version: &'static str,
    /// What the next version changed, and how events of this one read.
    pub change: &'static str,
    pub schema: Value,
}

/// The major part of a version (`2.0` → `2`), as in schema file names.
pub fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// The path of an event's schema relative to the workspace root.
pub fn schema_path(aggregate_type: &str, event_type: &str, version: &str) -> String {
    format!(
        "{SCHEMAS_DIR}/{aggregate_type}/{event_type}.v{}.json",
        major(version)
    )
}

/// The NATS subject an event is published on.
pub fn subject(prefix: &str, aggregate_type: &str, event_type: &str) -> String {
    format!("{prefix}.events.{aggregate_type}.{event_type}")
}

impl Entry {
    pub fn schema_path(&self) -> String {
        schema_path(self.aggregate_type, &self.event_type, &self.version)
    }

    pub fn subject(&self, prefix: &str) -> String {
        subject(prefix, self.aggregate_type, &self.event_type)
    }

    /// The example as a JSON value.
    pub fn example_value(&self) -> Value {
        serde_json::from_str(&self.example).unwrap_or(Value::Null)
    }

    /// The payload's fields (the inner object's properties), as the schema has them.
    pub fn fields(&self) -> Map<String, Value> {
        inner_properties(&self.schema, &self.event_type)
    }

    /// The payload fields holding personal data (sealed in the log), in declaration order.
    pub fn personal_fields(&self) -> Vec<String> {
        field_order(self)
            .into_iter()
            .filter(|k| PERSONAL_FIELDS.contains(&k.as_str()))
            .collect()
    }

    /// The payload fields holding secrets' derivatives (sealed in the log), in declaration
    /// order.
    pub fn secret_fields(&self) -> Vec<String> {
        field_order(self)
            .into_iter()
            .filter(|k| SECRET_FIELDS.contains(&k.as_str()))
            .collect()
    }
}

/// The events of one aggregate type.
struct Group {
    aggregate_type: &'static str,
    /// The variants the enum's schema lists (derived from the enum itself).
    variants: BTreeSet<String>,
    entries: Vec<Entry>,
}

fn groups() -> Vec<Group> {
    vec![
        group(user::AGGREGATE_TYPE, examples::user(), describe_user),
        group(
            session::AGGREGATE_TYPE,
            examples::session(),
            describe_session,
        ),
        group(meter::AGGREGATE_TYPE, examples::meter(), describe_meter),
        group(
            conversation::AGGREGATE_TYPE,
            examples::conversation(),
            describe_conversation,
        ),
        group(upload::AGGREGATE_TYPE, examples::upload(), describe_upload),
        group(
            api_key::AGGREGATE_TYPE,
            examples::api_key(),
            describe_api_key,
        ),
        group(
            email_probe::AGGREGATE_TYPE,
            examples::email_probe(),
            describe_email_probe,
        ),
    ]
}

/// Every event type at its current version, by aggregate in catalogue order.
pub fn entries() -> Vec<Entry> {
    groups().into_iter().flat_map(|g| g.entries).collect()
}

/// What is wrong with the catalogue (empty when nothing): variants without an entry,
/// entries without a variant, duplicate event types, examples that are not in the stored
/// form or do not fit their schema.
pub fn problems() -> Vec<String> {
    let mut out = vec![];
    let mut seen = BTreeSet::new();
    for g in groups() {
        let listed: BTreeSet<String> = g.entries.iter().map(|e| e.event_type.clone()).collect();
        for missing in g.variants.difference(&listed) {
            out.push(format!(
                "{}: the variant {missing} has no catalogue entry (add an example)",
                g.aggregate_type
            ));
        }
        for extra in listed.difference(&g.variants) {
            out.push(format!(
                "{}: the entry {extra} is no variant of the enum",
                g.aggregate_type
            ));
        }
        for e in &g.entries {
            if !seen.insert(e.event_type.clone()) {
                out.push(format!("{}: listed more than once", e.event_type));
            }
            out.extend(
                example_problems(e)
                    .into_iter()
                    .map(|p| format!("{}.{}: {p}", e.aggregate_type, e.event_type)),
            );
        }
    }
    out
}

/// A light check of an example against its schema: one key (the event type), every
/// required field present, no field the schema does not know.
fn example_problems(e: &Entry) -> Vec<String> {
    let mut out = vec![];
    let example = e.example_value();
    let Some(outer) = example.as_object() else {
        return vec!["the example is not an object".into()];
    };
    if outer.len() != 1 || !outer.contains_key(&e.event_type) {
        out.push(format!(
            "the example is not stored as {{\"{}\": ...}}",
            e.event_type
        ));
        return out;
    }
    let body = outer
        .get(&e.event_type)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fields = e.fields();
    for key in body.keys() {
        if !fields.contains_key(key) {
            out.push(format!("the example has {key}, which the schema lacks"));
        }
    }
    let inner = e
        .schema
        .pointer(&format!("/properties/{}", e.event_type))
        .cloned()
        .unwrap_or(Value::Null);
    for required in inner
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !body.contains_key(required) {
            out.push(format!("the example lacks the required {required}"));
        }
    }
    out
}

fn group<E>(
    aggregate_type: &'static str,
    examples: Vec<E>,
    describe: fn(&E) -> &'static str,
) -> Group
where
    E: DomainEvent + Serialize + JsonSchema,
{
    let (variants, defs) = variant_schemas::<E>();
    let entries = examples
        .iter()
        .map(|example| {
            let event_type = example.event_type();
            let version = example.event_version();
            let description = describe(example);
            let variant = variants.get(&event_type).cloned().unwrap_or(Value::Null);
            Entry {
                aggregate_type,
                schema: standalone_schema(
                    aggregate_type,
                    &event_type,
                    &version,
                    description,
                    variant,
                    &defs,
                ),
                earlier: earlier_versions(aggregate_type, &event_type),
                example: serde_json::to_string_pretty(example).unwrap_or_default(),
                event_type,
                version,
                description,
            }
        })
        .collect();
    Group {
        aggregate_type,
        variants: variants.keys().cloned().collect(),
        entries,
    }
}

/// The schema of each variant of an externally tagged enum (`{"Variant": {...}}`), by
/// variant name, and the definitions they may refer to.
fn variant_schemas<E: JsonSchema>() -> (BTreeMap<String, Value>, Map<String, Value>) {
    let root = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<E>()
        .to_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let variants: Vec<Value> = match root.get("oneOf").and_then(Value::as_array) {
        Some(all) => all.clone(),
        // an enum of one variant is that variant's schema
        None => {
            let mut only = root.as_object().cloned().unwrap_or_default();
            for k in ["$schema", "$defs", "title"] {
                only.remove(k);
            }
            vec![Value::Object(only)]
        }
    };
    let by_name = variants
        .into_iter()
        .filter_map(|v| {
            let name = v
                .get("properties")
                .and_then(Value::as_object)
                .filter(|p| p.len() == 1)
                .and_then(|p| p.keys().next().cloned())?;
            Some((name, v))
        })
        .collect();
    (by_name, defs)
}

/// A variant's schema as a document of its own: dialect, title, description, the variant,
/// the definitions it refers to; personal fields marked.
fn standalone_schema(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    description: &str,
    variant: Value,
    defs: &Map<String, Value>,
) -> Value {
    let mut variant = variant;
    mark_personal(&mut variant, event_type);
    let mut out = Map::new();
    out.insert("$schema".into(), json!(SCHEMA_DIALECT));
    out.insert(
        "title".into(),
        json!(format!("{aggregate_type}.{event_type} v{version}")),
    );
    out.insert(
        "description".into(),
        json!(format!(
            "{description} Stored as {{\"{event_type}\": {{fields}}}}; published on {}.",
            subject(DEFAULT_SUBJECT_PREFIX, aggregate_type, event_type)
        )),
    );
    for (k, v) in variant.as_object().cloned().unwrap_or_default() {
        if k != "description" {
            out.insert(k, v);
        }
    }
    let used = referenced_defs(&Value::Object(out.clone()), defs);
    if !used.is_empty() {
        out.insert("$defs".into(), Value::Object(used));
    }
    canonical(Value::Object(out))
}

/// The schema's note on a personal field.
pub(crate) const PERSONAL_SCHEMA_NOTE: &str =
    "Personal data: sealed in the log as `enc:v1:<user id>:<base64>` (docs/PRIVACY.md).";

/// The schema's note on a secret's derivative.
pub(crate) const SECRET_SCHEMA_NOTE: &str = "Secret's derivative: sealed in the log as \
    `enc:v1:<key id>:<base64>` with the owner's key, or the system key when no user owns it \
    (docs/PRIVACY.md).";

/// Add to each personal field and each secret's derivative of the payload that it is
/// sealed in the log.
fn mark_personal(variant: &mut Value, event_type: &str) {
    let Some(props) = variant
        .pointer_mut(&format!("/properties/{event_type}/properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if PERSONAL_FIELDS.contains(&name.as_str()) {
            mark_sealed(prop, PERSONAL_SCHEMA_NOTE);
        } else if SECRET_FIELDS.contains(&name.as_str()) {
            mark_sealed(prop, SECRET_SCHEMA_NOTE);
            // consumers can tell a secret's derivative (never needed outside Chronicle)
            // from personal data (opened for the owner and admins)
            if let Some(p) = prop.as_object_mut() {
                p.insert("x-chronicle-secret".into(), json!(true));
            }
        }
    }
}

/// Say in a property's schema that its string values are sealed.
fn mark_sealed(prop: &mut Value, note: &str) {
    if let Some(p) = prop.as_object_mut() {
        let description = match p.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d} {note}"),
            None => note.to_owned(),
        };
        p.insert("description".into(), json!(description));
        p.insert("x-chronicle-sealed".into(), json!(true));
    }
}

/// The definitions a schema refers to (`#/$defs/Name`), transitively.
fn referenced_defs(schema: &Value, defs: &Map<String, Value>) -> Map<String, Value> {
    fn refs(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix("#/$defs/") {
                        out.insert(name.to_owned());
                    }
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut wanted = BTreeSet::new();
    refs(schema, &mut wanted);
    let mut used = Map::new();
    while let Some(name) = wanted.iter().find(|n| !used.contains_key(*n)).cloned() {
        match defs.get(&name) {
            Some(def) => {
                refs(def, &mut wanted);
                used.insert(name, def.clone());
            }
            None => {
                wanted.remove(&name);
            }
        }
    }
    used
}

/// The same value with every object's keys in sorted order (whatever serde_json's map
/// keeps), so the generated files do not depend on its features.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let sorted: BTreeMap<String, Value> =
                o.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn inner_properties(schema: &Value, event_type: &str) -> Map<String, Value> {
    schema
        .pointer(&format!("/properties/{event_type}/properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The schema of the envelope every event travels in on NATS.
pub fn envelope_schema() -> Value {
    let mut root = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<StreamEnvelope>()
        .to_value();
    if let Some(o) = root.as_object_mut() {
        o.insert("title".into(), json!("Chronicle stream envelope"));
    }
    if let Some(props) = root
        .pointer_mut("/$defs/EventMetadata/properties")
        .and_then(Value::as_object_mut)
    {
        for (name, prop) in props.iter_mut() {
            if PERSONAL_METADATA.contains(&name.as_str()) {
                mark_sealed(prop, PERSONAL_SCHEMA_NOTE);
            }
        }
    }
    canonical(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_variant_and_its_examples_fit() {
        assert_eq!(problems(), Vec::<String>::new());
    }

    #[test]
    fn login_failed_is_at_version_2_with_version_1_listed() {
        let entries = entries();
        let e = entries
            .iter()
            .find(|e| e.event_type == "LoginFailed")
            .cloned();
        let Some(e) = e else {
            panic!("LoginFailed is catalogued");
        };
        assert_eq!(e.version, "2.0");
        assert_eq!(e.schema_path(), "docs/schemas/user/LoginFailed.v2.json");
        assert_eq!(e.earlier.len(), 1);
        assert!(e.fields().contains_key("reason"));
        assert!(!inner_properties(&e.earlier[0].schema, "LoginFailed").contains_key("reason"));
    }

    #[test]
    fn personal_fields_are_marked_sealed() {
        let entries = entries();
        let registered = entries.iter().find(|e| e.event_type == "UserRegistered");
        let Some(registered) = registered else {
            panic!("UserRegistered is catalogued");
        };
        assert_eq!(registered.personal_fields(), ["email", "display_name"]);
        assert_eq!(
            registered.fields()["email"]["x-chronicle-sealed"],
            json!(true)
        );
        assert!(registered.fields()["user_id"]
            .get("x-chronicle-sealed")
            .is_none());
    }

    #[test]
    fn secrets_derivatives_are_marked_sealed_and_secret() {
        let entries = entries();
        let find = |t: &str| entries.iter().find(|e| e.event_type == t).cloned();
        let (Some(registered), Some(rotated), Some(created)) = (
            find("UserRegistered"),
            find("RefreshTokenRotated"),
            find("ApiKeyCreated"),
        ) else {
            panic!("the events are catalogued");
        };
        assert_eq!(registered.secret_fields(), ["password_hash"]);
        assert_eq!(rotated.secret_fields(), ["refresh_token_hash"]);
        assert_eq!(created.secret_fields(), ["secret_hash"]);
        for (e, field) in [
            (&registered, "password_hash"),
            (&rotated, "refresh_token_hash"),
            (&created, "secret_hash"),
        ] {
            assert_eq!(e.fields()[field]["x-chronicle-sealed"], json!(true));
            assert_eq!(e.fields()[field]["x-chronicle-secret"], json!(true));
        }
        // personal data is not marked secret (exports open it by default)
        assert!(registered.fields()["email"]
            .get("x-chronicle-secret")
            .is_none());
        let nonces: Vec<String> = entries
            .iter()
            .filter(|e| e.fields().contains_key("nonce"))
            .map(|e| e.event_type.clone())
            .collect();
        assert!(!nonces.is_empty());
        assert!(entries
            .iter()
            .filter(|e| nonces.contains(&e.event_type))
            .all(|e| e.secret_fields().contains(&"nonce".to_owned())));
    }

    #[test]
    fn subjects_use_the_prefix_the_aggregate_and_the_event_type() {
        assert_eq!(
            subject(DEFAULT_SUBJECT_PREFIX, "user", "LoginFailed"),
            "chronicle.events.user.LoginFailed"
        );
    }
}
