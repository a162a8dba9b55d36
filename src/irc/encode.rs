//! chatd events in IRC syntax.
//!
//! Events fanned out to many sessions (messages, joins, parts, presence, typing) read the
//! same for every IRC recipient, so they are encoded once per [`Wire`] (a wire per tag set)
//! and shared through `Line::encoded`, like the line protocol's. What depends on the
//! connection (whether it asked for `echo-message`, `away-notify` or tags; an `INVITE` or a
//! `KICK` naming the recipient) is decided by the connection's [`IrcEncoder`], on its writer
//! thread. Replies to the connection's own commands are worded by its reader thread
//! (`irc::commands`) and arrive here as finished text (`Event::Text`).

use std::sync::Arc;

use uuid::Uuid;

use super::{Caps, Link, SERVER_NAME};
use crate::delivery::Line;
use crate::event::Event;
use crate::message::Message;
use crate::protocol::reply::timestamp;
use crate::protocol::Wire;
use crate::room_name::{dm_peer, is_dm_room};
use crate::transport::writer::Encoder;

/// The prefix a chatd user has on IRC: the name is the nick and the user, the host is fixed
/// (chatd does not show addresses).
pub fn source(user: &str) -> String {
    format!("{user}!{user}@{SERVER_NAME}")
}

/// The IRC target a room's message is addressed to: `#room`, or for a direct conversation
/// the other person (`sender` writes to them; they see a message to their own nick).
pub fn target(room: &str, sender: &str) -> String {
    match dm_peer(room, sender) {
        Some(peer) => peer.to_owned(),
        None => format!("#{room}"),
    }
}

/// The tags of a message on `wire` (`extra` first: `batch=`, `label=`), as `@...` with its
/// trailing space, or empty.
fn tags(message: &Message, wire: Wire, extra: &[String], part: usize) -> String {
    let mut items: Vec<String> = extra.to_vec();
    if matches!(wire, Wire::IrcTime | Wire::IrcTags) {
        items.push(format!("time={}", timestamp(&message.sent_at)));
    }
    if wire == Wire::IrcTags {
        // A body split over several lines: the first keeps chatd's id, the rest add `/<n>`
        // so a client that de-duplicates by msgid keeps them all.
        match part {
            0 => items.push(format!("msgid={}", message.id)),
            n => items.push(format!("msgid={}/{}", message.id, n + 1)),
        }
        items.push(format!("account={}", message.sender));
    }
    if items.is_empty() {
        String::new()
    } else {
        format!("@{} ", items.join(";"))
    }
}

/// The body bytes one relayed line carries: as much as an IRC client could send to `target`
/// in one 512-byte line (`PRIVMSG <target> :<body>\r\n`). So any message an IRC client sent
/// arrives whole, in one line; with the sender's prefix in front the line may pass 512
/// bytes by that prefix, as relayed lines do on other servers.
fn room_for_body(target: &str) -> usize {
    // Without the colon, which a one-word body may leave out.
    let command = "PRIVMSG  \r\n".len() + target.len();
    super::parse::MAX_LINE.saturating_sub(command).max(16)
}

/// Splits `body` into pieces of at most `max` bytes, at UTF-8 character boundaries: never
/// truncated, never a character cut in two.
pub fn split_body(body: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Prefer to break after a space in the last quarter, so words stay whole.
        if let Some(space) = rest[..cut].rfind(' ').filter(|&at| at > cut * 3 / 4) {
            cut = space + 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces.push(rest);
    pieces
}

/// A message as IRC `PRIVMSG` lines (several if the body is longer than a line allows).
/// A body starting with `/me ` is a CTCP ACTION, as IRC clients send `/me`.
pub fn message_lines(out: &mut String, message: &Message, wire: Wire, extra: &[String]) {
    let to = target(&message.room, &message.sender);
    let prefix = format!(":{} PRIVMSG {to} :", source(&message.sender));
    let (action, body) = match message.body.strip_prefix("/me ") {
        Some(rest) => (true, rest),
        None => (false, &*message.body),
    };
    let wrap = if action { "\u{1}ACTION \u{1}".len() } else { 0 };
    for (part, piece) in split_body(body, room_for_body(&to) - wrap)
        .into_iter()
        .enumerate()
    {
        out.push_str(&tags(message, wire, extra, part));
        out.push_str(&prefix);
        if action {
            out.push_str("\u{1}ACTION ");
            out.push_str(piece);
            out.push('\u{1}');
        } else {
            out.push_str(piece);
        }
        out.push_str("\r\n");
    }
}

/// The text every IRC recipient on `wire` gets for a fanned-out event (empty for events IRC
/// has no line for).
pub fn shared(event: &Event, wire: Wire) -> String {
    let mut out = String::new();
    match event {
        Event::Message(message) => message_lines(&mut out, message, wire, &[]),
        Event::Joined { room, user } if !is_dm_room(room) => {
            out = format!(":{} JOIN #{room}\r\n", source(user));
        }
        Event::Left { room, user } if !is_dm_room(room) => {
            out = format!(":{} PART #{room}\r\n", source(user));
        }
        // away-notify: offline is "away", back online is "not away".
        Event::Online { user } => out = format!(":{} AWAY\r\n", source(user)),
        Event::Offline { user, last_seen } => {
            out = format!(
                ":{} AWAY :offline since {}\r\n",
                source(user),
                timestamp(last_seen)
            );
        }
        Event::Typing { room, user, typing } => {
            let state = if *typing { "active" } else { "done" };
            out = format!(
                "@+typing={state} :{} TAGMSG {}\r\n",
                source(user),
                target(room, user)
            );
        }
        _ => {}
    }
    out
}

/// The last line of an IRC connection: `ERROR :Closing link: chatd (<why>)`.
pub fn farewell(event: &Event) -> String {
    match event {
        Event::Bye {
            reason,
            detail,
            text,
        } => {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" [{detail}]")
            };
            format!("ERROR :Closing link: {SERVER_NAME} ({reason}: {text}){detail}\r\n")
        }
        Event::Error(error) => format!(
            "ERROR :Closing link: {SERVER_NAME} ({}: {})\r\n",
            error.code.as_str(),
            error.text
        ),
        _ => format!("ERROR :Closing link: {SERVER_NAME}\r\n"),
    }
}

