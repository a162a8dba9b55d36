//! The reader thread: one per connection. It reads lines, parses each into a typed request
//! and carries it out (`cmd::Client`), then, when the connection ends for any
//! reason, logs the session out.

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use crate::cmd::Client;
use crate::delivery::outbox::{CloseReason, Outbox};
use crate::protocol::{parse_request, ClientError, Command, ErrorCode};
use crate::server::ChatServer;
use crate::stats::Stats;
use crate::transport::limits::{Admission, CommandLimiter};

pub fn run(server: Arc<ChatServer>, outbox: Arc<Outbox>, socket: Arc<TcpStream>) {
    let config = &server.config;
    let login_deadline = Instant::now() + config.login_timeout;
    let (max_line, max_body) = (config.max_line, config.max_body);
    let line_timeout = config.line_timeout;
    let mut limiter = config
        .rate_limit
        .map(|limit| CommandLimiter::new(&limit, Instant::now()));
    let mut connection = Client::new(Arc::clone(&server), Arc::clone(&outbox));
    connection.greet();
    let mut lines = LineReader::new(&*socket, max_line);
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
                let _ = socket.set_read_timeout(Some(at - now));
                timeout_armed = true;
            }
            None if timeout_armed => {
                let _ = socket.set_read_timeout(None);
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
            Ok(ReadLine::TooLong) => {
                line_started = None;
                if charge(&mut limiter, &connection, &outbox, None) {
                    connection.refuse(
                        None,
                        ClientError::new(
                            ErrorCode::LineTooLong,
                            format!("lines are at most {max_line} bytes; the line was discarded"),
                        ),
                    );
                }
            }
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

#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine<'a> {
    /// A complete line without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded as they arrived.
    TooLong,
    /// A read delivered part of a line and no line end. Call again for the rest; the caller
    /// gets control back after every such read so it can enforce deadlines.
    Incomplete,
    /// End of stream.
    End,
}

/// Splits a byte stream into lines while holding at most `max_line` bytes of any one line, so
/// a client cannot make the server buffer an endless line.
///
/// A line in progress survives an error (such as a read timeout): calling `next_line` again
/// carries on where the last call stopped.
pub struct LineReader<R> {
    input: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    /// Bytes of a line have been taken from `input` but not yet its end.
    in_line: bool,
    /// The line in progress passed `max_line`: its bytes are skipped until its end.
    discarding: bool,
}

/// Read buffer per connection. Lines longer than this are assembled in `line`.
const READ_BUFFER: usize = 4096;

impl<R: io::Read> LineReader<R> {
    pub fn new(input: R, max_line: usize) -> LineReader<R> {
        LineReader {
            input: BufReader::with_capacity(READ_BUFFER, input),
            line: Vec::new(),
            max_line,
            in_line: false,
            discarding: false,
        }
    }

    pub fn next_line(&mut self) -> io::Result<ReadLine<'_>> {
        if !self.in_line {
            self.line.clear();
            self.discarding = false;
        }
        loop {
            let available = match self.input.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                // A last line without `\n` still counts, so `printf QUIT | nc` works.
                let unfinished = self.in_line && !self.discarding;
                self.in_line = false;
                return Ok(if unfinished {
                    ReadLine::Line(&self.line)
                } else {
                    ReadLine::End
                });
            }
            let (chunk, found_end) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if !self.discarding && self.line.len() + chunk.len() > self.max_line {
                self.discarding = true;
                // Give the memory back: a long line's buffer is not kept for the next one.
                self.line = Vec::new();
            }
            if !self.discarding {
                self.line.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(found_end);
            self.input.consume(used);
            if found_end {
                self.in_line = false;
                return Ok(if self.discarding {
                    ReadLine::TooLong
                } else {
                    ReadLine::Line(&self.line)
                });
            }
            self.in_line = true;
            return Ok(ReadLine::Incomplete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.next_line().unwrap() {
                ReadLine::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                ReadLine::TooLong => out.push("<too long>".into()),
                ReadLine::Incomplete => {}
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

    /// Reads as scripted: each step is some bytes or an error of the given kind.
    struct Script(std::collections::VecDeque<Result<Vec<u8>, ErrorKind>>);

    impl io::Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(kind)) => Err(kind.into()),
            }
        }
    }

    #[test]
    fn a_line_in_progress_survives_a_timeout_and_is_reported_incomplete() {
        let script = Script(
            [
                Ok(b"SEND ro".to_vec()),
                Err(ErrorKind::WouldBlock),
                Ok(b"om hi\nPI".to_vec()),
                Ok(b"NG\n".to_vec()),
            ]
            .into_iter()
            .collect(),
        );
        let mut reader = LineReader::new(script, 100);
        assert_eq!(reader.next_line().unwrap(), ReadLine::Incomplete);
        assert_eq!(
            reader.next_line().unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(reader.next_line().unwrap(), ReadLine::Line(b"SEND room hi"));
        assert_eq!(reader.next_line().unwrap(), ReadLine::Incomplete);
        assert_eq!(reader.next_line().unwrap(), ReadLine::Line(b"PING"));
        assert_eq!(reader.next_line().unwrap(), ReadLine::End);
        assert_eq!(reader.next_line().unwrap(), ReadLine::End);
    }

    #[test]
    fn an_overlong_line_at_end_of_stream_is_dropped_silently() {
        assert_eq!(lines(b"ok\n0123456789abc", 8), ["ok"]);
    }

    /// What `LineReader` must produce for `bytes`: split on `\n`; a line over the limit is
    /// `TooLong`; a last line without `\n` counts if it is not empty and fits.
    fn model(bytes: &[u8], max_line: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut parts = bytes.split(|&b| b == b'\n').peekable();
        while let Some(part) = parts.next() {
            let last = parts.peek().is_none();
            if part.len() > max_line {
                if !last {
                    out.push("<too long>".to_owned());
                }
            } else if !last || !part.is_empty() {
                out.push(String::from_utf8_lossy(part).into_owned());
            }
        }
        out
    }

    proptest::proptest! {
        /// However the bytes are cut into reads, and with timeouts between them, the lines
        /// are the model's. (fuzz/ runs the same property under libFuzzer.)
        #[test]
        fn lines_do_not_depend_on_how_the_bytes_arrive(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), proptest::num::u8::ANY],
                0..300,
            ),
            cuts in proptest::collection::vec((1usize..40, proptest::bool::ANY), 0..40),
            max_line in 0usize..48,
        ) {
            let mut rest = &bytes[..];
            let mut steps = std::collections::VecDeque::new();
            for (size, time_out_first) in cuts {
                if time_out_first {
                    steps.push_back(Err(ErrorKind::WouldBlock));
                }
                let (now, later) = rest.split_at(size.min(rest.len()));
                steps.push_back(Ok(now.to_vec()));
                rest = later;
            }
            steps.push_back(Ok(rest.to_vec()));
            let mut reader = LineReader::new(Script(steps), max_line);
            let mut got = Vec::new();
            loop {
                match reader.next_line() {
                    Ok(ReadLine::Line(l)) => {
                        proptest::prop_assert!(l.len() <= max_line);
                        got.push(String::from_utf8_lossy(l).into_owned());
                    }
                    Ok(ReadLine::TooLong) => got.push("<too long>".to_owned()),
                    Ok(ReadLine::Incomplete) => {}
                    Ok(ReadLine::End) => break,
                    Err(e) => proptest::prop_assert_eq!(e.kind(), ErrorKind::WouldBlock),
                }
            }
            proptest::prop_assert_eq!(got, model(&bytes, max_line));
        }
    }
}
