//! `--retention-days` on the shared logs: `chatd-cluster-retention` deletes, every retention
//! interval, the entries older than the age limit from every room's stream.
//!
//! A stream's entry ids are the room's seqs, not times, so `XTRIM MINID` cannot take a time
//! directly. But a room's times never go back in seq order (the SEND script's clock), so the
//! old entries are a prefix of the stream: [`scripts::TRIM_AGE`] walks it from the front and
//! trims up to the first entry young enough. Older seqs then SYNC as a `GAP`, as on one node.
//!
//! Every node runs the pass over every room (a `SCAN` of the log keys on every master, so rooms
//! no node has loaded are trimmed too). That repeats work, but the pass is idempotent and cheap next to
//! the posts, and it needs no agreement on who runs it.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use super::{scripts, Cluster};
use crate::server::ChatServer;

/// Log keys handled per SCAN step.
const SCAN_PAGE: usize = 500;

/// Most TRIM_AGE calls per room per pass: each trims up to 10,000 entries, so a room that
/// fell far behind is caught up over a few passes, without one pass holding Redis long.
const TRIMS_PER_ROOM: usize = 10;

pub fn start(cluster: Arc<Cluster>, server: Weak<ChatServer>) {
    let Some(max_age) = cluster.retention.max_age else {
        return;
    };
    let interval = cluster.retention.interval.max(Duration::from_millis(10));
    let adopting = Arc::clone(&cluster);
    let retention_thread = thread::Builder::new()
        .name("chatd-cluster-retention".into())
        .spawn(move || {
            while server.strong_count() > 0 && !cluster.stopping() {
                // Fresh connections each pass: on a Redis Cluster the masters may have changed.
                // A failure is tried again next interval.
                if let Ok(primaries) = cluster.redis.primaries() {
                    for mut con in primaries {
                        let _ = pass(&mut con, max_age);
                    }
                }
                cluster.pause_unless_stopping(interval);
            }
        })
        .expect("spawn chatd-cluster-retention");
    adopting.adopt_threads([retention_thread]);
}

/// One pass over every room's log that `con`'s server holds: on a Redis Cluster, the logs of
/// its slots, and each TRIM_AGE runs there (its one key is local).
fn pass(con: &mut redis::Connection, max_age: Duration) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    // Bounded: SCAN ends in a number of steps about the keyspace's size over the page.
    for _ in 0..1_000_000 {
        let (next, logs): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("r:{*}:log")
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query(con)?;
        for log in logs {
            for _ in 0..TRIMS_PER_ROOM {
                let more: i64 = redis::cmd("EVAL")
                    .arg(scripts::TRIM_AGE)
                    .arg(1)
                    .arg(&log)
                    .arg(max_age.as_millis() as u64)
                    .query(con)?;
                if more == 0 {
                    break;
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}
