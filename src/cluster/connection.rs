//! How a node reaches Redis: one server (`redis://HOST:PORT`) or a Redis Cluster
//! (`redis-cluster://HOST:PORT,HOST:PORT,...`, any of its masters as seeds).
//!
//! Every command connection (the writer's, the pool's, the lease's, the fence's) is a
//! [`RedisConnection`]: a plain connection to the one server, or the `redis` crate's blocking
//! `ClusterConnection`, which routes each command to the master of its first key's slot
//! (scripts by their first key) and follows `MOVED`/`ASK`. Both are `redis::ConnectionLike`,
//! so `cmd.query(con)` reads the same in both modes. A pipeline is the one thing that differs:
//! a plain `Pipeline` goes to one node, so pipelines go through
//! [`RedisConnection::query_pipeline`], which splits a cluster's by node.
//!
//! The fan-in's fence (`fan_in`: a `PING` before settling other nodes' pushes) needs no change:
//! the crate sends a `PING` on a cluster connection to every master, so the answer comes after
//! the fsync of whichever master ran the scripts that made the pushes.
//!
//! What stays on one node: the pub/sub connection (`fan_in`). A classic `PUBLISH` in a Redis
//! Cluster is broadcast to every node over the cluster bus, so one subscription to any master
//! receives every room's pushes. Key scans (`retention`) visit every master
//! ([`Redis::primaries`]).
//!
//! Every script and multi-key command touches the keys of one hash slot (the `{room}` or the
//! `{user}` tag, see the key table in `cluster`): that is what lets a cluster run them.

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Cmd, ConnectionLike, ErrorKind, RedisError, RedisResult, Value};

use super::REDIS_TIMEOUT;

/// The URL scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis-cluster://";

/// Where Redis is, parsed from `--cluster`.
#[derive(Clone)]
pub enum Redis {
    Single(redis::Client),
    /// `seeds` are the nodes named in the URL: the cluster client learns the rest from them.
    Sharded {
        client: ClusterClient,
        seeds: Vec<redis::Client>,
    },
}

impl Redis {
    /// `redis://...` (one server) or `redis-cluster://h1:p1,h2:p2,...` (a Redis Cluster).
    pub fn open(url: &str) -> RedisResult<Redis> {
        let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) else {
            return redis::Client::open(url).map(Redis::Single);
        };
        let seeds: Vec<String> = nodes
            .split(',')
            .filter(|node| !node.is_empty())
            .map(|node| format!("redis://{node}"))
            .collect();
        if seeds.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "redis-cluster:// names no node",
            )));
        }
        let client = ClusterClient::builder(seeds.clone())
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(REDIS_TIMEOUT)
            .build()?;
        let seeds = seeds
            .iter()
            .map(|seed| redis::Client::open(seed.as_str()))
            .collect::<RedisResult<_>>()?;
        Ok(Redis::Sharded { client, seeds })
    }

    /// Whether this is a Redis Cluster, whose scripts must stay within one hash slot.
    pub fn is_sharded(&self) -> bool {
        matches!(self, Redis::Sharded { .. })
    }

    /// A command connection, with [`REDIS_TIMEOUT`] on connecting and on every reply.
    pub fn connect(&self) -> RedisResult<RedisConnection> {
        match self {
            Redis::Single(client) => Ok(RedisConnection::Single(plain(client)?)),
            Redis::Sharded { client, .. } => {
                let connection = client.get_connection()?;
                connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
                Ok(RedisConnection::Sharded(Box::new(connection)))
            }
        }
    }

    /// One node's client, for the pub/sub connection: the server, or a cluster's first seed
    /// (a classic PUBLISH reaches every node of a cluster).
    pub fn subscriber(&self) -> redis::Client {
        match self {
            Redis::Single(client) => client.clone(),
            Redis::Sharded { seeds, .. } => seeds[0].clone(),
        }
    }

    /// A plain connection to every master, for what must visit every key (a `SCAN`): the
    /// server itself, or each master the cluster's slot table names.
    pub fn primaries(&self) -> RedisResult<Vec<redis::Connection>> {
        let seeds = match self {
            Redis::Single(client) => return Ok(vec![plain(client)?]),
            Redis::Sharded { seeds, .. } => seeds,
        };
        let mut last_error = None;
        for seed in seeds {
            let slots =
                plain(seed).and_then(|mut con| redis::cmd("CLUSTER").arg("SLOTS").query(&mut con));
            match slots.map(|slots: Value| masters_of(&slots)) {
                Ok(masters) => {
                    return masters
                        .iter()
                        .map(|(host, port)| {
                            plain(&redis::Client::open(format!("redis://{host}:{port}"))?)
                        })
                        .collect()
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one seed"))
    }
}

fn plain(client: &redis::Client) -> RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
    connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
    connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
    Ok(connection)
}

/// The masters in a `CLUSTER SLOTS` answer (`[start, end, [host, port, id], replicas...]` per
/// range), each once.
fn masters_of(slots: &Value) -> Vec<(String, u16)> {
    let mut masters: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = slots else {
        return masters;
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            continue;
        };
        let host = master
            .first()
            .and_then(|host| redis::from_redis_value_ref::<String>(host).ok());
        let port = master
            .get(1)
            .and_then(|port| redis::from_redis_value_ref::<u16>(port).ok());
        if let (Some(host), Some(port)) = (host, port) {
            if !masters.contains(&(host.clone(), port)) {
                masters.push((host, port));
            }
        }
    }
    masters
}

