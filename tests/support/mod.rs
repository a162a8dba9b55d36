//! Test support: a real chatd on 127.0.0.1:0 in this process, and a line-oriented client over a
//! real `TcpStream` whose every read has a deadline.
//!
//! Tests wait for events by reading the line that proves the event happened, never by
//! sleeping. A read that does not complete within [`DEADLINE`] panics with everything the
//! client has seen so far, so a broken server fails a test quickly instead of hanging it.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod postgres;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chatd::store::sqlite::{SqliteOptions, SyncMode};
use chatd::store::{Retention, StoreConfig};
use chatd::{Config, ServerHandle};
use chrono::{DateTime, Utc};

/// How long any single expected line may take to arrive. Generous: on a loaded two-core
/// machine a healthy server answers in microseconds, and a failure should still be quick.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The greeting every accepted connection gets first.
pub const GREETING: &str = "HELLO chatd 0.1 :type HELP for commands";

/// A chatd serving on an ephemeral port of 127.0.0.1 for the duration of one test.
pub struct TestServer {
    handle: ServerHandle,
    /// The SQLite database's directory, removed when the test ends.
    _data: Option<tempfile::TempDir>,
}

/// A loopback port to hand to a child program that must be told its port (redis-server,
/// haproxy, Prometheus): they cannot bind port 0 and report back.
///
/// Why not "bind port 0, read the port, close": the kernel may hand that same port to the
/// next outgoing connection of any test (it is in the ephemeral range, 32768-60999 on
/// Linux) before the child binds it, and the child then fails to start. So ports come from
/// below that range, each process walking its own stretch (by pid) with a counter so the
/// tests of one binary never share one, and a bind check skips ports held by anyone else.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const STRETCH: u16 = 400;
    const STRETCHES: u32 = 30; // 20,000 + 30 x 400 = 32,000, under the ephemeral range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = FIRST + (std::process::id() % STRETCHES) as u16 * STRETCH;
    for _ in 0..STRETCH {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % STRETCH;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{}", base + STRETCH);
}

/// A creation quota no test reaches.
pub fn unlimited() -> chatd::quota::Rate {
    chatd::quota::Rate {
        burst: 1_000_000,
        per: Duration::from_secs(1),
    }
}

/// Which store test servers use: `CHATD_TEST_STORE=memory`, `postgres` (a fresh database
/// per server in the binary's one throwaway cluster; see [`postgres`]) or `sqlite` (the
/// default, as for the `chatd` binary). CI runs the whole suite with each.
fn test_store() -> (StoreConfig, Option<tempfile::TempDir>) {
    match std::env::var("CHATD_TEST_STORE").as_deref() {
        Ok("memory") => (StoreConfig::Memory, None),
        Ok("postgres") => match postgres::Cluster::shared() {
            Some(cluster) => (cluster.store(), None),
            // Outside CI, without PostgreSQL installed: `Cluster::shared` said why.
            None => std::process::exit(0),
        },
        Ok("sqlite") | Err(_) => {
            let dir = tempfile::tempdir().expect("temp dir for the test database");
            let store = sqlite_store(dir.path().join("chatd.db"), None);
            (store, Some(dir))
        }
        Ok(other) => panic!("CHATD_TEST_STORE={other}: expected memory, postgres or sqlite"),
    }
}

/// An SQLite store at `path`, as tests use it: `--sync normal` (tests check behaviour, not
/// power-loss durability; tests/store.rs runs the binary with the default), no retention,
/// and optionally a size cap in pages (to make the disk "full").
pub fn sqlite_store(path: std::path::PathBuf, max_pages: Option<u64>) -> StoreConfig {
    StoreConfig::Sqlite(SqliteOptions {
        path,
        sync: SyncMode::Normal,
        retention: Retention {
            interval: Duration::from_secs(3600),
            ..Retention::default()
        },
        max_pages,
    })
}

