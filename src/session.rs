//! A session: one logged-in connection (one device) of a user.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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
    /// Whether this session proved the user's password (logged in with it, or set it). Once a
    /// name has a password, only such sessions may stay (see `User::set_password_hash`).
    proven: AtomicBool,
}

impl Session {
    pub fn new(
        id: u64,
        user: Arc<User>,
        device: Option<&str>,
        outbox: Arc<Outbox>,
        proven: bool,
    ) -> Session {
        Session {
            id,
            user,
            device: device.map(Box::from),
            outbox,
            proven: AtomicBool::new(proven),
        }
    }

    pub fn proven(&self) -> bool {
        self.proven.load(Relaxed)
    }

    /// The session set the user's password itself (REGISTER, PASSWORD).
    pub fn mark_proven(&self) {
        self.proven.store(true, Relaxed);
    }

    /// Queues a line for this device without blocking (see [`Outbox::deliver`]).
    pub fn deliver(&self, line: &Arc<Line>) -> bool {
        self.outbox.deliver_through(line)
    }
}
