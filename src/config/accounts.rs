//! Tokens (`JWT_*`), the sign-in lockout (`LOGIN_*`), rate limits (`RATE_LIMIT_*`),
//! password hashing (`PASSWORD_HASH_CONCURRENCY`) and the seeded admin (`ADMIN_*`).

use aggregates::user::UserPolicy;
use anyhow::bail;

use super::{Env, Vars};

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// The user aggregate's numbers: failed sign-ins before a lock, and the lock's length.
    pub user_policy: UserPolicy,
    pub rate_limits: RateLimitSettings,
    /// Password hashes computed at once (each holds 19 MiB).
    pub password_hash_concurrency: usize,
}

/// Requests per minute (`api::rate_limit::RateLimits`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// On auth endpoints, per client IP...
    pub auth_ip: u32,
    /// ...and per account (email).
    pub auth_account: u32,
    /// On the public status lookup, per client IP.
    pub status_ip: u32,
}

pub(super) fn auth<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> anyhow::Result<AuthSettings> {
    let secs = |d: std::time::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    Ok(AuthSettings {
        jwt_issuer: v.string("JWT_ISSUER", "chronicle"),
        jwt_audience: v.string("JWT_AUDIENCE", "chronicle-api"),
        user_policy: UserPolicy {
            max_login_failures: v.positive("LOGIN_MAX_FAILURES", 5)? as u32,
            lock_base: secs(v.secs("LOGIN_LOCK_SECS", 60)?),
            lock_max: secs(v.secs("LOGIN_LOCK_MAX_SECS", 3600)?),
            ..UserPolicy::default()
        },
        rate_limits: RateLimitSettings {
            auth_ip: v.positive("RATE_LIMIT_AUTH_IP_PER_MINUTE", 60)? as u32,
            auth_account: v.positive("RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE", 10)? as u32,
            status_ip: v.positive("RATE_LIMIT_STATUS_IP_PER_MINUTE", 60)? as u32,
        },
        password_hash_concurrency: v.parse(
            "PASSWORD_HASH_CONCURRENCY",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )?,
    })
}

/// The admin account made at start when it does not exist.
#[derive(Clone)]
pub struct AdminSeed {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for AdminSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSeed")
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .finish()
    }
}

pub(super) fn admin<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &mut Env,
) -> anyhow::Result<Option<AdminSeed>> {
    let email = v.get("ADMIN_EMAIL").map(|e| e.to_lowercase());
    let password = v.raw("ADMIN_PASSWORD");
    let (email, password) = match (email, password) {
        (None, None) => return Ok(None),
        (Some(email), Some(password)) => (email, password),
        _ => bail!("ADMIN_EMAIL and ADMIN_PASSWORD go together: set both or neither"),
    };
    // the same policy as every other account's password (never the value itself in the
    // message)
    if let Err(why) = crate::seed::password_policy(&email, &password) {
        if env.production() {
            bail!("ADMIN_PASSWORD is too weak: it {why}");
        }
        env.warn(format!(
            "ADMIN_PASSWORD is too weak: it {why}; production refuses it"
        ));
    }
    Ok(Some(AdminSeed { email, password }))
}
