//! Idempotent sends: the client message ids (`cid=`) a user has used recently, and what each
//! one published, so a retry gets the original `OK` back instead of posting twice.
//!
//! The window is bounded both ways (default: the last 10,000 ids per user, none older than
//! 24 hours), so a user cannot make the server remember ids without limit. A retry after the
//! window has passed publishes again; protocol.md says so.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// What a client id published: enough to repeat its `OK SEND` / `OK DM` exactly, and to tell
/// a retry from a different message sent under the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub room: Arc<str>,
    pub seq: u64,
    pub id: Uuid,
    /// For a DM, the recipient named in `OK DM`.
    pub to: Option<Arc<str>>,
    /// The [`fingerprint`] of what was asked for. `None` for ids stored before fingerprints
    /// were (schema version 2): those are taken as matching, as they always were.
    pub fingerprint: Option<u64>,
}

impl Published {
    /// Whether a post that asks for `fingerprint` is a retry of this one (and so gets its
    /// `OK` again) rather than another message under a reused id (`ERR cid-reused`).
    pub fn is_retry_of(&self, fingerprint: u64) -> bool {
        self.fingerprint.is_none_or(|own| own == fingerprint)
    }
}

/// What a post asks for, as one number: the room it goes to and the body. The verb is left
/// out on purpose: `DM bob` and `SEND dm:alice:bob` post the same message to the same room,
/// and the room already tells recipients apart (a DM to carol goes to `dm:alice:carol`).
/// Stored beside the client id, in memory and in the store, instead of the body itself, so
/// the window costs a few bytes per id. FNV-1a, because it must give
/// the same number in every build that reads the store; collisions only matter between one
/// user's own messages, and a collision makes a different message look like a retry, which
/// is what every reused id did before fingerprints.
pub fn fingerprint(room: &str, body: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    // 0xff never occurs in UTF-8, so it separates the fields unambiguously.
    [room, body]
        .iter()
        .flat_map(|field| field.bytes().chain([0xff]))
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
}

pub struct ClientIds {
    by_id: HashMap<Box<str>, Published>,
    /// Ids in the order they were recorded, for eviction by count and by age.
    order: VecDeque<(Box<str>, Instant)>,
    max_ids: usize,
    max_age: Duration,
}

impl ClientIds {
    pub fn new(max_ids: usize, max_age: Duration) -> ClientIds {
        ClientIds {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            max_ids,
            max_age,
        }
    }

    pub fn get(&mut self, cid: &str, now: Instant) -> Option<&Published> {
        self.evict(now);
        self.by_id.get(cid)
    }

    pub fn record(&mut self, cid: &str, published: Published, now: Instant) {
        if self.max_ids == 0 {
            return;
        }
        if self.by_id.insert(cid.into(), published).is_none() {
            self.order.push_back((cid.into(), now));
        }
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        while let Some((cid, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > self.max_age;
            if !expired && self.order.len() <= self.max_ids {
                break;
            }
            self.by_id.remove(cid);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(seq: u64) -> Published {
        Published {
            room: Arc::from("general"),
            seq,
            id: Uuid::nil(),
            to: None,
            fingerprint: Some(0),
        }
    }

    #[test]
    fn remembers_ids_within_the_window() {
        let now = Instant::now();
        let mut ids = ClientIds::new(2, Duration::from_secs(60));
        ids.record("a", published(1), now);
        ids.record("b", published(2), now);
        assert_eq!(ids.get("a", now).map(|p| p.seq), Some(1));
        ids.record("c", published(3), now);
        assert_eq!(ids.get("a", now), None, "evicted by count");
        assert_eq!(ids.get("c", now).map(|p| p.seq), Some(3));
    }

    #[test]
    fn a_fingerprint_tells_room_and_body_apart() {
        let base = fingerprint("general", "hi");
        assert_eq!(base, fingerprint("general", "hi"));
        for other in [
            fingerprint("general", "hi "),
            fingerprint("random", "hi"),
            fingerprint("dm:alice:bob", "hi"),
            fingerprint("generalh", "i"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn forgets_ids_older_than_the_window() {
        let start = Instant::now();
        let mut ids = ClientIds::new(100, Duration::from_secs(10));
        ids.record("a", published(1), start);
        assert!(ids.get("a", start + Duration::from_secs(10)).is_some());
        assert!(ids.get("a", start + Duration::from_secs(11)).is_none());
    }
}
