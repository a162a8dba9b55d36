//! [`Client`]: one logical chatd session that outlives its connections.
//!
//! The client is single-threaded and driven by its caller: every public call reads the
//! connection while it waits ([`Client::pump`]), so replies, events and reconnects all happen
//! on the caller's thread, in one place, with no locks. Every command carries a label; its
//! reply is routed by the label to what asked for it ([`Purpose`]). Lines of rooms go through
//! [`RoomOrder`], which turns live lines and SYNC replays into one ordered stream.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::connection::{Connection, ReadOutcome};
use crate::e2e::DeviceList;
use crate::event::{Event, Member, Message, Sent, Target};
use crate::pacing::Pacer;
use crate::resume::{PendingSend, ResumeState};
use crate::room::RoomOrder;
use crate::wire::{field, Kind, ServerLine};
use crate::{Config, Error};

/// Who is waiting for a labelled command's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Info,
    Login,
    /// The ROOMS that starts every resume.
    Rooms,
    /// A JOIN the resume sends for a room missing from ROOMS.
    Rejoin(String),
    Sync(String),
    Send(String),
    /// A call of the application ([`Client::call`]): its reply goes to `replies`.
    Caller,
}

struct Awaiting {
    /// The whole line, label included, to send again after `ERR rate-limited`.
    line: String,
    purpose: Purpose,
    /// The reply's lines before its `OK` (WHO rows, HISTORY messages), label removed.
    lines: Vec<String>,
}

/// How an application's call ended.
enum Outcome {
    Done(Reply),
    Refused {
        code: String,
        text: String,
    },
    /// The connection dropped before the reply: the call is made again after the resume.
    Lost,
}

/// A command's `OK` fields and the lines before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The fields after `OK <VERB>`.
    pub fields: Vec<String>,
    /// The reply's other lines (without the label), in order.
    pub lines: Vec<String>,
}

/// `OK JOIN <room> seq=<seq> epoch=<epoch> members=<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub members: u64,
}

/// A chatd session that reconnects by itself and delivers each room's messages exactly once,
/// in order.
///
/// ```no_run
/// use std::time::Duration;
/// use chatd_client::{Client, Config, Event};
///
/// let mut client = Client::connect(Config::new("127.0.0.1:7878", "alice").device("laptop"))?;
/// client.join("general")?;
/// client.send("general", "hello")?; // stored exactly once, even across a reconnect
/// while let Some(event) = client.next_event(Duration::from_secs(30))? {
///     if let Event::Message(msg) = event {
///         println!("[{}] {}: {}", msg.room, msg.sender, msg.body);
///     }
/// }
/// # Ok::<(), chatd_client::Error>(())
/// ```
pub struct Client {
    pub(crate) config: Config,
    conn: Option<Connection>,
    logged_in: bool,
    /// Whether a login ever succeeded: the later ones are reconnects.
    ever_logged_in: bool,
    /// When the next connection attempt may start.
    reconnect_at: Instant,
    backoff: Duration,
    /// Set when the session is over for good; every call then returns it.
    ended: Option<Error>,
    rooms: BTreeMap<String, RoomOrder>,
    /// Per room, the cursor of what the application has taken from `events`: the cursor
    /// that [`Client::resume_state`] persists.
    delivered: BTreeMap<String, (String, u64)>,
    /// Sends without their OK yet, oldest first.
    pending: Vec<PendingSend>,
    /// The cids whose outcome a caller of [`Client::send`] waits for, and those outcomes.
    waiting_sends: HashSet<String>,
    send_outcomes: HashMap<String, Result<Sent, Error>>,
    awaiting: HashMap<String, Awaiting>,
    replies: HashMap<String, Outcome>,
    /// Labels refused with `rate-limited`, and when to send them again.
    delayed: Vec<(Instant, String)>,
    events: VecDeque<Event>,
    next_label: u64,
    pacer: Pacer,
    /// The server's body limit (`max-body` in INFO; the protocol's default until it comes),
    /// which an encrypted DM's whole envelope must fit.
    pub(crate) max_body: usize,
    /// Device lists fetched with KEYS, by user. A `DEVICE` event drops that user's entry, a
    /// new login drops them all (events are live only), so a DM is never encrypted for a
    /// device set the client was told has changed.
    pub(crate) device_lists: HashMap<String, DeviceList>,
}

