//! Every line the server sends, formatted in one place.
//!
//! Each function returns the complete line including its `\n`. `label` is the request's label:
//! direct replies carry it as `@<label> ` in front, events (MSG fan-out, PRESENCE, JOINED, ...)
//! never do. Human-readable text always comes last, after ` :`, so the fields before it can be
//! split on spaces.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::command::USAGE;
use super::error::ClientError;
use crate::message::Message;

pub const GREETING: &str = "HELLO chatd 0.1 :type HELP for commands\n";

/// RFC 3339 in UTC with milliseconds and a `Z`, the one timestamp format on the wire.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn start(label: Option<&str>) -> String {
    match label {
        Some(label) => format!("@{label} "),
        None => String::new(),
    }
}

pub fn error(label: Option<&str>, error: &ClientError) -> String {
    format!(
        "{}ERR {} :{}\n",
        start(label),
        error.code.as_str(),
        error.text
    )
}

pub fn ok_login(label: Option<&str>, user: &str) -> String {
    format!("{}OK LOGIN {user}\n", start(label))
}

pub fn ok_register(label: Option<&str>, user: &str) -> String {
    format!("{}OK REGISTER {user}\n", start(label))
}

pub fn ok_password(label: Option<&str>, user: &str) -> String {
    format!("{}OK PASSWORD {user}\n", start(label))
}

pub fn ok_private(label: Option<&str>, room: &str, private: bool) -> String {
    let state = if private { "on" } else { "off" };
    format!("{}OK PRIVATE {room} {state}\n", start(label))
}

pub fn ok_invite(label: Option<&str>, room: &str, user: &str) -> String {
    format!("{}OK INVITE {room} {user}\n", start(label))
}

pub fn ok_kick(label: Option<&str>, room: &str, user: &str) -> String {
    format!("{}OK KICK {room} {user}\n", start(label))
}

/// To the invitee's sessions: `INVITED <room> <by>`.
pub fn invited(room: &str, by: &str) -> String {
    format!("INVITED {room} {by}\n")
}

/// To the removed user's sessions: `KICKED <room> <by>`.
pub fn kicked(room: &str, by: &str) -> String {
    format!("KICKED {room} {by}\n")
}

pub fn ok_join(label: Option<&str>, room: &str, seq: u64, epoch: &str, members: usize) -> String {
    format!(
        "{}OK JOIN {room} seq={seq} epoch={epoch} members={members}\n",
        start(label)
    )
}

pub fn ok_leave(label: Option<&str>, room: &str) -> String {
    format!("{}OK LEAVE {room}\n", start(label))
}

/// `OK SEND <room> <seq> <id>`; a retried client id gets the original's fields again.
pub fn ok_send(label: Option<&str>, room: &str, seq: u64, id: &Uuid) -> String {
    format!(
        "{}OK SEND {room} {seq} {id}
",
        start(label)
    )
}

pub fn ok_dm(label: Option<&str>, to: &str, room: &str, seq: u64, id: &Uuid) -> String {
    format!(
        "{}OK DM {to} {room} {seq} {id}
",
        start(label)
    )
}

/// Before a SYNC replay: messages `from..=to` are no longer held and cannot be replayed.
pub fn gap(label: Option<&str>, room: &str, from: u64, to: u64) -> String {
    format!(
        "{}GAP {room} {from} {to}
",
        start(label)
    )
}

/// Before a SYNC replay: the client's epoch is not the room's; its cursor means nothing here.
pub fn epoch_reset(label: Option<&str>, room: &str, epoch: &str) -> String {
    format!(
        "{}EPOCH {room} {epoch} :the room's history was reset; replaying from seq 0
",
        start(label)
    )
}

pub fn ok_sync(label: Option<&str>, room: &str, seq: u64, epoch: &str, more: bool) -> String {
    let more = if more { " more" } else { "" };
    format!(
        "{}OK SYNC {room} seq={seq} epoch={epoch}{more}
",
        start(label)
    )
}

/// `MSG <room> <seq> <id> <sent_at> <sender> <body>`: live, in HISTORY and in SYNC alike.
pub fn msg(label: Option<&str>, message: &Message) -> String {
    format!(
        "{}MSG {} {} {} {} {} {}\n",
        start(label),
        message.room,
        message.seq,
        message.id,
        timestamp(&message.sent_at),
        message.sender,
        message.body
    )
}

