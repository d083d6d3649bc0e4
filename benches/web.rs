//! Web benchmark (issue 4, item 5): is the dashboard fast by design?
//!
//! Builds a data directory of 50,000 vehicles and 500,000 leads through the
//! crate's own store API (`leads::open_lead` and `leads::close_lead` inside
//! `Store::write` transactions, many leads per transaction), so that the
//! lead indexes and the maintained dashboard counters are exactly what the
//! appliance keeps. Then starts the real appliance in-process on loopback
//! and drives each route with `wrk` (a separate process) for a fixed time:
//! requests/s, p50 and p99 of the dashboards and the lead lists, next to a
//! trivial route (`/healthz`) of the same server in the same run. Goals,
//! printed and never asserted: dashboard throughput at least 0.3 of the
//! trivial route's, dashboard p99 under 20 ms.
//!
//! Run: `cargo bench --bench web` (needs `wrk`: `apt-get install wrk`).
//! Options after `--`: `--vehicles N --leads N --seconds S --warmup S
//! --threads T --connections C`. Without `--bench` (as `cargo test
//! --all-targets` runs it) a smoke run: 500 vehicles, 5,000 leads, 1 s per
//! route, and only a plain request per route when wrk is absent. Exits
//! non-zero when a route does not answer 200 or the dashboard's counters
//! disagree with the data written; never because of a timing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use forecourt::clock::{rfc3339, SharedClock, SystemClock};
use forecourt::config::Settings;
use forecourt::domain::catalog::Catalog;
use forecourt::domain::consent::{ConsentRecord, ConsentState};
use forecourt::domain::lead::{
    classify, CloseReason, Disconnection, DtcClass, LeadKey, LeadType, OpenLead, RuleState, Subject,
};
use forecourt::domain::vehicle::{Power, StoredDtc, Vehicle};
use forecourt::ingest::DEFAULT_LABOUR_RATE_CENTS;
use forecourt::leads::{self, LeadContext};
use forecourt::link::message::{Dtc, Engine, PowerLossReason};
use forecourt::sim::identity::draw_identities;
use forecourt::store::users::UserRecord;
use forecourt::store::{counters, EngineKind, Store, StoreError};
use forecourt::web::auth::{create_token, Role};
use forecourt::web::session::{hash_password, start_session, COOKIE};

const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;
/// Share of leads left open: about what a workshop's list holds.
const OPEN_SHARE: f64 = 0.10;
/// Only leads opened this recently are still open; older ones were dealt with.
const OPEN_WINDOW_MS: u64 = 60 * DAY_MS;
/// Leads per write transaction: many per commit, as ingest batches them.
const LEADS_PER_TX: usize = 2_000;
const VEHICLES_PER_TX: usize = 5_000;
/// Goals of issue 4: dashboard requests/s against the trivial route's, and
/// dashboard p99.
const GOAL_RATIO: f64 = 0.3;
const GOAL_P99_MS: f64 = 20.0;
/// /proc/PID/stat counts CPU time in USER_HZ ticks, 100 a second on Linux.
const USER_HZ: f64 = 100.0;

/// Error codes drawn for error-code leads, with the ECU that reports them:
/// most from the built-in catalog, so descriptions and estimates are real.
const CODES: &[(&str, u16)] = &[
    ("P0300", 0x7E0),
    ("P0301", 0x7E0),
    ("P0302", 0x7E0),
    ("P0171", 0x7E0),
    ("P0101", 0x7E0),
    ("P0128", 0x7E0),
    ("P0217", 0x7E0),
    ("P0299", 0x7E0),
    ("P0335", 0x7E0),
    ("P0380", 0x7E0),
    ("P0401", 0x7E0),
    ("P0420", 0x7E0),
    ("P0442", 0x7E0),
    ("P0524", 0x7E0),
    ("P0562", 0x7E0),
    ("P2002", 0x7E0),
    ("P203F", 0x7E0),
    ("P2463", 0x7E0),
    ("P0700", 0x7E1),
    ("C0035", 0x760),
    ("C0040", 0x760),
    ("C0045", 0x760),
    ("B0001", 0x737),
    ("U0100", 0x7E1),
    ("U0121", 0x726),
    ("U0140", 0x726),
    ("U0155", 0x726),
];

