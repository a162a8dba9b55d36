//! Server lines parsed into types, so nothing past this file touches raw wire text.
//!
//! The grammar is protocol.md's: an optional `@label ` first, then a verb. Lines this version
//! does not know become [`Kind::Other`] instead of an error: a later server may add verbs.

use crate::event::{Message, Presence};

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerLine {
    /// The label of the command this line answers; events never carry one.
    pub label: Option<String>,
    pub kind: Kind,
}

/// What a server line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello,
    /// `OK <VERB> <fields...>`: `verb` is upper-case, `fields` split on spaces.
    Ok {
        verb: String,
        fields: Vec<String>,
    },
    Err {
        code: String,
        text: String,
    },
    Msg(Message),
    Gap {
        room: String,
        from: u64,
        to: u64,
    },
    Epoch {
        room: String,
        epoch: String,
    },
    Joined {
        room: String,
        user: String,
    },
    Left {
        room: String,
        user: String,
    },
    Presence(Presence),
    Invited {
        room: String,
        by: String,
    },
    Kicked {
        room: String,
        by: String,
    },
    Typing {
        room: String,
        user: String,
        typing: bool,
    },
    Read {
        room: String,
        user: String,
        seq: u64,
    },
    /// `DEVICE <user> <device> added <key>` or `DEVICE <user> <device> revoked`.
    Device {
        user: String,
        device: String,
        key: Option<String>,
    },
    /// `BYE <reason>[ <detail>...] :<text>`.
    Bye {
        reason: String,
        details: Vec<String>,
        text: String,
    },
    /// Any other line (WHO and ROOM rows, HELP, PONG, a verb from a later version): kept
    /// whole for the request that collects it.
    Other(String),
}

impl ServerLine {
    pub fn parse(line: &str) -> ServerLine {
        let (label, rest) = match line.strip_prefix('@') {
            Some(tagged) => match tagged.split_once(' ') {
                Some((label, rest)) => (Some(label.to_owned()), rest),
                None => (None, line),
            },
            None => (None, line),
        };
        ServerLine {
            label,
            kind: Kind::parse(rest).unwrap_or_else(|| Kind::Other(rest.to_owned())),
        }
    }
}

/// Splits off the ` :text` tail of a reply: (fields, text).
fn split_text(rest: &str) -> (&str, &str) {
    match rest.find(" :") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None if rest.starts_with(':') => ("", &rest[1..]),
        None => (rest, ""),
    }
}

impl Kind {
    fn parse(line: &str) -> Option<Kind> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words = |n: usize| -> Option<Vec<&str>> {
            let fields: Vec<&str> = rest.split(' ').collect();
            (fields.len() == n).then_some(fields)
        };
        Some(match verb {
            "HELLO" => Kind::Hello,
            "OK" => {
                let mut fields = rest.split(' ').filter(|f| !f.is_empty());
                let verb = fields.next()?.to_ascii_uppercase();
                Kind::Ok {
                    verb,
                    fields: fields.map(str::to_owned).collect(),
                }
            }
            "ERR" => {
                let (code, text) = split_text(rest);
                Kind::Err {
                    code: code.trim().to_owned(),
                    text: text.to_owned(),
                }
            }
            "MSG" => Kind::Msg(Message::parse(rest)?),
            "GAP" => {
                let w = words(3)?;
                Kind::Gap {
                    room: w[0].to_owned(),
                    from: w[1].parse().ok()?,
                    to: w[2].parse().ok()?,
                }
            }
            "EPOCH" => {
                let (fields, _) = split_text(rest);
                let (room, epoch) = fields.split_once(' ')?;
                Kind::Epoch {
                    room: room.to_owned(),
                    epoch: epoch.trim().to_owned(),
                }
            }
            "JOINED" | "LEFT" | "INVITED" | "KICKED" => {
                let w = words(2)?;
                let (room, who) = (w[0].to_owned(), w[1].to_owned());
                match verb {
                    "JOINED" => Kind::Joined { room, user: who },
                    "LEFT" => Kind::Left { room, user: who },
                    "INVITED" => Kind::Invited { room, by: who },
                    _ => Kind::Kicked { room, by: who },
                }
            }
            "PRESENCE" => {
                let w: Vec<&str> = rest.split(' ').collect();
                match w[..] {
                    [user, "online"] => Kind::Presence(Presence {
                        user: user.to_owned(),
                        online: true,
                        last_seen: None,
                    }),
                    [user, "offline", last_seen] => Kind::Presence(Presence {
                        user: user.to_owned(),
                        online: false,
                        last_seen: last_seen.strip_prefix("last_seen=").map(str::to_owned),
                    }),
                    _ => return None,
                }
            }
            "TYPING" => {
                let w: Vec<&str> = rest.split(' ').collect();
                match w[..] {
                    [room, user] => Kind::Typing {
                        room: room.to_owned(),
                        user: user.to_owned(),
                        typing: true,
                    },
                    [room, user, "stop"] => Kind::Typing {
                        room: room.to_owned(),
                        user: user.to_owned(),
                        typing: false,
                    },
                    _ => return None,
                }
            }
            "READ" => {
                let w = words(3)?;
                Kind::Read {
                    room: w[0].to_owned(),
                    user: w[1].to_owned(),
                    seq: w[2].parse().ok()?,
                }
            }
            "DEVICE" => {
                let w: Vec<&str> = rest.split(' ').collect();
                let (user, device, key) = match w[..] {
                    [user, device, "added", key] => (user, device, Some(key.to_owned())),
                    [user, device, "revoked"] => (user, device, None),
                    _ => return None,
                };
                Kind::Device {
                    user: user.to_owned(),
                    device: device.to_owned(),
                    key,
                }
            }
            "BYE" => {
                let (fields, text) = split_text(rest);
                let mut fields = fields.split(' ').filter(|f| !f.is_empty());
                Kind::Bye {
                    reason: fields.next()?.to_owned(),
                    details: fields.map(str::to_owned).collect(),
                    text: text.to_owned(),
                }
            }
            _ => return None,
        })
    }
}

