//! The documents the catalogue renders into: one schema file per event version, the
//! envelope's schema and the readable `docs/EVENT-CATALOG.md`.

use super::*;

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

pub(super) fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A path under `docs/` as a link from `docs/EVENT-CATALOG.md`.
pub(super) fn doc_link(path: &str) -> String {
    path.strip_prefix("docs/").unwrap_or(path).to_owned()
}

/// The anchor GitHub gives a heading of just this word.
pub(super) fn anchor(event_type: &str) -> String {
    event_type.to_lowercase()
}

/// The markdown catalogue.
pub fn render_markdown(entries: &[Entry]) -> String {
    let mut md = String::new();
    let listed = |names: &[&str]| {
        names
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let personal = listed(PERSONAL_FIELDS);
    let secret = listed(SECRET_FIELDS);
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
         - **Secrets' derivatives** ({secret}) are sealed the same\n  \
         way: with the owner's key (so erasure destroys them too), or the system key when no\n  \
         user owns them (API keys); the schemas mark them `\"x-chronicle-sealed\": true` and\n  \
         `\"x-chronicle-secret\": true`. Nothing outside Chronicle needs them, and exports leave\n  \
         them out unless an admin asks (`secrets=keep`). The examples show them before sealing too.\n\
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

pub(super) fn render_entry(e: &Entry) -> String {
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
    let secret = e.secret_fields();
    if !secret.is_empty() {
        let list = secret
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        md.push_str(&format!(
            "| secrets' derivatives | {list}: sealed in the log (`enc:v1:...`) |\n"
        ));
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
                let d = [PERSONAL_SCHEMA_NOTE, SECRET_SCHEMA_NOTE]
                    .iter()
                    .fold(d, |d, note| d.split(note).next().unwrap_or(d))
                    .trim();
                if !d.is_empty() {
                    notes.push(one_line(d));
                }
            }
            if PERSONAL_FIELDS.contains(&name.as_str()) {
                notes.push(SEALED_NOTE.to_owned());
            } else if SECRET_FIELDS.contains(&name.as_str()) {
                notes.push(SECRET_NOTE.to_owned());
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
pub(super) fn field_order(e: &Entry) -> Vec<String> {
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

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A short, readable type: `string (uuid)`, `integer (uint32)`, `string or null`, the values
/// of an enumeration.
pub(super) fn type_label(schema: &Value, defs: &Map<String, Value>) -> String {
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
pub(super) fn collect_values(schema: &Value, out: &mut Vec<String>) {
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