/// ISO 14229-1 status bytes seen in the field: permanent, sporadic and
/// potential codes.
const STATUSES: &[u8] = &[0x09, 0x0B, 0x2F, 0x89, 0x08, 0x28, 0x04, 0x24, 0x01];

/// What to run, from the command line.
struct Options {
    smoke: bool,
    vehicles: usize,
    leads: usize,
    seconds: u64,
    warmup: u64,
    threads: usize,
    connections: usize,
}

impl Options {
    fn from_args() -> Options {
        // `cargo test --all-targets` runs benches without `--bench`: a small
        // smoke run then, so CI proves the benchmark works without timing it.
        let smoke = !std::env::args().any(|a| a == "--bench");
        Options {
            smoke,
            vehicles: arg("--vehicles", if smoke { 500 } else { 50_000 }),
            leads: arg("--leads", if smoke { 5_000 } else { 500_000 }),
            seconds: arg("--seconds", if smoke { 1 } else { 10 }) as u64,
            warmup: arg("--warmup", if smoke { 0 } else { 2 }) as u64,
            threads: arg("--threads", 2),
            connections: arg("--connections", 16),
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- The data set ----

/// One lead as ingest would have written it: opened by a rule, and closed
/// later (or still open).
struct PlannedLead {
    vehicle: usize,
    key: LeadKey,
    opened_at: u64,
    class: Option<(DtcClass, u8)>,
    closed: Option<(u64, CloseReason)>,
}

/// An open lead once written, to put into its vehicle's state.
struct OpenedLead {
    vehicle: usize,
    key: LeadKey,
    id: u64,
    opened_at: u64,
    status: Option<u8>,
}

/// What the load phase did.
struct LoadFigures {
    vehicles: usize,
    leads: usize,
    open: usize,
    elapsed: Duration,
    disk_bytes: u64,
}

fn this_year(now_ms: u64) -> u16 {
    rfc3339(now_ms)[..4].parse().unwrap_or(2026)
}

/// Vehicles seen over the last year: most heard in the past week, some
/// on the lot right now, the rest weeks ago.
fn draw_vehicles(rng: &mut StdRng, n: usize, now: u64) -> Vec<Vehicle> {
    let identities = draw_identities(rng, n, this_year(now), |i| i % 12 == 11);
    identities
        .into_iter()
        .map(|id| {
            let first_seen = now - rng.random_range(30 * DAY_MS..365 * DAY_MS);
            let ago = match rng.random_range(0..100) {
                0..5 => rng.random_range(0..20 * MINUTE_MS),
                5..75 => rng.random_range(0..7 * DAY_MS),
                _ => rng.random_range(7 * DAY_MS..30 * DAY_MS),
            };
            let last_seen = (now - ago).max(first_seen + DAY_MS);
            let mut v = Vehicle::new(id.device_id, first_seen, first_seen);
            v.vin = id.vin;
            v.firmware = Some(id.firmware);
            v.hello_seen = true;
            v.last_seen_ms = last_seen;
            v.last_heard_ms = last_seen;
            v.odometer_km = Some(rng.random_range(1_000..250_000));
            v.battery_mv = Some(rng.random_range(12_200..12_800));
            v.engine = Some(Engine::Parked);
            v.messages = rng.random_range(200..20_000);
            v
        })
        .collect()
}

/// A lead's key as the rules would make it: the type mix of a workshop
/// (error codes most, then warning lamps), with the ECU class of a code.
fn draw_key(rng: &mut StdRng) -> (LeadKey, Option<(DtcClass, u8)>) {
    let lamp = |rng: &mut StdRng| {
        // The MIL lights far more often than any other lamp.
        if rng.random_bool(0.3) {
            1
        } else {
            rng.random_range(1..=15u8)
        }
    };
    let (ty, subject, class) = match rng.random_range(0..100) {
        0..45 => {
            let (dtc, ecu, status) = draw_code(rng);
            let class = classify(status).map(|c| (c, status));
            (LeadType::ErrorCode, Subject::Code { ecu, dtc }, class)
        }
        45..70 => (LeadType::WarningLamp, Subject::Lamp(lamp(rng)), None),
        70..82 => (LeadType::LowBattery, Subject::None, None),
        82..92 => (LeadType::Disconnected, Subject::None, None),
        _ => (LeadType::UserLamp, Subject::Lamp(lamp(rng)), None),
    };
    (LeadKey { ty, subject }, class)
}

/// An error code, its ECU and status byte: four in five from the catalog,
/// the rest codes it does not list (a generic description and estimate).
fn draw_code(rng: &mut StdRng) -> (Dtc, u16, u8) {
    let status = STATUSES[rng.random_range(0..STATUSES.len())];
    let (text, ecu) = if rng.random_bool(0.8) {
        let (code, ecu) = CODES[rng.random_range(0..CODES.len())];
        (code.to_owned(), ecu)
    } else {
        (
            format!("P0{:03X}", rng.random_range(0x100..0x9FFu16)),
            0x7E0,
        )
    };
    let failure_type = if rng.random_bool(0.2) {
        [0x1C, 0x16, 0x17, 0x29][rng.random_range(0..4)]
    } else {
        0
    };
    let dtc = Dtc::parse(&text)
        .map(|d| Dtc([d.0[0], d.0[1], failure_type]))
        .unwrap_or(Dtc([0x03, 0x00, 0]));
    (dtc, ecu, status)
}

/// Why a lead of `ty` closed: mostly its rule, sometimes a person.
fn close_reason(rng: &mut StdRng, ty: LeadType) -> CloseReason {
    let by_person = rng.random_bool(0.25);
    match (ty, by_person) {
        (_, true) if rng.random_bool(0.2) => CloseReason::Customer,
        (_, true) | (LeadType::UserLamp, _) => CloseReason::Manual,
        (LeadType::WarningLamp, _) if rng.random_bool(0.5) => CloseReason::EngineRun15Min,
        (LeadType::WarningLamp, _) => CloseReason::FourCleanStarts,
        (LeadType::LowBattery, _) => CloseReason::BatteryRecovered,
        (LeadType::Disconnected, _) => CloseReason::PowerRestored,
        (LeadType::ErrorCode, _) => CloseReason::CodeCleared,
    }
}

/// One vehicle's leads, newest first so that only the newest lead of a key
/// can still be open and each older one closed before the next opened.
/// Returns the indexes (into `out`) of the leads that may stay open.
fn plan_vehicle(
    rng: &mut StdRng,
    vehicle: usize,
    v: &Vehicle,
    count: usize,
    now: u64,
    out: &mut Vec<PlannedLead>,
) -> Vec<usize> {
    let mut times: Vec<u64> = (0..count)
        .map(|_| rng.random_range(v.first_seen_ms..=v.last_seen_ms))
        .collect();
    times.sort_unstable();
    let mut next_of_key: HashMap<LeadKey, u64> = HashMap::new();
    let mut may_stay_open = Vec::new();
    for &opened_at in times.iter().rev() {
        let (key, class) = draw_key(rng);
        let next = next_of_key.insert(key, opened_at);
        if next.is_none() && now - opened_at <= OPEN_WINDOW_MS {
            may_stay_open.push(out.len());
        }
        let limit = next.unwrap_or(now).saturating_sub(1).max(opened_at);
        let closed_at = (opened_at + rng.random_range(MINUTE_MS * 30..21 * DAY_MS)).min(limit);
        out.push(PlannedLead {
            vehicle,
            key,
            opened_at,
            class,
            closed: Some((closed_at, close_reason(rng, key.ty))),
        });
    }
    may_stay_open
}

/// Every lead to write, in the order ingest would have opened them, about
/// [`OPEN_SHARE`] of them still open.
fn plan_leads(rng: &mut StdRng, vehicles: &[Vehicle], n: usize, now: u64) -> Vec<PlannedLead> {
    let mut per_vehicle = vec![0usize; vehicles.len()];
    for _ in 0..n {
        per_vehicle[rng.random_range(0..vehicles.len())] += 1;
    }
    let mut plan = Vec::with_capacity(n);
    let mut may_stay_open = Vec::new();
    for (i, v) in vehicles.iter().enumerate() {
        may_stay_open.extend(plan_vehicle(rng, i, v, per_vehicle[i], now, &mut plan));
    }
    let keep_open = (OPEN_SHARE * n as f64 / may_stay_open.len().max(1) as f64).min(1.0);
    for i in may_stay_open {
        if rng.random_bool(keep_open) {
            plan[i].closed = None;
        }
    }
    // Lead ids rise with time, as ingest hands them out.
    plan.sort_by_key(|l| l.opened_at);
    plan
}

/// Writes the leads through `leads::open_lead` / `close_lead`, as ingest
/// does, so every index, counter, outbox entry and notification is the
/// appliance's own. Returns the leads left open.
fn write_leads(
    store: &Store,
    catalog: &Catalog,
    vehicles: &[Vehicle],
    plan: &[PlannedLead],
) -> Result<Vec<OpenedLead>, StoreError> {
    let mut opened = Vec::new();
    for (n, chunk) in plan.chunks(LEADS_PER_TX).enumerate() {
        store.write(|tx| {
            for p in chunk {
                let id = tx.next_id("lead")?;
                let cx = LeadContext {
                    catalog,
                    labour_rate_cents: DEFAULT_LABOUR_RATE_CENTS,
                    now_ms: p.opened_at,
                };
                leads::open_lead(
                    tx,
                    &cx,
                    &vehicles[p.vehicle],
                    id,
                    p.key,
                    p.opened_at,
                    p.class,
                )?;
                match p.closed {
                    Some((at, reason)) => {
                        let by = (reason == CloseReason::Manual).then_some("ines");
                        leads::close_lead(tx, id, at, reason, by, None)?;
                    }
                    None => opened.push(OpenedLead {
                        vehicle: p.vehicle,
                        key: p.key,
                        id,
                        opened_at: p.opened_at,
                        status: p.class.map(|c| c.1),
                    }),
                }
            }
            Ok(())
        })?;
        let done = (n + 1) * LEADS_PER_TX;
        if done.is_multiple_of(100_000) {
            eprintln!("  {done} leads written");
        }
    }
    Ok(opened)
}

/// Puts an open lead's condition into its vehicle and rule state: a lit
/// lamp, a stored code, a low battery, a lost power supply.
fn settle(v: &mut Vehicle, rules: &mut RuleState, lead: &OpenedLead) {
    rules.open.insert(
        lead.key,
        OpenLead {
            id: lead.id,
            ..OpenLead::default()
        },
    );
    match (lead.key.ty, lead.key.subject) {
        (LeadType::WarningLamp, Subject::Lamp(l)) => {
            v.lamps.insert(l);
            rules.lit.insert(l);
        }
        (LeadType::ErrorCode, Subject::Code { ecu, dtc }) => {
            let status = lead.status.unwrap_or(0x09);
            v.dtcs
                .entry(ecu)
                .or_default()
                .push(StoredDtc { dtc, status });
            rules.codes.entry(ecu).or_default().insert(dtc, status);
        }
        (LeadType::LowBattery, _) => {
            v.battery_mv = Some(11_450);
            rules.battery_low = Some(true);
        }
        (LeadType::Disconnected, _) => {
            let reason = PowerLossReason::Unplugged;
            v.power = Power::Lost {
                since_ms: lead.opened_at,
                reason,
            };
            rules.power_lost = true;
            rules.disconnection_count += 1;
            rules.disconnections.push(Disconnection {
                lost_at_ms: lead.opened_at,
                reason,
                restored_at_ms: None,
                down_s: None,
            });
        }
        _ => {}
    }
}

/// Writes the vehicles with their rule state, consent where the brand
/// needs it, and the vehicle and message totals.
fn write_vehicles(
    store: &Store,
    catalog: &Catalog,
    consent_brands: &[String],
    vehicles: &[Vehicle],
    rules: &[RuleState],
) -> Result<(), StoreError> {
    let needs_consent = |v: &Vehicle| {
        v.vin
            .as_ref()
            .and_then(|vin| catalog.brand_of(vin))
            .is_some_and(|b| consent_brands.iter().any(|c| c.eq_ignore_ascii_case(b)))
    };
    for (chunk, chunk_rules) in vehicles
        .chunks(VEHICLES_PER_TX)
        .zip(rules.chunks(VEHICLES_PER_TX))
    {
        store.write(|tx| {
            for (v, r) in chunk.iter().zip(chunk_rules) {
                tx.put_vehicle(v)?;
                tx.put_rules(v.device_id, r)?;
                if let (true, Some(vin)) = (needs_consent(v), v.vin) {
                    let consent = ConsentRecord {
                        vin,
                        state: ConsentState::Granted,
                        updated_ms: v.first_seen_ms,
                        by: "sync".into(),
                        version: 1,
                    };
                    tx.put_consent(&consent, false)?;
                }
            }
            tx.add_counter(counters::VEHICLES, chunk.len() as i64)?;
            let messages: u64 = chunk.iter().map(|v| v.messages).sum();
            tx.add_counter(counters::MESSAGES, messages as i64)?;
            Ok(())
        })?;
    }
    Ok(())
}

/// Builds the whole data set in `store`.
fn load(
    store: &Store,
    opts: &Options,
    consent_brands: &[String],
    now: u64,
) -> anyhow::Result<LoadFigures> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(4_005);
    let catalog = Catalog::builtin();
    let mut vehicles = draw_vehicles(&mut rng, opts.vehicles, now);
    let plan = plan_leads(&mut rng, &vehicles, opts.leads, now);
    let opened = write_leads(store, &catalog, &vehicles, &plan).context("writing leads")?;
    let mut rules: Vec<RuleState> = vehicles
        .iter()
        .map(|v| RuleState {
            last_driven_ms: Some(v.last_seen_ms),
            ..RuleState::default()
        })
        .collect();
    for lead in &opened {
        settle(&mut vehicles[lead.vehicle], &mut rules[lead.vehicle], lead);
    }
    write_vehicles(store, &catalog, consent_brands, &vehicles, &rules)
        .context("writing vehicles")?;
    Ok(LoadFigures {
        vehicles: vehicles.len(),
        leads: plan.len(),
        open: opened.len(),
        elapsed: started.elapsed(),
        disk_bytes: store.disk_size().unwrap_or(0),
    })
}

// ---- Credentials ----

/// What the two kinds of client send: a browser's session cookie for the
/// pages, a bearer token for the JSON API.
struct Credentials {
    cookie: String,
    token: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An advisor with a live session and an API token, made the way the
/// appliance makes them (setup, login, `forecourt token create`).
fn credentials(store: &Store, now: u64) -> anyhow::Result<Credentials> {
    let user = UserRecord {
        name: "ines".into(),
        display_name: "Ines Duarte".into(),
        role: Role::Advisor,
        password_hash: hash_password("bench password, not a secret")?,
        disabled: false,
        created_ms: now,
        updated_ms: now,
    };
    store.write(|tx| tx.put_user(&user))?;
    let session = start_session(store, "ines", now)?;
    let token = create_token(store, "web bench", Role::Advisor, now)?;
    Ok(Credentials {
        cookie: format!("{COOKIE}={}", hex(&session)),
        token,
    })
}

// ---- Routes and the load generator ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    None,
    Session,
    Bearer,
}

struct Route {
    path: &'static str,
    auth: Auth,
    /// Store commits a second made by another thread while the route is
    /// measured: each makes the dashboard's cached figures stale, as a busy
    /// lot's batches do (0: none).
    commits_per_s: u32,
}

impl Route {
    fn name(&self) -> String {
        match self.commits_per_s {
            0 => format!("GET {}", self.path),
            n => format!("GET {} ({n} commits/s)", self.path),
        }
    }
}

/// The trivial route first: every ratio is against it.
const ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        auth: Auth::None,
        commits_per_s: 0,
    },
    Route {
        path: "/",
        auth: Auth::Session,
        commits_per_s: 0,
    },
    Route {
        path: "/leads?type=error_code&status=open",
        auth: Auth::Session,
        commits_per_s: 0,
    },
    Route {
        path: "/api/v1/dashboard",
        auth: Auth::Bearer,
        commits_per_s: 0,
    },
    Route {
        path: "/api/v1/leads?status=open&limit=100",
        auth: Auth::Bearer,
        commits_per_s: 0,
    },
];

