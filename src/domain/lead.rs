//! Leads: the five types of SPEC.md R-LEAD-*, their keys and records, and
//! the rules that open and close them, as pure functions of (state,
//! message, now). Ingest applies them in the same transaction as the
//! messages that caused them; staff actions go through the same state.

use serde::{Deserialize, Serialize};

use crate::link::message::{Dtc, Vin};

/// The five lead types, spelled as the JSON API spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadType {
    WarningLamp,
    UserLamp,
    LowBattery,
    Disconnected,
    ErrorCode,
}

impl LeadType {
    pub const ALL: [LeadType; 5] = [
        LeadType::WarningLamp,
        LeadType::UserLamp,
        LeadType::LowBattery,
        LeadType::Disconnected,
        LeadType::ErrorCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadType::WarningLamp => "warning_lamp",
            LeadType::UserLamp => "user_lamp",
            LeadType::LowBattery => "low_battery",
            LeadType::Disconnected => "disconnected",
            LeadType::ErrorCode => "error_code",
        }
    }

    pub fn parse(s: &str) -> Option<LeadType> {
        LeadType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// What the staff read.
    pub fn title(self) -> &'static str {
        match self {
            LeadType::WarningLamp => "Warning lamps",
            LeadType::UserLamp => "User-reported lamps",
            LeadType::LowBattery => "Low 12 V battery",
            LeadType::Disconnected => "Disconnected units",
            LeadType::ErrorCode => "Error codes",
        }
    }
}

/// What a lead is about within its vehicle and type: the lamp for lamp
/// leads, the ECU and full code (failure type included) for error codes,
/// nothing otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    None,
    Lamp(u8),
    Code { ecu: u16, dtc: Dtc },
}

/// At most one open lead per (vehicle, type, subject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeadKey {
    pub ty: LeadType,
    pub subject: Subject,
}

/// Error-code classes of R-LEAD-DTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtcClass {
    Permanent,
    Sporadic,
    Potential,
}

impl DtcClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DtcClass::Permanent => "permanent",
            DtcClass::Sporadic => "sporadic",
            DtcClass::Potential => "potential",
        }
    }
}

/// ISO 14229-1 status byte bits used by R-LEAD-DTC.
pub mod status_bit {
    pub const TEST_FAILED: u8 = 1 << 0;
    pub const TEST_FAILED_THIS_OPERATION_CYCLE: u8 = 1 << 1;
    pub const PENDING: u8 = 1 << 2;
    pub const CONFIRMED: u8 = 1 << 3;
    pub const TEST_FAILED_SINCE_LAST_CLEAR: u8 = 1 << 5;
    pub const WARNING_INDICATOR_REQUESTED: u8 = 1 << 7;
}

/// R-LEAD-DTC: the class of a status byte, first match wins; `None` for a
/// code that opens no lead.
pub fn classify(status: u8) -> Option<DtcClass> {
    use status_bit::*;
    let has = |bit: u8| status & bit != 0;
    if has(TEST_FAILED) && (has(CONFIRMED) || has(WARNING_INDICATOR_REQUESTED)) {
        Some(DtcClass::Permanent)
    } else if !has(TEST_FAILED) && (has(CONFIRMED) || has(TEST_FAILED_SINCE_LAST_CLEAR)) {
        Some(DtcClass::Sporadic)
    } else if has(TEST_FAILED) || has(TEST_FAILED_THIS_OPERATION_CYCLE) || has(PENDING) {
        Some(DtcClass::Potential)
    } else {
        None
    }
}

/// Why a lead closed, spelled as the JSON API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    #[serde(rename = "engine_run_15min")]
    EngineRun15Min,
    FourCleanStarts,
    BatteryRecovered,
    PowerRestored,
    CodeCleared,
    Manual,
    Customer,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::EngineRun15Min => "engine_run_15min",
            CloseReason::FourCleanStarts => "four_clean_starts",
            CloseReason::BatteryRecovered => "battery_recovered",
            CloseReason::PowerRestored => "power_restored",
            CloseReason::CodeCleared => "code_cleared",
            CloseReason::Manual => "manual",
            CloseReason::Customer => "customer",
        }
    }

    /// Closed by a rule rather than a person.
    pub fn is_auto(self) -> bool {
        !matches!(self, CloseReason::Manual | CloseReason::Customer)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    Open,
    Closed,
}

