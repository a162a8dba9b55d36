//! Locks that know their place in the lock order, and check it in debug builds.
//!
//! [`Rank`] is the lock table. A [`RankedMutex`] or [`RankedRwLock`] is a `parking_lot` lock
//! built with its rank; a Condvar-paired mutex waits through a [`RankedCondvar`]. In debug
//! builds each thread keeps a stack of the locks it holds, and taking a lock out of order
//! panics at once, naming both locks and where each was taken, instead of deadlocking one
//! day under load. Every test then checks the order on every path it runs. In release
//! builds the wrappers are the bare `parking_lot` types: no rank is stored and no
//! thread-local is touched.
//!
//! A function that takes a lock on its caller's behalf (`User::lock_presence`) can add
//! `#[cfg_attr(debug_assertions, track_caller)]` so a report names the caller's line.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use parking_lot::WaitTimeoutResult;

/// The lock order: every lock in chatd, and the only order in which locks may be nested.
///
/// A thread may take a ranked lock only while every lock it holds has a strictly lower
/// rank. Ranks therefore rise along every chain of nested locks, so no two threads can each
/// hold what the other waits for. "Strictly" also rules out two locks of one rank at once:
/// never two rooms' states, never two users' presence or state locks.
///
/// | rank | lock | what it guards |
/// |---|---|---|
/// | 0 | `User::device_keys` | one user's device keys (the key directory), held across queueing their store write |
/// | 1 | `User::presence` | one user's presence transitions, with their announcement |
/// | 2 | `User::client_ids` | one user's recent client message ids |
/// | 3 | `Room::state` | members, recent log, seqs, pending posts, reads, typing, access |
/// | 4 | `User::state` | sessions, room set, presence as shown |
/// | 5 | `Outbox::closing` | why the connection is closing |
/// | leaf | see [`Rank::Leaf`] | |
/// | try-only | `Outbox::writing` | a session's socket byte stream and its encoder while someone writes to it |
///
/// `Outbox::writing` (a session's write lock, `delivery::write_through`) sits outside the
/// order: publishers only ever `try_lock` it, which cannot wait, so they may while holding a
/// room's lock; the one thread that waits for it, the session's writer, holds no other lock.
/// It is the one lock held across socket I/O: a non-blocking `send` by a publisher, or the
/// writer's own write, which delays nobody but that writer.
///
/// No ranked lock is ever held across socket I/O. [`RankedMutex`] and [`RankedRwLock`] check the
/// order on every acquisition in debug builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// 0: `User::device_keys`. Taken first, with no other lock held (KEY, KEYS, REVOKE, a
    /// name getting a password); under it only the same user's `state` (to read whether the
    /// name has a password) and a store `Ticket` are taken.
    DeviceKeys,
    /// 1: `User::presence`.
    Presence,
    /// 2: `User::client_ids`.
    ClientIds,
    /// 3: `Room::state`.
    RoomState,
    /// 4: `User::state`.
    UserState,
    /// 5: `Outbox::closing`.
    OutboxClosing,
    /// Held only to look up, insert or copy out: it may be taken while ranked locks are held,
    /// but no lock at all is taken while it is held. `ChatServer`'s user and room maps, the
    /// listener's connection registry and live count, the per-address connection counts
    /// (`transport::limits::AddressTable`), the SQLite read-connection pool, the login
    /// throttle, the password-hashing slots, each store `Ticket`, the HTTP listener's
    /// requests in progress (`Shared::handshakes`), a WebSocket's owed control frames
    /// (`http::websocket::Control`), the cluster's connection pool (`cluster::Cluster::pool`)
    /// and its threads to join (`cluster::Cluster::threads`),
    /// `ChatServer`'s ban list, IRC's away messages.
    Leaf,
}

impl Rank {
    /// The position in the order; `None` for a leaf, which sits outside it.
    pub const fn level(self) -> Option<u8> {
        match self {
            Rank::DeviceKeys => Some(0),
            Rank::Presence => Some(1),
            Rank::ClientIds => Some(2),
            Rank::RoomState => Some(3),
            Rank::UserState => Some(4),
            Rank::OutboxClosing => Some(5),
            Rank::Leaf => None,
        }
    }

