//! Reading one HTTP/1.1 request head (request line and headers) from a socket, within a size
//! and a time bound. chatd serves only `GET`s without bodies, so the head is all it reads.

use std::io::{self, ErrorKind, Read};
use std::time::Instant;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: an origin-form path with an optional query.
    pub target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Header names as sent, values trimmed, in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first header called `name` (compared ignoring case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether a comma-separated header (`Connection: keep-alive, Upgrade`) holds `token`,
    /// ignoring case, in any of its occurrences.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }
}

/// Why no request could be read. Each maps to the status the client is told, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The head did not end within the size limit: 431.
    TooLarge,
    /// The head did not arrive within the header timeout: 408.
    Timeout,
    /// Not an HTTP/1.x request head: 400.
    Malformed,
    /// An HTTP version other than 1.0 and 1.1: 505.
    Version,
    /// The client closed or reset the connection first: nothing to answer.
    Closed,
}

impl RequestError {
    pub fn status(self) -> Option<u16> {
        match self {
            RequestError::TooLarge => Some(431),
            RequestError::Timeout => Some(408),
            RequestError::Malformed => Some(400),
            RequestError::Version => Some(505),
            RequestError::Closed => None,
        }
    }
}

/// Something that reads with a deadline: a socket in the server, a script in tests.
pub trait TimedRead: Read {
    fn set_deadline(&mut self, deadline: Instant) -> io::Result<()>;
}

impl TimedRead for &std::net::TcpStream {
    fn set_deadline(&mut self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.set_read_timeout(Some(left))
    }
}

/// Reads a request head of at most `max_head` bytes that must be complete by `deadline`.
/// Returns it with the bytes that came after it (a WebSocket client may send its first frame
/// right behind the handshake). Every read is re-armed with the time left, so a client
/// trickling bytes does not extend the deadline.
pub fn read_head(
    mut input: impl TimedRead,
    max_head: usize,
    deadline: Instant,
) -> Result<(Request, Vec<u8>), RequestError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(&buffer) {
            let rest = buffer.split_off(end);
            return parse_head(&buffer).map(|request| (request, rest));
        }
        if buffer.len() >= max_head {
            return Err(RequestError::TooLarge);
        }
        if input.set_deadline(deadline).is_err() {
            return Err(RequestError::Timeout);
        }
        let room = (max_head - buffer.len()).min(chunk.len());
        match input.read(&mut chunk[..room]) {
            Ok(0) => return Err(RequestError::Closed),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(RequestError::Timeout)
            }
            Err(_) => return Err(RequestError::Closed),
        }
    }
}

/// Where the head ends: just past its blank line (`\r\n\r\n`, or a bare `\n\n`, which
/// RFC 9112 lets a server accept).
fn head_end(buffer: &[u8]) -> Option<usize> {
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed)?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(RequestError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(RequestError::Malformed);
    }
    // Only origin-form targets: chatd is not a proxy.
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed);
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ if version.starts_with("HTTP/") => return Err(RequestError::Version),
        _ => return Err(RequestError::Malformed),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        // No obsolete line folding, no space before the colon (RFC 9112 5.1, 5.2): both
        // are how requests get smuggled past a proxy that reads them differently.
        let (name, value) = line.split_once(':').ok_or(RequestError::Malformed)?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(RequestError::Malformed);
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(RequestError::Malformed);
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers,
    })
}

/// A `tchar` of RFC 9110: what a method or a header name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Reads from a byte slice; never times out.
    struct Bytes<'a>(&'a [u8]);

    impl Read for Bytes<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl TimedRead for Bytes<'_> {
        fn set_deadline(&mut self, _: Instant) -> io::Result<()> {
            Ok(())
        }
    }

    fn read(bytes: &[u8]) -> Result<(Request, Vec<u8>), RequestError> {
        read_head(Bytes(bytes), 1024, Instant::now() + Duration::from_secs(1))
    }

    #[test]
    fn reads_a_request_and_keeps_what_follows() {
        let (request, rest) = read(
            b"GET /ws?x=1 HTTP/1.1\r\nHost: a:1\r\nConnection: keep-alive, Upgrade\r\n\r\n\x81",
        )
        .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path(), "/ws");
        assert_eq!(request.header("host"), Some("a:1"));
        assert!(request.header_has_token("connection", "upgrade"));
        assert!(!request.header_has_token("connection", "close"));
        assert_eq!(rest, b"\x81");
    }

    #[test]
    fn refuses_what_is_not_a_plain_request_head() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"\xff / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(read(bad).unwrap_err(), RequestError::Malformed, "{bad:?}");
        }
        assert_eq!(
            read(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            RequestError::Version
        );
        assert_eq!(
            read(b"GET / HTTP/1.1\r\n").unwrap_err(),
            RequestError::Closed
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(read(big.as_bytes()).unwrap_err(), RequestError::TooLarge);
    }

    proptest::proptest! {
        /// Any bytes give a request or a typed error, never a panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = read(&bytes);
        }
    }
}
