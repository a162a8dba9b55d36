//! Multi-device users: one person, several connections. Every device receives everything the
//! person should; a device id that logs in again replaces its old session; presence speaks
//! of people, not devices.

mod support;

use support::{Client, TestServer};

/// alice's laptop and phone, and bob, all in `general`, every event read.
fn alice_on_two_devices_and_bob(server: &TestServer) -> (Client, Client, Client) {
    let mut laptop = server.login_device("alice", "laptop");
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    laptop.join("general");
    phone.expect("JOINED general alice");
    bob.join("general");
    laptop.expect_introduced("general", "bob");
    phone.expect_introduced("general", "bob");
    (laptop, phone, bob)
}

/// A message to a room reaches every device of every member.
#[test]
fn every_device_of_a_member_receives_room_messages() {
    let server = TestServer::start();
    let (mut laptop, mut phone, mut bob) = alice_on_two_devices_and_bob(&server);

    let msg = bob.say("general", "hello both of you");
    laptop.expect(&msg.line());
    phone.expect(&msg.line());
}

/// The sender's own other devices get the MSG too, identical to the sender's echo.
#[test]
fn the_senders_other_devices_get_the_echo() {
    let server = TestServer::start();
    let (mut laptop, mut phone, mut bob) = alice_on_two_devices_and_bob(&server);

    let msg = laptop.say("general", "typed on the laptop");
    phone.expect(&msg.line());
    bob.expect(&msg.line());

    laptop.send("DM bob psst");
    laptop.expect_prefix("OK DM bob dm:alice:bob 1 ");
    let dm = laptop.expect_msg();
    phone.expect(&dm.line());
    bob.expect(&dm.line());
}

/// JOIN and LEAVE on one device are announced to the user's other devices, which follow them.
#[test]
fn membership_changes_reach_the_other_devices() {
    let server = TestServer::start();
    let mut laptop = server.login_device("alice", "laptop");
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    bob.join("general");
    phone.join("general");
    bob.expect_introduced("general", "alice");
    laptop.expect("JOINED general alice");

    let msg = bob.say("general", "both devices now");
    laptop.expect(&msg.line());
    phone.expect(&msg.line());

    laptop.send("LEAVE general");
    laptop.expect("OK LEAVE general");
    phone.expect("LEFT general alice");
    bob.expect("LEFT general alice");
    bob.say("general", "nobody's devices");
    laptop.expect_quiet();
    phone.expect_quiet();
}

/// Logging in again from the same device closes the old session with `BYE replaced`, silently.
#[test]
fn a_second_login_from_the_same_device_replaces_the_first() {
    // The new session works and nobody sees alice go offline or come online.
    let server = TestServer::start();
    let mut old = server.login_device("alice", "laptop");
    old.join("general");
    let mut bob = server.login("bob");
    bob.join("general");
    old.expect_introduced("general", "bob");
    assert_eq!(bob.stats()["connections"], 2);

    let mut new = server.login_device("alice", "laptop");
    old.expect("BYE replaced :you logged in again from this device");
    old.expect_closed();

    let msg = new.say("general", "I am the laptop now");
    bob.expect(&msg.line());
    let reply = bob.say("general", "welcome back");
    new.expect(&reply.line());

    // The old connection's threads are gone once the count drops: only then has its
    // session fully ended, and still nobody was told alice went offline or came online.
    bob.wait_for_stat("connections", 2);
    assert_eq!(bob.stats()["sessions"], 2);
    bob.expect_quiet();
    bob.send("WHO general");
    bob.expect("WHO general alice online");
    bob.expect("WHO general bob online");
    bob.expect("OK WHO general 2");
}

