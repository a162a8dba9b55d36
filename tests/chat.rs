//! The everyday commands: LOGIN, JOIN, SEND, WHO, ROOMS, HISTORY, LEAVE, labels, PING, HELP,
//! QUIT, STATS, and the normative transcript of issue 2.

mod support;

use std::time::Duration;

use support::{field, Client, Msg, TestServer};

/// Alice's side of the transcript, line for line, with bob in a second terminal.
fn transcript() {
    let server = TestServer::start();
    let mut alice = server.connect();
    alice.send("LOGIN alice device=laptop");
    alice.expect("OK LOGIN alice");
    alice.send("JOIN general");
    let joined = alice.expect_shape("OK JOIN general seq=0 epoch=<hex16> members=1");
    let epoch = field(&joined, "epoch").unwrap().to_owned();
    alice.send("SEND general hi all");
    let ok = alice.expect_shape("OK SEND general 1 <id>");
    let msg = alice.expect_shape("MSG general 1 <id> <ts> alice hi all");
    assert_eq!(
        ok.split(' ').nth(4),
        msg.split(' ').nth(3),
        "OK SEND and MSG ids"
    );

    let mut bob = server.connect();
    bob.send("LOGIN bob");
    bob.expect("OK LOGIN bob");
    bob.send("JOIN general");
    bob.expect(&format!("OK JOIN general seq=1 epoch={epoch} members=2"));
    // Sharing no room with bob before, alice learns he is online just before he joins.
    alice.expect("PRESENCE bob online");
    alice.expect("JOINED general bob");

    alice.send("WHO general");
    alice.expect("WHO general alice online");
    alice.expect("WHO general bob online");
    alice.expect("OK WHO general 2");
    alice.send("DM bob psst");
    let ok = alice.expect_shape("OK DM bob dm:alice:bob 1 <id>");
    let dm = alice.expect_shape("MSG dm:alice:bob 1 <id> <ts> alice psst");
    assert_eq!(
        ok.split(' ').nth(5),
        dm.split(' ').nth(3),
        "OK DM and MSG ids"
    );
    bob.expect(&dm);
    alice.send("FROB");
    alice.expect("ERR unknown-command :FROB is not a command; type HELP");
    alice.expect_quiet();
    bob.expect_quiet();
}

/// The transcript of issue 2 exactly as written, including `PRESENCE bob online`.
#[test]
fn normative_transcript() {
    transcript();
}

/// Names are case-insensitive: the server lower-cases users and rooms on the way in.
#[test]
fn names_are_lower_cased() {
    let server = TestServer::start();
    let mut alice = server.connect();
    alice.send("LOGIN Alice");
    alice.expect("OK LOGIN alice");
    alice.send("JOIN General");
    alice.expect_shape("OK JOIN general seq=0 epoch=<hex16> members=1");
    alice.send("SEND GENERAL hi");
    alice.expect_shape("OK SEND general 1 <id>");
    alice.expect_shape("MSG general 1 <id> <ts> alice hi");
}

/// Verbs are case-insensitive, `\r\n` is accepted and blank lines are ignored.
#[test]
fn verbs_any_case_crlf_and_blank_lines() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send_raw(b"login carol\r\n\r\n   \n\njOiN general\r\nping x\r\n");
    client.expect("OK LOGIN carol");
    client.expect_shape("OK JOIN general seq=0 epoch=<hex16> members=1");
    client.expect("PONG x");
    client.expect_quiet();
}

/// JOIN creates a room, reports seq/epoch/members, tells existing members, and is idempotent.
#[test]
fn join_announces_the_newcomer_to_members() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let first = alice.join("general");
    assert_eq!((first.seq, first.members), (0, 1));
    alice.say("general", "one");

    let mut bob = server.login("bob");
    let second = bob.join("general");
    assert_eq!((second.seq, second.members), (1, 2));
    assert_eq!(second.epoch, first.epoch, "one room, one epoch");
    alice.expect_introduced("general", "bob");

    // Joining again re-confirms without announcing anything.
    bob.send("JOIN general");
    bob.expect(&format!(
        "OK JOIN general seq=1 epoch={} members=2",
        first.epoch
    ));
    alice.expect_quiet();
    bob.expect_quiet();
}

