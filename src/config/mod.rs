//! Configuration from the environment (and `.env`), typed and validated at start. Every
//! error names the variable. `.env.example` documents each one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aggregates::plan::Plans;
use anyhow::{bail, Context};
use eventstore::crypto::{Key, MasterKeys};

use crate::server::{self, HttpLimits};

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
    /// How long a request waits for a free connection before it is answered 503.
    pub database_acquire_timeout: Duration,
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window: Duration,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub secret_key: SecretKey,
    pub allowed_origins: Vec<String>,
    pub read_your_writes_timeout: Duration,
    /// The least time an anonymous answer about an email takes (docs/ACCOUNTS.md).
    pub anonymous_answer_floor: Duration,
    pub body_limit: usize,
    pub status_endpoint_enabled: bool,
    pub relay_batch_size: i64,
    pub relay_poll_interval: Duration,
    pub projector_batch_size: usize,
    pub projector_max_attempts: u32,
    pub ready_max_lag_events: i64,
    pub ready_max_lag: Duration,
    pub password_hash_concurrency: usize,
    /// The base URL people reach the API at (links in mails).
    pub public_url: String,
    /// Where the verification link redirects, and where reset links point; None: the API
    /// shows its own short pages.
    pub frontend_url: Option<String>,
    /// `smtp://user:pass@host:port` (STARTTLS when offered), `smtps://...` (TLS), or with
    /// `?tls=required`. None in development: mails are written as .eml files in DATA_DIR.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub cookie_secure: bool,
    pub login_max_failures: u32,
    pub login_lock: Duration,
    pub login_lock_max: Duration,
    /// Requests per minute on auth endpoints, per client IP and per account (email).
    pub rate_limit_auth_ip: u32,
    pub rate_limit_auth_account: u32,
    /// Requests per minute on the public status lookup, per client IP.
    pub rate_limit_status_ip: u32,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    pub avatar_max_bytes: usize,
    pub upload_max_bytes: usize,
    /// Wraps every user's data key. Rotating: set the new one here and the old one in
    /// `MASTER_KEY_PREVIOUS`, run `chronicle keys rotate`, then drop the old one.
    pub master_keys: MasterKeys,
    /// Plans and their daily limits, from `PLANS` (JSON) or the file `PLANS_FILE`
    /// (default: the repository's `plans.json`, built into the binary).
    pub plans: Plans,
    /// Meters (a user's day of usage) are snapshotted every this many events.
    pub meter_snapshot_every: u64,
    /// The assistant's model (`LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL`,
    /// `LLM_TIMEOUT_SECS`); None when the base URL and key are unset: the assistant is off.
    pub llm: Option<llm::LlmConfig>,
    /// Deliveries of a user message before a transient model failure is final.
    pub assistant_max_attempts: u32,
    /// The HTTP server's timeouts and connection limit (`HTTP_*`).
    pub http: HttpLimits,
    /// Settings that are allowed but weaken the deployment, logged as warnings at start
    /// (docs/ACCOUNTS.md, "Production settings"). Never holds a secret's value.
    pub warnings: Vec<String>,
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
        let production = app_env == AppEnv::Production;
        let mut warnings = vec![];
        let secret_key = match v.0("SECRET_KEY").filter(|s| !s.is_empty()) {
            Some(s) if s.len() >= 32 => {
                if let Some(why) = weak_secret_key(s.as_bytes()) {
                    if production {
                        bail!("SECRET_KEY {why}: use random bytes (`openssl rand -hex 32`)");
                    }
                    warnings.push(format!("SECRET_KEY {why}; production refuses it"));
                }
                SecretKey(s.into_bytes())
            }
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
            if o == "*" {
                bail!("ALLOWED_ORIGINS=* is refused: cookies and credentials are allowed, so list each origin");
            }
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
        let public_url = v
            .string("PUBLIC_URL", &format!("http://{bind}"))
            .trim_end_matches('/')
            .to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("PUBLIC_URL={public_url:?} is invalid: use http(s)://host[:port]");
        }
        // Links in mails carry tokens: over http:// anyone on the path reads them. Behind a
        // TLS-terminating proxy the public URL is still https://; only a deployment that
        // really is reached over plain HTTP needs the opt-in.
        if production && !public_url.starts_with("https://") {
            if !v.flag("ALLOW_INSECURE_PUBLIC_URL", false)? {
                bail!("PUBLIC_URL must be an https:// URL in production (it is where mailed links point; set ALLOW_INSECURE_PUBLIC_URL=true only for a deployment reached over plain HTTP)");
            }
            warnings.push(format!(
                "PUBLIC_URL={public_url} is not https: links in mails travel in the clear (ALLOW_INSECURE_PUBLIC_URL=true)"
            ));
        }
        let frontend_url = v.0("FRONTEND_URL")
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        if let Some(u) = &frontend_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("FRONTEND_URL={u:?} is invalid: use http(s)://host[/path]");
            }
        }
        let smtp_url = v.0("SMTP_URL")
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        if let Some(u) = &smtp_url {
            if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
                bail!("SMTP_URL is invalid: use smtp://[user:pass@]host[:port] or smtps://...");
            }
            // Mails carry sign-in links and codes (and the URL may carry the SMTP
            // password): production sends them over TLS only, unless the relay is one of
            // the deployment's own (a sidecar on loopback) and the opt-in says so.
            if production && !smtp_tls_required(u) {
                if !v.flag("ALLOW_INSECURE_SMTP", false)? {
                    bail!("SMTP_URL must use TLS in production: smtps://... or smtp://...?tls=required (set ALLOW_INSECURE_SMTP=true only for a relay of your own on a trusted network)");
                }
                warnings.push(
                    "SMTP_URL does not require TLS: mails may travel in the clear (ALLOW_INSECURE_SMTP=true)".into(),
                );
            }
        } else if app_env == AppEnv::Production {
            bail!("SMTP_URL is required in production");
        }
        let admin_email = v.0("ADMIN_EMAIL")
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty());
        let admin_password = v.0("ADMIN_PASSWORD").filter(|p| !p.is_empty());
        if admin_email.is_some() != admin_password.is_some() {
            bail!("ADMIN_EMAIL and ADMIN_PASSWORD go together: set both or neither");
        }
        if let (Some(email), Some(password)) = (&admin_email, &admin_password) {
            // the same policy as every other account's password (never the value itself in
            // the message)
            if let Err(why) = crate::seed::password_policy(email, password) {
                if production {
                    bail!("ADMIN_PASSWORD is too weak: it {why}");
                }
                warnings.push(format!(
                    "ADMIN_PASSWORD is too weak: it {why}; production refuses it"
                ));
            }
        }
        let master_current = match v.0("MASTER_KEY").filter(|s| !s.trim().is_empty()) {
            Some(s) => Key::parse(&s).map_err(|e| anyhow::anyhow!("MASTER_KEY is invalid: {e} (32 bytes as 64 hex digits or base64; `chronicle keys generate` makes one)"))?,
            None if app_env == AppEnv::Production => {
                bail!("MASTER_KEY is required in production (`chronicle keys generate` makes one)")
            }
            None => dev_master_key(&data_dir)?,
        };
        let master_previous = v
            .string("MASTER_KEY_PREVIOUS", "")
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                Key::parse(s).map_err(|e| anyhow::anyhow!("MASTER_KEY_PREVIOUS is invalid: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plans = match v.0("PLANS").filter(|s| !s.trim().is_empty()) {
            Some(json) => {
                Plans::parse(&json).map_err(|e| anyhow::anyhow!("PLANS is invalid: {e}"))?
            }
            None => match v.0("PLANS_FILE")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
            {
                // An explicit file that cannot be read is a mistake to report, never a
                // reason to fall back to the built-in plans.
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        anyhow::anyhow!(
                            "PLANS_FILE={path}: cannot read it ({e}); set PLANS_FILE or PLANS"
                        )
                    })?;
                    Plans::parse(&text)
                        .map_err(|e| anyhow::anyhow!("PLANS_FILE={path} is invalid: {e}"))?
                }
                None => Plans::parse(DEFAULT_PLANS)
                    .map_err(|e| anyhow::anyhow!("the built-in plans.json is invalid: {e}"))?,
            },
        };
        let llm_timeout = positive("LLM_TIMEOUT_SECS", v.parse("LLM_TIMEOUT_SECS", 30)?)?;
        let llm = match (
            v.0("LLM_BASE_URL")
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            v.0("LLM_API_KEY")
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty()),
        ) {
            (None, None) => None,
            (Some(base_url), Some(key)) => {
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    bail!("LLM_BASE_URL={base_url:?} is invalid: use an OpenAI-compatible base URL such as https://api.openai.com/v1");
                }
                Some(llm::LlmConfig {
                    base_url,
                    api_key: llm::ApiKey::new(key),
                    model: v.string("LLM_MODEL", "gpt-4o-mini"),
                    timeout: Duration::from_secs(llm_timeout),
                })
            }
            (Some(_), None) => bail!("LLM_API_KEY is missing: LLM_BASE_URL and LLM_API_KEY go together (set both to enable the assistant, or neither)"),
            (None, Some(_)) => bail!("LLM_BASE_URL is missing: LLM_BASE_URL and LLM_API_KEY go together (set both to enable the assistant, or neither)"),
        };
        let database_max_connections = positive(
            "DATABASE_MAX_CONNECTIONS",
            v.parse("DATABASE_MAX_CONNECTIONS", 20)?,
        )? as u32;
        let http = HttpLimits {
            header_read_timeout: Duration::from_millis(positive(
                "HTTP_HEADER_READ_TIMEOUT_MS",
                v.parse("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?,
            )?),
            body_read_timeout: Duration::from_millis(positive(
                "HTTP_BODY_READ_TIMEOUT_MS",
                v.parse("HTTP_BODY_READ_TIMEOUT_MS", 60_000)?,
            )?),
            keep_alive_timeout: Duration::from_millis(positive(
                "HTTP_KEEP_ALIVE_TIMEOUT_MS",
                v.parse("HTTP_KEEP_ALIVE_TIMEOUT_MS", 75_000)?,
            )?),
            max_connections: positive(
                "HTTP_MAX_CONNECTIONS",
                v.parse(
                    "HTTP_MAX_CONNECTIONS",
                    server::default_max_connections(
                        server::open_files_limit(),
                        database_max_connections,
                    ) as u64,
                )?,
            )? as usize,
        };
        // A browser reaching production does so over HTTPS (behind a TLS-terminating proxy
        // too), so its auth cookies are always Secure there; there is no opt-out.
        let cookie_secure = v.flag("COOKIE_SECURE", production)?;
        if production && !cookie_secure {
            bail!("COOKIE_SECURE=false is refused in production: auth cookies must be Secure (browsers reach production over HTTPS, also behind a TLS-terminating proxy)");
        }
        Ok(Self {
            warnings,
            http,
            llm,
            assistant_max_attempts: positive(
                "ASSISTANT_MAX_ATTEMPTS",
                v.parse("ASSISTANT_MAX_ATTEMPTS", 3)?,
            )? as u32,
            plans,
            meter_snapshot_every: positive(
                "METER_SNAPSHOT_EVERY",
                v.parse("METER_SNAPSHOT_EVERY", 100)?,
            )?,
            master_keys: MasterKeys {
                current: master_current,
                previous: master_previous,
            },
            public_url,
            frontend_url,
            smtp_url,
            mail_from: v.string("MAIL_FROM", "Chronicle <no-reply@chronicle.local>"),
            access_token_ttl: Duration::from_secs(positive(
                "ACCESS_TOKEN_TTL_SECS",
                v.parse("ACCESS_TOKEN_TTL_SECS", 900)?,
            )?),
            refresh_token_ttl: Duration::from_secs(
                86_400
                    * positive(
                        "REFRESH_TOKEN_TTL_DAYS",
                        v.parse("REFRESH_TOKEN_TTL_DAYS", 30)?,
                    )?,
            ),
            jwt_issuer: v.string("JWT_ISSUER", "chronicle"),
            jwt_audience: v.string("JWT_AUDIENCE", "chronicle-api"),
            cookie_secure,
            login_max_failures: positive("LOGIN_MAX_FAILURES", v.parse("LOGIN_MAX_FAILURES", 5)?)?
                as u32,
            login_lock: Duration::from_secs(positive(
                "LOGIN_LOCK_SECS",
                v.parse("LOGIN_LOCK_SECS", 60)?,
            )?),
            login_lock_max: Duration::from_secs(positive(
                "LOGIN_LOCK_MAX_SECS",
                v.parse("LOGIN_LOCK_MAX_SECS", 3600)?,
            )?),
            rate_limit_auth_ip: positive(
                "RATE_LIMIT_AUTH_IP_PER_MINUTE",
                v.parse("RATE_LIMIT_AUTH_IP_PER_MINUTE", 60)?,
            )? as u32,
            rate_limit_auth_account: positive(
                "RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE",
                v.parse("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE", 10)?,
            )? as u32,
            rate_limit_status_ip: positive(
                "RATE_LIMIT_STATUS_IP_PER_MINUTE",
                v.parse("RATE_LIMIT_STATUS_IP_PER_MINUTE", 60)?,
            )? as u32,
            admin_email,
            admin_password,
            upload_max_bytes: positive(
                "UPLOAD_MAX_BYTES",
                v.parse("UPLOAD_MAX_BYTES", 10 * 1024 * 1024)?,
            )? as usize,
            avatar_max_bytes: positive(
                "AVATAR_MAX_BYTES",
                v.parse("AVATAR_MAX_BYTES", 2 * 1024 * 1024)?,
            )? as usize,
            app_env,
            database_url,
            database_max_connections,
            database_acquire_timeout: Duration::from_secs(positive(
                "DATABASE_ACQUIRE_TIMEOUT_SECS",
                v.parse("DATABASE_ACQUIRE_TIMEOUT_SECS", 5)?,
            )?),
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
            anonymous_answer_floor: Duration::from_millis(v.parse("ANONYMOUS_ANSWER_MIN_MS", 250)?),
            body_limit: positive("BODY_LIMIT_BYTES", v.parse("BODY_LIMIT_BYTES", 256 * 1024)?)?
                as usize,
            // `exists` tells anyone whether an address has an account: handy in development,
            // off unless asked for in production (docs/ACCOUNTS.md, "Enumeration")
            status_endpoint_enabled: v
                .flag("USERS_STATUS_ENDPOINT", app_env != AppEnv::Production)?,
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

/// Values of SECRET_KEY found in documentation and examples.
/// The plans used when neither `PLANS` nor `PLANS_FILE` is set, built in so that the binary
/// runs from any directory.
const DEFAULT_PLANS: &str = include_str!("../../plans.json");

const PLACEHOLDER_SECRET_KEYS: &[&str] = &[
    "test-secret-key-that-is-long-enough-000",
    "change-me-to-a-long-random-secret-key",
    "changeme-changeme-changeme-changeme",
    "replace-with-at-least-32-random-bytes",
    "your-secret-key-of-at-least-32-bytes",
];

/// Why `key` is not fit to be the server secret, if it is not: a known placeholder, a
/// repeated pattern, too few distinct bytes, or too little entropy by a Shannon estimate of its bytes. A random
/// key of 32 or more hex or base64 characters passes (64 hex characters estimate to about
/// 240 bits); 32 copies of one character estimate to 0. 16 distinct bytes would be too
/// strict: a quarter of `openssl rand -hex 32` keys miss one of the 16 hex digits.
fn weak_secret_key(key: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(key);
    if PLACEHOLDER_SECRET_KEYS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(text.trim()))
    {
        return Some("is a placeholder from the documentation");
    }
    // a short run repeated (`abab…`, `0123456789` four times) estimates well by byte
    // counts but holds no more than its run
    if (1..=key.len() / 2).any(|p| key[p..] == key[..key.len() - p]) {
        return Some("is a short pattern repeated");
    }
    let mut counts = [0usize; 256];
    for b in key {
        counts[usize::from(*b)] += 1;
    }
    let distinct = counts.iter().filter(|c| **c > 0).count();
    if distinct < 10 {
        return Some("has too few distinct bytes (fewer than 10)");
    }
    let n = key.len() as f64;
    let bits_per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    if bits_per_byte * n < 96.0 {
        return Some("has too little entropy (under 96 bits by estimate)");
    }
    None
}

/// Whether an `SMTP_URL` can only be used over TLS (implicit TLS, or STARTTLS required);
/// the forms are those of `workers::mailer::transport`.
fn smtp_tls_required(url: &str) -> bool {
    if url.starts_with("smtps://") {
        return true;
    }
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == "tls=required"))
}

