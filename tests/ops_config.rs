//! `--config chatd.toml` and `--check-config` (issue 16): the file mirrors the flags, flags
//! override it, and a bad file is refused naming the key.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use support::{field, ChatdProcess};

fn chatd(args: &[&OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(args)
        .output()
        .expect("run chatd")
}

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/chatd.example.toml"))
}

/// What a running server reports in INFO for `key`.
fn info(server: &ChatdProcess, key: &str) -> String {
    let mut client = server.login("probe");
    client.send("@i INFO");
    let line = client.expect_prefix("@i OK INFO ");
    field(&line, key).expect("the key in INFO").to_owned()
}

/// The annotated example in the repository is a valid configuration.
#[test]
fn the_example_file_is_valid() {
    let out = chatd(&[
        "--config".as_ref(),
        example().as_os_str(),
        "--check-config".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}

/// A misspelt key fails the check with exit status 1 and a message naming the key and the
/// file; so does a bad value (naming the flag, which is the key).
#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.toml");
    std::fs::write(&bad_key, "store = \"memory\"\nmax_sessions = 10\n").unwrap();
    let out = chatd(&[
        "--config".as_ref(),
        bad_key.as_os_str(),
        "--check-config".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad-key.toml: key `max_sessions`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `max-sessions`"), "{stderr}");

    let bad_value = dir.path().join("bad-value.toml");
    std::fs::write(&bad_value, "max-body = \"lots\"\n").unwrap();
    let out = chatd(&[
        "--config".as_ref(),
        bad_value.as_os_str(),
        "--check-config".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad-value.toml"), "{stderr}");
    assert!(stderr.contains("--max-body"), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let out = chatd(&[
        "--config".as_ref(),
        missing.as_os_str(),
        "--check-config".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// Settings from the file reach the running server (seen in INFO), and a flag on the command
/// line overrides the same key in the file.
#[test]
fn the_file_configures_the_server_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chatd.toml");
    std::fs::write(
        &file,
        "store = \"memory\"\nmax-body = 500\nsync-limit = 7\nrate-burst = 9\nlog-format = \"text\"\n",
    )
    .unwrap();
    let server = ChatdProcess::start(&["--config".as_ref(), file.as_os_str()]);
    assert_eq!(info(&server, "max-body"), "500");
    assert_eq!(info(&server, "sync-limit"), "7");
    assert_eq!(info(&server, "rate-burst"), "9");
    server.stop();

    let server = ChatdProcess::start(&[
        "--config".as_ref(),
        file.as_os_str(),
        "--max-body".as_ref(),
        "600".as_ref(),
    ]);
    assert_eq!(info(&server, "max-body"), "600", "the flag wins");
    assert_eq!(
        info(&server, "sync-limit"),
        "7",
        "the rest of the file still applies"
    );
    server.stop();
}

/// `--log-format json`: one JSON object per line with the event as `msg` and its fields;
/// a login, a failed login and a disconnect are there, and the password is not.
#[test]
fn json_logs_carry_events_and_never_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatd.db");
    let server = ChatdProcess::start(&[
        "--data".as_ref(),
        db.as_os_str(),
        "--sync".as_ref(),
        "normal".as_ref(),
        "--log-format".as_ref(),
        "json".as_ref(),
    ]);
    let mut ana = support::Client::connect(server.addr);
    ana.send("LOGIN ana password=correct-horse");
    ana.expect("OK LOGIN ana");
    let mut thief = support::Client::connect(server.addr);
    thief.send("LOGIN ana password=battery-staple");
    assert!(thief.next_line().starts_with("ERR bad-password "));
    ana.send("QUIT");
    ana.expect_prefix("BYE quit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = server.log_lines();
        // The reader logs the logout and the writer the disconnect: either may come first.
        let seen = |msg: &str| {
            let field = format!("\"msg\":\"{msg}\"");
            log.iter().any(|l| l.contains(&field))
        };
        if seen("logout") && seen("disconnect") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no logout and disconnect: {log:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for line in &log {
        assert!(
            line.starts_with("{\"ts\":\"") && line.ends_with('}'),
            "{line}"
        );
        assert!(
            !line.contains("correct-horse") && !line.contains("battery-staple"),
            "{line}"
        );
    }
    let has = |needle: &str| log.iter().any(|l| l.contains(needle));
    assert!(has("\"msg\":\"login\",\"user\":\"ana\""), "{log:?}");
    assert!(has("\"msg\":\"login failed\",\"user\":\"ana\""), "{log:?}");
    assert!(has("\"msg\":\"connect\",\"conn\":"), "{log:?}");
    assert!(has("\"msg\":\"disconnect\""), "{log:?}");
    server.stop();
}
