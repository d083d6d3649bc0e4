//! The JSON API under `/api/v1` end to end (SPEC.md, last section, "a
//! contract: tools and tests outside the project use it"; R-VEH-5 roles):
//! a lot of units fed through the real ingest into a real store, the real
//! appliance started in-process on that data directory with a fake clock,
//! tokens of each role, and a plain HTTP/1.1 client over loopback. Each
//! test names what it proves.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use forecourt::clock::{parse_rfc3339, FakeClock, SharedClock};
use forecourt::config::Settings;
use forecourt::domain::consent::ConsentState;
use forecourt::domain::lead::Subject;
use forecourt::ingest::{Action, Ingest, IngestOptions, Totals};
use forecourt::leads::LeadAction;
use forecourt::link::message::{
    Body, Dtc, DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello, Message, PowerLossReason,
    Vin,
};
use forecourt::link::{LinkEvent, Outbound, Replier};
use forecourt::store::leads::LeadFilter;
use forecourt::store::{EngineKind, Store};
use forecourt::web::auth::{self, Role};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// 2026-01-11T00:00:00Z: the appliance's clock while it serves.
const NOW: u64 = 1_768_089_600_000;
const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// Ten Fords with five leads each: lamps 1 and 2, P0301 and U0123-1C
/// (opened by one report, so at the same time), and a disconnection, which
/// the even ones see restored.
const FORDS: std::ops::RangeInclusive<u64> = 101..=110;
/// Needs consent (Volkswagen) and has none: no leads.
const VW_PENDING: u64 = 201;
/// Needs consent and has it: one lamp lead.
const VW_GRANTED: u64 = 202;
/// Never said HELLO: identity unknown.
const SILENT: u64 = 301;
/// Last heard two hours before NOW: not on the lot (30 minutes by default).
const AWAY: u64 = 401;
const UNITS: usize = 14;
/// 10 x 5, lamp 9 of unit 101 twice (closed by hand, then a new episode),
/// one for VW_GRANTED and one for AWAY.
const LEADS: usize = 54;

fn ford_vin(device: u64) -> String {
    // N in the 10th place: model year 2022 as of 2026.
    format!("WF0XXXGCDN{device:07}")
}

fn vw_vin(device: u64) -> String {
    // A in the 10th place: model year 2010 as of 2026.
    format!("WVWZZZ1KZA{device:07}")
}

// ---- The lot, fed through the real ingest ----

struct Feed {
    events: Vec<LinkEvent>,
    reply: Replier,
    _out: mpsc::Receiver<Outbound>,
    seq: u16,
}

impl Feed {
    fn new() -> Feed {
        let (tx, out) = mpsc::channel(10_000);
        Feed {
            events: Vec::new(),
            reply: Replier { tx, addr: 0 },
            _out: out,
            seq: 0,
        }
    }

    fn msg(&mut self, device: u64, time_ms: u64, received_ms: u64, body: Body) {
        self.seq += 1;
        let payload = Message {
            seq: self.seq,
            device_id: device,
            time_ms,
            body,
        }
        .encode();
        self.events.push(LinkEvent::Payload {
            link: 0,
            payload,
            received_ms,
            reply: self.reply.clone(),
        });
    }

    fn apply(&mut self, ingest: &mut Ingest) {
        // The ACKs are not needed: the batch is committed when this returns.
        let _ = ingest.apply_batch(std::mem::take(&mut self.events));
    }
}

fn hello(vin: &str) -> Body {
    Body::Hello(Hello {
        vin: Vin::parse(vin),
        firmware: Firmware(1, 4, 2),
        after_power_loss: false,
        flags: 0,
    })
}

fn lamp(id: u8, lit: bool) -> Body {
    Body::Lamp { lamp: id, lit }
}

struct Tokens {
    admin: String,
    advisor: String,
    technician: String,
}

/// The ids of unit 101's two lamp-9 leads: `closed` by hand, then `open`
/// for the next episode (same vehicle, type and subject).
struct ReopenPair {
    closed: u64,
    open: u64,
}

