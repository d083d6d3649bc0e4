//! The wire codec against its contract, PROTOCOL.md, from the outside.
//!
//! PROTOCOL.md is fixed: an independent dongle implementation must
//! interoperate with ours byte for byte. These tests pin the published test
//! vectors (section 5), prove every message kind and COBS round-trip for
//! arbitrary values, prove the streaming deframer finds exactly the valid
//! frames however the bytes are split or mixed with garbage (section 1), and
//! check that every rejection lands in the right counter or `DecodeError`
//! (sections 1 and 2). Each test cites the clause it proves.

use std::collections::BTreeMap;

use forecourt::link::frame::{
    self, crc32c, Deframed, Deframer, FrameError, MAX_BODY, MAX_ENCODED, MAX_PAYLOAD, MIN_BODY,
};
use forecourt::link::message::{
    kind, lamp_name, Body, DecodeError, Dtc, DtcEntry, DtcReport, Engine, Firmware, Header,
    Heartbeat, Hello, Message, PowerLossReason, Vin, HEADER_LEN,
};
use forecourt::link::RejectReason;
use proptest::prelude::*;
use proptest::strategy::Union;

/// PROTOCOL.md 5: every vector is for this unit.
const DEVICE: u64 = 0x0102_0304_0506_0708;

/// Hex as printed in PROTOCOL.md; only ever given the literals below.
fn from_hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex literal");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex literal"))
        .collect()
}

struct Vector {
    name: &'static str,
    payload: Vec<u8>,
    wire: Vec<u8>,
    message: Message,
}

/// The four vectors of PROTOCOL.md section 5, with the fields its prose states.
fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            name: "HELLO",
            payload: from_hex(
                "01010100080706050403020100a8da769b010000574630585858474344583132333435363701040200",
            ),
            wire: from_hex(
                "0401010109080706050403020106a8da769b0101155746305858584743445831323334353637010402058b1e35f800",
            ),
            message: Message {
                seq: 1,
                device_id: DEVICE,
                time_ms: 1_767_225_600_000,
                body: Body::Hello(Hello {
                    vin: Vin::parse("WF0XXXGCDX1234567"),
                    firmware: Firmware(1, 4, 2),
                    after_power_loss: false,
                    flags: 0,
                }),
            },
        },
        Vector {
            name: "HEARTBEAT",
            payload: from_hex(
                "0104020008070605040302016092db769b010000018403000040e20100143701000000",
            ),
            wire: from_hex(
                "040104020f08070605040302016092db769b010104018403010440e201041437010101053cabca9300",
            ),
            message: Message {
                seq: 2,
                device_id: DEVICE,
                time_ms: 1_767_225_660_000,
                body: Body::Heartbeat(Heartbeat {
                    engine: Engine::Running,
                    run_s: 900,
                    odometer_km: 123_456,
                    battery_mv: 14_100,
                    lamps: 1,
                }),
            },
        },
        Vector {
            name: "DTC_REPORT",
            payload: from_hex("010603000807060504030201c07cdc769b010000e0070203010009c1231c04"),
            wire: from_hex(
                "040106030f0807060504030201c07cdc769b010106e0070203010a09c1231c043a0a50c100",
            ),
            message: Message {
                seq: 3,
                device_id: DEVICE,
                time_ms: 1_767_225_720_000,
                body: Body::DtcReport(DtcReport {
                    ecu: 0x07E0,
                    entries: vec![
                        DtcEntry { dtc: Dtc([0x03, 0x01, 0x00]), status: 0x09 },
                        DtcEntry { dtc: Dtc([0xC1, 0x23, 0x1C]), status: 0x04 },
                    ],
                }),
            },
        },
        Vector {
            name: "ACK",
            payload: from_hex("018007000807060504030201f4a9da769b0100000100"),
            wire: from_hex("040180070f0807060504030201f4a9da769b01010201050b2c4a3800"),
            message: Message {
                seq: 7,
                device_id: DEVICE,
                time_ms: 1_767_225_600_500,
                body: Body::Ack { acked_seq: 1 },
            },
        },
    ]
}

/// Everything a deframer reported for a stream, in order.
type Seen = Vec<Result<Vec<u8>, FrameError>>;

fn feed_all(d: &mut Deframer, input: &[u8], seen: &mut Seen) {
    d.feed(input, |item| {
        seen.push(match item {
            Deframed::Payload(p) => Ok(p.to_vec()),
            Deframed::Rejected(e) => Err(e),
        })
    });
}

