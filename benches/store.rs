//! Store benchmark: durable sends per second, the latency an SQLite commit adds to `OK SEND`,
//! and start-up time with a million stored messages.
//!
//! Run: `cargo bench --bench store` (add `-- --quick` for a short run).
//!
//! Each send scenario starts a real server in this process on 127.0.0.1:0 and drives it with
//! `SENDERS` client threads over TCP, each posting to its own room and waiting for its
//! `OK SEND` before the next one, for `DURATION`. It reports sends/s and the OK latency
//! (time from writing the SEND line to reading its OK) p50/p99, for the memory store, for
//! SQLite with `--sync full` and `--sync normal`, and for PostgreSQL: a throwaway cluster
//! started by the benchmark (the tests' own, tests/support/postgres.rs) with its defaults,
//! so every commit is fsynced as with `--sync full`. Without PostgreSQL installed its rows
//! are skipped, saying why.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatd::cluster::ClusterOptions;
use chatd::store::sqlite::{SqliteOptions, SyncMode};
use chatd::store::{Retention, StoreConfig};
use chatd::Config;
use rusqlite::{params, Connection};

// The tests' throwaway PostgreSQL cluster; the benchmark uses only part of it.
#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod postgres_cluster;

const BODY: &str = "0123456789012345678901234567890123456789012345678901234567890123";

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let senders: Vec<usize> = std::env::var("SENDERS")
        .map(|s| s.split(",").map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 16, 64, 128]);
    let dir = tempfile::tempdir().expect("temp dir");
    let postgres = match postgres_cluster::Cluster::start_durable() {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            println!("PostgreSQL rows skipped: {why}");
            None
        }
    };

    println!(
        "# chatd store benchmark ({} s per run, 64-byte bodies)",
        duration.as_secs()
    );
    println!();
    println!("| store | senders | sends/s | OK p50 | OK p99 |");
    println!("|---|---|---|---|---|");
    for &n in &senders {
        let postgres_store = postgres
            .as_ref()
            .map(|cluster| ("postgres", cluster.store()));
        for (name, store) in [
            Some(("memory", StoreConfig::Memory)),
            Some((
                "sqlite full",
                sqlite(dir.path().join(format!("full{n}.db")), SyncMode::Full),
            )),
            Some((
                "sqlite normal",
                sqlite(dir.path().join(format!("normal{n}.db")), SyncMode::Normal),
            )),
            postgres_store,
        ]
        .into_iter()
        .flatten()
        {
            let result = run_sends(store, n, duration);
            println!(
                "| {name} | {n} | {:.0} | {:.3} ms | {:.3} ms |",
                result.per_second, result.p50_ms, result.p99_ms
            );
        }
    }
    println!();

    match Redis::start(dir.path()) {
        Err(why) => println!("Redis rows skipped: {why}"),
        Ok(mut redis) => {
            println!(
                "Cluster mode: one redis-server (appendonly yes, appendfsync always), N nodes"
            );
            println!(
                "in this process, sender i on node i % N. `redis CPU` is the share of one core"
            );
            println!("redis-server used during the run (its ceiling is one core).");
            println!();
            println!("| nodes | senders | sends/s | OK p50 | OK p99 | redis CPU |");
            println!("|---|---|---|---|---|---|");
            for &n in &senders {
                for nodes in 1..=3 {
                    redis.flush();
                    let configs = (0..nodes)
                        .map(|i| {
                            let cluster = ClusterOptions {
                                url: redis.url(),
                                node_id: format!("n{i}"),
                                retention: Retention::default(),
                                lease: Duration::from_secs(15),
                            };
                            bench_config(StoreConfig::Memory, Some(cluster))
                        })
                        .collect();
                    let (cpu_before, wall) = (redis.cpu(), Instant::now());
                    let result = run_sends_on(configs, n, duration);
                    let cpu = (redis.cpu() - cpu_before) / wall.elapsed().as_secs_f64();
                    println!(
                        "| {nodes} | {n} | {:.0} | {:.3} ms | {:.3} ms | {:.0}% |",
                        result.per_second,
                        result.p50_ms,
                        result.p99_ms,
                        cpu * 100.0
                    );
                }
            }
            println!();
        }
    }

    let messages: u64 = if quick { 200_000 } else { 1_000_000 };
    let path = dir.path().join("big.db");
    fill(&path, messages, 100);
    report_start_up(
        &format!("SQLite: start-up with {messages} stored messages in 100 rooms"),
        || sqlite(path.clone(), SyncMode::Full),
    );
    if let Some(cluster) = &postgres {
        let url = cluster.create_database();
        let store = || cluster.store_at(&url);
        fill_postgres(store(), &url, messages, 100);
        report_start_up(
            &format!("PostgreSQL: start-up with {messages} stored messages in 100 rooms"),
            store,
        );
    }
}

