//! Names of users, rooms and devices.
//!
//! A name is 1-32 characters of `[A-Za-z0-9._-]`. Names are case-insensitive: the server
//! lower-cases them on the way in, so `Alice` and `alice` are one person and nobody can
//! impersonate someone by changing case. Direct-message room names (`dm:<a>:<b>`) are defined
//! in [`crate::room_name`].

use super::error::{ClientError, ErrorCode};
use crate::room_name::DM_PREFIX;

pub const MAX_NAME_LEN: usize = 32;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.chars().all(is_name_char)
}

/// Validates and lower-cases a user, room or device name. `what` names it in the error.
pub fn parse_name(raw: &str, what: &str) -> Result<String, ClientError> {
    if is_plain_name(raw) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(invalid(raw, what))
    }
}

/// Validates a room reference: a plain room name, or a direct-message room `dm:<a>:<b>`.
pub fn parse_room(raw: &str) -> Result<String, ClientError> {
    let lower = raw.to_ascii_lowercase();
    if let Some(pair) = lower.strip_prefix(DM_PREFIX) {
        if let Some((a, b)) = pair.split_once(':') {
            if is_plain_name(a) && is_plain_name(b) && a < b {
                return Ok(format!("{DM_PREFIX}{a}:{b}"));
            }
        }
        return Err(invalid(raw, "direct-message room"));
    }
    parse_name(raw, "room")
}

fn invalid(raw: &str, what: &str) -> ClientError {
    ClientError::new(
        ErrorCode::InvalidName,
        format!(
            "{} is not a valid {what} name (1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -)",
            printable(raw)
        ),
    )
}

/// Whether `c` shows as nothing or as a space: Unicode white space (NBSP, U+3000 and the
/// line and paragraph separators included) and the format characters of category Cf
/// (zero-width space and joiners, bidi controls, soft hyphen, byte-order mark, tag
/// characters, ...). Such a character cannot be read off a screen or reliably typed again,
/// and can make two strings that look the same differ.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
}

/// Makes client input safe to quote back in an error: control characters become `?` and long
/// input is cut, so an error can never carry a terminal escape or a huge line.
pub fn printable(raw: &str) -> String {
    const MAX_QUOTED: usize = 40;
    let mut out: String = raw
        .chars()
        .take(MAX_QUOTED)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if raw.chars().count() > MAX_QUOTED {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_checked() {
        assert_eq!(parse_name("Alice_1.x-y", "user").unwrap(), "alice_1.x-y");
        assert!(parse_name("", "user").is_err());
        assert!(parse_name(&"a".repeat(33), "user").is_err());
        assert!(parse_name("a b", "user").is_err());
        assert!(parse_name("dm:a:b", "user").is_err());
        assert!(parse_name("é", "user").is_err());
    }

    #[test]
    fn dm_rooms_are_canonical() {
        assert_eq!(parse_room("DM:Alice:Bob").unwrap(), "dm:alice:bob");
        assert!(parse_room("dm:bob:alice").is_err(), "unsorted names");
        assert!(parse_room("dm:alice:alice").is_err());
        assert!(parse_room("dm:alice").is_err());
        assert_eq!(parse_room("General").unwrap(), "general");
    }

    #[test]
    fn invisible_characters() {
        for c in [
            ' ', '\u{a0}', '\u{200b}', '\u{200d}', '\u{202e}', '\u{2066}', '\u{feff}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', '\u{e9}', '\u{2764}', '\u{1f600}', '\u{fe0f}'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\x1b[2Jb"), "a?[2Jb");
        assert!(printable(&"x".repeat(100)).ends_with("..."));
    }
}
