//! How many sessions this machine can hold, computed from the OS limits at start-up.
//!
//! Thread-per-connection means every session costs two threads, and threads are bounded by
//! the kernel in ways that do not show up as memory:
//!
//! - `vm.max_map_count`: each Rust thread takes about four memory mappings (its stack and
//!   guard page, its signal stack and guard page). At 65,530 mappings that is ~8,000 sessions.
//!   Running out here is the dangerous one: a new thread that cannot map its signal stack
//!   aborts the *whole process*, so we must stop well before it.
//! - `kernel.threads-max` and `kernel.pid_max`: every thread takes a task id.
//! - The open-files limit (`RLIMIT_NOFILE`): one descriptor per connection (the reader and
//!   writer share the socket). The soft limit is raised to the hard limit first.
//!
//! docs/design.md says how an operator raises each of these.

use std::fs;

/// Mappings per session: two threads, each with a stack + guard and a signal stack + guard.
pub const MAPS_PER_SESSION: usize = 8;
/// Task ids per session: the reader and the writer thread.
pub const THREADS_PER_SESSION: usize = 2;
/// Headroom kept free of each limit for the process itself (libraries, allocator arenas,
/// the store, the accept thread) and for the rest of the system.
const MAP_RESERVE: usize = 1024;
const THREAD_RESERVE: usize = 512;
const FILE_RESERVE: usize = 64;
/// The share of the computed ceiling actually used, as a margin for what we did not count.
const SAFETY_PERCENT: usize = 95;

#[derive(Debug, Clone)]
pub struct Capacity {
    /// Sessions (connections) the server will hold at once.
    pub sessions: usize,
    /// Which limit set it, with the numbers, for the start-up log.
    pub explanation: String,
}

/// Reads the limits and returns the session ceiling, raising the open-files soft limit to
/// the hard limit on the way.
pub fn compute() -> Capacity {
    let max_map_count = read_number("/proc/sys/vm/max_map_count").unwrap_or(65_530);
    let maps_in_use = fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count())
        .unwrap_or(0);
    let threads_max = read_number("/proc/sys/kernel/threads-max").unwrap_or(usize::MAX);
    let pid_max = read_number("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let tasks_in_use = tasks_in_use();
    let open_files = raise_open_files_limit();

    let by_maps = max_map_count.saturating_sub(maps_in_use + MAP_RESERVE) / MAPS_PER_SESSION;
    let by_threads = threads_max
        .min(pid_max)
        .saturating_sub(tasks_in_use + THREAD_RESERVE)
        / THREADS_PER_SESSION;
    let by_files = open_files.saturating_sub(FILE_RESERVE);
    let limits = [
        (by_maps, format!("vm.max_map_count={max_map_count}")),
        (
            by_threads,
            format!("threads-max={threads_max} pid_max={pid_max}"),
        ),
        (by_files, format!("open files={open_files}")),
    ];
    let (ceiling, bound) = limits
        .iter()
        .min_by_key(|(n, _)| *n)
        .expect("limits is not empty");
    let sessions = (ceiling * SAFETY_PERCENT / 100).max(1);
    Capacity {
        sessions,
        explanation: format!(
            "{sessions} sessions ({SAFETY_PERCENT}% of {ceiling}, bound by {bound}; \
             by maps {by_maps}, by threads {by_threads}, by files {by_files})"
        ),
    }
}

fn read_number(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Tasks (threads) on the whole system now: the fourth field of /proc/loadavg is
/// `running/total`.
fn tasks_in_use() -> usize {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Raises the soft open-files limit to the hard limit and returns the result.
fn raise_open_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacity_is_positive_and_explained() {
        let capacity = super::compute();
        assert!(capacity.sessions >= 1);
        assert!(capacity.explanation.contains("bound by"));
    }
}