/// Feeds `stream` in pieces of the given sizes (cycled), as a UART read loop would.
fn deframe_in_chunks(stream: &[u8], sizes: &[usize]) -> Seen {
    let mut d = Deframer::new();
    let mut seen = Vec::new();
    let mut rest = stream;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(n.clamp(1, rest.len()));
        feed_all(&mut d, now, &mut seen);
        rest = later;
    }
    seen
}

fn deframe(stream: &[u8]) -> Seen {
    let mut d = Deframer::new();
    let mut seen = Vec::new();
    feed_all(&mut d, stream, &mut seen);
    seen
}

fn payloads(seen: &Seen) -> Vec<Vec<u8>> {
    seen.iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect()
}

fn wire(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_serial(payload, &mut out);
    out
}

/// A frame whose COBS decodes to exactly `body` (no CRC added).
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::cobs_encode(body, &mut out);
    out.push(0);
    out
}

/// A payload of exactly `len` bytes whose header is valid (HEARTBEAT-shaped
/// when `len` allows), for length boundaries that do not depend on the kind.
fn payload_of_len(len: usize) -> Vec<u8> {
    let mut p = vec![0x5Au8; len];
    if len >= 2 {
        p[0] = 1;
        p[1] = kind::HEARTBEAT;
    }
    p
}

fn header(kind_byte: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![1, kind_byte];
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&DEVICE.to_le_bytes());
    p.extend_from_slice(&1_767_225_600_000u64.to_le_bytes());
    p
}

// ---------------------------------------------------------------------------
// PROTOCOL.md 5: the test vectors.

#[test]
fn crc32c_matches_the_published_check_value() {
    // PROTOCOL.md 1 and 5: CRC-32C of ASCII "123456789" is 0xE3069283.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn vector_payloads_decode_to_the_stated_fields() {
    for v in vectors() {
        assert_eq!(
            Message::decode(&v.payload),
            Ok(v.message.clone()),
            "{}",
            v.name
        );
    }
}

#[test]
fn vector_messages_encode_to_the_stated_payloads() {
    for v in vectors() {
        assert_eq!(v.message.encode(), v.payload, "{}", v.name);
    }
}

#[test]
fn vector_payloads_frame_to_the_stated_wire_bytes() {
    for v in vectors() {
        assert_eq!(wire(&v.payload), v.wire, "{}", v.name);
    }
}

#[test]
fn vector_wire_bytes_deframe_to_the_stated_payloads() {
    for v in vectors() {
        assert_eq!(deframe(&v.wire), vec![Ok(v.payload.clone())], "{}", v.name);
        // PROTOCOL.md 1: bytes may arrive one at a time.
        assert_eq!(
            deframe_in_chunks(&v.wire, &[1]),
            vec![Ok(v.payload.clone())],
            "{}",
            v.name
        );
    }
}

#[test]
fn vector_stream_deframes_identically_at_every_split_point() {
    // PROTOCOL.md 1: bytes may arrive split or merged arbitrarily; garbage
    // between frames is normal and the receiver resynchronises at 0x00.
    let vs = vectors();
    let mut stream = b"\x13\x37 line noise \xFF\x00".to_vec();
    for v in &vs {
        stream.extend_from_slice(&v.wire);
        stream.extend_from_slice(&[0x00, 0x00]); // empty frames: ignored
    }
    stream.extend_from_slice(b"\x01\x02\x03\x00"); // COBS-valid but too short
    let expected = {
        let mut e: Seen = vec![Err(FrameError::Cobs)];
        e.extend(vs.iter().map(|v| Ok(v.payload.clone())));
        e.push(Err(FrameError::TooShort));
        e
    };
    assert_eq!(deframe(&stream), expected, "merged into one read");
    for at in 0..=stream.len() {
        let mut d = Deframer::new();
        let mut seen = Vec::new();
        feed_all(&mut d, &stream[..at], &mut seen);
        feed_all(&mut d, &stream[at..], &mut seen);
        assert_eq!(seen, expected, "split at byte {at}");
    }
}

