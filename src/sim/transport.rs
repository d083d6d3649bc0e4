//! The simulator's IO loops, kept thin: read the clocks, let the [`Lot`]
//! advance, feed it what the appliance sent, and put what it has due on the
//! wire. On a serial line every unit shares one byte stream (COBS frames,
//! written in bounded batches); on CAN each unit has its node address and
//! the link layer carries sealed bodies.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::SerialPortBuilderExt;

use super::identity::draw_identities;
use super::lot::{Lot, Now, SimTime};
use super::scenario::year_of;
use super::stats::SimStats;
use super::{LotConfig, SimError};
use crate::clock::{rfc3339, SharedClock};
use crate::link::frame::{self, Deframed, Deframer};
use crate::shutdown::{self, Shutdown};

/// Bytes read from a serial line at a time.
const READ_CHUNK: usize = 4096;
/// Batches queued for the serial writer; with the batch bound this caps the
/// bytes waiting in the simulator at `(WRITE_QUEUE + 1) * batch`.
const WRITE_QUEUE: usize = 2;
/// CAN node addresses a unit may have: 0x00-0xFD, except the appliance's 0xF1.
pub const MAX_CAN_UNITS: usize = 253;

/// A lot and the clocks it runs on.
struct Driver {
    lot: Lot,
    time: SimTime,
    clock: SharedClock,
    epoch: Instant,
    stats: Arc<SimStats>,
}

impl Driver {
    fn new(lot: Lot, time: SimTime, clock: SharedClock, stats: Arc<SimStats>) -> Driver {
        Driver {
            lot,
            time,
            clock,
            epoch: Instant::now(),
            stats,
        }
    }

    /// Reads both clocks and brings the lot up to them; returns the times
    /// and how long the loop may sleep.
    fn tick(&mut self) -> (Now, Duration) {
        let clock_now = self.clock.now_ms();
        let sim = self.time.at(clock_now);
        let now = Now {
            sim,
            real: self.real_ms(),
            lag: clock_now.saturating_sub(sim),
        };
        self.lot.advance(now);
        self.stats.sim_time_ms.store(sim, Ordering::Relaxed);
        (now, self.lot.next_wake(now, &self.time, clock_now))
    }

    fn real_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Node addresses for `n` units on one CAN interface.
pub fn node_addresses(n: usize) -> Result<Vec<u8>, SimError> {
    if n > MAX_CAN_UNITS {
        return Err(SimError::TooManyCanUnits { units: n });
    }
    Ok((0u8..=0xFD).filter(|&a| a != 0xF1).take(n).collect())
}

fn build(
    lot: &LotConfig,
    clock: &SharedClock,
    stats: &Arc<SimStats>,
    addrs: &[u8],
) -> Result<Driver, SimError> {
    lot.validate()?;
    let time = SimTime::new(clock.now_ms(), lot.backfill_ms, lot.speed);
    tracing::info!(
        units = lot.units(),
        seed = lot.seed,
        speed = lot.speed,
        timeline_start = %rfc3339(time.start()),
        "simulated lot starting"
    );
    let built = Lot::new(
        lot.profiles(time.start()),
        addrs,
        time.start(),
        lot.retransmit_ms,
        lot.buffer_messages,
        stats.clone(),
    );
    Ok(Driver::new(built, time, clock.clone(), stats.clone()))
}

/// Runs a simulated lot on a serial line (any byte stream: a pty, a UART)
/// until `shutdown` fires or the line fails.
pub async fn run_serial<S>(
    io: S,
    lot: LotConfig,
    clock: SharedClock,
    stats: Arc<SimStats>,
    shutdown: Shutdown,
) -> Result<(), SimError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let driver = build(&lot, &clock, &stats, &[])?;
    drive_serial(io, driver, shutdown, false, lot.write_batch_bytes).await
}

