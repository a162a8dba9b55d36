//! Accounts: a password for a name, hashed with argon2id; the throttle that slows password
//! guessing; and the quota on new accounts.
//!
//! A name without a password can be used by anyone (unless the server runs with
//! `--require-account`); a name with one only with it. Passwords are never logged, echoed or
//! stored: only their argon2id hash (PHC string, with a random per-user salt) is kept.
//!
//! What the guards apply to (protocol.md, LOGIN, says the same to clients):
//! - a LOGIN with no password for a name without an account checks nothing, so nothing
//!   throttles it: behind a same-host TLS proxy every client is 127.0.0.1, and one guesser
//!   must not slow everybody else down;
//! - every other LOGIN (one that carries a password, or names an account) is a *check*: for
//!   one name, at most one check at a time, and after failures not before the name's delay;
//!   likewise for the client's address (IPv6 by /64) once that address has failed. Loopback
//!   addresses are exempt from the address part unless the operator asks (`--per-ip-loopback`),
//!   for the same proxy reason the connection cap exempts them;
//! - creating an account (a LOGIN with a password for a new name, or REGISTER) also spends
//!   from a token bucket per address and one for the whole server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::lock_rank::{Rank, RankedCondvar, RankedMutex};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::protocol::{ClientError, ErrorCode};
use crate::quota::{Quota, Rate};
use crate::rate::address_key;

/// Hashing costs ~19 MiB and tens of milliseconds of CPU (argon2's defaults, OWASP's
/// recommendation). At most this many run at once, so a burst of logins cannot take all the
/// memory or starve the cores; the rest wait their turn.
const CONCURRENT_HASHES: usize = 2;

/// argon2's working memory with the default parameters, in 1 KiB blocks.
const HASH_BLOCKS: usize = Params::DEFAULT.block_count();

/// The working memory of every hash: at most [`CONCURRENT_HASHES`] buffers, allocated on first
/// use and reused until the server is idle (see [`release_idle_hashing_memory`]). Each hash allocating its own 19 MiB would leave them cached in the
/// allocator's per-thread arenas (glibc keeps freed chunks of that size): a burst of account
/// creation once left ~0.9 GB resident after every client had gone. Leaf lock.
static HASHING_MEMORY: RankedMutex<HashingMemory> = RankedMutex::new(
    Rank::Leaf,
    HashingMemory {
        free: Vec::new(),
        allocated: 0,
    },
);
static HASHING_MEMORY_RETURNED: RankedCondvar = RankedCondvar::new();

struct HashingMemory {
    free: Vec<Box<[Block]>>,
    allocated: usize,
}

/// Frees the hashing buffers if no hash is running: called by the periodic sweep, so the
/// 2 x 19 MiB go back once a burst of logins is over, instead of staying for good.
pub fn release_idle_hashing_memory() {
    let mut pool = HASHING_MEMORY.lock();
    if pool.free.len() == pool.allocated {
        pool.allocated = 0;
        pool.free = Vec::new();
    }
}

/// One hashing buffer, lent for one hash; given back on drop (a panic included).
struct Lease(Option<Box<[Block]>>);

impl Lease {
    fn take() -> Lease {
        let mut pool = HASHING_MEMORY.lock();
        loop {
            if let Some(blocks) = pool.free.pop() {
                return Lease(Some(blocks));
            }
            if pool.allocated < CONCURRENT_HASHES {
                pool.allocated += 1;
                drop(pool);
                return Lease(Some(vec![Block::new(); HASH_BLOCKS].into_boxed_slice()));
            }
            HASHING_MEMORY_RETURNED.wait(&mut pool);
        }
    }

    fn blocks(&mut self) -> &mut [Block] {
        self.0
            .as_mut()
            .expect("a lease holds its buffer until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(blocks) = self.0.take() {
            HASHING_MEMORY.lock().free.push(blocks);
            HASHING_MEMORY_RETURNED.notify_one();
        }
    }
}

