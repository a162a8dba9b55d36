//! PRIVATE, INVITE, KICK: what a room's owner may do. Who counts as the owner, and the rule
//! that outsiders learn nothing (`no-such-room`), are checked in `Room` under its lock. Each
//! takes effect at once and is acknowledged only once it is stored.

use std::sync::Arc;

use super::Ctx;
use crate::event::Event;
use crate::protocol::ClientError;
use crate::room::Room;

/// `PRIVATE <room> on|off`.
pub fn private(ctx: &Ctx<'_>, room_name: &str, private: bool) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    Room::stored(room.set_private(session, private)?)?;
    let room = Arc::clone(&room.name);
    ctx.reply.send(Event::OkPrivate { room, private });
    Ok(())
}

/// `INVITE <room> <user>`.
pub fn invite(ctx: &Ctx<'_>, room_name: &str, invitee: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let invitee = ctx.server.known_user(invitee)?;
    Room::stored(room.invite(session, &invitee)?)?;
    let (room, user) = (Arc::clone(&room.name), Arc::clone(&invitee.name));
    ctx.reply.send(Event::OkInvite { room, user });
    Ok(())
}

/// `KICK <room> <user>`.
pub fn kick(ctx: &Ctx<'_>, room_name: &str, target: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let target = ctx.server.known_user(target)?;
    Room::stored(room.kick(session, &target)?)?;
    log::info!(by:% = session.user.name, room:% = room.name, user:% = target.name; "kick");
    let (room, user) = (Arc::clone(&room.name), Arc::clone(&target.name));
    ctx.reply.send(Event::OkKick { room, user });
    Ok(())
}
