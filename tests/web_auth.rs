//! Staff accounts and sessions in the web UI end to end (issue 4,
//! "Security"; SPEC.md R-VEH-5): the real appliance started in-process on
//! an empty data directory with a fake clock, and a plain HTTP/1.1 client
//! over loopback that behaves as a browser does with forms and cookies.
//! Each test names what it proves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use forecourt::clock::{FakeClock, SharedClock};
use forecourt::config::Settings;
use forecourt::web::session::{self, FAILURE_WINDOW_MS, IDLE_MS, MAX_FAILURES};

/// 2026-01-11T00:00:00Z.
const NOW: u64 = 1_768_089_600_000;
const MIN: u64 = 60_000;
const ADMIN_PASSWORD: &str = "first admin's password";

struct App {
    runtime: tokio::runtime::Runtime,
    running: Option<forecourt::app::Running>,
    addr: String,
    clock: FakeClock,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// A fresh appliance: no users, no links, the clock at NOW.
    fn start() -> App {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let settings = Settings::parse(&format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n",
            data_dir.display().to_string()
        ))
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let clock = FakeClock::new(NOW);
        let shared: SharedClock = Arc::new(clock.clone());
        let running = runtime
            .block_on(forecourt::app::start(settings, shared))
            .unwrap();
        let addr = running.http_addr.to_string();
        App {
            runtime,
            running: Some(running),
            addr,
            clock,
            data_dir,
            _dir: dir,
        }
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut headers = Vec::new();
        let c;
        if let Some(v) = cookie {
            c = format!("{}={v}", session::COOKIE);
            headers.push(("Cookie", c.as_str()));
        }
        http(&self.addr, "GET", path, &headers, "")
    }

    /// A form as a browser posts it from one of the appliance's pages.
    fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
        let origin = format!("http://{}", self.addr);
        self.post_with(
            path,
            cookie,
            form,
            &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
        )
    }

    fn post_with(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Reply {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers: Vec<(&str, &str)> =
            vec![("Content-Type", "application/x-www-form-urlencoded")];
        let c;
        if let Some(v) = cookie {
            c = format!("{}={v}", session::COOKIE);
            headers.push(("Cookie", c.as_str()));
        }
        headers.extend_from_slice(extra);
        http(&self.addr, "POST", path, &headers, &body)
    }

    fn setup_code(&self) -> String {
        std::fs::read_to_string(session::setup_code_path(&self.data_dir))
            .expect("a setup code file")
            .trim()
            .to_owned()
    }

    /// Creates the first admin `boss` with the setup code; returns the
    /// session it is logged in with.
    fn setup_admin(&self) -> String {
        let code = self.setup_code();
        let r = self.post(
            "/setup",
            None,
            &[
                ("code", &code),
                ("name", "boss"),
                ("display_name", "The Boss"),
                ("password", ADMIN_PASSWORD),
                ("password_again", ADMIN_PASSWORD),
            ],
        );
        assert_eq!(r.status, 303, "{r:?}");
        r.session().expect("setup logs the admin in")
    }

    fn login(&self, name: &str, password: &str) -> Reply {
        self.post("/login", None, &[("name", name), ("password", password)])
    }

    /// The CSRF token the page at `path` gives its forms.
    fn csrf(&self, path: &str, cookie: &str) -> String {
        let r = self.get(path, Some(cookie));
        assert_eq!(r.status, 200, "{r:?}");
        r.csrf().expect("a csrf field")
    }

    /// Adds a user as the admin of `cookie`.
    fn add_user(&self, cookie: &str, name: &str, role: &str, password: &str) -> Reply {
        let csrf = self.csrf("/users", cookie);
        self.post(
            "/users",
            Some(cookie),
            &[
                ("csrf", &csrf),
                ("name", name),
                ("display_name", ""),
                ("role", role),
                ("password", password),
                ("password_again", password),
            ],
        )
    }

    /// The names the users page lists.
    fn listed_users(&self, cookie: &str) -> Vec<String> {
        let body = self.get("/users", Some(cookie)).body;
        body.split("href=\"/users/")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The session id a `Set-Cookie` gives, if any (an empty one clears).
    fn session(&self) -> Option<String> {
        let cookie = self.header("set-cookie")?;
        let value = cookie.strip_prefix(&format!("{}=", session::COOKIE))?;
        let value = value.split(';').next()?.to_owned();
        (!value.is_empty()).then_some(value)
    }

    fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        Some(self.body[at..].split('"').next()?.to_owned())
    }

    fn redirects_to(&self, path: &str) -> bool {
        self.status == 303 && self.header("location") == Some(path)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn setup_code_file(data_dir: &Path) -> PathBuf {
    session::setup_code_path(data_dir)
}

#[test]
fn issue_4_the_setup_code_creates_the_first_admin_once() {
    use std::os::unix::fs::PermissionsExt;
    let app = App::start();
    // "On first start with no users, a one-time setup code is ... written
    // to the data directory", owner-only.
    let file = setup_code_file(&app.data_dir);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(app.get("/", None).redirects_to("/login"));
    assert!(
        app.get("/login", None).redirects_to("/setup"),
        "no users: login sends to setup"
    );
    assert_eq!(app.get("/setup", None).status, 200);

    let code = app.setup_code();
    let form = |code: &str, password: &str| {
        vec![
            ("code", code.to_owned()),
            ("name", "boss".to_owned()),
            ("display_name", "".to_owned()),
            ("password", password.to_owned()),
            ("password_again", password.to_owned()),
        ]
    };
    let send = |f: Vec<(&str, String)>| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app.post("/setup", None, &f)
    };
    // A wrong code is refused, and the right one still works after.
    let wrong = send(form("0000-0000-0000-0000", ADMIN_PASSWORD));
    assert_eq!(wrong.status, 403, "{wrong:?}");
    assert!(wrong.body.contains("not the setup code"));
    // Bad input: a clear message, 422, nothing stored.
    let short = send(form(&code, "short"));
    assert_eq!(short.status, 422, "{short:?}");
    assert!(
        short.body.contains("at least 10 characters"),
        "{}",
        short.body
    );
    assert!(file.exists(), "the code is not used up by a refused form");

    // The code as a person might type it: lower case, spaces for dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let done = send(form(&typed, ADMIN_PASSWORD));
    assert!(done.redirects_to("/"), "{done:?}");
    let cookie = done.session().expect("logged in");
    assert!(!file.exists(), "the file is deleted once the code is used");
    let status = app.get("/", Some(&cookie));
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(app.listed_users(&cookie), ["boss"]);

    // Once: the same code again makes no second admin.
    let again = send(form(&code, ADMIN_PASSWORD));
    assert_eq!(again.status, 403, "{again:?}");
    assert!(app.get("/setup", None).redirects_to("/login"));
    assert_eq!(app.listed_users(&cookie), ["boss"]);
}

#[test]
fn issue_4_login_and_logout() {
    let app = App::start();
    let first = app.setup_admin();
    let r = app.login("BOSS", ADMIN_PASSWORD);
    assert!(r.redirects_to("/"), "names are not case-sensitive: {r:?}");
    let cookie = r.session().unwrap();
    assert_ne!(cookie, first, "each login is its own session");
    // The cookie: HttpOnly, SameSite=Strict, Path=/.
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    assert_eq!(cookie.len(), 64, "32 random bytes in hex");
    assert_eq!(app.get("/", Some(&cookie)).status, 200);
    let again = app.get("/login", Some(&cookie));
    assert!(
        again.status == 200 && again.body.contains("Log out"),
        "already logged in: {again:?}"
    );

    let csrf = app.csrf("/login", &cookie);
    let out = app.post("/logout", Some(&cookie), &[("csrf", &csrf)]);
    assert!(out.redirects_to("/login"), "{out:?}");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert!(
        app.get("/", Some(&cookie)).redirects_to("/login"),
        "the session is over on the server"
    );
    assert_eq!(
        app.get("/", Some(&first)).status,
        200,
        "other sessions go on"
    );
}

#[test]
fn issue_4_a_wrong_password_or_unknown_name_is_refused_alike() {
    let app = App::start();
    app.setup_admin();
    let wrong = app.login("boss", "not the password");
    let unknown = app.login("nobody", "not the password");
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.session().is_none());
        assert!(r.body.contains("Wrong name or password"), "{}", r.body);
    }
    let empty = app.login("boss", "");
    assert_eq!(empty.status, 422, "{empty:?}");
}

