//! TYPING, READ and SET: the small signals around messages. Their fan-out and ordering
//! (a receipt never before its message) are `Room::typing` and `Room::read`.

use std::sync::Arc;

use super::Ctx;
use crate::event::Event;
use crate::protocol::{ClientError, Setting};
use crate::store::Write;

/// `TYPING <room> [stop]`: forwarded to the other members, expired by the server.
pub fn typing(ctx: &Ctx<'_>, room_name: &str, typing: bool) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let ttl = ctx.server.config.typing_ttl;
    let next = room.typing(session, typing, ttl, &ctx.reply)?;
    ctx.server
        .schedule_typing(&room.name, &session.user.name, next);
    Ok(())
}

/// `READ <room> <seq>`: moves the user's read position forward.
pub fn read(ctx: &Ctx<'_>, room_name: &str, seq: u64) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    room.read(session, seq, &ctx.reply)
}

/// `SET receipts on|off`.
pub fn set(ctx: &Ctx<'_>, setting: Setting) -> Result<(), ClientError> {
    let user = &ctx.session()?.user;
    match setting {
        Setting::ShareReceipts(share) => {
            user.set_share_receipts(share);
            let name = Arc::clone(&user.name);
            ctx.server
                .store
                .write(Write::ShareReceipts { user: name, share }, None);
            let value = if share { "on" } else { "off" };
            ctx.reply.send(Event::OkSet {
                key: "receipts",
                value,
            });
        }
    }
    Ok(())
}
