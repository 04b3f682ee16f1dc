//! Events of the `user` aggregate (past tense, each with a version).

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to a user. Stored as `{"<EventType>": {fields}}` in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Someone tried to register with this account's email.
    DuplicateRegistrationAttempted {},
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::DuplicateRegistrationAttempted {} => "DuplicateRegistrationAttempted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "1.0",
            UserEvent::DuplicateRegistrationAttempted {} => "1.0",
        }
        .to_owned()
    }
}
