//! The user's decisions about signing in: a sign-in attempt (counted, locked out), and the
//! password's reset (requested, by link or by code) and change.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use uuid::Uuid;

use super::{events, SecretMethod, User, UserError, UserEvent, UserPolicy};

impl User {
    pub(super) async fn login(
        &mut self,
        password_ok: bool,
        session_id: Uuid,
        now: DateTime<Utc>,
        policy: &UserPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if let Some(until) = self.locked_until {
            if now < until {
                // During a lock even the right password gets this answer, and attempts
                // are not counted.
                return Err(UserError::Locked { until });
            }
        }
        if !password_ok {
            let (attempts, locked_until) = policy.failure(self.failed_logins, self.lockouts, now);
            let reason = if self.password_hash.is_some() {
                events::LOGIN_FAILED_WRONG_PASSWORD
            } else {
                events::LOGIN_FAILED_NO_PASSWORD
            };
            sink.write(
                UserEvent::LoginFailed {
                    attempts,
                    locked_until,
                    reason: reason.to_owned(),
                },
                self,
            )
            .await;
            return Ok(());
        }
        if self.disabled {
            return Err(UserError::Disabled);
        }
        if !self.email_verified {
            return Err(UserError::EmailNotVerified);
        }
        // Success appends nothing unless there are failures to forget: a user's stream
        // must not grow with every sign-in.
        if self.failed_logins > 0 || self.lockouts > 0 || self.locked_until.is_some() {
            sink.write(
                UserEvent::FailedLoginsCleared {
                    session_id,
                    at: now,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    pub(super) async fn request_password_reset(
        &mut self,
        nonce: String,
        now: DateTime<Utc>,
        invitation: bool,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if self.disabled {
            return Err(UserError::Disabled);
        }
        let email = self.email.clone();
        sink.write(
            UserEvent::PasswordResetRequested {
                email,
                nonce,
                requested_at: now,
                invitation,
            },
            self,
        )
        .await;
        Ok(())
    }

    pub(super) async fn reset_password(
        &mut self,
        nonce: String,
        password_hash: String,
        now: DateTime<Utc>,
        policy: &UserPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        let ttl = self.reset_ttl(policy, policy.link_ttl);
        User::check_link(&self.reset, &nonce, ttl, policy.max_code_attempts, now)?;
        self.write_reset(password_hash, SecretMethod::Link, now, sink)
            .await;
        Ok(())
    }

    pub(super) async fn reset_password_with_code(
        &mut self,
        code_ok: bool,
        password_hash: String,
        now: DateTime<Utc>,
        policy: &UserPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        let ttl = self.reset_ttl(policy, policy.code_ttl);
        let failed = User::check_code(&self.reset, ttl, policy.max_code_attempts, now)?;
        if code_ok {
            self.write_reset(password_hash, SecretMethod::Code, now, sink)
                .await;
        } else {
            sink.write(
                UserEvent::PasswordResetCodeRejected {
                    attempts: failed + 1,
                    exhausted: failed + 1 >= policy.max_code_attempts,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    pub(super) async fn change_password(
        &mut self,
        password_hash: String,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        let email = self.email.clone();
        sink.write(
            UserEvent::PasswordChanged {
                email,
                password_hash,
            },
            self,
        )
        .await;
        Ok(())
    }

    /// How long the pending reset's link or code works: an invitation's lives longer.
    fn reset_ttl(&self, policy: &UserPolicy, usual: Duration) -> Duration {
        match &self.reset {
            Some(p) if p.invitation => policy.invitation_ttl,
            _ => usual,
        }
    }

    /// A reset also proves the mailbox is the owner's: an unverified account becomes
    /// verified.
    async fn write_reset(
        &mut self,
        password_hash: String,
        method: SecretMethod,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let email = self.email.clone();
        sink.write(
            UserEvent::PasswordReset {
                email,
                password_hash,
                method,
            },
            self,
        )
        .await;
        if !self.email_verified {
            sink.write(
                UserEvent::EmailVerified {
                    method,
                    verified_at: now,
                },
                self,
            )
            .await;
        }
    }
}
