//! End-to-end encrypted DMs (docs/e2e.md): the key directory on the wire, and the Rust
//! client's envelopes through a real server. The server relays and stores ciphertext only:
//! every device of both users reads every message, the database and the memory store's
//! replies hold no plaintext, a device added later reads only what is sent after it, a revoked
//! device reads nothing new, a changed envelope is detected, and an independent decoder
//! written from docs/e2e.md alone (tests/e2e_decoder.py) reads what the client wrote.
//!
//! Tests that need a file or a restart use SQLite on a path of their own; the others use the
//! suite's store (`CHATD_TEST_STORE`), so CI runs them on memory and PostgreSQL too.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chatd::store::StoreConfig;
use chatd_client::e2e::{E2eError, Identity, PREFIX};
use chatd_client::{Client as ChatClient, Config, Error, Event, Message};
use support::{sqlite_store, TestServer};

const PATIENCE: Duration = Duration::from_secs(30);

/// One device: a client logged in as `user` with `device=`, and its identity key pair, whose
/// public half it has published.
struct Device {
    client: ChatClient,
    identity: Identity,
}

impl Device {
    fn new(addr: SocketAddr, user: &str, device: &str) -> Device {
        Device::with_identity(addr, Identity::generate(user, device))
    }

    fn with_identity(addr: SocketAddr, identity: Identity) -> Device {
        let mut config = Config::new(addr.to_string(), &identity.user)
            .device(&identity.device)
            .backoff(Duration::from_millis(10), Duration::from_millis(200));
        config.connect_timeout = Duration::from_secs(10);
        let mut client = ChatClient::connect(config).expect("the device logs in");
        client.publish_key(&identity).expect("KEY is accepted");
        Device { client, identity }
    }

    fn send(&mut self, to: &str, body: &str) {
        self.client
            .dm_encrypted(&self.identity, to, body)
            .unwrap_or_else(|e| {
                panic!(
                    "{}/{} sends {body:?}: {e}",
                    self.identity.user, self.identity.device
                )
            });
    }

    /// The next `count` DMs this device receives, each decrypted (or why it could not be).
    fn read(&mut self, count: usize) -> Vec<(Message, Result<String, Error>)> {
        let deadline = Instant::now() + PATIENCE;
        let mut read = Vec::new();
        while read.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.next_event(left).expect("the session goes on") {
                Some(Event::Message(message)) if message.room.starts_with("dm:") => {
                    let plain = self.client.decrypt(&self.identity, &message);
                    read.push((message, plain));
                }
                Some(_) => {}
                None => panic!(
                    "{}/{}: {count} DMs within {PATIENCE:?}, got {}",
                    self.identity.user,
                    self.identity.device,
                    read.len()
                ),
            }
        }
        read
    }

    /// Reads `count` DMs and returns their plaintexts, failing on any that does not decrypt.
    fn read_plain(&mut self, count: usize) -> Vec<String> {
        self.read(count)
            .into_iter()
            .map(|(message, plain)| {
                plain.unwrap_or_else(|e| {
                    panic!(
                        "{}/{} cannot read seq {}: {e}",
                        self.identity.user, self.identity.device, message.seq
                    )
                })
            })
            .collect()
    }

    /// Waits for the `DEVICE` event about `user`'s `device`.
    fn expect_device_change(&mut self, user: &str, device: &str, added: bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.next_event(left).expect("the session goes on") {
                Some(Event::DeviceChanged {
                    user: u,
                    device: d,
                    key,
                }) if u == user && d == device => {
                    assert_eq!(key.is_some(), added, "DEVICE {u} {d} {key:?}");
                    return;
                }
                Some(_) => {}
                None => panic!("no DEVICE {user} {device} within {PATIENCE:?}"),
            }
        }
    }
}

fn sqlite_server(db: &Path) -> TestServer {
    let db = db.to_path_buf();
    TestServer::with(move |config| config.store = sqlite_store(db, None))
}

