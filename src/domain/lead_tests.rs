//! The lead rules against SPEC.md R-LEAD-*, one scenario per clause.

use super::*;
use crate::link::message::{DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello};

const T0: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;
const DAY: u64 = 86_400_000;

/// One vehicle's rule state, fed messages in order.
struct Car {
    s: RuleState,
    next_id: u64,
    seq: u16,
    t: u64,
    log: Vec<Effect>,
}

impl Car {
    fn new() -> Car {
        Car {
            s: RuleState::default(),
            next_id: 1,
            seq: 0,
            t: T0,
            log: Vec::new(),
        }
    }

    fn send(&mut self, body: Body) -> Vec<Effect> {
        self.seq = self.seq.wrapping_add(1);
        self.t += MIN;
        let msg = Message {
            seq: self.seq,
            device_id: 9,
            time_ms: self.t,
            body,
        };
        let mut next = self.next_id;
        let out = self.s.on_message(&msg, self.t, &mut || {
            next += 1;
            next - 1
        });
        self.next_id = next;
        self.log.extend(out.clone());
        out
    }

    fn lamp(&mut self, id: u8, lit: bool) -> Vec<Effect> {
        self.send(Body::Lamp { lamp: id, lit })
    }

    fn hb(&mut self, running: bool, run_s: u32, lamps: u32) -> Vec<Effect> {
        let engine = if running {
            Engine::Running
        } else {
            Engine::Parked
        };
        self.send(Body::Heartbeat(Heartbeat {
            engine,
            run_s,
            odometer_km: 1000,
            battery_mv: 12_500,
            lamps,
        }))
    }

    fn on(&mut self) -> Vec<Effect> {
        self.send(Body::IgnitionOn { odometer_km: 1000 })
    }

    fn off(&mut self, run_s: u32) -> Vec<Effect> {
        self.send(Body::IgnitionOff {
            odometer_km: 1001,
            run_s,
        })
    }

    /// A short drive: ignition on, off after `run_s`.
    fn cycle(&mut self, run_s: u32) -> Vec<Effect> {
        let mut out = self.on();
        out.extend(self.off(run_s));
        out
    }

    fn dtc(&mut self, ecu: u16, codes: &[(&str, u8)]) -> Vec<Effect> {
        let entries = codes
            .iter()
            .map(|(c, s)| DtcEntry {
                dtc: Dtc::parse(c).unwrap(),
                status: *s,
            })
            .collect();
        self.send(Body::DtcReport(DtcReport { ecu, entries }))
    }

    fn battery(&mut self, sum_mv: u64, samples: u64) -> Vec<Effect> {
        let mut next = self.next_id;
        let out = self.s.on_battery(
            BatteryWindow { sum_mv, samples },
            self.t,
            self.t,
            &mut || {
                next += 1;
                next - 1
            },
        );
        self.next_id = next;
        self.log.extend(out.clone());
        out
    }

    fn is_open(&self, key: LeadKey) -> bool {
        self.s.open.contains_key(&key)
    }
}

fn opened(effects: &[Effect]) -> Vec<LeadKey> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Opened { key, .. } = e {
                Some(*key)
            } else {
                None
            }
        })
        .collect()
}

fn closed(effects: &[Effect]) -> Vec<(LeadKey, CloseReason)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Closed { key, reason, .. } = e {
                Some((*key, *reason))
            } else {
                None
            }
        })
        .collect()
}

fn lamp1() -> LeadKey {
    lamp_key(1)
}

// ---- R-LEAD-LAMP ----

#[test]
fn r_lead_lamp_a_lamp_message_opens_a_lead() {
    let mut c = Car::new();
    assert_eq!(opened(&c.lamp(1, true)), vec![lamp1()]);
    assert!(opened(&c.lamp(1, true)).is_empty(), "one open lead per key");
}

