//! Customers and their vehicles from the DMS / point of sale, and back
//! (R-VEH-1, R-SRC-1): the CSV file format (docs/customers.md), its
//! parsing with a row-numbered report of every bad row, the import as one
//! transaction (a bad file changes nothing, a dry run changes nothing, the
//! same file twice changes nothing the second time), the export in the same
//! format, and the staff's changes to customers, vehicles, sources, spend
//! and invitations ([`CustomerAction`]). Ingest, the one writer, calls
//! [`import`] and [`apply`]; reads go straight to the store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::catalog::RowError;
use crate::domain::customer::{
    check, check_source_name, day_start, format_date, mapping_done, source_key, Customer,
    Invitation, InvitationEvent, InvitationRules, MainCategory, MarketingSpend, Month,
    RegisteredVehicle, Source, SourceError, SourceOrigin, SourceReport, VehicleOrigin,
    MAX_SPEND_CENTS,
};
use crate::leads::ActionError;
use crate::link::message::Vin;
use crate::store::customers::{CUSTOMER_IDS, INVITATION_IDS};
use crate::store::{Store, StoreError, WriteTx};

/// Largest file accepted: about 50,000 rows, parsed in memory on a
/// Raspberry Pi, and small enough to travel to a running appliance in one
/// control-socket request.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Most data rows in one file.
pub const MAX_ROWS: usize = 100_000;

/// The columns of the format, in the order the export writes them.
pub const COLUMNS: [&str; 11] = [
    "customer_id",
    "name",
    "phone",
    "email",
    "source",
    "customer_since",
    "vin",
    "brand",
    "model",
    "model_year",
    "fleet",
];
/// Written by the export (the dongle heard saying the VIN, empty when not
/// connected); ignored by the import, since only a dongle can say it.
pub const DEVICE_COLUMN: &str = "device_id";

/// How a row names its customer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CustomerRef {
    /// The DMS's id.
    Dms(String),
    /// `#N`: Forecourt's customer N (one made in Forecourt, exported).
    Own(u64),
}

impl fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomerRef::Dms(id) => f.write_str(id),
            CustomerRef::Own(n) => write!(f, "#{n}"),
        }
    }
}

/// A customer's details as one row gives them. Empty cells are `None`:
/// they keep what Forecourt has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerRow {
    pub id: CustomerRef,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub source: Option<String>,
    pub since_ms: Option<u64>,
}

impl CustomerRow {
    /// The first field in which two rows of one customer differ.
    fn differs_from(&self, other: &CustomerRow) -> Option<&'static str> {
        let key = |s: &Option<String>| s.as_deref().map(source_key);
        [
            ("name", self.name != other.name),
            ("phone", self.phone != other.phone),
            ("email", self.email != other.email),
            ("source", key(&self.source) != key(&other.source)),
            ("customer_since", self.since_ms != other.since_ms),
        ]
        .into_iter()
        .find_map(|(name, differs)| differs.then_some(name))
    }
}

/// A vehicle as one row gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VehicleRow {
    pub vin: Vin,
    pub owner: Option<CustomerRef>,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub model_year: Option<u16>,
    pub fleet: Option<String>,
}

/// A checked file: each customer once (in file order, with the row it
/// first appears on) and each vehicle once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerFile {
    pub rows: usize,
    pub customers: Vec<(usize, CustomerRow)>,
    pub vehicles: Vec<(usize, VehicleRow)>,
}

/// Where the check of a file is: `done` of `total` data rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// Rows between two progress reports.
const PROGRESS_EVERY: usize = 1_000;

/// Counts of one kind of record an import makes, changes or finds as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub new: usize,
    pub changed: usize,
    pub unchanged: usize,
}

impl Tally {
    fn count(&mut self, new: bool, changed: bool) {
        match (new, changed) {
            (true, _) => self.new += 1,
            (false, true) => self.changed += 1,
            (false, false) => self.unchanged += 1,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} new, {} changed, {} unchanged",
            self.new, self.changed, self.unchanged
        )
    }
}

/// What an import did, or would do on a dry run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub dry_run: bool,
    /// Data rows in the file.
    pub rows: usize,
    pub customers: Tally,
    pub vehicles: Tally,
    /// Sources the file names that Forecourt did not have (they are made,
    /// unmapped: map them, or use "mapping done").
    pub sources_new: Vec<String>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "dry run, nothing written: would import"
        } else {
            "imported"
        };
        write!(
            f,
            "{verb} {} rows: customers {}; vehicles {}",
            self.rows, self.customers, self.vehicles
        )?;
        if self.sources_new.is_empty() {
            write!(f, "; no new sources")
        } else {
            let n = self.sources_new.len();
            let plural = if n == 1 { "" } else { "s" };
            write!(
                f,
                "; {n} new source{plural}: {}",
                self.sources_new.join(", ")
            )
        }
    }
}

/// Every bad row as one message, the way the CLI and the UI show it.
pub fn rows_message(rows: &[RowError]) -> String {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    format!(
        "the customer file was not imported (nothing changed):\n{}",
        text.join("\n")
    )
}

// ---- Reading the file ----

