//! The lot simulator over a real pty pair, against a small ACKing peer
//! written here from the codec (frame + message) alone. Each test names the
//! part of PROTOCOL.md (or of the simulator's brief) it proves. Clocks are
//! fake where the test moves time; timeouts only guard against a hang.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forecourt::clock::{FakeClock, SharedClock, SystemClock};
use forecourt::link::frame::{encode_serial, Deframed, Deframer};
use forecourt::link::message::{Body, Hello, Message, PowerLossReason, BROADCAST};
use forecourt::shutdown::{self, ShutdownTrigger};
use forecourt::sim::{
    flood_serial, run_serial, run_serial_path, Episode, LotConfig, Scenario, ScriptedUnit,
    SimError, SimStats,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;
const GUARD: Duration = Duration::from_secs(20);

/// The appliance's side of the line, as a test sees it: decoded messages
/// in, ACK / TIME / requests out.
struct Peer<P = SerialStream> {
    port: P,
    deframer: Deframer,
    inbox: VecDeque<Message>,
    seq: u16,
    acks_sent: u64,
}

impl<P: AsyncRead + AsyncWrite + Unpin> Peer<P> {
    fn new(port: P) -> Peer<P> {
        Peer {
            port,
            deframer: Deframer::new(),
            inbox: VecDeque::new(),
            seq: 0,
            acks_sent: 0,
        }
    }

    /// The next message from the lot (a retransmission is a message too).
    async fn recv(&mut self) -> Message {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return m;
            }
            let n = tokio::time::timeout(GUARD, self.port.read(&mut buf))
                .await
                .expect("the lot went silent")
                .expect("read from pty");
            assert!(n > 0, "pty closed");
            let inbox = &mut self.inbox;
            self.deframer.feed(&buf[..n], |d| match d {
                Deframed::Payload(p) => {
                    inbox.push_back(Message::decode(p).expect("the lot sends valid payloads"))
                }
                Deframed::Rejected(e) => panic!("the lot sent a bad frame: {e}"),
            });
        }
    }

    async fn send(&mut self, device_id: u64, time_ms: u64, body: Body) {
        self.seq = self.seq.wrapping_add(1);
        let mut wire = Vec::new();
        encode_serial(
            &Message {
                seq: self.seq,
                device_id,
                time_ms,
                body,
            }
            .encode(),
            &mut wire,
        );
        self.port.write_all(&wire).await.expect("write to pty");
        self.port.flush().await.expect("flush to pty");
    }

    async fn ack(&mut self, m: &Message) {
        self.acks_sent += 1;
        self.send(m.device_id, T0, Body::Ack { acked_seq: m.seq })
            .await;
    }

    /// Receives and ACKs `n` messages, returning them.
    async fn ack_n(&mut self, n: usize) -> Vec<Message> {
        let mut got = Vec::new();
        for _ in 0..n {
            let m = self.recv().await;
            self.ack(&m).await;
            got.push(m);
        }
        got
    }
}

struct Running {
    peer: Peer,
    stats: Arc<SimStats>,
    stop: ShutdownTrigger,
    task: JoinHandle<Result<(), SimError>>,
}

