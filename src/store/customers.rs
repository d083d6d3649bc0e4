//! Customers, registered vehicles, invitations, sources, marketing spend and
//! which dongle says which VIN, in the store. Every write keeps its indexes,
//! its dashboard counters and its outbox entry in the same transaction as
//! the record (R-SYNC-1, R-DASH-2), and reads the previous version itself,
//! so a caller cannot get the counters out of step.
//!
//! Counting what lapses with time: a sent invitation expires by itself
//! (R-VEH-3), with nothing written. The counters hold the timeless part
//! (states as stored, [`AssignmentBasis`]); two indexes by sent time hold
//! what is waiting on a sent invitation, and the figures at a given time
//! move the lapsed ones over with one range read each.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;

use super::engine::Read;
use super::leads::OutboxKind;
use super::{get_record, tables, Record, Result, Store, StoreError, WriteTx};
use crate::domain::customer::{
    assignment_basis, source_key, AssignmentBasis, AssignmentState, Customer, Invitation,
    InvitationRules, InvitationState, MarketingSpend, Month, RegisteredVehicle, Source,
    VehicleOrigin,
};
use crate::link::message::Vin;

impl Record for Customer {
    const VERSION: u8 = 1;
}

impl Record for RegisteredVehicle {
    const VERSION: u8 = 1;
}

impl Record for Invitation {
    const VERSION: u8 = 1;
}

impl Record for Source {
    const VERSION: u8 = 1;
}

impl Record for MarketingSpend {
    const VERSION: u8 = 1;
}

/// Counter names (in [`tables::COUNTERS`]) kept by this module.
pub mod counter {
    use crate::domain::customer::{AssignmentState, InvitationState};

    /// Customers in the store.
    pub const CUSTOMERS: &str = "customers.total";
    /// Customers without a source (R-SRC-2).
    pub const UNKNOWN_SOURCE: &str = "customers.unknown_source";
    /// Registered vehicles (by VIN).
    pub const REGISTERED: &str = "vehicles.registered";
    /// Registered vehicles whose VIN a dongle has said in a HELLO.
    pub const CONNECTED: &str = "vehicles.connected";

    /// Customers whose source has this key.
    pub fn source_users(key: &str) -> String {
        format!("customers.by_source.{key}")
    }

    /// Registered vehicles by [`crate::domain::customer::AssignmentBasis`]
    /// state (lapses not applied: see [`crate::store::Store::assignment_figures`]).
    pub fn assignment(state: AssignmentState) -> String {
        format!("vehicles.assignment.{}", state.as_str())
    }

    /// Invitations by state as stored (lapses not applied).
    pub fn invitations(state: InvitationState) -> String {
        format!("invitations.{}", state.as_str())
    }
}

/// Id sequences (see [`WriteTx::next_id`]).
pub const CUSTOMER_IDS: &str = "customer";
pub const INVITATION_IDS: &str = "invitation";

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn u64_key_vin(n: u64, vin: &Vin) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..8].copy_from_slice(&n.to_be_bytes());
    k[8..].copy_from_slice(&vin.0);
    k
}

fn u64_pair(a: u64, b: u64) -> [u8; 16] {
    super::pair_key(a, b)
}

fn spend_key(month: Month, source: &str) -> Vec<u8> {
    let mut k = month.index().to_be_bytes().to_vec();
    k.extend_from_slice(source_key(source).as_bytes());
    k
}

fn decode_id(bytes: &[u8], what: &str) -> Result<u64> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(b))
}

/// Every pair of `table` whose key is `prefix` followed by `rest` bytes.
fn prefixed(
    r: &(impl Read + ?Sized),
    table: super::Table,
    prefix: &[u8],
    rest: usize,
) -> Result<super::engine::Pairs> {
    let mut hi = prefix.to_vec();
    hi.resize(prefix.len() + rest, 0xFF);
    r.scan(
        table,
        (Bound::Included(prefix), Bound::Included(&hi[..])),
        false,
        usize::MAX,
    )
}

// Reads shared by the store and a write transaction.

fn customer(r: &(impl Read + ?Sized), id: u64) -> Result<Option<Customer>> {
    get_record(r, tables::CUSTOMERS, &id_key(id))
}

fn customer_by_dms(r: &(impl Read + ?Sized), dms_id: &str) -> Result<Option<Customer>> {
    match r.get(tables::CUSTOMERS_BY_DMS, dms_id.as_bytes())? {
        Some(b) => customer(r, decode_id(&b, "customer index")?),
        None => Ok(None),
    }
}

fn registered_vehicle(r: &(impl Read + ?Sized), vin: &Vin) -> Result<Option<RegisteredVehicle>> {
    get_record(r, tables::REGISTERED_VEHICLES, &vin.0)
}

