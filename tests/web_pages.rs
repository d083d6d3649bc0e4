//! The staff's pages end to end over HTTP (issue 4): the dashboard's
//! figures and their links, the "Leads & error codes" list with its tabs
//! and filters, a lead's page and every action on it (with the refusals a
//! member of staff can meet), and a vehicle's page. The real `forecourt
//! run` with an independent dongle on a real pty; the browser tests
//! (tests/browser.rs) drive the same pages through Chromium.

mod common;

use common::http::{Reply, Rig};
use common::*;

const VIN: &str = "WF0XXXGCDX7654321";
const DEVICE: u64 = 0x00C0_FFEE_0000_0077;
/// ISO 14229-1 status: testFailed | confirmedDTC (a permanent code).
const PERMANENT: u8 = 0x09;

impl Rig {
    /// A Ford (no consent needed) with the engine lamp lit and a misfire
    /// code: a warning-lamp lead and an error-code lead.
    fn vehicle_with_two_leads(&mut self) {
        self.send(DEVICE, hello(VIN, false));
        self.send(DEVICE, heartbeat(false, 0, 48_210, 12_480, 0));
        self.send(DEVICE, lamp(1, true));
        self.send(
            DEVICE,
            dtc_report(0x7E0, &[([0x03, 0x01, 0x00], PERMANENT)]),
        );
    }
}

/// The number shown in the dashboard figure `key`.
fn figure(page: &Reply, key: &str) -> u64 {
    let at = page
        .body
        .find(&format!("data-figure=\"{key}\""))
        .unwrap_or_else(|| panic!("no figure {key}"));
    let rest = &page.body[at..];
    let v = rest.find("class=\"value\">").unwrap() + "class=\"value\">".len();
    rest[v..rest[v..].find('<').unwrap() + v].parse().unwrap()
}

/// The `href` of the figure `key`.
fn figure_link(page: &Reply, key: &str) -> String {
    let at = page.body.find(&format!("data-figure=\"{key}\"")).unwrap();
    let rest = &page.body[at..];
    let h = rest.find("href=\"").unwrap() + "href=\"".len();
    rest[h..rest[h..].find('"').unwrap() + h].replace("&amp;", "&")
}

