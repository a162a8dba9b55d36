//! Typing indicators, read receipts and unread counts (issue 6): who hears `TYPING`, when the
//! server ends it (TTL, send, leave, last session gone), its rate limit; `READ` positions that
//! only move forward, their fan-out to one's own devices and (unless opted out) to the other
//! members; and the `read=`/`unread=` counts of ROOMS.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{Client, TestServer};

/// A typing TTL long enough that it never ends an indicator in tests about something else.
const LONG_TTL: Duration = Duration::from_secs(30);

/// The server forwards at most one typing event per typist and room per this interval.
const FORWARD_INTERVAL: Duration = Duration::from_secs(1);

/// alice on two devices, bob and carol, all in `general`, every event read.
struct Cast {
    laptop: Client,
    phone: Client,
    bob: Client,
    carol: Client,
    epoch: String,
}

fn cast(server: &TestServer) -> Cast {
    let mut laptop = server.login_device("alice", "laptop");
    let epoch = laptop.join("general").epoch;
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    bob.join("general");
    laptop.expect_joined("general", "bob");
    phone.expect_joined("general", "bob");
    let mut carol = server.login("carol");
    carol.join("general");
    for client in [&mut laptop, &mut phone, &mut bob] {
        client.expect_joined("general", "carol");
    }
    for client in [&mut laptop, &mut phone, &mut bob, &mut carol] {
        client.expect_quiet();
    }
    Cast {
        laptop,
        phone,
        bob,
        carol,
        epoch,
    }
}

fn server_with_ttl(ttl: Duration) -> TestServer {
    TestServer::with(|config| config.typing_ttl = ttl)
}

/// `TYPING` reaches every session of the other members, and none of the typist's own.
#[test]
fn typing_reaches_the_other_members_but_not_the_typist() {
    let server = server_with_ttl(LONG_TTL);
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch: _epoch,
    } = cast(&server);

    laptop.send("@t TYPING general");
    laptop.expect("@t OK TYPING general");
    bob.expect("TYPING general alice");
    carol.expect("TYPING general alice");
    laptop.expect_quiet();
    phone.expect_quiet();

    // Typing is not a message: nothing in HISTORY or SYNC.
    bob.send("HISTORY general");
    bob.expect_prefix("OK HISTORY general 0 seq=0 ");
    bob.send("SYNC general 0");
    bob.expect_prefix("OK SYNC general seq=0 ");

    // The stop is forwarded too (after the rate limit's interval), again not to alice.
    laptop.send("TYPING general stop");
    laptop.expect("OK TYPING general stop");
    bob.expect("TYPING general alice stop");
    carol.expect("TYPING general alice stop");
    laptop.expect_quiet();
    phone.expect_quiet();
}

/// A typist who does not refresh is shown stopped when the TTL runs out, counted from the last refresh.
#[test]
fn typing_stops_by_itself_after_the_ttl() {
    // Longer than the forwarding interval, so the TTL is what ends it.
    let ttl = Duration::from_millis(1500);
    let server = server_with_ttl(ttl);
    let Cast {
        mut laptop,
        mut bob,
        phone: _phone,
        carol: _carol,
        epoch: _epoch,
    } = cast(&server);

    let started = Instant::now();
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice");
    bob.expect("TYPING general alice stop");
    let waited = started.elapsed();
    assert!(waited >= ttl, "stopped after {waited:?}, before the TTL");

    // A refresh half-way pushes the expiry out, and is not forwarded itself.
    let started = Instant::now();
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice");
    thread::sleep(ttl / 2);
    let refreshed = Instant::now();
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice stop");
    let waited = refreshed.elapsed();
    assert!(
        waited >= ttl,
        "stopped {waited:?} after the refresh ({:?} after the start)",
        started.elapsed()
    );
    bob.expect_quiet();
}

/// Sending a message ends typing at once: the stop is queued just before the MSG.
#[test]
fn typing_stops_when_the_typist_sends() {
    let server = server_with_ttl(LONG_TTL);
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch: _epoch,
    } = cast(&server);
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice");
    carol.expect("TYPING general alice");

    // Sent well within the forwarding interval: a stop caused by a send is not held back.
    let msg = laptop.say("general", "done typing");
    for client in [&mut bob, &mut carol] {
        client.expect("TYPING general alice stop");
        client.expect(&msg.line());
        client.expect_quiet();
    }
    phone.expect(&msg.line());
    phone.expect_quiet();
    laptop.expect_quiet();
}

