//! `GET /metrics`, `/healthz`, `/readyz` (issue 16): the figures are what the test did, and a
//! real Prometheus scrapes them.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, Client, TestServer};

/// A test server with its HTTP listener on a free port.
fn server_with_http(configure: impl FnOnce(&mut chatd::Config)) -> (TestServer, SocketAddr) {
    let server = TestServer::with(|config| {
        config.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(config);
    });
    let http = server.handle().http_addr().expect("the HTTP listener");
    (server, http)
}

/// One HTTP GET: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// Every sample of a scrape, by its name with labels as written (`a_total{reason="x"}`).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn metric(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not exposed"))
}

/// Sessions, users, logins, messages and deliveries are exactly what the clients did, and a
/// session that stops reading shows up as one slow-consumer disconnect.
#[test]
fn metric_values_match_what_the_clients_did() {
    let (server, http) = server_with_http(|config| config.channel_capacity = 16);
    let before = scrape(http);
    assert_eq!(metric(&before, "chatd_sessions{transport=\"tcp\"}"), 0.0);

    let mut ana = server.login("ana");
    let mut bob = server.login("bob");
    let mut bob_laptop = server.login_device("bob", "laptop");
    ana.join("ops");
    bob.join("ops");
    ana.expect_joined("ops", "bob");
    bob_laptop.expect("JOINED ops bob");
    for i in 0..5 {
        ana.say("ops", &format!("message {i}"));
    }
    for client in [&mut bob, &mut bob_laptop] {
        for _ in 0..5 {
            client.expect_msg();
        }
    }
    let samples = scrape(http);
    assert_eq!(metric(&samples, "chatd_sessions{transport=\"tcp\"}"), 3.0);
    assert_eq!(metric(&samples, "chatd_users_online"), 2.0);
    assert_eq!(metric(&samples, "chatd_logins_total"), 3.0);
    assert_eq!(metric(&samples, "chatd_messages_posted_total"), 5.0);
    assert_eq!(
        metric(&samples, "chatd_deliveries_total"),
        15.0,
        "five messages to three sessions"
    );
    assert_eq!(metric(&samples, "chatd_send_latency_seconds_count"), 5.0);
    assert!(metric(&samples, "chatd_written_bytes_total") > 0.0);
    // How many of the 15 deliveries were written through depends on timing (a session its
    // writer wrote to within the last millisecond is left to the writer); at most all of
    // them and ana's own copies were, and short lines always fit in the socket.
    let through = metric(&samples, "chatd_lines_written_through_total");
    assert!(through <= 20.0, "{through} lines written through");
    assert_eq!(metric(&samples, "chatd_write_through_leftovers_total"), 0.0);
    assert!(metric(&samples, "chatd_queue_depth_count") > 0.0);
    assert_eq!(metric(&samples, "chatd_rooms"), 1.0);
    assert!(metric(&samples, "process_resident_memory_bytes") > 1e6);
    assert!(metric(&samples, "process_threads") >= 7.0);

    // A member that never reads, with a small socket buffer, while ana floods its room.
    let mut slow = Client::connect_with_receive_buffer(server.addr(), 4096);
    slow.login("slow");
    slow.join("flood");
    ana.send("JOIN flood");
    let filler = "x".repeat(3000);
    let mut cut = false;
    for i in 0..5_000 {
        ana.send(&format!("SEND flood {filler}"));
        let mut got = 0;
        while got < 2 {
            // OK SEND and the echo, besides the slow member's arrival and departure.
            let line = ana.next_line();
            if line.starts_with("OK SEND ") || line.starts_with("MSG ") {
                got += 1;
            }
        }
        if i % 32 == 0
            && metric(
                &scrape(http),
                "chatd_disconnects_total{reason=\"slow_consumer\"}",
            ) == 1.0
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "5,000 messages never made a 16-slot queue overflow");
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let samples = scrape(http);
        if metric(&samples, "chatd_sessions{transport=\"tcp\"}") == 3.0 {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "the slow session was never logged out"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        metric(
            &samples,
            "chatd_disconnects_total{reason=\"slow_consumer\"}"
        ),
        1.0
    );
    assert_eq!(metric(&samples, "chatd_users_online"), 2.0);
}

/// `/healthz` answers, `/readyz` says the store answers, and both refuse other methods.
#[test]
fn health_and_readiness() {
    let (_server, http) = server_with_http(|_| {});
    assert_eq!(get(http, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(http, "/readyz"), (200, "ready\n".to_owned()));
    let mut stream = TcpStream::connect(http).unwrap();
    stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

/// A real Prometheus (Debian's `prometheus`) scrapes a test server every second; its query
/// API shows `chatd_messages_posted_total` moving from 0 to what the clients posted, and the
/// target up.
#[test]
fn a_real_prometheus_scrapes_the_server() {
    let Some(prometheus) = Prometheus::binary() else {
        return;
    };
    let (server, http) = server_with_http(|_| {});
    let prometheus = Prometheus::start(&prometheus, http);
    prometheus.wait_for("up", "1");
    prometheus.wait_for("chatd_messages_posted_total", "0");

    let mut ana = server.login("ana");
    ana.join("scraped");
    for i in 0..7 {
        ana.say("scraped", &format!("counted {i}"));
    }
    prometheus.wait_for("chatd_messages_posted_total", "7");
    prometheus.wait_for("chatd_sessions{transport=\"tcp\"}", "1");
    prometheus.wait_for("chatd_send_latency_seconds_count", "7");
}

/// A Prometheus server in a child process, killed on drop.
struct Prometheus {
    child: Child,
    web: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// The binary, or `None` (skipped) outside CI when it is not installed.
    fn binary() -> Option<String> {
        let found = Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if found {
            return Some("prometheus".into());
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus (apt-get install prometheus)"
        );
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        None
    }

    fn start(binary: &str, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: chatd\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A port for its web API (see `free_port` for why not port 0).
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            web,
            _dir: dir,
        }
    }

    /// Queries `expr` until its (single) value is `expected`, for at most 30 s.
    fn wait_for(&self, expr: &str, expected: &str) {
        let query: String = expr
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(body) = self.query(&query) {
                // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},
                // "value":[<time>,"<value>"]}]}}
                let value = body
                    .rsplit_once("\"value\":[")
                    .and_then(|(_, rest)| rest.split('"').nth(1));
                if value == Some(expected) {
                    return;
                }
                last = body;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus never saw {expr} = {expected}; last answer: {last}");
    }

    fn query(&self, query: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.web, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /api/v1/query?query={query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.web
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
