//! Views of the customers pages: the list, a customer's page with their
//! vehicles and invitations, the new-customer form, and the DMS import
//! with its report or every bad row.

use maud::{html, Markup, PreEscaped};

use crate::clock::rfc3339;
use crate::customers::{ImportReport, Tally, MAX_FILE_BYTES};
use crate::domain::customer::{format_date, Customer, InvitationEvent, InvitationState};
use crate::store::customers::CustomerFigures;
use crate::web::customers::{
    since_text, CustomerPage, ImportResult, ListRow, Refusal, VehicleLine, CHANGE, FILE_FIELD,
};
use crate::web::session::Staff;
use crate::web::views::staff_layout;

pub struct ListView<'a> {
    pub rows: &'a [ListRow],
    pub first_page: bool,
    /// The last id of this page, when another page follows.
    pub next: Option<u64>,
    pub figures: &'a CustomerFigures,
}

/// A customer's source, an unknown one visibly marked (R-SRC-2).
fn source_cell(c: &Customer) -> Markup {
    html! {
        @match &c.source {
            Some(s) => span.source { (s) },
            None => span.pill.warn.unknown-source title="Nobody knows yet how this customer found the workshop: set the source." { "unknown source" },
        }
    }
}

pub fn list(staff: &Staff, v: &ListView<'_>) -> Markup {
    staff_layout(
        staff,
        "Customers",
        html! {
            div.pagehead {
                h1 { "Customers" }
                p.muted {
                    (v.figures.total) " customers, " (v.figures.unknown_source) " with an unknown source. "
                    a href="/customers/export.csv" download="forecourt-customers.csv" { "Export CSV" }
                    @if staff.can(CHANGE) {
                        " · " a href="/customers/import" { "Import the DMS file" }
                        " · " a href="/customers/new" { "New customer" }
                    }
                }
            }
            table.customers {
                thead { tr {
                    th { "Name" } th { "Contact" } th { "Source" } th.num { "Vehicles" } th.nowrap { "Customer since" }
                } }
                tbody {
                    @for r in v.rows {
                        @let c = &r.customer;
                        tr class=(if c.source.is_none() { "unknown" } else { "" }) {
                            td { a.customer-link href=(format!("/customers/{}", c.id)) { (c.name) } }
                            td {
                                @if let Some(p) = &c.phone { (p) }
                                @if c.phone.is_some() && c.email.is_some() { br; }
                                @if let Some(e) = &c.email { (e) }
                                @if c.phone.is_none() && c.email.is_none() { span.muted { "—" } }
                            }
                            td { (source_cell(c)) }
                            td.num { (r.vehicles) }
                            td.nowrap { (since_text(c)) }
                        }
                    }
                    @if v.rows.is_empty() {
                        tr { td colspan="5" .empty { "No customers yet: import the DMS file or add one." } }
                    }
                }
            }
            nav.pager {
                @if !v.first_page { a href="/customers" { "« First page" } }
                @if let Some(n) = v.next { a.next href=(format!("/customers?after={n}")) { "Next page »" } }
            }
        },
    )
}

fn alert(r: Option<&Refusal>, form: &str) -> Markup {
    html! {
        @if let Some(r) = r.filter(|r| r.form == form) { p.error role="alert" { (r.message) } }
    }
}

/// What a field shows: what was typed into a refused form, else `stored`.
fn value(r: Option<&Refusal>, form: &str, field: &str, stored: &str) -> String {
    r.filter(|r| r.form == form)
        .and_then(|r| r.typed(field))
        .unwrap_or(stored)
        .to_string()
}

