//! End-to-end ingest benchmark (issue 2, figures (b), (c), (d)).
//!
//! The real `forecourt run` (this build's binary) reads a real pty; the
//! simulator's flood mode plays 1,000 units, each stopping and waiting for
//! its ACK, as fast as the appliance answers. Measured, per engine:
//! - (b) messages/s end to end, against the same records written straight
//!   into the store in the same batch sizes, in the same run: the ratio;
//! - (c) bytes the appliance wrote to disk per 1,000 messages
//!   (`/proc/PID/io` write_bytes: what reached the block layer);
//! - (d) the appliance's resident memory (VmHWM) with 1,000 units known.
//!
//! Run: `cargo bench --bench ingest` (redb), or
//! `cargo bench --features sled --bench ingest` for redb and sled side by side.
//! Options after `--`: `--units N --per-unit M`. Prints figures; asserts nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forecourt::clock::{Clock, SystemClock};
use forecourt::domain::vehicle::{self, Timing, Vehicle};
use forecourt::link::message::{Body, Engine, Heartbeat, Message};
use forecourt::store::{counters, DedupeWindow, EngineKind, Store};
use tokio_serial::SerialPort;

struct Figures {
    engine: &'static str,
    messages: u64,
    e2e_rate: f64,
    raw_rate: f64,
    batch: f64,
    bytes_per_1000: f64,
    rss_kib: u64,
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir(engine: &str) -> PathBuf {
    // Under target/ on purpose: /tmp may be a tmpfs, where fsync is free.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-ingest")
        .join(engine);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn http_get(addr: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn start(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(["run", "--config"])
        .arg(config)
        .env("FORECOURT_LOG", "warn,forecourt::app=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forecourt");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http=") {
                let _ = tx.send(
                    line[i + 5..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("forecourt did not start");
    (child, http)
}

fn end_to_end(
    rt: &tokio::runtime::Runtime,
    engine: &'static str,
    units: usize,
    per_unit: usize,
) -> (u64, f64, f64, f64, u64) {
    let dir = bench_dir(engine);
    let (master, slave) = {
        let _enter = rt.enter();
        tokio_serial::SerialStream::pair().expect("pty")
    };
    let slave_path = slave.name().expect("pty slave path");
    let config = dir.join("forecourt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[serial]]\npath = {slave_path:?}\n[store]\nengine = \"{engine}\"\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let (mut child, http) = start(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&http, "/healthz")["links"][0]["up"] != true {
        assert!(Instant::now() < deadline, "link never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    let written_before = proc_field(pid, "io", "write_bytes:");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let report = rt
        .block_on(forecourt::sim::flood_serial(
            master, units, per_unit, clock, 7,
        ))
        .expect("flood");
    let written = proc_field(pid, "io", "write_bytes:") - written_before;
    let rss = proc_field(pid, "status", "VmHWM:");
    let h = http_get(&http, "/healthz");
    let messages = h["messages"].as_u64().unwrap_or(0);
    let batch = h["ingest"]["events"].as_f64().unwrap_or(0.0)
        / h["ingest"]["batches"].as_f64().unwrap_or(1.0).max(1.0);
    assert_eq!(
        messages, report.messages,
        "every flooded message applied once"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    drop(slave);
    (
        messages,
        report.messages_per_s,
        batch,
        written as f64 * 1000.0 / messages.max(1) as f64,
        rss,
    )
}

/// The same records ingest writes per message (unit, dedupe window, battery
/// aggregate, counter), straight into the store in batches of `batch`.
fn raw_store(kind: EngineKind, engine: &str, units: usize, messages: u64, batch: usize) -> f64 {
    let dir = bench_dir(&format!("{engine}-raw"));
    let store = Store::open(&dir, kind).expect("open store");
    let t0 = SystemClock.now_ms() - 3_600_000;
    let mut vehicles: Vec<(Vehicle, DedupeWindow)> = (0..units as u64)
        .map(|d| (Vehicle::new(d, t0, t0), DedupeWindow::default()))
        .collect();
    let started = Instant::now();
    let mut done = 0u64;
    while done < messages {
        let n = (batch as u64).min(messages - done);
        store
            .write(|tx| {
                for i in done..done + n {
                    let (v, w) = &mut vehicles[(i % units as u64) as usize];
                    let seq = (i / units as u64) as u16;
                    let msg = Message {
                        seq,
                        device_id: v.device_id,
                        time_ms: t0 + i,
                        body: Body::Heartbeat(Heartbeat {
                            engine: Engine::Parked,
                            run_s: 0,
                            odometer_km: 1,
                            battery_mv: 12_500,
                            lamps: 0,
                        }),
                    };
                    let applied = vehicle::apply(v, &msg, Timing::judge(msg.time_ms, t0 + i));
                    w.remember(seq, msg.time_ms, i as u32);
                    tx.put_vehicle(v)?;
                    tx.put_dedupe(v.device_id, w)?;
                    if let Some(b) = applied.battery {
                        tx.add_battery_sample(v.device_id, b.hour, b.engine, b.mv)?;
                    }
                }
                tx.add_counter(counters::MESSAGES, n as i64)?;
                Ok(())
            })
            .expect("raw write");
        done += n;
    }
    messages as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: a small
    // smoke run then, so CI proves the benchmark works without timing it.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let units = arg("--units", if smoke { 20 } else { 1000 });
    let per_unit = arg("--per-unit", if smoke { 5 } else { 60 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut engines = vec![("redb", EngineKind::Redb)];
    if cfg!(feature = "sled") {
        engines.push(("sled", EngineKind::Sled));
    }
    let mut rows = Vec::new();
    for (name, kind) in engines {
        eprintln!("{name}: flooding {units} units x {per_unit} messages through forecourt run over a pty...");
        let (messages, e2e_rate, batch, bytes_per_1000, rss_kib) =
            end_to_end(&rt, name, units, per_unit);
        eprintln!("{name}: the same records straight into the store, batches of {batch:.0}...");
        let raw_rate = raw_store(kind, name, units, messages, batch.round().max(1.0) as usize);
        rows.push(Figures {
            engine: name,
            messages,
            e2e_rate,
            raw_rate,
            batch,
            bytes_per_1000,
            rss_kib,
        });
    }
    println!();
    println!("ingest end to end: {units} units, stop-and-wait, over a pty into `forecourt run` (this machine, {} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!(
        "{:<6} {:>9} {:>12} {:>12} {:>7} {:>10} {:>16} {:>10}",
        "engine",
        "messages",
        "e2e msg/s",
        "raw msg/s",
        "ratio",
        "avg batch",
        "bytes/1000 msgs",
        "RSS (MiB)"
    );
    for r in &rows {
        println!(
            "{:<6} {:>9} {:>12.0} {:>12.0} {:>7.2} {:>10.1} {:>16.0} {:>10.1}",
            r.engine,
            r.messages,
            r.e2e_rate,
            r.raw_rate,
            r.e2e_rate / r.raw_rate,
            r.batch,
            r.bytes_per_1000,
            r.rss_kib as f64 / 1024.0
        );
    }
}
