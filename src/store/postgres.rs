//! The PostgreSQL store: the same shape as the SQLite one (one `chatd-store` writer thread
//! doing group commit, a small pool of read connections), on a database server operators
//! already back up, replicate and query.
//!
//! Durability: a ticket resolves only after PostgreSQL has answered the batch's `COMMIT`, so
//! an acknowledged message is as safe as the server's `synchronous_commit` makes a commit
//! (the default, `on`, means flushed to its WAL).
//!
//! A lost connection (the database restarted, a network cut): the batch in flight fails its
//! tickets (posters get `ERR store-failed`, never a false OK), and the writer reconnects with
//! backoff; batches arriving meanwhile fail at once rather than queue behind the outage.
//! Writes without a ticket (memberships, read positions, last_seen) are kept and replayed
//! after the reconnect: they are idempotent, and nobody was told they failed.
//!
//! One ambiguity no client library can remove: if the connection dies after `COMMIT` was
//! sent but before its answer arrived, the batch may be stored although its tickets said it
//! failed. That is a false `ERR`, never a false OK; a client retrying with the same cid gets
//! the stored original back.
//!
//! The `postgres` crate is a blocking facade over `tokio-postgres`: each `Client` owns a
//! small tokio runtime that drives its socket. chatd's own threads never see it: they call
//! blocking methods, as they do on SQLite. See docs/design.md, "Persistence".

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::{
    BanTarget, Retention, Snapshot, Store, StoreError, StoreErrorKind, StoredAccount,
    StoredDeviceKey, StoredRoom, StoredUser, Ticket, Write,
};
use crate::client_ids::Published;
use crate::lock_rank::{Rank, RankedMutex};
use crate::message::Message;
use crate::metrics::Histogram;
use crate::room_name::{dm_peer, RoomKind};

/// The schema version this build writes: one per migration. A database with a higher version
/// was written by a newer chatd and is refused rather than risk damaging it.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations, in order: `MIGRATIONS[n]` takes a database from version n to n + 1. Version 1
/// is SQLite's version 3 (accounts, room access, cid fingerprints) in PostgreSQL's dialect:
/// no PostgreSQL database predates them. `user` is reserved in PostgreSQL, hence `username`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        last_seen BIGINT,                       -- ms since the epoch, UTC
        share_receipts BOOLEAN NOT NULL DEFAULT TRUE,
        password_hash TEXT                      -- argon2id PHC string; NULL: no account
    );
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                     -- 'public' | 'direct'
        epoch TEXT NOT NULL,
        seq BIGINT NOT NULL DEFAULT 0,          -- last seq assigned and stored
        owner TEXT,                             -- NULL for direct rooms
        private BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE TABLE members (
        room TEXT NOT NULL,
        username TEXT NOT NULL,
        PRIMARY KEY (room, username)
    );
    CREATE TABLE invites (
        room TEXT NOT NULL,
        username TEXT NOT NULL,
        PRIMARY KEY (room, username)
    );
    CREATE TABLE messages (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        id BYTEA NOT NULL,                      -- UUIDv7, 16 bytes
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at BIGINT NOT NULL,                -- ms since the epoch, UTC
        PRIMARY KEY (room, seq)
    );
    CREATE INDEX messages_by_time ON messages (sent_at);
    CREATE TABLE client_ids (
        username TEXT NOT NULL,
        cid TEXT NOT NULL,
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        msg_id BYTEA NOT NULL,
        at BIGINT NOT NULL,                     -- ms since the epoch, UTC
        fingerprint BIGINT,                     -- client_ids::fingerprint, bit for bit
        PRIMARY KEY (username, cid)
    );
    CREATE INDEX client_ids_by_time ON client_ids (at);
    CREATE TABLE reads (
        room TEXT NOT NULL,
        username TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (room, username)
    );
"#,
    // 2: the key directory for end-to-end encrypted DMs (docs/e2e.md).
    r#"
    CREATE TABLE device_keys (
        username TEXT NOT NULL,
        device TEXT NOT NULL,
        key TEXT NOT NULL,                      -- X25519 public key, 64 lower-case hex digits
        added BIGINT NOT NULL,                  -- ms since the epoch, UTC
        PRIMARY KEY (username, device)
    );
"#,
    // 3: operators and bans (issue 16); SQLite's version 5.
    r#"
    ALTER TABLE users ADD COLUMN operator BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE bans (
        kind TEXT NOT NULL,                     -- 'user' | 'address'
        target TEXT NOT NULL,                   -- a user name, or an IP address as text
        reason TEXT NOT NULL DEFAULT '',
        at BIGINT NOT NULL,                     -- ms since the epoch, UTC
        PRIMARY KEY (kind, target)
    );
"#,
];

