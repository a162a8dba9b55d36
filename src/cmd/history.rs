//! HISTORY and SYNC: reading a room's past. Only members may. The replay's meeting with the
//! live stream (no gap, no reordering) is `Room::sync`.

use super::Ctx;
use crate::event::Event;
use crate::protocol::ClientError;

/// `HISTORY <room> [<limit>] [before=<seq>]`: a page of messages, oldest first.
pub fn history(
    ctx: &Ctx<'_>,
    room_name: &str,
    limit: usize,
    before: Option<u64>,
) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.member_room(&session.user, room_name)?;
    // One reply carries at most as many messages as one SYNC page.
    let limit = limit.min(ctx.server.config.sync_limit.max(1));
    let page = room.history(limit, before)?;
    ctx.reply.send(Event::History(page));
    Ok(())
}

/// `SYNC <room> <after_seq> [epoch=<epoch>]`: everything after the client's last seq.
pub fn sync(
    ctx: &Ctx<'_>,
    room_name: &str,
    after: u64,
    epoch: Option<&str>,
) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.member_room(&session.user, room_name)?;
    let limit = ctx.server.config.sync_limit;
    room.sync(session, after, epoch, limit, &ctx.reply)
}
