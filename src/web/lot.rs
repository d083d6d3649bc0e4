//! The lot page (SPEC.md R-LOT-1): the vehicles whose dongles were heard
//! recently, with what a technician walking the lot needs to know (battery
//! voltage, lamps, power, open leads, booking), and the lot scan.
//!
//! A scan broadcasts REQUEST_STATUS on every link: each unit in reach
//! answers with a HELLO and a HEARTBEAT (PROTOCOL.md), so "heard since the
//! scan started" is "parked here now". Its message is numbered by ingest,
//! which owns the appliance's message counter ([`Action::RequestStatusAll`]),
//! and sent here, where the links are. The page reloads itself while a scan
//! runs (a `Refresh` header: no script needed), and `GET /lot/scan` answers
//! the same progress as JSON for scripts.
//!
//! Progress is counted from the store, not from the answers as they pass:
//! a unit counts as heard once ingest has committed a message of it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::domain::lead::Lead;
use crate::domain::vehicle::{Power, Vehicle};
use crate::ingest::{Action, Outcome};
use crate::leads::ActionError;
use crate::link::can::BROADCAST_ADDR;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::session::{CsrfOnly, Staff, StaffForm, WebError};
use crate::web::users::blocking;
use crate::web::views_lot;

/// The lot pages' routes as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/lot"), ("POST", "/lot/scan"), ("GET", "/lot/scan")];

/// How long a scan waits for answers: a unit answers at once, but a CAN
/// broadcast is one send per node address and a serial line is shared.
pub const SCAN_MS: u64 = 60_000;
/// A battery reading under this is flagged on the lot (a parked 12 V
/// battery at rest reads 12.4 V or more when healthy).
pub const LOW_VOLTAGE_MV: u16 = 12_000;
/// Vehicles listed at most, most recently heard first.
pub const LOT_PAGE_UNITS: usize = 500;
/// Seconds between reloads of the page while a scan runs.
pub const REFRESH_S: u64 = 3;
/// Units read from the store at a time.
const STORE_PAGE: usize = 500;

/// The lot pages; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/lot", get(lot_page))
        .route("/lot/scan", get(scan_json).post(start))
}

// ---- The scan ----

/// One lot scan: when it started and who started it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub started_ms: u64,
    pub ends_ms: u64,
    pub by: String,
    /// Links that took the broadcast, of those configured.
    pub links_sent: usize,
    pub links: usize,
}

impl Scan {
    pub fn running(&self, now_ms: u64) -> bool {
        now_ms < self.ends_ms
    }

