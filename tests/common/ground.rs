//! The lot behind `tests/lead_ground_truth.rs`: 200 vehicles living 90
//! simulated days, written as a small scenario language ([`Episode`]), and
//! the leads SPEC.md "Leads (seed 001)" says the appliance must end up
//! with, worked out from the spec and the schedule alone, never by running
//! the engine. Everything is drawn from one seeded `StdRng`, so a failure
//! replays exactly.
//!
//! The model's one contract with the harness: each simulated day's
//! messages reach the appliance as one batch with its clock at the end of
//! that day ([`batch_clock`]), and the periodic tick runs right after at
//! the same clock. Rules judge time by each message's own time_ms
//! (PROTOCOL.md 4); the 7-day battery window is measured back from that
//! clock (SPEC.md "Leads").

use std::collections::BTreeMap;
use std::fmt;

use forecourt::domain::lead::{CloseReason, DtcClass, LeadType, Subject};
use forecourt::link::message::{
    Body, Dtc, DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello, Message, PowerLossReason,
    Vin,
};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

/// 2026-01-01T00:00:00Z, a Thursday.
pub const T0: u64 = 1_767_225_600_000;
pub const SEC: u64 = 1_000;
pub const MIN: u64 = 60 * SEC;
pub const HOUR: u64 = 60 * MIN;
pub const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
pub const DAYS: u64 = 90;
pub const VEHICLES: usize = 200;

/// R-LEAD-BATT, as the spec words it: 11.7 V, strict on both sides, over
/// at least 3 parked samples.
const LOW_BATTERY_MV: u64 = 11_700;
const MIN_PARKED_SAMPLES: u64 = 3;
/// R-LEAD-LAMP (a): a clean run of 15 minutes.
const CLEAN_RUN_S: u32 = 900;

/// The appliance clock while it takes `day`'s batch and ticks after it.
pub fn batch_clock(day: u64) -> u64 {
    T0 + (day + 1) * DAY
}

fn at(day: u64, hour: u64, minute: u64) -> u64 {
    T0 + day * DAY + hour * HOUR + minute * MIN
}

/// A time as the diff prints it: simulated day and UTC time of day.
pub struct When(pub u64);

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.saturating_sub(T0);
        let (day, rest) = (ms / DAY, ms % DAY);
        write!(
            f,
            "d{day} {:02}:{:02}:{:02}",
            rest / HOUR,
            rest % HOUR / MIN,
            rest % MIN / SEC
        )?;
        if rest % SEC != 0 {
            write!(f, ".{:03}", rest % SEC)?;
        }
        Ok(())
    }
}

// ---- The scenario language ----

/// Something that happens to a vehicle, and (in its doc) the lead SPEC.md
/// says it must produce.
#[derive(Clone, Debug)]
pub enum Episode {
    /// R-LEAD-LAMP. The lamp is lit from `lit_at` (evening) until
    /// `clear_at` (a day or more later, in the evening or just before a
    /// morning drive; `None`: never). A run of 15+ minutes while it is lit
    /// follows the next day and must not close it. Expected: one lead
    /// opened when the lamp is first reported lit, closed by `close_by`
    /// (or still open when never cleared).
    Lamp {
        lamp: u8,
        lit_at: u64,
        clear_at: Option<u64>,
        report: Report,
        close_by: CloseBy,
    },
    /// R-LEAD-BATT, see [`Battery`].
    Battery(Battery),
    /// R-LEAD-DISC. POWER_LOST at `lost_at` (again at `lost_again_at`),
    /// silence, then `back`. Expected: one lead opened at `lost_at`,
    /// closed `power_restored` at the restore (open when never restored).
    PowerLoss {
        lost_at: u64,
        lost_again_at: Option<u64>,
        back: Option<(u64, Back)>,
    },
    /// R-LEAD-DTC. Full DTC_REPORT snapshots of one ECU. Expected: per
    /// code, a lead from the first report holding it with a class until a
    /// report without it (or with no class), `code_cleared`, its class that
    /// of its latest listed status.
    Codes {
        ecu: u16,
        reports: Vec<(u64, Vec<(Dtc, u8)>)>,
    },
}

impl fmt::Display for Episode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Episode::Lamp {
                lamp,
                lit_at,
                clear_at,
                report,
                close_by,
            } => {
                write!(f, "lamp {lamp} lit {}", When(*lit_at))?;
                match clear_at {
                    Some(c) => write!(f, ", off {}", When(*c))?,
                    None => write!(f, ", never off")?,
                }
                write!(f, " ({report:?}, {close_by:?})")
            }
            Episode::Battery(b) => write!(f, "{b:?}"),
            Episode::PowerLoss {
                lost_at,
                lost_again_at,
                back,
            } => {
                write!(f, "power lost {}", When(*lost_at))?;
                if let Some(again) = lost_again_at {
                    write!(f, ", again {}", When(*again))?;
                }
                match back {
                    Some((b, how)) => write!(f, ", back {} by {how:?}", When(*b)),
                    None => write!(f, ", never back"),
                }
            }
            Episode::Codes { ecu, reports } => {
                write!(f, "ecu {ecu:#06x} snapshots:")?;
                for (t, codes) in reports {
                    write!(f, " [{}", When(*t))?;
                    for (dtc, status) in codes {
                        write!(f, " {dtc}/{status:#04x}")?;
                    }
                    write!(f, "]")?;
                }
                Ok(())
            }
        }
    }
}

/// How the dongle tells that a lamp changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// LAMP on/off when it changes, and the HEARTBEAT bits.
    LampMessages,
    /// Only the HEARTBEAT bits: the lamp is seen at the next heartbeat.
    HeartbeatsOnly,
}