#[test]
fn r_lead_lamp_heartbeat_lamp_bits_alone_open_a_lead() {
    let mut c = Car::new();
    let out = c.hb(false, 0, 0b101);
    assert_eq!(opened(&out), vec![lamp_key(1), lamp_key(3)]);
}

#[test]
fn r_lead_lamp_a_a_1459_run_does_not_close_and_1500_does() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.on();
    c.hb(true, 60, 0);
    assert!(
        closed(&c.hb(true, 899, 0)).is_empty(),
        "14:59 is not 15 minutes"
    );
    assert_eq!(
        closed(&c.hb(true, 900, 0)),
        vec![(lamp1(), CloseReason::EngineRun15Min)]
    );
}

#[test]
fn r_lead_lamp_a_ignition_off_at_15_minutes_closes() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.on();
    assert_eq!(
        closed(&c.off(900)),
        vec![(lamp1(), CloseReason::EngineRun15Min)]
    );
}

#[test]
fn r_lead_lamp_a_a_run_in_which_the_lamp_was_lit_does_not_close() {
    let mut c = Car::new();
    c.on();
    c.hb(true, 60, 1); // lit during this run: opens the lead
    c.hb(true, 120, 0); // off again
    assert!(
        closed(&c.hb(true, 1000, 0)).is_empty(),
        "lit since the run began"
    );
    assert!(closed(&c.off(1200)).is_empty());
    assert!(c.is_open(lamp1()));
    // The next run, clean for 15 minutes, closes it.
    c.on();
    assert_eq!(
        closed(&c.hb(true, 900, 0)),
        vec![(lamp1(), CloseReason::EngineRun15Min)]
    );
}

#[test]
fn r_lead_lamp_a_a_lamp_lit_at_run_start_counts_as_lit_in_the_run() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.on(); // still lit when the run begins
    c.lamp(1, false);
    assert!(closed(&c.hb(true, 900, 0)).is_empty());
}

#[test]
fn r_lead_lamp_b_four_clean_ignition_cycles_close() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    for _ in 0..3 {
        assert!(closed(&c.cycle(120)).is_empty());
    }
    assert_eq!(
        closed(&c.cycle(120)),
        vec![(lamp1(), CloseReason::FourCleanStarts)]
    );
}

#[test]
fn r_lead_lamp_b_lamp_relit_in_the_3rd_cycle_resets_progress() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.cycle(120);
    c.cycle(120);
    c.on();
    let relit = c.lamp(1, true);
    assert!(relit.iter().any(|e| matches!(
        e,
        Effect::Event {
            event: LeadEvent {
                kind: LeadEventKind::Relit,
                ..
            },
            ..
        }
    )));
    c.lamp(1, false);
    c.off(120); // the 3rd cycle had the lamp lit: it does not count
    for _ in 0..3 {
        assert!(closed(&c.cycle(120)).is_empty(), "progress was reset");
    }
    assert_eq!(
        closed(&c.cycle(120)),
        vec![(lamp1(), CloseReason::FourCleanStarts)]
    );
}

#[test]
fn r_lead_lamp_b_a_cycle_started_with_the_lamp_lit_does_not_count() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.on();
    c.lamp(1, false);
    c.off(60);
    for _ in 0..3 {
        assert!(closed(&c.cycle(60)).is_empty());
    }
    assert_eq!(
        closed(&c.cycle(60)),
        vec![(lamp1(), CloseReason::FourCleanStarts)]
    );
}

#[test]
fn r_lead_lamp_b_a_cycle_whose_start_or_end_was_not_seen_does_not_count() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.hb(true, 300, 0); // running: a run we did not see start
    c.off(360);
    c.on();
    c.hb(false, 0, 0); // parked without an IGNITION_OFF
    for _ in 0..3 {
        assert!(closed(&c.cycle(60)).is_empty());
    }
    assert_eq!(
        closed(&c.cycle(60)),
        vec![(lamp1(), CloseReason::FourCleanStarts)]
    );
}

