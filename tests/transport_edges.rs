//! Edges of the line transport.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, TestServer};

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

/// Reads everything the server sends until EOF, no faster than `bytes_per_second` (a client
/// on a slow link), and gives up at `deadline`.
fn read_slowly_to_eof(mut stream: TcpStream, bytes_per_second: f64, deadline: Instant) -> Vec<u8> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no EOF in time; {} bytes read",
            received.len()
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset ends the stream too; the caller checks what came before it.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("read failed: {e}"),
        }
        // Pacing, not waiting for an event: this is how slowly the client reads.
        let due = Duration::from_secs_f64(received.len() as f64 / bytes_per_second);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            thread::sleep(ahead);
        }
    }
}

/// At shutdown, a client that had fallen behind (it stopped reading while its room flooded,
/// so its socket buffers are full and lines are queued behind them) and that reads again, even
/// slowly, gets `BYE server-shutdown` as its last line. The server does not try to flush a
/// backed-up queue within the grace: it drops it and says goodbye after what the socket
/// already holds.
#[test]
fn clients_that_fell_behind_get_the_goodbye_at_shutdown() {
    const STALLED: usize = 3;
    const MESSAGES: usize = 2000;
    // 2 MB/s: the 4 MB still queued per client would take 2 s, twice the polite grace.
    const READ_RATE: f64 = 2.0 * 1024.0 * 1024.0;
    // Room for what the flood leaves queued behind the socket buffers (about 3 MB on
    // loopback), so nobody is cut off as a slow consumer before the shutdown.
    let server = TestServer::with(|config| config.channel_capacity = 4096);
    let mut sender = server.login("sender");
    sender.join("flood");
    let stalled: Vec<Client> = (0..STALLED)
        .map(|i| {
            let mut client = Client::connect_with_receive_buffer(server.addr(), 4096);
            client.login(&format!("stalled{i}"));
            client.join("flood");
            sender.expect_introduced("flood", &format!("stalled{i}"));
            client
        })
        .collect();
    // 8 MB to each stalled client, who reads none of it.
    let filler = "x".repeat(4000);
    for burst in 0..MESSAGES / 50 {
        let mut commands = String::new();
        for i in 1..=50 {
            commands.push_str(&format!("SEND flood {} {filler}\n", burst * 50 + i));
        }
        sender.send_raw(commands.as_bytes());
        for i in 1..=50 {
            let seq = (burst * 50 + i) as u64;
            sender.expect_prefix(&format!("OK SEND flood {seq} "));
            assert_eq!(sender.expect_msg().seq, seq);
        }
    }

    let stopping = thread::spawn(move || server.shutdown());
    let deadline = Instant::now() + Duration::from_secs(20);
    let readers: Vec<_> = stalled
        .iter()
        .map(|client| {
            let stream = client.stream().try_clone().expect("clone the socket");
            thread::spawn(move || read_slowly_to_eof(stream, READ_RATE, deadline))
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let received = reader.join().expect("reader thread");
        let text = String::from_utf8_lossy(&received);
        let last = text
            .trim_end_matches('\n')
            .rsplit('\n')
            .next()
            .unwrap_or("");
        assert_eq!(
            last,
            "BYE server-shutdown :the server is stopping",
            "stalled{i}: the last line after {} bytes",
            received.len()
        );
    }
    stopping.join().expect("shutdown thread");
    drop(stalled);
}
