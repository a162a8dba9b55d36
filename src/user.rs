//! A user: one identity, many sessions.
//!
//! Identity, room memberships and `last_seen` belong to the person; sockets belong to their
//! devices. Keeping them apart is what lets one message reach a phone and a laptop alike, and
//! lets presence say "online" once per person rather than once per device.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use crate::lock_rank::{Rank, RankedMutex, RankedMutexGuard};
use chrono::{DateTime, Utc};

use crate::client_ids::ClientIds;
use crate::config::Config;
use crate::delivery::{CloseReason, Line};
use crate::keys::{DeviceKey, KeyChange, KeyRefusal, MAX_DEVICES_PER_USER};
use crate::room_name::is_dm_room;
use crate::session::Session;
use crate::store::{Store, Ticket, Write};

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
    /// Lock rank 0 (see `lock_rank::Rank`): the key directory's entry for this user, each
    /// device's public key by device name. A lock of its own because a key change is queued
    /// to the store while it is held (so the store sees a user's key changes in the order
    /// they were made), and that may wait for room in the store's queue: fan-out, which takes
    /// `state`, must never wait behind the disk for it. Rank 0 so that `state` can be read
    /// under it (whether the name has a password).
    device_keys: RankedMutex<BTreeMap<Arc<str>, DeviceKey>>,
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
            device_keys: RankedMutex::new(Rank::DeviceKeys, BTreeMap::new()),
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

    /// Whether the user has a session on this node.
    pub fn has_sessions(&self) -> bool {
        !self.state.lock().sessions.is_empty()
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

    /// Cluster mode: the same device logged in on another node, which replaces this node's
    /// session of it (`BYE replaced`), as a login here replaces one here.
    pub fn close_device(&self, device: &str, reason: CloseReason) {
        for session in &self.state.lock().sessions {
            if session.device.as_deref() == Some(device) {
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

    /// When the user's last session here ended (whatever is shown).
    pub fn last_seen_at(&self) -> Option<DateTime<Utc>> {
        self.state.lock().last_seen
    }

    /// Cluster mode: whether this node's sessions of the user are all gone and none came back
    /// since `generation` (the node then takes itself off the user's presence in Redis).
    pub fn left_this_node(&self, presence: &PresenceGuard<'_>, generation: u64) -> bool {
        presence.check(self);
        let state = self.state.lock();
        state.generation == generation && state.sessions.is_empty()
    }

    /// Cluster mode: shows the user as the cluster says (online on some node, or offline since
    /// `last_seen`). Returns whether that changed what this node showed.
    pub fn show_presence(
        &self,
        presence: &PresenceGuard<'_>,
        online: bool,
        last_seen: Option<DateTime<Utc>>,
    ) -> bool {
        presence.check(self);
        let mut state = self.state.lock();
        let changed = state.shown_online != online;
        state.shown_online = online;
        if !online && last_seen.is_some() {
            state.last_seen = last_seen;
        }
        changed
    }

    pub fn shares_receipts(&self) -> bool {
        self.state.lock().share_receipts
    }

    pub fn set_share_receipts(&self, share: bool) {
        self.state.lock().share_receipts = share;
    }

    /// The user's device keys, in device name order.
    pub fn device_keys(&self) -> Vec<DeviceKey> {
        self.device_keys.lock().values().cloned().collect()
    }

    /// Restores a device key the store kept, at start-up.
    pub fn restore_device_key(&self, key: DeviceKey) {
        self.device_keys.lock().insert(Arc::clone(&key.device), key);
    }

    /// Cluster mode: drops a key another node revoked.
    pub fn forget_device_key(&self, device: &str) {
        self.device_keys.lock().remove(device);
    }

    /// Cluster mode: the user's keys become the cluster's (read from Redis).
    pub fn replace_device_keys(&self, keys: Vec<DeviceKey>) {
        let mut devices = self.device_keys.lock();
        devices.clear();
        devices.extend(keys.into_iter().map(|key| (Arc::clone(&key.device), key)));
    }

    /// Sets `device`'s public key for `by`, one of this user's sessions, and queues its store
    /// write (with a ticket the caller waits on) under the same lock, so a user's key changes
    /// reach the store in the order they were made here even when two of their sessions
    /// change keys at once. An unchanged key writes nothing.
    pub fn publish_device_key(
        &self,
        by: &Session,
        device: &Arc<str>,
        key: Arc<str>,
        store: &dyn Store,
    ) -> Result<(KeyChange, Option<Ticket>), KeyRefusal> {
        let mut devices = self.device_keys.lock();
        self.check_key_owner(by)?;
        let change = match devices.get(device) {
            Some(old) if old.key == key => return Ok((KeyChange::Unchanged, None)),
            Some(_) => KeyChange::Replaced,
            None if devices.len() >= MAX_DEVICES_PER_USER => {
                return Err(KeyRefusal::TooManyDevices)
            }
            None => KeyChange::Added,
        };
        let entry = DeviceKey {
            device: Arc::clone(device),
            key,
            added: Utc::now(),
        };
        let ticket = Ticket::default();
        // Waits only for room in the store's queue (disk backpressure), never for a lock:
        // the store takes none of ours.
        store.write(
            Write::DeviceKey {
                user: Arc::clone(&self.name),
                device: Arc::clone(device),
                key: Arc::clone(&entry.key),
                added: entry.added,
            },
            Some(ticket.clone()),
        );
        devices.insert(Arc::clone(device), entry);
        Ok((change, Some(ticket)))
    }

    /// Removes `device`'s key for `by`, queueing the store write as `publish_device_key`
    /// does.
    pub fn revoke_device_key(
        &self,
        by: &Session,
        device: &str,
        store: &dyn Store,
    ) -> Result<Ticket, KeyRefusal> {
        let mut devices = self.device_keys.lock();
        self.check_key_owner(by)?;
        let (device, _) = devices
            .remove_entry(device)
            .ok_or(KeyRefusal::NoSuchDevice)?;
        Ok(self.write_revocation(device, store))
    }

    /// The name has just been given a password: withdraws every device key but `keep`'s.
    /// They were published while anyone could log in as the name, so none of them is known
    /// to be the owner's; the owner's devices publish again once they log in with the
    /// password. Returns the withdrawn devices with their store tickets.
    pub fn withdraw_device_keys(
        &self,
        keep: Option<&str>,
        store: &dyn Store,
    ) -> Vec<(Arc<str>, Ticket)> {
        let mut devices = self.device_keys.lock();
        let withdrawn: Vec<Arc<str>> = devices
            .keys()
            .filter(|device| Some(&***device) != keep)
            .cloned()
            .collect();
        withdrawn
            .into_iter()
            .map(|device| {
                devices.remove(&device);
                let ticket = self.write_revocation(Arc::clone(&device), store);
                (device, ticket)
            })
            .collect()
    }

    fn write_revocation(&self, device: Arc<str>, store: &dyn Store) -> Ticket {
        let ticket = Ticket::default();
        store.write(
            Write::RevokeDevice {
                user: Arc::clone(&self.name),
                device,
            },
            Some(ticket.clone()),
        );
        ticket
    }

    /// Only sessions entitled to the name change its keys: for a name with a password, those
    /// that gave it. Checked with the keys' lock held, so a key published by a session that
    /// had not proven the password either is refused or is withdrawn when the name gets one
    /// (`withdraw_device_keys` takes the same lock): it can never outlive the registration.
    fn check_key_owner(&self, by: &Session) -> Result<(), KeyRefusal> {
        if self.password_hash().is_some() && !by.proven() {
            return Err(KeyRefusal::NotOwner);
        }
        Ok(())
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