/// Checks a file's bytes: size first (nothing is decoded past the limit),
/// then the encoding, naming the line of the first bad byte.
pub fn decode(bytes: &[u8]) -> Result<&str, Vec<RowError>> {
    let whole = |message: String| vec![RowError { row: 0, message }];
    if bytes.len() > MAX_FILE_BYTES {
        return Err(whole(format!(
            "the file is {} bytes: at most {MAX_FILE_BYTES} bytes (8 MB) are accepted; split it",
            bytes.len()
        )));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(vec![RowError {
            row: 1,
            message: "the file is UTF-16 text: save it as \"CSV UTF-8\" (comma separated)".into(),
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

/// One CSV record: the line it starts on and its fields.
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// RFC 4180 records, with LF, CRLF or CR line ends. A malformed record is
/// an error for its own line; the rest still parse, so every bad row is
/// reported at once.
fn records(text: &str) -> Vec<Result<Record, RowError>> {
    let b = text.as_bytes();
    let (mut out, mut pos, mut line) = (Vec::new(), 0usize, 1usize);
    while pos < b.len() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut error = None;
        loop {
            let mut field = String::new();
            let mut p = pos;
            while p < b.len() && matches!(b[p], b' ' | b'\t') {
                p += 1;
            }
            if b.get(p) == Some(&b'"') {
                p += 1;
                let mut closed = false;
                let mut seg = p;
                while p < b.len() {
                    match b[p] {
                        b'"' if b.get(p + 1) == Some(&b'"') => {
                            field.push_str(&text[seg..=p]);
                            p += 2;
                            seg = p;
                        }
                        b'"' => {
                            field.push_str(&text[seg..p]);
                            p += 1;
                            closed = true;
                            break;
                        }
                        b'\n' => {
                            line += 1;
                            p += 1;
                        }
                        b'\r' => {
                            if b.get(p + 1) != Some(&b'\n') {
                                line += 1;
                            }
                            p += 1;
                        }
                        _ => p += 1,
                    }
                }
                if !closed {
                    error = Some(format!(
                        "column {}: a quoted field is never closed (is the file cut short?)",
                        fields.len() + 1
                    ));
                    pos = b.len();
                    break;
                }
                while p < b.len() && matches!(b[p], b' ' | b'\t') {
                    p += 1;
                }
                if !matches!(b.get(p), None | Some(b',' | b'\n' | b'\r')) {
                    error = Some(format!(
                        "column {}: text after a closing quote (a quote inside quotes is written twice: \"\")",
                        fields.len() + 1
                    ));
                    while p < b.len() && !matches!(b[p], b'\n' | b'\r') {
                        p += 1;
                    }
                }
            } else {
                while p < b.len() && !matches!(b[p], b',' | b'\n' | b'\r') {
                    p += 1;
                }
                field.push_str(text[pos..p].trim());
            }
            fields.push(field);
            pos = p;
            if b.get(pos) == Some(&b',') {
                pos += 1;
                continue;
            }
            break;
        }
        match b.get(pos) {
            Some(b'\r') if b.get(pos + 1) == Some(&b'\n') => pos += 2,
            Some(b'\r' | b'\n') => pos += 1,
            _ => {}
        }
        line += 1;
        out.push(match error {
            Some(message) => Err(RowError {
                row: start_line,
                message,
            }),
            None => Ok(Record {
                line: start_line,
                fields,
            }),
        });
    }
    out
}

/// Column positions named by the header.
struct Header {
    index: HashMap<&'static str, usize>,
    width: usize,
}

impl Header {
    fn parse(r: &Record) -> Result<Header, Vec<RowError>> {
        let mut index = HashMap::new();
        let mut errors = Vec::new();
        let err = |message: String| RowError {
            row: r.line,
            message,
        };
        for (i, raw) in r.fields.iter().enumerate() {
            let name = raw.trim().to_ascii_lowercase();
            let known = COLUMNS.iter().chain([&DEVICE_COLUMN]).find(|c| **c == name);
            match known {
                Some(c) if index.contains_key(c) => {
                    errors.push(err(format!("header: column {c} appears twice")))
                }
                Some(c) => {
                    index.insert(*c, i);
                }
                None => errors.push(err(format!(
                    "header: unknown column {raw:?} (the columns are {}; see docs/customers.md)",
                    COLUMNS.join(", ")
                ))),
            }
        }
        let has = |c| index.contains_key(c);
        if !(has("vin") || (has("customer_id") && has("name"))) {
            errors.push(err(
                "header: the file needs a vin column, or customer_id and name columns (is the header row missing?)"
                    .into(),
            ));
        }
        if errors.is_empty() {
            Ok(Header {
                index,
                width: r.fields.len(),
            })
        } else {
            Err(errors)
        }
    }

    /// The cell of column `name`, `None` when empty or not in the file.
    fn cell<'r>(&self, r: &'r Record, name: &str) -> Option<&'r str> {
        let v = r.fields.get(*self.index.get(name)?)?.trim();
        (!v.is_empty()).then_some(v)
    }
}

/// The errors found in one row so far.
struct RowCheck {
    line: usize,
    errors: Vec<RowError>,
}

impl RowCheck {
    fn bad(&mut self, message: String) {
        self.errors.push(RowError {
            row: self.line,
            message,
        });
    }

    /// A cell checked by `f`; a refused value is noted and is `None`.
    fn field<T>(
        &mut self,
        v: Option<&str>,
        f: impl Fn(&str) -> Result<T, crate::domain::customer::FieldError>,
    ) -> Option<T> {
        match f(v?) {
            Ok(t) => Some(t),
            Err(e) => {
                self.bad(e.0);
                None
            }
        }
    }
}

/// The customer part of a row: with a customer_id, or else no customer
/// cell may be filled.
fn parse_customer(h: &Header, r: &Record, now_ms: u64, rc: &mut RowCheck) -> Option<CustomerRow> {
    let cell = |name| h.cell(r, name);
    let Some(raw_id) = cell("customer_id") else {
        let customer_cells = ["name", "phone", "email", "source", "customer_since"];
        if let Some(c) = customer_cells.iter().find(|c| cell(c).is_some()) {
            rc.bad(format!(
                "{c} is given but customer_id is empty: every customer needs the DMS's id"
            ));
        }
        return None;
    };
    let id = match raw_id.strip_prefix('#') {
        Some(n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => Some(CustomerRef::Own(n)),
            _ => {
                rc.bad(format!(
                    "customer_id {raw_id:?}: # must be followed by Forecourt's customer number"
                ));
                None
            }
        },
        None => rc.field(Some(raw_id), check::dms_id).map(CustomerRef::Dms),
    };
    let name = if cell("name").is_some() {
        rc.field(cell("name"), check::name)
    } else {
        rc.bad("name is empty: every customer needs a name".into());
        None
    };
    let phone = rc.field(cell("phone"), check::phone);
    let email = rc.field(cell("email"), check::email);
    let source = rc.field(cell("source"), |s| {
        check_source_name(s).map_err(|e| crate::domain::customer::FieldError(e.to_string()))
    });
    let since_ms = rc.field(cell("customer_since"), |s| check::since(s, now_ms));
    Some(CustomerRow {
        id: id?,
        name: name?,
        phone,
        email,
        source,
        since_ms,
    })
}

/// The vehicle part of a row: with a vin, or else no vehicle cell may be
/// filled.
fn parse_vehicle(
    h: &Header,
    r: &Record,
    now_ms: u64,
    owner: Option<CustomerRef>,
    rc: &mut RowCheck,
) -> Option<VehicleRow> {
    let cell = |name| h.cell(r, name);
    let Some(vin) = cell("vin") else {
        let vehicle_cells = ["brand", "model", "model_year", "fleet"];
        if let Some(c) = vehicle_cells.iter().find(|c| cell(c).is_some()) {
            rc.bad(format!(
                "{c} is given but vin is empty: a vehicle is known by its VIN"
            ));
        }
        return None;
    };
    let vin = rc.field(Some(vin), check::vin);
    let brand = rc.field(cell("brand"), check::brand);
    let model = rc.field(cell("model"), check::model);
    let model_year = rc.field(cell("model_year"), |y| check::model_year(y, now_ms));
    let fleet = rc.field(cell("fleet"), check::fleet);
    Some(VehicleRow {
        vin: vin?,
        owner,
        brand,
        model,
        model_year,
        fleet,
    })
}

/// Checks one data row: every bad value of it is reported.
fn parse_row(
    h: &Header,
    r: &Record,
    now_ms: u64,
) -> Result<(Option<CustomerRow>, Option<VehicleRow>), Vec<RowError>> {
    let mut rc = RowCheck {
        line: r.line,
        errors: Vec::new(),
    };
    let customer = parse_customer(h, r, now_ms, &mut rc);
    let owner = customer.as_ref().map(|c| c.id.clone());
    let vehicle = parse_vehicle(h, r, now_ms, owner, &mut rc);
    if h.cell(r, "customer_id").is_none() && h.cell(r, "vin").is_none() && rc.errors.is_empty() {
        rc.bad("the row has neither a customer_id nor a vin".into());
    }
    if rc.errors.is_empty() {
        Ok((customer, vehicle))
    } else {
        Err(rc.errors)
    }
}

/// Checks a whole file (docs/customers.md) as of `now_ms`: every bad row is
/// reported, in row order, or the file is returned checked. `progress` is
/// told every thousand rows.
pub fn parse(
    bytes: &[u8],
    now_ms: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<CustomerFile, Vec<RowError>> {
    let text = decode(bytes)?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut all = records(text).into_iter();
    let header = loop {
        match all.next() {
            None => {
                return Err(vec![RowError {
                    row: 1,
                    message: "the file is empty: it needs a header row (docs/customers.md)".into(),
                }])
            }
            Some(Ok(r)) if r.fields.iter().all(|f| f.trim().is_empty()) => continue,
            Some(Ok(r)) => break Header::parse(&r)?,
            Some(Err(e)) => return Err(vec![e]),
        }
    };
    let rows: Vec<Result<Record, RowError>> = all
        .filter(|r| !matches!(r, Ok(r) if r.fields.iter().all(|f| f.trim().is_empty())))
        .collect();
    if rows.len() > MAX_ROWS {
        return Err(vec![RowError {
            row: 0,
            message: format!(
                "the file has {} rows: at most {MAX_ROWS} are accepted; split it",
                rows.len()
            ),
        }]);
    }
    let total = rows.len();
    let mut errors = Vec::new();
    let mut checked = Checked::default();
    for (i, r) in rows.into_iter().enumerate() {
        if i % PROGRESS_EVERY == 0 {
            progress(Progress { done: i, total });
        }
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if r.fields.len() != header.width {
            let cut = if i + 1 == total && r.fields.len() < header.width {
                " (is the file cut short?)"
            } else {
                ""
            };
            errors.push(RowError {
                row: r.line,
                message: format!(
                    "has {} fields, the header has {}{cut}: a comma inside a value must be in double quotes",
                    r.fields.len(),
                    header.width
                ),
            });
            continue;
        }
        match parse_row(&header, &r, now_ms) {
            Ok((c, v)) => checked.add(&r, c, v, &mut errors),
            Err(mut e) => errors.append(&mut e),
        }
    }
    progress(Progress { done: total, total });
    if errors.is_empty() {
        Ok(CustomerFile {
            rows: total,
            customers: checked.customers,
            vehicles: checked.vehicles,
        })
    } else {
        errors.sort_by_key(|e| e.row);
        Err(errors)
    }
}

/// The rows checked so far, with what a later row may not repeat.
#[derive(Default)]
struct Checked {
    customers: Vec<(usize, CustomerRow)>,
    customer_at: HashMap<CustomerRef, usize>,
    vehicles: Vec<(usize, VehicleRow)>,
    vin_at: HashMap<Vin, usize>,
    /// Each row's cells (trimmed, in header order) -> its line.
    row_at: HashMap<Vec<String>, usize>,
}

impl Checked {
    fn add(
        &mut self,
        r: &Record,
        customer: Option<CustomerRow>,
        vehicle: Option<VehicleRow>,
        errors: &mut Vec<RowError>,
    ) {
        let mut bad = |message: String| {
            errors.push(RowError {
                row: r.line,
                message,
            })
        };
        let cells: Vec<String> = r.fields.iter().map(|f| f.trim().to_string()).collect();
        if let Some(first) = self.row_at.get(&cells) {
            bad(format!("repeats row {first}: remove one of them"));
            return;
        }
        self.row_at.insert(cells, r.line);
        if let Some(c) = customer {
            match self.customer_at.get(&c.id) {
                Some(&i) => {
                    let (first, seen) = &self.customers[i];
                    if let Some(field) = c.differs_from(seen) {
                        bad(format!(
                            "customer {} has another {field} than on row {first}: each row of a customer repeats the same details",
                            c.id
                        ));
                    }
                }
                None => {
                    self.customer_at.insert(c.id.clone(), self.customers.len());
                    self.customers.push((r.line, c));
                }
            }
        }
        if let Some(v) = vehicle {
            if let Some(first) = self.vin_at.get(&v.vin) {
                bad(format!(
                    "VIN {} is already on row {first}: one row per vehicle",
                    v.vin
                ));
                return;
            }
            self.vin_at.insert(v.vin, r.line);
            self.vehicles.push((r.line, v));
        }
    }
}

// ---- Importing ----

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}", rows_message(.0))]
    Rows(Vec<RowError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ImportError> for ActionError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Rows(_) => ActionError::Invalid(e.to_string()),
            ImportError::Store(s) => ActionError::Store(s),
        }
    }
}

