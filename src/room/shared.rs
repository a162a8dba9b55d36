//! A room whose order is kept elsewhere: in cluster mode (`crate::cluster`) a shared log
//! assigns each message's seq, id and time, and every node settles the room from that log.
//!
//! The split of `Room` stays: *ordering* moves out (the log's atomic append replaces the seq
//! counter under the room's lock), *settling* stays here, and is still the single point where a
//! message becomes visible. What changes is where settled messages come from:
//!
//! - the node's own posts, from the append's answer (which carries the poster's `OK`);
//! - everyone's posts (this node's included), from the cluster's fan-in, in log order.
//!
//! Both land in `RoomState::arrived`, keyed by seq; [`settle_arrived`] fans out from the front
//! of it only while the next seq is there, so every session sees the room in seq order with no
//! hole, whichever path brought each message. A message this node posted and is still waiting
//! for the answer to (its token is in `RoomState::awaiting`) is held until the poster has its
//! `OK`, so the poster's `OK SEND` still comes before its `MSG`.
//!
//! A seq missing from the front while later ones wait is a lost push: [`Room::arrive`] says
//! which range to read from the log, and the fan-in reads it and arrives it too.

use std::sync::Arc;

use super::{broadcast, encode_ahead, not_member, Audience, Room, RoomState};
use crate::client_ids::Published;
use crate::delivery::doorbell::WakeBatch;
use crate::delivery::{Line, Outbox};
use crate::event::Event;
use crate::message::Message;
use crate::protocol::{ClientError, ErrorCode};
use crate::session::Session;
use crate::stats::Stats;
use crate::user::User;

/// The engine that orders a shared room's messages (implemented by `crate::cluster`).
pub trait SharedLog: Send + Sync {
    /// Appends one message atomically (client-id check, membership check, next seq, log,
    /// publish) and blocks until the engine has answered, which means it is durable.
    fn append(&self, post: SharedPost<'_>) -> Result<Appended, ClientError>;

    /// Tells the room's other nodes about an event that is not stored (typing) or is stored
    /// by its own write (a read position): published on the room's channel, in order with
    /// everything this node queued before it.
    fn announce(&self, room: &str, event: Signal);
}

/// A room event other nodes show their sessions (see [`SharedLog::announce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Typing {
        user: Arc<str>,
        typing: bool,
    },
    Read {
        user: Arc<str>,
        seq: u64,
        shared: bool,
    },
}

/// What a poster asks the shared log to append.
pub struct SharedPost<'a> {
    pub room: &'a Arc<str>,
    /// The room's epoch as this node knows it: the log refuses a post to another epoch.
    pub epoch: &'a str,
    pub sender: &'a Arc<str>,
    pub body: &'a str,
    /// The client id and the post's fingerprint (see `client_ids`).
    pub client_id: Option<(&'a str, u64)>,
    /// For a DM, the recipient (kept with the client id, for a repeated `OK DM`).
    pub to: Option<&'a Arc<str>>,
    /// This node's number for the post: the log carries it back on the message, so the
    /// fan-in can tell this node's own posts from others'.
    pub token: u64,
}

/// The shared log's answer.
pub enum Appended {
    /// Appended now, as this message.
    Posted(Message),
    /// The client id was used before (on any node): this is what it published.
    Earlier(Published),
}

/// What a post turned into.
pub enum Posted {
    New(Arc<Message>),
    /// A retry of a client id the shared log already had.
    Earlier(Published),
}

/// A message from the shared log, waiting in `RoomState::arrived` for its turn.
pub(super) struct Arrival {
    pub(super) message: Arc<Message>,
    /// This node's token if this node posted it.
    pub(super) token: Option<u64>,
    /// The poster's `OK` and where it goes, once the poster has its answer.
    pub(super) ack: Option<(Arc<Line>, Arc<Outbox>)>,
}

/// A message brought by the cluster's fan-in: `token` is set when this node posted it.
pub struct Incoming {
    pub message: Message,
    pub token: Option<u64>,
}

