//! The dashboard (R-DASH-1, R-DASH-2): the workshop's figures, each linking
//! to the list behind it with a one-line definition, and the time they were
//! computed. Every figure is read from a counter kept in the same
//! transaction as the change it counts, so the page costs a few dozen key
//! reads however many leads there are.
//!
//! The page is a list of [`Section`]s built by [`build`]; the sections of
//! later features (reminders, conversations, conversions, invitations) are
//! more entries in that list. `GET /dashboard/figures` answers the same
//! figures as JSON for the page's live refresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;
use crate::domain::lead::{Lead, LeadStatus, LeadType};
use crate::store::leads::LeadQuery;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::session::{Staff, WebError};
use crate::web::users::blocking;
use crate::web::views_dashboard;

/// Newest open leads listed under the figures.
pub const NEWEST_LEADS: usize = 10;

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/"), ("GET", "/dashboard/figures")];

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(page))
        .route("/dashboard/figures", get(figures))
}

/// How a figure should catch the eye.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Work waiting: shown in the warning colour when not zero.
    Attention,
}

/// One figure: its stable key (the `data-figure` attribute and the JSON
/// key), value, label, one-line definition and the list behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    pub key: String,
    pub value: u64,
    pub label: String,
    pub definition: String,
    pub href: String,
    pub tone: Tone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub title: &'static str,
    pub figures: Vec<Figure>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dashboard {
    pub computed_ms: u64,
    pub sections: Vec<Section>,
}

impl Dashboard {
    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.sections
            .iter()
            .flat_map(|s| &s.figures)
            .find(|f| f.key == key)
    }
}

/// Reads every figure as of `now_ms`.
pub fn build(store: &Store, now_ms: u64) -> Result<Dashboard, StoreError> {
    let counts = crate::leads::lead_counts(store, now_ms)?;
    let open_total: u64 = counts.open.values().sum();
    let mut attention = vec![Figure {
        key: "leads.open".into(),
        value: open_total,
        label: "open leads".into(),
        definition: "Leads of every type not yet closed, by the rules or by staff.".into(),
        href: "/leads".into(),
        tone: Tone::Attention,
    }];
    attention.extend(LeadType::ALL.into_iter().map(|ty| Figure {
        key: format!("leads.open.{}", ty.as_str()),
        value: counts.open[ty.as_str()],
        label: ty.title().to_string(),
        definition: format!("Vehicles with {}: leads not yet closed.", what_opens(ty)),
        href: format!("/leads?type={}", ty.as_str()),
        tone: Tone::Attention,
    }));
    let month = LeadType::ALL
        .into_iter()
        .map(|ty| Figure {
            key: format!("leads.opened_30d.{}", ty.as_str()),
            value: counts.opened_30d[ty.as_str()],
            label: ty.title().to_string(),
            definition: format!(
                "Leads for {} opened in the last 30 days, open or closed since.",
                what_opens(ty)
            ),
            href: format!("/leads?type={}&status=all&period=30d", ty.as_str()),
            tone: Tone::Plain,
        })
        .collect();
    let severity = [3u8, 2, 1]
        .into_iter()
        .map(|s| Figure {
            key: format!("leads.open.error_code.severity.{s}"),
            value: counts.open_by_severity[usize::from(s) - 1],
            label: format!(
                "severity {s} ({})",
                crate::web::views_leads::severity_word(s)
            ),
            definition: format!(
                "Open error-code leads whose code the catalog (or, without an entry, its status) rates {s} of 3."
            ),
            href: format!("/leads?type=error_code&severity={s}"),
            tone: if s == 3 { Tone::Attention } else { Tone::Plain },
        })
        .collect();
    let vehicles = vec![Figure {
        key: "vehicles.units".into(),
        value: store.counter(crate::store::counters::VEHICLES)?,
        label: "units heard".into(),
        definition: "CC-Link units that have talked to this appliance since it was set up.".into(),
        href: "/vehicles".into(),
        tone: Tone::Plain,
    }];
    Ok(Dashboard {
        computed_ms: now_ms,
        sections: vec![
            Section {
                title: "Needs attention",
                figures: attention,
            },
            Section {
                title: "Open error codes by severity",
                figures: severity,
            },
            Section {
                title: "Leads opened in the last 30 days",
                figures: month,
            },
            Section {
                title: "Vehicles",
                figures: vehicles,
            },
        ],
    })
}

/// What opens a lead of `ty`, in one phrase (the figures' definitions).
fn what_opens(ty: LeadType) -> &'static str {
    match ty {
        LeadType::WarningLamp => "a dashboard warning lamp lit",
        LeadType::UserLamp => "a lamp the driver reported in the app",
        LeadType::LowBattery => "a parked 12 V battery averaging under 11.7 V over 7 days",
        LeadType::Disconnected => "a CC-Link unit that lost power",
        LeadType::ErrorCode => "an error code a control unit reports active, occasional or pending",
    }
}

async fn page(State(state): State<Arc<AppState>>, staff: Staff) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read the dashboard")?;
    let now = state.clock.now_ms();
    let store = state.store.clone();
    let (dashboard, newest) = blocking(move || {
        let dashboard = build(&store, now)?;
        let q = LeadQuery {
            status: Some(LeadStatus::Open),
            ..Default::default()
        };
        let (newest, _): (Vec<Lead>, _) = store.lead_list(&q, None, NEWEST_LEADS)?;
        Ok((dashboard, newest))
    })
    .await?;
    Ok(views_dashboard::page(&staff, &dashboard, &newest).into_response())
}

#[derive(Serialize)]
struct FiguresJson {
    computed_at: String,
    figures: BTreeMap<String, u64>,
}

/// The figures alone, for the page's live refresh (session, not token:
/// the JSON API for tools is `/api/v1/dashboard`).
async fn figures(State(state): State<Arc<AppState>>, staff: Staff) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read the dashboard")?;
    let now = state.clock.now_ms();
    let store = state.store.clone();
    let dashboard = blocking(move || Ok(build(&store, now)?)).await?;
    let body = FiguresJson {
        computed_at: crate::clock::rfc3339(dashboard.computed_ms),
        figures: dashboard
            .sections
            .iter()
            .flat_map(|s| &s.figures)
            .map(|f| (f.key.clone(), f.value))
            .collect(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
