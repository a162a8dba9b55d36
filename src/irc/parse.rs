//! Parsing one IRC line (RFC 1459 framing with IRCv3 message tags) into a [`Message`].
//!
//! ```text
//! ['@' <tags> ' '] [':' <source> ' '] <command> [' ' <param>]* [' :' <trailing>]
//! <tags> = <key>['=' <escaped value>] [';' ...]
//! ```
//!
//! Nothing after this file sees raw client bytes: a line that is not UTF-8, has no command,
//! or has more parameters than IRC allows is refused here.

/// Most parameters a message may carry (RFC 2812: 14 plus a trailing one).
pub const MAX_PARAMS: usize = 15;
/// Most client tags' bytes (IRCv3 message-tags: 4,094 for the client's own tags).
pub const MAX_TAG_BYTES: usize = 4094;
/// Longest IRC line without its tags, line end included (RFC 1459).
pub const MAX_LINE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tags: Vec<(String, String)>,
    /// Upper-cased.
    pub command: String,
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line is not UTF-8.
    InvalidUtf8,
    /// Only tags or a source: no command.
    NoCommand,
    /// More than [`MAX_PARAMS`] parameters, or tags over [`MAX_TAG_BYTES`].
    TooLong,
}

impl Message {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }
}

/// Parses one line (without its line end). `Ok(None)` for a line of only spaces.
pub fn parse(line: &[u8]) -> Result<Option<Message>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut rest = line.trim_start_matches(' ');
    if rest.is_empty() {
        return Ok(None);
    }
    let mut tags = Vec::new();
    if let Some(after) = rest.strip_prefix('@') {
        let (block, tail) = after.split_once(' ').unwrap_or((after, ""));
        if block.len() > MAX_TAG_BYTES {
            return Err(ParseError::TooLong);
        }
        for item in block.split(';').filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            tags.push((key.to_owned(), unescape(value)));
        }
        rest = tail.trim_start_matches(' ');
    }
    if rest.starts_with(':') {
        // A source from a client is ignored (RFC 1459 lets a client send its own nick).
        rest = rest.split_once(' ').map_or("", |(_, tail)| tail);
        rest = rest.trim_start_matches(' ');
    }
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if command.is_empty() {
        return Err(ParseError::NoCommand);
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if params.len() == MAX_PARAMS {
            return Err(ParseError::TooLong);
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing.to_owned());
            break;
        }
        let (param, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        params.push(param.to_owned());
        rest = tail;
    }
    Ok(Some(Message {
        tags,
        command: command.to_ascii_uppercase(),
        params,
    }))
}

/// A tag value's escapes (IRCv3 message-tags): `\:` `;`, `\s` space, `\\`, `\r`, `\n`.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A tag value escaped for the wire.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str) -> Message {
        parse(line.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn commands_params_and_trailing() {
        let m = msg("privmsg #general :hello there ");
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#general", "hello there "]);
        let m = msg(":nick!u@h JOIN   #a,#b  key");
        assert_eq!(m.params, ["#a,#b", "key"]);
        assert_eq!(msg("CAP LS 302\r").params, ["LS", "302"]);
        assert_eq!(msg("PRIVMSG x :").params, ["x", ""]);
    }

    #[test]
    fn tags_are_unescaped() {
        let m = msg("@label=abc;+typing=active;x=a\\sb\\:c TAGMSG #r");
        assert_eq!(m.tag("label"), Some("abc"));
        assert_eq!(m.tag("+typing"), Some("active"));
        assert_eq!(m.tag("x"), Some("a b;c"));
        assert_eq!(escape("a b;c\\"), "a\\sb\\:c\\\\");
    }

    #[test]
    fn malformed_lines_are_refused_not_panicked_on() {
        assert_eq!(parse(b"   ").unwrap(), None);
        assert_eq!(parse(b"@a=b").unwrap_err(), ParseError::NoCommand);
        assert_eq!(parse(b":src").unwrap_err(), ParseError::NoCommand);
        assert_eq!(parse(b"\xff\xfe").unwrap_err(), ParseError::InvalidUtf8);
        let many = format!("X{}", " a".repeat(16));
        assert_eq!(parse(many.as_bytes()).unwrap_err(), ParseError::TooLong);
        // Arbitrary bytes never panic.
        let mut seed = 7u64;
        // Short lines drawn from the bytes the parser treats specially.
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let alphabet = b" :@;=\\aZ#\x01\r\xff";
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