/// A command connection to one Redis or to a Redis Cluster.
pub enum RedisConnection {
    Single(redis::Connection),
    /// Boxed: a cluster connection holds a connection per node and the slot table.
    Sharded(Box<ClusterConnection>),
}

impl RedisConnection {
    /// Runs `commands` as one pipeline, answers in order. On one server it is one round
    /// trip and an error reply is an answer (`Value::ServerError`) like any other. On a
    /// cluster it is one round trip per master (sent to all, then read); the crate's cluster
    /// pipeline has no way to ignore errors, so an error reply to any command fails the whole
    /// call (`RedisError::into_server_errors` says which), and the other answers are lost.
    pub fn pipeline(&mut self, commands: &[Cmd]) -> RedisResult<Vec<Value>> {
        match self {
            RedisConnection::Single(con) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                pipe.query(con)
            }
            RedisConnection::Sharded(con) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                pipe.query(con)
            }
        }
    }

    /// [`RedisConnection::pipeline`] with typed answers (an error reply is an error).
    pub fn query_pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> RedisResult<T> {
        match self {
            RedisConnection::Single(con) => pipe.query(con),
            RedisConnection::Sharded(con) => {
                let mut cluster_pipe = redis::cluster::cluster_pipe();
                for command in pipe.cmd_iter() {
                    cluster_pipe.add_command(command.clone());
                }
                cluster_pipe.query(con)
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            RedisConnection::Single(con) => con.req_packed_command(cmd),
            RedisConnection::Sharded(con) => con.req_packed_command(cmd),
        }
    }

    /// A cluster connection would send a whole packed pipeline to the node of its first
    /// command, so a `Pipeline::query` on one is refused here rather than misrouted.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            RedisConnection::Single(con) => con.req_packed_commands(cmd, offset, count),
            RedisConnection::Sharded(_) => Err(RedisError::from((
                ErrorKind::Client,
                "a pipeline over a Redis Cluster goes through RedisConnection::pipeline",
            ))),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            RedisConnection::Single(con) => con.req_command(cmd),
            RedisConnection::Sharded(con) => con.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(con) => con.get_db(),
            RedisConnection::Sharded(con) => con.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            RedisConnection::Single(con) => con.supports_pipelining(),
            RedisConnection::Sharded(con) => con.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            RedisConnection::Single(con) => con.check_connection(),
            RedisConnection::Sharded(con) => con.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            RedisConnection::Single(con) => con.is_open(),
            RedisConnection::Sharded(con) => con.is_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seeds() {
        let redis = Redis::open("redis-cluster://127.0.0.1:7000,127.0.0.1:7001").expect("parses");
        assert!(redis.is_sharded());
        assert!(!Redis::open("redis://127.0.0.1:6379")
            .expect("parses")
            .is_sharded());
        assert!(Redis::open("redis-cluster://").is_err());
    }

    #[test]
    fn the_masters_of_a_slot_table_are_listed_once() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start, end, master: i64, replica: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                node(master),
                node(replica),
            ])
        };
        let slots = Value::Array(vec![
            range(0, 5460, 7000, 7003),
            range(5461, 10922, 7001, 7004),
            range(10923, 16383, 7000, 7003),
        ]);
        assert_eq!(
            masters_of(&slots),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001)
            ]
        );
    }
}
