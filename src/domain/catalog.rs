//! The importer's catalog (SPEC.md R-CAT-1): which service job a lead means
//! and what it is worth (R-LEAD-REV), what an error code means and how serious
//! it is (R-LEAD-DTC), which brand a VIN belongs to (R-VEH-4, consent) and how
//! often a brand wants servicing (R-REM-1). It is data, not code: the
//! appliance ships a default (`catalog_default.csv`, ours), and the importer
//! updates it by sync or by a CSV import. Every update is checked as a whole
//! first (all bad rows reported, nothing applied) and then upserted row by
//! row, so the appliance always keeps working with the last good catalog.
//! Pure: this module parses text and answers look-ups; storing the catalog is
//! the store's business. The CSV format is documented in docs/catalog.md.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::lead::{classify, status_bit, DtcClass, LeadType, Subject};
use crate::link::message::{Dtc, Vin};

/// Largest CSV file accepted: far above any real catalog, small enough to
/// parse in memory on a Raspberry Pi.
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;

/// The header row of the CSV format, as exported.
pub const CSV_HEADER: &str =
    "kind,key,service,name,labour_hours,parts_price,description,severity,brand,model,km,months";

/// The embedded default catalog: written for this product, not copied from
/// any published price list.
const DEFAULT_CSV: &str = include_str!("catalog_default.csv");

/// The interval map's model key meaning "every model of the brand".
const ALL_MODELS: &str = "*";

// Plausibility bounds: a value past them is a typo (125 for 1.25 hours), not
// a job this workshop quotes.
const MAX_LABOUR_HUNDREDTHS: u64 = 100 * 100;
const MAX_PARTS_CENTS: u64 = 100_000 * 100;
const MAX_INTERVAL_KM: u64 = 200_000;
const MAX_INTERVAL_MONTHS: u64 = 120;
const MAX_CODE_CHARS: usize = 32;
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 200;
const MAX_BRAND_CHARS: usize = 40;
const MAX_MODEL_CHARS: usize = 60;

/// A service job the importer prices: standard labour and parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceType {
    pub code: String,
    pub name: String,
    /// Standard labour hours x 100: 1.25 h is 125.
    pub labour_hundredths: u32,
    pub parts_cents: u64,
}

/// What an error code means and how serious it is, as a lead shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtcInfo {
    pub description: String,
    /// 1 low ..= 3 high.
    pub severity: u8,
    /// False when the text is the generic SAE group and the severity the
    /// R-LEAD-DTC default: the catalog has no entry for the code.
    pub from_catalog: bool,
}

/// How often a model is due for routine service, whichever comes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInterval {
    pub km: u32,
    pub months: u32,
}

/// The key of a `dtc` row: a whole code with its failure type (`U0123-1C`),
/// a whole code whatever its failure type (`P0301`), or a prefix of the code
/// text (`P03*`). Always held in that canonical upper-case form, which also
/// sorts a prefix before the codes it covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DtcKey(String);

impl DtcKey {
    /// Parses `P0301`, `U0123-1C`, `P03*` or `P03xx` (x for any digit,
    /// spelled out to five characters). A failure type of 00 means "no
    /// sub-type" (ISO 14229-1), so `P0301-00` is the key `P0301`.
    pub fn parse(text: &str) -> Result<DtcKey, String> {
        let t = text.trim().to_ascii_uppercase();
        let refuse = || {
            format!("'{}' is not a DTC: expected a code such as P0301 or U0123-1C, or a prefix such as P03*", text.trim())
        };
        if !t.is_ascii() || t.is_empty() {
            return Err(refuse());
        }
        let stem = if let Some(stem) = t.strip_suffix('*') {
            Some(stem)
        } else if t.len() == 5 && t.ends_with('X') {
            Some(t.trim_end_matches('X'))
        } else {
            None
        };
        if let Some(stem) = stem {
            if stem.len() == 5 {
                return Err(format!(
                    "'{}' covers one code only: write {stem} without the *",
                    text.trim()
                ));
            }
            return if is_code_prefix(stem) {
                Ok(DtcKey(format!("{stem}*")))
            } else {
                Err(refuse())
            };
        }
        if let Some((_, ft)) = t.split_once('-') {
            if ft.len() != 2 || !ft.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refuse());
            }
        }
        Dtc::parse(&t)
            .map(|dtc| DtcKey(dtc.to_string()))
            .ok_or_else(refuse)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_prefix(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Every key that matches a reported code, most specific first: the code
    /// with its failure type, the bare code, then ever shorter prefixes.
    fn candidates(dtc: &Dtc) -> Vec<DtcKey> {
        let base = dtc.base_code();
        let mut keys = Vec::with_capacity(6);
        if dtc.failure_type() != 0 {
            keys.push(DtcKey(dtc.to_string()));
        }
        keys.push(DtcKey(base.clone()));
        keys.extend(
            (1..base.len())
                .rev()
                .map(|n| DtcKey(format!("{}*", &base[..n]))),
        );
        keys
    }
}

/// The first one to four characters of a J2012 code: a system letter, then
/// a digit 0..=3, then hex digits.
fn is_code_prefix(stem: &str) -> bool {
    let b = stem.as_bytes();
    (1..=4).contains(&b.len())
        && matches!(b[0], b'P' | b'C' | b'B' | b'U')
        && b.get(1).is_none_or(|d| (b'0'..=b'3').contains(d))
        && b.iter().skip(2).all(|c| c.is_ascii_hexdigit())
}

impl TryFrom<String> for DtcKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        DtcKey::parse(&s)
    }
}

impl From<DtcKey> for String {
    fn from(k: DtcKey) -> String {
        k.0
    }
}

impl fmt::Display for DtcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one `dtc` row says about the codes its key matches: a service job,
/// a description with its severity, or both. Each is looked up on its own,
/// so a prefix can give the service and an exact code the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtcEntry {
    pub service: Option<String>,
    pub text: Option<DtcText>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtcText {
    pub description: String,
    /// 1 low ..= 3 high.
    pub severity: u8,
}

/// The whole catalog. Built only by parsing (the default, a CSV import) and
/// merging, so every key is in canonical form; a catalog that arrives by
/// sync is checked with [`Catalog::validate_against`] before it is merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Service code (upper case) -> service.
    services: BTreeMap<String, ServiceType>,
    /// Lead type -> service code.
    lead_types: BTreeMap<LeadType, String>,
    /// Lamp id -> service code.
    lamps: BTreeMap<u8, String>,
    /// DTC code or prefix -> service and/or description.
    dtcs: BTreeMap<DtcKey, DtcEntry>,
    /// WMI (3 upper-case characters) -> brand.
    brands: BTreeMap<String, String>,
    /// Brand -> model (or "*" for all) -> interval. Brands and models are
    /// matched ignoring ASCII case: DMS exports and importers spell them
    /// differently.
    intervals: BTreeMap<String, BTreeMap<String, ServiceInterval>>,
}

/// One refused row of a CSV file (or of a catalog's export).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: {message}")]
pub struct RowError {
    /// 1-based line number in the file (the header is 1; a record with a
    /// quoted line break is numbered by the line it starts on); 0 for the
    /// file as a whole (too large).
    pub row: usize,
    /// Names the column and says what to fix.
    pub message: String,
}

impl Catalog {
    /// The default catalog embedded in the binary.
    pub fn builtin() -> Catalog {
        builtin_ref().clone()
    }

    /// Parses a CSV catalog file (docs/catalog.md). Every row is checked and
    /// every bad one reported; service codes it references must be defined
    /// in the file or in the built-in catalog. To check references against
    /// the catalog an import actually updates, use [`Catalog::import_csv`].
    pub fn parse_csv(text: &str) -> Result<Catalog, Vec<RowError>> {
        parse_text(text, builtin_ref())
    }

    /// [`Catalog::parse_csv`] of a file's bytes, refusing a file over 5 MB or
    /// one that is not UTF-8.
    pub fn parse_csv_bytes(bytes: &[u8]) -> Result<Catalog, Vec<RowError>> {
        Catalog::parse_csv(decode(bytes)?)
    }

    /// The import path: parses a file's bytes as an update of `current`, the
    /// catalog in use, so references to services defined there are good.
    /// Returns the update; the caller applies it with [`Catalog::merge`] (only
    /// on `Ok`, so a bad file changes nothing).
    pub fn import_csv(bytes: &[u8], current: &Catalog) -> Result<Catalog, Vec<RowError>> {
        parse_text(decode(bytes)?, current)
    }

    /// Checks a catalog that did not come from a file (sync) as an update of
    /// `base`: every row must be one [`Catalog::import_csv`] would accept, and
    /// every service it references must be defined in it or in `base`. Row
    /// numbers are lines of `self.to_csv()`. Empty when it may be merged.
    pub fn validate_against(&self, base: &Catalog) -> Vec<RowError> {
        match parse_text(&self.to_csv(), base) {
            Err(errors) => errors,
            Ok(parsed) if parsed != *self => vec![RowError {
                row: 0,
                message: "the catalog differs from its own CSV export (keys or text not in canonical form, \
                          e.g. a lower-case service code): export it and import the file instead"
                    .to_string(),
            }],
            Ok(_) => Vec::new(),
        }
    }

    /// Applies an update: every row of `update` replaces the row with the same
    /// key, or is added. Nothing is removed.
    pub fn merge(&mut self, update: Catalog) {
        self.services.extend(update.services);
        self.lead_types.extend(update.lead_types);
        self.lamps.extend(update.lamps);
        self.dtcs.extend(update.dtcs);
        self.brands.extend(update.brands);
        for (brand, models) in update.intervals {
            let mut merged = take_ignoring_case(&mut self.intervals, &brand).unwrap_or_default();
            for (model, interval) in models {
                take_ignoring_case(&mut merged, &model);
                merged.insert(model, interval);
            }
            self.intervals.insert(brand, merged);
        }
    }

    /// Number of rows, as the CSV export would hold them.
    pub fn rows(&self) -> usize {
        self.services.len()
            + self.lead_types.len()
            + self.lamps.len()
            + self.dtcs.len()
            + self.brands.len()
            + self.intervals.values().map(BTreeMap::len).sum::<usize>()
    }

