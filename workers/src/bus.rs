//! The NATS side: connecting, the stream's configuration, and subjects.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// Where events go on NATS. The stream name and the subject prefix are configurable so
/// that tests and several deployments can share one NATS server.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The NATS servers to reach (`NATS_URL`, a comma-separated list: the nodes of a
    /// cluster). The client connects to one and fails over to the others.
    pub servers: Vec<String>,
    /// How many copies of the stream a JetStream cluster keeps (1, or 3 for a 3-node
    /// cluster); applied when the stream is created or updated.
    pub stream_replicas: usize,
    /// JetStream stream name (default `CHRONICLE_EVENTS`).
    pub stream: String,
    /// Subjects are `<prefix>.events.<aggregate>.<event>` (default prefix `chronicle`).
    pub subject_prefix: String,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a republished event.
    pub duplicate_window: Duration,
}

impl BusConfig {
    /// The servers as `NATS_URL` spells them (for messages).
    pub fn nats_url(&self) -> String {
        self.servers.join(",")
    }

    /// The subject an event is published on. Tokens are made subject-safe.
    pub fn subject(&self, aggregate_type: &str, event_type: &str) -> String {
        format!(
            "{}.events.{}.{}",
            self.subject_prefix,
            subject_token(aggregate_type),
            subject_token(event_type)
        )
    }

    /// Every event subject of this deployment.
    pub fn all_subjects(&self) -> String {
        format!("{}.events.>", self.subject_prefix)
    }

    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("Chronicle's event log, relayed from PostgreSQL".into()),
            subjects: vec![self.all_subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: self.duplicate_window,
            num_replicas: self.stream_replicas.max(1),
            ..Default::default()
        }
    }
}

/// NATS subject tokens may not contain `.`, `*`, `>` or white space.
fn subject_token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// A NATS client and its JetStream context.
#[derive(Clone, Debug)]
pub struct EventBus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: BusConfig,
}

impl EventBus {
    /// Connect; the client keeps retrying in the background while NATS is away (also at
    /// start), so commands and the API never wait for NATS.
    pub async fn connect(config: BusConfig) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("chronicle")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection event");
            })
            .connect(config.servers.as_slice())
            .await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(5));
        Ok(Self {
            client,
            jetstream,
            config,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Create the stream, or bring its configuration up to date.
    ///
    /// Every process that starts runs this, often at the same moment. JetStream decides
    /// which create wins; a loser whose configuration differs (a rolling upgrade, another
    /// duplicate window) is told "stream name already in use", and one that looked just
    /// before the stream appeared or vanished gets "not found". Both only mean "look again":
    /// the next round sees the stream and updates it if needed.
    pub async fn ensure_stream(&self) -> Result<stream::Info, anyhow::Error> {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        loop {
            match self.try_ensure_stream().await {
                Err(e) if backoff.attempts() < 10 && is_creation_race(&e) => {
                    tracing::debug!(error = %e, "The stream changed under us; looking again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                other => return other,
            }
        }
    }

    async fn try_ensure_stream(&self) -> Result<stream::Info, anyhow::Error> {
        let config = self.config.stream_config();
        match self.jetstream.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await?.clone();
                if info.config.subjects != config.subjects
                    || info.config.duplicate_window != config.duplicate_window
                    || info.config.num_replicas != config.num_replicas
                {
                    let mut updated = info.config.clone();
                    updated.subjects = config.subjects.clone();
                    updated.duplicate_window = config.duplicate_window;
                    updated.num_replicas = config.num_replicas;
                    return Ok(self.jetstream.update_stream(updated).await?);
                }
                Ok(info)
            }
            Err(_) => Ok(self
                .jetstream
                .create_stream(config)
                .await?
                .info()
                .await?
                .clone()),
        }
    }
}

/// Whether `e` is another process creating, updating or removing the stream at the same
/// time as we did (worth another look), rather than NATS refusing us for good.
fn is_creation_race(e: &anyhow::Error) -> bool {
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    use async_nats::jetstream::ErrorCode;
    // update_stream's error is the same type as create_stream's
    e.downcast_ref::<CreateStreamError>().is_some_and(|e| {
        matches!(e.kind(), CreateStreamErrorKind::JetStream(j)
            if j.error_code() == ErrorCode::STREAM_NAME_EXIST
                || j.error_code() == ErrorCode::STREAM_NOT_FOUND)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_prefixed_and_safe() {
        let c = BusConfig {
            servers: Vec::new(),
            stream_replicas: 1,
            stream: "S".into(),
            subject_prefix: "chronicle".into(),
            duplicate_window: Duration::from_secs(120),
        };
        assert_eq!(
            c.subject("user", "UserRegistered"),
            "chronicle.events.user.UserRegistered"
        );
        assert_eq!(c.subject("a.b", "x y*"), "chronicle.events.a_b.x_y_");
        assert_eq!(c.all_subjects(), "chronicle.events.>");
    }
}
