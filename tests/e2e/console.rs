//! The admin console (`/admin`) in a real browser: the app with a seeded admin and a normal
//! user, then `tests/browser/console.mjs` (Playwright driving Debian's headless Chromium)
//! walks the journey: sign in, find the user, their timeline, create a user, the event log
//! (filtered, paged, downloaded as NDJSON), a deactivation seen live, health, usage, and a
//! normal user refused. Screenshots land in `target/screenshots/`.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`) and `tests/browser/node_modules`
//! (`cd tests/browser && npm ci`); without them the test fails saying so, unless
//! `CHRONICLE_SKIP_BROWSER=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::TestEnv;

const ADMIN_EMAIL: &str = "console-admin@example.com";
const ADMIN_PASSWORD: &str = "console-admin-password-7f3k";
const USER_EMAIL: &str = "console-user@example.com";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Chromium and the browser test's node modules, or why not.
fn browser_prerequisites() -> Result<(PathBuf, String), String> {
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let mut missing = vec![];
    if !chromium.exists() {
        missing.push(format!(
            "no Chromium at {} (install Debian's: `apt-get install -y chromium`, or set CHROMIUM_PATH)",
            chromium.display()
        ));
    }
    let modules = workspace().join("tests/browser/node_modules/playwright-core");
    if !modules.exists() {
        missing.push(format!(
            "no {} (install it: `cd tests/browser && npm ci`; never `npx playwright install`)",
            modules.display()
        ));
    }
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    let node_ok = std::process::Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push(format!(
            "`{node} --version` does not run (install Node.js 18 or newer, or set NODE_BIN)"
        ));
    }
    if missing.is_empty() {
        Ok((chromium, node))
    } else {
        Err(missing.join("\n  - "))
    }
}

#[tokio::test]
async fn the_admin_console_in_a_real_browser() {
    if std::env::var("CHRONICLE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped the admin console's browser test (CHRONICLE_SKIP_BROWSER=1)");
        return;
    }
    let (chromium, node) = match browser_prerequisites() {
        Ok(found) => found,
        Err(why) => panic!(
            "the admin console's browser test cannot run:\n  - {why}\n\
             (set CHRONICLE_SKIP_BROWSER=1 to skip it on a machine without a browser)"
        ),
    };

    // The console's pure parts first (the event-stream parser, routes, chart days).
    let units = tokio::process::Command::new(&node)
        .args(["--test", "units.mjs"])
        .current_dir(workspace().join("tests/browser"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    assert!(
        units.status.success(),
        "the console's unit tests failed:\n{}{}",
        String::from_utf8_lossy(&units.stdout),
        String::from_utf8_lossy(&units.stderr)
    );

    let env = TestEnv::new()
        .set("ADMIN_EMAIL", ADMIN_EMAIL)
        .set("ADMIN_PASSWORD", ADMIN_PASSWORD);
    let app = env.spawn_all().await;

    // A normal, verified user who has signed in and used the service.
    signed_up(&app, USER_EMAIL).await;
    let (s, b) = login(&app, USER_EMAIL, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let access = b["data"]["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    for (kind, amount) in [("messages", 3), ("tokens", 1250)] {
        let r = reqwest::Client::new()
            .post(app.url("/api/v1/metrics"))
            .bearer_auth(&access)
            .json(&json!({ "kind": kind, "amount": amount }))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 202, "recording {kind}");
    }
    // A few more accounts, so the list has something to search through.
    for email in [
        "ada@example.com",
        "grace@example.com",
        "console-pending@example.com",
    ] {
        assert_eq!(app.register(email).await.status().as_u16(), 202);
    }
    app.wait_for_projections("every read model has the accounts")
        .await;

    let screenshots = std::env::var("CHRONICLE_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/screenshots"));
    let started = Instant::now();
    let run = tokio::process::Command::new(&node)
        .arg("console.mjs")
        .current_dir(workspace().join("tests/browser"))
        .env("BASE_URL", app.url(""))
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("USER_EMAIL", USER_EMAIL)
        .env("USER_PASSWORD", PASSWORD)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("ERASE_EMAIL", "ada@example.com")
        .env("CHROMIUM_PATH", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test finishes within 5 minutes")
        .expect("node runs");
    println!(
        "--- tests/browser/console.mjs ({:.1} s) ---\n{}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = output.status.success();
    app.finish().await;
    assert!(
        passed,
        "the browser test failed ({}): see its output above and the screenshots in {}",
        output.status,
        screenshots.display()
    );
}
