//! `chatd-cluster-writer`: the node's one writing connection to Redis. It takes everything
//! queued (posts from reader threads, memberships, read positions, account changes) and sends
//! it as one pipeline, so a burst of posts from many sessions costs one round trip and, in
//! Redis with `appendfsync always`, one fsync: the store's group commit, moved into Redis.
//!
//! Order: jobs are sent in the order they were queued, and Redis runs a connection's commands
//! in order, so a JOIN queued before a SEND is a membership before the SEND's check.
//!
//! Failure: when the connection fails, posts in the batch are answered with the error (their
//! scripts may or may not have run; the client retries with its cid and the script's cid check
//! makes that safe). Other writes are idempotent (set adds, forward-only reads, field sets) and
//! are sent again once the writer has reconnected, so a JOIN is never silently lost.
//!
//! On a Redis Cluster the batch goes out as one pipeline per master (`connection`): order
//! holds among the commands of one slot (a room's JOIN before its SEND), not across slots. An
//! error reply fails the whole batch there (the crate's cluster pipeline cannot ignore
//! errors), so it is handled like a failed connection, except that a write refused for a
//! reason of its own (not a `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN`, which a reconnection
//! with a fresh slot table cures) is answered with the error, as on one Redis, rather than
//! sent again forever.

use std::ops::Range;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::connection::{Redis, RedisConnection};
use super::{keys, scripts};
use crate::store::{StoreError, StoreErrorKind, Ticket, Write};

/// Jobs the writer may have queued: a full queue makes posters wait (backpressure from Redis,
/// as the SQLite store's queue does from the disk).
pub const QUEUE: usize = 16_384;

/// Most jobs in one pipeline: bounds the pipeline's memory and one round trip's latency.
const BATCH: usize = 1_024;

pub enum Job {
    /// A post: the SEND script's arguments, and where its answer goes.
    Append {
        script: redis::Cmd,
        answer: Sender<Result<redis::Value, StoreError>>,
    },
    Write(Write, Option<Ticket>),
    /// Commands whose answers nobody waits for (an announcement's PUBLISH, a presence change).
    Command(Vec<redis::Cmd>),
}

/// Starts the writer; it ends once `stop` is set and the queue is empty.
pub fn start(
    redis: Redis,
    node: std::sync::Arc<str>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Sender<Job>, thread::JoinHandle<()>) {
    let (jobs, queue) = crossbeam_channel::bounded(QUEUE);
    let writer = thread::Builder::new()
        .name("chatd-cluster-writer".into())
        .spawn(move || run(redis, &node, queue, &stop))
        .expect("spawn chatd-cluster-writer");
    (jobs, writer)
}

fn run(redis: Redis, node: &str, queue: Receiver<Job>, stop: &std::sync::atomic::AtomicBool) {
    let mut connection: Option<RedisConnection> = None;
    // Writes whose pipeline failed: sent first once connected again.
    let mut retry: Vec<Job> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() {
            // The timeout lets a stopping node's writer end (the `Cluster` keeps a sender)
            // once it has sent everything queued.
            match queue.recv_timeout(super::THREAD_POLL) {
                Ok(job) => batch.push(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    if !stop.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    continue
                }
                Err(_) => return, // stopped, or every sender is gone
            }
        }
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let con = match connection.as_mut() {
            Some(con) => con,
            None => match redis.connect() {
                Ok(con) => connection.insert(con),
                Err(e) => {
                    retry = fail_posts(batch, &unavailable(&e), &[]);
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return; // Redis is unreachable and the node is stopping
                    }
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        // Each job's commands, in order; `spans[i]` is where job i's answers are.
        let mut commands = Vec::with_capacity(batch.len());
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(batch.len());
        for job in &batch {
            let start = commands.len();
            match job {
                Job::Append { script, .. } => commands.push(script.clone()),
                Job::Write(write, _) => commands.extend(write_commands(write, node)),
                Job::Command(cmds) => commands.extend(cmds.iter().cloned()),
            }
            spans.push(start..commands.len());
        }
        if commands.is_empty() {
            // Only writes with nothing to do in Redis (see `write_commands`).
            answer(batch, &spans, &[]);
            continue;
        }
        match con.pipeline(&commands) {
            Ok(answers) => answer(batch, &spans, &answers),
            Err(e) => {
                connection = None;
                let refused = refused_writes(&e, &spans);
                retry = fail_posts(batch, &unavailable(&e), &refused);
            }
        }
    }
}

/// A cluster pipeline's error replies (see the module docs), as (job index, reason), leaving
/// out those a reconnection cures.
fn refused_writes(error: &redis::RedisError, spans: &[Range<usize>]) -> Vec<(usize, String)> {
    let Some(errors) = error.clone().into_server_errors() else {
        return Vec::new();
    };
    errors
        .iter()
        .filter(|(_, error)| !is_cluster_moving(error))
        .filter_map(|(index, error)| {
            let job = spans.iter().position(|span| span.contains(index))?;
            Some((job, format!("{error:?}")))
        })
        .collect()
}

/// Settles each job with its answers: the first error reply among its commands, else its
/// last answer.
fn answer(batch: Vec<Job>, spans: &[Range<usize>], answers: &[redis::Value]) {
    for (job, span) in batch.into_iter().zip(spans) {
        let answers = answers.get(span.clone()).unwrap_or_default();
        let outcome = match answers
            .iter()
            .find(|answer| matches!(answer, redis::Value::ServerError(_)))
        {
            Some(redis::Value::ServerError(e)) => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("redis refused: {e:?}"),
            )),
            _ => Ok(answers.last().cloned().unwrap_or(redis::Value::Nil)),
        };
        match job {
            Job::Append { answer, .. } => {
                let _ = answer.send(outcome);
            }
            Job::Write(_, ticket) => {
                if let Some(ticket) = ticket {
                    ticket.resolve(outcome.map(drop));
                }
            }
            Job::Command(_) => {}
        }
    }
}

