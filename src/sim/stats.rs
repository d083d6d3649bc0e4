//! Counters of a running simulated lot, shared with whoever shows them (the
//! CLI's progress line, `forecourt demo`, the benchmarks). Plain atomics so
//! the IO loop never waits on a reader; [`SimStats::snapshot`] gives a
//! consistent-enough copy to print or serialize.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::link::message::kind_name;

/// Uplink kinds are 0x01..=0x08; index = kind - 1.
const UPLINK_KINDS: usize = 8;

/// Live counters of one or more simulated lots.
#[derive(Debug, Default)]
pub struct SimStats {
    /// New messages put on the wire (each message once, however often resent).
    pub sent: AtomicU64,
    /// Retransmissions of an unACKed message.
    pub retransmissions: AtomicU64,
    /// ACKs that released a unit's in-flight message.
    pub acked: AtomicU64,
    /// ACKs that matched nothing in flight (a repeat ACK of a copy, or late).
    pub duplicate_acks: AtomicU64,
    /// TIME messages heard by a unit.
    pub time_received: AtomicU64,
    /// TIME messages that moved a unit's clock (it was more than 2 s off).
    pub time_corrections: AtomicU64,
    /// REQUEST_STATUS heard by a unit (a broadcast counts once per unit).
    pub status_requests: AtomicU64,
    /// REQUEST_DTC heard by a unit.
    pub dtc_requests: AtomicU64,
    /// Messages evicted from a full unit buffer (see `docs/simulator.md`).
    pub dropped: AtomicU64,
    /// Frames or payloads from the appliance that failed COBS, CRC or decoding.
    pub rejected: AtomicU64,
    /// Units that currently hold an unACKed message.
    pub waiting: AtomicU64,
    /// Simulated time of the lot, ms since the epoch (0 before it starts).
    pub sim_time_ms: AtomicU64,
    sent_by_kind: [AtomicU64; UPLINK_KINDS],
}

/// A copy of [`SimStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStatsSnapshot {
    pub sent: u64,
    pub retransmissions: u64,
    pub acked: u64,
    pub duplicate_acks: u64,
    pub time_received: u64,
    pub time_corrections: u64,
    pub status_requests: u64,
    pub dtc_requests: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub waiting: u64,
    pub sim_time_ms: u64,
    /// New messages per kind, by PROTOCOL.md name (`HEARTBEAT`, ...).
    pub sent_by_kind: BTreeMap<&'static str, u64>,
}

impl SimStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> SimStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sent_by_kind = self
            .sent_by_kind
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((kind_name(i as u8 + 1)?, get(n))))
            .collect();
        SimStatsSnapshot {
            sent: get(&self.sent),
            retransmissions: get(&self.retransmissions),
            acked: get(&self.acked),
            duplicate_acks: get(&self.duplicate_acks),
            time_received: get(&self.time_received),
            time_corrections: get(&self.time_corrections),
            status_requests: get(&self.status_requests),
            dtc_requests: get(&self.dtc_requests),
            dropped: get(&self.dropped),
            rejected: get(&self.rejected),
            waiting: get(&self.waiting),
            sim_time_ms: get(&self.sim_time_ms),
            sent_by_kind,
        }
    }

    pub(crate) fn count_sent(&self, kind: u8) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = (kind as usize)
            .checked_sub(1)
            .and_then(|i| self.sent_by_kind.get(i))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unit_waits(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unit_released(&self) {
        // Saturating: a gauge shared by several lots must never wrap.
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(1))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_kinds_as_protocol_does() {
        let s = SimStats::new();
        s.count_sent(0x04);
        s.count_sent(0x04);
        s.count_sent(0x01);
        s.count_sent(0x99); // not an uplink kind: counted in total only
        let snap = s.snapshot();
        assert_eq!(snap.sent, 4);
        assert_eq!(snap.sent_by_kind["HEARTBEAT"], 2);
        assert_eq!(snap.sent_by_kind["HELLO"], 1);
        assert_eq!(snap.sent_by_kind["POWER_RESTORED"], 0);
        s.unit_released();
        assert_eq!(s.snapshot().waiting, 0, "the gauge never goes below zero");
    }
}
