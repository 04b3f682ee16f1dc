//! Accounts and sessions end to end: the journey through a real SMTP server, uniqueness
//! under concurrency, answers that do not leak, refresh-token reuse, lockout, forged
//! tokens, resets.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chronicle::{Role, Roles};
use eventstore::secrets::{Purpose, Secrets};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::smtp_sink::SmtpSink;
use crate::support::{json, TestApp, TestEnv};

pub const PASSWORD: &str = "correct-horse-battery-staple";
const SECRET: &[u8] = b"test-secret-key-that-is-long-enough-000";

fn api_roles() -> Roles {
    Roles::only(&[Role::Api, Role::Relay, Role::Projector])
}

/// The user id and the nonce of the newest `event_type` (with a `nonce`) for `email`,
/// opened (the log holds it sealed).
pub async fn latest_nonce(app: &TestApp, email: &str, event_type: &str) -> (Uuid, String) {
    let row: (String, String) = sqlx::query_as(
        "select aggregate_id, payload -> $2 ->> 'nonce' from events \
         where event_type = $2 \
         and aggregate_id = (select user_id::text from email_claims where email = $1) \
         order by transaction_id desc, position desc limit 1",
    )
    .bind(email)
    .bind(event_type)
    .fetch_one(&app.pool)
    .await
    .expect("a nonce");
    (row.0.parse().expect("uuid"), app.opened(row.1).await)
}

