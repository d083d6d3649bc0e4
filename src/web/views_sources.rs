//! Views of the customer source pages (R-SRC-1..3): the sources with
//! their mapping and marketing spend, the day's vehicles with the
//! customers whose source is unknown marked, and the source report with
//! its bar chart (inline SVG built as a string, like the battery graph).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped};

use crate::clock::rfc3339;
use crate::domain::customer::{
    format_date, suggest_category, GroupReport, MainCategory, ReportGroup, ReportLine,
    SourceOrigin, SourceReport,
};
use crate::web::session::Staff;
use crate::web::sources::{
    presets, shown_groups, Period, Refusal, SourcesPage, Today, TodayRow, CHANGE,
};
use crate::web::views::{ago, money, staff_layout};

/// The refusal of the form `form`, if that is the one refused.
fn refusal_for<'a>(refusal: Option<&'a Refusal>, form: &str) -> Option<&'a Refusal> {
    refusal.filter(|r| r.form == form)
}

fn refused(r: Option<&Refusal>) -> Markup {
    html! { @if let Some(r) = r { p.error role="alert" { (r.message) } } }
}

/// A select of the main categories, `chosen` selected; "not mapped" first.
fn category_select(chosen: Option<MainCategory>, suggested: Option<MainCategory>) -> Markup {
    html! {
        select name="category" aria-label="Main category" {
            option value="" selected[chosen.is_none()] { "— not mapped —" }
            @for c in MainCategory::ALL {
                option value=(c.as_str()) selected[chosen == Some(c)] {
                    (c.label())
                    @if chosen.is_none() && suggested == Some(c) { " (suggested)" }
                }
            }
        }
    }
}

fn origin_text(o: SourceOrigin) -> &'static str {
    match o {
        SourceOrigin::Imported => "imported",
        SourceOrigin::Created => "created in Forecourt",
    }
}

// ---- /sources ----

pub fn sources(
    staff: &Staff,
    page: &SourcesPage,
    now_ms: u64,
    refusal: Option<&Refusal>,
) -> Markup {
    let can = staff.can(CHANGE);
    let unmapped = page
        .sources
        .iter()
        .filter(|(s, _)| s.category.is_none())
        .count();
    staff_layout(
        staff,
        "Customer sources",
        html! {
            div.pagehead {
                h1 { "Customer sources" }
                p.muted {
                    "Where customers came from: imported with the DMS file or created here, each mapped to a main category. "
                    a href="/reports/sources" { "The source report" } " · " a href="/today" { "The day's vehicles" }
                }
            }
            @if let Some(n) = page.mapped {
                p.notice role="status" { "Mapping done: " (n) " source" @if n != 1 { "s" } " mapped to \u{201c}Other new customers\u{201d}." }
            }
            h2 { "Main categories" }
            dl.categories {
                @for c in MainCategory::ALL {
                    dt { (c.label()) }
                    dd { (c.definition()) }
                }
            }
            h2 { "Sources" }
            (source_table(staff, page, refusal))
            @if can {
                section.mapping-done {
                    h2 { "Mapping done" }
                    p {
                        "Maps every source not mapped yet (" (unmapped) " now) to \u{201c}Other new customers\u{201d}, "
                        "so the report has no \u{201c}not mapped yet\u{201d} line. Sources already mapped keep their category."
                    }
                    (refused(refusal_for(refusal, "mapping-done")))
                    form method="post" action="/sources/mapping-done" {
                        input type="hidden" name="csrf" value=(staff.csrf);
                        button type="submit" disabled[unmapped == 0] { "Mapping done" }
                    }
                }
                section.create-source {
                    h2 { "New source" }
                    @let r = refusal_for(refusal, "create");
                    (refused(r))
                    form method="post" action="/sources" {
                        input type="hidden" name="csrf" value=(staff.csrf);
                        input type="hidden" name="month" value=(page.month.to_string());
                        p { label { "Name" input type="text" name="name" maxlength="60" required value=(r.map_or("", |r| r.typed.as_str())); } }
                        p { label { "Main category" (category_select(r.and_then(|r| r.category), None)) } }
                        button type="submit" { "Create source" }
                    }
                }
            }
            (spend_section(staff, page, refusal))
            p.muted { "Page built " (rfc3339(now_ms)) "." }
        },
    )
}

