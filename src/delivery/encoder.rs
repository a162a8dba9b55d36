//! How a connection's protocol turns queued lines into bytes.
//!
//! Most lines read the same for every recipient of a protocol and come from `Line::encoded`,
//! made once and shared; a protocol whose lines depend on the connection (IRC: the
//! recipient's nick and capabilities, whether to echo its own message) keeps that state in
//! its encoder. One encoder per connection, kept under the connection's write lock
//! (`write_through::Written`): whoever holds the lock to write (the writer thread, or a
//! publisher writing through) encodes with it, so its state sees the lines in the order they
//! are written.

use crate::event::Event;
use crate::protocol::Wire;

use super::line::Line;

pub trait Encoder: Send {
    /// Appends `line`'s text (possibly nothing) to `out`.
    fn encode(&mut self, line: &Line, out: &mut Vec<u8>);
    /// The connection's last line.
    fn farewell(&mut self, event: &Event, label: Option<&str>) -> String;
}

/// The chatd line protocol: every line's text is shared by all its recipients.
pub struct ChatdEncoder;

impl Encoder for ChatdEncoder {
    fn encode(&mut self, line: &Line, out: &mut Vec<u8>) {
        out.extend_from_slice(line.encoded(Wire::Chatd).as_bytes());
    }

    fn farewell(&mut self, event: &Event, label: Option<&str>) -> String {
        Wire::Chatd.encode(event, label).into()
    }
}
