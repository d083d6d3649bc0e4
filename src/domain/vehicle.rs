//! What the appliance knows about each unit (dongle) it has heard, and how
//! one accepted message changes it (R-VEH-1, PROTOCOL.md section 4 "Time").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::link::message::{Body, Dtc, Engine, Firmware, Message, PowerLossReason, Vin};

/// A device time more than this far ahead of the appliance is not trusted
/// (PROTOCOL.md section 4).
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;

/// One hour, the granularity of the battery aggregates.
pub const HOUR_MS: u64 = 3_600_000;

/// Power state of a unit, from POWER_LOST / POWER_RESTORED / HELLO flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    Powered,
    Lost {
        since_ms: u64,
        reason: PowerLossReason,
    },
}

/// A stored DTC: the code and its raw ISO 14229-1 status byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDtc {
    pub dtc: Dtc,
    pub status: u8,
}

/// A unit heard on a link: identity, last known readings, and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vehicle {
    pub device_id: u64,
    /// From HELLO; `None` until a HELLO with a known VIN.
    pub vin: Option<Vin>,
    pub firmware: Option<Firmware>,
    /// A HELLO has been heard since the unit registered.
    pub hello_seen: bool,
    /// Effective time of the earliest and latest message applied.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Appliance clock when the latest message arrived: what "on the lot" means.
    pub last_heard_ms: u64,
    pub odometer_km: Option<u32>,
    pub battery_mv: Option<u16>,
    pub engine: Option<Engine>,
    /// Lamp ids lit now.
    pub lamps: BTreeSet<u8>,
    /// Latest DTC snapshot per ECU address (an ECU with no codes is absent).
    pub dtcs: BTreeMap<u16, Vec<StoredDtc>>,
    pub power: Power,
    /// Set while the unit's clock is more than 5 minutes ahead: how far, in ms.
    pub clock_ahead_ms: Option<u64>,
    /// Unique messages applied.
    pub messages: u64,
    /// Events ever appended to this unit's history (the next event's number).
    pub events_written: u64,
}

impl Vehicle {
    pub fn new(device_id: u64, effective_ms: u64, received_ms: u64) -> Vehicle {
        Vehicle {
            device_id,
            vin: None,
            firmware: None,
            hello_seen: false,
            first_seen_ms: effective_ms,
            last_seen_ms: effective_ms,
            last_heard_ms: received_ms,
            odometer_km: None,
            battery_mv: None,
            engine: None,
            lamps: BTreeSet::new(),
            dtcs: BTreeMap::new(),
            power: Power::Powered,
            clock_ahead_ms: None,
            messages: 0,
            events_written: 0,
        }
    }

    /// Heard within `window_ms` of `now_ms` (R-VEH-1 "on the lot").
    pub fn on_lot(&self, now_ms: u64, window_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_heard_ms) <= window_ms
    }
}

/// When a message counts as having happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The device's time_ms, or the receive time when that is not trusted.
    pub effective_ms: u64,
    pub received_ms: u64,
    /// How far the device clock was ahead, when more than 5 minutes.
    pub ahead_ms: Option<u64>,
}

impl Timing {
    /// PROTOCOL.md section 4: a time_ms more than 5 minutes ahead of the
    /// appliance clock is replaced by the receive time; past times are normal.
    pub fn judge(time_ms: u64, received_ms: u64) -> Timing {
        if time_ms > received_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            Timing {
                effective_ms: received_ms,
                received_ms,
                ahead_ms: Some(time_ms - received_ms),
            }
        } else {
            Timing {
                effective_ms: time_ms,
                received_ms,
                ahead_ms: None,
            }
        }
    }
}

/// Something worth keeping in a unit's history (heartbeats are not: they
/// go to the hourly aggregates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Hello {
        vin: Option<Vin>,
        firmware: Firmware,
        after_power_loss: bool,
    },
    IgnitionOn {
        odometer_km: u32,
    },
    IgnitionOff {
        odometer_km: u32,
        run_s: u32,
    },
    Lamp {
        lamp: u8,
        lit: bool,
    },
    DtcReport {
        ecu: u16,
        codes: Vec<StoredDtc>,
    },
    PowerLost {
        reason: PowerLossReason,
    },
    PowerRestored {
        down_s: u32,
    },
    /// The unit's clock was found more than 5 minutes ahead.
    ClockAhead {
        ahead_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleEvent {
    pub at_ms: u64,
    pub received_ms: u64,
    pub kind: EventKind,
}

/// One battery reading for the hourly aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatterySample {
    pub hour: u64,
    pub engine: Engine,
    pub mv: u16,
}

/// What applying a message produced besides the new vehicle state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: Vec<VehicleEvent>,
    pub battery: Option<BatterySample>,
}

