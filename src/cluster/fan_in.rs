//! Fan-in: how other nodes' posts (and this node's, for its other sessions' sake) reach this
//! node's sessions, in seq order, with nothing lost and nothing shown before it is durable.
//!
//! Two threads:
//!
//! - `chatd-cluster-sub` owns the pub/sub connection: `SUBSCRIBE c:<room>` for every room
//!   this node follows (held by its directory entry or by a load under way: see
//!   [`Cluster::hold_room`]), `PSUBSCRIBE` for the user channels, then every push goes to the
//!   fence thread, in the order Redis published them. When the connection drops (Redis
//!   restarted, or cut a slow subscriber at its output-buffer limit, or `CLIENT KILL TYPE
//!   pubsub`), it reconnects, subscribes to every followed room again, and tells the fence
//!   thread so.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

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
    /// The subscription is made again after a lost connection: everything published
    /// meanwhile may have been missed.
    Resubscribed,
    /// Redis acknowledged the subscription to this room's channel: what was published before
    /// is in the log, what comes after arrives as pushes, behind this in the feed.
    Following(String),
    /// A post found the room gone or under another epoch in Redis (its data was lost, say by
    /// a FLUSHALL that cut no connection): check it as after a resubscription.
    Recheck(String),
    Push {
        channel: String,
        payload: String,
    },
}

/// A change to the rooms the subscriber follows, sent by whoever loads or drops a room.
pub(super) enum Follow {
    /// One more holder needs the room's pushes (a room in the directory, or a load under
    /// way); `acked` hears once Redis has acknowledged the subscription.
    Hold { room: String, acked: Sender<()> },
    /// A holder is done with the room; the last one's release unsubscribes.
    Release(String),
}

/// Follow requests waiting for the subscriber. A full queue makes loaders wait, which only
/// happens if the subscriber cannot reach Redis while thousands of rooms are loaded.
const FOLLOWS: usize = 65_536;

/// The subscriber's read timeout: how long a request or the stop flag waits at most when
/// nothing wakes the subscriber (see [`Cluster::hold_room`]).
const POLL: Duration = Duration::from_millis(250);

/// How long a JOIN (or any load of a room) waits for Redis to acknowledge the room's
/// subscription before it reads the room anyway (see [`Cluster::hold_room`]).
pub const ACK_WAIT: Duration = Duration::from_secs(2);

pub fn start(cluster: Arc<Cluster>, server: Weak<ChatServer>) {
    let (feed, fed) = crossbeam_channel::bounded(FEED);
    let (follow, follows) = crossbeam_channel::bounded(FOLLOWS);
    let _ = cluster.recheck.set(feed.clone());
    let _ = cluster.follows.set(follow);
    let subscriber = Subscriber {
        client: cluster.client.clone(),
        wake_channel: keys::wake_channel(&cluster.node),
        feed,
        follows,
        wanted: HashMap::new(),
        owed: Vec::new(),
        subscribed_before: false,
        stop: Arc::clone(&cluster.stopping),
    };
    let sub = thread::Builder::new()
        .name("chatd-cluster-sub".into())
        .spawn(move || subscriber.run())
        .expect("spawn chatd-cluster-sub");
    let fencing = Arc::clone(&cluster);
    let fence = thread::Builder::new()
        .name("chatd-cluster-fence".into())
        .spawn(move || fence(fencing, server, fed))
        .expect("spawn chatd-cluster-fence");
    cluster.adopt_threads([sub, fence]);
}

impl Cluster {
    /// Holds a subscription to `room`'s channel (one more holder; see [`Follow`]). The answer
    /// hears when Redis has acknowledged it, at once if it already had.
    ///
    /// Why a holder reads the room only after the ack: Redis sends a channel's pushes only from
    /// the SUBSCRIBE on, so a read before it could miss a post made between the read and the
    /// SUBSCRIBE. When the ack comes first, everything after the read is a push. The subscriber
    /// also puts [`Feed::Following`] in the feed at the ack, and the fence thread catches a
    /// loaded room up from the log there: so a holder that gave up waiting after [`ACK_WAIT`]
    /// still loses no message, it only sees those posts later (a join or leave of another
    /// node's user in that moment is missed until the next resubscription re-reads members).
    ///
    /// The subscriber blocks reading its connection, so a hold also wakes it with a PUBLISH on
    /// this node's wake channel (it is subscribed to it): the simplest way to interrupt a
    /// blocking read that redis's `PubSub` offers, since the connection cannot be shared. The
    /// read timeout ([`POLL`]) is the backstop when the wake cannot be sent.
    pub fn hold_room(&self, room: &str) -> Receiver<()> {
        let (acked, ack) = crossbeam_channel::bounded(1);
        match self.follows.get() {
            Some(follows) => {
                let hold = Follow::Hold {
                    room: room.to_owned(),
                    acked,
                };
                if follows.send(hold).is_ok() {
                    self.wake_subscriber();
                }
            }
            // No fan-in (yet): nothing to wait for.
            None => drop(acked.send(())),
        }
        ack
    }