    /// Whole seconds left, rounded up.
    pub fn seconds_left(&self, now_ms: u64) -> u64 {
        self.ends_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

/// The scan running or last run, one per appliance (in `AppState`): what
/// the page shows, and what stops two scans from running at once.
#[derive(Debug, Default)]
pub struct LotScan {
    current: Mutex<Option<Scan>>,
}

impl LotScan {
    pub fn current(&self) -> Option<Scan> {
        self.lock().clone()
    }

    /// Claims the next scan for `by` at `now_ms`; `Err` with the scan that
    /// is still running. Claimed before anything is sent, so two clicks
    /// broadcast once.
    pub fn begin(&self, now_ms: u64, by: &str, links: usize) -> Result<Scan, Scan> {
        let mut current = self.lock();
        if let Some(s) = current.as_ref().filter(|s| s.running(now_ms)) {
            return Err(s.clone());
        }
        let scan = Scan {
            started_ms: now_ms,
            ends_ms: now_ms.saturating_add(SCAN_MS),
            by: by.to_owned(),
            links_sent: 0,
            links,
        };
        *current = Some(scan.clone());
        Ok(scan)
    }

    /// Records how many links took the broadcast of the scan that started
    /// at `started_ms`; forgets that scan when none did.
    pub fn sent(&self, started_ms: u64, links_sent: usize) -> Option<Scan> {
        let mut current = self.lock();
        let scan = current.as_mut().filter(|s| s.started_ms == started_ms)?;
        scan.links_sent = links_sent;
        let scan = scan.clone();
        if links_sent == 0 {
            *current = None;
        }
        Some(scan)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Scan>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no serial or CAN link is configured: no unit can hear a scan")]
    NoLinks,
    #[error("no link took the request (the links are stopping or their queues are full): try again in a moment")]
    NotSent,
    #[error("the appliance could not make the request: {0}")]
    Appliance(#[from] ActionError),
}

/// What starting a scan did.
#[derive(Debug)]
pub enum ScanStart {
    Started(Scan),
    /// A scan was running already; nothing was sent.
    Running(Scan),
}

/// Starts a lot scan: REQUEST_STATUS to every unit on every link. The
/// page's button calls it, and so can anything else that starts a scan
/// (R-APP-2's button).
pub async fn start_scan(state: &AppState, by: &str) -> Result<ScanStart, ScanError> {
    if state.links.is_empty() {
        return Err(ScanError::NoLinks);
    }
    let now = state.clock.now_ms();
    let scan = match state.lot_scan.begin(now, by, state.links.len()) {
        Ok(s) => s,
        Err(running) => return Ok(ScanStart::Running(running)),
    };
    let payload = match state.act(Action::RequestStatusAll).await {
        Ok(Outcome::Downlink { payload }) => payload,
        Ok(other) => {
            state.lot_scan.sent(scan.started_ms, 0);
            tracing::error!(?other, "a lot scan got an answer that is no payload");
            return Err(ScanError::Appliance(ActionError::Invalid(
                "ingest answered something else than a message".into(),
            )));
        }
        Err(e) => {
            state.lot_scan.sent(scan.started_ms, 0);
            return Err(e.into());
        }
    };
    // The CAN link copies a broadcast to every node address; serial ignores it.
    let sent = state
        .links
        .iter()
        .filter(|l| l.send(BROADCAST_ADDR, payload.clone()))
        .count();
    let scan = state.lot_scan.sent(scan.started_ms, sent);
    match scan {
        Some(scan) if sent > 0 => {
            tracing::info!(by, links = sent, "lot scan started");
            Ok(ScanStart::Started(scan))
        }
        _ => Err(ScanError::NotSent),
    }
}

/// The units booked today: the scan expects them. Bookings arrive with a
/// later issue (R-APPT-1); until then no unit is booked and the page says
/// "no bookings today".
pub fn booked_today(_store: &Store, _now_ms: u64) -> Result<BTreeSet<u64>, StoreError> {
    Ok(BTreeSet::new())
}

/// A scan's figures (R-LOT-1): units heard since it started, units
/// expected (booked today), and the expected ones not heard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub heard: u64,
    pub expected: usize,
    /// Device ids, in order.
    pub missing: Vec<u64>,
}

/// Counts a scan's answers over the units, one at a time (the store is
/// read in pages).
#[derive(Debug)]
pub struct Tally {
    started_ms: u64,
    heard: u64,
    heard_expected: BTreeSet<u64>,
}

impl Tally {
    pub fn new(started_ms: u64) -> Tally {
        Tally {
            started_ms,
            heard: 0,
            heard_expected: BTreeSet::new(),
        }
    }

    pub fn see(&mut self, v: &Vehicle, expected: &BTreeSet<u64>) {
        if heard_since(v, self.started_ms) {
            self.heard += 1;
            if expected.contains(&v.device_id) {
                self.heard_expected.insert(v.device_id);
            }
        }
    }

    pub fn finish(self, expected: &BTreeSet<u64>) -> Progress {
        Progress {
            heard: self.heard,
            expected: expected.len(),
            missing: expected.difference(&self.heard_expected).copied().collect(),
        }
    }
}

/// Whether the appliance heard the unit at or after `since_ms` (its own
/// clock, so a dongle's clock cannot fake an answer).
pub fn heard_since(v: &Vehicle, since_ms: u64) -> bool {
    v.last_heard_ms >= since_ms
}

// ---- The vehicles on the lot ----

/// Why a parked vehicle needs a look, in the order the page shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    LowBattery,
    PowerLost,
    LampLit,
    ErrorCodes,
    OpenLeads,
}

impl Attention {
    pub fn label(self) -> &'static str {
        match self {
            Attention::LowBattery => "battery under 12.0 V",
            Attention::PowerLost => "unit lost power",
            Attention::LampLit => "warning lamp lit",
            Attention::ErrorCodes => "error codes stored",
            Attention::OpenLeads => "open leads",
        }
    }
}

/// What on a vehicle needs a look; empty when nothing does.
pub fn attention(v: &Vehicle, open_leads: usize) -> Vec<Attention> {
    let mut out = Vec::new();
    if v.battery_mv.is_some_and(|mv| mv < LOW_VOLTAGE_MV) {
        out.push(Attention::LowBattery);
    }
    if matches!(v.power, Power::Lost { .. }) {
        out.push(Attention::PowerLost);
    }
    if !v.lamps.is_empty() {
        out.push(Attention::LampLit);
    }
    if !v.dtcs.is_empty() {
        out.push(Attention::ErrorCodes);
    }
    if open_leads > 0 {
        out.push(Attention::OpenLeads);
    }
    out
}

/// Keeps the `cap` most recently heard of the units offered, without
/// holding every unit of a large store at once.
#[derive(Debug)]
pub struct Recent {
    cap: usize,
    kept: Vec<Vehicle>,
    /// Units offered in all.
    pub total: usize,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent {
            cap,
            kept: Vec::new(),
            total: 0,
        }
    }

