//! Protocol adapters: the bytes a bench client writes, and what the lines it reads mean.
//!
//! The scenarios speak in terms of "log in", "join", "send", "quit"; each adapter turns those
//! into its protocol's commands and classifies server lines into an [`Event`]. Anything a
//! scenario does not need (presence, JOINED, NAMES lists, MOTD) is [`Event::Other`].

mod chatd;
mod irc;

use serde::Serialize;

/// Which wire protocol the server under test speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// chatd's line protocol (see protocol.md).
    Chatd,
    /// IRC (RFC 1459/2812): NICK/USER, JOIN #room, PRIVMSG.
    Irc,
}

/// What a line from the server means to a bench client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The login was accepted (chatd `OK LOGIN`, IRC `001`).
    LoggedIn,
    /// A join completed (chatd `OK JOIN`, IRC `366` end of NAMES).
    Joined,
    /// A chat message; the slice is its body.
    Message(&'a [u8]),
    /// The server acknowledged a sent message (chatd `OK SEND`; IRC has no such reply).
    SendAck,
    /// The server pinged us; the slice is the token to echo back.
    Ping(&'a [u8]),
    /// The server is about to close the connection; the slice is the whole line.
    Closing(&'a [u8]),
    /// The server refused a command; the slice is the whole line.
    Rejected(&'a [u8]),
    /// Anything else.
    Other,
}

impl Proto {
    /// Writes the commands that log `user` in.
    pub fn login(self, out: &mut Vec<u8>, user: &str) {
        match self {
            Proto::Chatd => chatd::login(out, user),
            Proto::Irc => irc::login(out, user),
        }
    }

    /// Whether a join may be written before the login is acknowledged. chatd processes a
    /// connection's lines in order, so it may; IRC servers reject commands before `001`.
    pub fn can_pipeline_join(self) -> bool {
        matches!(self, Proto::Chatd)
    }

    /// The protocol's spelling of a room name (IRC channels start with `#`).
    pub fn room_name(self, base: &str) -> String {
        match self {
            Proto::Chatd => base.to_string(),
            Proto::Irc => format!("#{base}"),
        }
    }

    /// Writes the command that joins `room` (already spelled by [`Proto::room_name`]).
    pub fn join(self, out: &mut Vec<u8>, room: &str) {
        match self {
            Proto::Chatd => chatd::join(out, room),
            Proto::Irc => irc::join(out, room),
        }
    }

    /// Writes the command that sends `body` to `room`.
    pub fn send(self, out: &mut Vec<u8>, room: &str, body: &[u8]) {
        match self {
            Proto::Chatd => chatd::send(out, room, body),
            Proto::Irc => irc::send(out, room, body),
        }
    }

    /// Writes the command that ends the session.
    pub fn quit(self, out: &mut Vec<u8>) {
        match self {
            Proto::Chatd => out.extend_from_slice(b"QUIT\n"),
            Proto::Irc => out.extend_from_slice(b"QUIT :bench\r\n"),
        }
    }

    /// Writes the answer to a server ping carrying `token`.
    pub fn pong(self, out: &mut Vec<u8>, token: &[u8]) {
        match self {
            Proto::Chatd => chatd::pong(out, token),
            Proto::Irc => irc::pong(out, token),
        }
    }

    /// Classifies one line from the server, without its line ending.
    pub fn classify(self, line: &[u8]) -> Event<'_> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            Proto::Chatd => chatd::classify(line),
            Proto::Irc => irc::classify(line),
        }
    }
}

/// Splits off the first space-separated word: `(word, rest)`.
fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &[]),
    }
}
