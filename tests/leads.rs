//! The lead engine through ingest and the store (SPEC.md R-LEAD-*, R-VEH-4):
//! real messages, a real redb store, a fake clock; each test names the
//! requirement it proves.

use std::sync::Arc;

use forecourt::clock::{Clock, FakeClock, SharedClock};
use forecourt::domain::consent::ConsentState;
use forecourt::domain::lead::{CloseReason, Lead, LeadStatus, LeadType, Subject};
use forecourt::ingest::{Action, Ingest, IngestOptions, Outcome, Totals};
use forecourt::leads::{self, ActionError, LeadAction};
use forecourt::link::message::{
    Body, Dtc, DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello, Message, PowerLossReason,
    Vin,
};
use forecourt::link::{LinkEvent, Outbound, Replier};
use forecourt::store::leads::LeadFilter;
use forecourt::store::{EngineKind, Store};
use tokio::sync::mpsc;

const T0: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: FakeClock,
    totals: Arc<Totals>,
    ingest: Ingest,
    reply: Replier,
    out: mpsc::Receiver<Outbound>,
    seq: u16,
}

impl Rig {
    fn new(consent_brands: Vec<String>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), EngineKind::Redb).unwrap());
        let clock = FakeClock::new(T0);
        let totals = Arc::new(Totals::load(&store).unwrap());
        let shared: SharedClock = Arc::new(clock.clone());
        let ingest = Ingest::new(
            store.clone(),
            shared,
            totals.clone(),
            IngestOptions {
                consent_brands,
                rules: true,
            },
        )
        .unwrap();
        let (tx, out) = mpsc::channel(10_000);
        Rig {
            _dir: dir,
            store,
            clock,
            totals,
            ingest,
            reply: Replier { tx, addr: 0 },
            out,
            seq: 0,
        }
    }

    /// One message from `device`, sent now, in a batch of its own.
    fn send(&mut self, device: u64, body: Body) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let payload = Message {
            seq: self.seq,
            device_id: device,
            time_ms: self.clock.now_ms(),
            body,
        }
        .encode();
        self.replay(&payload);
        payload
    }

    fn replay(&mut self, payload: &[u8]) {
        let ev = LinkEvent::Payload {
            link: 0,
            payload: payload.to_vec(),
            received_ms: self.clock.now_ms(),
            reply: self.reply.clone(),
        };
        let replies = self.ingest.apply_batch(vec![ev]);
        for (r, p) in replies {
            r.send(p);
        }
        while self.out.try_recv().is_ok() {}
    }

    fn hello(&mut self, device: u64, vin: &str) {
        let vin = Vin::parse(vin);
        self.send(
            device,
            Body::Hello(Hello {
                vin,
                firmware: Firmware(1, 0, 0),
                after_power_loss: false,
                flags: 0,
            }),
        );
    }

    fn hb(&mut self, device: u64, running: bool, run_s: u32, mv: u16, lamps: u32) {
        let engine = if running {
            Engine::Running
        } else {
            Engine::Parked
        };
        self.send(
            device,
            Body::Heartbeat(Heartbeat {
                engine,
                run_s,
                odometer_km: 50_000,
                battery_mv: mv,
                lamps,
            }),
        );
    }

    fn later(&self, ms: u64) {
        self.clock.advance(ms);
    }

    fn leads(&self) -> Vec<Lead> {
        self.store
            .leads(&LeadFilter::default(), None, 10_000)
            .unwrap()
            .leads
    }

    fn only_lead(&self) -> Lead {
        let all = self.leads();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    fn act(&mut self, action: LeadAction) -> Result<Outcome, ActionError> {
        self.ingest.apply_action(Action::Lead {
            action,
            by: "anna".into(),
        })
    }
}

const FORD: &str = "WF0XXXGCDX1234567";
const VW: &str = "WVWZZZ1JZXW000001";

