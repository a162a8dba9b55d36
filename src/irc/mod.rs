//! The IRC front end (`--irc-listen`): IRC clients as sessions of the same `ChatServer`.
//!
//! An IRC connection is a connection like any other (`transport::listener` admits it by the
//! same checks and starts the same two threads, with the same bounded outbox); only the two
//! ends differ:
//!
//! - its reader thread hands lines to an [`IrcConversation`] instead of the line protocol's:
//!   [`parse`] turns a line into a [`parse::Message`], [`registration`] handles everything
//!   before the session exists (PASS, NICK, USER, CAP, SASL), and [`commands`] translates
//!   each IRC command into the chatd `Command` that `cmd` carries out (PRIVMSG #room is
//!   SEND, PRIVMSG nick is DM, JOIN is JOIN, ...), wording the replies as IRC numerics;
//! - its writer thread encodes the events other people cause with [`encode::IrcEncoder`]:
//!   fanned-out events are encoded once per IRC tag set and shared, like the line protocol's.
//!
//! The two threads share a [`Link`]: the nick (fixed at registration: a chatd name is the
//! account) and the capabilities the client negotiated. docs/irc.md is the mapping.

pub mod commands;
pub mod encode;
pub mod numerics;
pub mod parse;
pub mod registration;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::cmd::Client;
use crate::delivery::{Line, Outbox};
use crate::event::Event;
use crate::protocol::Wire;
use crate::server::ChatServer;
use crate::transport::reader::{self, Charge, Conversation, Gate};
use crate::transport::LineSource;

use numerics::*;
use parse::{Message, ParseError};
use registration::Registration;

/// The server's name on IRC: the source of numerics and the host part of every prefix.
pub const SERVER_NAME: &str = "chatd";

/// A quiet client is sent a PING after this long, so a client that waits for the server's
/// pings to know the link is alive sees one. (Dead peers are found by TCP keepalive.)
const PING_AFTER: Duration = Duration::from_secs(120);

/// What an IRC connection's reader and writer threads share.
pub struct Link {
    pub id: u64,
    /// Set once, when registration completes.
    nick: OnceLock<Arc<str>>,
    caps: AtomicU32,
}

impl Link {
    pub fn new(id: u64) -> Link {
        Link {
            id,
            nick: OnceLock::new(),
            caps: AtomicU32::new(0),
        }
    }

    /// The nick, or `*` before registration (as numerics name an unregistered client).
    pub fn nick(&self) -> &str {
        self.nick.get().map_or("*", |nick| nick)
    }

    pub fn caps(&self) -> Caps {
        Caps(self.caps.load(Relaxed))
    }

    fn set_caps(&self, caps: Caps) {
        self.caps.store(caps.0, Relaxed);
    }
}

/// The IRCv3 capabilities a client may request, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u32);

impl Caps {
    pub const SERVER_TIME: Caps = Caps(1);
    pub const MESSAGE_TAGS: Caps = Caps(1 << 1);
    pub const ECHO_MESSAGE: Caps = Caps(1 << 2);
    pub const LABELED_RESPONSE: Caps = Caps(1 << 3);
    pub const BATCH: Caps = Caps(1 << 4);
    pub const CHATHISTORY: Caps = Caps(1 << 5);
    pub const ACCOUNT_TAG: Caps = Caps(1 << 6);
    pub const AWAY_NOTIFY: Caps = Caps(1 << 7);
    pub const SASL: Caps = Caps(1 << 8);
    pub const READ_MARKER: Caps = Caps(1 << 9);
    /// Accepted and without effect: chatd rooms have no member prefixes to list.
    pub const MULTI_PREFIX: Caps = Caps(1 << 10);
    pub const USERHOST_IN_NAMES: Caps = Caps(1 << 11);

    pub fn has(self, cap: Caps) -> bool {
        self.0 & cap.0 == cap.0
    }

    fn with(self, cap: Caps, on: bool) -> Caps {
        if on {
            Caps(self.0 | cap.0)
        } else {
            Caps(self.0 & !cap.0)
        }
    }
}

