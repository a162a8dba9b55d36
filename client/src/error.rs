//! The client's errors: concrete, matchable, with the server's own code where it gave one.

use std::fmt;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed first; `what` names what was awaited.
    Timeout { what: String },
    /// The server answered `ERR <code> :<text>`: nothing was done.
    Refused { code: String, text: String },
    /// LOGIN was refused for good (`bad-password`, `account-required`, `invalid-name`, ...).
    LoginRefused { code: String, text: String },
    /// The session ended for good: `BYE replaced`, `registered`, `password-changed` (a person
    /// must act), `quit`, or a replacement when [`crate::Config::replaced_pause`] is `None`.
    Ended { reason: String, text: String },
    /// An argument the protocol cannot carry (a body with a line break, an empty name).
    InvalidArgument(String),
    /// A resume state that does not parse.
    BadResumeState(String),
    /// An encrypted DM could not be sent or read (see [`crate::e2e::E2eError`]).
    E2e(crate::e2e::E2eError),
}

impl From<crate::e2e::E2eError> for Error {
    fn from(e: crate::e2e::E2eError) -> Error {
        Error::E2e(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { what } => write!(f, "timed out waiting for {what}"),
            Error::Refused { code, text } => write!(f, "refused: {code} ({text})"),
            Error::LoginRefused { code, text } => write!(f, "login refused: {code} ({text})"),
            Error::Ended { reason, text } => write!(f, "session ended: {reason} ({text})"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::BadResumeState(why) => write!(f, "bad resume state: {why}"),
            Error::E2e(e) => write!(f, "end-to-end encryption: {e}"),
        }
    }
}

impl std::error::Error for Error {}
