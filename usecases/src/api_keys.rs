//! Admin API keys (`X-Admin-Key`): made, revoked, listed and checked. A key is
//! `chk_<32 hex: its id>_<secret>`; the log keeps only the SHA-256 of the secret (in the
//! `api_key` aggregate's `ApiKeyCreated`), and a key is checked by loading its aggregate
//! from the event store, so a revocation is effective at once in every process.

use aggregates::api_key::{ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyEvent};
use aggregates::{EventMetadata, LogCursor};
use chrono::{DateTime, Utc};
use eventstore::secrets::random_token;
use eventstore::CommandError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Core, Error};

/// Prefix of every admin API key.
pub const API_KEY_PREFIX: &str = "chk_";

/// A new admin API key: its id and the key itself (shown once, never stored).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    /// `chk_<id>_<secret>`: send it as `X-Admin-Key`. Shown only now.
    pub key: String,
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Make an admin API key.
pub async fn create_api_key(
    state: &Core,
    name: &str,
    created_by: &str,
    meta: &EventMetadata,
) -> Result<NewApiKey, Error> {
    let id = Uuid::now_v7();
    let secret = random_token();
    let command = ApiKeyCommand::CreateApiKey {
        name: name.to_owned(),
        secret_hash: secret_hash(&secret),
        created_by: created_by.to_owned(),
        now: state.clock.now(),
    };
    state
        .api_keys
        .execute(&id.to_string(), command, meta)
        .await?;
    Ok(NewApiKey {
        id,
        name: name.trim().to_owned(),
        key: format!("{API_KEY_PREFIX}{}_{secret}", id.simple()),
    })
}

/// Revoke a key: it stops working at once (keys are checked against the event store).
pub async fn revoke_api_key(
    state: &Core,
    id: Uuid,
    revoked_by: &str,
    meta: &EventMetadata,
) -> Result<Option<LogCursor>, Error> {
    let command = ApiKeyCommand::RevokeApiKey {
        revoked_by: revoked_by.to_owned(),
        now: state.clock.now(),
    };
    let outcome = state
        .api_keys
        .execute(&id.to_string(), command, meta)
        .await?;
    Ok(outcome.cursor)
}

impl From<CommandError<ApiKeyError>> for Error {
    fn from(e: CommandError<ApiKeyError>) -> Self {
        Error::command(e, "the key changed meanwhile", |e| match e {
            ApiKeyError::NotFound => Error::NotFound("no such API key".into()),
            ApiKeyError::BadName => Error::invalid("name", "must be 1 to 100 printable characters"),
            other => Error::Conflict(other.to_string()),
        })
    }
}

/// Check a presented `X-Admin-Key`; the key's id when it is valid and not revoked.
pub async fn verify_api_key(state: &Core, presented: &str) -> Result<Uuid, Error> {
    let (id, secret) = parse_api_key(presented).ok_or(Error::TokenInvalid)?;
    let key: ApiKey = state.api_keys.load(&id.to_string()).await?;
    let expected = key.secret_hash.as_bytes();
    let given = secret_hash(secret);
    let same = expected.len() == given.len()
        && expected
            .iter()
            .zip(given.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if key.is_active() && same {
        Ok(id)
    } else {
        Err(Error::TokenInvalid)
    }
}

fn parse_api_key(presented: &str) -> Option<(Uuid, &str)> {
    let rest = presented.trim().strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(32)?;
    let secret = secret.strip_prefix('_')?;
    if secret.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((Uuid::parse_str(id).ok()?, secret))
}

/// An admin API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last caused an event.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Every admin API key, oldest first, from the log.
pub async fn list_api_keys(state: &Core) -> Result<Vec<ApiKeyInfo>, Error> {
    // each key on its own: a transaction open elsewhere must not hide a revocation
    let events =
        eventstore::log::read_aggregate_type(&state.pool, aggregates::api_key::AGGREGATE_TYPE)
            .await?;
    let mut keys: Vec<ApiKeyInfo> = vec![];
    for event in events {
        let Ok(id) = event.aggregate_id.parse::<Uuid>() else {
            continue;
        };
        match serde_json::from_value::<ApiKeyEvent>(event.payload) {
            Ok(ApiKeyEvent::ApiKeyCreated {
                name,
                created_by,
                created_at,
                ..
            }) => keys.push(ApiKeyInfo {
                id,
                name,
                created_by,
                created_at: Some(created_at),
                revoked_at: None,
                last_used_at: None,
            }),
            Ok(ApiKeyEvent::ApiKeyRevoked { revoked_at, .. }) => {
                if let Some(k) = keys.iter_mut().find(|k| k.id == id) {
                    k.revoked_at = Some(revoked_at);
                }
            }
            Err(_) => {}
        }
    }
    // when each key last caused an event: one query for all of them
    let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
    let last = eventstore::log::last_acted(&state.pool, &ids).await?;
    for k in &mut keys {
        let id = k.id.to_string();
        k.last_used_at = last.iter().find(|(a, _)| *a == id).and_then(|(_, t)| *t);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_own_shape() {
        let id = Uuid::from_u128(42);
        let key = format!("chk_{}_abc_def-1", id.simple());
        assert_eq!(parse_api_key(&key), Some((id, "abc_def-1")));
        for bad in [
            "",
            "chk_",
            "chk_123_abc",
            &format!("chk_{}", id.simple()),
            &format!("chk_{}_", id.simple()),
            &format!("xyz_{}_abc", id.simple()),
            "chk_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz_abc",
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad}");
        }
    }
}
