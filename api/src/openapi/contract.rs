//! The contract pass: what every operation has in common, added to the document utoipa
//! generates from the handlers, so that each handler's annotation says only what is its own.
//!
//! One rule per concern, applied by method, security and the operation's own declarations:
//! - every 2xx JSON answer is wrapped in its envelope (`Envelope_<Data>`, one component per
//!   data schema), every 4xx/5xx answer is the error envelope (`ErrorBody`);
//! - the statuses an operation's extractors and middleware can answer are added: the
//!   control-character check and 500 everywhere, 503 wherever the database is touched,
//!   401/403 where a caller must sign in, 400/413/415/422 where a body is read, 404 where a
//!   path names something, 409 and the `Idempotency-Key` on every POST, 400/503 and
//!   `X-Min-Position` on the reads that honour it, 429 where a rate limit applies;
//! - the request and response headers (`X-Request-Id`, `X-Position`, `Retry-After`,
//!   `Idempotent-Replayed`, `X-Projections-Lagging`);
//! - the access cookie beside bearer tokens;
//! - every request string that has no pattern, format or enumeration of its own refuses the
//!   control characters `clean_input` refuses.
//!
//! It works on the JSON form of the document: utoipa's types do not round-trip every schema
//! (an untagged enum reads `oneOf` back as a plain object), and the document is served as
//! JSON anyway.

use serde_json::{json, Map, Value};

use crate::auth::cookies;
use crate::error::ERROR_KINDS;
use crate::idempotency::MAX_KEY_LEN;

/// Characters no string may hold (`aggregates::text::is_forbidden`).
pub const NO_CONTROLS: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";
/// A one-line string (`aggregates::text::is_forbidden_in_line`): names, titles, emails.
pub const ONE_LINE: &str = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$";
/// A one-line string that is not blank (`aggregates` trims names and titles and refuses
/// what is left empty): one character that is neither white space nor a control.
pub const ONE_LINE_NOT_BLANK: &str = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029]*[^\s\u0000-\u001F\u007F-\u009F\u2028\u2029][^\u0000-\u001F\u007F-\u009F\u2028\u2029]*$";
/// A log cursor, as `data.position` and `X-Position` carry it.
pub const CURSOR: &str = "^[0-9a-f]{16}-[0-9a-f]{16}$";

/// GETs whose handler waits for its read models to reach `X-Min-Position`.
/// Operations that never reach PostgreSQL (no 503 `unavailable`).
const NO_DATABASE: &[&str] = &["health_live", "list_plans"];
/// Operations whose 400 is their own HTML page, not the error envelope (the verification
/// link, opened in a browser: "Link expired" / "Link not valid").
const HTML_ON_400: &[&str] = &["follow_verification_link"];
/// Request bodies that say "send either `token`, or `email` and `code`" (the handlers
/// refuse anything else with 422).
const TOKEN_OR_EMAIL_AND_CODE: &[&str] = &["VerifyEmailRequest", "ResetPasswordRequest"];
/// Health reports answer 503 with the report itself, not an error envelope.
const REPORT_ON_503: &[&str] = &["health_ready", "health_detailed"];
/// Anonymous email endpoints: the same answer whether or not the email has an account, so
/// no log position (docs/ACCOUNTS.md, "Enumeration").
const NO_POSITION: &[&str] = &["register", "resend_verification", "forgot_password"];
/// Operations behind a per-IP or per-account rate limit.
const RATE_LIMITED: &[&str] = &[
    "register",
    "resend_verification",
    "verify_email",
    "login",
    "refresh_tokens",
    "forgot_password",
    "reset_password",
    "get_email_status",
];

