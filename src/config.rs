//! Configuration from the environment (and `.env`), typed and validated at start. Every
//! error names the variable. `.env.example` documents each one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

/// The server secret (HMAC of links and codes, token signing). Never printed.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: String,
    pub database_max_connections: u32,
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window: Duration,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub secret_key: SecretKey,
    pub allowed_origins: Vec<String>,
    pub read_your_writes_timeout: Duration,
    pub body_limit: usize,
    pub status_endpoint_enabled: bool,
    pub relay_batch_size: i64,
    pub relay_poll_interval: Duration,
    pub projector_batch_size: usize,
    pub projector_max_attempts: u32,
    pub ready_max_lag_events: i64,
    pub ready_max_lag: Duration,
    pub password_hash_concurrency: usize,
}

/// Read a variable through `get` (the environment, or a map in tests).
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn string(&self, name: &str, default: &str) -> String {
        self.0(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
        }
    }

    fn flag(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        match self.0(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v.is_empty() => Ok(default),
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
            Some(v) => bail!("{name}={v:?} is invalid: use true or false"),
        }
    }
}

impl Config {
    /// From the process environment (after `.env` was loaded).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let v = Vars(get);
        let app_env = match v
            .string("APP_ENV", "development")
            .to_ascii_lowercase()
            .as_str()
        {
            "development" | "dev" => AppEnv::Development,
            "test" => AppEnv::Test,
            "production" | "prod" => AppEnv::Production,
            other => bail!("APP_ENV={other:?} is invalid: use development, test or production"),
        };
        let database_url = v.string(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/chronicle",
        );
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            bail!("DATABASE_URL must be a postgres:// URL");
        }
        let nats_url = v.string("NATS_URL", "nats://127.0.0.1:4222");
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
        let bind: SocketAddr = v.parse("BIND", SocketAddr::from(([127, 0, 0, 1], 8080)))?;
        let data_dir = PathBuf::from(v.string("DATA_DIR", "./data"));
        let secret_key = match v.0("SECRET_KEY").filter(|s| !s.is_empty()) {
            Some(s) if s.len() >= 32 => SecretKey(s.into_bytes()),
            Some(_) => bail!("SECRET_KEY is too short: at least 32 bytes"),
            None if app_env == AppEnv::Production => {
                bail!("SECRET_KEY is required in production (at least 32 bytes)")
            }
            None => SecretKey(dev_secret(&data_dir)?),
        };
        let allowed_origins = v
            .string("ALLOWED_ORIGINS", "")
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        for o in &allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                bail!("ALLOWED_ORIGINS has {o:?}: origins look like https://app.example.com");
            }
        }
        let positive = |name: &str, n: u64| -> anyhow::Result<u64> {
            if n == 0 {
                bail!("{name} must be greater than 0");
            }
            Ok(n)
        };
        Ok(Self {
            app_env,
            database_url,
            database_max_connections: positive(
                "DATABASE_MAX_CONNECTIONS",
                v.parse("DATABASE_MAX_CONNECTIONS", 20)?,
            )? as u32,
            nats_url,
            stream,
            subject_prefix,
            duplicate_window: Duration::from_secs(positive(
                "NATS_DUPLICATE_WINDOW_SECS",
                v.parse("NATS_DUPLICATE_WINDOW_SECS", 600)?,
            )?),
            bind,
            data_dir,
            secret_key,
            allowed_origins,
            read_your_writes_timeout: Duration::from_millis(
                v.parse("READ_YOUR_WRITES_TIMEOUT_MS", 2000)?,
            ),
            body_limit: positive("BODY_LIMIT_BYTES", v.parse("BODY_LIMIT_BYTES", 256 * 1024)?)?
                as usize,
            status_endpoint_enabled: v.flag("USERS_STATUS_ENDPOINT", true)?,
            relay_batch_size: positive("RELAY_BATCH_SIZE", v.parse("RELAY_BATCH_SIZE", 500)?)?
                as i64,
            relay_poll_interval: Duration::from_millis(positive(
                "RELAY_POLL_INTERVAL_MS",
                v.parse("RELAY_POLL_INTERVAL_MS", 500)?,
            )?),
            projector_batch_size: positive(
                "PROJECTOR_BATCH_SIZE",
                v.parse("PROJECTOR_BATCH_SIZE", 200)?,
            )? as usize,
            projector_max_attempts: positive(
                "PROJECTOR_MAX_ATTEMPTS",
                v.parse("PROJECTOR_MAX_ATTEMPTS", 5)?,
            )? as u32,
            ready_max_lag_events: v.parse("READY_MAX_LAG_EVENTS", 10_000)?,
            ready_max_lag: Duration::from_secs(v.parse("READY_MAX_LAG_SECS", 30)?),
            password_hash_concurrency: v.parse(
                "PASSWORD_HASH_CONCURRENCY",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            )?,
        })
    }
}

/// In development the secret is made once and kept in the data directory, so sessions
/// and links survive restarts.
fn dev_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("secret_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(existing.as_bytes().to_vec());
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("DATA_DIR={}: cannot create it", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    let secret = hex::encode(bytes);
    std::fs::write(&path, &secret).with_context(|| {
        format!(
            "DATA_DIR={}: cannot write the secret key",
            data_dir.display()
        )
    })?;
    tracing::info!(path = %path.display(), "Generated a development secret key");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn production_requires_a_long_secret_key() {
        let err = config(&[("APP_ENV", "production")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("SECRET_KEY"), "{err}");
        let err = config(&[("APP_ENV", "production"), ("SECRET_KEY", "short")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("SECRET_KEY"), "{err}");
        assert!(config(&[("APP_ENV", "production"), ("SECRET_KEY", &"k".repeat(32))]).is_ok());
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (name, value) in [
            ("BIND", "nonsense"),
            ("DATABASE_URL", "mysql://x"),
            ("APP_ENV", "staging"),
            ("READ_YOUR_WRITES_TIMEOUT_MS", "soon"),
            ("ALLOWED_ORIGINS", "example.com"),
            ("CHRONICLE_SUBJECT_PREFIX", "a..b"),
            ("USERS_STATUS_ENDPOINT", "maybe"),
            ("RELAY_BATCH_SIZE", "0"),
        ] {
            let err = config(&[("SECRET_KEY", &"k".repeat(32)), (name, value)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn defaults_point_at_the_local_services() {
        let c = config(&[("SECRET_KEY", &"k".repeat(32))]).expect("defaults are valid");
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.stream, "CHRONICLE_EVENTS");
        assert_eq!(c.subject_prefix, "chronicle");
        assert_eq!(c.read_your_writes_timeout, Duration::from_secs(2));
    }
}
