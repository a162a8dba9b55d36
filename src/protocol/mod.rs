//! The wire protocol: client lines in ([`command`]), server lines out ([`reply`]).
//! protocol.md is the contract; these files are its implementation.

pub mod command;
pub mod error;
pub mod name;
pub mod reply;

pub use command::{parse_request, Command, Password, Rejection, Request, Setting};
pub use error::{ClientError, ErrorCode};
