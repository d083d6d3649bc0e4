//! The whole simulated lot without its wire: every unit's vehicle and dongle,
//! the simulated timeline, the agenda and timers that move them, and the
//! dispatch of what the appliance sends (ACK, TIME, REQUEST_STATUS,
//! REQUEST_DTC). The IO loops in [`super::transport`] only move bytes and
//! read clocks; everything here is a function of its arguments, so it is
//! unit-tested with fake times.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dongle::{AckOutcome, Dongle};
use super::identity::Identity;
use super::scenario::{mix, noise, Profile, ECUS};
use super::stats::SimStats;
use super::vehicle::{Happening, Vehicle};
use crate::link::message::{Body, Dtc, DtcEntry, DtcReport, Engine, Heartbeat, Message, BROADCAST};

/// Longest the IO loop sleeps without looking at the clock again, so that a
/// clock that jumps (a test's fake clock, an NTP step) is noticed quickly.
pub const CLOCK_POLL_MS: u64 = 200;

/// The lot's timeline. It starts `backfill` before the clock's now and runs
/// `speed` times faster than the clock, but never ahead of it:
/// `sim = min(start + elapsed * speed, clock)`. So a backfilled lot replays
/// its history quickly, then lives in real time, and no device time (skewed
/// units apart) is ever in the appliance's future.
#[derive(Clone, Copy, Debug)]
pub struct SimTime {
    clock_start: u64,
    sim_start: u64,
    speed: f64,
    latest: u64,
}

impl SimTime {
    pub fn new(clock_now: u64, backfill_ms: u64, speed: f64) -> SimTime {
        let sim_start = clock_now.saturating_sub(backfill_ms);
        SimTime {
            clock_start: clock_now,
            sim_start,
            speed,
            latest: sim_start,
        }
    }

    /// Where the timeline begins.
    pub fn start(&self) -> u64 {
        self.sim_start
    }

    /// Simulated time when the clock reads `clock_now`. It never goes back:
    /// if the clock steps back, the timeline waits for it.
    pub fn at(&mut self, clock_now: u64) -> u64 {
        let elapsed = clock_now.saturating_sub(self.clock_start) as f64 * self.speed;
        let ahead = self
            .sim_start
            .saturating_add(elapsed.min(u64::MAX as f64) as u64);
        self.latest = self.latest.max(ahead.min(clock_now));
        self.latest
    }

    /// Roughly how many clock ms until the timeline reaches `target`.
    pub fn clock_ms_until(&self, sim_now: u64, clock_now: u64, target: u64) -> u64 {
        let gap = target.saturating_sub(sim_now);
        if sim_now < clock_now {
            (gap as f64 / self.speed).ceil() as u64
        } else {
            gap
        }
    }
}

/// Both times the lot runs on, read once per turn of the IO loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Now {
    /// Simulated time: what device clocks follow.
    pub sim: u64,
    /// Real ms since the loop started: what retransmission timers follow.
    pub real: u64,
    /// How far the timeline trails the appliance clock, to read its TIME.
    pub lag: u64,
}

/// A flood unit: no vehicle, just a realistic mix of messages, each made
/// the moment the previous one is ACKed.
pub(crate) struct Burst {
    remaining: usize,
    rng: StdRng,
    running_since: Option<u64>,
    odometer_km: u32,
    lamps: u32,
    codes: Vec<DtcEntry>,
    key: u64,
}

impl Burst {
    fn new(seed: u64, index: usize, messages: usize) -> Burst {
        let key = mix(seed, index as u64 + 0xF100D);
        let mut rng = StdRng::seed_from_u64(key);
        Burst {
            // The boot HELLO is the first of the unit's messages.
            remaining: messages.saturating_sub(1),
            odometer_km: rng.random_range(5_000..200_000),
            rng,
            running_since: None,
            lamps: 0,
            codes: Vec::new(),
            key,
        }
    }

