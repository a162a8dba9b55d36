//! The key directory and encrypted DMs on a [`Client`]: the server side of [`crate::e2e`].
//!
//! Sending: fetch (or reuse) the device lists of both users, check this device is published
//! as it is here, check the envelope fits the server's body limit, seal, and DM the envelope
//! like any body (same cid, same retry). Reading: open the envelope with this device's
//! identity, then check the sender key against the directory's entry for the device the
//! envelope names, and the envelope's sender against the message's.

use crate::client::{check_word, malformed};
use crate::e2e::{envelope_len, open, seal, DeviceKey, DeviceList, E2eError, Identity};
use crate::{Client, Error, Message, Sent};

impl Client {
    /// `KEY <public key>`: publishes this device's identity key. Returns `added`, `replaced`
    /// or `unchanged`. The client must be logged in as the identity's user and device.
    pub fn publish_key(&mut self, identity: &Identity) -> Result<String, Error> {
        self.check_identity(identity)?;
        let reply = self.call(
            &format!("KEY {}", identity.public_hex()),
            self.config.connect_timeout,
        )?;
        self.device_lists.remove(&identity.user);
        reply
            .fields
            .get(2)
            .cloned()
            .ok_or_else(|| malformed("OK KEY", &reply.fields))
    }

    /// `KEYS <user>`: the user's device keys, fetched now (and cached for encrypted DMs).
    pub fn device_keys(&mut self, user: &str) -> Result<DeviceList, Error> {
        check_word(user)?;
        let reply = self.call(&format!("KEYS {user}"), self.config.connect_timeout)?;
        let user = reply
            .fields
            .first()
            .cloned()
            .ok_or_else(|| malformed("OK KEYS", &reply.fields))?;
        let account = reply.fields.iter().any(|f| f == "account=yes");
        let devices: Vec<DeviceKey> = reply
            .lines
            .iter()
            .filter_map(|line| DeviceKey::parse(line))
            .filter(|device| device.user == user)
            .collect();
        let list = DeviceList {
            user: user.clone(),
            account,
            devices,
        };
        self.device_lists.insert(user, list.clone());
        Ok(list)
    }

    /// `REVOKE <device>`: withdraws one of this user's device keys; encrypted DMs sent after
    /// it are not readable by that device.
    pub fn revoke_device(&mut self, device: &str) -> Result<(), Error> {
        check_word(device)?;
        self.call(&format!("REVOKE {device}"), self.config.connect_timeout)?;
        let user = self.config.user.to_ascii_lowercase();
        self.device_lists.remove(&user);
        Ok(())
    }

    /// Sends `body` to `user` as an end-to-end encrypted DM, readable by every device the
    /// directory lists for either user (this user's other devices included) and by nobody
    /// else. Refused before anything is sent if this device is not published as `identity`,
    /// if `user` has no devices, or if the envelope would exceed the server's body limit.
    pub fn dm_encrypted(
        &mut self,
        identity: &Identity,
        user: &str,
        body: &str,
    ) -> Result<Sent, Error> {
        self.check_identity(identity)?;
        check_word(user)?;
        let user = user.to_ascii_lowercase();
        let mine = self.cached_device_keys(&identity.user)?;
        match mine.device(&identity.device) {
            Some(me) if me.key == identity.public_bytes() => {}
            _ => return Err(E2eError::NotPublished.into()),
        }
        let theirs = self.cached_device_keys(&user)?;
        if theirs.devices.is_empty() {
            return Err(E2eError::NoKeys { user }.into());
        }
        let recipients: Vec<DeviceKey> = mine
            .devices
            .iter()
            .chain(&theirs.devices)
            .cloned()
            .collect();
        let size = envelope_len(identity, &recipients, body.len());
        if size > self.max_body {
            return Err(E2eError::TooLarge {
                size,
                max: self.max_body,
                devices: recipients.len(),
            }
            .into());
        }
        let envelope = seal(identity, &recipients, body)?;
        self.dm(&user, &envelope)
    }

    /// The plaintext of an encrypted DM: opened with this device's identity, and checked
    /// against the key directory (the sender key must be the one listed for the device the
    /// envelope names, and the envelope's sender the message's). A tampered envelope, one
    /// made before this device was published (or after it was revoked), or a sender key the
    /// directory does not list, is an error: never a wrong plaintext.
    pub fn decrypt(&mut self, identity: &Identity, message: &Message) -> Result<String, Error> {
        let opened = open(identity, &message.body)?;
        if opened.sender_user != message.sender {
            return Err(E2eError::WrongSender {
                claimed: opened.sender_user,
                actual: message.sender.clone(),
            }
            .into());
        }
        let listed = |list: &DeviceList| {
            list.device(&opened.sender_device)
                .is_some_and(|device| device.key == opened.sender_key)
        };
        // The cached list may predate the sender's newest device: look once more before
        // refusing.
        if !listed(&self.cached_device_keys(&message.sender)?)
            && !listed(&self.device_keys(&message.sender)?)
        {
            return Err(E2eError::UnknownSender {
                user: opened.sender_user,
                device: opened.sender_device,
            }
            .into());
        }
        Ok(opened.body)
    }

    /// The server's body limit, as INFO gave it.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    fn cached_device_keys(&mut self, user: &str) -> Result<DeviceList, Error> {
        match self.device_lists.get(user) {
            Some(list) => Ok(list.clone()),
            None => self.device_keys(user),
        }
    }

    fn check_identity(&self, identity: &Identity) -> Result<(), Error> {
        let user = self.config.user.to_ascii_lowercase();
        let device = self.config.device.as_deref().map(str::to_ascii_lowercase);
        if identity.user != user || device.as_deref() != Some(identity.device.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "the identity is {}'s {}, but this client logs in as {user} device={}",
                identity.user,
                identity.device,
                device.as_deref().unwrap_or("(none)")
            )));
        }
        Ok(())
    }
}
