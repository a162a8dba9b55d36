//! Direct messages: a two-member room `dm:<a>:<b>` (names sorted) that comes into being with
//! the first DM and that nobody else can join, read, list or post to.

mod support;

use support::{Client, Msg, TestServer};

/// Sends `DM <to> <body>` and returns the sender's echo after checking `OK DM`.
fn dm(from: &mut Client, to: &str, room: &str, body: &str) -> Msg {
    from.send(&format!("DM {to} {body}"));
    let ok = from.expect_prefix(&format!("OK DM {to} {room} "));
    let msg = from.expect_msg();
    assert_eq!(ok, format!("OK DM {to} {room} {} {}", msg.seq, msg.id));
    assert_eq!((msg.room.as_str(), msg.body.as_str()), (room, body));
    msg
}

/// The first DM creates `dm:<a>:<b>` (sorted names) and both people get every message of it.
#[test]
fn dm_creates_a_two_member_room_named_by_sorted_names() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");

    let first = dm(&mut bob, "alice", "dm:alice:bob", "psst");
    assert_eq!((first.seq, first.sender.as_str()), (1, "bob"));
    alice.expect(&first.line());

    alice.send("DM Bob hey you");
    alice.expect_prefix("OK DM bob dm:alice:bob 2 ");
    let second = alice.expect_msg();
    assert_eq!((second.seq, second.body.as_str()), (2, "hey you"));
    bob.expect(&second.line());

    // SEND to the DM room by name works for its members.
    let third = alice.say("dm:alice:bob", "same room");
    assert_eq!(third.seq, 3);
    bob.expect(&third.line());
}

/// Both members see the DM room in ROOMS, WHO and HISTORY; JOIN re-confirms it silently.
#[test]
fn members_see_the_dm_in_rooms_who_and_history() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let first = dm(&mut alice, "bob", "dm:alice:bob", "one");
    bob.expect(&first.line());
    let second = dm(&mut bob, "alice", "dm:alice:bob", "two");
    alice.expect(&second.line());

    bob.send("JOIN dm:alice:bob");
    let joined = bob.expect_prefix("OK JOIN dm:alice:bob seq=2 epoch=");
    let epoch = support::field(&joined, "epoch").unwrap().to_owned();
    assert_eq!(
        joined,
        format!("OK JOIN dm:alice:bob seq=2 epoch={epoch} members=2")
    );
    alice.expect_quiet();

    for client in [&mut alice, &mut bob] {
        client.send("ROOMS");
        client.expect_extended(&format!("ROOM dm:alice:bob seq=2 epoch={epoch} members=2"));
        client.expect("OK ROOMS 1");
        client.send("WHO dm:alice:bob");
        client.expect("WHO dm:alice:bob alice online");
        client.expect("WHO dm:alice:bob bob online");
        client.expect("OK WHO dm:alice:bob 2");
        client.send("HISTORY DM:Alice:Bob");
        client.expect(&first.line());
        client.expect(&second.line());
        client.expect(&format!("OK HISTORY dm:alice:bob 2 seq=2 epoch={epoch}"));
    }
}

/// To a third user a DM room does not exist: `no-such-room` everywhere, and absent from ROOMS.
#[test]
fn outsiders_cannot_see_or_touch_a_dm() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut carol = server.login("carol");
    let first = dm(&mut alice, "bob", "dm:alice:bob", "secret");
    bob.expect(&first.line());

    for room in ["dm:alice:bob", "dm:alice:zed"] {
        for command in [
            format!("WHO {room}"),
            format!("HISTORY {room}"),
            format!("SEND {room} let me in"),
            format!("JOIN {room}"),
            format!("LEAVE {room}"),
        ] {
            carol.send(&command);
            carol.expect(&format!("ERR no-such-room :there is no room {room}"));
        }
    }
    carol.send("ROOMS");
    carol.expect("OK ROOMS 0");
    alice.expect_quiet();
    bob.expect_quiet();
    let msg = alice.say("dm:alice:bob", "still private");
    bob.expect(&msg.line());
    carol.expect_quiet();
}

/// A DM to someone offline is kept: they read it with HISTORY when they come back.
#[test]
fn a_dm_to_an_offline_user_waits_in_history() {
    let server = TestServer::start();
    let mut bob = server.login("bob");
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    bob.expect_closed();

    let mut alice = server.login("alice");
    let msg = dm(&mut alice, "bob", "dm:alice:bob", "call me");
    let mut bob = server.login("bob");
    bob.send("HISTORY dm:alice:bob");
    bob.expect(&msg.line());
    bob.expect_prefix("OK HISTORY dm:alice:bob 1 seq=1 ");
}

/// DMs to oneself or to someone who never logged in are refused.
#[test]
fn dm_needs_another_existing_user() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.send("DM alice hi me");
    alice.expect("ERR bad-argument :you cannot DM yourself");
    alice.send("DM ghost boo");
    alice.expect("ERR no-such-user :nobody called ghost has logged in");
    alice.send("ROOMS");
    alice.expect("OK ROOMS 0");
}
