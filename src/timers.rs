//! Deferred work, on one `chatd-timers` thread.
//!
//! - Presence grace: when a user's last session ends, their peers are not told at once (a
//!   phone that drops off the network and reconnects a second later should not broadcast
//!   offline/online to everyone). The departure is scheduled here and announced when the
//!   grace period has passed, unless a session came back (the user's generation reveals it).
//! - Typing: a typist who stops refreshing is shown stopped when the time-to-live runs out,
//!   and an event held back by the typing rate limit is sent when the limit allows.
//!
//! Every due item is re-checked against current state when it fires, so an item that became
//! stale (the user came back, the typist refreshed) does nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::server::ChatServer;
use crate::user::User;

/// Items waiting to be scheduled. Far more than can pile up between two wake-ups of the
/// timer thread; if it is ever full the caller acts at once instead (see `schedule`).
const SCHEDULE_CAPACITY: usize = 65_536;

/// Something to do at `due`.
pub struct Due {
    pub at: Instant,
    pub what: Task,
}

pub enum Task {
    /// Announce the user offline if their generation is still `generation`.
    Offline { user: Arc<User>, generation: u64 },
    /// Drop idle rooms' recent logs and give freed memory back (see `ChatServer::sweep`);
    /// it schedules the next one itself.
    Sweep,
    /// Bring the typing indicator of `user` in `room` up to date.
    Typing { room: Arc<str>, user: Arc<str> },
}

/// The sending side, held by `ChatServer`. Dropping it ends the timer thread.
pub struct Timers {
    schedule: Sender<Due>,
}

impl Timers {
    /// Starts the timer thread. It holds only a weak reference to the server, so the server
    /// can be dropped; then the channel disconnects and the thread ends.
    pub fn start(server: Weak<ChatServer>) -> Timers {
        let (schedule, scheduled) = bounded(SCHEDULE_CAPACITY);
        thread::Builder::new()
            .name("chatd-timers".into())
            .spawn(move || run(server, scheduled))
            .expect("spawning the timer thread at start-up");
        Timers { schedule }
    }

    /// Schedules an item. Gives it back if the schedule is full, so the caller can act now
    /// rather than lose it.
    pub fn schedule(&self, due: Due) -> Result<(), Due> {
        self.schedule.try_send(due).map_err(|e| match e {
            TrySendError::Full(d) | TrySendError::Disconnected(d) => d,
        })
    }
}

/// Heap entries ordered by due time; the counter breaks ties so `Task` need not be `Ord`.
struct Entry(Instant, u64, Task);

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

fn run(server: Weak<ChatServer>, scheduled: Receiver<Due>) {
    let mut due: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut counter = 0u64;
    loop {
        let wait = match due.peek() {
            Some(Reverse(Entry(at, ..))) => at.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match scheduled.recv_timeout(wait) {
            Ok(item) => {
                counter += 1;
                due.push(Reverse(Entry(item.at, counter, item.what)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while due.peek().is_some_and(|Reverse(Entry(at, ..))| *at <= now) {
            let Some(Reverse(Entry(_, _, task))) = due.pop() else {
                break;
            };
            let Some(server) = server.upgrade() else {
                return;
            };
            server.run_task(task);
        }
    }
}
