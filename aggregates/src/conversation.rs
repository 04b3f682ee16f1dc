//! The `conversation` aggregate: a user's conversation and its messages, keyed by the
//! conversation id.
//!
//! The state keeps only what decisions need (owner, which messages exist, which are
//! deleted): titles and contents live in the events (sealed as personal data) and the read
//! models, not here, so a snapshot of this state holds nothing personal.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "conversation";

pub const ROLE_USER: &str = "user";
pub const ROLE_ASSISTANT: &str = "assistant";

/// Longest title and message (characters).
pub const TITLE_MAX: usize = 200;
pub const CONTENT_MAX: usize = 32_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationStarted {
        owner_id: Uuid,
        title: String,
    },
    ConversationRenamed {
        owner_id: Uuid,
        title: String,
    },
    ConversationDeleted {
        owner_id: Uuid,
    },
    MessagePosted {
        owner_id: Uuid,
        message_id: Uuid,
        /// `user`, or `assistant` for the assistant's replies.
        role: String,
        content: String,
        /// For an assistant reply: the message it answers.
        in_reply_to: Option<Uuid>,
    },
    MessageEdited {
        owner_id: Uuid,
        message_id: Uuid,
        content: String,
    },
    MessageDeleted {
        owner_id: Uuid,
        message_id: Uuid,
    },
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted",
            ConversationEvent::ConversationRenamed { .. } => "ConversationRenamed",
            ConversationEvent::ConversationDeleted { .. } => "ConversationDeleted",
            ConversationEvent::MessagePosted { .. } => "MessagePosted",
            ConversationEvent::MessageEdited { .. } => "MessageEdited",
            ConversationEvent::MessageDeleted { .. } => "MessageDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    StartConversation {
        owner_id: Uuid,
        title: String,
    },
    Rename {
        by: Uuid,
        title: String,
    },
    Delete {
        by: Uuid,
    },
    PostMessage {
        by: Uuid,
        message_id: Uuid,
        role: String,
        content: String,
        in_reply_to: Option<Uuid>,
    },
    EditMessage {
        by: Uuid,
        message_id: Uuid,
        content: String,
    },
    DeleteMessage {
        by: Uuid,
        message_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    /// Unknown, deleted, or someone else's: all look the same from outside.
    #[error("no such conversation")]
    NotFound,
    #[error("no such message")]
    MessageNotFound,
    #[error("the conversation exists already")]
    AlreadyStarted,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    pub role: String,
    pub deleted: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub owner_id: Option<Uuid>,
    pub deleted: bool,
    pub messages: BTreeMap<Uuid, MessageState>,
}

fn check_text(text: &str, field: &'static str, max: usize) -> Result<(), ConversationError> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(ConversationError::Invalid {
            field,
            message: "must not be empty, nor longer than allowed",
        });
    }
    Ok(())
}

impl Conversation {
    /// The owner, if `by` owns this live conversation.
    fn owned_by(&self, by: Uuid) -> Result<Uuid, ConversationError> {
        match self.owner_id {
            Some(owner) if owner == by && !self.deleted => Ok(owner),
            _ => Err(ConversationError::NotFound),
        }
    }