/// Every capability offered: name, value shown to `CAP LS 302`, bit.
pub const OFFERED: &[(&str, &str, Caps)] = &[
    ("account-tag", "", Caps::ACCOUNT_TAG),
    ("away-notify", "", Caps::AWAY_NOTIFY),
    ("batch", "", Caps::BATCH),
    ("draft/chathistory", "", Caps::CHATHISTORY),
    ("draft/read-marker", "", Caps::READ_MARKER),
    ("echo-message", "", Caps::ECHO_MESSAGE),
    ("labeled-response", "", Caps::LABELED_RESPONSE),
    ("message-tags", "", Caps::MESSAGE_TAGS),
    ("multi-prefix", "", Caps::MULTI_PREFIX),
    ("sasl", "PLAIN", Caps::SASL),
    ("server-time", "", Caps::SERVER_TIME),
    ("userhost-in-names", "", Caps::USERHOST_IN_NAMES),
];

/// Runs an IRC connection's reader thread.
pub fn serve(
    server: Arc<ChatServer>,
    outbox: Arc<Outbox>,
    lines: impl LineSource,
    link: Arc<Link>,
) {
    let conversation = IrcConversation {
        client: Client::new(Arc::clone(&server), Arc::clone(&outbox)),
        link,
        registration: Registration::default(),
        response: Response::default(),
        last_heard: Instant::now(),
        pinged: false,
        next_batch: 0,
        set_away: false,
    };
    reader::read(&server, &outbox, lines, conversation);
}

/// One IRC connection as its reader thread sees it.
pub struct IrcConversation {
    client: Client,
    link: Arc<Link>,
    registration: Registration,
    /// The reply to the command being carried out, collected so a labelled command's reply
    /// can be labelled as a whole (IRCv3 labeled-response: one line, a batch, or `ACK`).
    response: Response,
    /// When the client last sent a line, and whether it was pinged since.
    last_heard: Instant,
    pinged: bool,
    next_batch: u64,
    /// This connection set an away message, which it clears when it ends.
    set_away: bool,
}

#[derive(Default)]
struct Response {
    label: Option<String>,
    text: String,
    /// The whole reply is one batch already (CHATHISTORY): the label goes on its start.
    one_batch: bool,
    /// The reply is sent by the writer (the echo of a PRIVMSG): no `ACK` from here.
    elsewhere: bool,
}

impl IrcConversation {
    fn nick(&self) -> &str {
        self.link.nick()
    }

    /// Adds a finished line (with its `\r\n`) to the current reply.
    fn say(&mut self, line: String) {
        self.response.text.push_str(&line);
    }

    /// Adds a numeric to the current reply.
    fn numeric(&mut self, code: &str, params: &[&str], text: &str) {
        let line = numeric(self.link.nick(), code, params, text);
        self.say(line);
    }

    fn batch_id(&mut self) -> String {
        self.next_batch += 1;
        format!("{}b{}", self.link.id, self.next_batch)
    }

    /// Queues the current reply, labelled as IRCv3 labeled-response asks.
    fn flush(&mut self) {
        let response = std::mem::take(&mut self.response);
        let mut text = response.text;
        if let Some(label) = response
            .label
            .filter(|_| self.caps().has(Caps::LABELED_RESPONSE))
        {
            let tag = format!("label={}", parse::escape(&label));
            let lines = text.matches("\r\n").count();
            text = if lines == 0 {
                if response.elsewhere {
                    String::new()
                } else {
                    format!("@{tag} :{SERVER_NAME} ACK\r\n")
                }
            } else if lines == 1 || response.one_batch {
                let (first, rest) = text.split_at(text.find("\r\n").unwrap_or(0) + 2);
                format!("{}{rest}", with_tag(first, &tag))
            } else {
                let id = self.batch_id();
                let mut out = format!("@{tag} :{SERVER_NAME} BATCH +{id} labeled-response\r\n");
                for line in text.split_inclusive("\r\n") {
                    out.push_str(&with_tag(line, &format!("batch={id}")));
                }
                out.push_str(&format!(":{SERVER_NAME} BATCH -{id}\r\n"));
                out
            };
        }
        if !text.is_empty() {
            self.send_text(text);
        }
    }

