//! The lot page with its scan (R-LOT-1) and the settings page (labour rate,
//! catalog import and download) end to end: the real `forecourt run` with
//! an independent dongle on a real pty (tests/common), and a plain HTTP/1.1
//! client over loopback that posts forms and files as a browser does.

mod common;

use std::time::{Duration, Instant};

use common::http::{request, Browser, Reply};
use common::*;

const T: Duration = Duration::from_secs(10);
/// Deadline of anything polled.
const DEADLINE: Duration = Duration::from_secs(30);
const VIN: &str = "WF0XXXGCDX1234567";
const DEVICE: u64 = 0x00C0_FFEE_0000_0042;
/// REQUEST_STATUS (PROTOCOL.md section 3) and its broadcast device id.
const REQUEST_STATUS: u8 = 0x83;
const BROADCAST: u64 = u64::MAX;

impl Browser {
    /// A multipart body as a browser sends the upload form: the csrf field,
    /// then the file.
    fn upload_body(csrf: &str, file_name: &str, file: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"catalog\"; filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(file);
        b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        b
    }

    fn post_multipart(&self, path: &str, body: &[u8]) -> Reply {
        request(
            &self.addr,
            &format!(
                "POST {path} HTTP/1.1\r\n{}Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n",
                self.page_headers()
            ),
            body,
        )
    }

    fn upload(&self, file_name: &str, file: &[u8]) -> Reply {
        let csrf = self.get("/settings").csrf();
        self.post_multipart(
            "/settings/catalog",
            &Browser::upload_body(&csrf, file_name, file),
        )
    }
}

const BOUNDARY: &str = "----forecourtTestBoundary7MA4YWxkTrZu0gW";

// ---- The rig ----

struct Rig {
    _dir: tempfile::TempDir,
    line: Line,
    app: Appliance,
    admin: Browser,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let line = Line::open();
    let config = write_config(dir.path(), &line.slave_path);
    let app = Appliance::start(&config);
    let admin = Browser::first_admin(&app);
    Rig {
        _dir: dir,
        line,
        app,
        admin,
    }
}

impl Rig {
    /// Sends one message from the dongle and waits for its ACK (the
    /// appliance ACKs only what it has committed).
    fn send(&mut self, kind_body: (u8, Vec<u8>), seq: u16) -> Vec<Down> {
        let p = payload(kind_body.0, seq, DEVICE, now_ms(), &kind_body.1);
        self.line.write(&wire(&p));
        self.line.wait_ack(DEVICE, seq, T).unwrap()
    }

    /// A HELLO and a HEARTBEAT: what a dongle says when it boots and what
    /// it answers a REQUEST_STATUS with.
    fn hello_and_heartbeat(&mut self, first_seq: u16, mv: u16, lamps: u32) {
        self.send(hello(VIN, false), first_seq);
        self.send(heartbeat(false, 0, 48_210, mv, lamps), first_seq + 1);
    }

    fn scan_json(&self) -> serde_json::Value {
        let r = self.admin.get("/lot/scan");
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
    }
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // A real process answering a broadcast: its time is real, so poll.
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- The lot ----

// R-LOT-1: a unit that sent a heartbeat is on the lot, with its battery
// voltage (flagged under 12.0 V) and its lit lamp.
#[test]
fn the_lot_lists_a_unit_that_sent_a_heartbeat() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = rig();
    let empty = rig.admin.get("/lot");
    assert_eq!(empty.status, 200, "{empty:?}");
    assert!(
        empty.body.contains("No unit heard recently."),
        "{}",
        empty.body
    );

    rig.hello_and_heartbeat(1, 11_850, 1); // bit 0: lamp 1
    let page = rig.admin.get("/lot");
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(b.contains(&format!("href=\"/vehicles/{DEVICE}\"")), "{b}");
    assert!(b.contains(VIN), "{b}");
    assert!(b.contains("<span class=\"bad\">11.85 V</span>"), "{b}");
    assert!(b.contains("battery under 12.0 V"), "{b}");
    assert!(b.contains("engine (MIL)"), "lamp 1 lit: {b}");
    assert!(b.contains("powered"), "{b}");
    assert!(b.contains("—"), "no booking yet: {b}");
    assert!(
        b.contains("<span class=\"value\">1</span><span class=\"label\">on the lot</span>"),
        "{b}"
    );
    // No scan yet.
    assert_eq!(rig.scan_json()["scan"], serde_json::Value::Null);
    assert!(page.header("refresh").is_none());
    rig.app.stop();
}

