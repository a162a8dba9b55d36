//! A room: its members, its recent history, its sequence counter, and the one fan-out path.
//!
//! [`Room::publish`] is the only code in chatd that loops over members and their sessions.
//! It runs entirely under the room's lock: assigning the seq, recording the message and
//! queueing it for every session happen as one step, so every session sees a room's messages
//! in seq order and a member who joins sees exactly the messages after their join. Queueing
//! is a `try_send` into each session's bounded queue, which never blocks and never touches a
//! socket, so the lock is held for microseconds even when a recipient is stalled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::message::Message;
use crate::protocol::{reply, ClientError, ErrorCode};
use crate::session::Session;
use crate::stats::Stats;
use crate::transport::outbox::Line;
use crate::typing::Typing;
use crate::user::User;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// Anyone may join, list its members and see that it exists.
    Public,
    /// A direct conversation: exactly two members, invisible to everyone else.
    Direct,
}

pub struct Room {
    pub name: Arc<str>,
    pub kind: RoomKind,
    /// Identifies this room's history. A client's seq cursor is only meaningful within one
    /// epoch; a new epoch tells it the history it knew is gone.
    pub epoch: Arc<str>,
    /// Lock rank 3: taken after a user's presence and client-id locks, before users' state
    /// locks. Never two rooms at once.
    state: Mutex<RoomState>,
    stats: Arc<Stats>,
}

struct RoomState {
    members: BTreeMap<Arc<str>, Arc<User>>,
    /// The last `recent_capacity` messages, oldest first.
    recent: VecDeque<Arc<Message>>,
    recent_capacity: usize,
    /// The seq of the last message published (0: none yet).
    seq: u64,
    /// Each member's read position: they have read everything up to this seq.
    read: HashMap<Arc<str>, u64>,
    typing: Typing,
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

impl Room {
    pub fn new(name: Arc<str>, kind: RoomKind, recent_capacity: usize, stats: Arc<Stats>) -> Room {
        Room {
            name,
            kind,
            epoch: Uuid::new_v4().simple().to_string()[..16].into(),
            state: Mutex::new(RoomState {
                members: BTreeMap::new(),
                recent: VecDeque::new(),
                recent_capacity,
                seq: 0,
                read: HashMap::new(),
                typing: Typing::default(),
            }),
            stats,
        }
    }

    /// Whether `user` may learn that this room exists.
    pub fn visible_to(&self, user: &str) -> bool {
        self.kind == RoomKind::Public || self.is_member(user)
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
        (state.seq, state.members.len(), read)
    }

    /// Adds the session's user (if not yet a member), tells the other members' sessions and
    /// the user's other devices with `JOINED`, and queues `OK JOIN` to the joining session,
    /// all under the lock so the OK precedes every message published after the join.
    pub fn join(&self, session: &Session, label: Option<&str>) {
        let user = &session.user;
        let mut state = self.state.lock();
        if !state.members.contains_key(&user.name) {
            state
                .members
                .insert(Arc::clone(&user.name), Arc::clone(user));
            user.add_room(&self.name);
            let joined = Line::at(reply::joined(&self.name, &user.name), &self.name, state.seq);
            for member in state.members.values() {
                member.deliver_except(&joined, Some(session.id));
            }
        }
        let ok = reply::ok_join(
            label,
            &self.name,
            state.seq,
            &self.epoch,
            state.members.len(),
        );
        session.deliver(&Line::at(ok, &self.name, state.seq));
    }

    /// Makes `users` members without announcing it: a direct room's two members are there
    /// from its creation.
    pub fn ensure_members(&self, users: &[&Arc<User>]) {
        let mut state = self.state.lock();
        for user in users {
            if !state.members.contains_key(&user.name) {
                state
                    .members
                    .insert(Arc::clone(&user.name), Arc::clone(user));
                user.add_room(&self.name);
            }
        }
    }

    /// Removes the session's user; the remaining members and the user's other devices get
    /// `LEFT`, the leaving session gets `OK LEAVE`.
    pub fn leave(&self, session: &Session, label: Option<&str>) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !state.members.contains_key(&user.name) {
            return Err(not_member(&self.name));
        }
        self.stop_typing_locked(&mut state, &user.name);
        state.members.remove(&user.name);
        state.read.remove(&user.name);
        user.remove_room(&self.name);
        let left = Line::new(reply::left(&self.name, &user.name));
        for member in state.members.values() {
            member.deliver(&left);
        }
        user.deliver_except(&left, Some(session.id));
        session.deliver(&Line::new(reply::ok_leave(label, &self.name)));
        Ok(())
    }