#[test]
fn r_lead_lamp_a_lamp_seen_lit_after_auto_close_opens_a_new_lead() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.on();
    c.off(900);
    assert!(!c.is_open(lamp1()));
    let out = c.lamp(1, true);
    assert_eq!(opened(&out), vec![lamp1()]);
    let ids: Vec<u64> = c
        .log
        .iter()
        .filter_map(|e| {
            if let Effect::Opened { id, .. } = e {
                Some(*id)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ids, vec![1, 2], "a new lead, not the old one");
}

#[test]
fn r_lead_lamp_clean_run_closes_only_the_clean_lamps() {
    let mut c = Car::new();
    c.hb(false, 0, 0b11); // lamps 1 and 2
    c.hb(false, 0, 0b10); // lamp 1 off, 2 still lit
    c.on();
    let out = c.hb(true, 900, 0b10);
    assert_eq!(closed(&out), vec![(lamp1(), CloseReason::EngineRun15Min)]);
    assert!(c.is_open(lamp_key(2)));
}

// ---- Episodes after a manual close ----

#[test]
fn a_lamp_lead_closed_by_hand_stays_closed_while_lit_and_reopens_on_a_new_episode() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.s.closed_by_hand(&lamp1());
    assert!(
        opened(&c.hb(false, 0, 1)).is_empty(),
        "still the same episode"
    );
    assert!(opened(&c.lamp(1, true)).is_empty());
    c.hb(false, 0, 0); // seen off
    assert_eq!(
        opened(&c.hb(false, 0, 1)),
        vec![lamp1()],
        "off then lit: a new episode"
    );
}

#[test]
fn a_lead_closed_by_hand_while_its_condition_is_gone_reopens_on_the_next_occurrence() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.s.closed_by_hand(&lamp1());
    assert_eq!(opened(&c.lamp(1, true)), vec![lamp1()]);
}

#[test]
fn reopen_is_refused_while_another_lead_holds_the_key() {
    let mut c = Car::new();
    c.lamp(1, true);
    c.lamp(1, false);
    c.s.closed_by_hand(&lamp1());
    c.lamp(1, true); // lead 2
    assert_eq!(c.s.reopened(lamp1(), 1), Err(2));
    c.s.closed_by_hand(&lamp1());
    assert_eq!(c.s.reopened(lamp1(), 1), Ok(()));
    // Reopened, the rules govern it again.
    c.lamp(1, false);
    c.on();
    assert_eq!(
        closed(&c.off(900)),
        vec![(lamp1(), CloseReason::EngineRun15Min)]
    );
}

// ---- R-LEAD-DTC ----

fn code(ecu: u16, s: &str) -> LeadKey {
    LeadKey {
        ty: LeadType::ErrorCode,
        subject: Subject::Code {
            ecu,
            dtc: Dtc::parse(s).unwrap(),
        },
    }
}

