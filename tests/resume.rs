//! Resuming after a drop (issue 3): idempotent sends with client ids, SYNC from a cursor with
//! GAP, EPOCH and paging, the two stages of backpressure (shedding, then `BYE slow-consumer`
//! with exact cursors), device takeover, the login timeout and the presence grace period.
//!
//! Every wait reads the line that proves the event; absence is proved with `expect_quiet`
//! after a point the server has certainly passed.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chatd::config::StoreConfig;
use chrono::Utc;
use support::{field, matches_shape, parse_timestamp, Client, Msg, TestServer};

/// `OK SEND <room> <seq> <id>` parsed into `(seq, id)`.
fn ok_send_fields(line: &str, label: &str, room: &str) -> (u64, String) {
    let shape = format!("@{label} OK SEND {room} <n> <id>");
    matches_shape(line, &shape).unwrap_or_else(|why| panic!("{line:?} is not {shape:?}: {why}"));
    let words: Vec<&str> = line.split(' ').collect();
    (words[4].parse().expect("checked"), words[5].to_owned())
}

/// alice and bob, both in `general`, all events read.
fn pair(server: &TestServer) -> (Client, Client, String) {
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let mut bob = server.login("bob");
    bob.join("general");
    alice.expect_joined("general", "bob");
    (alice, bob, epoch)
}

/// A retry with the same cid gets the original OK (same seq and id, its own label) and posts
/// nothing; the same cid with another body gets `ERR cid-reused` and posts nothing either.
#[test]
fn a_retried_cid_returns_the_original_ok_and_posts_nothing() {
    let server = TestServer::start();
    let (mut alice, mut bob, _) = pair(&server);

    alice.send("@first;cid=c-1 SEND general hello");
    let ok = alice.next_line();
    let (seq, id) = ok_send_fields(&ok, "first", "general");
    assert_eq!(seq, 1);
    let echo = alice.expect_msg();
    assert_eq!((echo.seq, &echo.id, echo.body.as_str()), (1, &id, "hello"));
    bob.expect(&echo.line());

    alice.send("@again;cid=c-1 SEND general hello");
    alice.expect(&format!("@again OK SEND general 1 {id}"));
    // Another body under the same cid is another message, refused: answering it with the
    // original OK (as before issue 19) told the client it was posted when it was dropped.
    alice.send("@third;cid=c-1 SEND general hello, edited");
    alice.expect_prefix("@third ERR cid-reused :cid c-1 was used for another message");
    alice.expect_quiet();
    bob.expect_quiet();

    // The room moved on by exactly one message, and a new cid posts normally.
    alice.send("@next;cid=c-2 SEND general world");
    let (seq, _) = ok_send_fields(&alice.next_line(), "next", "general");
    assert_eq!(seq, 2);
    let world = alice.expect_msg();
    bob.expect(&world.line());
    assert_eq!(alice.stats()["messages"], 2);
}

/// The same cid from another device of the user, or after a reconnect, is still the one message; other users' cids are theirs.
#[test]
fn a_cid_is_recognised_across_devices_and_reconnects() {
    let server = TestServer::start();
    let mut phone = server.login_device("alice", "phone");
    phone.join("general");
    let mut laptop = server.login_device("alice", "laptop");
    laptop.join("general");
    let mut bob = server.login("bob");
    bob.join("general");
    phone.expect_joined("general", "bob");
    laptop.expect_joined("general", "bob");

    phone.send("@p;cid=m-17 SEND general yes!");
    let (seq, id) = ok_send_fields(&phone.next_line(), "p", "general");
    let msg = phone.expect_msg();
    laptop.expect(&msg.line());
    bob.expect(&msg.line());

    laptop.send("@l;cid=m-17 SEND general yes!");
    laptop.expect(&format!("@l OK SEND general {seq} {id}"));

    // The phone drops and comes back as the same device: the cid is still known.
    drop(phone);
    bob.wait_for_stat("sessions", 2);
    let mut phone = server.login_device("alice", "phone");
    phone.send("@r;cid=m-17 SEND general yes!");
    phone.expect(&format!("@r OK SEND general {seq} {id}"));
    for client in [&mut phone, &mut laptop, &mut bob] {
        client.expect_quiet();
    }

    // Client ids are per user: bob's m-17 is a message of its own.
    bob.send("@b;cid=m-17 SEND general me too");
    let (bob_seq, bob_id) = ok_send_fields(&bob.next_line(), "b", "general");
    assert_eq!(bob_seq, seq + 1);
    assert_ne!(bob_id, id);
    let mine = bob.expect_msg();
    phone.expect(&mine.line());
    laptop.expect(&mine.line());
}

