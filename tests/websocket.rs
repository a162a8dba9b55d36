//! The HTTP front door and WebSocket sessions, over real sockets: the handshake and its
//! refusals, the framing of protocol.md ("WebSocket"), hostile frames and requests, and a
//! WebSocket session under the same limits as a TCP one. The well-behaved client is
//! `tungstenite` (an independent implementation of RFC 6455); hostile ones write bytes.

mod support;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chatd::stats::Stats;
use support::{TestServer, DEADLINE, GREETING};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A server with its HTTP listener on an ephemeral port.
fn server_with(configure: impl FnOnce(&mut chatd::Config)) -> (TestServer, SocketAddr) {
    let server = TestServer::with(|config| {
        config.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(config);
    });
    let http = server
        .handle()
        .http_addr()
        .expect("the HTTP listener is on");
    (server, http)
}

fn server() -> (TestServer, SocketAddr) {
    server_with(|_| {})
}

/// A WebSocket client that reads protocol lines, each read bounded by [`DEADLINE`].
struct Ws {
    socket: WebSocket<TcpStream>,
    lines: VecDeque<String>,
    /// How many text messages have arrived (to check how lines are framed).
    messages: usize,
}

impl Ws {
    /// Connects to `/ws` (with `origin`, if any) and reads the greeting.
    fn connect_with(http: SocketAddr, origin: Option<&str>) -> Ws {
        let mut request = format!("ws://{http}/ws").into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let stream = TcpStream::connect(http).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let (socket, _response) = tungstenite::client(request, stream).expect("handshake");
        let mut ws = Ws {
            socket,
            lines: VecDeque::new(),
            messages: 0,
        };
        ws.expect(GREETING);
        ws
    }

    fn connect(http: SocketAddr) -> Ws {
        Ws::connect_with(http, None)
    }

    fn login(http: SocketAddr, name: &str) -> Ws {
        let mut ws = Ws::connect(http);
        ws.send(&format!("LOGIN {name}"));
        ws.expect(&format!("OK LOGIN {name}"));
        ws
    }

    /// Sends one text message (one or more lines).
    fn send(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .expect("send a message");
    }

    /// The next message that is not a line: a pong, a close, or the end.
    fn next_message(&mut self) -> Option<Message> {
        match self.socket.read() {
            Ok(message) => Some(message),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => None,
            Err(e) => panic!("reading the WebSocket: {e}"),
        }
    }

    fn next_line(&mut self) -> String {
        let deadline = Instant::now() + DEADLINE;
        while self.lines.is_empty() {
            assert!(Instant::now() < deadline, "no line within {DEADLINE:?}");
            match self.next_message() {
                Some(Message::Text(text)) => {
                    self.messages += 1;
                    assert!(text.ends_with('\n'), "a message of whole lines: {text:?}");
                    self.lines
                        .extend(text.lines().map(str::to_owned).collect::<Vec<_>>());
                }
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a line, got {other:?}"),
            }
        }
        self.lines.pop_front().unwrap()
    }

    fn expect(&mut self, expected: &str) {
        assert_eq!(self.next_line(), expected);
    }

    fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.next_line();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}..., got {line:?}"
        );
        line
    }

    /// Reads until the server's close frame; returns its code.
    fn expect_close(&mut self) -> Option<CloseCode> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no close within {DEADLINE:?}");
            match self.next_message() {
                Some(Message::Close(frame)) => return frame.map(|f| f.code),
                Some(Message::Text(text)) => self.lines.extend(text.lines().map(str::to_owned)),
                Some(_) => {}
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// Sends a raw request and reads the whole response (the server closes after it).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).expect("write the request");
    read_to_end(&mut stream)
}

fn read_to_end(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut chunk = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "the response did not end");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn upgrade(host: SocketAddr, extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A WebSocket opened by hand, for sending frames no library would.
fn raw_ws(http: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(http).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(&upgrade(http, "")).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .expect("the handshake response");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert_eq!(status(&head), 101, "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    stream
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close frame; returns the text received and the close code.
fn read_until_close(stream: &mut TcpStream) -> (String, Option<u16>) {
    let mut text = String::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "no close frame");
        let mut head = [0u8; 2];
        if stream.read_exact(&mut head).is_err() {
            panic!("the connection ended without a close frame; text so far {text:?}");
        }
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).unwrap();
                u16::from_be_bytes(len) as usize
            }
            127 => {
                let mut len = [0u8; 8];
                stream.read_exact(&mut len).unwrap();
                u64::from_be_bytes(len) as usize
            }
            short => short as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        match head[0] & 0x0F {
            0x1 => text.push_str(&String::from_utf8(payload).unwrap()),
            0x8 => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                return (text, code);
            }
            _ => {}
        }
    }
}

