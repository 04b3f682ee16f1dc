//! The auth cookies: HttpOnly, SameSite=Strict, Secure (unless switched off for plain-HTTP
//! development), the refresh cookie scoped to the auth paths.
//!
//! When Secure (always in production) the names carry a prefix the browser enforces:
//! `__Host-chronicle_access` can only be set over HTTPS, by this very host (no `Domain`),
//! for `Path=/`, so a sibling subdomain or a plain-HTTP page cannot plant or shadow it;
//! `__Secure-chronicle_refresh` keeps its `Path=/api/v1/auth`, which `__Host-` forbids, and
//! still needs HTTPS. Browsers drop prefixed cookies without Secure, so plain-HTTP
//! development uses the bare names.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// The access cookie's name (bare; see [`wire_name`]).
pub const ACCESS: &str = "chronicle_access";
/// The refresh cookie's name (bare; see [`wire_name`]).
pub const REFRESH: &str = "chronicle_refresh";
const REFRESH_PATH: &str = "/api/v1/auth";

/// The name a cookie is set under: prefixed when `secure`.
pub fn wire_name(name: &str, secure: bool) -> String {
    match (secure, name == ACCESS) {
        (false, _) => name.to_owned(),
        (true, true) => format!("__Host-{name}"),
        (true, false) => format!("__Secure-{name}"),
    }
}

fn value_of(headers: &HeaderMap, wire: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == wire)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// A cookie's value from the request under either name, the prefixed one first (only the
/// browser's own HTTPS exchange with this host can have set it). The bare name is still
/// read for plain-HTTP development and for cookies set before the prefixes.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    value_of(headers, &wire_name(name, true)).or_else(|| value_of(headers, name))
}

/// A cookie's value under the name this deployment sets: with `secure`, only the prefixed
/// one, so a bare cookie planted by a sibling subdomain or over plain HTTP is ignored.
pub fn get_as_set(headers: &HeaderMap, name: &str, secure: bool) -> Option<String> {
    value_of(headers, &wire_name(name, secure))
}

fn cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let name = wire_name(name, secure);
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

/// Remove both cookies (logout). With `secure`, the bare names too: a browser may still
/// hold cookies set before the prefixes.
pub fn clear(headers: &mut HeaderMap, secure: bool) {
    let mut expire = |name: &str, path: &str, secure: bool| {
        if let Some(v) = cookie(name, "", path, 0, secure) {
            headers.append(SET_COOKIE, v);
        }
    };
    expire(ACCESS, "/", secure);
    expire(REFRESH, REFRESH_PATH, secure);
    if secure {
        for (name, path) in [(ACCESS, "/"), (REFRESH, REFRESH_PATH)] {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict; Secure"
            )) {
                headers.append(SET_COOKIE, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(headers: &HeaderMap) -> Vec<String> {
        headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    #[test]
    fn secure_cookies_carry_the_host_and_secure_prefixes_the_browser_enforces() {
        let mut headers = HeaderMap::new();
        set_pair(&mut headers, "A", 900, "R", 86_400, true);
        let set = set_cookies(&headers);
        assert_eq!(
            set,
            [
                "__Host-chronicle_access=A; Path=/; Max-Age=900; HttpOnly; SameSite=Strict; Secure",
                "__Secure-chronicle_refresh=R; Path=/api/v1/auth; Max-Age=86400; HttpOnly; SameSite=Strict; Secure",
            ]
        );
        assert!(set.iter().all(|c| !c.to_lowercase().contains("domain")));
    }

    #[test]
    fn plain_http_development_keeps_the_bare_names_without_secure() {
        let mut headers = HeaderMap::new();
        set_pair(&mut headers, "A", 900, "R", 60, false);
        let set = set_cookies(&headers);
        assert!(set[0].starts_with("chronicle_access=A; Path=/;"), "{set:?}");
        assert!(set[1].starts_with("chronicle_refresh=R; Path=/api/v1/auth;"));
        assert!(set
            .iter()
            .all(|c| !c.contains("Secure") && !c.contains("__")));
    }

    #[test]
    fn reading_accepts_the_prefixed_names_first_and_strictly_only_them_when_secure() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static(
                "chronicle_access=planted; __Host-chronicle_access=real; __Secure-chronicle_refresh=r",
            ),
        );
        assert_eq!(get(&headers, ACCESS).as_deref(), Some("real"));
        assert_eq!(get(&headers, REFRESH).as_deref(), Some("r"));
        assert_eq!(get_as_set(&headers, ACCESS, true).as_deref(), Some("real"));
        assert_eq!(
            get_as_set(&headers, ACCESS, false).as_deref(),
            Some("planted")
        );
        let mut bare = HeaderMap::new();
        bare.insert(COOKIE, HeaderValue::from_static("chronicle_access=planted"));
        assert_eq!(get_as_set(&bare, ACCESS, true), None);
        assert_eq!(get(&bare, ACCESS).as_deref(), Some("planted"));
    }

    #[test]
    fn logout_expires_the_prefixed_and_the_bare_names_when_secure() {
        let mut headers = HeaderMap::new();
        clear(&mut headers, true);
        let set = set_cookies(&headers);
        for name in [
            "__Host-chronicle_access=;",
            "__Secure-chronicle_refresh=;",
            "chronicle_access=;",
            "chronicle_refresh=;",
        ] {
            assert!(
                set.iter()
                    .any(|c| c.starts_with(name) && c.contains("Max-Age=0")),
                "{name}: {set:?}"
            );
        }
    }
}
