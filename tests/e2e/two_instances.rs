//! Two API instances on one deployment (one database, one stream), as behind a load
//! balancer: the auth rate limits hold for the pair, `max_conversations` is decided on the
//! command side for both, and commands racing on one aggregate from both lose none to 409.

use chronicle::{Role, Roles};
use reqwest::Method;
use serde_json::json;

use crate::conversations::{call, token};
use crate::support::{TestApp, TestEnv};

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":100,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":20}]}"#;

/// Two instances of `env`: the first runs every part, the second the API only.
async fn pair(env: &TestEnv) -> (TestApp, TestApp) {
    let a = env.spawn_all().await;
    let b = env.spawn(Roles::only(&[Role::Api])).await;
    (a, b)
}

async fn login_status(app: &TestApp, email: &str) -> u16 {
    reqwest::Client::new()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": "not-the-password-1"}))
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_auth_rate_limits_hold_for_two_instances_together() {
    let env = TestEnv::new()
        .set("RATE_LIMIT_AUTH_IP_PER_MINUTE", "4")
        .set("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE", "100000");
    let (a, b) = pair(&env).await;
    // per IP: alternating instances, 4 in all get through, not 4 on each
    let mut statuses = vec![];
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(login_status(app, &format!("nobody{i}@example.com")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
    b.stop().await;
    a.finish().await;

    // per account: another deployment where the IP limit is out of the way
    let env = TestEnv::new()
        .set("RATE_LIMIT_AUTH_IP_PER_MINUTE", "100000")
        .set("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE", "3");
    let (a, b) = pair(&env).await;
    let mut statuses = vec![];
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(login_status(app, "target@example.com").await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    // another account is not held back by it
    assert_eq!(login_status(&b, "someone-else@example.com").await, 401);
    // the shared store holds no address and no IP
    let keys: Vec<String> = sqlx::query_scalar("select key from rate_limits")
        .fetch_all(&a.pool)
        .await
        .expect("rate limit keys");
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| !k.contains("example.com") && !k.contains("127.0.0.1")),
        "{keys:?}"
    );
    b.stop().await;
    a.finish().await;
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_the_forwarded_client_is_the_one_limited() {
    let login_from = |app: &TestApp, forwarded: &str| {
        let request = reqwest::Client::new()
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": "someone@example.com", "password": "not-the-password-1"}));
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    let env = TestEnv::new()
        .set("RATE_LIMIT_AUTH_IP_PER_MINUTE", "2")
        .set("TRUSTED_PROXIES", "127.0.0.0/8");
    let (a, b) = pair(&env).await;
    let mut statuses = vec![];
    for app in [&a, &b, &a] {
        statuses.push(login_from(app, "203.0.113.1").await);
    }
    // another client behind the same balancer has its own allowance
    statuses.push(login_from(&b, "203.0.113.2").await);
    assert_eq!(statuses, [401, 401, 429, 401]);
    b.stop().await;
    a.finish().await;

    // not behind a trusted proxy: the header is the client's own word, and ignored
    let env = TestEnv::new().set("RATE_LIMIT_AUTH_IP_PER_MINUTE", "2");
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let mut statuses = vec![];
    for forwarded in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        statuses.push(login_from(&app, forwarded).await);
    }
    assert_eq!(statuses, [401, 401, 429]);
    app.finish().await;
}

#[tokio::test]
async fn thirty_concurrent_starts_on_two_instances_with_room_for_twenty_start_twenty() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let (a, b) = pair(&env).await;
    let t = token(&a, "many-conversations@example.com").await;
    let starts = (0..30).map(|i| {
        let (app, t) = (if i % 2 == 0 { &a } else { &b }, t.clone());
        async move {
            call(
                app,
                Method::POST,
                "/api/v1/conversations",
                &t,
                Some(json!({ "title": format!("Conversation {i}") })),
            )
            .await
        }
    });
    let answers = futures::future::join_all(starts).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 402).collect();
    assert_eq!((created, refused.len()), (20, 10), "{answers:?}");
    assert!(refused
        .iter()
        .all(|(_, b)| b["error"] == "upgrade_required" && b["details"]["kind"] == "conversations"));
    assert_eq!(
        a.scalar_i64("select count(*) from events where event_type = 'ConversationStarted'")
            .await,
        20
    );
    // deleting one makes room for exactly one more, on either instance
    let id = answers
        .iter()
        .find(|(s, _)| *s == 201)
        .and_then(|(_, b)| b["data"]["id"].as_str())
        .expect("a conversation id")
        .to_owned();
    let (s, _) = call(
        &b,
        Method::DELETE,
        &format!("/api/v1/conversations/{id}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    for (app, expected) in [(&a, 201), (&b, 402)] {
        let (s, body) = call(
            app,
            Method::POST,
            "/api/v1/conversations",
            &t,
            Some(json!({"title": "Again"})),
        )
        .await;
        assert_eq!(s, expected, "{body}");
    }
    b.stop().await;
    a.finish().await;
}

#[tokio::test]
async fn renames_of_one_conversation_from_two_instances_lose_none_to_a_conflict() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let (a, b) = pair(&env).await;
    let t = token(&a, "renamer@example.com").await;
    let (s, body) = call(
        &a,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Start"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/conversations/{id}");
    // 16 at a time, half on each instance
    let mut statuses = vec![];
    for round in 0..25 {
        let renames = (0..16).map(|i| {
            let (app, t, path) = (if i % 2 == 0 { &a } else { &b }, t.clone(), path.clone());
            async move {
                call(
                    app,
                    Method::PATCH,
                    &path,
                    &t,
                    Some(json!({ "title": format!("Title {round}.{i}") })),
                )
                .await
                .0
            }
        });
        statuses.extend(futures::future::join_all(renames).await);
    }
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    let renamed = statuses.iter().filter(|s| **s == 200).count();
    println!("renames from two instances: {renamed} of 400 answered 200, {conflicts} 409");
    assert_eq!((renamed, conflicts), (400, 0), "{statuses:?}");
    assert_eq!(
        a.scalar_i64("select count(*) from events where event_type = 'ConversationRenamed'")
            .await,
        400
    );
    b.stop().await;
    a.finish().await;
}
