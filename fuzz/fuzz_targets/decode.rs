//! Fuzzes the typed message codec (PROTOCOL.md sections 2 and 3).
//!
//! Any payload whose CRC checks out reaches `Message::decode`, so a dongle
//! with buggy firmware (or a future protocol version) must never crash the
//! appliance. Decoding must either succeed, and then re-encoding gives back
//! exactly the same bytes (so what is stored and ACKed is what was sent), or
//! fail with the error PROTOCOL.md 2 calls for: too short for the header,
//! then a version other than 1, before anything kind-specific.

#![no_main]

use forecourt::link::message::{DecodeError, Header, Message, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    match Message::decode(payload) {
        Ok(m) => {
            assert_eq!(m.encode(), payload, "re-encoding changed the bytes");
            let h = Header::parse(payload).expect("a decoded payload has a header");
            assert_eq!(
                (h.seq, h.device_id, h.time_ms),
                (m.seq, m.device_id, m.time_ms)
            );
            assert_eq!(h.kind, m.body.kind());
        }
        Err(e) => match Header::parse(payload) {
            None => assert_eq!(e, DecodeError::Truncated(payload.len())),
            Some(h) if h.version != VERSION => assert_eq!(e, DecodeError::Version(h.version)),
            Some(_) => assert!(
                !matches!(e, DecodeError::Truncated(_) | DecodeError::Version(_)),
                "{e:?} for a payload with a full version-1 header"
            ),
        },
    }
});