/// Which R-LEAD-LAMP rule is meant to close the lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseBy {
    /// (a): the next drive after the lamp is seen off runs 16-28 min.
    /// With `Report::HeartbeatsOnly` and a morning clear, the lamp is seen
    /// off only by a heartbeat of the run that follows: that run began
    /// with the lamp lit as far as the appliance knows, so it is not clean
    /// and the run after it closes the lead.
    CleanRun,
    /// (b): short trips (5-9 min) after the lamp is seen off; with
    /// `relit_in_third` the lamp comes on for two minutes during the third
    /// trip, which resets the count, so the seventh trip closes it.
    FourCycles { relit_in_third: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Back {
    PowerRestored,
    /// The unit reboots: a HELLO with the power-loss flag, a new sequence.
    PowerLossHello,
    /// The HELLO, then a POWER_RESTORED a second later: the HELLO closes
    /// the lead, the POWER_RESTORED finds nothing to close.
    HelloThenRestored,
}

/// R-LEAD-BATT. One parked heartbeat each evening: 11.0-11.5 V from day
/// `weak_from`; 12.5-12.8 V from `new_battery`; or, from `charging_from`, a
/// charger's ramp of 11.30 V + 0.25 V a day. The vehicle drives every day
/// except `idle` days (from, until) and leaves reach for good on day
/// `away_from`. Expected: what the exact 7-day sums say, which must tell
/// the intended [`BatteryStory`].
#[derive(Clone, Copy, Debug)]
pub struct Battery {
    pub weak_from: u64,
    pub new_battery: Option<u64>,
    pub charging_from: Option<u64>,
    pub away_from: Option<u64>,
    pub idle: Option<(u64, u64)>,
    pub story: BatteryStory,
}

/// What a battery episode is meant to show; the ground truth must agree
/// or the schedule is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatteryStory {
    /// Opens while weak, closes on a parked heartbeat after the change.
    OpensThenRecovers,
    /// Opens and is still open at the end.
    StaysOpen,
    /// Opens; on a charger for 4 days, then out of reach: each daily tick
    /// drops the oldest sample, and the fourth closes it (three ramp
    /// samples, 35.40 V over 3, above 11.7 V; every window before holds
    /// at most 81.20 V over 7 or 11.675 V a sample, below it).
    RecoversByTick,
    /// Weak for 3 days, then out of reach: as the older healthy samples
    /// slide out, the tick opens it (3 weak samples left, driven 4 days
    /// before); never low while in reach (at worst 82.6 V over 7).
    OpensByTick,
    /// Weak while parked for over a week undriven: opens only with the
    /// next IGNITION_ON (a late-evening trip), then recovers.
    OpensOnIgnition,
}

/// A lamp episode by the day, before its times are drawn.
#[derive(Clone, Copy)]
struct LampPlan {
    lamp: u8,
    lit_day: u64,
    clear_day: Option<u64>,
    report: Report,
    close_by: CloseBy,
    /// Off at dawn with a drive before any heartbeat (see [`CloseBy::CleanRun`]).
    morning_clear: bool,
}

/// One trip: IGNITION_ON, running heartbeats, IGNITION_OFF.
#[derive(Clone, Copy, Debug)]
struct Trip {
    start: u64,
    dur_s: u32,
    /// Battery voltage while running (the alternator charging).
    mv: u16,
}

#[derive(Clone, Debug, Default)]
struct DayPlan {
    trips: Vec<Trip>,
    /// Parked heartbeats: (time, battery mV).
    parked: Vec<(u64, u16)>,
}

/// What the dongle says, before seq, odometer and lamp bits are filled in.
#[derive(Clone, Debug)]
enum Say {
    Hello { after_power_loss: bool },
    IgnitionOn,
    Running { run_s: u32, mv: u16 },
    IgnitionOff { run_s: u32 },
    Parked { mv: u16 },
    Lamp { lamp: u8, lit: bool },
    Codes(DtcReport),
    PowerLost(PowerLossReason),
    PowerRestored { down_s: u32 },
}

/// ISO 14229-1 status bytes and the class R-LEAD-DTC gives each, first
/// match wins (bit 0 testFailed, 1 testFailedThisOperationCycle, 2
/// pendingDTC, 3 confirmedDTC, 5 testFailedSinceLastClear, 7
/// warningIndicatorRequested).
const STATUSES: &[(u8, Option<DtcClass>)] = &[
    (0x09, Some(DtcClass::Permanent)), // testFailed + confirmed
    (0x81, Some(DtcClass::Permanent)), // testFailed + warningIndicator
    (0x2F, Some(DtcClass::Permanent)), // failing, confirmed, pending, ...
    (0x08, Some(DtcClass::Sporadic)),  // confirmed, not failing now
    (0x20, Some(DtcClass::Sporadic)),  // testFailedSinceLastClear only
    (0x24, Some(DtcClass::Sporadic)),  // + pending: sporadic matches first
    (0xA8, Some(DtcClass::Sporadic)),  // warningIndicator + confirmed, not failing
    (0x01, Some(DtcClass::Potential)), // testFailed alone
    (0x02, Some(DtcClass::Potential)), // testFailedThisOperationCycle
    (0x04, Some(DtcClass::Potential)), // pendingDTC
    (0x84, Some(DtcClass::Potential)), // pending + warningIndicator
    (0x00, None),
    (0x10, None), // testNotCompletedSinceLastClear
    (0x40, None), // testNotCompletedThisOperationCycle
    (0x50, None),
    (0x80, None), // warningIndicatorRequested alone is no class
];

fn class_of(status: u8) -> Option<DtcClass> {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .and_then(|(_, c)| *c)
}

const CODES: &[&str] = &[
    "P0301", "P0420", "P0171", "U0123-1C", "C0035", "B1318", "P0A80", "P0300-00", "P2002-71",
];
const LAMPS: &[u8] = &[1, 2, 3, 5, 6, 7, 8, 9, 12, 13];
const ECUS: &[u16] = &[0x07E0, 0x07E1, 0x0760];
/// Brands that need no consent with the default `[consent] brands`.
const FREE_WMIS: &[&str] = &["WF0", "VF1", "VF3", "TMB", "JTD", "W0L", "KMH", "YV1"];

// ---- One lead, as the comparison sees it ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Open,
    Closed,
}

/// The fields of a lead the rules decide.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Truth {
    pub device_id: u64,
    pub ty: LeadType,
    pub subject: Subject,
    pub opened_at_ms: u64,
    pub status: Status,
    pub closed_at_ms: Option<u64>,
    pub close_reason: Option<CloseReason>,
    pub class: Option<DtcClass>,
}

impl Truth {
    fn open(device_id: u64, ty: LeadType, subject: Subject, opened_at_ms: u64) -> Truth {
        Truth {
            device_id,
            ty,
            subject,
            opened_at_ms,
            status: Status::Open,
            closed_at_ms: None,
            close_reason: None,
            class: None,
        }
    }