/// The text an aborted dry run carries out of its transaction.
const DRY_RUN: &str = "dry run: rolled back";

/// Imports a customer file in one transaction: customers by their DMS id,
/// vehicles by VIN, new sources. A value in the file replaces Forecourt's,
/// an empty cell keeps it; nothing is deleted. A dry run does the same
/// work and rolls it back, so its report is exactly what the import would
/// do. Any bad row, found in the file or against the store, changes
/// nothing.
pub fn import(
    store: &Store,
    csv: &str,
    dry_run: bool,
    now_ms: u64,
) -> Result<ImportReport, ImportError> {
    let file = parse(csv.as_bytes(), now_ms, &mut |_| {}).map_err(ImportError::Rows)?;
    let mut report = None;
    let mut row_errors = Vec::new();
    let result = store.write(|tx| {
        let r = write_file(tx, &file, now_ms, &mut row_errors)?;
        if !row_errors.is_empty() {
            return Err(StoreError::Aborted("bad rows".into()));
        }
        let done = ImportReport { dry_run, ..r };
        report = Some(done);
        if dry_run {
            return Err(StoreError::Aborted(DRY_RUN.into()));
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(StoreError::Aborted(_)) if !row_errors.is_empty() => {
            return Err(ImportError::Rows(row_errors))
        }
        Err(StoreError::Aborted(m)) if m == DRY_RUN => {}
        Err(e) => return Err(e.into()),
    }
    report.ok_or_else(|| StoreError::Engine("the import did not run".into()).into())
}

/// Writes a checked file; rows that do not fit the store (an unknown `#N`)
/// go to `errors`.
fn write_file(
    tx: &mut WriteTx<'_>,
    file: &CustomerFile,
    now_ms: u64,
    errors: &mut Vec<RowError>,
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport {
        rows: file.rows,
        ..Default::default()
    };
    let mut ids: HashMap<&CustomerRef, u64> = HashMap::new();
    for (line, row) in &file.customers {
        let existing = match &row.id {
            CustomerRef::Dms(id) => tx.customer_by_dms(id)?,
            CustomerRef::Own(n) => match tx.customer(*n)? {
                Some(c) => Some(c),
                None => {
                    errors.push(RowError {
                        row: *line,
                        message: format!("customer_id #{n}: Forecourt has no customer {n}"),
                    });
                    continue;
                }
            },
        };
        let source = match &row.source {
            Some(name) => Some(source_for_import(tx, name, now_ms, &mut report)?),
            None => None,
        };
        let id = match &existing {
            Some(c) => c.id,
            None => tx.next_id(CUSTOMER_IDS)?,
        };
        let (next, changed) = merge_customer(existing.as_ref(), row, source, id, now_ms);
        report.customers.count(existing.is_none(), changed);
        if changed || existing.is_none() {
            tx.put_customer(&next)?;
        }
        ids.insert(&row.id, next.id);
    }
    for (_, row) in &file.vehicles {
        let existing = tx.registered_vehicle(&row.vin)?;
        let owner = row.owner.as_ref().and_then(|r| ids.get(r).copied());
        if row.owner.is_some() && owner.is_none() {
            continue; // its customer's row was refused above
        }
        let (next, changed) = merge_vehicle(existing.as_ref(), row, owner, now_ms);
        report.vehicles.count(existing.is_none(), changed);
        if changed || existing.is_none() {
            tx.put_registered_vehicle(&next)?;
        }
    }
    Ok(report)
}

/// The source a file names, as Forecourt spells it; one it does not have
/// is made (imported, unmapped) and listed in the report.
fn source_for_import(
    tx: &mut WriteTx<'_>,
    name: &str,
    now_ms: u64,
    report: &mut ImportReport,
) -> Result<String, StoreError> {
    if let Some(s) = tx.source(name)? {
        return Ok(s.name);
    }
    let s = Source::new(name.trim().to_string(), SourceOrigin::Imported, now_ms);
    tx.put_source(&s)?;
    report.sources_new.push(s.name.clone());
    Ok(s.name)
}

/// A customer after a row: new (with `id`), or the stored one with what the
/// row gives; and whether that is a change.
fn merge_customer(
    existing: Option<&Customer>,
    row: &CustomerRow,
    source: Option<String>,
    id: u64,
    now_ms: u64,
) -> (Customer, bool) {
    let dms_id = match &row.id {
        CustomerRef::Dms(d) => Some(d.clone()),
        CustomerRef::Own(_) => existing.and_then(|c| c.dms_id.clone()),
    };
    let Some(old) = existing else {
        let since = row.since_ms.unwrap_or_else(|| day_start(now_ms));
        return (
            Customer {
                id,
                dms_id,
                name: row.name.clone(),
                phone: row.phone.clone(),
                email: row.email.clone(),
                source,
                customer_since_ms: since,
                created_ms: now_ms,
                updated_ms: now_ms,
                version: 1,
            },
            true,
        );
    };
    let mut next = old.clone();
    next.name = row.name.clone();
    next.phone = row.phone.clone().or(next.phone);
    next.email = row.email.clone().or(next.email);
    next.source = source.or(next.source);
    next.customer_since_ms = row.since_ms.unwrap_or(next.customer_since_ms);
    let changed = next != *old;
    if changed {
        next.version += 1;
        next.updated_ms = now_ms;
    }
    (next, changed)
}

/// A vehicle after a row, like [`merge_customer`]. A row naming another
/// customer changes the owner (and unlinks the old owner's invitation).
fn merge_vehicle(
    existing: Option<&RegisteredVehicle>,
    row: &VehicleRow,
    owner: Option<u64>,
    now_ms: u64,
) -> (RegisteredVehicle, bool) {
    let mut next = existing
        .cloned()
        .unwrap_or_else(|| RegisteredVehicle::new(row.vin, VehicleOrigin::Dms, now_ms));
    if owner.is_some() {
        next.change_owner(owner);
    }
    next.brand = row.brand.clone().or(next.brand);
    next.model = row.model.clone().or(next.model);
    next.model_year = row.model_year.or(next.model_year);
    next.fleet = row.fleet.clone().or(next.fleet);
    let changed = existing.is_some_and(|old| next != *old);
    if changed {
        next.version += 1;
        next.updated_ms = now_ms;
    }
    (next, changed)
}

// ---- Exporting ----

/// A CSV field, quoted when it must be.
fn csv_field(out: &mut String, value: &str) {
    let quote = value.contains([',', '"', '\n', '\r'])
        || value.starts_with([' ', '\t'])
        || value.ends_with([' ', '\t']);
    if quote {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

/// Every customer and registered vehicle in the import format, plus the
/// `device_id` column: one row per vehicle with its customer's details,
/// one row for a customer without vehicles, then the vehicles without
/// customer. Importing it back changes nothing.
pub fn export_csv(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    let mut header: Vec<&str> = COLUMNS.to_vec();
    header.push(DEVICE_COLUMN);
    csv_line(&mut out, &header);
    let mut after = None;
    loop {
        let page = store.customers(after, 500)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for c in &page {
            let vehicles = store.vehicles_of_customer(c.id)?;
            if vehicles.is_empty() {
                export_row(store, &mut out, Some(c), None)?;
            }
            for v in &vehicles {
                export_row(store, &mut out, Some(c), Some(v))?;
            }
        }
    }
    let mut after: Option<Vin> = None;
    loop {
        let page = store.registered_vehicles(after.as_ref(), 500)?;
        let Some(last) = page.last() else { break };
        after = Some(last.vin);
        for v in page.iter().filter(|v| v.customer_id.is_none()) {
            export_row(store, &mut out, None, Some(v))?;
        }
    }
    Ok(out)
}

fn export_row(
    store: &Store,
    out: &mut String,
    c: Option<&Customer>,
    v: Option<&RegisteredVehicle>,
) -> Result<(), StoreError> {
    let s = |o: Option<&String>| o.cloned().unwrap_or_default();
    let (id, name, phone, email, source, since) = match c {
        Some(c) => (
            c.file_id(),
            c.name.clone(),
            s(c.phone.as_ref()),
            s(c.email.as_ref()),
            s(c.source.as_ref()),
            format_date(c.customer_since_ms),
        ),
        None => Default::default(),
    };
    let (vin, brand, model, year, fleet, device) = match v {
        Some(v) => (
            v.vin.to_string(),
            s(v.brand.as_ref()),
            s(v.model.as_ref()),
            v.model_year.map(|y| y.to_string()).unwrap_or_default(),
            s(v.fleet.as_ref()),
            store
                .device_of_vin(&v.vin)?
                .map(|d| d.to_string())
                .unwrap_or_default(),
        ),
        None => Default::default(),
    };
    csv_line(
        out,
        &[
            &id, &name, &phone, &email, &source, &since, &vin, &brand, &model, &year, &fleet,
            &device,
        ],
    );
    Ok(())
}

// ---- The staff's changes ----

/// A change to customers, vehicles, sources, spend or invitations, carried
/// out by ingest (the one writer) through [`apply`]. Optional text fields
/// given as `None` or empty clear the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CustomerAction {
    /// Creates a customer (`id` None) or edits one.
    SaveCustomer {
        id: Option<u64>,
        name: String,
        phone: Option<String>,
        email: Option<String>,
        /// A source Forecourt has (any case), or None for unknown.
        source: Option<String>,
        /// `YYYY-MM-DD`; a new customer without it is a customer since today.
        customer_since: Option<String>,
    },
    /// R-SRC-2: sets a customer's source in place (None: unknown).
    SetSource {
        customer_id: u64,
        source: Option<String>,
    },
    /// Registers a vehicle by VIN, or edits one.
    SaveVehicle {
        vin: String,
        customer_id: Option<u64>,
        fleet: Option<String>,
        brand: Option<String>,
        model: Option<String>,
        model_year: Option<u16>,
    },
    /// R-SRC-1: a source made in Forecourt.
    CreateSource {
        name: String,
        category: Option<MainCategory>,
    },
    /// R-SRC-1: maps a source to a main category (None: unmapped).
    MapSource {
        name: String,
        category: Option<MainCategory>,
    },
    /// R-SRC-1: deletes a source no customer has and no spend is booked on.
    DeleteSource { name: String },
    /// R-SRC-1 "mapping done": every unmapped source to "Other new customers".
    MappingDone,
    /// R-SRC-3: the marketing spend of a source for a month (`YYYY-MM`),
    /// in cents; 0 removes it.
    SetSpend {
        source: String,
        month: String,
        cents: u64,
    },
    /// R-VEH-3: invites the vehicle's customer to the app. `at_ms` is when
    /// it was made when sync reports it; None is now.
    Invite { vin: String, at_ms: Option<u64> },
    /// R-VEH-3: something happened to an invitation (the importer reports
    /// it by sync, or the staff enter it); `at_ms` as for `Invite`.
    Invitation {
        id: u64,
        event: InvitationEvent,
        at_ms: Option<u64>,
    },
}

/// What a [`CustomerAction`] produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum CustomerOutcome {
    Customer {
        customer: Customer,
    },
    Vehicle {
        vehicle: RegisteredVehicle,
    },
    Source {
        source: Source,
    },
    /// A source was deleted.
    SourceDeleted {
        name: String,
    },
    /// The sources "mapping done" mapped.
    Mapped {
        sources: Vec<Source>,
    },
    Spend {
        spend: MarketingSpend,
    },
    Invitation {
        invitation: Invitation,
    },
}

fn invalid(e: impl fmt::Display) -> ActionError {
    ActionError::Invalid(e.to_string())
}

/// An optional text field: empty is None, else checked.
fn optional<T>(
    v: Option<String>,
    f: impl Fn(&str) -> Result<T, crate::domain::customer::FieldError>,
) -> Result<Option<T>, ActionError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => f(s).map(Some).map_err(invalid),
    }
}

