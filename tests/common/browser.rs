//! Harness of the browser tests (`tests/browser.rs`): a real Chromium
//! driven through chromedriver over WebDriver (fantoccini), the real
//! `forecourt demo` process as the appliance under test, and a tiny
//! "other site" that serves a forged form. Every process started here is
//! killed when its handle is dropped, so a failed assertion leaves no
//! browser or appliance behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long any one wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// The browser's window: a laptop screen, what the screenshots show.
pub const WINDOW: (u32, u32) = (1280, 900);

/// The Debian packages that hold the browser and its driver; CI installs
/// them, and a missing one fails the test rather than skipping it.
const PACKAGES: &str = "chromium chromium-driver";

// ---- Finding the browser ----

/// Where Chromium and chromedriver are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// The first of `names` found on `PATH` (or as given, when absolute).
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    names.iter().find_map(|name| {
        let given = Path::new(name);
        if given.is_absolute() {
            return given.is_file().then(|| given.to_owned());
        }
        dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
    })
}

/// `$var` if set (it must name a file), else the first of `names` found.
fn tool(var: &str, names: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(given) => {
            let given = PathBuf::from(given);
            given.is_file().then_some(given)
        }
        None => on_path(names),
    }
}

/// Finds Chromium and chromedriver (`FORECOURT_CHROMIUM` and
/// `FORECOURT_CHROMEDRIVER` name others), or fails naming the packages to
/// install: a browser test that passes without a browser proves nothing.
pub fn find_tools() -> Tools {
    let chromium = tool(
        "FORECOURT_CHROMIUM",
        &["chromium", "chromium-browser", "/usr/bin/chromium"],
    );
    let chromedriver = tool(
        "FORECOURT_CHROMEDRIVER",
        &["chromedriver", "/usr/bin/chromedriver"],
    );
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Tools {
            chromium,
            chromedriver,
        },
        (chromium, chromedriver) => panic!(
            "the browser tests need Chromium and chromedriver (found chromium: {chromium:?}, \
             chromedriver: {chromedriver:?}): install them with `apt-get install {PACKAGES}`"
        ),
    }
}

// ---- Plain HTTP on loopback ----