/// Two users with two devices each: every message is read by all four devices.
fn exchange(addr: SocketAddr) -> Vec<String> {
    let mut alice_laptop = Device::new(addr, "alice", "laptop");
    let mut alice_phone = Device::new(addr, "alice", "phone");
    let mut bob_laptop = Device::new(addr, "bob", "laptop");
    let mut bob_phone = Device::new(addr, "bob", "phone");
    let bodies: Vec<String> = [
        "alice-laptop says the secret plaintext 7f3a",
        "bob-phone answers with plaintext 91c2",
        "alice-phone adds plaintext 5d0e",
        "bob-laptop closes with plaintext c4b8",
    ]
    .map(String::from)
    .to_vec();
    alice_laptop.send("bob", &bodies[0]);
    bob_phone.send("alice", &bodies[1]);
    alice_phone.send("bob", &bodies[2]);
    bob_laptop.send("alice", &bodies[3]);
    for device in [
        &mut alice_laptop,
        &mut alice_phone,
        &mut bob_laptop,
        &mut bob_phone,
    ] {
        assert_eq!(
            device.read_plain(4),
            bodies,
            "{}/{} reads every message, in order",
            device.identity.user,
            device.identity.device
        );
    }
    bodies
}

/// All four devices of two users read every DM, and neither the database file nor its WAL
/// holds a byte of any plaintext: only envelopes are stored.
#[test]
fn four_devices_read_every_message_and_the_database_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = sqlite_server(&db);
    let bodies = exchange(server.addr());

    // A plain line-protocol client (nc, an old client) sees the envelope: printable ASCII.
    let mut raw = server.login("bob");
    raw.send("@h HISTORY dm:alice:bob 10");
    for _ in 0..4 {
        let line = raw.next_line();
        let body = line.splitn(8, ' ').nth(7).unwrap_or("");
        assert!(body.starts_with(PREFIX), "{line}");
        assert!(
            body.bytes().all(|b| b.is_ascii_graphic()),
            "printable: {line}"
        );
    }
    raw.expect_prefix("@h OK HISTORY dm:alice:bob 4 ");

    // Checked while the server runs (the WAL holds the newest pages) and after it stopped.
    let files = |db: &Path| -> Vec<Vec<u8>> {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::read(format!("{}{suffix}", db.display())).ok())
            .collect()
    };
    let holds =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for bytes in files(&db) {
        for body in &bodies {
            assert!(!holds(&bytes, body), "the database holds {body:?}");
            assert!(
                !holds(&bytes, "secret"),
                "the database holds a word of a plaintext"
            );
        }
    }
    assert!(server.shutdown());
    let stored: Vec<String> = {
        let db = rusqlite::Connection::open(&db).unwrap();
        let mut statement = db
            .prepare("SELECT body FROM messages ORDER BY seq")
            .unwrap();
        let rows = statement.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(stored.len(), 4);
    assert!(
        stored.iter().all(|body| body.starts_with(PREFIX)),
        "{stored:?}"
    );
    for bytes in files(&db) {
        for body in &bodies {
            assert!(!holds(&bytes, body), "the stopped database holds {body:?}");
        }
    }
}

/// What the server holds and replays is envelopes only: HISTORY carries no plaintext, on the
/// memory store (whose recent log is all it holds) and on the suite's store.
#[test]
fn the_server_replays_envelopes_never_plaintext() {
    let memory = TestServer::with(|config| config.store = StoreConfig::Memory);
    assert_history_holds_no_plaintext(&memory);
    assert_history_holds_no_plaintext(&TestServer::start());
}

fn assert_history_holds_no_plaintext(server: &TestServer) {
    let bodies = exchange(server.addr());
    let mut raw = server.login("alice");
    raw.send("@h HISTORY dm:alice:bob 10");
    let mut reply = Vec::new();
    loop {
        let line = raw.next_line();
        let done = line.starts_with("@h OK HISTORY");
        reply.push(line);
        if done {
            break;
        }
    }
    assert_eq!(reply.len(), 5, "{reply:?}");
    let text = reply.join("\n");
    for body in &bodies {
        assert!(!text.contains(body.as_str()), "HISTORY shows {body:?}");
    }
    assert!(!text.contains("plaintext"));
}