/// A DM with a cid is posted once; its retry gets the original `OK DM` and the recipient nothing more.
#[test]
fn a_retried_dm_is_posted_once() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");

    alice.send("@d1;cid=dm-1 DM bob psst");
    let ok = alice.expect_shape("@d1 OK DM bob dm:alice:bob 1 <id>");
    let id = ok.rsplit(' ').next().expect("an id").to_owned();
    let msg = alice.expect_msg();
    assert_eq!(
        (msg.room.as_str(), msg.seq, &msg.id),
        ("dm:alice:bob", 1, &id)
    );
    bob.expect(&msg.line());

    alice.send("@d2;cid=dm-1 DM bob psst");
    alice.expect(&format!("@d2 OK DM bob dm:alice:bob 1 {id}"));
    // Retried as a SEND to the direct room, it is still the same message and the same reply.
    alice.send("@d3;cid=dm-1 SEND dm:alice:bob psst");
    alice.expect(&format!("@d3 OK DM bob dm:alice:bob 1 {id}"));
    alice.expect_quiet();
    bob.expect_quiet();

    bob.send("HISTORY dm:alice:bob");
    bob.expect(&msg.line());
    bob.expect_prefix("OK HISTORY dm:alice:bob 1 seq=1 ");
}

/// After a disconnect, SYNC from the last seen seq replays exactly the missed messages, and the live stream goes on.
#[test]
fn sync_after_a_disconnect_replays_exactly_what_was_missed() {
    let server = TestServer::start();
    let (mut alice, mut bob, epoch) = pair(&server);
    let first = alice.say("general", "before the drop");
    bob.expect(&first.line());

    drop(bob);
    alice.expect_prefix("PRESENCE bob offline last_seen=");
    let missed: Vec<Msg> = (1..=3)
        .map(|i| alice.say("general", &format!("missed {i}")))
        .collect();

    let mut bob = server.login("bob");
    alice.expect("PRESENCE bob online");
    bob.send(&format!("SYNC general {} epoch={epoch}", first.seq));
    for msg in &missed {
        bob.expect(&msg.line());
    }
    bob.expect(&format!("OK SYNC general seq=4 epoch={epoch}"));
    bob.expect_quiet();

    let live = alice.say("general", "live again");
    bob.expect(&live.line());
    // Nothing new: an empty replay.
    bob.send(&format!("@s SYNC general 5 epoch={epoch}"));
    bob.expect(&format!("@s OK SYNC general seq=5 epoch={epoch}"));
}

/// A SYNC whose epoch is not the room's says `EPOCH` and replays the room from seq 1.
#[test]
fn sync_with_another_epoch_replays_from_the_start() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let sent: Vec<Msg> = (1..=3)
        .map(|i| alice.say("general", &format!("m{i}")))
        .collect();
    let stale = if epoch == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };

    alice.send(&format!("@e SYNC general 2 epoch={stale}"));
    alice.expect_prefix(&format!("@e EPOCH general {epoch} :"));
    for msg in &sent {
        alice.expect(&format!("@e {}", msg.line()));
    }
    alice.expect(&format!("@e OK SYNC general seq=3 epoch={epoch}"));

    // With the right epoch the cursor counts.
    alice.send(&format!("SYNC general 2 epoch={epoch}"));
    alice.expect(&sent[2].line());
    alice.expect(&format!("OK SYNC general seq=3 epoch={epoch}"));
    alice.expect_quiet();
}

/// Messages older than the recent log (memory store) are announced with one exact `GAP` before the rest.
#[test]
fn sync_beyond_the_recent_log_reports_the_gap() {
    // The memory store keeps nothing beyond the recent log, so seqs 1-3 are gone for good.
    let server = TestServer::with(|config| {
        config.store = StoreConfig::Memory;
        config.recent_per_room = 5;
    });
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let sent: Vec<Msg> = (1..=8)
        .map(|i| alice.say("general", &format!("m{i}")))
        .collect();

    alice.send(&format!("SYNC general 0 epoch={epoch}"));
    alice.expect("GAP general 1 3");
    for msg in &sent[3..] {
        alice.expect(&msg.line());
    }
    alice.expect(&format!("OK SYNC general seq=8 epoch={epoch}"));

    alice.send("SYNC general 2");
    alice.expect("GAP general 3 3");
    for msg in &sent[3..] {
        alice.expect(&msg.line());
    }
    alice.expect(&format!("OK SYNC general seq=8 epoch={epoch}"));

    // A cursor inside the log needs no GAP.
    alice.send("SYNC general 6");
    alice.expect(&sent[6].line());
    alice.expect(&sent[7].line());
    alice.expect(&format!("OK SYNC general seq=8 epoch={epoch}"));
    alice.expect_quiet();
}

