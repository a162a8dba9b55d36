//! Persistence: the `Store` trait, its backends, and [`open`], which picks one.
//!
//! - [`memory::MemoryStore`]: keeps nothing. History lives only in each room's recent log and
//!   is lost on restart (rooms get new epochs, so resuming clients are told).
//! - [`sqlite::SqliteStore`] (the default): an embedded SQLite database in WAL mode, written by
//!   one `chatd-store` thread that commits whatever is queued as one transaction (group
//!   commit), so durability costs one fsync per batch rather than per message.
//! - [`postgres::PostgresStore`]: the same design on a PostgreSQL server (one writer thread,
//!   one transaction per batch, a small pool of read connections), reconnecting with backoff
//!   when the connection is lost.
//!
//! Writes are queued with [`Store::write`]. A message's write carries a [`Ticket`]: the
//! poster waits on it, and the message is acknowledged (`OK SEND`) and fanned out only once
//! the ticket says it is stored. Other writes (memberships, read positions, last_seen) are
//! committed in the next batch without anyone waiting.
//!
//! The server sees only `Arc<dyn Store>`: [`open`] is the one place that names a backend, so
//! a new backend is a new file, one arm there and one [`StoreConfig`] variant.

pub mod admin;
pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::lock_rank::{Rank, RankedCondvar, RankedMutex};
use crate::metrics::Histogram;
use chrono::{DateTime, Utc};

use crate::client_ids::Published;
use crate::message::Message;
use crate::room_name::RoomKind;

/// Which store backs the server.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Nothing survives a restart.
    Memory,
    /// An embedded SQLite database file.
    Sqlite(sqlite::SqliteOptions),
    /// A database on a PostgreSQL server.
    Postgres(postgres::PostgresOptions),
}

/// A client id to record with its message: whose, the id, and the fingerprint of what was
/// asked for (see `client_ids::fingerprint`).
#[derive(Debug, Clone)]
pub struct PostedId {
    pub user: Arc<str>,
    pub cid: Box<str>,
    pub fingerprint: u64,
}

/// Opens the configured backend: the only place that names one.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Memory => Arc::new(memory::MemoryStore),
        StoreConfig::Sqlite(options) => Arc::new(sqlite::SqliteStore::open(options.clone())?),
        StoreConfig::Postgres(options) => Arc::new(postgres::PostgresStore::open(options.clone())?),
    })
}

/// What a store forgets, and when. A backend that keeps nothing ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Stored messages older than this are deleted. `None` keeps them forever.
    pub max_age: Option<Duration>,
    /// At most this many stored messages per room (the newest). `None` keeps all.
    pub max_per_room: Option<u64>,
    /// Client ids older than this are forgotten: the idempotency window for retries.
    pub client_id_ttl: Duration,
    /// How often the retention pass runs.
    pub interval: Duration,
}

impl Default for Retention {
    /// Keeps every message; remembers client ids for a day (long enough for a phone that was
    /// offline overnight to retry); checks once a minute.
    fn default() -> Retention {
        Retention {
            max_age: None,
            max_per_room: None,
            client_id_ttl: Duration::from_secs(24 * 60 * 60),
            interval: Duration::from_secs(60),
        }
    }
}

