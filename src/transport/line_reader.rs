//! Splitting a byte stream into lines, for transports that carry a stream (TCP).

use std::io::{self, BufRead, BufReader, ErrorKind};

#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine<'a> {
    /// A complete line without its `\n`. A `\r` before the `\n` is left in, for the parser
    /// to strip; the length limit does not count it.
    Line(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded as they arrived, all but
    /// its first [`KEPT_OF_LONG_LINE`] (or fewer), kept so the reply can carry the line's label.
    TooLong(&'a [u8]),
    /// Only blank lines (empty, or nothing but spaces) ended, and were skipped: the protocol
    /// ignores them, so they never reach the caller one by one. Call again; the caller gets
    /// control back after every read so it can enforce deadlines.
    Blank,
    /// A read delivered part of a line and no line end. Call again for the rest; the caller
    /// gets control back after every such read so it can enforce deadlines.
    Incomplete,
    /// End of stream.
    End,
}

/// Splits a byte stream into lines while holding at most `max_line` bytes of any one line
/// (plus the `\r` of a `\r\n` line end), so a client cannot make the server buffer an endless
/// line.
///
/// A line in progress survives an error (such as a read timeout): calling `next_line` again
/// carries on where the last call stopped.
///
/// Blank lines are skipped in bulk, a buffer at a time: they are free in the protocol, so a
/// client sending nothing but line ends must cost the server a scan per read, not a turn of
/// the command loop per line (200 MB of `\n` took 12 s of CPU when each was returned).
pub struct LineReader<R> {
    input: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    /// Bytes of a line have been taken from `input` but not yet its end.
    in_line: bool,
    /// The line in progress passed `max_line`: its bytes are skipped until its end.
    discarding: bool,
}

/// Bytes kept from the start of a line that is too long: enough for a tag block with a label
/// and a cid, so even `ERR line-too-long` can be matched to its request.
pub const KEPT_OF_LONG_LINE: usize = 160;

/// Read buffer per connection. Lines longer than this are assembled in `line`. Clients send
/// short commands (a `SEND` is a line of 100-200 bytes), so 1 KiB still takes several per
/// `read`; every idle session holds this buffer, and 4 KiB was a tenth of its memory.
const READ_BUFFER: usize = 1024;

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

    /// The input, for settings such as its read timeout (reading from it directly would
    /// skip what is buffered).
    pub fn get_ref(&self) -> &R {
        self.input.get_ref()
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
                // A last line without `\n` still counts, so `printf QUIT | nc` works. It has
                // no line end, so a `\r` it ends with is content, and counts.
                let unfinished =
                    self.in_line && !self.discarding && self.line.len() <= self.max_line;
                self.in_line = false;
                return Ok(if unfinished {
                    ReadLine::Line(&self.line)
                } else {
                    ReadLine::End
                });
            }
            let blanks = if self.in_line {
                0
            } else {
                blank_run(available, self.max_line)
            };
            let rest = &available[blanks..];
            if rest.is_empty() {
                self.input.consume(blanks);
                return Ok(ReadLine::Blank);
            }
            let (chunk, found_end) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            // One byte over the limit is held for the `\r` of a `\r\n` line end, which the
            // limit does not count: whether it is one is known only at the `\n`.
            let holds = self.max_line.saturating_add(1);
            if !self.discarding && self.line.len() + chunk.len() > holds {
                self.discarding = true;
                // Keep the line's start, for its label; give the rest of the memory back, so
                // a long line's buffer is not kept for the next one.
                let room = KEPT_OF_LONG_LINE.saturating_sub(self.line.len());
                self.line.extend_from_slice(&chunk[..room.min(chunk.len())]);
                self.line.truncate(KEPT_OF_LONG_LINE);
                self.line.shrink_to_fit();
            }
            if !self.discarding {
                self.line.extend_from_slice(chunk);
            }
            let used = blanks + chunk.len() + usize::from(found_end);
            self.input.consume(used);
            if found_end {
                self.in_line = false;
                let content = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                return Ok(if self.discarding || content.len() > self.max_line {
                    ReadLine::TooLong(&self.line[..self.line.len().min(KEPT_OF_LONG_LINE)])
                } else if is_blank(content) {
                    // Its end came in a later read than its start, so `blank_run` missed it.
                    ReadLine::Blank
                } else {
                    ReadLine::Line(&self.line)
                });
            }
            self.in_line = true;
            return Ok(ReadLine::Incomplete);
        }
    }
}

/// A line with nothing to carry out: empty, or spaces only (the field separator).
fn is_blank(content: &[u8]) -> bool {
    content.iter().all(|&b| b == b' ')
}

