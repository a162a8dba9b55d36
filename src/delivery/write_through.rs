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
//! A session whose writer thread wrote within the last [`BUSY`] is left to its writer even if
//! its queue is momentarily empty, and so is a session that already had [`BURST`] fan-outs
//! written through within one [`BUSY`]. In a busy stream (a room posting flat out) the
//! writer batches many lines into one `write` and runs on the other core; writing each line
//! through would cost the poster one system call per line and recipient, serially (measured
//! in one `bench/compare.sh` run before this rule and the next: 1.86M -> 0.36M deliveries/s
//! in a 100-member room; with no limit at all, a 10-member room posting flat out lost 57% of
//! its throughput). A session of a quiet room last heard from the server long ago: for it a
//! wake-up is the whole cost, and that is what write-through saves.
//!
//! Why a count and not "nothing written through for [`BUSY`]" (the first rule): people in a
//! room answer each other, so a quiet room's lines come in small bursts, several within a
//! millisecond; the first rule sent all but the first line of each burst to a woken writer.
//! Counting lets a burst of up to [`BURST`] through: 14% less server CPU per delivery in
//! 500 rooms of 10 whose members post within a millisecond or two of each other, the same
//! throughput for a small room posting flat out (`bench/ab.sh`, BENCHMARKS.md). The count
//! lives in [`Written`], under the write lock the poster holds when it checks it.
//!
//! # Which fan-outs write through
//!
//! A fan-out in a room that fanned out within the last [`QUIET`] writes through only if the
//! room has at most [`BUDGET`] sessions ([`WriteThroughBatch::limit_for`]): the poster's
//! `send`s are serial, while woken writers run on every core and batch. A 1,000-member room
//! posting flat out fell from 0.34-0.63M to 0.14-0.28M deliveries/s written through (and,
//! claiming up to 16 of its sessions per fan-out, a 100-member room fell to a third); a room
//! of ten is written through whole.
//!
//! A *quiet* room (nothing fanned out for [`QUIET`] or longer) writes through whatever its
//! size: there is no stream for the writers to batch, each would wake to write one line, and
//! waking a thousand sleeping writers is what made one message to 2,000 idle members reach the
//! last of them after 44 ms (BENCHMARKS.md, issue 12). Written through, that fan-out costs
//! 7.5-11 us of server CPU per delivery instead of 35-45, and on a nearly idle machine the
//! last delivery's p99 fell from 41-54 ms to 20-25 ms (`bench/ab.sh`). A room posting flat out never looks
//! quiet (a gap of [`QUIET`] is long next to its posts), so it keeps the writers' path.
//!
//! # Not split over two threads
//!
//! Sending half of a big quiet fan-out from a helper thread on the other core was tried
//! (BENCHMARKS.md, issue 12): it lost. On two cores the clients' side of loopback needs the
//! other core too, and one message to 2,000 idle members reached them later split (p50
//! 13.5-16.2 ms) than sent by the poster alone (9.6-12.3 ms), for the same CPU.
//!
//! # Every protocol that writes its lines as they are
//!
//! The bytes written through are the connection's own encoding: its [`Encoder`] lives under
//! the write lock ([`Written::encoder`]), installed by the writer thread when it starts, so
//! whoever holds the lock encodes. For the line protocol that is the shared text of each line
//! (`Line::encoded`); for IRC it is the connection's `IrcEncoder`, whose per-connection state
//! (the nick, its capabilities, its own post to leave out without `echo-message`) then sees
//! every line in the order it reaches the socket, whichever thread writes it. A WebSocket
//! frames its lines, and its peer does not write through.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RawMutex};

use super::encoder::Encoder;
use super::line::{Cursor, Line};
use super::outbox::Outbox;
use crate::stats::Stats;

/// A session whose writer wrote more recently than this is busy: its lines go to its writer
/// thread, which batches them. Also the window in which [`BURST`] write-throughs are allowed.
/// The writer's own busy window (`transport::writer`) has the same length.
pub const BUSY: Duration = Duration::from_millis(1);

