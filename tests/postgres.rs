//! The PostgreSQL store: restarts and crashes of chatd, a newer schema, and the database
//! server itself restarting under traffic.
//!
//! Like tests/store.rs for SQLite, restart and crash tests run the real `chatd` binary, here
//! with `--store postgres --database-url` on a database of the test binary's throwaway
//! cluster (tests/support/postgres.rs). Without PostgreSQL installed and outside CI, each
//! test says why it skipped and passes.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::postgres::Cluster;
use support::{all_messages, ChatdProcess as Chatd, Msg, TestServer};

/// The binary over the PostgreSQL database at `url`.
fn postgres(url: &str) -> [&OsStr; 7] {
    [
        "--presence-grace",
        "0",
        "--no-rate-limit",
        "--store",
        "postgres",
        "--database-url",
        url,
    ]
    .map(OsStr::new)
}

/// A restart keeps users, rooms, epochs, seqs, memberships, DMs, reads and client ids, and a
/// client resumes across it with SYNC and no gap.
#[test]
fn restart_keeps_everything() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let server = Chatd::start(&postgres(&url));
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let join = alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    alice.say("general", "one");
    bob.expect_msg();
    alice.send("@c1;cid=first SEND general two");
    let ok_two = alice.expect_prefix("@c1 OK SEND general 2 ");
    alice.expect_msg();
    bob.expect_msg();
    bob.send("DM alice psst");
    bob.expect_prefix("OK DM alice dm:alice:bob 1 ");
    bob.expect_msg();
    alice.expect_msg();
    bob.send("READ general 2");
    bob.expect("OK READ general 2");
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    alice.send("QUIT");
    alice.read_until_closed();
    server.stop();

    let server = Chatd::start(&postgres(&url));
    let mut alice = server.login("alice");
    alice.send("ROOMS");
    alice.expect_prefix("ROOM dm:alice:bob seq=1 ");
    alice.expect(&format!(
        "ROOM general seq=2 epoch={} members=2 read=2 unread=0",
        join.epoch
    ));
    alice.expect("OK ROOMS 2");
    alice.send(&format!("SYNC general 1 epoch={}", join.epoch));
    let two = alice.expect_msg();
    assert_eq!((two.seq, two.body.as_str()), (2, "two"));
    alice.expect(&format!("OK SYNC general seq=2 epoch={}", join.epoch));
    // The retry of a client id from before the restart gets the original back, and the
    // same cid with another body is refused (its fingerprint was stored).
    alice.send("@c2;cid=first SEND general two");
    assert_eq!(
        alice.expect_prefix("@c2 OK SEND general 2 "),
        ok_two.replacen("@c1", "@c2", 1)
    );
    alice.send("@x;cid=first SEND general not two");
    alice.expect_prefix("@x ERR cid-reused :");
    alice.expect_quiet();
    let three = alice.say("general", "three");
    assert_eq!(three.seq, 3, "seq continues after the restart");
    alice.send("HISTORY dm:alice:bob");
    let dm = alice.expect_msg();
    assert_eq!((dm.sender.as_str(), dm.body.as_str()), ("bob", "psst"));
    alice.expect_prefix("OK HISTORY dm:alice:bob 1 seq=1 ");
    alice.send("WHO general");
    alice.expect("WHO general alice online");
    alice.expect_prefix("WHO general bob offline last_seen=");
    alice.expect("OK WHO general 2");
    server.stop();
}

/// A database written by a newer chatd is refused with a clear message, and left untouched.
#[test]
fn refuses_a_newer_schema() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    Chatd::start(&postgres(&url)).stop();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    db.execute("UPDATE chatd_schema SET version = 99", &[])
        .unwrap();
    let log = Chatd::try_start(&postgres(&url))
        .err()
        .expect("chatd must refuse a newer schema");
    assert!(
        log.contains("schema version 99, newer than this chatd"),
        "{log}"
    );
    let version: i64 = db
        .query_one("SELECT version FROM chatd_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 99, "the newer database was left untouched");
}

