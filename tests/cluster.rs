//! Cluster mode (issue 15): nodes sharing rooms through a real redis-server, each test with
//! its own Redis (AOF on, fsync always) on a free loopback port. See tests/support/cluster.rs.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::cluster::{eventually, node, node_with, Redis};
use support::{Client, Msg};

/// Reads lines until `count` MSG lines of `room` have arrived (other lines are skipped),
/// within a deadline.
fn collect_msgs(client: &mut Client, room: &str, count: usize) -> Vec<Msg> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut msgs = Vec::new();
    while msgs.len() < count {
        assert!(
            Instant::now() < deadline,
            "{}: {} of {count} messages",
            client.name(),
            msgs.len()
        );
        let line = client.next_line();
        if line.starts_with(&format!("MSG {room} ")) {
            msgs.push(Msg::parse(&line).expect("a well-formed MSG"));
        }
    }
    msgs
}

/// The messages as (seq, id, sender, body): what every member must agree on.
fn agreed(msgs: &[Msg]) -> Vec<(u64, String, String, String)> {
    msgs.iter()
        .map(|m| (m.seq, m.id.clone(), m.sender.clone(), m.body.clone()))
        .collect()
}

/// Seqs are 1, 2, 3, ... and ids and times never go back: the room's one order.
fn assert_one_order(msgs: &[Msg]) {
    for (i, pair) in msgs.windows(2).enumerate() {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "seqs contiguous at {i}");
        assert!(pair[1].id > pair[0].id, "ids in seq order at {i}: {pair:?}");
        assert!(
            pair[1].sent_at >= pair[0].sent_at,
            "times in seq order at {i}"
        );
    }
}

/// Two members on different nodes post in turn and a third watches from the second node: all
/// three see the same messages, with the same seqs and ids, in one order.
#[test]
fn members_on_two_nodes_see_the_same_messages_in_the_same_order() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    let mut carol = b.login("carol");
    let first = alice.join("general");
    assert_eq!(first.seq, 0);
    let second = bob.join("general");
    assert_eq!(
        second.epoch, first.epoch,
        "one room, one epoch, whichever node"
    );
    carol.join("general");

    const EACH: usize = 20;
    for i in 0..EACH {
        alice.send(&format!("SEND general a{i}"));
        bob.send(&format!("SEND general b{i}"));
    }
    let seen_by_alice = collect_msgs(&mut alice, "general", 2 * EACH);
    let seen_by_bob = collect_msgs(&mut bob, "general", 2 * EACH);
    let seen_by_carol = collect_msgs(&mut carol, "general", 2 * EACH);
    assert_eq!(seen_by_alice[0].seq, 1);
    assert_one_order(&seen_by_alice);
    assert_eq!(agreed(&seen_by_alice), agreed(&seen_by_bob));
    assert_eq!(agreed(&seen_by_alice), agreed(&seen_by_carol));
    for i in 0..EACH {
        for body in [format!("a{i}"), format!("b{i}")] {
            let copies = seen_by_carol.iter().filter(|m| m.body == body).count();
            assert_eq!(copies, 1, "{body} exactly once");
        }
    }
}

/// A DM between users on two nodes reaches the other node, and both sides agree on it.
#[test]
fn a_dm_crosses_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    alice.send("DM bob hello from a");
    // Bob's presence may reach node A around the DM (its push races the DM's room), so a
    // `PRESENCE bob online` may come first.
    let ok = next_with_prefix(&mut alice, "OK DM bob dm:alice:bob 1 ");
    let mine = collect_msgs(&mut alice, "dm:alice:bob", 1);
    let theirs = collect_msgs(&mut bob, "dm:alice:bob", 1);
    assert_eq!(agreed(&mine), agreed(&theirs));
    assert!(ok.ends_with(&mine[0].id), "{ok}");
    bob.send("DM alice and back");
    next_with_prefix(&mut bob, "OK DM alice dm:alice:bob 2 ");
    let back = collect_msgs(&mut alice, "dm:alice:bob", 1);
    assert_eq!((back[0].seq, back[0].body.as_str()), (2, "and back"));
}

/// The next line starting with `prefix`, skipping `PRESENCE` lines (bounded).
fn next_with_prefix(client: &mut Client, prefix: &str) -> String {
    for _ in 0..100 {
        let line = client.next_line();
        if line.starts_with(prefix) {
            return line;
        }
        if !line.starts_with("PRESENCE ") {
            client.fail(&format!("expected {prefix:?}, got {line:?}"));
        }
    }
    client.fail(&format!("no {prefix:?}"))
}

