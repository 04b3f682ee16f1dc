//! The `user` aggregate: one per account, keyed by the user's id (a UUID).
//!
//! For now it knows registration; the rest of accounts arrives with the accounts issue.
//!
//! # Layout
//! - [`commands`]: what may be asked of a user.
//! - [`events`]: what happened to a user (past tense, versioned).
//! - this module: the aggregate's state, its rules ([`User::handle`]) and how events change it.

pub mod commands;
pub mod events;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::UserCommand;
pub use events::UserEvent;

/// The aggregate type as stored in the log and used in stream subjects.
pub const AGGREGATE_TYPE: &str = "user";

/// Roles a user can have.
pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";
/// The plan a new account starts on.
pub const DEFAULT_PLAN: &str = "free";

/// A user's state, rebuilt from its events before each command.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub registered: bool,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    pub plan: String,
    pub duplicate_registrations: u64,
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
}

impl Aggregate for User {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UserCommand::RegisterUser {
                user_id,
                email,
                password_hash,
                display_name,
            } => {
                if self.registered {
                    return Err(UserError::AlreadyRegistered);
                }
                if !commands::is_plausible_email(&email) {
                    return Err(UserError::Invalid {
                        field: "email",
                        message: "is not an email address",
                    });
                }
                let event = UserEvent::UserRegistered {
                    user_id,
                    email,
                    display_name,
                    password_hash,
                    role: ROLE_USER.to_owned(),
                    plan: DEFAULT_PLAN.to_owned(),
                };
                sink.write(event, self).await;
            }
            UserCommand::RecordDuplicateRegistration => {
                if !self.registered {
                    return Err(UserError::NotRegistered);
                }
                sink.write(UserEvent::DuplicateRegistrationAttempted {}, self)
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
            UserEvent::DuplicateRegistrationAttempted {} => {
                self.duplicate_registrations += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    use super::*;

    type UserTest = TestFramework<User>;

    fn register(id: Uuid) -> UserCommand {
        UserCommand::RegisterUser {
            user_id: id,
            email: "ada@example.com".into(),
            password_hash: None,
            display_name: Some("Ada".into()),
        }
    }

    fn registered(id: Uuid) -> UserEvent {
        UserEvent::UserRegistered {
            user_id: id,
            email: "ada@example.com".into(),
            display_name: Some("Ada".into()),
            password_hash: None,
            role: ROLE_USER.into(),
            plan: DEFAULT_PLAN.into(),
        }
    }

    #[tokio::test]
    async fn registering_a_new_user_records_user_registered() {
        let id = Uuid::now_v7();
        UserTest::with(())
            .given_no_previous_events()
            .when_async(register(id))
            .await
            .then_expect_events(vec![registered(id)]);
    }

    #[tokio::test]
    async fn registering_twice_is_refused() {
        let id = Uuid::now_v7();
        UserTest::with(())
            .given(vec![registered(id)])
            .when_async(register(id))
            .await
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[tokio::test]
    async fn a_malformed_email_is_refused() {
        let id = Uuid::now_v7();
        UserTest::with(())
            .given_no_previous_events()
            .when_async(UserCommand::RegisterUser {
                user_id: id,
                email: "not-an-email".into(),
                password_hash: None,
                display_name: None,
            })
            .await
            .then_expect_error(UserError::Invalid {
                field: "email",
                message: "is not an email address",
            });
    }

    #[tokio::test]
    async fn a_duplicate_registration_is_recorded_on_the_existing_account() {
        let id = Uuid::now_v7();
        UserTest::with(())
            .given(vec![registered(id)])
            .when_async(UserCommand::RecordDuplicateRegistration)
            .await
            .then_expect_events(vec![UserEvent::DuplicateRegistrationAttempted {}]);
    }

    #[tokio::test]
    async fn a_duplicate_registration_needs_an_account() {
        UserTest::with(())
            .given_no_previous_events()
            .when_async(UserCommand::RecordDuplicateRegistration)
            .await
            .then_expect_error(UserError::NotRegistered);
    }
}
