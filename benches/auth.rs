//! Sign-in benchmark: logins/s over HTTP against raw argon2id verifications/s on the same
//! machine, and the latency of a cheap endpoint while logins saturate the CPU.
//!
//! `cargo bench --bench auth` (PostgreSQL and NATS as in the README). Knobs: `BENCH_SECS`
//! (default 10), `BENCH_CLIENTS` (16), `BENCH_SOAK_SECS` (only the real binary, that long,
//! its resident memory every minute).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle::{Application, Config, Roles};
use eventstore::passwords::PasswordHasher;

/// The PostgreSQL server the bench uses; `BENCH_PG` points it at another one (a private
/// cluster with `pg_stat_statements`, say).
fn pg_base() -> String {
    std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}
const EMAIL: &str = "bench-admin@example.com";
const PASSWORD: &str = "a-bench-passphrase-that-is-long";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Verifications per second with every core busy (the ceiling for logins).
async fn raw_argon2(secs: u64) -> f64 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let hasher = PasswordHasher::new(cores);
    let hash = hasher.hash(PASSWORD.to_owned()).await.expect("hash");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..cores)
        .map(|_| {
            let (hasher, hash, done) = (hasher.clone(), hash.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let ok = hasher
                        .verify(PASSWORD.to_owned(), hash.clone())
                        .await
                        .unwrap_or(false);
                    assert!(ok);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// GET /health/live every 20 ms for `secs`; latencies in ms.
async fn cheap_latencies(client: reqwest::Client, base: String, secs: u64) -> Vec<f64> {
    let mut out = vec![];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < deadline {
        tick.tick().await;
        let t0 = Instant::now();
        if let Ok(r) = client.get(format!("{base}/health/live")).send().await {
            let _ = r.bytes().await;
            out.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// `VmRSS` and `VmHWM` (peak) of a process, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The real binary (`chronicle serve`, its own process, all roles) under `clients` login
/// loops for `secs`: (resident KiB when ready, peak KiB, logins/s). With `sample_every`,
/// prints the resident memory at that interval (the soak).
async fn real_binary_memory(
    vars: &[(String, String)],
    secs: u64,
    clients: u64,
    sample_every: Option<Duration>,
) -> (u64, u64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chronicle"))
        .arg("serve")
        .envs(vars.iter().filter(|(k, _)| k != "BIND").cloned())
        .env("BIND", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chronicle serve");
    let pid = child.id().expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready_by = Instant::now() + Duration::from_secs(60);
    while Instant::now() < ready_by {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle, _) = memory_kib(pid);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let loaders: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base, done) = (client.clone(), base.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let r = client
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&serde_json::json!({"email": EMAIL, "password": PASSWORD}))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == 200) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    if let Some(every) = sample_every {
        while Instant::now() < deadline {
            tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
            let (rss, peak) = memory_kib(pid);
            println!(
                "| {:>5.0} s | {:>8} | {:.1} | {:.1} |",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed),
                rss as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
    }
    for l in loaders {
        let _ = l.await;
    }
    let logins = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let (_, peak) = memory_kib(pid);
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    (idle, peak, logins)
}

/// Drop the bench's databases and streams.
async fn clean_up(databases: &[String], streams: &[String]) {
    if let Ok(admin) = sqlx::PgPool::connect(&format!("{}/postgres", pg_base())).await {
        for name in databases {
            let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                .execute(&admin)
                .await;
        }
    }
    if let Ok(c) = async_nats::connect("nats://127.0.0.1:4222").await {
        let js = async_nats::jetstream::new(c);
        for stream in streams {
            let _ = js.delete_stream(stream).await;
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secs = env_num("BENCH_SECS", 10);
        let clients = env_num("BENCH_CLIENTS", 16);
        let soak = env_num("BENCH_SOAK_SECS", 0);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db = format!("chronicle_bench_auth_{}", &id[..12]);
        let stream = format!("CHRONICLE_BENCH_AUTH_{}", &id[..12]);
        let vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "test".into()),
            ("DATABASE_URL".into(), format!("{}/{db}", pg_base())),
            ("DATABASE_MAX_CONNECTIONS".into(), "40".into()),
            ("CHRONICLE_STREAM".into(), stream.clone()),
            ("CHRONICLE_SUBJECT_PREFIX".into(), stream.to_lowercase()),
            ("BIND".into(), "127.0.0.1:0".into()),
            (
                "SECRET_KEY".into(),
                "bench-secret-key-that-is-long-enough-0000".into(),
            ),
            ("ADMIN_EMAIL".into(), EMAIL.into()),
            ("ADMIN_PASSWORD".into(), PASSWORD.into()),
            ("RATE_LIMIT_AUTH_IP_PER_MINUTE".into(), "10000000".into()),
            (
                "RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE".into(),
                "10000000".into(),
            ),
            (
                "DATA_DIR".into(),
                std::env::temp_dir().join(&stream).display().to_string(),
            ),
        ];
        if soak > 0 {
            // only the real binary, signing in for `soak` seconds: does its memory grow?
            println!("# soak: `chronicle serve` under {clients} login clients for {soak} s");
            println!();
            println!("| elapsed | logins | resident MiB | peak MiB |");
            println!("| ---: | ---: | ---: | ---: |");
            let (idle, peak, logins) =
                real_binary_memory(&vars, soak, clients, Some(Duration::from_secs(60))).await;
            println!();
            println!(
                "resident when ready {:.1} MiB, peak {:.1} MiB, {logins:.1} logins/s",
                idle as f64 / 1024.0,
                peak as f64 / 1024.0
            );
            clean_up(std::slice::from_ref(&db), std::slice::from_ref(&stream)).await;
            return;
        }
        let config =
            Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .expect("config");
        let app = Application::build(
            config,
            Roles::only(&[
                chronicle::Role::Api,
                chronicle::Role::Relay,
                chronicle::Role::Projector,
            ]),
        )
        .await
        .expect("app");
        let base = format!("http://{}", app.local_addr().expect("api"));
        let stop = app.stop_token();
        let server = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::new();

        let idle = cheap_latencies(client.clone(), base.clone(), 3).await;
        let argon = raw_argon2(secs).await;

        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let loaders: Vec<_> = (0..clients)
            .map(|_| {
                let (client, base, done, failed) =
                    (client.clone(), base.clone(), done.clone(), failed.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let r = client
                            .post(format!("{base}/api/v1/auth/login"))
                            .json(&serde_json::json!({"email": EMAIL, "password": PASSWORD}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => done.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        let busy =
            cheap_latencies(client.clone(), base.clone(), secs.saturating_sub(1).max(1)).await;
        for l in loaders {
            let _ = l.await;
        }
        let logins = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        let _ = server.await;
        // the same, through the real binary in its own process, for its memory
        let mut own = vars.clone();
        for (k, v) in own.iter_mut() {
            match k.as_str() {
                "DATABASE_URL" => *v = format!("{}/{db}_rss", pg_base()),
                "CHRONICLE_STREAM" => *v = format!("{stream}_RSS"),
                "CHRONICLE_SUBJECT_PREFIX" => *v = format!("{}_rss", stream.to_lowercase()),
                _ => {}
            }
        }
        let (rss_idle, rss_peak, own_logins) = real_binary_memory(&own, secs, clients, None).await;
        clean_up(
            &[db.clone(), format!("{db}_rss")],
            &[stream.clone(), format!("{stream}_RSS")],
        )
        .await;

        println!("# auth benchmark: {clients} login clients, {secs} s");
        println!();
        println!("| measure | value |");
        println!("| --- | ---: |");
        println!(
            "| raw argon2id verifications/s (m={} KiB, t={}, p={}; all cores) | {argon:.1} |",
            eventstore::passwords::M_COST,
            eventstore::passwords::T_COST,
            eventstore::passwords::P_COST
        );
        println!(
            "| HTTP logins/s ({clients} clients; failed: {}) | {logins:.1} |",
            failed.load(Ordering::Relaxed)
        );
        println!(
            "| logins as a share of raw argon2 | {:.0}% |",
            100.0 * logins / argon
        );
        println!(
            "| GET /health/live p50 / p99, idle (ms) | {:.2} / {:.2} |",
            percentile(&idle, 0.5),
            percentile(&idle, 0.99)
        );
        println!(
            "| GET /health/live p50 / p99, during logins (ms) | {:.2} / {:.2} |",
            percentile(&busy, 0.5),
            percentile(&busy, 0.99)
        );
        println!(
            "| `chronicle serve` (own process): logins/s ({clients} clients) | {own_logins:.1} |"
        );
        println!(
            "| `chronicle serve`: resident when ready / peak over the logins (MiB) | {:.1} / {:.1} |",
            rss_idle as f64 / 1024.0,
            rss_peak as f64 / 1024.0
        );
    });
}