#[test]
fn deframer_next_resumes_within_one_buffer() {
    // The pull API used by the serial link sees the same frames as `feed`.
    let vs = vectors();
    let stream: Vec<u8> = vs.iter().flat_map(|v| v.wire.clone()).collect();
    let mut d = Deframer::new();
    let mut seen = Vec::new();
    while let Some(item) = d.next(&stream) {
        match item {
            Deframed::Payload(p) => seen.push(p.to_vec()),
            Deframed::Rejected(e) => panic!("vector rejected: {e}"),
        }
    }
    d.reset_input();
    assert_eq!(
        seen,
        vs.iter().map(|v| v.payload.clone()).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Strategies: arbitrary values for every field PROTOCOL.md 2 and 3 define.

fn vin() -> impl Strategy<Value = Vin> {
    // PROTOCOL.md 3: 17 bytes ASCII; all-zero means unknown (`None`).
    proptest::array::uniform17(0x21u8..=0x7E).prop_map(Vin)
}

fn dtc_entry() -> impl Strategy<Value = DtcEntry> {
    (any::<[u8; 3]>(), any::<u8>()).prop_map(|(d, status)| DtcEntry {
        dtc: Dtc(d),
        status,
    })
}

fn dtc_report(entries: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Body> {
    (
        any::<u16>(),
        proptest::collection::vec(dtc_entry(), entries),
    )
        .prop_map(|(ecu, entries)| Body::DtcReport(DtcReport { ecu, entries }))
}

/// The most DTC entries one payload can carry: PROTOCOL.md 1 caps a payload
/// at 1,024 bytes, and 20 + 3 + 4 * 250 = 1,023.
const MAX_DTC_ON_THE_WIRE: usize = (MAX_PAYLOAD - HEADER_LEN - 3) / 4;

/// Every kind of PROTOCOL.md 3, both directions, equally likely; DTC
/// reports with up to `max_dtcs` entries.
fn body(max_dtcs: usize) -> impl Strategy<Value = Body> {
    let arms: Vec<BoxedStrategy<Body>> = vec![
        (proptest::option::of(vin()), any::<[u8; 3]>(), any::<u8>())
            .prop_map(|(vin, [a, b, c], flags)| {
                Body::Hello(Hello {
                    vin,
                    firmware: Firmware(a, b, c),
                    after_power_loss: flags & 1 != 0,
                    flags,
                })
            })
            .boxed(),
        any::<u32>()
            .prop_map(|odometer_km| Body::IgnitionOn { odometer_km })
            .boxed(),
        any::<(u32, u32)>()
            .prop_map(|(odometer_km, run_s)| Body::IgnitionOff { odometer_km, run_s })
            .boxed(),
        (
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
        )
            .prop_map(|(running, run_s, odometer_km, battery_mv, lamps)| {
                Body::Heartbeat(Heartbeat {
                    engine: if running {
                        Engine::Running
                    } else {
                        Engine::Parked
                    },
                    run_s,
                    odometer_km,
                    battery_mv,
                    lamps,
                })
            })
            .boxed(),
        (1u8..=255, any::<bool>())
            .prop_map(|(lamp, lit)| Body::Lamp { lamp, lit })
            .boxed(),
        dtc_report(0..=max_dtcs).boxed(),
        any::<u8>()
            .prop_map(|b| Body::PowerLost {
                reason: PowerLossReason::from_byte(b),
            })
            .boxed(),
        any::<u32>()
            .prop_map(|down_s| Body::PowerRestored { down_s })
            .boxed(),
        any::<u16>()
            .prop_map(|acked_seq| Body::Ack { acked_seq })
            .boxed(),
        Just(Body::Time).boxed(),
        any::<u16>()
            .prop_map(|ecu| Body::RequestDtc { ecu })
            .boxed(),
        Just(Body::RequestStatus).boxed(),
    ];
    Union::new(arms)
}

/// Any message, at most 1,024 payload bytes (PROTOCOL.md 1), so it can
/// travel on either transport.
fn message() -> impl Strategy<Value = Message> {
    (
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        body(MAX_DTC_ON_THE_WIRE),
    )
        .prop_map(|(seq, device_id, time_ms, body)| Message {
            seq,
            device_id,
            time_ms,
            body,
        })
}

/// Bytes rich in what COBS finds hard: zeros, and non-zero runs around 254.
fn cobs_input() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(Just(0u8), 1..4),
        (250usize..=258, 1u8..=255).prop_map(|(n, b)| vec![b; n]),
        Just(vec![0x11u8; 254]),
    ];
    proptest::collection::vec(segment, 0..10).prop_map(|s| s.concat())
}

/// Line noise: short bursts, and occasionally a run longer than any frame.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..48),
        1 => proptest::collection::vec(1u8..=255, MAX_ENCODED..MAX_ENCODED + 600),
    ]
}

/// True when some 0x00-delimited piece of `bytes` happens to be a valid
/// frame (odds about 2^-32 per piece): such a case is not garbage.
fn holds_a_valid_frame(bytes: &[u8]) -> bool {
    let mut decoded = Vec::new();
    bytes.split(|&b| b == 0).any(|piece| {
        frame::cobs_decode(piece, &mut decoded, MAX_BODY).is_ok() && frame::open(&decoded).is_ok()
    })
}

