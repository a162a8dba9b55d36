//! Cluster mode: N chatd nodes sharing rooms through one Redis (`--cluster redis://HOST:PORT`)
//! or a Redis Cluster (`--cluster redis-cluster://HOST:PORT,...`, see [`connection`]).
//!
//! Redis is the engine that orders and keeps; the nodes never agree among themselves:
//!
//! - **Order and durability** ([`log`], [`scripts::SEND`]): a post is one Lua script (client-id
//!   check, membership check, next seq, append to the room's stream with entry id `<seq>-0`,
//!   publish on the room's channel, client id kept for its window). The node's
//!   `chatd-cluster-writer` thread sends every queued script and write as one pipeline
//!   ([`writer`]): group commit, moved into Redis, which with `appendfsync always` fsyncs
//!   once per event-loop iteration before it answers.
//! - **Fan-in** ([`fan_in`]): one pub/sub connection per node, subscribed to the channels of
//!   the rooms the node follows (those its sessions need), brings their events; a fence
//!   thread settles them into the rooms (`Room::arrive`) only once they are known durable,
//!   repairs holes from the stream (XRANGE), and catches every room up from its last settled
//!   seq whenever the subscription is (re)made.
//! - **Session control** ([`control`]): what ends or changes a user's sessions on one node
//!   (a ban, a server-wide kick, REGISTER, PASSWORD end-sessions, a join elsewhere) reaches
//!   their sessions on every node through the user's `s:` channel.
//! - **Retention** ([`retention`]): `--retention-per-room` trims in the SEND script,
//!   `--retention-days` in a pass every retention interval.
//! - **Shared state** ([`directory`]): rooms (epoch, seq, owner, invite-only, members,
//!   invites, read positions) and users live in Redis; a node loads a room the first time it
//!   needs it and follows it from then on through the fan-in.
//!
//! docs/cluster.md is the operator's side (running Redis and nodes, what a loss means);
//! docs/design.md says why no message a Redis crash could take back is ever shown.
//!
//! Keys (`{...}` is the hash tag a Redis Cluster shards on; every script's keys share one,
//! see [`scripts`] and [`connection`]):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `r:{room}` | hash | `epoch`, `seq`, `kind`, `owner`, `private`, `ms`/`ctr` (the id clock) |
//! | `r:{room}:log` | stream | entry `<seq>-0`: `id`, `t` (ms), `from`, `o` (origin), `body` |
//! | `r:{room}:members`, `r:{room}:invites` | set | user names |
//! | `r:{room}:reads` | hash | user -> read seq (forward only) |
//! | `u:{user}` | hash | `name`, `password`, `operator`, `receipts`, `last_seen` |
//! | `u:{user}:keys` | hash | device -> `<public key> <added, RFC 3339>` (docs/e2e.md) |
//! | `bans` | hash | `user <name>` / `address <ip>` -> reason ([`accounts`]) |
//! | `u:{user}:rooms` | set | the user's rooms |
//! | `u:{user}:cid:<cid>` | string, EX | the `OK` a client id got: `room seq id fingerprint to` |
//! | `r:{room}:cid:<user>:<cid>` | string, EX | the same, on a Redis Cluster, in the room's slot (`log`) |
//!
//! Channels: `c:<room>`, carrying `M <seq> <ms> <id> <origin> <from> <body>`, `J <user>
//! <node> <seq>`, `L <user> <node>`, `T <user> <node> <0|1>` (typing), `R <user> <node> <seq>
//! <shared>` (a read position), `A <node> <1|0>` (invite-only), `I <user> <node> <owner>`
//! (invited), `K <user> <node> <owner>` (kicked; its `L` follows); `s:<user>`, carrying `J
//! <room> <node> <seq>`, `I <room> <node> <owner>`, `B <node> <reason>`, `R <node>` (see
//! [`control`]); `w:<node>`, which wakes that node's subscriber; `d:<user>`, carrying `<device> <node>` (a login from a device
//! there, which replaces that device's session elsewhere); `k:<user>`, carrying `<node>
//! <device> [<key> <added>]` (a key published or revoked, see [`device_keys`]); `p:<user>`, carrying `on <node>` /
//! `off <ms>` (see [`presence`]). Presence keys: `p:{user}` (set of nodes with a session of
//! theirs), `n:<node>:users`, `nodes` (sorted set: node -> lease end, ms).

