//! A user: one identity, many sessions.
//!
//! Identity, room memberships and `last_seen` belong to the person; sockets belong to their
//! devices. Keeping them apart is what lets one message reach a phone and a laptop alike, and
//! lets presence say "online" once per person rather than once per device.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use crate::lock_rank::{Rank, RankedMutex, RankedMutexGuard};
use chrono::{DateTime, Utc};

use crate::client_ids::ClientIds;
use crate::config::Config;
use crate::delivery::{CloseReason, Line};
use crate::room_name::is_dm_room;
use crate::session::Session;

pub struct User {
    /// Lower-cased, validated; the user's key everywhere.
    pub name: Arc<str>,
    /// Lock rank 1 (see `lock_rank::Rank`). Serialises this user's presence transitions
    /// (shown online, shown offline) with their announcement, so `online` and `offline` can
    /// never reach anyone in the wrong order. Never held together with another user's.
    presence: RankedMutex<()>,
    /// Lock rank 2 (see `lock_rank::Rank`). Held across check-publish-record of a send with
    /// a client id, so two devices retrying the same id at once still publish it once.
    client_ids: RankedMutex<ClientIds>,
    /// Lock rank 4 (see `lock_rank::Rank`): sessions, rooms, presence as shown. Taken after
    /// a room's lock during fan-out; only outboxes (rank 5) are touched while it is held.
    state: RankedMutex<UserState>,
    /// May use the server-wide `BAN` and `KICK` (set from the store at each LOGIN). An
    /// atomic: read once per operator command, never together with other state.
    operator: AtomicBool,
}

struct UserState {
    sessions: Vec<Arc<Session>>,
    rooms: BTreeSet<Arc<str>>,
    /// What the user's peers were last told. Lags `!sessions.is_empty()` during the
    /// offline grace period, so a phone that reconnects through a blip never flaps.
    shown_online: bool,
    /// Bumped whenever a session arrives; a scheduled "offline" for an older generation is
    /// stale and is dropped.
    generation: u64,
    /// When the last session went.
    last_seen: Option<DateTime<Utc>>,
    /// Whether other members see this user's read receipts (`SET receipts on|off`).
    share_receipts: bool,
    /// The argon2id hash of the user's password; `None`: no account, anyone may use the name.
    password_hash: Option<Arc<str>>,
}

/// Proof that one user's presence lock (rank 1) is held. `add_session`, `remove_session` and
/// `mark_offline` require it, so "call with the presence lock held" is checked by the
/// compiler (and, for *whose* lock, by a debug assertion).
pub struct PresenceGuard<'a> {
    user: &'a User,
    _held: RankedMutexGuard<'a, ()>,
}

impl PresenceGuard<'_> {
    fn check(&self, user: &User) {
        debug_assert!(
            std::ptr::eq(self.user, user),
            "{}'s presence changed under {}'s presence lock",
            user.name,
            self.user.name
        );
    }
}

/// What adding a session changed.
pub struct Arrival {
    /// The user was shown offline (or never seen): announce them online.
    pub came_online: bool,
    /// The session that had the same device id, now removed and to be closed.
    pub replaced: Option<Arc<Session>>,
    /// The user had no session before this one (a replaced session does not count: the user
    /// was online through it).
    pub first_session: bool,
}

/// What removing a session changed.
pub enum Departure {
    /// The session was not there (it had been replaced).
    NotFound,
    /// Other sessions remain.
    StillOnline,
    /// That was the last session. Offline is announced when `mark_offline(generation)`
    /// succeeds, after the grace period.
    LastSession { generation: u64, at: DateTime<Utc> },
}

impl User {
    pub fn new(name: Arc<str>, config: &Config) -> User {
        User {
            name,
            presence: RankedMutex::new(Rank::Presence, ()),
            client_ids: RankedMutex::new(
                Rank::ClientIds,
                ClientIds::new(config.client_id_window, config.client_id_ttl),
            ),
            state: RankedMutex::new(
                Rank::UserState,
                UserState {
                    sessions: Vec::new(),
                    rooms: BTreeSet::new(),
                    shown_online: false,
                    generation: 0,
                    last_seen: None,
                    share_receipts: true,
                    password_hash: None,
                },
            ),
            operator: AtomicBool::new(false),
        }
    }

    pub fn is_operator(&self) -> bool {
        self.operator.load(Relaxed)
    }

    pub fn set_operator(&self, operator: bool) {
        self.operator.store(operator, Relaxed);
    }

    /// Takes the account as the store has it now (`chatd admin` may have changed it while
    /// the server ran): the password hash, and the operator role. Sessions already open are
    /// left alone.
    pub fn adopt_stored_account(&self, password_hash: Option<&str>, operator: bool) {
        self.set_operator(operator);
        let mut state = self.state.lock();
        if state.password_hash.as_deref() != password_hash {
            state.password_hash = password_hash.map(Arc::from);
        }
    }

    /// Closes every session of this user, with `reason` (a ban, a server-wide kick).
    pub fn close_sessions(&self, reason: CloseReason) -> usize {
        let state = self.state.lock();
        for session in &state.sessions {
            session.outbox.close(reason);
        }
        state.sessions.len()
    }

    /// Closes the sessions connected from `ip` (an address ban).
    pub fn close_sessions_from(&self, ip: std::net::IpAddr, reason: CloseReason) {
        for session in &self.state.lock().sessions {
            if session.outbox.peer_ip() == Some(ip) {
                session.outbox.close(reason);
            }
        }
    }