/// Writes waiting for the writer thread: as for SQLite, deep enough for bursts; when full,
/// posters wait (backpressure from the database).
const QUEUE_CAPACITY: usize = 16_384;
/// Most writes committed in one transaction, so one batch cannot hold its tickets forever.
const MAX_BATCH: usize = 8_192;
/// Ticketless writes kept for replay across an outage. Past it the oldest are dropped (and
/// said so): an outage long enough to fill it is one an operator is already looking at.
const MAX_REPLAY: usize = 65_536;
/// Reconnect backoff: first retry soon (a restart takes about a second), then at most this
/// often, so a database that is down is not hammered.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Read connections kept open between reads: about what two cores can use at once.
const MAX_IDLE_READERS: usize = 4;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq connection string: `postgres://user:pass@host:port/db` or
    /// `host=/run/postgresql dbname=chatd`.
    pub url: String,
    pub retention: Retention,
}

pub struct PostgresStore {
    queue: Sender<(Write, Option<Ticket>)>,
    /// Joined on drop, after the queue is closed, so writes queued before a clean shutdown
    /// are committed before the process exits.
    writer: Option<thread::JoinHandle<()>>,
    /// Leaf lock: idle read connections, taken by reader threads for HISTORY, SYNC and
    /// client-id look-ups, and put back after (unless the connection died).
    readers: RankedMutex<Vec<Client>>,
    config: postgres::Config,
    /// Names the database in errors without its password.
    describe: String,
    client_id_ttl: Duration,
    /// Filled by the writer thread, one observation per batch.
    commit_latency: Arc<Histogram>,
}

impl PostgresStore {
    /// Connects, migrates the schema, then starts the writer thread. Fails if the database
    /// cannot be reached now: a server that starts must be able to store.
    pub fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let mut config: postgres::Config = options.url.parse().map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("parsing the database url: {e}"),
            )
        })?;
        // A dead peer must not hang the writer (and every poster behind it) forever.
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("chatd");
        let describe = describe(&config);
        let mut writer = connect(&config).map_err(|e| e.context(format!("opening {describe}")))?;
        migrate(&mut writer).map_err(|e| e.context(format!("opening {describe}")))?;
        let statements = Statements::prepare(&mut writer)
            .map_err(|e| fail(&describe, "preparing statements on", e))?;
        let (queue, queued) = bounded(QUEUE_CAPACITY);
        let writer_state = Writer {
            db: Some((writer, statements)),
            config: config.clone(),
            describe: describe.clone(),
            backoff: FIRST_BACKOFF,
            next_attempt: Instant::now(),
            replay: Vec::new(),
        };
        let retention = options.retention;
        let commit_latency = Arc::new(Histogram::latency());
        let latency = Arc::clone(&commit_latency);
        let writer = thread::Builder::new()
            .name("chatd-store".into())
            .spawn(move || write_loop(writer_state, queued, retention, &latency))
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("starting the store writer thread: {e}"),
                )
            })?;
        Ok(PostgresStore {
            queue,
            writer: Some(writer),
            readers: RankedMutex::new(Rank::Leaf, Vec::new()),
            config,
            describe,
            client_id_ttl: options.retention.client_id_ttl,
            commit_latency,
        })
    }

    fn with_reader<T>(
        &self,
        read: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => connect(&self.config)
                .map_err(|e| e.context(format!("reading {}", self.describe)))?,
        };
        let result = read(&mut connection).map_err(|e| fail(&self.describe, "reading", e));
        // A connection that died (the database restarted) is dropped; the next read opens a
        // fresh one.
        if !connection.is_closed() {
            let mut idle = self.readers.lock();
            if idle.len() < MAX_IDLE_READERS {
                idle.push(connection);
            }
        }
        result
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Disconnect the queue (the writer commits what is left, then sees it closed).
        let (closed, _) = bounded(0);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Sorts PostgreSQL's SQLSTATE classes into the kinds a caller can act on; the text stays
/// PostgreSQL's.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        let kind = match e.code().map(|state| state.code()) {
            Some("53100") => StoreErrorKind::Full,
            Some("42501") => StoreErrorKind::Unwritable,
            Some("XX001" | "XX002") => StoreErrorKind::Corrupt,
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                StoreErrorKind::Unavailable
            }
            Some("3D000" | "28000" | "28P01") => StoreErrorKind::Unavailable,
            Some(_) => StoreErrorKind::Other,
            // No SQLSTATE: the socket, not the database, failed.
            None => StoreErrorKind::Unavailable,
        };
        // Display of a server error is only "db error"; the detail is in its source.
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        StoreError::new(kind, text)
    }
}

fn fail(describe: &str, doing: &str, e: postgres::Error) -> StoreError {
    StoreError::from(e).context(format_args!("{doing} {describe}"))
}

/// `database "chatd" on 127.0.0.1:5432`: what to name in errors (never the password).
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "PostgreSQL database {:?} on {}:{}",
        config.get_dbname().unwrap_or("(default)"),
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        }
    )
}

