//! Customer sources (SPEC.md R-SRC-1..3, docs/customers.md): the page that
//! maps sources to main categories and takes the marketing spend, the
//! day's vehicles page that asks for the sources nobody recorded, and the
//! customer source report with its CSV. Changes go through ingest, the one
//! writer ([`Action::Customers`]); reads go straight to the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::customers::{CustomerAction, CustomerOutcome};
use crate::domain::customer::{
    day_start, format_date, parse_date, Customer, MainCategory, Month, RegisteredVehicle,
    ReportGroup, Source, SourceReport, DAY_MS, MAX_SPEND_CENTS,
};
use crate::domain::vehicle::Vehicle;
use crate::ingest::{Action, Outcome};
use crate::leads::ActionError;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::lot::{booked_today, Recent, LOT_PAGE_UNITS};
use crate::web::session::{CsrfForm, CsrfOnly, Staff, StaffForm, WebError};
use crate::web::users::blocking;
use crate::web::views::money;
use crate::web::views_sources;

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/sources"),
    ("POST", "/sources"),
    ("POST", "/sources/map"),
    ("POST", "/sources/delete"),
    ("POST", "/sources/mapping-done"),
    ("POST", "/sources/spend"),
    ("GET", "/today"),
    ("POST", "/today/source"),
    ("GET", "/reports/sources"),
    ("GET", "/reports/sources.csv"),
];

/// Changing sources, spend or a customer's source is work with customers
/// and the workshop's marketing, which the role table gives advisors and
/// admins (the permission to deal with customers); a technician works on
/// the vehicle and only reads these pages.
pub const CHANGE: Permission = Permission::MessageCustomer;
const CHANGE_WHAT: &str = "change customer sources or marketing spend";
const READ_WHAT: &str = "read customer sources";

/// Days in the report's default period (today included).
pub const DEFAULT_REPORT_DAYS: u64 = 30;

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sources", get(sources_page).post(create))
        .route("/sources/map", post(map))
        .route("/sources/delete", post(delete))
        .route("/sources/mapping-done", post(mapping_done))
        .route("/sources/spend", post(set_spend))
        .route("/today", get(today_page))
        .route("/today/source", post(set_source))
        .route("/reports/sources", get(report_page))
        .route("/reports/sources.csv", get(report_csv))
}

// ---- Checking what was typed ----

/// A marketing spend as typed: `120`, `120.5`, `120.50` or `120,50`, an
/// amount in the workshop's currency, to cents. 0 is allowed (it removes
/// the month's spend).
pub fn parse_amount(text: &str) -> Result<u64, String> {
    use crate::web::forms::{parse_money, MoneyError};
    let t = text.trim();
    parse_money(t, MAX_SPEND_CENTS).map_err(|e| match e {
        MoneyError::Empty => "Enter the amount spent, e.g. 120 or 120.50 (0 removes it).".to_string(),
        MoneyError::Negative => "A marketing spend cannot be negative.".to_string(),
        MoneyError::NotAmount => format!(
            "{t:?} is not an amount: write it like 120 or 120.50 (digits, at most two decimals, no thousands separator)."
        ),
        MoneyError::TooHigh => format!(
            "{t} is more than the {} a month the page accepts: check the number.",
            money(MAX_SPEND_CENTS)
        ),
    })
}

/// A category select's value: empty is "not mapped".
pub fn parse_category(value: &str) -> Result<Option<MainCategory>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    MainCategory::parse(v).map(Some).ok_or_else(|| {
        let all: Vec<&str> = MainCategory::ALL.iter().map(|c| c.as_str()).collect();
        format!("category {v:?}: one of {}", all.join(", "))
    })
}

/// A month picker's value, `YYYY-MM`.
fn parse_month(value: &str) -> Result<Month, String> {
    Month::parse(value)
        .ok_or_else(|| format!("month {:?}: write it YYYY-MM, e.g. 2026-03", value.trim()))
}

// ---- Acting through ingest ----

