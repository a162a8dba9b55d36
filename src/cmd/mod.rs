//! Carrying out client commands: one file per family, one function per command.
//!
//! The reader thread parses a line into a [`Request`] (`protocol::command`, whose verb table
//! is the single list of commands) and hands it to its connection's [`Client`]. `Client`
//! checks login once, for every command, from the table; then `dispatch` sends the command
//! to its home:
//!
//! | file | commands |
//! |---|---|
//! | `account` | LOGIN, REGISTER, PASSWORD |
//! | `membership` | JOIN, LEAVE |
//! | `post` | SEND, DM (client ids, idempotent retries) |
//! | `history` | HISTORY, SYNC |
//! | `owner` | PRIVATE, INVITE, KICK `<room> <user>` |
//! | `operator` | BAN, UNBAN, KICK `<user>` (server-wide, operators only) |
//! | `signals` | TYPING, READ, SET |
//! | `info` | WHO, ROOMS, PING, HELP, STATS, INFO, QUIT |
//! | `keys` | KEY, KEYS, REVOKE (the key directory for end-to-end encrypted DMs) |
//!
//! A command finds its users and rooms through `ChatServer`, asks them to act, and answers
//! through its [`Reply`] context. "How does JOIN work" is `membership.rs` plus `Room::join`.
//! A refused command returns a `ClientError`, which becomes one `ERR` line with the label.

mod account;
mod history;
mod info;
mod keys;
mod membership;
mod operator;
mod owner;
mod post;
mod signals;

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{Outbox, Reply};
use crate::event::Event;
use crate::protocol::{ClientError, Command, ErrorCode, Request};
use crate::server::ChatServer;
use crate::session::Session;

/// One connection as its reader thread sees it: the server, the connection's outbox, and its
/// session once LOGIN succeeded.
pub struct Client {
    server: Arc<ChatServer>,
    outbox: Arc<Outbox>,
    /// `None` until LOGIN succeeds.
    session: Option<Arc<Session>>,
    /// How long a direct reply may wait for room in this connection's own queue
    /// (`--write-timeout`).
    patience: Duration,
}

/// What a command's handler gets: where to find things, who asked, where to answer.
pub struct Ctx<'a> {
    pub server: &'a ChatServer,
    session: Option<&'a Arc<Session>>,
    pub reply: Reply,
}

impl Ctx<'_> {
    /// The session that sent the command. The verb table's login check ran before dispatch,
    /// so for a command that needs login this is always there.
    pub fn session(&self) -> Result<&Arc<Session>, ClientError> {
        self.session.ok_or_else(not_logged_in)
    }
}

