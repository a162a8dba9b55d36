//! One TCP connection to chatd, read and written a line at a time with deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What one bounded read produced.
pub(crate) enum ReadOutcome {
    Line(String),
    TimedOut,
    /// EOF, a reset, or any other failure: the connection is over.
    Closed,
}

pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes received but not yet returned as a line.
    unread: Vec<u8>,
}

/// Writes that do not complete in this long mean the server stopped reading us.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// Connects to the first address of `server` that answers within `timeout`.
    pub fn open(server: &str, timeout: Duration) -> Result<Connection, String> {
        let addrs = server
            .to_socket_addrs()
            .map_err(|e| format!("resolve {server}: {e}"))?;
        let mut last = format!("{server} resolved to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    // Commands are single small lines: send each at once.
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    return Ok(Connection {
                        stream,
                        unread: Vec::new(),
                    });
                }
                Err(e) => last = format!("connect {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// Writes one line (`\n` appended) in one write, as protocol.md's line timeout wants.
    pub fn write_line(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// The next line, waiting until `deadline` at most.
    pub fn read_line(&mut self, deadline: Instant) -> ReadOutcome {
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: each pass either returns or reads at least one byte before the deadline.
        loop {
            if let Some(end) = self.unread.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.unread.drain(..=end).collect();
                let line = String::from_utf8_lossy(&raw[..end]);
                return ReadOutcome::Line(line.trim_end_matches('\r').to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ReadOutcome::TimedOut;
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return ReadOutcome::Closed;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => self.unread.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
