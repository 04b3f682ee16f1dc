//! PostgreSQL restarted under load (a cluster of the test's own): every connection-level
//! failure answers 503 with `Retry-After`, never 500; with `Idempotency-Key` and client
//! retries, every command that was answered 202 is in the log exactly once, no key is
//! left `running`, and the read models verify.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use projections::ReadModel;
use serde_json::{json, Value};

use crate::conversations::token;
use crate::own_postgres::OwnPostgres;
use crate::support::TestEnv;

const COMMANDS: usize = 1000;
const CLIENTS: usize = 16;
const USERS: usize = 4;

/// One command, retried with the same key as a careful client would, until a final answer.
async fn record_with_retries(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    statuses: &Mutex<BTreeMap<u16, usize>>,
) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let sent = client
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"kind": "api_calls", "amount": 1}))
            .send()
            .await;
        // the server itself never goes away here, but a connection can be cut: then retry
        if let Ok(resp) = sent {
            let status = resp.status().as_u16();
            *statuses.lock().expect("lock").entry(status).or_default() += 1;
            if status == 503 {
                assert!(
                    resp.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
            }
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !matches!(status, 503 | 409) {
                return (status, body);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "key {key} never got a final answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_twice_under_load_loses_nothing_and_answers_no_500() {
    let pg = OwnPostgres::start();
    let env = TestEnv::new();
    let database = env.database.clone();
    let env = env
        .set("DATABASE_URL", format!("{}/{database}", pg.base_url()))
        // a request waiting for a connection gives up before a client would
        .set("DATABASE_ACQUIRE_TIMEOUT_SECS", "5");
    let app = env.spawn_all().await;
    let mut tokens = vec![];
    for u in 0..USERS {
        tokens.push(token(&app, &format!("blip{u}@example.com")).await);
    }
    let url = app.url("/api/v1/metrics");
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = vec![];
    for _ in 0..CLIENTS {
        let (url, tokens, statuses, done, next) = (
            url.clone(),
            tokens.clone(),
            statuses.clone(),
            done.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answers = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= COMMANDS {
                    return answers;
                }
                let key = format!("blip-{i}");
                let (status, body) =
                    record_with_retries(&client, &url, &tokens[i % USERS], &key, &statuses).await;
                done.fetch_add(1, Ordering::SeqCst);
                answers.push((key, status, body));
            }
        }));
    }
    // two restarts while the commands run
    for at in [COMMANDS / 4, COMMANDS * 3 / 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::SeqCst) < at {
            assert!(Instant::now() < deadline, "the load stalled before {at}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pg_ref = &pg;
        tokio::task::block_in_place(|| pg_ref.restart());
    }
    let mut answers = vec![];
    for w in workers {
        answers.extend(w.await.expect("client task"));
    }
    let statuses = statuses.lock().expect("lock").clone();
    assert_eq!(statuses.get(&500), None, "no 500 ever: {statuses:?}");
    assert_eq!(answers.len(), COMMANDS);
    let mut positions = HashSet::new();
    for (key, status, body) in &answers {
        assert_eq!(*status, 202, "{key}: {body}");
        let position = body["data"]["position"]
            .as_str()
            .expect("a position")
            .to_owned();
        assert!(
            positions.insert(position),
            "{key}: two answers with one position"
        );
    }

    // every 202 is in the log exactly once: as many usage events as answers, and each
    // answer's position is one of them
    app.wait_for_projections("the read models after the restarts")
        .await;
    let logged: Vec<String> = sqlx::query_scalar(
        "select lpad(to_hex(transaction_id::text::bigint), 16, '0') || '-' || lpad(to_hex(position), 16, '0') \
         from events where event_type = 'UsageRecorded' and payload::text like '%api_calls%'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("usage events");
    assert_eq!(
        logged.len(),
        COMMANDS,
        "each accepted command once, none twice: {statuses:?}"
    );
    let logged: HashSet<String> = logged.into_iter().collect();
    assert_eq!(
        logged, positions,
        "the answers' positions are the log's events"
    );
    let running = app
        .scalar_i64("select count(*) from idempotency_keys where state = 'running'")
        .await;
    assert_eq!(running, 0, "no key left running");
    let recorded: i64 = app
        .scalar_i64(
            "select coalesce(sum(total), 0)::bigint from usage_daily where kind = 'api_calls'",
        )
        .await;
    assert_eq!(
        recorded, COMMANDS as i64,
        "the read model counted each once"
    );
    let keys = app.keys();
    for model in ReadModel::ALL {
        let report = projections::rebuild::verify(&app.pool, &keys, model, |_, _| {})
            .await
            .expect("verify runs");
        assert!(report.matches(), "{model}: {report:?}");
    }
    eprintln!("answers seen during the restarts: {statuses:?}");
    app.stop().await;
}