/// In development the master key is made once and kept in the data directory (losing it
/// makes every user's personal data unreadable, as erasure would).
fn dev_master_key(data_dir: &std::path::Path) -> anyhow::Result<Key> {
    let path = data_dir.join("master_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if let Ok(k) = Key::parse(&existing) {
            return Ok(k);
        }
    }
    let key = Key::random();
    let kept = keep_first(data_dir, &path, &key.to_hex(), "the master key")?;
    if let Ok(k) = Key::parse(&kept) {
        // not ours when another process starting at the same time made it first
        if kept == key.to_hex() {
            tracing::info!(path = %path.display(), "Generated a development master key");
        }
        return Ok(k);
    }
    // an unreadable leftover: replace it (nothing can have been sealed with it)
    write_secret_file(data_dir, &path, &key.to_hex(), "the master key")?;
    tracing::info!(path = %path.display(), "Generated a development master key");
    Ok(key)
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
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    let secret = hex::encode(bytes);
    let kept = keep_first(data_dir, &path, &secret, "the secret key")?;
    let kept = kept.trim();
    if kept.len() >= 32 {
        if kept == secret {
            tracing::info!(path = %path.display(), "Generated a development secret key");
        }
        return Ok(kept.as_bytes().to_vec());
    }
    write_secret_file(data_dir, &path, &secret, "the secret key")?;
    tracing::info!(path = %path.display(), "Generated a development secret key");
    Ok(secret.into_bytes())
}

