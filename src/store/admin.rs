//! `chatd admin`: managing a store without a client, with the server stopped or running.
//!
//! Each backend opens its own connection (SQLite in WAL mode lets it write beside a running
//! server's writer; PostgreSQL is a server). How a running chatd learns of the changes is
//! written in `server::bans`: bans, passwords, new accounts and the operator role apply from
//! the next connection or LOGIN. Removing a user or deleting a room changes what a running
//! server holds in memory (memberships, the room itself), so those two are meant for a
//! stopped server; run on a live one they apply fully at its next restart (the CLI says so).

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{BanTarget, StoreConfig, StoreError, StoreErrorKind};

/// A user as `chatd admin user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub has_password: bool,
    pub operator: bool,
    pub banned: bool,
    pub last_seen: Option<DateTime<Utc>>,
}

/// A room as `chatd admin room list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub name: String,
    pub kind: String,
    pub members: u64,
    /// The last seq assigned (messages ever posted, retention aside).
    pub seq: u64,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    pub target: BanTarget,
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl fmt::Display for UserRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last_seen = self
            .last_seen
            .map_or("never".to_owned(), |t| t.to_rfc3339());
        write!(
            f,
            "{} password={} operator={} banned={} last_seen={last_seen}",
            self.name, self.has_password, self.operator, self.banned
        )
    }
}

impl fmt::Display for RoomRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kind={} members={} seq={} owner={}",
            self.name,
            self.kind,
            self.members,
            self.seq,
            self.owner.as_deref().unwrap_or("-")
        )
    }
}

/// What `chatd admin` does to a store. Every change is one transaction. Methods that return
/// `bool` say whether there was something to change (the user existed, the ban was there).
pub trait Admin {
    fn users(&mut self) -> Result<Vec<UserRow>, StoreError>;
    /// Creates an account; `false` if the name exists (its password is left alone).
    fn add_user(
        &mut self,
        name: &str,
        password_hash: Option<&str>,
        operator: bool,
    ) -> Result<bool, StoreError>;
    /// Deletes the user, their memberships, read positions, invitations, client ids and
    /// ban. Their messages stay in the rooms' history.
    fn remove_user(&mut self, name: &str) -> Result<bool, StoreError>;
    fn set_password(&mut self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    fn set_operator(&mut self, name: &str, operator: bool) -> Result<bool, StoreError>;
    fn rooms(&mut self) -> Result<Vec<RoomRow>, StoreError>;
    /// Deletes the room with its members, messages, read positions and invitations.
    fn delete_room(&mut self, name: &str) -> Result<bool, StoreError>;
    fn bans(&mut self) -> Result<Vec<BanRow>, StoreError>;
    fn ban(&mut self, target: &BanTarget, reason: &str) -> Result<(), StoreError>;
    fn unban(&mut self, target: &BanTarget) -> Result<bool, StoreError>;
    /// A consistent copy of the whole store in `destination`, taken while the server may be
    /// writing.
    fn backup(&mut self, destination: &Path) -> Result<(), StoreError>;
}

/// Opens the configured store for administration (migrating its schema if needed, as the
/// server would).
pub fn open(config: &StoreConfig) -> Result<Box<dyn Admin>, StoreError> {
    match config {
        StoreConfig::Memory => Err(StoreError::new(
            StoreErrorKind::Other,
            "the memory store keeps nothing to administer: use --store sqlite or postgres",
        )),
        StoreConfig::Sqlite(options) => {
            Ok(Box::new(super::sqlite::SqliteAdmin::open(&options.path)?))
        }
        StoreConfig::Postgres(options) => Ok(Box::new(super::postgres::PostgresAdmin::open(
            &options.url,
        )?)),
    }
}
