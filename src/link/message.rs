//! Typed CC-Link messages (PROTOCOL.md sections 2 and 3), both directions.
//!
//! [`Message::decode`] parses a payload (the CRC already checked by
//! [`super::frame`]) into a typed value once; everything after it works on
//! types, never on bytes. [`Message::encode`] is its exact inverse.

use std::borrow::Cow;
use std::fmt;

/// The only protocol version this appliance speaks.
pub const VERSION: u8 = 1;
/// Bytes before the kind-specific body.
pub const HEADER_LEN: usize = 20;
/// `device_id` of a REQUEST_STATUS that addresses every unit in reach.
pub const BROADCAST: u64 = u64::MAX;

/// The fixed part of every payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub seq: u16,
    pub device_id: u64,
    pub time_ms: u64,
}

impl Header {
    /// Reads the header of any payload at least [`HEADER_LEN`] long,
    /// whatever its version or kind (so a rejected payload can be ACKed).
    pub fn parse(payload: &[u8]) -> Option<Header> {
        let h = payload.get(..HEADER_LEN)?;
        Some(Header {
            version: h[0],
            kind: h[1],
            seq: u16::from_le_bytes([h[2], h[3]]),
            device_id: u64::from_le_bytes(h[4..12].try_into().ok()?),
            time_ms: u64::from_le_bytes(h[12..20].try_into().ok()?),
        })
    }
}

/// Why a payload with a good CRC was not accepted. Such a payload is ACKed
/// with its header's seq (so the dongle moves on), counted, and not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is shorter than the 20-byte header")]
    Truncated(usize),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("kind 0x{kind:02x} needs a body of {expected} bytes, got {got}")]
    Length {
        kind: u8,
        expected: usize,
        got: usize,
    },
    #[error("kind 0x{kind:02x}: {field} has invalid value {value}")]
    Field {
        kind: u8,
        field: &'static str,
        value: u64,
    },
}

impl DecodeError {
    /// Stable name, used in counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Version(_) => "version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Length { .. } => "length",
            DecodeError::Field { .. } => "field",
        }
    }
}

/// A vehicle identification number as reported in HELLO.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Vin(pub [u8; 17]);

impl Vin {
    /// The VIN's text (always printable ASCII: checked at decode).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("?")
    }

    /// World manufacturer identifier: the first three characters.
    pub fn wmi(&self) -> &str {
        &self.as_str()[..3]
    }

    /// Parses a 17-character printable-ASCII VIN.
    pub fn parse(s: &str) -> Option<Vin> {
        let b: [u8; 17] = s.as_bytes().try_into().ok()?;
        b.iter().all(|c| c.is_ascii_graphic()).then_some(Vin(b))
    }
}

impl fmt::Debug for Vin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vin({})", self.as_str())
    }
}

impl fmt::Display for Vin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Firmware version (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Firmware(pub u8, pub u8, pub u8);

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// `None` when the unit does not know its VIN (all 0x00 on the wire).
    pub vin: Option<Vin>,
    pub firmware: Firmware,
    /// Sent after a power loss (flags bit 0).
    pub after_power_loss: bool,
    /// The whole flags byte, kept so unknown bits survive a round trip.
    pub flags: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Engine {
    Parked,
    Running,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub engine: Engine,
    /// Seconds since engine start, 0 when parked.
    pub run_s: u32,
    pub odometer_km: u32,
    pub battery_mv: u16,
    /// Bit i set: lamp id i+1 is lit now.
    pub lamps: u32,
}

impl Heartbeat {
    /// Lamp ids lit now, ascending.
    pub fn lit_lamps(&self) -> impl Iterator<Item = u8> + '_ {
        (0..32u8)
            .filter(|i| self.lamps & (1 << i) != 0)
            .map(|i| i + 1)
    }
}

/// An ISO 14229 DTC: two bytes of SAE J2012 code and a failure-type byte.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Dtc(pub [u8; 3]);

impl Dtc {
    pub fn failure_type(&self) -> u8 {
        self.0[2]
    }

    /// The J2012 letter: P powertrain, C chassis, B body, U network.
    pub fn letter(&self) -> char {
        ['P', 'C', 'B', 'U'][(self.0[0] >> 6) as usize]
    }

    /// The code without its failure type, e.g. `P0301`.
    pub fn base_code(&self) -> String {
        let v = u16::from_be_bytes([self.0[0], self.0[1]]);
        format!("{}{}{:03X}", self.letter(), (v >> 12) & 0x3, v & 0x0FFF)
    }

