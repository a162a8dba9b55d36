//! The key directory (end-to-end encrypted DMs, docs/e2e.md) across nodes.
//!
//! Redis holds each user's published keys (`u:{user}:keys`: device -> `<key> <added>`),
//! written by the writer in the order the user's node made the changes. Each change is also
//! announced on `k:<user>` (`<node> <device> <key> <added>`, or `<node> <device>` for a
//! revocation), so every node that knows the user updates its copy and tells the `DEVICE`
//! line to its sessions of the user and of their DM peers, as the changing node does for its
//! own. A node's copy is only a cache: `KEYS` and a LOGIN re-read the user's keys from Redis,
//! so a node that missed announcements (it met the user later, or its subscription was cut)
//! never answers from a stale directory.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{keys, Cluster};
use crate::keys::DeviceKey;
use crate::server::ChatServer;
use crate::store::StoreError;

impl Cluster {
    /// `user`'s device keys as Redis has them now, in device name order, and whether the
    /// name is an account (a node where the user never logged in does not know).
    pub fn device_keys(&self, user: &str) -> Result<(Vec<DeviceKey>, bool), StoreError> {
        let (fields, password): (HashMap<String, String>, Option<String>) =
            self.with_connection("reading device keys", |con| {
                con.query_pipeline(
                    redis::pipe()
                        .cmd("HGETALL")
                        .arg(keys::device_keys(user))
                        .cmd("HGET")
                        .arg(keys::user(user))
                        .arg("password"),
                )
            })?;
        let mut devices: Vec<DeviceKey> = fields
            .iter()
            .filter_map(|(device, value)| parse_key(device, value))
            .collect();
        devices.sort_by(|a, b| a.device.cmp(&b.device));
        Ok((devices, password.is_some_and(|hash| !hash.is_empty())))
    }
}

/// `<key> <added, RFC 3339>`, as the writer stores it.
fn parse_key(device: &str, value: &str) -> Option<DeviceKey> {
    let (key, added) = value.split_once(' ')?;
    let added = DateTime::parse_from_rfc3339(added)
        .ok()?
        .with_timezone(&Utc);
    Some(DeviceKey {
        device: Arc::from(device),
        key: Arc::from(key),
        added,
    })
}

/// A key change announced on `k:<user>` by another node: this node's copy follows it and its
/// sessions concerned are told, as on the node that made it. A user this node does not know
/// has nobody here to tell, and their keys are read from Redis when first needed.
pub(super) fn take_key_change(cluster: &Cluster, server: &ChatServer, user: &str, payload: &str) {
    let mut fields = payload.splitn(3, ' ');
    let (Some(node), Some(device)) = (fields.next(), fields.next()) else {
        return;
    };
    if node == cluster.node() {
        return;
    }
    let Some(user) = server.user(user) else {
        return;
    };
    let device: Arc<str> = Arc::from(device);
    match fields.next().and_then(|value| parse_key(&device, value)) {
        Some(entry) => {
            let key = Arc::clone(&entry.key);
            user.restore_device_key(entry);
            server.announce_device(&user, None, device, Some(key));
        }
        None => {
            user.forget_device_key(&device);
            server.announce_device(&user, None, device, None);
        }
    }
}
