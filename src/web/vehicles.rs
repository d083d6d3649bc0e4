//! The vehicles pages: the list of units heard, paged by device id, and a
//! vehicle's page (identity, consent, what it reports now, its leads and
//! error codes, the 7-day battery graph, its disconnections and recent
//! events).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::lead::Lead;
use crate::domain::vehicle::{EventKind, Vehicle, VehicleEvent, HOUR_MS};
use crate::link::message::PowerLossReason;
use crate::store::leads::LeadFilter;
use crate::store::BatteryHour;
use crate::web::api::{vehicle_json, VehicleContext, VehicleJson};
use crate::web::auth::Permission;
use crate::web::session::{Staff, WebError};
use crate::web::users::blocking;
use crate::web::views_vehicles;

/// Vehicles on one page of the list.
pub const PAGE_ROWS: usize = 100;
/// Hours in the battery graph: the R-LEAD-BATT window.
pub const GRAPH_HOURS: u64 = 7 * 24;
/// Leads of one vehicle shown on its page (newest first).
const VEHICLE_LEADS: usize = 200;
/// Recent events shown on a vehicle's page.
const RECENT_EVENTS: usize = 50;

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/vehicles"), ("GET", "/vehicles/{device_id}")];

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/vehicles", get(list))
        .route("/vehicles/{device_id}", get(show))
}

/// One disconnection of a unit (R-LEAD-DISC): when, why, and how long it
/// was down once it came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnection {
    pub at_ms: u64,
    pub reason: PowerLossReason,
    /// `None` while it is still down, or when it came back with a HELLO
    /// that does not say for how long.
    pub down_s: Option<u32>,
    pub restored_ms: Option<u64>,
}

/// A unit's disconnections from its events (any order), newest first.
pub fn disconnections(events: &[VehicleEvent]) -> Vec<Disconnection> {
    let mut sorted: Vec<&VehicleEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_ms);
    let mut out: Vec<Disconnection> = Vec::new();
    for e in sorted {
        let still_down = out.last_mut().filter(|d| d.restored_ms.is_none());
        match &e.kind {
            EventKind::PowerLost { reason } => out.push(Disconnection {
                at_ms: e.at_ms,
                reason: *reason,
                down_s: None,
                restored_ms: None,
            }),
            EventKind::PowerRestored { down_s } => {
                if let Some(d) = still_down {
                    d.down_s = Some(*down_s);
                    d.restored_ms = Some(e.at_ms);
                }
            }
            EventKind::Hello {
                after_power_loss: true,
                ..
            } => {
                if let Some(d) = still_down {
                    d.restored_ms = Some(e.at_ms);
                }
            }
            _ => {}
        }
    }
    out.reverse();
    out
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The last device id of the previous page.
    pub after: Option<u64>,
}

/// One row of the vehicles list.
pub struct VehicleRow {
    pub vehicle: Vehicle,
    pub json: VehicleJson,
}

async fn list(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read vehicles")?;
    let after = query
        .map_err(|_| WebError::BadRequest("after: a device id from the \"Next page\" link".into()))?
        .0
        .after;
    let cx = VehicleContext::read(&state)?;
    let store = state.store.clone();
    let (rows, more) = blocking(move || {
        let mut page = store.vehicles(after, PAGE_ROWS + 1)?;
        let more = page.len() > PAGE_ROWS;
        page.truncate(PAGE_ROWS);
        let rows = page
            .into_iter()
            .map(|v| {
                Ok(VehicleRow {
                    json: vehicle_json(&store, &cx, &v)?,
                    vehicle: v,
                })
            })
            .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
        Ok((rows, more))
    })
    .await?;
    let next = more
        .then(|| rows.last().map(|r| r.vehicle.device_id))
        .flatten();
    Ok(
        views_vehicles::list(&staff, &rows, after.is_some(), next, state.clock.now_ms())
            .into_response(),
    )
}

/// Everything a vehicle's page shows.
pub struct VehiclePage {
    pub vehicle: Vehicle,
    pub json: VehicleJson,
    pub leads: Vec<Lead>,
    /// Hourly battery aggregates of the graph's hours, oldest first.
    pub battery: Vec<(u64, BatteryHour)>,
    /// The first hour of the graph.
    pub from_hour: u64,
    pub disconnections: Vec<Disconnection>,
    pub events: Vec<VehicleEvent>,
}

async fn show(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read vehicles")?;
    let device_id: u64 = raw
        .parse()
        .map_err(|_| WebError::NotFound(format!("There is no vehicle {raw:?}.")))?;
    let cx = VehicleContext::read(&state)?;
    let now = cx.now_ms;
    let store = state.store.clone();
    let page = blocking(move || {
        let vehicle = store
            .vehicle(device_id)?
            .ok_or_else(|| WebError::NotFound(format!("No unit {device_id} has been heard.")))?;
        let json = vehicle_json(&store, &cx, &vehicle)?;
        let filter = LeadFilter {
            device_id: Some(device_id),
            ..Default::default()
        };
        let leads = store.leads(&filter, None, VEHICLE_LEADS)?.leads;
        let to_hour = now / HOUR_MS;
        let from_hour = to_hour.saturating_sub(GRAPH_HOURS - 1);
        let battery = store.battery_hours(device_id, from_hour, to_hour)?;
        let all_events = store.events(device_id, crate::store::EVENTS_PER_VEHICLE as usize)?;
        let disconnections = disconnections(&all_events);
        let events = all_events.into_iter().take(RECENT_EVENTS).collect();
        Ok(VehiclePage {
            vehicle,
            json,
            leads,
            battery,
            from_hour,
            disconnections,
            events,
        })
    })
    .await?;
    Ok(views_vehicles::vehicle(&staff, &page, now).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::message::Firmware;

    fn event(at_ms: u64, kind: EventKind) -> VehicleEvent {
        VehicleEvent {
            at_ms,
            received_ms: at_ms,
            kind,
        }
    }

    #[test]
    fn disconnections_pair_each_loss_with_what_ended_it() {
        let lost = |reason| EventKind::PowerLost { reason };
        let events = vec![
            // Newest first, as the store reads them.
            event(9_000, lost(PowerLossReason::SupplyLow)),
            event(
                7_000,
                EventKind::Hello {
                    vin: None,
                    firmware: Firmware(1, 0, 0),
                    after_power_loss: true,
                },
            ),
            event(5_000, lost(PowerLossReason::Unknown)),
            event(4_000, EventKind::PowerRestored { down_s: 3 }),
            event(1_000, lost(PowerLossReason::Unplugged)),
            event(500, EventKind::PowerRestored { down_s: 99 }),
        ];
        let d = disconnections(&events);
        assert_eq!(d.len(), 3);
        assert_eq!(
            (d[0].at_ms, d[0].restored_ms, d[0].down_s),
            (9_000, None, None)
        );
        assert_eq!(
            (d[1].at_ms, d[1].restored_ms, d[1].down_s),
            (5_000, Some(7_000), None)
        );
        assert_eq!(
            (d[2].at_ms, d[2].restored_ms, d[2].down_s, d[2].reason),
            (1_000, Some(4_000), Some(3), PowerLossReason::Unplugged)
        );
    }
}
