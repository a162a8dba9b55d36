//! IRC commands after registration, each translated into what chatd already does: a chatd
//! [`Command`] carried out by `cmd` (JOIN, PART, PRIVMSG, MODE +i, INVITE, KICK, TAGMSG
//! +typing, MARKREAD), or a read of the server's state worded as numerics (NAMES, WHO,
//! WHOIS, LIST, CHATHISTORY). A refusal from `cmd` becomes the numeric IRC has for it,
//! naming the command's target. docs/irc.md has the table.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::encode::{message_lines, source, wire_for};
use super::numerics::*;
use super::parse::Message;
use super::{Caps, IrcConversation, SERVER_NAME};
use crate::event::HistoryPage;
use crate::message::Message as ChatMessage;
use crate::protocol::command::parse_body;
use crate::protocol::name::{parse_name, parse_room};
use crate::protocol::reply::timestamp;
use crate::protocol::{ClientError, Command, ErrorCode};
use crate::room::Room;
use crate::room_name::{dm_room_name, is_dm_room, RoomKind};

/// Messages replayed on JOIN to a client without `draft/chathistory`.
pub const JOIN_REPLAY: usize = 20;
/// Most messages one CHATHISTORY answers (ISUPPORT `CHATHISTORY=100`).
pub const CHATHISTORY_MAX: usize = 100;
/// How far back (in pages of [`CHATHISTORY_MAX`]) a msgid or timestamp is looked for.
const LOOKUP_PAGES: usize = 10;

/// The mIRC formatting codes: bold, colour, hex colour, reset, monospace, reverse, italic,
/// strikethrough, underline. Stripped from bodies (docs/irc.md: the rule).
const FORMATTING: &[char] = &[
    '\u{2}', '\u{3}', '\u{4}', '\u{f}', '\u{11}', '\u{16}', '\u{1d}', '\u{1e}', '\u{1f}',
];

