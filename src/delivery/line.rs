//! One line queued to a session: a typed event, shared by every recipient, with its wire text
//! made once per protocol on first use, and the resume cursors it moves.

use std::sync::{Arc, OnceLock};

use crate::event::Event;
use crate::protocol::Wire;

/// What a session's queue holds: `Arc<Line>`, one pointer per slot, so a 1,024-slot queue
/// costs 16 KiB (pointer plus crossbeam's slot stamp) however large the lines are.
///
/// A fan-out builds one `Line` for all recipients under the room's lock: a few pointer copies.
/// The first writer thread that writes it encodes it for its protocol (outside every lock) and
/// every later writer of that protocol reuses the text: encode once, per protocol.
#[derive(Debug)]
pub struct Line {
    pub event: Event,
    /// The request's label, on replies only.
    pub label: Option<Arc<str>>,
    pub kind: LineKind,
    /// Set on lines queued under a room's lock (MSG, OK JOIN, JOINED, a SYNC replay): once
    /// this line is written, everything in that room up to this seq that the session was owed
    /// has been written. The writer keeps the highest per room, for `BYE slow-consumer`.
    pub cursors: Box<[Cursor]>,
    /// What the line costs the queue of the one session it is for, if it is a large reply
    /// (see `Event::reply_bytes`); 0 for everything else.
    pub reply_bytes: usize,
    /// The wire text, per protocol, filled by the first writer that needs it.
    encoded: [OnceLock<Box<str>>; Wire::COUNT],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub room: Arc<str>,
    pub seq: u64,
    /// A start (at login or join: nothing before `seq` is owed to this session) counts even
    /// if its line was never written; progress (a MSG, a SYNC replay) only once written.
    pub start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A reply or an event that must arrive.
    Reliable,
    /// An event that may be dropped when the session is behind (presence, typing): losing it
    /// costs a stale indicator, never a message.
    Ephemeral,
    /// Only wakes the writer so it notices that the connection is closing; writes nothing.
    Wake,
}

impl Line {
    /// A reliable event with no label and no cursor.
    pub fn event(event: Event) -> Arc<Line> {
        Line::build(event, None, LineKind::Reliable, Box::new([]))
    }

    /// An event that may be shed when the session is behind.
    pub fn ephemeral(event: Event) -> Arc<Line> {
        Line::build(event, None, LineKind::Ephemeral, Box::new([]))
    }

    /// A reliable reply carrying the request's label.
    pub fn reply(event: Event, label: Option<Arc<str>>) -> Arc<Line> {
        Line::build(event, label, LineKind::Reliable, Box::new([]))
    }

    /// A reliable line that, once written, moves the session's cursor in `room` to `seq`
    /// (a MSG, a SYNC replay).
    pub fn progress(event: Event, label: Option<Arc<str>>, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::with_cursor(event, label, room, seq, false)
    }

    /// A reliable line that starts the session's cursor in `room` at `seq` (OK JOIN, JOINED).
    pub fn start(event: Event, label: Option<Arc<str>>, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::with_cursor(event, label, room, seq, true)
    }

    fn with_cursor(
        event: Event,
        label: Option<Arc<str>>,
        room: &Arc<str>,
        seq: u64,
        start: bool,
    ) -> Arc<Line> {
        let cursor = Cursor {
            room: Arc::clone(room),
            seq,
            start,
        };
        Line::build(event, label, LineKind::Reliable, Box::new([cursor]))
    }

    /// Writes nothing; only starts the session's cursors (at login: one line for all the
    /// user's rooms, however many, so it takes one slot of the queue).
    pub fn cursors(cursors: Vec<Cursor>) -> Arc<Line> {
        Line::build(
            Event::Nothing,
            None,
            LineKind::Reliable,
            cursors.into_boxed_slice(),
        )
    }

    pub(crate) fn wake() -> Arc<Line> {
        Line::build(Event::Nothing, None, LineKind::Wake, Box::new([]))
    }

    fn build(
        event: Event,
        label: Option<Arc<str>>,
        kind: LineKind,
        cursors: Box<[Cursor]>,
    ) -> Arc<Line> {
        Arc::new(Line {
            reply_bytes: event.reply_bytes(),
            event,
            label,
            kind,
            cursors,
            encoded: Default::default(),
        })
    }

    /// The line's text in `wire`'s syntax, encoded by the first caller and shared after.
    pub fn encoded(&self, wire: Wire) -> &str {
        self.encoded[wire as usize].get_or_init(|| wire.encode(&self.event, self.label.as_deref()))
    }
}
