//! Conversations and messages: the owner's routes, 404 for everyone else, the daily
//! message limit, and the live stream with resume.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{json, TestApp, TestEnv};

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":3,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":2}]}"#;

pub(crate) async fn token(app: &TestApp, email: &str) -> String {
    signed_up(app, email).await;
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned()
}

pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, app.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    json(req.send().await.expect("sent")).await
}

#[tokio::test]
async fn the_owner_manages_conversations_and_messages() {
    let env = TestEnv::new().set(
        "PLANS",
        PLANS.replace("\"messages_per_day\":3", "\"messages_per_day\":100"),
    );
    let app = env.spawn_all().await;
    let t = token(&app, "owner@example.com").await;
    let (s, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Trip to Lisbon"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Groceries"})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/conversations?q=lisbon",
        &t,
        None,
    )
    .await;
    assert_eq!(list["data"]["total"], 1);
    assert_eq!(list["data"]["items"][0]["title"], "Trip to Lisbon");
    for i in 0..3 {
        let (s, m) = call(
            &app,
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &t,
            Some(json!({"content": format!("message {i}")})),
        )
        .await;
        assert_eq!(s, 201, "{m}");
        assert_eq!(m["data"]["role"], "user");
    }
    let (_, page) = call(
        &app,
        Method::GET,
        &format!("/api/v1/conversations/{id}/messages?limit=2"),
        &t,
        None,
    )
    .await;
    let items = page["data"]["items"].as_array().expect("items").clone();
    assert_eq!(
        items
            .iter()
            .map(|m| m["content"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["message 0", "message 1"]
    );
    let next = page["data"]["next"].as_i64().expect("next");
    let (_, rest) = call(
        &app,
        Method::GET,
        &format!("/api/v1/conversations/{id}/messages?after={next}"),
        &t,
        None,
    )
    .await;
    assert_eq!(rest["data"]["items"][0]["content"], "message 2");
    let mid = items[0]["id"].as_str().expect("id").to_owned();
    let (s, m) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/messages/{mid}"),
        &t,
        Some(json!({"content": "edited"})),
    )
    .await;
    assert_eq!((s, m["data"]["content"].as_str()), (200, Some("edited")));
    let (s, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/messages/{mid}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/messages/{mid}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, r) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/conversations/{id}"),
        &t,
        Some(json!({"title": "Lisbon, May"})),
    )
    .await;
    assert_eq!((s, r["data"]["title"].as_str()), (200, Some("Lisbon, May")));
    let (_, all) = call(&app, Method::GET, "/api/v1/conversations", &t, None).await;
    let ids: Vec<String> = all["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let (s, d) = call(
        &app,
        Method::DELETE,
        "/api/v1/conversations",
        &t,
        Some(json!({"ids": ids})),
    )
    .await;
    assert_eq!(
        (s, d["data"]["deleted"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let (_, all) = call(&app, Method::GET, "/api/v1/conversations", &t, None).await;
    assert_eq!(all["data"]["total"], 0);
    // the contents are sealed in the log
    assert_eq!(
        app.scalar_i64("select count(*) from events where payload::text like '%Lisbon%'")
            .await,
        0
    );
    app.finish().await;
}

#[tokio::test]
async fn another_users_conversations_and_messages_are_404_on_every_route() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let app = env.spawn_all().await;
    let owner = token(&app, "a@example.com").await;
    let other = token(&app, "b@example.com").await;
    let (_, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &owner,
        Some(json!({"title": "Private"})),
    )
    .await;
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    let (_, m) = call(
        &app,
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        &owner,
        Some(json!({"content": "secret"})),
    )
    .await;
    let mid = m["data"]["id"].as_str().expect("id").to_owned();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/conversations/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{id}"),
            Some(json!({"title": "mine now"})),
        ),
        (Method::DELETE, format!("/api/v1/conversations/{id}"), None),
        (
            Method::GET,
            format!("/api/v1/conversations/{id}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{id}/messages"),
            Some(json!({"content": "hi"})),
        ),
        (
            Method::GET,
            format!("/api/v1/conversations/{id}/stream"),
            None,
        ),
        (Method::GET, format!("/api/v1/messages/{mid}"), None),
        (
            Method::PATCH,
            format!("/api/v1/messages/{mid}"),
            Some(json!({"content": "changed"})),
        ),
        (Method::DELETE, format!("/api/v1/messages/{mid}"), None),
    ];
    for (method, path, body) in routes {
        let (s, b) = call(&app, method.clone(), &path, &other, body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("not_found")),
            "{method} {path}: {b}"
        );
    }
    let (_, list) = call(&app, Method::GET, "/api/v1/conversations", &other, None).await;
    assert_eq!(list["data"]["total"], 0);
    let (s, d) = call(
        &app,
        Method::DELETE,
        "/api/v1/conversations",
        &other,
        Some(json!({"ids": [id]})),
    )
    .await;
    assert_eq!(
        (s, d["data"]["deleted"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    // and the owner still has it all
    let (s, m) = call(
        &app,
        Method::GET,
        &format!("/api/v1/messages/{mid}"),
        &owner,
        None,
    )
    .await;
    assert_eq!((s, m["data"]["content"].as_str()), (200, Some("secret")));
    app.finish().await;
}

#[tokio::test]
async fn a_message_over_the_days_limit_is_refused_and_nothing_is_appended() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let app = env.spawn_all().await;
    let t = token(&app, "limits@example.com").await;
    let (_, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Chat"})),
    )
    .await;
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    for _ in 0..3 {
        let (s, _) = call(
            &app,
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &t,
            Some(json!({"content": "hi"})),
        )
        .await;
        assert_eq!(s, 201);
    }
    let before = app
        .scalar_i64("select count(*) from events where event_type = 'MessagePosted'")
        .await;
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        &t,
        Some(json!({"content": "one too many"})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str(), b["details"]["limit"].as_u64()),
        (402, Some("upgrade_required"), Some(3))
    );
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'MessagePosted'")
            .await,
        before
    );
    // max_conversations: 2
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Second"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Third"})),
    )
    .await;
    assert_eq!(
        (s, b["details"]["kind"].as_str()),
        (402, Some("conversations"))
    );
    app.finish().await;
}