    fn live_message(&self, id: Uuid) -> Result<&MessageState, ConversationError> {
        self.messages
            .get(&id)
            .filter(|m| !m.deleted)
            .ok_or(ConversationError::MessageNotFound)
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ConversationCommand::StartConversation { owner_id, title } => {
                if self.owner_id.is_some() {
                    return Err(ConversationError::AlreadyStarted);
                }
                check_text(&title, "title", TITLE_MAX)?;
                sink.write(
                    ConversationEvent::ConversationStarted { owner_id, title },
                    self,
                )
                .await;
            }
            ConversationCommand::Rename { by, title } => {
                let owner_id = self.owned_by(by)?;
                check_text(&title, "title", TITLE_MAX)?;
                sink.write(
                    ConversationEvent::ConversationRenamed { owner_id, title },
                    self,
                )
                .await;
            }
            ConversationCommand::Delete { by } => {
                let owner_id = self.owned_by(by)?;
                sink.write(ConversationEvent::ConversationDeleted { owner_id }, self)
                    .await;
            }
            ConversationCommand::PostMessage {
                by,
                message_id,
                role,
                content,
                in_reply_to,
            } => {
                let owner_id = self.owned_by(by)?;
                check_text(&content, "content", CONTENT_MAX)?;
                if self.messages.contains_key(&message_id) {
                    // the same message twice (a retried command): nothing new happens
                    return Ok(());
                }
                if role == ROLE_ASSISTANT {
                    // one reply per message, ever
                    let replied = in_reply_to.is_none();
                    if replied {
                        return Err(ConversationError::Invalid {
                            field: "in_reply_to",
                            message: "an assistant reply answers a message",
                        });
                    }
                }
                sink.write(
                    ConversationEvent::MessagePosted {
                        owner_id,
                        message_id,
                        role,
                        content,
                        in_reply_to,
                    },
                    self,
                )
                .await;
            }
            ConversationCommand::EditMessage {
                by,
                message_id,
                content,
            } => {
                let owner_id = self.owned_by(by)?;
                check_text(&content, "content", CONTENT_MAX)?;
                if self.live_message(message_id)?.role != ROLE_USER {
                    return Err(ConversationError::Invalid {
                        field: "message",
                        message: "only your own messages can be edited",
                    });
                }
                sink.write(
                    ConversationEvent::MessageEdited {
                        owner_id,
                        message_id,
                        content,
                    },
                    self,
                )
                .await;
            }
            ConversationCommand::DeleteMessage { by, message_id } => {
                let owner_id = self.owned_by(by)?;
                self.live_message(message_id)?;
                sink.write(
                    ConversationEvent::MessageDeleted {
                        owner_id,
                        message_id,
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
            ConversationEvent::ConversationStarted { owner_id, .. } => {
                self.owner_id = Some(owner_id)
            }
            ConversationEvent::ConversationRenamed { .. } => {}
            ConversationEvent::ConversationDeleted { .. } => self.deleted = true,
            ConversationEvent::MessagePosted {
                message_id, role, ..
            } => {
                self.messages.insert(
                    message_id,
                    MessageState {
                        role,
                        deleted: false,
                    },
                );
            }
            ConversationEvent::MessageEdited { .. } => {}
            ConversationEvent::MessageDeleted { message_id, .. } => {
                if let Some(m) = self.messages.get_mut(&message_id) {
                    m.deleted = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn owner() -> Uuid {
        Uuid::from_u128(1)
    }

    fn started() -> ConversationEvent {
        ConversationEvent::ConversationStarted {
            owner_id: owner(),
            title: "Plans".into(),
        }
    }

    fn post(by: Uuid, id: u128) -> ConversationCommand {
        ConversationCommand::PostMessage {
            by,
            message_id: Uuid::from_u128(id),
            role: ROLE_USER.into(),
            content: "hello".into(),
            in_reply_to: None,
        }
    }

    #[tokio::test]
    async fn the_owner_posts_a_message() {
        TestFramework::<Conversation>::with(())
            .given(vec![started()])
            .when_async(post(owner(), 10))
            .await
            .then_expect_events(vec![ConversationEvent::MessagePosted {
                owner_id: owner(),
                message_id: Uuid::from_u128(10),
                role: ROLE_USER.into(),
                content: "hello".into(),
                in_reply_to: None,
            }]);
    }

    #[tokio::test]
    async fn someone_else_finds_nothing() {
        TestFramework::<Conversation>::with(())
            .given(vec![started()])
            .when_async(post(Uuid::from_u128(2), 10))
            .await
            .then_expect_error(ConversationError::NotFound);
    }

    #[tokio::test]
    async fn posting_the_same_message_again_changes_nothing() {
        let mut given = vec![started()];
        given.push(ConversationEvent::MessagePosted {
            owner_id: owner(),
            message_id: Uuid::from_u128(10),
            role: ROLE_USER.into(),
            content: "hello".into(),
            in_reply_to: None,
        });
        TestFramework::<Conversation>::with(())
            .given(given)
            .when_async(post(owner(), 10))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn a_deleted_conversation_is_gone() {
        TestFramework::<Conversation>::with(())
            .given(vec![
                started(),
                ConversationEvent::ConversationDeleted { owner_id: owner() },
            ])
            .when_async(post(owner(), 10))
            .await
            .then_expect_error(ConversationError::NotFound);
    }
}
