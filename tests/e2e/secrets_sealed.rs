//! Secrets' derivatives (argon2id password hashes, refresh-token hashes, the nonces links
//! and codes come from, API keys' secret hashes) are sealed in the log and on the stream,
//! and every process that needs them still opens them: after a whole journey — register,
//! verify by the mailed code, sign in, refresh, reset the password, make, use and revoke
//! an API key — no JetStream message and no `events` row holds one in plaintext, and
//! erasure makes a user's hashes unreadable for good.

use std::time::Duration;

use aggregates::catalog::SECRET_FIELDS;
use eventstore::crypto::{is_sealed, sealed_owner, ERASED, SYSTEM_KEY_ID};
use eventstore::secrets::Secrets;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::admin::{admin_env, cli};
use crate::auth::{login, signed_up, PASSWORD};
use crate::smtp_sink::SmtpSink;
use crate::support::{eventually, json, TestApp, TestEnv};

const SECRET: &[u8] = b"test-secret-key-that-is-long-enough-000";
const DEADLINE: Duration = Duration::from_secs(30);

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    json(
        reqwest::Client::new()
            .post(app.url(path))
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

/// (access token, refresh token) of a 200 answer of login or refresh.
fn pair(b: &Value) -> (String, String) {
    let field = |k: &str| b["data"][k].as_str().expect("a token").to_owned();
    (field("access_token"), field("refresh_token"))
}

/// What the log keeps of a refresh token `<session id>.<secret>`.
fn token_hash(refresh_token: &str) -> String {
    let (_, secret) = refresh_token.split_once('.').expect("a refresh token");
    Secrets::new(SECRET).refresh_token_hash(secret)
}

async fn admin_get(app: &TestApp, key: &str) -> u16 {
    reqwest::Client::new()
        .get(app.url("/api/v1/admin/users"))
        .header("x-admin-key", key)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

/// Every value of a field named like a secret's derivative, anywhere in `v`.
fn secret_values<'a>(v: &'a Value, out: &mut Vec<(&'static str, &'a Value)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if let Some(name) = SECRET_FIELDS.iter().find(|n| **n == k.as_str()) {
                    out.push((name, x));
                }
                secret_values(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| secret_values(x, out)),
        _ => {}
    }
}

/// Every `events` row (payload and metadata) and every message of the test's stream, as
/// text, once the relay has published every committed event.
async fn log_and_stream(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select payload::text, metadata::text from events order by transaction_id, position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("the log");
    // one JSON text per row: [payload, metadata]
    let rows: Vec<String> = rows
        .into_iter()
        .map(|(payload, metadata)| format!("[{payload}, {metadata}]"))
        .collect();
    let bus = app.bus.clone();
    let name = app.env.stream.clone();
    let want = rows.len() as u64;
    eventually("the relay published every event", DEADLINE, || {
        let (bus, name) = (bus.clone(), name.clone());
        async move {
            let mut stream = bus.jetstream.get_stream(&name).await.ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages >= want).then_some(())
        }
    })
    .await;
    let mut stream = app
        .bus
        .jetstream
        .get_stream(&app.env.stream)
        .await
        .expect("the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = vec![];
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.expect("a message");
        messages.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    (rows, messages)
}

