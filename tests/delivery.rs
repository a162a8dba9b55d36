//! Delivery guarantees of the fan-out: who gets a message live, in what order, and what
//! happens when one recipient vanishes or cannot keep up.

mod support;

use std::thread;
use std::time::Duration;

use support::{matches_shape, parse_stats, Client, Msg, TestServer};

/// A member who joins after a message was published gets it from HISTORY, not live.
#[test]
fn a_late_joiner_gets_earlier_messages_only_from_history() {
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let epoch = alice.join("general").epoch;
    let early = [alice.say("general", "one"), alice.say("general", "two")];

    let mut bob = server.login("bob");
    let joined = bob.join("general");
    assert_eq!((joined.seq, joined.members), (2, 2));
    alice.expect_introduced("general", "bob");
    let late = alice.say("general", "three");
    bob.expect(&late.line());

    bob.send("HISTORY general");
    for msg in early.iter().chain([&late]) {
        bob.expect(&msg.line());
    }
    bob.expect(&format!("OK HISTORY general 3 seq=3 epoch={epoch}"));
}

/// Joining mid-flood delivers live exactly the messages after the seq in OK JOIN, none lost.
#[test]
fn a_join_during_a_flood_sees_exactly_the_messages_after_it() {
    const COUNT: u64 = 200;
    let server = TestServer::start();
    let mut alice = server.login("alice");
    alice.join("general");
    let mut burst = String::new();
    for i in 1..=COUNT {
        burst.push_str(&format!("SEND general m{i}\n"));
    }
    alice.send_raw(burst.as_bytes());

    let mut bob = server.login("bob");
    let joined = bob.join("general");
    for seq in joined.seq + 1..=COUNT {
        let msg = bob.expect_msg();
        assert_eq!(
            (msg.seq, msg.body),
            (seq, format!("m{seq}")),
            "bob joined at seq {}",
            joined.seq
        );
    }
    bob.expect_quiet();

    let mut echoed = 0;
    let mut joined_seen = false;
    for _ in 0..2 * COUNT + 2 {
        let line = alice.next_line();
        if line == "PRESENCE bob online" {
            // bob is introduced just before his JOINED (they shared no room before).
            assert!(!joined_seen, "PRESENCE after JOINED");
        } else if line == "JOINED general bob" {
            assert!(!joined_seen, "JOINED twice");
            joined_seen = true;
        } else if line.starts_with("MSG ") {
            echoed += 1;
            assert_eq!(Msg::parse(&line).unwrap().seq, echoed);
        } else {
            assert!(line.starts_with("OK SEND general "), "unexpected {line:?}");
        }
    }
    assert!(joined_seen && echoed == COUNT);
    alice.expect_quiet();
}

/// With concurrent senders, seqs run 1, 2, 3, ... and every receiver sees one and the same order.
#[test]
fn every_receiver_sees_one_order_with_gap_free_seqs() {
    // Each sender's own messages also keep the order in which it sent them.
    const SENDERS: usize = 3;
    const EACH: usize = 40;
    const TOTAL: u64 = (SENDERS * EACH) as u64;
    let server = TestServer::start();
    let mut receivers: Vec<Client> = ["r1", "r2"].map(|name| server.login(name)).into();
    let mut senders: Vec<Client> = (0..SENDERS)
        .map(|i| server.login(&format!("s{i}")))
        .collect();
    let mut everyone: Vec<&mut Client> = receivers.iter_mut().chain(senders.iter_mut()).collect();
    for i in 0..everyone.len() {
        everyone[i].join("general");
        let name = everyone[i].name().to_owned();
        for earlier in everyone[..i].iter_mut() {
            earlier.expect_introduced("general", &name);
        }
    }

    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(t, mut sender)| {
            thread::spawn(move || {
                let mut burst = String::new();
                for i in 0..EACH {
                    burst.push_str(&format!("SEND general s{t} {i}\n"));
                }
                sender.send_raw(burst.as_bytes());
                let lines = collect_flood(&mut sender, TOTAL, EACH);
                (lines, sender)
            })
        })
        .collect();
    let mut seen: Vec<Vec<String>> = receivers
        .iter_mut()
        .map(|receiver| collect_flood(receiver, TOTAL, 0))
        .collect();
    for thread in threads {
        let (lines, sender) = thread.join().expect("sender thread");
        seen.push(lines);
        receivers.push(sender);
    }
    for client in &mut receivers {
        client.expect_quiet();
    }

    for lines in &seen[1..] {
        assert_eq!(lines, &seen[0], "two receivers saw different streams");
    }
    for t in 0..SENDERS {
        let mine: Vec<String> = seen[0]
            .iter()
            .map(|line| Msg::parse(line).unwrap())
            .filter(|msg| msg.sender == format!("s{t}"))
            .map(|msg| msg.body)
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("s{t} {i}")).collect();
        assert_eq!(mine, sent, "s{t}'s messages out of order");
    }
}