    /// The lock field this rank belongs to.
    pub const fn lock_name(self) -> &'static str {
        match self {
            Rank::Presence => "User::presence",
            Rank::ClientIds => "User::client_ids",
            Rank::RoomState => "Room::state",
            Rank::UserState => "User::state",
            Rank::OutboxClosing => "Outbox::closing",
            Rank::DeviceKeys => "User::device_keys",
            Rank::Leaf => "a leaf lock",
        }
    }

    /// Whether a thread holding `held` may take a lock of this rank.
    pub fn may_follow(self, held: Rank) -> bool {
        match (held.level(), self.level()) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(held), Some(taking)) => held < taking,
        }
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level() {
            Some(level) => write!(f, "`{}` (rank {level})", self.lock_name()),
            None => f.write_str(self.lock_name()),
        }
    }
}

/// A `parking_lot::Mutex` with a [`Rank`].
pub struct RankedMutex<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: Mutex<T>,
}

impl<T> RankedMutex<T> {
    pub const fn new(rank: Rank, value: T) -> RankedMutex<T> {
        #[cfg(not(debug_assertions))]
        let _ = rank;
        RankedMutex {
            #[cfg(debug_assertions)]
            rank,
            inner: Mutex::new(value),
        }
    }

    /// Blocks until the lock is free. Debug builds panic first if taking it now would break
    /// the lock order.
    #[cfg_attr(debug_assertions, track_caller)]
    #[inline]
    pub fn lock(&self) -> RankedMutexGuard<'_, T> {
        #[cfg(debug_assertions)]
        let entry = held::Entry::check(self.rank, address(self), std::panic::Location::caller());
        let inner = self.inner.lock();
        RankedMutexGuard {
            inner,
            #[cfg(debug_assertions)]
            held: entry.push(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for RankedMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Holds a [`RankedMutex`]; releases it, and its place on the held stack, when dropped.
pub struct RankedMutexGuard<'a, T> {
    inner: MutexGuard<'a, T>,
    #[cfg(debug_assertions)]
    held: held::Token,
}

impl<T> Deref for RankedMutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for RankedMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A `parking_lot::RwLock` with a [`Rank`]. Readers and writers follow the same order: a
/// read lock still waits for a writer, so it can take part in a deadlock like any other.
pub struct RankedRwLock<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: RwLock<T>,
}

impl<T> RankedRwLock<T> {
    pub const fn new(rank: Rank, value: T) -> RankedRwLock<T> {
        #[cfg(not(debug_assertions))]
        let _ = rank;
        RankedRwLock {
            #[cfg(debug_assertions)]
            rank,
            inner: RwLock::new(value),
        }
    }

    #[cfg_attr(debug_assertions, track_caller)]
    #[inline]
    pub fn read(&self) -> RankedReadGuard<'_, T> {
        #[cfg(debug_assertions)]
        let entry = held::Entry::check(self.rank, address(self), std::panic::Location::caller());
        let inner = self.inner.read();
        RankedReadGuard {
            inner,
            #[cfg(debug_assertions)]
            _held: entry.push(),
        }
    }

    #[cfg_attr(debug_assertions, track_caller)]
    #[inline]
    pub fn write(&self) -> RankedWriteGuard<'_, T> {
        #[cfg(debug_assertions)]
        let entry = held::Entry::check(self.rank, address(self), std::panic::Location::caller());
        let inner = self.inner.write();
        RankedWriteGuard {
            inner,
            #[cfg(debug_assertions)]
            _held: entry.push(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for RankedRwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

pub struct RankedReadGuard<'a, T> {
    inner: RwLockReadGuard<'a, T>,
    #[cfg(debug_assertions)]
    /// Kept for its `Drop`, which takes the lock off the held stack.
    _held: held::Token,
}

impl<T> Deref for RankedReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

pub struct RankedWriteGuard<'a, T> {
    inner: RwLockWriteGuard<'a, T>,
    #[cfg(debug_assertions)]
    /// Kept for its `Drop`, which takes the lock off the held stack.
    _held: held::Token,
}

impl<T> Deref for RankedWriteGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for RankedWriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A `parking_lot::Condvar` that waits on a [`RankedMutexGuard`], with the same calls.
///
/// Waiting releases the mutex and takes it back, while the thread's other locks stay held,
/// so in debug builds a wait checks that taking it back would be in order: waiting on a
/// room's condvar while holding a user's state lock panics rather than risk a deadlock on
/// wake-up. The lock keeps its place on the held stack throughout: the thread can take
/// nothing else while it sleeps.
#[derive(Debug, Default)]
pub struct RankedCondvar {
    inner: parking_lot::Condvar,
}

impl RankedCondvar {
    pub const fn new() -> RankedCondvar {
        RankedCondvar {
            inner: parking_lot::Condvar::new(),
        }
    }

