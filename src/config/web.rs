//! The HTTP server (`BIND`, `PUBLIC_URL`, `HTTP_*`), what the API's handlers read
//! (`ALLOWED_ORIGINS`, `FRONTEND_URL`, cookies, sizes, readiness, read-your-writes) and
//! what the use cases read.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use api::state::ApiConfig;
use usecases::CoreSettings;

use super::stores::DatabaseSettings;
use super::{AppEnv, Env, Vars};
use crate::server::{self, HttpLimits, TrustedProxies};

/// Where and how the HTTP server listens.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    /// The base URL people reach the API at (links in mails), no trailing `/`.
    pub public_url: String,
    /// The server's timeouts and connection limit.
    pub limits: HttpLimits,
    /// The load balancers whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// Where a process serves `/metrics` and `/health/live` on their own (`METRICS_BIND`):
    /// for processes without the API (a relay, a projector), whose counters would else be
    /// seen nowhere.
    pub metrics_bind: Option<SocketAddr>,
}

pub(super) fn http<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &mut Env,
    database: &DatabaseSettings,
) -> anyhow::Result<HttpSettings> {
    let bind: SocketAddr = v.parse("BIND", SocketAddr::from(([127, 0, 0, 1], 8080)))?;
    let public_url = v
        .url("PUBLIC_URL", "http(s)://host[:port]")?
        .unwrap_or_else(|| format!("http://{bind}"));
    // Links in mails carry tokens: over http:// anyone on the path reads them. Behind a
    // TLS-terminating proxy the public URL is still https://; only a deployment that
    // really is reached over plain HTTP needs the opt-in.
    if env.production() && !public_url.starts_with("https://") {
        if !v.flag("ALLOW_INSECURE_PUBLIC_URL", false)? {
            bail!("PUBLIC_URL must be an https:// URL in production (it is where mailed links point; set ALLOW_INSECURE_PUBLIC_URL=true only for a deployment reached over plain HTTP)");
        }
        env.warn(format!(
            "PUBLIC_URL={public_url} is not https: links in mails travel in the clear (ALLOW_INSECURE_PUBLIC_URL=true)"
        ));
    }
    let mut proxies = vec![];
    for entry in v.string("TRUSTED_PROXIES", "").split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let net = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                anyhow::anyhow!(
                    "TRUSTED_PROXIES: {entry:?} is not an IP address or a CIDR range (10.0.0.0/8)"
                )
            })?;
        proxies.push(net);
    }
    let default_connections =
        server::default_max_connections(server::open_files_limit(), database.max_connections);
    Ok(HttpSettings {
        bind,
        public_url,
        limits: HttpLimits {
            header_read_timeout: v.millis("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?,
            body_read_timeout: v.millis("HTTP_BODY_READ_TIMEOUT_MS", 60_000)?,
            keep_alive_timeout: v.millis("HTTP_KEEP_ALIVE_TIMEOUT_MS", 75_000)?,
            max_connections: v.positive("HTTP_MAX_CONNECTIONS", default_connections as u64)?
                as usize,
        },
        trusted_proxies: TrustedProxies(proxies.into()),
        metrics_bind: v
            .raw("METRICS_BIND")
            .map(|_| v.parse("METRICS_BIND", SocketAddr::from(([127, 0, 0, 1], 9090))))
            .transpose()?,
    })
}

pub(super) fn api<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &Env,
) -> anyhow::Result<ApiConfig> {
    let production = env.production();
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
    // A browser reaching production does so over HTTPS (behind a TLS-terminating proxy
    // too), so its auth cookies are always Secure there; there is no opt-out.
    let cookie_secure = v.flag("COOKIE_SECURE", production)?;
    if production && !cookie_secure {
        bail!("COOKIE_SECURE=false is refused in production: auth cookies must be Secure (browsers reach production over HTTPS, also behind a TLS-terminating proxy)");
    }
    Ok(ApiConfig {
        read_your_writes_timeout: read_your_writes_timeout(v)?,
        anonymous_answer_floor: Duration::from_millis(v.parse("ANONYMOUS_ANSWER_MIN_MS", 250)?),
        body_limit: v.positive("BODY_LIMIT_BYTES", 256 * 1024)? as usize,
        allowed_origins,
        // `exists` tells anyone whether an address has an account: handy in development,
        // off unless asked for in production (docs/ACCOUNTS.md, "Enumeration")
        status_endpoint_enabled: v
            .flag("USERS_STATUS_ENDPOINT", env.app_env != AppEnv::Production)?,
        relay_name: workers::relay::RelayConfig::default().name,
        ready_max_lag_events: v.parse("READY_MAX_LAG_EVENTS", 10_000)?,
        ready_max_lag: Duration::from_secs(v.parse("READY_MAX_LAG_SECS", 30)?),
        app_env: env.app_env.name().to_owned(),
        frontend_url: v.url("FRONTEND_URL", "http(s)://host[/path]")?,
        access_token_ttl: v.secs("ACCESS_TOKEN_TTL_SECS", 900)?,
        refresh_token_ttl: Duration::from_secs(86_400 * v.positive("REFRESH_TOKEN_TTL_DAYS", 30)?),
        cookie_secure,
        data_dir: env.data_dir.clone(),
        avatar_max_bytes: v.positive("AVATAR_MAX_BYTES", 2 * 1024 * 1024)? as usize,
        upload_max_bytes: v.positive("UPLOAD_MAX_BYTES", 10 * 1024 * 1024)? as usize,
    })
}

pub(super) fn core<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &Env,
) -> anyhow::Result<CoreSettings> {
    Ok(CoreSettings {
        read_your_writes_timeout: read_your_writes_timeout(v)?,
        data_dir: env.data_dir.clone(),
    })
}

/// How long a change waits for the read models its caller reads next (0: not at all).
fn read_your_writes_timeout<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(
        v.parse("READ_YOUR_WRITES_TIMEOUT_MS", 2000)?,
    ))
}
