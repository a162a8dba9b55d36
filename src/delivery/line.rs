//! One line queued to a session: shared by every recipient, with the resume cursors it moves.

use std::sync::Arc;

/// One encoded server line, shared by every recipient (a publish encodes a message once).
/// Queues hold `Arc<Line>`: one pointer per slot, so a 1,024-slot queue costs 16 KiB
/// (pointer plus crossbeam's slot stamp) however large the lines are.
#[derive(Debug)]
pub struct Line {
    pub text: Box<str>,
    pub kind: LineKind,
    /// Set on lines queued under a room's lock (MSG, OK JOIN, JOINED): once this line is
    /// written, everything in that room up to this seq that the session was owed has been
    /// written. The writer keeps the highest per room, for `BYE slow-consumer`.
    pub cursors: Box<[Cursor]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub room: Arc<str>,
    pub seq: u64,
    /// A start (at login or join: nothing before `seq` is owed to this session) counts even
    /// if its line was never written; progress (a MSG, a SYNC replay) only once written.
    pub start: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// A reply or an event that must arrive.
    Reliable,
    /// An event that may be dropped when the session is behind (presence): losing it costs
    /// a stale indicator, never a message.
    Ephemeral,
    /// Only wakes the writer so it notices that the connection is closing; writes nothing.
    Wake,
}

impl Line {
    pub fn new(text: String) -> Arc<Line> {
        Line::build(text, LineKind::Reliable, Box::new([]))
    }

    /// A reliable line that, once written, moves the session's cursor in `room` to `seq`
    /// (a MSG, a SYNC replay).
    pub fn at(text: String, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::with_cursor(text, room, seq, false)
    }

    /// A reliable line that starts the session's cursor in `room` at `seq` (OK JOIN, JOINED).
    pub fn start(text: String, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::with_cursor(text, room, seq, true)
    }

    fn with_cursor(text: String, room: &Arc<str>, seq: u64, start: bool) -> Arc<Line> {
        let cursor = Cursor {
            room: Arc::clone(room),
            seq,
            start,
        };
        Line::build(text, LineKind::Reliable, Box::new([cursor]))
    }

    /// Writes nothing; only starts the session's cursors (at login: one line for all the
    /// user's rooms, however many, so it takes one slot of the queue).
    pub fn cursors(cursors: Vec<Cursor>) -> Arc<Line> {
        Line::build(
            String::new(),
            LineKind::Reliable,
            cursors.into_boxed_slice(),
        )
    }

    pub fn ephemeral(text: String) -> Arc<Line> {
        Line::build(text, LineKind::Ephemeral, Box::new([]))
    }

    pub(crate) fn wake() -> Arc<Line> {
        Line::build(String::new(), LineKind::Wake, Box::new([]))
    }

    fn build(text: String, kind: LineKind, cursors: Box<[Cursor]>) -> Arc<Line> {
        Arc::new(Line {
            text: text.into_boxed_str(),
            kind,
            cursors,
        })
    }
}
