//! Edges of the line transport.

mod support;

use std::io::Write;
use std::thread;
use std::time::Instant;

use support::TestServer;

/// `--max-line` counts a line without its line end, so a line of exactly that many bytes is
/// accepted whether it ends with `\n` or `\r\n`, and one byte more is refused with either.
#[test]
fn a_line_of_exactly_max_line_bytes_is_accepted_with_either_line_end() {
    let max_line = chatd::Config::default().max_line;
    let server = TestServer::start();
    let mut client = server.login("pat");
    // A label, a padding tag the server ignores, and a command: `@l;k=xxx… PING z`.
    let line_of = |len: usize| {
        let (head, tail) = ("@l;k=", " PING z");
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    for end in ["\n", "\r\n"] {
        client.send_raw(format!("{}{end}", line_of(max_line)).as_bytes());
        client.expect("@l PONG z");
        client.send_raw(format!("{}{end}", line_of(max_line + 1)).as_bytes());
        client.expect_prefix("ERR line-too-long ");
    }
}

/// Blank lines are ignored and free: a client that sends 20 MB of `\n` costs the server a few
/// reads, not twenty million turns of the command loop, so its PING right after them is
/// answered promptly and other clients chat on meanwhile.
#[test]
fn a_flood_of_blank_lines_is_cheap() {
    const BLANK_BYTES: usize = 20 * 1024 * 1024;
    let server = TestServer::start();
    let mut blank = server.login("blank");
    let mut alice = server.login("alice");
    alice.join("lobby");
    let mut bob = server.login("bob");
    bob.join("lobby");
    alice.expect_introduced("lobby", "bob");

    let started = Instant::now();
    let mut stream = blank.stream().try_clone().expect("clone the socket");
    let flood = thread::spawn(move || {
        let chunk = vec![b'\n'; 64 * 1024];
        for _ in 0..BLANK_BYTES / chunk.len() {
            stream.write_all(&chunk).expect("write blank lines");
        }
        stream.write_all(b"\r\n\r\nPING x\n").expect("write PING");
    });
    // The room is served while the blank lines go in.
    for i in 0..20 {
        let body = format!("hello {i}");
        alice.say("lobby", &body);
        assert_eq!(bob.expect_msg().body, body);
    }
    // Within the support module's deadline from the start: before blank lines were skipped
    // in bulk, a debug build took far longer than that for 20 MB.
    blank.expect("PONG x");
    flood.join().expect("the flooding thread");
    eprintln!(
        "20 MB of blank lines, then PONG, in {:?}",
        started.elapsed()
    );
}
