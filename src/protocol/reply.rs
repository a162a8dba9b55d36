//! The chatd line protocol's encoder: every line the server sends, made from a typed
//! [`Event`] in one place.
//!
//! Each line ends with `\n`. `label` is the request's label: direct replies carry it as
//! `@<label> ` in front of each of their lines, events (MSG fan-out, PRESENCE, JOINED, ...)
//! never do. Human-readable text always comes last, after ` :`, so the fields before it can be
//! split on spaces. protocol.md is the contract this file implements.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use super::command::VERBS;
use super::error::ClientError;
use crate::event::{Event, ReplayItem};
use crate::message::Message;

pub const GREETING: &str = "HELLO chatd 0.1 :type HELP for commands\n";

/// RFC 3339 in UTC with milliseconds and a `Z`, the one timestamp format on the wire.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The wire text of `event`, labelled with `label` if it is a reply.
pub fn encode(event: &Event, label: Option<&str>) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail.
    let _ = encode_into(&mut out, event, label);
    out
}

fn encode_into(out: &mut String, event: &Event, label: Option<&str>) -> std::fmt::Result {
    // The label tag, written before every line of a reply.
    let tag = Tag(label);
    match event {
        Event::Greeting => out.push_str(GREETING),
        Event::Error(error) => write_error(out, label, error),
        Event::OkLogin { user } => writeln!(out, "{tag}OK LOGIN {user}")?,
        Event::OkRegister { user } => writeln!(out, "{tag}OK REGISTER {user}")?,
        Event::OkPassword { user } => writeln!(out, "{tag}OK PASSWORD {user}")?,
        Event::OkPrivate { room, private } => {
            writeln!(out, "{tag}OK PRIVATE {room} {}", on_off(*private))?
        }
        Event::OkInvite { room, user } => writeln!(out, "{tag}OK INVITE {room} {user}")?,
        Event::OkKick { room, user } => writeln!(out, "{tag}OK KICK {room} {user}")?,
        Event::OkKickUser { user, sessions } => {
            writeln!(out, "{tag}OK KICK {user} sessions={sessions}")?
        }
        Event::OkBan { subject } => writeln!(out, "{tag}OK BAN {subject}")?,
        Event::OkUnban { subject } => writeln!(out, "{tag}OK UNBAN {subject}")?,
        Event::OkJoin {
            room,
            seq,
            epoch,
            members,
        } => writeln!(
            out,
            "{tag}OK JOIN {room} seq={seq} epoch={epoch} members={members}"
        )?,
        Event::OkLeave { room } => writeln!(out, "{tag}OK LEAVE {room}")?,
        // A retried client id gets the original's fields again.
        Event::OkPost(posted) => {
            let (room, seq, id) = (&posted.room, posted.seq, &posted.id);
            match &posted.to {
                Some(to) => writeln!(out, "{tag}OK DM {to} {room} {seq} {id}")?,
                None => writeln!(out, "{tag}OK SEND {room} {seq} {id}")?,
            }
        }
        Event::Replay(replay) => {
            let room = &replay.room;
            if replay.reset {
                writeln!(
                    out,
                    "{tag}EPOCH {room} {} :the room's history was reset; replaying from seq 0",
                    replay.epoch
                )?;
            }
            for item in &replay.items {
                match item {
                    ReplayItem::Message(message) => write_msg(out, tag, message)?,
                    // Messages `from..=to` are no longer held and cannot be replayed.
                    ReplayItem::Gap { from, to } => writeln!(out, "{tag}GAP {room} {from} {to}")?,
                }
            }
            let more = if replay.more { " more" } else { "" };
            writeln!(
                out,
                "{tag}OK SYNC {room} seq={} epoch={}{more}",
                replay.seq, replay.epoch
            )?;
        }
        Event::History(page) => {
            for message in &page.messages {
                write_msg(out, tag, message)?;
            }
            writeln!(
                out,
                "{tag}OK HISTORY {} {} seq={} epoch={}",
                page.room,
                page.messages.len(),
                page.seq,
                page.epoch
            )?;
        }
        Event::Who { room, members } => {
            for member in members {
                match &member.last_seen {
                    None => writeln!(out, "{tag}WHO {room} {} online", member.name)?,
                    Some(t) => writeln!(
                        out,
                        "{tag}WHO {room} {} offline last_seen={}",
                        member.name,
                        timestamp(t)
                    )?,
                }
            }
            writeln!(out, "{tag}OK WHO {room} {}", members.len())?;
        }
        Event::Rooms(rooms) => {
            for room in rooms {
                // `unread` is `seq - read`: the messages after the user's read position.
                let unread = room.seq.saturating_sub(room.read);
                writeln!(
                    out,
                    "{tag}ROOM {} seq={} epoch={} members={} read={} unread={unread}",
                    room.name, room.seq, room.epoch, room.members, room.read
                )?;
            }
            writeln!(out, "{tag}OK ROOMS {}", rooms.len())?;
        }
        Event::OkTyping { room, typing } => {
            writeln!(out, "{tag}OK TYPING {room}{}", stop(*typing))?
        }
        // The stored read position (which may be higher than the one the client sent).
        Event::OkRead { room, seq } => writeln!(out, "{tag}OK READ {room} {seq}")?,
        Event::OkSet { key, value } => writeln!(out, "{tag}OK SET {key} {value}")?,
        Event::Pong { token: Some(token) } => writeln!(out, "{tag}PONG {token}")?,
        Event::Pong { token: None } => writeln!(out, "{tag}PONG")?,
        Event::Help => {
            for verb in VERBS {
                writeln!(out, "{tag}HELP {}", verb.usage)?;
            }
            writeln!(
                out,
                "{tag}HELP :prefix a command with @<label> to have its replies tagged; see protocol.md"
            )?;
            writeln!(out, "{tag}OK HELP")?;
        }
        // Counters for operators and benchmarks.
        Event::Stats(fields) => {
            write!(out, "{tag}OK STATS")?;
            for (key, value) in fields {
                write!(out, " {key}={value}")?;
            }
            out.push('\n');
        }
        Event::Info(fields) => {
            write!(out, "{tag}OK INFO")?;
            for (key, value) in fields {
                write!(out, " {key}={value}")?;
            }
            out.push('\n');
        }
        Event::OkKey {
            user,
            device,
            change,
        } => writeln!(out, "{tag}OK KEY {user} {device} {}", change.as_str())?,
        Event::Keys {
            user,
            account,
            devices,
        } => {
            for entry in devices {
                writeln!(
                    out,
                    "{tag}KEY {user} {} {} added={}",
                    entry.device,
                    entry.key,
                    timestamp(&entry.added)
                )?;
            }
            let account = if *account { "yes" } else { "no" };
            writeln!(
                out,
                "{tag}OK KEYS {user} {} account={account}",
                devices.len()
            )?;
        }
        Event::OkRevoke { user, device } => writeln!(out, "{tag}OK REVOKE {user} {device}")?,
        Event::Device {
            user,
            device,
            key: Some(key),
        } => writeln!(out, "DEVICE {user} {device} added {key}")?,
        Event::Device {
            user,
            device,
            key: None,
        } => writeln!(out, "DEVICE {user} {device} revoked")?,
        Event::Message(message) => write_msg(out, Tag(None), message)?,
        Event::Joined { room, user } => writeln!(out, "JOINED {room} {user}")?,
        Event::Left { room, user } => writeln!(out, "LEFT {room} {user}")?,
        Event::Online { user } => writeln!(out, "PRESENCE {user} online")?,
        Event::Offline { user, last_seen } => writeln!(
            out,
            "PRESENCE {user} offline last_seen={}",
            timestamp(last_seen)
        )?,
        Event::Typing { room, user, typing } => {
            writeln!(out, "TYPING {room} {user}{}", stop(*typing))?
        }
        // To the user's other sessions and (unless they opted out) the other members.
        Event::Read { room, user, seq } => writeln!(out, "READ {room} {user} {seq}")?,
        Event::Invited { room, by } => writeln!(out, "INVITED {room} {by}")?,
        Event::Kicked { room, by } => writeln!(out, "KICKED {room} {by}")?,
        Event::Bye {
            reason,
            detail,
            text,
        } => {
            // Labelled only when it answers a labelled QUIT.
            if detail.is_empty() {
                writeln!(out, "{tag}BYE {reason} :{text}")?;
            } else {
                writeln!(out, "{tag}BYE {reason} {detail} :{text}")?;
            }
        }
        Event::Text { wire, text } if *wire == crate::protocol::Wire::Chatd => out.push_str(text),
        Event::Text { .. } | Event::Nothing => {}
    }
    Ok(())
}

/// `@<label> ` in front of a reply's lines, or nothing.
#[derive(Clone, Copy)]
struct Tag<'a>(Option<&'a str>);

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(label) => write!(f, "@{label} "),
            None => Ok(()),
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn stop(typing: bool) -> &'static str {
    if typing {
        ""
    } else {
        " stop"
    }
}

/// `MSG <room> <seq> <id> <sent_at> <sender> <body>`: live, in HISTORY and in SYNC alike.
fn write_msg(out: &mut String, tag: Tag<'_>, message: &Message) -> std::fmt::Result {
    writeln!(
        out,
        "{tag}MSG {} {} {} {} {} {}",
        message.room,
        message.seq,
        message.id,
        timestamp(&message.sent_at),
        message.sender,
        message.body
    )
}

fn write_error(out: &mut String, label: Option<&str>, error: &ClientError) {
    let _ = writeln!(
        out,
        "{}ERR {} :{}",
        Tag(label),
        error.code.as_str(),
        error.text
    );
}

/// `ERR <code> :<text>`, for lines written before any session exists (refusals at the door).
pub fn error(label: Option<&str>, error: &ClientError) -> String {
    let mut out = String::new();
    write_error(&mut out, label, error);
    out
}
