//! `Idempotency-Key` on POST: a retried request gets the first answer back instead of
//! running its command again (docs/IDEMPOTENCY.md).
//!
//! One middleware around every route. A POST with the header is buffered and hashed; the key
//! is claimed in `idempotency_keys` as `running` (the primary key makes exactly one request
//! win the claim); the winner runs and its answer is stored as `done`; later requests with
//! the key get that answer byte for byte, plus `Idempotent-Replayed: true`. Every other
//! request passes through untouched.
//!
//! Two promises hold through a database blip:
//! - a key is `running` only under a lease ([`LEASE`]) that the request renews while it
//!   runs; a key whose holder died, or whose release failed, is free again within seconds;
//! - an answer that is sent is the answer every retry gets: the answer is stored (retried
//!   through a blip for up to [`STORE_FOR`]) *before* it is sent, and if it cannot be stored
//!   the client gets 503 instead, never a 202 that a retry would then run again.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use tracing::Instrument;

use crate::auth::cookies;
use crate::{ApiError, AppState};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on every replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered: 24 hours, longer than any client's retry policy needs,
/// short enough that the table stays small. After that the same key runs again.
pub const KEY_TTL_HOURS: i64 = 24;
/// The longest key accepted (characters, all visible ASCII).
pub const MAX_KEY_LEN: usize = 255;
/// Room above the largest body a route accepts (multipart framing around an avatar).
const BODY_SLACK: usize = 64 * 1024;
/// One request in this many also deletes keys that expired over an hour ago.
const SWEEP_ONE_IN: u32 = 100;
/// Only keys expired this long are swept, so the sweep never races a request that is
/// itself replacing an expired key.
const SWEEP_GRACE_HOURS: i64 = 1;
/// Claim attempts before giving up (a claim is lost only to a row deleted at that moment).
const CLAIM_ATTEMPTS: usize = 3;
/// How long a `running` key stays taken without its request renewing it.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a running request renews its lease.
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// How long storing an answer is retried while PostgreSQL is away (a fast restart takes a
/// second or two) before the client is answered 503 instead.
pub const STORE_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// The response headers a replay carries. Not `x-request-id` (each response has its own,
/// set outside this middleware), `date`, or the security headers (added outside too).
/// `www-authenticate` and `allow` belong to the 401s and 405s that are stored.
pub const STORED_HEADERS: [&str; 8] = [
    "content-type",
    "x-position",
    "location",
    "retry-after",
    "set-cookie",
    "content-disposition",
    "www-authenticate",
    "allow",
];

/// What becomes of a key once its request has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The answer is final: store it and replay it to every retry.
    Store,
    /// The command failed or did not run, and a retry may succeed: release the key so that
    /// a retry runs again.
    Release,
}

/// Successes and client errors are stored; server errors are not, nor the client errors
/// that ask the client to try again (401 after a re-sign-in, 408, 409 for a lost race, 423
/// and 429 after their `Retry-After`): replaying those would make the retry they invite
/// fail for 24 hours, and their command did not take effect.
pub fn outcome(status: StatusCode) -> Outcome {
    let retry_invited = matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::CONFLICT
            | StatusCode::LOCKED
            | StatusCode::TOO_MANY_REQUESTS
    );
    if status.is_server_error() || status.is_informational() || retry_invited {
        Outcome::Release
    } else {
        Outcome::Store
    }
}

