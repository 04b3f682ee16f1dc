//! The `user` aggregate: one per account, keyed by the user's id (a UUID).
//!
//! # Layout
//! - [`commands`]: what may be asked of a user.
//! - [`events`]: what happened to a user (past tense, versioned).
//! - [`UserPolicy`]: the numbers the rules use (lockout, expiry, attempts).
//! - this module: the aggregate's state, its rules ([`User::handle`]) and how events
//!   change it ([`User::apply`]); given/when/then tests at the bottom.

mod account;
pub mod commands;
mod credentials;
pub mod events;
mod registration;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use self::registration::Registration;
pub use commands::UserCommand;
pub use events::{SecretMethod, UserEvent, LOGIN_FAILED_NO_PASSWORD, LOGIN_FAILED_WRONG_PASSWORD};

/// The aggregate type as stored in the log and used in stream subjects.
pub const AGGREGATE_TYPE: &str = "user";

pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";

pub const STATUS_PENDING: &str = "pending_verification";
pub const STATUS_ACTIVE: &str = "active";
pub const STATUS_DISABLED: &str = "disabled";
pub const STATUS_ERASED: &str = "erased";

/// The numbers the rules use. Kept out of the code so tests and deployments can tune them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// Failed sign-ins in a row that lock the account.
    pub max_login_failures: u32,
    /// The first lock lasts this long; each further lock twice as long...
    pub lock_base: Duration,
    /// ...up to this.
    pub lock_max: Duration,
    /// How long a verification or reset link works.
    pub link_ttl: Duration,
    /// How long a verification or reset code works.
    pub code_ttl: Duration,
    /// Wrong codes before the pending verification or reset is void.
    pub max_code_attempts: u32,
    /// How long an admin's invitation (link and code) works.
    pub invitation_ttl: Duration,
}

impl Default for UserPolicy {
    fn default() -> Self {
        Self {
            max_login_failures: 5,
            lock_base: Duration::minutes(1),
            lock_max: Duration::hours(1),
            link_ttl: Duration::minutes(30),
            code_ttl: Duration::minutes(10),
            max_code_attempts: 5,
            invitation_ttl: Duration::days(7),
        }
    }
}

impl UserPolicy {
    /// How long the `n`-th lock (0-based) lasts: base·2ⁿ, capped.
    pub fn lock_duration(&self, previous_locks: u32) -> Duration {
        let factor = 2i32.saturating_pow(previous_locks.min(20));
        (self.lock_base * factor).min(self.lock_max)
    }

    /// A failed sign-in after `failed` in a row and `previous_locks` locks: its number, and
    /// the lock it starts, if it is the last one allowed. One rule for accounts and for
    /// addresses with no account (`crate::email_probe`), so both lock alike.
    pub fn failure(
        &self,
        failed: u32,
        previous_locks: u32,
        now: DateTime<Utc>,
    ) -> (u32, Option<DateTime<Utc>>) {
        let attempts = failed + 1;
        let locked_until =
            (attempts >= self.max_login_failures).then(|| now + self.lock_duration(previous_locks));
        (attempts, locked_until)
    }
}

/// A verification or reset that was requested and not yet used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSecret {
    pub nonce: String,
    pub requested_at: DateTime<Utc>,
    pub failed_attempts: u32,
    /// An admin's invitation (it lives longer).
    #[serde(default)]
    pub invitation: bool,
}

/// A user's state, rebuilt from its events before each command.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub registered: bool,
    pub erased: bool,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    pub plan: String,
    pub email_verified: bool,
    pub disabled: bool,
    pub verification: Option<PendingSecret>,
    pub reset: Option<PendingSecret>,
    pub failed_logins: u32,
    pub locked_until: Option<DateTime<Utc>>,
    pub lockouts: u32,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

