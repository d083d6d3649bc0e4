//! The "Leads & error codes" pages (R-LEAD-FILTER, R-LEAD-DTC, R-LEAD-REV):
//! the list with a tab per type, filters, sorting and open counts; a lead's
//! page with its history; and the forms that act on it (assign, close with
//! a reason, reopen, note, message the customer). Actions go through
//! ingest, the one writer, exactly like the API's.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::lead::{Lead, LeadStatus, LeadType};
use crate::ingest::{Action, Outcome};
use crate::leads::{ActionError, LeadAction, DAY_MS};
use crate::store::leads::{CustomerMessage, LeadCursor, LeadQuery, LeadSort};
use crate::web::api::{MAX_TEXT_CHARS, MAX_USER_CHARS};
use crate::web::auth::Permission;
use crate::web::session::{CsrfForm, CsrfOnly, Staff, StaffForm, WebError};
use crate::web::users::blocking;
use crate::web::vehicles::{disconnections, Disconnection};
use crate::web::views_leads;

/// Rows on one page of the list.
pub const PAGE_ROWS: usize = 50;
/// The R-LEAD-DISC window of disconnections a lead shows.
const DISCONNECTION_WINDOW_MS: u64 = 30 * DAY_MS;
/// Vehicle events read to find its disconnections (all that are kept).
const EVENTS_READ: usize = crate::store::EVENTS_PER_VEHICLE as usize;

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/leads"),
    ("GET", "/leads/{id}"),
    ("POST", "/leads/{id}/assign"),
    ("POST", "/leads/{id}/close"),
    ("POST", "/leads/{id}/reopen"),
    ("POST", "/leads/{id}/note"),
    ("POST", "/leads/{id}/message"),
];

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/leads", get(list))
        .route("/leads/{id}", get(show))
        .route("/leads/{id}/assign", post(assign))
        .route("/leads/{id}/close", post(close))
        .route("/leads/{id}/reopen", post(reopen))
        .route("/leads/{id}/note", post(note))
        .route("/leads/{id}/message", post(message))
}

// ---- The list ----

/// The time filter of R-LEAD-DTC, on when a lead was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Period {
    Day,
    TwoDays,
    Week,
    Month,
    #[default]
    All,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Day,
        Period::TwoDays,
        Period::Week,
        Period::Month,
        Period::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "24h",
            Period::TwoDays => "48h",
            Period::Week => "7d",
            Period::Month => "30d",
            Period::All => "all",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Period::Day => "24 hours",
            Period::TwoDays => "48 hours",
            Period::Week => "7 days",
            Period::Month => "30 days",
            Period::All => "All time",
        }
    }

    fn span_ms(self) -> Option<u64> {
        match self {
            Period::Day => Some(DAY_MS),
            Period::TwoDays => Some(2 * DAY_MS),
            Period::Week => Some(7 * DAY_MS),
            Period::Month => Some(30 * DAY_MS),
            Period::All => None,
        }
    }

    fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The status filter; open by default (what needs doing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    Open,
    Closed,
    All,
}

impl StatusFilter {
    pub const ALL: [StatusFilter; 3] =
        [StatusFilter::Open, StatusFilter::Closed, StatusFilter::All];

    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Open => "open",
            StatusFilter::Closed => "closed",
            StatusFilter::All => "all",
        }
    }

    fn status(self) -> Option<LeadStatus> {
        match self {
            StatusFilter::Open => Some(LeadStatus::Open),
            StatusFilter::Closed => Some(LeadStatus::Closed),
            StatusFilter::All => None,
        }
    }
}

/// A lead list's parameters, checked: the page's address is built back
/// from these, so every link keeps the other filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    /// `None`: the "All" tab.
    pub ty: Option<LeadType>,
    pub status: StatusFilter,
    pub period: Period,
    /// Error codes only.
    pub severity: Option<u8>,
    pub sort: LeadSort,
    pub cursor: Option<LeadCursor>,
}