/// A store operation failed. [`StoreError::kind`] says what went wrong in a way a caller can
/// match on; `Display` gives the whole story (what was being done, on which file, and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// The kinds of store failure a caller may want to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The disk (or the store's size cap) is full; freeing space may fix it.
    Full,
    /// The data cannot be opened, read or written: permissions, a read-only or missing
    /// location, an I/O error.
    Unwritable,
    /// The data is damaged, or is not a chatd store at all.
    Corrupt,
    /// The data was written by a newer chatd; it is left untouched rather than risk damage.
    NewerSchema,
    /// The store cannot take requests now: its writer stopped, or another process holds it.
    Unavailable,
    /// Anything else.
    Other,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Prefixes what was being done when it failed: `"opening /var/chatd.db: " + message`.
    pub fn context(self, doing: impl fmt::Display) -> StoreError {
        StoreError {
            kind: self.kind,
            message: format!("{doing}: {}", self.message),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// One change to persist.
#[derive(Debug)]
pub enum Write {
    User {
        name: Arc<str>,
    },
    Room {
        name: Arc<str>,
        kind: RoomKind,
        epoch: Arc<str>,
        owner: Option<Arc<str>>,
    },
    RoomAccess {
        room: Arc<str>,
        private: bool,
    },
    Invite {
        room: Arc<str>,
        user: Arc<str>,
    },
    Uninvite {
        room: Arc<str>,
        user: Arc<str>,
    },
    /// A new argon2id hash (PHC string) for the user's password.
    Password {
        user: Arc<str>,
        hash: Arc<str>,
    },
    Join {
        room: Arc<str>,
        user: Arc<str>,
    },
    Leave {
        room: Arc<str>,
        user: Arc<str>,
    },
    /// A message, with the client id it was posted under (recorded in the same transaction,
    /// so after a crash either both exist or neither does).
    Message {
        message: Arc<Message>,
        client_id: Option<PostedId>,
    },
    Read {
        room: Arc<str>,
        user: Arc<str>,
        seq: u64,
    },
    LastSeen {
        user: Arc<str>,
        at: DateTime<Utc>,
    },
    ShareReceipts {
        user: Arc<str>,
        share: bool,
    },
    /// A device's public key for end-to-end encrypted DMs (`KEY`), added or replacing the
    /// device's old one.
    DeviceKey {
        user: Arc<str>,
        device: Arc<str>,
        key: Arc<str>,
        added: DateTime<Utc>,
    },
    /// A device's key withdrawn (`REVOKE`).
    RevokeDevice {
        user: Arc<str>,
        device: Arc<str>,
    },
    /// Refuse `target` at the door from now on (`BAN`, `chatd admin ban`).
    Ban {
        target: BanTarget,
        reason: Arc<str>,
    },
    Unban {
        target: BanTarget,
    },
    /// Grant or take away the operator role (server-wide `BAN` and `KICK`).
    Operator {
        user: Arc<str>,
        operator: bool,
    },
}

/// Who or what a ban refuses: a user at LOGIN, or every connection from an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BanTarget {
    User(Arc<str>),
    Address(IpAddr),
}

impl BanTarget {
    /// The `kind` column: `user` or `address`.
    pub fn kind(&self) -> &'static str {
        match self {
            BanTarget::User(_) => "user",
            BanTarget::Address(_) => "address",
        }
    }

    /// The `target` column: the name or the address as text.
    pub fn target(&self) -> String {
        match self {
            BanTarget::User(name) => name.to_string(),
            BanTarget::Address(ip) => ip.to_string(),
        }
    }

    /// From the two columns; `None` for a row this build does not understand.
    pub fn from_columns(kind: &str, target: &str) -> Option<BanTarget> {
        match kind {
            "user" => Some(BanTarget::User(Arc::from(target))),
            "address" => target.parse().ok().map(BanTarget::Address),
            _ => None,
        }
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.target())
    }
}

/// One user's account row as the store has it now, read at each LOGIN so that changes made
/// with `chatd admin` while the server runs apply from the next login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub password_hash: Option<String>,
    pub operator: bool,
    pub banned: bool,
}

/// Everything live operation needs, read once at start-up. Older messages stay on disk and
/// are read page by page by HISTORY and SYNC.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<StoredUser>,
    pub rooms: Vec<StoredRoom>,
    /// The key directory: every published device key.
    pub device_keys: Vec<StoredDeviceKey>,
}

#[derive(Debug)]
pub struct StoredDeviceKey {
    pub user: String,
    pub device: String,
    /// 64 lower-case hex digits.
    pub key: String,
    pub added: DateTime<Utc>,
}

#[derive(Debug)]
pub struct StoredUser {
    pub name: String,
    pub password_hash: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub share_receipts: bool,
}

#[derive(Debug)]
pub struct StoredRoom {
    pub name: String,
    pub kind: RoomKind,
    pub epoch: String,
    pub seq: u64,
    pub members: Vec<String>,
    /// `(user, read position)`.
    pub reads: Vec<(String, u64)>,
    /// The newest messages, oldest first, at most the recent-log size.
    pub recent: Vec<Message>,
    pub owner: Option<String>,
    pub private: bool,
    pub invited: Vec<String>,
}

