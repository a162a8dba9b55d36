//! The SQLite store: one database file in WAL mode, one writer thread doing group commit, and
//! a small pool of read connections for the reader threads.
//!
//! Durability: with `--sync full` (the default) every batch's commit is fsynced before any
//! ticket in it resolves, so an acknowledged message survives a process crash *and* a power
//! loss. With `--sync normal` the WAL is fsynced only at checkpoints: an acknowledged message
//! survives a process crash (the OS has the data) but the last batches before a power loss
//! may be lost. Both keep the database consistent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
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

/// Migrations, in order: `MIGRATIONS[n]` takes a database from version n to n + 1.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        last_seen INTEGER,                      -- ms since the epoch, UTC
        share_receipts INTEGER NOT NULL DEFAULT 1
    ) WITHOUT ROWID;
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                     -- 'public' | 'direct'
        epoch TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0          -- last seq assigned and stored
    ) WITHOUT ROWID;
    CREATE TABLE members (
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        PRIMARY KEY (room, user)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id BLOB NOT NULL,                       -- UUIDv7, 16 bytes
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at INTEGER NOT NULL,               -- ms since the epoch, UTC
        PRIMARY KEY (room, seq)
    ) WITHOUT ROWID;
    CREATE INDEX messages_by_time ON messages (sent_at);
    CREATE TABLE client_ids (
        user TEXT NOT NULL,
        cid TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        msg_id BLOB NOT NULL,
        at INTEGER NOT NULL,                    -- ms since the epoch, UTC
        PRIMARY KEY (user, cid)
    ) WITHOUT ROWID;
    CREATE INDEX client_ids_by_time ON client_ids (at);
    CREATE TABLE reads (
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (room, user)
    ) WITHOUT ROWID;
"#,
    // 2: accounts and room access.
    r#"
    ALTER TABLE users ADD COLUMN password_hash TEXT;  -- argon2id PHC string; NULL: no account
    ALTER TABLE rooms ADD COLUMN owner TEXT;          -- NULL for direct rooms
    ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE invites (
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        PRIMARY KEY (room, user)
    ) WITHOUT ROWID;
"#,
    // 3: what each client id asked for, so a reused id with another message is refused.
    r#"
    ALTER TABLE client_ids ADD COLUMN fingerprint INTEGER;  -- NULL: stored before version 3
"#,
    // 4: the key directory for end-to-end encrypted DMs (docs/e2e.md).
    r#"
    CREATE TABLE device_keys (
        user TEXT NOT NULL,
        device TEXT NOT NULL,
        key TEXT NOT NULL,                      -- X25519 public key, 64 lower-case hex digits
        added INTEGER NOT NULL,                 -- ms since the epoch, UTC
        PRIMARY KEY (user, device)
    ) WITHOUT ROWID;
"#,
    // 5: operators and bans (issue 16).
    r#"
    ALTER TABLE users ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE bans (
        kind TEXT NOT NULL,                     -- 'user' | 'address'
        target TEXT NOT NULL,                   -- a user name, or an IP address as text
        reason TEXT NOT NULL DEFAULT '',
        at INTEGER NOT NULL,                    -- ms since the epoch, UTC
        PRIMARY KEY (kind, target)
    ) WITHOUT ROWID;
"#,
];

/// Writes waiting for the writer thread. Deep enough to absorb bursts from thousands of
/// posters; when full, posters wait (backpressure from the disk).
const QUEUE_CAPACITY: usize = 16_384;
/// Most writes committed in one transaction, so one batch cannot hold its tickets forever.
const MAX_BATCH: usize = 8_192;

/// How often `--sync` applies: `Full` fsyncs every commit, `Normal` only at checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub retention: Retention,
    /// Caps the database size in pages; only tests set it, to make the disk "full".
    pub max_pages: Option<u64>,
}

