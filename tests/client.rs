//! The Rust client library (`chatd-client`) against a real chatd: whatever happens to the
//! connection (a server restart, kill -9 mid-flood, a slow-consumer disconnect), the
//! application sees every message exactly once and in order, and every send is stored once.
//!
//! These tests always use SQLite, whatever `CHATD_TEST_STORE` says: resuming across a
//! restart needs a store that survives it.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chatd_client::{Client as ChatClient, Config, Event, Message, ResumeState, Target};
use support::{sqlite_store, Client, TestServer};

/// Long enough for a loaded two-core machine to flood, restart and resume.
const PATIENCE: Duration = Duration::from_secs(60);

fn config(server: std::net::SocketAddr, user: &str) -> Config {
    let mut config = Config::new(server.to_string(), user)
        .device("test")
        .backoff(Duration::from_millis(10), Duration::from_millis(200));
    config.connect_timeout = Duration::from_secs(10);
    config
}

/// An in-process server on `db`, at `listen` (port 0 for a new one).
fn server_on(db: &std::path::Path, listen: std::net::SocketAddr, capacity: usize) -> TestServer {
    let db = db.to_path_buf();
    TestServer::with(move |config| {
        config.listen = listen;
        config.store = sqlite_store(db, None);
        config.channel_capacity = capacity;
    })
}

/// Reads events until `count` messages of `room` arrived; returns them and the reasons of
/// every disconnect seen on the way.
fn collect(client: &mut ChatClient, room: &str, count: usize) -> (Vec<Message>, Vec<String>) {
    let deadline = Instant::now() + PATIENCE;
    let mut messages = Vec::new();
    let mut drops = Vec::new();
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event(left).expect("the session goes on") {
            Some(Event::Message(m)) if m.room == room => messages.push(m),
            Some(Event::Disconnected { reason }) => drops.push(reason),
            Some(Event::Gap { .. }) | Some(Event::EpochReset { .. }) => {
                panic!("SQLite history has no gap and no reset")
            }
            Some(_) => {}
            None => panic!(
                "{count} messages of {room} within {PATIENCE:?}: got {}",
                messages.len()
            ),
        }
    }
    (messages, drops)
}

/// Every seq from `first` on, once, in order; and each body once.
fn assert_exactly_once_in_order(messages: &[Message], first: u64) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.seq, first + i as u64, "message {i} out of order: {m:?}");
    }
    let mut bodies = HashMap::new();
    for m in messages {
        *bodies.entry(m.body.as_str()).or_insert(0) += 1;
    }
    assert!(bodies.values().all(|&n| n == 1), "a body delivered twice");
}

/// The bodies the store holds for `room`, read by a plain client with SYNC from 0.
fn stored_bodies(addr: std::net::SocketAddr, room: &str) -> Vec<String> {
    let mut reader = Client::connect(addr);
    reader.login("auditor");
    reader.join(room);
    let mut bodies = Vec::new();
    let mut after = 0;
    for _ in 0..1_000 {
        reader.send(&format!("SYNC {room} {after}"));
        loop {
            let line = reader.next_line();
            if let Some(rest) = line.strip_prefix("OK SYNC ") {
                if !rest.ends_with(" more") {
                    return bodies;
                }
                break;
            }
            let msg = support::Msg::parse(&line).unwrap_or_else(|e| reader.fail(&e));
            after = msg.seq;
            bodies.push(msg.body);
        }
    }
    reader.fail("SYNC kept saying more")
}

/// The server's count of sessions cut off as slow consumers.
fn slow_consumers(client: &mut ChatClient) -> u64 {
    let stats = client.call("STATS", Duration::from_secs(5)).unwrap();
    let field = stats
        .fields
        .iter()
        .find_map(|f| f.strip_prefix("slow_consumers="));
    field
        .and_then(|n| n.parse().ok())
        .expect("STATS has slow_consumers")
}

/// Nothing but events (presence of the auditor and the like) follows: no message twice.
fn assert_no_more_messages(client: &mut ChatClient) {
    for _ in 0..100 {
        match client.next_event(Duration::from_millis(200)).unwrap() {
            Some(Event::Message(m)) => panic!("a message after the last one: {m:?}"),
            Some(_) => {}
            None => return,
        }
    }
}

