//! A room: its members, its recent history, its sequence counter, and the one fan-out path.
//!
//! Posting a message has two steps, both under the room's lock:
//!
//! 1. [`Room::publish`] assigns the next seq and queues the message for the store, in seq
//!    order. The poster then waits (outside the lock) until the store says it is durable.
//! 2. `Room::settle` (run by whichever poster gets there first) takes the messages at the
//!    front of the queue that are durable, in seq order, and fans each out: the poster's
//!    `OK SEND`, then the `MSG` line (encoded once, shared) to every session of every member.
//!
//! Step 2 is the only loop over members and their sessions in chatd. Because it runs under
//! the lock and in seq order, every session sees a room's messages in seq order, and a member
//! who joins sees exactly the messages settled after their join. Queueing is a `try_send`
//! into each session's bounded queue, which never blocks and never touches a socket.
//!
//! A message whose write fails is never acknowledged nor fanned out: its poster gets
//! `ERR store-failed` and its seq stays unused, which SYNC reports as a `GAP`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::delivery::doorbell::WakeBatch;
use crate::delivery::{Line, Outbox};
use crate::message::Message;
use crate::protocol::{reply, ClientError, ErrorCode};
pub use crate::room_name::RoomKind;
use crate::session::Session;
use crate::stats::Stats;
use crate::store::{Store, Ticket, Write};
use crate::typing::Typing;
use crate::user::User;

pub struct Room {
    pub name: Arc<str>,
    pub kind: RoomKind,
    /// Identifies this room's history. A client's seq cursor is only meaningful within one
    /// epoch; a new epoch tells it the history it knew is gone.
    pub epoch: Arc<str>,
    /// Lock rank 3: taken after a user's presence and client-id locks, before users' state
    /// locks. Never two rooms at once.
    state: Mutex<RoomState>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
}

struct RoomState {
    members: BTreeMap<Arc<str>, Arc<User>>,
    /// The last `recent_capacity` settled messages, oldest first. Older ones are in the
    /// store (if it is durable).
    recent: VecDeque<Arc<Message>>,
    recent_capacity: usize,
    /// The last seq assigned.
    assigned: u64,
    /// The last seq settled: fanned out, or failed. Everything up to here is final; this is
    /// the `seq` clients see.
    settled: u64,
    /// Posted messages waiting for the store, in seq order.
    pending: VecDeque<Pending>,
    /// Each member's read position: they have read everything up to this seq.
    read: HashMap<Arc<str>, u64>,
    typing: Typing,
    access: Access,
}

/// Who may see and join a room.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The user who created the room; only they may change its access. `None` for direct rooms.
    pub owner: Option<Arc<str>>,
    /// Invite-only: non-members who are not invited cannot see it exists.
    pub private: bool,
    pub invited: BTreeSet<Arc<str>>,
}

/// A message waiting to become durable before it is acknowledged and fanned out.
struct Pending {
    message: Arc<Message>,
    /// The poster's `OK`, queued just before the message's `MSG`.
    ack: Arc<Line>,
    origin: Arc<Outbox>,
    ticket: Ticket,
}

/// A page of history, with the room's position at the time it was read.
pub struct HistoryPage {
    pub messages: Vec<Arc<Message>>,
    /// The room's latest seq when the page was read.
    pub seq: u64,
    pub epoch: Arc<str>,
}

