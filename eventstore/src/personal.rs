//! Which values in events are personal data, whose they are, and sealing and opening them.
//!
//! The policy is by field name, so a new event is covered the moment it uses one of these
//! names (err on the side of sealing): payload fields in [`PERSONAL_FIELDS`] and metadata
//! keys in [`PERSONAL_METADATA`], when they are strings. The user they belong to (the
//! subject) is the aggregate itself for `user` events, else the payload's `user_id`, else
//! the acting user in the metadata.
//!
//! Secrets' derivatives (payload fields in [`SECRET_FIELDS`]: password hashes, refresh-token
//! hashes, nonces, API keys' secret hashes) are sealed too, always, whoever acts: with the
//! key of the user who owns them ([`secret_owner`]), so that erasure destroys them with
//! the rest, or with the system key ([`crate::crypto::SYSTEM_KEY_ID`]) when no user does.
//! Their owner is never the acting user: an admin who revokes a session does not own its
//! token hashes.
//!
//! Opening needs no field names: every `enc:v1:` string names its key, and a value that is
//! not sealed (a row written before sealing began) is read as it is.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::crypto::{is_sealed, CryptoError, KeyStore, ERASED};

/// Payload fields and metadata keys that hold personal data, and payload fields that hold
/// secrets' derivatives: the lists are kept with the event catalogue in the pure
/// `aggregates` crate (which documents them as sealed).
pub use aggregates::catalog::{PERSONAL_FIELDS, PERSONAL_METADATA, SECRET_FIELDS};

/// Whose key seals an event's secrets' derivatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOwner {
    /// The user's: the `user` aggregate itself, or the user the payload names.
    User(Uuid),
    /// Nobody's: the system key (admin API keys belong to no user).
    System,
    /// The event names no user (a session's later events): the subject of the aggregate's
    /// earlier events in the log decides, else the system key.
    Aggregate,
}

/// Whose key seals the secrets' derivatives of an event (see [`SecretOwner`]).
pub fn secret_owner(aggregate_type: &str, aggregate_id: &str, payload: &Value) -> SecretOwner {
    if aggregate_type == aggregates::api_key::AGGREGATE_TYPE {
        return SecretOwner::System;
    }
    if aggregate_type == aggregates::user::AGGREGATE_TYPE {
        return aggregate_id
            .parse()
            .map_or(SecretOwner::System, SecretOwner::User);
    }
    let inner = payload.as_object().and_then(|o| o.values().next());
    ["user_id", "owner_id"]
        .iter()
        .find_map(|k| {
            inner
                .and_then(|i| i.get(*k))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
        })
        .map_or(SecretOwner::Aggregate, SecretOwner::User)
}

/// Does the payload hold a secret's derivative that is not sealed yet?
pub fn has_open_secrets(payload: &Value) -> bool {
    payload
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_object)
        .is_some_and(|body| {
            SECRET_FIELDS.iter().any(|name| {
                body.get(*name)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !is_sealed(s))
            })
        })
}

