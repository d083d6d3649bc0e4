//! A full disk (the ground rules: "says what is wrong, keeps running, and
//! keeps every acknowledged write"): the real `forecourt run` keeps its data
//! on a small tmpfs that a filler file then fills. Messages stop being
//! ACKed (never ACKed and lost), `/healthz` says what is wrong, and when
//! space comes back the dongle's retransmission is ACKed and everything
//! ACKed is still there after a restart.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a tmpfs at {} failed (this test needs root)",
            at.display()
        );
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let mut small = [0u8; 512];
    while f.write_all(&small[..]).is_ok() {
        small[0] = small[0].wrapping_add(1);
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_stops_acks_says_why_and_loses_nothing() {
    if skip_under_qemu_user() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _mount = Mount::tmpfs(&mnt, "8m");
    let mut line = Line::open();
    let config = dir.path().join("forecourt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {:?}\n",
            mnt.join("data").display().to_string(),
            line.slave_path.display().to_string()
        ),
    )
    .unwrap();
    let app = Appliance::start(&config);
    let t0 = now_ms() - 86_400_000;
    let msg = |seq: u16| {
        let (k, b) = dtc_report(0x07E0, &[([0x03, 0x01, seq as u8], 0x09); 40]);
        wire(&payload(k, seq, 77, t0 + seq as u64 * 1000, &b))
    };
    // A unit of a brand that needs no consent, so everything it says is kept.
    let (k, b) = hello("WF0XXXGCDX1234567", false);
    line.write(&wire(&payload(k, 60_000, 77, t0 - 1000, &b)));
    line.wait_ack(77, 60_000, Duration::from_secs(10)).unwrap();
    let mut acked = 0u16;
    for seq in 1..=20 {
        line.write(&msg(seq));
        line.wait_ack(77, seq, Duration::from_secs(10)).unwrap();
        acked = seq;
    }
    let filler = mnt.join("filler");
    fill(&filler);
    // Keep sending until a message is not ACKed: the store cannot commit it.
    let mut refused = None;
    for seq in (acked + 1)..=4000 {
        line.write(&msg(seq));
        if line.wait_ack(77, seq, Duration::from_secs(3)).is_ok() {
            acked = seq;
        } else {
            refused = Some(seq);
            break;
        }
    }
    let refused = refused.expect("the store kept committing on a full disk");
    let h = app.healthz();
    assert_eq!(h["status"], "degraded", "{h}");
    let problems = h["problems"].to_string();
    assert!(
        problems.contains("store") && problems.contains("full"),
        "says what is wrong: {h}"
    );
    assert_eq!(
        h["messages"].as_u64(),
        Some(acked as u64 + 1),
        "only ACKed messages counted: {h}"
    );
    // Space comes back; the dongle retransmits; the appliance carries on.
    std::fs::remove_file(&filler).unwrap();
    line.write(&msg(refused));
    line.wait_ack(77, refused, Duration::from_secs(15))
        .expect("ACKed once space is back");
    let h = app.wait_until(|h| h["status"] == "ok", "healthy again");
    assert_eq!(h["messages"].as_u64(), Some(refused as u64 + 1));
    app.stop();
    let app = Appliance::start(&config);
    assert_eq!(
        app.healthz()["messages"].as_u64(),
        Some(refused as u64 + 1),
        "every ACKed write kept"
    );
    app.stop();
}
