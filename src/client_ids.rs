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

/// What a client id published: enough to repeat its `OK SEND` / `OK DM` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub room: Arc<str>,
    pub seq: u64,
    pub id: Uuid,
    /// For a DM, the recipient named in `OK DM`.
    pub to: Option<Arc<str>>,
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
    fn forgets_ids_older_than_the_window() {
        let start = Instant::now();
        let mut ids = ClientIds::new(100, Duration::from_secs(10));
        ids.record("a", published(1), start);
        assert!(ids.get("a", start + Duration::from_secs(10)).is_some());
        assert!(ids.get("a", start + Duration::from_secs(11)).is_none());
    }
}
