//! What a caller persists to resume after its own process restarts: each room's cursor and
//! the sends not yet acknowledged. A line format, so it needs no serialisation library.
//!
//! ```text
//! chatd-resume 1
//! room general 5f0c1e2a9b3d4c6e 44
//! pending m-17 send general yes!
//! pending m-18 dm bob psst
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::event::Target;
use crate::Error;

const HEADER: &str = "chatd-resume 1";

/// A send that was not acknowledged: retried with its cid, so it is stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    pub cid: String,
    pub target: Target,
    pub body: String,
}

/// Each room's cursor (epoch, last seq the application took) and the unacknowledged sends.
///
/// ```
/// use chatd_client::ResumeState;
/// let state: ResumeState = "chatd-resume 1\nroom general 00000000000000aa 7\n".parse().unwrap();
/// assert_eq!(state.rooms["general"], ("00000000000000aa".to_string(), 7));
/// assert_eq!(state.to_string().parse::<ResumeState>().unwrap(), state);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// room -> (epoch, last seq delivered). An empty epoch means "not yet known".
    pub rooms: BTreeMap<String, (String, u64)>,
    pub pending: Vec<PendingSend>,
}

impl fmt::Display for ResumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        for (room, (epoch, seq)) in &self.rooms {
            let epoch = if epoch.is_empty() { "-" } else { epoch };
            writeln!(f, "room {room} {epoch} {seq}")?;
        }
        for send in &self.pending {
            let (verb, to) = match &send.target {
                Target::Room(room) => ("send", room),
                Target::User(user) => ("dm", user),
            };
            writeln!(f, "pending {} {verb} {to} {}", send.cid, send.body)?;
        }
        Ok(())
    }
}

impl FromStr for ResumeState {
    type Err = Error;

    fn from_str(text: &str) -> Result<ResumeState, Error> {
        let bad = |line: &str| Error::BadResumeState(format!("line {line:?}"));
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(Error::BadResumeState(format!("no {HEADER:?} header")));
        }
        let mut state = ResumeState::default();
        for line in lines.filter(|l| !l.is_empty()) {
            let (kind, rest) = line.split_once(' ').ok_or_else(|| bad(line))?;
            match kind {
                "room" => {
                    let fields: Vec<&str> = rest.split(' ').collect();
                    let [room, epoch, seq] = fields[..] else {
                        return Err(bad(line));
                    };
                    let epoch = if epoch == "-" { "" } else { epoch };
                    let seq = seq.parse().map_err(|_| bad(line))?;
                    state.rooms.insert(room.to_owned(), (epoch.to_owned(), seq));
                }
                "pending" => {
                    let mut fields = rest.splitn(4, ' ');
                    let (Some(cid), Some(verb), Some(to)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        return Err(bad(line));
                    };
                    let target = match verb {
                        "send" => Target::Room(to.to_owned()),
                        "dm" => Target::User(to.to_owned()),
                        _ => return Err(bad(line)),
                    };
                    state.pending.push(PendingSend {
                        cid: cid.to_owned(),
                        target,
                        body: fields.next().unwrap_or("").to_owned(),
                    });
                }
                _ => return Err(bad(line)),
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rooms_and_pending_sends_with_spaces_in_bodies() {
        let mut state = ResumeState::default();
        state
            .rooms
            .insert("dm:alice:bob".into(), (String::new(), 3));
        state
            .rooms
            .insert("general".into(), ("5f0c1e2a9b3d4c6e".into(), 44));
        state.pending.push(PendingSend {
            cid: "m-17".into(),
            target: Target::Room("general".into()),
            body: "yes!  two spaces".into(),
        });
        state.pending.push(PendingSend {
            cid: "m-18".into(),
            target: Target::User("bob".into()),
            body: "psst".into(),
        });
        assert_eq!(state.to_string().parse::<ResumeState>(), Ok(state));
    }

    #[test]
    fn rejects_what_it_did_not_write() {
        for text in [
            "",
            "chatd-resume 2\n",
            "chatd-resume 1\nroom x y\n",
            "chatd-resume 1\nfoo\n",
        ] {
            assert!(text.parse::<ResumeState>().is_err(), "{text:?}");
        }
    }
}