/// The key, if it is 1 to 255 visible ASCII characters.
pub fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::bad_request(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// SHA-256 (hex) of what makes a request this request: method, path and query, body.
pub fn request_hash(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    // method and path cannot contain a newline: the fields cannot run into each other
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// The headers of `headers` a replay carries, in order (`set-cookie` may repeat).
pub fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = vec![];
    for name in STORED_HEADERS {
        for value in headers.get_all(name) {
            match value.to_str() {
                Ok(v) => out.push((name.to_owned(), v.to_owned())),
                Err(_) => tracing::warn!(header = name, "Header not stored: not visible ASCII"),
            }
        }
    }
    out
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Whose key it is: the user of a valid access token (the session is not looked up: the
/// scope only keeps callers' keys apart); else the credentials the request carries (an
/// admin API key, any other `Authorization`), as a hash; else the client's IP address.
///
/// A stored answer is replayed only within its scope, so a request that carried credentials
/// must never share the anonymous scope of its IP: an admin-key answer (a created user, say)
/// would otherwise be replayed to anyone at that address who sends the same key with no
/// credentials at all. Only someone holding the same credential reaches its scope.
fn scope(state: &AppState, parts: &Parts) -> String {
    let token = bearer(&parts.headers).or_else(|| {
        cookies::get_as_set(&parts.headers, cookies::ACCESS, state.config.cookie_secure)
    });
    if let Some(claims) = token.and_then(|t| state.tokens.verify(&t).ok()) {
        return format!("user:{}", claims.sub);
    }
    let credential = |name: &str, value: &HeaderValue| {
        let mut h = Sha256::new();
        h.update(value.as_bytes());
        format!("{name}:{}", hex::encode(h.finalize()))
    };
    if let Some(key) = parts.headers.get("x-admin-key") {
        return credential("admin_key", key);
    }
    if let Some(authorization) = parts.headers.get(AUTHORIZATION) {
        return credential("credential", authorization);
    }
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "ip:unknown".to_owned(),
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let mut values = req.headers().get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return next.run(req).await;
    };
    if values.next().is_some() {
        return ApiError::bad_request("Idempotency-Key", "must be sent once").into_response();
    }
    let key = match parse_key(value) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    match idempotent(state, key, req, next).await {
        Ok(response) | Err(response) => response,
    }
}

/// A stored key as read back.
#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    state: String,
    status: Option<i16>,
    headers: Option<Json<Vec<(String, String)>>>,
    body: Option<Vec<u8>>,
    expires_at: DateTime<Utc>,
    lease_until: DateTime<Utc>,
}

fn lease_from(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::from_std(LEASE).unwrap_or(Duration::seconds(10))
}

async fn idempotent(
    state: AppState,
    key: String,
    req: Request,
    next: Next,
) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let scope = scope(&state, &parts);
    let limit = state.config.avatar_max_bytes.max(state.config.body_limit) + BODY_SLACK;
    let body = buffered(body, limit)
        .await
        .map_err(IntoResponse::into_response)?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let hash = request_hash(&parts.method, path, &body);
    let now = state.clock.now();
    if rand::random::<u32>().is_multiple_of(SWEEP_ONE_IN) {
        sweep(&state, now);
    }
    let db = |e: sqlx::Error| ApiError::from(e).into_response();
    for _ in 0..CLAIM_ATTEMPTS {
        let claimed = sqlx::query(
            "insert into idempotency_keys \
             (scope, key, request_hash, state, created_at, expires_at, lease_until) \
             values ($1, $2, $3, 'running', $4, $5, $6) on conflict (scope, key) do nothing",
        )
        .bind(&scope)
        .bind(&key)
        .bind(&hash)
        .bind(now)
        .bind(now + Duration::hours(KEY_TTL_HOURS))
        .bind(lease_from(now))
        .execute(&state.pool)
        .await
        .map_err(db)?;
        if claimed.rows_affected() == 1 {
            let req = Request::from_parts(parts, Body::from(body));
            return Ok(run_and_store(state, scope, key, req, next).await);
        }
        let row = load_key(&state, &scope, &key).await.map_err(db)?;
        let Some(row) = row else {
            continue; // released (a 5xx) between our insert and select: claim again
        };
        if row.expires_at <= now {
            // `expires_at <= now` again: of two requests replacing it, one deletes it
            sqlx::query(
                "delete from idempotency_keys where scope = $1 and key = $2 and expires_at <= $3",
            )
            .bind(&scope)
            .bind(&key)
            .bind(now)
            .execute(&state.pool)
            .await
            .map_err(db)?;
            continue;
        }
        if row.request_hash != hash {
            return Err(ApiError::validation(
                "Idempotency-Key",
                "was already used for another request; use a new key for a new request",
            )
            .into_response());
        }
        if row.state == "running" {
            if row.lease_until > now {
                return Err(still_running());
            }
            // Its holder died or could not release it: the command did not answer anyone
            // (an answer is stored before it is sent), so this request runs it. Of two
            // requests taking it over, the update lets one win.
            let taken = sqlx::query(
                "update idempotency_keys set lease_until = $4 \
                 where scope = $1 and key = $2 and state = 'running' and lease_until <= $3",
            )
            .bind(&scope)
            .bind(&key)
            .bind(now)
            .bind(lease_from(now))
            .execute(&state.pool)
            .await
            .map_err(db)?;
            if taken.rows_affected() == 1 {
                tracing::info!("Idempotency key taken over after its lease ran out");
                let req = Request::from_parts(parts, Body::from(body));
                return Ok(run_and_store(state, scope, key, req, next).await);
            }
            return Err(still_running());
        }
        return replay(row).map_err(IntoResponse::into_response);
    }
    Err(still_running())
}