    /// Parses `P0301` or `U0123-1C`.
    pub fn parse(s: &str) -> Option<Dtc> {
        let (code, ft) = match s.split_once('-') {
            Some((c, f)) if f.len() == 2 => (c, u8::from_str_radix(f, 16).ok()?),
            Some(_) => return None,
            None => (s, 0),
        };
        let b = code.as_bytes();
        if b.len() != 5 {
            return None;
        }
        let letter = match b[0].to_ascii_uppercase() {
            b'P' => 0u16,
            b'C' => 1,
            b'B' => 2,
            b'U' => 3,
            _ => return None,
        };
        let digit = (b[1] as char).to_digit(4)? as u16;
        let rest = u16::from_str_radix(&code[2..], 16).ok()?;
        if !code[2..].bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let v = (letter << 14) | (digit << 12) | rest;
        let [hi, lo] = v.to_be_bytes();
        Some(Dtc([hi, lo, ft]))
    }
}

impl fmt::Display for Dtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_code())?;
        if self.failure_type() != 0 {
            write!(f, "-{:02X}", self.failure_type())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Dtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dtc({self})")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtcEntry {
    pub dtc: Dtc,
    /// The ISO 14229-1 status byte, kept raw.
    pub status: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtcReport {
    /// ECU address, e.g. 0x07E0 engine.
    pub ecu: u16,
    /// A full snapshot of that ECU's stored codes.
    pub entries: Vec<DtcEntry>,
}

/// Reason byte of POWER_LOST. Unknown values are kept, not refused: a
/// last-gasp message must never be lost to a reason this version lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PowerLossReason {
    Unknown,
    Unplugged,
    SupplyLow,
    Other(u8),
}

impl PowerLossReason {
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => PowerLossReason::Unknown,
            1 => PowerLossReason::Unplugged,
            2 => PowerLossReason::SupplyLow,
            n => PowerLossReason::Other(n),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            PowerLossReason::Unknown => 0,
            PowerLossReason::Unplugged => 1,
            PowerLossReason::SupplyLow => 2,
            PowerLossReason::Other(n) => n,
        }
    }
}

impl fmt::Display for PowerLossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerLossReason::Unknown => f.write_str("unknown"),
            PowerLossReason::Unplugged => f.write_str("unplugged"),
            PowerLossReason::SupplyLow => f.write_str("supply below threshold"),
            PowerLossReason::Other(n) => write!(f, "reason {n}"),
        }
    }
}

/// The kind-specific part of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    // Dongle to appliance.
    Hello(Hello),
    IgnitionOn { odometer_km: u32 },
    IgnitionOff { odometer_km: u32, run_s: u32 },
    Heartbeat(Heartbeat),
    Lamp { lamp: u8, lit: bool },
    DtcReport(DtcReport),
    PowerLost { reason: PowerLossReason },
    PowerRestored { down_s: u32 },
    // Appliance to dongle.
    Ack { acked_seq: u16 },
    Time,
    RequestDtc { ecu: u16 },
    RequestStatus,
}

pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const IGNITION_ON: u8 = 0x02;
    pub const IGNITION_OFF: u8 = 0x03;
    pub const HEARTBEAT: u8 = 0x04;
    pub const LAMP: u8 = 0x05;
    pub const DTC_REPORT: u8 = 0x06;
    pub const POWER_LOST: u8 = 0x07;
    pub const POWER_RESTORED: u8 = 0x08;
    pub const ACK: u8 = 0x80;
    pub const TIME: u8 = 0x81;
    pub const REQUEST_DTC: u8 = 0x82;
    pub const REQUEST_STATUS: u8 = 0x83;
}

impl Body {
    pub fn kind(&self) -> u8 {
        match self {
            Body::Hello(_) => kind::HELLO,
            Body::IgnitionOn { .. } => kind::IGNITION_ON,
            Body::IgnitionOff { .. } => kind::IGNITION_OFF,
            Body::Heartbeat(_) => kind::HEARTBEAT,
            Body::Lamp { .. } => kind::LAMP,
            Body::DtcReport(_) => kind::DTC_REPORT,
            Body::PowerLost { .. } => kind::POWER_LOST,
            Body::PowerRestored { .. } => kind::POWER_RESTORED,
            Body::Ack { .. } => kind::ACK,
            Body::Time => kind::TIME,
            Body::RequestDtc { .. } => kind::REQUEST_DTC,
            Body::RequestStatus => kind::REQUEST_STATUS,
        }
    }

    /// Name as PROTOCOL.md spells it.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or("?")
    }

    /// True for the kinds a dongle sends to the appliance.
    pub fn is_uplink(&self) -> bool {
        self.kind() < 0x80
    }
}

