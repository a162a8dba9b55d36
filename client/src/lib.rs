//! A blocking client for [chatd](../../protocol.md) that keeps chatd's promises on the
//! client's side: it reconnects by itself, resumes every room without a gap, and never posts a
//! message twice.
//!
//! ```no_run
//! use std::time::Duration;
//! use chatd_client::{Client, Config, Event};
//!
//! let config = Config::new("127.0.0.1:7878", "alice").device("laptop");
//! let mut client = Client::connect(config)?;
//! client.join("general")?;
//! let sent = client.send("general", "hello")?;
//! println!("stored as seq {}", sent.seq);
//! for event in client.events() {
//!     match event? {
//!         Event::Message(m) => println!("[{}] {}: {}", m.room, m.sender, m.body),
//!         Event::Disconnected { reason } => eprintln!("reconnecting after {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), chatd_client::Error>(())
//! ```
//!
//! # What it guarantees
//!
//! - **Each message of a room is delivered once, in seq order**, across reconnects, server
//!   restarts, slow-consumer disconnects and SYNC pages ([`Event::Gap`] and
//!   [`Event::EpochReset`] say when the server's history itself has a hole or was reset).
//! - **Each send is stored once**: every SEND and DM carries a fresh cid and is retried with
//!   it after a reconnect until its OK arrives.
//! - **Resume state** ([`ResumeState`]) can be persisted and handed to [`Client::resume`] by
//!   a new process, which then continues without a gap and retries the unacknowledged sends.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `client` | [`Client`]: the session, label routing, reconnect and resume |
//! | `room` | one room's ordering: cursor, held lines during a SYNC, dedupe by seq |
//! | `wire` | server lines parsed into types |
//! | `connection` | one TCP connection, read and written by lines with deadlines |
//! | [`e2e`] | end-to-end encrypted DMs: device identities, envelopes (docs/e2e.md) |
//! | `pacing` | the client's token bucket, from the server's INFO |
//! | `secure` | the key directory and encrypted DMs on a [`Client`] (`publish_key`, `dm_encrypted`, `decrypt`, ...) |
//! | `resume` | [`ResumeState`] and its line format |
//! | `event`, `error`, `config` | the public types |
//! | `expect` | deadline-bound waits for scripted tests |
//!
//! # Threads
//!
//! None. The client is driven by its caller: every call reads the connection while it waits,
//! so replies, events, reconnects and retries happen on the caller's thread. A client that is
//! not called does not read, and the server may disconnect it as a slow consumer; it then
//! resumes on the next call, without losing or repeating a message.

mod client;
mod config;
mod connection;
pub mod e2e;
mod error;
mod event;
mod expect;
mod pacing;
mod resume;
mod room;
mod secure;
mod wire;

pub use client::{Client, Events, Joined, Reply};
pub use config::Config;
pub use error::Error;
pub use event::{Event, Member, Message, Presence, Sent, Target};
pub use resume::{PendingSend, ResumeState};