/// The protocol's default body limit, used until INFO says otherwise.
const DEFAULT_MAX_BODY: usize = 4096;

impl Client {
    /// Connects, logs in and resumes, waiting at most `config.connect_timeout` (retrying with
    /// backoff within it).
    pub fn connect(config: Config) -> Result<Client, Error> {
        Client::resume(config, ResumeState::default())
    }

    /// Like [`Client::connect`], resuming from a persisted state: every room is SYNCed from
    /// its cursor and every pending send is retried with its cid.
    pub fn resume(config: Config, state: ResumeState) -> Result<Client, Error> {
        let deadline = Instant::now() + config.connect_timeout;
        let mut client = Client {
            backoff: config.initial_backoff,
            config,
            conn: None,
            logged_in: false,
            ever_logged_in: false,
            reconnect_at: Instant::now(),
            ended: None,
            rooms: BTreeMap::new(),
            delivered: BTreeMap::new(),
            pending: state.pending,
            waiting_sends: HashSet::new(),
            send_outcomes: HashMap::new(),
            awaiting: HashMap::new(),
            replies: HashMap::new(),
            delayed: Vec::new(),
            events: VecDeque::new(),
            next_label: 0,
            pacer: Pacer::new(),
            max_body: DEFAULT_MAX_BODY,
            device_lists: HashMap::new(),
        };
        for (room, (epoch, seq)) in state.rooms {
            client
                .rooms
                .insert(room.clone(), RoomOrder::new(&epoch, seq));
            client.delivered.insert(room, (epoch, seq));
        }
        client.wait_until_resumed(deadline)?;
        Ok(client)
    }

    /// Waits until logged in and every room's SYNC is done.
    pub fn wait_until_resumed(&mut self, deadline: Instant) -> Result<(), Error> {
        while !self.resumed() {
            if Instant::now() >= deadline {
                return Err(timed_out("login and resume"));
            }
            self.pump(deadline)?;
        }
        Ok(())
    }