    /// Queues finished IRC text to this connection.
    fn send_text(&self, text: String) {
        let event = Event::Text {
            wire: Wire::Irc,
            text: text.into_boxed_str(),
        };
        self.client.send_line(Line::reply(event, None));
    }

    fn caps(&self) -> Caps {
        self.link.caps()
    }

    fn set_caps(&self, caps: Caps) {
        self.link.set_caps(caps);
    }

    fn charge(&mut self, gate: &mut Gate<'_>) -> bool {
        match gate.charge() {
            Charge::Allowed => true,
            Charge::RateLimited { retry_in } => {
                let text = format!(
                    "rate-limited: command dropped; retry in {}ms",
                    retry_in.as_millis()
                );
                let line = format!(":{SERVER_NAME} NOTICE {} :{text}\r\n", self.nick());
                self.send_text(line);
                false
            }
            Charge::Flooding => false,
        }
    }

    fn carry_out(&mut self, message: Message) {
        if self.client.logged_in() {
            self.command(message);
        } else {
            self.register(message);
        }
    }
}

/// `line` with `tag` added to its tag block (made if it has none).
fn with_tag(line: &str, tag: &str) -> String {
    match line.strip_prefix('@') {
        Some(rest) => format!("@{tag};{rest}"),
        None => format!("@{tag} {line}"),
    }
}

impl Conversation for IrcConversation {
    // IRC clients speak first.
    fn greet(&mut self) {}

    fn logged_in(&self) -> bool {
        self.client.logged_in()
    }

    fn line(&mut self, line: &[u8], gate: &mut Gate<'_>) {
        self.last_heard = Instant::now();
        self.pinged = false;
        let message = match parse::parse(line) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                if self.charge(gate) {
                    match error {
                        // UTF8ONLY: a standard reply naming the command, as the spec asks.
                        ParseError::InvalidUtf8 => {
                            let lossy = String::from_utf8_lossy(line);
                            let command = parse::parse(lossy.as_bytes())
                                .ok()
                                .flatten()
                                .map_or("*".to_owned(), |m| m.command);
                            self.say(format!(
                                ":{SERVER_NAME} FAIL {command} INVALID_UTF8 :lines must be UTF-8\r\n"
                            ));
                        }
                        ParseError::NoCommand => {
                            self.numeric(ERR_UNKNOWNCOMMAND, &["*"], "no command on the line")
                        }
                        ParseError::TooLong => {
                            self.numeric(ERR_INPUTTOOLONG, &[], "too many parameters or tags")
                        }
                    }
                    self.flush();
                }
                return;
            }
        };
        // QUIT and PONG are never refused: one ends the connection, the other is liveness.
        let free = matches!(message.command.as_str(), "QUIT" | "PONG");
        if !free && !self.charge(gate) {
            return;
        }
        self.response.label = message
            .tag("label")
            .filter(|label| !label.is_empty() && label.len() <= 64)
            .map(str::to_owned);
        self.carry_out(message);
        self.flush();
    }

    fn too_long(&mut self, _start: &[u8], gate: &mut Gate<'_>) {
        if self.charge(gate) {
            self.numeric(ERR_INPUTTOOLONG, &[], "Input line was too long");
            self.flush();
        }
    }

    fn idle_at(&self) -> Option<Instant> {
        (!self.pinged).then_some(self.last_heard + PING_AFTER)
    }

    fn idle(&mut self, _now: Instant) {
        self.pinged = true;
        self.send_text(format!("PING :{SERVER_NAME}\r\n"));
    }

    fn end(self) {
        if self.set_away {
            let server = self.client.server();
            server.irc_away.lock().remove(self.link.nick());
        }
        self.client.end();
    }
}