fn build_lot(data_dir: &Path) -> (Tokens, ReopenPair) {
    let store = Arc::new(Store::open(data_dir, EngineKind::Redb).unwrap());
    let clock = FakeClock::new(NOW - MIN);
    let totals = Arc::new(Totals::load(&store).unwrap());
    let shared: SharedClock = Arc::new(clock.clone());
    let options = IngestOptions {
        consent_brands: vec!["Volkswagen".into()],
        rules: true,
    };
    let mut ingest = Ingest::new(store.clone(), shared, totals, options).unwrap();
    ingest
        .apply_action(Action::SetConsent {
            vin: vw_vin(VW_GRANTED),
            state: ConsentState::Granted,
            by: "setup".into(),
        })
        .unwrap();
    let mut feed = Feed::new();
    let heard = NOW - MIN;
    for device in FORDS {
        let k = device - 100;
        let t = |j: u64| NOW - 3 * DAY + k * HOUR + j * SEC;
        feed.msg(device, t(0), heard, hello(&ford_vin(device)));
        let hb = Heartbeat {
            engine: Engine::Parked,
            run_s: 0,
            odometer_km: 40_000 + k as u32,
            battery_mv: 12_400,
            lamps: 0,
        };
        feed.msg(device, t(1), heard, Body::Heartbeat(hb));
        feed.msg(device, t(2), heard, lamp(1, true));
        feed.msg(device, t(3), heard, lamp(2, true));
        let entries = vec![
            DtcEntry {
                dtc: Dtc::parse("P0301").unwrap(),
                status: 0x09,
            },
            DtcEntry {
                dtc: Dtc::parse("U0123-1C").unwrap(),
                status: 0x28,
            },
        ];
        feed.msg(
            device,
            t(4),
            heard,
            Body::DtcReport(DtcReport {
                ecu: 0x7E0,
                entries,
            }),
        );
        feed.msg(
            device,
            t(5),
            heard,
            Body::PowerLost {
                reason: PowerLossReason::Unplugged,
            },
        );
        if k % 2 == 0 {
            feed.msg(device, t(6), heard, Body::PowerRestored { down_s: 30 });
        }
    }
    feed.msg(101, NOW - 2 * DAY, heard, lamp(9, true));
    feed.msg(VW_PENDING, NOW - DAY, heard, hello(&vw_vin(VW_PENDING)));
    feed.msg(VW_PENDING, NOW - DAY + SEC, heard, lamp(3, true));
    feed.msg(VW_GRANTED, NOW - DAY, heard, hello(&vw_vin(VW_GRANTED)));
    feed.msg(VW_GRANTED, NOW - DAY + SEC, heard, lamp(3, true));
    let hb = Heartbeat {
        engine: Engine::Parked,
        run_s: 0,
        odometer_km: 7,
        battery_mv: 12_000,
        lamps: 0,
    };
    feed.msg(SILENT, NOW - HOUR, heard, Body::Heartbeat(hb));
    feed.apply(&mut ingest);
    feed.msg(
        AWAY,
        NOW - 2 * HOUR - MIN,
        NOW - 2 * HOUR,
        hello(&ford_vin(AWAY)),
    );
    feed.msg(
        AWAY,
        NOW - 2 * HOUR - MIN + SEC,
        NOW - 2 * HOUR,
        lamp(4, true),
    );
    feed.apply(&mut ingest);

    let lamp9 = |store: &Store| -> Vec<u64> {
        let filter = LeadFilter {
            device_id: Some(101),
            ..Default::default()
        };
        let page = store.leads(&filter, None, 100).unwrap();
        page.leads
            .iter()
            .filter(|l| l.key.subject == Subject::Lamp(9))
            .map(|l| l.id)
            .collect()
    };
    let closed = lamp9(&store)[0];
    let close = LeadAction::Close {
        lead_id: closed,
        note: Some("bulb replaced".into()),
        customer: false,
    };
    ingest
        .apply_action(Action::Lead {
            action: close,
            by: "setup".into(),
        })
        .unwrap();
    feed.msg(101, NOW - DAY, heard, lamp(9, false));
    feed.msg(101, NOW - DAY + SEC, heard, lamp(9, true));
    feed.apply(&mut ingest);
    let both = lamp9(&store);
    assert_eq!(both.len(), 2, "a new episode opens a second lamp-9 lead");
    let open = both.into_iter().find(|id| *id != closed).unwrap();
    assert_eq!(
        store
            .leads(&LeadFilter::default(), None, 1000)
            .unwrap()
            .leads
            .len(),
        LEADS,
        "the lot's leads"
    );

    let tokens = Tokens {
        admin: auth::create_token(&store, "admin tool", Role::Admin, NOW).unwrap(),
        advisor: auth::create_token(&store, "Ines (advisor)", Role::Advisor, NOW).unwrap(),
        technician: auth::create_token(&store, "Tom (technician)", Role::Technician, NOW).unwrap(),
    };
    // The store is locked while open: let go of it before the appliance starts.
    drop(ingest);
    drop(store);
    (tokens, ReopenPair { closed, open })
}

// ---- The appliance and a plain HTTP client ----

/// A pty whose slave the appliance opens as its one serial link. Ingest
/// runs while a link can still send it events (with no link at all it
/// stops at once and lead actions answer 503), so the appliance under test
/// has a link, as one in a workshop does.
struct Pty {
    path: std::path::PathBuf,
    _master: std::os::fd::OwnedFd,
    _slave: std::os::fd::OwnedFd,
}

impl Pty {
    fn open() -> Pty {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut t = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&pty.slave);
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        Pty {
            path,
            _master: pty.master,
            _slave: pty.slave,
        }
    }
}

/// Settings with a data directory, an ephemeral port and one serial link.
fn settings(data_dir: &Path, pty: &Pty) -> Settings {
    Settings::parse(&format!(
        "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {:?}\n",
        data_dir.display().to_string(),
        pty.path.display().to_string()
    ))
    .unwrap()
}

struct Appliance {
    runtime: tokio::runtime::Runtime,
    running: Option<forecourt::app::Running>,
    addr: String,
    tokens: Tokens,
    pair: ReopenPair,
    _pty: Pty,
    _dir: tempfile::TempDir,
}

