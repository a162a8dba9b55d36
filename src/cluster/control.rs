//! Session control across nodes: what one node does to a user's sessions that every node
//! must do to its own. Each user has a channel, `s:<user>`, which every node hears (a pattern
//! subscription: these are rare, unlike room traffic, so they need no per-user subscription):
//!
//! - `J <room> <node> <seq>`: the user joined `room` on `node` when the room was at `seq`
//!   (published by the JOIN script, so `seq` is exact). A node with sessions of the user that
//!   does not follow the room yet starts following it from `seq`, so those sessions get
//!   `JOINED` and the room's messages from the join on, as the joining node's sessions do. (A node that
//!   follows the room learns of the join from the room's own `J` push.) This is how a DM's
//!   recipient on another node gets the first message: the DM's room is made and both members
//!   joined on the sender's node.
//! - `I <room> <node> <owner>`: the user was invited to `room` (published by the INVITE
//!   script). A node that follows the room tells its sessions of the user from the room's own
//!   `I` push; one that does not tells them here (`INVITED`), and reads the invitation from
//!   Redis when one of them JOINs.
//! - `B <node> <reason>`: end the user's sessions with that `BYE` (`banned`, `kicked`,
//!   `password-changed`): an operator's `BAN user` or `KICK <user>`, or a `PASSWORD ...
//!   end-sessions`, on `node`.
//! - `R <node>`: the name was registered on `node` (`REGISTER`): every node re-reads the
//!   account and closes its sessions of the name that did not prove the password (`BYE
//!   registered`), as the registering node did.
//!
//! A node whose subscriber was cut misses what was published meanwhile: the sweep's ban
//! re-read (`ChatServer::reload_bans`, every 5 s) closes a banned user's or address's
//! sessions anyway; a missed kick or end-sessions is lost (the sessions stay, as if the
//! operator had kicked a moment earlier). Device takeover (`d:<user>`, `BYE replaced`) keeps
//! its own channel.
//!
//! Every message is queued behind the write it follows (the ban, the password), in the
//! writer's order, so a node acting on it finds Redis already changed: a session it closes
//! cannot log straight back in.

use std::sync::Arc;

use super::{keys, Cluster};
use crate::delivery::{CloseReason, Line};
use crate::event::Event;
use crate::room_name::RoomKind;
use crate::server::ChatServer;

impl Cluster {
    /// The user's sessions on every other node end with `reason`'s `BYE`.
    pub fn end_sessions_elsewhere(&self, user: &str, reason: CloseReason) {
        let Some(word) = word_of(reason) else {
            debug_assert!(false, "{reason:?} does not cross nodes");
            return;
        };
        self.queue_publish(
            user,
            &keys::sessions_channel(user),
            format!("B {} {word}", self.node),
        );
    }

    /// The name was registered here: the other nodes close its unproven sessions.
    pub fn registered_here(&self, user: &str) {
        self.queue_publish(
            user,
            &keys::sessions_channel(user),
            format!("R {}", self.node),
        );
    }

    /// A PUBLISH queued behind this node's writes, never dropped (unlike
    /// [`Cluster::publish`], for live news): a ban must reach every node. It runs as the
    /// PUBLISH script on the user's key, so on a Redis Cluster it follows the user's own
    /// writes (a password) on their master.
    fn queue_publish(&self, user: &str, channel: &str, payload: String) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(super::scripts::PUBLISH)
            .arg(1)
            .arg(keys::user(user))
            .arg(channel)
            .arg(payload);
        self.queue(vec![cmd]);
    }
}

/// The reasons that cross nodes, as the control channel spells them.
fn word_of(reason: CloseReason) -> Option<&'static str> {
    match reason {
        CloseReason::Banned => Some("banned"),
        CloseReason::Kicked => Some("kicked"),
        CloseReason::PasswordChanged => Some("password-changed"),
        _ => None,
    }
}

fn reason_of(word: &str) -> Option<CloseReason> {
    [
        CloseReason::Banned,
        CloseReason::Kicked,
        CloseReason::PasswordChanged,
    ]
    .into_iter()
    .find(|reason| word_of(*reason) == Some(word))
}

/// A push on `s:<user>` (see the module docs).
pub(super) fn take_control(cluster: &Cluster, server: &ChatServer, user: &str, payload: &str) {
    let fields: Vec<&str> = payload.split(' ').collect();
    match fields[..] {
        ["J", room, node, seq] if node != cluster.node() => {
            let Ok(seq) = seq.parse::<u64>() else {
                return;
            };
            let Some(user) = server.user(user).filter(|user| user.has_sessions()) else {
                return;
            };
            if server.loaded_room(room).is_some() {
                return; // followed already: the room's own `J` push tells
            }
            let Some(room) = server.followed_room(room, seq) else {
                return;
            };
            // What the room's `J` push would have told the user's sessions here (and where
            // their cursor in the room starts).
            if room.kind != RoomKind::Direct {
                let joined = Event::Joined {
                    room: Arc::clone(&room.name),
                    user: Arc::clone(&user.name),
                };
                user.deliver(&Line::start(joined, None, &room.name, seq));
            }
        }
        ["I", room, node, owner] if node != cluster.node() => {
            if server.loaded_room(room).is_some() {
                return; // told from the room's channel
            }
            if let Some(user) = server.user(user) {
                user.deliver(&Line::event(Event::Invited {
                    room: Arc::from(room),
                    by: Arc::from(owner),
                }));
            }
        }
        ["B", node, word] if node != cluster.node() => {
            if let (Some(user), Some(reason)) = (server.user(user), reason_of(word)) {
                user.close_sessions(reason);
            }
        }
        ["R", node] if node != cluster.node() => {
            if let Some(user) = server.user(user) {
                server.adopt_registration(&user);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crossing_reason_reads_back() {
        for reason in [
            CloseReason::Banned,
            CloseReason::Kicked,
            CloseReason::PasswordChanged,
        ] {
            let word = word_of(reason).expect("crosses");
            assert_eq!(reason_of(word), Some(reason));
        }
        assert_eq!(reason_of("quit"), None);
    }
}
