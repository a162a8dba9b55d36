//! The operations routes of the HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! - `/healthz`: the process is up and its HTTP thread answers. Nothing else is checked, so
//!   a supervisor restarts chatd only when it is truly wedged.
//! - `/readyz`: the server can do its job: it is not shutting down and its store answers a
//!   read. A load balancer takes a node that is not ready out of rotation.

use crate::http::Response;
use crate::server::ChatServer;

/// The exposition format's content type (text format 0.0.4).
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn metrics(server: &ChatServer) -> Response {
    Response::ok(EXPOSITION, super::render(server).into_bytes())
}

pub fn healthz() -> Response {
    Response::ok("text/plain; charset=utf-8", &b"ok\n"[..])
}

pub fn readyz(server: &ChatServer, stopping: bool) -> Response {
    if stopping {
        return Response::error(503, "shutting down");
    }
    match server.store.check() {
        Ok(()) => Response::ok("text/plain; charset=utf-8", &b"ready\n"[..]),
        Err(e) => {
            log::warn!(error:% = e; "readiness check failed");
            Response::error(503, "the store does not answer")
        }
    }
}
