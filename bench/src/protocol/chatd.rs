//! chatd's line protocol: `LOGIN`, `JOIN`, `SEND`, and `MSG <room> <seq> <id> <sent_at>
//! <sender> <body>` deliveries (see protocol.md at the repository root).

use super::{split_word, Event};

pub(super) fn login(out: &mut Vec<u8>, user: &str) {
    out.extend_from_slice(b"LOGIN ");
    out.extend_from_slice(user.as_bytes());
    out.push(b'\n');
}

pub(super) fn join(out: &mut Vec<u8>, room: &str) {
    out.extend_from_slice(b"JOIN ");
    out.extend_from_slice(room.as_bytes());
    out.push(b'\n');
}

pub(super) fn send(out: &mut Vec<u8>, room: &str, body: &[u8]) {
    out.extend_from_slice(b"SEND ");
    out.extend_from_slice(room.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out.push(b'\n');
}

pub(super) fn pong(out: &mut Vec<u8>, token: &[u8]) {
    out.extend_from_slice(b"PONG");
    if !token.is_empty() {
        out.push(b' ');
        out.extend_from_slice(token);
    }
    out.push(b'\n');
}

pub(super) fn classify(line: &[u8]) -> Event<'_> {
    // Labels (`@x `) only appear on replies to labelled commands, and the bench sends none.
    let (verb, rest) = split_word(line);
    match verb {
        b"MSG" => message_body(rest).map_or(Event::Other, Event::Message),
        b"OK" => match split_word(rest).0 {
            b"SEND" => Event::SendAck,
            b"LOGIN" => Event::LoggedIn,
            b"JOIN" => Event::Joined,
            _ => Event::Other,
        },
        b"PING" => Event::Ping(rest),
        b"BYE" => Event::Closing(line),
        // The server closes the connection right after refusing it for capacity.
        b"ERR" if rest.starts_with(b"server-full") => Event::Closing(line),
        b"ERR" => Event::Rejected(line),
        _ => Event::Other,
    }
}

/// The body of `MSG <room> <seq> <msg_id> <sent_at> <sender> <body>`: the rest of the line
/// after the fifth field.
fn message_body(mut rest: &[u8]) -> Option<&[u8]> {
    for _ in 0..5 {
        let at = rest.iter().position(|&b| b == b' ')?;
        rest = &rest[at + 1..];
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_yields_its_body_with_spaces_intact() {
        let line = b"MSG general 1 0192f0c4-3c1e-7a53 2026-11-28T03:40:00.123Z alice hi all";
        assert_eq!(classify(line), Event::Message(b"hi all"));
    }

    #[test]
    fn replies_that_drive_the_handshake_are_recognised() {
        assert_eq!(classify(b"OK LOGIN alice"), Event::LoggedIn);
        assert_eq!(
            classify(b"OK JOIN general seq=0 epoch=1 members=1"),
            Event::Joined
        );
        assert_eq!(classify(b"OK SEND general 1 x"), Event::SendAck);
        assert!(matches!(
            classify(b"ERR server-full :no"),
            Event::Closing(_)
        ));
        assert!(matches!(classify(b"ERR bad-name :x"), Event::Rejected(_)));
        assert!(matches!(
            classify(b"BYE slow-consumer :resume"),
            Event::Closing(_)
        ));
        assert_eq!(classify(b"JOINED general bob"), Event::Other);
    }
}
