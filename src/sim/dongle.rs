//! One CC-Link unit's side of PROTOCOL.md section 4: stop and wait with
//! retransmission, seq numbering, its own clock (skewed until a TIME says
//! otherwise), a bounded buffer for what it cannot send yet (out of reach,
//! or waiting for an ACK), and the last gasp of a power loss. Pure: the
//! simulated time (`sim_ms`, what the unit's clock follows) and the real
//! time (`real_ms`, what its retransmission timer follows) are arguments.

use std::collections::VecDeque;

use crate::link::message::{kind, Body, Firmware, Hello, Message, PowerLossReason, Vin};

/// A unit adjusts its clock when a TIME shows it more than this far off.
pub const TIME_TOLERANCE_MS: u64 = 2_000;

/// A message the unit holds but has not put in flight.
#[derive(Clone, Debug)]
enum Queued {
    /// Not sent yet: numbered when it goes out.
    Fresh { time_ms: u64, body: Body },
    /// Sent before a reboot and never ACKed: resent as it was.
    Sent {
        seq: u16,
        kind: u8,
        payload: Vec<u8>,
    },
}

impl Queued {
    fn is_heartbeat(&self) -> bool {
        matches!(
            self,
            Queued::Fresh {
                body: Body::Heartbeat(_),
                ..
            }
        )
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    seq: u16,
    kind: u8,
    payload: Vec<u8>,
    last_sent_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    /// Supply gone; the unit lives on its reserve until `until_ms` (real)
    /// to get POWER_LOST out and hear its ACK.
    Gasp {
        until_ms: u64,
    },
    Off,
}

/// What [`Dongle::transmit`] put on the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    pub kind: u8,
    /// A copy of a message sent before (same seq, time_ms and bytes).
    pub again: bool,
}

/// The answer to an ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// Released the message in flight, of this kind.
    Released(u8),
    /// Matched nothing in flight: a repeat ACK or a late one.
    Stale,
}

pub(crate) struct Dongle {
    pub device_id: u64,
    vin: Option<Vin>,
    firmware: Firmware,
    next_seq: u16,
    /// Device clock minus simulated time.
    clock_offset_ms: i64,
    in_flight: Option<InFlight>,
    queue: VecDeque<Queued>,
    capacity: usize,
    in_reach: bool,
    power: Power,
}

impl Dongle {
    pub fn new(
        device_id: u64,
        vin: Option<Vin>,
        firmware: Firmware,
        first_seq: u16,
        skew_ms: u64,
        capacity: usize,
    ) -> Dongle {
        Dongle {
            device_id,
            vin,
            firmware,
            next_seq: first_seq,
            clock_offset_ms: skew_ms.min(i64::MAX as u64) as i64,
            in_flight: None,
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            in_reach: true,
            // Off until the lot boots it.
            power: Power::Off,
        }
    }

    /// The unit's clock at simulated time `sim_ms`.
    pub fn device_time(&self, sim_ms: u64) -> u64 {
        sim_ms.saturating_add_signed(self.clock_offset_ms)
    }

    /// Whether the unit is powered (or gasping) and in radio reach, so it can
    /// hear the appliance and be heard.
    pub fn can_talk(&self) -> bool {
        self.power != Power::Off && self.in_reach
    }

