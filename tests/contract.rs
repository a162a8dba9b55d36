//! The places where a client written from protocol.md alone met a server that did something
//! else (issue 19), each pinned to what the document now says.

mod support;

use chatd::config::{RateLimit, StoreConfig};
use support::{field, Client, Msg, ReadLines, TestServer};

/// `store=` from INFO: which store the test server runs on (`CHATD_TEST_STORE`).
fn store_of(client: &mut Client) -> String {
    client.send("@store INFO");
    let line = client.expect_prefix("@store OK INFO ");
    field(&line, "store").expect("store=").to_owned()
}

/// `INFO` works before LOGIN and tells the protocol version and the limits a client paces
/// itself by, from this server's configuration rather than from the documented defaults.
#[test]
fn info_tells_the_protocol_version_and_the_limits() {
    let server = TestServer::with(|c| {
        c.max_line = 1000;
        c.max_body = 500;
        c.sync_limit = 7;
        c.rate_limit = Some(RateLimit {
            burst: 9,
            per_second: 2.5,
            flood_refusals: 11,
        });
    });
    let mut client = server.connect();
    client.send("@i INFO");
    let line = client.expect_prefix("@i OK INFO proto=3 store=");
    for (key, value) in [
        ("max-line", "1000"),
        ("max-body", "500"),
        ("rate-limit", "on"),
        ("rate-burst", "9"),
        ("rate-per-second", "2.5"),
        ("flood-refusals", "11"),
        ("sync-limit", "7"),
        ("page-bytes", "262144"),
    ] {
        assert_eq!(field(&line, key), Some(value), "{key} in {line}");
    }
    let store = field(&line, "store").unwrap();
    assert!(["sqlite", "memory", "postgres"].contains(&store), "{line}");

    let unlimited = TestServer::start();
    let mut client = unlimited.login("alice");
    client.send("INFO");
    let line = client.expect_prefix("OK INFO proto=3 ");
    assert_eq!(field(&line, "rate-limit"), Some("off"), "{line}");
    assert_eq!(field(&line, "rate-burst"), None, "{line}");
}

/// A cid names one message: used again for another room, another recipient or another body
/// it gets `ERR cid-reused` and posts nothing (it used to get the original `OK`, often of
/// another verb, while the new message was dropped). The same message again is a retry. Cid
/// values are case-sensitive, and a send that failed leaves its cid unused.
#[test]
fn a_reused_cid_with_another_message_is_refused_and_posts_nothing() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut carol = server.login("carol");
    for client in [&mut alice, &mut bob] {
        client.join("general");
    }
    alice.expect_joined("general", "bob");

    alice.send("@d1;cid=k DM bob hi bob");
    let ok = alice.expect_shape("@d1 OK DM bob dm:alice:bob 1 <id>");
    let id = ok.rsplit(' ').next().unwrap().to_owned();
    alice.expect_msg();
    bob.expect_msg();

    alice.send("@d2;cid=k DM carol hi bob");
    alice.expect_prefix("@d2 ERR cid-reused :cid k was used for another message");
    alice.send("@d3;cid=k SEND general hi bob");
    alice.expect_prefix("@d3 ERR cid-reused :");
    alice.send("@d4;cid=k DM bob hi bob!");
    alice.expect_prefix("@d4 ERR cid-reused :");
    // The same message, even by another verb to the same room, is a retry.
    alice.send("@d5;cid=k SEND dm:alice:bob hi bob");
    alice.expect(&format!("@d5 OK DM bob dm:alice:bob 1 {id}"));
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_quiet();
    }

    // Case-sensitive: K is another cid.
    alice.send("@u;cid=K SEND general hi bob");
    alice.expect_prefix("@u OK SEND general 1 ");
    alice.expect_msg();
    bob.expect_msg();

    // A failed send does not use its cid up.
    alice.send("@f;cid=later SEND nowhere hello");
    alice.expect_prefix("@f ERR no-such-room :");
    alice.send("@g;cid=later SEND general hello");
    alice.expect_prefix("@g OK SEND general 2 ");
}

