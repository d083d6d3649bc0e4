//! SIGKILL mid-stream (PROTOCOL.md 4 "It never ACKs a message whose effects
//! could still be lost"): units stream stop-and-wait messages into the real
//! `forecourt run` over a pty; the appliance is killed with SIGKILL three
//! times and restarted on the same data directory. Every ACKed message must
//! have survived each kill, and at the end every unique message must have
//! been applied exactly once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

const UNITS: u64 = 30;
const PER_UNIT: u16 = 40;

struct Unit {
    device: u64,
    next: u16,
    sent_at: Option<Instant>,
}

#[test]
fn no_acked_message_is_lost_and_none_applied_twice_across_sigkill() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let mut app = Appliance::start(&config);
    let t0 = now_ms() - 86_400_000;
    let mut units: Vec<Unit> = (0..UNITS)
        .map(|i| Unit {
            device: 500 + i,
            next: 1,
            sent_at: None,
        })
        .collect();
    let frame = |device: u64, seq: u16| {
        let body = heartbeat(false, 0, 1000 + seq as u32, 12_500, 0);
        wire(&payload(
            body.0,
            seq,
            device,
            t0 + seq as u64 * 60_000,
            &body.1,
        ))
    };
    let mut acked: u64 = 0;
    let mut kills = vec![900u64, 600, 250];
    let total = UNITS * PER_UNIT as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < total {
        assert!(
            Instant::now() < deadline,
            "stalled at {acked} of {total} ACKed"
        );
        // Stop and wait: each unit (re)sends its one outstanding message.
        let mut batch = Vec::new();
        for u in units.iter_mut().filter(|u| u.next <= PER_UNIT) {
            if u.sent_at
                .is_none_or(|t| t.elapsed() > Duration::from_millis(300))
            {
                batch.extend(frame(u.device, u.next));
                u.sent_at = Some(Instant::now());
            }
        }
        if !batch.is_empty() {
            line.write(&batch);
        }
        let by_device: HashMap<u64, usize> = units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.device, i))
            .collect();
        while let Some(d) = line.recv(Duration::from_millis(50)) {
            let Some(&i) = by_device.get(&d.device) else {
                continue;
            };
            let u = &mut units[i];
            if d.acked_seq() == Some(u.next) {
                u.next += 1;
                u.sent_at = None;
                acked += 1;
            }
        }
        if kills.last().is_some_and(|&k| acked >= k) {
            kills.pop();
            app.kill();
            app = Appliance::start(&config);
            let h = app.healthz();
            let durable = h["messages"].as_u64().unwrap();
            assert!(
                durable >= acked,
                "ACKed {acked} but only {durable} survived SIGKILL: {h}"
            );
            // Nothing beyond what was sent can be there.
            let sent: u64 = units
                .iter()
                .map(|u| (u.next - 1) as u64 + u64::from(u.sent_at.is_some()))
                .sum();
            assert!(durable <= sent, "{durable} applied but only {sent} sent");
        }
    }
    assert!(kills.is_empty(), "all three kills happened");
    let h = app.wait_until(
        |h| h["messages"].as_u64() == Some(total),
        "every message applied",
    );
    assert_eq!(
        h["messages"].as_u64(),
        Some(total),
        "each unique message exactly once: {h}"
    );
    assert_eq!(h["vehicles"].as_u64(), Some(UNITS));
    // (Rejections may be counted: a kill can leave half a frame in the pty,
    // which the next process reads as garbage, as a real line would.)
    app.stop();
}
