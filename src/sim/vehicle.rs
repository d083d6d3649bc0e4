//! One simulated vehicle as its dongle sees it: engine, odometer, 12 V
//! battery, lamps, stored fault codes, supply and radio reach, moved along by
//! an agenda of timed actions. It says what happened and when (as
//! [`Happening`]s); turning that into numbered, retransmitted messages is
//! the dongle's job. Pure: time is always an argument.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::scenario::{
    noise, plan_day, status, Action, BatteryHealth, Episode, Plan, Profile, Traits, DAY_MS, ECUS,
    HOUR_MS, LAMP_FAULTS, MINUTE_MS,
};
use crate::link::message::{Body, Dtc, DtcEntry, DtcReport, Engine, Heartbeat, PowerLossReason};

/// Heartbeat periods of PROTOCOL.md section 3 (dongle-configured; these
/// are the documented defaults).
pub const RUNNING_HEARTBEAT_MS: u64 = 60_000;
pub const PARKED_HEARTBEAT_MS: u64 = 15 * MINUTE_MS;

/// What the vehicle did, for its dongle to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Happening {
    /// First power-up when the lot starts: HELLO without the power-loss flag.
    Boot,
    /// A message to send, stamped with the dongle's clock at this time.
    Send(Body),
    /// Supply gone: POWER_LOST as a last gasp, then silence.
    PowerLost(PowerLossReason),
    /// Supply back after `down_s`: HELLO with the power-loss flag, POWER_RESTORED.
    PowerRestored { down_s: u32 },
    /// Radio reach lost (`false`) or regained (`true`).
    Reach(bool),
}

struct Scheduled {
    at: u64,
    /// Insertion order: equal times run first-in first-out.
    order: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and the agenda wants the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Clone, Copy, Debug)]
struct Drive {
    id: u32,
    start: u64,
    duration_ms: u64,
    km: u32,
    odometer_at_start: u32,
}

#[derive(Clone, Copy, Debug)]
struct ArmedFault {
    lamp: u8,
    code: Option<(u16, Dtc)>,
    drives_left: Option<u8>,
}

pub(crate) struct Vehicle {
    pub profile: Profile,
    start: u64,
    agenda: BinaryHeap<Scheduled>,
    order: u64,
    battery: BatteryHealth,
    drive: Option<Drive>,
    next_drive_id: u32,
    parked_since: u64,
    odometer_km: u32,
    /// Lit lamp ids. Ids above 32 have no heartbeat bit but still get LAMPs.
    lamps: BTreeSet<u8>,
    dtcs: BTreeMap<u16, Vec<DtcEntry>>,
    /// `Some` while the supply is gone: why.
    unpowered: Option<PowerLossReason>,
    /// A power loss that came while the engine ran waits for the engine to stop.
    postponed_power_loss: Option<(PowerLossReason, u32)>,
    fault: Option<ArmedFault>,
    heartbeat_generation: u32,
    away_until: Option<u64>,
}

impl Vehicle {
    pub fn new(profile: Profile, start: u64) -> Vehicle {
        let mut v = Vehicle {
            start,
            agenda: BinaryHeap::new(),
            order: 0,
            battery: profile.battery,
            drive: None,
            next_drive_id: 0,
            parked_since: start,
            odometer_km: profile.odometer_km,
            lamps: BTreeSet::new(),
            dtcs: BTreeMap::new(),
            unpowered: None,
            postponed_power_loss: None,
            fault: None,
            heartbeat_generation: 0,
            away_until: None,
            profile,
        };
        for (ecu, entry) in v.profile.stored_dtcs.clone() {
            v.dtcs.entry(ecu).or_default().push(entry);
            // Old stored codes age out, or are cleared, a few days in.
            let after = 2 * DAY_MS
                + (noise(v.profile.noise_key, ecu as u64).abs() * 3.0 * DAY_MS as f64) as u64;
            v.schedule(
                start + after,
                Action::Episode(Episode::Dtc {
                    ecu,
                    dtc: entry.dtc,
                    status: None,
                }),
            );
        }
        v.schedule(start, Action::Boot);
        match v.profile.plan.clone() {
            Plan::Scripted(episodes) => {
                for (after, e) in episodes {
                    v.schedule(start.saturating_add(after), Action::Episode(e));
                }
            }
            Plan::Generated {
                replace_battery_at, ..
            } => {
                v.schedule(
                    start,
                    Action::PlanDay {
                        day: start / DAY_MS,
                    },
                );
                if let Some(at) = replace_battery_at {
                    // Changing the battery cuts the dongle's supply for a while.
                    let loss = Episode::PowerLoss {
                        reason: PowerLossReason::SupplyLow,
                        down_s: 25 * 60,
                    };
                    v.schedule(at, Action::Episode(loss));
                    v.schedule(
                        at + 10 * MINUTE_MS,
                        Action::Episode(Episode::BatteryReplaced),
                    );
                }
            }
        }
        v
    }