// R-LOT-1: a scan broadcasts REQUEST_STATUS, which the dongle on the line
// receives; progress counts the unit once it answers.
#[test]
fn a_scan_asks_every_unit_and_counts_the_answers() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = rig();
    rig.hello_and_heartbeat(1, 12_600, 0);
    rig.line.drain(Duration::from_millis(200));

    let csrf = rig.admin.get("/lot").csrf();
    let started = rig.admin.post("/lot/scan", &[("csrf", &csrf)]);
    assert_eq!(started.status, 303, "{started:?}");
    assert_eq!(started.header("location"), Some("/lot"));

    let ask = poll("the REQUEST_STATUS on the line", || {
        rig.line
            .recv(Duration::from_millis(200))
            .filter(|d| d.kind == REQUEST_STATUS)
    });
    assert_eq!(ask.device, BROADCAST, "a lot scan addresses every unit");
    assert!(ask.body.is_empty(), "{ask:?}");

    // Heard before the scan started: not yet an answer.
    let before = rig.scan_json();
    let scan = &before["scan"];
    assert_eq!(scan["running"], true, "{before}");
    assert_eq!(scan["heard"], 0, "{before}");
    assert_eq!(scan["expected"], 0, "no bookings today: {before}");
    assert_eq!(scan["missing"], serde_json::json!([]), "{before}");
    assert_eq!(scan["links_sent"], 1, "{before}");
    assert_eq!(scan["by"], "admin", "{before}");

    let page = rig.admin.get("/lot");
    assert!(page.body.contains("scanning"), "{}", page.body);
    assert!(page.body.contains("No bookings today"), "{}", page.body);
    assert!(
        page.header("refresh").is_some(),
        "reloads while it runs: {page:?}"
    );

    // A second click while it runs starts nothing new.
    let again = rig.admin.post("/lot/scan", &[("csrf", &csrf)]);
    assert_eq!(again.status, 303, "{again:?}");
    assert_eq!(rig.scan_json()["scan"]["started_at"], scan["started_at"]);

    // The dongle answers as PROTOCOL.md says: a HELLO and a HEARTBEAT.
    rig.hello_and_heartbeat(3, 12_550, 0);
    let after = poll("the answer counted", || {
        let j = rig.scan_json();
        (j["scan"]["heard"] == 1).then_some(j)
    });
    assert_eq!(after["scan"]["missing"], serde_json::json!([]));
    let page = rig.admin.get("/lot");
    assert!(page.body.contains("answered scan"), "{}", page.body);
    assert!(
        page.body
            .contains("<span class=\"value\">1</span><span class=\"label\">units heard</span>"),
        "{}",
        page.body
    );

    // A scan needs the session's form token.
    let forged = rig.admin.post("/lot/scan", &[("csrf", &"00".repeat(32))]);
    assert_eq!(forged.status, 403, "{forged:?}");
    rig.app.stop();
}

// ---- Settings ----

fn rate_shown(page: &str) -> bool {
    page.contains("<strong>98.50 an hour</strong>")
}

#[test]
fn the_labour_rate_is_set_and_bad_rates_are_refused_with_the_reason() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = rig();
    let page = rig.admin.get("/settings");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("<strong>95.00 an hour</strong>"),
        "the default: {}",
        page.body
    );
    let csrf = page.csrf();

    let set = rig.admin.post(
        "/settings/labour-rate",
        &[("csrf", &csrf), ("rate", "98.5")],
    );
    assert_eq!(set.status, 303, "{set:?}");
    let page = rig.admin.get(set.header("location").unwrap());
    assert!(rate_shown(&page.body), "{}", page.body);
    assert!(page.body.contains("Labour rate saved."), "{}", page.body);

    for (typed, says) in [
        ("-5", "cannot be negative"),
        ("ninety", "is not an amount"),
        ("9500", "more than"),
        ("0", "less than"),
    ] {
        let r = rig
            .admin
            .post("/settings/labour-rate", &[("csrf", &csrf), ("rate", typed)]);
        assert_eq!(r.status, 422, "{typed}: {r:?}");
        assert!(r.body.contains(says), "{typed}: {}", r.body);
        assert!(
            r.body.contains(&format!("name=\"rate\" value=\"{typed}\"")),
            "the form keeps what was typed: {}",
            r.body
        );
        assert!(rate_shown(&r.body), "nothing changed: {}", r.body);
    }
    assert!(rate_shown(&rig.admin.get("/settings").body));
    rig.app.stop();
}

