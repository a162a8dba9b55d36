//! Fan-in: how other nodes' posts (and this node's, for its other sessions' sake) reach this
//! node's sessions, in seq order, with nothing lost and nothing shown before it is durable.
//!
//! Two threads:
//!
//! - `chatd-cluster-sub` owns the pub/sub connection: `PSUBSCRIBE c:*`, then every push goes
//!   to the fence thread, in the order Redis published them. When the connection drops (Redis
//!   restarted, or cut a slow subscriber at its output-buffer limit, or `CLIENT KILL TYPE
//!   pubsub`), it reconnects and subscribes again, and tells the fence thread so.
//! - `chatd-cluster-fence` settles what the subscriber brought. A push is sent by Redis when
//!   the script runs, which is normally after the fsync of its event-loop iteration but, for
//!   a subscriber whose socket was backlogged, can be before it. So before settling a batch
//!   of pushes the thread sends `PING` on its own command connection and waits for the
//!   answer: Redis writes that answer after the fsync of the iteration that read the PING,
//!   which comes after the scripts that made the pushes. One round trip per batch, never per
//!   message, and only in front of what this node did not post itself (its own posts settle
//!   from their script's answer, already after the fsync).
//!
//! Holes: Redis delivers a channel's messages in order on one connection, so a hole means the
//! connection lost pushes. `Room::arrive` names the missing range, and it is read from the
//! room's stream (XRANGE). After a resubscription every room this node follows is caught up
//! from its last settled seq, and its members re-read (joins and leaves missed meanwhile); a
//! room whose epoch changed, or that Redis no longer has, is forgotten by this node (its
//! clients get `EPOCH` when they JOIN and SYNC it again).

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::log::parse_push;
use super::{keys, Cluster, REDIS_TIMEOUT};
use crate::delivery::{CloseReason, Line};
use crate::event::Event;

use crate::room::{Incoming, Room};
use crate::server::ChatServer;

/// Pushes the subscriber may have handed over before the fence thread takes them. When full,
/// the subscriber waits; Redis then buffers for it, up to its pub/sub output limit, past which
/// it cuts the connection and the catch-up after resubscribing repairs everything.
const FEED: usize = 65_536;

/// Most pushes settled behind one fence.
const BATCH: usize = 4_096;

/// Most log entries read per XRANGE while catching a room up.
const CATCH_UP_PAGE: usize = 1_000;

/// How long to wait before reconnecting to Redis.
const BACKOFF: Duration = Duration::from_millis(200);

pub(super) enum Feed {
    /// The subscription is (re)made: everything published before it may have been missed.
    Subscribed,
    /// A post found the room gone or under another epoch in Redis (its data was lost, say by
    /// a FLUSHALL that cut no connection): check it as after a resubscription.
    Recheck(String),
    Push {
        channel: String,
        payload: String,
    },
}

pub fn start(cluster: Arc<Cluster>, server: Weak<ChatServer>) {
    let (feed, fed) = crossbeam_channel::bounded(FEED);
    let _ = cluster.recheck.set(feed.clone());
    let client = cluster.client.clone();
    thread::Builder::new()
        .name("chatd-cluster-sub".into())
        .spawn(move || subscribe(client, feed))
        .expect("spawn chatd-cluster-sub");
    thread::Builder::new()
        .name("chatd-cluster-fence".into())
        .spawn(move || fence(cluster, server, fed))
        .expect("spawn chatd-cluster-fence");
}

fn subscribe(client: redis::Client, feed: Sender<Feed>) {
    loop {
        if let Ok(mut connection) = client.get_connection_with_timeout(REDIS_TIMEOUT) {
            let mut pubsub = connection.as_pubsub();
            let patterns = [
                format!("{}*", keys::CHANNEL_PREFIX),
                format!("{}*", keys::DEVICE_PREFIX),
                format!("{}*", keys::PRESENCE_PREFIX),
                format!("{}*", keys::KEY_PREFIX),
            ];
            if pubsub.psubscribe(&patterns[..]).is_ok() {
                if feed.send(Feed::Subscribed).is_err() {
                    return;
                }
                while let Ok(message) = pubsub.get_message() {
                    let push = Feed::Push {
                        channel: message.get_channel_name().to_owned(),
                        payload: String::from_utf8_lossy(message.get_payload_bytes()).into_owned(),
                    };
                    if feed.send(push).is_err() {
                        return; // the fence thread ended: the server stopped
                    }
                }
            }
        }
        thread::sleep(BACKOFF);
    }
}