    /// The brand of a VIN, by its world manufacturer identifier (the first
    /// three characters, ISO 3780).
    pub fn brand_of(&self, vin: &Vin) -> Option<&str> {
        let wmi = vin.0.get(..3)?.to_ascii_uppercase();
        self.brands
            .get(std::str::from_utf8(&wmi).ok()?)
            .map(String::as_str)
    }

    /// Description and severity of a reported code (R-LEAD-DTC): the most
    /// specific catalog entry with a description (code with failure type,
    /// bare code, longest prefix); without one, the SAE group text and the
    /// default severity of `status`.
    pub fn dtc_info(&self, dtc: &Dtc, status: u8) -> DtcInfo {
        match self.dtc_entries(dtc).find_map(|e| e.text.as_ref()) {
            Some(text) => DtcInfo {
                description: text.description.clone(),
                severity: text.severity,
                from_catalog: true,
            },
            None => DtcInfo {
                description: sae_group(dtc),
                severity: default_severity(status),
                from_catalog: false,
            },
        }
    }

    /// The service job a lead means (R-LEAD-REV). Error codes map by the most
    /// specific DTC entry with a service, lamp leads by lamp id; every lead
    /// falls back to its lead type's service.
    pub fn service_for(&self, ty: LeadType, subject: &Subject) -> Option<&ServiceType> {
        let specific = match (ty, subject) {
            (LeadType::ErrorCode, Subject::Code { dtc, .. }) => self
                .dtc_entries(dtc)
                .filter_map(|e| e.service.as_deref())
                .find_map(|code| self.services.get(code)),
            (LeadType::WarningLamp | LeadType::UserLamp, Subject::Lamp(id)) => {
                self.lamps.get(id).and_then(|code| self.services.get(code))
            }
            _ => None,
        };
        specific.or_else(|| {
            self.lead_types
                .get(&ty)
                .and_then(|code| self.services.get(code))
        })
    }

    /// Estimated revenue of a lead in cents (R-LEAD-REV): standard labour
    /// hours x the workshop's hourly rate, rounded half up to the cent, plus
    /// parts. `None` when the catalog maps the lead to no service.
    pub fn estimate_cents(
        &self,
        ty: LeadType,
        subject: &Subject,
        labour_rate_cents_per_hour: u64,
    ) -> Option<u64> {
        let service = self.service_for(ty, subject)?;
        // In u128 the product cannot overflow; only the total saturates.
        let labour =
            (u128::from(service.labour_hundredths) * u128::from(labour_rate_cents_per_hour) + 50)
                / 100;
        Some(u64::try_from(labour + u128::from(service.parts_cents)).unwrap_or(u64::MAX))
    }

    /// The routine service interval of a brand's model (R-REM-1): the model's
    /// own entry, else the brand's entry for all models.
    pub fn service_interval(&self, brand: &str, model: Option<&str>) -> Option<&ServiceInterval> {
        let models = get_ignoring_case(&self.intervals, brand.trim())?;
        model
            .and_then(|m| get_ignoring_case(models, m.trim()))
            .or_else(|| models.get(ALL_MODELS))
    }

    /// A service by code (any case).
    pub fn service(&self, code: &str) -> Option<&ServiceType> {
        self.services.get(&code.trim().to_ascii_uppercase())
    }

    /// All services, by code.
    pub fn services(&self) -> impl Iterator<Item = &ServiceType> {
        self.services.values()
    }

    /// The distinct brand names the catalog knows (for choosing consent
    /// brands).
    pub fn brand_names(&self) -> BTreeSet<&str> {
        self.brands.values().map(String::as_str).collect()
    }

    /// The catalog in the import format: `parse_csv(&c.to_csv())` gives `c`
    /// back (for a catalog whose references are all defined in it or in the
    /// built-in catalog, which holds for the merged catalog in use).
    pub fn to_csv(&self) -> String {
        use Column::*;
        let mut out = String::with_capacity(64 * (self.rows() + 1));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for s in self.services.values() {
            let (hours, price) = (
                format_hundredths(s.labour_hundredths.into()),
                format_hundredths(s.parts_cents),
            );
            write_row(
                &mut out,
                RowKind::Service,
                &[
                    (Key, &s.code),
                    (Name, &s.name),
                    (LabourHours, &hours),
                    (PartsPrice, &price),
                ],
            );
        }
        for (ty, code) in &self.lead_types {
            write_row(
                &mut out,
                RowKind::LeadType,
                &[(Key, ty.as_str()), (Service, code)],
            );
        }
        for (id, code) in &self.lamps {
            write_row(
                &mut out,
                RowKind::Lamp,
                &[(Key, &id.to_string()), (Service, code)],
            );
        }
        for (key, entry) in &self.dtcs {
            let severity = entry
                .text
                .as_ref()
                .map(|t| t.severity.to_string())
                .unwrap_or_default();
            let description = entry.text.as_ref().map_or("", |t| t.description.as_str());
            let service = entry.service.as_deref().unwrap_or("");
            write_row(
                &mut out,
                RowKind::Dtc,
                &[
                    (Key, key.as_str()),
                    (Service, service),
                    (Description, description),
                    (Severity, &severity),
                ],
            );
        }
        for (wmi, brand) in &self.brands {
            write_row(&mut out, RowKind::Brand, &[(Key, wmi), (Brand, brand)]);
        }
        for (brand, models) in &self.intervals {
            for (model, interval) in models {
                let model = if model == ALL_MODELS {
                    ""
                } else {
                    model.as_str()
                };
                let (km, months) = (interval.km.to_string(), interval.months.to_string());
                write_row(
                    &mut out,
                    RowKind::Interval,
                    &[(Brand, brand), (Model, model), (Km, &km), (Months, &months)],
                );
            }
        }
        out
    }

    /// The entries matching a reported code, most specific first.
    fn dtc_entries(&self, dtc: &Dtc) -> impl Iterator<Item = &DtcEntry> {
        DtcKey::candidates(dtc)
            .into_iter()
            .filter_map(|key| self.dtcs.get(&key))
    }

    fn insert(&mut self, row: ParsedRow) {
        match row {
            ParsedRow::Service(s) => {
                self.services.insert(s.code.clone(), s);
            }
            ParsedRow::LeadType(ty, code) => {
                self.lead_types.insert(ty, code);
            }
            ParsedRow::Lamp(id, code) => {
                self.lamps.insert(id, code);
            }
            ParsedRow::Dtc(key, entry) => {
                self.dtcs.insert(key, entry);
            }
            ParsedRow::Brand(wmi, brand) => {
                self.brands.insert(wmi, brand);
            }
            ParsedRow::Interval {
                brand,
                model,
                interval,
            } => {
                self.intervals
                    .entry(brand)
                    .or_default()
                    .insert(model, interval);
            }
        }
    }
}

fn builtin_ref() -> &'static Catalog {
    static BUILTIN: OnceLock<Catalog> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        // The file is part of the source; the test `builtin_catalog_parses`
        // proves it, so a failure here is a build defect, not bad input.
        parse_text(DEFAULT_CSV, &Catalog::default())
            .expect("src/domain/catalog_default.csv must parse")
    })
}

/// R-LEAD-DTC's severity for a code the catalog does not know: 3 when the
/// ECU asks for the warning indicator, else 2 for permanent and sporadic
/// codes, 1 for potential ones and for codes with no class.
pub fn default_severity(status: u8) -> u8 {
    if status & status_bit::WARNING_INDICATOR_REQUESTED != 0 {
        return 3;
    }
    match classify(status) {
        Some(DtcClass::Permanent | DtcClass::Sporadic) => 2,
        Some(DtcClass::Potential) | None => 1,
    }
}

/// The generic description of a code from its SAE J2012 group, e.g.
/// `P03xx ignition system or misfire` for P0301.
///
/// The groups follow the structure of SAE J2012 "Diagnostic Trouble Code
/// Definitions" (the same as ISO 15031-6): the letter names the system
/// (P powertrain, C chassis, B body, U network), the first digit says who
/// defines the code (0 and, for P, 2 and part of 3: SAE generic; 1 and, for
/// B/C/U, 2: the manufacturer; 3 for B/C/U: reserved), and for generic
/// powertrain and network codes the next character names the sub-system.
/// Written from public knowledge of the standard's structure.
pub fn sae_group(dtc: &Dtc) -> String {
    let letter = dtc.letter();
    let digit = (dtc.0[0] >> 4) & 0x3;
    let group = dtc.0[0] & 0x0F;
    match sae_group_text(letter, digit, group) {
        (Span::Group, text) => format!("{letter}{digit}{group:X}xx {text}"),
        (Span::Digit, text) => format!("{letter}{digit}xxx {text}"),
    }
}

/// How much of the code a group text covers: its first three characters
/// (`P03xx`) or its first two (`P1xxx`).
enum Span {
    Group,
    Digit,
}

fn sae_group_text(letter: char, digit: u8, group: u8) -> (Span, &'static str) {
    use Span::{Digit, Group};
    match (letter, digit, group) {
        ('P', 0, 0x0) => (
            Group,
            "fuel and air metering and auxiliary emission controls",
        ),
        ('P', 0, 0x1) => (Group, "fuel and air metering"),
        ('P', 0, 0x2) => (Group, "fuel and air metering (injector circuit)"),
        ('P', 0, 0x3) => (Group, "ignition system or misfire"),
        ('P', 0, 0x4) => (Group, "auxiliary emission controls"),
        ('P', 0, 0x5) => (Group, "vehicle speed, idle control and auxiliary inputs"),
        ('P', 0, 0x6) => (Group, "computer and auxiliary outputs"),
        ('P', 0, 0x7..=0x9) => (Group, "transmission"),
        ('P', 0, 0xA..=0xC) => (Group, "hybrid propulsion"),
        ('P', 0, _) => (Group, "generic powertrain"),
        ('P', 1, _) => (Digit, "manufacturer-specific powertrain"),
        ('P', 2, 0x0..=0x2 | 0xA) => (
            Group,
            "fuel and air metering and auxiliary emission controls",
        ),
        ('P', 2, 0x3) => (Group, "ignition system or misfire"),
        ('P', 2, 0x4 | 0xB) => (Group, "auxiliary emission controls"),
        ('P', 2, 0x5) => (Group, "auxiliary inputs"),
        ('P', 2, 0x6) => (Group, "computer and auxiliary outputs"),
        ('P', 2, 0x7 | 0x8) => (Group, "transmission"),
        ('P', 2, _) => (Group, "generic powertrain (fuel, air and emissions)"),
        ('P', 3, 0x0..=0x3) => (Digit, "manufacturer-specific powertrain"),
        ('P', 3, 0x4) => (Group, "cylinder deactivation"),
        ('P', _, _) => (Group, "generic powertrain (SAE reserved)"),
        ('C', 0, _) => (Digit, "chassis (brakes, steering, suspension)"),
        ('C', 1 | 2, _) => (Digit, "manufacturer-specific chassis"),
        ('C', _, _) => (Digit, "chassis (SAE reserved)"),
        ('B', 0, 0x0) => (Group, "body, occupant restraints (airbag)"),
        ('B', 0, _) => (Digit, "body (restraints, comfort, lighting, climate)"),
        ('B', 1 | 2, _) => (Digit, "manufacturer-specific body"),
        ('B', _, _) => (Digit, "body (SAE reserved)"),
        ('U', 0, 0x0) => (Group, "network electrical (communication bus)"),
        ('U', 0, 0x1 | 0x2) => (Group, "lost communication with a module"),
        ('U', 0, 0x3) => (Group, "control module software incompatibility"),
        ('U', 0, 0x4) => (Group, "invalid data received from a module"),
        ('U', 0, _) => (Digit, "network communication"),
        ('U', 1 | 2, _) => (Digit, "manufacturer-specific network communication"),
        _ => (Digit, "network communication (SAE reserved)"),
    }
}

