//! The CAN link (PROTOCOL.md section 1, "CAN"): bodies as ISO-TP messages
//! over kernel SocketCAN, one raw socket for every node on the bus.
//!
//! A lot gateway or a wired bus may carry up to 253 dongles, each with its
//! own node address `nn`. Dongles send on `0x18DAF1nn` and the appliance
//! answers on `0x18DAnnF1` (ISO 15765-2 normal fixed addressing, the
//! appliance being 0xF1). One raw socket filtered to those identifiers and a
//! [`Mux`] holding an ISO-TP receiver and sender per node serve them all, so
//! a node that is slow to send Flow Control never holds up another. The
//! ISO-TP state machines themselves are pure (`link::isotp`); this module
//! adds the socket, the timers and the link contract of `link::mod`.
//!
//! [`dongle_bus`] is the same machinery seen from the other side, for the lot
//! simulator and the tests: many simulated dongles on one socket.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socketcan::{CanFilter, CanFrame, EmbeddedFrame, ExtendedId, Id, Socket, SocketOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::isotp::{
    CanData, IsoTpError, Pdu, Reassembler, ReceiverConfig, Segmenter, SenderConfig, TxStep,
};
use super::message::{Header, BROADCAST};
use super::{
    frame, Backoff, LinkContext, LinkEvent, LinkState, LinkStatus, Outbound, RejectReason, Replier,
};
use crate::shutdown::Shutdown;

/// What the configuration says about one CAN link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanSettings {
    /// The SocketCAN interface, e.g. `can0`. Its bitrate is set outside the
    /// appliance (systemd-networkd or `ip link`).
    pub interface: String,
    /// Block size the appliance announces in its Flow Control (0 = all).
    pub block_size: u8,
    /// STmin the appliance announces in its Flow Control, in ms (at most 127).
    pub st_min_ms: u8,
}

impl CanSettings {
    /// PROTOCOL.md 1 defaults: block size 0, STmin 0.
    pub fn new(interface: impl Into<String>) -> Self {
        CanSettings {
            interface: interface.into(),
            block_size: 0,
            st_min_ms: 0,
        }
    }
}

/// The appliance's node address.
pub const APPLIANCE_ADDR: u8 = 0xF1;
/// An [`Outbound::addr`] that sends the payload to every node address.
pub const BROADCAST_ADDR: u8 = 0xFF;

/// CAN identifier of a frame from dongle `nn` to the appliance.
pub fn uplink_id(nn: u8) -> u32 {
    0x18DA_0000 | u32::from(APPLIANCE_ADDR) << 8 | u32::from(nn)
}

/// CAN identifier of a frame from the appliance to dongle `nn`.
pub fn downlink_id(nn: u8) -> u32 {
    0x18DA_0000 | u32::from(nn) << 8 | u32::from(APPLIANCE_ADDR)
}

/// PROTOCOL.md 1: a dongle's node address is 0x00-0xFD and never 0xF1.
pub fn is_node_address(nn: u8) -> bool {
    nn <= 0xFD && nn != APPLIANCE_ADDR
}

/// Every address a dongle may have, for a broadcast.
fn node_addresses() -> impl Iterator<Item = u8> {
    (0..=0xFDu8).filter(|&nn| is_node_address(nn))
}

/// Bodies waiting for one node. Beyond this, new ones are dropped: the
/// dongle retransmits whatever was not ACKed.
const QUEUE_PER_NODE: usize = 16;
/// Bulk sends (broadcast copies, the simulated dongles) in progress at
/// once. Without a limit a broadcast would put 253 First Frames and then
/// some 760 Consecutive Frames on the bus in one burst, starving other
/// traffic and overrunning receivers' socket buffers; with it, addresses
/// that nobody answers cost 1 s per 32 of them.
const MAX_BULK_IN_FLIGHT: usize = 32;
/// Frames one [`Mux::poll`] hands out before reads get a turn.
const FRAMES_PER_POLL: usize = 64;
/// How long shutdown may spend sending what was already queued: one Flow
/// Control wait (1,000 ms) plus the frames of a few bodies.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// Capacity of each channel [`dongle_bus`] returns.
const DONGLE_CHANNEL: usize = 512;
/// How often a write may find the interface's transmit queue full (ENOBUFS:
/// the bus is slower than we are, or nobody acknowledges frames) before the
/// link is treated as failed.
const MAX_FULL_QUEUE_RETRIES: u32 = 200;

/// Which side of the addressing scheme a socket is on.
#[derive(Clone, Copy, Debug)]
enum Role {
    Appliance,
    Dongles,
}

impl Role {
    /// The identifiers this side receives, as a kernel filter: 29-bit data
    /// frames only.
    fn filter(self) -> CanFilter {
        let flags = libc::CAN_EFF_FLAG;
        let (id, mask) = match self {
            Role::Appliance => (uplink_id(0), 0x1FFF_FF00),
            Role::Dongles => (downlink_id(0), 0x1FFF_00FF),
        };
        CanFilter::new(id | flags, mask | flags | libc::CAN_RTR_FLAG)
    }

    /// The node address a received identifier belongs to, if it is ours.
    fn node_of(self, id: u32) -> Option<u8> {
        match self {
            Role::Appliance if id & 0x1FFF_FF00 == uplink_id(0) => Some((id & 0xFF) as u8),
            Role::Dongles if id & 0x1FFF_00FF == downlink_id(0) => Some((id >> 8) as u8),
            _ => None,
        }
    }

