//! The rooms' shared log: posting through the SEND script ([`SharedLog`]) and reading the
//! rooms' streams back ([`Store`]: SYNC and HISTORY read history through the store seam, so
//! `room/history.rs` is the same in both modes).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fan_in::Feed;
use super::writer::Job;
use super::{keys, scripts, Cluster};
use crate::client_ids::Published;
use crate::message::Message;
use crate::protocol::{ClientError, ErrorCode};
use crate::room::{epoch_changed, not_member_error, Appended, SharedLog, SharedPost, Signal};
use crate::store::{
    BanTarget, Snapshot, Store, StoreError, StoreErrorKind, StoredAccount, Ticket, Write,
};

impl SharedLog for Cluster {
    fn append(&self, post: SharedPost<'_>) -> Result<Appended, ClientError> {
        // On one Redis the script checks the user's own record, so a cid is one message
        // across all the user's rooms, atomically. On a Redis Cluster a script stays in the
        // room's slot: it checks a record kept in the room, and the user's record is copied
        // after the post (below), for the lookup a SEND makes first (`cmd::post`).
        let cid_key = post.client_id.map(|(cid, _)| match self.is_sharded() {
            false => keys::client_id(post.sender, cid),
            true => keys::room_client_id(post.room, post.sender, cid),
        });
        let origin = format!("{}:{}", self.node, post.token);
        // 64 random bits for the id's tail, with the RFC 9562 variant (0b10) on top.
        let random = (Uuid::new_v4().as_u128() as u64 & !(0b11 << 62)) | (0b10 << 62);
        let cap = self.retention.max_per_room.unwrap_or(0);
        let mut script = redis::cmd("EVAL");
        script
            .arg(scripts::SEND)
            .arg(3 + usize::from(cid_key.is_some()))
            .arg(keys::room(post.room))
            .arg(keys::log(post.room))
            .arg(keys::members(post.room))
            .arg(cid_key)
            .arg(&**post.sender)
            .arg(post.body)
            .arg(origin)
            .arg(post.epoch)
            .arg(self.retention.client_id_ttl.as_secs().max(1))
            .arg(
                post.client_id
                    .map_or(0, |(_, fingerprint)| fingerprint)
                    .to_string(),
            )
            .arg(post.to.map_or("", |to| &**to))
            .arg(cap)
            .arg(keys::channel(post.room))
            .arg(format!("{random:016x}"))
            .arg(&**post.room);
        let (answer, answered) = crossbeam_channel::bounded(1);
        self.jobs
            .send(Job::Append { script, answer })
            .map_err(|_| post_failed("the cluster writer stopped"))?;
        let value = answered
            .recv()
            .map_err(|_| post_failed("the cluster writer stopped"))?
            .map_err(|e| post_failed(&e.to_string()))?;
        let fields: Vec<String> = redis::from_redis_value(value)
            .map_err(|e| post_failed(&format!("unexpected answer ({e})")))?;
        match fields.first().map(String::as_str) {
            Some("posted") if fields.len() == 4 => {
                let parsed = (fields[1].parse::<u64>(), fields[2].parse::<Uuid>());
                let (Ok(seq), Ok(id)) = parsed else {
                    return Err(post_failed("unexpected answer"));
                };
                if let (true, Some((cid, fingerprint))) = (self.is_sharded(), post.client_id) {
                    let to = post.to.map_or("", |to| &**to);
                    let record = format!(
                        "{} {} {} {fingerprint} {to}",
                        post.room, fields[1], fields[2]
                    );
                    self.copy_client_id(post.sender, cid, record);
                }
                Ok(Appended::Posted(Message {
                    id,
                    room: Arc::clone(post.room),
                    seq,
                    sender: Arc::clone(post.sender),
                    body: post.body.into(),
                    sent_at: time_of(&fields[3]),
                }))
            }
            Some("earlier") if fields.len() == 2 => {
                // The room's record answered: the user's copy may never have been written
                // (this or another node died right after the post), so it is written now.
                if let (true, Some((cid, _))) = (self.is_sharded(), post.client_id) {
                    self.copy_client_id(post.sender, cid, fields[1].clone());
                }
                parse_published(&fields[1])
                    .map(Appended::Earlier)
                    .ok_or_else(|| post_failed("unreadable client id record"))
            }
            Some("not-member") => Err(not_member_error(post.room)),
            Some("gone") | Some("epoch") => {
                if let Some(recheck) = self.recheck.get() {
                    let _ = recheck.try_send(Feed::Recheck(post.room.to_string()));
                }
                Err(epoch_changed(post.room))
            }
            _ => Err(post_failed("unexpected answer")),
        }
    }

