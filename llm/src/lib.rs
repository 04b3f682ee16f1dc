//! Chronicle's client for an OpenAI-compatible chat-completions API: the model behind the
//! assistant. The API (`POST /api/v1/chat`, synchronous) and the assistant worker (replies
//! to messages from the event stream) both talk to the model through [`LlmClient`]; this
//! crate sits beside them so that neither depends on the other (docs/ARCHITECTURE.md).
//!
//! It knows HTTP and the wire format only: no database, no events, no plans. What to send
//! (a conversation's last messages) is the caller's choice, shaped by [`conversation`].
//!
//! # Layout
//! - [`LlmConfig`]: where the model is, the key (never printed), the model name, the timeout.
//! - [`client`]: [`LlmClient`], one `POST {base}/chat/completions` per call.
//! - [`error`]: [`LlmError`], split into what is worth retrying and what is not, each with a
//!   short reason that may be recorded in the log (never the prompt or the provider's text).

pub mod client;
pub mod error;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{Completion, LlmClient};
pub use error::LlmError;

/// How many messages of a conversation go to the model (the most recent ones).
pub const HISTORY_MAX: usize = 20;

/// The chat roles sent to the model.
pub const ROLE_USER: &str = "user";
pub const ROLE_ASSISTANT: &str = "assistant";

/// The provider's API key. Never printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Where the model is and how to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// An OpenAI-compatible base URL such as `https://api.openai.com/v1`; requests go to
    /// `{base_url}/chat/completions`. No trailing slash.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: ApiKey,
    /// The `model` of every request (`gpt-4o-mini` by default).
    pub model: String,
    /// The whole request, connecting included.
    pub timeout: Duration,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: ROLE_USER.to_owned(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: ROLE_ASSISTANT.to_owned(),
            content: content.into(),
        }
    }
}

/// The messages to send, from a conversation's `(role, content)` pairs, oldest first: only
/// user and assistant messages with content, the last [`HISTORY_MAX`] of them.
pub fn conversation<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<ChatMessage> {
    let mut kept: Vec<ChatMessage> = messages
        .into_iter()
        .filter(|(role, content)| {
            (*role == ROLE_USER || *role == ROLE_ASSISTANT) && !content.trim().is_empty()
        })
        .map(|(role, content)| ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        })
        .collect();
    let extra = kept.len().saturating_sub(HISTORY_MAX);
    kept.drain(..extra);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_never_printed() {
        let config = LlmConfig {
            base_url: "https://api.example.com/v1".into(),
            api_key: ApiKey::new("sk-secret"),
            model: "gpt-4o-mini".into(),
            timeout: Duration::from_secs(30),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn the_conversation_keeps_the_last_user_and_assistant_messages() {
        let owned: Vec<(String, String)> = (0..30)
            .map(|i| {
                let role = match i % 3 {
                    0 => "user",
                    1 => "assistant",
                    _ => "assistant_error",
                };
                (role.to_owned(), format!("m{i}"))
            })
            .chain([("user".to_owned(), "  ".to_owned())])
            .collect();
        let sent = conversation(owned.iter().map(|(r, c)| (r.as_str(), c.as_str())));
        assert_eq!(sent.len(), HISTORY_MAX);
        assert!(sent.iter().all(|m| m.role != "assistant_error"));
        assert_eq!(sent.last().map(|m| m.content.as_str()), Some("m28"));
        assert_eq!(sent.first().map(|m| m.content.as_str()), Some("m0"));
    }
}