    /// Mostly heartbeats, some lamps, fault codes and ignition changes.
    fn next_body(&mut self, now: u64) -> Body {
        match self.rng.random_range(0..100) {
            0..76 => Body::Heartbeat(self.heartbeat(now)),
            76..84 => {
                let lamp = [1u8, 8, 13, 6][self.rng.random_range(0..4)];
                let bit = 1 << (lamp - 1);
                self.lamps ^= bit;
                Body::Lamp {
                    lamp,
                    lit: self.lamps & bit != 0,
                }
            }
            84..90 => {
                self.codes = match self.rng.random_range(0..3) {
                    0 => Vec::new(),
                    1 => Dtc::parse("P0301")
                        .map(|dtc| vec![DtcEntry { dtc, status: 0x2F }])
                        .unwrap_or_default(),
                    _ => [("P0420", 0x28), ("P0442", 0x04)]
                        .iter()
                        .filter_map(|(c, s)| {
                            Some(DtcEntry {
                                dtc: Dtc::parse(c)?,
                                status: *s,
                            })
                        })
                        .collect(),
                };
                Body::DtcReport(DtcReport {
                    ecu: 0x07E0,
                    entries: self.codes.clone(),
                })
            }
            _ => match self.running_since.take() {
                Some(since) => {
                    let run_s = (now.saturating_sub(since) / 1000) as u32;
                    self.odometer_km += 1 + run_s / 60;
                    Body::IgnitionOff {
                        odometer_km: self.odometer_km,
                        run_s,
                    }
                }
                None => {
                    self.running_since = Some(now);
                    Body::IgnitionOn {
                        odometer_km: self.odometer_km,
                    }
                }
            },
        }
    }

    fn heartbeat(&self, now: u64) -> Heartbeat {
        let n = noise(self.key, now);
        match self.running_since {
            Some(since) => Heartbeat {
                engine: Engine::Running,
                run_s: (now.saturating_sub(since) / 1000) as u32,
                odometer_km: self.odometer_km,
                battery_mv: (14_200.0 + 150.0 * n) as u16,
                lamps: self.lamps,
            },
            None => Heartbeat {
                engine: Engine::Parked,
                run_s: 0,
                odometer_km: self.odometer_km,
                battery_mv: (12_650.0 + 100.0 * n) as u16,
                lamps: self.lamps,
            },
        }
    }

    fn reports_for(&self, ecu: u16) -> Vec<DtcReport> {
        let report = |e: u16| DtcReport {
            ecu: e,
            entries: if e == 0x07E0 {
                self.codes.clone()
            } else {
                Vec::new()
            },
        };
        if ecu == 0xFFFF {
            ECUS.iter().map(|&e| report(e)).collect()
        } else {
            vec![report(ecu)]
        }
    }
}

enum Source {
    Vehicle(Box<Vehicle>),
    Burst(Box<Burst>),
}

impl Source {
    fn heartbeat(&self, now: u64) -> Heartbeat {
        match self {
            Source::Vehicle(v) => v.heartbeat(now),
            Source::Burst(b) => b.heartbeat(now),
        }
    }

    fn reports_for(&self, ecu: u16) -> Vec<DtcReport> {
        match self {
            Source::Vehicle(v) => v.reports_for(ecu),
            Source::Burst(b) => b.reports_for(ecu),
        }
    }
}

struct Unit {
    source: Source,
    dongle: Dongle,
    /// CAN node address (0 on serial, where every unit shares the line).
    addr: u8,
}

pub(crate) struct Lot {
    units: Vec<Unit>,
    by_device: HashMap<u64, usize>,
    /// Next vehicle action per unit, in simulated time (one entry each).
    agenda: BinaryHeap<Reverse<(u64, usize)>>,
    /// Real-time wake-ups: retransmissions due, reserves running out.
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    /// Units that may have something to send, first come first served.
    ready: VecDeque<usize>,
    is_ready: Vec<bool>,
    retransmit_ms: u64,
    stats: Arc<SimStats>,
    scratch: Vec<(u64, Happening)>,
}

