//! Every error a client can cause: one `ERR <code> :<text>` line, and the connection carries
//! on as if the bad line had never been sent. (`server-full` closes, by design.)

mod support;

use support::{Client, TestServer};

/// A logged-in client that is a member of `general`.
fn member(server: &TestServer, name: &str) -> Client {
    let mut client = server.login(name);
    client.join("general");
    client
}

/// Sends `line`, expects exactly `error`, then proves the connection still works.
fn rejects(client: &mut Client, line: &str, error: &str) {
    client.send(line);
    client.expect(error);
    client.expect_quiet();
}

/// An unknown verb gets the normative `unknown-command` text, naming the verb as sent.
#[test]
fn unknown_command() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "FROB",
        "ERR unknown-command :FROB is not a command; type HELP",
    );
    rejects(
        &mut client,
        "frob a b c",
        "ERR unknown-command :frob is not a command; type HELP",
    );
    client.login("alice");
    rejects(
        &mut client,
        "FROB",
        "ERR unknown-command :FROB is not a command; type HELP",
    );
}

/// Input quoted in an error has control characters replaced by `?` and is cut at 40 characters.
#[test]
fn errors_quote_input_safely() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "FR\u{1b}[2JOB",
        "ERR unknown-command :FR?[2JOB is not a command; type HELP",
    );
    rejects(
        &mut client,
        &"V".repeat(50),
        &format!(
            "ERR unknown-command :{}... is not a command; type HELP",
            "V".repeat(40)
        ),
    );
}

/// Error replies carry the request's label like any other direct reply.
#[test]
fn errors_carry_the_label() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "@q7 FROB",
        "@q7 ERR unknown-command :FROB is not a command; type HELP",
    );
    rejects(
        &mut client,
        "@q8 JOIN general",
        "@q8 ERR not-logged-in :LOGIN <user> first",
    );
    rejects(
        &mut client,
        "@q9 JOIN",
        "@q9 ERR missing-argument :usage: JOIN <room>",
    );
    client.login("alice");
    rejects(
        &mut client,
        "@q10 WHO nowhere",
        "@q10 ERR no-such-room :there is no room nowhere",
    );
    rejects(
        &mut client,
        "@q11 SEND general \u{1b}[2J",
        "@q11 ERR control-character :control characters are not allowed in a message body (tab is)",
    );
}

/// A command without its required arguments gets `missing-argument` quoting its usage.
#[test]
fn missing_argument() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "LOGIN",
        "ERR missing-argument :usage: LOGIN <user> [device=<id>] [password=<password>]",
    );
    client.login("alice");
    for (line, usage) in [
        ("JOIN", "JOIN <room>"),
        ("LEAVE", "LEAVE <room>"),
        ("SEND", "SEND <room> <body>"),
        ("SEND general", "SEND <room> <body>"),
        ("SEND general    ", "SEND <room> <body>"),
        ("DM", "DM <user> <body>"),
        ("DM bob", "DM <user> <body>"),
        ("WHO", "WHO <room>"),
        ("HISTORY", "HISTORY <room> [<limit>] [before=<seq>]"),
    ] {
        rejects(
            &mut client,
            line,
            &format!("ERR missing-argument :usage: {usage}"),
        );
    }
    rejects(
        &mut client,
        "@lonely",
        "@lonely ERR missing-argument :a command must follow the tags",
    );
}

/// Extra, misplaced or malformed arguments get `bad-argument`.
#[test]
fn bad_argument() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "LOGIN alice phone",
        "ERR bad-argument :unexpected option; usage: LOGIN <user> [device=<id>] [password=<password>]",
    );
    client.login("alice");
    client.join("general");
    for (line, error) in [
        (
            "JOIN general random",
            "unexpected random; usage: JOIN <room>",
        ),
        ("ROOMS now", "unexpected now; usage: ROOMS"),
        ("QUIT now", "unexpected now; usage: QUIT"),
        ("PING a b", "unexpected b; usage: PING [<token>]"),
        (
            "HISTORY general ten",
            "limit must be a whole number; got ten",
        ),
        ("HISTORY general -1", "limit must be a whole number; got -1"),
        ("HISTORY general 0", "limit must be at least 1"),
        (
            "HISTORY general before=x",
            "before must be a whole number; got x",
        ),
        (
            "HISTORY general 5 6",
            "unexpected 6; usage: HISTORY <room> [<limit>] [before=<seq>]",
        ),
        (
            "HISTORY general before=3 5",
            "unexpected 5; usage: HISTORY <room> [<limit>] [before=<seq>]",
        ),
        ("DM alice talking to myself", "you cannot DM yourself"),
    ] {
        rejects(&mut client, line, &format!("ERR bad-argument :{error}"));
    }
    rejects(
        &mut client,
        &format!("PING {}", "t".repeat(65)),
        "ERR bad-argument :a PING token is 1-64 printable characters",
    );
}

