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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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
        eventually("redis-server answers", || {
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