/// PROTOCOL.md's name for a kind byte.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "HELLO",
        kind::IGNITION_ON => "IGNITION_ON",
        kind::IGNITION_OFF => "IGNITION_OFF",
        kind::HEARTBEAT => "HEARTBEAT",
        kind::LAMP => "LAMP",
        kind::DTC_REPORT => "DTC_REPORT",
        kind::POWER_LOST => "POWER_LOST",
        kind::POWER_RESTORED => "POWER_RESTORED",
        kind::ACK => "ACK",
        kind::TIME => "TIME",
        kind::REQUEST_DTC => "REQUEST_DTC",
        kind::REQUEST_STATUS => "REQUEST_STATUS",
        _ => return None,
    })
}

/// One protocol message: header fields and a typed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub seq: u16,
    pub device_id: u64,
    pub time_ms: u64,
    pub body: Body,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let v = self.b[0];
        self.b = &self.b[1..];
        v
    }
    fn u16(&mut self) -> u16 {
        let v = u16::from_le_bytes([self.b[0], self.b[1]]);
        self.b = &self.b[2..];
        v
    }
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.b[..4].try_into().expect("length checked"));
        self.b = &self.b[4..];
        v
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let v: [u8; N] = self.b[..N].try_into().expect("length checked");
        self.b = &self.b[N..];
        v
    }
}

/// Body length of each fixed-size kind; DTC_REPORT is 3 + 4n.
fn fixed_len(kind: u8) -> Option<usize> {
    Some(match kind {
        kind::HELLO => 21,
        kind::IGNITION_ON => 4,
        kind::IGNITION_OFF => 8,
        kind::HEARTBEAT => 15,
        kind::LAMP => 2,
        kind::POWER_LOST => 1,
        kind::POWER_RESTORED => 4,
        kind::ACK => 2,
        kind::TIME => 0,
        kind::REQUEST_DTC => 2,
        kind::REQUEST_STATUS => 0,
        _ => return None,
    })
}

impl Message {
    /// Parses a payload (without CRC). Checks version, kind, the exact body
    /// length of the kind, and the fields whose values the protocol
    /// enumerates (engine, lamp state, VIN characters).
    pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
        let h = Header::parse(payload).ok_or(DecodeError::Truncated(payload.len()))?;
        if h.version != VERSION {
            return Err(DecodeError::Version(h.version));
        }
        let body = &payload[HEADER_LEN..];
        let expected = match h.kind {
            kind::DTC_REPORT => match body.get(2) {
                Some(&n) => 3 + 4 * n as usize,
                None => 3,
            },
            k => fixed_len(k).ok_or(DecodeError::UnknownKind(k))?,
        };
        if body.len() != expected {
            return Err(DecodeError::Length {
                kind: h.kind,
                expected,
                got: body.len(),
            });
        }
        let field = |field, value: u64| DecodeError::Field {
            kind: h.kind,
            field,
            value,
        };
        let mut r = Reader { b: body };
        let body = match h.kind {
            kind::HELLO => {
                let vin: [u8; 17] = r.bytes();
                let vin = if vin == [0; 17] {
                    None
                } else if vin.iter().all(|c| c.is_ascii_graphic()) {
                    Some(Vin(vin))
                } else {
                    return Err(field("vin", 0));
                };
                let [a, b, c] = r.bytes();
                let flags = r.u8();
                Body::Hello(Hello {
                    vin,
                    firmware: Firmware(a, b, c),
                    after_power_loss: flags & 1 != 0,
                    flags,
                })
            }
            kind::IGNITION_ON => Body::IgnitionOn {
                odometer_km: r.u32(),
            },
            kind::IGNITION_OFF => Body::IgnitionOff {
                odometer_km: r.u32(),
                run_s: r.u32(),
            },
            kind::HEARTBEAT => {
                let engine = match r.u8() {
                    0 => Engine::Parked,
                    1 => Engine::Running,
                    v => return Err(field("engine", v.into())),
                };
                Body::Heartbeat(Heartbeat {
                    engine,
                    run_s: r.u32(),
                    odometer_km: r.u32(),
                    battery_mv: r.u16(),
                    lamps: r.u32(),
                })
            }
            kind::LAMP => {
                let lamp = r.u8();
                let lit = match r.u8() {
                    0 => false,
                    1 => true,
                    v => return Err(field("state", v.into())),
                };
                if lamp == 0 {
                    return Err(field("lamp", 0));
                }
                Body::Lamp { lamp, lit }
            }
            kind::DTC_REPORT => {
                let ecu = r.u16();
                let n = r.u8();
                let entries = (0..n)
                    .map(|_| DtcEntry {
                        dtc: Dtc(r.bytes()),
                        status: r.u8(),
                    })
                    .collect();
                Body::DtcReport(DtcReport { ecu, entries })
            }
            kind::POWER_LOST => Body::PowerLost {
                reason: PowerLossReason::from_byte(r.u8()),
            },
            kind::POWER_RESTORED => Body::PowerRestored { down_s: r.u32() },
            kind::ACK => Body::Ack { acked_seq: r.u16() },
            kind::TIME => Body::Time,
            kind::REQUEST_DTC => Body::RequestDtc { ecu: r.u16() },
            kind::REQUEST_STATUS => Body::RequestStatus,
            k => return Err(DecodeError::UnknownKind(k)),
        };
        Ok(Message {
            seq: h.seq,
            device_id: h.device_id,
            time_ms: h.time_ms,
            body,
        })
    }

    /// Appends this message's payload (without CRC) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.body.kind());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.device_id.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        match &self.body {
            Body::Hello(h) => {
                out.extend_from_slice(&h.vin.map_or([0; 17], |v| v.0));
                out.extend_from_slice(&[h.firmware.0, h.firmware.1, h.firmware.2]);
                out.push((h.flags & !1) | h.after_power_loss as u8);
            }
            Body::IgnitionOn { odometer_km } => out.extend_from_slice(&odometer_km.to_le_bytes()),
            Body::IgnitionOff { odometer_km, run_s } => {
                out.extend_from_slice(&odometer_km.to_le_bytes());
                out.extend_from_slice(&run_s.to_le_bytes());
            }
            Body::Heartbeat(hb) => {
                out.push(match hb.engine {
                    Engine::Parked => 0,
                    Engine::Running => 1,
                });
                out.extend_from_slice(&hb.run_s.to_le_bytes());
                out.extend_from_slice(&hb.odometer_km.to_le_bytes());
                out.extend_from_slice(&hb.battery_mv.to_le_bytes());
                out.extend_from_slice(&hb.lamps.to_le_bytes());
            }
            Body::Lamp { lamp, lit } => out.extend_from_slice(&[*lamp, *lit as u8]),
            Body::DtcReport(rep) => {
                // At most 255 entries fit the count byte; a larger report is
                // a caller bug, so it is cut rather than encoded wrongly.
                let n = rep.entries.len().min(255);
                out.extend_from_slice(&rep.ecu.to_le_bytes());
                out.push(n as u8);
                for e in &rep.entries[..n] {
                    out.extend_from_slice(&e.dtc.0);
                    out.push(e.status);
                }
            }
            Body::PowerLost { reason } => out.push(reason.to_byte()),
            Body::PowerRestored { down_s } => out.extend_from_slice(&down_s.to_le_bytes()),
            Body::Ack { acked_seq } => out.extend_from_slice(&acked_seq.to_le_bytes()),
            Body::Time | Body::RequestStatus => {}
            Body::RequestDtc { ecu } => out.extend_from_slice(&ecu.to_le_bytes()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }
}