/// Runs argon2 `hasher` over `password` and `salt` into `out`, in a pooled buffer.
fn hash_into(
    hasher: &Argon2<'_>,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let mut lease = Lease::take();
    let needed = hasher.params().block_count();
    match lease.blocks().get_mut(..needed) {
        Some(blocks) => {
            hasher.hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
        }
        // A hash stored with costlier parameters than this server uses (none is written by
        // it): argon2 allocates for it. The lease still counts it among the concurrent hashes.
        None => hasher.hash_password_into(password.as_bytes(), salt, out),
    }
}

/// The argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let failed = |e: &dyn std::fmt::Display| format!("hashing failed: {e}");
    let params = Params::DEFAULT;
    let salt = argon2::password_hash::generate_salt();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    hash_into(&hasher, password, &salt, &mut out).map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(algorithm, version, params);
    if hash_into(&hasher, password, salt, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| &computed == expected)
}

/// The throttle's key for a client address: IPv6 by its /64 (one host is routinely given a
/// whole /64, as for the connection cap), and `None`, not throttled by address, for a
/// connection without one or from loopback unless `count_loopback` (`--per-ip-loopback`):
/// behind a TLS proxy on the same host every client is 127.0.0.1.
pub fn throttle_address(peer: Option<IpAddr>, count_loopback: bool) -> Option<IpAddr> {
    let peer = peer?;
    let key = address_key(peer);
    let loopback = peer.is_loopback() || key.is_loopback();
    (count_loopback || !loopback).then_some(key)
}

/// `ERR rate-limited :retry in <n>ms`, the reply to an attempt refused by a guard here.
pub fn retry_later(wait: Duration) -> ClientError {
    ClientError::new(
        ErrorCode::RateLimited,
        format!("retry in {}ms", wait.as_millis().max(1)),
    )
}

/// Slows password guessing. After each failed check for a name, or from an address, the next
/// check for that name or from that address waits twice as long (0.25 s, 0.5 s, 1 s, ... up to
/// 16 s); a success clears the name's count. And a name is checked by one attempt at a time
/// (an address too, once it has failed): an attempt that arrives while another is waiting or
/// being checked is refused at once, unhashed, with a retry hint. Without that, a hundred
/// connections waiting out the same delay were all checked together when it ended.
///
/// The throttle also holds the quota on new accounts ([`LoginThrottle::admit_new_account`]).
pub struct LoginThrottle {
    /// Leaf lock.
    failures: RankedMutex<HashMap<ThrottleKey, Failures>>,
    /// Leaf lock.
    new_accounts: RankedMutex<Quota<IpAddr>>,
    /// Leaf lock.
    new_names: RankedMutex<Quota<IpAddr>>,
}

impl Default for LoginThrottle {
    fn default() -> LoginThrottle {
        LoginThrottle::with_new_names(NEW_NAMES_OVERALL)
    }
}