/// A member as WHO reports them: online, or offline since `last_seen`.
pub struct MemberStatus {
    pub name: Arc<str>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// The size limits a JOIN must respect.
pub struct JoinLimits {
    pub max_members: usize,
    pub max_rooms: usize,
}

/// How a room starts: new, or as it was stored.
pub struct RoomSetup {
    pub name: Arc<str>,
    pub kind: RoomKind,
    pub epoch: Arc<str>,
    pub seq: u64,
    pub members: Vec<Arc<User>>,
    pub reads: Vec<(Arc<str>, u64)>,
    pub recent: Vec<Message>,
    pub recent_capacity: usize,
    pub access: Access,
}

impl RoomSetup {
    /// A room that did not exist before, with a fresh epoch.
    pub fn new(
        name: Arc<str>,
        kind: RoomKind,
        owner: Option<Arc<str>>,
        recent_capacity: usize,
    ) -> RoomSetup {
        RoomSetup {
            name,
            kind,
            epoch: Uuid::new_v4().simple().to_string()[..16].into(),
            seq: 0,
            members: Vec::new(),
            reads: Vec::new(),
            recent: Vec::new(),
            recent_capacity,
            access: Access {
                owner,
                ..Access::default()
            },
        }
    }
}

impl Room {
    pub fn new(setup: RoomSetup, store: Arc<dyn Store>, stats: Arc<Stats>) -> Room {
        let members = setup
            .members
            .into_iter()
            .map(|user| {
                user.add_room(&setup.name);
                (Arc::clone(&user.name), user)
            })
            .collect();
        let mut recent: VecDeque<Arc<Message>> = setup.recent.into_iter().map(Arc::new).collect();
        while recent.len() > setup.recent_capacity {
            recent.pop_front();
        }
        Room {
            name: setup.name,
            kind: setup.kind,
            epoch: setup.epoch,
            state: Mutex::new(RoomState {
                members,
                recent,
                recent_capacity: setup.recent_capacity,
                assigned: setup.seq,
                settled: setup.seq,
                pending: VecDeque::new(),
                read: setup.reads.into_iter().collect(),
                typing: Typing::default(),
                access: setup.access,
            }),
            store,
            stats,
        }
    }

    /// Whether `user` may learn that this room exists: a public room that is not
    /// invite-only, or one they are in or invited to. Everyone else gets `no-such-room`.
    pub fn visible_to(&self, user: &str) -> bool {
        let state = self.state.lock();
        may_see(self.kind, &state, user)
    }

    pub fn is_member(&self, user: &str) -> bool {
        self.state.lock().members.contains_key(user)
    }

    pub fn members(&self) -> Vec<Arc<User>> {
        self.state.lock().members.values().cloned().collect()
    }

    /// `(seq, member count, user's read position)` right now.
    pub fn summary(&self, user: &str) -> (u64, usize, u64) {
        let state = self.state.lock();
        let read = state.read.get(user).copied().unwrap_or(0);
        (state.settled, state.members.len(), read)
    }

    /// Adds the session's user (if not yet a member), tells the other members' sessions and
    /// the user's other devices with `JOINED`, and queues `OK JOIN` to the joining session,
    /// all under the lock so the OK precedes every message settled after the join. An
    /// invite-only room admits only the invited (checked here, under the lock, so it cannot
    /// change between the check and the join).
    pub fn join(
        &self,
        session: &Session,
        limits: &JoinLimits,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !may_see(self.kind, &state, &user.name) {
            return Err(no_such_room(&self.name));
        }
        let seq = state.settled;
        if !state.members.contains_key(&user.name) {
            if state.members.len() >= limits.max_members {
                return Err(ClientError::new(
                    ErrorCode::RoomFull,
                    format!(
                        "{} has its maximum of {} members",
                        self.name, limits.max_members
                    ),
                ));
            }
            if user.public_room_count() >= limits.max_rooms {
                return Err(ClientError::new(
                    ErrorCode::TooManyRooms,
                    format!(
                        "you are in the maximum of {} rooms; LEAVE one first",
                        limits.max_rooms
                    ),
                ));
            }
            self.introduce(&state, user);
            self.add_member(&mut state, user);
            let joined = Line::start(reply::joined(&self.name, &user.name), &self.name, seq);
            for member in state.members.values() {
                member.deliver_except(&joined, Some(session.id));
            }
        }
        let members = state.members.len();
        let ok = reply::ok_join(label, &self.name, seq, &self.epoch, members);
        session.deliver(&Line::start(ok, &self.name, seq));
        Ok(())
    }

    /// Owner only: make the room invite-only, or public again.
    pub fn set_private(
        &self,
        session: &Session,
        private: bool,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut state = self.state.lock();
        self.check_owner(&state, &session.user.name)?;
        state.access.private = private;
        let room = Arc::clone(&self.name);
        self.store.write(Write::RoomAccess { room, private }, None);
        session.deliver(&Line::new(reply::ok_private(label, &self.name, private)));
        Ok(())
    }

