//! End to end over a real pty into the real `forecourt run`: an independent
//! dongle (tests/common) plays PROTOCOL.md and checks every answer, and
//! `/healthz` must count each unique message exactly once.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

struct Rig {
    _dir: tempfile::TempDir,
    line: Line,
    app: Appliance,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    Rig {
        _dir: dir,
        line,
        app,
    }
}

fn send(line: &mut Line, kind_body: (u8, Vec<u8>), seq: u16, device: u64, time_ms: u64) -> Vec<u8> {
    let p = payload(kind_body.0, seq, device, time_ms, &kind_body.1);
    line.write(&wire(&p));
    p
}

#[test]
fn every_message_is_acked_and_hello_gets_time() {
    if skip_under_qemu_user() {
        return;
    }
    let mut r = rig();
    let t0 = now_ms() - 60_000;
    // PROTOCOL.md 4: ACK only after commit; TIME after every HELLO's ACK.
    send(&mut r.line, hello("WF0XXXGCDX1234567", false), 1, 11, t0);
    let seen = r.line.wait_ack(11, 1, T).unwrap();
    assert_eq!(seen.len(), 1, "nothing before the ACK: {seen:?}");
    let time = r.line.recv(T).expect("TIME after HELLO");
    assert_eq!((time.kind, time.device), (0x81, 11));
    assert!(time.body.is_empty());
    assert!(
        time.time_ms.abs_diff(now_ms()) < 5_000,
        "TIME carries the appliance clock"
    );
    // A retransmitted HELLO is re-ACKed and answered with a TIME again.
    send(&mut r.line, hello("WF0XXXGCDX1234567", false), 1, 11, t0);
    r.line.wait_ack(11, 1, T).unwrap();
    assert_eq!(
        r.line.recv(T).map(|d| d.kind),
        Some(0x81),
        "TIME after a duplicate HELLO too"
    );
    let msgs = [
        heartbeat(true, 900, 123_456, 14_100, 1),
        lamp(1, true),
        dtc_report(
            0x07E0,
            &[([0x03, 0x01, 0x00], 0x09), ([0xC1, 0x23, 0x1C], 0x04)],
        ),
        ignition_on(123_460),
        (
            0x03,
            [123_470u32.to_le_bytes(), 600u32.to_le_bytes()].concat(),
        ),
        (0x07, vec![1]),
        (0x08, 42u32.to_le_bytes().to_vec()),
    ];
    for (i, m) in msgs.into_iter().enumerate() {
        let seq = 2 + i as u16;
        send(&mut r.line, m, seq, 11, t0 + 1000 * seq as u64);
        r.line.wait_ack(11, seq, T).unwrap();
    }
    let h = r.app.wait_until(|h| h["messages"] == 8, "8 messages");
    assert_eq!(h["vehicles"], 1);
    assert_eq!(h["duplicates"], 1);
    assert_eq!(h["rejected"], 0);
    assert_eq!(h["status"], "ok");
    r.app.stop();
}