fn still_running() -> Response {
    let mut response =
        ApiError::Conflict("a request with this key is still running".into()).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// The request body, up to `limit` bytes (413 beyond).
async fn buffered(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::bad_request("body", "the request body could not be read"))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Run the request we hold the key for, then store its answer or release the key.
///
/// It runs in a task of its own: a client that hangs up (the usual reason to retry) drops
/// this future, and the command must still finish and its answer be stored, or the key
/// would stay `running` and every retry would get 409 until it expires.
async fn run_and_store(
    state: AppState,
    scope: String,
    key: String,
    req: Request,
    next: Next,
) -> Response {
    let (s, sc, k) = (state.clone(), scope.clone(), key.clone());
    let renewing = renew_lease(state.clone(), scope.clone(), key.clone());
    let task = tokio::spawn(
        async move {
            let response = next.run(req).await;
            finish(&state, &scope, &key, response).await
        }
        .instrument(tracing::Span::current()),
    );
    let answer = task.await;
    renewing.abort();
    match answer {
        Ok(response) => response,
        Err(e) => {
            release(&s, &sc, &k, "the request task failed").await;
            ApiError::internal(e).into_response()
        }
    }
}

/// Renew the key's lease while its request runs (aborted when it has answered).
fn renew_lease(state: AppState, scope: String, key: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let renewed = sqlx::query(
                "update idempotency_keys set lease_until = $3 \
                 where scope = $1 and key = $2 and state = 'running'",
            )
            .bind(&scope)
            .bind(&key)
            .bind(lease_from(state.clock.now()))
            .execute(&state.pool)
            .await;
            if let Err(e) = renewed {
                tracing::warn!(error = %e, "Idempotency lease not renewed");
            }
        }
    })
}

async fn finish(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    // An answer that hands out credentials (login, refresh: tokens in the body and in
    // Set-Cookie) is never kept: stored, it would be a plaintext copy of the tokens. The
    // key is released, so a retry signs in again instead of being replayed.
    let carries_credentials = response
        .headers()
        .contains_key(axum::http::header::SET_COOKIE);
    if carries_credentials || outcome(response.status()) == Outcome::Release {
        release(state, scope, key, "").await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            release(state, scope, key, "").await;
            return ApiError::internal_msg(format!("reading the response to store it: {e}"))
                .into_response();
        }
    };
    let headers = Json(stored_headers(&parts.headers));
    let deadline = tokio::time::Instant::now() + STORE_FOR;
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        let stored = sqlx::query(
            "update idempotency_keys set state = 'done', status = $3, headers = $4, body = $5 \
             where scope = $1 and key = $2 and state = 'running'",
        )
        .bind(scope)
        .bind(key)
        .bind(parts.status.as_u16() as i16)
        .bind(&headers)
        .bind(body.as_ref())
        .execute(&state.pool)
        .await;
        match stored {
            Ok(done) if done.rows_affected() == 1 => {
                return Response::from_parts(parts, Body::from(body))
            }
            // Another request took the key over after our lease ran out and stored its
            // answer first: that one is the answer of this key.
            Ok(_) => {
                return stored_answer(state, scope, key)
                    .await
                    .unwrap_or_else(|| Response::from_parts(parts, Body::from(body)))
            }
            Err(e)
                if eventstore::unavailable::is_unavailable(&e)
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %e, "Storing an idempotent answer: PostgreSQL away, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                // The answer cannot be kept, so it is not sent: a client that saw it would
                // have a retry run the command again. It gets 503 and retries instead; the
                // key is released (or its lease runs out) so that the retry can run.
                tracing::error!(error = %e, "Idempotent answer not stored; answering 503 instead");
                release(state, scope, key, "").await;
                return ApiError::database_unavailable(&e).into_response();
            }
        }
    }
}

/// A stored key, as read back.
async fn load_key(state: &AppState, scope: &str, key: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "select request_hash, state, status, headers, body, expires_at, lease_until \
         from idempotency_keys where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&state.pool)
    .await
}