/// One IRC connection's writer-side encoder.
pub struct IrcEncoder {
    link: Arc<Link>,
    /// The message this connection just posted (its `OK` arrives right before the message
    /// itself, in the same queue) and the label of the PRIVMSG that posted it: the message is
    /// echoed with that label under `echo-message`, and left out otherwise.
    own_post: Option<(Uuid, Option<Arc<str>>)>,
}

impl IrcEncoder {
    pub fn new(link: Arc<Link>) -> IrcEncoder {
        IrcEncoder {
            link,
            own_post: None,
        }
    }
}

/// The shared wire a connection with `caps` reads.
pub fn wire_for(caps: Caps) -> Wire {
    if caps.has(Caps::MESSAGE_TAGS) {
        Wire::IrcTags
    } else if caps.has(Caps::SERVER_TIME) {
        Wire::IrcTime
    } else {
        Wire::Irc
    }
}

impl Encoder for IrcEncoder {
    fn encode(&mut self, line: &Line, out: &mut Vec<u8>) {
        let caps = self.link.caps();
        let wire = wire_for(caps);
        match &line.event {
            Event::Text {
                wire: Wire::Irc,
                text,
            } => out.extend_from_slice(text.as_bytes()),
            Event::OkPost(posted) => self.own_post = Some((posted.id, line.label.clone())),
            Event::Message(message) => {
                let own = self
                    .own_post
                    .take_if(|(id, _)| *id == message.id)
                    .map(|(_, label)| label);
                match own {
                    None => out.extend_from_slice(line.encoded(wire).as_bytes()),
                    Some(_) if !caps.has(Caps::ECHO_MESSAGE) => {}
                    Some(None) => out.extend_from_slice(line.encoded(wire).as_bytes()),
                    Some(Some(label)) => {
                        let mut text = String::new();
                        let label = format!("label={}", super::parse::escape(&label));
                        let labelled = caps.has(Caps::LABELED_RESPONSE);
                        let extra = if labelled { vec![label] } else { vec![] };
                        message_lines(&mut text, message, wire, &extra);
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
            Event::Online { .. } | Event::Offline { .. } if caps.has(Caps::AWAY_NOTIFY) => {
                out.extend_from_slice(line.encoded(wire).as_bytes())
            }
            Event::Typing { .. } if caps.has(Caps::MESSAGE_TAGS) => {
                out.extend_from_slice(line.encoded(wire).as_bytes())
            }
            Event::Joined { .. } | Event::Left { .. } => {
                out.extend_from_slice(line.encoded(wire).as_bytes())
            }
            Event::Invited { room, by } => {
                let nick = self.link.nick();
                let text = format!(":{} INVITE {nick} #{room}\r\n", source(by));
                out.extend_from_slice(text.as_bytes());
            }
            Event::Kicked { room, by } => {
                let nick = self.link.nick();
                let text = format!(":{} KICK #{room} {nick} :removed by {by}\r\n", source(by));
                out.extend_from_slice(text.as_bytes());
            }
            // Errors the reader did not word itself (none are expected): a notice, so the
            // person sees what went wrong.
            Event::Error(error) => {
                let nick = self.link.nick();
                let text = format!(
                    ":{SERVER_NAME} NOTICE {nick} :{}: {}\r\n",
                    error.code.as_str(),
                    error.text
                );
                out.extend_from_slice(text.as_bytes());
            }
            // The line protocol's replies (OK JOIN, OK SYNC, ...): the reader words IRC's.
            _ => {}
        }
    }

    fn farewell(&mut self, event: &Event, _label: Option<&str>) -> String {
        farewell(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_split_at_char_boundaries_and_lose_nothing() {
        let body = "é".repeat(700) + "end";
        let pieces = split_body(&body, 101);
        assert!(pieces.iter().all(|p| p.len() <= 101));
        assert_eq!(pieces.concat(), body);
        let words = "word ".repeat(100);
        let pieces = split_body(&words, 64);
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.ends_with(' ')));
        assert_eq!(pieces.concat(), words);
        assert_eq!(split_body("", 10), [""]);
    }
}
