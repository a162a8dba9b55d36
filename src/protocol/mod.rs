//! The wire protocol: client lines in ([`command`]), server lines out ([`reply`]).
//! protocol.md is the contract; these files are its implementation.

pub mod command;
pub mod error;
pub mod name;
pub mod reply;

/// The version of the protocol protocol.md describes, told by `INFO` as `proto=`. It goes up
/// with every change to the wire that a client could notice; protocol.md's changelog lists
/// them. (HELLO's `chatd 0.1` is fixed text, kept byte for byte for existing clients.)
pub const PROTOCOL_VERSION: u32 = 3;

pub use command::{parse_request, BanSubject, Command, Password, Rejection, Request, Setting};
pub use error::{ClientError, ErrorCode};

use crate::event::Event;

/// The wire syntaxes a session can speak. Each line is encoded at most once per syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// chatd's own line protocol (protocol.md).
    Chatd,
    /// IRC without message tags (docs/irc.md; `crate::irc::encode`).
    Irc,
    /// IRC with the `server-time` tag only (the client asked for `server-time` but not for
    /// `message-tags`).
    IrcTime,
    /// IRC with every tag: `time`, `msgid`, `account` (the client asked for `message-tags`).
    IrcTags,
}

impl Wire {
    /// How many syntaxes there are: the size of each line's per-protocol text cache.
    pub const COUNT: usize = 4;

    /// The text every recipient speaking `self` gets for `event`. (IRC's replies that name
    /// their recipient are worded per connection by `irc::encode::IrcEncoder` instead.)
    pub fn encode(self, event: &Event, label: Option<&str>) -> Box<str> {
        match self {
            Wire::Chatd => reply::encode(event, label).into_boxed_str(),
            Wire::Irc | Wire::IrcTime | Wire::IrcTags => {
                crate::irc::encode::shared(event, self).into_boxed_str()
            }
        }
    }
}
