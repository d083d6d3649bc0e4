//! Views of the "Leads & error codes" pages: the list with its tabs,
//! filters and sortable columns, and a lead's page.

use maud::{html, Markup};

use crate::clock::rfc3339;
use crate::domain::lead::{CloseReason, Lead, LeadEventKind, LeadStatus, LeadType, Subject};
use crate::leads::{describe, template, LeadCounts};
use crate::store::leads::LeadSort;
use crate::web::auth::Permission;
use crate::web::leads::{LeadPage, ListParams, Period, Refusal, StatusFilter};
use crate::web::session::Staff;
use crate::web::views::{ago, money, staff_layout};

pub struct ListView<'a> {
    pub now_ms: u64,
    pub params: &'a ListParams,
    pub rows: &'a [Lead],
    pub next: Option<&'a ListParams>,
    pub counts: &'a LeadCounts,
}

/// "Severity 3" as the staff read it.
pub fn severity_word(s: u8) -> &'static str {
    match s {
        3 => "high",
        2 => "medium",
        _ => "low",
    }
}

pub fn close_reason_text(r: CloseReason) -> &'static str {
    match r {
        CloseReason::EngineRun15Min => "engine ran 15 min with the lamp off",
        CloseReason::FourCleanStarts => "four clean ignition cycles",
        CloseReason::BatteryRecovered => "battery recovered",
        CloseReason::PowerRestored => "power restored",
        CloseReason::CodeCleared => "code cleared",
        CloseReason::Manual => "closed by staff",
        CloseReason::Customer => "closed by the customer",
    }
}

fn vehicle_cell(l: &Lead) -> Markup {
    html! {
        a.mono href=(format!("/vehicles/{}", l.device_id)) {
            @if let Some(vin) = l.vin { (vin) } @else { "unit " (l.device_id) }
        }
    }
}

fn ecu_of(l: &Lead) -> Option<u16> {
    match l.key.subject {
        Subject::Code { ecu, .. } => Some(ecu),
        _ => None,
    }
}

fn severity_pill(s: u8) -> Markup {
    html! { span class=(format!("pill sev-{s}")) title=(format!("severity {s} of 3")) { (severity_word(s)) } }
}

/// A column heading that sorts the list by `sort` (the current one marked).
fn sort_head(p: &ListParams, sort: LeadSort, label: &str, class: &str) -> Markup {
    let here = p.sort == sort;
    html! {
        th class=(class) aria-sort=(if here { "descending" } else { "none" }) {
            a.sort href=(p.with(|x| x.sort = sort).href()) { (label) @if here { " ▾" } }
        }
    }
}

