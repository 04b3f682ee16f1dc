//! The HTTP contract: read-your-writes, the envelope, and bad input never giving a 500.

use chronicle::{Role, Roles};
use serde_json::{json, Value};

use crate::support::{json, TestEnv};

#[tokio::test]
async fn a_registered_user_is_visible_to_the_status_query_at_once() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;

    let resp = app.register("Ada@Example.com").await;
    // An answer about an email says nothing that differs by account: not in the body, and
    // no log position either (a position would tell how many events it appended).
    assert!(resp.headers().get("x-position").is_none());
    assert!(resp.headers().get("x-request-id").is_some());
    let (status, body) = json(resp).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["code"], 202);
    assert_eq!(
        body["data"]["message"],
        "If the address can receive mail, a message is on its way."
    );
    let cursor = eventstore::log::last_committed(&app.pool)
        .await
        .expect("the head")
        .expect("an event")
        .to_string();

    // No sleep: the command waited for the users read model (read your writes).
    let (status, body) = app
        .get_json("/api/v1/users/status?email=ada@example.com")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"exists": true, "email_verified": false, "status": "pending_verification"})
    );

    // X-Min-Position with the command's cursor is honoured too.
    let (status, body) = json(
        app.client
            .get(app.url("/api/v1/users/status?email=nobody@example.com"))
            .header("x-min-position", &cursor)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["exists"], false);

    // The event carries the request's metadata.
    let meta: Value =
        sqlx::query_scalar("select metadata from events where event_type = 'UserRegistered'")
            .fetch_one(&app.pool)
            .await
            .expect("event");
    assert_eq!(meta["actor_role"], "anonymous");
    // the IP is personal data: sealed in the log, readable with the user's key
    assert!(
        meta["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("enc:v1:")),
        "{meta}"
    );
    let mut events = eventstore::log::read_after(&app.pool, aggregates::LogCursor::START, 10)
        .await
        .expect("log");
    events[0].open(&app.keys()).await.expect("open");
    assert_eq!(events[0].metadata.ip.as_deref(), Some("127.0.0.1"));
    assert!(meta["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(meta["correlation_id"], meta["request_id"]);
    assert_eq!(meta["causation_id"], meta["request_id"]);
    app.finish().await;
}

#[tokio::test]
async fn registering_a_known_email_answers_the_same_and_records_the_attempt() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let (s1, b1) = json(app.register("grace@example.com").await).await;
    let (s2, b2) = json(app.register("GRACE@example.com").await).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1, b2, "known and unknown emails get the same body");
    assert_eq!(app.scalar_i64("select count(*) from users").await, 1);
    assert_eq!(
        app.scalar_i64(
            "select count(*) from events where event_type = 'DuplicateRegistrationAttempted'"
        )
        .await,
        1
    );
    assert_eq!(app.scalar_i64("select count(*) from email_claims").await, 1);
    app.finish().await;
}