impl ListParams {
    /// Reads a query string's pairs; the message names what is wrong.
    pub fn parse(pairs: &[(String, String)]) -> Result<ListParams, String> {
        let mut p = ListParams::default();
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "type" => {
                    p.ty = match value {
                        "all" => None,
                        v => Some(LeadType::parse(v).ok_or_else(|| {
                            format!("type {v:?}: one of warning_lamp, user_lamp, low_battery, disconnected, error_code, all")
                        })?),
                    }
                }
                "status" => {
                    p.status = StatusFilter::ALL
                        .into_iter()
                        .find(|s| s.as_str() == value)
                        .ok_or_else(|| format!("status {value:?}: one of open, closed, all"))?
                }
                "period" => {
                    p.period = Period::parse(value)
                        .ok_or_else(|| format!("period {value:?}: one of 24h, 48h, 7d, 30d, all"))?
                }
                "severity" => {
                    p.severity = match value {
                        "all" => None,
                        "1" => Some(1),
                        "2" => Some(2),
                        "3" => Some(3),
                        v => return Err(format!("severity {v:?}: 1, 2, 3 or all")),
                    }
                }
                "sort" => {
                    p.sort = LeadSort::parse(value).ok_or_else(|| {
                        format!("sort {value:?}: one of opened, revenue, severity, ecu")
                    })?
                }
                "cursor" => {
                    p.cursor = Some(parse_cursor(value).ok_or_else(|| {
                        format!("cursor {value:?}: use the address of the \"Next page\" link")
                    })?)
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        // Severity and the ECU belong to error codes: elsewhere they fall back.
        if p.ty.is_some_and(|t| t != LeadType::ErrorCode) {
            p.severity = None;
            if matches!(p.sort, LeadSort::Severity | LeadSort::Ecu) {
                p.sort = LeadSort::Opened;
            }
        }
        if p.ty.is_none() && p.severity.is_some() {
            p.ty = Some(LeadType::ErrorCode);
        }
        Ok(p)
    }

    pub fn query(&self, now_ms: u64) -> LeadQuery {
        LeadQuery {
            ty: self.ty,
            status: self.status.status(),
            sort: self.sort,
            opened_since_ms: self.period.span_ms().map(|s| now_ms.saturating_sub(s)),
            severity: self.severity,
        }
    }

    /// The list's address with these parameters (defaults left out).
    pub fn href(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = self.ty {
            parts.push(format!("type={}", t.as_str()));
        }
        if self.status != StatusFilter::Open {
            parts.push(format!("status={}", self.status.as_str()));
        }
        if self.period != Period::All {
            parts.push(format!("period={}", self.period.as_str()));
        }
        if let Some(s) = self.severity {
            parts.push(format!("severity={s}"));
        }
        if self.sort != LeadSort::Opened {
            parts.push(format!("sort={}", self.sort.as_str()));
        }
        if let Some(c) = self.cursor {
            parts.push(format!("cursor={}", cursor_text(c)));
        }
        if parts.is_empty() {
            "/leads".into()
        } else {
            format!("/leads?{}", parts.join("&"))
        }
    }

    /// These parameters changed by `f`, from the first page.
    pub fn with(&self, f: impl FnOnce(&mut ListParams)) -> ListParams {
        let mut p = self.clone();
        p.cursor = None;
        f(&mut p);
        p
    }
}

pub fn cursor_text(c: LeadCursor) -> String {
    format!("{}-{}", c.value, c.id)
}

fn parse_cursor(s: &str) -> Option<LeadCursor> {
    let (value, id) = s.split_once('-')?;
    Some(LeadCursor {
        value: value.parse().ok()?,
        id: id.parse().ok()?,
    })
}

async fn list(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read leads")?;
    let pairs = query.map_err(|e| WebError::BadRequest(e.body_text()))?.0;
    let params = ListParams::parse(&pairs).map_err(WebError::BadRequest)?;
    let now = state.clock.now_ms();
    let store = state.store.clone();
    let q = params.query(now);
    let cursor = params.cursor;
    let (rows, next) = blocking(move || Ok(store.lead_list(&q, cursor, PAGE_ROWS)?)).await?;
    let counts = &crate::web::dashboard::snapshot(&state).await?.counts;
    let next = next.map(|c| ListParams {
        cursor: Some(c),
        ..params.clone()
    });
    Ok(views_leads::list(
        &staff,
        &views_leads::ListView {
            now_ms: now,
            params: &params,
            rows: &rows,
            next: next.as_ref(),
            counts,
        },
    )
    .into_response())
}

// ---- One lead ----

/// Everything a lead's page shows.
pub struct LeadPage {
    pub lead: Lead,
    pub vehicle: Option<crate::domain::vehicle::Vehicle>,
    /// Enabled staff, for the assign form: (name, display name).
    pub staff: Vec<(String, String)>,
    /// The vehicle's disconnections in the last 30 days, newest first.
    pub disconnections: Vec<Disconnection>,
    pub messages: Vec<CustomerMessage>,
}

fn parse_id(raw: &str) -> Result<u64, WebError> {
    raw.parse()
        .map_err(|_| WebError::NotFound(format!("There is no lead {raw:?}.")))
}

async fn read_lead_page(state: &AppState, id: u64) -> Result<LeadPage, WebError> {
    let store = state.store.clone();
    let now = state.clock.now_ms();
    blocking(move || {
        let lead = store
            .lead(id)?
            .ok_or_else(|| WebError::NotFound(format!("There is no lead {id}.")))?;
        let vehicle = store.vehicle(lead.device_id)?;
        let staff = store
            .users()?
            .into_iter()
            .filter(|u| !u.disabled)
            .map(|u| (u.name, u.display_name))
            .collect();
        let since = now.saturating_sub(DISCONNECTION_WINDOW_MS);
        let disconnections = disconnections(&store.events(lead.device_id, EVENTS_READ)?)
            .into_iter()
            .filter(|d| d.at_ms >= since)
            .collect();
        let mut messages = Vec::new();
        for e in &lead.history {
            if let crate::domain::lead::LeadEventKind::Messaged { message_id } = e.kind {
                if let Some(m) = store.message(message_id)? {
                    messages.push(m);
                }
            }
        }
        Ok(LeadPage {
            lead,
            vehicle,
            staff,
            disconnections,
            messages,
        })
    })
    .await
}

/// Why an action on a lead was refused, shown at its form, which keeps
/// what was typed.
pub struct Refusal<'a> {
    /// The form's id: `assign`, `close`, `reopen`, `note` or `message`.
    pub form: &'a str,
    pub typed: &'a str,
    pub message: &'a str,
}