proptest! {
    #[test]
    fn every_message_kind_round_trips(m in message()) {
        // PROTOCOL.md 2 and 3: decode is the exact inverse of encode.
        let payload = m.encode();
        prop_assert_eq!(Header::parse(&payload).map(|h| h.kind), Some(m.body.kind()));
        prop_assert_eq!(Message::decode(&payload), Ok(m));
    }

    #[test]
    fn dtc_reports_of_every_size_round_trip(
        seq in any::<u16>(),
        device_id in any::<u64>(),
        time_ms in any::<u64>(),
        body in dtc_report(0..=255),
    ) {
        // PROTOCOL.md 3: n is a u8, so 0..=255 entries; 3 + 4n body bytes.
        // The codec itself takes every n; only the transports cap the size
        // (see `dtc_reports_beyond_250_entries_do_not_fit_a_serial_frame`).
        let m = Message { seq, device_id, time_ms, body };
        let payload = m.encode();
        let Body::DtcReport(rep) = &m.body else { unreachable!("strategy yields DTC reports") };
        prop_assert_eq!(payload.len(), HEADER_LEN + 3 + 4 * rep.entries.len());
        prop_assert_eq!(Message::decode(&payload), Ok(m));
    }

    #[test]
    fn every_message_survives_the_serial_line(m in message(), sizes in proptest::collection::vec(1usize..64, 1..8)) {
        // PROTOCOL.md 1: payload -> seal -> COBS -> 0x00, split arbitrarily, and back.
        let payload = m.encode();
        let seen = deframe_in_chunks(&wire(&payload), &sizes);
        prop_assert_eq!(&seen, &vec![Ok(payload.clone())]);
        prop_assert_eq!(Message::decode(&payload), Ok(m));
    }

    #[test]
    fn cobs_round_trips_any_bytes(data in cobs_input()) {
        // PROTOCOL.md 1: COBS removes every 0x00 so 0x00 can delimit frames.
        let mut enc = Vec::new();
        frame::cobs_encode(&data, &mut enc);
        prop_assert!(!enc.contains(&0));
        prop_assert!(enc.len() <= data.len() + data.len() / 254 + 1);
        let mut dec = Vec::new();
        prop_assert_eq!(frame::cobs_decode(&enc, &mut dec, usize::MAX), Ok(()));
        prop_assert_eq!(&dec, &data);
    }

    #[test]
    fn cobs_accepts_both_forms_after_a_final_run_of_254(prefix in cobs_input(), fill in 1u8..=255) {
        // PROTOCOL.md 4 "COBS": after a final run of exactly 254 non-zero
        // bytes, decoders accept the encoding with and without a trailing 0x01.
        let mut data = prefix;
        data.push(0);
        data.extend(std::iter::repeat_n(fill, 254));
        let mut usual = Vec::new();
        frame::cobs_encode(&data, &mut usual);
        prop_assert_eq!(usual.iter().rev().nth(254), Some(&0xFF), "final block is a full 254-run");
        let mut alt = usual.clone();
        alt.push(0x01);
        let mut dec = Vec::new();
        prop_assert_eq!(frame::cobs_decode(&usual, &mut dec, usize::MAX), Ok(()));
        prop_assert_eq!(&dec, &data);
        prop_assert_eq!(frame::cobs_decode(&alt, &mut dec, usize::MAX), Ok(()));
        prop_assert_eq!(&dec, &data);
    }

    #[test]
    fn deframer_yields_exactly_the_valid_payloads_in_order(
        parts in proptest::collection::vec((garbage(), message()), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        sizes in proptest::collection::vec(1usize..300, 1..12),
    ) {
        // PROTOCOL.md 1: garbage between frames is normal; each non-empty
        // piece of it between delimiters is dropped (and counted) once, and
        // the receiver resynchronises at the next 0x00 without losing a frame.
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut garbage_pieces = 0;
        for (noise, m) in &parts {
            prop_assume!(!holds_a_valid_frame(noise));
            garbage_pieces += noise.split(|&b| b == 0).filter(|p| !p.is_empty()).count();
            stream.extend_from_slice(noise);
            stream.push(0);
            let payload = m.encode();
            stream.extend_from_slice(&wire(&payload));
            expected.push(payload);
        }
        // Bytes after the last delimiter are an unfinished frame: not reported yet.
        let tail: Vec<u8> = tail.into_iter().filter(|&b| b != 0).collect();
        stream.extend_from_slice(&tail);

        let merged = deframe(&stream);
        prop_assert_eq!(payloads(&merged), expected.clone());
        prop_assert_eq!(merged.len() - expected.len(), garbage_pieces);

        let split = deframe_in_chunks(&stream, &sizes);
        prop_assert_eq!(&split, &merged, "chunking must not change what is found");
    }
}

// ---------------------------------------------------------------------------
// PROTOCOL.md 1: every rejection reason, its counter name and its bounds.

#[test]
fn every_rejection_reason_is_counted_under_its_name() {
    // PROTOCOL.md 1: "drops (and counts, by reason) any frame that fails COBS
    // decoding, is longer than 1,028 bytes decoded, is shorter than 24 bytes
    // decoded, or fails the CRC".
    let good = wire(&vectors()[1].payload);
    let mut bad_crc = good.clone();
    bad_crc[10] ^= 0x01;
    let mut stream = Vec::new();
    for _ in 0..3 {
        stream.extend_from_slice(&[0x07, 0x41, 0x00]); // code byte overruns the frame
    }
    for _ in 0..2 {
        // Short enough to buffer (zeros cost no COBS overhead), too long decoded.
        let long: Vec<u8> = (0..=MAX_BODY)
            .map(|i| if i % 2 == 0 { 0x77 } else { 0 })
            .collect();
        stream.extend_from_slice(&raw_frame(&long));
        stream.extend(std::iter::repeat_n(0x42u8, MAX_ENCODED + 1)); // run too long to buffer
        stream.push(0);
    }
    stream.extend_from_slice(&raw_frame(&[0x01; MIN_BODY - 1]));
    for _ in 0..4 {
        stream.extend_from_slice(&bad_crc);
        stream.extend_from_slice(&good);
    }

    let seen = deframe_in_chunks(&stream, &[97]);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &seen {
        if let Err(e) = r {
            *counts.entry(RejectReason::from(*e).0).or_default() += 1;
        }
    }
    let expected: BTreeMap<&str, usize> =
        [("cobs", 3), ("too_long", 4), ("too_short", 1), ("crc", 4)]
            .into_iter()
            .collect();
    assert_eq!(counts, expected);
    assert_eq!(
        payloads(&seen).len(),
        4,
        "good frames between bad ones all survive"
    );

    // The names are stable: counters, logs and /healthz use them.
    let names: Vec<&str> = FrameError::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(names, ["cobs", "too_long", "too_short", "crc"]);
}

#[test]
fn body_length_bounds_are_exact() {
    // PROTOCOL.md 1 and 2: a 20-byte header is the shortest payload (24-byte
    // body); 1,024 bytes the longest (1,028-byte body).
    for (len, expected) in [
        (HEADER_LEN - 1, Err(FrameError::TooShort)),
        (HEADER_LEN, Ok(())),
        (MAX_PAYLOAD, Ok(())),
        (MAX_PAYLOAD + 1, Err(FrameError::TooLong)),
    ] {
        let p = payload_of_len(len);
        let seen = deframe(&wire(&p));
        let got: Vec<Result<(), FrameError>> = seen
            .iter()
            .map(|r| r.as_ref().map(|_| ()).map_err(|e| *e))
            .collect();
        assert_eq!(got, vec![expected], "payload of {len} bytes");
        if expected.is_ok() {
            assert_eq!(seen, vec![Ok(p)]);
        }
    }
}

#[test]
fn a_crc_error_anywhere_in_the_body_is_caught() {
    // PROTOCOL.md 1: CRC-32C covers every payload byte; the CRC is little-endian.
    for v in vectors() {
        let mut body = Vec::new();
        frame::seal(&v.payload, &mut body);
        assert_eq!(body[v.payload.len()..], crc32c(&v.payload).to_le_bytes());
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut bad = body.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    frame::open(&bad),
                    Err(FrameError::Crc),
                    "{} byte {i} bit {bit}",
                    v.name
                );
            }
        }
    }
}