fn connect(config: &postgres::Config) -> Result<Client, StoreError> {
    config.connect(NoTls).map_err(StoreError::from)
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing a newer one. The version lives in a
/// one-row table (PostgreSQL has no `user_version`); DDL is transactional, so each
/// migration and its version bump commit together or not at all.
fn migrate(db: &mut Client) -> Result<(), StoreError> {
    let version = (|| -> Result<i64, postgres::Error> {
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS chatd_schema (version BIGINT NOT NULL);
             INSERT INTO chatd_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM chatd_schema);",
        )?;
        Ok(db
            .query_one("SELECT max(version) FROM chatd_schema", &[])?
            .get(0))
    })()
    .map_err(|e| StoreError::from(e).context("reading the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::new(
            StoreErrorKind::NewerSchema,
            format!(
                "the database has schema version {version}, newer than this chatd understands \
                 ({SCHEMA_VERSION}); refusing to open it rather than risk damaging it"
            ),
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let apply = |db: &mut Client| -> Result<(), postgres::Error> {
            let mut tx = db.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute(
                "UPDATE chatd_schema SET version = $1",
                &[&(from as i64 + 1)],
            )?;
            tx.commit()
        };
        apply(db).map_err(|e| {
            StoreError::from(e)
                .context(format_args!("migrating the schema to version {}", from + 1))
        })?;
    }
    Ok(())
}

fn millis(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Public => "public",
        RoomKind::Direct => "direct",
    }
}

const MESSAGE_COLUMNS: &str = "seq, id, sender, body, sent_at";

fn message_from_row(room: &Arc<str>, row: &postgres::Row) -> Message {
    let id: Vec<u8> = row.get(1);
    let sender: String = row.get(2);
    let body: String = row.get(3);
    Message {
        id: Uuid::from_slice(&id).unwrap_or_default(),
        room: Arc::clone(room),
        seq: row.get::<_, i64>(0) as u64,
        sender: Arc::from(sender),
        body: body.into_boxed_str(),
        sent_at: from_millis(row.get(4)),
    }
}

