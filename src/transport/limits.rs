//! Abuse limits enforced by the transport, before a line reaches the chat logic:
//!
//! - [`CommandLimiter`]: a per-session token bucket for commands, and the rule that turns
//!   a session that ignores `ERR rate-limited` into a disconnected one (`BYE flooding`);
//! - [`AddressTable`]: open connections per client address, for `--max-per-ip`.
//!
//! The buckets take the time as an argument instead of reading a clock, so tests drive them
//! with made-up instants and the reader thread passes `Instant::now()`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lock_rank::{Rank, RankedMutex};

use crate::config::RateLimit;
use crate::rate::{address_key, TokenBucket};

/// What the rate limit says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Answer `ERR rate-limited :retry in <ms>` and drop the command.
    Refused {
        retry_in: Duration,
    },
    /// The session kept sending after being refused: close it with `BYE flooding`.
    Flooding,
}

/// Refused commands forgiven per second. Slow on purpose: a client that honours `retry in`
/// is refused at most about once per burst, so only one that ignores the replies runs out.
const REFUSALS_FORGIVEN_PER_SECOND: f64 = 1.0;

/// One session's command rate limit: a bucket of commands, and a second bucket of refusals.
///
/// Every refused command spends a refusal; a session with none left is flooding. So a client
/// that pipelines a burst past its limit, reads `ERR rate-limited` and slows down loses a few
/// refusals and gets them back, while one that keeps writing as fast as it can is
/// disconnected after `flood_refusals` refusals, within milliseconds, before it has cost the
/// server more than that many short error lines.
#[derive(Debug, Clone)]
pub struct CommandLimiter {
    commands: TokenBucket,
    refusals: TokenBucket,
}

impl CommandLimiter {
    pub fn new(limit: &RateLimit, now: Instant) -> CommandLimiter {
        CommandLimiter {
            commands: TokenBucket::full(limit.burst, limit.per_second, now),
            refusals: TokenBucket::full(limit.flood_refusals, REFUSALS_FORGIVEN_PER_SECOND, now),
        }
    }

    /// Charges one command arriving at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.commands.take(now) {
            Ok(()) => Admission::Allowed,
            Err(retry_in) => match self.refusals.take(now) {
                Ok(()) => Admission::Refused { retry_in },
                Err(_) => Admission::Flooding,
            },
        }
    }
}

/// Open connections per client address, for `--max-per-ip`.
#[derive(Debug)]
pub struct AddressTable {
    /// `None`: no cap; then nothing is counted either.
    max_per_address: Option<usize>,
    /// Whether loopback clients are counted (see `Config::per_ip_loopback`).
    count_loopback: bool,
    /// Leaf lock: connections currently open per address key. Taken by the accept thread to
    /// admit a connection and by a connection's [`AddressSlot`] when it ends, never while
    /// holding another lock. An address's entry is removed when its count reaches zero, so
    /// the table holds only addresses that are connected now.
    open: RankedMutex<HashMap<IpAddr, usize>>,
}

impl AddressTable {
    pub fn new(max_per_address: Option<usize>, count_loopback: bool) -> Arc<AddressTable> {
        Arc::new(AddressTable {
            max_per_address,
            count_loopback,
            open: RankedMutex::new(Rank::Leaf, HashMap::new()),
        })
    }

    /// Counts a new connection from `ip` if its address is under the cap. `Ok(None)`: the
    /// address is not counted (no cap, or loopback exempt). The returned slot gives the
    /// place back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<AddressSlot>, AddressFull> {
        let Some(max) = self.max_per_address else {
            return Ok(None);
        };
        let key = address_key(ip);
        // The address itself, not only its key: `::1`'s /64 key is `::`, which is not
        // loopback, and an IPv4-mapped loopback keys to 127.0.0.1.
        if (ip.is_loopback() || key.is_loopback()) && !self.count_loopback {
            return Ok(None);
        }
        let mut open = self.open.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return Err(AddressFull);
        }
        *count += 1;
        Ok(Some(AddressSlot {
            table: Arc::clone(self),
            key,
        }))
    }

    /// Connections counted for `ip`'s address now (for tests).
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&address_key(ip)).copied().unwrap_or(0)
    }
}

/// The client's address already holds its share of connections: refuse this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFull;

