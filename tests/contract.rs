//! The places where a client written from protocol.md alone met a server that did something
//! else (issue 19), each pinned to what the document now says.

mod support;

use chatd::config::RateLimit;
use support::{field, TestServer};

/// `INFO` works before LOGIN and tells the protocol version and the limits a client paces
/// itself by, from this server's configuration rather than from the documented defaults.
#[test]
fn info_tells_the_protocol_version_and_the_limits() {
    let server = TestServer::with(|c| {
        c.max_line = 1000;
        c.max_body = 500;
        c.sync_limit = 7;
        c.rate_limit = Some(RateLimit {
            burst: 9,
            per_second: 2.5,
            flood_refusals: 11,
        });
    });
    let mut client = server.connect();
    client.send("@i INFO");
    let line = client.expect_prefix("@i OK INFO proto=2 store=");
    for (key, value) in [
        ("max-line", "1000"),
        ("max-body", "500"),
        ("rate-limit", "on"),
        ("rate-burst", "9"),
        ("rate-per-second", "2.5"),
        ("flood-refusals", "11"),
        ("sync-limit", "7"),
        ("page-bytes", "262144"),
    ] {
        assert_eq!(field(&line, key), Some(value), "{key} in {line}");
    }
    let store = field(&line, "store").unwrap();
    assert!(store == "sqlite" || store == "memory", "{line}");

    let unlimited = TestServer::start();
    let mut client = unlimited.login("alice");
    client.send("INFO");
    let line = client.expect_prefix("OK INFO proto=2 ");
    assert_eq!(field(&line, "rate-limit"), Some("off"), "{line}");
    assert_eq!(field(&line, "rate-burst"), None, "{line}");
}
