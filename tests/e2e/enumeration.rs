//! Known and unknown addresses are indistinguishable to an anonymous caller: the same
//! status, body and headers, the same trace in the log (seen through the positions of the
//! caller's own commands), and the same lockout; and a successful password reset gives its
//! owner's account a fresh rate-limit allowance.

use std::collections::BTreeSet;

use eventstore::secrets::{Purpose, Secrets};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::auth::{latest_nonce, login, signed_up, PASSWORD};
use crate::conversations::token;
use crate::support::{json, TestApp, TestEnv};

const SECRET: &[u8] = b"test-secret-key-that-is-long-enough-000";

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// The headers a client could compare (not the ones that differ per response anyway).
    fn header_names(&self) -> BTreeSet<String> {
        self.headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| !matches!(k.as_str(), "date" | "x-request-id" | "content-length"))
            .collect()
    }

    fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        v.sort();
        v
    }
}

async fn post(app: &TestApp, path: &str, body: Value) -> Answer {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("sent");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

/// The log position of a command of the observer's own: what any client sees.
async fn observed_position(app: &TestApp, observer: &str) -> u64 {
    let (s, b) = json(
        reqwest::Client::new()
            .post(app.url("/api/v1/metrics"))
            .bearer_auth(observer)
            .json(&json!({"kind": "api_calls", "amount": 1}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let cursor = b["data"]["position"].as_str().expect("position");
    let (_, position) = cursor.split_once('-').expect("a cursor");
    u64::from_str_radix(position, 16).expect("hex")
}

/// How far the log moved while `action` ran, as the observer sees it.
async fn trace_of(app: &TestApp, observer: &str, path: &str, body: Value) -> (u64, Answer) {
    let before = observed_position(app, observer).await;
    let started = std::time::Instant::now();
    let answer = post(app, path, body).await;
    // a known address costs a few more queries: every answer waits for the floor
    assert!(
        started.elapsed() >= FLOOR,
        "{path} answered in {:?}, under the floor",
        started.elapsed()
    );
    let after = observed_position(app, observer).await;
    (after - before, answer)
}

const FLOOR: std::time::Duration = std::time::Duration::from_millis(300);

fn assert_alike(what: &str, a: &(u64, Answer), b: &(u64, Answer)) {
    assert_eq!(a.1.status, b.1.status, "{what}: status");
    assert_eq!(
        String::from_utf8_lossy(&a.1.body),
        String::from_utf8_lossy(&b.1.body),
        "{what}: body"
    );
    assert_eq!(
        a.1.comparable_headers(),
        b.1.comparable_headers(),
        "{what}: headers"
    );
    assert!(
        !a.1.header_names().contains("x-position"),
        "{what}: an anonymous answer carries no position"
    );
    assert_eq!(a.0, b.0, "{what}: the positions the log moved by");
}

#[tokio::test]
async fn known_and_unknown_addresses_give_the_same_answers_and_leave_the_same_trace() {
    let app = TestEnv::new()
        .set("ANONYMOUS_ANSWER_MIN_MS", FLOOR.as_millis().to_string())
        .spawn_all()
        .await;
    let observer = token(&app, "observer@example.com").await;
    signed_up(&app, "known@example.com").await;
    let pending = post(
        &app,
        "/api/v1/auth/register",
        json!({"email": "pending@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(pending.status, 202);

    let unknown = |n: u32| format!("nobody{n}@example.com");
    let register = |email: &str| json!({"email": email, "password": "some-long-passphrase-1"});
    let known = trace_of(
        &app,
        &observer,
        "/api/v1/auth/register",
        register("known@example.com"),
    )
    .await;
    let new = trace_of(
        &app,
        &observer,
        "/api/v1/auth/register",
        register(&unknown(1)),
    )
    .await;
    assert_alike("register", &known, &new);
    assert_eq!(
        known.0, 3,
        "two events of the command and one of the observer"
    );

    let path = "/api/v1/auth/resend-verification";
    let pending = trace_of(
        &app,
        &observer,
        path,
        json!({"email": "pending@example.com"}),
    )
    .await;
    let nobody = trace_of(&app, &observer, path, json!({"email": unknown(2)})).await;
    let verified = trace_of(&app, &observer, path, json!({"email": "known@example.com"})).await;
    assert_alike("resend, pending vs unknown", &pending, &nobody);
    assert_alike("resend, verified vs unknown", &verified, &nobody);

    let path = "/api/v1/auth/forgot-password";
    let known = trace_of(&app, &observer, path, json!({"email": "known@example.com"})).await;
    let nobody = trace_of(&app, &observer, path, json!({"email": unknown(3)})).await;
    assert_alike("forgot-password", &known, &nobody);

    let path = "/api/v1/auth/login";
    let known = trace_of(
        &app,
        &observer,
        path,
        json!({"email": "known@example.com", "password": "not-the-password-at-all"}),
    )
    .await;
    let nobody = trace_of(
        &app,
        &observer,
        path,
        json!({"email": unknown(4), "password": "not-the-password-at-all"}),
    )
    .await;
    assert_alike("a failed sign-in", &known, &nobody);

    // the log never holds an address that has no account
    for n in 1..=4 {
        let found = app
            .scalar_i64(&format!(
                "select count(*) from events where payload::text like '%nobody{n}%' or metadata::text like '%nobody{n}%'"
            ))
            .await;
        assert_eq!(found, 0, "nobody{n} is in the log");
    }
    app.finish().await;
}

#[tokio::test]
async fn an_unknown_address_locks_after_as_many_failures_as_an_account() {
    let app = TestEnv::new().spawn_all().await;
    signed_up(&app, "real@example.com").await;
    let mut seen = vec![];
    for email in ["real@example.com", "ghost@example.com"] {
        let mut statuses = vec![];
        for _ in 0..6 {
            let (s, b) = login(&app, email, "not-the-password-at-all").await;
            if s == 423 {
                assert_eq!(b["error"], "account_locked", "{b}");
            }
            statuses.push(s);
        }
        seen.push(statuses);
    }
    assert_eq!(
        seen[0], seen[1],
        "an account and an unknown address lock alike"
    );
    assert_eq!(seen[0], vec![401, 401, 401, 401, 423, 423]);
    // a moment past the lock, the unknown address answers 401 again
    app.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(
        login(&app, "ghost@example.com", "not-the-password-at-all")
            .await
            .0,
        401
    );
    app.finish().await;
}

/// Attempts (perhaps an attacker's) used up the account's allowance for the minute; the
/// owner resets the password by mail and signs in at once with the new one.
#[tokio::test]
async fn a_successful_reset_gives_the_account_a_fresh_allowance() {
    let env = TestEnv::new().set("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE", "4");
    let app = env.spawn_all().await;
    let email = "owner@example.com";
    let user = signed_up(&app, email).await;
    let forgot = post(
        &app,
        "/api/v1/auth/forgot-password",
        json!({"email": email}),
    )
    .await;
    assert_eq!(forgot.status, 202);
    let mut last = 0;
    for _ in 0..4 {
        last = login(&app, email, "someone-guessing-here").await.0;
    }
    assert_eq!(last, 429, "the account's allowance is used up");
    let (user_id, nonce) = latest_nonce(&app, email, "PasswordResetRequested").await;
    assert_eq!(user_id, user);
    let token = Secrets::new(SECRET).link_token(Purpose::PasswordReset, user_id, &nonce);
    let new_password = "a-brand-new-passphrase-42";
    let reset = post(
        &app,
        "/api/v1/auth/reset-password",
        json!({"token": token, "new_password": new_password}),
    )
    .await;
    assert_eq!(
        reset.status,
        200,
        "{}",
        String::from_utf8_lossy(&reset.body)
    );
    let (s, b) = login(&app, email, new_password).await;
    assert_eq!(s, 200, "the first sign-in after the reset: {b}");
    app.finish().await;
}