/// Reads `total` MSG lines (and `acks` OK SEND lines, interleaved) and checks the MSG seqs
/// run 1..=total; returns the MSG lines.
fn collect_flood(client: &mut Client, total: u64, acks: usize) -> Vec<String> {
    let mut msgs = Vec::new();
    let mut ack_seqs = Vec::new();
    while msgs.len() < total as usize || ack_seqs.len() < acks {
        let line = client.next_line();
        if let Ok(msg) = Msg::parse(&line) {
            assert_eq!(msg.seq, msgs.len() as u64 + 1, "{}: seq gap", client.name());
            msgs.push(line);
        } else if matches_shape(&line, "OK SEND general <n> <id>").is_ok() && ack_seqs.len() < acks
        {
            ack_seqs.push(line.split(' ').nth(3).unwrap().parse::<u64>().unwrap());
        } else {
            client.fail(&format!("unexpected line during the flood: {line:?}"));
        }
    }
    assert!(
        ack_seqs.windows(2).all(|w| w[0] < w[1]),
        "acks out of order"
    );
    msgs
}

/// One member of the flood room that keeps up: it must see every message, in order.
struct Reader {
    client: Client,
    departed: bool,
}

impl Reader {
    fn new(client: Client) -> Reader {
        Reader {
            client,
            departed: false,
        }
    }

    fn next(&mut self, gone: &str) -> String {
        self.client.next_besides_departure(gone, &mut self.departed)
    }
}

/// Publishes `body` from `sender` and checks, within the deadline, that the sender gets its
/// OK and echo and `watcher` gets the same MSG; returns the message.
fn publish(sender: &mut Reader, watcher: &mut Reader, gone: &str, seq: u64, body: &str) -> Msg {
    sender.client.send(&format!("SEND flood {body}"));
    let ok = sender.next(gone);
    let line = sender.next(gone);
    let msg = Msg::parse(&line).unwrap_or_else(|why| sender.client.fail(&why));
    assert_eq!(ok, format!("OK SEND flood {seq} {}", msg.id));
    assert_eq!((msg.seq, msg.body.as_str()), (seq, body));
    let seen = watcher.next(gone);
    if seen != line {
        watcher
            .client
            .fail(&format!("expected {:?}\n     got {seen:?}", &line[..60]));
    }
    msg
}

fn stat(reader: &mut Reader, gone: &str, key: &str) -> u64 {
    reader.client.send("STATS");
    let line = reader.next(gone);
    parse_stats(&line)
        .and_then(|stats| stats.get(key).copied())
        .unwrap_or_else(|| {
            reader
                .client
                .fail(&format!("expected OK STATS with {key}, got {line:?}"))
        })
}

/// Members of `flood`, all caught up, in the order given.
fn flood_room<const N: usize>(server: &TestServer, names: [&str; N]) -> [Client; N] {
    let mut clients = names.map(|name| server.login(name));
    for (i, name) in names.iter().enumerate() {
        let (earlier, rest) = clients.split_at_mut(i);
        rest[0].join("flood");
        for client in earlier {
            client.expect_introduced("flood", name);
        }
    }
    clients
}

/// A member whose socket vanishes mid-flood is dropped; everyone else gets every message, in order.
#[test]
fn a_client_that_vanishes_mid_publish_does_not_disturb_the_others() {
    // The socket is dropped with unread data, so the server sees a reset; its departure is
    // announced once.
    const COUNT: u64 = 300;
    const BURST: u64 = 10;
    let server = TestServer::start();
    let [sender, watcher, vanisher] = flood_room(&server, ["sender", "watcher", "vanisher"]);
    let mut vanisher = Some(vanisher);
    let mut sender = Reader::new(sender);
    let mut watcher = Reader::new(watcher);
    let gone = "vanisher";
    let mut lines = Vec::new();
    for burst in 0..COUNT / BURST {
        let mut commands = String::new();
        for i in 1..=BURST {
            let seq = burst * BURST + i;
            commands.push_str(&format!("SEND flood m{seq}\n"));
        }
        sender.client.send_raw(commands.as_bytes());
        if burst == COUNT / BURST / 2 {
            // Mid-publish: the server is fanning out this burst as the socket goes.
            drop(vanisher.take());
        }
        for i in 1..=BURST {
            let seq = burst * BURST + i;
            let ok = sender.next(gone);
            assert!(ok.starts_with(&format!("OK SEND flood {seq} ")), "{ok:?}");
            let line = sender.next(gone);
            assert_eq!(Msg::parse(&line).unwrap().seq, seq);
            lines.push(line);
        }
        for line in &lines {
            let seen = watcher.next(gone);
            assert_eq!(&seen, line, "watcher out of step");
        }
        lines.clear();
    }
    for reader in [&mut sender, &mut watcher] {
        if !reader.departed {
            let line = reader.client.next_line();
            if matches_shape(&line, "PRESENCE vanisher offline last_seen=<ts>").is_err() {
                reader.client.fail("expected the vanisher's departure");
            }
        }
    }
    let stats = sender.client.stats();
    assert_eq!(
        (
            stats["messages"],
            stats["sessions"],
            stats["slow_consumers"]
        ),
        (COUNT, 2, 0)
    );
    sender.client.expect_quiet();
    watcher.client.expect_quiet();
}

