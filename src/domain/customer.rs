//! Customers, the vehicles registered to them, invitations to the
//! customer's app, and where customers come from (SPEC.md R-VEH-1..3,
//! R-SRC-1..3). Pure: records, the rules that change them, and the figures
//! made from them; time is always an argument. Storing is the store's
//! business (`store/customers.rs`), the DMS file is `customers.rs`'s.
//!
//! Three ideas carry this module:
//! - A vehicle is registered by its VIN, with or without a dongle: what the
//!   DMS knows and what the dongles say meet on the VIN.
//! - Whether a vehicle has a customer in the app (R-VEH-2) is a function of
//!   the vehicle and its current invitation *at a time*: a sent invitation
//!   lapses by itself after the configured days, with nothing written.
//!   [`assignment_basis`] is the part that does not depend on time, which
//!   is what the store can count in a transaction; [`assignment_state`]
//!   resolves it at a given time.
//! - Sources are sub-categories of a few main categories (R-SRC-1), so a
//!   report with many sources still reads as five lines.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::link::message::Vin;

/// One day. Dates (customer since, invitation days) are UTC days.
pub const DAY_MS: u64 = 86_400_000;

/// Start (00:00 UTC) of the day holding `ms`.
pub fn day_start(ms: u64) -> u64 {
    ms - ms % DAY_MS
}

/// `YYYY-MM-DD` of the UTC day holding `ms`.
pub fn format_date(ms: u64) -> String {
    crate::clock::rfc3339(ms)[..10].to_string()
}

/// Parses `YYYY-MM-DD` (a real calendar day) to its 00:00 UTC.
pub fn parse_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    let ms = crate::clock::parse_rfc3339(&format!("{s}T00:00:00Z"))?;
    // The parser rolls 2026-02-31 over into March: refuse what does not
    // come back as written.
    (format_date(ms) == s).then_some(ms)
}

/// A field value that cannot be stored, with what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);

fn field_error(message: impl Into<String>) -> FieldError {
    FieldError(message.into())
}

/// Checks free text: trimmed, within `max` characters, on one line.
fn text(what: &str, value: &str, max: usize) -> Result<String, FieldError> {
    let v = value.trim();
    if v.chars().count() > max {
        return Err(field_error(format!(
            "{what} is {} characters: at most {max}",
            v.chars().count()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(field_error(format!(
            "{what} holds a line break or control character"
        )));
    }
    Ok(v.to_string())
}

/// Checks one field of a customer or vehicle. Each returns the value as it
/// is stored (trimmed, VINs in upper case).
pub mod check {
    use super::*;

    /// A customer's name: required, at most 200 characters.
    pub fn name(value: &str) -> Result<String, FieldError> {
        let v = text("the name", value, 200)?;
        if v.is_empty() {
            return Err(field_error("the name is empty"));
        }
        Ok(v)
    }

    /// The DMS's id of a customer: 1 to 64 characters, not starting with
    /// `#` (Forecourt's own customer numbers are written `#N`).
    pub fn dms_id(value: &str) -> Result<String, FieldError> {
        let v = text("the customer id", value, 64)?;
        if v.is_empty() {
            return Err(field_error("the customer id is empty"));
        }
        if v.starts_with('#') {
            return Err(field_error(format!(
                "customer id {v:?}: ids starting with # are Forecourt's own customer numbers"
            )));
        }
        Ok(v)
    }

    /// A phone number as people write them: digits with `+`, spaces,
    /// brackets, dots, dashes and slashes; 3 to 40 characters.
    pub fn phone(value: &str) -> Result<String, FieldError> {
        let v = text("the phone number", value, 40)?;
        let digits = v.chars().filter(char::is_ascii_digit).count();
        let allowed = v
            .chars()
            .all(|c| c.is_ascii_digit() || " +()-./".contains(c));
        if !allowed || digits < 3 {
            return Err(field_error(format!(
                "phone {v:?} is not a phone number (digits, +, spaces, brackets, dots, dashes)"
            )));
        }
        Ok(v)
    }

    /// An e-mail address: one `@` with text either side, a dot in the
    /// domain, no spaces; at most 254 characters.
    pub fn email(value: &str) -> Result<String, FieldError> {
        let v = text("the e-mail address", value, 254)?;
        let ok = match v.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !v.contains(char::is_whitespace)
            }
            None => false,
        };
        if !ok {
            return Err(field_error(format!("e-mail {v:?} is not an address")));
        }
        Ok(v)
    }

    /// A VIN: 17 letters and digits, never I, O or Q (ISO 3779); lower
    /// case is accepted and stored in upper case.
    pub fn vin(value: &str) -> Result<Vin, FieldError> {
        let v = value.trim().to_ascii_uppercase();
        if v.len() != 17 || !v.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(field_error(format!(
                "VIN {value:?} is not 17 letters and digits"
            )));
        }
        if let Some(c) = v.chars().find(|c| matches!(c, 'I' | 'O' | 'Q')) {
            return Err(field_error(format!(
                "VIN {v} holds the letter {c}, which VINs never use (a 1 or 0?)"
            )));
        }
        Vin::parse(&v).ok_or_else(|| field_error(format!("VIN {v:?} is not printable")))
    }

    /// A brand as the DMS writes it, at most 40 characters.
    pub fn brand(value: &str) -> Result<String, FieldError> {
        text("the brand", value, 40)
    }

    /// A model name, at most 60 characters.
    pub fn model(value: &str) -> Result<String, FieldError> {
        text("the model", value, 60)
    }

    /// A fleet's name, at most 60 characters.
    pub fn fleet(value: &str) -> Result<String, FieldError> {
        text("the fleet", value, 60)
    }

    /// A model year from 1950 to next year (as of `now_ms`).
    pub fn model_year(value: &str, now_ms: u64) -> Result<u16, FieldError> {
        let next_year = format_date(now_ms)[..4].parse::<u16>().unwrap_or(2100) + 1;
        match value.trim().parse::<u16>() {
            Ok(y) if (1950..=next_year).contains(&y) => Ok(y),
            _ => Err(field_error(format!(
                "model year {value:?} is not a year from 1950 to {next_year}"
            ))),
        }
    }

    /// A customer-since date, `YYYY-MM-DD`, not after the day of `now_ms`.
    pub fn since(value: &str, now_ms: u64) -> Result<u64, FieldError> {
        let v = value.trim();
        let ms = parse_date(v).ok_or_else(|| {
            field_error(format!(
                "customer since {v:?} is not a date written YYYY-MM-DD"
            ))
        })?;
        if ms > day_start(now_ms) {
            return Err(field_error(format!("customer since {v} is in the future")));
        }
        Ok(ms)
    }
}

/// A customer of the workshop (from the DMS or created in Forecourt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Forecourt's own number, from 1.
    pub id: u64,
    /// The DMS's id, when the customer came from the DMS: the key an import
    /// matches on.
    pub dms_id: Option<String>,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// The source's name as its [`Source`] spells it; `None` is "unknown"
    /// (R-SRC-2 marks such customers).
    pub source: Option<String>,
    /// 00:00 UTC of the day the customer first came: the report counts a
    /// customer as new in the period holding this day (R-SRC-3).
    pub customer_since_ms: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Rises with every change (the outbox sends the latest).
    pub version: u64,
}