fn source_table(staff: &Staff, page: &SourcesPage, refusal: Option<&Refusal>) -> Markup {
    let can = staff.can(CHANGE);
    html! {
        table.sources {
            thead { tr { th { "Source" } th { "Origin" } th.num { "Customers" } th { "Main category" } @if can { th { "" } } } }
            tbody {
                @for (s, users) in &page.sources {
                    @let key = s.key();
                    @let map_r = refusal_for(refusal, &format!("map:{key}"));
                    @let del_r = refusal_for(refusal, &format!("delete:{key}"));
                    tr data-source=(s.name) class=(if s.category.is_none() { "unmapped" } else { "" }) {
                        td { (s.name) }
                        td.muted { (origin_text(s.origin)) }
                        td.num { (users) }
                        td {
                            @if can {
                                form.map method="post" action="/sources/map" {
                                    input type="hidden" name="csrf" value=(staff.csrf);
                                    input type="hidden" name="name" value=(s.name);
                                    input type="hidden" name="month" value=(page.month.to_string());
                                    (category_select(map_r.map_or(s.category, |r| r.category), suggest_category(&s.name)))
                                    " " button type="submit" { "Map" }
                                }
                                (refused(map_r))
                            } @else {
                                @match s.category { Some(c) => (c.label()), None => span.pill.warn { "not mapped" } }
                            }
                        }
                        @if can {
                            td {
                                form.delete method="post" action="/sources/delete" {
                                    input type="hidden" name="csrf" value=(staff.csrf);
                                    input type="hidden" name="name" value=(s.name);
                                    input type="hidden" name="month" value=(page.month.to_string());
                                    button.secondary type="submit" title=(if *users > 0 { "Only a source no customer has can be deleted" } else { "Delete this source" }) { "Delete" }
                                }
                                (refused(del_r))
                            }
                        }
                    }
                }
                @if page.sources.is_empty() {
                    tr { td colspan="5" .empty { "No sources yet: import the DMS file or create one below." } }
                }
            }
        }
    }
}

fn spend_section(staff: &Staff, page: &SourcesPage, refusal: Option<&Refusal>) -> Markup {
    let can = staff.can(CHANGE);
    let month = page.month.to_string();
    let total: u64 = page.spend.values().sum();
    html! {
        section.spend id="spend" {
            h2 { "Marketing spend in " (month) }
            p.muted { "What the workshop spent on each source that month, in its currency (e.g. 120 or 120.50; 0 removes it). The report shares a month's spend over the days it covers." }
            form.month method="get" action="/sources#spend" {
                label { "Month" input type="month" name="month" value=(month) min="2000-01" max="2999-12"; }
                " " button type="submit" { "Show" }
            }
            table.spend {
                thead { tr { th { "Source" } th { "Main category" } th.num { "Spend" } } }
                tbody {
                    @for (s, _) in &page.sources {
                        @let key = s.key();
                        @let cents = page.spend.get(&key).copied().unwrap_or(0);
                        @let r = refusal_for(refusal, &format!("spend:{key}"));
                        tr data-spend=(s.name) {
                            td { (s.name) }
                            td { @match s.category { Some(c) => (c.label()), None => span.muted { "not mapped" } } }
                            td.num {
                                @if can {
                                    form.spend method="post" action="/sources/spend" {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        input type="hidden" name="source" value=(s.name);
                                        input type="hidden" name="month" value=(month);
                                        input type="text" name="amount" inputmode="decimal" size="10" aria-label=(format!("Spend on {} in {month}", s.name))
                                            value=(r.map_or_else(|| money(cents), |r| r.typed.clone()));
                                        " " button type="submit" { "Save" }
                                    }
                                    (refused(r))
                                } @else {
                                    (money(cents))
                                }
                            }
                        }
                    }
                }
                tfoot { tr { th colspan="2" { "Total" } th.num { (money(total)) } } }
            }
        }
    }
}

// ---- /today ----

/// "3 of 11 customers today (27%) have no source: ask them how they found you".
pub fn unknown_warning(t: &Today) -> String {
    format!(
        "{} of {} customers today ({}%) have no source: ask them how they found you",
        t.unknown,
        t.customers,
        t.unknown_percent()
    )
}

