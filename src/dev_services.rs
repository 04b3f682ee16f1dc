//! The development default: when PostgreSQL or NATS is not reachable at its configured
//! (local) address, `chronicle serve` starts a private one from the installed programs,
//! under DATA_DIR, on that very address, and stops it when Chronicle exits.
//!
//! Never in production (or `APP_ENV=test`): there an unreachable address is an error that
//! names it. A private PostgreSQL is a cluster made with `initdb` in `DATA_DIR/postgres`
//! (trust authentication, TCP on the configured loopback address only, no Unix socket); a
//! private NATS is `nats-server -js` with its store in `DATA_DIR/nats`. Both keep their data
//! between runs, so a second `serve` finds its users where the first one left them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::config::{AppEnv, Config};

/// The services this process started; [`DevServices::stop`] ends them.
#[derive(Default)]
pub struct DevServices {
    children: Vec<(&'static str, Child, &'static str)>,
}

impl DevServices {
    /// Start what is missing (development only); a line on standard error for each.
    pub async fn start_missing(config: &Config) -> anyhow::Result<Self> {
        let mut started = Self::default();
        let (pg_host, pg_port) = postgres_addr(&config.database.url)?;
        let nats_servers = config
            .bus
            .servers
            .iter()
            .map(|s| nats_addr(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let development = config.app_env == AppEnv::Development;
        // a Unix socket directory is left to PostgreSQL's own error
        let pg = if pg_host.contains(':') {
            format!("[{pg_host}]:{pg_port}")
        } else {
            format!("{pg_host}:{pg_port}")
        };
        if !pg_host.starts_with('/') && !reachable(&pg).await {
            if !development || !is_loopback(&pg_host) {
                bail!("PostgreSQL is not reachable at {pg} (DATABASE_URL)");
            }
            let child = start_postgres(&config.data_dir, pg_port).await?;
            started.children.push(("PostgreSQL", child, "-INT"));
        }
        // a cluster is reachable while any of its nodes is
        let mut any_reachable = false;
        for server in &nats_servers {
            if reachable(server).await {
                any_reachable = true;
                break;
            }
        }
        if !any_reachable {
            match nats_servers.as_slice() {
                [one] if development && is_loopback(one) => {
                    let child = start_nats(&config.data_dir, one.clone()).await?;
                    started.children.push(("NATS", child, "-TERM"));
                }
                servers => bail!("NATS is not reachable at {} (NATS_URL)", servers.join(", ")),
            }
        }
        Ok(started)
    }

    /// Stop what [`DevServices::start_missing`] started (a clean shutdown, then a kill
    /// after 20 s), and wait for each to exit.
    pub async fn stop(mut self) {
        for (name, child, signal) in self.children.iter_mut().rev() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args([*signal, &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                tracing::warn!("the private {name} did not stop within 20 s: killed");
                let _ = child.kill().await;
            }
            eprintln!("chronicle: stopped the private {name}");
        }
        self.children.clear();
    }
}

/// Host and port of a `postgres://` URL (or key/value connection string).
fn postgres_addr(url: &str) -> anyhow::Result<(String, u16)> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a PostgreSQL connection string")?;
    Ok((options.get_host().to_string(), options.get_port()))
}

/// The address of a NATS server (`nats://[user[:pass]@]host[:port]`; of the first, for a
/// list).
fn nats_addr(url: &str) -> anyhow::Result<String> {
    let first = url.split(',').next().unwrap_or_default().trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        bail!("NATS_URL={url:?} names no server");
    }
    Ok(
        if host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host_port.to_string()
        } else {
            format!("{host_port}:4222")
        },
    )
}

fn is_loopback(host_or_addr: &str) -> bool {
    let host = host_or_addr
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host_or_addr, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

fn socket_addrs(host_port: &str) -> Vec<SocketAddr> {
    host_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// Whether something accepts TCP connections at `host:port`.
async fn reachable(host_port: &str) -> bool {
    let addrs = socket_addrs(host_port);
    for addr in addrs {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            return true;
        }
    }
    false
}

async fn wait_until_reachable(
    name: &str,
    host_port: &str,
    child: &mut Child,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if reachable(host_port).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the private {name} exited ({status}) before it listened on {host_port}: {}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    bail!(
        "the private {name} did not listen on {host_port} within 60 s: {}",
        tail(log)
    )
}

/// The last lines of a log file, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(5);
    format!("{} says: {}", log.display(), lines[from..].join(" | "))
}

