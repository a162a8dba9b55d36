//! The offline grace timer.
//!
//! When a user's last session ends, their peers are not told at once: a phone that drops off
//! the network and reconnects a second later should not broadcast offline/online to everyone.
//! Instead the departure is scheduled here, and one `chatd-presence` thread announces it when
//! the grace period has passed, unless a session came back in the meantime (which the
//! user's generation counter reveals).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::server::ChatServer;
use crate::user::User;

/// Departures waiting to be scheduled. Far more than can pile up between two wake-ups of
/// the timer thread; if it is ever full the departure is announced at once instead.
const SCHEDULE_CAPACITY: usize = 65_536;

/// A departure to announce at `due`, if the user's generation is still `generation`.
pub struct Departure {
    pub due: Instant,
    pub user: Arc<User>,
    pub generation: u64,
}

/// The sending side, held by `ChatServer`. Dropping it ends the timer thread.
pub struct GraceTimer {
    schedule: Sender<Departure>,
}

impl GraceTimer {
    /// Starts the timer thread. It holds only a weak reference to the server, so the server
    /// can be dropped; then the channel disconnects and the thread ends.
    pub fn start(server: Weak<ChatServer>) -> GraceTimer {
        let (schedule, scheduled) = bounded(SCHEDULE_CAPACITY);
        thread::Builder::new()
            .name("chatd-presence".into())
            .spawn(move || run(server, scheduled))
            .expect("spawning the presence timer thread at start-up");
        GraceTimer { schedule }
    }

    /// Schedules a departure. Returns it back if the schedule is full, so the caller can
    /// announce it now rather than lose it.
    pub fn schedule(&self, departure: Departure) -> Result<(), Departure> {
        self.schedule.try_send(departure).map_err(|e| match e {
            TrySendError::Full(d) | TrySendError::Disconnected(d) => d,
        })
    }
}

/// Heap entries ordered by due time; the counter breaks ties so `Departure` need not be `Ord`.
struct Entry(Instant, u64, Departure);

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

fn run(server: Weak<ChatServer>, scheduled: Receiver<Departure>) {
    let mut due: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut counter = 0u64;
    loop {
        let wait = match due.peek() {
            Some(Reverse(Entry(at, ..))) => at.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match scheduled.recv_timeout(wait) {
            Ok(departure) => {
                counter += 1;
                due.push(Reverse(Entry(departure.due, counter, departure)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while due.peek().is_some_and(|Reverse(Entry(at, ..))| *at <= now) {
            let Some(Reverse(Entry(_, _, departure))) = due.pop() else {
                break;
            };
            let Some(server) = server.upgrade() else {
                return;
            };
            server.announce_offline(&departure.user, departure.generation);
        }
    }
}
