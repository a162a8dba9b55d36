//! Server-wide counters, readable by `STATS`, `GET /metrics` (`crate::metrics`), tests and
//! benchmarks.
//!
//! Plain relaxed atomics: each counter is independent and only ever read as a snapshot, so no
//! ordering between them is promised or needed. The histograms are atomics too
//! (`metrics::Histogram`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::histogram::ShardedCounter;
use crate::metrics::Histogram;

/// Which front door a session came in by: the `transport` label of `chatd_sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    WebSocket,
    Irc,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Tcp, Transport::WebSocket, Transport::Irc];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
            Transport::Irc => "irc",
        }
    }
}

#[derive(Debug)]
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
    /// Of `refused`: turned away for their address's `--max-per-ip` share...
    pub refused_per_address: AtomicU64,
    /// ...and for a ban (`chatd admin ban`, `BAN`). The rest were over capacity.
    pub refused_banned: AtomicU64,
    /// Logged-in sessions per [`Transport`] (indexed by its position in `Transport::ALL`);
    /// they add up to `sessions`.
    pub sessions_by_transport: [AtomicU64; 3],
    /// Users with at least one session.
    pub users_online: AtomicU64,
    /// Successful LOGINs...
    pub logins: AtomicU64,
    /// ...and refused ones (a wrong or missing password, a ban).
    pub login_failures: AtomicU64,
    /// Bytes written to client connections by writer threads (sharded: every writer adds to
    /// it after every write).
    pub bytes_written: ShardedCounter,
    /// Lines waiting in a connection's queue when its writer wakes (one observation per
    /// write batch).
    pub queue_depth: Histogram,
    /// From a SEND or DM being carried out to its `OK` being queued: store commit included.
    pub send_latency: Histogram,
    /// Lines a publisher wrote straight into an idle session's socket
    /// (`delivery::write_through`), without waking its writer.
    pub written_through: AtomicU64,
    /// Write-throughs the socket did not take whole, so the writer was woken for the rest.
    pub write_through_leftovers: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            connections: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            flooding: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            refused_banned: AtomicU64::new(0),
            sessions_by_transport: Default::default(),
            users_online: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            bytes_written: ShardedCounter::default(),
            queue_depth: Histogram::depth(),
            send_latency: Histogram::latency(),
            written_through: AtomicU64::new(0),
            write_through_leftovers: AtomicU64::new(0),
        }
    }
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

    /// Counts a connection turned away at the door, by the reason's name
    /// (`CloseReason::name`).
    pub fn count_refusal(&self, reason: &str) {
        Stats::add(&self.refused, 1);
        match reason {
            "too_many_connections" => Stats::add(&self.refused_per_address, 1),
            "banned" => Stats::add(&self.refused_banned, 1),
            _ => {}
        }
    }

    /// The per-transport session count for `transport`.
    pub fn transport_sessions(&self, transport: Transport) -> &AtomicU64 {
        let index = Transport::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or(0);
        &self.sessions_by_transport[index]
    }
}
