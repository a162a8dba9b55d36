//! Parsing one client line into a typed [`Request`].
//!
//! Nothing downstream of this file sees raw client text: the reader thread calls
//! [`parse_request`] and either gets a `Request` whose names are validated and lower-cased and
//! whose body is checked, or a [`Rejection`] that becomes one `ERR` line.
//!
//! Wire shape (protocol.md has the full grammar):
//!
//! ```text
//! [@<tags> ]<VERB>[ <arg>...][ <body>]\r?\n
//! <tags> = <item>[;<item>...]   item = <label> | <key>=<value>
//! ```
//!
//! Fields are separated by one or more spaces; the body of SEND and DM is the rest of the line
//! after the fields before it (leading spaces dropped, everything else kept).

use super::error::{ClientError, ErrorCode};
use super::name::{is_invisible, parse_name, parse_room, printable};

/// Longest label and client message id a client may attach.
pub const MAX_LABEL_LEN: usize = 32;
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Longest PING token; it is echoed back, so it is kept short.
pub const MAX_PING_TOKEN_LEN: usize = 64;
/// An X25519 public key in KEY: 32 bytes, two hex digits each.
pub const PUBLIC_KEY_HEX_LEN: usize = 64;
/// HISTORY's page size when the client gives none.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// One parsed client line: the command plus the tags that travel with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed as `@<label> ` in front of every direct reply, so scripts can match replies.
    pub label: Option<String>,
    /// `cid=<id>`: the client's own id for a SEND or DM, kept for idempotent retries.
    pub client_id: Option<String>,
    pub command: Command,
    /// From the verb table: the command acts as a user, so it needs a LOGIN first.
    pub needs_login: bool,
}

/// Every command a client can send, with its arguments already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Login {
        user: String,
        device: Option<String>,
        /// Required for a registered name; for an unregistered one, it registers the name.
        password: Option<Password>,
    },
    /// Sets a password for the logged-in name, which must not have one yet.
    Register {
        password: Password,
    },
    /// Changes the logged-in name's password, given the current one; `end_sessions` closes
    /// the user's other sessions.
    ChangePassword {
        current: Password,
        password: Password,
        end_sessions: bool,
    },
    /// Owner only: make a room invite-only (`true`) or public again.
    Private {
        room: String,
        private: bool,
    },
    /// Owner only: let `user` join an invite-only room.
    Invite {
        room: String,
        user: String,
    },
    /// Owner only: remove `user` from the room (and their invitation).
    Kick {
        room: String,
        user: String,
    },
    /// Operators only: disconnect every session of `user` (`KICK <user>`, one argument).
    KickUser {
        user: String,
    },
    /// Operators only: refuse a user or an address from now on, closing their sessions.
    Ban {
        subject: BanSubject,
        reason: String,
    },
    /// Operators only: lift a ban.
    Unban {
        subject: BanSubject,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        body: String,
    },
    Dm {
        user: String,
        body: String,
    },
    Who {
        room: String,
    },
    Rooms,
    History {
        room: String,
        limit: usize,
        before: Option<u64>,
    },
    /// Replay of everything after `after` (the last seq the client saw).
    Sync {
        room: String,
        after: u64,
        /// The epoch the client's `after` belongs to, if it knows one.
        epoch: Option<String>,
    },
    /// The user is typing in `room` (or, with `stop`, no longer is).
    Typing {
        room: String,
        typing: bool,
    },
    /// The user has read `room` up to `seq`.
    Read {
        room: String,
        seq: u64,
    },
    /// A per-user setting.
    Set {
        setting: Setting,
    },
    Ping {
        token: Option<String>,
    },
    Help,
    Quit,
    Stats,
    /// The protocol version and the limits this server applies, for clients to pace by.
    Info,
    /// Publishes the public X25519 identity key of this session's device (docs/e2e.md).
    Key {
        /// 64 lower-case hex characters: the 32 bytes of the key.
        key: String,
    },
    /// Lists a user's device keys.
    Keys {
        user: String,
    },
    /// Withdraws one of the user's own device keys.
    Revoke {
        device: String,
    },
}

/// A password as the client sent it. Its `Debug` does not show it, so it cannot leak into a
/// log or a panic message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Longest password accepted: enough for a passphrase, short enough to hash cheaply.
pub const MAX_PASSWORD_LEN: usize = 128;

/// Settings a user can change with SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Whether other members see this user's read receipts.
    ShareReceipts(bool),
}

/// A line that could not be parsed. The label is kept when it was readable, so even the error
/// reply can be matched to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub label: Option<String>,
    pub error: ClientError,
}

/// Whom `BAN` and `UNBAN` name: `user <name>` or `address <ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanSubject {
    User(String),
    Address(std::net::IpAddr),
}