/// Why a user command was refused. Store failures are kept apart by cqrs-es's
/// `AggregateError`; these are the domain's own answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this account is already registered")]
    AlreadyRegistered,
    #[error("no such account")]
    NotRegistered,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    #[error("the email is already verified")]
    AlreadyVerified,
    #[error("the link or code is not valid")]
    SecretInvalid,
    #[error("the link or code has expired")]
    SecretExpired,
    #[error("the account is locked until {until}")]
    Locked { until: DateTime<Utc> },
    #[error("the email is not verified")]
    EmailNotVerified,
    #[error("the account is disabled")]
    Disabled,
}

impl User {
    /// The status shown to people: `pending_verification`, `active` or `disabled`.
    pub fn status(&self) -> &'static str {
        if self.erased {
            STATUS_ERASED
        } else if self.disabled {
            STATUS_DISABLED
        } else if self.email_verified {
            STATUS_ACTIVE
        } else {
            STATUS_PENDING
        }
    }

    fn must_exist(&self) -> Result<(), UserError> {
        if self.registered && !self.erased {
            Ok(())
        } else {
            Err(UserError::NotRegistered)
        }
    }

    /// Check a pending secret presented as a link.
    fn check_link(
        pending: &Option<PendingSecret>,
        nonce: &str,
        ttl: Duration,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<(), UserError> {
        let p = pending.as_ref().ok_or(UserError::SecretInvalid)?;
        if p.nonce != nonce || p.failed_attempts >= max_attempts {
            return Err(UserError::SecretInvalid);
        }
        if now - p.requested_at > ttl {
            return Err(UserError::SecretExpired);
        }
        Ok(())
    }

    /// Check a pending secret presented as a code: `Ok(None)` when it may be tried,
    /// `Ok(Some(attempts))` counts a wrong one.
    fn check_code(
        pending: &Option<PendingSecret>,
        ttl: Duration,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<u32, UserError> {
        let p = pending.as_ref().ok_or(UserError::SecretInvalid)?;
        if p.failed_attempts >= max_attempts {
            return Err(UserError::SecretInvalid);
        }
        if now - p.requested_at > ttl {
            return Err(UserError::SecretExpired);
        }
        Ok(p.failed_attempts)
    }
}

fn check_email(email: &str) -> Result<(), UserError> {
    if commands::is_plausible_email(email) {
        Ok(())
    } else {
        Err(UserError::Invalid {
            field: "email",
            message: "is not an email address",
        })
    }
}

fn check_profile_field(
    value: &Option<String>,
    field: &'static str,
    max: usize,
) -> Result<(), UserError> {
    if let Some(v) = value {
        if v.trim().is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
            return Err(UserError::Invalid {
                field,
                message: "has the wrong length or characters",
            });
        }
    }
    Ok(())
}

impl Aggregate for User {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserPolicy;

