//! A room's recent log: the last messages it keeps in memory, so SYNC and HISTORY of what was
//! just said never touch the disk. Everything older is in the store.
//!
//! Memory is bounded three ways, because rooms are cheap to create and a message may be 4 KiB:
//! - per room by count (`--recent`) and by bytes (`--recent-bytes`), oldest dropped first;
//! - server-wide by a [`MemoryBudget`] (`--recent-memory`): when every room's log together is
//!   over it, the logs of the rooms least recently active are dropped whole
//!   (`ChatServer::trim_recent_logs`) until the total is back under three quarters of it.
//!
//! Dropping a log loses nothing with a durable store: SYNC and HISTORY read the store for
//! whatever is not in memory. With `--store memory` the log *is* the history, so what is
//! dropped is gone, and SYNC says `GAP` for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::message::Message;

/// The server-wide budget for recent logs, shared by every room.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes held by all recent logs together (an estimate: see [`footprint`]).
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// Whether the logs together hold more than the budget.
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }

    /// Where trimming stops: a quarter below the limit, so one trim buys room for many posts
    /// rather than running again on the next one.
    pub fn back_under(&self) -> bool {
        self.used() <= self.limit / 4 * 3
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Relaxed);
    }
}

/// What one room's log may hold.
#[derive(Debug, Clone, Copy)]
pub struct RecentLimits {
    pub messages: usize,
    pub bytes: usize,
}

/// The last settled messages of one room, oldest first. Lives inside the room's locked state.
pub struct RecentLog {
    messages: VecDeque<Arc<Message>>,
    /// The footprint of `messages`, counted in `budget` too.
    bytes: usize,
    limits: RecentLimits,
    budget: Arc<MemoryBudget>,
}

/// The memory a message held in a log costs: its body, plus the `Message` and the `Arc`
/// around it. Room and sender names are shared with the room and the user, so not counted.
pub fn footprint(message: &Message) -> usize {
    std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>() + message.body.len()
}

impl RecentLog {
    pub fn new(limits: RecentLimits, budget: Arc<MemoryBudget>) -> RecentLog {
        RecentLog {
            messages: VecDeque::new(),
            bytes: 0,
            limits,
            budget,
        }
    }

    /// Appends the newest message, dropping the oldest past either limit.
    pub fn push(&mut self, message: Arc<Message>) {
        let size = footprint(&message);
        if self.limits.messages == 0 || size > self.limits.bytes {
            return;
        }
        while self.messages.len() >= self.limits.messages || self.bytes + size > self.limits.bytes {
            self.pop_front();
        }
        self.bytes += size;
        self.budget.add(size);
        self.messages.push_back(message);
    }

    fn pop_front(&mut self) {
        if let Some(oldest) = self.messages.pop_front() {
            let size = footprint(&oldest);
            self.bytes -= size;
            self.budget.release(size);
        }
    }

    /// Drops the whole log (the server is over its memory budget and this room is among the
    /// least recently active). Returns the bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.bytes;
        self.messages.clear();
        self.bytes = 0;
        self.budget.release(freed);
        freed
    }

    pub fn front(&self) -> Option<&Arc<Message>> {
        self.messages.front()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Arc<Message>> {
        self.messages.iter()
    }
}

impl Drop for RecentLog {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn message(seq: u64, body_len: usize) -> Arc<Message> {
        Arc::new(Message {
            id: Uuid::now_v7(),
            room: Arc::from("r"),
            seq,
            sender: Arc::from("u"),
            body: "x".repeat(body_len).into(),
            sent_at: Utc::now(),
        })
    }

    #[test]
    fn bounded_by_count_and_bytes_and_counted_in_the_budget() {
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let size = footprint(&message(0, 1000));
        let limits = RecentLimits {
            messages: 10,
            bytes: 3 * size,
        };
        let mut log = RecentLog::new(limits, Arc::clone(&budget));
        for seq in 1..=5 {
            log.push(message(seq, 1000));
        }
        let seqs: Vec<u64> = log.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [3, 4, 5], "three fit in the byte limit");
        assert_eq!(budget.used(), 3 * size);
        let limits = RecentLimits {
            messages: 2,
            bytes: 1 << 20,
        };
        let mut small = RecentLog::new(limits, Arc::clone(&budget));
        for seq in 1..=5 {
            small.push(message(seq, 10));
        }
        assert_eq!(small.iter().count(), 2, "two fit in the count limit");
        assert_eq!(log.clear(), 3 * size);
        drop(small);
        assert_eq!(
            budget.used(),
            0,
            "dropping and clearing give the bytes back"
        );
    }

    #[test]
    fn the_budget_says_when_to_trim_and_when_to_stop() {
        let budget = MemoryBudget::new(100);
        budget.add(101);
        assert!(budget.over() && !budget.back_under());
        budget.release(26);
        assert!(!budget.over() && budget.back_under());
    }
}
