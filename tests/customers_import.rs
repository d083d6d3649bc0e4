//! `forecourt import customers` and `forecourt export customers` against the
//! real binary (R-VEH-1, R-SRC-1, docs/customers.md): on the store when the
//! appliance is stopped and through its control socket when it runs. A bad
//! file (malformed rows, duplicates, oversized, not UTF-8, cut short)
//! changes nothing and its report names the rows; a dry run changes
//! nothing; the same file twice, or an export imported back, changes
//! nothing; a dongle whose HELLO names a registered VIN attaches to it.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const HEADER: &str =
    "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet";
const FORD: &str = "WF0XXXGCDX1234567";
const VW: &str = "WVWZZZ1JZXW000001";

fn forecourt(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run forecourt")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn good_file() -> String {
    format!(
        "{HEADER}\n\
K1,Anna Berg,+49 30 1234,anna@example.org,Google,2025-01-10,{FORD},Ford,Focus,2019,\n\
K1,Anna Berg,+49 30 1234,anna@example.org,Google,2025-01-10,{VW},Volkswagen,Golf,2021,\n\
K2,\"Bauer, Tom\",,,,2024-05-01,,,,,\n\
,,,,,,TMBJG7NE3GP329256,Skoda,Octavia,2016,City Taxis\n"
    )
}

/// Writes `bytes` as `name` in `dir` and imports it.
fn import(config: &Path, dir: &Path, name: &str, bytes: &[u8], dry_run: bool) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut args = vec!["import", "customers", path.to_str().unwrap()];
    if dry_run {
        args.push("--dry-run");
    }
    forecourt(&args, config)
}

fn export(config: &Path) -> String {
    let out = forecourt(&["export", "customers"], config);
    assert!(out.status.success(), "export: {:?}", text(&out));
    text(&out).0
}

/// Imports `bytes` expecting a refusal whose report holds `needles`, and
/// checks that nothing changed.
fn refused(config: &Path, dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    let before = export(config);
    let out = import(config, dir, name, bytes, false);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{name} was accepted: {err}");
    for n in needles.iter().chain(&["nothing"]) {
        assert!(err.contains(n), "{name}: {n:?} not in {err}");
    }
    assert_eq!(export(config), before, "{name} changed something");
}

fn bad_files_change_nothing(config: &Path, dir: &Path) {
    let malformed = format!(
        "{HEADER}\n\
K1,Anna,,anna@example,,,{FORD},,,,\n\
K2,Bert,,,,,,,,,\n\
K3,,,,,,,,,,\n\
K4,Dora,,,,2025-02-30,,,,,\n\
K5,Emil,,,,,WVWZZZ1JZXWO00001,,,,\n"
    );
    refused(
        config,
        dir,
        "malformed.csv",
        malformed.as_bytes(),
        &["row 2: e-mail", "row 4: name is empty", "row 5:", "row 6:"],
    );
    let out = import(config, dir, "malformed.csv", malformed.as_bytes(), false);
    assert!(
        !text(&out).1.contains("row 3"),
        "the good row is not blamed"
    );
    let duplicate = format!(
        "{HEADER}\n\
K1,Anna,,,,,{FORD},,,,\n\
K1,Anna,,,,,{FORD},,,,\n\
K2,Bert,,,,,{FORD},,,,\n\
K1,Anna B.,,,,,{VW},,,,\n"
    );
    refused(
        config,
        dir,
        "duplicate.csv",
        duplicate.as_bytes(),
        &["row 3: repeats row 2", "row 4: VIN", "row 5: customer K1"],
    );
    let mut oversized = format!("{HEADER}\n").into_bytes();
    while oversized.len() <= 8 * 1024 * 1024 {
        oversized.extend_from_slice(b"K9,Filler Name,,,,,,,,,\n");
    }
    refused(config, dir, "oversized.csv", &oversized, &["8 MB"]);
    // "René" saved as Latin-1, as an old DMS would.
    let mut latin1 = format!("{HEADER}\nK1,Ren").into_bytes();
    latin1.extend_from_slice(b"\xe9,,,,,,,,,\n");
    refused(config, dir, "latin1.csv", &latin1, &["UTF-8", "row 2"]);
    let good = good_file();
    let truncated = &good.as_bytes()[..good.len() - 30];
    refused(
        config,
        dir,
        "truncated.csv",
        truncated,
        &["row 5", "cut short"],
    );
    let unclosed = format!("{HEADER}\nK1,\"Anna Berg");
    refused(
        config,
        dir,
        "unclosed.csv",
        unclosed.as_bytes(),
        &["never closed"],
    );
}

