//! What the application receives: typed events, never wire text.

/// A message of a room (direct rooms included), delivered exactly once and in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: String,
    /// The message's place in its room within the room's current epoch: 1, 2, 3, ...
    pub seq: u64,
    /// The server's id (a UUIDv7), unique per message.
    pub id: String,
    /// RFC 3339 UTC with milliseconds, as the server sent it.
    pub sent_at: String,
    pub sender: String,
    pub body: String,
}

/// A user came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub user: String,
    pub online: bool,
    /// When the user's last session ended (offline only).
    pub last_seen: Option<String>,
}

/// Everything [`crate::Client::next_event`] can return.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message, in seq order per room, never twice.
    Message(Message),
    Joined {
        room: String,
        user: String,
    },
    Left {
        room: String,
        user: String,
    },
    Presence(Presence),
    Invited {
        room: String,
        by: String,
    },
    /// The room's owner removed you; the client forgets the room.
    Kicked {
        room: String,
        by: String,
    },
    Typing {
        room: String,
        user: String,
        typing: bool,
    },
    Read {
        room: String,
        user: String,
        seq: u64,
    },
    /// Messages `from..=to` of `room` are gone for good (retention, a memory-store horizon,
    /// or a seq whose message could not be stored). Delivered in order among the messages.
    Gap {
        room: String,
        from: u64,
        to: u64,
    },
    /// The room's history was reset (a new epoch): the messages that follow start again from
    /// seq 1. Delivered in order among the messages.
    EpochReset {
        room: String,
        epoch: String,
    },
    /// A send made with [`crate::Client::send_nowait`] was acknowledged: stored once.
    Sent(Sent),
    /// A send was refused (nothing was posted), or a room could not be resumed.
    Refused {
        what: String,
        code: String,
        text: String,
    },
    /// A user you share a direct room with (or you, on another device) published, replaced
    /// (`key` is the new key, 64 hex digits) or revoked (`key` is `None`) a device key. The
    /// client already forgot that user's cached device list; the next encrypted DM fetches it
    /// again. Compare the new device's fingerprint out of band before trusting it.
    DeviceChanged {
        user: String,
        device: String,
        key: Option<String>,
    },
    /// The connection ended; the client reconnects by itself unless the reason is final.
    Disconnected {
        /// The BYE reason (`slow-consumer`, `server-shutdown`, ...) or `connection-lost`.
        reason: String,
    },
    /// Logged in again after a disconnect; every room is being resumed.
    Reconnected,
}

/// The server's acknowledgement of a SEND or DM: the message is stored, exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The client id the send carried.
    pub cid: String,
    pub room: String,
    pub seq: u64,
    pub id: String,
}

/// One row of WHO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    pub online: bool,
    pub last_seen: Option<String>,
}

/// Where a send goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `SEND <room>` (a `dm:a:b` room works too).
    Room(String),
    /// `DM <user>`.
    User(String),
}
