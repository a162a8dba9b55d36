//! A room: its members, its recent history, its sequence counter, and the one fan-out path.
//!
//! Posting a message has two steps, both under the room's lock:
//!
//! 1. [`Room::publish`] assigns the next seq and queues the message for the store, in seq
//!    order. The poster then waits (outside the lock) until the store says it is durable.
//! 2. `Room::settle` (run by whichever poster gets there first) takes the messages at the
//!    front of the queue that are durable, in seq order, and fans each out: the poster's
//!    `OK SEND`, then one shared `MSG` line to every session of every member.
//!
//! **The seq authority** is this room's lock: `Room::publish` assigns seqs under it, and
//! `Room::settle` is the single point where a message becomes visible to anyone. An engine
//! that orders messages elsewhere (a cluster's shared log) would take over the first and feed
//! the second.
//!
//! Every room event (MSG, JOINED, LEFT, TYPING, READ, and the presence a joiner brings)
//! reaches members through one function, `broadcast`, always called with the room locked.
//! Because of that, every session sees a room's events in the order they happened there, and a
//! member who joins sees exactly the messages settled after their join. Queueing is a
//! `try_send` into each session's bounded queue, which never blocks and never touches a
//! socket; the line's text is made later, by the writers, outside the lock.
//!
//! A message whose write fails is never acknowledged nor fanned out: its poster gets
//! `ERR store-failed` and its seq stays unused, which SYNC reports as a `GAP` (so seqs are
//! increasing, with gaps only where a write failed).
//!
//! Reading the past (SYNC, HISTORY) is in `room/history.rs`; the in-memory log it reads first is
//! `crate::recent`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

mod history;
mod shared;

pub use history::REPLY_BYTES;
pub use shared::{
    epoch_changed, not_member_error, Appended, Incoming, Posted, SharedLog, SharedPost, Signal,
};

use crate::delivery::doorbell::WakeBatch;
use crate::delivery::write_through::{self, WriteThroughBatch};
use crate::delivery::{Line, Outbox, Reply};
use crate::event::{Event, MemberStatus, RoomListing};
use crate::lock_rank::{Rank, RankedMutex};
use crate::message::Message;
use crate::protocol::{ClientError, ErrorCode, Wire};
use crate::recent::{MemoryBudget, RecentLimits, RecentLog};
pub use crate::room_name::RoomKind;
use crate::session::Session;
use crate::stats::Stats;
use crate::store::{PostedId, Store, Ticket, Write};
use crate::typing::Typing;
use crate::user::User;

pub struct Room {
    pub name: Arc<str>,
    pub kind: RoomKind,
    /// Identifies this room's history. A client's seq cursor is only meaningful within one
    /// epoch; a new epoch tells it the history it knew is gone.
    pub epoch: Arc<str>,
    /// Lock rank 3 (see `lock_rank::Rank`): taken after a user's presence and client-id locks,
    /// before users' state locks. Never two rooms at once.
    state: RankedMutex<RoomState>,
    store: Arc<dyn Store>,
    /// In cluster mode, the log that orders this room's messages (see `room/shared.rs`);
    /// `None`: this room's lock is the seq authority.
    shared: Option<Arc<dyn SharedLog>>,
    stats: Arc<Stats>,
    /// When the room was last used (milliseconds on [`activity_clock`]): the server drops the
    /// recent logs of idle rooms, and of the least recently active first when over its
    /// memory budget.
    last_active: AtomicU64,
}

