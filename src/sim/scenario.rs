//! What happens on the simulated lot: each vehicle's profile (identity,
//! battery, temperament) and its episodes (drives, lamps, fault codes, power
//! losses, trips out of radio reach). Either drawn from the lot's seed, a day
//! at a time, or scripted by a test. Pure: no IO, no clock, only arguments.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::identity::{draw_identities, Identity};
use crate::link::message::{Dtc, DtcEntry, Firmware, PowerLossReason, Vin};

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// ECU addresses every simulated vehicle answers for (UDS physical request
/// ids as VW-group and most OBD tools use them).
pub const ECUS: [u16; 5] = [0x07E0, 0x07E1, 0x0713, 0x0714, 0x0715];

/// ISO 14229-1 status bytes the simulator uses (bit 0 testFailed, 1
/// testFailedThisOperationCycle, 2 pendingDTC, 3 confirmedDTC, 5
/// testFailedSinceLastClear).
pub mod status {
    /// Failing now, confirmed, since last clear: a lit-lamp fault.
    pub const ACTIVE: u8 = 0x2F;
    /// Failing now and confirmed.
    pub const FAILED_CONFIRMED: u8 = 0x09;
    /// Pending only: failed once, not yet confirmed.
    pub const PENDING: u8 = 0x04;
    /// Confirmed and failed since the last clear, not failing now.
    pub const HISTORIC: u8 = 0x28;
    /// Confirmed only: stored, not failing now.
    pub const CONFIRMED: u8 = 0x08;
}

/// The 12 V battery's condition, which sets the voltages heartbeats report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatteryHealth {
    /// About 12.5-12.8 V parked, 14.0-14.4 V running.
    Healthy,
    /// Parked mean under 11.7 V; about 13.8-14.1 V running.
    Weak,
}

/// One thing that happens to a vehicle, at a time chosen by the script or
/// the generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Episode {
    /// IGNITION_ON, heartbeats every 60 s, IGNITION_OFF after `duration_s`.
    /// Ignored while the engine already runs.
    Drive { duration_s: u32, distance_km: u32 },
    /// A warning lamp lit or cleared: a LAMP message, and the heartbeat bit.
    Lamp { lamp: u8, lit: bool },
    /// Stores (`Some(status)`) or clears (`None`) one code in an ECU; the
    /// unit reports the ECU's whole new snapshot.
    Dtc {
        ecu: u16,
        dtc: Dtc,
        status: Option<u8>,
    },
    /// POWER_LOST as a last gasp, silence for `down_s`, then HELLO with the
    /// power-loss flag and POWER_RESTORED. Waits for a running engine to stop.
    PowerLoss {
        reason: PowerLossReason,
        down_s: u32,
    },
    /// Out of radio reach for `duration_s`: the unit buffers, then replays.
    Away { duration_s: u32 },
    /// A new 12 V battery: weak becomes healthy.
    BatteryReplaced,
}

/// A unit whose behaviour a test or an end-to-end scenario spells out.
/// Heartbeats still come on their own (every 15 min parked, 60 s running).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedUnit {
    pub device_id: u64,
    pub vin: Option<Vin>,
    pub firmware: Firmware,
    /// seq of the boot HELLO.
    pub initial_seq: u16,
    /// How far the unit's clock runs ahead until a TIME corrects it.
    pub skew_ms: u64,
    pub odometer_km: u32,
    pub battery: BatteryHealth,
    /// Episodes, each at a time in ms after the lot starts.
    pub episodes: Vec<(u64, Episode)>,
}

impl ScriptedUnit {
    /// A healthy parked unit with a fixed VIN and nothing scripted yet.
    pub fn new(device_id: u64) -> Self {
        ScriptedUnit {
            device_id,
            vin: Vin::parse("WVWZZZAUZJW000001"),
            firmware: Firmware(1, 5, 0),
            initial_seq: 1,
            skew_ms: 0,
            odometer_km: 42_000,
            battery: BatteryHealth::Healthy,
            episodes: Vec::new(),
        }
    }

