//! Every HTTP route chatd serves, in one `match`. To add one, add an arm to [`route`]
//! returning a [`Response`]; the listener (`http::serve`) writes it and closes.

use std::sync::Arc;

use super::request::Request;
use super::response::{Response, CONTENT_SECURITY_POLICY};
use super::web;
use crate::metrics::http as ops;
use crate::server::ChatServer;

/// What a route has to work with.
pub struct Context<'a> {
    pub server: &'a Arc<ChatServer>,
    /// The server is shutting down (for a readiness check).
    pub stopping: bool,
}

/// What to do with a request.
pub enum Route {
    /// Send this response and close.
    Respond(Response),
    /// Upgrade the connection to a WebSocket session (`http::websocket`).
    WebSocket,
}

/// Routes a request. `HEAD` is routed as `GET` (the listener leaves out the body).
pub fn route(request: &Request, context: &Context) -> Route {
    let method = match request.method.as_str() {
        "HEAD" => "GET",
        other => other,
    };
    Route::Respond(match (method, request.path()) {
        ("GET", "/") => page(web::INDEX_HTML, "text/html; charset=utf-8"),
        ("GET", "/app.js") => page(web::APP_JS, "text/javascript; charset=utf-8"),
        ("GET", "/style.css") => page(web::STYLE_CSS, "text/css; charset=utf-8"),
        ("GET", "/ws") => return Route::WebSocket,
        ("GET", "/metrics") => ops::metrics(context.server),
        ("GET", "/healthz") => ops::healthz(),
        ("GET", "/readyz") => ops::readyz(context.server, context.stopping),
        (_, "/" | "/app.js" | "/style.css" | "/ws" | "/metrics" | "/healthz" | "/readyz") => {
            Response::error(405, "only GET is served here").with("Allow", "GET, HEAD")
        }
        _ => Response::error(404, "no such page"),
    })
}

/// A file of the web client, under the page's security headers.
fn page(body: &'static str, content_type: &'static str) -> Response {
    Response::ok(content_type, body.as_bytes())
        .with("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with("Referrer-Policy", "no-referrer")
        .with("X-Frame-Options", "DENY")
}