/// Every direct reply carries its command's label: also `ERR line-too-long` (the label is
/// read from the start of the discarded line) and the `BYE quit` that answers a QUIT. Both
/// used to come without it, so a client waiting on the label waited forever.
#[test]
fn a_too_long_line_and_quit_are_answered_with_their_label() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    let long = "z".repeat(9000);
    alice.send(&format!("@big;cid=c-1 SEND general {long}"));
    alice.expect("@big ERR line-too-long :lines are at most 8192 bytes; the line was discarded");
    // A tag block too long to be kept whole cannot be read: no label rather than a wrong one.
    alice.send(&format!("@{long} PING"));
    alice.expect("ERR line-too-long :lines are at most 8192 bytes; the line was discarded");
    alice.send("@q QUIT");
    alice.expect("@q BYE quit :goodbye");
    alice.expect_closed();
}

/// After a reconnect, a room's live lines start at `OK LOGIN` and do not wait for the SYNC
/// replay: a newer live line arrives first, and the replay (labelled, being the reply) brings
/// the older ones and the newer one again. protocol.md tells clients to buffer by seq.
#[test]
fn live_lines_arrive_before_a_reconnects_replay_which_is_labelled() {
    let server = TestServer::start();
    let mut alice = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    let epoch = alice.join("general").epoch;
    bob.join("general");
    alice.expect_introduced("general", "bob");
    alice.send("QUIT");
    alice.read_until_closed();
    bob.expect_prefix("PRESENCE alice offline ");
    for body in ["one", "two"] {
        bob.say("general", body);
    }

    let mut alice = server.connect();
    alice.send("LOGIN alice device=phone");
    alice.expect("OK LOGIN alice");
    bob.expect("PRESENCE alice online");
    let live = bob.say("general", "three");
    alice.expect(&live.line());
    alice.send(&format!("@s SYNC general 0 epoch={epoch}"));
    for seq in 1..=3 {
        let line = alice.expect_prefix("@s MSG general ");
        let msg = Msg::parse(line.strip_prefix("@s ").unwrap()).unwrap();
        assert_eq!(msg.seq, seq);
    }
    alice.expect(&format!("@s OK SYNC general seq=3 epoch={epoch}"));
}

/// HISTORY lowers a limit above `--sync-limit` to it, with no error and no `more`: a count
/// below the limit asked for does not mean the start was reached.
#[test]
fn history_caps_its_limit_at_the_sync_limit() {
    let server = TestServer::with(|c| c.sync_limit = 3);
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    for i in 1..=8 {
        alice.say("general", &format!("m{i}"));
    }
    alice.send("@h HISTORY general 10");
    for seq in 6..=8 {
        alice.expect_prefix(&format!("@h MSG general {seq} "));
    }
    alice.expect(&format!("@h OK HISTORY general 3 seq=8 epoch={epoch}"));
}

/// The GAP horizon depends on the store: with SQLite, messages older than the recent log
/// are read from the database and there is no GAP; with the memory store, SYNC reports the
/// messages that left the recent log as a GAP.
#[test]
fn gap_horizon_is_the_recent_log_only_on_the_memory_store() {
    let server = TestServer::with(|c| c.recent_per_room = 4);
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    for i in 1..=8 {
        alice.say("general", &format!("m{i}"));
    }
    let store = store_of(&mut alice);
    alice.send(&format!("@s SYNC general 2 epoch={epoch}"));
    let first_replayed = if store == "memory" {
        alice.expect("@s GAP general 3 4");
        5
    } else {
        3
    };
    for seq in first_replayed..=8 {
        alice.expect_prefix(&format!("@s MSG general {seq} "));
    }
    alice.expect(&format!("@s OK SYNC general seq=8 epoch={epoch}"));
}

/// A restart of a memory-store server, as a client sees it: no rooms in ROOMS, SYNC of an
/// old room answers `no-such-room` (not EPOCH) until someone re-creates it; after a re-JOIN a
/// SYNC with the old epoch gets EPOCH; a direct room comes back at seq 1 with a new epoch.
#[test]
fn a_memory_store_restart_looks_as_documented() {
    let before = TestServer::with(|c| c.store = StoreConfig::Memory);
    let mut alice = before.login("alice");
    let mut bob = before.login("bob");
    let old = alice.join("general").epoch;
    alice.say("general", "before");
    alice.send("DM bob psst");
    alice.expect_prefix("OK DM bob dm:alice:bob 1 ");
    alice.expect_msg();
    bob.expect_msg();
    drop((alice, bob));
    before.shutdown();

    let after = TestServer::with(|c| c.store = StoreConfig::Memory);
    let mut alice = after.login("alice");
    let _bob = after.login("bob");
    alice.send("ROOMS");
    alice.expect("OK ROOMS 0");
    alice.send(&format!("SYNC general 1 epoch={old}"));
    alice.expect_prefix("ERR no-such-room :");
    let new = alice.join("general").epoch;
    assert_ne!(new, old);
    alice.send(&format!("SYNC general 1 epoch={old}"));
    alice.expect_prefix(&format!("EPOCH general {new} :"));
    alice.expect(&format!("OK SYNC general seq=0 epoch={new}"));
    alice.send("SEND dm:alice:bob hello");
    alice.expect_prefix("ERR no-such-room :");
    alice.send("DM bob again");
    alice.expect_prefix("OK DM bob dm:alice:bob 1 ");
}