/// A request with no body that answers (status, body); for
/// chromedriver's `/status` and the appliance's `/healthz`, beside the
/// browser. The body is read by its length (chromedriver keeps the
/// connection open whatever `Connection: close` says), or to the end.
pub fn http(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        &s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        } else if name == "transfer-encoding" {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if let Some(n) = length {
        let mut body = vec![0; n];
        reader.read_exact(&mut body)?;
        body
    } else if chunked {
        read_chunked(&mut reader)?
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if n == 0 {
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + n + 2, 0);
        reader.read_exact(&mut body[start..])?;
        body.truncate(start + n);
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ---- chromedriver ----

/// A chromedriver process in its own process group, so that dropping it
/// ends the browsers it started too.
pub struct Chromedriver {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    addr: String,
    pub log: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until `/status` says
    /// it is ready.
    pub fn start(tools: &Tools, dir: &Path) -> Chromedriver {
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with `apt-get install {PACKAGES}`",
                    tools.chromedriver.display()
                )
            });
        let addr = format!("127.0.0.1:{port}");
        let mut driver = Chromedriver {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
        };
        driver.wait_ready();
        driver
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, body)) = http(&self.addr, "GET", "/status") {
                if body.contains("\"ready\":true") {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromedriver exited with {status} before it was ready; its log: {}",
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer /status within {WAIT:?}; its log: {}",
                self.log.display()
            );
            // chromedriver is another process starting up: poll its /status.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends a WebDriver session (which closes its browser), synchronously:
    /// usable from `Drop`, where nothing can be awaited.
    fn end_session(&self, id: &str) {
        let _ = http(&self.addr, "DELETE", &format!("/session/{id}"));
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it left running.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

// ---- The appliance: `forecourt demo` ----

/// The real `forecourt demo` process on a fresh data directory, with the
/// address and login its banner printed.
pub struct Demo {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub user: String,
    pub password: String,
    pub started: Instant,
    _dir: tempfile::TempDir,
}

/// What the banner's lines tell: the URL, then the login.
#[derive(Debug)]
enum Banner {
    Url(String),
    Login(String, String),
}

/// `  Open      http://127.0.0.1:8080/` -> the URL.
fn banner_url(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("Open")?.trim();
    rest.starts_with("http://")
        .then(|| rest.trim_end_matches('/').to_string())
}

/// `  Log in    as NAME with password PASS (an admin)` -> (NAME, PASS).
fn banner_login(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("Log in")?.trim();
    let rest = rest.strip_prefix("as ")?;
    let (user, rest) = rest.split_once(" with password ")?;
    let password = rest.split_whitespace().next()?;
    Some((user.to_string(), password.to_string()))
}

impl Demo {
    /// Starts `forecourt demo` with `vehicles` simulated vehicles and waits
    /// for its banner.
    pub fn start(vehicles: usize) -> Demo {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
            .args(["demo", "--listen", "127.0.0.1:0", "--vehicles"])
            .arg(vehicles.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("demo"))
            .env("FORECOURT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forecourt demo");
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("demo stdout");
        std::thread::spawn(move || {
            // Read to the end: the demo prints again when it stops.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = banner_url(&line) {
                    let _ = tx.send(Banner::Url(url));
                } else if let Some((u, p)) = banner_login(&line) {
                    let _ = tx.send(Banner::Login(u, p));
                }
            }
        });
        let stderr = child.stderr.take().expect("demo stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("FORECOURT_TEST_LOG").is_some() {
                    eprintln!("[demo] {line}");
                }
            }
        });
        let (mut url, mut login) = (None, None);
        let deadline = Instant::now() + WAIT;
        while url.is_none() || login.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Banner::Url(u)) => url = Some(u),
                Ok(Banner::Login(u, p)) => login = Some((u, p)),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "`forecourt demo` printed no URL and login within {WAIT:?} \
                         (FORECOURT_TEST_LOG=1 shows its log)"
                    );
                }
            }
        }
        let base = url.expect("url");
        let (user, password) = login.expect("login");
        let addr = base.trim_start_matches("http://").to_string();
        Demo {
            child,
            base,
            addr,
            user,
            password,
            started,
            _dir: dir,
        }
    }

    /// `/healthz` as JSON.
    pub fn healthz(&self) -> Value {
        let (status, body) = http(&self.addr, "GET", "/healthz").expect("GET /healthz");
        assert_eq!(status, 200, "GET /healthz: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz is not JSON ({e}): {body}"))
    }

    /// Waits until the simulated lot has replayed its week of history and
    /// lives in real time, so that leads change rarely from then on: the
    /// replay's length has passed, and the appliance applied fewer than
    /// 100 messages in the last second (it takes in about a thousand a
    /// second while replaying).
    pub fn wait_replayed(&self, deadline: Duration) {
        let replay = Duration::from_secs_f64(
            forecourt::demo::BACKFILL_MS as f64 / forecourt::demo::SPEED / 1000.0,
        );
        let give_up = self.started + deadline;
        // The demo process replays on its own accelerated clock, which this
        // test cannot drive: wait out the replay's length, then for calm.
        while self.started.elapsed() < replay {
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut last = self.healthz()["messages"].as_u64().unwrap_or(0);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.healthz()["messages"].as_u64().unwrap_or(0);
            if now.saturating_sub(last) < 100 {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "the demo was still replaying history {deadline:?} after it started \
                 ({} messages applied in the last second)",
                now - last
            );
            last = now;
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Another site ----

/// A web server on another origin that answers every request with one
/// HTML page: the attacker's page of a cross-site request forgery.
pub struct OtherSite {
    /// `http://IP:PORT/`
    pub url: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherSite {
    /// Serves `html` on `ip` (e.g. `127.0.0.2`, another site than the
    /// appliance's `127.0.0.1`, or `127.0.0.1` for the same site on
    /// another port: another origin either way).
    pub fn serve(ip: &str, html: String) -> OtherSite {
        let listener = TcpListener::bind((ip, 0)).expect("bind the other site");
        let addr = listener.local_addr().expect("other site's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(s) = stream {
                    answer(s, &html);
                }
            }
        });
        OtherSite {
            url: format!("http://{addr}/"),
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads a request's head and answers with the page.
fn answer(mut s: TcpStream, html: &str) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{html}",
        html.len()
    );
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The attacker's page: a form that posts `fields` to `action` as soon as
/// it loads, as a forged request would while staff are logged in.
pub fn forged_form(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"))
        .collect();
    format!(
        "<!DOCTYPE html><html><head><title>Win a prize</title></head><body>\
         <form id=\"forged\" method=\"post\" action=\"{action}\">{inputs}</form>\
         <script>document.getElementById('forged').submit();</script></body></html>"
    )
}

// ---- The browser ----

/// Chromium under chromedriver, on a fresh profile, pointed at `base`.
pub struct Browser {
    pub client: Client,
    pub base: String,
    session: Option<String>,
    driver: Chromedriver,
    _profile: tempfile::TempDir,
}

/// The flags that run Chromium headless as root in a container.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

impl Browser {
    /// Starts chromedriver and a Chromium session for the appliance at
    /// `base` (`http://IP:PORT`).
    pub async fn open(tools: &Tools, base: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = Chromedriver::start(tools, profile.path());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": chromium_args(&profile.path().join("profile")),
            },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium ({e}); its log: {}",
                    driver.log.display()
                )
            });
        let session = client.session_id().await.ok().flatten();
        let browser = Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            session,
            driver,
            _profile: profile,
        };
        browser.size_viewport().await;
        browser
    }

    /// Makes the page area (what a screenshot shows) [`WINDOW`] in size:
    /// `--window-size` sizes the whole window, whose frame headless
    /// Chromium still counts.
    async fn size_viewport(&self) {
        let frame = self
            .js("return [window.outerWidth - window.innerWidth, \
                 window.outerHeight - window.innerHeight];")
            .await;
        let px = |i: usize| frame[i].as_u64().and_then(|v| u32::try_from(v).ok());
        let (dw, dh) = (px(0).unwrap_or(0), px(1).unwrap_or(0));
        if (dw, dh) != (0, 0) {
            self.client
                .set_window_size(WINDOW.0 + dw, WINDOW.1 + dh)
                .await
                .unwrap_or_else(|e| panic!("size the browser's window: {e}"));
        }
    }

    /// Ends the session cleanly (the browser quits).
    pub async fn close(mut self) {
        self.session = None;
        let client = self.client.clone();
        if let Err(e) = client.close().await {
            eprintln!("closing the browser: {e}");
        }
    }

    /// Opens a page of the appliance by path (`/leads?type=...`).
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Opens any URL (the other site's page).
    pub async fn goto_url(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path and query of the page shown now.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The HTTP status the page shown now was served with (the Navigation
    /// Timing API's `responseStatus`, which Chromium reports).
    pub async fn status(&self) -> u16 {
        let v = self
            .js("return performance.getEntriesByType('navigation')[0].responseStatus;")
            .await;
        match v.as_u64().and_then(|s| u16::try_from(s).ok()) {
            Some(status) => status,
            None => panic!("no response status for {}: {v}", self.path().await),
        }
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// The element `css` finds, waiting for it up to [`WAIT`].
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "no {css:?} on {} within {WAIT:?} ({e}); the page says: {}",
                self.path().await,
                self.body_text().await
            ),
        }
    }

    /// Every element `css` finds now (perhaps none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    /// Whether `css` finds anything now.
    pub async fn has(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The visible text of the element `css` finds, trimmed.
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        e.text()
            .await
            .unwrap_or_else(|err| panic!("text of {css:?}: {err}"))
            .trim()
            .to_string()
    }

    /// The whole page's visible text, for messages and checks.
    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Types `value` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear()
            .await
            .unwrap_or_else(|err| panic!("clear {css:?}: {err}"));
        e.send_keys(value)
            .await
            .unwrap_or_else(|err| panic!("type into {css:?}: {err}"));
    }

    /// Chooses the option of value `value` in the select `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|err| panic!("choose {value:?} in {css:?}: {err}"));
    }

    /// Clicks `css` and waits until the browser shows the page that
    /// followed (a form's answer, a link's target).
    pub async fn click_and_wait(&self, css: &str) {
        let e = self.find(css).await;
        self.mark_page().await;
        e.click()
            .await
            .unwrap_or_else(|err| panic!("click {css:?}: {err}"));
        self.wait_new_page().await;
    }

    /// Submits the form `form_css` with its submit button.
    pub async fn submit(&self, form_css: &str) {
        self.click_and_wait(&format!(
            "{form_css} button[type=submit], {form_css} input[type=submit]"
        ))
        .await;
    }

    /// Leaves a mark on the page shown now, which the next page lacks.
    async fn mark_page(&self) {
        self.js("window.__forecourtOld = true; return null;").await;
    }

    /// Waits until a page without the mark has loaded.
    pub async fn wait_new_page(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            // While navigating a script may fail: that is "not yet".
            let done = self
                .client
                .execute(
                    "return window.__forecourtOld !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page within {WAIT:?} (still at {})",
                self.path().await
            );
            // Navigation in the browser takes real time: poll for the page.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in through the login form as a person would.
    pub async fn login(&self, user: &str, password: &str) {
        self.goto("/login").await;
        self.fill("form[action='/login'] input[name=name]", user)
            .await;
        self.fill("form[action='/login'] input[name=password]", password)
            .await;
        self.submit("form[action='/login']").await;
        assert_ne!(
            self.path().await,
            "/login",
            "still on the login page after logging in as {user}: {}",
            self.body_text().await
        );
    }

    /// Logs out with the header's button.
    pub async fn logout(&self) {
        self.submit("form[action='/logout']").await;
        assert_eq!(self.path().await, "/login", "logging out");
    }

    /// Saves a screenshot of the window as `target/ui-screenshots/NAME.png`
    /// and, with `FORECOURT_UPDATE_SCREENSHOTS=1`, as `docs/ui/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let path = screenshot_dir().join(format!("{name}.png"));
        write_file(&path, &png);
        if std::env::var("FORECOURT_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui");
            write_file(&docs.join(format!("{name}.png")), &png);
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never reached `close`: quit the browser
        // through chromedriver, then the driver's drop kills what is left.
        if let Some(id) = self.session.take() {
            self.driver.end_session(&id);
        }
    }
}

/// `target/ui-screenshots` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_banner_is_read() {
        assert_eq!(
            banner_url("  Open      http://127.0.0.1:43449/").as_deref(),
            Some("http://127.0.0.1:43449")
        );
        assert_eq!(
            banner_login("  Log in    as demo with password 1db140ab (an admin)"),
            Some(("demo".to_string(), "1db140ab".to_string()))
        );
        assert_eq!(banner_url("  Health    http://127.0.0.1:1/healthz"), None);
        assert_eq!(banner_login("  Lot       40 simulated vehicles"), None);
    }
}