/// A member that never reads is cut off as a slow consumer while the others keep up promptly.
#[test]
fn a_slow_consumer_is_disconnected_and_nobody_waits_for_it() {
    // When it finally reads it finds a gap-free prefix, then `BYE slow-consumer`, then EOF.
    // The others get every message within the read deadline although the stalled socket's
    // writes may block for a whole minute here: nobody waited for it.
    const MAX_MESSAGES: u64 = 20_000;
    const AFTER: u64 = 50;
    let server = TestServer::with(|config| {
        config.channel_capacity = 16;
        config.write_timeout = Duration::from_secs(60);
    });
    let mut slow = Client::connect_with_receive_buffer(server.addr(), 4096);
    slow.login("slow");
    slow.join("flood");
    let [sender, watcher] = flood_room(&server, ["sender", "watcher"]);
    slow.expect_introduced("flood", "sender");
    slow.expect_introduced("flood", "watcher");
    let mut sender = Reader::new(sender);
    let mut watcher = Reader::new(watcher);
    let gone = "slow";
    let filler = "x".repeat(3900);
    let body = |seq: u64| format!("{seq:05} {filler}");

    // Flood until the server reports the slow consumer, checking every message on the way.
    let mut seq = 0;
    let mut cut_at = None;
    while seq < MAX_MESSAGES {
        seq += 1;
        publish(&mut sender, &mut watcher, gone, seq, &body(seq));
        if cut_at.is_none() && seq % 64 == 0 && stat(&mut sender, gone, "slow_consumers") == 1 {
            cut_at = Some(seq);
        }
        if cut_at.is_some_and(|cut| seq == cut + AFTER) {
            break;
        }
    }
    let cut_at = cut_at
        .unwrap_or_else(|| panic!("{MAX_MESSAGES} messages never made a 16-slot queue overflow"));
    for reader in [&mut sender, &mut watcher] {
        if !reader.departed {
            let line = reader.client.next_line();
            if matches_shape(&line, "PRESENCE slow offline last_seen=<ts>").is_err() {
                reader.client.fail("expected the slow consumer's departure");
            }
        }
    }

    // Now the slow consumer reads: what it was owed before falling behind, then goodbye.
    let rest = slow.read_until_closed();
    let (bye, msgs) = rest
        .split_last()
        .expect("the slow consumer got nothing at all");
    for (i, line) in msgs.iter().enumerate() {
        let msg = Msg::parse(line).unwrap_or_else(|why| slow.fail(&why));
        assert_eq!((msg.seq, msg.body), (i as u64 + 1, body(i as u64 + 1)));
    }
    let last = msgs.len() as u64;
    assert!(last < cut_at, "the slow consumer got {last} of {cut_at}");
    assert!(
        bye.starts_with("BYE slow-consumer ") && bye.contains(" :"),
        "expected BYE slow-consumer, got {bye:?}"
    );
    if let Some(cursor) = support::field(bye, "flood") {
        assert_eq!(cursor, last.to_string(), "BYE names the last seq written");
    }

    let stats = sender.client.stats();
    assert_eq!(
        (
            stats["slow_consumers"],
            stats["sessions"],
            stats["messages"]
        ),
        (1, 2, seq)
    );
    watcher.client.expect_quiet();
}

/// Members of a quiet room far bigger than the write-through budget of a busy room: each
/// fan-out writes through to all of them (`delivery::write_through`, "Which fan-outs").
/// Every member still gets every message once, whole, in seq order.
#[test]
fn a_quiet_big_room_gets_every_message_once_in_order() {
    const MEMBERS: usize = 200; // far above write_through::BUDGET
    const MESSAGES: u64 = 5;
    let server = TestServer::start();
    let mut members: Vec<Client> = (0..MEMBERS)
        .map(|n| {
            let mut member = server.login(&format!("quiet{n}"));
            member.join("quietbig");
            member
        })
        .collect();
    let mut poster = server.login("poster");
    poster.join("quietbig");
    for n in 1..=MESSAGES {
        poster.say("quietbig", &format!("hello-{n}"));
        // A pause longer than write_through::QUIET, so the room is quiet for the next post and
        // it is written through whole (a busy room takes the writers' path, which must
        // deliver the same).
        thread::sleep(Duration::from_millis(5));
    }
    for member in &mut members {
        for n in 1..=MESSAGES {
            let msg = next_msg(member);
            assert_eq!(
                (msg.seq, msg.body.as_str()),
                (n, format!("hello-{n}").as_str()),
                "{}: a message lost, repeated or out of order",
                member.name()
            );
        }
    }
}

/// The next `MSG`, skipping the `JOINED` lines of the members who joined later.
fn next_msg(client: &mut Client) -> Msg {
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with("MSG ") {
            return Msg::parse(&line).unwrap_or_else(|e| client.fail(&e));
        }
    }
    client.fail("no MSG among 1,000 lines")
}
