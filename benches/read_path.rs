//! Read-path benchmark: `GET /api/v1/users/status` through Chronicle against a bare axum +
//! sqlx handler running the same query on the same database in the same process (the
//! baseline of issue 15: our layers' cost is the difference), loaded by `wrk`.
//!
//! `cargo bench --bench read_path` (PostgreSQL, NATS and `wrk` from Debian's packages).
//! Knobs: `BENCH_SECS` (default 10), `BENCH_CLIENTS` (16 connections).

use std::process::Command;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chronicle::{Application, Config, Role, Roles};

#[path = "fastapi/mod.rs"]
mod fastapi;

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
const EMAIL: &str = "reader@example.com";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(serde::Deserialize)]
struct Q {
    email: String,
}

#[derive(serde::Serialize)]
struct Status {
    exists: bool,
    email_verified: bool,
    status: Option<String>,
}

/// The baseline: the same query, the same JSON, nothing else.
async fn bare_status(State(pool): State<sqlx::PgPool>, Query(q): Query<Q>) -> Json<Status> {
    let row: Option<(bool, String)> =
        sqlx::query_as("select email_verified, status from users where email = $1")
            .bind(q.email.to_lowercase())
            .fetch_optional(&pool)
            .await
            .unwrap_or(None);
    Json(match row {
        Some((email_verified, status)) => Status {
            exists: true,
            email_verified,
            status: Some(status),
        },
        None => Status {
            exists: false,
            email_verified: false,
            status: None,
        },
    })
}

/// [`bare_status`] on a port of its own, on a pool of 20 connections to `db` (pinging
/// before each acquire, sqlx's default, or not): its URL and its server task.
async fn serve_bare(db: &str, ping: bool) -> (String, tokio::task::JoinHandle<()>) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .test_before_acquire(ping)
        .connect(&format!("{PG_BASE}/{db}"))
        .await
        .expect("pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/status?email={EMAIL}",
        listener.local_addr().expect("addr")
    );
    let app = Router::new()
        .route("/status", get(bare_status))
        .with_state(pool);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, server)
}

/// `wrk` against `url`: (requests/s, p99 ms, non-2xx responses).
fn wrk(url: &str, secs: u64, connections: u64) -> (f64, f64, u64) {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str| -> Option<&str> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let rps = number("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let p99 = number("99%")
        .map(|v| {
            let (n, unit) =
                v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
            let n: f64 = n.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "s" => n * 1000.0,
                _ => n,
            }
        })
        .unwrap_or(f64::NAN);
    let non_2xx = number("Non-2xx")
        .and_then(|_| text.lines().find(|l| l.contains("Non-2xx")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (rps, p99, non_2xx)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secs = env_num("BENCH_SECS", 10);
        let clients = env_num("BENCH_CLIENTS", 16);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db = format!("chronicle_bench_read_{}", &id[..12]);
        let stream = format!("CHRONICLE_BENCH_READ_{}", &id[..12]);
        let vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "test".into()),
            ("DATABASE_URL".into(), format!("{PG_BASE}/{db}")),
            ("DATABASE_MAX_CONNECTIONS".into(), "20".into()),
            ("CHRONICLE_STREAM".into(), stream.clone()),
            ("CHRONICLE_SUBJECT_PREFIX".into(), stream.to_lowercase()),
            ("BIND".into(), "127.0.0.1:0".into()),
            (
                "SECRET_KEY".into(),
                "bench-secret-key-that-is-long-enough-0000".into(),
            ),
            ("RATE_LIMIT_STATUS_IP_PER_MINUTE".into(), "100000000".into()),
            (
                "DATA_DIR".into(),
                std::env::temp_dir().join(&stream).display().to_string(),
            ),
        ];
        let config =
            Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .expect("config");
        let app = Application::build(
            config,
            Roles::only(&[Role::Api, Role::Relay, Role::Projector]),
        )
        .await
        .expect("app");
        let base = format!("http://{}", app.local_addr().expect("api"));
        let pool = app.pool().clone();
        let stop = app.stop_token();
        let server = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&serde_json::json!({"email": EMAIL}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), 202);
        let url = format!("{base}/api/v1/users/status?email={EMAIL}");
        let ready_by = Instant::now() + Duration::from_secs(30);
        loop {
            let body = client
                .get(&url)
                .send()
                .await
                .expect("status")
                .text()
                .await
                .unwrap_or_default();
            if body.contains("\"exists\":true") {
                break;
            }
            assert!(
                Instant::now() < ready_by,
                "the read model never had the user"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // the bare handler: same database, its own pool of the same size; and the same
        // without sqlx's ping before every acquire, as Chronicle's pool is
        let (bare_url, bare_server) = serve_bare(&db, true).await;
        let (lean_url, lean_server) = serve_bare(&db, false).await;
        // and the FastAPI + asyncpg app, one worker per core
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let fastapi = fastapi::start(&format!("{PG_BASE}/{db}"), cores).await;
        let fastapi_url = fastapi
            .as_ref()
            .map(|f| format!("{}/users/status?email={EMAIL}", f.base));

        let warm = secs.min(2);
        let _ = tokio::task::spawn_blocking({
            let (u, b) = (url.clone(), bare_url.clone());
            move || {
                wrk(&u, warm, clients);
                wrk(&b, warm, clients);
            }
        })
        .await;
        let (ours, bare_numbers, lean_numbers, fastapi_numbers) = tokio::task::spawn_blocking({
            let (u, b, l, f) = (
                url.clone(),
                bare_url.clone(),
                lean_url.clone(),
                fastapi_url.clone(),
            );
            move || {
                (
                    wrk(&u, secs, clients),
                    wrk(&b, secs, clients),
                    wrk(&l, secs, clients),
                    f.map(|f| {
                        wrk(&f, warm, clients);
                        wrk(&f, secs, clients)
                    }),
                )
            }
        })
        .await
        .expect("wrk");
        drop(fastapi);
        bare_server.abort();
        lean_server.abort();
        stop.cancel();
        let _ = server.await;
        pool.close().await;
        if let Ok(admin) = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres")).await {
            let _ = sqlx::query(&format!("drop database if exists \"{db}\" with (force)"))
                .execute(&admin)
                .await;
        }
        if let Ok(c) = async_nats::connect("nats://127.0.0.1:4222").await {
            let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
        }
        println!("# read path: GET /api/v1/users/status, wrk -t2 -c{clients} -d{secs}s");
        println!();
        println!("| server | requests/s | p99 ms | non-2xx |");
        println!("| --- | ---: | ---: | ---: |");
        println!("| Chronicle | {:.0} | {:.2} | {} |", ours.0, ours.1, ours.2);
        println!(
            "| bare axum + sqlx, same query | {:.0} | {:.2} | {} |",
            bare_numbers.0, bare_numbers.1, bare_numbers.2
        );
        println!(
            "| bare axum + sqlx, same query, no ping before acquire | {:.0} | {:.2} | {} |",
            lean_numbers.0, lean_numbers.1, lean_numbers.2
        );
        if let Some(f) = fastapi_numbers {
            println!(
                "| FastAPI + asyncpg, same query, {cores} uvicorn workers | {:.0} | {:.2} | {} |",
                f.0, f.1, f.2
            );
            println!();
            println!(
                "ratio Chronicle / FastAPI: {:.2}× (goal ≥ 5×)",
                ours.0 / f.0
            );
        }
        println!();
        println!(
            "ratio Chronicle / bare handler: {:.2}× (goal ≥ 0.8×); / bare without the ping: {:.2}×",
            ours.0 / bare_numbers.0,
            ours.0 / lean_numbers.0
        );
    });
}
