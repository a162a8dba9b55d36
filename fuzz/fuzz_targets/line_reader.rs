//! The line splitter against a model. The input is split into reads of fuzzer-chosen sizes,
//! with interrupted and timed-out reads between them, and `LineReader` must produce exactly
//! the lines the model does: split on `\n`, lines over the limit (not counting a `\r` before
//! the `\n`) become `TooLong`, blank lines (spaces only) are skipped, a last line without
//! `\n` counts if it fits.
#![no_main]

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read};

use arbitrary::Arbitrary;
use chatd::transport::line_reader::{LineReader, ReadLine};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Case {
    max_line: u8,
    /// Each read: how many bytes (at most), or an error instead.
    reads: Vec<(u8, Step)>,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Step {
    Bytes,
    Interrupted,
    WouldBlock,
}

struct Scripted {
    bytes: VecDeque<u8>,
    reads: VecDeque<(u8, Step)>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (size, step) = self.reads.pop_front().unwrap_or((u8::MAX, Step::Bytes));
        match step {
            Step::Interrupted => Err(ErrorKind::Interrupted.into()),
            Step::WouldBlock => Err(ErrorKind::WouldBlock.into()),
            Step::Bytes => {
                let n = usize::from(size.max(1))
                    .min(buf.len())
                    .min(self.bytes.len());
                for slot in &mut buf[..n] {
                    *slot = self.bytes.pop_front().unwrap();
                }
                Ok(n)
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Event {
    Line(Vec<u8>),
    TooLong,
}

fn model(bytes: &[u8], max_line: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut parts = bytes.split(|&b| b == b'\n').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if !part.is_empty() && part.len() <= max_line {
                events.push(Event::Line(part.to_vec()));
            }
            break;
        }
        if content(part).len() > max_line {
            events.push(Event::TooLong);
        } else if content(part).iter().any(|&b| b != b' ') {
            events.push(Event::Line(part.to_vec()));
        }
    }
    events
}

/// A line without the `\r` of a `\r\n` line end.
fn content(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fuzz_target!(|case: Case| {
    let max_line = usize::from(case.max_line);
    let expected = model(&case.bytes, max_line);
    let input = Scripted {
        bytes: case.bytes.iter().copied().collect(),
        reads: case.reads.into_iter().collect(),
    };
    let mut reader = LineReader::new(input, max_line);
    let mut events = Vec::new();
    // Every call consumes a read; the script is finite, so this ends.
    loop {
        match reader.next_line() {
            Ok(ReadLine::Line(line)) => {
                assert!(content(line).len() <= max_line);
                events.push(Event::Line(line.to_vec()));
            }
            Ok(ReadLine::TooLong) => events.push(Event::TooLong),
            Ok(ReadLine::Blank | ReadLine::Incomplete) => {}
            Ok(ReadLine::End) => break,
            Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock),
        }
    }
    assert_eq!(events, expected);
});
