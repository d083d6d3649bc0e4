//! Leads in the store: records, the one-open-lead index, the listing
//! indexes, the outbox, notifications and queued customer messages, consent
//! and settings. Every write here happens inside a [`WriteTx`], in the same
//! transaction as the change that caused it.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{device_key, get_record, pair_key, tables, Record, Result, Store, StoreError, WriteTx};
use crate::domain::consent::ConsentRecord;
use crate::domain::lead::{Lead, LeadKey, LeadStatus, LeadType, RuleState, Subject};
use crate::link::message::Vin;

impl Record for RuleState {
    const VERSION: u8 = 1;
}

impl Record for Lead {
    const VERSION: u8 = 1;
}

impl Record for ConsentRecord {
    const VERSION: u8 = 1;
}

impl Record for Notification {
    const VERSION: u8 = 1;
}

impl Record for CustomerMessage {
    const VERSION: u8 = 1;
}

/// What the outbox can hold (R-SYNC-1): the latest version of each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum OutboxKind {
    Lead = 1,
    Notification = 2,
    Message = 3,
    Consent = 4,
    /// [`crate::domain::customer::Customer`], keyed by id (u64 BE).
    Customer = 5,
    /// [`crate::domain::customer::RegisteredVehicle`], keyed by VIN.
    RegisteredVehicle = 6,
    /// [`crate::domain::customer::Invitation`], keyed by id (u64 BE).
    Invitation = 7,
    /// [`crate::domain::customer::Source`], keyed by its lower-case name
    /// (a deleted source's entry finds no record: it was deleted).
    Source = 8,
    /// [`crate::domain::customer::MarketingSpend`], keyed by month index
    /// (u32 BE) and source key (an entry without record: set to 0).
    MarketingSpend = 9,
}

/// A notification for the customer's app, sent through the importer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    pub lead_id: u64,
    pub device_id: u64,
    pub vin: Option<Vin>,
    /// e.g. "lead_opened".
    pub kind: String,
    pub text: String,
    pub created_ms: u64,
    pub version: u64,
}

/// Delivery state of a message to the customer (R-CONV-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Queued,
    Sent,
    Delivered,
}

/// A message the workshop wrote to a customer, queued for the importer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerMessage {
    pub id: u64,
    pub lead_id: Option<u64>,
    pub device_id: u64,
    pub vin: Option<Vin>,
    pub text: String,
    pub by: String,
    pub created_ms: u64,
    pub delivery: Delivery,
    pub version: u64,
}

/// Encodes a lead key after its device id: type, then subject.
pub fn lead_key_bytes(device_id: u64, key: &LeadKey) -> Vec<u8> {
    let mut k = device_key(device_id).to_vec();
    k.push(key.ty as u8);
    match key.subject {
        Subject::None => k.push(0),
        Subject::Lamp(l) => k.extend_from_slice(&[1, l]),
        Subject::Code { ecu, dtc } => {
            k.push(2);
            k.extend_from_slice(&ecu.to_be_bytes());
            k.extend_from_slice(&dtc.0);
        }
    }
    k
}

const SEQ_PREFIX: &str = "ids.";

