//! The writer thread: one per connection, which writes its connection's queue (through the
//! transport's [`FrameSink`]). The one other writer is a publisher writing a line through to
//! an idle connection (`delivery::write_through`); the session's write lock keeps the two
//! apart and in order.
//!
//! It waits for the connection's queue (sleeping at once when idle, yielding briefly while
//! busy: see `doorbell`), then takes everything else already queued (up to [`MAX_BATCH`])
//! and writes it with one `write`, so a burst of fan-out costs one system call, not one per
//! line. When the queue is momentarily empty the batch is written at once, so a lone
//! message is never held back waiting for company.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::{CloseReason, Cursor, Line, Outbox, QueueReader};
use crate::stats::Stats;
use crate::transport::FrameSink;

/// Upper bound of one write. Large enough to carry a burst, small enough that a connection
/// that once received a burst keeps only this much buffer.
pub const MAX_BATCH: usize = 64 * 1024;

/// A writer that wrote this recently counts as busy and yields briefly before sleeping.
const BUSY_WINDOW: Duration = Duration::from_millis(1);

pub use crate::delivery::encoder::{ChatdEncoder, Encoder};

/// `stall` is how long the transport may hold unsent bytes without sending any before the
/// client counts as not reading (`--write-timeout`).
pub fn run(
    outbox: Arc<Outbox>,
    mut queue: QueueReader,
    mut sink: impl FrameSink,
    stall: Duration,
    encoder: impl Encoder + 'static,
) {
    let mut batch: Vec<u8> = Vec::new();
    let mut pending: Vec<Cursor> = Vec::new();
    let mut drain = DrainWatch::new(stall);
    outbox.doorbell.register_writer();
    // Kept under the write lock from now on, where a publisher writing through finds it.
    outbox.lock_writing().encoder = Some(Box::new(encoder));
    let mut last_write = Instant::now() - BUSY_WINDOW;
    let (reason, mut written) = loop {
        // The outbox holds a sender for as long as this thread holds the outbox, so the queue
        // never disconnects; closing is signalled by `Outbox::close`, which queues a wake-up.
        let busy = last_write.elapsed() < BUSY_WINDOW;
        match outbox
            .doorbell
            .wait_until(|| !outbox.queue_is_empty(), busy, drain.next_check())
        {
            Ok(()) => {}
            Err(_) => {
                // Nothing to write, but bytes still unsent: is the client reading them?
                if drain.stalled(sink.unsent(), Instant::now())
                    && outbox.close(CloseReason::SlowConsumer)
                {
                    Stats::add(&outbox.stats().slow_consumers, 1);
                }
                continue;
            }
        }
        // Taken before anything leaves the queue and kept until it is in the socket: that is
        // what keeps a publisher's write-through behind every line queued before it.
        let mut written = outbox.lock_writing();
        // The lines waiting when the writer wakes: how far behind this connection is.
        outbox
            .stats()
            .queue_depth
            .observe(outbox.id, outbox.queued() as u64);
        batch.clear();
        pending.clear();
        // What a write-through left unsent goes first: it was delivered before anything queued.
        batch.append(&mut written.leftover);
        pending.append(&mut written.leftover_cursors);
        let encoder = written.encoder.as_deref_mut().expect("installed above");
        while batch.len() < MAX_BATCH {
            match outbox.next_queued(&mut queue) {
                Some(line) => {
                    take(&line, &mut batch, &mut pending, encoder);
                    outbox.taken(&line);
                }
                None => break,
            }
        }
        if outbox.is_closing() && !outbox.keeps_writing() {
            break (outbox.closing().unwrap_or(CloseReason::Gone), written);
        }
        // Called even with nothing queued: a wake-up may be for the transport's own frames (a
        // WebSocket's owed pong), and an empty `write_all` makes no system call.
        if sink.write_batch(&batch).is_err() {
            outbox.close(CloseReason::Gone);
            break (CloseReason::Gone, written);
        }
        if !batch.is_empty() {
            last_write = Instant::now();
            outbox.note_written();
            outbox
                .stats()
                .bytes_written
                .add(outbox.id, batch.len() as u64);
        }
        written.commit(pending.iter());
        // Asking the kernel costs a system call, so only after a large batch (a reply, a
        // burst) or while bytes were already waiting: small writes cannot pile up much.
        if batch.len() >= DRAIN_WATCH_BATCH || drain.watching() {
            drain.wrote(sink.unsent(), last_write);
        }
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if outbox.is_closing() && outbox.queue_is_empty() {
            break (outbox.closing().unwrap_or(CloseReason::Gone), written);
        }
    };
    // The write lock stays held to the end: once closing, nothing is written through, and
    // nothing may follow the farewell. Lines left unwritten (a slow consumer's queue, or a
    // backed-up one at shutdown, is dropped): their start cursors still hold, since nothing
    // before a start was owed to this connection.
    while let Some(line) = outbox.next_queued(&mut queue) {
        written.note_starts(&line);
    }
    match reason {
        CloseReason::SlowConsumer => log::warn!(conn = outbox.id; "slow consumer"),
        CloseReason::Flooding => log::warn!(conn = outbox.id; "flooding"),
        _ => {}
    }
    log::info!(conn = outbox.id, reason = reason.name(); "disconnect");
    let farewell = reason.farewell(&written.cursors()).and_then(|event| {
        let encoder = written.encoder.as_deref_mut()?;
        Some(encoder.farewell(&event, outbox.farewell_label(reason)))
    });
    sink.close(
        farewell.as_deref().map(str::as_bytes),
        reason == CloseReason::Quit,
    );
    drop(written);
}