/// Read server-sent events until `n` arrive: (id, data).
pub(crate) async fn read_events(mut resp: reqwest::Response, n: usize) -> Vec<(i64, Value)> {
    let mut out = vec![];
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .expect("bytes")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_live_stream_delivers_new_messages_and_resumes_after_last_event_id() {
    let env = TestEnv::new().set(
        "PLANS",
        PLANS.replace("\"messages_per_day\":3", "\"messages_per_day\":100"),
    );
    let app = env.spawn_all().await;
    let t = token(&app, "live@example.com").await;
    let (_, c) = call(
        &app,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Live"})),
    )
    .await;
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    let stream_url = app.url(&format!("/api/v1/conversations/{id}/stream"));
    let listening = reqwest::Client::new()
        .get(&stream_url)
        .bearer_auth(&t)
        .send()
        .await
        .expect("stream");
    assert_eq!(listening.status(), 200);
    assert!(listening
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let reader = tokio::spawn(read_events(listening, 2));
    for content in ["first", "second"] {
        let (s, _) = call(
            &app,
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &t,
            Some(json!({"content": content})),
        )
        .await;
        assert_eq!(s, 201);
    }
    let got = reader.await.expect("reader");
    assert_eq!(
        got.iter()
            .map(|(_, d)| d["content"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["first", "second"]
    );
    let first_id = got[0].0;
    // missed while away: an edit of the first and a third message
    let mid = got[0].1["id"].as_str().expect("id").to_owned();
    call(
        &app,
        Method::PATCH,
        &format!("/api/v1/messages/{mid}"),
        &t,
        Some(json!({"content": "first, edited"})),
    )
    .await;
    call(
        &app,
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        &t,
        Some(json!({"content": "third"})),
    )
    .await;
    let resumed = reqwest::Client::new()
        .get(&stream_url)
        .bearer_auth(&t)
        .header("last-event-id", first_id.to_string())
        .send()
        .await
        .expect("stream");
    let got = read_events(resumed, 3).await;
    assert_eq!(
        got.iter()
            .map(|(_, d)| d["content"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["second", "first, edited", "third"]
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "event ids increase"
    );
    app.finish().await;
}
