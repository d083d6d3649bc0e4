//! Test harness shared by the end-to-end tests: an independent CC-Link
//! dongle written from PROTOCOL.md alone (its own CRC-32C, COBS and payload
//! encoding, not the crate's), a real pty, and the real `forecourt run`
//! process.

#![allow(dead_code)]

pub mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

// ---- PROTOCOL.md section 1, written out independently ----

pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn cobs(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in data.split(|&b| b == 0) {
        // Blocks longer than 254 bytes are cut into 254-byte runs (code 0xFF).
        let mut rest = block;
        while rest.len() >= 254 {
            out.push(0xFF);
            out.extend_from_slice(&rest[..254]);
            rest = &rest[254..];
        }
        out.push(rest.len() as u8 + 1);
        out.extend_from_slice(rest);
    }
    out
}

pub fn uncobs(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < frame.len() {
        let code = frame[i] as usize;
        if code == 0 || i + code > frame.len() {
            return None;
        }
        out.extend_from_slice(&frame[i + 1..i + code]);
        i += code;
        if code < 0xFF && i < frame.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// payload || crc, COBS, 0x00.
pub fn wire(payload: &[u8]) -> Vec<u8> {
    let mut body = payload.to_vec();
    body.extend_from_slice(&crc32c(payload).to_le_bytes());
    let mut w = cobs(&body);
    w.push(0);
    w
}

// ---- PROTOCOL.md sections 2 and 3 ----

pub fn payload(kind: u8, seq: u16, device: u64, time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut p = vec![1, kind];
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&device.to_le_bytes());
    p.extend_from_slice(&time_ms.to_le_bytes());
    p.extend_from_slice(body);
    p
}

pub fn hello(vin: &str, power_loss: bool) -> (u8, Vec<u8>) {
    let mut b = vin.as_bytes().to_vec();
    b.resize(17, 0);
    b.extend_from_slice(&[1, 4, 2, power_loss as u8]);
    (0x01, b)
}

pub fn heartbeat(running: bool, run_s: u32, odo: u32, mv: u16, lamps: u32) -> (u8, Vec<u8>) {
    let mut b = vec![running as u8];
    b.extend_from_slice(&run_s.to_le_bytes());
    b.extend_from_slice(&odo.to_le_bytes());
    b.extend_from_slice(&mv.to_le_bytes());
    b.extend_from_slice(&lamps.to_le_bytes());
    (0x04, b)
}

pub fn ignition_on(odo: u32) -> (u8, Vec<u8>) {
    (0x02, odo.to_le_bytes().to_vec())
}

pub fn lamp(id: u8, lit: bool) -> (u8, Vec<u8>) {
    (0x05, vec![id, lit as u8])
}

pub fn dtc_report(ecu: u16, codes: &[([u8; 3], u8)]) -> (u8, Vec<u8>) {
    let mut b = ecu.to_le_bytes().to_vec();
    b.push(codes.len() as u8);
    for (c, s) in codes {
        b.extend_from_slice(c);
        b.push(*s);
    }
    (0x06, b)
}

/// A message from the appliance, as read off the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub kind: u8,
    pub seq: u16,
    pub device: u64,
    pub time_ms: u64,
    pub body: Vec<u8>,
}

impl Down {
    pub fn acked_seq(&self) -> Option<u16> {
        (self.kind == 0x80 && self.body.len() == 2)
            .then(|| u16::from_le_bytes([self.body[0], self.body[1]]))
    }
}