/// One entry of a lead's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadEvent {
    pub at_ms: u64,
    /// The staff member, or `None` for the appliance's rules.
    pub by: Option<String>,
    pub kind: LeadEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeadEventKind {
    Opened,
    /// Auto-close progress, e.g. "2 of 4 clean ignition cycles".
    Progress(String),
    /// The lamp was seen lit again: auto-close progress reset.
    Relit,
    /// The error code's class changed with a newer report.
    ClassChanged {
        class: DtcClass,
        status: u8,
    },
    Assigned {
        to: Option<String>,
    },
    Closed {
        reason: CloseReason,
        note: Option<String>,
    },
    Reopened,
    Note(String),
    Messaged {
        message_id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub at_ms: u64,
    pub by: String,
    pub text: String,
}

/// A lead as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    pub id: u64,
    pub device_id: u64,
    pub vin: Option<Vin>,
    pub key: LeadKey,
    pub status: LeadStatus,
    /// Effective time of the event that opened it.
    pub opened_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub close_reason: Option<CloseReason>,
    pub assignee: Option<String>,
    pub notes: Vec<Note>,
    /// Labour hours x the workshop's rate, plus parts, in cents.
    pub estimated_revenue_cents: Option<u64>,
    /// Error codes: class, raw status byte, severity 1..=3, description.
    pub class: Option<DtcClass>,
    pub status_byte: Option<u8>,
    pub severity: Option<u8>,
    pub description: Option<String>,
    pub history: Vec<LeadEvent>,
    /// Rises with every change (sync sends the latest).
    pub version: u64,
}

use std::collections::{BTreeMap, BTreeSet};

use crate::link::message::{Body, Message, PowerLossReason};

/// R-LEAD-LAMP (a): a clean run this long closes a lamp lead.
pub const CLEAN_RUN_S: u32 = 900;
/// R-LEAD-LAMP (b): this many clean ignition cycles close a lamp lead.
pub const CLEAN_CYCLES: u8 = 4;
/// R-LEAD-BATT threshold: 11.7 V. Strict on both sides.
pub const LOW_BATTERY_MV: u64 = 11_700;
/// R-LEAD-BATT: at least this many parked samples in the window.
pub const MIN_BATTERY_SAMPLES: u64 = 3;
/// R-LEAD-BATT window: the trailing 7 days.
pub const BATTERY_WINDOW_MS: u64 = 7 * 24 * 3_600_000;
/// Disconnections kept per vehicle (the UI shows the last 30 days).
pub const DISCONNECTIONS_KEPT: usize = 200;

/// A lamp lead's auto-close progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLead {
    pub id: u64,
    /// R-LEAD-LAMP (b): ignition cycles started and ended since the lamp
    /// was last seen lit, none with the lamp lit.
    pub clean_cycles: u8,
    /// The ignition cycle in progress started after the lamp was last seen
    /// lit and has not seen it lit.
    pub cycle_clean: bool,
}

/// The engine run in progress, as far as the messages tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub last_run_s: u32,
    /// Lamps lit at any moment since the run began.
    pub lit_in_run: BTreeSet<u8>,
}

/// One loss of power (R-LEAD-DISC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnection {
    pub lost_at_ms: u64,
    pub reason: PowerLossReason,
    pub restored_at_ms: Option<u64>,
    /// From POWER_RESTORED, or the gap until the power-loss HELLO.
    pub down_s: Option<u32>,
}

/// Parked battery samples of the trailing window: exact sums and counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatteryWindow {
    pub sum_mv: u64,
    pub samples: u64,
}