pub fn today(
    staff: &Staff,
    t: &Today,
    now_ms: u64,
    on_lot_ms: u64,
    refusal: Option<&Refusal>,
) -> Markup {
    let booked = t.rows.iter().filter(|r| r.booked).count();
    staff_layout(
        staff,
        "The day's vehicles",
        html! {
            div.pagehead {
                h1 { "The day's vehicles" }
                p.muted {
                    "Vehicles booked today or whose unit was heard in the last " (on_lot_ms / 60_000) " minutes, "
                    "with their registered vehicle and customer. "
                    @if booked == 0 { "No bookings today. " }
                    a href="/sources" { "Customer sources" }
                }
            }
            @if t.unknown > 0 {
                p.warning.unknown-sources role="alert" { "⚠ " (unknown_warning(t)) "." }
            } @else if t.customers > 0 {
                p.notice role="status" { "Every customer today has a source." }
            }
            @if let Some(r) = refusal.filter(|r| !t.rows.iter().any(|row| row.customer.as_ref().is_some_and(|c| r.form == format!("source:{}", c.id)))) {
                p.error role="alert" { (r.message) }
            }
            (today_table(staff, t, now_ms, refusal))
            @if t.rows.len() < t.units {
                p.muted { "Showing the " (t.rows.len()) " most recently heard of " (t.units) " units." }
            }
            p.muted { "Page built " (rfc3339(now_ms)) "." }
        },
    )
}

fn today_table(staff: &Staff, t: &Today, now_ms: u64, refusal: Option<&Refusal>) -> Markup {
    let mut anchored = BTreeSet::new();
    html! {
        table.today {
            thead { tr { th { "Vehicle" } th { "Heard" } th { "Customer" } th { "Source" } } }
            tbody {
                @for row in &t.rows {
                    @let anchor = row.customer.as_ref().filter(|c| anchored.insert(c.id)).map(|c| format!("customer-{}", c.id));
                    tr id=[anchor] class=(if row.unknown_source() { "no-source" } else { "" }) {
                        td { (vehicle_cell(row)) }
                        td.nowrap title=(rfc3339(row.vehicle.last_heard_ms)) {
                            (ago(now_ms, row.vehicle.last_heard_ms))
                            @if row.on_lot { " " span.pill.ok { "on lot" } }
                            @if row.booked { " " span.pill { "booked today" } }
                        }
                        td { (customer_cell(row)) }
                        td { (source_cell(staff, t, row, refusal)) }
                    }
                }
                @if t.rows.is_empty() {
                    tr { td colspan="4" .empty { "No vehicle booked today or on the lot now." } }
                }
            }
        }
    }
}

fn vehicle_cell(row: &TodayRow) -> Markup {
    let v = &row.vehicle;
    html! {
        a.mono href=(format!("/vehicles/{}", v.device_id)) {
            @if let Some(vin) = v.vin { (vin) } @else { "unit " (v.device_id) }
        }
        @if let Some(r) = &row.registered {
            @let what = [r.brand.clone(), r.model.clone(), r.model_year.map(|y| y.to_string())]
                .into_iter().flatten().collect::<Vec<_>>().join(" ");
            @if !what.is_empty() { br; span.muted { (what) } }
            @if let Some(f) = &r.fleet { br; span.muted { "fleet " (f) } }
        }
    }
}

fn customer_cell(row: &TodayRow) -> Markup {
    html! {
        @match (&row.customer, &row.registered, &row.vehicle.vin) {
            (Some(c), _, _) => {
                @if c.source.is_none() {
                    span.customer.no-source title="No source recorded: ask how they found you" {
                        span.icon aria-hidden="true" { "⚠" } " "
                        a href=(format!("/customers/{}", c.id)) { (c.name) }
                        " " span.tag { "(no source)" }
                    }
                } @else {
                    a.customer href=(format!("/customers/{}", c.id)) { (c.name) }
                }
                @if let Some(p) = &c.phone { br; span.muted { (p) } }
            }
            (None, _, None) => span.muted.no-customer { "No customer: the unit has not said its VIN yet." },
            (None, Some(r), Some(_)) if r.fleet.is_some() => span.muted.no-customer { "No customer: a fleet vehicle." },
            (None, _, Some(_)) => span.muted.no-customer {
                "No customer for this vehicle. " a href="/customers" { "Find or add the customer" }
            },
        }
    }
}

