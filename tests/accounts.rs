//! Accounts and room access: who may use a name, and who may see a room.

mod support;

use support::{Client, TestServer};

/// A registered name needs its password: a wrong or missing one gets `bad-password`, the
/// connection stays usable, and the right one still works (after the throttle's wait).
#[test]
fn a_registered_name_needs_its_password() {
    let server = TestServer::start();
    let mut owner = server.connect();
    owner.send("LOGIN alice password=correct-horse");
    owner.expect("OK LOGIN alice");

    let mut guesser = server.connect();
    guesser.send("LOGIN alice");
    guesser.expect("ERR bad-password :alice is registered: LOGIN alice password=<password>");
    guesser.send("@g LOGIN alice password=battery-staple");
    guesser.expect("@g ERR bad-password :alice is registered: LOGIN alice password=<password>");
    guesser.send("JOIN general");
    guesser.expect("ERR not-logged-in :LOGIN <user> first");
    guesser.send("LOGIN Alice password=correct-horse");
    guesser.expect("OK LOGIN alice");
}

/// `--require-account` refuses a name without an account; a LOGIN with a password creates one.
#[test]
fn require_account_refuses_names_without_one() {
    let server = TestServer::with(|config| config.require_account = true);
    let mut bob = server.connect();
    bob.send("LOGIN bob");
    bob.expect(
        "ERR account-required :this server needs an account: \
         LOGIN bob password=<password> creates one",
    );
    bob.send("LOGIN bob password=s3cret");
    bob.expect("OK LOGIN bob");
    let mut impostor = server.connect();
    impostor.send("LOGIN bob password=guess");
    impostor.expect_prefix("ERR bad-password :");
}

/// REGISTER claims a name once (ending every session that did not prove the password);
/// PASSWORD needs the current password, changes it and, if asked, ends the other sessions.
#[test]
fn register_and_change_password() {
    let server = TestServer::start();
    let mut laptop = server.login_device("carol", "laptop");
    let mut early = server.login_device("carol", "phone");
    laptop.send("REGISTER first-pass");
    laptop.expect("OK REGISTER carol");
    let last = early.read_until_closed();
    assert_eq!(
        last.last().map(String::as_str),
        Some("BYE registered :this name now has a password; log in again with it")
    );
    let mut phone = server.connect();
    phone.send("LOGIN carol device=phone password=first-pass");
    phone.expect("OK LOGIN carol");
    laptop.send("REGISTER again");
    laptop.expect("ERR not-permitted :carol is already registered; use PASSWORD to change it");
    let mut other = server.connect();
    other.send("LOGIN carol");
    other.expect_prefix("ERR bad-password :");
    laptop.send("PASSWORD wrong-pass second-pass end-sessions");
    laptop.expect_prefix("ERR bad-password :");
    laptop.send("PASSWORD first-pass second-pass end-sessions");
    laptop.expect("OK PASSWORD carol");
    let last = phone.read_until_closed();
    assert_eq!(
        last.last().map(String::as_str),
        Some("BYE password-changed :the password was changed; log in again with the new one")
    );
    laptop.expect_quiet();
    let mut again = server.connect();
    again.send("LOGIN carol password=first-pass");
    again.expect_prefix("ERR bad-password :");
    again.send("LOGIN carol password=second-pass");
    again.expect("OK LOGIN carol");
}

/// Passwords never come back: not in replies, not in errors.
#[test]
fn passwords_are_never_echoed() {
    let server = TestServer::start();
    let mut client = server.connect();
    for line in [
        "LOGIN dave pasword=hunter2hunter2",
        "LOGIN dave hunter2hunter2",
        "LOGIN dave password=hunter2hunter2 extra",
    ] {
        client.send(line);
        let reply = client.next_line();
        assert!(reply.starts_with("ERR bad-argument :"), "{reply}");
        assert!(!reply.contains("hunter2"), "{reply}");
    }
}

