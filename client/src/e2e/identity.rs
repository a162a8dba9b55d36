//! A device's identity key pair, the directory's view of a device, and fingerprints.

use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// This device's long-term X25519 key pair. The secret never leaves the device: persist it
/// with [`Identity::secret_bytes`] in the device's own storage, never on the server.
#[derive(Clone)]
pub struct Identity {
    pub user: String,
    pub device: String,
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for Identity {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({}/{} {})",
            self.user,
            self.device,
            self.public_hex()
        )
    }
}

impl Identity {
    /// A new key pair from the operating system's random source.
    pub fn generate(user: &str, device: &str) -> Identity {
        Identity::from_secret_bytes(user, device, StaticSecret::random().to_bytes())
    }

    /// The key pair whose secret is `secret` (as saved by [`Identity::secret_bytes`]).
    pub fn from_secret_bytes(user: &str, device: &str, secret: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Identity {
            user: user.to_ascii_lowercase(),
            device: device.to_ascii_lowercase(),
            secret,
            public,
        }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The public key as `KEY` sends it: 64 lower-case hex digits.
    pub fn public_hex(&self) -> String {
        hex(&self.public.to_bytes())
    }

    /// This device's fingerprint, to compare out of band with what peers see.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.user, &self.device, &self.public.to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

/// One device's key as the directory (`KEYS`) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub user: String,
    pub device: String,
    pub key: [u8; 32],
    /// When the key was published (RFC 3339, as the server sent it).
    pub added: String,
}

impl DeviceKey {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.user, &self.device, &self.key)
    }

    /// `KEY <user> <device> <hex> added=<time>`: one line of a KEYS reply.
    pub(crate) fn parse(line: &str) -> Option<DeviceKey> {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["KEY", user, device, key, added] = fields[..] else {
            return None;
        };
        Some(DeviceKey {
            user: user.to_owned(),
            device: device.to_owned(),
            key: parse_hex_key(key)?,
            added: added.strip_prefix("added=")?.to_owned(),
        })
    }
}

/// A user's devices, from `KEYS <user>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    pub user: String,
    /// Whether the name has a password. Without one, anyone who logs in as the name can
    /// change these keys, so they prove nothing until their fingerprints are compared.
    pub account: bool,
    pub devices: Vec<DeviceKey>,
}

impl DeviceList {
    pub fn device(&self, device: &str) -> Option<&DeviceKey> {
        self.devices.iter().find(|d| d.device == device)
    }
}

/// A device's fingerprint: the first 16 bytes of
/// SHA-256("chatd-e2e/1 fingerprint" 0x00 user 0x00 device 0x00 key), as 8 groups of 4 hex
/// digits. It names the user and device too, so one key cannot pass for another device's.
pub fn fingerprint(user: &str, device: &str, key: &[u8; 32]) -> String {
    let mut hash = Sha256::new();
    for part in [
        b"chatd-e2e/1 fingerprint".as_slice(),
        user.as_bytes(),
        device.as_bytes(),
    ] {
        hash.update(part);
        hash.update([0u8]);
    }
    hash.update(key);
    let digest = hash.finalize();
    let digits = hex(&digest[..16]);
    digits
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}
