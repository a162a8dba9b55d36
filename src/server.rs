//! `ChatServer`: the directory of users and rooms, and the operations that span them.
//!
//! It finds or creates users and rooms and asks them to act; it never loops over sessions
//! itself (fan-out belongs to `Room`, device handling to `User`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::Config;
use crate::message::Message;
use crate::protocol::name::{dm_room_name, is_dm_room};
use crate::protocol::{reply, ClientError, ErrorCode};
use crate::room::{HistoryPage, MemberStatus, Room, RoomKind};
use crate::session::Session;
use crate::stats::Stats;
use crate::transport::outbox::{CloseReason, Line, Outbox};
use crate::user::User;

pub struct ChatServer {
    pub config: Config,
    pub stats: Arc<Stats>,
    /// Leaf lock: held only to look up or insert, never while taking another lock.
    users: RwLock<HashMap<Arc<str>, Arc<User>>>,
    /// Leaf lock, like `users`.
    rooms: RwLock<HashMap<Arc<str>, Arc<Room>>>,
}

/// One line of ROOMS.
pub struct RoomListing {
    pub name: Arc<str>,
    pub seq: u64,
    pub epoch: Arc<str>,
    pub members: usize,
}

impl ChatServer {
    pub fn new(config: Config) -> ChatServer {
        ChatServer {
            config,
            stats: Arc::new(Stats::default()),
            users: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
        }
    }

    /// Logs a connection in as `name`. The user is created on first login. A session with
    /// the same device id is replaced (it gets `BYE replaced`). If this is the user's first
    /// session, everyone who shares a room with them learns they are online.
    pub fn login(&self, outbox: &Arc<Outbox>, name: &str, device: Option<&str>) -> Arc<Session> {
        let user = self.user_or_create(name);
        let session = Arc::new(Session {
            id: outbox.id,
            user: Arc::clone(&user),
            device: device.map(Box::from),
            outbox: Arc::clone(outbox),
        });
        let _presence = user.lock_presence();
        let arrival = user.add_session(Arc::clone(&session));
        if let Some(old) = arrival.replaced {
            old.outbox.close(CloseReason::Replaced);
        } else {
            Stats::add(&self.stats.sessions, 1);
        }
        if arrival.came_online {
            self.tell_peers(&user, &Line::ephemeral(reply::presence_online(&user.name)));
        }
        session
    }

    /// Ends a session. If it was the user's last, their peers learn they went offline.
    pub fn logout(&self, session: &Session) {
        let user = &session.user;
        let _presence = user.lock_presence();
        let was_present = user.is_session(session.id);
        if let Some(last_seen) = user.remove_session(session.id) {
            self.tell_peers(
                user,
                &Line::ephemeral(reply::presence_offline(&user.name, &last_seen)),
            );
        }
        if was_present {
            Stats::sub(&self.stats.sessions, 1);
        }
    }

    /// Sends `line` once to every user (all their sessions) who shares a room with `user`.
    fn tell_peers(&self, user: &User, line: &Arc<Line>) {
        let mut peers: BTreeMap<Arc<str>, Arc<User>> = BTreeMap::new();
        for room_name in user.rooms() {
            if let Some(room) = self.room(&room_name) {
                for member in room.members() {
                    if member.name != user.name {
                        peers.insert(Arc::clone(&member.name), member);
                    }
                }
            }
        }
        for peer in peers.values() {
            peer.deliver(line);
        }
    }

    pub fn join(
        &self,
        session: &Session,
        room_name: &str,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = if is_dm_room(room_name) {
            // Direct rooms come into being with their first DM; JOIN only re-confirms one.
            self.visible_room(room_name, &session.user)?
        } else {
            self.room_or_create(room_name, RoomKind::Public)
        };
        room.join(session, label);
        Ok(())
    }

    pub fn leave(
        &self,
        session: &Session,
        room_name: &str,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        if room.kind == RoomKind::Direct {
            return Err(ClientError::new(
                ErrorCode::NotPermitted,
                "a direct conversation cannot be left",
            ));
        }
        room.leave(session, label)
    }

    pub fn send(
        &self,
        session: &Session,
        room_name: &str,
        body: &str,
        label: Option<&str>,
    ) -> Result<Arc<Message>, ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        room.publish(session, body, |message| reply::ok_send(label, message))
    }

    /// Sends a direct message, creating the two-member room `dm:<a>:<b>` on first use.
    pub fn direct_message(
        &self,
        session: &Session,
        to: &str,
        body: &str,
        label: Option<&str>,
    ) -> Result<Arc<Message>, ClientError> {
        if to == &*session.user.name {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                "you cannot DM yourself",
            ));
        }
        let recipient = self.user(to).ok_or_else(|| {
            ClientError::new(
                ErrorCode::NoSuchUser,
                format!("nobody called {to} has logged in"),
            )
        })?;
        let room = self.room_or_create(&dm_room_name(&session.user.name, to), RoomKind::Direct);
        room.ensure_members(&[&session.user, &recipient]);
        room.publish(session, body, |message| reply::ok_dm(label, to, message))
    }

    pub fn who(
        &self,
        session: &Session,
        room_name: &str,
    ) -> Result<(Arc<Room>, Vec<MemberStatus>), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        let members = room.who();
        Ok((room, members))
    }

    /// The rooms of the session's user, by name.
    pub fn rooms_of(&self, user: &User) -> Vec<RoomListing> {
        user.rooms()
            .iter()
            .filter_map(|name| self.room(name))
            .map(|room| {
                let (seq, members) = room.summary();
                RoomListing {
                    name: Arc::clone(&room.name),
                    seq,
                    epoch: Arc::clone(&room.epoch),
                    members,
                }
            })
            .collect()
    }

    /// A page of a room's recent history; only members may read it.
    pub fn history(
        &self,
        session: &Session,
        room_name: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<HistoryPage, ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        if !room.is_member(&session.user.name) {
            return Err(ClientError::new(
                ErrorCode::NotMember,
                format!("only members can read {room_name}; JOIN it first"),
            ));
        }
        Ok(room.history(limit.min(self.config.recent_per_room.max(1)), before))
    }

    pub fn user_count(&self) -> usize {
        self.users.read().len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.read().len()
    }

    fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    fn user_or_create(&self, name: &str) -> Arc<User> {
        if let Some(user) = self.user(name) {
            return user;
        }
        let mut users = self.users.write();
        let user = users
            .entry(Arc::from(name))
            .or_insert_with_key(|name| Arc::new(User::new(Arc::clone(name))));
        Arc::clone(user)
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.read().get(name).cloned()
    }

    fn room_or_create(&self, name: &str, kind: RoomKind) -> Arc<Room> {
        if let Some(room) = self.room(name) {
            return room;
        }
        let mut rooms = self.rooms.write();
        let room = rooms.entry(Arc::from(name)).or_insert_with_key(|name| {
            Arc::new(Room::new(
                Arc::clone(name),
                kind,
                self.config.recent_per_room,
                Arc::clone(&self.stats),
            ))
        });
        Arc::clone(room)
    }

    /// The room, if it exists and `user` may know it does. Missing rooms and other people's
    /// direct rooms get the same error, so the error reveals nothing.
    fn visible_room(&self, name: &str, user: &User) -> Result<Arc<Room>, ClientError> {
        self.room(name)
            .filter(|room| room.visible_to(&user.name))
            .ok_or_else(|| {
                ClientError::new(ErrorCode::NoSuchRoom, format!("there is no room {name}"))
            })
    }
}