impl IrcConversation {
    pub(super) fn command(&mut self, message: Message) {
        let params = message.params.clone();
        let p = |i: usize| params.get(i).map(String::as_str);
        let command = message.command.as_str();
        match command {
            "PING" => {
                let token = p(0).unwrap_or("").to_owned();
                self.say(format!(":{SERVER_NAME} PONG {SERVER_NAME} :{token}\r\n"));
            }
            "PONG" => {}
            "QUIT" => {
                let _ = self.client.run(None, Command::Quit);
            }
            "CAP" => self.cap(&params),
            "NICK" => self.numeric(
                ERR_NICKNAMEINUSE,
                &[p(0).unwrap_or("*")],
                "A chatd name is the account: reconnect to use another nick",
            ),
            "USER" | "PASS" => self.numeric(ERR_ALREADYREGISTERED, &[], "You may not reregister"),
            "AUTHENTICATE" => self.numeric(ERR_SASLALREADY, &[], "You have already authenticated"),
            "JOIN" => match p(0) {
                None => self.need_more(command),
                Some("0") => self.part_all(),
                Some(list) => {
                    for channel in list.split(',').filter(|c| !c.is_empty()) {
                        self.join(channel);
                    }
                }
            },
            "PART" => match p(0) {
                None => self.need_more(command),
                Some(list) => {
                    for channel in list.split(',').filter(|c| !c.is_empty()) {
                        self.part(channel);
                    }
                }
            },
            "PRIVMSG" | "NOTICE" => match (p(0), p(1)) {
                (None, _) => self.numeric(
                    ERR_NORECIPIENT,
                    &[],
                    &format!("No recipient given ({command})"),
                ),
                (Some(_), None) | (Some(_), Some("")) => {
                    self.numeric(ERR_NOTEXTTOSEND, &[], "No text to send")
                }
                (Some(targets), Some(text)) => {
                    for target in targets.split(',').filter(|t| !t.is_empty()) {
                        self.privmsg(target, text);
                    }
                }
            },
            "TAGMSG" => {
                if let (Some(target), Some(state)) = (p(0), message.tag("+typing")) {
                    self.typing(target, state != "done");
                }
            }
            "NAMES" => match p(0) {
                None => self.numeric(RPL_ENDOFNAMES, &["*"], "End of /NAMES list."),
                Some(list) => {
                    for channel in list.split(',') {
                        self.names(channel);
                    }
                }
            },
            "WHO" => match p(0) {
                None => self.need_more(command),
                Some(mask) => self.who(mask),
            },
            "WHOIS" => match params.last() {
                None => self.numeric(ERR_NONICKNAMEGIVEN, &[], "No nickname given"),
                Some(nick) => self.whois(nick),
            },
            "ISON" => {
                let online: Vec<String> = params
                    .iter()
                    .flat_map(|list| list.split_whitespace())
                    .filter_map(|nick| self.online_user(nick))
                    .collect();
                self.numeric(RPL_ISON, &[], &online.join(" "));
            }
            "LIST" => self.list(),
            "LUSERS" => self.lusers(),
            "TIME" => {
                let now = timestamp(&Utc::now());
                self.numeric(RPL_TIME, &[SERVER_NAME], &now)
            }
            "WHOWAS" => match p(0) {
                None => self.numeric(ERR_NONICKNAMEGIVEN, &[], "No nickname given"),
                Some(nick) => self.whowas(nick),
            },
            "TOPIC" => match (p(0), p(1)) {
                (None, _) => self.need_more(command),
                (Some(channel), None) => self.numeric(RPL_NOTOPIC, &[channel], "No topic is set"),
                (Some(_), Some(_)) => self.numeric(
                    ERR_UNKNOWNCOMMAND,
                    &["TOPIC"],
                    "chatd rooms have no topics: TOPIC can only be read",
                ),
            },
            "MODE" => match p(0) {
                None => self.need_more(command),
                Some(target) => self.mode(target, p(1)),
            },
            "INVITE" => match (p(0), p(1)) {
                (Some(nick), Some(channel)) => self.invite(nick, channel),
                _ => self.need_more(command),
            },
            "KICK" => match (p(0), p(1)) {
                (Some(channel), Some(nick)) => self.kick(channel, nick),
                _ => self.need_more(command),
            },
            "AWAY" => self.away(p(0).filter(|text| !text.is_empty())),
            "CHATHISTORY" => self.chathistory(&params),
            "MARKREAD" => match p(0) {
                None => self.need_more(command),
                Some(target) => self.markread(target, p(1)),
            },
            "USERHOST" => {
                let replies: Vec<String> = params
                    .iter()
                    .filter_map(|nick| self.online_user(nick))
                    .map(|nick| {
                        let here = if self.away_message(&nick).is_some() {
                            '-'
                        } else {
                            '+'
                        };
                        format!("{nick}={here}{nick}@{SERVER_NAME}")
                    })
                    .collect();
                self.numeric("302", &[], &replies.join(" "));
            }
            other => {
                let other = other.to_owned();
                self.numeric(ERR_UNKNOWNCOMMAND, &[&other], "Unknown command")
            }
        }
    }

    fn need_more(&mut self, command: &str) {
        self.numeric(ERR_NEEDMOREPARAMS, &[command], "Not enough parameters");
    }

    /// `#room` as a chatd room name; `None` (and 403 sent) if it is not one.
    fn room_name(&mut self, channel: &str) -> Option<String> {
        let name = channel
            .strip_prefix('#')
            .and_then(|name| parse_room(name).ok())
            .filter(|name| !is_dm_room(name));
        if name.is_none() {
            self.numeric(ERR_NOSUCHCHANNEL, &[channel], "No such channel");
        }
        name
    }

    /// The chatd room a PRIVMSG/TAGMSG/CHATHISTORY target names: `#room`, or a nick's DM room.
    fn target_room(&self, target: &str) -> Option<String> {
        if let Some(name) = target.strip_prefix('#') {
            return parse_room(name).ok().filter(|name| !is_dm_room(name));
        }
        let peer = parse_name(target, "user").ok()?;
        Some(dm_room_name(self.nick(), &peer))
    }