    /// The identifier this side sends to (or as) node `nn` on.
    fn tx_id(self, nn: u8) -> u32 {
        match self {
            Role::Appliance => downlink_id(nn),
            Role::Dongles => uplink_id(nn),
        }
    }
}

/// A raw CAN socket on the tokio reactor.
///
/// socketcan's own tokio socket waits for readability only, and the kernel
/// reports an interface going down (ENETDOWN) or away (ENODEV) as a socket
/// error that is not readable; waiting for errors too is what lets the link
/// notice and reopen.
struct Bus {
    fd: AsyncFd<socketcan::CanSocket>,
    role: Role,
}

impl Bus {
    fn open(interface: &str, role: Role) -> io::Result<Bus> {
        let socket = socketcan::CanSocket::open(interface)?;
        socket.set_nonblocking(true)?;
        socket.set_filters(&[role.filter()])?;
        // Binding to an interface that is down succeeds and leaves ENETDOWN
        // pending on the socket; take it as a failed open.
        let pending = socket.get_socket_option_int(libc::SOL_SOCKET, libc::SO_ERROR)?;
        if pending != 0 {
            return Err(io::Error::from_raw_os_error(pending));
        }
        // `with_interest` is deprecated because a type could hand the
        // reactor a descriptor it later closes or swaps; this socket owns its
        // descriptor for its whole life, and `unsafe` (the replacement) is
        // forbidden in this crate. socketcan's tokio socket does the same.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(socket, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Bus { fd, role })
    }