pub struct SqliteStore {
    queue: Sender<(Write, Option<Ticket>)>,
    /// Joined on drop, after the queue is closed, so writes queued before a clean shutdown
    /// (last_seen of the sessions it closed, say) are committed before the process exits.
    writer: Option<thread::JoinHandle<()>>,
    /// Leaf lock: idle read connections, taken by reader threads for HISTORY, SYNC and
    /// client-id look-ups, and put back after.
    readers: RankedMutex<Vec<Connection>>,
    path: PathBuf,
    client_id_ttl: Duration,
    /// Filled by the writer thread, one observation per batch.
    commit_latency: Arc<Histogram>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let mut writer = open_connection(&options.path, options.sync)?;
        migrate(&mut writer)?;
        if let Some(pages) = options.max_pages {
            writer
                .pragma_update(None, "max_page_count", pages as i64)
                .map_err(|e| fail(&options.path, "limiting the size of", e))?;
        }
        let (queue, queued) = bounded(QUEUE_CAPACITY);
        let path = options.path.clone();
        let retention = options.retention;
        let commit_latency = Arc::new(Histogram::latency());
        let latency = Arc::clone(&commit_latency);
        let writer = thread::Builder::new()
            .name("chatd-store".into())
            .spawn(move || write_loop(writer, queued, retention, &path, &latency))
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("starting the store writer thread: {e}"),
                )
            })?;
        Ok(SqliteStore {
            queue,
            writer: Some(writer),
            readers: RankedMutex::new(Rank::Leaf, Vec::new()),
            path: options.path,
            client_id_ttl: options.retention.client_id_ttl,
            commit_latency,
        })
    }

    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_connection(&self.path, SyncMode::Normal)?,
        };
        let result = read(&connection).map_err(|e| fail(&self.path, "reading", e));
        let mut idle = self.readers.lock();
        // A burst of readers (many clients resuming at once) opens a connection each; only a
        // few are kept, since each holds its own page cache (up to 2 MiB) for good.
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }
}

/// Read connections kept open between reads: about what two cores can use at once.
const MAX_IDLE_READERS: usize = 4;

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Disconnect the queue (the writer commits what is left, then sees it closed).
        let (closed, _) = bounded(0);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Sorts SQLite's result codes into the kinds a caller can act on; the text stays SQLite's.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as Code;
        let kind = match e.sqlite_error_code() {
            Some(Code::DiskFull) => StoreErrorKind::Full,
            Some(
                Code::CannotOpen | Code::ReadOnly | Code::SystemIoFailure | Code::PermissionDenied,
            ) => StoreErrorKind::Unwritable,
            Some(Code::DatabaseCorrupt | Code::NotADatabase) => StoreErrorKind::Corrupt,
            Some(Code::DatabaseBusy | Code::DatabaseLocked) => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Other,
        };
        StoreError::new(kind, e.to_string())
    }
}

fn fail(path: &Path, doing: &str, e: rusqlite::Error) -> StoreError {
    StoreError::from(e).context(format_args!("{doing} {}", path.display()))
}