/// The handshake answers 101 with the accept key, the `chatd` subprotocol when asked, and
/// the session starts with the same greeting as over TCP.
#[test]
fn handshake_and_a_session() {
    let (_server, http_addr) = server();
    let mut request = format!("ws://{http_addr}/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "chatd".parse().unwrap());
    let stream = TcpStream::connect(http_addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (mut socket, response) = tungstenite::client(request, stream).expect("handshake");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "chatd"
    );
    match socket.read().unwrap() {
        Message::Text(text) => assert_eq!(text.as_str(), format!("{GREETING}\n")),
        other => panic!("expected the greeting, got {other:?}"),
    }
}

/// A message may carry several lines, separated by `\n`; its end ends its last line; the
/// server's messages carry whole lines, each ending with `\n`.
#[test]
fn framing_several_lines_per_message_and_one_per_message() {
    let (_server, http_addr) = server();
    let mut ws = Ws::connect(http_addr);
    ws.send("LOGIN alice\nPING one\r\nPING two");
    ws.expect("OK LOGIN alice");
    ws.expect("PONG one");
    ws.expect("PONG two");
    ws.send("PING three\n");
    ws.expect("PONG three");
    // An empty message, like a blank line, is ignored.
    ws.send("");
    ws.send("PING four");
    ws.expect("PONG four");
    // A line too long for --max-line is refused as over TCP, and the session goes on.
    ws.send(&format!("@big PING {}", "x".repeat(9000)));
    ws.expect_prefix("@big ERR line-too-long ");
    ws.send("PING five");
    ws.expect("PONG five");
}

/// A fragmented message is one message: its fragments join into its lines.
#[test]
fn fragments_join_and_a_ping_between_them_is_answered() {
    let (_server, http_addr) = server();
    let mut stream = raw_ws(http_addr);
    let mut bytes = client_frame(0x01, b"LOGIN al");
    bytes.extend(client_frame(0x89, b"are you there"));
    bytes.extend(client_frame(0x80, b"ice\nPING x"));
    bytes.extend(client_frame(0x88, &1000u16.to_be_bytes()));
    stream.write_all(&bytes).unwrap();
    let mut everything = Vec::new();
    let _ = stream.read_to_end(&mut everything);
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains("OK LOGIN alice\n"), "{text:?}");
    assert!(text.contains("PONG x\n"), "{text:?}");
    assert!(
        text.contains("are you there"),
        "the pong echoes the ping: {text:?}"
    );
}

/// A WebSocket user and a TCP user chat in one room: one protocol, two transports.
#[test]
fn a_mixed_room_with_a_tcp_user() {
    let (server, http_addr) = server();
    let mut web = Ws::login(http_addr, "alice");
    web.send("JOIN lobby");
    web.expect_prefix("OK JOIN lobby ");
    let mut tcp = server.login("bob");
    tcp.join("lobby");
    web.expect_prefix("PRESENCE bob online");
    web.expect("JOINED lobby bob");
    web.send("@s1;cid=c1 SEND lobby hello from the browser");
    web.expect_prefix("@s1 OK SEND lobby 1 ");
    let msg = web.expect_prefix("MSG lobby 1 ");
    assert!(msg.ends_with(" alice hello from the browser"), "{msg}");
    let heard = tcp.expect_msg();
    assert_eq!(
        (heard.sender.as_str(), heard.body.as_str()),
        ("alice", "hello from the browser")
    );
    let said = tcp.say("lobby", "hello from nc");
    let line = web.expect_prefix("MSG lobby 2 ");
    assert!(line.ends_with(" bob hello from nc"), "{line}");
    assert_eq!(said.seq, 2);
}

