//! The accept loop and the life of a connection's two threads.
//!
//! One `chatd-accept` thread blocks in `accept`. For each connection it checks the session
//! ceiling and the per-address cap *before* spawning anything, so a refused connection costs
//! one `write` and one `close`, and then starts a writer thread and a reader thread. A thread
//! that cannot be spawned is a refused connection, never a crash.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lock_rank::{Rank, RankedCondvar, RankedMutex};
use socket2::{Domain, Protocol, Socket, Type};

use super::capacity;
use super::limits::{AddressSlot, AddressTable};
use super::writer::ChatdEncoder;
use super::{reader, tcp, writer, FrameSink, LineSource};
use crate::config::Config;
use crate::delivery::outbox::{CloseReason, Outbox};
use crate::delivery::peer::Peer;
use crate::delivery::Queue;
use crate::logging::OrDash;
use crate::protocol::Wire;
use crate::server::ChatServer;
use crate::stats::{Stats, Transport};

/// Stack sizes. Only touched pages cost memory, but every thread's stack is also address
/// space and a mapping; these are generous for what each thread does (the reader parses a
/// line and formats replies on the heap; the writer copies bytes) and leave room for a panic
/// to unwind and print.
pub const READER_STACK: usize = 256 * 1024;
pub const WRITER_STACK: usize = 128 * 1024;

/// How long shutdown waits for connections to say goodbye, and then, after shutting the
/// sockets of the ones that did not, for their threads to end. Together under the 2 s a
/// stopping server promises.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);
const SHUTDOWN_FORCE_GRACE: Duration = Duration::from_millis(500);

/// A running server. Dropping it shuts the server down.
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
    /// The HTTP listener (web client and WebSocket), if `Config::http_listen` asked for one.
    http: Option<(SocketAddr, JoinHandle<()>)>,
    /// The IRC listener (`--irc-listen`), if there is one: its address and accept thread.
    irc: Option<(SocketAddr, JoinHandle<()>)>,
}

/// Which protocol a connection speaks. Every kind is a session of one `ChatServer`, admitted
/// by the same checks and counted in the same capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// chatd's line protocol (protocol.md), over TCP or WebSocket.
    Chatd,
    /// IRC (docs/irc.md).
    Irc,
}

/// What the accept loops and every connection guard share.
pub(crate) struct Shared {
    server: Arc<ChatServer>,
    capacity: usize,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Leaf lock: live connections by id, so shutdown can close each one. Shutdown copies
    /// the outboxes out before closing them.
    connections: RankedMutex<HashMap<u64, Arc<Outbox>>>,
    /// Leaf lock: the number of connections whose threads are still running; `all_gone`
    /// is signalled when it reaches zero.
    live: RankedMutex<usize>,
    /// Open connections per client address, for `--max-per-ip` (its lock is a leaf lock).
    addresses: Arc<AddressTable>,
    all_gone: RankedCondvar,
    /// Leaf lock: HTTP connections still reading their request (see `crate::http`), by id,
    /// so that they count toward the capacity and shutdown can cut them short.
    pub(crate) handshakes: RankedMutex<HashMap<u64, Arc<TcpStream>>>,
}