/// Starts a server over `store` five times and prints the median start-up time.
fn report_start_up(what: &str, store: impl Fn() -> StoreConfig) {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let server = chatd::start(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: store(),
            http_listen: None,
            ..Config::default()
        })
        .expect("start over the big database");
        times.push(started.elapsed());
        server.shutdown();
    }
    times.sort();
    println!(
        "{what}: median {:.1} ms (runs: {})",
        ms(times[times.len() / 2]),
        times
            .iter()
            .map(|t| format!("{:.1}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// [`fill`] for PostgreSQL, in SQL: the messages are generated by the server itself.
fn fill_postgres(store: StoreConfig, url: &str, messages: u64, rooms: u64) {
    chatd::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store,
        http_listen: None,
        ..Config::default()
    })
    .expect("create schema")
    .shutdown();
    let per_room = (messages / rooms) as i64;
    let last_room = rooms as i64 - 1;
    let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    db.batch_execute(&format!(
        "INSERT INTO users (name) SELECT 'user' || r FROM generate_series(0, {last_room}) r;
         INSERT INTO rooms (name, kind, epoch, seq)
           SELECT 'room' || r, 'public', lpad(to_hex(r), 16, '0'), {per_room}
           FROM generate_series(0, {last_room}) r;
         INSERT INTO members (room, username)
           SELECT 'room' || r, 'user' || r FROM generate_series(0, {last_room}) r;
         INSERT INTO messages (room, seq, id, sender, body, sent_at)
           SELECT 'room' || r, s, uuid_send(gen_random_uuid()), 'user' || r, '{BODY}',
                  1790000000000 + s
           FROM generate_series(0, {last_room}) r, generate_series(1, {per_room}) s;"
    ))
    .expect("fill the PostgreSQL database");
    // Alone: VACUUM cannot run in the implicit transaction of a multi-statement batch.
    db.batch_execute("VACUUM ANALYZE").expect("vacuum");
}

fn sqlite(path: std::path::PathBuf, sync: SyncMode) -> StoreConfig {
    StoreConfig::Sqlite(SqliteOptions {
        path,
        sync,
        retention: Retention {
            max_age: None,
            max_per_room: None,
            client_id_ttl: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(3600),
        },
        max_pages: None,
    })
}

struct SendResult {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn run_sends(store: StoreConfig, senders: usize, duration: Duration) -> SendResult {
    run_sends_on(vec![bench_config(store, None)], senders, duration)
}

fn bench_config(store: StoreConfig, cluster: Option<ClusterOptions>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store,
        cluster,
        // A benchmark floods by design.
        rate_limit: None,
        max_per_ip: None,
        http_listen: None,
        ..Config::default()
    }
}

/// `run_sends` against one server per config, sender `i` on server `i % servers`.
fn run_sends_on(configs: Vec<Config>, senders: usize, duration: Duration) -> SendResult {
    let servers: Vec<_> = configs
        .into_iter()
        .map(|config| chatd::start(config).expect("start server"))
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Few client threads, each driving several connections, so the client's own context
    // switches do not dominate the two cores the server also runs on.
    let threads = senders.min(CLIENT_THREADS);
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let stop = Arc::clone(&stop);
            let mine: Vec<usize> = (t..senders).step_by(threads).collect();
            let addrs = addrs.clone();
            thread::spawn(move || drive(&addrs, &mine, &stop))
        })
        .collect();
    let started = Instant::now();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    for client in clients {
        latencies.extend(client.join().expect("client thread"));
    }
    let elapsed = started.elapsed();
    for server in servers {
        server.shutdown();
    }
    latencies.sort();
    let pick =
        |q: f64| ms(latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]);
    SendResult {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

const CLIENT_THREADS: usize = 8;

/// Drives `senders` connections: each logs in and joins its own room; then, round after
/// round, every connection sends one message and the thread reads each OK, until stopped
/// (or 60 s at most). Returns the latency of every send.
fn drive(addrs: &[SocketAddr], senders: &[usize], stop: &AtomicBool) -> Vec<Duration> {
    let mut connections: Vec<(TcpStream, BufReader<TcpStream>)> = senders
        .iter()
        .map(|&i| {
            let stream = TcpStream::connect(addrs[i % addrs.len()]).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writeln!(writer, "LOGIN bench{i}\nJOIN room{i}").unwrap();
            expect(&mut reader, "OK JOIN");
            (writer, reader)
        })
        .collect();
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sent = Instant::now();
        for ((writer, _), i) in connections.iter_mut().zip(senders) {
            writeln!(writer, "SEND room{i} {BODY}").unwrap();
        }
        for (_, reader) in connections.iter_mut() {
            expect(reader, "OK SEND");
            latencies.push(sent.elapsed());
        }
    }
    latencies
}