/// One command the server understands: the single list of commands (HELP, the parser and
/// the login check all read it), in the order HELP lists them.
pub struct Verb {
    pub name: &'static str,
    /// Quoted by HELP and by `missing-argument` errors, so the two cannot drift apart.
    pub usage: &'static str,
    /// Whether the command acts as a user and so needs a LOGIN first.
    pub needs_login: bool,
    /// Turns the arguments into a [`Command`]; extra arguments are refused after it, centrally.
    parse: fn(&mut Args<'_, '_>) -> Result<Command, ClientError>,
}

const fn verb(
    name: &'static str,
    usage: &'static str,
    needs_login: bool,
    parse: fn(&mut Args<'_, '_>) -> Result<Command, ClientError>,
) -> Verb {
    Verb {
        name,
        usage,
        needs_login,
        parse,
    }
}

/// Every command: name, usage, needs login, parser.
pub static VERBS: &[Verb] = &[
    verb(
        "LOGIN",
        "LOGIN <user> [device=<id>] [password=<password>]",
        false,
        login,
    ),
    verb("REGISTER", "REGISTER <password>", true, register),
    verb(
        "PASSWORD",
        "PASSWORD <current password> <new password> [end-sessions]",
        true,
        password,
    ),
    verb("JOIN", "JOIN <room>", true, join),
    verb("LEAVE", "LEAVE <room>", true, leave),
    verb("SEND", "SEND <room> <body>", true, send),
    verb("DM", "DM <user> <body>", true, dm),
    verb("WHO", "WHO <room>", true, who),
    verb("ROOMS", "ROOMS", true, |_| Ok(Command::Rooms)),
    verb(
        "HISTORY",
        "HISTORY <room> [<limit>] [before=<seq>]",
        true,
        history,
    ),
    verb(
        "SYNC",
        "SYNC <room> <after_seq> [epoch=<epoch>]",
        true,
        sync,
    ),
    verb("PRIVATE", "PRIVATE <room> on|off", true, private),
    verb("INVITE", "INVITE <room> <user>", true, invite),
    verb("KICK", "KICK <room> <user> | KICK <user>", true, kick),
    verb("BAN", "BAN user <name>|address <ip> [<reason>]", true, ban),
    verb("UNBAN", "UNBAN user <name>|address <ip>", true, unban),
    verb("TYPING", "TYPING <room> [stop]", true, typing),
    verb("READ", "READ <room> <seq>", true, read),
    verb("SET", "SET receipts on|off", true, set),
    verb("KEY", "KEY <public key: 64 hex digits>", true, key),
    verb("KEYS", "KEYS <user>", true, keys),
    verb("REVOKE", "REVOKE <device>", true, revoke),
    verb("PING", "PING [<token>]", false, ping),
    verb("STATS", "STATS", false, |_| Ok(Command::Stats)),
    verb("INFO", "INFO", false, |_| Ok(Command::Info)),
    verb("HELP", "HELP", false, |_| Ok(Command::Help)),
    verb("QUIT", "QUIT", false, |_| Ok(Command::Quit)),
];

/// Parses one line (without its `\n`). `Ok(None)` is a blank line, which is ignored.
pub fn parse_request(line: &[u8], max_body: usize) -> Result<Option<Request>, Rejection> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| Rejection {
        label: readable_label(line),
        error: ClientError::new(ErrorCode::InvalidUtf8, "the line is not valid UTF-8"),
    })?;
    let mut fields = Fields::new(text);
    let Some(mut verb) = fields.next() else {
        return Ok(None);
    };
    let mut label = None;
    let mut client_id = None;
    if let Some(tags) = verb.strip_prefix('@') {
        (label, client_id) = parse_tags(tags).map_err(|error| Rejection { label: None, error })?;
        verb = fields.next().ok_or_else(|| Rejection {
            label: label.clone(),
            error: ClientError::new(ErrorCode::MissingArgument, "a command must follow the tags"),
        })?;
    }
    match parse_command(verb, &mut fields, max_body) {
        Ok((command, needs_login)) => Ok(Some(Request {
            label,
            client_id,
            command,
            needs_login,
        })),
        Err(error) => Err(Rejection { label, error }),
    }
}

/// The label of a line that cannot be parsed as a whole (invalid UTF-8 further on, or too
/// long), if its tag block is readable, so even that error can be matched to its request.
pub fn readable_label(line: &[u8]) -> Option<String> {
    let block = line.split(|&b| b == b' ').next()?;
    let tags = std::str::from_utf8(block).ok()?.strip_prefix('@')?;
    parse_tags(tags).ok()?.0
}