pub fn joined(room: &str, user: &str) -> String {
    format!("JOINED {room} {user}\n")
}

pub fn left(room: &str, user: &str) -> String {
    format!("LEFT {room} {user}\n")
}

pub fn presence_online(user: &str) -> String {
    format!("PRESENCE {user} online\n")
}

pub fn presence_offline(user: &str, last_seen: &DateTime<Utc>) -> String {
    format!(
        "PRESENCE {user} offline last_seen={}\n",
        timestamp(last_seen)
    )
}

/// One member in a WHO listing: `online`, or `offline last_seen=<time>`.
pub fn who_member(
    label: Option<&str>,
    room: &str,
    user: &str,
    last_seen: Option<&DateTime<Utc>>,
) -> String {
    match last_seen {
        None => format!("{}WHO {room} {user} online\n", start(label)),
        Some(t) => format!(
            "{}WHO {room} {user} offline last_seen={}\n",
            start(label),
            timestamp(t)
        ),
    }
}

pub fn ok_who(label: Option<&str>, room: &str, count: usize) -> String {
    format!("{}OK WHO {room} {count}\n", start(label))
}

/// One line of ROOMS. `unread` is `seq - read`: the messages after the user's read position.
pub fn room_summary(
    label: Option<&str>,
    room: &str,
    seq: u64,
    epoch: &str,
    members: usize,
    read: u64,
) -> String {
    let unread = seq.saturating_sub(read);
    format!(
        "{}ROOM {room} seq={seq} epoch={epoch} members={members} read={read} unread={unread}\n",
        start(label)
    )
}

pub fn ok_typing(label: Option<&str>, room: &str, typing: bool) -> String {
    let stop = if typing { "" } else { " stop" };
    format!("{}OK TYPING {room}{stop}\n", start(label))
}

/// To the other members: `TYPING <room> <user>` or `TYPING <room> <user> stop`.
pub fn typing(room: &str, user: &str, typing: bool) -> String {
    let stop = if typing { "" } else { " stop" };
    format!("TYPING {room} {user}{stop}\n")
}

/// The stored read position (which may be higher than the one the client sent).
pub fn ok_read(label: Option<&str>, room: &str, seq: u64) -> String {
    format!("{}OK READ {room} {seq}\n", start(label))
}

/// To the user's other sessions and (unless they opted out) the other members.
pub fn read(room: &str, user: &str, seq: u64) -> String {
    format!("READ {room} {user} {seq}\n")
}

pub fn ok_set(label: Option<&str>, key: &str, value: &str) -> String {
    format!("{}OK SET {key} {value}\n", start(label))
}

pub fn ok_rooms(label: Option<&str>, count: usize) -> String {
    format!("{}OK ROOMS {count}\n", start(label))
}

pub fn ok_history(label: Option<&str>, room: &str, count: usize, seq: u64, epoch: &str) -> String {
    format!(
        "{}OK HISTORY {room} {count} seq={seq} epoch={epoch}\n",
        start(label)
    )
}

pub fn pong(label: Option<&str>, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("{}PONG {token}\n", start(label)),
        None => format!("{}PONG\n", start(label)),
    }
}

/// The HELP listing: one `HELP` line per command, then `OK HELP`.
pub fn help(label: Option<&str>) -> String {
    let mut out = String::new();
    for (_, usage) in USAGE {
        let _ = writeln!(out, "{}HELP {usage}", start(label));
    }
    let _ = writeln!(
        out,
        "{}HELP :prefix a command with @<label> to have its replies tagged; see protocol.md",
        start(label)
    );
    let _ = writeln!(out, "{}OK HELP", start(label));
    out
}

/// `OK STATS k=v ...`: counters for operators and benchmarks.
pub fn ok_stats(label: Option<&str>, fields: &[(&str, u64)]) -> String {
    let mut out = format!("{}OK STATS", start(label));
    for (key, value) in fields {
        let _ = write!(out, " {key}={value}");
    }
    out.push('\n');
    out
}

/// The last line of a connection: `BYE <reason>[ <detail>] :<text>`.
pub fn bye(reason: &str, detail: &str, text: &str) -> String {
    if detail.is_empty() {
        format!("BYE {reason} :{text}\n")
    } else {
        format!("BYE {reason} {detail} :{text}\n")
    }
}
