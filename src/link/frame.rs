//! Bodies and serial framing (PROTOCOL.md section 1).
//!
//! A *body* is a payload followed by its CRC-32C, little-endian; both
//! transports carry bodies. On a serial line each body is COBS-encoded and
//! followed by one 0x00. [`Deframer`] turns an arbitrary byte stream (split,
//! merged, with garbage between frames) back into checked payloads and says
//! why it dropped anything else.

use std::fmt;

/// Largest payload a sender may produce.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest body: payload plus CRC.
pub const MAX_BODY: usize = MAX_PAYLOAD + 4;
/// Smallest body: a 20-byte header plus CRC.
pub const MIN_BODY: usize = 24;
/// Largest COBS encoding of a body: one code byte per 254 data bytes, plus one.
pub const MAX_ENCODED: usize = MAX_BODY + MAX_BODY / 254 + 1;

/// Why a frame or body was dropped before its payload could be trusted.
///
/// None of these is ACKed: the header cannot be trusted, and the dongle's
/// retransmission recovers the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The bytes between two delimiters are not valid COBS.
    Cobs,
    /// Longer than [`MAX_BODY`] decoded.
    TooLong,
    /// Shorter than [`MIN_BODY`] decoded.
    TooShort,
    /// The CRC-32C does not match the payload.
    Crc,
}

impl FrameError {
    pub const ALL: [FrameError; 4] = [
        FrameError::Cobs,
        FrameError::TooLong,
        FrameError::TooShort,
        FrameError::Crc,
    ];

    /// Stable name, used in counters, logs and `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::Cobs => "cobs",
            FrameError::TooLong => "too_long",
            FrameError::TooShort => "too_short",
            FrameError::Crc => "crc",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Cobs => "invalid COBS encoding",
            FrameError::TooLong => "frame longer than 1028 bytes",
            FrameError::TooShort => "frame shorter than 24 bytes",
            FrameError::Crc => "CRC-32C mismatch",
        })
    }
}

impl std::error::Error for FrameError {}

const CRC32C_TABLE: [[u32; 256]; 8] = crc32c_tables();

/// Slicing-by-8 tables for the reflected Castagnoli polynomial (0x82F63B78
/// is 0x1EDC6F41 bit-reversed), built at compile time.
const fn crc32c_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// CRC-32C (Castagnoli): init and xorout 0xFFFFFFFF, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let t = &CRC32C_TABLE;
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ CRC32C_TABLE[0][((crc ^ b as u32) & 0xFF) as usize];
    }
    !crc
}

/// Appends `payload || crc32c(payload)` to `out`.
pub fn seal(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
}

/// Checks a body's length and CRC and returns its payload.
pub fn open(body: &[u8]) -> Result<&[u8], FrameError> {
    if body.len() > MAX_BODY {
        return Err(FrameError::TooLong);
    }
    if body.len() < MIN_BODY {
        return Err(FrameError::TooShort);
    }
    let (payload, crc) = body.split_at(body.len() - 4);
    if crc32c(payload).to_le_bytes() != crc {
        return Err(FrameError::Crc);
    }
    Ok(payload)
}

/// COBS-encodes `data` (the usual form: no trailing 0x01 after a final run
/// of 254 non-zero bytes) and appends it to `out`, without the delimiter.
pub fn cobs_encode(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 254 + 2);
    let mut code_at = out.len();
    out.push(0);
    let mut code: u8 = 1;
    for (i, &b) in data.iter().enumerate() {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code = 1;
                if i + 1 < data.len() {
                    code_at = out.len();
                    out.push(0);
                } else {
                    // The final block ended exactly at 254 bytes: nothing follows.
                    return;
                }
            }
        }
    }
    out[code_at] = code;
}

/// Decodes one COBS frame (without its delimiter) into `out`, refusing to
/// produce more than `max` bytes. Accepts both encodings of a final run of
/// exactly 254 non-zero bytes (with or without a trailing 0x01 block).
pub fn cobs_decode(frame: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
    out.clear();
    let mut i = 0;
    while i < frame.len() {
        let code = frame[i] as usize;
        if code == 0 {
            return Err(FrameError::Cobs);
        }
        let end = i + code;
        if end > frame.len() {
            return Err(FrameError::Cobs);
        }
        let run = &frame[i + 1..end];
        if run.contains(&0) {
            return Err(FrameError::Cobs);
        }
        if out.len() + run.len() > max {
            return Err(FrameError::TooLong);
        }
        out.extend_from_slice(run);
        i = end;
        if code != 0xFF && i < frame.len() {
            if out.len() + 1 > max {
                return Err(FrameError::TooLong);
            }
            out.push(0);
        }
    }
    Ok(())
}

/// Appends the serial wire form of `payload`: COBS(payload || crc) then 0x00.
pub fn encode_serial(payload: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(payload.len() + 4);
    seal(payload, &mut body);
    cobs_encode(&body, out);
    out.push(0);
}

/// One thing the deframer found in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Deframed<'a> {
    /// A payload whose CRC checked out (the CRC is stripped).
    Payload(&'a [u8]),
    /// A frame that was dropped, and why.
    Rejected(FrameError),
}