/// KEY, KEYS and REVOKE on the wire, with their errors, and the DEVICE events a DM peer
/// and the user's other sessions get.
#[test]
fn the_key_directory_on_the_wire() {
    let server = TestServer::start();
    let key = "AB".repeat(32);
    let lower = "ab".repeat(32);
    let mut alice = server.login_device("alice", "laptop");
    let mut alice_phone = server.login_device("alice", "phone");
    let mut bob = server.login_device("bob", "laptop");
    bob.send("DM alice hello");
    bob.expect_prefix("OK DM alice dm:alice:bob 1 ");
    bob.expect_prefix("MSG dm:alice:bob 1 ");
    alice.expect_prefix("MSG dm:alice:bob 1 ");
    alice_phone.expect_prefix("MSG dm:alice:bob 1 ");

    alice.send(&format!("@k KEY {key}"));
    alice.expect("@k OK KEY alice laptop added");
    bob.expect(&format!("DEVICE alice laptop added {lower}"));
    alice_phone.expect(&format!("DEVICE alice laptop added {lower}"));
    alice.send(&format!("KEY {lower}"));
    alice.expect("OK KEY alice laptop unchanged");
    let other = "cd".repeat(32);
    alice.send(&format!("KEY {other}"));
    alice.expect("OK KEY alice laptop replaced");
    bob.expect(&format!("DEVICE alice laptop added {other}"));

    bob.send("@l KEYS Alice");
    let line = bob.expect_prefix(&format!("@l KEY alice laptop {other} added="));
    assert!(
        support::is_timestamp(line.rsplit('=').next().unwrap()),
        "{line}"
    );
    bob.expect("@l OK KEYS alice 1 account=no");
    bob.send("KEYS bob");
    bob.expect("OK KEYS bob 0 account=no");

    alice.send("REVOKE tablet");
    alice.expect_prefix("ERR no-such-device :");
    alice.send("REVOKE laptop");
    alice.expect("OK REVOKE alice laptop");
    bob.expect("DEVICE alice laptop revoked");
    alice_phone.expect(&format!("DEVICE alice laptop added {other}"));
    alice_phone.expect("DEVICE alice laptop revoked");
    bob.send("KEYS alice");
    bob.expect("OK KEYS alice 0 account=no");

    // Errors: no device id, a malformed key, an unknown user, before LOGIN.
    let mut anonymous = server.login("carol");
    anonymous.send(&format!("KEY {key}"));
    anonymous.expect_prefix("ERR not-permitted :");
    anonymous.send("KEY 12ab");
    anonymous.expect_prefix("ERR bad-argument :");
    anonymous.send("KEYS nobody");
    anonymous.expect_prefix("ERR no-such-user :");
    let mut fresh = server.connect();
    fresh.send("KEYS alice");
    fresh.expect_prefix("ERR not-logged-in :");

    // An account says so; only its password's sessions could have published.
    let mut dave = server.connect();
    dave.send("LOGIN dave device=pc password=correct-horse");
    dave.expect("OK LOGIN dave");
    dave.send(&format!("KEY {key}"));
    dave.expect("OK KEY dave pc added");
    bob.send("KEYS dave");
    bob.expect_prefix(&format!("KEY dave pc {lower} added="));
    bob.expect("OK KEYS dave 1 account=yes");
    bob.expect_quiet();
}

/// A user has at most 16 device keys; the 17th device is refused until one is revoked.
#[test]
fn a_user_has_at_most_sixteen_device_keys() {
    let server = TestServer::start();
    let key = "ab".repeat(32);
    for i in 0..16 {
        let mut device = server.login_device("alice", &format!("d{i}"));
        device.send(&format!("KEY {key}"));
        device.expect(&format!("OK KEY alice d{i} added"));
    }
    let mut extra = server.login_device("alice", "d16");
    extra.send(&format!("KEY {key}"));
    extra.expect_prefix("ERR not-permitted :");
    extra.send("REVOKE d0");
    extra.expect("OK REVOKE alice d0");
    extra.send(&format!("KEY {key}"));
    extra.expect("OK KEY alice d16 added");
}