/// Pings are answered with pongs carrying the same payload, and a close from the client is
/// echoed with its code before the server closes.
#[test]
fn ping_pong_and_the_close_handshake() {
    let (_server, http_addr) = server();
    let mut ws = Ws::login(http_addr, "alice");
    ws.socket
        .send(Message::Ping(b"tick".to_vec().into()))
        .unwrap();
    match ws.next_message() {
        Some(Message::Pong(payload)) => assert_eq!(&payload[..], b"tick"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.socket.close(None).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline);
        match ws.socket.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close handshake: {e}"),
        }
    }
}

/// QUIT ends with `BYE quit` in a text message and a normal close frame.
#[test]
fn quit_says_bye_and_closes_normally() {
    let (_server, http_addr) = server();
    let mut ws = Ws::login(http_addr, "alice");
    ws.send("@q QUIT");
    assert_eq!(ws.expect_close(), Some(CloseCode::Normal));
    assert_eq!(
        ws.lines.pop_front().as_deref(),
        Some("@q BYE quit :goodbye")
    );
}

/// Frames that break RFC 6455 or the framing rule get a close frame with the code that says
/// why, and the session ends without carrying out the unfinished line.
#[test]
fn hostile_frames_get_a_close_code() {
    let (server, http_addr) = server();
    let mut big = client_frame(0x81, &vec![b'a'; 70_000]);
    big.truncate(40_000); // the header alone must be enough to refuse it
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversize message", big, 1009),
        ("binary message", client_frame(0x82, b"LOGIN x"), 1003),
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved bits", client_frame(0xF1, b"PING"), 1002),
        ("unknown opcode", client_frame(0x85, b"PING"), 1002),
        ("stray continuation", client_frame(0x80, b"PING"), 1002),
        ("long ping", client_frame(0x89, &[0; 126]), 1002),
        ("fragmented ping", client_frame(0x09, b"x"), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut stream = raw_ws(http_addr);
        stream.write_all(&bytes).unwrap();
        let (text, got) = read_until_close(&mut stream);
        // The greeting may be dropped: a connection cut for a protocol error flushes nothing.
        assert!(
            text.is_empty() || text == format!("{GREETING}\n"),
            "{what}: {text:?}"
        );
        assert_eq!(got, Some(code), "{what}");
    }
    // The half-sent SEND of a connection cut by a protocol error was not carried out.
    let mut stream = raw_ws(http_addr);
    let mut bytes = client_frame(0x81, b"LOGIN alice\nJOIN r\nSEND r whole");
    bytes.extend(client_frame(0x01, b"SEND r half"));
    bytes.extend(client_frame(0x82, b"x"));
    stream.write_all(&bytes).unwrap();
    let (text, code) = read_until_close(&mut stream);
    assert_eq!(code, Some(1003), "{text}");
    let mut tcp = server.login("bob");
    tcp.join("r");
    tcp.send("HISTORY r");
    let msg = tcp.expect_msg();
    assert_eq!(msg.body, "whole");
    tcp.expect_prefix("OK HISTORY r 1 ");
}

/// Every refused request gets a status that says why, and nothing is upgraded.
#[test]
fn refused_requests_get_a_clear_status() {
    let (_server, http_addr) = server();
    let host = http_addr;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            "POST to the page",
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
        ),
        ("garbage", b"HELLO THERE\r\n\r\n".to_vec(), 400),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            400,
        ),
        ("HTTP/3.0", b"GET / HTTP/3.0\r\n\r\n".to_vec(), 505),
        (
            "absolute target",
            b"GET http://x/ HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "plain GET of /ws",
            b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            426,
        ),
        ("wrong version", upgrade(host, "").replace_version(), 426),
        (
            "bad key",
            String::from_utf8(upgrade(host, ""))
                .unwrap()
                .replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")
                .into_bytes(),
            400,
        ),
        (
            "another site's page",
            upgrade(host, "Origin: http://evil.example\r\n"),
            403,
        ),
        (
            "the same host on another port",
            upgrade(host, "Origin: http://127.0.0.1:1\r\n"),
            403,
        ),
        (
            "HTTP/1.0 upgrade",
            String::from_utf8(upgrade(host, ""))
                .unwrap()
                .replace("HTTP/1.1", "HTTP/1.0")
                .into_bytes(),
            400,
        ),
        (
            "head too large",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(9000)
            )
            .into_bytes(),
            431,
        ),
    ];
    for (what, request, expected) in cases {
        let response = http(http_addr, &request);
        assert_eq!(status(&response), expected, "{what}: {response}");
        assert!(
            response.contains("X-Content-Type-Options: nosniff\r\n"),
            "{what}"
        );
        assert!(!response.contains("Sec-WebSocket-Accept"), "{what}");
    }
    // The page's own origin is let in.
    let own = format!("http://{http_addr}");
    let mut ws = Ws::connect_with(http_addr, Some(&own));
    ws.send("PING ok");
    ws.expect("PONG ok");
}

