//! The key directory's effects beyond one user: announcing a device change to the people who
//! encrypt to that user, and withdrawing the keys of a name that has just become an account.

use std::sync::Arc;

use super::ChatServer;
use crate::delivery::Line;
use crate::event::Event;
use crate::room_name::dm_peer;
use crate::user::User;

impl ChatServer {
    /// `DEVICE <user> <device> added <key>` (or `revoked`: `key` is `None`) to every session
    /// of the user's DM peers and to the user's sessions but `skip` (the one that made the
    /// change, which gets its `OK`): they must encrypt to the new device set. Peers are found
    /// through the user's direct rooms, one peer per room, so each is told once.
    pub(crate) fn announce_device(
        &self,
        user: &User,
        skip: Option<u64>,
        device: Arc<str>,
        key: Option<Arc<str>>,
    ) {
        let line = Line::event(Event::Device {
            user: Arc::clone(&user.name),
            device,
            key,
        });
        user.deliver_except(&line, skip);
        for room in user.rooms() {
            if let Some(peer) = dm_peer(&room, &user.name).and_then(|name| self.user(name)) {
                peer.deliver(&line);
            }
        }
    }

    /// Cluster mode: the user's device keys as Redis has them now (another node may have
    /// changed them; see `cluster::device_keys`), and whether the name is an account there.
    /// `None` (one node, or Redis unreachable) leaves the copy here as it is.
    pub(crate) fn refresh_device_keys(&self, user: &User) -> Option<bool> {
        let (keys, account) = self.cluster.as_ref()?.device_keys(&user.name).ok()?;
        user.replace_device_keys(keys);
        Some(account)
    }

    /// The name has just been given a password (REGISTER, or a first LOGIN with one): the
    /// device keys published while anyone could use the name are withdrawn, except the
    /// registering session's own device's, and peers are told. A key a squatter published
    /// before the owner registered therefore does not outlive the registration.
    pub(crate) fn withdraw_keys_of_new_account(&self, user: &User, keep: Option<&str>) {
        for (device, ticket) in user.withdraw_device_keys(keep, &*self.store) {
            if let Err(e) = ticket.wait() {
                eprintln!(
                    "chatd: store: withdrawing {}'s device key {device} failed: {e}",
                    user.name
                );
            }
            self.announce_device(user, None, device, None);
        }
    }
}