#[test]
fn r_lead_lamp_opens_on_a_lamp_and_closes_after_a_clean_15_minute_run() {
    let mut r = Rig::new(vec![]);
    r.hello(1, FORD);
    r.later(MIN);
    r.send(1, Body::Lamp { lamp: 1, lit: true });
    let opened_at = r.clock.now_ms();
    let lead = r.only_lead();
    assert_eq!(
        (lead.key.ty, lead.key.subject, lead.status),
        (LeadType::WarningLamp, Subject::Lamp(1), LeadStatus::Open)
    );
    assert_eq!(lead.opened_at_ms, opened_at);
    assert_eq!(lead.vin, Vin::parse(FORD));
    assert!(
        lead.estimated_revenue_cents.is_some(),
        "R-LEAD-REV: every lead has an estimate"
    );
    r.later(MIN);
    r.send(
        1,
        Body::Lamp {
            lamp: 1,
            lit: false,
        },
    );
    r.later(HOUR);
    r.send(
        1,
        Body::IgnitionOn {
            odometer_km: 50_000,
        },
    );
    r.later(14 * MIN + 59_000);
    r.hb(1, true, 899, 14_100, 0);
    assert_eq!(
        r.only_lead().status,
        LeadStatus::Open,
        "14:59 is not 15 minutes"
    );
    r.later(1000);
    r.hb(1, true, 900, 14_100, 0);
    let lead = r.only_lead();
    assert_eq!(lead.status, LeadStatus::Closed);
    assert_eq!(lead.close_reason, Some(CloseReason::EngineRun15Min));
    assert_eq!(
        lead.closed_at_ms,
        Some(r.clock.now_ms()),
        "dated by the heartbeat that closed it"
    );
    let counts = leads::lead_counts(&r.store, r.clock.now_ms()).unwrap();
    assert_eq!(counts.open["warning_lamp"], 0);
    assert_eq!(counts.opened_30d["warning_lamp"], 1);
    assert_eq!(counts.closed_30d["warning_lamp"], 1);
    // The app was told through the outbox, in the same transaction.
    let outbox = r.store.outbox(100).unwrap();
    assert!(
        outbox.iter().any(|(kind, _, _)| *kind == 2),
        "a notification for the opened lead: {outbox:?}"
    );
}

#[test]
fn duplicates_and_retransmissions_change_nothing() {
    let mut r = Rig::new(vec![]);
    r.hello(1, FORD);
    let lit = r.send(1, Body::Lamp { lamp: 3, lit: true });
    let report = r.send(
        1,
        Body::DtcReport(DtcReport {
            ecu: 0x7E0,
            entries: vec![DtcEntry {
                dtc: Dtc::parse("P0301").unwrap(),
                status: 0x09,
            }],
        }),
    );
    let lost = r.send(
        1,
        Body::PowerLost {
            reason: PowerLossReason::Unplugged,
        },
    );
    let before = r.leads();
    assert_eq!(before.len(), 3);
    for p in [&lit, &report, &lost, &lit, &lost] {
        r.later(2000);
        r.replay(p);
    }
    assert_eq!(r.leads(), before, "duplicates apply nothing");
    assert_eq!(r.totals.snapshot().duplicates, 5);
    assert_eq!(r.totals.snapshot().messages, 4);
}

