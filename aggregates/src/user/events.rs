//! Events of the `user` aggregate (past tense, each with a version).
//!
//! Secrets never appear here: passwords only as argon2id hashes; verification and reset
//! links and codes are derived by HMAC (server secret) from the `nonce` an event holds, so
//! the log alone cannot produce them. Hashes and nonces are sealed in the log all the same
//! (`catalog::SECRET_FIELDS`): aggregates see them opened.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `LoginFailed.reason`: the password given was not the account's.
pub const LOGIN_FAILED_WRONG_PASSWORD: &str = "wrong_password";
/// `LoginFailed.reason`: the account has no password (it signs in by email only).
pub const LOGIN_FAILED_NO_PASSWORD: &str = "no_password";

/// How a one-time secret (verification, reset) was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretMethod {
    Link,
    Code,
    /// No secret: the account was created verified (a seeded admin, an admin's invitation).
    Trusted,
}

/// What happened to a user. Stored as `{"<EventType>": {fields}}` in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum UserEvent {
    UserRegistered {
        user_id: Uuid,
        email: String,
        display_name: Option<String>,
        /// argon2id PHC string; absent for email-first accounts.
        password_hash: Option<String>,
        role: String,
        plan: String,
    },
    /// Someone tried to register with this account's email; the owner is told by mail.
    DuplicateRegistrationAttempted {
        #[serde(default)]
        email: String,
    },
    /// A verification mail (link + 6-digit code, both derived from `nonce`) is due.
    /// A newer request replaces the older one.
    EmailVerificationRequested {
        email: String,
        nonce: String,
        requested_at: DateTime<Utc>,
    },
    /// A wrong verification code; after too many the pending verification is void.
    EmailVerificationCodeRejected {
        attempts: u32,
        exhausted: bool,
    },
    EmailVerified {
        method: SecretMethod,
        verified_at: DateTime<Utc>,
    },
    /// A sign-in with the right password after failed ones: the count starts again.
    /// (A sign-in itself is the `session` aggregate's `SessionStarted`; recording every
    /// one here would make each user's stream grow with every login.)
    FailedLoginsCleared {
        session_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A sign-in with a wrong password. `locked_until` is set when this failure locked the
    /// account. Version 2.0 added `reason` (version 1.0 events are upcast on read with
    /// `wrong_password`, see `eventstore::upcast`).
    LoginFailed {
        /// Failed sign-ins in a row, this one included.
        attempts: u32,
        /// Set when this failure locked the account.
        locked_until: Option<DateTime<Utc>>,
        /// Why: `wrong_password`, or `no_password` when the account has no password (an
        /// email-first account). Since version 2.0.
        reason: String,
    },
    /// A reset mail (link + code derived from `nonce`) is due.
    PasswordResetRequested {
        email: String,
        nonce: String,
        requested_at: DateTime<Utc>,
        /// An admin invited the user to choose a first password: a different mail, and the
        /// link and code work for `UserPolicy::invitation_ttl` instead.
        #[serde(default)]
        invitation: bool,
    },
    PasswordResetCodeRejected {
        attempts: u32,
        exhausted: bool,
    },
    /// The password was reset with a link or code; every session is revoked.
    PasswordReset {
        email: String,
        password_hash: String,
        method: SecretMethod,
    },
    /// The password was changed by its owner (who gave the current one).
    PasswordChanged {
        email: String,
        password_hash: String,
    },
    ProfileUpdated {
        display_name: Option<String>,
        locale: Option<String>,
        timezone: Option<String>,
    },
    AvatarChanged {
        content_type: String,
        sha256: String,
        size: u64,
    },
    /// The user moved to another plan; its limits apply at once.
    PlanChanged {
        plan: String,
        previous: String,
    },
    /// The account and its personal data are erased: the user's key is deleted, so every
    /// personal value this user's events hold reads as "[erased]" from now on.
    UserErased {
        /// `user` (the owner, with the password) or `admin`.
        requested_by: String,
    },
    /// The account got another role (by an admin).
    RoleChanged {
        role: String,
        previous: String,
    },
    /// The account was switched off (by an admin): no sign-in, every session revoked.
    UserDeactivated {
        #[serde(default)]
        reason: Option<String>,
    },
    /// The account was switched back on.
    UserReactivated {},
    /// The account moved to another email, which is unverified until a
    /// `EmailVerificationRequested` that follows is answered.
    EmailChanged {
        email: String,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::DuplicateRegistrationAttempted { .. } => "DuplicateRegistrationAttempted",
            UserEvent::EmailVerificationRequested { .. } => "EmailVerificationRequested",
            UserEvent::EmailVerificationCodeRejected { .. } => "EmailVerificationCodeRejected",
            UserEvent::EmailVerified { .. } => "EmailVerified",
            UserEvent::FailedLoginsCleared { .. } => "FailedLoginsCleared",
            UserEvent::LoginFailed { .. } => "LoginFailed",
            UserEvent::PasswordResetRequested { .. } => "PasswordResetRequested",
            UserEvent::PasswordResetCodeRejected { .. } => "PasswordResetCodeRejected",
            UserEvent::PasswordReset { .. } => "PasswordReset",
            UserEvent::PasswordChanged { .. } => "PasswordChanged",
            UserEvent::ProfileUpdated { .. } => "ProfileUpdated",
            UserEvent::AvatarChanged { .. } => "AvatarChanged",
            UserEvent::PlanChanged { .. } => "PlanChanged",
            UserEvent::UserErased { .. } => "UserErased",
            UserEvent::RoleChanged { .. } => "RoleChanged",
            UserEvent::UserDeactivated { .. } => "UserDeactivated",
            UserEvent::UserReactivated {} => "UserReactivated",
            UserEvent::EmailChanged { .. } => "EmailChanged",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            // 2.0: `reason` added (eventstore::upcast turns 1.0 into 2.0 on read)
            UserEvent::LoginFailed { .. } => "2.0",
            _ => "1.0",
        }
        .to_owned()
    }
}
