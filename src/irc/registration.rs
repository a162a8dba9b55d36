//! Everything before the session exists: `PASS`, `NICK`, `USER`, `CAP` negotiation and SASL
//! `PLAIN`. Registration completes (and chatd's LOGIN runs, with the password from SASL or
//! PASS) once NICK and USER have arrived and capability negotiation, if begun, has ended.
//! Then the welcome burst (001-005, MOTD) and a JOIN for every room the user is already in.

use super::numerics::*;
use super::{IrcConversation, OFFERED, SERVER_NAME};
use crate::delivery::CloseReason;
use crate::protocol::name::parse_name;
use crate::protocol::{ClientError, Command, ErrorCode, Password};

/// The longest SASL payload accepted (PLAIN needs two names and a password).
const MAX_SASL: usize = 1024;

#[derive(Default)]
pub struct Registration {
    nick: Option<String>,
    user: bool,
    pass: Option<String>,
    /// `CAP LS` or `CAP REQ` was sent and `CAP END` has not been: registration waits.
    negotiating: bool,
    /// `CAP LS 302`: values are shown.
    cap_302: bool,
    sasl: Sasl,
}

#[derive(Default)]
enum Sasl {
    #[default]
    None,
    /// `AUTHENTICATE PLAIN` was accepted; the payload is arriving in 400-byte chunks.
    Receiving(String),
    /// Authenticated as this account with this password.
    Done { account: String, password: String },
}

impl IrcConversation {
    pub(super) fn register(&mut self, message: crate::irc::parse::Message) {
        let params = &message.params;
        match message.command.as_str() {
            "CAP" => self.cap(params),
            "PASS" => match params.first() {
                Some(pass) => self.registration.pass = Some(pass.clone()),
                None => self.numeric(ERR_NEEDMOREPARAMS, &["PASS"], "Not enough parameters"),
            },
            "NICK" => match params.first().filter(|nick| !nick.is_empty()) {
                None => self.numeric(ERR_NONICKNAMEGIVEN, &[], "No nickname given"),
                Some(nick) => match parse_name(nick, "nick") {
                    Ok(nick) => {
                        self.registration.nick = Some(nick);
                        self.try_register();
                    }
                    Err(_) => self.numeric(
                        ERR_ERRONEUSNICKNAME,
                        &[&nick.clone()],
                        "Erroneous nickname: 1-32 of A-Z a-z 0-9 . _ -",
                    ),
                },
            },
            "USER" => {
                if params.len() < 4 || params[3].is_empty() {
                    self.numeric(ERR_NEEDMOREPARAMS, &["USER"], "Not enough parameters");
                } else {
                    self.registration.user = true;
                    self.try_register();
                }
            }
            "AUTHENTICATE" => self.authenticate(params.first().map(String::as_str)),
            "PING" => {
                let token = params.first().cloned().unwrap_or_default();
                self.say(format!(":{SERVER_NAME} PONG {SERVER_NAME} :{token}\r\n"));
            }
            "PONG" => {}
            "QUIT" => {
                let _ = self.client.run(None, Command::Quit);
            }
            command => self.numeric(ERR_NOTREGISTERED, &[command], "You have not registered"),
        }
    }

    /// `CAP LS [302]`, `CAP LIST`, `CAP REQ :<caps>`, `CAP END`; also after registration.
    pub(super) fn cap(&mut self, params: &[String]) {
        let nick = self.nick().to_owned();
        let registered = self.client.logged_in();
        match params.first().map(|s| s.to_ascii_uppercase()).as_deref() {
            Some("LS") => {
                if !registered {
                    self.registration.negotiating = true;
                }
                if params
                    .get(1)
                    .is_some_and(|v| v.parse::<u32>().is_ok_and(|v| v >= 302))
                {
                    self.registration.cap_302 = true;
                }
                let show_values = self.registration.cap_302;
                let list: Vec<String> = OFFERED
                    .iter()
                    .map(|(name, value, _)| match (show_values, value.is_empty()) {
                        (true, false) => format!("{name}={value}"),
                        _ => (*name).to_owned(),
                    })
                    .collect();
                self.say(format!(
                    ":{SERVER_NAME} CAP {nick} LS :{}\r\n",
                    list.join(" ")
                ));
            }
            Some("LIST") => {
                let caps = self.caps();
                let on: Vec<&str> = OFFERED
                    .iter()
                    .filter(|(_, _, bit)| caps.has(*bit))
                    .map(|(name, _, _)| *name)
                    .collect();
                self.say(format!(
                    ":{SERVER_NAME} CAP {nick} LIST :{}\r\n",
                    on.join(" ")
                ));
            }
            Some("REQ") => {
                if !registered {
                    self.registration.negotiating = true;
                }
                let asked = params.get(1).cloned().unwrap_or_default();
                let mut caps = self.caps();
                let mut known = true;
                for item in asked.split_whitespace() {
                    let (on, name) = match item.strip_prefix('-') {
                        Some(name) => (false, name),
                        None => (true, item),
                    };
                    match OFFERED.iter().find(|(offered, _, _)| *offered == name) {
                        Some((_, _, bit)) => caps = caps.with(*bit, on),
                        None => known = false,
                    }
                }
                // All or nothing, as the spec says.
                let verdict = if known && !asked.trim().is_empty() {
                    self.set_caps(caps);
                    "ACK"
                } else {
                    "NAK"
                };
                self.say(format!(":{SERVER_NAME} CAP {nick} {verdict} :{asked}\r\n"));
            }
            Some("END") => {
                if !registered {
                    self.registration.negotiating = false;
                    self.try_register();
                }
            }
            Some(other) => {
                let other = other.to_owned();
                self.numeric("410", &[&other], "Invalid CAP command");
            }
            None => self.numeric(ERR_NEEDMOREPARAMS, &["CAP"], "Not enough parameters"),
        }
    }