    #[inline]
    pub fn notify_one(&self) -> bool {
        self.inner.notify_one()
    }

    #[inline]
    pub fn notify_all(&self) -> usize {
        self.inner.notify_all()
    }

    #[cfg_attr(debug_assertions, track_caller)]
    #[inline]
    pub fn wait<T>(&self, guard: &mut RankedMutexGuard<'_, T>) {
        #[cfg(debug_assertions)]
        guard.held.check_retake(std::panic::Location::caller());
        self.inner.wait(&mut guard.inner);
    }

    #[cfg_attr(debug_assertions, track_caller)]
    #[inline]
    pub fn wait_until<T>(
        &self,
        guard: &mut RankedMutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeoutResult {
        #[cfg(debug_assertions)]
        guard.held.check_retake(std::panic::Location::caller());
        self.inner.wait_until(&mut guard.inner, deadline)
    }
}

/// Identifies a lock on the held stack: one thread cannot hold the same lock twice.
#[cfg(debug_assertions)]
fn address<L>(lock: &L) -> usize {
    lock as *const L as usize
}

/// The debug-build bookkeeping: a per-thread stack of the locks it holds.
#[cfg(debug_assertions)]
mod held {
    use std::cell::RefCell;
    use std::marker::PhantomData;
    use std::panic::Location;

    use super::Rank;

    #[derive(Clone, Copy)]
    pub(super) struct Entry {
        rank: Rank,
        lock: usize,
        taken_at: &'static Location<'static>,
    }

