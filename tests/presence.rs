//! Presence: `PRESENCE <user> online` when a person's first session connects and `PRESENCE
//! <user> offline last_seen=<time>` when their last one ends, sent once per person to every
//! session of everyone who shares a room with them, and nobody else.
//!
//! Proving that a line was *not* sent needs a barrier: the leaving or arriving user's
//! presence broadcast is finished once the `sessions` counter has moved (logout updates it
//! after telling peers) or once the arriving session has answered a PING (its reader thread
//! handles LOGIN, broadcast included, before the PING). After that, `expect_quiet` on an
//! observer shows nothing else was queued for it.

mod support;

use chrono::{SubsecRound, Utc};
use support::{field, parse_timestamp, Client, TestServer};

/// alice (two devices) and bob share two rooms; aaron shares none with bob. aaron sorts
/// before alice and bob, so a presence line wrongly sent to him would be queued before
/// alice's copy (peers are told in name order) and be caught by his barrier.
struct Cast {
    laptop: Client,
    phone: Client,
    bob: Client,
    aaron: Client,
}

fn cast(server: &TestServer) -> Cast {
    let mut laptop = server.login_device("alice", "laptop");
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    let mut aaron = server.login("aaron");
    for room in ["general", "random"] {
        laptop.join(room);
        phone.expect(&format!("JOINED {room} alice"));
        bob.join(room);
        if room == "general" {
            // Sharing no room with bob before, alice's devices are told he is online.
            laptop.expect("PRESENCE bob online");
            phone.expect("PRESENCE bob online");
        }
        laptop.expect(&format!("JOINED {room} bob"));
        phone.expect(&format!("JOINED {room} bob"));
    }
    aaron.join("elsewhere");
    laptop.send("JOIN elsewhere");
    laptop.expect_prefix("OK JOIN elsewhere ");
    phone.expect("JOINED elsewhere alice");
    aaron.expect_introduced("elsewhere", "alice");
    Cast {
        laptop,
        phone,
        bob,
        aaron,
    }
}

/// A last session ending is announced once per device of each room-sharing peer, with last_seen.
#[test]
fn going_offline_is_announced_once_with_last_seen() {
    // alice's devices share two rooms with bob; aaron shares none and hears nothing.
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut aaron,
    } = cast(&server);

    let before = Utc::now().trunc_subsecs(3);
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    let line = laptop.expect_shape("PRESENCE bob offline last_seen=<ts>");
    phone.expect(&line);
    let last_seen = parse_timestamp(field(&line, "last_seen").unwrap());
    let after = Utc::now();
    assert!(
        before <= last_seen && last_seen <= after,
        "last_seen {last_seen} is not between {before} and {after}"
    );

    aaron.wait_for_stat("sessions", 3);
    laptop.expect_quiet();
    phone.expect_quiet();
    aaron.expect_quiet();
}

/// bob coming back is announced once to each of alice's devices, and not to aaron.
#[test]
fn coming_online_is_announced_once() {
    let server = TestServer::start();
    let Cast {
        mut laptop,
        mut phone,
        mut bob,
        mut aaron,
    } = cast(&server);
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    let offline = laptop.expect_shape("PRESENCE bob offline last_seen=<ts>");
    phone.expect(&offline);
    aaron.wait_for_stat("sessions", 3);

    let mut bob = server.login("bob");
    bob.expect_quiet();
    laptop.expect("PRESENCE bob online");
    phone.expect("PRESENCE bob online");
    laptop.expect_quiet();
    phone.expect_quiet();
    aaron.expect_quiet();

    // The returning user is still a member of the rooms and gets their messages.
    let msg = laptop.say("general", "welcome back");
    bob.expect(&msg.line());
}

/// Coming online is not announced to oneself, nor to one's own other devices.
#[test]
fn nobody_is_told_about_themselves() {
    let server = TestServer::start();
    let mut laptop = server.login_device("alice", "laptop");
    laptop.join("general");
    laptop.send("QUIT");
    laptop.expect("BYE quit :goodbye");
    laptop.expect_closed();
    let mut watcher = server.connect();
    watcher.wait_for_stat("sessions", 0);

    let mut phone = server.login_device("alice", "phone");
    phone.expect_quiet();
    let mut laptop = server.login_device("alice", "laptop");
    laptop.expect_quiet();
    phone.expect_quiet();
}

/// WHO shows an offline member with the last_seen the presence line gave, and online once back.
#[test]
fn who_shows_offline_members_with_last_seen() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");

    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    let presence = alice.expect_shape("PRESENCE bob offline last_seen=<ts>");
    let last_seen = field(&presence, "last_seen").unwrap().to_owned();
    alice.send("WHO general");
    alice.expect("WHO general alice online");
    alice.expect(&format!("WHO general bob offline last_seen={last_seen}"));
    alice.expect("OK WHO general 2");

    let mut bob = server.login("bob");
    bob.expect_quiet();
    alice.expect("PRESENCE bob online");
    bob.send("WHO general");
    bob.expect("WHO general alice online");
    bob.expect("WHO general bob online");
    bob.expect("OK WHO general 2");
}

/// A connection that drops without QUIT (closed socket) is an offline transition too.
#[test]
fn a_dropped_connection_goes_offline() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    drop(bob);
    alice.expect_shape("PRESENCE bob offline last_seen=<ts>");
    alice.wait_for_stat("sessions", 1);
    alice.expect_quiet();
}

/// Sharing a direct conversation counts as sharing a room.
#[test]
fn dm_partners_see_each_others_presence() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send("DM bob hi");
    alice.expect_prefix("OK DM bob dm:alice:bob 1 ");
    alice.expect_prefix("MSG dm:alice:bob 1 ");
    bob.expect_prefix("MSG dm:alice:bob 1 ");
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    alice.expect_shape("PRESENCE bob offline last_seen=<ts>");
    let mut bob = server.login("bob");
    bob.expect_quiet();
    alice.expect("PRESENCE bob online");
}

/// Leaving the only shared room ends the presence relationship.
#[test]
fn no_presence_after_leaving_the_shared_room() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    bob.send("LEAVE general");
    bob.expect("OK LEAVE general");
    alice.expect("LEFT general bob");
    bob.send("QUIT");
    bob.expect("BYE quit :goodbye");
    alice.wait_for_stat("sessions", 1);
    alice.expect_quiet();
}