impl BatteryWindow {
    /// Mean below 11.7 V with enough samples.
    pub fn is_low(&self) -> bool {
        self.samples >= MIN_BATTERY_SAMPLES && self.sum_mv < LOW_BATTERY_MV * self.samples
    }

    /// Mean above 11.7 V with enough samples.
    pub fn is_recovered(&self) -> bool {
        self.samples >= MIN_BATTERY_SAMPLES && self.sum_mv > LOW_BATTERY_MV * self.samples
    }

    pub fn mean_mv(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum_mv as f64 / self.samples as f64)
    }
}

/// What the rules keep per vehicle between messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleState {
    /// Open leads with their progress: the rules' view of the one-open-lead
    /// index (the store enforces it too).
    pub open: BTreeMap<LeadKey, OpenLead>,
    /// Keys closed by hand while their condition persisted: no new lead
    /// until a new episode (the condition seen gone, then back).
    pub suppressed: BTreeSet<LeadKey>,
    /// Lamps lit now.
    pub lit: BTreeSet<u8>,
    pub run: Option<Run>,
    /// An ignition cycle (from IGNITION_ON) is in progress.
    pub in_cycle: bool,
    /// Effective time of the last IGNITION_ON or running HEARTBEAT.
    pub last_driven_ms: Option<u64>,
    pub power_lost: bool,
    pub disconnections: Vec<Disconnection>,
    pub disconnection_count: u64,
    /// Codes present with a listed class in the latest report of each ECU.
    pub codes: BTreeMap<u16, BTreeMap<Dtc, u8>>,
    /// The last battery verdict: Some(true) low, Some(false) recovered.
    pub battery_low: Option<bool>,
}

/// What a rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Opened {
        id: u64,
        key: LeadKey,
        at_ms: u64,
        class: Option<(DtcClass, u8)>,
    },
    Closed {
        id: u64,
        key: LeadKey,
        at_ms: u64,
        reason: CloseReason,
    },
    Event {
        id: u64,
        event: LeadEvent,
    },
    /// An error-code lead's class or status byte follows the latest report.
    Reclassed {
        id: u64,
        class: DtcClass,
        status: u8,
    },
}

/// Allocates lead ids.
pub trait Ids {
    fn next_lead_id(&mut self) -> u64;
}

impl<F: FnMut() -> u64> Ids for F {
    fn next_lead_id(&mut self) -> u64 {
        self()
    }
}

/// Lead ids handed out in order from `next` (ingest keeps the count in
/// the store with each commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSeq {
    pub next: u64,
}

impl Ids for IdSeq {
    fn next_lead_id(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }
}

fn lamp_key(lamp: u8) -> LeadKey {
    LeadKey {
        ty: LeadType::WarningLamp,
        subject: Subject::Lamp(lamp),
    }
}

/// The key of a vehicle's disconnected-unit lead.
pub const DISCONNECTED: LeadKey = LeadKey {
    ty: LeadType::Disconnected,
    subject: Subject::None,
};
/// The key of a vehicle's low-battery lead.
pub const LOW_BATTERY: LeadKey = LeadKey {
    ty: LeadType::LowBattery,
    subject: Subject::None,
};

impl RuleState {
    fn open(
        &mut self,
        key: LeadKey,
        at_ms: u64,
        class: Option<(DtcClass, u8)>,
        ids: &mut dyn Ids,
        out: &mut Vec<Effect>,
    ) {
        if self.open.contains_key(&key) || self.suppressed.contains(&key) {
            return;
        }
        let id = ids.next_lead_id();
        self.open.insert(
            key,
            OpenLead {
                id,
                ..OpenLead::default()
            },
        );
        out.push(Effect::Opened {
            id,
            key,
            at_ms,
            class,
        });
    }

    fn close(&mut self, key: LeadKey, at_ms: u64, reason: CloseReason, out: &mut Vec<Effect>) {
        if let Some(ol) = self.open.remove(&key) {
            out.push(Effect::Closed {
                id: ol.id,
                key,
                at_ms,
                reason,
            });
        }
    }

