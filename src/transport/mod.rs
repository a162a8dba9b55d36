//! Sockets and threads: accepting connections, reading lines, writing lines.
//! The rest of the crate sees a connection only as an [`outbox::Outbox`].

pub mod capacity;
pub mod doorbell;
pub mod limits;
pub mod listener;
pub mod outbox;
pub mod reader;
pub mod writer;