/// The stable kinds each error status carries.
fn kinds_of(status: u16) -> &'static [&'static str] {
    match status {
        400 => &[
            "validation",
            "token_invalid",
            "token_expired",
            "bad_request",
        ],
        401 => &[
            "unauthorized",
            "token_invalid",
            "token_expired",
            "invalid_credentials",
        ],
        402 => &["upgrade_required"],
        403 => &["forbidden", "email_not_verified", "account_disabled"],
        404 => &["not_found"],
        405 => &["method_not_allowed"],
        408 => &["timeout"],
        409 => &["conflict"],
        413 => &["payload_too_large"],
        415 => &["unsupported_media_type"],
        422 => &["validation"],
        423 => &["account_locked"],
        429 => &["rate_limited"],
        503 => &["unavailable", "not_caught_up"],
        _ => &["internal"],
    }
}

fn default_description(status: u16) -> String {
    let what = match status {
        400 => "The request could not be read (malformed JSON, a bad header or link)",
        401 => "Not signed in, or the credentials or token are not valid",
        402 => "A plan limit is reached (`details` says which)",
        403 => "Signed in but not allowed",
        404 => "No such resource (or not yours)",
        409 => "A concurrent change won, or a request with this Idempotency-Key is still running; try again",
        413 => "The body is too large",
        415 => "The body's content type is not accepted",
        422 => "A field is not acceptable (`fields` names it), or a value holds control characters",
        423 => "Too many failed sign-ins; try again after Retry-After",
        429 => "Too many requests; try again after Retry-After",
        500 => "An unexpected failure (nothing more is said)",
        503 => "A dependency is briefly unavailable, or the read models have not reached X-Min-Position; try again after Retry-After",
        _ => "An error",
    };
    let kinds: Vec<String> = kinds_of(status).iter().map(|k| format!("`{k}`")).collect();
    format!("{what}. `error`: {}", kinds.join(", "))
}

fn error_ref() -> Value {
    json!({"$ref": "#/components/schemas/ErrorBody"})
}

fn header(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

fn component_ref(kind: &str, name: &str) -> Value {
    json!({"$ref": format!("#/components/{kind}/{name}")})
}

/// The shared request headers, referred to from every operation that takes them.
fn shared_parameters() -> Value {
    json!({
        "XMinPosition": {
            "name": "X-Min-Position", "in": "header", "required": false,
            "description": "Serve read models that have reached this log cursor (a command's \
                            `data.position`); waits a bounded time, then 503 `not_caught_up`",
            "schema": {"type": "string", "pattern": CURSOR},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A retry with the same key (for 24 hours) gets the first answer back, \
                            with `Idempotent-Replayed: true`, instead of running the command again",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "pattern": "^[!-~]+$"},
        },
    })
}

/// The shared response headers.
fn shared_headers() -> Value {
    json!({
        "XRequestId": header(
            "This request's id: the request's own `X-Request-Id` when it sent one, else a new UUID \
             (recorded with every event the request causes)",
            json!({"type": "string"}),
        ),
        "RetryAfter": header("Seconds to wait before trying again", json!({"type": "integer", "minimum": 0})),
        "IdempotentReplayed": header(
            "`true` when this is the stored answer to an earlier request with the same Idempotency-Key",
            json!({"type": "string", "enum": ["true"]}),
        ),
        "XPosition": header(
            "The log cursor of the command's last event (as `data.position`); send it back as X-Min-Position",
            json!({"type": "string", "pattern": CURSOR}),
        ),
        "XProjectionsLagging": header(
            "Read models (comma-separated) that had not reached the command's events when it answered",
            json!({"type": "string"}),
        ),
    })
}

/// The whole pass.
pub fn apply(doc: &mut Value) {
    let mut envelopes = Map::new();
    let mut request_schemas = vec![];
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if let Some(op) = op.as_object_mut() {
                    operation(path, method, op, &mut envelopes, &mut request_schemas);
                }
            }
        }
    }
    let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) else {
        return;
    };
    let schemas = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(schemas) = schemas {
        let mut seen = vec![];
        for schema in request_schemas.iter_mut() {
            refuse_controls(schema, schemas, &mut seen);
        }
        error_body(schemas);
        token_or_email_and_code(schemas);
        schemas.extend(envelopes);
    }
    security_schemes(components);
    components.insert("parameters".into(), shared_parameters());
    components.insert("headers".into(), shared_headers());
}