#[test]
fn r_lead_time_the_battery_window_slides_on_tick_alone() {
    let mut r = Rig::new(vec![]);
    r.hello(7, FORD);
    // Day 0: three good parked samples.
    for _ in 0..3 {
        r.later(HOUR);
        r.hb(7, false, 0, 12_600, 0);
    }
    // Day 6: a drive, then three low parked samples: the mean is still fine.
    r.later(6 * DAY);
    r.send(
        7,
        Body::IgnitionOn {
            odometer_km: 50_010,
        },
    );
    r.send(
        7,
        Body::IgnitionOff {
            odometer_km: 50_020,
            run_s: 600,
        },
    );
    for _ in 0..3 {
        r.later(HOUR);
        r.hb(7, false, 0, 11_500, 0);
    }
    assert!(
        r.leads().is_empty(),
        "mean (3 x 12.6 + 3 x 11.5) / 6 = 12.05 V"
    );
    // No new data: a day later the good samples have left the window.
    r.later(DAY);
    r.ingest.tick();
    let lead = r.only_lead();
    assert_eq!(lead.key.ty, LeadType::LowBattery);
    assert_eq!(
        lead.opened_at_ms,
        r.clock.now_ms(),
        "decided by the tick, dated by its clock"
    );
    // Another 7 days with nothing: no samples in the window decide nothing.
    r.later(7 * DAY);
    r.ingest.tick();
    assert_eq!(r.only_lead().status, LeadStatus::Open);
    // A new battery: good parked samples close it once the mean is above 11.7 V.
    for _ in 0..3 {
        r.later(HOUR);
        r.hb(7, false, 0, 12_700, 0);
    }
    let lead = r.only_lead();
    assert_eq!(lead.close_reason, Some(CloseReason::BatteryRecovered));
}

#[test]
fn r_veh_4_consent_pending_then_granted() {
    let mut r = Rig::new(vec!["Volkswagen".into()]);
    r.hello(5, VW);
    r.send(5, Body::Lamp { lamp: 1, lit: true });
    r.hb(5, false, 0, 11_000, 1);
    assert!(r.leads().is_empty(), "no lead while consent is pending");
    let v = r.store.vehicle(5).unwrap().unwrap();
    assert_eq!(v.vin, Vin::parse(VW), "identity is kept");
    assert!(
        v.lamps.is_empty() && v.battery_mv.is_none() && v.odometer_km.is_none(),
        "nothing else is kept: {v:?}"
    );
    assert!(
        r.store.events(5, 10).unwrap().is_empty(),
        "no history either"
    );
    let out = r.ingest.apply_action(Action::SetConsent {
        vin: VW.into(),
        state: ConsentState::Granted,
        by: "admin".into(),
    });
    assert!(matches!(out, Ok(Outcome::Consent { .. })), "{out:?}");
    r.hb(5, false, 0, 12_400, 1);
    let lead = r.only_lead();
    assert_eq!(
        (lead.key.ty, lead.key.subject),
        (LeadType::WarningLamp, Subject::Lamp(1))
    );
    // Denied: held back again.
    r.ingest
        .apply_action(Action::SetConsent {
            vin: VW.into(),
            state: ConsentState::Denied,
            by: "admin".into(),
        })
        .unwrap();
    r.send(
        5,
        Body::PowerLost {
            reason: PowerLossReason::Unplugged,
        },
    );
    assert_eq!(r.leads().len(), 1);
}

#[test]
fn r_veh_4_a_unit_not_yet_heard_in_a_hello_is_gated_and_asked_for_one() {
    let mut r = Rig::new(vec![]);
    let payload = Message {
        seq: 1,
        device_id: 9,
        time_ms: T0,
        body: Body::Lamp { lamp: 2, lit: true },
    }
    .encode();
    let ev = LinkEvent::Payload {
        link: 0,
        payload,
        received_ms: T0,
        reply: r.reply.clone(),
    };
    let replies = r.ingest.apply_batch(vec![ev]);
    let kinds: Vec<u8> = replies.iter().map(|(_, p)| p[1]).collect();
    assert_eq!(kinds, vec![0x80, 0x83], "ACK, then REQUEST_STATUS");
    assert!(r.leads().is_empty());
    r.later(MIN);
    r.hello(9, FORD);
    r.send(9, Body::Lamp { lamp: 2, lit: true });
    assert_eq!(r.leads().len(), 1);
}