/// Leaving the room ends typing at once, before the `LEFT`.
#[test]
fn typing_stops_when_the_typist_leaves() {
    let server = server_with_ttl(LONG_TTL);
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        carol: _carol,
        epoch: _epoch,
    } = cast(&server);
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice");

    laptop.send("LEAVE general");
    laptop.expect("OK LEAVE general");
    bob.expect("TYPING general alice stop");
    bob.expect("LEFT general alice");
    bob.expect_quiet();
    phone.expect("LEFT general alice");
    phone.expect_quiet();
}

/// Typing ends when the typist's last session goes, not when one of several devices does.
#[test]
fn typing_stops_when_the_last_session_ends() {
    let server = server_with_ttl(LONG_TTL);
    let Cast {
        mut laptop,
        phone,
        mut bob,
        carol: _carol,
        epoch: _epoch,
    } = cast(&server);
    laptop.send("TYPING general");
    laptop.expect("OK TYPING general");
    bob.expect("TYPING general alice");

    // The phone goes: alice is still online on the laptop, still typing.
    drop(phone);
    bob.wait_for_stat("sessions", 3);
    bob.expect_quiet();

    // The laptop goes: her last session, so the stop comes, then (no grace here) offline.
    drop(laptop);
    bob.expect("TYPING general alice stop");
    bob.expect_prefix("PRESENCE alice offline last_seen=");
    bob.expect_quiet();
}

/// Toggling faster than once a second forwards at most one event per second, and the latest state wins.
#[test]
fn typing_toggles_are_rate_limited_and_the_last_state_wins() {
    let server = server_with_ttl(LONG_TTL);
    let Cast {
        mut laptop,
        mut bob,
        phone: _phone,
        carol: _carol,
        epoch: _epoch,
    } = cast(&server);

    // Twenty toggles at once, ending in stop: the first start goes out now, then nothing
    // until a second has passed, then the stop; two events in all.
    let started = Instant::now();
    let mut toggles = String::new();
    for i in 0..20 {
        toggles.push_str(if i % 2 == 0 {
            "TYPING general\n"
        } else {
            "TYPING general stop\n"
        });
    }
    laptop.send_raw(toggles.as_bytes());
    for i in 0..20 {
        let stop = if i % 2 == 0 { "" } else { " stop" };
        laptop.expect(&format!("OK TYPING general{stop}"));
    }
    bob.expect("TYPING general alice");
    assert!(
        started.elapsed() < FORWARD_INTERVAL,
        "the first start waited"
    );
    bob.expect("TYPING general alice stop");
    let waited = started.elapsed();
    assert!(waited >= FORWARD_INTERVAL, "the stop came after {waited:?}");
    bob.expect_quiet();

    // Toggles ending in start: the start is forwarded, and the held-back states cancel out,
    // so when the interval has passed nothing more is sent. alice's later stop proves it:
    // it is the very next typing event bob gets.
    thread::sleep(FORWARD_INTERVAL);
    for command in [
        "TYPING general",
        "TYPING general stop",
        "TYPING general",
        "TYPING general stop",
        "TYPING general",
    ] {
        laptop.send(command);
    }
    for i in 0..5 {
        let stop = if i % 2 == 0 { "" } else { " stop" };
        laptop.expect(&format!("OK TYPING general{stop}"));
    }
    bob.expect("TYPING general alice");
    thread::sleep(FORWARD_INTERVAL + Duration::from_millis(200));
    laptop.send("TYPING general stop");
    laptop.expect("OK TYPING general stop");
    bob.expect("TYPING general alice stop");
    bob.expect_quiet();
}

/// READ only moves forward (a lower seq keeps the stored one) and is clamped to the room's latest seq.
#[test]
fn read_moves_forward_only_and_is_clamped() {
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch: _epoch,
    } = cast(&server);
    for i in 1..=5 {
        let msg = laptop.say("general", &format!("m{i}"));
        for client in [&mut phone, &mut bob, &mut carol] {
            client.expect(&msg.line());
        }
    }

    bob.send("@r READ general 3");
    bob.expect("@r OK READ general 3");
    laptop.expect("READ general bob 3");
    bob.send("@r READ general 2");
    bob.expect("@r OK READ general 3");
    bob.send("READ general 3");
    bob.expect("OK READ general 3");
    bob.send("READ general 99");
    bob.expect("OK READ general 5");
    laptop.expect("READ general bob 5");
    for client in [&mut laptop, &mut phone, &mut carol] {
        if client.name() != "alice/laptop" {
            client.expect("READ general bob 3");
            client.expect("READ general bob 5");
        }
        client.expect_quiet();
    }
    bob.expect_quiet();
}