    /// R-LEAD-LAMP: a lamp seen lit opens its lead, or resets the open
    /// lead's progress.
    fn lamp_seen_lit(&mut self, lamp: u8, at_ms: u64, ids: &mut dyn Ids, out: &mut Vec<Effect>) {
        let was_lit = !self.lit.insert(lamp);
        if let Some(run) = &mut self.run {
            run.lit_in_run.insert(lamp);
        }
        let key = lamp_key(lamp);
        match self.open.get_mut(&key) {
            Some(ol) => {
                if !was_lit || ol.clean_cycles > 0 {
                    out.push(Effect::Event {
                        id: ol.id,
                        event: LeadEvent {
                            at_ms,
                            by: None,
                            kind: LeadEventKind::Relit,
                        },
                    });
                }
                ol.clean_cycles = 0;
                ol.cycle_clean = false;
            }
            None => self.open(key, at_ms, None, ids, out),
        }
    }

    fn lamp_seen_off(&mut self, lamp: u8) {
        self.lit.remove(&lamp);
        // The episode of a lead closed by hand ends when the lamp is seen off.
        self.suppressed.remove(&lamp_key(lamp));
    }

    /// R-LEAD-LAMP (a): a HEARTBEAT or IGNITION_OFF of a run that reached
    /// 15 minutes with the lamp never lit since the run began.
    fn check_clean_run(&mut self, run_s: u32, at_ms: u64, out: &mut Vec<Effect>) {
        let Some(run) = &self.run else { return };
        if run_s < CLEAN_RUN_S {
            return;
        }
        let clean: Vec<LeadKey> = self
            .open
            .keys()
            .filter(|k| match k {
                LeadKey {
                    ty: LeadType::WarningLamp,
                    subject: Subject::Lamp(l),
                } => !run.lit_in_run.contains(l) && !self.lit.contains(l),
                _ => false,
            })
            .copied()
            .collect();
        for key in clean {
            self.close(key, at_ms, CloseReason::EngineRun15Min, out);
        }
    }

    fn start_cycle(&mut self) {
        self.in_cycle = true;
        self.run = Some(Run {
            last_run_s: 0,
            lit_in_run: self.lit.clone(),
        });
        let lit = self.lit.clone();
        for (key, ol) in self.open.iter_mut() {
            if let Subject::Lamp(l) = key.subject {
                if key.ty == LeadType::WarningLamp {
                    ol.cycle_clean = !lit.contains(&l);
                }
            }
        }
    }

    /// R-LEAD-LAMP (b): an ignition cycle ended; count it where clean.
    fn end_cycle(&mut self, at_ms: u64, out: &mut Vec<Effect>) {
        if !self.in_cycle {
            return;
        }
        self.in_cycle = false;
        let mut done = Vec::new();
        for (key, ol) in self.open.iter_mut() {
            if key.ty != LeadType::WarningLamp || !ol.cycle_clean {
                continue;
            }
            ol.cycle_clean = false;
            ol.clean_cycles += 1;
            if ol.clean_cycles >= CLEAN_CYCLES {
                done.push(*key);
            } else {
                let text = format!(
                    "{} of {CLEAN_CYCLES} clean ignition cycles",
                    ol.clean_cycles
                );
                out.push(Effect::Event {
                    id: ol.id,
                    event: LeadEvent {
                        at_ms,
                        by: None,
                        kind: LeadEventKind::Progress(text),
                    },
                });
            }
        }
        for key in done {
            self.close(key, at_ms, CloseReason::FourCleanStarts, out);
        }
    }

    fn power_restored(&mut self, at_ms: u64, down_s: Option<u32>, out: &mut Vec<Effect>) {
        if let Some(d) = self.disconnections.last_mut() {
            if d.restored_at_ms.is_none() {
                d.restored_at_ms = Some(at_ms);
                d.down_s = down_s.or(Some((at_ms.saturating_sub(d.lost_at_ms) / 1000) as u32));
            } else if let Some(s) = down_s {
                // POWER_RESTORED after the power-loss HELLO: the unit's own
                // figure is better than our estimate.
                d.down_s = Some(s);
            }
        }
        self.power_lost = false;
        self.suppressed.remove(&DISCONNECTED);
        self.close(DISCONNECTED, at_ms, CloseReason::PowerRestored, out);
    }