    fn resumed(&self) -> bool {
        self.logged_in
            && !self.awaiting.values().any(|a| {
                matches!(
                    a.purpose,
                    Purpose::Login | Purpose::Rooms | Purpose::Rejoin(_) | Purpose::Sync(_)
                )
            })
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` if none came. Events queued
    /// before the session ended are returned before its error.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                self.note_delivered(&event);
                return Ok(Some(event));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.pump(deadline)?;
        }
    }

    /// Events as a blocking iterator; it ends with the error that ends the session.
    pub fn events(&mut self) -> Events<'_> {
        Events {
            client: self,
            done: false,
        }
    }

    /// What to persist to resume later: each room's cursor as far as the application has
    /// taken events, and the sends not yet acknowledged.
    pub fn resume_state(&self) -> ResumeState {
        let rooms = self
            .rooms
            .iter()
            .map(|(name, room)| {
                let (epoch, seq) = self
                    .delivered
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| (room.epoch.clone(), room.seq));
                let epoch = if epoch.is_empty() {
                    room.epoch.clone()
                } else {
                    epoch
                };
                (name.clone(), (epoch, seq))
            })
            .collect();
        ResumeState {
            rooms,
            pending: self.pending.clone(),
        }
    }

    /// `JOIN <room>`; from its OK on the room's messages are delivered.
    pub fn join(&mut self, room: &str) -> Result<Joined, Error> {
        check_word(room)?;
        let reply = self.call(&format!("JOIN {room}"), self.config.connect_timeout)?;
        parse_join(&reply.fields).ok_or_else(|| malformed("OK JOIN", &reply.fields))
    }

    /// `LEAVE <room>`; the client forgets the room's cursor.
    pub fn leave(&mut self, room: &str) -> Result<(), Error> {
        check_word(room)?;
        self.call(&format!("LEAVE {room}"), self.config.connect_timeout)
            .map(drop)
    }

    /// Posts to a room with a fresh cid and waits for the OK, across reconnects if need be:
    /// the message is stored exactly once. On timeout the send stays pending and is retried.
    pub fn send(&mut self, room: &str, body: &str) -> Result<Sent, Error> {
        self.send_and_wait(Target::Room(room.to_owned()), body)
    }

    /// `DM <user> <body>`, like [`Client::send`].
    pub fn dm(&mut self, user: &str, body: &str) -> Result<Sent, Error> {
        self.send_and_wait(Target::User(user.to_owned()), body)
    }

    /// Queues a send without waiting; its outcome arrives as [`Event::Sent`] or
    /// [`Event::Refused`]. Returns its cid.
    pub fn send_nowait(&mut self, target: Target, body: &str) -> Result<String, Error> {
        self.enqueue(target, body)
    }

    /// Waits until every queued send is acknowledged or refused.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        while !self.pending.is_empty() {
            if Instant::now() >= deadline {
                return Err(timeout_error(self.pending.len()));
            }
            self.pump(deadline)?;
        }
        Ok(())
    }

    fn send_and_wait(&mut self, target: Target, body: &str) -> Result<Sent, Error> {
        let deadline = Instant::now() + self.config.connect_timeout;
        let cid = self.enqueue(target, body)?;
        self.waiting_sends.insert(cid.clone());
        loop {
            if let Some(outcome) = self.send_outcomes.remove(&cid) {
                return outcome;
            }
            if Instant::now() >= deadline {
                self.waiting_sends.remove(&cid);
                return Err(timed_out(&format!("the OK of send {cid}")));
            }
            self.pump(deadline)?;
        }
    }

    fn enqueue(&mut self, target: Target, body: &str) -> Result<String, Error> {
        if body.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(
                "a body cannot hold a line break".into(),
            ));
        }
        match &target {
            Target::Room(name) | Target::User(name) => check_word(name)?,
        }
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let send = PendingSend {
            cid: uuid::Uuid::new_v4().simple().to_string(),
            target,
            body: body.to_owned(),
        };
        if self.logged_in {
            self.issue_send(&send);
        }
        let cid = send.cid.clone();
        self.pending.push(send);
        Ok(cid)
    }

    /// `HISTORY <room> [<limit>] [before=<seq>]`: older messages, oldest first. These are not
    /// events: the room's delivery cursor does not move.
    pub fn history(
        &mut self,
        room: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<Message>, Error> {
        check_word(room)?;
        let before = before.map(|b| format!(" before={b}")).unwrap_or_default();
        let reply = self.call(
            &format!("HISTORY {room} {limit}{before}"),
            self.config.connect_timeout,
        )?;
        Ok(reply
            .lines
            .iter()
            .filter_map(|line| match ServerLine::parse(line).kind {
                Kind::Msg(msg) => Some(msg),
                _ => None,
            })
            .collect())
    }

    /// `WHO <room>`: the members, in name order.
    pub fn who(&mut self, room: &str) -> Result<Vec<Member>, Error> {
        check_word(room)?;
        let reply = self.call(&format!("WHO {room}"), self.config.connect_timeout)?;
        Ok(reply
            .lines
            .iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                match words[..] {
                    ["WHO", _, user, "online"] => Some(Member {
                        user: user.to_owned(),
                        online: true,
                        last_seen: None,
                    }),
                    ["WHO", _, user, "offline", seen] => Some(Member {
                        user: user.to_owned(),
                        online: false,
                        last_seen: seen.strip_prefix("last_seen=").map(str::to_owned),
                    }),
                    _ => None,
                }
            })
            .collect())
    }

    /// `TYPING <room>` (or `stop`).
    pub fn typing(&mut self, room: &str, typing: bool) -> Result<(), Error> {
        check_word(room)?;
        let stop = if typing { "" } else { " stop" };
        self.call(&format!("TYPING {room}{stop}"), self.config.connect_timeout)
            .map(drop)
    }

    /// `READ <room> <seq>`; returns the stored read position.
    pub fn read(&mut self, room: &str, seq: u64) -> Result<u64, Error> {
        check_word(room)?;
        let reply = self.call(&format!("READ {room} {seq}"), self.config.connect_timeout)?;
        reply
            .fields
            .get(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("OK READ", &reply.fields))
    }

    /// Any command, labelled, answered within `timeout`: made again after a reconnect if
    /// the connection dropped first, so use it for commands that are safe to repeat.
    pub fn call(&mut self, command: &str, timeout: Duration) -> Result<Reply, Error> {
        if command.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument("a command is one line".into()));
        }
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline: each pass waits for a login, then for one reply.
        loop {
            self.wait_logged_in(deadline)?;
            let label = self.issue("", command, Purpose::Caller);
            loop {
                match self.replies.remove(&label) {
                    Some(Outcome::Done(reply)) => return Ok(reply),
                    Some(Outcome::Refused { code, text }) => {
                        return Err(Error::Refused { code, text })
                    }
                    Some(Outcome::Lost) => break,
                    None => {}
                }
                if Instant::now() >= deadline {
                    self.awaiting.remove(&label);
                    return Err(timed_out(&format!("the reply to {command:?}")));
                }
                self.pump(deadline)?;
            }
        }
    }

    /// Ends the session: `QUIT`, then the connection is closed.
    pub fn quit(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.write_line("QUIT");
            let deadline = Instant::now() + Duration::from_secs(1);
            // Reads until the BYE so the QUIT is not turned into a reset; at most a second.
            for _ in 0..10_000 {
                match conn.read_line(deadline) {
                    ReadOutcome::Line(line) if !line.starts_with("BYE") => continue,
                    _ => break,
                }
            }
        }
    }

    fn wait_logged_in(&mut self, deadline: Instant) -> Result<(), Error> {
        while !self.logged_in {
            if Instant::now() >= deadline {
                return Err(timed_out("login"));
            }
            self.pump(deadline)?;
        }
        Ok(())
    }

    /// Does one step of work, waiting at most until `deadline`: reads and handles one line,
    /// resends what a rate limit deferred, or (re)connects when the backoff allows.
    pub fn pump(&mut self, deadline: Instant) -> Result<(), Error> {
        if let Some(ended) = &self.ended {
            return Err(ended.clone());
        }
        self.resend_deferred();
        let now = Instant::now();
        if self.conn.is_none() {
            if now < self.reconnect_at {
                std::thread::sleep(
                    self.reconnect_at
                        .min(deadline)
                        .saturating_duration_since(now),
                );
            } else {
                self.open();
            }
            return Ok(());
        }
        let wake = self
            .delayed
            .iter()
            .map(|(at, _)| *at)
            .fold(deadline, Instant::min);
        let outcome = match &mut self.conn {
            Some(conn) => conn.read_line(wake),
            None => return Ok(()),
        };
        match outcome {
            ReadOutcome::Line(line) => self.handle_line(&line),
            ReadOutcome::TimedOut => {}
            ReadOutcome::Closed => self.connection_lost("connection-lost", None),
        }
        Ok(())
    }

    /// Connects, checks the greeting, and sends INFO and LOGIN; their replies are handled as
    /// they come like every other line.
    fn open(&mut self) {
        let timeout = self.config.connect_timeout;
        let mut conn = match Connection::open(&self.config.server, timeout) {
            Ok(conn) => conn,
            Err(_) => return self.schedule_reconnect(None),
        };
        match conn.read_line(Instant::now() + timeout) {
            ReadOutcome::Line(line) if line.starts_with("HELLO") => {}
            // ERR server-full, ERR too-many-connections, a timeout: try again later.
            _ => return self.schedule_reconnect(None),
        }
        self.conn = Some(conn);
        self.pacer.reset();
        // Hold every room's lines from OK LOGIN on: live lines come before the replay.
        for room in self.rooms.values_mut() {
            room.begin_sync();
        }
        self.issue("", "INFO", Purpose::Info);
        let mut login = format!("LOGIN {}", self.config.user);
        if let Some(device) = &self.config.device {
            login.push_str(&format!(" device={device}"));
        }
        if let Some(password) = &self.config.password {
            login.push_str(&format!(" password={password}"));
        }
        self.issue("", &login, Purpose::Login);
    }

    fn schedule_reconnect(&mut self, pause: Option<Duration>) {
        let wait = pause.unwrap_or_else(|| {
            // Up to a quarter less, so clients dropped together do not come back together.
            let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 1024.0;
            self.backoff.mul_f64(1.0 - jitter)
        });
        self.reconnect_at = Instant::now() + wait;
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
    }

    fn connection_lost(&mut self, reason: &str, pause: Option<Duration>) {
        self.conn = None;
        self.logged_in = false;
        for (label, awaiting) in self.awaiting.drain() {
            if awaiting.purpose == Purpose::Caller {
                self.replies.insert(label, Outcome::Lost);
            }
        }
        self.delayed.clear();
        self.events.push_back(Event::Disconnected {
            reason: reason.to_owned(),
        });
        self.schedule_reconnect(pause);
    }

    /// Sends `@<label><tags> <command>` and remembers who waits for the reply.
    fn issue(&mut self, tags: &str, command: &str, purpose: Purpose) -> String {
        self.next_label += 1;
        let label = format!("c{}", self.next_label);
        let line = format!("@{label}{tags} {command}");
        self.awaiting.insert(
            label.clone(),
            Awaiting {
                line: line.clone(),
                purpose,
                lines: Vec::new(),
            },
        );
        self.write(&line);
        label
    }

    fn issue_send(&mut self, send: &PendingSend) {
        let command = match &send.target {
            Target::Room(room) => format!("SEND {room} {}", send.body),
            Target::User(user) => format!("DM {user} {}", send.body),
        };
        let tags = format!(";cid={}", send.cid);
        self.issue(&tags, &command, Purpose::Send(send.cid.clone()));
    }

    fn write(&mut self, line: &str) {
        let wait = self.pacer.take();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let failed = match &mut self.conn {
            Some(conn) => conn.write_line(line).is_err(),
            None => false,
        };
        if failed {
            self.connection_lost("connection-lost", None);
        }
    }

    fn resend_deferred(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, label) in due {
            if let Some(line) = self.awaiting.get(&label).map(|a| a.line.clone()) {
                self.write(&line);
            }
        }
    }

    fn handle_line(&mut self, raw: &str) {
        let line = ServerLine::parse(raw);
        if let Some(label) = &line.label {
            if self.awaiting.contains_key(label) {
                let body = raw.split_once(' ').map_or("", |(_, rest)| rest);
                return self.on_reply(label.clone(), line.kind, body);
            }
        }
        match line.kind {
            Kind::Msg(msg) => self.on_message(msg, false),
            Kind::Joined { room, user } => self.events.push_back(Event::Joined { room, user }),
            Kind::Left { room, user } => self.events.push_back(Event::Left { room, user }),
            Kind::Presence(p) => self.events.push_back(Event::Presence(p)),
            Kind::Invited { room, by } => self.events.push_back(Event::Invited { room, by }),
            Kind::Kicked { room, by } => {
                self.forget(&room);
                self.events.push_back(Event::Kicked { room, by });
            }
            Kind::Typing { room, user, typing } => {
                self.events.push_back(Event::Typing { room, user, typing })
            }
            Kind::Read { room, user, seq } => {
                self.events.push_back(Event::Read { room, user, seq })
            }
            Kind::Device { user, device, key } => {
                self.device_lists.remove(&user);
                self.events
                    .push_back(Event::DeviceChanged { user, device, key });
            }
            Kind::Bye {
                reason,
                details: _,
                text,
            } => self.on_bye(&reason, &text),
            Kind::Err { code, text } => self.events.push_back(Event::Refused {
                what: String::new(),
                code,
                text,
            }),
            Kind::Hello | Kind::Ok { .. } | Kind::Gap { .. } | Kind::Epoch { .. } => {}
            Kind::Other(_) => {}
        }
    }

    fn on_reply(&mut self, label: String, kind: Kind, body: &str) {
        let purpose = self.awaiting[&label].purpose.clone();
        match (kind, &purpose) {
            (Kind::Msg(msg), Purpose::Sync(room)) if *room == msg.room => {
                self.on_message(msg, true)
            }
            (Kind::Gap { room, from, to }, Purpose::Sync(_)) => {
                if let Some(order) = self.rooms.get_mut(&room) {
                    order.on_gap(from, to);
                }
            }
            (Kind::Epoch { room, epoch }, Purpose::Sync(_)) => {
                if let Some(order) = self.rooms.get_mut(&room) {
                    let mut out = Vec::new();
                    order.on_epoch(&room, &epoch, &mut out);
                    self.events.extend(out);
                }
            }
            (Kind::Ok { verb, fields }, _) => {
                let awaiting = self.awaiting.remove(&label).expect("checked by the caller");
                self.on_ok(label, awaiting, &verb, fields);
            }
            (Kind::Err { code, text }, _) => {
                if code == "rate-limited" {
                    let wait = retry_in(&text);
                    self.delayed.push((Instant::now() + wait, label));
                    return;
                }
                let awaiting = self.awaiting.remove(&label).expect("checked by the caller");
                self.on_err(label, awaiting, code, text);
            }
            (Kind::Bye { reason, text, .. }, _) => self.on_bye(&reason, &text),
            (_, _) => {
                if let Some(awaiting) = self.awaiting.get_mut(&label) {
                    awaiting.lines.push(body.to_owned());
                }
            }
        }
    }

    fn on_ok(&mut self, label: String, awaiting: Awaiting, verb: &str, fields: Vec<String>) {
        match awaiting.purpose {
            Purpose::Info => {
                self.pacer.configure(&fields);
                if let Some(max) = field(&fields, "max-body").and_then(|v| v.parse().ok()) {
                    self.max_body = max;
                }
            }
            Purpose::Login => {
                self.logged_in = true;
                self.device_lists.clear();
                self.backoff = self.config.initial_backoff;
                if self.ever_logged_in {
                    self.events.push_back(Event::Reconnected);
                }
                self.ever_logged_in = true;
                self.issue("", "ROOMS", Purpose::Rooms);
            }
            Purpose::Rooms => self.resume_rooms(&awaiting.lines),
            Purpose::Rejoin(_) => {
                if let Some(joined) = parse_join(&fields) {
                    self.on_joined(joined, true);
                }
            }
            Purpose::Sync(room) => self.on_sync_page(&room, &fields),
            Purpose::Send(cid) => self.on_sent(cid, verb, &fields),
            Purpose::Caller => {
                match verb {
                    "JOIN" => {
                        if let Some(joined) = parse_join(&fields) {
                            self.on_joined(joined, false);
                        }
                    }
                    "LEAVE" => {
                        if let Some(room) = fields.first().cloned() {
                            self.forget(&room);
                        }
                    }
                    _ => {}
                }
                let reply = Reply {
                    fields,
                    lines: awaiting.lines,
                };
                self.replies.insert(label, Outcome::Done(reply));
            }
        }
    }

    fn on_err(&mut self, label: String, awaiting: Awaiting, code: String, text: String) {
        let what = awaiting
            .line
            .split_once(' ')
            .map_or(String::new(), |(_, command)| command.to_owned());
        match awaiting.purpose {
            Purpose::Info => {}
            Purpose::Login => {
                self.ended = Some(Error::LoginRefused { code, text });
                self.conn = None;
            }
            Purpose::Rejoin(room) | Purpose::Sync(room) => {
                // The room cannot be read any more (left elsewhere, kicked, gone): hand on
                // what was held and forget it.
                if let Some(order) = self.rooms.get_mut(&room) {
                    let mut out = Vec::new();
                    order.abandon_sync(&room, &mut out);
                    self.events.extend(out);
                }
                self.forget(&room);
                self.events.push_back(Event::Refused { what, code, text });
            }
            Purpose::Send(cid) => {
                // Nothing was posted and the cid is free again (protocol.md): drop the send.
                self.pending.retain(|p| p.cid != cid);
                let refused = Error::Refused {
                    code: code.clone(),
                    text: text.clone(),
                };
                if self.waiting_sends.remove(&cid) {
                    self.send_outcomes.insert(cid, Err(refused));
                } else {
                    self.events.push_back(Event::Refused { what, code, text });
                }
            }
            Purpose::Rooms => self.events.push_back(Event::Refused { what, code, text }),
            Purpose::Caller => {
                self.replies.insert(label, Outcome::Refused { code, text });
            }
        }
    }

    fn on_bye(&mut self, reason: &str, text: &str) {
        let pause = match reason {
            "replaced" => match self.config.replaced_pause {
                Some(pause) => Some(pause),
                None => return self.end(reason, text),
            },
            // A person must act (type a password) or asked to stop.
            "registered" | "password-changed" | "quit" => return self.end(reason, text),
            "flooding" => Some(self.config.flooding_pause),
            // Our own cursors are exact: every line before the BYE has been read, so the
            // BYE's cursors can add nothing. Resume at once.
            "slow-consumer" => Some(Duration::ZERO),
            _ => None,
        };
        self.connection_lost(reason, pause);
    }

    fn end(&mut self, reason: &str, text: &str) {
        self.connection_lost(reason, None);
        self.ended = Some(Error::Ended {
            reason: reason.to_owned(),
            text: text.to_owned(),
        });
    }

    /// `ROOMS` at the start of a resume: SYNC the rooms we know, JOIN again those missing,
    /// adopt rooms we did not know, then retry the unacknowledged sends.
    fn resume_rooms(&mut self, lines: &[String]) {
        let mut listed = BTreeMap::new();
        for line in lines {
            let mut words = line.split(' ');
            if words.next() != Some("ROOM") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let rest: Vec<String> = words.map(str::to_owned).collect();
            let seq = field(&rest, "seq").and_then(|s| s.parse::<u64>().ok());
            if let (Some(seq), Some(epoch)) = (seq, field(&rest, "epoch")) {
                listed.insert(name.to_owned(), (epoch.to_owned(), seq));
            }
        }
        let known: Vec<String> = self.rooms.keys().cloned().collect();
        for room in &known {
            match listed.get(room) {
                Some((epoch, _)) => {
                    if let Some(order) = self.rooms.get_mut(room) {
                        if order.epoch.is_empty() {
                            order.epoch = epoch.clone();
                        }
                    }
                    self.start_sync(room);
                }
                None => {
                    self.issue("", &format!("JOIN {room}"), Purpose::Rejoin(room.clone()));
                }
            }
        }
        for (room, (epoch, seq)) in listed {
            if self.rooms.contains_key(&room) {
                continue;
            }
            // A direct room we did not know was started while we were away: read all of it.
            // Any other room was joined elsewhere: follow it from now.
            let from = if room.starts_with("dm:") { 0 } else { seq };
            self.rooms
                .insert(room.clone(), RoomOrder::new(&epoch, from));
            self.delivered.insert(room.clone(), (epoch, from));
            if from < seq {
                self.start_sync(&room);
            }
        }
        for send in self.pending.clone() {
            self.issue_send(&send);
        }
    }

    fn start_sync(&mut self, room: &str) {
        let Some(order) = self.rooms.get_mut(room) else {
            return;
        };
        let after = order.begin_sync();
        let epoch = if order.epoch.is_empty() {
            String::new()
        } else {
            format!(" epoch={}", order.epoch)
        };
        self.issue(
            "",
            &format!("SYNC {room} {after}{epoch}"),
            Purpose::Sync(room.to_owned()),
        );
    }

    fn on_sync_page(&mut self, room: &str, fields: &[String]) {
        let more = fields.last().is_some_and(|f| f == "more");
        let Some(order) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(epoch) = field(fields, "epoch") {
            if order.epoch.is_empty() {
                order.epoch = epoch.to_owned();
            }
        }
        let mut out = Vec::new();
        let next = order.sync_page_done(more, room, &mut out);
        self.events.extend(out);
        if let Some(after) = next {
            let epoch = self.rooms[room].epoch.clone();
            self.issue(
                "",
                &format!("SYNC {room} {after} epoch={epoch}"),
                Purpose::Sync(room.to_owned()),
            );
        }
    }

    /// `OK JOIN`: a new room starts at the seq given; a known one is SYNCed from its cursor
    /// (during a resume always; otherwise if the room moved on or changed epoch meanwhile).
    fn on_joined(&mut self, joined: Joined, resuming: bool) {
        match self.rooms.get(&joined.room) {
            None => {
                let room = joined.room.clone();
                self.rooms
                    .insert(room.clone(), RoomOrder::new(&joined.epoch, joined.seq));
                self.delivered.insert(room, (joined.epoch, joined.seq));
            }
            Some(order) => {
                let moved = order.epoch != joined.epoch || joined.seq > order.seq;
                if resuming || (moved && !order.syncing) {
                    self.start_sync(&joined.room);
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message, replayed: bool) {
        let room = msg.room.clone();
        if !self.rooms.contains_key(&room) {
            // A room we did not know (a new direct room, a JOIN on another device): it starts
            // with this message.
            let before = msg.seq.saturating_sub(1);
            self.rooms.insert(room.clone(), RoomOrder::new("", before));
            self.delivered.insert(room.clone(), (String::new(), before));
        }
        let mut out = Vec::new();
        let order = self.rooms.get_mut(&room).expect("inserted above");
        let hole = order.on_message(msg, replayed, &mut out);
        self.events.extend(out);
        if hole && self.logged_in {
            self.start_sync(&room);
        }
    }

    fn on_sent(&mut self, cid: String, verb: &str, fields: &[String]) {
        // OK SEND <room> <seq> <id> | OK DM <user> <room> <seq> <id>
        let at = usize::from(verb == "DM");
        let parsed = (fields.get(at), fields.get(at + 1), fields.get(at + 2));
        let (Some(room), Some(seq), Some(id)) = parsed else {
            return;
        };
        let Some(position) = self.pending.iter().position(|p| p.cid == cid) else {
            return; // a second OK for a send retried twice: already counted
        };
        self.pending.remove(position);
        let sent = Sent {
            cid: cid.clone(),
            room: room.clone(),
            seq: seq.parse().unwrap_or(0),
            id: id.clone(),
        };
        if self.waiting_sends.remove(&cid) {
            self.send_outcomes.insert(cid, Ok(sent));
        } else {
            self.events.push_back(Event::Sent(sent));
        }
    }

    fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
        self.delivered.remove(room);
    }

    /// Moves the persisted cursor as the application takes events.
    fn note_delivered(&mut self, event: &Event) {
        let (room, epoch, seq) = match event {
            Event::Message(msg) => (&msg.room, None, msg.seq),
            Event::Gap { room, to, .. } => (room, None, *to),
            Event::EpochReset { room, epoch } => (room, Some(epoch.clone()), 0),
            _ => return,
        };
        let known = self
            .rooms
            .get(room)
            .map(|r| r.epoch.clone())
            .unwrap_or_default();
        let cursor = self
            .delivered
            .entry(room.clone())
            .or_insert_with(|| (String::new(), 0));
        if let Some(epoch) = epoch {
            cursor.0 = epoch;
        } else if cursor.0.is_empty() {
            cursor.0 = known;
        }
        cursor.1 = seq;
    }

    pub(crate) fn queued_events(&mut self) -> &mut VecDeque<Event> {
        &mut self.events
    }
}

/// The blocking iterator of [`Client::events`].
pub struct Events<'a> {
    client: &'a mut Client,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Waits as long as it takes: an application's event loop has no deadline.
        loop {
            match self.client.next_event(Duration::from_secs(3600)) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn parse_join(fields: &[String]) -> Option<Joined> {
    Some(Joined {
        room: fields.first()?.clone(),
        seq: field(fields, "seq")?.parse().ok()?,
        epoch: field(fields, "epoch")?.to_owned(),
        members: field(fields, "members")?.parse().ok()?,
    })
}

/// `retry in <n>ms` from an `ERR rate-limited` text; a second if the text is not that.
fn retry_in(text: &str) -> Duration {
    text.strip_prefix("retry in ")
        .and_then(|rest| rest.strip_suffix("ms"))
        .and_then(|n| n.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis)
}

/// Names travel as one word; a space or line break would change the command.
pub(crate) fn check_word(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains([' ', '\n', '\r']) {
        return Err(Error::InvalidArgument(format!("{name:?} is not a name")));
    }
    Ok(())
}

fn timed_out(what: &str) -> Error {
    Error::Timeout {
        what: what.to_owned(),
    }
}

fn timeout_error(pending: usize) -> Error {
    timed_out(&format!("the OKs of {pending} pending sends"))
}

pub(crate) fn malformed(what: &str, fields: &[String]) -> Error {
    Error::Refused {
        code: "malformed-reply".into(),
        text: format!("{what} {}", fields.join(" ")),
    }
}
