//! How fast the serial codec is, in figures a person can compare with a
//! radio gateway's line rate.
//!
//! A Raspberry Pi behind a lot gateway may hear hundreds of dongles over one
//! 115200-baud line (about 11.5 kB/s), so the codec must stay far ahead of
//! the wire. This prints throughput for a realistic mixed stream (mostly
//! HEARTBEATs, some LAMPs and DTC_REPORTs, a few HELLOs and ignition events):
//! deframe + decode as the serial link does it, each half alone, and encode.
//! It prints figures and never asserts on time: machines differ.
//!
//! `cargo bench --bench codec` measures (about 1.5 s per figure, reported
//! as the median of 11 rounds);
//! without `--bench` (as `cargo test --benches` runs it) each figure runs
//! once, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use forecourt::link::frame::{self, Deframed, Deframer};
use forecourt::link::message::{
    Body, Dtc, DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello, Message, Vin,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Messages in the stream: large enough that one pass dwarfs timer overhead.
const MESSAGES: usize = 20_000;
/// Units on the lot, interleaved as a gateway relays them.
const UNITS: u64 = 120;

fn mixed_stream(rng: &mut StdRng) -> Vec<Message> {
    let mut seqs = vec![0u16; UNITS as usize];
    let mut time_ms = 1_767_225_600_000u64;
    (0..MESSAGES)
        .map(|_| {
            let unit = rng.random_range(0..UNITS);
            let seq = &mut seqs[unit as usize];
            *seq = seq.wrapping_add(1);
            time_ms += rng.random_range(0..500);
            let roll = rng.random_range(0..100);
            let body = match roll {
                0..=79 => Body::Heartbeat(Heartbeat {
                    engine: if rng.random_bool(0.3) {
                        Engine::Running
                    } else {
                        Engine::Parked
                    },
                    run_s: rng.random_range(0..7200),
                    odometer_km: rng.random_range(1_000..300_000),
                    battery_mv: rng.random_range(11_000..14_600),
                    lamps: if rng.random_bool(0.1) {
                        1 << rng.random_range(0..15)
                    } else {
                        0
                    },
                }),
                80..=89 => Body::Lamp {
                    lamp: rng.random_range(1..=15),
                    lit: rng.random_bool(0.5),
                },
                90..=96 => Body::DtcReport(DtcReport {
                    ecu: [0x07E0, 0x07E1, 0x0760, 0x0726][rng.random_range(0..4)],
                    entries: (0..rng.random_range(0..=8))
                        .map(|_| DtcEntry {
                            dtc: Dtc([rng.random(), rng.random(), rng.random()]),
                            status: rng.random(),
                        })
                        .collect(),
                }),
                97 => Body::IgnitionOn {
                    odometer_km: rng.random_range(1_000..300_000),
                },
                98 => Body::IgnitionOff {
                    odometer_km: rng.random_range(1_000..300_000),
                    run_s: rng.random_range(0..7200),
                },
                _ => Body::Hello(Hello {
                    vin: Vin::parse("WF0XXXGCDX1234567"),
                    firmware: Firmware(1, 4, 2),
                    after_power_loss: false,
                    flags: 0,
                }),
            };
            Message {
                seq: *seq,
                device_id: 0x0102_0304_0000_0000 | unit,
                time_ms,
                body,
            }
        })
        .collect()
}

/// Times `pass` over `budget`, split into rounds of several passes, and
/// returns the median time of one pass across rounds: the median shrugs off
/// the rounds another process on the machine happened to slow down.
fn time_per_pass(budget: Duration, mut pass: impl FnMut()) -> Duration {
    const ROUNDS: u32 = 11;
    pass(); // warm caches and the allocator
    let probe = Instant::now();
    pass();
    let one = probe.elapsed().max(Duration::from_micros(1));
    let per_round = ((budget / ROUNDS).as_secs_f64() / one.as_secs_f64()).ceil() as u32;
    let per_round = per_round.max(1);
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                pass();
            }
            start.elapsed() / per_round
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

struct Row {
    name: &'static str,
    bytes: usize,
    messages: usize,
    per_pass: Duration,
}

impl Row {
    fn print(&self) {
        let s = self.per_pass.as_secs_f64();
        println!(
            "{:<34} {:>9.1} {:>12.0} {:>9.1}",
            self.name,
            self.bytes as f64 / s / 1e6,
            self.messages as f64 / s,
            s * 1e9 / self.messages as f64,
        );
    }
}

/// Deframes `wire` in reads of `read_size` bytes; with `decode`, also parses
/// each payload as the serial link and ingest do. Returns messages found.
fn deframe_pass(wire: &[u8], read_size: usize, decode: bool) -> usize {
    let mut d = Deframer::new();
    let mut found = 0;
    for read in wire.chunks(read_size) {
        d.feed(read, |item| {
            if let Deframed::Payload(p) = item {
                if !decode || Message::decode(p).is_ok() {
                    found += 1;
                }
            }
        });
    }
    found
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let measuring = std::env::args().any(|a| a == "--bench");
    let budget = if measuring {
        Duration::from_millis(1500)
    } else {
        Duration::ZERO
    };

    let mut rng = StdRng::seed_from_u64(0x00C0_FFEE);
    let messages = mixed_stream(&mut rng);
    let payloads: Vec<Vec<u8>> = messages.iter().map(Message::encode).collect();
    let mut wire = Vec::new();
    for p in &payloads {
        frame::encode_serial(p, &mut wire);
    }
    let n = messages.len();
    assert_eq!(
        deframe_pass(&wire, 4096, true),
        n,
        "every generated frame decodes"
    );

    println!(
        "codec: {n} messages, {} wire bytes ({:.1} bytes/message){}",
        wire.len(),
        wire.len() as f64 / n as f64,
        if measuring {
            "; each figure the median of 11 rounds"
        } else {
            "; smoke run, figures are not measurements"
        }
    );
    println!(
        "{:<34} {:>9} {:>12} {:>9}",
        "figure", "MB/s", "messages/s", "ns/msg"
    );

    for (name, read_size) in [
        ("deframe+decode, 4 KiB reads", 4096),
        ("deframe+decode, 64 B reads", 64),
    ] {
        let per_pass = time_per_pass(budget, || {
            black_box(deframe_pass(black_box(&wire), read_size, true));
        });
        Row {
            name,
            bytes: wire.len(),
            messages: n,
            per_pass,
        }
        .print();
    }

    let per_pass = time_per_pass(budget, || {
        black_box(deframe_pass(black_box(&wire), 4096, false));
    });
    Row {
        name: "deframe only, 4 KiB reads",
        bytes: wire.len(),
        messages: n,
        per_pass,
    }
    .print();

    let payload_bytes: usize = payloads.iter().map(Vec::len).sum();
    let per_pass = time_per_pass(budget, || {
        for p in black_box(&payloads) {
            let _ = black_box(Message::decode(p));
        }
    });
    Row {
        name: "decode only (payloads)",
        bytes: payload_bytes,
        messages: n,
        per_pass,
    }
    .print();

    let mut payload = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(wire.len());
    let per_pass = time_per_pass(budget, || {
        out.clear();
        for m in black_box(&messages) {
            payload.clear();
            m.encode_into(&mut payload);
            frame::encode_serial(&payload, &mut out);
        }
        black_box(&out);
    });
    Row {
        name: "encode (message to wire bytes)",
        bytes: wire.len(),
        messages: n,
        per_pass,
    }
    .print();
}