fn invitation(r: &(impl Read + ?Sized), id: u64) -> Result<Option<Invitation>> {
    get_record(r, tables::INVITATIONS, &id_key(id))
}

fn source(r: &(impl Read + ?Sized), name: &str) -> Result<Option<Source>> {
    get_record(r, tables::SOURCES, source_key(name).as_bytes())
}

fn device_of_vin(r: &(impl Read + ?Sized), vin: &Vin) -> Result<Option<u64>> {
    r.get(tables::VIN_DEVICE, &vin.0)?
        .map(|b| decode_id(&b, "device id"))
        .transpose()
}

fn counter(r: &(impl Read + ?Sized), name: &str) -> Result<u64> {
    match r.get(tables::COUNTERS, name.as_bytes())? {
        Some(b) => {
            let b: [u8; 8] = b
                .try_into()
                .map_err(|_| StoreError::Corrupt("counter is not 8 bytes".into()))?;
            Ok(u64::from_le_bytes(b))
        }
        None => Ok(0),
    }
}

/// The vehicle's current invitation, as stored.
fn current_invitation(
    r: &(impl Read + ?Sized),
    v: &RegisteredVehicle,
) -> Result<Option<Invitation>> {
    v.invitation_id.map_or(Ok(None), |id| invitation(r, id))
}

fn months_with_spend(r: &(impl Read + ?Sized), name: &str) -> Result<Vec<Month>> {
    let key = source_key(name);
    let mut out = Vec::new();
    for (k, _) in r.scan(
        tables::MARKETING_SPEND,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        usize::MAX,
    )? {
        if k.len() > 4 && &k[4..] == key.as_bytes() {
            let i = u32::from_be_bytes(k[..4].try_into().unwrap_or_default());
            out.push(Month::from_index(i));
        }
    }
    Ok(out)
}

/// Entries of an index by sent time with a sent time at or before `until`.
fn count_sent_until(
    r: &(impl Read + ?Sized),
    table: super::Table,
    until: Option<u64>,
) -> Result<u64> {
    let Some(until) = until else { return Ok(0) };
    let hi = until.saturating_add(1).to_be_bytes();
    let n = r
        .scan(
            table,
            (Bound::Unbounded, Bound::Excluded(&hi[..])),
            false,
            usize::MAX,
        )?
        .len();
    Ok(n as u64)
}

/// The latest sent time that has lapsed by `now_ms`, if any can have.
fn lapse_cutoff(now_ms: u64, rules: InvitationRules) -> Option<u64> {
    now_ms.checked_sub(rules.expiry_ms())
}