/// How many bytes at the start of `bytes` are whole blank lines: up to `max_line` spaces,
/// then `\n` or `\r\n`. (Longer runs of spaces are left to the line path, which calls them
/// too long, as it would if they arrived in pieces.)
fn blank_run(bytes: &[u8], max_line: usize) -> usize {
    let mut start = 0;
    loop {
        let rest = &bytes[start..];
        let spaces = rest.iter().take_while(|&&b| b == b' ').count();
        if spaces > max_line {
            return start;
        }
        match rest[spaces..] {
            [b'\n', ..] => start += spaces + 1,
            [b'\r', b'\n', ..] => start += spaces + 2,
            _ => return start,
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
                ReadLine::TooLong(_) => out.push("<too long>".into()),
                ReadLine::Blank | ReadLine::Incomplete => {}
                ReadLine::End => return out,
            }
        }
    }

    #[test]
    fn splits_lines_and_keeps_a_final_partial_line() {
        assert_eq!(lines(b"a\nbb\r\n\nccc", 10), ["a", "bb\r", "ccc"]);
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

    #[test]
    fn the_limit_does_not_count_the_line_end() {
        assert_eq!(
            lines(b"12345678\r\n12345678\n123456789\r\n12345678\r\r\n", 8),
            ["12345678\r", "12345678", "<too long>", "<too long>"]
        );
        // Without a `\n` after it, a `\r` is not a line end: it counts.
        assert_eq!(lines(b"1234567\r", 8), ["1234567\r"]);
        assert_eq!(lines(b"12345678\r", 8), Vec::<String>::new());
    }

    #[test]
    fn skips_blank_lines_in_bulk() {
        let mut input = b"\n\r\n  \n \r\n".repeat(500);
        input.extend_from_slice(b"PING x\n\n\n");
        let mut reader = LineReader::new(&input[..], 100);
        // 4,500 bytes (2,000 blank lines): a call or two per read buffer, not one per line.
        // (A read may end inside a blank line, which the next read finishes.)
        let most_calls = 2 * (4500 / READ_BUFFER + 1);
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(
                calls <= most_calls,
                "{calls} calls for 4,500 bytes of blank lines"
            );
            match reader.next_line().unwrap() {
                ReadLine::Blank | ReadLine::Incomplete => {}
                line => {
                    assert_eq!(line, ReadLine::Line(b"PING x"));
                    break;
                }
            }
        }
        assert_eq!(reader.next_line().unwrap(), ReadLine::Blank);
        assert_eq!(reader.next_line().unwrap(), ReadLine::End);
        // Spaces past the limit are not a blank line but a long one.
        assert_eq!(
            lines(b"         \n        \r\nok\n", 8),
            ["<too long>", "ok"]
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

    /// What `LineReader` must produce for `bytes`: split on `\n`; a line over the limit
    /// (not counting a `\r` before its `\n`) is `TooLong`; a blank one (spaces only) is
    /// skipped; a last line without `\n` counts if it is not empty and fits.
    fn model(bytes: &[u8], max_line: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut parts = bytes.split(|&b| b == b'\n').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                if !part.is_empty() && part.len() <= max_line {
                    out.push(String::from_utf8_lossy(part).into_owned());
                }
                break;
            }
            if content(part).len() > max_line {
                out.push("<too long>".to_owned());
            } else if content(part).iter().any(|&b| b != b' ') {
                out.push(String::from_utf8_lossy(part).into_owned());
            }
        }
        out
    }

    /// A line without the `\r` of a `\r\n` line end.
    fn content(line: &[u8]) -> &[u8] {
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    proptest::proptest! {
        /// However the bytes are cut into reads, and with timeouts between them, the lines
        /// are the model's. (fuzz/ runs the same property under libFuzzer.)
        #[test]
        fn lines_do_not_depend_on_how_the_bytes_arrive(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    Just(b'\n'),
                    Just(b'\r'),
                    Just(b' '),
                    Just(b'a'),
                    proptest::num::u8::ANY
                ],
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
                        proptest::prop_assert!(content(l).len() <= max_line);
                        got.push(String::from_utf8_lossy(l).into_owned());
                    }
                    Ok(ReadLine::TooLong(_)) => got.push("<too long>".to_owned()),
                    Ok(ReadLine::Blank | ReadLine::Incomplete) => {}
                    Ok(ReadLine::End) => break,
                    Err(e) => proptest::prop_assert_eq!(e.kind(), ErrorKind::WouldBlock),
                }
            }
            proptest::prop_assert_eq!(got, model(&bytes, max_line));
        }
    }
}
