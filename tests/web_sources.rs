//! Customer sources end to end over HTTP (SPEC.md R-SRC-1..3): the sources
//! page (create, map, delete refused while used, mapping done, marketing
//! spend with a bad amount refused), the day's vehicles page with a dongle
//! on a real pty whose VIN leads to a customer without source, and the
//! source report with its CSV, against customers imported with the CLI
//! into the running appliance. A technician reads but cannot change.

mod common;

use common::http::{Browser, Reply, Rig};
use common::*;

const HEADER: &str =
    "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet";
/// One of the definitions the sources page shows (docs/customers.md).
const INTERNET_DEFINITION: &str =
    "Found the workshop online: search engines, review sites, social media, the website.";
const CLARA_VIN: &str = "WF0XXXGCDX7654321";
const STRANGER_VIN: &str = "WVWZZZ1JZXW000009";
const CLARA_UNIT: u64 = 0x00C0_FFEE_0000_0101;
const STRANGER_UNIT: u64 = 0x00C0_FFEE_0000_0102;

/// Posts a form of the page at `page` (its CSRF token added).
fn post(b: &Browser, page: &str, path: &str, form: &[(&str, &str)]) -> Reply {
    let csrf = b.get(page).csrf();
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(form);
    b.post(path, &all)
}

fn location(r: &Reply) -> &str {
    r.header("location").unwrap_or("")
}

/// The table row of `data-source="name"` on the sources page.
fn source_row<'a>(page: &'a Reply, name: &str) -> Option<&'a str> {
    let at = page.body.find(&format!("<tr data-source=\"{name}\""))?;
    let rest = &page.body[at..];
    Some(&rest[..rest.find("</tr>").unwrap()])
}

/// The month's spend input of `name`'s row.
fn spend_value<'a>(page: &'a Reply, name: &str) -> &'a str {
    let at = page
        .body
        .find(&format!("<tr data-spend=\"{name}\""))
        .unwrap_or_else(|| panic!("no spend row {name}"));
    let rest = &page.body[at..];
    let v = rest.find("name=\"amount\"").unwrap();
    let v = v + rest[v..].find("value=\"").unwrap() + "value=\"".len();
    &rest[v..v + rest[v..].find('"').unwrap()]
}

fn customers_file() -> String {
    format!(
        "{HEADER}\n\
K1,Anna Berg,,,Google,2025-01-10,,,,,\n\
K2,Bob Stein,,,google,2025-01-20,,,,,\n\
K3,Cem Kaya,,,Yelp,2025-01-15,,,,,\n\
K4,Dora Lind,,,Walk-in,2024-12-31,,,,,\n\
K5,Emil Roth,,,,2025-01-05,,,,,\n\
K9,Clara Day,+49 30 555,,,2025-02-01,{CLARA_VIN},Ford,Focus,2019,\n"
    )
}

