//! SPEC.md "Leads (seed 001)" end to end, and exactly: a seeded lot of 200
//! vehicles lives 90 simulated days through the real ingest (a redb store
//! in a tempdir, a fake clock), and every stored lead must equal, field for
//! field, the ground truth worked out from the spec in `common/ground.rs`.
//! Copies of messages already taken must change nothing but the duplicate
//! count (PROTOCOL.md 4).
//!
//! Run it with `cargo test --test lead_ground_truth -- --nocapture` to see
//! its figures (messages, leads, time taken); set `LEAD_GROUND_SEED=<n>` to
//! live another lot (every seed must pass).

#[path = "common/ground.rs"]
mod ground;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use forecourt::clock::{Clock, FakeClock, SharedClock};
use forecourt::domain::lead::{CloseReason, DtcClass, Lead, LeadStatus, LeadType};
use forecourt::ingest::{Ingest, IngestOptions, Totals, TotalsSnapshot};
use forecourt::link::message::{Body, Header, Message};
use forecourt::link::{LinkEvent, Outbound, Replier};
use forecourt::store::leads::LeadFilter;
use forecourt::store::{EngineKind, Store, DEDUPE_WINDOW};
use tokio::sync::mpsc;

use ground::{batch_clock, Lot, Status, Truth, DAYS, T0, VEHICLES};

const SEED: u64 = 0x5EED_0001;
/// A day fed twice: all of it again after its commit, as if every ACK of
/// that day had been lost.
const REPLAYED_DAY: usize = 30;
/// A day whose every payload arrives twice in one batch: the copy comes
/// while the first is still being committed.
const DOUBLED_DAY: usize = 61;

