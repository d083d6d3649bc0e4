//! The dashboard (R-DASH-1, R-DASH-2): the workshop's figures, each linking
//! to the list behind it with a one-line definition, and the time they were
//! computed. Every figure is read from a counter kept in the same
//! transaction as the change it counts, so reading them costs a few dozen
//! key reads however many leads there are; and they are read once per
//! commit, not per request ([`SnapshotCache`]), which is also the time the
//! page says they were computed.
//!
//! The page is a list of [`Section`]s built by [`build`]; the sections of
//! later features (reminders, conversations, conversions, invitations) are
//! more entries in that list. `GET /dashboard/figures` answers the same
//! figures as JSON for the page's live refresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;
use crate::domain::customer::{AssignmentState, InvitationRules, InvitationState};
use crate::domain::lead::{Lead, LeadStatus, LeadType};
use crate::leads::{LeadCounts, DAY_MS};
use crate::store::customers::AssignmentFigures;
use crate::store::leads::LeadQuery;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::session::{Staff, WebError};
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

/// What the dashboard, its JSON twins and the lead tabs read, as of one
/// store generation: the lead counters, the units heard, and the newest
/// open leads.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub computed_ms: u64,
    pub counts: LeadCounts,
    pub units: u64,
    pub newest: Vec<Lead>,
    /// Registered vehicles per assignment state (R-VEH-2).
    pub assignment: AssignmentFigures,
    /// Invitations per state (R-VEH-3).
    pub invitations: BTreeMap<InvitationState, u64>,
    /// The page's body, rendered once per snapshot (the frame around it,
    /// which names the member of staff, is rendered per request).
    body: std::sync::OnceLock<String>,
}

/// The longest a snapshot is used: invitations lapse with time alone, with
/// no commit to mark it.
const SNAPSHOT_MAX_AGE_MS: u64 = 60_000;

impl Snapshot {
    fn read(store: &Store, now_ms: u64, rules: InvitationRules) -> Result<Snapshot, StoreError> {
        // Read first: a write during the reads makes the snapshot stale at once.
        let generation = store.generation();
        let q = LeadQuery {
            status: Some(LeadStatus::Open),
            ..Default::default()
        };
        Ok(Snapshot {
            generation,
            computed_ms: now_ms,
            counts: crate::leads::lead_counts(store, now_ms)?,
            units: store.counter(crate::store::counters::VEHICLES)?,
            newest: store.lead_list(&q, None, NEWEST_LEADS)?.0,
            assignment: store.assignment_figures(now_ms, rules)?,
            invitations: store.invitation_figures(now_ms, rules)?,
            body: Default::default(),
        })
    }

    /// Current while nothing was committed since, it is the same day (the
    /// 30-day figures move at midnight) and it is less than a minute old.
    fn current(&self, store: &Store, now_ms: u64) -> bool {
        self.generation == store.generation()
            && self.computed_ms / DAY_MS == now_ms / DAY_MS
            && now_ms.saturating_sub(self.computed_ms) < SNAPSHOT_MAX_AGE_MS
    }
}

/// The last [`Snapshot`], kept until the store changes: a busy dashboard
/// costs one read of the counters per commit, not one per request.
#[derive(Debug, Default)]
pub struct SnapshotCache(Mutex<Option<Arc<Snapshot>>>);

impl SnapshotCache {
    /// The snapshot, if still current: no store read, no blocking.
    pub fn fresh(&self, store: &Store, now_ms: u64) -> Option<Arc<Snapshot>> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().filter(|s| s.current(store, now_ms))
    }

    /// The current snapshot, read from the store when needed (blocking).
    pub fn read(
        &self,
        store: &Store,
        now_ms: u64,
        rules: InvitationRules,
    ) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(s) = self.fresh(store, now_ms) {
            return Ok(s);
        }
        let s = Arc::new(Snapshot::read(store, now_ms, rules)?);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }
}

/// The current snapshot for a request: from the cache, or read off the
/// async threads.
pub async fn snapshot(state: &Arc<AppState>) -> Result<Arc<Snapshot>, StoreError> {
    let now = state.clock.now_ms();
    if let Some(s) = state.snapshot.fresh(&state.store, now) {
        return Ok(s);
    }
    let st = state.clone();
    let rules = InvitationRules {
        expiry_days: state.settings.invitation_expiry_days,
    };
    tokio::task::spawn_blocking(move || st.snapshot.read(&st.store, now, rules))
        .await
        .map_err(|e| StoreError::Engine(format!("reading the dashboard panicked: {e}")))?
}

/// Every figure of a snapshot.
pub fn build(snapshot: &Snapshot) -> Dashboard {
    let counts = &snapshot.counts;
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
    let mut vehicles = vec![Figure {
        key: "vehicles.units".into(),
        value: snapshot.units,
        label: "units heard".into(),
        definition: "CC-Link units that have talked to this appliance since it was set up.".into(),
        href: "/vehicles".into(),
        tone: Tone::Plain,
    }];
    vehicles.extend(AssignmentState::ALL.into_iter().map(|state| Figure {
        key: format!("vehicles.{}", state.as_str()),
        value: snapshot.assignment.of(state),
        label: state.label().to_string(),
        definition: state.definition().to_string(),
        href: format!("/vehicles/registered?state={}", state.as_str()),
        tone: if state == AssignmentState::WithoutCustomer {
            Tone::Attention
        } else {
            Tone::Plain
        },
    }));
    let invitations = InvitationState::ALL
        .into_iter()
        .map(|state| Figure {
            key: format!("invitations.{}", state.as_str()),
            value: snapshot.invitations.get(&state).copied().unwrap_or(0),
            label: state.label().to_string(),
            definition: state.definition().to_string(),
            href: format!("/invitations?state={}", state.as_str()),
            tone: Tone::Plain,
        })
        .collect();
    Dashboard {
        computed_ms: snapshot.computed_ms,
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
                title: "Vehicles and customers",
                figures: vehicles,
            },
            Section {
                title: "Invitations to the customer app",
                figures: invitations,
            },
        ],
    }
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
    let snap = snapshot(&state).await?;
    let body = snap
        .body
        .get_or_init(|| views_dashboard::body(&build(&snap), &snap.newest).into_string());
    Ok(views_dashboard::page(&staff, body).into_response())
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
    let dashboard = build(&*snapshot(&state).await?);
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
