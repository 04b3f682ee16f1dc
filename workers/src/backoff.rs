//! Exponential backoff with jitter for worker loops.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: min·2ⁿ capped at max, with up to 25% jitter.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let base = self.min.saturating_mul(factor).min(self.max);
        let jitter_ms = (base.as_millis() as u64 / 4).max(1);
        base + Duration::from_millis(rand_below(jitter_ms))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub(crate) fn rand_below(n: u64) -> u64 {
    // Good enough to spread retries; not used for anything secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stop_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d0 = b.next_delay();
        let d1 = b.next_delay();
        assert!(d0 >= Duration::from_millis(100) && d0 < Duration::from_millis(130));
        assert!(d1 >= Duration::from_millis(200) && d1 < Duration::from_millis(260));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(1250));
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
