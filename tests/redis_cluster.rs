//! Cluster mode on a real Redis Cluster (three masters, made by `redis-cli --cluster create`):
//! rooms whose keys live on different masters, DMs, client ids, SYNC and WHO, with chatd
//! nodes joined through `--cluster redis-cluster://...`. See tests/support/cluster.rs.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::cluster::{
    cluster_node, cluster_node_args, cluster_node_with, eventually, RedisCluster,
};
use support::{Client, Msg};

/// Reads lines (skipping others) until `count` MSG lines of `room` arrived, within a deadline.
fn collect_msgs(client: &mut Client, room: &str, count: usize) -> Vec<Msg> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut msgs = Vec::new();
    while msgs.len() < count {
        assert!(
            Instant::now() < deadline,
            "{room}: {} of {count}",
            msgs.len()
        );
        let line = client.next_line();
        if line.starts_with(&format!("MSG {room} ")) {
            msgs.push(Msg::parse(&line).expect("a well-formed MSG"));
        }
    }
    msgs
}

/// Reads lines (skipping others) until `count` MSG lines of each of `rooms` arrived, within a
/// deadline: the rooms' messages interleave, so they are gathered together.
fn collect_rooms(client: &mut Client, rooms: &[String], count: usize) -> HashMap<String, Vec<Msg>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut msgs: HashMap<String, Vec<Msg>> = HashMap::new();
    while rooms
        .iter()
        .any(|room| msgs.get(room).map_or(0, Vec::len) < count)
    {
        assert!(Instant::now() < deadline, "{}: {msgs:?}", client.name());
        let line = client.next_line();
        if line.starts_with("MSG ") {
            let msg = Msg::parse(&line).expect("a well-formed MSG");
            msgs.entry(msg.room.clone()).or_default().push(msg);
        }
    }
    msgs
}

/// The next line starting with `prefix`, skipping others (bounded).
fn until(client: &mut Client, prefix: &str) -> String {
    for _ in 0..1_000 {
        let line = client.next_line();
        if line.starts_with(prefix) {
            return line;
        }
    }
    client.fail(&format!("no {prefix:?}"))
}

/// The messages as (seq, id, sender, body): what every member must agree on.
fn agreed(msgs: &[Msg]) -> Vec<(u64, String, String, String)> {
    msgs.iter()
        .map(|m| (m.seq, m.id.clone(), m.sender.clone(), m.body.clone()))
        .collect()
}