/// A replay longer than the sync limit ends with `more`; paging from the last seq received gets the rest.
#[test]
fn sync_pages_when_more_than_the_limit_remain() {
    let server = TestServer::with(|config| config.sync_limit = 3);
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let sent: Vec<Msg> = (1..=7)
        .map(|i| alice.say("general", &format!("m{i}")))
        .collect();

    let mut cursor = 0;
    let mut pages = Vec::new();
    for _ in 0..5 {
        alice.send(&format!("SYNC general {cursor} epoch={epoch}"));
        let mut page = Vec::new();
        let ok = loop {
            let line = alice.next_line();
            if line.starts_with("OK SYNC ") {
                break line;
            }
            let msg = Msg::parse(&line).unwrap_or_else(|why| alice.fail(&why));
            assert_eq!(
                msg, sent[cursor as usize],
                "replayed in order from the cursor"
            );
            cursor = msg.seq;
            page.push(msg.seq);
        };
        let more = ok.ends_with(" more");
        assert_eq!(
            ok.trim_end_matches(" more"),
            format!("OK SYNC general seq=7 epoch={epoch}")
        );
        pages.push((page, more));
        if !more {
            break;
        }
    }
    assert_eq!(
        pages,
        [
            (vec![1, 2, 3], true),
            (vec![4, 5, 6], true),
            (vec![7], false)
        ]
    );

    // Exactly the limit left: one page, without `more`.
    alice.send("SYNC general 4");
    for msg in &sent[4..] {
        alice.expect(&msg.line());
    }
    alice.expect(&format!("OK SYNC general seq=7 epoch={epoch}"));
}

/// Past half full, a session's queue sheds PRESENCE events (counted in STATS `shed`) but keeps every MSG.
#[test]
fn a_session_behind_sheds_presence_but_keeps_every_message() {
    // carol stops reading. Round after round, zoe posts two messages and dave comes online
    // and goes offline, until STATS shows both of dave's lines shed for carol in each of
    // the last few rounds: her writer is stuck and her queue past the soft mark (16 of 32)
    // for good (a busy machine may shed a line or two earlier, while her writer waits for
    // the CPU). Those rounds add two messages each, far from filling the queue. Peers hear
    // presence in name order, so zoe's copy proves carol's was queued or shed.
    const MAX_ROUNDS: usize = 3000;
    const SHED_ROUNDS: usize = 3;
    let server = TestServer::with(|config| {
        config.channel_capacity = 32;
        config.write_timeout = Duration::from_secs(60);
    });
    let mut carol = Client::connect_with_receive_buffer(server.addr(), 4096);
    carol.login("carol");
    carol.join("general");
    let mut zoe = server.login("zoe");
    zoe.join("general");
    carol.expect_joined("general", "zoe");
    let mut dave = server.login("dave");
    dave.join("general");
    carol.expect_joined("general", "dave");
    zoe.expect_joined("general", "dave");
    dave.send("QUIT");
    dave.expect("BYE quit :goodbye");
    carol.expect_prefix("PRESENCE dave offline last_seen=");
    zoe.expect_prefix("PRESENCE dave offline last_seen=");
    carol.expect_quiet();

    let filler = "x".repeat(3900);
    let mut sent = 0u64;
    let mut flaps = 0u64;
    let mut shed = 0;
    let mut shed_rounds = 0;
    let started = Instant::now();
    for _ in 0..MAX_ROUNDS {
        for _ in 0..2 {
            sent += 1;
            zoe.say("general", &format!("{sent:05} {filler}"));
        }
        let mut dave = server.login("dave");
        zoe.expect("PRESENCE dave online");
        dave.send("QUIT");
        dave.expect("BYE quit :goodbye");
        zoe.expect_prefix("PRESENCE dave offline last_seen=");
        flaps += 1;
        let stats = zoe.stats();
        assert_eq!(stats["slow_consumers"], 0, "carol was cut off");
        let shed_now = stats["shed"] - shed;
        shed = stats["shed"];
        shed_rounds = if shed_now == 2 { shed_rounds + 1 } else { 0 };
        if shed_rounds == SHED_ROUNDS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never shed");
    }
    assert_eq!(shed_rounds, SHED_ROUNDS, "{MAX_ROUNDS} rounds never shed");

    // carol reads everything now: every message in order, and the presence lines not shed.
    let mut next_seq = 1;
    let mut presence = 0;
    for _ in 0..(sent + 2 * flaps) {
        if next_seq > sent {
            break;
        }
        let line = carol.next_line();
        if line.starts_with("PRESENCE dave ") {
            presence += 1;
            continue;
        }
        let msg = Msg::parse(&line).unwrap_or_else(|why| carol.fail(&why));
        assert_eq!(msg.seq, next_seq, "no message is ever shed");
        next_seq += 1;
    }
    assert_eq!(next_seq, sent + 1);
    // The last rounds' presence lines were shed, so nothing follows the last message.
    carol.expect_quiet();
    assert_eq!(
        presence + shed,
        2 * flaps,
        "each of dave's presence lines reached carol or was shed"
    );
    assert_eq!(zoe.stats()["slow_consumers"], 0);
}

