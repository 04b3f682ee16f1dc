//! The server secret (`SECRET_KEY`) and the master keys (`MASTER_KEY`,
//! `MASTER_KEY_PREVIOUS`). In development both are made once and kept in `DATA_DIR`.

use anyhow::{bail, Context};
use eventstore::crypto::{Key, MasterKeys};

use super::{Env, Vars};

/// The server secret (HMAC of links and codes, token signing). Never printed.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub secret: SecretKey,
    /// Wraps every user's data key. Rotating: set the new one here and the old one in
    /// `MASTER_KEY_PREVIOUS`, run `chronicle keys rotate`, then drop the old one.
    pub master: MasterKeys,
}

pub(super) fn parse<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &mut Env,
) -> anyhow::Result<KeySettings> {
    let secret = match v.raw("SECRET_KEY") {
        Some(s) if s.len() >= 32 => {
            if let Some(why) = weak_secret_key(s.as_bytes()) {
                if env.production() {
                    bail!("SECRET_KEY {why}: use random bytes (`openssl rand -hex 32`)");
                }
                env.warn(format!("SECRET_KEY {why}; production refuses it"));
            }
            SecretKey(s.into_bytes())
        }
        Some(_) => bail!("SECRET_KEY is too short: at least 32 bytes"),
        None if env.production() => {
            bail!("SECRET_KEY is required in production (at least 32 bytes)")
        }
        None => SecretKey(dev_secret(&env.data_dir)?),
    };
    let current = match v.raw("MASTER_KEY").filter(|s| !s.trim().is_empty()) {
        Some(s) => Key::parse(&s).map_err(|e| anyhow::anyhow!("MASTER_KEY is invalid: {e} (32 bytes as 64 hex digits or base64; `chronicle keys generate` makes one)"))?,
        None if env.production() => {
            bail!("MASTER_KEY is required in production (`chronicle keys generate` makes one)")
        }
        None => dev_master_key(&env.data_dir)?,
    };
    let previous = v
        .string("MASTER_KEY_PREVIOUS", "")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Key::parse(s).map_err(|e| anyhow::anyhow!("MASTER_KEY_PREVIOUS is invalid: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(KeySettings {
        secret,
        master: MasterKeys { current, previous },
    })
}

/// Values of SECRET_KEY found in documentation and examples.
const PLACEHOLDER_SECRET_KEYS: &[&str] = &[
    "test-secret-key-that-is-long-enough-000",
    "change-me-to-a-long-random-secret-key",
    "changeme-changeme-changeme-changeme",
    "replace-with-at-least-32-random-bytes",
    "your-secret-key-of-at-least-32-bytes",
];

/// Why `key` is not fit to be the server secret, if it is not: a known placeholder, a
/// repeated pattern, too few distinct bytes, or too little entropy by a Shannon estimate of its bytes. A random
/// key of 32 or more hex or base64 characters passes (64 hex characters estimate to about
/// 240 bits); 32 copies of one character estimate to 0. 16 distinct bytes would be too
/// strict: a quarter of `openssl rand -hex 32` keys miss one of the 16 hex digits.
fn weak_secret_key(key: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(key);
    if PLACEHOLDER_SECRET_KEYS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(text.trim()))
    {
        return Some("is a placeholder from the documentation");
    }
    // a short run repeated (`abab…`, `0123456789` four times) estimates well by byte
    // counts but holds no more than its run
    if (1..=key.len() / 2).any(|p| key[p..] == key[..key.len() - p]) {
        return Some("is a short pattern repeated");
    }
    let mut counts = [0usize; 256];
    for b in key {
        counts[usize::from(*b)] += 1;
    }
    let distinct = counts.iter().filter(|c| **c > 0).count();
    if distinct < 10 {
        return Some("has too few distinct bytes (fewer than 10)");
    }
    let n = key.len() as f64;
    let bits_per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    if bits_per_byte * n < 96.0 {
        return Some("has too little entropy (under 96 bits by estimate)");
    }
    None
}

/// In development the master key is made once and kept in the data directory (losing it
/// makes every user's personal data unreadable, as erasure would).
pub(super) fn dev_master_key(data_dir: &std::path::Path) -> anyhow::Result<Key> {
    let path = data_dir.join("master_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if let Ok(k) = Key::parse(&existing) {
            return Ok(k);
        }
    }
    let key = Key::random();
    let kept = keep_first(data_dir, &path, &key.to_hex(), "the master key")?;
    if let Ok(k) = Key::parse(&kept) {
        // not ours when another process starting at the same time made it first
        if kept == key.to_hex() {
            tracing::info!(path = %path.display(), "Generated a development master key");
        }
        return Ok(k);
    }
    // an unreadable leftover: replace it (nothing can have been sealed with it)
    write_secret_file(data_dir, &path, &key.to_hex(), "the master key")?;
    tracing::info!(path = %path.display(), "Generated a development master key");
    Ok(key)
}

/// In development the secret is made once and kept in the data directory, so sessions
/// and links survive restarts.
pub(super) fn dev_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("secret_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(existing.as_bytes().to_vec());
        }
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    let secret = hex::encode(bytes);
    let kept = keep_first(data_dir, &path, &secret, "the secret key")?;
    let kept = kept.trim();
    if kept.len() >= 32 {
        if kept == secret {
            tracing::info!(path = %path.display(), "Generated a development secret key");
        }
        return Ok(kept.as_bytes().to_vec());
    }
    write_secret_file(data_dir, &path, &secret, "the secret key")?;
    tracing::info!(path = %path.display(), "Generated a development secret key");
    Ok(secret.into_bytes())
}

/// Write `contents` to `path` unless the file exists, and answer what the file holds then.
///
/// Processes started together on a fresh data directory must all end up with the same
/// key: a plain write would let each overwrite the others' key (and data sealed with a
/// lost master key is gone). So the key is written whole to a file of our own first, then
/// hard-linked into place: linking never replaces an existing file, so exactly one
/// process wins, and the others read a complete file, never a half-written one.
fn keep_first(
    data_dir: &std::path::Path,
    path: &std::path::Path,
    contents: &str,
    what: &str,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("DATA_DIR={}: cannot create it", data_dir.display()))?;
    let mut nonce = [0u8; 8];
    rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
    let draft = data_dir.join(format!(
        ".{}.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id(),
        hex::encode(nonce)
    ));
    write_secret_file(data_dir, &draft, contents, what)?;
    let linked = std::fs::hard_link(&draft, path);
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => Ok(contents.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .with_context(|| format!("DATA_DIR={}: cannot read {what}", data_dir.display())),
        Err(e) => {
            Err(e).with_context(|| format!("DATA_DIR={}: cannot write {what}", data_dir.display()))
        }
    }
}

fn write_secret_file(
    data_dir: &std::path::Path,
    path: &std::path::Path,
    contents: &str,
    what: &str,
) -> anyhow::Result<()> {
    std::fs::write(path, contents)
        .with_context(|| format!("DATA_DIR={}: cannot write {what}", data_dir.display()))
}