    /// The next frame for this side: its node address and data. Frames of
    /// other identifiers (possible between bind and filter) are skipped.
    /// Cancel-safe: no frame is taken before the read itself.
    async fn read(&self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            let mut guard = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            let frame = match guard.try_io(|s| s.get_ref().read_frame()) {
                Ok(result) => result?,
                Err(_would_block) => continue,
            };
            let CanFrame::Data(data) = frame else {
                continue;
            };
            let Id::Extended(id) = data.id() else {
                continue;
            };
            if let Some(nn) = self.role.node_of(id.as_raw()) {
                return Ok((nn, data.data().to_vec()));
            }
        }
    }

    async fn write(&self, nn: u8, data: &CanData) -> io::Result<()> {
        let frame = ExtendedId::new(self.role.tx_id(nn))
            .and_then(|id| CanFrame::new(id, data))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid CAN frame"))?;
        let mut full = 0;
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().write_frame(&frame)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // A full transmit queue is not signalled by writability;
                    // give the controller a moment to drain it.
                    full += 1;
                    if full > MAX_FULL_QUEUE_RETRIES {
                        return Err(e);
                    }
                    drop(guard);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// What the [`Mux`] asks its driver to do or report.
#[derive(Debug, PartialEq, Eq)]
enum MuxEvent {
    /// Send this frame to (or as) node `nn`.
    Frame { nn: u8, data: CanData },
    /// A complete body from node `nn`.
    Message { nn: u8, body: Vec<u8> },
    /// A frame or reception from node `nn` was dropped.
    RxError { nn: u8, error: IsoTpError },
    /// A body was handed over to node `nn`.
    Sent { nn: u8 },
    /// A body for node `nn` was abandoned; `bulk` for a bulk send, such as
    /// a broadcast copy, where most addresses have nobody to answer.
    TxError {
        nn: u8,
        error: IsoTpError,
        bulk: bool,
    },
}

struct Queued {
    body: Vec<u8>,
    /// Paced by [`MAX_BULK_IN_FLIGHT`]; its failure is expected, not counted.
    bulk: bool,
}

struct Sending {
    segmenter: Segmenter,
    bulk: bool,
}

struct Node {
    rx: Reassembler,
    tx: Option<Sending>,
    queue: VecDeque<Queued>,
}

/// An ISO-TP receiver and sender for every node address on one bus. Pure:
/// frames in, [`MuxEvent`]s out, time in ms as an argument.
struct Mux {
    nodes: Vec<Node>,
    rx_config: ReceiverConfig,
    tx_config: SenderConfig,
    receiving: bool,
    bulk_in_flight: usize,
}

impl Mux {
    fn new(rx_config: ReceiverConfig, tx_config: SenderConfig) -> Self {
        let nodes = (0..=u8::MAX)
            .map(|_| Node {
                rx: Reassembler::new(rx_config),
                tx: None,
                queue: VecDeque::new(),
            })
            .collect();
        Mux {
            nodes,
            rx_config,
            tx_config,
            receiving: true,
            bulk_in_flight: 0,
        }
    }

    /// Queues a body for node `nn`, behind that node's earlier ones.
    /// Returns false when the node's queue is full.
    fn enqueue(&mut self, nn: u8, body: Vec<u8>, bulk: bool) -> bool {
        let node = &mut self.nodes[usize::from(nn)];
        if node.queue.len() >= QUEUE_PER_NODE {
            return false;
        }
        node.queue.push_back(Queued { body, bulk });
        true
    }

    /// From now on only Flow Control is handled: for shutdown, which
    /// finishes sends but takes no new messages.
    fn stop_receiving(&mut self) {
        self.receiving = false;
        // Messages half received are abandoned unreported: nobody would
        // ACK them now, and the dongle sends them again to the next run.
        for node in &mut self.nodes {
            node.rx = Reassembler::new(self.rx_config);
        }
    }

    /// After the socket failed: whatever was mid-transfer is lost (the
    /// dongle retransmits), queued bodies wait for the reopened socket.
    fn reset(&mut self) {
        for node in &mut self.nodes {
            node.rx = Reassembler::new(self.rx_config);
            node.tx = None;
        }
        self.bulk_in_flight = 0;
    }

    /// True when no body is being sent or waiting to be.
    fn is_idle(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.tx.is_none() && n.queue.is_empty())
    }

    /// Handles one frame from node `nn`, received at `now_ms`.
    fn on_frame(&mut self, nn: u8, data: &[u8], now_ms: u64, out: &mut Vec<MuxEvent>) {
        let node = &mut self.nodes[usize::from(nn)];
        if let Ok(Pdu::FlowControl(fc)) = Pdu::parse(data) {
            // A Flow Control answers our send to this node; one that comes
            // when no send waits for it is ignored (ISO 15765-2).
            if let Some(sending) = node.tx.as_mut() {
                if let Err(error) = sending.segmenter.on_flow_control(fc, now_ms) {
                    let bulk = end_send(node, &mut self.bulk_in_flight);
                    out.push(MuxEvent::TxError { nn, error, bulk });
                }
            }
            return;
        }
        if !self.receiving {
            return;
        }
        let got = node.rx.on_frame(data, now_ms);
        out.extend(
            got.errors
                .into_iter()
                .map(|error| MuxEvent::RxError { nn, error }),
        );
        if let Some(data) = got.flow_control {
            out.push(MuxEvent::Frame { nn, data });
        }
        if let Some(body) = got.message {
            out.push(MuxEvent::Message { nn, body });
        }
    }

    /// Runs every timer and send that is due at `now_ms`. Returns when it
    /// next needs to run (`now_ms` again if it stopped at its frame budget).
    fn poll(&mut self, now_ms: u64, out: &mut Vec<MuxEvent>) -> Option<u64> {
        let tx_config = self.tx_config;
        let bulk_in_flight = &mut self.bulk_in_flight;
        let mut next: Option<u64> = None;
        let mut budget = FRAMES_PER_POLL;
        let mut bulk_waiting = false;
        for (nn, node) in (0..=u8::MAX).zip(self.nodes.iter_mut()) {
            if let Some(error) = node.rx.poll(now_ms) {
                out.push(MuxEvent::RxError { nn, error });
            }
            if let Some(deadline) = node.rx.deadline() {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
            loop {
                if node.tx.is_none() {
                    let Some(front) = node.queue.front() else {
                        break;
                    };
                    if front.bulk && *bulk_in_flight >= MAX_BULK_IN_FLIGHT {
                        bulk_waiting = true;
                        break;
                    }
                    let Some(queued) = node.queue.pop_front() else {
                        break;
                    };
                    match Segmenter::new(queued.body, tx_config) {
                        Ok(segmenter) => {
                            *bulk_in_flight += usize::from(queued.bulk);
                            node.tx = Some(Sending {
                                segmenter,
                                bulk: queued.bulk,
                            });
                        }
                        Err(error) => {
                            out.push(MuxEvent::TxError {
                                nn,
                                error,
                                bulk: queued.bulk,
                            });
                            continue;
                        }
                    }
                }
                let Some(sending) = node.tx.as_mut() else {
                    break;
                };
                if budget == 0 {
                    next = Some(now_ms);
                    break;
                }
                match sending.segmenter.poll(now_ms) {
                    Ok(TxStep::Send(data)) => {
                        budget -= 1;
                        out.push(MuxEvent::Frame { nn, data });
                    }
                    Ok(TxStep::Wait { until_ms }) => {
                        next = Some(next.map_or(until_ms, |n| n.min(until_ms)));
                        break;
                    }
                    Ok(TxStep::Done) => {
                        end_send(node, bulk_in_flight);
                        out.push(MuxEvent::Sent { nn });
                    }
                    Err(error) => {
                        let bulk = end_send(node, bulk_in_flight);
                        out.push(MuxEvent::TxError { nn, error, bulk });
                    }
                }
            }
        }
        // A slot freed after a waiting node was passed over: come back now.
        if bulk_waiting && *bulk_in_flight < MAX_BULK_IN_FLIGHT {
            next = Some(now_ms);
        }
        next
    }
}

/// Ends the node's send, freeing its bulk slot; returns whether it was bulk.
fn end_send(node: &mut Node, bulk_in_flight: &mut usize) -> bool {
    let bulk = node.tx.take().is_some_and(|s| s.bulk);
    if bulk {
        *bulk_in_flight -= 1;
    }
    bulk
}

/// Milliseconds on a monotonic clock for the ISO-TP timers: the appliance's
/// wall clock may be stepped by NTP or faked by a test, protocol timeouts
/// must not be.
#[derive(Clone, Copy)]
struct Ticks(Instant);

impl Ticks {
    fn now_ms(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

/// Why a serving session ended.
enum Ended {
    /// Shutdown was requested and handled.
    Shutdown,
    /// The socket failed; reopen it.
    Failed(io::Error),
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Self {
        Ended::Failed(e)
    }
}

/// The appliance's CAN link task (contract in `link::mod`): receives bodies
/// from every node on `settings.interface`, hands them to ingest, and sends
/// ingest's answers; reopens the interface with backoff when it is missing or
/// goes down. Returns after shutdown, once what was queued is sent (at most
/// about two seconds).
pub async fn run(settings: &CanSettings, ctx: LinkContext) {
    let LinkContext {
        id,
        events,
        status,
        outbound,
        outbound_tx,
        clock,
        shutdown,
    } = ctx;
    let rx_config = ReceiverConfig {
        block_size: settings.block_size,
        st_min_ms: settings.st_min_ms,
        max_len: frame::MAX_BODY,
        ..ReceiverConfig::default()
    };
    let mut link = ApplianceLink {
        id,
        events,
        status,
        outbound,
        replies: Some(outbound_tx),
        clock,
        shutdown,
        mux: Mux::new(rx_config, SenderConfig::default()),
        ticks: Ticks(Instant::now()),
        out: Vec::new(),
    };
    link.run(&settings.interface).await;
}

struct ApplianceLink {
    id: super::LinkId,
    events: mpsc::Sender<LinkEvent>,
    status: std::sync::Arc<LinkStatus>,
    outbound: mpsc::Receiver<Outbound>,
    /// Cloned into every [`Replier`]; dropped at shutdown so that the
    /// outbound channel can close.
    replies: Option<mpsc::Sender<Outbound>>,
    clock: crate::clock::SharedClock,
    shutdown: Shutdown,
    mux: Mux,
    ticks: Ticks,
    out: Vec<MuxEvent>,
}

impl ApplianceLink {
    async fn run(&mut self, interface: &str) {
        let mut backoff = Backoff::default();
        let mut opened_before = false;
        while !self.shutdown.is_fired() {
            self.status.set_state(LinkState::Connecting);
            let error = match Bus::open(interface, Role::Appliance) {
                Ok(bus) => {
                    if opened_before {
                        self.status.reopens.fetch_add(1, Ordering::Relaxed);
                    }
                    opened_before = true;
                    backoff.reset();
                    self.status.set_state(LinkState::Up);
                    tracing::info!(interface, "CAN link up");
                    match self.serve(&bus).await {
                        Ended::Shutdown => break,
                        Ended::Failed(e) => e,
                    }
                }
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            tracing::warn!(interface, %error, retry_in = ?delay, "CAN link down");
            self.status.set_state(LinkState::Down {
                error: error.to_string(),
            });
            self.mux.reset();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.fired() => {}
            }
        }
        self.status.set_state(LinkState::Stopped);
    }

    async fn serve(&mut self, bus: &Bus) -> Ended {
        loop {
            let next = self.mux.poll(self.ticks.now_ms(), &mut self.out);
            if let Err(e) = self.dispatch(bus).await {
                return e.into();
            }
            let wake = self.ticks.instant(next.unwrap_or(0));
            tokio::select! {
                read = bus.read() => match read {
                    Ok((nn, data)) => self.on_frame(nn, &data).await,
                    Err(e) => return e.into(),
                },
                Some(outbound) = self.outbound.recv() => self.enqueue(outbound),
                _ = tokio::time::sleep_until(wake), if next.is_some() => {}
                _ = self.shutdown.fired() => return self.drain(bus).await,
            }
        }
    }

    async fn on_frame(&mut self, nn: u8, data: &[u8]) {
        self.status
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if !is_node_address(nn) {
            // 0xF1 is ours, 0xFE-0xFF are not node addresses: count each
            // message such a sender starts, not each of its frames.
            if matches!(Pdu::parse(data), Ok(Pdu::Single(_) | Pdu::First { .. })) {
                self.reject(RejectReason("can_address")).await;
            }
            return;
        }
        self.mux
            .on_frame(nn, data, self.ticks.now_ms(), &mut self.out);
    }

    /// Seals an outbound payload and queues it for its node, or for every
    /// node when it is a broadcast.
    fn enqueue(&mut self, outbound: Outbound) {
        let mut body = Vec::with_capacity(outbound.payload.len() + 4);
        frame::seal(&outbound.payload, &mut body);
        let broadcast = outbound.addr == BROADCAST_ADDR
            || Header::parse(&outbound.payload).is_some_and(|h| h.device_id == BROADCAST);
        if broadcast {
            // ISO-TP functional addressing carries Single Frames only and
            // every body is multi-frame, so a broadcast is one physical send
            // per address; addresses nobody answers time out quietly.
            for nn in node_addresses() {
                self.mux.enqueue(nn, body.clone(), true);
            }
        } else if !is_node_address(outbound.addr) {
            tracing::warn!(
                addr = outbound.addr,
                "CAN: no node has this address; payload dropped"
            );
            self.status.count_rejected(RejectReason("send_address"));
        } else if !self.mux.enqueue(outbound.addr, body, false) {
            tracing::warn!(nn = outbound.addr, "CAN: send queue full; payload dropped");
            self.status.count_rejected(RejectReason("send_queue_full"));
        }
    }

    /// Carries out what the mux asked for, in order.
    async fn dispatch(&mut self, bus: &Bus) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        for event in out.drain(..) {
            match event {
                MuxEvent::Frame { nn, data } => {
                    bus.write(nn, &data).await?;
                    self.status
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                MuxEvent::Message { nn, body } => self.deliver(nn, &body).await,
                MuxEvent::RxError { nn, error } => {
                    tracing::debug!(nn, %error, "CAN: frame dropped");
                    self.reject(RejectReason(error.reason())).await;
                }
                MuxEvent::Sent { .. } => {
                    self.status.sent.fetch_add(1, Ordering::Relaxed);
                }
                MuxEvent::TxError { nn, error, bulk } => {
                    if bulk {
                        tracing::trace!(nn, %error, "CAN: broadcast copy not taken");
                    } else {
                        // Counted with the link's other drops; not a frame
                        // that came in, so ingest is not told.
                        tracing::warn!(nn, %error, "CAN: send abandoned");
                        self.status.count_rejected(RejectReason(error.reason()));
                    }
                }
            }
        }
        // Keep the allocation for the next round.
        self.out = out;
        Ok(())
    }

    async fn deliver(&mut self, nn: u8, body: &[u8]) {
        let event = match frame::open(body) {
            Ok(payload) => {
                // No repliers once shutdown began; nor messages, by then.
                let Some(tx) = self.replies.clone() else {
                    return;
                };
                self.status.payloads.fetch_add(1, Ordering::Relaxed);
                let reply = Replier { tx, addr: nn };
                LinkEvent::Payload {
                    link: self.id,
                    payload: payload.to_vec(),
                    received_ms: self.clock.now_ms(),
                    reply,
                }
            }
            Err(e) => {
                self.status.count_rejected(e.into());
                LinkEvent::Rejected {
                    link: self.id,
                    reason: e.into(),
                }
            }
        };
        self.send_event(event).await;
    }

    async fn reject(&mut self, reason: RejectReason) {
        self.status.count_rejected(reason);
        self.send_event(LinkEvent::Rejected {
            link: self.id,
            reason,
        })
        .await;
    }

    /// Waits for room in ingest's channel: ingest never waits on a link,
    /// so this cannot deadlock, and while it waits frames queue in the
    /// socket. Gives up at shutdown.
    async fn send_event(&mut self, event: LinkEvent) {
        tokio::select! {
            sent = self.events.send(event) => {
                if sent.is_err() {
                    tracing::debug!("CAN: ingest has stopped; event dropped");
                }
            }
            _ = self.shutdown.fired() => {}
        }
    }

    /// Shutdown: no new messages are taken; what is queued for the dongles
    /// (and what ingest still sends while that goes out) is sent, for at
    /// most [`SHUTDOWN_DRAIN`].
    async fn drain(&mut self, bus: &Bus) -> Ended {
        self.mux.stop_receiving();
        self.replies = None;
        let give_up = Instant::now() + SHUTDOWN_DRAIN;
        let mut open = true;
        loop {
            while let Ok(outbound) = self.outbound.try_recv() {
                self.enqueue(outbound);
            }
            let next = self.mux.poll(self.ticks.now_ms(), &mut self.out);
            if let Err(e) = self.dispatch(bus).await {
                tracing::warn!(%e, "CAN: shutdown could not send everything");
                return Ended::Shutdown;
            }
            if self.mux.is_idle() {
                return Ended::Shutdown;
            }
            let wake = next.map_or(give_up, |ms| self.ticks.instant(ms).min(give_up));
            tokio::select! {
                read = bus.read() => match read {
                    Ok((nn, data)) if is_node_address(nn) => {
                        self.mux.on_frame(nn, &data, self.ticks.now_ms(), &mut self.out);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%e, "CAN: shutdown could not send everything");
                        return Ended::Shutdown;
                    }
                },
                outbound = self.outbound.recv(), if open => match outbound {
                    Some(outbound) => self.enqueue(outbound),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= give_up {
                tracing::warn!("CAN: shutdown left bodies unsent after {SHUTDOWN_DRAIN:?}");
                return Ended::Shutdown;
            }
        }
    }
}

/// The dongle side of `interface`, for any number of simulated dongles on
/// one socket (the lot simulator and the tests).
///
/// A body sent as `(nn, body)` goes to the appliance from node `nn` on
/// `0x18DAF1nn`, after the appliance's Flow Control; bodies the appliance
/// sends to `0x18DAnnF1` arrive as `(nn, body)`, every node address answering
/// Flow Control (so a broadcast arrives once per address: ignore the
/// addresses you do not simulate). Bodies are sealed bytes (payload and CRC);
/// nothing is sealed or checked here. Bodies to one node go in order.
///
/// Like radio, it loses rather than blocks: a body that finds its node's
/// queue or the receiving channel full is dropped (and logged), and the
/// dongles' retransmission recovers it. The socket is reopened with backoff
/// if the interface goes down. The task ends at shutdown, or once both
/// returned channel ends are dropped. Only the first open is reported.
pub async fn dongle_bus(
    interface: &str,
    shutdown: Shutdown,
) -> io::Result<(mpsc::Sender<(u8, Vec<u8>)>, mpsc::Receiver<(u8, Vec<u8>)>)> {
    let bus = Bus::open(interface, Role::Dongles)?;
    let (to_bus, from_sim) = mpsc::channel(DONGLE_CHANNEL);
    let (to_sim, from_bus) = mpsc::channel(DONGLE_CHANNEL);
    let rx_config = ReceiverConfig {
        max_len: frame::MAX_BODY,
        ..ReceiverConfig::default()
    };
    let mut dongles = Dongles {
        interface: interface.to_owned(),
        from_sim,
        to_sim,
        shutdown,
        mux: Mux::new(rx_config, SenderConfig::default()),
        ticks: Ticks(Instant::now()),
        out: Vec::new(),
    };
    tokio::spawn(async move { dongles.run(bus).await });
    Ok((to_bus, from_bus))
}

struct Dongles {
    interface: String,
    from_sim: mpsc::Receiver<(u8, Vec<u8>)>,
    to_sim: mpsc::Sender<(u8, Vec<u8>)>,
    shutdown: Shutdown,
    mux: Mux,
    ticks: Ticks,
    out: Vec<MuxEvent>,
}

impl Dongles {
    async fn run(&mut self, mut bus: Bus) {
        let mut backoff = Backoff::default();
        loop {
            let error = match self.serve(&bus).await {
                Ended::Shutdown => return,
                Ended::Failed(e) => e,
            };
            self.mux.reset();
            loop {
                let delay = backoff.next_delay();
                tracing::warn!(interface = %self.interface, %error, retry_in = ?delay, "dongle bus down");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.shutdown.fired() => return,
                }
                match Bus::open(&self.interface, Role::Dongles) {
                    Ok(reopened) => {
                        bus = reopened;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(%e, "dongle bus still down"),
                }
            }
        }
    }

    async fn serve(&mut self, bus: &Bus) -> Ended {
        let mut sim_sending = true;
        loop {
            let next = self.mux.poll(self.ticks.now_ms(), &mut self.out);
            for event in self.out.drain(..) {
                match event {
                    MuxEvent::Frame { nn, data } => {
                        if let Err(e) = bus.write(nn, &data).await {
                            return e.into();
                        }
                    }
                    MuxEvent::Message { nn, body } => {
                        if self.to_sim.try_send((nn, body)).is_err() && !self.to_sim.is_closed() {
                            tracing::warn!(nn, "dongle bus: receiver full; body dropped");
                        }
                    }
                    MuxEvent::RxError { nn, error } => {
                        tracing::debug!(nn, %error, "dongle bus: frame dropped")
                    }
                    MuxEvent::TxError { nn, error, .. } => {
                        tracing::debug!(nn, %error, "dongle bus: send abandoned")
                    }
                    MuxEvent::Sent { .. } => {}
                }
            }
            if !sim_sending && self.to_sim.is_closed() && self.mux.is_idle() {
                return Ended::Shutdown;
            }
            let wake = self.ticks.instant(next.unwrap_or(0));
            tokio::select! {
                read = bus.read() => match read {
                    Ok((nn, data)) => self.mux.on_frame(nn, &data, self.ticks.now_ms(), &mut self.out),
                    Err(e) => return e.into(),
                },
                item = self.from_sim.recv(), if sim_sending => match item {
                    Some((nn, body)) if is_node_address(nn) => {
                        // Paced like a gateway relaying many units, so a
                        // whole lot starting at once does not flood the bus.
                        if !self.mux.enqueue(nn, body, true) {
                            tracing::warn!(nn, "dongle bus: node queue full; body dropped");
                        }
                    }
                    Some((nn, _)) => tracing::warn!(nn, "dongle bus: not a node address; body dropped"),
                    None => sim_sending = false,
                },
                _ = self.to_sim.closed(), if !sim_sending && !self.to_sim.is_closed() => {}
                _ = tokio::time::sleep_until(wake), if next.is_some() => {}
                _ = self.shutdown.fired() => return Ended::Shutdown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_normal_fixed_addressing() {
        // PROTOCOL.md 1: dongle to appliance 0x18DAF1nn, appliance to dongle 0x18DAnnF1.
        assert_eq!(uplink_id(0x05), 0x18DA_F105);
        assert_eq!(downlink_id(0x05), 0x18DA_05F1);
        assert_eq!(Role::Appliance.node_of(0x18DA_F17A), Some(0x7A));
        assert_eq!(Role::Appliance.node_of(0x18DA_7AF1), None);
        assert_eq!(Role::Dongles.node_of(0x18DA_7AF1), Some(0x7A));
        assert_eq!(Role::Dongles.node_of(0x18DB_7AF1), None);
        assert_eq!(Role::Appliance.tx_id(0x7A), 0x18DA_7AF1);
        assert_eq!(Role::Dongles.tx_id(0x7A), 0x18DA_F17A);
    }

    #[test]
    fn node_addresses_are_0_to_fd_except_the_appliance() {
        // PROTOCOL.md 1: nn is 0x00-0xFD, never 0xF1.
        assert!(is_node_address(0x00) && is_node_address(0xFD) && is_node_address(0xF0));
        assert!(!is_node_address(0xF1) && !is_node_address(0xFE) && !is_node_address(0xFF));
        assert_eq!(node_addresses().count(), 253);
    }

    #[test]
    fn kernel_filters_select_29_bit_data_frames_of_our_direction() {
        let f = Role::Appliance.filter();
        let f: &libc::can_filter = f.as_ref();
        assert_eq!(f.can_id, 0x18DA_F100 | libc::CAN_EFF_FLAG);
        assert_eq!(
            f.can_mask,
            0x1FFF_FF00 | libc::CAN_EFF_FLAG | libc::CAN_RTR_FLAG
        );
        let f = Role::Dongles.filter();
        let f: &libc::can_filter = f.as_ref();
        assert_eq!(f.can_id, 0x18DA_00F1 | libc::CAN_EFF_FLAG);
        assert_eq!(
            f.can_mask,
            0x1FFF_00FF | libc::CAN_EFF_FLAG | libc::CAN_RTR_FLAG
        );
    }

    fn appliance_mux() -> Mux {
        Mux::new(
            ReceiverConfig {
                max_len: 1028,
                ..Default::default()
            },
            SenderConfig::default(),
        )
    }

    /// Two muxes on one simulated bus: frames one emits for node `nn` reach
    /// the other as coming from node `nn`, until nothing moves at `now_ms`.
    /// Returns the other events each side reported.
    fn exchange(a: &mut Mux, b: &mut Mux, now_ms: u64) -> (Vec<MuxEvent>, Vec<MuxEvent>) {
        exchange_with(a, b, now_ms, Vec::new(), &[])
    }

    /// [`exchange`], starting from events `a` already emitted, on a bus
    /// where the `absent` nodes hear nothing.
    fn exchange_with(
        a: &mut Mux,
        b: &mut Mux,
        now_ms: u64,
        mut a_out: Vec<MuxEvent>,
        absent: &[u8],
    ) -> (Vec<MuxEvent>, Vec<MuxEvent>) {
        let (mut a_seen, mut b_seen, mut b_out) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            if a_out.is_empty() && b_out.is_empty() {
                a.poll(now_ms, &mut a_out);
                b.poll(now_ms, &mut b_out);
                if a_out.is_empty() && b_out.is_empty() {
                    return (a_seen, b_seen);
                }
            }
            for event in a_out.drain(..) {
                match event {
                    MuxEvent::Frame { nn, .. } if absent.contains(&nn) => {}
                    MuxEvent::Frame { nn, data } => b.on_frame(nn, &data, now_ms, &mut b_out),
                    other => a_seen.push(other),
                }
            }
            for event in b_out.drain(..) {
                match event {
                    MuxEvent::Frame { nn, data } => a.on_frame(nn, &data, now_ms, &mut a_out),
                    other => b_seen.push(other),
                }
            }
        }
    }

    fn messages(events: &[MuxEvent]) -> Vec<(u8, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                MuxEvent::Message { nn, body } => Some((*nn, body.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn many_nodes_send_at_once_and_each_node_keeps_its_order() {
        let (mut appliance, mut dongles) = (appliance_mux(), appliance_mux());
        for round in 0..3u8 {
            for nn in [0x00, 0x10, 0xFD] {
                assert!(dongles.enqueue(
                    nn,
                    vec![nn ^ round; 40 + usize::from(round) * 400],
                    false
                ));
            }
        }
        let (got, sent) = exchange(&mut appliance, &mut dongles, 0);
        let got = messages(&got);
        assert_eq!(got.len(), 9);
        for nn in [0x00, 0x10, 0xFD] {
            let mine: Vec<&Vec<u8>> = got.iter().filter(|m| m.0 == nn).map(|m| &m.1).collect();
            let expected: Vec<Vec<u8>> = (0..3u8)
                .map(|r| vec![nn ^ r; 40 + usize::from(r) * 400])
                .collect();
            assert_eq!(
                mine,
                expected.iter().collect::<Vec<_>>(),
                "node {nn:#x} in order"
            );
        }
        assert_eq!(
            sent.iter()
                .filter(|e| matches!(e, MuxEvent::Sent { .. }))
                .count(),
            9
        );
    }

    #[test]
    fn a_node_that_never_answers_does_not_hold_up_another() {
        let (mut appliance, mut dongles) = (appliance_mux(), appliance_mux());
        appliance.enqueue(0x01, vec![1; 100], false);
        appliance.enqueue(0x02, vec![2; 100], false);
        let (seen, got) = exchange_with(&mut appliance, &mut dongles, 0, Vec::new(), &[0x01]);
        assert_eq!(messages(&got), vec![(0x02, vec![2; 100])]);
        assert_eq!(seen, vec![MuxEvent::Sent { nn: 0x02 }]);
        // PROTOCOL.md 1: node 1's send is abandoned at 1,000 ms, not before.
        let mut out = Vec::new();
        assert_eq!(appliance.poll(999, &mut out), Some(1000));
        assert!(out.is_empty());
        appliance.poll(1000, &mut out);
        let timeout = IsoTpError::FlowControlTimeout(1000);
        assert_eq!(
            out,
            vec![MuxEvent::TxError {
                nn: 0x01,
                error: timeout,
                bulk: false
            }]
        );
    }

    #[test]
    fn flow_control_and_reception_of_one_node_are_independent() {
        // Full duplex per node: the appliance answers node 5 while node 5
        // is sending it something else.
        let (mut appliance, mut dongles) = (appliance_mux(), appliance_mux());
        appliance.enqueue(0x05, vec![0xAA; 300], false);
        dongles.enqueue(0x05, vec![0xBB; 300], false);
        let (to_appliance, to_dongle) = exchange(&mut appliance, &mut dongles, 0);
        assert_eq!(messages(&to_appliance), vec![(0x05, vec![0xBB; 300])]);
        assert_eq!(messages(&to_dongle), vec![(0x05, vec![0xAA; 300])]);
    }

    #[test]
    fn queue_per_node_is_bounded() {
        let mut mux = appliance_mux();
        for _ in 0..QUEUE_PER_NODE {
            assert!(mux.enqueue(3, vec![0; 30], false));
        }
        assert!(!mux.enqueue(3, vec![0; 30], false));
        assert!(mux.enqueue(4, vec![0; 30], false), "other nodes unaffected");
    }

    #[test]
    fn bulk_sends_are_paced_and_unicast_ones_are_not() {
        let mut mux = appliance_mux();
        for nn in 0..0x40 {
            assert!(mux.enqueue(nn, vec![nn; 24], true));
        }
        assert!(mux.enqueue(0xF5, vec![0xEE; 24], false));
        let first_frames = |out: &[MuxEvent]| {
            out.iter()
                .filter(|e| matches!(e, MuxEvent::Frame { data, .. } if data[0] == 0x10))
                .count()
        };
        let mut out = Vec::new();
        assert_eq!(mux.poll(0, &mut out), Some(1000));
        assert_eq!(
            first_frames(&out),
            MAX_BULK_IN_FLIGHT + 1,
            "32 bulk and the unicast one"
        );
        // Nobody answers; at 1,000 ms those sends are abandoned (the bulk
        // ones quietly) and the next 32 bulk copies go.
        out.clear();
        mux.poll(1000, &mut out);
        let abandoned = |bulk: bool| {
            out.iter()
                .filter(|e| matches!(e, MuxEvent::TxError { bulk: b, .. } if *b == bulk))
                .count()
        };
        assert_eq!((abandoned(true), abandoned(false)), (MAX_BULK_IN_FLIGHT, 1));
        assert_eq!(first_frames(&out), MAX_BULK_IN_FLIGHT);
        // This time the nodes answer.
        let mut dongles = appliance_mux();
        let (_, got) = exchange_with(&mut mux, &mut dongles, 1000, out, &[]);
        assert_eq!(messages(&got).len(), 0x40 - MAX_BULK_IN_FLIGHT);
        assert!(mux.is_idle());
    }

    #[test]
    fn frames_go_out_in_bounded_bursts() {
        let mut mux = appliance_mux();
        let mut dongles = appliance_mux();
        mux.enqueue(9, vec![7; 1028], false);
        let mut out = Vec::new();
        mux.poll(0, &mut out);
        let Some(MuxEvent::Frame { data: ff, .. }) = out.pop() else {
            panic!("first frame")
        };
        dongles.on_frame(9, &ff, 0, &mut out);
        let Some(MuxEvent::Frame { data: fc, .. }) = out.pop() else {
            panic!("flow control")
        };
        mux.on_frame(9, &fc, 0, &mut out);
        assert_eq!(mux.poll(0, &mut out), Some(0), "more to send at once");
        assert_eq!(out.len(), FRAMES_PER_POLL);
    }

    #[test]
    fn reset_loses_transfers_in_flight_but_keeps_the_queue() {
        let mut mux = appliance_mux();
        mux.enqueue(1, vec![1; 50], false);
        mux.enqueue(1, vec![2; 50], false);
        let mut out = Vec::new();
        mux.poll(0, &mut out);
        mux.on_frame(2, &[0x10, 50, 0, 0, 0, 0, 0, 0], 0, &mut out);
        mux.reset();
        assert!(!mux.is_idle());
        out.clear();
        mux.poll(5, &mut out);
        // The second body starts afresh: its First Frame carries 2s.
        assert_eq!(
            out,
            vec![MuxEvent::Frame {
                nn: 1,
                data: [0x10, 50, 2, 2, 2, 2, 2, 2]
            }]
        );
        // Node 2's reception is gone: nothing times out for it.
        out.clear();
        mux.poll(5_000, &mut out);
        assert!(out.iter().all(|e| !matches!(e, MuxEvent::RxError { .. })));
    }

    #[test]
    fn after_stop_receiving_only_flow_control_is_handled() {
        let (mut appliance, mut dongles) = (appliance_mux(), appliance_mux());
        appliance.enqueue(8, vec![8; 64], false);
        dongles.enqueue(8, vec![9; 64], false);
        appliance.stop_receiving();
        let (to_appliance, to_dongle) = exchange(&mut appliance, &mut dongles, 0);
        assert_eq!(messages(&to_dongle), vec![(8, vec![8; 64])]);
        assert!(messages(&to_appliance).is_empty());
        assert!(appliance.is_idle());
    }

    #[test]
    fn unsendable_body_is_reported_and_the_queue_moves_on() {
        let mut mux = appliance_mux();
        mux.enqueue(1, vec![0; 5000], false);
        mux.enqueue(1, vec![1, 2], false);
        let mut out = Vec::new();
        mux.poll(0, &mut out);
        assert_eq!(
            out,
            vec![
                MuxEvent::TxError {
                    nn: 1,
                    error: IsoTpError::SendLength(5000),
                    bulk: false
                },
                MuxEvent::Frame {
                    nn: 1,
                    data: [0x02, 1, 2, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]
                },
                MuxEvent::Sent { nn: 1 },
            ]
        );
    }
}