impl TestServer {
    /// A server with the default configuration.
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// A server whose configuration `configure` adjusts; the listen address is always
    /// 127.0.0.1:0.
    pub fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let (store, data) = test_store();
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store,
            // Offline is announced at once, so tests read it instead of waiting out a grace.
            presence_grace: Duration::ZERO,
            // Floods are how these tests load the fan-out; the rate limiter has its own tests.
            rate_limit: None,
            // Tests make rooms by the thousand; the room quota has its own tests.
            new_rooms_per_user: unlimited(),
            new_rooms_overall: unlimited(),
            // The HTTP listener's default port would clash between tests run at once; the
            // tests of the HTTP front door turn it on at port 0.
            http_listen: None,
            ..Config::default()
        };
        configure(&mut config);
        let handle = chatd::start(config).expect("chatd::start on 127.0.0.1:0");
        TestServer {
            handle,
            _data: data,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// A connected client that has read the greeting, not logged in.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// A client logged in as `name` without a device id.
    pub fn login(&self, name: &str) -> Client {
        let mut client = self.connect();
        client.login(name);
        client
    }

    /// A client logged in as `name` from `device`.
    pub fn login_device(&self, name: &str, device: &str) -> Client {
        let mut client = self.connect();
        client.login_device(name, device);
        client
    }

    /// `ServerHandle::shutdown`: whether every connection finished within the grace period.
    pub fn shutdown(self) -> bool {
        self.handle.shutdown()
    }
}

/// What one bounded read produced.
enum ReadOutcome {
    Line(String),
    Closed,
    TimedOut,
}

/// A test client: one TCP connection, read line by line with deadlines.
pub struct Client {
    /// Names the client in failure messages ("alice/laptop", "conn 127.0.0.1:40000").
    name: String,
    stream: TcpStream,
    /// Bytes received but not yet returned as a line.
    pending: Vec<u8>,
    /// Every line received, for failure messages.
    seen: Vec<String>,
    /// Numbers the PINGs of `expect_quiet`, so each barrier is distinct.
    barriers: u32,
}

