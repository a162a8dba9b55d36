//! The domain's delivery endpoint: what rooms and users queue to a session, and how that
//! session's writer thread is woken. It names no socket type: a transport (TCP today) plugs
//! in below it, and nothing here imports `transport/`.

pub mod doorbell;
pub mod encoder;
pub mod line;
pub mod outbox;
pub mod peer;
pub mod queue;
pub mod reply;
pub mod write_through;

pub use line::{Cursor, Line, LineKind};
pub use outbox::{CloseReason, Outbox};
pub use queue::{Queue, QueueReader};
pub use reply::Reply;
