//! The admin console: the static web page in `console/` (HTML, JS modules, CSS and a
//! vendored chart library), embedded in the binary at compile time and served at `/admin`
//! and `/admin/{*path}`. It is a client of the public API like any other (it signs in with
//! `/api/v1/auth/login` and calls `/api/v1/admin/...` with a bearer token); these routes
//! only hand out files and need no authentication.
//!
//! Every answer has `Cache-Control: no-cache` and an `ETag` (the file's SHA-256), so a
//! browser revalidates and gets `304 Not Modified` while the binary is the same. The
//! security headers (CSP `script-src 'self'`, no framing) come from the app's middleware.
//!
//! Adding a new file to `console/` needs a rebuild of this crate that notices it:
//! `touch api/src/routes/console.rs` (changed files are noticed on their own).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

use crate::{ApiError, AppState};

/// `console/` at the root of the workspace (the path is relative to this crate).
#[derive(RustEmbed)]
#[folder = "../console/"]
struct Console;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/{*path}", get(asset))
}

/// The console's page; the front end routes with the URL's fragment (`#/users`, ...).
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// A file of the console (scripts, styles, the chart library).
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Console::get(path) else {
        return ApiError::NotFound("no such file in the admin console".into()).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        )],
        file.data,
    )
        .into_response()
}

/// The media type by extension (text as UTF-8); files without a known one are bytes.
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ if path
            .rsplit('/')
            .next()
            .is_some_and(|name| name == "LICENSE") =>
        {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_file_has_a_media_type() {
        for path in Console::iter() {
            assert_ne!(
                content_type(&path),
                "application/octet-stream",
                "console/{path} needs a media type in content_type()"
            );
        }
        assert!(Console::get("index.html").is_some());
        assert!(Console::get("app.js").is_some());
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("js/users.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("vendor/uplot/LICENSE"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }
}
