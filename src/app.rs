//! [`Application`]: everything Chronicle runs in one process, or the parts `--roles` names.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use aggregates::api_key::ApiKey;
use aggregates::conversation::Conversation;
use aggregates::email_probe::EmailProbe;
use aggregates::meter::Meter;
use aggregates::session::{Session, SessionPolicy};
use aggregates::upload::Upload;
use aggregates::user::User;
use anyhow::Context;
use api::auth::rate_limit::RateLimits;
use api::auth::tokens::TokenKeys;
use api::AppState;
use eventstore::crypto::KeyStore;
use eventstore::passwords::PasswordHasher;
use eventstore::secrets::{self, Secrets};
use eventstore::{database, CommandBus};
use projections::feed::ConversationFeed;
use projections::{checkpoint, CheckpointWatch, ReadModel};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use usecases::{Clock, Core, SystemClock};
use workers::assistant::{Assistant, AssistantConfig};
use workers::lease::{self, Leases};
use workers::mailer::Mailer;
use workers::{EventBus, Projector, Relay};

use crate::config::Config;

/// How many meters' states the API keeps between commands (about 200 bytes each): a day's
/// busy users decide on a state in memory, checked by sequence at the append.
const METER_CACHE: usize = 20_000;

/// A part of Chronicle that a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// Event store → JetStream (one active per deployment; others stand by).
    Relay,
    /// JetStream → read models.
    Projector,
    /// JetStream → mail.
    Mailer,
    /// JetStream → the model → replies to user messages (when LLM_BASE_URL and LLM_API_KEY
    /// are set).
    Assistant,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Api,
        Role::Relay,
        Role::Projector,
        Role::Mailer,
        Role::Assistant,
    ];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Api => "api",
            Role::Relay => "relay",
            Role::Projector => "projector",
            Role::Mailer => "mailer",
            Role::Assistant => "assistant",
        })
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.to_string() == s.trim())
            .ok_or_else(|| {
                format!("unknown role {s:?} (known: api, relay, projector, mailer, assistant)")
            })
    }
}

/// The roles of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(pub BTreeSet<Role>);

impl Roles {
    pub fn all() -> Self {
        Self(Role::ALL.into_iter().collect())
    }

    pub fn only(roles: &[Role]) -> Self {
        Self(roles.iter().copied().collect())
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }
}

impl FromStr for Roles {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let roles = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Role::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if roles.is_empty() {
            return Err("name at least one role".into());
        }
        Ok(Self(roles))
    }
}

