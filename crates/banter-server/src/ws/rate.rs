//! A token bucket limiting the frames of one connection.

use tokio::time::Instant;

/// Refills `per_sec` tokens a second up to `burst`; each frame takes one.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit { per_sec: f64::from(per_sec), burst, tokens: burst, at: Instant::now() }
    }

    /// Takes a token; `false` when the connection is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t = Instant::now();
        let mut r = RateLimit::new(10, 5);
        r.at = t;
        assert!((0..5).all(|_| r.allow(t)));
        assert!(!r.allow(t));
        assert!(r.allow(t + Duration::from_millis(100)));
        assert!(!r.allow(t + Duration::from_millis(100)));
    }
}
