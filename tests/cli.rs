//! The data-changing commands (SPEC.md: "work whether or not the appliance
//! is running: through its control socket when it runs, directly on the
//! store when it does not"): catalog import and export, consent.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

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

const GOOD: &str = "kind,key,service,name,labour_hours,parts_price,description,severity\n\
service,TURBO,,\"Turbocharger check, boost leak test\",1.5,0.00,,\n\
dtc,P0299,TURBO,,,,Turbo underboost,3\n";

const BAD: &str = "kind,key,service,name,labour_hours,parts_price,description,severity\n\
service,TURBO2,,Fine row,1.0,0.00,,\n\
dtc,P0299,TURBO2,,,,Turbo underboost,5\n\
lamp,abc,TURBO2,,,,,\n";

fn import_and_export(config: &Path, dir: &Path) {
    std::fs::write(dir.join("bad.csv"), BAD).unwrap();
    std::fs::write(dir.join("good.csv"), GOOD).unwrap();
    std::fs::write(dir.join("latin1.csv"), b"kind,key\nservice,CAF\xc9\n").unwrap();
    let bad = forecourt(
        &["catalog", "import", dir.join("bad.csv").to_str().unwrap()],
        config,
    );
    let (_, err) = text(&bad);
    assert!(!bad.status.success());
    assert!(
        err.contains("row 3") && err.contains("row 4") && err.contains("nothing"),
        "row-numbered errors: {err}"
    );
    assert!(!err.contains("row 2"), "the good row is not blamed: {err}");
    let latin = forecourt(
        &[
            "catalog",
            "import",
            dir.join("latin1.csv").to_str().unwrap(),
        ],
        config,
    );
    assert!(
        !latin.status.success() && text(&latin).1.contains("UTF-8"),
        "{:?}",
        text(&latin)
    );
    let export = text(&forecourt(&["catalog", "export"], config)).0;
    assert!(!export.contains("TURBO2"), "a bad file changes nothing");
    let good = forecourt(
        &["catalog", "import", dir.join("good.csv").to_str().unwrap()],
        config,
    );
    assert!(good.status.success(), "{:?}", text(&good));
    let export = text(&forecourt(&["catalog", "export"], config)).0;
    assert!(export.contains("dtc,P0299,TURBO"), "{export}");
    let consent = forecourt(
        &[
            "consent",
            "set",
            "--vin",
            "WVWZZZ1JZXW000001",
            "--state",
            "granted",
        ],
        config,
    );
    assert!(text(&consent).0.contains("granted"), "{:?}", text(&consent));
    let wrong = forecourt(
        &["consent", "set", "--vin", "WVW", "--state", "granted"],
        config,
    );
    assert!(!wrong.status.success() && text(&wrong).1.contains("VIN"));
}

#[test]
fn commands_work_on_the_store_when_the_appliance_is_stopped() {
    // It starts the forecourt binary: not possible under qemu-user here.
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
    import_and_export(&config, dir.path());
}

#[test]
fn commands_reach_the_running_appliance_through_its_control_socket() {
    if skip_under_qemu_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    let socket = app.data_dir.join("control.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "owner-only control socket");
    import_and_export(&config, dir.path());
    let status = text(&forecourt(&["status"], &config)).0;
    assert!(status.contains("\"running\": true"), "{status}");
    app.stop();
    let status = text(&forecourt(&["status"], &config)).0;
    assert!(status.contains("\"running\": false"), "{status}");
}
