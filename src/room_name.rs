//! Room kinds and direct-room names: the small vocabulary that the domain, the protocol and
//! the store all share, kept here so none of them imports another for it.
//!
//! A direct-message room is named `dm:<a>:<b>` with the two user names sorted; `:` cannot
//! appear in a plain name, so the two kinds never collide.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// Anyone may join, list its members and see that it exists.
    Public,
    /// A direct conversation: exactly two members, invisible to everyone else.
    Direct,
}

pub const DM_PREFIX: &str = "dm:";

/// The canonical name of the direct-message room between two (distinct) users.
pub fn dm_room_name(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("{DM_PREFIX}{first}:{second}")
}

pub fn is_dm_room(name: &str) -> bool {
    name.starts_with(DM_PREFIX)
}

/// The other member of a direct room, seen from `me`; `None` if `room` is not a direct room.
pub fn dm_peer<'a>(room: &'a str, me: &str) -> Option<&'a str> {
    let (a, b) = room.strip_prefix(DM_PREFIX)?.split_once(':')?;
    Some(if a == me { b } else { a })
}

impl RoomKind {
    /// The kind a room's name implies.
    pub fn of(name: &str) -> RoomKind {
        if is_dm_room(name) {
            RoomKind::Direct
        } else {
            RoomKind::Public
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_rooms_are_canonical() {
        assert_eq!(dm_room_name("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_peer("dm:alice:bob", "alice"), Some("bob"));
        assert_eq!(dm_peer("dm:alice:bob", "bob"), Some("alice"));
        assert_eq!(dm_peer("general", "bob"), None);
        assert_eq!(RoomKind::of("dm:a:b"), RoomKind::Direct);
    }
}