/// The largest fan-out that writes through (see [`WriteThroughBatch::skip_for`]), and so the
/// most sessions one batch claims.
pub const BUDGET: usize = 16;

/// How many fan-outs may write through to one session within [`BUSY`]; past that its lines go
/// to its writer thread, which batches them.
pub const BURST: u32 = 8;

/// A room that fanned out nothing for this long is quiet: its fan-outs write through
/// whatever their size (see "Which fan-outs"). Ten times [`BUSY`], so that a room posting
/// flat out does not look quiet whenever a busy machine leaves its posters waiting for a core
/// for a millisecond or two.
pub const QUIET: Duration = Duration::from_millis(10);

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
    /// The connection's encoder, installed by its writer thread when it starts (no
    /// write-through before then): whoever writes encodes, so per-connection state (IRC's)
    /// sees the lines in the order they reach the socket.
    pub encoder: Option<Box<dyn Encoder>>,
    /// Bytes of a direct write that the socket did not take (it was full): the writer sends
    /// them before anything queued, and no write-through happens while any remain.
    pub leftover: Vec<u8>,
    /// The cursors of the lines in `leftover`, which count once it is written.
    pub leftover_cursors: Vec<Cursor>,
    /// Per room, the highest seq whose line is in the socket (for `BYE slow-consumer`).
    cursors: HashMap<Arc<str>, u64>,
    /// When the current burst of write-throughs to this session began ([`clock`]), and how
    /// many fan-outs it had (see "Only for idle sessions").
    burst_start: u64,
    burst_claims: u32,
}

impl Written {
    /// The lines carrying these cursors are in the socket.
    pub fn commit<'a>(&mut self, cursors: impl IntoIterator<Item = &'a Cursor>) {
        for cursor in cursors {
            let seq = self.cursors.entry(Arc::clone(&cursor.room)).or_insert(0);
            *seq = (*seq).max(cursor.seq);
        }
    }

    /// Counts one more fan-out written through in the current window of `window` ns (a new
    /// window starts at `now` once the last one is over); false once [`BURST`] were.
    fn admit_to_burst(&mut self, now: u64, window: u64) -> bool {
        if now.saturating_sub(self.burst_start) >= window {
            self.burst_start = now;
            self.burst_claims = 0;
        }
        if self.burst_claims >= BURST {
            return false;
        }
        self.burst_claims += 1;
        true
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
    sent: Sent,
}

/// How far a claim's `send` got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Not sent yet.
    No,
    /// All of it is in the socket.
    Whole,
    /// The socket took part or none: the rest is in `leftover`, and the writer must be woken
    /// (after the write lock is released, so it does not wake only to wait for it).
    Partly,
}

/// This thread's open batch: what it claimed, and how many sessions it may claim.
struct Open {
    claims: Vec<Claim>,
    limit: usize,
}

thread_local! {
    /// Sessions claimed for write-through by this thread's open batch, if one is open.
    static OPEN: RefCell<Option<Open>> = const { RefCell::new(None) };
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
        let outer = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let outer = open.is_none();
            if outer {
                *open = Some(Open {
                    claims: Vec::new(),
                    limit: BUDGET,
                });
            }
            outer
        });
        WriteThroughBatch { outer }
    }

    /// Sets how many sessions this fan-out may write through, before anything is claimed:
    /// every one if the room is quiet (nothing fanned out since `last_fanout`, a
    /// [`clock`] reading, for [`QUIET`] or longer); otherwise [`BUDGET`] in a room of at most
    /// that many sessions, none in a bigger one (see "Which fan-outs").
    pub fn limit_for(&self, sessions: usize, last_fanout: u64) {
        if !self.outer {
            return;
        }
        let quiet = clock().saturating_sub(last_fanout) >= QUIET.as_nanos() as u64;
        OPEN.with(|open| {
            if let Some(open) = open.borrow_mut().as_mut() {
                open.limit = match (quiet, sessions > BUDGET) {
                    (true, _) => sessions.max(BUDGET),
                    // A big room posting flat out: its writers batch (see "Which fan-outs").
                    (false, true) => 0,
                    (false, false) => BUDGET,
                };
            }
        });
    }
}