impl Appliance {
    /// The lot above, served by `forecourt::app::start` at NOW.
    fn start() -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let (tokens, pair) = build_lot(&data_dir);
        let pty = Pty::open();
        let (runtime, running) = serve(settings(&data_dir, &pty));
        let addr = running.http_addr.to_string();
        Appliance {
            runtime,
            running: Some(running),
            addr,
            tokens,
            pair,
            _pty: pty,
            _dir: dir,
        }
    }

    /// A request with `Authorization: Bearer token` and, with a body,
    /// `Content-Type: application/json`.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        http(&self.addr, method, path, &headers, body)
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    fn post(&self, path: &str, token: &str, body: &str) -> Reply {
        self.call("POST", path, Some(token), Some(body))
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

fn serve(settings: Settings) -> (tokio::runtime::Runtime, forecourt::app::Running) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clock: SharedClock = Arc::new(FakeClock::new(NOW));
    let running = runtime
        .block_on(forecourt::app::start(settings, clock))
        .unwrap();
    (runtime, running)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// SPEC.md: errors are JSON `{"error": "..."}` with the right status.
    fn assert_error(&self, status: u16) -> &Reply {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        let obj = v.as_object().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(obj.len(), 1, "only \"error\": {v}");
        assert!(obj["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        self
    }

    fn ok(&self) -> Value {
        assert!(matches!(self.status, 200 | 201), "{self:?}");
        self.json()
    }
}

/// One request with these headers and a Content-Length for `body`.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(addr, req.as_bytes())
}

/// Sends `request` as is and reads the answer until the server closes.
fn raw(addr: &str, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer (and stop reading) before all is written.
    let _ = s.write_all(request);
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const LEAD_KEYS: &[&str] = &[
    "id",
    "type",
    "status",
    "device_id",
    "vin",
    "lamp",
    "ecu",
    "code",
    "class",
    "dtc_status",
    "severity",
    "summary",
    "description",
    "opened_at",
    "closed_at",
    "close_reason",
    "assignee",
    "estimated_revenue",
    "notes",
    "history",
];
const EVENT_KEYS: &[&str] = &[
    "at",
    "by",
    "event",
    "text",
    "assignee",
    "reason",
    "class",
    "dtc_status",
    "message_id",
];
const VEHICLE_KEYS: &[&str] = &[
    "device_id",
    "vin",
    "brand",
    "model",
    "model_year",
    "customer_id",
    "odometer_km",
    "first_seen",
    "last_seen",
    "on_lot",
    "open_leads",
    "consent",
    "battery_v",
    "lamps",
    "firmware",
];

/// Every lead of the list, following `next` with `query` and `limit`.
fn all_pages(app: &Appliance, list: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/v1/{list}?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, &app.tokens.technician).ok();
        assert_eq!(
            keys(&page),
            set(&[list, "next"]),
            "SPEC.md: {{\"{list}\": [...], \"next\": ...}}"
        );
        let got = page[list].as_array().unwrap();
        assert!(got.len() <= limit, "{} items over limit {limit}", got.len());
        items.extend(got.iter().cloned());
        match &page["next"] {
            Value::Null => return items,
            Value::String(c) => {
                assert_eq!(got.len(), limit, "a page with a next page is full");
                cursor = Some(c.clone());
            }
            other => panic!("next is {other}"),
        }
    }
    panic!("the cursor never ended");
}

fn opened_key(lead: &Value) -> (u64, u64) {
    let at = parse_rfc3339(lead["opened_at"].as_str().unwrap()).expect("RFC 3339");
    (at, lead["id"].as_str().unwrap().parse().unwrap())
}

// ---- The tests ----