    fn closed(mut self, at_ms: Option<u64>, reason: CloseReason) -> Truth {
        if let Some(at) = at_ms {
            self.status = Status::Closed;
            self.closed_at_ms = Some(at);
            self.close_reason = Some(reason);
        }
        self
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unit {} {}", self.device_id, self.ty.as_str())?;
        match self.subject {
            Subject::None => {}
            Subject::Lamp(l) => write!(f, " lamp {l}")?,
            Subject::Code { ecu, dtc } => write!(f, " ecu {ecu:#06x} {dtc}")?,
        }
        if let Some(c) = self.class {
            write!(f, " ({})", c.as_str())?;
        }
        write!(f, ": opened {}", When(self.opened_at_ms))?;
        match (self.status, self.closed_at_ms, self.close_reason) {
            (Status::Open, None, None) => write!(f, ", open"),
            (s, at, why) => {
                let at = at.map_or("-".into(), |t| When(t).to_string());
                write!(
                    f,
                    ", {} at {at} by {}",
                    format!("{s:?}").to_lowercase(),
                    why.map_or("-", |r| r.as_str())
                )
            }
        }
    }
}

// ---- A vehicle: ordinary life plus episodes ----

/// One unit of the lot: who it is, its days, what happens to it, and what
/// it ends up sending.
pub struct Vehicle {
    pub device_id: u64,
    /// `None`: the unit's HELLO says its VIN is unknown (not gated, R-VEH-4).
    pub vin: Option<Vin>,
    /// A Volkswagen without OBID consent (R-VEH-4): no lead, whatever it says.
    pub gated: bool,
    pub episodes: Vec<Episode>,
    /// The messages it sends, in order; built by [`Lot::generate`].
    pub sent: Vec<Message>,
    hello_at: u64,
    first_seq: u16,
    first_km: u32,
    run_hb_s: u32,
    days: Vec<DayPlan>,
}

fn healthy_mv(rng: &mut StdRng) -> u16 {
    rng.random_range(12_400..=12_800)
}

fn ordinary_trip(day: u64, rng: &mut StdRng) -> Trip {
    let window = if rng.random_bool(0.5) {
        at(day, 6, 0)
    } else {
        at(day, 14, 0)
    };
    Trip {
        start: window + rng.random_range(0..150 * MIN),
        dur_s: rng.random_range(16 * 60..=28 * 60),
        mv: rng.random_range(13_800..=14_400),
    }
}

fn short_trip(start: u64, rng: &mut StdRng) -> Trip {
    Trip {
        start,
        dur_s: rng.random_range(5 * 60..=9 * 60),
        mv: rng.random_range(13_800..=14_400),
    }
}

fn evening(day: u64, rng: &mut StdRng) -> u64 {
    at(day, 19, 0) + rng.random_range(0..115 * MIN)
}

impl Vehicle {
    /// Ordinary life: a HELLO at the start; a parked heartbeat every
    /// evening (and mornings for some units) with a healthy battery, no
    /// lamps, no codes; a 16-28 minute trip on about half the days.
    fn ordinary(idx: usize, rng: &mut StdRng) -> Vehicle {
        let wmi = FREE_WMIS.choose(rng).copied().unwrap_or("WF0");
        let vin = Vin::parse(&format!("{wmi}FC{idx:012}"));
        let twice_a_day = rng.random_bool(0.2);
        let drive_p = rng.random_range(0.35..0.65);
        let days = (0..DAYS)
            .map(|d| {
                let mut plan = DayPlan::default();
                if twice_a_day {
                    plan.parked.push((
                        at(d, 10, 0) + rng.random_range(0..55 * MIN),
                        healthy_mv(rng),
                    ));
                }
                if rng.random_bool(drive_p) {
                    plan.trips.push(ordinary_trip(d, rng));
                }
                plan.parked.push((
                    at(d, 22, 0) + rng.random_range(0..55 * MIN),
                    healthy_mv(rng),
                ));
                plan
            })
            .collect();
        Vehicle {
            device_id: 0x00C0_FFEE_0000 + idx as u64,
            vin,
            gated: false,
            episodes: Vec::new(),
            sent: Vec::new(),
            hello_at: T0 + 5 * SEC + idx as u64 * SEC,
            // PROTOCOL.md 2: seq wraps from 65535 to 0; some units do it
            // within their first days.
            first_seq: if idx.is_multiple_of(25) {
                65_500
            } else {
                rng.random()
            },
            first_km: rng.random_range(5_000..150_000),
            run_hb_s: [300, 600, 600, 900, 900, 900]
                .choose(rng)
                .copied()
                .unwrap_or(900),
            days,
        }
    }

    fn day(&mut self, day: u64) -> &mut DayPlan {
        &mut self.days[day as usize]
    }

    fn trips(&self) -> impl Iterator<Item = &Trip> {
        self.days.iter().flat_map(|d| d.trips.iter())
    }

    fn add_lamp(&mut self, rng: &mut StdRng, plan: LampPlan) {
        let LampPlan {
            lamp,
            lit_day,
            clear_day,
            report,
            close_by,
            morning_clear,
        } = plan;
        let lit_at = evening(lit_day, rng);
        // A full run with the lamp lit, which must not close anything.
        if self.day(lit_day + 1).trips.is_empty() {
            let trip = ordinary_trip(lit_day + 1, rng);
            self.day(lit_day + 1).trips.push(trip);
        }
        let clear_at = clear_day.map(|d| {
            if morning_clear {
                // Goes off at dawn; a drive follows before any heartbeat.
                let trip = Trip {
                    start: at(d, 6, 0) + rng.random_range(0..150 * MIN),
                    ..ordinary_trip(d, rng)
                };
                self.day(d).trips = vec![trip];
                at(d, 5, 0) + rng.random_range(0..50 * MIN)
            } else {
                evening(d, rng)
            }
        });
        if let Some(d) = clear_day {
            match close_by {
                CloseBy::CleanRun => {
                    if self.day(d + 1).trips.is_empty() {
                        let trip = ordinary_trip(d + 1, rng);
                        self.day(d + 1).trips.push(trip);
                    }
                }
                CloseBy::FourCycles { relit_in_third } => {
                    let days = if relit_in_third { 4 } else { 2 };
                    for day in d + 1..=d + days {
                        let morning =
                            short_trip(at(day, 7, 0) + rng.random_range(0..20 * MIN), rng);
                        let afternoon =
                            short_trip(at(day, 16, 0) + rng.random_range(0..20 * MIN), rng);
                        self.day(day).trips = vec![morning, afternoon];
                    }
                }
            }
        }
        self.episodes.push(Episode::Lamp {
            lamp,
            lit_at,
            clear_at,
            report,
            close_by,
        });
    }