/// A refusal that a reconnection (a fresh slot table) cures: the slot moved, or the cluster
/// is failing over.
fn is_cluster_moving(error: &redis::ServerError) -> bool {
    use redis::ServerErrorKind::{Ask, ClusterDown, MasterDown, Moved, TryAgain};
    matches!(
        error.kind(),
        Some(Moved | Ask | TryAgain | ClusterDown | MasterDown)
    )
}

fn unavailable(e: &redis::RedisError) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, format!("redis: {e}"))
}

/// Answers the batch's posts with `error`, and the writes in `refused` (job index, reason) with
/// their own refusal; returns the other writes, to send again.
fn fail_posts(batch: Vec<Job>, error: &StoreError, refused: &[(usize, String)]) -> Vec<Job> {
    let mut writes = Vec::new();
    for (index, job) in batch.into_iter().enumerate() {
        match job {
            Job::Append { answer, .. } => {
                let _ = answer.send(Err(error.clone()));
            }
            // An announcement is live news: late is worse than lost.
            Job::Command(_) => {}
            Job::Write(write, ticket) => match refused.iter().find(|(job, _)| *job == index) {
                Some((_, reason)) => {
                    if let Some(ticket) = ticket {
                        ticket.resolve(Err(StoreError::new(
                            StoreErrorKind::Other,
                            format!("redis refused: {reason}"),
                        )));
                    }
                }
                None => writes.push(Job::Write(write, ticket)),
            },
        }
    }
    writes
}

