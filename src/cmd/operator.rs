//! BAN, UNBAN and `KICK <user>`: what an operator may do server-wide. The operator role is an
//! account flag set with `chatd admin user operator <name> on` and read from the store at
//! each LOGIN (see `server::bans`). Every use is audited in the log (who, what, whom), at
//! warn so it stands out beside the ordinary traffic.

use std::sync::Arc;

use super::Ctx;
use crate::delivery::CloseReason;
use crate::event::Event;
use crate::protocol::{BanSubject, ClientError, ErrorCode};
use crate::room::Room;
use crate::session::Session;
use crate::store::BanTarget;

/// The asking session, if its user is an operator.
fn operator<'a>(ctx: &'a Ctx<'_>) -> Result<&'a Arc<Session>, ClientError> {
    let session = ctx.session()?;
    if !session.user.is_operator() {
        return Err(ClientError::new(
            ErrorCode::NotPermitted,
            "BAN, UNBAN and KICK <user> are for operators (KICK <room> <user> for a room's owner)",
        ));
    }
    Ok(session)
}

fn target(subject: BanSubject) -> BanTarget {
    match subject {
        BanSubject::User(name) => BanTarget::User(Arc::from(name)),
        BanSubject::Address(ip) => BanTarget::Address(ip),
    }
}

/// `KICK <user>`: closes every session of the user with `BYE kicked` (in a cluster, on every
/// node; the count is this node's).
pub fn kick_user(ctx: &Ctx<'_>, user: &str) -> Result<(), ClientError> {
    let session = operator(ctx)?;
    let target = ctx.server.known_user(user)?;
    let sessions = ctx
        .server
        .end_sessions_everywhere(&target.name, CloseReason::Kicked);
    log::warn!(by:% = session.user.name, user = user, sessions = sessions; "operator kick");
    ctx.reply.send(Event::OkKickUser {
        user: Arc::clone(&target.name),
        sessions,
    });
    Ok(())
}

/// `BAN user <name> | address <ip> [<reason>]`: acknowledged once the ban is stored.
pub fn ban(ctx: &Ctx<'_>, subject: BanSubject, reason: &str) -> Result<(), ClientError> {
    let session = operator(ctx)?;
    let target = target(subject);
    if target == BanTarget::User(Arc::clone(&session.user.name)) {
        return Err(ClientError::new(
            ErrorCode::NotPermitted,
            "an operator cannot ban themselves",
        ));
    }
    log::warn!(by:% = session.user.name, target:% = target, reason = reason; "operator ban");
    Room::stored(vec![ctx.server.ban(target.clone(), reason)])?;
    ctx.reply.send(Event::OkBan {
        subject: target.to_string(),
    });
    Ok(())
}

/// `UNBAN user <name> | address <ip>`.
pub fn unban(ctx: &Ctx<'_>, subject: BanSubject) -> Result<(), ClientError> {
    let session = operator(ctx)?;
    let target = target(subject);
    log::warn!(by:% = session.user.name, target:% = target; "operator unban");
    Room::stored(vec![ctx.server.unban(target.clone())])?;
    ctx.reply.send(Event::OkUnban {
        subject: target.to_string(),
    });
    Ok(())
}
