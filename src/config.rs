//! Every tunable of the server in one struct, so the binary's flags, tests and benchmarks all
//! build a server the same way.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Sessions beyond this are refused with `ERR server-full`. `None`: the ceiling computed
    /// from the OS limits at start-up (see `transport::capacity`).
    pub max_sessions: Option<usize>,
    /// Slots in each session's outbound queue. A session that falls this far behind is a
    /// slow consumer and is disconnected.
    pub channel_capacity: usize,
    /// Messages each room keeps in memory for HISTORY.
    pub recent_per_room: usize,
    /// Longest accepted line, in bytes; longer lines are discarded with `ERR line-too-long`.
    pub max_line: usize,
    /// Longest accepted message body, in bytes.
    pub max_body: usize,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A write to a socket that blocks this long means the peer is gone or not reading.
    pub write_timeout: Duration,
    /// A peer that stops answering at the TCP level (cable pulled, laptop asleep) is dropped
    /// within this bound, by TCP keepalive and TCP_USER_TIMEOUT.
    pub dead_peer_timeout: Duration,
    /// How long a user whose last session ended is still shown online, so a reconnect
    /// through a network blip does not flap their presence. Zero announces at once.
    pub presence_grace: Duration,
    /// Client message ids remembered per user for idempotent retries: at most this many...
    pub client_id_window: usize,
    /// ...and none older than this.
    pub client_id_ttl: Duration,
    /// Most messages one SYNC replays; the reply says `more` when the client should page.
    pub sync_limit: usize,
    /// A typist who does not refresh `TYPING` within this is shown stopped.
    pub typing_ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            max_sessions: None,
            channel_capacity: 1024,
            recent_per_room: 1000,
            max_line: 8 * 1024,
            max_body: 4 * 1024,
            login_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(60),
            presence_grace: Duration::from_secs(5),
            client_id_window: 10_000,
            client_id_ttl: Duration::from_secs(24 * 60 * 60),
            sync_limit: 1000,
            typing_ttl: Duration::from_secs(6),
        }
    }
}