/// Streaming serial deframer: feed it bytes as they arrive, in any split.
///
/// Memory is bounded: a run of bytes longer than any valid frame is dropped
/// as [`FrameError::TooLong`] once, and the deframer resynchronises at the
/// next 0x00.
#[derive(Default)]
pub struct Deframer {
    pending: Vec<u8>,
    overflowed: bool,
    decoded: Vec<u8>,
    /// Bytes of `input` already consumed by [`Deframer::next`].
    pos: usize,
}

impl Deframer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the next payload or rejection found in `input`, resuming where
    /// the previous call on the same `input` stopped. Returns `None` when
    /// `input` is used up (a partial frame is kept for the next input); then
    /// call [`Deframer::reset_input`] before passing a new buffer.
    pub fn next<'s>(&'s mut self, input: &[u8]) -> Option<Deframed<'s>> {
        while self.pos < input.len() {
            let rest = &input[self.pos..];
            match rest.iter().position(|&b| b == 0) {
                None => {
                    self.pos = input.len();
                    self.stash(rest);
                    return None;
                }
                Some(z) => {
                    self.pos += z + 1;
                    let chunk = &rest[..z];
                    if self.overflowed || self.pending.len() + chunk.len() > MAX_ENCODED {
                        self.pending.clear();
                        self.overflowed = false;
                        return Some(Deframed::Rejected(FrameError::TooLong));
                    }
                    let frame: &[u8] = if self.pending.is_empty() {
                        chunk
                    } else {
                        self.pending.extend_from_slice(chunk);
                        &self.pending
                    };
                    if frame.is_empty() {
                        continue;
                    }
                    let result = cobs_decode(frame, &mut self.decoded, MAX_BODY)
                        .and_then(|()| open(&self.decoded).map(|p| p.len()));
                    self.pending.clear();
                    return Some(match result {
                        Ok(n) => Deframed::Payload(&self.decoded[..n]),
                        Err(e) => Deframed::Rejected(e),
                    });
                }
            }
        }
        None
    }

    /// Marks the previous input buffer as fully consumed.
    pub fn reset_input(&mut self) {
        self.pos = 0;
    }

    fn stash(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.pending.len() + bytes.len() > MAX_ENCODED {
            self.pending.clear();
            self.overflowed = true;
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Feeds `input` and calls `f` for each payload or rejection, in order.
    pub fn feed(&mut self, input: &[u8], mut f: impl FnMut(Deframed<'_>)) {
        self.reset_input();
        while let Some(item) = self.next(input) {
            f(item);
        }
        self.reset_input();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // Slicing and byte-wise paths agree on every length around a chunk.
        let data: Vec<u8> = (0..100u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc = (crc >> 8) ^ CRC32C_TABLE[0][((crc ^ b as u32) & 0xFF) as usize];
            }
            assert_eq!(crc32c(&data[..n]), !crc, "length {n}");
        }
    }

    #[test]
    fn cobs_final_run_of_254_decodes_in_both_forms() {
        let data = vec![0x11u8; 254];
        let mut enc = Vec::new();
        cobs_encode(&data, &mut enc);
        assert_eq!(enc.len(), 255);
        assert_eq!(enc[0], 0xFF);
        let mut out = Vec::new();
        cobs_decode(&enc, &mut out, 2000).unwrap();
        assert_eq!(out, data);
        enc.push(0x01);
        cobs_decode(&enc, &mut out, 2000).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn cobs_rejects_zero_and_overrun() {
        let mut out = Vec::new();
        assert_eq!(
            cobs_decode(&[0x03, 0x01], &mut out, 100),
            Err(FrameError::Cobs)
        );
        assert_eq!(
            cobs_decode(&[0x02, 0x01, 0x00], &mut out, 100),
            Err(FrameError::Cobs)
        );
    }

    #[test]
    fn deframer_counts_each_reason() {
        let mut good = Vec::new();
        encode_serial(&[7u8; 30], &mut good);
        let mut stream = vec![0x00, 0x00]; // empty frames: ignored
        stream.extend_from_slice(&[0x05, 0x01, 0x00]); // COBS overrun
        stream.extend_from_slice(&[0x03, 0x01, 0x01, 0x00]); // too short
        let mut bad_crc = good.clone();
        bad_crc[3] ^= 0x40;
        stream.extend_from_slice(&bad_crc);
        stream.extend(std::iter::repeat_n(0x42u8, 5000)); // oversized garbage
        stream.push(0);
        stream.extend_from_slice(&good);
        let mut seen = Vec::new();
        let mut d = Deframer::new();
        d.feed(&stream, |x| {
            seen.push(match x {
                Deframed::Payload(p) => Ok(p.to_vec()),
                Deframed::Rejected(e) => Err(e),
            })
        });
        assert_eq!(
            seen,
            vec![
                Err(FrameError::Cobs),
                Err(FrameError::TooShort),
                Err(FrameError::Crc),
                Err(FrameError::TooLong),
                Ok(vec![7u8; 30]),
            ]
        );
    }
}
