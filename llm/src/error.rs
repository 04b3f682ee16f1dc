//! Why a call to the model failed, and whether trying again may help.
//!
//! `Display` and [`LlmError::reason`] never carry the prompt, the key, or the provider's
//! own words (which could echo the prompt): the reason is recorded in the event log, which
//! is kept for ever. The provider's error message is kept in `detail`, for logs only.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Worth retrying: the model could not be reached, timed out, was rate limited (429)
    /// or failed on its side (5xx).
    #[error("{}", self.reason())]
    Unavailable {
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// For logs only.
        detail: String,
    },
    /// Not worth retrying: the provider refused the request (a 4xx other than 429: a bad
    /// key, an unknown model, a prompt too long, content refused).
    #[error("{}", self.reason())]
    Refused { status: u16, detail: String },
    /// The provider answered 2xx with something that is not a chat completion, or with no
    /// content.
    #[error("{}", self.reason())]
    Unreadable { detail: String },
}

impl LlmError {
    pub fn is_transient(&self) -> bool {
        matches!(self, LlmError::Unavailable { .. })
    }

    /// A short reason from a fixed vocabulary, fit for the event log.
    pub fn reason(&self) -> String {
        match self {
            LlmError::Unavailable {
                status: Some(429), ..
            } => "the model is rate limited (HTTP 429)".to_owned(),
            LlmError::Unavailable {
                status: Some(status),
                ..
            } => format!("the model is unavailable (HTTP {status})"),
            LlmError::Unavailable { status: None, .. } => {
                "the model could not be reached".to_owned()
            }
            LlmError::Refused { status, .. } => {
                format!("the model refused the request (HTTP {status})")
            }
            LlmError::Unreadable { .. } => "the model's answer could not be read".to_owned(),
        }
    }

    /// More about the failure, for logs (the provider's message, cut short).
    pub fn detail(&self) -> &str {
        match self {
            LlmError::Unavailable { detail, .. }
            | LlmError::Refused { detail, .. }
            | LlmError::Unreadable { detail } => detail,
        }
    }

    /// What an answer with a failure status means.
    pub fn from_status(status: u16, retry_after: Option<Duration>, detail: String) -> Self {
        if status == 429 || status == 408 || status >= 500 {
            LlmError::Unavailable {
                status: Some(status),
                retry_after,
                detail,
            }
        } else {
            LlmError::Refused { status, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_timeouts_and_server_errors_are_worth_retrying_other_4xx_are_not() {
        for status in [408, 429, 500, 502, 503] {
            assert!(
                LlmError::from_status(status, None, String::new()).is_transient(),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 413, 422] {
            assert!(
                !LlmError::from_status(status, None, String::new()).is_transient(),
                "{status}"
            );
        }
    }

    #[test]
    fn reasons_never_carry_the_providers_words() {
        let e = LlmError::from_status(400, None, "your prompt 'secret plans' is bad".into());
        assert_eq!(e.reason(), "the model refused the request (HTTP 400)");
        assert!(!e.to_string().contains("secret"));
        assert_eq!(e.detail(), "your prompt 'secret plans' is bad");
    }
}
