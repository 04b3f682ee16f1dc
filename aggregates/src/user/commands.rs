//! Commands of the `user` aggregate (imperative names).
//!
//! Commands carry everything a decision needs from outside as data: the time (`now`, so
//! tests can move the clock), fresh nonces, password hashes (never raw passwords), and the
//! outcome of checks that need IO or a secret (`password_ok`, `code_ok`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::SecretMethod;

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Open an account. `email` is normalised and claimed for this id by the write side.
    /// `verified` accounts (seeded admins, admin-created users) need no verification mail;
    /// others get one derived from `verification_nonce`.
    RegisterUser {
        user_id: Uuid,
        email: String,
        password_hash: Option<String>,
        display_name: Option<String>,
        role: String,
        /// The plan to start on (configuration's default).
        plan: String,
        verified: bool,
        verification_nonce: String,
        /// An admin's invitation: instead of a verification mail, a mail to choose a first
        /// password (derived from `verification_nonce`), which also verifies the address.
        invitation: bool,
        now: DateTime<Utc>,
    },
    /// Someone tried to register with this account's email.
    RecordDuplicateRegistration,
    /// Send a new verification mail (the old link and code stop working).
    RequestEmailVerification { nonce: String, now: DateTime<Utc> },
    /// A verification link or code for `nonce` was presented (its HMAC already checked).
    VerifyEmail {
        nonce: String,
        method: SecretMethod,
        now: DateTime<Utc>,
    },
    /// A verification code was presented; `code_ok` says whether it matched.
    VerifyEmailCode { code_ok: bool, now: DateTime<Utc> },
    /// A sign-in; `password_ok` is the argon2 verification against the stored hash.
    Login {
        password_ok: bool,
        session_id: Uuid,
        now: DateTime<Utc>,
    },
    RequestPasswordReset {
        nonce: String,
        now: DateTime<Utc>,
        /// An admin's invitation to choose a first password (longer-lived, another mail).
        invitation: bool,
    },
    /// A reset link for `nonce` (HMAC checked) with the new password's hash.
    ResetPassword {
        nonce: String,
        password_hash: String,
        now: DateTime<Utc>,
    },
    /// A reset code was presented; `code_ok` says whether it matched.
    ResetPasswordWithCode {
        code_ok: bool,
        password_hash: String,
        now: DateTime<Utc>,
    },
    /// The owner changed the password (the current one was verified).
    ChangePassword { password_hash: String },
    UpdateProfile {
        display_name: Option<String>,
        locale: Option<String>,
        timezone: Option<String>,
    },
    ChangeAvatar {
        content_type: String,
        sha256: String,
        size: u64,
    },
    /// Move to another plan (the write side checked it exists).
    ChangePlan { plan: String },
    /// Erase the account (the owner's password, or an admin, was checked already).
    EraseUser { requested_by: String },
    /// An admin gives the account another role (`user` or `admin`).
    ChangeRole { role: String },
    /// An admin switches the account off: it cannot sign in, and the write side revokes
    /// every session.
    Deactivate { reason: Option<String> },
    /// An admin switches a deactivated account back on.
    Reactivate,
    /// An admin moves the account to another email (claimed by the write side); the new
    /// address must be verified again (a mail derived from `nonce`).
    ChangeEmail {
        email: String,
        nonce: String,
        now: DateTime<Utc>,
    },
}

/// A cheap shape check: one `@`, something before it, a dot in the domain, no spaces.
/// Deliverability is proven by the verification mail, not here.
pub fn is_plausible_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

/// The form an email is kept and compared in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_emails_pass_and_others_do_not() {
        assert!(is_plausible_email("ada@example.com"));
        assert!(is_plausible_email("a.b+c@sub.example.org"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised_to_trimmed_lower_case() {
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }
}