/// One room name per master: names whose `r:{room}` keys hash to slots on three different
/// masters.
fn rooms_on_every_master(cluster: &RedisCluster) -> Vec<String> {
    let mut rooms: Vec<(u16, String)> = Vec::new();
    for i in 0..1_000 {
        let room = format!("room-{i}");
        let master = cluster.master_of(&format!("r:{{{room}}}"));
        if !rooms.iter().any(|(taken, _)| *taken == master) {
            rooms.push((master, room));
        }
        if rooms.len() == cluster.ports.len() {
            return rooms.into_iter().map(|(_, room)| room).collect();
        }
    }
    panic!("no room names on every master");
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

/// Two nodes on a three-master Redis Cluster: members on both nodes of rooms on every master,
/// and of a DM, see the same messages with the same seqs and ids in one order; a cid retried
/// on the other node is answered with the original `OK` and posted once (also when the user's
/// copy of its record was lost), and refused in another room; a client that
/// reconnects to the other node SYNCs what it missed; WHO agrees on both nodes.
#[test]
fn two_nodes_on_a_redis_cluster_agree_on_every_room() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let rooms = rooms_on_every_master(&cluster);
    let (a, b) = (cluster_node(&cluster, "a"), cluster_node(&cluster, "b"));
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    for room in &rooms {
        alice.send(&format!("JOIN {room}"));
        let first = until(&mut alice, &format!("OK JOIN {room} "));
        bob.send(&format!("JOIN {room}"));
        let second = until(&mut bob, &format!("OK JOIN {room} "));
        assert_eq!(
            first.split(' ').nth(4),
            second.split(' ').nth(4),
            "one room, one epoch, whichever node: {first} / {second}"
        );
    }

    // The DM is opened from one side here; two first DMs racing from both nodes are
    // `two_first_dms_at_once_reach_both_sides`.
    alice.send("DM bob hello");
    until(&mut alice, "OK DM bob dm:alice:bob 1 ");
    let hello = collect_msgs(&mut alice, "dm:alice:bob", 1);
    assert_eq!(
        agreed(&hello),
        agreed(&collect_msgs(&mut bob, "dm:alice:bob", 1))
    );

    // Rooms on every master, and the DM, posted to from both nodes.
    const EACH: usize = 10;
    for i in 0..EACH {
        for room in &rooms {
            alice.send(&format!("SEND {room} a{i}"));
            bob.send(&format!("SEND {room} b{i}"));
        }
        alice.send(&format!("DM bob da{i}"));
        bob.send(&format!("DM alice db{i}"));
    }
    let mut all_rooms = rooms.clone();
    all_rooms.push("dm:alice:bob".to_owned());
    let seen_by_alice = collect_rooms(&mut alice, &all_rooms, 2 * EACH);
    let seen_by_bob = collect_rooms(&mut bob, &all_rooms, 2 * EACH);
    for room in &all_rooms {
        let (mine, theirs) = (&seen_by_alice[room], &seen_by_bob[room]);
        assert_eq!(agreed(mine), agreed(theirs), "{room}");
        let seqs: Vec<u64> = mine.iter().map(|m| m.seq).collect();
        let first = mine[0].seq;
        assert_eq!(
            seqs,
            (first..first + 2 * EACH as u64).collect::<Vec<_>>(),
            "{room}"
        );
        assert!(
            mine.windows(2).all(|pair| pair[0].id < pair[1].id),
            "{room}: ids in seq order"
        );
    }

    // A cid used on node a, retried on node b: the original OK, nothing posted.
    let room = &rooms[0];
    alice.send(&format!("@cid=c1 SEND {room} once"));
    let ok = until(&mut alice, &format!("OK SEND {room} "));
    let mut alice_b = b.connect();
    alice_b.send("LOGIN alice");
    alice_b.expect("OK LOGIN alice");
    alice_b.send(&format!("@cid=c1 SEND {room} once"));
    assert_eq!(until(&mut alice_b, "OK SEND "), ok);
    // The same cid for another message in a room on another master: refused, as on one node
    // (the user's record was copied after the first post).
    alice_b.send(&format!("@cid=c1 SEND {} other", rooms[1]));
    until(&mut alice_b, "ERR cid-reused ");
    // The user's copy of the record lost (as if node a died right after the post): a retry
    // is still answered by the room's record, and the copy is written again.
    let copy = "u:{alice}:cid:c1";
    let mut users_master = cluster
        .node(cluster.master_of(copy))
        .expect("the user's master");
    let deleted: u64 = redis::cmd("DEL")
        .arg(copy)
        .query(&mut users_master)
        .expect("DEL");
    assert_eq!(deleted, 1, "the copy was written after the post");
    alice_b.send(&format!("@cid=c1 SEND {room} once"));
    assert_eq!(until(&mut alice_b, "OK SEND "), ok);
    eventually("the user's copy is written again", || {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(copy)
            .query(&mut users_master)
            .ok()?;
        (exists == 1).then_some(())
    });
    let mut master = cluster
        .node(cluster.master_of(&format!("r:{{{room}}}")))
        .expect("the room's master");
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("r:{{{room}}}:log"))
        .query(&mut master)
        .expect("XLEN");
    assert_eq!(len, 2 * EACH as u64 + 1, "the retry posted nothing");

    // Bob leaves node b, misses messages, and comes back on node a: SYNC from his last seq.
    let last = 2 * EACH as u64 + 1;
    let epoch = {
        bob.send(&format!("JOIN {room}"));
        let line = until(&mut bob, &format!("OK JOIN {room} "));
        line.split(' ').nth(4).unwrap().to_owned()
    };
    bob.send("QUIT");
    drop(bob);
    for i in 0..3 {
        alice.send(&format!("SEND {room} missed{i}"));
        until(&mut alice, &format!("OK SEND {room} "));
    }
    let mut bob = a.connect();
    bob.send("LOGIN bob");
    bob.expect("OK LOGIN bob");
    bob.send(&format!("SYNC {room} {last} {epoch}"));
    let missed = collect_msgs(&mut bob, room, 3);
    assert_eq!(
        missed.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![last + 1, last + 2, last + 3]
    );
    until(&mut bob, &format!("OK SYNC {room} "));

    // WHO agrees on both nodes (alice is on both, bob on a).
    for room in &rooms {
        let on_b = eventually("WHO on b shows alice and bob online", || {
            let lines = who(&mut alice_b, room);
            (lines.len() == 2 && lines.iter().all(|l| l.contains(" online"))).then_some(lines)
        });
        eventually("WHO agrees on both nodes", || {
            (who(&mut alice, room) == on_b).then_some(())
        });
    }
}

