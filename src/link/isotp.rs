//! ISO 15765-2 (ISO-TP) on classic CAN, as pure state machines.
//!
//! PROTOCOL.md section 1 carries each body as one ISO-TP message with normal
//! fixed addressing. Linux has ISO-TP sockets, but they need one socket per
//! (node, direction), are absent from kernels without `can-isotp`, and cannot
//! be tested without a CAN-enabled kernel; so the protocol lives here instead,
//! with no IO and no clock: time is a millisecond count passed in by the
//! caller, who owns the timers. [`Pdu::parse`] reads one frame's data,
//! [`Reassembler`] receives a message (answering First Frames with Flow
//! Control), [`Segmenter`] sends one (honouring the receiver's Flow Control).
//! Both ends of the link use them: the appliance in `link::can` and the
//! simulated dongles of `can::dongle_bus`.

use std::fmt;

/// Data bytes of a classic CAN frame; every frame we send is this long.
pub const CAN_DL: usize = 8;
/// Fills the unused bytes of a frame (PROTOCOL.md 1); receivers ignore it.
pub const PADDING: u8 = 0xCC;
/// Largest message a 12-bit First Frame length can announce.
pub const MAX_MESSAGE: usize = 4095;
/// PROTOCOL.md 1: a reassembly is abandoned after this long without the next
/// Consecutive Frame, and a send after this long without Flow Control.
pub const TIMEOUT_MS: u64 = 1_000;
/// Largest STmin a receiver may ask for, in ms (ISO 15765-2 STmin 0x7F).
pub const MAX_ST_MIN_MS: u8 = 0x7F;

/// The data of one classic CAN frame, padded to [`CAN_DL`].
pub type CanData = [u8; CAN_DL];

/// Why a frame was dropped or a message abandoned. Each has a stable
/// [`IsoTpError::reason`] for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsoTpError {
    /// A length field that is invalid or does not fit the frame.
    #[error("bad length: {0}")]
    Length(&'static str),
    /// The frame type nibble is not one of SF, FF, CF, FC.
    #[error("unknown ISO-TP frame type 0x{0:x}")]
    UnknownPci(u8),
    /// A Consecutive Frame out of order: at least one frame was lost.
    #[error("consecutive frame {got} where {expected} was due")]
    Sequence { expected: u8, got: u8 },
    /// The next Consecutive Frame did not come in time.
    #[error("no consecutive frame within {0} ms")]
    Timeout(u64),
    /// A frame that has no place in the current state of the reception.
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
    /// A First Frame announcing more than this receiver accepts.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    Overflow { len: usize, max: usize },
    /// Sending: no Flow Control came in time.
    #[error("no flow control within {0} ms")]
    FlowControlTimeout(u64),
    /// Sending: the receiver answered the First Frame with OVERFLOW.
    #[error("receiver cannot take a message this long")]
    ReceiverOverflow,
    /// Sending: the receiver kept answering WAIT.
    #[error("receiver sent more than {0} WAIT flow controls")]
    TooManyWaits(u16),
    /// Sending: a Flow Control with a reserved flow status.
    #[error("invalid flow status {0}")]
    InvalidFlowStatus(u8),
    /// Sending: a message ISO-TP on classic CAN cannot carry.
    #[error("cannot send a message of {0} bytes (1 to 4095)")]
    SendLength(usize),
}

impl IsoTpError {
    /// Stable name, used in counters, logs and `/healthz`.
    pub fn reason(&self) -> &'static str {
        match self {
            IsoTpError::Length(_) => "isotp_length",
            IsoTpError::UnknownPci(_) => "isotp_pci",
            IsoTpError::Sequence { .. } => "isotp_sequence",
            IsoTpError::Timeout(_) => "isotp_timeout",
            IsoTpError::Unexpected(_) => "isotp_unexpected",
            IsoTpError::Overflow { .. } => "isotp_overflow",
            IsoTpError::FlowControlTimeout(_) => "isotp_fc_timeout",
            IsoTpError::ReceiverOverflow => "isotp_fc_overflow",
            IsoTpError::TooManyWaits(_) => "isotp_fc_wait",
            IsoTpError::InvalidFlowStatus(_) => "isotp_fc_invalid",
            IsoTpError::SendLength(_) => "isotp_send_length",
        }
    }
}

/// The flow status of a Flow Control frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowStatus {
    ContinueToSend,
    Wait,
    Overflow,
    /// 3 to 15: reserved; a sender aborts on it.
    Reserved(u8),
}

/// A Flow Control frame: how the receiver wants the rest of a message sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowControl {
    pub status: FlowStatus,
    /// Consecutive Frames to send before the next Flow Control; 0 = all.
    pub block_size: u8,
    /// The raw STmin byte (see [`FlowControl::separation_ms`]).
    pub st_min: u8,
}

impl FlowControl {
    /// ContinueToSend with the given block size and STmin in ms (clamped to
    /// the 127 ms that STmin can express).
    pub fn continue_to_send(block_size: u8, st_min_ms: u8) -> Self {
        FlowControl {
            status: FlowStatus::ContinueToSend,
            block_size,
            st_min: st_min_ms.min(MAX_ST_MIN_MS),
        }
    }

    pub fn encode(&self) -> CanData {
        let fs = match self.status {
            FlowStatus::ContinueToSend => 0,
            FlowStatus::Wait => 1,
            FlowStatus::Overflow => 2,
            FlowStatus::Reserved(n) => n & 0x0F,
        };
        padded(&[0x30 | fs, self.block_size, self.st_min])
    }