impl WriteTx<'_> {
    pub fn customer(&self, id: u64) -> Result<Option<Customer>> {
        customer(&*self.tx, id)
    }

    pub fn customer_by_dms(&self, dms_id: &str) -> Result<Option<Customer>> {
        customer_by_dms(&*self.tx, dms_id)
    }

    pub fn registered_vehicle(&self, vin: &Vin) -> Result<Option<RegisteredVehicle>> {
        registered_vehicle(&*self.tx, vin)
    }

    pub fn invitation(&self, id: u64) -> Result<Option<Invitation>> {
        invitation(&*self.tx, id)
    }

    pub fn source(&self, name: &str) -> Result<Option<Source>> {
        source(&*self.tx, name)
    }

    pub fn device_of_vin(&self, vin: &Vin) -> Result<Option<u64>> {
        device_of_vin(&*self.tx, vin)
    }

    /// Customers whose source is `name` (any case).
    pub fn source_users(&self, name: &str) -> Result<u64> {
        self.counter(&counter::source_users(&source_key(name)))
    }

    /// Months with marketing spend booked on source `name`.
    pub fn months_with_spend(&self, name: &str) -> Result<Vec<Month>> {
        months_with_spend(&*self.tx, name)
    }

    pub fn spend(&self, month: Month, source: &str) -> Result<Option<MarketingSpend>> {
        get_record(
            &*self.tx,
            tables::MARKETING_SPEND,
            &spend_key(month, source),
        )
    }

    /// Writes a new customer or a new version of one, with its indexes,
    /// counters and outbox entry. Refuses a DMS id another customer has.
    pub fn put_customer(&mut self, c: &Customer) -> Result<()> {
        let previous = self.customer(c.id)?;
        let prev = previous.as_ref();
        if let Some(dms) = &c.dms_id {
            if let Some(owner) = self.tx.get(tables::CUSTOMERS_BY_DMS, dms.as_bytes())? {
                let owner = decode_id(&owner, "customer index")?;
                if owner != c.id {
                    return Err(StoreError::Aborted(format!(
                        "customer id {dms:?} already belongs to customer #{owner}"
                    )));
                }
            }
        }
        if let Some(old) = prev.and_then(|p| p.dms_id.as_ref()) {
            if c.dms_id.as_ref() != Some(old) {
                self.tx.delete(tables::CUSTOMERS_BY_DMS, old.as_bytes())?;
            }
        }
        if let Some(dms) = &c.dms_id {
            self.tx
                .put(tables::CUSTOMERS_BY_DMS, dms.as_bytes(), &id_key(c.id))?;
        }
        if let Some(p) = prev {
            self.tx.delete(
                tables::CUSTOMERS_BY_SINCE,
                &u64_pair(p.customer_since_ms, p.id),
            )?;
        }
        self.tx.put(
            tables::CUSTOMERS_BY_SINCE,
            &u64_pair(c.customer_since_ms, c.id),
            &[],
        )?;
        if prev.is_none() {
            self.add_counter(counter::CUSTOMERS, 1)?;
        }
        let old_source = prev.and_then(|p| p.source.as_deref()).map(source_key);
        let new_source = c.source.as_deref().map(source_key);
        if prev.is_none() || old_source != new_source {
            if prev.is_some() {
                self.count_source(old_source.as_deref(), -1)?;
            }
            self.count_source(new_source.as_deref(), 1)?;
        }
        self.tx
            .put(tables::CUSTOMERS, &id_key(c.id), &c.to_bytes())?;
        self.outbox(OutboxKind::Customer, &id_key(c.id), c.version)
    }

    fn count_source(&mut self, key: Option<&str>, delta: i64) -> Result<()> {
        match key {
            Some(k) => self.add_counter(&counter::source_users(k), delta)?,
            None => self.add_counter(counter::UNKNOWN_SOURCE, delta)?,
        };
        Ok(())
    }

    /// Writes a registered vehicle (new or changed) with its customer index,
    /// assignment counters and outbox entry. Its current invitation is read
    /// as stored: write an invitation before the vehicle that links it.
    pub fn put_registered_vehicle(&mut self, v: &RegisteredVehicle) -> Result<()> {
        let previous = self.registered_vehicle(&v.vin)?;
        let old_basis = match &previous {
            Some(p) => Some(assignment_basis(
                p,
                current_invitation(&*self.tx, p)?.as_ref(),
            )),
            None => None,
        };
        let new_basis = assignment_basis(v, current_invitation(&*self.tx, v)?.as_ref());
        self.shift_basis(&v.vin, old_basis, Some(new_basis))?;
        let old_customer = previous.as_ref().and_then(|p| p.customer_id);
        if old_customer != v.customer_id || previous.is_none() {
            if let Some(c) = old_customer {
                self.tx
                    .delete(tables::VEHICLES_BY_CUSTOMER, &u64_key_vin(c, &v.vin))?;
            }
            if let Some(c) = v.customer_id {
                self.tx
                    .put(tables::VEHICLES_BY_CUSTOMER, &u64_key_vin(c, &v.vin), &[])?;
            }
        }
        if previous.is_none() {
            self.add_counter(counter::REGISTERED, 1)?;
        }
        self.tx
            .put(tables::REGISTERED_VEHICLES, &v.vin.0, &v.to_bytes())?;
        self.outbox(OutboxKind::RegisteredVehicle, &v.vin.0, v.version)
    }

    /// Moves one vehicle's contribution to the assignment counters and the
    /// awaiting-by-sent index from `old` to `new`.
    fn shift_basis(
        &mut self,
        vin: &Vin,
        old: Option<AssignmentBasis>,
        new: Option<AssignmentBasis>,
    ) -> Result<()> {
        if old == new {
            return Ok(());
        }
        if let Some(o) = old {
            self.add_counter(&counter::assignment(o.state), -1)?;
            if let Some(sent) = o.lapses_from_sent_ms {
                self.tx
                    .delete(tables::AWAITING_BY_SENT, &u64_key_vin(sent, vin))?;
            }
        }
        if let Some(n) = new {
            self.add_counter(&counter::assignment(n.state), 1)?;
            if let Some(sent) = n.lapses_from_sent_ms {
                self.tx
                    .put(tables::AWAITING_BY_SENT, &u64_key_vin(sent, vin), &[])?;
            }
        }
        Ok(())
    }

    /// Writes an invitation (new or changed) with its counters, its place
    /// in the by-sent index and its outbox entry; when it is its vehicle's
    /// current invitation, the vehicle's assignment moves with it.
    pub fn put_invitation(&mut self, inv: &Invitation) -> Result<()> {
        let previous = self.invitation(inv.id)?;
        let sent_entry = |i: &Invitation| match (i.state, i.sent_ms) {
            (InvitationState::Sent, Some(t)) => Some(u64_pair(t, i.id)),
            _ => None,
        };
        let (old_entry, new_entry) = (previous.as_ref().and_then(sent_entry), sent_entry(inv));
        if old_entry != new_entry {
            if let Some(k) = old_entry {
                self.tx.delete(tables::INVITATIONS_BY_SENT, &k)?;
            }
            if let Some(k) = new_entry {
                self.tx.put(tables::INVITATIONS_BY_SENT, &k, &[])?;
            }
        }
        if previous.as_ref().map(|p| p.state) != Some(inv.state) {
            if let Some(p) = &previous {
                self.add_counter(&counter::invitations(p.state), -1)?;
            }
            self.add_counter(&counter::invitations(inv.state), 1)?;
        }
        if let Some(v) = self.registered_vehicle(&inv.vin)? {
            if v.invitation_id == Some(inv.id) {
                let old = assignment_basis(&v, previous.as_ref());
                let new = assignment_basis(&v, Some(inv));
                self.shift_basis(&v.vin, Some(old), Some(new))?;
            }
        }
        self.tx
            .put(tables::INVITATIONS, &id_key(inv.id), &inv.to_bytes())?;
        self.outbox(OutboxKind::Invitation, &id_key(inv.id), inv.version)
    }

    /// Writes a source (new or changed).
    pub fn put_source(&mut self, s: &Source) -> Result<()> {
        let key = s.key();
        self.tx
            .put(tables::SOURCES, key.as_bytes(), &s.to_bytes())?;
        self.outbox(OutboxKind::Source, key.as_bytes(), s.version)
    }

    /// Deletes a source (the caller checked
    /// [`Source::check_delete`]); the outbox carries the next version with
    /// no record behind it.
    pub fn delete_source(&mut self, s: &Source) -> Result<()> {
        let key = s.key();
        self.tx.delete(tables::SOURCES, key.as_bytes())?;
        self.outbox(OutboxKind::Source, key.as_bytes(), s.version + 1)
    }

    /// Books marketing spend; zero cents removes the month's entry.
    pub fn put_spend(&mut self, s: &MarketingSpend) -> Result<()> {
        let key = spend_key(s.month, &s.source);
        if s.cents == 0 {
            self.tx.delete(tables::MARKETING_SPEND, &key)?;
        } else {
            self.tx.put(tables::MARKETING_SPEND, &key, &s.to_bytes())?;
        }
        self.outbox(OutboxKind::MarketingSpend, &key, s.version)
    }

    /// "A dongle heard for a known VIN attaches to it" (R-VEH-1): records
    /// that `device_id` says `vin`. A VIN nobody registered is registered
    /// (origin: dongle, without customer), so every vehicle a dongle names
    /// counts on the dashboard. Returns whether anything changed.
    pub fn attach_unit(&mut self, vin: &Vin, device_id: u64, now_ms: u64) -> Result<bool> {
        let before = self.device_of_vin(vin)?;
        if before == Some(device_id) {
            return Ok(false);
        }
        self.tx
            .put(tables::VIN_DEVICE, &vin.0, &device_id.to_be_bytes())?;
        if before.is_none() {
            self.add_counter(counter::CONNECTED, 1)?;
        }
        let vehicle = match self.registered_vehicle(vin)? {
            // Connected now (or another dongle): a new version for sync.
            Some(mut v) => {
                v.version += 1;
                v.updated_ms = now_ms;
                v
            }
            None => RegisteredVehicle::new(*vin, VehicleOrigin::Dongle, now_ms),
        };
        self.put_registered_vehicle(&vehicle)?;
        Ok(true)
    }
}