/// A database that cannot be reached is refused at start-up, naming it (not its password).
#[test]
fn refuses_an_unreachable_database() {
    let log = Chatd::try_start(&postgres("postgres://chatd:secret@127.0.0.1:1/chatd"))
        .err()
        .expect("chatd must refuse an unreachable database");
    assert!(
        log.contains("PostgreSQL database \"chatd\" on 127.0.0.1:1"),
        "{log}"
    );
    assert!(!log.contains("secret"), "the password leaked: {log}");
}

/// kill -9 in the middle of a stream of sends with client ids, at several points: every
/// acknowledged message is stored exactly once, seqs are unique, and a retry of the send in
/// flight returns the stored original or publishes it fresh, never both.
#[test]
fn crash_loses_no_acknowledged_message() {
    const SENDERS: usize = 4;
    const ROUNDS: usize = 3;
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    for round in 0..ROUNDS {
        let server = Chatd::start(&postgres(&url));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                let (addr, stop) = (server.addr, Arc::clone(&stop));
                let name = format!("sender{round}x{i}");
                thread::spawn(move || send_until_stopped(addr, &name, "crash", &stop))
            })
            .collect();
        // A pseudo-random kill point between 50 and 450 ms into the stream.
        let delay = 50 + (round as u64 * 7919 + std::process::id() as u64 * 31) % 400;
        thread::sleep(Duration::from_millis(delay));
        server.crash();
        stop.store(true, Ordering::SeqCst);
        let outcomes: Vec<SenderOutcome> = senders.into_iter().map(|s| s.join().unwrap()).collect();

        let server = Chatd::start(&postgres(&url));
        let mut checker = server.login("checker");
        checker.join("crash");
        let before = all_messages(&mut checker, "crash");
        let acked = check_acknowledged_are_stored(&before, &outcomes);
        let mut retriers = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let Some((cid, body)) = &outcome.in_flight else {
                continue;
            };
            let mut client = server.login(&format!("sender{round}x{i}"));
            client.join("crash");
            client.send(&format!("@r;cid={cid} SEND crash {body}"));
            let ok = client.expect_prefix("@r OK SEND crash ");
            let id = ok.rsplit(' ').next().unwrap().to_owned();
            if let Some(original) = before.iter().find(|m| &m.body == body) {
                assert_eq!(
                    id, original.id,
                    "retry of a stored cid returns the original"
                );
            } else {
                client.expect_msg();
            }
            retriers.push(client);
        }
        let after = all_messages(&mut checker, "crash");
        let bodies: HashSet<&str> = after.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(
            bodies.len(),
            after.len(),
            "a retried cid was published twice"
        );
        println!(
            "round {round}: killed after {delay} ms; {} stored, {acked} acknowledged",
            before.len()
        );
        drop(retriers);
        server.stop();
    }
}

