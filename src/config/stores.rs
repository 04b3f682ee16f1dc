//! PostgreSQL (`DATABASE_*`) and NATS (`NATS_*`, `CHRONICLE_STREAM`,
//! `CHRONICLE_SUBJECT_PREFIX`).

use std::time::Duration;

use anyhow::bail;
use workers::BusConfig;

use super::Vars;

/// How Chronicle reaches PostgreSQL (`src/database.rs` takes it).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://...`; the database is created when missing.
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a free connection before it is answered 503.
    pub acquire_timeout: Duration,
}

pub(super) fn database<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> anyhow::Result<DatabaseSettings> {
    let url = v.string(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/chronicle",
    );
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("DATABASE_URL must be a postgres:// URL");
    }
    Ok(DatabaseSettings {
        url,
        max_connections: v.positive("DATABASE_MAX_CONNECTIONS", 20)? as u32,
        acquire_timeout: v.secs("DATABASE_ACQUIRE_TIMEOUT_SECS", 5)?,
    })
}

pub(super) fn bus<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> anyhow::Result<BusConfig> {
    let stream = v.string("CHRONICLE_STREAM", "CHRONICLE_EVENTS");
    if !stream
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("CHRONICLE_STREAM={stream:?} is invalid: letters, digits, '_' and '-' only");
    }
    let subject_prefix = v.string("CHRONICLE_SUBJECT_PREFIX", "chronicle");
    if subject_prefix.is_empty()
        || subject_prefix
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
    {
        bail!("CHRONICLE_SUBJECT_PREFIX={subject_prefix:?} is invalid: dot-separated NATS subject tokens");
    }
    let servers = nats_servers(&v.string("NATS_URL", "nats://127.0.0.1:4222"))?;
    let stream_replicas = v.positive("NATS_STREAM_REPLICAS", 1)?;
    if stream_replicas > 5 {
        bail!("NATS_STREAM_REPLICAS={stream_replicas} is invalid: JetStream keeps 1 to 5 copies (1, or 3 on a 3-node cluster)");
    }
    Ok(BusConfig {
        servers,
        stream_replicas: stream_replicas as usize,
        stream,
        subject_prefix,
        duplicate_window: v.secs("NATS_DUPLICATE_WINDOW_SECS", 600)?,
    })
}

/// `NATS_URL`: one server or a comma-separated list (the nodes of a cluster), each a
/// `nats://[user[:password]@]host[:port]` address.
fn nats_servers(list: &str) -> anyhow::Result<Vec<String>> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        bail!("NATS_URL names no server");
    }
    for server in &servers {
        if let Err(e) = server.parse::<async_nats::ServerAddr>() {
            // the address may hold a password: name its position, not its text
            let at = servers.iter().position(|s| s == server).unwrap_or(0) + 1;
            bail!(
                "NATS_URL: server {at} of {} is not a NATS address ({e})",
                servers.len()
            );
        }
    }
    Ok(servers)
}