/// Binds and starts serving. Port 0 picks a free port; see [`ServerHandle::local_addr`].
pub fn start(config: Config) -> io::Result<ServerHandle> {
    if let Some(limit) = &config.rate_limit {
        // Checked here, once, rather than failing in every connection's reader thread.
        if limit.burst == 0 || !(limit.per_second > 0.0 && limit.per_second.is_finite()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a rate limit needs a burst of at least 1 and a positive rate: {limit:?}"),
            ));
        }
    }
    let listener = bind(config.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("listening on {}: {e}", config.listen)))?;
    let local_addr = listener.local_addr()?;
    let irc_listener =
        match config.irc_listen {
            Some(addr) => Some(bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("listening for IRC on {addr}: {e}"))
            })?),
            None => None,
        };
    let computed = capacity::compute();
    let capacity = match config.max_sessions {
        Some(n) if n < computed.sessions => n,
        Some(n) => {
            log::warn!(
                requested = n, using = computed.sessions;
                "--max-sessions is above what this machine can hold"
            );
            computed.sessions
        }
        None => computed.sessions,
    };
    log::info!(
        sessions = capacity, ceiling:% = computed.explanation;
        "capacity"
    );
    let addresses = AddressTable::new(config.max_per_ip, config.per_ip_loopback);
    let shared = Arc::new(Shared {
        server: ChatServer::open(config).map_err(io::Error::other)?,
        capacity,
        stopping: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        connections: RankedMutex::new(Rank::Leaf, HashMap::new()),
        live: RankedMutex::new(Rank::Leaf, 0),
        addresses,
        all_gone: RankedCondvar::new(),
        handshakes: RankedMutex::new(Rank::Leaf, HashMap::new()),
    });
    let http = match shared.server.config.http_listen {
        Some(addr) => {
            let listener = bind(addr).map_err(|e| {
                let hint = "(--http-listen none turns the web client off)";
                io::Error::new(e.kind(), format!("HTTP listening on {addr}: {e} {hint}"))
            })?;
            let http_addr = listener.local_addr()?;
            let http_shared = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name("chatd-http".into())
                .spawn(move || crate::http::accept_loop(listener, http_shared))?;
            Some((http_addr, thread))
        }
        None => None,
    };
    let accept_shared = Arc::clone(&shared);
    let accept_thread = thread::Builder::new()
        .name("chatd-accept".into())
        .spawn(move || accept_loop(listener, accept_shared, Front::Chatd))?;
    let mut handle = ServerHandle {
        local_addr,
        shared,
        accept_thread: Some(accept_thread),
        http,
        irc: None,
    };
    if let Some(irc_listener) = irc_listener {
        let irc_addr = irc_listener.local_addr()?;
        let accept_shared = Arc::clone(&handle.shared);
        let irc_thread = thread::Builder::new()
            .name("chatd-accept-irc".into())
            .spawn(move || accept_loop(irc_listener, accept_shared, Front::Irc))?;
        handle.irc = Some((irc_addr, irc_thread));
    }
    Ok(handle)
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn server(&self) -> &Arc<ChatServer> {
        &self.shared.server
    }

    /// Where the HTTP listener (web client, WebSocket) listens, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// Where the IRC listener is, if `--irc-listen` started one.
    pub fn irc_addr(&self) -> Option<SocketAddr> {
        self.irc.as_ref().map(|(addr, _)| *addr)
    }

    /// The session ceiling in force.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Stops accepting, closes every connection with `BYE server-shutdown`, and waits (at most
    /// 1.5 s) for their threads to finish. Returns whether all of them did.
    ///
    /// What a client is guaranteed: if it reads during the polite grace (the first second),
    /// `BYE server-shutdown` is its last line. Lines queued for it are flushed first for
    /// `delivery::outbox::SHUTDOWN_FLUSH` and dropped after that, so a client that had fallen
    /// behind waits only for what its socket already holds. A client that does not read
    /// during the grace cannot be given the goodbye (its socket buffers are full): its
    /// connection is shut after the grace, and it reads what the kernel still delivers.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        let Some(accept_thread) = self.accept_thread.take() else {
            return true;
        };
        log::info!(step = "stop accepting"; "shutdown");
        self.shared.stopping.store(true, Ordering::SeqCst);
        // `accept` has no timeout; a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&wake_address(self.local_addr), Duration::from_secs(1));
        let _ = accept_thread.join();
        if let Some((http_addr, http_thread)) = self.http.take() {
            let _ = TcpStream::connect_timeout(&wake_address(http_addr), Duration::from_secs(1));
            let _ = http_thread.join();
        }
        if let Some((irc_addr, irc_thread)) = self.irc.take() {
            let _ = TcpStream::connect_timeout(&wake_address(irc_addr), Duration::from_secs(1));
            let _ = irc_thread.join();
        }
        // HTTP requests still arriving get no answer: their sockets are shut, which ends
        // their threads' reads at once.
        let handshakes: Vec<Arc<TcpStream>> =
            self.shared.handshakes.lock().values().cloned().collect();
        for stream in handshakes {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let outboxes: Vec<Arc<Outbox>> = self.shared.connections.lock().values().cloned().collect();
        log::info!(step = "close connections", connections = outboxes.len(); "shutdown");
        for outbox in &outboxes {
            outbox.close(CloseReason::ServerShutdown);
        }
        // Polite first: writers flush and say BYE. A writer blocked on a client that stopped
        // reading would wait out its write timeout, so after the polite grace the sockets
        // still open are shut outright, which fails the blocked write at once.
        let mut ended = self.wait_for_connections(Instant::now() + SHUTDOWN_GRACE);
        if !ended {
            let stalled: Vec<Arc<Outbox>> =
                self.shared.connections.lock().values().cloned().collect();
            log::warn!(step = "abort stalled connections", connections = stalled.len(); "shutdown");
            for outbox in stalled {
                outbox.abort();
            }
            ended = self.wait_for_connections(Instant::now() + SHUTDOWN_FORCE_GRACE);
        }
        // After the sessions, so that what their ends queued (presence, last seen) is sent.
        self.shared.server.stop_cluster() && ended
    }

    /// Waits until no connection threads are left, or `deadline`; says which came first.
    fn wait_for_connections(&self, deadline: Instant) -> bool {
        let mut live = self.shared.live.lock();
        while *live > 0 {
            if self
                .shared
                .all_gone
                .wait_until(&mut live, deadline)
                .timed_out()
            {
                return *live == 0;
            }
        }
        true
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connections the kernel may hold completed but not yet accepted. std's default (128) is
/// overrun by a burst of clients arriving while the accept thread is starting threads, and
/// each overflowed connect stalls for a full SYN retransmission (1 s). The kernel caps this
/// at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 4096;

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted server bind while the old one's connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The address to connect to in order to reach our own listener.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, front: Front) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => admit(stream, &shared, front),
            // Out of descriptors or memory for a moment: back off rather than spin on a
            // listener that will fail again immediately.
            Err(e) if is_resource_exhaustion(&e) => thread::sleep(Duration::from_millis(50)),
            Err(_) => {}
        }
    }
}