#[test]
fn dtc_reports_beyond_250_entries_do_not_fit_a_serial_frame() {
    // PROTOCOL.md 1 caps a payload at 1,024 bytes while PROTOCOL.md 3 lets n
    // reach 255: 250 entries is the largest DTC_REPORT a receiver accepts.
    // A dongle must split a larger snapshot; a bigger frame is dropped as
    // too_long (and, like any frame that fails framing, not ACKed).
    assert_eq!(MAX_DTC_ON_THE_WIRE, 250);
    let report = |n: usize| Message {
        seq: 3,
        device_id: DEVICE,
        time_ms: 1_767_225_720_000,
        body: Body::DtcReport(DtcReport {
            ecu: 0x07E0,
            entries: vec![
                DtcEntry {
                    dtc: Dtc([0x03, 0x01, 0x00]),
                    status: 0x09
                };
                n
            ],
        }),
    };
    let fits = report(250).encode();
    assert_eq!(fits.len(), 1023);
    assert_eq!(deframe(&wire(&fits)), vec![Ok(fits)]);
    let too_big = report(251).encode();
    assert_eq!(too_big.len(), 1027);
    assert_eq!(deframe(&wire(&too_big)), vec![Err(FrameError::TooLong)]);
}

#[test]
fn empty_frames_are_ignored_not_counted() {
    // PROTOCOL.md 1: "Empty frames (0x00 0x00) are ignored."
    assert_eq!(deframe(&[0u8; 16]), vec![]);
    let mut stream = vec![0, 0, 0];
    stream.extend_from_slice(&vectors()[0].wire);
    stream.extend_from_slice(&[0, 0]);
    assert_eq!(deframe(&stream), vec![Ok(vectors()[0].payload.clone())]);
}

