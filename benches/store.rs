//! Store benchmark: durable sends per second, the latency an SQLite commit adds to `OK SEND`,
//! and start-up time with a million stored messages.
//!
//! Run: `cargo bench --bench store` (add `-- --quick` for a short run).
//!
//! Each send scenario starts a real server in this process on 127.0.0.1:0 and drives it with
//! `SENDERS` client threads over TCP, each posting to its own room and waiting for its
//! `OK SEND` before the next one, for `DURATION`. It reports sends/s and the OK latency
//! (time from writing the SEND line to reading its OK) p50/p99, for the memory store and for
//! SQLite with `--sync full` and `--sync normal`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatd::store::sqlite::{SqliteOptions, SyncMode};
use chatd::store::{Retention, StoreConfig};
use chatd::Config;
use rusqlite::{params, Connection};

const BODY: &str = "0123456789012345678901234567890123456789012345678901234567890123";

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let senders: Vec<usize> = std::env::var("SENDERS")
        .map(|s| s.split(",").map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 16, 64, 128]);
    let dir = tempfile::tempdir().expect("temp dir");

    println!(
        "# chatd store benchmark ({} s per run, 64-byte bodies)",
        duration.as_secs()
    );
    println!();
    println!("| store | senders | sends/s | OK p50 | OK p99 |");
    println!("|---|---|---|---|---|");
    for &n in &senders {
        for (name, store) in [
            ("memory", StoreConfig::Memory),
            (
                "sqlite full",
                sqlite(dir.path().join(format!("full{n}.db")), SyncMode::Full),
            ),
            (
                "sqlite normal",
                sqlite(dir.path().join(format!("normal{n}.db")), SyncMode::Normal),
            ),
        ] {
            let result = run_sends(store, n, duration);
            println!(
                "| {name} | {n} | {:.0} | {:.3} ms | {:.3} ms |",
                result.per_second, result.p50_ms, result.p99_ms
            );
        }
    }
    println!();

    let messages: u64 = if quick { 200_000 } else { 1_000_000 };
    let path = dir.path().join("big.db");
    fill(&path, messages, 100);
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let server = chatd::start(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: sqlite(path.clone(), SyncMode::Full),
            ..Config::default()
        })
        .expect("start over the big database");
        times.push(started.elapsed());
        server.shutdown();
    }
    times.sort();
    println!(
        "start-up with {messages} stored messages in 100 rooms: median {:.1} ms (runs: {})",
        ms(times[times.len() / 2]),
        times
            .iter()
            .map(|t| format!("{:.1}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    );
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
    let server = chatd::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store,
        // A benchmark floods by design.
        rate_limit: None,
        max_per_ip: None,
        ..Config::default()
    })
    .expect("start server");
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Few client threads, each driving several connections, so the client's own context
    // switches do not dominate the two cores the server also runs on.
    let threads = senders.min(CLIENT_THREADS);
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let stop = Arc::clone(&stop);
            let mine: Vec<usize> = (t..senders).step_by(threads).collect();
            thread::spawn(move || drive(addr, &mine, &stop))
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
    server.shutdown();
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
fn drive(addr: SocketAddr, senders: &[usize], stop: &AtomicBool) -> Vec<Duration> {
    let mut connections: Vec<(TcpStream, BufReader<TcpStream>)> = senders
        .iter()
        .map(|&i| {
            let stream = TcpStream::connect(addr).expect("connect");
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
