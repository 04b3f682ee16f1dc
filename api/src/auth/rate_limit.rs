//! Rate limits on auth endpoints, per client IP and per account (the email asked about),
//! with governor's keyed GCRA limiters. Over the limit: 429 `rate_limited` + `Retry-After`.
//!
//! A successful password reset proves control of the address, so it gives the account a
//! fresh allowance ([`RateLimits::forgive_account`]): the owner's first sign-in with the
//! new password is not refused because of the attempts (perhaps an attacker's) before it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ApiError;

#[derive(Debug)]
pub struct RateLimits {
    auth_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Keyed by the account and its allowance's generation: forgiving an account moves it
    /// to a new generation, i.e. a full bucket (governor has no per-key reset).
    auth_account: DefaultKeyedRateLimiter<(String, u32)>,
    generations: Mutex<HashMap<String, u32>>,
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
            generations: Mutex::new(HashMap::new()),
            status_ip: per_minute(status_ip),
        })
    }

    fn generation(&self, account: &str) -> u32 {
        self.generations
            .lock()
            .map(|g| g.get(account).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Give `account` a full allowance again (after a successful password reset).
    pub fn forgive_account(&self, account: &str) {
        if let Ok(mut g) = self.generations.lock() {
            let next = g.get(account).copied().unwrap_or(0).wrapping_add(1);
            g.insert(account.to_owned(), next);
        }
    }

    /// An auth request from `ip`, about `account` (a normalised email) when it names one.
    pub fn check_auth(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            check(&self.auth_ip, &ip)?;
        }
        if let Some(account) = account {
            let key = (account.to_owned(), self.generation(account));
            check(&self.auth_account, &key)?;
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
                // generations only matter while their old bucket could still refuse
                if me.auth_account.is_empty() {
                    if let Ok(mut g) = me.generations.lock() {
                        g.clear();
                    }
                }
                me.status_ip.retain_recent();
            }
        });
    }
}
