//! A plain HTTP/1.1 client over loopback that behaves as a browser does
//! for the appliance's pages: a session cookie, and on a form post the
//! `Origin` and `Sec-Fetch-Site` headers of a page of the same site.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one request may take.
const T: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The CSRF token the page gives its forms.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The session cookie (`name=value`) a login set.
    pub fn session(&self) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next())
            .find(|c| c.starts_with("forecourt_session=") && c.len() > "forecourt_session=".len())
            .map(str::to_owned)
    }
}

pub fn request(addr: &str, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    let mut out = format!("{head}Host: {addr}\r\nConnection: close\r\n").into_bytes();
    if !body.is_empty() || head.starts_with("POST") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    s.write_all(&out).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status: status.parse().unwrap(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol]).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + n]);
        body = &body[eol + 2 + n + 2..];
    }
    out
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Browser {
    pub addr: String,
    pub cookie: String,
}

impl Browser {
    pub fn get(&self, path: &str) -> Reply {
        request(
            &self.addr,
            &format!("GET {path} HTTP/1.1\r\nCookie: {}\r\n", self.cookie),
            b"",
        )
    }

    /// Headers a browser adds to a form posted from one of the appliance's pages.
    pub fn page_headers(&self) -> String {
        format!(
            "Cookie: {}\r\nOrigin: http://{}\r\nSec-Fetch-Site: same-origin\r\n",
            self.cookie, self.addr
        )
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        request(
            &self.addr,
            &format!(
                "POST {path} HTTP/1.1\r\n{}Content-Type: application/x-www-form-urlencoded\r\n",
                self.page_headers()
            ),
            body.as_bytes(),
        )
    }
}

impl Browser {
    /// The first admin's session on `app`, made with its one-time setup code.
    pub fn first_admin(app: &super::Appliance) -> Browser {
        Browser {
            addr: app.http.clone(),
            cookie: super::login_first_admin(app),
        }
    }

    /// Adds a member of staff with `role` through the users page (this
    /// browser is an admin's), and returns their logged-in session.
    pub fn add_staff(&self, name: &str, role: &str) -> Browser {
        let csrf = self.get("/users").csrf();
        let password = "a-long-enough-password";
        let r = self.post(
            "/users",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("display_name", name),
                ("role", role),
                ("password", password),
                ("password_again", password),
            ],
        );
        assert_eq!(r.status, 303, "add {name}: {r:?}");
        let anonymous = Browser {
            addr: self.addr.clone(),
            cookie: String::new(),
        };
        let r = anonymous.post("/login", &[("name", name), ("password", password)]);
        Browser {
            addr: self.addr.clone(),
            cookie: r.session().unwrap_or_else(|| panic!("login {name}: {r:?}")),
        }
    }
}

/// What the page tests start from: the real `forecourt run` on a fresh
/// data directory, a dongle on its pty, and the first admin logged in.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub line: super::Line,
    pub app: super::Appliance,
    pub admin: Browser,
    /// The dongle's last sequence number.
    pub seq: u16,
}

impl Rig {
    pub fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let line = super::Line::open();
        let config = super::write_config(dir.path(), &line.slave_path);
        let app = super::Appliance::start(&config);
        let admin = Browser::first_admin(&app);
        Rig {
            dir,
            line,
            app,
            admin,
            seq: 0,
        }
    }

    /// One message from `device`, waited for until committed (its ACK).
    pub fn send(&mut self, device: u64, (kind, body): (u8, Vec<u8>)) {
        self.seq += 1;
        let p = super::payload(kind, self.seq, device, super::now_ms(), &body);
        self.line.write(&super::wire(&p));
        self.line.wait_ack(device, self.seq, T).unwrap();
    }

    /// Imports `csv` with `forecourt import customers` into the running
    /// appliance (through its control socket).
    pub fn import_customers(&self, csv: &str) {
        let path = self.dir.path().join("customers.csv");
        std::fs::write(&path, csv).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_forecourt"))
            .args(["import", "customers"])
            .arg(&path)
            .arg("--config")
            .arg(&self.app.config)
            .output()
            .expect("run forecourt import");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A member of staff with `role`, added by the admin, logged in.
    pub fn staff(&self, name: &str, role: &str) -> Browser {
        self.admin.add_staff(name, role)
    }
}
