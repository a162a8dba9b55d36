//! The `churn` scenario: `concurrency` workers each loop connect, log in, join, send, quit,
//! waiting for the server to close the connection before starting the next cycle.
//!
//! Each worker reuses one user name and one room of its own, so the server's user and room
//! tables stay the same size however many cycles run, and no worker sees another's traffic.
//! chatd takes the whole cycle in one write (it handles a connection's lines in order); IRC
//! must wait for `001` before it may join.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Interest, Poll, Token};

use crate::cli::{ChurnArgs, Common};
use crate::conn::{lines, Chunk, Conn};
use crate::payload::{self, Payload};
use crate::protocol::{Event, Proto};
use crate::report::{reason_key, ChurnReport, Meter, Report};
use crate::scenario::Names;
use crate::stats::{human_rate, Latency};

/// A cycle that takes longer than this is counted as failed and abandoned.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);

struct Worker {
    user: String,
    room: String,
    conn: Option<Conn>,
    started: Instant,
    joined: bool,
    acked: bool,
    problem: Option<String>,
    cycles: u64,
}

struct Churn<'a> {
    common: &'a Common,
    proto: Proto,
    epoch: Instant,
    poll: Poll,
    workers: Vec<Worker>,
    scratch: Vec<u8>,
    body: Vec<u8>,
    /// Cycles only count once the warm-up is over, and until the end of the window.
    counting: bool,
    cycles: u64,
    failures: BTreeMap<String, u64>,
    latency: Latency,
}

pub fn run(common: &Common, args: &ChurnArgs, names: &Names) -> Result<Report> {
    let load_average = crate::procfs::load_average();
    let mut meter = Meter::new(common.server_pid);
    meter.before_setup();
    let mut churn = Churn {
        common,
        proto: common.proto,
        epoch: Instant::now(),
        poll: Poll::new()?,
        workers: (0..args.concurrency)
            .map(|w| Worker {
                user: names.user('c', w),
                room: common.proto.room_name(&names.room(w)),
                conn: None,
                started: Instant::now(),
                joined: false,
                acked: false,
                problem: None,
                cycles: 0,
            })
            .collect(),
        scratch: Vec::with_capacity(64 * 1024),
        body: Vec::new(),
        counting: false,
        cycles: 0,
        failures: BTreeMap::new(),
        latency: Latency::new(),
    };
    for w in 0..args.concurrency {
        churn.begin(w);
    }
    let window_start = churn.epoch + Duration::from_secs_f64(common.warmup);
    let window_end = window_start + Duration::from_secs_f64(common.duration);
    let mut events = Events::with_capacity(1024);
    let mut next_tick = churn.epoch + Duration::from_secs(1);
    let mut last_cycles = 0;
    loop {
        let now = Instant::now();
        if !churn.counting && now >= window_start {
            churn.counting = true;
            meter.window_start();
        }
        if now >= window_end {
            break;
        }
        churn.turn(&mut events)?;
        churn.expire();
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let total: u64 = churn.workers.iter().map(|w| w.cycles).sum();
            if !common.quiet {
                let server = meter.tick().map_or(String::new(), |(cpu, rss)| {
                    format!("  server cpu {cpu:.0}% rss {} MiB", rss / 1024)
                });
                eprintln!(
                    "[{:7.1}s] churn: {} cycles/s{server}",
                    churn.epoch.elapsed().as_secs_f64(),
                    human_rate((total - last_cycles) as f64)
                );
            }
            last_cycles = total;
        }
    }
    meter.window_end();
    let seconds = common.duration;
    let report = ChurnReport {
        concurrency: args.concurrency,
        seconds,
        cycles: churn.cycles,
        cycles_per_s: churn.cycles as f64 / seconds,
        failed: churn.failures.values().sum(),
        failures: std::mem::take(&mut churn.failures),
        cycle_latency: churn.latency.summary(),
    };
    let (server, bench) = meter.finish(0, 0);
    Ok(Report {
        scenario: "churn",
        proto: common.proto,
        addr: common.addr.to_string(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        load_average_at_start: load_average,
        params: serde_json::json!({ "concurrency": args.concurrency }),
        setup: None,
        traffic: None,
        stalled: None,
        churn: Some(report),
        server,
        bench,
    })
}