/// The contact fields, for the new-customer form and a customer's page.
fn contact_fields(c: Option<&Customer>, r: Option<&Refusal>) -> Markup {
    let stored = |f: fn(&Customer) -> Option<String>| c.and_then(f).unwrap_or_default();
    let name = value(r, "contact", "name", &stored(|c| Some(c.name.clone())));
    let phone = value(r, "contact", "phone", &stored(|c| c.phone.clone()));
    let email = value(r, "contact", "email", &stored(|c| c.email.clone()));
    let since = value(
        r,
        "contact",
        "customer_since",
        &stored(|c| Some(since_text(c))),
    );
    html! {
        label { "Name" input type="text" name="name" value=(name) required maxlength="200"; }
        label { "Phone" input type="tel" name="phone" value=(phone) maxlength="40"; }
        label { "Email" input type="email" name="email" value=(email) maxlength="254"; }
        label { "Customer since (YYYY-MM-DD)" input type="text" name="customer_since" value=(since) placeholder="today" pattern="\\d{4}-\\d{2}-\\d{2}"; }
    }
}

pub fn new_customer(staff: &Staff, refusal: Option<&Refusal>) -> Markup {
    staff_layout(
        staff,
        "New customer",
        html! {
            p.crumbs { a href="/customers" { "← Customers" } }
            h1 { "New customer" }
            section.card {
                form #contact method="post" action="/customers" {
                    input type="hidden" name="csrf" value=(staff.csrf);
                    (alert(refusal, "contact"))
                    (contact_fields(None, refusal))
                    button type="submit" { "Create customer" }
                }
            }
        },
    )
}

fn invitation_label(s: InvitationState) -> Markup {
    let class = match s {
        InvitationState::Accepted => "pill ok",
        InvitationState::Declined | InvitationState::Expired => "pill bad",
        InvitationState::Created | InvitationState::Sent => "pill warn",
    };
    html! { span class=(class) data-invitation=(s.as_str()) { (s.label()) } }
}

fn event_button(e: InvitationEvent) -> &'static str {
    match e {
        InvitationEvent::Send => "Mark sent",
        InvitationEvent::Accept => "Accepted",
        InvitationEvent::Decline => "Declined",
    }
}

fn vehicle_card(
    staff: &Staff,
    page: &CustomerPage,
    l: &VehicleLine,
    r: Option<&Refusal>,
) -> Markup {
    let v = &l.vehicle;
    let vin = v.vin.to_string();
    let id = page.customer.id;
    let refused_here = r.filter(|r| {
        (r.form == "invite"
            && r.typed("vin")
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(&vin)))
            || (r.form == "event"
                && l.invitation
                    .as_ref()
                    .is_some_and(|i| r.typed("invitation") == Some(&i.id.to_string())))
    });
    html! {
        article.vehicle-card data-vin=(vin) {
            h3.mono { (vin) }
            dl.facts {
                dt { "Vehicle" }
                dd { (v.brand.as_deref().unwrap_or("")) " " (v.model.as_deref().unwrap_or("")) @if let Some(y) = v.model_year { " (" (y) ")" } }
                @if let Some(f) = &v.fleet { dt { "Fleet" } dd { (f) } }
                dt { "Dongle" }
                dd.connection {
                    @match l.device_id {
                        Some(d) => a href=(format!("/vehicles/{d}")) { "connected (unit " (d) ")" },
                        None => span.muted.not-connected { "not connected" },
                    }
                }
                dt { "Assignment" }
                dd {
                    span.assignment data-assignment=(l.assignment.as_str()) { strong { (l.assignment.label()) } }
                    br; span.muted.small { (l.assignment.definition()) }
                }
                dt { "Active" }
                dd.active { @if l.active { span.pill.ok { "active" } } @else { span.muted { "not active" } } }
                dt { "Invitation" }
                dd.invitation {
                    @match (&l.invitation, l.invitation_state) {
                        (Some(i), Some(s)) => {
                            (invitation_label(s)) " #" (i.id) " · made " (format_date(i.created_ms))
                            @if let Some(sent) = i.sent_ms { " · sent " (format_date(sent)) }
                            @if let Some(exp) = l.expires_ms { " · expires " span title=(rfc3339(exp)) { (format_date(exp)) } }
                            br; span.muted.small { (s.definition()) }
                        },
                        _ => span.muted { "none yet" },
                    }
                }
            }
            @if let Some(r) = refused_here { p.error role="alert" { (r.message) } }
            @if staff.can(CHANGE) {
                div.invitation-actions {
                    @if let Some(i) = &l.invitation {
                        @for e in l.events() {
                            form.inline method="post" action=(format!("/customers/{id}/invitation")) {
                                input type="hidden" name="csrf" value=(staff.csrf);
                                input type="hidden" name="invitation" value=(i.id);
                                input type="hidden" name="event" value=(e.as_str());
                                button type="submit" data-event=(e.as_str()) { (event_button(e)) }
                            }
                        }
                    }
                    @if l.can_invite() {
                        form.inline method="post" action=(format!("/customers/{id}/invite")) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            input type="hidden" name="vin" value=(vin);
                            button type="submit" data-event="invite" { "Invite to the app" }
                        }
                    }
                }
            }
        }
    }
}