/// The source named `name` as Forecourt spells it; unknown is refused.
fn existing_source(store: &Store, name: Option<String>) -> Result<Option<String>, ActionError> {
    match name.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) => match store.source(n)? {
            Some(s) => Ok(Some(s.name)),
            None => Err(ActionError::NotFound(
                SourceError::Unknown(n.to_string()).to_string(),
            )),
        },
    }
}

fn source_error(e: SourceError) -> ActionError {
    match e {
        SourceError::Unknown(_) => ActionError::NotFound(e.to_string()),
        SourceError::Exists(_) | SourceError::InUse { .. } | SourceError::HasSpend { .. } => {
            ActionError::Conflict(e.to_string())
        }
        SourceError::BadName(_) | SourceError::BadSpend(_) => ActionError::Invalid(e.to_string()),
    }
}

/// Carries out a [`CustomerAction`] in one transaction. Called by ingest,
/// the one writer, so what is read before the write is still true in it.
pub fn apply(
    store: &Store,
    action: CustomerAction,
    rules: InvitationRules,
    now_ms: u64,
) -> Result<CustomerOutcome, ActionError> {
    match action {
        CustomerAction::SaveCustomer {
            id,
            name,
            phone,
            email,
            source,
            customer_since,
        } => {
            let name = check::name(&name).map_err(invalid)?;
            let phone = optional(phone, check::phone)?;
            let email = optional(email, check::email)?;
            let since = optional(customer_since, |s| check::since(s, now_ms))?;
            let source = existing_source(store, source)?;
            let existing = match id {
                Some(id) => Some(
                    store
                        .customer(id)?
                        .ok_or_else(|| ActionError::NotFound(format!("no customer #{id}")))?,
                ),
                None => None,
            };
            let customer = store.write(|tx| {
                let mut c = match &existing {
                    Some(c) => c.clone(),
                    None => Customer {
                        id: tx.next_id(CUSTOMER_IDS)?,
                        dms_id: None,
                        name: String::new(),
                        phone: None,
                        email: None,
                        source: None,
                        customer_since_ms: day_start(now_ms),
                        created_ms: now_ms,
                        updated_ms: now_ms,
                        version: 0,
                    },
                };
                c.name = name.clone();
                c.phone = phone.clone();
                c.email = email.clone();
                c.source = source.clone();
                c.customer_since_ms = since.unwrap_or(c.customer_since_ms);
                c.updated_ms = now_ms;
                c.version += 1;
                tx.put_customer(&c)?;
                Ok(c)
            })?;
            Ok(CustomerOutcome::Customer { customer })
        }
        CustomerAction::SetSource {
            customer_id,
            source,
        } => {
            let source = existing_source(store, source)?;
            let mut c = store
                .customer(customer_id)?
                .ok_or_else(|| ActionError::NotFound(format!("no customer #{customer_id}")))?;
            if c.source != source {
                c.source = source;
                c.updated_ms = now_ms;
                c.version += 1;
                store.write(|tx| tx.put_customer(&c))?;
            }
            Ok(CustomerOutcome::Customer { customer: c })
        }
        CustomerAction::SaveVehicle {
            vin,
            customer_id,
            fleet,
            brand,
            model,
            model_year,
        } => {
            let vin = check::vin(&vin).map_err(invalid)?;
            if let Some(id) = customer_id {
                if store.customer(id)?.is_none() {
                    return Err(ActionError::NotFound(format!("no customer #{id}")));
                }
            }
            let year = match model_year {
                Some(y) => Some(check::model_year(&y.to_string(), now_ms).map_err(invalid)?),
                None => None,
            };
            let existing = store.registered_vehicle(&vin)?;
            let mut v = existing
                .clone()
                .unwrap_or_else(|| RegisteredVehicle::new(vin, VehicleOrigin::Forecourt, now_ms));
            v.change_owner(customer_id);
            v.fleet = optional(fleet, check::fleet)?;
            v.brand = optional(brand, check::brand)?;
            v.model = optional(model, check::model)?;
            v.model_year = year;
            if existing.as_ref() != Some(&v) {
                if existing.is_some() {
                    v.version += 1;
                    v.updated_ms = now_ms;
                }
                store.write(|tx| tx.put_registered_vehicle(&v))?;
            }
            Ok(CustomerOutcome::Vehicle { vehicle: v })
        }
        CustomerAction::CreateSource { name, category } => {
            let name = check_source_name(&name).map_err(source_error)?;
            if let Some(s) = store.source(&name)? {
                return Err(source_error(SourceError::Exists(s.name)));
            }
            let mut s = Source::new(name, SourceOrigin::Created, now_ms);
            s.category = category;
            store.write(|tx| tx.put_source(&s))?;
            Ok(CustomerOutcome::Source { source: s })
        }
        CustomerAction::MapSource { name, category } => {
            let s = store
                .source(&name)?
                .ok_or_else(|| source_error(SourceError::Unknown(name.clone())))?;
            let source = match s.mapped(category, now_ms) {
                Some(next) => {
                    store.write(|tx| tx.put_source(&next))?;
                    next
                }
                None => s,
            };
            Ok(CustomerOutcome::Source { source })
        }
        CustomerAction::DeleteSource { name } => {
            let s = store
                .source(&name)?
                .ok_or_else(|| source_error(SourceError::Unknown(name.clone())))?;
            let users = store.source_users(&s.name)?;
            let months = store.write(|tx| tx.months_with_spend(&s.name))?;
            s.check_delete(users, &months).map_err(source_error)?;
            store.write(|tx| tx.delete_source(&s))?;
            Ok(CustomerOutcome::SourceDeleted { name: s.name })
        }
        CustomerAction::MappingDone => {
            let sources = mapping_done(&store.sources()?, now_ms);
            if !sources.is_empty() {
                store.write(|tx| {
                    for s in &sources {
                        tx.put_source(s)?;
                    }
                    Ok(())
                })?;
            }
            Ok(CustomerOutcome::Mapped { sources })
        }
        CustomerAction::SetSpend {
            source,
            month,
            cents,
        } => {
            let s = store
                .source(&source)?
                .ok_or_else(|| source_error(SourceError::Unknown(source.clone())))?;
            let month = Month::parse(&month).ok_or_else(|| {
                source_error(SourceError::BadSpend(format!(
                    "month {month:?} is not written YYYY-MM"
                )))
            })?;
            if cents > MAX_SPEND_CENTS {
                return Err(source_error(SourceError::BadSpend(format!(
                    "{cents} cents is over the {MAX_SPEND_CENTS} a month allowed (a typo?)"
                ))));
            }
            let spend = store.write(|tx| {
                let version = tx.spend(month, &s.name)?.map_or(1, |p| p.version + 1);
                let spend = MarketingSpend {
                    source: s.name.clone(),
                    month,
                    cents,
                    updated_ms: now_ms,
                    version,
                };
                tx.put_spend(&spend)?;
                Ok(spend)
            })?;
            Ok(CustomerOutcome::Spend { spend })
        }
        CustomerAction::Invite { vin, at_ms } => invite(store, &vin, at_ms, rules, now_ms),
        CustomerAction::Invitation { id, event, at_ms } => {
            let inv = store
                .invitation(id)?
                .ok_or_else(|| ActionError::NotFound(format!("no invitation {id}")))?;
            let next = inv
                .apply(event, at_ms.unwrap_or(now_ms), now_ms, rules)
                .map_err(|e| ActionError::Conflict(e.to_string()))?;
            store.write(|tx| tx.put_invitation(&next))?;
            Ok(CustomerOutcome::Invitation { invitation: next })
        }
    }
}

