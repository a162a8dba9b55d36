//! Write-through: the publishing thread writes a line straight into an idle session's socket,
//! so the common case of a quiet room costs one `send` per recipient and no thread wake-up.
//!
//! Waking a sleeping writer thread to write one line costs a futex wake, two context switches
//! and a scheduler decision; on a busy machine the woken thread may wait milliseconds for a
//! core. When the session's queue is empty and nobody is writing to its socket, the publisher
//! can instead hand the bytes to the kernel itself with a non-blocking `send`: the kernel
//! copies them into the socket's buffer, or says it cannot (`EAGAIN`), and never blocks.
//!
//! # Why order still holds
//!
//! Every session has one *write lock* ([`Outbox::lock_writing`]), which guards its socket's
//! byte stream and what was written ([`Written`]). The writer thread takes it before it takes
//! anything out of the queue and keeps it until that batch is in the socket. A publisher only
//! ever `try_lock`s it (so it never waits for a socket), and writes through only if, holding
//! the lock, it finds the queue empty and nothing left over from an earlier direct write.
//! Take two lines for one session, L1 delivered before L2 (same room: both under the room's
//! lock; or a reply after the command that caused it):
//! - L1 still queued when L2 comes: the queue is not empty, so L2 is queued behind it.
//! - L1 taken by the writer: the writer held the lock from taking L1 until L1 was written, so
//!   by the time L2's publisher holds the lock, L1 is in the socket.
//! - L1 written through, or left over: it is in the socket, or in `leftover`, which the
//!   writer writes before anything it takes from the queue, and which stops write-through.
//!
//! # Where the `send` happens
//!
//! Not under the room's lock: a room of a thousand members would hold every other poster of
//! the room for a thousand system calls. During fan-out the publisher only *claims* each idle
//! session (takes its write lock) and notes the line; the sends happen when the
//! [`WriteThroughBatch`] is dropped, after the room's lock is released. A session claimed by
//! a batch stays locked until then, so a later line of the same room for that session (from
//! another poster, who got the room's lock in between) finds the lock taken and queues: its
//! writer then waits for the lock, i.e. until this batch's bytes are in the socket. Lines for
//! the same session within one batch (the poster's `OK` and its own `MSG`) are sent together.
//!
//! Outside a batch (JOIN, LEAVE, typing, presence), delivery queues as before.
//!
//! # Only for idle sessions
//!
//! A session written to within the last [`BUSY`] is left to its writer thread even if its
//! queue is momentarily empty. In a busy stream (a big room posting flat out) the writer
//! batches many lines into one `write` and runs on the other core; writing each line through
//! would cost the poster one system call per line and recipient, serially (measured in one
//! `bench/compare.sh` run before this rule and the next: 1.86M -> 0.36M deliveries/s in a
//! 100-member room). A session of a quiet room last heard from the server long ago: for it
//! a wake-up is the whole cost, and that is what write-through saves.
//!
//! And only in fan-outs to at most [`BUDGET`] sessions ([`WriteThroughBatch::skip_for`]):
//! the poster's `send`s are serial, on one core, while woken writers run on every core and
//! batch. A 1,000-member room posting flat out fell from 0.34-0.63M to 0.14-0.28M
//! deliveries/s written through; a quiet room of ten is written through whole.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RawMutex};

use super::line::{Cursor, Line};
use super::outbox::Outbox;
use crate::stats::Stats;

/// A session written to more recently than this is busy: its lines go to its writer thread,
/// which batches them. The writer's own busy window (`transport::writer`) has the same length.
pub const BUSY: Duration = Duration::from_millis(1);

/// The largest fan-out that writes through (see [`WriteThroughBatch::skip_for`]), and so the
/// most sessions one batch claims.
pub const BUDGET: usize = 16;

/// [`BUSY`] in nanoseconds; tests set it to 0 to write through as often as they can.
static BUSY_NANOS: AtomicU64 = AtomicU64::new(BUSY.as_nanos() as u64);

