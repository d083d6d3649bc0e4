//! OBID consent (R-VEH-4): brands named in the config need it before a
//! vehicle is fully active. Until it is granted the appliance keeps only a
//! unit's identity and last-seen time and makes no leads.

use serde::{Deserialize, Serialize};

use crate::link::message::Vin;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Pending,
    Granted,
    Denied,
}

impl ConsentState {
    pub fn parse(s: &str) -> Option<ConsentState> {
        match s {
            "pending" => Some(ConsentState::Pending),
            "granted" => Some(ConsentState::Granted),
            "denied" => Some(ConsentState::Denied),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Pending => "pending",
            ConsentState::Granted => "granted",
            ConsentState::Denied => "denied",
        }
    }
}

/// Why a unit's data is held back, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Fully active.
    Open,
    /// Not yet heard in a HELLO: its brand is unknown. Ask it.
    NoHello,
    /// A brand that needs consent, and consent is not granted.
    AwaitingConsent(ConsentState),
}

/// R-VEH-4: decides whether a unit is gated. `brand` is the catalog's
/// brand for the VIN's manufacturer identifier.
pub fn gate(
    hello_seen: bool,
    vin: Option<&Vin>,
    brand: Option<&str>,
    consent_brands: &[String],
    consent: Option<ConsentState>,
) -> Gate {
    if !hello_seen {
        return Gate::NoHello;
    }
    // A HELLO that says the VIN is unknown is not gated.
    if vin.is_none() {
        return Gate::Open;
    }
    let needs = brand.is_some_and(|b| consent_brands.iter().any(|c| c.eq_ignore_ascii_case(b)));
    match (needs, consent) {
        (false, _) | (true, Some(ConsentState::Granted)) => Gate::Open,
        (true, state) => Gate::AwaitingConsent(state.unwrap_or(ConsentState::Pending)),
    }
}

/// A consent decision, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub vin: Vin,
    pub state: ConsentState,
    pub updated_ms: u64,
    /// "sync", or the staff member who set it.
    pub by: String,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_veh_4_gating() {
        let vw = vec!["Volkswagen".to_string()];
        let vin = Vin::parse("WVWZZZ1JZXW000001").unwrap();
        assert_eq!(
            gate(false, None, None, &vw, None),
            Gate::NoHello,
            "not yet heard in a HELLO"
        );
        assert_eq!(
            gate(true, None, None, &vw, None),
            Gate::Open,
            "HELLO says VIN unknown: not gated"
        );
        assert_eq!(
            gate(true, Some(&vin), Some("Volkswagen"), &vw, None),
            Gate::AwaitingConsent(ConsentState::Pending)
        );
        assert_eq!(
            gate(
                true,
                Some(&vin),
                Some("volkswagen"),
                &vw,
                Some(ConsentState::Denied)
            ),
            Gate::AwaitingConsent(ConsentState::Denied)
        );
        assert_eq!(
            gate(
                true,
                Some(&vin),
                Some("Volkswagen"),
                &vw,
                Some(ConsentState::Granted)
            ),
            Gate::Open
        );
        assert_eq!(gate(true, Some(&vin), Some("Ford"), &vw, None), Gate::Open);
        assert_eq!(
            gate(true, Some(&vin), None, &vw, None),
            Gate::Open,
            "brand unknown to the catalog"
        );
    }
}