/// The dashboard again while the store commits, as a busy lot makes it.
const BUSY: Route = Route {
    path: "/",
    auth: Auth::Session,
    commits_per_s: 100,
};

/// The dashboards the goals apply to.
const DASHBOARDS: &[&str] = &["/", "/api/v1/dashboard"];

fn header(auth: Auth, creds: &Credentials) -> Option<String> {
    match auth {
        Auth::None => None,
        Auth::Session => Some(format!("Cookie: {}", creds.cookie)),
        Auth::Bearer => Some(format!("Authorization: Bearer {}", creds.token)),
    }
}

/// One plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str, header: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status line in the answer to GET {path}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    Ok((status, body))
}

/// What wrk measured on one route.
#[derive(Clone, Copy, Debug)]
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

/// `512.00us`, `3.21ms`, `1.02s`, `1.50m` (wrk's units) in milliseconds.
fn parse_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(n * scale)
}

/// Reads `wrk --latency` output.
fn parse_wrk(out: &str) -> anyhow::Result<Measured> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let latency = |pct: &str| field(pct).and_then(parse_ms);
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok());
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let non_2xx = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // "connect 0, read 0, write 0, timeout 0"
    let socket_errors = field("Socket errors:").map_or(0, |v| {
        v.split([',', ' '])
            .filter_map(|w| w.parse::<u64>().ok())
            .sum()
    });
    match (rps, latency("50%"), latency("99%"), requests) {
        (Some(rps), Some(p50_ms), Some(p99_ms), Some(requests)) => Ok(Measured {
            rps,
            p50_ms,
            p99_ms,
            requests,
            non_2xx,
            socket_errors,
        }),
        _ => bail!("cannot read wrk's output:\n{out}"),
    }
}