    pub fn at(mut self, after_ms: u64, episode: Episode) -> Self {
        self.episodes.push((after_ms, episode));
        self
    }
}

/// Where the lot's vehicles and their episodes come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Drawn from the seed: `LotConfig::vehicles` vehicles, planned a day at a time.
    #[default]
    Generated,
    /// Exactly these units, doing exactly this (plus heartbeats).
    Scripted(Vec<ScriptedUnit>),
}

/// How a generated vehicle tends to behave: daily probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Traits {
    pub lamp_rate: f64,
    pub dtc_rate: f64,
    pub power_rate: f64,
    pub away_rate: f64,
}

/// Whether episodes come from a script or from daily planning.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plan {
    Scripted(Vec<(u64, Episode)>),
    Generated {
        traits: Traits,
        key: u64,
        replace_battery_at: Option<u64>,
    },
}

/// Everything the vehicle model needs to start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile {
    pub identity: Identity,
    pub initial_seq: u16,
    pub skew_ms: u64,
    pub odometer_km: u32,
    pub battery: BatteryHealth,
    /// Codes already stored when the lot starts (reported after boot).
    pub stored_dtcs: Vec<(u16, DtcEntry)>,
    /// Keys the hash that gives each heartbeat its voltage noise.
    pub noise_key: u64,
    pub plan: Plan,
}

impl Profile {
    pub fn from_script(unit: &ScriptedUnit) -> Profile {
        Profile {
            identity: Identity {
                device_id: unit.device_id,
                vin: unit.vin,
                model_year: 2018,
                firmware: unit.firmware,
            },
            initial_seq: unit.initial_seq,
            skew_ms: unit.skew_ms,
            odometer_km: unit.odometer_km,
            battery: unit.battery,
            stored_dtcs: Vec::new(),
            noise_key: mix(unit.device_id, 0xB477),
            plan: Plan::Scripted(unit.episodes.clone()),
        }
    }
}

