//! Configuration from the environment (and `.env`), typed and validated at start. Every
//! error names the variable. `.env.example` documents each one; `src/env_help.rs` lists
//! them for `--help`.
//!
//! The settings are grouped by the part that uses them, and each group is the type that
//! part takes (`workers::BusConfig`, `api::state::ApiConfig`, `usecases::CoreSettings`, a
//! worker's config, ...), parsed and validated in one place:
//! - [`stores`]: PostgreSQL and NATS;
//! - [`keys`]: the server secret and the master keys (and their development files);
//! - [`web`]: the HTTP server, the API's settings, the use cases' settings;
//! - [`accounts`]: tokens, sign-in lockout, rate limits, password hashing, the seeded admin;
//! - [`background`]: the relay, the projectors, the mailer, the assistant, plans and meters.

mod accounts;
mod background;
mod keys;
mod stores;
mod web;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

pub use self::accounts::{AdminSeed, AuthSettings, RateLimitSettings};
pub use self::background::{AssistantSettings, UsageSettings};
pub use self::keys::{KeySettings, SecretKey};
pub use self::stores::DatabaseSettings;
pub use self::web::HttpSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    /// As `APP_ENV` spells it (`development`, `test`, `production`).
    pub fn name(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Test => "test",
            AppEnv::Production => "production",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    /// Where development keys, mail files, avatars and uploads are kept (`DATA_DIR`).
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    /// NATS and the stream (`NATS_URL`, `CHRONICLE_STREAM`, ...).
    pub bus: workers::BusConfig,
    pub keys: KeySettings,
    pub http: HttpSettings,
    /// What the API's handlers read (read-your-writes, CORS, cookies, sizes, ...).
    pub api: api::state::ApiConfig,
    /// What the use cases read.
    pub core: usecases::CoreSettings,
    pub auth: AuthSettings,
    pub relay: workers::relay::RelayConfig,
    pub projector: workers::projector::ProjectorConfig,
    pub mailer: workers::mailer::MailerConfig,
    pub assistant: AssistantSettings,
    pub usage: UsageSettings,
    /// The admin account made at start when missing (`ADMIN_EMAIL`, `ADMIN_PASSWORD`).
    pub admin: Option<AdminSeed>,
    /// Settings that are allowed but weaken the deployment, logged as warnings at start
    /// (docs/ACCOUNTS.md, "Production settings"). Never holds a secret's value.
    pub warnings: Vec<String>,
}

/// What every group's parser may need besides its variables: the environment it runs in,
/// and where it records a weak setting.
struct Env {
    app_env: AppEnv,
    data_dir: PathBuf,
    warnings: Vec<String>,
}

impl Env {
    fn production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

/// Read a variable through `get` (the environment, or a map in tests).
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// The value, trimmed; `None` when unset or blank.
    fn get(&self, name: &str) -> Option<String> {
        self.0(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value untrimmed (secrets: whatever bytes were given); `None` when unset or empty.
    fn raw(&self, name: &str) -> Option<String> {
        self.0(name).filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// An http(s) URL without its trailing `/`, if set.
    fn url(&self, name: &str, shape: &str) -> anyhow::Result<Option<String>> {
        let Some(url) = self.get(name).map(|u| u.trim_end_matches('/').to_owned()) else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("{name}={url:?} is invalid: use {shape}");
        }
        Ok(Some(url))
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
        }
    }

    /// A whole number greater than 0.
    fn positive(&self, name: &str, default: u64) -> anyhow::Result<u64> {
        let n = self.parse(name, default)?;
        if n == 0 {
            bail!("{name} must be greater than 0");
        }
        Ok(n)
    }

    /// A duration given in milliseconds, greater than 0.
    fn millis(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        self.positive(name, default).map(Duration::from_millis)
    }

    /// A duration given in seconds, greater than 0.
    fn secs(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        self.positive(name, default).map(Duration::from_secs)
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
        let mut env = Env {
            app_env,
            data_dir: PathBuf::from(v.string("DATA_DIR", "./data")),
            warnings: vec![],
        };
        let database = stores::database(&v)?;
        let bus = stores::bus(&v)?;
        let keys = keys::parse(&v, &mut env)?;
        let http = web::http(&v, &mut env, &database)?;
        let api = web::api(&v, &env)?;
        let core = web::core(&v, &env)?;
        let auth = accounts::auth(&v)?;
        let admin = accounts::admin(&v, &mut env)?;
        let relay = background::relay(&v)?;
        let projector = background::projector(&v)?;
        let mailer = background::mailer(&v, &mut env, &http, &api)?;
        let assistant = background::assistant(&v)?;
        let usage = background::usage(&v)?;
        Ok(Self {
            app_env,
            data_dir: env.data_dir,
            database,
            bus,
            keys,
            http,
            api,
            core,
            auth,
            relay,
            projector,
            mailer,
            assistant,
            usage,
            admin,
            warnings: env.warnings,
        })
    }
}

#[cfg(test)]
mod tests;
