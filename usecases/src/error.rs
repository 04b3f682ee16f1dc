//! The one error type of the use cases. A refusal says what was refused (a field, a
//! conflict, a domain rule); a failure keeps its cause (`source()`), for whoever answers
//! to log it whole. The API maps it to its envelope in one place (`api::error`), the CLI
//! to its exit codes.

use aggregates::session::SessionError;
use aggregates::user::UserError;
use eventstore::crypto::CryptoError;
use eventstore::passwords::PasswordError;
use eventstore::{Cause, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value the caller sent is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// Refused because of what exists (a taken email, the last admin), or a race lost on
    /// every attempt.
    #[error("{0}")]
    Conflict(String),
    /// The change stands, but the read models did not show it in time.
    #[error("the read models have not reached the change yet")]
    NotCaughtUp,
    /// A limit of the user's plan is reached (the API's 402 `upgrade_required`). `day` is
    /// that of a daily limit.
    #[error("the {plan} plan allows {limit} {kind}{per}; upgrade for more", per = per_day(.day))]
    LimitReached {
        plan: String,
        kind: String,
        limit: u64,
        used: u64,
        day: Option<chrono::NaiveDate>,
    },
    /// A password given to confirm an action is wrong.
    #[error("the password is wrong")]
    InvalidCredentials,
    /// A presented key or token is not valid.
    #[error("the key is not valid")]
    TokenInvalid,
    /// The user aggregate refused.
    #[error(transparent)]
    User(UserError),
    /// The session aggregate refused.
    #[error(transparent)]
    Session(SessionError),
    /// PostgreSQL could not be used just now; trying again may help.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with its cause (its message and its sources are the cause's).
    #[error(transparent)]
    Failed(Cause),
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A failure with no error value (a broken expectation).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(Cause::msg(message))
    }

    /// A command's failure: the domain's refusal through `domain`, a race lost on every
    /// attempt as a conflict saying `changing` ("the account was changed ..."), the store's
    /// failures kept.
    pub fn command<E: std::error::Error>(
        e: CommandError<E>,
        changing: &str,
        domain: impl FnOnce(E) -> Self,
    ) -> Self {
        match e {
            CommandError::Domain(e) => domain(e),
            CommandError::Conflict => Self::Conflict(format!("{changing}; try again")),
            CommandError::Store(cause) => Self::Failed(cause),
            CommandError::Unavailable(cause) => Self::Unavailable(cause),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if eventstore::unavailable::is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Failed(Cause::new(e))
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Database(e) => e.into(),
            other => Self::Failed(Cause::new(other)),
        }
    }
}

impl From<PasswordError> for Error {
    fn from(e: PasswordError) -> Self {
        Self::Failed(Cause::new(e))
    }
}

impl From<CommandError<UserError>> for Error {
    fn from(e: CommandError<UserError>) -> Self {
        Self::command(e, "the account was changed by another request", Self::User)
    }
}

impl From<CommandError<SessionError>> for Error {
    fn from(e: CommandError<SessionError>) -> Self {
        Self::command(
            e,
            "the session was changed by another request",
            Self::Session,
        )
    }
}

fn per_day(day: &Option<chrono::NaiveDate>) -> &'static str {
    if day.is_some() {
        " a day"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("writing the batch")]
    struct Outer(#[source] Inner);

    #[test]
    fn a_store_failure_keeps_its_whole_chain_of_causes() {
        let e: Error = CommandError::<UserError>::Store(Cause::new(Outer(Inner))).into();
        assert!(matches!(e, Error::Failed(_)), "{e:?}");
        assert_eq!(e.to_string(), "writing the batch");
        let cause = e.source().expect("the cause is kept");
        assert_eq!(cause.to_string(), "connection reset");
    }

    #[test]
    fn refusals_say_what_was_refused_and_races_say_try_again() {
        let e: Error = CommandError::Domain(UserError::NotRegistered).into();
        assert!(matches!(e, Error::User(UserError::NotRegistered)));
        let e: Error = CommandError::<UserError>::Conflict.into();
        assert_eq!(
            e.to_string(),
            "the account was changed by another request; try again"
        );
        let limit = Error::LimitReached {
            plan: "free".into(),
            kind: "messages".into(),
            limit: 50,
            used: 50,
            day: chrono::NaiveDate::from_ymd_opt(2026, 12, 2),
        };
        assert_eq!(
            limit.to_string(),
            "the free plan allows 50 messages a day; upgrade for more"
        );
    }
}
