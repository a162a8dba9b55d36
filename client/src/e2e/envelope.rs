//! The envelope: one DM body, readable by a chosen set of devices and nobody else.
//! docs/e2e.md, "Envelope", is the byte-by-byte specification; this file follows it.
//!
//! A fresh random message key encrypts the body once (XChaCha20-Poly1305, the whole header as
//! associated data). For each recipient device the message key is wrapped under a key derived
//! with HKDF-SHA-256 from two X25519 agreements with the device's public key: one with a fresh
//! ephemeral key (so each message's wrapping keys are new) and one with the sender device's
//! identity key (so only that device, or the recipient, could have made the wrapping: it
//! authenticates the sender device, whose key the reader checks against the directory).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};

use super::identity::{DeviceKey, Identity};
use super::{printable_body, E2eError};

/// Every envelope body starts with this: `e2e:1:` then standard base64 (with padding) of the
/// binary envelope. Printable ASCII, so a client that cannot decrypt shows it harmlessly.
pub const PREFIX: &str = "e2e:1:";
const VERSION: u8 = 1;
/// HKDF's `info` starts with this, then the ephemeral, sender and recipient public keys.
const WRAP_INFO: &[u8] = b"chatd-e2e/1 wrap";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// A wrapped message key: 32 bytes of key and a 16-byte tag.
const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
/// The wrapping key is used once (it depends on the message's fresh ephemeral key), so the
/// wrapping can use a fixed nonce.
const WRAP_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];
/// Recipients are counted in one byte.
const MAX_RECIPIENTS: usize = 255;

/// A decrypted envelope: who says they sent it, with which key, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub sender_user: String,
    pub sender_device: String,
    /// The sender device's identity key. The caller must check that the directory lists it
    /// for `sender_user`'s `sender_device` (and that the message came from `sender_user`):
    /// the envelope proves it was made with this key, not whose key it is.
    pub sender_key: [u8; 32],
    /// Every device the envelope was made for, as `(user, device)`.
    pub recipients: Vec<(String, String)>,
    pub body: String,
}

/// Whether a body is an envelope (by its prefix; it may still fail to open).
pub fn is_envelope(body: &str) -> bool {
    body.starts_with(PREFIX)
}

/// The length in bytes of the body [`seal`] would make: the prefix plus the base64 of the
/// header, one entry per recipient, and the ciphertext. Lets a sender check the server's
/// body limit before encrypting.
pub fn envelope_len(sender: &Identity, recipients: &[DeviceKey], plaintext_len: usize) -> usize {
    let header = 1
        + 1
        + sender.user.len()
        + 1
        + sender.device.len()
        + 2 * KEY_LEN
        + NONCE_LEN
        + 1
        + recipients
            .iter()
            .map(|r| 2 + r.user.len() + r.device.len() + WRAPPED_LEN)
            .sum::<usize>();
    let binary = header + plaintext_len + TAG_LEN;
    PREFIX.len() + binary.div_ceil(3) * 4
}

/// Encrypts `body` for `recipients` (every device of both users, the sender's own included,
/// so each can read it later from history).
pub fn seal(sender: &Identity, recipients: &[DeviceKey], body: &str) -> Result<String, E2eError> {
    if !printable_body(body) {
        return Err(E2eError::BadPlaintext);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(E2eError::Malformed(format!(
            "at most {MAX_RECIPIENTS} recipient devices"
        )));
    }
    let ephemeral = StaticSecret::random();
    let ephemeral_public = PublicKey::from(&ephemeral);
    let message_key = random::<KEY_LEN>();
    let nonce = random::<NONCE_LEN>();

    let mut header = vec![VERSION];
    put_name(&mut header, &sender.user)?;
    put_name(&mut header, &sender.device)?;
    header.extend_from_slice(&sender.public_bytes());
    header.extend_from_slice(ephemeral_public.as_bytes());
    header.extend_from_slice(&nonce);
    header.push(recipients.len() as u8);
    for recipient in recipients {
        let their = PublicKey::from(recipient.key);
        let bad_key = || E2eError::BadKey {
            user: recipient.user.clone(),
            device: recipient.device.clone(),
        };
        let by_ephemeral = contributory(ephemeral.diffie_hellman(&their)).ok_or_else(bad_key)?;
        let by_sender = contributory(sender.secret().diffie_hellman(&their)).ok_or_else(bad_key)?;
        let wrap_key = wrapping_key(
            &by_ephemeral,
            &by_sender,
            ephemeral_public.as_bytes(),
            &sender.public_bytes(),
            &recipient.key,
        );
        let wrapped = XChaCha20Poly1305::new(&wrap_key.into())
            .encrypt(&XNonce::from(WRAP_NONCE), message_key.as_slice())
            .expect("encrypting in memory cannot fail");
        put_name(&mut header, &recipient.user)?;
        put_name(&mut header, &recipient.device)?;
        header.extend_from_slice(&wrapped);
    }
    let ciphertext = XChaCha20Poly1305::new(&message_key.into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: body.as_bytes(),
                aad: &header,
            },
        )
        .expect("encrypting in memory cannot fail");
    header.extend_from_slice(&ciphertext);
    Ok(format!("{PREFIX}{}", BASE64.encode(&header)))
}

