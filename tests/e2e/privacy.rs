//! Personal data: erasure leaves nothing readable anywhere, rebuilds still work, master
//! keys rotate without touching the log, export and history show only my own data.

use std::time::Duration;

use aggregates::LogCursor;
use eventstore::crypto::{Key, KeyStore, MasterKeys};
use projections::{event_stats, rebuild::rebuild, users, ReadModel};
use serde_json::{json, Value};

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{eventually, json, TestApp, TestEnv};

const UA: &str = "CanaryAgent/4.2 (Privacy Test)";

/// Every table of the database whose rows, as text, contain `needle`.
async fn tables_containing(app: &TestApp, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables \
         where table_schema = 'public' and table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("tables");
    let mut hits = vec![];
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "select count(*) from \"{t}\" x where x::text ilike '%' || $1 || '%'"
        ))
        .bind(needle)
        .fetch_one(&app.pool)
        .await
        .expect("search");
        if n > 0 {
            hits.push(t);
        }
    }
    hits
}

/// Every message of the stream, as raw bytes turned to text.
async fn stream_text(app: &TestApp) -> String {
    let mut stream = app
        .bus
        .jetstream
        .get_stream(&app.env.stream)
        .await
        .expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = String::new();
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push_str(&String::from_utf8_lossy(&m.payload));
            out.push('\n');
        }
    }
    out
}

async fn send(app: &TestApp, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = app;
    json(req.header("user-agent", UA).send().await.expect("sent")).await
}

/// A user with a name, a session, a profile, an avatar and some history; their token.
async fn rich_user(app: &TestApp, email: &str, name: &str) -> String {
    signed_up(app, email).await;
    let c = reqwest::Client::new();
    let (s, b) = send(
        app,
        c.post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let access = b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let (s, _) = send(
        app,
        c.patch(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .json(&json!({"display_name": name, "timezone": "Europe/Oslo"})),
    )
    .await;
    assert_eq!(s, 200);
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], name.as_bytes()].concat();
    let (s, _) = send(
        app,
        c.put(app.url("/api/v1/users/me/avatar"))
            .bearer_auth(&access)
            .header("content-type", "image/png")
            .body(png),
    )
    .await;
    assert_eq!(s, 200);
    access
}