/// R-VEH-3: a new invitation for a vehicle; a current one that lapsed is
/// written down as expired in the same transaction.
fn invite(
    store: &Store,
    vin: &str,
    at_ms: Option<u64>,
    rules: InvitationRules,
    now_ms: u64,
) -> Result<CustomerOutcome, ActionError> {
    let vin = check::vin(vin).map_err(invalid)?;
    let mut v = store
        .registered_vehicle(&vin)?
        .ok_or_else(|| ActionError::NotFound(format!("no registered vehicle {vin}")))?;
    let current = store.current_invitation(&v)?;
    let at = at_ms.unwrap_or(now_ms);
    // Checked with a placeholder id, so a refusal uses no id.
    Invitation::create(0, &v, current.as_ref(), at, now_ms, rules)
        .map_err(|e| ActionError::Conflict(e.to_string()))?;
    let invitation = store.write(|tx| {
        if let Some(lapsed) = current.as_ref().and_then(|c| c.lapse(now_ms, rules)) {
            tx.put_invitation(&lapsed)?;
        }
        let id = tx.next_id(INVITATION_IDS)?;
        let inv = Invitation::create(id, &v, current.as_ref(), at, now_ms, rules)
            .map_err(|e| StoreError::Aborted(e.to_string()))?;
        tx.put_invitation(&inv)?;
        v.invitation_id = Some(id);
        v.version += 1;
        v.updated_ms = now_ms;
        tx.put_registered_vehicle(&v)?;
        Ok(inv)
    })?;
    Ok(CustomerOutcome::Invitation { invitation })
}