impl Room {
    /// Whether a shared log orders this room (cluster mode).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Posts through the shared log; see the module docs. Returns once the message is settled
    /// here (acknowledged to the poster and fanned out to this node's sessions).
    pub(super) fn publish_shared(
        &self,
        log: &dyn SharedLog,
        session: &Session,
        body: &str,
        client_id: Option<(&str, u64)>,
        to: Option<&Arc<str>>,
        ack: impl FnOnce(&Message) -> Arc<Line>,
    ) -> Result<Posted, ClientError> {
        self.touch();
        let token = next_token();
        {
            let mut state = self.state.lock();
            self.stop_typing_locked(&mut state, &session.user.name);
            state.awaiting.insert(token);
        }
        let post = SharedPost {
            room: &self.name,
            epoch: &self.epoch,
            sender: &session.user.name,
            body,
            client_id,
            to,
            token,
        };
        let answer = log.append(post);
        let _wakes = WakeBatch::start();
        let mut state = self.state.lock();
        state.awaiting.remove(&token);
        let posted = match answer {
            Ok(Appended::Posted(message)) => {
                let message = Arc::new(message);
                let ack = (ack(&message), Arc::clone(&session.outbox));
                if message.seq > state.settled {
                    let arrival = state.arrived.entry(message.seq).or_insert(Arrival {
                        message: Arc::clone(&message),
                        token: Some(token),
                        ack: None,
                    });
                    arrival.ack = Some(ack);
                } else {
                    // Settled without its OK: only if the log said "posted" after the
                    // message had come back through a catch-up that did not know the token.
                    ack.1.deliver(&ack.0);
                }
                Ok(Posted::New(message))
            }
            Ok(Appended::Earlier(published)) => Ok(Posted::Earlier(published)),
            Err(e) => Err(e),
        };
        // Settles whatever this post was holding back (its own message, or others behind a
        // failed one's token).
        let settled = self.settle_arrived(&mut state);
        drop(state);
        encode_ahead(&settled);
        posted
    }

    /// Takes messages from the shared log (in any order, duplicates allowed) and settles what
    /// can be. Returns the range of seqs the log must be read for, when later messages are
    /// waiting behind missing ones.
    pub fn arrive(&self, incoming: Vec<Incoming>) -> Option<(u64, u64)> {
        let _wakes = WakeBatch::start();
        let mut state = self.state.lock();
        for Incoming { message, token } in incoming {
            if message.seq <= state.settled || state.arrived.contains_key(&message.seq) {
                continue;
            }
            let message = Arc::new(message);
            let arrival = Arrival {
                message,
                token,
                ack: None,
            };
            state.arrived.insert(arrival.message.seq, arrival);
        }
        let settled = self.settle_arrived(&mut state);
        let missing = state
            .arrived
            .keys()
            .next()
            .filter(|&&first| first > state.settled + 1)
            .map(|&first| (state.settled + 1, first - 1));
        drop(state);
        encode_ahead(&settled);
        missing
    }

    /// The last seq settled here: the log is read from the next one on a catch-up.
    pub fn settled_seq(&self) -> u64 {
        self.state.lock().settled
    }

    /// Fans out, in seq order, the arrived messages that follow the last settled one, stopping
    /// at a hole or at this node's own post whose poster has no answer yet.
    fn settle_arrived(&self, state: &mut RoomState) -> Vec<Arc<Line>> {
        let mut settled = Vec::new();
        let mut deliveries = 0;
        loop {
            let next = state.settled + 1;
            let Some(entry) = state.arrived.first_entry() else {
                break;
            };
            if *entry.key() < next {
                entry.remove();
                continue;
            }
            if *entry.key() > next {
                break;
            }
            let held = entry
                .get()
                .token
                .is_some_and(|token| state.awaiting.contains(&token));
            if held {
                break;
            }
            let arrival = entry.remove();
            if let Some((ack, origin)) = &arrival.ack {
                origin.deliver(ack);
            }
            let message = arrival.message;
            state.settled = message.seq;
            state.assigned = message.seq;
            let event = Event::Message(Arc::clone(&message));
            let line = Line::progress(event, None, &self.name, message.seq);
            deliveries += broadcast(state, &line, Audience::Everyone);
            settled.push(line);
            state.read.insert(Arc::clone(&message.sender), message.seq);
            state.recent.push(message);
        }
        if !settled.is_empty() {
            Stats::add(&self.stats.messages, settled.len() as u64);
            Stats::add(&self.stats.deliveries, deliveries);
        }
        settled
    }

    /// Another node let `user` join: they become a member here too, and this node's sessions
    /// of the other members (and the user's own) are told with `JOINED`.
    pub fn joined_elsewhere(&self, user: &Arc<User>) {
        let mut state = self.state.lock();
        if state.members.contains_key(&user.name) {
            return;
        }
        state
            .members
            .insert(Arc::clone(&user.name), Arc::clone(user));
        user.add_room(&self.name);
        if self.kind == super::RoomKind::Direct {
            return; // a direct room's members are there from its creation, unannounced
        }
        let joined = Event::Joined {
            room: Arc::clone(&self.name),
            user: Arc::clone(&user.name),
        };
        let seq = state.settled;
        let joined = Line::start(joined, None, &self.name, seq);
        broadcast(&state, &joined, Audience::Everyone);
    }

