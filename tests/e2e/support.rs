//! Spawning the app for a test, and waiting for conditions with a deadline (never a
//! fixed sleep).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use aggregates::StreamEnvelope;
use chronicle::{Application, Config, Roles};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use usecases::OffsetClock;
use uuid::Uuid;
use workers::{BusConfig, EventBus};

pub fn pg_base() -> String {
    std::env::var("TEST_PG_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// One test's isolated place: a database name, a stream, a subject prefix.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub vars: HashMap<String, String>,
    pub database: String,
    pub stream: String,
    #[expect(dead_code, reason = "kept for debugging a test's NATS subjects")]
    pub prefix: String,
    pub data_dir: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        init_logs();
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("chronicle_test_{}", &id[..16]);
        let stream = format!("CHRONICLE_TEST_{}", &id[..16]);
        let prefix = format!("t{}", &id[..16]);
        let data_dir = std::env::temp_dir().join(format!("chronicle-test-{}", &id[..16]));
        let mut vars = HashMap::new();
        vars.insert("APP_ENV".into(), "test".into());
        vars.insert("DATABASE_URL".into(), format!("{}/{}", pg_base(), database));
        vars.insert("DATABASE_MAX_CONNECTIONS".into(), "16".into());
        vars.insert("NATS_URL".into(), nats_url());
        vars.insert("CHRONICLE_STREAM".into(), stream.clone());
        vars.insert("CHRONICLE_SUBJECT_PREFIX".into(), prefix.clone());
        vars.insert("BIND".into(), "127.0.0.1:0".into());
        vars.insert("DATA_DIR".into(), data_dir.display().to_string());
        vars.insert(
            "SECRET_KEY".into(),
            "test-secret-key-that-is-long-enough-000".into(),
        );
        vars.insert(
            "MASTER_KEY".into(),
            eventstore::crypto::Key::random().to_hex(),
        );
        vars.insert("RELAY_POLL_INTERVAL_MS".into(), "100".into());
        // a CI machine running every test at once on two cores can lag: give
        // read-your-writes more room than production's 2 s
        vars.insert("READ_YOUR_WRITES_TIMEOUT_MS".into(), "30000".into());
        vars.insert("DATABASE_ACQUIRE_TIMEOUT_SECS".into(), "30".into());
        vars.insert(
            "PLANS_FILE".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/plans.json").into(),
        );
        vars.insert("PASSWORD_HASH_CONCURRENCY".into(), "2".into());
        // the floor under anonymous answers about an email costs every test time; the
        // enumeration tests set their own
        vars.insert("ANONYMOUS_ANSWER_MIN_MS".into(), "0".into());
        // generous limits: tests that check rate limiting set their own
        for limit in [
            "RATE_LIMIT_AUTH_IP_PER_MINUTE",
            "RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE",
            "RATE_LIMIT_STATUS_IP_PER_MINUTE",
        ] {
            vars.insert(limit.into(), "100000".into());
        }
        Self {
            vars,
            database,
            stream,
            prefix,
            data_dir,
        }
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    pub fn config(&self) -> Config {
        let vars = self.vars.clone();
        Config::from_lookup(|k| vars.get(k).cloned()).expect("test config is valid")
    }

    pub fn bus_config(&self) -> BusConfig {
        self.config().bus
    }

    pub async fn spawn(&self, roles: Roles) -> TestApp {
        let clock = Arc::new(OffsetClock::default());
        let app = Application::build_with_clock(self.config(), roles, clock.clone())
            .await
            .expect("the app builds");
        let addr = app.local_addr();
        let pool = app.pool().clone();
        let stop = app.stop_token();
        let bus = app.bus().cloned().expect("a bus");
        let handle = tokio::spawn(app.run_until_stopped());
        TestApp {
            env: self.clone(),
            clock,
            addr,
            client: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .expect("client"),
            pool,
            bus,
            stop,
            handle: Some(handle),
        }
    }

    pub async fn spawn_all(&self) -> TestApp {
        self.spawn(Roles::all()).await
    }

    /// Drop this test's database and stream (best effort; CI also sweeps leftovers).
    pub async fn cleanup(&self) {
        if let Ok(bus) = EventBus::connect(self.bus_config()).await {
            let _ = bus.jetstream.delete_stream(&self.stream).await;
        }
        if let Ok(pool) = PgPool::connect(&format!("{}/postgres", pg_base())).await {
            let _ = sqlx::query(&format!(
                "drop database if exists \"{}\" with (force)",
                self.database
            ))
            .execute(&pool)
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub struct TestApp {
    pub env: TestEnv,
    /// The app's clock: `app.clock.advance(..)` moves its time forward.
    pub clock: Arc<OffsetClock>,
    pub addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub bus: EventBus,
    pub stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.addr.expect("this app runs the API"),
            path
        )
    }

    pub async fn register(&self, email: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/register"))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await
            .expect("request sent")
    }

    /// The personal-data keys, as the app has them.
    pub fn keys(&self) -> eventstore::crypto::KeyStore {
        eventstore::crypto::KeyStore::new(self.pool.clone(), self.env.config().keys.master)
    }

    /// A value read from the log as Chronicle's readers see it: opened when it is sealed
    /// (personal values and secrets' derivatives are).
    pub async fn opened(&self, value: String) -> String {
        if eventstore::crypto::is_sealed(&value) {
            self.keys()
                .open(&value)
                .await
                .expect("a sealed value opens")
        } else {
            value
        }
    }

    /// GET a path and read the envelope.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        json(
            self.client
                .get(self.url(path))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    /// Stop gracefully and wait until everything has stopped.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
    }

    /// Stop, then drop the database and stream.
    pub async fn finish(self) {
        let env = self.env.clone();
        self.stop().await;
        env.cleanup().await;
    }

    /// Every message of the test's stream, in stream order.
    pub async fn stream_envelopes(&self) -> Vec<(u64, StreamEnvelope)> {
        let mut stream = self
            .bus
            .jetstream
            .get_stream(&self.env.stream)
            .await
            .expect("stream exists");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut out = vec![];
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let msg = stream.get_raw_message(seq).await.expect("message");
            let env: StreamEnvelope = serde_json::from_slice(&msg.payload).expect("envelope");
            out.push((seq, env));
        }
        out
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .expect("query")
    }

    /// Wait until every read model has applied every event committed so far. (Not the
    /// readable head: another test's open transaction can hold that back, and a wait for
    /// it would end before the latest events are applied.)
    pub async fn wait_for_projections(&self, what: &str) {
        let pool = self.pool.clone();
        eventually(what, Duration::from_secs(60), || {
            let pool = pool.clone();
            async move {
                let head = eventstore::log::last_committed(&pool).await.ok().flatten();
                let all = projections::checkpoint::all(&pool).await.ok()?;
                let head = head?;
                all.iter().all(|c| c.cursor >= head).then_some(())
            }
        })
        .await;
    }
}

/// Poll `check` until it returns `Some`, or panic after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A NATS server of a test's own (to stop and restart it), on a free port, with its own
/// store directory.
pub struct OwnNats {
    pub port: u16,
    pub store: PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let store =
            std::env::temp_dir().join(format!("chronicle-nats-{}", Uuid::new_v4().simple()));
        let mut me = Self {
            port,
            store,
            child: None,
        };
        me.resume().await;
        me
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn resume(&mut self) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (set NATS_SERVER_BIN): {e}"));
        self.child = Some(child);
        let port = self.port;
        eventually(
            "own nats-server accepts connections",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Is `nats-server` runnable here?
pub fn nats_server_available() -> bool {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A TCP port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
