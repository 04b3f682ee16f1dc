//! The list of read models, and the dispatch of an event to each.

use std::fmt;
use std::str::FromStr;

use eventstore::StoredEvent;
use sqlx::PgConnection;

use crate::{conversations, event_stats, sessions, uploads, usage, users};

/// Every read model Chronicle keeps. Adding one here makes the projector, rebuild, health
/// and metrics know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModel {
    Users,
    Sessions,
    Usage,
    Conversations,
    Uploads,
    EventStats,
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event cannot be applied as it is (bad payload, a broken invariant). Retrying
    /// will not help; after a few attempts the read model stops and shows as failed.
    #[error("cannot apply event {event_id} ({event_type}): {reason}")]
    Poison {
        event_id: uuid::Uuid,
        event_type: String,
        reason: String,
    },
    /// PostgreSQL failed; may work on a retry.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProjectionError {
    pub fn poison(event: &StoredEvent, reason: impl fmt::Display) -> Self {
        Self::Poison {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
        }
    }

    /// Whether the same event may succeed on another try (connection trouble) rather than
    /// fail again the same way (bad data, a constraint).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Poison { .. } => false,
            Self::Database(e) => !matches!(
                e,
                sqlx::Error::Database(_)
                    | sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::TypeNotFound { .. }
                    | sqlx::Error::ColumnNotFound(_)
            ),
        }
    }
}

impl ReadModel {
    pub const ALL: [ReadModel; 6] = [
        ReadModel::Users,
        ReadModel::Sessions,
        ReadModel::Usage,
        ReadModel::Conversations,
        ReadModel::Uploads,
        ReadModel::EventStats,
    ];

    /// The name used in checkpoints, consumer names, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Users => "users",
            ReadModel::Sessions => "sessions",
            ReadModel::Usage => "usage",
            ReadModel::Conversations => "conversations",
            ReadModel::Uploads => "uploads",
            ReadModel::EventStats => "event_stats",
        }
    }

    /// Apply one event, inside the caller's transaction.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match self {
            ReadModel::Users => users::apply(conn, event).await,
            ReadModel::Sessions => sessions::apply(conn, event).await,
            ReadModel::Usage => usage::apply(conn, event).await,
            ReadModel::Conversations => conversations::apply(conn, event).await,
            ReadModel::Uploads => uploads::apply(conn, event).await,
            ReadModel::EventStats => event_stats::apply(conn, event).await,
        }
    }

    /// Remove every row of this read model (a rebuild starts from nothing).
    pub async fn clear(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        match self {
            ReadModel::Users => users::clear(conn).await,
            ReadModel::Sessions => sessions::clear(conn).await,
            ReadModel::Usage => usage::clear(conn).await,
            ReadModel::Conversations => conversations::clear(conn).await,
            ReadModel::Uploads => uploads::clear(conn).await,
            ReadModel::EventStats => event_stats::clear(conn).await,
        }
    }
}

impl fmt::Display for ReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no read model named {0:?} (known: users, sessions, usage, conversations, uploads, event_stats)")]
pub struct UnknownReadModel(pub String);

impl FromStr for ReadModel {
    type Err = UnknownReadModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReadModel::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownReadModel(s.to_owned()))
    }
}