/// The lot to live: `SEED`, or `LEAD_GROUND_SEED` to try another.
fn seed() -> u64 {
    std::env::var("LEAD_GROUND_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

/// The appliance's ingest side, driven by hand one batch at a time.
struct Appliance {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: FakeClock,
    totals: Arc<Totals>,
    ingest: Ingest,
    reply: Replier,
    out: mpsc::Receiver<Outbound>,
}

impl Appliance {
    /// `replies`: room for the answers of the largest batch.
    fn new(replies: usize) -> Appliance {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open(dir.path(), EngineKind::Redb).expect("a new redb store"));
        let clock = FakeClock::new(T0);
        let totals = Arc::new(Totals::load(&store).expect("totals of a new store"));
        let shared: SharedClock = Arc::new(clock.clone());
        // The defaults: Volkswagen needs consent (R-VEH-4), the rules run.
        let ingest = Ingest::new(
            store.clone(),
            shared,
            totals.clone(),
            IngestOptions::default(),
        )
        .expect("ingest");
        let (tx, out) = mpsc::channel(replies);
        Appliance {
            _dir: dir,
            store,
            clock,
            totals,
            ingest,
            reply: Replier { tx, addr: 0 },
            out,
        }
    }

    /// Commits one batch, received now; returns how many ACKs came back.
    fn feed(&mut self, payloads: Vec<Vec<u8>>) -> usize {
        let now = self.clock.now_ms();
        let batch = payloads
            .into_iter()
            .map(|payload| LinkEvent::Payload {
                link: 0,
                payload,
                received_ms: now,
                reply: self.reply.clone(),
            })
            .collect();
        for (reply, payload) in self.ingest.apply_batch(batch) {
            assert!(
                reply.send(payload),
                "the reply queue holds a whole batch's answers"
            );
        }
        let mut acks = 0;
        while let Ok(out) = self.out.try_recv() {
            if matches!(
                Message::decode(&out.payload).map(|m| m.body),
                Ok(Body::Ack { .. })
            ) {
                acks += 1;
            }
        }
        acks
    }

    /// Every stored lead, read page by page as the UI does.
    fn leads(&self) -> Vec<Lead> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .leads(&LeadFilter::default(), after, 100)
                .expect("a page of leads");
            all.extend(page.leads);
            match page.next {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }
}

/// A replayed day must fit every unit's dedupe window, as the copies a
/// stop-and-wait dongle can send always do (PROTOCOL.md 4); more would be
/// new messages to the appliance, and this test would prove nothing.
fn assert_fits_dedupe_windows(day: usize, payloads: &[Vec<u8>]) {
    let mut per_unit: BTreeMap<u64, usize> = BTreeMap::new();
    for p in payloads {
        let header = Header::parse(p).expect("a payload has a header");
        *per_unit.entry(header.device_id).or_default() += 1;
    }
    let most = per_unit.values().copied().max().unwrap_or(0);
    assert!(
        most <= DEDUPE_WINDOW,
        "day {day}: a unit sent {most} messages, more than the dedupe window"
    );
}

fn as_truth(l: &Lead) -> Truth {
    Truth {
        device_id: l.device_id,
        ty: l.key.ty,
        subject: l.key.subject,
        opened_at_ms: l.opened_at_ms,
        status: match l.status {
            LeadStatus::Open => Status::Open,
            LeadStatus::Closed => Status::Closed,
        },
        closed_at_ms: l.closed_at_ms,
        close_reason: l.close_reason,
        class: l.class,
    }
}

fn counts(leads: &[Truth]) -> BTreeMap<&Truth, usize> {
    let mut m = BTreeMap::new();
    for t in leads {
        *m.entry(t).or_default() += 1;
    }
    m
}

/// Fails with the difference, unit by unit, next to what that unit lived.
fn assert_same_leads(lot: &Lot, expected: &[Truth], stored: &[Truth]) {
    let (want, got) = (counts(expected), counts(stored));
    let short = |a: &BTreeMap<&Truth, usize>, b: &BTreeMap<&Truth, usize>| -> Vec<Truth> {
        a.iter()
            .filter(|(t, n)| b.get(*t).copied().unwrap_or(0) < **n)
            .map(|(t, _)| (*t).clone())
            .collect()
    };
    let (missing, extra) = (short(&want, &got), short(&got, &want));
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    let units: BTreeSet<u64> = missing.iter().chain(&extra).map(|t| t.device_id).collect();
    let mut report = format!(
        "stored leads differ from the ground truth (seed {:#x}): {} expected but not stored, {} stored but not expected\n", seed(),
        missing.len(),
        extra.len()
    );
    for unit in units {
        let v = lot.vehicles.iter().find(|v| v.device_id == unit);
        let vin = v
            .and_then(|v| v.vin)
            .map_or("unknown VIN".to_owned(), |vin| vin.to_string());
        report += &format!("\nunit {unit} ({vin}) lived:\n");
        for e in v.map(|v| v.episodes.as_slice()).unwrap_or_default() {
            report += &format!("    {e}\n");
        }
        for t in missing.iter().filter(|t| t.device_id == unit) {
            report += &format!("  - expected: {t}\n");
        }
        for t in extra.iter().filter(|t| t.device_id == unit) {
            report += &format!("  + stored:   {t}\n");
        }
    }
    panic!("{report}");
}

#[test]
fn r_lead_every_lead_of_200_vehicles_over_90_days_is_the_one_the_spec_predicts() {
    // Pure logic and the store, fully covered natively; under qemu-user it
    // would take minutes of CI for nothing the native run does not prove.
    if std::env::var_os("FORECOURT_QEMU_USER").is_some() {
        eprintln!("skipped under qemu-user: the native run covers it (docs/ci.md)");
        return;
    }
    let started = Instant::now();
    let lot = Lot::generate(seed());
    let expected = lot.ground_truth();
    let days = lot.payloads_by_day();
    let unique: usize = days.iter().map(Vec::len).sum();
    let generated = started.elapsed();

    // The schedule exercises every rule, so this test can fail for each.
    let reasons: BTreeSet<Option<CloseReason>> = expected.iter().map(|t| t.close_reason).collect();
    for r in [
        None,
        Some(CloseReason::EngineRun15Min),
        Some(CloseReason::FourCleanStarts),
        Some(CloseReason::BatteryRecovered),
        Some(CloseReason::PowerRestored),
        Some(CloseReason::CodeCleared),
    ] {
        assert!(reasons.contains(&r), "the lot has no lead ending {r:?}");
    }
    let classes: BTreeSet<Option<DtcClass>> = expected.iter().map(|t| t.class).collect();
    for c in [DtcClass::Permanent, DtcClass::Sporadic, DtcClass::Potential] {
        assert!(
            classes.contains(&Some(c)),
            "the lot has no {c:?} error code"
        );
    }
    // R-LEAD-LAMP (a): "a HEARTBEAT or IGNITION_OFF of that run" closes it.
    let closing: BTreeSet<&str> = expected
        .iter()
        .filter(|t| t.close_reason == Some(CloseReason::EngineRun15Min))
        .filter_map(|t| {
            let v = lot.vehicles.iter().find(|v| v.device_id == t.device_id)?;
            v.sent
                .iter()
                .find(|m| Some(m.time_ms) == t.closed_at_ms)
                .map(|m| m.body.name())
        })
        .collect();
    assert_eq!(
        closing,
        BTreeSet::from(["HEARTBEAT", "IGNITION_OFF"]),
        "clean runs close on both kinds"
    );

    let largest = days.iter().map(Vec::len).max().unwrap_or(0);
    let mut app = Appliance::new(4 * largest + 16);
    let ingest_started = Instant::now();
    let mut copies = 0;
    for (day, payloads) in days.iter().enumerate() {
        app.clock.set(batch_clock(day as u64));
        let batch: Vec<Vec<u8>> = if day == DOUBLED_DAY {
            payloads
                .iter()
                .flat_map(|p| [p.clone(), p.clone()])
                .collect()
        } else {
            payloads.clone()
        };
        copies += batch.len() - payloads.len();
        let sent = batch.len();
        // PROTOCOL.md 4: every payload is ACKed, a copy too.
        assert_eq!(app.feed(batch), sent, "day {day}: one ACK per payload");
        if day == REPLAYED_DAY {
            assert_fits_dedupe_windows(day, payloads);
            assert_eq!(
                app.feed(payloads.clone()),
                payloads.len(),
                "day {day} replayed: ACKed again"
            );
            copies += payloads.len();
        }
        // R-LEAD-TIME: the periodic tick, once a simulated day (a tick
        // costs 12-18 ms in a debug build: hourly, over half a minute).
        app.ingest.tick();
    }
    let ingested = ingest_started.elapsed();

    let stored = app.leads();
    let actual: Vec<Truth> = stored.iter().map(as_truth).collect();
    assert_same_leads(&lot, &expected, &actual);

    // R-VEH-4 and ordinary life: no lead for a gated unit, or for a unit
    // with nothing wrong; a lead carries its unit's VIN.
    for v in &lot.vehicles {
        let theirs: Vec<&Lead> = stored
            .iter()
            .filter(|l| l.device_id == v.device_id)
            .collect();
        if v.gated || v.episodes.is_empty() {
            assert!(
                theirs.is_empty(),
                "unit {} should have no lead: {theirs:#?}",
                v.device_id
            );
        }
        assert!(
            theirs.iter().all(|l| l.vin == v.vin),
            "unit {}: the lead's VIN is the HELLO's",
            v.device_id
        );
    }
    let quiet = lot
        .vehicles
        .iter()
        .filter(|v| v.episodes.is_empty())
        .count();
    assert!(quiet >= 10, "only {quiet} ordinary vehicles");

    // Healthz totals: every unit, every message once, every copy counted
    // as a duplicate; the durable counters agree with the live ones.
    let totals = app.totals.snapshot();
    let want = TotalsSnapshot {
        vehicles: VEHICLES as u64,
        messages: unique as u64,
        duplicates: copies as u64,
        rejected: 0,
    };
    assert_eq!(totals, want);
    assert_eq!(
        Totals::load(&app.store).expect("durable totals").snapshot(),
        want
    );

    // Duplicates change nothing: the last day once more (within every
    // unit's dedupe window), and every lead is byte for byte the same,
    // history and version included.
    let last = days[DAYS as usize - 1].clone();
    assert_fits_dedupe_windows(DAYS as usize - 1, &last);
    let again = last.len();
    assert_eq!(app.feed(last), again, "the replayed day is ACKed again");
    assert_eq!(app.leads(), stored, "a replayed day changed a lead");
    let want = TotalsSnapshot {
        duplicates: (copies + again) as u64,
        ..want
    };
    assert_eq!(app.totals.snapshot(), want);

    let by_type = |leads: &[Truth], ty: LeadType| leads.iter().filter(|t| t.ty == ty).count();
    let kinds: Vec<String> = LeadType::ALL
        .iter()
        .map(|ty| format!("{} {}", by_type(&expected, *ty), ty.as_str()))
        .collect();
    eprintln!(
        "lead ground truth: {VEHICLES} units x {DAYS} days, {unique} messages + {} copies, {} leads ({}); \
         generated in {generated:.2?}, ingested in {ingested:.2?}, {:.2?} in all",
        copies + again,
        expected.len(),
        kinds.join(", "),
        started.elapsed()
    );
}
