//! A link that fails is reopened with backoff while the other links keep
//! working, and its state is visible (issue 2, "Transports"). A udev-style
//! symlink stands for a USB adapter's stable path: unplugging closes the
//! pty, replugging points the symlink at a new one.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn an_unplugged_port_goes_down_is_reopened_and_the_other_keeps_working() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("ttyUSB-by-id");
    let mut a = Line::open();
    std::os::unix::fs::symlink(&a.slave_path, &adapter).unwrap();
    let mut b = Line::open();
    let config = dir.path().join("forecourt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {:?}\n[[serial]]\npath = {:?}\n",
            dir.path().join("data").display().to_string(),
            adapter.display().to_string(),
            b.slave_path.display().to_string()
        ),
    )
    .unwrap();
    let app = Appliance::start(&config);
    app.wait_until(|h| h["links"][1]["up"] == true, "second link up");
    let t0 = now_ms();
    a.line_write_msg(1, 81, t0);
    a.wait_ack(81, 1, T).unwrap();
    // Unplug: the pty disappears.
    drop(a);
    let h = app.wait_until(|h| h["links"][0]["up"] == false, "first link down");
    assert_eq!(h["status"], "degraded");
    assert!(
        h["problems"].to_string().contains("ttyUSB-by-id"),
        "names the link: {h}"
    );
    // The other link is unaffected.
    b.line_write_msg(1, 82, t0);
    b.wait_ack(82, 1, T).unwrap();
    // Replug: a new device behind the same stable path.
    let mut a2 = Line::open();
    std::fs::remove_file(&adapter).unwrap();
    std::os::unix::fs::symlink(&a2.slave_path, &adapter).unwrap();
    let h = app.wait_until(
        |h| h["links"][0]["up"] == true && h["status"] == "ok",
        "first link reopened",
    );
    assert!(h["links"][0]["reopens"].as_u64().unwrap() >= 1, "{h}");
    a2.line_write_msg(2, 81, t0 + 1);
    a2.wait_ack(81, 2, T).unwrap();
    let h = app.wait_until(|h| h["messages"] == 3, "three messages");
    assert_eq!(h["vehicles"], 2);
    app.stop();
}

trait SendOne {
    fn line_write_msg(&mut self, seq: u16, device: u64, time_ms: u64);
}

impl SendOne for Line {
    fn line_write_msg(&mut self, seq: u16, device: u64, time_ms: u64) {
        let (k, b) = ignition_on(1000);
        self.write(&wire(&payload(k, seq, device, time_ms, &b)));
    }
}
