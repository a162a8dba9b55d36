//! What a run found, as one serialisable value: printed as a readable summary or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::procfs::{self, ProcSample};
use crate::protocol::Proto;
use crate::stats::{human_rate, LatencySummary};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub proto: Proto,
    pub addr: String,
    /// `nproc` and the 1-minute load average when the run started (the bench shares the
    /// machine with the server; anything else running skews the figures). The average lags:
    /// right after a run with thousands of server threads it stays high for a minute.
    pub cores: usize,
    pub load_average_at_start: f64,
    /// The scenario's sizes and rates, as given.
    pub params: serde_json::Value,
    pub setup: Option<SetupReport>,
    pub traffic: Option<TrafficReport>,
    pub stalled: Option<StallReport>,
    pub churn: Option<ChurnReport>,
    pub server: Option<ServerReport>,
    pub bench: BenchReport,
}

/// Connecting, logging in and joining every session.
#[derive(Debug, Default, Serialize)]
pub struct SetupReport {
    pub sessions_wanted: usize,
    pub sessions_ready: usize,
    pub failed: usize,
    /// Why sessions failed, with counts (e.g. the server's `ERR server-full` line).
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    pub sessions_per_s: f64,
}

/// The measured window of a traffic scenario.
#[derive(Debug, Default, Serialize)]
pub struct TrafficReport {
    pub measured_s: f64,
    /// Messages whose send time fell in the measured window.
    pub messages_sent: u64,
    pub messages_per_s: f64,
    /// Deliveries to members other than the sender received in the measured window (chatd's
    /// echo to the sender is not counted, because IRC servers send none).
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// End-to-end latency of deliveries of messages sent in the measured window.
    pub latency: LatencySummary,
    /// Over the whole run (warm-up, window and drain), to members still connected and reading.
    pub lost: u64,
    pub duplicated: u64,
    /// chatd's copies of a message to its own sender; always 0 over IRC.
    pub echoes: u64,
    /// Bytes the bench read from the start of traffic to the end of the drain, per counted
    /// delivery (every line included: chatd's echoes and `OK SEND` acknowledgements too).
    pub rx_bytes_per_delivery: f64,
    /// Commands the server refused after set-up (e.g. `ERR rate-limited`), by reply.
    pub rejected: BTreeMap<String, u64>,
    /// Reading members the server disconnected during the run, by reason.
    pub disconnected: u64,
    pub disconnect_reasons: BTreeMap<String, u64>,
    pub total_messages_sent: u64,
    pub total_deliveries: u64,
}

/// Members that stopped reading in a `slow` run.
#[derive(Debug, Default, Serialize)]
pub struct StallReport {
    pub stalled: usize,
    /// Stalled members whose connection the server closed by the end of the run.
    pub disconnected: usize,
    pub still_connected: usize,
    /// The last line each disconnected member received before the close, by kind.
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ChurnReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub cycles: u64,
    pub cycles_per_s: f64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// From starting to connect until the server closed the connection after QUIT.
    pub cycle_latency: LatencySummary,
}

/// The server's cost, from /proc.
#[derive(Debug, Default, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    pub before_setup: ProcSample,
    pub after_setup: ProcSample,
    pub end: ProcSample,
    pub rss_max_kib: u64,
    pub threads_max: u64,
    /// Server RSS growth over set-up divided by the sessions set up.
    pub rss_per_session_kib: f64,
    /// CPU seconds the server used in the measured window, and as % of one core.
    pub cpu_s: f64,
    pub cpu_pct: f64,
    /// Server CPU per counted delivery, in microseconds.
    pub cpu_us_per_delivery: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct BenchReport {
    /// CPU seconds this tool used in the measured window, and as % of one core.
    pub cpu_s: f64,
    pub cpu_pct: f64,
}

/// Samples the server and the bench at the phase boundaries of a run.
pub struct Meter {
    pid: Option<u32>,
    before_setup: Option<ProcSample>,
    after_setup: Option<ProcSample>,
    window_start: Option<(Instant, ProcSample, ProcSample)>,
    window_end: Option<(Instant, ProcSample, ProcSample)>,
    rss_max_kib: u64,
    threads_max: u64,
    last_tick: Option<(Instant, ProcSample)>,
}

impl Meter {
    pub fn new(pid: Option<u32>) -> Meter {
        Meter {
            pid,
            before_setup: None,
            after_setup: None,
            window_start: None,
            window_end: None,
            rss_max_kib: 0,
            threads_max: 0,
            last_tick: None,
        }
    }

    fn server(&mut self) -> Option<ProcSample> {
        let sample = procfs::sample(self.pid?)?;
        self.rss_max_kib = self.rss_max_kib.max(sample.rss_kib);
        self.threads_max = self.threads_max.max(sample.threads);
        Some(sample)
    }

    pub fn before_setup(&mut self) {
        self.before_setup = self.server();
    }

    pub fn after_setup(&mut self) {
        self.after_setup = self.server();
    }

    pub fn window_start(&mut self) {
        let server = self.server().unwrap_or_default();
        self.window_start = Some((Instant::now(), server, procfs::sample_self()));
    }

    pub fn window_end(&mut self) {
        let server = self.server().unwrap_or_default();
        self.window_end = Some((Instant::now(), server, procfs::sample_self()));
    }

    /// For the progress line: the server's CPU % since the previous tick and its RSS.
    pub fn tick(&mut self) -> Option<(f64, u64)> {
        let now = Instant::now();
        let sample = self.server()?;
        let previous = self.last_tick.replace((now, sample));
        let (then, before) = previous?;
        let seconds = now.duration_since(then).as_secs_f64().max(1e-9);
        Some((
            100.0 * (sample.cpu_s - before.cpu_s) / seconds,
            sample.rss_kib,
        ))
    }