#[test]
fn an_endless_run_without_delimiter_is_dropped_once_and_resynchronised() {
    // PROTOCOL.md 1: resynchronise at the next 0x00. The deframer must not
    // buffer an unbounded run (bounded memory), yet count it only once.
    let v = &vectors()[2];
    let mut stream = vec![0x55u8; 64 * 1024];
    stream.push(0);
    stream.extend_from_slice(&v.wire);
    let seen = deframe_in_chunks(&stream, &[4096, 17, 1]);
    assert_eq!(seen, vec![Err(FrameError::TooLong), Ok(v.payload.clone())]);
}

#[test]
fn both_cobs_forms_of_a_final_254_run_deframe() {
    // PROTOCOL.md 4 "COBS", on the serial line: a body ending in exactly 254
    // non-zero bytes (the CRC included) arrives in either form.
    let payload = (0u16..)
        .map(|salt| {
            let mut p = header(kind::DTC_REPORT, salt);
            p.extend(std::iter::repeat_n(0xA5u8, 254 - 4));
            p
        })
        .find(|p| !crc32c(p).to_le_bytes().contains(&0))
        .expect("some seq gives a CRC without zero bytes");
    let usual = wire(&payload);
    assert_eq!(
        usual[usual.len() - 256],
        0xFF,
        "final block is a full 254-run"
    );
    let mut alt = usual[..usual.len() - 1].to_vec();
    alt.extend_from_slice(&[0x01, 0x00]);
    for (form, bytes) in [("usual", &usual), ("with trailing 0x01", &alt)] {
        assert_eq!(deframe(bytes), vec![Ok(payload.clone())], "{form}");
    }
}

// ---------------------------------------------------------------------------
// PROTOCOL.md 2: payloads with a good CRC that are still refused.

/// Body length of each kind, as PROTOCOL.md 3's tables give it (DTC_REPORT
/// with n = 1: 3 + 4n).
const BODY_LEN: [(u8, usize); 12] = [
    (kind::HELLO, 17 + 3 + 1),
    (kind::IGNITION_ON, 4),
    (kind::IGNITION_OFF, 8),
    (kind::HEARTBEAT, 1 + 4 + 4 + 2 + 4),
    (kind::LAMP, 2),
    (kind::DTC_REPORT, 3 + 4),
    (kind::POWER_LOST, 1),
    (kind::POWER_RESTORED, 4),
    (kind::ACK, 2),
    (kind::TIME, 0),
    (kind::REQUEST_DTC, 2),
    (kind::REQUEST_STATUS, 0),
];

/// A body of `len` bytes that decodes for every kind at its right length:
/// 0x01 is a valid engine state, lamp id, lamp state and DTC count, but not
/// a printable VIN character, so HELLO's VIN is filled with `A`.
fn filler_body(k: u8, len: usize) -> Vec<u8> {
    let mut b = vec![0x01u8; len];
    if k == kind::HELLO {
        for x in b.iter_mut().take(17) {
            *x = b'A';
        }
    }
    b
}

#[test]
fn every_kind_decodes_at_its_stated_body_length() {
    // The table above is PROTOCOL.md 3; at exactly that length each kind decodes.
    for (k, len) in BODY_LEN {
        let mut p = header(k, 9);
        p.extend_from_slice(&filler_body(k, len));
        let m = Message::decode(&p).unwrap_or_else(|e| panic!("kind 0x{k:02x}: {e}"));
        assert_eq!(m.body.kind(), k);
        assert_eq!(m.encode(), p);
    }
}

#[test]
fn a_wrong_body_length_is_refused_for_every_kind() {
    // PROTOCOL.md 2: a payload "whose body length does not match its kind is rejected".
    for (k, len) in BODY_LEN {
        let mut wrong = vec![len + 1, len + 7];
        if len > 0 {
            wrong.push(len - 1);
        }
        if k == kind::DTC_REPORT {
            wrong.push(2); // the count byte itself is missing
        }
        for got in wrong {
            let mut p = header(k, 9);
            p.extend_from_slice(&filler_body(k, got));
            let expected = match k {
                kind::DTC_REPORT if got < 3 => 3,
                kind::DTC_REPORT => 3 + 4 * usize::from(p[HEADER_LEN + 2]),
                _ => len,
            };
            assert_eq!(
                Message::decode(&p),
                Err(DecodeError::Length {
                    kind: k,
                    expected,
                    got
                }),
                "kind 0x{k:02x} with {got} body bytes"
            );
        }
    }
}

