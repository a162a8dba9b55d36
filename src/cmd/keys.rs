//! KEY, KEYS, REVOKE: the key directory for end-to-end encrypted DMs.
//!
//! The server keeps each device's *public* X25519 key and hands it to anyone logged in; it
//! never sees a private key or a plaintext, and relays encrypted DMs as ordinary bodies.
//! Who may change a user's keys is whoever may log in as that user: for an account, the
//! sessions that gave its password; for a name without one, anyone (docs/e2e.md, "Who can
//! change a user's keys", says what that leaves). Every change is stored before its `OK`, as
//! passwords are, and announced with a `DEVICE` line to the user's DM peers and other sessions.

use std::sync::Arc;

use super::Ctx;
use crate::delivery::Line;
use crate::event::Event;
use crate::keys::{KeyChange, MAX_DEVICES_PER_USER};
use crate::protocol::{ClientError, ErrorCode};
use crate::room_name::dm_peer;
use crate::server::ChatServer;
use crate::session::Session;
use crate::store::{StoreError, Ticket};

/// `KEY <public key>`: publishes the key of this session's device.
pub fn key(ctx: &Ctx<'_>, key: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let user = &session.user;
    let Some(device) = session.device.as_deref() else {
        return Err(ClientError::new(
            ErrorCode::NotPermitted,
            "a key belongs to a device: LOGIN with device=<id> to publish one",
        ));
    };
    check_owner(session)?;
    let device: Arc<str> = Arc::from(device);
    let key: Arc<str> = Arc::from(key);
    let (change, ticket) = user
        .publish_device_key(&device, Arc::clone(&key), &*ctx.server.store)
        .ok_or_else(|| {
            ClientError::new(
                ErrorCode::NotPermitted,
                format!(
                    "{} has {MAX_DEVICES_PER_USER} device keys already; REVOKE one first",
                    user.name
                ),
            )
        })?;
    stored(ticket)?;
    if change != KeyChange::Unchanged {
        announce(ctx.server, session, Arc::clone(&device), Some(key));
    }
    ctx.reply.send(Event::OkKey {
        user: Arc::clone(&user.name),
        device,
        change,
    });
    Ok(())
}

/// `KEYS <user>`: that user's device keys, for anyone logged in (a sender needs them all).
pub fn keys(ctx: &Ctx<'_>, name: &str) -> Result<(), ClientError> {
    ctx.session()?;
    let user = ctx.server.known_user(name)?;
    ctx.reply.send(Event::Keys {
        user: Arc::clone(&user.name),
        account: user.password_hash().is_some(),
        devices: user.device_keys(),
    });
    Ok(())
}

/// `REVOKE <device>`: withdraws one of the user's own device keys (a lost phone, a device
/// given away); from then on senders stop encrypting to it.
pub fn revoke(ctx: &Ctx<'_>, device: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    check_owner(session)?;
    let user = &session.user;
    let ticket = user
        .revoke_device_key(device, &*ctx.server.store)
        .ok_or_else(|| {
            ClientError::new(
                ErrorCode::NoSuchDevice,
                format!("{} has no key for a device {device}", user.name),
            )
        })?;
    stored(Some(ticket))?;
    let device: Arc<str> = Arc::from(device);
    announce(ctx.server, session, Arc::clone(&device), None);
    ctx.reply.send(Event::OkRevoke {
        user: Arc::clone(&user.name),
        device,
    });
    Ok(())
}

/// Only sessions entitled to the name change its keys. A session that did not give the
/// password of a name that has one is closed when the name is registered, so this refuses
/// only in the moment between; it states the rule where keys change.
fn check_owner(session: &Session) -> Result<(), ClientError> {
    if session.user.password_hash().is_some() && !session.proven() {
        return Err(ClientError::new(
            ErrorCode::NotPermitted,
            "only sessions that logged in with the password may change this user's keys",
        ));
    }
    Ok(())
}

/// Waits until the change is stored: an `OK` for a security change means it survives a
/// crash.
fn stored(ticket: Option<Ticket>) -> Result<(), ClientError> {
    let Some(ticket) = ticket else {
        return Ok(());
    };
    ticket.wait().map_err(|e: StoreError| {
        ClientError::new(
            ErrorCode::StoreFailed,
            format!("the key change could not be stored ({e}); try again"),
        )
    })
}

/// `DEVICE <user> <device> added <key>` (or `revoked`) to every session of the user's DM
/// peers and to the user's other sessions: they must encrypt to the new device set. Peers
/// are found through the user's direct rooms; each direct room has one peer, so each peer
/// is told once.
fn announce(server: &ChatServer, session: &Session, device: Arc<str>, key: Option<Arc<str>>) {
    let user = &session.user;
    let line = Line::event(Event::Device {
        user: Arc::clone(&user.name),
        device,
        key,
    });
    user.deliver_except(&line, Some(session.id));
    for room in user.rooms() {
        if let Some(peer) = dm_peer(&room, &user.name).and_then(|name| server.user(name)) {
            peer.deliver(&line);
        }
    }
}
