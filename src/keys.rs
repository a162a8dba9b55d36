//! The key directory's vocabulary: a device's public X25519 identity key, and what a change
//! to a user's keys did. The keys themselves live with their user (`User::device_keys`), are
//! stored by the store (`Write::DeviceKey`, `Write::RevokeDevice`), and are only ever read by
//! clients: the server relays end-to-end encrypted DMs without being able to read them.
//! docs/e2e.md has the whole design and its threat model; protocol.md the wire.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Most device keys one user may publish. Every DM envelope carries a wrapped key for each
/// device of both users, so this bounds an envelope's size: 32 devices take about 2.7 KB of a
/// 4,096-byte body, leaving the rest for the message (docs/e2e.md, "Size").
pub const MAX_DEVICES_PER_USER: usize = 16;

/// One device's published key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    /// The `device=` of the session that published it.
    pub device: Arc<str>,
    /// 64 lower-case hex digits: the X25519 public key's 32 bytes.
    pub key: Arc<str>,
    /// When this key was published.
    pub added: DateTime<Utc>,
}

/// What publishing a key changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// A device that had no key now has one.
    Added,
    /// The device had another key (reinstalled, say): the new one replaces it.
    Replaced,
    /// The device already had this very key: nothing changed, nothing is announced.
    Unchanged,
}

impl KeyChange {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyChange::Added => "added",
            KeyChange::Replaced => "replaced",
            KeyChange::Unchanged => "unchanged",
        }
    }
}

/// Why a key change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The name has a password and the session did not give it.
    NotOwner,
    /// The user has [`MAX_DEVICES_PER_USER`] device keys already.
    TooManyDevices,
    /// REVOKE of a device without a key.
    NoSuchDevice,
}