/// A READ reaches the reader's other devices and the other members, after the message it names.
#[test]
fn read_fans_out_to_own_devices_and_other_members() {
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch: _epoch,
    } = cast(&server);
    let msg = bob.say("general", "are you there?");
    for client in [&mut laptop, &mut phone, &mut carol] {
        client.expect(&msg.line());
    }

    laptop.send("READ general 1");
    laptop.expect("OK READ general 1");
    for client in [&mut phone, &mut bob, &mut carol] {
        client.expect("READ general alice 1");
        client.expect_quiet();
    }
    laptop.expect_quiet();
}

/// With `SET receipts off` the other members stop hearing one's READs, while one's own devices still do.
#[test]
fn receipts_off_hides_reads_from_others_but_not_own_devices() {
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch: _epoch,
    } = cast(&server);
    for i in 1..=3 {
        let msg = bob.say("general", &format!("m{i}"));
        for client in [&mut laptop, &mut phone, &mut carol] {
            client.expect(&msg.line());
        }
    }

    laptop.send("@s SET receipts off");
    laptop.expect("@s OK SET receipts off");
    laptop.send("READ general 2");
    laptop.expect("OK READ general 2");
    phone.expect("READ general alice 2");
    // The setting is the user's: reading on the phone is private too.
    phone.send("READ general 3");
    phone.expect("OK READ general 3");
    laptop.expect("READ general alice 3");
    for client in [&mut laptop, &mut phone, &mut bob, &mut carol] {
        client.expect_quiet();
    }

    laptop.send("SET receipts on");
    laptop.expect("OK SET receipts on");
    let msg = bob.say("general", "m4");
    for client in [&mut laptop, &mut phone, &mut carol] {
        client.expect(&msg.line());
    }
    laptop.send("READ general 4");
    laptop.expect("OK READ general 4");
    for client in [&mut phone, &mut bob, &mut carol] {
        client.expect("READ general alice 4");
        client.expect_quiet();
    }
}

/// ROOMS shows `read=` and `unread=` (seq - read) correctly after messages, reads and a reconnect.
#[test]
fn unread_counts_follow_messages_reads_and_reconnects() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let mut bob = server.login("bob");
    bob.join("general");
    alice.expect_joined("general", "bob");
    let room = |seq: u64, read: u64| {
        format!(
            "ROOM general seq={seq} epoch={epoch} members=2 read={read} unread={}",
            seq - read
        )
    };
    let rooms = |client: &mut Client, line: &str| {
        client.send("ROOMS");
        client.expect(line);
        client.expect("OK ROOMS 1");
    };

    rooms(&mut alice, &room(0, 0));
    for i in 1..=4 {
        let msg = bob.say("general", &format!("m{i}"));
        alice.expect(&msg.line());
    }
    rooms(&mut alice, &room(4, 0));

    alice.send("READ general 3");
    alice.expect("OK READ general 3");
    bob.expect("READ general alice 3");
    rooms(&mut alice, &room(4, 3));

    // The position belongs to the user, not the connection.
    drop(alice);
    bob.expect_prefix("PRESENCE alice offline last_seen=");
    let mut alice = server.login("alice");
    bob.expect("PRESENCE alice online");
    rooms(&mut alice, &room(4, 3));
    let msg = bob.say("general", "m5");
    alice.expect(&msg.line());
    rooms(&mut alice, &room(5, 3));
    rooms(&mut bob, &room(5, 5));
}

/// Posting moves one's own read position to the new message, silently: own messages are never unread.
#[test]
fn posting_marks_own_messages_read() {
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut carol,
        epoch,
    } = cast(&server);
    let msg = bob.say("general", "first");
    for client in [&mut laptop, &mut phone, &mut carol] {
        client.expect(&msg.line());
    }
    let mine = laptop.say("general", "second, mine");
    for client in [&mut phone, &mut bob, &mut carol] {
        client.expect(&mine.line());
        // No READ event for a post.
        client.expect_quiet();
    }

    for device in [&mut laptop, &mut phone] {
        device.send("ROOMS");
        device.expect(&format!(
            "ROOM general seq=2 epoch={epoch} members=3 read=2 unread=0"
        ));
        device.expect("OK ROOMS 1");
    }
    bob.send("ROOMS");
    bob.expect(&format!(
        "ROOM general seq=2 epoch={epoch} members=3 read=1 unread=1"
    ));
    bob.expect("OK ROOMS 1");
    // An explicit READ below the posted position leaves it where posting put it.
    phone.send("READ general 1");
    phone.expect("OK READ general 2");
    laptop.expect_quiet();
}
