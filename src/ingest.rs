//! The one loop that takes messages from every link, makes them exactly
//! once (PROTOCOL.md section 4), applies them, commits the effects of a
//! whole batch in one store transaction, and only then answers.
//!
//! Batches form by themselves: while one commit (an fsync) is in flight,
//! the next events queue in the bounded channel, and the loop takes all of
//! them at once. A commit that fails answers nothing; the dongles
//! retransmit and nothing acknowledged is ever lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::domain::catalog::Catalog;
use crate::domain::consent::{self, ConsentRecord, ConsentState, Gate};
use crate::domain::lead::{Effect, IdSeq, LeadKey, LeadStatus, RuleState, BATTERY_WINDOW_MS};
use crate::domain::vehicle::{self, Timing, Vehicle, VehicleEvent, HOUR_MS};
use crate::leads::{self, ActionError, LeadAction, LeadContext};
use crate::link::frame::crc32c;
use crate::link::message::{Body, Header, Message, Vin};
use crate::link::{LinkEvent, Replier};
use crate::shutdown::Shutdown;
use crate::store::leads::CustomerMessage;
use crate::store::{counters, DedupeWindow, Record, Store, StoreError, BATTERY_RETENTION_MS};

/// The largest batch committed in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Live mirror of the durable totals and the pipeline's health, read by
/// `/healthz` and the status page without touching the store.
#[derive(Debug, Default)]
pub struct Totals {
    pub vehicles: AtomicU64,
    pub messages: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    /// Batches committed since start, and events in them (for batch size).
    pub batches: AtomicU64,
    pub batched_events: AtomicU64,
    pub last_commit_ms: AtomicU64,
    /// The last commit's error, cleared by the next success.
    store_error: Mutex<Option<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TotalsSnapshot {
    pub vehicles: u64,
    pub messages: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

impl Totals {
    /// Loads the durable totals from the store.
    pub fn load(store: &Store) -> Result<Totals, StoreError> {
        let t = Totals::default();
        t.vehicles
            .store(store.counter(counters::VEHICLES)?, Ordering::Relaxed);
        t.messages
            .store(store.counter(counters::MESSAGES)?, Ordering::Relaxed);
        t.duplicates
            .store(store.counter(counters::DUPLICATES)?, Ordering::Relaxed);
        t.rejected
            .store(store.counter(counters::REJECTED)?, Ordering::Relaxed);
        Ok(t)
    }

    pub fn snapshot(&self) -> TotalsSnapshot {
        TotalsSnapshot {
            vehicles: self.vehicles.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    pub fn store_error(&self) -> Option<String> {
        self.store_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_store_error(&self, e: Option<String>) {
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// A unit's state as ingest keeps it between batches.
struct Unit {
    vehicle: Option<Vehicle>,
    dedupe: DedupeWindow,
    rules: RuleState,
    /// Consent of the unit's VIN, as last read (None: no decision stored).
    consent: Option<ConsentState>,
    consent_vin: Option<Vin>,
}

/// Settings ingest needs from the configuration.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Brands that need OBID consent (R-VEH-4).
    pub consent_brands: Vec<String>,
    /// Lead rules on (off only to measure what they cost).
    pub rules: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            consent_brands: vec!["Volkswagen".into()],
            rules: true,
        }
    }
}

/// Settings records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabourRate {
    /// The workshop's hourly labour rate, in cents.
    pub cents_per_hour: u64,
}

impl Record for LabourRate {
    const VERSION: u8 = 1;
}

impl Record for Catalog {
    const VERSION: u8 = 1;
}

/// Default labour rate until the workshop sets one: 95.00 an hour.
pub const DEFAULT_LABOUR_RATE_CENTS: u64 = 9_500;
/// Store setting names: the imported catalog rows and the labour rate
/// (the settings page reads them).
pub const CATALOG_SETTING: &str = "catalog";
pub const LABOUR_RATE_SETTING: &str = "labour_rate";

/// The catalog in use: the built-in rows with the imported ones over them.
pub fn catalog_in_use(store: &Store) -> Result<Catalog, StoreError> {
    let mut catalog = Catalog::builtin();
    if let Some(imported) = store.setting::<Catalog>(CATALOG_SETTING)? {
        catalog.merge(imported);
    }
    Ok(catalog)
}

/// The workshop's labour rate in cents an hour, or the default.
pub fn labour_rate_in_use(store: &Store) -> Result<u64, StoreError> {
    Ok(store
        .setting::<LabourRate>(LABOUR_RATE_SETTING)?
        .map_or(DEFAULT_LABOUR_RATE_CENTS, |r| r.cents_per_hour))
}

/// Units that have not said HELLO are asked at most this often.
const STATUS_REQUEST_INTERVAL_MS: u64 = 10 * 60_000;

/// A change asked for by the staff, the CLI or sync, carried out by ingest
/// so that one writer owns every unit's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Lead {
        action: LeadAction,
        by: String,
    },
    SetConsent {
        vin: String,
        state: ConsentState,
        by: String,
    },
    /// A catalog CSV (docs/catalog.md); refused whole when any row is bad.
    ImportCatalog {
        csv: String,
    },
    SetLabourRate {
        cents_per_hour: u64,
    },
    /// A DMS customer file (docs/customers.md); refused whole when any row
    /// is bad; a dry run reports what would change and writes nothing.
    ImportCustomers {
        csv: String,
        dry_run: bool,
    },
    /// A change to customers, vehicles, sources, spend or invitations. The
    /// caller passes the configured invitation expiry (`[customers]`):
    /// ingest holds no settings beyond its options.
    Customers {
        action: crate::customers::CustomerAction,
        invitation_expiry_days: u32,
    },
    /// R-LOT-1 lot scan: a REQUEST_STATUS to every unit in reach, numbered
    /// with the appliance's own counter. Ingest holds no link: the caller
    /// sends the payload it answers on every link.
    RequestStatusAll,
}

/// What an action produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Lead {
        lead: Box<crate::domain::lead::Lead>,
    },
    Message {
        message: CustomerMessage,
    },
    Consent {
        consent: ConsentRecord,
    },
    Catalog {
        rows: usize,
    },
    LabourRate {
        cents_per_hour: u64,
    },
    CustomerImport {
        report: crate::customers::ImportReport,
    },
    Customers {
        outcome: crate::customers::CustomerOutcome,
    },
    /// An encoded payload (without CRC) for the caller to send.
    Downlink {
        payload: Vec<u8>,
    },
}

