//! `ChatServer`: the directory of users and rooms.
//!
//! It finds or creates users and rooms; commands (`crate::cmd`) then ask them to act. It
//! never loops over a room's sessions itself (fan-out belongs to `Room`, device handling to
//! `User`). Two concerns that span users and rooms live beside it:
//! `presence` (sessions arriving and leaving, what peers are told) and `accounts`
//! (credentials, REGISTER, PASSWORD); `keys` announces device key changes to DM peers.

mod accounts;
mod bans;
mod keys;
mod presence;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::{release_idle_hashing_memory, retry_later, LoginThrottle};
use crate::cluster::directory::{NewRoom, SharedRoom};
use crate::cluster::fan_in::ACK_WAIT;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::event::RoomListing;
use crate::keys::DeviceKey;
use crate::lock_rank::{Rank, RankedMutex, RankedRwLock};
use crate::protocol::{ClientError, ErrorCode};
use crate::quota::Quota;
use crate::recent::MemoryBudget;
use crate::room::activity_clock;
use crate::room::{Access, Room, RoomSetup};
use crate::room_name::{dm_room_name, RoomKind};
use crate::stats::Stats;
use crate::store::{BanTarget, Store, StoreError, Write};
use crate::timers::Timers;
use crate::timers::{Due, Task};
use crate::user::User;

pub struct ChatServer {
    pub config: Config,
    pub stats: Arc<Stats>,
    /// Leaf lock (see the crate docs): held only to look up or insert, never while taking
    /// another lock.
    users: RankedRwLock<HashMap<Arc<str>, Arc<User>>>,
    /// Leaf lock, like `users`. `room_or_create` also queues the new room's store write
    /// under it (see there).
    rooms: RankedRwLock<HashMap<Arc<str>, Arc<Room>>>,
    pub(crate) store: Arc<dyn Store>,
    /// Cluster mode (`--cluster`): Redis orders and keeps rooms shared with other nodes, and
    /// is also the store. `None`: a single node.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The memory all rooms' recent logs may hold together (`--recent-memory`).
    recent_budget: Arc<MemoryBudget>,
    throttle: LoginThrottle,
    /// Leaf lock: the quota on new rooms, per user and overall (`Config::new_rooms_per_user`).
    new_rooms: RankedMutex<Quota<Arc<str>>>,
    /// Leaf lock: away messages set with IRC's AWAY, by user (docs/irc.md). In memory only:
    /// the line protocol has no away message, and presence is its own thing.
    pub(crate) irc_away: RankedMutex<HashMap<Arc<str>, Box<str>>>,
    timers: Timers,
    /// Leaf lock: the bans in force (see `server::bans` for how they reach a running
    /// server).
    bans: RankedRwLock<HashSet<BanTarget>>,
}