    pub fn offer(&mut self, v: Vehicle) {
        self.total += 1;
        self.kept.push(v);
        if self.kept.len() >= self.cap.saturating_mul(2).max(1) {
            self.trim();
        }
    }

    /// Most recently heard first; ties by device id, so the order is stable.
    pub fn into_sorted(mut self) -> Vec<Vehicle> {
        self.trim();
        self.kept
    }

    fn trim(&mut self) {
        self.kept.sort_by(|a, b| {
            b.last_heard_ms
                .cmp(&a.last_heard_ms)
                .then(a.device_id.cmp(&b.device_id))
        });
        self.kept.truncate(self.cap);
    }
}

/// One vehicle on the lot as the page shows it.
#[derive(Debug)]
pub struct LotRow {
    pub vehicle: Vehicle,
    pub open_leads: Vec<Lead>,
    pub booked_today: bool,
    pub attention: Vec<Attention>,
}

/// Everything the lot page shows, read in one pass over the units.
#[derive(Debug)]
pub struct Lot {
    pub rows: Vec<LotRow>,
    /// Units on the lot, listed or not.
    pub on_lot: usize,
    pub booked_today: usize,
    /// The current or last scan's figures.
    pub progress: Option<Progress>,
}

/// Reads the lot from the store at `now_ms`; counts `scan`'s answers on
/// the way.
pub fn read_lot(
    store: &Store,
    now_ms: u64,
    on_lot_ms: u64,
    scan: Option<&Scan>,
) -> Result<Lot, StoreError> {
    let booked = booked_today(store, now_ms)?;
    let mut tally = scan.map(|s| Tally::new(s.started_ms));
    let mut recent = Recent::new(LOT_PAGE_UNITS);
    let mut after = None;
    loop {
        let page = store.vehicles(after, STORE_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.device_id);
        for v in page {
            if let Some(t) = tally.as_mut() {
                t.see(&v, &booked);
            }
            if v.on_lot(now_ms, on_lot_ms) {
                recent.offer(v);
            }
        }
    }
    let on_lot = recent.total;
    let mut rows = Vec::new();
    for vehicle in recent.into_sorted() {
        let mut open_leads = Vec::new();
        for id in store.open_leads_of(vehicle.device_id)? {
            if let Some(lead) = store.lead(id)? {
                open_leads.push(lead);
            }
        }
        open_leads.sort_by_key(|l| std::cmp::Reverse((l.opened_at_ms, l.id)));
        rows.push(LotRow {
            attention: attention(&vehicle, open_leads.len()),
            booked_today: booked.contains(&vehicle.device_id),
            vehicle,
            open_leads,
        });
    }
    // Those that need a look first (a stable sort keeps the most recently
    // heard first within each group): what a technician walks to.
    rows.sort_by_key(|r| r.attention.is_empty());
    Ok(Lot {
        rows,
        on_lot,
        booked_today: booked.len(),
        progress: tally.map(|t| t.finish(&booked)),
    })
}