/// Decides at the door, with no thread spawned yet: over the session ceiling or over the
/// client address's share, the connection is refused; otherwise its threads start.
fn admit(stream: TcpStream, shared: &Arc<Shared>, front: Front) {
    let address_slot = match shared.admission(&stream) {
        Ok(slot) => slot,
        Err(Some(reason)) => return refuse(stream, shared, reason, front),
        Err(None) => return,
    };
    if let Err(stream) = start_connection(stream, address_slot, shared, front) {
        refuse(stream, shared, CloseReason::ServerFull, front);
    }
}

impl Shared {
    /// The checks every front door makes before it spawns anything: the session ceiling
    /// (HTTP connections still reading their request count too) and the client address's
    /// share. `Err(Some(reason))`: refuse with that reason (`ServerFull`,
    /// `TooManyConnections`); `Err(None)`: the peer is already gone.
    pub(crate) fn admission(
        &self,
        stream: &TcpStream,
    ) -> Result<Option<AddressSlot>, Option<CloseReason>> {
        let handshaking = self.handshakes.lock().len();
        if *self.live.lock() + handshaking >= self.capacity {
            return Err(Some(CloseReason::ServerFull));
        }
        match stream.peer_addr() {
            Ok(peer) if self.server.address_banned(peer.ip()) => {
                Err(Some(CloseReason::BannedAddress))
            }
            Ok(peer) => self
                .addresses
                .admit(peer.ip())
                .map_err(|_| Some(CloseReason::TooManyConnections)),
            // Already reset by the peer: nothing to serve.
            Err(_) => Err(None),
        }
    }