fn expect(reader: &mut BufReader<TcpStream>, prefix: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read");
        assert!(!line.is_empty(), "server closed the connection");
        if line.starts_with(prefix) {
            return;
        }
    }
}

/// Writes `messages` messages spread over `rooms` rooms straight into a database in the
/// server's schema (opening it once through chatd creates the schema).
fn fill(path: &std::path::Path, messages: u64, rooms: u64) {
    let server = chatd::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: sqlite(path.to_owned(), SyncMode::Normal),
        http_listen: None,
        ..Config::default()
    })
    .expect("create schema");
    server.shutdown();
    let mut db = Connection::open(path).expect("open big db");
    let tx = db.transaction().unwrap();
    {
        let mut user = tx.prepare("INSERT INTO users (name) VALUES (?1)").unwrap();
        let mut room = tx
            .prepare("INSERT INTO rooms (name, kind, epoch, seq) VALUES (?1, 'public', ?2, ?3)")
            .unwrap();
        let mut member = tx
            .prepare("INSERT INTO members (room, user) VALUES (?1, ?2)")
            .unwrap();
        let mut message = tx
            .prepare(
                "INSERT INTO messages (room, seq, id, sender, body, sent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        let per_room = messages / rooms;
        for r in 0..rooms {
            let name = format!("room{r}");
            user.execute([format!("user{r}")]).unwrap();
            room.execute(params![name, format!("{r:016x}"), per_room as i64])
                .unwrap();
            member.execute(params![name, format!("user{r}")]).unwrap();
            for seq in 1..=per_room {
                let id = uuid::Uuid::now_v7();
                message
                    .execute(params![
                        name,
                        seq as i64,
                        id.as_bytes().as_slice(),
                        format!("user{r}"),
                        BODY,
                        1_790_000_000_000i64 + seq as i64
                    ])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A redis-server child for the cluster rows, with the durable settings docs/cluster.md asks
/// for.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Result<Redis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&data)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let redis = Redis { child, port };
        for _ in 0..200 {
            if redis.command(&["PING"]).is_ok() {
                return Ok(redis);
            }
            thread::sleep(Duration::from_millis(25));
        }
        Err("redis-server did not answer".into())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut con = redis::Client::open(self.url())?.get_connection()?;
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut con)
    }

    /// Empties it between runs, so each starts from the same state.
    fn flush(&mut self) {
        self.command(&["FLUSHALL"]).expect("FLUSHALL");
    }

    /// CPU seconds redis-server has used so far (user + system, from /proc).
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