fn parse_command(
    name: &str,
    fields: &mut Fields,
    max_body: usize,
) -> Result<(Command, bool), ClientError> {
    let verb = VERBS
        .iter()
        .find(|verb| verb.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            ClientError::new(
                ErrorCode::UnknownCommand,
                format!("{} is not a command; type HELP", printable(name)),
            )
        })?;
    let mut args = Args {
        fields,
        usage: verb.usage,
        max_body,
    };
    let command = (verb.parse)(&mut args)?;
    args.finish()?;
    Ok((command, verb.needs_login))
}

// One parser per verb, named after it. Each sees only its arguments.

fn login(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let user = parse_name(args.required()?, "user")?;
    let mut device = None;
    let mut password = None;
    while let Some(option) = args.optional() {
        if let Ok(value) = args.keyed(option, "device") {
            once(device.replace(parse_name(value, "device")?), "device")?;
        } else if let Ok(value) = args.keyed(option, "password") {
            once(password.replace(parse_password(value)?), "password")?;
        } else {
            // Not quoted: it might be a mistyped password.
            return Err(args.unexpected("option"));
        }
    }
    Ok(Command::Login {
        user,
        device,
        password,
    })
}

fn register(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Register {
        password: parse_password(args.required()?)?,
    })
}

fn password(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let current = parse_password(args.required()?)?;
    let password = parse_password(args.required()?)?;
    let end_sessions = match args.optional() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("end-sessions") => true,
        Some(_) => return Err(args.unexpected("option")),
    };
    Ok(Command::ChangePassword {
        current,
        password,
        end_sessions,
    })
}

fn private(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let value = args.required()?;
    let private = parse_on_off(args, value)?;
    Ok(Command::Private { room, private })
}

fn invite(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Invite {
        room: parse_room(args.required()?)?,
        user: parse_name(args.required()?, "user")?,
    })
}

/// `KICK <room> <user>` (a room's owner) or `KICK <user>` (an operator, server-wide).
fn kick(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let first = args.required()?;
    match args.optional() {
        Some(user) => Ok(Command::Kick {
            room: parse_room(first)?,
            user: parse_name(user, "user")?,
        }),
        None => Ok(Command::KickUser {
            user: parse_name(first, "user")?,
        }),
    }
}

fn ban_subject(args: &mut Args<'_, '_>) -> Result<BanSubject, ClientError> {
    let kind = args.required()?;
    let target = args.required()?;
    if kind.eq_ignore_ascii_case("user") {
        return Ok(BanSubject::User(parse_name(target, "user")?));
    }
    if kind.eq_ignore_ascii_case("address") {
        return target.parse().map(BanSubject::Address).map_err(|_| {
            ClientError::new(
                ErrorCode::BadArgument,
                format!("{target} is not an IP address"),
            )
        });
    }
    Err(args.unexpected(kind))
}

fn ban(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let subject = ban_subject(args)?;
    let reason = args.fields.rest().unwrap_or_default().to_owned();
    Ok(Command::Ban { subject, reason })
}

fn unban(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Unban {
        subject: ban_subject(args)?,
    })
}

fn join(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Join {
        room: parse_room(args.required()?)?,
    })
}

fn leave(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Leave {
        room: parse_room(args.required()?)?,
    })
}

fn send(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let body = parse_body(args.rest()?, args.max_body)?;
    Ok(Command::Send { room, body })
}

fn dm(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let user = parse_name(args.required()?, "user")?;
    let body = parse_body(args.rest()?, args.max_body)?;
    Ok(Command::Dm { user, body })
}

fn who(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Who {
        room: parse_room(args.required()?)?,
    })
}

fn history(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let mut limit = None;
    let mut before = None;
    while let Some(field) = args.optional() {
        if let Ok(value) = args.keyed(field, "before") {
            if before.replace(parse_number(value, "before")?).is_some() {
                return Err(args.unexpected(field));
            }
        } else if limit.is_none() && before.is_none() {
            limit = Some(parse_number(field, "limit")?);
        } else {
            return Err(args.unexpected(field));
        }
    }
    let limit = match limit {
        Some(0) => {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                "limit must be at least 1",
            ))
        }
        Some(n) => n as usize,
        None => DEFAULT_HISTORY_LIMIT,
    };
    Ok(Command::History {
        room,
        limit,
        before,
    })
}

fn sync(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let after = parse_number(args.required()?, "after_seq")?;
    let epoch = match args.optional() {
        Some(field) => Some(parse_epoch(args.keyed(field, "epoch")?)?),
        None => None,
    };
    Ok(Command::Sync { room, after, epoch })
}

fn typing(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let typing = match args.optional() {
        None => true,
        Some(word) if word.eq_ignore_ascii_case("stop") => false,
        Some(other) => return Err(args.unexpected(other)),
    };
    Ok(Command::Typing { room, typing })
}

fn read(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let room = parse_room(args.required()?)?;
    let seq = parse_number(args.required()?, "seq")?;
    Ok(Command::Read { room, seq })
}

