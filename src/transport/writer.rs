//! The writer thread: one per connection, the only code that writes to its connection (through
//! the transport's [`FrameSink`]).
//!
//! It waits for the connection's queue (sleeping at once when idle, yielding briefly while
//! busy: see `doorbell`), then takes everything else already queued (up to [`MAX_BATCH`])
//! and writes it with one `write`, so a burst of fan-out costs one system call, not one per
//! line. When the queue is momentarily empty the batch is written at once, so a lone
//! message is never held back waiting for company.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::protocol::Wire;

use crate::delivery::{CloseReason, Cursor, Line, Outbox};
use crate::transport::FrameSink;

/// Upper bound of one write. Large enough to carry a burst, small enough that a connection
/// that once received a burst keeps only this much buffer.
pub const MAX_BATCH: usize = 64 * 1024;

/// A writer that wrote this recently counts as busy and yields briefly before sleeping.
const BUSY_WINDOW: Duration = Duration::from_millis(1);

pub fn run(outbox: Arc<Outbox>, queue: Receiver<Arc<Line>>, mut sink: impl FrameSink) {
    let mut batch: Vec<u8> = Vec::new();
    let mut cursors = Cursors::default();
    outbox.doorbell.register_writer();
    let mut last_write = Instant::now() - BUSY_WINDOW;
    let reason = loop {
        // The outbox holds a sender for as long as this thread holds the outbox, so this
        // only returns lines; closing is signalled by `Outbox::close`, which queues a wake-up.
        let busy = last_write.elapsed() < BUSY_WINDOW;
        let Ok(first) = outbox.doorbell.wait(&queue, busy) else {
            break outbox.closing().unwrap_or(CloseReason::Gone);
        };
        batch.clear();
        cursors.pending.clear();
        cursors.take(&first, &mut batch);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(line) => cursors.take(&line, &mut batch),
                Err(_) => break,
            }
        }
        if outbox.is_closing() && !outbox.keeps_writing() {
            break outbox.closing().unwrap_or(CloseReason::Gone);
        }
        if sink.write_batch(&batch).is_err() {
            outbox.close(CloseReason::Gone);
            break CloseReason::Gone;
        }
        cursors.commit();
        last_write = Instant::now();
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if outbox.is_closing() && queue.is_empty() {
            break outbox.closing().unwrap_or(CloseReason::Gone);
        }
    };
    // Lines left unwritten (a slow consumer's queue, or a backed-up one at shutdown, is
    // dropped): their start cursors still hold, since nothing before a start was owed to
    // this connection.
    while let Ok(line) = queue.try_recv() {
        cursors.note_starts(&line);
    }
    let farewell = reason
        .farewell(&cursors.written())
        .map(|event| Wire::Chatd.encode(&event, None));
    sink.close(
        farewell.as_deref().map(str::as_bytes),
        reason == CloseReason::Quit,
    );
}

/// Per room, the highest seq whose line has been written to the socket. Cursors of a batch
/// count only once the batch's write succeeded.
#[derive(Default)]
struct Cursors {
    written: HashMap<Arc<str>, u64>,
    pending: Vec<Cursor>,
}

impl Cursors {
    /// Adds a line to the batch. This runs once per delivered line, so consecutive cursors of
    /// one room (a burst of one room's messages) collapse into one entry by a pointer
    /// comparison, rather than costing a hash-map update each.
    fn take(&mut self, line: &Line, batch: &mut Vec<u8>) {
        batch.extend_from_slice(line.encoded(Wire::Chatd).as_bytes());
        for cursor in line.cursors.iter() {
            match self.pending.last_mut() {
                Some(last) if Arc::ptr_eq(&last.room, &cursor.room) => {
                    last.seq = last.seq.max(cursor.seq);
                }
                _ => self.pending.push(cursor.clone()),
            }
        }
    }

    /// A line that will never be written: only its start cursors count, and only for rooms
    /// with no progress written.
    fn note_starts(&mut self, line: &Line) {
        for cursor in line.cursors.iter().filter(|c| c.start) {
            self.written
                .entry(Arc::clone(&cursor.room))
                .or_insert(cursor.seq);
        }
    }

    fn commit(&mut self) {
        for cursor in self.pending.drain(..) {
            let seq = self.written.entry(cursor.room).or_insert(0);
            *seq = (*seq).max(cursor.seq);
        }
    }

    fn written(&self) -> Vec<(Arc<str>, u64)> {
        let mut all: Vec<(Arc<str>, u64)> = self
            .written
            .iter()
            .map(|(room, seq)| (Arc::clone(room), *seq))
            .collect();
        all.sort();
        all
    }
}