impl Store for PostgresStore {
    fn load(&self, recent_per_room: usize) -> Result<Snapshot, StoreError> {
        self.with_reader(|db| {
            let users = db
                .query(
                    "SELECT name, last_seen, share_receipts, password_hash FROM users",
                    &[],
                )?
                .iter()
                .map(|row| StoredUser {
                    name: row.get(0),
                    password_hash: row.get(3),
                    last_seen: row.get::<_, Option<i64>>(1).map(from_millis),
                    share_receipts: row.get(2),
                })
                .collect();
            let mut rooms: Vec<StoredRoom> = db
                .query(
                    "SELECT name, kind, epoch, seq, owner, private FROM rooms",
                    &[],
                )?
                .iter()
                .map(|row| StoredRoom {
                    name: row.get(0),
                    kind: if row.get::<_, &str>(1) == "direct" {
                        RoomKind::Direct
                    } else {
                        RoomKind::Public
                    },
                    epoch: row.get(2),
                    seq: row.get::<_, i64>(3) as u64,
                    members: Vec::new(),
                    reads: Vec::new(),
                    recent: Vec::new(),
                    owner: row.get(4),
                    private: row.get(5),
                    invited: Vec::new(),
                })
                .collect();
            // Whole tables in one query each rather than a query per room: start-up is a
            // handful of round trips however many rooms there are.
            let mut by_name: HashMap<String, usize> = HashMap::new();
            for (i, room) in rooms.iter().enumerate() {
                by_name.insert(room.name.clone(), i);
            }
            for row in db.query("SELECT room, username FROM members", &[])? {
                if let Some(&i) = by_name.get(row.get::<_, &str>(0)) {
                    rooms[i].members.push(row.get(1));
                }
            }
            for row in db.query("SELECT room, username FROM invites", &[])? {
                if let Some(&i) = by_name.get(row.get::<_, &str>(0)) {
                    rooms[i].invited.push(row.get(1));
                }
            }
            for row in db.query("SELECT room, username, seq FROM reads", &[])? {
                if let Some(&i) = by_name.get(row.get::<_, &str>(0)) {
                    rooms[i]
                        .reads
                        .push((row.get(1), row.get::<_, i64>(2) as u64));
                }
            }
            // Each room's newest messages by the primary key, newest first: an index range
            // scan per room, so start-up does not read the whole table.
            let recent = db.prepare(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE room = $1 ORDER BY seq DESC LIMIT $2"
            ))?;
            for room in &mut rooms {
                let name: Arc<str> = Arc::from(room.name.as_str());
                let mut messages: Vec<Message> = db
                    .query(&recent, &[&room.name, &(recent_per_room as i64)])?
                    .iter()
                    .map(|row| message_from_row(&name, row))
                    .collect();
                messages.reverse();
                room.recent = messages;
            }
            let device_keys = db
                .query("SELECT username, device, key, added FROM device_keys", &[])?
                .iter()
                .map(|row| StoredDeviceKey {
                    user: row.get(0),
                    device: row.get(1),
                    key: row.get(2),
                    added: from_millis(row.get(3)),
                })
                .collect();
            Ok(Snapshot {
                users,
                rooms,
                device_keys,
            })
        })
    }

    fn write(&self, write: Write, ticket: Option<Ticket>) {
        if let Err(e) = self.queue.send((write, ticket)) {
            // Only if the writer thread died; say so rather than leave the poster waiting.
            let (_, ticket) = e.into_inner();
            if let Some(ticket) = ticket {
                ticket.resolve(Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "the store writer has stopped",
                )));
            }
        }
    }

    fn messages(
        &self,
        room: &str,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let name: Arc<str> = Arc::from(room);
        let after = after.min(i64::MAX as u64) as i64;
        let before = before.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_reader(|db| {
            let rows = db.query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4"
                ),
                &[&room, &after, &before, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|row| message_from_row(&name, row))
                .collect())
        })
    }

    fn account(&self, user: &str) -> Result<Option<StoredAccount>, StoreError> {
        self.with_reader(|db| {
            let row = db.query_opt(
                "SELECT password_hash, operator,
                        EXISTS (SELECT 1 FROM bans WHERE kind = 'user' AND target = name)
                 FROM users WHERE name = $1",
                &[&user],
            )?;
            Ok(row.map(|row| StoredAccount {
                password_hash: row.get(0),
                operator: row.get(1),
                banned: row.get(2),
            }))
        })
    }

    fn bans(&self) -> Result<Option<Vec<BanTarget>>, StoreError> {
        self.with_reader(|db| {
            let rows = db.query("SELECT kind, target FROM bans", &[])?;
            Ok(Some(
                rows.iter()
                    .filter_map(|row| BanTarget::from_columns(row.get(0), row.get(1)))
                    .collect(),
            ))
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with_reader(|db| db.simple_query("SELECT 1").map(drop))
    }

    fn queue_len(&self) -> usize {
        self.queue.len()
    }

    fn commit_latency(&self) -> Option<&Histogram> {
        Some(&self.commit_latency)
    }

    fn client_id(&self, user: &str, cid: &str) -> Result<Option<Published>, StoreError> {
        let oldest = millis(&Utc::now()) - self.client_id_ttl.as_millis() as i64;
        self.with_reader(|db| {
            let row = db.query_opt(
                "SELECT room, seq, msg_id, fingerprint FROM client_ids
                 WHERE username = $1 AND cid = $2 AND at >= $3",
                &[&user, &cid, &oldest],
            )?;
            Ok(row.map(|row| {
                let room: String = row.get(0);
                let id: Vec<u8> = row.get(2);
                let to = dm_peer(&room, user).map(Arc::from);
                Published {
                    room: Arc::from(room),
                    seq: row.get::<_, i64>(1) as u64,
                    id: Uuid::from_slice(&id).unwrap_or_default(),
                    to,
                    // Stored as a signed 64-bit integer, bit for bit.
                    fingerprint: row.get::<_, Option<i64>>(3).map(|f| f as u64),
                }
            }))
        })
    }
}

/// The writer's statements, prepared once per connection (a prepared statement belongs to
/// the connection that prepared it, so a reconnect prepares them again).
struct Statements {
    user: Statement,
    room: Statement,
    room_access: Statement,
    invite: Statement,
    uninvite: Statement,
    password: Statement,
    join: Statement,
    leave_member: Statement,
    leave_read: Statement,
    messages: Statement,
    client_ids: Statement,
    read: Statement,
    reads: Statement,
    last_seen: Statement,
    share_receipts: Statement,
    room_seqs: Statement,
    device_key: Statement,
    revoke_device: Statement,
}

impl Statements {
    fn prepare(db: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            user: db.prepare("INSERT INTO users (name) VALUES ($1) ON CONFLICT DO NOTHING")?,
            room: db.prepare(
                "INSERT INTO rooms (name, kind, epoch, owner) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )?,
            room_access: db.prepare("UPDATE rooms SET private = $2 WHERE name = $1")?,
            invite: db.prepare(
                "INSERT INTO invites (room, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )?,
            uninvite: db.prepare("DELETE FROM invites WHERE room = $1 AND username = $2")?,
            password: db.prepare("UPDATE users SET password_hash = $2 WHERE name = $1")?,
            join: db.prepare(
                "INSERT INTO members (room, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )?,
            leave_member: db.prepare("DELETE FROM members WHERE room = $1 AND username = $2")?,
            leave_read: db.prepare("DELETE FROM reads WHERE room = $1 AND username = $2")?,
            // A batch's messages, client ids, room seqs and poster reads each go in one
            // statement over arrays: one round trip for a thousand messages, not a thousand.
            messages: db.prepare(
                "INSERT INTO messages (room, seq, id, sender, body, sent_at)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bytea[], $4::text[],
                                      $5::text[], $6::bigint[])",
            )?,
            client_ids: db.prepare(
                "INSERT INTO client_ids (username, cid, room, seq, msg_id, at, fingerprint)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[],
                                      $5::bytea[], $6::bigint[], $7::bigint[])
                 ON CONFLICT (username, cid) DO UPDATE SET room = excluded.room,
                   seq = excluded.seq, msg_id = excluded.msg_id, at = excluded.at,
                   fingerprint = excluded.fingerprint",
            )?,
            // Read positions only move forward.
            read: db.prepare(
                "INSERT INTO reads (room, username, seq) VALUES ($1, $2, $3)
                 ON CONFLICT (room, username) DO UPDATE
                 SET seq = GREATEST(reads.seq, excluded.seq)",
            )?,
            reads: db.prepare(
                "INSERT INTO reads (room, username, seq)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT (room, username) DO UPDATE
                 SET seq = GREATEST(reads.seq, excluded.seq)",
            )?,
            last_seen: db.prepare("UPDATE users SET last_seen = $2 WHERE name = $1")?,
            share_receipts: db.prepare("UPDATE users SET share_receipts = $2 WHERE name = $1")?,
            room_seqs: db.prepare(
                "UPDATE rooms SET seq = GREATEST(rooms.seq, posted.seq)
                 FROM UNNEST($1::text[], $2::bigint[]) AS posted (name, seq)
                 WHERE rooms.name = posted.name",
            )?,
            device_key: db.prepare(
                "INSERT INTO device_keys (username, device, key, added) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (username, device) DO UPDATE
                 SET key = excluded.key, added = excluded.added",
            )?,
            revoke_device: db
                .prepare("DELETE FROM device_keys WHERE username = $1 AND device = $2")?,
        })
    }
}

