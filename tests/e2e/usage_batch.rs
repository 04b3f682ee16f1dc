//! Batch ingestion (`POST /api/v1/metrics/batch`) and per-aggregate batching: records
//! decided in order with duplicates, a limit reached mid-batch and invalid records beside
//! valid ones; a retried batch counts nothing twice; an admin key records for users; one
//! user's meter from 32 concurrent clients holds its limit exactly.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::{admin_env, cli};
use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{json, TestApp};
use crate::usage::used_today;

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":100,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":3},
  {"name":"five_hundred","messages_per_day":500,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":3}]}"#;

async fn token_of(app: &TestApp, email: &str) -> (Uuid, String) {
    let id = signed_up(app, email).await;
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let token = b["data"]["access_token"].as_str().expect("access");
    (id, token.to_owned())
}

async fn batch(app: &TestApp, auth: (&str, &str), body: &Value) -> (u16, Value, Option<String>) {
    let resp = reqwest::Client::new()
        .post(app.url("/api/v1/metrics/batch"))
        .header(auth.0, auth.1)
        .json(body)
        .send()
        .await
        .expect("sent");
    let position = resp
        .headers()
        .get("x-position")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (s, b) = json(resp).await;
    (s, b, position)
}

fn statuses(b: &Value) -> Vec<String> {
    b["data"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_decides_each_record_in_order_and_sent_again_counts_nothing_twice() {
    let app = admin_env().set("PLANS", PLANS).spawn_all().await;
    let (_, token) = token_of(&app, "batch@example.com").await;
    let (other, _) = token_of(&app, "other@example.com").await;
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    // 90 of the day's 100 messages used by single requests first
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/metrics"))
        .bearer_auth(&token)
        .json(&json!({"kind": "messages", "amount": 90}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);

    let eight_days_ago = (Utc::now() - Duration::days(8)).to_rfc3339();
    let records = json!({"records": [
        {"id": "a", "kind": "messages", "amount": 5},
        {"id": "b", "kind": "Not A Kind", "amount": 1},
        {"id": "c", "kind": "messages", "amount": 4},
        {"id": "d", "kind": "messages", "amount": 2},
        {"id": "e", "kind": "messages", "amount": 1},
        {"id": "a", "kind": "messages", "amount": 5},
        {"id": "f", "kind": "messages", "amount": 0},
        {"id": "g", "kind": "messages", "amount": 1, "occurred_at": eight_days_ago},
        {"id": "h", "kind": "messages", "amount": 1, "user_id": other},
        {"id": "not an id!", "kind": "messages", "amount": 1},
        {"id": "i", "kind": "api_calls", "amount": 1000}
    ]});
    let (s, b, position) = batch(&app, auth, &records).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        statuses(&b),
        [
            "accepted",
            "invalid",
            "accepted",
            "upgrade_required",
            "accepted",
            "duplicate",
            "invalid",
            "invalid",
            "invalid",
            "invalid",
            "accepted"
        ],
        "{b}"
    );
    let results = b["data"]["results"].as_array().expect("results").clone();
    assert_eq!(
        (
            &b["data"]["accepted"],
            &b["data"]["duplicates"],
            &b["data"]["refused"],
            &b["data"]["invalid"]
        ),
        (&json!(4), &json!(1), &json!(1), &json!(5))
    );
    // the limit reached mid-batch: 99 used, 2 asked, 1 left, and the next record still fits
    assert_eq!(results[3]["details"]["used"], 99, "{b}");
    assert_eq!(results[3]["details"]["remaining"], 1);
    assert_eq!(results[3]["details"]["limit"], 100);
    assert_eq!(results[3]["details"]["plan"], "free");
    assert_eq!(results[1]["details"]["field"], "kind");
    assert_eq!(results[6]["details"]["field"], "amount");
    assert_eq!(results[7]["details"]["field"], "occurred_at");
    assert_eq!(results[8]["details"]["field"], "user_id");
    assert_eq!(results[9]["details"]["field"], "id");
    assert_eq!(results[9]["id"], "not an id!");
    // an id sent twice in one batch names the first one's event
    assert_eq!(results[5]["position"], results[0]["position"]);
    for i in [0, 2, 4, 10] {
        assert!(results[i]["position"].is_string(), "{b}");
    }
    assert!(results[3].get("position").is_none());
    assert_eq!(
        position.as_deref(),
        results[10]["position"]
            .as_str()
            .max(results[4]["position"].as_str())
    );

    // JSON Schema's integers: 2.0 is one; -3 is an integer but not an amount
    let (s, b, _) = batch(
        &app,
        auth,
        &json!({"records": [
            {"id": "float", "kind": "api_calls", "amount": 2.0},
            {"id": "negative", "kind": "api_calls", "amount": -3}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(statuses(&b), ["accepted", "invalid"], "{b}");

    // the same batch again (a retry after a lost answer): nothing is counted twice
    let (s, again, _) = batch(&app, auth, &records).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        statuses(&again),
        [
            "duplicate",
            "invalid",
            "duplicate",
            "upgrade_required",
            "duplicate",
            "duplicate",
            "invalid",
            "invalid",
            "invalid",
            "invalid",
            "duplicate"
        ],
        "{again}"
    );
    let again_results = again["data"]["results"].as_array().expect("results");
    for i in [0, 2, 4, 10] {
        assert_eq!(again_results[i]["position"], results[i]["position"]);
    }
    assert_eq!(again_results[3]["details"]["used"], 100);

    app.wait_for_projections("usage caught up").await;
    assert_eq!(used_today(&app, &token, "messages").await, 100);
    assert_eq!(used_today(&app, &token, "api_calls").await, 1002);
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'UsageRecorded'")
            .await,
        6
    );
    assert_eq!(
        app.scalar_i64(
            "select count(*) from events where event_type = 'UsageRecorded' \
             and payload->'UsageRecorded'->>'record_id' in ('a', 'c', 'e', 'i')"
        )
        .await,
        4
    );

    // what the schema forbids refuses the whole batch
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"id": format!("r{i}"), "kind": "tokens", "amount": 1}))
        .collect();
    for body in [
        json!({"records": too_many}),
        json!({"records": []}),
        json!({"records": [{"id": "x", "kind": "tokens", "amount": "one"}]}),
        json!({"records": [{"id": "x", "kind": "tokens", "amount": 1.5}]}),
        serde_json::from_str::<Value>(
            r#"{"records": [{"id": "x", "kind": "tokens", "amount": 9223372036854775808}]}"#,
        )
        .expect("json"),
        json!({"records": [{"id": "x", "kind": "tokens", "amount": 1, "extra": true}]}),
    ] {
        let (s, b, _) = batch(&app, auth, &body).await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"], "validation");
    }
    let (s, _, _) = batch(&app, ("x-ignored", "none"), &records).await;
    assert_eq!(s, 401);
    app.finish().await;
}

#[tokio::test]
async fn an_admin_key_records_for_named_users_and_a_record_without_a_user_is_invalid() {
    let app = admin_env().set("PLANS", PLANS).spawn_all().await;
    let (alice, alice_token) = token_of(&app, "alice@example.com").await;
    let (bob, bob_token) = token_of(&app, "bob@example.com").await;
    let (code, out, err) = cli(&app, &["api-key", "create", "--name", "metering", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();
    let body = json!({"records": [
        {"id": "x1", "kind": "tokens", "amount": 300, "user_id": alice},
        {"id": "x1", "kind": "tokens", "amount": 200, "user_id": bob},
        {"id": "x2", "kind": "tokens", "amount": 800, "user_id": alice},
        {"id": "x3", "kind": "tokens", "amount": 1},
        {"id": "x4", "kind": "tokens", "amount": 1, "user_id": Uuid::now_v7()}
    ]});
    let (s, b, _) = batch(&app, ("x-admin-key", &key), &body).await;
    assert_eq!(s, 200, "{b}");
    // the same id for two users is two records; alice's second passes her 1,000 tokens
    assert_eq!(
        statuses(&b),
        [
            "accepted",
            "accepted",
            "upgrade_required",
            "invalid",
            "invalid"
        ],
        "{b}"
    );
    app.wait_for_projections("usage caught up").await;
    assert_eq!(used_today(&app, &alice_token, "tokens").await, 300);
    assert_eq!(used_today(&app, &bob_token, "tokens").await, 200);
    // the key is the actor of what it recorded
    assert_eq!(
        app.scalar_i64(&format!(
            "select count(*) from events where event_type = 'UsageRecorded' \
             and metadata->>'actor_id' = '{key_id}'"
        ))
        .await,
        2
    );
    app.finish().await;
}

#[tokio::test]
async fn one_user_from_32_concurrent_clients_with_room_for_500_gets_exactly_500() {
    let app = admin_env().set("PLANS", PLANS).spawn_all().await;
    let email = "hot@example.com";
    let (_, token) = token_of(&app, email).await;
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/users/me/plan"))
        .bearer_auth(&token)
        .json(&json!({"plan": "five_hundred"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let client = reqwest::Client::new();
    let answers: Vec<Vec<u16>> = futures::future::join_all((0..32).map(|_| {
        let (client, token, url) = (client.clone(), token.clone(), app.url("/api/v1/metrics"));
        async move {
            let mut statuses = vec![];
            for _ in 0..20 {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"kind": "messages", "amount": 1}))
                    .send()
                    .await
                    .expect("sent");
                statuses.push(r.status().as_u16());
            }
            statuses
        }
    }))
    .await;
    let all: Vec<u16> = answers.into_iter().flatten().collect();
    let accepted = all.iter().filter(|s| **s == 202).count();
    let refused = all.iter().filter(|s| **s == 402).count();
    assert_eq!((accepted, refused), (500, 140), "{all:?}");
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'UsageRecorded'")
            .await,
        500
    );
    // the queue on the meter was decided in batches: fewer appends than records
    let appends = app
        .scalar_i64(
            "select count(distinct transaction_id::text) from events where event_type = 'UsageRecorded'",
        )
        .await;
    assert!(appends < 500, "{appends} appends for 500 records");
    app.wait_for_projections("usage caught up").await;
    assert_eq!(used_today(&app, &token, "messages").await, 500);
    app.finish().await;
}
