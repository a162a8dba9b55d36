//! Every tunable of the server in one struct, so the binary's flags, tests and benchmarks all
//! build a server the same way.

use std::net::SocketAddr;
use std::time::Duration;

use crate::quota::Rate;
use crate::recent::RecentLimits;

use crate::store::Retention;

// Re-exported so `chatd::config::StoreConfig` keeps working; each backend's own options live
// in `chatd::store::<backend>`.
pub use crate::store::StoreConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where IRC clients connect (`--irc-listen`; docs/irc.md). `None`: no IRC listener.
    pub irc_listen: Option<SocketAddr>,
    /// Where rooms, members and messages are kept. The library defaults to memory (tests and
    /// tools start throwaway servers); the `chatd` binary defaults to SQLite in ./chatd.db.
    pub store: StoreConfig,
    /// Cluster mode: this node shares rooms with others through Redis, which is then the
    /// store too (`store` is not used). `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterOptions>,
    /// Refuse names without an account (a password). Off by default, so anyone can try the
    /// server with `nc` and a name.
    pub require_account: bool,
    /// Rooms (not counting direct conversations) one user may be in; JOIN past it gets
    /// `ERR too-many-rooms`.
    pub max_rooms_per_user: usize,
    /// Rooms one user may create (JOIN of a free name), as a burst refilled at that rate...
    pub new_rooms_per_user: Rate,
    /// ...and rooms the whole server may get. Each room is kept for good, and LEAVE frees a
    /// place among a user's rooms, so this is what bounds how fast rooms can pile up. Over
    /// either: `ERR rate-limited :retry in <n>ms`.
    pub new_rooms_overall: Rate,
    /// New user names (first LOGIN of a name) the whole server admits, per minute.
    pub new_names_overall: Rate,
    /// Members one room may have; JOIN past it gets `ERR room-full`.
    pub max_members_per_room: usize,
    /// Sessions beyond this are refused with `ERR server-full`. `None`: the ceiling computed
    /// from the OS limits at start-up (see `transport::capacity`).
    pub max_sessions: Option<usize>,
    /// Slots in each session's outbound queue. A session that falls this far behind is a
    /// slow consumer and is disconnected.
    pub channel_capacity: usize,
    /// Messages each room keeps in memory for SYNC and HISTORY (older ones are read from the
    /// store)...
    pub recent_per_room: usize,
    /// ...and at most this many bytes of them, so a room of 4 KiB messages holds ~250, not
    /// 1,000 (4 MiB).
    pub recent_bytes_per_room: usize,
    /// What all rooms' recent logs may hold together. Over it, the logs of the least recently
    /// active rooms are dropped (see `recent`): a bound on memory however many rooms exist.
    pub recent_memory: usize,
    /// With a store that keeps history, a room's recent log is dropped once the room has
    /// been idle this long: memory goes back when the talking stops.
    pub recent_idle: Duration,
    /// Bytes of its own replies (SYNC, HISTORY, WHO, ROOMS) a session may have queued; past
    /// it the session is a slow consumer. One reply is always let through.
    pub max_reply_bytes: usize,
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
    /// Most connections held at once from one address (an IPv6 client: from one /64, since
    /// a single host is usually handed a whole /64). Further ones get
    /// `ERR too-many-connections`. `None`: no cap.
    pub max_per_ip: Option<usize>,
    /// Whether loopback clients count toward `max_per_ip`. Off by default: behind a TLS proxy
    /// on the same host every client arrives from 127.0.0.1, and one cap would then be shared
    /// by everybody. The proxy is the place to limit per real address.
    pub per_ip_loopback: bool,
    /// The per-session command rate limit. `None` turns it off (benchmarks, trusted clients).
    pub rate_limit: Option<RateLimit>,
    /// A line must arrive whole within this long of its first byte, or the connection is
    /// closed with `BYE line-timeout`: the slow-loris guard. A person in `nc` sends each line
    /// at once when they press Enter, so only a client trickling bytes is affected.
    pub line_timeout: Duration,
    /// Where the HTTP listener serves the web client (`GET /`) and WebSocket sessions
    /// (`GET /ws`). `None` turns it off.
    pub http_listen: Option<SocketAddr>,
    /// Origins (`http://host:port`) whose pages may open a WebSocket. Empty: only the page's
    /// own origin (the request's `Host`), so another site cannot drive a visitor's browser.
    pub http_origins: Vec<String>,
    /// An HTTP request's headers must arrive whole within this long of the connection: the
    /// slow-loris guard for HTTP. Browsers send them in one packet.
    pub http_header_timeout: Duration,
}

/// A token bucket per session: `burst` commands at once, then `per_second` on average.
/// Refused commands get `ERR rate-limited`; a session that keeps sending anyway is
/// disconnected (see `transport::limits::CommandLimiter`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Commands a session may send at once after being quiet: enough for a client to log in,
    /// join its rooms and catch up (SYNC each) without waiting.
    pub burst: u32,
    /// Sustained commands per second: far above what a person types, far below a script
    /// that floods.
    pub per_second: f64,
    /// Refused commands a session may send before it is disconnected with `BYE flooding`;
    /// one is forgiven per second. A client that waits `retry in` is never near it.
    pub flood_refusals: u32,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            burst: 20,
            per_second: 5.0,
            flood_refusals: 50,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            irc_listen: None,
            store: StoreConfig::Memory,
            cluster: None,
            require_account: false,
            max_rooms_per_user: 200,
            max_members_per_room: 5_000,
            new_rooms_per_user: Rate {
                burst: 20,
                per: Duration::from_secs(3600),
            },
            new_rooms_overall: Rate {
                burst: 200,
                per: Duration::from_secs(60),
            },
            new_names_overall: crate::accounts::NEW_NAMES_OVERALL,
            max_sessions: None,
            channel_capacity: 1024,
            recent_per_room: 1000,
            recent_bytes_per_room: 1024 * 1024,
            recent_memory: 64 * 1024 * 1024,
            recent_idle: Duration::from_secs(10),
            max_reply_bytes: 1024 * 1024,
            max_line: 8 * 1024,
            max_body: 4 * 1024,
            login_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(60),
            presence_grace: Duration::from_secs(5),
            client_id_window: 10_000,
            client_id_ttl: Retention::default().client_id_ttl,
            sync_limit: 1000,
            typing_ttl: Duration::from_secs(6),
            max_per_ip: Some(16),
            per_ip_loopback: false,
            rate_limit: Some(RateLimit::default()),
            line_timeout: Duration::from_secs(30),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7879))),
            http_origins: Vec::new(),
            http_header_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// What one room's recent log may hold.
    pub fn recent_limits(&self) -> RecentLimits {
        RecentLimits {
            messages: self.recent_per_room,
            bytes: self.recent_bytes_per_room,
        }
    }
}
