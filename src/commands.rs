//! Carrying out each command for one connection: the reader thread's side of the server.
//!
//! Every command is one method here, so "how does JOIN work" is answered by reading
//! `Connection::join` and the `ChatServer`/`Room` methods it calls. Replies that must be
//! ordered with fan-out (OK JOIN, OK SEND, OK LEAVE) are queued by `Room` under its lock;
//! the rest are queued here with [`Outbox::reply`].

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::outbox::{CloseReason, Outbox};
use crate::protocol::{reply, ClientError, Command, ErrorCode, Password, Request, Setting};
use crate::server::{ChatServer, Target};
use crate::session::Session;
use crate::stats::Stats;

/// One connection as its reader thread sees it.
pub struct Connection {
    server: Arc<ChatServer>,
    outbox: Arc<Outbox>,
    /// `None` until LOGIN succeeds.
    session: Option<Arc<Session>>,
    /// How long a direct reply may wait for room in this connection's own queue.
    patience: Duration,
}

impl Connection {
    pub fn new(server: Arc<ChatServer>, outbox: Arc<Outbox>) -> Connection {
        let patience = server.config.write_timeout;
        Connection {
            server,
            outbox,
            session: None,
            patience,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    /// Queues a line for this connection only.
    pub fn reply(&self, text: String) {
        self.outbox.reply(text, self.patience);
    }

    pub fn reply_error(&self, label: Option<&str>, error: &ClientError) {
        self.reply(reply::error(label, error));
    }

    /// Carries out one request; a refused command becomes an `ERR` reply.
    pub fn execute(&mut self, request: Request) {
        let label = request.label.as_deref();
        let result = if self.session.is_none() && request.command.needs_login() {
            Err(not_logged_in())
        } else {
            self.dispatch(label, request.client_id.as_deref(), request.command)
        };
        if let Err(error) = result {
            self.reply_error(label, &error);
        }
    }

    fn dispatch(
        &mut self,
        label: Option<&str>,
        client_id: Option<&str>,
        command: Command,
    ) -> Result<(), ClientError> {
        match command {
            Command::Login {
                user,
                device,
                password,
            } => self.login(label, &user, device.as_deref(), password.as_ref()),
            Command::Register { password } => {
                let session = self.session()?;
                self.server.register(session, &password)?;
                self.reply(reply::ok_register(label, &session.user.name));
                Ok(())
            }
            Command::ChangePassword {
                password,
                end_sessions,
            } => {
                let session = self.session()?;
                self.server
                    .change_password(session, &password, end_sessions)?;
                self.reply(reply::ok_password(label, &session.user.name));
                Ok(())
            }
            Command::Private { room, private } => {
                self.server
                    .set_private(self.session()?, &room, private, label)
            }
            Command::Invite { room, user } => {
                self.server.invite(self.session()?, &room, &user, label)
            }
            Command::Kick { room, user } => self.server.kick(self.session()?, &room, &user, label),
            Command::Join { room } => self.server.join(self.session()?, &room, label),
            Command::Leave { room } => self.server.leave(self.session()?, &room, label),
            Command::Send { room, body } => {
                let target = Target::Room(&room);
                self.server
                    .post(self.session()?, target, &body, label, client_id)
            }
            Command::Dm { user, body } => {
                let target = Target::User(&user);
                self.server
                    .post(self.session()?, target, &body, label, client_id)
            }
            Command::Sync { room, after, epoch } => {
                let epoch = epoch.as_deref();
                self.server
                    .sync(self.session()?, &room, after, epoch, label)
            }
            Command::Typing { room, typing } => {
                self.server.typing(self.session()?, &room, typing, label)
            }
            Command::Read { room, seq } => self.server.read(self.session()?, &room, seq, label),
            Command::Set { setting } => self.set(label, setting),
            Command::Who { room } => self.who(label, &room),
            Command::Rooms => self.rooms(label),
            Command::History {
                room,
                limit,
                before,
            } => self.history(label, &room, limit, before),
            Command::Ping { token } => {
                self.reply(reply::pong(label, token.as_deref()));
                Ok(())
            }
            Command::Help => {
                self.reply(reply::help(label));
                Ok(())
            }
            Command::Stats => {
                self.stats(label);
                Ok(())
            }
            Command::Quit => {
                self.outbox.close(CloseReason::Quit);
                Ok(())
            }
        }
    }

    fn session(&self) -> Result<&Session, ClientError> {
        self.session.as_deref().ok_or_else(not_logged_in)
    }

    fn login(
        &mut self,
        label: Option<&str>,
        user: &str,
        device: Option<&str>,
        password: Option<&Password>,
    ) -> Result<(), ClientError> {
        if let Some(session) = &self.session {
            return Err(ClientError::new(
                ErrorCode::AlreadyLoggedIn,
                format!(
                    "this connection is already logged in as {}",
                    session.user.name
                ),
            ));
        }
        self.server
            .authenticate(user, password, self.outbox.peer_ip())?;
        let ok = reply::ok_login(label, user);
        self.session = Some(self.server.login(&self.outbox, user, device, ok));
        Ok(())
    }

    fn set(&self, label: Option<&str>, setting: Setting) -> Result<(), ClientError> {
        let user = &self.session()?.user;
        match setting {
            Setting::ShareReceipts(share) => {
                self.server.share_receipts(user, share);
                let value = if share { "on" } else { "off" };
                self.reply(reply::ok_set(label, "receipts", value));
            }
        }
        Ok(())
    }

    fn who(&self, label: Option<&str>, room: &str) -> Result<(), ClientError> {
        let (room, members) = self.server.who(self.session()?, room)?;
        let mut out = String::new();
        for member in &members {
            out.push_str(&reply::who_member(
                label,
                &room.name,
                &member.name,
                member.last_seen.as_ref(),
            ));
        }
        out.push_str(&reply::ok_who(label, &room.name, members.len()));
        self.reply(out);
        Ok(())
    }

    fn rooms(&self, label: Option<&str>) -> Result<(), ClientError> {
        let rooms = self.server.rooms_of(&self.session()?.user);
        let mut out = String::new();
        for room in &rooms {
            out.push_str(&reply::room_summary(
                label,
                &room.name,
                room.seq,
                &room.epoch,
                room.members,
                room.read,
            ));
        }
        out.push_str(&reply::ok_rooms(label, rooms.len()));
        self.reply(out);
        Ok(())
    }

    fn history(
        &self,
        label: Option<&str>,
        room: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<(), ClientError> {
        let page = self.server.history(self.session()?, room, limit, before)?;
        let mut out = String::new();
        for message in &page.messages {
            out.push_str(&reply::msg(label, message));
        }
        out.push_str(&reply::ok_history(
            label,
            room,
            page.messages.len(),
            page.seq,
            &page.epoch,
        ));
        self.reply(out);
        Ok(())
    }

    fn stats(&self, label: Option<&str>) {
        let stats = &self.server.stats;
        let fields = [
            ("sessions", Stats::get(&stats.sessions)),
            ("connections", Stats::get(&stats.connections)),
            ("users", self.server.user_count() as u64),
            ("rooms", self.server.room_count() as u64),
            ("messages", Stats::get(&stats.messages)),
            ("deliveries", Stats::get(&stats.deliveries)),
            ("slow_consumers", Stats::get(&stats.slow_consumers)),
            ("shed", Stats::get(&stats.shed)),
            ("refused", Stats::get(&stats.refused)),
            ("rate_limited", Stats::get(&stats.rate_limited)),
            ("flooding", Stats::get(&stats.flooding)),
        ];
        self.reply(reply::ok_stats(label, &fields));
    }

    /// The connection is over: the session leaves its user (and maybe presence changes).
    pub fn end(self) {
        if let Some(session) = &self.session {
            self.server.logout(session);
        }
    }
}

fn not_logged_in() -> ClientError {
    ClientError::new(ErrorCode::NotLoggedIn, "LOGIN <user> first")
}
