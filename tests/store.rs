//! The durable store: restarts, crashes, and a store that cannot write.
//!
//! Restart and crash tests run the real `chatd` binary with `--data` in a temporary
//! directory, stop it (SIGTERM, or SIGKILL for a crash) and start it again over the same file.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatd::store::{self, StoreErrorKind, Ticket, Write};
use support::{all_messages, ChatdProcess as Chatd, Client, Msg, TestServer};

/// The binary over the SQLite file `data`.
fn sqlite(data: &Path) -> Vec<&OsStr> {
    let mut args = ["--presence-grace", "0", "--no-rate-limit", "--data"]
        .map(OsStr::new)
        .to_vec();
    args.push(data.as_os_str());
    args
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chatd.db");
    (dir, path)
}

/// A restart keeps users, rooms, epochs, seqs, memberships, DMs, reads and client ids, and a
/// client resumes across it with SYNC and no gap.
#[test]
fn restart_keeps_everything() {
    let (_dir, data) = temp_db();
    let server = Chatd::start(&sqlite(&data));
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

    let server = Chatd::start(&sqlite(&data));
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
    // The retry of a client id from before the restart gets the original back.
    alice.send("@c2;cid=first SEND general two");
    assert_eq!(
        alice.expect_prefix("@c2 OK SEND general 2 "),
        ok_two.replacen("@c1", "@c2", 1)
    );
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
    let mut bob = server.login("bob");
    bob.send("ROOMS");
    bob.expect_prefix("ROOM dm:alice:bob ");
    bob.expect_prefix("ROOM general seq=3 ");
    bob.expect("OK ROOMS 2");
    server.stop();
}

/// kill -9 in the middle of a stream of sends with client ids, at several random points:
/// every acknowledged message is stored exactly once, seqs are unique, and a retry of an
/// unacknowledged client id returns the stored original or publishes it fresh, never both.
#[test]
fn crash_loses_no_acknowledged_message() {
    const SENDERS: usize = 4;
    const ROUNDS: usize = 3;
    let (_dir, data) = temp_db();
    for round in 0..ROUNDS {
        let server = Chatd::start(&sqlite(&data));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                let (addr, stop) = (server.addr, Arc::clone(&stop));
                thread::spawn(move || send_until_killed(addr, round, i, &stop))
            })
            .collect();
        // A pseudo-random kill point between 50 and 450 ms into the stream.
        let delay = 50 + (round as u64 * 7919 + std::process::id() as u64 * 31) % 400;
        thread::sleep(Duration::from_millis(delay));
        server.crash();
        stop.store(true, Ordering::SeqCst);
        let outcomes: Vec<SenderOutcome> = senders.into_iter().map(|s| s.join().unwrap()).collect();

        let server = Chatd::start(&sqlite(&data));
        let mut checker = server.login("checker");
        checker.join("crash");
        let before: Vec<Msg> = all_messages(&mut checker, "crash");
        let stored: HashMap<String, &Msg> = before.iter().map(|m| (m.id.clone(), m)).collect();
        let seqs: HashSet<u64> = before.iter().map(|m| m.seq).collect();
        assert_eq!(seqs.len(), before.len(), "duplicate seqs after a crash");
        let bodies: HashSet<&str> = before.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies.len(), before.len(), "a message was stored twice");
        let mut acked = 0;
        for outcome in &outcomes {
            for (body, (seq, id)) in &outcome.acked {
                let msg = stored.get(id).unwrap_or_else(|| {
                    panic!("round {round}: acknowledged {body} (seq {seq}) is missing")
                });
                assert_eq!((msg.seq, msg.body.as_str()), (*seq, body.as_str()));
                acked += 1;
            }
        }
        // Retry what was in flight when the server died. Each retrying client stays connected
        // until the round ends: with no presence grace, one leaving would announce itself
        // offline to the next one while it logs in, which must be quiet.
        let mut retried = 0;
        let mut retriers = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let Some((cid, body)) = &outcome.in_flight else {
                continue;
            };
            let mut client = server.login(&format!("sender{round}x{i}"));
            client.join("crash"); // in case the crash took the membership with it
            client.send(&format!("@r;cid={cid} SEND crash {body}"));
            let ok = client.expect_prefix("@r OK SEND crash ");
            let id = ok.rsplit(' ').next().unwrap().to_owned();
            if let Some(original) = before.iter().find(|m| &m.body == body) {
                assert_eq!(
                    id, original.id,
                    "retry of a stored cid must return the original"
                );
            } else {
                client.expect_msg();
            }
            retriers.push(client);
            retried += 1;
        }
        let after = all_messages(&mut checker, "crash");
        let bodies: HashSet<&str> = after.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(
            bodies.len(),
            after.len(),
            "a retried cid was published twice"
        );
        println!(
            "round {round}: killed after {delay} ms; {} stored, {acked} acknowledged, {retried} retried",
            before.len()
        );
        drop(retriers);
        server.stop();
    }
}

