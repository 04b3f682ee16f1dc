//! Pipeline benchmark: commands/s over HTTP at 16 concurrent clients, pgbench running the
//! same SQL in the same run, and projection lag (command answered → read model has it).
//!
//! `cargo bench --bench pipeline` (needs PostgreSQL and NATS as in the README, and
//! `pgbench` on the PATH). Knobs: `BENCH_SECS` (default 15), `BENCH_CLIENTS` (16),
//! `BENCH_PACED_RATE` (200 commands/s for the run that measures lag below saturation).
//! Numbers go to stdout as a Markdown table, for BENCHMARKS.md.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "projection_lag/mod.rs"]
mod lag;

use chronicle::{Application, Config, Roles};
use projections::{CheckpointWatch, ReadModel};
use tokio_util::sync::CancellationToken;

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(db: &str, stream: &str, ryw_ms: u64) -> Config {
    let vars: Vec<(String, String)> = vec![
        ("APP_ENV".into(), "test".into()),
        ("DATABASE_URL".into(), format!("{PG_BASE}/{db}")),
        ("DATABASE_MAX_CONNECTIONS".into(), "40".into()),
        ("CHRONICLE_STREAM".into(), stream.into()),
        ("CHRONICLE_SUBJECT_PREFIX".into(), stream.to_lowercase()),
        ("BIND".into(), "127.0.0.1:0".into()),
        (
            "SECRET_KEY".into(),
            "bench-secret-key-that-is-long-enough-0000".into(),
        ),
        ("READ_YOUR_WRITES_TIMEOUT_MS".into(), ryw_ms.to_string()),
        // the write path's own cost: no per-IP limit on registrations (every client is
        // 127.0.0.1), and no floor under anonymous answers (250 ms by default, so that an
        // answer's timing tells nothing about the email)
        ("RATE_LIMIT_AUTH_IP_PER_MINUTE".into(), "100000000".into()),
        ("ANONYMOUS_ANSWER_MIN_MS".into(), "0".into()),
        (
            "DATA_DIR".into(),
            std::env::temp_dir().join(stream).display().to_string(),
        ),
    ];
    Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .expect("bench config")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct HttpRun {
    commands: u64,
    errors: u64,
    secs: f64,
    latency_ms: Vec<f64>,
    lag_ms: Vec<f64>,
}

/// `clients` loops POSTing registrations without a password for `secs`.
async fn http_run(ryw_ms: u64, clients: u64, secs: u64, label: &str, rate: Option<u64>) -> HttpRun {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db = format!("chronicle_bench_{}", &id[..12]);
    let stream = format!("CHRONICLE_BENCH_{}", &id[..12]);
    let app = Application::build(config(&db, &stream, ryw_ms), Roles::all())
        .await
        .expect("app builds");
    let base = format!("http://{}", app.local_addr().expect("api"));
    let pool = app.pool().clone();
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    let watch = CheckpointWatch::spawn(pool.clone(), CancellationToken::new());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("client");

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = vec![];
    for c in 0..clients {
        let (client, base, done, errors, watch) = (
            client.clone(),
            base.clone(),
            done.clone(),
            errors.clone(),
            watch.clone(),
        );
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = vec![];
            let mut lags = vec![];
            let mut i = 0u64;
            // paced runs: each client sends every `interval`
            let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r as f64));
            let mut next = Instant::now();
            while Instant::now() < deadline {
                i += 1;
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let t0 = Instant::now();
                let resp = client
                    .post(format!("{base}/api/v1/auth/register"))
                    .json(
                        &serde_json::json!({"email": format!("{label}-{c}-{i}@bench.example.com")}),
                    )
                    .send()
                    .await;
                let cursor = match resp {
                    Ok(r) if r.status() == 202 => lag::position(&r),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let answered = Instant::now();
                latencies.push((answered - t0).as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                // Lag: from the answer (the events are committed) until the users read
                // model has them; sampled on every 10th command to keep the load honest.
                if let (Some(cursor), true) = (cursor, i.is_multiple_of(10)) {
                    lags.push(lag::sample(&watch, ReadModel::Users, cursor, answered));
                }
            }
            (latencies, lag::collect(lags).await)
        }));
    }
    let mut latency_ms = vec![];
    let mut lag_ms = vec![];
    for t in tasks {
        let (l, g) = t.await.expect("client task");
        latency_ms.extend(l);
        lag_ms.extend(g);
    }
    let secs_taken = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    latency_ms.sort_by(f64::total_cmp);
    lag_ms.sort_by(f64::total_cmp);
    // clean up
    if let Ok(admin) = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres")).await {
        let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)"))
            .execute(&admin)
            .await;
    }
    if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
    HttpRun {
        commands: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: secs_taken,
        latency_ms,
        lag_ms,
    }
}