// ---- Handlers ----

async fn lot_now(state: &Arc<AppState>) -> Result<(u64, Option<Scan>, Lot), WebError> {
    let now = state.clock.now_ms();
    let scan = state.lot_scan.current();
    let store = state.store.clone();
    let on_lot_ms = state.settings.on_lot_ms;
    let seen = scan.clone();
    let lot = blocking(move || Ok(read_lot(&store, now, on_lot_ms, seen.as_ref())?)).await?;
    Ok((now, scan, lot))
}

/// The page, with `message` (a refused scan) shown above the scan box.
async fn render(
    state: &Arc<AppState>,
    staff: &Staff,
    status: StatusCode,
    message: Option<&str>,
) -> Result<Response, WebError> {
    let (now, scan, lot) = lot_now(state).await?;
    let running = scan.as_ref().is_some_and(|s| s.running(now));
    let page = views_lot::lot(
        staff,
        &views_lot::LotView {
            now_ms: now,
            on_lot_ms: state.settings.on_lot_ms,
            lot: &lot,
            scan: scan.as_ref(),
            links: state.links.len(),
            message,
        },
    );
    let mut response = (status, page).into_response();
    if running {
        // Reload while the scan runs; works without any script.
        response
            .headers_mut()
            .insert(header::REFRESH, HeaderValue::from(REFRESH_S));
    }
    Ok(response)
}

const READ: &str = "see the lot";

async fn lot_page(State(state): State<Arc<AppState>>, staff: Staff) -> Result<Response, WebError> {
    staff.require(Permission::Read, READ)?;
    render(&state, &staff, StatusCode::OK, None).await
}

