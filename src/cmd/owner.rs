//! PRIVATE, INVITE, KICK: what a room's owner may do. Who counts as the owner, and the rule
//! that outsiders learn nothing (`no-such-room`), are checked in `Room` under its lock.

use super::Ctx;
use crate::protocol::ClientError;

/// `PRIVATE <room> on|off`.
pub fn private(ctx: &Ctx<'_>, room_name: &str, private: bool) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    room.set_private(session, private, &ctx.reply)
}

/// `INVITE <room> <user>`.
pub fn invite(ctx: &Ctx<'_>, room_name: &str, invitee: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let invitee = ctx.server.known_user(invitee)?;
    room.invite(session, &invitee, &ctx.reply)
}

/// `KICK <room> <user>`.
pub fn kick(ctx: &Ctx<'_>, room_name: &str, target: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let target = ctx.server.known_user(target)?;
    room.kick(session, &target, &ctx.reply)
}
