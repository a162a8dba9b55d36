//! The reader thread: one per connection. It reads lines, parses each into a typed request
//! and carries it out (`commands::Connection`), then, when the connection ends for any
//! reason, logs the session out.

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use crate::commands::Connection;
use crate::protocol::{parse_request, reply, ClientError, ErrorCode};
use crate::server::ChatServer;
use crate::transport::outbox::{CloseReason, Outbox};

pub fn run(server: Arc<ChatServer>, outbox: Arc<Outbox>, socket: Arc<TcpStream>) {
    let config = &server.config;
    let login_deadline = Instant::now() + config.login_timeout;
    let (max_line, max_body) = (config.max_line, config.max_body);
    let mut connection = Connection::new(Arc::clone(&server), Arc::clone(&outbox));
    connection.reply(reply::GREETING.to_owned());
    let mut lines = LineReader::new(&*socket, max_line);
    let mut deadline_armed = true;
    loop {
        if !connection.logged_in() {
            // Re-armed before every read, so trickling bytes does not extend the deadline.
            let left = login_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                outbox.close(CloseReason::LoginTimeout);
                break;
            }
            let _ = socket.set_read_timeout(Some(left));
        } else if deadline_armed {
            let _ = socket.set_read_timeout(None);
            deadline_armed = false;
        }
        match lines.next_line() {
            Ok(ReadLine::Line(line)) => match parse_request(line, max_body) {
                Ok(Some(request)) => connection.execute(request),
                Ok(None) => {}
                Err(rejection) => {
                    connection.reply_error(rejection.label.as_deref(), &rejection.error)
                }
            },
            Ok(ReadLine::TooLong) => connection.reply_error(
                None,
                &ClientError::new(
                    ErrorCode::LineTooLong,
                    format!("lines are at most {max_line} bytes; the line was discarded"),
                ),
            ),
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

pub enum ReadLine<'a> {
    /// A complete line without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded as they arrived.
    TooLong,
    /// End of stream.
    End,
}

/// Splits a byte stream into lines while holding at most `max_line` bytes of any one line, so
/// a client cannot make the server buffer an endless line.
pub struct LineReader<R> {
    input: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
}

/// Read buffer per connection. Lines longer than this are assembled in `line`.
const READ_BUFFER: usize = 4096;

impl<R: io::Read> LineReader<R> {
    pub fn new(input: R, max_line: usize) -> LineReader<R> {
        LineReader {
            input: BufReader::with_capacity(READ_BUFFER, input),
            line: Vec::new(),
            max_line,
        }
    }

    pub fn next_line(&mut self) -> io::Result<ReadLine<'_>> {
        self.line.clear();
        let mut too_long = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                // A last line without `\n` still counts, so `printf QUIT | nc` works.
                return Ok(if self.line.is_empty() || too_long {
                    ReadLine::End
                } else {
                    ReadLine::Line(&self.line)
                });
            }
            let (chunk, found_end) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if !too_long && self.line.len() + chunk.len() > self.max_line {
                too_long = true;
                self.line = Vec::new();
            }
            if !too_long {
                self.line.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(found_end);
            self.input.consume(used);
            if found_end {
                return Ok(if too_long {
                    ReadLine::TooLong
                } else {
                    ReadLine::Line(&self.line)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.next_line().unwrap() {
                ReadLine::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                ReadLine::TooLong => out.push("<too long>".into()),
                ReadLine::End => return out,
            }
        }
    }

    #[test]
    fn splits_lines_and_keeps_a_final_partial_line() {
        assert_eq!(lines(b"a\nbb\r\n\nccc", 10), ["a", "bb\r", "", "ccc"]);
    }

    #[test]
    fn discards_long_lines_and_carries_on() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(lines(&input, 8), ["<too long>", "ok"]);
        assert_eq!(
            lines(b"12345678\n123456789\n", 8),
            ["12345678", "<too long>"]
        );
    }
}
