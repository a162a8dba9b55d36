//! The message body every bench message carries: `<sender>.<seq>.<sent_ns>.` then padding.
//!
//! `sender` is the bench's index of the sending client, `seq` counts that sender's messages
//! from 1, and `sent_ns` is the monotonic time in nanoseconds since the bench started, taken
//! when the message was queued for writing. A receiver therefore needs no shared state to
//! compute latency, and (sender, seq) is enough to find lost and duplicated deliveries.

use std::io::Write;

/// What a receiver learns from a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Appends the body for `payload`, padded with `x` to `body_size` bytes (never truncated).
pub fn encode(out: &mut Vec<u8>, payload: Payload, body_size: usize) {
    let start = out.len();
    write!(
        out,
        "{}.{}.{}.",
        payload.sender, payload.seq, payload.sent_ns
    )
    .expect("writing to a Vec cannot fail");
    let written = out.len() - start;
    out.resize(out.len() + body_size.saturating_sub(written), b'x');
}

/// Reads a body written by [`encode`]; `None` for anything else.
pub fn decode(body: &[u8]) -> Option<Payload> {
    let mut fields = body.splitn(4, |&b| b == b'.');
    let sender = parse_decimal(fields.next()?)?;
    let seq = parse_decimal(fields.next()?)?;
    let sent_ns = parse_decimal(fields.next()?)?;
    fields.next()?;
    Some(Payload {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_ns,
    })
}

/// Parses ASCII digits; hand-written because this runs once per delivery, millions of times
/// a second, and needs no UTF-8 check.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_and_is_padded_to_size() {
        let payload = Payload {
            sender: 42,
            seq: 7,
            sent_ns: 123_456_789,
        };
        let mut out = Vec::new();
        encode(&mut out, payload, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(decode(&out), Some(payload));
    }

    #[test]
    fn bodies_that_are_not_ours_are_ignored() {
        assert_eq!(decode(b"hello world"), None);
        assert_eq!(decode(b"1.2.3"), None);
        assert_eq!(decode(b"1.x.3.pad"), None);
    }
}