/// SEND reaches every member, sender included, as one identical MSG; the body is the line's rest.
#[test]
fn send_fans_out_the_same_line_to_every_member() {
    // Inner spaces, tabs and non-ASCII are kept; leading spaces are dropped.
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut carol = server.login("carol");
    alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");

    let msg = alice.say("general", "hi  all\tüñï 🎉 :colon  ");
    assert_eq!((msg.seq, msg.sender.as_str()), (1, "alice"));
    bob.expect(&msg.line());

    bob.send("SEND general     leading spaces go");
    let ok = bob.expect_shape("OK SEND general 2 <id>");
    let reply = bob.expect_msg();
    assert_eq!(ok, format!("OK SEND general 2 {}", reply.id));
    assert_eq!(
        (reply.seq, reply.sender.as_str(), reply.body.as_str()),
        (2, "bob", "leading spaces go")
    );
    alice.expect(&reply.line());
    assert!(reply.id > msg.id, "ids are time-ordered UUIDv7s");
    assert!(reply.sent_at >= msg.sent_at);

    carol.expect_quiet();
}

/// LEAVE tells the remaining members, stops delivery and membership, and can be undone.
#[test]
fn leave_ends_membership() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let room = alice.join("general");
    bob.join("general");
    alice.expect_introduced("general", "bob");

    bob.send("LEAVE general");
    bob.expect("OK LEAVE general");
    alice.expect("LEFT general bob");
    alice.say("general", "bob is gone");
    bob.expect_quiet();
    bob.send("SEND general am I here?");
    bob.expect("ERR not-member :you are not a member of general; JOIN it first");
    bob.send("ROOMS");
    bob.expect("OK ROOMS 0");
    alice.send("WHO general");
    alice.expect("WHO general alice online");
    alice.expect("OK WHO general 1");

    bob.send("JOIN general");
    bob.expect(&format!(
        "OK JOIN general seq=1 epoch={} members=2",
        room.epoch
    ));
    alice.expect_introduced("general", "bob");
}

/// WHO lists a room's members sorted by name, each `online`, then `OK WHO <room> <count>`.
#[test]
fn who_lists_members() {
    let server = TestServer::start();
    let mut carol = server.login("carol");
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    carol.join("general");
    alice.join("general");
    bob.join("general");
    carol.send("WHO general");
    carol.expect_introduced("general", "alice");
    carol.expect_introduced("general", "bob");
    carol.expect("WHO general alice online");
    carol.expect("WHO general bob online");
    carol.expect("WHO general carol online");
    carol.expect("OK WHO general 3");
}

/// ROOMS lists my rooms, sorted, with their last seq, epoch and member count.
#[test]
fn rooms_lists_my_rooms_with_their_last_seq() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.send("ROOMS");
    alice.expect("OK ROOMS 0");

    let random = alice.join("random");
    let general = alice.join("general");
    alice.say("general", "one");
    alice.say("general", "two");
    let mut bob = server.login("bob");
    bob.join("random");
    alice.expect_introduced("random", "bob");
    let mut carol = server.login("carol");
    carol.join("elsewhere");

    alice.send("ROOMS");
    alice.expect_extended(&format!(
        "ROOM general seq=2 epoch={} members=1",
        general.epoch
    ));
    alice.expect_extended(&format!(
        "ROOM random seq=0 epoch={} members=2",
        random.epoch
    ));
    alice.expect("OK ROOMS 2");
    assert_ne!(general.epoch, random.epoch, "each room has its own epoch");
}

/// HISTORY pages oldest-first by `limit` and `before=`, repeating the live MSG lines, then OK.
#[test]
fn history_pages_through_the_recent_log() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let room = alice.join("general");
    let epoch = room.epoch;
    alice.send("HISTORY general");
    alice.expect(&format!("OK HISTORY general 0 seq=0 epoch={epoch}"));

    let sent: Vec<Msg> = (1..=5)
        .map(|i| alice.say("general", &format!("message {i}")))
        .collect();
    let expect_page = |alice: &mut Client, command: &str, seqs: &[u64]| {
        alice.send(command);
        for &seq in seqs {
            alice.expect(&sent[seq as usize - 1].line());
        }
        alice.expect(&format!(
            "OK HISTORY general {} seq=5 epoch={epoch}",
            seqs.len()
        ));
    };
    expect_page(&mut alice, "HISTORY general", &[1, 2, 3, 4, 5]);
    expect_page(&mut alice, "HISTORY general 2", &[4, 5]);
    expect_page(&mut alice, "HISTORY general 2 before=4", &[2, 3]);
    expect_page(&mut alice, "history general before=2", &[1]);
    expect_page(&mut alice, "HISTORY general 10 before=1", &[]);
    expect_page(
        &mut alice,
        "HISTORY general 100 before=1000",
        &[1, 2, 3, 4, 5],
    );
}

