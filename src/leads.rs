//! Leads as records: turns the rules' [`Effect`]s into stored leads with
//! their history, indexes, dashboard counters, outbox entries and app
//! notifications, and carries out the staff's lead actions. Everything
//! here runs inside one store transaction with the change that caused it;
//! ingest is the only caller, so the rules' state and the records never
//! disagree.

use serde::{Deserialize, Serialize};

use crate::domain::catalog::Catalog;
use crate::domain::lead::{
    CloseReason, DtcClass, Effect, Lead, LeadEvent, LeadEventKind, LeadKey, LeadStatus, LeadType,
    Note, Subject,
};
use crate::domain::vehicle::Vehicle;
use crate::link::message::lamp_name;
use crate::store::leads::{CustomerMessage, Delivery, Notification};
use crate::store::{Result, StoreError, WriteTx};

pub const DAY_MS: u64 = 86_400_000;

/// What materialising a lead needs besides the transaction.
pub struct LeadContext<'a> {
    pub catalog: &'a Catalog,
    pub labour_rate_cents: u64,
    pub now_ms: u64,
}

/// The per-type message to the customer: the seed's examples (seed 001)
/// where it has one.
pub fn template(ty: LeadType) -> &'static str {
    match ty {
        LeadType::WarningLamp => {
            "We've detected a warning lamp in your vehicle. We recommend scheduling a check-up to ensure \
             everything is running safely. Let us know what time works for you."
        }
        LeadType::UserLamp => {
            "Thanks for reporting the issue. We're ready to help. Would you like to book a time so we can take \
             a closer look?"
        }
        LeadType::LowBattery => {
            "We've noticed your battery voltage is consistently low. We recommend stopping by the workshop for a \
             quick battery health check. This helps prevent future breakdowns."
        }
        LeadType::Disconnected => {
            "It looks like your CC-Link device has lost power. Feel free to stop by and we'll double-check the \
             installation for free."
        }
        LeadType::ErrorCode => {
            "Your vehicle has reported a fault code. We recommend booking a diagnostic check so we can tell you \
             what it means and what it needs."
        }
    }
}

/// One line saying what a lead is about.
pub fn describe(lead: &Lead) -> String {
    match (lead.key.ty, lead.key.subject) {
        (LeadType::WarningLamp, Subject::Lamp(l)) => format!("Warning lamp lit: {}", lamp_name(l)),
        (LeadType::UserLamp, Subject::Lamp(l)) => {
            format!("Driver reported a lamp: {}", lamp_name(l))
        }
        (LeadType::LowBattery, _) => {
            "12 V battery low while parked (7-day mean under 11.7 V)".into()
        }
        (LeadType::Disconnected, _) => "CC-Link unit lost power".into(),
        (LeadType::ErrorCode, Subject::Code { dtc, .. }) => {
            format!(
                "{dtc}: {}",
                lead.description.as_deref().unwrap_or("error code")
            )
        }
        (ty, _) => ty.title().into(),
    }
}

fn day(ms: u64) -> u64 {
    ms / DAY_MS
}

/// Dashboard counter names (R-DASH-1 "leads"), kept in the same
/// transaction as each change.
pub mod counter {
    use super::LeadType;

    pub fn open(ty: LeadType) -> String {
        format!("leads.open.{}", ty.as_str())
    }
    pub fn open_severity(severity: u8) -> String {
        format!("leads.open.error_code.severity.{severity}")
    }
    pub fn opened_on(ty: LeadType, day: u64) -> String {
        format!("leads.opened.{}.{day}", ty.as_str())
    }
    pub fn closed_on(ty: LeadType, day: u64) -> String {
        format!("leads.closed.{}.{day}", ty.as_str())
    }
}

fn count_open(tx: &mut WriteTx<'_>, lead: &Lead, delta: i64) -> Result<()> {
    tx.add_counter(&counter::open(lead.key.ty), delta)?;
    if let (LeadType::ErrorCode, Some(sev)) = (lead.key.ty, lead.severity) {
        tx.add_counter(&counter::open_severity(sev), delta)?;
    }
    Ok(())
}

/// Builds and stores a new open lead.
pub fn open_lead(
    tx: &mut WriteTx<'_>,
    cx: &LeadContext<'_>,
    vehicle: &Vehicle,
    id: u64,
    key: LeadKey,
    at_ms: u64,
    class: Option<(DtcClass, u8)>,
) -> Result<Lead> {
    let (severity, description) = match (key.subject, class) {
        (Subject::Code { dtc, .. }, Some((_, status))) => {
            let info = cx.catalog.dtc_info(&dtc, status);
            (Some(info.severity), Some(info.description))
        }
        _ => (None, None),
    };
    let lead = Lead {
        id,
        device_id: vehicle.device_id,
        vin: vehicle.vin,
        key,
        status: LeadStatus::Open,
        opened_at_ms: at_ms,
        closed_at_ms: None,
        close_reason: None,
        assignee: None,
        notes: Vec::new(),
        estimated_revenue_cents: cx.catalog.estimate_cents(
            key.ty,
            &key.subject,
            cx.labour_rate_cents,
        ),
        class: class.map(|c| c.0),
        status_byte: class.map(|c| c.1),
        severity,
        description,
        history: vec![LeadEvent {
            at_ms,
            by: None,
            kind: LeadEventKind::Opened,
        }],
        version: 1,
    };
    tx.put_lead(&lead, None)?;
    count_open(tx, &lead, 1)?;
    tx.add_counter(&counter::opened_on(key.ty, day(at_ms)), 1)?;
    // The customer's app hears of it through the importer.
    let nid = tx.next_id("notification")?;
    tx.put_notification(&Notification {
        id: nid,
        lead_id: id,
        device_id: vehicle.device_id,
        vin: vehicle.vin,
        kind: "lead_opened".into(),
        text: describe(&lead),
        created_ms: cx.now_ms,
        version: 1,
    })?;
    Ok(lead)
}

