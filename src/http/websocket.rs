//! WebSocket sessions (RFC 6455): the handshake, and the connection seam of
//! `transport` (a [`LineSource`], a [`FrameSink`] and the socket as `Peer`) over WebSocket
//! frames, so a WebSocket session runs the same `reader::run` and `writer::run`, with the
//! same bounded queue, limits and slow-consumer verdict, as a TCP one.
//!
//! The framing (protocol.md, "WebSocket"): each text message from the client carries one or
//! more protocol lines separated by `\n`, and its end ends its last line; each text message
//! from the server carries one or more whole lines, each ending with `\n`.
//!
//! One reader and one writer thread share the socket without a lock around it: the reader
//! turns frames into bytes of lines ([`FrameReader`] feeds the same `LineReader` as TCP) and
//! never writes; the writer is the only one to write frames. What the reader owes the client
//! (a pong, the close frame's code) it leaves in [`Control`] and wakes the writer, which
//! sends it before its next batch.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;

use super::request::Request;
use super::response::Response;
use crate::delivery::outbox::Outbox;
use crate::lock_rank::{Rank, RankedMutex};
use crate::stats::Transport;
use crate::transport::limits::AddressSlot;
use crate::transport::line_reader::LineReader;
use crate::transport::listener::{start_session, Front, Shared};
use crate::transport::tcp::SessionSocket;
use crate::transport::tcp::{self, SharedSocket};
use crate::transport::writer::MAX_BATCH;
use crate::transport::{FrameSink, LineSource, ReadLine};

/// The GUID of RFC 6455 section 1.3, hashed with the client's key into the accept key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocol a client may ask for; the server answers with it when asked.
pub const SUBPROTOCOL: &str = "chatd";