/// `POST /lot/scan`: starts a scan (any role may: a technician walking the
/// lot starts it) and goes back to the page, which shows its progress.
async fn start(
    State(state): State<Arc<AppState>>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let staff = f.staff;
    staff.require(Permission::Read, "start a lot scan")?;
    match start_scan(&state, &staff.name).await {
        Ok(_) => Ok(Redirect::to("/lot").into_response()),
        Err(ScanError::Appliance(ActionError::Store(e))) => Err(e.into()),
        Err(e) => {
            let status = match e {
                ScanError::NoLinks => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let message = format!("The scan did not start: {e}.");
            render(&state, &staff, status, Some(&message)).await
        }
    }
}

/// The scan's state as `GET /lot/scan` answers it.
#[derive(Debug, Serialize)]
pub struct ScanJson {
    pub running: bool,
    pub started_at: String,
    pub ends_at: String,
    pub by: String,
    pub links_sent: usize,
    pub heard: u64,
    pub expected: usize,
    /// Device ids as decimal strings (a u64 does not fit JavaScript's numbers).
    pub missing: Vec<String>,
}

/// `GET /lot/scan`: `{"scan": null}` before the first scan, else its progress.
async fn scan_json(State(state): State<Arc<AppState>>, staff: Staff) -> Result<Response, WebError> {
    staff.require(Permission::Read, READ)?;
    let (now, scan, lot) = lot_now(&state).await?;
    let body = scan.map(|s| {
        let p = lot.progress.unwrap_or_default();
        ScanJson {
            running: s.running(now),
            started_at: rfc3339(s.started_ms),
            ends_at: rfc3339(s.ends_ms),
            by: s.by,
            links_sent: s.links_sent,
            heard: p.heard,
            expected: p.expected,
            missing: p.missing.iter().map(u64::to_string).collect(),
        }
    });
    Ok(Json(serde_json::json!({ "scan": body })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: u64, heard: u64) -> Vehicle {
        Vehicle::new(id, heard, heard)
    }

    #[test]
    fn one_scan_at_a_time() {
        let lot = LotScan::default();
        let first = lot.begin(1_000, "tech", 2).expect("nothing running");
        assert_eq!(first.ends_ms, 1_000 + SCAN_MS);
        let again = lot.begin(1_000 + SCAN_MS - 1, "boss", 2);
        assert_eq!(again, Err(first.clone()), "a running scan is not restarted");
        assert_eq!(lot.sent(first.started_ms, 2).map(|s| s.links_sent), Some(2));
        let next = lot
            .begin(1_000 + SCAN_MS, "boss", 2)
            .expect("the first has ended");
        assert_eq!(next.by, "boss");
        assert_eq!(lot.current(), Some(next));
    }

    #[test]
    fn a_scan_no_link_took_is_forgotten() {
        let lot = LotScan::default();
        let scan = lot.begin(5, "tech", 1).unwrap();
        assert_eq!(lot.sent(scan.started_ms, 0).map(|s| s.links_sent), Some(0));
        assert_eq!(lot.current(), None);
        assert!(
            lot.begin(6, "tech", 1).is_ok(),
            "and may be tried again at once"
        );
        assert_eq!(
            lot.sent(scan.started_ms, 1),
            None,
            "a stale scan is not touched"
        );
    }

    #[test]
    fn seconds_left_round_up() {
        let s = Scan {
            started_ms: 0,
            ends_ms: 60_000,
            by: "x".into(),
            links_sent: 1,
            links: 1,
        };
        assert_eq!(s.seconds_left(0), 60);
        assert_eq!(s.seconds_left(59_001), 1);
        assert_eq!(s.seconds_left(60_000), 0);
        assert!(s.running(59_999) && !s.running(60_000));
    }

    #[test]
    fn progress_counts_units_heard_since_the_start() {
        let expected: BTreeSet<u64> = [2, 3, 9].into();
        let mut t = Tally::new(1_000);
        for v in [unit(1, 999), unit(2, 1_000), unit(3, 5), unit(4, 2_000)] {
            t.see(&v, &expected);
        }
        let p = t.finish(&expected);
        assert_eq!(p.heard, 2, "units 2 and 4");
        assert_eq!(p.expected, 3);
        assert_eq!(
            p.missing,
            vec![3, 9],
            "3 was heard before the scan, 9 never"
        );
    }

    #[test]
    fn no_bookings_means_nothing_expected_or_missing() {
        let mut t = Tally::new(0);
        t.see(&unit(7, 10), &BTreeSet::new());
        assert_eq!(
            t.finish(&BTreeSet::new()),
            Progress {
                heard: 1,
                expected: 0,
                missing: vec![]
            }
        );
    }

    #[test]
    fn attention_names_what_to_look_at() {
        let mut v = unit(1, 0);
        assert!(attention(&v, 0).is_empty());
        v.battery_mv = Some(12_000);
        assert!(attention(&v, 0).is_empty(), "12.0 V itself is not flagged");
        v.battery_mv = Some(11_999);
        v.lamps.insert(1);
        assert_eq!(
            attention(&v, 2),
            vec![
                Attention::LowBattery,
                Attention::LampLit,
                Attention::OpenLeads
            ]
        );
        v.power = Power::Lost {
            since_ms: 0,
            reason: crate::link::message::PowerLossReason::Unknown,
        };
        assert!(attention(&v, 0).contains(&Attention::PowerLost));
    }

    #[test]
    fn recent_keeps_the_latest_heard_first() {
        let mut r = Recent::new(3);
        for (id, heard) in [(1, 50), (2, 10), (3, 70), (4, 70), (5, 20), (6, 60), (7, 5)] {
            r.offer(unit(id, heard));
        }
        assert_eq!(r.total, 7);
        let ids: Vec<u64> = r.into_sorted().iter().map(|v| v.device_id).collect();
        assert_eq!(ids, vec![3, 4, 6], "latest first, ties by device id");
    }
}