impl WriteTx<'_> {
    /// The next id of a sequence (`lead`, `notification`, `message`).
    pub fn next_id(&mut self, sequence: &str) -> Result<u64> {
        self.add_counter(&format!("{SEQ_PREFIX}{sequence}"), 1)
    }

    pub fn rules(&self, device_id: u64) -> Result<RuleState> {
        Ok(get_record(&*self.tx, tables::RULES, &device_key(device_id))?.unwrap_or_default())
    }

    pub fn put_rules(&mut self, device_id: u64, rules: &RuleState) -> Result<()> {
        self.tx
            .put(tables::RULES, &device_key(device_id), &rules.to_bytes())
    }

    pub fn lead(&self, id: u64) -> Result<Option<Lead>> {
        get_record(&*self.tx, tables::LEADS, &id.to_be_bytes())
    }

    /// The open lead holding `key` for the vehicle, if any.
    pub fn open_lead_id(&self, device_id: u64, key: &LeadKey) -> Result<Option<u64>> {
        let v = self
            .tx
            .get(tables::OPEN_LEADS, &lead_key_bytes(device_id, key))?;
        Ok(v.and_then(|b| b.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Writes a new lead, or a new version of one, keeping the indexes and
    /// the outbox; refuses a second open lead for one key (the store
    /// enforces what the rules promise).
    pub fn put_lead(&mut self, lead: &Lead, previous: Option<&Lead>) -> Result<()> {
        let idx = lead_key_bytes(lead.device_id, &lead.key);
        let id = lead.id.to_be_bytes();
        match (previous.map(|p| p.status), lead.status) {
            (Some(LeadStatus::Open), LeadStatus::Open) => {}
            (_, LeadStatus::Open) => {
                if let Some(other) = self.open_lead_id(lead.device_id, &lead.key)? {
                    if other != lead.id {
                        return Err(StoreError::Aborted(format!(
                            "lead {other} is already open for this vehicle, type and subject"
                        )));
                    }
                }
                self.tx.put(tables::OPEN_LEADS, &idx, &id)?;
            }
            (Some(LeadStatus::Open), LeadStatus::Closed) => {
                self.tx.delete(tables::OPEN_LEADS, &idx)?;
            }
            (_, LeadStatus::Closed) => {}
        }
        let (old, new) = (
            previous.map(order_keys).unwrap_or_default(),
            order_keys(lead),
        );
        for k in old.iter().filter(|k| !new.contains(k)) {
            self.tx.delete(tables::LEAD_ORDER, k)?;
        }
        for k in new.iter().filter(|k| !old.contains(k)) {
            self.tx.put(tables::LEAD_ORDER, k, &[])?;
        }
        if previous.is_none() {
            self.tx.put(
                tables::LEADS_BY_DEVICE,
                &pair_key(lead.device_id, lead.id),
                &[],
            )?;
        }
        self.tx.put(tables::LEADS, &id, &lead.to_bytes())?;
        self.outbox(OutboxKind::Lead, &id, lead.version)
    }

    /// Records that the latest version of a record must go to the importer.
    /// Changes to one record coalesce: the outbox is bounded by the number
    /// of records, not by time offline (R-SYNC-1).
    pub fn outbox(&mut self, kind: OutboxKind, record_key: &[u8], version: u64) -> Result<()> {
        let mut k = vec![kind as u8];
        k.extend_from_slice(record_key);
        self.tx.put(tables::OUTBOX, &k, &version.to_le_bytes())
    }

    pub fn put_notification(&mut self, n: &Notification) -> Result<()> {
        self.tx
            .put(tables::NOTIFICATIONS, &n.id.to_be_bytes(), &n.to_bytes())?;
        self.outbox(OutboxKind::Notification, &n.id.to_be_bytes(), n.version)
    }

    pub fn put_message(&mut self, m: &CustomerMessage) -> Result<()> {
        self.tx
            .put(tables::MESSAGES, &m.id.to_be_bytes(), &m.to_bytes())?;
        self.outbox(OutboxKind::Message, &m.id.to_be_bytes(), m.version)
    }

    pub fn consent(&self, vin: &Vin) -> Result<Option<ConsentRecord>> {
        get_record(&*self.tx, tables::CONSENT, &vin.0)
    }

    pub fn put_consent(&mut self, c: &ConsentRecord, to_outbox: bool) -> Result<()> {
        self.tx.put(tables::CONSENT, &c.vin.0, &c.to_bytes())?;
        if to_outbox {
            self.outbox(OutboxKind::Consent, &c.vin.0, c.version)?;
        }
        Ok(())
    }

    pub fn setting<T: Record>(&self, name: &str) -> Result<Option<T>> {
        get_record(&*self.tx, tables::SETTINGS, name.as_bytes())
    }

    pub fn put_setting<T: Record>(&mut self, name: &str, value: &T) -> Result<()> {
        self.tx
            .put(tables::SETTINGS, name.as_bytes(), &value.to_bytes())
    }
}

/// The orders a lead list can take. Each is an index range per (type,
/// status), read backwards: the first entry is the first row shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LeadSort {
    /// Newest first (by the effective time that opened the lead).
    #[default]
    Opened,
    /// Highest estimated revenue first (R-LEAD-REV); leads without one last.
    Revenue,
    /// Error codes: severity 3 first, newest first within one (R-LEAD-DTC).
    Severity,
    /// Error codes: by ECU address ascending, newest first within one.
    Ecu,
}

impl LeadSort {
    pub const ALL: [LeadSort; 4] = [
        LeadSort::Opened,
        LeadSort::Revenue,
        LeadSort::Severity,
        LeadSort::Ecu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadSort::Opened => "opened",
            LeadSort::Revenue => "revenue",
            LeadSort::Severity => "severity",
            LeadSort::Ecu => "ecu",
        }
    }

    pub fn parse(s: &str) -> Option<LeadSort> {
        LeadSort::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether leads of `ty` have this order (severity and ECU belong to
    /// error codes only).
    pub fn applies_to(self, ty: LeadType) -> bool {
        matches!(self, LeadSort::Opened | LeadSort::Revenue) || ty == LeadType::ErrorCode
    }

    fn byte(self) -> u8 {
        self as u8
    }

    /// The index value of `lead` in this order, or None when the order does
    /// not hold it. Opened times fit in 48 bits (until the year 10889), which
    /// leaves the top 16 for the primary key of the compound orders.
    fn value(self, lead: &Lead) -> Option<u64> {
        const LOW48: u64 = (1 << 48) - 1;
        let opened = lead.opened_at_ms.min(LOW48);
        match self {
            LeadSort::Opened => Some(lead.opened_at_ms),
            LeadSort::Revenue => Some(lead.estimated_revenue_cents.unwrap_or(0)),
            LeadSort::Severity => match lead.key.subject {
                Subject::Code { .. } => {
                    Some((u64::from(lead.severity.unwrap_or(0)) << 48) | opened)
                }
                _ => None,
            },
            // Read backwards, so the ECU is stored inverted to come out ascending.
            LeadSort::Ecu => match lead.key.subject {
                Subject::Code { ecu, .. } => Some((u64::from(u16::MAX - ecu) << 48) | opened),
                _ => None,
            },
        }
    }
}

fn type_byte(ty: LeadType) -> u8 {
    LeadType::ALL.iter().position(|t| *t == ty).unwrap_or(0) as u8
}

fn status_byte(s: LeadStatus) -> u8 {
    match s {
        LeadStatus::Open => 0,
        LeadStatus::Closed => 1,
    }
}

fn order_prefix(sort: LeadSort, ty: LeadType, status: LeadStatus) -> [u8; 3] {
    [sort.byte(), type_byte(ty), status_byte(status)]
}

fn order_key(prefix: [u8; 3], value: u64, id: u64) -> [u8; 19] {
    let mut k = [0u8; 19];
    k[..3].copy_from_slice(&prefix);
    k[3..11].copy_from_slice(&value.to_be_bytes());
    k[11..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Every [`tables::LEAD_ORDER`] entry of one version of a lead.
fn order_keys(lead: &Lead) -> Vec<[u8; 19]> {
    LeadSort::ALL
        .into_iter()
        .filter_map(|sort| {
            let value = sort.value(lead)?;
            let prefix = order_prefix(sort, lead.key.ty, lead.status);
            Some(order_key(prefix, value, lead.id))
        })
        .collect()
}

/// Schema 1 -> 2: builds [`tables::LEAD_ORDER`] for the leads already kept
/// and empties the newest-first index it replaces.
pub(super) fn index_lead_orders(tx: &mut WriteTx<'_>) -> Result<()> {
    loop {
        let old = tx.tx.scan(
            tables::LEADS_BY_OPENED,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            512,
        )?;
        if old.is_empty() {
            break;
        }
        for (k, _) in &old {
            tx.tx.delete(tables::LEADS_BY_OPENED, k)?;
        }
    }
    let mut from: Option<Vec<u8>> = None;
    loop {
        let lo = match &from {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        let chunk = tx
            .tx
            .scan(tables::LEADS, (lo, Bound::Unbounded), false, 512)?;
        let Some((last, _)) = chunk.last() else {
            return Ok(());
        };
        from = Some(last.clone());
        for (_, bytes) in &chunk {
            let lead = Lead::from_bytes(bytes)?;
            for k in order_keys(&lead) {
                tx.tx.put(tables::LEAD_ORDER, &k, &[])?;
            }
        }
    }
}

/// Where a lead list continues: the sort value and id of the last row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadCursor {
    pub value: u64,
    pub id: u64,
}

/// What a lead list shows and in which order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadQuery {
    pub ty: Option<LeadType>,
    pub status: Option<LeadStatus>,
    pub sort: LeadSort,
    /// Only leads opened at or after this time.
    pub opened_since_ms: Option<u64>,
    /// Error codes of this severity (1..=3) only.
    pub severity: Option<u8>,
}

impl LeadQuery {
    fn keeps(&self, l: &Lead) -> bool {
        self.opened_since_ms.is_none_or(|t| l.opened_at_ms >= t)
            && self.severity.is_none_or(|s| l.severity == Some(s))
    }

    /// The index to read: a severity filter on the newest-first order reads
    /// the severity order, whose range for one severity is newest first.
    fn index_sort(&self) -> LeadSort {
        match (self.sort, self.severity) {
            (LeadSort::Opened, Some(_)) => LeadSort::Severity,
            (sort, _) => sort,
        }
    }

    /// The part of one (type, status) range that can match, as values.
    fn value_bounds(&self, sort: LeadSort) -> (u64, u64) {
        const LOW48: u64 = (1 << 48) - 1;
        let since = self.opened_since_ms.unwrap_or(0).min(LOW48);
        match (sort, self.severity) {
            (LeadSort::Opened, _) => (since, u64::MAX),
            (LeadSort::Severity, Some(s)) => {
                let top = u64::from(s) << 48;
                (top | since, top | LOW48)
            }
            _ => (0, u64::MAX),
        }
    }
}

/// A page of leads, newest first.
#[derive(Clone, Debug, Default)]
pub struct LeadPage {
    pub leads: Vec<Lead>,
    /// (opened_at_ms, id) of the last lead, to continue after.
    pub next: Option<(u64, u64)>,
}

/// What a lead listing keeps.
#[derive(Clone, Debug, Default)]
pub struct LeadFilter {
    pub ty: Option<LeadType>,
    pub status: Option<LeadStatus>,
    pub device_id: Option<u64>,
    /// Only leads opened at or after this time.
    pub opened_since_ms: Option<u64>,
}

impl LeadFilter {
    pub fn keeps(&self, l: &Lead) -> bool {
        self.ty.is_none_or(|t| l.key.ty == t)
            && self.status.is_none_or(|s| l.status == s)
            && self.device_id.is_none_or(|d| l.device_id == d)
            && self.opened_since_ms.is_none_or(|t| l.opened_at_ms >= t)
    }
}

fn order_entry(k: &[u8]) -> Result<(u64, u64)> {
    let corrupt = || StoreError::Corrupt("lead order key".into());
    let value = k.get(3..11).ok_or_else(corrupt)?;
    let id = k.get(11..19).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(value.try_into().map_err(|_| corrupt())?),
        u64::from_be_bytes(id.try_into().map_err(|_| corrupt())?),
    ))
}

impl Store {
    pub fn lead(&self, id: u64) -> Result<Option<Lead>> {
        get_record(self.engine(), tables::LEADS, &id.to_be_bytes())
    }

    pub fn rules(&self, device_id: u64) -> Result<RuleState> {
        Ok(get_record(self.engine(), tables::RULES, &device_key(device_id))?.unwrap_or_default())
    }

    pub fn consent(&self, vin: &Vin) -> Result<Option<ConsentRecord>> {
        get_record(self.engine(), tables::CONSENT, &vin.0)
    }

    pub fn setting<T: Record>(&self, name: &str) -> Result<Option<T>> {
        get_record(self.engine(), tables::SETTINGS, name.as_bytes())
    }

    /// Leads newest first by (opened_at, id), after `after`, filtered;
    /// reads the index in pages, never the whole table at once.
    pub fn leads(
        &self,
        filter: &LeadFilter,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<LeadPage> {
        let mut page = LeadPage::default();
        if let Some(device) = filter.device_id {
            // A vehicle's leads: its own index, then the same ordering.
            let (lo, hi) = (pair_key(device, 0), pair_key(device, u64::MAX));
            let mut all: Vec<Lead> = Vec::new();
            for (k, _) in self.engine().scan(
                tables::LEADS_BY_DEVICE,
                (Bound::Included(&lo[..]), Bound::Included(&hi[..])),
                false,
                usize::MAX,
            )? {
                let id = u64::from_be_bytes(
                    k[8..16]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("lead index key".into()))?,
                );
                if let Some(l) = self.lead(id)? {
                    all.push(l);
                }
            }
            all.sort_by_key(|l| std::cmp::Reverse((l.opened_at_ms, l.id)));
            let mut it = all
                .into_iter()
                .filter(|l| after.is_none_or(|a| (l.opened_at_ms, l.id) < a))
                .filter(|l| filter.keeps(l));
            page.leads = it.by_ref().take(limit).collect();
            if page.leads.len() == limit && it.next().is_some() {
                page.next = page.leads.last().map(|l| (l.opened_at_ms, l.id));
            }
            return Ok(page);
        }
        let query = LeadQuery {
            ty: filter.ty,
            status: filter.status,
            sort: LeadSort::Opened,
            opened_since_ms: filter.opened_since_ms,
            severity: None,
        };
        let after = after.map(|(value, id)| LeadCursor { value, id });
        let (leads, next) = self.lead_list(&query, after, limit)?;
        page.leads = leads;
        page.next = next.map(|c| (c.value, c.id));
        Ok(page)
    }

    /// One page of a lead list (R-LEAD-FILTER): each (type, status) range of
    /// the chosen order is read backwards from the cursor until it yields a
    /// page plus one, and the ranges are merged. Work is bounded by the page
    /// size, not by the number of leads, except where a filter the index does
    /// not hold (a period on a non-time order) skips entries.
    pub fn lead_list(
        &self,
        q: &LeadQuery,
        after: Option<LeadCursor>,
        limit: usize,
    ) -> Result<(Vec<Lead>, Option<LeadCursor>)> {
        let sort = q.index_sort();
        let types: Vec<LeadType> = match q.ty {
            Some(t) => vec![t],
            None => LeadType::ALL.to_vec(),
        };
        let statuses: Vec<LeadStatus> = match q.status {
            Some(s) => vec![s],
            None => vec![LeadStatus::Open, LeadStatus::Closed],
        };
        let (lo_value, hi_value) = q.value_bounds(sort);
        // When the index range is the whole answer, leads are read only for
        // the rows shown; otherwise each entry's lead is read to filter it.
        let by_range =
            sort == LeadSort::Opened || (sort == LeadSort::Severity && q.severity.is_some());
        let filtered = !by_range && (q.opened_since_ms.is_some() || q.severity.is_some());
        let mut found: Vec<(u64, u64, Option<Lead>)> = Vec::new();
        for ty in types.into_iter().filter(|t| sort.applies_to(*t)) {
            for status in &statuses {
                let prefix = order_prefix(sort, ty, *status);
                let lo = order_key(prefix, lo_value, 0);
                let mut hi = match after {
                    Some(c) if (c.value, c.id) <= (hi_value, u64::MAX) => {
                        order_key(prefix, c.value, c.id)
                    }
                    _ => order_key(prefix, hi_value, u64::MAX),
                };
                if hi < lo {
                    continue;
                }
                let mut inclusive = after.is_none();
                let mut kept = 0;
                while kept <= limit {
                    let upper = if inclusive {
                        Bound::Included(&hi[..])
                    } else {
                        Bound::Excluded(&hi[..])
                    };
                    let chunk = self.engine().scan(
                        tables::LEAD_ORDER,
                        (Bound::Included(&lo[..]), upper),
                        true,
                        (limit + 1).clamp(16, 512),
                    )?;
                    for (k, _) in &chunk {
                        let (value, id) = order_entry(k)?;
                        let lead = if filtered {
                            match self.lead(id)? {
                                Some(l) if q.keeps(&l) => Some(l),
                                _ => continue,
                            }
                        } else {
                            None
                        };
                        found.push((value, id, lead));
                        kept += 1;
                        if kept > limit {
                            break;
                        }
                    }
                    match chunk.last() {
                        Some((k, _)) if chunk.len() >= (limit + 1).clamp(16, 512) => {
                            hi.copy_from_slice(k);
                            inclusive = false;
                        }
                        _ => break,
                    }
                }
            }
        }
        found.sort_by_key(|(value, id, _)| std::cmp::Reverse((*value, *id)));
        let more = found.len() > limit;
        found.truncate(limit);
        let next = if more {
            found.last().map(|(value, id, _)| LeadCursor {
                value: *value,
                id: *id,
            })
        } else {
            None
        };
        let mut leads = Vec::with_capacity(found.len());
        for (_, id, lead) in found {
            match lead {
                Some(l) => leads.push(l),
                None => leads.extend(self.lead(id)?),
            }
        }
        Ok((leads, next))
    }

    /// The open lead ids of a vehicle.
    pub fn open_leads_of(&self, device_id: u64) -> Result<Vec<u64>> {
        let lo = device_key(device_id).to_vec();
        let mut hi = lo.clone();
        hi.push(0xFF);
        self.engine()
            .scan(
                tables::OPEN_LEADS,
                (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
                false,
                usize::MAX,
            )?
            .into_iter()
            .map(|(_, v)| {
                v.try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("open lead index value".into()))
            })
            .collect()
    }

    /// Records waiting to go to the importer: (kind byte, record key, version).
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u8, Vec<u8>, u64)>> {
        self.engine()
            .scan(
                tables::OUTBOX,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                limit,
            )?
            .into_iter()
            .map(|(k, v)| {
                let ver = v.try_into().ok().map(u64::from_le_bytes);
                match (k.split_first(), ver) {
                    (Some((kind, key)), Some(ver)) => Ok((*kind, key.to_vec(), ver)),
                    _ => Err(StoreError::Corrupt("outbox entry".into())),
                }
            })
            .collect()
    }

    pub fn message(&self, id: u64) -> Result<Option<CustomerMessage>> {
        get_record(self.engine(), tables::MESSAGES, &id.to_be_bytes())
    }

    pub fn notification(&self, id: u64) -> Result<Option<Notification>> {
        get_record(self.engine(), tables::NOTIFICATIONS, &id.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::DtcClass;
    use crate::link::message::Dtc;
    use crate::store::EngineKind;

    /// A varied lead: every type, both statuses, severities, ECUs,
    /// revenues and opened times that collide, so ties are exercised.
    fn lead(id: u64) -> Lead {
        let ty = LeadType::ALL[(id % 5) as usize];
        let subject = match ty {
            LeadType::ErrorCode => Subject::Code {
                ecu: [0x7E0, 0x7E8, 0x760][(id % 3) as usize],
                dtc: Dtc([0x03, (id % 251) as u8, 0x00]),
            },
            LeadType::WarningLamp | LeadType::UserLamp => Subject::Lamp((id % 12) as u8 + 1),
            _ => Subject::None,
        };
        let code = ty == LeadType::ErrorCode;
        Lead {
            id,
            device_id: 1000 + id,
            vin: None,
            key: LeadKey { ty, subject },
            status: if id.is_multiple_of(4) {
                LeadStatus::Closed
            } else {
                LeadStatus::Open
            },
            opened_at_ms: 1_700_000_000_000 + (id % 37) * 3_600_000,
            closed_at_ms: None,
            close_reason: None,
            assignee: None,
            notes: Vec::new(),
            estimated_revenue_cents: (!id.is_multiple_of(7)).then_some((id % 11) * 1_000),
            class: code.then_some(DtcClass::Permanent),
            status_byte: code.then_some(0x09),
            severity: code.then_some((id % 3) as u8 + 1),
            description: None,
            history: Vec::new(),
            version: 1,
        }
    }

    fn store_with(n: u64) -> (tempfile::TempDir, Store, Vec<Lead>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        let leads: Vec<Lead> = (1..=n).map(lead).collect();
        store
            .write(|tx| {
                for l in &leads {
                    tx.put_lead(l, None)?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store, leads)
    }

    /// What a list must show, computed the slow way.
    fn expected(all: &[Lead], q: &LeadQuery) -> Vec<u64> {
        let sort = q.index_sort();
        let mut rows: Vec<(u64, u64)> = all
            .iter()
            .filter(|l| q.ty.is_none_or(|t| l.key.ty == t))
            .filter(|l| q.status.is_none_or(|s| l.status == s))
            .filter(|l| q.keeps(l))
            .filter_map(|l| Some((sort.value(l)?, l.id)))
            .collect();
        rows.sort_by(|a, b| b.cmp(a));
        rows.into_iter().map(|(_, id)| id).collect()
    }

    fn paged(store: &Store, q: &LeadQuery, limit: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.lead_list(q, after, limit).unwrap();
            assert!(page.len() <= limit);
            ids.extend(page.iter().map(|l| l.id));
            match next {
                Some(c) => after = Some(c),
                None => return ids,
            }
        }
    }

    #[test]
    fn every_order_and_filter_pages_through_exactly_the_matching_leads() {
        let (_dir, store, all) = store_with(400);
        let since = 1_700_000_000_000 + 20 * 3_600_000;
        for sort in LeadSort::ALL {
            for ty in [None, Some(LeadType::ErrorCode), Some(LeadType::LowBattery)] {
                for status in [None, Some(LeadStatus::Open), Some(LeadStatus::Closed)] {
                    for severity in [None, Some(2)] {
                        for opened_since_ms in [None, Some(since)] {
                            let q = LeadQuery {
                                ty,
                                status,
                                sort,
                                opened_since_ms,
                                severity,
                            };
                            let want = expected(&all, &q);
                            for limit in [1, 7, 100, 1000] {
                                assert_eq!(paged(&store, &q, limit), want, "{q:?} limit {limit}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn orders_are_what_the_staff_expect() {
        let (_dir, store, _) = store_with(200);
        let q = |sort| LeadQuery {
            ty: Some(LeadType::ErrorCode),
            sort,
            ..Default::default()
        };
        let (by_severity, _) = store.lead_list(&q(LeadSort::Severity), None, 1000).unwrap();
        assert!(by_severity
            .windows(2)
            .all(|w| (w[0].severity, w[0].opened_at_ms) >= (w[1].severity, w[1].opened_at_ms)));
        let (by_ecu, _) = store.lead_list(&q(LeadSort::Ecu), None, 1000).unwrap();
        let ecu = |l: &Lead| match l.key.subject {
            Subject::Code { ecu, .. } => ecu,
            _ => unreachable!("error-code leads have an ECU"),
        };
        assert!(by_ecu.windows(2).all(|w| ecu(&w[0]) <= ecu(&w[1])));
        let (by_revenue, _) = store.lead_list(&q(LeadSort::Revenue), None, 1000).unwrap();
        assert!(by_revenue.windows(2).all(|w| {
            w[0].estimated_revenue_cents.unwrap_or(0) >= w[1].estimated_revenue_cents.unwrap_or(0)
        }));
    }

    #[test]
    fn a_changed_lead_moves_within_and_between_lists() {
        let (_dir, store, all) = store_with(50);
        let before = all[1].clone();
        assert_eq!(before.status, LeadStatus::Open);
        let mut after = before.clone();
        after.status = LeadStatus::Closed;
        after.severity = before.severity.map(|s| s % 3 + 1);
        after.estimated_revenue_cents = Some(9_999_900);
        after.version += 1;
        store
            .write(|tx| tx.put_lead(&after, Some(&before)))
            .unwrap();
        let mut now = all.clone();
        now[1] = after;
        for sort in LeadSort::ALL {
            for status in [Some(LeadStatus::Open), Some(LeadStatus::Closed), None] {
                let q = LeadQuery {
                    status,
                    sort,
                    ..Default::default()
                };
                assert_eq!(paged(&store, &q, 9), expected(&now, &q), "{q:?}");
            }
        }
    }

    #[test]
    fn the_migration_from_schema_1_builds_the_orders() {
        let (dir, store, all) = store_with(120);
        // Make it a schema-1 store: no order index, the old one filled.
        store
            .write(|tx| {
                for l in &all {
                    for k in order_keys(l) {
                        tx.tx.delete(tables::LEAD_ORDER, &k)?;
                    }
                    let old = pair_key(l.opened_at_ms, l.id);
                    tx.tx.put(tables::LEADS_BY_OPENED, &old, &[])?;
                }
                tx.tx
                    .put(tables::META, super::super::SCHEMA_KEY, &1u32.to_le_bytes())
            })
            .unwrap();
        drop(store);
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::SCHEMA_VERSION
        );
        let q = LeadQuery::default();
        assert_eq!(paged(&store, &q, 25), expected(&all, &q));
        let old = store
            .engine()
            .scan(
                tables::LEADS_BY_OPENED,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                10,
            )
            .unwrap();
        assert!(old.is_empty(), "the replaced index is emptied");
    }
}