trait ReplaceVersion {
    fn replace_version(self) -> Vec<u8>;
}

impl ReplaceVersion for Vec<u8> {
    fn replace_version(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
            .into_bytes()
    }
}

/// `--http-origin` replaces the default: only the listed origins' pages get in.
#[test]
fn configured_origins_replace_the_default() {
    let (_server, http_addr) = server_with(|config| {
        config.http_origins = vec!["https://chat.example.org".to_owned()];
    });
    let own = format!("Origin: http://{http_addr}\r\n");
    assert_eq!(status(&http(http_addr, &upgrade(http_addr, &own))), 403);
    Ws::connect_with(http_addr, Some("https://chat.example.org"));
}

/// A request head trickled in, or never finished, is cut off after the header timeout
/// with 408: slow loris on HTTP.
#[test]
fn a_slow_request_head_times_out() {
    let (_server, http_addr) = server_with(|config| {
        config.http_header_timeout = Duration::from_secs(1);
    });
    let mut stream = TcpStream::connect(http_addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    for byte in b"GET / HTTP/1.1\r\nHost" {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let response = read_to_end(&mut stream);
    assert_eq!(status(&response), 408, "{response}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The page, its script and its style are served with a strict policy: no inline script,
/// nothing from elsewhere.
#[test]
fn the_web_client_is_served_with_a_strict_policy() {
    let (_server, http_addr) = server();
    let page = http(http_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&page), 200);
    assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(page.contains("Content-Security-Policy: default-src 'none'; script-src 'self';"));
    assert!(page.contains("X-Content-Type-Options: nosniff\r\n"));
    let body = page.split_once("\r\n\r\n").unwrap().1;
    assert!(body.contains("<script src=\"/app.js\""));
    assert!(!body.contains("<script>"), "no inline script");
    for (path, kind) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let response = http(
            http_addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(status(&response), 200, "{path}");
        assert!(
            response.contains(&format!("Content-Type: {kind}")),
            "{path}"
        );
        let body = response.split_once("\r\n\r\n").unwrap().1;
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} links out"
        );
    }
    let head = http(http_addr, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&head), 200);
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body");
}

/// A WebSocket reader that stops reading is a slow consumer like a TCP one: disconnected
/// with `BYE slow-consumer`, while the room and its TCP member carry on at full speed.
#[test]
fn a_slow_websocket_consumer_is_disconnected_without_stalling_the_room() {
    let (server, http_addr) = server_with(|config| {
        config.channel_capacity = 64;
        config.write_timeout = Duration::from_secs(1);
        // No offline announcement in the middle of the fast user's replies.
        config.presence_grace = Duration::from_secs(3600);
    });
    let mut slow = Ws::login(http_addr, "slow");
    slow.send("JOIN busy");
    slow.expect_prefix("OK JOIN busy ");
    let mut fast = server.login("fast");
    fast.join("busy");
    let body = "x".repeat(2000);
    let started = Instant::now();
    let mut sent = 0;
    while Stats::get(&server.handle().server().stats.slow_consumers) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20) && sent < 20_000,
            "the WebSocket reader was never cut off ({sent} sent)"
        );
        fast.say("busy", &body);
        sent += 1;
    }
    // The room did not wait for the slow reader: its last send was as quick as the first.
    let before = Instant::now();
    fast.say("busy", "still here");
    assert!(before.elapsed() < Duration::from_secs(1));
    // The slow reader, reading at last, finds the goodbye with its resume cursors.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no BYE slow-consumer");
        let line = slow.next_line();
        if line.starts_with("BYE slow-consumer busy=") {
            break;
        }
    }
}

