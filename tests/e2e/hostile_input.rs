//! Hostile bytes: control characters are refused at the edge with 422 naming the field, and
//! a NUL that reaches the log anyway (sealed, so PostgreSQL took it) does not stop a read
//! model.

use std::time::Duration;

use projections::ReadModel;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::{admin_env, admin_token};
use crate::conversations::{call, token};
use crate::support::{eventually, json};

fn field_of(body: &Value) -> Vec<String> {
    body["fields"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_nul_or_another_control_character_is_refused_at_the_edge_with_the_field_named() {
    let app = admin_env().spawn_all().await;
    let t = token(&app, "nul@example.com").await;
    let admin = admin_token(&app).await;

    // bodies: JSON and forms, at any depth
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "bad\u{0}title"})),
    )
    .await;
    assert_eq!((s, field_of(&b)), (422, vec!["title".to_owned()]), "{b}");
    let (s, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Fine"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    for content in ["a\u{0}b", "escape \u{1b}[31m", "c1 \u{9b}"] {
        let (s, b) = call(
            &app,
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &t,
            Some(json!({"content": content})),
        )
        .await;
        assert_eq!(
            (s, field_of(&b)),
            (422, vec!["content".to_owned()]),
            "{content:?}: {b}"
        );
    }
    // line breaks and tabs are text
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        &t,
        Some(json!({"content": "two\nlines\tand a tab"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let form = reqwest::Client::new()
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a%00b%40example.com")
        .send()
        .await
        .expect("sent");
    let (s, b) = json(form).await;
    assert_eq!((s, field_of(&b)), (422, vec!["email".to_owned()]), "{b}");

    // query strings (these answered 500 before) and path segments
    let anonymous = reqwest::Client::new();
    let (s, b) = json(
        anonymous
            .get(app.url("/api/v1/users/status?email=a%00b@example.com"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s, field_of(&b)), (422, vec!["email".to_owned()]), "{b}");
    let (s, b) = call(&app, Method::GET, "/api/v1/conversations?q=%00", &t, None).await;
    assert_eq!((s, field_of(&b)), (422, vec!["q".to_owned()]), "{b}");
    for path in [
        "/api/v1/admin/users?q=x%00",
        "/api/v1/admin/events?type=UserRegistered%00",
        "/api/v1/admin/events?aggregate_id=%00",
        "/api/v1/admin/events?actor=%07",
    ] {
        let (s, b) = call(&app, Method::GET, path, &admin, None).await;
        assert_eq!(s, 422, "{path}: {b}");
        assert_eq!(b["error"], "validation", "{path}: {b}");
    }
    let (s, b) = call(
        &app,
        Method::GET,
        &format!("/api/v1/conversations/{id}%00/messages"),
        &t,
        None,
    )
    .await;
    assert_eq!((s, field_of(&b)), (422, vec!["path".to_owned()]), "{b}");

    // nothing stopped: every read model is running and the next create works
    let (s, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "After"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let (s, ready) = app.get_json("/health/ready").await;
    assert_eq!(s, 200, "{ready}");
    app.finish().await;
}

/// An event whose sealed title holds a NUL is appended straight to the log (as an older
/// version, an import or a bug could have): the conversations read model applies it, keeps
/// running for everyone, a rebuild succeeds, and verify agrees with the live rows.
#[tokio::test]
async fn a_nul_that_reaches_the_log_does_not_stop_a_read_model() {
    let app = admin_env().spawn_all().await;
    let t = token(&app, "owner@example.com").await;
    let (s, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Template"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let template = c["data"]["id"].as_str().expect("id").to_owned();
    let (payload, metadata): (Value, Value) = sqlx::query_as(
        "select payload, metadata from events where aggregate_type = 'conversation' \
         and aggregate_id = $1 and sequence = 1",
    )
    .bind(&template)
    .fetch_one(&app.pool)
    .await
    .expect("the template's first event");
    let owner: Uuid = payload["ConversationStarted"]["owner_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("owner id");
    let sealed = app
        .keys()
        .seal(owner, "bad\u{0}title")
        .await
        .expect("sealed")
        .expect("the owner has a key");
    let mut poisoned = payload.clone();
    poisoned["ConversationStarted"]["title"] = Value::String(sealed);
    let bad_id = Uuid::now_v7();
    sqlx::query(
        "insert into events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         select 'conversation', $1, 1, event_type, event_version, $2, $3 from events \
         where aggregate_type = 'conversation' and aggregate_id = $4 and sequence = 1",
    )
    .bind(bad_id.to_string())
    .bind(&poisoned)
    .bind(&metadata)
    .bind(&template)
    .execute(&app.pool)
    .await
    .expect("appended straight to the log");

    // the read model stores it (NUL shown as U+FFFD) and carries on
    let stored: String = eventually(
        "the poisoned conversation projected",
        Duration::from_secs(20),
        || {
            let pool = app.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>("select title from conversations where id = $1")
                    .bind(bad_id)
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await;
    assert_eq!(stored, "bad\u{fffd}title");
    let (s, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Still works"})),
    )
    .await;
    assert_eq!(s, 201, "the next create: {c}");
    let (s, ready) = app.get_json("/health/ready").await;
    assert_eq!(s, 200, "{ready}");
    let failed: i64 = app
        .scalar_i64("select count(*) from projection_checkpoints where status = 'failed'")
        .await;
    assert_eq!(failed, 0);

    let keys = app.keys();
    let report =
        projections::rebuild::verify(&app.pool, &keys, ReadModel::Conversations, |_, _| {})
            .await
            .expect("verify runs");
    assert!(report.matches(), "{report:?}");
    projections::rebuild::rebuild(&app.pool, &keys, ReadModel::Conversations, |_, _| {})
        .await
        .expect("a rebuild succeeds");
    let rebuilt: String = sqlx::query_scalar("select title from conversations where id = $1")
        .bind(bad_id)
        .fetch_one(&app.pool)
        .await
        .expect("rebuilt row");
    assert_eq!(rebuilt, "bad\u{fffd}title");
    app.finish().await;
}
