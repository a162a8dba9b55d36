//! Cluster test support: a real `redis-server` (our own process, on a free loopback port, in a
//! temporary directory, with the settings docs/cluster.md asks for), chatd nodes joined to it
//! (in this process, or as `chatd` binaries that can be killed with SIGKILL), and haproxy in
//! TCP mode in front of nodes.
//!
//! Outside CI a missing redis-server or haproxy skips the test with a printed reason; under
//! `CI` it fails (`.ci/run` installs both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatd::cluster::ClusterOptions;
use chatd::store::Retention;

pub use super::free_port;
use super::TestServer;

/// Whether `tool` runs (`tool --version`); when not, outside CI, prints why the test is
/// skipped, and under CI fails.
pub fn have(tool: &str) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {tool} (.ci/run: apt-get install redis-server haproxy)"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    runs
}

/// Waits (bounded) until `what` holds.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server child with AOF on and fsync always.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// `None` (skip) if redis-server is missing outside CI.
    pub fn start() -> Option<Redis> {
        if !have("redis-server") {
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.launch();
        Some(redis)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let url = self.url();
        let port = self.port;
        eventually("redis-server answers", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {port} exited at start: {status}");
            }
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut con = client.get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut con).ok()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for the test's own checks and faults.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to redis")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL and start again on the same port and data directory: what the AOF kept is
    /// all that survives.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGKILL, delete the data, start again: Redis lost everything.
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("redis dir")
            .flatten()
        {
            let path: PathBuf = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        self.launch();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node in this process, joined to `redis` as `node`.
pub fn node(redis: &Redis, node: &str) -> TestServer {
    node_with(redis, node, |_| {})
}

pub fn node_with(
    redis: &Redis,
    node: &str,
    configure: impl FnOnce(&mut chatd::Config),
) -> TestServer {
    let url = redis.url();
    TestServer::with(move |config| {
        config.cluster = Some(ClusterOptions {
            url,
            node_id: node.to_owned(),
            retention: Retention::default(),
            lease: Duration::from_secs(1),
        });
        configure(config);
    })
}

/// The flags that run the `chatd` binary as node `node` of `redis`'s cluster.
pub fn node_args(redis: &Redis, node: &str) -> Vec<std::ffi::OsString> {
    [
        "--cluster",
        &redis.url(),
        "--node-id",
        node,
        "--no-rate-limit",
        "--presence-grace",
        "0",
        "--cluster-lease",
        "1",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

/// haproxy in TCP mode, round-robin over `nodes`, with a health check so a dead node is
/// taken out of rotation at once.
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// `None` (skip) if haproxy is missing outside CI.
    pub fn start(nodes: &[SocketAddr]) -> Option<Haproxy> {
        if !have("haproxy") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut config = format!(
            "global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    retries 3
    option redispatch
    timeout client 1h
    timeout server 1h
frontend chat
    bind 127.0.0.1:{port}
    default_backend chatd
backend chatd
    balance roundrobin
    option tcp-check
    default-server inter 200ms fall 1 rise 1
"
        );
        for (i, node) in nodes.iter().enumerate() {
            config.push_str(&format!("    server node{i} {node} check\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually("haproxy listens", || {
            std::net::TcpStream::connect(addr).ok()
        });
        Some(Haproxy {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of three masters (no replicas), each a redis-server child with the
/// durable settings, on free loopback ports (its bus port too), made with `redis-cli
/// --cluster create`.
pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `None` (skip) if redis-server or redis-cli is missing outside CI.
    pub fn start() -> Option<RedisCluster> {
        if !have("redis-server") || !have("redis-cli") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            _dir: dir,
        };
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let data = cluster._dir.path().join(port.to_string());
            std::fs::create_dir(&data).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                // Twice the default before a node calls another failing: a loaded test
                // machine must not take the cluster down (there are no replicas to fail over to).
                .args(["--cluster-node-timeout", "30000"])
                .arg("--dir")
                .arg(&data)
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(["--save", "", "--maxmemory-policy", "noeviction"])
                .args(["--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for i in 0..cluster.ports.len() {
            let port = cluster.ports[i];
            eventually("a cluster node answers", || {
                if let Ok(Some(status)) = cluster.children[i].try_wait() {
                    panic!("redis-server on port {port} exited at start: {status}");
                }
                redis::cmd("PING")
                    .query::<String>(&mut cluster.node(port)?)
                    .ok()
            });
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let mut create = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-cli --cluster create");
        let created = eventually("redis-cli --cluster create ends", || {
            create.try_wait().expect("redis-cli")
        });
        assert!(created.success(), "redis-cli --cluster create failed");
        for &port in &cluster.ports {
            eventually("every node says cluster_state:ok", || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut cluster.node(port)?)
                    .ok()?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        Some(cluster)
    }

    /// `--cluster` for chatd: every master as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// A plain connection to the master on `port`.
    pub fn node(&self, port: u16) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    /// The port of the master that holds `key` (`CLUSTER KEYSLOT`, then the slot table).
    pub fn master_of(&self, key: &str) -> u16 {
        let mut con = self.node(self.ports[0]).expect("a cluster node");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .expect("CLUSTER KEYSLOT");
        type Range = (i64, i64, (String, u16));
        let ranges: Vec<Range> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<Vec<redis::Value>>>(&mut con)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|range| {
                let start = redis::from_redis_value_ref(&range[0]).unwrap();
                let end = redis::from_redis_value_ref(&range[1]).unwrap();
                let master: Vec<redis::Value> = redis::from_redis_value_ref(&range[2]).unwrap();
                let host = redis::from_redis_value_ref(&master[0]).unwrap();
                let port = redis::from_redis_value_ref(&master[1]).unwrap();
                (start, end, (host, port))
            })
            .collect();
        ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| *port)
            .expect("every slot has a master")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node in this process, joined to the Redis Cluster `cluster` as `node`.
pub fn cluster_node(cluster: &RedisCluster, node: &str) -> TestServer {
    cluster_node_with(cluster, node, |_| {})
}

pub fn cluster_node_with(
    cluster: &RedisCluster,
    node: &str,
    configure: impl FnOnce(&mut chatd::Config),
) -> TestServer {
    let url = cluster.url();
    TestServer::with(move |config| {
        config.cluster = Some(ClusterOptions {
            url,
            node_id: node.to_owned(),
            retention: Retention::default(),
            lease: Duration::from_secs(1),
        });
        configure(config);
    })
}

/// The flags that run the `chatd` binary as node `node` on the Redis Cluster `cluster`.
pub fn cluster_node_args(cluster: &RedisCluster, node: &str) -> Vec<std::ffi::OsString> {
    [
        "--cluster",
        &cluster.url(),
        "--node-id",
        node,
        "--no-rate-limit",
        "--presence-grace",
        "0",
        "--cluster-lease",
        "1",
    ]
    .iter()
    .map(Into::into)
    .collect()
}