fn parse_down(body: &[u8]) -> Option<Down> {
    if body.len() < 24 {
        return None;
    }
    let (p, crc) = body.split_at(body.len() - 4);
    if crc32c(p).to_le_bytes() != crc || p[0] != 1 {
        return None;
    }
    Some(Down {
        kind: p[1],
        seq: u16::from_le_bytes([p[2], p[3]]),
        device: u64::from_le_bytes(p[4..12].try_into().ok()?),
        time_ms: u64::from_le_bytes(p[12..20].try_into().ok()?),
        body: p[20..].to_vec(),
    })
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---- A pty line ----

/// The dongle side of a real pty; the appliance opens the slave by path.
pub struct Line {
    pub slave_path: PathBuf,
    master: std::fs::File,
    rx: mpsc::Receiver<Down>,
    /// Keeps the slave open so the pty survives appliance restarts.
    _slave: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Line {
    pub fn open() -> Line {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        // Not inherited by the appliance process: it must open the slave by
        // path like any port, and closing our end must really close the pty.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("cloexec");
        }
        // Raw mode on the slave, as a serial port would be.
        let mut t = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
            .expect("tcsetattr");
        let slave_path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
        ))
        .expect("slave path");
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("clone master");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let mut buf = [0u8; 4096];
            let mut frame = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                // Poll with a timeout so that dropping the line really closes
                // the pty (an "unplugged" adapter) instead of blocking here.
                let mut fds = [nix::poll::PollFd::new(
                    reader.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)) {
                    Ok(0) => continue,
                    Ok(_) => {}
                    Err(_) => continue,
                }
                let n = match reader.read(&mut buf) {
                    Ok(0) => continue,
                    Ok(n) => n,
                    // EIO while no process holds the slave open (between restarts).
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                for &b in &buf[..n] {
                    if b == 0 {
                        if let Some(d) = uncobs(&frame).as_deref().and_then(parse_down) {
                            if tx.send(d).is_err() {
                                return;
                            }
                        }
                        frame.clear();
                    } else {
                        frame.push(b);
                    }
                }
            }
        });
        Line {
            slave_path,
            master,
            rx,
            _slave: pty.slave,
            stop,
            thread: Some(thread),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to pty");
    }

    /// Next message from the appliance, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Down> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits for the ACK of (device, seq), skipping other traffic, which is
    /// returned too.
    pub fn wait_ack(&self, device: u64, seq: u16, timeout: Duration) -> Result<Vec<Down>, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(d) if d.device == device && d.acked_seq() == Some(seq) => {
                    seen.push(d);
                    return Ok(seen);
                }
                Some(d) => seen.push(d),
                None => break,
            }
        }
        Err(format!(
            "no ACK for device {device} seq {seq} within {timeout:?}; saw {seen:?}"
        ))
    }

    /// Collects everything that arrives within `quiet` of the last message.
    pub fn drain(&self, quiet: Duration) -> Vec<Down> {
        let mut out = Vec::new();
        while let Some(d) = self.recv(quiet) {
            out.push(d);
        }
        out
    }
}

// ---- The appliance under test ----

pub struct Appliance {
    pub child: Child,
    pub http: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
}

pub fn write_config(dir: &Path, serial: &Path) -> PathBuf {
    let data_dir = dir.join("data");
    let config = dir.join("forecourt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {:?}\nbaud = 115200\n",
            data_dir.display().to_string(),
            serial.display().to_string()
        ),
    )
    .unwrap();
    config
}

impl Appliance {
    /// Starts `forecourt run --config` and waits until it serves HTTP and
    /// its serial link is up.
    pub fn start(config: &Path) -> Appliance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
            .args(["run", "--config"])
            .arg(config)
            .env("FORECOURT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forecourt");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("http=") {
                    let addr: String = line[i + 5..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("FORECOURT_TEST_LOG").is_some() {
                    eprintln!("[appliance] {line}");
                }
            }
        });
        let http = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(h) => h,
            Err(_) => {
                // Never leave a stray appliance behind a failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the appliance did not start within 30 s (FORECOURT_TEST_LOG=1 shows its log)"
                );
            }
        };
        let settings = std::fs::read_to_string(config).unwrap();
        let data_dir = settings
            .lines()
            .find_map(|l| l.strip_prefix("data_dir = "))
            .map(|s| PathBuf::from(s.trim_matches('"')))
            .unwrap();
        let app = Appliance {
            child,
            http,
            data_dir,
            config: config.to_owned(),
        };
        app.wait_until(|h| h["links"][0]["up"] == true, "serial link up");
        app
    }

    pub fn healthz(&self) -> serde_json::Value {
        let body = http_get(&self.http, "/healthz");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz is not JSON ({e}): {body}"))
    }

    pub fn wait_until(
        &self,
        f: impl Fn(&serde_json::Value) -> bool,
        what: &str,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let h = self.healthz();
            if f(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {h}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: the orderly stop.
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "forecourt exited with {status}");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over loopback.
pub fn http_get(addr: &str, path: &str) -> String {
    http_get_with(addr, path, &[])
}

/// A GET with extra headers, e.g. `("Authorization", "Bearer ...")`.
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if head.contains("chunked") {
        dechunk(body)
    } else {
        body.to_string()
    }
}