/// R-SRC-3 over `[from_ms, to_ms)` from the store.
pub fn source_report(store: &Store, from_ms: u64, to_ms: u64) -> Result<SourceReport, StoreError> {
    let customers = store.customers_since(from_ms, to_ms)?;
    let spend = if to_ms > from_ms {
        store.marketing_spend(Month::of(from_ms), Month::of(to_ms - 1))?
    } else {
        Vec::new()
    };
    Ok(crate::domain::customer::source_report(
        &customers,
        &store.sources()?,
        &spend,
        from_ms,
        to_ms,
    ))
}

/// All sources with their number of customers, for the mapping page.
pub fn sources_with_users(store: &Store) -> Result<BTreeMap<String, (Source, u64)>, StoreError> {
    let mut out = BTreeMap::new();
    for s in store.sources()? {
        let users = store.source_users(&s.name)?;
        out.insert(s.key(), (s, users));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{AssignmentState, InvitationState, ReportGroup, DAY_MS};
    use crate::store::EngineKind;

    /// 2026-03-01T00:00:00Z
    const NOW: u64 = 1_772_323_200_000;
    const RULES: InvitationRules = InvitationRules { expiry_days: 14 };
    const HEADER: &str =
        "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet";
    const GOOD: &str = "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet\n\
K1,Anna Berg,+49 30 1234,anna@example.org,Google,2025-01-10,WVWZZZ1JZXW000001,Volkswagen,Golf,2019,\n\
K1,Anna Berg,+49 30 1234,anna@example.org,google,2025-01-10,WVWZZZ1JZXW000002,Volkswagen,Polo,2021,\n\
K2,\"Bauer, Tom\",,,,2024-05-01,,,,,\n\
,,,,,,WF0XXXGCXXW000003,Ford,Transit,2020,City Taxis\n";

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        (dir, store)
    }

    fn errors(text: &[u8]) -> Vec<RowError> {
        parse(text, NOW, &mut |_| {}).unwrap_err()
    }

    fn rows_of(e: &[RowError]) -> Vec<usize> {
        e.iter().map(|r| r.row).collect()
    }

    fn vin(s: &str) -> Vin {
        check::vin(s).unwrap()
    }

    #[test]
    fn a_good_file_reads_each_customer_and_vehicle_once() {
        let f = parse(GOOD.as_bytes(), NOW, &mut |_| {}).unwrap();
        assert_eq!(f.rows, 4);
        assert_eq!(f.customers.len(), 2, "K1's second row repeats its details");
        assert_eq!(f.customers[1].1.name, "Bauer, Tom");
        assert_eq!(f.vehicles.len(), 3);
        let taxi = &f.vehicles[2].1;
        assert_eq!(
            (taxi.owner.as_ref(), taxi.fleet.as_deref()),
            (None, Some("City Taxis"))
        );
        assert_eq!(f.vehicles[0].1.owner, Some(CustomerRef::Dms("K1".into())));
    }

    #[test]
    fn the_format_tolerates_bom_crlf_any_column_order_and_left_out_columns() {
        let text = "\u{FEFF}VIN , Customer_ID,name\r\n\r\nwvwzzz1jzxw000001,K1,\"Anna \"\"Annie\"\" Berg\"\r\n\"WVWZZZ1JZXW000002\",K2,\"Two\r\nlines\"\r\n";
        let f = parse(text.as_bytes(), NOW, &mut |_| {});
        // A line break inside a name is refused, on the row it starts on.
        let e = f.unwrap_err();
        assert_eq!(rows_of(&e), vec![4], "{e:?}");
        let text = text.replace("\"Two\r\nlines\"", "Two");
        let f = parse(text.as_bytes(), NOW, &mut |_| {}).unwrap();
        assert_eq!(f.customers[0].1.name, "Anna \"Annie\" Berg");
        assert_eq!(f.vehicles[0].1.vin.as_str(), "WVWZZZ1JZXW000001");
        assert_eq!(f.customers[1].1.since_ms, None, "no column: not given");
    }

    #[test]
    fn every_bad_row_is_reported_with_its_number() {
        let text = format!(
            "{HEADER}\n\
K1,Anna,+49 30 1234,anna@example,Google,2025-01-10,WVWZZZ1JZXW000001,,,2019,\n\
K2,,,,,,,,,,\n\
K3,Carl,,,,2031-01-01,,,,,\n\
,,123,,,,,,,,\n\
K4,Dora,,,,,WVWZZZ1JZXW00000O,,,1899,\n\
K5,Emil,,,,,,Ford,,,\n\
K6,Fine,,,,,WVWZZZ1JZXW000006,,,,\n"
        );
        let e = errors(text.as_bytes());
        assert_eq!(rows_of(&e), vec![2, 3, 4, 5, 6, 6, 7], "{e:#?}");
        let all: Vec<String> = e.iter().map(|r| r.to_string()).collect();
        let all = all.join("\n");
        for needle in [
            "row 2: e-mail",
            "row 3: name is empty",
            "row 4: customer since 2031-01-01 is in the future",
            "row 5: phone is given but customer_id is empty",
            "letter O",
            "model year \"1899\"",
            "row 7: brand is given but vin is empty",
        ] {
            assert!(all.contains(needle), "{needle:?} in {all}");
        }
        assert!(!all.contains("row 8"), "the good row is not blamed");
    }

    #[test]
    fn duplicate_rows_vins_and_conflicting_customers_are_refused() {
        let text = format!(
            "{HEADER}\n\
K1,Anna,,,,,WVWZZZ1JZXW000001,,,,\n\
K1,Anna,,,,,WVWZZZ1JZXW000001,,,,\n\
K2,Bert,,,,,WVWZZZ1JZXW000001,,,,\n\
K1,Anna B.,,,,,WVWZZZ1JZXW000004,,,,\n\
K1,Anna,,,Yelp,,WVWZZZ1JZXW000005,,,,\n"
        );
        let e = errors(text.as_bytes());
        assert_eq!(rows_of(&e), vec![3, 4, 5, 6], "{e:#?}");
        assert!(e[0].message.contains("repeats row 2"));
        assert!(e[1].message.contains("already on row 2"));
        assert!(e[2].message.contains("another name than on row 2"));
        assert!(e[3].message.contains("another source"));
    }

    #[test]
    fn a_bad_header_or_an_empty_file_is_refused() {
        assert!(errors(b"")[0].message.contains("empty"));
        assert!(errors(b"\n\n")[0].message.contains("empty"));
        let e = errors(b"customer_id,name,colour\nK1,A,red\n");
        assert!(e[0].message.contains("unknown column \"colour\""), "{e:?}");
        let e = errors(b"name,name,vin\n");
        assert!(e[0].message.contains("twice"));
        let e = errors(b"K1,Anna,WVWZZZ1JZXW000001\n");
        assert_eq!(e[0].row, 1);
        assert!(
            e.iter().any(|r| r.message.contains("header row missing")),
            "{e:?}"
        );
        let f = parse(b"vin\n", NOW, &mut |_| {}).unwrap();
        assert_eq!(f.rows, 0, "a header alone is an empty import");
    }

    #[test]
    fn non_utf8_utf16_oversized_and_truncated_files_are_refused() {
        let e = errors(b"customer_id,name\nK1,Ren\xe9\n");
        assert_eq!(e[0].row, 2);
        assert!(e[0].message.contains("not UTF-8"));
        assert!(errors(&[0xFF, 0xFE, b'c', 0])[0].message.contains("UTF-16"));
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        let e = errors(&big);
        assert_eq!(e[0].row, 0);
        assert!(e[0].message.contains("8 MB"));
        let cut = &GOOD[..GOOD.len() - 20];
        let e = errors(cut.as_bytes());
        assert_eq!(rows_of(&e), vec![5]);
        assert!(e[0].message.contains("cut short"), "{e:?}");
        let e = errors(format!("{HEADER}\nK1,\"Anna").as_bytes());
        assert!(e[0].message.contains("never closed"), "{e:?}");
        let mut many = String::from("customer_id,name\n");
        for i in 0..=MAX_ROWS {
            many.push_str(&format!("K{i},N\n"));
        }
        assert!(errors(many.as_bytes())[0]
            .message
            .contains("at most 100000"));
    }

    #[test]
    fn progress_is_reported_up_to_the_total() {
        let mut text = String::from("customer_id,name\n");
        for i in 0..2_500 {
            text.push_str(&format!("K{i},Name {i}\n"));
        }
        let mut seen = Vec::new();
        parse(text.as_bytes(), NOW, &mut |p| seen.push(p)).unwrap();
        assert_eq!(
            seen.first(),
            Some(&Progress {
                done: 0,
                total: 2_500
            })
        );
        assert_eq!(
            seen.last(),
            Some(&Progress {
                done: 2_500,
                total: 2_500
            })
        );
        assert!(seen.len() >= 4);
    }

    #[test]
    fn a_dry_run_changes_nothing_and_reports_what_the_import_does() {
        let (_dir, store) = open();
        let before = (store.counters().unwrap(), store.outbox(1000).unwrap());
        let dry = import(&store, GOOD, true, NOW).unwrap();
        assert_eq!(
            (before.0, before.1),
            (store.counters().unwrap(), store.outbox(1000).unwrap())
        );
        assert!(store.customers(None, 10).unwrap().is_empty());
        assert!(store.sources().unwrap().is_empty());
        let done = import(&store, GOOD, false, NOW).unwrap();
        assert_eq!(
            ImportReport {
                dry_run: true,
                ..done.clone()
            },
            dry
        );
        assert_eq!(
            done.customers,
            Tally {
                new: 2,
                changed: 0,
                unchanged: 0
            }
        );
        assert_eq!(
            done.vehicles,
            Tally {
                new: 3,
                changed: 0,
                unchanged: 0
            }
        );
        assert_eq!(
            done.sources_new,
            vec!["Google"],
            "one source, whatever the case"
        );
        assert!(done.to_string().contains("1 new source: Google"));
    }

    #[test]
    fn the_same_file_twice_and_export_then_import_change_nothing() {
        let (_dir, store) = open();
        import(&store, GOOD, false, NOW).unwrap();
        let counters = store.counters().unwrap();
        let outbox = store.outbox(1000).unwrap();
        let again = import(&store, GOOD, false, NOW + DAY_MS).unwrap();
        assert_eq!(
            again.customers,
            Tally {
                new: 0,
                changed: 0,
                unchanged: 2
            }
        );
        assert_eq!(
            again.vehicles,
            Tally {
                new: 0,
                changed: 0,
                unchanged: 3
            }
        );
        assert!(again.sources_new.is_empty());
        let exported = export_csv(&store).unwrap();
        assert!(exported.starts_with(&format!("{HEADER},device_id\n")));
        assert!(
            exported.contains("K2,\"Bauer, Tom\",,,,2024-05-01,,,,,,\n"),
            "{exported}"
        );
        let back = import(&store, &exported, false, NOW + DAY_MS).unwrap();
        assert_eq!((back.customers.unchanged, back.vehicles.unchanged), (2, 3));
        assert_eq!(store.counters().unwrap(), counters);
        assert_eq!(store.outbox(1000).unwrap(), outbox, "no new versions");
        assert_eq!(export_csv(&store).unwrap(), exported);
    }

    #[test]
    fn values_replace_empty_cells_keep_and_a_new_owner_unlinks_the_invitation() {
        let (_dir, store) = open();
        import(&store, GOOD, false, NOW).unwrap();
        let anna = store.customer_by_dms("K1").unwrap().unwrap();
        apply(
            &store,
            CustomerAction::Invite {
                vin: "WVWZZZ1JZXW000001".into(),
                at_ms: None,
            },
            RULES,
            NOW,
        )
        .unwrap();
        let text = "customer_id,name,phone,source,vin,model\n\
K1,Anna Berg,,Yelp,WVWZZZ1JZXW000002,\n\
K2,\"Bauer, Tom\",+49 40 99,,WVWZZZ1JZXW000001,Golf Variant\n";
        let r = import(&store, text, false, NOW + DAY_MS).unwrap();
        assert_eq!(
            r.customers,
            Tally {
                new: 0,
                changed: 2,
                unchanged: 0
            }
        );
        assert_eq!(
            r.vehicles,
            Tally {
                new: 0,
                changed: 1,
                unchanged: 1
            }
        );
        let anna2 = store.customer(anna.id).unwrap().unwrap();
        assert_eq!(anna2.phone, anna.phone, "an empty cell keeps the phone");
        assert_eq!(anna2.source.as_deref(), Some("Yelp"));
        assert_eq!(anna2.version, anna.version + 1);
        let golf = store
            .registered_vehicle(&vin("WVWZZZ1JZXW000001"))
            .unwrap()
            .unwrap();
        assert_eq!(
            golf.customer_id,
            store.customer_by_dms("K2").unwrap().map(|c| c.id)
        );
        assert_eq!(
            (golf.model.as_deref(), golf.brand.as_deref()),
            (Some("Golf Variant"), Some("Volkswagen"))
        );
        assert_eq!(
            golf.invitation_id, None,
            "the old owner's invitation is unlinked"
        );
        assert_eq!(store.vehicles_of_customer(anna.id).unwrap().len(), 1);
        let f = store.assignment_figures(NOW + DAY_MS, RULES).unwrap();
        assert_eq!(
            (f.without_customer, f.awaiting_assignment, f.assigned),
            (2, 0, 1)
        );
    }

    #[test]
    fn a_row_the_store_refuses_changes_nothing_either() {
        let (_dir, store) = open();
        let text = format!("{HEADER}\nK1,Anna,,,Google,,,,,,\n#7,Nobody,,,,,,,,,\n");
        match import(&store, &text, false, NOW) {
            Err(ImportError::Rows(e)) => {
                assert_eq!(rows_of(&e), vec![3]);
                assert!(e[0].message.contains("no customer 7"));
            }
            other => panic!("{other:?}"),
        }
        assert!(store.customers(None, 10).unwrap().is_empty());
        assert!(store.source("google").unwrap().is_none());
        assert_eq!(store.counter("ids.customer").unwrap(), 0);
    }

    #[test]
    fn a_customer_made_in_forecourt_exports_as_hash_number_and_imports_back() {
        let (_dir, store) = open();
        let made = apply(
            &store,
            CustomerAction::SaveCustomer {
                id: None,
                name: "Walk-in Wendy".into(),
                phone: Some("030 555".into()),
                email: None,
                source: None,
                customer_since: None,
            },
            RULES,
            NOW + 5 * 3_600_000,
        )
        .unwrap();
        let CustomerOutcome::Customer { customer } = made else {
            panic!()
        };
        assert_eq!(customer.customer_since_ms, NOW, "since is a day");
        let csv = export_csv(&store).unwrap();
        assert!(csv.contains("#1,Walk-in Wendy,030 555"), "{csv}");
        let r = import(&store, &csv, false, NOW + DAY_MS).unwrap();
        assert_eq!(
            r.customers,
            Tally {
                new: 0,
                changed: 0,
                unchanged: 1
            }
        );
    }

    // R-SRC-1, R-SRC-2
    #[test]
    fn sources_are_created_mapped_deleted_and_set_in_place() {
        let (_dir, store) = open();
        import(&store, GOOD, false, NOW).unwrap();
        let act = |a| apply(&store, a, RULES, NOW);
        let e = act(CustomerAction::CreateSource {
            name: "GOOGLE".into(),
            category: None,
        })
        .unwrap_err();
        assert!(matches!(e, ActionError::Conflict(_)), "{e}");
        act(CustomerAction::CreateSource {
            name: "Flyer".into(),
            category: None,
        })
        .unwrap();
        act(CustomerAction::CreateSource {
            name: "Friend".into(),
            category: Some(MainCategory::Referral),
        })
        .unwrap();
        assert_eq!(
            store.customer_figures().unwrap().unmapped_source,
            1,
            "Anna's Google"
        );
        let tom = store.customer_by_dms("K2").unwrap().unwrap();
        assert!(matches!(
            act(CustomerAction::SetSource {
                customer_id: tom.id,
                source: Some("Radio".into())
            }),
            Err(ActionError::NotFound(_))
        ));
        act(CustomerAction::SetSource {
            customer_id: tom.id,
            source: Some("friend".into()),
        })
        .unwrap();
        assert_eq!(
            store.customer(tom.id).unwrap().unwrap().source.as_deref(),
            Some("Friend")
        );
        assert_eq!(store.customer_figures().unwrap().unknown_source, 0);
        let e = act(CustomerAction::DeleteSource {
            name: "Google".into(),
        })
        .unwrap_err();
        assert!(
            matches!(e, ActionError::Conflict(ref m) if m.contains("1 customer")),
            "{e}"
        );
        act(CustomerAction::SetSpend {
            source: "flyer".into(),
            month: "2026-02".into(),
            cents: 12_000,
        })
        .unwrap();
        assert!(matches!(
            act(CustomerAction::DeleteSource { name: "Flyer".into() }),
            Err(ActionError::Conflict(ref m)) if m.contains("2026-02")
        ));
        act(CustomerAction::SetSpend {
            source: "Flyer".into(),
            month: "2026-02".into(),
            cents: 0,
        })
        .unwrap();
        act(CustomerAction::DeleteSource {
            name: "flyer".into(),
        })
        .unwrap();
        let listed = sources_with_users(&store).unwrap();
        assert_eq!(listed.len(), 2, "Google and Friend");
        assert_eq!((listed["google"].1, listed["friend"].1), (1, 1));
        assert!(store.source("Flyer").unwrap().is_none());
        let CustomerOutcome::Mapped { sources } = act(CustomerAction::MappingDone).unwrap() else {
            panic!()
        };
        assert_eq!(sources.len(), 1);
        assert_eq!(
            store.source("google").unwrap().unwrap().category,
            Some(MainCategory::OtherNew)
        );
        act(CustomerAction::MapSource {
            name: "Google".into(),
            category: Some(MainCategory::Internet),
        })
        .unwrap();
        assert_eq!(store.customer_figures().unwrap().unmapped_source, 0);
        assert!(matches!(
            act(CustomerAction::SetSpend {
                source: "Google".into(),
                month: "March".into(),
                cents: 1
            }),
            Err(ActionError::Invalid(_))
        ));
    }

    // R-VEH-3 through the one writer's entry point.
    #[test]
    fn invitations_move_through_their_states_and_refusals_are_conflicts() {
        let (_dir, store) = open();
        import(&store, GOOD, false, NOW).unwrap();
        let act = |a, now| apply(&store, a, RULES, now);
        let invite = |v: &str, now| {
            act(
                CustomerAction::Invite {
                    vin: v.into(),
                    at_ms: None,
                },
                now,
            )
        };
        let e = invite("WF0XXXGCXXW000003", NOW).unwrap_err();
        assert!(
            matches!(e, ActionError::Conflict(ref m) if m.contains("fleet")),
            "{e}"
        );
        assert_eq!(
            store.counter("ids.invitation").unwrap(),
            0,
            "a refusal uses no id"
        );
        let CustomerOutcome::Invitation { invitation } = invite("WVWZZZ1JZXW000001", NOW).unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            invite("WVWZZZ1JZXW000001", NOW),
            Err(ActionError::Conflict(_))
        ));
        let event = |id, event, now| {
            act(
                CustomerAction::Invitation {
                    id,
                    event,
                    at_ms: None,
                },
                now,
            )
        };
        event(invitation.id, InvitationEvent::Send, NOW).unwrap();
        let v1 = vin("WVWZZZ1JZXW000001");
        let state = |now| {
            let v = store.registered_vehicle(&v1).unwrap().unwrap();
            let inv = store.current_invitation(&v).unwrap();
            crate::domain::customer::assignment_state(&v, inv.as_ref(), now, RULES)
        };
        assert_eq!(state(NOW), AssignmentState::AwaitingAssignment);
        let late = NOW + 14 * DAY_MS;
        assert_eq!(state(late), AssignmentState::WithoutCustomer);
        let e = event(invitation.id, InvitationEvent::Accept, late).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // Invite again: the lapse is written down, the new one linked.
        let CustomerOutcome::Invitation { invitation: second } =
            invite("WVWZZZ1JZXW000001", late).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            store.invitation(invitation.id).unwrap().unwrap().state,
            InvitationState::Expired
        );
        event(second.id, InvitationEvent::Accept, late).unwrap();
        assert_eq!(state(late + 900 * DAY_MS), AssignmentState::Assigned);
        let figures = store.invitation_figures(late, RULES).unwrap();
        assert_eq!(
            (
                figures[&InvitationState::Expired],
                figures[&InvitationState::Accepted]
            ),
            (1, 1)
        );
        // A time from sync: an invitation sent 20 days ago is expired now.
        let CustomerOutcome::Invitation { invitation: old } = act(
            CustomerAction::Invite {
                vin: "WVWZZZ1JZXW000002".into(),
                at_ms: Some(late - 21 * DAY_MS),
            },
            late,
        )
        .unwrap() else {
            panic!()
        };
        act(
            CustomerAction::Invitation {
                id: old.id,
                event: InvitationEvent::Send,
                at_ms: Some(late - 20 * DAY_MS),
            },
            late,
        )
        .unwrap();
        assert_eq!(
            store.invitation_figures(late, RULES).unwrap()[&InvitationState::Expired],
            2
        );
    }

    // R-SRC-3 from the store.
    #[test]
    fn the_source_report_reads_the_period_from_the_store() {
        let (_dir, store) = open();
        import(&store, GOOD, false, NOW).unwrap();
        apply(
            &store,
            CustomerAction::MapSource {
                name: "Google".into(),
                category: Some(MainCategory::Internet),
            },
            RULES,
            NOW,
        )
        .unwrap();
        apply(
            &store,
            CustomerAction::SetSpend {
                source: "Google".into(),
                month: "2025-01".into(),
                cents: 31_000,
            },
            RULES,
            NOW,
        )
        .unwrap();
        let jan = Month::parse("2025-01").unwrap();
        let r = source_report(&store, jan.start_ms(), jan.end_ms()).unwrap();
        let internet = &r.groups[0];
        assert_eq!(
            internet.group,
            ReportGroup::Category(MainCategory::Internet)
        );
        assert_eq!(
            (internet.total.new_customers, internet.total.spend_cents),
            (1, 31_000)
        );
        assert_eq!(r.total.new_customers, 1, "Tom came in 2024");
        let all = source_report(&store, 0, NOW).unwrap();
        assert_eq!(all.total.new_customers, 2);
        assert_eq!(
            all.groups[6].total.new_customers, 1,
            "Tom's source is unknown"
        );
    }
}