/// A client id used on one node answers a retry on another node with the original `OK`, and
/// posts nothing: the id is checked in the shared log, cluster-wide.
#[test]
fn a_retried_cid_is_posted_once_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice_a = a.login("alice");
    alice_a.join("general");
    alice_a.send("@cid=c1 SEND general once");
    let ok = alice_a.expect_prefix("OK SEND general 1 ");
    drop(alice_a);
    let mut alice_b = b.connect();
    alice_b.send("LOGIN alice");
    alice_b.expect("OK LOGIN alice");
    alice_b.send("@cid=c1 SEND general once");
    // (Message 1 may reach this new session live first: node b settles it when its push
    // arrives, which can be after this login.)
    assert_eq!(next_ok_send(&mut alice_b), ok);
    alice_b.send("@cid=c2 SEND general twice");
    assert!(next_ok_send(&mut alice_b).starts_with("OK SEND general 2 "));
    let len: u64 = redis::cmd("XLEN")
        .arg("r:{general}:log")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(len, 2, "the retry posted nothing");
}

/// SYNC on another node replays from the shared log: what was posted on node a before the
/// client ever touched node b.
#[test]
fn sync_on_another_node_replays_the_shared_log() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let join = alice.join("general");
    for i in 1..=5 {
        alice.say("general", &format!("m{i}"));
    }
    let mut bob = b.login("bob");
    bob.join("general");
    bob.send(&format!("SYNC general 2 epoch={}", join.epoch));
    let replayed = collect_msgs(&mut bob, "general", 3);
    assert_eq!(
        replayed.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    bob.expect_prefix("OK SYNC general ");
}

/// The fan-in's subscription is cut (`CLIENT KILL TYPE pubsub`) while another node keeps
/// posting: the cut node resubscribes and repairs from the log, and its sessions miss
/// nothing and see nothing twice.
#[test]
fn a_cut_subscription_is_repaired_from_the_log() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    alice.join("general");
    bob.join("general");
    const TOTAL: usize = 200;
    let mut admin = redis.connection();
    for i in 0..TOTAL {
        alice.send(&format!("SEND general m{i}"));
        if i % 50 == 25 {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query(&mut admin)
                .unwrap();
        }
    }
    let seen = collect_msgs(&mut bob, "general", TOTAL);
    assert_one_order(&seen);
    assert_eq!(seen[0].seq, 1);
    let mine = collect_msgs(&mut alice, "general", TOTAL);
    assert_eq!(agreed(&seen), agreed(&mine));
    bob.expect_quiet();
    // Both nodes subscribed again, each to exactly its rooms (and its wake channel).
    eventually("both nodes follow exactly general again", || {
        let rooms = channels(&mut admin, "c:*");
        let followers = numsub(&mut admin, "c:general");
        let woken = (numsub(&mut admin, "w:a"), numsub(&mut admin, "w:b"));
        (rooms == ["c:general"] && followers == 2 && woken == (1, 1)).then_some(())
    });
}

/// `PUBSUB NUMSUB <channel>`: how many connections are subscribed to it.
fn numsub(admin: &mut redis::Connection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(admin)
        .expect("PUBSUB NUMSUB");
    count
}

/// `PUBSUB CHANNELS <pattern>`, sorted.
fn channels(admin: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut names: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(pattern)
        .query(admin)
        .expect("PUBSUB CHANNELS");
    names.sort();
    names
}

