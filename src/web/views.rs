//! Views are functions returning `Markup` on one [`layout`]. No HTML
//! outside this module.

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use crate::clock::rfc3339;
use crate::domain::lead::{Lead, LeadType};
use crate::domain::vehicle::{Power, Vehicle};
use crate::leads::{describe, LeadCounts};
use crate::link::message::lamp_name;
use crate::web::auth::Permission;
use crate::web::session::Staff;
use crate::web::Health;

/// The stylesheet, served with the binary.
pub const CSS: &str = include_str!("forecourt.css");

/// The page frame for anyone: brand, title, the page.
pub fn layout(title: &str, body: Markup) -> Markup {
    frame(title, None, body)
}

/// The page frame for a logged-in member of staff: the pages their role
/// may open, who they are, and the button to log out.
pub fn staff_layout(staff: &Staff, title: &str, body: Markup) -> Markup {
    frame(title, Some(staff), body)
}

fn frame(title: &str, staff: Option<&Staff>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Forecourt" }
                link rel="stylesheet" href="/static/forecourt.css";
            }
            body {
                header.top {
                    a.brand href="/" { "Forecourt" }
                    @if staff.is_none() { span.tagline { "workshop appliance" } }
                    @if let Some(staff) = staff {
                        nav.main {
                            a href="/" { "Dashboard" }
                            a href="/today" { "Today" }
                            a href="/leads" { "Leads & error codes" }
                            a href="/vehicles" { "Vehicles" }
                            a href="/customers" { "Customers" }
                            a href="/lot" { "Lot" }
                            a href="/sources" { "Sources" }
                            a href="/status" { "Status" }
                            @if staff.can(Permission::ManageUsers) { a href="/users" { "Users" } }
                            @if staff.can(Permission::ManageSettings) { a href="/settings" { "Settings" } }
                        }
                        form.whoami method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            span { (staff.display_name) " · " (staff.role.as_str()) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub struct StatusView<'a> {
    pub now_ms: u64,
    pub on_lot_ms: u64,
    pub health: &'a Health,
    pub vehicles: &'a [Vehicle],
    pub capped: bool,
    pub open_leads: &'a [Lead],
    pub counts: &'a LeadCounts,
}

/// Euros from cents, e.g. "298.75".
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// "3 min ago", "2 h ago", "5 d ago".
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

pub fn status(staff: &Staff, v: &StatusView<'_>) -> Markup {
    let h = v.health;
    let on_lot = v
        .vehicles
        .iter()
        .filter(|x| x.on_lot(v.now_ms, v.on_lot_ms))
        .count();
    staff_layout(
        staff,
        "Status",
        html! {
            section.summary {
                div.figure { span.value { (h.vehicles) } span.label { "units heard" } }
                div.figure { span.value { (on_lot) } span.label { "on the lot now" } }
                div.figure { span.value { (h.messages) } span.label { "messages applied" } }
                div.figure { span.value { (h.duplicates) } span.label { "duplicates re-ACKed" } }
                div.figure { span.value { (h.rejected) } span.label { "frames rejected" } }
                div.figure class=(if h.status == "ok" { "ok" } else { "bad" }) {
                    span.value { (h.status) } span.label { "health" }
                }
            }
            @if !h.problems.is_empty() {
                ul.problems { @for p in &h.problems { li { (p) } } }
            }
            h2 { "Open leads" }
            section.summary {
                @for ty in LeadType::ALL {
                    div.figure title=(format!("{}: {} open now; {} opened and {} closed in the last 30 days",
                        ty.title(), v.counts.open[ty.as_str()], v.counts.opened_30d[ty.as_str()], v.counts.closed_30d[ty.as_str()])) {
                        span.value { (v.counts.open[ty.as_str()]) }
                        span.label { (ty.title()) }
                    }
                }
            }
            table.leads {
                thead { tr { th { "Opened" } th { "Type" } th { "Vehicle" } th { "What" } th.num { "Est. revenue" } } }
                tbody {
                    @for l in v.open_leads {
                        tr {
                            td.nowrap title=(rfc3339(l.opened_at_ms)) { (ago(v.now_ms, l.opened_at_ms)) }
                            td { span class=(format!("pill type-{}", l.key.ty.as_str())) { (l.key.ty.title()) } }
                            td.mono { @if let Some(vin) = l.vin { (vin) } @else { (l.device_id) } }
                            td {
                                (describe(l))
                                @if let (Some(c), Some(s)) = (l.class, l.severity) { " " span.muted { "(" (c.as_str()) ", severity " (s) ")" } }
                            }
                            td.num { @if let Some(c) = l.estimated_revenue_cents { (money(c)) } }
                        }
                    }
                    @if v.open_leads.is_empty() { tr { td colspan="5" { "No open leads." } } }
                }
            }
            h2 { "Links" }
            table {
                thead { tr { th { "Link" } th { "Transport" } th { "State" } th.num { "Payloads" } th.num { "Rejected" } } }
                tbody {
                    @for l in &h.links {
                        tr {
                            td { (l.name) } td { (l.transport) }
                            td { span class=(if l.up { "pill ok" } else { "pill bad" }) { (l.state) } }
                            td.num { (l.payloads) } td.num { (l.rejected.values().sum::<u64>()) }
                        }
                    }
                    @if h.links.is_empty() { tr { td colspan="5" { "No links configured." } } }
                }
            }
            h2 { "Vehicles" }
            table.vehicles {
                thead { tr {
                    th { "Unit" } th { "VIN" } th { "Last heard" } th.num { "Odometer" }
                    th.num { "Battery" } th { "Lamps lit" } th { "Error codes" } th { "Power" }
                } }
                tbody {
                    @for x in v.vehicles {
                        tr class=(if x.on_lot(v.now_ms, v.on_lot_ms) { "onlot" } else { "" }) {
                            td.mono { (x.device_id) }
                            td.mono { @if let Some(vin) = x.vin { (vin) } @else { span.muted { "unknown" } } }
                            td title=(rfc3339(x.last_heard_ms)) {
                                (ago(v.now_ms, x.last_heard_ms))
                                @if x.on_lot(v.now_ms, v.on_lot_ms) { " " span.pill.ok { "on lot" } }
                                @if x.clock_ahead_ms.is_some() { " " span.pill.warn { "clock ahead" } }
                            }
                            td.num { @if let Some(km) = x.odometer_km { (km) " km" } }
                            td.num {
                                @if let Some(mv) = x.battery_mv {
                                    span class=(if mv < 11_700 { "bad" } else { "" }) { (format!("{:.2} V", mv as f64 / 1000.0)) }
                                }
                            }
                            td { @for (i, l) in x.lamps.iter().enumerate() { @if i > 0 { ", " } (lamp_name(*l)) } }
                            td.mono {
                                @for (ecu, codes) in &x.dtcs {
                                    @for c in codes { span title=(format!("ECU 0x{ecu:04X}, status 0x{:02X}", c.status)) { (c.dtc) } " " }
                                }
                            }
                            td { @match x.power {
                                Power::Powered => span.muted { "powered" },
                                Power::Lost { since_ms, reason } => span.bad title=(rfc3339(since_ms)) { "lost (" (reason) ")" },
                            } }
                        }
                    }
                    @if v.vehicles.is_empty() { tr { td colspan="8" { "No unit heard yet." } } }
                }
            }
            @if v.capped { p.muted { "Showing the first " (v.vehicles.len()) " units." } }
            p.muted { "Page built " (rfc3339(v.now_ms)) "." }
        },
    )
}

pub fn error(code: StatusCode, message: &str) -> Markup {
    layout(
        code.canonical_reason().unwrap_or("Error"),
        html! {
            h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) }
            p { (message) }
            p { a href="/" { "Back to the dashboard" } }
        },
    )
}