#[test]
fn r_src_1_and_3_sources_mapping_spend_and_the_report() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = Rig::start();
    rig.import_customers(&customers_file());
    let admin = &rig.admin;

    // The imported sources, unmapped, with their customers.
    let page = admin.get("/sources");
    assert_eq!(page.status, 200, "{page:?}");
    let google = source_row(&page, "Google").expect("Google listed");
    assert!(google.contains("imported") && google.contains("<td class=\"num\">2</td>"));
    assert!(google.contains("class=\"unmapped\""), "{google}");
    assert!(
        page.body.contains(INTERNET_DEFINITION),
        "R-SRC-1 definitions"
    );

    // Create, and a duplicate refused at the form with what was typed.
    let r = post(
        admin,
        "/sources",
        "/sources",
        &[("name", "Friends"), ("category", "referral")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let page = admin.get("/sources");
    let friends = source_row(&page, "Friends").expect("created");
    assert!(friends.contains("created in Forecourt"));
    assert!(friends.contains("value=\"referral\" selected"), "{friends}");
    let r = post(
        admin,
        "/sources",
        "/sources",
        &[("name", "google"), ("category", "internet")],
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("already exists"), "{}", r.body);
    assert!(r.body.contains("value=\"google\""), "typed text kept");

    // Map by hand.
    let r = post(
        admin,
        "/sources",
        "/sources/map",
        &[("name", "Google"), ("category", "internet")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let page = admin.get("/sources");
    let google = source_row(&page, "Google").unwrap();
    assert!(google.contains("value=\"internet\" selected"), "{google}");
    assert!(!google.contains("class=\"unmapped\""));

    // Delete: refused while customers have it, done when unused.
    let r = post(admin, "/sources", "/sources/delete", &[("name", "Google")]);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.body.contains("is the source of 2 customer(s)"),
        "{}",
        r.body
    );
    assert!(source_row(&r, "Google").is_some(), "still there");
    let r = post(admin, "/sources", "/sources/delete", &[("name", "Friends")]);
    assert_eq!(r.status, 303, "{r:?}");
    assert!(source_row(&admin.get("/sources"), "Friends").is_none());

    // Spend per source and month, typed as money.
    let r = post(
        admin,
        "/sources?month=2025-01",
        "/sources/spend",
        &[
            ("source", "Google"),
            ("month", "2025-01"),
            ("amount", "120,50"),
        ],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(location(&r), "/sources?month=2025-01");
    let r = post(
        admin,
        "/sources?month=2025-01",
        "/sources/spend",
        &[("source", "Yelp"), ("month", "2025-01"), ("amount", "30")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let page = admin.get("/sources?month=2025-01");
    assert!(page.body.contains("Marketing spend in 2025-01"));
    assert_eq!(spend_value(&page, "Google"), "120.50");
    assert_eq!(spend_value(&page, "Yelp"), "30.00");
    assert_eq!(
        spend_value(&admin.get("/sources?month=2025-02"), "Google"),
        "0.00"
    );
    let r = post(
        admin,
        "/sources?month=2025-01",
        "/sources/spend",
        &[
            ("source", "Google"),
            ("month", "2025-01"),
            ("amount", "12.345"),
        ],
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("is not an amount"), "{}", r.body);
    assert_eq!(spend_value(&r, "Google"), "12.345", "typed text kept");
    assert_eq!(
        spend_value(&admin.get("/sources?month=2025-01"), "Google"),
        "120.50",
        "nothing changed"
    );

    // Mapping done: the unmapped rest to "Other new customers".
    let r = post(admin, "/sources", "/sources/mapping-done", &[]);
    assert_eq!(r.status, 303, "{r:?}");
    assert!(location(&r).ends_with("mapped=2"), "{r:?}");
    let page = admin.get(location(&r));
    assert!(page.body.contains("Mapping done: 2 sources mapped"));
    for name in ["Yelp", "Walk-in"] {
        let row = source_row(&page, name).unwrap();
        assert!(row.contains("value=\"other_new\" selected"), "{row}");
    }
    assert!(source_row(&page, "Google")
        .unwrap()
        .contains("value=\"internet\" selected"));

    // The report over January 2025, and its CSV.
    let q = "from=2025-01-01&to=2025-01-31";
    let report = admin.get(&format!("/reports/sources?{q}"));
    assert_eq!(report.status, 200, "{report:?}");
    assert!(report.body.contains("<svg class=\"sources-chart\""));
    assert!(report.body.contains("<title>Google: 2</title>"));
    let internet = report
        .body
        .find("data-group=\"Internet\"")
        .map(|at| &report.body[at..at + 300])
        .unwrap();
    assert!(
        internet.contains(">2<") && internet.contains("120.50") && internet.contains("60.25"),
        "{internet}"
    );
    assert!(report
        .body
        .contains(&format!("/reports/sources.csv?{}", q.replace('&', "&amp;"))));
    let csv = admin.get(&format!("/reports/sources.csv?{q}"));
    assert_eq!(csv.status, 200);
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"forecourt-sources-2025-01-01-to-2025-01-31.csv\""));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines,
        vec![
            "main_category,source,new_customers,marketing_spend,cost_per_new_customer",
            "Internet,,2,120.50,60.25",
            "Internet,Google,2,120.50,60.25",
            "Referral,,0,0.00,",
            "Drive-by,,0,0.00,",
            "Repeat,,0,0.00,",
            "Other new customers,,1,30.00,30.00",
            "Other new customers,Yelp,1,30.00,30.00",
            "Unknown source,,1,0.00,0.00",
            "Total,,4,150.50,37.63",
        ]
    );

    // Bad dates: a 400 naming the parameter.
    for (path, named) in [
        ("/reports/sources?from=2025-13-01", "from"),
        ("/reports/sources.csv?to=soon", "to"),
        ("/reports/sources?from=2025-02-01&to=2025-01-01", "after"),
    ] {
        let r = admin.get(path);
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(r.body.contains(named), "{path}: {}", r.body);
    }
    assert_eq!(admin.get("/sources?month=2025-13").status, 400);

    // A technician reads every page but changes nothing.
    let tech = rig.staff("tom", "technician");
    for path in ["/sources", "/today", &format!("/reports/sources?{q}")] {
        let r = tech.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            !r.body.contains("action=\"/sources/map\""),
            "{path}: no forms"
        );
    }
    let csrf = tech.get("/sources").csrf();
    for (path, form) in [
        ("/sources", vec![("name", "Radio"), ("category", "")]),
        (
            "/sources/map",
            vec![("name", "Google"), ("category", "repeat")],
        ),
        ("/sources/delete", vec![("name", "Walk-in")]),
        ("/sources/mapping-done", vec![]),
        (
            "/sources/spend",
            vec![("source", "Google"), ("month", "2025-01"), ("amount", "1")],
        ),
        (
            "/today/source",
            vec![("customer_id", "1"), ("source", "Google")],
        ),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(form);
        let r = tech.post(path, &all);
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let after = admin.get(&format!("/reports/sources.csv?{q}"));
    assert_eq!(after.body, csv.body, "the technician changed nothing");
    assert!(source_row(&admin.get("/sources"), "Walk-in").is_some());
}

#[test]
fn r_src_2_the_days_vehicles_mark_customers_without_source_and_set_it_in_place() {
    if skip_under_qemu_user() {
        return;
    }
    let mut rig = Rig::start();
    rig.import_customers(&customers_file());
    // Clara's car on the lot, and a car nobody registered to a customer.
    rig.send(CLARA_UNIT, hello(CLARA_VIN, false));
    rig.send(CLARA_UNIT, heartbeat(false, 0, 48_210, 12_480, 0));
    rig.send(STRANGER_UNIT, hello(STRANGER_VIN, false));
    let admin = &rig.admin;

    let page = admin.get("/today");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body
            .contains("1 of 1 customers today (100%) have no source: ask them how they found you"),
        "{}",
        page.body
    );
    // Clara's name is marked (a class, an icon and words, not colour alone).
    let at = page.body.find("Clara Day").expect("Clara listed");
    let before = &page.body[at.saturating_sub(300)..at];
    assert!(before.contains("class=\"customer no-source\""), "{before}");
    assert!(before.contains("⚠"));
    assert!(page.body[at..].starts_with("Clara Day</a> <span class=\"tag\">(no source)"));
    assert!(page.body.contains(CLARA_VIN) && page.body.contains("Ford Focus 2019"));
    // The vehicle without customer says so and leads to the customers.
    assert!(page.body.contains(STRANGER_VIN));
    assert!(page.body.contains("No customer for this vehicle"));
    assert!(page.body.contains("href=\"/customers\""));
    let id_at = page.body.find("name=\"customer_id\" value=\"").unwrap()
        + "name=\"customer_id\" value=\"".len();
    let id = &page.body[id_at..id_at + page.body[id_at..].find('"').unwrap()];
    assert!(page.body.contains(&format!("href=\"/customers/{id}\"")));

    // An unknown source is refused at the row, with nothing changed.
    let r = post(
        admin,
        "/today",
        "/today/source",
        &[("customer_id", id), ("source", "Radio")],
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("no source named"), "{}", r.body);
    assert!(r.body.contains("1 of 1 customers today (100%)"));

    // Set in place: back to the row, the warning gone.
    let r = post(
        admin,
        "/today",
        "/today/source",
        &[("customer_id", id), ("source", "Google")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(location(&r), format!("/today#customer-{id}"));
    let page = admin.get("/today");
    assert!(!page.body.contains("have no source"), "{}", page.body);
    assert!(page.body.contains("Every customer today has a source."));
    assert!(!page.body.contains("class=\"customer no-source\""));
    assert!(page.body.contains(&format!("id=\"customer-{id}\"")));
    assert!(page
        .body
        .contains("<option value=\"Google\" selected>Google</option>"));
}
