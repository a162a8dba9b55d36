//! Sockets and threads: accepting connections, reading lines, writing lines.
//! The rest of the crate sees a connection only as a [`crate::delivery::Outbox`], and the
//! outbox sees it only as a [`crate::delivery::peer::Peer`].
//!
//! The seam for a new front door (WebSocket, IRC) is three traits: [`LineSource`] for the
//! reader thread (`reader::run`), [`FrameSink`] for the writer thread (`writer::run`), and
//! `Peer` for the outbox. TCP implements all three in `tcp`; another transport implements
//! them in a file of its own and reuses the reader, the writer, the limits and the outbox
//! unchanged.

use std::io;
use std::time::Duration;

pub mod capacity;
pub mod limits;
pub mod line_reader;
pub mod listener;
pub mod reader;
pub mod stack;
pub mod tcp;
pub mod writer;

pub use line_reader::ReadLine;

/// Where the reader thread gets the client's lines.
pub trait LineSource {
    /// Blocks until a line is complete, the input ends, or the read timeout passes. Returns
    /// after every read that leaves a line unfinished ([`ReadLine::Incomplete`]), so the
    /// caller can enforce its deadlines; a line in progress survives an error.
    fn next_line(&mut self) -> io::Result<ReadLine<'_>>;

    /// Bounds the next `next_line` calls: past `timeout` they fail with `WouldBlock` or
    /// `TimedOut`. `None` waits for as long as it takes.
    fn set_read_timeout(&mut self, timeout: Option<Duration>);
}

/// Where the writer thread puts the connection's outgoing lines.
pub trait FrameSink {
    /// Writes one batch of whole, `\n`-terminated lines. Blocks while the client is not
    /// reading, but not past the transport's write timeout; an error ends the connection.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()>;

    /// Bytes written but not yet sent to (or acknowledged by) the client, if the transport
    /// can tell; 0 if it cannot. The writer drops a connection whose count stops going down
    /// (a client that stopped reading, whose kernel buffer swallowed the writes).
    fn unsent(&self) -> usize {
        0
    }

    /// Ends the connection: writes `farewell` (the last line), if any, then closes in the
    /// way that gives the client the best chance to read it. `client_done` says the client
    /// asked to leave (QUIT) and sends nothing more, so the close need not wait for its input.
    fn close(self, farewell: Option<&[u8]>, client_done: bool);
}