/// A third user can learn nothing of a DM or an invite-only room: every command answers
/// exactly as for a room that does not exist, ROOMS lists neither, and no presence leaks.
#[test]
fn outsiders_see_nothing_of_direct_and_private_rooms() {
    let server = TestServer::with(|config| {
        config.rate_limit = None;
        config.presence_grace = std::time::Duration::ZERO;
    });
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send("DM bob psst");
    alice.expect_prefix("OK DM bob dm:alice:bob 1 ");
    alice.expect_msg();
    bob.expect_msg();
    alice.join("team");
    alice.send("PRIVATE team on");
    alice.expect("OK PRIVATE team on");
    alice.send("INVITE team bob");
    alice.expect("OK INVITE team bob");
    bob.expect("INVITED team alice");
    bob.join("team");
    alice.expect("JOINED team bob");

    let mut carol = server.login("carol");
    let commands = [
        "WHO {}",
        "HISTORY {}",
        "SYNC {} 0",
        "SEND {} hello?",
        "TYPING {}",
        "READ {} 1",
        "LEAVE {}",
        "PRIVATE {} off",
        "INVITE {} carol",
        "KICK {} bob",
    ];
    for template in commands {
        let nowhere = template.replace("{}", "nowhere");
        carol.send(&nowhere);
        let expected = carol.next_line().replace("nowhere", "ROOM");
        assert_eq!(
            expected, "ERR no-such-room :there is no room ROOM",
            "{nowhere}"
        );
        for room in ["dm:alice:bob", "team"] {
            carol.send(&template.replace("{}", room));
            assert_eq!(
                carol.next_line().replace(room, "ROOM"),
                expected,
                "{template} on {room}"
            );
        }
    }
    // A dm: name that is not yours answers as a missing one does. JOIN of a free name creates
    // a room, so JOIN of an invite-only room answers as a new room would, lets nobody in, and
    // shows the same epoch again on a second try (as a real new room would).
    carol.send("JOIN dm:alice:bob");
    carol.expect("ERR no-such-room :there is no room dm:alice:bob");
    let decoy = carol.join("team");
    assert_eq!((decoy.seq, decoy.members), (0, 1), "a new room's answer");
    assert_eq!(carol.join("team").epoch, decoy.epoch);
    carol.send("WHO team");
    carol.expect("ERR no-such-room :there is no room team");
    carol.send("ROOMS");
    carol.expect("OK ROOMS 0");
    carol.send("QUIT");
    carol.read_until_closed();
    // Neither alice nor bob heard of carol, who shares no room with them.
    alice.expect_quiet();
    bob.expect_quiet();
}

/// Only the owner changes access; a kicked member gets `KICKED`, the others `LEFT`, and the
/// room disappears for them.
#[test]
fn owner_kicks_and_members_cannot_change_access() {
    let server = TestServer::with(|config| config.rate_limit = None);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut carol = server.login("carol");
    alice.join("team");
    for member in [&mut bob, &mut carol] {
        member.join("team");
    }
    alice.expect_introduced("team", "bob");
    alice.expect_introduced("team", "carol");
    bob.expect_introduced("team", "carol");
    bob.send("PRIVATE team on");
    bob.expect("ERR not-permitted :only the owner of team can do that");
    alice.send("PRIVATE team on");
    alice.expect("OK PRIVATE team on");
    alice.send("KICK team bob");
    alice.expect("LEFT team bob");
    alice.expect("OK KICK team bob");
    bob.expect("KICKED team alice");
    carol.expect("LEFT team bob");
    bob.send("WHO team");
    bob.expect("ERR no-such-room :there is no room team");
    bob.send("JOIN team");
    bob.expect_prefix("OK JOIN team seq=0 ");
    bob.send("SEND team let me in");
    bob.expect("ERR no-such-room :there is no room team");
    alice.expect_quiet();
    alice.send("KICK team alice");
    alice.expect("ERR bad-argument :the owner cannot kick themselves; LEAVE instead");
    alice.send("KICK team bob");
    alice.expect("ERR not-member :bob is neither a member of nor invited to team");
    alice.send("PRIVATE team off");
    alice.expect("OK PRIVATE team off");
    bob.join("team");
}

/// Accounts and access survive a restart of the in-process server over the same database.
#[test]
fn accounts_and_access_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::sqlite_store(dir.path().join("chatd.db"), None);
    let first = TestServer::with(|config| config.store = store.clone());
    let mut alice = first.connect();
    alice.send("LOGIN alice password=pw1");
    alice.expect("OK LOGIN alice");
    alice.join("team");
    alice.send("PRIVATE team on");
    alice.expect("OK PRIVATE team on");
    // A write queued behind the others: once it is answered, the earlier writes are stored.
    alice.send("@w;cid=w1 SEND team stored");
    alice.expect_prefix("@w OK SEND team 1 ");
    assert!(first.shutdown());

    let second = TestServer::with(|config| config.store = store);
    let mut again = second.connect();
    again.send("LOGIN alice");
    again.expect_prefix("ERR bad-password :");
    again.send("LOGIN alice password=pw1");
    again.expect("OK LOGIN alice");
    let mut bob: Client = second.login("bob");
    bob.send("WHO team");
    bob.expect("ERR no-such-room :there is no room team");
}

/// An owner who left a room cannot make it invite-only from outside (and so lock everyone
/// out of the name) until they JOIN again.
#[test]
fn an_owner_who_left_cannot_lock_the_room() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    alice.send("LEAVE general");
    alice.expect("OK LEAVE general");
    alice.send("PRIVATE general on");
    alice.expect("ERR not-permitted :only the owner of general can do that");
    let mut bob = server.login("bob");
    let joined = bob.join("general");
    assert_eq!(joined.members, 1);
    alice.join("general");
    alice.send("PRIVATE general on");
    alice.expect("OK PRIVATE general on");
}