/// Why a change was refused, shown at its form with what was typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusal {
    /// The form's id: `create`, `mapping-done`, `map:KEY`, `delete:KEY`,
    /// `spend:KEY` (KEY a source's lower-case name) or `source:ID` (a
    /// customer on the day's vehicles page).
    pub form: String,
    /// The text or choice typed, shown again.
    pub typed: String,
    /// The category chosen, shown again.
    pub category: Option<MainCategory>,
    pub message: String,
}

/// A refused change: its status and message.
type Refused = (StatusCode, String);

/// Has ingest carry out `action`: `Ok(Err(..))` is a refusal to show at
/// the form, `Err` a failure of the appliance.
async fn carry_out(
    state: &AppState,
    action: CustomerAction,
) -> Result<Result<CustomerOutcome, Refused>, WebError> {
    let done = state
        .act(Action::Customers {
            action,
            invitation_expiry_days: state.settings.invitation_expiry_days,
        })
        .await;
    match done {
        Ok(Outcome::Customers { outcome }) => Ok(Ok(outcome)),
        Ok(other) => {
            tracing::error!(?other, "a customer action answered something else");
            Err(WebError::Internal)
        }
        Err(ActionError::NotFound(m)) => Ok(Err((StatusCode::NOT_FOUND, m))),
        Err(ActionError::Conflict(m)) => Ok(Err((StatusCode::CONFLICT, m))),
        Err(ActionError::Invalid(m)) => Ok(Err((StatusCode::UNPROCESSABLE_ENTITY, m))),
        Err(ActionError::Store(e)) => Err(e.into()),
    }
}

// ---- The sources page (R-SRC-1, spend for R-SRC-3) ----

/// Everything the sources page shows.
#[derive(Debug)]
pub struct SourcesPage {
    /// Every source with its number of customers, by name ignoring case.
    pub sources: Vec<(Source, u64)>,
    /// The month whose spend the page shows and takes.
    pub month: Month,
    /// That month's spend in cents, by source key.
    pub spend: BTreeMap<String, u64>,
    /// Sources "mapping done" mapped, after it ran.
    pub mapped: Option<usize>,
}

fn read_sources(store: &Store, month: Month) -> Result<SourcesPage, StoreError> {
    let sources = crate::customers::sources_with_users(store)?
        .into_values()
        .collect();
    let spend = store
        .marketing_spend(month, month)?
        .into_iter()
        .map(|s| (crate::domain::customer::source_key(&s.source), s.cents))
        .collect();
    Ok(SourcesPage {
        sources,
        month,
        spend,
        mapped: None,
    })
}

async fn render_sources(
    state: &AppState,
    staff: &Staff,
    month: Month,
    mapped: Option<usize>,
    status: StatusCode,
    refusal: Option<&Refusal>,
) -> Result<Response, WebError> {
    let store = state.store.clone();
    let mut page = blocking(move || Ok(read_sources(&store, month)?)).await?;
    page.mapped = mapped;
    let html = views_sources::sources(staff, &page, state.clock.now_ms(), refusal);
    Ok((status, html).into_response())
}

/// The page's address for `month`.
fn sources_href(month: Month) -> String {
    format!("/sources?month={month}")
}

async fn sources_page(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, READ_WHAT)?;
    let pairs = query.map_err(|e| WebError::BadRequest(e.body_text()))?.0;
    let mut month = Month::of(state.clock.now_ms());
    let mut mapped = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "month" if !value.trim().is_empty() => {
                month = parse_month(value).map_err(WebError::BadRequest)?
            }
            "month" => {}
            "mapped" => {
                mapped = Some(value.trim().parse().map_err(|_| {
                    WebError::BadRequest(format!("mapped {value:?}: a number of sources"))
                })?)
            }
            other => return Err(WebError::BadRequest(format!("unknown parameter {other:?}"))),
        }
    }
    render_sources(&state, &staff, month, mapped, StatusCode::OK, None).await
}

/// A source form: create (name, category), map (name, category), delete
/// (name).
#[derive(Debug, Default, Deserialize)]
pub struct SourceForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub category: String,
    /// The month the page showed, to come back to it.
    #[serde(default)]
    pub month: String,
}