/// Milliseconds since the first room was made: the clock of `Room::last_active`.
pub fn activity_clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct RoomState {
    members: BTreeMap<Arc<str>, Arc<User>>,
    /// The last settled messages, oldest first, bounded by count and bytes (see `recent`).
    /// Older ones are in the store (if it is durable).
    recent: RecentLog,
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
    /// Shared rooms only: messages from the shared log not yet settled, by seq.
    arrived: BTreeMap<u64, shared::Arrival>,
    /// Shared rooms only: tokens of this node's posts still waiting for the log's answer.
    awaiting: HashSet<u64>,
    /// When messages were last fanned out (`write_through::clock`): a room quiet for
    /// `write_through::BUSY` writes through whatever its size (`WriteThroughBatch::limit_for`).
    last_fanout: u64,
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

/// Encodes freshly fanned-out lines in the chatd protocol once, on the posting thread, after
/// the room's lock is released and before the sleeping writers are woken. Otherwise the
/// writers of a big room, woken together, would all meet the empty text slot at once and
/// queue up on it while the first of them encodes. Other protocols encode on first use.
fn encode_ahead(lines: &[Arc<Line>]) {
    for line in lines {
        line.encoded(Wire::Chatd);
    }
}

/// Who among a room's members an event goes to (see [`broadcast`]).
enum Audience<'a> {
    /// Every session of every member.
    Everyone,
    /// Everyone but one session: the one that caused the event (its user's other devices are
    /// told).
    AllButSession(u64),
    /// The members other than this user.
    OthersThan(&'a str),
    /// The members the filter picks.
    Where(&'a dyn Fn(&User) -> bool),
}

/// Queues `line` to every session of the members in `audience`, without blocking. The one
/// loop over a room's members and their sessions; called with the room locked (`state` is
/// the lock's contents), so a room's events reach every session in one order. Returns how
/// many sessions the line was queued for.
fn broadcast(state: &RoomState, line: &Arc<Line>, audience: Audience<'_>) -> u64 {
    let mut queued = 0;
    for member in state.members.values() {
        queued += match audience {
            Audience::Everyone => member.deliver(line),
            Audience::AllButSession(session) => member.deliver_except(line, Some(session)),
            Audience::OthersThan(user) if *member.name == *user => 0,
            Audience::OthersThan(_) => member.deliver(line),
            Audience::Where(include) if include(member) => member.deliver(line),
            Audience::Where(_) => 0,
        };
    }
    queued
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
    pub recent_limits: RecentLimits,
    pub access: Access,
}

impl RoomSetup {
    /// A room that did not exist before, with a fresh epoch.
    pub fn new(
        name: Arc<str>,
        kind: RoomKind,
        owner: Option<Arc<str>>,
        recent_limits: RecentLimits,
    ) -> RoomSetup {
        RoomSetup {
            name,
            kind,
            epoch: Uuid::new_v4().simple().to_string()[..16].into(),
            seq: 0,
            members: Vec::new(),
            reads: Vec::new(),
            recent: Vec::new(),
            recent_limits,
            access: Access {
                owner,
                ..Access::default()
            },
        }
    }
}

impl Room {
    pub fn new(
        setup: RoomSetup,
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
        budget: Arc<MemoryBudget>,
    ) -> Room {
        let members = setup
            .members
            .into_iter()
            .map(|user| {
                user.add_room(&setup.name);
                (Arc::clone(&user.name), user)
            })
            .collect();
        let mut recent = RecentLog::new(setup.recent_limits, budget);
        for message in setup.recent {
            recent.push(Arc::new(message));
        }
        Room {
            name: setup.name,
            kind: setup.kind,
            epoch: setup.epoch,
            state: RankedMutex::new(
                Rank::RoomState,
                RoomState {
                    members,
                    recent,
                    assigned: setup.seq,
                    settled: setup.seq,
                    pending: VecDeque::new(),
                    read: setup.reads.into_iter().collect(),
                    typing: Typing::default(),
                    access: setup.access,
                    arrived: BTreeMap::new(),
                    awaiting: HashSet::new(),
                    last_fanout: 0,
                },
            ),
            store,
            shared: None,
            stats,
            last_active: AtomicU64::new(activity_clock()),
        }
    }

    /// The room ordered by `log` (cluster mode) instead of by its own lock.
    pub fn sharing(mut self, log: Arc<dyn SharedLog>) -> Room {
        self.shared = Some(log);
        self
    }

    /// Posts a message: through the shared log in cluster mode, else [`Room::publish`].
    /// `to` is a DM's recipient.
    pub fn post(
        &self,
        session: &Session,
        body: &str,
        client_id: Option<(&str, u64)>,
        to: Option<&Arc<str>>,
        ack: impl FnOnce(&Message) -> Arc<Line>,
    ) -> Result<Posted, ClientError> {
        match &self.shared {
            Some(log) => self.publish_shared(log.as_ref(), session, body, client_id, to, ack),
            None => self.publish(session, body, client_id, ack).map(Posted::New),
        }
    }

    /// Marks the room as just used (in cluster mode also a lookup by a session here, which
    /// keeps the node following it; see `ChatServer::unfollow_idle_rooms`).
    pub fn touch(&self) {
        self.last_active.store(activity_clock(), Relaxed);
    }

    /// When the room was last used; a larger value is more recent.
    pub fn last_active(&self) -> u64 {
        self.last_active.load(Relaxed)
    }

    /// Drops the room's recent log (see `recent`); returns the bytes freed.
    pub fn forget_recent(&self) -> usize {
        self.state.lock().recent.clear()
    }

    /// Whether `user` may learn that this room exists: a public room that is not
    /// invite-only, or one they are in or invited to. Everyone else gets `no-such-room`.
    pub fn visible_to(&self, user: &str) -> bool {
        let state = self.state.lock();
        may_see(self.kind, &state, user)
    }

    /// The room's owner (its creator), if it has one.
    pub fn owner(&self) -> Option<Arc<str>> {
        self.state.lock().access.owner.clone()
    }

    /// Invite-only (IRC's `+i`).
    pub fn is_private(&self) -> bool {
        self.state.lock().access.private
    }

    pub fn is_member(&self, user: &str) -> bool {
        self.state.lock().members.contains_key(user)
    }

    pub fn members(&self) -> Vec<Arc<User>> {
        self.state.lock().members.values().cloned().collect()
    }

    /// The room as `user` sees it in ROOMS, right now.
    pub fn listing(&self, user: &str) -> RoomListing {
        let state = self.state.lock();
        RoomListing {
            name: Arc::clone(&self.name),
            seq: state.settled,
            epoch: Arc::clone(&self.epoch),
            members: state.members.len(),
            read: state.read.get(user).copied().unwrap_or(0),
        }
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
        reply: &Reply,
    ) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !may_see(self.kind, &state, &user.name) {
            if self.kind == RoomKind::Direct {
                return Err(no_such_room(&self.name));
            }
            // An invite-only room must not reveal that it exists, and a JOIN of a free name
            // creates a room: so an outsider gets the answer a new room would give (members=1,
            // an epoch of its own, the same on every try) and is not let in. Every other
            // command on the name answers `no-such-room`, as for any room one cannot see.
            let ok = Event::OkJoin {
                room: Arc::clone(&self.name),
                seq: 0,
                epoch: self.decoy_epoch(&user.name),
                members: 1,
            };
            session.deliver(&reply.line(ok));
            return Ok(());
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
            let joined = Event::Joined {
                room: Arc::clone(&self.name),
                user: Arc::clone(&user.name),
            };
            let joined = Line::start(joined, None, &self.name, seq);
            broadcast(&state, &joined, Audience::AllButSession(session.id));
        }
        let ok = Event::OkJoin {
            room: Arc::clone(&self.name),
            seq,
            epoch: Arc::clone(&self.epoch),
            members: state.members.len(),
        };
        session.deliver(&reply.start(ok, &self.name, seq));
        Ok(())
    }

    /// The epoch shown to `outsider` when they try to JOIN this invite-only room: stable for
    /// that user and room (a repeated JOIN of a real new room shows the same epoch too), and
    /// telling nothing about the room's own epoch.
    fn decoy_epoch(&self, outsider: &str) -> Arc<str> {
        let seed = format!("{}/{}/{outsider}", self.epoch, self.name);
        let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, seed.as_bytes());
        id.simple().to_string()[..16].into()
    }

    /// Owner only: make the room invite-only, or public again.
    /// Like every owner action, it takes effect at once and returns the store's tickets: the
    /// caller acknowledges it only once they resolve (see [`Room::stored`]).
    pub fn set_private(
        &self,
        session: &Session,
        private: bool,
    ) -> Result<Vec<Ticket>, ClientError> {
        let mut state = self.state.lock();
        self.check_owner(&state, &session.user.name)?;
        state.access.private = private;
        let room = Arc::clone(&self.name);
        Ok(vec![self.write_durably(Write::RoomAccess { room, private })])
    }

    /// Owner only: `invitee` may now join; their sessions are told with `INVITED`.
    pub fn invite(&self, session: &Session, invitee: &User) -> Result<Vec<Ticket>, ClientError> {
        let mut state = self.state.lock();
        self.check_owner(&state, &session.user.name)?;
        let mut tickets = Vec::new();
        if state.access.invited.insert(Arc::clone(&invitee.name)) {
            let (room, user) = (Arc::clone(&self.name), Arc::clone(&invitee.name));
            tickets.push(self.write_durably(Write::Invite { room, user }));
        }
        let (room, by) = (Arc::clone(&self.name), Arc::clone(&session.user.name));
        invitee.deliver(&Line::event(Event::Invited { room, by }));
        Ok(tickets)
    }

    /// Owner only: removes `target`'s membership and invitation. They get `KICKED`, the
    /// remaining members `LEFT`.
    pub fn kick(&self, session: &Session, target: &User) -> Result<Vec<Ticket>, ClientError> {
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
        let mut tickets = vec![self.write_durably(Write::Uninvite { room, user })];
        if was_member {
            tickets.push(self.remove_member(&mut state, target));
            let (room, user) = (Arc::clone(&self.name), Arc::clone(&target.name));
            broadcast(
                &state,
                &Line::event(Event::Left { room, user }),
                Audience::Everyone,
            );
        }
        let (room, by) = (Arc::clone(&self.name), Arc::clone(&session.user.name));
        target.deliver(&Line::event(Event::Kicked { room, by }));
        Ok(tickets)
    }

    /// Queues a write whose acknowledgement must wait for the disk.
    fn write_durably(&self, write: Write) -> Ticket {
        let ticket = Ticket::default();
        self.store.write(write, Some(ticket.clone()));
        ticket
    }

    /// Waits, outside the room's lock, until an owner action's writes are stored: access
    /// control follows the rule messages follow, and its `OK` means it survives a crash.
    pub fn stored(tickets: Vec<Ticket>) -> Result<(), ClientError> {
        for ticket in tickets {
            ticket.wait().map_err(|e| {
                ClientError::new(
                    ErrorCode::StoreFailed,
                    format!("the change could not be stored ({e}); it may not survive a restart"),
                )
            })?;
        }
        Ok(())
    }

    /// Owner-only actions on a room: its owner may; a member who is not gets `not-permitted`;
    /// anyone who cannot see the room gets `no-such-room`.
    /// The owner must also be a member: an owner who left cannot lock the name up from
    /// outside (make it invite-only for everyone) without coming back.
    fn check_owner(&self, state: &RoomState, user: &str) -> Result<(), ClientError> {
        if state.access.owner.as_deref() == Some(user) && state.members.contains_key(user) {
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
        let online = Line::ephemeral(Event::Online {
            user: Arc::clone(&joiner.name),
        });
        let shares_none = |member: &User| !member.in_any_room(&joiner_rooms);
        broadcast(state, &online, Audience::Where(&shares_none));
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

    /// Returns the ticket of the store write, for the callers that acknowledge only durable
    /// changes (KICK); LEAVE does not wait (see protocol.md).
    fn remove_member(&self, state: &mut RoomState, user: &User) -> Ticket {
        self.stop_typing_locked(state, &user.name);
        state.members.remove(&user.name);
        state.read.remove(&user.name);
        user.remove_room(&self.name);
        let (room, name) = (Arc::clone(&self.name), Arc::clone(&user.name));
        self.write_durably(Write::Leave { room, user: name })
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
    pub fn leave(&self, session: &Session, reply: &Reply) -> Result<(), ClientError> {
        let user = &session.user;
        let mut state = self.state.lock();
        if !state.members.contains_key(&user.name) {
            return Err(not_member(&self.name));
        }
        self.remove_member(&mut state, user);
        let (room, name) = (Arc::clone(&self.name), Arc::clone(&user.name));
        let left = Line::event(Event::Left { room, user: name });
        broadcast(&state, &left, Audience::Everyone);
        // No longer a member: the user's other devices are told directly.
        user.deliver_except(&left, Some(session.id));
        let room = Arc::clone(&self.name);
        session.deliver(&reply.line(Event::OkLeave { room }));
        Ok(())
    }

    /// Posts a message and returns once it is settled: acknowledged to the poster (`ack` is
    /// its OK line, built from the new message) and fanned out to every session of every
    /// member, the poster's own devices included. `client_id` (the id and the fingerprint of
    /// the post) is stored with the message.
    pub fn publish(
        &self,
        session: &Session,
        body: &str,
        client_id: Option<(&str, u64)>,
        ack: impl FnOnce(&Message) -> Arc<Line>,
    ) -> Result<Arc<Message>, ClientError> {
        self.touch();
        let ticket = Ticket::default();
        let (message, settled_inline) = {
            // Declared before the lock, so dropped after it: lines for idle sessions are
            // written through (`delivery::write_through`) and writers woken by this fan-out
            // are unparked once the lock is released, the wake-ups first.
            let direct = WriteThroughBatch::start();
            let _wakes = WakeBatch::start();
            let mut state = self.state.lock();
            if !state.members.contains_key(&session.user.name) {
                return Err(not_member(&self.name));
            }
            direct.limit_for(state.members.len(), state.last_fanout);
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
            let client_id = client_id.map(|(cid, fingerprint)| PostedId {
                user: Arc::clone(&session.user.name),
                cid: Box::from(cid),
                fingerprint,
            });
            // Queued under the lock so the store receives each room's messages in seq order
            // and a crash can never keep seq n + 1 without seq n.
            let write = Write::Message {
                message: Arc::clone(&message),
                client_id,
            };
            self.store.write(write, Some(ticket.clone()));
            state.pending.push_back(Pending {
                ack: ack(&message),
                message: Arc::clone(&message),
                origin: Arc::clone(&session.outbox),
                ticket: ticket.clone(),
            });
            let settled = self.settle(&mut state);
            // A store that resolved the ticket inline (memory) has settled it just now.
            let settled_inline = state.settled >= message.seq;
            drop(state);
            encode_ahead(&settled);
            (message, settled_inline)
        };
        if let Err(e) = ticket.wait() {
            if !settled_inline {
                self.settle_now();
            }
            return Err(ClientError::new(
                ErrorCode::StoreFailed,
                format!("the message could not be stored, so it was not sent ({e})"),
            ));
        }
        // A store may resolve tickets inline (then the settle above already made this message
        // visible, and taking the lock again would be wasted) or later on its own thread: then
        // the poster settles once its ticket has, or the message could wait for the room's
        // next post.
        if !settled_inline {
            self.settle_now();
        }
        Ok(message)
    }

    /// Takes the lock and settles: the wake-ups of sleeping writers wait until the lock is
    /// released and the new lines are encoded (see [`encode_ahead`]).
    fn settle_now(&self) {
        let direct = WriteThroughBatch::start();
        let _wakes = WakeBatch::start();
        let mut state = self.state.lock();
        direct.limit_for(state.members.len(), state.last_fanout);
        let settled = self.settle(&mut state);
        drop(state);
        encode_ahead(&settled);
    }

    /// Fans out, in seq order, every message at the front of the queue whose store write has
    /// finished: the single point where a message becomes visible. Returns the lines it
    /// fanned out.
    fn settle(&self, state: &mut RoomState) -> Vec<Arc<Line>> {
        let mut settled = Vec::new();
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
            post.origin.deliver_through(&post.ack);
            let message = post.message;
            let event = Event::Message(Arc::clone(&message));
            let line = Line::progress(event, None, &self.name, message.seq);
            deliveries += broadcast(state, &line, Audience::Everyone);
            settled.push(line);
            // Whoever posts has read the room up to their own message. Recorded silently: a
            // READ event per message would double the fan-out.
            state.read.insert(Arc::clone(&message.sender), message.seq);
            state.recent.push(message);
            messages += 1;
        }
        if messages > 0 {
            state.last_fanout = write_through::clock();
            Stats::add(&self.stats.messages, messages);
            Stats::add(&self.stats.deliveries, deliveries);
        }
        settled
    }

    /// The session's user is typing (or stopped). Returns when `reconcile_typing` is due.
    pub fn typing(
        &self,
        session: &Session,
        typing: bool,
        ttl: Duration,
        reply: &Reply,
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
        let room = Arc::clone(&self.name);
        session.deliver(&reply.line(Event::OkTyping { room, typing }));
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

    /// Typing events go to the other members only, and may be shed under backpressure. In
    /// cluster mode the other nodes are told too.
    fn tell_typing(&self, state: &RoomState, user: &str, typing: bool) {
        if let Some(log) = &self.shared {
            let user = Arc::from(user);
            log.announce(&self.name, Signal::Typing { user, typing });
        }
        self.show_typing(state, user, typing);
    }

    /// Shows this node's sessions of the other members that `user` is typing (or stopped).
    fn show_typing(&self, state: &RoomState, user: &str, typing: bool) {
        let line = Line::ephemeral(Event::Typing {
            room: Arc::clone(&self.name),
            user: Arc::from(user),
            typing,
        });
        broadcast(state, &line, Audience::OthersThan(user));
    }

    /// Records that the session's user has read up to `seq` (never backwards, never past the
    /// latest message). A move is told to the user's other sessions and, if the user shares
    /// receipts, to the other members; queued under the lock, so a receipt never arrives
    /// before the message it refers to. The reply carries the stored position.
    pub fn read(&self, session: &Session, seq: u64, reply: &Reply) -> Result<(), ClientError> {
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
            let line = Line::event(Event::Read {
                room: Arc::clone(&self.name),
                user: Arc::clone(&user.name),
                seq: position,
            });
            user.deliver_except(&line, Some(session.id));
            if let Some(log) = &self.shared {
                let (user, shared) = (Arc::clone(&user.name), user.shares_receipts());
                log.announce(
                    &self.name,
                    Signal::Read {
                        user,
                        seq: position,
                        shared,
                    },
                );
            }
            if user.shares_receipts() {
                broadcast(&state, &line, Audience::OthersThan(&user.name));
            }
        }
        let room = Arc::clone(&self.name);
        session.deliver(&reply.line(Event::OkRead {
            room,
            seq: position,
        }));
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

fn not_member(room: &str) -> ClientError {
    ClientError::new(
        ErrorCode::NotMember,
        format!("you are not a member of {room}; JOIN it first"),
    )
}
