//! One-time links and codes, and refresh-token hashes, derived by HMAC-SHA256 from the
//! server secret.
//!
//! The log never holds a usable secret: an event holds a random `nonce`; the link token
//! and the 6-digit code are HMACs of (purpose, user, nonce) under `SECRET_KEY`, so only the
//! server can make or check them. Refresh tokens are kept only as HMACs too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// What a one-time secret is for; a verification link can never reset a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    EmailVerification,
    PasswordReset,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::EmailVerification => "email-verification",
            Purpose::PasswordReset => "password-reset",
        }
    }
}

/// The server secret and what is derived from it.
#[derive(Clone)]
pub struct Secrets {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// 16 random bytes as 32 hex digits.
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// 32 random bytes, URL-safe base64: the secret half of a refresh token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Secrets {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The raw key (for signing JWTs).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(&[0x1f]); // unit separator: parts cannot run into each other
        }
        mac
    }

    /// The token of a one-time link: `<user id>.<nonce>.<mac>`.
    pub fn link_token(&self, purpose: Purpose, user_id: Uuid, nonce: &str) -> String {
        let user = user_id.to_string();
        let tag = self
            .mac(&["link", purpose.label(), &user, nonce])
            .finalize()
            .into_bytes();
        format!("{user}.{nonce}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Check a link token's MAC (in constant time); gives the user id and nonce it names.
    pub fn open_link_token(&self, purpose: Purpose, token: &str) -> Option<(Uuid, String)> {
        let mut parts = token.trim().splitn(3, '.');
        let user = parts.next()?;
        let nonce = parts.next()?;
        let tag = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let user_id: Uuid = user.parse().ok()?;
        self.mac(&["link", purpose.label(), &user_id.to_string(), nonce])
            .verify_slice(&tag)
            .ok()?;
        Some((user_id, nonce.to_owned()))
    }

    /// The 6-digit code sent with a link.
    pub fn code(&self, purpose: Purpose, user_id: Uuid, nonce: &str) -> String {
        let tag = self
            .mac(&["code", purpose.label(), &user_id.to_string(), nonce])
            .finalize()
            .into_bytes();
        let n = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]) % 1_000_000;
        format!("{n:06}")
    }

    /// Whether `code` is the code for (purpose, user, nonce), compared in constant time.
    pub fn code_matches(&self, purpose: Purpose, user_id: Uuid, nonce: &str, code: &str) -> bool {
        let expected = self.code(purpose, user_id, nonce);
        let given = code.trim();
        given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// What is stored of a refresh token: an HMAC, never the token.
    pub fn refresh_token_hash(&self, token: &str) -> String {
        hex::encode(self.mac(&["refresh", token]).finalize().into_bytes())
    }

    /// The key a rate limit counts `value` (an address, an IP) under in the shared store:
    /// a keyed hash, so the store holds no address and nobody without the key can test one.
    pub fn rate_limit_key(&self, limit: &str, value: &str) -> String {
        let mac = self
            .mac(&["rate-limit", limit, value])
            .finalize()
            .into_bytes();
        format!("{limit}:{}", hex::encode(&mac[..16]))
    }

    /// The `email_probe` aggregate of a normalised address with no account: a keyed hash,
    /// so the log never holds the address and nobody without the key can test one.
    pub fn email_probe_id(&self, email: &str) -> Uuid {
        let mac = self.mac(&["email-probe", email]).finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&mac[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC takes keys of any length; this cannot happen.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_token_opens_only_with_its_key_and_purpose() {
        let s = Secrets::new(b"0123456789abcdef0123456789abcdef");
        let user = Uuid::from_u128(42);
        let token = s.link_token(Purpose::EmailVerification, user, "n1");
        assert_eq!(
            s.open_link_token(Purpose::EmailVerification, &token),
            Some((user, "n1".to_owned()))
        );
        assert_eq!(s.open_link_token(Purpose::PasswordReset, &token), None);
        let other = Secrets::new(b"another-key-another-key-another-k");
        assert_eq!(
            other.open_link_token(Purpose::EmailVerification, &token),
            None
        );
        let tampered = token.replace("n1", "n2");
        assert_eq!(
            s.open_link_token(Purpose::EmailVerification, &tampered),
            None
        );
        assert_eq!(
            s.open_link_token(Purpose::EmailVerification, "garbage"),
            None
        );
    }

    #[test]
    fn codes_are_six_digits_and_depend_on_the_nonce() {
        let s = Secrets::new(b"0123456789abcdef0123456789abcdef");
        let user = Uuid::from_u128(42);
        let c1 = s.code(Purpose::EmailVerification, user, "n1");
        assert_eq!(c1.len(), 6);
        assert!(c1.chars().all(|c| c.is_ascii_digit()));
        assert!(s.code_matches(Purpose::EmailVerification, user, "n1", &c1));
        assert!(!s.code_matches(Purpose::PasswordReset, user, "n1", &c1));
        let others: Vec<String> = (0..20)
            .map(|i| s.code(Purpose::EmailVerification, user, &format!("x{i}")))
            .collect();
        assert!(others.iter().any(|c| *c != c1));
    }

    #[test]
    fn refresh_hashes_are_stable_and_keyed() {
        let s = Secrets::new(b"0123456789abcdef0123456789abcdef");
        let t = random_token();
        assert_eq!(s.refresh_token_hash(&t), s.refresh_token_hash(&t));
        assert_ne!(
            s.refresh_token_hash(&t),
            Secrets::new(b"k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2").refresh_token_hash(&t)
        );
        assert!(!s.refresh_token_hash(&t).contains(&t));
    }
}