impl Customer {
    /// `#12` for Forecourt's customer 12: how the export names a customer
    /// that has no DMS id, so that the file imports back.
    pub fn file_id(&self) -> String {
        self.dms_id
            .clone()
            .unwrap_or_else(|| format!("#{}", self.id))
    }
}

/// Where a registered vehicle first came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleOrigin {
    /// A DMS / point-of-sale import.
    Dms,
    /// Entered by the staff.
    Forecourt,
    /// A dongle said this VIN in a HELLO before anyone registered it.
    Dongle,
}

/// A vehicle the workshop knows by its VIN (R-VEH-1): with or without a
/// dongle ("not connected"), linked to a customer, a fleet, both or neither.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredVehicle {
    pub vin: Vin,
    pub customer_id: Option<u64>,
    /// A fleet vehicle is assigned directly, without an invitation (R-VEH-3).
    pub fleet: Option<String>,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub model_year: Option<u16>,
    /// The vehicle's current invitation (older ones are kept, unlinked).
    pub invitation_id: Option<u64>,
    pub origin: VehicleOrigin,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub version: u64,
}

impl RegisteredVehicle {
    /// A vehicle known only by its VIN.
    pub fn new(vin: Vin, origin: VehicleOrigin, now_ms: u64) -> RegisteredVehicle {
        RegisteredVehicle {
            vin,
            customer_id: None,
            fleet: None,
            brand: None,
            model: None,
            model_year: None,
            invitation_id: None,
            origin,
            created_ms: now_ms,
            updated_ms: now_ms,
            version: 1,
        }
    }

    /// Links the vehicle to another customer. A new owner starts without
    /// an app user: the old owner's invitation stays as it is, unlinked.
    pub fn change_owner(&mut self, customer_id: Option<u64>) {
        if self.customer_id != customer_id {
            self.customer_id = customer_id;
            self.invitation_id = None;
        }
    }
}

/// How long a sent invitation stays open (R-VEH-3: 14 days, configurable
/// as `[customers] invitation_expiry_days`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRules {
    pub expiry_days: u32,
}

impl Default for InvitationRules {
    fn default() -> Self {
        InvitationRules { expiry_days: 14 }
    }
}

impl InvitationRules {
    pub fn expiry_ms(self) -> u64 {
        u64::from(self.expiry_days) * DAY_MS
    }
}

/// R-VEH-2: whether a vehicle has a customer or driver in the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentState {
    WithoutCustomer,
    AwaitingAssignment,
    Assigned,
}

impl AssignmentState {
    pub const ALL: [AssignmentState; 3] = [
        AssignmentState::WithoutCustomer,
        AssignmentState::AwaitingAssignment,
        AssignmentState::Assigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentState::WithoutCustomer => "without_customer",
            AssignmentState::AwaitingAssignment => "awaiting_assignment",
            AssignmentState::Assigned => "assigned",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AssignmentState::WithoutCustomer => "Without customer",
            AssignmentState::AwaitingAssignment => "Awaiting assignment",
            AssignmentState::Assigned => "Assigned",
        }
    }

    /// The one-line definition the UI shows (R-DASH-1, R-VEH-2).
    pub fn definition(self) -> &'static str {
        match self {
            AssignmentState::WithoutCustomer => {
                "No customer or driver uses the app for this vehicle and no invitation is out: invite the customer."
            }
            AssignmentState::AwaitingAssignment => {
                "An invitation is out (created or sent, not yet answered or expired): waiting for the customer."
            }
            AssignmentState::Assigned => {
                "A customer or driver accepted an invitation, or the vehicle belongs to a fleet assigned directly."
            }
        }
    }

    pub fn parse(s: &str) -> Option<AssignmentState> {
        AssignmentState::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The part of a vehicle's assignment that does not depend on time: its
/// state as if nothing lapsed, and, for a vehicle awaiting a sent
/// invitation, when that invitation was sent (it lapses the configured days
/// later, and the vehicle is then without customer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignmentBasis {
    pub state: AssignmentState,
    pub lapses_from_sent_ms: Option<u64>,
}

impl AssignmentBasis {
    /// The state at `now_ms`.
    pub fn at(self, now_ms: u64, rules: InvitationRules) -> AssignmentState {
        match self.lapses_from_sent_ms {
            Some(sent) if now_ms >= sent.saturating_add(rules.expiry_ms()) => {
                AssignmentState::WithoutCustomer
            }
            _ => self.state,
        }
    }
}

/// `invitation` counts only when it is the vehicle's current one.
fn current<'i>(
    v: &RegisteredVehicle,
    invitation: Option<&'i Invitation>,
) -> Option<&'i Invitation> {
    invitation.filter(|i| Some(i.id) == v.invitation_id)
}

/// R-VEH-2 without time: a fleet vehicle or an accepted invitation is
/// assigned; an invitation created or sent is awaited; otherwise the
/// vehicle is without customer.
pub fn assignment_basis(v: &RegisteredVehicle, invitation: Option<&Invitation>) -> AssignmentBasis {
    let basis = |state, lapses_from_sent_ms| AssignmentBasis {
        state,
        lapses_from_sent_ms,
    };
    if v.fleet.is_some() {
        return basis(AssignmentState::Assigned, None);
    }
    match current(v, invitation).map(|i| (i.state, i.sent_ms)) {
        Some((InvitationState::Accepted, _)) => basis(AssignmentState::Assigned, None),
        Some((InvitationState::Created, _)) => basis(AssignmentState::AwaitingAssignment, None),
        Some((InvitationState::Sent, sent)) => basis(AssignmentState::AwaitingAssignment, sent),
        _ => basis(AssignmentState::WithoutCustomer, None),
    }
}

/// R-VEH-2: the vehicle's assignment state at `now_ms`.
pub fn assignment_state(
    v: &RegisteredVehicle,
    invitation: Option<&Invitation>,
    now_ms: u64,
    rules: InvitationRules,
) -> AssignmentState {
    assignment_basis(v, invitation).at(now_ms, rules)
}

/// R-VEH-3: a vehicle is *active* when its invitation was accepted, or
/// when it is a fleet vehicle assigned directly. (R-VEH-4 consent gates
/// the data on top of this; see `domain::consent`.)
pub fn is_active(v: &RegisteredVehicle, invitation: Option<&Invitation>) -> bool {
    v.fleet.is_some()
        || current(v, invitation).is_some_and(|i| i.state == InvitationState::Accepted)
}

/// R-VEH-3: the states of an invitation to the customer's app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    Created,
    Sent,
    Accepted,
    Declined,
    Expired,
}

impl InvitationState {
    pub const ALL: [InvitationState; 5] = [
        InvitationState::Created,
        InvitationState::Sent,
        InvitationState::Accepted,
        InvitationState::Declined,
        InvitationState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvitationState::Created => "created",
            InvitationState::Sent => "sent",
            InvitationState::Accepted => "accepted",
            InvitationState::Declined => "declined",
            InvitationState::Expired => "expired",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            InvitationState::Created => "Created",
            InvitationState::Sent => "Sent",
            InvitationState::Accepted => "Accepted",
            InvitationState::Declined => "Declined",
            InvitationState::Expired => "Expired",
        }
    }

    /// The one-line definition the UI shows (R-VEH-3).
    pub fn definition(self) -> &'static str {
        match self {
            InvitationState::Created => {
                "Made in Forecourt; the importer sends it to the customer with the next sync."
            }
            InvitationState::Sent => {
                "Delivered to the customer, not answered yet; it expires if not answered within the configured days (14 by default)."
            }
            InvitationState::Accepted => {
                "The customer accepted in the app: the vehicle is assigned to them and active."
            }
            InvitationState::Declined => {
                "The customer declined: the vehicle stays without customer until a new invitation is accepted."
            }
            InvitationState::Expired => {
                "Sent but not answered in time: it can no longer be accepted; invite again."
            }
        }
    }

    pub fn parse(s: &str) -> Option<InvitationState> {
        InvitationState::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Nothing more can happen to an invitation in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InvitationState::Accepted | InvitationState::Declined | InvitationState::Expired
        )
    }
}