/// The PostgreSQL server restarts while four clients post: nothing acknowledged is lost,
/// sends during the outage get `ERR store-failed` (or wait), never a false OK, and posting
/// works again once the writer has reconnected.
#[test]
fn database_restart_during_traffic_loses_nothing_acknowledged() {
    const SENDERS: usize = 4;
    if Cluster::shared().is_none() {
        return;
    }
    // Its own cluster: restarting the shared one would cut other tests' connections.
    let cluster = Cluster::start().expect("a second PostgreSQL cluster");
    let url = cluster.create_database();
    let server = TestServer::with(|config| config.store = cluster.store_at(&url));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (addr, stop) = (server.addr(), Arc::clone(&stop));
            thread::spawn(move || send_until_stopped(addr, &format!("poster{i}"), "busy", &stop))
        })
        .collect();
    // Let traffic flow, restart the database under it, then let the writer reconnect and
    // traffic flow again (bounded waits, checked below by OKs after the restart).
    thread::sleep(Duration::from_millis(300));
    cluster.restart();
    let restarted = Instant::now();
    let mut probe = server.login("probe");
    probe.join("busy");
    // The writer reconnects within its backoff; a post succeeds within a few seconds.
    let mut posted_after_restart = false;
    for n in 0..100 {
        probe.send(&format!("@p{n} SEND busy probe {n}"));
        loop {
            let line = probe.next_line();
            if line.starts_with(&format!("@p{n} OK SEND busy ")) {
                posted_after_restart = true;
                break;
            }
            if line.starts_with(&format!("@p{n} ERR ")) {
                assert!(line.contains("store-failed"), "unexpected error: {line}");
                break;
            }
        }
        if posted_after_restart {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        posted_after_restart,
        "no send succeeded within 10 s of the database restart"
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<SenderOutcome> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let failed: usize = outcomes.iter().map(|o| o.store_failed).sum();
    drop(probe);
    assert!(server.shutdown(), "chatd shut down cleanly");
    // Read back from the database itself, not the room's in-memory log: a new server on
    // the same database.
    let server = TestServer::with(|config| config.store = cluster.store_at(&url));
    let mut checker = server.login("checker");
    checker.join("busy");
    let stored = all_messages(&mut checker, "busy");
    let acked = check_acknowledged_are_stored(&stored, &outcomes);
    println!(
        "database restarted; {acked} acknowledged and stored, {failed} ERR store-failed, \
         reconnected after {:?}",
        restarted.elapsed()
    );
    assert!(acked > 0, "no send was acknowledged at all");
    drop(checker);
    server.shutdown();
}

/// Every acknowledged message is in `stored` with its seq, id and body; seqs and bodies are
/// unique. Returns how many were acknowledged.
fn check_acknowledged_are_stored(stored: &[Msg], outcomes: &[SenderOutcome]) -> usize {
    let by_id: HashMap<&str, &Msg> = stored.iter().map(|m| (m.id.as_str(), m)).collect();
    let seqs: HashSet<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), stored.len(), "duplicate seqs");
    let bodies: HashSet<&str> = stored.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), stored.len(), "a message was stored twice");
    let mut acked = 0;
    for outcome in outcomes {
        for (body, (seq, id)) in &outcome.acked {
            let msg = by_id
                .get(id.as_str())
                .unwrap_or_else(|| panic!("acknowledged {body} (seq {seq}) is missing"));
            assert_eq!((msg.seq, msg.body.as_str()), (*seq, body.as_str()));
            acked += 1;
        }
    }
    acked
}

struct SenderOutcome {
    /// body -> (seq, msg id) for every OK received.
    acked: BTreeMap<String, (u64, String)>,
    /// The send whose answer had not arrived when the connection died: (cid, body).
    in_flight: Option<(String, String)>,
    /// Sends answered `ERR store-failed`.
    store_failed: usize,
}

/// Sends with client ids as fast as answers allow until `stop` or the connection dies
/// (bounded: 30 s).
fn send_until_stopped(
    addr: SocketAddr,
    name: &str,
    room: &str,
    stop: &AtomicBool,
) -> SenderOutcome {
    let mut outcome = SenderOutcome {
        acked: BTreeMap::new(),
        in_flight: None,
        store_failed: 0,
    };
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return outcome;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream).lines();
    use std::io::Write;
    if writeln!(writer, "LOGIN {name}\nJOIN {room}").is_err() {
        return outcome;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        n += 1;
        let cid = format!("{name}-{n}");
        let body = format!("{name} message {n}");
        outcome.in_flight = Some((cid.clone(), body.clone()));
        if writeln!(writer, "@s;cid={cid} SEND {room} {body}").is_err() {
            return outcome;
        }
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix(&format!("@s OK SEND {room} ")) {
                        let (seq, id) = rest.split_once(' ').expect("seq and id");
                        outcome
                            .acked
                            .insert(body.clone(), (seq.parse().unwrap(), id.to_owned()));
                        outcome.in_flight = None;
                        break;
                    }
                    if line.starts_with("@s ERR ") {
                        assert!(line.contains("store-failed"), "{name}: {line}");
                        outcome.store_failed += 1;
                        outcome.in_flight = None;
                        break;
                    }
                }
                _ => return outcome,
            }
        }
    }
    outcome
}
