//! The HTTP front door (`--http-listen`, default 127.0.0.1:7879): the web client's files and
//! WebSocket sessions, on plain threads like everything else.
//!
//! - `chatd-http` accepts. It makes the same checks at the door as the line-protocol
//!   listener (`Shared::admission`: the session ceiling and the per-address cap) before it
//!   spawns anything, and turns a connection away with `503` or `429`.
//! - `chatd-h<id>`, one per admitted connection, reads the request head (at most
//!   [`MAX_HEAD`] bytes, within `--http-header-timeout`: the slow-loris guard), routes it
//!   ([`routes`]) and answers it, or hands the connection over to a WebSocket session
//!   ([`websocket`]): a reader and a writer thread as for TCP, and then it ends.
//!
//! Why a small server of our own rather than a crate: see docs/design.md ("The HTTP front
//! door").

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::delivery::outbox::CloseReason;
use crate::transport::limits::AddressSlot;
use crate::transport::listener::{is_resource_exhaustion, Shared};

pub mod request;
pub mod response;
pub mod routes;
pub mod web;
pub mod websocket;

pub use request::Request;
pub use response::Response;

/// The most bytes a request head may have. Browsers send well under 2 KiB (cookies aside,
/// and chatd sets none); 8 KiB is what common servers allow by default.
pub const MAX_HEAD: usize = 8 * 1024;

/// Stack of a `chatd-h` thread: it reads a head into a 2 KiB buffer and formats a reply.
const HANDSHAKE_STACK: usize = 128 * 1024;

/// How long a response waits for the client to read it and hang up (see `linger`).
const LINGER: Duration = Duration::from_secs(1);

/// The `chatd-http` thread: accepts until the server stops.
pub(crate) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.is_stopping() {
            break;
        }
        match stream {
            Ok(stream) => admit(stream, &shared),
            Err(e) if is_resource_exhaustion(&e) => thread::sleep(Duration::from_millis(50)),
            Err(_) => {}
        }
    }
}

/// The door: the same checks as for a TCP session, then a thread for the request.
fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    let slot = match shared.admission(&stream) {
        Ok(slot) => slot,
        Err(Some(reason)) => return refuse(stream, shared, reason),
        Err(None) => return,
    };
    let id = shared.next_id();
    let stream = Arc::new(stream);
    shared.handshakes.lock().insert(id, Arc::clone(&stream));
    let visit = Visit {
        id,
        shared: Arc::clone(shared),
    };
    let thread_stream = Arc::clone(&stream);
    let spawned = thread::Builder::new()
        .name(format!("chatd-h{id}"))
        .stack_size(HANDSHAKE_STACK)
        .spawn(move || serve(thread_stream, slot, visit));
    if spawned.is_err() {
        // The closure, its visit and its slot are gone with the failed spawn.
        if let Ok(stream) = Arc::try_unwrap(stream) {
            refuse(stream, shared, CloseReason::ServerFull);
        }
    }
}

/// An HTTP connection reading its request: counted toward the capacity, and cut short by
/// shutdown, until it is dropped.
struct Visit {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.shared.handshakes.lock().remove(&self.id);
    }
}

/// Turns a connection away at the door with one non-blocking write: `503` when the server is
/// full, `429` when the address has its share.
fn refuse(stream: TcpStream, shared: &Shared, reason: CloseReason) {
    shared.server().stats.count_refusal(reason.name());
    let response = match reason {
        CloseReason::BannedAddress => Response::error(403, "you are banned from this server"),
        CloseReason::TooManyConnections => Response::error(
            429,
            "too many connections from your address; close one first",
        ),
        _ => Response::error(503, "the server is at capacity; try again later"),
    }
    .with("Retry-After", "5");
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&response.to_bytes(false));
    let _ = stream.shutdown(Shutdown::Write);
}

/// A `chatd-h` thread: one request, then a response or a WebSocket session.
fn serve(stream: Arc<TcpStream>, slot: Option<AddressSlot>, visit: Visit) {
    let shared = Arc::clone(&visit.shared);
    let config = &shared.server().config;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(config.write_timeout));
    let deadline = Instant::now() + config.http_header_timeout;
    let (request, after_head) = match request::read_head(&*stream, MAX_HEAD, deadline) {
        Ok(read) => read,
        Err(error) => {
            if let Some(status) = error.status() {
                let text = match status {
                    431 => "the request head is too large",
                    408 => "the request head took too long to arrive",
                    505 => "only HTTP/1.1 is served",
                    _ => "not an HTTP/1.1 request",
                };
                respond(&stream, &Response::error(status, text), false);
            }
            return;
        }
    };
    let context = routes::Context {
        server: shared.server(),
        stopping: shared.is_stopping(),
    };
    match routes::route(&request, &context) {
        routes::Route::Respond(response) => {
            respond(&stream, &response, request.method == "HEAD");
        }
        routes::Route::WebSocket => {
            // The session counts toward the capacity from here on; the visit no longer does.
            drop(visit);
            websocket::accept(stream, &request, after_head, slot, &shared);
        }
    }
}

/// Writes a response and closes the connection, lingering (at most [`LINGER`]) so that input
/// the client is still sending cannot turn the close into a reset that destroys the response.
pub(crate) fn respond(stream: &TcpStream, response: &Response, head_only: bool) {
    let _ = (&*stream).write_all(&response.to_bytes(head_only));
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    while Instant::now() < deadline {
        match (&*stream).read(&mut scratch) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