/// Nanoseconds since the first call: the clock of `Outbox::last_write`.
pub fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What the write lock guards besides the socket's byte stream.
#[derive(Default)]
pub struct Written {
    /// Bytes of a direct write that the socket did not take (it was full): the writer sends
    /// them before anything queued, and no write-through happens while any remain.
    pub leftover: Vec<u8>,
    /// The cursors of the lines in `leftover`, which count once it is written.
    pub leftover_cursors: Vec<Cursor>,
    /// Per room, the highest seq whose line is in the socket (for `BYE slow-consumer`).
    cursors: HashMap<Arc<str>, u64>,
}

impl Written {
    /// The lines carrying these cursors are in the socket.
    pub fn commit<'a>(&mut self, cursors: impl IntoIterator<Item = &'a Cursor>) {
        for cursor in cursors {
            let seq = self.cursors.entry(Arc::clone(&cursor.room)).or_insert(0);
            *seq = (*seq).max(cursor.seq);
        }
    }

    /// A line that will never be written: only its start cursors count, and only for rooms
    /// with no progress written.
    pub fn note_starts(&mut self, line: &Line) {
        for cursor in line.cursors.iter().filter(|c| c.start) {
            self.cursors
                .entry(Arc::clone(&cursor.room))
                .or_insert(cursor.seq);
        }
    }

    /// `(room, seq)` pairs, sorted: what `BYE slow-consumer` names.
    pub fn cursors(&self) -> Vec<(Arc<str>, u64)> {
        let mut all: Vec<(Arc<str>, u64)> = self
            .cursors
            .iter()
            .map(|(room, seq)| (Arc::clone(room), *seq))
            .collect();
        all.sort();
        all
    }
}

pub type WriteGuard = parking_lot::lock_api::ArcMutexGuard<RawMutex, Written>;
pub type WriteLock = Arc<Mutex<Written>>;

/// One session claimed by a batch: its write lock, held, and the lines to send.
struct Claim {
    outbox: Arc<Outbox>,
    guard: WriteGuard,
    lines: Vec<Arc<Line>>,
}

thread_local! {
    /// Sessions claimed for write-through by this thread's open batch, if one is open.
    static CLAIMS: RefCell<Option<Vec<Claim>>> = const { RefCell::new(None) };
}

/// Opens a write-through batch on this thread; dropping it sends what was claimed. Fan-out
/// opens one before it takes a room's lock (see the module doc), and declares it before its
/// `WakeBatch`, so sleeping writers of the sessions that could not be written through are
/// woken first and run on another core while this thread sends.
pub struct WriteThroughBatch {
    outer: bool,
}

impl WriteThroughBatch {
    pub fn start() -> WriteThroughBatch {
        let outer = CLAIMS.with(|claims| {
            let mut claims = claims.borrow_mut();
            let outer = claims.is_none();
            if outer {
                *claims = Some(Vec::new());
            }
            outer
        });
        WriteThroughBatch { outer }
    }
}

impl WriteThroughBatch {
    /// Turns write-through off for this fan-out, before anything is claimed: a fan-out to
    /// more than [`BUDGET`] sessions queues every line (see "Only for idle sessions").
    pub fn skip_for(&self, sessions: usize) {
        if self.outer && sessions > BUDGET {
            CLAIMS.with(|claims| {
                let mut claims = claims.borrow_mut();
                if claims.as_ref().is_some_and(|claims| claims.is_empty()) {
                    *claims = None;
                }
            });
        }
    }
}

impl Drop for WriteThroughBatch {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let claims = CLAIMS.with(|claims| claims.borrow_mut().take());
        let mut bytes = Vec::new();
        for claim in claims.into_iter().flatten() {
            send(claim, &mut bytes);
        }
    }
}

