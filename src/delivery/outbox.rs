//! The sending half of a connection: everything other threads may do to it.
//!
//! Publishers never wait for a socket. They put a shared [`Line`] (a typed event) into the
//! connection's bounded queue with `try_send`, which neither blocks nor does I/O, and the
//! connection's writer thread (`transport::writer`) drains the queue into the connection. A
//! connection whose queue is full has fallen a whole queue behind: it is closed as a slow
//! consumer rather than waited for. The one shortcut: a fan-out may write a line straight
//! into an idle connection with a non-blocking write (see `write_through`).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::lock_rank::{Rank, RankedMutex};
use crossbeam_channel::TrySendError;

use super::doorbell::Doorbell;
use super::line::{Line, LineKind};
use super::peer::Peer;
use super::queue::{Queue, QueueReader};
use super::write_through::{self, WriteGuard, WriteLock, Written};
use crate::event::Event;
use crate::protocol::{ClientError, ErrorCode};
use crate::stats::Stats;

/// Why a connection ends. The writer turns it into the connection's last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// The same user logged in again with the same device id.
    Replaced,
    /// The user changed their password and asked to end their other sessions.
    PasswordChanged,
    /// The name was given a password, and this session had not proven it.
    Registered,
    /// The queue filled up: the client reads slower than its rooms talk.
    SlowConsumer,
    ServerShutdown,
    /// The client closed its side (EOF). Queued replies are still written, so
    /// `echo PING | nc -N host port` gets its PONG.
    Hangup,
    /// Connected but never logged in within the login timeout.
    LoginTimeout,
    /// Refused at the door: the server is at its session capacity.
    ServerFull,
    /// Refused at the door: the client's address already holds `--max-per-ip` connections.
    TooManyConnections,
    /// Refused at the door: the client's address is banned.
    BannedAddress,
    /// An operator banned the user or their address (`BAN`).
    Banned,
    /// An operator disconnected the user (`KICK <user>`).
    Kicked,
    /// Kept sending commands after being told it was rate-limited (see `transport::limits`).
    Flooding,
    /// A line was still incomplete `--line-timeout` after its first byte arrived: the
    /// slow-loris guard.
    LineTimeout,
    /// The peer closed or reset the connection, or a write failed: nothing more can be sent.
    Gone,
    /// A front end that cannot go back to before its login (IRC) refused the login.
    LoginRefused,
}