fn set(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let key = args.required()?;
    let value = args.required()?;
    if !key.eq_ignore_ascii_case("receipts") {
        return Err(args.unexpected(key));
    }
    let share = parse_on_off(args, value)?;
    Ok(Command::Set {
        setting: Setting::ShareReceipts(share),
    })
}

fn key(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Key {
        key: parse_public_key(args.required()?)?,
    })
}

fn keys(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Keys {
        user: parse_name(args.required()?, "user")?,
    })
}

fn revoke(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    Ok(Command::Revoke {
        device: parse_name(args.required()?, "device")?,
    })
}

/// An X25519 public key: 32 bytes as 64 hex digits, lower-cased. The server never uses the
/// key; it checks the shape only, so a typo cannot reach other people's clients.
fn parse_public_key(raw: &str) -> Result<String, ClientError> {
    if raw.len() != PUBLIC_KEY_HEX_LEN || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::new(
            ErrorCode::BadArgument,
            format!("a public key is {PUBLIC_KEY_HEX_LEN} hex digits (32 bytes)"),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

fn ping(args: &mut Args<'_, '_>) -> Result<Command, ClientError> {
    let token = args.optional().map(str::to_owned);
    if let Some(token) = &token {
        if token.len() > MAX_PING_TOKEN_LEN || token.chars().any(char::is_control) {
            return Err(ClientError::new(
                ErrorCode::BadArgument,
                format!("a PING token is 1-{MAX_PING_TOKEN_LEN} printable characters"),
            ));
        }
    }
    Ok(Command::Ping { token })
}

/// `@label`, `@cid=x`, `@label;cid=x`: items without `=` are the label, `k=v` items are tags.
/// Unknown tags are ignored so clients can send tags a later server version understands.
fn parse_tags(tags: &str) -> Result<(Option<String>, Option<String>), ClientError> {
    let bad = |text: String| ClientError::new(ErrorCode::BadTag, text);
    let mut label = None;
    let mut client_id = None;
    for item in tags.split(';') {
        match item.split_once('=') {
            None => {
                if !is_token(item, MAX_LABEL_LEN) {
                    return Err(bad(format!(
                        "a label is 1-{MAX_LABEL_LEN} of A-Z a-z 0-9 . _ -; got {}",
                        printable(item)
                    )));
                }
                if label.replace(item.to_owned()).is_some() {
                    return Err(bad("only one label per command".into()));
                }
            }
            Some(("cid", value)) => {
                if !is_token(value, MAX_CLIENT_ID_LEN) {
                    return Err(bad(format!(
                        "a cid is 1-{MAX_CLIENT_ID_LEN} of A-Z a-z 0-9 . _ -"
                    )));
                }
                client_id = Some(value.to_owned());
            }
            Some((key, _)) if is_token(key, MAX_LABEL_LEN) => {}
            Some((key, _)) => return Err(bad(format!("{} is not a tag name", printable(key)))),
        }
    }
    Ok((label, client_id))
}

fn is_token(s: &str, max_len: usize) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn parse_body(body: &str, max_body: usize) -> Result<String, ClientError> {
    if body.len() > max_body {
        return Err(ClientError::new(
            ErrorCode::BodyTooLong,
            format!(
                "a message body is at most {max_body} bytes; this one is {}",
                body.len()
            ),
        ));
    }
    // Bodies reach other people's terminals: an escape sequence could clear or rewrite them.
    // Tab is the one control character that is harmless and useful. The Unicode line and
    // paragraph separators (U+2028, U+2029: all of categories Zl and Zp) are refused like NEL:
    // a client that splits text on Unicode line breaks would show the rest of the body as a
    // line of its own, which could be made to look like a MSG from someone else.
    if body
        .chars()
        .any(|c| c.is_control() && c != '\t' || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(ClientError::new(
            ErrorCode::ControlCharacter,
            "control characters are not allowed in a message body (tab is)",
        ));
    }
    Ok(body.to_owned())
}

fn parse_on_off(args: &Args<'_, '_>, value: &str) -> Result<bool, ClientError> {
    match value.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(args.unexpected(value)),
    }
}

/// 1-128 printable characters without spaces: no control characters, and no characters that
/// show as nothing or as a space (NBSP, zero-width, bidi controls: see [`is_invisible`]), which
/// a person cannot type back reliably. Errors never quote it.
fn parse_password(raw: &str) -> Result<Password, ClientError> {
    if raw.is_empty()
        || raw.len() > MAX_PASSWORD_LEN
        || raw.chars().any(|c| c.is_control() || is_invisible(c))
    {
        return Err(ClientError::new(
            ErrorCode::BadArgument,
            format!("a password is 1-{MAX_PASSWORD_LEN} printable characters without spaces"),
        ));
    }
    Ok(Password(raw.to_owned()))
}

/// A decimal number: digits only (`u64::from_str` alone would also take a leading `+`).
fn parse_number(raw: &str, what: &str) -> Result<u64, ClientError> {
    let digits = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit())).then_some(raw);
    digits
        .and_then(|raw| raw.parse::<u64>().ok())
        .ok_or_else(|| {
            ClientError::new(
                ErrorCode::BadArgument,
                format!("{what} must be a whole number; got {}", printable(raw)),
            )
        })
}