struct SenderOutcome {
    /// body -> (seq, msg id) for every OK received.
    acked: BTreeMap<String, (u64, String)>,
    /// The send whose OK had not arrived when the connection died: (cid, body).
    in_flight: Option<(String, String)>,
}

/// Sends as fast as acknowledgements allow until the connection dies (bounded: 30 s).
fn send_until_killed(
    addr: SocketAddr,
    round: usize,
    index: usize,
    stop: &AtomicBool,
) -> SenderOutcome {
    let mut outcome = SenderOutcome {
        acked: BTreeMap::new(),
        in_flight: None,
    };
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return outcome;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream).lines();
    use std::io::Write;
    let name = format!("sender{round}x{index}");
    if writeln!(writer, "LOGIN {name}\nJOIN crash").is_err() {
        return outcome;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        n += 1;
        let cid = format!("{name}-{n}");
        let body = format!("{name} message {n}");
        outcome.in_flight = Some((cid.clone(), body.clone()));
        if writeln!(writer, "@s;cid={cid} SEND crash {body}").is_err() {
            return outcome;
        }
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("@s OK SEND crash ") {
                        let (seq, id) = rest.split_once(' ').expect("seq and id");
                        outcome
                            .acked
                            .insert(body.clone(), (seq.parse().unwrap(), id.to_owned()));
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

/// A cid's fingerprint is stored with it: after a restart, the cid with another body is
/// refused with `ERR cid-reused`, and the same body still gets the original OK. A cid stored
/// before fingerprints were (schema version 2, fingerprint NULL) is taken as a retry, as
/// every reused cid was then.
#[test]
fn a_reused_cid_is_refused_across_a_restart_and_old_cids_still_retry() {
    let (_dir, data) = temp_db();
    let server = Chatd::start(&sqlite(&data));
    let mut alice = server.login("alice");
    alice.join("general");
    for (label, cid, body) in [("a", "first", "one"), ("b", "old", "two")] {
        alice.send(&format!("@{label};cid={cid} SEND general {body}"));
        alice.expect_prefix(&format!("@{label} OK SEND general "));
        alice.expect_msg();
    }
    alice.send("QUIT");
    alice.read_until_closed();
    server.stop();
    let db = rusqlite::Connection::open(&data).unwrap();
    db.execute(
        "UPDATE client_ids SET fingerprint = NULL WHERE cid = 'old'",
        [],
    )
    .unwrap();
    drop(db);

    let server = Chatd::start(&sqlite(&data));
    let mut alice = server.login("alice");
    alice.send("@r;cid=first SEND general one");
    alice.expect_prefix("@r OK SEND general 1 ");
    alice.send("@x;cid=first SEND general not one");
    alice.expect_prefix("@x ERR cid-reused :");
    alice.send("@o;cid=old SEND general anything");
    alice.expect_prefix("@o OK SEND general 2 ");
    alice.expect_quiet();
    server.stop();
}

/// A database written by a newer chatd is refused with a clear message, and left untouched.
#[test]
fn refuses_a_newer_schema() {
    let (_dir, data) = temp_db();
    Chatd::start(&sqlite(&data)).stop();
    let db = rusqlite::Connection::open(&data).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let log = Chatd::try_start(&sqlite(&data))
        .err()
        .expect("chatd must refuse a newer schema");
    assert!(
        log.contains("schema version 99, newer than this chatd"),
        "{log}"
    );
    let db = rusqlite::Connection::open(&data).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99, "the newer database must not be changed");
}

/// A file that is not a database is refused with a clear message.
#[test]
fn refuses_a_corrupt_file() {
    let (_dir, data) = temp_db();
    std::fs::write(&data, vec![0x5a; 8192]).unwrap();
    let log = Chatd::try_start(&sqlite(&data))
        .err()
        .expect("chatd must refuse a corrupt file");
    assert!(log.contains("is it a chatd database?"), "{log}");
}

/// A data file where nothing can be written (here /proc, read-only even for root) is
/// refused at start-up, naming the path.
#[test]
fn refuses_an_unwritable_location() {
    let data = Path::new("/proc/chatd-test/chatd.db");
    let log = Chatd::try_start(&sqlite(data))
        .err()
        .expect("chatd must refuse an unwritable path");
    assert!(log.contains("/proc/chatd-test/chatd.db"), "{log}");
}

/// When the disk is full, a send gets `ERR store-failed` (never a false OK), nobody receives
/// the message, the server keeps serving, and SYNC reports the unused seq as a GAP.
#[test]
fn full_disk_refuses_sends_honestly() {
    let (_dir, data) = temp_db();
    let server = TestServer::with(|config| {
        // A few pages: the schema fits, a few dozen 2 KiB messages do not.
        config.store = support::sqlite_store(data.clone(), Some(24));
        config.rate_limit = None;
    });
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    let body = "x".repeat(2000);
    let mut delivered = 0;
    let mut failed_seq = None;
    for _ in 0..200 {
        alice.send(&format!("SEND general {body}"));
        let line = alice.next_line();
        if line.starts_with("ERR store-failed :") {
            failed_seq = Some(delivered + 1);
            break;
        }
        assert!(line.starts_with("OK SEND general "), "{line}");
        alice.expect_msg();
        bob.expect_msg();
        delivered += 1;
    }
    let failed_seq = failed_seq.expect("the tiny database must fill up");
    bob.expect_quiet(); // bob received nothing for the failed send
    alice.expect_quiet();
    alice.send("SYNC general 0");
    for seq in 1..=delivered {
        assert_eq!(alice.expect_msg().seq, seq);
    }
    alice.expect(&format!("GAP general {failed_seq} {failed_seq}"));
    alice.expect_prefix(&format!("OK SYNC general seq={failed_seq} "));
}

/// With SQLite, HISTORY and SYNC reach past the in-memory recent log into the database, with
/// no gap where the two meet.
#[test]
fn history_and_sync_read_older_pages_from_the_store() {
    let (_dir, data) = temp_db();
    let server = TestServer::with(|config| {
        config.recent_per_room = 3;
        config.store = support::sqlite_store(data.clone(), None);
    });
    let mut alice = server.login("alice");
    alice.join("general");
    let sent: Vec<Msg> = (1..=8)
        .map(|i| alice.say("general", &format!("m{i}")))
        .collect();
    alice.send("HISTORY general 5 before=7");
    for msg in &sent[1..6] {
        assert_eq!(
            alice.expect_msg(),
            *msg,
            "seq {} from the store or the log",
            msg.seq
        );
    }
    alice.expect_prefix("OK HISTORY general 5 seq=8 ");
    alice.send("SYNC general 1");
    for msg in &sent[1..] {
        assert_eq!(alice.expect_msg(), *msg);
    }
    alice.expect_prefix("OK SYNC general seq=8 ");
}

/// Each way the SQLite store fails has its own `StoreErrorKind`, so a caller can tell a newer
/// schema from a damaged file, an unwritable place or a full disk without reading the text.
#[test]
fn store_errors_say_what_kind() {
    let open_error = |path: &Path| match store::open(&support::sqlite_store(path.into(), None)) {
        Ok(_) => panic!("{} must be refused", path.display()),
        Err(e) => e,
    };

    let (_newer_dir, newer) = temp_db();
    drop(store::open(&support::sqlite_store(newer.clone(), None)).expect("a fresh database"));
    let db = rusqlite::Connection::open(&newer).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let e = open_error(&newer);
    assert_eq!(e.kind(), StoreErrorKind::NewerSchema, "{e}");

    let (_corrupt_dir, corrupt) = temp_db();
    std::fs::write(&corrupt, vec![0x5a; 8192]).unwrap();
    let e = open_error(&corrupt);
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");

    let e = open_error(Path::new("/proc/chatd-test/chatd.db"));
    assert_eq!(e.kind(), StoreErrorKind::Unwritable, "{e}");

    // A few pages: the schema fits, a few dozen 2 KiB user names do not.
    let (_full_dir, full) = temp_db();
    let store = store::open(&support::sqlite_store(full, Some(24))).expect("a small database");
    for n in 0..200 {
        let ticket = Ticket::default();
        let name = format!("{n:04}{}", "x".repeat(2000));
        store.write(Write::User { name: name.into() }, Some(ticket.clone()));
        if let Err(e) = ticket.wait() {
            assert_eq!(e.kind(), StoreErrorKind::Full, "{e}");
            return;
        }
    }
    panic!("the tiny database must fill up");
}

/// Security review finding 9: security changes are acknowledged only once stored, as
/// messages are: a `kill -9` right after the OK never loses them. (Before the fix, PRIVATE was
/// lost in 11 of 25 such trials.)
#[test]
fn security_changes_survive_a_crash_right_after_their_ok() {
    let (_dir, data) = temp_db();
    for trial in 0..8 {
        let server = Chatd::start(&sqlite(&data));
        let owner = format!("owner{trial}");
        let room = format!("secret{trial}");
        let mut client = server.login(&owner);
        client.join(&room);
        if trial % 2 == 0 {
            client.send("REGISTER pass-word");
            client.expect(&format!("OK REGISTER {owner}"));
        } else {
            client.send(&format!("PRIVATE {room} on"));
            client.expect(&format!("OK PRIVATE {room} on"));
        }
        server.crash();

        let server = Chatd::start(&sqlite(&data));
        if trial % 2 == 0 {
            let mut impostor = Client::connect(server.addr);
            impostor.send(&format!("LOGIN {owner}"));
            impostor.expect_prefix("ERR bad-password :");
        } else {
            let mut outsider = server.login("outsider");
            outsider.send(&format!("WHO {room}"));
            outsider.expect(&format!("ERR no-such-room :there is no room {room}"));
        }
        server.crash();
    }
}
