//! State shared by every node: rooms and users as Redis keeps them. A node reads a room when
//! it first needs it (a JOIN, a login of one of its members, a message on its channel) and
//! follows it from then on through the fan-in; it never keeps its own copy of who exists.

use super::{keys, scripts, Cluster};
use crate::room_name::RoomKind;
use crate::store::StoreError;

/// A room as Redis holds it.
#[derive(Debug)]
pub struct SharedRoom {
    /// Made by this call (a new room, or one remade with a new epoch after Redis lost it).
    pub made: bool,
    pub kind: RoomKind,
    pub epoch: String,
    pub seq: u64,
    pub owner: Option<String>,
    pub private: bool,
    pub members: Vec<String>,
    pub reads: Vec<(String, u64)>,
    pub invited: Vec<String>,
}

/// How to make a room that does not exist yet.
pub struct NewRoom<'a> {
    pub kind: RoomKind,
    pub epoch: &'a str,
    pub owner: Option<&'a str>,
}

impl Cluster {
    /// The room called `name`, made as `new` says if it does not exist (`None`: only read
    /// it). In one script, so two nodes making the same room at once agree on its epoch.
    pub fn shared_room(
        &self,
        name: &str,
        new: Option<NewRoom<'_>>,
    ) -> Result<Option<SharedRoom>, StoreError> {
        let (kind, epoch, owner) = match &new {
            Some(new) => (kind_name(new.kind), new.epoch, new.owner.unwrap_or("")),
            None => ("", "", ""),
        };
        type Answer = (i64, Vec<String>, Vec<String>, Vec<String>, Vec<String>);
        let (made, fields, members, reads, invited): Answer =
            self.with_connection("reading a room", |con| {
                redis::cmd("EVAL")
                    .arg(scripts::ROOM)
                    .arg(5)
                    .arg(keys::room(name))
                    .arg(keys::log(name))
                    .arg(keys::members(name))
                    .arg(keys::reads(name))
                    .arg(keys::invites(name))
                    .arg(kind)
                    .arg(epoch)
                    .arg(owner)
                    .query(con)
            })?;
        let field = |wanted: &str| {
            fields
                .chunks(2)
                .find(|pair| pair[0] == wanted)
                .and_then(|pair| pair.get(1))
                .map(String::as_str)
        };
        let Some(epoch) = field("epoch") else {
            return Ok(None);
        };
        Ok(Some(SharedRoom {
            made: made == 1,
            kind: match field("kind") {
                Some("direct") => RoomKind::Direct,
                _ => RoomKind::of(name),
            },
            epoch: epoch.to_owned(),
            seq: field("seq").and_then(|seq| seq.parse().ok()).unwrap_or(0),
            owner: field("owner").filter(|o| !o.is_empty()).map(str::to_owned),
            private: field("private") == Some("1"),
            members,
            reads: reads
                .chunks(2)
                .filter_map(|pair| Some((pair[0].clone(), pair.get(1)?.parse().ok()?)))
                .collect(),
            invited,
        }))
    }

    /// At a login: records that `user` exists (before `OK LOGIN`, so every node knows them
    /// from then on: a DM from another node finds them) and returns the rooms they are in, on
    /// any node.
    pub fn logged_in(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let (_, rooms): (i64, Vec<String>) = self.with_connection("recording a login", |con| {
            con.query_pipeline(
                redis::pipe()
                    .cmd("HSETNX")
                    .arg(keys::user(user))
                    .arg("name")
                    .arg(user)
                    .cmd("SMEMBERS")
                    .arg(keys::user_rooms(user)),
            )
        })?;
        Ok(rooms)
    }

    /// Whether anyone called `user` has logged in on any node.
    pub fn user_exists(&self, user: &str) -> Result<bool, StoreError> {
        self.with_connection("looking a user up", |con| {
            redis::cmd("EXISTS").arg(keys::user(user)).query(con)
        })
    }
}

fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Public => "public",
        RoomKind::Direct => "direct",
    }
}
