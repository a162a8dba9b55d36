//! Who to be, where to connect, and how patiently to reconnect.

use std::time::Duration;

/// How a [`crate::Client`] connects and reconnects.
///
/// ```
/// let config = chatd_client::Config::new("127.0.0.1:7878", "alice").device("laptop");
/// assert_eq!(config.device.as_deref(), Some("laptop"));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port`, resolved again at every reconnect (so a moved server is found).
    pub server: String,
    pub user: String,
    /// A device id makes reconnects replace this device's stale session instead of leaving
    /// it to time out; without one each connection is a new session.
    pub device: Option<String>,
    pub password: Option<String>,
    /// Deadline for each TCP connect and for each LOGIN to be answered.
    pub connect_timeout: Duration,
    /// First wait before reconnecting; doubled after every failed attempt up to
    /// `max_backoff`, reset by a successful login.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// After `BYE replaced` (the same device logged in elsewhere): wait this long before
    /// taking the device back, or `None` to end the session. protocol.md asks for 30 s or
    /// more, since reconnecting at once would replace the other connection back.
    pub replaced_pause: Option<Duration>,
    /// After `BYE flooding`: protocol.md asks for "a pause of a few seconds".
    pub flooding_pause: Duration,
}

impl Config {
    /// Defaults for a long-running client: 5 s connect deadline, backoff 100 ms to 10 s.
    pub fn new(server: impl Into<String>, user: impl Into<String>) -> Config {
        Config {
            server: server.into(),
            user: user.into(),
            device: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            replaced_pause: Some(Duration::from_secs(30)),
            flooding_pause: Duration::from_secs(5),
        }
    }

    pub fn device(mut self, device: impl Into<String>) -> Config {
        self.device = Some(device.into());
        self
    }

    pub fn password(mut self, password: impl Into<String>) -> Config {
        self.password = Some(password.into());
        self
    }

    /// Backoff bounds, for tests that restart servers and want quick reconnects.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Config {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}
