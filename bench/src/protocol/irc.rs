//! IRC as the classic servers speak it: register with `NICK`/`USER`, wait for `001`,
//! `JOIN #room`, `PRIVMSG #room :body`, and answer `PING` with `PONG`.
//!
//! IRC servers do not echo a PRIVMSG to its sender, unlike chatd; the scenarios count only
//! deliveries to other members so the two protocols are compared on the same work.

use super::{split_word, Event};

pub(super) fn login(out: &mut Vec<u8>, nick: &str) {
    out.extend_from_slice(b"NICK ");
    out.extend_from_slice(nick.as_bytes());
    out.extend_from_slice(b"\r\nUSER ");
    out.extend_from_slice(nick.as_bytes());
    out.extend_from_slice(b" 0 * :chatd-bench\r\n");
}

pub(super) fn join(out: &mut Vec<u8>, channel: &str) {
    out.extend_from_slice(b"JOIN ");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(super) fn send(out: &mut Vec<u8>, channel: &str, body: &[u8]) {
    out.extend_from_slice(b"PRIVMSG ");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b" :");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn pong(out: &mut Vec<u8>, token: &[u8]) {
    out.extend_from_slice(b"PONG ");
    out.extend_from_slice(token);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn classify(line: &[u8]) -> Event<'_> {
    // An optional `:prefix` names the origin; the bench does not need it.
    let line_without_prefix = if line.first() == Some(&b':') {
        split_word(line).1
    } else {
        line
    };
    let (command, params) = split_word(line_without_prefix);
    match command {
        b"PRIVMSG" => trailing(params).map_or(Event::Other, Event::Message),
        b"PING" => Event::Ping(params),
        b"001" => Event::LoggedIn,
        b"366" => Event::Joined,
        b"ERROR" => Event::Closing(line),
        // 422 only says the server has no MOTD file, which is normal for a bench server.
        b"422" => Event::Other,
        // Other 4xx and 5xx numerics are errors (e.g. 433 nickname in use, 471 channel full).
        [b'4' | b'5', _, _] => Event::Rejected(line),
        _ => Event::Other,
    }
}

/// The trailing parameter: everything after the first ` :` (or a leading `:`).
fn trailing(params: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = params.strip_prefix(b":") {
        return Some(rest);
    }
    let at = params.windows(2).position(|w| w == b" :")?;
    Some(&params[at + 2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privmsg_yields_its_trailing_body() {
        let line = b":m1!m1@127.0.0.1 PRIVMSG #fan :1.2.3. xx";
        assert_eq!(classify(line), Event::Message(b"1.2.3. xx"));
    }

    #[test]
    fn registration_join_ping_and_errors_are_recognised() {
        assert_eq!(classify(b":irc.local 001 m1 :Welcome"), Event::LoggedIn);
        assert_eq!(
            classify(b":irc.local 366 m1 #fan :End of /NAMES list."),
            Event::Joined
        );
        assert_eq!(classify(b"PING :irc.local"), Event::Ping(b":irc.local"));
        assert!(matches!(
            classify(b":irc.local 433 * m1 :in use"),
            Event::Rejected(_)
        ));
        assert!(matches!(
            classify(b"ERROR :Closing link"),
            Event::Closing(_)
        ));
        assert_eq!(classify(b":m2!m2@h JOIN :#fan"), Event::Other);
    }
}