#[tokio::test]
async fn after_a_whole_journey_no_message_and_no_row_holds_a_secrets_derivative_in_plaintext() {
    let sink = SmtpSink::start().await;
    let app = admin_env().set("SMTP_URL", sink.url()).spawn_all().await;
    let email = "sealed@example.com";
    let new_password = "a-second-passphrase-for-sealing-9";

    // register with a password, verify with the code the mailer derived from the nonce
    let (s, b) = post(
        &app,
        "/api/v1/auth/register",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let code = sink
        .wait_for(email, "erif", DEADLINE)
        .await
        .six_digit_code()
        .expect("a code in the verification mail");
    let (s, b) = post(
        &app,
        "/api/v1/auth/verify-email",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!(s, 200, "the mailed code verifies: {b}");

    // sign in (the command side compares the opened password hash), refresh (the opened
    // token hash)
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let (_, first_refresh) = pair(&b);
    let (s, b) = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first_refresh}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, second_refresh) = pair(&b);
    assert_ne!(second_refresh, first_refresh, "refresh rotates");

    // forgot the password: reset with the mailed code (the opened nonce)
    let (s, _) = post(
        &app,
        "/api/v1/auth/forgot-password",
        json!({"email": email}),
    )
    .await;
    assert_eq!(s, 202);
    let reset_code = sink
        .wait_for(email, "Reset", DEADLINE)
        .await
        .six_digit_code()
        .expect("a code in the reset mail");
    let (s, b) = post(
        &app,
        "/api/v1/auth/reset-password",
        json!({"email": email, "code": reset_code, "new_password": new_password}),
    )
    .await;
    assert_eq!(s, 200, "the mailed reset code works: {b}");
    assert_eq!(login(&app, email, PASSWORD).await.0, 401);
    let (s, b) = login(&app, email, new_password).await;
    assert_eq!(s, 200, "the new password signs in: {b}");
    let (_, third_refresh) = pair(&b);
    let (s, b) = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": third_refresh}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (access, fourth_refresh) = pair(&b);
    assert_ne!(fourth_refresh, third_refresh);
    let (s, b) = json(
        reqwest::Client::new()
            .get(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let user: Uuid = sqlx::query_scalar("select user_id from email_claims where email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .expect("my id");

    // an API key: made by the CLI, used (the command side opens its secret hash), revoked
    let (code, out, err) = cli(&app, &["api-key", "create", "--name", "sealing", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let key = created["key"].as_str().expect("a key").to_owned();
    let key_id = created["id"].as_str().expect("an id").to_owned();
    let (_, key_secret) = key
        .strip_prefix("chk_")
        .and_then(|rest| rest.split_once('_'))
        .expect("chk_<id>_<secret>");
    let key_hash = hex::encode(Sha256::digest(key_secret.as_bytes()));
    assert_eq!(admin_get(&app, &key).await, 200, "the key authenticates");
    let (code, _, err) = cli(&app, &["api-key", "revoke", &key_id]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(admin_get(&app, &key).await, 401, "a revoked key is refused");

    let (rows, messages) = log_and_stream(&app).await;
    assert!(messages.len() >= rows.len());

    // every secret's derivative, opened, to look for in plaintext: the nonces as the
    // mailer reads them, the hashes as the command side computes them
    let keys = app.keys();
    let mut plaintexts: Vec<String> = [
        &first_refresh,
        &second_refresh,
        &third_refresh,
        &fourth_refresh,
    ]
    .iter()
    .map(|t| token_hash(t))
    .collect();
    plaintexts.push(key_hash.clone());
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut opened_argon2 = 0;
    for (i, text) in rows.iter().chain(messages.iter()).enumerate() {
        let where_ = if i < rows.len() {
            "an events row"
        } else {
            "a stream message"
        };
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{where_} is JSON ({e}): {text}"));
        let mut found = vec![];
        secret_values(&value, &mut found);
        for (name, v) in found {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    assert!(is_sealed(s), "{name} in plaintext in {where_}: {text}");
                    let opened = keys.open(s).await.expect("a sealed value opens");
                    assert_ne!(opened, ERASED);
                    let owner = sealed_owner(s);
                    if name == "secret_hash" {
                        assert_eq!(owner, Some(SYSTEM_KEY_ID), "an API key is the system's");
                        assert_eq!(opened, key_hash);
                    } else {
                        // a user's (the seeded admin's or this user's), so erasure reaches it
                        assert!(owner.is_some_and(|o| o != SYSTEM_KEY_ID), "{name}: {text}");
                    }
                    if opened.starts_with("$argon2") {
                        opened_argon2 += 1;
                    }
                    if name == "nonce" || name == "password_hash" {
                        plaintexts.push(opened);
                    }
                    *counts.entry(name).or_default() += 1;
                }
                other => panic!("{name} is neither sealed nor null in {where_}: {other}"),
            }
        }
    }
    // the journey wrote each kind (in the log and again on the stream)
    for (name, at_least) in [
        ("password_hash", 2 * 3), // the seeded admin, the user, the reset
        ("nonce", 2 * 2),         // verification, reset
        ("refresh_token_hash", 2 * 4),
        ("secret_hash", 2),
    ] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            n >= at_least,
            "{name}: {n} sealed values, expected {at_least}+"
        );
    }
    assert!(
        opened_argon2 >= 6,
        "password hashes open to argon2id strings"
    );
    // the user's own secrets are sealed with the user's key
    let mine: Vec<Value> = sqlx::query_scalar(
        "select payload from events where subject_id = $1 order by transaction_id, position",
    )
    .bind(user)
    .fetch_all(&app.pool)
    .await
    .expect("my events");
    let mut own = vec![];
    for p in &mine {
        secret_values(p, &mut own);
    }
    assert!(own.len() >= 7, "{own:?}");
    for (name, v) in own {
        if let Some(s) = v.as_str() {
            assert_eq!(sealed_owner(s), Some(user), "{name}");
        }
    }

    // and none of them, nor any argon2 string, in plaintext anywhere
    for text in rows.iter().chain(messages.iter()) {
        assert!(
            !text.contains("$argon2"),
            "an argon2 string in plaintext: {text}"
        );
        for p in &plaintexts {
            assert!(
                !text.contains(p.as_str()),
                "a secret's derivative in plaintext ({}…): {text}",
                &p[..8.min(p.len())]
            );
        }
    }
    assert!(plaintexts.len() >= 5 + 3 + 2);
    app.finish().await;
}

#[tokio::test]
async fn erasing_a_user_makes_their_password_and_token_hashes_unreadable() {
    let app = TestEnv::new().spawn_all().await;
    let email = "forget.my.hashes@example.com";
    let user = signed_up(&app, email).await;
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let (access, refresh_token) = pair(&b);
    let (s, b) = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh_token}),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // the user's sealed secrets, as the log holds them
    let payloads: Vec<Value> =
        sqlx::query_scalar("select payload from events where subject_id = $1")
            .bind(user)
            .fetch_all(&app.pool)
            .await
            .expect("the user's events");
    let mut found = vec![];
    for p in &payloads {
        secret_values(p, &mut found);
    }
    let sealed: Vec<(&str, String)> = found
        .into_iter()
        .filter_map(|(name, v)| Some((name, v.as_str()?.to_owned())))
        .collect();
    let names: Vec<&str> = sealed.iter().map(|(n, _)| *n).collect();
    for name in ["password_hash", "nonce", "refresh_token_hash"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let keys = app.keys();
    for (name, s) in &sealed {
        assert!(is_sealed(s), "{name} is sealed: {s}");
        assert_ne!(keys.open(s).await.expect("opens"), ERASED, "{name} before");
    }

    let resp = reqwest::Client::new()
        .delete(app.url("/api/v1/users/me"))
        .bearer_auth(&access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);

    // the same stored strings (in the log and on the stream) open to nothing now (a key
    // store of its own: the one above remembers the user's key for a while)
    let keys = app.keys();
    for (name, s) in &sealed {
        assert_eq!(keys.open(s).await.expect("opens"), ERASED, "{name} after");
    }
    let (_, messages) = log_and_stream(&app).await;
    let on_stream = messages
        .iter()
        .filter(|m| sealed.iter().any(|(_, s)| m.contains(s.as_str())))
        .count();
    assert!(on_stream >= 3, "the stream carries the same sealed strings");
    app.finish().await;
}

#[tokio::test]
async fn an_import_reseals_every_secrets_derivative_even_those_an_old_release_left_plain() {
    let app = admin_env().spawn_all().await;
    let email = "copied@example.com";
    let user = signed_up(&app, email).await;
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let (_, first) = pair(&b);
    let (s, b) = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, refresh_token) = pair(&b);
    // an API key made by a release that did not seal: its hash in plaintext in the log
    let old_key_id = Uuid::now_v7();
    let old_secret = "an-old-api-key-secret-of-forty-characters-x";
    let old_hash = hex::encode(Sha256::digest(old_secret.as_bytes()));
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('api_key', $1, 1, 'ApiKeyCreated', '1.0', $2, $3)",
    )
    .bind(old_key_id.to_string())
    .bind(json!({"ApiKeyCreated": {"name": "legacy", "secret_hash": old_hash, "created_by": "cli:ops", "created_at": chrono::Utc::now()}}))
    .bind(json!({"actor_id": "cli:ops", "actor_role": "system"}))
    .execute(&app.pool)
    .await
    .expect("an old row");
    let old_key = format!("chk_{}_{old_secret}", old_key_id.simple());
    assert_eq!(
        admin_get(&app, &old_key).await,
        200,
        "an old key still works"
    );

    let file = app.env.data_dir.join("sealed-export.ndjson");
    std::fs::create_dir_all(&app.env.data_dir).expect("dir");
    let path = file.display().to_string();
    let (code, _, err) = crate::admin::chronicle(
        &app.env,
        &["events", "export", "--with-secrets", "--output", &path],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read_to_string(&file).expect("the export");
    // secrets=keep gives the opened values, old and new alike
    assert!(exported.contains(&old_hash));
    assert!(exported.contains(&token_hash(&refresh_token)));
    assert!(exported.contains("$argon2id$"));

    let fresh = TestEnv::new();
    let (code, out, err) = crate::admin::chronicle(&fresh, &["events", "import", &path]).await;
    assert_eq!(code, 0, "{out}{err}");
    let copy = fresh.spawn_all().await;
    let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
        "select aggregate_type, aggregate_id, event_type, payload from events \
         order by transaction_id, position",
    )
    .fetch_all(&copy.pool)
    .await
    .expect("the copy's log");
    let keys = copy.keys();
    let mut sealed = 0;
    for (aggregate_type, aggregate_id, event_type, payload) in &rows {
        let mut found = vec![];
        secret_values(payload, &mut found);
        // the owners the source had: a user's own, the session's user (only this user
        // signed in), the system for API keys
        let owner = match aggregate_type.as_str() {
            "user" => aggregate_id.parse().expect("a user id"),
            "session" => user,
            _ => SYSTEM_KEY_ID,
        };
        for (name, v) in found {
            let Some(s) = v.as_str() else { continue };
            assert!(
                is_sealed(s),
                "{name} of {event_type} in plaintext in the copy"
            );
            assert_eq!(sealed_owner(s), Some(owner), "{name} of {event_type}");
            assert_ne!(keys.open(s).await.expect("opens"), ERASED);
            sealed += 1;
        }
    }
    assert!(sealed >= 6, "{sealed} sealed values in the copy");
    let text: String = rows.iter().map(|(_, _, _, p)| p.to_string()).collect();
    assert!(!text.contains(&old_hash) && !text.contains("$argon2"));
    assert!(!text.contains(&token_hash(&refresh_token)));

    // and the copy works the same: the password, the refresh token, the old API key
    assert_eq!(login(&copy, email, PASSWORD).await.0, 200);
    let (s, b) = post(
        &copy,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh_token}),
    )
    .await;
    assert_eq!(
        s, 200,
        "the rotated token's resealed hash opens in the copy: {b}"
    );
    copy.wait_for_projections("the copy caught up").await;
    assert_eq!(admin_get(&copy, &old_key).await, 200);
    copy.finish().await;
    app.finish().await;
}
