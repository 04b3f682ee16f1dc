//! Per-user data keys, wrapped by a master key, and sealing personal values with them.
//!
//! Every user has a random 256-bit data key in `user_keys`, stored wrapped (encrypted) by
//! the master key from the environment and tagged with the master key's id. Personal values
//! in events are sealed with XChaCha20-Poly1305 under the data key of the user they are
//! about, the user's id bound as associated data. Erasure deletes the user's key row: the
//! log is not rewritten, and every sealed copy (PostgreSQL, JetStream, backups) becomes
//! unreadable. Rotating the master key re-wraps the data keys; the log is untouched.
//!
//! A sealed value is the string `enc:v1:<user id>:<base64(nonce ‖ ciphertext)>`, so it
//! names its own key.
//!
//! Values no user owns (an admin API key's secret hash) are sealed with the **system
//! key**: one more row of `user_keys`, under the well-known id [`SYSTEM_KEY_ID`] (the Max
//! UUID of RFC 9562, which no UUID generator produces, so it never names a user). It is
//! made on first use and wrapped by the master key like every user key, so `keys rotate`
//! re-wraps it with the others; it is never erased.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// The key id of the system key (`ffffffff-ffff-ffff-ffff-ffffffffffff`): it seals
/// secrets' derivatives that belong to no user.
pub const SYSTEM_KEY_ID: Uuid = Uuid::max();

/// What a value of an erased user reads as.
pub const ERASED: &str = "[erased]";
const PREFIX: &str = "enc:v1:";
/// How long an unwrapped key is kept in memory (erasure in another process is seen
/// within this time; the erasing process forgets at once).
const CACHE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("MASTER_KEY: {0}")]
    MasterKey(String),
    #[error(
        "a user key is wrapped by master key {0}, which is not configured (MASTER_KEY_PREVIOUS?)"
    )]
    UnknownMasterKey(String),
    #[error("a sealed value or key does not decrypt")]
    Corrupt,
    #[error("the system key is never erased")]
    SystemKey,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A 256-bit key that never prints.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

impl Key {
    /// From 32 bytes given as 64 hex digits or base64.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(|| CryptoError::MasterKey("not hex or base64".into()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::MasterKey("must be 32 bytes".into()))?;
        Ok(Self(arr))
    }

    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        Self(k)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short public name for a master key (which one wrapped a data key).
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    fn seal_bytes(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // encryption with a fresh nonce and a 32-byte key cannot fail
        if let Ok(ct) = self.cipher().encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    fn open_bytes(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 24 + 16 {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ct) = sealed.split_at(24);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Corrupt)
    }
}

/// The master key in use, and earlier ones still accepted for unwrapping (rotation).
#[derive(Clone, Debug)]
pub struct MasterKeys {
    pub current: Key,
    pub previous: Vec<Key>,
}

impl MasterKeys {
    fn by_id(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id() == id)
    }
}

/// Is this JSON string a sealed value?
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// The user a sealed value belongs to.
pub fn sealed_owner(s: &str) -> Option<Uuid> {
    s.strip_prefix(PREFIX)?.split(':').next()?.parse().ok()
}