    fn add_battery(&mut self, rng: &mut StdRng, b: Battery) {
        let Battery {
            weak_from,
            new_battery,
            charging_from,
            idle,
            ..
        } = b;
        for (d, plan) in self.days.iter_mut().enumerate() {
            let d = d as u64;
            // Evenings only, so a day's decision falls on its last heartbeat.
            plan.parked.retain(|(t, _)| (*t - T0) % DAY >= 12 * HOUR);
            let weak = d >= weak_from && new_battery.is_none_or(|n| d < n);
            let fresh = new_battery.is_some_and(|n| d >= n);
            let charging = charging_from
                .filter(|c| d >= *c)
                .map(|c| (11_300 + 250 * (d - c)).min(12_800) as u16);
            for (_, mv) in plan.parked.iter_mut() {
                *mv = if let Some(ramp) = charging {
                    ramp
                } else if weak {
                    rng.random_range(11_000..=11_500)
                } else if fresh {
                    rng.random_range(12_500..=12_800)
                } else {
                    healthy_mv(rng)
                };
            }
            let idle_now = idle.is_some_and(|(from, to)| d >= from && d < to);
            if idle_now {
                plan.trips.clear();
            } else if plan.trips.is_empty() {
                plan.trips.push(ordinary_trip(d, rng));
            }
            if idle.is_some_and(|(_, to)| d == to) {
                // After the evening heartbeat and too short for a running
                // one: its IGNITION_ON is the day's last battery message.
                let start = at(d, 23, 20) + rng.random_range(0..10 * MIN);
                plan.trips = vec![Trip {
                    start,
                    dur_s: rng.random_range(150..=280),
                    mv: rng.random_range(13_800..=14_400),
                }];
            }
        }
        self.episodes.push(Episode::Battery(b));
    }

    /// Physical lamp state: (lamp, from, until) while lit.
    fn lamp_windows(&self) -> Vec<(u8, u64, u64)> {
        let mut out = Vec::new();
        for e in &self.episodes {
            if let Episode::Lamp {
                lamp,
                lit_at,
                clear_at,
                ..
            } = e
            {
                out.push((*lamp, *lit_at, clear_at.unwrap_or(u64::MAX)));
                if let Some(relit) = self.relight(e) {
                    out.push((*lamp, relit, relit + 2 * MIN));
                }
            }
        }
        out
    }

    /// The relight of a `FourCycles { relit_in_third: true }` episode:
    /// two minutes after the third trip after the clear starts.
    fn relight(&self, e: &Episode) -> Option<u64> {
        match e {
            Episode::Lamp {
                clear_at: Some(c),
                close_by:
                    CloseBy::FourCycles {
                        relit_in_third: true,
                    },
                ..
            } => self
                .trips()
                .filter(|t| t.start > *c)
                .nth(2)
                .map(|t| t.start + 2 * MIN),
            _ => None,
        }
    }

    fn silent_at(&self, t: u64, say: &Say) -> bool {
        self.episodes.iter().any(|e| match e {
            Episode::PowerLoss { lost_at, back, .. } => {
                t > *lost_at && back.is_none_or(|(b, _)| t < b) && !matches!(say, Say::PowerLost(_))
            }
            Episode::Battery(Battery {
                away_from: Some(d), ..
            }) => t >= at(*d, 0, 0),
            _ => false,
        })
    }

