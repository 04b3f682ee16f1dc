//! The development default: `chronicle serve` with PostgreSQL and NATS unreachable at their
//! configured addresses starts private ones under DATA_DIR, serves, and leaves nothing
//! running after SIGTERM. Production (and `APP_ENV=test`) never does: it names the address.
//! The shared PostgreSQL and NATS are not touched: the addresses are free ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::support::{eventually, free_port, listening};

const BIN: &str = env!("CARGO_BIN_EXE_chronicle");

struct Ports {
    pg: u16,
    nats: u16,
    http: u16,
}

fn serve(dir: &Path, ports: &Ports, app_env: &str, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", app_env)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/chronicle", ports.pg),
        )
        .env("NATS_URL", format!("nats://127.0.0.1:{}", ports.nats))
        .env("BIND", format!("127.0.0.1:{}", ports.http))
        .env("DATA_DIR", dir.join("data"))
        .current_dir(dir)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in ["NATS_SERVER_BIN", "PG_BIN"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("chronicle runs")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chronicle-dev-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The process's standard error once it has exited (within `deadline`), and its exit code.
async fn finish(mut child: Child, deadline: Duration) -> (Option<i32>, String) {
    let mut stderr = child.stderr.take().expect("piped");
    let mut text = String::new();
    let status = tokio::time::timeout(deadline, async {
        let _ = stderr.read_to_string(&mut text).await;
        child.wait().await
    })
    .await
    .expect("exited within its deadline")
    .expect("waited");
    (status.code(), text)
}

#[tokio::test]
async fn serve_in_development_starts_its_own_postgres_and_nats_and_stops_them() {
    let dir = temp_dir();
    let ports = Ports {
        pg: free_port(),
        nats: free_port(),
        http: free_port(),
    };
    assert!(!listening(ports.pg).await && !listening(ports.nats).await);
    let child = serve(&dir, &ports, "development", &[]);
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{}/health/ready", ports.http);
    eventually("/health/ready 200", Duration::from_secs(120), || {
        let client = client.clone();
        let ready = ready.clone();
        async move {
            let r = client.get(&ready).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;

    // the database it serves from is the private cluster under DATA_DIR
    let pool = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/chronicle",
        ports.pg
    ))
    .await
    .expect("the private PostgreSQL answers");
    let data_directory: String = sqlx::query_scalar("show data_directory")
        .fetch_one(&pool)
        .await
        .expect("data_directory");
    let expected = std::fs::canonicalize(dir.join("data/postgres/data")).expect("cluster");
    assert_eq!(Path::new(&data_directory), expected);
    let migrated: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .expect("migrations");
    assert_eq!(
        migrated,
        eventstore::database::MIGRATOR.iter().count() as i64
    );
    pool.close().await;
    // a command goes through the whole pipeline (log → stream → read model)
    let r = client
        .post(format!(
            "http://127.0.0.1:{}/api/v1/auth/register",
            ports.http
        ))
        .json(&serde_json::json!({"email": "dev@example.com", "password": "correct-horse-battery"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 202);
    assert!(
        dir.join("data/nats/jetstream").is_dir(),
        "JetStream store under DATA_DIR"
    );

    let pid = child.id().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let (code, stderr) = finish(child, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "clean exit after SIGTERM; stderr:\n{stderr}");
    // the ready line the README shows, on this port
    let ready_line = crate::docs::block("README.md", "text ready")
        .trim()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports.http));
    for line in [
        ready_line,
        format!("PostgreSQL was not reachable at 127.0.0.1:{}", ports.pg),
        format!("NATS was not reachable at 127.0.0.1:{}", ports.nats),
        "chronicle: ready. API http://127.0.0.1:".to_string(),
        "stopped the private PostgreSQL".to_string(),
        "stopped the private NATS".to_string(),
    ] {
        assert!(stderr.contains(&line), "stderr has {line:?}:\n{stderr}");
    }
    // nothing left running: no listener, and PostgreSQL shut down cleanly (no pid file)
    assert!(!listening(ports.pg).await, "PostgreSQL still listening");
    assert!(!listening(ports.nats).await, "NATS still listening");
    assert!(!listening(ports.http).await, "the API still listening");
    assert!(!dir.join("data/postgres/data/postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn outside_development_an_unreachable_address_is_an_error_that_names_it() {
    let dir = temp_dir();
    let ports = Ports {
        pg: free_port(),
        nats: free_port(),
        http: free_port(),
    };
    let production = [
        (
            "SECRET_KEY",
            "9f8c2e71d04b5a6f3c1e8d7b2a9f0e4c6b3d5a7f1e2c8b9d0a4f6e3c7b1d2a5f",
        ),
        (
            "MASTER_KEY",
            "3b7e1f9a2c4d6e8f0a1b3c5d7e9f2a4b6c8d0e1f3a5b7c9d2e4f6a8b0c1d3e5f",
        ),
        ("PUBLIC_URL", "https://chronicle.example.com"),
        ("SMTP_URL", "smtps://mail.example.com"),
    ];
    for (app_env, extra) in [("production", &production[..]), ("test", &[][..])] {
        let (code, stderr) =
            finish(serve(&dir, &ports, app_env, extra), Duration::from_secs(60)).await;
        assert_eq!(code, Some(1), "{app_env}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "PostgreSQL is not reachable at 127.0.0.1:{} (DATABASE_URL)",
                ports.pg
            )),
            "{app_env}: {stderr}"
        );
        assert!(!listening(ports.pg).await, "{app_env}: nothing started");
    }
    assert!(!dir.join("data/postgres").exists());

    // development without the programs names the packages to install
    let (code, stderr) = finish(
        serve(
            &dir,
            &ports,
            "development",
            &[("PG_BIN", "/nonexistent/bin")],
        ),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