/// A store that survives a restart: a fresh PostgreSQL database when the suite runs on
/// PostgreSQL, otherwise an SQLite file in `dir`.
fn durable_store(dir: &Path) -> StoreConfig {
    if std::env::var("CHATD_TEST_STORE").as_deref() == Ok("postgres") {
        if let Some(cluster) = support::postgres::Cluster::shared() {
            return cluster.store_at(&cluster.create_database());
        }
    }
    sqlite_store(dir.join("chatd.db"), None)
}

/// Keys are stored: after a restart on the same database (SQLite, or PostgreSQL in the
/// suite's PostgreSQL pass) KEYS lists the same devices, and a revocation stays revoked.
#[test]
fn keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = durable_store(dir.path());
    let again = store.clone();
    let server = TestServer::with(move |config| config.store = store);
    let mut alice = server.login_device("alice", "laptop");
    alice.send(&format!("KEY {}", "ab".repeat(32)));
    alice.expect("OK KEY alice laptop added");
    let mut phone = server.login_device("alice", "phone");
    phone.send(&format!("KEY {}", "cd".repeat(32)));
    phone.expect("OK KEY alice phone added");
    phone.send("REVOKE laptop");
    phone.expect("OK REVOKE alice laptop");
    drop((alice, phone));
    assert!(server.shutdown());

    let server = TestServer::with(move |config| config.store = again);
    let mut bob = server.login("bob");
    bob.send("KEYS alice");
    bob.expect_prefix(&format!("KEY alice phone {} added=", "cd".repeat(32)));
    bob.expect("OK KEYS alice 1 account=no");
}

/// A device that publishes its key after a message was sent cannot read that message (it
/// was not encrypted for it), and reads every message sent after.
#[test]
fn a_device_added_later_reads_new_messages_not_old_ones() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut alice = Device::new(addr, "alice", "laptop");
    let mut bob = Device::new(addr, "bob", "laptop");
    alice.send("bob", "before the tablet");
    assert_eq!(bob.read_plain(1), ["before the tablet"]);

    let mut tablet = Device::new(addr, "bob", "tablet");
    alice.expect_device_change("bob", "tablet", true);
    let old = tablet.client.history("dm:alice:bob", 10, None).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(
        tablet.client.decrypt(&tablet.identity, &old[0]),
        Err(Error::E2e(E2eError::NotForThisDevice))
    );

    alice.send("bob", "after the tablet");
    assert_eq!(bob.read_plain(1), ["after the tablet"]);
    // The new device's client resumes the direct room from its start, so the old message
    // may come first: it is delivered, and reported unreadable, never shown.
    let mut read = tablet.read(1);
    if read[0].0.seq == 1 {
        assert_eq!(read[0].1, Err(Error::E2e(E2eError::NotForThisDevice)));
        read = tablet.read(1);
    }
    assert_eq!(read[0].0.seq, 2);
    assert_eq!(read[0].1.as_deref(), Ok("after the tablet"));
}

/// After REVOKE the device's key is gone from the directory: senders stop encrypting to it,
/// so it reads nothing sent after, while the devices that remain read everything.
#[test]
fn a_revoked_device_reads_nothing_new() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut alice = Device::new(addr, "alice", "laptop");
    let mut bob = Device::new(addr, "bob", "laptop");
    let mut lost_phone = Device::new(addr, "bob", "phone");
    alice.send("bob", "while the phone is trusted");
    assert_eq!(lost_phone.read_plain(1), ["while the phone is trusted"]);
    assert_eq!(bob.read_plain(1), ["while the phone is trusted"]);

    bob.client.revoke_device("phone").unwrap();
    alice.expect_device_change("bob", "phone", false);
    alice.send("bob", "after the revocation");
    assert_eq!(bob.read_plain(1), ["after the revocation"]);
    let read = lost_phone.read(1);
    assert_eq!(read[0].1, Err(Error::E2e(E2eError::NotForThisDevice)));
}