/// The most bytes one client message (all its frames) may carry. A message holds whole
/// lines, so this is many lines; more is not a chat client's doing. Raised to fit one line
/// when `--max-line` is larger.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Close codes (RFC 6455 section 7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Frame opcodes.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Checks the upgrade request and, if it is sound, answers `101` and starts the session's
/// reader and writer. Anything wrong gets its status and the connection is closed.
pub(crate) fn accept(
    stream: Arc<TcpStream>,
    request: &Request,
    after_head: Vec<u8>,
    slot: Option<AddressSlot>,
    shared: &Arc<Shared>,
) {
    let config = &shared.server().config;
    let key = match check_upgrade(request, &config.http_origins) {
        Ok(key) => key,
        Err(response) => return super::respond(&stream, &response, false),
    };
    if shared.is_stopping() {
        let response = Response::error(503, "the server is stopping");
        return super::respond(&stream, &response, false);
    }
    let asks_chatd = request.header_has_token("Sec-WebSocket-Protocol", SUBPROTOCOL);
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(&key)
    );
    if asks_chatd {
        head.push_str("Sec-WebSocket-Protocol: chatd\r\n");
    }
    head.push_str("\r\n");
    if (&*stream).write_all(head.as_bytes()).is_err() {
        return;
    }
    tcp::configure_socket(&stream, config.write_timeout, config.dead_peer_timeout);
    let control = Arc::new(Control::default());
    let max_message = MAX_MESSAGE.max(config.max_line + 2);
    let frames = FrameReader::new(
        SharedSocket(Arc::clone(&stream)),
        after_head,
        max_message,
        Arc::clone(&control),
    );
    let lines = WsLines {
        lines: LineReader::new(frames, config.max_line),
        socket: Arc::clone(&stream),
    };
    let sink = WsSink {
        socket: Arc::clone(&stream),
        control: Arc::clone(&control),
        out: Vec::new(),
    };
    let peer = Arc::new(SessionSocket {
        socket: Arc::clone(&stream),
        transport: Transport::WebSocket,
        direct: false,
    });
    match start_session(peer, lines, sink, slot, shared, Front::Chatd) {
        Some(outbox) => {
            let _ = control.outbox.set(outbox);
        }
        None => {
            // Not even the writer could start: say so in a close frame.
            let mut out = Vec::new();
            close_frame(&mut out, close_code::TRY_AGAIN_LATER);
            let _ = (&*stream).write_all(&out);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The client's key if the request is a sound WebSocket upgrade from an allowed origin;
/// otherwise the response that says what is wrong.
pub fn check_upgrade(request: &Request, allowed_origins: &[String]) -> Result<String, Response> {
    if !request.header_has_token("Upgrade", "websocket")
        || !request.header_has_token("Connection", "upgrade")
    {
        return Err(Response::error(
            426,
            "this address speaks WebSocket only (Upgrade: websocket)",
        )
        .with("Upgrade", "websocket"));
    }
    if request.minor_version < 1 {
        return Err(Response::error(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    let Some(host) = request.header("Host") else {
        return Err(Response::error(400, "the Host header is missing"));
    };
    if request.header("Sec-WebSocket-Version") != Some("13") {
        return Err(Response::error(426, "only WebSocket version 13 is spoken")
            .with("Sec-WebSocket-Version", "13"));
    }
    let key = request.header("Sec-WebSocket-Key").unwrap_or("");
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !matches!(decoded, Ok(bytes) if bytes.len() == 16) {
        return Err(Response::error(
            400,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    if !origin_allowed(request.header("Origin"), host, allowed_origins) {
        return Err(Response::error(
            403,
            "pages of this origin may not open chatd sessions (see --http-origin)",
        ));
    }
    Ok(key.to_owned())
}

/// Whether a page of `origin` may open a session. A browser always sends `Origin` with a
/// WebSocket upgrade, so a request without one is not a page (a script, a command-line
/// client) and cannot be another site driving a visitor's browser: it is let in, as it would
/// be over TCP. With no origins configured, only the page's own origin is: the one whose
/// host and port are the `Host` the request was sent to.
pub fn origin_allowed(origin: Option<&str>, host: &str, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
        return ["http://", "https://"].iter().any(|scheme| {
            origin.len() == scheme.len() + host.len()
                && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                && origin[scheme.len()..].eq_ignore_ascii_case(host)
        });
    }
    allowed
        .iter()
        .any(|one| one == "*" || one.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// `Sec-WebSocket-Accept`: base64 of the SHA-1 of the key and the GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// What the reader owes the client and leaves for the writer to send.
pub struct Control {
    /// Leaf lock: the payload of the pong owed for the latest ping (RFC 6455 lets an
    /// endpoint answer only the latest of several pings, which bounds this to 125 bytes).
    pong: RankedMutex<Option<Vec<u8>>>,
    /// Leaf lock: the code of the close frame to send: the client's, echoed, or why the
    /// reader gave up on the client's frames. `None`: a normal closure.
    close_code: RankedMutex<Option<u16>>,
    /// The client sent its close frame: it sends nothing more, so closing need not wait.
    client_closed: AtomicBool,
    /// The session's outbox, set once the session started; the reader wakes the writer
    /// through it.
    outbox: OnceLock<Arc<Outbox>>,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            pong: RankedMutex::new(Rank::Leaf, None),
            close_code: RankedMutex::new(Rank::Leaf, None),
            client_closed: AtomicBool::new(false),
            outbox: OnceLock::new(),
        }
    }
}

impl Control {
    fn owe_pong(&self, payload: Vec<u8>) {
        *self.pong.lock() = Some(payload);
        if let Some(outbox) = self.outbox.get() {
            outbox.wake_writer();
        }
    }

    /// Sets the close code unless one is set.
    fn close_with(&self, code: u16) {
        self.close_code.lock().get_or_insert(code);
    }
}

/// A frame header (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    /// Any of RSV1-3 set: no extension was agreed, so that is a protocol error.
    reserved: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes the header took.
    size: usize,
}

/// Parses a frame header from the start of `bytes`: `None` until all of it has arrived.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (len, mut size) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as u64,
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        short => (short as u64, 2),
    };
    let mask = if masked {
        let mask = bytes.get(size..size + 4)?.try_into().ok()?;
        size += 4;
        Some(mask)
    } else {
        None
    };
    Some(Header {
        fin: first & 0x80 != 0,
        reserved: first & 0x70 != 0,
        opcode: first & 0x0F,
        mask,
        len,
        size,
    })
}

/// Appends a server frame (unmasked, final) to `out`.
fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn close_frame(out: &mut Vec<u8>, code: u16) {
    frame(out, CLOSE, &code.to_be_bytes());
}

/// Read buffer for frame headers and the payload bytes that arrive with them.
const READ_CHUNK: usize = 4096;

/// Turns the client's frames into the bytes of its lines: the payload of text messages,
/// unmasked, each message followed by a `\n` (its end ends its last line). Payload bytes are
/// passed on as they arrive, not once a frame is whole, so a frame trickling in is a line
/// in progress to the reader, and the line timeout applies to it as it does over TCP.
///
/// Control frames are handled here: a ping leaves a pong owed, a close ends the input. A
/// frame that breaks the protocol (unmasked, reserved bits, a binary message, a message over
/// the limit, a broken fragment sequence) ends the input with an error, after leaving the
/// close code for the writer; the unfinished line is then never carried out.
pub struct FrameReader<R> {
    input: R,
    /// Bytes read and not yet used, from `start`.
    raw: Vec<u8>,
    start: usize,
    /// Payload bytes of the current data frame still to come, and its unmasking state.
    remaining: u64,
    mask: [u8; 4],
    mask_offset: usize,
    /// The current data frame is its message's last.
    fin: bool,
    /// A text message has begun and not ended.
    in_message: bool,
    message_len: u64,
    max_message: u64,
    /// The `\n` that ends a message is owed.
    newline_owed: bool,
    /// The input ended: a close frame, EOF or a protocol error (`failed`).
    ended: bool,
    failed: bool,
    control: Arc<Control>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(
        input: R,
        already_read: Vec<u8>,
        max_message: usize,
        control: Arc<Control>,
    ) -> FrameReader<R> {
        FrameReader {
            input,
            raw: already_read,
            start: 0,
            remaining: 0,
            mask: [0; 4],
            mask_offset: 0,
            fin: false,
            in_message: false,
            message_len: 0,
            max_message: max_message as u64,
            newline_owed: false,
            ended: false,
            failed: false,
            control,
        }
    }

    /// Gives up on the client's frames: the writer sends a close frame with `code`.
    fn fail(&mut self, code: u16, why: &str) -> io::Result<usize> {
        self.control.close_with(code);
        self.ended = true;
        self.failed = true;
        Err(io::Error::new(ErrorKind::InvalidData, why.to_owned()))
    }

    /// The input ended: a clean end between messages, an error inside one.
    fn end(&mut self) -> io::Result<usize> {
        self.ended = true;
        if self.in_message {
            self.failed = true;
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(0)
    }

    fn unmask(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            *byte ^= self.mask[self.mask_offset & 3];
            self.mask_offset += 1;
        }
    }

    /// Payload bytes of the current frame went out: if that was the message's last, its
    /// `\n` is owed.
    fn took(&mut self, n: usize) {
        self.remaining -= n as u64;
        if self.remaining == 0 && self.fin {
            self.in_message = false;
            self.newline_owed = true;
        }
    }

    /// Reads more bytes into `raw`. `Ok(false)` at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.raw.drain(..self.start);
            self.start = 0;
        }
        let old = self.raw.len();
        self.raw.resize(old + READ_CHUNK, 0);
        let read = self.input.read(&mut self.raw[old..]);
        self.raw.truncate(old + *read.as_ref().unwrap_or(&0));
        Ok(read? > 0)
    }

    /// Takes the next frame's header (and a control frame's payload) from `raw`. `Ok(true)`:
    /// a data frame's payload follows; `Ok(false)`: a control frame was handled.
    fn next_frame(&mut self, header: Header) -> io::Result<bool> {
        if header.reserved {
            return self
                .fail(close_code::PROTOCOL_ERROR, "reserved bits set")
                .map(|_| false);
        }
        let Some(mask) = header.mask else {
            return self
                .fail(close_code::PROTOCOL_ERROR, "client frames must be masked")
                .map(|_| false);
        };
        match header.opcode {
            CLOSE | PING | PONG => {
                if !header.fin || header.len > 125 {
                    return self
                        .fail(close_code::PROTOCOL_ERROR, "bad control frame")
                        .map(|_| false);
                }
                let len = header.len as usize;
                let mut payload = self.raw[self.start + header.size..][..len].to_vec();
                self.start += header.size + len;
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i & 3];
                }
                match header.opcode {
                    PING => self.control.owe_pong(payload),
                    PONG => {}
                    _ => {
                        let code = match payload.len() {
                            0 => close_code::NORMAL,
                            1 => {
                                return self
                                    .fail(close_code::PROTOCOL_ERROR, "bad close frame")
                                    .map(|_| false)
                            }
                            _ => match u16::from_be_bytes([payload[0], payload[1]]) {
                                // The codes an endpoint may send (RFC 6455 section 7.4).
                                code @ (1000..=1003 | 1007..=1011 | 3000..=4999) => code,
                                _ => close_code::PROTOCOL_ERROR,
                            },
                        };
                        // Echo the client's code, as RFC 6455 section 5.5.1 asks.
                        self.control.close_with(code);
                        self.control.client_closed.store(true, Ordering::SeqCst);
                        return self.end().map(|_| false);
                    }
                }
                Ok(false)
            }
            TEXT | CONTINUATION => {
                if (header.opcode == TEXT) == self.in_message {
                    return self
                        .fail(close_code::PROTOCOL_ERROR, "broken fragment sequence")
                        .map(|_| false);
                }
                if header.opcode == TEXT {
                    self.in_message = true;
                    self.message_len = 0;
                }
                self.message_len = self.message_len.saturating_add(header.len);
                if self.message_len > self.max_message {
                    return self
                        .fail(close_code::TOO_BIG, "message too large")
                        .map(|_| false);
                }
                self.start += header.size;
                self.remaining = header.len;
                self.mask = mask;
                self.mask_offset = 0;
                self.fin = header.fin;
                if header.len == 0 && header.fin {
                    self.took(0);
                }
                Ok(true)
            }
            BINARY => self
                .fail(
                    close_code::UNSUPPORTED_DATA,
                    "only text messages are spoken",
                )
                .map(|_| false),
            _ => self
                .fail(close_code::PROTOCOL_ERROR, "unknown opcode")
                .map(|_| false),
        }
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.failed {
                return Err(ErrorKind::InvalidData.into());
            }
            if buf.is_empty() || self.ended {
                return Ok(0);
            }
            if self.newline_owed {
                self.newline_owed = false;
                buf[0] = b'\n';
                return Ok(1);
            }
            if self.remaining > 0 {
                let want = buf
                    .len()
                    .min(self.remaining.min(usize::MAX as u64) as usize);
                let buffered = self.raw.len() - self.start;
                let n = if buffered > 0 {
                    let n = want.min(buffered);
                    buf[..n].copy_from_slice(&self.raw[self.start..self.start + n]);
                    self.start += n;
                    n
                } else {
                    match self.input.read(&mut buf[..want])? {
                        0 => return self.end(),
                        n => n,
                    }
                };
                self.unmask(&mut buf[..n]);
                self.took(n);
                return Ok(n);
            }
            let header = parse_header(&self.raw[self.start..]).filter(|header| {
                // A control frame is taken whole; its payload is at most 125 bytes.
                header.opcode & 0x8 == 0
                    || header.len > 125
                    || self.raw.len() - self.start >= header.size + header.len as usize
            });
            match header {
                Some(header) => {
                    self.next_frame(header)?;
                }
                None => {
                    if !self.fill()? {
                        return self.end();
                    }
                    // A header still in pieces: give the caller its turn to check its
                    // deadlines (a header trickled a byte at a time must not hold it).
                    if parse_header(&self.raw[self.start..]).is_none() {
                        return Err(ErrorKind::WouldBlock.into());
                    }
                }
            }
        }
    }
}

