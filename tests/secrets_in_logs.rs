//! No password, token, code or hash in any log line or error body.
//!
//! Its own test binary, so that it can capture every log line of the process (debug level,
//! every crate, in the production JSON format) while a whole account journey runs with
//! canary values, and then search the capture for them.

#[path = "e2e/support.rs"]
#[expect(
    dead_code,
    reason = "shared with the e2e binary; this test uses part of it"
)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use eventstore::secrets::{Purpose, Secrets};
use serde_json::{json, Value};
use support::TestEnv;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const SECRET: &[u8] = b"test-secret-key-that-is-long-enough-000";

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_body() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_writer(capture.clone())
        .init();

    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let c = reqwest::Client::new();
    let password = "Canary-Passw0rd-5b7e1c!";
    let wrong = "Wrong-Canary-3e8b0d!";
    let new_password = "Second-Canary-9d2f4a!";
    let email = "canary@example.com";
    let mut secrets: Vec<String> = vec![password.into(), wrong.into(), new_password.into()];
    let mut error_bodies: Vec<String> = vec![];
    let call = |resp: reqwest::Response| async {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, text)
    };

    // register, including bad requests that carry the password
    for body in [
        json!({"email": email, "password": password}),
        json!({"email": 42, "password": password}),
        json!({"email": email, "password": password, "admin": true}),
        json!({"email": "canary2@example.com", "password": "short"}),
    ] {
        let (s, t) = call(
            c.post(app.url("/api/v1/auth/register"))
                .json(&body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        if !s.is_success() {
            error_bodies.push(t);
        }
    }
    let malformed = format!("{{\"email\": \"{email}\", \"password\": \"{password}\"");
    let (_, t) = call(
        c.post(app.url("/api/v1/auth/register"))
            .header("content-type", "application/json")
            .body(malformed)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    error_bodies.push(t);

    // verify with the code
    let (user, nonce): (String, String) = sqlx::query_as(
        "select aggregate_id, payload -> 'EmailVerificationRequested' ->> 'nonce' from events \
         where event_type = 'EmailVerificationRequested'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("nonce");
    let nonce = app.opened(nonce).await;
    let user_id = user.parse().expect("uuid");
    let s = Secrets::new(SECRET);
    let code = s.code(Purpose::EmailVerification, user_id, &nonce);
    secrets.push(s.link_token(Purpose::EmailVerification, user_id, &nonce));
    let (st, t) = call(
        c.post(app.url("/api/v1/auth/verify-email"))
            .json(&json!({"email": email, "code": "000000"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    if !st.is_success() {
        error_bodies.push(t);
    }
    let (st, _) = call(
        c.post(app.url("/api/v1/auth/verify-email"))
            .json(&json!({"email": email, "code": code}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(st.is_success());
    if code != "000000" {
        secrets.push(code);
    }

    // wrong and right sign-ins, refresh, me
    let (_, t) = call(
        c.post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": wrong}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    error_bodies.push(t);
    let (st, t) = call(
        c.post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(st.is_success(), "{t}");
    let login: Value = serde_json::from_str(&t).expect("json");
    let access = login["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh = login["data"]["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    secrets.push(access.clone());
    secrets.push(refresh.clone());
    secrets.push(
        refresh
            .split_once('.')
            .map(|(_, s)| s.to_owned())
            .unwrap_or_default(),
    );
    let (st, t) = call(
        c.post(app.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(st.is_success(), "{t}");
    let refreshed: Value = serde_json::from_str(&t).expect("json");
    secrets.push(
        refreshed["data"]["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    secrets.push(
        refreshed["data"]["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let (_, t) = call(
        c.post(app.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": format!("{refresh}x")}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    error_bodies.push(t);
    let (_, t) = call(
        c.get(app.url("/api/v1/users/me"))
            .bearer_auth(format!("{access}x"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    error_bodies.push(t);

    // change password with a wrong current one, then forgot + reset
    let (_, t) = call(
        c.post(app.url("/api/v1/users/me/password"))
            .bearer_auth(&access)
            .json(&json!({"current_password": wrong, "new_password": new_password}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    error_bodies.push(t);
    let _ = c
        .post(app.url("/api/v1/auth/forgot-password"))
        .json(&json!({"email": email}))
        .send()
        .await;
    let (_, reset_nonce): (String, String) = sqlx::query_as(
        "select aggregate_id, payload -> 'PasswordResetRequested' ->> 'nonce' from events \
         where event_type = 'PasswordResetRequested'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("nonce");
    let reset_nonce = app.opened(reset_nonce).await;
    let reset_code = s.code(Purpose::PasswordReset, user_id, &reset_nonce);
    secrets.push(s.link_token(Purpose::PasswordReset, user_id, &reset_nonce));
    let (st, t) = call(
        c.post(app.url("/api/v1/auth/reset-password"))
            .json(&json!({"email": email, "code": reset_code, "new_password": new_password}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(st.is_success(), "{t}");
    secrets.push(reset_code);

    // every password hash in the log
    let hashes: Vec<String> = sqlx::query_scalar(
        "select coalesce(payload -> 'UserRegistered' ->> 'password_hash', payload -> 'PasswordReset' ->> 'password_hash') \
         from events where event_type in ('UserRegistered', 'PasswordReset')",
    )
    .fetch_all(&app.pool)
    .await
    .expect("hashes");
    // sealed in the log: opened, as the command side reads them
    let mut opened = Vec::with_capacity(hashes.len());
    for h in hashes {
        opened.push(app.opened(h).await);
    }
    let hashes = opened;
    // the salt+hash part of each PHC string: allowed in the event log, nowhere else
    let hash_tails: Vec<String> = hashes
        .iter()
        .filter_map(|h| h.rsplit('$').next().map(str::to_owned))
        .collect();
    app.wait_for_projections("mails and read models caught up")
        .await;
    // no raw password, code or token in the event log either
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        let hits = sqlx::query_scalar::<_, i64>(
            "select count(*) from events where payload::text like '%' || $1 || '%' \
             or metadata::text like '%' || $1 || '%'",
        )
        .bind(secret)
        .fetch_one(&app.pool)
        .await
        .expect("search");
        assert_eq!(hits, 0, "a secret is in the event log: {}…", &secret[..6]);
    }
    app.finish().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().map(|v| v.clone()).unwrap_or_default())
        .to_string();
    assert!(
        logs.lines().count() > 50,
        "the capture saw the run ({} lines)",
        logs.lines().count()
    );
    assert!(
        logs.contains("Signed in"),
        "the capture has the app's own lines"
    );
    for secret in secrets
        .iter()
        .chain(hash_tails.iter())
        .filter(|s| s.len() >= 6)
    {
        if secret.len() == 6 && secret.chars().all(|c| c.is_ascii_digit()) {
            // a 6-digit code: look for it as a value, not inside timestamps' microseconds
            for pattern in [
                format!("\"{secret}\""),
                format!("={secret}"),
                format!(": {secret}"),
                format!("\\\"{secret}\\\""),
            ] {
                assert!(!logs.contains(&pattern), "a code is in the logs: {pattern}");
            }
        } else {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret is in the logs: {}…",
                &secret[..6]
            );
        }
        for body in &error_bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a secret is in an error body: {body}"
            );
        }
    }
}