/// What can happen to an invitation (from the importer by sync, or entered
/// by the staff on the customer's word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationEvent {
    Send,
    Accept,
    Decline,
}

impl InvitationEvent {
    pub const ALL: [InvitationEvent; 3] = [
        InvitationEvent::Send,
        InvitationEvent::Accept,
        InvitationEvent::Decline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvitationEvent::Send => "send",
            InvitationEvent::Accept => "accept",
            InvitationEvent::Decline => "decline",
        }
    }

    pub fn parse(s: &str) -> Option<InvitationEvent> {
        InvitationEvent::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// An invitation of a vehicle's customer to the app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: u64,
    pub vin: Vin,
    /// The customer invited (the vehicle's customer when it was made).
    pub customer_id: Option<u64>,
    /// The state as last written; [`Invitation::state_at`] adds the lapse.
    pub state: InvitationState,
    pub created_ms: u64,
    pub sent_ms: Option<u64>,
    /// When it was accepted or declined.
    pub answered_ms: Option<u64>,
    /// When it expired, once that is written down.
    pub expired_ms: Option<u64>,
    pub updated_ms: u64,
    pub version: u64,
}

/// A refused invitation change, saying why and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    #[error("vehicle {vin} has no customer: link it to a customer before inviting")]
    NoCustomer { vin: Vin },
    #[error("vehicle {vin} belongs to fleet {fleet:?} and is assigned directly: fleet vehicles need no invitation")]
    FleetVehicle { vin: Vin, fleet: String },
    #[error("vehicle {vin} is already assigned: invitation {id} was accepted")]
    Assigned { vin: Vin, id: u64 },
    #[error("invitation {id} is already out for vehicle {vin} ({}): wait for the answer or its expiry", state.as_str())]
    AlreadyOut {
        vin: Vin,
        id: u64,
        state: InvitationState,
    },
    #[error("invitation {id} was already sent on {}", format_date(*sent_ms))]
    AlreadySent { id: u64, sent_ms: u64 },
    #[error("invitation {id} is {} since {}: nothing more can happen to it; create a new invitation", state.as_str(), format_date(*at_ms))]
    Finished {
        id: u64,
        state: InvitationState,
        at_ms: u64,
    },
    #[error("invitation {id} expired on {} ({days} days after it was sent on {}): it can no longer be answered; create a new invitation", format_date(*expired_ms), format_date(*sent_ms))]
    Lapsed {
        id: u64,
        sent_ms: u64,
        expired_ms: u64,
        days: u32,
    },
    #[error("invitation {id}: the event time {} is before its last change ({})", crate::clock::rfc3339(*at_ms), crate::clock::rfc3339(*last_ms))]
    BeforeLastChange { id: u64, at_ms: u64, last_ms: u64 },
    #[error("the event time {} is in the future", crate::clock::rfc3339(*at_ms))]
    InFuture { at_ms: u64 },
}

/// Event times may run this far ahead of the appliance's clock (clocks of
/// the importer and the appliance differ a little).
pub const MAX_EVENT_AHEAD_MS: u64 = 5 * 60_000;

impl Invitation {
    /// R-VEH-3: a new invitation for `vehicle`'s customer, made at `at_ms`
    /// (usually now; sync may bring an earlier time). Refused for a fleet
    /// vehicle, a vehicle without customer, or while the current
    /// invitation is out or accepted. A current invitation that lapsed must
    /// be written as expired first ([`Invitation::lapse`]).
    pub fn create(
        id: u64,
        vehicle: &RegisteredVehicle,
        current_invitation: Option<&Invitation>,
        at_ms: u64,
        now_ms: u64,
        rules: InvitationRules,
    ) -> Result<Invitation, InvitationError> {
        let vin = vehicle.vin;
        if at_ms > now_ms.saturating_add(MAX_EVENT_AHEAD_MS) {
            return Err(InvitationError::InFuture { at_ms });
        }
        if let Some(fleet) = &vehicle.fleet {
            return Err(InvitationError::FleetVehicle {
                vin,
                fleet: fleet.clone(),
            });
        }
        let Some(customer_id) = vehicle.customer_id else {
            return Err(InvitationError::NoCustomer { vin });
        };
        if let Some(cur) = current(vehicle, current_invitation) {
            match cur.state_at(now_ms, rules) {
                InvitationState::Accepted => {
                    return Err(InvitationError::Assigned { vin, id: cur.id })
                }
                state @ (InvitationState::Created | InvitationState::Sent) => {
                    return Err(InvitationError::AlreadyOut {
                        vin,
                        id: cur.id,
                        state,
                    })
                }
                InvitationState::Declined | InvitationState::Expired => {}
            }
        }
        Ok(Invitation {
            id,
            vin,
            customer_id: Some(customer_id),
            state: InvitationState::Created,
            created_ms: at_ms,
            sent_ms: None,
            answered_ms: None,
            expired_ms: None,
            updated_ms: now_ms,
            version: 1,
        })
    }

    /// When a sent invitation lapses.
    pub fn expires_at(&self, rules: InvitationRules) -> Option<u64> {
        match self.state {
            InvitationState::Sent | InvitationState::Expired => {
                self.sent_ms.map(|s| s.saturating_add(rules.expiry_ms()))
            }
            _ => None,
        }
    }

    /// The state at `at_ms`: a sent invitation not answered within the
    /// expiry is expired, written down or not.
    pub fn state_at(&self, at_ms: u64, rules: InvitationRules) -> InvitationState {
        match (self.state, self.expires_at(rules)) {
            (InvitationState::Sent, Some(end)) if at_ms >= end => InvitationState::Expired,
            (state, _) => state,
        }
    }

    /// The expired version to write down, when the invitation lapsed by
    /// `now_ms` but is still stored as sent.
    pub fn lapse(&self, now_ms: u64, rules: InvitationRules) -> Option<Invitation> {
        if self.state != InvitationState::Sent
            || self.state_at(now_ms, rules) != InvitationState::Expired
        {
            return None;
        }
        let mut next = self.clone();
        next.state = InvitationState::Expired;
        next.expired_ms = self.expires_at(rules);
        next.updated_ms = now_ms;
        next.version += 1;
        Some(next)
    }

