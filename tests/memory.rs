//! Resident memory under hostile clients that stay within the default limits.
//!
//! Runs the real `chatd` binary (as tests/store.rs does) with its default flags, so the rate
//! limit, the per-session queue and every other default applies, and reads its resident set
//! (`VmRSS` in `/proc/<pid>/status`) while clients attack it: rooms created and abandoned with
//! 4 KB messages, accounts created in a loop, and readers that ask a big room for a full SYNC
//! through a tiny receive window and never read. Linux only (it reads /proc).

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::Client;

/// Resident memory the server may use at any moment while the attack runs.
const BUDGET_KIB: u64 = 256 * 1024;
/// How far above its idle baseline the server may stay once the attackers have left.
const SETTLED_SLACK_KIB: u64 = 32 * 1024;
/// How long the attackers run.
const ATTACK: Duration = Duration::from_secs(10);
/// A 4 KB body, the default body limit.
const BODY_BYTES: usize = 4096;
/// Messages in the room the readers SYNC: the default `--recent` and `--sync-limit`.
const BIG_ROOM_MESSAGES: usize = 1000;
/// Readers that SYNC the big room and never read.
const STALLED_READERS: usize = 60;

struct Chatd {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Chatd {
    /// The binary on 127.0.0.1:0 with default limits over a fresh database.
    fn start() -> Chatd {
        let data = tempfile::tempdir().expect("temp dir");
        let path = data.path().join("chatd.db");
        let args = [
            OsStr::new("--presence-grace"),
            "0".as_ref(),
            "--data".as_ref(),
            path.as_os_str(),
        ];
        let (child, addr, _log) =
            support::spawn_chatd(&args).unwrap_or_else(|log| panic!("chatd did not start:\n{log}"));
        Chatd {
            child,
            addr,
            _data: data,
        }
    }

    /// `VmRSS` in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(fill: char) -> String {
    std::iter::repeat_n(fill, BODY_BYTES).collect()
}

/// Fills room `big` with BIG_ROOM_MESSAGES 4 KB messages within the default rate limit: each
/// writer spends its burst of 20 commands (LOGIN, PING, JOIN, 16 SENDs, LEAVE) and goes.
fn fill_big_room(chatd: &Chatd) {
    let text = body('b');
    let mut sent = 0;
    for writer in 0.. {
        if sent >= BIG_ROOM_MESSAGES {
            break;
        }
        let mut client = chatd.connect();
        client.login(&format!("filler{writer}"));
        client.join("big");
        for _ in 0..16 {
            if sent == BIG_ROOM_MESSAGES {
                break;
            }
            client.say("big", &text);
            sent += 1;
        }
        client.send("LEAVE big");
        client.expect("OK LEAVE big");
    }
}

/// Runs `attack` on a thread until `stop`, counting what it got done.
fn attacker<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    stop: &'static AtomicBool,
    done: &'static AtomicU64,
    attack: impl Fn(u64) + Send + 'static,
) {
    scope.spawn(move || {
        for round in 0..1_000_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            attack(round);
            done.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Rooms created and left (4 KB messages each), accounts created in a loop, and readers that
/// never read a full SYNC of a big room: the server's resident memory stays under the budget
/// while they run within the default limits, and returns near its baseline when they leave.
#[test]
fn memory_stays_bounded_under_hostile_clients() {
    static STOP: AtomicBool = AtomicBool::new(false);
    static ROOMS: AtomicU64 = AtomicU64::new(0);
    static ACCOUNTS: AtomicU64 = AtomicU64::new(0);
    let chatd = Chatd::start();
    let baseline = chatd.rss_kib();
    fill_big_room(&chatd);
    let filled = chatd.rss_kib();

    let mut peak = filled;
    let mut stalled = Vec::new();
    thread::scope(|scope| {
        for churner in 0..4u64 {
            let addr = chatd.addr;
            attacker(scope, &STOP, &ROOMS, move |round| {
                // New names and new rooms have quotas: a refused step is what a client
                // within the default limits meets, so it waits a little and goes on.
                let mut client = Client::connect(addr);
                client.send(&format!("LOGIN churn{churner}x{round}"));
                if client.next_line().contains("rate-limited") {
                    thread::sleep(Duration::from_millis(100));
                    return;
                }
                let room = format!("churn{churner}r{round}");
                client.send(&format!("JOIN {room}"));
                if client.next_line().contains("rate-limited") {
                    thread::sleep(Duration::from_millis(100));
                    return;
                }
                for fill in ['x', 'y', 'z'] {
                    client.say(&room, &body(fill));
                }
                client.send(&format!("LEAVE {room}"));
                client.expect(&format!("OK LEAVE {room}"));
            });
        }
        for creator in 0..4u64 {
            let addr = chatd.addr;
            attacker(scope, &STOP, &ACCOUNTS, move |round| {
                let mut client = Client::connect(addr);
                client.send(&format!("LOGIN acct{creator}x{round} password=pw"));
                let reply = client.next_line();
                if reply.contains("rate-limited") {
                    thread::sleep(Duration::from_millis(200));
                }
            });
        }
        let started = Instant::now();
        for i in 0..STALLED_READERS {
            let mut reader = Client::connect_with_receive_buffer(chatd.addr, 4096);
            reader.send(&format!("LOGIN reader{i}"));
            reader.expect(&format!("OK LOGIN reader{i}"));
            reader.send("JOIN big");
            reader.send("SYNC big 0");
            stalled.push(reader);
            peak = peak.max(chatd.rss_kib());
        }
        while started.elapsed() < ATTACK {
            peak = peak.max(chatd.rss_kib());
            thread::sleep(Duration::from_millis(100));
        }
        STOP.store(true, Ordering::Relaxed);
    });
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut settled = chatd.rss_kib();
    while settled > baseline + SETTLED_SLACK_KIB && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        settled = chatd.rss_kib();
    }
    eprintln!(
        "VmRSS KiB: baseline {baseline}, big room filled {filled}, peak {peak}, \
         after the clients left {settled}; {} rooms churned, {} account attempts",
        ROOMS.load(Ordering::Relaxed),
        ACCOUNTS.load(Ordering::Relaxed)
    );
    assert!(
        peak <= BUDGET_KIB,
        "peak VmRSS {peak} KiB over the budget {BUDGET_KIB} KiB"
    );
    assert!(
        settled <= baseline + SETTLED_SLACK_KIB,
        "VmRSS {settled} KiB after the clients left, baseline {baseline} KiB"
    );
}