fn operation(
    path: &str,
    method: &str,
    op: &mut Map<String, Value>,
    envelopes: &mut Map<String, Value>,
    request_schemas: &mut Vec<Value>,
) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let id = id.as_str();
    let security = op.get("security").cloned().unwrap_or(json!([]));
    let has = |scheme: &str| {
        security
            .as_array()
            .is_some_and(|alts| alts.iter().any(|a| a.get(scheme).is_some()))
    };
    let (bearer, admin) = (has("bearer"), has("admin_key"));
    if bearer {
        let mut alternatives = security.as_array().cloned().unwrap_or_default();
        alternatives.insert(1, json!({"access_cookie": []}));
        op.insert("security".into(), Value::Array(alternatives));
    }
    let post = method == "post";
    let get = method == "get";

    // request body: its schemas get the control-character rule; its extractor its statuses
    let mut body_json = false;
    let mut body_multipart = false;
    if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
        optional_body(body);
    }
    if let Some(content) = op
        .get_mut("requestBody")
        .and_then(|b| b.get_mut("content"))
        .and_then(Value::as_object_mut)
    {
        body_json = content.contains_key("application/json");
        body_multipart = content.contains_key("multipart/form-data");
        for media in content.values_mut() {
            if let Some(schema) = media.get_mut("schema") {
                request_schemas.push(schema.clone());
                let mut none = Map::new();
                refuse_controls(schema, &mut none, &mut vec![]);
            }
        }
    }

    // parameters
    let params = op
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut params: Vec<Value> = params
        .into_iter()
        .filter(|p| p["name"] != "X-Min-Position")
        .collect();
    let has_path = params.iter().any(|p| p["in"] == "path");
    for p in params.iter_mut() {
        if let Some(schema) = p.get_mut("schema") {
            // a parameter is absent or a string: utoipa's `Option<T>` says `null` too, which a
            // header or query string cannot carry (a client would send the text "null")
            not_null(schema);
            refuse_controls(schema, &mut Map::new(), &mut vec![]);
        }
    }
    // every GET of the API honours X-Min-Position (`read_your_writes::min_position`)
    let reads_at_position = get && crate::routes::read_your_writes::honours_min_position(path);
    if reads_at_position {
        params.push(component_ref("parameters", "XMinPosition"));
    }
    if post {
        params.push(component_ref("parameters", "IdempotencyKey"));
    }
    // `X-Request-Id` is not a request parameter: the server takes any value (it is echoed
    // or replaced, never refused), so the document cannot say what a wrong one is; the
    // answer's header (components/headers/XRequestId) says that a client may send one.
    op.insert("parameters".into(), Value::Array(params));

    // the statuses this operation can answer
    // 422: a control character in the path, a query parameter or a header (and a bad query
    // parameter); 500: anything unexpected
    let mut statuses: Vec<u16> = vec![422, 500];
    if !NO_DATABASE.contains(&id) {
        statuses.push(503);
    }
    if bearer || admin {
        statuses.extend([401, 403]);
    }
    if body_json {
        statuses.extend([400, 413, 415]);
    }
    if body_multipart {
        statuses.extend([400, 413, 415]);
    }
    if has_path {
        statuses.push(404);
    }
    if post {
        // a malformed Idempotency-Key; a key still running
        statuses.extend([400, 409]);
    }
    if !get && !post && (bearer || admin) {
        // a command that lost its race on every retry
        statuses.push(409);
    }
    if reads_at_position {
        statuses.push(400);
    }
    if RATE_LIMITED.contains(&id) {
        statuses.push(429);
    }

    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    sse_events(responses);
    for status in statuses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": default_description(status)}));
    }
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().unwrap_or(0);
        let Some(response) = response.as_object_mut() else {
            continue;
        };
        let headers = response
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(headers) = headers {
            headers.insert(
                "X-Request-Id".into(),
                component_ref("headers", "XRequestId"),
            );
            if matches!(code, 423 | 429 | 503) || (code == 409 && post) {
                headers.insert("Retry-After".into(), component_ref("headers", "RetryAfter"));
            }
            if post {
                headers.insert(
                    "Idempotent-Replayed".into(),
                    component_ref("headers", "IdempotentReplayed"),
                );
            }
            if (200..300).contains(&code) && !get {
                if !NO_POSITION.contains(&id) {
                    headers.insert("X-Position".into(), component_ref("headers", "XPosition"));
                }
                headers.insert(
                    "X-Projections-Lagging".into(),
                    component_ref("headers", "XProjectionsLagging"),
                );
            }
        }
        if code >= 400 {
            let description = response
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if description.is_empty() || !description.contains('`') {
                let own = description.trim_end_matches('.');
                let generic = default_description(code);
                let text = if own.is_empty() {
                    generic
                } else {
                    format!("{own}. {}", generic.split_once(". ").map_or("", |(_, k)| k))
                };
                response.insert("description".into(), Value::String(text));
            }
            if code == 400 && HTML_ON_400.contains(&id) {
                continue;
            }
            if !(code == 503 && REPORT_ON_503.contains(&id)) {
                response.insert(
                    "content".into(),
                    json!({"application/json": {"schema": error_ref()}}),
                );
                continue;
            }
        }
        wrap_json(id, response, envelopes);
    }
}

