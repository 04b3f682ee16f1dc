//! Access tokens (JWT, HS256 pinned) and refresh tokens (opaque: `<session id>.<secret>`,
//! stored only as an HMAC).

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The session id: checked on every request, so revocation takes effect at once.
    pub sid: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Always `access`: a refresh token is never a JWT, and nothing else is accepted.
    pub typ: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Allowed clock difference when checking `exp` (seconds).
const LEEWAY_SECS: u64 = 5;

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            role: role.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            typ: "access".to_owned(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verify signature (HS256 only), issuer, audience, expiry and type.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            decode::<AccessClaims>(token, &self.decoding, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        if data.claims.typ != "access" {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

/// A refresh token as handed out: the session id and a random secret.
pub fn refresh_token(session_id: Uuid, secret: &str) -> String {
    format!("{session_id}.{secret}")
}

/// Split a refresh token into its session id and secret.
pub fn parse_refresh_token(token: &str) -> Option<(Uuid, &str)> {
    let (sid, secret) = token.trim().split_once('.')?;
    if secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((sid.parse().ok()?, secret))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"0123456789abcdef0123456789abcdef",
            "chronicle",
            "chronicle-api",
        )
    }

    #[test]
    fn an_issued_token_verifies_and_says_who_and_which_session() {
        let (u, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = Utc::now();
        let t = keys()
            .issue(u, s, "user", now, now + Duration::minutes(15))
            .unwrap_or_default();
        let c = keys().verify(&t).map_err(|e| format!("{e:?}"));
        assert_eq!(
            c.map(|c| (c.sub, c.sid)),
            Ok((u.to_string(), s.to_string()))
        );
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let (u, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = Utc::now();
        let expired = keys()
            .issue(
                u,
                s,
                "user",
                now - Duration::hours(2),
                now - Duration::hours(1),
            )
            .unwrap_or_default();
        assert_eq!(keys().verify(&expired), Err(TokenError::Expired));
        let other = TokenKeys::new(
            b"another-key-another-key-another-k",
            "chronicle",
            "chronicle-api",
        );
        let foreign = other
            .issue(u, s, "user", now, now + Duration::minutes(5))
            .unwrap_or_default();
        assert_eq!(keys().verify(&foreign), Err(TokenError::Invalid));
        let wrong_aud = TokenKeys::new(
            b"0123456789abcdef0123456789abcdef",
            "chronicle",
            "elsewhere",
        )
        .issue(u, s, "user", now, now + Duration::minutes(5))
        .unwrap_or_default();
        assert_eq!(keys().verify(&wrong_aud), Err(TokenError::Invalid));
        assert_eq!(keys().verify("not.a.jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn refresh_tokens_split_into_session_and_secret() {
        let s = Uuid::from_u128(9);
        let t = refresh_token(s, "abc");
        assert_eq!(parse_refresh_token(&t), Some((s, "abc")));
        assert_eq!(parse_refresh_token("nonsense"), None);
        assert_eq!(parse_refresh_token("x.y"), None);
    }
}