#[test]
fn a_dtc_report_whose_count_disagrees_with_its_entries_is_refused() {
    // PROTOCOL.md 3: DTC_REPORT is exactly 3 + 4n bytes.
    let mut p = header(kind::DTC_REPORT, 3);
    p.extend_from_slice(&[0xE0, 0x07, 3]);
    p.extend_from_slice(&[0x03, 0x01, 0x00, 0x09, 0xC1, 0x23, 0x1C, 0x04]);
    assert_eq!(
        Message::decode(&p),
        Err(DecodeError::Length {
            kind: kind::DTC_REPORT,
            expected: 15,
            got: 11
        })
    );
}

#[test]
fn every_unknown_kind_is_refused() {
    // PROTOCOL.md 2 and 3: twelve kinds exist; every other byte is unknown.
    let known: Vec<u8> = BODY_LEN.iter().map(|&(k, _)| k).collect();
    for k in (0..=255u8).filter(|k| !known.contains(k)) {
        let mut p = header(k, 1);
        p.extend_from_slice(&[0u8; 8]);
        assert_eq!(Message::decode(&p), Err(DecodeError::UnknownKind(k)));
        assert_eq!(DecodeError::UnknownKind(k).reason(), "unknown_kind");
    }
}

#[test]
fn a_version_other_than_1_is_refused_before_anything_else() {
    // PROTOCOL.md 2: "A payload whose version is not 1 ... is rejected",
    // whatever its kind or length (a future version may change both).
    let heartbeat = vectors()[1].payload.clone();
    let mut unknown_and_short = header(0xEE, 1);
    unknown_and_short.push(0);
    for version in [0u8, 2, 0x7F, 0xFF] {
        for mut p in [heartbeat.clone(), unknown_and_short.clone()] {
            p[0] = version;
            assert_eq!(Message::decode(&p), Err(DecodeError::Version(version)));
        }
    }
}

#[test]
fn a_payload_shorter_than_its_header_is_refused() {
    // PROTOCOL.md 2: the header alone is 20 bytes. (The deframer already
    // drops such frames as too_short; a CAN link hands payloads on directly.)
    let full = &vectors()[0].payload;
    for n in 0..HEADER_LEN {
        assert_eq!(Message::decode(&full[..n]), Err(DecodeError::Truncated(n)));
        assert_eq!(Header::parse(&full[..n]), None);
    }
}

#[test]
fn a_refused_payload_still_yields_the_header_to_ack_it_with() {
    // PROTOCOL.md 4: a good-CRC payload with an unsupported version, unknown
    // kind or wrong length is ACKed with the seq and device_id of its header.
    let mut cases = Vec::new();
    let mut version = header(kind::LAMP, 41);
    version[0] = 2;
    version.extend_from_slice(&[1, 1]);
    cases.push(version);
    let mut unknown = header(0x42, 42);
    unknown.extend_from_slice(&[1, 2, 3]);
    cases.push(unknown);
    let mut length = header(kind::LAMP, 43);
    length.extend_from_slice(&[1, 1, 1]);
    cases.push(length);
    for (p, seq) in cases.iter().zip(41u16..) {
        assert!(Message::decode(p).is_err());
        let h = Header::parse(p).expect("20-byte header present");
        assert_eq!(
            (h.seq, h.device_id, h.time_ms),
            (seq, DEVICE, 1_767_225_600_000)
        );
    }
}

