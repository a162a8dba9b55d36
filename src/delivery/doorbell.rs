//! How a writer thread waits for lines without burning CPU, and how producers wake it.
//!
//! A crossbeam `recv` spins and yields for a while before it sleeps. With thousands of
//! writer threads that mostly wait, that spinning costs more CPU than the work, and the
//! scheduler's run queue fills with threads that have nothing to do, which delays the ones
//! that have. So writers sleep at once when they have been idle, and spin (yield) briefly
//! only while a stream is busy, when the next line is likely to arrive within microseconds
//! and waiting for it lets lines pile up into one write.
//!
//! Producers pay one atomic load per line; only a line for a sleeping writer costs an
//! `unpark` (a futex wake).

use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};

thread_local! {
    /// Wake-ups held back while this thread holds a room's lock (see [`WakeBatch`]).
    static DEFERRED: RefCell<Option<Vec<Thread>>> = const { RefCell::new(None) };
}

/// Holds back the wake-ups of sleeping writers that this thread rings, and performs them
/// when dropped. Fan-out creates one before it takes a room's lock, so the futex wakes of a
/// thousand sleeping writers happen after the lock is released, not while every other poster
/// of the room waits for it.
pub struct WakeBatch {
    outer: bool,
}

impl WakeBatch {
    pub fn start() -> WakeBatch {
        let outer = DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            let outer = deferred.is_none();
            if outer {
                *deferred = Some(Vec::new());
            }
            outer
        });
        WakeBatch { outer }
    }
}

impl Drop for WakeBatch {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let wakes = DEFERRED.with(|deferred| deferred.borrow_mut().take());
        for writer in wakes.into_iter().flatten() {
            writer.unpark();
        }
    }
}

#[derive(Default)]
pub struct Doorbell {
    /// The writer is parked, or about to park, and must be woken for the next line.
    sleeping: AtomicBool,
    /// The writer thread, registered when it starts.
    writer: OnceLock<Thread>,
}

/// How many times a busy writer yields, checking its queue, before it sleeps.
const BUSY_YIELDS: usize = 8;

impl Doorbell {
    /// Called by the writer thread once, before it first waits.
    pub fn register_writer(&self) {
        let _ = self.writer.set(thread::current());
    }

    /// Called after a line is queued: wakes the writer if it sleeps.
    pub fn ring(&self) {
        // Pairs with the fence in `wait`: either the writer sees our line in its last check
        // before parking, or we see that it is sleeping.
        fence(SeqCst);
        if self.sleeping.load(SeqCst) && self.sleeping.swap(false, SeqCst) {
            if let Some(writer) = self.writer.get() {
                DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
                    Some(wakes) => wakes.push(writer.clone()),
                    None => writer.unpark(),
                });
            }
        }
    }

    /// The writer's wait for its next line. `busy` says the stream was busy a moment ago:
    /// then yield a few times first. `until` bounds the wait: past it, `Err(Empty)`.
    /// `Err(Disconnected)` means the queue is disconnected.
    pub fn wait<T>(
        &self,
        queue: &Receiver<T>,
        busy: bool,
        until: Option<Instant>,
    ) -> Result<T, TryRecvError> {
        loop {
            self.wait_until(|| !queue.is_empty(), busy, until)?;
            match queue.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => return other,
            }
        }
    }

    /// Like [`Doorbell::wait`], but takes nothing out of the queue: `Ok` once `queued()`
    /// says a line is queued. The writer takes its session's write lock before it takes lines
    /// out (see `write_through`), so it waits with this.
    pub fn wait_until(
        &self,
        queued: impl Fn() -> bool,
        busy: bool,
        until: Option<Instant>,
    ) -> Result<(), TryRecvError> {
        if busy {
            for _ in 0..BUSY_YIELDS {
                if queued() {
                    return Ok(());
                }
                thread::yield_now();
            }
        }
        loop {
            if queued() {
                return Ok(());
            }
            self.sleeping.store(true, SeqCst);
            fence(SeqCst);
            if queued() {
                self.sleeping.store(false, SeqCst);
                return Ok(());
            }
            // A ring between the store above and here leaves an unpark token, so this
            // returns at once; spurious wake-ups just go round again.
            while self.sleeping.load(SeqCst) {
                match until {
                    None => thread::park(),
                    Some(until) => {
                        let now = Instant::now();
                        if now >= until {
                            // A ring racing with this finds the flag clear and, at worst,
                            // leaves an unpark token: the next wait wakes once for nothing.
                            self.sleeping.store(false, SeqCst);
                            return if queued() {
                                Ok(())
                            } else {
                                Err(TryRecvError::Empty)
                            };
                        }
                        thread::park_timeout(until - now);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A producer and a writer hand over many lines, with the writer sleeping between bursts:
    /// no line is lost and the writer never sleeps through one.
    #[test]
    fn no_lost_wakeups() {
        const LINES: u64 = 20_000;
        let (tx, rx) = crossbeam_channel::bounded::<u64>(64);
        let bell = Arc::new(Doorbell::default());
        let writer_bell = Arc::clone(&bell);
        let writer = thread::spawn(move || {
            writer_bell.register_writer();
            let mut sum = 0;
            for n in 0..LINES {
                let got = writer_bell.wait(&rx, n % 2 == 0, None).expect("open");
                assert_eq!(got, n);
                sum += got;
            }
            sum
        });
        for n in 0..LINES {
            while tx.send_timeout(n, Duration::from_secs(5)).is_err() {}
            bell.ring();
            if n % 1000 == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(writer.join().unwrap(), LINES * (LINES - 1) / 2);
    }
}