/// The limits of a TCP session hold for a WebSocket one: the login timeout, the line timeout
/// (a frame trickled in is a line in progress) and the command rate limit.
#[test]
fn a_websocket_session_has_the_limits_of_a_tcp_one() {
    let (_server, http_addr) = server_with(|config| {
        config.login_timeout = Duration::from_secs(1);
        config.line_timeout = Duration::from_secs(1);
        config.rate_limit = Some(chatd::config::RateLimit {
            burst: 3,
            per_second: 1.0,
            flood_refusals: 50,
        });
    });
    let mut idle = Ws::connect(http_addr);
    idle.expect_prefix("BYE login-timeout ");
    assert_eq!(idle.expect_close(), Some(CloseCode::Normal));

    let mut trickle = raw_ws(http_addr);
    let frame = client_frame(0x81, b"PING slowly");
    trickle.write_all(&frame[..9]).unwrap();
    let (text, code) = read_until_close(&mut trickle);
    assert!(
        text.contains("BYE login-timeout") || text.contains("BYE line-timeout"),
        "{text}"
    );
    assert_eq!(code, Some(1000));

    let mut eager = Ws::connect(http_addr);
    eager.send("PING 1\nPING 2\nPING 3\nPING 4");
    eager.expect("PONG 1");
    eager.expect("PONG 2");
    eager.expect("PONG 3");
    eager.expect_prefix("ERR rate-limited :retry in ");
}

/// A logged-in session that starts a frame and never finishes it is cut off by the line
/// timeout, as a TCP session trickling a line is.
#[test]
fn a_frame_trickled_after_login_meets_the_line_timeout() {
    let (_server, http_addr) = server_with(|config| {
        config.line_timeout = Duration::from_secs(1);
    });
    let mut stream = raw_ws(http_addr);
    stream
        .write_all(&client_frame(0x81, b"LOGIN alice"))
        .unwrap();
    let frame = client_frame(0x81, b"PING never finished");
    stream.write_all(&frame[..10]).unwrap();
    let (text, code) = read_until_close(&mut stream);
    assert!(text.contains("OK LOGIN alice\n"), "{text}");
    assert!(text.contains("BYE line-timeout "), "{text}");
    assert_eq!(code, Some(1000));
}

/// The door counts WebSocket sessions with TCP ones: over the session ceiling the HTTP
/// listener answers 503, over the address's share 429.
#[test]
fn the_door_refuses_with_503_and_429() {
    let (server, http_addr) = server_with(|config| config.max_sessions = Some(1));
    let _tcp = server.connect();
    let response = http(http_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&response), 503, "{response}");

    let (_server, http_addr) = server_with(|config| {
        config.max_per_ip = Some(1);
        config.per_ip_loopback = true;
    });
    let _ws = Ws::connect(http_addr);
    let response = http(http_addr, &upgrade(http_addr, ""));
    assert_eq!(status(&response), 429, "{response}");
}

/// Shutdown says goodbye to WebSocket sessions too, and ends requests in progress.
#[test]
fn shutdown_says_goodbye_over_websocket() {
    let (server, http_addr) = server();
    let mut ws = Ws::login(http_addr, "alice");
    let mut half = TcpStream::connect(http_addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    assert!(server.shutdown(), "every connection ended in time");
    assert!(started.elapsed() < Duration::from_secs(2));
    ws.expect_prefix("BYE server-shutdown ");
    ws.expect_close();
}

/// Not a check, a measurement (run with `--ignored --nocapture`, in release): the median
/// PING round trip over WebSocket and over TCP to the same server, sequentially.
#[test]
#[ignore]
fn measure_ping_round_trips() {
    const ROUNDS: usize = 5_000;
    let (server, http_addr) = server();
    let mut ws = Ws::login(http_addr, "web");
    let mut tcp = server.login("tcp");
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mut over_ws = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let started = Instant::now();
        ws.send(&format!("PING {i}"));
        ws.expect(&format!("PONG {i}"));
        over_ws.push(started.elapsed());
    }
    let mut over_tcp = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let started = Instant::now();
        tcp.send(&format!("PING {i}"));
        tcp.expect(&format!("PONG {i}"));
        over_tcp.push(started.elapsed());
    }
    println!(
        "PING round trip, median of {ROUNDS}: WebSocket {:?}, TCP {:?}",
        median(over_ws),
        median(over_tcp)
    );
}