/// A malformed `@` tag block gets `bad-tag` (the label could not be read, so none is echoed).
#[test]
fn bad_tag() {
    let server = TestServer::start();
    let mut client = server.connect();
    rejects(
        &mut client,
        "@bad!label PING",
        "ERR bad-tag :a label is 1-32 of A-Z a-z 0-9 . _ -; got bad!label",
    );
    rejects(
        &mut client,
        &format!("@{} PING", "x".repeat(33)),
        &format!(
            "ERR bad-tag :a label is 1-32 of A-Z a-z 0-9 . _ -; got {}",
            "x".repeat(33)
        ),
    );
    rejects(
        &mut client,
        "@a;b PING",
        "ERR bad-tag :only one label per command",
    );
    rejects(
        &mut client,
        "@x;cid=no!pe PING",
        "ERR bad-tag :a cid is 1-64 of A-Z a-z 0-9 . _ -",
    );
    rejects(
        &mut client,
        "@ PING",
        "ERR bad-tag :a label is 1-32 of A-Z a-z 0-9 . _ -; got ",
    );
}

/// User, device and room names outside 1-32 of `[A-Za-z0-9._-]` get `invalid-name`.
#[test]
fn invalid_name() {
    let server = TestServer::start();
    let mut client = server.connect();
    let rule = "(1-32 of A-Z a-z 0-9 . _ -)";
    rejects(
        &mut client,
        "LOGIN al!ce",
        &format!("ERR invalid-name :al!ce is not a valid user name {rule}"),
    );
    let long = "a".repeat(33);
    rejects(
        &mut client,
        &format!("LOGIN {long}"),
        &format!("ERR invalid-name :{long} is not a valid user name {rule}"),
    );
    rejects(
        &mut client,
        "LOGIN dm:a:b",
        &format!("ERR invalid-name :dm:a:b is not a valid user name {rule}"),
    );
    rejects(
        &mut client,
        "LOGIN alice device=my/phone",
        &format!("ERR invalid-name :my/phone is not a valid device name {rule}"),
    );
    client.login(&"a".repeat(32));
    rejects(
        &mut client,
        "JOIN général",
        &format!("ERR invalid-name :général is not a valid room name {rule}"),
    );
    rejects(
        &mut client,
        "JOIN dm:bob:alice",
        &format!("ERR invalid-name :dm:bob:alice is not a valid direct-message room name {rule}"),
    );
    rejects(
        &mut client,
        "DM b*b hi",
        &format!("ERR invalid-name :b*b is not a valid user name {rule}"),
    );
}

/// A line that is not UTF-8 gets `invalid-utf8`, however far into the line the bad byte is.
#[test]
fn invalid_utf8() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    let mut bob = member(&server, "bob");
    alice.expect_introduced("general", "bob");
    for raw in [
        &b"SEND general caf\xe9\n"[..],
        b"SEND general \xff\xfe\n",
        b"\xc3\x28 PING\n",
        b"SEND general ok \xf0\x9f\x8e\n",
    ] {
        alice.send_raw(raw);
        alice.expect("ERR invalid-utf8 :the line is not valid UTF-8");
        alice.expect_quiet();
    }
    bob.expect_quiet();
    alice.say("general", "still here");
}

/// Control characters in a body (they would reach terminals) get `control-character`; tab is fine.
#[test]
fn control_character() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    let mut bob = member(&server, "bob");
    alice.expect_introduced("general", "bob");
    let error =
        "ERR control-character :control characters are not allowed in a message body (tab is)";
    for body in [
        "\u{1b}[2J\u{1b}[Hyou have been hacked",
        "nul\u{0}byte",
        "bell\u{7}",
        "carriage\rreturn in the middle",
        "c1 control \u{9b}31m",
        "delete\u{7f}",
    ] {
        rejects(&mut alice, &format!("SEND general {body}"), error);
    }
    rejects(&mut alice, "DM bob \u{1b}]0;title\u{7}", error);
    bob.expect_quiet();
    let msg = alice.say("general", "tab\tis\tfine");
    bob.expect(&msg.line());
}

/// A line over 8 KiB gets `line-too-long`, the rest of it is discarded, and the next line works.
#[test]
fn line_too_long() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    let mut line = b"SEND general ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 100_000));
    line.extend_from_slice(b"\nPING next\n");
    alice.send_raw(&line);
    alice.expect("ERR line-too-long :lines are at most 8192 bytes; the line was discarded");
    alice.expect("PONG next");

    // Exactly 8192 bytes is still a line (here it is a body that is too long, not a line).
    let body = "y".repeat(8192 - "SEND general ".len());
    alice.send(&format!("SEND general {body}"));
    alice.expect_prefix("ERR body-too-long :");
    let body = "y".repeat(8193 - "SEND general ".len());
    rejects(
        &mut alice,
        &format!("SEND general {body}"),
        "ERR line-too-long :lines are at most 8192 bytes; the line was discarded",
    );
    alice.say("general", "after all that");
}

/// A body over `max_body` (4 KiB) gets `body-too-long`; exactly 4 KiB is accepted.
#[test]
fn body_too_long() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    let mut bob = member(&server, "bob");
    alice.expect_introduced("general", "bob");
    rejects(
        &mut alice,
        &format!("SEND general {}", "z".repeat(4097)),
        "ERR body-too-long :a message body is at most 4096 bytes; this one is 4097",
    );
    rejects(
        &mut alice,
        &format!("DM bob {}", "é".repeat(2049)),
        "ERR body-too-long :a message body is at most 4096 bytes; this one is 4098",
    );
    bob.expect_quiet();
    let msg = alice.say("general", &"z".repeat(4096));
    bob.expect(&msg.line());
}

