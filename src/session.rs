//! A session: one logged-in connection (one device) of a user.

use std::sync::Arc;

use crate::delivery::{Line, Outbox};
use crate::user::User;

pub struct Session {
    /// Unique for the server's lifetime (the connection's number).
    pub id: u64,
    pub user: Arc<User>,
    /// The `device=` given at LOGIN. A second LOGIN with the same device replaces this session.
    pub device: Option<Box<str>>,
    /// The transport: a bounded queue drained by this connection's writer thread.
    pub outbox: Arc<Outbox>,
}

impl Session {
    /// Queues a line for this device without blocking (see [`Outbox::deliver`]).
    pub fn deliver(&self, line: &Arc<Line>) -> bool {
        self.outbox.deliver(line)
    }
}