    fn announce(&self, room: &str, event: Signal) {
        let payload = match event {
            Signal::Typing { user, typing } => {
                format!("T {user} {} {}", self.node, u8::from(typing))
            }
            Signal::Read { user, seq, shared } => {
                format!("R {user} {} {seq} {}", self.node, u8::from(shared))
            }
        };
        self.publish(keys::room(room), &keys::channel(room), payload);
    }
}

impl Cluster {
    /// Queues a PUBLISH behind everything this node queued before (see [`SharedLog::announce`]),
    /// run where `route` (a room's or user's key) lives, behind that room's or user's scripts.
    pub(super) fn publish(&self, route: String, channel: &str, payload: String) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(scripts::PUBLISH)
            .arg(1)
            .arg(route)
            .arg(channel)
            .arg(payload);
        // Full queue: the announcement is dropped, as a full session queue sheds typing.
        let _ = self.jobs.try_send(Job::Command(vec![cmd]));
    }

    /// A login of `user` from `device` on this node: any other node's session of that device
    /// is replaced (`BYE replaced`).
    pub fn announce_device(&self, user: &str, device: &str) {
        self.publish(
            keys::user(user),
            &keys::device_channel(user),
            format!("{device} {}", self.node),
        );
    }

    /// Redis Cluster: the user's own record of a cid (`room seq id fingerprint to`) the SEND
    /// script kept in the room's slot, so the next SEND's lookup (`Store::client_id`) finds it
    /// whatever the room. Queued, not waited for: if this node dies first, a retry in the same
    /// room is still answered by the room's record (and writes the copy), and only a reuse of
    /// the cid in another room goes unnoticed meanwhile (protocol.md, "Idempotent sends").
    fn copy_client_id(&self, user: &str, cid: &str, record: String) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(keys::client_id(user, cid))
            .arg(record)
            .arg("EX")
            .arg(self.retention.client_id_ttl.as_secs().max(1));
        let _ = self.jobs.try_send(Job::Command(vec![cmd]));
    }
}