impl Running {
    /// Waits until the lot has read every ACK sent so far, so that moving
    /// the clock next cannot overtake an ACK still on the line. (The lot
    /// runs on this test's runtime: yielding lets it read.)
    async fn settle(&self) {
        let sent = self.peer.acks_sent;
        let stats = self.stats.clone();
        let caught_up = async move {
            loop {
                let s = stats.snapshot();
                if s.acked + s.duplicate_acks >= sent {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(GUARD, caught_up)
            .await
            .expect("the lot never read the ACKs");
    }

    async fn stop(self) -> Arc<SimStats> {
        self.stop.fire();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("stops on shutdown")
            .unwrap()
            .unwrap();
        self.stats
    }
}

fn start(lot: LotConfig, clock: SharedClock) -> Running {
    let (sim_side, peer_side) = SerialStream::pair().expect("pty pair");
    let stats = Arc::new(SimStats::new());
    let (stop, shutdown) = shutdown::channel();
    let task = tokio::spawn(run_serial(sim_side, lot, clock, stats.clone(), shutdown));
    Running {
        peer: Peer::new(peer_side),
        stats,
        stop,
        task,
    }
}

fn scripted(units: Vec<ScriptedUnit>) -> LotConfig {
    LotConfig {
        scenario: Scenario::Scripted(units),
        ..Default::default()
    }
}

fn fake_clock(at: u64) -> (FakeClock, SharedClock) {
    let c = FakeClock::new(at);
    (c.clone(), Arc::new(c))
}

fn is_hello(m: &Message, after_power_loss: bool) -> bool {
    matches!(&m.body, Body::Hello(h) if h.after_power_loss == after_power_loss)
}

#[tokio::test]
async fn retransmits_identical_bytes_every_two_seconds_until_acked() {
    // PROTOCOL.md 4: same seq, same time_ms, same bytes, 2 s after the last send.
    let (_c, clock) = fake_clock(T0);
    let mut run = start(scripted(vec![ScriptedUnit::new(0x51)]), clock);
    let first = run.peer.recv().await;
    let first_at = Instant::now();
    assert!(
        is_hello(&first, false),
        "a boot starts with HELLO: {first:?}"
    );
    let mut last_at = first_at;
    for copy in 1..=2 {
        let again = run.peer.recv().await;
        let gap = last_at.elapsed();
        last_at = Instant::now();
        assert_eq!(
            again.encode(),
            first.encode(),
            "copy {copy} is byte for byte the original"
        );
        assert!(
            gap >= Duration::from_millis(1_900) && gap < Duration::from_millis(4_000),
            "copy {copy} after {gap:?}"
        );
    }
    run.peer.ack(&first).await;
    let next = run.peer.recv().await;
    assert_eq!(
        next.seq,
        first.seq.wrapping_add(1),
        "once ACKed, the unit moves on: {next:?}"
    );
    assert_eq!(next.body.name(), "HEARTBEAT");
    let stats = run.stop().await.snapshot();
    assert_eq!(
        (
            stats.sent,
            stats.retransmissions,
            stats.acked,
            stats.waiting
        ),
        (2, 2, 1, 0)
    );
}

#[tokio::test]
async fn seq_wraps_from_65535_to_0() {
    // PROTOCOL.md 2: +1 per new message, wraps 65535 to 0.
    let mut unit = ScriptedUnit::new(0x52)
        .at(0, Episode::Lamp { lamp: 1, lit: true })
        .at(
            0,
            Episode::Lamp {
                lamp: 1,
                lit: false,
            },
        );
    unit.initial_seq = 65_534;
    let (_c, clock) = fake_clock(T0);
    let mut run = start(scripted(vec![unit]), clock);
    let got = run.peer.ack_n(4).await;
    let seqs: Vec<u16> = got.iter().map(|m| m.seq).collect();
    let kinds: Vec<&str> = got.iter().map(|m| m.body.name()).collect();
    assert_eq!(seqs, [65_534, 65_535, 0, 1]);
    assert_eq!(kinds, ["HELLO", "HEARTBEAT", "LAMP", "LAMP"]);
    run.stop().await;
}

#[tokio::test]
async fn never_two_unacked_messages_per_unit() {
    // PROTOCOL.md 4: at most one unACKed message per unit, even with a day
    // of history to replay and an appliance that sits on its ACKs.
    let (c, clock) = fake_clock(T0);
    let lot = LotConfig {
        vehicles: 8,
        seed: 5,
        backfill_ms: 24 * 60 * MIN,
        speed: 1e6,
        ..Default::default()
    };
    let mut run = start(lot, clock);
    let mut outstanding: HashMap<u64, Message> = HashMap::new();
    let mut held: VecDeque<Message> = VecDeque::new();
    let (mut fresh, mut copies) = (0, 0);
    let exchange = async {
        while fresh < 400 {
            let m = run.peer.recv().await;
            if fresh == 0 {
                c.advance(1_000); // the lot is up: now a whole day falls due at once
            }
            match outstanding.get(&m.device_id) {
                Some(o) if o.encode() == m.encode() => copies += 1,
                Some(o) => panic!(
                    "unit {:x} sent seq {} while seq {} was unACKed",
                    m.device_id, m.seq, o.seq
                ),
                None => {
                    fresh += 1;
                    outstanding.insert(m.device_id, m.clone());
                    held.push_back(m);
                }
            }
            // ACK late: only once three units are waiting, the oldest first.
            while held.len() >= 3 {
                let a = held.pop_front().unwrap();
                outstanding.remove(&a.device_id);
                run.peer.ack(&a).await;
            }
        }
    };
    tokio::time::timeout(GUARD * 3, exchange)
        .await
        .expect("the lot kept up with a slow appliance");
    let stats = run.stop().await.snapshot();
    assert!(
        stats.sent >= 400 && stats.retransmissions >= copies,
        "{stats:?}"
    );
}

#[tokio::test]
async fn history_buffered_while_away_is_replayed_in_order_with_original_times() {
    // PROTOCOL.md 4 (Time): buffered messages arrive late, in order, with
    // their original time_ms. Unit A leaves at +1 min for an hour; unit B
    // stays in reach and marks the time with a lamp at +44 min.
    let (a, b) = (0xA0, 0xB0);
    let unit_a = ScriptedUnit::new(a)
        .at(MIN, Episode::Away { duration_s: 3600 })
        .at(10 * MIN, Episode::Lamp { lamp: 5, lit: true })
        .at(
            20 * MIN,
            Episode::Lamp {
                lamp: 5,
                lit: false,
            },
        )
        .at(
            30 * MIN,
            Episode::Drive {
                duration_s: 600,
                distance_km: 8,
            },
        );
    let unit_b = ScriptedUnit::new(b).at(
        44 * MIN,
        Episode::Lamp {
            lamp: 13,
            lit: true,
        },
    );
    let (c, clock) = fake_clock(T0);
    let mut run = start(scripted(vec![unit_a, unit_b]), clock);
    run.peer.ack_n(4).await; // both boots: HELLO, HEARTBEAT
    run.settle().await;

    c.set(T0 + 45 * MIN);
    loop {
        let m = run.peer.recv().await;
        run.peer.ack(&m).await;
        assert_eq!(m.device_id, b, "unit A is out of reach: {m:?}");
        if m.body
            == (Body::Lamp {
                lamp: 13,
                lit: true,
            })
        {
            break;
        }
    }

    run.settle().await;
    c.set(T0 + 75 * MIN); // A is back since +61 min
    let mut replay = Vec::new();
    while replay.last().map(|m: &Message| m.time_ms) != Some(T0 + 70 * MIN) {
        let m = run.peer.recv().await;
        run.peer.ack(&m).await;
        if m.device_id == a {
            replay.push(m);
        }
    }
    let got: Vec<(&str, u64)> = replay
        .iter()
        .map(|m| (m.body.name(), (m.time_ms - T0) / 1000))
        .collect();
    let mut want = vec![
        ("LAMP", 600),
        ("HEARTBEAT", 900),
        ("LAMP", 1200),
        ("IGNITION_ON", 1800),
    ];
    want.extend((1..=9).map(|i| ("HEARTBEAT", 1800 + 60 * i)));
    want.extend([
        ("IGNITION_OFF", 2400),
        ("HEARTBEAT", 3300),
        ("HEARTBEAT", 4200),
    ]);
    assert_eq!(got, want);
    for w in replay.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "in order, nothing lost");
    }
    run.stop().await;
}

#[tokio::test]
async fn time_corrects_units_whose_clocks_run_ahead() {
    // PROTOCOL.md 4: the appliance answers HELLO with TIME; a unit more than
    // 2 s off adjusts. Two of five units start minutes ahead.
    let (_c, clock) = fake_clock(T0);
    let lot = LotConfig {
        vehicles: 5,
        seed: 8,
        skewed_units: 2,
        ..Default::default()
    };
    let mut run = start(lot, clock);
    // Each unit's HELLO times: its boot HELLO, then its answer to the scan.
    let mut hellos: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut scanned = false;
    while hellos.len() < 5 || hellos.values().any(|v| v.len() < 2) {
        let m = run.peer.recv().await;
        run.peer.ack(&m).await;
        if let Body::Hello(_) = m.body {
            run.peer.send(m.device_id, T0, Body::Time).await;
            hellos.entry(m.device_id).or_default().push(m.time_ms);
        }
        if hellos.len() == 5 && !scanned {
            scanned = true;
            run.peer.send(BROADCAST, T0, Body::RequestStatus).await;
        }
    }
    let mut ahead: Vec<u64> = hellos
        .values()
        .map(|v| v[0].saturating_sub(T0))
        .filter(|&o| o > 0)
        .collect();
    ahead.sort();
    assert_eq!(ahead.len(), 2, "two skewed units: {hellos:?}");
    assert!(
        ahead.iter().all(|&o| (2 * MIN..=15 * MIN).contains(&o)),
        "minutes ahead: {ahead:?}"
    );
    assert!(
        hellos.values().all(|v| v[1] == T0),
        "after TIME every clock reads the appliance's: {hellos:?}"
    );
    let stats = run.stop().await.snapshot();
    assert_eq!(stats.time_corrections, 2);
}

#[tokio::test]
async fn power_loss_is_last_gasp_silence_then_flagged_hello_and_power_restored() {
    // PROTOCOL.md 3: POWER_LOST is a last gasp; the unit boots with HELLO
    // flag bit 0 and reports how long it was down.
    let unit = ScriptedUnit::new(0x57).at(
        5 * MIN,
        Episode::PowerLoss {
            reason: PowerLossReason::Unplugged,
            down_s: 3600,
        },
    );
    let (c, clock) = fake_clock(T0);
    let mut run = start(scripted(vec![unit]), clock);
    run.peer.ack_n(2).await;
    run.settle().await;
    c.set(T0 + 6 * MIN);
    let gasp = run.peer.ack_n(1).await.remove(0);
    run.settle().await;
    assert_eq!(
        (gasp.body.clone(), gasp.time_ms),
        (
            Body::PowerLost {
                reason: PowerLossReason::Unplugged
            },
            T0 + 5 * MIN
        )
    );
    // The parked heartbeats due at +15, +30 and +45 min never come: the next
    // messages are the boot after the outage.
    c.set(T0 + 66 * MIN);
    let boot = run.peer.ack_n(2).await;
    let Body::Hello(Hello {
        after_power_loss,
        flags,
        ..
    }) = boot[0].body
    else {
        panic!("{:?}", boot[0])
    };
    assert!(after_power_loss && flags & 1 == 1);
    assert_eq!(boot[0].time_ms, T0 + 65 * MIN);
    assert_eq!(boot[1].body, Body::PowerRestored { down_s: 3600 });
    run.stop().await;
}

#[tokio::test]
async fn an_unacked_last_gasp_is_delivered_after_the_boot() {
    // At least once: a POWER_LOST nobody ACKed is resent unchanged after
    // the boot HELLO, before POWER_RESTORED.
    let unit = ScriptedUnit::new(0x58).at(
        5 * MIN,
        Episode::PowerLoss {
            reason: PowerLossReason::SupplyLow,
            down_s: 600,
        },
    );
    let (c, clock) = fake_clock(T0);
    let mut run = start(scripted(vec![unit]), clock);
    run.peer.ack_n(2).await;
    run.settle().await;
    c.set(T0 + 6 * MIN);
    let gasp = run.peer.recv().await; // not ACKed
    assert_eq!(gasp.body.name(), "POWER_LOST");
    c.set(T0 + 16 * MIN);
    let hello = run.peer.ack_n(1).await.remove(0);
    assert!(is_hello(&hello, true), "{hello:?}");
    let again = run.peer.ack_n(1).await.remove(0);
    assert_eq!(again.encode(), gasp.encode());
    let restored = run.peer.ack_n(1).await.remove(0);
    assert_eq!(restored.body, Body::PowerRestored { down_s: 600 });
    run.stop().await;
}

#[tokio::test]
async fn a_broadcast_request_status_is_answered_by_every_unit() {
    // PROTOCOL.md 3: REQUEST_STATUS to 0xFFFFFFFFFFFFFFFF is a lot scan;
    // every unit in reach answers with a HELLO and a HEARTBEAT.
    let (_c, clock) = fake_clock(T0);
    let lot = LotConfig {
        vehicles: 6,
        seed: 21,
        ..Default::default()
    };
    let mut run = start(lot, clock);
    let mut hellos: HashMap<u64, usize> = HashMap::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut scanned = false;
    while answered.len() < 6 {
        let m = run.peer.recv().await;
        run.peer.ack(&m).await;
        match m.body {
            Body::Hello(_) => *hellos.entry(m.device_id).or_default() += 1,
            Body::Heartbeat(_) if hellos.get(&m.device_id) == Some(&2) => {
                answered.insert(m.device_id);
            }
            _ => {}
        }
        if hellos.len() == 6 && !scanned {
            scanned = true;
            run.peer.send(BROADCAST, T0, Body::RequestStatus).await;
        }
    }
    // And one unit alone answers a request addressed to it.
    let one = *answered.iter().next().unwrap();
    run.peer
        .send(one, T0, Body::RequestDtc { ecu: 0x07E0 })
        .await;
    let report = run.peer.ack_n(1).await.remove(0);
    assert_eq!((report.device_id, report.body.name()), (one, "DTC_REPORT"));
    let stats = run.stop().await.snapshot();
    assert_eq!((stats.status_requests, stats.dtc_requests), (6, 1));
}

#[tokio::test]
async fn simulated_time_never_runs_ahead_of_the_clock() {
    // Two hours of history at 10,000x, then real time: every time_ms is at
    // or before the clock when it arrives.
    let clock: SharedClock = Arc::new(SystemClock);
    let started = clock.now_ms();
    let units: Vec<ScriptedUnit> = (1..=3).map(|i| ScriptedUnit::new(0x5100 + i)).collect();
    let lot = LotConfig {
        backfill_ms: 120 * MIN,
        speed: 10_000.0,
        ..scripted(units)
    };
    let mut run = start(lot, clock.clone());
    let mut first_hello = None;
    let mut caught_up: HashSet<u64> = HashSet::new();
    while caught_up.len() < 3 {
        let m = run.peer.recv().await;
        let now = clock.now_ms();
        assert!(
            m.time_ms <= now,
            "{m:?} is {} ms in the future",
            m.time_ms - now
        );
        first_hello.get_or_insert(m.time_ms);
        run.peer.ack(&m).await;
        if m.time_ms + 15 * MIN >= started {
            caught_up.insert(m.device_id);
        }
    }
    let first = first_hello.unwrap();
    assert!(
        first.abs_diff(started - 120 * MIN) < 1_000,
        "the timeline starts two hours back"
    );
    run.stop().await;
}

/// The first `n` messages a lot replaying a day sends, by unit, in order.
async fn first_messages(seed: u64, n: usize) -> HashMap<u64, Vec<Vec<u8>>> {
    let (c, clock) = fake_clock(T0);
    let lot = LotConfig {
        vehicles: 5,
        seed,
        backfill_ms: 24 * 60 * MIN,
        speed: 1000.0,
        ..Default::default()
    };
    let mut run = start(lot, clock);
    let mut per: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for i in 0..n {
        let m = run.peer.recv().await;
        if i == 0 {
            c.advance(100_000); // the lot is up; 100 s at 1000x: the whole day is due
        }
        run.peer.ack(&m).await;
        if let Body::Hello(_) = m.body {
            run.peer.send(m.device_id, T0, Body::Time).await;
        }
        per.entry(m.device_id).or_default().push(m.encode());
    }
    run.stop().await;
    per
}

#[tokio::test]
async fn the_same_seed_replays_the_same_lot() {
    // Identities and every vehicle's episodes follow from the seed. How the
    // units interleave on the line depends on ACK timing; what each unit
    // says, and in which order, does not.
    let a = first_messages(4, 150).await;
    let b = first_messages(4, 150).await;
    let mut ids: Vec<&u64> = a.keys().collect();
    ids.sort();
    let mut ids_b: Vec<&u64> = b.keys().collect();
    ids_b.sort();
    assert_eq!(ids, ids_b, "the same units");
    let mut compared = 0;
    for id in ids {
        let common = a[id].len().min(b[id].len());
        assert_eq!(
            a[id][..common],
            b[id][..common],
            "unit {id:x} says the same, byte for byte"
        );
        compared += common;
    }
    assert!(compared >= 100, "only {compared} messages compared");
    let c = first_messages(5, 10).await;
    assert!(
        a.keys().all(|id| !c.contains_key(id)),
        "another seed, other units"
    );
}

#[tokio::test]
async fn flood_completes_with_every_message_acked() {
    let (sim_side, mut peer_side) = SerialStream::pair().expect("pty pair");
    let units = 1_000;
    let per_unit = 10;
    let peer = tokio::spawn(async move {
        let mut deframer = Deframer::new();
        let mut unique: HashSet<(u64, u16, u64)> = HashSet::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        while unique.len() < units * per_unit {
            let n = tokio::time::timeout(GUARD, peer_side.read(&mut buf))
                .await
                .expect("flood stalled")
                .unwrap();
            assert!(n > 0);
            out.clear();
            deframer.feed(&buf[..n], |d| {
                let Deframed::Payload(p) = d else {
                    panic!("bad frame")
                };
                let m = Message::decode(p).unwrap();
                unique.insert((m.device_id, m.seq, m.time_ms));
                let ack = Message {
                    seq: 0,
                    device_id: m.device_id,
                    time_ms: T0,
                    body: Body::Ack { acked_seq: m.seq },
                };
                encode_serial(&ack.encode(), &mut out);
            });
            peer_side.write_all(&out).await.unwrap();
        }
        unique
    });
    let report = tokio::time::timeout(
        GUARD * 3,
        flood_serial(sim_side, units, per_unit, Arc::new(SystemClock), 9),
    )
    .await
    .expect("flood finishes")
    .unwrap();
    let unique = peer.await.unwrap();
    assert_eq!(report.messages, (units * per_unit) as u64);
    assert_eq!(report.acked, report.messages);
    assert_eq!(unique.len(), units * per_unit);
    let devices: HashSet<u64> = unique.iter().map(|k| k.0).collect();
    assert_eq!(devices.len(), units);
    println!("{report}");
}

#[tokio::test]
async fn opens_a_serial_port_by_path() {
    if std::env::var_os("FORECOURT_QEMU_USER").is_some() {
        eprintln!(
            "skipped under qemu-user: opening a serial port by path needs termios2 (docs/ci.md)"
        );
        return;
    }
    // `forecourt simulate --serial PATH` with a pty slave path, as a user
    // would: the test holds the master and keeps a plain slave fd open (no
    // lock), so the simulator must open the port by its path.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave_path =
        std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).expect("slave path");
    let master = tokio::fs::File::from_std(std::fs::File::from(pty.master));
    let (_c, clock) = fake_clock(T0);
    let stats = Arc::new(SimStats::new());
    let (stop, shutdown) = shutdown::channel();
    let lot = scripted(vec![ScriptedUnit::new(0x59)]);
    let task = tokio::spawn(async move {
        run_serial_path(&slave_path, 115_200, lot, clock, stats, shutdown).await
    });
    let mut peer = Peer::new(master);
    let hello = peer.recv().await;
    assert!(is_hello(&hello, false), "{hello:?}");
    peer.ack(&hello).await;
    assert_eq!(peer.recv().await.body.name(), "HEARTBEAT");
    stop.fire();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(pty.slave);
}

#[tokio::test]
async fn a_missing_serial_port_is_a_clear_error() {
    let (_t, shutdown) = shutdown::channel();
    let (_c, clock) = fake_clock(T0);
    let err = run_serial_path(
        std::path::Path::new("/dev/forecourt-no-such-port"),
        115_200,
        LotConfig::default(),
        clock,
        Arc::new(SimStats::new()),
        shutdown,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SimError::OpenSerial { .. }), "{err}");
    assert!(err.to_string().contains("/dev/forecourt-no-such-port"));
}
