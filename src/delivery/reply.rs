//! The reply context of one command: which session asked, and under which label.
//!
//! A command's handler gets a [`Reply`] (ergo's `ResponseBuffer` idea) instead of threading a
//! `label` through every domain signature. Replies that need no ordering with fan-out are
//! queued at once with [`Reply::send`]. Replies that must be ordered with a room's events
//! (`OK JOIN`, `OK SEND`, a SYNC replay, ...) are *built* here ([`Reply::line`]) and queued by
//! `Room` under its lock, so the room decides when, and this context decides what.

use std::sync::Arc;
use std::time::Duration;

use super::{Line, Outbox};
use crate::event::Event;
use crate::protocol::ClientError;

pub struct Reply {
    outbox: Arc<Outbox>,
    /// Echoed as `@<label> ` in front of every line of the reply, so scripts can match them.
    label: Option<Arc<str>>,
    /// How long a direct reply may wait for room in the session's own queue: a client that
    /// does not read its replies is a slow consumer too.
    patience: Duration,
}

impl Reply {
    pub fn new(outbox: Arc<Outbox>, label: Option<&str>, patience: Duration) -> Reply {
        Reply {
            outbox,
            label: label.map(Arc::from),
            patience,
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The reply as a line, for a room to queue under its lock.
    pub fn line(&self, event: Event) -> Arc<Line> {
        Line::reply(event, self.label.clone())
    }

    /// A reply that starts the session's cursor in `room` at `seq` (`OK JOIN`).
    pub fn start(&self, event: Event, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::start(event, self.label.clone(), room, seq)
    }

    /// A reply that, once written, moves the session's cursor in `room` to `seq` (a replay).
    pub fn progress(&self, event: Event, room: &Arc<str>, seq: u64) -> Arc<Line> {
        Line::progress(event, self.label.clone(), room, seq)
    }

    /// Queues the reply now. Called from the session's own reader thread, holding no lock.
    pub fn send(&self, event: Event) {
        self.outbox.reply(self.line(event), self.patience);
    }

    /// Ends the connection for QUIT; its `BYE quit` carries this reply's label.
    pub fn quit(&self) {
        self.outbox.quit(self.label.as_deref());
    }

    pub fn error(&self, error: ClientError) {
        self.send(Event::Error(error));
    }
}