    /// The wait between Consecutive Frames this STmin asks for, in whole ms.
    /// ISO 15765-2: 0x00-0x7F are ms; 0xF1-0xF9 are 100-900 us, rounded up
    /// here to 1 ms because time is counted in ms (never faster than asked);
    /// a reserved value is treated as the longest STmin, 0x7F.
    pub fn separation_ms(&self) -> u64 {
        match self.st_min {
            0x00..=0x7F => u64::from(self.st_min),
            0xF1..=0xF9 => 1,
            _ => u64::from(MAX_ST_MIN_MS),
        }
    }
}

/// One ISO-TP protocol data unit: the data of one CAN frame, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// A whole message of 1 to 7 bytes (padding removed).
    Single(&'a [u8]),
    /// The start of a longer message and its total length.
    First {
        len: usize,
        data: &'a [u8],
    },
    /// The next up-to-7 bytes of a message; `data` may include padding.
    Consecutive {
        sn: u8,
        data: &'a [u8],
    },
    FlowControl(FlowControl),
}

impl<'a> Pdu<'a> {
    /// Parses the data of one classic CAN frame (normal addressing: the PCI
    /// is the first byte). Padding is never inspected.
    pub fn parse(data: &'a [u8]) -> Result<Pdu<'a>, IsoTpError> {
        let Some(&pci) = data.first() else {
            return Err(IsoTpError::Length("empty frame"));
        };
        match pci >> 4 {
            0x0 => {
                let len = usize::from(pci & 0x0F);
                // SF_DL 0 escapes to a CAN FD length byte; 8+ cannot fit.
                if len == 0 || len > CAN_DL - 1 {
                    return Err(IsoTpError::Length("single frame length not 1 to 7"));
                }
                data.get(1..1 + len)
                    .map(Pdu::Single)
                    .ok_or(IsoTpError::Length("single frame shorter than its length"))
            }
            0x1 => {
                if data.len() < CAN_DL {
                    return Err(IsoTpError::Length("first frame shorter than 8 bytes"));
                }
                let short = (usize::from(pci & 0x0F) << 8) | usize::from(data[1]);
                if short != 0 {
                    return Ok(Pdu::First {
                        len: short,
                        data: &data[2..CAN_DL],
                    });
                }
                // FF_DL 0 escapes to a 32-bit length (ISO 15765-2:2016),
                // which only messages beyond 4095 bytes use.
                let len = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
                Ok(Pdu::First {
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                    data: &data[6..CAN_DL],
                })
            }
            0x2 => Ok(Pdu::Consecutive {
                sn: pci & 0x0F,
                data: &data[1..],
            }),
            0x3 => {
                if data.len() < 3 {
                    return Err(IsoTpError::Length("flow control shorter than 3 bytes"));
                }
                let status = match pci & 0x0F {
                    0 => FlowStatus::ContinueToSend,
                    1 => FlowStatus::Wait,
                    2 => FlowStatus::Overflow,
                    n => FlowStatus::Reserved(n),
                };
                Ok(Pdu::FlowControl(FlowControl {
                    status,
                    block_size: data[1],
                    st_min: data[2],
                }))
            }
            other => Err(IsoTpError::UnknownPci(other)),
        }
    }
}

/// Copies `bytes` (at most 8) into a frame and pads the rest with 0xCC.
fn padded(bytes: &[u8]) -> CanData {
    let mut frame = [PADDING; CAN_DL];
    frame[..bytes.len()].copy_from_slice(bytes);
    frame
}

/// How a [`Reassembler`] answers and what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Block size announced in Flow Control; 0 = the sender sends all.
    pub block_size: u8,
    /// STmin announced in Flow Control, in ms (at most 127).
    pub st_min_ms: u8,
    /// Longest message accepted; a longer First Frame is answered OVERFLOW.
    pub max_len: usize,
    /// Longest wait for the next Consecutive Frame.
    pub timeout_ms: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            block_size: 0,
            st_min_ms: 0,
            max_len: MAX_MESSAGE,
            timeout_ms: TIMEOUT_MS,
        }
    }
}

/// What one frame did to a [`Reassembler`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RxOutcome {
    /// In order: a reception this frame ended (timed out before it came, or
    /// interrupted by it), and this frame's own fault.
    pub errors: Vec<IsoTpError>,
    /// A Flow Control frame to send back now.
    pub flow_control: Option<CanData>,
    /// A complete message.
    pub message: Option<Vec<u8>>,
}

struct Reception {
    buf: Vec<u8>,
    len: usize,
    next_sn: u8,
    /// Consecutive Frames left in this block; `None` when the block size is 0.
    block_left: Option<u8>,
    last_ms: u64,
}

/// Receives ISO-TP messages from one sender.
pub struct Reassembler {
    config: ReceiverConfig,
    reception: Option<Reception>,
    /// After an abort the sender may keep sending the rest of that message;
    /// those Consecutive Frames are dropped quietly rather than counted once
    /// each, until the next Single or First Frame.
    discarding: bool,
}

impl Reassembler {
    pub fn new(config: ReceiverConfig) -> Self {
        Reassembler {
            config,
            reception: None,
            discarding: false,
        }
    }

    /// True while a multi-frame message is partly received.
    pub fn is_receiving(&self) -> bool {
        self.reception.is_some()
    }

    /// When [`Reassembler::poll`] will abandon the current reception.
    pub fn deadline(&self) -> Option<u64> {
        self.reception
            .as_ref()
            .map(|r| r.last_ms.saturating_add(self.config.timeout_ms))
    }

    /// Abandons a reception whose next Consecutive Frame is overdue.
    pub fn poll(&mut self, now_ms: u64) -> Option<IsoTpError> {
        let deadline = self.deadline()?;
        if now_ms < deadline {
            return None;
        }
        self.abort();
        Some(IsoTpError::Timeout(self.config.timeout_ms))
    }

    fn abort(&mut self) {
        self.reception = None;
        self.discarding = true;
    }