#[test]
fn a_catalog_file_is_imported_whole_or_not_at_all() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = rig();
    let csv = |r: &Reply| {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("content-type").unwrap().starts_with("text/csv"));
        r.body.clone()
    };
    let original = csv(&rig.admin.get("/settings/catalog.csv"));
    assert!(original.starts_with("kind,key,service,name,"), "{original}");
    assert!(!original.contains("LOT-TEST"));

    let good = "kind,key,service,name,labour_hours,parts_price\n\
                service,LOT-TEST,,Lot test job,1.25,10.00\n\
                lamp,7,LOT-TEST,,,\n";
    let r = rig.admin.upload("update.csv", good.as_bytes());
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/settings?saved=catalog"));
    let updated = csv(&rig.admin.get("/settings/catalog.csv"));
    assert!(
        updated.contains("service,LOT-TEST,,Lot test job,1.25,10.00"),
        "{updated}"
    );
    assert!(updated.contains("lamp,7,LOT-TEST"), "{updated}");

    // Every refusal says why on the page and changes nothing.
    let refused = |r: Reply, status: u16, says: &str| {
        assert_eq!(r.status, status, "{says}: {r:?}");
        assert!(r.body.contains(says), "{says}: {}", r.body);
        assert!(r.body.contains("class=\"problems\""), "{}", r.body);
        assert_eq!(
            csv(&rig.admin.get("/settings/catalog.csv")),
            updated,
            "{says}"
        );
    };
    let bad = "kind,key,service,name,labour_hours,parts_price\n\
               service,LOT-OTHER,,Another job,2.00,0.00\n\
               service,HYBRID,,Hybrid system check,\"2,5\",0.00\n\
               lamp,15,HYBRYD,,,\n";
    refused(
        rig.admin.upload("bad.csv", bad.as_bytes()),
        422,
        "row 3: column labour_hours",
    );
    let r = rig.admin.upload("bad.csv", bad.as_bytes());
    assert!(
        r.body.contains("row 4: column service"),
        "every bad row is listed: {}",
        r.body
    );
    assert!(!csv(&rig.admin.get("/settings/catalog.csv")).contains("LOT-OTHER"));

    let latin1 = b"kind,key,service,name\nservice,PREP,,Pr\xe9paration\n";
    refused(rig.admin.upload("latin1.csv", latin1), 422, "not UTF-8");
    refused(
        rig.admin.upload("empty.csv", b""),
        422,
        "empty.csv: The file is empty",
    );
    // The form sent with no file chosen: a browser sends an empty file name.
    refused(rig.admin.upload("", b""), 422, "Choose a catalog file");

    // A body cut off before the form's closing boundary.
    let csrf = rig.admin.get("/settings").csrf();
    let whole = Browser::upload_body(&csrf, "cut.csv", good.as_bytes());
    let cut = &whole[..whole.len() - 30];
    refused(
        rig.admin.post_multipart("/settings/catalog", cut),
        400,
        "ended early",
    );

    // A file over the 5 MB a catalog may have.
    let mut big = b"kind,key,service,name,labour_hours,parts_price\n".to_vec();
    while big.len() <= 5 * 1024 * 1024 {
        big.extend_from_slice(b"service,BIG,,A job that is far too often in this file,1.00,0.00\n");
    }
    refused(
        rig.admin.upload("big.csv", &big),
        413,
        "at most 5242880 bytes",
    );

    // Not sent with the page's form token: refused before anything is read.
    let forged = Browser::upload_body(&"00".repeat(32), "good.csv", good.as_bytes());
    let r = rig.admin.post_multipart("/settings/catalog", &forged);
    assert_eq!(r.status, 403, "{r:?}");
    rig.app.stop();
}

// R-VEH-5: settings are an admin's; a technician reads the lot and may
// start a scan.
#[test]
fn a_technician_is_denied_the_settings_but_sees_the_lot() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = rig();
    let tech = rig.admin.add_staff("tess", "technician");

    let lot = tech.get("/lot");
    assert_eq!(lot.status, 200, "{lot:?}");
    assert!(lot.body.contains("Scan the lot"), "{}", lot.body);
    let tech_csrf = lot.csrf();
    let scan = tech.post("/lot/scan", &[("csrf", &tech_csrf)]);
    assert_eq!(scan.status, 303, "a technician may start a scan: {scan:?}");
    assert_eq!(tech.get("/lot/scan").status, 200);

    for path in ["/settings", "/settings/catalog.csv"] {
        let r = tech.get(path);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(r.body.contains("technician role may not"), "{}", r.body);
    }
    let r = tech.post(
        "/settings/labour-rate",
        &[("csrf", &tech_csrf), ("rate", "10")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    let body = Browser::upload_body(
        &tech_csrf,
        "x.csv",
        b"kind,key,brand\nbrand,ZZZ,Zed Motors\n",
    );
    let r = tech.post_multipart("/settings/catalog", &body);
    assert_eq!(r.status, 403, "{r:?}");
    // Nothing changed.
    let page = rig.admin.get("/settings");
    assert!(
        page.body.contains("<strong>95.00 an hour</strong>"),
        "{}",
        page.body
    );
    assert!(!rig
        .admin
        .get("/settings/catalog.csv")
        .body
        .contains("brand,ZZZ,"));
    rig.app.stop();
}