impl Lot {
    /// A lot of vehicles. `addrs[i]` is unit i's CAN node address.
    pub fn new(
        profiles: Vec<Profile>,
        addrs: &[u8],
        start: u64,
        retransmit_ms: u64,
        buffer: usize,
        stats: Arc<SimStats>,
    ) -> Lot {
        let units = profiles
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let id = &p.identity;
                let dongle = Dongle::new(
                    id.device_id,
                    id.vin,
                    id.firmware,
                    p.initial_seq,
                    p.skew_ms,
                    buffer,
                );
                Unit {
                    dongle,
                    source: Source::Vehicle(Box::new(Vehicle::new(p, start))),
                    addr: addrs.get(i).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut lot = Lot::with_units(units, retransmit_ms, stats);
        for u in 0..lot.units.len() {
            if let Source::Vehicle(v) = &lot.units[u].source {
                if let Some(at) = v.next_at() {
                    lot.agenda.push(Reverse((at, u)));
                }
            }
        }
        lot
    }

    /// A flood: `identities.len()` units, each sending `per_unit` messages
    /// (its boot HELLO first) as fast as stop and wait allows.
    pub fn flood(
        identities: Vec<Identity>,
        per_unit: usize,
        seed: u64,
        now: u64,
        retransmit_ms: u64,
        stats: Arc<SimStats>,
    ) -> Lot {
        let units = identities
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let burst = Burst::new(seed, i, per_unit);
                let first_seq = burst.key as u16;
                let mut dongle = Dongle::new(id.device_id, id.vin, id.firmware, first_seq, 0, 4);
                dongle.boot(now, None);
                Unit {
                    dongle,
                    source: Source::Burst(Box::new(burst)),
                    addr: 0,
                }
            })
            .collect();
        let mut lot = Lot::with_units(units, retransmit_ms, stats);
        for u in 0..lot.units.len() {
            lot.mark_ready(u);
        }
        lot
    }

    fn with_units(units: Vec<Unit>, retransmit_ms: u64, stats: Arc<SimStats>) -> Lot {
        let by_device = units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.dongle.device_id, i))
            .collect();
        let n = units.len();
        Lot {
            units,
            by_device,
            agenda: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            is_ready: vec![false; n],
            retransmit_ms,
            stats,
            scratch: Vec::new(),
        }
    }

    /// Runs `f` on unit `u`'s dongle, keeping the "waiting for an ACK" gauge right.
    fn with_dongle<R>(&mut self, u: usize, f: impl FnOnce(&mut Dongle) -> R) -> R {
        let d = &mut self.units[u].dongle;
        let before = d.is_waiting();
        let r = f(d);
        match (before, d.is_waiting()) {
            (false, true) => self.stats.unit_waits(),
            (true, false) => self.stats.unit_released(),
            _ => {}
        }
        r
    }

    fn mark_ready(&mut self, u: usize) {
        if !self.is_ready[u] {
            self.is_ready[u] = true;
            self.ready.push_back(u);
        }
    }

    /// Whether some unit may have something to put on the wire.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Brings the lot up to `now`: fires due timers and runs every vehicle
    /// action due by `now.sim`, across vehicles in time order.
    pub fn advance(&mut self, now: Now) {
        while let Some(&Reverse((at, u))) = self.timers.peek() {
            if at > now.real {
                break;
            }
            self.timers.pop();
            self.with_dongle(u, |d| d.check_reserve(now.real));
            self.mark_ready(u);
        }
        while let Some(&Reverse((at, u))) = self.agenda.peek() {
            if at > now.sim {
                break;
            }
            self.agenda.pop();
            let mut scratch = std::mem::take(&mut self.scratch);
            let next = match &mut self.units[u].source {
                Source::Vehicle(v) => {
                    v.step(&mut scratch);
                    v.next_at()
                }
                Source::Burst(_) => None,
            };
            for (t, h) in scratch.drain(..) {
                self.apply(u, t, h, now.real);
            }
            self.scratch = scratch;
            if let Some(next) = next {
                self.agenda.push(Reverse((next, u)));
            }
        }
    }

    fn apply(&mut self, u: usize, t: u64, h: Happening, real: u64) {
        let rt = self.retransmit_ms;
        let evicted = self.with_dongle(u, |d| match h {
            Happening::Boot => d.boot(t, None),
            Happening::Send(body) => d.enqueue(body, t),
            Happening::PowerLost(reason) => d.lose_power(t, reason, real, rt),
            Happening::PowerRestored { down_s } => d.boot(t, Some(down_s)),
            Happening::Reach(in_reach) => {
                d.set_reach(in_reach);
                None
            }
        });
        if evicted.is_some() {
            SimStats::bump(&self.stats.dropped);
        }
        if let Some(at) = self.units[u].dongle.gasp_ends_at() {
            self.timers.push(Reverse((at, u)));
        }
        self.mark_ready(u);
    }

    /// The next payload to put on the wire at `real` ms, with the CAN node
    /// address of its unit. Call again until `None` to drain what is due.
    pub fn next_outgoing(&mut self, real: u64) -> Option<(u8, &[u8])> {
        let u = self.pick_sender(real)?;
        let unit = &self.units[u];
        Some((unit.addr, unit.dongle.on_air()?))
    }

    fn pick_sender(&mut self, real: u64) -> Option<usize> {
        let rt = self.retransmit_ms;
        while let Some(u) = self.ready.pop_front() {
            self.is_ready[u] = false;
            let Some(sent) = self.with_dongle(u, |d| d.transmit(real, rt)) else {
                continue;
            };
            if sent.again {
                SimStats::bump(&self.stats.retransmissions);
            } else {
                self.stats.count_sent(sent.kind);
            }
            self.timers.push(Reverse((real + rt, u)));
            if let Some(at) = self.units[u].dongle.gasp_ends_at() {
                self.timers.push(Reverse((at, u)));
            }
            return Some(u);
        }
        None
    }

    /// A payload from the appliance (CRC already checked). `via` is the CAN
    /// node it was addressed to, `None` on a shared serial line.
    pub fn on_payload(&mut self, payload: &[u8], via: Option<u8>, now: Now) {
        match Message::decode(payload) {
            Ok(msg) => self.on_message(&msg, via, now),
            Err(_) => SimStats::bump(&self.stats.rejected),
        }
    }

    pub fn on_message(&mut self, msg: &Message, via: Option<u8>, now: Now) {
        let reaches = |unit: &Unit| via.is_none_or(|a| a == unit.addr);
        if msg.device_id == BROADCAST {
            // Only a lot scan is addressed to every unit (PROTOCOL.md 3).
            if msg.body == Body::RequestStatus {
                for u in 0..self.units.len() {
                    if reaches(&self.units[u]) {
                        self.deliver(u, msg, now);
                    }
                }
            }
        } else if let Some(&u) = self.by_device.get(&msg.device_id) {
            if reaches(&self.units[u]) {
                self.deliver(u, msg, now);
            }
        }
    }

    fn deliver(&mut self, u: usize, msg: &Message, now: Now) {
        if !self.units[u].dongle.can_talk() {
            return;
        }
        match msg.body {
            Body::Ack { acked_seq } => match self.with_dongle(u, |d| d.on_ack(acked_seq)) {
                AckOutcome::Released(_) => {
                    SimStats::bump(&self.stats.acked);
                    self.refill(u, now.sim);
                    self.mark_ready(u);
                }
                AckOutcome::Stale => SimStats::bump(&self.stats.duplicate_acks),
            },
            Body::Time => {
                SimStats::bump(&self.stats.time_received);
                // The appliance's clock, read on the simulated timeline.
                let appliance = msg.time_ms.saturating_sub(now.lag);
                if self.units[u].dongle.on_time(appliance, now.sim) {
                    SimStats::bump(&self.stats.time_corrections);
                }
            }
            Body::RequestStatus => {
                SimStats::bump(&self.stats.status_requests);
                let unit = &mut self.units[u];
                if unit.dongle.holds_unsent_hello() {
                    return;
                }
                let hello = unit.dongle.hello(false);
                let heartbeat = Body::Heartbeat(unit.source.heartbeat(now.sim));
                self.enqueue(u, hello, now.sim);
                self.enqueue(u, heartbeat, now.sim);
            }
            Body::RequestDtc { ecu } => {
                SimStats::bump(&self.stats.dtc_requests);
                for report in self.units[u].source.reports_for(ecu) {
                    self.enqueue(u, Body::DtcReport(report), now.sim);
                }
            }
            // Uplink kinds are other units' traffic.
            _ => {}
        }
    }

    fn enqueue(&mut self, u: usize, body: Body, sim: u64) {
        if self.units[u].dongle.enqueue(body, sim).is_some() {
            SimStats::bump(&self.stats.dropped);
        }
        self.mark_ready(u);
    }

    /// A flood unit makes its next message as soon as the last is ACKed.
    fn refill(&mut self, u: usize, sim: u64) {
        let unit = &mut self.units[u];
        if let Source::Burst(b) = &mut unit.source {
            if b.remaining > 0 && unit.dongle.is_idle() {
                b.remaining -= 1;
                let body = b.next_body(sim);
                self.enqueue(u, body, sim);
            }
        }
    }

    /// True when every flood unit has sent all its messages and had them ACKed.
    pub fn flood_done(&self) -> bool {
        self.units.iter().all(|u| match &u.source {
            Source::Burst(b) => b.remaining == 0 && u.dongle.is_idle(),
            Source::Vehicle(_) => true,
        })
    }

    /// How long the IO loop may sleep before something is due.
    pub fn next_wake(&self, now: Now, time: &SimTime, clock_now: u64) -> Duration {
        let mut ms = CLOCK_POLL_MS;
        if let Some(&Reverse((at, _))) = self.timers.peek() {
            ms = ms.min(at.saturating_sub(now.real));
        }
        if let Some(&Reverse((at, _))) = self.agenda.peek() {
            ms = ms.min(time.clock_ms_until(now.sim, clock_now, at));
        }
        Duration::from_millis(ms)
    }
}