impl CsrfForm for SourceForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The spend form of one source.
#[derive(Debug, Default, Deserialize)]
pub struct SpendForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub month: String,
    #[serde(default)]
    pub amount: String,
}

impl CsrfForm for SpendForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The month a form came from; this month when it is missing or bad.
fn form_month(state: &AppState, value: &str) -> Month {
    Month::parse(value).unwrap_or_else(|| Month::of(state.clock.now_ms()))
}

/// Carries out a checked sources form: back to the page (303), or the page
/// with the refusal at the form, what was typed kept.
async fn submit_source(
    state: &AppState,
    staff: &Staff,
    month: Month,
    mut refusal: Refusal,
    action: Result<CustomerAction, String>,
) -> Result<Response, WebError> {
    let refused = match action {
        Ok(action) => match carry_out(state, action).await? {
            Ok(CustomerOutcome::Mapped { sources }) => {
                let to = format!("{}&mapped={}", sources_href(month), sources.len());
                return Ok(Redirect::to(&to).into_response());
            }
            Ok(_) => return Ok(Redirect::to(&sources_href(month)).into_response()),
            Err(r) => r,
        },
        Err(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    refusal.message = refused.1;
    render_sources(state, staff, month, None, refused.0, Some(&refusal)).await
}

async fn create(
    State(state): State<Arc<AppState>>,
    f: StaffForm<SourceForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let category = parse_category(&form.category);
    let refusal = Refusal {
        form: "create".into(),
        typed: form.name.clone(),
        category: category.clone().ok().flatten(),
        message: String::new(),
    };
    let action = category.map(|category| CustomerAction::CreateSource {
        name: form.name.clone(),
        category,
    });
    let month = form_month(&state, &form.month);
    submit_source(&state, &staff, month, refusal, action).await
}

async fn map(
    State(state): State<Arc<AppState>>,
    f: StaffForm<SourceForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let category = parse_category(&form.category);
    let refusal = Refusal {
        form: format!("map:{}", crate::domain::customer::source_key(&form.name)),
        typed: String::new(),
        category: category.clone().ok().flatten(),
        message: String::new(),
    };
    let action = category.map(|category| CustomerAction::MapSource {
        name: form.name.clone(),
        category,
    });
    let month = form_month(&state, &form.month);
    submit_source(&state, &staff, month, refusal, action).await
}

async fn delete(
    State(state): State<Arc<AppState>>,
    f: StaffForm<SourceForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let refusal = Refusal {
        form: format!("delete:{}", crate::domain::customer::source_key(&form.name)),
        ..Refusal::default()
    };
    let action = Ok(CustomerAction::DeleteSource {
        name: form.name.clone(),
    });
    let month = form_month(&state, &form.month);
    submit_source(&state, &staff, month, refusal, action).await
}

async fn mapping_done(
    State(state): State<Arc<AppState>>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let staff = f.staff;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let refusal = Refusal {
        form: "mapping-done".into(),
        ..Refusal::default()
    };
    let month = Month::of(state.clock.now_ms());
    submit_source(
        &state,
        &staff,
        month,
        refusal,
        Ok(CustomerAction::MappingDone),
    )
    .await
}

async fn set_spend(
    State(state): State<Arc<AppState>>,
    f: StaffForm<SpendForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let month = parse_month(&form.month);
    let refusal = Refusal {
        form: format!(
            "spend:{}",
            crate::domain::customer::source_key(&form.source)
        ),
        typed: form.amount.clone(),
        ..Refusal::default()
    };
    let action = month.clone().and_then(|month| {
        parse_amount(&form.amount).map(|cents| CustomerAction::SetSpend {
            source: form.source.clone(),
            month: month.to_string(),
            cents,
        })
    });
    let month = month.unwrap_or_else(|_| Month::of(state.clock.now_ms()));
    submit_source(&state, &staff, month, refusal, action).await
}

// ---- The day's vehicles (R-SRC-2) ----

/// A vehicle on the day's page: its unit, and the registered vehicle and
/// customer its VIN leads to.
#[derive(Debug)]
pub struct TodayRow {
    pub vehicle: Vehicle,
    pub booked: bool,
    pub on_lot: bool,
    pub registered: Option<RegisteredVehicle>,
    pub customer: Option<Customer>,
}

impl TodayRow {
    /// A customer whose source nobody recorded (R-SRC-2 marks them).
    pub fn unknown_source(&self) -> bool {
        self.customer.as_ref().is_some_and(|c| c.source.is_none())
    }
}

/// Everything the day's vehicles page shows.
#[derive(Debug)]
pub struct Today {
    pub rows: Vec<TodayRow>,
    /// Units booked today or on the lot, listed or not.
    pub units: usize,
    /// Different customers of the listed vehicles.
    pub customers: usize,
    /// Of those, the ones without a source.
    pub unknown: usize,
    /// Every source, for the select of each row.
    pub sources: Vec<Source>,
}

impl Today {
    /// The share of today's customers without a source, in whole percent.
    pub fn unknown_percent(&self) -> u64 {
        share_percent(self.unknown as u64, self.customers as u64)
    }
}

/// `part` of `whole` in whole percent, rounded half up; 0 of nothing is 0.
pub fn share_percent(part: u64, whole: u64) -> u64 {
    (part * 100 + whole / 2).checked_div(whole).unwrap_or(0)
}

/// Units read from the store at a time.
const STORE_PAGE: usize = 500;

/// Reads the day's vehicles at `now_ms`: units booked today
/// ([`booked_today`]) or heard within `on_lot_ms`, most recently heard
/// first, with the customers whose source is unknown first.
pub fn read_today(store: &Store, now_ms: u64, on_lot_ms: u64) -> Result<Today, StoreError> {
    let booked = booked_today(store, now_ms)?;
    let mut recent = Recent::new(LOT_PAGE_UNITS);
    let mut after = None;
    loop {
        let page = store.vehicles(after, STORE_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.device_id);
        for v in page {
            if v.on_lot(now_ms, on_lot_ms) || booked.contains(&v.device_id) {
                recent.offer(v);
            }
        }
    }
    let units = recent.total;
    let mut rows = Vec::new();
    for vehicle in recent.into_sorted() {
        rows.push(today_row(store, vehicle, &booked, now_ms, on_lot_ms)?);
    }
    rows.sort_by_key(|r| !r.unknown_source());
    let mut customers: BTreeMap<u64, bool> = BTreeMap::new();
    for r in &rows {
        if let Some(c) = &r.customer {
            customers.insert(c.id, c.source.is_none());
        }
    }
    Ok(Today {
        units,
        customers: customers.len(),
        unknown: customers.values().filter(|u| **u).count(),
        rows,
        sources: store.sources()?,
    })
}

/// VIN -> registered vehicle -> customer, for one unit.
fn today_row(
    store: &Store,
    vehicle: Vehicle,
    booked: &BTreeSet<u64>,
    now_ms: u64,
    on_lot_ms: u64,
) -> Result<TodayRow, StoreError> {
    let registered = match &vehicle.vin {
        Some(vin) => store.registered_vehicle(vin)?,
        None => None,
    };
    let customer = match registered.as_ref().and_then(|r| r.customer_id) {
        Some(id) => store.customer(id)?,
        None => None,
    };
    Ok(TodayRow {
        booked: booked.contains(&vehicle.device_id),
        on_lot: vehicle.on_lot(now_ms, on_lot_ms),
        vehicle,
        registered,
        customer,
    })
}

async fn render_today(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    refusal: Option<&Refusal>,
) -> Result<Response, WebError> {
    let now = state.clock.now_ms();
    let on_lot_ms = state.settings.on_lot_ms;
    let store = state.store.clone();
    let today = blocking(move || Ok(read_today(&store, now, on_lot_ms)?)).await?;
    let html = views_sources::today(staff, &today, now, on_lot_ms, refusal);
    Ok((status, html).into_response())
}

async fn today_page(
    State(state): State<Arc<AppState>>,
    staff: Staff,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "see the day's vehicles")?;
    render_today(&state, &staff, StatusCode::OK, None).await
}

/// The source form of one customer on the day's page.
#[derive(Debug, Default, Deserialize)]
pub struct SetSourceForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub customer_id: String,
    /// A source's name; empty for unknown.
    #[serde(default)]
    pub source: String,
}