#[tokio::test]
async fn a_form_encoded_registration_with_a_password_is_accepted_and_only_the_hash_is_kept() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    let resp = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=lin%40example.com&password=correct-horse-battery&display_name=Lin")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    let payload: Value =
        sqlx::query_scalar("select payload from events where event_type = 'UserRegistered'")
            .fetch_one(&app.pool)
            .await
            .expect("event");
    let text = payload.to_string();
    assert!(
        !text.contains("correct-horse-battery"),
        "raw password in the log: {text}"
    );
    // the hash itself is sealed in the log; opened, it is an argon2id PHC string
    let sealed = payload["UserRegistered"]["password_hash"]
        .as_str()
        .expect("a password hash")
        .to_owned();
    assert!(sealed.starts_with("enc:v1:"), "{sealed}");
    assert!(app.opened(sealed).await.starts_with("$argon2id$"));
    app.finish().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_4xx_envelope_and_never_a_500() {
    let env = TestEnv::new().set("BODY_LIMIT_BYTES", "1024");
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let post = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/register"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, reqwest::Response, u16, &str, Option<&str>)> = vec![
        (
            "malformed JSON",
            post("{\"email\": ", "application/json")
                .await
                .expect("sent"),
            400,
            "validation",
            None,
        ),
        (
            "wrong type",
            post("{\"email\": 42}", "application/json")
                .await
                .expect("sent"),
            422,
            "validation",
            Some("email"),
        ),
        (
            "missing field",
            post("{}", "application/json").await.expect("sent"),
            422,
            "validation",
            Some("$"),
        ),
        (
            "unknown field",
            post("{\"email\":\"a@b.co\",\"admin\":true}", "application/json")
                .await
                .expect("sent"),
            422,
            "validation",
            Some("admin"),
        ),
        (
            "bad email",
            post("{\"email\":\"nope\"}", "application/json")
                .await
                .expect("sent"),
            422,
            "validation",
            Some("email"),
        ),
        (
            "short password",
            post(
                "{\"email\":\"a@b.co\",\"password\":\"short\"}",
                "application/json",
            )
            .await
            .expect("sent"),
            422,
            "validation",
            Some("password"),
        ),
        (
            "wrong content type",
            post("email=a@b.co", "text/plain").await.expect("sent"),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "oversize body",
            app.client
                .post(app.url("/api/v1/auth/register"))
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"email\":\"{}@example.com\"}}",
                    "a".repeat(4096)
                ))
                .send()
                .await
                .expect("sent"),
            413,
            "payload_too_large",
            None,
        ),
        (
            "unknown route",
            app.client
                .get(app.url("/api/v1/nothing-here"))
                .send()
                .await
                .expect("sent"),
            404,
            "not_found",
            None,
        ),
        (
            "wrong method",
            app.client
                .delete(app.url("/api/v1/auth/register"))
                .send()
                .await
                .expect("sent"),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "missing query",
            app.client
                .get(app.url("/api/v1/users/status"))
                .send()
                .await
                .expect("sent"),
            422,
            "validation",
            None,
        ),
        (
            "bad X-Min-Position",
            app.client
                .get(app.url("/api/v1/users/status?email=a@b.co"))
                .header("x-min-position", "yesterday")
                .send()
                .await
                .expect("sent"),
            400,
            "validation",
            Some("X-Min-Position"),
        ),
    ];
    for (name, resp, want_status, want_kind, want_field) in cases {
        assert!(
            resp.headers().get("x-request-id").is_some(),
            "{name}: no X-Request-Id"
        );
        let (status, body) = json(resp).await;
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["code"], want_status, "{name}: {body}");
        assert_eq!(body["error"], want_kind, "{name}: {body}");
        assert_eq!(body["data"], Value::Null, "{name}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
        if let Some(field) = want_field {
            assert!(
                body["fields"][field].is_string(),
                "{name}: no fields.{field} in {body}"
            );
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_echoed() {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "my-trace-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("my-trace-123")
    );
    app.finish().await;
}

#[tokio::test]
async fn fifty_concurrent_commands_on_one_aggregate_are_applied_or_refused_with_409() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    assert_eq!(app.register("busy@example.com").await.status(), 202);

    // Each repeated registration appends to the same user aggregate.
    let mut requests = vec![];
    for _ in 0..50 {
        requests.push(app.register("busy@example.com"));
    }
    let responses = futures::future::join_all(requests).await;
    let mut accepted = 0;
    let mut conflicts = 0;
    for resp in responses {
        let (status, body) = json(resp).await;
        match status {
            202 => accepted += 1,
            409 => {
                assert_eq!(body["error"], "conflict");
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted + conflicts, 50);
    assert!(accepted > 0);

    // The aggregate's sequences are 1..=n with no gap and no repeat.
    let sequences: Vec<i64> = sqlx::query_scalar(
        "select sequence from events where aggregate_type = 'user' order by sequence",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    // registration appends two events; each accepted repeat one more
    let expected: Vec<i64> = (1..=(2 + accepted as i64)).collect();
    assert_eq!(sequences, expected);
    app.finish().await;
}

/// API.md: any GET can insist on read models that have reached a position. Routes that read
/// no particular read model (conversations, uploads, my sessions) honour it too.
#[tokio::test]
async fn every_get_of_the_api_honours_x_min_position() {
    let app = TestEnv::new()
        .set("READ_YOUR_WRITES_TIMEOUT_MS", "300")
        .spawn_all()
        .await;
    let token = crate::conversations::token(&app, "reader@example.com").await;
    let head = eventstore::log::last_committed(&app.pool)
        .await
        .expect("the head")
        .expect("an event")
        .to_string();
    let future = "7fffffffffffffff-7fffffffffffffff";
    for path in [
        "/api/v1/conversations",
        "/api/v1/uploads",
        "/api/v1/users/me",
        "/api/v1/users/me/sessions",
        "/api/v1/usage",
    ] {
        let get = |position: &str| {
            reqwest::Client::new()
                .get(app.url(path))
                .bearer_auth(&token)
                .header("x-min-position", position)
                .send()
        };
        let (s, b) = json(get(&head).await.expect("sent")).await;
        assert_eq!(s, 200, "{path} at the head: {b}");
        let resp = get(future).await.expect("sent");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
        let (s, b) = json(resp).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (503, Some("not_caught_up")),
            "{path}: {b}"
        );
        let (s, b) = json(get("not-a-cursor").await.expect("sent")).await;
        assert_eq!(s, 400, "{path}: {b}");
    }
    app.finish().await;
}

/// What the document says a parameter or body may be, the server enforces (a fuzzer's
/// "schema-violating request accepted" found each of these answered 200 before).
#[tokio::test]
async fn the_documented_bounds_are_enforced() {
    let app = TestEnv::new().spawn_all().await;
    let token = crate::conversations::token(&app, "bounds@example.com").await;
    let (s, c) = crate::conversations::call(
        &app,
        reqwest::Method::POST,
        "/api/v1/conversations",
        &token,
        Some(json!({"title": "Bounds"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["data"]["id"].as_str().expect("id").to_owned();
    let long_q = "q".repeat(201);
    for path in [
        "/api/v1/conversations?page=0".to_owned(),
        "/api/v1/conversations?page=1000001".to_owned(),
        format!("/api/v1/conversations?q={long_q}"),
        "/api/v1/users/me/history?page=2147483648".to_owned(),
        format!("/api/v1/conversations/{id}/messages?after=-1"),
    ] {
        let (s, b) =
            crate::conversations::call(&app, reqwest::Method::GET, &path, &token, None).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (422, Some("validation")),
            "{path}: {b}"
        );
    }
    let (s, _) = crate::conversations::call(
        &app,
        reqwest::Method::GET,
        "/api/v1/conversations?page=1&q=bounds",
        &token,
        None,
    )
    .await;
    assert_eq!(s, 200);
    // a JSON body is an object: serde would read `[null, null]` as a struct of two options
    let resp = reqwest::Client::new()
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("[null, null]")
        .send()
        .await
        .expect("sent");
    let (s, b) = json(resp).await;
    assert_eq!((s, b["fields"]["$"].is_string()), (422, true), "{b}");
    // a resume point that is not a posted_seq is refused, not read as "from the start"
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/conversations/{id}/stream")))
        .bearer_auth(&token)
        .header("last-event-id", "9223372036854775808")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 400);
    app.finish().await;
}
