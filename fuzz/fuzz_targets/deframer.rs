//! Fuzzes the streaming serial deframer (PROTOCOL.md section 1).
//!
//! The deframer meets raw line noise on every serial port, so it must never
//! panic, never let a bad frame through and never depend on how reads happen
//! to split the bytes. The input's first byte chooses a chunking; the rest is
//! the byte stream. What the deframer reports, fed in those chunks and fed
//! in one piece, must equal a plain reading of section 1: split at 0x00,
//! ignore empty frames, hold back the unfinished tail, and judge each frame
//! on its own. Every payload it yields is 20..=1024 bytes with a good CRC.

#![no_main]

use forecourt::link::frame::{
    self, crc32c, Deframed, Deframer, FrameError, MAX_BODY, MAX_ENCODED, MAX_PAYLOAD, MIN_BODY,
};
use forecourt::link::message::HEADER_LEN;
use libfuzzer_sys::fuzz_target;

type Outcome = Result<Vec<u8>, FrameError>;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, stream)) = data.split_first() else {
        return;
    };
    let expected = read_by_the_protocol(stream);
    assert_eq!(
        deframe(stream, &[stream.len().max(1)]),
        expected,
        "fed in one piece"
    );
    assert_eq!(
        deframe(stream, &chunk_sizes(shape)),
        expected,
        "fed in chunks"
    );
});

/// Read sizes derived from one byte: its low three bits pick the largest
/// read (from single bytes to more than a whole frame), the rest seed a
/// small generator so reads vary in length.
fn chunk_sizes(shape: u8) -> Vec<usize> {
    let max = [1usize, 2, 3, 7, 64, 255, 1029, 4096][usize::from(shape & 7)];
    let mut x = u32::from(shape >> 3).wrapping_mul(2_654_435_761) | 1;
    (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + x as usize % max
        })
        .collect()
}

fn deframe(stream: &[u8], sizes: &[usize]) -> Vec<Outcome> {
    let mut d = Deframer::new();
    let mut seen = Vec::new();
    let mut rest = stream;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(n.min(rest.len()));
        d.feed(now, |item| {
            seen.push(match item {
                Deframed::Payload(p) => {
                    assert!(
                        (HEADER_LEN..=MAX_PAYLOAD).contains(&p.len()),
                        "payload of {} bytes",
                        p.len()
                    );
                    Ok(p.to_vec())
                }
                Deframed::Rejected(e) => Err(e),
            })
        });
        rest = later;
    }
    seen
}

/// PROTOCOL.md 1 read literally, one whole frame at a time.
fn read_by_the_protocol(stream: &[u8]) -> Vec<Outcome> {
    let mut frames: Vec<&[u8]> = stream.split(|&b| b == 0).collect();
    // Bytes after the last 0x00 are a frame still arriving.
    frames.pop();
    let mut body = Vec::new();
    frames
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|f| {
            if f.len() > MAX_ENCODED {
                // Longer than any valid frame's encoding: no need to decode.
                return Err(FrameError::TooLong);
            }
            frame::cobs_decode(f, &mut body, MAX_BODY)?;
            check_cobs_is_strict(f, &body);
            if body.len() < MIN_BODY {
                return Err(FrameError::TooShort);
            }
            let (payload, crc) = body.split_at(body.len() - 4);
            if crc32c(payload).to_le_bytes() != crc {
                return Err(FrameError::Crc);
            }
            Ok(payload.to_vec())
        })
        .collect()
}

/// A frame the decoder accepted is the usual encoding of what it decoded to,
/// or (PROTOCOL.md 4, "COBS") that encoding followed by the 0x01 some
/// encoders add after a final run of exactly 254 non-zero bytes.
fn check_cobs_is_strict(frame: &[u8], decoded: &[u8]) {
    let mut again = Vec::new();
    frame::cobs_encode(decoded, &mut again);
    let with_trailer = frame.len() == again.len() + 1
        && frame.ends_with(&[0x01])
        && again.len() >= 255
        && again[again.len() - 255] == 0xFF;
    assert!(
        frame == again.as_slice() || (with_trailer && frame.starts_with(&again)),
        "decoder accepted a non-canonical frame"
    );
}
