//! [`LlmClient`]: `POST {base}/chat/completions` in the OpenAI format, reading
//! `choices[0].message.content` and `usage.total_tokens`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ChatMessage, LlmConfig, LlmError};

/// The longest provider error message kept for logs (characters).
const DETAIL_MAX: usize = 300;

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    /// The provider's `usage.total_tokens` (prompt and reply); when a compatible server
    /// leaves `usage` out, an estimate of one token per 4 characters sent and received, so
    /// that the plan's token limit still holds.
    pub total_tokens: u64,
}

/// A client for one configured model. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    url: String,
    config: LlmConfig,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    total_tokens: u64,
}

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::Unavailable {
                status: None,
                retry_after: None,
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self { http, url, config })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Send `messages` (oldest first) and return the model's answer.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<Completion, LlmError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(self.config.api_key.expose())
            .json(&Request {
                model: &self.config.model,
                messages,
            })
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport_error)?;
        if !(200..300).contains(&status) {
            return Err(LlmError::from_status(
                status,
                retry_after,
                provider_message(&body),
            ));
        }
        let answer: Response = serde_json::from_slice(&body).map_err(|e| LlmError::Unreadable {
            detail: format!("not a chat completion: {e}"),
        })?;
        let content = answer
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| LlmError::Unreadable {
                detail: "no choices[0].message.content".to_owned(),
            })?;
        let total_tokens = match answer.usage {
            Some(u) => u.total_tokens,
            None => estimate_tokens(messages, &content),
        };
        Ok(Completion {
            content,
            total_tokens,
        })
    }
}

fn transport_error(e: reqwest::Error) -> LlmError {
    // connecting, timing out, a connection dropped mid-answer: all worth another try
    LlmError::Unavailable {
        status: None,
        retry_after: None,
        detail: e.to_string(),
    }
}

/// `error.message` of an OpenAI-style error body, or the start of the body.
fn provider_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    message.chars().take(DETAIL_MAX).collect()
}

fn estimate_tokens(messages: &[ChatMessage], reply: &str) -> u64 {
    let chars: usize = messages
        .iter()
        .map(|m| m.content.chars().count())
        .sum::<usize>()
        + reply.chars().count();
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_usage_is_estimated_at_four_characters_a_token() {
        let sent = [ChatMessage::user("12345678")];
        assert_eq!(estimate_tokens(&sent, "1234"), 3);
        assert_eq!(estimate_tokens(&[], ""), 1);
    }

    #[test]
    fn the_providers_message_is_read_from_an_openai_error_body() {
        assert_eq!(
            provider_message(br#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(provider_message(b"Bad Gateway"), "Bad Gateway");
        assert_eq!(provider_message(&[b'x'; 1000]).len(), DETAIL_MAX);
    }

    #[tokio::test]
    async fn an_unreachable_model_is_worth_retrying() {
        // a port nothing listens on
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let client = LlmClient::new(LlmConfig {
            base_url: format!("http://127.0.0.1:{port}/v1/"),
            api_key: crate::ApiKey::new("k"),
            model: "m".into(),
            timeout: Duration::from_secs(2),
        })
        .expect("client");
        assert_eq!(
            client.url,
            format!("http://127.0.0.1:{port}/v1/chat/completions")
        );
        let err = client
            .complete(&[ChatMessage::user("hi")])
            .await
            .expect_err("nothing listens");
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(err.reason(), "the model could not be reached");
    }
}