impl CsrfForm for SetSourceForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /today/source`: sets a customer's source in place and goes back
/// to the row, or shows the refusal at it.
async fn set_source(
    State(state): State<Arc<AppState>>,
    f: StaffForm<SetSourceForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, "set customers' sources")?;
    let raw = form.customer_id.trim();
    let id: u64 = raw
        .parse()
        .map_err(|_| WebError::BadForm(format!("customer_id {raw:?} is not a customer number")))?;
    let source = form.source.trim();
    let action = CustomerAction::SetSource {
        customer_id: id,
        source: (!source.is_empty()).then(|| source.to_string()),
    };
    let (status, message) = match carry_out(&state, action).await? {
        Ok(_) => return Ok(Redirect::to(&format!("/today#customer-{id}")).into_response()),
        Err(r) => r,
    };
    let refusal = Refusal {
        form: format!("source:{id}"),
        typed: source.to_string(),
        category: None,
        message,
    };
    render_today(&state, &staff, status, Some(&refusal)).await
}

// ---- The source report (R-SRC-3) ----

/// The report's period: whole UTC days `from` to `to`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// 00:00 UTC of the first day.
    pub from_ms: u64,
    /// 00:00 UTC of the last day.
    pub to_ms: u64,
}

impl Period {
    /// The `[from, to)` the report counts: to the end of the last day.
    pub fn end_ms(self) -> u64 {
        self.to_ms + DAY_MS
    }

    /// The `from=..&to=..` of the report's addresses.
    pub fn query(self) -> String {
        format!(
            "from={}&to={}",
            format_date(self.from_ms),
            format_date(self.to_ms)
        )
    }

    /// The last `days` days up to the day holding `now_ms`.
    pub fn last_days(now_ms: u64, days: u64) -> Period {
        let today = day_start(now_ms);
        Period {
            from_ms: today.saturating_sub((days - 1) * DAY_MS),
            to_ms: today,
        }
    }
}

/// The presets offered above the report: (label, period).
pub fn presets(now_ms: u64) -> Vec<(&'static str, Period)> {
    let today = day_start(now_ms);
    let this_month = Month::of(now_ms);
    let last_month = Month::from_index(this_month.index().saturating_sub(1));
    let year_start = parse_date(&format!("{:04}-01-01", this_month.year)).unwrap_or(0);
    vec![
        (
            "Last 30 days",
            Period::last_days(now_ms, DEFAULT_REPORT_DAYS),
        ),
        (
            "This month",
            Period {
                from_ms: this_month.start_ms(),
                to_ms: today,
            },
        ),
        (
            "Last month",
            Period {
                from_ms: last_month.start_ms(),
                to_ms: this_month.start_ms() - DAY_MS,
            },
        ),
        ("Last 90 days", Period::last_days(now_ms, 90)),
        (
            "This year",
            Period {
                from_ms: year_start,
                to_ms: today,
            },
        ),
    ]
}

/// The report's query: `from` and `to` (`YYYY-MM-DD`, both included);
/// each defaults to the last 30 days. The message names what is wrong.
pub fn parse_period(pairs: &[(String, String)], now_ms: u64) -> Result<Period, String> {
    let mut p = Period::last_days(now_ms, DEFAULT_REPORT_DAYS);
    for (key, value) in pairs {
        let v = value.trim();
        if v.is_empty() {
            continue;
        }
        let date = || {
            parse_date(v).ok_or_else(|| {
                format!("{key} {v:?} is not a date: write it YYYY-MM-DD, e.g. 2026-03-01")
            })
        };
        match key.as_str() {
            "from" => p.from_ms = date()?,
            "to" => p.to_ms = date()?,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: the report takes from and to"
                ))
            }
        }
    }
    if p.from_ms > p.to_ms {
        return Err(format!(
            "from {} is after to {}: the period runs from its first day to its last",
            format_date(p.from_ms),
            format_date(p.to_ms)
        ));
    }
    Ok(p)
}

/// The groups the report shows: every main category, then "not mapped
/// yet" and "unknown source" when they hold anything.
pub fn shown_groups(
    r: &SourceReport,
) -> impl Iterator<Item = &crate::domain::customer::GroupReport> {
    r.groups.iter().filter(|g| {
        matches!(g.group, ReportGroup::Category(_))
            || g.total.new_customers > 0
            || g.total.spend_cents > 0
    })
}

/// A CSV field, quoted when it must be (RFC 4180). A text starting with
/// `=`, `+`, `-` or `@` gets a leading `'` so a spreadsheet shows it as
/// text instead of running it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The report as CSV: the page's table, one row per main category (empty
/// source) followed by its sources, then the total. Amounts in the
/// workshop's currency with two decimals; an empty cost: no new customers.
pub fn report_csv_text(r: &SourceReport) -> String {
    let mut out = String::from(
        "main_category,source,new_customers,marketing_spend,cost_per_new_customer\r\n",
    );
    let mut row = |category: &str, source: &str, l: &crate::domain::customer::ReportLine| {
        let _ = write!(
            out,
            "{},{},{},{},{}\r\n",
            csv_field(category),
            csv_field(source),
            l.new_customers,
            money(l.spend_cents),
            l.cost_per_new_cents.map(money).unwrap_or_default()
        );
    };
    for g in shown_groups(r) {
        row(g.group.label(), "", &g.total);
        for (name, line) in &g.sources {
            row(g.group.label(), name, line);
        }
    }
    row("Total", "", &r.total);
    out
}

