//! The reader thread: one per connection. It reads lines from its transport's
//! [`LineSource`] and hands each to the connection's [`Conversation`] (the chatd line
//! protocol's is [`ChatdConversation`]; IRC's is `irc::IrcConversation`), enforcing the limits
//! every front door shares: the login timeout, the line timeout (slow loris) and the command
//! rate limit. When the connection ends for any reason, the conversation logs the session out.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cmd::Client;
use crate::delivery::outbox::{CloseReason, Outbox};
use crate::protocol::command::readable_label;
use crate::protocol::{parse_request, ClientError, Command, ErrorCode};
use crate::server::ChatServer;
use crate::stats::Stats;
use crate::transport::limits::{Admission, CommandLimiter};
use crate::transport::{stack, LineSource, ReadLine};

/// How long a reader waits without input before it hands back the stack pages its commands
/// touched (see [`stack`]). Long enough that a client talking steadily never pays for it.
const TRIM_AFTER: Duration = Duration::from_secs(2);

/// What the reading loop does when one of its deadlines passes.
#[derive(Debug, Clone, Copy)]
enum Due {
    Close(CloseReason),
    /// The conversation's idle check ([`Conversation::idle`]).
    Idle,
    /// Hand back the stack pages the last commands touched.
    TrimStack,
}

/// Which read timeout the socket has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Nothing,
    /// The nearest close or idle deadline's, re-armed before every read.
    Deadline,
    /// The stack trim's, armed once for as long as only the trim is pending.
    Trim,
}

/// What a protocol does with the lines the reader thread reads: the one seam between the
/// shared reading machinery (deadlines, rate limit, closing) and a protocol's commands.
pub trait Conversation {
    /// The connection's first lines, if the protocol speaks first.
    fn greet(&mut self);
    /// Whether the connection has a session yet; until then the login timeout runs.
    fn logged_in(&self) -> bool;
    /// Carries out one whole line. A line that costs a command calls [`Gate::charge`] first
    /// and drops the command if it is refused.
    fn line(&mut self, line: &[u8], gate: &mut Gate<'_>);
    /// A line over the length limit was discarded; `start` is what was kept of it.
    fn too_long(&mut self, start: &[u8], gate: &mut Gate<'_>);
    /// When the connection counts as idle and [`Conversation::idle`] should run (IRC pings a
    /// quiet client); `None` for never.
    fn idle_at(&self) -> Option<Instant> {
        None
    }
    /// The idle time passed with no line.
    fn idle(&mut self, _now: Instant) {}
    /// The connection is over.
    fn end(self);
}

/// The command rate limit, as a conversation sees it.
pub struct Gate<'a> {
    limiter: &'a mut Option<CommandLimiter>,
    outbox: &'a Outbox,
}

/// What [`Gate::charge`] decided about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Allowed,
    /// Refuse the command, telling the client when to retry.
    RateLimited {
        retry_in: Duration,
    },
    /// The session kept sending after being refused; it is being closed.
    Flooding,
}

impl Gate<'_> {
    /// Charges one command to the session's rate limit. Counts the refusals and closes a
    /// flooding session; answering a refused command is the conversation's job.
    pub fn charge(&mut self) -> Charge {
        let Some(limiter) = self.limiter else {
            return Charge::Allowed;
        };
        match limiter.admit(Instant::now()) {
            Admission::Allowed => Charge::Allowed,
            Admission::Refused { retry_in } => {
                Stats::add(&self.outbox.stats().rate_limited, 1);
                Charge::RateLimited { retry_in }
            }
            Admission::Flooding => {
                Stats::add(&self.outbox.stats().flooding, 1);
                self.outbox.close(CloseReason::Flooding);
                Charge::Flooding
            }
        }
    }
}

pub fn run(server: Arc<ChatServer>, outbox: Arc<Outbox>, lines: impl LineSource) {
    let conversation = ChatdConversation {
        max_line: server.config.max_line,
        max_body: server.config.max_body,
        client: Client::new(Arc::clone(&server), Arc::clone(&outbox)),
    };
    read(&server, &outbox, lines, conversation);
}