/// A 64-bit mixing function (the SplitMix64 finaliser): turns any inputs into
/// well-spread bits, so per-day plans and per-heartbeat noise depend only on
/// the seed and the time, never on how the run was scheduled.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in [-1, 1] from a key and a time.
pub(crate) fn noise(key: u64, t: u64) -> f64 {
    (mix(key, t) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// The calendar year of a time (close enough for model years).
pub(crate) fn year_of(ms: u64) -> u16 {
    (1970 + ms / 31_556_952_000).min(u16::MAX as u64) as u16
}

/// The lot's vehicles, drawn from `seed`. Roles are dealt round a seeded
/// shuffle so that even a small lot shows every behaviour: weak and
/// recovering batteries, lamps, codes, power losses, trips away.
pub(crate) fn generate_profiles(seed: u64, n: usize, skewed: usize, start_ms: u64) -> Vec<Profile> {
    let mut rng = StdRng::seed_from_u64(mix(seed, 0x1D));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    // position[i]: where vehicle i fell in the shuffle; roles follow it.
    let mut position = vec![0; n];
    for (p, &i) in order.iter().enumerate() {
        position[i] = p;
    }
    let this_year = year_of(start_ms);
    let identities = draw_identities(&mut rng, n, this_year, |i| position[i] % 12 == 11);
    let mut skew_order: Vec<usize> = (0..n).collect();
    skew_order.shuffle(&mut rng);
    let skewed_set: Vec<bool> = {
        let mut s = vec![false; n];
        for &i in skew_order.iter().take(skewed) {
            s[i] = true;
        }
        s
    };
    identities
        .into_iter()
        .enumerate()
        .map(|(i, identity)| {
            let p = position[i];
            let key = mix(seed, i as u64 + 1);
            let mut r = StdRng::seed_from_u64(key);
            let rate = |prone: bool, high: f64, low: f64| if prone { high } else { low };
            let traits = Traits {
                lamp_rate: rate(p.is_multiple_of(3), 0.30, 0.01),
                dtc_rate: rate(p % 3 == 1, 0.15, 0.01),
                power_rate: rate(p % 7 == 4, 0.12, 0.003),
                away_rate: rate(p % 4 == 2, 0.25, 0.02),
            };
            let (battery, replace_battery_at) = match p % 8 {
                1 => (BatteryHealth::Weak, None),
                5 => (
                    BatteryHealth::Weak,
                    Some(start_ms + r.random_range(2 * DAY_MS..4 * DAY_MS)),
                ),
                _ => (BatteryHealth::Healthy, None),
            };
            let age = this_year.saturating_sub(identity.model_year) as u32;
            let odometer_km = age * r.random_range(9_000..20_000) + r.random_range(500..5_000);
            let stored_dtcs = if p % 3 == 1 && r.random_bool(0.5) {
                let (ecu, code, _) = QUIET_FAULTS[r.random_range(0..QUIET_FAULTS.len())];
                Dtc::parse(code)
                    .map(|dtc| {
                        vec![(
                            ecu,
                            DtcEntry {
                                dtc,
                                status: status::CONFIRMED,
                            },
                        )]
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            Profile {
                initial_seq: r.random(),
                skew_ms: if skewed_set[i] {
                    r.random_range(2..=15) * MINUTE_MS
                } else {
                    0
                },
                odometer_km,
                battery,
                stored_dtcs,
                noise_key: mix(key, 0xB477),
                plan: Plan::Generated {
                    traits,
                    key,
                    replace_battery_at,
                },
                identity,
            }
        })
        .collect()
}

/// A fault that lights a lamp, with the code its ECU stores (if any).
pub(crate) struct LampFault {
    pub lamp: u8,
    pub weight: u32,
    pub code: Option<(u16, &'static str)>,
}

/// Lamp faults by rough frequency in a workshop's intake.
pub(crate) const LAMP_FAULTS: &[LampFault] = &[
    LampFault {
        lamp: 1,
        weight: 30,
        code: Some((0x07E0, "P0301")),
    }, // misfire, cylinder 1
    LampFault {
        lamp: 1,
        weight: 12,
        code: Some((0x07E0, "P0420")),
    }, // catalyst efficiency
    LampFault {
        lamp: 1,
        weight: 8,
        code: Some((0x07E0, "P0171")),
    }, // system too lean
    LampFault {
        lamp: 8,
        weight: 18,
        code: None,
    }, // tyre pressure
    LampFault {
        lamp: 13,
        weight: 8,
        code: None,
    }, // service due
    LampFault {
        lamp: 6,
        weight: 9,
        code: Some((0x0713, "C0035")),
    }, // wheel speed sensor
    LampFault {
        lamp: 9,
        weight: 7,
        code: Some((0x07E0, "P2002")),
    }, // particulate filter
    LampFault {
        lamp: 2,
        weight: 4,
        code: Some((0x07E0, "P0562")),
    }, // system voltage low
    LampFault {
        lamp: 11,
        weight: 4,
        code: Some((0x0713, "C0040-1C")),
    },
];

/// Codes stored without a lamp: (ECU, code, status byte).
pub(crate) const QUIET_FAULTS: &[(u16, &str, u8)] = &[
    (0x07E0, "P0442", status::PENDING), // evaporative system, small leak
    (0x07E0, "P0128", status::CONFIRMED), // coolant thermostat
    (0x07E1, "P0730", status::HISTORIC), // incorrect gear ratio
    (0x0713, "U0100-87", status::FAILED_CONFIRMED), // lost communication with ECM
    (0x0714, "U0155", status::CONFIRMED), // lost communication with cluster
    (0x07E0, "P0299", status::PENDING), // turbocharger underboost
];

/// Something the vehicle model does at a time. Episodes come from scripts;
/// the rest are the generator's and the model's own bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    Boot,
    PlanDay {
        day: u64,
    },
    Episode(Episode),
    /// A lamp fault: the lamp lights with its code; it clears by itself at
    /// the start of the n-th later drive (or stays, when `None`).
    LampFault {
        fault: usize,
        clear_after_drives: Option<u8>,
    },
    EndDrive {
        drive: u32,
    },
    Heartbeat {
        generation: u32,
    },
    ClearLampFault {
        lamp: u8,
        code: Option<(u16, Dtc)>,
    },
    RestorePower {
        down_s: u32,
    },
    Return,
}

/// Plans one UTC day of a generated vehicle: drives between 06:00 and 21:30,
/// and now and then a lamp fault, a quiet code, a power loss at night, or a
/// trip out of reach. Only actions at or after `not_before` are returned.
pub(crate) fn plan_day(
    traits: &Traits,
    key: u64,
    day: u64,
    battery: BatteryHealth,
    not_before: u64,
) -> Vec<(u64, Action)> {
    let mut r = StdRng::seed_from_u64(mix(key, day));
    let day_start = day * DAY_MS;
    let mut out = Vec::new();

    let trips = match r.random_range(0..100) {
        0..10 => 0,
        10..35 => 1,
        35..70 => 2,
        70..92 => 3,
        _ => 4,
    };
    let mut starts: Vec<u64> = (0..trips)
        .map(|_| day_start + r.random_range(6 * HOUR_MS..20 * HOUR_MS + 30 * MINUTE_MS))
        .collect();
    starts.sort_unstable();
    let mut drives = Vec::new();
    let mut free_from = day_start;
    for s in starts {
        let start = s.max(free_from);
        let minutes: u64 = if r.random_bool(0.35) {
            r.random_range(16..=55)
        } else {
            r.random_range(4..=15)
        };
        let end = start + minutes * MINUTE_MS;
        if end > day_start + 21 * HOUR_MS + 30 * MINUTE_MS {
            break;
        }
        let speed_kmh: u64 = r.random_range(25..=75);
        let km = (minutes * speed_kmh / 60).max(1) as u32;
        drives.push((start, minutes));
        out.push((
            start,
            Action::Episode(Episode::Drive {
                duration_s: (minutes * 60) as u32,
                distance_km: km,
            }),
        ));
        free_from = end + 10 * MINUTE_MS;
    }

    if r.random_bool(traits.lamp_rate) {
        if let Some(&(start, minutes)) = drives.iter().find(|d| d.1 >= 8).or(drives.first()) {
            let total: u32 = LAMP_FAULTS.iter().map(|f| f.weight).sum();
            let mut pick = r.random_range(0..total);
            let fault = LAMP_FAULTS
                .iter()
                .position(|f| {
                    let hit = pick < f.weight;
                    pick = pick.saturating_sub(f.weight);
                    hit
                })
                .unwrap_or(0);
            let at = start + r.random_range(1..minutes.max(2)) * MINUTE_MS;
            let clear_after_drives = r.random_bool(0.7).then(|| r.random_range(1..=4));
            out.push((
                at,
                Action::LampFault {
                    fault,
                    clear_after_drives,
                },
            ));
        }
    }

    if r.random_bool(traits.dtc_rate) {
        let (ecu, code, st) = QUIET_FAULTS[r.random_range(0..QUIET_FAULTS.len())];
        if let (Some(dtc), Some(&(start, _))) = (Dtc::parse(code), drives.last()) {
            let at = start + MINUTE_MS;
            out.push((
                at,
                Action::Episode(Episode::Dtc {
                    ecu,
                    dtc,
                    status: Some(st),
                }),
            ));
            let cleared = at + r.random_range(1..=4) * DAY_MS;
            out.push((
                cleared,
                Action::Episode(Episode::Dtc {
                    ecu,
                    dtc,
                    status: None,
                }),
            ));
        }
    }

    if r.random_bool(traits.power_rate) {
        let at = day_start + r.random_range(0..5 * HOUR_MS);
        let reason = match (battery, r.random_range(0..10)) {
            (BatteryHealth::Weak, _) => PowerLossReason::SupplyLow,
            (_, 0..2) => PowerLossReason::Unknown,
            _ => PowerLossReason::Unplugged,
        };
        let down_s = r.random_range(20 * 60..20 * 3600);
        out.push((at, Action::Episode(Episode::PowerLoss { reason, down_s })));
    }

    if r.random_bool(traits.away_rate) {
        if let Some(&(start, _)) = drives.first() {
            let duration_s = r.random_range(2 * 3600..54 * 3600);
            out.push((
                start + 30_000,
                Action::Episode(Episode::Away { duration_s }),
            ));
        }
    }

    out.retain(|(t, _)| *t >= not_before);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn profiles_are_deterministic_from_the_seed() {
        let a = generate_profiles(42, 30, 3, START);
        let b = generate_profiles(42, 30, 3, START);
        let c = generate_profiles(43, 30, 3, START);
        assert_eq!(a, b);
        assert_ne!(
            a.iter().map(|p| p.identity.device_id).collect::<Vec<_>>(),
            c.iter().map(|p| p.identity.device_id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_behaviour_shows_up_on_a_small_lot() {
        let lot = generate_profiles(1, 24, 2, START);
        assert_eq!(lot.iter().filter(|p| p.skew_ms > 0).count(), 2);
        assert!(lot
            .iter()
            .filter(|p| p.skew_ms > 0)
            .all(|p| p.skew_ms >= 2 * MINUTE_MS));
        assert!(
            lot.iter().any(|p| p.identity.vin.is_none()),
            "a unit with unknown VIN"
        );
        let weak = lot
            .iter()
            .filter(|p| p.battery == BatteryHealth::Weak)
            .count();
        let recovering = lot
            .iter()
            .filter(|p| {
                matches!(
                    p.plan,
                    Plan::Generated {
                        replace_battery_at: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            (weak, recovering),
            (6, 3),
            "weak (3) and recovering (3) batteries"
        );
        let traits: Vec<Traits> = lot
            .iter()
            .filter_map(|p| match p.plan {
                Plan::Generated { traits, .. } => Some(traits),
                Plan::Scripted(_) => None,
            })
            .collect();
        assert_eq!(traits.iter().filter(|t| t.lamp_rate > 0.1).count(), 8);
        assert_eq!(traits.iter().filter(|t| t.away_rate > 0.1).count(), 6);
        assert!(traits.iter().any(|t| t.power_rate > 0.1));
    }

    #[test]
    fn a_day_plan_depends_only_on_key_and_day() {
        let t = Traits {
            lamp_rate: 1.0,
            dtc_rate: 1.0,
            power_rate: 1.0,
            away_rate: 1.0,
        };
        let day = START / DAY_MS + 3;
        let a = plan_day(&t, 9, day, BatteryHealth::Healthy, 0);
        assert_eq!(a, plan_day(&t, 9, day, BatteryHealth::Healthy, 0));
        // Drives fall between 06:00 and 21:30 and never overlap.
        let drives: Vec<(u64, u64)> = a
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Episode(Episode::Drive { duration_s, .. }) => {
                    Some((*t, t + *duration_s as u64 * 1000))
                }
                _ => None,
            })
            .collect();
        for w in drives.windows(2) {
            assert!(w[0].1 <= w[1].0, "drives overlap: {w:?}");
        }
        for (s, e) in &drives {
            assert!(
                *s >= day * DAY_MS + 6 * HOUR_MS
                    && *e <= day * DAY_MS + 21 * HOUR_MS + 30 * MINUTE_MS
            );
        }
        // A power loss is at night, when nobody drives.
        for (t, a) in &a {
            if let Action::Episode(Episode::PowerLoss { .. }) = a {
                assert!(*t < day * DAY_MS + 5 * HOUR_MS);
            }
        }
        let later = plan_day(
            &t,
            9,
            day,
            BatteryHealth::Healthy,
            day * DAY_MS + 12 * HOUR_MS,
        );
        assert!(later.iter().all(|(t, _)| *t >= day * DAY_MS + 12 * HOUR_MS));
    }

    #[test]
    fn fault_tables_hold_valid_codes() {
        for f in LAMP_FAULTS {
            if let Some((_, code)) = f.code {
                assert!(Dtc::parse(code).is_some(), "{code}");
            }
        }
        for (_, code, _) in QUIET_FAULTS {
            assert!(Dtc::parse(code).is_some(), "{code}");
        }
    }
}