impl CloseReason {
    /// A short fixed name for logs and metric labels (never shown to clients).
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::Replaced => "replaced",
            CloseReason::PasswordChanged => "password_changed",
            CloseReason::Registered => "registered",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::Hangup => "hangup",
            CloseReason::LoginTimeout => "login_timeout",
            CloseReason::ServerFull => "server_full",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::BannedAddress => "banned",
            CloseReason::Banned => "banned_now",
            CloseReason::Kicked => "kicked",
            CloseReason::Flooding => "flooding",
            CloseReason::LineTimeout => "line_timeout",
            CloseReason::Gone => "gone",
            CloseReason::LoginRefused => "login_refused",
        }
    }

    /// The final line the writer sends, if the socket can still take one. `cursors` is what
    /// the writer wrote: `(room, seq)` pairs, named in `BYE slow-consumer` so the client
    /// knows where to SYNC from.
    pub fn farewell(self, cursors: &[(Arc<str>, u64)]) -> Option<Event> {
        let bye = |reason, text| Event::Bye {
            reason,
            detail: String::new(),
            text,
        };
        Some(match self {
            CloseReason::Quit => bye("quit", "goodbye"),
            CloseReason::Replaced => bye("replaced", "you logged in again from this device"),
            CloseReason::PasswordChanged => bye(
                "password-changed",
                "the password was changed; log in again with the new one",
            ),
            CloseReason::Registered => bye(
                "registered",
                "this name now has a password; log in again with it",
            ),
            CloseReason::SlowConsumer => {
                let detail: Vec<String> = cursors
                    .iter()
                    .map(|(room, seq)| format!("{room}={seq}"))
                    .collect();
                Event::Bye {
                    reason: "slow-consumer",
                    detail: detail.join(" "),
                    text:
                        "you fell too far behind; reconnect and SYNC each room from the seq given",
                }
            }
            CloseReason::ServerShutdown => bye("server-shutdown", "the server is stopping"),
            CloseReason::LoginTimeout => bye("login-timeout", "no LOGIN in time"),
            CloseReason::ServerFull => Event::Error(ClientError::new(
                ErrorCode::ServerFull,
                "the server is at capacity; try again later",
            )),
            CloseReason::TooManyConnections => Event::Error(ClientError::new(
                ErrorCode::TooManyConnections,
                "too many connections from your address; close one first",
            )),
            CloseReason::BannedAddress => Event::Error(banned()),
            CloseReason::Banned => bye("banned", BANNED),
            CloseReason::Kicked => bye("kicked", "an operator disconnected you"),
            CloseReason::Flooding => bye(
                "flooding",
                "too many commands refused as rate-limited; wait for `retry in` before sending",
            ),
            CloseReason::LineTimeout => bye(
                "line-timeout",
                "a line took too long to arrive; send whole lines",
            ),
            CloseReason::LoginRefused => bye("login-refused", "the login was refused"),
            CloseReason::Hangup | CloseReason::Gone => return None,
        })
    }

    /// For how long after the close lines still queued are written before the farewell. A
    /// slow consumer's queue is what it could not keep up with: flushing it would hold the
    /// connection open for as long as the client cares to stall, so it is dropped at once.
    /// At shutdown a client that keeps up gets what was queued for it, but flushing a
    /// backed-up queue would take the whole shutdown grace and leave no time for the goodbye,
    /// so what is still queued [`SHUTDOWN_FLUSH`] after the close is dropped and the `BYE`
    /// goes next.
    fn flushes_queue_for(self) -> Duration {
        match self {
            CloseReason::SlowConsumer | CloseReason::Gone => Duration::ZERO,
            CloseReason::ServerShutdown => SHUTDOWN_FLUSH,
            _ => Duration::MAX,
        }
    }
}

/// The one text a banned user or address is told, at the door, at LOGIN and when the ban
/// falls on an open session: the same whichever kind of ban it is, so a banned client learns
/// nothing about what was banned.
const BANNED: &str = "you are banned from this server";

/// `ERR banned`, for a refused connection or LOGIN.
pub fn banned() -> ClientError {
    ClientError::new(ErrorCode::Banned, BANNED)
}

/// How long a stopping server keeps writing queued lines before it drops them and says
/// `BYE server-shutdown`: a fifth of the listener's one-second polite grace, so that a
/// client that had fallen behind but reads again within the grace still gets its goodbye.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_millis(200);

pub struct Outbox {
    /// Connection number, unique for the server's lifetime; names the threads in logs.
    pub id: u64,
    /// The bounded queue the writer thread drains (allocated in two stages: see `queue`).
    queue: Queue,
    /// The connection underneath (a socket), shared with the reader and writer threads.
    peer: Arc<dyn Peer>,
    /// Lock rank 5, the last (see `lock_rank::Rank`). Set once, by whoever closes first,
    /// with when; later reasons are ignored.
    closing: RankedMutex<Option<(CloseReason, Instant)>>,
    /// Queue length past which ephemeral lines are shed (stage 1 of backpressure).
    soft_mark: usize,
    /// Bytes of this session's own replies (SYNC, HISTORY, WHO, ...) queued and not yet taken
    /// by the writer. Lines fanned out to many sessions are shared and counted by the line
    /// cap alone; a reply is this session's alone, so its bytes are what a client that asks
    /// and never reads could pile up.
    reply_bytes: AtomicUsize,
    /// Past this, the session is a slow consumer (`--max-reply-bytes`).
    max_reply_bytes: usize,
    /// Wakes the writer thread when it sleeps; see `doorbell`.
    pub doorbell: Doorbell,
    /// Mirrors `closing.is_some()` for fan-out, which checks it on every line without a lock.
    closed: AtomicBool,
    /// The label of the QUIT that ended the connection, for its `BYE quit`: the one farewell
    /// that is a direct reply. Set once, before the close, by [`Outbox::quit`].
    quit_label: OnceLock<Arc<str>>,
    stats: Arc<Stats>,
    /// The session's write lock: held by whoever writes to the socket (the writer thread, or
    /// a publisher writing through), and what they wrote. Outside the lock order: publishers
    /// only `try_lock` it (so they may while holding a room's lock), and the writer thread,
    /// the only one that waits for it, holds no other lock then. See `write_through`.
    writing: WriteLock,
    /// Whether publishers may write through (the peer says).
    write_through: bool,
    /// 1 + this session's index in the write-through batch that holds its write lock, or 0.
    pub(super) write_through_slot: AtomicUsize,
    /// When the writer thread last wrote a batch (`write_through::clock` nanoseconds): a
    /// session whose writer wrote within `write_through::BUSY` is busy, and is left to it.
    pub(super) last_write: AtomicU64,
}