    /// Posts a message: assigns the next seq, queues `ack` (the sender's OK line, built from
    /// the new message) to the sending session, then the encoded `MSG` line, encoded once and
    /// shared, to every session of every member, the sender's own devices included.
    pub fn publish(
        &self,
        session: &Session,
        body: &str,
        ack: impl FnOnce(&Message) -> String,
    ) -> Result<Arc<Message>, ClientError> {
        let mut state = self.state.lock();
        if !state.members.contains_key(&session.user.name) {
            return Err(not_member(&self.name));
        }
        self.stop_typing_locked(&mut state, &session.user.name);
        state.seq += 1;
        let message = Arc::new(Message {
            id: Uuid::now_v7(),
            room: Arc::clone(&self.name),
            seq: state.seq,
            sender: Arc::clone(&session.user.name),
            body: body.into(),
            sent_at: Utc::now(),
        });
        session.deliver(&Line::new(ack(&message)));
        let line = Line::at(reply::msg(None, &message), &self.name, message.seq);
        let mut deliveries = 0;
        for member in state.members.values() {
            deliveries += member.deliver(&line);
        }
        // Whoever posts has read the room up to their own message. Recorded silently: a READ
        // event per message would double the fan-out.
        state
            .read
            .insert(Arc::clone(&session.user.name), message.seq);
        if state.recent.len() == state.recent_capacity {
            state.recent.pop_front();
        }
        if state.recent_capacity > 0 {
            state.recent.push_back(Arc::clone(&message));
        }
        drop(state);
        Stats::add(&self.stats.messages, 1);
        Stats::add(&self.stats.deliveries, deliveries);
        Ok(message)
    }

    /// Replays to the session every message after `after`, as one reply queued under the
    /// room's lock: every message published before the replay is in it, every message after
    /// it is queued live behind it, so replay and live stream meet with no gap and in seq
    /// order. An `epoch` other than the room's restarts the replay from 0 (after an `EPOCH`
    /// line); messages no longer held are announced with `GAP` instead of skipped silently.
    /// At most `limit` messages: then the `OK SYNC` line says `more` and the client pages.
    pub fn sync(
        &self,
        session: &Session,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        label: Option<&str>,
    ) {
        let state = self.state.lock();
        let mut out = String::new();
        let mut after = after;
        if epoch.is_some_and(|epoch| epoch != &*self.epoch) {
            out.push_str(&reply::epoch_reset(label, &self.name, &self.epoch));
            after = 0;
        }
        let oldest_held = state.recent.front().map_or(state.seq + 1, |m| m.seq);
        if after + 1 < oldest_held && after < state.seq {
            let gap_end = (oldest_held - 1).min(state.seq);
            out.push_str(&reply::gap(label, &self.name, after + 1, gap_end));
        }
        let mut replayed = after.min(state.seq);
        let mut more = false;
        for (count, message) in state.recent.iter().filter(|m| m.seq > after).enumerate() {
            if count == limit {
                more = true;
                break;
            }
            out.push_str(&reply::msg(label, message));
            replayed = message.seq;
        }
        let (seq, epoch) = (state.seq, &self.epoch);
        out.push_str(&reply::ok_sync(label, &self.name, seq, epoch, more));
        let cursor = if more { replayed } else { seq };
        session.deliver(&Line::at(out, &self.name, cursor));
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
        let seq = seq.min(state.seq);
        let position = state.read.entry(Arc::clone(&user.name)).or_insert(0);
        let moved = seq > *position;
        if moved {
            *position = seq;
        }
        let position = *position;
        if moved {
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

    /// Up to `limit` of the most recent messages with seq < `before`, oldest first.
    pub fn history(&self, limit: usize, before: Option<u64>) -> HistoryPage {
        let state = self.state.lock();
        let before = before.unwrap_or(u64::MAX);
        let mut page: Vec<Arc<Message>> = state
            .recent
            .iter()
            .rev()
            .filter(|m| m.seq < before)
            .take(limit)
            .cloned()
            .collect();
        page.reverse();
        HistoryPage {
            messages: page,
            seq: state.seq,
            epoch: Arc::clone(&self.epoch),
        }
    }
}

fn not_member(room: &str) -> ClientError {
    ClientError::new(
        ErrorCode::NotMember,
        format!("you are not a member of {room}; JOIN it first"),
    )
}
