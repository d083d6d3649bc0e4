//! The serial transport: a UART, USB-serial adapter or lot radio gateway
//! (or a pty slave, which is how tests and the demo attach), carrying
//! COBS-framed bodies (PROTOCOL.md section 1).
//!
//! One task per port. Reading and writing run side by side on the split
//! port: bytes go through the [`Deframer`] to ingest, [`Outbound`]
//! payloads are sealed, framed and written. When the port fails (a USB
//! adapter unplugged, a pty closed) the task marks the link down and
//! reopens it with backoff; nothing is lost, because dongles retransmit
//! what was not ACKed.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;

use super::frame::{self, Deframed, Deframer};
use super::{Backoff, LinkContext, LinkEvent, LinkState, LinkStatus, Outbound, RejectReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    None,
    Hardware,
    Software,
}

/// One configured serial port (default 115200 8N1, no flow control).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    pub path: PathBuf,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl SerialSettings {
    /// 115200 8N1, no flow control, as PROTOCOL.md's default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SerialSettings {
            path: path.into(),
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }

    fn open(&self) -> io::Result<tokio_serial::SerialStream> {
        let data_bits = match self.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let stop_bits = match self.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        };
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let flow = match self.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
            FlowControl::Software => tokio_serial::FlowControl::Software,
        };
        let path = self.path.to_string_lossy();
        tokio_serial::new(path, self.baud)
            .data_bits(data_bits)
            .stop_bits(stop_bits)
            .parity(parity)
            .flow_control(flow)
            .open_native_async()
            .map_err(io::Error::from)
    }
}

/// Why one session on an open port ended.
enum SessionEnd {
    /// Shutdown was requested; queued replies have been written.
    Shutdown,
    /// The port failed; reopen it.
    Failed(io::Error),
}

/// Runs one serial link until shutdown.
pub async fn run(settings: SerialSettings, mut ctx: LinkContext) {
    let mut backoff = Backoff::default();
    let mut first = true;
    loop {
        if ctx.shutdown.is_fired() {
            break;
        }
        if !first {
            ctx.status.reopens.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        ctx.status.set_state(LinkState::Connecting);
        match settings.open() {
            Ok(port) => {
                tracing::info!(link = %ctx.status.name, "serial port open");
                ctx.status.set_state(LinkState::Up);
                backoff.reset();
                match session(port, &mut ctx).await {
                    SessionEnd::Shutdown => {
                        ctx.status.set_state(LinkState::Stopped);
                        return;
                    }
                    SessionEnd::Failed(e) => {
                        tracing::warn!(link = %ctx.status.name, error = %e, "serial port failed; reopening");
                        ctx.status.set_state(LinkState::Down {
                            error: e.to_string(),
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(link = %ctx.status.name, error = %e, "cannot open serial port; retrying");
                ctx.status.set_state(LinkState::Down {
                    error: e.to_string(),
                });
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.shutdown.fired() => break,
        }
    }
    // Shut down while the port was closed: nothing can be written.
    ctx.status.set_state(LinkState::Stopped);
}

async fn session(port: tokio_serial::SerialStream, ctx: &mut LinkContext) -> SessionEnd {
    let (mut rd, mut wr) = tokio::io::split(port);
    let mut deframer = Deframer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut wire = Vec::with_capacity(16 * 1024);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.fired() => break,
            out = ctx.outbound.recv() => {
                let Some(first) = out else { break };
                if let Err(e) = write_batch(&mut wr, first, &mut ctx.outbound, &mut wire, &ctx.status).await {
                    return SessionEnd::Failed(e);
                }
            }
            n = rd.read(&mut buf) => {
                let n = match n {
                    Ok(0) => return SessionEnd::Failed(io::Error::new(io::ErrorKind::UnexpectedEof, "port closed")),
                    Ok(n) => n,
                    Err(e) => return SessionEnd::Failed(e),
                };
                ctx.status.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                let received_ms = ctx.clock.now_ms();
                let mut found = Vec::new();
                deframer.feed(&buf[..n], |item| found.push(match item {
                    Deframed::Payload(p) => Ok(p.to_vec()),
                    Deframed::Rejected(e) => Err(RejectReason::from(e)),
                }));
                for item in found {
                    let event = match item {
                        Ok(payload) => {
                            ctx.status.payloads.fetch_add(1, Ordering::Relaxed);
                            LinkEvent::Payload { link: ctx.id, payload, received_ms, reply: ctx.replier(0) }
                        }
                        Err(reason) => {
                            ctx.status.count_rejected(reason);
                            LinkEvent::Rejected { link: ctx.id, reason }
                        }
                    };
                    // Backpressure: when ingest is behind, stop reading; the
                    // kernel and the dongles' stop-and-wait hold the rest.
                    if ctx.events.send(event).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    // Shutdown: stop reading, then write the replies ingest still sends for
    // what it commits, until every sender is gone (bounded by a deadline).
    ctx.status.set_state(LinkState::Stopped);
    let (dummy, _) = mpsc::channel(1);
    ctx.outbound_tx = dummy;
    let drain = async {
        while let Some(first) = ctx.outbound.recv().await {
            if write_batch(&mut wr, first, &mut ctx.outbound, &mut wire, &ctx.status)
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    let _ = wr.flush().await;
    SessionEnd::Shutdown
}

/// Frames `first` and whatever else is already queued into one write.
async fn write_batch<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    first: Outbound,
    queue: &mut mpsc::Receiver<Outbound>,
    wire: &mut Vec<u8>,
    status: &LinkStatus,
) -> io::Result<()> {
    wire.clear();
    frame::encode_serial(&first.payload, wire);
    let mut count = 1u64;
    while wire.len() < 64 * 1024 {
        match queue.try_recv() {
            Ok(next) => {
                frame::encode_serial(&next.payload, wire);
                count += 1;
            }
            Err(_) => break,
        }
    }
    wr.write_all(wire).await?;
    status
        .bytes_out
        .fetch_add(wire.len() as u64, Ordering::Relaxed);
    status.sent.fetch_add(count, Ordering::Relaxed);
    Ok(())
}
