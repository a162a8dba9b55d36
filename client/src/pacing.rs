//! The client's own token bucket, with the server's numbers from INFO, so a client that
//! flushes an outbox after a reconnect is never refused or cut off for flooding
//! (protocol.md, "Writing a client", points 1 and 2).

use std::time::{Duration, Instant};

use crate::wire::field;

pub(crate) struct Pacer {
    /// `None`: the server has no rate limit (`rate-limit=off`).
    limit: Option<(f64, f64)>,
    tokens: f64,
    refilled: Instant,
}

impl Pacer {
    /// The protocol's defaults (burst 20, 5 a second) until INFO says otherwise.
    pub fn new() -> Pacer {
        Pacer {
            limit: Some((20.0, 5.0)),
            tokens: 20.0,
            refilled: Instant::now(),
        }
    }

    /// A new connection starts with a full bucket on the server's side.
    pub fn reset(&mut self) {
        self.tokens = self.limit.map_or(0.0, |(burst, _)| burst);
        self.refilled = Instant::now();
    }

    /// Adopts `OK INFO` fields. Keeps a token in reserve for the LOGIN and INFO already spent.
    pub fn configure(&mut self, fields: &[String]) {
        if field(fields, "rate-limit") == Some("off") {
            self.limit = None;
            return;
        }
        let burst = field(fields, "rate-burst").and_then(|v| v.parse().ok());
        let rate = field(fields, "rate-per-second").and_then(|v| v.parse().ok());
        if let (Some(burst), Some(rate)) = (burst, rate) {
            self.limit = Some((burst, rate));
            self.tokens = self.tokens.min(burst);
        }
    }

    /// How long to wait before the next command may go; spends its token.
    pub fn take(&mut self) -> Duration {
        let Some((burst, rate)) = self.limit else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let gained = now.duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + gained).min(burst);
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}