/// Write `contents` to `path` unless the file exists, and answer what the file holds then.
///
/// Processes started together on a fresh data directory must all end up with the same
/// key: a plain write would let each overwrite the others' key (and data sealed with a
/// lost master key is gone). So the key is written whole to a file of our own first, then
/// hard-linked into place: linking never replaces an existing file, so exactly one
/// process wins, and the others read a complete file, never a half-written one.
fn keep_first(
    data_dir: &std::path::Path,
    path: &std::path::Path,
    contents: &str,
    what: &str,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("DATA_DIR={}: cannot create it", data_dir.display()))?;
    let mut nonce = [0u8; 8];
    rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
    let draft = data_dir.join(format!(
        ".{}.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id(),
        hex::encode(nonce)
    ));
    write_secret_file(data_dir, &draft, contents, what)?;
    let linked = std::fs::hard_link(&draft, path);
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => Ok(contents.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .with_context(|| format!("DATA_DIR={}: cannot read {what}", data_dir.display())),
        Err(e) => {
            Err(e).with_context(|| format!("DATA_DIR={}: cannot write {what}", data_dir.display()))
        }
    }
}

fn write_secret_file(
    data_dir: &std::path::Path,
    path: &std::path::Path,
    contents: &str,
    what: &str,
) -> anyhow::Result<()> {
    std::fs::write(path, contents)
        .with_context(|| format!("DATA_DIR={}: cannot write {what}", data_dir.display()))
}

#[cfg(test)]
mod tests;