/// Data keys: created on first use, unwrapped on demand, deleted on erasure.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    master: Arc<MasterKeys>,
    cache: Arc<Mutex<HashMap<Uuid, (Key, Instant)>>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    pub fn new(pool: PgPool, master: MasterKeys) -> Self {
        Self {
            pool,
            master: Arc::new(master),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cached(&self, user: Uuid) -> Option<Key> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(&user)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    fn remember(&self, user: Uuid, key: &Key) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            }
            cache.insert(user, (key.clone(), Instant::now()));
        }
    }

    /// The user's data key, if the user has one (none: never had personal data, or erased).
    pub async fn key(&self, user: Uuid) -> Result<Option<Key>, CryptoError> {
        if let Some(k) = self.cached(user) {
            return Ok(Some(k));
        }
        let row: Option<(Option<Vec<u8>>, String)> =
            sqlx::query_as("select wrapped_key, master_key_id from user_keys where user_id = $1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        // no row: no key yet; a row without a key: erased
        let Some((Some(wrapped), master_id)) = row else {
            return Ok(None);
        };
        let master = self
            .master
            .by_id(&master_id)
            .ok_or_else(|| CryptoError::UnknownMasterKey(master_id.clone()))?;
        let raw = master.open_bytes(&wrapped, user.as_bytes())?;
        let key = Key(raw.try_into().map_err(|_| CryptoError::Corrupt)?);
        self.remember(user, &key);
        Ok(Some(key))
    }

    /// The user's data key, made now if it does not exist yet. An erased user never gets
    /// a new one (the tombstone row keeps the user's data unreadable for good).
    pub async fn key_for_sealing(&self, user: Uuid) -> Result<Option<Key>, CryptoError> {
        if let Some(k) = self.key(user).await? {
            return Ok(Some(k));
        }
        let fresh = Key::random();
        let wrapped = self.master.current.seal_bytes(&fresh.0, user.as_bytes());
        sqlx::query(
            "insert into user_keys (user_id, wrapped_key, master_key_id) values ($1, $2, $3) \
             on conflict (user_id) do nothing",
        )
        .bind(user)
        .bind(wrapped)
        .bind(self.master.current.id())
        .execute(&self.pool)
        .await?;
        // someone else may have won the race (or the user is erased): read what is there
        self.key(user).await
    }

    /// Seal `plaintext` for `user`. `None` when the user is erased.
    pub async fn seal(&self, user: Uuid, plaintext: &str) -> Result<Option<String>, CryptoError> {
        let Some(key) = self.key_for_sealing(user).await? else {
            return Ok(None);
        };
        let sealed = key.seal_bytes(plaintext.as_bytes(), user.as_bytes());
        Ok(Some(format!(
            "{PREFIX}{user}:{}",
            STANDARD_NO_PAD.encode(sealed)
        )))
    }

    /// Seal `plaintext` with the system key (values no user owns).
    pub async fn seal_for_system(&self, plaintext: &str) -> Result<String, CryptoError> {
        // the system key is never erased, so there is always a key to seal with
        self.seal(SYSTEM_KEY_ID, plaintext)
            .await?
            .ok_or(CryptoError::SystemKey)
    }

    /// Open a sealed value; [`ERASED`] when its user's key is gone.
    pub async fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(CryptoError::Corrupt)?;
        let (user, data) = rest.split_once(':').ok_or(CryptoError::Corrupt)?;
        let user: Uuid = user.parse().map_err(|_| CryptoError::Corrupt)?;
        let Some(key) = self.key(user).await? else {
            return Ok(ERASED.to_owned());
        };
        let bytes = STANDARD_NO_PAD
            .decode(data)
            .map_err(|_| CryptoError::Corrupt)?;
        let plain = key.open_bytes(&bytes, user.as_bytes())?;
        String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)
    }

    /// Delete the user's key for good: a tombstone row without a key stays, so no new key
    /// is ever made for this user id.
    pub async fn erase(&self, user: Uuid) -> Result<(), CryptoError> {
        // erasing it would make every API key unreadable, and nobody's data forgotten
        if user == SYSTEM_KEY_ID {
            return Err(CryptoError::SystemKey);
        }
        sqlx::query(
            "insert into user_keys (user_id, wrapped_key, master_key_id, erased_at) values ($1, null, '', now()) \
             on conflict (user_id) do update set wrapped_key = null, master_key_id = '', erased_at = now()",
        )
        .bind(user)
        .execute(&self.pool)
        .await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&user);
        }
        Ok(())
    }

    /// Re-wrap every data key not wrapped by the current master key. The log is not
    /// touched. Returns how many keys were re-wrapped.
    pub async fn rotate(&self) -> Result<u64, CryptoError> {
        let current = self.master.current.id();
        let rows: Vec<(Uuid, Vec<u8>, String)> = sqlx::query_as(
            "select user_id, wrapped_key, master_key_id from user_keys \
             where wrapped_key is not null and master_key_id <> $1",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for (user, wrapped, master_id) in rows {
            let old = self
                .master
                .by_id(&master_id)
                .ok_or_else(|| CryptoError::UnknownMasterKey(master_id.clone()))?;
            let raw = old.open_bytes(&wrapped, user.as_bytes())?;
            let rewrapped = self.master.current.seal_bytes(&raw, user.as_bytes());
            sqlx::query(
                "update user_keys set wrapped_key = $2, master_key_id = $3, rotated_at = now() \
                 where user_id = $1 and master_key_id = $4",
            )
            .bind(user)
            .bind(rewrapped)
            .bind(&current)
            .bind(&master_id)
            .execute(&self.pool)
            .await?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_what_it_sealed_for_the_same_user_only() {
        let k = Key::random();
        let a = Uuid::from_u128(1);
        let sealed = k.seal_bytes(b"ada@example.com", a.as_bytes());
        assert_eq!(
            k.open_bytes(&sealed, a.as_bytes()).ok(),
            Some(b"ada@example.com".to_vec())
        );
        assert!(k
            .open_bytes(&sealed, Uuid::from_u128(2).as_bytes())
            .is_err());
        assert!(Key::random().open_bytes(&sealed, a.as_bytes()).is_err());
        assert!(!String::from_utf8_lossy(&sealed).contains("ada@"));
    }

    #[test]
    fn master_keys_parse_from_hex_or_base64() {
        let k = Key::random();
        assert_eq!(Key::parse(&k.to_hex()).map(|p| p.id()).ok(), Some(k.id()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.0);
        assert_eq!(Key::parse(&b64).map(|p| p.id()).ok(), Some(k.id()));
        assert!(Key::parse("short").is_err());
    }

    #[test]
    fn sealed_values_name_their_owner() {
        let u = Uuid::from_u128(5);
        let s = format!("{PREFIX}{u}:AAAA");
        assert!(is_sealed(&s));
        assert_eq!(sealed_owner(&s), Some(u));
        assert!(!is_sealed("ada@example.com"));
    }
}