    /// Everything the unit sends, in order, with seq, odometer and lamp
    /// bits filled in as a conforming dongle would.
    fn build_messages(&self) -> Vec<Message> {
        let mut says: Vec<(u64, Say)> = vec![(
            self.hello_at,
            Say::Hello {
                after_power_loss: false,
            },
        )];
        for plan in &self.days {
            says.extend(plan.parked.iter().map(|&(t, mv)| (t, Say::Parked { mv })));
            for trip in &plan.trips {
                says.push((trip.start, Say::IgnitionOn));
                let mut run_s = self.run_hb_s;
                while run_s < trip.dur_s {
                    says.push((
                        trip.start + run_s as u64 * SEC,
                        Say::Running { run_s, mv: trip.mv },
                    ));
                    run_s += self.run_hb_s;
                }
                says.push((
                    trip.start + trip.dur_s as u64 * SEC,
                    Say::IgnitionOff { run_s: trip.dur_s },
                ));
            }
        }
        for e in &self.episodes {
            match e {
                Episode::Lamp {
                    lamp,
                    lit_at,
                    clear_at,
                    report: Report::LampMessages,
                    ..
                } => {
                    says.push((
                        *lit_at,
                        Say::Lamp {
                            lamp: *lamp,
                            lit: true,
                        },
                    ));
                    if let Some(c) = clear_at {
                        says.push((
                            *c,
                            Say::Lamp {
                                lamp: *lamp,
                                lit: false,
                            },
                        ));
                    }
                    if let Some(relit) = self.relight(e) {
                        says.push((
                            relit,
                            Say::Lamp {
                                lamp: *lamp,
                                lit: true,
                            },
                        ));
                        says.push((
                            relit + 2 * MIN,
                            Say::Lamp {
                                lamp: *lamp,
                                lit: false,
                            },
                        ));
                    }
                }
                Episode::Lamp {
                    report: Report::HeartbeatsOnly,
                    ..
                }
                | Episode::Battery(_) => {}
                Episode::PowerLoss {
                    lost_at,
                    lost_again_at,
                    back,
                } => {
                    says.push((*lost_at, Say::PowerLost(PowerLossReason::SupplyLow)));
                    if let Some(again) = lost_again_at {
                        says.push((*again, Say::PowerLost(PowerLossReason::Unplugged)));
                    }
                    match back {
                        Some((b, Back::PowerRestored)) => says.push((
                            *b,
                            Say::PowerRestored {
                                down_s: ((b - lost_at) / SEC) as u32,
                            },
                        )),
                        Some((b, Back::PowerLossHello)) => says.push((
                            *b,
                            Say::Hello {
                                after_power_loss: true,
                            },
                        )),
                        Some((b, Back::HelloThenRestored)) => {
                            says.push((
                                *b,
                                Say::Hello {
                                    after_power_loss: true,
                                },
                            ));
                            says.push((
                                b + SEC,
                                Say::PowerRestored {
                                    down_s: ((b - lost_at) / SEC) as u32,
                                },
                            ));
                        }
                        None => {}
                    }
                }
                Episode::Codes { ecu, reports } => {
                    for (t, codes) in reports {
                        let entries = codes
                            .iter()
                            .map(|&(dtc, status)| DtcEntry { dtc, status })
                            .collect();
                        says.push((*t, Say::Codes(DtcReport { ecu: *ecu, entries })));
                    }
                }
            }
        }
        says.retain(|(t, say)| !self.silent_at(*t, say));
        says.sort_by_key(|(t, _)| *t);
        let windows = self.lamp_windows();
        let lamps_at = |t: u64| -> u32 {
            windows
                .iter()
                .filter(|(_, from, until)| *from <= t && t < *until)
                .fold(0, |bits, (l, _, _)| bits | 1 << (l - 1))
        };
        let mut seq = self.first_seq;
        let mut km = self.first_km;
        let mut out = Vec::with_capacity(says.len());
        for (t, say) in says {
            let hb = |engine, run_s, km, battery_mv| Heartbeat {
                engine,
                run_s,
                odometer_km: km,
                battery_mv,
                lamps: lamps_at(t),
            };
            let body = match say {
                Say::Hello { after_power_loss } => {
                    if after_power_loss {
                        // PROTOCOL.md 4: a dongle that boots starts a new sequence.
                        seq = 1;
                    }
                    Body::Hello(Hello {
                        vin: self.vin,
                        firmware: Firmware(1, 4, 2),
                        after_power_loss,
                        flags: after_power_loss as u8,
                    })
                }
                Say::IgnitionOn => Body::IgnitionOn { odometer_km: km },
                Say::Running { run_s, mv } => {
                    Body::Heartbeat(hb(Engine::Running, run_s, km + run_s / 90, mv))
                }
                Say::IgnitionOff { run_s } => {
                    km += run_s / 90;
                    Body::IgnitionOff {
                        odometer_km: km,
                        run_s,
                    }
                }
                Say::Parked { mv } => Body::Heartbeat(hb(Engine::Parked, 0, km, mv)),
                Say::Lamp { lamp, lit } => Body::Lamp { lamp, lit },
                Say::Codes(report) => Body::DtcReport(report),
                Say::PowerLost(reason) => Body::PowerLost { reason },
                Say::PowerRestored { down_s } => Body::PowerRestored { down_s },
            };
            out.push(Message {
                seq,
                device_id: self.device_id,
                time_ms: t,
                body,
            });
            seq = seq.wrapping_add(1);
        }
        out
    }

    fn heartbeat_at_or_after(&self, t: u64) -> Option<u64> {
        self.sent
            .iter()
            .find(|m| m.time_ms >= t && matches!(m.body, Body::Heartbeat(_)))
            .map(|m| m.time_ms)
    }

    /// R-LEAD-LAMP, from the episode and the trip schedule.
    fn lamp_truth(&self, e: &Episode) -> Truth {
        let Episode::Lamp {
            lamp,
            lit_at,
            clear_at,
            report,
            close_by,
        } = e
        else {
            unreachable!("a lamp episode")
        };
        // Opened by the first report of the lamp lit: its LAMP on, or the
        // first heartbeat with its bit.
        let opened = match report {
            Report::LampMessages => *lit_at,
            Report::HeartbeatsOnly => self
                .heartbeat_at_or_after(*lit_at)
                .expect("a heartbeat after the lamp came on"),
        };
        let truth = Truth::open(
            self.device_id,
            LeadType::WarningLamp,
            Subject::Lamp(*lamp),
            opened,
        );
        let Some(clear_at) = clear_at else {
            return truth;
        };
        // Lit (as the appliance knows it) until its LAMP off or a heartbeat without the bit.
        let seen_off = match report {
            Report::LampMessages => *clear_at,
            Report::HeartbeatsOnly => self
                .heartbeat_at_or_after(*clear_at)
                .expect("a heartbeat after the lamp went off"),
        };
        let mut after = self.trips().filter(|t| t.start > seen_off);
        let end = batch_clock(DAYS - 1);
        match close_by {
            CloseBy::CleanRun => {
                // (a): the first message of the next run with run_s >= 900:
                // a running heartbeat, else its IGNITION_OFF.
                let trip = after.next().expect("a trip after the clear");
                assert!(
                    trip.dur_s >= CLEAN_RUN_S,
                    "schedule: the clean run must be 15 minutes or more"
                );
                let hb = (1..)
                    .map(|k| k * self.run_hb_s)
                    .take_while(|s| *s < trip.dur_s)
                    .find(|s| *s >= CLEAN_RUN_S);
                let close = trip.start + hb.unwrap_or(trip.dur_s) as u64 * SEC;
                truth.closed((close < end).then_some(close), CloseReason::EngineRun15Min)
            }
            CloseBy::FourCycles { relit_in_third } => {
                // (b): the fourth clean cycle ends; a cycle with the lamp lit
                // resets the count.
                let needed = if *relit_in_third { 7 } else { 4 };
                let trips: Vec<Trip> = after.take(needed).copied().collect();
                assert_eq!(
                    trips.len(),
                    needed,
                    "schedule: enough short trips after the clear"
                );
                assert!(
                    trips.iter().all(|t| t.dur_s < CLEAN_RUN_S),
                    "schedule: (b) needs trips under 15 minutes"
                );
                let last = trips[needed - 1];
                let close = last.start + last.dur_s as u64 * SEC;
                truth.closed((close < end).then_some(close), CloseReason::FourCleanStarts)
            }
        }
    }

