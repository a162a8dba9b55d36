//! `ChatServer`: the directory of users and rooms.
//!
//! It finds or creates users and rooms; commands (`crate::cmd`) then ask them to act. It
//! never loops over a room's sessions itself (fan-out belongs to `Room`, device handling to
//! `User`). Two concerns that span users and rooms live beside it:
//! `presence` (sessions arriving and leaving, what peers are told) and `accounts`
//! (credentials, REGISTER, PASSWORD).

mod accounts;
mod presence;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::{release_idle_hashing_memory, retry_later, LoginThrottle};
use crate::config::Config;
use crate::event::RoomListing;
use crate::lock_rank::{Rank, RankedMutex, RankedRwLock};
use crate::protocol::{ClientError, ErrorCode};
use crate::quota::Quota;
use crate::recent::MemoryBudget;
use crate::room::activity_clock;
use crate::room::{Access, Room, RoomSetup};
use crate::room_name::{dm_room_name, RoomKind};
use crate::stats::Stats;
use crate::store::{Store, StoreError, Write};
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
    /// The memory all rooms' recent logs may hold together (`--recent-memory`).
    recent_budget: Arc<MemoryBudget>,
    throttle: LoginThrottle,
    /// Leaf lock: the quota on new rooms, per user and overall (`Config::new_rooms_per_user`).
    new_rooms: RankedMutex<Quota<Arc<str>>>,
    /// Leaf lock: away messages set with IRC's AWAY, by user (docs/irc.md). In memory only:
    /// the line protocol has no away message, and presence is its own thing.
    pub(crate) irc_away: RankedMutex<HashMap<Arc<str>, Box<str>>>,
    timers: Timers,
}

impl ChatServer {
    /// Opens the configured store, restores users and rooms from it, and starts the timer
    /// thread.
    pub fn open(config: Config) -> Result<Arc<ChatServer>, StoreError> {
        let store = crate::store::open(&config.store)?;
        // No recent messages are loaded: with thousands of rooms they would fill memory
        // before a client said anything. Each room's log refills as it is used; until then
        // SYNC and HISTORY read the store.
        let snapshot = store.load(0)?;
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
            recent_budget,
            throttle: LoginThrottle::default(),
            new_rooms: RankedMutex::new(Rank::Leaf, new_rooms),
            irc_away: RankedMutex::new(Rank::Leaf, HashMap::new()),
            timers: Timers::start(server.clone()),
        });
        let first_sweep = Due {
            at: Instant::now() + SWEEP_EVERY,
            what: Task::Sweep,
        };
        let _ = server.timers.schedule(first_sweep);
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
        release_idle_hashing_memory();
        give_back_freed_memory();
        let next = Due {
            at: Instant::now() + SWEEP_EVERY,
            what: Task::Sweep,
        };
        let _ = self.timers.schedule(next);
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

    pub(crate) fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.read().get(name).cloned()
    }

    /// The room, created (owned by `owner`) if it does not exist.
    pub(crate) fn room_or_create(
        &self,
        name: &str,
        kind: RoomKind,
        owner: Option<&Arc<str>>,
    ) -> Arc<Room> {
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