    /// Costs over the measured window; `sessions` and `deliveries` scale the per-unit figures.
    pub fn finish(
        &mut self,
        sessions: usize,
        deliveries: u64,
    ) -> (Option<ServerReport>, BenchReport) {
        let end = self.server();
        let mut bench = BenchReport::default();
        let mut server_cpu = (0.0, 0.0);
        if let (Some((t0, s0, b0)), Some((t1, s1, b1))) = (self.window_start, self.window_end) {
            let seconds = t1.duration_since(t0).as_secs_f64().max(1e-9);
            bench.cpu_s = b1.cpu_s - b0.cpu_s;
            bench.cpu_pct = 100.0 * bench.cpu_s / seconds;
            let cpu_s = s1.cpu_s - s0.cpu_s;
            server_cpu = (cpu_s, 100.0 * cpu_s / seconds);
        }
        let server = self.pid.zip(end).map(|(pid, end)| {
            let before = self.before_setup.unwrap_or_default();
            let after = self.after_setup.unwrap_or(end);
            ServerReport {
                pid,
                before_setup: before,
                after_setup: after,
                end,
                rss_max_kib: self.rss_max_kib,
                threads_max: self.threads_max,
                rss_per_session_kib: if sessions == 0 {
                    0.0
                } else {
                    after.rss_kib.saturating_sub(before.rss_kib) as f64 / sessions as f64
                },
                cpu_s: server_cpu.0,
                cpu_pct: server_cpu.1,
                cpu_us_per_delivery: if deliveries == 0 {
                    0.0
                } else {
                    server_cpu.0 * 1e6 / deliveries as f64
                },
            }
        });
        (server, bench)
    }
}

impl Report {
    /// The readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chatd-bench {} against {} ({:?})",
            self.scenario, self.addr, self.proto
        );
        let _ = writeln!(s, "  params      {}", self.params);
        let _ = writeln!(
            s,
            "  machine     {} cores, load average {:.2} at start",
            self.cores, self.load_average_at_start
        );
        if let Some(setup) = &self.setup {
            let _ = writeln!(
                s,
                "  setup       {}/{} sessions ready in {:.2} s ({}/s), {} failed{}",
                setup.sessions_ready,
                setup.sessions_wanted,
                setup.seconds,
                human_rate(setup.sessions_per_s),
                setup.failed,
                reasons(&setup.failures)
            );
        }
        if let Some(t) = &self.traffic {
            let l = &t.latency;
            let _ = writeln!(
                s,
                "  traffic     {} deliveries/s ({} messages/s) over {:.1} s; {:.0} bytes read per delivery",
                human_rate(t.deliveries_per_s),
                human_rate(t.messages_per_s),
                t.measured_s,
                t.rx_bytes_per_delivery
            );
            let _ = writeln!(
                s,
                "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
            );
            let _ = writeln!(
                s,
                "  integrity   lost {}  duplicated {}  echoes {}  disconnected {}{}  (run total: {} sent, {} delivered)",
                t.lost,
                t.duplicated,
                t.echoes,
                t.disconnected,
                reasons(&t.disconnect_reasons),
                t.total_messages_sent,
                t.total_deliveries
            );
            if !t.rejected.is_empty() {
                let _ = writeln!(
                    s,
                    "  REFUSED     commands refused by the server:{}",
                    reasons(&t.rejected)
                );
            }
        }
        if let Some(st) = &self.stalled {
            let _ = writeln!(
                s,
                "  stalled     {} members stopped reading: {} disconnected by the server, {} still connected{}",
                st.stalled,
                st.disconnected,
                st.still_connected,
                reasons(&st.reasons)
            );
        }
        if let Some(c) = &self.churn {
            let l = &c.cycle_latency;
            let _ = writeln!(
                s,
                "  churn       {} cycles/s ({} cycles in {:.1} s, concurrency {}), {} failed{}",
                human_rate(c.cycles_per_s),
                c.cycles,
                c.seconds,
                c.concurrency,
                c.failed,
                reasons(&c.failures)
            );
            let _ = writeln!(
                s,
                "  cycle ms    p50 {:.3}  p99 {:.3}  max {:.3}",
                l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "  server      cpu {:.2} s ({:.0}% of a core, {:.3} us/delivery); rss {} -> {} -> {} KiB (max {}), {:.1} KiB/session; threads {} -> {} (max {})",
                sv.cpu_s,
                sv.cpu_pct,
                sv.cpu_us_per_delivery,
                sv.before_setup.rss_kib,
                sv.after_setup.rss_kib,
                sv.end.rss_kib,
                sv.rss_max_kib,
                sv.rss_per_session_kib,
                sv.before_setup.threads,
                sv.after_setup.threads,
                sv.threads_max
            );
        }
        let _ = writeln!(
            s,
            "  bench       cpu {:.2} s ({:.0}% of a core)",
            self.bench.cpu_s, self.bench.cpu_pct
        );
        s
    }
}

fn reasons(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let list: Vec<String> = map.iter().map(|(k, v)| format!("{v}x {k}")).collect();
    format!(" [{}]", list.join("; "))
}

/// Shortens a server line to a stable reason key, so counts of e.g. `BYE slow-consumer ...`
/// lines group together: the first six words, with every run of digits written as `N`.
pub fn reason_key(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().take(6).collect();
    let mut key = String::new();
    for ch in words.join(" ").chars() {
        if !ch.is_ascii_digit() {
            key.push(ch);
        } else if !key.ends_with('N') {
            key.push('N');
        }
    }
    key.truncate(80);
    key
}