    /// R-LEAD-DISC, from the episode.
    fn power_truth(&self, e: &Episode) -> Truth {
        let Episode::PowerLoss { lost_at, back, .. } = e else {
            unreachable!("a power episode")
        };
        // A second POWER_LOST while the lead is open opens nothing new.
        Truth::open(
            self.device_id,
            LeadType::Disconnected,
            Subject::None,
            *lost_at,
        )
        .closed(back.map(|(b, _)| b), CloseReason::PowerRestored)
    }

    /// R-LEAD-DTC, walking the ECU's snapshots in order.
    fn codes_truth(&self, e: &Episode) -> Vec<Truth> {
        let Episode::Codes { ecu, reports } = e else {
            unreachable!("a codes episode")
        };
        let mut open: BTreeMap<Dtc, Truth> = BTreeMap::new();
        let mut done = Vec::new();
        for (t, codes) in reports {
            let listed: BTreeMap<Dtc, DtcClass> = codes
                .iter()
                .filter_map(|&(d, s)| class_of(s).map(|c| (d, c)))
                .collect();
            let gone: Vec<Dtc> = open
                .keys()
                .filter(|d| !listed.contains_key(d))
                .copied()
                .collect();
            for d in gone {
                if let Some(lead) = open.remove(&d) {
                    done.push(lead.closed(Some(*t), CloseReason::CodeCleared));
                }
            }
            for (d, class) in listed {
                let subject = Subject::Code { ecu: *ecu, dtc: d };
                open.entry(d)
                    .or_insert_with(|| {
                        Truth::open(self.device_id, LeadType::ErrorCode, subject, *t)
                    })
                    .class = Some(class);
            }
        }
        done.extend(open.into_values());
        done
    }

    /// R-LEAD-BATT from exact sums, evaluated as the spec says: on every
    /// IGNITION_ON and HEARTBEAT, and on the tick, over the parked samples
    /// of the 7 days before the appliance clock. `Err` names the days whose
    /// decision would fall on a message that is not the unit's last battery
    /// message of that day's batch: an appliance deciding once per batch
    /// and one deciding per message would date it differently, so the
    /// schedule must not leave it to chance.
    fn battery_truth(&self) -> Result<Vec<Truth>, Vec<u64>> {
        let mut parked: Vec<(u64, u64)> = Vec::new();
        let mut driven: Option<u64> = None;
        let mut open: Option<u64> = None;
        let mut leads = Vec::new();
        let mut ambiguous = Vec::new();
        let mut msgs = self.sent.iter().peekable();
        let verdict = |parked: &[(u64, u64)], now: u64| -> Option<bool> {
            let (sum, n) = parked
                .iter()
                .filter(|(t, _)| *t >= now - WEEK)
                .fold((0, 0), |(s, n), (_, mv)| (s + mv, n + 1));
            if n < MIN_PARKED_SAMPLES {
                None
            } else if sum < LOW_BATTERY_MV * n {
                Some(true)
            } else if sum > LOW_BATTERY_MV * n {
                Some(false)
            } else {
                None
            }
        };
        for day in 0..DAYS {
            let now = batch_clock(day);
            let todays: Vec<&Message> =
                std::iter::from_fn(|| msgs.next_if(|m| m.time_ms < now)).collect();
            let battery_msgs: Vec<&&Message> = todays
                .iter()
                .filter(|m| matches!(m.body, Body::Heartbeat(_) | Body::IgnitionOn { .. }))
                .collect();
            let mut judge = |at: u64,
                             parked: &[(u64, u64)],
                             driven: Option<u64>,
                             open: &mut Option<u64>|
             -> bool {
                match (verdict(parked, now), *open) {
                    (Some(true), None) if driven.is_some_and(|d| d >= now - WEEK) => {
                        *open = Some(at);
                        true
                    }
                    (Some(false), Some(opened)) => {
                        leads.push(
                            Truth::open(
                                self.device_id,
                                LeadType::LowBattery,
                                Subject::None,
                                opened,
                            )
                            .closed(Some(at), CloseReason::BatteryRecovered),
                        );
                        *open = None;
                        true
                    }
                    _ => false,
                }
            };
            for (i, m) in battery_msgs.iter().enumerate() {
                if let Body::Heartbeat(hb) = &m.body {
                    match hb.engine {
                        Engine::Parked => parked.push((m.time_ms, hb.battery_mv as u64)),
                        Engine::Running => driven = Some(m.time_ms),
                    }
                } else {
                    driven = Some(m.time_ms);
                }
                if judge(m.time_ms, &parked, driven, &mut open) && i + 1 != battery_msgs.len() {
                    ambiguous.push(day);
                }
            }
            // The tick at the same clock: it can only decide for a unit the
            // batch did not judge (nothing changed for the others).
            let ticked = judge(now, &parked, driven, &mut open);
            assert!(
                !ticked || battery_msgs.is_empty(),
                "the tick decided for a unit judged in the same batch"
            );
        }
        if let Some(opened) = open {
            leads.push(Truth::open(
                self.device_id,
                LeadType::LowBattery,
                Subject::None,
                opened,
            ));
        }
        if ambiguous.is_empty() {
            Ok(leads)
        } else {
            Err(ambiguous)
        }
    }

    /// Checks that a battery episode's exact sums told the intended story.
    fn check_story(&self, leads: &[Truth]) {
        for e in &self.episodes {
            let Episode::Battery(Battery { story, .. }) = e else {
                continue;
            };
            let tick_times: Vec<u64> = (0..DAYS).map(batch_clock).collect();
            let ok = match (story, leads) {
                (BatteryStory::OpensThenRecovers, [l]) => {
                    l.status == Status::Closed && !tick_times.contains(&l.closed_at_ms.unwrap_or(0))
                }
                (BatteryStory::StaysOpen, [l]) => l.status == Status::Open,
                (BatteryStory::RecoversByTick, [l]) => {
                    l.closed_at_ms.is_some_and(|t| tick_times.contains(&t))
                }
                (BatteryStory::OpensByTick, [l]) => {
                    l.status == Status::Open && tick_times.contains(&l.opened_at_ms)
                }
                (BatteryStory::OpensOnIgnition, [l]) => self.sent.iter().any(|m| {
                    m.time_ms == l.opened_at_ms && matches!(m.body, Body::IgnitionOn { .. })
                }),
                _ => false,
            };
            assert!(
                ok,
                "schedule: unit {} was meant to show {story:?}, its sums give {leads:?}",
                self.device_id
            );
        }
    }

