//! The FastAPI + asyncpg baseline (`benches/fastapi/app.py`): installed into
//! `target/bench-venv` from `benches/fastapi/requirements.txt` on first use, started with
//! uvicorn (one worker per core, uvloop and httptools), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FastApi {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for FastApi {
    fn drop(&mut self) {
        // uvicorn's supervisor stops its workers on SIGTERM
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The venv's python, made and filled when missing; None (with the reason printed) when
/// python3 or PyPI is not to be had.
fn python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    let requirements = root().join("benches/fastapi/requirements.txt");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).ok()?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Some(python);
    }
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !python.exists() && !ok(Command::new("python3").arg("-m").arg("venv").arg(&venv)) {
        eprintln!("fastapi baseline: python3 -m venv failed; skipped");
        return None;
    }
    if !ok(Command::new(&python)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&requirements))
    {
        eprintln!("fastapi baseline: pip install failed; skipped");
        return None;
    }
    std::fs::write(&stamp, wanted).ok()?;
    Some(python)
}

/// Start the app against `database_url` (a database Chronicle migrated), with `workers`
/// processes; None when it cannot be started.
pub async fn start(database_url: &str, workers: usize) -> Option<FastApi> {
    let python = python()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(python)
        .current_dir(root().join("benches/fastapi"))
        .env("DATABASE_URL", database_url)
        .args([
            "-m",
            "uvicorn",
            "app:app",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ])
        .args(["--no-access-log", "--loop", "uvloop", "--http", "httptools"])
        .args([
            "--port",
            &port.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let app = FastApi {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    // ready when every worker answers: ask a few times in a row
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    while answered < 10 * workers {
        if Instant::now() > deadline {
            eprintln!("fastapi baseline: not ready after 60 s; skipped");
            return None;
        }
        match client
            .get(format!("{}/users/status?email=ready@example.com", app.base))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => answered += 1,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Some(app)
}
