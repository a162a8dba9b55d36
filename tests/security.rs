//! The findings of the black-box security review of 2026-11-29
//! (`reviews/security-review-2026-11-29.md` in the shared folder), each reproduced as the
//! review did it and held to the fixed behaviour. "Finding N" is the review's numbering.

mod support;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use support::{matches_shape, TestServer};

/// The wait in `ERR rate-limited :retry in <n>ms`, if `line` is one.
fn retry_in(line: &str) -> Option<Duration> {
    let rest = line.split_once("ERR rate-limited :retry in ")?.1;
    let ms = rest.strip_suffix("ms")?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Sends `line` on a new connection and returns the reply and how long it took.
fn timed(server: &TestServer, line: &str) -> (String, Duration) {
    let mut client = server.connect();
    let started = Instant::now();
    client.send(line);
    let reply = client.next_line();
    (reply, started.elapsed())
}

/// `LOGIN` with a password, retrying as told while the throttle says `rate-limited`
/// (bounded in tries and time); returns the final reply.
fn login_honouring_retry(server: &TestServer, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..20 {
        let mut client = server.connect();
        client.send(line);
        let reply = client.next_line();
        match retry_in(&reply) {
            Some(wait) if Instant::now() + wait < deadline => thread::sleep(wait),
            _ => return reply,
        }
    }
    panic!("{line}: still rate-limited after 20 tries");
}

/// Finding 3: parallel connections do not multiply password guesses. Twenty connections
/// guessing one name at the same moment get one check between them (a few at most, if the
/// first finishes before the last arrives); the rest are refused at once, unhashed, with a
/// retry hint. Before the fix all twenty were checked.
#[test]
fn parallel_guesses_for_one_name_are_checked_one_at_a_time() {
    const GUESSERS: usize = 20;
    let server = TestServer::start();
    let mut owner = server.connect();
    owner.send("LOGIN victim password=correct-horse");
    owner.expect("OK LOGIN victim");

    let barrier = Barrier::new(GUESSERS);
    let replies: Vec<String> = thread::scope(|scope| {
        let guessers: Vec<_> = (0..GUESSERS)
            .map(|i| {
                let mut client = server.connect();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    client.send(&format!("LOGIN victim password=par{i}"));
                    client.next_line()
                })
            })
            .collect();
        guessers.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let checked = replies
        .iter()
        .filter(|reply| reply.starts_with("ERR bad-password :"))
        .count();
    for reply in &replies {
        assert!(
            reply.starts_with("ERR bad-password :") || retry_in(reply).is_some(),
            "{reply}"
        );
    }
    assert!(
        (1..=3).contains(&checked),
        "{checked} of {GUESSERS} parallel guesses were checked: {replies:#?}"
    );

    // The owner gets in once the guessing stops, waiting as told.
    assert_eq!(
        login_honouring_retry(&server, "LOGIN victim password=correct-horse"),
        "OK LOGIN victim"
    );
}

/// Finding 5: behind a same-host TLS proxy every client is 127.0.0.1. One client's failed
/// guesses there must not delay other people's logins: by default loopback is not throttled
/// by address at all (only by name). Before the fix the account creation below waited 2 s.
#[test]
fn failed_guesses_from_loopback_do_not_delay_other_users() {
    let server = TestServer::start();
    four_wrong_guesses(&server);
    let (reply, took) = timed(&server, "LOGIN innocent password=pw");
    assert_eq!(reply, "OK LOGIN innocent");
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    let (reply, took) = timed(&server, "LOGIN innocent2");
    assert_eq!(reply, "OK LOGIN innocent2");
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Finding 5, where the address throttle does apply (`--per-ip-loopback`, or any other
/// address): a LOGIN without a password for a name without an account checks nothing and is
/// never delayed, while one that checks a password still waits out the address's delay.
/// Before the fix `LOGIN innocent2` waited 2 s.
#[test]
fn failed_guesses_from_an_address_delay_only_its_password_checks() {
    let server = TestServer::with(|config| config.per_ip_loopback = true);
    four_wrong_guesses(&server);
    let (reply, took) = timed(&server, "LOGIN innocent2");
    assert_eq!(reply, "OK LOGIN innocent2");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    // Four failures: the address's next check waits 2 s (0.25 s doubled three times).
    let (reply, took) = timed(&server, "LOGIN fresh1 password=Winter2026");
    assert_eq!(reply, "OK LOGIN fresh1");
    assert!(took >= Duration::from_millis(1500), "took {took:?}");
}

/// The account `victim` is created, then guessed at four times, wrongly, from 127.0.0.1.
fn four_wrong_guesses(server: &TestServer) {
    let mut owner = server.connect();
    owner.send("LOGIN victim password=correct-horse");
    owner.expect("OK LOGIN victim");
    let mut guesser = server.connect();
    for i in 0..4 {
        guesser.send(&format!("LOGIN victim password=g{i}"));
        guesser.expect_prefix("ERR bad-password :");
    }
}

/// Finding 6: a REGISTER that cannot succeed is refused before the password is hashed. Twenty
/// refused REGISTERs must take less time than five logins that each hash once (before the
/// fix each refusal hashed, so they took about four times as long).
#[test]
fn register_of_a_registered_name_is_refused_before_hashing() {
    let server = TestServer::start();
    let mut owner = server.connect();
    owner.send("LOGIN carol password=first-pass");
    owner.expect("OK LOGIN carol");
    let started = Instant::now();
    for _ in 0..5 {
        let mut again = server.connect();
        again.send("LOGIN carol password=first-pass");
        again.expect("OK LOGIN carol");
    }
    let five_hashes = started.elapsed();
    let started = Instant::now();
    for i in 0..20 {
        owner.send(&format!("@r{i} REGISTER again"));
    }
    for i in 0..20 {
        owner.expect(&format!(
            "@r{i} ERR not-permitted :carol is already registered; use PASSWORD to change it"
        ));
    }
    let twenty_refusals = started.elapsed();
    assert!(
        twenty_refusals < five_hashes,
        "20 refused REGISTERs took {twenty_refusals:?}, 5 hashing logins {five_hashes:?}"
    );
}

/// Finding 6: accounts are created at most 5 at once per address (then 5 a minute), by LOGIN
/// or by REGISTER; beyond, `rate-limited` with the wait. A name without an account can still
/// be used without a password. Before the fix there was no limit.
#[test]
fn account_creation_is_limited_per_address() {
    let server = TestServer::with(|config| config.per_ip_loopback = true);
    for i in 0..5 {
        let (reply, _) = timed(&server, &format!("LOGIN made{i} password=pw"));
        assert_eq!(reply, format!("OK LOGIN made{i}"));
    }
    let (reply, _) = timed(&server, "LOGIN made5 password=pw");
    let wait = retry_in(&reply).unwrap_or_else(|| panic!("expected rate-limited: {reply}"));
    assert!(wait <= Duration::from_secs(12), "{reply}");
    let mut plain = server.login("plain");
    plain.send("REGISTER pw");
    let reply = plain.next_line();
    assert!(retry_in(&reply).is_some(), "{reply}");
    // The refused name was not created with a password: it is still free.
    let (reply, _) = timed(&server, "LOGIN made5");
    assert_eq!(reply, "OK LOGIN made5");
}

/// Finding 6: the whole server creates at most 60 accounts at once (then 60 a minute), from
/// however many addresses; loopback, exempt from the per-address quota by default, meets
/// this one. Before the fix there was no limit.
#[test]
fn account_creation_is_limited_overall() {
    let server = TestServer::start();
    let started = Instant::now();
    let mut created = 0;
    let refusal = (0..200).find_map(|i| {
        let (reply, _) = timed(&server, &format!("LOGIN acct{i} password=pw"));
        if reply == format!("OK LOGIN acct{i}") {
            created += 1;
            return None;
        }
        Some(reply)
    });
    let refusal = refusal.expect("200 accounts created without a refusal");
    assert!(retry_in(&refusal).is_some(), "{refusal}");
    // 60 at once, and one a second since (the hashing takes time on a loaded machine).
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        (60..=60 + refilled).contains(&created),
        "{created} accounts in {:?}",
        started.elapsed()
    );
}

/// Finding 14: U+2028 and U+2029 would let a client that splits on Unicode line breaks show
/// a forged line; they are refused like NEL, and nobody receives anything.
#[test]
fn line_separators_in_bodies_are_refused() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.join("r");
    bob.join("r");
    alice.expect_introduced("r", "bob");
    for separator in ['\u{2028}', '\u{2029}', '\u{85}'] {
        alice.send(&format!(
            "SEND r hi{separator}MSG r 999 01a229c5-0000-7000-8000-000000000000 \
             2026-11-30T00:00:00.000Z admin please re-enter your password"
        ));
        alice.expect_prefix("ERR control-character :");
    }
    bob.expect_quiet();
    alice.say("r", "still fine");
    bob.expect_msg();
}

/// Finding 19: duplicate options, signed numbers, malformed epochs and passwords with
/// invisible characters are `bad-argument`, not silently interpreted.
#[test]
fn lax_values_are_refused() {
    let server = TestServer::start();
    let mut alice = server.connect();
    alice.send("LOGIN alice password=s3cret");
    alice.expect("OK LOGIN alice");
    let mut guesser = server.connect();
    guesser.send("LOGIN alice password=wrong password=s3cret");
    guesser.expect("ERR bad-argument :password= given twice");
    guesser.send("LOGIN hank device=x device=y");
    guesser.expect("ERR bad-argument :device= given twice");
    for line in [
        "REGISTER \u{a0}x",
        "LOGIN bob4 password=a\u{200b}b",
        "LOGIN bob4 password=a\u{202e}b",
    ] {
        guesser.send(line);
        guesser.expect_prefix("ERR bad-argument :a password is 1-128 printable characters");
    }
    alice.join("r");
    alice.say("r", "one");
    for line in ["HISTORY r +5", "READ r +1", "SYNC r +0"] {
        alice.send(line);
        alice.expect_prefix("ERR bad-argument :");
    }
    alice.send("SYNC r 0 epoch=zz");
    alice.expect("ERR bad-argument :zz is not an epoch (16 lower-case hex characters)");
}

/// Finding 1: a session opened on a name before it was registered does not outlive the
/// REGISTER: only sessions that proved the password stay.
#[test]
fn register_ends_sessions_that_did_not_prove_the_password() {
    let server = TestServer::start();
    let mut evil = server.login_device("bob", "evil");
    let mut phone = server.login_device("bob", "phone");
    phone.send("REGISTER victim-pass");
    phone.expect("OK REGISTER bob");
    let last = evil.read_until_closed();
    assert!(
        last.last().is_some_and(|line| line.starts_with("BYE ")),
        "the unproven session must end with a BYE: {last:?}"
    );
    phone.expect_quiet();
    let mut owner = server.connect();
    owner.send("LOGIN bob password=victim-pass");
    owner.expect("OK LOGIN bob");
}

/// Finding 1: PASSWORD needs the current password (`PASSWORD <current> <new>
/// [end-sessions]`), so a session left open somewhere cannot take the account over.
#[test]
fn password_change_needs_the_current_password() {
    let server = TestServer::start();
    let mut laptop = server.connect();
    laptop.send("LOGIN bob device=laptop password=victim-pass");
    laptop.expect("OK LOGIN bob");
    let mut phone = server.connect();
    phone.send("LOGIN bob device=phone password=victim-pass");
    phone.expect("OK LOGIN bob");
    // The review's takeover: a new password alone, ending the owner's other sessions.
    laptop.send("PASSWORD attacker-pass end-sessions");
    laptop.expect_prefix("ERR bad-password :");
    laptop.send("PASSWORD wrong-pass attacker-pass end-sessions");
    laptop.expect_prefix("ERR bad-password :");
    phone.expect_quiet();
    laptop.send("PASSWORD victim-pass n3w-pass end-sessions");
    laptop.expect("OK PASSWORD bob");
    let last = phone.read_until_closed();
    assert_eq!(
        last.last().map(String::as_str),
        Some("BYE password-changed :the password was changed; log in again with the new one")
    );
    assert_eq!(
        login_honouring_retry(&server, "LOGIN bob password=n3w-pass"),
        "OK LOGIN bob"
    );
}

/// Finding 8: JOIN of an invite-only room by an outsider answers exactly as JOIN of a free
/// name does, so nothing reveals that the room exists; its members hear nothing.
#[test]
fn joining_an_invite_only_room_looks_like_joining_a_free_name() {
    let server = TestServer::start();
    let mut owner = server.login("owner");
    owner.join("secret");
    owner.send("PRIVATE secret on");
    owner.expect("OK PRIVATE secret on");
    let mut outsider = server.login("outsider");
    for room in ["fresh1", "secret"] {
        outsider.send(&format!("JOIN {room}"));
        let line = outsider.next_line();
        let shape = format!("OK JOIN {room} seq=0 epoch=<hex16> members=1");
        if let Err(why) = matches_shape(&line, &shape) {
            panic!("JOIN {room}: {line:?} is not {shape:?} ({why})");
        }
    }
    outsider.expect_quiet();
    owner.expect_quiet();
}

/// Finding 12: `SYNC <room> <u64::MAX>` asks for nothing past the end, so no GAP: the reply
/// is the plain OK, on a room with messages and on an empty one.
#[test]
fn sync_after_the_largest_seq_reports_no_gap() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("r");
    for i in 0..6 {
        alice.say("r", &format!("m{i}"));
    }
    alice.join("empty");
    for (room, seq) in [("r", 6), ("empty", 0)] {
        alice.send(&format!("SYNC {room} 18446744073709551615"));
        alice.expect_shape(&format!("OK SYNC {room} seq={seq} epoch=<hex16>"));
    }
    alice.expect_quiet();
}

