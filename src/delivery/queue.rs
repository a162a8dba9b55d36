//! A session's queue: bounded, and allocated in two stages so that an idle session does not
//! pay for the lines it never holds.
//!
//! A crossbeam bounded channel allocates (and initialises) all its slots when it is made: a
//! queue of 1,024 lines is 16 KiB per session, a third of an idle session's memory. Most
//! sessions never hold more than a few lines at once. So the queue starts as a small channel
//! ([`FIRST_STAGE`] lines), and the first time that one is full the rest of the budget is
//! allocated as a second channel, which takes every later line. The budget is unchanged: the
//! two stages hold `capacity` lines together, and a session that falls that far behind is a
//! slow consumer exactly as before. (An unbounded crossbeam channel also allocates lazily, but
//! its writers and readers back off with `yield_now` while a block is installed: on busy
//! cores the slow-consumer bench lost 60-90% of its throughput. See BENCHMARKS.md, issue 12.)
//!
//! # Why order holds across the two stages
//!
//! The writer takes everything from the first stage before anything from the second, and
//! once it has moved on it never looks at the first stage again. So no line may enter the
//! first stage after the writer moved on, and every line that entered it before must be seen.
//! A sender counts itself in [`Queue::entering_first`] before it looks whether the second
//! stage exists, and out after its `try_send`; the writer moves on only once the second stage
//! exists, nobody is counted in, and the first stage is empty. A sender that counts itself in
//! after the writer's look (sequentially consistent, both sides) sees the second stage and
//! uses it. A sender never blocks while counted, so the writer's wait for the count is a few
//! instructions long.
//!
//! Two lines A before B for one session (same room, under its lock; or the reader's own
//! commands, in program order): B sees the second stage if A was put there (the stage was
//! made before A, and A's send happens before B's); if A is in the first stage, B is in
//! either, and the writer takes all of the first before any of the second.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};

use super::line::Line;

/// Lines the first stage holds: a quiet session's replies and a few messages (512 bytes of
/// slots instead of 16 KiB).
pub const FIRST_STAGE: usize = 32;

type Stage = (Sender<Arc<Line>>, Receiver<Arc<Line>>);

/// The senders' side, kept in the session's outbox.
pub struct Queue {
    first: Sender<Arc<Line>>,
    /// The rest of the budget, allocated the first time the first stage is full; 0 when the
    /// whole budget fits in the first stage.
    rest_capacity: usize,
    rest: OnceLock<Stage>,
    /// Senders between their look at `rest` and the end of their `try_send` into `first`.
    entering_first: AtomicUsize,
    /// The receiving end of the first stage, for `len` and `is_empty`.
    first_receiver: Receiver<Arc<Line>>,
}

/// The writer's side: the one thread that takes lines out.
pub struct QueueReader {
    first: Receiver<Arc<Line>>,
    /// The second stage, once the first is retired.
    rest: Option<Receiver<Arc<Line>>>,
}

impl Queue {
    /// A queue holding at most `capacity` lines (at least 1).
    pub fn new(capacity: usize) -> (Queue, QueueReader) {
        let capacity = capacity.max(1);
        let first_capacity = capacity.min(FIRST_STAGE);
        let (first, first_receiver) = bounded(first_capacity);
        let queue = Queue {
            first,
            rest_capacity: capacity - first_capacity,
            rest: OnceLock::new(),
            entering_first: AtomicUsize::new(0),
            first_receiver: first_receiver.clone(),
        };
        let reader = QueueReader {
            first: first_receiver,
            rest: None,
        };
        (queue, reader)
    }

    /// Queues `line` without blocking; `Full` once `capacity` lines are queued.
    pub fn try_send(&self, line: Arc<Line>) -> Result<(), TrySendError<Arc<Line>>> {
        if let Some((rest, _)) = self.rest.get() {
            return rest.try_send(line);
        }
        self.entering_first.fetch_add(1, SeqCst);
        let tried = match self.rest.get() {
            Some(_) => Err(TrySendError::Full(line)),
            None => self.first.try_send(line),
        };
        self.entering_first.fetch_sub(1, SeqCst);
        match tried {
            Err(TrySendError::Full(line)) if self.rest_capacity > 0 => {
                let (rest, _) = self.rest.get_or_init(|| bounded(self.rest_capacity));
                rest.try_send(line)
            }
            other => other,
        }
    }