fn open_connection(path: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        Connection::open_with_flags(path, flags).map_err(|e| fail(path, "opening", e))?;
    let sync = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    // journal_mode is the first statement that reads the file, so a file that is not a
    // database (or is damaged) is reported here.
    let setup = || -> rusqlite::Result<()> {
        connection.busy_timeout(Duration::from_secs(5))?;
        let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidQuery);
        }
        connection.pragma_update(None, "synchronous", sync)?;
        Ok(())
    };
    setup().map_err(|e| fail(path, "setting up (is it a chatd database?)", e))?;
    Ok(connection)
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing a newer one.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
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
        let apply = |connection: &mut Connection| -> rusqlite::Result<()> {
            let tx = connection.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", from as i64 + 1)?;
            tx.commit()
        };
        apply(connection).map_err(|e| {
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

fn message_from_row(room: &Arc<str>, row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let id: Vec<u8> = row.get(1)?;
    let sender: String = row.get(2)?;
    let body: String = row.get(3)?;
    Ok(Message {
        id: Uuid::from_slice(&id).unwrap_or_default(),
        room: Arc::clone(room),
        seq: row.get::<_, i64>(0)? as u64,
        sender: Arc::from(sender),
        body: body.into_boxed_str(),
        sent_at: from_millis(row.get(4)?),
    })
}

impl Store for SqliteStore {
    fn load(&self, recent_per_room: usize) -> Result<Snapshot, StoreError> {
        self.with_reader(|db| {
            let mut users = Vec::new();
            let mut statement =
                db.prepare("SELECT name, last_seen, share_receipts, password_hash FROM users")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                users.push(StoredUser {
                    name: row.get(0)?,
                    password_hash: row.get(3)?,
                    last_seen: row.get::<_, Option<i64>>(1)?.map(from_millis),
                    share_receipts: row.get::<_, i64>(2)? != 0,
                });
            }
            let mut rooms = Vec::new();
            let mut statement =
                db.prepare("SELECT name, kind, epoch, seq, owner, private FROM rooms")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let kind: String = row.get(1)?;
                rooms.push(StoredRoom {
                    name: row.get(0)?,
                    kind: if kind == "direct" {
                        RoomKind::Direct
                    } else {
                        RoomKind::Public
                    },
                    epoch: row.get(2)?,
                    seq: row.get::<_, i64>(3)? as u64,
                    members: Vec::new(),
                    reads: Vec::new(),
                    recent: Vec::new(),
                    owner: row.get(4)?,
                    private: row.get::<_, i64>(5)? != 0,
                    invited: Vec::new(),
                });
            }
            let mut invited = db.prepare_cached("SELECT user FROM invites WHERE room = ?1")?;
            let mut members = db.prepare_cached("SELECT user FROM members WHERE room = ?1")?;
            let mut reads = db.prepare_cached("SELECT user, seq FROM reads WHERE room = ?1")?;
            let mut recent = db.prepare_cached(
                "SELECT seq, id, sender, body, sent_at FROM messages
                 WHERE room = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            for room in &mut rooms {
                room.members = members
                    .query_map([&room.name], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                room.invited = invited
                    .query_map([&room.name], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                room.reads = reads
                    .query_map([&room.name], |r| {
                        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let name: Arc<str> = Arc::from(room.name.as_str());
                let mut messages: Vec<Message> = recent
                    .query_map(params![room.name, recent_per_room as i64], |r| {
                        message_from_row(&name, r)
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                messages.reverse();
                room.recent = messages;
            }
            let device_keys = db
                .prepare("SELECT user, device, key, added FROM device_keys")?
                .query_map([], |r| {
                    Ok(StoredDeviceKey {
                        user: r.get(0)?,
                        device: r.get(1)?,
                        key: r.get(2)?,
                        added: from_millis(r.get(3)?),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
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
        let before = before.min(i64::MAX as u64) as i64;
        self.with_reader(|db| {
            let mut statement = db.prepare_cached(
                "SELECT seq, id, sender, body, sent_at FROM messages
                 WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
            )?;
            let rows = statement
                .query_map(params![room, after as i64, before, limit as i64], |r| {
                    message_from_row(&name, r)
                })?;
            rows.collect()
        })
    }

    fn account(&self, user: &str) -> Result<Option<StoredAccount>, StoreError> {
        self.with_reader(|db| {
            db.query_row(
                "SELECT password_hash, operator,
                        EXISTS (SELECT 1 FROM bans WHERE kind = 'user' AND target = name)
                 FROM users WHERE name = ?1",
                [user],
                |row| {
                    Ok(StoredAccount {
                        password_hash: row.get(0)?,
                        operator: row.get::<_, i64>(1)? != 0,
                        banned: row.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    fn bans(&self) -> Result<Option<Vec<BanTarget>>, StoreError> {
        self.with_reader(|db| {
            let mut statement = db.prepare_cached("SELECT kind, target FROM bans")?;
            let rows = statement.query_map([], |row| {
                Ok(BanTarget::from_columns(
                    &row.get::<_, String>(0)?,
                    &row.get::<_, String>(1)?,
                ))
            })?;
            let bans: rusqlite::Result<Vec<Option<BanTarget>>> = rows.collect();
            Ok(Some(bans?.into_iter().flatten().collect()))
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with_reader(|db| db.query_row("SELECT count(*) FROM users", [], |_| Ok(())))
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
            db.query_row(
                "SELECT room, seq, msg_id, fingerprint FROM client_ids
                 WHERE user = ?1 AND cid = ?2 AND at >= ?3",
                params![user, cid, oldest],
                |row| {
                    let room: String = row.get(0)?;
                    let id: Vec<u8> = row.get(2)?;
                    let to = dm_peer(&room, user).map(Arc::from);
                    Ok(Published {
                        room: Arc::from(room),
                        seq: row.get::<_, i64>(1)? as u64,
                        id: Uuid::from_slice(&id).unwrap_or_default(),
                        to,
                        // Stored as SQLite's signed 64-bit integer, bit for bit.
                        fingerprint: row.get::<_, Option<i64>>(3)?.map(|f| f as u64),
                    })
                },
            )
            .optional()
        })
    }
}

/// The writer thread: takes whatever is queued (up to MAX_BATCH), commits it as one
/// transaction, resolves the tickets; runs the retention pass when due. Ends when the store
/// is dropped (the queue disconnects).
fn write_loop(
    mut db: Connection,
    queued: Receiver<(Write, Option<Ticket>)>,
    retention: Retention,
    path: &Path,
    commit_latency: &Histogram,
) {
    let mut next_retention = Instant::now();
    let mut batch: Vec<(Write, Option<Ticket>)> = Vec::new();
    loop {
        if Instant::now() >= next_retention {
            if let Err(e) = apply_retention(&db, &retention) {
                log::error!(path:% = path.display(), error:% = e; "store retention failed");
            }
            next_retention = Instant::now() + retention.interval;
        }
        let wait = next_retention.saturating_duration_since(Instant::now());
        match queued.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        commit_batch(&mut db, &mut batch, path);
        // One writer thread: one shard is all it needs.
        commit_latency.observe_duration(0, started.elapsed());
    }
}

/// Commits the batch as one transaction. If that fails, retries each write alone, so one bad
/// write (or a full disk that frees up) fails only the writes it must.
fn commit_batch(db: &mut Connection, batch: &mut Vec<(Write, Option<Ticket>)>, path: &Path) {
    let writes: Vec<&Write> = batch.iter().map(|(write, _)| write).collect();
    let outcome = apply_in_transaction(db, &writes);
    if outcome.is_ok() || batch.len() == 1 {
        if let Err(e) = &outcome {
            log::error!(path:% = path.display(), error:% = e; "store write failed");
        }
        for (_, ticket) in batch.drain(..) {
            if let Some(ticket) = ticket {
                ticket.resolve(outcome.clone());
            }
        }
        return;
    }
    for (write, ticket) in batch.drain(..) {
        let outcome = apply_in_transaction(db, &[&write]);
        if let Err(e) = &outcome {
            log::error!(path:% = path.display(), error:% = e; "store write failed");
        }
        if let Some(ticket) = ticket {
            ticket.resolve(outcome);
        }
    }
}

fn apply_in_transaction(db: &mut Connection, writes: &[&Write]) -> Result<(), StoreError> {
    let run = |db: &mut Connection| -> rusqlite::Result<()> {
        let tx = db.transaction()?;
        // Once per batch rather than per message: each room's seq, and each poster's read
        // position (posting marks the room read up to one's own message).
        let mut room_seqs: HashMap<&str, u64> = HashMap::new();
        let mut poster_reads: HashMap<(&str, &str), u64> = HashMap::new();
        for write in writes {
            apply(&tx, write)?;
            if let Write::Message { message, .. } = write {
                let seq = room_seqs.entry(&message.room).or_default();
                *seq = (*seq).max(message.seq);
                let read = poster_reads
                    .entry((&message.room, &message.sender))
                    .or_default();
                *read = (*read).max(message.seq);
            }
        }
        let mut update =
            tx.prepare_cached("UPDATE rooms SET seq = max(seq, ?2) WHERE name = ?1")?;
        for (room, seq) in &room_seqs {
            update.execute(params![room, *seq as i64])?;
        }
        let mut read = tx.prepare_cached(UPSERT_READ)?;
        for ((room, user), seq) in &poster_reads {
            read.execute(params![room, user, *seq as i64])?;
        }
        drop((update, read));
        tx.commit()
    };
    // No path in this text: it reaches the poster in `ERR store-failed`.
    run(db).map_err(StoreError::from)
}

/// Read positions only move forward.
const UPSERT_READ: &str = "INSERT INTO reads (room, user, seq) VALUES (?1, ?2, ?3)
     ON CONFLICT (room, user) DO UPDATE SET seq = max(seq, excluded.seq)";

fn apply(tx: &rusqlite::Transaction<'_>, write: &Write) -> rusqlite::Result<()> {
    match write {
        Write::User { name } => {
            tx.prepare_cached("INSERT OR IGNORE INTO users (name) VALUES (?1)")?
                .execute([name])?;
        }
        Write::Room {
            name,
            kind,
            epoch,
            owner,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO rooms (name, kind, epoch, owner) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, kind_name(*kind), epoch, owner])?;
        }
        Write::RoomAccess { room, private } => {
            tx.prepare_cached("UPDATE rooms SET private = ?2 WHERE name = ?1")?
                .execute(params![room, i64::from(*private)])?;
        }
        Write::Invite { room, user } => {
            tx.prepare_cached("INSERT OR IGNORE INTO invites (room, user) VALUES (?1, ?2)")?
                .execute([room, user])?;
        }
        Write::Uninvite { room, user } => {
            tx.prepare_cached("DELETE FROM invites WHERE room = ?1 AND user = ?2")?
                .execute([room, user])?;
        }
        Write::Password { user, hash } => {
            tx.prepare_cached("UPDATE users SET password_hash = ?2 WHERE name = ?1")?
                .execute([user, hash])?;
        }
        Write::Join { room, user } => {
            tx.prepare_cached("INSERT OR IGNORE INTO members (room, user) VALUES (?1, ?2)")?
                .execute([room, user])?;
        }
        Write::Leave { room, user } => {
            tx.prepare_cached("DELETE FROM members WHERE room = ?1 AND user = ?2")?
                .execute([room, user])?;
            tx.prepare_cached("DELETE FROM reads WHERE room = ?1 AND user = ?2")?
                .execute([room, user])?;
        }
        Write::Message { message, client_id } => {
            tx.prepare_cached(
                "INSERT INTO messages (room, seq, id, sender, body, sent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                message.room,
                message.seq as i64,
                message.id.as_bytes().as_slice(),
                message.sender,
                message.body,
                millis(&message.sent_at),
            ])?;
            if let Some(posted) = client_id {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO client_ids
                     (user, cid, room, seq, msg_id, at, fingerprint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    posted.user,
                    posted.cid,
                    message.room,
                    message.seq as i64,
                    message.id.as_bytes().as_slice(),
                    millis(&Utc::now()),
                    posted.fingerprint as i64,
                ])?;
            }
        }
        Write::Read { room, user, seq } => {
            tx.prepare_cached(UPSERT_READ)?
                .execute(params![room, user, *seq as i64])?;
        }
        Write::LastSeen { user, at } => {
            tx.prepare_cached("UPDATE users SET last_seen = ?2 WHERE name = ?1")?
                .execute(params![user, millis(at)])?;
        }
        Write::ShareReceipts { user, share } => {
            tx.prepare_cached("UPDATE users SET share_receipts = ?2 WHERE name = ?1")?
                .execute(params![user, i64::from(*share)])?;
        }
        Write::DeviceKey {
            user,
            device,
            key,
            added,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO device_keys (user, device, key, added)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user, device, key, millis(added)])?;
        }
        Write::RevokeDevice { user, device } => {
            tx.prepare_cached("DELETE FROM device_keys WHERE user = ?1 AND device = ?2")?
                .execute([user, device])?;
        }
        Write::Ban { target, reason } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO bans (kind, target, reason, at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                target.kind(),
                target.target(),
                reason,
                millis(&Utc::now())
            ])?;
        }
        Write::Unban { target } => {
            tx.prepare_cached("DELETE FROM bans WHERE kind = ?1 AND target = ?2")?
                .execute(params![target.kind(), target.target()])?;
        }
        Write::Operator { user, operator } => {
            tx.prepare_cached("UPDATE users SET operator = ?2 WHERE name = ?1")?
                .execute(params![user, i64::from(*operator)])?;
        }
    }
    Ok(())
}

/// Deletes messages past the age or per-room count limits, and expired client ids.
fn apply_retention(db: &Connection, retention: &Retention) -> rusqlite::Result<()> {
    let now = millis(&Utc::now());
    if let Some(age) = retention.max_age {
        let cutoff = now - age.as_millis() as i64;
        db.execute("DELETE FROM messages WHERE sent_at < ?1", [cutoff])?;
    }
    if let Some(keep) = retention.max_per_room {
        db.execute(
            "DELETE FROM messages WHERE seq <= (SELECT seq FROM rooms WHERE rooms.name = messages.room) - ?1",
            [keep as i64],
        )?;
    }
    let cutoff = now - retention.client_id_ttl.as_millis() as i64;
    db.execute("DELETE FROM client_ids WHERE at < ?1", [cutoff])?;
    Ok(())
}

/// `chatd admin` on an SQLite store: a connection of its own beside the server's (WAL mode
/// lets both write; each waits up to the busy timeout for the other's transaction).
pub struct SqliteAdmin {
    db: Connection,
    path: PathBuf,
}

impl SqliteAdmin {
    pub fn open(path: &Path) -> Result<SqliteAdmin, StoreError> {
        if !path.exists() {
            return Err(StoreError::new(
                StoreErrorKind::Unwritable,
                format!("{}: no such database", path.display()),
            ));
        }
        let mut db = open_connection(path, SyncMode::Full)?;
        migrate(&mut db)?;
        Ok(SqliteAdmin {
            db,
            path: path.to_owned(),
        })
    }

    /// Runs `sql` in one transaction; each statement takes the first n of `params`, n being
    /// its number of placeholders. Returns the rows changed.
    fn change(
        &mut self,
        sql: &[&str],
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<usize, StoreError> {
        let run = |db: &mut Connection| -> rusqlite::Result<usize> {
            let tx = db.transaction()?;
            let mut changed = 0;
            for statement in sql {
                let wanted = statement.matches('?').count();
                changed += tx.execute(statement, &params[..wanted])?;
            }
            tx.commit()?;
            Ok(changed)
        };
        run(&mut self.db).map_err(|e| fail(&self.path, "writing", e))
    }
}

impl super::admin::Admin for SqliteAdmin {
    fn users(&mut self) -> Result<Vec<super::admin::UserRow>, StoreError> {
        let mut statement = self
            .db
            .prepare(
                "SELECT name, password_hash IS NOT NULL, operator, last_seen,
                        EXISTS (SELECT 1 FROM bans WHERE kind = 'user' AND target = name)
                 FROM users ORDER BY name",
            )
            .map_err(|e| fail(&self.path, "reading", e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(super::admin::UserRow {
                    name: row.get(0)?,
                    has_password: row.get(1)?,
                    operator: row.get::<_, i64>(2)? != 0,
                    last_seen: row.get::<_, Option<i64>>(3)?.map(from_millis),
                    banned: row.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| fail(&self.path, "reading", e))?;
        Ok(rows)
    }

    fn add_user(
        &mut self,
        name: &str,
        password_hash: Option<&str>,
        operator: bool,
    ) -> Result<bool, StoreError> {
        let added = self.change(
            &["INSERT OR IGNORE INTO users (name, password_hash, operator) VALUES (?1, ?2, ?3)"],
            &[&name, &password_hash, &i64::from(operator)],
        )?;
        Ok(added > 0)
    }

    fn remove_user(&mut self, name: &str) -> Result<bool, StoreError> {
        let existed = self.change(&["DELETE FROM users WHERE name = ?1"], &[&name])? > 0;
        self.change(
            &[
                "DELETE FROM members WHERE user = ?1",
                "DELETE FROM reads WHERE user = ?1",
                "DELETE FROM invites WHERE user = ?1",
                "DELETE FROM client_ids WHERE user = ?1",
                "DELETE FROM bans WHERE kind = 'user' AND target = ?1",
            ],
            &[&name],
        )?;
        Ok(existed)
    }

    fn set_password(&mut self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let changed = self.change(
            &["UPDATE users SET password_hash = ?2 WHERE name = ?1"],
            &[&name, &password_hash],
        )?;
        Ok(changed > 0)
    }

    fn set_operator(&mut self, name: &str, operator: bool) -> Result<bool, StoreError> {
        let changed = self.change(
            &["UPDATE users SET operator = ?2 WHERE name = ?1"],
            &[&name, &i64::from(operator)],
        )?;
        Ok(changed > 0)
    }

    fn rooms(&mut self) -> Result<Vec<super::admin::RoomRow>, StoreError> {
        let mut statement = self
            .db
            .prepare(
                "SELECT name, kind, seq, owner,
                        (SELECT count(*) FROM members WHERE members.room = rooms.name)
                 FROM rooms ORDER BY name",
            )
            .map_err(|e| fail(&self.path, "reading", e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(super::admin::RoomRow {
                    name: row.get(0)?,
                    kind: row.get(1)?,
                    seq: row.get::<_, i64>(2)? as u64,
                    owner: row.get(3)?,
                    members: row.get::<_, i64>(4)? as u64,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| fail(&self.path, "reading", e))?;
        Ok(rows)
    }

    fn delete_room(&mut self, name: &str) -> Result<bool, StoreError> {
        let existed = self.change(&["DELETE FROM rooms WHERE name = ?1"], &[&name])? > 0;
        self.change(
            &[
                "DELETE FROM members WHERE room = ?1",
                "DELETE FROM messages WHERE room = ?1",
                "DELETE FROM reads WHERE room = ?1",
                "DELETE FROM invites WHERE room = ?1",
                "DELETE FROM client_ids WHERE room = ?1",
            ],
            &[&name],
        )?;
        Ok(existed)
    }

    fn bans(&mut self) -> Result<Vec<super::admin::BanRow>, StoreError> {
        let mut statement = self
            .db
            .prepare("SELECT kind, target, reason, at FROM bans ORDER BY kind, target")
            .map_err(|e| fail(&self.path, "reading", e))?;
        let rows: Vec<(String, String, String, i64)> = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| fail(&self.path, "reading", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, target, reason, at)| {
                Some(super::admin::BanRow {
                    target: BanTarget::from_columns(&kind, &target)?,
                    reason,
                    at: from_millis(at),
                })
            })
            .collect())
    }

    fn ban(&mut self, target: &BanTarget, reason: &str) -> Result<(), StoreError> {
        self.change(
            &["INSERT OR REPLACE INTO bans (kind, target, reason, at) VALUES (?1, ?2, ?3, ?4)"],
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
            &["DELETE FROM bans WHERE kind = ?1 AND target = ?2"],
            &[&target.kind(), &target.target()],
        )?;
        Ok(changed > 0)
    }

    /// SQLite's online backup API, in one step: the copy is made inside one read
    /// transaction, so it is the database as of one commit, while the server's writer goes on
    /// committing to the WAL beside it. (Copying in several steps would restart whenever the
    /// server commits, and under steady load might never finish.)
    fn backup(&mut self, destination: &Path) -> Result<(), StoreError> {
        let mut copy = Connection::open(destination)
            .map_err(|e| fail(destination, "creating the backup", e))?;
        let mut run = || -> rusqlite::Result<()> {
            let backup = rusqlite::backup::Backup::new(&self.db, &mut copy)?;
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => return Ok(()),
                    // Busy or locked for a moment (a checkpoint): try again shortly.
                    _ => thread::sleep(Duration::from_millis(10)),
                }
            }
        };
        run().map_err(|e| fail(destination, "backing up into", e))
    }
}