    /// Words a refusal from `cmd` as the numeric IRC has for it.
    fn refused(&mut self, target: &str, error: ClientError) {
        let code = match error.code {
            ErrorCode::NoSuchRoom => ERR_NOSUCHCHANNEL,
            ErrorCode::NoSuchUser => ERR_NOSUCHNICK,
            ErrorCode::NotMember => ERR_NOTONCHANNEL,
            ErrorCode::NotPermitted => ERR_CHANOPRIVSNEEDED,
            ErrorCode::RoomFull => ERR_CHANNELISFULL,
            ErrorCode::TooManyRooms => ERR_TOOMANYCHANNELS,
            ErrorCode::BodyTooLong => ERR_INPUTTOOLONG,
            ErrorCode::ControlCharacter => ERR_CANNOTSENDTOCHAN,
            ErrorCode::InvalidName => ERR_NOSUCHCHANNEL,
            _ => {
                let line = format!(
                    ":{SERVER_NAME} NOTICE {} :{}: {}\r\n",
                    self.nick(),
                    error.code.as_str(),
                    error.text
                );
                return self.say(line);
            }
        };
        let params: &[&str] = if code == ERR_INPUTTOOLONG {
            &[]
        } else {
            &[target]
        };
        self.numeric(code, params, &error.text);
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.client.server().room(name)
    }

    fn join(&mut self, channel: &str) {
        let Some(name) = self.room_name(channel) else {
            return;
        };
        let session = self.client.session().cloned();
        let me = self.nick().to_owned();
        // Recent history for a client that cannot ask for it, read before the join so that
        // nothing it receives live is replayed again.
        let replay = (!self.caps().has(Caps::CHATHISTORY))
            .then(|| self.room(&name))
            .flatten()
            .filter(|room| room.visible_to(&me))
            .filter(|room| {
                session
                    .as_ref()
                    .is_none_or(|s| !room.is_member(&s.user.name))
            })
            .and_then(|room| room.history(JOIN_REPLAY, None).ok());
        if let Err(error) = self.client.run(None, Command::Join { room: name.clone() }) {
            return self.refused(channel, error);
        }
        self.joined(&name);
        if let Some(page) = replay {
            self.replay(&page, false);
        }
    }

    /// The JOIN line and what follows it for a room the user is now in.
    fn joined(&mut self, name: &str) {
        let me = self.nick().to_owned();
        self.say(format!(":{} JOIN #{name}\r\n", source(&me)));
        // No RPL_TOPIC: rooms have no topics, and a JOIN sends 332 only for a topic.
        self.names(&format!("#{name}"));
    }

    /// After registration: a JOIN for every room the user is already in (from another
    /// device, another protocol or an earlier connection), as a bouncer would.
    pub(super) fn join_existing_rooms(&mut self) {
        let Some(session) = self.client.session().cloned() else {
            return;
        };
        let rooms = self.client.server().rooms_of(&session.user);
        for listing in rooms.iter().filter(|room| !is_dm_room(&room.name)) {
            self.joined(&listing.name);
        }
    }

    fn part(&mut self, channel: &str) {
        let Some(name) = self.room_name(channel) else {
            return;
        };
        match self.client.run(None, Command::Leave { room: name.clone() }) {
            Ok(()) => {
                let me = self.nick().to_owned();
                self.say(format!(":{} PART #{name}\r\n", source(&me)));
            }
            Err(error) => self.refused(channel, error),
        }
    }

    fn part_all(&mut self) {
        let Some(session) = self.client.session().cloned() else {
            return;
        };
        for listing in self.client.server().rooms_of(&session.user) {
            if !is_dm_room(&listing.name) {
                self.part(&format!("#{}", listing.name));
            }
        }
    }

    fn privmsg(&mut self, target: &str, text: &str) {
        let body = match irc_body(text) {
            Ok(body) => body,
            Err(why) => return self.numeric(ERR_CANNOTSENDTOCHAN, &[target], why),
        };
        let max_body = self.client.server().config.max_body;
        let body = match parse_body(&body, max_body) {
            Ok(body) if !body.is_empty() => body,
            Ok(_) => return self.numeric(ERR_NOTEXTTOSEND, &[], "No text to send"),
            Err(error) => return self.refused(target, error),
        };
        let command = if let Some(name) = target.strip_prefix('#') {
            match parse_room(name).ok().filter(|name| !is_dm_room(name)) {
                Some(room) => Command::Send { room, body },
                None => return self.numeric(ERR_NOSUCHCHANNEL, &[target], "No such channel"),
            }
        } else {
            match parse_name(target, "user") {
                Ok(user) if user == self.nick() => {
                    return self.numeric(ERR_NOSUCHNICK, &[target], "chatd has no DMs to yourself")
                }
                Ok(user) => {
                    if let Some(away) = self.away_message(&user) {
                        self.numeric(RPL_AWAY, &[&user], &away);
                    }
                    Command::Dm { user, body }
                }
                Err(_) => return self.numeric(ERR_NOSUCHNICK, &[target], "No such nick/channel"),
            }
        };
        let label = self.response.label.clone();
        // The label travels with the post: an `echo-message` client gets it on the echo.
        let echoed = self.caps().has(Caps::ECHO_MESSAGE);
        match self
            .client
            .run(label.as_deref().filter(|_| echoed), command)
        {
            Ok(()) => self.response.elsewhere = echoed,
            Err(error) if error.code == ErrorCode::NotMember => self.numeric(
                ERR_CANNOTSENDTOCHAN,
                &[target],
                "Cannot send to channel: JOIN it first",
            ),
            Err(error) => self.refused(target, error),
        }
    }

