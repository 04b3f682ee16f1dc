//! Refusing control characters at the edge, before any handler, aggregate or read model
//! sees them (the rules are in [`aggregates::text`]).
//!
//! One NUL byte once stopped a read model for every user: PostgreSQL refuses U+0000 in
//! `text`, and a sealed value hides it from the log until a projector writes the opened
//! value. So every string a request carries is checked here: the path (percent-decoded),
//! each query parameter (name and value), each header value, and every string of a JSON or
//! form body (keys too). A refusal is 422 `validation` naming the field. Finer rules (one
//! line for a name, a title) stay with the field's own validation.

use std::borrow::Cow;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use aggregates::text::{is_forbidden, FORBIDDEN_MESSAGE};

use crate::ApiError;

/// The middleware: path, query string and headers.
pub async fn middleware(req: Request, next: Next) -> Response {
    if let Err(e) = check_parts(req.uri(), req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn refused(field: &str) -> ApiError {
    ApiError::validation(field, FORBIDDEN_MESSAGE)
}

fn has_forbidden(s: &str) -> bool {
    s.chars().any(is_forbidden)
}

fn check_parts(uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    if has_forbidden(&path) {
        return Err(refused("path"));
    }
    if let Some(query) = uri.query() {
        check_form(query.as_bytes())?;
    }
    for (name, value) in headers {
        // hyper already refuses most control bytes in header values; what it lets
        // through (none today, but the parser is not our contract) stops here.
        if value
            .as_bytes()
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(refused(name.as_str()));
        }
    }
    Ok(())
}

/// Every name and value of a form body or query string.
pub fn check_form(bytes: &[u8]) -> Result<(), ApiError> {
    for (name, value) in form_urlencoded::parse(bytes) {
        if has_forbidden(&name) {
            return Err(refused("$"));
        }
        if has_forbidden(&value) {
            return Err(refused(&clean_name(&name)));
        }
    }
    Ok(())
}

fn clean_name(name: &str) -> Cow<'_, str> {
    if name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic()) {
        Cow::Borrowed(name)
    } else {
        Cow::Borrowed("$")
    }
}

/// Every string of a JSON body. Raw control characters are already a syntax error in
/// JSON, so only escapes (`\u0000`, `\b`, `\f`) or raw C1 characters (UTF-8 `C2 80..9F`)
/// can smuggle one in: most bodies are refused or passed on a scan of their bytes alone.
pub fn check_json(bytes: &[u8]) -> Result<(), ApiError> {
    if !might_hold_controls(bytes) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(()); // not JSON: the deserialiser answers with the syntax error
    };
    let mut path = String::new();
    match find(&value, &mut path) {
        Some(field) => Err(refused(&field)),
        None => Ok(()),
    }
}

fn might_hold_controls(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| {
        (w[0] == b'\\' && matches!(w[1], b'u' | b'b' | b'f'))
            || (w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
    })
}

/// The path of the first string (or key) holding a forbidden character.
fn find(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(s) if has_forbidden(s) => Some(if path.is_empty() {
            "$".to_owned()
        } else {
            path.clone()
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            if has_forbidden(key) {
                return Some(if len == 0 {
                    "$".to_owned()
                } else {
                    path[..len].to_owned()
                });
            }
            path.push_str(key);
            let found = find(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<(), ApiError>) -> Option<String> {
        match r {
            Err(ApiError::Validation { fields, .. }) => fields.keys().next().cloned(),
            _ => None,
        }
    }

    #[test]
    fn a_nul_anywhere_in_a_json_body_is_refused_with_its_path() {
        let body = br#"{"title":"ok","messages":[{"content":"a"},{"content":"b\u0000"}]}"#;
        assert_eq!(
            field(check_json(body)).as_deref(),
            Some("messages[1].content")
        );
        assert_eq!(field(check_json(br#""\u0000""#)).as_deref(), Some("$"));
        assert_eq!(field(check_json(br#"{"a\u0001":1}"#)).as_deref(), Some("$"));
        assert_eq!(
            field(check_json("{\"t\":\"\u{85}\"}".as_bytes())).as_deref(),
            Some("t")
        );
    }

    #[test]
    fn line_breaks_tabs_and_ordinary_escapes_pass() {
        assert!(check_json(br#"{"content":"two\nlines\tand \u00e9 \"quoted\" \\u0000"}"#).is_ok());
        assert!(check_json(b"not json").is_ok());
    }

    #[test]
    fn query_strings_and_forms_are_decoded_before_the_check() {
        assert_eq!(
            field(check_form(b"email=a%00b@example.com")).as_deref(),
            Some("email")
        );
        assert_eq!(field(check_form(b"q=%1b%5b31m")).as_deref(), Some("q"));
        assert!(check_form(b"q=ada+lovelace&page=2").is_ok());
    }

    #[test]
    fn the_path_is_decoded_too() {
        let uri: axum::http::Uri = "/api/v1/uploads/a%00b".parse().expect("uri");
        assert_eq!(
            field(check_parts(&uri, &Default::default())).as_deref(),
            Some("path")
        );
        let uri: axum::http::Uri = "/api/v1/users/status?email=a%00b@x.io"
            .parse()
            .expect("uri");
        assert_eq!(
            field(check_parts(&uri, &Default::default())).as_deref(),
            Some("email")
        );
    }
}