#[test]
fn issue_4_logins_are_rate_limited_per_name() {
    let app = App::start();
    app.setup_admin();
    for i in 0..MAX_FAILURES {
        let r = app.login("boss", &format!("guess {i}"));
        assert_eq!(r.status, 401, "failure {i}: {r:?}");
    }
    // Then 429 with a clear message, even with the right password.
    let limited = app.login("boss", ADMIN_PASSWORD);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(
        limited.body.contains("Too many failed attempts"),
        "{}",
        limited.body
    );
    assert!(limited.header("retry-after").is_some());
    assert!(limited.session().is_none());
    // Another name from the same computer is not locked out.
    assert_eq!(app.login("someone", "guess").status, 401);
    // After the window, the right password works again.
    app.clock.advance(FAILURE_WINDOW_MS);
    assert!(app.login("boss", ADMIN_PASSWORD).redirects_to("/"));
}

#[test]
fn issue_4_sessions_end_after_12_hours_idle() {
    let app = App::start();
    let cookie = app.setup_admin();
    // In use: each request inside the idle time keeps it alive.
    for _ in 0..3 {
        app.clock.advance(IDLE_MS - 10 * MIN);
        assert_eq!(app.get("/", Some(&cookie)).status, 200);
    }
    app.clock.advance(IDLE_MS);
    assert!(app.get("/", Some(&cookie)).redirects_to("/login"));
    assert!(
        app.get("/", Some(&cookie)).redirects_to("/login"),
        "and stays over"
    );
}