/// An epoch as the server writes it: 16 lower-case hex characters.
fn parse_epoch(raw: &str) -> Result<String, ClientError> {
    if raw.len() == 16 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(raw.to_owned())
    } else {
        Err(ClientError::new(
            ErrorCode::BadArgument,
            format!(
                "{} is not an epoch (16 lower-case hex characters)",
                printable(raw)
            ),
        ))
    }
}

/// An option given twice (`Some` from `Option::replace`) is refused: which one was meant is
/// a guess. The value is not quoted: it may be a password.
fn once<T>(previous: Option<T>, key: &str) -> Result<(), ClientError> {
    match previous {
        Some(_) => Err(ClientError::new(
            ErrorCode::BadArgument,
            format!("{key}= given twice"),
        )),
        None => Ok(()),
    }
}

/// Space-separated fields of a line, with access to the unsplit rest for message bodies.
struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str) -> Fields<'a> {
        Fields { rest: line }
    }

    fn next(&mut self) -> Option<&'a str> {
        let trimmed = self.rest.trim_start_matches(' ');
        if trimmed.is_empty() {
            self.rest = trimmed;
            return None;
        }
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (field, rest) = trimmed.split_at(end);
        self.rest = rest;
        Some(field)
    }

    fn rest(&mut self) -> Option<&'a str> {
        let trimmed = self.rest.trim_start_matches(' ');
        self.rest = "";
        (!trimmed.is_empty()).then_some(trimmed)
    }
}

/// The arguments of one command, with errors that quote its usage.
struct Args<'f, 'a> {
    fields: &'f mut Fields<'a>,
    usage: &'static str,
    /// `--max-body`, for SEND and DM.
    max_body: usize,
}