/// A node subscribes to the channels of the rooms its sessions are in, not to every room: a
/// room with no member on node b is not followed there (Redis pushes b nothing for it); a
/// member joining on b after traffic on a gets the whole history and then every new message,
/// in one order; and once the last member there left and the room sat idle (`--recent-idle`),
/// b unsubscribes from it again.
#[test]
fn a_node_follows_only_the_rooms_its_sessions_are_in() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, "a");
    let b = node_with(&redis, "b", |config| {
        config.recent_idle = Duration::from_millis(300);
    });
    let mut admin = redis.connection();
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    alice.join("general");
    bob.join("general");
    expect_soon(&mut alice, "JOINED general bob");
    alice.join("quiet");
    for i in 0..20 {
        alice.say("quiet", &format!("q{i}"));
    }
    assert_eq!(
        numsub(&mut admin, "c:general"),
        2,
        "both nodes follow general"
    );
    assert_eq!(
        numsub(&mut admin, "c:quiet"),
        1,
        "only node a follows quiet"
    );

    let joined = bob.join("quiet");
    assert_eq!(joined.seq, 20);
    assert_eq!(
        numsub(&mut admin, "c:quiet"),
        2,
        "b subscribed before OK JOIN"
    );
    bob.send("SYNC quiet 0");
    let mut seen = collect_msgs(&mut bob, "quiet", 20);
    expect_soon(&mut alice, "JOINED quiet bob");
    for i in 20..25 {
        alice.say("quiet", &format!("q{i}"));
    }
    seen.extend(collect_msgs(&mut bob, "quiet", 5));
    assert_one_order(&seen);
    assert_eq!(seen.last().map(|m| m.seq), Some(25));

    bob.send("LEAVE quiet");
    expect_soon(&mut bob, "OK LEAVE quiet");
    // The sweep (every 5 s) unfollows the room once it was idle for --recent-idle.
    eventually("b unsubscribed from quiet", || {
        (numsub(&mut admin, "c:quiet") == 1).then_some(())
    });
    assert_eq!(
        numsub(&mut admin, "c:general"),
        2,
        "b still follows general"
    );
    assert_eq!(channels(&mut admin, "c:*"), ["c:general", "c:quiet"]);

    // An invitation reaches b, which no longer follows the room, through bob's own channel.
    alice.send("PRIVATE quiet on");
    expect_soon(&mut alice, "OK PRIVATE quiet on");
    alice.send("INVITE quiet bob");
    expect_soon(&mut alice, "OK INVITE quiet bob");
    expect_soon(&mut bob, "INVITED quiet alice");
    let rejoined = bob.join("quiet");
    assert_eq!(rejoined.seq, 25);
}

/// Redis is killed and restarted during traffic (AOF, fsync always): every acknowledged
/// message is still there afterwards, and sends after the restart continue the same seqs.
#[test]
fn a_redis_restart_loses_nothing_acknowledged() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    let join = alice.join("general");
    bob.join("general");
    alice.expect("JOINED general bob");
    let mut acked = HashMap::new();
    for i in 0..20 {
        let msg = alice.say("general", &format!("before{i}"));
        acked.insert(msg.seq, msg.id);
    }
    redis.crash_and_restart();
    // Sends fail (ERR store-failed) until the node's connections are back; retried with the
    // same cid, each is posted once.
    for i in 0..20 {
        let body = format!("after{i}");
        let ok = eventually("a send after the restart is acknowledged", || {
            alice.send(&format!("@cid=after{i} SEND general {body}"));
            loop {
                let line = alice.next_line();
                if line.starts_with("OK SEND general ") {
                    return Some(line);
                }
                if line.starts_with("ERR ") {
                    return None;
                }
            }
        });
        let fields: Vec<&str> = ok.split(' ').collect();
        acked.insert(fields[3].parse().unwrap(), fields[4].to_owned());
    }
    assert_eq!(acked.len(), 40);
    assert_eq!(
        *acked.keys().max().unwrap(),
        40,
        "seqs went on, no reuse, no holes"
    );
    let mut carol = b.login("carol");
    carol.join("general");
    carol.send(&format!("SYNC general 0 epoch={}", join.epoch));
    let all = collect_msgs(&mut carol, "general", 40);
    assert_one_order(&all);
    for m in &all {
        assert_eq!(
            acked.get(&m.seq),
            Some(&m.id),
            "acknowledged message {} kept",
            m.seq
        );
    }
}