    fn typing(&mut self, target: &str, typing: bool) {
        // Typing is best effort: a refusal is not worth a numeric.
        if let Some(room) = self.target_room(target) {
            let _ = self.client.run(None, Command::Typing { room, typing });
        }
    }

    fn names(&mut self, channel: &str) {
        let me = self.nick().to_owned();
        let members = channel
            .strip_prefix('#')
            .and_then(|name| self.room(name))
            .filter(|room| room.is_member(&me))
            .map(|room| (room.who(), room.owner()));
        if let Some((members, owner)) = members {
            let full = self.caps().has(Caps::USERHOST_IN_NAMES);
            // As many names per 353 as fit in a 512-byte line.
            let mut chunk = String::new();
            for member in members {
                // The owner is the room's operator: `@`, as PREFIX=(o)@ says.
                let op = if owner.as_deref() == Some(&*member.name) {
                    "@"
                } else {
                    ""
                };
                let name = if full {
                    format!("{op}{}", source(&member.name))
                } else {
                    format!("{op}{}", member.name)
                };
                if chunk.len() + name.len() > 400 {
                    self.numeric(RPL_NAMREPLY, &["=", channel], &std::mem::take(&mut chunk));
                }
                if !chunk.is_empty() {
                    chunk.push(' ');
                }
                chunk.push_str(&name);
            }
            if !chunk.is_empty() {
                self.numeric(RPL_NAMREPLY, &["=", channel], &chunk);
            }
        }
        self.numeric(RPL_ENDOFNAMES, &[channel], "End of /NAMES list.");
    }