#[test]
fn lead_actions_assign_note_message_close_reopen_with_the_one_open_lead_rule() {
    let mut r = Rig::new(vec![]);
    r.hello(3, FORD);
    r.send(3, Body::Lamp { lamp: 5, lit: true });
    let id = r.only_lead().id;
    r.act(LeadAction::Assign {
        lead_id: id,
        user: Some("ben".into()),
    })
    .unwrap();
    r.act(LeadAction::Note {
        lead_id: id,
        text: "Customer calls back Friday".into(),
    })
    .unwrap();
    assert!(matches!(
        r.act(LeadAction::Note {
            lead_id: id,
            text: "  ".into()
        }),
        Err(ActionError::Invalid(_))
    ));
    let Ok(Outcome::Message { message }) = r.act(LeadAction::Message {
        lead_id: id,
        text: None,
    }) else {
        panic!()
    };
    assert_eq!(
        message.text,
        leads::template(LeadType::WarningLamp),
        "the per-type template"
    );
    // Closed by hand while the lamp is still lit: no new lead for this episode.
    r.act(LeadAction::Close {
        lead_id: id,
        note: Some("checked, customer informed".into()),
        customer: false,
    })
    .unwrap();
    let lead = r.only_lead();
    assert_eq!(
        (lead.status, lead.close_reason),
        (LeadStatus::Closed, Some(CloseReason::Manual))
    );
    assert_eq!(lead.assignee.as_deref(), Some("ben"));
    assert_eq!(lead.notes.len(), 1);
    assert!(matches!(
        r.act(LeadAction::Close {
            lead_id: id,
            note: None,
            customer: false
        }),
        Err(ActionError::Conflict(_))
    ));
    r.send(3, Body::Lamp { lamp: 5, lit: true });
    assert_eq!(r.leads().len(), 1, "same episode: nothing new");
    // Off, then lit: a new episode and a new lead.
    r.send(
        3,
        Body::Lamp {
            lamp: 5,
            lit: false,
        },
    );
    r.send(3, Body::Lamp { lamp: 5, lit: true });
    assert_eq!(r.leads().len(), 2);
    // Reopen is refused while another lead holds the key (SPEC: 409).
    let err = r.act(LeadAction::Reopen { lead_id: id }).unwrap_err();
    assert!(matches!(err, ActionError::Conflict(_)), "{err}");
    let newest = r.leads()[0].id;
    r.act(LeadAction::Close {
        lead_id: newest,
        note: None,
        customer: true,
    })
    .unwrap();
    let Ok(Outcome::Lead { lead }) = r.act(LeadAction::Reopen { lead_id: id }) else {
        panic!()
    };
    assert_eq!(lead.status, LeadStatus::Open);
    // Reopened, it is governed by the rules again.
    r.send(
        3,
        Body::Lamp {
            lamp: 5,
            lit: false,
        },
    );
    r.send(3, Body::IgnitionOn { odometer_km: 1 });
    r.send(
        3,
        Body::IgnitionOff {
            odometer_km: 2,
            run_s: 900,
        },
    );
    let lead = r.store.lead(id).unwrap().unwrap();
    assert_eq!(lead.close_reason, Some(CloseReason::EngineRun15Min));
    let history: Vec<String> = lead
        .history
        .iter()
        .map(|e| format!("{:?}", e.kind))
        .collect();
    assert!(history.len() >= 6, "{history:?}");
    assert!(matches!(
        r.act(LeadAction::Assign {
            lead_id: 999,
            user: None
        }),
        Err(ActionError::NotFound(_))
    ));
}

#[test]
fn r_lead_user_a_driver_reported_lamp_closes_only_by_hand() {
    let mut r = Rig::new(vec![]);
    r.hello(4, FORD);
    let Ok(Outcome::Lead { lead }) = r.act(LeadAction::ReportUserLamp {
        device_id: 4,
        lamp: 8,
        note: Some("TPMS came on".into()),
    }) else {
        panic!()
    };
    assert_eq!(lead.key.ty, LeadType::UserLamp);
    assert!(matches!(
        r.act(LeadAction::ReportUserLamp {
            device_id: 4,
            lamp: 8,
            note: None
        }),
        Err(ActionError::Conflict(_))
    ));
    r.send(4, Body::IgnitionOn { odometer_km: 1 });
    r.send(
        4,
        Body::IgnitionOff {
            odometer_km: 2,
            run_s: 1000,
        },
    );
    assert_eq!(
        r.store.lead(lead.id).unwrap().unwrap().status,
        LeadStatus::Open
    );
    r.act(LeadAction::Close {
        lead_id: lead.id,
        note: None,
        customer: true,
    })
    .unwrap();
    assert_eq!(
        r.store.lead(lead.id).unwrap().unwrap().close_reason,
        Some(CloseReason::Customer)
    );
}

