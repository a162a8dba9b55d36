//! chatd lines over plain TCP: the socket as the outbox's [`Peer`], as the reader's
//! [`LineSource`] and as the writer's [`FrameSink`]. The three share one file descriptor.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};

use super::line_reader::{LineReader, ReadLine};
use super::{FrameSink, LineSource};
use crate::delivery::peer::Peer;
use crate::stats::Transport;

/// Keepalive probes sent before a silent peer is declared dead.
const KEEPALIVE_PROBES: u32 = 3;

/// Readies an accepted socket and splits it into the three roles.
pub fn split(
    stream: TcpStream,
    max_line: usize,
    write_timeout: Duration,
    dead_peer: Duration,
) -> (Arc<TcpStream>, TcpLines, TcpSink) {
    configure_socket(&stream, write_timeout, dead_peer);
    let socket = Arc::new(stream);
    let lines = TcpLines {
        lines: LineReader::new(SharedSocket(Arc::clone(&socket)), max_line),
    };
    let sink = TcpSink {
        socket: Arc::clone(&socket),
    };
    (socket, lines, sink)
}

/// Liveness without application pings: TCP keepalive finds a peer that vanished (cable
/// pulled, laptop asleep) within `dead_peer`, half of it idle and half probing, even if the
/// server has nothing to send; a person idling in `nc` is never dropped because their
/// kernel answers the probes. TCP_USER_TIMEOUT bounds how long sent data may stay
/// unacknowledged, and the write timeout bounds a write blocked on a peer that stopped
/// reading.
pub(crate) fn configure_socket(stream: &TcpStream, write_timeout: Duration, dead_peer: Duration) {
    // Chat lines are small and latency matters more than packet count; the writer batches.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(write_timeout));
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(dead_peer / 2)
        .with_interval(dead_peer / 2 / KEEPALIVE_PROBES)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(dead_peer));
}

impl Peer for TcpStream {
    fn shutdown_read(&self) {
        let _ = self.shutdown(Shutdown::Read);
    }

    fn abort(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|addr| addr.ip())
    }
}

/// A session's TCP socket as its outbox's [`Peer`], naming its front door for the session
/// metrics. `direct`: the connection's bytes are its lines as they are (the chatd line
/// protocol, IRC), so publishers may write lines straight into it (`delivery::write_through`),
/// encoded by the connection's own encoder; a WebSocket frames its lines, so it may not.
pub struct SessionSocket {
    pub socket: Arc<TcpStream>,
    pub transport: Transport,
    pub direct: bool,
}

impl Peer for SessionSocket {
    fn shutdown_read(&self) {
        self.socket.shutdown_read();
    }

    fn abort(&self) {
        self.socket.abort();
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.socket.peer_ip()
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn write_through(&self) -> bool {
        self.direct
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        // MSG_DONTWAIT: this one call never blocks, whatever the socket's mode (the writer
        // thread's writes on the same socket still block). MSG_NOSIGNAL: a peer that is gone
        // is an error here, not a SIGPIPE.
        // SAFETY: `send` reads at most `bytes.len()` bytes from `bytes`.
        let sent = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&*self.socket),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

/// The socket, read through the `Arc` the three roles share (`&TcpStream` is `Read`).
pub struct SharedSocket(pub(crate) Arc<TcpStream>);

impl Read for SharedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// The reader's side: lines split out of the byte stream.
pub struct TcpLines {
    lines: LineReader<SharedSocket>,
}

impl LineSource for TcpLines {
    fn next_line(&mut self) -> io::Result<ReadLine<'_>> {
        self.lines.next_line()
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.lines.get_ref().0.set_read_timeout(timeout);
    }
}

/// The writer's side: batches go out as they are, one `write` each.
pub struct TcpSink {
    socket: Arc<TcpStream>,
}

impl FrameSink for TcpSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        // Blocks while the peer's receive window is full, at most the socket's write timeout.
        (&*self.socket).write_all(batch)
    }

    fn unsent(&self) -> usize {
        unsent(&self.socket)
    }

    fn close(self, farewell: Option<&[u8]>, client_done: bool) {
        if let Some(farewell) = farewell {
            let _ = (&*self.socket).write_all(farewell);
            linger(&self.socket, client_done);
        } else {
            // No farewell to wait for, but input left unread would still turn the close into
            // a reset, which destroys whatever the client has not read yet.
            discard_input(&self.socket);
        }
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The bytes in the socket's send queue that the peer has not acknowledged; 0 if unknown.
pub(crate) fn unsent(socket: &TcpStream) -> usize {
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for a TCP socket) writes one int: the bytes in the
    // socket's send queue that the peer has not acknowledged.
    let status = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::TIOCOUTQ,
            &mut unsent,
        )
    };
    if status == 0 {
        unsent.max(0) as usize
    } else {
        0
    }
}

/// How long a closing connection waits for the client to read its farewell and hang up.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// How often the lingering writer looks again.
pub(crate) const LINGER_STEP: Duration = Duration::from_millis(10);

/// A lingering close. Closing a socket while input sits unread in its receive queue makes
/// the kernel answer with a reset, and a reset can destroy the farewell before the client
/// reads it (a client that was still sending commands when it was cut off, say). So for at
/// most [`LINGER`] the writer discards whatever input arrives, until the client hangs up.
/// (`Outbox::close` shut the read side, so these reads never block: they return what is
/// queued, then 0.)
///
/// Only after QUIT does it half-close first, so the client sees EOF at once: the client asked
/// to leave and sends nothing more. Otherwise the client may still be sending, and data that
/// arrives after our FIN on a socket whose read side is shut is answered with a reset
/// (RFC 1122), so the FIN waits for the final close.
fn linger(socket: &TcpStream, client_done: bool) {
    if client_done {
        let _ = socket.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + LINGER;
    loop {
        discard_input(socket);
        if peer_hung_up(socket) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(LINGER_STEP);
    }
}

/// Reads and drops what input has arrived. Only for a socket whose read side is shut (every
/// close shuts it first: `Outbox::close`), where a read returns what is queued, then 0, and
/// never blocks.
fn discard_input(socket: &TcpStream) {
    let mut scratch = [0u8; 4096];
    while matches!((&*socket).read(&mut scratch), Ok(n) if n > 0) {}
}

/// Whether the client has closed its side: the connection's TCP state says its FIN arrived.
pub(crate) fn peer_hung_up(socket: &TcpStream) -> bool {
    // SAFETY: getsockopt(TCP_INFO) writes at most `len` bytes into `info`, a plain C struct.
    let state = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        let info_ptr = (&mut info as *mut libc::tcp_info).cast::<libc::c_void>();
        if libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info_ptr, &mut len) != 0 {
            return true; // cannot tell: do not hold the connection open
        }
        info.tcpi_state
    };
    // ESTABLISHED (or, after our FIN, FIN_WAIT1/2) until the client's FIN arrives; then
    // CLOSE_WAIT (or CLOSING/TIME_WAIT); CLOSE if it reset.
    !matches!(state, TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2)
}

/// TCP states from the kernel's `tcp_states.h` (the numbering of `tcp_info.tcpi_state`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