/// An envelope changed in the database (one base64 character of its ciphertext) and served
/// after a restart is rejected by the client: never shown as a message.
#[test]
fn a_tampered_stored_envelope_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = sqlite_server(&db);
    let addr = server.addr();
    let alice = Identity::generate("alice", "laptop");
    let bob = Identity::generate("bob", "laptop");
    {
        let mut alice = Device::with_identity(addr, alice.clone());
        let _bob = Device::with_identity(addr, bob.clone());
        alice.send("bob", "do not change me");
        alice.send("bob", "nor me");
    }
    assert!(server.shutdown());

    let db_conn = rusqlite::Connection::open(&db).unwrap();
    let body: String = db_conn
        .query_row(
            "SELECT body FROM messages WHERE room = 'dm:alice:bob' AND seq = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    // A character near the end is in the ciphertext (the last 2 may be padding).
    let at = body.len() - 8;
    let flipped = if &body[at..at + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &body[..at], &body[at + 1..]);
    db_conn
        .execute(
            "UPDATE messages SET body = ?1 WHERE room = 'dm:alice:bob' AND seq = 1",
            [&tampered],
        )
        .unwrap();
    drop(db_conn);

    let server = sqlite_server(&db);
    let mut bob = Device::with_identity(server.addr(), bob);
    let history = bob.client.history("dm:alice:bob", 10, None).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].body, tampered,
        "the server serves what is stored"
    );
    assert_eq!(
        bob.client.decrypt(&bob.identity, &history[0]),
        Err(Error::E2e(E2eError::Tampered))
    );
    assert_eq!(
        bob.client.decrypt(&bob.identity, &history[1]).as_deref(),
        Ok("nor me")
    );
}

/// The envelope grows with the number of devices, and the server's body limit applies to
/// all of it: the client refuses, before sending, a message whose envelope would not fit,
/// and says why.
#[test]
fn an_envelope_over_the_body_limit_is_refused_by_the_client() {
    let server = TestServer::with(|config| config.max_body = 700);
    let addr = server.addr();
    let mut alice = Device::new(addr, "alice", "laptop");
    let _bob = Device::new(addr, "bob", "laptop");
    assert_eq!(alice.client.max_body(), 700);
    alice.send("bob", "short enough");
    let long = "x".repeat(400);
    match alice.client.dm_encrypted(&alice.identity, "bob", &long) {
        Err(Error::E2e(E2eError::TooLarge { size, max, devices })) => {
            assert!(
                size > 700 && max == 700 && devices == 2,
                "{size} {max} {devices}"
            );
        }
        other => panic!("an envelope over max-body is refused: {other:?}"),
    }
    let mut raw = server.login("bob");
    raw.send("HISTORY dm:alice:bob");
    raw.expect_prefix("MSG dm:alice:bob 1 ");
    raw.expect_prefix("OK HISTORY dm:alice:bob 1 ");
}

/// docs/e2e.md is a specification, not a description of this client: tests/e2e_decoder.py,
/// written from it alone with Python's `cryptography` package, decrypts envelopes the Rust
/// client made (for a sender's own device and for a peer's), and rejects a tampered one.
#[test]
fn an_independent_decoder_reads_the_clients_envelopes() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import cryptography"])
        .output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with the cryptography package (.ci/run installs it)"
        );
        eprintln!("skipped: python3 with the cryptography package is not installed");
        return;
    }
    let server = TestServer::start();
    let addr = server.addr();
    let mut alice = Device::new(addr, "alice", "laptop");
    let mut bob = Device::new(addr, "bob", "phone");
    let body = "interop: ünïcode, tabs\tand spaces  — 42";
    alice.send("bob", body);
    let envelope = bob.read(1).remove(0).0.body;

    let decode = |identity: &Identity, envelope: &str| {
        let secret: String = identity
            .secret_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let output = std::process::Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e_decoder.py"))
            .args([&identity.user, &identity.device, &secret, envelope])
            .output()
            .expect("python3 runs");
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for identity in [&alice.identity, &bob.identity] {
        let (ok, stdout, stderr) = decode(identity, &envelope);
        assert!(ok, "the decoder fails for {}: {stderr}", identity.device);
        assert_eq!(stdout, format!("{body}\n"), "{stderr}");
    }
    let at = envelope.len() - 10;
    let flipped = if &envelope[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flipped}{}", &envelope[..at], &envelope[at + 1..]);
    let (ok, _, _) = decode(&bob.identity, &tampered);
    assert!(!ok, "the decoder rejects a tampered envelope");
    let _ = alice.read(1);
}