/// Takes `line` for write-through to `outbox` if this thread has a batch open and the session
/// is idle; false means: queue it as usual.
pub(super) fn claim(outbox: &Arc<Outbox>, line: &Arc<Line>) -> bool {
    CLAIMS.with(|claims| {
        let mut claims = claims.borrow_mut();
        let Some(claims) = claims.as_mut() else {
            return false;
        };
        // Already claimed by this batch: send it with the lines before it. (Only the holder
        // of the write lock sets the slot, so a slot naming this outbox in our own batch is
        // ours; a stale or foreign slot names another outbox or none, and the line queues.)
        let slot = outbox.write_through_slot.load(Relaxed);
        if slot != 0 {
            return match claims.get_mut(slot - 1) {
                Some(held) if Arc::ptr_eq(&held.outbox, outbox) => {
                    held.lines.push(Arc::clone(line));
                    true
                }
                _ => false,
            };
        }
        if claims.len() >= BUDGET {
            return false;
        }
        let idle_for = clock().saturating_sub(outbox.last_write.load(Relaxed));
        if idle_for < BUSY_NANOS.load(Relaxed) {
            return false; // a busy stream: its writer batches better (see "Only for idle")
        }
        let Some(guard) = outbox.try_lock_writing() else {
            return false; // the writer is writing, or another batch holds it
        };
        // Checked holding the lock: see "Why order still holds".
        if !guard.leftover.is_empty() || !outbox.queue_is_empty() || outbox.is_closing() {
            return false;
        }
        outbox.write_through_slot.store(claims.len() + 1, Relaxed);
        claims.push(Claim {
            outbox: Arc::clone(outbox),
            guard,
            lines: vec![Arc::clone(line)],
        });
        true
    })
}

