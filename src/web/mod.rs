//! The web server: `/healthz` (the contract of SPEC.md's last section) and
//! the status page of the units heard. Handlers are thin: they read the
//! shared state and hand it to a view in [`views`].

pub mod api;
pub mod auth;
pub mod customers;
pub mod dashboard;
pub mod forms;
pub mod leads;
pub mod lot;
pub mod registry;
pub mod session;
pub mod settings;
pub mod sources;
pub mod users;
pub mod vehicles;
pub mod views;
pub mod views_auth;
pub mod views_customers;
pub mod views_dashboard;
pub mod views_leads;
pub mod views_lot;
pub mod views_registry;
pub mod views_settings;
pub mod views_sources;
pub mod views_vehicles;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;

/// Largest request body accepted anywhere (forms are small).
pub const MAX_BODY: usize = 64 * 1024;
/// Units shown on the status page.
const STATUS_PAGE_UNITS: usize = 500;
/// Open leads shown on the status page, newest first.
const STATUS_PAGE_LEADS: usize = 200;
/// Free space under which the appliance reports itself degraded: 64 MiB,
/// or 5% of a smaller file system.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// The routes behind a session as (method, path): the route-table test
/// walks them without one. Add a page's route here when mounting it in
/// [`router`]'s `pages`.
pub fn session_routes() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("GET", "/status"), ("POST", "/logout")];
    all.extend_from_slice(dashboard::ROUTES);
    all.extend_from_slice(leads::ROUTES);
    all.extend_from_slice(vehicles::ROUTES);
    all.extend_from_slice(registry::ROUTES);
    all.extend_from_slice(users::ROUTES);
    all.extend_from_slice(lot::ROUTES);
    all.extend_from_slice(settings::ROUTES);
    all.extend_from_slice(sources::ROUTES);
    all.extend_from_slice(customers::ROUTES);
    all
}

pub fn router(state: Arc<AppState>) -> Router {
    // Every route here needs a live session (session::gate): a page added
    // to it is closed to strangers whatever its handler takes.
    let pages = Router::new()
        .route("/status", get(status_page))
        .merge(dashboard::routes())
        .merge(leads::routes())
        .merge(vehicles::routes())
        .merge(registry::routes())
        .route("/logout", axum::routing::post(session::logout))
        .merge(users::routes())
        .merge(lot::routes())
        .merge(settings::routes())
        .merge(sources::routes())
        .merge(customers::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::gate,
        ));
    Router::new()
        .merge(pages)
        .merge(session::open_routes())
        .route("/healthz", get(healthz))
        .route("/static/forecourt.css", get(stylesheet))
        .fallback(not_found)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        // After the layer, which answers 413 in plain text: the API holds
        // its bodies to the same limit and answers in JSON (api.rs).
        .merge(api::router())
        // The catalog upload (up to 5 MB): behind the gate, with its own
        // body limit instead of the 64 KiB one (settings.rs).
        .merge(settings::upload_routes(state.clone()))
        // The DMS customer file (up to 8 MB), the same way (customers.rs).
        .merge(customers::upload_routes(state.clone()))
        .with_state(state)
}

/// `GET /healthz` (SPEC.md): durable totals and what is wrong, if anything.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub vehicles: u64,
    pub messages: u64,
    pub duplicates: u64,
    pub rejected: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub links: Vec<crate::link::LinkReport>,
    /// Commits since start and the events they held (batch size).
    pub ingest: IngestHealth,
    pub uptime_s: u64,
}

#[derive(Debug, Serialize)]
pub struct IngestHealth {
    pub batches: u64,
    pub events: u64,
}

pub fn health(state: &AppState) -> Health {
    let t = state.totals.snapshot();
    let mut problems = Vec::new();
    let links: Vec<_> = state.links.iter().map(|l| l.status.report()).collect();
    for l in &links {
        if !l.up {
            problems.push(format!("link {} ({}) is {}", l.name, l.transport, l.state));
        }
    }
    if let Some(e) = state.totals.store_error() {
        problems.push(format!("store: {e}"));
    }
    match nix::sys::statvfs::statvfs(&state.settings.data_dir) {
        Ok(fs) => {
            // fsblkcnt_t and c_ulong are u64 on the 64-bit targets Forecourt supports.
            let free = fs.blocks_available() * fs.fragment_size();
            let size = fs.blocks() * fs.fragment_size();
            if free < MIN_FREE_BYTES.min(size / 20) {
                problems.push(format!(
                    "disk nearly full: {} MiB free for the data directory",
                    free / (1024 * 1024)
                ));
            }
        }
        Err(e) => problems.push(format!("cannot check free disk space: {e}")),
    }
    Health {
        status: if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        },
        vehicles: t.vehicles,
        messages: t.messages,
        duplicates: t.duplicates,
        rejected: t.rejected,
        problems,
        links,
        ingest: IngestHealth {
            batches: state
                .totals
                .batches
                .load(std::sync::atomic::Ordering::Relaxed),
            events: state
                .totals
                .batched_events
                .load(std::sync::atomic::Ordering::Relaxed),
        },
        uptime_s: state.clock.now_ms().saturating_sub(state.started_ms) / 1000,
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let h = health(&state);
    ([(header::CACHE_CONTROL, "no-store")], Json(h)).into_response()
}

async fn status_page(State(state): State<Arc<AppState>>, staff: session::Staff) -> Response {
    let now = state.clock.now_ms();
    let s = state.clone();
    let vehicles =
        tokio::task::spawn_blocking(move || s.store.vehicles(None, STATUS_PAGE_UNITS)).await;
    let vehicles = match vehicles {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The store cannot be read: {e}"),
            )
        }
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be built.",
            )
        }
    };
    let s = state.clone();
    let leads = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
        let filter = crate::store::leads::LeadFilter {
            status: Some(crate::domain::lead::LeadStatus::Open),
            ..Default::default()
        };
        let open = s.store.leads(&filter, None, STATUS_PAGE_LEADS)?.leads;
        let counts = crate::leads::lead_counts(&s.store, now)?;
        Ok((open, counts))
    })
    .await;
    let (open_leads, counts) = match leads {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The store cannot be read: {e}"),
            )
        }
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be built.",
            )
        }
    };
    let health = health(&state);
    views::status(
        &staff,
        &views::StatusView {
            now_ms: now,
            on_lot_ms: state.settings.on_lot_ms,
            health: &health,
            vehicles: &vehicles,
            capped: vehicles.len() == STATUS_PAGE_UNITS,
            open_leads: &open_leads,
            counts: &counts,
        },
    )
    .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        views::CSS,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no page at this address.")
}

fn error_page(code: StatusCode, message: &str) -> Response {
    (code, views::error(code, message)).into_response()
}
