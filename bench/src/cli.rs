//! Command-line flags: the options every scenario shares, then one struct per scenario.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::protocol::Proto;

/// Load generator for chatd, and for IRC servers so the same workloads can be compared.
///
/// Every run is bounded: set-up has a timeout, the measured phase lasts `--duration`
/// seconds, and the final drain lasts at most `--drain` seconds.
///
/// chatd limits each session to a few commands a second by default: start it with
/// `--no-rate-limit` for load tests (refused commands are reported, never counted as lost).
#[derive(Debug, Parser)]
#[command(name = "chatd-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Flags shared by every scenario. They may be given before or after the scenario name.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server address; only loopback addresses are accepted.
    #[arg(long, global = true, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,
    /// Several server addresses (comma-separated, e.g. the nodes of a cluster): client `i`
    /// connects to the `i mod N`-th, so a room's members are spread over all of them.
    /// Replaces `--addr`; only loopback addresses are accepted.
    #[arg(long, global = true, value_delimiter = ',')]
    pub addrs: Vec<SocketAddr>,
    /// Protocol the server speaks.
    #[arg(long, global = true, value_enum, default_value_t = Proto::Chatd)]
    pub proto: Proto,
    /// Seconds of measured traffic (after the warm-up).
    #[arg(long, global = true, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of traffic before measuring starts; its messages are not in the latency figures.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait, in seconds, for in-flight messages after the senders stop.
    #[arg(long, global = true, default_value_t = 3.0)]
    pub drain: f64,
    /// Size in bytes of each message body (at least the ~30 bytes of the payload header).
    #[arg(long, global = true, default_value_t = 64)]
    pub body_size: usize,
    /// Pid of the server, to sample its RSS, threads and CPU time from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Print one JSON object on stdout instead of the readable summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// How many connections may be in the middle of connecting and logging in at once.
    /// Bounded so the server's listen backlog never overflows (that costs a 1 s SYN retry).
    #[arg(long, global = true, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Longest time, in seconds, that connecting and joining may take before the run gives up.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// Prefix for user and room names; defaults to one derived from the clock, so runs
    /// against the same long-lived server do not meet each other's rooms.
    #[arg(long, global = true)]
    pub tag: Option<String>,
    /// Let the kernel delay ACKs as usual. By default the bench acknowledges every read at
    /// once (TCP_QUICKACK): servers that do not set TCP_NODELAY (InspIRCd, ngIRCd) otherwise
    /// hold their next small write until a delayed ACK, adding ~40 ms to many deliveries.
    #[arg(long, global = true)]
    pub delayed_acks: bool,
    /// No progress lines on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// In which order rate-paced senders take their turn within each interval. `rooms`
    /// (the default): in room order, so a room's members send back to back and its
    /// recipients are still busy with the previous message. `shuffled`: each sender at a
    /// pseudo-random offset, so consecutive messages go to different rooms and nearly every
    /// delivery finds its recipient idle, as a client population does whose members keep
    /// their own clocks (fanbench's tokio tasks, real users).
    #[arg(long, global = true, value_enum, default_value_t = StartOrder::Rooms)]
    pub start_order: StartOrder,
    /// Busy-loop threads started in the bench process for the measured run: a CPU-bound
    /// neighbour competing with the server for the cores (counted in the bench's CPU).
    #[arg(long, global = true, default_value_t = 0)]
    pub neighbour_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartOrder {
    Rooms,
    Shuffled,
}

impl Common {
    /// The address client number `index` connects to (see `--addrs`).
    pub fn addr_for(&self, index: usize) -> SocketAddr {
        if self.addrs.is_empty() {
            self.addr
        } else {
            self.addrs[index % self.addrs.len()]
        }
    }

    /// Every address clients connect to, for the report.
    pub fn addr_list(&self) -> String {
        if self.addrs.is_empty() {
            return self.addr.to_string();
        }
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        addrs.join(",")
    }
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// One room with M members; S of them send, at a fixed rate or flat out with a window.
    Fanout(FanoutArgs),
    /// R rooms of K members; every member sends at a fixed rate.
    Rooms(RoomsArgs),
    /// Hold N logged-in idle sessions, then measure a small conversation on top of them.
    Idle(IdleArgs),
    /// Connect, log in, join, send, quit, as fast as possible; reports cycles per second.
    Churn(ChurnArgs),
    /// A fan-out run in which a fraction of the members stop reading.
    Slow(SlowArgs),
    /// Print saved `--json` reports as one Markdown table (one row per file).
    Table(TableArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Report files written with `--json`; each row is named after its file.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

/// How senders pace themselves.
#[derive(Debug, Clone, Args)]
pub struct Pacing {
    /// Messages per second per sender; 0 means flat out, limited by `--window`.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Flat out: how many of a sender's messages may be in flight (sent, not yet seen by
    /// the sender's witness, another member of the room) before it waits.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Members of the room, senders included.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// How many members send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    #[command(flatten)]
    pub pacing: Pacing,
}

#[derive(Debug, Clone, Args)]
pub struct RoomsArgs {
    /// Number of rooms.
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,
    /// Members per room; every member sends.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages per second per member; 0 means flat out, limited by `--window`.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Flat out only: messages in flight per sender.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Idle sessions to hold (logged in, in no room).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Members of the conversation measured on top of the idle sessions; all of them send.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages per second per conversation member.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Connections cycling at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct SlowArgs {
    /// Members of the room, senders and stalled members included.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// How many members send (they never stall).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Fraction of the non-sending members that stop reading when traffic starts.
    #[arg(long, default_value_t = 0.1)]
    pub stalled: f64,
    /// Run without stalling anyone, as the baseline to compare with.
    #[arg(long)]
    pub no_stall: bool,
    /// Receive buffer in bytes for stalled members' sockets (0: the kernel default). A small
    /// one makes the server notice the stall sooner instead of filling megabytes of buffer.
    #[arg(long, default_value_t = 0)]
    pub stalled_rcvbuf: usize,
    #[command(flatten)]
    pub pacing: Pacing,
}
