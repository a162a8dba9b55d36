//! WHO, ROOMS, PING, HELP, STATS, INFO, QUIT: questions about the server, and leaving it.

use std::time::Duration;

use super::Ctx;
use crate::config::StoreConfig;
use crate::event::Event;
use crate::protocol::{ClientError, PROTOCOL_VERSION};
use crate::room::REPLY_BYTES;
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

/// `INFO`: the protocol version and the limits a client paces itself by, so none of them
/// has to be guessed from the defaults in protocol.md.
pub fn info(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    let config = &ctx.server.config;
    let store = match config.store {
        StoreConfig::Memory => "memory",
        StoreConfig::Sqlite(_) => "sqlite",
        StoreConfig::Postgres(_) => "postgres",
    };
    let millis = |d: Duration| d.as_millis().to_string();
    let mut fields = vec![
        ("proto", PROTOCOL_VERSION.to_string()),
        ("store", store.to_owned()),
        ("max-line", config.max_line.to_string()),
        ("max-body", config.max_body.to_string()),
    ];
    match &config.rate_limit {
        Some(limit) => fields.extend([
            ("rate-limit", "on".to_owned()),
            ("rate-burst", limit.burst.to_string()),
            ("rate-per-second", limit.per_second.to_string()),
            ("flood-refusals", limit.flood_refusals.to_string()),
        ]),
        None => fields.push(("rate-limit", "off".to_owned())),
    }
    fields.extend([
        ("sync-limit", config.sync_limit.to_string()),
        ("page-bytes", REPLY_BYTES.to_string()),
        ("recent", config.recent_per_room.to_string()),
        ("cid-window", config.client_id_window.to_string()),
        ("cid-ttl-ms", millis(config.client_id_ttl)),
        ("typing-ttl-ms", millis(config.typing_ttl)),
        ("presence-grace-ms", millis(config.presence_grace)),
        ("login-timeout-ms", millis(config.login_timeout)),
        ("line-timeout-ms", millis(config.line_timeout)),
    ]);
    ctx.reply.send(Event::Info(fields));
    Ok(())
}

/// `QUIT`: the writer says `BYE quit` after what is queued, and closes.
pub fn quit(ctx: &Ctx<'_>) -> Result<(), ClientError> {
    ctx.reply.quit();
    Ok(())
}
