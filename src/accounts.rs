//! Accounts: a password for a name, hashed with argon2id, and the throttle that slows
//! password guessing.
//!
//! A name without a password can be used by anyone (unless the server runs with
//! `--require-account`); a name with one only with it. Passwords are never logged, echoed or
//! stored: only their argon2id hash (PHC string, with a random per-user salt) is kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use parking_lot::{Condvar, Mutex};

/// Hashing costs ~19 MiB and tens of milliseconds of CPU (argon2's defaults, OWASP's
/// recommendation). At most this many run at once, so a burst of logins cannot take all the
/// memory or starve the cores; the rest wait their turn.
const CONCURRENT_HASHES: usize = 2;

/// Admission to the hashing work. Leaf lock.
static HASHING: Mutex<usize> = Mutex::new(0);
static HASHING_FREE: Condvar = Condvar::new();

fn with_hashing_slot<T>(work: impl FnOnce() -> T) -> T {
    {
        let mut busy = HASHING.lock();
        while *busy >= CONCURRENT_HASHES {
            HASHING_FREE.wait(&mut busy);
        }
        *busy += 1;
    }
    let result = work();
    *HASHING.lock() -= 1;
    HASHING_FREE.notify_one();
    result
}

/// The argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    with_hashing_slot(|| {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| format!("hashing failed: {e}"))
    })
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    with_hashing_slot(|| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Slows password guessing: after each failed login for a name, or from an address, the next
/// attempt for that name or from that address waits twice as long (0.25 s, 0.5 s, 1 s, ...
/// up to 16 s). A success clears the name's count.
#[derive(Default)]
pub struct LoginThrottle {
    /// Leaf lock.
    failures: Mutex<HashMap<ThrottleKey, Failures>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Name(Box<str>),
    Address(IpAddr),
}

struct Failures {
    count: u32,
    last: Instant,
}

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(16);
/// Entries idle this long are forgotten, and the table never holds more than MAX_ENTRIES, so
/// an attacker cycling names cannot grow it without bound.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_ENTRIES: usize = 100_000;

impl LoginThrottle {
    /// How long an attempt for `name` from `address` must wait before it is checked.
    pub fn delay(&self, name: &str, address: IpAddr, now: Instant) -> Duration {
        let failures = self.failures.lock();
        [
            ThrottleKey::Name(name.into()),
            ThrottleKey::Address(address),
        ]
        .iter()
        .filter_map(|key| failures.get(key))
        .map(|f| {
            let delay = FIRST_DELAY
                .saturating_mul(1 << (f.count - 1).min(6))
                .min(MAX_DELAY);
            (f.last + delay).saturating_duration_since(now)
        })
        .max()
        .unwrap_or_default()
    }

    pub fn failed(&self, name: &str, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        for key in [
            ThrottleKey::Name(name.into()),
            ThrottleKey::Address(address),
        ] {
            if failures.len() >= MAX_ENTRIES && !failures.contains_key(&key) {
                continue;
            }
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    pub fn succeeded(&self, name: &str) {
        self.failures.lock().remove(&ThrottleKey::Name(name.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "a fresh salt every time");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn throttle_doubles_per_failure_and_resets_on_success() {
        let throttle = LoginThrottle::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert_eq!(throttle.delay("alice", ip, t0), Duration::ZERO);
        throttle.failed("alice", ip, t0);
        assert_eq!(throttle.delay("alice", other, t0), FIRST_DELAY, "per name");
        assert_eq!(throttle.delay("bob", ip, t0), FIRST_DELAY, "per address");
        throttle.failed("alice", ip, t0);
        assert_eq!(throttle.delay("alice", other, t0), FIRST_DELAY * 2);
        throttle.succeeded("alice");
        assert_eq!(throttle.delay("alice", other, t0), Duration::ZERO);
        assert_eq!(
            throttle.delay("alice", ip, t0),
            FIRST_DELAY * 2,
            "the address still waits"
        );
        assert_eq!(
            throttle.delay("bob", ip, t0 + FIRST_DELAY * 2),
            Duration::ZERO
        );
    }
}
