//! Nothing acknowledged is lost: NATS going away, a worker restarting, an event that
//! cannot be applied.

use std::time::Duration;

use chronicle::{Role, Roles};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{eventually, nats_server_available, OwnNats, TestEnv};

#[tokio::test]
async fn commands_keep_working_while_nats_is_down_and_every_event_arrives_after_it_returns() {
    if !nats_server_available() {
        panic!("nats-server is needed for this test (set NATS_SERVER_BIN)");
    }
    let mut nats = OwnNats::start().await;
    let env = TestEnv::new()
        .set("NATS_URL", nats.url())
        .set("READ_YOUR_WRITES_TIMEOUT_MS", "200");
    let app = env.spawn_all().await;
    for i in 0..5 {
        assert_eq!(
            app.register(&format!("before{i}@example.com"))
                .await
                .status(),
            202
        );
    }
    app.wait_for_projections("read models catch up before the outage")
        .await;

    nats.kill();
    for i in 0..20 {
        let resp = app.register(&format!("during{i}@example.com")).await;
        assert_eq!(resp.status(), 202, "a command failed while NATS was down");
        // The read model cannot follow while NATS is down, and the answer says so.
        assert_eq!(
            resp.headers()
                .get("x-projections-lagging")
                .and_then(|v| v.to_str().ok()),
            Some("users")
        );
    }
    // Readiness reports the outage.
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["data"]["nats"]["ok"], false);

    nats.resume().await;
    let app_ref = &app;
    eventually(
        "every event reaches the read models",
        Duration::from_secs(60),
        || async move {
            let n = app_ref.scalar_i64("select count(*) from users").await;
            (n == 25).then_some(())
        },
    )
    .await;
    app.wait_for_projections("all read models catch up").await;
    assert_eq!(
        app.scalar_i64("select sum(count)::bigint from event_type_counts")
            .await,
        50
    );
    assert_eq!(app.stream_envelopes().await.len(), 50);
    let (status, _) = app
        .get_json("/api/v1/users/status?email=during19@example.com")
        .await;
    assert_eq!(status, 200);
    app.finish().await;
}

#[tokio::test]
async fn a_projector_that_restarts_picks_up_where_it_stopped() {
    // no projector runs while the second registrations are made: do not wait for it
    let env = TestEnv::new().set("READ_YOUR_WRITES_TIMEOUT_MS", "200");
    let writer = env.spawn(Roles::only(&[Role::Api, Role::Relay])).await;
    let projector = env.spawn(Roles::only(&[Role::Projector])).await;
    for i in 0..5 {
        assert_eq!(
            writer
                .register(&format!("one{i}@example.com"))
                .await
                .status(),
            202
        );
    }
    writer.wait_for_projections("first batch").await;
    projector.stop().await;

    for i in 0..7 {
        assert_eq!(
            writer
                .register(&format!("two{i}@example.com"))
                .await
                .status(),
            202
        );
    }
    assert_eq!(
        writer.scalar_i64("select count(*) from users").await,
        5,
        "no projector is running"
    );

    let projector = env.spawn(Roles::only(&[Role::Projector])).await;
    writer
        .wait_for_projections("the restarted projector catches up")
        .await;
    assert_eq!(writer.scalar_i64("select count(*) from users").await, 12);
    assert_eq!(
        writer
            .scalar_i64("select sum(count)::bigint from event_type_counts")
            .await,
        24
    );
    projector.stop().await;
    writer.finish().await;
}

#[tokio::test]
async fn an_event_that_keeps_failing_stops_its_read_model_and_shows_as_failed() {
    let env = TestEnv::new().set("PROJECTOR_MAX_ATTEMPTS", "2");
    let app = env.spawn_all().await;
    assert_eq!(app.register("first@example.com").await.status(), 202);

    // A user event whose payload the users read model cannot decode.
    let bad_user = Uuid::now_v7();
    let bad_event: Uuid = sqlx::query_scalar(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('user', $1, 1, 'UserRegistered', '1.0', '{\"UserRegistered\": {\"email\": 42}}', '{}') returning event_id",
    )
    .bind(bad_user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("insert");
    let app_ref = &app;
    let body: Value = eventually(
        "users is marked failed",
        Duration::from_secs(30),
        || async move {
            let resp = app_ref
                .client
                .get(app_ref.url("/health/ready"))
                .send()
                .await
                .ok()?;
            if resp.status() != 503 {
                return None;
            }
            let body: Value = resp.json().await.ok()?;
            let failed = body["data"]["projections"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == "users" && p["status"] == "failed");
            failed.then_some(body)
        },
    )
    .await;
    let users = body["data"]["projections"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "users").cloned())
        .expect("users");
    assert_eq!(users["failed_event_id"], bad_event.to_string());
    assert!(users["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("payload")));

    // Later events are not applied past the failure (never silently skipped) ...
    let resp = app.register("later@example.com").await;
    assert_eq!(resp.status(), 202);
    assert_eq!(app.scalar_i64("select count(*) from users").await, 1);
    // ... while the read model that can apply everything goes on.
    eventually(
        "event_stats applies all five",
        Duration::from_secs(15),
        || async move {
            (app_ref
                .scalar_i64("select sum(count)::bigint from event_type_counts")
                .await
                == 5)
                .then_some(())
        },
    )
    .await;

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chronicle_projection_failed{read_model=\"users\"} 1")),
        "{metrics}"
    );
    app.finish().await;
}