/// One connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<AddressTable>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_allows_its_burst_then_refuses_with_the_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(3, 5.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        assert_eq!(bucket.take(t0), Err(ms(200)));
        assert_eq!(bucket.take(t0 + ms(150)), Err(ms(50)));
        assert_eq!(bucket.take(t0 + ms(200)), Ok(()));
        assert_eq!(bucket.take(t0 + ms(200)), Err(ms(200)));
    }

    #[test]
    fn a_bucket_refills_only_up_to_its_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(2, 10.0, t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Err(ms(100)));
    }

    #[test]
    fn an_earlier_instant_neither_refills_nor_panics() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::full(1, 1.0, t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0 - ms(500)), Err(ms(1000)));
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let limit = RateLimit::default();
        let mut limiter = CommandLimiter::new(&limit, t0);
        // 60 s at exactly the sustained rate, after spending the burst.
        for i in 0..limit.burst {
            assert_eq!(limiter.admit(t0 + ms(u64::from(i))), Admission::Allowed);
        }
        for i in 1..=300 {
            assert_eq!(limiter.admit(t0 + ms(200 * i)), Admission::Allowed, "{i}");
        }
    }

    #[test]
    fn a_client_that_ignores_refusals_is_flooding_after_its_refusal_budget() {
        let t0 = Instant::now();
        let limit = RateLimit {
            burst: 2,
            per_second: 1.0,
            flood_refusals: 3,
        };
        let mut limiter = CommandLimiter::new(&limit, t0);
        assert_eq!(limiter.admit(t0), Admission::Allowed);
        assert_eq!(limiter.admit(t0), Admission::Allowed);
        for _ in 0..3 {
            assert_eq!(limiter.admit(t0), Admission::Refused { retry_in: ms(1000) });
        }
        assert_eq!(limiter.admit(t0), Admission::Flooding);
    }

    #[test]
    fn refusals_are_forgiven_over_time() {
        let t0 = Instant::now();
        let limit = RateLimit {
            burst: 1,
            per_second: 1.0,
            flood_refusals: 2,
        };
        let mut limiter = CommandLimiter::new(&limit, t0);
        assert_eq!(limiter.admit(t0), Admission::Allowed);
        assert!(matches!(limiter.admit(t0), Admission::Refused { .. }));
        assert!(matches!(limiter.admit(t0), Admission::Refused { .. }));
        // Two seconds later: a command token and two refusals have come back.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(limiter.admit(t2), Admission::Allowed);
        assert!(matches!(limiter.admit(t2), Admission::Refused { .. }));
        assert!(matches!(limiter.admit(t2), Admission::Refused { .. }));
        assert_eq!(limiter.admit(t2), Admission::Flooding);
    }

    #[test]
    fn addresses_are_counted_per_host_and_per_ipv6_64() {
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address_key("198.51.100.1".parse().unwrap()),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_table_caps_each_address_and_frees_places_on_drop() {
        let table = AddressTable::new(Some(2), false);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.admit(a).unwrap();
        let second = table.admit(a).unwrap();
        assert!(table.admit(a).is_err());
        assert!(table.admit(b).unwrap().is_some());
        assert_eq!(table.open_from(b), 0, "b's slot was dropped at once");
        drop(first);
        assert_eq!(table.open_from(a), 1);
        assert!(table.admit(a).unwrap().is_some());
        drop(second);
        assert_eq!(table.open_from(a), 0);
        assert!(table.open.lock().is_empty(), "empty entries are removed");
    }

    #[test]
    fn loopback_is_exempt_unless_asked_and_no_cap_counts_nothing() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let exempt = AddressTable::new(Some(1), false);
        assert!(exempt.admit(loopback).unwrap().is_none());
        assert!(exempt.admit(loopback).unwrap().is_none());
        let counted = AddressTable::new(Some(1), true);
        let _slot = counted.admit(loopback).unwrap();
        assert!(counted.admit(loopback).is_err());
        let uncapped = AddressTable::new(None, true);
        assert!(uncapped.admit(loopback).unwrap().is_none());
    }

    /// `::1` is loopback too, though its /64 key (`::`) is not.
    #[test]
    fn ipv6_loopback_is_exempt_like_ipv4() {
        let table = AddressTable::new(Some(1), false);
        for _ in 0..3 {
            let slot = table.admit("::1".parse().unwrap()).unwrap();
            assert!(slot.is_none(), "not counted");
        }
    }
}