pub fn list(staff: &Staff, v: &ListView<'_>) -> Markup {
    let p = v.params;
    let codes = p.ty == Some(LeadType::ErrorCode);
    let open_total: u64 = v.counts.open.values().sum();
    let title = p.ty.map_or("All leads", |t| t.title());
    staff_layout(
        staff,
        "Leads & error codes",
        html! {
            div.pagehead {
                h1 { "Leads & error codes" }
                p.muted { (open_total) " open. Each lead is something a vehicle told us that is worth a call." }
            }
            nav.tabs aria-label="Lead types" {
                a data-type="all" class=(if p.ty.is_none() { "tab current" } else { "tab" })
                    href=(p.with(|x| { x.ty = None; x.severity = None; if matches!(x.sort, LeadSort::Severity | LeadSort::Ecu) { x.sort = LeadSort::Opened; } }).href()) {
                    "All" span.count { (open_total) }
                }
                @for ty in LeadType::ALL {
                    a data-type=(ty.as_str()) class=(if p.ty == Some(ty) { "tab current" } else { "tab" })
                        href=(p.with(|x| { x.ty = Some(ty); if ty != LeadType::ErrorCode { x.severity = None; if matches!(x.sort, LeadSort::Severity | LeadSort::Ecu) { x.sort = LeadSort::Opened; } } }).href())
                        title=(format!("{} open", v.counts.open[ty.as_str()])) {
                        (ty.title()) span.count { (v.counts.open[ty.as_str()]) }
                    }
                }
            }
            form.filters method="get" action="/leads" {
                @if let Some(t) = p.ty { input type="hidden" name="type" value=(t.as_str()); }
                @if p.sort != LeadSort::Opened { input type="hidden" name="sort" value=(p.sort.as_str()); }
                label { "Status"
                    select name="status" {
                        @for s in StatusFilter::ALL {
                            option value=(s.as_str()) selected[p.status == s] { (s.as_str()) }
                        }
                    }
                }
                label { "Opened in the last"
                    select name="period" {
                        @for per in Period::ALL {
                            option value=(per.as_str()) selected[p.period == per] { (per.title()) }
                        }
                    }
                }
                @if codes {
                    label { "Severity"
                        select name="severity" {
                            option value="all" selected[p.severity.is_none()] { "any" }
                            @for s in [3u8, 2, 1] {
                                option value=(s) selected[p.severity == Some(s)] { (s) " " (severity_word(s)) }
                            }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            h2.listtitle { (title) span.muted { " · " (p.status.as_str()) ", " (p.period.title().to_lowercase()) } }
            table.leads {
                thead { tr {
                    (sort_head(p, LeadSort::Opened, "Opened", "nowrap"))
                    th { "Type" } th { "Vehicle" } th { "What" }
                    @if codes {
                        (sort_head(p, LeadSort::Ecu, "ECU", ""))
                        (sort_head(p, LeadSort::Severity, "Severity", ""))
                    }
                    th { "Status" } th { "Assigned" }
                    (sort_head(p, LeadSort::Revenue, "Est. revenue", "num"))
                } }
                tbody {
                    @for l in v.rows {
                        tr class=(if l.status == LeadStatus::Open { "open" } else { "closed" }) {
                            td.nowrap title=(rfc3339(l.opened_at_ms)) { (ago(v.now_ms, l.opened_at_ms)) }
                            td { span class=(format!("pill type-{}", l.key.ty.as_str())) { (l.key.ty.title()) } }
                            td { (vehicle_cell(l)) }
                            td {
                                a.lead-link href=(format!("/leads/{}", l.id)) { (describe(l)) }
                                @if let Some(c) = l.class { " " span.muted { "(" (c.as_str()) ")" } }
                            }
                            @if codes {
                                td.mono { @if let Some(e) = ecu_of(l) { (format!("0x{e:03X}")) } }
                                td { @if let Some(s) = l.severity { (severity_pill(s)) } }
                            }
                            td { @match l.status {
                                LeadStatus::Open => span.pill.warn { "open" },
                                LeadStatus::Closed => span.pill.ok title=(l.close_reason.map(close_reason_text).unwrap_or("")) { "closed" },
                            } }
                            td { @if let Some(a) = &l.assignee { (a) } @else { span.muted { "—" } } }
                            td.num { @if let Some(c) = l.estimated_revenue_cents { (money(c)) } }
                        }
                    }
                    @if v.rows.is_empty() {
                        tr { td colspan=(if codes { 9 } else { 7 }) .empty { "No leads match these filters." } }
                    }
                }
            }
            nav.pager {
                @if p.cursor.is_some() { a href=(p.with(|_| {}).href()) { "« First page" } }
                @if let Some(n) = v.next { a.next href=(n.href()) { "Next page »" } }
            }
            p.muted.computed { "Estimated revenue: the catalog's labour hours for the lead's service × the workshop's labour rate, plus parts. Listed " (rfc3339(v.now_ms)) "." }
        },
    )
}

fn event_text(kind: &LeadEventKind) -> String {
    match kind {
        LeadEventKind::Opened => "Opened".into(),
        LeadEventKind::Progress(p) => format!("Progress: {p}"),
        LeadEventKind::Relit => "Lamp lit again: auto-close progress reset".into(),
        LeadEventKind::ClassChanged { class, status } => {
            format!("Class now {} (status byte 0x{status:02X})", class.as_str())
        }
        LeadEventKind::Assigned { to: Some(to) } => format!("Assigned to {to}"),
        LeadEventKind::Assigned { to: None } => "Unassigned".into(),
        LeadEventKind::Closed { reason, note } => match note {
            Some(n) => format!("Closed ({}): {n}", close_reason_text(*reason)),
            None => format!("Closed ({})", close_reason_text(*reason)),
        },
        LeadEventKind::Reopened => "Reopened".into(),
        LeadEventKind::Note(n) => format!("Note: {n}"),
        LeadEventKind::Messaged { message_id } => {
            format!("Message {message_id} queued to the customer")
        }
    }
}

fn refusal_for<'a>(refusal: Option<&'a Refusal<'a>>, form: &str) -> Option<&'a Refusal<'a>> {
    refusal.filter(|r| r.form == form)
}

fn refused(r: Option<&Refusal<'_>>) -> Markup {
    html! { @if let Some(r) = r { p.error role="alert" { (r.message) } } }
}

pub fn lead(staff: &Staff, page: &LeadPage, now_ms: u64, refusal: Option<&Refusal<'_>>) -> Markup {
    let l = &page.lead;
    let open = l.status == LeadStatus::Open;
    let typed = |form: &str| {
        refusal_for(refusal, form)
            .map_or("", |r| r.typed)
            .to_string()
    };
    // A refusal is shown at its form; when the form is not on the page
    // (e.g. closing a lead someone else closed meanwhile), above them all.
    let shown = |form: &str| match form {
        "assign" => staff.can(Permission::AssignLead),
        "close" => open && staff.can(Permission::CloseLead),
        "reopen" => !open && staff.can(Permission::ReopenLead),
        "note" => staff.can(Permission::AnnotateLead),
        "message" => staff.can(Permission::MessageCustomer),
        _ => false,
    };
    staff_layout(
        staff,
        &format!("Lead {}", l.id),
        html! {
            p.crumbs { a href=(format!("/leads?type={}", l.key.ty.as_str())) { "← " (l.key.ty.title()) } }
            div.pagehead {
                h1 { (describe(l)) }
                p {
                    span class=(format!("pill type-{}", l.key.ty.as_str())) { (l.key.ty.title()) } " "
                    span #lead-status class=(if open { "pill warn" } else { "pill ok" }) { (if open { "open" } else { "closed" }) }
                    @if let Some(s) = l.severity { " " (severity_pill(s)) }
                }
            }
            div.columns {
                section.card {
                    h2 { "The lead" }
                    dl.facts {
                        dt { "Vehicle" } dd { (vehicle_cell(l)) }
                        dt { "Opened" } dd title=(rfc3339(l.opened_at_ms)) { (rfc3339(l.opened_at_ms)) " · " (ago(now_ms, l.opened_at_ms)) }
                        @if let Some(c) = l.closed_at_ms {
                            dt { "Closed" } dd title=(rfc3339(c)) { (rfc3339(c)) @if let Some(r) = l.close_reason { " · " (close_reason_text(r)) } }
                        }
                        dt { "Assigned to" } dd #lead-assignee { @if let Some(a) = &l.assignee { (a) } @else { span.muted { "nobody" } } }
                        dt { "Est. revenue" } dd { @if let Some(c) = l.estimated_revenue_cents { (money(c)) } @else { span.muted { "no catalog entry" } } }
                        @if let Subject::Code { ecu, dtc } = l.key.subject {
                            dt { "Code" } dd.mono { (dtc) " on ECU " (format!("0x{ecu:03X}")) }
                            @if let Some(c) = l.class { dt { "Class" } dd { (c.as_str()) } }
                            @if let Some(b) = l.status_byte { dt { "Status byte" } dd.mono { (format!("0x{b:02X} ({b:08b})")) } }
                            @if let Some(d) = &l.description { dt { "Description" } dd { (d) } }
                        }
                        @if let Some(v) = &page.vehicle {
                            @if let Some(km) = v.odometer_km { dt { "Odometer" } dd { (km) " km" } }
                            @if let Some(mv) = v.battery_mv { dt { "Battery" } dd { (format!("{:.2} V", mv as f64 / 1000.0)) } }
                            dt { "Last heard" } dd { (ago(now_ms, v.last_heard_ms)) }
                        }
                    }
                    @if l.key.ty == LeadType::Disconnected {
                        h3 { "Disconnections in the last 30 days" }
                        @if page.disconnections.is_empty() { p.muted { "None kept." } }
                        ul.plain {
                            @for d in &page.disconnections {
                                li {
                                    (rfc3339(d.at_ms)) ": " (d.reason.to_string())
                                    @match (d.restored_ms, d.down_s) {
                                        (Some(_), Some(s)) => { ", down " (s / 60) " min " (s % 60) " s" },
                                        (Some(r), None) => { ", back " (rfc3339(r)) },
                                        (None, _) => { ", " span.bad { "still down" } },
                                    }
                                }
                            }
                        }
                        p { a href=(format!("/vehicles/{}#disconnections", l.device_id)) { "Full disconnection history" } }
                    }
                }
                section.card.actions {
                    h2 { "Act on it" }
                    @if let Some(r) = refusal.filter(|r| !shown(r.form)) { p.error role="alert" { (r.message) } }
                    @if staff.can(Permission::AssignLead) {
                        form #assign method="post" action=(format!("/leads/{}/assign", l.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (refused(refusal_for(refusal, "assign")))
                            label { "Assign to"
                                select name="user" {
                                    option value="" selected[l.assignee.is_none()] { "nobody" }
                                    @for (name, display) in &page.staff {
                                        option value=(name) selected[l.assignee.as_deref() == Some(name.as_str())] { (display) " (" (name) ")" }
                                    }
                                }
                            }
                            button type="submit" { "Assign" }
                        }
                    }
                    @if open && staff.can(Permission::CloseLead) {
                        form #close method="post" action=(format!("/leads/{}/close", l.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (refused(refusal_for(refusal, "close")))
                            label { "Close, because"
                                textarea name="reason" rows="2" required maxlength="4000" placeholder="e.g. battery replaced on 12 May" { (typed("close")) }
                            }
                            button type="submit" { "Close the lead" }
                        }
                    }
                    @if !open && staff.can(Permission::ReopenLead) {
                        form #reopen method="post" action=(format!("/leads/{}/reopen", l.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (refused(refusal_for(refusal, "reopen")))
                            button type="submit" { "Reopen" }
                        }
                    }
                    @if staff.can(Permission::AnnotateLead) {
                        form #note method="post" action=(format!("/leads/{}/note", l.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (refused(refusal_for(refusal, "note")))
                            label { "Note"
                                textarea name="text" rows="2" required maxlength="4000" { (typed("note")) }
                            }
                            button type="submit" { "Add note" }
                        }
                    }
                    @if staff.can(Permission::MessageCustomer) {
                        form #message method="post" action=(format!("/leads/{}/message", l.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (refused(refusal_for(refusal, "message")))
                            label { "Message the customer"
                                textarea name="text" rows="4" maxlength="4000" {
                                    @if refusal_for(refusal, "message").is_some() { (typed("message")) } @else { (template(l.key.ty)) }
                                }
                            }
                            p.muted.small { "Queued now, sent with the next sync to the importer's customer app." }
                            button type="submit" { "Queue message" }
                        }
                    }
                }
            }
            section.card {
                h2 { "History" }
                ol.history {
                    @for e in l.history.iter().rev() {
                        li {
                            span.when title=(rfc3339(e.at_ms)) { (rfc3339(e.at_ms)) }
                            " " (event_text(&e.kind))
                            @if let Some(by) = &e.by { span.muted { " · " (by) } }
                        }
                    }
                }
                @if !l.notes.is_empty() {
                    h3 { "Notes" }
                    ul.plain { @for n in l.notes.iter().rev() { li { span.muted { (rfc3339(n.at_ms)) " · " (n.by) ": " } (n.text) } } }
                }
                @if !page.messages.is_empty() {
                    h3 { "Messages to the customer" }
                    ul.plain {
                        @for m in page.messages.iter().rev() {
                            li { span.muted { (rfc3339(m.created_ms)) " · " (m.by) " · " (format!("{:?}", m.delivery).to_lowercase()) ": " } (m.text) }
                        }
                    }
                }
            }
        },
    )
}