/// With the memory store, history is the recent log: only the last `recent_per_room`
/// messages; seq keeps counting. (With SQLite older pages come from disk: tests/store.rs.)
#[test]
fn history_is_bounded_by_the_recent_log() {
    let server = TestServer::with(|config| {
        config.recent_per_room = 3;
        config.store = chatd::config::StoreConfig::Memory;
    });
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let sent: Vec<Msg> = (1..=5)
        .map(|i| alice.say("general", &format!("m{i}")))
        .collect();
    alice.send("HISTORY general");
    for msg in &sent[2..] {
        alice.expect(&msg.line());
    }
    alice.expect(&format!("OK HISTORY general 3 seq=5 epoch={epoch}"));
    alice.send("HISTORY general before=4");
    alice.expect(&sent[2].line());
    alice.expect(&format!("OK HISTORY general 1 seq=5 epoch={epoch}"));
}

/// A label `@<label>` prefixes every direct reply to its command, and never an event.
#[test]
fn labels_tag_direct_replies_only() {
    let server = TestServer::start();
    let mut alice = server.connect();
    alice.send("@l1 LOGIN alice");
    alice.expect("@l1 OK LOGIN alice");
    alice.send("@j-2 JOIN general");
    let joined = alice.expect_shape("@j-2 OK JOIN general seq=0 epoch=<hex16> members=1");
    let epoch = field(&joined, "epoch").unwrap().to_owned();
    let mut bob = server.login("bob");
    bob.join("general");
    alice.expect_introduced("general", "bob");

    alice.send("@s.3 SEND general hi");
    let ok = alice.expect_shape("@s.3 OK SEND general 1 <id>");
    let msg = alice.expect_msg();
    assert_eq!(ok, format!("@s.3 OK SEND general 1 {}", msg.id));
    bob.expect(&msg.line());

    alice.send("@w WHO general");
    alice.expect("@w WHO general alice online");
    alice.expect("@w WHO general bob online");
    alice.expect("@w OK WHO general 2");
    alice.send("@h HISTORY general");
    alice.expect(&format!("@h {}", msg.line()));
    alice.expect(&format!("@h OK HISTORY general 1 seq=1 epoch={epoch}"));
    alice.send("@r ROOMS");
    alice.expect_extended(&format!("@r ROOM general seq=1 epoch={epoch} members=2"));
    alice.expect("@r OK ROOMS 1");
    alice.send("@p PING tok");
    alice.expect("@p PONG tok");
    alice.send("@st STATS");
    alice.expect_prefix("@st OK STATS ");
    alice.send("@x;cid=abc PING");
    alice.expect("@x PONG");
    alice.send("@cid=abc PING");
    alice.expect("PONG");
    alice.send("@x_y;future=1 PING");
    alice.expect("@x_y PONG");
    alice.send(&format!("@{} PING", "L".repeat(32)));
    alice.expect(&format!("@{} PONG", "L".repeat(32)));
    alice.send("@lv LEAVE general");
    alice.expect("@lv OK LEAVE general");
    bob.expect("LEFT general alice");
    // The BYE that answers a labelled QUIT is its reply, so it carries the label (issue 19;
    // it used to come unlabelled).
    alice.send("@q QUIT");
    alice.expect("@q BYE quit :goodbye");
    alice.expect_closed();
}

/// PING answers PONG, echoing its token, before and after LOGIN.
#[test]
fn ping_answers_pong() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send("PING");
    client.expect("PONG");
    client.send("PING 12345");
    client.expect("PONG 12345");
    client.login("alice");
    client.send("PING after-login");
    client.expect("PONG after-login");
}

/// HELP lists every core command's usage in order, then a note on labels, then `OK HELP`.
#[test]
fn help_lists_every_command() {
    // Later versions may list more commands, and more options (a usage may grow at its end);
    // these must all be there.
    let server = TestServer::start();
    let mut client = server.connect();
    client.send("HELP");
    let mut listed = Vec::new();
    for _ in 0..100 {
        let line = client.next_line();
        if line == "OK HELP" {
            break;
        }
        match line.strip_prefix("HELP ") {
            Some(usage) => listed.push(usage.to_owned()),
            None => client.fail(&format!("not a HELP line: {line:?}")),
        }
    }
    let core = [
        "LOGIN <user> [device=<id>]",
        "JOIN <room>",
        "LEAVE <room>",
        "SEND <room> <body>",
        "DM <user> <body>",
        "WHO <room>",
        "ROOMS",
        "HISTORY <room> [<limit>] [before=<seq>]",
        "PING [<token>]",
        "STATS",
        "HELP",
        "QUIT",
    ];
    let positions: Vec<Option<usize>> = core
        .iter()
        .map(|usage| listed.iter().position(|l| l.starts_with(usage)))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "HELP lists {listed:#?}"
    );
    assert!(
        listed.last().is_some_and(|l| l.starts_with(':')),
        "HELP ends with a note on labels: {listed:#?}"
    );
    client.expect_quiet();
}