/// Chronicle, built and ready to run.
pub struct Application {
    listener: Option<TcpListener>,
    router: Option<axum::Router>,
    pool: PgPool,
    bus: Option<EventBus>,
    http: crate::server::HttpLimits,
    proxies: crate::server::TrustedProxies,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Application {
    /// Create the database if missing, migrate, connect to NATS, bind the port (when the
    /// API runs) and start the workers this process runs.
    pub async fn build(config: Config, roles: Roles) -> anyhow::Result<Self> {
        Self::build_with_clock(config, roles, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with a clock of the caller's (tests move time forward).
    pub async fn build_with_clock(
        config: Config,
        roles: Roles,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        // the recorder first: what the workers count from their first moment is kept
        let _ = crate::telemetry::metrics_handle();
        for warning in &config.warnings {
            tracing::warn!(setting.warning = %warning, "Weak setting: {warning}");
        }
        database::ensure_database(&config.database.url).await?;
        let pool = database::connect_with_timeout(
            &config.database.url,
            config.database.max_connections,
            config.database.acquire_timeout,
        )
        .await?;
        database::migrate(&pool).await?;
        checkpoint::ensure_all(&pool).await?;

        let bus = EventBus::connect(config.bus.clone())
            .await
            .with_context(|| format!("NATS_URL={}: cannot connect", config.bus.nats_url()))?;

        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let keys = KeyStore::new(pool.clone(), config.keys.master.clone());

        // one-at-a-time jobs (the relay, each read model's projector) go to whichever
        // process holds their lease; the others stand by
        let leases = (roles.has(Role::Relay) || roles.has(Role::Projector))
            .then(|| Leases::spawn(&pool, lease::DEFAULT_POLL, stop.clone()));
        if let Some(leases) = leases.as_ref().filter(|_| roles.has(Role::Relay)) {
            let relay = Relay::new(pool.clone(), bus.clone(), config.relay.clone())
                .with_lease(leases.lease(&Relay::lease_name(&config.relay.name)));
            tasks.spawn(relay.run(stop.clone()));
        }
        if let Some(leases) = leases.as_ref().filter(|_| roles.has(Role::Projector)) {
            if !roles.has(Role::Relay) {
                // the stream must exist before consumers can be made
                let _ = bus.ensure_stream().await;
            }
            for model in ReadModel::ALL {
                let projector = Projector::new(
                    pool.clone(),
                    bus.clone(),
                    model,
                    config.projector.clone(),
                    keys.clone(),
                )
                .with_lease(leases.lease_in(Projector::LEASE_GROUP, &Projector::lease_name(model)));
                tasks.spawn(projector.run(stop.clone()));
            }
        }

        let secrets = Secrets::new(config.keys.secret.expose());
        let users = Arc::new(CommandBus::<User>::new(
            pool.clone(),
            keys.clone(),
            config.auth.user_policy.clone(),
        ));
        if let Some(admin) = &config.admin {
            crate::seed::admin(
                &pool,
                &users,
                &admin.email,
                &admin.password,
                &config.usage.plans.default,
                clock.now(),
                config.app_env == crate::config::AppEnv::Production,
            )
            .await
            .context("ADMIN_EMAIL: cannot seed the admin")?;
        }
        if roles.has(Role::Mailer) {
            if !roles.has(Role::Relay) {
                let _ = bus.ensure_stream().await;
            }
            let mailer = Mailer::new(
                pool.clone(),
                bus.clone(),
                secrets.clone(),
                keys.clone(),
                config.mailer.clone(),
            )
            .context("the mailer cannot start")?;
            tasks.spawn(mailer.run(stop.clone()));
        }
        if roles.has(Role::Assistant) {
            if let Some(assistant) =
                assistant(&config, &roles, &pool, &bus, &keys, clock.clone()).await?
            {
                tasks.spawn(assistant.run(stop.clone()));
            }
        }

        let (listener, router) = if roles.has(Role::Api) {
            let listener = TcpListener::bind(config.http.bind)
                .await
                .with_context(|| format!("BIND={}: cannot listen", config.http.bind))?;
            let state = api_state(
                &config,
                &pool,
                &keys,
                users.clone(),
                clock.clone(),
                &stop,
                Some(bus.client.clone()),
            )
            .await?;
            (Some(listener), Some(api::router(state)))
        } else {
            (None, None)
        };
        if let Some(addr) = config.http.metrics_bind {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("METRICS_BIND={addr}: cannot listen"))?;
            tasks.spawn(crate::telemetry::serve_metrics(listener, stop.clone()));
        }
        tracing::info!(roles = ?roles.0, "Chronicle built");
        Ok(Self {
            listener,
            router,
            pool,
            bus: Some(bus),
            http: config.http.limits,
            proxies: config.http.trusted_proxies.clone(),
            stop,
            tasks,
        })
    }

    /// The port the API listens on (when this process runs the API).
    pub fn port(&self) -> Option<u16> {
        self.local_addr().map(|a| a.port())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn bus(&self) -> Option<&EventBus> {
        self.bus.as_ref()
    }

    /// Cancelling this token stops the whole application gracefully.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serve until the stop token is cancelled, then let in-flight requests finish and the
    /// workers stop.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        if let (Some(listener), Some(router)) = (self.listener.take(), self.router.take()) {
            tracing::info!(
                addr = ?listener.local_addr().ok(),
                max_connections = self.http.max_connections,
                "Chronicle API listening"
            );
            if let Ok(addr) = listener.local_addr() {
                let base = format!("http://{addr}");
                eprintln!(
                    "chronicle: ready. API {base}/api/v1  docs {base}/docs  console {base}/admin  (Ctrl-C stops)"
                );
            }
            crate::server::serve(
                listener,
                router,
                self.http,
                self.proxies.clone(),
                stop.clone(),
            )
            .await;
        } else {
            stop.cancelled().await;
        }
        while self.tasks.join_next().await.is_some() {}
        self.pool.close().await;
        tracing::info!("Chronicle stopped");
        Ok(())
    }
}

/// What the use cases need: the command buses as the configuration tunes them, the read
/// side, keys, passwords, plans and the clock. The API's state holds one; the admin CLI
/// builds one alone (nothing of HTTP).
pub fn core(
    config: &Config,
    pool: &PgPool,
    keys: &KeyStore,
    users: Arc<CommandBus<User>>,
    passwords: PasswordHasher,
    clock: Arc<dyn Clock>,
    stop: &CancellationToken,
) -> Core {
    Core {
        pool: pool.clone(),
        users,
        sessions: Arc::new(CommandBus::<Session>::new(
            pool.clone(),
            keys.clone(),
            SessionPolicy::default(),
        )),
        keys: keys.clone(),
        meters: Arc::new(
            CommandBus::<Meter>::new(pool.clone(), keys.clone(), ())
                .with_snapshots(config.usage.meter_snapshot_every)
                .with_cache(METER_CACHE)
                .with_command_ids(aggregates::meter::command_event_id)
                .with_max_attempts(20),
        ),
        plans: Arc::new(config.usage.plans.clone()),
        conversations: Arc::new(
            CommandBus::<Conversation>::new(pool.clone(), keys.clone(), ()).with_snapshots(100),
        ),
        uploads: Arc::new(CommandBus::<Upload>::new(pool.clone(), keys.clone(), ())),
        api_keys: Arc::new(CommandBus::<ApiKey>::new(pool.clone(), keys.clone(), ())),
        probes: Arc::new(CommandBus::<EmailProbe>::new(
            pool.clone(),
            keys.clone(),
            config.auth.user_policy.clone(),
        )),
        passwords,
        clock,
        checkpoints: CheckpointWatch::spawn(pool.clone(), stop.clone()),
        settings: config.core.clone(),
    }
}

/// What the API's handlers reach: also built by the admin CLI, which runs the same
/// operations on the database without serving HTTP (`nats` None).
pub async fn api_state(
    config: &Config,
    pool: &PgPool,
    keys: &KeyStore,
    users: Arc<CommandBus<User>>,
    clock: Arc<dyn Clock>,
    stop: &CancellationToken,
    nats: Option<async_nats::Client>,
) -> anyhow::Result<AppState> {
    let passwords = PasswordHasher::new(config.auth.password_hash_concurrency);
    let dummy_hash = passwords
        .hash(secrets::random_token())
        .await
        .context("cannot hash the dummy password")?;
    let rate = config.auth.rate_limits;
    let secrets = Secrets::new(config.keys.secret.expose());
    let limits = RateLimits::new(
        pool.clone(),
        secrets.clone(),
        rate.auth_ip,
        rate.auth_account,
        rate.status_ip,
    );
    limits.spawn_cleanup(stop.clone());
    let core = core(config, pool, keys, users, passwords, clock, stop);
    let state: AppState = api::state::Services {
        core,
        feed: ConversationFeed::spawn(pool.clone(), stop.clone()),
        llm: config
            .assistant
            .llm
            .clone()
            .map(llm::LlmClient::new)
            .transpose()
            .context("LLM_BASE_URL: cannot make the model's HTTP client")?,
        dummy_hash: Arc::new(dummy_hash),
        secrets,
        tokens: TokenKeys::new(
            config.keys.secret.expose(),
            &config.auth.jwt_issuer,
            &config.auth.jwt_audience,
        ),
        limits,
        nats,
        metrics: crate::telemetry::metrics_handle(),
        config: Arc::new(config.api.clone()),
    }
    .into();
    Ok(state)
}

/// The assistant, when the model is configured; without it, say so (a warning when
/// the assistant role was asked for by name).
async fn assistant(
    config: &Config,
    roles: &Roles,
    pool: &PgPool,
    bus: &EventBus,
    keys: &KeyStore,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Assistant>> {
    let Some(llm) = config.assistant.llm.clone() else {
        if *roles == Roles::all() {
            tracing::info!("The assistant is off: set LLM_BASE_URL and LLM_API_KEY to turn it on");
        } else {
            tracing::warn!("The assistant role is not started: set LLM_BASE_URL and LLM_API_KEY");
        }
        return Ok(None);
    };
    if !roles.has(Role::Relay) {
        let _ = bus.ensure_stream().await;
    }
    let assistant = Assistant::new(
        pool.clone(),
        bus.clone(),
        keys.clone(),
        AssistantConfig {
            llm,
            max_attempts: config.assistant.max_attempts,
            plans: config.usage.plans.clone(),
            meter_snapshot_every: config.usage.meter_snapshot_every,
            clock,
        },
    )
    .context("LLM_BASE_URL: the assistant cannot start")?;
    Ok(Some(assistant))
}

/// Cancel `stop` on SIGTERM or Ctrl-C.
pub fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        stop.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Stopping (signal received)");
        stop.cancel();
    });
}