/// An action and where its answer goes.
pub struct Command {
    pub action: Action,
    pub reply: oneshot::Sender<Result<Outcome, ActionError>>,
}

/// What one batch will write, gathered before the transaction.
#[derive(Default)]
struct Pending {
    dirty: Vec<u64>,
    /// What the lead rules decided, per unit, in order.
    effects: Vec<(u64, Effect)>,
    /// Units whose battery rule must be evaluated, with the time of the
    /// latest event that may decide it.
    battery: BTreeMap<u64, u64>,
    events: HashMap<u64, Vec<VehicleEvent>>,
    samples: Vec<(u64, vehicle::BatterySample)>,
    counters: HashMap<String, u64>,
    replies: Vec<(Replier, Vec<u8>)>,
    /// Units heard in a HELLO: their VIN attaches to the registered vehicle.
    hellos: Vec<u64>,
    new_units: u64,
    messages: u64,
    duplicates: u64,
    rejected: u64,
}

impl Pending {
    fn count(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_owned()).or_default() += n;
    }

    fn reject(&mut self, reason: &str) {
        self.rejected += 1;
        self.count(counters::REJECTED, 1);
        self.count(&format!("{}{reason}", counters::REJECTED_PREFIX), 1);
    }
}

/// The ingest state: owned by one loop, handed to a blocking thread for
/// each batch.
pub struct Ingest {
    store: Arc<Store>,
    clock: SharedClock,
    totals: Arc<Totals>,
    units: HashMap<u64, Unit>,
    /// The appliance's own message counter (PROTOCOL.md section 4).
    next_seq: u16,
    /// Last time a rejected payload was logged, per device.
    last_reject_log: HashMap<u64, u64>,
    /// Last REQUEST_STATUS sent to a unit not yet heard in a HELLO.
    last_status_request: HashMap<u64, u64>,
    last_tick_hour: u64,
    options: IngestOptions,
    catalog: Catalog,
    labour_rate_cents: u64,
    /// The next lead id (ids are counted in the store with each commit).
    next_lead_id: u64,
}

/// Units kept in memory; beyond this the cache is dropped and reloads.
const MAX_CACHED_UNITS: usize = 200_000;