/// The writer thread's state: its connection (none while the database is unreachable), when
/// to try reconnecting, and the ticketless writes to replay once it does.
struct Writer {
    db: Option<(Client, Statements)>,
    config: postgres::Config,
    describe: String,
    backoff: Duration,
    next_attempt: Instant,
    replay: Vec<Write>,
}

type Queued = (Write, Option<Ticket>);

impl Writer {
    /// The live connection, reconnecting if the backoff allows. `None`: still down.
    fn connection(&mut self) -> Option<&mut (Client, Statements)> {
        if self.db.is_none() && Instant::now() >= self.next_attempt {
            let attempt = connect(&self.config).and_then(|mut db| {
                let statements = Statements::prepare(&mut db).map_err(StoreError::from)?;
                Ok((db, statements))
            });
            match attempt {
                Ok(db) => {
                    log::info!(database:% = self.describe; "store reconnected");
                    self.db = Some(db);
                    self.backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    log::error!(
                        database:% = self.describe, error:% = e,
                        retry_ms = self.backoff.as_millis() as u64;
                        "store reconnect failed"
                    );
                    self.next_attempt = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.db.as_mut()
    }

    /// Forgets a connection that failed, so the next batch reconnects.
    fn lost(&mut self, e: &StoreError) {
        log::error!(database:% = self.describe, error:% = e; "store connection lost");
        self.db = None;
        self.next_attempt = Instant::now();
    }

    /// Keeps the batch's ticketless writes for replay; fails the ticketed ones.
    fn fail_batch(&mut self, batch: &mut Vec<Queued>, error: &StoreError) {
        for (write, ticket) in batch.drain(..) {
            match ticket {
                Some(ticket) => ticket.resolve(Err(error.clone())),
                None => self.replay.push(write),
            }
        }
        if self.replay.len() > MAX_REPLAY {
            let dropped = self.replay.len() - MAX_REPLAY;
            self.replay.drain(..dropped);
            log::error!(
                database:% = self.describe, dropped = dropped as u64;
                "store unreachable too long; dropped membership, read and last_seen writes"
            );
        }
    }

    /// Commits the batch (after any replayed writes) as one transaction and resolves its
    /// tickets. On a database error, retries each write alone so one bad write fails only
    /// itself; on a lost connection, fails the batch and reconnects next time.
    fn commit_batch(&mut self, batch: &mut Vec<Queued>) {
        let unavailable = |describe: &str| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("{describe} is unreachable; reconnecting"),
            )
        };
        let replay = std::mem::take(&mut self.replay);
        let Some((db, statements)) = self.connection() else {
            self.replay = replay;
            let error = unavailable(&self.describe);
            self.fail_batch(batch, &error);
            return;
        };
        let writes: Vec<&Write> = replay
            .iter()
            .chain(batch.iter().map(|(write, _)| write))
            .collect();
        let outcome = apply_in_transaction(db, statements, &writes);
        let closed = db.is_closed();
        drop(writes);
        match outcome {
            Ok(()) => {
                for (_, ticket) in batch.drain(..) {
                    if let Some(ticket) = ticket {
                        ticket.resolve(Ok(()));
                    }
                }
            }
            Err(e) if closed || e.kind() == StoreErrorKind::Unavailable => {
                self.lost(&e);
                self.replay = replay;
                self.fail_batch(batch, &e);
            }
            Err(e) => {
                log::error!(database:% = self.describe, error:% = e; "store write failed");
                // One at a time: replayed writes first, then the batch in order.
                let (db, statements) = self.db.as_mut().expect("connected");
                for write in &replay {
                    let _ = apply_in_transaction(db, statements, &[write]);
                }
                for (write, ticket) in batch.drain(..) {
                    let outcome = apply_in_transaction(db, statements, &[&write]);
                    if let Err(e) = &outcome {
                        log::error!(database:% = self.describe, error:% = e; "store write failed");
                    }
                    if let Some(ticket) = ticket {
                        ticket.resolve(outcome);
                    }
                }
                if db.is_closed() {
                    let e = unavailable(&self.describe);
                    self.lost(&e);
                }
            }
        }
    }
}

/// The writer thread: takes whatever is queued (up to MAX_BATCH), commits it as one
/// transaction, resolves the tickets; runs the retention pass when due. Ends when the store
/// is dropped (the queue disconnects).
fn write_loop(
    mut writer: Writer,
    queued: Receiver<Queued>,
    retention: Retention,
    commit_latency: &Histogram,
) {
    let mut next_retention = Instant::now();
    let mut batch: Vec<Queued> = Vec::new();
    loop {
        if Instant::now() >= next_retention {
            if let Some((db, _)) = writer.connection() {
                if let Err(e) = apply_retention(db, &retention) {
                    log::error!(database:% = writer.describe, error:% = e; "store retention failed");
                }
            }
            next_retention = Instant::now() + retention.interval;
        }
        // While writes wait for replay, wake to retry the connection even if nobody posts.
        let mut wait = next_retention.saturating_duration_since(Instant::now());
        if !writer.replay.is_empty() {
            wait = wait.min(
                writer
                    .next_attempt
                    .saturating_duration_since(Instant::now()),
            );
        }
        match queued.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {
                if !writer.replay.is_empty() && Instant::now() >= writer.next_attempt {
                    writer.commit_batch(&mut batch);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if !writer.replay.is_empty() {
                    writer.commit_batch(&mut batch);
                }
                return;
            }
        }
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        writer.commit_batch(&mut batch);
        // One writer thread: one shard is all it needs.
        commit_latency.observe_duration(0, started.elapsed());
    }
}

fn apply_in_transaction(
    db: &mut Client,
    statements: &Statements,
    writes: &[&Write],
) -> Result<(), StoreError> {
    let run = |db: &mut Client| -> Result<(), postgres::Error> {
        let mut tx = db.transaction()?;
        // Other writes in queue order; messages (and their client ids) after them, together.
        // Only message writes touch those two tables, so this keeps every row's order.
        let mut posted = Posted::default();
        for write in writes {
            match write {
                Write::Message { message, client_id } => posted.add(message, client_id.as_ref()),
                other => apply(&mut tx, statements, other)?,
            }
        }
        posted.insert(&mut tx, statements)?;
        tx.commit()
    };
    // No database name in this text: it reaches the poster in `ERR store-failed`.
    run(db).map_err(StoreError::from)
}

/// A batch's messages as columns, for the array inserts.
#[derive(Default)]
struct Posted<'a> {
    rooms: Vec<&'a str>,
    seqs: Vec<i64>,
    ids: Vec<&'a [u8]>,
    senders: Vec<&'a str>,
    bodies: Vec<&'a str>,
    sent_at: Vec<i64>,
    /// `(user, cid)` -> index of its message; a map, so one statement never updates a row
    /// twice (PostgreSQL refuses that).
    client_ids: HashMap<(&'a str, &'a str), (usize, u64)>,
    /// Each room's highest seq, and each poster's read position (posting marks the room read
    /// up to one's own message): once per batch rather than per message.
    room_seqs: HashMap<&'a str, i64>,
    poster_reads: HashMap<(&'a str, &'a str), i64>,
}

