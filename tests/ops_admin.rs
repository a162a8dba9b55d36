//! `chatd admin` (issue 16): against a stopped server's store and a running one; bans refuse
//! a user at LOGIN and an address at connect with the same `ERR banned`; a backup taken
//! under a write load restores to a consistent database.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{ChatdProcess, Client};

const BANNED: &str = "ERR banned :you are banned from this server";

/// `chatd --data <db> admin <args>` with `stdin`; its stdout, or a panic with its stderr.
fn admin(db: &Path, args: &[&str], stdin: &str) -> String {
    let out = try_admin(db, args, stdin);
    assert!(
        out.status.success(),
        "chatd admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn try_admin(db: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("--data")
        .arg(db)
        .arg("admin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatd admin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn server_on(db: &Path) -> ChatdProcess {
    ChatdProcess::start(&[
        "--data".as_ref(),
        db.as_os_str(),
        "--sync".as_ref(),
        "normal".as_ref(),
        "--no-rate-limit".as_ref(),
    ])
}

/// A LOGIN line and the first line answering it.
fn try_login(server: &ChatdProcess, line: &str) -> String {
    let mut client = Client::connect(server.addr);
    client.send(line);
    client.next_line()
}

/// Accounts and bans made with the server stopped are in force when it starts; listing
/// shows them; a missing user is an error with exit status 1.
#[test]
fn admin_on_a_stopped_servers_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    server_on(&db).stop();

    assert_eq!(
        admin(&db, &["user", "add", "Ana", "--password-stdin"], "s3cret\n"),
        "added user ana\n"
    );
    admin(&db, &["user", "add", "mallory"], "");
    admin(&db, &["ban", "user", "mallory", "--reason", "spam"], "");
    let users = admin(&db, &["user", "list"], "");
    assert!(
        users.contains("ana password=true operator=false banned=false"),
        "{users}"
    );
    assert!(
        users.contains("mallory password=false operator=false banned=true"),
        "{users}"
    );
    let missing = try_admin(&db, &["user", "remove", "nobody"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such user: nobody"));

    let server = server_on(&db);
    assert!(try_login(&server, "LOGIN ana").starts_with("ERR bad-password "));
    assert_eq!(
        try_login(&server, "LOGIN ana password=s3cret"),
        "OK LOGIN ana"
    );
    assert_eq!(try_login(&server, "LOGIN mallory"), BANNED);
    let mut ana = Client::connect(server.addr);
    ana.send("LOGIN ana password=s3cret");
    ana.expect("OK LOGIN ana");
    ana.join("lobby");
    server.stop();

    let rooms = admin(&db, &["room", "list"], "");
    assert!(rooms.contains("lobby kind=public members=1"), "{rooms}");
    admin(&db, &["room", "delete", "lobby"], "");
    assert_eq!(admin(&db, &["room", "list"], ""), "");
}

/// On a running server: a new account and a password reset work from the next LOGIN, a
/// user ban refuses the next LOGIN, and an address ban refuses new connections within the
/// 5 s re-read (and is lifted the same way).
#[test]
fn admin_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = server_on(&db);
    assert_eq!(try_login(&server, "LOGIN carol"), "OK LOGIN carol");

    admin(&db, &["user", "add", "bob", "--password-stdin"], "first\n");
    assert!(try_login(&server, "LOGIN bob password=wrong").starts_with("ERR bad-password "));
    assert_eq!(
        try_login(&server, "LOGIN bob password=first"),
        "OK LOGIN bob"
    );
    admin(&db, &["user", "reset-password", "bob"], "second\n");
    assert!(try_login(&server, "LOGIN bob password=first").starts_with("ERR bad-password "));
    assert_eq!(
        try_login(&server, "LOGIN bob password=second"),
        "OK LOGIN bob"
    );

    admin(&db, &["ban", "user", "carol"], "");
    assert_eq!(try_login(&server, "LOGIN carol"), BANNED);
    admin(&db, &["unban", "user", "carol"], "");
    assert_eq!(try_login(&server, "LOGIN carol"), "OK LOGIN carol");

    admin(&db, &["ban", "address", "127.0.0.1"], "");
    wait_until(|| first_line(&server) == BANNED, "the address ban to apply");
    admin(&db, &["unban", "address", "127.0.0.1"], "");
    wait_until(
        || first_line(&server).starts_with("HELLO "),
        "the unban to apply",
    );
    server.stop();
}

/// The first line a new connection reads (the greeting, or a refusal).
fn first_line(server: &ChatdProcess) -> String {
    Client::connect_raw(server.addr).next_line()
}

/// Polls `done` for at most 10 s (the ban list is re-read every 5 s).
fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `chatd admin backup` while four clients post as fast as the server stores: the copy passes
/// SQLite's integrity check, every room's messages run 1..=seq without a hole, and a server
/// started on the copy serves them.
#[test]
fn a_backup_under_write_load_restores_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let copy = dir.path().join("copy.db");
    let server = server_on(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let posters: Vec<_> = (0..4)
        .map(|i| {
            let mut client = server.login(&format!("poster{i}"));
            let stop = Arc::clone(&stop);
            let posted = Arc::clone(&posted);
            std::thread::spawn(move || {
                let room = format!("load{i}");
                client.join(&room);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && sent < 100_000 {
                    client.say(&room, &format!("message {sent}"));
                    sent += 1;
                    posted.fetch_add(1, Ordering::Relaxed);
                }
                sent
            })
        })
        .collect();
    // The backup starts while the posters are at it, and they go on past its end.
    wait_until(
        || posted.load(Ordering::Relaxed) >= 200,
        "200 acknowledged posts",
    );
    let before = posted.load(Ordering::Relaxed);
    assert_eq!(
        admin(&db, &["backup", copy.to_str().unwrap()], ""),
        format!("backed up into {}\n", copy.display())
    );
    wait_until(
        || posted.load(Ordering::Relaxed) >= before + 200,
        "200 more posts after the backup",
    );
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<u64> = posters.into_iter().map(|p| p.join().unwrap()).collect();
    server.stop();

    let backup = rusqlite::Connection::open(&copy).unwrap();
    let check: String = backup
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut total = 0;
    for (i, sent) in sent.iter().enumerate() {
        let room = format!("load{i}");
        let (count, max, seq): (i64, Option<i64>, i64) = backup
            .query_row(
                "SELECT count(*), max(m.seq), r.seq FROM rooms r LEFT JOIN messages m ON m.room = r.name
                 WHERE r.name = ?1",
                [&room],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            max.unwrap_or(0),
            count,
            "{room}: the messages run 1..=n without a hole"
        );
        assert_eq!(
            seq, count,
            "{room}: the room's seq is its last stored message"
        );
        assert!(count as u64 <= *sent);
        total += count;
    }
    assert!(total > 0, "the backup was taken under load");
    drop(backup);

    let restored = server_on(&copy);
    let mut reader = restored.login("poster0");
    reader.send("HISTORY load0 5");
    let line = reader.next_line();
    assert!(!line.starts_with("ERR"), "{line}");
    restored.stop();
}

/// An operator's `KICK <user>`, `BAN` and `UNBAN` over the protocol: the kicked and the
/// banned get `BYE kicked` / `BYE banned`, a banned user's next LOGIN gets `ERR banned`, a
/// user who is not an operator gets `not-permitted`, and each use is audited in the log.
#[test]
fn operators_ban_and_kick_server_wide() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    server_on(&db).stop();
    admin(
        &db,
        &["user", "add", "root", "--password-stdin", "--operator"],
        "hunter2\n",
    );
    let server = server_on(&db);
    let mut op = Client::connect(server.addr);
    op.send("LOGIN root password=hunter2");
    op.expect("OK LOGIN root");
    let mut eve = server.login("eve");
    let mut mallory = server.login("mallory");

    eve.send("@b BAN user mallory");
    let refused = eve.next_line();
    assert!(refused.starts_with("@b ERR not-permitted "), "{refused}");

    op.send("KICK eve");
    op.expect("OK KICK eve sessions=1");
    eve.expect("BYE kicked :an operator disconnected you");
    eve.expect_closed();

    op.send("BAN user mallory being rude");
    op.expect("OK BAN user mallory");
    mallory.expect("BYE banned :you are banned from this server");
    mallory.expect_closed();
    assert_eq!(try_login(&server, "LOGIN mallory"), BANNED);

    op.send("UNBAN user mallory");
    op.expect("OK UNBAN user mallory");
    assert_eq!(try_login(&server, "LOGIN mallory"), "OK LOGIN mallory");

    let log = server.log_lines().join("\n");
    assert!(
        log.contains("operator kick by=root user=eve sessions=1"),
        "{log}"
    );
    assert!(
        log.contains("operator ban by=root target=\"user mallory\" reason=\"being rude\""),
        "{log}"
    );
    server.stop();
}

/// The same admin commands on a PostgreSQL store, before and while the server runs (skipped
/// without PostgreSQL outside CI).
#[test]
fn admin_on_a_postgres_store() {
    let Some(cluster) = support::postgres::Cluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let pg = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--store", "postgres", "--database-url", &url, "admin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(pg(&["user", "add", "ana", "--password-stdin"], "pw1\n")
        .status
        .success());
    assert!(pg(&["ban", "user", "mallory"], "").status.success());
    let server = ChatdProcess::start(&[
        "--store".as_ref(),
        "postgres".as_ref(),
        "--database-url".as_ref(),
        url.as_ref(),
    ]);
    assert_eq!(try_login(&server, "LOGIN mallory"), BANNED);
    assert_eq!(try_login(&server, "LOGIN ana password=pw1"), "OK LOGIN ana");
    assert!(pg(&["user", "reset-password", "ana"], "pw2\n")
        .status
        .success());
    assert_eq!(try_login(&server, "LOGIN ana password=pw2"), "OK LOGIN ana");
    assert!(pg(&["ban", "address", "127.0.0.1"], "").status.success());
    wait_until(|| first_line(&server) == BANNED, "the address ban to apply");
    assert!(pg(&["unban", "address", "127.0.0.1"], "").status.success());
    wait_until(
        || first_line(&server).starts_with("HELLO "),
        "the unban to apply",
    );
    let users = String::from_utf8(pg(&["user", "list"], "").stdout).unwrap();
    assert!(
        users.contains("ana password=true operator=false banned=false"),
        "{users}"
    );
    let backup = pg(&["backup", "/nonexistent/x.db"], "");
    assert_eq!(backup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&backup.stderr).contains("pg_dump"));
    server.stop();
}
