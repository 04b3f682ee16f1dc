//! Chronicle's use cases: the operations that combine several steps, written once and run
//! by every caller — the HTTP API, the `chronicle admin` and `chronicle events` commands,
//! and the workers.
//!
//! A use case takes a [`Core`] (the event store's command buses, the read models' pool and
//! checkpoints, keys, passwords, plans, the clock) and plain values, and answers with a
//! value or an [`Error`]. It knows nothing of HTTP or of a terminal: the API maps [`Error`]
//! to its envelope in one place (`api::error`), the CLI to its exit codes.
//!
//! Below it: `aggregates` (decisions), `eventstore` (the log, email claims, keys, passwords),
//! `projections` (read models and their queries). Above it: `api`, `workers` and the
//! binary. Every SQL statement lives in `eventstore` or `projections`, next to the table it
//! reads or writes; this crate runs none of its own.
//!
//! # Layout
//! - [`clock`]: the injectable time every process takes `now` from.
//! - [`error`]: [`Error`], one error type with the cause kept.
//! - [`accounts`]: opening an account (the email claim and its release), an admin's changes
//!   to a user (profile, plan, email, role, deactivation), ending sessions.
//! - [`conversations`]: starting a conversation within the plan's `max_conversations`,
//!   race-free across processes.
//! - [`erasure`]: erasing a user — the event, the key, the email, the files.
//! - [`admin_guard`]: "never remove the last active admin".
//! - [`audit`]: a user's audit trail, who each actor is, secrets left out of what is shown.
//! - [`export`]: the event log as pages or a stream of NDJSON or CSV.
//! - [`api_keys`]: admin API keys, made, revoked, listed and checked.
//! - [`password_policy`]: what a password must be.
//! - [`usage`]: a user's plan (theirs, else the default), counting one thing against its
//!   daily limit, the day's tokens left and recording tokens up to the limit.

pub mod accounts;
pub mod admin_guard;
pub mod api_keys;
pub mod audit;
pub mod clock;
pub mod conversations;
pub mod erasure;
pub mod error;
pub mod export;
pub mod password_policy;
pub mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aggregates::api_key::ApiKey;
use aggregates::conversation::Conversation;
use aggregates::email_probe::EmailProbe;
use aggregates::meter::Meter;
use aggregates::plan::Plans;
use aggregates::session::Session;
use aggregates::upload::Upload;
use aggregates::user::User;
use aggregates::LogCursor;
use eventstore::crypto::KeyStore;
use eventstore::passwords::PasswordHasher;
use eventstore::CommandBus;
use projections::{CheckpointWatch, ReadModel};
use sqlx::PgPool;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use error::Error;

/// What the use cases need: the write side, the read side, and the few settings they
/// obey. The API's state holds one (and reaches its fields through `Deref`); the CLI builds
/// one without anything of HTTP.
pub struct Core {
    pub pool: PgPool,
    pub users: Arc<CommandBus<User>>,
    pub sessions: Arc<CommandBus<Session>>,
    pub meters: Arc<CommandBus<Meter>>,
    pub conversations: Arc<CommandBus<Conversation>>,
    pub uploads: Arc<CommandBus<Upload>>,
    /// Admin API keys (checked against the event store on every use).
    pub api_keys: Arc<CommandBus<ApiKey>>,
    /// Anonymous attempts on addresses with no account (the same trace as a known one).
    pub probes: Arc<CommandBus<EmailProbe>>,
    pub plans: Arc<Plans>,
    pub passwords: PasswordHasher,
    /// Per-user data keys: opening personal values, erasing them.
    pub keys: KeyStore,
    pub clock: Arc<dyn Clock>,
    pub checkpoints: CheckpointWatch,
    pub settings: CoreSettings,
}

/// The settings the use cases obey.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// How long a change waits for the read models its caller reads next.
    pub read_your_writes_timeout: Duration,
    /// Avatars and uploaded files are kept below it (`avatars/`, `uploads/`).
    pub data_dir: PathBuf,
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            read_your_writes_timeout: Duration::from_secs(2),
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl Core {
    /// Wait (bounded) until `models` have passed `cursor`; the names of those still behind
    /// when the time ran out (the change stands either way).
    pub async fn settle(
        &self,
        cursor: Option<LogCursor>,
        models: &[ReadModel],
    ) -> Vec<&'static str> {
        let Some(cursor) = cursor else { return vec![] };
        let timeout = self.settings.read_your_writes_timeout;
        if self
            .checkpoints
            .wait_for(models, cursor, timeout)
            .await
            .is_ok()
        {
            return vec![];
        }
        models
            .iter()
            .filter(|m| self.checkpoints.current(**m).is_none_or(|c| c < cursor))
            .map(|m| m.name())
            .collect()
    }
}