/// The lead's page; with a refusal when an action was refused.
async fn lead_page(
    state: &AppState,
    staff: &Staff,
    id: u64,
    status: StatusCode,
    refusal: Option<&Refusal<'_>>,
) -> Result<Response, WebError> {
    let page = read_lead_page(state, id).await?;
    Ok((
        status,
        views_leads::lead(staff, &page, state.clock.now_ms(), refusal),
    )
        .into_response())
}

async fn show(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read leads")?;
    let id = parse_id(&raw)?;
    lead_page(&state, &staff, id, StatusCode::OK, None).await
}

#[derive(Debug, Default, Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    pub csrf: String,
    /// A user name; empty to unassign.
    #[serde(default)]
    pub user: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct CloseForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TextForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub text: String,
}

impl CsrfForm for AssignForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfForm for CloseForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfForm for TextForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A form's text, trimmed and checked: `None` when empty.
pub fn form_text(field: &str, text: &str, max: usize) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(format!(
            "The {field} is too long: at most {max} characters."
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(format!("The {field} holds control characters."));
    }
    Ok((!text.is_empty()).then(|| text.replace("\r\n", "\n")))
}

/// Carries out a lead action: back to the lead's page (303) when done,
/// or the page with the reason when refused, the typed text kept.
async fn act(
    state: &AppState,
    staff: &Staff,
    id: u64,
    action: LeadAction,
    form: &str,
    typed: &str,
) -> Result<Response, WebError> {
    let done = state
        .act(Action::Lead {
            action,
            by: staff.name.clone(),
        })
        .await;
    let (status, message) = match done {
        Ok(Outcome::Lead { .. } | Outcome::Message { .. }) => {
            return Ok(Redirect::to(&format!("/leads/{id}")).into_response())
        }
        Ok(other) => {
            tracing::error!(?other, "a lead action answered something else");
            return Err(WebError::Internal);
        }
        Err(ActionError::NotFound(m)) => return Err(WebError::NotFound(m)),
        Err(ActionError::Conflict(m)) => (StatusCode::CONFLICT, m),
        Err(ActionError::Invalid(m)) => (StatusCode::UNPROCESSABLE_ENTITY, m),
        Err(ActionError::Store(e)) => return Err(e.into()),
    };
    refuse(state, staff, id, status, &message, form, typed).await
}

async fn refuse(
    state: &AppState,
    staff: &Staff,
    id: u64,
    status: StatusCode,
    message: &str,
    form: &str,
    typed: &str,
) -> Result<Response, WebError> {
    let refusal = Refusal {
        form,
        typed,
        message,
    };
    lead_page(state, staff, id, status, Some(&refusal)).await
}