async fn read_report(state: &AppState, period: Period) -> Result<SourceReport, WebError> {
    let store = state.store.clone();
    blocking(move || {
        Ok(crate::customers::source_report(
            &store,
            period.from_ms,
            period.end_ms(),
        )?)
    })
    .await
}

fn period_of(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    now_ms: u64,
) -> Result<Period, WebError> {
    let pairs = query.map_err(|e| WebError::BadRequest(e.body_text()))?.0;
    parse_period(&pairs, now_ms).map_err(WebError::BadRequest)
}

async fn report_page(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read the source report")?;
    let now = state.clock.now_ms();
    let period = period_of(query, now)?;
    let report = read_report(&state, period).await?;
    Ok(views_sources::report(&staff, &report, period, now).into_response())
}

/// `GET /reports/sources.csv?from=&to=`: the report's table as a file.
async fn report_csv(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read the source report")?;
    let period = period_of(query, state.clock.now_ms())?;
    let report = read_report(&state, period).await?;
    let disposition = format!(
        "attachment; filename=\"forecourt-sources-{}-to-{}.csv\"",
        format_date(period.from_ms),
        format_date(period.to_ms)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        report_csv_text(&report),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{MarketingSpend, SourceOrigin};

    /// 2026-03-15T10:00:00Z
    const NOW: u64 = 1_773_568_800_000;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn amounts_are_read_like_the_labour_rate() {
        assert_eq!(parse_amount("120"), Ok(12_000));
        assert_eq!(parse_amount(" 120.5 "), Ok(12_050));
        assert_eq!(parse_amount("120,50"), Ok(12_050));
        assert_eq!(parse_amount("0"), Ok(0));
        assert_eq!(parse_amount("10000000"), Ok(MAX_SPEND_CENTS));
        for bad in ["", "-5", "12.345", "1.234,50", "abc", "12.", ".5", "1 000"] {
            assert!(parse_amount(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_amount("10000000.01")
            .unwrap_err()
            .contains("more than"));
        assert!(parse_amount("99999999999999999999999")
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn categories_parse_by_name_or_label_and_empty_is_unmapped() {
        assert_eq!(parse_category(""), Ok(None));
        assert_eq!(parse_category("drive_by"), Ok(Some(MainCategory::DriveBy)));
        assert_eq!(
            parse_category("Other new customers"),
            Ok(Some(MainCategory::OtherNew))
        );
        assert!(parse_category("tv").unwrap_err().contains("category"));
    }

    #[test]
    fn the_period_defaults_to_the_last_30_days_and_names_bad_parameters() {
        let p = parse_period(&[], NOW).unwrap();
        assert_eq!(format_date(p.from_ms), "2026-02-14");
        assert_eq!(format_date(p.to_ms), "2026-03-15");
        assert_eq!((p.end_ms() - p.from_ms) / DAY_MS, 30);
        let p = parse_period(&pairs(&[("from", "2026-01-01"), ("to", "2026-01-31")]), NOW).unwrap();
        assert_eq!(p.query(), "from=2026-01-01&to=2026-01-31");
        for (q, named) in [
            (("from", "2026-02-30"), "from"),
            (("to", "yesterday"), "to"),
            (("colour", "red"), "colour"),
        ] {
            let e = parse_period(&pairs(&[q]), NOW).unwrap_err();
            assert!(
                e.starts_with(&format!("{named} ")) || e.contains(named),
                "{e}"
            );
        }
        let e =
            parse_period(&pairs(&[("from", "2026-03-10"), ("to", "2026-03-01")]), NOW).unwrap_err();
        assert!(e.contains("after"), "{e}");
    }

    #[test]
    fn presets_cover_whole_days() {
        let p: BTreeMap<&str, String> = presets(NOW)
            .into_iter()
            .map(|(l, p)| (l, p.query()))
            .collect();
        assert_eq!(p["This month"], "from=2026-03-01&to=2026-03-15");
        assert_eq!(p["Last month"], "from=2026-02-01&to=2026-02-28");
        assert_eq!(p["Last 90 days"], "from=2025-12-16&to=2026-03-15");
        assert_eq!(p["This year"], "from=2026-01-01&to=2026-03-15");
        let jan = presets(parse_date("2026-01-05").unwrap());
        assert_eq!(jan[2].1.query(), "from=2025-12-01&to=2025-12-31");
    }

    #[test]
    fn share_rounds_half_up() {
        assert_eq!(share_percent(3, 11), 27);
        assert_eq!(share_percent(1, 1), 100);
        assert_eq!(share_percent(1, 8), 13);
        assert_eq!(share_percent(0, 0), 0);
    }

    #[test]
    fn the_csv_holds_the_table_and_quotes_what_it_must() {
        let t0 = parse_date("2026-03-01").unwrap();
        let mut google = Source::new("Google".into(), SourceOrigin::Imported, t0);
        google.category = Some(MainCategory::Internet);
        let odd = Source::new("=Fair, \"Spring\"".into(), SourceOrigin::Created, t0);
        let customer = |id: u64, source: Option<&str>| Customer {
            id,
            dms_id: None,
            name: format!("C{id}"),
            phone: None,
            email: None,
            source: source.map(str::to_string),
            customer_since_ms: t0 + DAY_MS,
            created_ms: t0,
            updated_ms: t0,
            version: 1,
        };
        let customers = [
            customer(1, Some("Google")),
            customer(2, Some("google")),
            customer(3, Some("=Fair, \"Spring\"")),
            customer(4, None),
        ];
        let spend = [MarketingSpend {
            source: "Google".into(),
            month: Month::of(t0),
            cents: 10_001,
            updated_ms: t0,
            version: 1,
        }];
        let r = crate::domain::customer::source_report(
            &customers,
            &[google, odd],
            &spend,
            t0,
            Month::of(t0).end_ms(),
        );
        let csv = report_csv_text(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "main_category,source,new_customers,marketing_spend,cost_per_new_customer"
        );
        assert!(lines.contains(&"Internet,,2,100.01,50.01"), "{csv}");
        assert!(lines.contains(&"Internet,Google,2,100.01,50.01"), "{csv}");
        assert!(lines.contains(&"Referral,,0,0.00,"), "{csv}");
        assert!(
            lines.contains(&"Not mapped yet,\"'=Fair, \"\"Spring\"\"\",1,0.00,0.00"),
            "{csv}"
        );
        assert!(lines.contains(&"Unknown source,,1,0.00,0.00"), "{csv}");
        assert_eq!(lines.last(), Some(&"Total,,4,100.01,25.00"));
    }
}
