//! The one loop that takes messages from every link, makes them exactly
//! once (PROTOCOL.md section 4), applies them, commits the effects of a
//! whole batch in one store transaction, and only then answers.
//!
//! Batches form by themselves: while one commit (an fsync) is in flight,
//! the next events queue in the bounded channel, and the loop takes all of
//! them at once. A commit that fails answers nothing; the dongles
//! retransmit and nothing acknowledged is ever lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::domain::vehicle::{self, Timing, Vehicle, VehicleEvent, HOUR_MS};
use crate::link::frame::crc32c;
use crate::link::message::{Body, Header, Message};
use crate::link::{LinkEvent, Replier};
use crate::shutdown::Shutdown;
use crate::store::{counters, DedupeWindow, Store, StoreError, BATTERY_RETENTION_MS};

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
        t.vehicles.store(store.counter(counters::VEHICLES)?, Ordering::Relaxed);
        t.messages.store(store.counter(counters::MESSAGES)?, Ordering::Relaxed);
        t.duplicates.store(store.counter(counters::DUPLICATES)?, Ordering::Relaxed);
        t.rejected.store(store.counter(counters::REJECTED)?, Ordering::Relaxed);
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
        self.store_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_store_error(&self, e: Option<String>) {
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// A unit's state as ingest keeps it between batches.
struct Unit {
    vehicle: Option<Vehicle>,
    dedupe: DedupeWindow,
}

/// What one batch will write, gathered before the transaction.
#[derive(Default)]
struct Pending {
    dirty: Vec<u64>,
    events: HashMap<u64, Vec<VehicleEvent>>,
    battery: Vec<(u64, vehicle::BatterySample)>,
    counters: HashMap<String, u64>,
    replies: Vec<(Replier, Vec<u8>)>,
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
    last_prune_hour: u64,
}

/// Units kept in memory; beyond this the cache is dropped and reloads.
const MAX_CACHED_UNITS: usize = 200_000;

impl Ingest {
    pub fn new(store: Arc<Store>, clock: SharedClock, totals: Arc<Totals>) -> Ingest {
        Ingest {
            store,
            clock,
            totals,
            units: HashMap::new(),
            next_seq: 0,
            last_reject_log: HashMap::new(),
            last_prune_hour: 0,
        }
    }

    /// Runs until shutdown; then commits and answers what is already
    /// queued, and returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<LinkEvent>, mut shutdown: Shutdown) {
        let mut maintenance = tokio::time::interval(std::time::Duration::from_secs(60));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                ev = rx.recv() => ev,
                _ = shutdown.fired() => None,
                _ = maintenance.tick() => {
                    self = run_blocking(self, |s| { s.maintain(); }).await.0;
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
                LinkEvent::Payload { payload, received_ms, reply, .. } => {
                    self.accept(&payload, received_ms, reply, now, &mut p)
                }
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

    fn accept(&mut self, payload: &[u8], received_ms: u64, reply: Replier, now: u64, p: &mut Pending) {
        // A payload from a link is at least a header long (the deframer and
        // the CAN link refuse shorter bodies), but check rather than trust.
        let Some(header) = Header::parse(payload) else {
            p.reject("truncated");
            return;
        };
        let msg = match Message::decode(payload) {
            Ok(m) if m.body.is_uplink() => m,
            Ok(m) => {
                self.log_rejected(&header, "a downlink kind sent by a dongle", now);
                let _ = m;
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
        let unit = self.units.get_mut(&msg.device_id).expect("loaded above");
        let vehicle = unit.vehicle.get_or_insert_with(|| {
            p.new_units += 1;
            *p.counters.entry(counters::VEHICLES.to_owned()).or_default() += 1;
            Vehicle::new(msg.device_id, timing.effective_ms, received_ms)
        });
        let applied = vehicle::apply(vehicle, &msg, timing);
        unit.dedupe.remember(msg.seq, msg.time_ms, crc);
        if !p.dirty.contains(&msg.device_id) {
            p.dirty.push(msg.device_id);
        }
        if !applied.events.is_empty() {
            p.events.entry(msg.device_id).or_default().extend(applied.events);
        }
        if let Some(b) = applied.battery {
            p.battery.push((msg.device_id, b));
        }
        p.messages += 1;
        p.count(counters::MESSAGES, 1);
        p.replies.push((reply.clone(), self.ack(&header, now)));
        if matches!(msg.body, Body::Hello(_)) {
            // PROTOCOL.md 4: every HELLO gets a TIME, after its ACK.
            p.replies.push((reply, self.time(msg.device_id, now)));
        }
    }

    fn unit(&mut self, device_id: u64) -> Result<&mut Unit, StoreError> {
        if !self.units.contains_key(&device_id) {
            let unit = Unit { vehicle: self.store.vehicle(device_id)?, dedupe: self.store.dedupe(device_id)? };
            self.units.insert(device_id, unit);
        }
        Ok(self.units.get_mut(&device_id).expect("inserted above"))
    }

    fn commit(&mut self, p: &mut Pending) -> Result<(), StoreError> {
        if p.dirty.is_empty() && p.counters.is_empty() {
            return Ok(());
        }
        let units = &mut self.units;
        self.store.write(|tx| {
            for id in &p.dirty {
                let unit = units.get_mut(id).expect("dirty units are cached");
                let Some(v) = unit.vehicle.as_mut() else { continue };
                for e in p.events.get(id).into_iter().flatten() {
                    tx.append_event(v, e)?;
                }
                tx.put_vehicle(v)?;
                tx.put_dedupe(*id, &unit.dedupe)?;
            }
            for (id, b) in &p.battery {
                tx.add_battery_sample(*id, b.hour, b.engine, b.mv)?;
            }
            for (name, n) in &p.counters {
                tx.add_counter(name, *n)?;
            }
            Ok(())
        })
    }

    fn ack(&mut self, header: &Header, now: u64) -> Vec<u8> {
        Message { seq: self.bump_seq(), device_id: header.device_id, time_ms: now, body: Body::Ack { acked_seq: header.seq } }
            .encode()
    }

    fn time(&mut self, device_id: u64, now: u64) -> Vec<u8> {
        Message { seq: self.bump_seq(), device_id, time_ms: now, body: Body::Time }.encode()
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
        tracing::warn!(device = h.device_id, seq = h.seq, kind = h.kind, "payload rejected (ACKed, not applied): {why}");
    }

    /// Hourly housekeeping: drops battery aggregates past retention.
    pub fn maintain(&mut self) {
        let now = self.clock.now_ms();
        let hour = now / HOUR_MS;
        if hour == self.last_prune_hour {
            return;
        }
        self.last_prune_hour = hour;
        let before = now.saturating_sub(BATTERY_RETENTION_MS) / HOUR_MS;
        let mut after = None;
        loop {
            let page = match self.store.vehicles(after, 500) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "housekeeping: cannot list vehicles");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.device_id);
            let ids: Vec<u64> = page.iter().map(|v| v.device_id).collect();
            if let Err(e) = self.store.write(|tx| {
                for id in &ids {
                    tx.prune_battery(*id, before)?;
                }
                Ok(())
            }) {
                tracing::warn!(error = %e, "housekeeping: cannot prune battery aggregates");
                return;
            }
        }
    }
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