/// Decrypts an envelope made for `me`. Checks everything the envelope itself can prove (its
/// integrity, and that it was made with the sender key it carries); the caller checks that
/// key against the directory.
pub fn open(me: &Identity, body: &str) -> Result<Opened, E2eError> {
    let encoded = body.strip_prefix(PREFIX).ok_or(E2eError::NotAnEnvelope)?;
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| E2eError::Malformed(format!("base64: {e}")))?;
    let mut reader = Reader {
        bytes: &bytes,
        at: 0,
    };
    let version = reader.byte()?;
    if version != VERSION {
        return Err(E2eError::Malformed(format!("unknown version {version}")));
    }
    let sender_user = reader.name()?;
    let sender_device = reader.name()?;
    let sender_key: [u8; 32] = reader.array()?;
    let ephemeral_key: [u8; 32] = reader.array()?;
    let nonce: [u8; NONCE_LEN] = reader.array()?;
    let count = reader.byte()?;
    let mut recipients = Vec::with_capacity(count as usize);
    let mut mine = None;
    for _ in 0..count {
        let user = reader.name()?;
        let device = reader.name()?;
        let wrapped: [u8; WRAPPED_LEN] = reader.array()?;
        if mine.is_none() && user == me.user && device == me.device {
            mine = Some(wrapped);
        }
        recipients.push((user, device));
    }
    let (header, ciphertext) = bytes.split_at(reader.at);
    if ciphertext.len() < TAG_LEN {
        return Err(E2eError::Malformed("no ciphertext".into()));
    }
    let wrapped = mine.ok_or(E2eError::NotForThisDevice)?;

    let ephemeral_public = PublicKey::from(ephemeral_key);
    let sender_public = PublicKey::from(sender_key);
    let by_ephemeral =
        contributory(me.secret().diffie_hellman(&ephemeral_public)).ok_or(E2eError::Tampered)?;
    let by_sender =
        contributory(me.secret().diffie_hellman(&sender_public)).ok_or(E2eError::Tampered)?;
    let wrap_key = wrapping_key(
        &by_ephemeral,
        &by_sender,
        &ephemeral_key,
        &sender_key,
        &me.public_bytes(),
    );
    let message_key = XChaCha20Poly1305::new(&wrap_key.into())
        .decrypt(&XNonce::from(WRAP_NONCE), wrapped.as_slice())
        .map_err(|_| E2eError::Tampered)?;
    let message_key: [u8; KEY_LEN] = message_key
        .try_into()
        .map_err(|_| E2eError::Malformed("wrapped key length".into()))?;
    let plaintext = XChaCha20Poly1305::new(&message_key.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .map_err(|_| E2eError::Tampered)?;
    let body = String::from_utf8(plaintext).map_err(|_| E2eError::BadPlaintext)?;
    if !printable_body(&body) {
        return Err(E2eError::BadPlaintext);
    }
    Ok(Opened {
        sender_user,
        sender_device,
        sender_key,
        recipients,
        body,
    })
}

/// HKDF-SHA-256, no salt, over both agreements; `info` names the three keys involved, so a
/// wrapping key is bound to this message, this sender device and this recipient device.
fn wrapping_key(
    by_ephemeral: &SharedSecret,
    by_sender: &SharedSecret,
    ephemeral: &[u8; 32],
    sender: &[u8; 32],
    recipient: &[u8; 32],
) -> [u8; KEY_LEN] {
    let mut secret = [0u8; 64];
    secret[..32].copy_from_slice(by_ephemeral.as_bytes());
    secret[32..].copy_from_slice(by_sender.as_bytes());
    let mut info = Vec::with_capacity(WRAP_INFO.len() + 96);
    info.extend_from_slice(WRAP_INFO);
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(sender);
    info.extend_from_slice(recipient);
    let mut key = [0u8; KEY_LEN];
    Hkdf::<Sha256>::new(None, &secret)
        .expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    key
}