#[test]
fn r_lead_disc_every_disconnection_is_kept_and_one_lead_is_open() {
    let mut r = Rig::new(vec![]);
    r.hello(6, FORD);
    r.send(
        6,
        Body::PowerLost {
            reason: PowerLossReason::Unplugged,
        },
    );
    r.later(10 * MIN);
    r.send(
        6,
        Body::PowerLost {
            reason: PowerLossReason::SupplyLow,
        },
    );
    r.later(5 * MIN);
    r.send(6, Body::PowerRestored { down_s: 300 });
    let lead = r.only_lead();
    assert_eq!(lead.close_reason, Some(CloseReason::PowerRestored));
    let rules = r.store.rules(6).unwrap();
    assert_eq!(rules.disconnection_count, 2);
    assert_eq!(rules.disconnections[1].down_s, Some(300));
    assert_eq!(rules.disconnections[0].reason, PowerLossReason::Unplugged);
}

#[test]
fn r_lead_dtc_error_codes_carry_class_severity_and_description() {
    let mut r = Rig::new(vec![]);
    r.hello(8, FORD);
    let entries = vec![
        DtcEntry {
            dtc: Dtc::parse("P0301").unwrap(),
            status: 0x09,
        },
        DtcEntry {
            dtc: Dtc::parse("U0123-1C").unwrap(),
            status: 0x04,
        },
        DtcEntry {
            dtc: Dtc::parse("P0420").unwrap(),
            status: 0x00,
        },
    ];
    r.send(
        8,
        Body::DtcReport(DtcReport {
            ecu: 0x7E0,
            entries,
        }),
    );
    let all = r.leads();
    assert_eq!(all.len(), 2, "a code with no class opens no lead");
    for l in &all {
        assert!(
            l.class.is_some() && l.severity.is_some_and(|s| (1..=3).contains(&s)),
            "{l:?}"
        );
        assert!(
            l.description.as_ref().is_some_and(|d| !d.is_empty()),
            "{l:?}"
        );
    }
    let counts = leads::lead_counts(&r.store, r.clock.now_ms()).unwrap();
    assert_eq!(counts.open["error_code"], 2);
    assert_eq!(counts.open_by_severity.iter().sum::<u64>(), 2);
    r.send(
        8,
        Body::DtcReport(DtcReport {
            ecu: 0x7E0,
            entries: vec![],
        }),
    );
    let counts = leads::lead_counts(&r.store, r.clock.now_ms()).unwrap();
    assert_eq!(counts.open["error_code"], 0);
    assert_eq!(counts.open_by_severity.iter().sum::<u64>(), 0);
    assert!(r
        .leads()
        .iter()
        .all(|l| l.close_reason == Some(CloseReason::CodeCleared)));
}

/// An appliance with no `[[serial]]` or `[[can]]` link (allowed: a UI-only
/// install) still carries out actions: ingest outlives its closed link
/// channel until shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_work_on_an_appliance_with_no_links() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = forecourt::config::Settings::with_data_dir(dir.path().join("data"));
    settings.http_listen = "127.0.0.1:0".parse().unwrap();
    let clock: SharedClock = Arc::new(FakeClock::new(T0));
    let running = forecourt::app::start(settings, clock).await.unwrap();
    let out = running
        .state
        .act(Action::SetConsent {
            vin: VW.into(),
            state: ConsentState::Granted,
            by: "admin".into(),
        })
        .await;
    assert!(matches!(out, Ok(Outcome::Consent { .. })), "{out:?}");
    running.stop().await;
}