    /// Restores what the store kept of a user at start-up.
    pub fn restore(
        &self,
        last_seen: Option<DateTime<Utc>>,
        share_receipts: bool,
        password_hash: Option<String>,
    ) {
        let mut state = self.state.lock();
        state.last_seen = last_seen;
        state.share_receipts = share_receipts;
        state.password_hash = password_hash.map(Arc::from);
    }

    pub fn password_hash(&self) -> Option<Arc<str>> {
        self.state.lock().password_hash.clone()
    }

    /// Sets the password hash. With `only_if_none`, does nothing if one is set already (two
    /// first logins racing to register a name: the first wins). Returns whether it was set.
    ///
    /// Every session that has not proven the password is closed with `BYE registered`, under
    /// the same lock that attaches sessions, so none can slip in between: from now on the
    /// name belongs to whoever knows the password (a session opened on the name before it was
    /// registered could otherwise take the account over).
    /// `by` is the session that set it, if any: it has proven the password by setting it.
    pub fn set_password_hash(
        &self,
        hash: Arc<str>,
        only_if_none: bool,
        by: Option<&Session>,
    ) -> bool {
        let mut state = self.state.lock();
        if only_if_none && state.password_hash.is_some() {
            return false;
        }
        state.password_hash = Some(hash);
        if let Some(session) = by {
            session.mark_proven();
        }
        for session in state.sessions.iter().filter(|s| !s.proven()) {
            session.outbox.close(CloseReason::Registered);
        }
        true
    }

    /// Closes every session but one (after a password change that asked for it).
    pub fn close_other_sessions(&self, keep: u64, reason: CloseReason) {
        for session in &self.state.lock().sessions {
            if session.id != keep {
                session.outbox.close(reason);
            }
        }
    }

    /// Holds this user's presence steady while a session is added or removed and the change
    /// is announced. The functions that change presence take the guard as proof.
    #[cfg_attr(debug_assertions, track_caller)]
    pub fn lock_presence(&self) -> PresenceGuard<'_> {
        PresenceGuard {
            user: self,
            _held: self.presence.lock(),
        }
    }

    #[cfg_attr(debug_assertions, track_caller)]
    pub fn lock_client_ids(&self) -> RankedMutexGuard<'_, ClientIds> {
        self.client_ids.lock()
    }

    /// `None` while the user is shown online; otherwise when their last session ended.
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        let state = self.state.lock();
        if state.shown_online {
            None
        } else {
            state.last_seen.or_else(|| Some(Utc::now()))
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

    /// Attaches a session, first queueing `greeting` (its `OK LOGIN`) to it under the same
    /// lock that fan-out takes, so no event can fall between the OK and the attachment.
    /// `None` if the name got a password since the session's credentials were checked and the
    /// session did not prove it.
    pub fn add_session(
        &self,
        presence: &PresenceGuard<'_>,
        session: Arc<Session>,
        greeting: &Arc<Line>,
    ) -> Option<Arrival> {
        presence.check(self);
        let mut state = self.state.lock();
        if state.password_hash.is_some() && !session.proven() {
            return None;
        }
        session.deliver(greeting);
        let came_online = !state.shown_online;
        state.shown_online = true;
        state.generation += 1;
        let replaced = match &session.device {
            Some(device) => state
                .sessions
                .iter()
                .position(|s| s.device.as_ref() == Some(device))
                .map(|i| state.sessions.swap_remove(i)),
            None => None,
        };
        let first_session = state.sessions.is_empty() && replaced.is_none();
        state.sessions.push(session);
        Some(Arrival {
            came_online,
            replaced,
            first_session,
        })
    }

    pub fn remove_session(&self, presence: &PresenceGuard<'_>, session_id: u64) -> Departure {
        presence.check(self);
        let mut state = self.state.lock();
        let before = state.sessions.len();
        state.sessions.retain(|s| s.id != session_id);
        if state.sessions.len() == before {
            Departure::NotFound
        } else if !state.sessions.is_empty() {
            Departure::StillOnline
        } else {
            let at = Utc::now();
            state.last_seen = Some(at);
            Departure::LastSession {
                generation: state.generation,
                at,
            }
        }
    }

    /// Shows the user offline if nothing happened since `generation` (no session came back).
    /// Returns the `last_seen` to announce.
    pub fn mark_offline(
        &self,
        presence: &PresenceGuard<'_>,
        generation: u64,
    ) -> Option<DateTime<Utc>> {
        presence.check(self);
        let mut state = self.state.lock();
        if !state.shown_online || state.generation != generation || !state.sessions.is_empty() {
            return None;
        }
        state.shown_online = false;
        state.last_seen
    }

    pub fn shares_receipts(&self) -> bool {
        self.state.lock().share_receipts
    }

    pub fn set_share_receipts(&self, share: bool) {
        self.state.lock().share_receipts = share;
    }

    /// Rooms the user is in, not counting direct conversations.
    pub fn public_room_count(&self) -> usize {
        let state = self.state.lock();
        state.rooms.iter().filter(|room| !is_dm_room(room)).count()
    }

    /// Whether the user is in any of `rooms`.
    pub fn in_any_room(&self, rooms: &[Arc<str>]) -> bool {
        let state = self.state.lock();
        rooms.iter().any(|room| state.rooms.contains(room))
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