    /// The time of the latest change the record holds.
    fn last_event_ms(&self) -> u64 {
        [Some(self.created_ms), self.sent_ms, self.answered_ms]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.created_ms)
    }

    /// R-VEH-3 transitions, judged at the event's time `at_ms` (an answer
    /// given in time counts even when it arrives late by sync):
    ///
    /// | state | send | accept | decline |
    /// |---|---|---|---|
    /// | created | sent | accepted | declined |
    /// | sent (in time) | refused: already sent | accepted | declined |
    /// | sent, lapsed / expired | refused: expired | refused | refused |
    /// | accepted, declined | refused: finished | refused | refused |
    ///
    /// A created invitation may be answered directly: the importer can
    /// report the answer before it reports the sending.
    pub fn apply(
        &self,
        event: InvitationEvent,
        at_ms: u64,
        now_ms: u64,
        rules: InvitationRules,
    ) -> Result<Invitation, InvitationError> {
        let id = self.id;
        if at_ms > now_ms.saturating_add(MAX_EVENT_AHEAD_MS) {
            return Err(InvitationError::InFuture { at_ms });
        }
        let last_ms = self.last_event_ms();
        if at_ms < last_ms {
            return Err(InvitationError::BeforeLastChange { id, at_ms, last_ms });
        }
        let state = self.state_at(at_ms, rules);
        match (state, self.sent_ms) {
            (InvitationState::Expired, Some(sent_ms)) => {
                return Err(InvitationError::Lapsed {
                    id,
                    sent_ms,
                    expired_ms: self.expires_at(rules).unwrap_or(sent_ms),
                    days: rules.expiry_days,
                })
            }
            (
                InvitationState::Accepted | InvitationState::Declined | InvitationState::Expired,
                _,
            ) => {
                return Err(InvitationError::Finished {
                    id,
                    state,
                    at_ms: self.answered_ms.or(self.expired_ms).unwrap_or(last_ms),
                })
            }
            (InvitationState::Sent, Some(sent_ms)) if event == InvitationEvent::Send => {
                return Err(InvitationError::AlreadySent { id, sent_ms })
            }
            _ => {}
        }
        let mut next = self.clone();
        match event {
            InvitationEvent::Send => {
                next.state = InvitationState::Sent;
                next.sent_ms = Some(at_ms);
            }
            InvitationEvent::Accept => {
                next.state = InvitationState::Accepted;
                next.answered_ms = Some(at_ms);
            }
            InvitationEvent::Decline => {
                next.state = InvitationState::Declined;
                next.answered_ms = Some(at_ms);
            }
        }
        next.updated_ms = now_ms;
        next.version += 1;
        Ok(next)
    }
}

/// R-SRC-1: the main categories of customer sources. Every source is a
/// sub-category of one, so the report reads as these few lines:
/// - Internet: found the workshop online (search, reviews, social media);
/// - Referral: sent by a friend, a dealer, an insurer;
/// - Drive-by: saw the workshop and came in;
/// - Repeat: came back (an earlier customer, a previous vehicle);
/// - Other new customers: everything else, and where "mapping done" puts
///   every source not mapped by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MainCategory {
    Internet,
    Referral,
    DriveBy,
    Repeat,
    OtherNew,
}

impl MainCategory {
    pub const ALL: [MainCategory; 5] = [
        MainCategory::Internet,
        MainCategory::Referral,
        MainCategory::DriveBy,
        MainCategory::Repeat,
        MainCategory::OtherNew,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MainCategory::Internet => "internet",
            MainCategory::Referral => "referral",
            MainCategory::DriveBy => "drive_by",
            MainCategory::Repeat => "repeat",
            MainCategory::OtherNew => "other_new",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MainCategory::Internet => "Internet",
            MainCategory::Referral => "Referral",
            MainCategory::DriveBy => "Drive-by",
            MainCategory::Repeat => "Repeat",
            MainCategory::OtherNew => "Other new customers",
        }
    }

    /// The one-line definition the UI shows.
    pub fn definition(self) -> &'static str {
        match self {
            MainCategory::Internet => {
                "Found the workshop online: search engines, review sites, social media, the website."
            }
            MainCategory::Referral => {
                "Sent by someone: a friend or family, a dealer, an insurer, another business."
            }
            MainCategory::DriveBy => "Saw the workshop or its signs and came in.",
            MainCategory::Repeat => "Came back: an earlier customer, or one with another vehicle.",
            MainCategory::OtherNew => {
                "Every other source, including the ones \"mapping done\" puts here."
            }
        }
    }

    /// Its `as_str` or its label, ignoring case.
    pub fn parse(s: &str) -> Option<MainCategory> {
        let s = s.trim();
        MainCategory::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s) || c.label().eq_ignore_ascii_case(s))
    }
}

/// Whether a source came with a DMS file or was made in Forecourt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOrigin {
    Imported,
    Created,
}

/// A customer source (R-SRC-1): a sub-category of its main category once
/// mapped. Names are unique ignoring case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    /// `None` until mapped.
    pub category: Option<MainCategory>,
    pub origin: SourceOrigin,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub version: u64,
}

/// A refused change to sources or marketing spend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("source name: {0}")]
    BadName(FieldError),
    #[error("a source named {0:?} already exists")]
    Exists(String),
    #[error("there is no source named {0:?}")]
    Unknown(String),
    #[error("source {name:?} is the source of {customers} customer(s): give them another source before deleting it")]
    InUse { name: String, customers: u64 },
    #[error(
        "source {name:?} has marketing spend for {months}: set it to 0 before deleting the source"
    )]
    HasSpend { name: String, months: String },
    #[error("{0}")]
    BadSpend(String),
}

/// The key a source is found by: its trimmed name in lower case.
pub fn source_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A source name: 1 to 60 characters on one line.
pub fn check_source_name(value: &str) -> Result<String, SourceError> {
    let v = text("the source", value, 60).map_err(SourceError::BadName)?;
    if v.is_empty() {
        return Err(SourceError::BadName(field_error("the name is empty")));
    }
    Ok(v)
}

impl Source {
    pub fn new(name: String, origin: SourceOrigin, now_ms: u64) -> Source {
        Source {
            name,
            category: None,
            origin,
            created_ms: now_ms,
            updated_ms: now_ms,
            version: 1,
        }
    }

    pub fn key(&self) -> String {
        source_key(&self.name)
    }

    /// The same source under `category` (or unmapped), or `None` when
    /// nothing changes.
    pub fn mapped(&self, category: Option<MainCategory>, now_ms: u64) -> Option<Source> {
        (self.category != category).then(|| Source {
            category,
            updated_ms: now_ms,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// R-SRC-1: a source may be deleted when no customer has it and no
    /// marketing spend is booked on it (`spend_months`, e.g. `2026-01`).
    pub fn check_delete(&self, customers: u64, spend_months: &[Month]) -> Result<(), SourceError> {
        if customers > 0 {
            return Err(SourceError::InUse {
                name: self.name.clone(),
                customers,
            });
        }
        if !spend_months.is_empty() {
            let months: Vec<String> = spend_months.iter().map(Month::to_string).collect();
            return Err(SourceError::HasSpend {
                name: self.name.clone(),
                months: months.join(", "),
            });
        }
        Ok(())
    }
}

/// R-SRC-1 "mapping done": every unmapped source goes to "Other new
/// customers". Returns the changed sources.
pub fn mapping_done(sources: &[Source], now_ms: u64) -> Vec<Source> {
    sources
        .iter()
        .filter(|s| s.category.is_none())
        .filter_map(|s| s.mapped(Some(MainCategory::OtherNew), now_ms))
        .collect()
}

/// A category to offer first when mapping a source by hand, from common
/// source names in DMS exports. Only a suggestion: imports leave sources
/// unmapped, mapping is the workshop's decision.
pub fn suggest_category(name: &str) -> Option<MainCategory> {
    let n = source_key(name);
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&[
        "google",
        "yelp",
        "facebook",
        "instagram",
        "internet",
        "online",
        "web",
        "search",
        "tiktok",
        "review",
    ]) {
        Some(MainCategory::Internet)
    } else if has(&[
        "referr",
        "friend",
        "recommend",
        "family",
        "word of mouth",
        "dealer",
    ]) {
        Some(MainCategory::Referral)
    } else if has(&["drive", "walk", "passing", "sign"]) {
        Some(MainCategory::DriveBy)
    } else if has(&["repeat", "return", "existing", "previous"]) {
        Some(MainCategory::Repeat)
    } else {
        None
    }
}

/// A calendar month (UTC), the unit marketing spend is entered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: u16,
    /// 1..=12
    pub month: u8,
}

impl Month {
    /// `YYYY-MM`, years 2000 to 2999.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.trim().split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let (year, month) = (y.parse().ok()?, m.parse().ok()?);
        ((2000..=2999).contains(&year) && (1..=12).contains(&month))
            .then_some(Month { year, month })
    }