/// `type: [T, "null"]` → `type: T`.
fn not_null(schema: &mut Value) {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            schema["type"] = only;
        }
    }
}

/// A server-sent-event stream's schema describes one event as a client parses it: `data`
/// is the JSON text of the annotated schema, `event` its name, `id` the resume point.
fn sse_events(responses: &mut Map<String, Value>) {
    for response in responses.values_mut() {
        let Some(media) = response
            .get_mut("content")
            .and_then(|c| c.get_mut("text/event-stream"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let Some(data) = media.get("schema").cloned() else {
            continue;
        };
        if data.get("properties").and_then(|p| p.get("data")).is_some() {
            continue; // already an event
        }
        media.insert(
            "schema".into(),
            json!({
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": data,
                    },
                    "event": {"type": "string"},
                    "id": {"type": "string"},
                    "retry": {"type": "integer", "minimum": 0},
                },
            }),
        );
    }
}

/// utoipa writes an optional body (`Option<T>`) as `oneOf: [null, T]`, which says a JSON
/// `null` is accepted; the handlers take no body (or only white space) or a `T`, and refuse
/// `null`. So: the body is `T`, and not required.
fn optional_body(body: &mut Map<String, Value>) {
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let mut optional = false;
    for media in content.values_mut() {
        let Some(alternatives) = media["schema"]["oneOf"].as_array() else {
            continue;
        };
        let rest: Vec<Value> = alternatives
            .iter()
            .filter(|s| **s != json!({"type": "null"}))
            .cloned()
            .collect();
        if rest.len() == 1 && alternatives.len() == 2 {
            media["schema"] = rest[0].clone();
            optional = true;
        }
    }
    if optional {
        body.insert("required".into(), Value::Bool(false));
    }
}

/// `token` alone, or `email` and `code` together (and no token).
fn token_or_email_and_code(schemas: &mut Map<String, Value>) {
    for name in TOKEN_OR_EMAIL_AND_CODE {
        if let Some(schema) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
            schema.insert(
                "oneOf".into(),
                json!([
                    {
                        "description": "With the link's token",
                        "required": ["token"],
                        "properties": {"token": {"type": "string"}, "email": {"type": "null"}, "code": {"type": "null"}},
                    },
                    {
                        "description": "With the email and the code from the mail",
                        "required": ["email", "code"],
                        "properties": {"token": {"type": "null"}, "email": {"type": "string"}, "code": {"type": "string"}},
                    },
                ]),
            );
        }
    }
}