impl Drop for WriteThroughBatch {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let Some(open) = OPEN.with(|open| open.borrow_mut().take()) else {
            return;
        };
        let mut claims = open.claims;
        send_all(&mut claims);
        // Only now, every send done, are the write locks released: see "Why order holds".
        for claim in claims {
            drop(claim.guard);
            if claim.sent == Sent::Partly {
                claim.outbox.wake_writer();
            }
        }
    }
}

/// Sends every claim, one after another, on this thread.
fn send_all(claims: &mut [Claim]) {
    let mut bytes = Vec::new();
    for claim in claims.iter_mut() {
        send(claim, &mut bytes);
    }
}

/// Takes `line` for write-through to `outbox` if this thread has a batch open and the session
/// is idle; false means: queue it as usual.
pub(super) fn claim(outbox: &Arc<Outbox>, line: &Arc<Line>) -> bool {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let Some(Open { claims, limit }) = open.as_mut() else {
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
        if claims.len() >= *limit {
            return false;
        }
        // One clock reading and one window for both rules below: this runs per recipient.
        let (now, busy) = (clock(), BUSY_NANOS.load(Relaxed));
        if now.saturating_sub(outbox.last_write.load(Relaxed)) < busy {
            return false; // a busy stream: its writer batches better (see "Only for idle")
        }
        let Some(mut guard) = outbox.try_lock_writing() else {
            return false; // the writer is writing, or another batch holds it
        };
        // Checked holding the lock: see "Why order still holds".
        if guard.encoder.is_none()
            || !guard.leftover.is_empty()
            || !outbox.queue_is_empty()
            || outbox.is_closing()
        {
            return false;
        }
        if !guard.admit_to_burst(now, busy) {
            return false;
        }
        outbox.write_through_slot.store(claims.len() + 1, Relaxed);
        claims.push(Claim {
            outbox: Arc::clone(outbox),
            guard,
            lines: vec![Arc::clone(line)],
            sent: Sent::No,
        });
        true
    })
}