    pub fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nothing in flight and nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.queue.len()
    }

    pub fn set_reach(&mut self, in_reach: bool) {
        self.in_reach = in_reach;
    }

    /// Makes room for one more message. A full buffer evicts the oldest
    /// unsent HEARTBEAT (a periodic sample the next one supersedes), and only
    /// when it holds none, the oldest unsent message of any kind. A message
    /// already sent is never evicted: the appliance may have applied it.
    fn make_room(&mut self) -> Option<u8> {
        if self.queue.len() < self.capacity {
            return None;
        }
        let victim = self
            .queue
            .iter()
            .position(Queued::is_heartbeat)
            .or_else(|| {
                self.queue
                    .iter()
                    .position(|q| matches!(q, Queued::Fresh { .. }))
            })?;
        match self.queue.remove(victim) {
            Some(Queued::Fresh { body, .. }) => Some(body.kind()),
            Some(Queued::Sent { kind, .. }) => Some(kind),
            None => None,
        }
    }

    /// Buffers a new message stamped with the unit's clock at `sim_ms`.
    /// Returns the kind of a message evicted to make room, if any.
    pub fn enqueue(&mut self, body: Body, sim_ms: u64) -> Option<u8> {
        let evicted = self.make_room();
        self.queue.push_back(Queued::Fresh {
            time_ms: self.device_time(sim_ms),
            body,
        });
        evicted
    }

    /// Whether an answer to REQUEST_STATUS is already waiting to go out.
    pub fn holds_unsent_hello(&self) -> bool {
        self.queue.iter().any(|q| {
            matches!(
                q,
                Queued::Fresh {
                    body: Body::Hello(_),
                    ..
                }
            )
        })
    }

    pub fn hello(&self, after_power_loss: bool) -> Body {
        Body::Hello(Hello {
            vin: self.vin,
            firmware: self.firmware,
            after_power_loss,
            flags: after_power_loss as u8,
        })
    }

    /// Powers the unit up. A boot starts with a HELLO, ahead of anything the
    /// unit kept through the outage: the queue, and a message that was in
    /// flight, which goes out again unchanged after the HELLO. After a power
    /// loss (`Some(down_s)`) the HELLO carries flag bit 0 and POWER_RESTORED
    /// follows the kept messages, so it comes after the POWER_LOST.
    pub fn boot(&mut self, sim_ms: u64, after_loss: Option<u32>) -> Option<u8> {
        self.power = Power::On;
        if let Some(f) = self.in_flight.take() {
            self.queue.push_front(Queued::Sent {
                seq: f.seq,
                kind: f.kind,
                payload: f.payload,
            });
        }
        let mut evicted = self.make_room();
        let hello = self.hello(after_loss.is_some());
        self.queue.push_front(Queued::Fresh {
            time_ms: self.device_time(sim_ms),
            body: hello,
        });
        if let Some(down_s) = after_loss {
            evicted = self
                .enqueue(Body::PowerRestored { down_s }, sim_ms)
                .or(evicted);
        }
        evicted
    }

    /// The supply is gone at `sim_ms`: POWER_LOST is buffered as the last
    /// gasp, and the unit lives on its reserve for one retransmission
    /// interval (restarted when POWER_LOST goes out) to send it and hear the
    /// ACK. What it has not got out by then waits for the next boot.
    pub fn lose_power(
        &mut self,
        sim_ms: u64,
        reason: PowerLossReason,
        real_ms: u64,
        retransmit_ms: u64,
    ) -> Option<u8> {
        if self.power == Power::Off {
            return None;
        }
        let evicted = self.enqueue(Body::PowerLost { reason }, sim_ms);
        self.power = Power::Gasp {
            until_ms: real_ms + retransmit_ms,
        };
        evicted
    }

    /// When the reserve of a gasping unit runs out (real ms).
    pub fn gasp_ends_at(&self) -> Option<u64> {
        match self.power {
            Power::Gasp { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    /// Ends the gasp if its reserve has run out by `real_ms`.
    pub fn check_reserve(&mut self, real_ms: u64) {
        if let Power::Gasp { until_ms } = self.power {
            if real_ms >= until_ms {
                self.power = Power::Off;
            }
        }
    }

    /// When the message in flight is due to go out again (real ms).
    #[cfg(test)]
    pub fn retransmit_at(&self, retransmit_ms: u64) -> Option<u64> {
        self.in_flight
            .as_ref()
            .map(|f| f.last_sent_ms + retransmit_ms)
    }

    /// Puts the next message on the air if stop and wait allows it now: the
    /// unACKed one when its retransmission is due, else the next buffered one
    /// when nothing is in flight. Its bytes are then [`Dongle::on_air`].
    pub fn transmit(&mut self, real_ms: u64, retransmit_ms: u64) -> Option<Sent> {
        self.check_reserve(real_ms);
        if !self.can_talk() {
            return None;
        }
        if let Some(f) = self.in_flight.as_mut() {
            if real_ms < f.last_sent_ms + retransmit_ms {
                return None;
            }
            f.last_sent_ms = real_ms;
            return Some(Sent {
                kind: f.kind,
                again: true,
            });
        }
        let (seq, kind, payload, again) = match self.queue.pop_front()? {
            Queued::Fresh { time_ms, body } => {
                let seq = self.next_seq;
                self.next_seq = seq.wrapping_add(1);
                let kind = body.kind();
                let payload = Message {
                    seq,
                    device_id: self.device_id,
                    time_ms,
                    body,
                }
                .encode();
                (seq, kind, payload, false)
            }
            Queued::Sent { seq, kind, payload } => (seq, kind, payload, true),
        };
        if kind == kind::POWER_LOST {
            if let Power::Gasp { until_ms } = &mut self.power {
                *until_ms = real_ms + retransmit_ms;
            }
        }
        self.in_flight = Some(InFlight {
            seq,
            kind,
            payload,
            last_sent_ms: real_ms,
        });
        Some(Sent { kind, again })
    }

    /// The payload of the message in flight (what the last transmit sent).
    pub fn on_air(&self) -> Option<&[u8]> {
        self.in_flight.as_ref().map(|f| f.payload.as_slice())
    }

    /// An ACK for this unit: matched by acked_seq only (PROTOCOL.md 4).
    pub fn on_ack(&mut self, acked_seq: u16) -> AckOutcome {
        match &self.in_flight {
            Some(f) if f.seq == acked_seq => {
                let kind = f.kind;
                self.in_flight = None;
                if kind == kind::POWER_LOST && matches!(self.power, Power::Gasp { .. }) {
                    // The last gasp was heard: nothing left to live for.
                    self.power = Power::Off;
                }
                AckOutcome::Released(kind)
            }
            _ => AckOutcome::Stale,
        }
    }

    /// A TIME whose appliance clock, on the simulated timeline, reads
    /// `appliance_ms`. Returns whether the unit's clock moved.
    pub fn on_time(&mut self, appliance_ms: u64, sim_ms: u64) -> bool {
        if self.device_time(sim_ms).abs_diff(appliance_ms) <= TIME_TOLERANCE_MS {
            return false;
        }
        self.clock_offset_ms = (appliance_ms as i128 - sim_ms as i128)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::message::{Engine, Heartbeat};

    const T0: u64 = 1_767_225_600_000;
    const RT: u64 = 2_000;

    fn hb() -> Body {
        Body::Heartbeat(Heartbeat {
            engine: Engine::Parked,
            run_s: 0,
            odometer_km: 1,
            battery_mv: 12_600,
            lamps: 0,
        })
    }

    fn booted(first_seq: u16) -> Dongle {
        let mut d = Dongle::new(
            7,
            Vin::parse("WVWZZZAUZJW000001"),
            Firmware(1, 5, 0),
            first_seq,
            0,
            16,
        );
        d.boot(T0, None);
        d
    }

    fn send(d: &mut Dongle, real: u64) -> Option<Message> {
        d.transmit(real, RT)?;
        Message::decode(d.on_air()?).ok()
    }

    #[test]
    fn retransmits_the_same_bytes_every_two_seconds_until_acked() {
        // PROTOCOL.md 4: same seq, same time_ms, same bytes, 2 s after the last send.
        let mut d = booted(10);
        d.enqueue(hb(), T0 + 5);
        assert_eq!(
            d.transmit(0, RT),
            Some(Sent {
                kind: kind::HELLO,
                again: false
            })
        );
        let first = d.on_air().unwrap().to_vec();
        assert_eq!(d.transmit(1_999, RT), None, "not before 2 s");
        assert_eq!(
            d.transmit(2_000, RT),
            Some(Sent {
                kind: kind::HELLO,
                again: true
            })
        );
        assert_eq!(d.on_air().unwrap(), first.as_slice());
        assert_eq!(
            d.transmit(3_000, RT),
            None,
            "2 s after the last send, not the first"
        );
        assert_eq!(d.retransmit_at(RT), Some(4_000));
        assert_eq!(d.on_ack(9), AckOutcome::Stale, "matched by acked_seq only");
        assert_eq!(d.on_ack(10), AckOutcome::Released(kind::HELLO));
        assert_eq!(
            d.on_ack(10),
            AckOutcome::Stale,
            "a repeat ACK releases nothing"
        );
        let next = send(&mut d, 4_001).unwrap();
        assert_eq!((next.seq, next.time_ms), (11, T0 + 5));
    }

    #[test]
    fn seq_wraps_from_65535_to_0() {
        let mut d = booted(65_535);
        d.enqueue(hb(), T0);
        let a = send(&mut d, 0).unwrap();
        d.on_ack(a.seq);
        let b = send(&mut d, 1).unwrap();
        assert_eq!((a.seq, b.seq), (65_535, 0));
    }

    #[test]
    fn never_two_messages_in_flight() {
        let mut d = booted(1);
        for i in 0..5 {
            d.enqueue(hb(), T0 + i);
        }
        assert!(send(&mut d, 0).is_some());
        for real in [1, 10, 100, 1_999] {
            assert_eq!(d.transmit(real, RT), None);
        }
        assert!(d.is_waiting());
    }

    #[test]
    fn out_of_reach_buffers_and_replays_in_order() {
        let mut d = booted(1);
        let hello = send(&mut d, 0).unwrap();
        d.on_ack(hello.seq);
        d.set_reach(false);
        for i in 1..=4 {
            d.enqueue(Body::Lamp { lamp: i, lit: true }, T0 + i as u64 * 1000);
        }
        assert_eq!(d.transmit(10_000, RT), None, "nobody hears it");
        d.set_reach(true);
        let mut got = Vec::new();
        while let Some(m) = send(&mut d, 20_000) {
            got.push((m.seq, m.time_ms));
            d.on_ack(m.seq);
        }
        assert_eq!(
            got,
            [
                (2, T0 + 1000),
                (3, T0 + 2000),
                (4, T0 + 3000),
                (5, T0 + 4000)
            ]
        );
    }

    #[test]
    fn a_full_buffer_evicts_the_oldest_heartbeat_first() {
        let mut d = Dongle::new(7, None, Firmware(1, 0, 0), 1, 0, 3);
        d.boot(T0, None); // HELLO
        d.enqueue(hb(), T0 + 1);
        d.enqueue(Body::Lamp { lamp: 1, lit: true }, T0 + 2);
        assert_eq!(
            d.enqueue(
                Body::Lamp {
                    lamp: 1,
                    lit: false
                },
                T0 + 3
            ),
            Some(kind::HEARTBEAT)
        );
        assert_eq!(
            d.enqueue(Body::Lamp { lamp: 2, lit: true }, T0 + 4),
            Some(kind::HELLO)
        );
        assert_eq!(d.buffered(), 3);
    }

    #[test]
    fn time_corrects_a_clock_more_than_two_seconds_off() {
        let mut d = Dongle::new(7, None, Firmware(1, 0, 0), 1, 5 * 60_000, 8);
        assert_eq!(d.device_time(T0), T0 + 300_000);
        assert!(!d.on_time(T0 + 300_000 - 2_000, T0), "2 s off is tolerated");
        assert!(d.on_time(T0, T0));
        assert_eq!(d.device_time(T0 + 10), T0 + 10);
        assert!(!d.on_time(T0 + 1_500, T0));
    }

    #[test]
    fn a_gasp_that_is_acked_goes_dark_and_boots_with_the_flag() {
        let mut d = booted(1);
        let hello = send(&mut d, 0).unwrap();
        d.on_ack(hello.seq);
        d.lose_power(T0 + 60_000, PowerLossReason::Unplugged, 100, RT);
        let gasp = send(&mut d, 100).unwrap();
        assert_eq!(
            gasp.body,
            Body::PowerLost {
                reason: PowerLossReason::Unplugged
            }
        );
        assert_eq!(d.on_ack(gasp.seq), AckOutcome::Released(kind::POWER_LOST));
        assert!(!d.can_talk(), "silence after the last gasp");
        assert_eq!(d.transmit(5_000, RT), None);
        d.boot(T0 + 3_600_000, Some(3_540));
        let h = send(&mut d, 200).unwrap();
        let Body::Hello(hello) = h.body else {
            panic!("{h:?}")
        };
        assert!(hello.after_power_loss);
        assert_eq!(
            h.seq,
            gasp.seq.wrapping_add(1),
            "seq carries on across the outage"
        );
        d.on_ack(h.seq);
        assert_eq!(
            send(&mut d, 202).unwrap().body,
            Body::PowerRestored { down_s: 3_540 }
        );
    }

    #[test]
    fn an_unheard_gasp_is_resent_unchanged_after_the_boot_hello() {
        let mut d = booted(1);
        let hello = send(&mut d, 0).unwrap();
        d.on_ack(hello.seq);
        d.lose_power(T0 + 60_000, PowerLossReason::SupplyLow, 100, RT);
        assert!(send(&mut d, 100).is_some());
        let gasp_bytes = d.on_air().unwrap().to_vec();
        assert_eq!(
            d.transmit(2_100, RT),
            None,
            "the reserve is gone when a retransmission falls due"
        );
        assert!(!d.can_talk());
        d.boot(T0 + 7_200_000, Some(7_140));
        let boot_hello = send(&mut d, 3_000).unwrap();
        assert!(matches!(
            boot_hello.body,
            Body::Hello(Hello {
                after_power_loss: true,
                ..
            })
        ));
        d.on_ack(boot_hello.seq);
        assert_eq!(
            d.transmit(3_001, RT),
            Some(Sent {
                kind: kind::POWER_LOST,
                again: true
            })
        );
        assert_eq!(d.on_air().unwrap(), gasp_bytes.as_slice());
        let lost = Message::decode(&gasp_bytes).unwrap();
        d.on_ack(lost.seq);
        assert_eq!(
            send(&mut d, 3_002).unwrap().body,
            Body::PowerRestored { down_s: 7_140 }
        );
    }
}