impl Client {
    /// Connects and checks the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_raw(addr);
        client.expect(GREETING);
        client
    }

    /// Connects with a small kernel receive buffer (set before the handshake, so the window
    /// stays small) and checks the greeting: a client that stops reading backs up sooner.
    pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> Client {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .connect(&addr.into())
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut client = Client::from_stream(socket.into());
        client.expect(GREETING);
        client
    }

    /// Connects without reading anything (for connections that are refused at the door).
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// A client over a stream the test connected itself (with its own socket options).
    pub fn connect_raw_stream(stream: TcpStream) -> Client {
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("set_nodelay");
        let name = format!("conn {}", stream.local_addr().expect("local_addr"));
        Client {
            name,
            stream,
            pending: Vec::new(),
            seen: Vec::new(),
            barriers: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket, for tests that need to do something unusual to it (e.g. drop it).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// `LOGIN <name>`, expecting `OK LOGIN <name>`.
    ///
    /// Then it waits until the login has fully taken effect (see [`Client::logged_in`]).
    pub fn login(&mut self, name: &str) {
        self.name = name.to_owned();
        self.send(&format!("LOGIN {name}"));
        self.expect(&format!("OK LOGIN {name}"));
        self.logged_in();
    }

    /// `LOGIN <name> device=<device>`, expecting `OK LOGIN <name>`, then waits until the
    /// login has fully taken effect (see [`Client::logged_in`]).
    pub fn login_device(&mut self, name: &str, device: &str) {
        self.name = format!("{name}/{device}");
        self.send(&format!("LOGIN {name} device={device}"));
        self.expect(&format!("OK LOGIN {name}"));
        self.logged_in();
    }

    /// Waits until the login has fully taken effect. The session gets every event from its
    /// `OK LOGIN` on (`User::add_session` queues the OK under the lock fan-out takes; see
    /// `devices::ok_login_means_the_session_gets_every_later_event`), but the rest of the
    /// login, such as telling the user's peers they are online, comes after the OK. A PING
    /// is handled by the same reader thread after the whole login, so its PONG proves it.
    /// It also asserts nothing else arrived first, so log in while the user's rooms are quiet
    /// (or log in by hand with `send` and `expect`).
    fn logged_in(&mut self) {
        self.expect_quiet();
    }

    /// `JOIN <room>`, expecting `OK JOIN <room> seq=.. epoch=.. members=..`; returns the reply.
    pub fn join(&mut self, room: &str) -> JoinReply {
        self.send(&format!("JOIN {room}"));
        let line = self.expect_prefix(&format!("OK JOIN {room} "));
        JoinReply::parse(&line).unwrap_or_else(|| self.fail(&format!("malformed OK JOIN: {line}")))
    }

    /// `SEND <room> <body>`, expecting `OK SEND` and then this session's own copy of the MSG
    /// (the echo); checks they agree and returns the message.
    pub fn say(&mut self, room: &str, body: &str) -> Msg {
        self.send(&format!("SEND {room} {body}"));
        let ok = self.expect_prefix(&format!("OK SEND {room} "));
        let msg = self.expect_msg();
        assert_eq!(
            ok,
            format!("OK SEND {room} {} {}", msg.seq, msg.id),
            "{}: OK SEND and the echoed MSG disagree",
            self.name
        );
        assert_eq!((msg.room.as_str(), msg.body.as_str()), (room, body));
        msg
    }

    /// Sends one line; `\n` is appended.
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Sends bytes exactly as given (no `\n` added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            self.fail(&format!("write failed: {e}"));
        }
    }

    /// Closes the sending half: the server reads EOF after what was sent.
    pub fn shutdown_write(&mut self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)");
    }

    /// The next line (without its `\n`), within [`DEADLINE`].
    pub fn next_line(&mut self) -> String {
        match self.read_line(DEADLINE) {
            ReadOutcome::Line(line) => line,
            ReadOutcome::Closed => self.fail("connection closed while a line was expected"),
            ReadOutcome::TimedOut => self.fail(&format!("no line within {DEADLINE:?}")),
        }
    }

    /// The next line must be exactly `expected`.
    pub fn expect(&mut self, expected: &str) {
        let line = self.next_line();
        if line != expected {
            self.fail(&format!(
                "expected {:?}\n     got {:?}",
                clip(expected),
                clip(&line)
            ));
        }
    }

    /// The next line must be `expected`, optionally followed by ` key=value` fields (which
    /// later protocol versions add to some lines, e.g. ROOM); returns the whole line.
    pub fn expect_extended(&mut self, expected: &str) -> String {
        let line = self.next_line();
        let extra = line.strip_prefix(expected).map(|rest| {
            rest.is_empty()
                || rest.starts_with(' ')
                    && rest[1..]
                        .split(' ')
                        .all(|f| f.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
        });
        if extra != Some(true) {
            self.fail(&format!(
                "expected {:?} (plus key=value fields)\n     got {:?}",
                clip(expected),
                clip(&line)
            ));
        }
        line
    }

    /// `user` joined `room` and this client shared no room with them before: the server
    /// introduces them (`PRESENCE <user> online`) just before `JOINED <room> <user>`.
    pub fn expect_introduced(&mut self, room: &str, user: &str) {
        self.expect(&format!("PRESENCE {user} online"));
        self.expect(&format!("JOINED {room} {user}"));
    }

    /// `JOINED <room> <user>`, after `PRESENCE <user> online` if this client shared no room
    /// with the joiner before (see [`Client::expect_introduced`]): for tests that do not
    /// pin down which.
    pub fn expect_joined(&mut self, room: &str, user: &str) {
        let line = self.next_line();
        if line != format!("PRESENCE {user} online") {
            assert_eq!(line, format!("JOINED {room} {user}"), "{}", self.name);
            return;
        }
        self.expect(&format!("JOINED {room} {user}"));
    }

    /// The next line, setting aside `user`'s departure (`PRESENCE <user> offline
    /// last_seen=<ts>`), which may arrive at any moment while the test reads a flood;
    /// `departed` records whether it has. A second departure fails.
    pub fn next_besides_departure(&mut self, user: &str, departed: &mut bool) -> String {
        let departure = format!("PRESENCE {user} offline ");
        loop {
            let line = self.next_line();
            if !line.starts_with(&departure) {
                return line;
            }
            if let Err(why) = matches_shape(&line, &format!("{departure}last_seen=<ts>")) {
                self.fail(&format!("bad presence line {line:?}: {why}"));
            }
            if *departed {
                self.fail(&format!("{user}'s departure was announced twice"));
            }
            *departed = true;
        }
    }

    /// The next line must start with `prefix`; returns the whole line.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.next_line();
        if !line.starts_with(prefix) {
            self.fail(&format!(
                "expected a line starting {:?}\n     got {:?}",
                clip(prefix),
                clip(&line)
            ));
        }
        line
    }

    /// The next line must match `pattern` (see [`matches_shape`]); returns it.
    pub fn expect_shape(&mut self, pattern: &str) -> String {
        let line = self.next_line();
        if let Err(why) = matches_shape(&line, pattern) {
            self.fail(&format!(
                "expected shape {pattern:?}\n     got {:?}\n     ({why})",
                clip(&line)
            ));
        }
        line
    }

    /// The next line must be a `MSG`; returns it parsed.
    pub fn expect_msg(&mut self) -> Msg {
        let line = self.next_line();
        Msg::parse(&line).unwrap_or_else(|why| self.fail(&format!("expected a MSG: {why}")))
    }

    /// Proves nothing is queued for this connection: sends `PING <token>` and requires its
    /// `PONG` to be the very next line. The server handles a connection's commands in order
    /// and queues replies behind every event already queued, so anything that had been sent
    /// to this client before the PING would show up first.
    pub fn expect_quiet(&mut self) {
        self.barriers += 1;
        let token = format!("quiet{}", self.barriers);
        self.send(&format!("PING {token}"));
        self.expect(&format!("PONG {token}"));
    }

    /// The connection must be closed by the server now: EOF with no further line.
    pub fn expect_closed(&mut self) {
        match self.read_line(DEADLINE) {
            ReadOutcome::Closed => {}
            ReadOutcome::Line(line) => self.fail(&format!("expected EOF, got {:?}", clip(&line))),
            ReadOutcome::TimedOut => self.fail(&format!("expected EOF within {DEADLINE:?}")),
        }
    }

    /// Reads every remaining line until the server closes the connection.
    pub fn read_until_closed(&mut self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left) {
                ReadOutcome::Line(line) => lines.push(line),
                ReadOutcome::Closed => return lines,
                ReadOutcome::TimedOut => {
                    self.fail(&format!("the connection was still open {DEADLINE:?} later"))
                }
            }
        }
    }

    /// `STATS`, parsed into its `key=value` fields.
    pub fn stats(&mut self) -> HashMap<String, u64> {
        self.send("STATS");
        let line = self.expect_prefix("OK STATS");
        parse_stats(&line).unwrap_or_else(|| self.fail(&format!("malformed OK STATS: {line}")))
    }

    /// Repeats `STATS` until `key` equals `value`, within [`DEADLINE`]. For facts the server
    /// does not announce to anyone (say, that a connection's threads have finished), the
    /// counter is the line that proves it.
    pub fn wait_for_stat(&mut self, key: &str, value: u64) {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        for _ in 0..100_000 {
            let stats = self.stats();
            let now = stats.get(key).copied();
            if now == Some(value) {
                return;
            }
            last = now;
            if Instant::now() >= deadline {
                break;
            }
            std::thread::yield_now();
        }
        self.fail(&format!(
            "STATS {key} stayed {last:?}, never {value}, within {DEADLINE:?}"
        ));
    }

    /// Panics with the client's name and every line it has seen.
    pub fn fail(&self, what: &str) -> ! {
        let tail: Vec<&String> = self.seen.iter().rev().take(40).collect();
        let mut history = String::new();
        for line in tail.into_iter().rev() {
            history.push_str("\n    ");
            history.push_str(&clip(line));
        }
        panic!(
            "{}: {what}\n  lines seen ({} in all, last 40):{history}",
            self.name,
            self.seen.len()
        );
    }

    /// Reads one line, waiting at most `wait`.
    fn read_line(&mut self, wait: Duration) -> ReadOutcome {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.pending.drain(..=end).collect();
                let line = match String::from_utf8(raw[..end].to_vec()) {
                    Ok(line) => line,
                    Err(_) => self.fail(&format!("server sent invalid UTF-8: {raw:?}")),
                };
                self.seen.push(line.clone());
                return ReadOutcome::Line(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ReadOutcome::TimedOut;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) if self.pending.is_empty() => return ReadOutcome::Closed,
                Ok(0) => {
                    let partial = String::from_utf8_lossy(&self.pending).into_owned();
                    self.fail(&format!("EOF after a partial line {partial:?}"))
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A server that closes the socket before reading all we sent resets the
                // connection: that is a close too, after the lines already received.
                Err(e) if e.kind() == ErrorKind::ConnectionReset && self.pending.is_empty() => {
                    return ReadOutcome::Closed
                }
                Err(e) => self.fail(&format!("read failed: {e}")),
            }
        }
    }
}

