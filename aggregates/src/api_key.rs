//! The `api_key` aggregate: an admin API key, keyed by the key's id (a UUID).
//!
//! The key itself (`chk_<id>_<secret>`) is shown once when it is made; the log keeps only
//! the SHA-256 of its secret part, sealed with the system key (`catalog::SECRET_FIELDS`; the
//! aggregate sees it opened). A key is checked by loading this aggregate from the
//! event store, so a revocation stops the key at once, in every process.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const AGGREGATE_TYPE: &str = "api_key";

/// The role in event metadata of requests made with an API key (the key id is the actor).
pub const ROLE_API_KEY: &str = "api_key";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum ApiKeyEvent {
    ApiKeyCreated {
        /// What the key is for, as its maker named it.
        name: String,
        /// Hex SHA-256 of the key's secret part.
        secret_hash: String,
        /// Who made it (for example `cli:alice`).
        created_by: String,
        created_at: DateTime<Utc>,
    },
    ApiKeyRevoked {
        revoked_by: String,
        revoked_at: DateTime<Utc>,
    },
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            ApiKeyEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            ApiKeyEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    CreateApiKey {
        name: String,
        secret_hash: String,
        created_by: String,
        now: DateTime<Utc>,
    },
    RevokeApiKey {
        revoked_by: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("no such API key")]
    NotFound,
    #[error("the API key exists already")]
    AlreadyCreated,
    #[error("the API key is revoked already")]
    AlreadyRevoked,
    #[error("name: must be 1 to 100 printable characters")]
    BadName,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub created: bool,
    pub name: String,
    pub secret_hash: String,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key may be used.
    pub fn is_active(&self) -> bool {
        self.created && self.revoked_at.is_none()
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ApiKeyCommand::CreateApiKey {
                name,
                secret_hash,
                created_by,
                now,
            } => {
                if self.created {
                    return Err(ApiKeyError::AlreadyCreated);
                }
                let name = name.trim().to_owned();
                if name.is_empty()
                    || name.chars().count() > 100
                    || name.chars().any(char::is_control)
                {
                    return Err(ApiKeyError::BadName);
                }
                sink.write(
                    ApiKeyEvent::ApiKeyCreated {
                        name,
                        secret_hash,
                        created_by,
                        created_at: now,
                    },
                    self,
                )
                .await;
            }
            ApiKeyCommand::RevokeApiKey { revoked_by, now } => {
                if !self.created {
                    return Err(ApiKeyError::NotFound);
                }
                if self.revoked_at.is_some() {
                    return Err(ApiKeyError::AlreadyRevoked);
                }
                sink.write(
                    ApiKeyEvent::ApiKeyRevoked {
                        revoked_by,
                        revoked_at: now,
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
            ApiKeyEvent::ApiKeyCreated {
                name,
                secret_hash,
                created_by,
                created_at,
            } => {
                self.created = true;
                self.name = name;
                self.secret_hash = secret_hash;
                self.created_by = created_by;
                self.created_at = Some(created_at);
            }
            ApiKeyEvent::ApiKeyRevoked { revoked_at, .. } => self.revoked_at = Some(revoked_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn created() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyCreated {
            name: "billing sync".into(),
            secret_hash: "ab".repeat(32),
            created_by: "cli:ops".into(),
            created_at: now(),
        }
    }

    #[tokio::test]
    async fn a_key_is_created_once_and_revoked_once() {
        TestFramework::<ApiKey>::with(())
            .given_no_previous_events()
            .when_async(ApiKeyCommand::CreateApiKey {
                name: " billing sync ".into(),
                secret_hash: "ab".repeat(32),
                created_by: "cli:ops".into(),
                now: now(),
            })
            .await
            .then_expect_events(vec![created()]);
        TestFramework::<ApiKey>::with(())
            .given(vec![created()])
            .when_async(ApiKeyCommand::RevokeApiKey {
                revoked_by: "cli:ops".into(),
                now: now(),
            })
            .await
            .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked {
                revoked_by: "cli:ops".into(),
                revoked_at: now(),
            }]);
        let revoked = ApiKeyEvent::ApiKeyRevoked {
            revoked_by: "x".into(),
            revoked_at: now(),
        };
        TestFramework::<ApiKey>::with(())
            .given(vec![created(), revoked])
            .when_async(ApiKeyCommand::RevokeApiKey {
                revoked_by: "cli:ops".into(),
                now: now(),
            })
            .await
            .then_expect_error(ApiKeyError::AlreadyRevoked);
        TestFramework::<ApiKey>::with(())
            .given_no_previous_events()
            .when_async(ApiKeyCommand::CreateApiKey {
                name: "\u{7}".into(),
                secret_hash: String::new(),
                created_by: String::new(),
                now: now(),
            })
            .await
            .then_expect_error(ApiKeyError::BadName);
    }
}