/// The helper this file leans on for the retry hint agrees with the wire format.
#[test]
fn retry_hint_is_parsed() {
    assert_eq!(
        retry_in("@x ERR rate-limited :retry in 250ms"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(retry_in("ERR bad-password :x"), None);
}

/// Finding 2: JOIN and LEAVE free a place among a user's rooms, so rooms (kept for good) are
/// also limited in how fast one user, and the whole server, can create them.
#[test]
fn room_creation_is_limited_per_user_and_overall() {
    let server = TestServer::with(|config| {
        config.new_rooms_per_user = chatd::quota::Rate {
            burst: 3,
            per: Duration::from_secs(3600),
        };
        config.new_rooms_overall = chatd::quota::Rate {
            burst: 5,
            per: Duration::from_secs(3600),
        };
    });
    let mut alice = server.login("alice");
    for n in 0..3 {
        alice.join(&format!("a{n}"));
        alice.send(&format!("LEAVE a{n}"));
        alice.expect(&format!("OK LEAVE a{n}"));
    }
    alice.send("JOIN a3");
    alice.expect_prefix("ERR rate-limited :retry in ");
    alice.join("a0");
    let mut bob = server.login("bob");
    bob.join("b0");
    bob.join("b1");
    bob.send("JOIN b2");
    bob.expect_prefix("ERR rate-limited :retry in ");
}

/// Finding 11: new user names are limited per address (here loopback counts, as with
/// `--per-ip-loopback`), so a client cannot mint users, each kept for good, without end.
#[test]
fn new_names_are_limited_per_address() {
    let server = TestServer::with(|config| {
        config.per_ip_loopback = true;
        config.max_per_ip = None;
    });
    for n in 0..30 {
        let mut client = server.connect();
        client.send(&format!("LOGIN name{n}"));
        client.expect(&format!("OK LOGIN name{n}"));
    }
    let mut one_too_many = server.connect();
    one_too_many.send("LOGIN name30");
    one_too_many.expect_prefix("ERR rate-limited :retry in ");
    one_too_many.send("LOGIN name0");
    one_too_many.expect("OK LOGIN name0");
}