    /// SASL PLAIN: `AUTHENTICATE PLAIN`, then the base64 of `authzid\0authcid\0password`.
    fn authenticate(&mut self, param: Option<&str>) {
        let Some(param) = param else {
            return self.numeric(
                ERR_NEEDMOREPARAMS,
                &["AUTHENTICATE"],
                "Not enough parameters",
            );
        };
        if param == "*" {
            self.registration.sasl = Sasl::None;
            return self.numeric(ERR_SASLABORTED, &[], "SASL authentication aborted");
        }
        match std::mem::take(&mut self.registration.sasl) {
            Sasl::None => {
                if param.eq_ignore_ascii_case("PLAIN") {
                    self.registration.sasl = Sasl::Receiving(String::new());
                    self.say("AUTHENTICATE +\r\n".to_owned());
                } else {
                    self.numeric(RPL_SASLMECHS, &["PLAIN"], "are available SASL mechanisms");
                    self.numeric(ERR_SASLFAIL, &[], "SASL authentication failed");
                }
            }
            Sasl::Receiving(mut payload) => {
                if param != "+" {
                    payload.push_str(param);
                }
                if payload.len() > MAX_SASL {
                    return self.numeric(ERR_SASLTOOLONG, &[], "SASL message too long");
                }
                // A chunk of exactly 400 bytes means more follow.
                if param.len() == 400 {
                    self.registration.sasl = Sasl::Receiving(payload);
                    return;
                }
                self.check_plain(&payload);
            }
            done @ Sasl::Done { .. } => {
                self.registration.sasl = done;
                self.numeric(
                    ERR_SASLALREADY,
                    &[],
                    "You have already authenticated using SASL",
                );
            }
        }
    }