impl Churn<'_> {
    /// Starts worker `w`'s next cycle.
    fn begin(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        worker.started = Instant::now();
        worker.joined = false;
        worker.acked = false;
        worker.problem = None;
        let mut conn = match Conn::connect(self.common.addr, 0, !self.common.delayed_acks) {
            Ok(conn) => conn,
            Err(e) => {
                // Out of ports or descriptors: count it and try again on the next turn.
                self.fail(w, format!("connect: {}", e.kind()));
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Token(w),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail(w, format!("register: {e}"));
            return;
        }
        let worker = &self.workers[w];
        self.proto.login(conn.out(), &worker.user);
        if self.proto.can_pipeline_join() {
            let seq = worker.cycles + 1;
            self.rest_of_cycle(w, seq, &mut conn);
        }
        self.workers[w].conn = Some(conn);
    }

    /// Queues worker `w`'s join, one message and quit on `conn`.
    fn rest_of_cycle(&mut self, w: usize, seq: u64, conn: &mut Conn) {
        let room = &self.workers[w].room;
        self.proto.join(conn.out(), room);
        self.body.clear();
        let payload = Payload {
            sender: w as u32,
            seq,
            sent_ns: self.epoch.elapsed().as_nanos() as u64,
        };
        payload::encode(&mut self.body, payload, self.common.body_size);
        self.proto.send(conn.out(), room, &self.body);
        self.proto.quit(conn.out());
    }

    fn turn(&mut self, events: &mut Events) -> Result<()> {
        if let Err(e) = self.poll.poll(events, Some(Duration::from_millis(10))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        for event in events.iter() {
            let w = event.token().0;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.on_readable(w);
            }
            if let Some(conn) = self.workers[w].conn.as_mut() {
                if conn.has_output() {
                    if let Err(e) = conn.flush() {
                        self.fail(w, format!("write: {}", e.kind()));
                    }
                }
            }
        }
        Ok(())
    }

    fn on_readable(&mut self, w: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.workers[w].conn.as_mut() {
            match conn.read_chunk(&mut scratch) {
                Ok(Chunk::Lines { end, .. }) => {
                    for line in lines(&scratch[..end]) {
                        self.on_line(w, line);
                    }
                    if let Some(conn) = self.workers[w].conn.as_mut() {
                        conn.keep_partial(&scratch, end);
                    }
                }
                Ok(Chunk::Eof) => {
                    self.end_cycle(w);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.fail(w, format!("read: {}", e.kind()));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_line(&mut self, w: usize, line: &[u8]) {
        let proto = self.proto;
        let worker = &mut self.workers[w];
        match proto.classify(line) {
            Event::LoggedIn if !proto.can_pipeline_join() => {
                let seq = worker.cycles + 1;
                if let Some(mut conn) = worker.conn.take() {
                    self.rest_of_cycle(w, seq, &mut conn);
                    let flushed = conn.flush();
                    self.workers[w].conn = Some(conn);
                    if let Err(e) = flushed {
                        self.fail(w, format!("write: {}", e.kind()));
                    }
                }
            }
            Event::Joined => worker.joined = true,
            Event::SendAck => worker.acked = true,
            Event::Ping(token) => {
                if let Some(conn) = worker.conn.as_mut() {
                    proto.pong(conn.out(), token);
                }
            }
            Event::Rejected(line) => {
                worker.problem.get_or_insert_with(|| reason_key(line));
            }
            _ => {}
        }
    }

    /// The server closed the connection: the cycle is complete if every step was answered.
    fn end_cycle(&mut self, w: usize) {
        let proto = self.proto;
        let worker = &mut self.workers[w];
        // IRC servers do not acknowledge a PRIVMSG, so the join is the last answer expected.
        let complete = worker.joined && (worker.acked || proto == Proto::Irc);
        if let Some(mut conn) = worker.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        if !complete || worker.problem.is_some() {
            let reason = worker
                .problem
                .clone()
                .unwrap_or_else(|| "closed before the cycle completed".to_string());
            self.fail(w, reason);
            return;
        }
        worker.cycles += 1;
        if self.counting {
            self.cycles += 1;
            self.latency
                .record(worker.started.elapsed().as_nanos() as u64);
        }
        self.begin(w);
    }

    fn fail(&mut self, w: usize, reason: String) {
        if self.counting {
            *self.failures.entry(reason).or_insert(0) += 1;
        }
        if let Some(mut conn) = self.workers[w].conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        // Restarted by `expire` after a pause, so a refusing server is not hammered.
        self.workers[w].started = Instant::now();
    }

    /// Restarts failed workers after a short pause and abandons cycles that hang.
    fn expire(&mut self) {
        for w in 0..self.workers.len() {
            let worker = &self.workers[w];
            let age = worker.started.elapsed();
            match &worker.conn {
                None if age >= Duration::from_millis(10) => self.begin(w),
                Some(_) if age >= CYCLE_TIMEOUT => self.fail(w, "cycle timed out".to_string()),
                _ => {}
            }
        }
    }
}
