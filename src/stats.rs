//! Server-wide counters, readable by `STATS`, tests and benchmarks.
//!
//! Plain relaxed atomics: each counter is independent and only ever read as a snapshot, so no
//! ordering between them is promised or needed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Connections with live threads (logged in or not).
    pub connections: AtomicU64,
    /// Logged-in sessions.
    pub sessions: AtomicU64,
    pub messages: AtomicU64,
    /// Lines queued to sessions by fan-out (one message to ten sessions counts ten).
    pub deliveries: AtomicU64,
    /// Sessions disconnected because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Ephemeral events (presence) dropped for a session past its soft mark.
    pub shed: AtomicU64,
    /// Connections turned away: over capacity, or a thread could not be started.
    pub refused: AtomicU64,
    /// Commands refused with `ERR rate-limited`.
    pub rate_limited: AtomicU64,
    /// Sessions disconnected with `BYE flooding`.
    pub flooding: AtomicU64,
    /// Lines a publisher wrote straight into an idle session's socket
    /// (`delivery::write_through`), without waking its writer.
    pub written_through: AtomicU64,
    /// Write-throughs the socket did not take whole, so the writer was woken for the rest.
    pub write_through_leftovers: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