/// The ids of the leads a list page links to, in order.
fn lead_ids(page: &Reply) -> Vec<u64> {
    page.body
        .match_indices("class=\"lead-link\" href=\"/leads/")
        .map(|(at, m)| {
            let rest = &page.body[at + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

fn lead_status(page: &Reply) -> &str {
    let at = page.body.find("id=\"lead-status\"").expect("a lead page");
    let rest = &page.body[at..];
    let v = rest.find('>').unwrap() + 1;
    &rest[v..v + rest[v..].find('<').unwrap()]
}

#[test]
fn issue_4_the_dashboard_counts_link_to_their_lists_and_follow_an_action() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.vehicle_with_two_leads();
    let dash = rig.admin.get("/");
    assert_eq!(dash.status, 200, "{dash:?}");
    assert!(dash.body.contains("<h1>Dashboard</h1>"));
    assert!(dash.body.contains("Figures computed"), "R-DASH-2: the time");
    assert_eq!(figure(&dash, "leads.open.warning_lamp"), 1);
    assert_eq!(figure(&dash, "leads.open.error_code"), 1);
    assert_eq!(figure(&dash, "leads.open"), 2);
    assert_eq!(figure(&dash, "vehicles.units"), 1);
    // Each figure carries its definition.
    assert!(dash
        .body
        .contains("title=\"Vehicles with a dashboard warning lamp lit"));

    // The figure's link is the list of exactly those leads.
    let link = figure_link(&dash, "leads.open.warning_lamp");
    assert_eq!(link, "/leads?type=warning_lamp");
    let list = rig.admin.get(&link);
    assert_eq!(list.status, 200);
    let ids = lead_ids(&list);
    assert_eq!(ids.len(), 1, "{}", list.body);
    assert!(list.body.contains("data-type=\"warning_lamp\""));

    // Close it from its page: the figure goes down, the closed list has it.
    let page = rig.admin.get(&format!("/leads/{}", ids[0]));
    assert_eq!(lead_status(&page), "open");
    let r = rig.admin.post(
        &format!("/leads/{}/close", ids[0]),
        &[("csrf", &page.csrf()), ("reason", "lamp fixed on the lot")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("/leads/{}", ids[0]).as_str())
    );
    let dash = rig.admin.get("/");
    assert_eq!(figure(&dash, "leads.open.warning_lamp"), 0);
    assert_eq!(figure(&dash, "leads.open"), 1);
    assert!(lead_ids(&rig.admin.get(&link)).is_empty());
    let closed = rig.admin.get("/leads?type=warning_lamp&status=closed");
    assert_eq!(lead_ids(&closed), ids);

    // The live refresh reads the same figures.
    let live = rig.admin.get("/dashboard/figures");
    let json: serde_json::Value = serde_json::from_str(&live.body).unwrap();
    assert_eq!(json["figures"]["leads.open.warning_lamp"], 0);
    assert_eq!(json["figures"]["leads.open.error_code"], 1);
    assert!(json["computed_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn issue_4_every_action_on_a_lead_and_what_is_refused() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.vehicle_with_two_leads();
    let list = rig.admin.get("/leads?type=error_code");
    let id = lead_ids(&list)[0];
    let url = format!("/leads/{id}");
    let page = rig.admin.get(&url);
    assert!(page.body.contains("P0301"), "the code is named");
    for form in ["assign", "close", "note", "message"] {
        assert!(page.body.contains(&format!("id=\"{form}\"")), "form {form}");
    }
    let csrf = page.csrf();

    // A close without a reason is refused, saying why; nothing changes.
    let r = rig.admin.post(
        &format!("{url}/close"),
        &[("csrf", &csrf), ("reason", "  ")],
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Say why the lead is closed"), "{}", r.body);
    assert_eq!(lead_status(&rig.admin.get(&url)), "open");

    // Note, assign, message (the template when left empty).
    let r = rig.admin.post(
        &format!("{url}/note"),
        &[("csrf", &csrf), ("text", "customer called back")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let r = rig.admin.post(
        &format!("{url}/assign"),
        &[("csrf", &csrf), ("user", "admin")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let r = rig
        .admin
        .post(&format!("{url}/message"), &[("csrf", &csrf), ("text", "")]);
    assert_eq!(r.status, 303, "{r:?}");
    let page = rig.admin.get(&url);
    assert!(page.body.contains("customer called back"));
    assert!(page.body.contains("Assigned to admin"));
    assert!(page.body.contains("Messages to the customer"));
    assert!(page.body.contains("recommend booking a diagnostic check"));

    // Close, then a second close is a conflict shown on the page.
    let r = rig.admin.post(
        &format!("{url}/close"),
        &[("csrf", &csrf), ("reason", "fixed")],
    );
    assert_eq!(r.status, 303);
    let page = rig.admin.get(&url);
    assert_eq!(lead_status(&page), "closed");
    assert!(page.body.contains("id=\"reopen\""));
    let r = rig.admin.post(
        &format!("{url}/close"),
        &[("csrf", &csrf), ("reason", "again")],
    );
    assert_eq!(r.status, 409);
    assert!(r.body.contains("already closed"), "{}", r.body);
    let r = rig.admin.post(&format!("{url}/reopen"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(lead_status(&rig.admin.get(&url)), "open");

    // No CSRF token, no change; an unknown lead is a 404 page.
    let r = rig
        .admin
        .post(&format!("{url}/close"), &[("reason", "forged")]);
    assert_eq!(r.status, 403);
    assert_eq!(lead_status(&rig.admin.get(&url)), "open");
    assert_eq!(rig.admin.get("/leads/99999").status, 404);
    assert_eq!(rig.admin.get("/leads/not-a-number").status, 404);
    let r = rig
        .admin
        .post("/leads/99999/note", &[("csrf", &csrf), ("text", "x")]);
    assert_eq!(r.status, 404);
}

#[test]
fn r_veh_5_a_technician_closes_and_annotates_but_does_not_assign() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.vehicle_with_two_leads();
    let tech = rig.staff("tess", "technician");
    let id = lead_ids(&tech.get("/leads?type=warning_lamp"))[0];
    let url = format!("/leads/{id}");
    let page = tech.get(&url);
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("id=\"assign\""),
        "no assign form for a technician"
    );
    assert!(
        !page.body.contains("id=\"message\""),
        "nor messages to the customer"
    );
    let csrf = page.csrf();
    let r = tech.post(
        &format!("{url}/assign"),
        &[("csrf", &csrf), ("user", "tess")],
    );
    assert_eq!(r.status, 403);
    let r = tech.post(
        &format!("{url}/note"),
        &[("csrf", &csrf), ("text", "bulb checked")],
    );
    assert_eq!(r.status, 303);
    let r = tech.post(
        &format!("{url}/close"),
        &[("csrf", &csrf), ("reason", "bulb replaced")],
    );
    assert_eq!(r.status, 303);
    let r = tech.post(&format!("{url}/reopen"), &[("csrf", &csrf)]);
    assert_eq!(
        r.status, 403,
        "reopening overrides a close: an advisor's call"
    );
    assert!(tech.get(&url).body.contains("tess"));
}

#[test]
fn r_lead_filter_tabs_filters_and_bad_addresses() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.vehicle_with_two_leads();
    let all = rig.admin.get("/leads");
    assert_eq!(all.status, 200);
    assert_eq!(lead_ids(&all).len(), 2);
    // The open count per tab.
    for (ty, n) in [("warning_lamp", 1), ("error_code", 1), ("low_battery", 0)] {
        let at = all.body.find(&format!("data-type=\"{ty}\"")).unwrap();
        let rest = &all.body[at..];
        let c = rest.find("class=\"count\">").unwrap() + "class=\"count\">".len();
        assert_eq!(
            &rest[c..c + rest[c..].find('<').unwrap()],
            n.to_string(),
            "{ty}"
        );
    }
    // Severity, period and sorting keep the code; a filter that matches
    // nothing says so.
    let codes = rig
        .admin
        .get("/leads?type=error_code&period=24h&sort=severity");
    assert_eq!(lead_ids(&codes).len(), 1);
    assert!(codes.body.contains("0x7E0"), "the ECU column");
    let none = rig.admin.get("/leads?type=error_code&severity=1");
    let sev = lead_ids(&rig.admin.get("/leads?type=error_code&severity=2")).len()
        + lead_ids(&rig.admin.get("/leads?type=error_code&severity=3")).len()
        + lead_ids(&none).len();
    assert_eq!(sev, 1, "the code has exactly one severity");
    let closed = rig.admin.get("/leads?status=closed");
    assert!(closed.body.contains("No leads match these filters."));
    // Bad parameters: a 400 page naming the parameter, never a 5xx.
    for (q, named) in [
        ("type=lamps", "type"),
        ("status=done", "status"),
        ("period=1y", "period"),
        ("severity=9", "severity"),
        ("sort=colour", "sort"),
        ("cursor=%ff%fe", "cursor"),
        ("page=2", "page"),
    ] {
        let r = rig.admin.get(&format!("/leads?{q}"));
        assert_eq!(r.status, 400, "{q}: {r:?}");
        assert!(r.body.contains(named), "{q}: {}", r.body);
    }
}

#[test]
fn issue_4_the_vehicle_page_shows_identity_leads_codes_and_the_battery_graph() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.vehicle_with_two_leads();
    // POWER_LOST (PROTOCOL.md 0x07), reason 1: unplugged.
    rig.send(DEVICE, (0x07, vec![1]));
    let list = rig.admin.get("/vehicles");
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&format!("href=\"/vehicles/{DEVICE}\"")));
    let page = rig.admin.get(&format!("/vehicles/{DEVICE}"));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains(VIN));
    assert!(
        page.body.contains("<svg class=\"battery\""),
        "the 7-day graph"
    );
    assert!(
        page.body.contains("1 parked hours"),
        "one parked reading so far"
    );
    assert!(page.body.contains("P0301"));
    assert!(page.body.contains("unplugged"), "the disconnection");
    assert_eq!(
        lead_ids(&page).len(),
        3,
        "lamp, code and disconnection leads"
    );
    assert_eq!(rig.admin.get("/vehicles/12345").status, 404);
    assert_eq!(rig.admin.get("/vehicles?after=x").status, 400);
}

#[test]
fn r_dash_1_vehicle_and_invitation_figures_link_to_their_lists() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    // Our dongle's VIN, imported for a customer, and one vehicle without a
    // unit of a fleet.
    rig.import_customers(&format!(
        "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet\n\
             K1,Anna Berg,,,Google,2025-01-10,{VIN},Ford,Focus,2019,\n\
             ,,,,,,TMBJG7NE3GP329256,Skoda,Octavia,2016,City Taxis\n"
    ));
    rig.vehicle_with_two_leads();
    let dash = rig.admin.get("/");
    assert_eq!(
        figure(&dash, "vehicles.without_customer") + figure(&dash, "vehicles.assigned"),
        2
    );
    assert_eq!(figure(&dash, "invitations.sent"), 0);
    let link = figure_link(&dash, "vehicles.without_customer");
    assert_eq!(link, "/vehicles/registered?state=without_customer");
    let list = rig.admin.get(&link);
    assert_eq!(list.status, 200);
    assert!(list.body.contains(VIN), "Anna's Ford has no app user yet");
    assert!(list.body.contains("Anna Berg"));
    assert!(
        list.body.contains(&format!("href=\"/vehicles/{DEVICE}\"")),
        "its unit"
    );
    let all = rig.admin.get("/vehicles/registered");
    assert!(all.body.contains("not connected"), "the Skoda has no unit");
    assert!(all.body.contains("fleet City Taxis"));
    assert_eq!(rig.admin.get("/vehicles/registered?state=lost").status, 400);
    assert_eq!(rig.admin.get("/invitations?state=sent").status, 200);
    assert_eq!(rig.admin.get("/invitations?after=x").status, 400);
    // The unit's page and the API take the DMS's model.
    let page = rig.admin.get(&format!("/vehicles/{DEVICE}"));
    assert!(page.body.contains("Focus"), "the registered model");
    let json = rig.admin.get("/dashboard/figures");
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["figures"]["vehicles.units"], 1);
}