impl<'a> Posted<'a> {
    fn add(&mut self, message: &'a Message, client_id: Option<&'a super::PostedId>) {
        let seq = message.seq as i64;
        if let Some(posted) = client_id {
            self.client_ids.insert(
                (&posted.user, &posted.cid),
                (self.seqs.len(), posted.fingerprint),
            );
        }
        self.rooms.push(&message.room);
        self.seqs.push(seq);
        self.ids.push(message.id.as_bytes());
        self.senders.push(&message.sender);
        self.bodies.push(&message.body);
        self.sent_at.push(millis(&message.sent_at));
        let room = self.room_seqs.entry(&message.room).or_default();
        *room = (*room).max(seq);
        let read = self
            .poster_reads
            .entry((&message.room, &message.sender))
            .or_default();
        *read = (*read).max(seq);
    }

    fn insert(
        &self,
        tx: &mut postgres::Transaction<'_>,
        statements: &Statements,
    ) -> Result<(), postgres::Error> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        tx.execute(
            &statements.messages,
            &[
                &self.rooms,
                &self.seqs,
                &self.ids,
                &self.senders,
                &self.bodies,
                &self.sent_at,
            ],
        )?;
        if !self.client_ids.is_empty() {
            let now = millis(&Utc::now());
            let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut ids = Vec::new();
            let mut fingerprints = Vec::new();
            for (&(user, cid), &(i, fingerprint)) in &self.client_ids {
                columns.0.push(user);
                columns.1.push(cid);
                columns.2.push(self.rooms[i]);
                columns.3.push(self.seqs[i]);
                ids.push(self.ids[i]);
                // Stored as a signed 64-bit integer, bit for bit.
                fingerprints.push(fingerprint as i64);
            }
            let at = vec![now; ids.len()];
            tx.execute(
                &statements.client_ids,
                &[
                    &columns.0,
                    &columns.1,
                    &columns.2,
                    &columns.3,
                    &ids,
                    &at,
                    &fingerprints,
                ],
            )?;
        }
        let (rooms, seqs): (Vec<&str>, Vec<i64>) = self.room_seqs.iter().unzip();
        tx.execute(&statements.room_seqs, &[&rooms, &seqs])?;
        let mut reads = (Vec::new(), Vec::new(), Vec::new());
        for (&(room, user), &seq) in &self.poster_reads {
            reads.0.push(room);
            reads.1.push(user);
            reads.2.push(seq);
        }
        tx.execute(&statements.reads, &[&reads.0, &reads.1, &reads.2])?;
        Ok(())
    }
}

