//! The `user` aggregate: one per account, keyed by the user's id (a UUID).
//!
//! # Layout
//! - [`commands`]: what may be asked of a user.
//! - [`events`]: what happened to a user (past tense, versioned).
//! - [`UserPolicy`]: the numbers the rules use (lockout, expiry, attempts).
//! - this module: the aggregate's state, its rules ([`User::handle`]) and how events
//!   change it ([`User::apply`]); given/when/then tests at the bottom.

pub mod commands;
pub mod events;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

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

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UserCommand::RegisterUser {
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
                if self.registered {
                    return Err(UserError::AlreadyRegistered);
                }
                check_email(&email)?;
                check_profile_field(&display_name, "display_name", 100)?;
                let registered = UserEvent::UserRegistered {
                    user_id,
                    email: email.clone(),
                    display_name,
                    password_hash,
                    role,
                    plan,
                };
                sink.write(registered, self).await;
                if verified {
                    let trusted = UserEvent::EmailVerified {
                        method: SecretMethod::Trusted,
                        verified_at: now,
                    };
                    sink.write(trusted, self).await;
                } else if !invitation {
                    let mail = UserEvent::EmailVerificationRequested {
                        email: email.clone(),
                        nonce: verification_nonce.clone(),
                        requested_at: now,
                    };
                    sink.write(mail, self).await;
                }
                if invitation {
                    let invite = UserEvent::PasswordResetRequested {
                        email,
                        nonce: verification_nonce,
                        requested_at: now,
                        invitation: true,
                    };
                    sink.write(invite, self).await;
                }
            }
            UserCommand::RecordDuplicateRegistration => {
                self.must_exist()?;
                let email = self.email.clone();
                sink.write(UserEvent::DuplicateRegistrationAttempted { email }, self)
                    .await;
            }
            UserCommand::RequestEmailVerification { nonce, now } => {
                self.must_exist()?;
                if self.email_verified {
                    return Err(UserError::AlreadyVerified);
                }
                let email = self.email.clone();
                sink.write(
                    UserEvent::EmailVerificationRequested {
                        email,
                        nonce,
                        requested_at: now,
                    },
                    self,
                )
                .await;
            }
            UserCommand::VerifyEmail { nonce, method, now } => {
                self.must_exist()?;
                if self.email_verified {
                    return Err(UserError::AlreadyVerified);
                }
                User::check_link(
                    &self.verification,
                    &nonce,
                    policy.link_ttl,
                    policy.max_code_attempts,
                    now,
                )?;
                sink.write(
                    UserEvent::EmailVerified {
                        method,
                        verified_at: now,
                    },
                    self,
                )
                .await;
            }
            UserCommand::VerifyEmailCode { code_ok, now } => {
                self.must_exist()?;
                if self.email_verified {
                    return Err(UserError::AlreadyVerified);
                }
                let failed = User::check_code(
                    &self.verification,
                    policy.code_ttl,
                    policy.max_code_attempts,
                    now,
                )?;
                let event = if code_ok {
                    UserEvent::EmailVerified {
                        method: SecretMethod::Code,
                        verified_at: now,
                    }
                } else {
                    UserEvent::EmailVerificationCodeRejected {
                        attempts: failed + 1,
                        exhausted: failed + 1 >= policy.max_code_attempts,
                    }
                };
                sink.write(event, self).await;
            }
            UserCommand::Login {
                password_ok,
                session_id,
                now,
            } => {
                self.must_exist()?;
                if let Some(until) = self.locked_until {
                    if now < until {
                        // During a lock even the right password gets this answer, and
                        // attempts are not counted.
                        return Err(UserError::Locked { until });
                    }
                }
                if !password_ok {
                    let (attempts, locked_until) =
                        policy.failure(self.failed_logins, self.lockouts, now);
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
                // Success appends nothing unless there are failures to forget: a user's
                // stream must not grow with every sign-in.
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
            }
            UserCommand::RequestPasswordReset {
                nonce,
                now,
                invitation,
            } => {
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
            }
            UserCommand::ResetPassword {
                nonce,
                password_hash,
                now,
            } => {
                self.must_exist()?;
                let ttl = self.reset_ttl(policy, policy.link_ttl);
                User::check_link(&self.reset, &nonce, ttl, policy.max_code_attempts, now)?;
                self.write_reset(password_hash, SecretMethod::Link, now, sink)
                    .await;
            }
            UserCommand::ResetPasswordWithCode {
                code_ok,
                password_hash,
                now,
            } => {
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
            }
            UserCommand::ChangePassword { password_hash } => {
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
            }
            UserCommand::UpdateProfile {
                display_name,
                locale,
                timezone,
            } => {
                self.must_exist()?;
                check_profile_field(&display_name, "display_name", 100)?;
                check_profile_field(&locale, "locale", 35)?;
                check_profile_field(&timezone, "timezone", 64)?;
                if display_name == self.display_name
                    && locale == self.locale
                    && timezone == self.timezone
                {
                    return Ok(()); // nothing changes: no event
                }
                sink.write(
                    UserEvent::ProfileUpdated {
                        display_name,
                        locale,
                        timezone,
                    },
                    self,
                )
                .await;
            }
            UserCommand::ChangePlan { plan } => {
                self.must_exist()?;
                if plan != self.plan {
                    let previous = self.plan.clone();
                    sink.write(UserEvent::PlanChanged { plan, previous }, self)
                        .await;
                }
            }
            UserCommand::EraseUser { requested_by } => {
                self.must_exist()?;
                sink.write(UserEvent::UserErased { requested_by }, self)
                    .await;
            }
            UserCommand::ChangeRole { role } => {
                self.must_exist()?;
                if role != ROLE_USER && role != ROLE_ADMIN {
                    return Err(UserError::Invalid {
                        field: "role",
                        message: "must be user or admin",
                    });
                }
                if role != self.role {
                    let previous = self.role.clone();
                    sink.write(UserEvent::RoleChanged { role, previous }, self)
                        .await;
                }
            }
            UserCommand::Deactivate { reason } => {
                self.must_exist()?;
                check_profile_field(&reason, "reason", 500)?;
                if !self.disabled {
                    sink.write(UserEvent::UserDeactivated { reason }, self)
                        .await;
                }
            }
            UserCommand::Reactivate => {
                self.must_exist()?;
                if self.disabled {
                    sink.write(UserEvent::UserReactivated {}, self).await;
                }
            }
            UserCommand::ChangeEmail { email, nonce, now } => {
                self.must_exist()?;
                check_email(&email)?;
                if email != self.email {
                    sink.write(
                        UserEvent::EmailChanged {
                            email: email.clone(),
                        },
                        self,
                    )
                    .await;
                    sink.write(
                        UserEvent::EmailVerificationRequested {
                            email,
                            nonce,
                            requested_at: now,
                        },
                        self,
                    )
                    .await;
                }
            }
            UserCommand::ChangeAvatar {
                content_type,
                sha256,
                size,
            } => {
                self.must_exist()?;
                sink.write(
                    UserEvent::AvatarChanged {
                        content_type,
                        sha256,
                        size,
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

impl User {
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

#[cfg(test)]
mod tests;