#[test]
fn out_of_range_enumerated_fields_are_refused() {
    // PROTOCOL.md 3 enumerates engine (0 parked, 1 running), lamp state
    // (1 lit, 0 off), lamp ids from 1, and the VIN as ASCII. The codec
    // refuses other values as `Field` errors; ingest ACKs them like any other
    // refused payload (PROTOCOL.md 4), so the dongle moves on.
    let hb = &vectors()[1].payload;
    let mut engine = hb.clone();
    engine[HEADER_LEN] = 2;
    assert_eq!(
        Message::decode(&engine),
        Err(DecodeError::Field {
            kind: kind::HEARTBEAT,
            field: "engine",
            value: 2
        })
    );

    let lamp = |id: u8, state: u8| {
        let mut p = header(kind::LAMP, 5);
        p.extend_from_slice(&[id, state]);
        Message::decode(&p)
    };
    assert_eq!(
        lamp(3, 1).map(|m| m.body),
        Ok(Body::Lamp { lamp: 3, lit: true })
    );
    assert_eq!(
        lamp(3, 0).map(|m| m.body),
        Ok(Body::Lamp {
            lamp: 3,
            lit: false
        })
    );
    assert_eq!(
        lamp(3, 2),
        Err(DecodeError::Field {
            kind: kind::LAMP,
            field: "state",
            value: 2
        })
    );
    assert_eq!(
        lamp(0, 1),
        Err(DecodeError::Field {
            kind: kind::LAMP,
            field: "lamp",
            value: 0
        })
    );

    let mut vin = vectors()[0].payload.clone();
    vin[HEADER_LEN + 5] = b'\n';
    assert_eq!(
        Message::decode(&vin),
        Err(DecodeError::Field {
            kind: kind::HELLO,
            field: "vin",
            value: 0
        })
    );
}

#[test]
fn an_all_zero_vin_means_unknown() {
    // PROTOCOL.md 3 HELLO: "vin: 17 bytes ASCII (all 0x00 when unknown)";
    // flags bit 0: sent after a power loss.
    let mut p = header(kind::HELLO, 1);
    p.extend_from_slice(&[0u8; 17]);
    p.extend_from_slice(&[2, 0, 7, 0x01]);
    let m = Message::decode(&p).expect("valid HELLO");
    assert_eq!(
        m.body,
        Body::Hello(Hello {
            vin: None,
            firmware: Firmware(2, 0, 7),
            after_power_loss: true,
            flags: 1
        })
    );
    assert_eq!(m.encode(), p);
}

// ---------------------------------------------------------------------------
// PROTOCOL.md 3: DTC text and lamp names.

#[test]
fn dtcs_format_as_protocol_examples() {
    // PROTOCOL.md 3 "DTCs": `0x03 0x01 0x00` is P0301; `0xC1 0x23 0x1C` is U0123-1C.
    assert_eq!(Dtc([0x03, 0x01, 0x00]).to_string(), "P0301");
    assert_eq!(Dtc([0xC1, 0x23, 0x1C]).to_string(), "U0123-1C");
    // Bits 15-14 choose the letter, 13-12 the first digit.
    for (hi, text) in [
        (0x00, "P0000"),
        (0x40, "C0000"),
        (0x80, "B0000"),
        (0xC0, "U0000"),
    ] {
        assert_eq!(Dtc([hi, 0x00, 0x00]).to_string(), text);
    }
    assert_eq!(Dtc([0x30, 0x00, 0x00]).to_string(), "P3000");
    assert_eq!(Dtc([0x0A, 0xBC, 0x00]).to_string(), "P0ABC");
    // The failure-type byte, shown after a dash when non-zero, in upper-case hex.
    assert_eq!(Dtc([0x03, 0x01, 0x0A]).to_string(), "P0301-0A");
    assert_eq!(Dtc([0xFF, 0xFF, 0xFF]).to_string(), "U3FFF-FF");
}

proptest! {
    #[test]
    fn every_dtc_text_parses_back(bytes in any::<[u8; 3]>()) {
        let d = Dtc(bytes);
        prop_assert_eq!(Dtc::parse(&d.to_string()), Some(d));
    }
}

#[test]
fn lamp_ids_have_the_protocol_names() {
    // PROTOCOL.md 3 "Lamp ids", in order from 1.
    let names = [
        "engine (MIL)",
        "charging system",
        "oil pressure",
        "coolant temperature",
        "brake system",
        "ABS",
        "airbag (SRS)",
        "tyre pressure (TPMS)",
        "particulate filter",
        "glow plug",
        "stability/traction control",
        "emissions/AdBlue",
        "service due",
        "power steering",
        "other",
    ];
    for (id, name) in (1u8..).zip(names) {
        assert_eq!(lamp_name(id), name, "lamp id {id}");
    }
    // "Unknown ids are kept as "lamp N"."
    for id in [0u8, 16, 32, 255] {
        assert_eq!(lamp_name(id), format!("lamp {id}"));
    }
}

#[test]
fn heartbeat_lamp_bits_name_lamp_ids() {
    // PROTOCOL.md 3 HEARTBEAT: "bit i set = lamp id i+1 is lit now".
    let hb = Heartbeat {
        engine: Engine::Running,
        run_s: 0,
        odometer_km: 0,
        battery_mv: 0,
        lamps: 0x8000_4001,
    };
    assert_eq!(hb.lit_lamps().collect::<Vec<_>>(), vec![1, 15, 32]);
}
