//! LOGIN, REGISTER, PASSWORD.
//!
//! The credential rules themselves (who needs a password, the failed-login throttle) are in
//! `server/accounts.rs`; the session's arrival and the presence it announces in
//! `server/presence.rs`.

use std::sync::Arc;

use super::Ctx;
use crate::delivery::Reply;
use crate::event::Event;
use crate::logging::OrDash;
use crate::protocol::{ClientError, ErrorCode, Password};
use crate::server::ChatServer;
use crate::session::Session;

/// `LOGIN <user> [device=<id>] [password=<password>]`: checks the credentials, then attaches
/// a new session to the user, its `OK LOGIN` queued at the moment it is attached.
pub fn login(
    server: &ChatServer,
    current: &Option<Arc<Session>>,
    reply: &Reply,
    user: &str,
    device: Option<String>,
    password: Option<Password>,
) -> Result<Arc<Session>, ClientError> {
    if let Some(session) = current {
        return Err(ClientError::new(
            ErrorCode::AlreadyLoggedIn,
            format!(
                "this connection is already logged in as {}",
                session.user.name
            ),
        ));
    }
    server.admit_login(user, reply.outbox().peer_ip())?;
    let proven = server.authenticate(user, password.as_ref(), reply.outbox().peer_ip())?;
    let ok = reply.line(Event::OkLogin {
        user: Arc::from(user),
    });
    let session = server.login(reply.outbox(), user, device.as_deref(), proven, ok)?;
    log::info!(
        user = user, device:% = OrDash(device.as_deref()), conn = reply.outbox().id;
        "login"
    );
    Ok(session)
}

/// `REGISTER <password>`: gives the logged-in name a password, if it has none.
pub fn register(ctx: &Ctx<'_>, password: &Password) -> Result<(), ClientError> {
    let session = ctx.session()?;
    ctx.server.register(session, password)?;
    let user = Arc::clone(&session.user.name);
    ctx.reply.send(Event::OkRegister { user });
    Ok(())
}

/// `PASSWORD <current password> <new password> [end-sessions]`.
pub fn change_password(
    ctx: &Ctx<'_>,
    current: &Password,
    password: &Password,
    end_sessions: bool,
) -> Result<(), ClientError> {
    let session = ctx.session()?;
    ctx.server
        .change_password(session, current, password, end_sessions)?;
    let user = Arc::clone(&session.user.name);
    ctx.reply.send(Event::OkPassword { user });
    Ok(())
}