/// Runs wrk on one route for `seconds`.
fn wrk(
    addr: SocketAddr,
    path: &str,
    header: Option<&str>,
    opts: &Options,
    seconds: u64,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("wrk");
    cmd.arg("--latency")
        .args(["-t", &opts.threads.min(opts.connections).to_string()])
        .args(["-c", &opts.connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .args(["--timeout", "5s"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn wrk_installed() -> bool {
    Command::new("wrk")
        .arg("-v")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"))
}

/// What happened on one route.
enum Outcome {
    Measured(Measured),
    /// Answered 200; no wrk here to load it (smoke run only).
    Answered,
    Failed(String),
}

/// Checks a route answers 200 with one request, then loads it with wrk
/// (a warm-up first, not counted).
/// Commits to `store` `per_s` times a second until `stop` is set.
fn committer(store: Arc<Store>, per_s: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        let period = Duration::from_secs(1) / per_s.max(1);
        while !stop.load(Ordering::Relaxed) {
            if store.write(|tx| tx.add_counter("bench.commits", 1)).is_ok() {
                n += 1;
            }
            // The pacing is the point: a steady rate of commits, like a lot.
            std::thread::sleep(period);
        }
        n
    })
}

fn measure(
    addr: SocketAddr,
    route: &Route,
    creds: &Credentials,
    opts: &Options,
    have_wrk: bool,
    store: &Arc<Store>,
) -> Outcome {
    let header = header(route.auth, creds);
    match http_get(addr, route.path, header.as_deref()) {
        Ok((200, _)) => {}
        Ok((status, _)) => {
            return Outcome::Failed(format!("GET {} answered {status}, not 200", route.path))
        }
        Err(e) => return Outcome::Failed(format!("GET {}: {e:#}", route.path)),
    }
    if !have_wrk {
        return Outcome::Answered;
    }
    if opts.warmup > 0 {
        let _ = wrk(addr, route.path, header.as_deref(), opts, opts.warmup);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = (route.commits_per_s > 0)
        .then(|| committer(store.clone(), route.commits_per_s, stop.clone()));
    let measured = wrk(addr, route.path, header.as_deref(), opts, opts.seconds);
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = writer {
        let commits = w.join().unwrap_or(0);
        eprintln!(
            "web:   {commits} commits during the run ({:.0}/s)",
            commits as f64 / opts.seconds as f64
        );
    }
    match measured {
        Ok(m) if m.non_2xx > 0 || m.socket_errors > 0 => Outcome::Failed(format!(
            "GET {} under load: {} of {} answers not 2xx/3xx, {} socket errors",
            route.path, m.non_2xx, m.requests, m.socket_errors
        )),
        Ok(m) => Outcome::Measured(m),
        Err(e) => Outcome::Failed(format!("GET {}: {e:#}", route.path)),
    }
}

// ---- The appliance ----

/// CPU time this process has used, from /proc/self/stat (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    ticks(11).unwrap_or(0.0) / USER_HZ + ticks(12).unwrap_or(0.0) / USER_HZ
}

/// Waits (up to a minute) until the appliance is idle: its first hourly
/// tick reads every vehicle, and the measurement should not share the CPU
/// with it. Idle: under a tenth of a core over half a second.
fn wait_until_idle() -> Duration {
    let started = Instant::now();
    let mut before = cpu_seconds();
    while started.elapsed() < Duration::from_secs(60) {
        // Idle is measured over real time: CPU used per half second.
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_seconds();
        if now - before < 0.05 {
            break;
        }
        before = now;
    }
    started.elapsed()
}

/// Whether the dashboard reports the open leads that were written: the
/// counters it reads are maintained, not recounted, so they must agree.
fn check_dashboard(addr: SocketAddr, creds: &Credentials, open: usize) -> anyhow::Result<()> {
    let bearer = header(Auth::Bearer, creds);
    let (status, body) = http_get(addr, "/api/v1/dashboard", bearer.as_deref())?;
    if status != 200 {
        bail!("GET /api/v1/dashboard answered {status}");
    }
    let json: serde_json::Value = serde_json::from_str(&body).context("dashboard JSON")?;
    let reported = json["leads"]["open_total"].as_u64();
    if reported != Some(open as u64) {
        bail!("the dashboard reports {reported:?} open leads; {open} were written");
    }
    Ok(())
}

// ---- Report ----

fn print_table(outcomes: &[(&Route, Outcome)]) {
    let trivial = match outcomes.first() {
        Some((_, Outcome::Measured(m))) => Some(m.rps),
        _ => None,
    };
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>7}",
        "route", "req/s", "p50 (ms)", "p99 (ms)", "ratio"
    );
    for (route, outcome) in outcomes {
        let name = route.name();
        match outcome {
            Outcome::Measured(m) => {
                let ratio = trivial.map_or("-".into(), |t| format!("{:.2}", m.rps / t));
                println!(
                    "{name:<46} {:>10.0} {:>10.2} {:>10.2} {ratio:>7}",
                    m.rps, m.p50_ms, m.p99_ms
                );
            }
            Outcome::Answered => println!("{name:<46} answered 200 (not loaded: no wrk)"),
            Outcome::Failed(why) => println!("{name:<46} FAILED: {why}"),
        }
    }
}

/// Says whether each dashboard meets the goals; prints, never asserts.
fn print_goals(outcomes: &[(&Route, Outcome)]) {
    let trivial = match outcomes.first() {
        Some((_, Outcome::Measured(m))) => m.rps,
        _ => return,
    };
    for (route, outcome) in outcomes {
        let Outcome::Measured(m) = outcome else {
            continue;
        };
        if !DASHBOARDS.contains(&route.path) {
            continue;
        }
        let ratio = m.rps / trivial;
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "goal {}: throughput ratio {ratio:.2} (goal >= {GOAL_RATIO}): {}; p99 {:.2} ms (goal < {GOAL_P99_MS} ms): {}",
            route.name(),
            verdict(ratio >= GOAL_RATIO),
            m.p99_ms,
            verdict(m.p99_ms < GOAL_P99_MS)
        );
    }
}