    /// Handles the data of one frame from the sender, received at `now_ms`.
    pub fn on_frame(&mut self, data: &[u8], now_ms: u64) -> RxOutcome {
        let mut out = RxOutcome::default();
        // A frame at or after the deadline comes too late for the reception.
        out.errors.extend(self.poll(now_ms));
        let pdu = match Pdu::parse(data) {
            Ok(pdu) => pdu,
            Err(e) => {
                // ISO 15765-2 ignores a malformed frame; the reception goes on.
                out.errors.push(e);
                return out;
            }
        };
        match pdu {
            Pdu::Single(payload) => {
                self.interrupt(&mut out, "single frame in the middle of a message");
                self.discarding = false;
                out.message = Some(payload.to_vec());
            }
            Pdu::First { len, data } => {
                self.interrupt(&mut out, "first frame in the middle of a message");
                self.discarding = false;
                self.start(len, data, now_ms, &mut out);
            }
            Pdu::Consecutive { sn, data } => self.consecutive(sn, data, now_ms, &mut out),
            // Flow Control belongs to the other direction's Segmenter.
            Pdu::FlowControl(_) => {}
        }
        out
    }

    fn interrupt(&mut self, out: &mut RxOutcome, why: &'static str) {
        if self.reception.take().is_some() {
            out.errors.push(IsoTpError::Unexpected(why));
        }
    }

    fn start(&mut self, len: usize, data: &[u8], now_ms: u64, out: &mut RxOutcome) {
        if len > self.config.max_len {
            self.discarding = true;
            out.errors.push(IsoTpError::Overflow {
                len,
                max: self.config.max_len,
            });
            let fc = FlowControl {
                status: FlowStatus::Overflow,
                block_size: 0,
                st_min: 0,
            };
            out.flow_control = Some(fc.encode());
            return;
        }
        // On classic CAN a message of 7 bytes or fewer must be a Single Frame.
        if len < CAN_DL {
            self.discarding = true;
            out.errors.push(IsoTpError::Length(
                "first frame announces fewer than 8 bytes",
            ));
            return;
        }
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(data);
        let bs = self.config.block_size;
        self.reception = Some(Reception {
            buf,
            len,
            next_sn: 1,
            block_left: (bs != 0).then_some(bs),
            last_ms: now_ms,
        });
        let fc = FlowControl::continue_to_send(bs, self.config.st_min_ms);
        out.flow_control = Some(fc.encode());
    }

    fn consecutive(&mut self, sn: u8, data: &[u8], now_ms: u64, out: &mut RxOutcome) {
        let Some(r) = self.reception.as_mut() else {
            if !self.discarding {
                out.errors.push(IsoTpError::Unexpected(
                    "consecutive frame outside a message",
                ));
            }
            return;
        };
        if sn != r.next_sn {
            let expected = r.next_sn;
            self.abort();
            out.errors.push(IsoTpError::Sequence { expected, got: sn });
            return;
        }
        let take = (r.len - r.buf.len()).min(CAN_DL - 1);
        let Some(chunk) = data.get(..take) else {
            self.abort();
            out.errors.push(IsoTpError::Length(
                "consecutive frame shorter than the data due",
            ));
            return;
        };
        r.buf.extend_from_slice(chunk);
        if r.buf.len() == r.len {
            out.message = self.reception.take().map(|r| r.buf);
            return;
        }
        r.next_sn = (r.next_sn + 1) & 0x0F;
        r.last_ms = now_ms;
        if let Some(left) = r.block_left.as_mut() {
            *left -= 1;
            if *left == 0 {
                *left = self.config.block_size;
                let fc =
                    FlowControl::continue_to_send(self.config.block_size, self.config.st_min_ms);
                out.flow_control = Some(fc.encode());
            }
        }
    }
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field(
                "receiving",
                &self.reception.as_ref().map(|r| (r.buf.len(), r.len)),
            )
            .field("discarding", &self.discarding)
            .finish()
    }
}

/// How a [`Segmenter`] waits for its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Longest wait for a Flow Control.
    pub timeout_ms: u64,
    /// WAIT flow controls tolerated in a row before giving up (ISO 15765-2
    /// leaves N_WFTmax to the implementation).
    pub max_waits: u16,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            timeout_ms: TIMEOUT_MS,
            max_waits: 10,
        }
    }
}

/// What a [`Segmenter`] wants done next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStep {
    /// Send this frame now, then poll again.
    Send(CanData),
    /// Nothing to send before `until_ms` (or before a Flow Control arrives).
    Wait { until_ms: u64 },
    /// The whole message has been handed over.
    Done,
}

#[derive(Debug)]
enum TxState {
    Start,
    AwaitFlowControl {
        deadline: u64,
        waits: u16,
    },
    Sending {
        next_at: u64,
        block_left: Option<u8>,
        separation_ms: u64,
    },
    Done,
}

/// Sends one ISO-TP message.
#[derive(Debug)]
pub struct Segmenter {
    body: Vec<u8>,
    sent: usize,
    next_sn: u8,
    config: SenderConfig,
    state: TxState,
}

impl Segmenter {
    /// A send of `body`; nothing goes out before the first [`Segmenter::poll`].
    pub fn new(body: Vec<u8>, config: SenderConfig) -> Result<Self, IsoTpError> {
        if body.is_empty() || body.len() > MAX_MESSAGE {
            return Err(IsoTpError::SendLength(body.len()));
        }
        Ok(Segmenter {
            body,
            sent: 0,
            next_sn: 1,
            config,
            state: TxState::Start,
        })
    }

    /// True between a First Frame (or a full block) and the receiver's go-ahead.
    pub fn is_awaiting_flow_control(&self) -> bool {
        matches!(self.state, TxState::AwaitFlowControl { .. })
    }