/// Events are live only: an invitation made while the user was offline is not listed or
/// replayed at the next login, but it stands, so JOIN by name lets them in.
#[test]
fn an_invitation_made_while_offline_is_not_listed_but_stands() {
    let server = TestServer::start();
    let mut carol = server.login("carol");
    carol.send("QUIT");
    carol.read_until_closed();
    let mut owner = server.login("olga");
    owner.join("team");
    owner.send("PRIVATE team on");
    owner.expect("OK PRIVATE team on");
    owner.send("INVITE team carol");
    owner.expect("OK INVITE team carol");

    let mut carol = server.login("carol");
    carol.send("ROOMS");
    carol.expect("OK ROOMS 0");
    carol.expect_quiet();
    let joined = carol.join("team");
    assert_eq!(joined.members, 2, "let in, not a decoy");
}

/// The minor points: a tab-only line is not blank; a repeated JOIN answers in the same form
/// with the room's current seq; `device=` twice is refused.
#[test]
fn tab_lines_repeated_joins_and_repeated_options() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send("\t");
    client.expect_prefix("ERR unknown-command :");
    client.send("LOGIN bob device=x device=y");
    client.expect_prefix("ERR bad-argument :");
    client.login("alice");
    let first = client.join("general");
    client.say("general", "hi");
    let again = client.join("general");
    assert_eq!((first.seq, again.seq), (0, 1));
    assert_eq!(first.epoch, again.epoch);
}

/// Item 10: retention is applied while the server runs (at each pass of its interval), not
/// only at a restart: once a pass has run, SYNC reports what it deleted as a GAP. Read from
/// the store alone here (no recent log), so the in-memory log does not replay it.
#[test]
fn retention_applies_while_the_server_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StoreConfig::Sqlite(chatd::store::sqlite::SqliteOptions {
        path: dir.path().join("chatd.db"),
        sync: chatd::store::sqlite::SyncMode::Normal,
        retention: chatd::store::Retention {
            max_per_room: Some(5),
            interval: std::time::Duration::from_millis(100),
            ..chatd::store::Retention::default()
        },
        max_pages: None,
    });
    let server = TestServer::with(|config| {
        config.store = store;
        config.recent_per_room = 0;
    });
    let mut alice = server.login("alice");
    alice.join("kept");
    for n in 0..12 {
        alice.say("kept", &format!("m{n}"));
    }
    // Bounded: a pass runs every 100 ms; give it up to 50 tries.
    for _ in 0..50 {
        alice.send("SYNC kept 0");
        let first = alice.next_line();
        alice.skip_to_prefix("OK SYNC kept ");
        if first == "GAP kept 1 7" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    alice.fail("retention never deleted messages 1-7 while the server ran");
}

/// Item 5: a client's own replies count toward its queue, so one that keeps asking and does
/// not read is cut off as a slow consumer, named in STATS, like one that does not read its
/// rooms; the other members are not held up.
#[test]
fn your_own_unread_replies_make_you_a_slow_consumer() {
    let server = TestServer::with(|config| {
        config.channel_capacity = 4;
        config.write_timeout = std::time::Duration::from_secs(1);
        config.recent_bytes_per_room = 4 << 20;
    });
    let mut alice = server.login("alice");
    alice.join("big");
    let body = "x".repeat(4000);
    for _ in 0..100 {
        alice.say("big", &body);
    }
    let mut asker = Client::connect_with_receive_buffer(server.addr(), 4096);
    asker.login("asker");
    asker.join("big");
    for _ in 0..12 {
        asker.send("HISTORY big 100");
    }
    let mut watcher = server.login("watcher");
    watcher.wait_for_stat("slow_consumers", 1);
    alice.send("SEND big still flowing");
    alice.skip_to_prefix("OK SEND big 101 ");
}