fn source_cell(staff: &Staff, t: &Today, row: &TodayRow, refusal: Option<&Refusal>) -> Markup {
    let Some(c) = &row.customer else {
        return html! { span.muted { "—" } };
    };
    let r = refusal_for(refusal, &format!("source:{}", c.id));
    let chosen = r.map_or(c.source.as_deref().unwrap_or(""), |r| r.typed.as_str());
    let chosen_key = crate::domain::customer::source_key(chosen);
    html! {
        @if staff.can(CHANGE) {
            form.set-source method="post" action="/today/source" {
                input type="hidden" name="csrf" value=(staff.csrf);
                input type="hidden" name="customer_id" value=(c.id);
                select name="source" aria-label=(format!("Source of {}", c.name)) {
                    option value="" selected[chosen.is_empty()] { "— unknown —" }
                    @for s in &t.sources {
                        option value=(s.name) selected[s.key() == chosen_key] { (s.name) }
                    }
                }
                " " button type="submit" { "Set" }
            }
            (refused(r))
        } @else {
            @match &c.source { Some(s) => (s), None => span.bad { "unknown" } }
        }
    }
}

// ---- /reports/sources ----

fn line_cells(l: &ReportLine) -> Markup {
    html! {
        td.num { (l.new_customers) }
        td.num { (money(l.spend_cents)) }
        td.num { @match l.cost_per_new_cents { Some(c) => (money(c)), None => span.muted title="no new customers" { "—" } } }
    }
}

pub fn report(staff: &Staff, r: &SourceReport, period: Period, now_ms: u64) -> Markup {
    let from = format_date(period.from_ms);
    let to = format_date(period.to_ms);
    staff_layout(
        staff,
        "Customer source report",
        html! {
            div.pagehead {
                h1 { "Customer source report" }
                p.muted { "New customers per main category, with its sources inside, from " (from) " to " (to) " (both days included). "
                    a href="/sources" { "Sources and marketing spend" } }
            }
            form.filters.period method="get" action="/reports/sources" {
                label { "From" input type="date" name="from" value=(from); }
                label { "To" input type="date" name="to" value=(to); }
                button type="submit" { "Show" }
            }
            nav.presets aria-label="Periods" {
                @for (label, p) in presets(now_ms) {
                    a class=(if p == period { "preset current" } else { "preset" }) href=(format!("/reports/sources?{}", p.query())) { (label) }
                }
                a.csv href=(format!("/reports/sources.csv?{}", period.query())) { "Download CSV" }
            }
            (bar_chart(r))
            table.report {
                thead { tr { th { "Main category / source" } th.num { "New customers" } th.num { "Marketing spend" } th.num { "Cost per new customer" } } }
                @for g in shown_groups(r) {
                    (group_rows(g))
                }
                tfoot { tr.total { th { "Total" } (line_cells(&r.total)) } }
            }
            p.muted {
                "A customer is new in the period holding their \u{201c}customer since\u{201d} day. "
                "Marketing spend is entered per source and month; a period covering part of a month carries that part of its spend. "
                "Cost per new customer is the spend divided by the new customers (\u{2014} when there are none). Built " (rfc3339(now_ms)) "."
            }
        },
    )
}

fn group_rows(g: &GroupReport) -> Markup {
    let class = match g.group {
        ReportGroup::Category(c) => format!("group cat-{}", c.as_str()),
        ReportGroup::Unmapped => "group unmapped".into(),
        ReportGroup::Unknown => "group unknown".into(),
    };
    html! {
        tbody {
            tr class=(class) data-group=(g.group.label()) { th { (g.group.label()) } (line_cells(&g.total)) }
            @for (name, line) in &g.sources {
                tr.sub data-source=(name) { td { span.indent { (name) } } (line_cells(line)) }
            }
        }
    }
}

/// Escapes text for SVG built as a string.
fn esc(s: &str) -> String {
    html! { (s) }.into_string()
}

