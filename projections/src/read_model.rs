//! The list of read models, and the dispatch of an event to each.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use aggregates::Event;
use eventstore::crypto::KeyStore;
use eventstore::StoredEvent;
use sqlx::PgConnection;

use crate::decoded::Decoded;
use crate::{conversations, event_stats, sessions, uploads, usage, users};

/// What a replay of the log keeps in memory between its batches (see [`ReadModel::replay`]).
#[derive(Default)]
pub struct Replay {
    usage: usage::Fold,
}

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
            // a restart's 57P01 is a database error too, but says nothing about the event
            Self::Database(e @ sqlx::Error::Database(_)) => {
                eventstore::unavailable::is_unavailable(e)
            }
            Self::Database(e) => !matches!(
                e,
                sqlx::Error::ColumnDecode { .. }
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

    /// The aggregate types whose events this read model applies (`None`: every event).
    /// Other events only move its checkpoint: the projector and a rebuild neither open nor
    /// apply them, and a rebuild does not read them.
    pub fn aggregate_types(self) -> Option<&'static [&'static str]> {
        use aggregates::{conversation, meter, session, upload, user};
        match self {
            ReadModel::Users | ReadModel::Sessions => {
                Some(&[user::AGGREGATE_TYPE, session::AGGREGATE_TYPE])
            }
            ReadModel::Usage => Some(&[meter::AGGREGATE_TYPE, user::AGGREGATE_TYPE]),
            ReadModel::Conversations => Some(&[conversation::AGGREGATE_TYPE, user::AGGREGATE_TYPE]),
            ReadModel::Uploads => Some(&[upload::AGGREGATE_TYPE, user::AGGREGATE_TYPE]),
            ReadModel::EventStats => None,
        }
    }

    /// Whether this read model applies events of `aggregate_type`.
    pub fn wants(self, aggregate_type: &str) -> bool {
        self.aggregate_types()
            .is_none_or(|types| types.contains(&aggregate_type))
    }

    /// Open what this read model reads of an event: the personal values of its payload.
    /// Event statistics count events by type, day and actor and open nothing; no read model
    /// reads the metadata's personal values (the IP address, the user agent), which stay
    /// sealed.
    pub async fn open(
        self,
        event: &mut StoredEvent,
        keys: &KeyStore,
    ) -> Result<(), eventstore::crypto::CryptoError> {
        match self {
            ReadModel::EventStats => Ok(()),
            _ => event.open_payload(keys).await,
        }
    }

    /// Apply one event, inside the caller's transaction.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, std::slice::from_ref(event)).await
    }

    /// Apply events in their order, inside the caller's transaction: the same rows as
    /// [`ReadModel::apply`] on each. Each event this read model wants is decoded once
    /// ([`Decoded`]); one that decodes to no event is poison (event statistics, which
    /// count events by their stored type, count it all the same). Users, usage and event
    /// stats fold the batch in memory and write it with one statement per table; the
    /// others apply one event at a time.
    pub async fn apply_all(
        self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut replay = Replay::default();
        self.replay(conn, events, &mut replay).await?;
        self.finish_replay(conn, &mut replay).await
    }

    /// Apply events in their order during a replay (a rebuild's, a verify's), which keeps
    /// `replay` across its batches: the same rows once [`ReadModel::finish_replay`] has run.
    pub async fn replay(
        self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
        replay: &mut Replay,
    ) -> Result<(), ProjectionError> {
        let storable: Vec<Cow<'_, StoredEvent>> = events
            .iter()
            .filter(|e| self.wants(&e.aggregate_type))
            .map(storable)
            .collect();
        let decoded = || {
            storable
                .iter()
                .map(|e| Decoded::new(e))
                .collect::<Result<Vec<_>, _>>()
        };
        match self {
            ReadModel::EventStats => {
                // counts what the log holds, whatever it is: an event no read model can
                // decode is still counted (as neither a sign-up nor a sign-in)
                let events: Vec<(&StoredEvent, Option<Event>)> = storable
                    .iter()
                    .map(|e| (&**e, Event::decode(&e.aggregate_type, &e.payload).ok()))
                    .collect();
                event_stats::apply_all(conn, &events).await
            }
            ReadModel::Usage => usage::fold_into(conn, &decoded()?, &mut replay.usage).await,
            ReadModel::Users => users::apply_all(conn, decoded()?).await,
            ReadModel::Sessions => {
                for event in &decoded()? {
                    sessions::apply(conn, event).await?;
                }
                Ok(())
            }
            ReadModel::Conversations => {
                for event in &decoded()? {
                    conversations::apply(conn, event).await?;
                }
                Ok(())
            }
            ReadModel::Uploads => {
                for event in &decoded()? {
                    uploads::apply(conn, event).await?;
                }
                Ok(())
            }
        }
    }

    /// Write what a replay still holds in memory.
    pub async fn finish_replay(
        self,
        conn: &mut PgConnection,
        replay: &mut Replay,
    ) -> Result<(), ProjectionError> {
        replay.usage.flush(conn).await
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

/// The event with every U+0000 in its opened strings replaced by U+FFFD.
///
/// The log can hold what PostgreSQL's `text` cannot: a NUL inside a sealed value (the
/// edge and the aggregates refuse NUL today, but an older event, an import or a bug may
/// carry one). A read model must store whatever the log holds and never stop on it, so
/// every projection sees this form. Replaying gives the same rows, so verify still agrees.
pub fn storable(event: &StoredEvent) -> Cow<'_, StoredEvent> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = s.replace('\0', "\u{fffd}"),
            serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
            serde_json::Value::Object(o) => {
                let map = std::mem::take(o);
                for (k, mut v) in map {
                    scrub(&mut v);
                    o.insert(k.replace('\0', "\u{fffd}"), v);
                }
            }
            _ => {}
        }
    }
    let meta = &event.metadata;
    let meta_nul = [
        meta.actor_id.as_deref(),
        Some(meta.actor_role.as_str()),
        meta.ip.as_deref(),
        meta.user_agent.as_deref(),
        meta.request_id.as_deref(),
        meta.correlation_id.as_deref(),
        meta.causation_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|s| s.contains('\0'));
    if !meta_nul && !has_nul(&event.payload) {
        return Cow::Borrowed(event);
    }
    let mut clean = event.clone();
    scrub(&mut clean.payload);
    let fix = |s: &mut String| {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{fffd}");
        }
    };
    let m = &mut clean.metadata;
    for s in [
        m.actor_id.as_mut(),
        Some(&mut m.actor_role),
        m.ip.as_mut(),
        m.user_agent.as_mut(),
        m.request_id.as_mut(),
        m.correlation_id.as_mut(),
        m.causation_id.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        fix(s);
    }
    Cow::Owned(clean)
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