/// The subject of an aggregate's earlier events, as the log recorded it
/// (`events.subject_id`, set at insert from the event or the aggregate's first event).
/// Run it on the connection of the transaction that appends, so that its own earlier
/// inserts count.
pub async fn stored_subject<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Uuid>, CryptoError> {
    let subject: Option<Uuid> = sqlx::query_scalar(
        "select subject_id from events \
         where aggregate_type = $1 and aggregate_id = $2 and subject_id is not null \
         order by sequence limit 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(executor)
    .await?;
    Ok(subject)
}

/// The user whose personal data an event carries: the `user` aggregate itself, else the
/// payload's `user_id` or `owner_id`, else the acting user.
pub fn subject(
    aggregate_type: &str,
    aggregate_id: &str,
    payload: &Value,
    metadata: &Value,
) -> Option<Uuid> {
    if aggregate_type == aggregates::user::AGGREGATE_TYPE {
        return aggregate_id.parse().ok();
    }
    let inner = payload.as_object().and_then(|o| o.values().next());
    let from_payload = ["user_id", "owner_id"].iter().find_map(|k| {
        inner
            .and_then(|i| i.get(*k))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    });
    from_payload.or_else(|| {
        let role = metadata
            .get("actor_role")
            .and_then(Value::as_str)
            .unwrap_or("");
        if role == "user" || role == "admin" {
            metadata
                .get("actor_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
        } else {
            None
        }
    })
}

async fn seal_in(
    keys: &KeyStore,
    user: Uuid,
    object: &mut serde_json::Map<String, Value>,
    names: &[&str],
) -> Result<(), CryptoError> {
    for name in names {
        if let Some(Value::String(s)) = object.get_mut(*name) {
            if !is_sealed(s) {
                *s = keys
                    .seal(user, s)
                    .await?
                    .unwrap_or_else(|| ERASED.to_owned());
            }
        }
    }
    Ok(())
}

async fn seal_secrets_in(
    keys: &KeyStore,
    owner: Option<Uuid>,
    object: &mut serde_json::Map<String, Value>,
) -> Result<(), CryptoError> {
    match owner {
        Some(user) => seal_in(keys, user, object, SECRET_FIELDS).await,
        None => {
            for name in SECRET_FIELDS {
                if let Some(Value::String(s)) = object.get_mut(*name) {
                    if !is_sealed(s) {
                        *s = keys.seal_for_system(s).await?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Seal the personal values and the secrets' derivatives of one event (payload
/// `{"Type": {...}}` and metadata) in place.
///
/// `aggregate_subject` is the subject of the aggregate's earlier events
/// ([`stored_subject`]), needed only when the event names no user itself
/// ([`SecretOwner::Aggregate`]) and holds secrets ([`has_open_secrets`]); without one the
/// system key seals them: a secret's derivative is never left in plaintext.
pub async fn seal_event(
    keys: &KeyStore,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: &mut Value,
    metadata: &mut Value,
    aggregate_subject: Option<Uuid>,
) -> Result<(), CryptoError> {
    let secrets_owner = match secret_owner(aggregate_type, aggregate_id, payload) {
        SecretOwner::User(user) => Some(user),
        SecretOwner::System => None,
        SecretOwner::Aggregate => aggregate_subject,
    };
    let personal_owner = subject(aggregate_type, aggregate_id, payload, metadata);
    if let Some(inner) = payload
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .and_then(Value::as_object_mut)
    {
        if let Some(user) = personal_owner {
            seal_in(keys, user, inner, PERSONAL_FIELDS).await?;
        }
        seal_secrets_in(keys, secrets_owner, inner).await?;
    }
    if let (Some(user), Some(meta)) = (personal_owner, metadata.as_object_mut()) {
        seal_in(keys, user, meta, PERSONAL_METADATA).await?;
    }
    Ok(())
}

fn collect_sealed(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if is_sealed(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_sealed(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_sealed(x, out)),
        _ => {}
    }
}

fn replace_sealed(v: &mut Value, opened: &HashMap<String, String>) {
    match v {
        Value::String(s) if is_sealed(s) => {
            if let Some(plain) = opened.get(s.as_str()) {
                *s = plain.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_sealed(x, opened)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_sealed(x, opened)),
        _ => {}
    }
}

/// Open every sealed value in `values`, in place; values of erased users become
/// `"[erased]"`.
pub async fn open_values(keys: &KeyStore, values: &mut [&mut Value]) -> Result<(), CryptoError> {
    let mut sealed = vec![];
    for v in values.iter() {
        collect_sealed(v, &mut sealed);
    }
    if sealed.is_empty() {
        return Ok(());
    }
    sealed.sort_unstable();
    sealed.dedup();
    let mut opened = HashMap::with_capacity(sealed.len());
    for s in sealed {
        let plain = keys.open(&s).await?;
        opened.insert(s, plain);
    }
    for v in values.iter_mut() {
        replace_sealed(v, &opened);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_belong_to_the_user_the_event_is_about_never_to_the_actor() {
        let u = Uuid::from_u128(3);
        assert_eq!(
            secret_owner("user", &u.to_string(), &json!({"PasswordReset": {}})),
            SecretOwner::User(u)
        );
        assert_eq!(
            secret_owner(
                "session",
                "s1",
                &json!({"SessionStarted": {"user_id": u.to_string(), "refresh_token_hash": "h"}})
            ),
            SecretOwner::User(u)
        );
        // a rotation names no user: the session's owner (from the log) decides
        assert_eq!(
            secret_owner(
                "session",
                "s1",
                &json!({"RefreshTokenRotated": {"refresh_token_hash": "h"}})
            ),
            SecretOwner::Aggregate
        );
        assert_eq!(
            secret_owner(
                "api_key",
                &Uuid::from_u128(9).to_string(),
                &json!({"ApiKeyCreated": {"secret_hash": "h", "created_by": u.to_string()}})
            ),
            SecretOwner::System
        );
    }

    #[test]
    fn only_unsealed_secret_fields_count_as_open_secrets() {
        assert!(has_open_secrets(
            &json!({"RefreshTokenRotated": {"refresh_token_hash": "h"}})
        ));
        assert!(!has_open_secrets(
            &json!({"RefreshTokenRotated": {"refresh_token_hash": "enc:v1:x:y"}})
        ));
        assert!(!has_open_secrets(
            &json!({"UserRegistered": {"password_hash": null, "email": "a@b.c"}})
        ));
        assert!(!has_open_secrets(
            &json!({"SessionRevoked": {"reason": "logout"}})
        ));
    }

    #[test]
    fn the_subject_is_the_user_the_data_is_about() {
        let u = Uuid::from_u128(3);
        assert_eq!(
            subject("user", &u.to_string(), &json!({}), &json!({})),
            Some(u)
        );
        assert_eq!(
            subject(
                "session",
                "s1",
                &json!({"SessionStarted": {"user_id": u.to_string()}}),
                &json!({})
            ),
            Some(u)
        );
        assert_eq!(
            subject(
                "session",
                "s1",
                &json!({"SessionRevoked": {}}),
                &json!({"actor_id": u.to_string(), "actor_role": "user"})
            ),
            Some(u)
        );
        assert_eq!(
            subject(
                "session",
                "s1",
                &json!({"SessionRevoked": {}}),
                &json!({"actor_id": "seed", "actor_role": "system"})
            ),
            None
        );
    }
}
