//! The README's test command (`scripts/test`) on a machine where PostgreSQL and NATS are
//! not running at the addresses it is given (free ports, so the shared ones are never
//! touched): its set-up starts private ones there, reports that the test peers are all
//! present the second time, and leaves nothing running when it exits.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{free_port, listening};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

async fn prepare(pg: u16, nats: u16) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        Command::new(Path::new(ROOT).join("scripts/test"))
            .arg("--prepare")
            .env(
                "TEST_PG_BASE",
                format!("postgres://postgres@127.0.0.1:{pg}"),
            )
            .env("TEST_NATS_URL", format!("nats://127.0.0.1:{nats}"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the set-up finishes")
    .expect("scripts/test runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_test_commands_set_up_starts_what_is_missing_and_a_second_run_installs_nothing() {
    let (pg, nats) = (free_port(), free_port());
    let (ok, first) = prepare(pg, nats).await;
    assert!(ok, "{first}");
    let (ok, second) = prepare(pg, nats).await;
    assert!(ok, "{second}");
    for out in [&first, &second] {
        for line in [
            format!("PostgreSQL is not running at 127.0.0.1:{pg}: starting a private one"),
            format!("NATS is not running at 127.0.0.1:{nats}: starting a private one"),
            format!("PostgreSQL at 127.0.0.1:{pg} and NATS at 127.0.0.1:{nats} are ready"),
        ] {
            assert!(out.contains(&line), "{line:?} in:\n{out}");
        }
    }
    assert!(
        second.contains("test peers: all present, installed nothing"),
        "{second}"
    );
    assert!(!second.contains("npm ci") && !second.contains("pip install"));
    assert!(!listening(pg).await, "the private PostgreSQL was stopped");
    assert!(!listening(nats).await, "the private NATS was stopped");
    for dir in [format!("postgres-{pg}"), format!("nats-{nats}")] {
        let _ = std::fs::remove_dir_all(Path::new(ROOT).join("target/test-services").join(dir));
    }
}