    fn who(&mut self, mask: &str) {
        let me = self.nick().to_owned();
        let rows: Vec<(String, String, bool)> = if let Some(name) = mask.strip_prefix('#') {
            self.room(name)
                .filter(|room| room.is_member(&me))
                .map(|room| {
                    room.who()
                        .into_iter()
                        .map(|m| (mask.to_owned(), m.name.to_string(), m.last_seen.is_none()))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            parse_name(mask, "user")
                .ok()
                .and_then(|name| self.client.server().user(&name))
                .map(|user| {
                    vec![(
                        "*".to_owned(),
                        user.name.to_string(),
                        user.last_seen().is_none(),
                    )]
                })
                .unwrap_or_default()
        };
        for (channel, nick, online) in rows {
            let flag = if online { "H" } else { "G" };
            self.numeric(
                RPL_WHOREPLY,
                &[&channel, &nick, SERVER_NAME, SERVER_NAME, &nick, flag],
                &format!("0 {nick}"),
            );
        }
        self.numeric(RPL_ENDOFWHO, &[mask], "End of WHO list");
    }

    fn whois(&mut self, nick: &str) {
        let user = parse_name(nick, "user")
            .ok()
            .and_then(|name| self.client.server().user(&name));
        let Some(user) = user else {
            self.numeric(ERR_NOSUCHNICK, &[nick], "No such nick/channel");
            return self.numeric(RPL_ENDOFWHOIS, &[nick], "End of /WHOIS list.");
        };
        let name = user.name.to_string();
        self.numeric(RPL_WHOISUSER, &[&name, &name, SERVER_NAME, "*"], &name);
        self.numeric(RPL_WHOISSERVER, &[&name, SERVER_NAME], "chatd");
        // Only rooms the asker shares with them: rooms are not public knowledge.
        let me = self.nick().to_owned();
        let shared: Vec<String> = user
            .rooms()
            .iter()
            .filter(|room| !is_dm_room(room))
            .filter(|room| self.room(room).is_some_and(|r| r.is_member(&me)))
            .map(|room| format!("#{room}"))
            .collect();
        if !shared.is_empty() {
            self.numeric(RPL_WHOISCHANNELS, &[&name], &shared.join(" "));
        }
        if let Some(last_seen) = user.last_seen() {
            let text = format!("offline; last seen {}", timestamp(&last_seen));
            self.numeric(RPL_AWAY, &[&name], &text);
        } else if let Some(away) = self.away_message(&name) {
            self.numeric(RPL_AWAY, &[&name], &away);
        }
        self.numeric(RPL_ENDOFWHOIS, &[&name], "End of /WHOIS list.");
    }

    /// `LUSERS`: sessions (of every protocol) and public rooms. One server, no operators.
    pub(super) fn lusers(&mut self) {
        let server = std::sync::Arc::clone(self.client.server());
        let sessions = crate::stats::Stats::get(&server.stats.sessions);
        let rooms = server
            .all_rooms()
            .iter()
            .filter(|room| room.kind == RoomKind::Public)
            .count();
        let text = format!("There are {sessions} users and 0 invisible on 1 servers");
        self.numeric(RPL_LUSERCLIENT, &[], &text);
        self.numeric(RPL_LUSERCHANNELS, &[&rooms.to_string()], "channels formed");
        let text = format!("I have {sessions} clients and 0 servers");
        self.numeric(RPL_LUSERME, &[], &text);
    }

    /// `WHOWAS nick`: chatd remembers people, not nicks; someone offline is shown with when
    /// they were last seen.
    fn whowas(&mut self, nick: &str) {
        let user = parse_name(nick, "user")
            .ok()
            .and_then(|name| self.client.server().user(&name));
        match user.and_then(|user| user.last_seen().map(|seen| (user, seen))) {
            Some((user, last_seen)) => {
                let name = user.name.to_string();
                self.numeric(RPL_WHOWASUSER, &[&name, &name, SERVER_NAME, "*"], &name);
                self.numeric(
                    RPL_WHOISSERVER,
                    &[&name, SERVER_NAME],
                    &timestamp(&last_seen),
                );
            }
            None => self.numeric(ERR_WASNOSUCHNICK, &[nick], "There was no such nickname"),
        }
        self.numeric(RPL_ENDOFWHOWAS, &[nick], "End of WHOWAS");
    }

    /// `AWAY :<message>` marks the user away (for WHOIS, USERHOST and PRIVMSG senders, as IRC
    /// shows it); `AWAY` alone clears it. A connection that set one clears it when it ends.
    fn away(&mut self, message: Option<&str>) {
        let me: Arc<str> = Arc::from(self.nick());
        let server = Arc::clone(self.client.server());
        match message {
            Some(message) => {
                server.irc_away.lock().insert(me, Box::from(message));
                self.set_away = true;
                self.numeric(RPL_NOWAWAY, &[], "You have been marked as being away");
            }
            None => {
                server.irc_away.lock().remove(&me);
                self.set_away = false;
                self.numeric(RPL_UNAWAY, &[], "You are no longer marked as being away");
            }
        }
    }

    fn away_message(&self, user: &str) -> Option<String> {
        let away = self.client.server().irc_away.lock();
        away.get(user).map(|message| message.to_string())
    }

    fn online_user(&self, nick: &str) -> Option<String> {
        let name = parse_name(nick, "user").ok()?;
        let user = self.client.server().user(&name)?;
        user.last_seen().is_none().then_some(name)
    }

    /// Public rooms, and invite-only ones the user may see.
    fn list(&mut self) {
        let me = self.nick().to_owned();
        self.numeric(RPL_LISTSTART, &["Channel"], "Users  Name");
        let mut rooms: Vec<Arc<Room>> = self
            .client
            .server()
            .all_rooms()
            .into_iter()
            .filter(|room| room.kind == RoomKind::Public && room.visible_to(&me))
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        for room in rooms {
            let count = room.listing(&me).members.to_string();
            self.numeric(RPL_LIST, &[&format!("#{}", room.name), &count], "");
        }
        self.numeric(RPL_LISTEND, &[], "End of /LIST");
    }

    fn mode(&mut self, target: &str, change: Option<&str>) {
        if !target.starts_with('#') {
            return if target.eq_ignore_ascii_case(self.nick()) {
                match change {
                    None => {
                        let line = numeric_bare(self.nick(), RPL_UMODEIS, &["+"]);
                        self.say(line)
                    }
                    Some(_) => self.numeric(ERR_UMODEUNKNOWNFLAG, &[], "Unknown MODE flag"),
                }
            } else {
                self.numeric(ERR_USERSDONTMATCH, &[], "Can't change mode for other users")
            };
        }
        let Some(name) = self.room_name(target) else {
            return;
        };
        let me = self.nick().to_owned();
        match change {
            None => {
                let Some(room) = self.room(&name).filter(|room| room.visible_to(&me)) else {
                    return self.numeric(ERR_NOSUCHCHANNEL, &[target], "No such channel");
                };
                let modes = if room.is_private() { "+i" } else { "+" };
                let line = numeric_bare(&me, RPL_CHANNELMODEIS, &[target, modes]);
                self.say(line);
            }
            Some("b") | Some("+b") => {
                self.numeric(RPL_ENDOFBANLIST, &[target], "End of channel ban list")
            }
            Some(change @ ("+i" | "-i")) => {
                let private = change == "+i";
                match self.client.run(
                    None,
                    Command::Private {
                        room: name,
                        private,
                    },
                ) {
                    Ok(()) => self.say(format!(":{} MODE {target} {change}\r\n", source(&me))),
                    Err(error) => self.refused(target, error),
                }
            }
            Some(other) => {
                let other = other.to_owned();
                self.numeric(
                    ERR_UNKNOWNMODE,
                    &[&other],
                    "chatd rooms have one mode: +i (invite-only)",
                )
            }
        }
    }

    /// The room `channel` names and the user `nick` names, for INVITE and KICK; `None` once
    /// the client was told which one is wrong.
    fn room_and_user(&mut self, channel: &str, nick: &str) -> Option<(String, String)> {
        let room = self.room_name(channel)?;
        let Ok(user) = parse_name(nick, "user") else {
            self.numeric(ERR_NOSUCHNICK, &[nick], "No such nick/channel");
            return None;
        };
        Some((room, user))
    }

    fn invite(&mut self, nick: &str, channel: &str) {
        let Some((room, user)) = self.room_and_user(channel, nick) else {
            return;
        };
        match self.client.run(
            None,
            Command::Invite {
                room,
                user: user.clone(),
            },
        ) {
            Ok(()) => {
                let line = numeric_bare(self.nick(), RPL_INVITING, &[&user, channel]);
                self.say(line)
            }
            Err(error) if error.code == ErrorCode::NoSuchUser => {
                self.numeric(ERR_NOSUCHNICK, &[nick], "No such nick/channel")
            }
            Err(error) => self.refused(channel, error),
        }
    }

    fn kick(&mut self, channel: &str, nick: &str) {
        let Some((room, user)) = self.room_and_user(channel, nick) else {
            return;
        };
        match self.client.run(
            None,
            Command::Kick {
                room,
                user: user.clone(),
            },
        ) {
            Ok(()) => {
                let me = self.nick().to_owned();
                self.say(format!(
                    ":{} KICK {channel} {user} :removed by {me}\r\n",
                    source(&me)
                ));
            }
            Err(error) if error.code == ErrorCode::NoSuchUser => {
                self.numeric(ERR_NOSUCHNICK, &[nick], "No such nick/channel")
            }
            Err(error) if error.code == ErrorCode::NotMember => self.numeric(
                ERR_USERNOTINCHANNEL,
                &[nick, channel],
                "They aren't on that channel",
            ),
            Err(error) => self.refused(channel, error),
        }
    }

    /// Messages as PRIVMSG lines: in a `chathistory` batch if the client takes batches.
    fn replay(&mut self, page: &HistoryPage, one_batch: bool) {
        let me = self.nick().to_owned();
        let caps = self.caps();
        let wire = wire_for(caps);
        let target = super::encode::target(&page.room, &me);
        let target = if is_dm_room(&page.room) {
            crate::room_name::dm_peer(&page.room, &me)
                .unwrap_or(&target)
                .to_owned()
        } else {
            target
        };
        let mut text = String::new();
        if caps.has(Caps::BATCH) {
            let id = self.batch_id();
            text.push_str(&format!(
                ":{SERVER_NAME} BATCH +{id} chathistory {target}\r\n"
            ));
            let extra = [format!("batch={id}")];
            for message in &page.messages {
                message_lines(&mut text, message, wire, &extra);
            }
            text.push_str(&format!(":{SERVER_NAME} BATCH -{id}\r\n"));
            self.response.one_batch = one_batch;
        } else {
            for message in &page.messages {
                message_lines(&mut text, message, wire, &[]);
            }
        }
        self.say(text);
    }

    /// `CHATHISTORY LATEST|BEFORE|AFTER|AROUND <target> <reference> <limit>`.
    fn chathistory(&mut self, params: &[String]) {
        let fail = |this: &mut Self, code: &str, text: &str| {
            let line = format!(":{SERVER_NAME} FAIL CHATHISTORY {code} :{text}\r\n");
            this.say(line);
        };
        let [sub, target, reference, limit, ..] = params else {
            return fail(
                self,
                "NEED_MORE_PARAMS",
                "CHATHISTORY <sub> <target> <ref> <limit>",
            );
        };
        let sub = sub.to_ascii_uppercase();
        if sub == "TARGETS" || sub == "BETWEEN" {
            return fail(
                self,
                "INVALID_PARAMS",
                "only LATEST, BEFORE, AFTER and AROUND",
            );
        }
        let Ok(limit) = limit.parse::<usize>() else {
            return fail(self, "INVALID_PARAMS", "the limit must be a number");
        };
        let limit = limit.clamp(1, CHATHISTORY_MAX);
        let me = self.nick().to_owned();
        let room = self
            .target_room(target)
            .and_then(|name| self.room(&name))
            .filter(|room| room.is_member(&me));
        let Some(room) = room else {
            return fail(
                self,
                "INVALID_TARGET",
                "no such channel or conversation, or not yours",
            );
        };
        let bound = match (sub.as_str(), reference.as_str()) {
            ("LATEST", "*") => None,
            (_, reference) => match resolve(&room, reference) {
                Some(bound) => Some(bound),
                None => {
                    return fail(
                        self,
                        "INVALID_MSGREFTYPE",
                        "use msgid=<id> or timestamp=<time>",
                    )
                }
            },
        };
        let page = match (sub.as_str(), bound) {
            ("LATEST", None) => room.history(limit, None),
            ("LATEST", Some(b)) => room.history(limit, None).map(|mut page| {
                page.messages.retain(|m| m.seq > b.after);
                page
            }),
            ("BEFORE", Some(b)) => room.history(limit, Some(b.before)),
            ("AFTER", Some(b)) => after(&room, b.after, limit),
            ("AROUND", Some(b)) => {
                let older = limit / 2;
                room.history(older, Some(b.before)).and_then(|mut page| {
                    let newer = after(&room, b.before.saturating_sub(1), limit - older)?;
                    page.messages.extend(newer.messages);
                    Ok(page)
                })
            }
            _ => return fail(self, "INVALID_PARAMS", "unknown subcommand"),
        };
        match page {
            Ok(page) => self.replay(&page, true),
            Err(error) => fail(self, "MESSAGE_ERROR", &error.text),
        }
    }

    /// `MARKREAD <target> [timestamp=<time>]`: chatd's READ at the newest message sent up to
    /// that time.
    fn markread(&mut self, target: &str, reference: Option<&str>) {
        let me = self.nick().to_owned();
        let Some(name) = self.target_room(target) else {
            return self.say(format!(
                ":{SERVER_NAME} FAIL MARKREAD INVALID_PARAMS {target} :no such target\r\n"
            ));
        };
        let Some(reference) = reference else {
            // Asking: chatd keeps a read seq, shown as that message's time.
            let line = format!(":{SERVER_NAME} MARKREAD {target} *\r\n");
            return self.say(line);
        };
        let seq = self
            .room(&name)
            .filter(|room| room.is_member(&me))
            .and_then(|room| resolve(&room, reference).map(|b| b.before.saturating_sub(1)));
        let Some(seq) = seq else {
            return self.say(format!(
                ":{SERVER_NAME} FAIL MARKREAD INVALID_PARAMS {target} :unknown timestamp\r\n"
            ));
        };
        match self.client.run(None, Command::Read { room: name, seq }) {
            Ok(()) => self.say(format!(":{SERVER_NAME} MARKREAD {target} {reference}\r\n")),
            Err(error) => self.refused(target, error),
        }
    }
}

/// Where a CHATHISTORY reference falls, in seqs: BEFORE takes seq < `before`, AFTER takes
/// seq > `after`.
#[derive(Clone, Copy)]
struct Bound {
    before: u64,
    after: u64,
}

/// Finds `msgid=<id>` or `timestamp=<time>` among the room's last pages.
fn resolve(room: &Room, reference: &str) -> Option<Bound> {
    enum Ref {
        Id(String),
        Time(DateTime<Utc>),
    }
    let wanted = if let Some(id) = reference.strip_prefix("msgid=") {
        // A split message's later lines carry `<id>/<n>`.
        Ref::Id(id.split('/').next().unwrap_or(id).to_owned())
    } else {
        let time = reference.strip_prefix("timestamp=")?;
        Ref::Time(DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc))
    };
    let mut before = None;
    for _ in 0..LOOKUP_PAGES {
        let page = room.history(CHATHISTORY_MAX, before).ok()?;
        let oldest = page.messages.first()?.seq;
        for message in page.messages.iter().rev() {
            match &wanted {
                Ref::Id(id) if message.id.to_string() == *id => {
                    return Some(Bound {
                        before: message.seq,
                        after: message.seq,
                    })
                }
                Ref::Time(t) if message.sent_at < *t => {
                    return Some(Bound {
                        before: message.seq + 1,
                        after: message.seq,
                    })
                }
                _ => {}
            }
        }
        before = Some(oldest);
    }
    // A time older than everything held: everything is after it.
    matches!(wanted, Ref::Time(_)).then_some(Bound {
        before: 1,
        after: 0,
    })
}

/// Up to `limit` messages with seq > `after`, oldest first.
fn after(room: &Room, after: u64, limit: usize) -> Result<HistoryPage, ClientError> {
    let end = after.saturating_add(limit as u64 + 1);
    let mut page = room.history(limit, Some(end))?;
    page.messages.retain(|m: &Arc<ChatMessage>| m.seq > after);
    Ok(page)
}

/// An IRC message's text as a chatd body, by the rule docs/irc.md states: mIRC formatting
/// codes are stripped (with a colour's digits); a CTCP ACTION (`/me`) becomes a body starting
/// with `/me `; any other control character, or another CTCP, is refused.
pub fn irc_body(text: &str) -> Result<String, &'static str> {
    let text = match text.strip_prefix("\u{1}ACTION ") {
        Some(action) => format!("/me {}", action.strip_suffix('\u{1}').unwrap_or(action)),
        None if text.starts_with('\u{1}') => return Err("CTCP is not supported by chatd"),
        None => text.to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Colour: up to two digits, optionally `,` and two more.
            '\u{3}' => {
                for _ in 0..2 {
                    chars.next_if(char::is_ascii_digit);
                }
                if chars.peek() == Some(&',') {
                    let mut ahead = chars.clone();
                    ahead.next();
                    if ahead.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                        for _ in 0..2 {
                            chars.next_if(char::is_ascii_digit);
                        }
                    }
                }
            }
            // Hex colour: six hex digits, optionally `,` and six more.
            '\u{4}' => {
                for _ in 0..6 {
                    chars.next_if(char::is_ascii_hexdigit);
                }
            }
            c if FORMATTING.contains(&c) => {}
            c if c.is_control() && c != '\t' => {
                return Err("Cannot send to channel: control characters are not allowed")
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::irc_body;

    #[test]
    fn formatting_is_stripped_and_actions_kept() {
        assert_eq!(
            irc_body("\u{2}bold\u{2} \u{3}04,12red\u{f} x").unwrap(),
            "bold red x"
        );
        assert_eq!(irc_body("\u{3}4,x").unwrap(), ",x");
        assert_eq!(irc_body("\u{1}ACTION waves\u{1}").unwrap(), "/me waves");
        assert!(irc_body("\u{1}VERSION\u{1}").is_err());
        assert!(irc_body("bell\u{7}").is_err());
        assert!(irc_body("esc\u{1b}[2J").is_err());
        assert_eq!(irc_body("tab\there").unwrap(), "tab\there");
    }
}