/// A conversation with chatd read line by line: a [`Client`], or a client behind a proxy.
pub trait ReadLines {
    /// The next line (without its `\n`); fails the test if none comes within [`DEADLINE`].
    fn next_line(&mut self) -> String;

    /// Fails the test, saying what went wrong.
    fn fail(&self, what: &str) -> !;

    /// Reads lines until `expected`, skipping events the test does not pin down (PRESENCE
    /// and the like, which other features add around a JOIN).
    fn skip_to(&mut self, expected: &str) {
        for _ in 0..20 {
            if self.next_line() == expected {
                return;
            }
        }
        self.fail(&format!("no {expected:?} among the next 20 lines"));
    }

    /// Like [`ReadLines::skip_to`], for the first line starting with `prefix`; returns it.
    fn skip_to_prefix(&mut self, prefix: &str) -> String {
        for _ in 0..20 {
            let line = self.next_line();
            if line.starts_with(prefix) {
                return line;
            }
        }
        self.fail(&format!("no line starting {prefix:?} among the next 20"));
    }
}

impl ReadLines for Client {
    fn next_line(&mut self) -> String {
        Client::next_line(self)
    }

    fn fail(&self, what: &str) -> ! {
        Client::fail(self, what)
    }
}

/// `OK JOIN <room> seq=<n> epoch=<hex16> members=<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub members: usize,
}

