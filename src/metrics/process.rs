//! The standard `process_*` metrics, read from `/proc` at scrape time (Linux; elsewhere they
//! are left out): resident and virtual memory, CPU seconds, open and maximum file
//! descriptors, start time, threads.

use super::encode::Encoder;

pub fn render(out: &mut Encoder) {
    let Some(stat) = read_stat() else { return };
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    out.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
    );
    out.sample(
        "process_cpu_seconds_total",
        &[],
        (stat.utime + stat.stime) as f64 / ticks,
    );
    out.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        stat.rss_pages * page,
    );
    out.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        stat.vsize,
    );
    if let Some(boot) = boot_time() {
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            boot + stat.start_ticks as f64 / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "process_open_fds",
            "Open file descriptors.",
            fds.count() as u64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            limit.rlim_cur,
        );
    }
    out.gauge(
        "process_threads",
        "OS threads in the process (chatd runs two per connection).",
        stat.threads,
    );
}

struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/self/stat`. The second field (the command name, in parentheses) may contain
/// spaces, so fields are counted from the last `)`.
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    // Field 3 (state) is index 0 here; proc(5) numbers fields from 1.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// When the machine booted, in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|line| line.starts_with("btime "))?;
    line[6..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_are_read() {
        let mut out = Encoder::default();
        render(&mut out);
        let text = out.finish();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_threads ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