    /// Owner only: `invitee` may now join; their sessions are told with `INVITED`.
    pub fn invite(
        &self,
        session: &Session,
        invitee: &User,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut state = self.state.lock();
        self.check_owner(&state, &session.user.name)?;
        if state.access.invited.insert(Arc::clone(&invitee.name)) {
            let (room, user) = (Arc::clone(&self.name), Arc::clone(&invitee.name));
            self.store.write(Write::Invite { room, user }, None);
        }
        invitee.deliver(&Line::new(reply::invited(&self.name, &session.user.name)));
        session.deliver(&Line::new(reply::ok_invite(
            label,
            &self.name,
            &invitee.name,
        )));
        Ok(())
    }

    /// Owner only: removes `target`'s membership and invitation. They get `KICKED`, the
    /// remaining members `LEFT`.
    pub fn kick(
        &self,
        session: &Session,
        target: &User,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut state = self.state.lock();
        self.check_owner(&state, &session.user.name)?;
        if target.name == session.user.name {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                "the owner cannot kick themselves; LEAVE instead",
            ));
        }
        let was_invited = state.access.invited.remove(&target.name);
        let was_member = state.members.contains_key(&target.name);
        if !was_invited && !was_member {
            return Err(ClientError::new(
                ErrorCode::NotMember,
                format!(
                    "{} is neither a member of nor invited to {}",
                    target.name, self.name
                ),
            ));
        }
        let (room, user) = (Arc::clone(&self.name), Arc::clone(&target.name));
        self.store.write(Write::Uninvite { room, user }, None);
        if was_member {
            self.remove_member(&mut state, target);
            let left = Line::new(reply::left(&self.name, &target.name));
            for member in state.members.values() {
                member.deliver(&left);
            }
        }
        target.deliver(&Line::new(reply::kicked(&self.name, &session.user.name)));
        session.deliver(&Line::new(reply::ok_kick(label, &self.name, &target.name)));
        Ok(())
    }

    /// Owner-only actions on a room: its owner may; a member who is not gets `not-permitted`;
    /// anyone who cannot see the room gets `no-such-room`.
    fn check_owner(&self, state: &RoomState, user: &str) -> Result<(), ClientError> {
        if state.access.owner.as_deref() == Some(user) {
            Ok(())
        } else if may_see(self.kind, state, user) {
            Err(ClientError::new(
                ErrorCode::NotPermitted,
                format!("only the owner of {} can do that", self.name),
            ))
        } else {
            Err(no_such_room(&self.name))
        }
    }

    /// Presence goes to the people who share a room with a user. A member who shared none
    /// with a joiner before learns now that the joiner is online, just before `JOINED`.
    fn introduce(&self, state: &RoomState, joiner: &User) {
        if joiner.last_seen().is_some() {
            return; // not shown online
        }
        let joiner_rooms = joiner.rooms();
        let online = Line::ephemeral(reply::presence_online(&joiner.name));
        for member in state.members.values() {
            if !member.in_any_room(&joiner_rooms) {
                member.deliver(&online);
            }
        }
    }

    /// Makes `users` members without announcing it: a direct room's two members are there
    /// from its creation.
    pub fn ensure_members(&self, users: &[&Arc<User>]) {
        let mut state = self.state.lock();
        for user in users {
            if !state.members.contains_key(&user.name) {
                self.add_member(&mut state, user);
            }
        }
    }

    fn remove_member(&self, state: &mut RoomState, user: &User) {
        self.stop_typing_locked(state, &user.name);
        state.members.remove(&user.name);
        state.read.remove(&user.name);
        user.remove_room(&self.name);
        let (room, name) = (Arc::clone(&self.name), Arc::clone(&user.name));
        self.store.write(Write::Leave { room, user: name }, None);
    }

    fn add_member(&self, state: &mut RoomState, user: &Arc<User>) {
        state
            .members
            .insert(Arc::clone(&user.name), Arc::clone(user));
        user.add_room(&self.name);
        let (room, user) = (Arc::clone(&self.name), Arc::clone(&user.name));
        self.store.write(Write::Join { room, user }, None);
    }

    /// Removes the session's user; the remaining members and the user's other devices get
    /// `LEFT`, the leaving session gets `OK LEAVE`.
    pub fn leave(&self, session: &Session, label: Option<&str>) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !state.members.contains_key(&user.name) {
            return Err(not_member(&self.name));
        }
        self.remove_member(&mut state, user);
        let left = Line::new(reply::left(&self.name, &user.name));
        for member in state.members.values() {
            member.deliver(&left);
        }
        user.deliver_except(&left, Some(session.id));
        session.deliver(&Line::new(reply::ok_leave(label, &self.name)));
        Ok(())
    }

    /// Posts a message and returns once it is settled: acknowledged to the poster (`ack` is
    /// its OK line, built from the new message) and fanned out to every session of every
    /// member, the poster's own devices included. `client_id` is stored with the message.
    pub fn publish(
        &self,
        session: &Session,
        body: &str,
        client_id: Option<&str>,
        ack: impl FnOnce(&Message) -> String,
    ) -> Result<Arc<Message>, ClientError> {
        let ticket = Ticket::new();
        let message = {
            // Declared before the lock, so dropped after it: writers woken by this fan-out
            // are unparked once the lock is released.
            let _wakes = WakeBatch::start();
            let mut state = self.state.lock();
            if !state.members.contains_key(&session.user.name) {
                return Err(not_member(&self.name));
            }
            self.stop_typing_locked(&mut state, &session.user.name);
            state.assigned += 1;
            let message = Arc::new(Message {
                id: Uuid::now_v7(),
                room: Arc::clone(&self.name),
                seq: state.assigned,
                sender: Arc::clone(&session.user.name),
                body: body.into(),
                sent_at: Utc::now(),
            });
            let client_id = client_id.map(|cid| (Arc::clone(&session.user.name), Box::from(cid)));
            // Queued under the lock so the store receives each room's messages in seq order
            // and a crash can never keep seq n + 1 without seq n.
            let write = Write::Message {
                message: Arc::clone(&message),
                client_id,
            };
            self.store.write(write, Some(ticket.clone()));
            state.pending.push_back(Pending {
                ack: Line::new(ack(&message)),
                message: Arc::clone(&message),
                origin: Arc::clone(&session.outbox),
                ticket: ticket.clone(),
            });
            self.settle(&mut state);
            message
        };
        if let Err(e) = ticket.wait() {
            let _wakes = WakeBatch::start();
            self.settle(&mut self.state.lock());
            return Err(ClientError::new(
                ErrorCode::StoreFailed,
                format!("the message could not be stored, so it was not sent ({e})"),
            ));
        }
        // A store may resolve tickets inline (then the settle above already ran) or later on
        // its own thread, so the poster always settles once its ticket has: otherwise a
        // resolved message could wait for the room's next post. Nothing ready is a no-op.
        let _wakes = WakeBatch::start();
        self.settle(&mut self.state.lock());
        Ok(message)
    }

    /// Fans out, in seq order, every message at the front of the queue whose store write has
    /// finished. The only loop over recipients in chatd.
    fn settle(&self, state: &mut RoomState) {
        let mut messages = 0;
        let mut deliveries = 0;
        while let Some(outcome) = state.pending.front().and_then(|p| p.ticket.outcome()) {
            let Some(post) = state.pending.pop_front() else {
                break;
            };
            state.settled = post.message.seq;
            if outcome.is_err() {
                continue;
            }
            post.origin.deliver(&post.ack);
            let message = post.message;
            let line = Line::at(reply::msg(None, &message), &self.name, message.seq);
            for member in state.members.values() {
                deliveries += member.deliver(&line);
            }
            // Whoever posts has read the room up to their own message. Recorded silently: a
            // READ event per message would double the fan-out.
            state.read.insert(Arc::clone(&message.sender), message.seq);
            if state.recent.len() == state.recent_capacity {
                state.recent.pop_front();
            }
            if state.recent_capacity > 0 {
                state.recent.push_back(message);
            }
            messages += 1;
        }
        if messages > 0 {
            Stats::add(&self.stats.messages, messages);
            Stats::add(&self.stats.deliveries, deliveries);
        }
    }

    /// Replays to the session every message after `after`, as one reply queued under the
    /// room's lock: every message settled before the replay is in it, every message settled
    /// after it is queued live behind it, so replay and live stream meet with no gap and in
    /// seq order. An `epoch` other than the room's restarts the replay from 0 (after an
    /// `EPOCH` line); messages that cannot be replayed are announced with `GAP`, never
    /// skipped silently. At most `limit` messages: then `OK SYNC` says `more`.
    ///
    /// Messages older than the recent log are read from the store first, outside the lock;
    /// if the log moved on meanwhile, the read is repeated (a few times, then under the lock).
    pub fn sync(
        &self,
        session: &Session,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let reset = epoch.is_some_and(|epoch| epoch != &*self.epoch);
        let after = if reset { 0 } else { after };
        const ATTEMPTS_OUTSIDE_LOCK: usize = 3;
        for attempt in 0..=ATTEMPTS_OUTSIDE_LOCK {
            let (held_from, settled) = {
                let state = self.state.lock();
                (oldest_held(&state), state.settled)
            };
            let stored_until = held_from.min(settled + 1);
            let read_stored = |bound: u64| {
                if after + 1 < bound {
                    self.store
                        .messages(&self.name, after, bound, limit)
                        .map_err(store_error)
                } else {
                    Ok(Vec::new())
                }
            };
            let stored = if attempt < ATTEMPTS_OUTSIDE_LOCK {
                read_stored(stored_until)?
            } else {
                Vec::new()
            };
            let state = self.state.lock();
            let stored = if attempt == ATTEMPTS_OUTSIDE_LOCK {
                read_stored(oldest_held(&state).min(state.settled + 1))?
            } else if oldest_held(&state) != held_from && stored.len() < limit {
                continue; // the recent log moved on while we read: what we read may end short
            } else {
                stored
            };
            let out = self.replay(&state, after, reset, &stored, limit, label);
            session.deliver(&out);
            return Ok(());
        }
        unreachable!("the last attempt always replies")
    }

    /// Builds the SYNC reply from stored messages and the recent log; see [`Room::sync`].
    fn replay(
        &self,
        state: &RoomState,
        after: u64,
        reset: bool,
        stored: &[Message],
        limit: usize,
        label: Option<&str>,
    ) -> Arc<Line> {
        let mut out = String::new();
        if reset {
            out.push_str(&reply::epoch_reset(label, &self.name, &self.epoch));
        }
        let mut expected = after + 1;
        let mut more = false;
        let held = state
            .recent
            .iter()
            .map(|m| &**m)
            .filter(|m| m.seq > stored.last().map_or(after, |s| s.seq));
        let replayable = stored.iter().chain(held).filter(|m| m.seq > after);
        for (count, message) in replayable.enumerate() {
            if message.seq > state.settled {
                break;
            }
            if count == limit {
                more = true;
                break;
            }
            if message.seq > expected {
                out.push_str(&reply::gap(label, &self.name, expected, message.seq - 1));
            }
            out.push_str(&reply::msg(label, message));
            expected = message.seq + 1;
        }
        if !more && expected <= state.settled {
            out.push_str(&reply::gap(label, &self.name, expected, state.settled));
            expected = state.settled + 1;
        }
        let settled = state.settled;
        out.push_str(&reply::ok_sync(
            label,
            &self.name,
            settled,
            &self.epoch,
            more,
        ));
        let cursor = if more { expected - 1 } else { settled };
        Line::at(out, &self.name, cursor)
    }

    /// The session's user is typing (or stopped). Returns when `reconcile_typing` is due.
    pub fn typing(
        &self,
        session: &Session,
        typing: bool,
        ttl: Duration,
        label: Option<&str>,
    ) -> Result<Option<Instant>, ClientError> {
        let user = &session.user.name;
        let mut state = self.state.lock();
        if !state.members.contains_key(user) {
            return Err(not_member(&self.name));
        }
        let outcome = state.typing.update(user, typing, Instant::now(), ttl);
        if let Some(typing) = outcome.forward {
            self.tell_typing(&state, user, typing);
        }
        session.deliver(&Line::new(reply::ok_typing(label, &self.name, typing)));
        Ok(outcome.recheck_at)
    }

    /// Expires a typist or sends a held-back event; returns when to look again.
    pub fn reconcile_typing(&self, user: &str) -> Option<Instant> {
        let mut state = self.state.lock();
        let outcome = state.typing.reconcile(user, Instant::now());
        if let Some(typing) = outcome.forward {
            self.tell_typing(&state, user, typing);
        }
        outcome.recheck_at
    }

    /// The user lost their last session: if shown typing, show them stopped now.
    pub fn stop_typing(&self, user: &str) {
        let mut state = self.state.lock();
        self.stop_typing_locked(&mut state, user);
    }

    fn stop_typing_locked(&self, state: &mut RoomState, user: &str) {
        if state.typing.clear(user) {
            self.tell_typing(state, user, false);
        }
    }

    /// Typing events go to the other members only, and may be shed under backpressure.
    fn tell_typing(&self, state: &RoomState, user: &str, typing: bool) {
        let line = Line::ephemeral(reply::typing(&self.name, user, typing));
        for member in state.members.values() {
            if &*member.name != user {
                member.deliver(&line);
            }
        }
    }

    /// Records that the session's user has read up to `seq` (never backwards, never past the
    /// latest message). A move is told to the user's other sessions and, if the user shares
    /// receipts, to the other members; queued under the lock, so a receipt never arrives
    /// before the message it refers to. The reply carries the stored position.
    pub fn read(
        &self,
        session: &Session,
        seq: u64,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !state.members.contains_key(&user.name) {
            return Err(not_member(&self.name));
        }
        let seq = seq.min(state.settled);
        let position = state.read.entry(Arc::clone(&user.name)).or_insert(0);
        let moved = seq > *position;
        if moved {
            *position = seq;
        }
        let position = *position;
        if moved {
            let (room, name) = (Arc::clone(&self.name), Arc::clone(&user.name));
            let write = Write::Read {
                room,
                user: name,
                seq: position,
            };
            self.store.write(write, None);
            let line = Line::new(reply::read(&self.name, &user.name, position));
            user.deliver_except(&line, Some(session.id));
            if user.shares_receipts() {
                for member in state.members.values() {
                    if member.name != user.name {
                        member.deliver(&line);
                    }
                }
            }
        }
        session.deliver(&Line::new(reply::ok_read(label, &self.name, position)));
        Ok(())
    }

    /// Members with their presence, sorted by name.
    pub fn who(&self) -> Vec<MemberStatus> {
        let state = self.state.lock();
        state
            .members
            .values()
            .map(|user| MemberStatus {
                name: Arc::clone(&user.name),
                last_seen: user.last_seen(),
            })
            .collect()
    }

    /// Up to `limit` of the most recent messages with seq < `before`, oldest first: from the
    /// recent log, and from the store for what is older than the log.
    pub fn history(&self, limit: usize, before: Option<u64>) -> Result<HistoryPage, ClientError> {
        let (mut page, seq, oldest_held) = {
            let state = self.state.lock();
            let before = before.unwrap_or(u64::MAX);
            let page: Vec<Arc<Message>> = state
                .recent
                .iter()
                .rev()
                .filter(|m| m.seq < before)
                .take(limit)
                .cloned()
                .collect();
            (page, state.settled, oldest_held(&state))
        };
        page.reverse();
        let wanted = limit - page.len();
        let bound = page
            .first()
            .map_or(before.unwrap_or(u64::MAX).min(oldest_held), |m| m.seq);
        if wanted > 0 && bound > 1 {
            // Everything below the recent log is settled and in the store: read the newest
            // `wanted` of them. The store returns oldest first from `after`, so start there.
            let after = bound.saturating_sub(wanted as u64 + 1);
            let older = self
                .store
                .messages(&self.name, after, bound, wanted)
                .map_err(store_error)?;
            let mut combined: Vec<Arc<Message>> = older.into_iter().map(Arc::new).collect();
            combined.extend(page);
            page = combined;
        }
        Ok(HistoryPage {
            messages: page,
            seq,
            epoch: Arc::clone(&self.epoch),
        })
    }
}

fn may_see(kind: RoomKind, state: &RoomState, user: &str) -> bool {
    let public = kind == RoomKind::Public && !state.access.private;
    public
        || state.members.contains_key(user)
        || state.access.invited.contains(user)
        || state.access.owner.as_deref() == Some(user)
}

fn no_such_room(room: &str) -> ClientError {
    ClientError::new(ErrorCode::NoSuchRoom, format!("there is no room {room}"))
}

/// The seq of the oldest message in the recent log (one past the last settled if empty).
fn oldest_held(state: &RoomState) -> u64 {
    state.recent.front().map_or(state.settled + 1, |m| m.seq)
}

fn not_member(room: &str) -> ClientError {
    ClientError::new(
        ErrorCode::NotMember,
        format!("you are not a member of {room}; JOIN it first"),
    )
}

fn store_error(e: crate::store::StoreError) -> ClientError {
    ClientError::new(
        ErrorCode::StoreFailed,
        format!("reading history failed ({e})"),
    )
}