/// Encodes one claimed session's lines with its encoder and sends them with one
/// non-blocking write. What the socket does not take is left for the writer.
fn send(claim: &mut Claim, bytes: &mut Vec<u8>) {
    let outbox = &claim.outbox;
    outbox.write_through_slot.store(0, Relaxed);
    let written = &mut *claim.guard;
    let encoder = written
        .encoder
        .as_deref_mut()
        .expect("claimed only with an encoder");
    bytes.clear();
    let mut ends = Vec::with_capacity(claim.lines.len());
    for line in &claim.lines {
        encoder.encode(line, bytes);
        ends.push(bytes.len());
    }
    // Nothing to say on this protocol (IRC's own post without `echo-message`): no system
    // call. An error (WouldBlock: full; interrupted; broken) takes nothing: the writer's
    // next write finds out which and ends the connection if it must.
    let sent = if bytes.is_empty() {
        0
    } else {
        outbox.peer().try_write(bytes).unwrap_or_default()
    };
    outbox.stats().bytes_written.add(outbox.id, sent as u64);
    if sent == bytes.len() {
        written.commit(claim.lines.iter().flat_map(|line| line.cursors.iter()));
        Stats::add(&outbox.stats().written_through, claim.lines.len() as u64);
        claim.sent = Sent::Whole;
        return;
    }
    // The socket took part (or none): the rest is the writer's, before anything queued.
    for (line, end) in claim.lines.iter().zip(ends) {
        if end <= sent {
            written.commit(line.cursors.iter());
        } else {
            written
                .leftover_cursors
                .extend(line.cursors.iter().cloned());
        }
    }
    written.leftover.extend_from_slice(&bytes[sent..]);
    Stats::add(&outbox.stats().write_through_leftovers, 1);
    claim.sent = Sent::Partly;
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use chrono::Utc;
    use parking_lot::Mutex;
    use uuid::Uuid;

    use super::{Encoder, WriteThroughBatch, Written, BURST};
    use crate::client_ids::Published;
    use crate::delivery::peer::Peer;
    use crate::delivery::{CloseReason, Line, Outbox};
    use crate::event::Event;
    use crate::irc::encode::IrcEncoder;
    use crate::irc::Link;
    use crate::message::Message;
    use crate::stats::Stats;
    use crate::transport::{writer, FrameSink};

    /// A session takes [`BURST`] write-throughs in one window, then none until the window is
    /// over, then [`BURST`] again.
    #[test]
    fn a_burst_is_bounded_per_window() {
        let mut written = Written::default();
        let window = 1_000_000;
        let start = 5_000_000;
        for i in 0..BURST {
            assert!(
                written.admit_to_burst(start + u64::from(i), window),
                "claim {i}"
            );
        }
        assert!(!written.admit_to_burst(start + 999_999, window));
        assert!(
            written.admit_to_burst(start + window, window),
            "a new window"
        );
        for _ in 1..BURST {
            assert!(written.admit_to_burst(start + window + 1, window));
        }
        assert!(!written.admit_to_burst(start + window + 2, window));
    }

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
        fn write_through(&self) -> bool {
            true
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

    /// One room's lines as its publishers made them: the last seq, and the seqs that the
    /// session's encoder must leave out (IRC's own posts without `echo-message`).
    #[derive(Default)]
    struct RoomLog {
        seq: u64,
        silent: Vec<u64>,
    }

    /// The lines for one delivery of `seq` in room `room`; `own` makes it the session's own
    /// post where the protocol has such a thing.
    type MakeLines = fn(room: usize, seq: u64, own: bool) -> Vec<Arc<Line>>;

    const ROOMS: usize = 4;

    /// Many publishers fan out to one session from several rooms at once, each under its
    /// room's lock as `Room::publish` does, while the socket sometimes takes only part of a
    /// write, and the session's writer thread writes what could not be written through.
    /// Returns what reached the socket and each room's log.
    fn race(encoder: impl Encoder + 'static, make: MakeLines) -> (String, Vec<RoomLog>) {
        // Every session idle enough to write through, so the fast path races the writer.
        super::BUSY_NANOS.store(0, Relaxed);
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
                writer::run(outbox, queued, sink, Duration::from_secs(60), encoder)
            })
        };
        // Until the writer installs its encoder nothing is written through; wait for it, so
        // the race starts at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.lock_writing().encoder.is_none() {
            assert!(Instant::now() < deadline, "the writer never started");
            thread::yield_now();
        }
        let rooms: Arc<Vec<Mutex<RoomLog>>> =
            Arc::new((0..ROOMS).map(|_| Mutex::default()).collect());
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (outbox, rooms) = (Arc::clone(&outbox), Arc::clone(&rooms));
                thread::spawn(move || {
                    for n in 0..PER_PUBLISHER {
                        let room = (p + n as usize) % ROOMS;
                        let _batch = WriteThroughBatch::start();
                        let mut log = rooms[room].lock();
                        log.seq += 1;
                        // A session has one post of its own in flight at a time (its
                        // reader posts one command after another), so only one publisher
                        // plays the session itself.
                        let own = p == 0 && n % 5 == 0;
                        if own {
                            let seq = log.seq;
                            log.silent.push(seq);
                        }
                        for line in make(room, log.seq, own) {
                            assert!(outbox.deliver_through(&line));
                        }
                        // Sometimes a second line in the same batch.
                        if n % 7 == 0 {
                            log.seq += 1;
                            for line in make(room, log.seq, false) {
                                assert!(outbox.deliver_through(&line));
                            }
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

        let stats = outbox.stats();
        // The first delivery always finds the session idle and the socket refuses the first
        // write, so the slow path runs at least once; how often a write-through completes
        // whole depends on scheduling.
        let through = Stats::get(&stats.written_through);
        let left = Stats::get(&stats.write_through_leftovers);
        assert!(left > 0, "a write-through left bytes to the writer");
        eprintln!("written through whole: {through} lines; left to the writer: {left} times");
        let bytes = stream.bytes.lock();
        let text = String::from_utf8(bytes.clone()).expect("whole lines only");
        let rooms = Arc::try_unwrap(rooms).ok().expect("publishers done");
        (text, rooms.into_iter().map(Mutex::into_inner).collect())
    }

    /// Checks that `(room, seq)` pairs arrived whole, once each, in each room's order, and
    /// all of them but the silent ones.
    fn check_order(arrived: impl Iterator<Item = (usize, u64)>, rooms: &[RoomLog], silent: bool) {
        let mut last = [0u64; ROOMS];
        let mut lines = 0;
        for (room, seq) in arrived {
            let mut expected = last[room] + 1;
            while silent && rooms[room].silent.contains(&expected) {
                expected += 1;
            }
            assert_eq!(seq, expected, "room {room} out of order or lost");
            last[room] = seq;
            lines += 1;
        }
        let total: u64 = rooms.iter().map(|log| log.seq).sum();
        let left_out: usize = rooms.iter().map(|log| log.silent.len()).sum();
        let expected = if silent {
            total - left_out as u64
        } else {
            total
        };
        assert_eq!(lines, expected);
    }

    /// chatd lines (`READ <room> u <seq>`): every line arrives whole, exactly once, and each
    /// room's lines in order, whether written through or by the writer.
    #[test]
    fn concurrent_publishers_keep_each_rooms_order() {
        let make: MakeLines = |room, seq, _own| {
            vec![Line::event(Event::Read {
                room: Arc::from(format!("r{room}")),
                user: Arc::from("u"),
                seq,
            })]
        };
        let (text, rooms) = race(writer::ChatdEncoder, make);
        assert!(text.ends_with("BYE quit :goodbye\n"), "farewell last");
        let arrived = text
            .lines()
            .filter(|line| !line.starts_with("BYE "))
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert!(
                    matches!(fields[..], ["READ", _, "u", _]),
                    "a line cut or mixed up: {line:?}"
                );
                (fields[1][1..].parse().unwrap(), fields[3].parse().unwrap())
            });
        check_order(arrived, &rooms, false);
    }

    /// The same race for an IRC connection, whose encoder keeps per-connection state: its
    /// own posts (an `OK` then the message) are left out without `echo-message`, whichever
    /// thread encodes them, and everything else arrives as `PRIVMSG`s in each room's order.
    #[test]
    fn concurrent_publishers_keep_order_for_an_irc_connection() {
        let make: MakeLines = |room, seq, own| {
            let message = Arc::new(Message {
                id: Uuid::now_v7(),
                room: Arc::from(format!("r{room}")),
                seq,
                sender: Arc::from("u"),
                body: seq.to_string().into(),
                sent_at: Utc::now(),
            });
            let mut lines = Vec::new();
            if own {
                let posted = Published {
                    room: Arc::clone(&message.room),
                    seq,
                    id: message.id,
                    to: None,
                    fingerprint: None,
                };
                lines.push(Line::reply(Event::OkPost(posted), None));
            }
            lines.push(Line::event(Event::Message(message)));
            lines
        };
        let encoder = IrcEncoder::new(Arc::new(Link::new(1)));
        let (text, rooms) = race(encoder, make);
        let mut text_lines: Vec<&str> = text.split_inclusive("\r\n").collect();
        let farewell = text_lines.pop().expect("a farewell");
        assert!(farewell.starts_with("ERROR :Closing link"), "farewell last");
        let arrived = text_lines.into_iter().map(|line| {
            let line = line.strip_suffix("\r\n").expect("whole lines only");
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(
                matches!(fields[..], [_, "PRIVMSG", _, _]),
                "a line cut or mixed up: {line:?}"
            );
            (
                fields[2][2..].parse().unwrap(),
                fields[3][1..].parse().unwrap(),
            )
        });
        check_order(arrived, &rooms, true);
    }
}
