//! The event log as a product, measured on a log of `BENCH_EVENTS` (default 100,000)
//! events:
//!
//! 1. rebuild rate (events/s) of the `users` and `usage` read models through shadow tables,
//!    beside a plain batched insert (1,000 rows per statement) of the same rows;
//! 2. `GET /api/v1/admin/events` as NDJSON from the real binary: events/s and the server's
//!    resident memory (VmRSS before, VmHWM after) for 10,000 and for all events;
//! 3. replay: `chronicle events export` to a file, `chronicle events import` into a fresh
//!    database, every read model rebuilt there, every read-model table compared with the
//!    source's.
//!
//! `cargo bench --bench event_log` (PostgreSQL as in the README; NATS is not needed).

use std::process::Stdio;
use std::time::{Duration, Instant};

use aggregates::LogCursor;
use chronicle::Config;
use eventstore::crypto::KeyStore;
use eventstore::database;
use projections::ReadModel;
use sqlx::PgPool;
use uuid::Uuid;

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A log of `n` events: a tenth are users (registered + verified), the rest usage records
/// spread over those users' meters (4 days each).
async fn fill_log(pool: &PgPool, n: u64) {
    let users = (n / 10).max(1);
    let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::now_v7()).collect();
    let mut rows: Vec<(String, String, i64, String, serde_json::Value)> =
        Vec::with_capacity(n as usize);
    for (i, id) in user_ids.iter().enumerate() {
        rows.push(("user".into(), id.to_string(), 1, "UserRegistered".into(), serde_json::json!({"UserRegistered": {
            "user_id": id, "email": format!("user{i}@bench.example.com"), "display_name": format!("User {i}"),
            "password_hash": null, "role": "user", "plan": "free"}})));
        rows.push((
            "user".into(),
            id.to_string(),
            2,
            "EmailVerified".into(),
            serde_json::json!({"EmailVerified": {
            "method": "trusted", "verified_at": "2026-11-01T00:00:00Z"}}),
        ));
    }
    let mut k = 0u64;
    while (rows.len() as u64) < n {
        let user = &user_ids[(k % users) as usize];
        let round = k / users;
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")
            + chrono::Duration::days((round % 4) as i64);
        let meter = format!("{user}:{day}");
        rows.push(("meter".into(), meter, (round / 4 + 1) as i64, "UsageRecorded".into(), serde_json::json!({"UsageRecorded": {
            "user_id": user, "day": day, "kind": if k.is_multiple_of(2) { "messages" } else { "tokens" },
            "amount": 1 + k % 50, "occurred_at": format!("{day}T12:00:00Z")}})));
        k += 1;
    }
    for chunk in rows.chunks(1_000) {
        let mut tx = pool.begin().await.expect("begin");
        let (mut t, mut id, mut seq, mut et, mut p) = (vec![], vec![], vec![], vec![], vec![]);
        for r in chunk {
            t.push(r.0.clone());
            id.push(r.1.clone());
            seq.push(r.2);
            et.push(r.3.clone());
            p.push(r.4.clone());
        }
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             select t, i, s, e, '1.0', p, '{\"actor_role\":\"system\",\"actor_id\":\"bench\"}'::jsonb \
             from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[]) as x(t, i, s, e, p)",
        )
        .bind(&t)
        .bind(&id)
        .bind(&seq)
        .bind(&et)
        .bind(&p)
        .execute(&mut *tx)
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
    }
}

/// Insert every row of `table` again, into a scratch copy, 1,000 rows per statement from
/// the client: rows/s.
async fn plain_insert(pool: &PgPool, table: &str) -> (u64, f64) {
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t"))
            .fetch_all(pool)
            .await
            .expect("rows");
    for sql in [
        format!("drop table if exists bench_{table}"),
        format!("create table bench_{table} (like {table} including all)"),
    ] {
        sqlx::query(&sql).execute(pool).await.expect("scratch");
    }
    let started = Instant::now();
    for chunk in rows.chunks(1_000) {
        sqlx::query(&format!(
            "insert into bench_{table} select * from jsonb_populate_recordset(null::bench_{table}, $1)"
        ))
        .bind(serde_json::Value::Array(chunk.to_vec()))
        .execute(pool)
        .await
        .expect("insert");
    }
    let secs = started.elapsed().as_secs_f64();
    sqlx::query(&format!("drop table bench_{table}"))
        .execute(pool)
        .await
        .expect("drop");
    (rows.len() as u64, rows.len() as f64 / secs)
}

