//! The arithmetic of limits, shared by the transport (the command rate limit, the cap on
//! connections per address) and the domain (login throttle, quotas on new accounts and new
//! rooms): a token bucket, and how client addresses are grouped.
//!
//! Everything takes the time as an argument instead of reading a clock, so tests drive it
//! with made-up instants.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A token bucket: holds up to `capacity` tokens, gains `per_second` of them every second,
/// and each action takes one. Full at the start, so a client's first burst is free.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_second` must be positive.
    pub fn full(capacity: u32, per_second: f64, now: Instant) -> TokenBucket {
        assert!(per_second > 0.0, "a token bucket must refill");
        TokenBucket {
            capacity: f64::from(capacity),
            per_second,
            tokens: f64::from(capacity),
            updated: now,
        }
    }

    /// Takes a token if there is one. Otherwise takes nothing and says how long until there
    /// will be one, rounded up to the millisecond so a client that waits exactly that long
    /// succeeds.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        // Never move `updated` backwards: an instant older than the last one adds nothing.
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - self.tokens) / self.per_second * 1000.0).ceil();
        Err(Duration::try_from_secs_f64(wait_ms / 1000.0).unwrap_or(Duration::MAX))
    }
}

/// The address a per-address cap counts: IPv4 addresses as they are (also when they arrive
/// as IPv4-mapped IPv6 on a dual-stack listener), IPv6 addresses by their /64 prefix,
/// because one host is routinely given a whole /64 and could otherwise pick a fresh address
/// for every connection.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}