#[test]
fn r_lead_dtc_each_status_byte_of_the_mapping_table() {
    use status_bit::*;
    let cases: &[(u8, Option<DtcClass>)] = &[
        (0x00, None),
        (TEST_FAILED | CONFIRMED, Some(DtcClass::Permanent)),
        (
            TEST_FAILED | WARNING_INDICATOR_REQUESTED,
            Some(DtcClass::Permanent),
        ),
        (
            TEST_FAILED | CONFIRMED | WARNING_INDICATOR_REQUESTED | PENDING,
            Some(DtcClass::Permanent),
        ),
        (CONFIRMED, Some(DtcClass::Sporadic)),
        (TEST_FAILED_SINCE_LAST_CLEAR, Some(DtcClass::Sporadic)),
        (CONFIRMED | PENDING, Some(DtcClass::Sporadic)),
        (TEST_FAILED, Some(DtcClass::Potential)),
        (
            TEST_FAILED | TEST_FAILED_SINCE_LAST_CLEAR,
            Some(DtcClass::Potential),
        ),
        (TEST_FAILED_THIS_OPERATION_CYCLE, Some(DtcClass::Potential)),
        (PENDING, Some(DtcClass::Potential)),
        (WARNING_INDICATOR_REQUESTED, None),
        (1 << 4, None),
        (1 << 6, None),
        (0x09, Some(DtcClass::Permanent)),
        (0x04, Some(DtcClass::Potential)),
        (0x28, Some(DtcClass::Sporadic)),
    ];
    for (status, class) in cases {
        assert_eq!(classify(*status), *class, "status 0x{status:02X}");
    }
    // Exhaustively: first match wins, as written.
    for s in 0..=255u8 {
        let tf = s & TEST_FAILED != 0;
        let expected = if tf && s & (CONFIRMED | WARNING_INDICATOR_REQUESTED) != 0 {
            Some(DtcClass::Permanent)
        } else if !tf && s & (CONFIRMED | TEST_FAILED_SINCE_LAST_CLEAR) != 0 {
            Some(DtcClass::Sporadic)
        } else if s & (TEST_FAILED | TEST_FAILED_THIS_OPERATION_CYCLE | PENDING) != 0 {
            Some(DtcClass::Potential)
        } else {
            None
        };
        assert_eq!(classify(s), expected, "status 0x{s:02X}");
    }
}

#[test]
fn r_lead_dtc_codes_open_per_ecu_and_full_code_and_clear_on_a_later_snapshot() {
    let mut c = Car::new();
    let out = c.dtc(
        0x7E0,
        &[("P0301", 0x09), ("U0123-1C", 0x04), ("P0420", 0x00)],
    );
    assert_eq!(
        opened(&out),
        vec![code(0x7E0, "P0301"), code(0x7E0, "U0123-1C")],
        "no class, no lead"
    );
    // Another ECU's report changes nothing here.
    assert!(closed(&c.dtc(0x7E1, &[])).is_empty());
    // The same code with a failure type is another subject.
    assert_eq!(
        opened(&c.dtc(
            0x7E0,
            &[("P0301", 0x09), ("U0123-1C", 0x04), ("P0301-11", 0x08)]
        )),
        vec![code(0x7E0, "P0301-11")]
    );
    let out = c.dtc(0x7E0, &[("P0301", 0x09), ("U0123-1C", 0x00)]);
    let mut cl = closed(&out);
    cl.sort();
    assert_eq!(
        cl,
        vec![
            (code(0x7E0, "P0301-11"), CloseReason::CodeCleared),
            (code(0x7E0, "U0123-1C"), CloseReason::CodeCleared)
        ]
    );
    assert_eq!(
        closed(&c.dtc(0x7E0, &[])),
        vec![(code(0x7E0, "P0301"), CloseReason::CodeCleared)]
    );
}

#[test]
fn r_lead_dtc_class_follows_the_latest_status() {
    let mut c = Car::new();
    c.dtc(0x7E0, &[("P0301", 0x04)]);
    let out = c.dtc(0x7E0, &[("P0301", 0x09)]);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0],
        Effect::Reclassed {
            class: DtcClass::Permanent,
            status: 0x09,
            ..
        }
    ));
    assert!(
        c.dtc(0x7E0, &[("P0301", 0x09)]).is_empty(),
        "unchanged status: nothing"
    );
}

#[test]
fn r_lead_dtc_a_code_closed_by_hand_returns_only_after_a_report_without_it() {
    let mut c = Car::new();
    c.dtc(0x7E0, &[("P0301", 0x09)]);
    c.s.closed_by_hand(&code(0x7E0, "P0301"));
    assert!(opened(&c.dtc(0x7E0, &[("P0301", 0x09)])).is_empty());
    c.dtc(0x7E0, &[]);
    assert_eq!(
        opened(&c.dtc(0x7E0, &[("P0301", 0x09)])),
        vec![code(0x7E0, "P0301")]
    );
}

// ---- R-LEAD-DISC ----

