//! Graceful shutdown: `ServerHandle::shutdown` says goodbye to every connection, waits for
//! their threads, and stops accepting.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Client, TestServer};

const GOODBYE: &str = "BYE server-shutdown :the server is stopping";

/// Reads to EOF: the goodbye must be the last line. Sessions end one by one during shutdown,
/// so a peer's `PRESENCE <user> offline` may come first; nothing else may.
fn expect_goodbye(client: &mut Client) {
    let lines = client.read_until_closed();
    let Some((last, before)) = lines.split_last() else {
        client.fail("closed without a goodbye");
    };
    if last != GOODBYE {
        client.fail(&format!("the last line was not {GOODBYE:?}"));
    }
    for line in before {
        let user = line.split(' ').nth(1).unwrap_or("");
        let shape = format!("PRESENCE {user} offline last_seen=<ts>");
        if support::matches_shape(line, &shape).is_err() {
            client.fail(&format!("unexpected {line:?} before the goodbye"));
        }
    }
}

/// `shutdown` sends every connection `BYE server-shutdown` then EOF, and returns true.
#[test]
fn shutdown_says_goodbye_to_every_connection() {
    // That includes sessions of one user's two devices and a connection that never logged in.
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    let mut phone = server.login_device("alice", "phone");
    let mut bob = server.login("bob");
    bob.join("general");
    alice.expect_introduced("general", "bob");
    phone.expect_introduced("general", "bob");
    let mut greeted = server.connect();
    greeted.expect_quiet();

    assert!(
        server.shutdown(),
        "some connection outlived the grace period"
    );
    for client in [&mut alice, &mut phone, &mut bob, &mut greeted] {
        expect_goodbye(client);
    }
}

/// A connection accepted just before shutdown gets the goodbye too (after the greeting, if any).
#[test]
fn shutdown_reaches_a_connection_that_was_just_accepted() {
    let server = TestServer::start();
    let mut fresh = Client::connect_raw(server.addr());
    let mut watcher = server.connect();
    // The watcher was accepted after `fresh`, so `fresh` has its threads by now.
    assert_eq!(watcher.stats()["connections"], 2);
    assert!(server.shutdown());
    let lines = fresh.read_until_closed();
    match &lines[..] {
        [bye] | [_, bye] if bye == GOODBYE => {}
        _ => fresh.fail("expected [greeting,] goodbye, EOF"),
    }
    if lines.len() == 2 {
        assert_eq!(lines[0], support::GREETING);
    }
    watcher.expect(GOODBYE);
    watcher.expect_closed();
}

/// Replies queued before shutdown are delivered ahead of the goodbye.
#[test]
fn queued_replies_are_flushed_before_the_goodbye() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    let mut burst = String::new();
    for i in 1..=100 {
        burst.push_str(&format!("SEND general m{i}\n"));
    }
    alice.send_raw(burst.as_bytes());
    // Once the 100th message is counted, its OK and MSG are queued for alice.
    let mut watcher = server.connect();
    watcher.wait_for_stat("messages", 100);
    assert!(server.shutdown());
    let rest = alice.read_until_closed();
    let (bye, replies) = rest.split_last().unwrap();
    assert_eq!(bye, GOODBYE);
    assert_eq!(replies.len(), 200);
    for (i, pair) in replies.chunks(2).enumerate() {
        let seq = i + 1;
        assert!(pair[0].starts_with(&format!("OK SEND general {seq} ")));
        assert!(pair[1].starts_with(&format!("MSG general {seq} ")));
        assert!(pair[1].ends_with(&format!(" alice m{seq}")));
    }
}

/// After shutdown nothing listens on the address any more.
#[test]
fn shutdown_stops_accepting() {
    let server = TestServer::start();
    let addr = server.addr();
    assert!(server.shutdown());
    assert!(
        TcpStream::connect(addr).is_err(),
        "something still accepts connections on {addr}"
    );
}

/// Dropping the handle shuts the server down too.
#[test]
fn dropping_the_server_shuts_it_down() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    drop(server);
    expect_goodbye(&mut alice);
}

/// Shuts down a server one of whose clients has stopped reading with its socket full (its
/// writer blocked in `write`, for up to the 10 s default write timeout); returns what
/// `shutdown` returned and how long it took.
fn shutdown_with_a_stalled_client() -> (bool, Duration) {
    let server = TestServer::start();
    let mut stalled = Client::connect_with_receive_buffer(server.addr(), 4096);
    stalled.login("stalled");
    stalled.join("flood");
    let mut sender = server.login("sender");
    sender.join("flood");
    stalled.expect_introduced("flood", "sender");
    // 4 MB: more than the kernel buffers between server and stalled client hold on loopback
    // (about 3 MB here), so the stalled connection's writer ends up blocked in `write`.
    let filler = "x".repeat(4000);
    for burst in 0..20 {
        let mut commands = String::new();
        for i in 1..=50 {
            commands.push_str(&format!("SEND flood {} {filler}\n", burst * 50 + i));
        }
        sender.send_raw(commands.as_bytes());
        for i in 1..=50 {
            let seq = burst * 50 + i;
            sender.expect_prefix(&format!("OK SEND flood {seq} "));
            assert_eq!(sender.expect_msg().seq, seq);
        }
    }
    let started = Instant::now();
    let finished = server.shutdown();
    (finished, started.elapsed())
}

/// Shutdown returns within 2 s even while a client has stopped reading with its socket full.
#[test]
fn shutdown_does_not_wait_for_a_stalled_client() {
    let (_, took) = shutdown_with_a_stalled_client();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

/// Shutdown ends every connection's threads, even one whose writer is blocked on a full socket.
#[test]
fn shutdown_ends_even_a_stalled_connection() {
    let (finished, took) = shutdown_with_a_stalled_client();
    assert!(
        finished,
        "shutdown gave up on the stalled connection after {took:?}"
    );
}