#[test]
fn issue_4_csrf_missing_forged_or_cross_site_is_403_and_changes_nothing() {
    let app = App::start();
    let cookie = app.setup_admin();
    let csrf = app.csrf("/users", &cookie);
    let form = |csrf: &'static str| {
        vec![
            ("csrf", csrf),
            ("name", "mallory"),
            ("role", "admin"),
            ("password", "mallory's password"),
            ("password_again", "mallory's password"),
        ]
    };
    let missing: Vec<_> = form("").into_iter().filter(|(k, _)| *k != "csrf").collect();
    let r = app.post("/users", Some(&cookie), &missing);
    assert_eq!(r.status, 403, "{r:?}");
    let r = app.post("/users", Some(&cookie), &form("00"));
    assert_eq!(r.status, 403, "{r:?}");
    let forged = "f".repeat(64);
    let mut with_forged = form("");
    with_forged[0].1 = &forged;
    let r = app.post("/users", Some(&cookie), &with_forged);
    assert_eq!(r.status, 403, "{r:?}");
    // The right token from another site's page: refused by Origin and by
    // Sec-Fetch-Site.
    let mut good = form("");
    good[0].1 = &csrf;
    let r = app.post_with(
        "/users",
        Some(&cookie),
        &good,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = app.post_with(
        "/users",
        Some(&cookie),
        &good,
        &[("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    // Another session's token does not pass for this one's.
    let other = app.login("boss", ADMIN_PASSWORD).session().unwrap();
    let r = app.post("/users", Some(&other), &good);
    assert_eq!(r.status, 403, "{r:?}");
    // A cross-site login form is refused too.
    let r = app.post_with(
        "/login",
        None,
        &[("name", "boss"), ("password", ADMIN_PASSWORD)],
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.session().is_none());

    assert_eq!(app.listed_users(&cookie), ["boss"], "nothing was stored");
    assert_eq!(app.login("mallory", "mallory's password").status, 401);
    // The same form with the token goes through.
    let r = app.post("/users", Some(&cookie), &good);
    assert!(r.redirects_to("/users"), "{r:?}");
}

#[test]
fn r_veh_5_a_technician_is_denied_the_users_pages() {
    let app = App::start();
    let admin = app.setup_admin();
    let r = app.add_user(&admin, "tom", "technician", "tom's password");
    assert!(r.redirects_to("/users"), "{r:?}");
    let tom = app
        .login("tom", "tom's password")
        .session()
        .expect("tom logs in");
    assert_eq!(
        app.get("/", Some(&tom)).status,
        200,
        "a technician reads the status page"
    );
    let r = app.get("/users", Some(&tom));
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("the technician role may not manage users"),
        "{}",
        r.body
    );
    assert_eq!(app.get("/users/boss", Some(&tom)).status, 403);
    // With tom's own valid CSRF token (the login page shows a logged-in
    // user the logout form), the role still refuses.
    let csrf = app.csrf("/login", &tom);
    let r = app.post(
        "/users/boss/password",
        Some(&tom),
        &[
            ("csrf", &csrf),
            ("password", "taken over!!"),
            ("password_again", "taken over!!"),
        ],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("may not manage users"), "{}", r.body);
    assert!(
        app.login("boss", ADMIN_PASSWORD).redirects_to("/"),
        "the admin's password is unchanged"
    );
    // An advisor neither.
    app.add_user(&admin, "ana", "advisor", "ana's password!");
    let ana = app.login("ana", "ana's password!").session().unwrap();
    assert_eq!(app.get("/users", Some(&ana)).status, 403);
}

#[test]
fn r_veh_5_an_admin_adds_edits_disables_and_resets_users() {
    let app = App::start();
    let admin = app.setup_admin();
    // Bad form input: a clear message, 422, nothing stored.
    for (name, role, password, says) in [
        ("", "advisor", "a good password", "Enter a user name"),
        ("ines duarte", "advisor", "a good password", "only letters"),
        ("ines", "root", "a good password", "Choose a role"),
        ("ines", "advisor", "short", "at least 10"),
    ] {
        let r = app.add_user(&admin, name, role, password);
        assert_eq!(r.status, 422, "{name} {role}: {r:?}");
        assert!(r.body.contains(says), "{says}: {}", r.body);
    }
    assert_eq!(app.listed_users(&admin), ["boss"]);

    assert!(app
        .add_user(&admin, "Ines", "advisor", "ines's password")
        .redirects_to("/users"));
    assert_eq!(
        app.add_user(&admin, "ines", "technician", "another password")
            .status,
        409,
        "names are unique"
    );
    assert_eq!(app.listed_users(&admin), ["boss", "ines"]);
    let ines = app
        .login("ines", "ines's password")
        .session()
        .expect("the new user logs in");
    assert_eq!(app.get("/", Some(&ines)).status, 200);

    // Edit: display name and role.
    let csrf = app.csrf("/users/ines", &admin);
    let r = app.post(
        "/users/ines",
        Some(&admin),
        &[
            ("csrf", &csrf),
            ("display_name", "Inês Duarte"),
            ("role", "admin"),
        ],
    );
    assert!(r.redirects_to("/users/ines"), "{r:?}");
    let page = app.get("/users/ines", Some(&admin)).body;
    assert!(page.contains("Inês Duarte"));
    assert_eq!(
        app.get("/users", Some(&ines)).status,
        200,
        "the new role holds at once"
    );

    // Disable: the session ends at once and a login is refused.
    let r = app.post("/users/ines/disable", Some(&admin), &[("csrf", &csrf)]);
    assert!(r.redirects_to("/users/ines"), "{r:?}");
    assert!(app.get("/", Some(&ines)).redirects_to("/login"));
    assert_eq!(
        app.login("ines", "ines's password").status,
        401,
        "a disabled user cannot log in"
    );
    // An admin cannot disable themself, nor the last enabled admin go.
    let r = app.post("/users/boss/disable", Some(&admin), &[("csrf", &csrf)]);
    assert_eq!(r.status, 409, "{r:?}");
    let r = app.post(
        "/users/boss",
        Some(&admin),
        &[
            ("csrf", &csrf),
            ("display_name", "Boss"),
            ("role", "advisor"),
        ],
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("last admin"));

    // Enable and reset the password: the old one no longer works.
    assert!(app
        .post("/users/ines/enable", Some(&admin), &[("csrf", &csrf)])
        .redirects_to("/users/ines"));
    let r = app.post(
        "/users/ines/password",
        Some(&admin),
        &[
            ("csrf", &csrf),
            ("password", "a brand new one"),
            ("password_again", "a brand new one"),
        ],
    );
    assert!(r.redirects_to("/users/ines"), "{r:?}");
    assert_eq!(app.login("ines", "ines's password").status, 401);
    assert!(app.login("ines", "a brand new one").redirects_to("/"));
    assert_eq!(app.get("/users/nobody", Some(&admin)).status, 404);
}

#[test]
fn issue_4_route_table_every_route_without_a_session_is_refused() {
    let app = App::start();
    let admin = app.setup_admin();
    let routes = forecourt::web::session_routes();
    assert!(routes.len() >= 9, "{routes:?}");
    let bogus = "ab".repeat(32);
    for (method, pattern) in routes {
        let path = pattern
            .replace("{name}", "boss")
            .replace("{id}", "1")
            .replace("{device_id}", "1");
        for cookie in [None, Some(bogus.as_str())] {
            match method {
                "GET" => {
                    let r = app.get(&path, cookie);
                    assert!(
                        r.redirects_to("/login"),
                        "{method} {path} {cookie:?}: {r:?}"
                    );
                }
                "POST" => {
                    // Even with a well-formed form and a token-shaped csrf.
                    let r = app.post(
                        &path,
                        cookie,
                        &[("csrf", &bogus), ("role", "admin"), ("display_name", "x")],
                    );
                    assert_eq!(r.status, 403, "{method} {path} {cookie:?}: {r:?}");
                }
                other => panic!("a route with method {other}"),
            }
        }
        // And each route exists: with the admin's session, not the
        // fallback's 404 (a handler may answer 404 for a lead that is not
        // there) nor a 405.
        let r = if method == "GET" {
            app.get(&path, Some(&admin))
        } else {
            app.post(&path, Some(&admin), &[])
        };
        let no_route = r.status == 404 && r.body.contains("There is no page at this address");
        assert!(!no_route && r.status != 405, "{method} {path}: {r:?}");
    }
    // Nothing changed: the admin is still one, enabled, with the password.
    assert!(app.login("boss", ADMIN_PASSWORD).redirects_to("/"));
}
