//! Links: bytes to payloads and back, per PROTOCOL.md. Knows nothing of leads.
//!
//! Every link (a serial port or a CAN interface) runs as its own task. It
//! hands checked payloads and counted rejections to ingest through one
//! bounded channel of [`LinkEvent`]s, and writes whatever ingest sends back
//! through its [`Outbound`] channel. A link that fails is reopened with
//! backoff; the others keep working. Its state and counters live in a shared
//! [`LinkStatus`] that `/healthz`, the status page and the control socket read.

pub mod can;
pub mod frame;
pub mod isotp;
pub mod message;
pub mod serial;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::shutdown::Shutdown;

/// Index of a link in the configuration (serial links first, then CAN).
pub type LinkId = u16;

/// A stable, machine-readable reason for dropping a frame or payload
/// (`cobs`, `crc`, `isotp_sequence`, ...), used as a counter name suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RejectReason(pub &'static str);

impl From<frame::FrameError> for RejectReason {
    fn from(e: frame::FrameError) -> Self {
        RejectReason(e.as_str())
    }
}

/// What a link hands to ingest.
#[derive(Debug)]
pub enum LinkEvent {
    /// A payload whose CRC checked out (CRC stripped).
    Payload {
        link: LinkId,
        payload: Vec<u8>,
        /// Appliance clock when the last byte arrived.
        received_ms: u64,
        /// Where answers about this payload go.
        reply: Replier,
    },
    /// A frame dropped before its header could be trusted (not ACKed).
    Rejected { link: LinkId, reason: RejectReason },
}

/// A payload the appliance sends (without CRC: the link seals and frames it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// Link-level address of the unit: the CAN node address `nn`; unused
    /// (0) on serial, where every unit shares the line.
    pub addr: u8,
    pub payload: Vec<u8>,
}

/// The way back to the unit that sent a payload.
#[derive(Clone, Debug)]
pub struct Replier {
    pub tx: mpsc::Sender<Outbound>,
    pub addr: u8,
}

impl Replier {
    /// Queues a payload for the unit. A full or closed queue drops it: the
    /// dongle retransmits whatever was not ACKed, so nothing is lost.
    pub fn send(&self, payload: Vec<u8>) -> bool {
        self.tx
            .try_send(Outbound {
                addr: self.addr,
                payload,
            })
            .is_ok()
    }
}

/// Where a link is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Up,
    /// Failed; reopened after a backoff.
    Down {
        error: String,
    },
    Stopped,
}

/// Live state and counters of one link, shared with the web and control
/// socket. Counters here are since the process started; the durable totals
/// are ingest's.
#[derive(Debug)]
pub struct LinkStatus {
    pub name: String,
    /// "serial" or "can".
    pub transport: &'static str,
    state: Mutex<LinkState>,
    pub payloads: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub sent: AtomicU64,
    pub reopens: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// A snapshot of [`LinkStatus`] for display.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkReport {
    pub name: String,
    pub transport: &'static str,
    pub state: String,
    pub up: bool,
    pub payloads: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sent: u64,
    pub reopens: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

impl LinkStatus {
    pub fn new(name: impl Into<String>, transport: &'static str) -> Arc<Self> {
        Arc::new(LinkStatus {
            name: name.into(),
            transport,
            state: Mutex::new(LinkState::Connecting),
            payloads: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn set_state(&self, state: LinkState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn state(&self) -> LinkState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn count_rejected(&self, reason: RejectReason) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.0)
            .or_default() += 1;
    }

    pub fn report(&self) -> LinkReport {
        let state = self.state();
        LinkReport {
            name: self.name.clone(),
            transport: self.transport,
            up: state == LinkState::Up,
            state: match state {
                LinkState::Connecting => "connecting".into(),
                LinkState::Up => "up".into(),
                LinkState::Down { error } => format!("down: {error}"),
                LinkState::Stopped => "stopped".into(),
            },
            payloads: self.payloads.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Everything a link task needs; built by the appliance for each link.
pub struct LinkContext {
    pub id: LinkId,
    pub events: mpsc::Sender<LinkEvent>,
    pub status: Arc<LinkStatus>,
    /// Payloads to send, from ingest and the appliance.
    pub outbound: mpsc::Receiver<Outbound>,
    /// Cloned into every [`Replier`] this link hands out.
    pub outbound_tx: mpsc::Sender<Outbound>,
    pub clock: SharedClock,
    pub shutdown: Shutdown,
}

impl LinkContext {
    /// A [`Replier`] for the unit at `addr`.
    pub fn replier(&self, addr: u8) -> Replier {
        Replier {
            tx: self.outbound_tx.clone(),
            addr,
        }
    }
}

/// Reopen delays: 0.5 s doubling to 30 s, with jitter so that links that
/// failed together do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 + jitter)
    }
}
