//! chatd: a chat server with rooms, direct messages, presence and multi-device sessions,
//! built on plain threads and blocking sockets: no async runtime.
//!
//! Start one in-process with [`start`]; the `chatd` binary is a thin wrapper around it.
//!
//! ```no_run
//! let server = chatd::start(chatd::Config::default()).unwrap();
//! println!("listening on {}", server.local_addr());
//! ```
//!
//! # Layout
//!
//! Listed from the top (the binary, sockets) down to the vocabulary everything shares. A module
//! imports only modules below it: the domain never imports `transport`, and `store` imports
//! neither the domain nor the protocol.
//!
//! | module | role |
//! |---|---|
//! | `main.rs` | the `chatd` binary: flags (defaults from [`Config::default`]), start, shutdown |
//! | [`http`] | the HTTP front door (`--http-listen`): the web client's files, and WebSocket sessions that reuse the transport's reader, writer and limits |
//! | [`irc`] | the IRC front end (`--irc-listen`; docs/irc.md): IRC lines translated into chatd commands on the reader thread, events encoded as IRC on the writer thread; the same listener, limits and outbox as the line protocol |
//! | [`transport`] | sockets and threads: the accept loop, one reader and one writer thread per connection, capacity from OS limits, abuse limits (per-address cap, rate limit) |
//! | [`cmd`] | carrying out each command: one file per command family, each handler given a reply context |
//! | [`server`] | `ChatServer`: the directory of users and rooms; presence (sessions arriving and leaving) and accounts beside it |
//! | [`room`] | `Room`: members, seqs (the room's lock is the seq authority), access, and `broadcast`, the one loop over a room's members; [`recent`]: its in-memory log and the server's memory budget for them |
//! | [`user`], [`session`] | `User`: one person, their rooms and sessions; `Session`: one logged-in device |
//! | [`delivery`] | what the domain queues to a session: `Line` (a typed event, encoded once per protocol), `Outbox` (slow-consumer verdict, close), `Queue` (the bounded queue, in two stages), `Reply` (the reply context), `Doorbell` (waking a writer), `Encoder` (a connection's protocol, under its write lock) |
//! | [`event`] | `Event`: every reply and event the server sends, as typed values |
//! | [`protocol`] | the chatd line protocol: the verb table and parser (lines in), the encoder (events out) |
//! | [`store`] | the `Store` trait; `memory`, `sqlite` and `postgres` (group commit on one writer thread) |
//! | [`cluster`] | cluster mode (`--cluster`): Redis as the rooms' shared log and store, the fan-in that settles other nodes' posts, shared rooms and users (docs/cluster.md) |
//! | [`accounts`], [`quota`], [`timers`], [`client_ids`], [`typing`] | password hashing and the login throttle; creation quotas; deferred work (presence grace, typing expiry, the memory sweep); the idempotent-send window; typing rules |
//! | [`keys`] | the key directory's vocabulary (device public keys for end-to-end encrypted DMs; docs/e2e.md) |
//! | [`message`], [`room_name`], [`rate`], [`lock_rank`], [`config`], [`stats`] | shared vocabulary: messages, room kinds and DM names, token buckets, the lock table, tunables, counters |
//! | [`metrics`] | `GET /metrics`, `/healthz`, `/readyz`: the Prometheus text format over [`stats`], the store's figures and `/proc`; its `Histogram` is vocabulary `stats` uses |
//! | [`logging`], [`config_file`] | the logger behind the `log` macros (levels per module, text or JSON lines); `--config` files turned into flags |
//!
//! docs/design.md ends with "How to extend chatd": the files to touch to add a command, a
//! transport or a store backend.
//!
//! # Concurrency model
//!
//! Threads:
//! - `chatd-accept` (and `chatd-accept-irc` with `--irc-listen`): blocks in `accept`; refuses connections over capacity or over their
//!   address's share without spawning anything; otherwise starts the connection's two threads.
//! - `chatd-http` (with `--http-listen`): accepts HTTP connections with the same checks at the
//!   door; `chatd-h<id>`, one per admitted HTTP connection, reads its request head (bounded in
//!   size and time), answers it, or starts a WebSocket session's reader and writer and ends.
//! - `chatd-r<id>` (reader, one per connection): reads a line, parses it, carries it out
//!   (`cmd`), calling into `ChatServer`/`Room`. All state changes happen on reader threads.
//! - `chatd-w<id>` (writer, one per connection): drains the connection's queue into its
//!   socket, encoding each line for the connection's protocol (once per line and protocol,
//!   shared with every other writer) and batching whatever is queued into one write; parks at
//!   once when idle (`delivery::doorbell`). A fan-out writes a line to an *idle* chatd or
//!   IRC connection itself instead, with one non-blocking `send` after the room's lock is
//!   released (`delivery::write_through`), and wakes the writer only for what the socket
//!   did not take.
//! - `chatd-store` (SQLite and PostgreSQL): commits every queued write as one transaction, then
//!   resolves the writes' tickets; posters wait on their ticket, outside every room lock.
//! - Cluster mode only (`crate::cluster`): `chatd-cluster-writer` sends every queued post and
//!   write to Redis as one pipeline; `chatd-cluster-sub` reads the pub/sub connection and
//!   keeps its subscriptions to the rooms this node follows (hold/release requests on a
//!   bounded channel of 65,536; pushes to the fence thread on one of 65,536);
//!   `chatd-cluster-fence` settles its pushes into rooms once they are known durable, and
//!   repairs holes from the rooms' streams; `chatd-cluster-lease` renews the node's presence
//!   lease; `chatd-cluster-retention` (with `--retention-days`) trims the streams by age.
//!   Each checks a stop flag at least every 250 ms; shutdown joins them (`Cluster::stop`).
//! - `chatd-timers`: sleeps until the next due item (an offline announcement after the
//!   presence grace period, a typing expiry, the 5 s memory sweep), re-checks it against
//!   current state, acts.
//!
//! Channels: each connection has one bounded queue of `Arc<Line>` (capacity
//! [`Config::channel_capacity`], default 1,024): a crossbeam channel of 32 lines, and a second
//! one of the rest of the capacity made the first time those fill (`delivery::queue`, so an
//! idle session does not hold 16 KiB of empty slots). Senders: any reader thread, via fan-out
//! (`try_send`, never blocks) or its own replies (`send_timeout`, outside all locks).
//! Receiver: that connection's writer. A full channel marks a slow consumer, which is
//! disconnected; nobody ever waits for another connection's socket. One bounded channel
//! feeds `chatd-timers` (capacity 65,536; `try_send`, and a full schedule means the item is
//! done at once instead), and one feeds `chatd-store` (16,384 writes; `send`, the one wait a
//! room's lock may see: backpressure from the disk, and the store never takes a room lock;
//! a user's `device_keys` lock may see it too, for a key change).
//!
//! Locks: **the lock table is [`lock_rank::Rank`]**, the one place the order is written; each
//! lock field names its rank and points there. In short, locks nest only in this order:
//! 0. `User::device_keys` — one user's device keys (KEY, KEYS, REVOKE; held across queueing
//!    a key change's store write)
//! 1. `User::presence` — one user's presence transitions (never two users' at once)
//! 2. `User::client_ids` — one user's recent client message ids
//! 3. `Room::state` — members, recent log, seqs, pending posts, reads, typing, access
//!    (never two rooms)
//! 4. `User::state` — sessions, room set, presence as shown (never two users at once)
//! 5. `Outbox::closing` — why the connection is closing
//!
//! plus `Outbox::writing`, a session's write lock, outside the order because it is only ever
//! `try_lock`ed by anyone but its writer thread (see `lock_rank::Rank`);
//! and leaf locks (the directories, registries, throttles, tickets: see `Rank::Leaf`) are
//! never held while taking another. Every other lock is a `RankedMutex`/`RankedRwLock`: in
//! debug builds, so in every test, taking one out of order panics naming both locks. No lock
//! but a session's own write lock is ever held across socket I/O. Functions that need the presence lock take a
//! `PresenceGuard`, and functions that need a room's lock take its `RoomState`, so those
//! rules are checked by the compiler.

pub mod accounts;
pub mod client_ids;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod config_file;
pub mod delivery;
pub mod event;
pub mod http;
pub mod irc;
pub mod keys;
pub mod lock_rank;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod protocol;
pub mod quota;
pub mod rate;
pub mod recent;
pub mod room;
pub mod room_name;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod timers;
pub mod transport;
pub mod typing;
pub mod user;

pub use config::Config;
pub use server::ChatServer;
pub use transport::listener::{start, ServerHandle};