/// The Redis commands that carry out one write (see the key table in `cluster`), each within
/// one hash slot.
fn write_commands(write: &Write, node: &str) -> Vec<redis::Cmd> {
    fn eval(script: &str, keys: &[String], args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
        cmd
    }
    fn hset(key: String, field: &str, value: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key).arg(field).arg(value);
        cmd
    }
    fn set_op(op: &str, key: String, member: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(op);
        cmd.arg(key).arg(member);
        cmd
    }
    let one = match write {
        Write::User { name } => {
            let mut cmd = redis::cmd("HSETNX");
            cmd.arg(keys::user(name)).arg("name").arg(&**name);
            cmd
        }
        // The user's room set first, then the membership: at every moment the set holds
        // every room the user is a member of (on one Redis; on a cluster the two run on two
        // masters, see docs/cluster.md). A room left in the set without the membership is
        // harmless: the node follows it at the user's login and finds them not a member.
        Write::Join { room, user } => {
            return vec![
                set_op("SADD", keys::user_rooms(user), room),
                eval(
                    scripts::JOIN,
                    &[keys::members(room), keys::room(room)],
                    &[
                        user,
                        &keys::channel(room),
                        node,
                        room,
                        &keys::sessions_channel(user),
                    ],
                ),
            ]
        }
        // The reverse order: the membership goes first.
        Write::Leave { room, user } => {
            return vec![
                eval(
                    scripts::LEAVE,
                    &[keys::members(room), keys::reads(room)],
                    &[user, &keys::channel(room), node],
                ),
                set_op("SREM", keys::user_rooms(user), room),
            ]
        }
        Write::Read { room, user, seq } => eval(
            scripts::READ,
            &[keys::reads(room)],
            &[user, &seq.to_string()],
        ),
        Write::RoomAccess { room, private } => eval(
            scripts::ACCESS,
            &[keys::room(room)],
            &[if *private { "1" } else { "0" }, &keys::channel(room), node],
        ),
        Write::Invite { room, user } => eval(
            scripts::INVITE,
            &[keys::invites(room), keys::room(room)],
            &[
                user,
                &keys::channel(room),
                node,
                &keys::sessions_channel(user),
                room,
            ],
        ),
        Write::Uninvite { room, user } => eval(
            scripts::UNINVITE,
            &[keys::invites(room), keys::room(room)],
            &[user, &keys::channel(room), node],
        ),
        Write::Password { user, hash } => hset(keys::user(user), "password", hash),
        Write::LastSeen { user, at } => hset(keys::user(user), "last_seen", &at.to_rfc3339()),
        Write::ShareReceipts { user, share } => {
            hset(keys::user(user), "receipts", if *share { "1" } else { "0" })
        }
        Write::DeviceKey {
            user,
            device,
            key,
            added,
        } => eval(
            scripts::DEVICE_KEY,
            &[keys::device_keys(user)],
            &[
                device,
                &format!("{key} {}", added.to_rfc3339()),
                &keys::key_channel(user),
                node,
            ],
        ),
        Write::RevokeDevice { user, device } => eval(
            scripts::DEVICE_KEY,
            &[keys::device_keys(user)],
            &[device, "", &keys::key_channel(user), node],
        ),
        Write::Ban { target, reason } => hset(keys::BANS.to_owned(), &target.to_string(), reason),
        Write::Unban { target } => set_op("HDEL", keys::BANS.to_owned(), &target.to_string()),
        Write::Operator { user, operator } => hset(
            keys::user(user),
            "operator",
            if *operator { "1" } else { "0" },
        ),
        // A room is made in Redis before the node makes it (`directory`), and messages go
        // through the SEND script: these writes have nothing left to do.
        Write::Room { .. } | Write::Message { .. } => return Vec::new(),
    };
    vec![one]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::BanTarget;

    /// The keys a command names: an EVAL's declared keys, else its first argument.
    fn keys_of(cmd: &redis::Cmd) -> Vec<String> {
        let args: Vec<String> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            })
            .collect();
        if args[0] == "EVAL" {
            let count: usize = args[2].parse().expect("a key count");
            args[3..3 + count].to_vec()
        } else {
            vec![args[1].clone()]
        }
    }

    /// What Redis Cluster hashes: the first `{...}` if not empty, else the whole key.
    fn hashed_part(key: &str) -> &str {
        key.split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(tag, _)| tag)
            .filter(|tag| !tag.is_empty())
            .unwrap_or(key)
    }

    /// Every command a write becomes names keys of one hash slot, so a Redis Cluster runs it.
    #[test]
    fn every_write_stays_within_one_hash_slot() {
        let (room, user): (Arc<str>, Arc<str>) = (Arc::from("general"), Arc::from("alice"));
        let writes = [
            Write::User { name: user.clone() },
            Write::Join {
                room: room.clone(),
                user: user.clone(),
            },
            Write::Leave {
                room: room.clone(),
                user: user.clone(),
            },
            Write::Read {
                room: room.clone(),
                user: user.clone(),
                seq: 3,
            },
            Write::RoomAccess {
                room: room.clone(),
                private: true,
            },
            Write::Invite {
                room: room.clone(),
                user: user.clone(),
            },
            Write::Uninvite {
                room: room.clone(),
                user: user.clone(),
            },
            Write::Password {
                user: user.clone(),
                hash: Arc::from("h"),
            },
            Write::LastSeen {
                user: user.clone(),
                at: chrono::Utc::now(),
            },
            Write::ShareReceipts {
                user: user.clone(),
                share: true,
            },
            Write::DeviceKey {
                user: user.clone(),
                device: Arc::from("phone"),
                key: Arc::from("k"),
                added: chrono::Utc::now(),
            },
            Write::RevokeDevice {
                user: user.clone(),
                device: Arc::from("phone"),
            },
            Write::Ban {
                target: BanTarget::User(user.clone()),
                reason: Arc::from("r"),
            },
            Write::Unban {
                target: BanTarget::User(user.clone()),
            },
            Write::Operator {
                user: user.clone(),
                operator: true,
            },
        ];
        for write in &writes {
            for cmd in write_commands(write, "node-a") {
                let keys = keys_of(&cmd);
                assert!(!keys.is_empty(), "{write:?}");
                let slot = hashed_part(&keys[0]);
                for key in &keys {
                    assert_eq!(hashed_part(key), slot, "{write:?}: {keys:?}");
                }
            }
        }
    }
}
