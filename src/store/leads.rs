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
        if previous.is_none() {
            self.tx.put(
                tables::LEADS_BY_DEVICE,
                &pair_key(lead.device_id, lead.id),
                &[],
            )?;
            self.tx.put(
                tables::LEADS_BY_OPENED,
                &pair_key(lead.opened_at_ms, lead.id),
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
        let mut upper = after.map(|(t, id)| pair_key(t, id));
        let floor = filter.opened_since_ms.map(|t| pair_key(t, 0));
        loop {
            let hi = match &upper {
                Some(k) => Bound::Excluded(&k[..]),
                None => Bound::Unbounded,
            };
            let lo = match &floor {
                Some(k) => Bound::Included(&k[..]),
                None => Bound::Unbounded,
            };
            let chunk = self
                .engine()
                .scan(tables::LEADS_BY_OPENED, (lo, hi), true, 256)?;
            let Some((last, _)) = chunk.last() else { break };
            upper = Some(
                last[..16]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("lead index key".into()))?,
            );
            for (k, _) in &chunk {
                let id = u64::from_be_bytes(
                    k[8..16]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("lead index key".into()))?,
                );
                let Some(l) = self.lead(id)? else { continue };
                if !filter.keeps(&l) {
                    continue;
                }
                if page.leads.len() == limit {
                    page.next = page.leads.last().map(|l| (l.opened_at_ms, l.id));
                    return Ok(page);
                }
                page.leads.push(l);
            }
            if chunk.len() < 256 {
                break;
            }
        }
        Ok(page)
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
