//! Rate limits: the auth endpoints per client IP and per account (the email asked about),
//! shared by every API instance of the deployment (a GCRA whose state is in PostgreSQL,
//! [`eventstore::rate_limits`]: two instances let through what one would); the status
//! lookup per IP, in this process (governor's keyed GCRA: it guards the hot read path,
//! where a write per request would cost more than it protects — with N instances behind a
//! load balancer an IP gets up to N times its limit there). Over a limit: 429
//! `rate_limited` + `Retry-After`.
//!
//! The shared store keys each count by a keyed hash of the IP or address, never the value.
//!
//! A successful password reset proves control of the address, so it gives the account a
//! fresh allowance ([`RateLimits::forgive_account`]): the owner's first sign-in with the
//! new password is not refused because of the attempts (perhaps an attacker's) before it.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use eventstore::rate_limits::{self, Quota};
use eventstore::secrets::Secrets;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as LocalQuota, RateLimiter};
use sqlx::PgPool;

use crate::ApiError;

pub struct RateLimits {
    pool: PgPool,
    /// Keys the shared counts.
    secrets: Secrets,
    auth_ip: Quota,
    auth_account: Quota,
    status_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("auth_ip", &self.auth_ip)
            .field("auth_account", &self.auth_account)
            .finish_non_exhaustive()
    }
}

fn per_minute<K: Hash + Eq + Clone>(n: u32) -> DefaultKeyedRateLimiter<K> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(LocalQuota::per_minute(n))
}

fn refused(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

impl RateLimits {
    /// Requests per minute: auth endpoints per IP and per account (shared, in `pool`'s
    /// database), the status lookup per IP (this process).
    pub fn new(
        pool: PgPool,
        secrets: Secrets,
        auth_ip: u32,
        auth_account: u32,
        status_ip: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            secrets,
            auth_ip: Quota::per_minute(auth_ip),
            auth_account: Quota::per_minute(auth_account),
            status_ip: per_minute(status_ip),
        })
    }

    fn account_key(&self, account: &str) -> String {
        self.secrets.rate_limit_key("auth-account", account)
    }

    /// Give `account` a full allowance again (after a successful password reset).
    pub async fn forgive_account(&self, account: &str) {
        if let Err(e) = rate_limits::forgive(&self.pool, &self.account_key(account)).await {
            tracing::warn!(error = %e, "Cannot reset an account's rate limit");
        }
    }

    /// An auth request from `ip`, about `account` (a normalised email) when it names one.
    pub async fn check_auth(
        &self,
        ip: Option<IpAddr>,
        account: Option<&str>,
    ) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            let key = self.secrets.rate_limit_key("auth-ip", &ip.to_string());
            if let Some(wait) = rate_limits::check(&self.pool, &key, self.auth_ip).await? {
                return Err(refused(wait));
            }
        }
        if let Some(account) = account {
            let key = self.account_key(account);
            if let Some(wait) = rate_limits::check(&self.pool, &key, self.auth_account).await? {
                return Err(refused(wait));
            }
        }
        Ok(())
    }

    pub fn check_status(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip {
            Some(ip) => self.status_ip.check_key(&ip).map_err(|not_until| {
                refused(not_until.wait_time_from(DefaultClock::default().now()))
            }),
            None => Ok(()),
        }
    }

    /// Forget keys that are back to full allowance, every minute, so memory and the shared
    /// table stay small.
    pub fn spawn_cleanup(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                me.status_ip.retain_recent();
                if let Err(e) = rate_limits::sweep(&me.pool).await {
                    tracing::debug!(error = %e, "Cannot sweep the rate limits");
                }
            }
        });
    }
}