#[test]
fn r_lead_disc_two_power_losses_give_one_lead_and_a_count_of_2() {
    let mut c = Car::new();
    assert_eq!(
        opened(&c.send(Body::PowerLost {
            reason: PowerLossReason::Unplugged
        })),
        vec![DISCONNECTED]
    );
    assert!(opened(&c.send(Body::PowerLost {
        reason: PowerLossReason::SupplyLow
    }))
    .is_empty());
    assert_eq!(c.s.disconnection_count, 2);
    assert_eq!(c.s.disconnections.len(), 2);
    assert_eq!(
        closed(&c.send(Body::PowerRestored { down_s: 30 })),
        vec![(DISCONNECTED, CloseReason::PowerRestored)]
    );
    assert_eq!(c.s.disconnections[1].down_s, Some(30));
    assert_eq!(c.s.disconnections[1].reason, PowerLossReason::SupplyLow);
}

#[test]
fn r_lead_disc_a_power_loss_hello_closes_and_records_the_duration() {
    let mut c = Car::new();
    c.send(Body::PowerLost {
        reason: PowerLossReason::Unknown,
    });
    let hello = Hello {
        vin: None,
        firmware: Firmware(1, 0, 0),
        after_power_loss: true,
        flags: 1,
    };
    assert_eq!(
        closed(&c.send(Body::Hello(hello))),
        vec![(DISCONNECTED, CloseReason::PowerRestored)]
    );
    assert_eq!(
        c.s.disconnections[0].down_s,
        Some(60),
        "one simulated minute between messages"
    );
    // POWER_RESTORED after it only corrects the duration.
    assert!(c.send(Body::PowerRestored { down_s: 42 }).is_empty());
    assert_eq!(c.s.disconnections[0].down_s, Some(42));
}

// ---- R-LEAD-BATT ----

#[test]
fn r_lead_batt_low_mean_opens_only_if_driven_in_7_days() {
    let mut c = Car::new();
    assert!(opened(&c.battery(11_000 * 3, 3)).is_empty(), "never driven");
    c.on();
    assert_eq!(opened(&c.battery(11_000 * 3, 3)), vec![LOW_BATTERY]);
}

#[test]
fn r_lead_batt_not_driven_in_the_last_7_days_opens_nothing() {
    let mut c = Car::new();
    c.on();
    c.off(60);
    c.t += 7 * DAY + MIN;
    assert!(opened(&c.battery(11_000 * 5, 5)).is_empty());
}

#[test]
fn r_lead_batt_exactly_11_7_v_changes_nothing() {
    let mut c = Car::new();
    c.on();
    assert!(
        c.battery(11_700 * 4, 4).is_empty(),
        "exactly 11.7 V does not open"
    );
    c.battery(11_600 * 4, 4);
    assert!(c.is_open(LOW_BATTERY));
    assert!(
        c.battery(11_700 * 4, 4).is_empty(),
        "exactly 11.7 V does not close"
    );
    assert!(c.is_open(LOW_BATTERY));
    assert_eq!(
        closed(&c.battery(11_700 * 4 + 1, 4)),
        vec![(LOW_BATTERY, CloseReason::BatteryRecovered)]
    );
}

#[test]
fn r_lead_batt_fewer_than_3_samples_decide_nothing() {
    let mut c = Car::new();
    c.on();
    assert!(c.battery(10_000 * 2, 2).is_empty());
    c.battery(10_000 * 3, 3);
    assert!(c.is_open(LOW_BATTERY));
    assert!(
        c.battery(14_000 * 2, 2).is_empty(),
        "two high samples do not prove recovery"
    );
}

#[test]
fn r_lead_batt_closed_by_hand_while_low_returns_after_a_recovery_then_low() {
    let mut c = Car::new();
    c.on();
    c.battery(11_000 * 3, 3);
    c.s.closed_by_hand(&LOW_BATTERY);
    assert!(opened(&c.battery(11_000 * 3, 3)).is_empty());
    c.battery(12_500 * 3, 3);
    assert_eq!(opened(&c.battery(11_000 * 3, 3)), vec![LOW_BATTERY]);
}

