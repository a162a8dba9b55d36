//! Sockets and threads: accepting connections, reading lines, writing lines.
//! The rest of the crate sees a connection only as a [`crate::delivery::Outbox`].

pub mod capacity;
pub mod limits;
pub mod listener;
pub mod reader;
pub mod writer;
