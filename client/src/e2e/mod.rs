//! End-to-end encrypted direct messages: the server relays and stores envelopes it cannot
//! read. docs/e2e.md is the specification (the envelope byte by byte, the key directory, the
//! threat model); this module implements it with the RustCrypto and dalek crates, no
//! cryptography of its own.
//!
//! | file | role |
//! |---|---|
//! | `identity` | [`Identity`]: this device's X25519 key pair; [`DeviceKey`] and [`fingerprint`] |
//! | `envelope` | sealing a body for a set of devices, and opening one |
//!
//! [`crate::Client`] ties them to the server: `publish_key`, `device_keys`, `revoke_device`,
//! `dm_encrypted` and `decrypt`.

mod envelope;
mod identity;

use std::fmt;

pub use envelope::{envelope_len, is_envelope, open, seal, Opened, PREFIX};
pub use identity::{fingerprint, DeviceKey, DeviceList, Identity};

/// Why an encrypted DM could not be sent or read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum E2eError {
    /// The body is not an envelope (no `e2e:1:` prefix): a plaintext DM.
    NotAnEnvelope,
    /// The envelope does not parse (bad base64, truncated, unknown version).
    Malformed(String),
    /// The envelope has no wrapped key for this device: it was sent before this device's key
    /// was published, or after it was revoked.
    NotForThisDevice,
    /// Authentication failed: the envelope was changed after it was made, or was not made by
    /// the device it names.
    Tampered,
    /// The envelope's sender key is not a key the directory lists for the sender's device
    /// (revoked since, or the envelope claims another device's identity).
    UnknownSender { user: String, device: String },
    /// The envelope names a sender other than the message's.
    WrongSender { claimed: String, actual: String },
    /// A user has no device keys, so nobody could read what is sent to them.
    NoKeys { user: String },
    /// This device's key is not (or no longer) in the directory as it is here: publish it.
    NotPublished,
    /// The envelope would exceed the server's body limit (`max-body`).
    TooLarge {
        size: usize,
        max: usize,
        devices: usize,
    },
    /// A body the protocol cannot carry, or that a terminal should not show (control
    /// characters): refused before sending, and after decrypting.
    BadPlaintext,
    /// A key that X25519 rejects (a low-order point).
    BadKey { user: String, device: String },
}

impl fmt::Display for E2eError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            E2eError::NotAnEnvelope => write!(f, "not an encrypted message"),
            E2eError::Malformed(why) => write!(f, "malformed envelope: {why}"),
            E2eError::NotForThisDevice => {
                write!(f, "the message was not encrypted for this device")
            }
            E2eError::Tampered => write!(f, "the envelope failed authentication (tampered)"),
            E2eError::UnknownSender { user, device } => write!(
                f,
                "the sender key is not {user}'s {device} in the key directory"
            ),
            E2eError::WrongSender { claimed, actual } => {
                write!(f, "the envelope claims {claimed} but {actual} sent it")
            }
            E2eError::NoKeys { user } => write!(f, "{user} has published no device keys"),
            E2eError::NotPublished => write!(
                f,
                "this device's key is not in the directory: publish it first"
            ),
            E2eError::TooLarge { size, max, devices } => write!(
                f,
                "the encrypted message would be {size} bytes for {devices} devices; the \
                 server takes at most {max}: send a shorter message"
            ),
            E2eError::BadPlaintext => write!(
                f,
                "a message body cannot hold control characters other than tab"
            ),
            E2eError::BadKey { user, device } => {
                write!(f, "{user}'s {device} has an unusable key")
            }
        }
    }
}

impl std::error::Error for E2eError {}

/// What the server also refuses in a body: control characters other than tab, and the line
/// and paragraph separators. Checked on the plaintext, which the server cannot see.
pub(crate) fn printable_body(body: &str) -> bool {
    !body
        .chars()
        .any(|c| c.is_control() && c != '\t' || matches!(c, '\u{2028}' | '\u{2029}'))
}