/// `--retention-days` on a Redis Cluster: the pass scans every master, so the old entries of
/// rooms on each of the three masters are trimmed, and a newer post stays.
#[test]
fn the_age_limit_trims_rooms_on_every_master() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let rooms = rooms_on_every_master(&cluster);
    let a = cluster_node_with(&cluster, "a", |config| {
        let retention = &mut config.cluster.as_mut().expect("a cluster node").retention;
        retention.max_age = Some(Duration::from_secs(5));
        retention.interval = Duration::from_millis(50);
    });
    let mut alice = a.login("alice");
    for room in &rooms {
        alice.join(room);
        alice.say(room, "old");
    }
    for room in &rooms {
        let mut master = cluster
            .node(cluster.master_of(&format!("r:{{{room}}}")))
            .expect("the room's master");
        eventually("the old entry is trimmed", || {
            let len: u64 = redis::cmd("XLEN")
                .arg(format!("r:{{{room}}}:log"))
                .query(&mut master)
                .ok()?;
            (len == 0).then_some(())
        });
        alice.say(room, "new");
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("r:{{{room}}}:log"))
            .query(&mut master)
            .expect("XLEN");
        assert_eq!(len, 1, "{room}: the new entry stays");
    }
}

/// A node killed with SIGKILL on a Redis Cluster: another node claims it when its lease runs
/// out and takes its users offline one by one (their keys are on several masters), except a
/// user who reconnected elsewhere first.
#[test]
fn a_dead_nodes_users_go_offline_on_a_redis_cluster() {
    use support::ChatdProcess;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let args = cluster_node_args(&cluster, "doomed");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let doomed = ChatdProcess::start(&args);
    let b = cluster_node(&cluster, "b");
    // Users whose keys are on more than one master.
    let users = ["alice", "carol", "erin", "frank"];
    let masters: std::collections::HashSet<u16> = users
        .iter()
        .map(|user| cluster.master_of(&format!("p:{{{user}}}")))
        .collect();
    assert!(masters.len() > 1, "the users' keys share one master");
    let mut on_doomed: Vec<Client> = users.iter().map(|user| doomed.login(user)).collect();
    for client in &mut on_doomed {
        client.join("general");
    }
    let mut dave = doomed.login("dave");
    dave.join("general");
    let mut bob = b.login("bob");
    bob.join("general");
    let _dave_on_b = b.login("dave");
    doomed.crash();
    let mut offline = std::collections::HashSet::new();
    for _ in 0..1_000 {
        if offline.len() == users.len() {
            break;
        }
        let line = bob.next_line();
        assert!(
            !line.starts_with("PRESENCE dave offline"),
            "dave reconnected elsewhere"
        );
        if let Some(user) = line
            .strip_prefix("PRESENCE ")
            .and_then(|rest| rest.split_once(" offline"))
            .map(|(user, _)| user.to_owned())
        {
            offline.insert(user);
        }
    }
    assert_eq!(offline.len(), users.len(), "{offline:?}");
    let lines = who(&mut bob, "general");
    assert!(
        lines.contains(&"WHO general dave online".to_owned()),
        "{lines:?}"
    );
    for user in users {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("WHO general {user} offline"))),
            "{lines:?}"
        );
    }
    drop((on_doomed, dave));
}

/// Two users on two nodes send each other their very first DM at the same moment: both nodes
/// make the DM's room at once, and each side still gets both messages live, in one order.
#[test]
fn two_first_dms_at_once_reach_both_sides() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let (a, b) = (cluster_node(&cluster, "a"), cluster_node(&cluster, "b"));
    for round in 0..5 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let mut on_a = a.login(&x);
        let mut on_b = b.login(&y);
        on_a.send(&format!("DM {y} from-a"));
        on_b.send(&format!("DM {x} from-b"));
        let room = format!("dm:{x}:{y}");
        let seen_a = collect_msgs(&mut on_a, &room, 2);
        let seen_b = collect_msgs(&mut on_b, &room, 2);
        assert_eq!(agreed(&seen_a), agreed(&seen_b), "round {round}");
    }
}