    /// Applies one accepted uplink message at its effective time.
    pub fn on_message(&mut self, msg: &Message, at_ms: u64, ids: &mut dyn Ids) -> Vec<Effect> {
        let mut out = Vec::new();
        match &msg.body {
            Body::Hello(h) => {
                if h.after_power_loss {
                    self.power_restored(at_ms, None, &mut out);
                }
            }
            Body::IgnitionOn { .. } => {
                self.last_driven_ms = Some(self.last_driven_ms.unwrap_or(0).max(at_ms));
                self.start_cycle();
            }
            Body::IgnitionOff { run_s, .. } => {
                self.check_clean_run(*run_s, at_ms, &mut out);
                self.end_cycle(at_ms, &mut out);
                self.run = None;
            }
            Body::Heartbeat(hb) => {
                use crate::link::message::Engine;
                match hb.engine {
                    Engine::Running => {
                        self.last_driven_ms = Some(self.last_driven_ms.unwrap_or(0).max(at_ms));
                        let new_run = self.run.as_ref().is_none_or(|r| hb.run_s < r.last_run_s);
                        if new_run {
                            // A run we did not see start: its cycle cannot count.
                            self.in_cycle = false;
                            self.run = Some(Run {
                                last_run_s: hb.run_s,
                                lit_in_run: self.lit.clone(),
                            });
                        }
                    }
                    Engine::Parked => {
                        // Parked without an IGNITION_OFF: the run and cycle
                        // ended unseen and cannot count.
                        self.run = None;
                        self.in_cycle = false;
                    }
                }
                let lit_now: BTreeSet<u8> = hb.lit_lamps().collect();
                let off: Vec<u8> = self
                    .lit
                    .iter()
                    .copied()
                    .filter(|l| *l <= 32 && !lit_now.contains(l))
                    .collect();
                for l in off {
                    self.lamp_seen_off(l);
                }
                for l in lit_now {
                    self.lamp_seen_lit(l, at_ms, ids, &mut out);
                }
                if let Some(run) = &mut self.run {
                    run.last_run_s = hb.run_s;
                }
                if hb.engine == Engine::Running {
                    self.check_clean_run(hb.run_s, at_ms, &mut out);
                }
            }
            Body::Lamp { lamp, lit } => {
                if *lit {
                    self.lamp_seen_lit(*lamp, at_ms, ids, &mut out);
                } else {
                    self.lamp_seen_off(*lamp);
                }
            }
            Body::DtcReport(rep) => {
                let present: BTreeMap<Dtc, (DtcClass, u8)> = rep
                    .entries
                    .iter()
                    .filter_map(|e| classify(e.status).map(|c| (e.dtc, (c, e.status))))
                    .collect();
                let ecu = rep.ecu;
                let code_key = |dtc: Dtc| LeadKey {
                    ty: LeadType::ErrorCode,
                    subject: Subject::Code { ecu, dtc },
                };
                // Leads of this ECU whose code is gone (or has no class) close.
                let gone: Vec<LeadKey> = self
                    .open
                    .keys()
                    .chain(self.suppressed.iter())
                    .filter(|k| matches!(k.subject, Subject::Code { ecu: e, dtc } if e == ecu && !present.contains_key(&dtc)))
                    .copied()
                    .collect();
                for key in gone {
                    self.suppressed.remove(&key);
                    self.close(key, at_ms, CloseReason::CodeCleared, &mut out);
                }
                for (dtc, (class, status)) in &present {
                    let key = code_key(*dtc);
                    match self.open.get(&key) {
                        Some(ol) => {
                            let before = self.codes.get(&ecu).and_then(|c| c.get(dtc)).copied();
                            if before != Some(*status) {
                                out.push(Effect::Reclassed {
                                    id: ol.id,
                                    class: *class,
                                    status: *status,
                                });
                            }
                        }
                        None => self.open(key, at_ms, Some((*class, *status)), ids, &mut out),
                    }
                }
                let now: BTreeMap<Dtc, u8> = present.iter().map(|(d, (_, s))| (*d, *s)).collect();
                if now.is_empty() {
                    self.codes.remove(&ecu);
                } else {
                    self.codes.insert(ecu, now);
                }
            }
            Body::PowerLost { reason } => {
                self.power_lost = true;
                self.disconnection_count += 1;
                self.disconnections.push(Disconnection {
                    lost_at_ms: at_ms,
                    reason: *reason,
                    restored_at_ms: None,
                    down_s: None,
                });
                if self.disconnections.len() > DISCONNECTIONS_KEPT {
                    self.disconnections.remove(0);
                }
                self.open(DISCONNECTED, at_ms, None, ids, &mut out);
            }
            Body::PowerRestored { down_s } => self.power_restored(at_ms, Some(*down_s), &mut out),
            Body::Ack { .. } | Body::Time | Body::RequestDtc { .. } | Body::RequestStatus => {}
        }
        out
    }

