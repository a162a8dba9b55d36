//! SEND and DM: posting a message, at most once per client id.
//!
//! The ordering and durability rules are `Room::publish` (seq assigned under the room's lock,
//! acknowledged and fanned out only once stored). Here: finding the room, and the client-id
//! window that turns a retry into the original's `OK` instead of a second post, and a
//! different message under a used id into `ERR cid-reused` instead of a silent drop.

use std::sync::Arc;
use std::time::Instant;

use super::Ctx;
use crate::client_ids::{fingerprint, Published};
use crate::event::Event;
use crate::message::Message;
use crate::protocol::{ClientError, ErrorCode};
use crate::room::{Posted, Room};

/// `SEND <room> <body>`.
pub fn send(
    ctx: &Ctx<'_>,
    room_name: &str,
    body: &str,
    client_id: Option<&str>,
) -> Result<(), ClientError> {
    let started = Instant::now();
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    post(ctx, &room, None, body, client_id)?;
    ctx.server
        .stats
        .send_latency
        .observe_duration(session.outbox.id, started.elapsed());
    ctx.server.trim_recent_logs();
    Ok(())
}

/// `DM <user> <body>`: posts to the two-member room `dm:<a>:<b>`, created on first use.
pub fn dm(ctx: &Ctx<'_>, to: &str, body: &str, client_id: Option<&str>) -> Result<(), ClientError> {
    let started = Instant::now();
    let session = ctx.session()?;
    let room = ctx.server.direct_room(&session.user, to)?;
    post(ctx, &room, Some(Arc::from(to)), body, client_id)?;
    ctx.server
        .stats
        .send_latency
        .observe_duration(session.outbox.id, started.elapsed());
    ctx.server.trim_recent_logs();
    Ok(())
}

/// Publishes to `room`. With a client id, a retry of an id already published gets the
/// original `OK` again and publishes nothing, and a different message under that id (another
/// room, hence another recipient, or another body) gets `ERR cid-reused` and publishes nothing either: answering it with
/// the original's `OK` would tell the client a message was posted that never was. The id's
/// lock (rank 2) is held from the check to the record, so two devices retrying one id at once
/// still post it once.
fn post(
    ctx: &Ctx<'_>,
    room: &Room,
    to: Option<Arc<str>>,
    body: &str,
    client_id: Option<&str>,
) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let ack = |message: &Message| {
        ctx.reply
            .line(Event::OkPost(published(message, to.clone())))
    };
    let Some(cid) = client_id else {
        return room.post(session, body, None, to.as_ref(), ack).map(drop);
    };
    let asked = fingerprint(&room.name, body);
    let user = &session.user;
    let mut client_ids = user.lock_client_ids();
    let now = Instant::now();
    // Recent ids are in memory; older ones (or ones from before a restart) in the store.
    let original = match client_ids.get(cid, now) {
        Some(original) => Some(original.clone()),
        None => ctx.server.store.client_id(&user.name, cid).map_err(|e| {
            ClientError::new(
                ErrorCode::StoreFailed,
                format!("checking the cid failed ({e})"),
            )
        })?,
    };
    if let Some(original) = original {
        if !original.is_retry_of(asked) {
            return Err(cid_reused(cid, &original));
        }
        session.deliver(&ctx.reply.line(Event::OkPost(original)));
        return Ok(());
    }
    let mut record = match room.post(session, body, Some((cid, asked)), to.as_ref(), ack)? {
        Posted::New(message) => published(&message, to),
        // In cluster mode the id was used on another node (the shared log checks every id):
        // the same answer as a retry found here.
        Posted::Earlier(original) => {
            if !original.is_retry_of(asked) {
                return Err(cid_reused(cid, &original));
            }
            session.deliver(&ctx.reply.line(Event::OkPost(original.clone())));
            original
        }
    };
    record.fingerprint = Some(asked);
    client_ids.record(cid, record, now);
    Ok(())
}

fn cid_reused(cid: &str, original: &Published) -> ClientError {
    ClientError::new(
        ErrorCode::CidReused,
        format!(
            "cid {cid} was used for another message (seq {} in {}); nothing was posted: \
             use a new cid for a new message",
            original.seq, original.room
        ),
    )
}

fn published(message: &Message, to: Option<Arc<str>>) -> Published {
    Published {
        room: Arc::clone(&message.room),
        seq: message.seq,
        id: message.id,
        to,
        fingerprint: None,
    }
}