#[tokio::test]
async fn after_erasure_no_table_and_no_stream_message_holds_the_users_data_in_plaintext() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let email = "erase.me@example.com";
    let name = "Zelda Quintessence";
    let access = rich_user(&app, email, name).await;
    app.wait_for_projections("caught up").await;
    // before: the read models hold it in plaintext, the log and the stream do not
    assert!(tables_containing(&app, name)
        .await
        .contains(&"users".to_owned()));
    for needle in [email, name, UA] {
        let hits = tables_containing(&app, needle).await;
        assert!(
            !hits.contains(&"events".to_owned()),
            "{needle} in the log before erasure"
        );
        assert!(
            !stream_text(&app).await.contains(needle),
            "{needle} on the stream"
        );
    }
    let avatar_url: String = sqlx::query_scalar("select avatar_sha256 from users where email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .expect("avatar");

    // a wrong password erases nothing
    let c = reqwest::Client::new();
    let (s, _) = json(
        c.delete(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .json(&json!({"password": "not-my-password"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 401);
    let resp = c
        .delete(app.url("/api/v1/users/me"))
        .bearer_auth(&access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    app.wait_for_projections("the erasure is projected").await;

    for needle in [
        email,
        name,
        UA,
        "127.0.0.1",
        "Europe/Oslo",
        avatar_url.as_str(),
    ] {
        assert_eq!(
            tables_containing(&app, needle).await,
            Vec::<String>::new(),
            "{needle} is still in a table"
        );
        assert!(
            !stream_text(&app).await.contains(needle),
            "{needle} is still readable on the stream"
        );
    }
    // the API knows the user no more
    let (s, _) = json(
        c.get(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(login(&app, email, PASSWORD).await.0, 401);
    let (_, b) = app
        .get_json(&format!("/api/v1/users/status?email={email}"))
        .await;
    assert_eq!(b["data"]["exists"], false);
    // and the email can be used again, by a new account
    assert_eq!(app.register(email).await.status(), 202);
    app.finish().await;
}

#[tokio::test]
async fn a_full_rebuild_after_an_erasure_matches_the_live_read_models() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let gone = rich_user(&app, "gone@example.com", "Gone Person").await;
    rich_user(&app, "stays@example.com", "Staying Person").await;
    let c = reqwest::Client::new();
    let resp = c
        .delete(app.url("/api/v1/users/me"))
        .bearer_auth(&gone)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    app.wait_for_projections("caught up").await;
    let users_live = users::all(&app.pool).await.expect("users");
    let sessions_live: Vec<(String,)> =
        sqlx::query_as("select s::text from sessions s order by id")
            .fetch_all(&app.pool)
            .await
            .expect("sessions");
    let stats_live = event_stats::counts(&app.pool).await.expect("stats");
    let erased = users_live
        .iter()
        .find(|u| u.status == "erased")
        .expect("an erased row");
    assert_eq!(
        (erased.email.as_str(), erased.display_name.as_deref()),
        ("[erased]", Some("[erased]"))
    );

    for model in ReadModel::ALL {
        rebuild(&app.pool, &app.keys(), model, |_, _| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(users::all(&app.pool).await.expect("users"), users_live);
    let sessions_rebuilt: Vec<(String,)> =
        sqlx::query_as("select s::text from sessions s order by id")
            .fetch_all(&app.pool)
            .await
            .expect("sessions");
    assert_eq!(sessions_rebuilt, sessions_live);
    assert_eq!(
        event_stats::counts(&app.pool).await.expect("stats"),
        stats_live
    );
    app.finish().await;
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_user_keys_without_touching_the_log() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    signed_up(&app, "rot1@example.com").await;
    signed_up(&app, "rot2@example.com").await;
    app.wait_for_projections("caught up").await;
    let digest = "select md5(string_agg(e::text, '|' order by position)) from events e";
    let before: String = sqlx::query_scalar(digest)
        .fetch_one(&app.pool)
        .await
        .expect("digest");
    let old = app.env.config().keys.master.current;
    let new = Key::random();

    let rotating = KeyStore::new(
        app.pool.clone(),
        MasterKeys {
            current: new.clone(),
            previous: vec![old.clone()],
        },
    );
    assert_eq!(rotating.rotate().await.expect("rotate"), 2);
    assert_eq!(
        rotating.rotate().await.expect("again"),
        0,
        "nothing left to re-wrap"
    );
    let ids: Vec<String> = sqlx::query_scalar("select distinct master_key_id from user_keys")
        .fetch_all(&app.pool)
        .await
        .expect("ids");
    assert_eq!(ids, vec![new.id()]);
    let after: String = sqlx::query_scalar(digest)
        .fetch_one(&app.pool)
        .await
        .expect("digest");
    assert_eq!(before, after, "the log is untouched");

    // only the new master key is needed now; the old one alone opens nothing
    let mut events = eventstore::log::read_after(&app.pool, LogCursor::START, 100)
        .await
        .expect("log");
    let only_new = KeyStore::new(
        app.pool.clone(),
        MasterKeys {
            current: new,
            previous: vec![],
        },
    );
    events[0]
        .open(&only_new)
        .await
        .expect("open with the new key");
    assert_eq!(
        events[0].payload["UserRegistered"]["email"],
        "rot1@example.com"
    );
    let mut again = eventstore::log::read_after(&app.pool, LogCursor::START, 1)
        .await
        .expect("log");
    let only_old = KeyStore::new(
        app.pool.clone(),
        MasterKeys {
            current: old,
            previous: vec![],
        },
    );
    assert!(again[0].open(&only_old).await.is_err());
    app.finish().await;
}

#[tokio::test]
async fn export_and_history_show_only_my_own_data() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let mine = rich_user(&app, "mine@example.com", "Mina Mine").await;
    let theirs = rich_user(&app, "theirs@example.com", "Theo Theirs").await;
    app.wait_for_projections("caught up").await;
    let c = reqwest::Client::new();
    let export = c
        .get(app.url("/api/v1/users/me/export"))
        .bearer_auth(&mine)
        .send()
        .await
        .expect("sent");
    assert_eq!(export.status(), 200);
    let text = export.text().await.expect("text");
    for mine_value in [
        "mine@example.com",
        "Mina Mine",
        UA,
        "SessionStarted",
        "UserRegistered",
        "AvatarChanged",
    ] {
        assert!(
            text.contains(mine_value),
            "{mine_value} missing from my export"
        );
    }
    for theirs_value in ["theirs@example.com", "Theo Theirs"] {
        assert!(!text.contains(theirs_value), "{theirs_value} in my export");
    }
    for secret_field in ["password_hash", "refresh_token_hash", "nonce", "$argon2"] {
        assert!(!text.contains(secret_field), "{secret_field} in an export");
    }
    let export: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(export["data"]["profile"]["email"], "mine@example.com");
    assert_eq!(export["data"]["sessions"].as_array().map(Vec::len), Some(1));

    // history: paginated, newest first, mine only
    let (s, b) = json(
        c.get(app.url("/api/v1/users/me/history?per_page=2&page=1"))
            .bearer_auth(&mine)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let total = b["data"]["total"].as_i64().expect("total");
    assert!(total >= 6, "{b}");
    assert_eq!(b["data"]["items"].as_array().map(Vec::len), Some(2));
    let first = &b["data"]["items"][0];
    assert_eq!(first["event_type"], "AvatarChanged");
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["user_agent"], UA);
    let mut seen = 0;
    let mut page = 1;
    while seen < total {
        let (_, b) = json(
            c.get(app.url(&format!("/api/v1/users/me/history?per_page=2&page={page}")))
                .bearer_auth(&theirs)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        let items = b["data"]["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in &items {
            assert!(
                !item.to_string().contains("mine@example.com"),
                "another user's history has mine: {item}"
            );
        }
        seen += items.len() as i64;
        page += 1;
    }
    let (s, _) = json(
        c.get(app.url("/api/v1/users/me/history?per_page=500"))
            .bearer_auth(&mine)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = app.get_json("/api/v1/users/me/export").await;
    assert_eq!(s, 401, "no export without a token");
    let _ = eventually("noop", Duration::from_millis(1), || async { Some(()) }).await;
    app.finish().await;
}
