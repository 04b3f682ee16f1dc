//! Usage benchmark: RecordUsage (`POST /api/v1/metrics`) commands/s at 16 and 64 clients
//! over 64 users, and at 16 clients on one user's meter (a hot meter); pgbench running one
//! event-store transaction (read the stream's head, append one event) in the same run, as
//! the baseline; latency p50/p99; and the cost of the 10,000th command of one user's day
//! against the first (snapshots keep it flat); and batch ingestion (`POST
//! /api/v1/metrics/batch`, 100 records a request) in records/s against single requests;
//! and projection lag (answer → usage read model) with RecordUsage paced at half the
//! 16-client rate.
//!
//! `cargo bench --bench usage` (PostgreSQL, NATS and pgbench as in the README). Knobs:
//! `BENCH_SECS` (default 10), `BENCH_DAY_COMMANDS` (10000).

#[path = "fastapi/mod.rs"]
mod fastapi;
#[path = "projection_lag/mod.rs"]
mod lag;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::user::{User, UserCommand, UserPolicy};
use aggregates::EventMetadata;
use chronicle::{Application, Config, Role, Roles};
use eventstore::crypto::KeyStore;
use eventstore::passwords::PasswordHasher;
use eventstore::CommandBus;
use projections::{CheckpointWatch, ReadModel};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The PostgreSQL server the bench uses; `BENCH_PG` points it at another one (a private
/// cluster with `pg_stat_statements`, say).
fn pg_base() -> String {
    std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}
const PASSWORD: &str = "a-bench-passphrase-that-is-long";
const PLANS: &str = r#"{"default":"pro","plans":[{"name":"pro","messages_per_day":100000000,"tokens_per_day":100000000,"uploads_per_day":100000000,"max_conversations":1000}]}"#;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An HTTP client keeping a connection per load client.
fn http_client(clients: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client")
}

/// The values every task returned, together and sorted.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_by(f64::total_cmp);
    all
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// `clients` loops of RecordUsage paced to `rate` commands/s in all, for `secs`; every
/// 5th command's projection lag: from its answer (committed) until the usage read model
/// has its cursor (`X-Position`). (commands/s, lag p50, lag p99, lag samples, errors).
async fn load_paced(
    base: &str,
    tokens: &Arc<Vec<String>>,
    watch: &CheckpointWatch,
    clients: usize,
    rate: f64,
    secs: u64,
) -> (f64, f64, f64, usize, u64) {
    let (client, errors) = (http_client(clients), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1.0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, tokens, url, errors, done, watch) = (
                client.clone(),
                tokens.clone(),
                format!("{base}/api/v1/metrics"),
                errors.clone(),
                done.clone(),
                watch.clone(),
            );
            tokio::spawn(async move {
                let mut lags = vec![];
                let mut i = c;
                let mut next = Instant::now() + interval.mul_f64(c as f64 / clients as f64);
                while Instant::now() < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                    let r = client
                        .post(&url)
                        .bearer_auth(&tokens[i % tokens.len()])
                        .json(&serde_json::json!({"kind": "messages", "amount": 1}))
                        .send()
                        .await;
                    i += clients;
                    let cursor = match r {
                        Ok(r) if r.status() == 202 => lag::position(&r),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let answered = Instant::now();
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if let (Some(cursor), true) = (cursor, n % 5 == 0) {
                        lags.push(lag::sample(&watch, ReadModel::Usage, cursor, answered));
                    }
                }
                lag::collect(lags).await
            })
        })
        .collect();
    let lags = gather(tasks).await;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (
        rate,
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.len(),
        errors.load(Ordering::Relaxed),
    )
}

