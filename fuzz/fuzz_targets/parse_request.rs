//! Any bytes as one client line: `parse_request` must never panic, and what it returns must
//! be what the protocol allows.
#![no_main]

use chatd::protocol::{parse_request, Command};
use libfuzzer_sys::fuzz_target;

/// The default `--max-body`.
const MAX_BODY: usize = 4096;

fuzz_target!(|line: &[u8]| {
    match parse_request(line, MAX_BODY) {
        Ok(None) => {}
        Ok(Some(request)) => {
            if let Some(label) = &request.label {
                assert!((1..=32).contains(&label.len()), "label {label:?}");
            }
            if let Command::Send { body, .. } | Command::Dm { body, .. } = &request.command {
                assert!(body.len() <= MAX_BODY, "body of {} bytes", body.len());
                assert!(
                    !body.chars().any(|c| c.is_control() && c != '\t'),
                    "control character in body {body:?}"
                );
            }
        }
        Err(rejection) => {
            assert!(!rejection.error.text.contains('\n'), "{rejection:?}");
        }
    }
});
