//! Commands of the `user` aggregate (imperative names).

use uuid::Uuid;

/// What may be asked of a user. Secrets never travel in a command: a password arrives
/// already hashed (argon2id, by the write side), so the command can be logged and retried.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Open an account. `email` is already normalised (trimmed, lower case) and claimed
    /// for this user id by the write side, which keeps one account per email.
    RegisterUser {
        user_id: Uuid,
        email: String,
        password_hash: Option<String>,
        display_name: Option<String>,
    },
    /// Someone tried to register with this account's email; the owner is told by mail.
    RecordDuplicateRegistration,
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
