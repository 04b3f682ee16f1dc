//! The `conversation` aggregate: a user's conversation and its messages, keyed by the
//! conversation id.
//!
//! The state keeps only what decisions need (owner, which messages exist, which are
//! deleted, which user messages the assistant has dealt with): titles and contents live in
//! the events (sealed as personal data) and the read models, not here, so a snapshot of
//! this state holds nothing personal.
//!
//! The assistant answers a user message at most once, and this aggregate is where that
//! holds: a user message with a reply or a recorded failure ([`Conversation::answered`])
//! gets no second reply and no failure, whoever asks (a redelivered stream message, the
//! `/chat` route, two workers racing). The reply's id is derived from the message's
//! ([`reply_id`]), so the same reply posted twice is also one reply.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AGGREGATE_TYPE: &str = "conversation";

pub const ROLE_USER: &str = "user";
pub const ROLE_ASSISTANT: &str = "assistant";

/// Read models show a recorded assistant failure as a message of this role (never posted:
/// it comes from [`ConversationEvent::AssistantFailed`]).
pub const ROLE_ASSISTANT_ERROR: &str = "assistant_error";

/// Longest failure reason (characters).
pub const REASON_MAX: usize = 500;

/// The namespace of [`reply_id`] (a fixed random UUID: never change it).
const REPLY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_5e0a_93b4_4f8e_a2d7_0f51_c8e3_9b24);

/// The id of the assistant's reply to `message_id` (UUID v5 of it): whoever posts the reply,
/// however often, it is the same message. Read models also give a recorded failure this id.
pub fn reply_id(message_id: Uuid) -> Uuid {
    Uuid::new_v5(&REPLY_NAMESPACE, message_id.as_bytes())
}

/// Longest title and message (characters).
pub const TITLE_MAX: usize = 200;
pub const CONTENT_MAX: usize = 32_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// The assistant gave up on answering a user message (`message_id`); no reply will
    /// come. `reason` is short and from a fixed vocabulary (never the prompt or provider
    /// output): "tokens limit reached", "the model refused the request (HTTP 400)", ...
    AssistantFailed {
        owner_id: Uuid,
        message_id: Uuid,
        reason: String,
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
            ConversationEvent::AssistantFailed { .. } => "AssistantFailed",
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
    /// A user's prompt and the assistant's reply, appended together (`POST /api/v1/chat`):
    /// a stream consumer that sees the prompt finds it answered already.
    PostExchange {
        by: Uuid,
        prompt_id: Uuid,
        prompt: String,
        /// Normally [`reply_id`]`(prompt_id)`.
        reply_id: Uuid,
        reply: String,
    },
    /// The assistant gives up on `message_id` (a user message) with `reason`.
    RecordAssistantFailure {
        by: Uuid,
        message_id: Uuid,
        reason: String,
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
    /// User messages with an assistant reply or a recorded failure: answered for good.
    /// No `#[serde(default)]` on purpose: a snapshot taken before this field existed does
    /// not deserialise, so the command bus ignores it and replays the whole log instead.
    pub answered: BTreeSet<Uuid>,
}

fn check_text(text: &str, field: &'static str, max: usize) -> Result<(), ConversationError> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(ConversationError::Invalid {
            field,
            message: "must not be empty, nor longer than allowed",
        });
    }
    // Titles and reasons are one line; contents, prompts and replies may span lines. NUL is
    // refused in both (see `crate::text`): the read models could not store it.
    let checked = match field {
        "title" | "reason" => crate::text::check_line(text),
        _ => crate::text::check_any(text),
    };
    checked.map_err(|message| ConversationError::Invalid { field, message })
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

    /// A message of this conversation the assistant may answer (a user's, deleted or not).
    fn user_message(&self, id: Uuid) -> Result<(), ConversationError> {
        match self.messages.get(&id) {
            Some(m) if m.role == ROLE_USER => Ok(()),
            Some(_) => Err(ConversationError::Invalid {
                field: "in_reply_to",
                message: "the assistant answers user messages only",
            }),
            None => Err(ConversationError::MessageNotFound),
        }
    }

    /// Whether the assistant has dealt with user message `id` (a reply or a failure).
    pub fn is_answered(&self, id: Uuid) -> bool {
        self.answered.contains(&id)
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
                if role != ROLE_USER && role != ROLE_ASSISTANT {
                    return Err(ConversationError::Invalid {
                        field: "role",
                        message: "must be user or assistant",
                    });
                }
                if role == ROLE_ASSISTANT {
                    let Some(question) = in_reply_to else {
                        return Err(ConversationError::Invalid {
                            field: "in_reply_to",
                            message: "an assistant reply answers a message",
                        });
                    };
                    self.user_message(question)?;
                    if self.is_answered(question) {
                        // one reply per message, ever: a second one (another id, or after
                        // a recorded failure) changes nothing
                        return Ok(());
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
            ConversationCommand::PostExchange {
                by,
                prompt_id,
                prompt,
                reply_id,
                reply,
            } => {
                let owner_id = self.owned_by(by)?;
                check_text(&prompt, "prompt", CONTENT_MAX)?;
                check_text(&reply, "reply", CONTENT_MAX)?;
                if self.messages.contains_key(&prompt_id) {
                    // the same exchange twice (a retried command)
                    return Ok(());
                }
                if prompt_id == reply_id || self.messages.contains_key(&reply_id) {
                    return Err(ConversationError::Invalid {
                        field: "reply_id",
                        message: "must be a new message id",
                    });
                }
                // one commit: whoever reads the prompt from the log finds it answered
                sink.write(
                    ConversationEvent::MessagePosted {
                        owner_id,
                        message_id: prompt_id,
                        role: ROLE_USER.into(),
                        content: prompt,
                        in_reply_to: None,
                    },
                    self,
                )
                .await;
                sink.write(
                    ConversationEvent::MessagePosted {
                        owner_id,
                        message_id: reply_id,
                        role: ROLE_ASSISTANT.into(),
                        content: reply,
                        in_reply_to: Some(prompt_id),
                    },
                    self,
                )
                .await;
            }
            ConversationCommand::RecordAssistantFailure {
                by,
                message_id,
                reason,
            } => {
                let owner_id = self.owned_by(by)?;
                check_text(&reason, "reason", REASON_MAX)?;
                self.user_message(message_id)?;
                if self.is_answered(message_id) {
                    // answered (or given up on) already: a late failure changes nothing
                    return Ok(());
                }
                sink.write(
                    ConversationEvent::AssistantFailed {
                        owner_id,
                        message_id,
                        reason,
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
                message_id,
                role,
                in_reply_to,
                ..
            } => {
                if let Some(question) = in_reply_to {
                    self.answered.insert(question);
                }
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
            ConversationEvent::AssistantFailed { message_id, .. } => {
                self.answered.insert(message_id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
