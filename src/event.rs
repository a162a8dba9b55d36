//! What the server tells a client, as typed values: replies to its own commands and events
//! about other people. Wire text is not made here.
//!
//! Rooms, users and commands queue an [`Event`] (inside a [`crate::delivery::Line`]); each
//! protocol encodes it on first use, once for all recipients that speak that protocol
//! (`protocol::reply` is the chatd line protocol's encoder). So an event is built under a
//! room's lock as a few pointer copies, and its text is made outside every lock, by the first
//! writer thread that needs it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::client_ids::Published;
use crate::keys::{DeviceKey, KeyChange};
use crate::message::Message;
use crate::protocol::{ClientError, Wire};
use crate::recent::footprint;

#[derive(Debug)]
pub enum Event {
    /// The first line of every connection.
    Greeting,
    /// A refused command.
    Error(ClientError),

    // Replies to one command of the recipient's (they carry the request's label).
    OkLogin {
        user: Arc<str>,
    },
    OkRegister {
        user: Arc<str>,
    },
    OkPassword {
        user: Arc<str>,
    },
    OkPrivate {
        room: Arc<str>,
        private: bool,
    },
    OkInvite {
        room: Arc<str>,
        user: Arc<str>,
    },
    OkKick {
        room: Arc<str>,
        user: Arc<str>,
    },
    /// `OK KICK <user> sessions=<n>`: an operator's server-wide kick.
    OkKickUser {
        user: Arc<str>,
        sessions: usize,
    },
    /// `OK BAN user <name>` / `OK BAN address <ip>`.
    OkBan {
        subject: String,
    },
    OkUnban {
        subject: String,
    },
    OkJoin {
        room: Arc<str>,
        seq: u64,
        epoch: Arc<str>,
        members: usize,
    },
    OkLeave {
        room: Arc<str>,
    },
    /// A message was posted (or a retried client id had been): `OK SEND` for a room, `OK DM`
    /// for a direct message.
    OkPost(Published),
    /// SYNC's reply: an optional epoch reset, the replay, then `OK SYNC`.
    Replay(Replay),
    History(HistoryPage),
    Who {
        room: Arc<str>,
        members: Vec<MemberStatus>,
    },
    Rooms(Vec<RoomListing>),
    OkTyping {
        room: Arc<str>,
        typing: bool,
    },
    OkRead {
        room: Arc<str>,
        seq: u64,
    },
    OkSet {
        key: &'static str,
        value: &'static str,
    },
    Pong {
        token: Option<Box<str>>,
    },
    Help,
    Stats(Vec<(&'static str, u64)>),
    /// INFO's reply: the protocol version and the server's limits, as `key=value` fields.
    Info(Vec<(&'static str, String)>),
    /// KEY's reply: the session's device key is published (or was already).
    OkKey {
        user: Arc<str>,
        device: Arc<str>,
        change: KeyChange,
    },
    /// KEYS's reply: a user's device keys, and whether the name has an account (without
    /// one, anyone who logs in as the name can change its keys: docs/e2e.md).
    Keys {
        user: Arc<str>,
        account: bool,
        devices: Vec<DeviceKey>,
    },
    OkRevoke {
        user: Arc<str>,
        device: Arc<str>,
    },

    // Events: something happened in a room or to a person the recipient shares one with.
    Message(Arc<Message>),
    Joined {
        room: Arc<str>,
        user: Arc<str>,
    },
    Left {
        room: Arc<str>,
        user: Arc<str>,
    },
    Online {
        user: Arc<str>,
    },
    Offline {
        user: Arc<str>,
        last_seen: DateTime<Utc>,
    },
    Typing {
        room: Arc<str>,
        user: Arc<str>,
        typing: bool,
    },
    Read {
        room: Arc<str>,
        user: Arc<str>,
        seq: u64,
    },
    Invited {
        room: Arc<str>,
        by: Arc<str>,
    },
    Kicked {
        room: Arc<str>,
        by: Arc<str>,
    },
    /// A user's device list changed: `key` is the device's new key, `None` if it was revoked.
    /// Sent to the user's DM peers and other sessions, so their clients fetch KEYS again.
    Device {
        user: Arc<str>,
        device: Arc<str>,
        key: Option<Arc<str>>,
    },
    /// The connection's last line: why it ends, and (for a slow consumer) where to resume.
    Bye {
        reason: &'static str,
        detail: String,
        text: &'static str,
    },
    /// Text a front end worded itself for its own protocol (IRC numerics, which name the
    /// recipient's nick): written as is by that protocol's connections, ignored by others.
    Text {
        wire: Wire,
        text: Box<str>,
    },
    /// Writes nothing: a line that only carries cursors, or wakes a writer.
    Nothing,
}

impl Event {
    /// Roughly what the event costs in memory while it waits in one session's queue, for the
    /// replies that can be large and belong to one session (SYNC, HISTORY, WHO, ROOMS). An
    /// event fanned out to many sessions is shared by all their queues and counts 0 here:
    /// the queue's line cap bounds those.
    pub fn reply_bytes(&self) -> usize {
        const LINE: usize = 64;
        match self {
            Event::Replay(replay) => replay
                .items
                .iter()
                .map(|item| match item {
                    ReplayItem::Message(message) => footprint(message),
                    ReplayItem::Gap { .. } => LINE,
                })
                .sum(),
            Event::History(page) => page.messages.iter().map(|m| footprint(m)).sum(),
            Event::Who { members, .. } => members.len() * LINE,
            Event::Rooms(rooms) => rooms.len() * LINE,
            Event::Keys { devices, .. } => devices.len() * 2 * LINE,
            Event::Text { text, .. } => text.len(),
            _ => 0,
        }
    }
}

/// A SYNC reply, built under the room's lock so it meets the live stream without a gap.
#[derive(Debug)]
pub struct Replay {
    pub room: Arc<str>,
    /// The room's epoch, when the client's was another (`EPOCH` first, replay from 0).
    pub reset: bool,
    pub items: Vec<ReplayItem>,
    /// The room's seq and epoch at the replay, and whether the client should page on.
    pub seq: u64,
    pub epoch: Arc<str>,
    pub more: bool,
}

#[derive(Debug)]
pub enum ReplayItem {
    Message(Arc<Message>),
    /// Messages `from..=to` cannot be replayed (never stored, or past retention).
    Gap {
        from: u64,
        to: u64,
    },
}

/// A page of history, with the room's position at the time it was read.
#[derive(Debug)]
pub struct HistoryPage {
    pub room: Arc<str>,
    pub messages: Vec<Arc<Message>>,
    /// The room's latest seq when the page was read.
    pub seq: u64,
    pub epoch: Arc<str>,
}

/// A member as WHO reports them: online, or offline since `last_seen`.
#[derive(Debug)]
pub struct MemberStatus {
    pub name: Arc<str>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One line of ROOMS.
#[derive(Debug)]
pub struct RoomListing {
    pub name: Arc<str>,
    pub seq: u64,
    pub epoch: Arc<str>,
    pub members: usize,
    /// The user's read position.
    pub read: u64,
}
