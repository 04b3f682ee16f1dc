//! A TypeScript client generated from the served `/openapi.json` drives a journey against
//! the real server, as a frontend team would on its first day: openapi-typescript makes the
//! types (no warning allowed, every operation present), `tsc` type-checks the journey
//! against them, and node's test runner runs it (`tests/client/journey.test.ts`). The mail
//! code comes from a real SMTP sink, handed to the journey by a small mailbox endpoint.
//!
//! Needs Node.js and `tests/client/node_modules` (`cd tests/client && npm ci`); `scripts/test`
//! installs them. Without them the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;

use crate::smtp_sink::SmtpSink;
use crate::support::TestEnv;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client")
}

#[derive(Deserialize)]
struct CodeQuery {
    to: String,
    subject: String,
}

/// `GET /code?to=&subject=`: the 6-digit code of the first mail to `to` about `subject`.
async fn code(State(sink): State<Arc<SmtpSink>>, Query(q): Query<CodeQuery>) -> String {
    sink.wait_for(&q.to, &q.subject, Duration::from_secs(30))
        .await
        .six_digit_code()
        .unwrap_or_default()
}

/// Run `node` with `args` in the client's directory; (success, stdout + stderr).
async fn node(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let mut command =
        tokio::process::Command::new(std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into()));
    command
        .args(args)
        .current_dir(client_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("node finished in time")
        .expect("node runs (install Node.js 18+, or set NODE_BIN)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_client_generated_from_the_document_drives_a_whole_journey() {
    let modules = client_dir().join("node_modules");
    assert!(
        modules.join("openapi-typescript").exists() && modules.join("openapi-fetch").exists(),
        "the generated client's test needs {}: run `cd tests/client && npm ci`",
        modules.display()
    );
    let sink = Arc::new(SmtpSink::start().await);
    let app = TestEnv::new().set("SMTP_URL", sink.url()).spawn_all().await;
    let mailbox = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("mailbox port");
    let mailbox_url = format!("http://{}", mailbox.local_addr().expect("addr"));
    let router = axum::Router::new()
        .route("/code", get(code))
        .with_state(sink.clone());
    let serving = tokio::spawn(async move {
        let _ = axum::serve(mailbox, router).await;
    });

    // 1. Generate, as the README says, from the served document.
    let (s, document) = app.get_json("/openapi.json").await;
    assert_eq!(s, 200);
    let generated = client_dir().join("generated");
    std::fs::create_dir_all(&generated).expect("generated/");
    std::fs::write(
        generated.join("openapi.json"),
        serde_json::to_vec_pretty(&document).expect("json"),
    )
    .expect("document written");
    let (ok, out) = node(
        &[
            "node_modules/openapi-typescript/bin/cli.js",
            "generated/openapi.json",
            "-o",
            "generated/schema.d.ts",
        ],
        &[],
    )
    .await;
    eprintln!("openapi-typescript:\n{out}");
    assert!(ok, "generation failed:\n{out}");
    assert!(
        !out.to_lowercase().contains("warn"),
        "generation printed a warning:\n{out}"
    );
    let types = std::fs::read_to_string(generated.join("schema.d.ts")).expect("schema.d.ts");
    let mut missing = vec![];
    let mut operations = 0;
    for item in document["paths"].as_object().expect("paths").values() {
        for (method, op) in item.as_object().expect("path item") {
            if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                continue;
            }
            operations += 1;
            let id = op["operationId"].as_str().unwrap_or_default();
            if id.is_empty() || !types.contains(&format!("    {id}: {{")) {
                missing.push(format!("{method} {id:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations missing from the client: {missing:?}"
    );
    eprintln!("generated client: {operations} operations, all present");

    // 2. Type-check the journey against the generated types, 3. run it.
    let (ok, out) = node(&["node_modules/typescript/bin/tsc", "-p", "."], &[]).await;
    assert!(
        ok,
        "the journey does not type-check against the generated client:\n{out}"
    );
    let (ok, out) = node(
        &["--test", "dist/journey.test.js"],
        &[("CHRONICLE_URL", app.url("")), ("MAILBOX_URL", mailbox_url)],
    )
    .await;
    eprintln!("{out}");
    assert!(ok, "the journey failed:\n{out}");
    serving.abort();
    app.finish().await;
}
