//! The places where a client written from protocol.md alone met a server that did something
//! else (issue 19), each pinned to what the document now says.

mod support;

use chatd::config::RateLimit;
use support::{field, TestServer};

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
    let line = client.expect_prefix("@i OK INFO proto=2 store=");
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
    assert!(store == "sqlite" || store == "memory", "{line}");

    let unlimited = TestServer::start();
    let mut client = unlimited.login("alice");
    client.send("INFO");
    let line = client.expect_prefix("OK INFO proto=2 ");
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