impl JoinReply {
    pub fn parse(line: &str) -> Option<JoinReply> {
        let rest = line.strip_prefix("OK JOIN ")?;
        let mut fields = rest.split(' ');
        let room = fields.next()?.to_owned();
        let seq = fields.next()?.strip_prefix("seq=")?.parse().ok()?;
        let epoch = fields.next()?.strip_prefix("epoch=")?.to_owned();
        let members = fields.next()?.strip_prefix("members=")?.parse().ok()?;
        if fields.next().is_some() || !is_epoch(&epoch) {
            return None;
        }
        Some(JoinReply {
            room,
            seq,
            epoch,
            members,
        })
    }
}

/// `MSG <room> <seq> <id> <sent_at> <sender> <body>`, with each field's shape checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub room: String,
    pub seq: u64,
    pub id: String,
    pub sent_at: String,
    pub sender: String,
    pub body: String,
}

impl Msg {
    pub fn parse(line: &str) -> Result<Msg, String> {
        let rest = line
            .strip_prefix("MSG ")
            .ok_or_else(|| format!("not a MSG line: {line:?}"))?;
        let fields: Vec<&str> = rest.splitn(6, ' ').collect();
        let [room, seq, id, sent_at, sender, body] = fields[..] else {
            return Err(format!("too few fields: {line:?}"));
        };
        let seq = seq
            .parse()
            .map_err(|_| format!("seq {seq:?} is not a number: {line:?}"))?;
        if !is_uuid_v7(id) {
            return Err(format!("id {id:?} is not a UUIDv7: {line:?}"));
        }
        if !is_timestamp(sent_at) {
            return Err(format!(
                "sent_at {sent_at:?} is not RFC 3339 UTC ms: {line:?}"
            ));
        }
        Ok(Msg {
            room: room.to_owned(),
            seq,
            id: id.to_owned(),
            sent_at: sent_at.to_owned(),
            sender: sender.to_owned(),
            body: body.to_owned(),
        })
    }