    /// The month holding `ms`.
    pub fn of(ms: u64) -> Month {
        let d = format_date(ms);
        Month {
            year: d[..4].parse().unwrap_or(1970),
            month: d[5..7].parse().unwrap_or(1),
        }
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                month: self.month + 1,
                ..self
            }
        }
    }

    /// 00:00 UTC of its first day.
    pub fn start_ms(self) -> u64 {
        parse_date(&format!("{self}-01")).unwrap_or(0)
    }

    /// 00:00 UTC of the next month's first day.
    pub fn end_ms(self) -> u64 {
        self.next().start_ms()
    }

    /// Months since year 0: a sortable number for keys.
    pub fn index(self) -> u32 {
        u32::from(self.year) * 12 + u32::from(self.month) - 1
    }

    pub fn from_index(i: u32) -> Month {
        Month {
            year: (i / 12) as u16,
            month: (i % 12) as u8 + 1,
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Marketing spend the workshop booked on one source for one month (R-SRC-3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketingSpend {
    /// The source's name as its [`Source`] spells it.
    pub source: String,
    pub month: Month,
    /// In hundredths of the workshop's currency.
    pub cents: u64,
    pub updated_ms: u64,
    pub version: u64,
}

/// Largest spend per source and month: 10,000,000.00 (a typo guard).
pub const MAX_SPEND_CENTS: u64 = 1_000_000_000;

/// One line of the report: where customers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "category")]
pub enum ReportGroup {
    Category(MainCategory),
    /// Customers whose source is not mapped to a main category yet.
    Unmapped,
    /// Customers without a source.
    Unknown,
}

impl ReportGroup {
    pub fn all() -> Vec<ReportGroup> {
        MainCategory::ALL
            .into_iter()
            .map(ReportGroup::Category)
            .chain([ReportGroup::Unmapped, ReportGroup::Unknown])
            .collect()
    }

    pub fn label(self) -> &'static str {
        match self {
            ReportGroup::Category(c) => c.label(),
            ReportGroup::Unmapped => "Not mapped yet",
            ReportGroup::Unknown => "Unknown source",
        }
    }
}

/// New customers, spend and cost per new customer of one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub new_customers: u64,
    pub spend_cents: u64,
    /// Spend / new customers, rounded to the cent; `None` without new
    /// customers.
    pub cost_per_new_cents: Option<u64>,
}

impl ReportLine {
    fn add(&mut self, other: &ReportLine) {
        self.new_customers += other.new_customers;
        self.spend_cents += other.spend_cents;
    }

    fn finish(&mut self) {
        self.cost_per_new_cents = (self.new_customers > 0)
            .then(|| (self.spend_cents + self.new_customers / 2) / self.new_customers);
    }
}

/// A main category (or unmapped, or unknown) with its sources inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: ReportGroup,
    pub total: ReportLine,
    /// Its sources with new customers or spend in the period, most new
    /// customers first, then by name.
    pub sources: Vec<(String, ReportLine)>,
}

/// R-SRC-3: the customer source report over `[from_ms, to_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Every main category in order, then unmapped and unknown.
    pub groups: Vec<GroupReport>,
    pub total: ReportLine,
}

/// The share of `cents` that falls in `[from, to)` of `month`, by time,
/// rounded to the cent: a period that covers half a month carries half its
/// spend.
pub fn spend_in_period(cents: u64, month: Month, from_ms: u64, to_ms: u64) -> u64 {
    let (start, end) = (month.start_ms(), month.end_ms());
    let overlap = to_ms.min(end).saturating_sub(from_ms.max(start));
    let len = end - start;
    if overlap == 0 || len == 0 {
        return 0;
    }
    ((u128::from(cents) * u128::from(overlap) + u128::from(len) / 2) / u128::from(len)) as u64
}