fn bench_dir() -> anyhow::Result<PathBuf> {
    // Under target/ on purpose: /tmp may be a tmpfs, where fsync is free.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-web");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn init_tracing() {
    let filter = std::env::var("FORECOURT_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The whole run; `Ok(false)` when a route failed.
fn run(opts: &Options) -> anyhow::Result<bool> {
    let have_wrk = wrk_installed();
    if !have_wrk && !opts.smoke {
        bail!(
            "wrk is not installed: `apt-get install wrk` (the load generator this benchmark runs)"
        );
    }
    let dir = bench_dir()?.join("data");
    let clock: SharedClock = Arc::new(SystemClock);
    let mut settings = Settings::with_data_dir(dir.clone());
    settings.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    eprintln!(
        "web: writing {} vehicles and {} leads through the store API...",
        opts.vehicles, opts.leads
    );
    let store = Store::open(&dir, EngineKind::Redb).context("opening the bench store")?;
    let figures = load(&store, opts, &settings.consent_brands, clock.now_ms())?;
    let creds = credentials(&store, clock.now_ms())?;
    drop(store);
    print_load(&figures);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let running = rt
        .block_on(forecourt::app::start(settings, clock))
        .context("starting the appliance")?;
    let addr = running.http_addr;
    let idle = wait_until_idle();
    eprintln!(
        "web: appliance on http://{addr}, idle after {:.1} s",
        idle.as_secs_f64()
    );
    let counters_ok = match check_dashboard(addr, &creds, figures.open) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("web: FAILED: {e:#}");
            false
        }
    };
    let mut outcomes = Vec::new();
    for route in ROUTES.iter().chain([&BUSY]) {
        eprintln!("web: {}...", route.name());
        let store = &running.state.store;
        outcomes.push((route, measure(addr, route, &creds, opts, have_wrk, store)));
    }
    rt.block_on(running.stop());

    println!();
    print_setup(opts, have_wrk);
    print_table(&outcomes);
    print_goals(&outcomes);
    let routes_ok = outcomes
        .iter()
        .all(|(_, o)| !matches!(o, Outcome::Failed(_)));
    Ok(routes_ok && counters_ok)
}