/// The SQL one registration runs, as a pgbench script: claim the email, load the
/// aggregate's events, append the event in a transaction (the NOTIFY trigger fires), read
/// the cursor back.
const PGBENCH_SCRIPT: &str = r#"
\set n random(1, 2000000000)
insert into email_claims (email, user_id) values ('pgb-' || :client_id || '-' || :n || '-' || md5(random()::text) || '@bench.example.com', gen_random_uuid()) on conflict (email) do nothing;
select aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata from events where aggregate_type = 'user' and aggregate_id = 'pgb-' || :client_id || '-' || :n order by sequence;
begin;
insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values ('user', 'pgb-' || :client_id || '-' || :n || '-' || md5(random()::text), 1, 'UserRegistered', '1.0', '{"UserRegistered": {"user_id": "00000000-0000-0000-0000-000000000000", "email": "x@bench.example.com", "display_name": null, "password_hash": null, "role": "user", "plan": "free"}}', '{"actor_role": "anonymous", "ip": "127.0.0.1", "user_agent": "bench", "request_id": "r"}');
commit;
select transaction_id::text, position, event_id from events where aggregate_type = 'user' and aggregate_id = 'pgb-' || :client_id and sequence > 0 and sequence <= 1 order by sequence;
"#;

async fn pgbench_run(clients: u64, secs: u64) -> Option<(f64, String)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db = format!("chronicle_bench_pgb_{}", &id[..12]);
    let url = format!("{PG_BASE}/{db}");
    eventstore::database::ensure_database(&url).await.ok()?;
    let pool = eventstore::database::connect(&url, 2).await.ok()?;
    eventstore::database::migrate(&pool).await.ok()?;
    pool.close().await;
    let script = std::env::temp_dir().join(format!("chronicle-pgbench-{}.sql", &id[..12]));
    std::fs::write(&script, PGBENCH_SCRIPT).ok()?;
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&db)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    if let Ok(admin) = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres")).await {
        let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)"))
            .execute(&admin)
            .await;
    }
    let _ = std::fs::remove_file(&script);
    tps.map(|t| (t, text))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let secs = env_num("BENCH_SECS", 15);
        let clients = env_num("BENCH_CLIENTS", 16);
        println!("# pipeline benchmark: {clients} clients, {secs} s per run");

        let paced_rate = env_num("BENCH_PACED_RATE", 200);
        let fire = http_run(0, clients, secs, "fire", None).await;
        let ryw = http_run(2000, clients, secs, "ryw", None).await;
        let paced = http_run(0, clients, secs, "paced", Some(paced_rate)).await;
        let pgb = pgbench_run(clients, secs).await;

        println!();
        println!("| run | commands | errors | commands/s | latency p50 ms | latency p99 ms | lag p50 ms | lag p99 ms |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let paced_name = format!("HTTP register, paced at {paced_rate}/s, no wait");
        for (name, r) in [
            ("HTTP register, no read-your-writes wait", &fire),
            ("HTTP register, read-your-writes (users)", &ryw),
            (paced_name.as_str(), &paced),
        ] {
            println!(
                "| {name} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                r.commands,
                r.errors,
                r.commands as f64 / r.secs,
                percentile(&r.latency_ms, 0.5),
                percentile(&r.latency_ms, 0.99),
                percentile(&r.lag_ms, 0.5),
                percentile(&r.lag_ms, 0.99),
            );
        }
        match pgb {
            Some((tps, _)) => println!("| pgbench, the same SQL, {clients} clients | | | {tps:.0} | | | | |"),
            None => println!("| pgbench | not run (pgbench missing or failed) | | | | | | |"),
        }
    });
}