impl Outbox {
    pub fn new(
        id: u64,
        queue: Queue,
        max_reply_bytes: usize,
        peer: Arc<dyn Peer>,
        stats: Arc<Stats>,
    ) -> Outbox {
        let soft_mark = queue.capacity() / 2;
        let write_through = peer.write_through();
        Outbox {
            id,
            queue,
            peer,
            closing: RankedMutex::new(Rank::OutboxClosing, None),
            soft_mark,
            reply_bytes: AtomicUsize::new(0),
            max_reply_bytes,
            doorbell: Doorbell::default(),
            closed: AtomicBool::new(false),
            quit_label: OnceLock::new(),
            stats,
            writing: Arc::new(parking_lot::Mutex::new(Written::default())),
            write_through,
            write_through_slot: AtomicUsize::new(0),
            last_write: AtomicU64::new(0),
        }
    }

    /// The writer thread wrote a batch: the session counts as busy for a moment (see
    /// `write_through::BUSY`).
    pub fn note_written(&self) {
        // Stored at most every half `BUSY`: posters read this on every delivery, and a store
        // per batch from a busy writer would keep taking the cache line away from them.
        let now = write_through::clock();
        let half_busy = write_through::BUSY.as_nanos() as u64 / 2;
        if now.saturating_sub(self.last_write.load(Relaxed)) >= half_busy {
            self.last_write.store(now, Relaxed);
        }
    }

    /// Like [`Outbox::deliver`], but inside a fan-out's `WriteThroughBatch` an idle session
    /// gets the line written straight into its socket when the batch ends, instead of waking
    /// its writer thread. Called with the room's lock held, like `deliver`.
    pub fn deliver_through(self: &Arc<Self>, line: &Arc<Line>) -> bool {
        if self.write_through
            && line.reply_bytes == 0
            && line.kind == LineKind::Reliable
            && !self.closed.load(Relaxed)
            && write_through::claim(self, line)
        {
            return true;
        }
        self.deliver(line)
    }

    /// Takes the session's write lock, waiting while a publisher writes through. For the
    /// writer thread, holding no other lock.
    pub fn lock_writing(&self) -> WriteGuard {
        self.writing.lock_arc()
    }

    pub(super) fn try_lock_writing(&self) -> Option<WriteGuard> {
        self.writing.try_lock_arc()
    }

    pub(super) fn peer(&self) -> &dyn Peer {
        &*self.peer
    }

    /// Whether nothing is queued (the writer's wait, and write-through's check).
    pub fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Lines queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next queued line, for the writer thread, which holds the queue's reading end.
    pub fn next_queued(&self, reader: &mut QueueReader) -> Option<Arc<Line>> {
        reader.try_recv(&self.queue)
    }

    /// Wakes the writer with nothing new queued: to send what a write-through left over in
    /// its lock, or to give its transport a turn (a WebSocket's writer then sends the pong
    /// its reader owes). A wake line in the queue (or, if the queue is full, the writer has
    /// lines to come for anyway) and a ring.
    pub fn wake_writer(&self) {
        let _ = self.queue.try_send(Line::wake());
        self.doorbell.ring();
    }