#[test]
fn spec_lists_hold_every_documented_key_on_every_item() {
    let app = Appliance::start();
    let t = &app.tokens.technician;

    let vehicles = app.get("/api/v1/vehicles", t).ok();
    assert_eq!(keys(&vehicles), set(&["vehicles", "next"]));
    assert_eq!(vehicles["next"], Value::Null);
    let vehicles = vehicles["vehicles"].as_array().unwrap().clone();
    assert_eq!(vehicles.len(), UNITS);
    for v in &vehicles {
        assert_eq!(keys(v), set(VEHICLE_KEYS), "{v}");
        assert!(
            v["device_id"]
                .as_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_digit()),
            "a string of digits: {v}"
        );
        assert!(parse_rfc3339(v["last_seen"].as_str().unwrap()).is_some());
    }
    let unit = |id: u64| {
        vehicles
            .iter()
            .find(|v| v["device_id"].as_str() == Some(id.to_string().as_str()))
            .unwrap()
            .clone()
    };
    let ford = unit(101);
    assert_eq!(ford["vin"], ford_vin(101));
    assert_eq!(ford["brand"], "Ford");
    assert_eq!(ford["model"], Value::Null, "no DMS import yet");
    assert_eq!(ford["model_year"], 2022, "R-VEH-1: N is 2022 as of 2026");
    assert_eq!(ford["odometer_km"], 40_001);
    assert_eq!(ford["battery_v"], 12.4);
    assert_eq!(ford["on_lot"], true);
    assert_eq!(ford["lamps"], json!([1, 2, 9]));
    assert_eq!(ford["firmware"], "1.4.2");
    assert_eq!(ford["consent"], "not_required");
    // Lamps 1, 2 and the second 9, two codes; its disconnection is open (odd unit).
    assert_eq!(ford["open_leads"], 6);
    assert_eq!(
        ford["last_seen"], "2026-01-10T00:00:01.000Z",
        "the latest effective time"
    );
    assert_eq!(unit(102)["open_leads"], 4, "102's power was restored");
    assert_eq!(
        unit(AWAY)["on_lot"],
        false,
        "R-VEH-1: heard 2 h ago, window 30 min"
    );
    let pending = unit(VW_PENDING);
    assert_eq!(
        (pending["brand"].as_str(), pending["consent"].as_str()),
        (Some("Volkswagen"), Some("pending"))
    );
    assert_eq!(
        (
            pending["model_year"].as_u64(),
            pending["open_leads"].as_u64()
        ),
        (Some(2010), Some(0))
    );
    assert_eq!(unit(VW_GRANTED)["consent"], "granted");
    let silent = unit(SILENT);
    assert_eq!(
        (&silent["vin"], &silent["brand"], &silent["model_year"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(
        silent["consent"], "pending",
        "not heard in a HELLO: held back (R-VEH-4)"
    );

    let leads = app.get("/api/v1/leads?limit=1000", t).ok();
    assert_eq!(keys(&leads), set(&["leads", "next"]));
    let leads = leads["leads"].as_array().unwrap().clone();
    assert_eq!(leads.len(), LEADS, "all statuses unless status is given");
    for l in &leads {
        assert_eq!(keys(l), set(LEAD_KEYS), "{l}");
        assert!(
            l["id"].is_string()
                && l["device_id"]
                    .as_str()
                    .unwrap()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
        );
        let ty = l["type"].as_str().unwrap();
        assert!([
            "warning_lamp",
            "user_lamp",
            "low_battery",
            "disconnected",
            "error_code"
        ]
        .contains(&ty));
        assert!(["open", "closed"].contains(&l["status"].as_str().unwrap()));
        assert_eq!(l["lamp"].is_number(), ty.ends_with("_lamp"), "{l}");
        for k in [
            "ecu",
            "code",
            "class",
            "dtc_status",
            "severity",
            "description",
        ] {
            assert_eq!(l[k].is_null(), ty != "error_code", "{k} in {l}");
        }
        assert_eq!(l["closed_at"].is_null(), l["status"] == "open", "{l}");
        assert_eq!(l["close_reason"].is_null(), l["status"] == "open", "{l}");
        assert!(l["estimated_revenue"].is_number() || l["estimated_revenue"].is_null());
        assert!(l["notes"].is_array());
        for e in l["history"].as_array().unwrap() {
            assert_eq!(keys(e), set(EVENT_KEYS), "{e}");
        }
        assert_eq!(l["history"][0]["event"], "opened");
    }
    let find = |device: u64, pred: &dyn Fn(&Value) -> bool| {
        leads
            .iter()
            .find(|l| l["device_id"].as_str() == Some(device.to_string().as_str()) && pred(l))
            .unwrap()
            .clone()
    };
    let p0301 = find(101, &|l| l["code"] == "P0301");
    assert_eq!(
        (p0301["ecu"].as_u64(), p0301["class"].as_str()),
        (Some(0x7E0), Some("permanent"))
    );
    assert_eq!(p0301["dtc_status"], 0x09);
    assert!((1..=3).contains(&p0301["severity"].as_u64().unwrap()));
    assert_eq!(p0301["vin"], ford_vin(101));
    let u0123 = find(101, &|l| l["code"] == "U0123-1C");
    assert_eq!(u0123["class"], "sporadic");
    assert_eq!(
        u0123["opened_at"], p0301["opened_at"],
        "one report opened both"
    );
    let restored = find(102, &|l| l["type"] == "disconnected");
    assert_eq!(
        (
            restored["status"].as_str(),
            restored["close_reason"].as_str()
        ),
        (Some("closed"), Some("power_restored"))
    );
    let manual = leads
        .iter()
        .find(|l| l["id"].as_str() == Some(app.pair.closed.to_string().as_str()))
        .unwrap();
    assert_eq!(manual["close_reason"], "manual");
    let closed = manual["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "closed")
        .unwrap();
    assert_eq!(
        (closed["by"].as_str(), closed["text"].as_str()),
        (Some("setup"), Some("bulb replaced"))
    );
    let lamp1 = find(101, &|l| l["lamp"] == 1);
    assert_eq!(lamp1["type"], "warning_lamp");
    assert!(
        lamp1["summary"].as_str().unwrap().contains("engine"),
        "{lamp1}"
    );

    let one = app.get(&format!("/api/v1/leads/{}", app.pair.open), t).ok();
    assert_eq!(keys(&one), set(&["lead"]));
    assert_eq!(keys(&one["lead"]), set(LEAD_KEYS));
    assert_eq!(one["lead"]["status"], "open");

    let bookings = app.get("/api/v1/bookings?list=all", t).ok();
    assert_eq!(
        bookings,
        json!({"bookings": [], "next": null}),
        "no bookings exist yet"
    );
    for list in ["actions", "pending", "planned", "escalated", "all", ""] {
        app.get(&format!("/api/v1/bookings?list={list}"), t).ok();
    }
}

#[test]
fn r_dash_1_dashboard_has_a_key_per_section_and_agrees_with_the_lists() {
    let app = Appliance::start();
    let d = app.get("/api/v1/dashboard", &app.tokens.technician).ok();
    assert_eq!(
        keys(&d),
        set(&[
            "computed_at",
            "leads",
            "conversations",
            "reminders",
            "conversions",
            "vehicles",
            "invitations",
            "closed_reminder_reasons"
        ])
    );
    assert_eq!(
        d["computed_at"], "2026-01-11T00:00:00.000Z",
        "R-DASH-2: when the figures were computed"
    );
    let all = app
        .get(
            "/api/v1/leads?limit=1000&status=open",
            &app.tokens.technician,
        )
        .ok();
    let open = all["leads"].as_array().unwrap();
    for ty in [
        "warning_lamp",
        "user_lamp",
        "low_battery",
        "disconnected",
        "error_code",
    ] {
        let n = open.iter().filter(|l| l["type"] == ty).count();
        assert_eq!(d["leads"]["open"][ty], n, "open {ty}");
    }
    assert_eq!(d["leads"]["open_total"], open.len());
    assert_eq!(d["leads"]["opened_30d"]["error_code"], 20);
    assert_eq!(d["leads"]["closed_30d"]["disconnected"], 5);
    assert_eq!(d["leads"]["closed_30d"]["warning_lamp"], 1);
    let by_severity = &d["leads"]["open_error_codes_by_severity"];
    assert_eq!(keys(by_severity), set(&["1", "2", "3"]));
    let sum: u64 = ["1", "2", "3"]
        .iter()
        .map(|s| by_severity[s].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 20);
    assert_eq!(
        (
            d["leads"]["open_quotes"].as_u64(),
            d["leads"]["quotes_expiring_30d"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(
        d["conversations"],
        json!({"open": 0, "unassigned": 0, "closed_30d": 0})
    );
    assert_eq!(
        d["reminders"],
        json!({"open": 0, "overdue": 0, "unassigned": 0})
    );
    assert_eq!(
        d["conversions"],
        json!({"reminders_30d": 0, "converted_30d": 0, "rate_30d": null, "by_model_year": []})
    );
    // No customers were imported: each vehicle a dongle named by VIN is
    // registered, connected, and without customer.
    let v = &d["vehicles"];
    assert_eq!(v["total"], UNITS);
    assert_eq!(v["without_customer"], v["registered"]);
    assert!(v["registered"].as_u64().unwrap() <= UNITS as u64);
    assert_eq!(
        (
            &v["not_connected"],
            &v["awaiting_assignment"],
            &v["assigned"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(
        d["invitations"],
        json!({"created": 0, "sent": 0, "accepted": 0, "declined": 0, "expired": 0})
    );
    let reasons = d["closed_reminder_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 7, "R-REM-2's seven reasons");
    assert!(reasons
        .iter()
        .all(|r| keys(r) == set(&["reason", "count", "percent"]) && r["count"] == 0));
}

#[test]
fn spec_cursors_page_through_every_lead_once_newest_first() {
    let app = Appliance::start();
    let everything = app
        .get("/api/v1/leads?limit=1000", &app.tokens.technician)
        .ok()["leads"]
        .as_array()
        .unwrap()
        .clone();
    for limit in [1, 7, 53, 54, 100] {
        let paged = all_pages(&app, "leads", "", limit);
        assert_eq!(
            paged, everything,
            "limit {limit}: the same leads in the same order"
        );
    }
    let ids: HashSet<&str> = everything
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), LEADS, "each lead exactly once");
    let order: Vec<(u64, u64)> = everything.iter().map(opened_key).collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "newest first by opened_at, then id: {order:?}"
    );
    assert!(
        order.windows(2).any(|w| w[0].0 == w[1].0),
        "the lot has ties on opened_at, broken by id"
    );

    // Filters page the same way and keep only what they name.
    for (query, expect) in [
        ("&type=error_code", 20),
        ("&status=closed", 6),
        ("&status=open&type=warning_lamp", 23),
        ("&device_id=101", 7),
        ("&type=&status=&device_id=", LEADS),
    ] {
        let unpaged = app
            .get(
                &format!("/api/v1/leads?limit=1000{query}"),
                &app.tokens.technician,
            )
            .ok()["leads"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(unpaged.len(), expect, "{query}");
        assert_eq!(all_pages(&app, "leads", query, 3), unpaged, "{query}");
    }

    // Vehicles: every unit once, by device id.
    let vehicles = all_pages(&app, "vehicles", "", 4);
    let ids: Vec<u64> = vehicles
        .iter()
        .map(|v| v["device_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), UNITS);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Default limit 100 holds the whole lot on one page.
    assert_eq!(
        app.get("/api/v1/leads", &app.tokens.technician).ok()["leads"]
            .as_array()
            .unwrap()
            .len(),
        LEADS
    );
}

#[test]
fn spec_bad_query_parameters_are_400_json() {
    let app = Appliance::start();
    let t = &app.tokens.admin;
    let vehicles_cursor = app.get("/api/v1/vehicles?limit=1", t).ok()["next"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/api/v1/leads?limit=0",
        "/api/v1/leads?limit=1001",
        "/api/v1/leads?limit=ten",
        "/api/v1/leads?limit=-5",
        "/api/v1/leads?cursor=not-a-cursor",
        &format!("/api/v1/leads?cursor={vehicles_cursor}"),
        "/api/v1/leads?type=warning",
        "/api/v1/leads?status=pending",
        "/api/v1/leads?device_id=abc",
        "/api/v1/leads?device_id=-1",
        "/api/v1/leads?device_id=99999999999999999999",
        "/api/v1/leads?type=%FF",
        "/api/v1/leads?limit=5&limit=6",
        "/api/v1/leads?sort=severity",
        "/api/v1/vehicles?limit=0",
        "/api/v1/vehicles?cursor=l00",
        "/api/v1/bookings?list=tomorrow",
        "/api/v1/bookings?limit=1001",
        "/api/v1/dashboard?x=1",
    ] {
        app.get(path, t).assert_error(400);
    }
    // The bounds themselves are fine.
    app.get("/api/v1/leads?limit=1", t).ok();
    app.get("/api/v1/leads?limit=1000", t).ok();
    app.get(&format!("/api/v1/vehicles?cursor={vehicles_cursor}"), t)
        .ok();
}

/// Every route under /api/v1 with its method and a body it would accept.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/vehicles", ""),
    ("GET", "/api/v1/leads", ""),
    ("GET", "/api/v1/leads?type=&status=&device_id=", ""),
    ("GET", "/api/v1/leads/1", ""),
    ("GET", "/api/v1/dashboard", ""),
    ("GET", "/api/v1/bookings?list=all", ""),
    ("POST", "/api/v1/leads/1/assign", r#"{"user": "Ines"}"#),
    ("POST", "/api/v1/leads/1/close", r#"{"reason": "fixed"}"#),
    ("POST", "/api/v1/leads/1/reopen", ""),
    ("POST", "/api/v1/leads/1/note", r#"{"text": "seen"}"#),
    ("POST", "/api/v1/leads/1/message", "{}"),
    // Not routes, refused before anything is told about them.
    ("GET", "/api/v1/no-such-thing", ""),
    ("GET", "/api/v1", ""),
    ("GET", "/api/v1/", ""),
    ("DELETE", "/api/v1/leads", ""),
];

#[test]
fn spec_every_api_route_refuses_a_request_without_a_valid_token() {
    let app = Appliance::start();
    let mut forged = app.tokens.admin.clone();
    forged.pop();
    forged.push(if app.tokens.admin.ends_with('0') {
        '1'
    } else {
        '0'
    });
    for (method, path, body) in ROUTES {
        let r = app.call(method, path, None, Some(body));
        r.assert_error(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="forecourt""#),
            "RFC 6750: {method} {path}"
        );
        for bad in ["nonsense", forged.as_str(), ""] {
            app.call(method, path, Some(bad), Some(body))
                .assert_error(401);
        }
        let basic = format!("Basic {}", app.tokens.admin);
        http(&app.addr, method, path, &[("Authorization", &basic)], "").assert_error(401);
    }
    // /healthz stays open (SPEC.md: "no auth"), and the pages keep their HTML.
    let health = app.call("GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["vehicles"], UNITS);
    // The pages are behind a staff session (docs/security.md): no bearer
    // token opens them, and a GET without a session goes to the login.
    let page = app.call("GET", "/", None, None);
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    let missing = app.call("GET", "/api/v2/leads", None, None);
    assert_eq!(missing.status, 404);
    assert!(missing
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
}

#[test]
fn r_veh_5_roles_decide_what_a_token_may_do() {
    let app = Appliance::start();
    let open: Vec<String> = app
        .get(
            "/api/v1/leads?status=open&type=error_code",
            &app.tokens.admin,
        )
        .ok()["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let mut open = open.into_iter();
    let mut next = || open.next().unwrap();

    // Every role reads everything.
    for token in [
        &app.tokens.admin,
        &app.tokens.advisor,
        &app.tokens.technician,
    ] {
        for path in [
            "/api/v1/vehicles",
            "/api/v1/leads",
            "/api/v1/dashboard",
            "/api/v1/bookings",
        ] {
            app.get(path, token).ok();
        }
        app.get(&format!("/api/v1/leads/{}", app.pair.open), token)
            .ok();
    }

    // technician: read, and close/annotate leads.
    let t = &app.tokens.technician;
    let lead = next();
    let noted = app
        .post(
            &format!("/api/v1/leads/{lead}/note"),
            t,
            r#"{"text": "misfire on cylinder 1 confirmed"}"#,
        )
        .ok();
    let note = &noted["lead"]["notes"][0];
    assert_eq!(
        (note["by"].as_str(), note["text"].as_str()),
        (
            Some("Tom (technician)"),
            Some("misfire on cylinder 1 confirmed")
        )
    );
    let closed = app
        .post(
            &format!("/api/v1/leads/{lead}/close"),
            t,
            r#"{"reason": "coil replaced"}"#,
        )
        .ok();
    assert_eq!(closed["lead"]["close_reason"], "manual");
    app.post(&format!("/api/v1/leads/{lead}/reopen"), t, "")
        .assert_error(403);
    let other = next();
    app.post(
        &format!("/api/v1/leads/{other}/assign"),
        t,
        r#"{"user": "Tom"}"#,
    )
    .assert_error(403);
    app.post(&format!("/api/v1/leads/{other}/message"), t, "{}")
        .assert_error(403);
    // The role is checked before the lead or the body is looked at.
    app.post("/api/v1/leads/999999/assign", t, r#"{"user": "Tom"}"#)
        .assert_error(403);
    app.post(&format!("/api/v1/leads/{other}/assign"), t, "not json")
        .assert_error(403);

    // advisor and admin: every lead action.
    for (token, name) in [
        (&app.tokens.advisor, "Ines (advisor)"),
        (&app.tokens.admin, "admin tool"),
    ] {
        let lead = next();
        let base = format!("/api/v1/leads/{lead}");
        let assigned = app
            .post(&format!("{base}/assign"), token, r#"{"user": "Tom"}"#)
            .ok();
        assert_eq!(assigned["lead"]["assignee"], "Tom");
        let last = assigned["lead"]["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (
                last["event"].as_str(),
                last["by"].as_str(),
                last["assignee"].as_str()
            ),
            (Some("assigned"), Some(name), Some("Tom"))
        );
        app.post(
            &format!("{base}/note"),
            token,
            r#"{"text": "customer called"}"#,
        )
        .ok();
        let sent = app.post(&format!("{base}/message"), token, "{}");
        assert_eq!(sent.status, 201, "{sent:?}");
        let sent = sent.json();
        assert_eq!(sent["message"]["delivery"], "queued");
        assert!(
            sent["message"]["text"]
                .as_str()
                .unwrap()
                .contains("fault code"),
            "the type's template: {sent}"
        );
        assert_eq!(
            sent["lead"]["history"].as_array().unwrap().last().unwrap()["event"],
            "messaged"
        );
        app.post(&format!("{base}/close"), token, "{}").ok();
        let reopened = app.post(&format!("{base}/reopen"), token, "").ok();
        assert_eq!(
            (
                reopened["lead"]["status"].as_str(),
                &reopened["lead"]["close_reason"]
            ),
            (Some("open"), &Value::Null)
        );
        let unassigned = app
            .post(&format!("{base}/assign"), token, r#"{"user": null}"#)
            .ok();
        assert_eq!(unassigned["lead"]["assignee"], Value::Null);
    }
}

#[test]
fn spec_lead_actions_answer_404_and_409_as_json() {
    let app = Appliance::start();
    let a = &app.tokens.advisor;
    let (closed, open) = (app.pair.closed, app.pair.open);

    // SPEC.md: reopen is refused (409) while another lead holds the key.
    let refused = app.post(&format!("/api/v1/leads/{closed}/reopen"), a, "");
    refused.assert_error(409);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains(&open.to_string()),
        "names the open lead: {refused:?}"
    );
    app.post(&format!("/api/v1/leads/{open}/reopen"), a, "")
        .assert_error(409);
    app.post(
        &format!("/api/v1/leads/{closed}/close"),
        a,
        r#"{"reason": "again"}"#,
    )
    .assert_error(409);
    app.post(
        &format!("/api/v1/leads/{open}/close"),
        a,
        r#"{"reason": "duplicate of the earlier lead"}"#,
    )
    .ok();
    let back = app
        .post(&format!("/api/v1/leads/{closed}/reopen"), a, "")
        .ok();
    assert_eq!(back["lead"]["status"], "open");
    assert_eq!(
        back["lead"]["history"].as_array().unwrap().last().unwrap()["event"],
        "reopened"
    );
    app.post(&format!("/api/v1/leads/{open}/reopen"), a, "")
        .assert_error(409);

    for id in ["999999", "0", "x", "18446744073709551616", "-1", "%FF"] {
        app.get(&format!("/api/v1/leads/{id}"), a).assert_error(404);
        for (action, body) in [
            ("assign", r#"{"user": "a"}"#),
            ("close", "{}"),
            ("reopen", ""),
            ("note", r#"{"text": "a"}"#),
            ("message", ""),
        ] {
            app.post(&format!("/api/v1/leads/{id}/{action}"), a, body)
                .assert_error(404);
        }
    }
    app.get("/api/v1/leads/1/history", a).assert_error(404);
    app.get("/api/v1/nothing/here", a).assert_error(404);
    app.get("/api/v1/", a).assert_error(404);
    app.get("/api/v1", a).assert_error(404);
}

#[test]
fn spec_bodies_405_413_415_422_are_json() {
    let app = Appliance::start();
    let a = &app.tokens.admin;
    let lead = app.pair.open;
    let path = format!("/api/v1/leads/{lead}/note");

    // 422: malformed or invalid bodies.
    for body in [
        "{",
        "not json",
        "[]",
        "null",
        r#"{"text": 5}"#,
        r#"{"text": "a", "extra": 1}"#,
        r#"{"txt": "a"}"#,
        r#"{"text": "   "}"#,
        "\u{FEFF}{}",
    ] {
        app.post(&path, a, body).assert_error(422);
    }
    app.post(
        &format!("/api/v1/leads/{lead}/note"),
        a,
        &json!({"text": "x".repeat(4001)}).to_string(),
    )
    .assert_error(422);
    app.post(&format!("/api/v1/leads/{lead}/assign"), a, "{}")
        .assert_error(422);
    app.post(&format!("/api/v1/leads/{lead}/assign"), a, r#"{"user": 7}"#)
        .assert_error(422);
    app.post(
        &format!("/api/v1/leads/{lead}/close"),
        a,
        r#"{"reason": ["a"]}"#,
    )
    .assert_error(422);
    app.post(
        &format!("/api/v1/leads/{lead}/reopen"),
        a,
        r#"{"force": true}"#,
    )
    .assert_error(422);

    // 415: a body that does not say it is JSON.
    let bearer = format!("Bearer {a}");
    let body = r#"{"text": "a"}"#;
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        http(
            &app.addr,
            "POST",
            &path,
            &[("Authorization", &bearer), ("Content-Type", content_type)],
            body,
        )
        .assert_error(415);
    }
    http(
        &app.addr,
        "POST",
        &path,
        &[("Authorization", &bearer)],
        body,
    )
    .assert_error(415);
    let charset = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json; charset=utf-8"),
    ];
    http(&app.addr, "POST", &path, &charset, body).ok();

    // 413: over the 64 KiB limit, announced or chunked.
    let announced = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    raw(&app.addr, announced.as_bytes()).assert_error(413);
    let chunk = 64 * 1024 + 1;
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk:x}\r\n"
    )
    .into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', chunk));
    raw(&app.addr, &chunked).assert_error(413);
    // Just under the limit is read (and judged on its content).
    let padded = format!("{{\"text\": \"{}\"}}", "y".repeat(3000)) + &" ".repeat(60 * 1024);
    app.post(&path, a, &padded).ok();

    // 405: a route that exists, with a method it does not take.
    for (method, path) in [
        ("DELETE", "/api/v1/leads"),
        ("POST", "/api/v1/vehicles"),
        ("GET", "/api/v1/leads/1/assign"),
        ("PUT", "/api/v1/dashboard"),
    ] {
        let r = app.call(method, path, Some(a), Some(""));
        r.assert_error(405);
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("RFC 9110: 405 says what is allowed: {r:?}"));
        assert!(allow.contains("GET") || allow.contains("POST"), "{allow}");
    }
}

#[test]
fn spec_token_create_prints_only_the_token_running_or_not() {
    // It runs the forecourt binary, which qemu-user cannot start from a
    // test here (no binfmt_misc; docs/ci.md).
    if std::env::var_os("FORECOURT_QEMU_USER").is_some() {
        eprintln!("skipped under qemu-user: it starts the forecourt binary (docs/ci.md)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("forecourt.toml");
    let pty = Pty::open();
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {:?}\n",
            data_dir.display().to_string(),
            pty.path.display().to_string()
        ),
    )
    .unwrap();
    let create = |name: &str, role: &str| {
        Command::new(env!("CARGO_BIN_EXE_forecourt"))
            .args(["token", "create", "--config"])
            .arg(&config)
            .args(["--name", name, "--role", role])
            .env("FORECOURT_LOG", "debug")
            .output()
            .unwrap()
    };
    let is_token = |out: &std::process::Output| -> String {
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        let token = stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("one line: {stdout:?}"));
        assert!(
            !token.contains('\n'),
            "the token and nothing else: {stdout:?}"
        );
        assert_eq!(token.len(), auth::TOKEN_LEN, "{token:?}");
        assert!(token.starts_with(auth::TOKEN_PREFIX));
        assert!(
            token[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{token:?}"
        );
        token.to_owned()
    };

    // Not running: straight into the store (the data directory is created).
    let offline = is_token(&create("ci (offline)", "technician"));
    let refused = create("x", "superuser");
    assert!(
        !refused.status.success() && refused.stdout.is_empty(),
        "{refused:?}"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin, advisor or technician"));

    // Running: through the control socket, usable at once.
    let settings = Settings::load(&config).unwrap();
    let (runtime, running) = serve(settings);
    let addr = running.http_addr.to_string();
    let online = is_token(&create("ci (online)", "Admin"));
    assert_ne!(online, offline);
    let call = |token: &str, method: &str, path: &str, body: &str| {
        let bearer = format!("Bearer {token}");
        http(
            &addr,
            method,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    assert_eq!(
        call(&offline, "GET", "/api/v1/leads", "").ok(),
        json!({"leads": [], "next": null})
    );
    assert_eq!(
        call(&online, "GET", "/api/v1/vehicles", "").ok(),
        json!({"vehicles": [], "next": null})
    );
    // Roles came through as given: a technician may not assign, an admin may.
    call(
        &offline,
        "POST",
        "/api/v1/leads/1/assign",
        r#"{"user": "a"}"#,
    )
    .assert_error(403);
    call(
        &online,
        "POST",
        "/api/v1/leads/1/assign",
        r#"{"user": "a"}"#,
    )
    .assert_error(404);
    let bad_name = create("", "admin");
    assert!(
        !bad_name.status.success() && bad_name.stdout.is_empty(),
        "{bad_name:?}"
    );
    runtime.block_on(running.stop());

    // Only hashes are on disk: neither token's secret is in the data directory.
    let store = Store::open(&data_dir, EngineKind::Redb).unwrap();
    assert_eq!(store.tokens(10).unwrap().len(), 2);
    drop(store);
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        for token in [&offline, &online] {
            let secret = &token.as_bytes()[auth::TOKEN_PREFIX.len() + 16..];
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a token's secret is stored"
            );
        }
    }
}
