//! Login throttling: per client address and username, and per address.
//!
//! Each login *attempt* is counted when it starts, before the password is
//! checked, so forty concurrent guesses are throttled exactly like forty in
//! a row: the first `attempts` are checked, the rest refused with
//! RATE_LIMITED. A correct password clears its (address, username) pair and
//! gives its attempt back; a wrong one (or one that never finishes) stays
//! counted until the window that began with the pair's first attempt ends.
//!
//! Two budgets per window:
//! - `attempts` per (address, username): guessing one account's password;
//! - `address_attempts` per address, whatever the usernames: spraying many
//!   accounts, or flooding the table with junk names. Because every new
//!   username costs the address one attempt, one address holds at most
//!   `address_attempts` usernames, and junk names cannot push a locked pair
//!   out: they run out of budget first.
//!
//! Keying on the address means a flood from one address never locks the
//! owner out from another. IPv6 addresses are keyed by their /64 prefix
//! (what one host or subscriber line usually gets), so walking a prefix buys
//! nothing.
//!
//! Counts live in memory, per node: a restart forgets them. The table holds
//! at most [`MAX_ADDRESSES`] addresses; when it is full, addresses whose
//! window has ended are dropped, and if none has, a new address is refused
//! until one does (logged): an attacker with that many addresses is slowed
//! down, and no address's count is ever forgotten early.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::AuthError;

/// Addresses tracked at once.
pub const MAX_ADDRESSES: usize = 50_000;

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    shared: Arc<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    attempts: u32,
    address_attempts: u32,
    window: Duration,
    /// Hashes usernames, so that an entry costs the same whatever the name.
    names: RandomState,
    // A std Mutex: it is never held across an await.
    addresses: Mutex<HashMap<IpAddr, Address>>,
}

/// One address's attempts in its current window.
#[derive(Debug)]
struct Address {
    started: Instant,
    attempts: u32,
    /// Attempts per username hash, in the same window.
    users: HashMap<u64, u32>,
}

impl Address {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            attempts: 0,
            users: HashMap::new(),
        }
    }
}

/// A counted attempt. Call [`Attempt::succeeded`] when the password was
/// right; dropping it otherwise leaves it counted as a failure.
#[must_use]
pub struct Attempt {
    shared: Arc<ThrottleState>,
    address: IpAddr,
    user: u64,
}

