//! Presence across nodes, as leases. Redis keeps, per user, the set of nodes that have a
//! session of theirs (`p:{user}`), and per node the users it has (`n:<node>:users`). The
//! cluster-wide transitions are decided there, in scripts, and published on `p:<user>`:
//!
//! - `on <node>`: the user's first session anywhere (a node's first session of a user adds the
//!   node to the set; the set was empty);
//! - `off <ms>`: their last session anywhere ended (a node's last session of theirs ended and
//!   the presence grace passed without a new one there; the set is now empty), or the last
//!   node they were on died.
//!
//! Every node shows the user as the pushes say (`User::show_presence`) and tells its sessions
//! of the user's peers, once per change, so PRESENCE and WHO agree on every node. The node
//! where the session arrived already told its own sessions (the local `came_online`), so it
//! skips its own `on`.
//!
//! Leases: `chatd-cluster-lease` renews this node's lease (`nodes`, a sorted set of lease
//! ends) every third of the lease, and in the same script claims nodes whose lease ended more
//! than the presence grace ago; it then takes their users who are on no other node `off`, one
//! user's slot at a time (so a Redis Cluster can run it). So a node
//! killed with SIGKILL has its users shown offline after lease + grace, unless they
//! reconnected elsewhere first (then the set was not empty and nothing is announced).

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::connection::RedisConnection;
use super::{keys, scripts, Cluster};
use crate::server::ChatServer;

impl Cluster {
    /// A session of `user` arrived on this node. The node's user set first (another slot), so
    /// a reaper of this node finds everyone it may have to announce offline.
    pub fn session_arrived(&self, user: &str) {
        let mut member = redis::cmd("SADD");
        member.arg(keys::node_users(&self.node)).arg(user);
        let mut online = redis::cmd("EVAL");
        online
            .arg(scripts::ONLINE)
            .arg(1)
            .arg(keys::presence(user))
            .arg(&*self.node)
            .arg(keys::presence_channel(user));
        self.queue(vec![member, online]);
    }

    /// This node's last session of `user` ended at `at`, and the grace passed. The node's user
    /// set last: should the node die in between, its reaper repeats the (idempotent) step.
    pub fn sessions_left(&self, user: &str, at: DateTime<Utc>) {
        let offline = offline(user, &self.node, at.timestamp_millis());
        let mut member = redis::cmd("SREM");
        member.arg(keys::node_users(&self.node)).arg(user);
        self.queue(vec![offline, member]);
    }

    /// How the cluster shows each of `users` now: online, or offline since when (`None`:
    /// never seen). Read when a node first meets a user (loading a room's members).
    pub fn presence_of(&self, users: &[String]) -> Vec<(bool, Option<DateTime<Utc>>)> {
        if users.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("SCARD").arg(keys::presence(user));
            pipe.cmd("HGET").arg(keys::user(user)).arg("last_seen_ms");
        }
        let answers: Vec<(u64, Option<i64>)> = self
            .with_connection("reading presence", |con| {
                let flat: Vec<redis::Value> = con.query_pipeline(&pipe)?;
                Ok(flat
                    .chunks(2)
                    .map(|pair| {
                        let count = redis::from_redis_value_ref(&pair[0]).unwrap_or(0);
                        let seen = redis::from_redis_value_ref(&pair[1]).unwrap_or(None);
                        (count, seen)
                    })
                    .collect())
            })
            .unwrap_or_default();
        answers
            .into_iter()
            .map(|(count, seen)| (count > 0, seen.and_then(DateTime::from_timestamp_millis)))
            .collect()
    }
}

/// Starts `chatd-cluster-lease`: renews this node's lease every third of `lease`, and reaps
/// dead nodes whose lease ended more than `grace` ago.
pub fn start_leases(
    cluster: Arc<Cluster>,
    server: Weak<ChatServer>,
    lease: Duration,
    grace: Duration,
) {
    let adopting = Arc::clone(&cluster);
    let lease_thread = thread::Builder::new()
        .name("chatd-cluster-lease".into())
        .spawn(move || {
            let mut connection = None;
            while server.strong_count() > 0 && !cluster.stopping() {
                if connection.is_none() {
                    connection = cluster.open_connection().ok();
                }
                if let Some(con) = connection.as_mut() {
                    if renew_and_reap(&cluster, con, lease, grace).is_err() {
                        connection = None;
                    }
                }
                cluster.pause_unless_stopping((lease / 3).max(Duration::from_millis(100)));
            }
        })
        .expect("spawn chatd-cluster-lease");
    adopting.adopt_threads([lease_thread]);
}

/// One heartbeat ([`scripts::LEASE`]), then each dead node it claimed reaped: its users
/// offline (each on their own slot), its user set dropped, its claim ended. A failure part way
/// leaves the claim to run out, and the next claimer does it all again (every step is
/// idempotent).
fn renew_and_reap(
    cluster: &Cluster,
    con: &mut RedisConnection,
    lease: Duration,
    grace: Duration,
) -> redis::RedisResult<()> {
    let claimed: Vec<String> = redis::cmd("EVAL")
        .arg(scripts::LEASE)
        .arg(1)
        .arg(keys::NODES)
        .arg(&*cluster.node)
        .arg(lease.as_millis() as u64)
        .arg(grace.as_millis() as u64)
        .query(con)?;
    for claim in claimed.chunks(3) {
        let [dead, ended, score] = claim else {
            continue;
        };
        let ended = ended.parse::<f64>().unwrap_or_default() as i64;
        let users: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::node_users(dead))
            .query(con)?;
        if !users.is_empty() {
            let offline: Vec<redis::Cmd> = users
                .iter()
                .map(|user| offline(user, dead, ended))
                .collect();
            con.pipeline(&offline)?;
        }
        redis::cmd("DEL").arg(keys::node_users(dead)).exec(con)?;
        redis::cmd("EVAL")
            .arg(scripts::RELEASE)
            .arg(1)
            .arg(keys::NODES)
            .arg(dead)
            .arg(score)
            .exec(con)?;
    }
    Ok(())
}

/// [`scripts::OFFLINE`] for `node`'s sessions of `user`, last seen at `ms`.
fn offline(user: &str, node: &str, ms: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(scripts::OFFLINE)
        .arg(2)
        .arg(keys::presence(user))
        .arg(keys::user(user))
        .arg(node)
        .arg(keys::presence_channel(user))
        .arg(ms);
    cmd
}

/// A push on `p:<user>`: `on <node>` or `off <ms>`.
pub(super) fn take_presence(cluster: &Cluster, server: &ChatServer, user: &str, payload: &str) {
    let Some(user) = server.user(user) else {
        return; // nobody here shares a room with them
    };
    match payload.split_once(' ') {
        Some(("on", node)) if node != cluster.node() => server.show_presence(&user, true, None),
        Some(("off", ms)) => {
            let at = ms.parse().ok().and_then(DateTime::from_timestamp_millis);
            server.show_presence(&user, false, at);
        }
        _ => {}
    }
}