async fn digest(pool: &PgPool, table: &str) -> String {
    sqlx::query_scalar(&format!(
        "select count(*)::text || ':' || md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) from {table} t"
    ))
    .fetch_one(pool)
    .await
    .expect("digest")
}

fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let n = env_num("BENCH_EVENTS", 100_000);
        let id = Uuid::new_v4().simple().to_string();
        let db_a = format!("chronicle_bench_log_{}", &id[..12]);
        let db_b = format!("chronicle_bench_copy_{}", &id[..12]);
        let port = 18_000 + (u16::from_str_radix(&id[..3], 16).unwrap_or(0) % 2_000);
        let vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "test".into()),
            ("DATABASE_URL".into(), format!("{PG_BASE}/{db_a}")),
            ("NATS_URL".into(), "nats://127.0.0.1:4222".into()),
            ("CHRONICLE_STREAM".into(), format!("CHRONICLE_BENCH_LOG_{}", &id[..12])),
            ("BIND".into(), format!("127.0.0.1:{port}")),
            ("SECRET_KEY".into(), "bench-secret-key-that-is-long-enough-0000".into()),
            ("MASTER_KEY".into(), eventstore::crypto::Key::random().to_hex()),
            ("DATA_DIR".into(), std::env::temp_dir().join(&db_a).display().to_string()),
            ("PLANS_FILE".into(), concat!(env!("CARGO_MANIFEST_DIR"), "/plans.json").into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let lookup = |vars: &Vec<(String, String)>, k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config = Config::from_lookup(|k| lookup(&vars, k)).expect("config");
        database::ensure_database(&config.database.url).await.expect("db");
        let pool = database::connect(&config.database.url, 8).await.expect("connect");
        database::migrate(&pool).await.expect("migrate");
        projections::checkpoint::ensure_all(&pool).await.expect("checkpoints");
        let keys = KeyStore::new(pool.clone(), config.keys.master.clone());

        let started = Instant::now();
        fill_log(&pool, n).await;
        let fill_secs = started.elapsed().as_secs_f64();
        let total: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&pool).await.expect("n");
        println!("log: {total} events appended in {fill_secs:.1} s ({:.0} events/s, 1,000 per statement)", total as f64 / fill_secs);

        println!("\n## rebuild through shadow tables vs a plain batched insert of the same rows");
        let mut rebuild_rates = vec![];
        for (model, tables) in [(ReadModel::Users, vec!["users"]), (ReadModel::Usage, vec!["usage_daily", "usage_meters"])] {
            let t0 = Instant::now();
            let report = projections::rebuild::rebuild(&pool, &keys, model, |_, _| {}).await.expect("rebuild");
            let secs = t0.elapsed().as_secs_f64();
            let mut rows = 0u64;
            let mut plain_secs = 0.0;
            for table in &tables {
                let (r, rate) = plain_insert(&pool, table).await;
                rows += r;
                plain_secs += r as f64 / rate;
            }
            // the rebuild goes through the whole log; it applies the events of its own aggregates
            let rate = total as f64 / secs;
            rebuild_rates.push((model, rate));
            println!(
                "{model:<6}: the log's {total} events in {secs:.2} s = {rate:.0} events/s ({} of them applied) -> {rows} rows ({:.0} rows/s); plain batched insert of the same {rows} rows: {plain_secs:.2} s = {:.0} rows/s",
                report.events_applied,
                rows as f64 / secs,
                rows as f64 / plain_secs
            );
        }
        for model in [ReadModel::Sessions, ReadModel::Conversations, ReadModel::Uploads, ReadModel::EventStats] {
            projections::rebuild::rebuild(&pool, &keys, model, |_, _| {}).await.expect("rebuild");
        }
        let t0 = Instant::now();
        let verify = projections::rebuild::verify(&pool, &keys, ReadModel::Usage, |_, _| {}).await.expect("verify");
        println!("verify usage: {} events in {:.2} s, matches: {}", verify.events_replayed, t0.elapsed().as_secs_f64(), verify.matches());

        println!("\n## export over HTTP (NDJSON), the real binary");
        let bin = env!("CARGO_BIN_EXE_chronicle");
        let key_out = tokio::process::Command::new(bin)
            .envs(vars.iter().cloned())
            .args(["admin", "api-key", "create", "--name", "bench", "--json"])
            .output()
            .await
            .expect("cli");
        let key: serde_json::Value = serde_json::from_slice(&key_out.stdout).expect("key json");
        let key = key["key"].as_str().expect("key").to_owned();
        let mut server = tokio::process::Command::new(bin)
            .envs(vars.iter().cloned())
            .args(["serve", "--roles", "api"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        let pid = server.id().expect("pid");
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("{base}/health/live")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let idle_rss = proc_kb(pid, "VmRSS:");
        println!("server idle: VmRSS {} MiB", idle_rss / 1024);
        for limit in [Some(10_000u64), None] {
            let url = match limit {
                Some(l) => format!("{base}/api/v1/admin/events?limit={l}"),
                None => format!("{base}/api/v1/admin/events"),
            };
            let t0 = Instant::now();
            let resp = client.get(url).header("x-admin-key", &key).header("accept", "application/x-ndjson").send().await.expect("export");
            assert_eq!(resp.status(), 200);
            let mut resp = resp;
            let (mut bytes, mut lines) = (0u64, 0u64);
            while let Some(chunk) = resp.chunk().await.expect("chunk") {
                bytes += chunk.len() as u64;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            }
            let secs = t0.elapsed().as_secs_f64();
            if limit.is_none() {
                for (model, rate) in &rebuild_rates {
                    println!("ratio rebuild {model} / export of the same log: {:.2}× (goal ≥ 0.5×)", rate / (lines as f64 / secs));
                }
            }
            println!(
                "export of {lines} events ({:.1} MiB) in {secs:.2} s = {:.0} events/s; server VmRSS now {} MiB, peak (VmHWM) so far {} MiB",
                bytes as f64 / 1_048_576.0,
                lines as f64 / secs,
                proc_kb(pid, "VmRSS:") / 1024,
                proc_kb(pid, "VmHWM:") / 1024
            );
        }
        let _ = server.kill().await;

        println!("\n## replay into a fresh database");
        let file = std::env::temp_dir().join(format!("{db_a}.ndjson"));
        let t0 = Instant::now();
        let out = tokio::process::Command::new(bin)
            .envs(vars.iter().cloned())
            .args(["events", "export", "--with-secrets", "--output"])
            .arg(&file)
            .output()
            .await
            .expect("export");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let exported = std::fs::read_to_string(&file).map(|t| t.lines().count()).unwrap_or(0);
        println!("chronicle events export: {exported} events to a file in {:.2} s", t0.elapsed().as_secs_f64());
        let mut vars_b = vars.clone();
        for v in vars_b.iter_mut() {
            if v.0 == "DATABASE_URL" {
                v.1 = format!("{PG_BASE}/{db_b}");
            }
            if v.0 == "MASTER_KEY" {
                v.1 = eventstore::crypto::Key::random().to_hex();
            }
        }
        let t0 = Instant::now();
        let out = tokio::process::Command::new(bin)
            .envs(vars_b.iter().cloned())
            .args(["events", "import"])
            .arg(&file)
            .output()
            .await
            .expect("import");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let import_secs = t0.elapsed().as_secs_f64();
        println!("chronicle events import: {exported} events in {import_secs:.2} s = {:.0} events/s", exported as f64 / import_secs);
        let config_b = Config::from_lookup(|k| lookup(&vars_b, k)).expect("config b");
        let pool_b = database::connect(&config_b.database.url, 8).await.expect("connect b");
        let keys_b = KeyStore::new(pool_b.clone(), config_b.keys.master.clone());
        let t0 = Instant::now();
        for model in ReadModel::ALL {
            projections::rebuild::rebuild(&pool_b, &keys_b, model, |_, _| {}).await.expect("rebuild b");
        }
        println!("every read model rebuilt in the copy in {:.2} s", t0.elapsed().as_secs_f64());
        // the source's read models again, now that its log also holds the API key's event
        for model in ReadModel::ALL {
            projections::rebuild::rebuild(&pool, &keys, model, |_, _| {}).await.expect("rebuild a");
        }
        let mut same = true;
        for model in ReadModel::ALL {
            for table in model.tables() {
                let (a, b) = (digest(&pool, table).await, digest(&pool_b, table).await);
                same &= a == b;
                println!("{table:<20} source {a}  copy {b}  {}", if a == b { "same" } else { "DIFFERENT" });
            }
        }
        println!("replayed read models equal the source's: {same}");
        let last: Option<LogCursor> = eventstore::log::head(&pool_b).await.expect("head");
        println!("copy's log head {last:?}");

        let _ = std::fs::remove_file(&file);
        pool.close().await;
        pool_b.close().await;
        let admin = PgPool::connect(&format!("{PG_BASE}/postgres")).await.expect("admin");
        for db in [db_a, db_b] {
            let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)")).execute(&admin).await;
        }
    });
}