impl LoginThrottle {
    pub fn new(attempts: u32, address_attempts: u32, window: Duration) -> Self {
        Self {
            shared: Arc::new(ThrottleState {
                attempts,
                address_attempts,
                window,
                names: RandomState::new(),
                addresses: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Counts an attempt to log in as `username` from `client`, or refuses
    /// it when a budget is spent.
    pub fn begin(&self, client: IpAddr, username: &str) -> Result<Attempt, AuthError> {
        let shared = &self.shared;
        let address = address_key(client);
        let user = shared.names.hash_one(username.to_lowercase());
        let now = Instant::now();
        let mut addresses = shared
            .addresses
            .lock()
            .expect("BUG: throttle lock poisoned");
        if !addresses.contains_key(&address) && addresses.len() >= MAX_ADDRESSES {
            addresses.retain(|_, entry| now.duration_since(entry.started) < shared.window);
            if addresses.len() >= MAX_ADDRESSES {
                tracing::warn!(
                    "the login throttle tracks {MAX_ADDRESSES} addresses; refusing logins from new ones until a window ends"
                );
                return Err(AuthError::RateLimited {
                    retry_after_seconds: shared.window.as_secs().max(1),
                });
            }
        }
        let entry = addresses
            .entry(address)
            .or_insert_with(|| Address::new(now));
        let elapsed = now.duration_since(entry.started);
        if elapsed >= shared.window {
            *entry = Address::new(now);
        }
        let retry_after_seconds = shared
            .window
            .saturating_sub(now.duration_since(entry.started))
            .as_secs()
            .max(1);
        let user_attempts = entry.users.get(&user).copied().unwrap_or(0);
        if entry.attempts >= shared.address_attempts || user_attempts >= shared.attempts {
            return Err(AuthError::RateLimited {
                retry_after_seconds,
            });
        }
        entry.attempts += 1;
        *entry.users.entry(user).or_insert(0) += 1;
        Ok(Attempt {
            shared: shared.clone(),
            address,
            user,
        })
    }
}

impl Attempt {
    /// The password was right: the pair starts over and the address gets
    /// its attempt back.
    pub fn succeeded(self) {
        let mut addresses = self
            .shared
            .addresses
            .lock()
            .expect("BUG: throttle lock poisoned");
        if let Some(entry) = addresses.get_mut(&self.address) {
            entry.attempts = entry.attempts.saturating_sub(1);
            entry.users.remove(&self.user);
        }
    }
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6
/// (an IPv4-mapped IPv6 address counts as the IPv4 one).
pub fn address_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(result: Result<Attempt, AuthError>) -> bool {
        matches!(result, Err(AuthError::RateLimited { .. }))
    }

    #[test]
    fn the_pair_is_locked_after_its_attempts_and_others_are_not() {
        let throttle = LoginThrottle::new(3, 50, Duration::from_secs(60));
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let user: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            drop(throttle.begin(attacker, "admin").unwrap());
        }
        assert!(limited(throttle.begin(attacker, "ADMIN")));
        throttle.begin(user, "admin").unwrap().succeeded();
        throttle.begin(attacker, "alice").unwrap().succeeded();
    }

    #[test]
    fn attempts_in_flight_count() {
        let throttle = LoginThrottle::new(5, 50, Duration::from_secs(60));
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        // Forty at once: none has finished when the next starts.
        let started: Vec<_> = (0..40).map(|_| throttle.begin(client, "admin")).collect();
        assert_eq!(started.iter().filter(|r| r.is_ok()).count(), 5);
    }

    #[test]
    fn a_success_clears_the_pair_and_refunds_the_address() {
        let throttle = LoginThrottle::new(2, 3, Duration::from_secs(60));
        let client: IpAddr = "::1".parse().unwrap();
        drop(throttle.begin(client, "bob").unwrap());
        throttle.begin(client, "bob").unwrap().succeeded();
        drop(throttle.begin(client, "bob").unwrap());
        // Two failures left on the address's budget of three: one more.
        throttle.begin(client, "bob").unwrap().succeeded();
        throttle.begin(client, "carol").unwrap().succeeded();
    }

    #[test]
    fn junk_usernames_spend_the_address_budget_instead_of_evicting_a_lock() {
        let throttle = LoginThrottle::new(5, 50, Duration::from_secs(60));
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..5 {
            drop(throttle.begin(attacker, "admin").unwrap());
        }
        let mut refused = 0;
        for n in 0..100_001 {
            match throttle.begin(attacker, &format!("junk-{n}")) {
                Ok(attempt) => drop(attempt),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(refused, 100_001 - 45);
        assert!(limited(throttle.begin(attacker, "admin")));
        // The owner, elsewhere, is not locked out.
        throttle
            .begin("198.51.100.1".parse().unwrap(), "admin")
            .unwrap()
            .succeeded();
    }

    #[test]
    fn an_ipv6_prefix_is_one_address() {
        let throttle = LoginThrottle::new(2, 50, Duration::from_secs(60));
        drop(
            throttle
                .begin("2001:db8::1".parse().unwrap(), "admin")
                .unwrap(),
        );
        drop(
            throttle
                .begin("2001:db8::ffff:2".parse().unwrap(), "admin")
                .unwrap(),
        );
        assert!(limited(
            throttle.begin("2001:db8::3".parse().unwrap(), "admin")
        ));
        throttle
            .begin("2001:db8:0:1::1".parse().unwrap(), "admin")
            .unwrap()
            .succeeded();
    }

    #[test]
    fn a_full_table_refuses_new_addresses_rather_than_forgetting_counts() {
        let throttle = LoginThrottle::new(1, 1, Duration::from_secs(60));
        for n in 0..MAX_ADDRESSES as u32 {
            drop(throttle.begin(IpAddr::V4(n.into()), "x").unwrap());
        }
        assert!(limited(throttle.begin(IpAddr::V4(u32::MAX.into()), "x")));
        // The first address is still locked: nothing was evicted.
        assert!(limited(throttle.begin(IpAddr::V4(0.into()), "x")));
    }
}