fn source_form(staff: &Staff, page: &CustomerPage, r: Option<&Refusal>) -> Markup {
    let c = &page.customer;
    let chosen = value(r, "source", "source", c.source.as_deref().unwrap_or(""));
    html! {
        form #source method="post" action=(format!("/customers/{}/source", c.id)) {
            input type="hidden" name="csrf" value=(staff.csrf);
            (alert(r, "source"))
            label { "Source"
                select name="source" {
                    option value="" selected[chosen.is_empty()] { "unknown" }
                    @for s in &page.sources {
                        option value=(s.name) selected[s.name.eq_ignore_ascii_case(&chosen)] { (s.name) }
                    }
                }
            }
            button type="submit" { "Set source" }
        }
    }
}

fn vehicle_form(staff: &Staff, id: u64, r: Option<&Refusal>) -> Markup {
    let f = |field: &str| value(r, "vehicle", field, "");
    html! {
        form #vehicle method="post" action=(format!("/customers/{id}/vehicles")) {
            input type="hidden" name="csrf" value=(staff.csrf);
            (alert(r, "vehicle"))
            label { "VIN" input.mono type="text" name="vin" value=(f("vin")) required minlength="17" maxlength="17" autocomplete="off"; }
            label { "Brand" input type="text" name="brand" value=(f("brand")) maxlength="60"; }
            label { "Model" input type="text" name="model" value=(f("model")) maxlength="60"; }
            label { "Model year" input type="text" name="model_year" value=(f("model_year")) inputmode="numeric" maxlength="4"; }
            button type="submit" { "Add vehicle" }
        }
    }
}

pub fn customer(staff: &Staff, page: &CustomerPage, refusal: Option<&Refusal>) -> Markup {
    let c = &page.customer;
    // A refusal whose form is not on the page any more (e.g. an event on
    // an invitation that changed meanwhile) is shown above the vehicles.
    let placed = |r: &&Refusal| match r.form.as_str() {
        "contact" | "source" | "vehicle" => true,
        "invite" => page.vehicles.iter().any(|l| {
            r.typed("vin")
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(&l.vehicle.vin.to_string()))
        }),
        "event" => page.vehicles.iter().any(|l| {
            l.invitation
                .as_ref()
                .is_some_and(|i| r.typed("invitation") == Some(&i.id.to_string()))
        }),
        _ => false,
    };
    staff_layout(
        staff,
        &c.name,
        html! {
            p.crumbs { a href="/customers" { "← Customers" } }
            div.pagehead {
                h1 #customer-name { (c.name) }
                p {
                    (source_cell(c))
                    " · customer since " (since_text(c))
                    @if let Some(d) = &c.dms_id { " · DMS " span.mono { (d) } }
                }
            }
            div.columns {
                section.card {
                    h2 { "Contact" }
                    @if staff.can(CHANGE) {
                        form #contact method="post" action=(format!("/customers/{}", c.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            (alert(refusal, "contact"))
                            (contact_fields(Some(c), refusal))
                            button type="submit" { "Save contact" }
                        }
                        (source_form(staff, page, refusal))
                    } @else {
                        dl.facts {
                            dt { "Phone" } dd #customer-phone { (c.phone.as_deref().unwrap_or("—")) }
                            dt { "Email" } dd #customer-email { (c.email.as_deref().unwrap_or("—")) }
                        }
                    }
                }
                section.card {
                    h2 { "Vehicles" }
                    @if let Some(r) = refusal.filter(|r| !placed(r)) { p.error role="alert" { (r.message) } }
                    @if page.vehicles.is_empty() { p.muted { "No vehicle registered to this customer." } }
                    @for l in &page.vehicles { (vehicle_card(staff, page, l, refusal)) }
                    @if staff.can(CHANGE) {
                        h3 { "Add a vehicle by VIN" }
                        (vehicle_form(staff, c.id, refusal))
                    }
                }
            }
            p.muted.computed { "States as of " (rfc3339(page.now_ms)) "." }
        },
    )
}