fn assert_each_stored_once(stored: &[String], sent: &[String]) {
    for body in sent {
        let copies = stored.iter().filter(|b| *b == body).count();
        assert_eq!(copies, 1, "{body:?} is stored {copies} times");
    }
}

/// A server shut down and started again on the same SQLite file: the client reconnects,
/// resumes from its cursor, retries its unacknowledged sends, and the application sees each
/// message once, in order.
#[test]
fn a_server_restart_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = server_on(&db, "127.0.0.1:0".parse().unwrap(), 1024);
    let addr = server.addr();
    let mut alice = ChatClient::connect(config(addr, "alice")).unwrap();
    alice.join("lobby").unwrap();
    let mut bob = server.login("bob");
    bob.join("lobby");
    for i in 0..30 {
        bob.say("lobby", &format!("bob before {i}"));
    }
    // Queued and not waited for: some may be acknowledged before the shutdown, some not.
    let mut sent: Vec<String> = (0..20).map(|i| format!("alice across {i}")).collect();
    for body in &sent {
        alice
            .send_nowait(Target::Room("lobby".into()), body)
            .unwrap();
    }
    assert!(server.shutdown(), "the first server shut down in time");
    drop(bob);

    let server = server_on(&db, addr, 1024);
    let mut bob = server.login("bob");
    for i in 0..30 {
        bob.say("lobby", &format!("bob after {i}"));
    }
    sent.push("alice after".into());
    alice.send("lobby", "alice after").unwrap();
    alice.flush(PATIENCE).unwrap();

    let (messages, drops) = collect(&mut alice, "lobby", 81);
    assert_exactly_once_in_order(&messages, 1);
    assert!(drops.iter().any(|r| r == "server-shutdown"), "{drops:?}");
    assert_each_stored_once(&stored_bodies(addr, "lobby"), &sent);
    assert_no_more_messages(&mut alice);
}

/// kill -9 of the binary while another client floods, then a restart on the same file: the
/// reader sees all of the flood once, in order, and each of the flood's sends is stored once.
#[test]
fn kill_9_mid_flood_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let args = [
        "--data".as_ref(),
        db.as_os_str(),
        "--sync".as_ref(),
        "normal".as_ref(),
        "--no-rate-limit".as_ref(),
    ];
    let (mut child, addr, _log) = support::spawn_chatd(&args).expect("chatd starts");
    let mut alice = ChatClient::connect(config(addr, "alice")).unwrap();
    alice.join("flood").unwrap();
    let mut bob = ChatClient::connect(config(addr, "bob")).unwrap();
    bob.join("flood").unwrap();

    const FLOOD: usize = 300;
    let bodies: Vec<String> = (0..FLOOD).map(|i| format!("flood {i}")).collect();
    let to_send = bodies.clone();
    let flooder = std::thread::spawn(move || {
        for body in &to_send {
            bob.send("flood", body)
                .expect("each send is acknowledged, restart or not");
        }
    });

    let (mut messages, _) = collect(&mut alice, "flood", 100);
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let (mut child, _, _log) =
        support::spawn_chatd_on(&addr.to_string(), &args).expect("chatd restarts");
    let (rest, drops) = collect(&mut alice, "flood", FLOOD - 100);
    messages.extend(rest);
    flooder.join().expect("the flooder finished");

    assert_exactly_once_in_order(&messages, 1);
    assert!(drops.iter().any(|r| r == "connection-lost"), "{drops:?}");
    let stored = stored_bodies(addr, "flood");
    assert_eq!(stored.len(), FLOOD, "nothing else was stored");
    assert_each_stored_once(&stored, &bodies);
    let _ = child.kill();
    let _ = child.wait();
}