/// A low-order public key makes X25519 output all zeros whatever the secret: refused, or
/// anyone could compute the "shared" secret.
fn contributory(shared: SharedSecret) -> Option<SharedSecret> {
    shared.was_contributory().then_some(shared)
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A name as one length byte and its bytes (names are at most 32 ASCII characters).
fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), E2eError> {
    let len = u8::try_from(name.len())
        .map_err(|_| E2eError::Malformed(format!("name too long: {name}")))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], E2eError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| E2eError::Malformed("truncated".into()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, E2eError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], E2eError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn name(&mut self) -> Result<String, E2eError> {
        let len = self.byte()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| E2eError::Malformed("a name is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(identity: &Identity) -> DeviceKey {
        DeviceKey {
            user: identity.user.clone(),
            device: identity.device.clone(),
            key: identity.public_bytes(),
            added: String::new(),
        }
    }

    /// Every listed device opens the envelope; one not listed cannot; the length is as
    /// predicted.
    #[test]
    fn every_recipient_and_only_they_can_open() {
        let alice = Identity::generate("alice", "laptop");
        let bob = Identity::generate("bob", "phone");
        let eve = Identity::generate("eve", "laptop");
        let recipients = [device(&alice), device(&bob)];
        let body = "meet at noon \t ünïcode";
        let sealed = seal(&alice, &recipients, body).unwrap();
        assert!(sealed.is_ascii() && is_envelope(&sealed));
        assert_eq!(sealed.len(), envelope_len(&alice, &recipients, body.len()));
        for me in [&alice, &bob] {
            let opened = open(me, &sealed).unwrap();
            assert_eq!(opened.body, body);
            assert_eq!(opened.sender_key, alice.public_bytes());
            assert_eq!(
                (opened.sender_user.as_str(), opened.sender_device.as_str()),
                ("alice", "laptop")
            );
        }
        assert_eq!(open(&eve, &sealed), Err(E2eError::NotForThisDevice));
    }

    /// Flipping any single byte of the binary envelope is detected (or it no longer parses).
    #[test]
    fn every_flipped_byte_is_detected() {
        let alice = Identity::generate("alice", "laptop");
        let bob = Identity::generate("bob", "phone");
        let sealed = seal(&alice, &[device(&alice), device(&bob)], "hi").unwrap();
        let bytes = BASE64.decode(&sealed[PREFIX.len()..]).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let body = format!("{PREFIX}{}", BASE64.encode(&changed));
            assert!(open(&bob, &body).is_err(), "byte {i} changed unnoticed");
        }
    }

    /// A device cannot make an envelope that passes as another device's: the wrapping
    /// depends on the sender's secret, so swapping in another sender key fails.
    #[test]
    fn a_forged_sender_key_fails() {
        let alice = Identity::generate("alice", "laptop");
        let mallory = Identity::generate("alice", "laptop");
        let bob = Identity::generate("bob", "phone");
        let sealed = seal(&mallory, &[device(&bob)], "it is me, alice").unwrap();
        let mut bytes = BASE64.decode(&sealed[PREFIX.len()..]).unwrap();
        let at = 1 + 1 + 5 + 1 + 6;
        bytes[at..at + 32].copy_from_slice(&alice.public_bytes());
        let body = format!("{PREFIX}{}", BASE64.encode(&bytes));
        assert_eq!(open(&bob, &body), Err(E2eError::Tampered));
    }

    /// Bodies a terminal should not show are refused before encryption.
    #[test]
    fn control_characters_are_refused() {
        let alice = Identity::generate("alice", "laptop");
        let sealed = seal(&alice, &[device(&alice)], "\u{1b}[2J");
        assert_eq!(sealed, Err(E2eError::BadPlaintext));
        assert_eq!(open(&alice, "hello"), Err(E2eError::NotAnEnvelope));
        assert!(matches!(
            open(&alice, "e2e:1:!!"),
            Err(E2eError::Malformed(_))
        ));
    }
}
