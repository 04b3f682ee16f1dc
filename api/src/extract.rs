//! Extractors that turn bad input into our error envelope instead of axum's plain text.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aggregates::metadata::ROLE_ANONYMOUS;
use aggregates::{EventMetadata, LogCursor};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The longest header value copied into event metadata.
const MAX_META_LEN: usize = 512;

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn is_json(ct: &str) -> bool {
    ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("body", "could not be read")
        }
    })
}

/// Where in the input a deserialisation error is, as a field name (`$` for the root).
fn field_of(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        "$".into()
    } else {
        p
    }
}

/// Deserialise JSON with the path of the first error.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    crate::clean_input::check_json(bytes)?;
    require_object(bytes)?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = field_of(err.path());
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::BadRequest {
                    message: format!(
                        "malformed JSON at line {} column {}",
                        inner.line(),
                        inner.column()
                    ),
                    fields: BTreeMap::new(),
                }
            }
            _ => ApiError::validation(&field, clean_serde_message(&inner.to_string())),
        }
    })
}

/// serde's messages end with " at line 1 column 20"; the field name says where already.
fn clean_serde_message(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn from_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = field_of(err.path());
        ApiError::validation(&field, clean_serde_message(&err.into_inner().to_string()))
    })
}

/// A JSON body. Wrong content type → 415; malformed JSON → 400; wrong types, missing or
/// unknown fields → 422 with `fields`; too large → 413.
#[derive(Debug, Clone)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match content_type(req.headers()) {
            Some(ct) if is_json(&ct) => {}
            _ => {
                return Err(ApiError::UnsupportedMediaType(
                    "send the body as application/json".into(),
                ))
            }
        }
        let bytes = body_bytes(req, state).await?;
        from_json(&bytes).map(AppJson)
    }
}

/// A body as JSON or as `application/x-www-form-urlencoded` (HTML forms).
#[derive(Debug, Clone)]
pub struct JsonOrForm<T>(pub T);

impl<S, T> FromRequest<S> for JsonOrForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = content_type(req.headers());
        match ct.as_deref() {
            Some(ct) if is_json(ct) => {
                let bytes = body_bytes(req, state).await?;
                from_json(&bytes).map(JsonOrForm)
            }
            Some("application/x-www-form-urlencoded") => {
                let bytes = body_bytes(req, state).await?;
                // a body passes no middleware: checked here (a query string is checked by
                // `clean_input::middleware` before any extractor runs)
                crate::clean_input::check_form(&bytes)?;
                from_form(&bytes).map(JsonOrForm)
            }
            _ => Err(ApiError::UnsupportedMediaType(
                "send the body as application/json or application/x-www-form-urlencoded".into(),
            )),
        }
    }
}

/// A query string. Wrong or missing parameters → 422 with `fields`.
#[derive(Debug, Clone)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        from_form(query.as_bytes()).map(AppQuery)
    }
}

/// The metadata every event of this request is recorded with.
#[derive(Debug, Clone)]
pub struct RequestMeta(pub EventMetadata);

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(MAX_META_LEN).collect())
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let request_id = header(&parts.headers, "x-request-id");
        let correlation_id = header(&parts.headers, "x-correlation-id").or(request_id.clone());
        Ok(RequestMeta(EventMetadata {
            actor_id: None,
            actor_role: ROLE_ANONYMOUS.to_owned(),
            ip,
            user_agent: header(&parts.headers, "user-agent"),
            causation_id: request_id.clone(),
            request_id,
            correlation_id,
        }))
    }
}

/// `X-Min-Position`: serve read models that have reached this cursor.
#[derive(Debug, Clone, Copy)]
pub struct MinPosition(pub Option<LogCursor>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-min-position") {
            None => Ok(MinPosition(None)),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse::<LogCursor>().ok())
                .map(|c| MinPosition(Some(c)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "X-Min-Position",
                        "is not a position (send back a command's data.position)",
                    )
                }),
        }
    }
}

/// The highest `page` any list answers (the document's maximum too).
pub const MAX_PAGE: u32 = 1_000_000;

/// A 1-based page number: absent is 1; 0 or past [`MAX_PAGE`] is 422.
pub fn page_number(page: Option<u32>) -> Result<u32, ApiError> {
    match page.unwrap_or(1) {
        p @ 1..=MAX_PAGE => Ok(p),
        _ => Err(ApiError::validation(
            "page",
            format!("must be 1 to {MAX_PAGE}"),
        )),
    }
}

/// A search text of at most `max` characters (the document's `maxLength`), trimmed; blank
/// is none.
pub fn search_text(q: Option<&str>, max: usize) -> Result<Option<&str>, ApiError> {
    match q {
        Some(q) if q.chars().count() > max => Err(ApiError::validation(
            "q",
            format!("must be at most {max} characters"),
        )),
        Some(q) => Ok(Some(q.trim()).filter(|s| !s.is_empty())),
        None => Ok(None),
    }
}

/// A JSON body is an object: serde would read a struct from an array too (`[null, null]`
/// into a PATCH of two optional fields), which no client means.
pub fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => Ok(()),
        Some(_) => Err(ApiError::validation("$", "must be a JSON object")),
    }
}

/// The client's IP as the request's metadata has it.
pub fn client_ip(meta: &EventMetadata) -> Option<std::net::IpAddr> {
    meta.ip.as_deref().and_then(|ip| ip.parse().ok())
}

/// "Firefox 128 on Linux" from a user agent.
pub fn device_name(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent else {
        return "Unknown device".into();
    };
    match woothee::parser::Parser::new().parse(ua) {
        Some(r) if r.name != "UNKNOWN" => {
            let os = if r.os == "UNKNOWN" { "" } else { r.os };
            if os.is_empty() {
                r.name.to_owned()
            } else {
                format!("{} on {}", r.name, os)
            }
        }
        _ => ua.chars().take(60).collect(),
    }
}