fn apply(
    tx: &mut postgres::Transaction<'_>,
    statements: &Statements,
    write: &Write,
) -> Result<(), postgres::Error> {
    match write {
        Write::User { name } => {
            tx.execute(&statements.user, &[&&**name])?;
        }
        Write::Room {
            name,
            kind,
            epoch,
            owner,
        } => {
            let owner: Option<&str> = owner.as_deref();
            tx.execute(
                &statements.room,
                &[&&**name, &kind_name(*kind), &&**epoch, &owner],
            )?;
        }
        Write::RoomAccess { room, private } => {
            tx.execute(&statements.room_access, &[&&**room, private])?;
        }
        Write::Invite { room, user } => {
            tx.execute(&statements.invite, &[&&**room, &&**user])?;
        }
        Write::Uninvite { room, user } => {
            tx.execute(&statements.uninvite, &[&&**room, &&**user])?;
        }
        Write::Password { user, hash } => {
            tx.execute(&statements.password, &[&&**user, &&**hash])?;
        }
        Write::Join { room, user } => {
            tx.execute(&statements.join, &[&&**room, &&**user])?;
        }
        Write::Leave { room, user } => {
            tx.execute(&statements.leave_member, &[&&**room, &&**user])?;
            tx.execute(&statements.leave_read, &[&&**room, &&**user])?;
        }
        // Batched by `Posted`.
        Write::Message { .. } => unreachable!("messages are inserted by Posted::insert"),
        Write::Read { room, user, seq } => {
            tx.execute(&statements.read, &[&&**room, &&**user, &(*seq as i64)])?;
        }
        Write::LastSeen { user, at } => {
            tx.execute(&statements.last_seen, &[&&**user, &millis(at)])?;
        }
        Write::ShareReceipts { user, share } => {
            tx.execute(&statements.share_receipts, &[&&**user, share])?;
        }
        Write::DeviceKey {
            user,
            device,
            key,
            added,
        } => {
            tx.execute(
                &statements.device_key,
                &[&&**user, &&**device, &&**key, &millis(added)],
            )?;
        }
        Write::RevokeDevice { user, device } => {
            tx.execute(&statements.revoke_device, &[&&**user, &&**device])?;
        }
        // Rare (an operator's command): not worth a prepared statement each.
        Write::Ban { target, reason } => {
            tx.execute(
                "INSERT INTO bans (kind, target, reason, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                &[&target.kind(), &target.target(), &&**reason, &millis(&Utc::now())],
            )?;
        }
        Write::Unban { target } => {
            tx.execute(
                "DELETE FROM bans WHERE kind = $1 AND target = $2",
                &[&target.kind(), &target.target()],
            )?;
        }
        Write::Operator { user, operator } => {
            tx.execute(
                "UPDATE users SET operator = $2 WHERE name = $1",
                &[&&**user, operator],
            )?;
        }
    }
    Ok(())
}

/// Deletes messages past the age or per-room count limits, and expired client ids.
fn apply_retention(db: &mut Client, retention: &Retention) -> Result<(), postgres::Error> {
    let now = millis(&Utc::now());
    if let Some(age) = retention.max_age {
        let cutoff = now - age.as_millis() as i64;
        db.execute("DELETE FROM messages WHERE sent_at < $1", &[&cutoff])?;
    }
    if let Some(keep) = retention.max_per_room {
        db.execute(
            "DELETE FROM messages USING rooms
             WHERE rooms.name = messages.room AND messages.seq <= rooms.seq - $1",
            &[&(keep.min(i64::MAX as u64) as i64)],
        )?;
    }
    let cutoff = now - retention.client_id_ttl.as_millis() as i64;
    db.execute("DELETE FROM client_ids WHERE at < $1", &[&cutoff])?;
    Ok(())
}

/// `chatd admin` on a PostgreSQL store: a connection of its own.
pub struct PostgresAdmin {
    db: Client,
    describe: String,
}

impl PostgresAdmin {
    pub fn open(url: &str) -> Result<PostgresAdmin, StoreError> {
        let config: postgres::Config = url.parse().map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("parsing the database url: {e}"),
            )
        })?;
        let describe = describe(&config);
        let mut db = connect(&config).map_err(|e| e.context(format!("opening {describe}")))?;
        migrate(&mut db).map_err(|e| e.context(format!("opening {describe}")))?;
        Ok(PostgresAdmin { db, describe })
    }

    fn change(
        &mut self,
        sql: &[&str],
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let run = |db: &mut Client| -> Result<u64, postgres::Error> {
            let mut tx = db.transaction()?;
            let mut changed = 0;
            for statement in sql {
                let wanted = statement.matches('$').count();
                changed += tx.execute(*statement, &params[..wanted])?;
            }
            tx.commit()?;
            Ok(changed)
        };
        run(&mut self.db).map_err(|e| fail(&self.describe, "writing", e))
    }
}

