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

/// Refused commands forgiven per second. Slow on purpose: only a client that sends before the
/// time it was told spends refusals, and such a client should run out.
const REFUSALS_FORGIVEN_PER_SECOND: f64 = 1.0;

/// One session's command rate limit: a bucket of commands, a second bucket of refusals, and
/// the latest retry time the session was told.
///
/// A refusal spends one of the session's refusals only when the command arrived *before* the
/// retry time of an earlier refusal: the client sent it without waiting as told. A client
/// that waits every `retry in` it is given is never cut off, however long it keeps sending
/// faster than the rate (issue 19: spending a refusal on every refusal cut such a client off
/// after about 12 s). One that keeps writing as fast as it can is disconnected after
/// `flood_refusals` refusals, within milliseconds, before it has cost the server more than
/// that many short error lines.
///
/// Commands refused together are told successive times, one token interval apart, so that a
/// client with several commands in flight that retries each at its own time finds a token
/// for each instead of all colliding on the first.
#[derive(Debug, Clone)]
pub struct CommandLimiter {
    commands: TokenBucket,
    refusals: TokenBucket,
    /// The time a command refused now would be given by the refusals already made: the latest
    /// retry time told. A command arriving before it did not wait.
    promised: Option<Instant>,
    /// How long the bucket takes to gain one token.
    interval: Duration,
}

impl CommandLimiter {
    pub fn new(limit: &RateLimit, now: Instant) -> CommandLimiter {
        CommandLimiter {
            commands: TokenBucket::full(limit.burst, limit.per_second, now),
            refusals: TokenBucket::full(limit.flood_refusals, REFUSALS_FORGIVEN_PER_SECOND, now),
            promised: None,
            interval: Duration::from_secs_f64(1.0 / limit.per_second),
        }
    }

    /// Charges one command arriving at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let token_in = match self.commands.take(now) {
            Ok(()) => return Admission::Allowed,
            Err(token_in) => token_in,
        };
        let retry_at = match self.promised.filter(|&promised| promised > now) {
            // Told to wait until `promised` and came early: a refusal spent, and the next
            // free time after the ones already told.
            Some(promised) => {
                if self.refusals.take(now).is_err() {
                    return Admission::Flooding;
                }
                (promised + self.interval).max(now + token_in)
            }
            // Waited as told (or was never told): free.
            None => now + token_in,
        };
        self.promised = Some(retry_at);
        Admission::Refused {
            retry_in: ceil_to_millis(retry_at - now),
        }
    }
}

/// Rounded up, so a client that waits exactly the `retry in` it was told is on time.
fn ceil_to_millis(wait: Duration) -> Duration {
    Duration::from_millis(wait.as_nanos().div_ceil(1_000_000) as u64)
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
        // The first refusal is free (nobody had been told to wait); each later one came
        // before its time, so spends a refusal, and is told the next free time.
        for n in 1..=4 {
            let retry_in = Duration::from_secs(n);
            assert_eq!(limiter.admit(t0), Admission::Refused { retry_in });
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
        assert!(
            matches!(limiter.admit(t0), Admission::Refused { .. }),
            "spends one"
        );
        // Two seconds later: a command token and the refusal have come back, and the
        // times told have passed, so the next refusal is free again.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(limiter.admit(t2), Admission::Allowed);
        assert!(
            matches!(limiter.admit(t2), Admission::Refused { .. }),
            "free"
        );
        assert!(matches!(limiter.admit(t2), Admission::Refused { .. }));
        assert!(matches!(limiter.admit(t2), Admission::Refused { .. }));
        assert_eq!(limiter.admit(t2), Admission::Flooding);
    }

    /// Issue 19: one command at a time, sent at once after each OK and after each `retry in`,
    /// for ten minutes past the burst: the old limiter cut this client off after ~12 s.
    #[test]
    fn a_client_that_waits_each_retry_is_never_flooding() {
        let t0 = Instant::now();
        let limit = RateLimit::default();
        let mut limiter = CommandLimiter::new(&limit, t0);
        let mut now = t0;
        let (mut accepted, mut refused) = (0, 0);
        while now < t0 + Duration::from_secs(600) {
            match limiter.admit(now) {
                Admission::Allowed => accepted += 1,
                Admission::Refused { retry_in } => {
                    refused += 1;
                    now += retry_in;
                }
                Admission::Flooding => panic!("flooding after {accepted} commands"),
            }
            now += ms(1);
        }
        assert!(accepted > 5 * 590, "{accepted} accepted");
        assert!(refused > 0);
    }

    /// Forty commands in flight, each resent at the time its refusal gave: every resend finds
    /// a token, and nobody is cut off.
    #[test]
    fn commands_refused_together_are_given_successive_times() {
        let t0 = Instant::now();
        let limit = RateLimit::default();
        let mut limiter = CommandLimiter::new(&limit, t0);
        let mut retries = Vec::new();
        for _ in 0..40 {
            match limiter.admit(t0) {
                Admission::Allowed => {}
                Admission::Refused { retry_in } => retries.push(t0 + retry_in),
                Admission::Flooding => panic!("flooding"),
            }
        }
        assert_eq!(retries.len(), 40 - limit.burst as usize);
        assert!(retries.windows(2).all(|w| w[1] - w[0] >= ms(200)));
        for at in retries {
            assert_eq!(limiter.admit(at), Admission::Allowed);
        }
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