/// `BYE slow-consumer` names, per room, the last seq written (or the join seq), and SYNC from there loses nothing.
#[test]
fn slow_consumer_bye_names_exact_cursors_to_resume_from() {
    const MAX_MESSAGES: u64 = 20_000;
    let server = TestServer::with(|config| {
        config.channel_capacity = 8;
        config.write_timeout = Duration::from_secs(60);
    });
    let mut zoe = server.login("zoe");
    let rooms = ["alpha", "beta", "quiet"];
    let mut epochs = BTreeMap::new();
    for room in rooms {
        epochs.insert(room, zoe.join(room).epoch);
    }
    // The quiet room has history before carol joins, and nothing after.
    zoe.say("quiet", "old 1");
    zoe.say("quiet", "old 2");
    zoe.say("alpha", "before carol");

    let mut carol = Client::connect_with_receive_buffer(server.addr(), 4096);
    carol.login("carol");
    let mut joined_at = BTreeMap::new();
    for room in rooms {
        joined_at.insert(room, carol.join(room).seq);
        zoe.expect_joined(room, "carol");
    }
    assert_eq!(joined_at["quiet"], 2);
    carol.expect_quiet();

    let filler = "y".repeat(3900);
    let mut posted: BTreeMap<&str, Vec<Msg>> = BTreeMap::new();
    let mut departed = false;
    let mut cut = false;
    for n in 1..=MAX_MESSAGES {
        let room = if n % 3 == 0 { "beta" } else { "alpha" };
        zoe.send(&format!("SEND {room} {n:05} {filler}"));
        let ok = zoe.next_besides_departure("carol", &mut departed);
        let msg = Msg::parse(&zoe.next_besides_departure("carol", &mut departed))
            .unwrap_or_else(|why| zoe.fail(&why));
        assert_eq!(ok, format!("OK SEND {room} {} {}", msg.seq, msg.id));
        posted.entry(room).or_default().push(msg);
        if n % 16 == 0 {
            zoe.send("STATS");
            let stats = zoe.next_besides_departure("carol", &mut departed);
            if field(&stats, "slow_consumers") == Some("1") {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "{MAX_MESSAGES} messages never overflowed an 8-slot queue"
    );
    if !departed {
        zoe.expect_prefix("PRESENCE carol offline last_seen=");
    }

    // What carol finally reads: a gap-free prefix per room, then the BYE, then EOF.
    let lines = carol.read_until_closed();
    let (bye, msgs) = lines.split_last().expect("carol got nothing");
    let mut got: BTreeMap<&str, u64> = joined_at.clone();
    for line in msgs {
        let msg = Msg::parse(line).unwrap_or_else(|why| panic!("{why}"));
        let room = rooms
            .into_iter()
            .find(|r| *r == msg.room)
            .expect("a room of carol's");
        assert_eq!(
            msg.seq,
            got[room] + 1,
            "carol's stream of {room} has no gap"
        );
        got.insert(room, msg.seq);
    }
    assert!(
        bye.starts_with("BYE slow-consumer ") && bye.contains(" :"),
        "{bye}"
    );
    let detail = bye.split(" :").next().expect("a detail");
    let expected: Vec<String> = got.iter().map(|(r, s)| format!("{r}={s}")).collect();
    assert_eq!(
        detail,
        format!("BYE slow-consumer {}", expected.join(" ")),
        "each cursor is the last seq carol received, or the seq she joined at"
    );

    // Resume: SYNC each room from its cursor gives exactly the rest.
    let mut carol = server.login("carol");
    zoe.expect("PRESENCE carol online");
    for room in rooms {
        let cursor = field(detail, room)
            .expect("named")
            .parse::<u64>()
            .expect("a seq");
        let all: Vec<&Msg> = posted.get(room).map_or(Vec::new(), |v| v.iter().collect());
        let last = all.last().map_or(joined_at[room], |m| m.seq);
        carol.send(&format!("SYNC {room} {cursor} epoch={}", epochs[room]));
        for msg in all.iter().filter(|m| m.seq > cursor) {
            carol.expect(&msg.line());
        }
        carol.expect(&format!("OK SYNC {room} seq={last} epoch={}", epochs[room]));
    }
    carol.expect_quiet();
}

/// Logging in with a live session's device id replaces it at once with `BYE replaced`; the new one carries on, silently for others.
#[test]
fn a_device_takeover_replaces_the_old_session() {
    let server = TestServer::start();
    let mut old = server.login_device("alice", "phone");
    old.join("general");
    let mut bob = server.login("bob");
    bob.join("general");
    old.expect_joined("general", "bob");

    let mut new = server.login_device("alice", "phone");
    old.expect_prefix("BYE replaced :");
    old.expect_closed();
    let msg = bob.say("general", "who is there?");
    new.expect(&msg.line());
    let answer = new.say("general", "me, on the new connection");
    bob.expect(&answer.line());
    // The person never went away: bob heard no presence change.
    bob.expect_quiet();
    assert_eq!(bob.stats()["sessions"], 2);
}

/// A connection that never logs in gets `BYE login-timeout` and EOF; one that logged in stays.
#[test]
fn a_connection_that_never_logs_in_is_closed() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::with(|config| config.login_timeout = timeout);
    let mut member = server.login("alice");
    let connected = Instant::now();
    let mut idle = server.connect();
    // PING works before LOGIN but is not a login.
    idle.send("PING still-here");
    idle.expect("PONG still-here");
    idle.expect_prefix("BYE login-timeout :");
    idle.expect_closed();
    let waited = connected.elapsed();
    assert!(
        waited >= timeout,
        "closed after {waited:?}, before {timeout:?}"
    );
    // alice connected earlier, so her login deadline has passed too.
    member.expect_quiet();
}

/// A reconnect within the presence grace announces nothing; a longer absence announces one offline with last_seen.
#[test]
fn presence_grace_hides_quick_reconnects() {
    // Long enough that the reconnect below fits in it even on a loaded machine.
    let grace = Duration::from_millis(1000);
    let server = TestServer::with(|config| config.presence_grace = grace);
    let mut alice = server.login("alice");
    alice.join("general");
    let mut carl = server.login("carl");
    carl.join("general");
    alice.expect_joined("general", "carl");
    let mut bob = server.login("bob");
    bob.join("general");
    alice.expect_joined("general", "bob");
    carl.expect_joined("general", "bob");

    // bob's connection drops; the server has logged him out once `sessions` is 2.
    drop(bob);
    let dropped = Instant::now();
    alice.wait_for_stat("sessions", 2);
    let bob = server.login("bob");
    assert!(
        dropped.elapsed() < grace,
        "the reconnect took {:?}, longer than the grace period",
        dropped.elapsed()
    );
    // carl leaves after bob's grace timer was set, so his offline is due after it: once
    // alice reads it, bob's timer has run and done nothing.
    drop(carl);
    alice.expect_prefix("PRESENCE carl offline last_seen=");
    assert!(dropped.elapsed() >= grace);
    alice.expect_quiet();

    // Now bob goes for good: one offline, after the grace, with last_seen at the drop.
    drop(bob);
    let gone = Instant::now();
    let gone_at = Utc::now();
    let line = alice.expect_shape("PRESENCE bob offline last_seen=<ts>");
    let waited = gone.elapsed();
    assert!(waited >= grace, "offline announced after {waited:?}");
    let last_seen = parse_timestamp(field(&line, "last_seen").expect("last_seen"));
    let skew = (last_seen - gone_at).num_milliseconds().abs();
    assert!(
        skew < 300,
        "last_seen {last_seen} is {skew} ms from the drop"
    );
    alice.expect_quiet();
}

/// A slow consumer that kept sending commands while it fell behind still gets its `BYE slow-consumer`, not a reset.
#[test]
fn a_slow_consumer_that_kept_posting_gets_its_bye() {
    const MAX_MESSAGES: u64 = 20_000;
    let server = TestServer::with(|config| {
        config.channel_capacity = 8;
        config.write_timeout = Duration::from_secs(60);
    });
    let mut zoe = server.login("zoe");
    zoe.join("flood");
    let mut carol = Client::connect_with_receive_buffer(server.addr(), 4096);
    carol.login("carol");
    carol.join("flood");
    zoe.expect_joined("flood", "carol");
    carol.expect_quiet();

    // carol stops reading but goes on posting, one message per flood message of zoe's.
    let filler = "z".repeat(3900);
    let mut departed = false;
    let mut cut = false;
    for n in 1..=MAX_MESSAGES {
        carol.send(&format!("SEND flood carol {n}"));
        zoe.send(&format!("SEND flood {n:05} {filler}"));
        let mut acked = false;
        while !acked {
            let line = zoe.next_besides_departure("carol", &mut departed);
            acked = line.starts_with("OK SEND flood ");
        }
        if n % 16 == 0 {
            zoe.send("STATS");
            let stats = loop {
                let line = zoe.next_besides_departure("carol", &mut departed);
                if line.starts_with("OK STATS ") {
                    break line;
                }
            };
            if field(&stats, "slow_consumers") == Some("1") {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "{MAX_MESSAGES} messages never overflowed an 8-slot queue"
    );
    // She reads only now: what was written, the BYE, then EOF (read_until_closed waits, with
    // its deadline, for the server to finish with the connection).
    let lines = carol.read_until_closed();
    let last = lines.last().map_or("(nothing)", String::as_str);
    assert!(
        last.starts_with("BYE slow-consumer flood="),
        "after {} lines the last was {last:?}, not the BYE",
        lines.len()
    );
}

/// A session cut off before anything of its rooms was written still names each room, at the seq it started from.
#[test]
fn slow_consumer_bye_names_rooms_it_received_nothing_of() {
    // carol's new connection first asks for more PONGs than her socket buffers hold and
    // reads none, so its writer is stuck on them; the queue is just large enough to hold
    // them all. Then she logs in (her session starts at seq 2 of `flood`), and zoe's
    // messages overflow the queue. Nothing of `flood` was ever written to this connection.
    const PINGS: usize = 100_000;
    let server = TestServer::with(|config| {
        config.store = StoreConfig::Memory;
        config.channel_capacity = PINGS + 64;
        config.write_timeout = Duration::from_secs(60);
    });
    let mut zoe = server.login("zoe");
    zoe.join("flood");
    let mut carol = server.login("carol");
    carol.join("flood");
    zoe.expect_joined("flood", "carol");
    zoe.say("flood", "one");
    zoe.say("flood", "two");
    carol.send("QUIT");
    zoe.expect_prefix("PRESENCE carol offline last_seen=");

    let mut carol = Client::connect_with_receive_buffer(server.addr(), 4096);
    let token = "t".repeat(60);
    let pings = format!("PING {token}\n").repeat(PINGS);
    carol.send_raw(pings.as_bytes());
    carol.send("LOGIN carol");
    zoe.expect("PRESENCE carol online");
    // Overflow what is left of her queue, a batch at a time.
    let batch = "SEND flood more\n".repeat(1000);
    let mut departed = false;
    let mut cut = false;
    for _ in 0..200 {
        zoe.send_raw(batch.as_bytes());
        for _ in 0..2000 {
            let line = zoe.next_besides_departure("carol", &mut departed);
            assert!(line.starts_with("OK SEND flood ") || line.starts_with("MSG flood "));
        }
        zoe.send("STATS");
        let stats = zoe.next_besides_departure("carol", &mut departed);
        if field(&stats, "slow_consumers") == Some("1") {
            cut = true;
            break;
        }
    }
    assert!(cut, "carol's queue never overflowed");
    if !departed {
        zoe.expect_prefix("PRESENCE carol offline ");
    }

    let lines = carol.read_until_closed();
    let bye = lines.last().map_or("(nothing)", String::as_str);
    assert!(bye.starts_with("BYE slow-consumer"), "{bye:?}");
    assert!(
        lines.iter().all(|line| !line.starts_with("MSG ")),
        "carol got a message of flood"
    );
    let detail = bye.split(" :").next().expect("a detail");
    assert_eq!(detail, "BYE slow-consumer flood=2");
}