impl<'a> Args<'_, 'a> {
    fn required(&mut self) -> Result<&'a str, ClientError> {
        self.fields.next().ok_or_else(|| self.missing())
    }

    fn optional(&mut self) -> Option<&'a str> {
        self.fields.next()
    }

    fn rest(&mut self) -> Result<&'a str, ClientError> {
        self.fields.rest().ok_or_else(|| self.missing())
    }

    /// `key=value` with a case-insensitive key; returns the value.
    fn keyed(&self, field: &'a str, key: &str) -> Result<&'a str, ClientError> {
        match field.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case(key) => Ok(v),
            _ => Err(self.unexpected(field)),
        }
    }

    fn finish(&mut self) -> Result<(), ClientError> {
        match self.fields.next() {
            Some(extra) => Err(self.unexpected(extra)),
            None => Ok(()),
        }
    }

    fn missing(&self) -> ClientError {
        ClientError::new(ErrorCode::MissingArgument, format!("usage: {}", self.usage))
    }

    fn unexpected(&self, field: &str) -> ClientError {
        ClientError::new(
            ErrorCode::BadArgument,
            format!("unexpected {}; usage: {}", printable(field), self.usage),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BODY: usize = 4096;

    fn parse(line: &str) -> Result<Option<Request>, Rejection> {
        parse_request(line.as_bytes(), MAX_BODY)
    }

    fn command(line: &str) -> Command {
        parse(line).unwrap().unwrap().command
    }

    fn code(line: &str) -> ErrorCode {
        parse(line).unwrap_err().error.code
    }

    /// KEY takes exactly 64 hex digits (lower-cased); KEYS a user name; REVOKE a device name.
    #[test]
    fn parses_key_directory_commands() {
        let key = "AB".repeat(32);
        assert_eq!(
            command(&format!("KEY {key}")),
            Command::Key {
                key: "ab".repeat(32)
            }
        );
        assert_eq!(code(&format!("KEY {}", &key[1..])), ErrorCode::BadArgument);
        assert_eq!(code(&format!("KEY {key}0")), ErrorCode::BadArgument);
        assert_eq!(
            code(&format!("KEY {}", "g".repeat(64))),
            ErrorCode::BadArgument
        );
        assert_eq!(code(&format!("KEY {key} extra")), ErrorCode::BadArgument);
        assert_eq!(code("KEY"), ErrorCode::MissingArgument);
        assert_eq!(command("keys Bob"), Command::Keys { user: "bob".into() });
        assert_eq!(code("KEYS b*b"), ErrorCode::InvalidName);
        assert_eq!(
            command("REVOKE Phone"),
            Command::Revoke {
                device: "phone".into()
            }
        );
        assert_eq!(code("REVOKE"), ErrorCode::MissingArgument);
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            command("LOGIN Alice device=Laptop"),
            Command::Login {
                user: "alice".into(),
                device: Some("laptop".into()),
                password: None
            }
        );
        assert_eq!(
            command("login bob password=s3cr=t! DEVICE=phone"),
            Command::Login {
                user: "bob".into(),
                device: Some("phone".into()),
                password: Some(Password("s3cr=t!".into()))
            }
        );
        assert_eq!(
            command("REGISTER hunter2"),
            Command::Register {
                password: Password("hunter2".into())
            }
        );
        assert_eq!(
            command("PASSWORD 0ld n3w END-SESSIONS"),
            Command::ChangePassword {
                current: Password("0ld".into()),
                password: Password("n3w".into()),
                end_sessions: true
            }
        );
        assert_eq!(
            command("PRIVATE team on"),
            Command::Private {
                room: "team".into(),
                private: true
            }
        );
        assert_eq!(
            command("INVITE team Carol"),
            Command::Invite {
                room: "team".into(),
                user: "carol".into()
            }
        );
        assert_eq!(
            command("KICK team carol"),
            Command::Kick {
                room: "team".into(),
                user: "carol".into()
            }
        );
        assert_eq!(
            command("KICK Carol"),
            Command::KickUser {
                user: "carol".into()
            }
        );
        assert_eq!(
            command("BAN user Mallory spam, twice"),
            Command::Ban {
                subject: BanSubject::User("mallory".into()),
                reason: "spam, twice".into()
            }
        );
        assert_eq!(
            command("BAN address 2001:db8::1"),
            Command::Ban {
                subject: BanSubject::Address("2001:db8::1".parse().unwrap()),
                reason: String::new()
            }
        );
        assert_eq!(
            command("UNBAN address 10.0.0.1"),
            Command::Unban {
                subject: BanSubject::Address([10, 0, 0, 1].into())
            }
        );
        assert_eq!(
            parse("BAN host x").unwrap_err().error.code,
            ErrorCode::BadArgument
        );
        assert_eq!(
            parse("BAN address nowhere").unwrap_err().error.code,
            ErrorCode::BadArgument
        );
        assert_eq!(
            command("JOIN general"),
            Command::Join {
                room: "general".into()
            }
        );
        assert_eq!(
            command("leave General"),
            Command::Leave {
                room: "general".into()
            }
        );
        assert_eq!(
            command("SEND general hi  all "),
            Command::Send {
                room: "general".into(),
                body: "hi  all ".into()
            }
        );
        assert_eq!(
            command("DM bob psst\tok"),
            Command::Dm {
                user: "bob".into(),
                body: "psst\tok".into()
            }
        );
        assert_eq!(
            command("WHO dm:alice:bob"),
            Command::Who {
                room: "dm:alice:bob".into()
            }
        );
        assert_eq!(command("ROOMS"), Command::Rooms);
        assert_eq!(
            command("HISTORY general"),
            Command::History {
                room: "general".into(),
                limit: DEFAULT_HISTORY_LIMIT,
                before: None
            }
        );
        assert_eq!(
            command("HISTORY general 10 before=7"),
            Command::History {
                room: "general".into(),
                limit: 10,
                before: Some(7)
            }
        );
        assert_eq!(
            command("HISTORY general BEFORE=7"),
            Command::History {
                room: "general".into(),
                limit: DEFAULT_HISTORY_LIMIT,
                before: Some(7)
            }
        );
        assert_eq!(
            command("sync general 41 epoch=5f0c1e2a9b3d4c6e"),
            Command::Sync {
                room: "general".into(),
                after: 41,
                epoch: Some("5f0c1e2a9b3d4c6e".into())
            }
        );
        assert_eq!(
            command("SYNC general 0"),
            Command::Sync {
                room: "general".into(),
                after: 0,
                epoch: None
            }
        );
        assert_eq!(
            command("TYPING general"),
            Command::Typing {
                room: "general".into(),
                typing: true
            }
        );
        assert_eq!(
            command("typing general STOP"),
            Command::Typing {
                room: "general".into(),
                typing: false
            }
        );
        assert_eq!(
            command("READ general 7"),
            Command::Read {
                room: "general".into(),
                seq: 7
            }
        );
        assert_eq!(
            command("SET Receipts OFF"),
            Command::Set {
                setting: Setting::ShareReceipts(false)
            }
        );
        assert_eq!(command("PING"), Command::Ping { token: None });
        assert_eq!(
            command("ping abc"),
            Command::Ping {
                token: Some("abc".into())
            }
        );
        assert_eq!(command("HELP"), Command::Help);
        assert_eq!(command("QUIT"), Command::Quit);
        assert_eq!(command("STATS"), Command::Stats);
        assert_eq!(command("info"), Command::Info);
    }

    #[test]
    fn crlf_blank_and_extra_spaces() {
        assert_eq!(
            command("JOIN   general\r"),
            Command::Join {
                room: "general".into()
            }
        );
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   \r").unwrap(), None);
    }

    #[test]
    fn tags_carry_label_and_client_id() {
        let request = parse("@q7;cid=3f9a SEND general hi").unwrap().unwrap();
        assert_eq!(request.label.as_deref(), Some("q7"));
        assert_eq!(request.client_id.as_deref(), Some("3f9a"));
        let request = parse("@cid=3f9a SEND general hi").unwrap().unwrap();
        assert_eq!(request.label, None);
        assert_eq!(request.client_id.as_deref(), Some("3f9a"));
        let request = parse("@x;future=1 PING").unwrap().unwrap();
        assert_eq!(request.label.as_deref(), Some("x"));
    }

    #[test]
    fn invalid_utf8_keeps_a_readable_label() {
        let rejection = parse_request(b"@q1 SEND general caf\xe9", MAX_BODY).unwrap_err();
        assert_eq!(rejection.error.code, ErrorCode::InvalidUtf8);
        assert_eq!(rejection.label.as_deref(), Some("q1"));
        assert_eq!(readable_label(b"\xff@q1 x"), None);
        assert_eq!(readable_label(b"@q\xff1 x"), None);
    }

    #[test]
    fn errors_keep_the_label() {
        let rejection = parse("@r1 FROB").unwrap_err();
        assert_eq!(rejection.label.as_deref(), Some("r1"));
        assert_eq!(rejection.error.code, ErrorCode::UnknownCommand);
        assert_eq!(rejection.error.text, "FROB is not a command; type HELP");
    }

    #[test]
    fn every_error_code_the_parser_gives() {
        assert_eq!(code("FROB"), ErrorCode::UnknownCommand);
        assert_eq!(code("SEND general"), ErrorCode::MissingArgument);
        assert_eq!(code("LOGIN"), ErrorCode::MissingArgument);
        assert_eq!(code("@x"), ErrorCode::MissingArgument);
        assert_eq!(code("JOIN a b"), ErrorCode::BadArgument);
        assert_eq!(code("LOGIN a phone"), ErrorCode::BadArgument);
        assert_eq!(code("HISTORY a x"), ErrorCode::BadArgument);
        assert_eq!(code("HISTORY a 0"), ErrorCode::BadArgument);
        assert_eq!(code("HISTORY a 5 6"), ErrorCode::BadArgument);
        assert_eq!(code("SYNC general"), ErrorCode::MissingArgument);
        assert_eq!(code("SYNC general -1"), ErrorCode::BadArgument);
        assert_eq!(code("SYNC general 1 2"), ErrorCode::BadArgument);
        assert_eq!(code("SYNC general 1 epoch=a!"), ErrorCode::BadArgument);
        assert_eq!(code("TYPING general go"), ErrorCode::BadArgument);
        assert_eq!(code("READ general"), ErrorCode::MissingArgument);
        assert_eq!(code("READ general x"), ErrorCode::BadArgument);
        assert_eq!(code("SET receipts maybe"), ErrorCode::BadArgument);
        assert_eq!(code("SET colour on"), ErrorCode::BadArgument);
        assert_eq!(code("@ PING"), ErrorCode::BadTag);
        assert_eq!(code("@a;b PING"), ErrorCode::BadTag);
        assert_eq!(code("@a!b PING"), ErrorCode::BadTag);
        assert_eq!(code("JOIN gen eral!"), ErrorCode::BadArgument);
        assert_eq!(code("JOIN general!"), ErrorCode::InvalidName);
        assert_eq!(code("LOGIN dm:a:b"), ErrorCode::InvalidName);
        assert_eq!(code("SEND general hi\x1b[2J"), ErrorCode::ControlCharacter);
        assert_eq!(code("SEND general a\u{0}b"), ErrorCode::ControlCharacter);
        assert_eq!(
            code(&format!("SEND general {}", "x".repeat(MAX_BODY + 1))),
            ErrorCode::BodyTooLong
        );
        assert_eq!(
            parse_request(b"SEND general \xff\xfe", MAX_BODY)
                .unwrap_err()
                .error
                .code,
            ErrorCode::InvalidUtf8
        );
    }

    /// Finding 14: the Unicode line and paragraph separators are refused in bodies like NEL.
    #[test]
    fn line_separators_are_refused_in_bodies() {
        for c in ['\u{85}', '\u{2028}', '\u{2029}'] {
            assert_eq!(
                code(&format!("SEND general hi{c}MSG general 9 x")),
                ErrorCode::ControlCharacter,
                "U+{:04X}",
                c as u32
            );
        }
        assert_eq!(
            command("SEND general caf\u{e9} \u{202f}ok"),
            Command::Send {
                room: "general".into(),
                body: "caf\u{e9} \u{202f}ok".into()
            },
            "other non-ASCII text, narrow no-break space included, is a body's business"
        );
    }

    /// Finding 19: values are what protocol.md says they are, or `bad-argument`.
    #[test]
    fn malformed_values_are_refused() {
        for line in [
            "LOGIN alice password=wrong password=s3cret",
            "LOGIN hank device=x device=y",
            "LOGIN hank DEVICE=x device=x",
            "HISTORY r +5",
            "HISTORY r 5 before=+1",
            "READ r +1",
            "SYNC r +0",
            "SYNC r 0 epoch=zz",
            "SYNC r 0 epoch=5F0C1E2A9B3D4C6E",
            "SYNC r 0 epoch=5f0c1e2a9b3d4c6",
            "SYNC r 0 epoch=5f0c1e2a9b3d4c6e0",
            "REGISTER \u{a0}x",
            "LOGIN bob4 password=a\u{200b}b",
            "LOGIN bob4 password=a\u{202e}b",
            "LOGIN bob4 password=a\u{2028}b",
            "PASSWORD \u{feff}x",
            "PASSWORD x\u{3000}",
            "REGISTER a\u{ad}b",
            "REGISTER a\u{e0041}b",
        ] {
            assert_eq!(code(line), ErrorCode::BadArgument, "{line:?}");
        }
        let rejection = parse("LOGIN alice password=topsecret password=other").unwrap_err();
        assert_eq!(rejection.error.text, "password= given twice");
        assert_eq!(
            command("LOGIN bob password=p\u{e4}ss\u{e9}-\u{2764}"),
            Command::Login {
                user: "bob".into(),
                device: None,
                password: Some(Password("p\u{e4}ss\u{e9}-\u{2764}".into()))
            },
            "visible non-ASCII is fine"
        );
        assert_eq!(
            command("READ r 0018"),
            Command::Read {
                room: "r".into(),
                seq: 18
            }
        );
    }

    #[test]
    fn body_at_the_limit_is_accepted() {
        let body = "x".repeat(MAX_BODY);
        assert_eq!(
            command(&format!("SEND general {body}")),
            Command::Send {
                room: "general".into(),
                body
            }
        );
    }

    #[test]
    fn passwords_are_never_quoted_in_errors() {
        for line in [
            "LOGIN alice pasword=topsecret",
            "LOGIN alice topsecret",
            "PASSWORD topsecret",
            "PASSWORD old topsecret now",
            "REGISTER top\u{1}secret",
        ] {
            let rejection = parse(line).unwrap_err();
            assert!(
                !rejection.error.text.contains("topsecret"),
                "{line}: {}",
                rejection.error.text
            );
        }
        assert_eq!(
            format!("{:?}", Password("topsecret".into())),
            "Password(..)"
        );
    }

    #[test]
    fn unknown_verbs_are_quoted_safely() {
        let rejection = parse("\x1b[31mEVIL").unwrap_err();
        assert_eq!(rejection.error.code, ErrorCode::UnknownCommand);
        assert!(!rejection.error.text.contains('\x1b'));
    }

    #[test]
    fn login_is_required_only_for_user_commands() {
        let needs_login = |line: &str| parse(line).unwrap().unwrap().needs_login;
        assert!(!needs_login("PING"));
        assert!(!needs_login("LOGIN a"));
        assert!(needs_login("JOIN a"));
        assert!(needs_login("ROOMS"));
    }

    mod random_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes at all: the parser returns a command, a blank, or a specific error,
            /// and never panics.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = parse_request(&bytes, MAX_BODY);
            }

            /// Lines built from protocol-ish pieces reach deep into every branch.
            #[test]
            fn protocolish_lines_never_panic(
                tag in "(@[a-z0-9;=]{0,12} )?",
                verb in proptest::sample::select(
                    VERBS.iter().map(|verb| verb.name).chain(["login", "x"]).collect::<Vec<_>>()
                ),
                args in "( [ -~\t\u{80}-\u{10ffff}]{0,20}){0,4}",
            ) {
                let line = format!("{tag}{verb}{args}");
                match parse_request(line.as_bytes(), 16) {
                    Ok(_) => {}
                    Err(rejection) => prop_assert!(!rejection.error.text.is_empty()),
                }
            }

            /// A valid SEND keeps its body byte for byte.
            #[test]
            fn send_body_round_trips(body in "[!-~][ -~\t]{0,100}") {
                let line = format!("SEND room {body}");
                prop_assert_eq!(
                    parse_request(line.as_bytes(), MAX_BODY).unwrap().unwrap().command,
                    Command::Send { room: "room".into(), body }
                );
            }
        }
    }
}