fn fence(cluster: Arc<Cluster>, server: Weak<ChatServer>, fed: Receiver<Feed>) {
    let mut connection: Option<super::connection::RedisConnection> = None;
    while let Ok(first) = fed.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match fed.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // The fence: see the module docs.
        loop {
            let answered = match connection.as_mut() {
                Some(con) => redis::cmd("PING").query::<String>(con).is_ok(),
                None => false,
            };
            if answered {
                break;
            }
            if server.strong_count() == 0 {
                return;
            }
            connection = cluster.open_connection().ok();
            if connection.is_none() {
                thread::sleep(BACKOFF);
            }
        }
        let Some(server) = server.upgrade() else {
            return;
        };
        for item in batch {
            match item {
                Feed::Subscribed => catch_up_all(&cluster, &server, server.loaded_rooms()),
                Feed::Recheck(name) => {
                    let room = server
                        .loaded_rooms()
                        .into_iter()
                        .filter(|r| *r.name == *name);
                    catch_up_all(&cluster, &server, room.collect());
                }
                Feed::Push { channel, payload } => {
                    if let Some(room) = channel.strip_prefix(keys::CHANNEL_PREFIX) {
                        take_push(&cluster, &server, room, &payload);
                    } else if let Some(user) = channel.strip_prefix(keys::DEVICE_PREFIX) {
                        take_device(&cluster, &server, user, &payload);
                    } else if let Some(user) = channel.strip_prefix(keys::KEY_PREFIX) {
                        super::device_keys::take_key_change(&cluster, &server, user, &payload);
                    } else if let Some(user) = channel.strip_prefix(keys::PRESENCE_PREFIX) {
                        super::presence::take_presence(&cluster, &server, user, &payload);
                    }
                }
            }
        }
    }
}

/// One push: `M ...` (a message), `J <user> <node> <seq>` (joined when the room was at
/// `seq`), `L <user> <node>` (left), `T ...` (typing), `R ...` (a read position).
///
/// A room this node does not follow yet is read from Redis now, but starts at the push's
/// position, not at the seq Redis has by the time it is read: the messages in between are this
/// node's sessions' due (a DM's recipient here, say), and come as the following pushes or,
/// if those raced ahead, from the log as a hole.
fn take_push(cluster: &Cluster, server: &ChatServer, room_name: &str, payload: &str) {
    let Some((kind, rest)) = payload.split_once(' ') else {
        return;
    };
    let room_at = |seq: u64| server.followed_room(room_name, seq);
    match kind {
        "M" => {
            let name: Arc<str> = Arc::from(room_name);
            let Some((message, origin)) = parse_push(&name, rest) else {
                return;
            };
            let Some(room) = room_at(message.seq - 1) else {
                return;
            };
            let token = own_token(cluster, &origin);
            if let Some(missing) = room.arrive(vec![Incoming { message, token }]) {
                repair(cluster, &room, missing);
            }
        }
        "T" | "R" => {
            let fields: Vec<&str> = rest.split(' ').collect();
            let [user, node, value, ..] = fields[..] else {
                return;
            };
            if node == cluster.node() {
                return;
            }
            let Some(room) = server.room(room_name) else {
                return;
            };
            match (kind, value.parse::<u64>()) {
                ("T", Ok(typing)) => room.typing_elsewhere(user, typing == 1),
                ("R", Ok(seq)) => room.read_elsewhere(user, seq, fields.get(3) == Some(&"1")),
                _ => {}
            }
        }
        "J" | "L" => {
            let mut fields = rest.split(' ');
            let (user, node) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            let seq = fields.next().and_then(|seq| seq.parse().ok()).unwrap_or(0);
            if node == cluster.node() {
                return; // this node already did it, in its own order
            }
            let Some(room) = room_at(seq) else {
                return;
            };
            if kind == "J" {
                room.joined_elsewhere(&server.cluster_user(user));
            } else {
                room.left_elsewhere(user);
            }
        }
        "A" | "I" | "K" => take_owner_action(cluster, server, room_name, kind, rest),
        _ => {}
    }
}

