//! Event versioning end to end: a v1 fixture event loads and projects as v2; the stored row
//! is unchanged.
//!
//! A `LoginFailed` as version 1.0 wrote it (no `reason`) is appended straight into the log,
//! as an old deployment left it. Every reader upcasts it (`eventstore::upcast`): the relay
//! publishes it as 2.0, the users read model applies it, the aggregate loads it (the next
//! wrong password is the second failure in a row), the histories show it as 2.0 with
//! `reason: "wrong_password"`, and the row in `events` stays byte for byte as inserted.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::admin::{admin_env, admin_token};
use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{eventually, json, TestApp};

/// The payload as version 1.0 stored it (in jsonb's own text form, so the stored text can
/// be compared with it byte for byte).
const V1_PAYLOAD: &str = r#"{"LoginFailed": {"attempts": 1, "locked_until": null}}"#;

async fn last_sequence(app: &TestApp, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "select max(sequence) from events where aggregate_type = 'user' and aggregate_id = $1",
    )
    .bind(user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("the user's last sequence")
}

/// Wait until the users read model has applied the user's event `sequence`.
async fn users_read_model_at(app: &TestApp, user: Uuid, sequence: i64) {
    let pool = app.pool.clone();
    eventually(
        &format!("the users read model to apply sequence {sequence}"),
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let at: Option<i64> =
                    sqlx::query_scalar("select last_sequence from users where id = $1")
                        .bind(user)
                        .fetch_optional(&pool)
                        .await
                        .ok()
                        .flatten();
                (at == Some(sequence)).then_some(())
            }
        },
    )
    .await;
}

async fn stored_row(app: &TestApp, user: Uuid, sequence: i64) -> (String, String) {
    sqlx::query_as(
        "select payload::text, event_version from events \
         where aggregate_type = 'user' and aggregate_id = $1 and sequence = $2",
    )
    .bind(user.to_string())
    .bind(sequence)
    .fetch_one(&app.pool)
    .await
    .expect("the stored row")
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    json(
        reqwest::Client::new()
            .get(app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

#[tokio::test]
async fn a_v1_event_loads_and_projects_as_v2_and_its_stored_row_is_unchanged() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    let email = "versioned@example.com";
    let user = signed_up(&app, email).await;
    let registered = last_sequence(&app, user).await;
    users_read_model_at(&app, user, registered).await;

    // An old deployment's failed sign-in: LoginFailed 1.0, appended as postgres-es does.
    let v1 = registered + 1;
    sqlx::query(
        "insert into events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('user', $1, $2, 'LoginFailed', '1.0', $3::jsonb, $4::jsonb)",
    )
    .bind(user.to_string())
    .bind(v1)
    .bind(V1_PAYLOAD)
    .bind(r#"{"actor_role": "anonymous"}"#)
    .execute(&app.pool)
    .await
    .expect("a v1 event appended");
    let inserted = stored_row(&app, user, v1).await;
    assert_eq!(inserted, (V1_PAYLOAD.to_owned(), "1.0".to_owned()));

    // It projects: the users read model applies it (a 1.0 payload without upcasting does
    // not deserialise, and the read model would stop as failed instead).
    users_read_model_at(&app, user, v1).await;
    let failed: i64 =
        sqlx::query_scalar("select count(*) from projection_checkpoints where status = 'failed'")
            .fetch_one(&app.pool)
            .await
            .expect("the read models' status");
    assert_eq!(failed, 0, "no read model failed on the v1 event");

    // It loads: the aggregate counted it, so the next wrong password is failure number 2...
    let (s, b) = login(&app, email, "not-the-password-at-all").await;
    assert_eq!(s, 401, "{b}");
    let (payload, version): (Value, String) = sqlx::query_as(
        "select payload, event_version from events \
         where aggregate_type = 'user' and aggregate_id = $1 and sequence = $2",
    )
    .bind(user.to_string())
    .bind(v1 + 1)
    .fetch_one(&app.pool)
    .await
    .expect("the next failure");
    assert_eq!(version, "2.0");
    assert_eq!(payload["LoginFailed"]["attempts"], 2, "{payload}");
    assert_eq!(payload["LoginFailed"]["reason"], "wrong_password");
    // ...and the right password clears both failures.
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let access = b["data"]["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let cleared: String = sqlx::query_scalar(
        "select event_type from events \
         where aggregate_type = 'user' and aggregate_id = $1 and sequence = $2",
    )
    .bind(user.to_string())
    .bind(v1 + 2)
    .fetch_one(&app.pool)
    .await
    .expect("the sign-in after failures");
    assert_eq!(cleared, "FailedLoginsCleared");
    users_read_model_at(&app, user, v1 + 2).await;

    // The admin's history reads it as 2.0 (StoredEvent::from_row upcasts).
    let (s, b) = get(
        &app,
        &format!("/api/v1/admin/users/{user}/history?per_page=500&type=LoginFailed"),
        &admin,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let items = b["data"]["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2, "{items:?}");
    let old = &items[0];
    assert_eq!(old["event_version"], "2.0", "{old}");
    assert_eq!(old["payload"]["LoginFailed"]["reason"], "wrong_password");
    assert_eq!(old["payload"]["LoginFailed"]["attempts"], 1);
    assert_eq!(old["summary"], "Sign-in failed: wrong password (attempt 1)");
    assert_eq!(items[1]["event_version"], "2.0");
    assert_eq!(items[1]["payload"]["LoginFailed"]["attempts"], 2);

    // So does the user's own history.
    let (s, b) = get(&app, "/api/v1/users/me/history?per_page=200", &access).await;
    assert_eq!(s, 200, "{b}");
    let mine: Vec<&Value> = b["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["event_type"] == "LoginFailed")
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine
        .iter()
        .all(|i| i["details"]["reason"] == "wrong_password"));

    // The relay published it as 2.0 too: stream consumers get the current version.
    let envelopes = app.stream_envelopes().await;
    let published = envelopes
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.aggregate_id == user.to_string() && e.sequence == v1 as u64)
        .expect("the v1 event was published");
    assert_eq!(published.event_version, "2.0");
    assert_eq!(published.payload["LoginFailed"]["reason"], "wrong_password");

    // And the log still holds the row exactly as it was inserted.
    assert_eq!(stored_row(&app, user, v1).await, inserted);
    let has_reason: bool = sqlx::query_scalar(
        "select payload -> 'LoginFailed' ? 'reason' from events \
         where aggregate_type = 'user' and aggregate_id = $1 and sequence = $2",
    )
    .bind(user.to_string())
    .bind(v1)
    .fetch_one(&app.pool)
    .await
    .expect("the stored row");
    assert!(!has_reason);

    app.finish().await;
}