/// What a DTC's failure-type byte means (ISO 14229-1 annex D, the SAE
/// J2012-DA failure types), so a view can qualify a description, e.g.
/// U0123-1C "circuit voltage out of range". `None` for 0x00 (no sub-type).
/// Bytes without a well-known meaning are named by their category (the high
/// nibble).
pub fn failure_type_text(ft: u8) -> Option<&'static str> {
    let specific = match ft {
        0x00 => return None,
        0x01 => "general electrical failure",
        0x02 => "general signal failure",
        0x03 => "FM/PWM failure",
        0x04 => "system internal failure",
        0x05 => "system programming failure",
        0x06 => "algorithm based failure",
        0x07 => "mechanical failure",
        0x08 => "bus signal or message failure",
        0x09 => "component failure",
        0x11 => "circuit short to ground",
        0x12 => "circuit short to battery",
        0x13 => "circuit open",
        0x14 => "circuit short to ground or open",
        0x15 => "circuit short to battery or open",
        0x16 => "circuit voltage below threshold",
        0x17 => "circuit voltage above threshold",
        0x18 => "circuit current below threshold",
        0x19 => "circuit current above threshold",
        0x1A => "circuit resistance below threshold",
        0x1B => "circuit resistance above threshold",
        0x1C => "circuit voltage out of range",
        0x1D => "circuit current out of range",
        0x1E => "circuit resistance out of range",
        0x1F => "circuit intermittent",
        0x21 => "signal amplitude below minimum",
        0x22 => "signal amplitude above maximum",
        0x23 => "signal stuck low",
        0x24 => "signal stuck high",
        0x29 => "signal invalid",
        0x2F => "signal erratic",
        0x31 => "no signal",
        0x41 => "general checksum failure",
        0x42 => "general memory failure",
        0x4B => "over temperature",
        0x51 => "not programmed",
        0x54 => "missing calibration",
        0x55 => "not configured",
        0x62 => "signal compare failure",
        0x64 => "signal plausibility failure",
        0x71 => "actuator stuck",
        0x72 => "actuator stuck open",
        0x73 => "actuator stuck closed",
        0x81 => "invalid serial data received",
        0x82 => "alive or sequence counter incorrect",
        0x86 => "signal invalid",
        0x87 => "missing message",
        0x88 => "bus off",
        0x92 => "performance or incorrect operation",
        0x96 => "component internal failure",
        0x98 => "component or system over temperature",
        _ => match ft >> 4 {
            0x0 => "general failure",
            0x1 => "electrical failure",
            0x2 => "signal failure",
            0x3 => "FM/PWM failure",
            0x4 => "system internal failure",
            0x5 => "system programming failure",
            0x6 => "algorithm based failure",
            0x7 => "mechanical failure",
            0x8 => "bus signal or message failure",
            0x9 => "component failure",
            0xF => "manufacturer-specific failure type",
            _ => "reserved failure type",
        },
    };
    Some(specific)
}

// ---------------------------------------------------------------------------
// The CSV format

/// The columns of the format, in export order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Kind,
    Key,
    Service,
    Name,
    LabourHours,
    PartsPrice,
    Description,
    Severity,
    Brand,
    Model,
    Km,
    Months,
}

impl Column {
    const ALL: [Column; 12] = [
        Column::Kind,
        Column::Key,
        Column::Service,
        Column::Name,
        Column::LabourHours,
        Column::PartsPrice,
        Column::Description,
        Column::Severity,
        Column::Brand,
        Column::Model,
        Column::Km,
        Column::Months,
    ];

    fn name(self) -> &'static str {
        match self {
            Column::Kind => "kind",
            Column::Key => "key",
            Column::Service => "service",
            Column::Name => "name",
            Column::LabourHours => "labour_hours",
            Column::PartsPrice => "parts_price",
            Column::Description => "description",
            Column::Severity => "severity",
            Column::Brand => "brand",
            Column::Model => "model",
            Column::Km => "km",
            Column::Months => "months",
        }
    }

    fn parse(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The kinds of row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RowKind {
    Service,
    LeadType,
    Lamp,
    Dtc,
    Brand,
    Interval,
}

impl RowKind {
    const ALL: [RowKind; 6] = [
        RowKind::Service,
        RowKind::LeadType,
        RowKind::Lamp,
        RowKind::Dtc,
        RowKind::Brand,
        RowKind::Interval,
    ];

    fn name(self) -> &'static str {
        match self {
            RowKind::Service => "service",
            RowKind::LeadType => "lead_type",
            RowKind::Lamp => "lamp",
            RowKind::Dtc => "dtc",
            RowKind::Brand => "brand",
            RowKind::Interval => "interval",
        }
    }

    fn parse(text: &str) -> Option<RowKind> {
        let text = text.trim().to_ascii_lowercase();
        RowKind::ALL.into_iter().find(|k| k.name() == text)
    }

    /// The columns besides `kind` a row of this kind may fill; the others
    /// must stay empty, so a row shifted by a stray comma is caught.
    fn columns(self) -> &'static [Column] {
        use Column::*;
        match self {
            RowKind::Service => &[Key, Name, LabourHours, PartsPrice],
            RowKind::LeadType | RowKind::Lamp => &[Key, Service],
            RowKind::Dtc => &[Key, Service, Description, Severity],
            RowKind::Brand => &[Key, Brand],
            RowKind::Interval => &[Brand, Model, Km, Months],
        }
    }
}

/// One good row.
enum ParsedRow {
    Service(ServiceType),
    LeadType(LeadType, String),
    Lamp(u8, String),
    Dtc(DtcKey, DtcEntry),
    Brand(String, String),
    Interval {
        brand: String,
        model: String,
        interval: ServiceInterval,
    },
}

impl ParsedRow {
    /// What makes two rows of a file duplicates, and how to name it.
    fn identity(&self) -> (RowKind, String) {
        let (kind, label) = self.label();
        (kind, label.to_ascii_lowercase())
    }

    /// The row's kind and key as a person reads them.
    fn label(&self) -> (RowKind, String) {
        match self {
            ParsedRow::Service(s) => (RowKind::Service, s.code.clone()),
            ParsedRow::LeadType(ty, _) => (RowKind::LeadType, ty.as_str().to_string()),
            ParsedRow::Lamp(id, _) => (RowKind::Lamp, id.to_string()),
            ParsedRow::Dtc(key, _) => (RowKind::Dtc, key.to_string()),
            ParsedRow::Brand(wmi, _) => (RowKind::Brand, wmi.clone()),
            ParsedRow::Interval { brand, model, .. } => {
                let model = if model == ALL_MODELS {
                    "(all models)"
                } else {
                    model.as_str()
                };
                (RowKind::Interval, format!("{brand} {model}"))
            }
        }
    }

    fn service_ref(&self) -> Option<&str> {
        match self {
            ParsedRow::LeadType(_, code) | ParsedRow::Lamp(_, code) => Some(code),
            ParsedRow::Dtc(_, entry) => entry.service.as_deref(),
            _ => None,
        }
    }
}

/// Where the columns are in this file: any order is accepted and unused
/// columns may be left out, but every column must be one of the format's.
struct Header {
    index: [Option<usize>; Column::ALL.len()],
    width: usize,
}

fn parse_header(record: &Record) -> Result<Header, Vec<RowError>> {
    let row = record.line;
    let names: Vec<String> = record
        .fields
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    // A data row first ("brand,WVW,...": brand is also a column's name) or a
    // row naming no column at all: the header is missing, not misspelled.
    let starts_like_data = names.first().is_some_and(|n| RowKind::parse(n).is_some());
    let has_kind = names.iter().any(|n| n == Column::Kind.name());
    if !has_kind && (starts_like_data || !names.iter().any(|n| Column::parse(n).is_some())) {
        let hint = if record.fields.iter().any(|f| f.contains(';')) {
            " (this file is separated by semicolons: export it with commas)"
        } else {
            ""
        };
        return Err(vec![RowError {
            row,
            message: format!(
                "missing header: the first row must name the columns: {CSV_HEADER}{hint}"
            ),
        }]);
    }
    let mut index = [None; Column::ALL.len()];
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Column::parse(name) {
            None if name.is_empty() => errors.push(RowError {
                row,
                message: format!("header: column {} has no name", i + 1),
            }),
            None => errors.push(RowError {
                row,
                message: format!(
                    "header: unknown column '{name}' (column {}); the columns are {CSV_HEADER}",
                    i + 1
                ),
            }),
            Some(c) if index[c as usize].is_some() => errors.push(RowError {
                row,
                message: format!("header: column {} appears twice", c.name()),
            }),
            Some(c) => index[c as usize] = Some(i),
        }
    }
    for c in [Column::Kind, Column::Key] {
        if index[c as usize].is_none() {
            errors.push(RowError {
                row,
                message: format!("header: column {} is missing", c.name()),
            });
        }
    }
    if errors.is_empty() {
        Ok(Header {
            index,
            width: names.len(),
        })
    } else {
        Err(errors)
    }
}

