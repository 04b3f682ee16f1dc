//! The `session` aggregate: one sign-in on one device, keyed by the session id.
//!
//! A session holds the hash of its current refresh token and of every token it rotated
//! away from. Refresh rotates; the token just rotated away from still works for a short
//! grace window (two tabs refreshing at once); any older token, or the previous one after
//! the window, is a replay: the session records `RefreshTokenReuseDetected` and is revoked,
//! so a stolen token family dies with it.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "session";

/// Why a session ended.
pub const REVOKED_LOGOUT: &str = "logout";
pub const REVOKED_LOGOUT_ALL: &str = "logout_all";
pub const REVOKED_BY_USER: &str = "revoked_by_user";
pub const REVOKED_PASSWORD_RESET: &str = "password_reset";
pub const REVOKED_REUSE: &str = "refresh_token_reuse";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// How long the token just rotated away from keeps working.
    pub refresh_grace: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            refresh_grace: Duration::seconds(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum SessionEvent {
    SessionStarted {
        user_id: Uuid,
        /// The owner's email, for the "new sign-in" mail.
        email: String,
        refresh_token_hash: String,
        device: String,
        ip: Option<String>,
        user_agent: Option<String>,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    RefreshTokenRotated {
        refresh_token_hash: String,
        rotated_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// A token this session rotated away from was presented again.
    RefreshTokenReuseDetected {
        presented_at: DateTime<Utc>,
    },
    SessionRevoked {
        reason: String,
    },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            SessionEvent::SessionStarted { .. } => "SessionStarted",
            SessionEvent::RefreshTokenRotated { .. } => "RefreshTokenRotated",
            SessionEvent::RefreshTokenReuseDetected { .. } => "RefreshTokenReuseDetected",
            SessionEvent::SessionRevoked { .. } => "SessionRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    StartSession {
        user_id: Uuid,
        email: String,
        refresh_token_hash: String,
        device: String,
        ip: Option<String>,
        user_agent: Option<String>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// Exchange the presented refresh token (hash) for a new one.
    Refresh {
        presented_hash: String,
        new_hash: String,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    Revoke {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session exists already")]
    AlreadyStarted,
    #[error("no such session")]
    NotFound,
    #[error("the session has ended")]
    Revoked,
    #[error("the session has expired")]
    Expired,
    #[error("the refresh token is not valid")]
    UnknownToken,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub started: bool,
    pub user_id: Option<Uuid>,
    pub current_hash: String,
    /// Every hash rotated away from, with when.
    pub previous: Vec<(String, DateTime<Utc>)>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl Aggregate for Session {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = SessionPolicy;

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SessionCommand::StartSession {
                user_id,
                email,
                refresh_token_hash,
                device,
                ip,
                user_agent,
                now,
                expires_at,
            } => {
                if self.started {
                    return Err(SessionError::AlreadyStarted);
                }
                sink.write(
                    SessionEvent::SessionStarted {
                        user_id,
                        email,
                        refresh_token_hash,
                        device,
                        ip,
                        user_agent,
                        started_at: now,
                        expires_at,
                    },
                    self,
                )
                .await;
            }
            SessionCommand::Refresh {
                presented_hash,
                new_hash,
                now,
                expires_at,
            } => {
                if !self.started {
                    return Err(SessionError::NotFound);
                }
                if self.revoked {
                    return Err(SessionError::Revoked);
                }
                if self.expires_at.is_some_and(|e| now >= e) {
                    return Err(SessionError::Expired);
                }
                let in_grace = self.previous.last().is_some_and(|(h, at)| {
                    *h == presented_hash && now - *at <= policy.refresh_grace
                });
                if presented_hash == self.current_hash || in_grace {
                    sink.write(
                        SessionEvent::RefreshTokenRotated {
                            refresh_token_hash: new_hash,
                            rotated_at: now,
                            expires_at,
                        },
                        self,
                    )
                    .await;
                } else if self.previous.iter().any(|(h, _)| *h == presented_hash) {
                    // A replay of a rotated token: whoever holds it, the family dies.
                    sink.write(
                        SessionEvent::RefreshTokenReuseDetected { presented_at: now },
                        self,
                    )
                    .await;
                    sink.write(
                        SessionEvent::SessionRevoked {
                            reason: REVOKED_REUSE.to_owned(),
                        },
                        self,
                    )
                    .await;
                } else {
                    return Err(SessionError::UnknownToken);
                }
            }
            SessionCommand::Revoke { reason } => {
                if !self.started {
                    return Err(SessionError::NotFound);
                }
                if !self.revoked {
                    sink.write(SessionEvent::SessionRevoked { reason }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SessionEvent::SessionStarted {
                user_id,
                refresh_token_hash,
                expires_at,
                ..
            } => {
                self.started = true;
                self.user_id = Some(user_id);
                self.current_hash = refresh_token_hash;
                self.expires_at = Some(expires_at);
            }
            SessionEvent::RefreshTokenRotated {
                refresh_token_hash,
                rotated_at,
                expires_at,
            } => {
                let old = std::mem::replace(&mut self.current_hash, refresh_token_hash);
                self.previous.push((old, rotated_at));
                self.expires_at = Some(expires_at);
            }
            SessionEvent::RefreshTokenReuseDetected { .. } => {}
            SessionEvent::SessionRevoked { .. } => self.revoked = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn started() -> SessionEvent {
        SessionEvent::SessionStarted {
            user_id: Uuid::from_u128(1),
            email: "ada@example.com".into(),
            refresh_token_hash: "h0".into(),
            device: "Firefox on Linux".into(),
            ip: None,
            user_agent: None,
            started_at: t0(),
            expires_at: t0() + Duration::days(30),
        }
    }

    fn rotated(h: &str, at: DateTime<Utc>) -> SessionEvent {
        SessionEvent::RefreshTokenRotated {
            refresh_token_hash: h.into(),
            rotated_at: at,
            expires_at: t0() + Duration::days(30),
        }
    }

    fn refresh(presented: &str, now: DateTime<Utc>) -> SessionCommand {
        SessionCommand::Refresh {
            presented_hash: presented.into(),
            new_hash: "new".into(),
            now,
            expires_at: t0() + Duration::days(30),
        }
    }

    #[tokio::test]
    async fn the_current_token_rotates() {
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(vec![started()])
            .when_async(refresh("h0", t0()))
            .await
            .then_expect_events(vec![SessionEvent::RefreshTokenRotated {
                refresh_token_hash: "new".into(),
                rotated_at: t0(),
                expires_at: t0() + Duration::days(30),
            }]);
    }

    #[tokio::test]
    async fn replaying_an_old_token_revokes_the_session() {
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(vec![
                started(),
                rotated("h1", t0() + Duration::minutes(1)),
                rotated("h2", t0() + Duration::minutes(2)),
                rotated("h3", t0() + Duration::minutes(3)),
            ])
            .when_async(refresh("h0", t0() + Duration::minutes(4)))
            .await
            .then_expect_events(vec![
                SessionEvent::RefreshTokenReuseDetected {
                    presented_at: t0() + Duration::minutes(4),
                },
                SessionEvent::SessionRevoked {
                    reason: REVOKED_REUSE.into(),
                },
            ]);
    }

    #[tokio::test]
    async fn the_previous_token_works_only_inside_the_grace_window() {
        let given = vec![started(), rotated("h1", t0())];
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(given.clone())
            .when_async(refresh("h0", t0() + Duration::seconds(5)))
            .await
            .then_expect_events(vec![SessionEvent::RefreshTokenRotated {
                refresh_token_hash: "new".into(),
                rotated_at: t0() + Duration::seconds(5),
                expires_at: t0() + Duration::days(30),
            }]);
        let outcome = TestFramework::<Session>::with(SessionPolicy::default())
            .given(given)
            .when_async(refresh("h0", t0() + Duration::seconds(11)))
            .await
            .inspect_result();
        assert!(matches!(
            outcome.as_deref(),
            Ok([
                SessionEvent::RefreshTokenReuseDetected { .. },
                SessionEvent::SessionRevoked { .. }
            ])
        ));
    }

    #[tokio::test]
    async fn a_revoked_or_expired_session_cannot_refresh() {
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(vec![
                started(),
                SessionEvent::SessionRevoked {
                    reason: "logout".into(),
                },
            ])
            .when_async(refresh("h0", t0()))
            .await
            .then_expect_error(SessionError::Revoked);
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(vec![started()])
            .when_async(refresh("h0", t0() + Duration::days(31)))
            .await
            .then_expect_error(SessionError::Expired);
        TestFramework::<Session>::with(SessionPolicy::default())
            .given(vec![started()])
            .when_async(refresh("nope", t0()))
            .await
            .then_expect_error(SessionError::UnknownToken);
    }
}
