//! A reader thread hands back the stack pages its commands touched once its client has been
//! quiet for a while (`src/transport/stack.rs`, `TRIM_AFTER` in `src/transport/reader.rs`).
//!
//! Observed from this process's own `/proc`, where the test server's threads live: each
//! reader thread (`chatd-r<id>`) is blocked in `read`, `/proc/self/task/<tid>/syscall` gives
//! its stack pointer, and the `/proc/self/smaps` mapping around it gives its stack's
//! resident size. One test per file, so no other test's server shares the process.

mod support;

use std::time::{Duration, Instant};

use support::TestServer;

#[cfg(target_os = "linux")]
#[test]
fn readers_hand_back_the_stack_their_commands_touched() {
    let server = TestServer::with(|config| config.login_timeout = Duration::from_secs(120));
    // One reader that only greeted: the depth a reader rests at.
    let _resting = server.connect();
    // Each in a room of its own, so no one's lines reach another.
    let mut clients: Vec<_> = (0..8)
        .map(|i| {
            let mut client = server.login(&format!("trim{i}"));
            client.join(&format!("trim{i}"));
            client.say(&format!("trim{i}"), "deep enough");
            client
        })
        .collect();

    let before = reader_stacks_kib();
    assert_eq!(before.len(), 9, "one reader per connection: {before:?}");
    let resting = *before.iter().min().unwrap();
    let deepest = *before.iter().max().unwrap();
    assert!(
        deepest > resting,
        "commands went no deeper than a reader at rest ({before:?} KiB), so this test \
         shows nothing"
    );

    // TRIM_AFTER is 2 s; the deadline is generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = reader_stacks_kib();
        if now.len() == 9 && now.iter().all(|kib| *kib <= resting) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reader stacks still {now:?} KiB, a reader at rest holds {resting} KiB"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A trimmed reader works as before: its next commands fault the pages back in.
    for (i, client) in clients.iter_mut().enumerate() {
        let msg = client.say(&format!("trim{i}"), "after the trim");
        assert_eq!(msg.body, "after the trim");
    }
}

/// The resident KiB of each blocked reader thread's stack.
fn reader_stacks_kib() -> Vec<u64> {
    let mappings = stack_mappings();
    let mut sizes = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task").path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("chatd-r") {
            continue;
        }
        // "<syscall> <args x6> <sp> <pc>" while blocked; "running" otherwise.
        let syscall = std::fs::read_to_string(task.join("syscall")).unwrap_or_default();
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        let Some(sp) = fields
            .get(7)
            .and_then(|sp| u64::from_str_radix(sp.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        if let Some((_, _, rss)) = mappings
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&sp))
        {
            sizes.push(*rss);
        }
    }
    sizes
}

/// Every mapping of this process: start, end, resident KiB.
fn stack_mappings() -> Vec<(u64, u64, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut mappings = Vec::new();
    let mut range = None;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if let Some((start, end)) = range.take() {
                let kib = rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                mappings.push((start, end, kib));
            }
        } else if let Some((addresses, _)) = line.split_once(' ') {
            if let Some((start, end)) = addresses.split_once('-') {
                if let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
                {
                    range = Some((start, end));
                }
            }
        }
    }
    mappings
}