/// QUIT gets `BYE quit :goodbye` and the server closes the connection, logged in or not.
#[test]
fn quit_says_goodbye_and_closes() {
    let server = TestServer::start();
    let mut anonymous = server.connect();
    anonymous.send("QUIT");
    anonymous.expect("BYE quit :goodbye");
    anonymous.expect_closed();

    let mut alice = server.login("alice");
    alice.join("general");
    alice.send("QUIT");
    alice.expect("BYE quit :goodbye");
    alice.expect_closed();
}

/// Commands after QUIT on the same write are not carried out.
#[test]
fn nothing_after_quit_is_carried_out() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    alice.send_raw(b"QUIT\nSEND general too late\n");
    alice.expect("BYE quit :goodbye");
    let mut bob = server.login("bob");
    bob.join("general");
    bob.send("HISTORY general");
    bob.expect_prefix("OK HISTORY general 0 seq=0 ");
}

/// A client that half-closes still gets its replies, even to a last line without `\n`.
#[test]
fn replies_are_delivered_after_the_client_hangs_up() {
    // This is what makes `printf 'PING x' | nc -N` work.
    let server = TestServer::start();
    let mut client = server.connect();
    client.send_raw(b"PING one\nPING two");
    client.shutdown_write();
    client.expect("PONG one");
    client.expect("PONG two");
    client.expect_closed();
}

/// STATS reports sessions, connections, users, rooms, messages and deliveries.
#[test]
fn stats_counts_what_the_server_holds() {
    let server = TestServer::start();
    let mut watcher = server.connect();
    let stats = watcher.stats();
    for key in [
        "sessions",
        "connections",
        "users",
        "rooms",
        "messages",
        "deliveries",
        "slow_consumers",
        "refused",
    ] {
        assert!(stats.contains_key(key), "STATS has no {key}: {stats:?}");
    }
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["sessions"], 0);

    let mut alice = server.login_device("alice", "laptop");
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    alice.join("general");
    phone.expect("JOINED general alice");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    phone.expect_introduced("general", "bob");
    alice.say("general", "hello");

    let stats = watcher.stats();
    let counts: Vec<(&str, u64)> = [
        "sessions",
        "connections",
        "users",
        "rooms",
        "messages",
        "deliveries",
        "slow_consumers",
        "refused",
    ]
    .into_iter()
    .map(|key| (key, stats[key]))
    .collect();
    assert_eq!(
        counts,
        [
            ("sessions", 3),
            ("connections", 4),
            ("users", 2),
            ("rooms", 1),
            ("messages", 1),
            ("deliveries", 3),
            ("slow_consumers", 0),
            ("refused", 0),
        ]
    );
}

/// A connection that does not LOGIN within `login_timeout` gets `BYE login-timeout`; others stay.
#[test]
fn login_timeout_closes_idle_connections() {
    let server = TestServer::with(|config| config.login_timeout = Duration::from_millis(300));
    let mut alice = server.login("alice");
    let mut idle = server.connect();
    idle.expect("BYE login-timeout :no LOGIN in time");
    idle.expect_closed();
    // alice connected before idle did, so her login deadline has passed too.
    alice.expect_quiet();
}

/// Commands before LOGIN do not extend the login deadline: PINGing forever still gets cut off.
#[test]
fn commands_do_not_extend_the_login_deadline() {
    let server = TestServer::with(|config| config.login_timeout = Duration::from_millis(300));
    let mut client = server.connect();
    for round in 0..100_000 {
        client.send(&format!("PING {round}"));
        let line = client.next_line();
        if line == "BYE login-timeout :no LOGIN in time" {
            client.expect_closed();
            return;
        }
        assert_eq!(line, format!("PONG {round}"));
    }
    client.fail("still connected after 100,000 PINGs");
}
