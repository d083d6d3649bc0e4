//! Issue 3, "Done when": an independent dongle implementation (tests/common:
//! its own CRC, COBS and encoding, written from PROTOCOL.md) plays each
//! R-LEAD-* scenario over a pty into the real `forecourt run`, and
//! `GET /api/v1/leads` shows every lead open and close exactly when and why
//! SPEC.md says, and nothing else.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);
const MIN: u64 = 60_000;

/// One simulated unit: its own seq and clock, stop and wait.
struct Unit {
    device: u64,
    seq: u16,
    t: u64,
}

impl Unit {
    fn new(device: u64, t: u64) -> Unit {
        Unit { device, seq: 0, t }
    }

    /// Sends one message a minute after the previous one; waits for its
    /// ACK; returns its time.
    fn send(&mut self, line: &mut Line, (kind, body): (u8, Vec<u8>)) -> u64 {
        self.seq += 1;
        self.t += MIN;
        line.write(&wire(&payload(kind, self.seq, self.device, self.t, &body)));
        line.wait_ack(self.device, self.seq, T).unwrap();
        self.t
    }
}

fn api_get(addr: &str, path: &str, token: &str) -> serde_json::Value {
    let bearer = format!("Bearer {token}");
    let body = http_get_with(addr, path, &[("Authorization", &bearer)]);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// (device, type, subject, status, opened_at, closed_at, close_reason, class)
type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn row(l: &serde_json::Value) -> Row {
    let s = |k: &str| match &l[k] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let subject = match (s("lamp").as_str(), s("code").as_str()) {
        ("-", "-") => "-".to_string(),
        (lamp, "-") => format!("lamp {lamp}"),
        (_, code) => format!("ecu {} {code}", s("ecu")),
    };
    (
        s("device_id"),
        s("type"),
        subject,
        s("status"),
        s("opened_at"),
        s("closed_at"),
        s("close_reason"),
        s("class"),
    )
}

fn expect(
    device: u64,
    ty: &str,
    subject: &str,
    opened: u64,
    closed: Option<(u64, &str)>,
    class: &str,
) -> Row {
    let time = forecourt::web::api::time;
    (
        device.to_string(),
        ty.into(),
        subject.into(),
        if closed.is_some() { "closed" } else { "open" }.into(),
        time(opened),
        closed.map_or("-".into(), |(t, _)| time(t)),
        closed.map_or("-".into(), |(_, r)| r.into()),
        class.into(),
    )
}

#[test]
fn every_r_lead_scenario_over_a_pty_is_seen_exactly_through_the_api() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    let out = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args([
            "token",
            "create",
            "--name",
            "scenarios",
            "--role",
            "technician",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let start = now_ms() - 6 * 3_600_000;
    let mut expected = BTreeSet::new();
    let ford = |n: u64| format!("WF0XXXGCDX{n:07}");

    // R-LEAD-LAMP (a): lit, then off, then a clean 15-minute run.
    let mut u = Unit::new(101, start);
    u.send(&mut line, hello(&ford(1), false));
    let opened = u.send(&mut line, lamp(1, true));
    u.send(&mut line, lamp(1, false));
    u.send(&mut line, ignition_on(1000));
    u.send(&mut line, heartbeat(true, 600, 1005, 14_100, 0));
    let closed = u.send(&mut line, heartbeat(true, 900, 1010, 14_100, 0));
    expected.insert(expect(
        101,
        "warning_lamp",
        "lamp 1",
        opened,
        Some((closed, "engine_run_15min")),
        "-",
    ));

    // R-LEAD-LAMP (b): a heartbeat bit alone opens; four clean short cycles close.
    let mut u = Unit::new(102, start);
    u.send(&mut line, hello(&ford(2), false));
    let opened = u.send(&mut line, heartbeat(false, 0, 2000, 12_600, 1 << 4));
    u.send(&mut line, heartbeat(false, 0, 2000, 12_600, 0));
    let mut closed = 0;
    for _ in 0..4 {
        u.send(&mut line, ignition_on(2000));
        closed = u.send(
            &mut line,
            (0x03, [2001u32.to_le_bytes(), 120u32.to_le_bytes()].concat()),
        );
    }
    expected.insert(expect(
        102,
        "warning_lamp",
        "lamp 5",
        opened,
        Some((closed, "four_clean_starts")),
        "-",
    ));

    // R-LEAD-BATT: driven, three low parked samples open; recovery closes
    // when the exact mean passes 11.7 V: (3 x 11.0 + 13.0) / 4 = 11.5,
    // (3 x 11.0 + 2 x 13.0) / 5 = 11.8.
    let mut u = Unit::new(103, start);
    u.send(&mut line, hello(&ford(3), false));
    u.send(&mut line, ignition_on(3000));
    u.send(
        &mut line,
        (0x03, [3010u32.to_le_bytes(), 600u32.to_le_bytes()].concat()),
    );
    u.send(&mut line, heartbeat(false, 0, 3010, 11_000, 0));
    u.send(&mut line, heartbeat(false, 0, 3010, 11_000, 0));
    let opened = u.send(&mut line, heartbeat(false, 0, 3010, 11_000, 0));
    u.send(&mut line, heartbeat(false, 0, 3010, 13_000, 0));
    let closed = u.send(&mut line, heartbeat(false, 0, 3010, 13_000, 0));
    expected.insert(expect(
        103,
        "low_battery",
        "-",
        opened,
        Some((closed, "battery_recovered")),
        "-",
    ));

    // R-LEAD-DISC: two losses, one lead; restored closes it.
    let mut u = Unit::new(104, start);
    u.send(&mut line, hello(&ford(4), false));
    let opened = u.send(&mut line, (0x07, vec![1]));
    u.send(&mut line, (0x07, vec![2]));
    let closed = u.send(&mut line, (0x08, 90u32.to_le_bytes().to_vec()));
    expected.insert(expect(
        104,
        "disconnected",
        "-",
        opened,
        Some((closed, "power_restored")),
        "-",
    ));

    // R-LEAD-DTC: two classed codes open, an unclassed one does not; a later
    // snapshot without one closes it.
    let mut u = Unit::new(105, start);
    u.send(&mut line, hello(&ford(5), false));
    let opened = u.send(
        &mut line,
        dtc_report(
            0x07E0,
            &[
                ([0x03, 0x01, 0x00], 0x09),
                ([0xC1, 0x23, 0x1C], 0x04),
                ([0x04, 0x20, 0x00], 0x00),
            ],
        ),
    );
    let closed = u.send(&mut line, dtc_report(0x07E0, &[([0x03, 0x01, 0x00], 0x09)]));
    expected.insert(expect(
        105,
        "error_code",
        "ecu 2016 P0301",
        opened,
        None,
        "permanent",
    ));
    expected.insert(expect(
        105,
        "error_code",
        "ecu 2016 U0123-1C",
        opened,
        Some((closed, "code_cleared")),
        "potential",
    ));

    // A unit with nothing wrong opens nothing.
    let mut u = Unit::new(106, start);
    u.send(&mut line, hello(&ford(6), false));
    u.send(&mut line, ignition_on(6000));
    u.send(&mut line, heartbeat(true, 900, 6010, 14_200, 0));
    u.send(
        &mut line,
        (
            0x03,
            [6020u32.to_le_bytes(), 1200u32.to_le_bytes()].concat(),
        ),
    );
    u.send(&mut line, heartbeat(false, 0, 6020, 12_600, 0));

    let page = api_get(&app.http, "/api/v1/leads?limit=1000", &token);
    let seen: BTreeSet<Row> = page["leads"]
        .as_array()
        .expect("leads")
        .iter()
        .map(row)
        .collect();
    assert_eq!(page["next"], serde_json::Value::Null);
    let missing: Vec<_> = expected.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nunexpected: {extra:#?}"
    );
    app.stop();
}
