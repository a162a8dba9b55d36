//! KEY, KEYS, REVOKE: the key directory for end-to-end encrypted DMs.
//!
//! The server keeps each device's *public* X25519 key and hands it to anyone logged in; it
//! never sees a private key or a plaintext, and relays encrypted DMs as ordinary bodies.
//! Who may change a user's keys is whoever may log in as that user: for an account, the
//! sessions that gave its password; for a name without one, anyone (docs/e2e.md, "Who can
//! change a user's keys", says what that leaves). Every change is stored before its `OK`, as
//! passwords are, and announced with a `DEVICE` line to the user's DM peers and other sessions
//! (`server/keys.rs`, which also withdraws the keys of a name that becomes an account).

use std::sync::Arc;

use super::Ctx;
use crate::event::Event;
use crate::keys::{KeyChange, KeyRefusal, MAX_DEVICES_PER_USER};
use crate::protocol::{ClientError, ErrorCode};
use crate::store::{StoreError, Ticket};
use crate::user::User;

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
    let device: Arc<str> = Arc::from(device);
    let key: Arc<str> = Arc::from(key);
    let (change, ticket) = user
        .publish_device_key(session, &device, Arc::clone(&key), &*ctx.server.store)
        .map_err(|refusal| refused(user, refusal, &device))?;
    if let Some(ticket) = ticket {
        stored(ticket)?;
    }
    if change != KeyChange::Unchanged {
        ctx.server
            .announce_device(user, Some(session.id), Arc::clone(&device), Some(key));
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
    let account = ctx.server.refresh_device_keys(&user);
    ctx.reply.send(Event::Keys {
        user: Arc::clone(&user.name),
        account: account.unwrap_or_else(|| user.password_hash().is_some()),
        devices: user.device_keys(),
    });
    Ok(())
}

/// `REVOKE <device>`: withdraws one of the user's own device keys (a lost phone, a device
/// given away); from then on senders stop encrypting to it.
pub fn revoke(ctx: &Ctx<'_>, device: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let user = &session.user;
    let ticket = user
        .revoke_device_key(session, device, &*ctx.server.store)
        .map_err(|refusal| refused(user, refusal, device))?;
    stored(ticket)?;
    let device: Arc<str> = Arc::from(device);
    ctx.server
        .announce_device(user, Some(session.id), Arc::clone(&device), None);
    ctx.reply.send(Event::OkRevoke {
        user: Arc::clone(&user.name),
        device,
    });
    Ok(())
}

fn refused(user: &User, refusal: KeyRefusal, device: &str) -> ClientError {
    match refusal {
        // A session that did not give the password of a name that has one is closed when
        // the name is registered, so this answers only in the moment between.
        KeyRefusal::NotOwner => ClientError::new(
            ErrorCode::NotPermitted,
            "only sessions that logged in with the password may change this user's keys",
        ),
        KeyRefusal::TooManyDevices => ClientError::new(
            ErrorCode::NotPermitted,
            format!(
                "{} has {MAX_DEVICES_PER_USER} device keys already; REVOKE one first",
                user.name
            ),
        ),
        KeyRefusal::NoSuchDevice => ClientError::new(
            ErrorCode::NoSuchDevice,
            format!("{} has no key for a device {device}", user.name),
        ),
    }
}

/// Waits until the change is stored: an `OK` for a security change means it survives a
/// crash.
fn stored(ticket: Ticket) -> Result<(), ClientError> {
    ticket.wait().map_err(|e: StoreError| {
        ClientError::new(
            ErrorCode::StoreFailed,
            format!("the key change could not be stored ({e}); try again"),
        )
    })
}
