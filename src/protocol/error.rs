//! The errors a client can cause. Each becomes one `ERR <code> :<text>` line and the
//! connection stays usable; I/O errors are not here because they end the connection instead.

use std::fmt;

/// The machine-readable code of an `ERR` line. protocol.md lists every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    UnknownCommand,
    MissingArgument,
    BadArgument,
    BadTag,
    InvalidName,
    InvalidUtf8,
    ControlCharacter,
    LineTooLong,
    BodyTooLong,
    NotLoggedIn,
    AlreadyLoggedIn,
    NoSuchRoom,
    NoSuchUser,
    NotMember,
    NotPermitted,
    ServerFull,
    /// Too many connections from the client's address (`--max-per-ip`); sent instead of HELLO.
    TooManyConnections,
    /// The session is over its command rate (`--rate-burst`, `--rate-per-second`).
    RateLimited,
    /// The name is registered and the password is missing or wrong.
    BadPassword,
    /// The server requires an account (`--require-account`) and the name has none.
    AccountRequired,
    /// JOIN would put the user in more rooms than `--max-rooms-per-user`.
    TooManyRooms,
    /// JOIN would give the room more members than `--max-members-per-room`.
    RoomFull,
    /// The store could not write (disk full, file unwritable): the message was not sent.
    StoreFailed,
    /// A SEND or DM reused a client id of the user's that published a different message
    /// (to another room or recipient, or with another body): nothing was posted.
    CidReused,
    /// REVOKE of a device that has no key.
    NoSuchDevice,
    /// The user or the address is banned from the server (`BAN`, `chatd admin ban`).
    Banned,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::MissingArgument => "missing-argument",
            ErrorCode::BadArgument => "bad-argument",
            ErrorCode::BadTag => "bad-tag",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::InvalidUtf8 => "invalid-utf8",
            ErrorCode::ControlCharacter => "control-character",
            ErrorCode::LineTooLong => "line-too-long",
            ErrorCode::BodyTooLong => "body-too-long",
            ErrorCode::NotLoggedIn => "not-logged-in",
            ErrorCode::AlreadyLoggedIn => "already-logged-in",
            ErrorCode::NoSuchRoom => "no-such-room",
            ErrorCode::NoSuchUser => "no-such-user",
            ErrorCode::NotMember => "not-member",
            ErrorCode::NotPermitted => "not-permitted",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::StoreFailed => "store-failed",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::BadPassword => "bad-password",
            ErrorCode::AccountRequired => "account-required",
            ErrorCode::TooManyConnections => "too-many-connections",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::CidReused => "cid-reused",
            ErrorCode::NoSuchDevice => "no-such-device",
            ErrorCode::Banned => "banned",
        }
    }
}

/// A refused command: what went wrong, in a code for scripts and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub text: String,
}

impl ClientError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> ClientError {
        ClientError {
            code,
            text: text.into(),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.text)
    }
}

impl std::error::Error for ClientError {}
