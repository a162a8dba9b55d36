//! Samples a process's resident memory, thread count and CPU time from /proc, and the bench's
//! own CPU time, so a report can say what the load cost each side.

use std::fs;

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub threads: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib: status_field(&status, "VmRSS:")?,
        threads: status_field(&status, "Threads:")?,
        cpu_s: stat_cpu_seconds(&stat)?,
    })
}

/// The bench process itself (same files as [`sample`], for `self`).
pub fn sample_self() -> ProcSample {
    sample(std::process::id()).unwrap_or_default()
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15 of stat(5)). The command name in field 2 may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The 1-minute load average: other work on the machine skews every figure, so each report
/// records how busy the machine was when the run started.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Raises this process's open-files limit to its hard limit: 10,000 connections need
/// 10,000 descriptors and the usual soft limit is 1,024.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat = "123 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 9 0";
        let seconds = stat_cpu_seconds(stat).unwrap();
        assert!((seconds - 300.0 / clock_ticks_per_second()).abs() < 1e-9);
    }

    #[test]
    fn the_bench_can_sample_itself() {
        let me = sample_self();
        assert!(me.rss_kib > 0 && me.threads >= 1);
    }
}
