//! The CAN link on real kernel SocketCAN (PROTOCOL.md section 1, "CAN").
//!
//! These tests drive the real appliance link task (`can::run`) and the real
//! simulated dongles (`can::dongle_bus`) over vcan interfaces. This machine's
//! kernel has no SocketCAN, so `.ci/can-vm.sh` runs them inside a VM, where
//! `CAN_TEST_IFACES` names one interface per test (tests run in parallel and
//! one takes its interface down). Without it each test says so and returns.

use std::sync::Arc;
use std::time::Duration;

use forecourt::clock::FakeClock;
use forecourt::link::can::{self, CanSettings};
use forecourt::link::frame;
use forecourt::link::message::{
    Body, Dtc, DtcEntry, DtcReport, Engine, Firmware, Heartbeat, Hello, Message, Vin, BROADCAST,
};
use forecourt::link::{LinkContext, LinkEvent, LinkState, LinkStatus, Outbound};
use forecourt::shutdown::{self, Shutdown, ShutdownTrigger};
use socketcan::{CanFrame, EmbeddedFrame, ExtendedId, SocketOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// The appliance's (fake) wall clock; ISO-TP timers run on a monotonic one.
const NOW_MS: u64 = 1_767_225_600_000;
/// Longest wait for anything that should happen promptly on a vcan, with
/// room for a software-emulated CPU.
const PROMPTLY: Duration = Duration::from_secs(10);

/// The vcan interface reserved for test number `index`, or `None` outside
/// the VM (no `CAN_TEST_IFACE`).
fn vm_iface(index: usize) -> Option<String> {
    if std::env::var_os("CAN_TEST_IFACE").is_none() {
        println!("needs kernel SocketCAN: run it in the VM with .ci/can-vm.sh; skipped");
        return None;
    }
    let list = std::env::var("CAN_TEST_IFACES")
        .expect("CAN_TEST_IFACES: these tests need one vcan interface each (see .ci/can-vm.sh)");
    let iface = list.split_whitespace().nth(index);
    Some(
        iface
            .unwrap_or_else(|| panic!("the VM has no interface number {index}: {list}"))
            .to_owned(),
    )
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("busybox ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// The appliance's CAN link task with channels of its own, as the appliance
/// would build it.
struct Appliance {
    events: mpsc::Receiver<LinkEvent>,
    status: Arc<LinkStatus>,
    outbound: mpsc::Sender<Outbound>,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
}

impl Appliance {
    fn start(settings: CanSettings) -> Appliance {
        let (events_tx, events) = mpsc::channel(256);
        let (outbound, outbound_rx) = mpsc::channel(256);
        let (trigger, shutdown) = shutdown::channel();
        let status = LinkStatus::new(settings.interface.clone(), "can");
        let ctx = LinkContext {
            id: 7,
            events: events_tx,
            status: status.clone(),
            outbound: outbound_rx,
            outbound_tx: outbound.clone(),
            clock: Arc::new(FakeClock::new(NOW_MS)),
            shutdown,
        };
        let task = tokio::spawn(async move { can::run(&settings, ctx).await });
        Appliance {
            events,
            status,
            outbound,
            trigger,
            task,
        }
    }

    async fn start_up(settings: CanSettings) -> Appliance {
        let appliance = Appliance::start(settings);
        appliance
            .wait_for_state("up", |s| *s == LinkState::Up)
            .await;
        appliance
    }

    /// LinkStatus is read by polling, as the web page and `/healthz` do.
    async fn wait_for_state(&self, what: &str, want: impl Fn(&LinkState) -> bool) {
        let give_up = Instant::now() + PROMPTLY;
        while !want(&self.status.state()) {
            assert!(
                Instant::now() < give_up,
                "link never {what}: {:?}",
                self.status.report()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn next_event(&mut self) -> LinkEvent {
        timeout(PROMPTLY, self.events.recv())
            .await
            .expect("a link event in time")
            .expect("link alive")
    }

    /// The next payload and the node address its replies go to.
    async fn next_payload(&mut self) -> (Vec<u8>, u8) {
        match self.next_event().await {
            LinkEvent::Payload { payload, reply, .. } => (payload, reply.addr),
            LinkEvent::Rejected { reason, .. } => panic!("rejected: {}", reason.0),
        }
    }

    async fn next_rejection(&mut self) -> &'static str {
        match self.next_event().await {
            LinkEvent::Rejected { link, reason } => {
                assert_eq!(link, 7);
                reason.0
            }
            LinkEvent::Payload { payload, .. } => {
                panic!("expected a rejection, got {payload:02x?}")
            }
        }
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.status
            .report()
            .rejected
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    async fn stop(self) -> Arc<LinkStatus> {
        self.trigger.fire();
        timeout(PROMPTLY, self.task)
            .await
            .expect("link stops in time")
            .expect("link task");
        assert_eq!(self.status.state(), LinkState::Stopped);
        self.status
    }
}

fn settings(iface: &str) -> CanSettings {
    CanSettings::new(iface)
}

fn sealed(payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    frame::seal(payload, &mut body);
    body
}

fn hello(device_id: u64, seq: u16) -> Message {
    Message {
        seq,
        device_id,
        time_ms: NOW_MS - 60_000,
        body: Body::Hello(Hello {
            vin: Vin::parse("WF0XXXGCDX1234567"),
            firmware: Firmware(1, 4, 2),
            after_power_loss: false,
            flags: 0,
        }),
    }
}

fn heartbeat(device_id: u64, seq: u16) -> Message {
    Message {
        seq,
        device_id,
        time_ms: NOW_MS - 30_000 + u64::from(seq),
        body: Body::Heartbeat(Heartbeat {
            engine: Engine::Running,
            run_s: 900,
            odometer_km: 123_456,
            battery_mv: 14_100,
            lamps: 1,
        }),
    }
}

fn ack(device_id: u64, seq: u16, acked_seq: u16) -> Message {
    Message {
        seq,
        device_id,
        time_ms: NOW_MS,
        body: Body::Ack { acked_seq },
    }
}

/// Opens what a dongle's reply came as: a body with a good CRC holding a
/// message.
fn opened(body: &[u8]) -> Message {
    Message::decode(frame::open(body).expect("good CRC")).expect("a message")
}

/// One dongle-side ISO-TP frame from node `nn` on a raw socket, for the
/// tests that must break the protocol on purpose.
async fn raw_uplink(socket: &socketcan::tokio::CanSocket, nn: u8, data: &[u8]) {
    let id = ExtendedId::new(can::uplink_id(nn)).expect("29-bit id");
    socket
        .write_frame(CanFrame::new(id, data).expect("frame"))
        .await
        .expect("write");
}

/// A raw socket that sees only what the appliance sends to node `nn`.
fn raw_node(iface: &str, nn: u8) -> socketcan::tokio::CanSocket {
    let socket = socketcan::tokio::CanSocket::open(iface).expect("raw socket");
    let id = can::downlink_id(nn) | libc::CAN_EFF_FLAG;
    socket
        .set_filters(&[(id, libc::CAN_EFF_MASK | libc::CAN_EFF_FLAG)])
        .expect("filter");
    socket
}

async fn raw_read(socket: &socketcan::tokio::CanSocket) -> Vec<u8> {
    let frame = timeout(PROMPTLY, socket.read_frame())
        .await
        .expect("a frame in time")
        .expect("read");
    frame.data().to_vec()
}

async fn dongles(
    iface: &str,
    shutdown: Shutdown,
) -> (mpsc::Sender<(u8, Vec<u8>)>, mpsc::Receiver<(u8, Vec<u8>)>) {
    can::dongle_bus(iface, shutdown)
        .await
        .expect("dongle bus opens")
}

async fn from_appliance(rx: &mut mpsc::Receiver<(u8, Vec<u8>)>) -> (u8, Vec<u8>) {
    timeout(PROMPTLY, rx.recv())
        .await
        .expect("a body in time")
        .expect("dongle bus alive")
}

#[tokio::test]
async fn hello_reaches_ingest_and_its_ack_reaches_the_node() {
    let Some(iface) = vm_iface(0) else { return };
    let mut appliance = Appliance::start_up(settings(&iface)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (to_appliance, mut to_dongles) = dongles(&iface, shutdown).await;

    // PROTOCOL.md 1: a body (payload || CRC) from node 0x21 as one ISO-TP message.
    let hello = hello(0x0102_0304_0506_0708, 1).encode();
    to_appliance.send((0x21, sealed(&hello))).await.unwrap();
    match appliance.next_event().await {
        LinkEvent::Payload {
            link,
            payload,
            received_ms,
            reply,
        } => {
            assert_eq!(link, 7);
            assert_eq!(payload, hello, "CRC checked and stripped");
            assert_eq!(received_ms, NOW_MS, "the appliance's clock");
            assert_eq!(reply.addr, 0x21);
            // PROTOCOL.md 3: the ACK and then a TIME go back to the same unit.
            assert!(reply.send(ack(0x0102_0304_0506_0708, 9, 1).encode()));
            let time = Message {
                seq: 10,
                device_id: 0x0102_0304_0506_0708,
                time_ms: NOW_MS,
                body: Body::Time,
            };
            assert!(reply.send(time.encode()));
        }
        LinkEvent::Rejected { reason, .. } => panic!("rejected: {}", reason.0),
    }
    let (nn, body) = from_appliance(&mut to_dongles).await;
    assert_eq!((nn, opened(&body).body), (0x21, Body::Ack { acked_seq: 1 }));
    let (nn, body) = from_appliance(&mut to_dongles).await;
    assert_eq!((nn, opened(&body).body), (0x21, Body::Time));

    let status = appliance.stop().await;
    let report = status.report();
    assert_eq!(
        (report.payloads, report.sent, report.transport),
        (1, 2, "can")
    );
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.bytes_in >= 40 && report.bytes_out >= 48);
}

#[tokio::test]
async fn many_nodes_interleaved_each_get_their_own_replies() {
    let Some(iface) = vm_iface(1) else { return };
    let mut appliance = Appliance::start_up(settings(&iface)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (to_appliance, mut to_dongles) = dongles(&iface, shutdown).await;
    let nodes: Vec<u8> = (0..24u8).map(|i| i * 10 + 3).collect(); // 0x03 .. 0xE9
    let device = |nn: u8| 0xD0_0000 + u64::from(nn);

    // Every node sends three messages; their frames interleave on the bus.
    for seq in 1..=3u16 {
        for &nn in &nodes {
            let m = if seq == 1 {
                hello(device(nn), seq)
            } else {
                heartbeat(device(nn), seq)
            };
            to_appliance.send((nn, sealed(&m.encode()))).await.unwrap();
        }
    }
    let mut seen: std::collections::BTreeMap<u8, Vec<u16>> = Default::default();
    for _ in 0..nodes.len() * 3 {
        let LinkEvent::Payload { payload, reply, .. } = appliance.next_event().await else {
            panic!("rejected")
        };
        let m = Message::decode(&payload).expect("a message");
        assert_eq!(
            m.device_id,
            device(reply.addr),
            "payload from the node it came from"
        );
        seen.entry(reply.addr).or_default().push(m.seq);
        assert!(reply.send(ack(m.device_id, m.seq, m.seq).encode()));
    }
    for &nn in &nodes {
        assert_eq!(seen[&nn], [1, 2, 3], "node {nn:#x} in order");
    }
    // Each ACK reaches the node whose message it acknowledges, in order.
    let mut acks: std::collections::BTreeMap<u8, Vec<u16>> = Default::default();
    for _ in 0..nodes.len() * 3 {
        let (nn, body) = from_appliance(&mut to_dongles).await;
        let m = opened(&body);
        assert_eq!(m.device_id, device(nn));
        let Body::Ack { acked_seq } = m.body else {
            panic!("not an ACK")
        };
        acks.entry(nn).or_default().push(acked_seq);
    }
    for &nn in &nodes {
        assert_eq!(acks[&nn], [1, 2, 3], "node {nn:#x}");
    }
    let status = appliance.stop().await;
    assert_eq!(status.report().sent, 72);
}

#[tokio::test]
async fn largest_body_crosses_both_ways_with_flow_control_blocks() {
    let Some(iface) = vm_iface(2) else { return };
    // Block size 3 and STmin 2 ms announced by the appliance (configurable).
    let settings = CanSettings {
        interface: iface.clone(),
        block_size: 3,
        st_min_ms: 2,
    };
    let mut appliance = Appliance::start_up(settings).await;
    let (_stop, shutdown) = shutdown::channel();
    let (to_appliance, mut to_dongles) = dongles(&iface, shutdown).await;
    let sniffer = raw_node(&iface, 0x33);

    // PROTOCOL.md 1: a payload is at most 1,024 bytes, a body 1,028.
    let mut payload = hello(0xBEEF, 5).encode();
    payload.resize(1024, 0x5A);
    let body = sealed(&payload);
    assert_eq!(body.len(), 1028);
    let started = Instant::now();
    to_appliance.send((0x33, body)).await.unwrap();
    let (got, addr) = appliance.next_payload().await;
    let took = started.elapsed();
    assert_eq!((got, addr), (payload.clone(), 0x33));

    // 146 Consecutive Frames in blocks of 3: one Flow Control after the
    // First Frame and one after every third CF but the last block's.
    let mut flow_controls = Vec::new();
    while let Ok(Ok(frame)) = timeout(Duration::from_millis(200), sniffer.read_frame()).await {
        if frame.data()[0] >> 4 == 3 {
            flow_controls.push(frame.data().to_vec());
        }
    }
    assert_eq!(flow_controls.len(), 1 + 145 / 3);
    assert!(flow_controls
        .iter()
        .all(|fc| fc[..] == [0x30, 3, 2, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]));
    // STmin 2 ms between Consecutive Frames of a block: at least 2 ms for
    // each of the two gaps in every one of the 49 blocks.
    assert!(
        took >= Duration::from_millis(2 * 2 * 48),
        "STmin honoured ({took:?})"
    );

    // And back: the dongle side asks for everything at once (block size 0).
    appliance
        .outbound
        .send(Outbound {
            addr: 0x33,
            payload: payload.clone(),
        })
        .await
        .unwrap();
    let (nn, body) = from_appliance(&mut to_dongles).await;
    assert_eq!(nn, 0x33);
    assert_eq!(frame::open(&body), Ok(&payload[..]));
    appliance.stop().await;
}

#[tokio::test]
async fn bad_crc_and_short_body_are_counted_and_the_link_stays_up() {
    let Some(iface) = vm_iface(3) else { return };
    let mut appliance = Appliance::start_up(settings(&iface)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (to_appliance, _to_dongles) = dongles(&iface, shutdown).await;

    let mut corrupt = sealed(&heartbeat(0xAB, 2).encode());
    corrupt[5] ^= 0x01;
    to_appliance.send((0x10, corrupt)).await.unwrap();
    // PROTOCOL.md 4: a body failing its CRC is dropped and counted, not ACKed.
    assert_eq!(appliance.next_rejection().await, "crc");
    assert_eq!(appliance.rejected("crc"), 1);
    // PROTOCOL.md 1: shorter than 24 bytes (a Single Frame here).
    to_appliance.send((0x10, sealed(&[1, 2]))).await.unwrap();
    assert_eq!(appliance.next_rejection().await, "too_short");

    let good = heartbeat(0xAB, 2).encode();
    to_appliance.send((0x10, sealed(&good))).await.unwrap();
    assert_eq!(appliance.next_payload().await.0, good);
    assert_eq!(appliance.status.state(), LinkState::Up);
    let report = appliance.stop().await.report();
    assert_eq!(report.rejected.get("crc"), Some(&1));
    assert_eq!(report.rejected.get("too_short"), Some(&1));
    assert_eq!(report.payloads, 1);
}

#[tokio::test]
async fn sequence_gap_and_consecutive_frame_timeout_are_counted() {
    let Some(iface) = vm_iface(4) else { return };
    let mut appliance = Appliance::start_up(settings(&iface)).await;
    let node = raw_node(&iface, 0x42);
    let body = sealed(&hello(0x42, 1).encode()); // 45 bytes: FF + 6 CFs

    // PROTOCOL.md 1: the First Frame is answered ContinueToSend, BS 0, STmin 0.
    let mut ff = vec![0x10, body.len() as u8];
    ff.extend_from_slice(&body[..6]);
    raw_uplink(&node, 0x42, &ff).await;
    assert_eq!(
        raw_read(&node).await,
        [0x30, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]
    );
    let cf = |sn: u8, at: usize| [&[0x20 | sn][..], &body[at..at + 7]].concat();
    raw_uplink(&node, 0x42, &cf(1, 6)).await;
    // CF 3 where CF 2 was due: a sequence gap.
    raw_uplink(&node, 0x42, &cf(3, 20)).await;
    assert_eq!(appliance.next_rejection().await, "isotp_sequence");

    // PROTOCOL.md 1: 1,000 ms without the next Consecutive Frame.
    raw_uplink(&node, 0x42, &ff).await;
    assert_eq!(raw_read(&node).await[0], 0x30);
    raw_uplink(&node, 0x42, &cf(1, 6)).await;
    let last_cf = Instant::now();
    assert_eq!(appliance.next_rejection().await, "isotp_timeout");
    let waited = last_cf.elapsed();
    assert!(
        waited >= Duration::from_millis(990),
        "aborted after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(3000),
        "aborted after {waited:?}"
    );

    // The node's next message goes through.
    raw_uplink(&node, 0x42, &ff).await;
    assert_eq!(raw_read(&node).await[0], 0x30);
    for (i, at) in (6..body.len()).step_by(7).enumerate() {
        let mut frame = vec![0x20 | (i as u8 + 1)];
        frame.extend_from_slice(&body[at..(at + 7).min(body.len())]);
        frame.resize(8, 0xCC);
        raw_uplink(&node, 0x42, &frame).await;
    }
    assert_eq!(appliance.next_payload().await.0, hello(0x42, 1).encode());
    assert_eq!(
        (
            appliance.rejected("isotp_sequence"),
            appliance.rejected("isotp_timeout")
        ),
        (1, 1)
    );
    appliance.stop().await;
}

#[tokio::test]
async fn interface_down_and_up_reopens_the_link_and_others_keep_working() {
    let (Some(flaky), Some(steady)) = (vm_iface(5), vm_iface(6)) else {
        return;
    };
    let mut appliance = Appliance::start_up(settings(&flaky)).await;
    let mut other = Appliance::start_up(settings(&steady)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (to_appliance, _rx) = dongles(&flaky, shutdown.clone()).await;
    let (to_other, _other_rx) = dongles(&steady, shutdown).await;

    ip(&["link", "set", &flaky, "down"]);
    appliance
        .wait_for_state("down", |s| matches!(s, LinkState::Down { .. }))
        .await;
    let report = appliance.status.report();
    assert!(
        !report.up && report.state.starts_with("down: "),
        "{}",
        report.state
    );

    // The other CAN link is unaffected.
    let m = heartbeat(0x77, 3).encode();
    to_other.send((0x07, sealed(&m))).await.unwrap();
    assert_eq!(other.next_payload().await.0, m);
    assert_eq!(other.status.state(), LinkState::Up);

    ip(&["link", "set", &flaky, "up"]);
    appliance
        .wait_for_state("reopened", |s| *s == LinkState::Up)
        .await;
    assert!(appliance.status.report().reopens >= 1);
    // As a dongle does (PROTOCOL.md 4), retransmit until it gets through:
    // the dongle side reopens on its own backoff.
    let m = heartbeat(0x55, 4).encode();
    let give_up = Instant::now() + PROMPTLY;
    loop {
        to_appliance.send((0x05, sealed(&m))).await.unwrap();
        if let Ok(Some(event)) = timeout(Duration::from_secs(2), appliance.events.recv()).await {
            let LinkEvent::Payload { payload, .. } = event else {
                panic!("rejected")
            };
            assert_eq!(payload, m);
            break;
        }
        assert!(Instant::now() < give_up, "no payload after the reopen");
    }
    appliance.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn missing_interface_is_retried_until_it_appears() {
    if vm_iface(0).is_none() {
        return;
    }
    let iface = "fcnew0";
    // The dongle side reports a missing interface at once.
    let (_stop, shutdown) = shutdown::channel();
    assert!(can::dongle_bus(iface, shutdown).await.is_err());
    let appliance = Appliance::start(settings(iface));
    appliance
        .wait_for_state("down", |s| matches!(s, LinkState::Down { .. }))
        .await;
    assert!(
        appliance.status.report().state.contains("No such device"),
        "{}",
        appliance.status.report().state
    );
    ip(&["link", "add", iface, "type", "vcan"]);
    ip(&["link", "set", "up", iface]);
    appliance
        .wait_for_state("up", |s| *s == LinkState::Up)
        .await;
    appliance.stop().await;
}

#[tokio::test]
async fn broadcast_request_status_goes_to_every_node_address() {
    let Some(iface) = vm_iface(7) else { return };
    let appliance = Appliance::start_up(settings(&iface)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (_to_appliance, mut to_dongles) = dongles(&iface, shutdown).await;

    // PROTOCOL.md 3: device_id all ones addresses every unit in reach.
    let scan = Message {
        seq: 1,
        device_id: BROADCAST,
        time_ms: NOW_MS,
        body: Body::RequestStatus,
    };
    appliance
        .outbound
        .send(Outbound {
            addr: 0,
            payload: scan.encode(),
        })
        .await
        .unwrap();
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..253 {
        let (nn, body) = from_appliance(&mut to_dongles).await;
        assert_eq!(opened(&body), scan);
        assert!(reached.insert(nn), "node {nn:#x} twice");
    }
    assert_eq!(reached.len(), 253);
    assert!(!reached.contains(&0xF1) && !reached.contains(&0xFE) && !reached.contains(&0xFF));
    let status = appliance.stop().await;
    assert_eq!(status.report().sent, 253);
    assert!(status.report().rejected.is_empty());
}

#[tokio::test]
async fn shutdown_sends_what_is_queued_then_stops() {
    let Some(iface) = vm_iface(8) else { return };
    let appliance = Appliance::start_up(settings(&iface)).await;
    let (_stop, shutdown) = shutdown::channel();
    let (_to_appliance, mut to_dongles) = dongles(&iface, shutdown).await;

    // A DTC report the size of a full snapshot goes the other way too.
    let report = Message {
        seq: 2,
        device_id: 0x99,
        time_ms: NOW_MS,
        body: Body::DtcReport(DtcReport {
            ecu: 0x07E0,
            entries: vec![
                DtcEntry {
                    dtc: Dtc([0x03, 0x01, 0x00]),
                    status: 0x09
                };
                250
            ],
        }),
    }
    .encode();
    for (nn, seq) in [(0x01, 1), (0x02, 1), (0x01, 2)] {
        let payload = ack(0x99, seq, seq).encode();
        appliance
            .outbound
            .send(Outbound { addr: nn, payload })
            .await
            .unwrap();
    }
    appliance
        .outbound
        .send(Outbound {
            addr: 0x02,
            payload: report.clone(),
        })
        .await
        .unwrap();
    let stopped = Instant::now();
    let status = appliance.stop().await;
    assert!(stopped.elapsed() < Duration::from_secs(3), "bounded");

    let mut got = Vec::new();
    for _ in 0..4 {
        let (nn, body) = from_appliance(&mut to_dongles).await;
        got.push((nn, frame::open(&body).expect("CRC").to_vec()));
    }
    let node_1: Vec<_> = got
        .iter()
        .filter(|g| g.0 == 0x01)
        .map(|g| opened_payload(&g.1))
        .collect();
    assert_eq!(
        node_1,
        [Body::Ack { acked_seq: 1 }, Body::Ack { acked_seq: 2 }],
        "in order"
    );
    assert!(got.contains(&(0x02, report)));
    assert_eq!(status.report().sent, 4);
}

fn opened_payload(payload: &[u8]) -> Body {
    Message::decode(payload).expect("a message").body
}

/// Waits for the replies to node `nn` until `done` says enough, returning
/// them in order.
async fn replies_until(
    rx: &mut mpsc::Receiver<(u8, Vec<u8>)>,
    nn: u8,
    mut done: impl FnMut(&[Message]) -> bool,
) -> Vec<Message> {
    let mut seen = Vec::new();
    while !done(&seen) {
        let (node, body) = from_appliance(rx).await;
        if node == nn {
            seen.push(opened(&body));
        }
    }
    seen
}

fn acks(seen: &[Message], device_id: u64, seq: u16) -> usize {
    seen.iter()
        .filter(|m| m.device_id == device_id && m.body == Body::Ack { acked_seq: seq })
        .count()
}

/// Issue 2, "Done when": the same suite over CAN. The whole appliance
/// (`app::start`: links, ingest, store, web) on a vcan interface, driven by
/// the dongle side of the bus: every valid message ACKed (HELLOs with a
/// TIME after), duplicates re-ACKed and counted once, a bad CRC dropped and
/// counted, a bad version ACKed and counted, each unique message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_appliance_over_can_counts_each_unique_message_once() {
    let Some(iface) = vm_iface(9) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = forecourt::config::Settings::with_data_dir(dir.path().join("data"));
    settings.http_listen = "127.0.0.1:0".parse().expect("addr");
    settings.can = vec![CanSettings::new(&iface)];
    let clock: forecourt::clock::SharedClock = Arc::new(forecourt::clock::SystemClock);
    let running = forecourt::app::start(settings, clock)
        .await
        .expect("appliance starts");
    let deadline = Instant::now() + PROMPTLY;
    while !running.state.links[0].status.report().up {
        assert!(Instant::now() < deadline, "CAN link never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_stop, sd) = shutdown::channel();
    let (tx, mut rx) = dongles(&iface, sd).await;

    // Two units interleaved, as a lot would be.
    tx.send((5, sealed(&hello(500, 1).encode())))
        .await
        .expect("send");
    tx.send((6, sealed(&hello(600, 1).encode())))
        .await
        .expect("send");
    let seen = replies_until(&mut rx, 5, |s| s.iter().any(|m| m.body == Body::Time)).await;
    assert_eq!(acks(&seen, 500, 1), 1, "{seen:?}");
    assert!(
        matches!(seen.last().map(|m| &m.body), Some(Body::Time)),
        "TIME after the ACK: {seen:?}"
    );
    replies_until(&mut rx, 6, |s| s.iter().any(|m| m.body == Body::Time)).await;

    // A message, then its retransmission: ACKed twice, applied once.
    let hb = sealed(&heartbeat(500, 2).encode());
    tx.send((5, hb.clone())).await.expect("send");
    replies_until(&mut rx, 5, |s| acks(s, 500, 2) == 1).await;
    tx.send((5, hb)).await.expect("send");
    replies_until(&mut rx, 5, |s| acks(s, 500, 2) == 1).await;

    // A bad CRC is dropped, not ACKed; a bad version is ACKed, not applied.
    let mut bad = sealed(&heartbeat(500, 3).encode());
    bad[30] ^= 0x10;
    tx.send((5, bad)).await.expect("send");
    let mut v2 = heartbeat(500, 4).encode();
    v2[0] = 2;
    tx.send((5, sealed(&v2))).await.expect("send");
    let seen = replies_until(&mut rx, 5, |s| acks(s, 500, 4) == 1).await;
    assert_eq!(
        acks(&seen, 500, 3),
        0,
        "nothing answers a bad CRC: {seen:?}"
    );

    let deadline = Instant::now() + PROMPTLY;
    let totals = loop {
        let t = running.state.totals.snapshot();
        if t.rejected == 2 || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (
            totals.vehicles,
            totals.messages,
            totals.duplicates,
            totals.rejected
        ),
        (2, 3, 1, 2),
        "{totals:?}"
    );
    let h = forecourt::web::health(&running.state);
    assert_eq!(h.status, "ok", "{:?}", h.problems);
    running.stop().await;
}
