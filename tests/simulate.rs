//! `forecourt simulate` drives `forecourt run`: two real processes joined by
//! a null-modem cable of two ptys. A skewed, buffered, retransmitting lot
//! must be taken in with every ACKed message applied exactly once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_simulated_lot_drives_the_real_appliance() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cable = NullModem::open();
    let config = write_config(dir.path(), &cable.a);
    let app = Appliance::start(&config);
    let sim = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(["simulate", "--serial"])
        .arg(&cable.b)
        .args([
            "--vehicles",
            "12",
            "--speed",
            "20000",
            "--backfill-hours",
            "72",
            "--skewed-units",
            "2",
            "--seed",
            "5",
        ])
        .env("FORECOURT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn simulate");
    let h = app.wait_until(
        |h| h["vehicles"] == 12 && h["messages"].as_u64() > Some(2_000),
        "the lot heard",
    );
    assert_eq!(h["rejected"], 0, "{h}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sim.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = sim.wait_with_output().unwrap();
    assert!(out.status.success(), "simulate exited with {}", out.status);
    let stats: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("simulate prints its figures as JSON");
    let (sent, acked) = (
        stats["sent"].as_u64().unwrap(),
        stats["acked"].as_u64().unwrap(),
    );
    assert!(acked > 2_000 && acked <= sent, "{stats}");
    assert!(
        stats["time_corrections"].as_u64().unwrap() >= 2,
        "skewed units corrected by TIME: {stats}"
    );
    // Every message the lot saw ACKed was applied, and none twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = app.healthz();
        if h["messages"].as_u64() >= Some(acked) || Instant::now() > deadline {
            break h;
        }
    };
    let applied = h["messages"].as_u64().unwrap();
    assert!(
        applied >= acked && applied <= sent,
        "applied {applied}, ACKed {acked}, sent {sent}: {h}"
    );
    app.stop();
}
