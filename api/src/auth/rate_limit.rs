//! Rate limits on auth endpoints, per client IP and per account (the email asked about),
//! with governor's keyed GCRA limiters. Over the limit: 429 `rate_limited` + `Retry-After`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ApiError;

#[derive(Debug)]
pub struct RateLimits {
    auth_ip: DefaultKeyedRateLimiter<IpAddr>,
    auth_account: DefaultKeyedRateLimiter<String>,
    status_ip: DefaultKeyedRateLimiter<IpAddr>,
}

fn per_minute<K: Hash + Eq + Clone>(n: u32) -> DefaultKeyedRateLimiter<K> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        }
    })
}

impl RateLimits {
    /// Requests per minute: auth endpoints per IP and per account, the status lookup per IP.
    pub fn new(auth_ip: u32, auth_account: u32, status_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            auth_ip: per_minute(auth_ip),
            auth_account: per_minute(auth_account),
            status_ip: per_minute(status_ip),
        })
    }

    /// An auth request from `ip`, about `account` (a normalised email) when it names one.
    pub fn check_auth(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            check(&self.auth_ip, &ip)?;
        }
        if let Some(account) = account {
            check(&self.auth_account, &account.to_owned())?;
        }
        Ok(())
    }

    pub fn check_status(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip {
            Some(ip) => check(&self.status_ip, &ip),
            None => Ok(()),
        }
    }

    /// Forget keys that are back to full allowance, every minute, so memory stays bounded.
    pub fn spawn_cleanup(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                me.auth_ip.retain_recent();
                me.auth_account.retain_recent();
                me.status_ip.retain_recent();
            }
        });
    }
}