/// The answer stored under a key that is `done`.
async fn stored_answer(state: &AppState, scope: &str, key: &str) -> Option<Response> {
    let row = load_key(state, scope, key).await.ok().flatten()?;
    if row.state != "done" {
        return None;
    }
    replay(row).ok()
}

/// Forget a key so that a retry runs again.
async fn release(state: &AppState, scope: &str, key: &str, why: &str) {
    if !why.is_empty() {
        tracing::error!(
            error = why,
            "Idempotency key released: the answer was not stored"
        );
    }
    let deleted = sqlx::query(
        "delete from idempotency_keys where scope = $1 and key = $2 and state = 'running'",
    )
    .bind(scope)
    .bind(key)
    .execute(&state.pool)
    .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "Idempotency key not released: it is free when its lease runs out");
    }
}

/// The stored answer, byte for byte.
fn replay(row: KeyRow) -> Result<Response, ApiError> {
    let (Some(status), Some(Json(headers)), Some(body)) = (row.status, row.headers, row.body)
    else {
        return Err(ApiError::internal_msg(
            "a done idempotency key without its answer",
        ));
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ApiError::internal_msg(format!("stored status {status}")))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return Err(ApiError::internal_msg(format!("stored header {name}")));
        };
        response.headers_mut().append(name, value);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    tracing::debug!(status = status.as_u16(), "Idempotent replay");
    Ok(response)
}

/// Delete keys expired over an hour ago, in the background.
fn sweep(state: &AppState, now: DateTime<Utc>) {
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let swept = sqlx::query("delete from idempotency_keys where expires_at < $1")
            .bind(now - Duration::hours(SWEEP_GRACE_HOURS))
            .execute(&pool)
            .await;
        match swept {
            Ok(r) => tracing::debug!(
                deleted = r.rows_affected(),
                "Expired idempotency keys swept"
            ),
            Err(e) => tracing::warn!(error = %e, "Sweeping expired idempotency keys failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes_and_final_client_errors_are_stored() {
        for s in [200, 201, 202, 204, 303, 400, 403, 404, 405, 413, 415, 422] {
            let status = StatusCode::from_u16(s).unwrap_or_default();
            assert_eq!(outcome(status), Outcome::Store, "{s}");
        }
    }

    #[test]
    fn server_errors_and_answers_that_invite_a_retry_release_the_key() {
        for s in [500, 502, 503, 504, 401, 408, 409, 423, 429] {
            let status = StatusCode::from_u16(s).unwrap_or_default();
            assert_eq!(outcome(status), Outcome::Release, "{s}");
        }
    }

    #[test]
    fn a_key_is_1_to_255_visible_ascii_characters() {
        let ok =
            |s: &str| parse_key(&HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("")));
        assert!(ok("a").is_ok());
        assert!(ok("0b6f1c1e-6a8e-4f1e-9d3a-3f2a1c7e9b10").is_ok());
        assert!(ok(&"k".repeat(255)).is_ok());
        assert!(ok("").is_err());
        assert!(ok(&"k".repeat(256)).is_err());
        assert!(ok("with space").is_err());
        assert!(ok("tab\there").is_err());
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").unwrap_or(HeaderValue::from_static(""));
        assert!(parse_key(&latin1).is_err());
    }

    #[test]
    fn the_request_hash_covers_method_path_and_body() {
        let base = request_hash(&Method::POST, "/a?x=1", b"{}");
        assert_eq!(base, request_hash(&Method::POST, "/a?x=1", b"{}"));
        assert_eq!(base.len(), 64);
        assert_ne!(base, request_hash(&Method::PUT, "/a?x=1", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/a?x=2", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/a?x=1", b"{ }"));
        assert_ne!(
            request_hash(&Method::POST, "/a", b"b"),
            request_hash(&Method::POST, "/ab", b"")
        );
    }

    #[test]
    fn only_the_headers_that_matter_are_stored_in_order() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert("date", HeaderValue::from_static("today"));
        h.insert("x-position", HeaderValue::from_static("p"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            stored_headers(&h),
            vec![
                pair("content-type", "application/json"),
                pair("x-position", "p"),
                pair("set-cookie", "a=1"),
                pair("set-cookie", "b=2"),
            ]
        );
    }
}
