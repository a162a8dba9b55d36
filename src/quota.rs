//! Quotas on creating things that stay: accounts, user names, rooms.
//!
//! Each is persisted and kept in memory for good, so the rate at which clients can make them
//! bounds how fast the server's memory and store can grow. A [`Quota`] is a token bucket for
//! the whole server plus one per key (an address, a user): both must allow a creation, and
//! one that either refuses gets `ERR rate-limited :retry in <n>ms`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::rate::TokenBucket;

/// A burst of `burst` creations, refilled at `burst` per `per`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub per: Duration,
}

impl Rate {
    fn bucket(self, now: Instant) -> TokenBucket {
        TokenBucket::full(
            self.burst,
            f64::from(self.burst) / self.per.as_secs_f64(),
            now,
        )
    }
}

/// Keys whose bucket is tracked at once. Past it, idle ones (full again) are forgotten; if
/// none is, new keys are held to the server-wide bucket only.
const MAX_KEYS: usize = 10_000;

pub struct Quota<K> {
    overall: TokenBucket,
    per_key_rate: Rate,
    /// Each key's bucket, with when it last spent (it is full again `per_key_rate.per`
    /// later, and then no different from a new one).
    per_key: HashMap<K, (TokenBucket, Instant)>,
}

impl<K: Hash + Eq> Quota<K> {
    pub fn new(overall: Rate, per_key: Rate, now: Instant) -> Quota<K> {
        Quota {
            overall: overall.bucket(now),
            per_key_rate: per_key,
            per_key: HashMap::new(),
        }
    }

    /// Spends one creation for `key` (`None`: the server-wide bucket only), or says how long
    /// until one is allowed. Both buckets are charged or neither.
    pub fn admit(&mut self, key: Option<K>, now: Instant) -> Result<(), Duration> {
        if self.per_key.len() >= MAX_KEYS {
            let refill = self.per_key_rate.per;
            self.per_key
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
        }
        let mut overall = self.overall.clone();
        overall.take(now)?;
        let key = key.filter(|key| self.per_key.contains_key(key) || self.per_key.len() < MAX_KEYS);
        if let Some(key) = key {
            let rate = self.per_key_rate;
            let (bucket, last) = self
                .per_key
                .entry(key)
                .or_insert_with(|| (rate.bucket(now), now));
            let mut charged = bucket.clone();
            charged.take(now)?;
            *bucket = charged;
            *last = now;
        }
        self.overall = overall;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_per_key_and_overall_and_refilled() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut quota = Quota::new(
            Rate {
                burst: 3,
                per: minute,
            },
            Rate {
                burst: 2,
                per: minute,
            },
            t0,
        );
        quota.admit(Some("a"), t0).unwrap();
        quota.admit(Some("a"), t0).unwrap();
        let wait = quota.admit(Some("a"), t0).unwrap_err();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        quota.admit(Some("b"), t0).unwrap();
        assert!(
            quota.admit(Some("c"), t0).is_err(),
            "the server-wide burst is spent"
        );
        assert!(quota.admit(Some("a"), t0 + minute).is_ok(), "refilled");
    }
}