/// Carries out a checked form's action, or shows why it was refused (422)
/// at the form, with what was typed.
async fn submit(
    state: &AppState,
    staff: &Staff,
    id: u64,
    form: &str,
    typed: &str,
    action: Result<LeadAction, String>,
) -> Result<Response, WebError> {
    match action {
        Ok(action) => act(state, staff, id, action, form, typed).await,
        Err(m) => {
            refuse(
                state,
                staff,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                &m,
                form,
                typed,
            )
            .await
        }
    }
}

async fn assign(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<AssignForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::AssignLead, "assign leads")?;
    let id = parse_id(&raw)?;
    let action = form_text("user", &form.user, MAX_USER_CHARS)
        .map(|user| LeadAction::Assign { lead_id: id, user });
    submit(&state, &staff, id, "assign", "", action).await
}

async fn close(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<CloseForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::CloseLead, "close leads")?;
    let id = parse_id(&raw)?;
    let action = form_text("reason", &form.reason, MAX_TEXT_CHARS)
        .and_then(|r| {
            r.ok_or_else(|| "Say why the lead is closed: the reason stays in its history.".into())
        })
        .map(|note| LeadAction::Close {
            lead_id: id,
            note: Some(note),
            customer: false,
        });
    submit(&state, &staff, id, "close", &form.reason, action).await
}

async fn reopen(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let staff = f.staff;
    staff.require(Permission::ReopenLead, "reopen leads")?;
    let id = parse_id(&raw)?;
    let action = Ok(LeadAction::Reopen { lead_id: id });
    submit(&state, &staff, id, "reopen", "", action).await
}

async fn note(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<TextForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::AnnotateLead, "add notes to leads")?;
    let id = parse_id(&raw)?;
    let action = form_text("note", &form.text, MAX_TEXT_CHARS)
        .and_then(|t| t.ok_or_else(|| "The note is empty.".into()))
        .map(|text| LeadAction::Note { lead_id: id, text });
    submit(&state, &staff, id, "note", &form.text, action).await
}

async fn message(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<TextForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::MessageCustomer, "message customers")?;
    let id = parse_id(&raw)?;
    // Empty: the lead type's template (leads::template).
    let action = form_text("message", &form.text, MAX_TEXT_CHARS)
        .map(|text| LeadAction::Message { lead_id: id, text });
    submit(&state, &staff, id, "message", &form.text, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn list_parameters_round_trip_through_the_address() {
        let p = ListParams::parse(&pairs(&[
            ("type", "error_code"),
            ("status", "all"),
            ("period", "7d"),
            ("severity", "3"),
            ("sort", "ecu"),
            ("cursor", "123-45"),
        ]))
        .unwrap();
        assert_eq!(p.ty, Some(LeadType::ErrorCode));
        assert_eq!(p.cursor, Some(LeadCursor { value: 123, id: 45 }));
        let href = p.href();
        let query = href.strip_prefix("/leads?").unwrap();
        let back: Vec<(String, String)> = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        assert_eq!(ListParams::parse(&back).unwrap(), p);
        assert_eq!(ListParams::default().href(), "/leads");
    }

    #[test]
    fn bad_parameters_are_named() {
        for (q, named) in [
            (("type", "lamp"), "type"),
            (("status", "done"), "status"),
            (("period", "1y"), "period"),
            (("severity", "4"), "severity"),
            (("sort", "name"), "sort"),
            (("cursor", "x"), "cursor"),
            (("colour", "red"), "colour"),
        ] {
            let e = ListParams::parse(&pairs(&[q])).unwrap_err();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn error_code_only_choices_fall_back_on_other_tabs() {
        let p = ListParams::parse(&pairs(&[
            ("type", "low_battery"),
            ("severity", "2"),
            ("sort", "severity"),
        ]))
        .unwrap();
        assert_eq!((p.severity, p.sort), (None, LeadSort::Opened));
        let p = ListParams::parse(&pairs(&[("severity", "2")])).unwrap();
        assert_eq!(
            p.ty,
            Some(LeadType::ErrorCode),
            "a severity picks the error-code tab"
        );
    }

    #[test]
    fn form_text_is_trimmed_bounded_and_clean() {
        assert_eq!(
            form_text("note", "  hi \r\nthere ", 100),
            Ok(Some("hi \nthere".into()))
        );
        assert_eq!(form_text("note", "   ", 100), Ok(None));
        assert!(form_text("note", "abc", 2)
            .unwrap_err()
            .contains("at most 2"));
        assert!(form_text("note", "a\u{7}b", 10)
            .unwrap_err()
            .contains("control"));
    }
}