/// kill -9 of one of three nodes while three senders flood one room through haproxy: every
/// client reconnects through the proxy to a surviving node, resumes with SYNC (seq + epoch)
/// and retries its unacknowledged sends by cid. Afterwards the room's log is contiguous,
/// holds every message once, and every reader saw every message once, in order.
#[test]
fn kill_9_of_a_node_mid_flood_loses_and_repeats_nothing() {
    use chatd_client::{Client as ChatClient, Config, Event};
    use support::cluster::{node_args, Haproxy};
    use support::ChatdProcess;

    let Some(redis) = Redis::start() else { return };
    let start = |id: &str| {
        let args = node_args(&redis, id);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        ChatdProcess::start(&args)
    };
    let nodes = [start("a"), start("b"), start("c")];
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let Some(proxy) = Haproxy::start(&addrs) else {
        return;
    };
    let client = |user: &str| {
        let mut config = Config::new(proxy.addr.to_string(), user)
            .device("test")
            .backoff(Duration::from_millis(10), Duration::from_millis(200));
        config.connect_timeout = Duration::from_secs(20);
        let mut client = ChatClient::connect(config).expect("connects through the proxy");
        client.join("flood").expect("joins");
        client
    };
    // Round robin: each group of three lands one on each node.
    let mut readers: Vec<ChatClient> = (0..3).map(|i| client(&format!("reader{i}"))).collect();
    let senders: Vec<ChatClient> = (0..3).map(|i| client(&format!("sender{i}"))).collect();

    const EACH: usize = 150;
    const TOTAL: usize = 3 * EACH;
    let flooders: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, mut sender)| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    sender
                        .send("flood", &format!("s{s}-{i}"))
                        .expect("each send is acknowledged, node crash or not");
                }
                sender
            })
        })
        .collect();

    let mut drops = 0;
    let mut collect =
        |reader: &mut ChatClient, count: usize, seen: &mut Vec<chatd_client::Message>| {
            let deadline = Instant::now() + Duration::from_secs(90);
            while seen.len() < count {
                let left = deadline.saturating_duration_since(Instant::now());
                match reader.next_event(left).expect("the session goes on") {
                    Some(Event::Message(m)) if m.room == "flood" => seen.push(m),
                    Some(Event::Disconnected { .. }) => drops += 1,
                    Some(Event::Gap { .. }) | Some(Event::EpochReset { .. }) => {
                        panic!("Redis kept everything: no gap, no reset")
                    }
                    Some(_) => {}
                    None => panic!("{count} messages within 90 s: got {}", seen.len()),
                }
            }
        };
    let mut seen: Vec<Vec<chatd_client::Message>> = vec![Vec::new(); 3];
    collect(&mut readers[0], TOTAL / 3, &mut seen[0]);
    let [a, _b, _c] = nodes;
    assert!(
        flooders.iter().all(|f| !f.is_finished()),
        "the crash comes mid-flood"
    );
    a.crash();
    for (reader, seen) in readers.iter_mut().zip(seen.iter_mut()) {
        collect(reader, TOTAL, seen);
    }
    for flooder in flooders {
        flooder.join().expect("the flooder finished");
    }
    assert!(drops >= 1, "the reader on the killed node reconnected");

    for (r, seen) in seen.iter().enumerate() {
        for (i, m) in seen.iter().enumerate() {
            assert_eq!(m.seq, 1 + i as u64, "reader{r}: message {i} in order, once");
        }
        let mut bodies: Vec<&str> = seen.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_unstable();
        bodies.dedup();
        assert_eq!(bodies.len(), TOTAL, "reader{r}: every body once");
    }
    assert_eq!(
        seen[0].iter().map(|m| &m.id).collect::<Vec<_>>(),
        seen[1].iter().map(|m| &m.id).collect::<Vec<_>>(),
        "readers on different nodes agree"
    );
    assert_eq!(
        seen[0].iter().map(|m| &m.id).collect::<Vec<_>>(),
        seen[2].iter().map(|m| &m.id).collect::<Vec<_>>(),
        "readers on different nodes agree"
    );
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("r:{flood}:log")
        .arg("-")
        .arg("+")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(
        entries.len(),
        TOTAL,
        "the log holds each acknowledged message once"
    );
    for (i, (id, _)) in entries.iter().enumerate() {
        assert_eq!(id, &format!("{}-0", i + 1), "the log is contiguous");
    }
}

/// Redis loses everything (killed, data deleted, restarted): the nodes notice, the room comes
/// back under a new epoch when it is joined again, and a client resuming with its old cursor
/// is told `EPOCH`, never silently handed restarted seqs.
#[test]
fn a_wiped_redis_shows_clients_a_new_epoch() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let old = alice.join("general");
    for i in 0..3 {
        alice.say("general", &format!("m{i}"));
    }
    redis.wipe_and_restart();
    let mut bob = b.login("bob");
    let new = eventually("the room comes back under a new epoch", || {
        bob.send("JOIN general");
        let line = next_join(&mut bob);
        let join = support::JoinReply::parse(&line).expect("OK JOIN");
        (join.epoch != old.epoch).then_some(join)
    });
    assert_eq!(new.seq, 0);
    bob.send(&format!("SYNC general 3 epoch={}", old.epoch));
    loop {
        let line = bob.next_line();
        assert!(!line.starts_with("OK SYNC"), "no EPOCH before {line}");
        if line.starts_with("EPOCH ") {
            assert!(
                line.starts_with(&format!("EPOCH general {} ", new.epoch)),
                "{line}"
            );
            break;
        }
    }
    // And node a, where the room lived, agrees once it noticed too.
    let again = eventually("node a sees the new epoch", || {
        alice.send("JOIN general");
        let line = next_join(&mut alice);
        let join = support::JoinReply::parse(&line).expect("OK JOIN");
        (join.epoch == new.epoch).then_some(join)
    });
    assert_eq!(again.seq, 0);
}

/// The next `OK JOIN general` line, skipping what the room sends meanwhile.
fn next_join(client: &mut Client) -> String {
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with("OK JOIN general ") {
            return line;
        }
    }
    client.fail("no OK JOIN")
}

