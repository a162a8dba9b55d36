//! The engine behind `fanout`, `rooms`, `idle` and `slow`: connect a planned set of members,
//! log them in, join their rooms, then let some of them send while everyone reads.
//!
//! One thread drives every connection through a single `mio::Poll` (edge-triggered, each
//! socket registered once for reading and writing), so 10,000 connections cost the bench
//! 10,000 sockets, not 10,000 threads.
//!
//! # Flow control
//! Flat-out senders keep at most `window` messages in flight. A message counts as in flight
//! until the sender's *witness*, another reading member of its room, has received it. Both
//! protocols are paced the same way, because IRC servers send the sender neither an echo
//! nor an acknowledgement. At a fixed rate, senders are open-loop: they send on schedule
//! whatever happens to earlier messages.
//!
//! # Counting
//! Only deliveries to members other than the sender count (chatd also echoes a message to
//! its sender; IRC servers do not). Each receiver keeps, per sender of its room, the highest
//! sequence number seen (servers deliver a sender's messages in order, so a number not above
//! it is a duplicate) and how many distinct messages arrived. After the drain, a reading
//! member has lost whatever its room's senders sent, less what the server refused with an
//! error reply, that it did not receive.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::cli::{Common, StartOrder};
use crate::conn::{lines, Chunk, Conn};
use crate::neighbour::Neighbour;
use crate::payload::{self, Payload};
use crate::protocol::{Event, Proto};
use crate::report::{reason_key, Meter, SetupReport, StallReport, TrafficReport};
use crate::stats::{human_rate, Latency};

/// A fixed pseudo-random number in [0, 1) for `n` (splitmix64): the same spread every run.
fn scatter(n: u64) -> f64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Who connects, where they go and what they do.
pub struct Plan {
    /// Room names, spelled for the protocol.
    pub rooms: Vec<String>,
    /// Connected in this order; all are connected before any traffic starts.
    pub members: Vec<MemberPlan>,
    pub pace: Pace,
    /// Receive buffer for stalled members' sockets, 0 for the kernel's default.
    pub stalled_rcvbuf: usize,
}

pub struct MemberPlan {
    pub name: String,
    pub room: Option<usize>,
    pub sends: bool,
    /// Stops reading when traffic starts (the `slow` scenario).
    pub stalls: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Messages per second per sender, open-loop.
    Rate(f64),
    /// As fast as the window allows.
    Window(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    /// Connecting, logging in, joining.
    Handshake,
    Ready,
    /// Not reading, on purpose.
    Stalled,
    Closed,
}

struct Client {
    conn: Option<Conn>,
    /// This client's index in `Engine::senders`, if it sends.
    sender: Option<usize>,
    name: String,
    room: Option<usize>,
    state: State,
    stalls: bool,
    /// Highest sequence number seen from each sender of the room, by the sender's slot.
    last_seq: Vec<u64>,
    /// Distinct messages received from each sender of the room, by the sender's slot.
    received: Vec<u64>,
    /// Queued output not yet flushed this turn (the index is in `Engine::dirty`).
    dirty: bool,
    /// The last closing line (BYE, ERROR, ERR server-full) the server sent, if any.
    closing_line: Option<String>,
    close_reason: Option<String>,
    /// Closed after traffic started (not refused or failed during set-up).
    closed_while_running: bool,
}

struct Sender {
    client: usize,
    room: usize,
    /// Index into the receivers' `last_seq`.
    slot: usize,
    sent: u64,
    /// Highest sequence number the witness has received.
    acked: u64,
    /// Messages the server answered with an error instead of publishing them.
    refused: u64,
    witness: Option<usize>,
    /// Waiting for the witness to catch up (window full).
    blocked: bool,
}

/// Counters for the run; the window is the measured interval after the warm-up.
struct Tally {
    window_start_ns: u64,
    window_end_ns: u64,
    latency: Latency,
    /// Latencies since the last progress line.
    interval: Latency,
    deliveries_window: u64,
    deliveries_total: u64,
    deliveries_interval: u64,
    sent_window: u64,
    sent_interval: u64,
    /// Bytes read from the start of traffic to the end of the drain.
    rx_bytes_running: u64,
    duplicated: u64,
    echoes: u64,
    rejected: BTreeMap<String, u64>,
}

pub struct Engine<'a> {
    common: &'a Common,
    proto: Proto,
    epoch: Instant,
    poll: Poll,
    scratch: Vec<u8>,
    body: Vec<u8>,
    plan_rooms: Vec<String>,
    clients: Vec<Client>,
    senders: Vec<Sender>,
    /// Senders in each room, by slot.
    room_senders: Vec<Vec<usize>>,
    dirty: Vec<usize>,
    /// Clients in `State::Handshake`, which `connect_concurrency` bounds.
    handshaking: usize,
    /// Window-paced senders with room in their window.
    runnable: Vec<usize>,
    /// Rate-paced senders by next due time (ns since `epoch`).
    due: BinaryHeap<Reverse<(u64, usize)>>,
    pace: Pace,
    stalled_rcvbuf: usize,
    tally: Tally,
    meter: Meter,
    /// Whether traffic has started (lines are then parsed for payloads).
    running: bool,
    sending: bool,
}