// ---- R-LEAD-USER ----

#[test]
fn r_lead_user_lamps_open_once_and_close_only_by_hand() {
    let mut c = Car::new();
    let key = LeadKey {
        ty: LeadType::UserLamp,
        subject: Subject::Lamp(5),
    };
    let mut next = 1;
    let out = c.s.user_lamp(5, T0, &mut || {
        next += 1;
        next - 1
    });
    assert_eq!(opened(&out), vec![key]);
    assert!(c.s.user_lamp(5, T0, &mut || 99).is_empty());
    c.cycle(900);
    c.cycle(900);
    c.dtc(0x7E0, &[]);
    c.send(Body::PowerRestored { down_s: 1 });
    assert!(c.is_open(key), "no rule closes a user-reported lamp");
    c.s.closed_by_hand(&key);
    assert!(!c.is_open(key));
    assert!(c.s.suppressed.is_empty());
}

// ---- Properties ----

mod props {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (1u8..4, any::<bool>()).prop_map(|(lamp, lit)| Body::Lamp { lamp, lit }),
            (any::<bool>(), 0u32..2000, 0u32..8).prop_map(|(r, run_s, lamps)| Body::Heartbeat(
                Heartbeat {
                    engine: if r { Engine::Running } else { Engine::Parked },
                    run_s,
                    odometer_km: 1,
                    battery_mv: 12_000,
                    lamps,
                }
            )),
            Just(Body::IgnitionOn { odometer_km: 1 }),
            (0u32..2000).prop_map(|run_s| Body::IgnitionOff {
                odometer_km: 1,
                run_s
            }),
            proptest::collection::vec(
                (
                    0u8..3,
                    prop_oneof![Just(0u8), Just(0x09), Just(0x04), Just(0x28)]
                ),
                0..3
            )
            .prop_map(|codes| Body::DtcReport(DtcReport {
                ecu: 0x7E0,
                entries: codes
                    .into_iter()
                    .map(|(c, status)| DtcEntry {
                        dtc: Dtc([3, c, 0]),
                        status
                    })
                    .collect(),
            })),
            Just(Body::PowerLost {
                reason: PowerLossReason::Unplugged
            }),
            (0u32..100).prop_map(|down_s| Body::PowerRestored { down_s }),
        ]
    }

    fn run(bodies: &[Body], closes: &[usize]) -> (RuleState, Vec<Effect>) {
        let mut c = Car::new();
        for (i, b) in bodies.iter().enumerate() {
            c.send(b.clone());
            if closes.contains(&i) {
                if let Some((k, ol)) = c.s.open.iter().next().map(|(k, o)| (*k, *o)) {
                    c.s.closed_by_hand(&k);
                    c.log.push(Effect::Closed {
                        id: ol.id,
                        key: k,
                        at_ms: c.t,
                        reason: CloseReason::Manual,
                    });
                }
            }
        }
        (c.s, c.log)
    }

    proptest! {
        #[test]
        fn one_open_lead_per_key_and_rules_are_deterministic(
            bodies in proptest::collection::vec(body(), 0..120),
            closes in proptest::collection::vec(0usize..120, 0..5),
        ) {
            let (s1, log1) = run(&bodies, &closes);
            let (s2, log2) = run(&bodies, &closes);
            prop_assert_eq!(&s1, &s2);
            prop_assert_eq!(&log1, &log2);
            // Replaying the effects: never two open leads for one key, and
            // every close is of an open lead.
            let mut open: BTreeMap<LeadKey, u64> = BTreeMap::new();
            for e in &log1 {
                match e {
                    Effect::Opened { id, key, .. } => prop_assert!(open.insert(*key, *id).is_none(), "second open lead for {:?}", key),
                    Effect::Closed { id, key, .. } => prop_assert_eq!(open.remove(key), Some(*id)),
                    _ => {}
                }
            }
        }
    }
}