/// Reads lines (skipping others, bounded) until `expected` arrives.
fn expect_soon(client: &mut Client, expected: &str) {
    for _ in 0..1_000 {
        if client.next_line() == expected {
            return;
        }
    }
    client.fail(&format!("no {expected:?}"))
}

/// Typing, read receipts and a device's new login reach the other node: a member there sees
/// the typing and the receipt, the user's own device there sees their read position, and the
/// same device logging in on the other node replaces the old session with `BYE replaced`.
#[test]
fn typing_receipts_and_device_takeover_cross_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut laptop = a.login_device("alice", "laptop");
    let mut phone = b.login_device("alice", "phone");
    let mut bob = b.login("bob");
    laptop.join("general");
    bob.join("general");
    expect_soon(&mut laptop, "JOINED general bob");

    laptop.send("TYPING general");
    expect_soon(&mut bob, "TYPING general alice");
    laptop.send("TYPING general stop");
    expect_soon(&mut bob, "TYPING general alice stop");
    expect_soon(&mut laptop, "OK TYPING general stop");

    let msg = laptop.say("general", "hello");
    collect_msgs(&mut bob, "general", 1);
    bob.send(&format!("READ general {}", msg.seq));
    expect_soon(&mut laptop, &format!("READ general bob {}", msg.seq));
    bob.expect(&format!("OK READ general {}", msg.seq));
    let reply = bob.say("general", "hi");
    collect_msgs(&mut laptop, "general", 1);
    laptop.send(&format!("READ general {}", reply.seq));
    expect_soon(&mut phone, &format!("READ general alice {}", reply.seq));

    let mut laptop_on_b = b.connect();
    laptop_on_b.send("LOGIN alice device=laptop");
    laptop_on_b.expect("OK LOGIN alice");
    expect_soon(
        &mut laptop,
        "BYE replaced :you logged in again from this device",
    );
    laptop.expect_closed();
    phone.send("PING still");
    expect_soon(&mut phone, "PONG still");
}

/// The WHO lines of `room` as `client` gets them, in order.
fn who(client: &mut Client, room: &str) -> Vec<String> {
    client.send(&format!("WHO {room}"));
    let mut lines = Vec::new();
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with("OK WHO ") {
            return lines;
        }
        if line.starts_with(&format!("WHO {room} ")) {
            lines.push(line);
        }
    }
    client.fail("no OK WHO")
}

/// Presence crosses nodes: a user's last session ending on node a is announced offline to a
/// peer on node b, their return (on node b) online, and WHO answers the same on both nodes.
#[test]
fn presence_and_who_agree_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    alice.join("general");
    bob.join("general");
    expect_soon(&mut alice, "JOINED general bob");
    let mut carol = a.login("carol");
    carol.join("general");

    alice.send("QUIT");
    let offline = loop {
        let line = bob.next_line();
        if line.starts_with("PRESENCE alice offline last_seen=") {
            break line;
        }
    };
    let on_b = eventually("WHO on b shows alice offline", || {
        let lines = who(&mut bob, "general");
        lines
            .iter()
            .any(|l| l.starts_with("WHO general alice offline"))
            .then_some(lines)
    });
    // Each node shows the change when its own fan-in brings it: they agree, promptly.
    eventually("WHO agrees on both nodes", || {
        (who(&mut carol, "general") == on_b).then_some(())
    });
    assert!(
        offline.ends_with(on_b[0].rsplit(' ').next().unwrap()),
        "{offline} {on_b:?}"
    );

    let _alice_again = b.login("alice");
    expect_soon(&mut carol, "PRESENCE alice online");
    let on_a = eventually("WHO on a shows alice online", || {
        let lines = who(&mut carol, "general");
        lines
            .contains(&"WHO general alice online".to_owned())
            .then_some(lines)
    });
    eventually("WHO agrees on both nodes", || {
        (who(&mut bob, "general") == on_a).then_some(())
    });
}

