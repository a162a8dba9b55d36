//! WHO, ROOMS, PING, HELP, STATS, QUIT: questions about the server, and leaving it.

use super::Ctx;
use crate::delivery::CloseReason;
use crate::event::Event;
use crate::protocol::ClientError;
use crate::stats::Stats;

/// `WHO <room>`: the members, each online or offline since when.
pub fn who(ctx: &Ctx<'_>, room_name: &str) -> Result<(), ClientError> {
    let session = ctx.session()?;
    let room = ctx.server.visible_room(room_name, &session.user)?;
    let members = room.who();
    let room = room.name.clone();
    ctx.reply.send(Event::Who { room, members });
    Ok(())
}

/// `ROOMS`: the user's rooms with seq, epoch, members and unread counts.
pub fn rooms(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    let rooms = ctx.server.rooms_of(&ctx.session()?.user);
    ctx.reply.send(Event::Rooms(rooms));
    Ok(())
}

/// `PING [<token>]`.
pub fn ping(ctx: &Ctx<'_>, token: Option<String>) -> Result<(), ClientError> {
    let token = token.map(String::into_boxed_str);
    ctx.reply.send(Event::Pong { token });
    Ok(())
}

/// `HELP`: one line per command, from the verb table.
pub fn help(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    ctx.reply.send(Event::Help);
    Ok(())
}

/// `STATS`: counters for operators and benchmarks.
pub fn stats(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    let server = ctx.server;
    let stats = &server.stats;
    let fields = vec![
        ("sessions", Stats::get(&stats.sessions)),
        ("connections", Stats::get(&stats.connections)),
        ("users", server.user_count() as u64),
        ("rooms", server.room_count() as u64),
        ("messages", Stats::get(&stats.messages)),
        ("deliveries", Stats::get(&stats.deliveries)),
        ("slow_consumers", Stats::get(&stats.slow_consumers)),
        ("shed", Stats::get(&stats.shed)),
        ("refused", Stats::get(&stats.refused)),
        ("rate_limited", Stats::get(&stats.rate_limited)),
        ("flooding", Stats::get(&stats.flooding)),
    ];
    ctx.reply.send(Event::Stats(fields));
    Ok(())
}

/// `QUIT`: the writer says `BYE quit` after what is queued, and closes.
pub fn quit(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    ctx.reply.outbox().close(CloseReason::Quit);
    Ok(())
}
