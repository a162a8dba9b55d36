//! `ChatServer`: the directory of users and rooms, and the operations that span them.
//!
//! It finds or creates users and rooms and asks them to act; it never loops over sessions
//! itself (fan-out belongs to `Room`, device handling to `User`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use parking_lot::RwLock;

use crate::accounts::{
    hash_password, retry_later, throttle_address, verify_password, LoginThrottle,
};
use crate::client_ids::Published;
use crate::config::Config;
use crate::config::StoreConfig;
use crate::delivery::{CloseReason, Cursor, Line, Outbox};
use crate::message::Message;
use crate::protocol::Password;
use crate::protocol::{reply, ClientError, ErrorCode};
use crate::room::{Access, HistoryPage, JoinLimits, MemberStatus, Room, RoomSetup};
use crate::room_name::RoomKind;
use crate::room_name::{dm_room_name, is_dm_room};
use crate::session::Session;
use crate::stats::Stats;
use crate::store::memory::MemoryStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError, Write};
use crate::timers::{Due, Task, Timers};
use crate::user::{Departure, User};

pub struct ChatServer {
    pub config: Config,
    pub stats: Arc<Stats>,
    /// Leaf lock: held only to look up or insert, never while taking another lock.
    users: RwLock<HashMap<Arc<str>, Arc<User>>>,
    /// Leaf lock, like `users`.
    rooms: RwLock<HashMap<Arc<str>, Arc<Room>>>,
    store: Arc<dyn Store>,
    throttle: LoginThrottle,
    timers: Timers,
}

/// One line of ROOMS.
pub struct RoomListing {
    pub name: Arc<str>,
    pub seq: u64,
    pub epoch: Arc<str>,
    pub members: usize,
    /// The user's read position.
    pub read: u64,
}