fn tally_row(what: &str, t: &Tally) -> Markup {
    html! { tr data-tally=(what) { th { (what) } td.num { (t.new) } td.num { (t.changed) } td.num { (t.unchanged) } } }
}

fn report(r: &ImportReport) -> Markup {
    html! {
        section.card #import-report role="status" {
            h2 { @if r.dry_run { "Check only: nothing was written" } @else { "Imported" } }
            p { (r.to_string()) }
            table {
                thead { tr { th {} th.num { "new" } th.num { "changed" } th.num { "unchanged" } } }
                tbody { (tally_row("customers", &r.customers)) (tally_row("vehicles", &r.vehicles)) }
            }
            p {
                @if r.sources_new.is_empty() { "No new sources." }
                @else { "New sources (map them on the sources page): " (r.sources_new.join(", ")) }
            }
        }
    }
}

/// The few lines of script that send the form with XMLHttpRequest to show
/// the upload's progress, then show the answer as the page. Without
/// script the form posts as usual.
const PROGRESS_JS: &str = r#"
(function () {
  var form = document.getElementById('import');
  var bar = document.getElementById('import-progress');
  if (!form || !bar || !window.XMLHttpRequest || !window.FormData) return;
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open('POST', form.action);
    bar.hidden = false;
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
    };
    xhr.onload = function () {
      document.open(); document.write(xhr.responseText); document.close();
    };
    xhr.onerror = function () { form.submit(); };
    xhr.send(new FormData(form));
  });
})();
"#;

pub fn import(staff: &Staff, result: Option<&ImportResult>) -> Markup {
    staff_layout(
        staff,
        "Import customers",
        html! {
            p.crumbs { a href="/customers" { "← Customers" } }
            h1 { "Import the DMS customer file" }
            @match result {
                Some(ImportResult::Done(r)) => (report(r)),
                Some(ImportResult::Refused(lines)) => {
                    section.card #import-refused {
                        ul.problems role="alert" { @for l in lines { li { (l) } } }
                    }
                },
                None => {},
            }
            section.card {
                form #import method="post" action="/customers/import" enctype="multipart/form-data" {
                    input type="hidden" name="csrf" value=(staff.csrf);
                    p { label { "Customer file (CSV) "
                        input type="file" name=(FILE_FIELD) accept=".csv,text/csv" required; } }
                    p { label.check { input type="checkbox" name="dry_run" value="1" checked[result.is_none()]; " Check only (dry run): report what would change, write nothing" } }
                    p.muted {
                        "UTF-8 CSV as docs/customers.md describes, at most " (MAX_FILE_BYTES / (1024 * 1024)) " MB. "
                        "Customers are matched by their DMS id, vehicles by VIN; a value in the file replaces Forecourt's, an empty cell keeps it; nothing is deleted. "
                        "A file with any bad row changes nothing, and every bad row is listed with its number."
                    }
                    p { progress #import-progress hidden value="0" max="1" {} }
                    p { button type="submit" { "Send the file" } }
                }
            }
            script { (PreEscaped(PROGRESS_JS)) }
        },
    )
}