impl ChatServer {
    /// Opens the configured store, restores users and rooms from it, and starts the timer
    /// thread.
    pub fn open(config: Config) -> Result<Arc<ChatServer>, StoreError> {
        let cluster = match &config.cluster {
            Some(options) => Some(Cluster::connect(options)?),
            None => None,
        };
        let store: Arc<dyn Store> = match &cluster {
            Some(cluster) => Arc::clone(cluster) as Arc<dyn Store>,
            None => crate::store::open(&config.store)?,
        };
        // No recent messages are loaded: with thousands of rooms they would fill memory
        // before a client said anything. Each room's log refills as it is used; until then
        // SYNC and HISTORY read the store.
        let snapshot = store.load(0)?;
        let bans: HashSet<BanTarget> = store.bans()?.unwrap_or_default().into_iter().collect();
        let stats = Arc::new(Stats::default());
        let recent_budget = Arc::new(MemoryBudget::new(config.recent_memory));
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
        for stored in snapshot.device_keys {
            if let Some(user) = users.get(stored.user.as_str()) {
                user.restore_device_key(DeviceKey {
                    device: Arc::from(stored.device),
                    key: Arc::from(stored.key),
                    added: stored.added,
                });
            }
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
                recent_limits: config.recent_limits(),
                access: Access {
                    owner: stored.owner.map(Arc::from),
                    private: stored.private,
                    invited: stored.invited.into_iter().map(Arc::from).collect(),
                },
            };
            let budget = Arc::clone(&recent_budget);
            let room = Room::new(setup, Arc::clone(&store), Arc::clone(&stats), budget);
            rooms.insert(name, Arc::new(room));
        }
        let new_names = config.new_names_overall;
        let new_rooms = Quota::new(
            config.new_rooms_overall,
            config.new_rooms_per_user,
            Instant::now(),
        );
        let server = Arc::new_cyclic(|server| ChatServer {
            config,
            stats,
            users: RankedRwLock::new(Rank::Leaf, users),
            rooms: RankedRwLock::new(Rank::Leaf, rooms),
            store,
            cluster,
            recent_budget,
            throttle: LoginThrottle::with_new_names(new_names),
            new_rooms: RankedMutex::new(Rank::Leaf, new_rooms),
            irc_away: RankedMutex::new(Rank::Leaf, HashMap::new()),
            timers: Timers::start(server.clone()),
            bans: RankedRwLock::new(Rank::Leaf, bans),
        });
        let first_sweep = Due {
            at: Instant::now() + SWEEP_EVERY,
            what: Task::Sweep,
        };
        let _ = server.timers.schedule(first_sweep);
        if let Some(cluster) = &server.cluster {
            cluster.start_fan_in(Arc::downgrade(&server), server.config.presence_grace);
        }
        Ok(server)
    }

    /// When all rooms' recent logs together are over the memory budget, drops the logs of the
    /// least recently active rooms until they are back under it (see `recent`). Called by
    /// posters after their message settled, holding no lock: it takes one room's lock at a
    /// time.
    pub(crate) fn trim_recent_logs(&self) {
        if !self.recent_budget.over() {
            return;
        }
        let mut rooms: Vec<Arc<Room>> = self.rooms.read().values().cloned().collect();
        rooms.sort_by_key(|room| room.last_active());
        for room in rooms {
            if self.recent_budget.back_under() {
                break;
            }
            room.forget_recent();
        }
    }

    /// Maintenance, on the timer thread every [`SWEEP_EVERY`]: with a store that holds the
    /// history, the recent logs of rooms idle for `--recent-idle` are dropped (SYNC and
    /// HISTORY read the store for them); idle hashing buffers are freed; then freed memory is
    /// handed back to the OS, which the allocator would otherwise keep after a burst.
    pub(crate) fn sweep(&self) {
        if self.store.holds_history() {
            let idle = self.config.recent_idle.as_millis() as u64;
            let now = activity_clock();
            let rooms: Vec<Arc<Room>> = self.rooms.read().values().cloned().collect();
            for room in rooms {
                if now.saturating_sub(room.last_active()) >= idle {
                    room.forget_recent();
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            self.unfollow_idle_rooms(cluster);
        }
        self.reload_bans();
        release_idle_hashing_memory();
        give_back_freed_memory();
        let next = Due {
            at: Instant::now() + SWEEP_EVERY,
            what: Task::Sweep,
        };
        let _ = self.timers.schedule(next);
    }

    /// Cluster mode: stops and joins the node's cluster threads (`Cluster::stop`), at
    /// shutdown. Returns whether they all ended in time; true on a single node.
    pub fn stop_cluster(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|cluster| cluster.stop(CLUSTER_STOP_PATIENCE))
    }

    /// Bytes all rooms' recent logs hold together (an estimate).
    pub fn recent_memory(&self) -> usize {
        self.recent_budget.used()
    }

    /// The rooms of a user, as ROOMS lists them.
    pub fn rooms_of(&self, user: &User) -> Vec<RoomListing> {
        user.rooms()
            .iter()
            .filter_map(|name| self.room(name))
            .map(|room| room.listing(&user.name))
            .collect()
    }

    /// The direct room between `from` and `to`, created on first use with both as members.
    pub(crate) fn direct_room(&self, from: &Arc<User>, to: &str) -> Result<Arc<Room>, ClientError> {
        if to == &*from.name {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                "you cannot DM yourself",
            ));
        }
        let recipient = self.known_user(to)?;
        let name = dm_room_name(&from.name, to);
        let room = self.room_or_create(&name, RoomKind::Direct, None);
        room.ensure_members(&[from, &recipient]);
        Ok(room)
    }

    /// Spends one of the quota on new rooms for `user`; refused: `ERR rate-limited`. LEAVE
    /// frees a place in the rooms a user is in, so without this one user could create rooms
    /// (each kept for good) without end.
    pub(crate) fn admit_new_room(&self, user: &Arc<str>) -> Result<(), ClientError> {
        self.new_rooms
            .lock()
            .admit(Some(Arc::clone(user)), Instant::now())
            .map_err(retry_later)
    }

    pub(crate) fn known_user(&self, name: &str) -> Result<Arc<User>, ClientError> {
        if let (None, Some(cluster)) = (self.user(name), &self.cluster) {
            // Someone who logged in on another node is known here too.
            if cluster.user_exists(name).unwrap_or(false) {
                return Ok(self.cluster_user(name));
            }
        }
        self.user(name).ok_or_else(|| {
            ClientError::new(
                ErrorCode::NoSuchUser,
                format!("nobody called {name} has logged in"),
            )
        })
    }

    pub fn user_count(&self) -> usize {
        self.users.read().len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.read().len()
    }

    /// Every room (for IRC's LIST, which filters what the asker may see).
    pub(crate) fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.read().values().cloned().collect()
    }

    pub(crate) fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// Every user, copied out of the directory so no lock is held while they are used.
    pub(crate) fn all_users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    pub(crate) fn user_or_create(&self, name: &str) -> Arc<User> {
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

    /// The room called `name`; in cluster mode, read from Redis the first time this node
    /// needs it.
    pub(crate) fn room(&self, name: &str) -> Option<Arc<Room>> {
        let local = self.rooms.read().get(name).cloned();
        match (local, &self.cluster) {
            (None, Some(cluster)) => self.load_shared_room(cluster, name, None, None),
            (Some(room), Some(_)) => {
                // Used here: not to be unfollowed by the next sweep (see
                // `unfollow_idle_rooms`).
                room.touch();
                Some(room)
            }
            (local, None) => local,
        }
    }

    /// Every room this node has in memory (in cluster mode: the rooms it follows).
    pub(crate) fn loaded_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.read().values().cloned().collect()
    }

    /// Cluster mode: stops following a room Redis no longer has as this node knew it (its
    /// data was lost): the next use reads it again, under its new epoch.
    pub(crate) fn forget_room(&self, name: &str) {
        let forgotten = self.rooms.write().remove(name);
        if let Some(room) = forgotten {
            room.forget_members();
            if let Some(cluster) = &self.cluster {
                cluster.release_room(name);
            }
        }
    }

    /// Cluster mode, at each sweep: stops following the rooms no session here is in that were
    /// not used here for `--recent-idle` (their channel is unsubscribed; see
    /// `cluster::fan_in`). A session that needs one again loads it again.
    ///
    /// Why the idle time as well as "no session here is in it": a session joining or logging
    /// in looks the room up (which marks it used, see [`ChatServer::room`]) a moment before it
    /// becomes a member or attaches, and a room dropped in that moment would be followed by
    /// nobody while the session counts on it. The idle time makes that moment far too short.
    fn unfollow_idle_rooms(&self, cluster: &Cluster) {
        let idle = self.config.recent_idle.as_millis() as u64;
        let idle_since = |room: &Room| activity_clock().saturating_sub(room.last_active()) >= idle;
        for room in self.loaded_rooms() {
            if !idle_since(&room) || room.members().iter().any(|user| user.has_sessions()) {
                continue;
            }
            let unfollowed = {
                let mut rooms = self.rooms.write();
                let same = rooms
                    .get(&room.name)
                    .is_some_and(|kept| Arc::ptr_eq(kept, &room));
                (same && idle_since(&room)) && rooms.remove(&room.name).is_some()
            };
            if unfollowed {
                room.forget_members();
                cluster.release_room(&room.name);
                // Loaded again meanwhile (a login's lookup): its members' room lists keep it.
                if let Some(again) = self.loaded_room(&room.name) {
                    for member in again.members() {
                        member.add_room(&again.name);
                    }
                }
            }
        }
    }

    /// Cluster mode: `name`, shown (if this node meets them now) as the cluster shows them.
    pub(crate) fn cluster_user(&self, name: &str) -> Arc<User> {
        if let Some(cluster) = &self.cluster {
            self.meet_users(cluster, &[name.to_owned()]);
        }
        self.user_or_create(name)
    }

    /// Users this node meets for the first time are shown online or offline as the cluster
    /// shows them (later changes come as presence pushes).
    fn meet_users(&self, cluster: &Cluster, names: &[String]) {
        let strangers: Vec<String> = names
            .iter()
            .filter(|name| self.user(name).is_none())
            .cloned()
            .collect();
        for (name, (online, last_seen)) in strangers.iter().zip(cluster.presence_of(&strangers)) {
            let user = self.user_or_create(name);
            let presence = user.lock_presence();
            user.show_presence(&presence, online, last_seen);
        }
    }

    /// Cluster mode, at a login: makes `user` known to every node, and follows, from now on,
    /// every room they are in on any node, so this node's sessions of theirs get each one's
    /// messages and can SYNC them.
    pub(crate) fn follow_rooms_of(&self, user: &User) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        for name in cluster.logged_in(&user.name).unwrap_or_default() {
            self.room(&name);
        }
        // A KEY or REVOKE here checks the device cap and the device against the user's
        // current keys, which another node may have changed.
        let _ = self.refresh_device_keys(user);
    }

    /// Cluster mode: the room, followed from `seq` on if this node did not follow it yet (see
    /// `cluster::fan_in`).
    ///
    /// Called by the fence thread. It waits for the subscription's ack like any loader: the
    /// subscriber acks before it hands the fence thread anything more, so the wait ends
    /// unless the feed is full, and then after `ACK_WAIT` (see `load_shared_room`).
    pub(crate) fn followed_room(&self, name: &str, seq: u64) -> Option<Arc<Room>> {
        let local = self.rooms.read().get(name).cloned();
        match (local, &self.cluster) {
            (None, Some(cluster)) => self.load_shared_room(cluster, name, None, Some(seq)),
            (local, _) => local,
        }
    }

    /// The room if this node has it in memory; never reads Redis.
    pub(crate) fn loaded_room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.read().get(name).cloned()
    }

    /// Reads (or with `new`, makes) a shared room and keeps it in the directory, settled up
    /// to `start` if given (else up to Redis's seq). `None` if Redis has no such room or
    /// cannot be reached.
    ///
    /// The room's channel is subscribed first, and the read waits (at most
    /// `fan_in::ACK_WAIT`) until Redis acknowledged it: see `Cluster::hold_room` for why,
    /// and why reading anyway after that long loses nothing. (Refusing the JOIN instead would
    /// turn a slow subscriber into failed JOINs while Redis itself answers.)
    fn load_shared_room(
        &self,
        cluster: &Arc<Cluster>,
        name: &str,
        new: Option<NewRoom<'_>>,
        start: Option<u64>,
    ) -> Option<Arc<Room>> {
        // A name no room has (a typo, a probe) costs one read, not a subscription's three
        // round trips; a room made right after this is read again at its next use.
        if new.is_none() && !cluster.room_exists(name).unwrap_or(true) {
            return None;
        }
        let ack = cluster.hold_room(name);
        let acked = ack.recv_timeout(ACK_WAIT).is_ok();
        let Some(mut shared) = cluster.shared_room(name, new).ok().flatten() else {
            cluster.release_room(name);
            return None;
        };
        // Starting below Redis's seq: the messages between come from the log, by the fence
        // thread's catch-up (asked for below: the ack's may run before the room is kept).
        let behind = start.is_some_and(|start| start < shared.seq);
        if let Some(start) = start {
            shared.seq = shared.seq.min(start);
        }
        let room = self.shared_room(cluster, name, shared);
        let (kept, inserted) = {
            let mut rooms = self.rooms.write();
            // Another thread may have loaded it meanwhile: one Room per name.
            match rooms.entry(Arc::clone(&room.name)) {
                Entry::Occupied(kept) => (Arc::clone(kept.get()), false),
                Entry::Vacant(slot) => (Arc::clone(slot.insert(room)), true),
            }
        };
        if !inserted {
            cluster.release_room(name); // the room in the directory holds the subscription
        } else if behind || (!acked && ack.try_recv().is_ok()) {
            // Read before the ack, which came while the room was not in the directory yet:
            // the fence thread's catch-up at the ack may have missed it, so ask for another.
            // (No ack yet: the subscriber acks before it feeds `Following`, so that catch-up
            // is still to come and will find the room.) A room started behind Redis needs a
            // catch-up that finds it in the directory too.
            cluster.recheck_room(name);
        }
        Some(kept)
    }

    fn shared_room(&self, cluster: &Arc<Cluster>, name: &str, shared: SharedRoom) -> Arc<Room> {
        self.meet_users(cluster, &shared.members);
        let setup = RoomSetup {
            name: Arc::from(name),
            kind: shared.kind,
            epoch: Arc::from(shared.epoch),
            seq: shared.seq,
            members: shared
                .members
                .iter()
                .map(|member| self.user_or_create(member))
                .collect(),
            reads: shared
                .reads
                .into_iter()
                .map(|(user, seq)| (Arc::from(user), seq))
                .collect(),
            recent: Vec::new(),
            recent_limits: self.config.recent_limits(),
            access: Access {
                owner: shared.owner.map(Arc::from),
                private: shared.private,
                invited: shared.invited.into_iter().map(Arc::from).collect(),
            },
        };
        let room = Room::new(
            setup,
            Arc::clone(&self.store),
            Arc::clone(&self.stats),
            Arc::clone(&self.recent_budget),
        );
        Arc::new(room.sharing(Arc::clone(cluster) as Arc<dyn crate::room::SharedLog>))
    }

    /// The room, created (owned by `owner`) if it does not exist.
    pub(crate) fn room_or_create(
        &self,
        name: &str,
        kind: RoomKind,
        owner: Option<&Arc<str>>,
    ) -> Arc<Room> {
        if let (Some(cluster), RoomKind::Direct) = (&self.cluster, kind) {
            // Not `room`, which would read a DM another node just made as of Redis's seq:
            // `create_shared_room` starts it where its members' sessions must (see there).
            if let Some(room) = self.loaded_room(name) {
                room.touch();
                return room;
            }
            return self.create_shared_room(cluster, name, kind, owner);
        }
        if let Some(room) = self.room(name) {
            return room;
        }
        if let Some(cluster) = &self.cluster {
            return self.create_shared_room(cluster, name, kind, owner);
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
            self.config.recent_limits(),
        );
        let room = Arc::new(Room::new(
            setup,
            Arc::clone(&self.store),
            Arc::clone(&self.stats),
            Arc::clone(&self.recent_budget),
        ));
        rooms.insert(Arc::clone(&room.name), Arc::clone(&room));
        // Queued before the map lock is released, so the room's row is written before any
        // membership or message of it. This is the one store write queued under a leaf lock:
        // it may wait for room in the store's queue (disk backpressure), never for another
        // lock, and the store never takes one of ours.
        let write = Write::Room {
            name: Arc::clone(&room.name),
            kind,
            epoch: Arc::clone(&room.epoch),
            owner,
        };
        self.store.write(write, None);
        room
    }

    /// Cluster mode: the room is made in Redis first (one script, so nodes racing to make it
    /// agree on its epoch and owner). If Redis cannot be reached, the room is this request's
    /// alone, not kept: its posts fail with `ERR store-failed` until Redis is back.
    fn create_shared_room(
        &self,
        cluster: &Arc<Cluster>,
        name: &str,
        kind: RoomKind,
        owner: Option<&Arc<str>>,
    ) -> Arc<Room> {
        let fresh = RoomSetup::new(
            Arc::from(name),
            kind,
            owner.cloned(),
            self.config.recent_limits(),
        );
        let new = NewRoom {
            kind,
            epoch: &fresh.epoch,
            owner: owner.map(|owner| &**owner),
        };
        // A DM's two members are members from its seq 0. A DM this node does not follow yet
        // while one of them has a session here was made after that session logged in (a login
        // follows every room of the user), so the session gets it from its first message,
        // which another node's poster may already have sent: both people sending each other a
        // first DM at once make the room on two nodes.
        let start = (kind == RoomKind::Direct).then_some(0);
        match self.load_shared_room(cluster, name, Some(new), start) {
            Some(room) => room,
            None => Arc::new(
                Room::new(
                    fresh,
                    Arc::clone(&self.store),
                    Arc::clone(&self.stats),
                    Arc::clone(&self.recent_budget),
                )
                .sharing(Arc::clone(cluster) as Arc<dyn crate::room::SharedLog>),
            ),
        }
    }

    /// The room, if it exists and `user` may know it does. Missing rooms and other people's
    /// direct rooms get the same error, so the error reveals nothing.
    pub(crate) fn visible_room(&self, name: &str, user: &User) -> Result<Arc<Room>, ClientError> {
        self.room(name)
            .filter(|room| room.visible_to(&user.name))
            .ok_or_else(|| {
                ClientError::new(ErrorCode::NoSuchRoom, format!("there is no room {name}"))
            })
    }

    /// The room, if `user` is a member of it.
    pub(crate) fn member_room(&self, user: &User, name: &str) -> Result<Arc<Room>, ClientError> {
        let room = self.visible_room(name, user)?;
        if !room.is_member(&user.name) {
            return Err(ClientError::new(
                ErrorCode::NotMember,
                format!("only members can read {name}; JOIN it first"),
            ));
        }
        Ok(room)
    }
}

/// How long shutdown waits for the cluster threads: each notices the stop within
/// `cluster::THREAD_POLL`, the writer after sending what is queued (one pipeline, or its
/// `REDIS_TIMEOUT` if Redis is gone).
const CLUSTER_STOP_PATIENCE: Duration = Duration::from_secs(6);

/// How often the timer thread sweeps (see [`ChatServer::sweep`]).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Asks glibc's allocator to return free memory at the top of each arena's heap to the OS.
/// Reader threads allocate in their own arenas, and after a burst of large replies the freed
/// space would otherwise stay resident for good.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's free lists; no pointer we hold is
    // affected.
    unsafe {
        libc::malloc_trim(0);
    }
}