    thread_local! {
        /// In the order taken; guards may be dropped in any order, so removal searches.
        static HELD: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    impl Entry {
        /// Panics if this thread may not take `lock` (of `rank`) now.
        pub(super) fn check(rank: Rank, lock: usize, at: &'static Location<'static>) -> Entry {
            let entry = Entry {
                rank,
                lock,
                taken_at: at,
            };
            entry.check_against_held();
            entry
        }

        /// Records the lock as held, once it is.
        pub(super) fn push(self) -> Token {
            // `try_with`: a lock taken while this thread's locals are being torn down goes
            // unchecked rather than panicking.
            let _ = HELD.try_with(|held| held.borrow_mut().push(self));
            Token {
                lock: self.lock,
                _same_thread: PhantomData,
            }
        }

        fn check_against_held(&self) {
            // The panic comes after the borrow ends, so guards dropped while unwinding can
            // still remove themselves.
            let conflict = HELD
                .try_with(|held| {
                    held.borrow()
                        .iter()
                        .find(|held| !self.may_be_taken_holding(held))
                        .copied()
                })
                .ok()
                .flatten();
            if let Some(held) = conflict {
                let why = if held.lock == self.lock {
                    "it is already held by this thread"
                } else if held.rank == Rank::Leaf {
                    "no lock may be taken while a leaf lock is held"
                } else if held.rank == self.rank {
                    "two locks of one rank may never be held at once"
                } else {
                    "locks must be taken in rising rank order"
                };
                panic!(
                    "lock order violated: taking {} at {} while holding {} (taken at {}): \
                     {why}; see chatd::lock_rank::Rank",
                    self.rank, self.taken_at, held.rank, held.taken_at
                );
            }
        }

        fn may_be_taken_holding(&self, held: &Entry) -> bool {
            held.lock != self.lock && self.rank.may_follow(held.rank)
        }
    }

    /// A guard's place on the held stack. Not `Send`: it must leave the stack of the thread
    /// that pushed it. (`Sync` like the lock guards, hence std's guard as the marker.)
    pub(super) struct Token {
        lock: usize,
        _same_thread: PhantomData<std::sync::MutexGuard<'static, ()>>,
    }

    impl Token {
        /// Panics if taking this lock back after a condvar wait would break the order with
        /// the other locks this thread holds.
        pub(super) fn check_retake(&self, at: &'static Location<'static>) {
            let conflict = HELD
                .try_with(|held| {
                    let held = held.borrow();
                    let me = held.iter().rfind(|held| held.lock == self.lock)?;
                    held.iter()
                        .find(|other| other.lock != self.lock && !me.rank.may_follow(other.rank))
                        .map(|other| (me.rank, *other))
                })
                .ok()
                .flatten();
            if let Some((rank, held)) = conflict {
                panic!(
                    "lock order violated: waiting on a condvar at {at} takes {rank} back while \
                     holding {} (taken at {}); see chatd::lock_rank::Rank",
                    held.rank, held.taken_at
                );
            }
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            let _ = HELD.try_with(|held| {
                let mut held = held.borrow_mut();
                if let Some(i) = held.iter().rposition(|held| held.lock == self.lock) {
                    held.remove(i);
                }
            });
        }
    }

    /// This thread's held ranks, oldest first.
    #[cfg(test)]
    pub(super) fn ranks() -> Vec<Rank> {
        HELD.with(|held| held.borrow().iter().map(|held| held.rank).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// The message of the panic `f` raises, or `None` if it returns.
    #[cfg(debug_assertions)]
    fn panic_message(f: impl FnOnce()) -> Option<String> {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let payload = catch_unwind(AssertUnwindSafe(f)).err()?;
        Some(match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast::<&str>()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        })
    }

    #[cfg(debug_assertions)]
    fn held() -> Vec<Rank> {
        held::ranks()
    }

    #[cfg(not(debug_assertions))]
    fn held() -> Vec<Rank> {
        Vec::new()
    }

    /// Every rank in order, then a leaf, is allowed; dropping everything empties the stack.
    #[test]
    fn in_order_acquisition_passes() {
        let presence = RankedMutex::new(Rank::Presence, ());
        let client_ids = RankedMutex::new(Rank::ClientIds, ());
        let room = RankedMutex::new(Rank::RoomState, ());
        let user = RankedMutex::new(Rank::UserState, ());
        let closing = RankedMutex::new(Rank::OutboxClosing, ());
        let map = RankedRwLock::new(Rank::Leaf, 0);
        {
            let _p = presence.lock();
            let _c = client_ids.lock();
            let _r = room.lock();
            let _u = user.lock();
            let _o = closing.lock();
            let _m = map.read();
        }
        assert!(held().is_empty());
        // Skipping ranks is fine too.
        let _p = presence.lock();
        let _u = user.lock();
        *map.write() += 1;
        assert_eq!(*map.read(), 1);
    }

    /// Taking a lower rank while holding a higher one panics, naming both locks.
    #[cfg(debug_assertions)]
    #[test]
    fn out_of_order_panics() {
        let room = RankedMutex::new(Rank::RoomState, ());
        let presence = RankedMutex::new(Rank::Presence, ());
        let message = panic_message(|| {
            let _r = room.lock();
            let _p = presence.lock();
        })
        .expect("an out-of-order lock panics");
        assert!(message.contains("`User::presence` (rank 1)"), "{message}");
        assert!(message.contains("`Room::state` (rank 3)"), "{message}");
        assert!(message.contains("lock_rank.rs"), "{message}");
        // The room's guard left the stack as the panic unwound.
        assert!(held().is_empty());
        let _p = presence.lock();
        let _r = room.lock();
    }

    /// Two rooms' locks at once panic, whichever room is taken first.
    #[cfg(debug_assertions)]
    #[test]
    fn two_locks_of_one_rank_panic() {
        let general = RankedMutex::new(Rank::RoomState, ());
        let random = RankedMutex::new(Rank::RoomState, ());
        let message = panic_message(|| {
            let _g = general.lock();
            let _r = random.lock();
        })
        .expect("two rooms at once panic");
        assert!(message.contains("two locks of one rank"), "{message}");
    }

    /// Re-taking a lock the thread holds panics instead of deadlocking.
    #[cfg(debug_assertions)]
    #[test]
    fn retaking_a_held_lock_panics() {
        let map = RankedRwLock::new(Rank::Leaf, ());
        let message = panic_message(|| {
            let _a = map.read();
            let _b = map.read();
        })
        .expect("a second read of one lock panics");
        assert!(message.contains("already held"), "{message}");
    }

    /// Nothing, ranked or leaf, may be taken while a leaf is held.
    #[cfg(debug_assertions)]
    #[test]
    fn leaf_then_anything_panics() {
        let users = RankedRwLock::new(Rank::Leaf, ());
        let rooms = RankedRwLock::new(Rank::Leaf, ());
        let user = RankedMutex::new(Rank::UserState, ());
        let message = panic_message(|| {
            let _m = users.read();
            let _u = user.lock();
        })
        .expect("leaf then ranked panics");
        assert!(
            message.contains("taking `User::state` (rank 4)"),
            "{message}"
        );
        assert!(message.contains("while holding a leaf lock"), "{message}");
        let message = panic_message(|| {
            let _a = users.write();
            let _b = rooms.read();
        })
        .expect("leaf then leaf panics");
        assert!(message.contains("while a leaf lock is held"), "{message}");
    }

    /// A leaf may be taken under ranked locks, even the highest.
    #[test]
    fn ranked_then_leaf_passes() {
        let closing = RankedMutex::new(Rank::OutboxClosing, ());
        let registry = RankedMutex::new(Rank::Leaf, 0);
        let _o = closing.lock();
        *registry.lock() += 1;
        assert_eq!(*registry.lock(), 1);
    }

    /// Guards dropped in another order than taken remove their own entries.
    #[test]
    fn guards_dropped_out_of_order_keep_the_stack_right() {
        let presence = RankedMutex::new(Rank::Presence, ());
        let client_ids = RankedMutex::new(Rank::ClientIds, ());
        let room = RankedMutex::new(Rank::RoomState, ());
        let user = RankedMutex::new(Rank::UserState, ());
        let p = presence.lock();
        let c = client_ids.lock();
        let r = room.lock();
        drop(c);
        drop(p);
        if cfg!(debug_assertions) {
            assert_eq!(held(), [Rank::RoomState]);
        }
        let u = user.lock();
        drop(r);
        if cfg!(debug_assertions) {
            assert_eq!(held(), [Rank::UserState]);
        }
        drop(u);
        assert!(held().is_empty());
        let _p = presence.lock();
    }

    /// A condvar wait gives the mutex up and takes it back without disturbing the stack,
    /// whether it is woken or times out.
    #[test]
    fn condvar_wait_keeps_the_stack_right() {
        struct Ticket {
            outcome: RankedMutex<Option<u32>>,
            resolved: RankedCondvar,
        }
        let ticket = Arc::new(Ticket {
            outcome: RankedMutex::new(Rank::Leaf, None),
            resolved: RankedCondvar::new(),
        });
        let client_ids = RankedMutex::new(Rank::ClientIds, ());
        let _c = client_ids.lock();

        let mut outcome = ticket.outcome.lock();
        let timed_out = ticket
            .resolved
            .wait_until(&mut outcome, Instant::now() + Duration::from_millis(1));
        assert!(timed_out.timed_out());
        if cfg!(debug_assertions) {
            assert_eq!(held(), [Rank::ClientIds, Rank::Leaf]);
        }

        let resolver = {
            let ticket = Arc::clone(&ticket);
            thread::spawn(move || {
                *ticket.outcome.lock() = Some(7);
                ticket.resolved.notify_all();
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while outcome.is_none() {
            let waited = ticket.resolved.wait_until(&mut outcome, deadline);
            assert!(!waited.timed_out(), "the resolver never resolved");
        }
        assert_eq!(*outcome, Some(7));
        if cfg!(debug_assertions) {
            assert_eq!(held(), [Rank::ClientIds, Rank::Leaf]);
        }
        drop(outcome);
        resolver.join().unwrap();
        if cfg!(debug_assertions) {
            assert_eq!(held(), [Rank::ClientIds]);
        }
    }

    /// Waiting on a mutex that could not be taken back in order panics before sleeping.
    #[cfg(debug_assertions)]
    #[test]
    fn condvar_wait_out_of_order_panics() {
        let room = RankedMutex::new(Rank::RoomState, ());
        let user = RankedMutex::new(Rank::UserState, ());
        let condvar = RankedCondvar::new();
        let message = panic_message(|| {
            let mut r = room.lock();
            let _u = user.lock();
            condvar.wait(&mut r);
        })
        .expect("waiting on the room while holding a user's state panics");
        assert!(
            message.contains("takes `Room::state` (rank 3) back"),
            "{message}"
        );
        assert!(
            message.contains("holding `User::state` (rank 4)"),
            "{message}"
        );
        assert!(held().is_empty());
    }

    /// In release builds the wrappers are the bare locks.
    #[cfg(not(debug_assertions))]
    #[test]
    fn release_wrappers_cost_nothing() {
        use std::mem::size_of;
        assert_eq!(size_of::<RankedMutex<u64>>(), size_of::<Mutex<u64>>());
        assert_eq!(size_of::<RankedRwLock<u64>>(), size_of::<RwLock<u64>>());
        assert_eq!(
            size_of::<RankedMutexGuard<'_, u64>>(),
            size_of::<MutexGuard<'_, u64>>()
        );
    }

    /// A static lock and condvar, as the password-hashing slots use.
    #[test]
    fn statics_can_be_ranked() {
        static SLOTS: RankedMutex<usize> = RankedMutex::new(Rank::Leaf, 0);
        static FREED: RankedCondvar = RankedCondvar::new();
        *SLOTS.lock() += 1;
        FREED.notify_one();
        assert_eq!(*SLOTS.lock(), 1);
    }
}
