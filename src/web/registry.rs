//! The lists behind the dashboard's vehicle and invitation figures
//! (R-DASH-1): registered vehicles by assignment state (R-VEH-2) and
//! invitations by state (R-VEH-3), each paged by its key, each state with
//! its one-line definition.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::customer::{
    assignment_state, AssignmentState, Customer, Invitation, InvitationRules, InvitationState,
    RegisteredVehicle,
};
use crate::link::message::Vin;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::session::{Staff, WebError};
use crate::web::users::blocking;
use crate::web::views_registry;

/// Rows on one page.
pub const PAGE_ROWS: usize = 100;
/// Records read per store scan while filling a page.
const CHUNK: usize = 256;

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/vehicles/registered"), ("GET", "/invitations")];

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/vehicles/registered", get(vehicles))
        .route("/invitations", get(invitations))
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub after: Option<String>,
}

/// A registered vehicle as listed: its state now, its customer and unit.
pub struct VehicleRow {
    pub vehicle: RegisteredVehicle,
    pub state: AssignmentState,
    pub invitation: Option<Invitation>,
    pub customer: Option<Customer>,
    pub device_id: Option<u64>,
}

/// An invitation as listed, with its state now.
pub struct InvitationRow {
    pub invitation: Invitation,
    pub state: InvitationState,
    pub customer: Option<Customer>,
}

fn rules(state: &AppState) -> InvitationRules {
    InvitationRules {
        expiry_days: state.settings.invitation_expiry_days,
    }
}

fn query(q: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, WebError> {
    q.map(|q| q.0)
        .map_err(|e| WebError::BadRequest(e.body_text()))
}

/// Registered vehicles of `state` (all when `None`) after the VIN `after`,
/// in VIN order: a page, and whether there is more.
pub fn vehicle_page(
    store: &Store,
    state: Option<AssignmentState>,
    after: Option<Vin>,
    now_ms: u64,
    rules: InvitationRules,
) -> Result<(Vec<VehicleRow>, bool), StoreError> {
    let mut rows = Vec::new();
    let mut cursor = after;
    loop {
        let chunk = store.registered_vehicles(cursor.as_ref(), CHUNK)?;
        for v in &chunk {
            let invitation = store.current_invitation(v)?;
            let s = assignment_state(v, invitation.as_ref(), now_ms, rules);
            if state.is_some_and(|want| want != s) {
                continue;
            }
            if rows.len() == PAGE_ROWS {
                return Ok((rows, true));
            }
            let customer = match v.customer_id {
                Some(id) => store.customer(id)?,
                None => None,
            };
            rows.push(VehicleRow {
                device_id: store.device_of_vin(&v.vin)?,
                vehicle: v.clone(),
                state: s,
                invitation,
                customer,
            });
        }
        match chunk.last() {
            Some(last) if chunk.len() == CHUNK => cursor = Some(last.vin),
            _ => return Ok((rows, false)),
        }
    }
}

/// Invitations in `state` now (all when `None`) after the id `after`.
pub fn invitation_page(
    store: &Store,
    state: Option<InvitationState>,
    after: Option<u64>,
    now_ms: u64,
    rules: InvitationRules,
) -> Result<(Vec<InvitationRow>, bool), StoreError> {
    let mut rows = Vec::new();
    let mut cursor = after;
    loop {
        let chunk = store.invitations(cursor, CHUNK)?;
        for i in &chunk {
            let s = i.state_at(now_ms, rules);
            if state.is_some_and(|want| want != s) {
                continue;
            }
            if rows.len() == PAGE_ROWS {
                return Ok((rows, true));
            }
            let customer = match i.customer_id {
                Some(id) => store.customer(id)?,
                None => None,
            };
            rows.push(InvitationRow {
                invitation: i.clone(),
                state: s,
                customer,
            });
        }
        match chunk.last() {
            Some(last) if chunk.len() == CHUNK => cursor = Some(last.id),
            _ => return Ok((rows, false)),
        }
    }
}

async fn vehicles(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read vehicles")?;
    let q = query(q)?;
    let filter = match q.state.as_deref() {
        None | Some("" | "all") => None,
        Some(s) => Some(AssignmentState::parse(s).ok_or_else(|| {
            WebError::BadRequest(format!(
                "state {s:?}: one of without_customer, awaiting_assignment, assigned, all"
            ))
        })?),
    };
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(v) => {
            Some(Vin::parse(v).ok_or_else(|| WebError::BadRequest(format!("after {v:?}: a VIN")))?)
        }
    };
    let (now, rules) = (state.clock.now_ms(), rules(&state));
    let store = state.store.clone();
    let (rows, more) =
        blocking(move || Ok(vehicle_page(&store, filter, after, now, rules)?)).await?;
    Ok(views_registry::vehicles(&staff, filter, &rows, more, after.is_some()).into_response())
}

async fn invitations(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read invitations")?;
    let q = query(q)?;
    let filter = match q.state.as_deref() {
        None | Some("" | "all") => None,
        Some(s) => Some(InvitationState::parse(s).ok_or_else(|| {
            WebError::BadRequest(format!(
                "state {s:?}: one of created, sent, accepted, declined, expired, all"
            ))
        })?),
    };
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| WebError::BadRequest(format!("after {v:?}: an invitation number")))?,
        ),
    };
    let (now, rules) = (state.clock.now_ms(), rules(&state));
    let store = state.store.clone();
    let (rows, more) =
        blocking(move || Ok(invitation_page(&store, filter, after, now, rules)?)).await?;
    Ok(
        views_registry::invitations(&staff, filter, &rows, more, after.is_some(), now, rules)
            .into_response(),
    )
}