/// One record's fields by column, and the errors found in them.
struct RowFields<'r> {
    line: usize,
    header: &'r Header,
    fields: &'r [String],
    errors: Vec<RowError>,
}

impl<'r> RowFields<'r> {
    /// The field, trimmed; empty when the file has no such column.
    fn get(&self, c: Column) -> &'r str {
        self.header.index[c as usize]
            .and_then(|i| self.fields.get(i))
            .map_or("", |f| f.trim())
    }

    fn fail(&mut self, c: Column, message: impl fmt::Display) {
        self.errors.push(RowError {
            row: self.line,
            message: format!("column {}: {message}", c.name()),
        });
    }

    /// A field this kind needs.
    fn required<T>(
        &mut self,
        c: Column,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.get(c);
        if value.is_empty() {
            self.fail(c, "is empty, and this kind of row needs it");
            return None;
        }
        parse(value).map_err(|e| self.fail(c, e)).ok()
    }

    /// A field this kind may leave empty: `None` when empty or bad (a bad
    /// value is recorded as an error, so the row is refused anyway).
    fn optional<T>(
        &mut self,
        c: Column,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.get(c);
        if value.is_empty() {
            return None;
        }
        parse(value).map_err(|e| self.fail(c, e)).ok()
    }
}

/// Parses one record into a row; `None` with errors in `f` when it is bad.
fn parse_row(f: &mut RowFields<'_>) -> Option<ParsedRow> {
    use Column::*;
    let kind_text = f.get(Kind);
    let Some(kind) = RowKind::parse(kind_text) else {
        let message = if kind_text.is_empty() {
            "is empty: every row needs a kind (service, lead_type, lamp, dtc, brand or interval)"
                .to_string()
        } else {
            format!("unknown kind '{kind_text}': expected service, lead_type, lamp, dtc, brand or interval")
        };
        f.fail(Kind, message);
        return None;
    };
    for c in Column::ALL {
        if c != Kind && !kind.columns().contains(&c) && !f.get(c).is_empty() {
            f.fail(
                c,
                format!("is not used by a {} row: leave it empty", kind.name()),
            );
        }
    }
    let row = match kind {
        RowKind::Service => {
            let code = f.required(Key, parse_service_code);
            let name = f.required(Name, |v| parse_text_field(v, MAX_NAME_CHARS));
            let labour = f.required(LabourHours, parse_labour_hours);
            let parts = f.optional(PartsPrice, parse_parts_price);
            ParsedRow::Service(ServiceType {
                code: code?,
                name: name?,
                labour_hundredths: labour?,
                parts_cents: parts.unwrap_or(0),
            })
        }
        RowKind::LeadType => {
            let ty = f.required(Key, parse_lead_type);
            let service = f.required(Service, parse_service_code);
            ParsedRow::LeadType(ty?, service?)
        }
        RowKind::Lamp => {
            let id = f.required(Key, parse_lamp_id);
            let service = f.required(Service, parse_service_code);
            ParsedRow::Lamp(id?, service?)
        }
        RowKind::Dtc => {
            let key = f.required(Key, DtcKey::parse);
            let service = f.optional(Service, parse_service_code);
            let description =
                f.optional(Description, |v| parse_text_field(v, MAX_DESCRIPTION_CHARS));
            let severity = f.optional(Severity, parse_severity);
            let (has_service, has_description, has_severity) = (
                !f.get(Service).is_empty(),
                !f.get(Description).is_empty(),
                !f.get(Severity).is_empty(),
            );
            match (has_description, has_severity) {
                (true, false) => f.fail(
                    Severity,
                    "is empty: a description needs a severity (1 low, 2, 3 high)",
                ),
                (false, true) => f.fail(Description, "is empty: a severity needs a description"),
                (false, false) if !has_service => f.fail(
                    Service,
                    "is empty: a dtc row needs a service, or a description and a severity, or both",
                ),
                _ => {}
            }
            let text = match (description, severity) {
                (Some(description), Some(severity)) => Some(DtcText {
                    description,
                    severity,
                }),
                _ => None,
            };
            ParsedRow::Dtc(key?, DtcEntry { service, text })
        }
        RowKind::Brand => {
            let wmi = f.required(Key, parse_wmi);
            let brand = f.required(Brand, |v| parse_text_field(v, MAX_BRAND_CHARS));
            ParsedRow::Brand(wmi?, brand?)
        }
        RowKind::Interval => {
            let brand = f.required(Brand, |v| parse_text_field(v, MAX_BRAND_CHARS));
            let model = f.optional(Model, |v| parse_text_field(v, MAX_MODEL_CHARS));
            let km = f.required(Km, |v| parse_count(v, MAX_INTERVAL_KM, "km"));
            let months = f.required(Months, |v| parse_count(v, MAX_INTERVAL_MONTHS, "months"));
            ParsedRow::Interval {
                brand: brand?,
                model: model.unwrap_or_else(|| ALL_MODELS.to_string()),
                interval: ServiceInterval {
                    km: km?,
                    months: months?,
                },
            }
        }
    };
    f.errors.is_empty().then_some(row)
}

/// A service code: 1 to 32 letters, digits, '-', '_' or '.', upper-cased so
/// that references do not depend on how a spreadsheet user typed them.
fn parse_service_code(v: &str) -> Result<String, String> {
    let code = v.to_ascii_uppercase();
    let ok = (1..=MAX_CODE_CHARS).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(code)
    } else {
        Err(format!("'{v}' is not a service code: use 1 to {MAX_CODE_CHARS} letters, digits, '-', '_' or '.'"))
    }
}

/// Free text for people: trimmed, one line, bounded.
fn parse_text_field(v: &str, max_chars: usize) -> Result<String, String> {
    let v = v.trim();
    if v.chars().any(char::is_control) {
        return Err(
            "holds a line break or another control character: keep the text on one line"
                .to_string(),
        );
    }
    let n = v.chars().count();
    if n > max_chars {
        return Err(format!("is {n} characters long: at most {max_chars}"));
    }
    Ok(v.to_string())
}

fn parse_lead_type(v: &str) -> Result<LeadType, String> {
    LeadType::parse(&v.to_ascii_lowercase()).ok_or_else(|| {
        format!("unknown lead type '{v}': expected warning_lamp, user_lamp, low_battery, disconnected or error_code")
    })
}

fn parse_lamp_id(v: &str) -> Result<u8, String> {
    match parse_digits(v) {
        Some(id @ 1..=255) => Ok(id as u8),
        _ => Err(format!(
            "'{v}' is not a lamp id: use a whole number from 1 to 255"
        )),
    }
}

fn parse_severity(v: &str) -> Result<u8, String> {
    match v {
        "1" => Ok(1),
        "2" => Ok(2),
        "3" => Ok(3),
        _ => Err(format!(
            "severity '{v}' is out of range: use 1 (low), 2 or 3 (high)"
        )),
    }
}

/// A world manufacturer identifier: three VIN characters (ISO 3779: digits
/// and capital letters except I, O and Q, which a VIN never holds; the usual
/// typo is O for the zero of W0L).
fn parse_wmi(v: &str) -> Result<String, String> {
    let wmi = v.to_ascii_uppercase();
    let ok = wmi.len() == 3
        && wmi.bytes().all(|b| {
            b.is_ascii_digit() || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'O' | b'Q'))
        });
    if ok {
        Ok(wmi)
    } else {
        Err(format!("'{v}' is not a WMI: use the first 3 VIN characters (digits and letters other than I, O, Q)"))
    }
}

fn parse_labour_hours(v: &str) -> Result<u32, String> {
    let hundredths = parse_hundredths(v, "1.25")?;
    if hundredths > MAX_LABOUR_HUNDREDTHS {
        return Err(format!(
            "{v} hours is more than the {} hours a catalog job may take",
            MAX_LABOUR_HUNDREDTHS / 100
        ));
    }
    u32::try_from(hundredths).map_err(|_| format!("{v} hours is too large"))
}

fn parse_parts_price(v: &str) -> Result<u64, String> {
    let cents = parse_hundredths(v, "180.00")?;
    if cents > MAX_PARTS_CENTS {
        return Err(format!(
            "{v} is more than the {} a catalog parts price may be",
            MAX_PARTS_CENTS / 100
        ));
    }
    Ok(cents)
}

/// A non-negative decimal with at most two decimals, in hundredths: "1.25"
/// is 125, "180" is 18000. Exact: no floating point on money.
fn parse_hundredths(v: &str, example: &str) -> Result<u64, String> {
    if v.contains(',') {
        return Err(format!("'{v}': write decimals with a dot, e.g. {example}"));
    }
    let (whole, fraction) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (v.contains('.') && fraction.is_empty())
    {
        return Err(format!("'{v}' is not a number: expected e.g. {example}"));
    }
    if fraction.len() > 2 {
        return Err(format!(
            "'{v}' has more than two decimals: expected e.g. {example}"
        ));
    }
    let too_large = || format!("'{v}' is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let fraction = match fraction.len() {
        0 => 0,
        1 => u64::from(fraction.as_bytes()[0] - b'0') * 10,
        _ => {
            u64::from(fraction.as_bytes()[0] - b'0') * 10 + u64::from(fraction.as_bytes()[1] - b'0')
        }
    };
    whole
        .checked_mul(100)
        .and_then(|h| h.checked_add(fraction))
        .ok_or_else(too_large)
}

/// A whole number in 1..=max.
fn parse_count(v: &str, max: u64, unit: &str) -> Result<u32, String> {
    match parse_digits(v) {
        Some(n) if (1..=max).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "'{v}' is not a number of {unit} from 1 to {max} (digits only, no separators)"
        )),
    }
}

/// Plain ASCII digits (no sign, no separators) that fit a u64.
fn parse_digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn format_hundredths(v: u64) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

fn write_row(out: &mut String, kind: RowKind, values: &[(Column, &str)]) {
    for (i, c) in Column::ALL.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = if c == Column::Kind {
            kind.name()
        } else {
            values
                .iter()
                .find(|(column, _)| *column == c)
                .map_or("", |(_, v)| v)
        };
        push_field(out, value);
    }
    out.push('\n');
}