    /// The next step at `now_ms`. After an error the send is over.
    pub fn poll(&mut self, now_ms: u64) -> Result<TxStep, IsoTpError> {
        match self.state {
            TxState::Start => Ok(TxStep::Send(self.first_frame(now_ms))),
            TxState::AwaitFlowControl { deadline, .. } => {
                if now_ms >= deadline {
                    self.state = TxState::Done;
                    return Err(IsoTpError::FlowControlTimeout(self.config.timeout_ms));
                }
                Ok(TxStep::Wait { until_ms: deadline })
            }
            TxState::Sending {
                next_at,
                block_left,
                separation_ms,
            } => {
                if now_ms < next_at {
                    return Ok(TxStep::Wait { until_ms: next_at });
                }
                Ok(TxStep::Send(self.consecutive_frame(
                    now_ms,
                    block_left,
                    separation_ms,
                )))
            }
            TxState::Done => Ok(TxStep::Done),
        }
    }

    fn first_frame(&mut self, now_ms: u64) -> CanData {
        let len = self.body.len();
        if len < CAN_DL {
            self.sent = len;
            self.state = TxState::Done;
            let mut frame = padded(&[len as u8]);
            frame[1..1 + len].copy_from_slice(&self.body);
            return frame;
        }
        let mut frame = [0u8; CAN_DL];
        frame[0] = 0x10 | (len >> 8) as u8;
        frame[1] = (len & 0xFF) as u8;
        frame[2..].copy_from_slice(&self.body[..CAN_DL - 2]);
        self.sent = CAN_DL - 2;
        self.await_flow_control(now_ms, 0);
        frame
    }

    fn consecutive_frame(
        &mut self,
        now_ms: u64,
        block_left: Option<u8>,
        separation_ms: u64,
    ) -> CanData {
        let take = (self.body.len() - self.sent).min(CAN_DL - 1);
        let mut frame = padded(&[0x20 | self.next_sn]);
        frame[1..1 + take].copy_from_slice(&self.body[self.sent..self.sent + take]);
        self.sent += take;
        self.next_sn = (self.next_sn + 1) & 0x0F;
        let block_left = block_left.map(|n| n.saturating_sub(1));
        self.state = if self.sent == self.body.len() {
            TxState::Done
        } else if block_left == Some(0) {
            TxState::AwaitFlowControl {
                deadline: now_ms.saturating_add(self.config.timeout_ms),
                waits: 0,
            }
        } else {
            TxState::Sending {
                next_at: now_ms.saturating_add(separation_ms),
                block_left,
                separation_ms,
            }
        };
        frame
    }

    fn await_flow_control(&mut self, now_ms: u64, waits: u16) {
        self.state = TxState::AwaitFlowControl {
            deadline: now_ms.saturating_add(self.config.timeout_ms),
            waits,
        };
    }