    /// Releases one hold of [`Cluster::hold_room`]. No wake: unsubscribing can wait for the
    /// subscriber's next read timeout, and pushes for a released room are dropped meanwhile.
    pub fn release_room(&self, room: &str) {
        if let Some(follows) = self.follows.get() {
            let _ = follows.send(Follow::Release(room.to_owned()));
        }
    }

    /// Whether Redis has a room called `room` (checked before following it).
    pub fn room_exists(&self, room: &str) -> Result<bool, crate::store::StoreError> {
        self.with_connection("looking a room up", |con| {
            redis::cmd("EXISTS").arg(keys::room(room)).query(con)
        })
    }

    /// Asks the fence thread to catch `room` up from the log and re-read its members.
    pub fn recheck_room(&self, room: &str) {
        if let Some(recheck) = self.recheck.get() {
            let _ = recheck.try_send(Feed::Recheck(room.to_owned()));
        }
    }

    fn wake_subscriber(&self) {
        let channel = keys::wake_channel(&self.node);
        let _ = self.with_connection("waking the subscriber", |con| {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("")
                .query::<i64>(con)
        });
    }
}

/// `chatd-cluster-sub`: owns the pub/sub connection and the set of rooms it follows.
struct Subscriber {
    client: redis::Client,
    wake_channel: String,
    feed: Sender<Feed>,
    follows: Receiver<Follow>,
    /// Room -> how many holders it has. Only this thread touches it, so no lock: holders
    /// talk to it through `follows`.
    wanted: HashMap<String, usize>,
    /// Holds made while disconnected: acknowledged once subscribed again.
    owed: Vec<Sender<()>>,
    /// Whether a connection was subscribed before this one.
    subscribed_before: bool,
    stop: Arc<AtomicBool>,
}

/// Why the subscriber left a connection.
enum Ended {
    /// The node is stopping, or the fence thread is gone.
    Stopped,
    /// The connection failed: reconnect.
    Failed,
}

impl Subscriber {
    fn run(mut self) {
        while !self.stop.load(Relaxed) {
            if let Ok(mut connection) = self.client.get_connection_with_timeout(REDIS_TIMEOUT) {
                let timeouts = connection
                    .set_read_timeout(Some(REDIS_TIMEOUT))
                    .and_then(|()| connection.set_write_timeout(Some(REDIS_TIMEOUT)));
                if timeouts.is_ok() {
                    let mut pubsub = connection.as_pubsub();
                    if let Ended::Stopped = self.listen(&mut pubsub) {
                        return;
                    }
                }
            }
            // Pending holds still count while disconnected.
            while let Ok(follow) = self.follows.try_recv() {
                self.count(follow);
            }
            thread::sleep(BACKOFF);
        }
    }

    /// Subscribes to the user channels' patterns, the wake channel and every wanted room, then
    /// forwards pushes and applies follow requests until the connection fails or the node
    /// stops.
    fn listen(&mut self, pubsub: &mut redis::PubSub<'_>) -> Ended {
        while let Ok(follow) = self.follows.try_recv() {
            self.count(follow);
        }
        let patterns = [
            format!("{}*", keys::SESSIONS_PREFIX),
            format!("{}*", keys::DEVICE_PREFIX),
            format!("{}*", keys::PRESENCE_PREFIX),
            format!("{}*", keys::KEY_PREFIX),
        ];
        // One channel or pattern per call: the crate's `subscribe` and `psubscribe` return at
        // the first acknowledgement and leave the others unread, so with several at once the
        // next call would take an earlier command's acknowledgement for its own, and a room
        // would count as subscribed before Redis had subscribed it.
        for pattern in &patterns {
            if pubsub.psubscribe(pattern).is_err() {
                return Ended::Failed;
            }
        }
        if pubsub.subscribe(&self.wake_channel).is_err() {
            return Ended::Failed;
        }
        for room in self.wanted.keys() {
            if pubsub.subscribe(keys::channel(room)).is_err() {
                return Ended::Failed;
            }
        }
        for acked in self.owed.drain(..) {
            let _ = acked.send(());
        }
        // After a lost connection, every followed room is caught up and its members re-read.
        // On the first, rooms were read after their subscription, except by a loader that
        // gave up waiting for it: the log catch-up of `Following` covers that one.
        let caught_up: Vec<Feed> = if self.subscribed_before {
            vec![Feed::Resubscribed]
        } else {
            self.wanted.keys().cloned().map(Feed::Following).collect()
        };
        for feed in caught_up {
            if self.feed.send(feed).is_err() {
                return Ended::Stopped;
            }
        }
        self.subscribed_before = true;
        if pubsub.set_read_timeout(Some(POLL)).is_err() {
            return Ended::Failed;
        }
        loop {
            if self.stop.load(Relaxed) {
                return Ended::Stopped;
            }
            while let Ok(follow) = self.follows.try_recv() {
                match self.apply(pubsub, follow) {
                    Ok(true) => {}
                    Ok(false) => return Ended::Stopped,
                    Err(_) => return Ended::Failed,
                }
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(_) => return Ended::Failed,
            };
            let channel = message.get_channel_name();
            if channel == self.wake_channel {
                continue;
            }
            // A room released since: its pushes until the UNSUBSCRIBE took are not wanted.
            if let Some(room) = channel.strip_prefix(keys::CHANNEL_PREFIX) {
                if !self.wanted.contains_key(room) {
                    continue;
                }
            }
            let push = Feed::Push {
                channel: channel.to_owned(),
                payload: String::from_utf8_lossy(message.get_payload_bytes()).into_owned(),
            };
            if self.feed.send(push).is_err() {
                return Ended::Stopped; // the fence thread ended: the server stopped
            }
        }
    }

