//! A PostgreSQL cluster of a test's own (made with `initdb` in a temporary directory, on a
//! free port), for tests that restart the database; the shared one is never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uuid::Uuid;

pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn server_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL's server programs (set PG_BIN to the directory of initdb and pg_ctl)")
}

/// Run a PostgreSQL program; as the `postgres` user when we are root (initdb refuses root).
fn run(bin: &Path, program: &str, args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let path = bin.join(program);
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let status = command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    status.success()
}

impl OwnPostgres {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("chronicle-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // the cluster belongs to `postgres` when we run as root
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let me = Self {
            port,
            dir,
            bin: server_bin(),
        };
        let data = me.data();
        assert!(
            run(
                &me.bin,
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8"
                ],
            ),
            "initdb failed"
        );
        me.pg_ctl(&["start"]);
        me
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-o", &options, "-l", &log, "-w"];
        args.extend_from_slice(action);
        assert!(
            run(&self.bin, "pg_ctl", &args),
            "pg_ctl {action:?} failed (see {log})"
        );
    }

    /// `pg_ctl restart -m fast`: every connection ends with "terminating connection due to
    /// administrator command" (57P01); returns once the server accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    /// The base URL (append `/<database>`).
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
