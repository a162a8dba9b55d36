//! WebSocket sessions (RFC 6455) over the HTTP listener.

use std::net::TcpStream;
use std::sync::Arc;

use super::request::Request;
use super::response::Response;
use crate::transport::limits::AddressSlot;
use crate::transport::listener::Shared;

/// Upgrades the connection to a WebSocket session.
pub(crate) fn accept(
    stream: Arc<TcpStream>,
    _request: &Request,
    _after_head: Vec<u8>,
    _slot: Option<AddressSlot>,
    _shared: &Arc<Shared>,
) {
    super::respond(
        &stream,
        &Response::error(503, "WebSocket sessions are not served yet"),
        false,
    );
}