impl<'a> Engine<'a> {
    pub fn new(common: &'a Common, plan: Plan, epoch: Instant) -> io::Result<Engine<'a>> {
        let mut room_senders = vec![Vec::new(); plan.rooms.len()];
        let mut senders = Vec::new();
        let mut clients = Vec::with_capacity(plan.members.len());
        for (index, member) in plan.members.into_iter().enumerate() {
            let sender = (member.sends && member.room.is_some()).then_some(senders.len());
            if let (Some(_), Some(room)) = (sender, member.room) {
                room_senders[room].push(senders.len());
                senders.push(Sender {
                    client: index,
                    room,
                    slot: room_senders[room].len() - 1,
                    sent: 0,
                    acked: 0,
                    refused: 0,
                    witness: None,
                    blocked: false,
                });
            }
            clients.push(Client {
                conn: None,
                sender,
                name: member.name,
                room: member.room,
                state: State::NotStarted,
                stalls: member.stalls,
                last_seq: Vec::new(),
                received: Vec::new(),
                dirty: false,
                closing_line: None,
                close_reason: None,
                closed_while_running: false,
            });
        }
        for client in &mut clients {
            if let Some(room) = client.room {
                client.last_seq = vec![0; room_senders[room].len()];
                client.received = vec![0; room_senders[room].len()];
            }
        }
        Ok(Engine {
            common,
            proto: common.proto,
            epoch,
            poll: Poll::new()?,
            scratch: Vec::with_capacity(256 * 1024),
            body: Vec::with_capacity(common.body_size + 64),
            plan_rooms: plan.rooms,
            clients,
            senders,
            room_senders,
            dirty: Vec::new(),
            handshaking: 0,
            runnable: Vec::new(),
            due: BinaryHeap::new(),
            pace: plan.pace,
            stalled_rcvbuf: plan.stalled_rcvbuf,
            tally: Tally {
                window_start_ns: u64::MAX,
                window_end_ns: u64::MAX,
                latency: Latency::new(),
                interval: Latency::new(),
                deliveries_window: 0,
                deliveries_total: 0,
                deliveries_interval: 0,
                sent_window: 0,
                sent_interval: 0,
                rx_bytes_running: 0,
                duplicated: 0,
                echoes: 0,
                rejected: BTreeMap::new(),
            },
            meter: Meter::new(common.server_pid),
            running: false,
            sending: false,
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn progress(&self, line: std::fmt::Arguments) {
        if !self.common.quiet {
            eprintln!("[{:7.1}s] {line}", self.epoch.elapsed().as_secs_f64());
        }
    }

    /// Connects every planned member, at most `connect_concurrency` at a time.
    pub fn setup(&mut self) -> SetupReport {
        self.meter.before_setup();
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(self.common.setup_timeout);
        let mut next_tick = started + Duration::from_secs(1);
        let mut events = Events::with_capacity(1024);
        let mut next = 0;
        let mut timed_out = false;
        loop {
            while next < self.clients.len() && self.handshaking() < self.common.connect_concurrency
            {
                self.start(next);
                next += 1;
            }
            if next == self.clients.len() && self.handshaking() == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            self.turn(&mut events, Duration::from_millis(20));
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                let ready = self.count(State::Ready);
                self.progress(format_args!(
                    "setup: {ready}/{} sessions ready",
                    self.clients.len()
                ));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut failures = BTreeMap::new();
        for index in 0..self.clients.len() {
            if timed_out && self.clients[index].state != State::Ready {
                self.close(index, "set-up timed out".to_string());
            }
            if let Some(reason) = &self.clients[index].close_reason {
                *failures.entry(reason.clone()).or_insert(0) += 1;
            }
        }
        self.meter.after_setup();
        let ready = self.count(State::Ready);
        SetupReport {
            sessions_wanted: self.clients.len(),
            sessions_ready: ready,
            failed: self.clients.len() - ready,
            failures,
            seconds,
            sessions_per_s: ready as f64 / seconds.max(1e-9),
        }
    }

    fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Moves a client to `state`, keeping the count of clients mid-handshake.
    fn set_state(&mut self, index: usize, state: State) {
        let client = &mut self.clients[index];
        if client.state == State::Handshake {
            self.handshaking -= 1;
        }
        if state == State::Handshake {
            self.handshaking += 1;
        }
        client.state = state;
    }

    fn count(&self, state: State) -> usize {
        self.clients.iter().filter(|c| c.state == state).count()
    }

    fn start(&mut self, index: usize) {
        let rcvbuf = if self.clients[index].stalls {
            self.stalled_rcvbuf
        } else {
            0
        };
        let mut conn = match Conn::connect(
            self.common.addr_for(index),
            rcvbuf,
            !self.common.delayed_acks,
        ) {
            Ok(conn) => conn,
            Err(e) => {
                self.set_state(index, State::Handshake);
                self.close(index, format!("connect: {}", e.kind()));
                return;
            }
        };
        let registered = self.poll.registry().register(
            &mut conn.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        );
        self.set_state(index, State::Handshake);
        if let Err(e) = registered {
            self.close(index, format!("register: {e}"));
            return;
        }
        let client = &mut self.clients[index];
        self.proto.login(conn.out(), &client.name);
        if let (Some(room), true) = (client.room, self.proto.can_pipeline_join()) {
            self.proto.join(conn.out(), &self.plan_rooms[room]);
        }
        client.conn = Some(conn);
        // The first write waits for the connect to complete: the WRITABLE event flushes it.
    }

    /// One poll: handle readiness, then let senders send, then flush what was queued.
    fn turn(&mut self, events: &mut Events, timeout: Duration) {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll failed: {e}");
            }
        }
        for event in events.iter() {
            let index = event.token().0;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.on_readable(index);
            }
            if event.is_writable() {
                self.mark_dirty(index);
            }
        }
        if self.sending {
            self.send_due();
        }
        self.flush_dirty();
    }

    fn mark_dirty(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if !client.dirty && client.conn.is_some() {
            client.dirty = true;
            self.dirty.push(index);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for index in dirty.drain(..) {
            let client = &mut self.clients[index];
            client.dirty = false;
            if let Some(conn) = client.conn.as_mut() {
                if let Err(e) = conn.flush() {
                    self.close(index, format!("write: {}", e.kind()));
                }
            }
        }
        self.dirty = dirty;
    }

    fn on_readable(&mut self, index: usize) {
        if matches!(self.clients[index].state, State::Stalled | State::Closed) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.clients[index].conn.as_mut() {
            match conn.read_chunk(&mut scratch) {
                Ok(Chunk::Lines { end, read }) => {
                    if self.running {
                        self.tally.rx_bytes_running += read as u64;
                    }
                    let now_ns = self.now_ns();
                    for line in lines(&scratch[..end]) {
                        self.on_line(index, line, now_ns);
                    }
                    if let Some(conn) = self.clients[index].conn.as_mut() {
                        conn.keep_partial(&scratch, end);
                    }
                }
                Ok(Chunk::Eof) => {
                    let reason = self.clients[index]
                        .closing_line
                        .clone()
                        .unwrap_or_else(|| "closed by server".to_string());
                    self.close(index, reason);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.close(index, format!("read: {}", e.kind()));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_line(&mut self, index: usize, line: &[u8], now_ns: u64) {
        let proto = self.proto;
        match proto.classify(line) {
            Event::Message(body) => self.on_message(index, body, now_ns),
            Event::SendAck | Event::Other => {}
            Event::Ping(token) => {
                if let Some(conn) = self.clients[index].conn.as_mut() {
                    proto.pong(conn.out(), token);
                }
                self.mark_dirty(index);
            }
            Event::LoggedIn => {
                let client = &mut self.clients[index];
                match client.room {
                    None => self.set_state(index, State::Ready),
                    Some(room) if !proto.can_pipeline_join() => {
                        if let Some(conn) = client.conn.as_mut() {
                            proto.join(conn.out(), &self.plan_rooms[room]);
                        }
                        self.mark_dirty(index);
                    }
                    Some(_) => {}
                }
            }
            Event::Joined => {
                if self.clients[index].state == State::Handshake {
                    self.set_state(index, State::Ready);
                }
            }
            Event::Closing(line) => {
                self.clients[index].closing_line = Some(reason_key(line));
            }
            Event::Rejected(line) => {
                if self.clients[index].state == State::Handshake {
                    self.close(index, reason_key(line));
                } else {
                    // After set-up a client sends nothing but messages, and a server answers
                    // each command in order, so this refuses one of this sender's messages
                    // (e.g. a rate limit): it was never published and cannot be lost.
                    *self.tally.rejected.entry(reason_key(line)).or_insert(0) += 1;
                    if let Some(s) = self.clients[index].sender {
                        let sender = &mut self.senders[s];
                        sender.refused += 1;
                        // Nor is it in flight any more: the witness will never see it.
                        sender.acked = (sender.acked + 1).min(sender.sent);
                        if sender.blocked {
                            sender.blocked = false;
                            self.runnable.push(s);
                        }
                    }
                }
            }
        }
    }

    fn on_message(&mut self, index: usize, body: &[u8], now_ns: u64) {
        let Some(Payload {
            sender,
            seq,
            sent_ns,
        }) = payload::decode(body)
        else {
            return;
        };
        let Some(sender_state) = self.senders.get_mut(sender as usize) else {
            return;
        };
        if sender_state.client == index {
            self.tally.echoes += 1;
            return;
        }
        let client = &mut self.clients[index];
        let Some(last) = client.last_seq.get_mut(sender_state.slot) else {
            return;
        };
        if seq <= *last {
            self.tally.duplicated += 1;
            return;
        }
        *last = seq;
        client.received[sender_state.slot] += 1;
        if client.stalls {
            // Read after the fact, when the run is over: not a latency anyone waited for.
            return;
        }
        if sender_state.witness == Some(index) {
            sender_state.acked = sender_state.acked.max(seq);
            if sender_state.blocked {
                sender_state.blocked = false;
                self.runnable.push(sender as usize);
            }
        }
        let tally = &mut self.tally;
        tally.deliveries_total += 1;
        let latency = now_ns.saturating_sub(sent_ns);
        if now_ns >= tally.window_start_ns && now_ns < tally.window_end_ns {
            tally.deliveries_window += 1;
        }
        if sent_ns >= tally.window_start_ns && sent_ns < tally.window_end_ns {
            tally.latency.record(latency);
        }
        tally.deliveries_interval += 1;
        tally.interval.record(latency);
    }

    fn close(&mut self, index: usize, reason: String) {
        let client = &mut self.clients[index];
        if client.state == State::Closed {
            return;
        }
        if let Some(mut conn) = client.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.set_state(index, State::Closed);
        let client = &mut self.clients[index];
        client.close_reason = Some(reason);
        client.closed_while_running = self.running;
        if let Some(s) = client.sender {
            self.forget_unconfirmed(s);
        }
        if self.sending {
            self.replace_witness(index);
        }
    }

    /// A sender's connection closed: whatever it queued after the last message any reader
    /// received may never have reached the server, so it no longer counts as sent (and
    /// cannot count as lost). Earlier messages that some reader missed are still losses.
    fn forget_unconfirmed(&mut self, s: usize) {
        let sender = &self.senders[s];
        let seen = self
            .clients
            .iter()
            .filter(|c| c.room == Some(sender.room))
            .filter_map(|c| c.last_seq.get(sender.slot))
            .max()
            .copied()
            .unwrap_or(0);
        self.senders[s].sent = seen;
    }

    /// A witness that disconnected can no longer acknowledge; pick another reading member.
    fn replace_witness(&mut self, gone: usize) {
        for s in 0..self.senders.len() {
            if self.senders[s].witness != Some(gone) {
                continue;
            }
            let witness = self.pick_witness(s);
            let sender = &mut self.senders[s];
            sender.witness = witness;
            sender.acked = witness.map_or(sender.sent, |w| self.clients[w].last_seq[sender.slot]);
            if sender.blocked {
                sender.blocked = false;
                self.runnable.push(s);
            }
        }
    }

    /// The last reading member of the sender's room other than the sender. The last one to
    /// join is a fair choice: a server that fans out in join order reaches it last.
    fn pick_witness(&self, s: usize) -> Option<usize> {
        let sender = &self.senders[s];
        (0..self.clients.len()).rev().find(|&c| {
            c != sender.client
                && self.clients[c].room == Some(sender.room)
                && self.clients[c].state == State::Ready
                && !self.clients[c].stalls
        })
    }

    /// Sends whatever is due: window-paced senders with room in their window, rate-paced
    /// senders whose time has come. Stops at the end of the sending phase.
    fn send_due(&mut self) {
        match self.pace {
            Pace::Window(window) => {
                let mut runnable = std::mem::take(&mut self.runnable);
                for s in runnable.drain(..) {
                    if self.senders[s].witness.is_none() {
                        continue;
                    }
                    while self.senders[s].sent - self.senders[s].acked < window {
                        if !self.send_one(s) {
                            break;
                        }
                    }
                    let sender = &mut self.senders[s];
                    sender.blocked = sender.sent - sender.acked >= window;
                }
                self.runnable = runnable;
            }
            Pace::Rate(rate) => {
                let interval_ns = (1e9 / rate) as u64;
                let now_ns = self.now_ns();
                while let Some(&Reverse((due_ns, s))) = self.due.peek() {
                    if due_ns > now_ns {
                        break;
                    }
                    self.due.pop();
                    if self.send_one(s) {
                        self.due.push(Reverse((due_ns + interval_ns, s)));
                    }
                }
            }
        }
    }

    /// Queues one message from sender `s`; false if its connection is gone.
    fn send_one(&mut self, s: usize) -> bool {
        let sender = &self.senders[s];
        let index = sender.client;
        if self.clients[index].conn.is_none() {
            return false;
        }
        let now_ns = self.now_ns();
        let seq = sender.sent + 1;
        let room = sender.room;
        self.body.clear();
        let payload = Payload {
            sender: s as u32,
            seq,
            sent_ns: now_ns,
        };
        payload::encode(&mut self.body, payload, self.common.body_size);
        if let Some(conn) = self.clients[index].conn.as_mut() {
            self.proto
                .send(conn.out(), &self.plan_rooms[room], &self.body);
        }
        self.senders[s].sent = seq;
        if now_ns >= self.tally.window_start_ns && now_ns < self.tally.window_end_ns {
            self.tally.sent_window += 1;
        }
        self.tally.sent_interval += 1;
        self.mark_dirty(index);
        true
    }

    /// Warm-up, measured window, drain; then stalled members read what they can.
    pub fn run(&mut self) -> (TrafficReport, Option<StallReport>) {
        let warmup = Duration::from_secs_f64(self.common.warmup);
        let duration = Duration::from_secs_f64(self.common.duration);
        let started = Instant::now();
        let window_start = started + warmup;
        let window_end = window_start + duration;
        self.tally.window_start_ns = (window_start - self.epoch).as_nanos() as u64;
        self.tally.window_end_ns = (window_end - self.epoch).as_nanos() as u64;
        for client in &mut self.clients {
            if client.stalls && client.state == State::Ready {
                client.state = State::Stalled;
            }
        }
        for s in 0..self.senders.len() {
            self.senders[s].witness = self.pick_witness(s);
        }
        let start_ns = self.now_ns();
        match self.pace {
            Pace::Window(_) => self.runnable = (0..self.senders.len()).collect(),
            Pace::Rate(rate) => {
                // Spread first sends over one interval so senders do not move in lockstep.
                let interval_ns = 1e9 / rate;
                let count = self.senders.len().max(1) as f64;
                for s in 0..self.senders.len() {
                    let turn = match self.common.start_order {
                        StartOrder::Rooms => s as f64,
                        StartOrder::Shuffled => scatter(s as u64) * count,
                    };
                    let offset = (interval_ns * turn / count) as u64;
                    self.due.push(Reverse((start_ns + offset, s)));
                }
            }
        }
        self.running = true;
        self.sending = true;
        let neighbour = Neighbour::start(self.common.neighbour_threads);
        let mut events = Events::with_capacity(4096);
        let mut next_tick = started + Duration::from_secs(1);
        let mut window_started = false;
        if warmup.is_zero() {
            self.meter.window_start();
            window_started = true;
        }
        self.meter.tick();
        loop {
            let now = Instant::now();
            if !window_started && now >= window_start {
                self.meter.window_start();
                window_started = true;
            }
            if now >= window_end {
                break;
            }
            let timeout = self.next_wake(now, next_tick.min(window_end));
            self.turn(&mut events, timeout);
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                self.progress_line(if Instant::now() < window_start {
                    "warm-up"
                } else {
                    "measure"
                });
            }
        }
        self.meter.window_end();
        drop(neighbour);
        self.sending = false;
        let measured_s = Instant::now().duration_since(window_start).as_secs_f64();

        // Drain: give in-flight messages time to arrive.
        let drain_end = Instant::now() + Duration::from_secs_f64(self.common.drain);
        let mut next_check = Instant::now();
        loop {
            let now = Instant::now();
            if now >= drain_end {
                break;
            }
            if now >= next_check {
                if self.expected_missing() == 0 {
                    break;
                }
                next_check = now + Duration::from_millis(50);
            }
            self.turn(&mut events, Duration::from_millis(10));
        }
        let lost = self.expected_missing();
        let stalled = self.resume_stalled(&mut events);
        self.running = false;

        let tally = &self.tally;
        let total_sent = self.senders.iter().map(|s| s.sent).sum();
        let mut disconnect_reasons = BTreeMap::new();
        for client in self
            .clients
            .iter()
            .filter(|c| c.closed_while_running && !c.stalls)
        {
            if let (State::Closed, Some(reason)) = (client.state, &client.close_reason) {
                *disconnect_reasons.entry(reason.clone()).or_insert(0) += 1;
            }
        }
        let traffic = TrafficReport {
            measured_s,
            messages_sent: tally.sent_window,
            messages_per_s: tally.sent_window as f64 / measured_s,
            deliveries: tally.deliveries_window,
            deliveries_per_s: tally.deliveries_window as f64 / measured_s,
            latency: tally.latency.summary(),
            lost,
            duplicated: tally.duplicated,
            echoes: tally.echoes,
            rx_bytes_per_delivery: if tally.deliveries_total == 0 {
                0.0
            } else {
                tally.rx_bytes_running as f64 / tally.deliveries_total as f64
            },
            rejected: tally.rejected.clone(),
            disconnected: disconnect_reasons.values().sum(),
            disconnect_reasons,
            total_messages_sent: total_sent,
            total_deliveries: tally.deliveries_total,
        };
        (traffic, stalled)
    }

    fn next_wake(&self, now: Instant, limit: Instant) -> Duration {
        let limit = limit.saturating_duration_since(now);
        match self.pace {
            // Acknowledgements arrive as read events, so the poll wakes on its own.
            Pace::Window(_) => limit.min(Duration::from_millis(5)),
            Pace::Rate(_) => {
                let due = self.due.peek().map_or(limit, |&Reverse((due_ns, _))| {
                    Duration::from_nanos(due_ns.saturating_sub(self.now_ns()))
                });
                due.min(limit)
            }
        }
    }

    fn progress_line(&mut self, phase: &str) {
        let server = self.meter.tick();
        let tally = &mut self.tally;
        let server = server.map_or(String::new(), |(cpu, rss)| {
            format!("  server cpu {cpu:.0}% rss {} MiB", rss / 1024)
        });
        let line = format!(
            "{phase}: {} deliveries/s  {} sent/s  p99 {:.2} ms  max {:.2} ms{server}",
            human_rate(tally.deliveries_interval as f64),
            human_rate(tally.sent_interval as f64),
            tally.interval.quantile_ms(0.99),
            tally.interval.quantile_ms(1.0),
        );
        tally.deliveries_interval = 0;
        tally.sent_interval = 0;
        tally.interval.reset();
        self.progress(format_args!("{line}"));
    }

    /// Messages the reading, connected members should have received but have not: each
    /// sender's messages that the server did not refuse, less those received. Before the
    /// drain ends some may still be on their way; after it, they are lost.
    fn expected_missing(&self) -> u64 {
        let mut missing = 0;
        for (index, client) in self.clients.iter().enumerate() {
            if client.state != State::Ready {
                continue;
            }
            let Some(room) = client.room else { continue };
            for (slot, &s) in self.room_senders[room].iter().enumerate() {
                let sender = &self.senders[s];
                if sender.client != index {
                    let published = sender.sent.saturating_sub(sender.refused);
                    missing += published.saturating_sub(client.received[slot]);
                }
            }
        }
        missing
    }

    /// Stalled members start reading again, to find out which ones the server closed.
    fn resume_stalled(&mut self, events: &mut Events) -> Option<StallReport> {
        let stalled: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].stalls)
            .collect();
        if stalled.is_empty() {
            return None;
        }
        for &index in &stalled {
            if self.clients[index].state == State::Stalled {
                self.clients[index].state = State::Ready;
                self.on_readable(index);
            }
        }
        // A stalled socket may hold megabytes, and the server may only notice the reader is
        // back when its blocked write completes: read until all are closed or 2 s pass.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && stalled
                .iter()
                .any(|&c| self.clients[c].state != State::Closed)
        {
            self.turn(events, Duration::from_millis(50));
        }
        let mut report = StallReport {
            stalled: stalled.len(),
            ..StallReport::default()
        };
        for &index in &stalled {
            let client = &self.clients[index];
            if client.state == State::Closed {
                report.disconnected += 1;
                let reason = client.close_reason.clone().unwrap_or_default();
                *report.reasons.entry(reason).or_insert(0) += 1;
            } else {
                report.still_connected += 1;
            }
        }
        Some(report)
    }

    /// Closes everything and returns the server and bench costs.
    pub fn finish(
        mut self,
        sessions: usize,
        deliveries: u64,
    ) -> (
        Option<crate::report::ServerReport>,
        crate::report::BenchReport,
    ) {
        let costs = self.meter.finish(sessions, deliveries);
        for index in 0..self.clients.len() {
            self.close(index, "finished".to_string());
        }
        costs
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::fake_server::{self, Faults};
    use crate::scenario::Names;

    /// Runs a short flat-out fan-out (3 members, 1 sender) against the fake server.
    fn run_fanout(faults: Faults) -> TrafficReport {
        let addr = fake_server::start(faults).to_string();
        let cli = Cli::parse_from([
            "chatd-bench",
            "--addr",
            &addr,
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--drain",
            "1",
            "--quiet",
            "fanout",
        ]);
        let names = Names::new(&cli.common);
        let members = (0..3)
            .map(|n| MemberPlan {
                name: names.user('m', n),
                room: Some(0),
                sends: n == 0,
                stalls: false,
            })
            .collect();
        let plan = Plan {
            rooms: vec![names.room(0)],
            members,
            pace: Pace::Window(4),
            stalled_rcvbuf: 0,
        };
        let mut engine = Engine::new(&cli.common, plan, Instant::now()).unwrap();
        assert_eq!(engine.setup().sessions_ready, 3);
        engine.run().0
    }

    /// Every message reaches both other members once; the sender's echo is not counted.
    #[test]
    fn a_faithful_server_loses_and_duplicates_nothing() {
        let traffic = run_fanout(Faults::default());
        assert!(traffic.total_messages_sent > 0);
        assert_eq!(traffic.total_deliveries, 2 * traffic.total_messages_sent);
        assert_eq!(traffic.echoes, traffic.total_messages_sent);
        assert_eq!((traffic.lost, traffic.duplicated), (0, 0));
        assert!(traffic.latency.samples > 0);
    }

    /// A delivery the server skips is counted as lost, one it repeats as duplicated.
    #[test]
    fn skipped_and_repeated_deliveries_are_counted() {
        let traffic = run_fanout(Faults {
            drop_message: Some(3),
            repeat_message: Some(5),
        });
        assert_eq!(traffic.lost, 1);
        assert_eq!(traffic.duplicated, 2);
    }
}
