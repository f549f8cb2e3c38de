//! Per-key rate limiting: a fixed one-minute window per API key, in this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    limit: u32,
    windows: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    used: u32,
}

/// The answer for one request, and what the `X-RateLimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window starts over (at least 1).
    pub reset_after: u64,
}

impl RateLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self {
            limit: limit_per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Decision {
        let mut windows = self
            .windows
            .lock()
            .expect("the rate limiter lock is never poisoned");
        if windows.len() > 10_000 {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
        }
        let window = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        let allowed = window.used < self.limit;
        if allowed {
            window.used += 1;
        }
        let left = WINDOW.saturating_sub(now.duration_since(window.started));
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit - window.used,
            reset_after: left.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_key_and_the_window_starts_over() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        assert_eq!(limiter.check_at("a", start).remaining, 1);
        let second = limiter.check_at("a", start + Duration::from_secs(1));
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = limiter.check_at("a", start + Duration::from_secs(2));
        assert!(!third.allowed);
        assert_eq!(third.reset_after, 58);
        assert!(
            limiter
                .check_at("b", start + Duration::from_secs(2))
                .allowed
        );
        let later = limiter.check_at("a", start + WINDOW);
        assert!(later.allowed);
        assert_eq!(later.remaining, 1);
    }
}