/// `clients` loops of `POST /api/v1/metrics/batch` with `size` records each (unique ids),
/// spread over `tokens`, for `secs`: (records accepted/s, p50 and p99 ms per batch, errors).
async fn load_batches(
    base: &str,
    tokens: &Arc<Vec<String>>,
    clients: usize,
    size: usize,
    secs: u64,
) -> (f64, f64, f64, u64) {
    let (client, errors) = (http_client(clients), Arc::new(AtomicU64::new(0)));
    let accepted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, tokens, url, errors, accepted) = (
                client.clone(),
                tokens.clone(),
                format!("{base}/api/v1/metrics/batch"),
                errors.clone(),
                accepted.clone(),
            );
            tokio::spawn(async move {
                let mut lat = vec![];
                let mut i = c;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let records: Vec<serde_json::Value> = (0..size)
                        .map(|_| {
                            n += 1;
                            serde_json::json!({"id": format!("c{c}-{n}"), "kind": "messages", "amount": 1})
                        })
                        .collect();
                    let t0 = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&tokens[i % tokens.len()])
                        .json(&serde_json::json!({ "records": records }))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            let n = body["data"]["accepted"].as_u64().unwrap_or(0);
                            accepted.fetch_add(n, Ordering::Relaxed);
                            if n as usize != size {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let all = gather(tasks).await;
    let rate = accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (
        rate,
        pct(&all, 0.5),
        pct(&all, 0.99),
        errors.load(Ordering::Relaxed),
    )
}

/// `clients` loops of RecordUsage (POST `url`) for `secs`, spread over `tokens`: (commands/s, p50, p99).
async fn load(
    url: &str,
    tokens: &Arc<Vec<String>>,
    clients: usize,
    secs: u64,
) -> (f64, f64, f64, u64) {
    let (client, errors) = (http_client(clients), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, tokens, url, errors) = (
                client.clone(),
                tokens.clone(),
                url.to_owned(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut lat = vec![];
                let mut i = c;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&tokens[i % tokens.len()])
                        .json(&serde_json::json!({"kind": "messages", "amount": 1}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 202 => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let all = gather(tasks).await;
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (
        rate,
        pct(&all, 0.5),
        pct(&all, 0.99),
        errors.load(Ordering::Relaxed),
    )
}

/// The baseline: one event-store transaction as PostgreSQL alone runs it: read the
/// stream's head, append one event after it (with the NOTIFY trigger), commit. Each pgbench
/// client appends to a stream of its own, as each RecordUsage user does.
const PGBENCH_SCRIPT: &str = r#"
begin;
select coalesce(max(sequence), 0) as seq from events where aggregate_type = 'meter' and aggregate_id = 'pgb-' || :client_id \gset
insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values ('meter', 'pgb-' || :client_id, :seq + 1, 'UsageRecorded', '1.0', '{"UsageRecorded": {"user_id": "00000000-0000-0000-0000-000000000001", "day": "2026-11-22", "kind": "messages", "amount": 1, "occurred_at": "2026-11-22T00:00:00Z"}}', '{"actor_role": "user", "ip": "encv1-00000000-0000-0000-0000-000000000001-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}');
commit;
"#;

async fn pgbench(clients: usize, secs: u64) -> Option<f64> {
    let id = Uuid::new_v4().simple().to_string();
    let db = format!("chronicle_bench_pgbu_{}", &id[..12]);
    let url = format!("{}/{db}", pg_base());
    eventstore::database::ensure_database(&url).await.ok()?;
    let pool = eventstore::database::connect(&url, 2).await.ok()?;
    eventstore::database::migrate(&pool).await.ok()?;
    pool.close().await;
    let script = std::env::temp_dir().join(format!("chronicle-pgbench-usage-{}.sql", &id[..12]));
    std::fs::write(&script, PGBENCH_SCRIPT).ok()?;
    let out = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
        ])
        .args(["-c", &clients.to_string(), "-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg(&db)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if let Ok(admin) = sqlx::PgPool::connect(&format!("{}/postgres", pg_base())).await {
        let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)"))
            .execute(&admin)
            .await;
    }
    let _ = std::fs::remove_file(&script);
    text.lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secs = env_num("BENCH_SECS", 10);
        let day_commands = env_num("BENCH_DAY_COMMANDS", 10_000) as usize;
        let id = Uuid::new_v4().simple().to_string();
        let db = format!("chronicle_bench_usage_{}", &id[..12]);
        let stream = format!("CHRONICLE_BENCH_USAGE_{}", &id[..12]);
        let vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "test".into()),
            ("DATABASE_URL".into(), format!("{}/{db}", pg_base())),
            ("DATABASE_MAX_CONNECTIONS".into(), "40".into()),
            ("CHRONICLE_STREAM".into(), stream.clone()),
            ("CHRONICLE_SUBJECT_PREFIX".into(), stream.to_lowercase()),
            ("BIND".into(), "127.0.0.1:0".into()),
            ("SECRET_KEY".into(), "bench-secret-key-that-is-long-enough-0000".into()),
            ("MASTER_KEY".into(), eventstore::crypto::Key::random().to_hex()),
            ("PLANS".into(), PLANS.into()),
            ("RATE_LIMIT_AUTH_IP_PER_MINUTE".into(), "10000000".into()),
            ("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE".into(), "10000000".into()),
            ("DATA_DIR".into(), std::env::temp_dir().join(&stream).display().to_string()),
        ];
        let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).expect("config");
        let master = config.keys.master.clone();
        let master_again = master.clone();
        let app = Application::build(config, Roles::only(&[Role::Api, Role::Relay, Role::Projector])).await.expect("app");
        let base = format!("http://{}", app.local_addr().expect("api"));
        let pool = app.pool().clone();
        let stop = app.stop_token();
        let server = tokio::spawn(app.run_until_stopped());

        // 64 verified users, signed in
        let users = CommandBus::<User>::new(pool.clone(), KeyStore::new(pool.clone(), master), UserPolicy::default());
        let hash = PasswordHasher::new(2).hash(PASSWORD.into()).await.expect("hash");
        let client = reqwest::Client::new();
        let mut tokens = vec![];
        for i in 0..64 {
            let user_id = Uuid::now_v7();
            let email = format!("u{i}@bench.example.com");
            eventstore::email_claims::claim(&pool, &email, user_id).await.expect("claim");
            users
                .execute(
                    &user_id.to_string(),
                    UserCommand::RegisterUser { user_id, email: email.clone(), password_hash: Some(hash.clone()), display_name: None, role: "user".into(), plan: "pro".into(), verified: true, verification_nonce: "n".into(), invitation: false, now: chrono::Utc::now() },
                    &EventMetadata::system("bench"),
                )
                .await
                .expect("user");
            let r: serde_json::Value = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&serde_json::json!({"email": email, "password": PASSWORD}))
                .send()
                .await
                .expect("login")
                .json()
                .await
                .expect("json");
            tokens.push(r["data"]["access_token"].as_str().expect("token").to_owned());
        }
        let tokens = Arc::new(tokens);
        let metrics = format!("{base}/api/v1/metrics");
        let r16 = load(&metrics, &tokens, 16, secs).await;
        let r64 = load(&metrics, &tokens, 64, secs).await;
        // one user's meter from 16 clients at once: a hot meter
        let hot = load(&metrics, &Arc::new(vec![tokens[1].clone()]), 16, secs).await;
        // projection lag at half the 16-client rate
        let watch = CheckpointWatch::spawn(pool.clone(), CancellationToken::new());
        let paced = load_paced(&base, &tokens, &watch, 16, r16.0 / 2.0, secs).await;
        // batch ingestion: 100 records a request, 16 clients over the same users
        let batches = load_batches(&base, &tokens, 16, 100, secs).await;

        // one user's day: the first commands against the 10,000th
        let one = Arc::new(vec![tokens[0].clone()]);
        let mut lat = Vec::with_capacity(day_commands);
        for _ in 0..day_commands {
            let t0 = Instant::now();
            let r = client
                .post(format!("{base}/api/v1/metrics"))
                .bearer_auth(&one[0])
                .json(&serde_json::json!({"kind": "api_calls", "amount": 1}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 202);
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        let first = mean(&lat[..100.min(lat.len())]);
        let last = mean(&lat[lat.len().saturating_sub(100)..]);
        // the same day's meter loaded without snapshots: a full replay of every event
        let meter = {
            let claims: (String,) = sqlx::query_as("select aggregate_id from events where event_type = 'UsageRecorded' group by aggregate_id order by count(*) desc limit 1")
                .fetch_one(&pool)
                .await
                .expect("the busiest meter");
            claims.0
        };
        let replaying = CommandBus::<aggregates::meter::Meter>::new(pool.clone(), KeyStore::new(pool.clone(), master_again.clone()), ());
        let snapshotting = CommandBus::<aggregates::meter::Meter>::new(pool.clone(), KeyStore::new(pool.clone(), master_again), ()).with_snapshots(100);
        let mut full = vec![];
        let mut snap = vec![];
        for _ in 0..5 {
            let t0 = Instant::now();
            let _ = replaying.load(&meter).await.expect("load");
            full.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t0 = Instant::now();
            let _ = snapshotting.load(&meter).await.expect("load");
            snap.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let records: i64 = sqlx::query_scalar("select count(*) from events where event_type = 'UsageRecorded'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        stop.cancel();
        let _ = server.await;
        // the FastAPI + asyncpg app doing one INSERT, one worker per core, the same clients
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let fastapi = match fastapi::start(&format!("{}/{db}", pg_base()), cores).await {
            Some(app) => Some(load(&format!("{}/metrics", app.base), &tokens, 16, secs).await),
            None => None,
        };
        let p16 = pgbench(16, secs).await;
        let p64 = pgbench(64, secs).await;
        if let Ok(admin) = sqlx::PgPool::connect(&format!("{}/postgres", pg_base())).await {
            let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)")).execute(&admin).await;
        }
        if let Ok(c) = async_nats::connect("nats://127.0.0.1:4222").await {
            let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
        }
        println!("# usage benchmark: {secs} s per run, 64 users; {records} UsageRecorded events in all");
        println!();
        println!("| run | commands/s | p50 ms | p99 ms | errors |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        println!("| RecordUsage, 16 clients, 64 users round robin | {:.0} | {:.1} | {:.1} | {} |", r16.0, r16.1, r16.2, r16.3);
        println!("| RecordUsage, 64 clients, 64 users round robin | {:.0} | {:.1} | {:.1} | {} |", r64.0, r64.1, r64.2, r64.3);
        println!("| RecordUsage, 16 clients, one user (one hot meter) | {:.0} | {:.1} | {:.1} | {} |", hot.0, hot.1, hot.2, hot.3);
        let tps = |t: Option<f64>| t.map(|t| format!("{t:.0}")).unwrap_or("-".into());
        let ratio = |a: f64, b: Option<f64>| b.map(|b| format!("{:.2}×", a / b)).unwrap_or("-".into());
        println!("| pgbench, one event-store transaction (read the stream's head, append one event), 16 clients | {} tps | | | |", tps(p16));
        println!("| pgbench, the same, 64 clients | {} tps | | | |", tps(p64));
        if let Some(f) = fastapi {
            println!("| FastAPI + asyncpg, one INSERT, {cores} uvicorn workers, 16 clients | {:.0} | {:.1} | {:.1} | {} |", f.0, f.1, f.2, f.3);
        }
        println!();
        println!("| ratio | value |");
        println!("| --- | ---: |");
        println!("| RecordUsage 16 clients / pgbench 16 clients | {} |", ratio(r16.0, p16));
        println!("| RecordUsage 64 clients / pgbench 64 clients | {} |", ratio(r64.0, p64));
        println!("| RecordUsage 16 clients / FastAPI one INSERT 16 clients (goal ≥ 1.5×) | {} |", ratio(r16.0, fastapi.map(|f| f.0)));
        println!("| one hot meter / 64 users round robin (16 clients) | {:.2}× |", hot.0 / r16.0);
        println!("| batch ingestion records/s / single RecordUsage records/s (16 clients) | {:.1}× |", batches.0 / r16.0);
        println!();
        println!("| projection lag (answer → usage read model has its cursor), RecordUsage paced at half the 16-client rate | commands/s | lag p50 ms | lag p99 ms | samples | errors |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        println!("| {:.0}/s asked | {:.0} | {:.1} | {:.1} | {} | {} |", r16.0 / 2.0, paced.0, paced.1, paced.2, paced.3, paced.4);
        println!();
        println!("| batch ingestion, 16 clients, 100 records a request, 64 users round robin | records/s | p50 ms a batch | p99 ms | errors |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        println!("| POST /api/v1/metrics/batch | {:.0} | {:.1} | {:.1} | {} |", batches.0, batches.1, batches.2, batches.3);
        println!();
        println!("| one user's day, sequential | mean latency ms |");
        println!("| --- | ---: |");
        println!("| commands 1–100 | {first:.2} |");
        println!("| commands {}–{} | {last:.2} |", day_commands.saturating_sub(99), day_commands);
        println!();
        println!("| loading that day's meter ({day_commands}+ events) | mean ms |");
        println!("| --- | ---: |");
        println!("| from its snapshot (at most 100 events replayed) | {:.2} |", mean(&snap));
        println!("| full replay, no snapshot | {:.2} |", mean(&full));
    });
}
