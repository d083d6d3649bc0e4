//! Views of the vehicles pages: the list, a vehicle's page, and its 7-day
//! battery graph as inline SVG (no script, prints as it shows).

use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped};

use crate::clock::rfc3339;
use crate::domain::lead::{classify, LeadStatus, LOW_BATTERY_MV};
use crate::domain::vehicle::{EventKind, Power, VehicleEvent, HOUR_MS};
use crate::leads::describe;
use crate::link::message::lamp_name;
use crate::store::BatteryHour;
use crate::web::session::Staff;
use crate::web::vehicles::{VehiclePage, VehicleRow, GRAPH_HOURS};
use crate::web::views::{ago, money, staff_layout};
use crate::web::views_leads::close_reason_text;

fn volts(mv: u16) -> String {
    format!("{:.2} V", mv as f64 / 1000.0)
}

fn consent_pill(consent: &str) -> Markup {
    let class = match consent {
        "granted" | "not_required" => "pill ok",
        "denied" => "pill bad",
        _ => "pill warn",
    };
    let text = match consent {
        "not_required" => "not required",
        "pending" => "awaiting consent",
        "denied" => "consent denied",
        other => other,
    };
    html! { span class=(class) { (text) } }
}

pub fn list(
    staff: &Staff,
    rows: &[VehicleRow],
    paged: bool,
    next: Option<u64>,
    now_ms: u64,
) -> Markup {
    staff_layout(
        staff,
        "Vehicles",
        html! {
            div.pagehead {
                h1 { "Vehicles" }
                p.muted { "Every unit heard, by device id. A vehicle's page has its leads, error codes and battery history. "
                    a href="/vehicles/registered" { "Registered vehicles by VIN" } ", with or without a unit." }
            }
            table.vehicles {
                thead { tr {
                    th { "Unit" } th { "VIN" } th { "Brand" } th.num { "Year" } th { "Last heard" }
                    th.num { "Odometer" } th.num { "Battery" } th.num { "Open leads" } th { "Consent" }
                } }
                tbody {
                    @for r in rows {
                        @let v = &r.vehicle;
                        tr class=(if r.json.on_lot { "onlot" } else { "" }) {
                            td.mono { a href=(format!("/vehicles/{}", v.device_id)) { (v.device_id) } }
                            td.mono { @if let Some(vin) = v.vin { (vin) } @else { span.muted { "unknown" } } }
                            td { @if let Some(b) = &r.json.brand { (b) } }
                            td.num { @if let Some(y) = r.json.model_year { (y) } }
                            td.nowrap title=(rfc3339(v.last_heard_ms)) {
                                (ago(now_ms, v.last_heard_ms))
                                @if r.json.on_lot { " " span.pill.ok { "on lot" } }
                            }
                            td.num { @if let Some(km) = v.odometer_km { (km) " km" } }
                            td.num { @if let Some(mv) = v.battery_mv {
                                span class=(if u64::from(mv) < LOW_BATTERY_MV { "bad" } else { "" }) { (volts(mv)) }
                            } }
                            td.num { @if r.json.open_leads > 0 { span.pill.warn { (r.json.open_leads) } } @else { span.muted { "0" } } }
                            td { (consent_pill(r.json.consent)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="9" .empty { "No unit heard yet." } } }
                }
            }
            nav.pager {
                @if paged { a href="/vehicles" { "« First page" } }
                @if let Some(n) = next { a.next href=(format!("/vehicles?after={n}")) { "Next page »" } }
            }
        },
    )
}

pub fn vehicle(staff: &Staff, p: &VehiclePage, now_ms: u64) -> Markup {
    let v = &p.vehicle;
    let j = &p.json;
    let open: Vec<_> = p
        .leads
        .iter()
        .filter(|l| l.status == LeadStatus::Open)
        .collect();
    staff_layout(
        staff,
        &format!("Vehicle {}", v.device_id),
        html! {
            p.crumbs { a href="/vehicles" { "← Vehicles" } }
            div.pagehead {
                h1.mono { @if let Some(vin) = v.vin { (vin) } @else { "Unit " (v.device_id) } }
                p {
                    @if let Some(b) = &j.brand { (b) " " }
                    @if let Some(m) = &j.model { (m) " " }
                    @if let Some(y) = j.model_year { (y) " " }
                    @if let Some(c) = &j.customer_id { a href=(format!("/customers/{c}")) { "customer" } " " }
                    @if matches!(j.consent, "pending" | "denied") { (consent_pill(j.consent)) " " }
                    @if j.on_lot { span.pill.ok { "on the lot" } " " }
                    @match v.power {
                        Power::Powered => {},
                        Power::Lost { since_ms, reason } => span.pill.bad title=(rfc3339(since_ms)) { "unit without power: " (reason.to_string()) },
                    }
                }
            }
            div.columns {
                section.card {
                    h2 { "Identity" }
                    dl.facts {
                        dt { "Unit (device id)" } dd.mono { (v.device_id) }
                        dt { "VIN" } dd.mono { @if let Some(vin) = v.vin { (vin) } @else { span.muted { "not reported" } } }
                        dt { "Firmware" } dd { @if let Some(f) = v.firmware { (f.to_string()) } }
                        dt { "First heard" } dd { (rfc3339(v.first_seen_ms)) }
                        dt { "Last heard" } dd title=(rfc3339(v.last_heard_ms)) { (ago(now_ms, v.last_heard_ms)) }
                        dt { "Consent" } dd { (consent_pill(j.consent)) }
                        @if let Some(ahead) = v.clock_ahead_ms { dt { "Clock" } dd.bad { "ahead by " (ahead / 1000) " s" } }
                    }
                }
                section.card {
                    h2 { "Now" }
                    dl.facts {
                        dt { "Odometer" } dd { @if let Some(km) = v.odometer_km { (km) " km" } }
                        dt { "12 V battery" } dd { @if let Some(mv) = v.battery_mv {
                            span class=(if u64::from(mv) < LOW_BATTERY_MV { "bad" } else { "" }) { (volts(mv)) }
                        } }
                        dt { "Lamps lit" } dd {
                            @if v.lamps.is_empty() { span.muted { "none" } }
                            @for (i, l) in v.lamps.iter().enumerate() { @if i > 0 { ", " } (lamp_name(*l)) }
                        }
                        dt { "Messages" } dd { (v.messages) }
                    }
                }
            }
            section.card {
                h2 { "12 V battery, last 7 days" }
                (battery_graph(&p.battery, p.from_hour))
            }
            section.card {
                h2 { "Leads" span.muted { " · " (open.len()) " open" } }
                table.leads {
                    thead { tr { th { "Opened" } th { "Type" } th { "What" } th { "Status" } th.num { "Est. revenue" } } }
                    tbody {
                        @for l in &p.leads {
                            tr {
                                td.nowrap title=(rfc3339(l.opened_at_ms)) { (ago(now_ms, l.opened_at_ms)) }
                                td { span class=(format!("pill type-{}", l.key.ty.as_str())) { (l.key.ty.title()) } }
                                td { a.lead-link href=(format!("/leads/{}", l.id)) { (describe(l)) } }
                                td { @match l.status {
                                    LeadStatus::Open => span.pill.warn { "open" },
                                    LeadStatus::Closed => span.pill.ok title=(l.close_reason.map(close_reason_text).unwrap_or("")) { "closed" },
                                } }
                                td.num { @if let Some(c) = l.estimated_revenue_cents { (money(c)) } }
                            }
                        }
                        @if p.leads.is_empty() { tr { td colspan="5" .empty { "No leads for this vehicle." } } }
                    }
                }
            }
            section.card {
                h2 { "Error codes" }
                table {
                    thead { tr { th { "ECU" } th { "Code" } th { "Status byte" } th { "Class" } } }
                    tbody {
                        @for (ecu, codes) in &v.dtcs {
                            @for c in codes {
                                tr {
                                    td.mono { (format!("0x{ecu:03X}")) }
                                    td.mono { (c.dtc) }
                                    td.mono { (format!("0x{:02X}", c.status)) }
                                    td { @match classify(c.status) { Some(cl) => (cl.as_str()), None => span.muted { "no lead (not active)" } } }
                                }
                            }
                        }
                        @if v.dtcs.values().all(|c| c.is_empty()) { tr { td colspan="4" .empty { "No stored codes in the latest reports." } } }
                    }
                }
            }
            section.card #disconnections {
                h2 { "Disconnections" }
                table {
                    thead { tr { th { "Lost power" } th { "Reason" } th { "Back" } th.num { "Down for" } } }
                    tbody {
                        @for d in &p.disconnections {
                            tr {
                                td { (rfc3339(d.at_ms)) }
                                td { (d.reason.to_string()) }
                                td { @match d.restored_ms { Some(r) => (rfc3339(r)), None => span.bad { "still down" } } }
                                td.num { @if let Some(s) = d.down_s { (duration(s)) } }
                            }
                        }
                        @if p.disconnections.is_empty() { tr { td colspan="4" .empty { "The unit has not lost power." } } }
                    }
                }
            }
            section.card {
                h2 { "Recent events" }
                ul.plain.events {
                    @for e in &p.events { li { span.muted { (rfc3339(e.at_ms)) } " " (event_text(e)) } }
                    @if p.events.is_empty() { li.muted { "None kept." } }
                }
            }
        },
    )
}

fn duration(s: u32) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn event_text(e: &VehicleEvent) -> String {
    match &e.kind {
        EventKind::Hello {
            vin,
            firmware,
            after_power_loss,
        } => format!(
            "HELLO{}, firmware {firmware}{}",
            vin.map(|v| format!(" from {v}")).unwrap_or_default(),
            if *after_power_loss {
                ", after a power loss"
            } else {
                ""
            }
        ),
        EventKind::IgnitionOn { odometer_km } => format!("Ignition on at {odometer_km} km"),
        EventKind::IgnitionOff { odometer_km, run_s } => {
            format!(
                "Ignition off at {odometer_km} km after {}",
                duration(*run_s)
            )
        }
        EventKind::Lamp { lamp, lit } => format!(
            "{} lamp {}",
            lamp_name(*lamp),
            if *lit { "lit" } else { "off" }
        ),
        EventKind::DtcReport { ecu, codes } => format!(
            "Error codes from ECU 0x{ecu:03X}: {}",
            if codes.is_empty() {
                "none".to_string()
            } else {
                codes
                    .iter()
                    .map(|c| format!("{} (0x{:02X})", c.dtc, c.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        EventKind::PowerLost { reason } => format!("Unit lost power: {reason}"),
        EventKind::PowerRestored { down_s } => {
            format!("Power restored after {}", duration(*down_s))
        }
        EventKind::ClockAhead { ahead_ms } => {
            format!("Unit clock {} s ahead", ahead_ms / 1000)
        }
    }
}

// ---- The battery graph ----

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;
/// The voltage axis, in millivolts: covers a flat battery to a charging one.
const V_MIN: f64 = 10_500.0;
const V_MAX: f64 = 15_000.0;

fn x_of(hour_index: f64) -> f64 {
    LEFT + hour_index / GRAPH_HOURS as f64 * (W - LEFT - RIGHT)
}

fn y_of(mv: f64) -> f64 {
    let clamped = mv.clamp(V_MIN, V_MAX);
    TOP + (V_MAX - clamped) / (V_MAX - V_MIN) * (H - TOP - BOTTOM)
}

/// The hourly means as SVG: parked hours as a line (broken where an hour
/// has no parked sample), running hours as dots, the R-LEAD-BATT threshold
/// dashed, a day grid. `hours` are (hour since epoch, aggregate).
pub fn battery_graph(hours: &[(u64, BatteryHour)], from_hour: u64) -> Markup {
    let parked: Vec<(u64, f64)> = hours
        .iter()
        .filter(|(_, h)| h.parked_n > 0)
        .map(|(hr, h)| (*hr, h.parked_sum_mv as f64 / h.parked_n as f64))
        .collect();
    let running: Vec<(u64, f64)> = hours
        .iter()
        .filter(|(_, h)| h.running_n > 0)
        .map(|(hr, h)| (*hr, h.running_sum_mv as f64 / h.running_n as f64))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="battery" viewBox="0 0 {W} {H}" role="img" aria-labelledby="battery-title battery-desc" preserveAspectRatio="xMidYMid meet">"#
    );
    let _ = write!(
        svg,
        r#"<title id="battery-title">12 V battery, hourly means, last 7 days</title><desc id="battery-desc">{} parked hours, {} running hours; the dashed line is the 11.7 V low-battery threshold.</desc>"#,
        parked.len(),
        running.len()
    );
    for mv in [11_000u32, 12_000, 13_000, 14_000] {
        let y = y_of(mv as f64);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{} V</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            mv / 1000
        );
    }
    // A line at each midnight (UTC), labelled with the day it starts.
    let first_day = (from_hour * HOUR_MS).div_ceil(24 * HOUR_MS);
    for day in first_day.. {
        let hour = day * 24;
        if hour >= from_hour + GRAPH_HOURS {
            break;
        }
        let x = x_of((hour - from_hour) as f64);
        let label = rfc3339(hour * HOUR_MS).get(5..10).unwrap_or("").to_string();
        let _ = write!(
            svg,
            r#"<line class="grid day" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}"/><text class="axis" x="{:.1}" y="{}">{label}</text>"#,
            H - BOTTOM,
            x + 3.0,
            H - 10.0
        );
    }
    let t = y_of(LOW_BATTERY_MV as f64);
    let _ = write!(
        svg,
        r#"<line class="threshold" x1="{LEFT}" x2="{}" y1="{t:.1}" y2="{t:.1}"><title>11.7 V: below this parked mean over 7 days, a low-battery lead opens</title></line>"#,
        W - RIGHT
    );
    for run in runs(&parked) {
        let points: Vec<String> = run
            .iter()
            .map(|(hr, mv)| {
                format!(
                    "{:.1},{:.1}",
                    x_of((hr - from_hour) as f64 + 0.5),
                    y_of(*mv)
                )
            })
            .collect();
        if points.len() == 1 {
            let (x, y) = points[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle class="parked" cx="{x}" cy="{y}" r="2.5"/>"#);
        } else {
            let _ = write!(
                svg,
                r#"<polyline class="parked" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    for (hr, mv) in &running {
        let _ = write!(
            svg,
            r#"<circle class="running" cx="{:.1}" cy="{:.1}" r="2"><title>{:.2} V running</title></circle>"#,
            x_of((hr - from_hour) as f64 + 0.5),
            y_of(*mv),
            mv / 1000.0
        );
    }
    svg.push_str("</svg>");
    html! {
        figure.graph {
            (PreEscaped(svg))
            figcaption {
                span.key.parked { "parked (hourly mean)" }
                span.key.running { "engine running" }
                span.key.threshold { "11.7 V threshold" }
                @if parked.is_empty() && running.is_empty() { " · " span.muted { "no readings in the last 7 days" } }
            }
        }
    }
}

/// Consecutive hours, split where an hour is missing.
fn runs(points: &[(u64, f64)]) -> Vec<&[(u64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        if i == points.len() || points[i].0 != points[i - 1].0 + 1 {
            if start < i {
                out.push(&points[start..i]);
            }
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(parked: &[u16], running: &[u16]) -> BatteryHour {
        let mut h = BatteryHour::default();
        for mv in parked {
            h.add(crate::link::message::Engine::Parked, *mv);
        }
        for mv in running {
            h.add(crate::link::message::Engine::Running, *mv);
        }
        h
    }

    #[test]
    fn the_graph_breaks_its_line_at_missing_hours_and_marks_the_threshold() {
        let from = 480_000;
        let hours = vec![
            (from, hour(&[12_400, 12_300], &[])),
            (from + 1, hour(&[12_200], &[14_100])),
            (from + 5, hour(&[11_500], &[])),
            (from + 6, hour(&[11_400], &[])),
            (from + 9, hour(&[], &[13_900])),
        ];
        let svg = battery_graph(&hours, from).into_string();
        assert_eq!(svg.matches("<polyline class=\"parked\"").count(), 2);
        assert_eq!(svg.matches("<circle class=\"running\"").count(), 2);
        assert!(svg.contains("class=\"threshold\""));
        assert!(svg.contains("4 parked hours, 2 running hours"));
        // The mean of 12.4 and 12.3 V sits above the 11.7 V line.
        let y_first = y_of(12_350.0);
        assert!(y_first < y_of(LOW_BATTERY_MV as f64));
    }

    #[test]
    fn an_empty_week_says_so() {
        let svg = battery_graph(&[], 1_000).into_string();
        assert!(svg.contains("no readings in the last 7 days"));
        assert!(!svg.contains("polyline"));
    }

    #[test]
    fn runs_split_on_gaps() {
        let p = [(1, 0.0), (2, 0.0), (4, 0.0), (5, 0.0), (6, 0.0), (9, 0.0)];
        let lens: Vec<usize> = runs(&p).iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![2, 3, 1]);
    }
}