/// A node killed with SIGKILL stops renewing its lease: its users are shown offline on the
/// other nodes after the lease (1 s here) and the grace (0), unless they reconnected
/// elsewhere first, and then nothing is announced about them.
#[test]
fn a_dead_nodes_users_go_offline_after_its_lease() {
    use support::cluster::node_args;
    use support::ChatdProcess;
    let Some(redis) = Redis::start() else { return };
    let args = node_args(&redis, "doomed");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let doomed = ChatdProcess::start(&args);
    let b = node(&redis, "b");
    let mut alice = doomed.login("alice");
    let mut dave = doomed.login("dave");
    let mut bob = b.login("bob");
    for client in [&mut alice, &mut dave, &mut bob] {
        client.join("general");
    }
    let mut who_b = b.login("watcher");
    who_b.join("general");
    // dave moves to node b before the crash: he stays online throughout.
    let _dave_on_b = b.login("dave");
    doomed.crash();
    let started = Instant::now();
    let offline = loop {
        let line = bob.next_line();
        assert!(
            !line.starts_with("PRESENCE dave offline"),
            "dave reconnected elsewhere"
        );
        if line.starts_with("PRESENCE alice offline") {
            break started.elapsed();
        }
    };
    assert!(
        offline >= Duration::from_millis(300),
        "not before the lease ran out"
    );
    let lines = who(&mut who_b, "general");
    assert!(
        lines.contains(&"WHO general dave online".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WHO general alice offline")),
        "{lines:?}"
    );
    drop(dave);
}

/// The next `OK SEND` line, skipping messages that arrive meanwhile.
fn next_ok_send(client: &mut Client) -> String {
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with("OK SEND ") {
            return line;
        }
    }
    client.fail("no OK SEND")
}

/// A password set through one node is required on every node: each LOGIN reads the account
/// from Redis, so a name registered on A cannot be taken on B without it.
#[test]
fn a_password_set_on_one_node_is_required_on_another() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut owner = a.connect();
    owner.send("LOGIN alice password=correct-horse");
    owner.expect("OK LOGIN alice");

    let mut impostor = b.connect();
    impostor.send("LOGIN alice");
    impostor.expect("ERR bad-password :alice is registered: LOGIN alice password=<password>");
    impostor.send("LOGIN alice password=battery-staple");
    impostor.expect_prefix("ERR bad-password :");

    let mut laptop = b.connect();
    laptop.send("LOGIN alice password=correct-horse");
    laptop.expect("OK LOGIN alice");
}

/// The next `JOINED`/`LEFT` line of `room`, skipping others (bounded).
fn next_membership(client: &mut Client, room: &str) -> String {
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with(&format!("JOINED {room} "))
            || line.starts_with(&format!("LEFT {room} "))
        {
            return line;
        }
    }
    client.fail("no JOINED or LEFT")
}

/// PRIVATE, INVITE and KICK by an owner on node A take effect at once on node B, which
/// follows the room: an outsider there gets the invite-only room's decoy, an invitee there is
/// told `INVITED` and let in, and a kicked member there is told `KICKED`, loses the membership
/// there, and the other members there see `LEFT`.
#[test]
fn owner_actions_take_effect_on_every_node() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.login("alice");
    let mut carol = b.login("carol");
    let mut bob = b.login("bob");
    let mut dave = b.login("dave");
    let real = alice.join("club");
    carol.join("club");
    assert_eq!(next_membership(&mut alice, "club"), "JOINED club carol");

    alice.send("PRIVATE club on");
    alice.expect("OK PRIVATE club on");
    // The room's pushes reach node B in order: once carol there has this message, node B has
    // applied the PRIVATE published before it.
    let marker = alice.say("club", "now private");
    let seen = collect_msgs(&mut carol, "club", 1);
    assert_eq!(seen[0].id, marker.id);
    let decoy = dave.join("club");
    assert_eq!(
        (decoy.seq, decoy.members),
        (0, 1),
        "an outsider on B is not let in"
    );
    assert_ne!(
        decoy.epoch, real.epoch,
        "an outsider on B learns nothing of the room"
    );

    alice.send("INVITE club bob");
    alice.expect("OK INVITE club bob");
    expect_soon(&mut bob, "INVITED club alice");
    let joined = bob.join("club");
    assert_eq!(
        (joined.epoch.as_str(), joined.members),
        (real.epoch.as_str(), 3)
    );
    // Dave's decoy JOIN made nobody a member: the next membership change alice sees is bob.
    assert_eq!(next_membership(&mut alice, "club"), "JOINED club bob");

    alice.send("KICK club carol");
    alice.expect("LEFT club carol");
    alice.expect("OK KICK club carol");
    expect_soon(&mut carol, "KICKED club alice");
    assert_eq!(next_membership(&mut bob, "club"), "LEFT club carol");
    carol.send("SEND club still here?");
    carol.expect_prefix("ERR ");
    let shut_out = carol.join("club");
    assert_ne!(
        shut_out.epoch, real.epoch,
        "kicked from an invite-only room on B too"
    );

    // An invitation withdrawn by a KICK reaches the invitee on the other node as well.
    alice.send("INVITE club dave");
    alice.expect("OK INVITE club dave");
    expect_soon(&mut dave, "INVITED club alice");
    alice.send("KICK club dave");
    alice.expect("OK KICK club dave");
    expect_soon(&mut dave, "KICKED club alice");
    let refused = dave.join("club");
    assert_ne!(
        refused.epoch, real.epoch,
        "the withdrawn invitation no longer admits"
    );
}