impl Store for Cluster {
    /// Nothing is loaded up front: a node loads each room the first time it needs it
    /// (`directory`).
    fn load(&self, _recent_per_room: usize) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn write(&self, write: Write, ticket: Option<Ticket>) {
        if let Err(e) = self.jobs.send(Job::Write(write, ticket)) {
            if let Job::Write(_, Some(ticket)) = e.into_inner() {
                ticket.resolve(Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "the cluster writer stopped",
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
        if after.saturating_add(1) >= before || limit == 0 {
            return Ok(Vec::new());
        }
        self.read_log(room, after + 1, Some(before - 1), limit)
    }

    fn client_id(&self, user: &str, cid: &str) -> Result<Option<Published>, StoreError> {
        let record: Option<String> = self.with_connection("reading a client id", |con| {
            redis::cmd("GET").arg(keys::client_id(user, cid)).query(con)
        })?;
        Ok(record.as_deref().and_then(parse_published))
    }

    fn account(&self, user: &str) -> Result<Option<StoredAccount>, StoreError> {
        self.stored_account(user)
    }

    fn bans(&self) -> Result<Option<Vec<BanTarget>>, StoreError> {
        self.stored_bans().map(Some)
    }

    fn check(&self) -> Result<(), StoreError> {
        self.ping()
    }
}

impl Cluster {
    /// Up to `limit` entries of `room`'s log from seq `from` to `to` (the end if `None`),
    /// oldest first. Entries not in the log (trimmed by retention) are simply absent, which
    /// SYNC reports as a `GAP`.
    pub fn read_log(
        &self,
        room: &str,
        from: u64,
        to: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        Ok(self
            .read_entries(room, from, to, limit)?
            .into_iter()
            .map(|(message, _)| message)
            .collect())
    }

    /// [`Cluster::read_log`] with each entry's origin (`node:token`).
    pub(super) fn read_entries(
        &self,
        room: &str,
        from: u64,
        to: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Message, String)>, StoreError> {
        let end = to.map_or("+".to_owned(), |to| format!("{to}-0"));
        let entries: Vec<(String, Vec<String>)> =
            self.with_connection("reading a room's log", |con| {
                redis::cmd("XRANGE")
                    .arg(keys::log(room))
                    .arg(format!("{from}-0"))
                    .arg(&end)
                    .arg("COUNT")
                    .arg(limit)
                    .query(con)
            })?;
        let room: Arc<str> = Arc::from(room);
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| parse_entry(&room, &id, &fields))
            .collect())
    }
}

/// A stream entry as a message and its origin.
fn parse_entry(room: &Arc<str>, id: &str, fields: &[String]) -> Option<(Message, String)> {
    let seq = id.split('-').next()?.parse().ok()?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1))
    };
    let message = Message {
        id: field("id")?.parse().ok()?,
        room: Arc::clone(room),
        seq,
        sender: Arc::from(field("from")?.as_str()),
        body: field("body")?.as_str().into(),
        sent_at: time_of(field("t")?),
    };
    Some((message, field("o")?.clone()))
}

/// A published message as the SEND script publishes it: `<seq> <ms> <id> <origin> <from>
/// <body>` (after the `M `). Returns the message and its origin.
pub fn parse_push(room: &Arc<str>, text: &str) -> Option<(Message, String)> {
    let mut parts = text.splitn(6, ' ');
    let seq = parts.next()?.parse().ok()?;
    let ms = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let origin = parts.next()?.to_owned();
    let sender = Arc::from(parts.next()?);
    let body = parts.next()?.into();
    let message = Message {
        id,
        room: Arc::clone(room),
        seq,
        sender,
        body,
        sent_at: time_of(ms),
    };
    Some((message, origin))
}

/// Milliseconds since the epoch (Redis's clock, as the script saw it).
fn time_of(ms: &str) -> DateTime<Utc> {
    ms.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

/// A client id's record: `room seq id fingerprint to`.
fn parse_published(record: &str) -> Option<Published> {
    let mut parts = record.splitn(5, ' ');
    let room = Arc::from(parts.next()?);
    let seq = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    let fingerprint = parts.next()?.parse().ok();
    let to = parts.next().filter(|to| !to.is_empty()).map(Arc::from);
    Some(Published {
        room,
        seq,
        id,
        to,
        fingerprint,
    })
}

fn post_failed(why: &str) -> ClientError {
    ClientError::new(
        ErrorCode::StoreFailed,
        format!("the message could not be stored, so it was not sent ({why}); retry with its cid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_keeps_spaces_in_the_body() {
        let room: Arc<str> = Arc::from("general");
        let text = "7 1764470400123 01936f3a-1b2c-7000-8000-000000000001 a:3 alice hello  there";
        let (message, origin) = parse_push(&room, text).expect("parses");
        assert_eq!(message.seq, 7);
        assert_eq!(&*message.sender, "alice");
        assert_eq!(&*message.body, "hello  there");
        assert_eq!(origin, "a:3");
        assert_eq!(message.sent_at.timestamp_millis(), 1_764_470_400_123);
    }

    #[test]
    fn a_client_id_record_round_trips_a_dm() {
        let id = "01936f3a-1b2c-7000-8000-000000000001";
        let published = parse_published(&format!("dm:a:b 3 {id} 42 b")).expect("parses");
        assert_eq!(published.seq, 3);
        assert_eq!(published.fingerprint, Some(42));
        assert_eq!(published.to.as_deref(), Some("b"));
        let published = parse_published(&format!("general 3 {id} 42 ")).expect("parses");
        assert_eq!(published.to, None);
    }
}