async fn post(client: &reqwest::Client, app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    json(
        client
            .post(app.url(path))
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

/// Register with a password and verify with the code (computed from the event's nonce).
pub async fn signed_up(app: &TestApp, email: &str) -> Uuid {
    let (s, b) = post(
        &app.client,
        app,
        "/api/v1/auth/register",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (user_id, nonce) = latest_nonce(app, email, "EmailVerificationRequested").await;
    let code = Secrets::new(SECRET).code(Purpose::EmailVerification, user_id, &nonce);
    let (s, b) = post(
        &app.client,
        app,
        "/api/v1/auth/verify-email",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    user_id
}

/// Sign in with a client of its own (no shared cookies): (access, refresh).
pub async fn login(app: &TestApp, email: &str, password: &str) -> (u16, Value) {
    post(
        &reqwest::Client::new(),
        app,
        "/api/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn tokens(app: &TestApp, email: &str) -> (String, String) {
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    (
        b["data"]["access_token"]
            .as_str()
            .expect("access")
            .to_owned(),
        b["data"]["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    )
}

async fn me(app: &TestApp, access: &str) -> (u16, Value) {
    json(
        reqwest::Client::new()
            .get(app.url("/api/v1/users/me"))
            .bearer_auth(access)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (u16, Value) {
    post(
        &reqwest::Client::new(),
        app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh_token}),
    )
    .await
}

#[tokio::test]
async fn the_whole_journey_from_registration_to_logout_through_a_real_smtp_server() {
    let sink = SmtpSink::start().await;
    let env = TestEnv::new().set("SMTP_URL", sink.url());
    let app = env.spawn_all().await;
    let email = "journey@example.com";
    let (s, b) = post(
        &app.client,
        &app,
        "/api/v1/auth/register",
        json!({"email": email, "password": PASSWORD, "display_name": "Jo"}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    // An unverified account cannot sign in yet.
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("email_not_verified")));

    let mail = sink.wait_for(email, "erif", Duration::from_secs(30)).await;
    let link = mail
        .link_containing("/api/v1/auth/verify?token=")
        .expect("a verification link");
    // PUBLIC_URL defaults to BIND, which is port 0 in tests: keep the path and query
    let link = app.url(&link[link.find("/api/").expect("a path")..]);
    let code = mail.six_digit_code().expect("a 6-digit code");
    assert_eq!(code.len(), 6);
    let page = reqwest::Client::new()
        .get(&link)
        .send()
        .await
        .expect("link");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("verified"));
    // single use: the link does not work twice, nor does the code afterwards
    let again = reqwest::Client::new()
        .get(&link)
        .send()
        .await
        .expect("link");
    assert_eq!(again.status(), 400);
    let (s, _) = post(
        &app.client,
        &app,
        "/api/v1/auth/verify-email",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!(s, 400);

    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["token_type"], "Bearer");
    assert_eq!(b["data"]["user"]["email"], email);
    assert_eq!(b["data"]["user"]["status"], "active");
    assert!(b["data"]["user"]["last_login_at"].is_string());
    let access = b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh_token = b["data"]["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    let (s, b) = me(&app, &access).await;
    assert_eq!((s, b["data"]["display_name"].as_str()), (200, Some("Jo")));

    let (s, b) = refresh(&app, &refresh_token).await;
    assert_eq!(s, 200, "{b}");
    let access2 = b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh2 = b["data"]["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(refresh2, refresh_token);
    assert_eq!(me(&app, &access2).await.0, 200);

    let resp = reqwest::Client::new()
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access2)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    // Every token of the session is dead at once.
    for token in [&access, &access2] {
        let (s, b) = me(&app, token).await;
        assert_eq!((s, b["error"].as_str()), (401, Some("token_invalid")));
    }
    for token in [&refresh_token, &refresh2] {
        assert_eq!(refresh(&app, token).await.0, 401);
    }
    // and a "new sign-in" mail went out
    sink.wait_for(email, "sign-in", Duration::from_secs(30))
        .await;
    app.finish().await;
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_email_make_exactly_one_account() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    let requests = (0..20).map(|i| {
        let client = reqwest::Client::new();
        let url = app.url("/api/v1/auth/register");
        async move {
            client
                .post(url)
                .json(&json!({"email": "twins@example.com", "display_name": format!("n{i}")}))
                .send()
                .await
                .expect("sent")
                .status()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'UserRegistered'")
            .await,
        1
    );
    assert_eq!(app.scalar_i64("select count(*) from email_claims").await, 1);
    app.wait_for_projections("caught up").await;
    assert_eq!(
        app.scalar_i64("select count(*) from users where email = 'twins@example.com'")
            .await,
        1
    );
    app.finish().await;
}

async fn raw(client: &reqwest::Client, app: &TestApp, path: &str, body: Value) -> (u16, Vec<u8>) {
    let resp = client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("sent");
    (
        resp.status().as_u16(),
        resp.bytes().await.expect("body").to_vec(),
    )
}

#[tokio::test]
async fn known_and_unknown_emails_get_byte_identical_answers() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    signed_up(&app, "known@example.com").await;
    let c = reqwest::Client::new();
    for (path, known, unknown) in [
        (
            "/api/v1/auth/register",
            json!({"email": "known@example.com"}),
            json!({"email": "unknown@example.com"}),
        ),
        (
            "/api/v1/auth/forgot-password",
            json!({"email": "known@example.com"}),
            json!({"email": "nobody@example.com"}),
        ),
        (
            "/api/v1/auth/resend-verification",
            json!({"email": "known@example.com"}),
            json!({"email": "nobody@example.com"}),
        ),
        (
            "/api/v1/auth/login",
            json!({"email": "known@example.com", "password": "wrong-password-123"}),
            json!({"email": "nobody@example.com", "password": "wrong-password-123"}),
        ),
    ] {
        let a = raw(&c, &app, path, known).await;
        let b = raw(&c, &app, path, unknown).await;
        assert_eq!(
            a,
            b,
            "{path}: {} vs {}",
            String::from_utf8_lossy(&a.1),
            String::from_utf8_lossy(&b.1)
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn replaying_a_rotated_refresh_token_kills_the_whole_session() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    signed_up(&app, "rotate@example.com").await;
    let (_, first) = tokens(&app, "rotate@example.com").await;
    let mut current = first.clone();
    let mut access = String::new();
    for _ in 0..3 {
        let (s, b) = refresh(&app, &current).await;
        assert_eq!(s, 200, "{b}");
        current = b["data"]["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned();
        access = b["data"]["access_token"]
            .as_str()
            .expect("access")
            .to_owned();
    }
    assert_eq!(me(&app, &access).await.0, 200);
    // the first token again: a replay
    let (s, b) = refresh(&app, &first).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("token_invalid")));
    // the newest token and its access token are dead too
    assert_eq!(refresh(&app, &current).await.0, 401);
    assert_eq!(me(&app, &access).await.0, 401);
    assert_eq!(
        app.scalar_i64(
            "select count(*) from events where event_type = 'RefreshTokenReuseDetected'"
        )
        .await,
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn after_too_many_failures_even_the_right_password_is_refused_until_the_lock_expires() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    signed_up(&app, "lock@example.com").await;
    let c = reqwest::Client::new();
    let wrong = json!({"email": "lock@example.com", "password": "not-the-password-1"});
    for _ in 0..4 {
        let (s, _) = raw(&c, &app, "/api/v1/auth/login", wrong.clone()).await;
        assert_eq!(s, 401);
    }
    let (s, locked_wrong) = raw(&c, &app, "/api/v1/auth/login", wrong.clone()).await;
    assert_eq!(s, 423, "{}", String::from_utf8_lossy(&locked_wrong));
    let resp = c
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "lock@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 423);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let locked_right = resp.bytes().await.expect("body").to_vec();
    assert_eq!(
        locked_right, locked_wrong,
        "the right password gets the same answer during the lock"
    );

    app.clock.advance(chrono::Duration::seconds(61));
    let (s, b) = login(&app, "lock@example.com", PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    app.finish().await;
}

fn forge(claims: &Value, key: &[u8], alg: Algorithm) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).expect("encode")
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    let user_id = signed_up(&app, "forge@example.com").await;
    let (access, refresh_token) = tokens(&app, "forge@example.com").await;
    assert_eq!(me(&app, &access).await.0, 200);
    let parts: Vec<&str> = access.split('.').collect();
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let now = chrono::Utc::now().timestamp();
    let with = |k: &str, v: Value| {
        let mut p = payload.clone();
        p[k] = v;
        p
    };
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("json"))
    );
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&with("role", json!("admin"))).expect("json")),
        parts[2]
    );
    let cases = vec![
        ("alg none", none_alg),
        (
            "wrong key",
            forge(
                &payload,
                b"some-other-key-some-other-key-00",
                Algorithm::HS256,
            ),
        ),
        ("tampered payload", tampered),
        (
            "expired",
            forge(&with("exp", json!(now - 3600)), SECRET, Algorithm::HS256),
        ),
        (
            "wrong audience",
            forge(
                &with("aud", json!("someone-else")),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong issuer",
            forge(&with("iss", json!("evil")), SECRET, Algorithm::HS256),
        ),
        (
            "another algorithm",
            forge(&payload, SECRET, Algorithm::HS512),
        ),
        (
            "unknown session",
            forge(
                &with("sid", json!(Uuid::new_v4().to_string())),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        ("refresh token as access token", refresh_token.clone()),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (name, token) in cases {
        let (s, b) = me(&app, &token).await;
        assert_eq!(s, 401, "{name}: {b}");
        let kind = b["error"].as_str().unwrap_or_default();
        let want = if name == "expired" {
            "token_expired"
        } else {
            "token_invalid"
        };
        assert_eq!(kind, want, "{name}: {b}");
    }
    // never from a query string
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/users/me?access_token={access}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    let _ = user_id;
    app.finish().await;
}

#[tokio::test]
async fn a_reset_revokes_every_session_and_only_the_new_password_works() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    signed_up(&app, "reset@example.com").await;
    let (a1, _) = tokens(&app, "reset@example.com").await;
    let (a2, r2) = tokens(&app, "reset@example.com").await;
    assert_eq!(me(&app, &a1).await.0, 200);

    let (s, _) = post(
        &app.client,
        &app,
        "/api/v1/auth/forgot-password",
        json!({"email": "reset@example.com"}),
    )
    .await;
    assert_eq!(s, 202);
    let (user_id, nonce) = latest_nonce(&app, "reset@example.com", "PasswordResetRequested").await;
    let code = Secrets::new(SECRET).code(Purpose::PasswordReset, user_id, &nonce);
    // the policy applies to the new password
    let (s, b) = post(
        &app.client,
        &app,
        "/api/v1/auth/reset-password",
        json!({"email": "reset@example.com", "code": code, "new_password": "password123"}),
    )
    .await;
    assert_eq!(
        (s, b["fields"]["new_password"].is_string()),
        (422, true),
        "{b}"
    );
    let new_password = "a-brand-new-passphrase-42";
    let (s, b) = post(
        &app.client,
        &app,
        "/api/v1/auth/reset-password",
        json!({"email": "reset@example.com", "code": code, "new_password": new_password}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for a in [&a1, &a2] {
        assert_eq!(me(&app, a).await.0, 401);
    }
    assert_eq!(refresh(&app, &r2).await.0, 401);
    assert_eq!(login(&app, "reset@example.com", PASSWORD).await.0, 401);
    assert_eq!(login(&app, "reset@example.com", new_password).await.0, 200);
    // the code was single-use
    let (s, _) = post(&app.client, &app, "/api/v1/auth/reset-password", json!({"email": "reset@example.com", "code": code, "new_password": "yet-another-passphrase-7"})).await;
    assert_eq!(s, 400);
    app.finish().await;
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_signs_out_other_sessions() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    signed_up(&app, "change@example.com").await;
    let (other, _) = tokens(&app, "change@example.com").await;
    let (mine, _) = tokens(&app, "change@example.com").await;
    let c = reqwest::Client::new();
    let change = |current: &str, new: &str| {
        c.post(app.url("/api/v1/users/me/password"))
            .bearer_auth(&mine)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    assert_eq!(
        change("wrong-current-pass", "another-passphrase-99")
            .await
            .expect("sent")
            .status(),
        401
    );
    assert_eq!(
        change(PASSWORD, "another-passphrase-99")
            .await
            .expect("sent")
            .status(),
        200
    );
    assert_eq!(me(&app, &mine).await.0, 200, "this session stays");
    assert_eq!(
        me(&app, &other).await.0,
        401,
        "the other session is signed out"
    );
    assert_eq!(login(&app, "change@example.com", PASSWORD).await.0, 401);
    assert_eq!(
        login(&app, "change@example.com", "another-passphrase-99")
            .await
            .0,
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn profile_avatar_and_sessions_of_the_signed_in_user() {
    let env = TestEnv::new();
    let app = env.spawn(api_roles()).await;
    let user_id = signed_up(&app, "me@example.com").await;
    let (access, _) = tokens(&app, "me@example.com").await;
    let (other, _) = tokens(&app, "me@example.com").await;
    let c = reqwest::Client::new();
    let (s, b) = json(
        c.patch(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .json(&json!({"display_name": "Mia", "timezone": "Europe/Berlin"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["data"]["display_name"].as_str(),
            b["data"]["timezone"].as_str()
        ),
        (Some("Mia"), Some("Europe/Berlin"))
    );
    let (s, b) = json(
        c.patch(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .json(&json!({"role": "admin"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (422, Some("validation")), "{b}");

    // Avatar: a PNG by content; SVG and oversize refused.
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8; 64][..]].concat();
    let (s, b) = json(
        c.put(app.url("/api/v1/users/me/avatar"))
            .bearer_auth(&access)
            .header("content-type", "image/png")
            .body(png.clone())
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let url = b["data"]["avatar_url"]
        .as_str()
        .expect("avatar_url")
        .to_owned();
    let img = c.get(app.url(&url)).send().await.expect("sent");
    assert_eq!(
        img.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert_eq!(img.bytes().await.expect("bytes").to_vec(), png);
    let svg = c
        .put(app.url("/api/v1/users/me/avatar"))
        .bearer_auth(&access)
        .header("content-type", "image/png")
        .body("<svg xmlns=\"http://www.w3.org/2000/svg\"/>")
        .send()
        .await
        .expect("sent");
    assert_eq!(svg.status(), 415);
    let big = c
        .put(app.url("/api/v1/users/me/avatar"))
        .bearer_auth(&access)
        .header("content-type", "image/png")
        .body([&b"\x89PNG\r\n\x1a\n"[..], &vec![0u8; 3 * 1024 * 1024][..]].concat())
        .send()
        .await
        .expect("sent");
    assert_eq!(big.status(), 413);

    // Sessions: two, one current; revoking the other ends it.
    let (s, b) = json(
        c.get(app.url("/api/v1/users/me/sessions"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200);
    let list = b["data"].as_array().expect("list").clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    let other_id = list
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("other")
        .to_owned();
    let resp = c
        .delete(app.url(&format!("/api/v1/users/me/sessions/{other_id}")))
        .bearer_auth(&access)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    assert_eq!(me(&app, &other).await.0, 401);
    assert_eq!(me(&app, &access).await.0, 200);
    let _ = user_id;
    app.finish().await;
}

#[tokio::test]
async fn auth_endpoints_are_rate_limited_per_ip_with_retry_after() {
    let env = TestEnv::new().set("RATE_LIMIT_AUTH_IP_PER_MINUTE", "3");
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let c = reqwest::Client::new();
    let mut statuses = vec![];
    let mut retry_after = None;
    for i in 0..5 {
        let resp = c
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": format!("x{i}@example.com"), "password": "whatever-password"}))
            .send()
            .await
            .expect("sent");
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (_, b) = json(resp).await;
            assert_eq!(b["error"], "rate_limited");
        }
    }
    assert_eq!(statuses, vec![401, 401, 401, 429, 429]);
    assert!(retry_after
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    app.finish().await;
}

#[tokio::test]
async fn responses_carry_security_headers_and_no_store() {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let resp = reqwest::Client::new()
        .get(app.url("/health/live"))
        .send()
        .await
        .expect("sent");
    let h = resp.headers();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }
    assert!(h.get("content-security-policy").is_some());
    app.finish().await;
}

#[tokio::test]
async fn an_admin_is_seeded_once_from_the_environment() {
    let env = TestEnv::new()
        .set("ADMIN_EMAIL", "root@example.com")
        .set("ADMIN_PASSWORD", "an-admin-passphrase-1");
    let app = env.spawn(api_roles()).await;
    let (s, b) = login(&app, "root@example.com", "an-admin-passphrase-1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["user"]["role"], "admin");
    app.stop().await;
    let again = env.spawn(api_roles()).await;
    assert_eq!(
        again
            .scalar_i64("select count(*) from events where event_type = 'UserRegistered'")
            .await,
        1
    );
    again.finish().await;
}

#[tokio::test]
async fn secure_cookies_are_prefixed_host_only_and_work_for_requests_and_refresh() {
    // COOKIE_SECURE=true is what production always has (config refuses it off there)
    let app = TestEnv::new()
        .set("COOKIE_SECURE", "true")
        .spawn(api_roles())
        .await;
    signed_up(&app, "cookie@example.com").await;
    let client = reqwest::Client::new();
    let r = client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "cookie@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let value = |prefix: &str| {
        set.iter()
            .find(|c| c.starts_with(prefix))
            .and_then(|c| c[prefix.len()..].split(';').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{prefix} in {set:?}"))
    };
    let access = value("__Host-chronicle_access=");
    let refresh = value("__Secure-chronicle_refresh=");
    let access_cookie = set
        .iter()
        .find(|c| c.starts_with("__Host-"))
        .expect("access cookie");
    assert!(access_cookie.contains("; Secure"), "{access_cookie}");
    assert!(access_cookie.contains("; Path=/;"), "{access_cookie}");
    assert!(
        !access_cookie.to_lowercase().contains("domain"),
        "{access_cookie}"
    );
    let refresh_cookie = set
        .iter()
        .find(|c| c.starts_with("__Secure-"))
        .expect("refresh cookie");
    assert!(refresh_cookie.contains("; Secure"), "{refresh_cookie}");
    assert!(
        refresh_cookie.contains("; Path=/api/v1/auth;"),
        "{refresh_cookie}"
    );
    assert!(!set.iter().any(|c| c.starts_with("chronicle_")), "{set:?}");

    let me_with = |cookie: String| {
        let client = client.clone();
        let url = app.url("/api/v1/users/me");
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .expect("request sent")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        me_with(format!("__Host-chronicle_access={access}")).await,
        200
    );
    // a bare-named cookie (what a sibling subdomain could plant) is not read
    assert_eq!(me_with(format!("chronicle_access={access}")).await, 401);
    let r = client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", format!("__Secure-chronicle_refresh={refresh}"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status(), 200, "refresh through the prefixed cookie");
    app.finish().await;
}
