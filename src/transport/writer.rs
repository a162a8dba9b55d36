//! The writer thread: one per connection, the only code that writes to its socket.
//!
//! It waits for the connection's queue (sleeping at once when idle, yielding briefly while
//! busy: see `doorbell`), then takes everything else already queued (up to [`MAX_BATCH`])
//! and writes it with one `write`, so a burst of fan-out costs one system call, not one per
//! line. When the queue is momentarily empty the batch is written at once, so a lone
//! message is never held back waiting for company.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::outbox::{CloseReason, Cursor, Line, Outbox};

/// Upper bound of one write. Large enough to carry a burst, small enough that a connection
/// that once received a burst keeps only this much buffer.
pub const MAX_BATCH: usize = 64 * 1024;

/// A writer that wrote this recently counts as busy and yields briefly before sleeping.
const BUSY_WINDOW: Duration = Duration::from_millis(1);

pub fn run(outbox: Arc<Outbox>, queue: Receiver<Arc<Line>>, socket: Arc<TcpStream>) {
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
        if !outbox.keeps_writing() {
            break outbox.closing().unwrap_or(CloseReason::Gone);
        }
        // Blocks while the peer's receive window is full, at most the socket's write timeout.
        if (&*socket).write_all(&batch).is_err() {
            outbox.close(CloseReason::Gone);
            break CloseReason::Gone;
        }
        cursors.commit();
        last_write = Instant::now();
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if let Some(reason) = outbox.closing() {
            if queue.is_empty() {
                break reason;
            }
        }
    };
    if let Some(farewell) = reason.farewell(&cursors.written()) {
        let _ = (&*socket).write_all(farewell.as_bytes());
    }
    let _ = socket.shutdown(Shutdown::Both);
}

/// Per room, the highest seq whose line has been written to the socket. Cursors of a batch
/// count only once the batch's write succeeded.
#[derive(Default)]
struct Cursors {
    written: HashMap<Arc<str>, u64>,
    pending: Vec<Cursor>,
}

impl Cursors {
    fn take(&mut self, line: &Line, batch: &mut Vec<u8>) {
        batch.extend_from_slice(line.text.as_bytes());
        self.pending.extend(line.cursors.iter().cloned());
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
