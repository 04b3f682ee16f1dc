//! The auth cookies: HttpOnly, SameSite=Strict, Secure (unless switched off for plain-HTTP
//! development), the refresh cookie scoped to the auth paths.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

pub const ACCESS: &str = "chronicle_access";
pub const REFRESH: &str = "chronicle_refresh";
const REFRESH_PATH: &str = "/api/v1/auth";

/// A cookie's value from the request, if present.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// Set both cookies after a login or refresh.
pub fn set_pair(
    headers: &mut HeaderMap,
    access: &str,
    access_secs: i64,
    refresh: &str,
    refresh_secs: i64,
    secure: bool,
) {
    if let Some(v) = cookie(ACCESS, access, "/", access_secs, secure) {
        headers.append(SET_COOKIE, v);
    }
    if let Some(v) = cookie(REFRESH, refresh, REFRESH_PATH, refresh_secs, secure) {
        headers.append(SET_COOKIE, v);
    }
}

/// Remove both cookies (logout).
pub fn clear(headers: &mut HeaderMap, secure: bool) {
    if let Some(v) = cookie(ACCESS, "", "/", 0, secure) {
        headers.append(SET_COOKIE, v);
    }
    if let Some(v) = cookie(REFRESH, "", REFRESH_PATH, 0, secure) {
        headers.append(SET_COOKIE, v);
    }
}