    /// Another node's session of `user` is typing (or stopped): shown to this node's sessions
    /// of the other members. Its expiry comes from the origin node (which announces the stop).
    pub fn typing_elsewhere(&self, user: &str, typing: bool) {
        let state = self.state.lock();
        if state.members.contains_key(user) {
            self.show_typing(&state, user, typing);
        }
    }

    /// Another node's session of `user` read up to `seq`: the position moves here too (never
    /// back), their sessions here are told, and, if they share receipts, the other members.
    pub fn read_elsewhere(&self, user: &str, seq: u64, shared: bool) {
        let mut state = self.state.lock();
        let Some(member) = state.members.get(user).cloned() else {
            return;
        };
        let position = state.read.entry(Arc::clone(&member.name)).or_insert(0);
        if seq <= *position {
            return;
        }
        *position = seq;
        let line = Line::event(Event::Read {
            room: Arc::clone(&self.name),
            user: Arc::clone(&member.name),
            seq,
        });
        member.deliver(&line);
        if shared {
            broadcast(&state, &line, Audience::OthersThan(user));
        }
    }

    /// Another node let `user` leave: this node's sessions are told with `LEFT`.
    pub fn left_elsewhere(&self, user: &str) {
        let mut state = self.state.lock();
        if let Some((member, left)) = self.drop_member(&mut state, user) {
            member.deliver(&left);
        }
    }

    /// Another node's owner made the room invite-only (or public again): this node admits
    /// and hides as they said from now on.
    pub fn access_elsewhere(&self, private: bool) {
        self.state.lock().access.private = private;
    }

    /// Another node's owner invited `user`: they may join through this node too.
    pub fn invited_elsewhere(&self, user: &str) {
        self.state.lock().access.invited.insert(Arc::from(user));
    }

    /// Another node's owner kicked `user`: the invitation goes, and if they are a member,
    /// the membership, with `LEFT` to this node's sessions of the remaining members (the
    /// kicked user's own sessions are told `KICKED` by the caller, as on the kicking node).
    pub fn kicked_elsewhere(&self, user: &str) {
        let mut state = self.state.lock();
        state.access.invited.remove(user);
        self.drop_member(&mut state, user);
    }

    /// Takes `user` out of the member list after another node said so: their read position
    /// and typing go, and this node's sessions of the remaining members get `LEFT`, which is
    /// returned for the caller to give the user's own sessions if they should see it too.
    fn drop_member(&self, state: &mut RoomState, user: &str) -> Option<(Arc<User>, Arc<Line>)> {
        let member = state.members.remove(user)?;
        state.read.remove(user);
        if state.typing.clear(user) {
            self.show_typing(state, user, false);
        }
        member.remove_room(&self.name);
        let left = Line::event(Event::Left {
            room: Arc::clone(&self.name),
            user: Arc::clone(&member.name),
        });
        broadcast(state, &left, Audience::Everyone);
        Some((member, left))
    }
}

impl Room {
    /// Makes this node's member list the shared one (after joins and leaves may have been
    /// missed while the fan-in was reconnecting), announcing each difference.
    pub fn reconcile_members(&self, shared: &[String], user_of: impl Fn(&str) -> Arc<User>) {
        let local: Vec<Arc<str>> = self.state.lock().members.keys().cloned().collect();
        for name in shared {
            if !local.iter().any(|member| **member == **name) {
                self.joined_elsewhere(&user_of(name));
            }
        }
        for name in local {
            if !shared.iter().any(|member| **member == *name) {
                self.left_elsewhere(&name);
            }
        }
    }

    /// Makes this node's access the shared one (owner actions missed while the fan-in was
    /// reconnecting).
    pub fn reconcile_access(&self, private: bool, invited: &[String]) {
        let mut state = self.state.lock();
        state.access.private = private;
        state.access.invited = invited
            .iter()
            .map(|name| Arc::from(name.as_str()))
            .collect();
    }

    /// This node stops following the room (Redis lost it): its members no longer list it.
    pub fn forget_members(&self) {
        let state = self.state.lock();
        for member in state.members.values() {
            member.remove_room(&self.name);
        }
    }
}

/// The shared log refused a post because the poster is not a member there.
pub fn not_member_error(room: &str) -> ClientError {
    not_member(room)
}

/// The shared log refused a post because the room's history there is another epoch (the log
/// was lost and the room made again): the client must resume it anew.
pub fn epoch_changed(room: &str) -> ClientError {
    ClientError::new(
        ErrorCode::StoreFailed,
        format!("{room} was reset in the cluster's log; reconnect and SYNC it"),
    )
}

/// A process-wide number for each shared post, unique within this node's life.
fn next_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