/// Adds a line to the batch and its cursors to `pending` (they count once the batch is
/// written). This runs once per delivered line, so consecutive cursors of one room (a burst
/// of one room's messages) collapse into one entry by a pointer comparison, rather than
/// costing a hash-map update each.
fn take(line: &Line, batch: &mut Vec<u8>, pending: &mut Vec<Cursor>, encoder: &mut dyn Encoder) {
    encoder.encode(line, batch);
    for cursor in line.cursors.iter() {
        match pending.last_mut() {
            Some(last) if Arc::ptr_eq(&last.room, &cursor.room) => {
                last.seq = last.seq.max(cursor.seq);
            }
            _ => pending.push(cursor.clone()),
        }
    }
}

/// Watches a transport's unsent bytes while the writer has nothing more to write. A client
/// that stops reading lets the kernel's send buffer swallow megabytes, after which every
/// write has succeeded and the writer waits idle: no write ever times out. So while bytes are
/// unsent the writer looks again every [`DRAIN_CHECK`], and a connection whose unsent count
/// has not gone down for `stall` is a slow consumer.
struct DrainWatch {
    stall: Duration,
    /// Unsent bytes at the last look, and since when the count has not gone down.
    unsent: usize,
    since: Instant,
}

/// How often an idle writer with unsent bytes looks at them.
const DRAIN_CHECK: Duration = Duration::from_millis(500);

/// Batches from this size on make the writer look at the unsent bytes.
const DRAIN_WATCH_BATCH: usize = 16 * 1024;

impl DrainWatch {
    fn new(stall: Duration) -> DrainWatch {
        DrainWatch {
            stall,
            unsent: 0,
            since: Instant::now(),
        }
    }

    /// Whether bytes were unsent at the last look.
    fn watching(&self) -> bool {
        self.unsent > 0
    }

    /// When to look again, if bytes are waiting.
    fn next_check(&self) -> Option<Instant> {
        (self.unsent > 0).then(|| Instant::now() + DRAIN_CHECK.min(self.stall))
    }

    /// After a write: the count is what the transport holds now.
    fn wrote(&mut self, unsent: usize, now: Instant) {
        if unsent == 0 || unsent < self.unsent || self.unsent == 0 {
            self.since = now;
        }
        self.unsent = unsent;
    }

    /// After a look while idle: whether the client has taken nothing for `stall`.
    fn stalled(&mut self, unsent: usize, now: Instant) -> bool {
        if unsent == 0 || unsent < self.unsent {
            self.since = now;
        }
        self.unsent = unsent;
        unsent > 0 && now.duration_since(self.since) >= self.stall
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    /// A count that goes down is progress; one that stays put for the stall time is not.
    #[test]
    fn a_client_that_takes_nothing_is_stalled() {
        let start = Instant::now();
        let mut watch = DrainWatch::new(Duration::from_secs(10));
        watch.wrote(4000, start);
        assert!(watch.next_check().is_some());
        assert!(
            !watch.stalled(3000, start + Duration::from_secs(8)),
            "progress"
        );
        assert!(!watch.stalled(3000, start + Duration::from_secs(17)));
        assert!(watch.stalled(3000, start + Duration::from_secs(18)));
        assert!(
            !watch.stalled(0, start + Duration::from_secs(30)),
            "all sent"
        );
        assert!(watch.next_check().is_none());
    }
}
