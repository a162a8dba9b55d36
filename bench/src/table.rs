//! `chatd-bench table`: turns `--json` reports saved in files into one Markdown table, so a
//! comparison run can be pasted into BENCHMARKS.md as measured.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

/// One column: its heading and how to read its cell from a report.
struct Column {
    heading: &'static str,
    cell: fn(&Value) -> Option<String>,
}

fn number(report: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(report, |value, key| value.get(key))?
        .as_f64()
}

fn fixed(report: &Value, path: &str, decimals: usize) -> Option<String> {
    number(report, path).map(|n| format!("{n:.decimals$}"))
}

fn rate(report: &Value, path: &str) -> Option<String> {
    number(report, path).map(crate::stats::human_rate)
}

const SETUP: [Column; 4] = [
    Column {
        heading: "sessions ok / failed",
        cell: |r| {
            Some(format!(
                "{} / {}",
                number(r, "setup.sessions_ready")?,
                number(r, "setup.failed")?
            ))
        },
    },
    Column {
        heading: "set-up sessions/s",
        cell: |r| rate(r, "setup.sessions_per_s"),
    },
    Column {
        heading: "server KiB/session",
        cell: |r| fixed(r, "server.rss_per_session_kib", 1),
    },
    // The same growth read at the end of the run, once the sessions have been quiet for a
    // while: what a session that stays connected costs (chatd's readers hand back their
    // stack pages after 2 s without input).
    Column {
        heading: "server KiB/session at end",
        cell: |r| {
            let grown =
                number(r, "server.end.rss_kib")? - number(r, "server.before_setup.rss_kib")?;
            let sessions = number(r, "setup.sessions_ready")?;
            (sessions > 0.0).then(|| format!("{:.1}", grown / sessions))
        },
    },
];

const TRAFFIC: [Column; 9] = [
    Column {
        heading: "deliveries/s",
        cell: |r| rate(r, "traffic.deliveries_per_s"),
    },
    Column {
        heading: "p50 ms",
        cell: |r| fixed(r, "traffic.latency.p50_ms", 2),
    },
    Column {
        heading: "p99 ms",
        cell: |r| fixed(r, "traffic.latency.p99_ms", 2),
    },
    Column {
        heading: "p99.9 ms",
        cell: |r| fixed(r, "traffic.latency.p999_ms", 2),
    },
    Column {
        heading: "max ms",
        cell: |r| fixed(r, "traffic.latency.max_ms", 1),
    },
    Column {
        heading: "lost / dup",
        cell: |r| {
            Some(format!(
                "{} / {}",
                number(r, "traffic.lost")?,
                number(r, "traffic.duplicated")?
            ))
        },
    },
    Column {
        heading: "refused cmds",
        cell: |r| {
            let refused = r.get("traffic")?.get("rejected")?.as_object()?;
            Some(
                refused
                    .values()
                    .filter_map(Value::as_u64)
                    .sum::<u64>()
                    .to_string(),
            )
        },
    },
    Column {
        heading: "readers cut off",
        cell: |r| fixed(r, "traffic.disconnected", 0),
    },
    Column {
        heading: "bytes read/delivery",
        cell: |r| fixed(r, "traffic.rx_bytes_per_delivery", 0),
    },
];

const STALLED: [Column; 1] = [Column {
    heading: "stalled closed / stalled",
    cell: |r| {
        Some(format!(
            "{} / {}",
            number(r, "stalled.disconnected")?,
            number(r, "stalled.stalled")?
        ))
    },
}];

const CHURN: [Column; 4] = [
    Column {
        heading: "concurrency",
        cell: |r| fixed(r, "churn.concurrency", 0),
    },
    Column {
        heading: "cycles/s",
        cell: |r| rate(r, "churn.cycles_per_s"),
    },
    Column {
        heading: "failed",
        cell: |r| fixed(r, "churn.failed", 0),
    },
    Column {
        heading: "cycle p99 ms",
        cell: |r| fixed(r, "churn.cycle_latency.p99_ms", 2),
    },
];

const COST: [Column; 5] = [
    Column {
        heading: "server CPU %",
        cell: |r| fixed(r, "server.cpu_pct", 0),
    },
    Column {
        heading: "server us/delivery",
        cell: |r| {
            number(r, "traffic.deliveries")?;
            fixed(r, "server.cpu_us_per_delivery", 3)
        },
    },
    Column {
        heading: "bench CPU %",
        cell: |r| fixed(r, "bench.cpu_pct", 0),
    },
    Column {
        heading: "server RSS MiB (max)",
        cell: |r| number(r, "server.rss_max_kib").map(|kib| format!("{:.1}", kib / 1024.0)),
    },
    Column {
        heading: "server threads (max)",
        cell: |r| fixed(r, "server.threads_max", 0),
    },
];

/// Prints a Markdown table with one row per report file; the row is named after the file.
pub fn print(files: &[PathBuf]) -> Result<()> {
    let mut reports = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let report: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let name = file
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        reports.push((name, report));
    }
    let has = |key: &str| reports.iter().any(|(_, r)| !r[key].is_null());
    let mut columns: Vec<&Column> = Vec::new();
    if has("setup") {
        columns.extend(&SETUP);
    }
    if has("traffic") {
        columns.extend(&TRAFFIC);
    }
    if has("stalled") {
        columns.extend(&STALLED);
    }
    if has("churn") {
        columns.extend(&CHURN);
    }
    columns.extend(&COST);
    let headings: Vec<&str> = columns.iter().map(|c| c.heading).collect();
    println!("| run | {} |", headings.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for (name, report) in &reports {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| (c.cell)(report).unwrap_or_else(|| "-".to_string()))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