impl Ingest {
    pub fn new(
        store: Arc<Store>,
        clock: SharedClock,
        totals: Arc<Totals>,
        options: IngestOptions,
    ) -> Result<Ingest, StoreError> {
        // The built-in rows under what the importer sent: a new release's
        // defaults arrive, and imported rows still win.
        let catalog = catalog_in_use(&store)?;
        let labour_rate_cents = labour_rate_in_use(&store)?;
        let next_lead_id = store.counter("ids.lead")? + 1;
        Ok(Ingest {
            store,
            clock,
            totals,
            units: HashMap::new(),
            next_seq: 0,
            last_reject_log: HashMap::new(),
            last_status_request: HashMap::new(),
            last_tick_hour: 0,
            options,
            catalog,
            labour_rate_cents,
            next_lead_id,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Runs until shutdown; then commits and answers what is already
    /// queued, and returns.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<LinkEvent>,
        mut commands: mpsc::Receiver<Command>,
        tick: std::time::Duration,
        mut shutdown: Shutdown,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With no link configured (or every link gone) the channel closes;
        // actions and the tick still run until shutdown.
        let mut links_open = true;
        loop {
            let first = tokio::select! {
                ev = rx.recv(), if links_open => match ev {
                    Some(ev) => Some(ev),
                    None => {
                        links_open = false;
                        continue;
                    }
                },
                _ = shutdown.fired() => None,
                Some(cmd) = commands.recv() => {
                    let (me, result) = run_blocking(self, move |s| s.apply_action(cmd.action)).await;
                    self = me;
                    let _ = cmd.reply.send(result);
                    continue;
                }
                _ = ticker.tick() => {
                    self = run_blocking(self, |s| s.tick()).await.0;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            let (me, replies) = run_blocking(self, move |s| s.apply_batch(batch)).await;
            self = me;
            send_replies(replies);
        }
        // Stop: whatever the links already queued is committed and answered.
        rx.close();
        let mut rest = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            rest.push(ev);
        }
        while !rest.is_empty() {
            let chunk: Vec<LinkEvent> = rest.drain(..rest.len().min(MAX_BATCH)).collect();
            let (me, replies) = run_blocking(self, move |s| s.apply_batch(chunk)).await;
            self = me;
            send_replies(replies);
        }
        tracing::info!("ingest stopped");
    }

    /// Decodes, dedupes and applies `batch`, commits it in one transaction,
    /// and returns the answers to send. On a failed commit it returns none:
    /// nothing of the batch was kept, so nothing may be acknowledged.
    pub fn apply_batch(&mut self, batch: Vec<LinkEvent>) -> Vec<(Replier, Vec<u8>)> {
        let now = self.clock.now_ms();
        let size = batch.len() as u64;
        let mut p = Pending::default();
        for ev in batch {
            match ev {
                LinkEvent::Rejected { reason, .. } => p.reject(reason.0),
                LinkEvent::Payload {
                    payload,
                    received_ms,
                    reply,
                    ..
                } => self.accept(&payload, received_ms, reply, now, &mut p),
            }
        }
        match self.commit(&mut p) {
            Ok(()) => {
                let t = &self.totals;
                t.vehicles.fetch_add(p.new_units, Ordering::Relaxed);
                t.messages.fetch_add(p.messages, Ordering::Relaxed);
                t.duplicates.fetch_add(p.duplicates, Ordering::Relaxed);
                t.rejected.fetch_add(p.rejected, Ordering::Relaxed);
                t.batches.fetch_add(1, Ordering::Relaxed);
                t.batched_events.fetch_add(size, Ordering::Relaxed);
                t.last_commit_ms.store(now, Ordering::Relaxed);
                t.set_store_error(None);
                if self.units.len() > MAX_CACHED_UNITS {
                    self.units.clear();
                }
                p.replies
            }
            Err(e) => {
                tracing::error!(error = %e, events = size, "commit failed; nothing of the batch is acknowledged");
                self.totals.set_store_error(Some(e.to_string()));
                // The cache holds the uncommitted changes: forget them.
                for id in &p.dirty {
                    self.units.remove(id);
                }
                Vec::new()
            }
        }
    }

    fn accept(
        &mut self,
        payload: &[u8],
        received_ms: u64,
        reply: Replier,
        now: u64,
        p: &mut Pending,
    ) {
        // A payload from a link is at least a header long (the deframer and
        // the CAN link refuse shorter bodies), but check rather than trust.
        let Some(header) = Header::parse(payload) else {
            p.reject("truncated");
            return;
        };
        let msg = match Message::decode(payload) {
            Ok(m) if m.body.is_uplink() => m,
            Ok(_) => {
                self.log_rejected(&header, "a downlink kind sent by a dongle", now);
                p.reject("downlink_kind");
                p.replies.push((reply, self.ack(&header, now)));
                return;
            }
            Err(e) => {
                self.log_rejected(&header, &e.to_string(), now);
                p.reject(e.reason());
                // PROTOCOL.md 4: ACKed with its header's seq so the dongle moves on.
                p.replies.push((reply, self.ack(&header, now)));
                return;
            }
        };
        let crc = crc32c(payload);
        let unit = match self.unit(msg.device_id) {
            Ok(u) => u,
            Err(e) => {
                // Unreadable state: answer nothing, the dongle retries.
                tracing::error!(device = msg.device_id, error = %e, "cannot load unit state");
                self.totals.set_store_error(Some(e.to_string()));
                return;
            }
        };
        if let Some(first_crc) = unit.dedupe.find(msg.seq, msg.time_ms) {
            if first_crc != crc {
                tracing::warn!(
                    device = msg.device_id,
                    seq = msg.seq,
                    time_ms = msg.time_ms,
                    "copy with the same key but different bytes: treated as a duplicate, the first wins"
                );
            }
            p.duplicates += 1;
            p.count(counters::DUPLICATES, 1);
            p.replies.push((reply.clone(), self.ack(&header, now)));
            if matches!(msg.body, Body::Hello(_)) {
                // The first copy's TIME may have been lost with its ACK.
                p.replies.push((reply, self.time(msg.device_id, now)));
            }
            return;
        }
        let timing = Timing::judge(msg.time_ms, received_ms);
        let gate = self.gate_after(msg.device_id, &msg);
        let unit = self.units.get_mut(&msg.device_id).expect("loaded above");
        let vehicle = unit.vehicle.get_or_insert_with(|| {
            p.new_units += 1;
            *p.counters.entry(counters::VEHICLES.to_owned()).or_default() += 1;
            Vehicle::new(msg.device_id, timing.effective_ms, received_ms)
        });
        let applied = if gate == Gate::Open {
            let applied = vehicle::apply(vehicle, &msg, timing);
            if self.options.rules {
                let mut next = IdSeq {
                    next: self.next_lead_id,
                };
                let effects = unit.rules.on_message(&msg, timing.effective_ms, &mut next);
                self.next_lead_id = next.next;
                p.effects
                    .extend(effects.into_iter().map(|e| (msg.device_id, e)));
                if matches!(msg.body, Body::Heartbeat(_) | Body::IgnitionOn { .. }) {
                    let at = p.battery.entry(msg.device_id).or_default();
                    *at = (*at).max(timing.effective_ms);
                }
            }
            applied
        } else {
            // R-VEH-4: identity and last-seen only.
            vehicle::apply_identity(vehicle, &msg, timing);
            vehicle::Applied::default()
        };
        unit.dedupe.remember(msg.seq, msg.time_ms, crc);
        if !p.dirty.contains(&msg.device_id) {
            p.dirty.push(msg.device_id);
        }
        if !applied.events.is_empty() {
            p.events
                .entry(msg.device_id)
                .or_default()
                .extend(applied.events);
        }
        if let Some(b) = applied.battery {
            p.samples.push((msg.device_id, b));
        }
        p.messages += 1;
        p.count(counters::MESSAGES, 1);
        p.replies.push((reply.clone(), self.ack(&header, now)));
        if matches!(msg.body, Body::Hello(_)) {
            // PROTOCOL.md 4: every HELLO gets a TIME, after its ACK.
            p.replies
                .push((reply.clone(), self.time(msg.device_id, now)));
            p.hellos.push(msg.device_id);
        }
        // R-VEH-4: a unit not yet heard in a HELLO is asked for one, after its ACK.
        if gate == Gate::NoHello {
            let last = self.last_status_request.get(&msg.device_id).copied();
            if last.is_none_or(|t| now.saturating_sub(t) >= STATUS_REQUEST_INTERVAL_MS) {
                self.last_status_request.insert(msg.device_id, now);
                let ask = Message {
                    seq: self.bump_seq(),
                    device_id: msg.device_id,
                    time_ms: now,
                    body: Body::RequestStatus,
                };
                p.replies.push((reply, ask.encode()));
            }
        }
    }

    fn unit(&mut self, device_id: u64) -> Result<&mut Unit, StoreError> {
        if !self.units.contains_key(&device_id) {
            let vehicle = self.store.vehicle(device_id)?;
            let consent_vin = vehicle.as_ref().and_then(|v| v.vin);
            let consent = match &consent_vin {
                Some(vin) => self.store.consent(vin)?.map(|c| c.state),
                None => None,
            };
            let unit = Unit {
                vehicle,
                dedupe: self.store.dedupe(device_id)?,
                rules: self.store.rules(device_id)?,
                consent,
                consent_vin,
            };
            self.units.insert(device_id, unit);
        }
        Ok(self.units.get_mut(&device_id).expect("inserted above"))
    }

    /// The unit's gate once `msg` is applied (a HELLO may name its VIN).
    fn gate_after(&mut self, device_id: u64, msg: &Message) -> Gate {
        let store = self.store.clone();
        let Some(unit) = self.units.get_mut(&device_id) else {
            return Gate::NoHello;
        };
        let (hello_seen, vin) = match &msg.body {
            Body::Hello(h) => (true, h.vin.or(unit.vehicle.as_ref().and_then(|v| v.vin))),
            _ => (
                unit.vehicle.as_ref().is_some_and(|v| v.hello_seen),
                unit.vehicle.as_ref().and_then(|v| v.vin),
            ),
        };
        if vin != unit.consent_vin {
            unit.consent_vin = vin;
            unit.consent = vin
                .and_then(|v| store.consent(&v).ok().flatten())
                .map(|c| c.state);
        }
        let brand = vin.as_ref().and_then(|v| self.catalog.brand_of(v));
        consent::gate(
            hello_seen,
            vin.as_ref(),
            brand,
            &self.options.consent_brands,
            unit.consent,
        )
    }

    /// Whether a unit is fully active, for display.
    pub fn gate_of(&self, v: &Vehicle) -> Gate {
        let consent = v
            .vin
            .and_then(|vin| self.store.consent(&vin).ok().flatten())
            .map(|c| c.state);
        let brand = v.vin.as_ref().and_then(|vin| self.catalog.brand_of(vin));
        consent::gate(
            v.hello_seen,
            v.vin.as_ref(),
            brand,
            &self.options.consent_brands,
            consent,
        )
    }

    fn commit(&mut self, p: &mut Pending) -> Result<(), StoreError> {
        if p.dirty.is_empty() && p.counters.is_empty() && p.effects.is_empty() {
            return Ok(());
        }
        let units = &mut self.units;
        let now = self.clock.now_ms();
        let cx = LeadContext {
            catalog: &self.catalog,
            labour_rate_cents: self.labour_rate_cents,
            now_ms: now,
        };
        let mut next = IdSeq {
            next: self.next_lead_id,
        };
        let result = self.store.write(|tx| {
            for (id, b) in &p.samples {
                tx.add_battery_sample(*id, b.hour, b.engine, b.mv)?;
            }
            // R-LEAD-BATT after this batch's samples are in: evaluated with
            // the appliance clock, dated by the event that decided it.
            for (id, at) in &p.battery {
                let unit = units.get_mut(id).expect("dirty units are cached");
                let window = tx.battery_window(*id, battery_window_start(now))?;
                let effects = unit.rules.on_battery(window, now, *at, &mut next);
                p.effects.extend(effects.into_iter().map(|e| (*id, e)));
            }
            for (id, effect) in &p.effects {
                let unit = units.get(id).expect("dirty units are cached");
                if let Some(v) = &unit.vehicle {
                    leads::materialize(tx, &cx, v, effect)?;
                }
            }
            for id in &p.dirty {
                let unit = units.get_mut(id).expect("dirty units are cached");
                let Some(v) = unit.vehicle.as_mut() else {
                    continue;
                };
                for e in p.events.get(id).into_iter().flatten() {
                    tx.append_event(v, e)?;
                }
                tx.put_vehicle(v)?;
                tx.put_dedupe(*id, &unit.dedupe)?;
                if self.options.rules {
                    tx.put_rules(*id, &unit.rules)?;
                }
            }
            // R-VEH-1: a dongle heard for a known VIN attaches to it.
            for id in &p.hellos {
                if let Some(vin) = units.get(id).and_then(|u| u.vehicle.as_ref()?.vin) {
                    tx.attach_unit(&vin, *id, now)?;
                }
            }
            for (name, n) in &p.counters {
                tx.add_counter(name, *n as i64)?;
            }
            tx.set_counter("ids.lead", next.next - 1)?;
            Ok(())
        });
        match &result {
            Ok(()) => self.next_lead_id = next.next,
            Err(_) => self.next_lead_id = self.store.counter("ids.lead").unwrap_or(0) + 1,
        }
        result
    }

    fn ack(&mut self, header: &Header, now: u64) -> Vec<u8> {
        Message {
            seq: self.bump_seq(),
            device_id: header.device_id,
            time_ms: now,
            body: Body::Ack {
                acked_seq: header.seq,
            },
        }
        .encode()
    }

    fn time(&mut self, device_id: u64, now: u64) -> Vec<u8> {
        Message {
            seq: self.bump_seq(),
            device_id,
            time_ms: now,
            body: Body::Time,
        }
        .encode()
    }

    fn bump_seq(&mut self) -> u16 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    /// PROTOCOL.md 2: rejected payloads are logged at most once a minute per device.
    fn log_rejected(&mut self, h: &Header, why: &str, now: u64) {
        let last = self.last_reject_log.get(&h.device_id).copied();
        if last.is_some_and(|t| now.saturating_sub(t) < 60_000) {
            return;
        }
        if self.last_reject_log.len() > 10_000 {
            self.last_reject_log.clear();
        }
        self.last_reject_log.insert(h.device_id, now);
        tracing::warn!(
            device = h.device_id,
            seq = h.seq,
            kind = h.kind,
            "payload rejected (ACKed, not applied): {why}"
        );
    }
}

/// The first whole hour of the trailing 7-day battery window: aggregates
/// are hourly, so the window holds the hours that start at or after
/// `now - 7 days` (docs/leads.md).
pub fn battery_window_start(now_ms: u64) -> u64 {
    now_ms.saturating_sub(BATTERY_WINDOW_MS).div_ceil(HOUR_MS)
}

impl Ingest {
    /// The hourly work, a page of vehicles at a time: battery aggregates
    /// past retention are dropped, and the time-driven rules (R-LEAD-TIME)
    /// run: the 7-day battery window slides with no new data. Aggregates
    /// are hourly, so nothing can change within an hour; each hour every
    /// unit heard in the window, or holding a low-battery lead, is judged
    /// again.
    pub fn tick(&mut self) {
        let now = self.clock.now_ms();
        let hour = now / HOUR_MS;
        if hour == self.last_tick_hour {
            return;
        }
        let from = battery_window_start(now);
        let prune_before = now.saturating_sub(BATTERY_RETENTION_MS) / HOUR_MS;
        let mut after = None;
        loop {
            let page = match self.store.vehicles(after, 500) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "tick: cannot list vehicles");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.device_id);
            // Only write (and fsync) when there is something to drop.
            let stale: Vec<u64> = page
                .iter()
                .filter(|v| {
                    self.store
                        .battery_hours(v.device_id, 0, prune_before.saturating_sub(1))
                        .is_ok_and(|h| !h.is_empty())
                })
                .map(|v| v.device_id)
                .collect();
            let pruned = if stale.is_empty() {
                Ok(())
            } else {
                self.store.write(|tx| {
                    for id in &stale {
                        tx.prune_battery(*id, prune_before)?;
                    }
                    Ok(())
                })
            };
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "tick: cannot prune battery aggregates");
                return;
            }
            if !self.options.rules {
                continue;
            }
            let mut candidates = Vec::new();
            for v in &page {
                if self.gate_of(v) != Gate::Open {
                    continue;
                }
                let Ok(unit) = self.unit(v.device_id) else {
                    return;
                };
                let recent = v.last_seen_ms.saturating_add(BATTERY_WINDOW_MS + HOUR_MS) >= now;
                if recent
                    || unit
                        .rules
                        .open
                        .contains_key(&crate::domain::lead::LOW_BATTERY)
                {
                    candidates.push(v.device_id);
                }
            }
            if let Err(e) = self.judge_battery(&candidates, from, now) {
                tracing::error!(error = %e, "tick: commit failed; retrying next tick");
                return;
            }
        }
        self.last_tick_hour = hour;
    }

    /// Judges the battery window of `devices` at `now`; writes only the
    /// units whose leads or rule state changed (most ticks write nothing).
    fn judge_battery(
        &mut self,
        devices: &[u64],
        from_hour: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut next = IdSeq {
            next: self.next_lead_id,
        };
        let mut changed: Vec<(u64, RuleState, Vec<Effect>)> = Vec::new();
        for d in devices {
            let before = &self.units[d].rules;
            let mut rules = before.clone();
            // Ingest is the only writer and every batch is committed: the
            // store's aggregates are current.
            let window = self.store.battery_window(*d, from_hour)?;
            let effects = rules.on_battery(window, now, now, &mut next);
            if !effects.is_empty() || rules != *before {
                changed.push((*d, rules, effects));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let cx = LeadContext {
            catalog: &self.catalog,
            labour_rate_cents: self.labour_rate_cents,
            now_ms: now,
        };
        let units = &self.units;
        let result = self.store.write(|tx| {
            for (id, rules, effects) in &changed {
                if let Some(v) = units[id].vehicle.as_ref() {
                    for e in effects {
                        leads::materialize(tx, &cx, v, e)?;
                    }
                }
                tx.put_rules(*id, rules)?;
            }
            tx.set_counter("ids.lead", next.next - 1)
        });
        match result {
            Ok(()) => {
                self.next_lead_id = next.next;
                for (id, rules, _) in changed {
                    if let Some(u) = self.units.get_mut(&id) {
                        u.rules = rules;
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Carries out a staff, CLI or sync action in its own transaction.
    pub fn apply_action(&mut self, action: Action) -> Result<Outcome, ActionError> {
        let now = self.clock.now_ms();
        match action {
            Action::Lead { action, by } => {
                let device = match &action {
                    LeadAction::ReportUserLamp { device_id, .. } => Some(*device_id),
                    _ => None,
                };
                let result = self.lead_action(action, &by, now);
                if result.is_err() {
                    // Whatever the failed transaction touched is reloaded.
                    if let Some(d) = device {
                        self.units.remove(&d);
                    }
                }
                result
            }
            Action::SetConsent { vin, state, by } => {
                let vin = Vin::parse(&vin).ok_or_else(|| {
                    ActionError::Invalid(format!("{vin:?} is not a 17-character VIN"))
                })?;
                let rec = self.store.write(|tx| {
                    let version = tx.consent(&vin)?.map_or(1, |c| c.version + 1);
                    let rec = ConsentRecord {
                        vin,
                        state,
                        updated_ms: now,
                        by: by.clone(),
                        version,
                    };
                    tx.put_consent(&rec, by != "sync")?;
                    Ok(rec)
                })?;
                for u in self.units.values_mut() {
                    if u.consent_vin == Some(vin) {
                        u.consent = Some(state);
                    }
                }
                Ok(Outcome::Consent { consent: rec })
            }
            Action::ImportCatalog { csv } => {
                let update =
                    Catalog::import_csv(csv.as_bytes(), &self.catalog).map_err(rows_error)?;
                // The store keeps only what was imported, so the built-in
                // rows of a later release still show through.
                let mut imported = self
                    .store
                    .setting::<Catalog>(CATALOG_SETTING)?
                    .unwrap_or_default();
                imported.merge(update.clone());
                self.store
                    .write(|tx| tx.put_setting(CATALOG_SETTING, &imported))?;
                self.catalog.merge(update);
                let rows = self.catalog.rows();
                Ok(Outcome::Catalog { rows })
            }
            Action::SetLabourRate { cents_per_hour } => {
                if cents_per_hour == 0 || cents_per_hour > 1_000_000 {
                    return Err(ActionError::Invalid(format!(
                        "a labour rate of {cents_per_hour} cents an hour is outside 1..=1000000"
                    )));
                }
                self.store.write(|tx| {
                    tx.put_setting(LABOUR_RATE_SETTING, &LabourRate { cents_per_hour })
                })?;
                self.labour_rate_cents = cents_per_hour;
                Ok(Outcome::LabourRate { cents_per_hour })
            }
            Action::ImportCustomers { csv, dry_run } => {
                let report = crate::customers::import(&self.store, &csv, dry_run, now)?;
                Ok(Outcome::CustomerImport { report })
            }
            Action::Customers {
                action,
                invitation_expiry_days,
            } => {
                let rules = crate::domain::customer::InvitationRules {
                    expiry_days: invitation_expiry_days,
                };
                let outcome = crate::customers::apply(&self.store, action, rules, now)?;
                Ok(Outcome::Customers { outcome })
            }
            Action::RequestStatusAll => {
                let ask = Message {
                    seq: self.bump_seq(),
                    device_id: crate::link::message::BROADCAST,
                    time_ms: now,
                    body: Body::RequestStatus,
                };
                Ok(Outcome::Downlink {
                    payload: ask.encode(),
                })
            }
        }
    }

    fn lead_action(
        &mut self,
        action: LeadAction,
        by: &str,
        now: u64,
    ) -> Result<Outcome, ActionError> {
        if let LeadAction::ReportUserLamp {
            device_id,
            lamp,
            note,
        } = action
        {
            if lamp == 0 {
                return Err(ActionError::Invalid("lamp ids start at 1".into()));
            }
            let unit = self.unit(device_id)?;
            let Some(vehicle) = unit.vehicle.clone() else {
                return Err(ActionError::NotFound(format!(
                    "no vehicle with unit {device_id}"
                )));
            };
            let mut rules = unit.rules.clone();
            let mut next = IdSeq {
                next: self.next_lead_id,
            };
            let effects = rules.user_lamp(lamp, now, &mut next);
            let Some(Effect::Opened { id, .. }) = effects.first().cloned() else {
                let open = rules.open.get(&LeadKey {
                    ty: crate::domain::lead::LeadType::UserLamp,
                    subject: crate::domain::lead::Subject::Lamp(lamp),
                });
                return Err(ActionError::Conflict(format!(
                    "lead {} is already open for this lamp on this vehicle",
                    open.map_or(0, |o| o.id)
                )));
            };
            let cx = LeadContext {
                catalog: &self.catalog,
                labour_rate_cents: self.labour_rate_cents,
                now_ms: now,
            };
            let lead = self.store.write(|tx| {
                for e in &effects {
                    leads::materialize(tx, &cx, &vehicle, e)?;
                }
                if let Some(text) = note.clone().filter(|t| !t.trim().is_empty()) {
                    leads::note(tx, id, by, text, now)?;
                }
                tx.put_rules(device_id, &rules)?;
                tx.set_counter("ids.lead", next.next - 1)?;
                tx.lead(id)?
                    .ok_or_else(|| StoreError::Corrupt("new lead vanished".into()))
            });
            return match lead {
                Ok(lead) => {
                    self.next_lead_id = next.next;
                    if let Some(u) = self.units.get_mut(&device_id) {
                        u.rules = rules;
                    }
                    Ok(Outcome::Lead {
                        lead: Box::new(lead),
                    })
                }
                Err(e) => Err(e.into()),
            };
        }
        let id = match &action {
            LeadAction::Assign { lead_id, .. }
            | LeadAction::Close { lead_id, .. }
            | LeadAction::Reopen { lead_id }
            | LeadAction::Note { lead_id, .. }
            | LeadAction::Message { lead_id, .. } => *lead_id,
            LeadAction::ReportUserLamp { .. } => unreachable!("handled above"),
        };
        let lead = self
            .store
            .lead(id)?
            .ok_or_else(|| ActionError::NotFound(format!("no lead {id}")))?;
        let device = lead.device_id;
        let mut rules = self.unit(device)?.rules.clone();
        let outcome = match action {
            LeadAction::Assign { user, .. } => {
                let user = user.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
                let lead = self
                    .store
                    .write(|tx| leads::assign(tx, id, by, user, now))?;
                Outcome::Lead {
                    lead: Box::new(lead),
                }
            }
            LeadAction::Note { text, .. } => {
                if text.trim().is_empty() {
                    return Err(ActionError::Invalid("a note needs some text".into()));
                }
                let lead = self.store.write(|tx| leads::note(tx, id, by, text, now))?;
                Outcome::Lead {
                    lead: Box::new(lead),
                }
            }
            LeadAction::Message { text, .. } => {
                let message = self
                    .store
                    .write(|tx| leads::message(tx, id, by, text, now))?;
                Outcome::Message { message }
            }
            LeadAction::Close { note, customer, .. } => {
                if lead.status == LeadStatus::Closed {
                    return Err(ActionError::Conflict(format!(
                        "lead {id} is already closed"
                    )));
                }
                if rules.open.get(&lead.key).is_some_and(|o| o.id == id) {
                    rules.closed_by_hand(&lead.key);
                }
                let reason = if customer {
                    crate::domain::lead::CloseReason::Customer
                } else {
                    crate::domain::lead::CloseReason::Manual
                };
                let note = note.filter(|n| !n.trim().is_empty());
                let lead = self.store.write(|tx| {
                    let lead = leads::close_lead(tx, id, now, reason, Some(by), note)?;
                    tx.put_rules(device, &rules)?;
                    Ok(lead)
                })?;
                self.units.get_mut(&device).expect("loaded above").rules = rules;
                Outcome::Lead {
                    lead: Box::new(lead),
                }
            }
            LeadAction::Reopen { .. } => {
                if lead.status == LeadStatus::Open {
                    return Err(ActionError::Conflict(format!("lead {id} is already open")));
                }
                rules.reopened(lead.key, id).map_err(|other| {
                    ActionError::Conflict(format!(
                        "lead {other} is open for the same vehicle, type and subject: close it before reopening lead {id}"
                    ))
                })?;
                let lead = self.store.write(|tx| {
                    let lead = leads::reopen(tx, id, by, now)?;
                    tx.put_rules(device, &rules)?;
                    Ok(lead)
                })?;
                self.units.get_mut(&device).expect("loaded above").rules = rules;
                Outcome::Lead {
                    lead: Box::new(lead),
                }
            }
            LeadAction::ReportUserLamp { .. } => unreachable!("handled above"),
        };
        Ok(outcome)
    }
}

fn rows_error(rows: Vec<crate::domain::catalog::RowError>) -> ActionError {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    ActionError::Invalid(format!(
        "the catalog file was not imported (nothing changed):\n{}",
        text.join("\n")
    ))
}

/// Runs `f` on the ingest state on a blocking thread (store commits fsync),
/// handing the state back.
async fn run_blocking<R: Send + 'static>(
    mut ingest: Ingest,
    f: impl FnOnce(&mut Ingest) -> R + Send + 'static,
) -> (Ingest, R) {
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut ingest);
        (ingest, r)
    })
    .await
    {
        Ok(out) => out,
        // A panic in the batch is a bug; let it take the appliance down so
        // systemd restarts it, rather than run on with a lost state.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn send_replies(replies: Vec<(Replier, Vec<u8>)>) {
    for (reply, payload) in replies {
        reply.send(payload);
    }
}
