//! What every handler can reach.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventstore::secrets::Secrets;
use metrics_exporter_prometheus::PrometheusHandle;
use projections::feed::ConversationFeed;
use usecases::Core;

use crate::auth::rate_limit::RateLimits;
use crate::auth::tokens::TokenKeys;

/// The API's part of the configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a command waits for the read models it names to reach its events, and a
    /// GET with `X-Min-Position` for its read models.
    pub read_your_writes_timeout: Duration,
    /// The least time an anonymous answer about an email takes (register, resend, forgot,
    /// a failed sign-in), so that known and unknown addresses take the same time.
    pub anonymous_answer_floor: Duration,
    /// The largest request body accepted (bytes).
    pub body_limit: usize,
    /// Origins allowed by CORS (empty: same origin only).
    pub allowed_origins: Vec<String>,
    /// Whether `GET /api/v1/users/status` answers (it tells whether an email has an account).
    pub status_endpoint_enabled: bool,
    /// The relay's checkpoint name, for lag in health and metrics.
    pub relay_name: String,
    /// Readiness fails when the relay or a read model is this many events behind...
    pub ready_max_lag_events: i64,
    /// ...or its oldest unprocessed event is this old.
    pub ready_max_lag: Duration,
    pub app_env: String,
    /// Where the email verification link redirects (None: a short HTML page).
    pub frontend_url: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Mark cookies `Secure` (off only for plain-HTTP development).
    pub cookie_secure: bool,
    /// Avatars are kept under `data_dir/avatars/`.
    pub data_dir: PathBuf,
    pub avatar_max_bytes: usize,
    /// The largest upload accepted (bytes).
    pub upload_max_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            read_your_writes_timeout: Duration::from_secs(2),
            anonymous_answer_floor: Duration::from_millis(250),
            body_limit: 256 * 1024,
            allowed_origins: vec![],
            status_endpoint_enabled: true,
            relay_name: "default".into(),
            ready_max_lag_events: 10_000,
            ready_max_lag: Duration::from_secs(30),
            app_env: "development".into(),
            frontend_url: None,
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            cookie_secure: true,
            data_dir: PathBuf::from("./data"),
            avatar_max_bytes: 2 * 1024 * 1024,
            upload_max_bytes: 10 * 1024 * 1024,
        }
    }
}

/// What every handler shares, behind one `Arc`: axum clones the state for every
/// middleware layer and extractor of every request, and cloning two dozen handles (each an
/// atomic increment, some an allocation) cost ~8% of a cheap GET's CPU (BENCHMARKS.md,
/// "Read path"). Fields are reached through `Deref`: `state.pool`, `state.users`, ...
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

impl From<Services> for AppState {
    fn from(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

/// The API's own handles, beside the use cases' [`Core`] (reached through `Deref`:
/// `state.pool`, `state.users`, ... are the core's).
pub struct Services {
    pub core: Core,
    /// Which conversations just changed (the live stream).
    pub feed: ConversationFeed,
    /// The assistant's model for `POST /api/v1/chat` (None: not configured, 503).
    pub llm: Option<llm::LlmClient>,
    /// A hash of nothing anyone knows: unknown emails are checked against it so that
    /// they take as long as known ones.
    pub dummy_hash: Arc<String>,
    pub secrets: Secrets,
    pub tokens: TokenKeys,
    pub limits: Arc<RateLimits>,
    pub nats: Option<async_nats::Client>,
    pub metrics: PrometheusHandle,
    pub config: Arc<ApiConfig>,
}

impl std::ops::Deref for Services {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