/// The seam between the server and its persistence.
///
/// The contract a backend keeps:
///
/// - **Tickets.** `write` may resolve a message's ticket inline (before it returns) or later
///   from another thread; either is fine, because the poster always settles the room once its
///   ticket has resolved (`Room::publish`). Every ticket must be resolved exactly once, with
///   `Err` if the write is lost (a stopped writer, say): a poster waits for it.
/// - **Order.** Message writes for one room reach `write` in seq order (they are queued under
///   the room's lock). A durable backend keeps that order: it may hold seq n without n + 1,
///   never n + 1 without n, unless n's write failed (its seq then stays unused).
/// - **Reads.** `messages` returns only messages whose writes succeeded, so a failed or
///   forgotten seq is a hole the room reports as a `GAP`. `client_id` answers `None` when it
///   does not know; the server's in-memory window covers the recent ids.
pub trait Store: Send + Sync {
    /// Reads what the server needs to start: users, rooms, memberships, read positions, and
    /// each room's seq, epoch and last `recent_per_room` messages.
    fn load(&self, recent_per_room: usize) -> Result<Snapshot, StoreError>;

    /// Queues a write. `ticket`, if given, is resolved when the write is stored or failed.
    /// It is called under a room's lock: it may wait for room in the store's queue
    /// (backpressure from the disk), never for I/O.
    fn write(&self, write: Write, ticket: Option<Ticket>);

    /// Stored messages of `room` with `after < seq < before`, oldest first, at most `limit`.
    fn messages(
        &self,
        room: &str,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// What `user` published under client id `cid`, if the store still has it (within the
    /// retention's `client_id_ttl`).
    fn client_id(&self, user: &str, cid: &str) -> Result<Option<Published>, StoreError>;

    /// Whether `messages` returns what was written: if so, a room's in-memory recent log is
    /// only a cache and may be dropped at any time. (Its one meaning; settling does not
    /// depend on it.)
    fn holds_history(&self) -> bool {
        true
    }

    /// `user`'s account as stored now, or `None` if the store has no such user (or keeps no
    /// accounts: the memory store, where the server's memory is the whole truth).
    fn account(&self, _user: &str) -> Result<Option<StoredAccount>, StoreError> {
        Ok(None)
    }

    /// Every ban in force, or `None` if the store keeps none (the server's memory is then
    /// the whole truth). Re-read every few seconds by a running server (`ChatServer::sweep`).
    fn bans(&self) -> Result<Option<Vec<BanTarget>>, StoreError> {
        Ok(None)
    }

    /// Whether the store answers now (`GET /readyz`): a trivial read, so a database that
    /// cannot be reached or opened says so. A store with nothing to reach is always ready.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes queued for the writer thread and not yet taken (`chatd_store_queue_length`).
    fn queue_len(&self) -> usize {
        0
    }

    /// How long each group commit took (`chatd_store_commit_seconds`), for a backend that
    /// commits.
    fn commit_latency(&self) -> Option<&Histogram> {
        None
    }
}

/// A promise that one write is stored or fails, shared by the store (which resolves
/// it) and the poster and room (which wait for it or check it).
#[derive(Clone, Default)]
pub struct Ticket(Arc<TicketState>);

struct TicketState {
    /// Leaf lock: `None` while the write is in flight.
    outcome: RankedMutex<Option<Result<(), StoreError>>>,
    resolved: RankedCondvar,
}

impl Default for TicketState {
    fn default() -> TicketState {
        TicketState {
            outcome: RankedMutex::new(Rank::Leaf, None),
            resolved: RankedCondvar::new(),
        }
    }
}

impl Ticket {
    pub fn resolve(&self, outcome: Result<(), StoreError>) {
        *self.0.outcome.lock() = Some(outcome);
        self.0.resolved.notify_all();
    }

    /// `None` while the write is in flight.
    pub fn outcome(&self) -> Option<Result<(), StoreError>> {
        self.0.outcome.lock().clone()
    }

    /// Blocks until the write is stored or failed.
    pub fn wait(&self) -> Result<(), StoreError> {
        let mut outcome = self.0.outcome.lock();
        loop {
            if let Some(outcome) = outcome.as_ref() {
                return outcome.clone();
            }
            self.0.resolved.wait(&mut outcome);
        }
    }
}
