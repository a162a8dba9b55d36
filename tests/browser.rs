//! The web client in a real browser: Debian's headless Chromium, driven by playwright-core
//! (tests/browser/chat.mjs), against the `chatd` binary on SQLite. Two browser users and one
//! raw TCP user chat in one room; markup in a message shows as text; the server is killed
//! and restarted under the pages, which resume with every message once and in order. A
//! screenshot of the chat is left in target/browser/chat.png.
//!
//! Needs `chromium`, `node` and `npm ci` in tests/browser; outside CI the test is skipped
//! (saying why) when they are missing, in CI it fails.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The whole scenario's bound; it takes about 10 s.
const LIMIT: Duration = Duration::from_secs(90);

fn missing_tools(scripts: &Path) -> Option<String> {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed (apt-get install chromium)".into());
    }
    if !runs("node") {
        return Some("node is not installed (apt-get install nodejs npm)".into());
    }
    if !scripts.join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (cd tests/browser && npm ci)".into());
    }
    None
}

/// The HTTP address the spawned chatd printed (`chatd: web client at http://ADDR/ ...`).
fn web_address(log: &support::ChatdLog) -> String {
    let lines = log.lock().unwrap();
    lines
        .iter()
        .find_map(|line| line.strip_prefix("chatd: web client at http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("chatd printed no web client address: {lines:?}"))
        .to_owned()
}

/// Two browsers and a TCP user chat; the server restarts; the pages lose and repeat nothing.
#[test]
fn two_browsers_and_a_tcp_user_chat_through_a_restart() {
    // The scenario runs the binary on SQLite whatever the suite's store: once is enough.
    if std::env::var("CHATD_TEST_STORE").is_ok_and(|store| store != "sqlite") {
        eprintln!("skipped: runs once, in the default (SQLite) pass of the suite");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scripts = root.join("tests/browser");
    if let Some(why) = missing_tools(&scripts) {
        assert!(std::env::var_os("CI").is_none(), "CI must provide: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("chatd.db");
    let store_args = |http: &str| -> Vec<std::ffi::OsString> {
        vec![
            "--store".into(),
            "sqlite".into(),
            "--data".into(),
            database.clone().into(),
            "--sync".into(),
            "normal".into(),
            "--presence-grace".into(),
            "0".into(),
            "--http-listen".into(),
            http.into(),
        ]
    };
    let args = store_args("127.0.0.1:0");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (mut chatd, tcp_addr, log) = support::spawn_chatd(&args).expect("chatd starts");
    let http_addr = web_address(&log);
    let screenshot = root.join("target/browser/chat.png");
    let _ = std::fs::remove_file(&screenshot);

    let mut node = Command::new("node")
        .arg(scripts.join("chat.mjs"))
        .args(["--http", &format!("http://{http_addr}")])
        .args(["--tcp", &tcp_addr.to_string()])
        .arg("--screenshot")
        .arg(&screenshot)
        .current_dir(&scripts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let mut to_node = node.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + LIMIT;
    let mut passed = false;
    let mut restarts = 0;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        match line.as_str() {
            "RESTART" => {
                // kill -9: nothing flushed, nothing said; SQLite keeps what was acknowledged.
                chatd.kill().expect("kill -9 chatd");
                chatd.wait().expect("reap chatd");
                let args = store_args(&http_addr);
                let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                let (restarted, _, _) = support::spawn_chatd_on(&tcp_addr.to_string(), &args)
                    .expect("chatd restarts on the same addresses");
                chatd = restarted;
                restarts += 1;
                writeln!(to_node, "RESTARTED").expect("tell node");
            }
            "PASS" => passed = true,
            other => eprintln!("node: {other}"),
        }
    }
    if Instant::now() >= deadline {
        let _ = node.kill();
    }
    let status = support::wait_exit(&mut node, Duration::from_secs(10));
    let _ = chatd.kill();
    let _ = chatd.wait();
    assert!(
        Instant::now() < deadline,
        "the browser test took over {LIMIT:?}"
    );
    assert!(
        passed && status.success(),
        "the browser scenario failed ({status}); see its output above"
    );
    assert_eq!(restarts, 1);
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}