/// Replace the JSON schema of an answer by its envelope.
fn wrap_json(id: &str, response: &mut Map<String, Value>, envelopes: &mut Map<String, Value>) {
    let Some(media) = response
        .get_mut("content")
        .and_then(|c| c.get_mut("application/json"))
    else {
        return;
    };
    let Some(data) = media.get("schema").cloned() else {
        return;
    };
    let name = format!("Envelope_{}", data_name(id, &data));
    envelopes.entry(name.clone()).or_insert_with(|| {
        json!({
            "type": "object",
            "description": "The envelope every JSON answer comes in",
            "required": ["code", "message", "data"],
            "properties": {
                "code": {"type": "integer", "minimum": 100, "maximum": 599, "description": "The HTTP status"},
                "message": {"type": "string", "description": "The status's reason phrase"},
                "data": data,
            },
        })
    });
    media["schema"] = json!({"$ref": format!("#/components/schemas/{name}")});
}

/// `ConversationRow`, `Vec_PlanView`, or the operation's name for an inline schema.
fn data_name(id: &str, schema: &Value) -> String {
    let ref_name = |s: &Value| {
        s.get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .map(str::to_owned)
    };
    if let Some(name) = ref_name(schema) {
        return name;
    }
    if schema["type"] == "array" {
        if let Some(name) = ref_name(&schema["items"]) {
            return format!("Vec_{name}");
        }
    }
    id.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Give every string of a request schema without a rule of its own the control-character
/// rule, following references into `components` (each component once).
fn refuse_controls(
    schema: &mut Value,
    components: &mut Map<String, Value>,
    seen: &mut Vec<String>,
) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
        if seen.contains(&name) {
            return;
        }
        seen.push(name.clone());
        if let Some(mut target) = components.remove(&name) {
            refuse_controls(&mut target, components, seen);
            components.insert(name, target);
        }
        return;
    }
    let is_string = match obj.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    let ruled = ["pattern", "format", "enum", "const", "contentMediaType"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if is_string && !ruled {
        obj.insert("pattern".into(), Value::String(NO_CONTROLS.into()));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner) = obj.get_mut(key) {
            refuse_controls(inner, components, seen);
        }
    }
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        for inner in props.values_mut() {
            refuse_controls(inner, components, seen);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = obj.get_mut(key).and_then(Value::as_array_mut) {
            for inner in alts {
                refuse_controls(inner, components, seen);
            }
        }
    }
}