/// Where a message goes: a room by name, or a user (a direct message).
pub enum Target<'a> {
    Room(&'a str),
    User(&'a str),
}

impl ChatServer {
    /// Opens the configured store, restores users and rooms from it, and starts the timer
    /// thread.
    pub fn open(config: Config) -> Result<Arc<ChatServer>, StoreError> {
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Memory => Arc::new(MemoryStore),
            StoreConfig::Sqlite(options) => Arc::new(SqliteStore::open(options.clone())?),
        };
        let snapshot = store.load(config.recent_per_room)?;
        let stats = Arc::new(Stats::default());
        let mut users = HashMap::new();
        for stored in snapshot.users {
            let name: Arc<str> = Arc::from(stored.name);
            let user = User::new(Arc::clone(&name), &config);
            user.restore(
                stored.last_seen,
                stored.share_receipts,
                stored.password_hash,
            );
            users.insert(name, Arc::new(user));
        }
        let mut rooms = HashMap::new();
        for stored in snapshot.rooms {
            let name: Arc<str> = Arc::from(stored.name);
            let setup = RoomSetup {
                name: Arc::clone(&name),
                kind: stored.kind,
                epoch: Arc::from(stored.epoch),
                seq: stored.seq,
                members: stored
                    .members
                    .iter()
                    .filter_map(|member| users.get(member.as_str()).cloned())
                    .collect(),
                reads: stored
                    .reads
                    .into_iter()
                    .map(|(user, seq)| (Arc::from(user), seq))
                    .collect(),
                recent: stored.recent,
                recent_capacity: config.recent_per_room,
                access: Access {
                    owner: stored.owner.map(Arc::from),
                    private: stored.private,
                    invited: stored.invited.into_iter().map(Arc::from).collect(),
                },
            };
            let room = Room::new(setup, Arc::clone(&store), Arc::clone(&stats));
            rooms.insert(name, Arc::new(room));
        }
        Ok(Arc::new_cyclic(|server| ChatServer {
            config,
            stats,
            users: RwLock::new(users),
            rooms: RwLock::new(rooms),
            store,
            throttle: LoginThrottle::default(),
            timers: Timers::start(server.clone()),
        }))
    }

    /// Logs a connection in as `name`. The user is created on first login. A session with
    /// the same device id is replaced (it gets `BYE replaced`). If the user was shown
    /// offline, everyone who shares a room with them learns they are online.
    /// `ok` is the reply to queue the moment the session is attached.
    pub fn login(
        &self,
        outbox: &Arc<Outbox>,
        name: &str,
        device: Option<&str>,
        ok: String,
    ) -> Arc<Session> {
        let user = self.user_or_create(name);
        let session = Arc::new(Session {
            id: outbox.id,
            user: Arc::clone(&user),
            device: device.map(Box::from),
            outbox: Arc::clone(outbox),
        });
        // Each room's seq *before* the session is attached: this session is owed nothing up
        // to there, so that is where its slow-consumer cursors start.
        let starts: Vec<Cursor> = self
            .rooms_of(&user)
            .into_iter()
            .map(|room| Cursor {
                room: room.name,
                seq: room.seq,
                start: true,
            })
            .collect();
        let _presence = user.lock_presence();
        let arrival = user.add_session(Arc::clone(&session), &Line::new(ok));
        if !starts.is_empty() {
            session.deliver(&Line::cursors(starts));
        }
        match arrival.replaced {
            Some(old) => {
                old.outbox.close(CloseReason::Replaced);
            }
            None => Stats::add(&self.stats.sessions, 1),
        }
        if arrival.came_online {
            self.tell_peers(&user, &Line::ephemeral(reply::presence_online(&user.name)));
        }
        session
    }

    /// Ends a session. If it was the user's last, their peers learn they went offline once
    /// the grace period has passed without a new session.
    pub fn logout(&self, session: &Session) {
        let user = &session.user;
        let _presence = user.lock_presence();
        let generation = match user.remove_session(session.id) {
            Departure::NotFound => return,
            Departure::StillOnline => {
                Stats::sub(&self.stats.sessions, 1);
                return;
            }
            Departure::LastSession { generation, at } => {
                let name = Arc::clone(&user.name);
                self.store.write(Write::LastSeen { user: name, at }, None);
                generation
            }
        };
        Stats::sub(&self.stats.sessions, 1);
        // Nobody is typing on a user with no device.
        for room in user.rooms() {
            if let Some(room) = self.room(&room) {
                room.stop_typing(&user.name);
            }
        }
        let grace = self.config.presence_grace;
        if !grace.is_zero() {
            let due = Due {
                at: Instant::now() + grace,
                what: Task::Offline {
                    user: Arc::clone(user),
                    generation,
                },
            };
            if self.timers.schedule(due).is_ok() {
                return;
            }
        }
        self.announce_offline_locked(user, generation);
    }

    /// Called on the timer thread when a scheduled item is due.
    pub fn run_task(&self, task: Task) {
        match task {
            Task::Offline { user, generation } => {
                let _presence = user.lock_presence();
                self.announce_offline_locked(&user, generation);
            }
            Task::Typing { room, user } => {
                if let Some(room) = self.room(&room) {
                    let next = room.reconcile_typing(&user);
                    self.schedule_typing(&room, &user, next);
                }
            }
        }
    }

    /// TYPING: forwarded to the other members, expired by the server after the TTL.
    pub fn typing(
        &self,
        session: &Session,
        room_name: &str,
        typing: bool,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        let next = room.typing(session, typing, self.config.typing_ttl, label)?;
        self.schedule_typing(&room, &session.user.name, next);
        Ok(())
    }

    fn schedule_typing(&self, room: &Room, user: &str, at: Option<Instant>) {
        let Some(at) = at else { return };
        let what = Task::Typing {
            room: Arc::clone(&room.name),
            user: Arc::from(user),
        };
        if self.timers.schedule(Due { at, what }).is_err() {
            // The schedule is full: stop the indicator now rather than leave it stuck on.
            room.stop_typing(user);
        }
    }

    /// Checks a LOGIN's credentials before any session exists. A registered name needs its
    /// password; an unregistered name with a password is registered with it; an unregistered
    /// name without one is refused under `--require-account`. Every LOGIN but that last kind
    /// is a check the throttle guards (see `accounts`): failures are logged (never the
    /// password) and slow the next check for that name and from that address; this
    /// connection's own reader thread waits out the delay, nobody else.
    pub fn authenticate(
        &self,
        name: &str,
        password: Option<&Password>,
        peer: Option<IpAddr>,
    ) -> Result<(), ClientError> {
        let registered = self
            .user(name)
            .is_some_and(|user| user.password_hash().is_some());
        let address = throttle_address(peer, self.config.per_ip_loopback);
        let attempt = if registered || password.is_some() {
            let attempt = self
                .throttle
                .begin(name, address, Instant::now())
                .map_err(retry_later)?;
            thread::sleep(attempt.wait());
            Some(attempt)
        } else {
            None
        };
        let stored = self.user(name).and_then(|user| user.password_hash());
        match (stored, password, attempt) {
            (Some(hash), Some(password), Some(attempt)) if verify_password(&password.0, &hash) => {
                attempt.succeeded();
                Ok(())
            }
            (Some(_), given, attempt) => {
                if let Some(attempt) = attempt {
                    attempt.failed(Instant::now());
                }
                let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                let what = if given.is_some() {
                    "wrong password"
                } else {
                    "no password"
                };
                eprintln!("chatd: failed login for {name} from {peer}: {what}");
                Err(ClientError::new(
                    ErrorCode::BadPassword,
                    format!("{name} is registered: LOGIN {name} password=<password>"),
                ))
            }
            (None, Some(password), attempt) => {
                self.throttle
                    .admit_new_account(address, Instant::now())
                    .map_err(retry_later)?;
                let user = self.user_or_create(name);
                if self.set_password(&user, password, true)? {
                    Ok(())
                } else {
                    // Someone registered the name a moment ago: check against theirs.
                    drop(attempt);
                    self.authenticate(name, Some(password), peer)
                }
            }
            (None, None, _) if self.config.require_account => Err(ClientError::new(
                ErrorCode::AccountRequired,
                format!(
                    "this server needs an account: LOGIN {name} password=<password> creates one"
                ),
            )),
            (None, None, _) => Ok(()),
        }
    }

    /// REGISTER: gives the session's name a password, if it has none.
    pub fn register(&self, session: &Session, password: &Password) -> Result<(), ClientError> {
        // Refused before hashing, and before spending the quota, when it cannot succeed.
        let registered = session.user.password_hash().is_some();
        if !registered {
            let address = throttle_address(session.outbox.peer_ip(), self.config.per_ip_loopback);
            self.throttle
                .admit_new_account(address, Instant::now())
                .map_err(retry_later)?;
        }
        if !registered && self.set_password(&session.user, password, true)? {
            Ok(())
        } else {
            Err(ClientError::new(
                ErrorCode::NotPermitted,
                format!(
                    "{} is already registered; use PASSWORD to change it",
                    session.user.name
                ),
            ))
        }
    }

    /// PASSWORD: sets a new password; optionally ends the user's other sessions.
    pub fn change_password(
        &self,
        session: &Session,
        password: &Password,
        end_sessions: bool,
    ) -> Result<(), ClientError> {
        self.set_password(&session.user, password, false)?;
        if end_sessions {
            session
                .user
                .close_other_sessions(session.id, CloseReason::PasswordChanged);
        }
        Ok(())
    }

    fn set_password(
        &self,
        user: &User,
        password: &Password,
        only_if_none: bool,
    ) -> Result<bool, ClientError> {
        let hash: Arc<str> = hash_password(&password.0)
            .map_err(|e| ClientError::new(ErrorCode::StoreFailed, e))?
            .into();
        if !user.set_password_hash(Arc::clone(&hash), only_if_none) {
            return Ok(false);
        }
        let name = Arc::clone(&user.name);
        self.store.write(Write::Password { user: name, hash }, None);
        Ok(true)
    }

    /// PRIVATE: the owner makes a room invite-only or public.
    pub fn set_private(
        &self,
        session: &Session,
        room_name: &str,
        private: bool,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        room.set_private(session, private, label)
    }

    /// INVITE: the owner lets a user join.
    pub fn invite(
        &self,
        session: &Session,
        room_name: &str,
        invitee: &str,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        let invitee = self.known_user(invitee)?;
        room.invite(session, &invitee, label)
    }

    /// KICK: the owner removes a member or an invitation.
    pub fn kick(
        &self,
        session: &Session,
        room_name: &str,
        target: &str,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        let target = self.known_user(target)?;
        room.kick(session, &target, label)
    }

    fn known_user(&self, name: &str) -> Result<Arc<User>, ClientError> {
        self.user(name).ok_or_else(|| {
            ClientError::new(
                ErrorCode::NoSuchUser,
                format!("nobody called {name} has logged in"),
            )
        })
    }

    /// SET receipts on|off.
    pub fn share_receipts(&self, user: &User, share: bool) {
        user.set_share_receipts(share);
        let name = Arc::clone(&user.name);
        self.store
            .write(Write::ShareReceipts { user: name, share }, None);
    }

    /// READ: moves the user's read position forward (see `Room::read`).
    pub fn read(
        &self,
        session: &Session,
        room_name: &str,
        seq: u64,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.visible_room(room_name, &session.user)?;
        room.read(session, seq, label)
    }

    fn announce_offline_locked(&self, user: &User, generation: u64) {
        if let Some(last_seen) = user.mark_offline(generation) {
            let line = Line::ephemeral(reply::presence_offline(&user.name, &last_seen));
            self.tell_peers(user, &line);
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
            self.room_or_create(room_name, RoomKind::Public, Some(&session.user.name))
        };
        let limits = JoinLimits {
            max_members: self.config.max_members_per_room,
            max_rooms: self.config.max_rooms_per_user,
        };
        room.join(session, &limits, label)
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

    /// SEND (to a room) or DM (to a user, creating the two-member room `dm:<a>:<b>` on first
    /// use). With a client id, a retry of an id already published gets the original `OK`
    /// again and publishes nothing.
    pub fn post(
        &self,
        session: &Session,
        target: Target<'_>,
        body: &str,
        label: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let user = &session.user;
        let Some(cid) = client_id else {
            return self.publish(session, &target, body, label, None).map(drop);
        };
        let mut client_ids = user.lock_client_ids();
        let now = Instant::now();
        // Recent ids are in memory; older ones (or ones from before a restart) in the store.
        let original = match client_ids.get(cid, now) {
            Some(original) => Some(original.clone()),
            None => self.store.client_id(&user.name, cid).map_err(|e| {
                ClientError::new(
                    ErrorCode::StoreFailed,
                    format!("checking the cid failed ({e})"),
                )
            })?,
        };
        if let Some(original) = original {
            session.deliver(&Line::new(ok_for(label, &original)));
            return Ok(());
        }
        let message = self.publish(session, &target, body, label, Some(cid))?;
        let to = match target {
            Target::User(to) => Some(Arc::from(to)),
            Target::Room(_) => None,
        };
        let published = Published {
            room: Arc::clone(&message.room),
            seq: message.seq,
            id: message.id,
            to,
        };
        client_ids.record(cid, published, now);
        Ok(())
    }

    fn publish(
        &self,
        session: &Session,
        target: &Target<'_>,
        body: &str,
        label: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Arc<Message>, ClientError> {
        match *target {
            Target::Room(room_name) => {
                let room = self.visible_room(room_name, &session.user)?;
                room.publish(session, body, client_id, |m| {
                    reply::ok_send(label, &m.room, m.seq, &m.id)
                })
            }
            Target::User(to) => {
                let room = self.direct_room(session, to)?;
                room.publish(session, body, client_id, |m| {
                    reply::ok_dm(label, to, &m.room, m.seq, &m.id)
                })
            }
        }
    }

    /// The direct room between the session's user and `to`, created on first use.
    fn direct_room(&self, session: &Session, to: &str) -> Result<Arc<Room>, ClientError> {
        if to == &*session.user.name {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                "you cannot DM yourself",
            ));
        }
        let recipient = self.known_user(to)?;
        let name = dm_room_name(&session.user.name, to);
        let room = self.room_or_create(&name, RoomKind::Direct, None);
        room.ensure_members(&[&session.user, &recipient]);
        Ok(room)
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

    /// The rooms of a user, by name.
    pub fn rooms_of(&self, user: &User) -> Vec<RoomListing> {
        user.rooms()
            .iter()
            .filter_map(|name| self.room(name))
            .map(|room| {
                let (seq, members, read) = room.summary(&user.name);
                RoomListing {
                    name: Arc::clone(&room.name),
                    seq,
                    epoch: Arc::clone(&room.epoch),
                    members,
                    read,
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
        let room = self.member_room(session, room_name)?;
        // One reply carries at most as many messages as one SYNC page.
        room.history(limit.min(self.config.sync_limit.max(1)), before)
    }

    /// Replays what the session missed in a room (see `Room::sync`); only members may.
    pub fn sync(
        &self,
        session: &Session,
        room_name: &str,
        after: u64,
        epoch: Option<&str>,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        let room = self.member_room(session, room_name)?;
        room.sync(session, after, epoch, self.config.sync_limit, label)
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
        if let Some(user) = users.get(name) {
            return Arc::clone(user);
        }
        let name: Arc<str> = Arc::from(name);
        let user = Arc::new(User::new(Arc::clone(&name), &self.config));
        users.insert(Arc::clone(&name), Arc::clone(&user));
        drop(users);
        self.store.write(Write::User { name }, None);
        user
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.read().get(name).cloned()
    }

    /// The room, created (owned by `owner`) if it does not exist.
    fn room_or_create(&self, name: &str, kind: RoomKind, owner: Option<&Arc<str>>) -> Arc<Room> {
        if let Some(room) = self.room(name) {
            return room;
        }
        let mut rooms = self.rooms.write();
        if let Some(room) = rooms.get(name) {
            return Arc::clone(room);
        }
        let owner = owner.cloned();
        let setup = RoomSetup::new(
            Arc::from(name),
            kind,
            owner.clone(),
            self.config.recent_per_room,
        );
        let room = Arc::new(Room::new(
            setup,
            Arc::clone(&self.store),
            Arc::clone(&self.stats),
        ));
        rooms.insert(Arc::clone(&room.name), Arc::clone(&room));
        // Queued before the map lock is released, so the room's row is written before any
        // membership or message of it.
        let write = Write::Room {
            name: Arc::clone(&room.name),
            kind,
            epoch: Arc::clone(&room.epoch),
            owner,
        };
        self.store.write(write, None);
        room
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

    /// The room, if the session's user is a member of it.
    fn member_room(&self, session: &Session, name: &str) -> Result<Arc<Room>, ClientError> {
        let room = self.visible_room(name, &session.user)?;
        if !room.is_member(&session.user.name) {
            return Err(ClientError::new(
                ErrorCode::NotMember,
                format!("only members can read {name}; JOIN it first"),
            ));
        }
        Ok(room)
    }
}

/// The `OK` a retried client id gets: the original's, with the retry's label.
fn ok_for(label: Option<&str>, original: &Published) -> String {
    match &original.to {
        Some(to) => reply::ok_dm(label, to, &original.room, original.seq, &original.id),
        None => reply::ok_send(label, &original.room, original.seq, &original.id),
    }
}