/// The reader's side: lines out of the frames.
pub struct WsLines {
    lines: LineReader<FrameReader<SharedSocket>>,
    socket: Arc<TcpStream>,
}

impl LineSource for WsLines {
    fn next_line(&mut self) -> io::Result<ReadLine<'_>> {
        self.lines.next_line()
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.socket.set_read_timeout(timeout);
    }
}

/// The writer's side: each batch of lines goes out as one text frame, after any pong owed.
pub struct WsSink {
    socket: Arc<TcpStream>,
    control: Arc<Control>,
    /// The frames of one write, reused.
    out: Vec<u8>,
}

impl WsSink {
    fn take_owed(&mut self) {
        if let Some(pong) = self.control.pong.lock().take() {
            frame(&mut self.out, PONG, &pong);
        }
    }
}

impl FrameSink for WsSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.take_owed();
        if !batch.is_empty() {
            frame(&mut self.out, TEXT, batch);
        }
        let written = (&*self.socket).write_all(&self.out);
        if self.out.capacity() > 2 * MAX_BATCH {
            self.out = Vec::new();
        }
        written
    }

    fn unsent(&self) -> usize {
        tcp::unsent(&self.socket)
    }

    fn close(mut self, farewell: Option<&[u8]>, _client_done: bool) {
        self.out.clear();
        self.take_owed();
        if let Some(farewell) = farewell {
            frame(&mut self.out, TEXT, farewell);
        }
        let code = self.control.close_code.lock().unwrap_or(close_code::NORMAL);
        close_frame(&mut self.out, code);
        let _ = (&*self.socket).write_all(&self.out);
        if !self.control.client_closed.load(Ordering::SeqCst) {
            await_close(&self.socket);
        }
        // The server closes the TCP connection first (RFC 6455 section 7.1.1).
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// After the server's close frame: waits (at most `tcp::LINGER`) for the client's close
/// frame or its hang-up, discarding what it still sends, so that its unread input cannot turn
/// the close into a reset that destroys the farewell. (`Outbox::close` shut the read side,
/// so these reads never block.)
fn await_close(socket: &TcpStream) {
    let deadline = Instant::now() + tcp::LINGER;
    let mut pending: Vec<u8> = Vec::new();
    let mut scratch = [0u8; 4096];
    loop {
        while let Ok(n @ 1..) = (&*socket).read(&mut scratch) {
            pending.extend_from_slice(&scratch[..n]);
            // Skip whole frames, looking for a close.
            while let Some(header) = parse_header(&pending) {
                if header.opcode == CLOSE {
                    return;
                }
                let whole = header.size as u64 + header.len;
                if (pending.len() as u64) < whole {
                    break;
                }
                pending.drain(..whole as usize);
            }
            if pending.len() > MAX_MESSAGE {
                // Frames larger than any we accept: stop reading them, just wait.
                pending.clear();
            }
        }
        if tcp::peer_hung_up(socket) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(tcp::LINGER_STEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, with the given first byte (FIN, opcode) and payload.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    /// The lines a sequence of client frames gives, read through the same `LineReader` as
    /// the server's, or the error that ended them.
    fn lines(frames: &[u8]) -> (Vec<String>, Option<ErrorKind>, Arc<Control>) {
        let control = Arc::new(Control::default());
        let reader = FrameReader::new(frames, Vec::new(), 64, Arc::clone(&control));
        let mut lines = LineReader::new(reader, 32);
        let mut out = Vec::new();
        for _ in 0..1000 {
            match lines.next_line() {
                Ok(ReadLine::Line(line)) => out.push(String::from_utf8_lossy(line).into_owned()),
                Ok(ReadLine::TooLong(_)) => out.push("<too long>".into()),
                Ok(ReadLine::Blank | ReadLine::Incomplete) => {}
                Ok(ReadLine::End) => return (out, None, control),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return (out, Some(e.kind()), control),
            }
        }
        panic!("no end");
    }

    #[test]
    fn a_message_is_lines_and_its_end_ends_the_last() {
        let mut input = client_frame(0x81, b"PING a\nPING b");
        input.extend(client_frame(0x81, b"PING c\n"));
        input.extend(client_frame(0x01, b"PI"));
        input.extend(client_frame(0x80, b"NG d"));
        input.extend(client_frame(0x81, b""));
        let (got, error, _) = lines(&input);
        assert_eq!(got, ["PING a", "PING b", "PING c", "PING d"]);
        assert_eq!(error, None);
    }

    #[test]
    fn a_ping_leaves_a_pong_and_a_close_ends_the_input() {
        let mut input = client_frame(0x81, b"PING a");
        input.extend(client_frame(0x89, b"hi"));
        input.extend(client_frame(0x88, &1001u16.to_be_bytes()));
        input.extend(client_frame(0x81, b"PING after close"));
        let (got, error, control) = lines(&input);
        assert_eq!(got, ["PING a"]);
        assert_eq!(error, None);
        assert_eq!(control.pong.lock().as_deref(), Some(&b"hi"[..]));
        assert_eq!(*control.close_code.lock(), Some(1001));
        assert!(control.client_closed.load(Ordering::SeqCst));
    }

    #[test]
    fn protocol_errors_end_the_input_with_a_close_code_and_drop_the_unfinished_line() {
        let unmasked = [0x81, 0x02, b'h', b'i'].to_vec();
        let mut broken_sequence = client_frame(0x01, b"SEND r half");
        broken_sequence.extend(client_frame(0x81, b"x"));
        let mut fragmented_ping = client_frame(0x09, b"x");
        fragmented_ping.extend(client_frame(0x80, b"y"));
        for (input, code) in [
            (unmasked, close_code::PROTOCOL_ERROR),
            (client_frame(0xC1, b"x"), close_code::PROTOCOL_ERROR),
            (client_frame(0x82, b"x"), close_code::UNSUPPORTED_DATA),
            (client_frame(0x80, b"x"), close_code::PROTOCOL_ERROR),
            (client_frame(0x83, b"x"), close_code::PROTOCOL_ERROR),
            (broken_sequence, close_code::PROTOCOL_ERROR),
            (fragmented_ping, close_code::PROTOCOL_ERROR),
            (client_frame(0x81, &[b'a'; 65]), close_code::TOO_BIG),
            (client_frame(0x89, &[b'a'; 126]), close_code::PROTOCOL_ERROR),
            (client_frame(0x88, b"x"), close_code::PROTOCOL_ERROR),
        ] {
            let (got, error, control) = lines(&input);
            assert!(got.is_empty(), "{input:?}: {got:?}");
            assert_eq!(error, Some(ErrorKind::InvalidData), "{input:?}");
            assert_eq!(*control.close_code.lock(), Some(code), "{input:?}");
        }
        // Cut off inside a message: the half line is not carried out.
        let (got, error, _) = lines(&client_frame(0x01, b"SEND r half"));
        assert!(got.is_empty());
        assert_eq!(error, Some(ErrorKind::UnexpectedEof));
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn only_the_pages_own_origin_by_default() {
        let none: &[String] = &[];
        assert!(origin_allowed(None, "a:1", none));
        assert!(origin_allowed(Some("http://a:1"), "a:1", none));
        assert!(origin_allowed(Some("HTTPS://A:1"), "a:1", none));
        assert!(!origin_allowed(Some("http://evil:1"), "a:1", none));
        assert!(!origin_allowed(Some("http://a:1.evil"), "a:1", none));
        assert!(!origin_allowed(Some("null"), "a:1", none));
        let listed = ["https://chat.example.org/".to_owned()];
        assert!(origin_allowed(
            Some("https://chat.example.org"),
            "x",
            &listed
        ));
        assert!(!origin_allowed(Some("http://x"), "x", &listed));
        assert!(origin_allowed(Some("http://x"), "x", &["*".to_owned()]));
    }

    proptest::proptest! {
        /// Any bytes end in lines, a clean end or an error, never a panic or a hang.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = lines(&bytes);
        }
    }
}