    /// The line as the server sends it (without `\n`).
    pub fn line(&self) -> String {
        format!(
            "MSG {} {} {} {} {} {}",
            self.room, self.seq, self.id, self.sent_at, self.sender, self.body
        )
    }
}

/// `OK STATS k=v ...` into a map.
pub fn parse_stats(line: &str) -> Option<HashMap<String, u64>> {
    let fields = line.strip_prefix("OK STATS")?;
    let mut stats = HashMap::new();
    for field in fields.split(' ').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=')?;
        stats.insert(key.to_owned(), value.parse().ok()?);
    }
    Some(stats)
}

/// Whether `s` is a UUIDv7 in its hyphenated lower-case form.
pub fn is_uuid_v7(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        && groups[2].starts_with('7')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

/// Whether `s` is RFC 3339 in UTC with exactly milliseconds: `2026-11-28T03:40:00.123Z`.
pub fn is_timestamp(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
        && DateTime::parse_from_rfc3339(s).is_ok()
}

/// Parses a wire timestamp (see [`is_timestamp`]).
pub fn parse_timestamp(s: &str) -> DateTime<Utc> {
    assert!(
        is_timestamp(s),
        "{s:?} is not RFC 3339 UTC with milliseconds"
    );
    DateTime::parse_from_rfc3339(s)
        .expect("checked above")
        .with_timezone(&Utc)
}

/// Whether `s` is a room epoch: 16 lower-case hex digits.
pub fn is_epoch(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Matches a line against a pattern, word by word (split on single spaces). A pattern word
/// may end in a placeholder after a literal prefix: `<id>` (a UUIDv7), `<ts>` (an RFC 3339
/// UTC timestamp with milliseconds), `<hex16>` (a room epoch) or `<n>` (a whole number).
/// Every other word must be equal.
pub fn matches_shape(line: &str, pattern: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split(' ').collect();
    let wanted: Vec<&str> = pattern.split(' ').collect();
    if words.len() != wanted.len() {
        return Err(format!("{} words, expected {}", words.len(), wanted.len()));
    }
    for (word, want) in words.iter().zip(&wanted) {
        let ok = match want.find('<') {
            Some(at) if want.ends_with('>') => {
                let (prefix, placeholder) = want.split_at(at);
                word.strip_prefix(prefix)
                    .is_some_and(|value| match placeholder {
                        "<id>" => is_uuid_v7(value),
                        "<ts>" => is_timestamp(value),
                        "<hex16>" => is_epoch(value),
                        "<n>" => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
                        other => panic!("unknown placeholder {other} in pattern {pattern:?}"),
                    })
            }
            _ => word == want,
        };
        if !ok {
            return Err(format!("{word:?} does not match {want:?}"));
        }
    }
    Ok(())
}

/// The value of `key=` in a line's space-separated fields.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// A line cut to a length that fits in a failure message.
pub fn clip(line: &str) -> String {
    const MAX: usize = 160;
    if line.chars().count() <= MAX {
        line.to_owned()
    } else {
        let head: String = line.chars().take(MAX).collect();
        format!("{head}... ({} bytes)", line.len())
    }
}

/// The `chatd` binary, started on 127.0.0.1:0 with `args`, once it says it is listening
/// (within 10 s). Its stderr lines are collected in the returned log. `Err` carries the log if
/// it exited or did not listen in time.
pub fn spawn_chatd(
    args: &[&std::ffi::OsStr],
) -> Result<(std::process::Child, SocketAddr, ChatdLog), String> {
    spawn_chatd_on("127.0.0.1:0", args)
}

/// [`spawn_chatd`] listening on `listen`: a restart on the address clients already know.
pub fn spawn_chatd_on(
    listen: &str,
    args: &[&std::ffi::OsStr],
) -> Result<(std::process::Child, SocketAddr, ChatdLog), String> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    // The HTTP listener's default port would clash between tests run at once: off unless
    // the test asks for it.
    let http_off: &[&str] = if args.iter().any(|arg| *arg == "--http-listen") {
        &[]
    } else {
        &["--http-listen", "none"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--listen", listen])
        .args(http_off)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let stderr = child.stderr.take().expect("stderr");
    let log: ChatdLog = Default::default();
    let (listening, address) = std::sync::mpsc::channel();
    let collected = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("chatd: listening on ") {
                let addr = rest.split(' ').next().unwrap_or_default().to_owned();
                let _ = listening.send(addr);
            }
            // The same event under --log-format json.
            if let Some((_, rest)) = line.split_once("\"msg\":\"listening\",\"listen\":\"") {
                let addr = rest.split('"').next().unwrap_or_default().to_owned();
                let _ = listening.send(addr);
            }
            collected.lock().unwrap().push(line);
        }
    });
    match address.recv_timeout(Duration::from_secs(10)) {
        Ok(addr) => Ok((child, addr.parse().expect("listening address"), log)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            // The collector thread ends at EOF; give it the last lines.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && log.lock().unwrap().is_empty() {
                std::thread::yield_now();
            }
            let lines = log.lock().unwrap().join("\n");
            Err(lines)
        }
    }
}