/// The key directory crosses nodes: a key published on node A is announced (`DEVICE`) to a DM
/// peer and to the user's other device on node B, listed by `KEYS` on B and on a node C that
/// never met the user, and its revocation reaches all of them too.
#[test]
fn the_key_directory_crosses_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let mut laptop = a.login_device("alice", "laptop");
    let mut phone = b.login_device("alice", "phone");
    let mut bob = b.login_device("bob", "laptop");
    bob.send("DM alice hello");
    next_with_prefix(&mut bob, "OK DM alice dm:alice:bob 1 ");
    collect_msgs(&mut laptop, "dm:alice:bob", 1);
    collect_msgs(&mut phone, "dm:alice:bob", 1);

    let key = "ab".repeat(32);
    laptop.send(&format!("KEY {key}"));
    laptop.expect("OK KEY alice laptop added");
    expect_soon(&mut bob, &format!("DEVICE alice laptop added {key}"));
    expect_soon(&mut phone, &format!("DEVICE alice laptop added {key}"));

    let mut dave = c.login("dave");
    for viewer in [&mut bob, &mut dave] {
        viewer.send("KEYS alice");
        viewer.expect_prefix(&format!("KEY alice laptop {key} added="));
        viewer.expect("OK KEYS alice 1 account=no");
    }

    laptop.send("REVOKE laptop");
    laptop.expect("OK REVOKE alice laptop");
    expect_soon(&mut bob, "DEVICE alice laptop revoked");
    expect_soon(&mut phone, "DEVICE alice laptop revoked");
    for viewer in [&mut bob, &mut dave] {
        viewer.send("KEYS alice");
        viewer.expect("OK KEYS alice 0 account=no");
    }
    // The phone on B, which learned of the laptop's key from A, may publish its own: the
    // device cap and the directory there are the cluster's.
    phone.send(&format!("KEY {}", "cd".repeat(32)));
    phone.expect("OK KEY alice phone added");
    expect_soon(
        &mut laptop,
        &format!("DEVICE alice phone added {}", "cd".repeat(32)),
    );
    laptop.send("KEYS alice");
    laptop.expect_prefix(&format!("KEY alice phone {} added=", "cd".repeat(32)));
    laptop.expect("OK KEYS alice 1 account=no");
}

/// `--retention-days` (here an age limit of seconds) trims the shared log by time: the old
/// entries go from the room's stream, a newer one stays, and a node that reads the room
/// afterwards SYNCs the trimmed seqs as a `GAP`.
#[test]
fn the_age_limit_trims_the_shared_log() {
    let Some(redis) = Redis::start() else { return };
    let max_age = Duration::from_secs(5);
    let a = support::cluster::node_with(&redis, "a", |config| {
        let retention = &mut config.cluster.as_mut().expect("a cluster node").retention;
        retention.max_age = Some(max_age);
        retention.interval = Duration::from_millis(50);
    });
    let mut alice = a.login("alice");
    let join = alice.join("general");
    for i in 1..=3 {
        alice.say("general", &format!("old {i}"));
    }
    let mut con = redis.connection();
    let log = "r:{general}:log";
    eventually("the old entries are trimmed", || {
        let len: u64 = redis::cmd("XLEN").arg(log).query(&mut con).ok()?;
        (len == 0).then_some(())
    });
    let posted = Instant::now();
    alice.say("general", "new");
    let ids: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(log)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("XRANGE");
    assert_eq!(ids.len(), 1, "only the new entry: {ids:?}");
    assert_eq!(ids[0].0, "4-0");

    let c = node(&redis, "c");
    let mut bob = c.login("bob");
    bob.join("general");
    bob.send(&format!("SYNC general 0 epoch={}", join.epoch));
    let gap = bob.expect_prefix("GAP general ");
    if posted.elapsed() < max_age {
        assert_eq!(gap, "GAP general 1 3");
        let replayed = collect_msgs(&mut bob, "general", 1);
        assert_eq!((replayed[0].seq, replayed[0].body.as_str()), (4, "new"));
    }
}