/// Device ids are per user, and sessions without a device id never replace each other.
#[test]
fn only_the_same_users_same_device_is_replaced() {
    let server = TestServer::start();
    let mut alice_phone = server.login_device("alice", "phone");
    let mut bob_phone = server.login_device("bob", "phone");
    let mut carol_1 = server.login("carol");
    let mut carol_2 = server.login("carol");
    let mut alice_laptop = server.login_device("alice", "Laptop");
    alice_phone.join("general");
    alice_laptop.expect("JOINED general alice");
    bob_phone.join("general");
    alice_phone.expect_introduced("general", "bob");
    alice_laptop.expect_introduced("general", "bob");
    carol_1.join("general");
    for client in [&mut alice_phone, &mut alice_laptop, &mut bob_phone] {
        client.expect_introduced("general", "carol");
    }
    carol_2.expect("JOINED general carol");

    let msg = alice_phone.say("general", "everyone still here?");
    for client in [
        &mut alice_laptop,
        &mut bob_phone,
        &mut carol_1,
        &mut carol_2,
    ] {
        client.expect(&msg.line());
    }
    assert_eq!(carol_1.stats()["sessions"], 5);
}

/// Extra devices coming and going announce no presence; the first in and the last out do, once.
#[test]
fn presence_is_not_repeated_for_extra_devices() {
    let server = TestServer::start();
    let mut laptop = server.login_device("alice", "laptop");
    laptop.join("general");
    let mut bob = server.login("bob");
    bob.join("general");
    laptop.expect_introduced("general", "bob");

    let mut phone = server.login_device("alice", "phone");
    // The phone's login, presence included, is done once it answers a PING.
    phone.expect_quiet();
    bob.expect_quiet();

    phone.send("QUIT");
    phone.expect("BYE quit :goodbye");
    phone.expect_closed();
    bob.wait_for_stat("sessions", 2);
    bob.expect_quiet();
    bob.send("WHO general");
    bob.expect("WHO general alice online");
    bob.expect("WHO general bob online");
    bob.expect("OK WHO general 2");

    laptop.send("QUIT");
    laptop.expect("BYE quit :goodbye");
    bob.expect_shape("PRESENCE alice offline last_seen=<ts>");
    bob.wait_for_stat("sessions", 1);
    bob.expect_quiet();
}

/// WHO lists a person once however many devices they use.
#[test]
fn who_lists_a_user_once() {
    let server = TestServer::start();
    let mut laptop = server.login_device("alice", "laptop");
    let mut phone = server.login_device("alice", "phone");
    laptop.join("general");
    phone.expect("JOINED general alice");
    phone.send("WHO general");
    phone.expect("WHO general alice online");
    phone.expect("OK WHO general 1");
}

/// A half-sent line (no `\n`) of a session the server has closed is never carried out.
#[test]
fn a_replaced_session_does_not_act_on_a_half_sent_line() {
    // Carrying it out would have alice act from a device she has been logged out of.
    let server = TestServer::start();
    let mut old = server.login_device("alice", "laptop");
    old.join("general");
    let mut bob = server.login("bob");
    bob.join("general");
    old.expect_introduced("general", "bob");
    old.send_raw(b"SEND general ghost");

    let mut new = server.connect();
    new.send("LOGIN alice device=laptop");
    new.expect("OK LOGIN alice");
    let lines = old.read_until_closed();
    assert_eq!(
        lines,
        ["BYE replaced :you logged in again from this device"],
        "the replaced session's last lines"
    );
    bob.wait_for_stat("connections", 2);
    bob.expect_quiet();
    new.expect_quiet();
}

/// Once a client has read `OK LOGIN`, its session gets every event published after that.
#[test]
fn ok_login_means_the_session_gets_every_later_event() {
    // Here another device of alice joins a room right after the OK; a miss is a race, hence
    // the rounds.
    let server = TestServer::with(|config| config.max_rooms_per_user = 2000);
    let mut laptop = server.login_device("alice", "laptop");
    for round in 0..2000 {
        let mut phone = server.connect();
        phone.send("LOGIN alice device=phone");
        phone.expect("OK LOGIN alice");
        let room = format!("r{round}");
        laptop.join(&room);
        // The JOINED was queued for every other session of alice before the OK JOIN.
        phone.send("PING after");
        let line = phone.next_line();
        if line != format!("JOINED {room} alice") {
            phone.fail(&format!(
                "round {round}: the new session missed JOINED {room} alice"
            ));
        }
        phone.expect("PONG after");
    }
}