/// The lamp names of PROTOCOL.md; unknown ids are "lamp N".
pub fn lamp_name(id: u8) -> Cow<'static, str> {
    Cow::Borrowed(match id {
        1 => "engine (MIL)",
        2 => "charging system",
        3 => "oil pressure",
        4 => "coolant temperature",
        5 => "brake system",
        6 => "ABS",
        7 => "airbag (SRS)",
        8 => "tyre pressure (TPMS)",
        9 => "particulate filter",
        10 => "glow plug",
        11 => "stability/traction control",
        12 => "emissions/AdBlue",
        13 => "service due",
        14 => "power steering",
        15 => "other",
        n => return Cow::Owned(format!("lamp {n}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtc_formatting_matches_protocol_examples() {
        assert_eq!(Dtc([0x03, 0x01, 0x00]).to_string(), "P0301");
        assert_eq!(Dtc([0xC1, 0x23, 0x1C]).to_string(), "U0123-1C");
        assert_eq!(Dtc([0x41, 0x00, 0x00]).to_string(), "C0100");
        assert_eq!(Dtc([0xBF, 0xFF, 0x01]).to_string(), "B3FFF-01");
        for s in ["P0301", "U0123-1C", "C0100", "B3FFF-01"] {
            assert_eq!(Dtc::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Dtc::parse("P4301"), None);
        assert_eq!(Dtc::parse("X0301"), None);
    }

    #[test]
    fn lamp_names() {
        assert_eq!(lamp_name(1), "engine (MIL)");
        assert_eq!(lamp_name(15), "other");
        assert_eq!(lamp_name(20), "lamp 20");
    }

    #[test]
    fn heartbeat_lamp_bits() {
        let hb = Heartbeat {
            engine: Engine::Parked,
            run_s: 0,
            odometer_km: 0,
            battery_mv: 12600,
            lamps: 0b1000_0000_0000_0101,
        };
        assert_eq!(hb.lit_lamps().collect::<Vec<_>>(), vec![1, 3, 16]);
    }
}