impl super::admin::Admin for PostgresAdmin {
    fn users(&mut self) -> Result<Vec<super::admin::UserRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT name, password_hash IS NOT NULL, operator, last_seen,
                        EXISTS (SELECT 1 FROM bans WHERE kind = 'user' AND target = name)
                 FROM users ORDER BY name",
                &[],
            )
            .map_err(|e| fail(&self.describe, "reading", e))?;
        Ok(rows
            .iter()
            .map(|row| super::admin::UserRow {
                name: row.get(0),
                has_password: row.get(1),
                operator: row.get(2),
                last_seen: row.get::<_, Option<i64>>(3).map(from_millis),
                banned: row.get(4),
            })
            .collect())
    }

    fn add_user(
        &mut self,
        name: &str,
        password_hash: Option<&str>,
        operator: bool,
    ) -> Result<bool, StoreError> {
        let added = self.change(
            &[
                "INSERT INTO users (name, password_hash, operator) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO NOTHING",
            ],
            &[&name, &password_hash, &operator],
        )?;
        Ok(added > 0)
    }

    fn remove_user(&mut self, name: &str) -> Result<bool, StoreError> {
        let existed = self.change(&["DELETE FROM users WHERE name = $1"], &[&name])? > 0;
        self.change(
            &[
                "DELETE FROM members WHERE username = $1",
                "DELETE FROM reads WHERE username = $1",
                "DELETE FROM invites WHERE username = $1",
                "DELETE FROM client_ids WHERE username = $1",
                "DELETE FROM bans WHERE kind = 'user' AND target = $1",
            ],
            &[&name],
        )?;
        Ok(existed)
    }

    fn set_password(&mut self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let changed = self.change(
            &["UPDATE users SET password_hash = $2 WHERE name = $1"],
            &[&name, &password_hash],
        )?;
        Ok(changed > 0)
    }

    fn set_operator(&mut self, name: &str, operator: bool) -> Result<bool, StoreError> {
        let changed = self.change(
            &["UPDATE users SET operator = $2 WHERE name = $1"],
            &[&name, &operator],
        )?;
        Ok(changed > 0)
    }

    fn rooms(&mut self) -> Result<Vec<super::admin::RoomRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT name, kind, seq, owner,
                        (SELECT count(*) FROM members WHERE members.room = rooms.name)
                 FROM rooms ORDER BY name",
                &[],
            )
            .map_err(|e| fail(&self.describe, "reading", e))?;
        Ok(rows
            .iter()
            .map(|row| super::admin::RoomRow {
                name: row.get(0),
                kind: row.get(1),
                seq: row.get::<_, i64>(2) as u64,
                owner: row.get(3),
                members: row.get::<_, i64>(4) as u64,
            })
            .collect())
    }

    fn delete_room(&mut self, name: &str) -> Result<bool, StoreError> {
        let existed = self.change(&["DELETE FROM rooms WHERE name = $1"], &[&name])? > 0;
        self.change(
            &[
                "DELETE FROM members WHERE room = $1",
                "DELETE FROM messages WHERE room = $1",
                "DELETE FROM reads WHERE room = $1",
                "DELETE FROM invites WHERE room = $1",
                "DELETE FROM client_ids WHERE room = $1",
            ],
            &[&name],
        )?;
        Ok(existed)
    }

    fn bans(&mut self) -> Result<Vec<super::admin::BanRow>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT kind, target, reason, at FROM bans ORDER BY kind, target",
                &[],
            )
            .map_err(|e| fail(&self.describe, "reading", e))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(super::admin::BanRow {
                    target: BanTarget::from_columns(row.get(0), row.get(1))?,
                    reason: row.get(2),
                    at: from_millis(row.get(3)),
                })
            })
            .collect())
    }

    fn ban(&mut self, target: &BanTarget, reason: &str) -> Result<(), StoreError> {
        self.change(
            &[
                "INSERT INTO bans (kind, target, reason, at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, at = excluded.at",
            ],
            &[
                &target.kind(),
                &target.target(),
                &reason,
                &millis(&Utc::now()),
            ],
        )?;
        Ok(())
    }

    fn unban(&mut self, target: &BanTarget) -> Result<bool, StoreError> {
        let changed = self.change(
            &["DELETE FROM bans WHERE kind = $1 AND target = $2"],
            &[&target.kind(), &target.target()],
        )?;
        Ok(changed > 0)
    }

    /// PostgreSQL has its own tools for this; chatd does not duplicate them.
    fn backup(&mut self, _destination: &Path) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Other,
            "back a PostgreSQL store up with pg_dump (see docs/deploy.md)",
        ))
    }
}
