//! What an HTTP route answers, and how it goes on the wire. Every response closes the
//! connection (`Connection: close`): one request per connection keeps the server free of
//! keep-alive state, and a browser opens another connection when it needs one.

use std::borrow::Cow;

/// A complete response: status, type and body, plus any extra headers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
    /// Headers beyond the ones every response carries (see [`Response::head`]).
    pub headers: Vec<(&'static str, String)>,
}

/// The Content-Security-Policy of the web client: its own script, style and WebSocket, and
/// nothing else. No inline script or style, no other origin, no framing, no forms posting
/// elsewhere: text that slipped into the page as HTML could still not run or phone home.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

impl Response {
    /// 200 with a body.
    pub fn ok(content_type: &'static str, body: impl Into<Cow<'static, [u8]>>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A status with a one-line plain-text explanation.
    pub fn error(status: u16, text: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {}: {text}\n", reason(status))
                .into_bytes()
                .into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line and headers, ending with the blank line. Every response says
    /// `nosniff` (a browser must not guess that a text reply is a script) and `no-store`.
    pub fn head(&self) -> String {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\
             Connection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    }

    /// The whole response as bytes; without the body for a `HEAD` request.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut bytes = self.head().into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase of the statuses chatd sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