/// Sends one claimed session's lines with one non-blocking write, then releases its lock.
/// What the socket does not take is left for the writer, which is woken.
fn send(mut claim: Claim, bytes: &mut Vec<u8>) {
    let outbox = &claim.outbox;
    let wire = outbox
        .write_through_wire()
        .expect("claimed only with a wire");
    outbox.write_through_slot.store(0, Relaxed);
    let whole: &[u8] = if let [line] = &claim.lines[..] {
        line.encoded(wire).as_bytes()
    } else {
        bytes.clear();
        for line in &claim.lines {
            bytes.extend_from_slice(line.encoded(wire).as_bytes());
        }
        bytes
    };
    let sent = match outbox.peer().try_write(whole) {
        Ok(sent) => sent,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        // WouldBlock (full), or broken: the writer's next write finds out which and ends the
        // connection if it must.
        Err(_) => 0,
    };
    outbox.last_write.store(clock(), Relaxed);
    outbox.stats().bytes_written.add(outbox.id, sent as u64);
    let written = &mut *claim.guard;
    if sent == whole.len() {
        written.commit(claim.lines.iter().flat_map(|line| line.cursors.iter()));
        Stats::add(&outbox.stats().written_through, claim.lines.len() as u64);
        return;
    }
    // The socket took part (or none): the rest is the writer's, before anything queued.
    let mut start = 0;
    for line in &claim.lines {
        let end = start + line.encoded(wire).len();
        if end <= sent {
            written.commit(line.cursors.iter());
        } else {
            written
                .leftover_cursors
                .extend(line.cursors.iter().cloned());
        }
        start = end;
    }
    written.leftover.extend_from_slice(&whole[sent..]);
    drop(claim.guard);
    Stats::add(&outbox.stats().write_through_leftovers, 1);
    outbox.wake_writer();
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::WriteThroughBatch;
    use crate::delivery::peer::Peer;
    use crate::delivery::{CloseReason, Line, Outbox};
    use crate::event::Event;
    use crate::protocol::Wire;
    use crate::stats::Stats;
    use crate::transport::{writer, FrameSink};

    /// A socket stand-in: one byte stream that both the writer thread and write-throughs
    /// append to, whose non-blocking writes take all, part or none of what they are given.
    #[derive(Default)]
    struct Stream {
        bytes: Mutex<Vec<u8>>,
        calls: AtomicU64,
    }

    struct TestPeer(Arc<Stream>);

    impl Peer for TestPeer {
        fn shutdown_read(&self) {}
        fn abort(&self) {}
        fn peer_ip(&self) -> Option<std::net::IpAddr> {
            None
        }
        fn write_through(&self) -> Option<Wire> {
            Some(Wire::Chatd)
        }
        fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
            // A fixed pattern of full, partial and refused writes.
            let take = match self.0.calls.fetch_add(1, Relaxed) % 5 {
                0 => return Err(io::ErrorKind::WouldBlock.into()),
                1 => bytes.len() / 2,
                _ => bytes.len(),
            };
            self.0.bytes.lock().extend_from_slice(&bytes[..take]);
            Ok(take)
        }
    }

    struct TestSink(Arc<Stream>);

    impl FrameSink for TestSink {
        fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
            self.0.bytes.lock().extend_from_slice(batch);
            Ok(())
        }
        fn close(self, farewell: Option<&[u8]>, _client_done: bool) {
            if let Some(farewell) = farewell {
                self.0.bytes.lock().extend_from_slice(farewell);
            }
        }
    }

    /// Many publishers fan out to one session from several rooms at once, each under its
    /// room's lock as `Room::publish` does, while the socket sometimes takes only part of a
    /// write: every line arrives whole, exactly once, and each room's lines in order.
    #[test]
    fn concurrent_publishers_keep_each_rooms_order() {
        // Every session idle enough to write through, so the fast path races the writer.
        super::BUSY_NANOS.store(0, Relaxed);
        const ROOMS: usize = 4;
        const PUBLISHERS: usize = 4;
        const PER_PUBLISHER: u64 = 3_000;
        let stream = Arc::new(Stream::default());
        let (queue, queued) = crate::delivery::Queue::new(1 << 16);
        let outbox = Arc::new(Outbox::new(
            1,
            queue,
            usize::MAX,
            Arc::new(TestPeer(Arc::clone(&stream))),
            Arc::new(Stats::default()),
        ));
        let writer = {
            let (outbox, sink) = (Arc::clone(&outbox), TestSink(Arc::clone(&stream)));
            thread::spawn(move || {
                writer::run(
                    outbox,
                    queued,
                    sink,
                    Duration::from_secs(60),
                    writer::ChatdEncoder,
                )
            })
        };
        let rooms: Arc<Vec<Mutex<u64>>> = Arc::new((0..ROOMS).map(|_| Mutex::new(0)).collect());
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (outbox, rooms) = (Arc::clone(&outbox), Arc::clone(&rooms));
                thread::spawn(move || {
                    for n in 0..PER_PUBLISHER {
                        let room = (p + n as usize) % ROOMS;
                        let _batch = WriteThroughBatch::start();
                        let mut seq = rooms[room].lock();
                        *seq += 1;
                        let line = Line::event(Event::Read {
                            room: Arc::from(format!("r{room}")),
                            user: Arc::from("u"),
                            seq: *seq,
                        });
                        assert!(outbox.deliver_through(&line));
                        // Sometimes the poster's own second line in the same batch.
                        if n % 7 == 0 {
                            *seq += 1;
                            let line = Line::event(Event::Read {
                                room: Arc::from(format!("r{room}")),
                                user: Arc::from("u"),
                                seq: *seq,
                            });
                            assert!(outbox.deliver_through(&line));
                        }
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        outbox.close(CloseReason::Quit);
        writer.join().unwrap();

        let total: u64 = rooms.iter().map(|seq| *seq.lock()).sum();
        let bytes = stream.bytes.lock();
        let text = std::str::from_utf8(&bytes).expect("whole lines only");
        let mut last = [0u64; ROOMS];
        let mut lines = 0;
        for line in text.lines() {
            if line.starts_with("BYE ") {
                continue;
            }
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(
                matches!(fields[..], ["READ", _, "u", _]),
                "a line cut or mixed up: {line:?}"
            );
            let room: usize = fields[1][1..].parse().unwrap();
            let seq: u64 = fields[3].parse().unwrap();
            assert_eq!(seq, last[room] + 1, "room {room} out of order or lost");
            last[room] = seq;
            lines += 1;
        }
        assert_eq!(lines, total);
        assert!(text.ends_with("BYE quit :goodbye\n"), "farewell last");
        let stats = outbox.stats();
        // The first delivery always finds the session idle and the socket refuses the first
        // write, so the slow path runs at least once; how often a write-through completes
        // whole depends on scheduling.
        let through = Stats::get(&stats.written_through);
        let left = Stats::get(&stats.write_through_leftovers);
        assert!(left > 0, "a write-through left bytes to the writer");
        eprintln!("written through whole: {through} lines; left to the writer: {left} times");
    }
}
