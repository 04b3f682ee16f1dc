//! Usage, plans and limits: the quota holds under concurrency, counts add up at volume,
//! plan changes apply at once, snapshots equal a full replay.

use std::sync::Arc;

use aggregates::meter::{meter_id, Meter, MeterCommand};
use aggregates::EventMetadata;
use chrono::Utc;
use eventstore::CommandBus;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{json, TestApp, TestEnv};

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":100,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":3},
  {"name":"pro","messages_per_day":100000,"tokens_per_day":1000000,"uploads_per_day":500,"max_conversations":100}]}"#;

async fn user_token(app: &TestApp, email: &str) -> String {
    signed_up(app, email).await;
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned()
}

async fn record(client: &reqwest::Client, app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    json(
        client
            .post(app.url("/api/v1/metrics"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

pub(crate) async fn used_today(app: &TestApp, token: &str, kind: &str) -> i64 {
    let (s, b) = json(
        reqwest::Client::new()
            .get(app.url("/api/v1/usage"))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["data"]["today"]["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == kind))
        .and_then(|k| k["used"].as_i64())
        .unwrap_or(0)
}

#[tokio::test]
async fn two_hundred_concurrent_requests_with_room_for_one_hundred_accept_exactly_one_hundred() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let app = env.spawn_all().await;
    let token = user_token(&app, "quota@example.com").await;
    let client = reqwest::Client::new();
    let requests = (0..200).map(|_| {
        record(
            &client,
            &app,
            &token,
            json!({"kind": "messages", "amount": 1}),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 402)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        (accepted, refused.len()),
        (100, 100),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    let r = refused[0];
    assert_eq!(r["error"], "upgrade_required");
    assert_eq!(
        (
            r["details"]["limit"].as_u64(),
            r["details"]["remaining"].as_u64()
        ),
        (Some(100), Some(0))
    );
    app.wait_for_projections("usage caught up").await;
    assert_eq!(used_today(&app, &token, "messages").await, 100);
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'UsageRecorded'")
            .await,
        100
    );
    app.finish().await;
}

#[tokio::test]
async fn ten_thousand_records_across_a_hundred_users_add_up_everywhere() {
    let env = TestEnv::new()
        .set("PLANS", PLANS)
        .set("DATABASE_MAX_CONNECTIONS", "24");
    let app = env.spawn_all().await;
    let mut tokens = vec![];
    for i in 0..100 {
        tokens.push(user_token(&app, &format!("vol{i}@example.com")).await);
    }
    let tokens = Arc::new(tokens);
    let client = reqwest::Client::new();
    // (accepted, total amount accepted, answers that were neither 202 nor a retryable 409/503)
    let results: Vec<(i64, i64, Vec<u16>)> = futures::future::join_all((0..32).map(|worker| {
        let (client, tokens, url) = (client.clone(), tokens.clone(), app.url("/api/v1/metrics"));
        async move {
            let (mut ok, mut amount, mut odd) = (0, 0, vec![]);
            for i in (worker..10_000).step_by(32) {
                let a = 1 + (i % 3) as i64;
                let resp = client
                    .post(&url)
                    .bearer_auth(&tokens[i % 100])
                    .json(&json!({"kind": "api_calls", "amount": a}))
                    .send()
                    .await
                    .expect("sent");
                match resp.status().as_u16() {
                    202 => {
                        ok += 1;
                        amount += a;
                    }
                    409 | 503 => {}
                    other => odd.push(other),
                }
            }
            (ok, amount, odd)
        }
    }))
    .await;
    let accepted: i64 = results.iter().map(|r| r.0).sum();
    let accepted_amount: i64 = results.iter().map(|r| r.1).sum();
    let odd: Vec<u16> = results.iter().flat_map(|r| r.2.clone()).collect();
    assert!(odd.is_empty(), "unexpected answers: {odd:?}");
    // on an unloaded machine all are accepted; a loaded one may answer some 409/503, which
    // the client retries: what was accepted must be exactly what is counted
    assert!(accepted >= 9_900, "only {accepted} of 10,000 accepted");
    app.wait_for_projections("usage caught up").await;
    let events = app
        .scalar_i64("select count(*) from events where event_type = 'UsageRecorded'")
        .await;
    let records = app
        .scalar_i64("select sum(records)::bigint from usage_daily")
        .await;
    let total = app
        .scalar_i64("select sum(total)::bigint from usage_daily")
        .await;
    assert_eq!(
        (events, records, total),
        (accepted, accepted, accepted_amount)
    );
    // concurrent commands of different users shared statements (group commit)
    let shared = app
        .scalar_i64(
            "select count(*) from (select transaction_id from events \
             where event_type = 'UsageRecorded' group by transaction_id \
             having count(distinct aggregate_id) > 1) grouped",
        )
        .await;
    assert!(shared > 0, "no append carried two meters' events");
    app.finish().await;
}

/// A group of appends in which one aggregate lost a race (its state, cached here, is
/// stale: another process appended to it) fails as a whole on the unique violation; each
/// append then runs alone, so the others are appended and the one that lost is decided
/// again on its fresh state. Every command is accepted, each exactly once.
#[tokio::test]
async fn a_group_commit_with_one_stale_aggregate_appends_the_others_and_retries_that_one() {
    use aggregates::meter::{meter_id, Meter, MeterCommand};
    use aggregates::EventMetadata;
    use eventstore::CommandBus;

    let env = TestEnv::new();
    let app = env
        .spawn(chronicle::Roles::only(&[chronicle::Role::Api]))
        .await;
    let day = chrono::Utc::now().date_naive();
    let record = |user_id: uuid::Uuid| MeterCommand::RecordUsage {
        user_id,
        day,
        kind: "api_calls".into(),
        amount: 1,
        occurred_at: chrono::Utc::now(),
        limit: None,
        record_id: None,
    };
    let meta = EventMetadata::system("test");
    let users: Vec<uuid::Uuid> = (0..40).map(|_| uuid::Uuid::now_v7()).collect();
    let here = CommandBus::<Meter>::new(app.pool.clone(), app.keys(), ()).with_cache(1_000);
    let elsewhere = CommandBus::<Meter>::new(app.pool.clone(), app.keys(), ());
    for round in 0..3 {
        // every meter's state is cached here ...
        futures::future::join_all(users.iter().map(|u| {
            let (here, meta, id) = (&here, &meta, meter_id(*u, day));
            let command = record(*u);
            async move { here.execute(&id, command, meta).await }
        }))
        .await
        .into_iter()
        .for_each(|r| {
            r.expect("recorded");
        });
        // ... then "another process" moves every other meter on
        for u in users.iter().step_by(2) {
            elsewhere
                .execute(&meter_id(*u, day), record(*u), &meta)
                .await
                .expect("recorded elsewhere");
        }
        // and all of them at once here: stale and fresh meters in the same groups
        let answers = futures::future::join_all(users.iter().map(|u| {
            let (here, meta, id) = (&here, &meta, meter_id(*u, day));
            let command = record(*u);
            async move { here.execute(&id, command, meta).await }
        }))
        .await;
        for answer in answers {
            answer.unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    let (events, meters): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct aggregate_id) from events where event_type = 'UsageRecorded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    // per round: 40 here, 20 elsewhere, 40 here
    assert_eq!((events, meters), (3 * 100, 40));
    let gaps: i64 = sqlx::query_scalar(
        "select count(*) from (select aggregate_id, max(sequence) as m, count(*) as n from events \
         group by aggregate_id) s where m <> n",
    )
    .fetch_one(&app.pool)
    .await
    .expect("sequences");
    assert_eq!(gaps, 0, "every meter's sequence has no gap");
    app.finish().await;
}

#[tokio::test]
async fn a_plan_change_applies_to_the_next_request() {
    let env = TestEnv::new().set("PLANS", PLANS);
    let app = env.spawn_all().await;
    let token = user_token(&app, "upgrade@example.com").await;
    let c = reqwest::Client::new();
    let (s, b) = app.get_json("/api/v1/plans").await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["name"], "free");
    assert_eq!(b["data"][0]["default"], true);
    assert_eq!(
        record(&c, &app, &token, json!({"kind": "uploads", "amount": 5}))
            .await
            .0,
        202
    );
    let (s, b) = record(&c, &app, &token, json!({"kind": "uploads", "amount": 1})).await;
    assert_eq!((s, b["details"]["plan"].as_str()), (402, Some("free")));
    let (s, b) = json(
        c.post(app.url("/api/v1/users/me/plan"))
            .bearer_auth(&token)
            .json(&json!({"plan": "gold"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (422, Some("validation")));
    let (s, b) = json(
        c.post(app.url("/api/v1/users/me/plan"))
            .bearer_auth(&token)
            .json(&json!({"plan": "pro"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((s, b["data"]["plan"].as_str()), (200, Some("pro")), "{b}");
    assert_eq!(
        record(&c, &app, &token, json!({"kind": "uploads", "amount": 1}))
            .await
            .0,
        202
    );
    // bad input
    for bad in [
        json!({"kind": "messages", "amount": 0}),
        json!({"kind": "Bad Kind", "amount": 1}),
        json!({"kind": "messages", "amount": 1, "occurred_at": "2001-01-01T00:00:00Z"}),
        json!({"kind": "messages", "amount": 1, "occurred_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
        json!({"kind": "messages", "amount": -1}),
    ] {
        let (s, b) = record(&c, &app, &token, bad.clone()).await;
        assert_eq!(s, 422, "{bad}: {b}");
    }
    // GET /usage shows today against the plan, and honours X-Min-Position
    let (_, b) = record(&c, &app, &token, json!({"kind": "tokens", "amount": 250})).await;
    let position = b["data"]["position"].as_str().expect("position").to_owned();
    let (s, b) = json(
        c.get(app.url("/api/v1/usage"))
            .bearer_auth(&token)
            .header("x-min-position", position)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(s, 200);
    let tokens = b["data"]["today"]["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == "tokens").cloned())
        .expect("tokens");
    assert_eq!(
        (
            tokens["used"].as_i64(),
            tokens["limit"].as_u64(),
            tokens["remaining"].as_u64()
        ),
        (Some(250), Some(1_000_000), Some(999_750))
    );
    assert_eq!(b["data"]["plan"]["name"], "pro");
    app.finish().await;
}

#[tokio::test]
async fn a_meter_loaded_from_its_snapshot_equals_a_full_replay() {
    let env = TestEnv::new();
    let app = env
        .spawn(chronicle::Roles::only(&[chronicle::Role::Api]))
        .await;
    let snapshotting =
        CommandBus::<Meter>::new(app.pool.clone(), app.keys(), ()).with_snapshots(10);
    let replaying = CommandBus::<Meter>::new(app.pool.clone(), app.keys(), ());
    let user = Uuid::now_v7();
    let day = Utc::now().date_naive();
    let id = meter_id(user, day);
    for i in 0..35u64 {
        let kind = if i % 2 == 0 { "messages" } else { "tokens" };
        snapshotting
            .execute(
                &id,
                MeterCommand::RecordUsage {
                    user_id: user,
                    day,
                    kind: kind.into(),
                    amount: i + 1,
                    occurred_at: Utc::now(),
                    limit: None,
                    record_id: None,
                },
                &EventMetadata::system("test"),
            )
            .await
            .expect("recorded");
    }
    let (snapshot_seq,): (i64,) = sqlx::query_as(
        "select last_sequence from snapshots where aggregate_type = 'meter' and aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("a snapshot");
    assert_eq!(snapshot_seq, 30);
    let from_snapshot = snapshotting.load(&id).await.expect("load");
    let full = replaying.load(&id).await.expect("load");
    assert_eq!(from_snapshot, full);
    assert_eq!(full.records, 35);
    assert_eq!(
        full.used("messages") + full.used("tokens"),
        (1..=35).sum::<u64>()
    );
    app.finish().await;
}