/// Applies what every accepted message tells, even for a unit whose data
/// is held back (R-VEH-4): its identity and when it was seen.
pub fn apply_identity(v: &mut Vehicle, msg: &Message, t: Timing) {
    v.messages += 1;
    v.first_seen_ms = v.first_seen_ms.min(t.effective_ms);
    v.last_seen_ms = v.last_seen_ms.max(t.effective_ms);
    v.last_heard_ms = v.last_heard_ms.max(t.received_ms);
    v.clock_ahead_ms = t.ahead_ms;
    if let Body::Hello(h) = &msg.body {
        v.hello_seen = true;
        if h.vin.is_some() {
            v.vin = h.vin;
        }
        v.firmware = Some(h.firmware);
    }
}

/// Applies one accepted (not duplicate) uplink message to its unit.
pub fn apply(v: &mut Vehicle, msg: &Message, t: Timing) -> Applied {
    let mut out = Applied::default();
    let event = |kind| VehicleEvent {
        at_ms: t.effective_ms,
        received_ms: t.received_ms,
        kind,
    };
    let was_ahead = v.clock_ahead_ms.is_some();
    apply_identity(v, msg, t);
    if let (Some(ahead), false) = (t.ahead_ms, was_ahead) {
        out.events
            .push(event(EventKind::ClockAhead { ahead_ms: ahead }));
    }
    match &msg.body {
        Body::Hello(h) => {
            if h.after_power_loss {
                v.power = Power::Powered;
            }
            out.events.push(event(EventKind::Hello {
                vin: h.vin,
                firmware: h.firmware,
                after_power_loss: h.after_power_loss,
            }));
        }
        Body::IgnitionOn { odometer_km } => {
            v.odometer_km = Some(*odometer_km);
            v.engine = Some(Engine::Running);
            out.events.push(event(EventKind::IgnitionOn {
                odometer_km: *odometer_km,
            }));
        }
        Body::IgnitionOff { odometer_km, run_s } => {
            v.odometer_km = Some(*odometer_km);
            v.engine = Some(Engine::Parked);
            out.events.push(event(EventKind::IgnitionOff {
                odometer_km: *odometer_km,
                run_s: *run_s,
            }));
        }
        Body::Heartbeat(hb) => {
            v.odometer_km = Some(hb.odometer_km);
            v.battery_mv = Some(hb.battery_mv);
            v.engine = Some(hb.engine);
            // The bitmask covers lamp ids 1..=32; ids above it come only by LAMP.
            v.lamps.retain(|&id| id > 32);
            v.lamps.extend(hb.lit_lamps());
            out.battery = Some(BatterySample {
                hour: t.effective_ms / HOUR_MS,
                engine: hb.engine,
                mv: hb.battery_mv,
            });
        }
        Body::Lamp { lamp, lit } => {
            if *lit {
                v.lamps.insert(*lamp);
            } else {
                v.lamps.remove(lamp);
            }
            out.events.push(event(EventKind::Lamp {
                lamp: *lamp,
                lit: *lit,
            }));
        }
        Body::DtcReport(rep) => {
            let codes: Vec<StoredDtc> = rep
                .entries
                .iter()
                .map(|e| StoredDtc {
                    dtc: e.dtc,
                    status: e.status,
                })
                .collect();
            if codes.is_empty() {
                v.dtcs.remove(&rep.ecu);
            } else {
                v.dtcs.insert(rep.ecu, codes.clone());
            }
            out.events.push(event(EventKind::DtcReport {
                ecu: rep.ecu,
                codes,
            }));
        }
        Body::PowerLost { reason } => {
            v.power = Power::Lost {
                since_ms: t.effective_ms,
                reason: *reason,
            };
            out.events
                .push(event(EventKind::PowerLost { reason: *reason }));
        }
        Body::PowerRestored { down_s } => {
            v.power = Power::Powered;
            out.events
                .push(event(EventKind::PowerRestored { down_s: *down_s }));
        }
        Body::Ack { .. } | Body::Time | Body::RequestDtc { .. } | Body::RequestStatus => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::message::{DtcEntry, DtcReport, Heartbeat, Hello};

    const T0: u64 = 1_767_225_600_000;

    fn msg(seq: u16, time_ms: u64, body: Body) -> Message {
        Message {
            seq,
            device_id: 7,
            time_ms,
            body,
        }
    }

    #[test]
    fn future_time_is_replaced_by_receive_time() {
        // PROTOCOL.md 4 "Time": more than 5 minutes ahead is not trusted.
        let at_limit = Timing::judge(T0 + MAX_FUTURE_SKEW_MS, T0);
        assert_eq!(at_limit.effective_ms, T0 + MAX_FUTURE_SKEW_MS);
        assert_eq!(at_limit.ahead_ms, None);
        let ahead = Timing::judge(T0 + MAX_FUTURE_SKEW_MS + 1, T0);
        assert_eq!(ahead.effective_ms, T0);
        assert_eq!(ahead.ahead_ms, Some(MAX_FUTURE_SKEW_MS + 1));
        // A past time is normal: buffered history.
        let past = Timing::judge(T0 - 86_400_000, T0);
        assert_eq!(past.effective_ms, T0 - 86_400_000);
    }

    #[test]
    fn hello_heartbeat_lamp_dtc_power_update_the_unit() {
        let mut v = Vehicle::new(7, T0, T0);
        let vin = Vin::parse("WVWZZZ1JZXW000001").unwrap();
        let hello = Hello {
            vin: Some(vin),
            firmware: Firmware(1, 2, 3),
            after_power_loss: false,
            flags: 0,
        };
        apply(
            &mut v,
            &msg(1, T0, Body::Hello(hello)),
            Timing::judge(T0, T0),
        );
        assert_eq!(v.vin, Some(vin));
        let hb = Heartbeat {
            engine: Engine::Parked,
            run_s: 0,
            odometer_km: 5000,
            battery_mv: 12_400,
            lamps: 0b101,
        };
        let a = apply(
            &mut v,
            &msg(2, T0 + 1000, Body::Heartbeat(hb)),
            Timing::judge(T0 + 1000, T0 + 1000),
        );
        assert_eq!(v.lamps, BTreeSet::from([1, 3]));
        assert_eq!(
            a.battery,
            Some(BatterySample {
                hour: (T0 + 1000) / HOUR_MS,
                engine: Engine::Parked,
                mv: 12_400
            })
        );
        assert!(
            a.events.is_empty(),
            "heartbeats go to aggregates, not history"
        );
        apply(
            &mut v,
            &msg(
                3,
                T0 + 2000,
                Body::Lamp {
                    lamp: 3,
                    lit: false,
                },
            ),
            Timing::judge(T0 + 2000, T0 + 2000),
        );
        apply(
            &mut v,
            &msg(
                4,
                T0 + 3000,
                Body::Lamp {
                    lamp: 40,
                    lit: true,
                },
            ),
            Timing::judge(T0 + 3000, T0 + 3000),
        );
        assert_eq!(v.lamps, BTreeSet::from([1, 40]));
        let rep = DtcReport {
            ecu: 0x7E0,
            entries: vec![DtcEntry {
                dtc: Dtc([3, 1, 0]),
                status: 9,
            }],
        };
        apply(
            &mut v,
            &msg(5, T0 + 4000, Body::DtcReport(rep)),
            Timing::judge(T0 + 4000, T0 + 4000),
        );
        assert_eq!(v.dtcs[&0x7E0].len(), 1);
        // A report is a full snapshot: an empty one clears the ECU.
        let empty = DtcReport {
            ecu: 0x7E0,
            entries: vec![],
        };
        apply(
            &mut v,
            &msg(6, T0 + 5000, Body::DtcReport(empty)),
            Timing::judge(T0 + 5000, T0 + 5000),
        );
        assert!(v.dtcs.is_empty());
        apply(
            &mut v,
            &msg(
                7,
                T0 + 6000,
                Body::PowerLost {
                    reason: PowerLossReason::Unplugged,
                },
            ),
            Timing::judge(T0 + 6000, T0 + 6000),
        );
        assert_eq!(
            v.power,
            Power::Lost {
                since_ms: T0 + 6000,
                reason: PowerLossReason::Unplugged
            }
        );
        apply(
            &mut v,
            &msg(8, T0 + 9000, Body::PowerRestored { down_s: 3 }),
            Timing::judge(T0 + 9000, T0 + 9000),
        );
        assert_eq!(v.power, Power::Powered);
        assert_eq!(v.messages, 8);
    }

    #[test]
    fn late_history_keeps_last_seen_and_moves_first_seen() {
        let mut v = Vehicle::new(7, T0, T0);
        apply(
            &mut v,
            &msg(1, T0 - 3_600_000, Body::IgnitionOn { odometer_km: 10 }),
            Timing::judge(T0 - 3_600_000, T0 + 5),
        );
        assert_eq!(v.first_seen_ms, T0 - 3_600_000);
        assert_eq!(v.last_seen_ms, T0);
        assert_eq!(v.last_heard_ms, T0 + 5);
        assert!(v.on_lot(T0 + 5 + 30 * 60_000, 30 * 60_000));
        assert!(!v.on_lot(T0 + 6 + 30 * 60_000, 30 * 60_000));
    }

    #[test]
    fn clock_ahead_is_flagged_once_and_cleared() {
        let mut v = Vehicle::new(7, T0, T0);
        let t = Timing::judge(T0 + 600_000, T0);
        let a = apply(
            &mut v,
            &msg(1, T0 + 600_000, Body::IgnitionOn { odometer_km: 1 }),
            t,
        );
        assert_eq!(
            a.events[0].kind,
            EventKind::ClockAhead { ahead_ms: 600_000 }
        );
        let a = apply(
            &mut v,
            &msg(2, T0 + 601_000, Body::IgnitionOn { odometer_km: 1 }),
            Timing::judge(T0 + 601_000, T0 + 1000),
        );
        assert_eq!(a.events.len(), 1, "flag raised once per episode");
        apply(
            &mut v,
            &msg(3, T0 + 2000, Body::IgnitionOn { odometer_km: 1 }),
            Timing::judge(T0 + 2000, T0 + 2000),
        );
        assert_eq!(v.clock_ahead_ms, None);
    }
}
