//! JOIN and LEAVE. The ordering rules (the OK before every message settled after the join,
//! JOINED and LEFT to every member) are `Room::join` and `Room::leave`.

use super::Ctx;
use crate::protocol::{ClientError, ErrorCode};
use crate::room::JoinLimits;
use crate::room_name::{is_dm_room, RoomKind};

/// `JOIN <room>`: joins, creating a public room (owned by the joiner) on first use.
pub fn join(ctx: &Ctx<'_>, room_name: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let user = &session.user;
    let room = if is_dm_room(room_name) {
        // Direct rooms come into being with their first DM; JOIN only re-confirms one.
        ctx.server.visible_room(room_name, user)?
    } else {
        // A JOIN that creates a room spends the creation quota; so does one that meets an
        // invite-only room it may not see, so the quota cannot tell the two apart either.
        match ctx.server.room(room_name) {
            Some(room) if room.visible_to(&user.name) => room,
            existing => {
                ctx.server.admit_new_room(&user.name)?;
                existing.unwrap_or_else(|| {
                    ctx.server
                        .room_or_create(room_name, RoomKind::Public, Some(&user.name))
                })
            }
        }
    };
    let limits = JoinLimits {
        max_members: ctx.server.config.max_members_per_room,
        max_rooms: ctx.server.config.max_rooms_per_user,
    };
    room.join(session, &limits, &ctx.reply)
}

/// `LEAVE <room>`. A direct conversation cannot be left.
pub fn leave(ctx: &Ctx<'_>, room_name: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    if room.kind == RoomKind::Direct {
        return Err(ClientError::new(
            ErrorCode::NotPermitted,
            "a direct conversation cannot be left",
        ));
    }
    room.leave(session, &ctx.reply)
}