pub mod accounts;
pub mod connection;
pub mod control;
pub mod device_keys;
pub mod directory;
pub mod fan_in;
pub mod log;
pub mod presence;
pub mod retention;
pub mod scripts;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use self::connection::RedisConnection;
use crate::lock_rank::{Rank, RankedMutex};
use crate::server::ChatServer;
use crate::store::{Retention, StoreError, StoreErrorKind};

/// How this node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `redis://HOST:PORT` of the one Redis primary, or `redis-cluster://HOST:PORT,...`: seed
    /// nodes of a Redis Cluster ([`connection`]).
    pub url: String,
    /// This node's name: it marks the node's posts in the shared log.
    pub node_id: String,
    /// The retention flags, applied to the rooms' streams and client ids.
    pub retention: Retention,
    /// How long a node's presence lease lasts without a heartbeat: a dead node's users go
    /// offline this long (plus the presence grace) after its last heartbeat.
    pub lease: Duration,
}

impl ClusterOptions {
    /// The node id a node gets without `--node-id`: its listening host and port, which are
    /// unique among nodes on one network.
    pub fn default_node_id(listen: std::net::SocketAddr) -> String {
        format!("{}-{}", listen.ip(), listen.port()).replace([':', ' '], "_")
    }
}

/// One node's link to the cluster: the connections, the writer's queue, and the options.
pub struct Cluster {
    node: Arc<str>,
    redis: connection::Redis,
    /// The pub/sub connection's node (`fan_in`): the server, or one seed of a Redis Cluster.
    client: redis::Client,
    /// Leaf lock: idle connections for the reads that reader threads make (history, client
    /// ids, loading rooms). Held only to take or return one, never across I/O.
    pool: RankedMutex<Vec<RedisConnection>>,
    /// To `chatd-cluster-writer` (capacity [`writer::QUEUE`]).
    jobs: Sender<writer::Job>,
    retention: Retention,
    lease: Duration,
    /// To the fence thread, once it runs: rooms to check again (see `fan_in::Feed::Recheck`).
    recheck: std::sync::OnceLock<Sender<fan_in::Feed>>,
    /// To the subscriber thread, once it runs: rooms to follow or drop (see
    /// [`Cluster::hold_room`]).
    follows: std::sync::OnceLock<Sender<fan_in::Follow>>,
    /// Set by [`Cluster::stop`]: every cluster thread checks it at least every
    /// [`THREAD_POLL`] and ends.
    stopping: Arc<AtomicBool>,
    /// Leaf lock: the threads this node started, joined by [`Cluster::stop`].
    threads: RankedMutex<Vec<JoinHandle<()>>>,
}

/// The longest a cluster thread goes without checking whether the node is stopping: the
/// bound on how long [`Cluster::stop`] waits for one of them.
pub const THREAD_POLL: Duration = Duration::from_millis(250);