/// `ErrorBody.error` is one of the stable kinds; `data` is always null; `details` (for
/// `upgrade_required`) has its shape.
fn error_body(schemas: &mut Map<String, Value>) {
    let Some(props) = schemas
        .get_mut("ErrorBody")
        .and_then(|s| s.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    props.insert(
        "error".into(),
        json!({"type": "string", "enum": ERROR_KINDS, "description": "The stable machine-readable kind"}),
    );
    props.insert(
        "data".into(),
        json!({"type": "null", "description": "Always null in an error"}),
    );
    props.insert(
        "details".into(),
        json!({"$ref": "#/components/schemas/UpgradeDetails", "description": "With `upgrade_required` only: the limit that was reached"}),
    );
    props.insert(
        "fields".into(),
        json!({"type": "object", "additionalProperties": {"type": "string"}, "description": "With `validation`: field name (a JSON path, a query parameter or a header) → what is wrong"}),
    );
}

fn security_schemes(components: &mut Map<String, Value>) {
    let schemes = components
        .entry("securitySchemes")
        .or_insert_with(|| json!({}));
    schemes["access_cookie"] = json!({
        "type": "apiKey",
        "in": "cookie",
        "name": cookies::ACCESS,
        "description": "The HttpOnly access cookie that `/api/v1/auth/login` and `/refresh` set \
                        (the same access token as the bearer one)",
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::openapi::document;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = vec![];
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops.push((path.clone(), method.to_owned(), op.clone()));
                }
            }
        }
        ops
    }

    /// A parameter with its `$ref` (to `components/parameters`) followed.
    fn resolved<'a>(doc: &'a Value, param: &'a Value) -> &'a Value {
        match param["$ref"].as_str() {
            Some(r) => &doc["components"]["parameters"][r.rsplit('/').next().unwrap_or("")],
            None => param,
        }
    }

    fn schema_ref(response: &Value) -> Option<&str> {
        response["content"]["application/json"]["schema"]["$ref"].as_str()
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_has_one() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(seen.insert(id.clone()), "{id} is used twice");
        }
        assert!(seen.contains("list_conversations") && seen.contains("export_events"));
    }

    #[test]
    fn path_parameters_are_in_the_path_template_and_the_rest_are_not_in_the_path() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let param = resolved(&doc, param);
                let name = param["name"].as_str().unwrap_or_default();
                if param["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: `{name}` is declared in: path but is not in the template"
                    );
                }
            }
        }
        let list = &doc["paths"]["/api/v1/conversations"]["get"]["parameters"];
        let q = list
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "q"))
            .expect("q");
        assert_eq!(q["in"], "query");
    }

    #[test]
    fn every_json_success_is_an_envelope_and_every_error_is_the_error_envelope() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for (path, method, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_default();
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no 2xx answer"
            );
            for (status, response) in responses {
                let json = &response["content"]["application/json"];
                if status.starts_with('2') {
                    if json.is_null() {
                        continue; // 204, a file, a stream
                    }
                    let name = schema_ref(response)
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .unwrap_or_default();
                    assert!(
                        name.starts_with("Envelope_"),
                        "{method} {path} {status}: not an envelope"
                    );
                    let envelope = &schemas[name];
                    assert_eq!(
                        envelope["required"],
                        serde_json::json!(["code", "message", "data"]),
                        "{name}"
                    );
                } else if status.starts_with('4') || status.starts_with('5') {
                    let health_report = status == "503" && id.starts_with("health_");
                    let html_page = status == "400" && super::HTML_ON_400.contains(&id);
                    if html_page {
                        assert!(response["content"]["text/html"].is_object(), "{id} 400");
                    } else if !health_report {
                        assert_eq!(
                            schema_ref(response),
                            Some("#/components/schemas/ErrorBody"),
                            "{method} {path} {status}"
                        );
                    }
                    assert!(
                        response["headers"]["X-Request-Id"].is_object(),
                        "{method} {path} {status}: no X-Request-Id"
                    );
                }
            }
        }
    }

    #[test]
    fn every_post_takes_an_idempotency_key_and_the_answers_say_when_they_are_replays() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            if method != "post" {
                continue;
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let key = params
                .iter()
                .map(|p| resolved(&doc, p))
                .find(|p| p["name"] == "Idempotency-Key")
                .unwrap_or_else(|| panic!("POST {path} has no Idempotency-Key"));
            assert_eq!(key["in"], "header");
            assert_eq!(key["schema"]["maxLength"], 255);
            assert!(op["responses"]["409"]["headers"]["Retry-After"].is_object());
        }
    }

    #[test]
    fn the_statuses_the_extractors_answer_are_listed() {
        let doc = document();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let create = op("/api/v1/conversations", "post");
        for status in [
            "400", "401", "402", "403", "409", "413", "415", "422", "500", "503",
        ] {
            assert!(create["responses"][status].is_object(), "create: {status}");
        }
        let login = op("/api/v1/auth/login", "post");
        for status in ["423", "429"] {
            assert!(login["responses"][status]["headers"]["Retry-After"].is_object());
        }
        assert!(op("/health/live", "get")["responses"]["503"].is_null());
        let register = op("/api/v1/auth/register", "post");
        assert!(register["responses"]["202"]["headers"]["X-Position"].is_null());
        assert!(create["responses"]["201"]["headers"]["X-Position"].is_object());
        let usage = op("/api/v1/usage", "get");
        let takes_min_position = usage["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| resolved(&doc, p)["name"] == "X-Min-Position");
        assert!(takes_min_position);
    }

    #[test]
    fn the_error_kinds_and_the_constraints_the_server_enforces_are_in_the_schemas() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let kinds = schemas["ErrorBody"]["properties"]["error"]["enum"]
            .as_array()
            .expect("enum");
        assert!(kinds.contains(&"upgrade_required".into()));
        assert!(kinds.contains(&"method_not_allowed".into()));
        assert_eq!(
            schemas["RecordUsageRequest"]["properties"]["amount"]["minimum"],
            1
        );
        assert_eq!(
            schemas["RecordUsageRequest"]["properties"]["kind"]["pattern"],
            "^[a-z][a-z0-9_]{0,63}$"
        );
        assert_eq!(schemas["BulkDelete"]["properties"]["ids"]["minItems"], 1);
        assert_eq!(
            schemas["LoginRequest"]["properties"]["password"]["minLength"],
            1
        );
        assert_eq!(
            schemas["RegisterRequest"]["properties"]["email"]["format"],
            "email"
        );
        assert_eq!(
            schemas["TitleRequest"]["properties"]["title"]["maxLength"],
            200
        );
        // every request string without a rule of its own refuses control characters
        assert_eq!(
            schemas["DeactivateRequest"]["properties"]["reason"]["pattern"],
            super::ONE_LINE
        );
        assert_eq!(
            schemas["ChangePassword"]["properties"]["current_password"]["pattern"],
            super::NO_CONTROLS
        );
        // trimmed fields refuse what is blank
        assert_eq!(
            schemas["TitleRequest"]["properties"]["title"]["pattern"],
            super::ONE_LINE_NOT_BLANK
        );
        assert_eq!(schemas["PatchMe"]["properties"]["locale"]["maxLength"], 35);
        // the two components that once shared the name `HistoryPage`
        assert_eq!(
            schemas["HistoryPage"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/HistoryEntry"
        );
        assert_eq!(
            schemas["AuditPage"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/AuditEntry"
        );
        // an optional body is the body's schema, not `null`, and not required
        let refresh = &doc["paths"]["/api/v1/auth/refresh"]["post"]["requestBody"];
        assert_eq!(refresh["required"], false);
        assert_eq!(
            refresh["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RefreshRequest"
        );
        assert_eq!(
            schemas["VerifyEmailRequest"]["oneOf"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            schemas["UsageReport"]["properties"]["plan"]["$ref"],
            "#/components/schemas/PlanView"
        );
    }

    #[test]
    fn the_control_character_patterns_match_what_the_server_refuses() {
        // the same characters as aggregates::text, checked one by one
        let allowed = |pattern: &str, c: char| {
            !ranges_of(pattern)
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&(c as u32)))
        };
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            assert_eq!(
                allowed(super::NO_CONTROLS, c),
                !aggregates::text::is_forbidden(c),
                "{:x}",
                c as u32
            );
            assert_eq!(
                allowed(super::ONE_LINE, c),
                !aggregates::text::is_forbidden_in_line(c),
                "{:x}",
                c as u32
            );
        }
    }

    /// The code point ranges of a `^[^...]*$` pattern written with `\uXXXX` escapes.
    fn ranges_of(pattern: &str) -> Vec<(u32, u32)> {
        let inner = pattern.trim_start_matches("^[^").trim_end_matches("]*$");
        let mut out = vec![];
        let mut rest = inner;
        while let Some(s) = rest.strip_prefix("\\u") {
            let a = u32::from_str_radix(&s[..4], 16).expect("hex");
            rest = &s[4..];
            let b = if let Some(s) = rest.strip_prefix("-\\u") {
                let b = u32::from_str_radix(&s[..4], 16).expect("hex");
                rest = &s[4..];
                b
            } else {
                a
            };
            out.push((a, b));
        }
        assert!(rest.is_empty(), "unparsed: {rest}");
        out
    }
}