/// Opens the serial port at `path` (8N1, no flow control) and runs the lot
/// on it, as [`run_serial`]. A pty slave path works too.
pub async fn run_serial_path(
    path: &Path,
    baud: u32,
    lot: LotConfig,
    clock: SharedClock,
    stats: Arc<SimStats>,
    shutdown: Shutdown,
) -> Result<(), SimError> {
    let port = tokio_serial::new(path.to_string_lossy(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| SimError::open_serial(path, e))?;
    run_serial(port, lot, clock, stats, shutdown).await
}

/// Runs the lot on a CAN interface, each unit at its own node address
/// (0x00-0xFD except 0xF1, so at most 253 units), through the link layer's
/// ISO-TP dongle bus.
pub async fn run_can(
    interface: &str,
    lot: LotConfig,
    clock: SharedClock,
    stats: Arc<SimStats>,
    shutdown: Shutdown,
) -> Result<(), SimError> {
    lot.validate()?;
    node_addresses(lot.units())?;
    let (tx, rx) = crate::link::can::dongle_bus(interface, shutdown.clone())
        .await
        .map_err(|source| SimError::OpenCan {
            interface: interface.to_string(),
            source,
        })?;
    run_bus(tx, rx, lot, clock, stats, shutdown).await
}

/// Runs the lot on any carrier of sealed bodies (`payload || crc`) keyed by
/// CAN node address: `tx` takes what unit `nn` sends, `rx` delivers what the
/// appliance sent to node `nn`. [`run_can`] uses it over ISO-TP; tests and
/// in-process demos can use plain channels.
pub async fn run_bus(
    tx: mpsc::Sender<(u8, Vec<u8>)>,
    rx: mpsc::Receiver<(u8, Vec<u8>)>,
    lot: LotConfig,
    clock: SharedClock,
    stats: Arc<SimStats>,
    shutdown: Shutdown,
) -> Result<(), SimError> {
    lot.validate()?;
    let addrs = node_addresses(lot.units())?;
    let driver = build(&lot, &clock, &stats, &addrs)?;
    drive_bus(tx, rx, driver, shutdown).await
}

/// What a flood achieved.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FloodReport {
    pub units: usize,
    pub per_unit: usize,
    /// New messages sent (and ACKed): units x per_unit, plus any answers
    /// to the appliance's requests.
    pub messages: u64,
    pub retransmissions: u64,
    pub acked: u64,
    pub duplicate_acks: u64,
    pub elapsed_ms: f64,
    pub messages_per_s: f64,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} units x {} messages: {} sent, {} ACKed, {} retransmissions in {:.0} ms ({:.0} messages/s)",
            self.units,
            self.per_unit,
            self.messages,
            self.acked,
            self.retransmissions,
            self.elapsed_ms,
            self.messages_per_s
        )
    }
}

