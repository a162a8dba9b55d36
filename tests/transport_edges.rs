//! Edges of the line transport.

mod support;

use support::TestServer;

/// `--max-line` counts a line without its line end, so a line of exactly that many bytes is
/// accepted whether it ends with `\n` or `\r\n`, and one byte more is refused with either.
#[test]
fn a_line_of_exactly_max_line_bytes_is_accepted_with_either_line_end() {
    let max_line = chatd::Config::default().max_line;
    let server = TestServer::start();
    let mut client = server.login("pat");
    // A label, a padding tag the server ignores, and a command: `@l;k=xxx… PING z`.
    let line_of = |len: usize| {
        let (head, tail) = ("@l;k=", " PING z");
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    for end in ["\n", "\r\n"] {
        client.send_raw(format!("{}{end}", line_of(max_line)).as_bytes());
        client.expect("@l PONG z");
        client.send_raw(format!("{}{end}", line_of(max_line + 1)).as_bytes());
        client.expect_prefix("ERR line-too-long ");
    }
}