/// Creates the first admin with the one-time setup code the appliance
/// wrote to its data directory, and returns the session's `Cookie` header
/// value.
pub fn login_first_admin(app: &Appliance) -> String {
    let code = std::fs::read_to_string(app.data_dir.join("setup-code"))
        .expect("setup code written at first start");
    let form = format!(
        "code={}&name=admin&display_name=Admin&password=correct-horse-battery&password_again=correct-horse-battery",
        code.trim()
    );
    let mut s = std::net::TcpStream::connect(&app.http).expect("connect");
    write!(
        s,
        "POST /setup HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        app.http,
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let cookie = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie from /setup: {out}"));
    cookie.to_string()
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Tests that open a serial port by path cannot run under qemu-user
/// (termios2 ioctls answer ENOSYS there; see docs/ci.md).
pub fn skip_under_qemu_user() -> bool {
    if std::env::var_os("FORECOURT_QEMU_USER").is_some() {
        eprintln!(
            "skipped under qemu-user: opening a serial port by path needs termios2 (docs/ci.md)"
        );
        return true;
    }
    false
}

// ---- A null-modem cable between two ptys ----

/// Two ptys whose master sides are bridged, like two serial ports joined
/// by a null-modem cable (what `socat pty pty` does): one process opens
/// `a`, another `b`.
pub struct NullModem {
    pub a: PathBuf,
    pub b: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _slaves: [OwnedFd; 2],
}

impl NullModem {
    pub fn open() -> NullModem {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let pty = nix::pty::openpty(None, None).expect("openpty");
            for fd in [&pty.master, &pty.slave] {
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .expect("cloexec");
            }
            let mut t = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .expect("tcsetattr");
            let path = std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
            ))
            .unwrap();
            ends.push((path, std::fs::File::from(pty.master), pty.slave));
        }
        let (b_path, mut mb, sb) = ends.pop().unwrap();
        let (a_path, mut ma, sa) = ends.pop().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let mut buf = [0u8; 16 * 1024];
            while !stopped.load(Ordering::Relaxed) {
                let (ra, rb) = {
                    let mut fds = [
                        nix::poll::PollFd::new(ma.as_fd(), nix::poll::PollFlags::POLLIN),
                        nix::poll::PollFd::new(mb.as_fd(), nix::poll::PollFlags::POLLIN),
                    ];
                    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)).unwrap_or(0)
                        == 0
                    {
                        continue;
                    }
                    let ready = |f: &nix::poll::PollFd| {
                        f.revents()
                            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN))
                    };
                    (ready(&fds[0]), ready(&fds[1]))
                };
                if ra {
                    if let Ok(n) = ma.read(&mut buf) {
                        let _ = mb.write_all(&buf[..n]);
                    }
                }
                if rb {
                    if let Ok(n) = mb.read(&mut buf) {
                        let _ = ma.write_all(&buf[..n]);
                    }
                }
                if !ra && !rb {
                    // Hangup only (no process holds a slave): wait for one.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        NullModem {
            a: a_path,
            b: b_path,
            stop,
            thread: Some(thread),
            _slaves: [sa, sb],
        }
    }
}

impl Drop for NullModem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
