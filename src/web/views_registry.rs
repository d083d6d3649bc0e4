//! Views of the registered-vehicle and invitation lists: a tab per state
//! with its one-line definition, then the rows.

use maud::{html, Markup};

use crate::clock::rfc3339;
use crate::domain::customer::{AssignmentState, InvitationRules, InvitationState};
use crate::web::registry::{InvitationRow, VehicleRow};
use crate::web::session::Staff;
use crate::web::views::staff_layout;

/// The date part of a time, for lists.
fn date(ms: u64) -> String {
    rfc3339(ms).get(..10).unwrap_or_default().to_string()
}

pub fn vehicles(
    staff: &Staff,
    filter: Option<AssignmentState>,
    rows: &[VehicleRow],
    more: bool,
    paged: bool,
) -> Markup {
    let href = |s: Option<AssignmentState>| match s {
        Some(s) => format!("/vehicles/registered?state={}", s.as_str()),
        None => "/vehicles/registered".to_string(),
    };
    staff_layout(
        staff,
        "Registered vehicles",
        html! {
            p.crumbs { a href="/vehicles" { "← Units heard" } }
            div.pagehead {
                h1 { "Registered vehicles" }
                p.muted { "Vehicles the workshop knows by VIN: imported from the DMS, entered here, or named by a dongle. With or without a dongle." }
            }
            nav.tabs aria-label="Assignment states" {
                a class=(if filter.is_none() { "tab current" } else { "tab" }) href=(href(None)) { "All" }
                @for s in AssignmentState::ALL {
                    a data-state=(s.as_str()) class=(if filter == Some(s) { "tab current" } else { "tab" }) href=(href(Some(s))) title=(s.definition()) { (s.label()) }
                }
            }
            @if let Some(s) = filter { p.definition { strong { (s.label()) ": " } (s.definition()) } }
            table.registry {
                thead { tr { th { "VIN" } th { "Vehicle" } th { "Customer or fleet" } th { "Unit" } th { "State" } th { "Invitation" } } }
                tbody {
                    @for r in rows {
                        @let v = &r.vehicle;
                        tr {
                            td.mono { (v.vin) }
                            td { (v.brand.as_deref().unwrap_or("")) " " (v.model.as_deref().unwrap_or("")) @if let Some(y) = v.model_year { " " (y) } }
                            td {
                                @if let Some(c) = &r.customer { a href=(format!("/customers/{}", c.id)) { (c.name) } }
                                @if let Some(f) = &v.fleet { @if r.customer.is_some() { " · " } "fleet " (f) }
                                @if r.customer.is_none() && v.fleet.is_none() { span.muted { "—" } }
                            }
                            td { @match r.device_id {
                                Some(d) => a.mono href=(format!("/vehicles/{d}")) { (d) },
                                None => span.pill.warn { "not connected" },
                            } }
                            td { span.pill title=(r.state.definition()) { (r.state.label()) } }
                            td { @if let Some(i) = &r.invitation { (i.state.label()) " · " (date(i.updated_ms)) } }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="6" .empty { "No vehicle in this state." } } }
                }
            }
            nav.pager {
                @if paged { a href=(href(filter)) { "« First page" } }
                @if let (true, Some(last)) = (more, rows.last()) {
                    a.next href=(format!("{}{}after={}", href(filter), if filter.is_some() { "&" } else { "?" }, last.vehicle.vin)) { "Next page »" }
                }
            }
        },
    )
}

pub fn invitations(
    staff: &Staff,
    filter: Option<InvitationState>,
    rows: &[InvitationRow],
    more: bool,
    paged: bool,
    now_ms: u64,
    rules: InvitationRules,
) -> Markup {
    let href = |s: Option<InvitationState>| match s {
        Some(s) => format!("/invitations?state={}", s.as_str()),
        None => "/invitations".to_string(),
    };
    staff_layout(
        staff,
        "Invitations",
        html! {
            div.pagehead {
                h1 { "Invitations to the customer app" }
                p.muted { "A vehicle becomes active when its customer accepts (R-VEH-3); a sent invitation expires after " (rules.expiry_days) " days." }
            }
            nav.tabs aria-label="Invitation states" {
                a class=(if filter.is_none() { "tab current" } else { "tab" }) href=(href(None)) { "All" }
                @for s in InvitationState::ALL {
                    a data-state=(s.as_str()) class=(if filter == Some(s) { "tab current" } else { "tab" }) href=(href(Some(s))) title=(s.definition()) { (s.label()) }
                }
            }
            @if let Some(s) = filter { p.definition { strong { (s.label()) ": " } (s.definition()) } }
            table.registry {
                thead { tr { th.num { "No." } th { "VIN" } th { "Customer" } th { "State" } th { "Created" } th { "Sent" } th { "Expires" } } }
                tbody {
                    @for r in rows {
                        @let i = &r.invitation;
                        tr {
                            td.num { (i.id) }
                            td.mono { (i.vin) }
                            td { @if let Some(c) = &r.customer { a href=(format!("/customers/{}", c.id)) { (c.name) } } @else { span.muted { "—" } } }
                            td { span.pill title=(r.state.definition()) { (r.state.label()) } }
                            td { (date(i.created_ms)) }
                            td { @if let Some(s) = i.sent_ms { (date(s)) } }
                            td { @if let Some(e) = i.expires_at(rules) {
                                @if r.state == InvitationState::Sent && e > now_ms { (date(e)) } @else if r.state == InvitationState::Expired { span.muted { (date(e)) } }
                            } }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" .empty { "No invitation in this state." } } }
                }
            }
            nav.pager {
                @if paged { a href=(href(filter)) { "« First page" } }
                @if let (true, Some(last)) = (more, rows.last()) {
                    a.next href=(format!("{}{}after={}", href(filter), if filter.is_some() { "&" } else { "?" }, last.invitation.id)) { "Next page »" }
                }
            }
        },
    )
}