/// R-SRC-3 as a pure function. A customer is new in the period holding its
/// customer-since day; `customers` may hold others (they are skipped).
/// Spend is booked per source and month and shared by time over the
/// period. A source's group is its main category, or "not mapped yet";
/// customers without a source are "unknown".
pub fn source_report<'c>(
    customers: impl IntoIterator<Item = &'c Customer>,
    sources: &[Source],
    spend: &[MarketingSpend],
    from_ms: u64,
    to_ms: u64,
) -> SourceReport {
    let by_key: BTreeMap<String, &Source> = sources.iter().map(|s| (s.key(), s)).collect();
    // (group, source name) -> line
    let mut lines: BTreeMap<(ReportGroup, String), ReportLine> = BTreeMap::new();
    let place = |name: &str| -> (ReportGroup, String) {
        match by_key.get(&source_key(name)) {
            Some(s) => (
                s.category
                    .map_or(ReportGroup::Unmapped, ReportGroup::Category),
                s.name.clone(),
            ),
            None => (ReportGroup::Unmapped, name.trim().to_string()),
        }
    };
    for c in customers {
        if !(from_ms..to_ms).contains(&c.customer_since_ms) {
            continue;
        }
        let at = match &c.source {
            Some(name) => place(name),
            None => (ReportGroup::Unknown, String::new()),
        };
        lines.entry(at).or_default().new_customers += 1;
    }
    for s in spend {
        let cents = spend_in_period(s.cents, s.month, from_ms, to_ms);
        if cents > 0 {
            lines.entry(place(&s.source)).or_default().spend_cents += cents;
        }
    }
    let mut total = ReportLine::default();
    let groups = ReportGroup::all()
        .into_iter()
        .map(|group| {
            let mut g = GroupReport {
                group,
                total: ReportLine::default(),
                sources: Vec::new(),
            };
            for ((_, name), line) in lines.iter().filter(|((g, _), _)| *g == group) {
                g.total.add(line);
                if group != ReportGroup::Unknown {
                    let mut line = line.clone();
                    line.finish();
                    g.sources.push((name.clone(), line));
                }
            }
            g.sources.sort_by(|a, b| {
                b.1.new_customers
                    .cmp(&a.1.new_customers)
                    .then_with(|| a.0.cmp(&b.0))
            });
            g.total.finish();
            total.add(&g.total);
            g
        })
        .collect();
    total.finish();
    SourceReport {
        from_ms,
        to_ms,
        groups,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-01T00:00:00Z
    const T0: u64 = 1_772_323_200_000;
    const RULES: InvitationRules = InvitationRules { expiry_days: 14 };

    fn vin(n: u8) -> Vin {
        check::vin(&format!("WVWZZZ1JZXW{:06}", n)).unwrap()
    }

    fn vehicle(customer: Option<u64>) -> RegisteredVehicle {
        let mut v = RegisteredVehicle::new(vin(1), VehicleOrigin::Dms, T0);
        v.customer_id = customer;
        v
    }

    /// A vehicle of customer 7 with invitation 1 made at T0, linked.
    fn invited() -> (RegisteredVehicle, Invitation) {
        let mut v = vehicle(Some(7));
        let inv = Invitation::create(1, &v, None, T0, T0, RULES).unwrap();
        v.invitation_id = Some(inv.id);
        (v, inv)
    }

    fn customer(id: u64, since: u64, source: Option<&str>) -> Customer {
        Customer {
            id,
            dms_id: Some(format!("C{id}")),
            name: format!("Customer {id}"),
            phone: None,
            email: None,
            source: source.map(str::to_string),
            customer_since_ms: since,
            created_ms: since,
            updated_ms: since,
            version: 1,
        }
    }

    fn source(name: &str, category: Option<MainCategory>) -> Source {
        let mut s = Source::new(name.into(), SourceOrigin::Imported, T0);
        s.category = category;
        s
    }

    #[test]
    fn dates_are_real_calendar_days() {
        assert_eq!(parse_date("2026-03-01"), Some(T0));
        assert_eq!(format_date(T0 + DAY_MS - 1), "2026-03-01");
        assert_eq!(
            parse_date("2024-02-29").map(format_date).as_deref(),
            Some("2024-02-29")
        );
        for bad in [
            "2026-02-29",
            "2026-02-31",
            "2026-13-01",
            "26-03-01",
            "2026/03/01",
            "2026-3-1",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(day_start(T0 + 5 * 3_600_000), T0);
    }

    #[test]
    fn fields_are_checked_and_stored_clean() {
        assert_eq!(
            check::vin(" wvwzzz1jzxw000001 ").unwrap().as_str(),
            "WVWZZZ1JZXW000001"
        );
        assert!(check::vin("WVWZZZ1JZXW00000").unwrap_err().0.contains("17"));
        assert!(check::vin("WVWZZZ1JZXWO00001")
            .unwrap_err()
            .0
            .contains("letter O"));
        assert!(check::vin("WVWZZZ1JZXW00000-").is_err());
        assert_eq!(check::name("  Anna Berg ").unwrap(), "Anna Berg");
        assert!(check::name("   ").is_err());
        assert!(check::name(&"x".repeat(201)).is_err());
        assert!(check::name("two\nlines").is_err());
        assert_eq!(
            check::phone("+49 (0)30 123-456").unwrap(),
            "+49 (0)30 123-456"
        );
        assert!(check::phone("call me").is_err());
        assert!(check::phone("12").is_err());
        assert_eq!(check::email("a.b@example.org").unwrap(), "a.b@example.org");
        for bad in [
            "a@b",
            "@example.org",
            "a b@example.org",
            "a@@example.org",
            "a@example.",
            "plain",
        ] {
            assert!(check::email(bad).is_err(), "{bad}");
        }
        assert!(
            check::dms_id("#12").is_err(),
            "# is Forecourt's own numbering"
        );
        assert_eq!(check::dms_id(" K-1001 ").unwrap(), "K-1001");
        assert_eq!(check::model_year("2027", T0), Ok(2027));
        assert!(check::model_year("2028", T0).is_err());
        assert!(check::model_year("1949", T0).is_err());
        assert!(check::model_year("new", T0).is_err());
        assert_eq!(check::since("2026-03-01", T0 + 1), Ok(T0));
        assert!(check::since("2026-03-02", T0)
            .unwrap_err()
            .0
            .contains("future"));
        assert!(check::since("01.03.2026", T0).is_err());
    }

    // R-VEH-2
    #[test]
    fn r_veh_2_assignment_follows_the_current_invitation() {
        let v = vehicle(Some(7));
        assert_eq!(
            assignment_state(&v, None, T0, RULES),
            AssignmentState::WithoutCustomer
        );
        let (v, inv) = invited();
        let at = |inv: &Invitation, t| assignment_state(&v, Some(inv), t, RULES);
        assert_eq!(
            at(&inv, T0),
            AssignmentState::AwaitingAssignment,
            "created: out"
        );
        let sent = inv
            .apply(InvitationEvent::Send, T0 + DAY_MS, T0 + DAY_MS, RULES)
            .unwrap();
        let expiry = T0 + DAY_MS + 14 * DAY_MS;
        assert_eq!(at(&sent, expiry - 1), AssignmentState::AwaitingAssignment);
        assert_eq!(
            at(&sent, expiry),
            AssignmentState::WithoutCustomer,
            "lapsed by itself"
        );
        let accepted = sent
            .apply(
                InvitationEvent::Accept,
                T0 + 2 * DAY_MS,
                T0 + 2 * DAY_MS,
                RULES,
            )
            .unwrap();
        assert_eq!(
            at(&accepted, T0 + 400 * DAY_MS),
            AssignmentState::Assigned,
            "acceptance does not lapse"
        );
        let declined = sent
            .apply(
                InvitationEvent::Decline,
                T0 + 2 * DAY_MS,
                T0 + 2 * DAY_MS,
                RULES,
            )
            .unwrap();
        assert_eq!(
            at(&declined, T0 + 2 * DAY_MS),
            AssignmentState::WithoutCustomer
        );
        // An invitation that is not the vehicle's current one does not count.
        let mut other = accepted.clone();
        other.id = 99;
        assert_eq!(at(&other, T0), AssignmentState::WithoutCustomer);
        // A new owner starts without an app user.
        let mut sold = v.clone();
        sold.change_owner(Some(8));
        assert_eq!(sold.invitation_id, None);
        assert_eq!(
            assignment_state(&sold, Some(&accepted), T0, RULES),
            AssignmentState::WithoutCustomer
        );
    }

    // R-VEH-2, R-VEH-3: fleet vehicles are assigned directly.
    #[test]
    fn r_veh_3_a_fleet_vehicle_is_assigned_and_active_without_invitation() {
        let mut v = vehicle(None);
        v.fleet = Some("City Taxis".into());
        assert_eq!(
            assignment_state(&v, None, T0, RULES),
            AssignmentState::Assigned
        );
        assert!(is_active(&v, None));
        assert!(matches!(
            Invitation::create(1, &v, None, T0, T0, RULES),
            Err(InvitationError::FleetVehicle { .. })
        ));
    }

    // R-VEH-3 "active"
    #[test]
    fn r_veh_3_active_only_once_accepted() {
        let (v, inv) = invited();
        assert!(!is_active(&v, Some(&inv)));
        let sent = inv.apply(InvitationEvent::Send, T0, T0, RULES).unwrap();
        assert!(!is_active(&v, Some(&sent)));
        let accepted = sent.apply(InvitationEvent::Accept, T0, T0, RULES).unwrap();
        assert!(is_active(&v, Some(&accepted)));
        assert!(!is_active(&v, None));
    }

    /// The basis the store counts, resolved at a time, is the state.
    #[test]
    fn r_veh_2_the_timeless_basis_resolves_to_the_state_at_any_time() {
        let (v, created) = invited();
        let sent = created.apply(InvitationEvent::Send, T0, T0, RULES).unwrap();
        let accepted = sent.apply(InvitationEvent::Accept, T0, T0, RULES).unwrap();
        let declined = sent.apply(InvitationEvent::Decline, T0, T0, RULES).unwrap();
        let expired = sent.lapse(T0 + 15 * DAY_MS, RULES).unwrap();
        let mut fleet = v.clone();
        fleet.fleet = Some("F".into());
        for rules in [RULES, InvitationRules { expiry_days: 1 }] {
            for veh in [&v, &fleet] {
                for inv in [
                    None,
                    Some(&created),
                    Some(&sent),
                    Some(&accepted),
                    Some(&declined),
                    Some(&expired),
                ] {
                    for t in [
                        T0,
                        T0 + DAY_MS - 1,
                        T0 + DAY_MS,
                        T0 + 14 * DAY_MS,
                        T0 + 100 * DAY_MS,
                    ] {
                        assert_eq!(
                            assignment_basis(veh, inv).at(t, rules),
                            assignment_state(veh, inv, t, rules)
                        );
                    }
                }
            }
        }
        assert_eq!(
            assignment_basis(&v, Some(&sent)).lapses_from_sent_ms,
            Some(T0)
        );
        assert_eq!(
            assignment_basis(&v, Some(&created)).lapses_from_sent_ms,
            None
        );
    }

    // R-VEH-3: every transition of the table.
    #[test]
    fn r_veh_3_invitation_transitions_and_their_refusals() {
        let (_, created) = invited();
        let t = T0 + DAY_MS;
        let sent = created.apply(InvitationEvent::Send, t, t, RULES).unwrap();
        assert_eq!(
            (sent.state, sent.sent_ms, sent.version),
            (InvitationState::Sent, Some(t), 2)
        );
        for ev in [InvitationEvent::Accept, InvitationEvent::Decline] {
            let direct = created.apply(ev, t, t, RULES).unwrap();
            assert_eq!(
                direct.answered_ms,
                Some(t),
                "answered before the sending was reported"
            );
        }
        assert!(matches!(
            sent.apply(InvitationEvent::Send, t, t, RULES),
            Err(InvitationError::AlreadySent { .. })
        ));
        let accepted = sent.apply(InvitationEvent::Accept, t, t, RULES).unwrap();
        let declined = sent.apply(InvitationEvent::Decline, t, t, RULES).unwrap();
        for done in [&accepted, &declined] {
            for ev in InvitationEvent::ALL {
                let e = done.apply(ev, t, t, RULES).unwrap_err();
                assert!(matches!(e, InvitationError::Finished { .. }), "{e}");
                assert!(e.to_string().contains("create a new invitation"), "{e}");
            }
        }
        // Lapsed: refused whether written down or not.
        let late = t + 14 * DAY_MS;
        let e = sent
            .apply(InvitationEvent::Accept, late, late, RULES)
            .unwrap_err();
        assert!(matches!(e, InvitationError::Lapsed { days: 14, .. }), "{e}");
        assert!(e.to_string().contains("expired on 2026-03-16"), "{e}");
        let expired = sent.lapse(late, RULES).unwrap();
        assert_eq!(
            (expired.state, expired.expired_ms),
            (InvitationState::Expired, Some(late))
        );
        assert!(matches!(
            expired.apply(InvitationEvent::Decline, late, late, RULES),
            Err(InvitationError::Lapsed { .. })
        ));
        // An answer given in time counts, even when it arrives late.
        let in_time = sent
            .apply(InvitationEvent::Accept, late - 1, late + DAY_MS, RULES)
            .unwrap();
        assert_eq!(in_time.state, InvitationState::Accepted);
        // Times: not before the last change, not in the future.
        assert!(matches!(
            sent.apply(InvitationEvent::Accept, t - 1, t, RULES),
            Err(InvitationError::BeforeLastChange { .. })
        ));
        assert!(matches!(
            sent.apply(InvitationEvent::Accept, t + DAY_MS, t, RULES),
            Err(InvitationError::InFuture { .. })
        ));
    }

    #[test]
    fn r_veh_3_expiry_is_configurable_and_lapse_is_written_once() {
        let (_, created) = invited();
        let sent = created.apply(InvitationEvent::Send, T0, T0, RULES).unwrap();
        let three = InvitationRules { expiry_days: 3 };
        assert_eq!(
            sent.state_at(T0 + 3 * DAY_MS - 1, three),
            InvitationState::Sent
        );
        assert_eq!(
            sent.state_at(T0 + 3 * DAY_MS, three),
            InvitationState::Expired
        );
        assert_eq!(sent.state_at(T0 + 3 * DAY_MS, RULES), InvitationState::Sent);
        assert_eq!(sent.lapse(T0 + 3 * DAY_MS - 1, three), None);
        let expired = sent.lapse(T0 + 5 * DAY_MS, three).unwrap();
        assert_eq!(
            expired.expired_ms,
            Some(T0 + 3 * DAY_MS),
            "dated when it lapsed"
        );
        assert_eq!(expired.version, sent.version + 1);
        assert_eq!(expired.lapse(T0 + 9 * DAY_MS, three), None);
        assert_eq!(
            created.lapse(T0 + 900 * DAY_MS, three),
            None,
            "a created one waits for sync"
        );
    }

    #[test]
    fn r_veh_3_one_invitation_out_per_vehicle() {
        let (v, created) = invited();
        let out = Invitation::create(2, &v, Some(&created), T0, T0, RULES).unwrap_err();
        assert!(
            matches!(out, InvitationError::AlreadyOut { id: 1, .. }),
            "{out}"
        );
        let sent = created.apply(InvitationEvent::Send, T0, T0, RULES).unwrap();
        assert!(Invitation::create(2, &v, Some(&sent), T0, T0, RULES).is_err());
        // After the expiry a new one may go out.
        let again = Invitation::create(
            2,
            &v,
            Some(&sent),
            T0 + 14 * DAY_MS,
            T0 + 14 * DAY_MS,
            RULES,
        )
        .unwrap();
        assert_eq!(
            (again.id, again.state, again.customer_id),
            (2, InvitationState::Created, Some(7))
        );
        let declined = sent.apply(InvitationEvent::Decline, T0, T0, RULES).unwrap();
        assert!(Invitation::create(2, &v, Some(&declined), T0, T0, RULES).is_ok());
        let accepted = sent.apply(InvitationEvent::Accept, T0, T0, RULES).unwrap();
        assert!(matches!(
            Invitation::create(2, &v, Some(&accepted), T0, T0, RULES),
            Err(InvitationError::Assigned { id: 1, .. })
        ));
        assert!(matches!(
            Invitation::create(2, &vehicle(None), None, T0, T0, RULES),
            Err(InvitationError::NoCustomer { .. })
        ));
    }

    #[test]
    fn every_state_has_a_one_line_definition() {
        let mut seen = std::collections::HashSet::new();
        let lines = InvitationState::ALL
            .iter()
            .map(|s| (s.as_str(), s.definition()))
            .chain(
                AssignmentState::ALL
                    .iter()
                    .map(|s| (s.as_str(), s.definition())),
            )
            .chain(
                MainCategory::ALL
                    .iter()
                    .map(|s| (s.as_str(), s.definition())),
            );
        for (name, line) in lines {
            assert!(line.len() > 20 && !line.contains('\n'), "{name}: {line:?}");
            assert!(seen.insert(line), "{name} shares its definition");
        }
        for s in InvitationState::ALL {
            assert_eq!(InvitationState::parse(s.as_str()), Some(s));
        }
        for s in AssignmentState::ALL {
            assert_eq!(AssignmentState::parse(s.as_str()), Some(s));
        }
        for c in MainCategory::ALL {
            assert_eq!(MainCategory::parse(c.label()), Some(c));
            assert_eq!(MainCategory::parse(&c.as_str().to_uppercase()), Some(c));
        }
    }

    // R-SRC-1
    #[test]
    fn r_src_1_sources_map_to_main_categories_and_mapping_done_maps_the_rest() {
        let sources = vec![
            source("Google", Some(MainCategory::Internet)),
            source("Radio ad", None),
            source("Newspaper", None),
        ];
        let changed = mapping_done(&sources, T0 + 1);
        assert_eq!(changed.len(), 2);
        assert!(changed
            .iter()
            .all(|s| s.category == Some(MainCategory::OtherNew)
                && s.version == 2
                && s.updated_ms == T0 + 1));
        assert_eq!(mapping_done(&changed, T0), vec![], "nothing left to map");
        let g = &sources[0];
        assert_eq!(
            g.mapped(Some(MainCategory::Internet), T0),
            None,
            "no change, no version"
        );
        assert_eq!(g.mapped(None, T0).unwrap().category, None);
        assert_eq!(source_key("  GooGle "), g.key());
        assert!(check_source_name(" ").is_err());
        assert!(check_source_name(&"s".repeat(61)).is_err());
        assert_eq!(
            suggest_category("Yelp reviews"),
            Some(MainCategory::Internet)
        );
        assert_eq!(
            suggest_category("Referral by a friend"),
            Some(MainCategory::Referral)
        );
        assert_eq!(suggest_category("Drive-by"), Some(MainCategory::DriveBy));
        assert_eq!(suggest_category("Repeat"), Some(MainCategory::Repeat));
        assert_eq!(suggest_category("Radio"), None);
    }

    // R-SRC-1 "deleted when no longer relevant"
    #[test]
    fn r_src_1_a_source_is_deleted_only_when_unused() {
        let s = source("Flyer", None);
        assert!(s.check_delete(0, &[]).is_ok());
        let e = s.check_delete(3, &[]).unwrap_err();
        assert!(e.to_string().contains("3 customer"), "{e}");
        let e = s
            .check_delete(0, &[Month::parse("2026-01").unwrap()])
            .unwrap_err();
        assert!(e.to_string().contains("2026-01"), "{e}");
    }

    #[test]
    fn months_are_calendar_months() {
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(
            m.next(),
            Month {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(m.end_ms() - m.start_ms(), 31 * DAY_MS);
        assert_eq!(
            Month::parse("2026-02").unwrap().end_ms() - Month::parse("2026-02").unwrap().start_ms(),
            28 * DAY_MS
        );
        assert_eq!(Month::of(T0 - 1).to_string(), "2026-02");
        assert_eq!(Month::from_index(m.index()), m);
        assert!(Month::of(T0).index() > Month::of(T0 - 1).index());
        for bad in ["2026-13", "2026-00", "26-01", "2026-1", "1999-01", "x"] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn r_src_3_spend_is_shared_by_time_over_the_period() {
        let march = Month::of(T0);
        assert_eq!(
            spend_in_period(31_000, march, march.start_ms(), march.end_ms()),
            31_000
        );
        assert_eq!(spend_in_period(31_000, march, 0, u64::MAX), 31_000);
        assert_eq!(spend_in_period(31_000, march, T0, T0 + 10 * DAY_MS), 10_000);
        assert_eq!(spend_in_period(31_000, march, march.end_ms(), u64::MAX), 0);
        assert_eq!(
            spend_in_period(100, march, T0, T0 + DAY_MS),
            3,
            "rounded to the cent"
        );
    }

    // R-SRC-3
    #[test]
    fn r_src_3_report_counts_new_customers_per_category_with_sources_inside() {
        let sources = vec![
            source("Google", Some(MainCategory::Internet)),
            source("Yelp", Some(MainCategory::Internet)),
            source("Friend", Some(MainCategory::Referral)),
            source("Radio", None),
        ];
        let (from, to) = (T0, Month::of(T0).end_ms());
        let customers = vec![
            customer(1, T0, Some("Google")),
            customer(2, T0 + DAY_MS, Some("google")),
            customer(3, T0 + 2 * DAY_MS, Some("Yelp")),
            customer(4, T0, Some("Friend")),
            customer(5, T0, Some("Radio")),
            customer(6, T0, None),
            customer(7, T0 - 1, Some("Google")),
            customer(8, to, Some("Google")),
        ];
        let spend = vec![
            MarketingSpend {
                source: "Google".into(),
                month: Month::of(T0),
                cents: 30_001,
                updated_ms: T0,
                version: 1,
            },
            MarketingSpend {
                source: "Yelp".into(),
                month: Month::of(T0 - 1),
                cents: 99_999,
                updated_ms: T0,
                version: 1,
            },
        ];
        let r = source_report(&customers, &sources, &spend, from, to);
        assert_eq!(r.groups.len(), 7);
        let group = |g: ReportGroup| r.groups.iter().find(|x| x.group == g).unwrap();
        let internet = group(ReportGroup::Category(MainCategory::Internet));
        assert_eq!(
            internet.total.new_customers, 3,
            "7 and 8 are outside [from, to)"
        );
        assert_eq!(
            internet.total.spend_cents, 30_001,
            "February's spend is outside"
        );
        assert_eq!(internet.total.cost_per_new_cents, Some(10_000));
        assert_eq!(internet.sources[0].0, "Google");
        assert_eq!(internet.sources[0].1.new_customers, 2);
        assert_eq!(
            internet.sources[0].1.cost_per_new_cents,
            Some(15_001),
            "rounded half up"
        );
        assert_eq!(internet.sources[1].0, "Yelp");
        assert_eq!(internet.sources[1].1.cost_per_new_cents, Some(0));
        assert_eq!(
            group(ReportGroup::Category(MainCategory::Referral))
                .total
                .new_customers,
            1
        );
        let repeat = group(ReportGroup::Category(MainCategory::Repeat));
        assert_eq!(
            (repeat.total.new_customers, repeat.total.cost_per_new_cents),
            (0, None)
        );
        assert_eq!(group(ReportGroup::Unmapped).sources[0].0, "Radio");
        assert_eq!(group(ReportGroup::Unknown).total.new_customers, 1);
        assert!(group(ReportGroup::Unknown).sources.is_empty());
        assert_eq!(r.total.new_customers, 6);
        assert_eq!(r.total.spend_cents, 30_001);
        assert_eq!(r.total.cost_per_new_cents, Some(5_000));
        // The same customers after mapping done: Radio is "other new".
        let mapped: Vec<Source> = sources
            .iter()
            .map(|s| {
                mapping_done(std::slice::from_ref(s), T0)
                    .pop()
                    .unwrap_or_else(|| s.clone())
            })
            .collect();
        let r = source_report(&customers, &mapped, &spend, from, to);
        assert_eq!(
            r.groups[4].group,
            ReportGroup::Category(MainCategory::OtherNew)
        );
        assert_eq!(r.groups[4].total.new_customers, 1);
        assert_eq!(r.groups[5].total.new_customers, 0, "nothing unmapped");
    }
}