/// A database from before the key directory (schema version 3, no `device_keys` table) is
/// migrated on open: its messages are kept and keys can be published and survive.
#[test]
fn a_version_3_database_is_migrated_to_hold_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = sqlite_server(&db);
    let mut alice = server.login("alice");
    alice.join("general");
    alice.say("general", "from before the migration");
    drop(alice);
    assert!(server.shutdown());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        // Back to version 3: without the key directory (4), operators and bans (5).
        conn.execute_batch(
            "DROP TABLE device_keys; DROP TABLE bans; ALTER TABLE users DROP COLUMN operator;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }

    let server = sqlite_server(&db);
    let mut alice = server.login_device("alice", "laptop");
    alice.send("HISTORY general");
    alice.expect_prefix("MSG general 1 ");
    alice.expect_prefix("OK HISTORY general 1 ");
    alice.send(&format!("KEY {}", "ab".repeat(32)));
    alice.expect("OK KEY alice laptop added");
    drop(alice);
    assert!(server.shutdown());
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, chatd::store::sqlite::SCHEMA_VERSION);
    assert_eq!(version, 5);

    let server = sqlite_server(&db);
    let mut bob = server.login("bob");
    bob.send("KEYS alice");
    bob.expect_prefix(&format!("KEY alice laptop {} added=", "ab".repeat(32)));
    bob.expect("OK KEYS alice 1 account=no");
}

/// Keys published while a name had no password are withdrawn when it gets one: a squatter's
/// device does not outlive the owner's REGISTER (the registering device's key stays), nor a
/// first LOGIN with a password (which withdraws them all). DM peers are told.
#[test]
fn a_name_that_becomes_an_account_loses_the_keys_published_before() {
    let server = TestServer::start();
    let key = |n: u8| format!("{n:02x}").repeat(32);
    let mut alice = server.login_device("alice", "laptop");
    let mut squatter = server.login_device("bob", "evil");
    alice.send("DM bob hi");
    alice.expect_prefix("OK DM bob ");
    alice.expect_prefix("MSG dm:alice:bob 1 ");
    squatter.expect_prefix("MSG dm:alice:bob 1 ");
    squatter.send(&format!("KEY {}", key(1)));
    squatter.expect("OK KEY bob evil added");
    alice.expect(&format!("DEVICE bob evil added {}", key(1)));

    let mut bob = server.login_device("bob", "phone");
    bob.send(&format!("KEY {}", key(2)));
    bob.expect("OK KEY bob phone added");
    alice.expect(&format!("DEVICE bob phone added {}", key(2)));
    squatter.expect(&format!("DEVICE bob phone added {}", key(2)));
    bob.send("REGISTER correct-horse");
    // The withdrawal is announced before the OK, to the registering session too.
    bob.expect("DEVICE bob evil revoked");
    bob.expect("OK REGISTER bob");
    squatter.expect_prefix("BYE registered ");
    alice.expect("DEVICE bob evil revoked");
    alice.send("KEYS bob");
    alice.expect_prefix(&format!("KEY bob phone {} added=", key(2)));
    alice.expect("OK KEYS bob 1 account=yes");

    // A first LOGIN with a password creates the account and withdraws every earlier key.
    let mut carol_squatter = server.login_device("carol", "evil");
    carol_squatter.send(&format!("KEY {}", key(3)));
    carol_squatter.expect("OK KEY carol evil added");
    let mut carol = server.connect();
    carol.send("LOGIN carol device=evil password=s3cret-carol");
    carol.expect("OK LOGIN carol");
    carol_squatter.expect_prefix("BYE ");
    alice.send("KEYS carol");
    alice.expect("OK KEYS carol 0 account=yes");
}