/// Chart geometry, in SVG units.
const W: f64 = 720.0;
const LABEL_W: f64 = 170.0;
const RIGHT_W: f64 = 50.0;
const ROW_H: f64 = 28.0;
const BAR_H: f64 = 18.0;

/// New customers per main category as horizontal bars, each bar its
/// sources stacked (a title on each part names the source).
pub fn bar_chart(r: &SourceReport) -> Markup {
    let groups: Vec<&GroupReport> = shown_groups(r).collect();
    let max = groups
        .iter()
        .map(|g| g.total.new_customers)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let h = ROW_H * groups.len() as f64 + 8.0;
    let scale = (W - LABEL_W - RIGHT_W) / max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="sources-chart" viewBox="0 0 {W} {h}" role="img" aria-labelledby="chart-title chart-desc" preserveAspectRatio="xMinYMin meet">"#
    );
    let desc: Vec<String> = groups
        .iter()
        .map(|g| format!("{}: {}", g.group.label(), g.total.new_customers))
        .collect();
    let _ = write!(
        svg,
        r#"<title id="chart-title">New customers per main category</title><desc id="chart-desc">{}</desc>"#,
        esc(&desc.join("; "))
    );
    for (i, g) in groups.iter().enumerate() {
        let y = 4.0 + i as f64 * ROW_H;
        let _ = write!(
            svg,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + BAR_H - 4.0,
            esc(g.group.label())
        );
        let mut x = LABEL_W;
        for (j, (name, n)) in segments(g).into_iter().enumerate() {
            let w = n as f64 * scale;
            let _ = write!(
                svg,
                r#"<rect class="seg seg-{}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}"><title>{}: {n}</title></rect>"#,
                j % 4,
                esc(&name)
            );
            x += w;
        }
        let _ = write!(
            svg,
            r#"<text class="count" x="{:.1}" y="{:.1}">{}</text>"#,
            x + 6.0,
            y + BAR_H - 4.0,
            g.total.new_customers
        );
    }
    svg.push_str("</svg>");
    html! {
        figure.graph.sources-chart {
            (PreEscaped(svg))
            figcaption { "New customers per main category; each bar's parts are its sources (hover for the name)." }
        }
    }
}

/// A bar's parts: (source, new customers), those with any.
fn segments(g: &GroupReport) -> Vec<(String, u64)> {
    if g.group == ReportGroup::Unknown {
        return vec![("unknown source".into(), g.total.new_customers)];
    }
    g.sources
        .iter()
        .filter(|(_, l)| l.new_customers > 0)
        .map(|(n, l)| (n.clone(), l.new_customers))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{Customer, Source, DAY_MS};

    #[test]
    fn the_chart_stacks_sources_and_escapes_their_names() {
        let t0 = 1_772_323_200_000; // 2026-03-01
        let mut a = Source::new("Google".into(), SourceOrigin::Imported, t0);
        a.category = Some(MainCategory::Internet);
        let mut b = Source::new("<Yelp>".into(), SourceOrigin::Imported, t0);
        b.category = Some(MainCategory::Internet);
        let c = |id: u64, s: Option<&str>| Customer {
            id,
            dms_id: None,
            name: "x".into(),
            phone: None,
            email: None,
            source: s.map(str::to_string),
            customer_since_ms: t0,
            created_ms: t0,
            updated_ms: t0,
            version: 1,
        };
        let cs = [
            c(1, Some("Google")),
            c(2, Some("Google")),
            c(3, Some("<Yelp>")),
            c(4, None),
        ];
        let r = crate::domain::customer::source_report(&cs, &[a, b], &[], t0, t0 + DAY_MS);
        let svg = bar_chart(&r).into_string();
        assert_eq!(svg.matches("<rect class=\"seg").count(), 3, "{svg}");
        assert!(svg.contains("<title>Google: 2</title>"));
        assert!(svg.contains("&lt;Yelp&gt;: 1"));
        assert!(!svg.contains("<Yelp>"));
        assert!(
            svg.contains("Unknown source: 1"),
            "shown when it holds anyone"
        );
        assert!(!svg.contains("Not mapped yet"), "left out when empty");
    }
}