/// RFC 4180: a field holding a comma, a quote or a line break is quoted, with
/// its quotes doubled. So is one with outer spaces, which the reader would
/// otherwise trim.
fn push_field(out: &mut String, value: &str) {
    let needs_quotes = value.contains([',', '"', '\n', '\r'])
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace);
    if needs_quotes {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Checks a file's bytes before parsing: size first (nothing is decoded past
/// the limit), then UTF-8, naming the line of the first bad byte.
fn decode(bytes: &[u8]) -> Result<&str, Vec<RowError>> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(vec![too_large(bytes.len())]);
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(vec![RowError {
            row: 1,
            message: "the file is UTF-16 text: save it as \"CSV UTF-8\" (comma separated)"
                .to_string(),
        }]);
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let row = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
        vec![RowError {
            row,
            message: format!(
                "the file is not UTF-8 (bad byte at offset {offset}): save it as \"CSV UTF-8\" (comma separated)"
            ),
        }]
    })
}

fn too_large(len: usize) -> RowError {
    RowError {
        row: 0,
        message: format!(
            "the file is {len} bytes: at most {MAX_FILE_BYTES} bytes (5 MB) are accepted"
        ),
    }
}

/// The whole parse: header, rows, duplicates, then references to services,
/// which must be defined in the file or in `base`. Either a catalog or every
/// error found, in row order.
fn parse_text(text: &str, base: &Catalog) -> Result<Catalog, Vec<RowError>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![too_large(text.len())]);
    }
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut records = Records {
        text,
        pos: 0,
        line: 1,
    };
    let header = loop {
        match records.next() {
            None => {
                return Err(vec![RowError {
                    row: 1,
                    message: format!("the file is empty: it needs a header row: {CSV_HEADER}"),
                }])
            }
            Some(Err(e)) => return Err(vec![e]),
            Some(Ok(r)) if r.is_blank() => continue,
            Some(Ok(r)) => break parse_header(&r)?,
        }
    };

    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    let mut first_row: HashMap<(RowKind, String), usize> = HashMap::new();
    let mut references: Vec<(usize, String)> = Vec::new();
    // Service codes of every service row, good or bad, so a reference to a
    // refused service row is not reported a second time.
    let mut service_rows: HashSet<String> = HashSet::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if record.is_blank() {
            continue;
        }
        if record.fields.len() != header.width {
            errors.push(RowError {
                row: record.line,
                message: format!(
                    "has {} columns, the header has {}: check for a stray or missing comma (quote text that holds commas)",
                    record.fields.len(),
                    header.width
                ),
            });
            continue;
        }
        let mut f = RowFields {
            line: record.line,
            header: &header,
            fields: &record.fields,
            errors: Vec::new(),
        };
        if RowKind::parse(f.get(Column::Kind)) == Some(RowKind::Service) {
            service_rows.insert(f.get(Column::Key).to_ascii_uppercase());
        }
        let parsed = parse_row(&mut f);
        errors.append(&mut f.errors);
        let Some(row) = parsed else { continue };
        let identity = row.identity();
        if let Some(first) = first_row.get(&identity) {
            let (kind, key) = row.label();
            let column = if kind == RowKind::Interval {
                "brand and model"
            } else {
                "key"
            };
            errors.push(RowError {
                row: record.line,
                message: format!(
                    "column {column}: duplicate {} {key}, already on row {first}",
                    kind.name()
                ),
            });
            continue;
        }
        first_row.insert(identity, record.line);
        if let Some(code) = row.service_ref() {
            references.push((record.line, code.to_string()));
        }
        catalog.insert(row);
    }
    for (row, code) in references {
        if !catalog.services.contains_key(&code)
            && !base.services.contains_key(&code)
            && !service_rows.contains(&code)
        {
            errors.push(RowError {
                row,
                message: format!(
                    "column service: service '{code}' is defined neither in this file nor in the catalog it updates"
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(catalog)
    } else {
        errors.sort_by_key(|e| e.row);
        Err(errors)
    }
}

/// One CSV record: the line it starts on and its fields, unquoted (unquoted
/// fields trimmed; quoted ones as written).
struct Record {
    line: usize,
    fields: Vec<String>,
}

impl Record {
    /// A blank line, or a spreadsheet's row of empty cells.
    fn is_blank(&self) -> bool {
        self.fields.iter().all(|f| f.trim().is_empty())
    }
}

/// The RFC 4180 records of a text, one at a time, so a malformed record
/// costs an error for its own row and the next record parses normally.
/// Accepts LF, CRLF and CR line ends; a quoted field may hold commas,
/// doubled quotes and line breaks; blanks around a quoted field are ignored.
struct Records<'t> {
    text: &'t str,
    pos: usize,
    /// Line number at `pos`.
    line: usize,
}

impl Records<'_> {
    fn skip_blanks(&self, mut p: usize) -> usize {
        let text: &str = self.text;
        let b = text.as_bytes();
        while p < b.len() && matches!(b[p], b' ' | b'\t') {
            p += 1;
        }
        p
    }

    /// Skips to the start of the next line after an error.
    fn skip_line(&mut self) {
        let text: &str = self.text;
        let b = text.as_bytes();
        while self.pos < b.len() && !matches!(b[self.pos], b'\n' | b'\r') {
            self.pos += 1;
        }
        self.end_line();
    }

    /// Consumes a line end at `pos`, if any.
    fn end_line(&mut self) {
        let text: &str = self.text;
        let b = text.as_bytes();
        match b.get(self.pos) {
            Some(b'\r') => {
                self.pos += 1;
                if b.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
                self.line += 1;
            }
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
            }
            _ => {}
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let text: &str = self.text;
        let b = text.as_bytes();
        if self.pos >= b.len() {
            return None;
        }
        let line = self.line;
        let mut fields = Vec::new();
        loop {
            let start = self.skip_blanks(self.pos);
            if b.get(start) == Some(&b'"') {
                // Every index below is at an ASCII byte or the end, so the
                // slices fall on character boundaries.
                let mut value = String::new();
                let mut p = start + 1;
                let mut segment = p;
                loop {
                    match b.get(p) {
                        None => {
                            self.pos = b.len();
                            return Some(Err(RowError {
                                row: line,
                                message: format!(
                                    "column {}: a quoted field is never closed: check the quotes (a quote inside quoted text is written twice)",
                                    fields.len() + 1
                                ),
                            }));
                        }
                        Some(b'"') if b.get(p + 1) == Some(&b'"') => {
                            value.push_str(&text[segment..=p]);
                            p += 2;
                            segment = p;
                        }
                        Some(b'"') => {
                            value.push_str(&text[segment..p]);
                            p += 1;
                            break;
                        }
                        Some(b'\n') => {
                            self.line += 1;
                            p += 1;
                        }
                        Some(b'\r') => {
                            if b.get(p + 1) != Some(&b'\n') {
                                self.line += 1;
                            }
                            p += 1;
                        }
                        Some(_) => p += 1,
                    }
                }
                self.pos = self.skip_blanks(p);
                fields.push(value);
                if !matches!(b.get(self.pos), None | Some(b',' | b'\n' | b'\r')) {
                    let column = fields.len();
                    self.skip_line();
                    return Some(Err(RowError {
                        row: line,
                        message: format!(
                            "column {column}: text after a closing quote: a quote inside quoted text is written twice (\"\")"
                        ),
                    }));
                }
            } else {
                let mut p = self.pos;
                while p < b.len() && !matches!(b[p], b',' | b'\n' | b'\r') {
                    p += 1;
                }
                fields.push(text[self.pos..p].trim().to_string());
                self.pos = p;
            }
            if b.get(self.pos) == Some(&b',') {
                self.pos += 1;
                continue;
            }
            self.end_line();
            return Some(Ok(Record { line, fields }));
        }
    }
}

fn get_ignoring_case<'m, V>(map: &'m BTreeMap<String, V>, key: &str) -> Option<&'m V> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn take_ignoring_case<V>(map: &mut BTreeMap<String, V>, key: &str) -> Option<V> {
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &str = CSV_HEADER;

    fn dtc(s: &str) -> Dtc {
        Dtc::parse(s).unwrap()
    }

    fn code_subject(s: &str) -> Subject {
        Subject::Code {
            ecu: 0x07E0,
            dtc: dtc(s),
        }
    }

    fn vin(s: &str) -> Vin {
        Vin::parse(s).unwrap()
    }

    /// A file of the given rows under the standard header.
    fn file(rows: &[&str]) -> String {
        let mut text = format!("{HEADER}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        text
    }

    fn rows_of(errors: &[RowError]) -> Vec<usize> {
        errors.iter().map(|e| e.row).collect()
    }

    /// The one error of a file, checked to be on `row` and to mention `needle`.
    fn single_error(text: &str, row: usize, needle: &str) {
        let errors = Catalog::parse_csv(text).expect_err("the file must be refused");
        assert_eq!(rows_of(&errors), vec![row], "{errors:?}");
        assert!(
            errors[0].message.contains(needle),
            "{:?} should mention {needle:?}",
            errors[0].message
        );
    }

    // R-CAT-1: the appliance ships a default catalog.
    #[test]
    fn builtin_catalog_parses() {
        let c = Catalog::builtin();
        assert!(c.rows() > 100, "{} rows", c.rows());
        assert_eq!(Catalog::parse_csv(DEFAULT_CSV), Ok(c));
    }

    // R-LEAD-REV: every lead type and every standard lamp (1..15) has a
    // service, and every mapping names a defined service.
    #[test]
    fn builtin_maps_every_lead_type_and_lamp_to_a_defined_service() {
        let c = Catalog::builtin();
        for ty in LeadType::ALL {
            let code = c
                .lead_types
                .get(&ty)
                .unwrap_or_else(|| panic!("{ty:?} unmapped"));
            assert!(c.services.contains_key(code), "{ty:?} -> {code}");
            assert!(c.service_for(ty, &Subject::None).is_some());
        }
        for id in 1..=15u8 {
            let code = c
                .lamps
                .get(&id)
                .unwrap_or_else(|| panic!("lamp {id} unmapped"));
            assert!(c.services.contains_key(code), "lamp {id} -> {code}");
        }
        for (key, entry) in &c.dtcs {
            if let Some(code) = &entry.service {
                assert!(c.services.contains_key(code), "{key} -> {code}");
            }
        }
        assert!(c.validate_against(&Catalog::default()).is_empty());
    }

    // R-CAT-1, R-LEAD-DTC: the default catalog knows the common codes (misfires,
    // catalyst, lean mixture, thermostat, system voltage, DPF, lost ECM).
    #[test]
    fn builtin_knows_the_common_codes() {
        let c = Catalog::builtin();
        for code in [
            "P0300", "P0301", "P0306", "P0420", "P0171", "P0174", "P0128", "P0562", "P2002",
            "U0100",
        ] {
            let info = c.dtc_info(&dtc(code), 0);
            assert!(info.from_catalog, "{code}");
            assert!((1..=3).contains(&info.severity));
        }
        assert_eq!(
            c.dtc_info(&dtc("U0100"), 0).description,
            "Lost communication with ECM/PCM A"
        );
        assert_eq!(
            c.service_for(LeadType::ErrorCode, &code_subject("P0420"))
                .unwrap()
                .code,
            "CATALYST"
        );
        // A code the catalog covers only by prefix takes the prefix's service.
        assert_eq!(
            c.service_for(LeadType::ErrorCode, &code_subject("P0399"))
                .unwrap()
                .code,
            "IGNITION"
        );
        assert_eq!(
            c.service_interval("Volkswagen", Some("Golf")),
            Some(&ServiceInterval {
                km: 30_000,
                months: 24
            })
        );
    }

    // R-LEAD-DTC: without a catalog entry, severity 3 if warningIndicatorRequested
    // (bit 7) is set, else permanent 2, sporadic 2, potential 1.
    #[test]
    fn default_severity_follows_r_lead_dtc() {
        use status_bit::*;
        let empty = Catalog::default();
        let code = dtc("P1234");
        let severity = |status: u8| empty.dtc_info(&code, status).severity;
        // Bit 7 wins whatever the class.
        assert_eq!(severity(WARNING_INDICATOR_REQUESTED), 3);
        assert_eq!(severity(WARNING_INDICATOR_REQUESTED | TEST_FAILED), 3);
        assert_eq!(severity(WARNING_INDICATOR_REQUESTED | CONFIRMED), 3);
        assert_eq!(severity(WARNING_INDICATOR_REQUESTED | PENDING), 3);
        // Permanent: testFailed and confirmed.
        assert_eq!(classify(TEST_FAILED | CONFIRMED), Some(DtcClass::Permanent));
        assert_eq!(severity(TEST_FAILED | CONFIRMED), 2);
        // Sporadic: not testFailed, confirmed or testFailedSinceLastClear.
        assert_eq!(classify(CONFIRMED), Some(DtcClass::Sporadic));
        assert_eq!(severity(CONFIRMED), 2);
        assert_eq!(severity(TEST_FAILED_SINCE_LAST_CLEAR), 2);
        // Potential: testFailed, testFailedThisOperationCycle or pending.
        assert_eq!(classify(PENDING), Some(DtcClass::Potential));
        assert_eq!(severity(PENDING), 1);
        assert_eq!(severity(TEST_FAILED), 1);
        assert_eq!(severity(TEST_FAILED_THIS_OPERATION_CYCLE), 1);
        // A code with no class.
        assert_eq!(classify(0), None);
        assert_eq!(severity(0), 1);
        let info = empty.dtc_info(&code, CONFIRMED);
        assert!(!info.from_catalog);
        assert_eq!(info.description, "P1xxx manufacturer-specific powertrain");
    }

    // A catalog severity overrides the default, even when bit 7 is set.
    #[test]
    fn catalog_severity_overrides_the_default() {
        let c = Catalog::parse_csv(&file(&["dtc,P0420,,,,,Catalyst,1,,,,"])).unwrap();
        let info = c.dtc_info(
            &dtc("P0420"),
            status_bit::WARNING_INDICATOR_REQUESTED | status_bit::TEST_FAILED,
        );
        assert_eq!(
            info,
            DtcInfo {
                description: "Catalyst".into(),
                severity: 1,
                from_catalog: true
            }
        );
    }

    // R-LEAD-DTC / R-LEAD-REV: the exact code beats a prefix, the longest
    // prefix wins, and the code with its failure type beats the bare code.
    #[test]
    fn most_specific_dtc_entry_wins() {
        let c = Catalog::parse_csv(&file(&[
            "service,S1,,One,1.00,0,,,,,,",
            "service,S2,,Two,1.00,0,,,,,,",
            "service,S3,,Three,1.00,0,,,,,,",
            "dtc,P*,S1,,,,All powertrain,1,,,,",
            "dtc,P03*,S2,,,,Ignition family,2,,,,",
            "dtc,P030*,,,,,Misfire family,2,,,,",
            "dtc,P0301,S3,,,,Cylinder 1 misfire,3,,,,",
            "dtc,U0123,,,,,Lost yaw rate module,2,,,,",
            "dtc,U0123-1C,,,,,Yaw rate module supply voltage out of range,3,,,,",
        ]))
        .unwrap();
        let text = |s: &str| c.dtc_info(&dtc(s), 0).description;
        let service = |s: &str| {
            c.service_for(LeadType::ErrorCode, &code_subject(s))
                .map(|s| s.code.clone())
        };
        assert_eq!(text("P0301"), "Cylinder 1 misfire");
        // Failure types fall back to the bare code.
        assert_eq!(text("P0301-13"), "Cylinder 1 misfire");
        assert_eq!(text("P0302"), "Misfire family");
        assert_eq!(text("P0351"), "Ignition family");
        assert_eq!(text("P0420"), "All powertrain");
        assert_eq!(
            text("U0123-1C"),
            "Yaw rate module supply voltage out of range"
        );
        assert_eq!(text("U0123"), "Lost yaw rate module");
        assert_eq!(text("U0123-13"), "Lost yaw rate module");
        assert!(!c.dtc_info(&dtc("C0035"), 0).from_catalog);
        // The service comes from the most specific entry that has one.
        assert_eq!(service("P0301").as_deref(), Some("S3"));
        assert_eq!(
            service("P0302").as_deref(),
            Some("S2"),
            "P030* has no service: P03* gives it"
        );
        assert_eq!(service("P0420").as_deref(), Some("S1"));
        assert_eq!(
            service("U0123"),
            None,
            "no entry with a service and no error_code mapping"
        );
    }

    #[test]
    fn dtc_keys_parse_to_canonical_form() {
        let key = |s: &str| DtcKey::parse(s).map(String::from);
        assert_eq!(key("p0301").unwrap(), "P0301");
        assert_eq!(key("U0123-1c").unwrap(), "U0123-1C");
        assert_eq!(
            key("P0301-00").unwrap(),
            "P0301",
            "failure type 00 is no sub-type"
        );
        assert_eq!(key("P03*").unwrap(), "P03*");
        assert_eq!(key("p03xx").unwrap(), "P03*");
        assert_eq!(key("P1XXX").unwrap(), "P1*");
        assert_eq!(key("U*").unwrap(), "U*");
        for bad in [
            "",
            "*",
            "X03*",
            "P4*",
            "P0G*",
            "P0301*",
            "P030",
            "P0301-1",
            "P0301-+1",
            "P0301-1CX",
            "Z0301",
        ] {
            assert!(key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            DtcKey::parse("P03*").unwrap() < DtcKey::parse("P0300").unwrap(),
            "a prefix sorts before its codes"
        );
    }

    // R-LEAD-DTC: the generic description comes from the code's SAE group.
    #[test]
    fn sae_group_of_p0301_is_ignition_or_misfire() {
        assert_eq!(sae_group(&dtc("P0301")), "P03xx ignition system or misfire");
        assert_eq!(sae_group(&dtc("P0171")), "P01xx fuel and air metering");
        assert_eq!(sae_group(&dtc("P0A80")), "P0Axx hybrid propulsion");
        assert_eq!(sae_group(&dtc("P0740")), "P07xx transmission");
        assert_eq!(
            sae_group(&dtc("P2002")),
            "P20xx fuel and air metering and auxiliary emission controls"
        );
        assert_eq!(
            sae_group(&dtc("P1234")),
            "P1xxx manufacturer-specific powertrain"
        );
        assert_eq!(
            sae_group(&dtc("U0100")),
            "U01xx lost communication with a module"
        );
        assert_eq!(
            sae_group(&dtc("U0001")),
            "U00xx network electrical (communication bus)"
        );
        assert_eq!(
            sae_group(&dtc("C0035")),
            "C0xxx chassis (brakes, steering, suspension)"
        );
        assert_eq!(
            sae_group(&dtc("B0001")),
            "B00xx body, occupant restraints (airbag)"
        );
        assert_eq!(
            sae_group(&dtc("U3000")),
            "U3xxx network communication (SAE reserved)"
        );
    }

    // Every letter, digit and group character names its own code range.
    #[test]
    fn every_sae_group_has_a_text() {
        for first in 0..=u8::MAX {
            let d = Dtc([first, 0x42, 0]);
            let text = sae_group(&d);
            let code = d.base_code();
            let (label, rest) = text.split_once(' ').unwrap();
            assert!(
                label == format!("{}xx", &code[..3]) || label == format!("{}xxx", &code[..2]),
                "{code}: {text}"
            );
            assert!(rest.len() > 5, "{code}: {text}");
        }
    }

    #[test]
    fn failure_types_are_named() {
        assert_eq!(failure_type_text(0x00), None);
        assert_eq!(
            failure_type_text(0x1C),
            Some("circuit voltage out of range")
        );
        assert_eq!(failure_type_text(0x13), Some("circuit open"));
        assert_eq!(
            failure_type_text(0x1A),
            Some("circuit resistance below threshold")
        );
        assert_eq!(
            failure_type_text(0xF3),
            Some("manufacturer-specific failure type")
        );
        assert_eq!(failure_type_text(0xB0), Some("reserved failure type"));
        assert!((0..=u8::MAX)
            .skip(1)
            .all(|ft| failure_type_text(ft).is_some()));
    }

    // R-LEAD-REV: labour hours x the workshop's rate + parts:
    // 1.25 h x 95.00/h + 180.00 = 298.75.
    #[test]
    fn estimate_is_labour_times_rate_plus_parts() {
        let c = Catalog::parse_csv(&file(&[
            "service,IGN,,Ignition,1.25,180.00,,,,,,",
            "service,ODD,,Odd,0.33,0,,,,,,",
            "lamp,1,IGN,,,,,,,,,",
            "lead_type,warning_lamp,ODD,,,,,,,,,",
        ]))
        .unwrap();
        assert_eq!(
            c.estimate_cents(LeadType::WarningLamp, &Subject::Lamp(1), 9_500),
            Some(29_875)
        );
        // 0.33 h x 95.01/h = 31.3533: rounded to the cent.
        assert_eq!(
            c.estimate_cents(LeadType::WarningLamp, &Subject::Lamp(2), 9_501),
            Some(3_135)
        );
        // 0.33 h x 95.05/h = 31.3665: rounded half up.
        assert_eq!(
            c.estimate_cents(LeadType::WarningLamp, &Subject::Lamp(2), 9_505),
            Some(3_137)
        );
        assert_eq!(
            c.estimate_cents(LeadType::LowBattery, &Subject::None, 9_500),
            None
        );
        assert_eq!(
            c.estimate_cents(LeadType::WarningLamp, &Subject::Lamp(1), u64::MAX),
            Some(u64::MAX)
        );
    }

    // R-LEAD-REV: lamps by lamp id, falling back to the lead type; error codes
    // by code, falling back to the lead type; other leads by type.
    #[test]
    fn service_for_falls_back_to_the_lead_type() {
        let c = Catalog::parse_csv(&file(&[
            "service,LAMP-GENERIC,,Generic lamp check,0.5,0,,,,,,",
            "service,OIL,,Oil,1,25,,,,,,",
            "service,DIAG,,Diagnosis,0.5,0,,,,,,",
            "service,BATT,,Battery,0.5,145,,,,,,",
            "lead_type,warning_lamp,LAMP-GENERIC,,,,,,,,,",
            "lead_type,user_lamp,LAMP-GENERIC,,,,,,,,,",
            "lead_type,error_code,DIAG,,,,,,,,,",
            "lead_type,low_battery,BATT,,,,,,,,,",
            "lamp,3,OIL,,,,,,,,,",
            "dtc,P0524,OIL,,,,,,,,,",
        ]))
        .unwrap();
        let code = |ty, subject: &Subject| c.service_for(ty, subject).map(|s| s.code.as_str());
        assert_eq!(code(LeadType::WarningLamp, &Subject::Lamp(3)), Some("OIL"));
        assert_eq!(code(LeadType::UserLamp, &Subject::Lamp(3)), Some("OIL"));
        assert_eq!(
            code(LeadType::WarningLamp, &Subject::Lamp(4)),
            Some("LAMP-GENERIC")
        );
        assert_eq!(
            code(LeadType::ErrorCode, &code_subject("P0524")),
            Some("OIL")
        );
        assert_eq!(
            code(LeadType::ErrorCode, &code_subject("P0525")),
            Some("DIAG")
        );
        assert_eq!(code(LeadType::LowBattery, &Subject::None), Some("BATT"));
        assert_eq!(code(LeadType::Disconnected, &Subject::None), None);
    }

    // docs/catalog.md: RFC 4180 quoting, so descriptions may hold commas and quotes.
    #[test]
    fn quoted_fields_hold_commas_quotes_and_blanks() {
        let text = format!(
            "{HEADER}\r\n\
             service,IGN,,\"Ignition, coils and plugs\",1.25,180.00,,,,,,\r\n\
             dtc,P0420,IGN,,,, \"Catalyst \"\"efficiency\"\", bank 1\" ,2,,,,\r\n\
             \r\n\
             ,,,,,,,,,,,\r\n"
        );
        let c = Catalog::parse_csv(&text).unwrap();
        assert_eq!(c.service("ign").unwrap().name, "Ignition, coils and plugs");
        assert_eq!(
            c.dtc_info(&dtc("P0420"), 0).description,
            "Catalyst \"efficiency\", bank 1"
        );
        assert_eq!(c.rows(), 2, "blank lines and empty rows are skipped");
    }

    // Columns may come in any order, and unused ones may be left out.
    #[test]
    fn header_columns_in_any_order() {
        let c = Catalog::parse_csv("Brand,KEY,kind\nSkoda,TMB,brand\n").unwrap();
        assert_eq!(c.brand_of(&vin("TMBJG7NE0L0000001")), Some("Skoda"));
    }

    // Each error kind is refused with its row number and column.
    #[test]
    fn each_error_is_reported_with_its_row() {
        single_error(
            &file(&["spare_part,X,,,,,,,,,,"]),
            2,
            "column kind: unknown kind 'spare_part'",
        );
        single_error(
            &file(&["service,X,,Name,one,0,,,,,,"]),
            2,
            "column labour_hours: 'one' is not a number",
        );
        single_error(&file(&["service,X,,Name,\"1,25\",0,,,,,,"]), 2, "dot");
        single_error(&file(&["service,X,,Name,1.255,0,,,,,,"]), 2, "two decimals");
        single_error(
            &file(&["service,X,,Name,-1,0,,,,,,"]),
            2,
            "column labour_hours",
        );
        single_error(&file(&["service,X,,Name,125,0,,,,,,"]), 2, "100 hours");
        single_error(
            &file(&["service,X,,Name,1,12.3.4,,,,,,"]),
            2,
            "column parts_price",
        );
        single_error(
            &file(&["dtc,P0420,,,,,Catalyst,4,,,,"]),
            2,
            "column severity: severity '4' is out of range",
        );
        single_error(
            &file(&["dtc,P0420,,,,,Catalyst,0,,,,"]),
            2,
            "column severity",
        );
        single_error(
            &file(&["dtc,P0420,,,,,Catalyst,,,,,"]),
            2,
            "column severity: is empty",
        );
        single_error(
            &file(&["dtc,P0420,,,,,,2,,,,"]),
            2,
            "column description: is empty",
        );
        single_error(
            &file(&["dtc,P0420,,,,,,,,,,"]),
            2,
            "column service: is empty",
        );
        single_error(
            &file(&["lead_type,broken_lamp,DIAG,,,,,,,,,"]),
            2,
            "unknown lead type 'broken_lamp'",
        );
        single_error(
            &file(&["dtc,Q0420,DIAG,,,,,,,,,"]),
            2,
            "column key: 'Q0420' is not a DTC",
        );
        single_error(
            &file(&["lamp,0,DIAG,,,,,,,,,"]),
            2,
            "column key: '0' is not a lamp id",
        );
        single_error(&file(&["lamp,256,DIAG,,,,,,,,,"]), 2, "lamp id");
        single_error(&file(&["brand,WOL,,,,,,,Opel,,,"]), 2, "not a WMI");
        single_error(&file(&["interval,,,,,,,,Ford,,0,12"]), 2, "column km");
        single_error(
            &file(&["interval,,,,,,,,Ford,,20000,12.5"]),
            2,
            "column months",
        );
        single_error(
            &file(&["lamp,3,NO-SUCH-JOB,,,,,,,,,"]),
            2,
            "service 'NO-SUCH-JOB' is defined neither",
        );
        single_error(
            &file(&["brand,WVW,,,,,,,Volkswagen,,,", "brand,wvw,,,,,,,VW,,,"]),
            3,
            "duplicate brand WVW, already on row 2",
        );
        single_error(
            &file(&[
                "interval,,,,,,,,Ford,,20000,12",
                "interval,,,,,,,,FORD,,30000,24",
            ]),
            3,
            "duplicate interval",
        );
        single_error(
            &file(&["brand,WVW,,,,,,,Volkswagen,,"]),
            2,
            "has 11 columns, the header has 12",
        );
        single_error(
            &file(&["brand,WVW,DIAG,,,,,,Volkswagen,,,"]),
            2,
            "column service: is not used by a brand row",
        );
        single_error(
            &file(&["dtc,P0420,,,,,\"Catalyst\nbank 1\",2,,,,"]),
            2,
            "line break",
        );
        single_error(
            &file(&["dtc,P0420,,,,,\"Catalyst\"x,2,,,,"]),
            2,
            "text after a closing quote",
        );
        single_error(
            &file(&["dtc,P0420,,,,,\"Catalyst,2,,,,"]),
            2,
            "never closed",
        );
        single_error(
            &format!("{HEADER},colour\nbrand,WVW,,,,,,,Volkswagen,,,,\n"),
            1,
            "unknown column 'colour'",
        );
        single_error("brand,WVW,,,,,,,Volkswagen,,,\n", 1, "missing header");
        single_error("kind;key;brand\nbrand;WVW;Volkswagen\n", 1, "semicolons");
        single_error("", 1, "empty");
    }

    // A service row refused for its own fault does not make every row that
    // references it fail too.
    #[test]
    fn a_reference_to_a_refused_service_is_not_reported_twice() {
        let errors = Catalog::parse_csv(&file(&[
            "service,NEW,,New job,lots,0,,,,,,",
            "lamp,3,NEW,,,,,,,,,",
        ]))
        .unwrap_err();
        assert_eq!(rows_of(&errors), vec![2]);
    }

    // All bad rows are reported, each with its number, and no catalog.
    #[test]
    fn one_bad_row_among_good_ones_refuses_the_file() {
        let text = file(&[
            "brand,WVW,,,,,,,Volkswagen,,,",
            "brand,WAU,,,,,,,Audi,,,",
            "dtc,P0420,,,,,Catalyst,9,,,,",
            "brand,TMB,,,,,,,Skoda,,,",
        ]);
        let errors = Catalog::parse_csv(&text).unwrap_err();
        assert_eq!(rows_of(&errors), vec![4]);

        let text = file(&[
            "dtc,P0420,,,,,Catalyst,9,,,,",
            "brand,TMB,,,,,,,Skoda,,,",
            "lamp,x,DIAG,,,,,,,,,",
        ]);
        assert_eq!(rows_of(&Catalog::parse_csv(&text).unwrap_err()), vec![2, 4]);

        // Several bad columns of one row are each reported.
        let errors = Catalog::parse_csv(&file(&["service,a b,,,x,y,,,,,,"])).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().all(|e| e.row == 2));
    }

    // A record with a quoted line break is numbered by the line it starts
    // on, and the lines after it keep their own numbers.
    #[test]
    fn row_numbers_are_file_lines() {
        let text =
            format!("\n{HEADER}\n\nservice,A,,\"Two\nlines\",1,0,,,,,,\nlamp,1,NOPE,,,,,,,,,\n");
        let errors = Catalog::parse_csv(&text).unwrap_err();
        assert_eq!(rows_of(&errors), vec![4, 6], "{errors:?}");
    }

    #[test]
    fn non_utf8_and_oversized_files_are_refused() {
        let mut bytes = file(&["brand,WVW,,,,,,,Volkswagen,,,"]).into_bytes();
        bytes.extend_from_slice(b"brand,TMB,,,,,,,\xA6koda,,,\n");
        let errors = Catalog::parse_csv_bytes(&bytes).unwrap_err();
        assert_eq!(rows_of(&errors), vec![3]);
        assert!(errors[0].message.contains("not UTF-8"));

        let utf16 = [0xFF, 0xFE, b'k', 0, b'i', 0];
        assert!(Catalog::parse_csv_bytes(&utf16).unwrap_err()[0]
            .message
            .contains("UTF-16"));

        let mut big = file(&[]).into_bytes();
        big.resize(MAX_FILE_BYTES + 1, b'\n');
        let errors = Catalog::parse_csv_bytes(&big).unwrap_err();
        assert_eq!(rows_of(&errors), vec![0]);
        assert!(errors[0].message.contains("5 MB"));
        assert_eq!(
            rows_of(&Catalog::parse_csv(std::str::from_utf8(&big).unwrap()).unwrap_err()),
            vec![0]
        );

        // A byte-order mark is not part of the header.
        let mut bom = "\u{FEFF}".to_string();
        bom.push_str(&file(&["brand,WVW,,,,,,,Volkswagen,,,"]));
        assert_eq!(Catalog::parse_csv_bytes(bom.as_bytes()).unwrap().rows(), 1);
    }

    // to_csv exports in the import format: parse_csv(to_csv(c)) == c.
    #[test]
    fn csv_round_trip() {
        let builtin = Catalog::builtin();
        assert_eq!(Catalog::parse_csv(&builtin.to_csv()), Ok(builtin.clone()));
        let custom = Catalog::parse_csv(&file(&[
            "service,X,,\"Check, \"\"quoted\"\"\",0.05,0.5,,,,,,",
            "dtc,U0123-1C,X,,,,\"Lost, \"\"really\"\" lost\",3,,,,",
            "dtc,B1*,X,,,,,,,,,",
            "interval,,,,,,,,Audi,A3 Sportback,15000,12",
        ]))
        .unwrap();
        let exported = custom.to_csv();
        assert!(exported.starts_with(&format!("{HEADER}\n")));
        assert!(
            exported.contains("service,X,,\"Check, \"\"quoted\"\"\",0.05,0.50,"),
            "{exported}"
        );
        assert_eq!(Catalog::parse_csv(&exported), Ok(custom));
    }

    // The catalog is stored and synced with serde; JSON must carry its maps.
    #[test]
    fn serde_round_trip() {
        let builtin = Catalog::builtin();
        let json = serde_json::to_string(&builtin).unwrap();
        assert_eq!(serde_json::from_str::<Catalog>(&json).unwrap(), builtin);
        let bytes = postcard::to_allocvec(&builtin).unwrap();
        assert_eq!(postcard::from_bytes::<Catalog>(&bytes).unwrap(), builtin);
        // A DTC key is checked when it is deserialized.
        assert!(serde_json::from_str::<DtcKey>("\"X123\"").is_err());
    }

    // R-VEH-4: the brand comes from the VIN's first three characters.
    #[test]
    fn brand_of_by_wmi() {
        let c = Catalog::builtin();
        assert_eq!(c.brand_of(&vin("WVWZZZAUZLW000001")), Some("Volkswagen"));
        assert_eq!(c.brand_of(&vin("WV2ZZZ7HZLH000001")), Some("Volkswagen"));
        assert_eq!(c.brand_of(&vin("wvwzzzauzlw000001")), Some("Volkswagen"));
        assert_eq!(c.brand_of(&vin("TMBJG7NE0L0000001")), Some("Skoda"));
        assert_eq!(c.brand_of(&vin("W0LZZZ0000000000A")), Some("Opel"));
        assert_eq!(c.brand_of(&vin("1G1ZZZ00000000000")), None);
        assert!(c.brand_names().contains("Volkswagen"));
    }

    // R-REM-1: the model's own interval, else the brand's.
    #[test]
    fn service_interval_by_model_then_brand() {
        let c = Catalog::builtin();
        assert_eq!(
            c.service_interval("Ford", Some("Transit")),
            Some(&ServiceInterval {
                km: 30_000,
                months: 12
            })
        );
        assert_eq!(
            c.service_interval("ford", Some("TRANSIT")),
            Some(&ServiceInterval {
                km: 30_000,
                months: 12
            })
        );
        assert_eq!(
            c.service_interval("Ford", Some("Focus")),
            Some(&ServiceInterval {
                km: 20_000,
                months: 12
            })
        );
        assert_eq!(
            c.service_interval("Ford", None),
            Some(&ServiceInterval {
                km: 20_000,
                months: 12
            })
        );
        assert_eq!(c.service_interval("Lada", None), None);
    }

    // R-CAT-1: an import is an upsert; rows not in it are kept.
    #[test]
    fn merge_upserts_every_row() {
        let mut c = Catalog::builtin();
        let before = c.rows();
        let update = Catalog::import_csv(
            file(&[
                "service,IGNITION,,Ignition and misfire repair,1.50,200.00,,,,,,",
                "service,HYBRID,,Hybrid system check,2.00,0,,,,,,",
                "dtc,P0A80,HYBRID,,,,Replace hybrid battery pack,3,,,,",
                "lamp,15,HYBRID,,,,,,,,,",
                "interval,,,,,,,,VOLKSWAGEN,,25000,12",
            ])
            .as_bytes(),
            &c,
        )
        .unwrap();
        assert_eq!(update.rows(), 5);
        c.merge(update);
        assert_eq!(
            c.rows(),
            before + 2,
            "two new rows (HYBRID, P0A80), three replaced"
        );
        assert_eq!(c.service("IGNITION").unwrap().labour_hundredths, 150);
        assert_eq!(
            c.service_for(LeadType::WarningLamp, &Subject::Lamp(15))
                .unwrap()
                .code,
            "HYBRID"
        );
        assert_eq!(
            c.service_interval("Volkswagen", None),
            Some(&ServiceInterval {
                km: 25_000,
                months: 12
            })
        );
        assert_eq!(
            c.service_interval("Volkswagen", Some("Crafter")),
            Some(&ServiceInterval {
                km: 20_000,
                months: 12
            })
        );
        assert_eq!(
            c.intervals
                .keys()
                .filter(|b| b.eq_ignore_ascii_case("volkswagen"))
                .count(),
            1
        );
        // The merged catalog in use still round-trips.
        assert_eq!(Catalog::parse_csv(&c.to_csv()), Ok(c));
    }

    // A reference is good when the catalog being updated defines the service,
    // even when the built-in one does not.
    #[test]
    fn import_checks_references_against_the_current_catalog() {
        let mut current = Catalog::builtin();
        current
            .merge(Catalog::parse_csv(&file(&["service,HYBRID,,Hybrid check,2,0,,,,,,"])).unwrap());
        let mapping = file(&["lamp,15,HYBRID,,,,,,,,,"]);
        assert!(Catalog::import_csv(mapping.as_bytes(), &current).is_ok());
        assert!(Catalog::import_csv(mapping.as_bytes(), &Catalog::builtin()).is_err());
        assert!(
            Catalog::parse_csv(&file(&["lamp,15,DIAG,,,,,,,,,"])).is_ok(),
            "DIAG is built in"
        );
    }

    // A catalog that arrives by sync is checked like a file before a merge.
    #[test]
    fn validate_against_checks_a_synced_catalog() {
        let base = Catalog::builtin();
        let good = Catalog::parse_csv(&file(&["lamp,3,BRAKES,,,,,,,,,"])).unwrap();
        assert!(good.validate_against(&base).is_empty());

        let mut json = serde_json::to_value(&good).unwrap();
        json["lamps"]["3"] = "NO-SUCH-JOB".into();
        let dangling: Catalog = serde_json::from_value(json).unwrap();
        let errors = dangling.validate_against(&base);
        assert_eq!(
            rows_of(&errors),
            vec![2],
            "line 2 of its export: {errors:?}"
        );

        let mut json =
            serde_json::to_value(Catalog::parse_csv(&file(&["dtc,P0420,,,,,Cat,2,,,,"])).unwrap())
                .unwrap();
        json["dtcs"]["P0420"]["text"]["severity"] = 7.into();
        let bad_severity: Catalog = serde_json::from_value(json).unwrap();
        assert!(bad_severity.validate_against(&base)[0]
            .message
            .contains("severity"));

        let mut json = serde_json::to_value(&good).unwrap();
        json["lamps"]["3"] = "brakes".into();
        let lower_case: Catalog = serde_json::from_value(json).unwrap();
        assert_eq!(rows_of(&lower_case.validate_against(&base)), vec![0]);
    }

    proptest! {
        // Any one-line text survives export and import unchanged.
        #[test]
        fn any_text_round_trips(name in "[^\\p{Cc}]{1,60}", description in "[^\\p{Cc}]{1,100}") {
            let (name, description) = (name.trim().to_string(), description.trim().to_string());
            prop_assume!(!name.is_empty() && !description.is_empty());
            let mut c = Catalog::default();
            c.insert(ParsedRow::Service(ServiceType {
                code: "X".into(), name, labour_hundredths: 125, parts_cents: 18_000,
            }));
            c.insert(ParsedRow::Dtc(
                DtcKey::parse("P0301").unwrap(),
                DtcEntry { service: Some("X".into()), text: Some(DtcText { description, severity: 2 }) },
            ));
            prop_assert_eq!(Catalog::parse_csv(&c.to_csv()), Ok(c));
        }

        // The parser refuses or accepts any bytes; it never panics.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Catalog::parse_csv_bytes(&bytes);
            let mut text = format!("{HEADER}\n").into_bytes();
            text.extend_from_slice(&bytes);
            if let Err(errors) = Catalog::parse_csv_bytes(&text) {
                prop_assert!(errors.iter().all(|e| e.row <= text.len()));
            }
        }

        // Shuffled CSV punctuation in rows never panics either.
        #[test]
        fn csv_punctuation_never_panics(body in "[a-z0-9\",\r\n *.-]{0,300}") {
            let _ = Catalog::parse_csv(&format!("{HEADER}\n{body}"));
        }
    }
}