fn load(tx: &WriteTx<'_>, id: u64) -> Result<Lead> {
    tx.lead(id)?
        .ok_or_else(|| StoreError::Corrupt(format!("lead {id} named by the rules is not stored")))
}

/// Stores a changed lead (version raised) after `change`.
fn update(
    tx: &mut WriteTx<'_>,
    id: u64,
    change: impl FnOnce(&mut Lead) -> Result<()>,
) -> Result<Lead> {
    let before = load(tx, id)?;
    let mut lead = before.clone();
    change(&mut lead)?;
    lead.version += 1;
    tx.put_lead(&lead, Some(&before))?;
    Ok(lead)
}

/// Closes an open lead for `reason`.
pub fn close_lead(
    tx: &mut WriteTx<'_>,
    id: u64,
    at_ms: u64,
    reason: CloseReason,
    by: Option<&str>,
    note: Option<String>,
) -> Result<Lead> {
    let lead = update(tx, id, |l| {
        l.status = LeadStatus::Closed;
        l.closed_at_ms = Some(at_ms);
        l.close_reason = Some(reason);
        l.history.push(LeadEvent {
            at_ms,
            by: by.map(str::to_owned),
            kind: LeadEventKind::Closed { reason, note },
        });
        Ok(())
    })?;
    count_open(tx, &lead, -1)?;
    tx.add_counter(&counter::closed_on(lead.key.ty, day(at_ms)), 1)?;
    Ok(lead)
}

/// Applies what the rules decided for one vehicle.
pub fn materialize(
    tx: &mut WriteTx<'_>,
    cx: &LeadContext<'_>,
    vehicle: &Vehicle,
    effect: &Effect,
) -> Result<()> {
    match effect {
        Effect::Opened {
            id,
            key,
            at_ms,
            class,
        } => {
            open_lead(tx, cx, vehicle, *id, *key, *at_ms, *class)?;
        }
        Effect::Closed {
            id, at_ms, reason, ..
        } => {
            close_lead(tx, *id, *at_ms, *reason, None, None)?;
        }
        Effect::Event { id, event } => {
            update(tx, *id, |l| {
                l.history.push(event.clone());
                Ok(())
            })?;
        }
        Effect::Reclassed { id, class, status } => {
            let before = load(tx, *id)?;
            let lead = update(tx, *id, |l| {
                if l.class != Some(*class) {
                    l.history.push(LeadEvent {
                        at_ms: cx.now_ms,
                        by: None,
                        kind: LeadEventKind::ClassChanged {
                            class: *class,
                            status: *status,
                        },
                    });
                }
                l.class = Some(*class);
                l.status_byte = Some(*status);
                if let Subject::Code { dtc, .. } = l.key.subject {
                    let info = cx.catalog.dtc_info(&dtc, *status);
                    l.severity = Some(info.severity);
                    l.description = Some(info.description);
                }
                Ok(())
            })?;
            if before.severity != lead.severity && lead.status == LeadStatus::Open {
                if let Some(s) = before.severity {
                    tx.add_counter(&counter::open_severity(s), -1)?;
                }
                if let Some(s) = lead.severity {
                    tx.add_counter(&counter::open_severity(s), 1)?;
                }
            }
        }
    }
    Ok(())
}

/// What the staff (or the customer, through sync) do to leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LeadAction {
    Assign {
        lead_id: u64,
        user: Option<String>,
    },
    /// `customer`: closed by the customer rather than the workshop.
    Close {
        lead_id: u64,
        note: Option<String>,
        #[serde(default)]
        customer: bool,
    },
    Reopen {
        lead_id: u64,
    },
    Note {
        lead_id: u64,
        text: String,
    },
    /// Queues a message to the customer; the type's template when no text.
    Message {
        lead_id: u64,
        text: Option<String>,
    },
    /// R-LEAD-USER: a lamp the driver reported (staff on the customer's
    /// behalf, or the app through sync).
    ReportUserLamp {
        device_id: u64,
        lamp: u8,
        note: Option<String>,
    },
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds a note to a lead.
pub fn note(tx: &mut WriteTx<'_>, id: u64, by: &str, text: String, now: u64) -> Result<Lead> {
    update(tx, id, |l| {
        l.notes.push(Note {
            at_ms: now,
            by: by.to_owned(),
            text: text.clone(),
        });
        l.history.push(LeadEvent {
            at_ms: now,
            by: Some(by.to_owned()),
            kind: LeadEventKind::Note(text),
        });
        Ok(())
    })
}

