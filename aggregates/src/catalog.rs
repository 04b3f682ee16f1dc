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
use crate::meter::{self, MeterEvent};
use crate::session::{self, SessionEvent};
use crate::upload::{self, UploadEvent};
use crate::user::{self, SecretMethod, UserEvent};
use crate::StreamEnvelope;

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

/// Add to each personal field of the payload that it is sealed in the log.
fn mark_personal(variant: &mut Value, event_type: &str) {
    let Some(props) = variant
        .pointer_mut(&format!("/properties/{event_type}/properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if PERSONAL_FIELDS.contains(&name.as_str()) {
            mark_sealed(prop);
        }
    }
}

/// Say in a property's schema that its string values are sealed.
fn mark_sealed(prop: &mut Value) {
    if let Some(p) = prop.as_object_mut() {
        let note = "Personal data: sealed in the log as `enc:v1:<user id>:<base64>` \
                    (docs/PRIVACY.md).";
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
                mark_sealed(prop);
            }
        }
    }
    canonical(root)
}

// ---------------------------------------------------------------------------------------
// Earlier versions

/// The shapes of earlier versions, frozen: the log may hold them, and every reader upcasts
/// them to the current version (`eventstore::upcast`). Kept for their schemas and for
/// tests that check stored fixtures really are of that version; never used to decide.
pub mod v1 {
    use chrono::{DateTime, Utc};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// `user` events whose 1.0 shape differs from the current one.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub enum UserEvent {
        /// A sign-in with a wrong password (version 1.0: no `reason`).
        LoginFailed {
            /// Failed sign-ins in a row, this one included.
            attempts: u32,
            /// Set when this failure locked the account.
            locked_until: Option<DateTime<Utc>>,
        },
    }
}

fn earlier_versions(aggregate_type: &str, event_type: &str) -> Vec<EarlierVersion> {
    let earlier_schema = |version: &str, description: &str| {
        let (variants, defs) = variant_schemas::<v1::UserEvent>();
        standalone_schema(
            aggregate_type,
            event_type,
            version,
            description,
            variants.get(event_type).cloned().unwrap_or(Value::Null),
            &defs,
        )
    };
    match (aggregate_type, event_type) {
        (user::AGGREGATE_TYPE, "LoginFailed") => vec![EarlierVersion {
            version: "1.0",
            change: "2.0 added the required `reason`; a 1.0 event reads as 2.0 with \
                     `reason: \"wrong_password\"` (1.0 did not record why).",
            schema: earlier_schema(
                "1.0",
                "A sign-in failed (version 1.0, upcast to 2.0 when read).",
            ),
        }],
        _ => vec![],
    }
}

// ---------------------------------------------------------------------------------------
// Descriptions: exhaustive matches, so a new variant does not compile without one.