    /// Every lead this vehicle must have, in no particular order.
    fn truth(&self) -> Vec<Truth> {
        if self.gated {
            return Vec::new();
        }
        let mut out = Vec::new();
        for e in &self.episodes {
            match e {
                Episode::Lamp { .. } => out.push(self.lamp_truth(e)),
                Episode::PowerLoss { .. } => out.push(self.power_truth(e)),
                Episode::Codes { .. } => out.extend(self.codes_truth(e)),
                Episode::Battery(_) => {}
            }
        }
        let battery = self
            .battery_truth()
            .expect("battery decisions are unambiguous once built");
        self.check_story(&battery);
        out.extend(battery);
        out
    }
}

// ---- The lot ----

/// The 200 vehicles, each with every message it sends over the 90 days.
pub struct Lot {
    pub vehicles: Vec<Vehicle>,
}

impl Lot {
    /// The cast, spread over the device ids by a shuffle: 36 lamp
    /// vehicles, 20 battery, 20 power, 39 with error codes (9 of them also
    /// lamp vehicles), 3 Volkswagens without consent and 2 units that do
    /// not know their VIN; everyone else lives an ordinary life.
    pub fn generate(seed: u64) -> Lot {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut vehicles: Vec<Vehicle> = (0..VEHICLES)
            .map(|i| Vehicle::ordinary(i, &mut rng))
            .collect();
        let mut order: Vec<usize> = (0..VEHICLES).collect();
        order.shuffle(&mut rng);
        let mut cast = order.into_iter();
        let mut next = || cast.next().expect("enough vehicles for the cast");

        let mut lamp_vehicles = Vec::new();
        for i in 0..36 {
            let v = next();
            lamp_vehicles.push(v);
            let report = if i % 3 == 0 {
                Report::HeartbeatsOnly
            } else {
                Report::LampMessages
            };
            let close_by = match i % 4 {
                0 | 1 => CloseBy::CleanRun,
                2 => CloseBy::FourCycles {
                    relit_in_third: false,
                },
                _ => CloseBy::FourCycles {
                    relit_in_third: report == Report::LampMessages,
                },
            };
            let lamp = LAMPS.choose(&mut rng).copied().unwrap_or(1);
            if i >= 32 {
                // Lit near the end and never cleared: still open.
                let lit = rng.random_range(60..85);
                let plan = LampPlan {
                    lamp,
                    lit_day: lit,
                    clear_day: None,
                    report,
                    close_by,
                    morning_clear: false,
                };
                vehicles[v].add_lamp(&mut rng, plan);
                continue;
            }
            let lit = rng.random_range(3..45);
            let clear = lit + rng.random_range(1..=6);
            let morning_clear =
                report == Report::HeartbeatsOnly && close_by == CloseBy::CleanRun && i % 2 == 0;
            let plan = LampPlan {
                lamp,
                lit_day: lit,
                clear_day: Some(clear),
                report,
                close_by,
                morning_clear,
            };
            vehicles[v].add_lamp(&mut rng, plan);
            if i == 1 {
                // (a) decided by the IGNITION_OFF: heartbeats every 10
                // minutes of run time, and a 16-19 minute run has none at
                // or past 15 minutes.
                vehicles[v].run_hb_s = 600;
                for trip in vehicles[v].day(clear + 1).trips.iter_mut() {
                    trip.dur_s = rng.random_range(960..=1140);
                }
            }
            if i >= 26 {
                // The same lamp lit again after the lead auto-closed: a new lead.
                let lit2 = clear + rng.random_range(10..20);
                let clear2 = lit2 + rng.random_range(1..=4);
                let again = LampPlan {
                    lit_day: lit2,
                    clear_day: Some(clear2),
                    report: Report::LampMessages,
                    close_by: CloseBy::CleanRun,
                    morning_clear: false,
                    ..plan
                };
                vehicles[v].add_lamp(&mut rng, again);
            }
        }

        for i in 0..20 {
            let v = next();
            let w = rng.random_range(14..45);
            let quiet = Battery {
                weak_from: w,
                new_battery: None,
                charging_from: None,
                away_from: None,
                idle: None,
                story: BatteryStory::StaysOpen,
            };
            let episode = match i {
                0..=9 => Battery {
                    new_battery: Some(w + rng.random_range(8..20)),
                    story: BatteryStory::OpensThenRecovers,
                    ..quiet
                },
                10..=12 => Battery {
                    weak_from: rng.random_range(60..78),
                    ..quiet
                },
                13..=14 => Battery {
                    charging_from: Some(w + 8),
                    away_from: Some(w + 12),
                    story: BatteryStory::RecoversByTick,
                    ..quiet
                },
                15..=16 => Battery {
                    away_from: Some(w + 3),
                    story: BatteryStory::OpensByTick,
                    ..quiet
                },
                // Out of reach while weak: the samples slide out, none is
                // healthy, and below 3 samples there is no verdict.
                17 => Battery {
                    away_from: Some(w + rng.random_range(8..12)),
                    ..quiet
                },
                // Undriven from 3 days before it turns weak until a late
                // trip 12 days later (more than the 7-day window).
                _ => Battery {
                    new_battery: Some(w + 9 + rng.random_range(5..10)),
                    idle: Some((w - 3, w + 9)),
                    story: BatteryStory::OpensOnIgnition,
                    ..quiet
                },
            };
            vehicles[v].add_battery(&mut rng, episode);
        }

        for i in 0..20 {
            let v = next();
            let lost_day = if (17..=18).contains(&i) {
                rng.random_range(80..88)
            } else {
                rng.random_range(3..70)
            };
            let lost_at = at(lost_day, 18, 0) + rng.random_range(0..55 * MIN);
            let back_at = if rng.random_bool(0.3) {
                at(lost_day, 20, 30) + rng.random_range(0..60 * MIN)
            } else {
                at(lost_day + rng.random_range(1..5), 11, 0) + rng.random_range(0..55 * MIN)
            };
            let how = [
                Back::PowerRestored,
                Back::PowerLossHello,
                Back::HelloThenRestored,
            ][i % 3];
            let (again, back) = match i {
                14..=16 => (
                    Some(lost_at + rng.random_range(10 * MIN..back_at - lost_at - MIN)),
                    Some((back_at, how)),
                ),
                17..=18 => (None, None),
                _ => (None, Some((back_at, how))),
            };
            vehicles[v].episodes.push(Episode::PowerLoss {
                lost_at,
                lost_again_at: again,
                back,
            });
            if i == 19 {
                // Restored, then lost again weeks later: a second lead.
                let lost2 = at(lost_day + 12, 18, 0) + rng.random_range(0..55 * MIN);
                let back2 = at(lost_day + 14, 11, 0) + rng.random_range(0..55 * MIN);
                vehicles[v].episodes.push(Episode::PowerLoss {
                    lost_at: lost2,
                    lost_again_at: None,
                    back: Some((back2, Back::PowerLossHello)),
                });
            }
        }

        let mut code_vehicles: Vec<usize> = (0..30).map(|_| next()).collect();
        code_vehicles.extend(lamp_vehicles.iter().step_by(4));
        for v in code_vehicles {
            let ecus: Vec<u16> = if rng.random_bool(0.3) {
                vec![0x07E0, 0x07E1]
            } else {
                vec![ECUS.choose(&mut rng).copied().unwrap_or(0x07E0)]
            };
            for ecu in ecus {
                let episode = codes_episode(&mut rng, ecu);
                vehicles[v].episodes.push(episode);
            }
        }

        // R-VEH-4: Volkswagens without consent report a lamp, codes and a
        // power loss, and get no lead for any of it.
        for i in 0..3 {
            let v = next();
            vehicles[v].vin = Vin::parse(&format!("WVWZZZ1K{v:09}"));
            vehicles[v].gated = true;
            match i {
                0 => vehicles[v].add_lamp(
                    &mut rng,
                    LampPlan {
                        lamp: 1,
                        lit_day: 10,
                        clear_day: Some(12),
                        report: Report::LampMessages,
                        close_by: CloseBy::CleanRun,
                        morning_clear: false,
                    },
                ),
                1 => {
                    let episode = codes_episode(&mut rng, 0x07E0);
                    vehicles[v].episodes.push(episode);
                }
                _ => vehicles[v].episodes.push(Episode::PowerLoss {
                    lost_at: at(20, 18, 10),
                    lost_again_at: None,
                    back: Some((at(21, 11, 5), Back::PowerRestored)),
                }),
            }
        }
        // A HELLO that says the VIN is unknown is not gated.
        for i in 0..2 {
            let v = next();
            vehicles[v].vin = None;
            if i == 0 {
                let plan = LampPlan {
                    lamp: 6,
                    lit_day: 30,
                    clear_day: Some(33),
                    report: Report::LampMessages,
                    close_by: CloseBy::FourCycles {
                        relit_in_third: false,
                    },
                    morning_clear: false,
                };
                vehicles[v].add_lamp(&mut rng, plan);
            } else {
                let episode = codes_episode(&mut rng, 0x0760);
                vehicles[v].episodes.push(episode);
            }
        }

        for v in vehicles.iter_mut() {
            v.settle_battery_schedule();
        }
        Lot { vehicles }
    }

