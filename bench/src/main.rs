//! `chatd-bench`: a load generator for chatd, which also speaks IRC so the same workloads can
//! be run against established servers.
//!
//! # Layout
//! - `cli`: flags, shared and per scenario.
//! - `scenario`: turns a scenario's flags into a plan of members and rooms, runs it, reports.
//! - `traffic`: the event loop behind the room scenarios (set-up, pacing, counting, drain).
//! - `churn`: the event loop behind `churn` (connect, log in, join, send, quit, repeat).
//! - `conn`: one non-blocking connection with its line and output buffers.
//! - `protocol`: chatd and IRC adapters: commands to write, lines classified into events.
//! - `payload`: the sender/sequence/send-time header every message body carries.
//! - `stats`: HDR latency histograms; `report`: the result, as text or JSON.
//! - `table`: saved JSON reports as a Markdown table.
//! - `procfs`: RSS, threads and CPU time of the server and of the bench, from /proc.
//! - `neighbour`: busy-loop threads that compete with the server for the cores.
//!
//! # Concurrency model
//! One thread and one `mio::Poll` drive every connection; the bench has no locks or channels.
//! `--neighbour-threads` adds threads that only burn CPU during the measured run.

mod churn;
mod cli;
mod conn;
#[cfg(test)]
mod fake_server;
mod neighbour;
mod payload;
mod procfs;
mod protocol;
mod report;
mod scenario;
mod stats;
mod table;
mod traffic;

use anyhow::{ensure, Result};
use clap::Parser;

use cli::{Cli, Scenario};

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = &cli.common;
    // The bench generates heavy load: it must never aim at anything but this machine.
    for addr in std::iter::once(&common.addr).chain(&common.addrs) {
        ensure!(
            addr.ip().is_loopback(),
            "--addr and --addrs must be loopback addresses (127.0.0.0/8 or ::1), got {addr}"
        );
    }
    ensure!(
        common.duration > 0.0 && common.duration <= 600.0,
        "--duration must be in (0, 600] seconds"
    );
    ensure!(
        (0.0..=60.0).contains(&common.warmup) && (0.0..=60.0).contains(&common.drain),
        "--warmup and --drain must be in [0, 60] seconds"
    );
    procfs::raise_fd_limit();
    let report = match &cli.scenario {
        Scenario::Table(args) => return table::print(&args.files),
        Scenario::Fanout(args) => scenario::fanout(common, args)?,
        Scenario::Rooms(args) => scenario::rooms(common, args)?,
        Scenario::Idle(args) => scenario::idle(common, args)?,
        Scenario::Churn(args) => scenario::churn(common, args)?,
        Scenario::Slow(args) => scenario::slow(common, args)?,
    };
    if common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