impl Client {
    pub fn new(server: Arc<ChatServer>, outbox: Arc<Outbox>) -> Client {
        let patience = server.config.write_timeout;
        Client {
            server,
            outbox,
            session: None,
            patience,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    /// The reply context for a request with `label`.
    fn reply_to(&self, label: Option<&str>) -> Reply {
        Reply::new(Arc::clone(&self.outbox), label, self.patience)
    }

    /// The first line of the connection.
    pub fn greet(&self) {
        self.reply_to(None).send(Event::Greeting);
    }

    /// Answers a line that was refused before it became a command (unparseable,
    /// rate-limited, too long).
    pub fn refuse(&self, label: Option<&str>, error: ClientError) {
        self.reply_to(label).error(error);
    }

    /// Carries out one request; a refused command becomes an `ERR` reply.
    pub fn execute(&mut self, request: Request) {
        let reply = self.reply_to(request.label.as_deref());
        if self.session.is_none() && request.needs_login {
            return reply.error(not_logged_in());
        }
        if let Command::Login {
            user,
            device,
            password,
        } = request.command
        {
            let login =
                account::login(&self.server, &self.session, &reply, &user, device, password);
            match login {
                Ok(session) => self.session = Some(session),
                Err(error) => reply.error(error),
            }
            return;
        }
        let ctx = Ctx {
            server: &self.server,
            session: self.session.as_ref(),
            reply,
        };
        if let Err(error) = dispatch(&ctx, request.client_id.as_deref(), request.command) {
            ctx.reply.error(error);
        }
    }

    /// Carries out one command for a front end that words its own refusals (IRC answers with
    /// numerics that name the command's target): the refusal is returned, not sent. LOGIN
    /// works here too, and makes the connection's session.
    pub fn run(&mut self, label: Option<&str>, command: Command) -> Result<(), ClientError> {
        let reply = self.reply_to(label);
        if let Command::Login {
            user,
            device,
            password,
        } = command
        {
            let session =
                account::login(&self.server, &self.session, &reply, &user, device, password)?;
            self.session = Some(session);
            return Ok(());
        }
        if self.session.is_none() {
            return Err(not_logged_in());
        }
        let ctx = Ctx {
            server: &self.server,
            session: self.session.as_ref(),
            reply,
        };
        dispatch(&ctx, None, command)
    }

    pub fn server(&self) -> &Arc<ChatServer> {
        &self.server
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }

    /// Queues a line the front end made itself, now, from the reader thread.
    pub fn send_line(&self, line: Arc<crate::delivery::Line>) {
        self.outbox.reply(line, self.patience);
    }

    /// The connection is over: the session leaves its user (and maybe presence changes).
    pub fn end(self) {
        if let Some(session) = &self.session {
            log::info!(user:% = session.user.name, conn = self.outbox.id; "logout");
            self.server.logout(session);
        }
    }
}

/// Sends each command to its home. LOGIN is handled by [`Client::execute`], since it is the
/// one command that changes the connection itself.
fn dispatch(ctx: &Ctx<'_>, client_id: Option<&str>, command: Command) -> Result<(), ClientError> {
    match command {
        Command::Login { .. } => Err(ClientError::new(
            ErrorCode::AlreadyLoggedIn,
            "LOGIN is carried out by the connection",
        )),
        Command::Register { password } => account::register(ctx, &password),
        Command::ChangePassword {
            current,
            password,
            end_sessions,
        } => account::change_password(ctx, &current, &password, end_sessions),
        Command::Join { room } => membership::join(ctx, &room),
        Command::Leave { room } => membership::leave(ctx, &room),
        Command::Send { room, body } => post::send(ctx, &room, &body, client_id),
        Command::Dm { user, body } => post::dm(ctx, &user, &body, client_id),
        Command::History {
            room,
            limit,
            before,
        } => history::history(ctx, &room, limit, before),
        Command::Sync { room, after, epoch } => history::sync(ctx, &room, after, epoch.as_deref()),
        Command::Private { room, private } => owner::private(ctx, &room, private),
        Command::Invite { room, user } => owner::invite(ctx, &room, &user),
        Command::Kick { room, user } => owner::kick(ctx, &room, &user),
        Command::KickUser { user } => operator::kick_user(ctx, &user),
        Command::Ban { subject, reason } => operator::ban(ctx, subject, &reason),
        Command::Unban { subject } => operator::unban(ctx, subject),
        Command::Typing { room, typing } => signals::typing(ctx, &room, typing),
        Command::Read { room, seq } => signals::read(ctx, &room, seq),
        Command::Set { setting } => signals::set(ctx, setting),
        Command::Who { room } => info::who(ctx, &room),
        Command::Rooms => info::rooms(ctx),
        Command::Ping { token } => info::ping(ctx, token),
        Command::Help => info::help(ctx),
        Command::Stats => info::stats(ctx),
        Command::Info => info::info(ctx),
        Command::Quit => info::quit(ctx),
        Command::Key { key } => keys::key(ctx, &key),
        Command::Keys { user } => keys::keys(ctx, &user),
        Command::Revoke { device } => keys::revoke(ctx, &device),
    }
}

fn not_logged_in() -> ClientError {
    ClientError::new(ErrorCode::NotLoggedIn, "LOGIN <user> first")
}