fn describe_user(e: &UserEvent) -> &'static str {
    match e {
        UserEvent::UserRegistered { .. } => {
            "An account was opened (`password_hash`: argon2id PHC string, or null for an \
             email-first account; never a raw password)."
        }
        UserEvent::DuplicateRegistrationAttempted { .. } => {
            "Someone tried to register with this account's email; the owner is told by mail."
        }
        UserEvent::EmailVerificationRequested { .. } => {
            "A verification mail is due; its link and code are HMACs of `nonce` under the \
             server secret, so the log alone cannot produce them."
        }
        UserEvent::EmailVerificationCodeRejected { .. } => {
            "A wrong verification code; `exhausted` when no more may be tried."
        }
        UserEvent::EmailVerified { .. } => {
            "The email was verified by link, code, or trusted (created verified)."
        }
        UserEvent::FailedLoginsCleared { .. } => {
            "A sign-in after failed ones: the count starts again (a clean sign-in appends \
             nothing here; see `SessionStarted`)."
        }
        UserEvent::LoginFailed { .. } => {
            "A sign-in failed: `reason` is `wrong_password`, or `no_password` for an account \
             without one; `locked_until` is set when this failure locked the account."
        }
        UserEvent::PasswordResetRequested { .. } => {
            "A password reset mail (link and code derived from `nonce`) is due."
        }
        UserEvent::PasswordResetCodeRejected { .. } => {
            "A wrong reset code; `exhausted` when no more may be tried."
        }
        UserEvent::PasswordReset { .. } => {
            "The password was reset with a link or code; every session is revoked."
        }
        UserEvent::PasswordChanged { .. } => {
            "The owner changed the password (giving the current one)."
        }
        UserEvent::ProfileUpdated { .. } => "The profile changed (the new values).",
        UserEvent::AvatarChanged { .. } => "A new avatar image (its type, SHA-256 and size).",
        UserEvent::PlanChanged { .. } => {
            "The account moved to another plan; its limits apply at once."
        }
        UserEvent::UserErased { .. } => {
            "The account was erased: the user's key is deleted, so their sealed values read \
             as \"[erased]\" from now on."
        }
        UserEvent::RoleChanged { .. } => {
            "An admin gave the account another role (`user` or `admin`)."
        }
        UserEvent::UserDeactivated { .. } => {
            "An admin switched the account off: no sign-in until reactivated, and every \
             session is revoked."
        }
        UserEvent::UserReactivated {} => "An admin switched the account back on.",
        UserEvent::EmailChanged { .. } => {
            "An admin moved the account to another (unverified) email; a verification \
             request to it follows."
        }
    }
}

fn describe_session(e: &SessionEvent) -> &'static str {
    match e {
        SessionEvent::SessionStarted { .. } => {
            "A sign-in on a device: the refresh token's HMAC, where from, until when."
        }
        SessionEvent::RefreshTokenRotated { .. } => {
            "The refresh token was exchanged for a new one."
        }
        SessionEvent::RefreshTokenReuseDetected { .. } => {
            "A refresh token this session had rotated away from was presented again."
        }
        SessionEvent::SessionRevoked { .. } => {
            "The session ended: `logout`, `logout_all`, `revoked_by_user`, `password_reset`, \
             `refresh_token_reuse`, `deactivated` or `revoked by an admin`."
        }
    }
}

fn describe_meter(e: &MeterEvent) -> &'static str {
    match e {
        MeterEvent::UsageRecorded { .. } => {
            "Usage counted against the user's daily limit; the aggregate id is \
             `<user id>:<YYYY-MM-DD>` (UTC day)."
        }
    }
}

fn describe_conversation(e: &ConversationEvent) -> &'static str {
    match e {
        ConversationEvent::ConversationStarted { .. } => "A user started a conversation.",
        ConversationEvent::ConversationRenamed { .. } => "The conversation got a new title.",
        ConversationEvent::ConversationDeleted { .. } => "The conversation was deleted.",
        ConversationEvent::MessagePosted { .. } => {
            "A message by the user or the assistant (`in_reply_to`: the user message a reply \
             answers)."
        }
        ConversationEvent::MessageEdited { .. } => "A message's content was changed.",
        ConversationEvent::MessageDeleted { .. } => "A message was deleted.",
        ConversationEvent::AssistantFailed { .. } => {
            "The assistant gave up on a user message (`reason` from a fixed vocabulary); no \
             reply will come."
        }
    }
}

fn describe_upload(e: &UploadEvent) -> &'static str {
    match e {
        UploadEvent::UploadStored { .. } => {
            "A user stored a file (content-addressed by its SHA-256 under the data directory)."
        }
        UploadEvent::UploadDeleted { .. } => "The upload was deleted.",
    }
}

fn describe_api_key(e: &ApiKeyEvent) -> &'static str {
    match e {
        ApiKeyEvent::ApiKeyCreated { .. } => {
            "An admin API key was made; only the SHA-256 of its secret part is kept."
        }
        ApiKeyEvent::ApiKeyRevoked { .. } => "The API key was revoked; it stops working at once.",
    }
}

