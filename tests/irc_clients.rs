//! Real IRC clients against chatd's IRC listener, each chatting with a line-protocol user in
//! one room: irssi (a Debian package) driven in tmux, and a bot written with the `irc`
//! library from PyPI. Outside CI a missing program skips its test with the reason; in CI
//! (`CI` set) it fails, since .ci/run installs them.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, TestServer};

fn irc_server() -> TestServer {
    TestServer::with(|config| {
        config.irc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
}

/// Whether `program` runs (with `args`, which must make it exit at once).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Skips (outside CI) or fails (in CI) for a missing tool.
fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install {what} (.ci/run does)"
    );
    eprintln!("skipped: {what} is not installed");
}

/// A line-protocol client reading until a line starts with `prefix`, skipping others.
fn line_until(client: &mut Client, prefix: &str) -> String {
    for _ in 0..2_000 {
        let line = client.next_line();
        if line.starts_with(prefix) {
            return line;
        }
    }
    client.fail(&format!("no line starting with {prefix:?}"))
}

/// The next `MSG <room>` from `sender`.
fn msg_from(client: &mut Client, room: &str, sender: &str) -> String {
    for _ in 0..2_000 {
        let line = line_until(client, &format!("MSG {room} "));
        if line.split(' ').nth(5) == Some(sender) {
            return line;
        }
    }
    client.fail(&format!("no MSG in {room} from {sender}"))
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "irc"]).stdout)
            .into_owned()
    }

    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "irc", "-l", text]);
        self.tmux(&["send-keys", "-t", "irc", "Enter"]);
    }

    /// Polls the screen until it shows `text`, for at most 15 s.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}; it shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// irssi, a real IRC client, registers, joins a room with a line-protocol user and the two
/// exchange messages both ways.
#[test]
fn irssi_chats_with_a_line_protocol_user() {
    if !runs("irssi", &["--version"]) || !runs("tmux", &["-V"]) {
        return missing("irssi and tmux");
    }
    let server = irc_server();
    let port = server.handle().irc_addr().unwrap().port();
    let mut bob = server.login("bob");
    bob.join("general");
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux {
        socket: format!("chatd-irssi-{}", std::process::id()),
    };
    let irssi = format!(
        "irssi --home={} -n ircy -c 127.0.0.1 -p {port}",
        home.path().display()
    );
    let started = tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "irc",
        "-x",
        "160",
        "-y",
        "40",
        &irssi,
    ]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
    tmux.wait_for("Welcome to chatd, ircy");
    tmux.type_line("/join #general");
    line_until(&mut bob, "JOINED general ircy");
    tmux.wait_for("bob");
    bob.send("SEND general hello irssi, this is nc");
    tmux.wait_for("hello irssi, this is nc");
    tmux.type_line("hello nc, this is irssi");
    let msg = msg_from(&mut bob, "general", "ircy");
    assert!(msg.ends_with(" ircy hello nc, this is irssi"), "{msg}");
    tmux.type_line("/msg bob a direct word");
    let dm = msg_from(&mut bob, "dm:bob:ircy", "ircy");
    assert!(dm.ends_with(" a direct word"), "{dm}");
    tmux.type_line("/quit");
    line_until(&mut bob, "PRESENCE ircy offline");
}

/// A bot written with the `irc` package from PyPI joins, answers in the room and by DM, and
/// leaves when asked.
#[test]
fn a_python_irc_library_bot_chats_with_a_line_protocol_user() {
    if !runs("python3", &["-c", "import irc.client"]) {
        return missing("python3 with the irc package (pip install irc)");
    }
    let server = irc_server();
    let addr = server.handle().irc_addr().unwrap();
    let mut bob = server.login("bob");
    bob.join("lib");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/irc_clients/library_client.py");
    let mut bot = Command::new("python3")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    line_until(&mut bob, "JOINED lib pybot");
    bob.send("SEND lib ping from nc");
    let pong = msg_from(&mut bob, "lib", "pybot");
    assert!(pong.ends_with(" pybot pong from python"), "{pong}");
    let dm = msg_from(&mut bob, "dm:bob:pybot", "pybot");
    assert!(dm.ends_with(" pybot a direct hello"), "{dm}");
    bob.send("DM pybot bye pybot");
    let status = support::wait_exit(&mut bot, Duration::from_secs(20));
    assert!(status.success(), "the bot failed: {status}");
}
