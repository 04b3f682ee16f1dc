//! The `meter` aggregate: one user's usage on one UTC day, keyed `<user id>:<YYYY-MM-DD>`.
//!
//! Usage is the busiest write path, so its aggregate is small and short-lived: one per
//! user per day. The daily limit is decided here, on the command side, so concurrent
//! requests cannot overshoot it (optimistic concurrency on the meter). A day's stream can
//! still grow to thousands of events; the command bus snapshots meters so that loading one
//! stays bounded (see docs/ARCHITECTURE.md).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "meter";

/// The kinds a plan limits; any other (well-formed) kind is counted without a limit.
pub const KIND_MESSAGES: &str = "messages";
pub const KIND_TOKENS: &str = "tokens";
pub const KIND_UPLOADS: &str = "uploads";

/// The meter of a user's day.
pub fn meter_id(user_id: Uuid, day: NaiveDate) -> String {
    format!("{user_id}:{day}")
}

/// A kind is lower-case letters, digits and `_`, starting with a letter, at most 64 long.
pub fn is_valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && kind.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum MeterEvent {
    UsageRecorded {
        user_id: Uuid,
        day: NaiveDate,
        kind: String,
        amount: u64,
        occurred_at: DateTime<Utc>,
        /// The caller's id for the record (`POST /api/v1/metrics/batch`): recorded once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record_id: Option<String>,
    },
}

impl DomainEvent for MeterEvent {
    fn event_type(&self) -> String {
        match self {
            MeterEvent::UsageRecorded { .. } => "UsageRecorded".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MeterCommand {
    /// Count `amount` of `kind` on `day`, refusing to pass `limit` (the plan's daily limit
    /// for the kind; `None`: not limited).
    RecordUsage {
        user_id: Uuid,
        day: NaiveDate,
        kind: String,
        amount: u64,
        occurred_at: DateTime<Utc>,
        limit: Option<u64>,
        /// The caller's id for the record: a record with an id is counted once
        /// ([`record_event_id`]).
        record_id: Option<String>,
    },
}

/// The event id of a user's record with the caller's id `record_id`: the same record sent
/// again names the same event, which the log holds once.
pub fn record_event_id(user_id: Uuid, record_id: &str) -> Uuid {
    Uuid::new_v5(
        &RECORD_NAMESPACE,
        format!("{user_id}/{record_id}").as_bytes(),
    )
}

/// The UUIDv5 namespace of usage records' event ids.
const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_93c2_4d0e_4a55_9c3e_7a0d_2f61_b8e4);

/// The event id a command carries (the command bus's `with_command_ids`).
pub fn command_event_id(command: &MeterCommand) -> Option<Uuid> {
    match command {
        MeterCommand::RecordUsage {
            user_id, record_id, ..
        } => record_id.as_deref().map(|id| record_event_id(*user_id, id)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("the daily limit of {limit} {kind} is reached ({used} used)")]
    LimitReached { kind: String, limit: u64, used: u64 },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
}

/// A day's totals per kind.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    pub totals: BTreeMap<String, u64>,
    pub records: u64,
}

impl Meter {
    pub fn used(&self, kind: &str) -> u64 {
        self.totals.get(kind).copied().unwrap_or(0)
    }
}

impl Aggregate for Meter {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = MeterCommand;
    type Event = MeterEvent;
    type Error = MeterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            MeterCommand::RecordUsage {
                user_id,
                day,
                kind,
                amount,
                occurred_at,
                limit,
                record_id,
            } => {
                if !is_valid_kind(&kind) {
                    return Err(MeterError::Invalid {
                        field: "kind",
                        message:
                            "lower-case letters, digits and _ (starting with a letter), at most 64",
                    });
                }
                if amount == 0 {
                    return Err(MeterError::Invalid {
                        field: "amount",
                        message: "must be at least 1",
                    });
                }
                let used = self.used(&kind);
                if let Some(limit) = limit {
                    if used.saturating_add(amount) > limit {
                        return Err(MeterError::LimitReached { kind, limit, used });
                    }
                }
                sink.write(
                    MeterEvent::UsageRecorded {
                        user_id,
                        day,
                        kind,
                        amount,
                        occurred_at,
                        record_id,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            MeterEvent::UsageRecorded { kind, amount, .. } => {
                *self.totals.entry(kind).or_default() += amount;
                self.records += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn record(amount: u64, limit: Option<u64>) -> MeterCommand {
        MeterCommand::RecordUsage {
            user_id: Uuid::from_u128(1),
            day: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            kind: KIND_MESSAGES.into(),
            amount,
            occurred_at: DateTime::<Utc>::default(),
            limit,
            record_id: None,
        }
    }

    fn recorded(amount: u64) -> MeterEvent {
        MeterEvent::UsageRecorded {
            user_id: Uuid::from_u128(1),
            day: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            kind: KIND_MESSAGES.into(),
            amount,
            occurred_at: DateTime::<Utc>::default(),
            record_id: None,
        }
    }

    #[test]
    fn a_records_event_id_is_the_same_for_the_same_user_and_id_and_differs_otherwise() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(record_event_id(a, "r-1"), record_event_id(a, "r-1"));
        assert_ne!(record_event_id(a, "r-1"), record_event_id(a, "r-2"));
        assert_ne!(record_event_id(a, "r-1"), record_event_id(b, "r-1"));
        assert_eq!(record_event_id(a, "r-1").get_version_num(), 5);
        assert_eq!(command_event_id(&record(1, None)), None);
    }

    #[tokio::test]
    async fn usage_within_the_limit_is_recorded() {
        TestFramework::<Meter>::with(())
            .given(vec![recorded(98)])
            .when_async(record(2, Some(100)))
            .await
            .then_expect_events(vec![recorded(2)]);
    }

    #[tokio::test]
    async fn usage_past_the_limit_is_refused_with_what_is_used() {
        TestFramework::<Meter>::with(())
            .given(vec![recorded(99)])
            .when_async(record(2, Some(100)))
            .await
            .then_expect_error(MeterError::LimitReached {
                kind: KIND_MESSAGES.into(),
                limit: 100,
                used: 99,
            });
    }

    #[tokio::test]
    async fn unlimited_kinds_are_counted() {
        TestFramework::<Meter>::with(())
            .given(vec![recorded(1_000_000)])
            .when_async(record(5, None))
            .await
            .then_expect_events(vec![recorded(5)]);
    }

    #[test]
    fn kinds_are_well_formed_names() {
        for ok in ["messages", "api_calls", "x1"] {
            assert!(is_valid_kind(ok), "{ok}");
        }
        for bad in ["", "Messages", "1x", "a-b", "a b", &"a".repeat(65)] {
            assert!(!is_valid_kind(bad), "{bad}");
        }
    }
}