/// The reading loop any protocol shares.
pub fn read(
    server: &ChatServer,
    outbox: &Outbox,
    mut lines: impl LineSource,
    mut conversation: impl Conversation,
) {
    let config = &server.config;
    let login_deadline = Instant::now() + config.login_timeout;
    let line_timeout = config.line_timeout;
    let mut limiter = config
        .rate_limit
        .map(|limit| CommandLimiter::new(&limit, Instant::now()));
    conversation.greet();
    // When the first bytes of the line now being assembled arrived (the slow-loris guard).
    let mut line_started: Option<Instant> = None;
    // When the last line was carried out, until the stack is trimmed after it (see `stack`):
    // the loop's own clock reading right after it, so a line costs no extra one.
    let mut last_command: Option<Instant> = None;
    let mut ran_command = false;
    let mut armed = Armed::Nothing;
    loop {
        // The nearest deadline that applies (logging in, finishing the current line, the
        // conversation's idle check, trimming the stack) bounds the next read. It is re-armed
        // before every read, and `LineReader` returns after every read that leaves a line
        // unfinished, so trickling bytes extends none of them.
        let now = Instant::now();
        if std::mem::take(&mut ran_command) {
            last_command = Some(now);
        }
        let login = (!conversation.logged_in())
            .then_some((login_deadline, Due::Close(CloseReason::LoginTimeout)));
        let line = line_started
            .map(|started| (started + line_timeout, Due::Close(CloseReason::LineTimeout)));
        let idle = conversation.idle_at().map(|at| (at, Due::Idle));
        let trim = last_command.map(|at| (at + TRIM_AFTER, Due::TrimStack));
        match [login, line, idle, trim]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
        {
            Some((at, due)) if at <= now => match due {
                Due::Close(reason) => {
                    outbox.close(reason);
                    break;
                }
                Due::Idle => {
                    conversation.idle(now);
                    if outbox.closing().is_some() {
                        break;
                    }
                    continue;
                }
                Due::TrimStack => {
                    stack::release_below_here();
                    last_command = None;
                    continue;
                }
            },
            // The trim is all that is pending and its timeout is armed already. Re-arming it
            // before every read would cost a client that keeps talking a system call per line
            // for nothing; left alone, it fires at most `TRIM_AFTER` late.
            Some((_, Due::TrimStack)) if armed == Armed::Trim => {}
            Some((at, due)) => {
                lines.set_read_timeout(Some(at - now));
                armed = match due {
                    Due::TrimStack => Armed::Trim,
                    _ => Armed::Deadline,
                };
            }
            None if armed != Armed::Nothing => {
                lines.set_read_timeout(None);
                armed = Armed::Nothing;
            }
            None => {}
        }
        let mut gate = Gate {
            limiter: &mut limiter,
            outbox,
        };
        match lines.next_line() {
            Ok(ReadLine::Line(line)) => {
                line_started = None;
                // The server closed the connection (replaced, slow consumer, shutdown): the
                // EOF that ended this read was ours, so a half-sent last line was never
                // finished by the client and must not be carried out.
                if outbox.closing().is_some() {
                    break;
                }
                conversation.line(line, &mut gate);
                ran_command = true;
            }
            Ok(ReadLine::TooLong(start)) => {
                line_started = None;
                conversation.too_long(start, &mut gate);
                ran_command = true;
            }
            // Skipped by the line source: free, as the protocol promises.
            Ok(ReadLine::Blank) => line_started = None,
            Ok(ReadLine::Incomplete) => {
                line_started.get_or_insert_with(Instant::now);
            }
            Ok(ReadLine::End) => {
                outbox.close(CloseReason::Hangup);
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                outbox.close(CloseReason::Gone);
                break;
            }
        }
        if outbox.closing().is_some() {
            break;
        }
    }
    conversation.end();
}

/// The chatd line protocol: each line is parsed into a request and carried out by `Client`.
struct ChatdConversation {
    max_line: usize,
    max_body: usize,
    client: Client,
}

impl ChatdConversation {
    /// Charges one command; a refused command is answered here, with the command's label so a
    /// client matching replies by label sees which command was dropped.
    fn charge(&self, gate: &mut Gate<'_>, label: Option<&str>) -> bool {
        match gate.charge() {
            Charge::Allowed => true,
            Charge::RateLimited { retry_in } => {
                let text = format!("retry in {}ms", retry_in.as_millis());
                self.client
                    .refuse(label, ClientError::new(ErrorCode::RateLimited, text));
                false
            }
            Charge::Flooding => false,
        }
    }
}

impl Conversation for ChatdConversation {
    fn greet(&mut self) {
        self.client.greet();
    }

    fn logged_in(&self) -> bool {
        self.client.logged_in()
    }

    fn line(&mut self, line: &[u8], gate: &mut Gate<'_>) {
        match parse_request(line, self.max_body) {
            // A blank line is ignored, so it costs nothing and is not charged.
            Ok(None) => {}
            Ok(Some(request)) => {
                // QUIT is never refused: all it can do is end the connection.
                let free = matches!(request.command, Command::Quit);
                if free || self.charge(gate, request.label.as_deref()) {
                    self.client.execute(request);
                }
            }
            Err(rejection) => {
                let label = rejection.label.as_deref();
                if self.charge(gate, label) {
                    self.client.refuse(label, rejection.error);
                }
            }
        }
    }

    fn too_long(&mut self, start: &[u8], gate: &mut Gate<'_>) {
        // The label, if the kept start of the line holds the whole tag block.
        let label = start
            .contains(&b' ')
            .then(|| readable_label(start))
            .flatten();
        let label = label.as_deref();
        if self.charge(gate, label) {
            let max_line = self.max_line;
            self.client.refuse(
                label,
                ClientError::new(
                    ErrorCode::LineTooLong,
                    format!("lines are at most {max_line} bytes; the line was discarded"),
                ),
            );
        }
    }

    fn end(self) {
        self.client.end();
    }
}