    /// Every lead the appliance must hold at the end.
    pub fn ground_truth(&self) -> Vec<Truth> {
        let mut all: Vec<Truth> = self.vehicles.iter().flat_map(Vehicle::truth).collect();
        all.sort();
        all
    }

    /// Each day's payloads, all units interleaved by time.
    pub fn payloads_by_day(&self) -> Vec<Vec<Vec<u8>>> {
        let mut days: Vec<Vec<&Message>> = vec![Vec::new(); DAYS as usize];
        for v in &self.vehicles {
            for m in &v.sent {
                days[((m.time_ms - T0) / DAY) as usize].push(m);
            }
        }
        days.into_iter()
            .map(|mut msgs| {
                msgs.sort_by_key(|m| (m.time_ms, m.device_id));
                msgs.into_iter().map(Message::encode).collect()
            })
            .collect()
    }
}

impl Vehicle {
    /// Builds the messages, then keeps trips off the days where a battery
    /// decision would otherwise fall on an IGNITION_ON or running heartbeat
    /// that is not the day's last battery message (see `battery_truth`).
    fn settle_battery_schedule(&mut self) {
        for _ in 0..10 {
            self.sent = self.build_messages();
            if self.gated {
                return;
            }
            match self.battery_truth() {
                Ok(_) => return,
                Err(days) => {
                    assert!(
                        !self
                            .episodes
                            .iter()
                            .any(|e| matches!(e, Episode::Lamp { .. })),
                        "schedule: unit {} has lamp episodes that depend on its trips",
                        self.device_id
                    );
                    for d in days {
                        self.day(d).trips.clear();
                    }
                }
            }
        }
        panic!(
            "schedule: unit {}'s battery decisions stay ambiguous",
            self.device_id
        );
    }
}

/// 2-4 snapshots of one ECU holding 1-3 codes, each present (with a status
/// of any class, or of none) or absent; the last one is empty half the time.
fn codes_episode(rng: &mut StdRng, ecu: u16) -> Episode {
    let n = rng.random_range(1..=3);
    let codes: Vec<Dtc> = CODES
        .choose_multiple(rng, n)
        .filter_map(|c| Dtc::parse(c))
        .collect();
    let reports_n = rng.random_range(2..=4);
    let mut days: Vec<u64> = (2..88)
        .collect::<Vec<_>>()
        .choose_multiple(rng, reports_n)
        .copied()
        .collect();
    days.sort_unstable();
    let last = days.len() - 1;
    let reports = days
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let t = at(d, 12, 0) + rng.random_range(0..55 * MIN);
            let entries = if i == last && rng.random_bool(0.5) {
                Vec::new()
            } else {
                let mut entries = Vec::new();
                for &dtc in &codes {
                    if rng.random_bool(0.75) {
                        entries.push((dtc, STATUSES.choose(rng).map_or(0x09, |s| s.0)));
                    }
                }
                entries
            };
            (t, entries)
        })
        .collect();
    Episode::Codes { ecu, reports }
}