/// How the routes were loaded, and on what.
fn print_setup(opts: &Options, have_wrk: bool) {
    if opts.smoke {
        println!("web: smoke run (no --bench): a small data set and short runs, to prove the bench works; its timings mean nothing");
    }
    if !have_wrk {
        println!("web: wrk is not installed: each route was checked with one request, no load was generated (`apt-get install wrk`)");
        return;
    }
    println!(
        "web: wrk --latency, {} threads, {} connections, {} s per route ({} s warm-up), loopback, same server and run; this machine: {} cores",
        opts.threads.min(opts.connections),
        opts.connections,
        opts.seconds,
        opts.warmup,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

fn print_load(f: &LoadFigures) {
    let secs = f.elapsed.as_secs_f64();
    println!(
        "web: loaded {} vehicles and {} leads ({} open, {:.1}%) in {secs:.1} s ({:.0} leads/s); store {:.0} MiB",
        f.vehicles,
        f.leads,
        f.open,
        100.0 * f.open as f64 / f.leads.max(1) as f64,
        f.leads as f64 / secs,
        f.disk_bytes as f64 / (1024.0 * 1024.0)
    );
}

fn main() -> ExitCode {
    init_tracing();
    let opts = Options::from_args();
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("web: FAILED: a route or the dashboard's counters are wrong (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("web: {e:#}");
            ExitCode::FAILURE
        }
    }
}