/// Customers and their figures as of a time (R-DASH-1, R-SRC-2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomerFigures {
    pub total: u64,
    /// Customers without a source.
    pub unknown_source: u64,
    /// Customers whose source is not mapped to a main category yet.
    pub unmapped_source: u64,
}

/// Registered vehicles per assignment state at a time (R-VEH-2, R-DASH-1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AssignmentFigures {
    pub total: u64,
    pub without_customer: u64,
    pub awaiting_assignment: u64,
    pub assigned: u64,
    /// With a dongle heard saying its VIN; the rest are "not connected".
    pub connected: u64,
}

impl AssignmentFigures {
    pub fn of(&self, state: AssignmentState) -> u64 {
        match state {
            AssignmentState::WithoutCustomer => self.without_customer,
            AssignmentState::AwaitingAssignment => self.awaiting_assignment,
            AssignmentState::Assigned => self.assigned,
        }
    }
}

impl Store {
    pub fn customer(&self, id: u64) -> Result<Option<Customer>> {
        customer(self.engine(), id)
    }

    pub fn customer_by_dms(&self, dms_id: &str) -> Result<Option<Customer>> {
        customer_by_dms(self.engine(), dms_id)
    }

    /// Customers in id order, after `after`.
    pub fn customers(&self, after: Option<u64>, limit: usize) -> Result<Vec<Customer>> {
        let start = after.map(id_key);
        let lower = match &start {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        self.engine()
            .scan(tables::CUSTOMERS, (lower, Bound::Unbounded), false, limit)?
            .iter()
            .map(|(_, v)| Customer::from_bytes(v))
            .collect()
    }

    /// Customers whose customer-since day is in `[from_ms, to_ms)`, oldest
    /// first: the new customers of a period (R-SRC-3).
    pub fn customers_since(&self, from_ms: u64, to_ms: u64) -> Result<Vec<Customer>> {
        let (lo, hi) = (u64_pair(from_ms, 0), u64_pair(to_ms, 0));
        let mut out = Vec::new();
        for (k, _) in self.engine().scan(
            tables::CUSTOMERS_BY_SINCE,
            (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
            false,
            usize::MAX,
        )? {
            let id = decode_id(&k[8..], "since index")?;
            out.extend(self.customer(id)?);
        }
        Ok(out)
    }

    pub fn registered_vehicle(&self, vin: &Vin) -> Result<Option<RegisteredVehicle>> {
        registered_vehicle(self.engine(), vin)
    }

    /// Registered vehicles in VIN order, after `after`.
    pub fn registered_vehicles(
        &self,
        after: Option<&Vin>,
        limit: usize,
    ) -> Result<Vec<RegisteredVehicle>> {
        let lower = match after {
            Some(v) => Bound::Excluded(&v.0[..]),
            None => Bound::Unbounded,
        };
        self.engine()
            .scan(
                tables::REGISTERED_VEHICLES,
                (lower, Bound::Unbounded),
                false,
                limit,
            )?
            .iter()
            .map(|(_, v)| RegisteredVehicle::from_bytes(v))
            .collect()
    }

    /// A customer's vehicles, in VIN order.
    pub fn vehicles_of_customer(&self, customer_id: u64) -> Result<Vec<RegisteredVehicle>> {
        let mut out = Vec::new();
        for (k, _) in prefixed(
            self.engine(),
            tables::VEHICLES_BY_CUSTOMER,
            &id_key(customer_id),
            17,
        )? {
            let vin = Vin(k[8..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("vehicle index key".into()))?);
            out.extend(self.registered_vehicle(&vin)?);
        }
        Ok(out)
    }

    pub fn invitation(&self, id: u64) -> Result<Option<Invitation>> {
        invitation(self.engine(), id)
    }

    /// Invitations in id order, after `after`.
    pub fn invitations(&self, after: Option<u64>, limit: usize) -> Result<Vec<Invitation>> {
        let start = after.map(id_key);
        let lower = match &start {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        self.engine()
            .scan(tables::INVITATIONS, (lower, Bound::Unbounded), false, limit)?
            .iter()
            .map(|(_, v)| Invitation::from_bytes(v))
            .collect()
    }

    /// A vehicle's current invitation.
    pub fn current_invitation(&self, v: &RegisteredVehicle) -> Result<Option<Invitation>> {
        current_invitation(self.engine(), v)
    }

    pub fn source(&self, name: &str) -> Result<Option<Source>> {
        source(self.engine(), name)
    }

    /// Every source, by lower-case name.
    pub fn sources(&self) -> Result<Vec<Source>> {
        self.engine()
            .scan(
                tables::SOURCES,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                usize::MAX,
            )?
            .iter()
            .map(|(_, v)| Source::from_bytes(v))
            .collect()
    }

    /// Customers whose source is `name` (any case).
    pub fn source_users(&self, name: &str) -> Result<u64> {
        self.counter(&counter::source_users(&source_key(name)))
    }

    /// Marketing spend of the months `from..=to`, by month then source.
    pub fn marketing_spend(&self, from: Month, to: Month) -> Result<Vec<MarketingSpend>> {
        let (lo, hi) = (from.index().to_be_bytes(), (to.index() + 1).to_be_bytes());
        self.engine()
            .scan(
                tables::MARKETING_SPEND,
                (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
                false,
                usize::MAX,
            )?
            .iter()
            .map(|(_, v)| MarketingSpend::from_bytes(v))
            .collect()
    }

    /// The dongle last heard saying `vin`; `None`: not connected.
    pub fn device_of_vin(&self, vin: &Vin) -> Result<Option<u64>> {
        device_of_vin(self.engine(), vin)
    }

    pub fn customer_figures(&self) -> Result<CustomerFigures> {
        let mut unmapped = 0;
        for s in self.sources()?.iter().filter(|s| s.category.is_none()) {
            unmapped += self.source_users(&s.name)?;
        }
        Ok(CustomerFigures {
            total: self.counter(counter::CUSTOMERS)?,
            unknown_source: self.counter(counter::UNKNOWN_SOURCE)?,
            unmapped_source: unmapped,
        })
    }

    /// Registered vehicles per assignment state at `now_ms`: the counters,
    /// with the vehicles whose sent invitation lapsed by now moved from
    /// awaiting to without customer.
    pub fn assignment_figures(
        &self,
        now_ms: u64,
        rules: InvitationRules,
    ) -> Result<AssignmentFigures> {
        let r = self.engine();
        let lapsed = count_sent_until(r, tables::AWAITING_BY_SENT, lapse_cutoff(now_ms, rules))?;
        let awaiting = counter(r, &counter::assignment(AssignmentState::AwaitingAssignment))?;
        Ok(AssignmentFigures {
            total: counter(r, counter::REGISTERED)?,
            without_customer: counter(r, &counter::assignment(AssignmentState::WithoutCustomer))?
                + lapsed,
            awaiting_assignment: awaiting.saturating_sub(lapsed),
            assigned: counter(r, &counter::assignment(AssignmentState::Assigned))?,
            connected: counter(r, counter::CONNECTED)?,
        })
    }

    /// Invitations per state at `now_ms` (R-VEH-3, R-DASH-1): the stored
    /// states, with sent ones that lapsed by now counted as expired.
    pub fn invitation_figures(
        &self,
        now_ms: u64,
        rules: InvitationRules,
    ) -> Result<BTreeMap<InvitationState, u64>> {
        let r = self.engine();
        let lapsed = count_sent_until(r, tables::INVITATIONS_BY_SENT, lapse_cutoff(now_ms, rules))?;
        let mut out = BTreeMap::new();
        for s in InvitationState::ALL {
            out.insert(s, counter(r, &counter::invitations(s))?);
        }
        if let Some(sent) = out.get_mut(&InvitationState::Sent) {
            *sent = sent.saturating_sub(lapsed);
        }
        *out.entry(InvitationState::Expired).or_default() += lapsed;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{
        assignment_state, check, InvitationEvent, MainCategory, SourceOrigin, DAY_MS,
    };
    use crate::store::EngineKind;

    const T0: u64 = 1_772_323_200_000;
    const RULES: InvitationRules = InvitationRules { expiry_days: 14 };

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        (dir, store)
    }

    fn vin(n: u32) -> Vin {
        check::vin(&format!("WVWZZZ1JZXW{n:06}")).unwrap()
    }

    fn new_customer(id: u64, dms: &str, source: Option<&str>) -> Customer {
        Customer {
            id,
            dms_id: Some(dms.into()),
            name: format!("Customer {dms}"),
            phone: None,
            email: None,
            source: source.map(str::to_string),
            customer_since_ms: T0,
            created_ms: T0,
            updated_ms: T0,
            version: 1,
        }
    }

    fn owned(n: u32, customer: u64) -> RegisteredVehicle {
        let mut v = RegisteredVehicle::new(vin(n), VehicleOrigin::Dms, T0);
        v.customer_id = Some(customer);
        v
    }

    /// The figures as counted must equal the figures recomputed from every
    /// record, at any time.
    fn assert_figures_match(store: &Store, now: u64) {
        let vehicles = store.registered_vehicles(None, usize::MAX).unwrap();
        let mut expect = AssignmentFigures {
            total: vehicles.len() as u64,
            ..Default::default()
        };
        for v in &vehicles {
            let inv = store.current_invitation(v).unwrap();
            match assignment_state(v, inv.as_ref(), now, RULES) {
                AssignmentState::WithoutCustomer => expect.without_customer += 1,
                AssignmentState::AwaitingAssignment => expect.awaiting_assignment += 1,
                AssignmentState::Assigned => expect.assigned += 1,
            }
            if store.device_of_vin(&v.vin).unwrap().is_some() {
                expect.connected += 1;
            }
        }
        let counted = store.assignment_figures(now, RULES).unwrap();
        assert_eq!(counted, expect);
        let sum: u64 = AssignmentState::ALL.iter().map(|s| counted.of(*s)).sum();
        assert_eq!(sum, counted.total, "every vehicle in one state");
        let mut states: BTreeMap<InvitationState, u64> =
            InvitationState::ALL.into_iter().map(|s| (s, 0)).collect();
        for i in store.invitations(None, usize::MAX).unwrap() {
            *states.get_mut(&i.state_at(now, RULES)).unwrap() += 1;
        }
        assert_eq!(store.invitation_figures(now, RULES).unwrap(), states);
    }

    #[test]
    fn customers_keep_their_dms_index_source_counts_and_outbox() {
        let (_dir, store) = open();
        store
            .write(|tx| {
                tx.put_customer(&new_customer(1, "K1", Some("Google")))?;
                tx.put_customer(&new_customer(2, "K2", None))?;
                tx.put_customer(&new_customer(3, "K3", Some("google")))
            })
            .unwrap();
        assert_eq!(store.customer_by_dms("K2").unwrap().unwrap().id, 2);
        assert_eq!(store.source_users("GOOGLE").unwrap(), 2);
        let f = store.customer_figures().unwrap();
        assert_eq!((f.total, f.unknown_source), (3, 1));
        // A new DMS id and a source set in place (R-SRC-2).
        let mut c = store.customer(2).unwrap().unwrap();
        c.dms_id = Some("K2b".into());
        c.source = Some("Yelp".into());
        c.version += 1;
        store.write(|tx| tx.put_customer(&c)).unwrap();
        assert!(store.customer_by_dms("K2").unwrap().is_none());
        assert_eq!(store.customer_by_dms("K2b").unwrap().unwrap().version, 2);
        assert_eq!(store.customer_figures().unwrap().unknown_source, 0);
        assert_eq!(store.source_users("yelp").unwrap(), 1);
        // Two customers cannot share a DMS id; nothing of it is kept.
        let clash = store.write(|tx| tx.put_customer(&new_customer(9, "K1", None)));
        assert!(matches!(clash, Err(StoreError::Aborted(m)) if m.contains("#1")));
        assert_eq!(store.customer_figures().unwrap().total, 3);
        let outbox = store.outbox(100).unwrap();
        let entry = outbox
            .iter()
            .find(|(k, key, _)| *k == OutboxKind::Customer as u8 && key[..] == 2u64.to_be_bytes())
            .unwrap();
        assert_eq!(entry.2, 2, "the latest version, coalesced");
        assert_eq!(store.customers(Some(1), 10).unwrap().len(), 2);
        assert_eq!(store.customers_since(T0, T0 + 1).unwrap().len(), 3);
        assert!(store
            .customers_since(T0 + 1, T0 + DAY_MS)
            .unwrap()
            .is_empty());
    }

    // R-VEH-2, R-VEH-3, R-DASH-1: counted figures are the recomputed ones,
    // including invitations that lapse with time.
    #[test]
    fn assignment_and_invitation_figures_follow_every_change_and_lapse() {
        let (_dir, store) = open();
        store
            .write(|tx| {
                tx.put_customer(&new_customer(1, "K1", None))?;
                for n in 1..=5 {
                    tx.put_registered_vehicle(&owned(n, 1))?;
                }
                let mut fleet = RegisteredVehicle::new(vin(6), VehicleOrigin::Dms, T0);
                fleet.fleet = Some("Taxis".into());
                tx.put_registered_vehicle(&fleet)
            })
            .unwrap();
        assert_figures_match(&store, T0);
        // Invite vehicles 1..=4; send 2..=4; 3 accepts; 4 declines.
        let invite = |n: u32, id: u64| {
            store
                .write(|tx| {
                    let mut v = tx.registered_vehicle(&vin(n))?.unwrap();
                    let cur = tx
                        .registered_vehicle(&vin(n))?
                        .and_then(|v| v.invitation_id);
                    let cur = cur.map(|i| tx.invitation(i)).transpose()?.flatten();
                    if let Some(l) = cur.as_ref().and_then(|c| c.lapse(T0 + 20 * DAY_MS, RULES)) {
                        tx.put_invitation(&l)?;
                    }
                    let inv = Invitation::create(id, &v, cur.as_ref(), T0, T0 + 20 * DAY_MS, RULES)
                        .unwrap();
                    tx.put_invitation(&inv)?;
                    v.invitation_id = Some(id);
                    v.version += 1;
                    tx.put_registered_vehicle(&v)
                })
                .unwrap()
        };
        let event = |id: u64, ev: InvitationEvent, at: u64| {
            store
                .write(|tx| {
                    let inv = tx.invitation(id)?.unwrap();
                    tx.put_invitation(&inv.apply(ev, at, at, RULES).unwrap())
                })
                .unwrap()
        };
        for (n, id) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
            invite(n, id);
        }
        event(2, InvitationEvent::Send, T0 + DAY_MS);
        event(3, InvitationEvent::Send, T0 + DAY_MS);
        event(4, InvitationEvent::Send, T0 + 2 * DAY_MS);
        event(3, InvitationEvent::Accept, T0 + 2 * DAY_MS);
        for t in [
            T0 + 2 * DAY_MS,
            T0 + 15 * DAY_MS - 1,
            T0 + 15 * DAY_MS,
            T0 + 40 * DAY_MS,
        ] {
            assert_figures_match(&store, t);
        }
        let f = store.assignment_figures(T0 + 15 * DAY_MS, RULES).unwrap();
        assert_eq!(
            (f.without_customer, f.awaiting_assignment, f.assigned),
            (2, 2, 2),
            "5 never invited and 2 lapsed; 1 created and 4 sent on day 2; 3 accepted and the fleet"
        );
        let inv = store.invitation_figures(T0 + 15 * DAY_MS, RULES).unwrap();
        assert_eq!(inv[&InvitationState::Expired], 1);
        assert_eq!(inv[&InvitationState::Sent], 1);
        // Re-inviting vehicle 2 writes the lapse down, then links the new one.
        invite(2, 5);
        assert_eq!(
            store.invitation(2).unwrap().unwrap().state,
            InvitationState::Expired
        );
        for t in [T0 + 20 * DAY_MS, T0 + 60 * DAY_MS] {
            assert_figures_match(&store, t);
        }
        // A new owner: without customer, the old invitation unlinked.
        let mut v = store.registered_vehicle(&vin(3)).unwrap().unwrap();
        v.change_owner(None);
        v.version += 1;
        store.write(|tx| tx.put_registered_vehicle(&v)).unwrap();
        assert!(store
            .vehicles_of_customer(1)
            .unwrap()
            .iter()
            .all(|x| x.vin != vin(3)));
        assert_figures_match(&store, T0 + 20 * DAY_MS);
    }

    // R-VEH-1: a dongle heard for a known VIN attaches to it.
    #[test]
    fn a_unit_attaches_to_its_vin_and_registers_an_unknown_one() {
        let (_dir, store) = open();
        store
            .write(|tx| tx.put_registered_vehicle(&owned(1, 7)))
            .unwrap();
        assert_eq!(store.device_of_vin(&vin(1)).unwrap(), None, "not connected");
        let changed = store
            .write(|tx| tx.attach_unit(&vin(1), 42, T0 + 5))
            .unwrap();
        assert!(changed);
        assert_eq!(store.device_of_vin(&vin(1)).unwrap(), Some(42));
        let v = store.registered_vehicle(&vin(1)).unwrap().unwrap();
        assert_eq!(
            (v.customer_id, v.version),
            (Some(7), 2),
            "kept, new version for sync"
        );
        assert!(!store
            .write(|tx| tx.attach_unit(&vin(1), 42, T0 + 6))
            .unwrap());
        store.write(|tx| tx.attach_unit(&vin(2), 43, T0)).unwrap();
        let new = store.registered_vehicle(&vin(2)).unwrap().unwrap();
        assert_eq!((new.origin, new.customer_id), (VehicleOrigin::Dongle, None));
        // A dongle moved to another vehicle's VIN: still one connected each.
        store.write(|tx| tx.attach_unit(&vin(1), 44, T0)).unwrap();
        assert_eq!(store.device_of_vin(&vin(1)).unwrap(), Some(44));
        assert_figures_match(&store, T0);
        assert_eq!(store.assignment_figures(T0, RULES).unwrap().connected, 2);
    }

    #[test]
    fn sources_and_spend_are_kept_by_lower_case_name_and_month() {
        let (_dir, store) = open();
        let mut google = Source::new("Google".into(), SourceOrigin::Imported, T0);
        google.category = Some(MainCategory::Internet);
        let radio = Source::new("Radio".into(), SourceOrigin::Created, T0);
        let march = Month::of(T0);
        store
            .write(|tx| {
                tx.put_source(&google)?;
                tx.put_source(&radio)?;
                tx.put_customer(&new_customer(1, "K1", Some("radio")))?;
                for (m, cents) in [(march, 500), (march.next(), 700)] {
                    tx.put_spend(&MarketingSpend {
                        source: "Google".into(),
                        month: m,
                        cents,
                        updated_ms: T0,
                        version: 1,
                    })?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(store.source("GOOGLE").unwrap().unwrap().name, "Google");
        assert_eq!(store.sources().unwrap().len(), 2);
        assert_eq!(store.customer_figures().unwrap().unmapped_source, 1);
        assert_eq!(store.marketing_spend(march, march).unwrap().len(), 1);
        assert_eq!(store.marketing_spend(march, march.next()).unwrap().len(), 2);
        let months = store.write(|tx| tx.months_with_spend("google")).unwrap();
        assert_eq!(months, vec![march, march.next()]);
        store
            .write(|tx| {
                tx.put_spend(&MarketingSpend {
                    source: "Google".into(),
                    month: march,
                    cents: 0,
                    updated_ms: T0,
                    version: 2,
                })?;
                tx.delete_source(&radio)
            })
            .unwrap();
        assert_eq!(store.marketing_spend(march, march.next()).unwrap().len(), 1);
        assert!(store.source("radio").unwrap().is_none());
        let outbox = store.outbox(100).unwrap();
        assert!(outbox
            .iter()
            .any(|(k, key, v)| *k == OutboxKind::Source as u8 && key == b"radio" && *v == 2));
    }
}