/// Benchmark load: `units` units on one serial line, each sending
/// `per_unit` messages (its boot HELLO, then mostly HEARTBEATs with some
/// LAMP, DTC_REPORT and IGNITION changes) as fast as stop and wait allows.
/// Returns once every message is ACKed.
pub async fn flood_serial<S>(
    io: S,
    units: usize,
    per_unit: usize,
    clock: SharedClock,
    seed: u64,
) -> Result<FloodReport, SimError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if units == 0 || per_unit == 0 {
        return Err(SimError::Config(
            "flood: units and messages per unit must be at least 1".into(),
        ));
    }
    let stats = Arc::new(SimStats::new());
    let now = clock.now_ms();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let identities = draw_identities(&mut rng, units, year_of(now), |i| i % 12 == 11);
    let lot = Lot::flood(
        identities,
        per_unit,
        seed,
        now,
        super::RETRANSMIT_MS,
        stats.clone(),
    );
    let driver = Driver::new(lot, SimTime::new(now, 0, 1.0), clock, stats.clone());
    // Nobody else stops a flood: it ends when everything is ACKed.
    let (_keep, never) = shutdown::channel();
    let started = Instant::now();
    drive_serial(io, driver, never, true, super::WRITE_BATCH_BYTES).await?;
    let elapsed = started.elapsed();
    let s = stats.snapshot();
    Ok(FloodReport {
        units,
        per_unit,
        messages: s.sent,
        retransmissions: s.retransmissions,
        acked: s.acked,
        duplicate_acks: s.duplicate_acks,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        messages_per_s: s.sent as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

/// The serial loop. Reading and writing run side by side (a writer that
/// blocks on a full line must never stop the ACKs from being read), joined
/// by a small bounded queue of batches.
async fn drive_serial<S>(
    io: S,
    mut driver: Driver,
    mut shutdown: Shutdown,
    until_flood_done: bool,
    batch_bytes: usize,
) -> Result<(), SimError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (batch_tx, mut batch_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = async move {
        while let Some(batch) = batch_rx.recv().await {
            wr.write_all(&batch).await?;
            wr.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let lot_loop = async move {
        let mut deframer = Deframer::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let (_, wake) = driver.tick();
            if until_flood_done && driver.lot.flood_done() {
                return Ok(());
            }
            let want_write = driver.lot.has_ready();
            tokio::select! {
                biased;
                _ = shutdown.fired() => return Ok(()),
                read = rd.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(SimError::Closed);
                    }
                    let (now, _) = driver.tick();
                    let (lot, stats) = (&mut driver.lot, &driver.stats);
                    deframer.feed(&buf[..n], |item| match item {
                        Deframed::Payload(p) => lot.on_payload(p, None, now),
                        Deframed::Rejected(_) => SimStats::bump(&stats.rejected),
                    });
                }
                permit = batch_tx.reserve(), if want_write => {
                    let permit = permit.map_err(|_| SimError::Closed)?;
                    let real = driver.real_ms();
                    let mut batch = Vec::with_capacity(batch_bytes.min(64 * 1024));
                    while batch.len() < batch_bytes {
                        let Some((_, payload)) = driver.lot.next_outgoing(real) else { break };
                        frame::encode_serial(payload, &mut batch);
                    }
                    if !batch.is_empty() {
                        permit.send(batch);
                    }
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    };
    tokio::select! {
        written = writer => match written {
            Err(e) => Err(SimError::Io(e)),
            Ok(()) => Err(SimError::Closed),
        },
        done = lot_loop => done,
    }
}

/// The CAN loop: one sealed body per unit message, addressed by node.
async fn drive_bus(
    tx: mpsc::Sender<(u8, Vec<u8>)>,
    mut rx: mpsc::Receiver<(u8, Vec<u8>)>,
    mut driver: Driver,
    mut shutdown: Shutdown,
) -> Result<(), SimError> {
    loop {
        let (_, wake) = driver.tick();
        let want_write = driver.lot.has_ready();
        tokio::select! {
            biased;
            _ = shutdown.fired() => return Ok(()),
            got = rx.recv() => {
                let Some((addr, body)) = got else { return Err(SimError::Closed) };
                let (now, _) = driver.tick();
                match frame::open(&body) {
                    Ok(payload) => driver.lot.on_payload(payload, Some(addr), now),
                    Err(_) => SimStats::bump(&driver.stats.rejected),
                }
            }
            permit = tx.reserve(), if want_write => {
                let permit = permit.map_err(|_| SimError::Closed)?;
                let real = driver.real_ms();
                if let Some((addr, payload)) = driver.lot.next_outgoing(real) {
                    let mut body = Vec::with_capacity(payload.len() + 4);
                    frame::seal(payload, &mut body);
                    permit.send((addr, body));
                }
            }
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::link::message::{Body, Message, BROADCAST};
    use crate::sim::scenario::{Scenario, ScriptedUnit};

    const T0: u64 = 1_767_225_600_000;

    #[test]
    fn can_addresses_skip_the_appliance_and_stop_at_253() {
        let a = node_addresses(253).unwrap();
        assert_eq!(a.len(), 253);
        assert!(!a.contains(&0xF1));
        assert_eq!((a[0], a[252]), (0x00, 0xFD));
        let err = node_addresses(254).unwrap_err();
        assert!(matches!(err, SimError::TooManyCanUnits { units: 254 }));
        assert!(err.to_string().contains("at most 253"));
    }

    #[tokio::test]
    async fn a_lot_larger_than_one_can_interface_is_refused() {
        let (tx, _rx_out) = mpsc::channel(4);
        let (_tx_in, rx) = mpsc::channel(4);
        let (_t, s) = shutdown::channel();
        let lot = LotConfig {
            vehicles: 254,
            ..Default::default()
        };
        let clock: SharedClock = Arc::new(FakeClock::new(T0));
        let r = run_bus(tx, rx, lot, clock, Arc::new(SimStats::new()), s).await;
        assert!(matches!(r, Err(SimError::TooManyCanUnits { units: 254 })));
    }

    #[tokio::test]
    async fn on_can_each_unit_talks_from_its_node_and_hears_only_its_node() {
        // PROTOCOL.md 1: dongle nn sends on 0x18DAF1nn, hears 0x18DAnnF1.
        let units: Vec<ScriptedUnit> = (1..=3).map(|i| ScriptedUnit::new(1000 + i)).collect();
        let lot = LotConfig {
            scenario: Scenario::Scripted(units),
            ..Default::default()
        };
        let (to_appliance, mut from_units) = mpsc::channel(16);
        let (to_units, from_appliance) = mpsc::channel(16);
        let (trigger, s) = shutdown::channel();
        let clock: SharedClock = Arc::new(FakeClock::new(T0));
        let stats = Arc::new(SimStats::new());
        let task = tokio::spawn(run_bus(
            to_appliance,
            from_appliance,
            lot,
            clock,
            stats.clone(),
            s,
        ));
        let guard = Duration::from_secs(10);
        let mut node_of = std::collections::HashMap::new();
        // Boot: a HELLO and a HEARTBEAT from each unit, each ACKed to its node.
        for _ in 0..6 {
            let (addr, body) = tokio::time::timeout(guard, from_units.recv())
                .await
                .unwrap()
                .unwrap();
            let m = Message::decode(frame::open(&body).unwrap()).unwrap();
            assert_eq!(
                *node_of.entry(m.device_id).or_insert(addr),
                addr,
                "a unit keeps its node"
            );
            let ack = Message {
                seq: 9,
                device_id: m.device_id,
                time_ms: T0,
                body: Body::Ack { acked_seq: m.seq },
            };
            let mut sealed = Vec::new();
            frame::seal(&ack.encode(), &mut sealed);
            to_units.send((addr, sealed)).await.unwrap();
        }
        let mut nodes: Vec<u8> = node_of.values().copied().collect();
        nodes.sort();
        assert_eq!(nodes, [0, 1, 2]);
        // A request for the unit at node 0, delivered to node 2, is not heard.
        let at_node_0 = *node_of.iter().find(|(_, &n)| n == 0).unwrap().0;
        let misrouted = Message {
            seq: 10,
            device_id: at_node_0,
            time_ms: T0,
            body: Body::RequestDtc { ecu: 0xFFFF },
        };
        let mut sealed = Vec::new();
        frame::seal(&misrouted.encode(), &mut sealed);
        to_units.send((2, sealed)).await.unwrap();
        // A lot scan sent to one node reaches that node's unit only.
        let scan = Message {
            seq: 11,
            device_id: BROADCAST,
            time_ms: T0,
            body: Body::RequestStatus,
        };
        let mut sealed = Vec::new();
        frame::seal(&scan.encode(), &mut sealed);
        to_units.send((1, sealed)).await.unwrap();
        let (addr, body) = tokio::time::timeout(guard, from_units.recv())
            .await
            .unwrap()
            .unwrap();
        let m = Message::decode(frame::open(&body).unwrap()).unwrap();
        assert_eq!(addr, 1);
        assert_eq!(node_of[&m.device_id], 1);
        assert_eq!(m.body.name(), "HELLO");
        trigger.fire();
        tokio::time::timeout(guard, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let s = stats.snapshot();
        assert_eq!((s.status_requests, s.dtc_requests), (1, 0));
    }
}
