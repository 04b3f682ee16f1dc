//! `Idempotency-Key` end to end: one run per key under concurrency, byte-for-byte replays,
//! keys scoped per user, different requests under one key refused, server errors and
//! requests without a key never stored, bad keys refused, expiry.

use futures::future::join_all;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{TestApp, TestEnv};

const REGISTER: &str = "/api/v1/auth/register";

/// An answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// POST `body` to `path` with a client of its own (no cookies), with an optional key and
/// access token.
async fn post(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: &Value,
    token: Option<&str>,
) -> Answer {
    let mut req = reqwest::Client::new().post(app.url(path)).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("sent");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("select count(*) from events where event_type = $1")
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

async fn stored_keys(app: &TestApp) -> i64 {
    app.scalar_i64("select count(*) from idempotency_keys")
        .await
}

async fn access_token(app: &TestApp, email: &str) -> String {
    signed_up(app, email).await;
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

#[tokio::test]
async fn the_same_key_sent_ten_times_at_once_registers_once_and_every_202_is_the_first_answer() {
    let app = TestEnv::new().spawn_all().await;
    let body = json!({"email": "once@example.com", "password": PASSWORD});
    let answers =
        join_all((0..10).map(|_| post(&app, REGISTER, Some("reg-once-1"), &body, None))).await;

    assert_eq!(count(&app, "UserRegistered").await, 1);
    assert_eq!(count(&app, "DuplicateRegistrationAttempted").await, 0);
    for a in &answers {
        match a.status {
            202 => {}
            409 => assert_eq!(a.json()["error"], "conflict", "{:?}", a.json()),
            other => panic!("unexpected {other}: {:?}", a.json()),
        }
    }
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    let first: Vec<&&Answer> = accepted.iter().filter(|a| !a.replayed()).collect();
    assert_eq!(first.len(), 1, "exactly one answer ran the command");
    let first = first[0];
    // an anonymous answer about an email carries no position (docs/ACCOUNTS.md)
    assert!(first.header("x-position").is_none());
    for a in &accepted {
        assert_eq!(a.body, first.body);
        assert_eq!(a.header("x-position"), first.header("x-position"));
        assert_eq!(a.header("content-type"), first.header("content-type"));
    }

    // A later retry: the first answer, byte for byte, marked as a replay, with its own
    // request id.
    let again = post(&app, REGISTER, Some("reg-once-1"), &body, None).await;
    assert_eq!(again.status, 202);
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("x-position"), first.header("x-position"));
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert!(again.header("x-request-id").is_some());
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(count(&app, "UserRegistered").await, 1);

    // Anonymous: scoped by the client's address.
    let (scope, state): (String, String) =
        sqlx::query_as("select scope, state from idempotency_keys")
            .fetch_one(&app.pool)
            .await
            .expect("one key");
    assert_eq!((scope.as_str(), state.as_str()), ("ip:127.0.0.1", "done"));
    app.finish().await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_with_422() {
    let app = TestEnv::new().spawn_all().await;
    let a = post(
        &app,
        REGISTER,
        Some("k-422"),
        &json!({"email": "a@example.com"}),
        None,
    )
    .await;
    assert_eq!(a.status, 202);

    let b = post(
        &app,
        REGISTER,
        Some("k-422"),
        &json!({"email": "b@example.com"}),
        None,
    )
    .await;
    assert_eq!(b.status, 422, "{:?}", b.json());
    assert_eq!(b.json()["error"], "validation");
    assert!(
        b.json()["fields"]["Idempotency-Key"].is_string(),
        "{:?}",
        b.json()
    );
    assert!(!b.replayed());

    // the same body on another path is another request too
    let c = post(
        &app,
        "/api/v1/auth/resend-verification",
        Some("k-422"),
        &json!({"email": "a@example.com"}),
        None,
    )
    .await;
    assert_eq!(c.status, 422, "{:?}", c.json());
    assert_eq!(count(&app, "UserRegistered").await, 1);
    app.finish().await;
}

#[tokio::test]
async fn the_same_key_from_two_users_runs_once_for_each() {
    let app = TestEnv::new().spawn_all().await;
    let ada = access_token(&app, "ada@example.com").await;
    let bob = access_token(&app, "bob@example.com").await;
    let body = json!({"current_password": PASSWORD, "new_password": "a-brand-new-passphrase-42"});
    let path = "/api/v1/users/me/password";

    let a = post(&app, path, Some("change-pw"), &body, Some(&ada)).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert!(!a.replayed());
    let b = post(&app, path, Some("change-pw"), &body, Some(&bob)).await;
    assert_eq!(b.status, 200, "{:?}", b.json());
    assert!(!b.replayed(), "bob's key is not ada's");
    assert_eq!(count(&app, "PasswordChanged").await, 2);

    // each user's retry replays their own answer
    let again = post(&app, path, Some("change-pw"), &body, Some(&ada)).await;
    assert_eq!(again.status, 200);
    assert!(again.replayed());
    assert_eq!(again.body, a.body);
    assert_eq!(count(&app, "PasswordChanged").await, 2);
    let user_scopes = app
        .scalar_i64("select count(*) from idempotency_keys where scope like 'user:%'")
        .await;
    assert_eq!(user_scopes, 2);
    app.finish().await;
}

#[tokio::test]
async fn without_the_header_every_request_runs_and_nothing_is_stored() {
    let app = TestEnv::new().spawn_all().await;
    let same = json!({"email": "twice@example.com"});
    assert_eq!(post(&app, REGISTER, None, &same, None).await.status, 202);
    assert_eq!(post(&app, REGISTER, None, &same, None).await.status, 202);
    let other = json!({"email": "other@example.com"});
    assert_eq!(post(&app, REGISTER, None, &other, None).await.status, 202);
    // the repeated registration ran again (its owner is told), the other one ran too
    assert_eq!(count(&app, "UserRegistered").await, 2);
    assert_eq!(count(&app, "DuplicateRegistrationAttempted").await, 1);

    // methods other than POST pass through, header or not
    let get = reqwest::Client::new()
        .get(app.url("/healthz"))
        .header("Idempotency-Key", "get-key")
        .send()
        .await
        .expect("sent");
    assert_eq!(get.status().as_u16(), 200);
    assert!(get.headers().get("idempotent-replayed").is_none());
    assert_eq!(stored_keys(&app).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_server_error_is_not_stored_and_a_retry_with_the_key_runs_again() {
    let app = TestEnv::new().spawn_all().await;
    // Make registration fail inside the command: claiming the email raises.
    for sql in [
        "create function fail_claims() returns trigger language plpgsql as \
         $$ begin raise exception 'injected failure'; end $$",
        "create trigger fail_claims before insert on email_claims \
         for each row execute function fail_claims()",
    ] {
        sqlx::query(sql).execute(&app.pool).await.expect("trigger");
    }
    let body = json!({"email": "flaky@example.com"});
    let failed = post(&app, REGISTER, Some("k-500"), &body, None).await;
    assert_eq!(failed.status, 500, "{:?}", failed.json());
    assert_eq!(failed.json()["error"], "internal");
    assert_eq!(stored_keys(&app).await, 0, "the key was released");

    sqlx::query("drop trigger fail_claims on email_claims")
        .execute(&app.pool)
        .await
        .expect("drop trigger");
    let retried = post(&app, REGISTER, Some("k-500"), &body, None).await;
    assert_eq!(retried.status, 202, "{:?}", retried.json());
    assert!(!retried.replayed(), "the retry ran");
    assert_eq!(count(&app, "UserRegistered").await, 1);
    assert_eq!(stored_keys(&app).await, 1);
    app.finish().await;
}

#[tokio::test]
async fn a_key_that_is_empty_too_long_or_not_visible_ascii_is_refused_with_400() {
    let app = TestEnv::new().spawn_all().await;
    let body = json!({"email": "badkey@example.com"});
    let long = "k".repeat(300);
    for key in ["", long.as_str(), "two words"] {
        let a = post(&app, REGISTER, Some(key), &body, None).await;
        assert_eq!(a.status, 400, "key {key:?}: {:?}", a.json());
        assert_eq!(a.json()["error"], "validation");
        assert!(a.json()["fields"]["Idempotency-Key"].is_string());
    }
    // 255 characters is fine
    let max = "k".repeat(255);
    assert_eq!(
        post(&app, REGISTER, Some(&max), &body, None).await.status,
        202
    );
    assert_eq!(count(&app, "UserRegistered").await, 1);
    app.finish().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_and_nothing_is_stored() {
    let app = TestEnv::new().spawn_all().await;
    let huge = json!({"email": "big@example.com", "display_name": "x".repeat(3 * 1024 * 1024)});
    let a = post(&app, REGISTER, Some("k-413"), &huge, None).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"], "payload_too_large");
    assert_eq!(stored_keys(&app).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_key_expires_after_24_hours_and_then_runs_again() {
    let app = TestEnv::new().spawn_all().await;
    let body = json!({"email": "later@example.com"});
    let first = post(&app, REGISTER, Some("k-ttl"), &body, None).await;
    assert_eq!(first.status, 202);
    app.clock.advance(chrono::Duration::hours(23));
    assert!(post(&app, REGISTER, Some("k-ttl"), &body, None)
        .await
        .replayed());

    app.clock.advance(chrono::Duration::hours(2));
    let later = post(&app, REGISTER, Some("k-ttl"), &body, None).await;
    assert_eq!(later.status, 202);
    assert!(!later.replayed(), "an expired key runs again");
    // the second run met the existing account
    assert_eq!(count(&app, "UserRegistered").await, 1);
    assert_eq!(count(&app, "DuplicateRegistrationAttempted").await, 1);
    assert_eq!(stored_keys(&app).await, 1);
    app.finish().await;
}

/// A key left `running` (its process died, or its release failed while PostgreSQL was
/// away) answers 409 only while its lease lasts, then the next request with it runs.
#[tokio::test]
async fn a_key_left_running_is_free_again_once_its_lease_runs_out() {
    use usecases::Clock;
    let app = TestEnv::new().spawn_all().await;
    let body = json!({"email": "stuck@example.com"});
    let hash = api::idempotency::request_hash(
        &reqwest::Method::POST,
        REGISTER,
        &serde_json::to_vec(&body).expect("body"),
    );
    let now = app.clock.now();
    let scope = "ip:127.0.0.1";
    sqlx::query(
        "insert into idempotency_keys \
         (scope, key, request_hash, state, created_at, expires_at, lease_until) \
         values ($1, 'k-stuck', $2, 'running', $3, $3 + interval '24 hours', $3 + interval '10 seconds')",
    )
    .bind(scope)
    .bind(&hash)
    .bind(now)
    .execute(&app.pool)
    .await
    .expect("a key left running");
    let busy = post(&app, REGISTER, Some("k-stuck"), &body, None).await;
    assert_eq!(busy.status, 409, "{:?}", busy.json());
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(count(&app, "UserRegistered").await, 0);

    app.clock.advance(chrono::Duration::seconds(11));
    let ran = post(&app, REGISTER, Some("k-stuck"), &body, None).await;
    assert_eq!(ran.status, 202, "{:?}", ran.json());
    assert!(!ran.replayed());
    assert_eq!(count(&app, "UserRegistered").await, 1);
    let again = post(&app, REGISTER, Some("k-stuck"), &body, None).await;
    assert!(
        again.replayed(),
        "the answer that was sent is the one a retry gets"
    );
    assert_eq!(again.body, ran.body);
    let running = app
        .scalar_i64("select count(*) from idempotency_keys where state = 'running'")
        .await;
    assert_eq!(running, 0);
    app.finish().await;
}

/// An answer stored for a request made with an admin API key is replayed only to the same
/// key: the same `Idempotency-Key` from the same address with no credentials (or another
/// key) runs as itself and is refused.
#[tokio::test]
async fn an_admin_keys_stored_answer_is_never_replayed_to_a_caller_without_it() {
    let app = crate::admin::admin_env().spawn_all().await;
    let (code, out, err) = crate::admin::cli(
        &app,
        &["api-key", "create", "--name", "idempotency", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    let body = json!({"email": "made-by-key@example.com", "verified": true});
    let send = |admin_key: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(app.url("/api/v1/admin/users"))
            .header("Idempotency-Key", "k-admin-1")
            .json(&body);
        if let Some(k) = admin_key {
            req = req.header("x-admin-key", k);
        }
        req.send()
    };
    let first = send(Some(&key)).await.expect("sent");
    assert_eq!(first.status().as_u16(), 201);
    let first_body = first.bytes().await.expect("body");
    let again = send(Some(&key)).await.expect("sent");
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.bytes().await.expect("body"), first_body);

    let anonymous = send(None).await.expect("sent");
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "no credentials, no replay"
    );
    assert!(anonymous.headers().get("idempotent-replayed").is_none());
    let text = anonymous.text().await.expect("body");
    assert!(!text.contains("made-by-key@example.com"), "{text}");
    let other = send(Some("chk_not-the-key")).await.expect("sent");
    assert_eq!(other.status().as_u16(), 401);
    assert!(other.headers().get("idempotent-replayed").is_none());
    app.finish().await;
}