/// A client that stops reading is disconnected as a slow consumer; when it reads again it
/// resumes by itself and the application sees every message once, in order.
#[test]
fn a_slow_consumer_disconnect_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(
        &dir.path().join("chatd.db"),
        "127.0.0.1:0".parse().unwrap(),
        16,
    );
    let mut alice = ChatClient::connect(config(server.addr(), "alice")).unwrap();
    alice.join("busy").unwrap();
    let mut bob = ChatClient::connect(config(server.addr(), "bob")).unwrap();
    bob.join("busy").unwrap();
    // Loopback socket buffers hold megabytes: bob posts until alice's buffers and then her
    // 16-line queue are full (bounded: 8,000 posts of 4 KB is far past any buffer). He reads
    // his own replies, so only alice falls behind.
    let filler = "x".repeat(4000);
    let mut posted = 0;
    while posted < 8_000 {
        bob.send("busy", &format!("{posted} {filler}")).unwrap();
        posted += 1;
        if posted % 200 == 0 && slow_consumers(&mut bob) > 0 {
            break;
        }
    }
    assert!(slow_consumers(&mut bob) >= 1, "alice was cut off");
    // And some more after the cut, which she gets live or by SYNC.
    for _ in 0..50 {
        bob.send("busy", &format!("{posted} {filler}")).unwrap();
        posted += 1;
    }
    let (messages, drops) = collect(&mut alice, "busy", posted);
    assert_exactly_once_in_order(&messages, 1);
    assert!(drops.iter().any(|r| r == "slow-consumer"), "{drops:?}");
    assert_no_more_messages(&mut alice);
}

/// A persisted resume state lets a new process continue where the old one stopped: the
/// messages after its cursor, none before, and its unacknowledged send retried once.
#[test]
fn a_persisted_resume_state_continues_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(
        &dir.path().join("chatd.db"),
        "127.0.0.1:0".parse().unwrap(),
        1024,
    );
    let mut bob = ChatClient::connect(config(server.addr(), "bob")).unwrap();
    bob.join("log").unwrap();
    let mut logger = ChatClient::connect(config(server.addr(), "logger")).unwrap();
    logger.join("log").unwrap();
    for i in 0..10 {
        bob.send("log", &format!("first {i}")).unwrap();
    }
    let first = logger
        .expect_messages("log", 10, Duration::from_secs(10))
        .unwrap();
    assert_exactly_once_in_order(&first, 1);
    let saved = logger.resume_state().to_string();
    logger.quit();

    for i in 0..10 {
        bob.send("log", &format!("second {i}")).unwrap();
    }
    let mut state: ResumeState = saved.parse().unwrap();
    state.pending.push(chatd_client::PendingSend {
        cid: "logger-1".into(),
        target: Target::Room("log".into()),
        body: "from the outbox".into(),
    });
    let mut logger = ChatClient::resume(config(server.addr(), "logger"), state).unwrap();
    logger.flush(Duration::from_secs(10)).unwrap();
    let second = logger
        .expect_messages("log", 11, Duration::from_secs(10))
        .unwrap();
    assert_exactly_once_in_order(&second, 11);
    assert_eq!(second[10].body, "from the outbox");
    let stored = stored_bodies(server.addr(), "log");
    assert_each_stored_once(&stored, &["from the outbox".to_string()]);
}

/// The request calls answer with typed values: DM, WHO, HISTORY, READ, TYPING.
#[test]
fn requests_return_typed_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(
        &dir.path().join("chatd.db"),
        "127.0.0.1:0".parse().unwrap(),
        1024,
    );
    let mut bob = ChatClient::connect(config(server.addr(), "bob")).unwrap();
    let mut alice = ChatClient::connect(config(server.addr(), "alice")).unwrap();
    let joined = alice.join("team").unwrap();
    assert_eq!((joined.room.as_str(), joined.seq), ("team", 0));
    bob.join("team").unwrap();
    let sent = alice.send("team", "one").unwrap();
    assert_eq!(sent.seq, 1);
    alice.send("team", "two").unwrap();
    let history = bob.history("team", 10, None).unwrap();
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two"]);
    let who = bob.who("team").unwrap();
    let names: Vec<&str> = who.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(bob.read("team", 2).unwrap(), 2);
    bob.typing("team", true).unwrap();
    alice
        .expect_event(
            Duration::from_secs(5),
            |e| matches!(e, Event::Typing { user, typing: true, .. } if user == "bob"),
        )
        .unwrap();
    let dm = alice.dm("bob", "psst").unwrap();
    assert_eq!(dm.room, "dm:alice:bob");
    let got = bob
        .expect_messages("dm:alice:bob", 1, Duration::from_secs(5))
        .unwrap();
    assert_eq!(got[0].body, "psst");
    let refused = alice.send("nowhere", "x").unwrap_err();
    assert!(
        matches!(refused, chatd_client::Error::Refused { .. }),
        "{refused}"
    );
}
