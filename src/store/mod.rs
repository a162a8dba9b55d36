//! Persistence: the `Store` trait and its two backends.
//!
//! - [`memory::MemoryStore`]: keeps nothing. History lives only in each room's recent log and
//!   is lost on restart (rooms get new epochs, so resuming clients are told).
//! - [`sqlite::SqliteStore`] (the default): an embedded SQLite database in WAL mode, written by
//!   one `chatd-store` thread that commits whatever is queued as one transaction (group
//!   commit), so durability costs one fsync per batch rather than per message.
//!
//! Writes are queued with [`Store::write`]. A message's write carries a [`Ticket`]: the
//! poster waits on it, and the message is acknowledged (`OK SEND`) and fanned out only once
//! the ticket says it is durable. Other writes (memberships, read positions, last_seen) are
//! committed in the next batch without anyone waiting.

pub mod memory;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};

use crate::client_ids::Published;
use crate::message::Message;
use crate::room_name::RoomKind;

/// A store operation failed: the disk is full, the file is unwritable or damaged, the schema
/// is from a newer chatd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
        client_id: Option<(Arc<str>, Box<str>)>,
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
}

/// Everything live operation needs, read once at start-up. Older messages stay on disk and
/// are read page by page by HISTORY and SYNC.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<StoredUser>,
    pub rooms: Vec<StoredRoom>,
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
pub trait Store: Send + Sync {
    /// Reads what the server needs to start: users, rooms, memberships, read positions, and
    /// each room's seq, epoch and last `recent_per_room` messages.
    fn load(&self, recent_per_room: usize) -> Result<Snapshot, StoreError>;

    /// Queues a write. `ticket`, if given, is resolved when the write is durable or failed.
    /// May wait for room in the store's queue (backpressure from the disk), never for I/O.
    fn write(&self, write: Write, ticket: Option<Ticket>);

    /// Messages of `room` with `after < seq < before`, oldest first, at most `limit`.
    fn messages(
        &self,
        room: &str,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// What a client id published, if the store still has it.
    fn client_id(&self, user: &str, cid: &str) -> Result<Option<Published>, StoreError>;

    /// Whether history survives a restart.
    fn is_durable(&self) -> bool;
}

/// A promise that one write becomes durable or fails, shared by the store (which resolves
/// it) and the poster and room (which wait for it or check it).
#[derive(Clone, Default)]
pub struct Ticket(Arc<TicketState>);

#[derive(Default)]
struct TicketState {
    /// Leaf lock: `None` while the write is in flight.
    outcome: Mutex<Option<Result<(), StoreError>>>,
    resolved: Condvar,
}

impl Ticket {
    pub fn new() -> Ticket {
        Ticket::default()
    }

    pub fn resolve(&self, outcome: Result<(), StoreError>) {
        *self.0.outcome.lock() = Some(outcome);
        self.0.resolved.notify_all();
    }

    /// `None` while the write is in flight.
    pub fn outcome(&self) -> Option<Result<(), StoreError>> {
        self.0.outcome.lock().clone()
    }

    /// Blocks until the write is durable or failed.
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
