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

use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{keys, scripts, REDIS_TIMEOUT};
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
    /// A command whose answer nobody waits for (a PUBLISH of an announcement).
    Command(redis::Cmd),
}

/// Starts the writer; it ends once `stop` is set and the queue is empty.
pub fn start(
    client: redis::Client,
    node: std::sync::Arc<str>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Sender<Job>, thread::JoinHandle<()>) {
    let (jobs, queue) = crossbeam_channel::bounded(QUEUE);
    let writer = thread::Builder::new()
        .name("chatd-cluster-writer".into())
        .spawn(move || run(client, &node, queue, &stop))
        .expect("spawn chatd-cluster-writer");
    (jobs, writer)
}

fn run(
    client: redis::Client,
    node: &str,
    queue: Receiver<Job>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut connection: Option<redis::Connection> = None;
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
            None => match open(&client) {
                Ok(con) => connection.insert(con),
                Err(e) => {
                    retry = fail_posts(batch, &e);
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return; // Redis is unreachable and the node is stopping
                    }
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in &batch {
            match job {
                Job::Append { script, .. } => {
                    pipe.add_command(script.clone());
                }
                Job::Write(write, _) => {
                    pipe.add_command(command(write, node));
                }
                Job::Command(cmd) => {
                    pipe.add_command(cmd.clone());
                }
            }
        }
        match pipe.query::<Vec<redis::Value>>(con) {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    let outcome = match answer {
                        redis::Value::ServerError(e) => Err(StoreError::new(
                            StoreErrorKind::Other,
                            format!("redis refused: {e:?}"),
                        )),
                        value => Ok(value),
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
            Err(e) => {
                connection = None;
                let e = StoreError::new(StoreErrorKind::Unavailable, format!("redis: {e}"));
                retry = fail_posts(batch, &e);
            }
        }
    }
}

fn open(client: &redis::Client) -> Result<redis::Connection, StoreError> {
    let fail =
        |e: redis::RedisError| StoreError::new(StoreErrorKind::Unavailable, format!("redis: {e}"));
    let con = client
        .get_connection_with_timeout(REDIS_TIMEOUT)
        .map_err(fail)?;
    con.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(fail)?;
    con.set_write_timeout(Some(REDIS_TIMEOUT)).map_err(fail)?;
    Ok(con)
}

/// Answers the batch's posts with `error`; returns the other writes, to send again.
fn fail_posts(batch: Vec<Job>, error: &StoreError) -> Vec<Job> {
    let mut writes = Vec::new();
    for job in batch {
        match job {
            Job::Append { answer, .. } => {
                let _ = answer.send(Err(error.clone()));
            }
            // An announcement is live news: late is worse than lost.
            Job::Command(_) => {}
            write => writes.push(write),
        }
    }
    writes
}

/// The Redis command that carries out one write (see the key table in `cluster`).
fn command(write: &Write, node: &str) -> redis::Cmd {
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
    match write {
        Write::User { name } => {
            let mut cmd = redis::cmd("HSETNX");
            cmd.arg(keys::user(name)).arg("name").arg(&**name);
            cmd
        }
        Write::Join { room, user } => eval(
            scripts::JOIN,
            &[
                keys::members(room),
                keys::user_rooms(user),
                keys::room(room),
            ],
            &[
                user,
                room,
                &keys::channel(room),
                node,
                &keys::sessions_channel(user),
            ],
        ),
        Write::Leave { room, user } => eval(
            scripts::LEAVE,
            &[
                keys::members(room),
                keys::user_rooms(user),
                keys::reads(room),
            ],
            &[user, room, &keys::channel(room), node],
        ),
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
        Write::Unban { target } => {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(keys::BANS).arg(target.to_string());
            cmd
        }
        Write::Operator { user, operator } => hset(
            keys::user(user),
            "operator",
            if *operator { "1" } else { "0" },
        ),
        // A room is made in Redis before the node makes it (`directory`), and messages go
        // through the SEND script: these writes have nothing left to do.
        Write::Room { .. } | Write::Message { .. } => redis::cmd("PING"),
    }
}
