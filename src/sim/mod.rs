//! A lot simulator that behaves as real CC-Link dongles do (PROTOCOL.md,
//! section 4 above all): stop and wait with retransmission, seq wrap, boot
//! HELLOs, buffered history replayed after time out of reach, skewed clocks
//! corrected by TIME, power losses with a last gasp. It drives the real
//! appliance over a real serial line (a pty, many units sharing it like a
//! lot radio gateway) or CAN, for `forecourt simulate`, `forecourt demo`,
//! the end-to-end tests and the benchmarks.
//!
//! Map: [`scenario`] decides what happens (seeded or scripted), [`vehicle`]
//! turns it into readings over time, [`dongle`] is one unit's protocol state
//! machine, [`lot`] runs them all on the simulated timeline, and
//! [`transport`] is the thin IO loop. Only `transport` does IO.

pub mod dongle;
pub mod identity;
pub mod lot;
pub mod scenario;
pub mod stats;
pub mod transport;
pub mod vehicle;

use std::path::{Path, PathBuf};

pub use identity::Identity;
pub use lot::SimTime;
pub use scenario::{BatteryHealth, Episode, Scenario, ScriptedUnit};
pub use stats::{SimStats, SimStatsSnapshot};
pub use transport::{flood_serial, run_bus, run_can, run_serial, run_serial_path, FloodReport};

use crate::link::message::BROADCAST;
use scenario::{generate_profiles, Profile};

/// Retransmission interval of PROTOCOL.md section 4.
pub const RETRANSMIT_MS: u64 = 2_000;
/// Default upper bound of one write to a serial line.
pub const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// What to simulate and how fast.
#[derive(Clone, Debug)]
pub struct LotConfig {
    /// Number of generated vehicles (ignored by a scripted scenario).
    pub vehicles: usize,
    /// How many times faster than the clock the timeline runs until it
    /// catches up with the clock (see [`SimTime`]).
    pub speed: f64,
    /// Everything generated (identities, episodes, noise) follows from it.
    pub seed: u64,
    /// How far before now the timeline starts: history to replay.
    pub backfill_ms: u64,
    /// How many generated units start with a clock minutes ahead.
    pub skewed_units: usize,
    pub scenario: Scenario,
    /// Real-time retransmission interval (PROTOCOL.md: 2 s).
    pub retransmit_ms: u64,
    /// Messages each unit can buffer (see `dongle::Dongle::enqueue` for
    /// what a full buffer drops).
    pub buffer_messages: usize,
    /// Upper bound of one write to a serial line.
    pub write_batch_bytes: usize,
}

impl Default for LotConfig {
    fn default() -> Self {
        LotConfig {
            vehicles: 20,
            speed: 1.0,
            seed: 1,
            backfill_ms: 0,
            skewed_units: 0,
            scenario: Scenario::Generated,
            retransmit_ms: RETRANSMIT_MS,
            buffer_messages: 2048,
            write_batch_bytes: WRITE_BATCH_BYTES,
        }
    }
}

impl LotConfig {
    /// Number of simulated units.
    pub fn units(&self) -> usize {
        match &self.scenario {
            Scenario::Generated => self.vehicles,
            Scenario::Scripted(units) => units.len(),
        }
    }

    /// Refuses settings the simulator cannot honour, naming the setting.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |s: String| Err(SimError::Config(s));
        if self.units() == 0 {
            return bad("vehicles: the lot needs at least one vehicle".into());
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return bad(format!("speed: {} is not a positive number", self.speed));
        }
        if self.skewed_units > self.vehicles && self.scenario == Scenario::Generated {
            return bad(format!(
                "skewed_units: {} is more than the {} vehicles",
                self.skewed_units, self.vehicles
            ));
        }
        if self.retransmit_ms == 0 {
            return bad("retransmit_ms: must be at least 1".into());
        }
        if self.write_batch_bytes == 0 {
            return bad("write_batch_bytes: must be at least 1".into());
        }
        if self.buffer_messages < 4 {
            return bad("buffer_messages: a unit needs room for at least 4 messages".into());
        }
        if let Scenario::Scripted(units) = &self.scenario {
            let mut seen = std::collections::HashSet::new();
            for u in units {
                if u.device_id == BROADCAST || !seen.insert(u.device_id) {
                    return bad(format!(
                        "scenario: device id {} is the broadcast id or used twice",
                        u.device_id
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn profiles(&self, start_ms: u64) -> Vec<Profile> {
        match &self.scenario {
            Scenario::Generated => {
                generate_profiles(self.seed, self.vehicles, self.skewed_units, start_ms)
            }
            Scenario::Scripted(units) => units.iter().map(Profile::from_script).collect(),
        }
    }
}

/// The vehicles a lot holds, as `run_*` would simulate them from a timeline
/// starting at `start_ms` (so the demo can print who is on the lot).
pub fn lot_identities(config: &LotConfig, start_ms: u64) -> Vec<Identity> {
    config
        .profiles(start_ms)
        .into_iter()
        .map(|p| p.identity)
        .collect()
}

/// Why a simulated lot could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator setting: {0}")]
    Config(String),
    #[error(
        "{units} units do not fit one CAN interface: node addresses 0x00-0xFD except 0xF1 allow \
         at most 253; use fewer vehicles or another interface"
    )]
    TooManyCanUnits { units: usize },
    #[error("cannot open serial port {}: {source}", path.display())]
    OpenSerial {
        path: PathBuf,
        source: tokio_serial::Error,
    },
    #[error("cannot open CAN interface {interface}: {source}")]
    OpenCan {
        interface: String,
        source: std::io::Error,
    },
    #[error("serial or CAN I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the appliance side of the link closed")]
    Closed,
}

impl SimError {
    pub(crate) fn open_serial(path: &Path, source: tokio_serial::Error) -> SimError {
        SimError::OpenSerial {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_the_setting_named() {
        assert!(LotConfig::default().validate().is_ok());
        let err = |c: LotConfig| c.validate().unwrap_err().to_string();
        assert!(err(LotConfig {
            vehicles: 0,
            ..Default::default()
        })
        .contains("vehicles"));
        assert!(err(LotConfig {
            speed: f64::NAN,
            ..Default::default()
        })
        .contains("speed"));
        assert!(err(LotConfig {
            speed: 0.0,
            ..Default::default()
        })
        .contains("speed"));
        assert!(err(LotConfig {
            skewed_units: 21,
            ..Default::default()
        })
        .contains("skewed_units"));
        let twice = Scenario::Scripted(vec![ScriptedUnit::new(1), ScriptedUnit::new(1)]);
        assert!(err(LotConfig {
            scenario: twice,
            ..Default::default()
        })
        .contains("used twice"));
    }

    #[test]
    fn identities_are_deterministic_from_the_seed() {
        let c = LotConfig {
            vehicles: 40,
            seed: 77,
            ..Default::default()
        };
        let start = 1_767_225_600_000;
        assert_eq!(lot_identities(&c, start), lot_identities(&c, start));
        let other = LotConfig {
            seed: 78,
            ..c.clone()
        };
        assert_ne!(lot_identities(&c, start), lot_identities(&other, start));
    }
}