    fn schedule(&mut self, at: u64, action: Action) {
        self.order += 1;
        self.agenda.push(Scheduled {
            at,
            order: self.order,
            action,
        });
    }

    /// When the next action is due, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.agenda.peek().map(|s| s.at)
    }

    /// Runs the earliest action, appending what happened to `out`.
    pub fn step(&mut self, out: &mut Vec<(u64, Happening)>) {
        let Some(Scheduled { at, action, .. }) = self.agenda.pop() else {
            return;
        };
        self.apply(at, action, out);
    }

    fn apply(&mut self, t: u64, action: Action, out: &mut Vec<(u64, Happening)>) {
        let powered = self.unpowered.is_none();
        match action {
            Action::Boot => {
                out.push((t, Happening::Boot));
                out.push((t, Happening::Send(Body::Heartbeat(self.heartbeat(t)))));
                for ecu in self.dtcs.keys().copied().collect::<Vec<_>>() {
                    out.push((t, Happening::Send(Body::DtcReport(self.report(ecu)))));
                }
                self.rearm_heartbeat(t);
            }
            Action::PlanDay { day } => {
                if let Plan::Generated { traits, key, .. } = self.profile.plan {
                    self.plan(&traits, key, day);
                }
                self.schedule((day + 1) * DAY_MS, Action::PlanDay { day: day + 1 });
            }
            Action::Episode(e) => self.episode(t, e, out),
            Action::LampFault {
                fault,
                clear_after_drives,
            } => {
                let Some(f) = LAMP_FAULTS.get(fault) else {
                    return;
                };
                if !powered || self.fault.is_some() || self.lamps.contains(&f.lamp) {
                    return;
                }
                let code = f.code.and_then(|(ecu, c)| Some((ecu, Dtc::parse(c)?)));
                self.set_lamp(t, f.lamp, true, out);
                if let Some((ecu, dtc)) = code {
                    let st = if dtc.letter() == 'P' {
                        status::ACTIVE
                    } else {
                        status::FAILED_CONFIRMED
                    };
                    self.set_dtc(t, ecu, dtc, Some(st), out);
                }
                self.fault = Some(ArmedFault {
                    lamp: f.lamp,
                    code,
                    drives_left: clear_after_drives,
                });
            }
            Action::ClearLampFault { lamp, code } => {
                self.fault = None;
                self.set_lamp(t, lamp, false, out);
                if let Some((ecu, dtc)) = code {
                    let was_active = self
                        .dtcs
                        .get(&ecu)
                        .and_then(|v| v.iter().find(|e| e.dtc == dtc))
                        .map(|e| e.status);
                    let now = if was_active == Some(status::ACTIVE) {
                        status::HISTORIC
                    } else {
                        status::CONFIRMED
                    };
                    self.set_dtc(t, ecu, dtc, Some(now), out);
                    let days = 1 + (noise(self.profile.noise_key, t).abs() * 2.0) as u64;
                    self.schedule(
                        t + days * DAY_MS,
                        Action::Episode(Episode::Dtc {
                            ecu,
                            dtc,
                            status: None,
                        }),
                    );
                }
            }
            Action::EndDrive { drive } => {
                let Some(d) = self.drive.filter(|d| d.id == drive) else {
                    return;
                };
                self.drive = None;
                self.odometer_km = d.odometer_at_start.saturating_add(d.km);
                self.parked_since = t;
                let run_s = (d.duration_ms / 1000) as u32;
                if powered {
                    out.push((
                        t,
                        Happening::Send(Body::IgnitionOff {
                            odometer_km: self.odometer_km,
                            run_s,
                        }),
                    ));
                }
                self.rearm_heartbeat(t);
                if let Some((reason, down_s)) = self.postponed_power_loss.take() {
                    self.schedule(
                        t + MINUTE_MS,
                        Action::Episode(Episode::PowerLoss { reason, down_s }),
                    );
                }
            }
            Action::Heartbeat { generation } => {
                if generation == self.heartbeat_generation && powered {
                    out.push((t, Happening::Send(Body::Heartbeat(self.heartbeat(t)))));
                    self.schedule_heartbeat(t);
                }
            }
            Action::RestorePower { down_s } => {
                if self.unpowered.take().is_some() {
                    out.push((t, Happening::PowerRestored { down_s }));
                    self.parked_since = t;
                    self.rearm_heartbeat(t);
                }
            }
            Action::Return => {
                if self.away_until.is_some_and(|u| u <= t) {
                    self.away_until = None;
                    out.push((t, Happening::Reach(true)));
                }
            }
        }
    }

    fn episode(&mut self, t: u64, e: Episode, out: &mut Vec<(u64, Happening)>) {
        let powered = self.unpowered.is_none();
        match e {
            Episode::Drive {
                duration_s,
                distance_km,
            } => {
                if self.drive.is_some() {
                    return;
                }
                if !powered {
                    // An unplugged unit misses the drive but the car still
                    // moves; a flat battery does not start at all.
                    if self.unpowered == Some(PowerLossReason::Unplugged) {
                        self.odometer_km = self.odometer_km.saturating_add(distance_km);
                    }
                    return;
                }
                self.next_drive_id += 1;
                let d = Drive {
                    id: self.next_drive_id,
                    start: t,
                    duration_ms: duration_s as u64 * 1000,
                    km: distance_km,
                    odometer_at_start: self.odometer_km,
                };
                self.drive = Some(d);
                out.push((
                    t,
                    Happening::Send(Body::IgnitionOn {
                        odometer_km: self.odometer_km,
                    }),
                ));
                self.rearm_heartbeat(t);
                self.schedule(t + d.duration_ms, Action::EndDrive { drive: d.id });
                if let Some(f) = self.fault.as_mut() {
                    if let Some(n) = f.drives_left.as_mut() {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            let (lamp, code) = (f.lamp, f.code);
                            f.drives_left = None;
                            // The ECU re-runs its monitor a minute or so into the drive.
                            let into = (d.duration_ms / 2).min(
                                MINUTE_MS
                                    + (noise(self.profile.noise_key, t).abs()
                                        * 2.0
                                        * MINUTE_MS as f64)
                                        as u64,
                            );
                            self.schedule(t + into, Action::ClearLampFault { lamp, code });
                        }
                    }
                }
            }
            Episode::Lamp { lamp, lit } => {
                if lamp == 0 {
                    return;
                }
                if powered {
                    self.set_lamp(t, lamp, lit, out);
                } else if lit {
                    self.lamps.insert(lamp);
                } else {
                    self.lamps.remove(&lamp);
                }
            }
            Episode::Dtc { ecu, dtc, status } => {
                if powered {
                    self.set_dtc(t, ecu, dtc, status, out);
                } else {
                    self.store_dtc(ecu, dtc, status);
                }
            }
            Episode::PowerLoss { reason, down_s } => {
                if !powered {
                    return;
                }
                if self.drive.is_some() {
                    self.postponed_power_loss = Some((reason, down_s));
                    return;
                }
                self.unpowered = Some(reason);
                self.heartbeat_generation += 1;
                out.push((t, Happening::PowerLost(reason)));
                self.schedule(t + down_s as u64 * 1000, Action::RestorePower { down_s });
            }
            Episode::Away { duration_s } => {
                let until = t + duration_s as u64 * 1000;
                if self.away_until.is_none() {
                    out.push((t, Happening::Reach(false)));
                }
                self.away_until = Some(self.away_until.map_or(until, |u| u.max(until)));
                self.schedule(until, Action::Return);
            }
            Episode::BatteryReplaced => self.battery = BatteryHealth::Healthy,
        }
    }

    fn plan(&mut self, traits: &Traits, key: u64, day: u64) {
        // Nothing generated lands on the boot instant: HELLO goes first.
        let not_before = (day * DAY_MS).max(self.start + 1000);
        for (at, action) in plan_day(traits, key, day, self.battery, not_before) {
            self.schedule(at, action);
        }
    }

    fn set_lamp(&mut self, t: u64, lamp: u8, lit: bool, out: &mut Vec<(u64, Happening)>) {
        let changed = if lit {
            self.lamps.insert(lamp)
        } else {
            self.lamps.remove(&lamp)
        };
        if changed {
            out.push((t, Happening::Send(Body::Lamp { lamp, lit })));
        }
    }

    fn store_dtc(&mut self, ecu: u16, dtc: Dtc, status: Option<u8>) -> bool {
        let codes = self.dtcs.entry(ecu).or_default();
        let before = codes.clone();
        codes.retain(|e| e.dtc != dtc);
        if let Some(status) = status {
            codes.push(DtcEntry { dtc, status });
            codes.sort_by_key(|e| e.dtc);
        }
        let changed = *codes != before;
        if codes.is_empty() {
            self.dtcs.remove(&ecu);
        }
        changed
    }

    fn set_dtc(
        &mut self,
        t: u64,
        ecu: u16,
        dtc: Dtc,
        status: Option<u8>,
        out: &mut Vec<(u64, Happening)>,
    ) {
        if self.store_dtc(ecu, dtc, status) {
            out.push((t, Happening::Send(Body::DtcReport(self.report(ecu)))));
        }
    }

    fn rearm_heartbeat(&mut self, t: u64) {
        self.heartbeat_generation += 1;
        self.schedule_heartbeat(t);
    }

    fn schedule_heartbeat(&mut self, t: u64) {
        let period = if self.drive.is_some() {
            RUNNING_HEARTBEAT_MS
        } else {
            PARKED_HEARTBEAT_MS
        };
        let generation = self.heartbeat_generation;
        self.schedule(t + period, Action::Heartbeat { generation });
    }

    /// The unit's reading of the vehicle at `t` (for heartbeats and status answers).
    pub fn heartbeat(&self, t: u64) -> Heartbeat {
        let lamps = self
            .lamps
            .iter()
            .filter(|&&l| (1..=32).contains(&l))
            .fold(0u32, |m, &l| m | 1 << (l - 1));
        match self.drive {
            Some(d) => {
                let elapsed = t.saturating_sub(d.start).min(d.duration_ms);
                let done = (d.km as u64 * elapsed)
                    .checked_div(d.duration_ms)
                    .unwrap_or(0) as u32;
                Heartbeat {
                    engine: Engine::Running,
                    run_s: (t.saturating_sub(d.start) / 1000) as u32,
                    odometer_km: d.odometer_at_start.saturating_add(done),
                    battery_mv: self.battery_mv(t, true),
                    lamps,
                }
            }
            None => Heartbeat {
                engine: Engine::Parked,
                run_s: 0,
                odometer_km: self.odometer_km,
                battery_mv: self.battery_mv(t, false),
                lamps,
            },
        }
    }

    /// Battery voltage: charging voltage while running; parked, the resting
    /// voltage with a little surface charge just after a drive and a slow
    /// sag over days of standing.
    fn battery_mv(&self, t: u64, running: bool) -> u16 {
        let n = noise(self.profile.noise_key, t);
        let weak = self.battery == BatteryHealth::Weak;
        let mv = if running {
            (if weak { 13_950.0 } else { 14_200.0 }) + n * 150.0
        } else {
            let parked_h = t.saturating_sub(self.parked_since) as f64 / HOUR_MS as f64;
            let surface = if parked_h < 0.5 { 150.0 } else { 0.0 };
            let sag = parked_h.min(96.0) * if weak { 2.5 } else { 1.2 };
            (if weak { 11_520.0 } else { 12_680.0 }) + surface - sag + n * 60.0
        };
        mv.clamp(0.0, u16::MAX as f64) as u16
    }

    /// A full snapshot of one ECU's stored codes.
    pub fn report(&self, ecu: u16) -> DtcReport {
        DtcReport {
            ecu,
            entries: self.dtcs.get(&ecu).cloned().unwrap_or_default(),
        }
    }

    /// Answers REQUEST_DTC: one ECU, or every ECU the vehicle has (0xFFFF),
    /// including those that hold no codes, so each report clears what the
    /// appliance may still hold for it.
    pub fn reports_for(&self, ecu: u16) -> Vec<DtcReport> {
        if ecu == 0xFFFF {
            let mut ecus: Vec<u16> = ECUS.to_vec();
            ecus.extend(self.dtcs.keys().filter(|e| !ECUS.contains(e)));
            ecus.into_iter().map(|e| self.report(e)).collect()
        } else {
            vec![self.report(ecu)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::{generate_profiles, ScriptedUnit};

    const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn run(v: &mut Vehicle, until: u64) -> Vec<(u64, Happening)> {
        let mut out = Vec::new();
        while v.next_at().is_some_and(|t| t <= until) {
            v.step(&mut out);
        }
        out
    }

    fn sends(h: &[(u64, Happening)]) -> Vec<(u64, Body)> {
        h.iter()
            .filter_map(|(t, h)| match h {
                Happening::Send(b) => Some((*t, b.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_drive_reports_ignition_running_heartbeats_and_ignition_off() {
        let unit = ScriptedUnit::new(1).at(
            10 * MINUTE_MS,
            Episode::Drive {
                duration_s: 300,
                distance_km: 5,
            },
        );
        let mut v = Vehicle::new(Profile::from_script(&unit), START);
        let h = run(&mut v, START + 45 * MINUTE_MS);
        assert_eq!(h[0], (START, Happening::Boot));
        let s = sends(&h);
        let kinds: Vec<&str> = s.iter().map(|(_, b)| b.name()).collect();
        // Boot heartbeat, ignition on, 4 running heartbeats (60..240 s), off,
        // then parked heartbeats every 15 min after the drive.
        assert_eq!(
            kinds,
            [
                "HEARTBEAT",
                "IGNITION_ON",
                "HEARTBEAT",
                "HEARTBEAT",
                "HEARTBEAT",
                "HEARTBEAT",
                "IGNITION_OFF",
                "HEARTBEAT",
                "HEARTBEAT"
            ]
        );
        let on = START + 10 * MINUTE_MS;
        assert_eq!(
            s[1],
            (
                on,
                Body::IgnitionOn {
                    odometer_km: 42_000
                }
            )
        );
        for (i, (t, b)) in s[2..6].iter().enumerate() {
            let Body::Heartbeat(hb) = b else { panic!() };
            assert_eq!(*t, on + (i as u64 + 1) * 60_000);
            assert_eq!(
                (hb.engine, hb.run_s),
                (Engine::Running, (i as u32 + 1) * 60)
            );
            assert!(
                (14_000..=14_400).contains(&hb.battery_mv),
                "{}",
                hb.battery_mv
            );
        }
        assert_eq!(
            s[6],
            (
                on + 300_000,
                Body::IgnitionOff {
                    odometer_km: 42_005,
                    run_s: 300
                }
            )
        );
        let Body::Heartbeat(hb) = &s[7].1 else {
            panic!()
        };
        assert_eq!(
            (s[7].0, hb.engine, hb.run_s, hb.odometer_km),
            (
                on + 300_000 + PARKED_HEARTBEAT_MS,
                Engine::Parked,
                0,
                42_005
            )
        );
    }

    #[test]
    fn lamp_messages_and_heartbeat_bits_agree() {
        let unit = ScriptedUnit::new(1)
            .at(MINUTE_MS, Episode::Lamp { lamp: 8, lit: true })
            .at(2 * MINUTE_MS, Episode::Lamp { lamp: 8, lit: true }) // no change: no message
            .at(
                20 * MINUTE_MS,
                Episode::Lamp {
                    lamp: 8,
                    lit: false,
                },
            );
        let mut v = Vehicle::new(Profile::from_script(&unit), START);
        let s = sends(&run(&mut v, START + 31 * MINUTE_MS));
        let names: Vec<&str> = s.iter().map(|(_, b)| b.name()).collect();
        assert_eq!(
            names,
            ["HEARTBEAT", "LAMP", "HEARTBEAT", "LAMP", "HEARTBEAT"]
        );
        let bits = |b: &Body| match b {
            Body::Heartbeat(hb) => hb.lamps,
            _ => panic!(),
        };
        assert_eq!(bits(&s[2].1), 1 << 7, "lamp 8 is bit 7 while lit");
        assert_eq!(bits(&s[4].1), 0, "cleared");
    }

    #[test]
    fn dtc_reports_are_full_snapshots_of_their_ecu() {
        let p0301 = Dtc::parse("P0301").unwrap();
        let p0420 = Dtc::parse("P0420").unwrap();
        let unit = ScriptedUnit::new(1)
            .at(
                1000,
                Episode::Dtc {
                    ecu: 0x07E0,
                    dtc: p0301,
                    status: Some(0x2F),
                },
            )
            .at(
                2000,
                Episode::Dtc {
                    ecu: 0x07E0,
                    dtc: p0420,
                    status: Some(0x04),
                },
            )
            .at(
                3000,
                Episode::Dtc {
                    ecu: 0x07E0,
                    dtc: p0301,
                    status: None,
                },
            );
        let mut v = Vehicle::new(Profile::from_script(&unit), START);
        let s = sends(&run(&mut v, START + 5000));
        let reports: Vec<Vec<(String, u8)>> = s
            .iter()
            .filter_map(|(_, b)| match b {
                Body::DtcReport(r) => Some(
                    r.entries
                        .iter()
                        .map(|e| (e.dtc.to_string(), e.status))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(
            reports,
            vec![
                vec![("P0301".into(), 0x2F)],
                vec![("P0301".into(), 0x2F), ("P0420".into(), 0x04)],
                vec![("P0420".into(), 0x04)],
            ]
        );
        assert_eq!(v.reports_for(0xFFFF).len(), ECUS.len());
        assert_eq!(
            v.reports_for(0x07E1),
            vec![DtcReport {
                ecu: 0x07E1,
                entries: vec![]
            }]
        );
    }

    #[test]
    fn power_loss_is_a_gasp_then_silence_then_restore() {
        let unit = ScriptedUnit::new(1)
            .at(
                MINUTE_MS,
                Episode::PowerLoss {
                    reason: PowerLossReason::Unplugged,
                    down_s: 3600,
                },
            )
            .at(
                10 * MINUTE_MS,
                Episode::Drive {
                    duration_s: 600,
                    distance_km: 12,
                },
            );
        let mut v = Vehicle::new(Profile::from_script(&unit), START);
        let h = run(&mut v, START + 80 * MINUTE_MS);
        let after_boot: Vec<&Happening> = h.iter().skip(2).map(|(_, h)| h).collect();
        assert_eq!(
            after_boot[0],
            &Happening::PowerLost(PowerLossReason::Unplugged)
        );
        assert_eq!(after_boot[1], &Happening::PowerRestored { down_s: 3600 });
        assert_eq!(h[3].0, START + 61 * MINUTE_MS);
        // The drive happened while unplugged: no messages, but the odometer moved.
        assert_eq!(v.heartbeat(START + 62 * MINUTE_MS).odometer_km, 42_012);
    }

    #[test]
    fn weak_battery_parks_under_eleven_seven() {
        let mut unit = ScriptedUnit::new(1);
        unit.battery = BatteryHealth::Weak;
        let mut v = Vehicle::new(Profile::from_script(&unit), START);
        let samples: Vec<u16> = sends(&run(&mut v, START + 3 * DAY_MS))
            .into_iter()
            .filter_map(|(_, b)| match b {
                Body::Heartbeat(hb) => Some(hb.battery_mv),
                _ => None,
            })
            .collect();
        let mean = samples.iter().map(|&m| m as f64).sum::<f64>() / samples.len() as f64;
        assert!(mean < 11_700.0, "parked mean {mean}");
        let healthy = Vehicle::new(Profile::from_script(&ScriptedUnit::new(2)), START);
        let hb = healthy.heartbeat(START + 2 * HOUR_MS);
        assert!(
            (12_500..=12_800).contains(&hb.battery_mv),
            "{}",
            hb.battery_mv
        );
    }

    #[test]
    fn generated_vehicles_live_a_full_week() {
        let profiles = generate_profiles(5, 24, 0, START);
        let mut kinds = BTreeMap::<&str, usize>::new();
        let mut restored = 0;
        let mut away = 0;
        for p in profiles {
            let mut v = Vehicle::new(p, START);
            let h = run(&mut v, START + 7 * DAY_MS);
            let mut last = 0;
            for (t, happening) in &h {
                assert!(*t >= last, "in time order");
                last = *t;
                match happening {
                    Happening::Send(b) => *kinds.entry(b.name()).or_default() += 1,
                    Happening::PowerRestored { .. } => restored += 1,
                    Happening::Reach(false) => away += 1,
                    _ => {}
                }
            }
        }
        for k in [
            "IGNITION_ON",
            "IGNITION_OFF",
            "HEARTBEAT",
            "LAMP",
            "DTC_REPORT",
        ] {
            assert!(kinds.get(k).copied().unwrap_or(0) > 0, "{k} in {kinds:?}");
        }
        assert!(
            restored > 0 && away > 0,
            "power losses {restored}, trips away {away}"
        );
    }
}