/// How long a connection attempt or a reply may take before the node calls Redis
/// unreachable (`ERR store-failed` to the client, who retries with its cid).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Connects (checking Redis answers) and starts the writer thread. The fan-in starts
    /// with [`Cluster::start_fan_in`], once the server it feeds exists.
    pub fn connect(options: &ClusterOptions) -> Result<Arc<Cluster>, StoreError> {
        let redis = connection::Redis::open(&options.url)
            .map_err(|e| unavailable(format!("the cluster URL {}", options.url), e))?;
        let mut first = redis
            .connect()
            .map_err(|e| unavailable(format!("connecting to {}", options.url), e))?;
        redis::cmd("PING")
            .query::<String>(&mut first)
            .map_err(|e| unavailable(format!("PING {}", options.url), e))?;
        let node: Arc<str> = Arc::from(options.node_id.as_str());
        let stopping = Arc::new(AtomicBool::new(false));
        let (jobs, writer) = writer::start(redis.clone(), Arc::clone(&node), Arc::clone(&stopping));
        Ok(Arc::new(Cluster {
            node,
            client: redis.subscriber(),
            redis,
            pool: RankedMutex::new(Rank::Leaf, vec![first]),
            jobs,
            retention: options.retention,
            lease: options.lease,
            recheck: std::sync::OnceLock::new(),
            follows: std::sync::OnceLock::new(),
            stopping,
            threads: RankedMutex::new(Rank::Leaf, vec![writer]),
        }))
    }

    /// Stops this node's cluster threads (subscriber, fence, writer, lease, retention) and
    /// waits for them: each checks the flag at least every [`THREAD_POLL`], and the writer
    /// first sends what was queued before (the last sessions' presence and last-seen
    /// writes). Returns whether all of them ended within `patience`.
    pub fn stop(&self, patience: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + patience;
        let threads = std::mem::take(&mut *self.threads.lock());
        let mut all_ended = true;
        for thread in threads {
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                all_ended = false; // left detached: it ends at its next check
            }
        }
        all_ended
    }

    /// Whether [`Cluster::stop`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Keeps `threads` to be joined by [`Cluster::stop`].
    fn adopt_threads(&self, threads: impl IntoIterator<Item = JoinHandle<()>>) {
        self.threads.lock().extend(threads);
    }

    /// Sleeps `pause`, in steps of at most [`THREAD_POLL`]; false as soon as the node stops.
    fn pause_unless_stopping(&self, pause: Duration) -> bool {
        let until = std::time::Instant::now() + pause;
        loop {
            if self.stopping() {
                return false;
            }
            let now = std::time::Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(THREAD_POLL));
        }
    }

    /// Starts the subscriber and fence threads that settle other nodes' posts into `server`.
    /// Also starts the lease thread (`presence`); `grace` is the presence grace.
    pub fn start_fan_in(self: &Arc<Self>, server: Weak<ChatServer>, grace: Duration) {
        presence::start_leases(Arc::clone(self), server.clone(), self.lease, grace);
        retention::start(Arc::clone(self), server.clone());
        fan_in::start(Arc::clone(self), server);
    }

    /// Returns once everything this node queued for Redis before the call was sent and
    /// answered (or after [`REDIS_TIMEOUT`]): a barrier through the writer's queue. The
    /// barrier names a key: on a Redis Cluster a keyless command (`PING`) cannot be routed in
    /// a pipeline, and its error would fail the whole batch, posts included.
    pub(crate) fn flush_writes(&self) {
        let (answer, answered) = crossbeam_channel::bounded(1);
        let mut barrier = redis::cmd("EXISTS");
        barrier.arg(keys::node_users(&self.node));
        let barrier = writer::Job::Append {
            script: barrier,
            answer,
        };
        if self.jobs.send(barrier).is_ok() {
            let _ = answered.recv_timeout(REDIS_TIMEOUT);
        }
    }

    /// Queues commands behind everything this node queued before; nobody waits for them.
    fn queue(&self, commands: Vec<redis::Cmd>) {
        let _ = self.jobs.send(writer::Job::Command(commands));
    }

    /// Whether Redis is a Redis Cluster ([`connection`]).
    pub fn is_sharded(&self) -> bool {
        self.redis.is_sharded()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `f` on a pooled connection (made if none is idle). A connection that failed is
    /// dropped rather than returned; a pooled one may have died with an earlier Redis (a
    /// restart), so a failure on it is tried once more on a new connection: every use here
    /// is a read or an idempotent script.
    fn with_connection<T>(
        &self,
        doing: &str,
        mut f: impl FnMut(&mut RedisConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().pop();
        if let Some(mut connection) = pooled {
            if let Ok(value) = f(&mut connection) {
                self.pool.lock().push(connection);
                return Ok(value);
            }
        }
        let mut connection = self.open_connection().map_err(|e| unavailable(doing, e))?;
        let value = f(&mut connection).map_err(|e| unavailable(doing, e))?;
        self.pool.lock().push(connection);
        Ok(value)
    }

    fn open_connection(&self) -> redis::RedisResult<RedisConnection> {
        self.redis.connect()
    }
}

/// The keys and channel names (see the module docs).
pub mod keys {
    pub fn room(room: &str) -> String {
        format!("r:{{{room}}}")
    }
    pub fn log(room: &str) -> String {
        format!("r:{{{room}}}:log")
    }
    pub fn members(room: &str) -> String {
        format!("r:{{{room}}}:members")
    }
    pub fn reads(room: &str) -> String {
        format!("r:{{{room}}}:reads")
    }
    pub fn invites(room: &str) -> String {
        format!("r:{{{room}}}:invites")
    }
    pub fn user(user: &str) -> String {
        format!("u:{{{user}}}")
    }
    pub fn user_rooms(user: &str) -> String {
        format!("u:{{{user}}}:rooms")
    }
    /// The user's published device keys (end-to-end encrypted DMs): device -> `key added`.
    pub fn device_keys(user: &str) -> String {
        format!("u:{{{user}}}:keys")
    }
    pub fn client_id(user: &str, cid: &str) -> String {
        format!("u:{{{user}}}:cid:{cid}")
    }
    /// The client id as the SEND script checks it on a Redis Cluster: in the room's slot.
    pub fn room_client_id(room: &str, user: &str, cid: &str) -> String {
        format!("r:{{{room}}}:cid:{user}:{cid}")
    }
    /// Every room's channel starts with this; a node subscribes to the rooms it follows.
    pub const CHANNEL_PREFIX: &str = "c:";
    pub fn channel(room: &str) -> String {
        format!("{CHANNEL_PREFIX}{room}")
    }
    /// Nodes with a session of the user.
    pub fn presence(user: &str) -> String {
        format!("p:{{{user}}}")
    }
    /// The users this node has sessions of (read by whoever reaps it).
    pub fn node_users(node: &str) -> String {
        format!("n:{node}:users")
    }
    /// Every ban in force: `<kind> <target>` -> reason.
    pub const BANS: &str = "bans";
    /// Node -> lease end (ms).
    pub const NODES: &str = "nodes";
    /// A user's cluster-wide presence changes: `on <node>`, `off <ms>`.
    pub const PRESENCE_PREFIX: &str = "p:";
    pub fn presence_channel(user: &str) -> String {
        format!("{PRESENCE_PREFIX}{user}")
    }
    /// A user's device logins: `<device> <node>`.
    pub const DEVICE_PREFIX: &str = "d:";
    pub fn device_channel(user: &str) -> String {
        format!("{DEVICE_PREFIX}{user}")
    }
    /// A user's sessions on every node: `J <room> <node> <seq>` (joined a room), `B <node>
    /// <reason>` (their sessions end with that `BYE`); see [`super::control`].
    pub const SESSIONS_PREFIX: &str = "s:";
    pub fn sessions_channel(user: &str) -> String {
        format!("{SESSIONS_PREFIX}{user}")
    }
    /// A node's own channel, on which a PUBLISH wakes its subscriber thread.
    pub fn wake_channel(node: &str) -> String {
        format!("w:{node}")
    }
    /// A user's key directory changes: `<node> <device> <key> <added>` / `<node> <device>`.
    pub const KEY_PREFIX: &str = "k:";
    pub fn key_channel(user: &str) -> String {
        format!("{KEY_PREFIX}{user}")
    }
}

fn unavailable(doing: impl std::fmt::Display, e: redis::RedisError) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, format!("{doing}: redis: {e}"))
}
