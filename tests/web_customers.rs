//! The customers pages, the DMS import and export in the UI, invitations,
//! and the customers JSON API end to end (issue 5, R-VEH-1..3): the real
//! `forecourt run`, a plain HTTP/1.1 client that posts forms and files as
//! a browser does, and `forecourt export customers` to compare against.

mod common;

use std::path::Path;
use std::process::Command;

use common::http::{request, Browser, Reply, Rig};
use common::*;

const HEADER: &str =
    "customer_id,name,phone,email,source,customer_since,vin,brand,model,model_year,fleet";
const FORD: &str = "WF0XXXGCDX1234567";
const VW: &str = "WVWZZZ1JZXW000001";
const BOUNDARY: &str = "----forecourtCustomersBoundary5dE2";

fn good_file() -> String {
    format!(
        "{HEADER}\n\
K1,Anna Berg,+49 30 1234,anna@example.org,Google,2025-01-10,{FORD},Ford,Focus,2019,\n\
K2,\"Bauer, Tom\",,,,2024-05-01,,,,,\n\
K3,Carl Diaz,,carl@example.org,Referral,2023-02-02,{VW},Volkswagen,Golf,2021,\n"
    )
}

/// The multipart body of the import form.
fn upload_body(csrf: &str, file: &[u8], dry_run: bool) -> Vec<u8> {
    let mut b = Vec::new();
    let field = |name: &str, value: &str| {
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    b.extend_from_slice(field("csrf", csrf).as_bytes());
    if dry_run {
        b.extend_from_slice(field("dry_run", "1").as_bytes());
    }
    b.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"customers\"; filename=\"dms.csv\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn upload(b: &Browser, file: &[u8], dry_run: bool) -> Reply {
    let page = b.get("/customers/import");
    assert_eq!(page.status, 200, "{page:?}");
    request(
        &b.addr,
        &format!(
            "POST /customers/import HTTP/1.1\r\n{}Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n",
            b.page_headers()
        ),
        &upload_body(&page.csrf(), file, dry_run),
    )
}

impl Rig {
    /// The rig with the good file imported through the page.
    fn imported() -> Rig {
        let rig = Rig::start();
        let r = upload(&rig.admin, good_file().as_bytes(), false);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.contains("imported 3 rows"), "{}", r.body);
        rig
    }

    /// `forecourt export customers` (through the control socket).
    fn export(&self) -> String {
        let out = forecourt(&["export", "customers"], &self.app.config);
        assert!(out.status.success(), "export: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn token(&self, name: &str, role: &str) -> String {
        let out = forecourt(
            &["token", "create", "--name", name, "--role", role],
            &self.app.config,
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

fn forecourt(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run forecourt")
}

/// The id of the customer named `name` on the list page.
fn customer_id(list: &Reply, name: &str) -> u64 {
    let link = "class=\"customer-link\" href=\"/customers/";
    list.body
        .match_indices(link)
        .find_map(|(at, m)| {
            let rest = &list.body[at + m.len()..];
            let id = &rest[..rest.find('"').unwrap()];
            let text = &rest[rest.find('>').unwrap() + 1..];
            text.starts_with(name).then(|| id.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no customer {name} in {}", list.body))
}

/// What the page says in the element with `attr="value"`, up to its close.
fn marked<'a>(page: &'a Reply, attr: &str) -> &'a str {
    let at = page
        .body
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in {}", page.body));
    let rest = &page.body[at..];
    let v = rest.find('>').unwrap() + 1;
    &rest[v..v + rest[v..].find('<').unwrap()]
}

#[test]
fn import_in_the_ui_dry_run_bad_file_reimport_and_export() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = Rig::start();
    let empty = rig.export();

    let dry = upload(&rig.admin, good_file().as_bytes(), true);
    assert_eq!(dry.status, 200, "{dry:?}");
    assert!(dry.body.contains("Check only: nothing was written"));
    assert!(dry.body.contains("customers 3 new, 0 changed, 0 unchanged"));
    assert_eq!(rig.export(), empty, "a dry run changes nothing");

    let bad = format!(
        "{HEADER}\n\
K1,Anna Berg,,not-an-email,,,,,,,\n\
K2,Tom,,,,,TOO-SHORT,,,,\n\
K3,Carl Diaz,,,,,,,,,\n"
    );
    let r = upload(&rig.admin, bad.as_bytes(), false);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("nothing changed"), "{}", r.body);
    assert!(r.body.contains("row 2:"), "{}", r.body);
    assert!(r.body.contains("row 3:"), "{}", r.body);
    assert!(!r.body.contains("row 4:"), "row 4 is good: {}", r.body);
    assert_eq!(rig.export(), empty, "a bad file changes nothing");
    let latin1 = b"customer_id,name\nK1,Ren\xe9\n";
    let r = upload(&rig.admin, latin1, false);
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(rig.export(), empty);

    let done = upload(&rig.admin, good_file().as_bytes(), false);
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("customers 3 new"), "{}", done.body);
    assert!(done.body.contains("vehicles 2 new"), "{}", done.body);
    let after = rig.export();
    assert!(after.contains("Anna Berg") && after.contains(VW), "{after}");

    let again = upload(&rig.admin, good_file().as_bytes(), false);
    assert_eq!(again.status, 200);
    assert!(
        again
            .body
            .contains("customers 0 new, 0 changed, 3 unchanged"),
        "{}",
        again.body
    );
    assert_eq!(rig.export(), after, "the same file again changes nothing");

    let csv = rig.admin.get("/customers/export.csv");
    assert_eq!(csv.status, 200);
    assert!(csv
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment")));
    assert_eq!(csv.body, after, "the page's export is the CLI's");
    let back = upload(&rig.admin, csv.body.as_bytes(), false);
    assert!(back.body.contains("0 new, 0 changed"), "{}", back.body);
    assert_eq!(
        rig.export(),
        after,
        "an export imported back changes nothing"
    );
}

#[test]
fn customer_pages_edits_and_invitations() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = Rig::imported();
    let a = &rig.admin;
    let list = a.get("/customers");
    assert_eq!(list.status, 200, "{list:?}");
    for name in ["Anna Berg", "Bauer, Tom", "Carl Diaz", "anna@example.org"] {
        assert!(list.body.contains(name), "{name}: {}", list.body);
    }
    assert_eq!(
        list.body.matches(">unknown source<").count(),
        1,
        "Tom's source is unknown"
    );
    let anna = customer_id(&list, "Anna Berg");
    let page = a.get(&format!("/customers/{anna}"));
    assert_eq!(page.status, 200);
    for s in [FORD, "Ford", "Focus", "2019", "not connected", "Google"] {
        assert!(page.body.contains(s), "{s}: {}", page.body);
    }
    assert!(page.body.contains("data-assignment=\"without_customer\""));

    // Contact details.
    let csrf = page.csrf();
    let path = format!("/customers/{anna}");
    let r = a.post(
        &path,
        &[
            ("csrf", &csrf),
            ("name", "Anna Berg-Lind"),
            ("phone", "+49 30 9999"),
            ("email", "anna@example.org"),
            ("customer_since", "2025-01-10"),
        ],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let page = a.get(&path);
    assert_eq!(marked(&page, "id=\"customer-name\""), "Anna Berg-Lind");
    assert!(page.body.contains("+49 30 9999"));
    let before = rig.export();
    let r = a.post(
        &path,
        &[("csrf", &csrf), ("name", "Anna"), ("email", "not an email")],
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.body.contains("value=\"not an email\""),
        "typed value kept"
    );
    assert!(r.body.contains("role=\"alert\""));
    assert_eq!(rig.export(), before, "a refused edit changes nothing");

    // Source.
    let r = a.post(
        &format!("{path}/source"),
        &[("csrf", &csrf), ("source", "Referral")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert!(rig
        .export()
        .contains("Anna Berg-Lind,+49 30 9999,anna@example.org,Referral"));
    let r = a.post(
        &format!("{path}/source"),
        &[("csrf", &csrf), ("source", "Carrier pigeon")],
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("Carrier pigeon"), "{}", r.body);

    // Invite, send, accept.
    let r = a.post(&format!("{path}/invite"), &[("csrf", &csrf), ("vin", FORD)]);
    assert_eq!(r.status, 303, "{r:?}");
    let page = a.get(&path);
    assert!(
        page.body.contains("data-invitation=\"created\""),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("data-assignment=\"awaiting_assignment\""));
    assert!(page.body.contains("data-event=\"send\""));
    let inv = {
        let at = page.body.find("name=\"invitation\" value=\"").unwrap() + 25;
        page.body[at..at + page.body[at..].find('"').unwrap()].to_string()
    };
    let event = |e: &str| {
        a.post(
            &format!("{path}/invitation"),
            &[("csrf", &csrf), ("invitation", &inv), ("event", e)],
        )
    };
    assert_eq!(event("send").status, 303);
    let page = a.get(&path);
    assert!(page.body.contains("data-invitation=\"sent\""));
    assert!(page.body.contains("expires"), "the expiry is shown");
    assert!(!page.body.contains("data-event=\"send\""), "sent once only");
    assert_eq!(event("accept").status, 303);
    let page = a.get(&path);
    assert!(page.body.contains("data-assignment=\"assigned\""));
    assert!(page.body.contains("data-invitation=\"accepted\""));
    assert!(page.body.contains(">active<"), "{}", page.body);

    // A refused event says why and changes nothing.
    let r = event("decline");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("nothing more can happen"), "{}", r.body);
    let page = a.get(&path);
    assert!(page.body.contains("data-invitation=\"accepted\""));
    let r = a.post(&format!("{path}/invite"), &[("csrf", &csrf), ("vin", FORD)]);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("already assigned"), "{}", r.body);

    // A vehicle added by VIN, and a bad one refused at its form.
    let r = a.post(
        &format!("{path}/vehicles"),
        &[
            ("csrf", &csrf),
            ("vin", "TMBJG7NE3GP329256"),
            ("brand", "Skoda"),
            ("model", "Octavia"),
            ("model_year", "2016"),
        ],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert!(a.get(&path).body.contains("TMBJG7NE3GP329256"));
    let r = a.post(
        &format!("{path}/vehicles"),
        &[("csrf", &csrf), ("vin", "SHORT"), ("model_year", "2016")],
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("value=\"SHORT\""));

    // A new customer.
    assert_eq!(a.get("/customers/new").status, 200);
    let r = a.post(
        "/customers",
        &[("csrf", &csrf), ("name", "Dora Ek"), ("phone", "+46 8 123")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let dora = a.get(r.header("location").unwrap());
    assert_eq!(marked(&dora, "id=\"customer-name\""), "Dora Ek");

    // A technician reads but does not change.
    let tech = rig.staff("tech", "technician");
    assert_eq!(tech.get("/customers").status, 200);
    let page = tech.get(&path);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"contact\""), "no forms for them");
    let before = rig.export();
    let csrf = page.csrf();
    let r = tech.post(&path, &[("csrf", &csrf), ("name", "Tech was here")]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = tech.post(
        &format!("{path}/source"),
        &[("csrf", &csrf), ("source", "")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(tech.get("/customers/import").status, 403);
    let r = request(
        &tech.addr,
        &format!(
            "POST /customers/import HTTP/1.1\r\n{}Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n",
            tech.page_headers()
        ),
        &upload_body(&csrf, good_file().as_bytes(), false),
    );
    assert_eq!(r.status, 403);
    assert_eq!(rig.export(), before, "the technician changed nothing");
}

// ---- The JSON API ----

fn api(
    rig: &Rig,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let head = match body {
        Some(_) => format!(
            "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ),
        None => format!("{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"),
    };
    let r = request(&rig.app.http, &head, body.unwrap_or("").as_bytes());
    let v = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.body));
    (r.status, v)
}

const CUSTOMER_KEYS: &[&str] = &[
    "id",
    "dms_id",
    "name",
    "phone",
    "email",
    "source",
    "customer_since",
    "created_at",
    "updated_at",
    "vehicles",
];
const VEHICLE_KEYS: &[&str] = &[
    "vin",
    "brand",
    "model",
    "model_year",
    "fleet",
    "device_id",
    "connected",
    "assignment",
    "active",
    "invitation",
];
const INVITATION_KEYS: &[&str] = &[
    "id",
    "vin",
    "customer_id",
    "state",
    "created_at",
    "sent_at",
    "answered_at",
    "expired_at",
    "expires_at",
];

fn has_keys(v: &serde_json::Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
}

#[test]
fn the_customers_api_pages_invites_and_refuses() {
    if skip_under_qemu_user() {
        return;
    }
    let rig = Rig::imported();
    let advisor = rig.token("crm", "advisor");
    let tech = rig.token("workshop", "technician");

    let (s, first) = api(&rig, &advisor, "GET", "/api/v1/customers?limit=2", None);
    assert_eq!(s, 200, "{first}");
    let items = first["customers"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let cursor = first["next"].as_str().expect("a next page").to_string();
    let (s, second) = api(
        &rig,
        &tech,
        "GET",
        &format!("/api/v1/customers?limit=2&cursor={cursor}"),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(second["customers"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null());
    let all: Vec<serde_json::Value> = items
        .iter()
        .chain(second["customers"].as_array().unwrap())
        .cloned()
        .collect();
    let names: Vec<&str> = all.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Anna Berg", "Bauer, Tom", "Carl Diaz"]);
    for c in &all {
        has_keys(c, CUSTOMER_KEYS);
        assert!(c["id"].is_string());
        for v in c["vehicles"].as_array().unwrap() {
            has_keys(v, VEHICLE_KEYS);
        }
    }
    assert!(all[1]["source"].is_null() && all[1]["phone"].is_null());
    let anna = all[0]["id"].as_str().unwrap().to_string();
    let ford = &all[0]["vehicles"][0];
    assert_eq!(ford["vin"], FORD);
    assert_eq!(ford["connected"], false);
    assert!(ford["device_id"].is_null() && ford["invitation"].is_null());
    assert_eq!(ford["assignment"], "without_customer");

    // Bad input: 400 and 404, never 5xx.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=zz",
        "colour=red",
    ] {
        let (s, v) = api(
            &rig,
            &advisor,
            "GET",
            &format!("/api/v1/customers?{q}"),
            None,
        );
        assert_eq!(s, 400, "{q}: {v}");
    }
    for p in ["/api/v1/customers/999", "/api/v1/customers/abc"] {
        let (s, v) = api(&rig, &advisor, "GET", p, None);
        assert_eq!(s, 404, "{p}: {v}");
    }

    // Invite and events.
    let invite = format!("/api/v1/customers/{anna}/invitations");
    let vin = format!("{{\"vin\": \"{FORD}\"}}");
    let (s, v) = api(&rig, &tech, "POST", &invite, Some(&vin));
    assert_eq!(s, 403, "{v}");
    let (s, v) = api(&rig, &advisor, "POST", &invite, Some(&vin));
    assert_eq!(s, 201, "{v}");
    has_keys(&v["invitation"], INVITATION_KEYS);
    assert_eq!(v["invitation"]["state"], "created");
    let inv = v["invitation"]["id"].as_str().unwrap().to_string();
    let (s, v) = api(&rig, &advisor, "POST", &invite, Some(&vin));
    assert_eq!(s, 409, "already out: {v}");
    let (s, v) = api(
        &rig,
        &advisor,
        "POST",
        &invite,
        Some(&format!("{{\"vin\": \"{VW}\"}}")),
    );
    assert_eq!(s, 409, "Carl's vehicle: {v}");
    let (s, _) = api(
        &rig,
        &advisor,
        "POST",
        &invite,
        Some("{\"vin\": \"short\"}"),
    );
    assert_eq!(s, 422);
    let (s, _) = api(
        &rig,
        &advisor,
        "POST",
        "/api/v1/customers/999/invitations",
        Some(&vin),
    );
    assert_eq!(s, 404);

    let events = format!("/api/v1/invitations/{inv}/events");
    let (s, v) = api(
        &rig,
        &advisor,
        "POST",
        &events,
        Some("{\"event\": \"sent\"}"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["invitation"]["state"], "sent");
    assert!(v["invitation"]["expires_at"].is_string());
    let (s, v) = api(
        &rig,
        &advisor,
        "POST",
        &events,
        Some("{\"event\": \"sent\"}"),
    );
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("already sent"), "{v}");
    let (s, _) = api(
        &rig,
        &advisor,
        "POST",
        &events,
        Some("{\"event\": \"eaten\"}"),
    );
    assert_eq!(s, 422);
    let (s, _) = api(&rig, &advisor, "POST", &events, Some("{}"));
    assert_eq!(s, 422);
    let (s, _) = api(
        &rig,
        &advisor,
        "POST",
        "/api/v1/invitations/999/events",
        Some("{\"event\": \"accepted\"}"),
    );
    assert_eq!(s, 404);
    let (s, v) = api(
        &rig,
        &advisor,
        "POST",
        &events,
        Some("{\"event\": \"accepted\"}"),
    );
    assert_eq!(s, 200, "{v}");

    let (s, v) = api(
        &rig,
        &tech,
        "GET",
        &format!("/api/v1/customers/{anna}"),
        None,
    );
    assert_eq!(s, 200);
    let ford = &v["customer"]["vehicles"][0];
    assert_eq!(ford["assignment"], "assigned");
    assert_eq!(ford["active"], true);
    assert_eq!(ford["invitation"]["state"], "accepted");
    has_keys(&ford["invitation"], INVITATION_KEYS);
}