    /// R-LEAD-BATT, evaluated after every battery sample or drive and on
    /// the periodic tick: `window` holds the parked samples of the 7 days
    /// before `now_ms`; `at_ms` is when the deciding event happened.
    pub fn on_battery(
        &mut self,
        window: BatteryWindow,
        now_ms: u64,
        at_ms: u64,
        ids: &mut dyn Ids,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if window.is_recovered() {
            self.battery_low = Some(false);
            self.suppressed.remove(&LOW_BATTERY);
            self.close(LOW_BATTERY, at_ms, CloseReason::BatteryRecovered, &mut out);
        } else if window.is_low() {
            self.battery_low = Some(true);
            let driven = self
                .last_driven_ms
                .is_some_and(|t| t + BATTERY_WINDOW_MS >= now_ms);
            if driven {
                self.open(LOW_BATTERY, at_ms, None, ids, &mut out);
            }
        }
        out
    }

    /// Whether the condition behind `key` is present now (for the episode
    /// rule when a person closes a lead).
    pub fn condition_persists(&self, key: &LeadKey) -> bool {
        match (key.ty, key.subject) {
            (LeadType::WarningLamp, Subject::Lamp(l)) => self.lit.contains(&l),
            (LeadType::ErrorCode, Subject::Code { ecu, dtc }) => {
                self.codes.get(&ecu).is_some_and(|c| c.contains_key(&dtc))
            }
            (LeadType::LowBattery, _) => self.battery_low == Some(true),
            (LeadType::Disconnected, _) => self.power_lost,
            _ => false,
        }
    }

    /// A person closed the lead: it leaves the rules; while its condition
    /// persists, the same key opens no new lead.
    pub fn closed_by_hand(&mut self, key: &LeadKey) {
        self.open.remove(key);
        if self.condition_persists(key) {
            self.suppressed.insert(*key);
        }
    }

    /// A person reopened a lead: the rules govern it again, from scratch.
    /// Refused while another lead holds the key.
    pub fn reopened(&mut self, key: LeadKey, id: u64) -> Result<(), u64> {
        if let Some(other) = self.open.get(&key) {
            return Err(other.id);
        }
        self.suppressed.remove(&key);
        self.open.insert(
            key,
            OpenLead {
                id,
                clean_cycles: 0,
                cycle_clean: false,
            },
        );
        Ok(())
    }

    /// A user-reported lamp (R-LEAD-USER): opened by the driver or staff.
    pub fn user_lamp(&mut self, lamp: u8, at_ms: u64, ids: &mut dyn Ids) -> Vec<Effect> {
        let mut out = Vec::new();
        self.open(
            LeadKey {
                ty: LeadType::UserLamp,
                subject: Subject::Lamp(lamp),
            },
            at_ms,
            None,
            ids,
            &mut out,
        );
        out
    }
}

#[cfg(test)]
#[path = "lead_tests.rs"]
mod tests;