pub fn assign(
    tx: &mut WriteTx<'_>,
    id: u64,
    by: &str,
    user: Option<String>,
    now: u64,
) -> Result<Lead> {
    update(tx, id, |l| {
        l.assignee = user.clone();
        l.history.push(LeadEvent {
            at_ms: now,
            by: Some(by.to_owned()),
            kind: LeadEventKind::Assigned { to: user },
        });
        Ok(())
    })
}

/// Reopens a closed lead (the caller has checked the one-open-lead rule
/// with the rules' state; the store checks it again).
pub fn reopen(tx: &mut WriteTx<'_>, id: u64, by: &str, now: u64) -> Result<Lead> {
    let lead = update(tx, id, |l| {
        l.status = LeadStatus::Open;
        l.closed_at_ms = None;
        l.close_reason = None;
        l.history.push(LeadEvent {
            at_ms: now,
            by: Some(by.to_owned()),
            kind: LeadEventKind::Reopened,
        });
        Ok(())
    })?;
    count_open(tx, &lead, 1)?;
    Ok(lead)
}

/// Queues a message to the customer about a lead.
pub fn message(
    tx: &mut WriteTx<'_>,
    id: u64,
    by: &str,
    text: Option<String>,
    now: u64,
) -> Result<CustomerMessage> {
    let lead = load(tx, id)?;
    let text = text
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| template(lead.key.ty).to_owned());
    let mid = tx.next_id("message")?;
    let m = CustomerMessage {
        id: mid,
        lead_id: Some(id),
        device_id: lead.device_id,
        vin: lead.vin,
        text,
        by: by.to_owned(),
        created_ms: now,
        delivery: Delivery::Queued,
        version: 1,
    };
    tx.put_message(&m)?;
    update(tx, id, |l| {
        l.history.push(LeadEvent {
            at_ms: now,
            by: Some(by.to_owned()),
            kind: LeadEventKind::Messaged { message_id: mid },
        });
        Ok(())
    })?;
    Ok(m)
}

/// The dashboard's lead figures, read from the maintained counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeadCounts {
    pub open: std::collections::BTreeMap<&'static str, u64>,
    pub opened_30d: std::collections::BTreeMap<&'static str, u64>,
    pub closed_30d: std::collections::BTreeMap<&'static str, u64>,
    /// Open error-code leads by severity 1..=3.
    pub open_by_severity: [u64; 3],
}

/// Reads [`LeadCounts`] as of `now_ms` (30 daily buckets per type, each
/// type's read in one range scan).
pub fn lead_counts(store: &crate::store::Store, now_ms: u64) -> Result<LeadCounts> {
    let mut c = LeadCounts::default();
    let today = day(now_ms);
    let first = today.saturating_sub(29);
    // Day numbers sort as text while they have the same number of digits
    // (5 from 1997 to 2243); across a change of width, read day by day.
    let one_scan = first.to_string().len() == today.to_string().len();
    let sum = |name: fn(LeadType, u64) -> String, ty: LeadType| -> Result<u64> {
        if one_scan {
            store.counter_sum(&name(ty, first), &name(ty, today))
        } else {
            (first..=today).try_fold(0, |s, d| Ok(s + store.counter(&name(ty, d))?))
        }
    };
    for ty in LeadType::ALL {
        c.open
            .insert(ty.as_str(), store.counter(&counter::open(ty))?);
        c.opened_30d
            .insert(ty.as_str(), sum(counter::opened_on, ty)?);
        c.closed_30d
            .insert(ty.as_str(), sum(counter::closed_on, ty)?);
    }
    for s in 1..=3u8 {
        c.open_by_severity[s as usize - 1] = store.counter(&counter::open_severity(s))?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EngineKind, Store};

    #[test]
    fn the_30_day_figures_hold_exactly_the_last_30_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        let now = 20_416 * DAY_MS + 5_000;
        let today = day(now);
        store
            .write(|tx| {
                for (d, n) in [
                    (today - 30, 100),
                    (today - 29, 1),
                    (today - 3, 2),
                    (today, 4),
                ] {
                    tx.add_counter(&counter::opened_on(LeadType::ErrorCode, d), n)?;
                    tx.add_counter(&counter::closed_on(LeadType::ErrorCode, d), 10 * n)?;
                }
                // Another type's counters sort next to these: not counted.
                tx.add_counter(&counter::opened_on(LeadType::LowBattery, today), 1_000)?;
                tx.add_counter(&counter::opened_on(LeadType::ErrorCode, today + 1), 1_000)
            })
            .unwrap();
        let c = lead_counts(&store, now).unwrap();
        assert_eq!(c.opened_30d["error_code"], 7);
        assert_eq!(c.closed_30d["error_code"], 70);
        assert_eq!(c.opened_30d["low_battery"], 1_000);
        assert_eq!(c.opened_30d["warning_lamp"], 0);
    }
}