impl Drop for Lot {
    fn drop(&mut self) {
        // The gauge is shared: a lot that stops takes its waiting units with it.
        for u in &self.units {
            if u.dongle.is_waiting() {
                self.stats.unit_released();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::message::{kind, Hello, PowerLossReason, Vin};
    use crate::sim::scenario::{generate_profiles, Episode, ScriptedUnit, DAY_MS, MINUTE_MS};

    const T0: u64 = 1_767_225_600_000;
    const RT: u64 = 2_000;

    /// Drives a lot with fake times and ACKs every message at once, as an
    /// appliance that is never slow would.
    struct Bench {
        lot: Lot,
        stats: Arc<SimStats>,
        real: u64,
        sim: u64,
        log: Vec<Message>,
    }

    impl Bench {
        fn new(profiles: Vec<Profile>) -> Bench {
            let stats = Arc::new(SimStats::new());
            let lot = Lot::new(profiles, &[], T0, RT, 1024, stats.clone());
            Bench {
                lot,
                stats,
                real: 0,
                sim: T0,
                log: Vec::new(),
            }
        }

        fn now(&self) -> Now {
            Now {
                sim: self.sim,
                real: self.real,
                lag: 0,
            }
        }

        /// Sends whatever is due; ACKs it when `ack`.
        fn pump(&mut self, ack: bool) -> Vec<Message> {
            let now = self.now();
            self.lot.advance(now);
            let mut out = Vec::new();
            while let Some((_, p)) = self.lot.next_outgoing(now.real) {
                let m = Message::decode(p).unwrap();
                if ack {
                    let a = Message {
                        seq: 0,
                        device_id: m.device_id,
                        time_ms: now.sim,
                        body: Body::Ack { acked_seq: m.seq },
                    };
                    self.lot.on_message(&a, None, now);
                }
                out.push(m);
            }
            self.log.extend(out.iter().cloned());
            out
        }

        /// Moves simulated time forward in small steps, ACKing everything.
        fn run_until(&mut self, sim: u64) {
            while self.sim < sim {
                self.sim = (self.sim + MINUTE_MS).min(sim);
                self.real += 1;
                while !self.pump(true).is_empty() {}
            }
        }
    }

    #[test]
    fn sim_time_follows_the_formula_and_never_passes_the_clock() {
        let mut t = SimTime::new(T0, 7 * DAY_MS, 2000.0);
        assert_eq!(t.start(), T0 - 7 * DAY_MS);
        assert_eq!(t.at(T0), T0 - 7 * DAY_MS);
        assert_eq!(t.at(T0 + 1000), T0 - 7 * DAY_MS + 2_000_000);
        // 7 days at 2000x replay in 302.4 s, while the clock moved on by as
        // much: the timeline meets the clock at 7 days / 1999 (302.55 s).
        assert_eq!(t.at(T0 + 302_400), T0);
        assert_eq!(t.at(T0 + 302_556), T0 + 302_556);
        assert_eq!(t.at(T0 + 400_000), T0 + 400_000);
        assert_eq!(t.at(T0 + 399_000), T0 + 400_000, "never goes back");
        let mut live = SimTime::new(T0, 0, 1.0);
        for c in (0..10).map(|i| T0 + i * 777) {
            assert_eq!(live.at(c), c);
        }
        assert_eq!(
            t.clock_ms_until(T0 - DAY_MS, T0, T0 - DAY_MS + 2_000_000),
            1000
        );
        assert_eq!(live.clock_ms_until(T0, T0, T0 + 60_000), 60_000);
    }

    #[test]
    fn determinism_same_seed_same_bytes() {
        let run = |seed| {
            let mut b = Bench::new(generate_profiles(seed, 12, 2, T0));
            b.run_until(T0 + 2 * DAY_MS);
            b.log.iter().map(Message::encode).collect::<Vec<_>>()
        };
        let a = run(3);
        assert!(
            a.len() > 12 * 2 * 96,
            "two days of a dozen vehicles: {}",
            a.len()
        );
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
    }

    #[test]
    fn a_week_of_generated_history_keeps_stop_and_wait_and_time_order() {
        let mut b = Bench::new(generate_profiles(11, 20, 0, T0));
        b.run_until(T0 + 7 * DAY_MS);
        let mut last: HashMap<u64, (u16, u64)> = HashMap::new();
        for m in &b.log {
            assert!(m.time_ms <= T0 + 7 * DAY_MS, "never ahead of the timeline");
            if let Some((seq, _)) = last.get(&m.device_id) {
                // Power-loss boots resend a kept message after the HELLO; all
                // of these were ACKed at once, so seq simply counts up.
                assert_eq!(m.seq, seq.wrapping_add(1), "{m:?}");
            }
            last.insert(m.device_id, (m.seq, m.time_ms));
        }
        let s = b.stats.snapshot();
        assert_eq!(s.sent, b.log.len() as u64);
        assert_eq!((s.retransmissions, s.dropped, s.waiting), (0, 0, 0));
        for k in [
            "HELLO",
            "IGNITION_ON",
            "IGNITION_OFF",
            "HEARTBEAT",
            "LAMP",
            "DTC_REPORT",
            "POWER_LOST",
            "POWER_RESTORED",
        ] {
            assert!(s.sent_by_kind[k] > 0, "{k}: {:?}", s.sent_by_kind);
        }
    }

    #[test]
    fn broadcast_status_is_answered_by_every_unit_in_reach() {
        let units: Vec<Profile> = (1..=4u64)
            .map(|id| {
                let mut u = ScriptedUnit::new(id);
                if id == 4 {
                    u = u.at(0, Episode::Away { duration_s: 3600 });
                }
                Profile::from_script(&u)
            })
            .collect();
        let mut b = Bench::new(units);
        b.run_until(T0 + 1000);
        let now = b.now();
        let scan = Message {
            seq: 1,
            device_id: BROADCAST,
            time_ms: T0,
            body: Body::RequestStatus,
        };
        b.lot.on_message(&scan, None, now);
        b.lot.on_message(&scan, None, now); // a repeated scan does not double the answers
        let answers = b.pump(true);
        let mut by_unit: Vec<(u64, &str)> = answers
            .iter()
            .map(|m| (m.device_id, m.body.name()))
            .collect();
        by_unit.sort();
        assert_eq!(
            by_unit,
            [
                (1, "HEARTBEAT"),
                (1, "HELLO"),
                (2, "HEARTBEAT"),
                (2, "HELLO"),
                (3, "HEARTBEAT"),
                (3, "HELLO")
            ],
            "unit 4 is away and does not hear the scan"
        );
        assert!(answers.iter().all(|m| !matches!(
            m.body,
            Body::Hello(Hello {
                after_power_loss: true,
                ..
            })
        )));
    }

    #[test]
    fn request_dtc_answers_with_snapshots() {
        let mut b = Bench::new(vec![Profile::from_script(&ScriptedUnit::new(9))]);
        b.run_until(T0 + 1000);
        let now = b.now();
        let ask = |ecu| Message {
            seq: 2,
            device_id: 9,
            time_ms: T0,
            body: Body::RequestDtc { ecu },
        };
        b.lot.on_message(&ask(0x07E1), None, now);
        assert_eq!(b.pump(true).len(), 1);
        b.lot.on_message(&ask(0xFFFF), None, now);
        let all = b.pump(true);
        assert_eq!(all.len(), ECUS.len());
        assert!(all.iter().all(|m| m.body.kind() == kind::DTC_REPORT));
        // Another unit's id, or another CAN node, is not this unit's business.
        let other = Message {
            device_id: 10,
            ..ask(0xFFFF)
        };
        b.lot.on_message(&other, None, now);
        assert!(b.pump(true).is_empty());
    }

    #[test]
    fn retransmits_every_interval_until_acked_and_counts_it() {
        let mut b = Bench::new(vec![Profile::from_script(&ScriptedUnit::new(5))]);
        let first = b.pump(false);
        assert_eq!(first.len(), 1);
        for k in 1..=3 {
            b.real = k * RT - 1;
            assert!(b.pump(false).is_empty());
            b.real = k * RT;
            assert_eq!(b.pump(false), first, "copy {k} is identical");
        }
        let s = b.stats.snapshot();
        assert_eq!((s.sent, s.retransmissions, s.waiting), (1, 3, 1));
        let now = b.now();
        let ack = Message {
            seq: 0,
            device_id: 5,
            time_ms: T0,
            body: Body::Ack {
                acked_seq: first[0].seq,
            },
        };
        b.lot.on_message(&ack, None, now);
        b.lot.on_message(&ack, None, now);
        let s = b.stats.snapshot();
        assert_eq!((s.acked, s.duplicate_acks), (1, 1));
    }

    #[test]
    fn time_is_read_on_the_simulated_timeline() {
        // The timeline trails the appliance by a day (backfill): a TIME from
        // the appliance's now must not throw healthy clocks a day ahead.
        let mut skewed = ScriptedUnit::new(2);
        skewed.skew_ms = 7 * MINUTE_MS;
        let mut b = Bench::new(vec![
            Profile::from_script(&ScriptedUnit::new(1)),
            Profile::from_script(&skewed),
        ]);
        b.pump(true);
        let lag = DAY_MS;
        let now = Now {
            sim: b.sim,
            real: b.real,
            lag,
        };
        for id in [1, 2] {
            let time = Message {
                seq: 3,
                device_id: id,
                time_ms: b.sim + lag,
                body: Body::Time,
            };
            b.lot.on_message(&time, None, now);
        }
        let s = b.stats.snapshot();
        assert_eq!((s.time_received, s.time_corrections), (2, 1));
        assert_eq!(b.lot.units[0].dongle.device_time(b.sim), b.sim);
        assert_eq!(b.lot.units[1].dongle.device_time(b.sim), b.sim);
    }

    #[test]
    fn power_loss_boot_sequence_on_the_wire() {
        let unit = ScriptedUnit::new(3).at(
            5 * MINUTE_MS,
            Episode::PowerLoss {
                reason: PowerLossReason::SupplyLow,
                down_s: 7200,
            },
        );
        let mut b = Bench::new(vec![Profile::from_script(&unit)]);
        b.run_until(T0 + 3 * 3600 * 1000);
        let kinds: Vec<&str> = b.log.iter().map(|m| m.body.name()).collect();
        assert_eq!(
            &kinds[..6],
            [
                "HELLO",
                "HEARTBEAT",
                "POWER_LOST",
                "HELLO",
                "POWER_RESTORED",
                "HEARTBEAT"
            ]
        );
        assert_eq!(b.log[2].time_ms, T0 + 5 * MINUTE_MS);
        let Body::Hello(h) = &b.log[3].body else {
            panic!()
        };
        assert!(h.after_power_loss && h.flags & 1 == 1);
        assert_eq!(b.log[3].time_ms, T0 + 125 * MINUTE_MS);
        assert_eq!(b.log[4].body, Body::PowerRestored { down_s: 7200 });
        assert_eq!(
            b.log[5].time_ms,
            T0 + 140 * MINUTE_MS,
            "parked heartbeats resume 15 min later"
        );
    }

    #[test]
    fn flood_units_send_their_count_then_stop() {
        let stats = Arc::new(SimStats::new());
        let ids = (0..3u64)
            .map(|i| Identity {
                device_id: 100 + i,
                vin: Vin::parse("TMBJG7NE0J0123456"),
                model_year: 2018,
                firmware: crate::link::message::Firmware(2, 0, 1),
            })
            .collect();
        let mut lot = Lot::flood(ids, 50, 1, T0, RT, stats.clone());
        let now = Now {
            sim: T0,
            real: 0,
            lag: 0,
        };
        let mut per_device: HashMap<u64, usize> = HashMap::new();
        while !lot.flood_done() {
            let mut acks = Vec::new();
            while let Some((_, p)) = lot.next_outgoing(0) {
                let m = Message::decode(p).unwrap();
                *per_device.entry(m.device_id).or_default() += 1;
                acks.push(Message {
                    seq: 0,
                    device_id: m.device_id,
                    time_ms: T0,
                    body: Body::Ack { acked_seq: m.seq },
                });
            }
            assert!(
                !acks.is_empty(),
                "a flood never stalls when every message is ACKed"
            );
            for a in acks {
                lot.on_message(&a, None, now);
            }
        }
        assert!(per_device.values().all(|&n| n == 50), "{per_device:?}");
        let s = stats.snapshot();
        assert_eq!((s.sent, s.acked, s.waiting), (150, 150, 0));
        assert!(
            s.sent_by_kind["HEARTBEAT"] > 75,
            "mostly heartbeats: {:?}",
            s.sent_by_kind
        );
    }
}