/// An owner action another node carried out: `A <node> <1|0>` (invite-only or not), `I <user>
/// <node> <owner>` (invited), `K <user> <node> <owner>` (kicked; its `L` follows). The room's
/// state here changes, and this node's sessions are told what the kicking or inviting node's
/// own sessions were told.
fn take_owner_action(
    cluster: &Cluster,
    server: &ChatServer,
    room_name: &str,
    kind: &str,
    rest: &str,
) {
    let fields: Vec<&str> = rest.split(' ').collect();
    let (node, target) = match (kind, &fields[..]) {
        ("A", [node, _]) => (*node, None),
        ("I" | "K", [user, node, _]) => (*node, Some(*user)),
        _ => return,
    };
    if node == cluster.node() {
        return; // done here already, in the room's lock
    }
    let room = server.room(room_name);
    let room_name: Arc<str> = Arc::from(room_name);
    let by = || Arc::from(fields[2]);
    match (kind, target) {
        ("A", _) => {
            if let Some(room) = room {
                room.access_elsewhere(fields[1] == "1");
            }
        }
        ("I", Some(user)) => {
            if let Some(room) = &room {
                room.invited_elsewhere(user);
            }
            if let Some(invitee) = server.user(user) {
                invitee.deliver(&Line::event(Event::Invited {
                    room: room_name,
                    by: by(),
                }));
            }
        }
        ("K", Some(user)) => {
            if let Some(room) = &room {
                room.kicked_elsewhere(user);
            }
            if let Some(kicked) = server.user(user) {
                kicked.deliver(&Line::event(Event::Kicked {
                    room: room_name,
                    by: by(),
                }));
            }
        }
        _ => {}
    }
}

/// `<device> <node>` on `d:<user>`: that device logged in on `node`; its session here, if
/// any, is replaced.
fn take_device(cluster: &Cluster, server: &ChatServer, user: &str, payload: &str) {
    let Some((device, node)) = payload.split_once(' ') else {
        return;
    };
    if node != cluster.node() {
        if let Some(user) = server.user(user) {
            user.close_device(device, CloseReason::Replaced);
        }
    }
}

/// The token of a post this node made (`origin` is `node:token`), `None` for other nodes'.
fn own_token(cluster: &Cluster, origin: &str) -> Option<u64> {
    let (node, token) = origin.rsplit_once(':')?;
    (node == cluster.node()).then(|| token.parse().ok())?
}

/// Reads `from..=to` of the room's log and settles it. A failed read is left for the next
/// push (which finds the hole again) or the next resubscription.
fn repair(cluster: &Cluster, room: &Room, (from, to): (u64, u64)) {
    let wanted = (to - from + 1) as usize;
    if let Ok(entries) = cluster.read_entries(&room.name, from, Some(to), wanted) {
        let incoming = entries
            .into_iter()
            .map(|(message, origin)| Incoming {
                token: own_token(cluster, &origin),
                message,
            })
            .collect();
        room.arrive(incoming);
    }
}

/// After (re)subscribing: the followed rooms brought up to the log's end, its members
/// re-read; rooms Redis lost (or remade under a new epoch) are forgotten.
fn catch_up_all(cluster: &Cluster, server: &ChatServer, rooms: Vec<Arc<Room>>) {
    for room in rooms {
        match cluster.shared_room(&room.name, None) {
            Ok(Some(shared)) if shared.epoch == *room.epoch => {
                room.reconcile_members(&shared.members, |name| server.cluster_user(name));
                room.reconcile_access(shared.private, &shared.invited);
                catch_up(cluster, &room);
            }
            Ok(_) => server.forget_room(&room.name),
            Err(_) => {} // Redis is down again; the next subscription catches up
        }
    }
}

fn catch_up(cluster: &Cluster, room: &Room) {
    let mut from = room.settled_seq() + 1;
    // Bounded: a room grows by at most what is posted while this loop runs.
    for _ in 0..10_000 {
        let Ok(entries) = cluster.read_entries(&room.name, from, None, CATCH_UP_PAGE) else {
            return;
        };
        let Some(last) = entries.last().map(|(message, _)| message.seq) else {
            return;
        };
        let full = entries.len() == CATCH_UP_PAGE;
        let incoming = entries
            .into_iter()
            .map(|(message, origin)| Incoming {
                token: own_token(cluster, &origin),
                message,
            })
            .collect();
        room.arrive(incoming);
        if !full {
            return;
        }
        from = last + 1;
    }
}