    /// Queues `line`, waiting until `deadline` for room.
    pub fn send_deadline(
        &self,
        line: Arc<Line>,
        deadline: Instant,
    ) -> Result<(), SendTimeoutError<Arc<Line>>> {
        match self.try_send(line) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(line)) => Err(SendTimeoutError::Disconnected(line)),
            // Full: with a second stage, that one is full (the first is never waited for,
            // since the writer may have left it); without one, the first is the only stage.
            Err(TrySendError::Full(line)) => match self.rest.get() {
                Some((rest, _)) => rest.send_deadline(line, deadline),
                None => self.first.send_deadline(line, deadline),
            },
        }
    }

    /// Lines queued and not yet taken by the writer.
    pub fn len(&self) -> usize {
        self.first_receiver.len() + self.rest.get().map_or(0, |(_, rest)| rest.len())
    }

    pub fn is_empty(&self) -> bool {
        self.first_receiver.is_empty() && self.rest.get().is_none_or(|(_, rest)| rest.is_empty())
    }

    /// The most lines the queue holds.
    pub fn capacity(&self) -> usize {
        self.first.capacity().unwrap_or(0) + self.rest_capacity
    }

    /// Whether the second stage has been allocated (for tests and the memory figures).
    pub fn grown(&self) -> bool {
        self.rest.get().is_some()
    }
}

impl QueueReader {
    /// The next line, in the order lines were queued; `None` if nothing is queued.
    pub fn try_recv(&mut self, queue: &Queue) -> Option<Arc<Line>> {
        if self.rest.is_none() {
            if let Ok(line) = self.first.try_recv() {
                return Some(line);
            }
            let (_, rest) = queue.rest.get()?;
            // The first stage is empty and a second exists: wait out any sender still putting
            // a line into the first (it never blocks there), take what it put, then move on.
            while queue.entering_first.load(SeqCst) != 0 {
                thread::yield_now();
            }
            if let Ok(line) = self.first.try_recv() {
                return Some(line);
            }
            self.rest = Some(rest.clone());
        }
        self.rest.as_ref().and_then(|rest| rest.try_recv().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn numbered(n: u64) -> Arc<Line> {
        Line::event(Event::Read {
            room: Arc::from("r"),
            user: Arc::from("u"),
            seq: n,
        })
    }

    fn seq_of(line: &Line) -> u64 {
        match &line.event {
            Event::Read { seq, .. } => *seq,
            other => panic!("not a numbered line: {other:?}"),
        }
    }

    /// The budget is the same as one channel of `capacity` lines, and the second stage is
    /// allocated only when the first is full.
    #[test]
    fn holds_capacity_lines_and_grows_only_when_the_first_stage_fills() {
        let (queue, mut reader) = Queue::new(100);
        assert_eq!(queue.capacity(), 100);
        for n in 0..FIRST_STAGE as u64 {
            queue.try_send(numbered(n)).unwrap();
        }
        assert!(!queue.grown());
        for n in FIRST_STAGE as u64..100 {
            queue.try_send(numbered(n)).unwrap();
        }
        assert!(queue.grown());
        assert_eq!(queue.len(), 100);
        assert!(matches!(
            queue.try_send(numbered(100)),
            Err(TrySendError::Full(_))
        ));
        for n in 0..100 {
            assert_eq!(seq_of(&reader.try_recv(&queue).unwrap()), n);
        }
        assert!(reader.try_recv(&queue).is_none());
        assert!(queue.is_empty());
    }

    /// A small budget is one stage, never grown.
    #[test]
    fn a_budget_within_the_first_stage_is_one_channel() {
        let (queue, _reader) = Queue::new(4);
        for n in 0..4 {
            queue.try_send(numbered(n)).unwrap();
        }
        assert!(queue.try_send(numbered(4)).is_err());
        assert!(!queue.grown());
    }

    /// Several senders, each sending its own numbered lines, race the writer while the queue
    /// grows: every line arrives exactly once, and each sender's lines in order.
    #[test]
    fn concurrent_senders_keep_their_order_across_the_growth() {
        const SENDERS: u64 = 4;
        const EACH: u64 = 20_000;
        for _ in 0..20 {
            let (queue, mut reader) = Queue::new(1024);
            let queue = Arc::new(queue);
            let senders: Vec<_> = (0..SENDERS)
                .map(|s| {
                    let queue = Arc::clone(&queue);
                    thread::spawn(move || {
                        for n in 0..EACH {
                            let mut line = numbered(s * EACH + n);
                            loop {
                                match queue.try_send(line) {
                                    Ok(()) => break,
                                    Err(e) => line = e.into_inner(),
                                }
                                thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            let mut next = [0u64; SENDERS as usize];
            let mut received = 0;
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            while received < SENDERS * EACH {
                assert!(Instant::now() < deadline, "lines lost");
                match reader.try_recv(&queue) {
                    Some(line) => {
                        let seq = seq_of(&line);
                        let (sender, n) = ((seq / EACH) as usize, seq % EACH);
                        assert_eq!(n, next[sender], "sender {sender} out of order");
                        next[sender] += 1;
                        received += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            for sender in senders {
                sender.join().unwrap();
            }
            assert!(reader.try_recv(&queue).is_none());
        }
    }
}
