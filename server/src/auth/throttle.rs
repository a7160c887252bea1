//! Failed-login throttling, per client address and username.
//!
//! After `attempts` failures within `window`, further logins for that
//! (address, username) pair are refused with RATE_LIMITED until the window
//! that started with the first failure has passed. Keying on the pair means a
//! flood from one address cannot lock a user out for everyone else.
//!
//! Counts live in memory, per node: a restart forgets them. The table is
//! bounded; when it is full, expired entries are dropped, and if none are
//! expired the oldest are.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::AuthError;

/// Entries kept at most; beyond this the table is pruned.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    attempts: u32,
    window: Duration,
    // A std Mutex: it is never held across an await.
    failures: Mutex<HashMap<(IpAddr, String), Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_at: Instant,
}

impl LoginThrottle {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                attempts,
                window,
                failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn key(client: IpAddr, username: &str) -> (IpAddr, String) {
        (client, username.to_lowercase())
    }

    /// Refuses when the pair has used up its attempts.
    pub fn check(&self, client: IpAddr, username: &str) -> Result<(), AuthError> {
        let failures = self
            .shared
            .failures
            .lock()
            .expect("BUG: throttle lock poisoned");
        if let Some(entry) = failures.get(&Self::key(client, username)) {
            let elapsed = entry.first_at.elapsed();
            if entry.count >= self.shared.attempts && elapsed < self.shared.window {
                let retry_after_seconds = (self.shared.window - elapsed).as_secs().max(1);
                return Err(AuthError::RateLimited {
                    retry_after_seconds,
                });
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, client: IpAddr, username: &str) {
        let mut failures = self
            .shared
            .failures
            .lock()
            .expect("BUG: throttle lock poisoned");
        if failures.len() >= MAX_ENTRIES {
            let window = self.shared.window;
            failures.retain(|_, entry| entry.first_at.elapsed() < window);
            if failures.len() >= MAX_ENTRIES {
                failures.clear();
            }
        }
        let now = Instant::now();
        let entry = failures
            .entry(Self::key(client, username))
            .or_insert(Failures {
                count: 0,
                first_at: now,
            });
        if now.duration_since(entry.first_at) >= self.shared.window {
            *entry = Failures {
                count: 0,
                first_at: now,
            };
        }
        entry.count += 1;
    }

    pub fn record_success(&self, client: IpAddr, username: &str) {
        self.shared
            .failures
            .lock()
            .expect("BUG: throttle lock poisoned")
            .remove(&Self::key(client, username));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_is_locked_after_its_attempts_and_others_are_not() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let user: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            throttle.check(attacker, "admin").unwrap();
            throttle.record_failure(attacker, "admin");
        }
        assert!(matches!(
            throttle.check(attacker, "ADMIN"),
            Err(AuthError::RateLimited { .. })
        ));
        throttle.check(user, "admin").unwrap();
        throttle.check(attacker, "alice").unwrap();
    }

    #[test]
    fn a_success_clears_the_count() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        let client: IpAddr = "::1".parse().unwrap();
        throttle.record_failure(client, "bob");
        throttle.record_success(client, "bob");
        throttle.record_failure(client, "bob");
        throttle.check(client, "bob").unwrap();
    }
}
