//! What the delivery endpoint may do to the connection under it, whatever carries it.

use std::io;
use std::net::IpAddr;

use crate::stats::Transport;

/// The connection below an [`super::Outbox`]: a TCP socket today (`transport::tcp`), a
/// WebSocket or anything else that carries lines tomorrow. Other threads hold the outbox, so
/// every method takes `&self` and must be safe to call while the connection's reader and
/// writer threads are blocked in I/O on it.
pub trait Peer: Send + Sync {
    /// Makes the reader thread's blocking read return (end of input), so it logs the session
    /// out at once. Writing is not affected: the writer still sends the farewell.
    fn shutdown_read(&self);

    /// Shuts the connection both ways: a write blocked on it fails at once.
    fn abort(&self);

    /// The client's address, for per-address limits and logs.
    fn peer_ip(&self) -> Option<IpAddr>;

    /// Which front door this is, for the `transport` label of the session metrics. A
    /// transport whose peer is not a bare TCP socket overrides it.
    fn transport(&self) -> Transport {
        Transport::Tcp
    }

    /// Whether publishers may write lines straight into this connection
    /// (`delivery::write_through`): [`Peer::try_write`] works, and the connection's bytes are
    /// its encoder's text as it is (no framing around it). `false` (the default) keeps every
    /// line on the queue and the writer thread.
    fn write_through(&self) -> bool {
        false
    }

    /// Writes what the connection takes of `bytes` at once, without ever blocking: the bytes
    /// written, possibly fewer than given, or `WouldBlock` when it takes none. Called by a
    /// publishing thread holding the session's write lock, so never at the same time as the
    /// writer thread's writes. Only used if [`Peer::write_through`] says so.
    fn try_write(&self, _bytes: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
