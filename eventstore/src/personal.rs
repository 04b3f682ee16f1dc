//! Which values in events are personal data, whose they are, and sealing and opening them.
//!
//! The policy is by field name, so a new event is covered the moment it uses one of these
//! names (err on the side of sealing): payload fields in [`PERSONAL_FIELDS`] and metadata
//! keys in [`PERSONAL_METADATA`], when they are strings. The user they belong to (the
//! subject) is the aggregate itself for `user` events, else the payload's `user_id`, else
//! the acting user in the metadata.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::crypto::{is_sealed, CryptoError, KeyStore, ERASED};

/// Payload fields and metadata keys that hold personal data: one list, kept with the event
/// catalogue in the pure `aggregates` crate (which documents them as sealed).
pub use aggregates::catalog::{PERSONAL_FIELDS, PERSONAL_METADATA};

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

/// Seal the personal values of one event (payload `{"Type": {...}}` and metadata) in place.
pub async fn seal_event(
    keys: &KeyStore,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: &mut Value,
    metadata: &mut Value,
) -> Result<(), CryptoError> {
    let Some(user) = subject(aggregate_type, aggregate_id, payload, metadata) else {
        return Ok(());
    };
    if let Some(inner) = payload
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .and_then(Value::as_object_mut)
    {
        seal_in(keys, user, inner, PERSONAL_FIELDS).await?;
    }
    if let Some(meta) = metadata.as_object_mut() {
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