// ---------------------------------------------------------------------------------------
// Examples: one real instance of every variant.

mod examples {
    use super::*;

    const USER: Uuid = Uuid::from_u128(0x019a8f3e_2b7c_7d11_a1a4_3c2f9e0b6d21);
    const SESSION: Uuid = Uuid::from_u128(0x019a8f41_0c5e_7a2b_8f3d_5e1c9a7b2d40);
    const MESSAGE: Uuid = Uuid::from_u128(0x019a8f44_7d1a_7c3e_9a2b_1f4e6c8d0b52);

    fn at(seconds: i64) -> DateTime<Utc> {
        // 2026-11-22T00:41:12Z and a few seconds after
        DateTime::from_timestamp(1_795_308_072 + seconds, 0).unwrap_or_default()
    }

    fn day() -> NaiveDate {
        at(0).date_naive()
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    const TOKEN_HASH: &str = "03bf0ccf52e2e136815ee5436a7a2e3377e88354f4e3325f05187727553c4768";
    const NONCE: &str = "q7Lw2yYc0m3f8r1TZ4sVnA";

    pub(super) fn user() -> Vec<UserEvent> {
        vec![
            UserEvent::UserRegistered {
                user_id: USER,
                email: "ada@example.com".into(),
                display_name: Some("Ada".into()),
                password_hash: Some(HASH.into()),
                role: user::ROLE_USER.into(),
                plan: "free".into(),
            },
            UserEvent::EmailVerificationRequested {
                email: "ada@example.com".into(),
                nonce: NONCE.into(),
                requested_at: at(0),
            },
            UserEvent::EmailVerificationCodeRejected {
                attempts: 1,
                exhausted: false,
            },
            UserEvent::EmailVerified {
                method: SecretMethod::Code,
                verified_at: at(60),
            },
            UserEvent::DuplicateRegistrationAttempted {
                email: "ada@example.com".into(),
            },
            UserEvent::LoginFailed {
                attempts: 1,
                locked_until: None,
                reason: user::LOGIN_FAILED_WRONG_PASSWORD.into(),
            },
            UserEvent::FailedLoginsCleared {
                session_id: SESSION,
                at: at(120),
            },
            UserEvent::PasswordResetRequested {
                email: "ada@example.com".into(),
                nonce: NONCE.into(),
                requested_at: at(180),
                invitation: false,
            },
            UserEvent::PasswordResetCodeRejected {
                attempts: 2,
                exhausted: false,
            },
            UserEvent::PasswordReset {
                email: "ada@example.com".into(),
                password_hash: HASH.into(),
                method: SecretMethod::Link,
            },
            UserEvent::PasswordChanged {
                email: "ada@example.com".into(),
                password_hash: HASH.into(),
            },
            UserEvent::ProfileUpdated {
                display_name: Some("Ada Lovelace".into()),
                locale: Some("en-GB".into()),
                timezone: Some("Europe/London".into()),
            },
            UserEvent::AvatarChanged {
                content_type: "image/png".into(),
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                size: 48_213,
            },
            UserEvent::PlanChanged {
                plan: "pro".into(),
                previous: "free".into(),
            },
            UserEvent::RoleChanged {
                role: user::ROLE_ADMIN.into(),
                previous: user::ROLE_USER.into(),
            },
            UserEvent::UserDeactivated {
                reason: Some("left the company".into()),
            },
            UserEvent::UserReactivated {},
            UserEvent::EmailChanged {
                email: "ada.lovelace@example.com".into(),
            },
            UserEvent::UserErased {
                requested_by: "user".into(),
            },
        ]
    }

    pub(super) fn session() -> Vec<SessionEvent> {
        vec![
            SessionEvent::SessionStarted {
                user_id: USER,
                email: "ada@example.com".into(),
                refresh_token_hash: TOKEN_HASH.into(),
                device: "Firefox on Linux".into(),
                ip: Some("203.0.113.7".into()),
                user_agent: Some(
                    "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0".into(),
                ),
                started_at: at(120),
                expires_at: at(120 + 30 * 86_400),
            },
            SessionEvent::RefreshTokenRotated {
                refresh_token_hash: TOKEN_HASH.into(),
                rotated_at: at(1_020),
                expires_at: at(1_020 + 30 * 86_400),
            },
            SessionEvent::RefreshTokenReuseDetected {
                presented_at: at(2_000),
            },
            SessionEvent::SessionRevoked {
                reason: session::REVOKED_LOGOUT.into(),
            },
        ]
    }

    pub(super) fn meter() -> Vec<MeterEvent> {
        vec![MeterEvent::UsageRecorded {
            user_id: USER,
            day: day(),
            kind: meter::KIND_MESSAGES.into(),
            amount: 1,
            occurred_at: at(300),
        }]
    }

    pub(super) fn conversation() -> Vec<ConversationEvent> {
        vec![
            ConversationEvent::ConversationStarted {
                owner_id: USER,
                title: "Trip to Lisbon".into(),
            },
            ConversationEvent::ConversationRenamed {
                owner_id: USER,
                title: "Lisbon in May".into(),
            },
            ConversationEvent::ConversationDeleted { owner_id: USER },
            ConversationEvent::MessagePosted {
                owner_id: USER,
                message_id: MESSAGE,
                role: conversation::ROLE_USER.into(),
                content: "Where should we eat?".into(),
                in_reply_to: None,
            },
            ConversationEvent::MessageEdited {
                owner_id: USER,
                message_id: MESSAGE,
                content: "Where should we eat on Sunday?".into(),
            },
            ConversationEvent::MessageDeleted {
                owner_id: USER,
                message_id: MESSAGE,
            },
            ConversationEvent::AssistantFailed {
                owner_id: USER,
                message_id: MESSAGE,
                reason: "tokens limit reached".into(),
            },
        ]
    }

    pub(super) fn upload() -> Vec<UploadEvent> {
        vec![
            UploadEvent::UploadStored {
                owner_id: USER,
                filename: "notes.txt".into(),
                content_type: "text/plain".into(),
                size: 1_024,
                sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
            },
            UploadEvent::UploadDeleted { owner_id: USER },
        ]
    }

    pub(super) fn api_key() -> Vec<ApiKeyEvent> {
        vec![
            ApiKeyEvent::ApiKeyCreated {
                name: "nightly export".into(),
                secret_hash: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
                    .into(),
                created_by: "cli:alice".into(),
                created_at: at(600),
            },
            ApiKeyEvent::ApiKeyRevoked {
                revoked_by: "cli:alice".into(),
                revoked_at: at(90_000),
            },
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Rendering

/// Every generated document: path relative to the workspace root → contents.
pub fn render_files() -> BTreeMap<String, String> {
    let entries = entries();
    let mut files = BTreeMap::new();
    for e in &entries {
        files.insert(e.schema_path(), pretty(&e.schema));
        for old in &e.earlier {
            files.insert(
                schema_path(e.aggregate_type, &e.event_type, old.version),
                pretty(&old.schema),
            );
        }
    }
    files.insert(ENVELOPE_SCHEMA_PATH.to_owned(), pretty(&envelope_schema()));
    files.insert(CATALOG_PATH.to_owned(), render_markdown(&entries));
    files
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A path under `docs/` as a link from `docs/EVENT-CATALOG.md`.
fn doc_link(path: &str) -> String {
    path.strip_prefix("docs/").unwrap_or(path).to_owned()
}

/// The anchor GitHub gives a heading of just this word.
fn anchor(event_type: &str) -> String {
    event_type.to_lowercase()
}

/// The markdown catalogue.
pub fn render_markdown(entries: &[Entry]) -> String {
    let mut md = String::new();
    let personal = PERSONAL_FIELDS
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    md.push_str(&format!(
        "# Event catalogue\n\n\
         <!-- Generated from the Rust event types by `aggregates::catalog`: do not edit by hand.\n     \
         Regenerate with `UPDATE_CATALOG=1 cargo test -p aggregates --test catalog`. -->\n\n\
         Every event Chronicle records, at its current version: what it means, the subject it is\n\
         published on, an example payload and its JSON Schema. This page and `docs/schemas/` are\n\
         generated from the Rust types; a test fails when they no longer match the code\n\
         (`UPDATE_CATALOG=1 cargo test -p aggregates --test catalog` rewrites them).\n\n\
         - How events travel (stream, subjects, headers, ordering) and when an event gets a new\n  \
         version: [EVENTS.md](EVENTS.md) (see \"Versioning\").\n\
         - The envelope every event travels in: [`schemas/envelope.json`](schemas/envelope.json).\n\
         - Each event's schema describes its payload as stored and published, `{{\"<EventType>\": {{fields}}}}`\n  \
         (JSON Schema draft 2020-12), in `schemas/<aggregate>/<EventType>.v<major>.json`.\n\
         - Subjects are `<prefix>.events.<aggregate_type>.<EventType>`, shown with the default\n  \
         prefix `{DEFAULT_SUBJECT_PREFIX}` (`CHRONICLE_SUBJECT_PREFIX`).\n\
         - **Personal fields** ({personal}) are {SEALED_NOTE}: in the log and on\n  \
         the stream their string values read `enc:v1:<user id>:<base64>`, which only Chronicle can\n  \
         open with the owner's key, and never again once the user is erased (PRIVACY.md); the\n  \
         schemas mark them `\"x-chronicle-sealed\": true`. The examples show them in plaintext,\n  \
         as the aggregate writes them.\n\
         - Events of an earlier version still in the log reach every reader (and the stream)\n  \
         upcast to the current one; earlier versions are listed under their event.\n\
         - In the field tables a field that is not *required* may be absent or null; readers\n  \
         must ignore fields they do not know (a new optional field is not a new version).\n\n\
         ## Contents\n\n\
         | aggregate | event | version | subject |\n\
         | --- | --- | --- | --- |\n"
    ));
    for e in entries {
        md.push_str(&format!(
            "| `{}` | [{}](#{}) | {} | `{}` |\n",
            e.aggregate_type,
            e.event_type,
            anchor(&e.event_type),
            e.version,
            e.subject(DEFAULT_SUBJECT_PREFIX)
        ));
    }
    let mut current_aggregate = "";
    for e in entries {
        if e.aggregate_type != current_aggregate {
            current_aggregate = e.aggregate_type;
            md.push_str(&format!("\n## `{current_aggregate}`\n"));
        }
        md.push_str(&render_entry(e));
    }
    md
}

fn render_entry(e: &Entry) -> String {
    let mut md = format!("\n### {}\n\n{}\n\n", e.event_type, e.description);
    md.push_str("| | |\n| --- | --- |\n");
    md.push_str(&format!("| aggregate | `{}` |\n", e.aggregate_type));
    md.push_str(&format!("| event type | `{}` |\n", e.event_type));
    md.push_str(&format!("| version | `{}` |\n", e.version));
    md.push_str(&format!(
        "| subject | `{}` |\n",
        e.subject(DEFAULT_SUBJECT_PREFIX)
    ));
    let path = doc_link(&e.schema_path());
    md.push_str(&format!("| schema | [`{path}`]({path}) |\n"));
    let personal = e.personal_fields();
    if !personal.is_empty() {
        let list = personal
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        md.push_str(&format!("| personal fields | {list}: {SEALED_NOTE} |\n"));
    }

    let fields = e.fields();
    if !fields.is_empty() {
        let defs = e
            .schema
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: BTreeSet<String> = e
            .schema
            .pointer(&format!("/properties/{}/required", e.event_type))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        md.push_str("\n| field | type | required | notes |\n| --- | --- | --- | --- |\n");
        for name in field_order(e) {
            let Some(schema) = fields.get(&name) else {
                continue;
            };
            let mut notes = vec![];
            if let Some(d) = schema.get("description").and_then(Value::as_str) {
                // the schema's note on sealing is said shorter here
                let d = d.split(" Personal data: sealed").next().unwrap_or(d).trim();
                if !d.is_empty() && !d.starts_with("Personal data: sealed") {
                    notes.push(one_line(d));
                }
            }
            if PERSONAL_FIELDS.contains(&name.as_str()) {
                notes.push(SEALED_NOTE.to_owned());
            }
            md.push_str(&format!(
                "| `{name}` | {} | {} | {} |\n",
                type_label(schema, &defs),
                if required.contains(&name) {
                    "yes"
                } else {
                    "no"
                },
                notes.join("; ")
            ));
        }
    }

    md.push_str(&format!(
        "\nExample payload (as stored, personal fields before sealing):\n\n```json\n{}\n```\n",
        e.example
    ));
    for old in &e.earlier {
        let path = doc_link(&schema_path(e.aggregate_type, &e.event_type, old.version));
        md.push_str(&format!(
            "\nEarlier version `{}` ([`{path}`]({path})): {}\n",
            old.version, old.change
        ));
    }
    md
}

/// The payload's fields in declaration order (as the example serialises them), then any
/// the example leaves out, in schema order.
fn field_order(e: &Entry) -> Vec<String> {
    let mut order = vec![];
    // `to_string_pretty` puts each field of the variant on a line of its own, indented by
    // four spaces, in declaration order.
    for line in e.example.lines() {
        if let Some(rest) = line.strip_prefix("    \"") {
            if line.starts_with("     ") {
                continue;
            }
            if let Some((name, _)) = rest.split_once("\":") {
                order.push(name.to_owned());
            }
        }
    }
    for name in e.fields().keys() {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    order
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A short, readable type: `string (uuid)`, `integer (uint32)`, `string or null`, the values
/// of an enumeration.
fn type_label(schema: &Value, defs: &Map<String, Value>) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").unwrap_or(r);
        return match defs.get(name) {
            Some(def) => type_label(def, defs),
            None => name.to_owned(),
        };
    }
    let mut values = vec![];
    collect_values(schema, &mut values);
    if !values.is_empty() {
        return values.join(" \\| ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(all) = schema.get(key).and_then(Value::as_array) {
            return all
                .iter()
                .map(|s| type_label(s, defs))
                .collect::<Vec<_>>()
                .join(" or ");
        }
    }
    let format = schema
        .get("format")
        .and_then(Value::as_str)
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    match schema.get("type") {
        Some(Value::String(t)) => format!("{t}{format}"),
        Some(Value::Array(ts)) => {
            let named: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let (nulls, others): (Vec<&str>, Vec<&str>) = named.iter().partition(|t| **t == "null");
            let mut label = format!("{}{format}", others.join(" or "));
            if !nulls.is_empty() {
                label.push_str(" or null");
            }
            label
        }
        _ => "any".to_owned(),
    }
}

/// The constant values an enumeration schema allows (`enum`, `const`, or a `oneOf` of them).
fn collect_values(schema: &Value, out: &mut Vec<String>) {
    let show = |v: &Value| match v {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    };
    if let Some(all) = schema.get("enum").and_then(Value::as_array) {
        out.extend(all.iter().map(show));
    } else if let Some(c) = schema.get("const") {
        out.push(show(c));
    } else if let Some(all) = schema.get("oneOf").and_then(Value::as_array) {
        let mut inner = vec![];
        for s in all {
            let before = inner.len();
            collect_values(s, &mut inner);
            if inner.len() == before {
                return; // not an enumeration
            }
        }
        out.extend(inner);
    }
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
    fn subjects_use_the_prefix_the_aggregate_and_the_event_type() {
        assert_eq!(
            subject(DEFAULT_SUBJECT_PREFIX, "user", "LoginFailed"),
            "chronicle.events.user.LoginFailed"
        );
    }
}
