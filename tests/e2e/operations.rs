//! Operations: health, metrics, the OpenAPI document, Swagger UI, and the CLI.

use std::process::Command;
use std::time::Duration;

use chronicle::{Role, Roles};
use serde_json::Value;

use crate::support::TestEnv;

#[tokio::test]
async fn health_endpoints_report_every_part_of_the_pipeline() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    assert_eq!(app.register("h@example.com").await.status(), 202);
    app.wait_for_projections("caught up").await;
    for path in ["/healthz", "/health", "/health/live"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (200, Value::from("ok")),
            "{path}"
        );
    }
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["postgres"]["ok"], true);
    assert_eq!(data["nats"]["ok"], true);
    assert_eq!(data["relay"]["lag_events"], 0);
    let names: Vec<&str> = data["projections"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "conversations",
            "event_stats",
            "sessions",
            "uploads",
            "usage",
            "users"
        ]
    );
    let (status, _) = app.get_json("/health/detailed").await;
    assert_eq!(status, 200);
    app.finish().await;
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    assert_eq!(app.register("m@example.com").await.status(), 202);
    let resp = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    for name in [
        "chronicle_http_requests_total",
        "chronicle_commands_total",
        "chronicle_relay_lag_events",
        "chronicle_projection_lag_events",
        "chronicle_projection_position",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // requests are labelled by route template and status
    assert!(
        text.lines()
            .any(|l| l.starts_with("chronicle_http_requests_total")
                && l.contains("route=\"/api/v1/auth/register\"")
                && l.contains("status=\"202\"")),
        "{text}"
    );
    app.finish().await;
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served_without_internet() {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/auth/register",
        "/api/v1/users/status",
        "/health/ready",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let page = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger"), "{html}");
    assert!(!html.contains("cdn"), "Swagger UI must not load from a CDN");
    let js = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        js.status(),
        200,
        "Swagger UI's assets are served by the app"
    );
    app.finish().await;
}

fn chronicle(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chronicle"))
        .args(args)
        .env_clear()
        .envs(env.vars.iter())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run chronicle");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_cli_migrates_reports_and_rebuilds() {
    let env = TestEnv::new();
    let (ok, help) = chronicle(&env, &["--help"]);
    assert!(ok);
    for word in ["serve", "migrate", "projections", "worker"] {
        assert!(help.contains(word), "{word} missing from --help: {help}");
    }
    let (ok, out) = chronicle(&env, &["migrate"]);
    assert!(ok, "{out}");
    let app = env.spawn_all().await;
    for i in 0..3 {
        assert_eq!(
            app.register(&format!("cli{i}@example.com")).await.status(),
            202
        );
    }
    app.wait_for_projections("caught up").await;
    let (ok, out) = chronicle(&env, &["projections", "status"]);
    assert!(ok, "{out}");
    assert!(out.contains("users") && out.contains("running"), "{out}");
    let (ok, out) = chronicle(&env, &["projections", "rebuild", "users"]);
    assert!(ok, "{out}");
    assert!(out.contains("6 events replayed"), "{out}");
    assert_eq!(app.scalar_i64("select count(*) from users").await, 3);
    // master key rotation through the binary
    let (ok, new_key) = chronicle(&env, &["keys", "generate"]);
    assert!(ok && new_key.trim().len() == 64, "{new_key}");
    let old_key = env.vars["MASTER_KEY"].clone();
    let rotated = env
        .clone()
        .set("MASTER_KEY", new_key.trim())
        .set("MASTER_KEY_PREVIOUS", old_key);
    let (ok, out) = chronicle(&rotated, &["keys", "rotate"]);
    assert!(ok && out.contains("re-wrapped 3 user keys"), "{out}");
    let (ok, out) = chronicle(&env, &["projections", "rebuild", "nonsense"]);
    assert!(!ok && out.contains("no read model named"), "{out}");
    app.finish().await;
}

#[tokio::test]
async fn invalid_configuration_stops_the_start_with_the_variable_named() {
    let env = TestEnv::new().set("BIND", "not-an-address");
    let (ok, out) = chronicle(&env, &["serve"]);
    assert!(!ok);
    assert!(out.contains("BIND"), "{out}");
    let env = TestEnv::new().set("APP_ENV", "production");
    let env = TestEnv {
        vars: {
            let mut v = env.vars.clone();
            v.remove("SECRET_KEY");
            v
        },
        ..env
    };
    let (ok, out) = chronicle(&env, &["serve"]);
    assert!(!ok);
    assert!(out.contains("SECRET_KEY"), "{out}");
}

/// The non-main arenas of glibc's malloc in `pid`: each is a heap reserved as one 64 MiB
/// aligned anonymous mapping (read-write where used, inaccessible beyond).
fn malloc_arenas(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let rows: Vec<(u64, u64, String, bool)> = maps
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (range, perms) = (parts.next()?, parts.next()?);
            let (start, end) = range.split_once('-')?;
            let anonymous = parts.nth(3).is_none();
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
                perms.to_owned(),
                anonymous,
            ))
        })
        .collect();
    rows.iter()
        .enumerate()
        .filter(|(i, (start, end, perms, anonymous))| {
            let reserved_to = match rows.get(i + 1) {
                Some((next, next_end, p, true)) if next == end && p.starts_with("---") => *next_end,
                _ => *end,
            };
            *anonymous
                && perms.starts_with("rw")
                && start % HEAP == 0
                && reserved_to - start == HEAP
        })
        .count()
}

/// glibc would give the server's threads (the runtime's workers, the hashing threads, the
/// blocking pool) up to eight arenas per core, each keeping what its threads freed: memory
/// crept up under sign-ins. The binary limits them to one per core (`src/memory.rs`).
#[tokio::test]
async fn the_binary_keeps_malloc_to_one_arena_per_core() {
    let env = TestEnv::new();
    let port = crate::support::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chronicle"))
        .args(["serve", "--roles", "api"])
        .env_clear()
        .envs(env.vars.iter())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chronicle serve");
    let pid = child.id().expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    crate::support::eventually("the server answers", Duration::from_secs(60), || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}/health/live"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    // registrations with passwords, all at once: every worker and hashing thread allocates
    let sent = (0..24).map(|i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/api/v1/auth/register"))
                .json(&serde_json::json!({
                    "email": format!("arena{i}@example.com"),
                    "password": format!("an unguessable passphrase number {i} of many"),
                }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = futures::future::join_all(sent).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(202))),
        "{statuses:?}"
    );
    let arenas = malloc_arenas(pid);
    let limit = chronicle::memory::arena_limit();
    let _ = child.kill().await;
    env.cleanup().await;
    assert!(
        arenas >= 1,
        "the threads' arena is found in /proc/{pid}/maps"
    );
    // the main arena is not a mapping of its own
    assert!(
        arenas < limit,
        "{arenas} arenas besides the main one, limit {limit}"
    );
}