#[test]
fn garbage_bad_crc_truncated_and_oversized_frames_are_dropped_and_counted() {
    if skip_under_qemu_user() {
        return;
    }
    let mut r = rig();
    let t0 = now_ms();
    // Garbage between frames is normal (PROTOCOL.md 1).
    r.line.write(b"\x13\x37garbage\xff\xfe");
    // A bad CRC: not ACKed, counted.
    let mut bad = wire(&payload(0x02, 1, 21, t0, &7u32.to_le_bytes()));
    bad[5] ^= 0x01;
    r.line.write(&bad);
    // Shorter than 24 bytes decoded.
    let mut short = cobs(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    short.push(0);
    r.line.write(&short);
    // Longer than 1028 bytes decoded.
    let mut long = cobs(&vec![0x55u8; 1100]);
    long.push(0);
    r.line.write(&long);
    // Invalid COBS: a code pointing past the frame's end.
    r.line.write(&[0x09, 0x01, 0x02, 0x00]);
    // Empty frames are ignored, not counted.
    r.line.write(&[0x00, 0x00, 0x00]);
    // And the line still works.
    send(&mut r.line, ignition_on(7), 1, 21, t0);
    let seen = r.line.wait_ack(21, 1, T).unwrap();
    assert_eq!(
        seen.len(),
        1,
        "nothing answered the dropped frames: {seen:?}"
    );
    // The first "garbage" run ends at the next 0x00: the bad-CRC frame's
    // delimiter. So it is one frame with the corrupted one: 4 drops.
    let h = r.app.wait_until(|h| h["messages"] == 1, "1 message");
    assert_eq!(h["rejected"], 4, "{h}");
    let rejected = &h["links"][0]["rejected"];
    assert_eq!(rejected["too_short"], 1, "{h}");
    assert_eq!(rejected["too_long"], 1, "{h}");
    assert_eq!(
        rejected["cobs"].as_u64().unwrap() + rejected["crc"].as_u64().unwrap_or(0),
        2,
        "{h}"
    );
    r.app.stop();
}

#[test]
fn bad_payloads_with_good_crc_are_acked_not_applied_and_counted_each_time() {
    if skip_under_qemu_user() {
        return;
    }
    let mut r = rig();
    let t0 = now_ms();
    // PROTOCOL.md 4 "What gets an ACK": version, kind, body length.
    let mut v2 = payload(0x02, 5, 31, t0, &1u32.to_le_bytes());
    v2[0] = 2;
    let unknown = payload(0x42, 6, 31, t0, &[]);
    let short_body = payload(0x04, 7, 31, t0, &[1, 2, 3]);
    for p in [&v2, &unknown, &short_body, &v2] {
        r.line.write(&wire(p));
        let seq = u16::from_le_bytes([p[2], p[3]]);
        r.line.wait_ack(31, seq, T).unwrap();
    }
    let h = r.app.wait_until(|h| h["rejected"] == 4, "4 rejected");
    assert_eq!(h["messages"], 0);
    assert_eq!(h["vehicles"], 0, "a rejected payload registers no unit");
    r.app.stop();
}

#[test]
fn duplicates_are_reacked_not_applied_even_across_restarts() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    let t0 = now_ms() - 3_600_000;
    let first = send(&mut line, ignition_on(100), 9, 41, t0);
    line.wait_ack(41, 9, T).unwrap();
    // A retransmission: same bytes.
    line.write(&wire(&first));
    line.wait_ack(41, 9, T).unwrap();
    // Same key, different bytes: still a duplicate, the first wins.
    send(&mut line, ignition_on(999), 9, 41, t0);
    line.wait_ack(41, 9, T).unwrap();
    // Same seq, other time: a new message (a rebooted unit).
    send(&mut line, ignition_on(101), 9, 41, t0 + 1);
    line.wait_ack(41, 9, T).unwrap();
    let h = app.wait_until(|h| h["duplicates"] == 2, "2 duplicates");
    assert_eq!(h["messages"], 2);
    // Two copies in one write: the second arrives while the first is
    // being committed, and is a duplicate.
    let p = payload(0x05, 10, 41, t0 + 2, &[3, 1]);
    let mut two = wire(&p);
    two.extend(wire(&p));
    line.write(&two);
    line.wait_ack(41, 10, T).unwrap();
    line.wait_ack(41, 10, T).unwrap();
    app.wait_until(
        |h| h["duplicates"] == 3 && h["messages"] == 3,
        "in-flight copy is a duplicate",
    );
    app.stop();
    // Across a restart: the dedupe state is durable.
    let app = Appliance::start(&config);
    let h = app.healthz();
    assert_eq!(
        (h["messages"].as_u64(), h["duplicates"].as_u64()),
        (Some(3), Some(3)),
        "durable totals: {h}"
    );
    line.write(&wire(&p));
    line.wait_ack(41, 10, T).unwrap();
    let h = app.wait_until(|h| h["duplicates"] == 4, "duplicate after restart");
    assert_eq!(h["messages"], 3);
    assert_eq!(h["vehicles"], 1);
    app.stop();
}

#[test]
fn frames_split_and_merged_at_every_boundary_all_arrive() {
    if skip_under_qemu_user() {
        return;
    }
    let mut r = rig();
    let t0 = now_ms() - 10_000;
    let frames: Vec<Vec<u8>> = (0..6u16)
        .map(|i| {
            wire(&payload(
                0x04,
                i + 1,
                51,
                t0 + i as u64,
                &heartbeat(false, 0, 10, 12_600, 0).1,
            ))
        })
        .collect();
    let stream: Vec<u8> = frames.concat();
    // Byte by byte.
    for b in &stream {
        r.line.write(&[*b]);
    }
    for i in 0..6u16 {
        r.line.wait_ack(51, i + 1, T).unwrap();
    }
    // The same bytes again at every split point into two writes: every copy
    // is a duplicate, and every one is re-ACKed.
    for cut in 1..stream.len() {
        r.line.write(&stream[..cut]);
        r.line.write(&stream[cut..]);
    }
    let copies = (stream.len() - 1) as u64 * 6;
    let h = r.app.wait_until(
        |h| h["duplicates"].as_u64() == Some(copies),
        "all copies re-ACKed",
    );
    assert_eq!(h["messages"], 6);
    assert_eq!(h["rejected"], 0);
    // Merged: many units' frames in one write.
    let merged: Vec<u8> = (0..50u64)
        .flat_map(|d| wire(&payload(0x02, 1, 1000 + d, t0, &5u32.to_le_bytes())))
        .collect();
    r.line.write(&merged);
    r.app.wait_until(
        |h| h["messages"] == 56 && h["vehicles"] == 51,
        "50 merged frames",
    );
    r.app.stop();
}

#[test]
fn future_times_are_accepted_and_past_history_too() {
    if skip_under_qemu_user() {
        return;
    }
    let mut r = rig();
    // 20 days late: buffered history is normal.
    send(
        &mut r.line,
        ignition_on(2),
        1,
        61,
        now_ms() - 20 * 86_400_000,
    );
    r.line.wait_ack(61, 1, T).unwrap();
    // 10 minutes ahead: not trusted, but applied with the receive time, and
    // the unit is flagged until its clock is right again.
    send(&mut r.line, ignition_on(1), 2, 61, now_ms() + 600_000);
    r.line.wait_ack(61, 2, T).unwrap();
    let h = r.app.wait_until(|h| h["messages"] == 2, "both applied");
    assert_eq!(h["rejected"], 0);
    let cookie = login_first_admin(&r.app);
    let page = http_get_with(&r.app.http, "/status", &[("Cookie", &cookie)]);
    assert!(
        page.contains("Log out") && page.contains("Admin"),
        "the staff header says who is logged in"
    );
    assert!(
        page.contains("clock ahead"),
        "the skewed unit is flagged on the status page"
    );
    r.app.stop();
}