    /// Handles a Flow Control from the receiver. One that comes while none
    /// is awaited is ignored, as ISO 15765-2 asks. After an error the send
    /// is over.
    pub fn on_flow_control(&mut self, fc: FlowControl, now_ms: u64) -> Result<(), IsoTpError> {
        let TxState::AwaitFlowControl { waits, .. } = self.state else {
            return Ok(());
        };
        match fc.status {
            FlowStatus::ContinueToSend => {
                // The first Consecutive Frame may follow the go-ahead at once;
                // STmin separates Consecutive Frames from each other.
                self.state = TxState::Sending {
                    next_at: now_ms,
                    block_left: (fc.block_size != 0).then_some(fc.block_size),
                    separation_ms: fc.separation_ms(),
                };
                Ok(())
            }
            FlowStatus::Wait => {
                if waits >= self.config.max_waits {
                    self.state = TxState::Done;
                    return Err(IsoTpError::TooManyWaits(self.config.max_waits));
                }
                self.await_flow_control(now_ms, waits + 1);
                Ok(())
            }
            FlowStatus::Overflow => {
                self.state = TxState::Done;
                Err(IsoTpError::ReceiverOverflow)
            }
            FlowStatus::Reserved(n) => {
                self.state = TxState::Done;
                Err(IsoTpError::InvalidFlowStatus(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fc(status: FlowStatus, block_size: u8, st_min: u8) -> FlowControl {
        FlowControl {
            status,
            block_size,
            st_min,
        }
    }

    fn cts(block_size: u8, st_min: u8) -> FlowControl {
        fc(FlowStatus::ContinueToSend, block_size, st_min)
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn sent(step: Result<TxStep, IsoTpError>) -> CanData {
        match step {
            Ok(TxStep::Send(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_frame_type() {
        // ISO 15765-2 normal addressing: the PCI is the first data byte.
        assert_eq!(
            Pdu::parse(&[0x03, 1, 2, 3, 0xCC, 0xCC, 0xCC, 0xCC]),
            Ok(Pdu::Single(&[1, 2, 3]))
        );
        assert_eq!(
            Pdu::parse(&[0x14, 0x04, 1, 2, 3, 4, 5, 6]),
            Ok(Pdu::First {
                len: 1028,
                data: &[1, 2, 3, 4, 5, 6]
            })
        );
        assert_eq!(
            Pdu::parse(&[0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 7, 8]),
            Ok(Pdu::First {
                len: 65536,
                data: &[7, 8]
            })
        );
        assert_eq!(
            Pdu::parse(&[0x2F, 1, 2, 3, 4, 5, 6, 7]),
            Ok(Pdu::Consecutive {
                sn: 15,
                data: &[1, 2, 3, 4, 5, 6, 7]
            })
        );
        assert_eq!(Pdu::parse(&[0x30, 8, 20]), Ok(Pdu::FlowControl(cts(8, 20))));
        assert_eq!(
            Pdu::parse(&[0x31, 0, 0]),
            Ok(Pdu::FlowControl(fc(FlowStatus::Wait, 0, 0)))
        );
        assert_eq!(
            Pdu::parse(&[0x32, 0, 0]),
            Ok(Pdu::FlowControl(fc(FlowStatus::Overflow, 0, 0)))
        );
        assert_eq!(
            Pdu::parse(&[0x35, 0, 0]),
            Ok(Pdu::FlowControl(fc(FlowStatus::Reserved(5), 0, 0)))
        );
    }

    #[test]
    fn refuses_malformed_frames() {
        fn length(d: &[u8]) -> Result<Pdu<'_>, &'static str> {
            Pdu::parse(d).map_err(|e| e.reason())
        }
        assert_eq!(length(&[]), Err("isotp_length"));
        assert_eq!(
            length(&[0x00, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]),
            Err("isotp_length")
        );
        assert_eq!(length(&[0x08, 1, 2, 3, 4, 5, 6, 7]), Err("isotp_length"));
        assert_eq!(length(&[0x05, 1, 2]), Err("isotp_length"));
        assert_eq!(length(&[0x10, 0x20, 1, 2, 3]), Err("isotp_length"));
        assert_eq!(length(&[0x30, 0]), Err("isotp_length"));
        assert_eq!(Pdu::parse(&[0x40, 0, 0]), Err(IsoTpError::UnknownPci(4)));
        assert_eq!(
            Pdu::parse(&[0xF0, 0, 0]).map_err(|e| e.reason()),
            Err("isotp_pci")
        );
    }

    #[test]
    fn flow_control_encodes_padded_and_clamps_st_min() {
        // PROTOCOL.md 1: ContinueToSend, block size 0, STmin 0 by default.
        assert_eq!(
            FlowControl::continue_to_send(0, 0).encode(),
            [0x30, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]
        );
        assert_eq!(
            FlowControl::continue_to_send(4, 200).encode()[..3],
            [0x30, 4, 0x7F]
        );
    }

    #[test]
    fn st_min_values_map_to_whole_milliseconds() {
        assert_eq!(cts(0, 0).separation_ms(), 0);
        assert_eq!(cts(0, 0x7F).separation_ms(), 127);
        // 100-900 us: rounded up to 1 ms, never faster than asked.
        assert_eq!(cts(0, 0xF1).separation_ms(), 1);
        assert_eq!(cts(0, 0xF9).separation_ms(), 1);
        // Reserved values: the longest STmin (ISO 15765-2).
        assert_eq!(cts(0, 0x80).separation_ms(), 127);
        assert_eq!(cts(0, 0xFA).separation_ms(), 127);
    }

    #[test]
    fn single_frame_is_a_whole_message_and_padding_is_ignored() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        let out = rx.on_frame(&[0x03, 0xA, 0xB, 0xC, 0xCC, 0xCC, 0xCC, 0xCC], 0);
        assert_eq!(
            out,
            RxOutcome {
                message: Some(vec![0xA, 0xB, 0xC]),
                ..Default::default()
            }
        );
        // PROTOCOL.md 1: padding is ignored, whatever its value (and if absent).
        let out = rx.on_frame(&[0x02, 0xA, 0xB, 0x00, 0x55, 0xFF, 0x00, 0x00], 1);
        assert_eq!(out.message, Some(vec![0xA, 0xB]));
        assert_eq!(rx.on_frame(&[0x01, 0x42], 2).message, Some(vec![0x42]));
    }

    #[test]
    fn first_frame_is_answered_with_continue_to_send_and_message_completes() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        let out = rx.on_frame(&[0x10, 10, 1, 2, 3, 4, 5, 6], 0);
        assert_eq!(
            out.flow_control,
            Some([0x30, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC])
        );
        assert!(out.errors.is_empty() && out.message.is_none());
        assert!(rx.is_receiving());
        let out = rx.on_frame(&[0x21, 7, 8, 9, 10, 0xCC, 0xCC, 0xCC], 5);
        assert_eq!(out.message, Some((1..=10).collect::<Vec<u8>>()));
        assert!(out.errors.is_empty() && out.flow_control.is_none());
        assert!(!rx.is_receiving());
    }

    #[test]
    fn last_consecutive_frame_may_be_unpadded_but_not_short() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 9, 1, 2, 3, 4, 5, 6], 0);
        assert_eq!(
            rx.on_frame(&[0x21, 7, 8, 9], 1).message,
            Some((1..=9).collect::<Vec<u8>>())
        );
        rx.on_frame(&[0x10, 9, 1, 2, 3, 4, 5, 6], 2);
        let out = rx.on_frame(&[0x21, 7, 8], 3);
        assert_eq!(
            out.errors
                .iter()
                .map(IsoTpError::reason)
                .collect::<Vec<_>>(),
            ["isotp_length"]
        );
        assert!(!rx.is_receiving());
    }

    #[test]
    fn sequence_number_wraps_from_15_to_0() {
        let data = body(6 + 7 * 20);
        let mut tx = Segmenter::new(data.clone(), SenderConfig::default()).unwrap();
        let mut rx = Reassembler::new(ReceiverConfig::default());
        let ff = sent(tx.poll(0));
        let answer = rx.on_frame(&ff, 0).flow_control.unwrap();
        let Ok(Pdu::FlowControl(go)) = Pdu::parse(&answer) else {
            panic!("no flow control")
        };
        tx.on_flow_control(go, 0).unwrap();
        let mut sns = Vec::new();
        let mut message = None;
        while let Ok(TxStep::Send(cf)) = tx.poll(0) {
            sns.push(cf[0] & 0x0F);
            message = rx.on_frame(&cf, 0).message.or(message);
        }
        let expected: Vec<u8> = (1..=20).map(|i| (i % 16) as u8).collect();
        assert_eq!(sns, expected);
        assert_eq!(&sns[14..17], &[15, 0, 1]);
        assert_eq!(message, Some(data));
    }

    #[test]
    fn sequence_gap_aborts_and_the_rest_of_that_message_is_dropped_quietly() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 30, 0, 0, 0, 0, 0, 0], 0);
        assert!(rx
            .on_frame(&[0x21, 0, 0, 0, 0, 0, 0, 0], 1)
            .errors
            .is_empty());
        let out = rx.on_frame(&[0x23, 0, 0, 0, 0, 0, 0, 0], 2);
        assert_eq!(
            out.errors,
            vec![IsoTpError::Sequence {
                expected: 2,
                got: 3
            }]
        );
        assert_eq!(out.errors[0].reason(), "isotp_sequence");
        assert!(!rx.is_receiving());
        // The sender does not know and sends the rest: not counted again.
        assert_eq!(
            rx.on_frame(&[0x24, 0, 0, 0, 0, 0, 0, 0], 3),
            RxOutcome::default()
        );
        // The next message is received normally.
        assert!(rx
            .on_frame(&[0x10, 8, 1, 2, 3, 4, 5, 6], 4)
            .flow_control
            .is_some());
        assert_eq!(
            rx.on_frame(&[0x21, 7, 8], 5).message,
            Some((1..=8).collect::<Vec<u8>>())
        );
    }

    #[test]
    fn stray_consecutive_frame_is_unexpected() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        let out = rx.on_frame(&[0x21, 1, 2, 3, 4, 5, 6, 7], 0);
        assert_eq!(
            out.errors
                .iter()
                .map(IsoTpError::reason)
                .collect::<Vec<_>>(),
            ["isotp_unexpected"]
        );
        assert!(out.message.is_none() && out.flow_control.is_none());
    }

    #[test]
    fn new_message_interrupting_a_reception_aborts_it() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 20, 0, 0, 0, 0, 0, 0], 0);
        let out = rx.on_frame(&[0x10, 8, 1, 2, 3, 4, 5, 6], 1);
        assert_eq!(
            out.errors
                .iter()
                .map(IsoTpError::reason)
                .collect::<Vec<_>>(),
            ["isotp_unexpected"]
        );
        assert!(out.flow_control.is_some(), "the new message is answered");
        let out = rx.on_frame(&[0x02, 9, 9], 2);
        assert_eq!(
            out.errors
                .iter()
                .map(IsoTpError::reason)
                .collect::<Vec<_>>(),
            ["isotp_unexpected"]
        );
        assert_eq!(out.message, Some(vec![9, 9]));
    }

    #[test]
    fn reception_times_out_at_exactly_1000_ms_not_999() {
        // PROTOCOL.md 1: abort after 1,000 ms without the next Consecutive Frame.
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 20, 0, 0, 0, 0, 0, 0], 10_000);
        assert_eq!(rx.deadline(), Some(11_000));
        assert_eq!(rx.poll(10_999), None);
        // 999 ms after the First Frame: still in time, and the clock restarts.
        assert!(rx
            .on_frame(&[0x21, 0, 0, 0, 0, 0, 0, 0], 10_999)
            .errors
            .is_empty());
        assert_eq!(rx.deadline(), Some(11_999));
        assert_eq!(rx.poll(11_998), None);
        assert_eq!(rx.poll(11_999), Some(IsoTpError::Timeout(1000)));
        assert_eq!(IsoTpError::Timeout(1000).reason(), "isotp_timeout");
        assert!(!rx.is_receiving());
        assert_eq!(rx.poll(20_000), None, "reported once");
    }

    #[test]
    fn frame_arriving_at_the_deadline_is_too_late() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 20, 0, 0, 0, 0, 0, 0], 0);
        let out = rx.on_frame(&[0x21, 0, 0, 0, 0, 0, 0, 0], 1000);
        assert_eq!(out.errors, vec![IsoTpError::Timeout(1000)]);
        assert!(out.message.is_none());
    }

    #[test]
    fn receiver_block_size_asks_again_after_each_block() {
        let config = ReceiverConfig {
            block_size: 2,
            st_min_ms: 5,
            ..Default::default()
        };
        let mut rx = Reassembler::new(config);
        let first = rx
            .on_frame(&[0x10, 6 + 7 * 5, 0, 0, 0, 0, 0, 0], 0)
            .flow_control;
        assert_eq!(first.map(|f| f[..3].to_vec()), Some(vec![0x30, 2, 5]));
        let answers: Vec<bool> = (1..=5u8)
            .map(|sn| {
                rx.on_frame(&[0x20 | sn, 0, 0, 0, 0, 0, 0, 0], u64::from(sn))
                    .flow_control
                    .is_some()
            })
            .collect();
        // After CF 2 and CF 4; CF 5 completes the message, which needs none.
        assert_eq!(answers, [false, true, false, true, false]);
        assert!(!rx.is_receiving());
    }

    #[test]
    fn first_frame_beyond_the_limit_is_answered_overflow() {
        let config = ReceiverConfig {
            max_len: 1028,
            ..Default::default()
        };
        let mut rx = Reassembler::new(config);
        let out = rx.on_frame(&[0x14, 0x05, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(
            out.errors,
            vec![IsoTpError::Overflow {
                len: 1029,
                max: 1028
            }]
        );
        assert_eq!(
            out.flow_control,
            Some([0x32, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC])
        );
        assert!(!rx.is_receiving());
        // A sender that ignores the overflow is not counted frame by frame.
        assert_eq!(
            rx.on_frame(&[0x21, 0, 0, 0, 0, 0, 0, 0], 1),
            RxOutcome::default()
        );
        let out = rx.on_frame(&[0x10, 0x05, 0, 0, 0, 0, 0, 0], 2);
        assert_eq!(
            out.errors,
            vec![IsoTpError::Length(
                "first frame announces fewer than 8 bytes"
            )]
        );
    }

    #[test]
    fn malformed_frame_does_not_end_a_reception() {
        let mut rx = Reassembler::new(ReceiverConfig::default());
        rx.on_frame(&[0x10, 8, 1, 2, 3, 4, 5, 6], 0);
        assert_eq!(
            rx.on_frame(&[0x70, 0], 1).errors,
            vec![IsoTpError::UnknownPci(7)]
        );
        // A Flow Control is the other direction's business.
        assert_eq!(rx.on_frame(&[0x30, 0, 0], 2), RxOutcome::default());
        assert_eq!(
            rx.on_frame(&[0x21, 7, 8], 3).message,
            Some((1..=8).collect::<Vec<u8>>())
        );
    }

    #[test]
    fn short_message_goes_as_one_padded_single_frame() {
        let mut tx = Segmenter::new(vec![1, 2, 3], SenderConfig::default()).unwrap();
        assert_eq!(
            tx.poll(0),
            Ok(TxStep::Send([0x03, 1, 2, 3, 0xCC, 0xCC, 0xCC, 0xCC]))
        );
        assert_eq!(tx.poll(0), Ok(TxStep::Done));
        let mut tx = Segmenter::new(body(7), SenderConfig::default()).unwrap();
        assert_eq!(sent(tx.poll(0))[0], 0x07);
    }

    #[test]
    fn messages_iso_tp_cannot_carry_are_refused() {
        assert_eq!(
            Segmenter::new(Vec::new(), SenderConfig::default()).err(),
            Some(IsoTpError::SendLength(0))
        );
        assert_eq!(
            Segmenter::new(body(4096), SenderConfig::default())
                .err()
                .map(|e| e.reason()),
            Some("isotp_send_length")
        );
        assert!(Segmenter::new(body(4095), SenderConfig::default()).is_ok());
    }

    #[test]
    fn long_message_waits_for_flow_control_then_pads_the_last_frame() {
        let mut tx = Segmenter::new(body(19), SenderConfig::default()).unwrap();
        let ff = sent(tx.poll(0));
        assert_eq!(ff[..2], [0x10, 19]);
        assert_eq!(ff[2..], body(19)[..6]);
        assert!(tx.is_awaiting_flow_control());
        assert_eq!(tx.poll(10), Ok(TxStep::Wait { until_ms: 1000 }));
        tx.on_flow_control(cts(0, 0), 10).unwrap();
        assert_eq!(
            sent(tx.poll(10))[..],
            [&[0x21][..], &body(19)[6..13]].concat()[..]
        );
        // PROTOCOL.md 1: the last frame is padded with 0xCC.
        assert_eq!(sent(tx.poll(10)), [0x22, 94, 101, 108, 115, 122, 129, 0xCC]);
        assert_eq!(tx.poll(10), Ok(TxStep::Done));
    }

    #[test]
    fn send_times_out_at_exactly_1000_ms_without_flow_control() {
        // PROTOCOL.md 1: abort a multi-frame send without Flow Control in 1,000 ms.
        let mut tx = Segmenter::new(body(30), SenderConfig::default()).unwrap();
        sent(tx.poll(5_000));
        assert_eq!(tx.poll(5_999), Ok(TxStep::Wait { until_ms: 6_000 }));
        assert_eq!(tx.poll(6_000), Err(IsoTpError::FlowControlTimeout(1000)));
        assert_eq!(tx.poll(6_001), Ok(TxStep::Done), "the send is over");
        // A Flow Control at 999 ms is in time.
        let mut tx = Segmenter::new(body(30), SenderConfig::default()).unwrap();
        sent(tx.poll(5_000));
        tx.on_flow_control(cts(0, 0), 5_999).unwrap();
        assert_eq!(sent(tx.poll(5_999))[0], 0x21);
    }

    #[test]
    fn wait_restarts_the_flow_control_timer_up_to_a_limit() {
        let config = SenderConfig {
            timeout_ms: 1000,
            max_waits: 2,
        };
        let mut tx = Segmenter::new(body(30), config).unwrap();
        sent(tx.poll(0));
        tx.on_flow_control(fc(FlowStatus::Wait, 0, 0), 900).unwrap();
        assert_eq!(tx.poll(1_899), Ok(TxStep::Wait { until_ms: 1_900 }));
        tx.on_flow_control(fc(FlowStatus::Wait, 0, 0), 1_800)
            .unwrap();
        assert_eq!(
            tx.on_flow_control(fc(FlowStatus::Wait, 0, 0), 2_700),
            Err(IsoTpError::TooManyWaits(2))
        );
        assert_eq!(IsoTpError::TooManyWaits(2).reason(), "isotp_fc_wait");
    }

    #[test]
    fn overflow_and_reserved_flow_status_abort_the_send() {
        let mut tx = Segmenter::new(body(30), SenderConfig::default()).unwrap();
        sent(tx.poll(0));
        assert_eq!(
            tx.on_flow_control(fc(FlowStatus::Overflow, 0, 0), 1),
            Err(IsoTpError::ReceiverOverflow)
        );
        assert_eq!(tx.poll(2), Ok(TxStep::Done));
        let mut tx = Segmenter::new(body(30), SenderConfig::default()).unwrap();
        sent(tx.poll(0));
        let err = tx
            .on_flow_control(fc(FlowStatus::Reserved(7), 0, 0), 1)
            .unwrap_err();
        assert_eq!(err.reason(), "isotp_fc_invalid");
    }

    #[test]
    fn flow_control_while_sending_is_ignored() {
        let mut tx = Segmenter::new(body(30), SenderConfig::default()).unwrap();
        sent(tx.poll(0));
        tx.on_flow_control(cts(0, 50), 0).unwrap();
        sent(tx.poll(0));
        // A stray OVERFLOW mid-block changes nothing.
        assert_eq!(
            tx.on_flow_control(fc(FlowStatus::Overflow, 0, 0), 1),
            Ok(())
        );
        assert_eq!(tx.poll(1), Ok(TxStep::Wait { until_ms: 50 }));
    }

    #[test]
    fn sender_honours_block_size_and_st_min() {
        let mut tx = Segmenter::new(body(6 + 7 * 5), SenderConfig::default()).unwrap();
        sent(tx.poll(0));
        tx.on_flow_control(cts(2, 20), 100).unwrap();
        // The first Consecutive Frame goes at once, the next after STmin.
        assert_eq!(sent(tx.poll(100))[0], 0x21);
        assert_eq!(tx.poll(119), Ok(TxStep::Wait { until_ms: 120 }));
        assert_eq!(sent(tx.poll(120))[0], 0x22);
        // Block of 2 done: wait for the next Flow Control (1,000 ms from now).
        assert!(tx.is_awaiting_flow_control());
        assert_eq!(tx.poll(500), Ok(TxStep::Wait { until_ms: 1_120 }));
        tx.on_flow_control(cts(2, 0xF5), 600).unwrap();
        assert_eq!(sent(tx.poll(600))[0], 0x23);
        // 500 us asked: 1 ms given.
        assert_eq!(tx.poll(600), Ok(TxStep::Wait { until_ms: 601 }));
        assert_eq!(sent(tx.poll(601))[0], 0x24);
        tx.on_flow_control(cts(0, 0), 700).unwrap();
        assert_eq!(sent(tx.poll(700))[0], 0x25);
        assert_eq!(tx.poll(700), Ok(TxStep::Done));
    }

    /// Runs one message from a Segmenter into a Reassembler, moving simulated
    /// time forward whenever the sender waits. Returns the message, the times
    /// of the Consecutive Frames and the number of Flow Controls.
    fn transfer(data: &[u8], rx_config: ReceiverConfig) -> (Vec<u8>, Vec<u64>, usize) {
        let mut tx = Segmenter::new(data.to_vec(), SenderConfig::default()).unwrap();
        let mut rx = Reassembler::new(rx_config);
        let (mut now, mut cf_times, mut fcs, mut message) = (0u64, Vec::new(), 0, None);
        loop {
            match tx.poll(now).unwrap() {
                TxStep::Send(frame) => {
                    assert_eq!(frame.len(), CAN_DL);
                    if frame[0] >> 4 == 2 {
                        cf_times.push(now);
                    }
                    let out = rx.on_frame(&frame, now);
                    assert_eq!(out.errors, vec![]);
                    if let Some(answer) = out.flow_control {
                        fcs += 1;
                        let Ok(Pdu::FlowControl(go)) = Pdu::parse(&answer) else {
                            panic!("not a flow control")
                        };
                        tx.on_flow_control(go, now).unwrap();
                    }
                    if let Some(m) = out.message {
                        assert!(message.replace(m).is_none(), "one message");
                    }
                }
                TxStep::Wait { until_ms } => {
                    assert!(until_ms > now, "a wait moves time forward");
                    now = until_ms;
                }
                TxStep::Done => break,
            }
        }
        (message.expect("message received"), cf_times, fcs)
    }

    #[test]
    fn messages_up_to_4095_bytes_round_trip() {
        // The 12-bit First Frame length: 4,095 bytes at most.
        let data = body(MAX_MESSAGE);
        let (message, cf_times, fcs) = transfer(&data, ReceiverConfig::default());
        assert_eq!(message, data);
        assert_eq!((cf_times.len(), fcs), (585, 1));
        // Longer needs the 32-bit escape form, refused as overflow.
        let mut rx = Reassembler::new(ReceiverConfig::default());
        let out = rx.on_frame(&[0x10, 0, 0, 0, 0x10, 0x00, 0, 0], 0);
        assert_eq!(
            out.errors,
            vec![IsoTpError::Overflow {
                len: 4096,
                max: 4095
            }]
        );
        assert_eq!(out.flow_control.map(|f| f[0]), Some(0x32));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_body_length_round_trips(len in 0usize..=1028, bs in any::<u8>(), st_min in 0u8..=127) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ (len as u8)).collect();
            if len == 0 {
                // ISO-TP on classic CAN has no empty message (SF_DL 0 is reserved).
                prop_assert_eq!(Segmenter::new(data, SenderConfig::default()).err(), Some(IsoTpError::SendLength(0)));
                return Ok(());
            }
            let config = ReceiverConfig { block_size: bs, st_min_ms: st_min, max_len: 1028, ..Default::default() };
            let (message, cf_times, fcs) = transfer(&data, config);
            prop_assert_eq!(&message, &data);
            let cfs = if len < CAN_DL { 0 } else { (len - 6).div_ceil(7) };
            prop_assert_eq!(cf_times.len(), cfs);
            let expected_fcs = match (cfs, bs) {
                (0, _) => 0,
                (_, 0) => 1,
                (n, bs) => 1 + (n - 1) / usize::from(bs),
            };
            prop_assert_eq!(fcs, expected_fcs);
            // STmin between Consecutive Frames of one block (a new Flow
            // Control may release the next block at once).
            for (i, pair) in cf_times.windows(2).enumerate() {
                let block_starts = bs != 0 && (i + 1) % usize::from(bs) == 0;
                if !block_starts {
                    prop_assert!(pair[1] - pair[0] >= u64::from(st_min));
                }
            }
        }
    }
}