/// A readable label is echoed on the `invalid-utf8` error like on any other direct reply.
#[test]
fn invalid_utf8_keeps_a_readable_label() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    alice.send_raw(b"@q1 SEND general caf\xe9\n");
    alice.expect("@q1 ERR invalid-utf8 :the line is not valid UTF-8");
    alice.expect_quiet();
}

/// Commands that act as a user get `not-logged-in` before LOGIN.
#[test]
fn not_logged_in() {
    let server = TestServer::start();
    let mut client = server.connect();
    for line in [
        "JOIN general",
        "LEAVE general",
        "SEND general hi",
        "DM bob hi",
        "WHO general",
        "ROOMS",
        "HISTORY general",
    ] {
        rejects(&mut client, line, "ERR not-logged-in :LOGIN <user> first");
    }
    client.login("alice");
    client.join("general");
}

/// A second LOGIN on a logged-in connection gets `already-logged-in`.
#[test]
fn already_logged_in() {
    let server = TestServer::start();
    let mut client = member(&server, "alice");
    rejects(
        &mut client,
        "LOGIN bob",
        "ERR already-logged-in :this connection is already logged in as alice",
    );
    rejects(
        &mut client,
        "LOGIN alice device=phone",
        "ERR already-logged-in :this connection is already logged in as alice",
    );
    client.say("general", "still alice");
}

/// Naming a room that does not exist gets `no-such-room`.
#[test]
fn no_such_room() {
    let server = TestServer::start();
    let mut client = server.login("alice");
    for line in [
        "LEAVE nowhere",
        "SEND nowhere hi",
        "WHO nowhere",
        "HISTORY nowhere",
    ] {
        rejects(
            &mut client,
            line,
            "ERR no-such-room :there is no room nowhere",
        );
    }
    rejects(
        &mut client,
        "JOIN dm:alice:bob",
        "ERR no-such-room :there is no room dm:alice:bob",
    );
}

/// A DM to a user who has never logged in gets `no-such-user`.
#[test]
fn no_such_user() {
    let server = TestServer::start();
    let mut client = server.login("alice");
    rejects(
        &mut client,
        "DM nobody hello?",
        "ERR no-such-user :nobody called nobody has logged in",
    );
}

/// Acting in a room one is not a member of gets `not-member`.
#[test]
fn not_member() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice");
    let mut bob = server.login("bob");
    rejects(
        &mut bob,
        "SEND general hi",
        "ERR not-member :you are not a member of general; JOIN it first",
    );
    rejects(
        &mut bob,
        "LEAVE general",
        "ERR not-member :you are not a member of general; JOIN it first",
    );
    rejects(
        &mut bob,
        "HISTORY general",
        "ERR not-member :only members can read general; JOIN it first",
    );
    alice.expect_quiet();
}

/// Leaving a direct conversation gets `not-permitted`; it stays in place.
#[test]
fn not_permitted() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send("DM bob hi");
    alice.expect_prefix("OK DM bob dm:alice:bob 1 ");
    alice.expect_prefix("MSG dm:alice:bob 1 ");
    bob.expect_prefix("MSG dm:alice:bob 1 ");
    rejects(
        &mut bob,
        "LEAVE dm:alice:bob",
        "ERR not-permitted :a direct conversation cannot be left",
    );
    alice.expect_quiet();
    bob.send("ROOMS");
    bob.expect_prefix("ROOM dm:alice:bob seq=1 ");
    bob.expect("OK ROOMS 1");
}

/// Over `max_sessions` a connection gets `ERR server-full` then EOF, and is counted as refused.
#[test]
fn server_full() {
    // Once a place is free, connections are accepted again.
    let server = TestServer::with(|config| config.max_sessions = Some(1));
    let mut first = server.login("alice");
    let mut refused = Client::connect_raw(server.addr());
    refused.expect("ERR server-full :the server is at capacity; try again later");
    refused.expect_closed();
    let stats = first.stats();
    assert_eq!((stats["refused"], stats["connections"]), (1, 1));

    first.send("QUIT");
    first.expect("BYE quit :goodbye");
    first.expect_closed();
    // Hang up too, as a client does on EOF: the server keeps a closed connection's place
    // (for at most a second) until the client has hung up.
    drop(first);
    // The place frees when the first connection's threads have ended, which nobody is told;
    // so retry, a bounded number of times, until the greeting comes instead of the refusal.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    for attempt in 0.. {
        let mut next = Client::connect_raw(server.addr());
        let line = next.next_line();
        if line == support::GREETING {
            next.login("bob");
            return;
        }
        assert_eq!(
            line,
            "ERR server-full :the server is at capacity; try again later"
        );
        next.expect_closed();
        assert!(
            attempt < 10_000 && std::time::Instant::now() < deadline,
            "the place of a closed connection was never freed"
        );
    }
}