    /// Each command's decision lives with its kind: joining in [`registration`], signing
    /// in and passwords in [`credentials`], the account itself in [`account`].
    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use UserCommand as C;
        match command {
            C::RegisterUser {
                user_id,
                email,
                password_hash,
                display_name,
                role,
                plan,
                verified,
                verification_nonce,
                invitation,
                now,
            } => {
                let registration = Registration {
                    user_id,
                    email,
                    password_hash,
                    display_name,
                    role,
                    plan,
                    verified,
                    verification_nonce,
                    invitation,
                    now,
                };
                self.register(registration, sink).await
            }
            C::RecordDuplicateRegistration => self.record_duplicate_registration(sink).await,
            C::RequestEmailVerification { nonce, now } => {
                self.request_email_verification(nonce, now, sink).await
            }
            C::VerifyEmail { nonce, method, now } => {
                self.verify_email(nonce, method, now, policy, sink).await
            }
            C::VerifyEmailCode { code_ok, now } => {
                self.verify_email_code(code_ok, now, policy, sink).await
            }
            C::Login {
                password_ok,
                session_id,
                now,
            } => self.login(password_ok, session_id, now, policy, sink).await,
            C::RequestPasswordReset {
                nonce,
                now,
                invitation,
            } => {
                self.request_password_reset(nonce, now, invitation, sink)
                    .await
            }
            C::ResetPassword {
                nonce,
                password_hash,
                now,
            } => {
                self.reset_password(nonce, password_hash, now, policy, sink)
                    .await
            }
            C::ResetPasswordWithCode {
                code_ok,
                password_hash,
                now,
            } => {
                self.reset_password_with_code(code_ok, password_hash, now, policy, sink)
                    .await
            }
            C::ChangePassword { password_hash } => self.change_password(password_hash, sink).await,
            C::UpdateProfile {
                display_name,
                locale,
                timezone,
            } => {
                self.update_profile(display_name, locale, timezone, sink)
                    .await
            }
            C::ChangeAvatar {
                content_type,
                sha256,
                size,
            } => self.change_avatar(content_type, sha256, size, sink).await,
            C::ChangeEmail { email, nonce, now } => {
                self.change_email(email, nonce, now, sink).await
            }
            C::ChangePlan { plan } => self.change_plan(plan, sink).await,
            C::ChangeRole { role } => self.change_role(role, sink).await,
            C::Deactivate { reason } => self.deactivate(reason, sink).await,
            C::Reactivate => self.reactivate(sink).await,
            C::EraseUser { requested_by } => self.erase(requested_by, sink).await,
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered {
                email,
                display_name,
                password_hash,
                role,
                plan,
                ..
            } => {
                self.registered = true;
                self.email = email;
                self.display_name = display_name;
                self.password_hash = password_hash;
                self.role = role;
                self.plan = plan;
            }
            UserEvent::DuplicateRegistrationAttempted { .. } => {}
            UserEvent::EmailVerificationRequested {
                nonce,
                requested_at,
                ..
            } => {
                self.verification = Some(PendingSecret {
                    nonce,
                    requested_at,
                    failed_attempts: 0,
                    invitation: false,
                });
            }
            UserEvent::EmailVerificationCodeRejected { attempts, .. } => {
                if let Some(p) = self.verification.as_mut() {
                    p.failed_attempts = attempts;
                }
            }
            UserEvent::EmailVerified { .. } => {
                self.email_verified = true;
                self.verification = None;
            }
            UserEvent::FailedLoginsCleared { .. } => {
                self.failed_logins = 0;
                self.lockouts = 0;
                self.locked_until = None;
            }
            UserEvent::LoginFailed {
                attempts,
                locked_until,
                ..
            } => {
                self.failed_logins = attempts;
                if locked_until.is_some() {
                    self.locked_until = locked_until;
                    self.lockouts += 1;
                    self.failed_logins = 0;
                }
            }
            UserEvent::PasswordResetRequested {
                nonce,
                requested_at,
                invitation,
                ..
            } => {
                self.reset = Some(PendingSecret {
                    nonce,
                    requested_at,
                    failed_attempts: 0,
                    invitation,
                });
            }
            UserEvent::PasswordResetCodeRejected { attempts, .. } => {
                if let Some(p) = self.reset.as_mut() {
                    p.failed_attempts = attempts;
                }
            }
            UserEvent::PasswordReset { password_hash, .. } => {
                self.password_hash = Some(password_hash);
                self.reset = None;
                self.failed_logins = 0;
                self.locked_until = None;
            }
            UserEvent::PasswordChanged { password_hash, .. } => {
                self.password_hash = Some(password_hash);
            }
            UserEvent::ProfileUpdated {
                display_name,
                locale,
                timezone,
            } => {
                self.display_name = display_name;
                self.locale = locale;
                self.timezone = timezone;
            }
            UserEvent::AvatarChanged { .. } => {}
            UserEvent::PlanChanged { plan, .. } => self.plan = plan,
            UserEvent::RoleChanged { role, .. } => self.role = role,
            UserEvent::UserDeactivated { .. } => self.disabled = true,
            UserEvent::UserReactivated {} => self.disabled = false,
            UserEvent::EmailChanged { email } => {
                self.email = email;
                self.email_verified = false;
                self.verification = None;
            }
            UserEvent::UserErased { .. } => {
                // nothing personal stays in the state either
                *self = User {
                    registered: true,
                    erased: true,
                    ..User::default()
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