    pub(crate) fn server(&self) -> &Arc<ChatServer> {
        &self.server
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A number for a new connection, unique for the server's lifetime.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Turns a connection away without spawning anything: one non-blocking write, then close.
fn refuse(stream: TcpStream, shared: &Shared, reason: CloseReason, front: Front) {
    shared.server.stats.count_refusal(reason.name());
    let peer = stream.peer_addr().ok();
    log::info!(peer:% = OrDash(peer), reason = reason.name(); "refused");
    let _ = stream.set_nonblocking(true);
    if let Some(refusal) = reason.farewell(&[]) {
        let text = match front {
            Front::Chatd => Wire::Chatd.encode(&refusal, None),
            Front::Irc => crate::irc::encode::farewell(&refusal).into(),
        };
        let _ = (&stream).write_all(text.as_bytes());
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// Holds a connection's place: one per connection, shared by its two threads, released
/// when the last of them ends.
struct ConnectionGuard {
    id: u64,
    shared: Arc<Shared>,
    /// The connection's place in its address's count, given back with the guard.
    _address_slot: Option<AddressSlot>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections.lock().remove(&self.id);
        Stats::sub(&self.shared.server.stats.connections, 1);
        let mut live = self.shared.live.lock();
        *live -= 1;
        if *live == 0 {
            self.shared.all_gone.notify_all();
        }
    }
}

/// Starts the writer and reader threads of a new TCP connection. Gives the stream back if not
/// even the writer could start, so the caller can refuse it.
fn start_connection(
    stream: TcpStream,
    address_slot: Option<AddressSlot>,
    shared: &Arc<Shared>,
    front: Front,
) -> Result<(), TcpStream> {
    let config = &shared.server.config;
    let (socket, lines, sink) = tcp::split(
        stream,
        config.max_line,
        config.write_timeout,
        config.dead_peer_timeout,
    );
    let transport = match front {
        Front::Chatd => Transport::Tcp,
        Front::Irc => Transport::Irc,
    };
    let peer: Arc<dyn Peer> = Arc::new(tcp::SessionSocket {
        socket: Arc::clone(&socket),
        transport,
        direct: true,
    });
    let started = start_threads(peer, lines, sink, address_slot, shared, front);
    if started {
        return Ok(());
    }
    // The failed spawn dropped the lines and the sink, and the outbox is gone with the
    // connection's guard, which leaves us the only owner of the socket.
    match Arc::try_unwrap(socket) {
        Ok(stream) => Err(stream),
        Err(_) => Ok(()),
    }
}

/// Registers a connection of any transport and starts its writer and reader threads.
/// Returns false, with nothing left registered, if not even the writer could start.
pub(crate) fn start_threads(
    peer: Arc<dyn Peer>,
    lines: impl LineSource + Send + 'static,
    sink: impl FrameSink + Send + 'static,
    address_slot: Option<AddressSlot>,
    shared: &Arc<Shared>,
    front: Front,
) -> bool {
    start_session(peer, lines, sink, address_slot, shared, front).is_some()
}

/// [`start_threads`], giving back the connection's outbox (for a transport whose reader
/// must wake the writer: a WebSocket's pong).
pub(crate) fn start_session(
    peer: Arc<dyn Peer>,
    lines: impl LineSource + Send + 'static,
    sink: impl FrameSink + Send + 'static,
    address_slot: Option<AddressSlot>,
    shared: &Arc<Shared>,
    front: Front,
) -> Option<Arc<Outbox>> {
    let config = &shared.server.config;
    let id = shared.next_id();
    let (queue, queued) = Queue::new(config.channel_capacity);
    let write_timeout = config.write_timeout;
    let outbox = Arc::new(Outbox::new(
        id,
        queue,
        config.max_reply_bytes,
        peer,
        Arc::clone(&shared.server.stats),
    ));
    log::info!(conn = id, peer:% = OrDash(outbox.peer_ip()); "connect");
    shared.connections.lock().insert(id, Arc::clone(&outbox));
    *shared.live.lock() += 1;
    Stats::add(&shared.server.stats.connections, 1);
    let guard = Arc::new(ConnectionGuard {
        id,
        shared: Arc::clone(shared),
        _address_slot: address_slot,
    });

    // What the reader and writer of an IRC connection share: its nick and capabilities.
    let irc = (front == Front::Irc).then(|| Arc::new(crate::irc::Link::new(id)));
    let writer_guard = Arc::clone(&guard);
    let writer_outbox = Arc::clone(&outbox);
    let writer_irc = irc.clone();
    let spawned = thread::Builder::new()
        .name(format!("chatd-w{id}"))
        .stack_size(WRITER_STACK)
        .spawn(move || {
            let _guard = writer_guard;
            match writer_irc {
                None => writer::run(writer_outbox, queued, sink, write_timeout, ChatdEncoder),
                Some(link) => {
                    let encoder = crate::irc::encode::IrcEncoder::new(link);
                    writer::run(writer_outbox, queued, sink, write_timeout, encoder)
                }
            }
        });
    if spawned.is_err() {
        // The failed spawn dropped its closure; dropping the guard unregisters the outbox.
        drop(outbox);
        drop(guard);
        return None;
    }

    let server = Arc::clone(&shared.server);
    let reader_outbox = Arc::clone(&outbox);
    let spawned = thread::Builder::new()
        .name(format!("chatd-r{id}"))
        .stack_size(READER_STACK)
        .spawn(move || {
            let _guard = guard;
            match irc {
                None => reader::run(server, reader_outbox, lines),
                Some(link) => crate::irc::serve(server, reader_outbox, lines, link),
            }
        });
    if spawned.is_err() {
        // The writer is running: let it say why and close.
        Stats::add(&shared.server.stats.refused, 1);
        outbox.close(CloseReason::ServerFull);
    }
    Some(outbox)
}