    /// Queues a line without blocking; called by fan-out while it holds a room's lock.
    /// A full queue closes the connection as a slow consumer. Returns whether it was queued.
    pub fn deliver(&self, line: &Arc<Line>) -> bool {
        // A closing connection takes nothing more (its writer may already have stopped).
        if self.closed.load(Relaxed) {
            return false;
        }
        if line.kind == LineKind::Ephemeral && self.queue.len() >= self.soft_mark {
            Stats::add(&self.stats.shed, 1);
            return false;
        }
        if !self.reserve(line) {
            return false;
        }
        match self.queue.try_send(Arc::clone(line)) {
            Ok(()) => {
                self.doorbell.ring();
                true
            }
            Err(TrySendError::Full(_)) => {
                if self.close(CloseReason::SlowConsumer) {
                    Stats::add(&self.stats.slow_consumers, 1);
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a direct reply from the connection's own reader thread, holding no lock. It may
    /// wait for room in the queue (that only delays this client's own next command), but not
    /// longer than `patience`: a client that does not read its replies is a slow consumer too.
    pub fn reply(&self, line: Arc<Line>, patience: Duration) {
        if !self.reserve(&line) {
            return;
        }
        let deadline = Instant::now() + patience;
        if self.queue.send_deadline(line, deadline).is_ok() {
            self.doorbell.ring();
        } else if self.close(CloseReason::SlowConsumer) {
            Stats::add(&self.stats.slow_consumers, 1);
        }
    }

    /// Counts a reply's bytes in before it is queued; a session over its reply bytes is a slow
    /// consumer, closed rather than left to grow. (A reply that could not be queued after all
    /// stays counted: the session is closing then, and nothing is queued again.)
    fn reserve(&self, line: &Line) -> bool {
        if line.reply_bytes == 0 {
            return true;
        }
        let before = self.reply_bytes.fetch_add(line.reply_bytes, Relaxed);
        // One reply is always let through, however large, so a client can always page.
        if before > 0 && before + line.reply_bytes > self.max_reply_bytes {
            if self.close(CloseReason::SlowConsumer) {
                Stats::add(&self.stats.slow_consumers, 1);
            }
            return false;
        }
        true
    }

    /// The writer took `line` from the queue.
    pub fn taken(&self, line: &Line) {
        if line.reply_bytes > 0 {
            self.reply_bytes.fetch_sub(line.reply_bytes, Relaxed);
        }
    }

    /// Starts closing the connection. Never blocks and never writes: it records the reason,
    /// wakes the writer (which sends the farewell) and shuts the connection's read side so
    /// the reader thread's blocking `read` returns and it logs the session out at once.
    /// Returns true for the call that actually started the close.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut closing = self.closing.lock();
            if closing.is_some() {
                return false;
            }
            *closing = Some((reason, Instant::now()));
        }
        self.closed.store(true, Relaxed);
        // If the queue is full the writer is busy and sees the reason after its current batch.
        let _ = self.queue.try_send(Line::wake());
        self.doorbell.ring();
        self.peer.shutdown_read();
        true
    }

    /// Closes the connection because the client sent QUIT, labelled `label`: its `BYE quit`
    /// answers that command, so it carries the label like every direct reply.
    pub fn quit(&self, label: Option<&str>) {
        if let Some(label) = label {
            let _ = self.quit_label.set(Arc::from(label));
        }
        self.close(CloseReason::Quit);
    }

    /// The label for the connection's farewell: the QUIT's, when QUIT ended it.
    pub fn farewell_label(&self, reason: CloseReason) -> Option<&str> {
        match reason {
            CloseReason::Quit => self.quit_label.get().map(|label| &**label),
            _ => None,
        }
    }

    /// Shuts the connection both ways: a blocked write fails at once. For shutdown, after
    /// the polite close had its chance.
    pub fn abort(&self) {
        self.close(CloseReason::Gone);
        self.peer.abort();
    }

    /// Whether the connection is closing, without taking the lock (the writer asks once per
    /// batch).
    pub fn is_closing(&self) -> bool {
        self.closed.load(Relaxed)
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.closing.lock().map(|(reason, _)| reason)
    }

    /// Whether the writer should still write what is queued (see
    /// `CloseReason::flushes_queue_for`).
    pub fn keeps_writing(&self) -> bool {
        self.closing
            .lock()
            .is_none_or(|(reason, at)| at.elapsed() < reason.flushes_queue_for())
    }

    /// The client's address (for per-address login throttling and logs).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.peer_ip()
    }

    pub fn transport(&self) -> crate::stats::Transport {
        self.peer.transport()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
