//! The view of the lot page (R-LOT-1), on the shared staff layout: the
//! scan and its progress, then the vehicles on the lot, most recently
//! heard first, with what needs a look marked.

use maud::{html, Markup};

use crate::clock::rfc3339;
use crate::domain::vehicle::{Power, Vehicle};
use crate::link::message::lamp_name;
use crate::web::lot::{Lot, LotRow, Scan, LOW_VOLTAGE_MV, SCAN_MS};
use crate::web::session::Staff;
use crate::web::views::{ago, staff_layout};

pub struct LotView<'a> {
    pub now_ms: u64,
    pub on_lot_ms: u64,
    pub lot: &'a Lot,
    pub scan: Option<&'a Scan>,
    /// Links configured.
    pub links: usize,
    /// Why the last request was refused.
    pub message: Option<&'a str>,
}

pub fn lot(staff: &Staff, v: &LotView<'_>) -> Markup {
    let attention = v
        .lot
        .rows
        .iter()
        .filter(|r| !r.attention.is_empty())
        .count();
    staff_layout(
        staff,
        "Lot",
        html! {
            h1 { "Lot" }
            p.muted {
                "Vehicles whose unit was heard in the last " (v.on_lot_ms / 60_000) " minutes, "
                "those that need a look first. A scan asks every unit in reach to answer now."
            }
            section.summary {
                div.figure { span.value { (v.lot.on_lot) } span.label { "on the lot" } }
                div.figure class=(if attention > 0 { "bad" } else { "ok" }) {
                    span.value { (attention) } span.label { "need a look" }
                }
                div.figure { span.value { (v.lot.booked_today) } span.label { "booked today" } }
            }
            (scan_box(staff, v))
            h2 { "On the lot" }
            (vehicles(v))
            @if v.lot.rows.len() < v.lot.on_lot {
                p.muted { "Showing the " (v.lot.rows.len()) " most recently heard of " (v.lot.on_lot) " units." }
            }
            p.muted { "Page built " (rfc3339(v.now_ms)) "." }
        },
    )
}

fn scan_box(staff: &Staff, v: &LotView<'_>) -> Markup {
    let running = v.scan.filter(|s| s.running(v.now_ms));
    html! {
        section.scan id="scan" {
            h2 { "Lot scan" }
            @if let Some(m) = v.message { ul.problems role="alert" { li { (m) } } }
            @if let Some(s) = running {
                p {
                    span.pill.warn { "scanning" } " Started " (ago(v.now_ms, s.started_ms)) " by " (s.by)
                    "; ends in " (s.seconds_left(v.now_ms)) " s. This page reloads by itself."
                }
            } @else {
                @if let Some(s) = v.scan {
                    p.muted { "Last scan started " span title=(rfc3339(s.started_ms)) { (ago(v.now_ms, s.started_ms)) } " by " (s.by) "." }
                }
                @if v.links == 0 {
                    p.muted { "No serial or CAN link is configured: no unit can hear a scan." }
                } @else {
                    form.scan method="post" action="/lot/scan" {
                        input type="hidden" name="csrf" value=(staff.csrf);
                        button type="submit" { "Scan the lot" }
                        " " span.muted { "Units have " (SCAN_MS / 1000) " s to answer." }
                    }
                }
            }
            @if let (Some(s), Some(p)) = (v.scan, v.lot.progress.as_ref()) {
                section.summary.progress aria-live="polite" {
                    div.figure { span.value { (p.heard) } span.label { "units heard" } }
                    div.figure { span.value { (p.expected) } span.label { "units expected (booked today)" } }
                    div.figure class=(if p.missing.is_empty() { "" } else { "bad" }) {
                        span.value { (p.missing.len()) } span.label { "units missing" }
                    }
                }
                @if p.expected == 0 {
                    p.muted { "No bookings today: no unit is expected." }
                }
                @if !p.missing.is_empty() {
                    p { "Not heard since the scan started: "
                        @for (i, id) in p.missing.iter().enumerate() {
                            @if i > 0 { ", " }
                            a.mono href=(format!("/vehicles/{id}")) { (id) }
                        }
                    }
                }
                @if s.links_sent < s.links {
                    p.muted { "Sent on " (s.links_sent) " of " (s.links) " links." }
                }
            }
        }
    }
}

fn vehicles(v: &LotView<'_>) -> Markup {
    let since = v.scan.map(|s| s.started_ms);
    html! {
        table.lot {
            thead { tr {
                th { "Unit" } th { "Last heard" } th.num { "Battery" } th { "Lamps lit" }
                th { "Power" } th { "Open leads" } th { "Booking" } th { "Needs a look" }
            } }
            tbody {
                @for r in &v.lot.rows { (row(v.now_ms, since, r)) }
                @if v.lot.rows.is_empty() { tr { td colspan="8" { "No unit heard recently." } } }
            }
        }
    }
}

fn row(now_ms: u64, scan_since: Option<u64>, r: &LotRow) -> Markup {
    let x = &r.vehicle;
    html! {
        tr class=(if r.attention.is_empty() { "onlot" } else { "onlot attention" }) {
            td {
                a.mono href=(format!("/vehicles/{}", x.device_id)) { (x.device_id) }
                br;
                span.mono.muted { @if let Some(vin) = x.vin { (vin) } @else { "VIN unknown" } }
            }
            td title=(rfc3339(x.last_heard_ms)) {
                (ago(now_ms, x.last_heard_ms))
                @if scan_since.is_some_and(|s| x.last_heard_ms >= s) { " " span.pill.ok { "answered scan" } }
            }
            td.num { (battery(x)) }
            td { @for (i, l) in x.lamps.iter().enumerate() { @if i > 0 { ", " } span.bad { (lamp_name(*l)) } } }
            td { @match x.power {
                Power::Powered => span.muted { "powered" },
                Power::Lost { since_ms, reason } => span.bad title=(rfc3339(since_ms)) { "lost (" (reason) ")" },
            } }
            td {
                @if r.open_leads.is_empty() { span.muted { "none" } }
                @else {
                    strong { (r.open_leads.len()) } " "
                    @for l in &r.open_leads {
                        a href=(format!("/leads/{}", l.id)) class=(format!("pill type-{}", l.key.ty.as_str())) title=(crate::leads::describe(l)) {
                            (l.key.ty.title())
                        }
                        " "
                    }
                }
            }
            td { @if r.booked_today { span.pill.ok { "booked today" } } @else { "—" } }
            td { @for a in &r.attention { span.pill.bad { (a.label()) } " " } }
        }
    }
}

fn battery(x: &Vehicle) -> Markup {
    html! {
        @if let Some(mv) = x.battery_mv {
            span class=(if mv < LOW_VOLTAGE_MV { "bad" } else { "" }) { (format!("{:.2} V", f64::from(mv) / 1000.0)) }
        } @else { span.muted { "—" } }
    }
}