/// `KEYS` on a node where the user never logged in says whether the name is an account as
/// Redis has it (registered through another node).
#[test]
fn keys_on_another_node_knows_the_account() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = a.connect();
    alice.send("LOGIN alice password=correct-horse device=laptop");
    alice.expect("OK LOGIN alice");
    alice.send(&format!("KEY {}", "ab".repeat(32)));
    alice.expect("OK KEY alice laptop added");
    let mut bob = b.login("bob");
    bob.send("KEYS alice");
    bob.expect_prefix("KEY alice laptop ");
    bob.expect("OK KEYS alice 1 account=yes");
}

/// What ends a user's sessions on one node ends them on every node, with the same `BYE`: an
/// operator's `KICK <user>` and `BAN user` on node a close the user's sessions on node b,
/// `REGISTER` on a closes the name's sessions on b that did not prove the password, and
/// `PASSWORD ... end-sessions` on a closes the user's sessions on b.
#[test]
fn session_control_crosses_nodes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut admin = redis.connection();
    // The operator flag is adopted at a LOGIN of a name the node knows (as `chatd admin user
    // operator` on one node): a first login makes root known on a.
    let mut op = a.login("root");
    let _: i64 = redis::cmd("HSET")
        .arg("u:{root}")
        .arg("operator")
        .arg("1")
        .query(&mut admin)
        .unwrap();
    op.send("QUIT");
    let mut op = a.login("root");

    let mut eve = b.login("eve");
    op.send("KICK eve");
    op.expect("OK KICK eve sessions=0");
    expect_soon(&mut eve, "BYE kicked :an operator disconnected you");
    eve.expect_closed();

    let mut mallory = b.login("mallory");
    op.send("BAN user mallory");
    op.expect("OK BAN user mallory");
    expect_soon(&mut mallory, "BYE banned :you are banned from this server");
    mallory.expect_closed();
    let mut again = b.connect();
    again.send("LOGIN mallory");
    again.expect("ERR banned :you are banned from this server");

    let mut dan_on_a = a.login("dan");
    let mut dan_on_b = b.login("dan");
    dan_on_a.send("REGISTER correct-horse");
    dan_on_a.expect("OK REGISTER dan");
    let bye = dan_on_b.expect_prefix("BYE registered ");
    assert!(bye.starts_with("BYE registered :"), "{bye}");
    dan_on_b.expect_closed();

    let mut proven_on_b = b.connect();
    proven_on_b.send("LOGIN dan password=correct-horse");
    proven_on_b.expect("OK LOGIN dan");
    dan_on_a.send("PASSWORD correct-horse n3w-passphrase end-sessions");
    dan_on_a.expect("OK PASSWORD dan");
    expect_soon(
        &mut proven_on_b,
        "BYE password-changed :the password was changed; log in again with the new one",
    );
    proven_on_b.expect_closed();
    dan_on_a.send("PING still");
    dan_on_a.expect("PONG still");
}

/// Shutting an in-process node down stops its cluster threads (subscriber, fence, writer,
/// lease): `shutdown` returns true only once they ended, and Redis then sees none of the
/// node's connections, so nothing lingers until the next push.
#[test]
fn a_stopped_node_ends_its_cluster_threads() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, "a");
    let mut alice = a.login("alice");
    alice.join("general");
    alice.say("general", "hello");
    let mut admin = redis.connection();
    assert_eq!(numsub(&mut admin, "w:a"), 1);
    let started = Instant::now();
    assert!(a.shutdown(), "every session and cluster thread ended");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        numsub(&mut admin, "w:a"),
        0,
        "the subscriber's connection is closed"
    );
    eventually("only the test's own connection is left", || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).ok()?;
        (clients.lines().count() == 1).then_some(())
    });
}

/// A join on one node reaches the user's devices on nodes that did not follow the room: they
/// start following it from the join (the JOIN script's `J` on the user's `s:` channel), so the
/// user's phone on node b gets the room's messages posted on node a.
#[test]
fn a_join_elsewhere_makes_the_users_node_follow_the_room() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut admin = redis.connection();
    let mut laptop = a.login_device("alice", "laptop");
    let mut phone = b.login_device("alice", "phone");
    let mut carol = a.login("carol");
    carol.join("lounge");
    carol.say("lounge", "before");
    assert_eq!(numsub(&mut admin, "c:lounge"), 1, "only a follows lounge");
    laptop.join("lounge");
    expect_soon(&mut phone, "JOINED lounge alice");
    assert_eq!(numsub(&mut admin, "c:lounge"), 2, "b follows lounge");
    expect_soon(&mut carol, "JOINED lounge alice");
    carol.send("SEND lounge after");
    let said = collect_msgs(&mut carol, "lounge", 1);
    let seen = collect_msgs(&mut phone, "lounge", 1);
    assert_eq!(agreed(&seen), agreed(&said));
    assert_eq!(said[0].seq, 2);
}
