//! [`Decoded`]: a stored event as every read model sees it, decoded once into
//! [`aggregates::Event`], and [`Decoded::is_next`], the one sequence guard.

use aggregates::user::UserEvent;
use aggregates::Event;
use eventstore::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// A stored event (opened, NUL-free: see [`crate::read_model::storable`]) and what it is.
pub struct Decoded<'a> {
    pub stored: &'a StoredEvent,
    pub event: Event,
}

impl<'a> Decoded<'a> {
    /// Decode `stored`; a payload that is none of Chronicle's events is the event's fault
    /// (poison: a retry cannot help).
    pub fn new(stored: &'a StoredEvent) -> Result<Self, ProjectionError> {
        let event = Event::decode(&stored.aggregate_type, &stored.payload)
            .map_err(|e| ProjectionError::poison(stored, e))?;
        Ok(Self { stored, event })
    }

    /// The aggregate's id as a UUID (every aggregate but the meter is keyed by one).
    pub fn uuid(&self) -> Result<Uuid, ProjectionError> {
        aggregate_uuid(self.stored)
    }

    /// The event's sequence within its aggregate (1 for the first).
    pub fn sequence(&self) -> i64 {
        self.stored.sequence as i64
    }

    pub fn poison(&self, reason: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::poison(self.stored, reason)
    }

    /// Whether this event comes next for a row whose last applied sequence is `last`:
    /// [`is_next`].
    pub fn is_next(
        &self,
        last: Option<i64>,
        row: impl std::fmt::Display,
    ) -> Result<bool, ProjectionError> {
        is_next(self.stored, last, row)
    }

    /// [`Decoded::is_next`] for a read model keyed by the aggregate's UUID in `table`'s
    /// `id`, with its last applied sequence in `last_sequence` (sessions, conversations,
    /// uploads).
    pub async fn is_next_in(
        &self,
        conn: &mut PgConnection,
        table: &'static str,
    ) -> Result<bool, ProjectionError> {
        let id = self.uuid()?;
        let last: Option<i64> =
            sqlx::query_scalar(&format!("select last_sequence from {table} where id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?;
        self.is_next(last, format_args!("{table} {id}"))
    }
}

/// Whether a user's event ends what the read models other than `users` hold of them
/// (sessions, files, conversations, usage): only an erasure does. Every user event is named
/// here, so a new one is decided here once for all of them.
pub fn erases(user_event: &UserEvent) -> bool {
    match user_event {
        UserEvent::UserErased { .. } => true,
        UserEvent::UserRegistered { .. }
        | UserEvent::DuplicateRegistrationAttempted { .. }
        | UserEvent::EmailVerificationRequested { .. }
        | UserEvent::EmailVerificationCodeRejected { .. }
        | UserEvent::EmailVerified { .. }
        | UserEvent::FailedLoginsCleared { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCodeRejected { .. }
        | UserEvent::PasswordReset { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::ProfileUpdated { .. }
        | UserEvent::AvatarChanged { .. }
        | UserEvent::PlanChanged { .. }
        | UserEvent::RoleChanged { .. }
        | UserEvent::UserDeactivated { .. }
        | UserEvent::UserReactivated {}
        | UserEvent::EmailChanged { .. } => false,
    }
}

/// The aggregate's id of `stored` as a UUID; one that is not is poison.
pub fn aggregate_uuid(stored: &StoredEvent) -> Result<Uuid, ProjectionError> {
    stored
        .aggregate_id
        .parse()
        .map_err(|e| ProjectionError::poison(stored, format!("aggregate id: {e}")))
}

/// The sequence guard of every read model keyed by an aggregate: whether `stored` comes
/// next for a row whose last applied sequence is `last` (`None`: no row yet). `Ok(false)`:
/// applied already (a redelivery, a replay over rows that exist), so it must change
/// nothing. An error when events are missing in between: the row would be wrong, and
/// applying later events cannot fix it.
pub fn is_next(
    stored: &StoredEvent,
    last: Option<i64>,
    row: impl std::fmt::Display,
) -> Result<bool, ProjectionError> {
    let sequence = stored.sequence as i64;
    match last {
        Some(last) if last >= sequence => Ok(false),
        Some(last) if last != sequence - 1 => Err(ProjectionError::poison(
            stored,
            format!("{row} is at sequence {last}, the event is {sequence}"),
        )),
        None if sequence != 1 => Err(ProjectionError::poison(
            stored,
            format!("{row} has no row, the event is sequence {sequence}"),
        )),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::EventMetadata;
    use chrono::Utc;

    fn stored(aggregate_type: &str, sequence: u64, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            cursor: aggregates::LogCursor::new(1, 1),
            event_id: Uuid::now_v7(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: Uuid::now_v7().to_string(),
            sequence,
            event_type: "UserReactivated".into(),
            event_version: "1.0".into(),
            payload,
            metadata: EventMetadata::system("test"),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn the_guard_applies_the_next_skips_the_seen_and_refuses_a_gap() {
        let e = stored("user", 3, serde_json::json!({"UserReactivated": {}}));
        let d = Decoded::new(&e).expect("decodes");
        assert!(matches!(d.event, Event::User(_)));
        assert!(d.is_next(Some(2), "user").expect("next"));
        assert!(!d.is_next(Some(3), "user").expect("seen"));
        assert!(!d.is_next(Some(9), "user").expect("seen"));
        for last in [Some(1), None] {
            let err = d.is_next(last, "user x").expect_err("a gap");
            assert!(matches!(err, ProjectionError::Poison { .. }), "{err}");
            assert!(err.to_string().contains("user x"), "{err}");
        }
        let first = stored("user", 1, serde_json::json!({"UserReactivated": {}}));
        assert!(Decoded::new(&first)
            .expect("decodes")
            .is_next(None, "u")
            .expect("first"));
    }

    #[test]
    fn a_payload_that_is_no_event_is_poison() {
        let e = stored("user", 1, serde_json::json!({"NoSuchEvent": {}}));
        assert!(matches!(
            Decoded::new(&e),
            Err(ProjectionError::Poison { .. })
        ));
        let e = stored("invoice", 1, serde_json::json!({"UserReactivated": {}}));
        assert!(matches!(
            Decoded::new(&e),
            Err(ProjectionError::Poison { .. })
        ));
    }
}