/// The directory of PostgreSQL's server programs: PG_BIN (when set, only there), the newest
/// /usr/lib/postgresql/*/bin, or the directory of an `initdb` on PATH.
fn postgres_programs() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        // given, it is the only place looked at
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").is_file());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `(uid, gid)` of the `postgres` account when we are root (PostgreSQL refuses to run as
/// root); None otherwise.
fn postgres_account() -> anyhow::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .context("running as root, PostgreSQL needs a `postgres` account to run as (apt-get install postgresql makes one)")?;
    Ok(Some((entry[2].parse()?, entry[3].parse()?)))
}

fn as_account(command: &mut Command, account: Option<(u32, u32)>) {
    if let Some((uid, gid)) = account {
        command.uid(uid).gid(gid);
    }
}

async fn start_postgres(data_dir: &Path, port: u16) -> anyhow::Result<Child> {
    let bin = postgres_programs().context(
        "PostgreSQL is not reachable and its server programs are not installed: \
         apt-get install postgresql (or start one and set DATABASE_URL)",
    )?;
    let account = postgres_account()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
    let home = std::fs::canonicalize(data_dir)?.join("postgres");
    let cluster = home.join("data");
    let log = home.join("postgres.log");
    std::fs::create_dir_all(&home)?;
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to the postgres account", home.display()))?;
    }
    if !cluster.join("PG_VERSION").exists() {
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&cluster)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_account(&mut initdb, account);
        let out = initdb
            .output()
            .await
            .with_context(|| format!("cannot run {}", bin.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "initdb {} failed: {} (the postgres account must be able to reach that directory)",
                cluster.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let log_file = std::fs::File::create(&log)?;
    if let Some((uid, gid)) = account {
        let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
    }
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(&cluster)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        // its own process group: a Ctrl-C in the terminal stops Chronicle, which then
        // stops this after its last request
        .process_group(0)
        .kill_on_drop(true);
    as_account(&mut postgres, account);
    let mut child = postgres
        .spawn()
        .with_context(|| format!("cannot run {}", bin.join("postgres").display()))?;
    wait_until_reachable("PostgreSQL", &format!("127.0.0.1:{port}"), &mut child, &log).await?;
    eprintln!(
        "chronicle: PostgreSQL was not reachable at 127.0.0.1:{port}: started a private one from {} (data in {}, stopped when Chronicle exits)",
        bin.display(),
        cluster.display()
    );
    Ok(child)
}

async fn start_nats(data_dir: &Path, addr: String) -> anyhow::Result<Child> {
    let bin = match std::env::var_os("NATS_SERVER_BIN") {
        // given, it is the only place looked at
        Some(given) => Some(PathBuf::from(given)).filter(|p| p.is_file()),
        None => on_path("nats-server")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file())),
    }
    .context(
        "NATS is not reachable and nats-server is not installed: \
             apt-get install nats-server (or start one and set NATS_URL)",
    )?;
    let (host, port) = addr
        .rsplit_once(':')
        .context("NATS address without a port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    std::fs::create_dir_all(data_dir.join("nats"))?;
    let home = std::fs::canonicalize(data_dir)?.join("nats");
    let log = home.join("nats-server.log");
    let mut child = Command::new(&bin)
        .args(["-a", host, "-p", port, "-js", "-sd"])
        .arg(&home)
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    wait_until_reachable("NATS", &addr, &mut child, &log).await?;
    eprintln!(
        "chronicle: NATS was not reachable at {addr}: started a private nats-server with JetStream (data in {}, stopped when Chronicle exits)",
        home.display()
    );
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_urls() {
        assert_eq!(
            postgres_addr("postgres://postgres@127.0.0.1:5433/chronicle").expect("parses"),
            ("127.0.0.1".to_string(), 5433)
        );
        assert_eq!(
            nats_addr("nats://127.0.0.1:4222").expect("parses"),
            "127.0.0.1:4222"
        );
        assert_eq!(
            nats_addr("nats://u:p@localhost").expect("parses"),
            "localhost:4222"
        );
        assert_eq!(
            nats_addr("nats://a:4223,nats://b:4224").expect("parses"),
            "a:4223"
        );
        assert!(is_loopback("127.0.0.1:4222"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("db.internal:5432"));
    }
}