/// A spawned chatd's stderr, line by line.
pub type ChatdLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// The real `chatd` binary, started on 127.0.0.1:0 with test flags; a test that fails half-way
/// does not leave it running.
pub struct ChatdProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    /// Every stderr line, collected by a thread.
    log: ChatdLog,
}

impl ChatdProcess {
    /// Starts it with `args` (after `--listen`) and waits (bounded) until it listens.
    pub fn start(args: &[&std::ffi::OsStr]) -> ChatdProcess {
        ChatdProcess::try_start(args).unwrap_or_else(|log| panic!("chatd did not start:\n{log}"))
    }

    /// Starts it; `Err` carries its stderr if it exited (or did not listen within 10 s).
    pub fn try_start(args: &[&std::ffi::OsStr]) -> Result<ChatdProcess, String> {
        let (child, addr, log) = spawn_chatd(args)?;
        Ok(ChatdProcess { child, addr, log })
    }

    pub fn login(&self, name: &str) -> Client {
        let mut client = Client::connect(self.addr);
        client.login(name);
        client
    }

    /// Its stderr lines so far.
    #[allow(dead_code)]
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, and the process must exit 0 within 5 s.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_exit(&mut self.child, Duration::from_secs(5));
        assert!(
            status.success(),
            "chatd exited with {status}: {:?}",
            self.log.lock().unwrap()
        );
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9 chatd");
        self.child.wait().expect("reap chatd");
    }
}

impl Drop for ChatdProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (polling, bounded by `limit`) for a child process to exit.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "chatd did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every message of `room` from seq 1, by paging SYNC, deduplicated by id (live MSG lines may
/// arrive while it reads) and in seq order.
pub fn all_messages(client: &mut Client, room: &str) -> Vec<Msg> {
    let mut messages = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        client.send(&format!("SYNC {room} {after}"));
        loop {
            let line = client.next_line();
            if line.starts_with("MSG ") {
                let msg = Msg::parse(&line).expect("MSG");
                after = msg.seq;
                messages.push(msg);
            } else if line.starts_with(&format!("OK SYNC {room} ")) {
                if !line.ends_with(" more") {
                    let mut seen = std::collections::HashSet::new();
                    messages.retain(|m: &Msg| seen.insert(m.id.clone()));
                    messages.sort_by_key(|m| m.seq);
                    return messages;
                }
                break;
            } else {
                // GAP lines, and events of other people (PRESENCE, JOINED, ...).
                let verb = line.split(' ').next().unwrap_or_default();
                assert!(
                    ["GAP", "PRESENCE", "JOINED", "LEFT", "READ", "TYPING"].contains(&verb),
                    "unexpected line in SYNC: {line}"
                );
            }
        }
    }
    panic!("SYNC paging did not end");
}
