//! The reader thread: one per connection. It reads lines from its transport's
//! [`LineSource`], parses each into a typed request and carries it out (`cmd::Client`), then,
//! when the connection ends for any reason, logs the session out.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use crate::cmd::Client;
use crate::delivery::outbox::{CloseReason, Outbox};
use crate::protocol::command::readable_label;
use crate::protocol::{parse_request, ClientError, Command, ErrorCode};
use crate::server::ChatServer;
use crate::stats::Stats;
use crate::transport::limits::{Admission, CommandLimiter};
use crate::transport::{LineSource, ReadLine};

pub fn run(server: Arc<ChatServer>, outbox: Arc<Outbox>, mut lines: impl LineSource) {
    let config = &server.config;
    let login_deadline = Instant::now() + config.login_timeout;
    let (max_line, max_body) = (config.max_line, config.max_body);
    let line_timeout = config.line_timeout;
    let mut limiter = config
        .rate_limit
        .map(|limit| CommandLimiter::new(&limit, Instant::now()));
    let mut connection = Client::new(Arc::clone(&server), Arc::clone(&outbox));
    connection.greet();
    // When the first bytes of the line now being assembled arrived (the slow-loris guard).
    let mut line_started: Option<Instant> = None;
    let mut timeout_armed = false;
    loop {
        // The nearest deadline that applies (logging in, finishing the current line) bounds
        // the next read. It is re-armed before every read, and `LineReader` returns after
        // every read that leaves a line unfinished, so trickling bytes extends neither.
        let now = Instant::now();
        let login =
            (!connection.logged_in()).then_some((login_deadline, CloseReason::LoginTimeout));
        let line = line_started.map(|started| (started + line_timeout, CloseReason::LineTimeout));
        match [login, line]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
        {
            Some((at, reason)) if at <= now => {
                outbox.close(reason);
                break;
            }
            Some((at, _)) => {
                lines.set_read_timeout(Some(at - now));
                timeout_armed = true;
            }
            None if timeout_armed => {
                lines.set_read_timeout(None);
                timeout_armed = false;
            }
            None => {}
        }
        match lines.next_line() {
            Ok(ReadLine::Line(line)) => {
                line_started = None;
                // The server closed the connection (replaced, slow consumer, shutdown): the
                // EOF that ended this read was ours, so a half-sent last line was never
                // finished by the client and must not be carried out.
                if outbox.closing().is_some() {
                    break;
                }
                match parse_request(line, max_body) {
                    // A blank line is ignored, so it costs nothing and is not charged.
                    Ok(None) => {}
                    Ok(Some(request)) => {
                        // QUIT is never refused: all it can do is end the connection.
                        let free = matches!(request.command, Command::Quit);
                        let label = request.label.as_deref();
                        if free || charge(&mut limiter, &connection, &outbox, label) {
                            connection.execute(request);
                        }
                    }
                    Err(rejection) => {
                        let label = rejection.label.as_deref();
                        if charge(&mut limiter, &connection, &outbox, label) {
                            connection.refuse(label, rejection.error);
                        }
                    }
                }
            }
            Ok(ReadLine::TooLong(start)) => {
                line_started = None;
                // The label, if the kept start of the line holds the whole tag block.
                let label = start
                    .contains(&b' ')
                    .then(|| readable_label(start))
                    .flatten();
                let label = label.as_deref();
                if charge(&mut limiter, &connection, &outbox, label) {
                    connection.refuse(
                        label,
                        ClientError::new(
                            ErrorCode::LineTooLong,
                            format!("lines are at most {max_line} bytes; the line was discarded"),
                        ),
                    );
                }
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
    connection.end();
}

/// Charges one command to the session's rate limit and says whether to carry it out. A
/// refused command is answered here (with the command's label, so a client matching replies
/// by label sees which command was dropped); a flooding session is closed.
fn charge(
    limiter: &mut Option<CommandLimiter>,
    connection: &Client,
    outbox: &Outbox,
    label: Option<&str>,
) -> bool {
    let Some(limiter) = limiter else {
        return true;
    };
    match limiter.admit(Instant::now()) {
        Admission::Allowed => true,
        Admission::Refused { retry_in } => {
            Stats::add(&outbox.stats().rate_limited, 1);
            let text = format!("retry in {}ms", retry_in.as_millis());
            connection.refuse(label, ClientError::new(ErrorCode::RateLimited, text));
            false
        }
        Admission::Flooding => {
            Stats::add(&outbox.stats().flooding, 1);
            outbox.close(CloseReason::Flooding);
            false
        }
    }
}
