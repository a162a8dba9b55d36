//! The writer thread: one per connection, the only code that writes to its socket.
//!
//! It waits for the connection's queue (sleeping at once when idle, yielding briefly while
//! busy: see `doorbell`), then takes everything else already queued (up to [`MAX_BATCH`])
//! and writes it with one `write`, so a burst of fan-out costs one system call, not one per
//! line. When the queue is momentarily empty the batch is written at once, so a lone
//! message is never held back waiting for company.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::protocol::Wire;

use crate::delivery::{CloseReason, Cursor, Line, Outbox};

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
        if outbox.is_closing() && !outbox.keeps_writing() {
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
        if outbox.is_closing() && queue.is_empty() {
            break outbox.closing().unwrap_or(CloseReason::Gone);
        }
    };
    // Lines left unwritten (a slow consumer's queue is dropped): their start cursors still
    // hold, since nothing before a start was owed to this connection.
    while let Ok(line) = queue.try_recv() {
        cursors.note_starts(&line);
    }
    if let Some(farewell) = reason.farewell(&cursors.written()) {
        let _ = (&*socket).write_all(Wire::Chatd.encode(&farewell, None).as_bytes());
        linger(&socket, reason);
    }
    let _ = socket.shutdown(Shutdown::Both);
}

/// How long a closing connection waits for the client to read its farewell and hang up.
const LINGER: Duration = Duration::from_secs(1);
/// How often the lingering writer looks again.
const LINGER_STEP: Duration = Duration::from_millis(10);

/// A lingering close. Closing a socket while input sits unread in its receive queue makes
/// the kernel answer with a reset, and a reset can destroy the farewell before the client
/// reads it (a client that was still sending commands when it was cut off, say). So for at
/// most [`LINGER`] the writer discards whatever input arrives, until the client hangs up.
/// (`Outbox::close` shut the read side, so these reads never block: they return what is
/// queued, then 0.)
///
/// Only after QUIT does it half-close first, so the client sees EOF at once: the client asked
/// to leave and sends nothing more. Otherwise the client may still be sending, and data that
/// arrives after our FIN on a socket whose read side is shut is answered with a reset
/// (RFC 1122), so the FIN waits for the final close.
fn linger(socket: &TcpStream, reason: CloseReason) {
    if reason == CloseReason::Quit {
        let _ = socket.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    loop {
        while matches!((&*socket).read(&mut scratch), Ok(n) if n > 0) {}
        if peer_hung_up(socket) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(LINGER_STEP);
    }
}

/// Whether the client has closed its side: the connection's TCP state says its FIN arrived.
fn peer_hung_up(socket: &TcpStream) -> bool {
    // SAFETY: getsockopt(TCP_INFO) writes at most `len` bytes into `info`, a plain C struct.
    let state = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        let info_ptr = (&mut info as *mut libc::tcp_info).cast::<libc::c_void>();
        if libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info_ptr, &mut len) != 0 {
            return true; // cannot tell: do not hold the connection open
        }
        info.tcpi_state
    };
    // ESTABLISHED (or, after our FIN, FIN_WAIT1/2) until the client's FIN arrives; then
    // CLOSE_WAIT (or CLOSING/TIME_WAIT); CLOSE if it reset.
    !matches!(state, TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2)
}

/// TCP states from the kernel's `tcp_states.h` (the numbering of `tcp_info.tcpi_state`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;

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