    /// Counts a request without a connection (subscribing happens at the next `listen`).
    fn count(&mut self, follow: Follow) {
        match follow {
            Follow::Hold { room, acked } => {
                *self.wanted.entry(room).or_insert(0) += 1;
                self.owed.push(acked);
            }
            Follow::Release(room) => {
                self.release(&room);
            }
        }
    }

    /// Applies a request on the connection. `Ok(false)`: the fence thread is gone.
    ///
    /// Waiting for a (un)subscription's reply uses [`REDIS_TIMEOUT`], not the short
    /// [`POLL`]: a Redis slowed by its fsync must not look like a dead connection.
    fn apply(
        &mut self,
        pubsub: &mut redis::PubSub<'_>,
        follow: Follow,
    ) -> redis::RedisResult<bool> {
        pubsub.set_read_timeout(Some(REDIS_TIMEOUT))?;
        let applied = self.apply_now(pubsub, follow);
        pubsub.set_read_timeout(Some(POLL))?;
        applied
    }

    fn apply_now(
        &mut self,
        pubsub: &mut redis::PubSub<'_>,
        follow: Follow,
    ) -> redis::RedisResult<bool> {
        match follow {
            Follow::Hold { room, acked } => {
                let holders = self.wanted.entry(room.clone()).or_insert(0);
                *holders += 1;
                if *holders == 1 {
                    if let Err(e) = pubsub.subscribe(keys::channel(&room)) {
                        self.owed.push(acked);
                        return Err(e);
                    }
                    // The ack first, then `Following`: a holder that gave up waiting and
                    // finds no ack yet knows the fence thread has not caught up yet either
                    // (see `ChatServer::load_shared_room`).
                    let _ = acked.send(());
                    return Ok(self.feed.send(Feed::Following(room)).is_ok());
                }
                let _ = acked.send(());
            }
            Follow::Release(room) => {
                if self.release(&room) {
                    pubsub.unsubscribe(keys::channel(&room))?;
                }
            }
        }
        Ok(true)
    }

    /// One holder fewer; whether that was the last.
    fn release(&mut self, room: &str) -> bool {
        let Some(holders) = self.wanted.get_mut(room) else {
            return false;
        };
        *holders -= 1;
        if *holders > 0 {
            return false;
        }
        self.wanted.remove(room);
        true
    }
}

fn fence(cluster: Arc<Cluster>, server: Weak<ChatServer>, fed: Receiver<Feed>) {
    let mut connection: Option<super::connection::RedisConnection> = None;
    loop {
        // A timeout, so that a stopping node's fence thread ends without a push to wake it
        // (the recheck sender in `Cluster` keeps the feed open).
        let first = match fed.recv_timeout(POLL) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) if !cluster.stopping.load(Relaxed) => continue,
            Err(_) => return,
        };
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
            if server.strong_count() == 0 || cluster.stopping.load(Relaxed) {
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
                Feed::Resubscribed => catch_up_all(&cluster, &server, server.loaded_rooms()),
                Feed::Following(name) => {
                    // Only the log: the loader read the room's members after the ack (or,
                    // if it gave up waiting, asked for a `Recheck`). Re-reading the members
                    // here could undo this node's own JOIN still queued for Redis.
                    if let Some(room) = server.loaded_room(&name) {
                        catch_up(&cluster, &room);
                    }
                }
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
                    } else if let Some(user) = channel.strip_prefix(keys::SESSIONS_PREFIX) {
                        super::control::take_control(&cluster, &server, user, &payload);
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
            let Some(room) = server.followed_room(room_name, u64::MAX) else {
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
    let room = server.followed_room(room_name, u64::MAX);
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

/// After resubscribing: the followed rooms brought up to the log's end, its members
/// re-read; rooms Redis lost (or remade under a new epoch) are forgotten.
///
/// This node's own membership writes still queued would be undone by re-reading members from
/// Redis (a JOIN here shown as `LEFT`), so the writer's queue is flushed first. A JOIN or
/// LEAVE here during the read of that one room can still race it (see docs/cluster.md).
fn catch_up_all(cluster: &Cluster, server: &ChatServer, rooms: Vec<Arc<Room>>) {
    if rooms.is_empty() {
        return;
    }
    cluster.flush_writes();
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