fn imports_once_and_round_trips(config: &Path, dir: &Path) {
    let empty = export(config);
    assert_eq!(empty, format!("{HEADER},device_id\n"));
    let good = good_file();
    let dry = import(config, dir, "good.csv", good.as_bytes(), true);
    let (out, err) = text(&dry);
    assert!(dry.status.success(), "{err}");
    assert!(
        out.contains("dry run")
            && out.contains("customers 2 new, 0 changed, 0 unchanged")
            && out.contains("vehicles 3 new"),
        "{out}"
    );
    assert!(err.contains("checked 4 of 4 rows"), "progress: {err}");
    assert_eq!(export(config), empty, "a dry run changes nothing");
    let first = import(config, dir, "good.csv", good.as_bytes(), false);
    let (out, err) = text(&first);
    assert!(first.status.success(), "{err}");
    assert!(
        out.contains("imported 4 rows") && out.contains("1 new source: Google"),
        "{out}"
    );
    let after = export(config);
    assert!(
        after.contains("K2,\"Bauer, Tom\",,,,2024-05-01,"),
        "{after}"
    );
    assert!(
        after.contains(&format!(",{VW},Volkswagen,Golf,2021,,\n")),
        "{after}"
    );
    let twice = import(config, dir, "good.csv", good.as_bytes(), false);
    let (out, _) = text(&twice);
    assert!(
        out.contains("customers 0 new, 0 changed, 2 unchanged")
            && out.contains("vehicles 0 new, 0 changed, 3 unchanged")
            && out.contains("no new sources"),
        "{out}"
    );
    assert_eq!(export(config), after, "the same file twice changes nothing");
    let back = import(config, dir, "exported.csv", after.as_bytes(), false);
    let (out, err) = text(&back);
    assert!(back.status.success(), "{err}");
    assert!(out.contains("0 new, 0 changed"), "{out}");
    assert_eq!(export(config), after, "export then import changes nothing");
}

#[test]
fn import_and_export_work_on_the_store_when_the_appliance_is_stopped() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("forecourt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    bad_files_change_nothing(&config, dir.path());
    imports_once_and_round_trips(&config, dir.path());
}

/// The device id the export shows for `vin`, once there is one.
fn exported_device(config: &Path, vin: &str) -> Option<String> {
    let csv = export(config);
    let line = csv.lines().find(|l| l.contains(vin))?;
    let device = line.rsplit(',').next()?;
    (!device.is_empty()).then(|| device.to_string())
}

// R-VEH-1: a dongle heard for a known VIN attaches to it.
#[test]
fn through_the_control_socket_and_a_hello_attaches_its_dongle() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    bad_files_change_nothing(&config, dir.path());
    imports_once_and_round_trips(&config, dir.path());
    assert_eq!(exported_device(&config, FORD), None, "not connected yet");
    let t0 = now_ms() - 60_000;
    for (device, vin) in [(501u64, FORD), (502, VW)] {
        let (kind, body) = hello(vin, false);
        line.write(&wire(&payload(kind, 1, device, t0, &body)));
        line.wait_ack(device, 1, Duration::from_secs(10)).unwrap();
    }
    // The ACK follows the commit that attached the dongle: no wait needed.
    assert_eq!(exported_device(&config, FORD).as_deref(), Some("501"));
    // A Volkswagen awaiting consent (R-VEH-4) still has its identity known.
    assert_eq!(exported_device(&config, VW).as_deref(), Some("502"));
    assert_eq!(exported_device(&config, "TMBJG7NE3GP329256"), None);
    // Attaching a dongle is not an import change: the file is still current.
    let after = export(&config);
    let back = import(&config, dir.path(), "again.csv", after.as_bytes(), false);
    assert!(
        text(&back)
            .0
            .contains("vehicles 0 new, 0 changed, 3 unchanged"),
        "{:?}",
        text(&back)
    );
    // A HELLO with an unregistered VIN registers the vehicle, without customer.
    let (kind, body) = hello("VF1RJA00X12345678", false);
    line.write(&wire(&payload(kind, 2, 503, t0, &body)));
    line.wait_ack(503, 2, Duration::from_secs(10)).unwrap();
    assert_eq!(
        exported_device(&config, "VF1RJA00X12345678").as_deref(),
        Some("503")
    );
    let row = export(&config)
        .lines()
        .find(|l| l.contains("VF1RJA00X12345678"))
        .map(str::to_string)
        .unwrap();
    assert!(row.starts_with(",,,,,,VF1RJA00X12345678,"), "{row}");
    app.stop();
    // Stopped: the same data, straight from the store.
    assert_eq!(exported_device(&config, FORD).as_deref(), Some("501"));
}