    fn check_plain(&mut self, payload: &str) {
        let decoded = decode_base64(payload).and_then(|bytes| String::from_utf8(bytes).ok());
        let fields: Option<(String, String)> = decoded.and_then(|text| {
            let mut parts = text.split('\0');
            let (_authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
            Some((authcid.to_owned(), password.to_owned()))
        });
        let Some((account, password)) = fields else {
            return self.numeric(
                ERR_SASLFAIL,
                &[],
                "SASL authentication failed: malformed PLAIN",
            );
        };
        let Ok(account) = parse_name(&account, "user") else {
            return self.numeric(
                ERR_SASLFAIL,
                &[],
                "SASL authentication failed: not a chatd name",
            );
        };
        let server = std::sync::Arc::clone(self.client.server());
        // IRC never creates an account (a password for a free name would register it on the
        // line protocol): SASL is for names that have one.
        if !server.has_account(&account) {
            let text = format!("SASL authentication failed: {account} has no account");
            return self.numeric(ERR_SASLFAIL, &[], &text);
        }
        let secret = Password(password.clone());
        let peer = self.client_peer();
        match server.authenticate(&account, Some(&secret), peer) {
            Ok(_) => {
                let nick = self.registration.nick.clone().unwrap_or_else(|| "*".into());
                let mask = super::encode::source(&account);
                self.say(numeric(
                    &nick,
                    RPL_LOGGEDIN,
                    &[&mask, &account],
                    &format!("You are now logged in as {account}"),
                ));
                self.say(numeric(
                    &nick,
                    RPL_SASLSUCCESS,
                    &[],
                    "SASL authentication successful",
                ));
                self.registration.sasl = Sasl::Done { account, password };
            }
            Err(error) => {
                let nick = self.registration.nick.clone().unwrap_or_else(|| "*".into());
                let text = format!("SASL authentication failed: {}", error.text);
                self.say(numeric(&nick, ERR_SASLFAIL, &[], &text));
            }
        }
    }

    fn client_peer(&self) -> Option<std::net::IpAddr> {
        self.client.outbox().peer_ip()
    }

    /// Completes registration if everything has arrived: logs in, then welcomes.
    fn try_register(&mut self) {
        let registration = &self.registration;
        let Some(nick) = registration.nick.clone() else {
            return;
        };
        if !registration.user || registration.negotiating {
            return;
        }
        let (name, password) = match &registration.sasl {
            Sasl::Done { account, password } => (account.clone(), Some(password.clone())),
            // PASS is the account's password for a name that has one. For a free name it is
            // ignored rather than registering the name: IRC clients send a configured server
            // password (often a bouncer's) to every server.
            _ => {
                let pass = registration.pass.clone();
                let registered = self.client.server().has_account(&nick);
                (nick.clone(), pass.filter(|_| registered))
            }
        };
        let login = Command::Login {
            user: name.clone(),
            device: None,
            password: password.map(Password),
        };
        if let Err(error) = self.client.run(None, login) {
            return self.refuse_login(&nick, error);
        }
        let _ = self.link.nick.set(name.clone().into());
        self.welcome(&name);
        self.join_existing_rooms();
    }

    /// A refused login ends the connection: IRC has no way back to an unregistered state
    /// that clients expect.
    fn refuse_login(&mut self, nick: &str, error: ClientError) {
        let code = match error.code {
            ErrorCode::InvalidName => ERR_ERRONEUSNICKNAME,
            ErrorCode::BadPassword | ErrorCode::AccountRequired => ERR_PASSWDMISMATCH,
            _ => ERR_PASSWDMISMATCH,
        };
        let params: &[&str] = if code == ERR_ERRONEUSNICKNAME {
            &[nick]
        } else {
            &[]
        };
        self.say(numeric(nick, code, params, &error.text));
        self.flush();
        self.client.outbox().close(CloseReason::LoginRefused);
    }

    fn welcome(&mut self, nick: &str) {
        let version = env!("CARGO_PKG_VERSION");
        let nicklen = crate::protocol::name::MAX_NAME_LEN;
        self.numeric(RPL_WELCOME, &[], &format!("Welcome to chatd, {nick}"));
        self.numeric(
            RPL_YOURHOST,
            &[],
            &format!("Your host is {SERVER_NAME}, running version chatd-{version}"),
        );
        self.numeric(
            RPL_CREATED,
            &[],
            "This server speaks IRC for chatd (docs/irc.md)",
        );
        let version = format!("chatd-{version}");
        self.say(format!(
            ":{SERVER_NAME} {RPL_MYINFO} {nick} {SERVER_NAME} {version} o i\r\n"
        ));
        let isupport = [
            "CASEMAPPING=ascii".to_owned(),
            "CHANTYPES=#".to_owned(),
            format!("CHANNELLEN={}", nicklen + 1),
            format!("NICKLEN={nicklen}"),
            format!("USERLEN={nicklen}"),
            "CHANMODES=,,,i".to_owned(),
            "PREFIX=(o)@".to_owned(),
            "MAXTARGETS=1".to_owned(),
            "TOPICLEN=0".to_owned(),
            "NETWORK=chatd".to_owned(),
            "CHATHISTORY=100".to_owned(),
            "MSGREFTYPES=msgid,timestamp".to_owned(),
            "CLIENTTAGDENY=*,-typing".to_owned(),
            "UTF8ONLY".to_owned(),
        ];
        let params: Vec<&str> = isupport.iter().map(String::as_str).collect();
        self.numeric(RPL_ISUPPORT, &params, "are supported by this server");
        self.lusers();
        self.numeric(
            RPL_MOTDSTART,
            &[],
            &format!("- {SERVER_NAME} Message of the day -"),
        );
        for line in [
            "- chatd rooms are #channels; a PRIVMSG to a nick is a direct message.",
            "- Your rooms and history follow you across IRC and chatd's own protocol.",
        ] {
            self.numeric(RPL_MOTD, &[], line);
        }
        self.numeric(RPL_ENDOFMOTD, &[], "End of /MOTD command.");
    }
}

/// Standard base64 (RFC 4648, padded), as SASL uses it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in bytes {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_of_sasl_plain() {
        assert_eq!(
            decode_base64("AGFsaWNlAHNlY3JldA==").unwrap(),
            b"\0alice\0secret"
        );
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a*b").is_none());
    }
}