/// The value of `key=` among `fields`.
pub(crate) fn field<'a>(fields: &'a [String], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

impl Message {
    /// `<room> <seq> <msg_id> <sent_at> <sender> <body>`: the fields after `MSG `.
    fn parse(rest: &str) -> Option<Message> {
        let mut fields = rest.splitn(6, ' ');
        Some(Message {
            room: fields.next()?.to_owned(),
            seq: fields.next()?.parse().ok()?,
            id: fields.next()?.to_owned(),
            sent_at: fields.next()?.to_owned(),
            sender: fields.next()?.to_owned(),
            body: fields.next().unwrap_or("").to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_replay_line_is_still_a_message() {
        let line =
            ServerLine::parse("@s MSG general 42 0192-x 2026-11-28T10:00:02.000Z alice yes! two");
        assert_eq!(line.label.as_deref(), Some("s"));
        let Kind::Msg(msg) = line.kind else {
            panic!("not a MSG")
        };
        assert_eq!((msg.room.as_str(), msg.seq), ("general", 42));
        assert_eq!(msg.body, "yes! two");
    }

    /// `DEVICE` announces a key (added) or its withdrawal; any other shape is not DEVICE.
    #[test]
    fn device_lines_carry_the_key_or_its_revocation() {
        let key = "ab".repeat(32);
        assert_eq!(
            ServerLine::parse(&format!("DEVICE bob phone added {key}")).kind,
            Kind::Device {
                user: "bob".into(),
                device: "phone".into(),
                key: Some(key)
            }
        );
        assert_eq!(
            ServerLine::parse("DEVICE bob phone revoked").kind,
            Kind::Device {
                user: "bob".into(),
                device: "phone".into(),
                key: None
            }
        );
        assert!(matches!(
            ServerLine::parse("DEVICE bob phone lost").kind,
            Kind::Other(_)
        ));
    }

    #[test]
    fn bye_slow_consumer_keeps_its_cursors() {
        let line = ServerLine::parse("BYE slow-consumer general=41 dm:a:b=3 :you fell behind");
        assert_eq!(
            line.kind,
            Kind::Bye {
                reason: "slow-consumer".into(),
                details: vec!["general=41".into(), "dm:a:b=3".into()],
                text: "you fell behind".into()
            }
        );
    }

    #[test]
    fn errors_and_oks_split_code_from_text() {
        let err = ServerLine::parse("@c1 ERR rate-limited :retry in 200ms");
        assert_eq!(
            err.kind,
            Kind::Err {
                code: "rate-limited".into(),
                text: "retry in 200ms".into()
            }
        );
        let ok = ServerLine::parse("OK SYNC general seq=4 epoch=00ff00ff00ff00ff more");
        let Kind::Ok { verb, fields } = ok.kind else {
            panic!("not an OK")
        };
        assert_eq!(verb, "SYNC");
        assert_eq!(field(&fields, "seq"), Some("4"));
        assert_eq!(fields.last().map(String::as_str), Some("more"));
    }

    #[test]
    fn unknown_and_malformed_lines_are_kept_whole() {
        for line in ["FROB x", "GAP general x 2", "WHO general bob online", ""] {
            assert!(
                matches!(ServerLine::parse(line).kind, Kind::Other(_)),
                "{line}"
            );
        }
    }
}