impl LoginThrottle {
    /// A throttle that admits `new_names_overall` new user names on the whole server
    /// (`--names-per-minute`; the default is [`NEW_NAMES_OVERALL`]).
    pub fn with_new_names(new_names_overall: Rate) -> LoginThrottle {
        LoginThrottle {
            failures: RankedMutex::new(Rank::Leaf, HashMap::new()),
            new_accounts: RankedMutex::new(
                Rank::Leaf,
                Quota::new(
                    NEW_ACCOUNTS_OVERALL,
                    NEW_ACCOUNTS_PER_ADDRESS,
                    Instant::now(),
                ),
            ),
            new_names: RankedMutex::new(
                Rank::Leaf,
                Quota::new(new_names_overall, NEW_NAMES_PER_ADDRESS, Instant::now()),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Name(Box<str>),
    /// An address as [`throttle_address`] keys it.
    Address(IpAddr),
}

struct Failures {
    count: u32,
    last: Instant,
    /// An attempt holds this key: it is waiting out the delay or being checked.
    checking: bool,
}

impl Failures {
    /// When the next check may start.
    fn not_before(&self) -> Instant {
        if self.count == 0 {
            return self.last;
        }
        let delay = FIRST_DELAY
            .saturating_mul(1 << (self.count - 1).min(6))
            .min(MAX_DELAY);
        self.last + delay
    }
}

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(16);
/// Added to a refused attempt's retry hint: about what one check takes, so a client that
/// waits as told usually finds the key free.
const CHECK_ALLOWANCE: Duration = Duration::from_millis(100);
/// Entries idle this long are forgotten, and the table never holds more than MAX_ENTRIES, so
/// an attacker cycling names cannot grow it without bound.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_ENTRIES: usize = 100_000;

/// The right to check one password: how long to wait first, then the outcome. Dropped
/// without an outcome (the attempt created an account, or was refused by the quota), it
/// just frees the keys.
#[must_use = "an attempt holds its name until it is dropped"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    name: ThrottleKey,
    /// The address key, if this attempt holds it (only an address that has failed is held).
    address: Option<ThrottleKey>,
    /// The address to charge a failure to.
    charge: Option<IpAddr>,
    wait: Duration,
}

impl LoginThrottle {
    /// Claims the check of a password for `name` from `address` (see [`throttle_address`]).
    /// `Err` is how long to wait before trying again: another attempt holds the name or the
    /// address.
    pub fn begin(
        &self,
        name: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let mut table = self.failures.lock();
        let name_key = ThrottleKey::Name(name.into());
        let address_key = address.map(ThrottleKey::Address);
        let mut wait = Duration::ZERO;
        for key in [Some(&name_key), address_key.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(f) = table.get(key) {
                let until = f.not_before().saturating_duration_since(now);
                if f.checking {
                    return Err(until + CHECK_ALLOWANCE);
                }
                wait = wait.max(until);
            }
        }
        if table.len() >= MAX_ENTRIES {
            forget_idle(&mut table, now);
        }
        // A name without failures gets an entry too, so a second attempt sees the first. If
        // the table is full even so, the name goes unguarded rather than locked out.
        if let Some(entry) = table.get_mut(&name_key) {
            entry.checking = true;
        } else if table.len() < MAX_ENTRIES {
            table.insert(
                name_key.clone(),
                Failures {
                    count: 0,
                    last: now,
                    checking: true,
                },
            );
        }
        // An address is shared by many people (NAT, proxies): only one that has failed is
        // limited to an attempt at a time.
        let held_address = address_key.filter(|key| match table.get_mut(key) {
            Some(entry) if entry.count > 0 => {
                entry.checking = true;
                true
            }
            _ => false,
        });
        Ok(Attempt {
            throttle: self,
            name: name_key,
            address: held_address,
            charge: address,
            wait,
        })
    }

    /// Spends one new account from `address`'s quota (see [`throttle_address`]; `None`: only
    /// the server-wide one). `Err` is how long until one is available.
    pub fn admit_new_account(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        self.new_accounts.lock().admit(address, now)
    }

    /// Spends one of the quota on new user names (see `NEW_NAMES_PER_ADDRESS`).
    pub fn admit_new_name(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        self.new_names.lock().admit(address, now)
    }
}

fn forget_idle(table: &mut HashMap<ThrottleKey, Failures>, now: Instant) {
    table.retain(|_, f| f.checking || now.saturating_duration_since(f.last) < FORGET_AFTER);
}

impl Attempt<'_> {
    /// How long the attempt must wait before its password is checked. The waiting is done by
    /// the caller, on the connection's own reader thread: nobody else waits.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The password was right: the name's failures are forgotten (the address's are not, so
    /// a guesser cannot clear its address by logging in to its own account).
    pub fn succeeded(self) {
        // A statement of its own: the guard is released before `self` drops (and locks).
        self.throttle.failures.lock().remove(&self.name);
    }

    /// The password was missing or wrong: the name's and the address's next checks wait
    /// longer.
    pub fn failed(self, now: Instant) {
        self.charge_failure(now);
    }

    fn charge_failure(&self, now: Instant) {
        let mut table = self.throttle.failures.lock();
        if table.len() >= MAX_ENTRIES {
            forget_idle(&mut table, now);
        }
        let keys = [
            Some(self.name.clone()),
            self.charge.map(ThrottleKey::Address),
        ];
        for key in keys.into_iter().flatten() {
            if table.len() >= MAX_ENTRIES && !table.contains_key(&key) {
                continue;
            }
            let entry = table.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                checking: false,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut table = self.throttle.failures.lock();
        for key in [Some(&self.name), self.address.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(entry) = table.get_mut(key) {
                entry.checking = false;
                if entry.count == 0 {
                    table.remove(key);
                }
            }
        }
    }
}

/// New accounts per address (IPv6 by /64): a burst of 5, then 5 a minute. Each one is a
/// stored user and an argon2 hash; a person needs one.
const NEW_ACCOUNTS_PER_ADDRESS: Rate = Rate {
    burst: 5,
    per: Duration::from_secs(60),
};
/// New accounts on the whole server: a burst of 60, then 60 a minute (3,600 an hour), so
/// addresses in many places together cannot fill the store or keep the hashing busy either.
const NEW_ACCOUNTS_OVERALL: Rate = Rate {
    burst: 60,
    per: Duration::from_secs(60),
};
/// New user names (first LOGIN of a name without a password) per address: each is a user
/// kept for good, so a client cannot mint them without limit (security review finding 11).
const NEW_NAMES_PER_ADDRESS: Rate = Rate {
    burst: 30,
    per: Duration::from_secs(60),
};
/// New user names on the whole server: generous for people, a bound for scripts.
pub const NEW_NAMES_OVERALL: Rate = Rate {
    burst: 1000,
    per: Duration::from_secs(60),
};

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt every time");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    /// Hashes stored before hashing used the pooled memory (argon2's own hasher) still verify,
    /// and argon2 agrees with ours.
    #[test]
    fn pooled_hashes_match_argon2s_own() {
        let theirs = Argon2::default()
            .hash_password(b"battery staple")
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &theirs));
        assert!(!verify_password("battery stapl", &theirs));
        let ours = hash_password("battery staple").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2::PasswordVerifier::verify_password(
            &Argon2::default(),
            b"battery staple",
            &parsed
        )
        .is_ok());
        // Cheaper parameters than ours use a part of the pooled buffer.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"x")
        .unwrap()
        .to_string();
        assert!(verify_password("x", &cheap));
    }

    /// However many threads hash at once, at most CONCURRENT_HASHES buffers ever exist.
    #[test]
    fn hashing_memory_is_a_fixed_pool() {
        std::thread::scope(|scope| {
            for i in 0..6 {
                scope.spawn(move || hash_password(&format!("pw{i}")).unwrap());
            }
        });
        // Other tests may be hashing now too, so only the total is certain.
        let pool = HASHING_MEMORY.lock();
        assert!(pool.allocated <= CONCURRENT_HASHES, "{}", pool.allocated);
        assert!(pool.free.len() <= pool.allocated);
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn throttle_doubles_per_failure_and_resets_on_success() {
        let throttle = LoginThrottle::default();
        let (addr, other) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Instant::now();
        let wait = |name: &str, address, at| throttle.begin(name, address, at).unwrap().wait();
        assert_eq!(wait("alice", addr, t0), Duration::ZERO);
        throttle.begin("alice", addr, t0).unwrap().failed(t0);
        assert_eq!(wait("alice", other, t0), FIRST_DELAY, "per name");
        assert_eq!(wait("bob", addr, t0), FIRST_DELAY, "per address");
        throttle.begin("alice", addr, t0).unwrap().failed(t0);
        assert_eq!(wait("alice", other, t0), FIRST_DELAY * 2);
        throttle.begin("alice", other, t0).unwrap().succeeded();
        assert_eq!(wait("alice", other, t0), Duration::ZERO);
        assert_eq!(
            wait("alice", addr, t0),
            FIRST_DELAY * 2,
            "the address still waits"
        );
        assert_eq!(wait("bob", addr, t0 + FIRST_DELAY * 2), Duration::ZERO);
    }

    /// Finding 3: parallel attempts on one name are not all checked when the delay ends;
    /// the second is refused while the first holds the name, and may go once it is done.
    #[test]
    fn a_name_is_checked_by_one_attempt_at_a_time() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        throttle
            .begin("alice", ip("10.0.0.1"), t0)
            .unwrap()
            .failed(t0);
        let first = throttle.begin("alice", ip("10.0.0.2"), t0).unwrap();
        assert_eq!(first.wait(), FIRST_DELAY);
        let refused = throttle.begin("alice", ip("10.0.0.3"), t0).err();
        assert_eq!(refused, Some(FIRST_DELAY + CHECK_ALLOWANCE));
        assert!(
            throttle.begin("bob", ip("10.0.0.3"), t0).is_ok(),
            "other names go on"
        );
        let t1 = t0 + FIRST_DELAY;
        first.failed(t1);
        let next = throttle.begin("alice", ip("10.0.0.3"), t1).unwrap();
        assert_eq!(next.wait(), FIRST_DELAY * 2, "the delay doubled meanwhile");
        drop(next);
        assert!(
            throttle.begin("alice", ip("10.0.0.3"), t1).is_ok(),
            "dropped: freed"
        );
    }

    /// An address is held by one attempt at a time only once it has failed: people behind one
    /// NAT log in together, a guesser's address does not.
    #[test]
    fn a_failing_address_is_checked_by_one_attempt_at_a_time() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let addr = ip("10.0.0.1");
        let a = throttle.begin("a", addr, t0).unwrap();
        assert!(throttle.begin("b", addr, t0).is_ok(), "no failures: shared");
        a.failed(t0);
        let c = throttle.begin("c", addr, t0).unwrap();
        assert_eq!(c.wait(), FIRST_DELAY);
        assert!(
            throttle.begin("d", addr, t0).is_err(),
            "held after a failure"
        );
        assert!(throttle.begin("d", ip("10.0.0.2"), t0).is_ok());
    }

    /// Finding 4: the address part keys IPv6 by /64, as the connection cap does; loopback is
    /// not throttled by address unless the operator asks.
    #[test]
    fn addresses_are_throttled_per_ipv6_64_and_loopback_only_if_asked() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let key = |s: &str| throttle_address(ip(s), false);
        throttle
            .begin("acct0", key("2001:db8:77::2"), t0)
            .unwrap()
            .failed(t0);
        let same_64 = throttle.begin("fresh", key("2001:db8:77::3"), t0).unwrap();
        assert_eq!(same_64.wait(), FIRST_DELAY);
        drop(same_64);
        let other_64 = throttle.begin("fresh", key("2001:db8:78::3"), t0).unwrap();
        assert_eq!(other_64.wait(), Duration::ZERO);
        assert_eq!(
            key("::ffff:10.1.2.3"),
            ip("10.1.2.3"),
            "mapped IPv4 is IPv4"
        );
        assert_eq!(key("10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(key("127.0.0.1"), None);
        assert_eq!(key("::1"), None);
        assert_eq!(key("::ffff:127.0.0.1"), None);
        assert_eq!(throttle_address(ip("::1"), true), ip("::"));
        assert_eq!(throttle_address(ip("127.0.0.1"), true), ip("127.0.0.1"));
        assert_eq!(throttle_address(None, true), None);
    }

    /// Finding 6: new accounts are limited per address (/64) and overall, and a refused one
    /// spends nothing.
    #[test]
    fn new_accounts_are_limited_per_address_and_overall() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let addr = throttle_address(ip("2001:db8::1"), false);
        let per_address = NEW_ACCOUNTS_PER_ADDRESS;
        for _ in 0..per_address.burst {
            throttle.admit_new_account(addr, t0).unwrap();
        }
        let same_64 = throttle_address(ip("2001:db8::2"), false);
        let wait = throttle.admit_new_account(same_64, t0).unwrap_err();
        assert_eq!(wait, per_address.per / per_address.burst);
        let mut admitted = per_address.burst;
        for i in 0..1000u32 {
            let other = IpAddr::from([10, 0, (i / 256) as u8, i as u8]);
            if throttle.admit_new_account(Some(other), t0).is_err() {
                break;
            }
            admitted += 1;
        }
        assert_eq!(
            admitted, NEW_ACCOUNTS_OVERALL.burst,
            "the server-wide quota"
        );
        assert!(throttle.admit_new_account(None, t0).is_err());
        let later = t0 + per_address.per / per_address.burst;
        assert!(
            throttle.admit_new_account(same_64, later).is_ok(),
            "refilled"
        );
    }
}
