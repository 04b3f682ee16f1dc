//! The `email_probe` aggregate: what anonymous requests did with an email address that has
//! no account, keyed by a keyed hash of the address (the address itself is never stored).
//!
//! Anonymous requests that name an email (register, resend verification, forgot password,
//! sign in) must not tell whether the address has an account: not by status, body or
//! headers, and not by what they leave in the log, whose positions a client sees in every
//! command answer. So a request about an unknown (or refusing) address appends here what a
//! known one appends on the user: one event in one transaction, and the same downstream
//! work (relay, projectors). Sign-in failures are counted and lock the address exactly as
//! they lock an account ([`crate::user::UserPolicy`]): 423 is no sign that an account
//! exists.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::user::UserPolicy;

pub const AGGREGATE_TYPE: &str = "email_probe";

/// What an anonymous request asked for.
pub const KIND_REGISTRATION: &str = "registration";
pub const KIND_VERIFICATION: &str = "verification";
pub const KIND_PASSWORD_RESET: &str = "password_reset";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum EmailProbeEvent {
    /// A registration, verification mail or password reset was asked for an address with no
    /// account (or one that refused it silently: verified already, disabled). No mail is
    /// sent.
    ProbeRecorded {
        /// `registration`, `verification` or `password_reset`.
        kind: String,
    },
    /// A sign-in with an address that has no account.
    SignInFailed {
        /// Failed sign-ins in a row, this one included.
        attempts: u32,
        /// Set when this failure locks the address.
        locked_until: Option<DateTime<Utc>>,
    },
}

impl DomainEvent for EmailProbeEvent {
    fn event_type(&self) -> String {
        match self {
            EmailProbeEvent::ProbeRecorded { .. } => "ProbeRecorded",
            EmailProbeEvent::SignInFailed { .. } => "SignInFailed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EmailProbeCommand {
    RecordProbe { kind: &'static str },
    FailSignIn { now: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailProbeError {
    /// As for an account: during a lock even this attempt is not counted.
    #[error("locked until {until}")]
    Locked { until: DateTime<Utc> },
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailProbe {
    pub failed_sign_ins: u32,
    pub lockouts: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

impl Aggregate for EmailProbe {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = EmailProbeCommand;
    type Event = EmailProbeEvent;
    type Error = EmailProbeError;
    type Services = UserPolicy;

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            EmailProbeCommand::RecordProbe { kind } => {
                sink.write(
                    EmailProbeEvent::ProbeRecorded {
                        kind: kind.to_owned(),
                    },
                    self,
                )
                .await;
            }
            // The same rule as `UserCommand::Login` with a wrong password.
            EmailProbeCommand::FailSignIn { now } => {
                if let Some(until) = self.locked_until {
                    if now < until {
                        return Err(EmailProbeError::Locked { until });
                    }
                }
                let (attempts, locked_until) =
                    policy.failure(self.failed_sign_ins, self.lockouts, now);
                sink.write(
                    EmailProbeEvent::SignInFailed {
                        attempts,
                        locked_until,
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
            EmailProbeEvent::ProbeRecorded { .. } => {}
            EmailProbeEvent::SignInFailed {
                attempts,
                locked_until,
            } => {
                self.failed_sign_ins = attempts;
                if locked_until.is_some() {
                    self.locked_until = locked_until;
                    self.lockouts += 1;
                    self.failed_sign_ins = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn policy() -> UserPolicy {
        UserPolicy {
            max_login_failures: 3,
            ..UserPolicy::default()
        }
    }

    fn failed(attempts: u32, locked_until: Option<DateTime<Utc>>) -> EmailProbeEvent {
        EmailProbeEvent::SignInFailed {
            attempts,
            locked_until,
        }
    }

    #[test]
    fn an_unknown_address_locks_after_as_many_failures_as_an_account() {
        TestFramework::<EmailProbe>::with(policy())
            .given(vec![failed(1, None), failed(2, None)])
            .when(EmailProbeCommand::FailSignIn { now: now() })
            .then_expect_events(vec![failed(3, Some(now() + Duration::minutes(1)))]);
        TestFramework::<EmailProbe>::with(policy())
            .given(vec![
                failed(1, None),
                failed(2, None),
                failed(3, Some(now() + Duration::minutes(1))),
            ])
            .when(EmailProbeCommand::FailSignIn {
                now: now() + Duration::seconds(30),
            })
            .then_expect_error(EmailProbeError::Locked {
                until: now() + Duration::minutes(1),
            });
        // after the lock, counting starts again and the next lock lasts twice as long
        TestFramework::<EmailProbe>::with(policy())
            .given(vec![
                failed(3, Some(now() + Duration::minutes(1))),
                failed(1, None),
                failed(2, None),
            ])
            .when(EmailProbeCommand::FailSignIn {
                now: now() + Duration::minutes(5),
            })
            .then_expect_events(vec![failed(
                3,
                Some(now() + Duration::minutes(5) + Duration::minutes(2)),
            )]);
    }

    #[test]
    fn a_probe_is_one_event() {
        TestFramework::<EmailProbe>::with(policy())
            .given_no_previous_events()
            .when(EmailProbeCommand::RecordProbe {
                kind: KIND_PASSWORD_RESET,
            })
            .then_expect_events(vec![EmailProbeEvent::ProbeRecorded {
                kind: KIND_PASSWORD_RESET.into(),
            }]);
    }
}
