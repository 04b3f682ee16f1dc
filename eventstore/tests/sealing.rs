//! Secrets' derivatives are sealed on the way into the log, against a real PostgreSQL
//! (`TEST_PG_BASE`, default `postgres://postgres@127.0.0.1:5432`), one fresh database per
//! test: an API key's secret hash with the system key (which key rotation re-wraps and
//! erasure cannot touch), a session's token hashes with its owner's key (also those of
//! later events that name no user), and rows written before sealing began read as they are.

use aggregates::api_key::{ApiKey, ApiKeyCommand};
use aggregates::session::{Session, SessionCommand, SessionPolicy};
use aggregates::EventMetadata;
use chrono::{Duration, Utc};
use eventstore::crypto::{
    is_sealed, sealed_owner, CryptoError, Key, KeyStore, MasterKeys, ERASED, SYSTEM_KEY_ID,
};
use eventstore::{database, CommandBus};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn pg_base() -> String {
    std::env::var("TEST_PG_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A migrated database of the test's own, and its name (to drop it afterwards).
async fn fresh_database() -> (PgPool, String) {
    let name = format!(
        "chronicle_test_es_{}",
        &Uuid::new_v4().simple().to_string()[..16]
    );
    let url = format!("{}/{name}", pg_base());
    database::ensure_database(&url)
        .await
        .expect("the test database is created");
    let pool = database::connect(&url, 4).await.expect("connects");
    database::migrate(&pool).await.expect("migrates");
    (pool, name)
}

async fn drop_database(pool: PgPool, name: &str) {
    pool.close().await;
    if let Ok(admin) = PgPool::connect(&format!("{}/postgres", pg_base())).await {
        let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
            .execute(&admin)
            .await;
    }
}

fn keys_with(pool: &PgPool, current: &Key, previous: &[Key]) -> KeyStore {
    KeyStore::new(
        pool.clone(),
        MasterKeys {
            current: current.clone(),
            previous: previous.to_vec(),
        },
    )
}

/// The stored (sealed) value of `field` in each event of an aggregate, in sequence order.
async fn stored_field(pool: &PgPool, aggregate_id: &str, field: &str) -> Vec<String> {
    let payloads: Vec<Value> =
        sqlx::query_scalar("select payload from events where aggregate_id = $1 order by sequence")
            .bind(aggregate_id)
            .fetch_all(pool)
            .await
            .expect("reads the log");
    payloads
        .iter()
        .filter_map(|p| p.as_object()?.values().next()?.get(field)?.as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_api_keys_secret_hash_is_sealed_with_the_system_key_which_rotation_keeps_and_erasure_cannot_touch(
) {
    let (pool, name) = fresh_database().await;
    let old_master = Key::random();
    let keys = keys_with(&pool, &old_master, &[]);
    let api_keys = CommandBus::<ApiKey>::new(pool.clone(), keys.clone(), ());
    let id = Uuid::now_v7().to_string();
    let secret_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    // made by an admin over HTTP: the admin is the actor, and still not the key's owner
    let admin = Uuid::now_v7();
    api_keys
        .execute(
            &id,
            ApiKeyCommand::CreateApiKey {
                name: "deploys".into(),
                secret_hash: secret_hash.into(),
                created_by: admin.to_string(),
                now: Utc::now(),
            },
            &EventMetadata::default().acting_as(admin, "admin"),
        )
        .await
        .expect("the key is made");

    let stored = stored_field(&pool, &id, "secret_hash").await;
    assert_eq!(stored.len(), 1);
    assert!(is_sealed(&stored[0]), "sealed in the log: {}", stored[0]);
    assert_eq!(sealed_owner(&stored[0]), Some(SYSTEM_KEY_ID));
    let raw: String =
        sqlx::query_scalar("select payload::text from events where aggregate_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .expect("reads the row");
    assert!(!raw.contains(secret_hash));
    // the command side opens it to check a presented key
    let loaded = api_keys.load(&id).await.expect("loads");
    assert_eq!(loaded.secret_hash, secret_hash);

    // the system key is a keyring entry like a user's, wrapped by the master key
    let wrapped_by: String =
        sqlx::query_scalar("select master_key_id from user_keys where user_id = $1")
            .bind(SYSTEM_KEY_ID)
            .fetch_one(&pool)
            .await
            .expect("the system key is in user_keys");
    assert_eq!(wrapped_by, old_master.id());
    // and no erasure takes it away
    assert!(matches!(
        keys.erase(SYSTEM_KEY_ID).await,
        Err(CryptoError::SystemKey)
    ));
    assert_eq!(
        keys.open(&stored[0]).await.ok().as_deref(),
        Some(secret_hash)
    );

    // rotation re-wraps it; afterwards the new master key alone opens it
    let new_master = Key::random();
    let rotating = keys_with(&pool, &new_master, std::slice::from_ref(&old_master));
    assert!(rotating.rotate().await.expect("rotates") >= 1);
    let only_new = keys_with(&pool, &new_master, &[]);
    assert_eq!(
        only_new.open(&stored[0]).await.ok().as_deref(),
        Some(secret_hash)
    );
    let after_rotation = CommandBus::<ApiKey>::new(pool.clone(), only_new, ());
    assert_eq!(
        after_rotation.load(&id).await.expect("loads").secret_hash,
        secret_hash
    );
    assert!(keys_with(&pool, &old_master, &[])
        .open(&stored[0])
        .await
        .is_err());
    drop_database(pool, &name).await;
}

#[tokio::test]
async fn a_sessions_token_hashes_are_sealed_with_its_owners_key_and_die_with_the_owner() {
    let (pool, name) = fresh_database().await;
    let keys = keys_with(&pool, &Key::random(), &[]);
    let sessions = CommandBus::<Session>::new(pool.clone(), keys.clone(), SessionPolicy::default());
    let owner = Uuid::now_v7();
    let id = Uuid::now_v7().to_string();
    let now = Utc::now();
    sessions
        .execute(
            &id,
            SessionCommand::StartSession {
                user_id: owner,
                email: "ada@example.com".into(),
                refresh_token_hash: "first-token-hash".into(),
                device: "Firefox on Linux".into(),
                ip: None,
                user_agent: None,
                now,
                expires_at: now + Duration::days(30),
            },
            &EventMetadata::default(),
        )
        .await
        .expect("starts");
    // a refresh is anonymous (the refresh token is the credential), and its event names
    // no user: the session's owner still owns the new hash
    sessions
        .execute(
            &id,
            SessionCommand::Refresh {
                presented_hash: "first-token-hash".into(),
                new_hash: "second-token-hash".into(),
                now,
                expires_at: now + Duration::days(30),
            },
            &EventMetadata::default(),
        )
        .await
        .expect("rotates");

    let stored = stored_field(&pool, &id, "refresh_token_hash").await;
    assert_eq!(stored.len(), 2);
    for s in &stored {
        assert!(is_sealed(s), "sealed in the log: {s}");
        assert_eq!(sealed_owner(s), Some(owner));
    }
    let loaded = sessions.load(&id).await.expect("loads");
    assert_eq!(loaded.current_hash, "second-token-hash");

    keys.erase(owner).await.expect("erases");
    for s in &stored {
        assert_eq!(keys.open(s).await.ok().as_deref(), Some(ERASED));
    }
    drop_database(pool, &name).await;
}

#[tokio::test]
async fn rows_written_before_sealing_began_are_read_as_they_are() {
    let (pool, name) = fresh_database().await;
    let keys = keys_with(&pool, &Key::random(), &[]);
    let id = Uuid::now_v7().to_string();
    let secret_hash = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    // an API key made by an earlier release: its secret hash in plaintext
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('api_key', $1, 1, 'ApiKeyCreated', '1.0', $2, $3)",
    )
    .bind(&id)
    .bind(json!({"ApiKeyCreated": {"name": "old", "secret_hash": secret_hash, "created_by": "cli:ops", "created_at": Utc::now()}}))
    .bind(json!({"actor_id": "cli:ops", "actor_role": "system"}))
    .execute(&pool)
    .await
    .expect("an old row");
    let api_keys = CommandBus::<ApiKey>::new(pool.clone(), keys, ());
    let loaded = api_keys.load(&id).await.expect("loads");
    assert_eq!(loaded.secret_hash, secret_hash);
    assert!(loaded.is_active());
    // new events of the same aggregate are sealed; the old row stays as it was
    api_keys
        .execute(
            &id,
            ApiKeyCommand::RevokeApiKey {
                revoked_by: "cli:ops".into(),
                now: Utc::now(),
            },
            &EventMetadata::system("cli:ops"),
        )
        .await
        .expect("revokes");
    assert_eq!(stored_field(&pool, &id, "secret_hash").await, [secret_hash]);
    assert!(!api_keys.load(&id).await.expect("loads").is_active());
    drop_database(pool, &name).await;
}
