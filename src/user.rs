//! A user: one identity, many sessions.
//!
//! Identity, room memberships and `last_seen` belong to the person; sockets belong to their
//! devices. Keeping them apart is what lets one message reach a phone and a laptop alike, and
//! lets presence say "online" once per person rather than once per device.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};

use crate::session::Session;
use crate::transport::outbox::Line;

pub struct User {
    /// Lower-cased, validated; the user's key everywhere.
    pub name: Arc<str>,
    /// Lock rank 1. Serialises this user's presence transitions (first session in, last
    /// session out, and the broadcast that follows), so `online` and `offline` can never
    /// reach anyone in the wrong order. Held while taking rooms' and other users' state
    /// locks (ranks 2-4); never held together with another user's presence lock.
    presence: Mutex<()>,
    /// Lock rank 3: sessions, rooms and last_seen. Taken after a room's lock during fan-out;
    /// only outboxes (rank 4) are touched while it is held.
    state: Mutex<UserState>,
}

struct UserState {
    sessions: Vec<Arc<Session>>,
    rooms: BTreeSet<Arc<str>>,
    /// When the last session went; `None` while online (and before the first login).
    last_seen: Option<DateTime<Utc>>,
}

/// What adding a session changed.
pub struct Arrival {
    /// This was the user's first session: they just came online.
    pub came_online: bool,
    /// The session that had the same device id, now removed and to be closed.
    pub replaced: Option<Arc<Session>>,
}

impl User {
    pub fn new(name: Arc<str>) -> User {
        User {
            name,
            presence: Mutex::new(()),
            state: Mutex::new(UserState {
                sessions: Vec::new(),
                rooms: BTreeSet::new(),
                last_seen: None,
            }),
        }
    }

    /// Holds this user's presence steady while a session is added or removed and the change
    /// is announced.
    pub fn lock_presence(&self) -> MutexGuard<'_, ()> {
        self.presence.lock()
    }

    pub fn is_session(&self, session_id: u64) -> bool {
        self.state
            .lock()
            .sessions
            .iter()
            .any(|s| s.id == session_id)
    }

    pub fn online(&self) -> bool {
        !self.state.lock().sessions.is_empty()
    }

    /// `None` while online; otherwise when the last session ended.
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        let state = self.state.lock();
        if state.sessions.is_empty() {
            state.last_seen
        } else {
            None
        }
    }

    /// Fan-out to every device of this user. Called by `Room` with the room locked.
    /// Returns how many sessions the line was queued for.
    pub fn deliver(&self, line: &Arc<Line>) -> u64 {
        self.deliver_except(line, None)
    }

    /// Like [`User::deliver`], skipping one session (the one that caused the event).
    pub fn deliver_except(&self, line: &Arc<Line>, skip: Option<u64>) -> u64 {
        let state = self.state.lock();
        let mut queued = 0;
        for session in &state.sessions {
            if Some(session.id) != skip && session.deliver(line) {
                queued += 1;
            }
        }
        queued
    }

    pub fn add_session(&self, session: Arc<Session>) -> Arrival {
        let mut state = self.state.lock();
        let came_online = state.sessions.is_empty();
        let replaced = match &session.device {
            Some(device) => state
                .sessions
                .iter()
                .position(|s| s.device.as_ref() == Some(device))
                .map(|i| state.sessions.swap_remove(i)),
            None => None,
        };
        state.sessions.push(session);
        Arrival {
            came_online,
            replaced,
        }
    }

    /// Removes a session (no-op if it was already replaced). Returns `Some(last_seen)` if it
    /// was the last one, i.e. the user just went offline.
    pub fn remove_session(&self, session_id: u64) -> Option<DateTime<Utc>> {
        let mut state = self.state.lock();
        let before = state.sessions.len();
        state.sessions.retain(|s| s.id != session_id);
        if state.sessions.len() == before || !state.sessions.is_empty() {
            return None;
        }
        let now = Utc::now();
        state.last_seen = Some(now);
        Some(now)
    }

    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.state.lock().rooms.iter().cloned().collect()
    }

    /// Membership is recorded on both sides; `Room` calls these with its own lock held.
    pub(crate) fn add_room(&self, room: &Arc<str>) {
        self.state.lock().rooms.insert(Arc::clone(room));
    }

    pub(crate) fn remove_room(&self, room: &str) {
        self.state.lock().rooms.remove(room);
    }
}
