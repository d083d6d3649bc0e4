//! The only module that touches the database.
//!
//! [`engine`] is the small trait an engine implements (redb by default,
//! sled behind the `sled` feature); this module builds everything typed on
//! it: the tables and their key encoding, records as postcard with a
//! version byte, the schema version and its migrations, counters kept in
//! the same transaction as the change they count, and the per-unit dedupe
//! window, battery aggregates and bounded event history.

pub mod customers;
pub mod engine;
pub mod leads;
pub mod redb;
#[cfg(feature = "sled")]
pub mod sled;
#[cfg(test)]
mod suite;
pub mod tokens;
pub mod users;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use engine::{Engine, Result, StoreError, Table, Tx};

use crate::domain::vehicle::{Vehicle, VehicleEvent, HOUR_MS};
use crate::link::message::Engine as EngineState;

/// Which engine holds the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Redb,
    Sled,
}

/// Every table, with its stable id and name. Ids and names never change.
pub mod tables {
    use super::Table;
    pub const META: Table = Table {
        id: 1,
        name: "meta",
    };
    /// device_id (u64 BE) -> [`crate::domain::vehicle::Vehicle`]
    pub const VEHICLES: Table = Table {
        id: 2,
        name: "vehicles",
    };
    /// device_id (u64 BE) -> [`super::DedupeWindow`]
    pub const DEDUPE: Table = Table {
        id: 3,
        name: "dedupe",
    };
    /// counter name (UTF-8) -> u64 LE
    pub const COUNTERS: Table = Table {
        id: 4,
        name: "counters",
    };
    /// device_id (u64 BE) ++ hour since epoch (u64 BE) -> [`super::BatteryHour`]
    pub const BATTERY_HOURLY: Table = Table {
        id: 5,
        name: "battery_hourly",
    };
    /// device_id (u64 BE) ++ event number (u64 BE) -> [`crate::domain::vehicle::VehicleEvent`]
    pub const EVENTS: Table = Table {
        id: 6,
        name: "events",
    };
    /// device_id (u64 BE) -> [`crate::domain::lead::RuleState`]
    pub const RULES: Table = Table {
        id: 7,
        name: "rules",
    };
    /// lead id (u64 BE) -> [`crate::domain::lead::Lead`]
    pub const LEADS: Table = Table {
        id: 8,
        name: "leads",
    };
    /// device_id (u64 BE) ++ lead key -> lead id (u64 BE): the one open lead per key
    pub const OPEN_LEADS: Table = Table {
        id: 9,
        name: "open_leads",
    };
    /// device_id (u64 BE) ++ lead id (u64 BE) -> (): a vehicle's leads
    pub const LEADS_BY_DEVICE: Table = Table {
        id: 10,
        name: "leads_by_device",
    };
    /// Schema 1 only (opened_at ++ lead id): replaced by [`LEAD_ORDER`] and
    /// emptied by the migration to 2; listed so its id is never reused.
    pub const LEADS_BY_OPENED: Table = Table {
        id: 11,
        name: "leads_by_opened",
    };
    /// record kind (u8) ++ id (u64 BE) -> latest version (u64 LE): what sync sends
    pub const OUTBOX: Table = Table {
        id: 12,
        name: "outbox",
    };
    /// notification id (u64 BE) -> [`super::leads::Notification`]
    pub const NOTIFICATIONS: Table = Table {
        id: 13,
        name: "notifications",
    };
    /// message id (u64 BE) -> [`super::leads::CustomerMessage`]
    pub const MESSAGES: Table = Table {
        id: 14,
        name: "messages",
    };
    /// VIN (17 bytes) -> [`ConsentRecord`]
    pub const CONSENT: Table = Table {
        id: 15,
        name: "consent",
    };
    /// setting name (UTF-8) -> record
    pub const SETTINGS: Table = Table {
        id: 16,
        name: "settings",
    };
    pub const TOKENS: Table = Table {
        id: 17,
        name: "tokens",
    };
    /// user name, lower case (UTF-8) -> [`super::users::UserRecord`]
    pub const USERS: Table = Table {
        id: 18,
        name: "users",
    };
    /// SHA-256 of a session id (32 bytes) -> [`super::users::SessionRecord`]
    pub const SESSIONS: Table = Table {
        id: 19,
        name: "sessions",
    };
    /// sort (u8) ++ lead type (u8) ++ status (u8) ++ sort value (u64 BE)
    /// ++ lead id (u64 BE) -> (): the lead lists' orders, one range per
    /// (sort, type, status); see [`super::leads::LeadSort`].
    pub const LEAD_ORDER: Table = Table {
        id: 20,
        name: "lead_order",
    };
    /// customer id (u64 BE) -> [`crate::domain::customer::Customer`]
    pub const CUSTOMERS: Table = Table {
        id: 21,
        name: "customers",
    };
    /// DMS customer id (UTF-8) -> customer id (u64 BE): what an import matches on
    pub const CUSTOMERS_BY_DMS: Table = Table {
        id: 22,
        name: "customers_by_dms",
    };
    /// customer_since (u64 BE) ++ customer id (u64 BE) -> (): new customers
    /// of a period (R-SRC-3)
    pub const CUSTOMERS_BY_SINCE: Table = Table {
        id: 23,
        name: "customers_by_since",
    };
    /// VIN (17 bytes) -> [`crate::domain::customer::RegisteredVehicle`]
    pub const REGISTERED_VEHICLES: Table = Table {
        id: 24,
        name: "registered_vehicles",
    };
    /// customer id (u64 BE) ++ VIN (17 bytes) -> (): a customer's vehicles
    pub const VEHICLES_BY_CUSTOMER: Table = Table {
        id: 25,
        name: "vehicles_by_customer",
    };
    /// invitation id (u64 BE) -> [`crate::domain::customer::Invitation`]
    pub const INVITATIONS: Table = Table {
        id: 26,
        name: "invitations",
    };
    /// sent time (u64 BE) ++ invitation id (u64 BE) -> (): invitations
    /// stored as sent, so the ones lapsed by now are counted by one range
    pub const INVITATIONS_BY_SENT: Table = Table {
        id: 27,
        name: "invitations_by_sent",
    };
    /// sent time (u64 BE) ++ VIN (17 bytes) -> (): vehicles awaiting
    /// assignment on a sent invitation (they are without customer once it
    /// lapses; see [`crate::domain::customer::AssignmentBasis`])
    pub const AWAITING_BY_SENT: Table = Table {
        id: 28,
        name: "awaiting_by_sent",
    };
    /// source name, lower case (UTF-8) -> [`crate::domain::customer::Source`]
    pub const SOURCES: Table = Table {
        id: 29,
        name: "sources",
    };
    /// month index (u32 BE) ++ source name, lower case (UTF-8) ->
    /// [`crate::domain::customer::MarketingSpend`]
    pub const MARKETING_SPEND: Table = Table {
        id: 30,
        name: "marketing_spend",
    };
    /// VIN (17 bytes) -> device_id (u64 BE): the dongle last heard saying
    /// this VIN in a HELLO (a registered vehicle is connected when present)
    pub const VIN_DEVICE: Table = Table {
        id: 31,
        name: "vin_device",
    };
}

/// Durable totals shown by `/healthz` (SPEC.md: "durable totals since the
/// data directory was created").
pub mod counters {
    pub const VEHICLES: &str = "vehicles";
    pub const MESSAGES: &str = "messages";
    pub const DUPLICATES: &str = "duplicates";
    pub const REJECTED: &str = "rejected";
    /// Prefix of the per-reason rejection counters, e.g. `rejected.crc`.
    pub const REJECTED_PREFIX: &str = "rejected.";
}

/// The schema this build writes. Raise it with a migration in [`migrate`].
pub const SCHEMA_VERSION: u32 = 2;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Events kept per unit; older ones are dropped as new ones arrive.
pub const EVENTS_PER_VEHICLE: u64 = 500;
/// Battery aggregates are kept this long (the rules need 7 days).
pub const BATTERY_RETENTION_MS: u64 = 35 * 24 * HOUR_MS;
/// Keys remembered per unit for duplicate detection.
pub const DEDUPE_WINDOW: usize = 16;

/// A stored record: postcard bytes behind one version byte, so a record's
/// layout can change with a migration that knows the old one.
pub trait Record: Serialize + DeserializeOwned {
    const VERSION: u8;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![Self::VERSION];
        // postcard cannot fail on these plain types with a growable buffer.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&v, rest)) if v == Self::VERSION => postcard::from_bytes(rest).map_err(|e| {
                StoreError::Corrupt(format!("{}: {e}", std::any::type_name::<Self>()))
            }),
            Some((&v, _)) => Err(StoreError::Corrupt(format!(
                "{} record version {v}, expected {}",
                std::any::type_name::<Self>(),
                Self::VERSION
            ))),
            None => Err(StoreError::Corrupt(format!(
                "empty {} record",
                std::any::type_name::<Self>()
            ))),
        }
    }
}

impl Record for Vehicle {
    const VERSION: u8 = 1;
}

impl Record for VehicleEvent {
    const VERSION: u8 = 1;
}

/// The last keys (seq, time_ms) accepted from one unit, with a CRC of each
/// payload so that a same-key copy with different bytes can be logged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeWindow {
    pub recent: VecDeque<(u16, u64, u32)>,
}

impl Record for DedupeWindow {
    const VERSION: u8 = 1;
}

impl DedupeWindow {
    /// The payload CRC stored with `key`, when it was accepted.
    pub fn find(&self, seq: u16, time_ms: u64) -> Option<u32> {
        self.recent
            .iter()
            .rev()
            .find(|k| k.0 == seq && k.1 == time_ms)
            .map(|k| k.2)
    }

    pub fn remember(&mut self, seq: u16, time_ms: u64, crc: u32) {
        if self.recent.len() == DEDUPE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, time_ms, crc));
    }
}

/// Sums and counts of one hour's battery samples, parked and running apart,
/// so that any window's mean is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryHour {
    pub parked_sum_mv: u64,
    pub parked_n: u32,
    pub running_sum_mv: u64,
    pub running_n: u32,
    pub min_mv: u16,
    pub max_mv: u16,
}

impl Record for BatteryHour {
    const VERSION: u8 = 1;
}

impl BatteryHour {
    pub fn add(&mut self, engine: EngineState, mv: u16) {
        if self.parked_n == 0 && self.running_n == 0 {
            self.min_mv = mv;
            self.max_mv = mv;
        }
        self.min_mv = self.min_mv.min(mv);
        self.max_mv = self.max_mv.max(mv);
        match engine {
            EngineState::Parked => {
                self.parked_sum_mv += mv as u64;
                self.parked_n += 1;
            }
            EngineState::Running => {
                self.running_sum_mv += mv as u64;
                self.running_n += 1;
            }
        }
    }
}

pub fn device_key(device_id: u64) -> [u8; 8] {
    device_id.to_be_bytes()
}

pub(crate) fn pair_key(device_id: u64, n: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&device_id.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

pub(crate) fn get_record<T: Record>(
    r: &(impl engine::Read + ?Sized),
    table: Table,
    key: &[u8],
) -> Result<Option<T>> {
    r.get(table, key)?.map(|b| T::from_bytes(&b)).transpose()
}

fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("counter is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(b))
}

/// The typed store.
pub struct Store {
    engine: Box<dyn Engine>,
    /// Committed writes since open: what is read from the store can only
    /// have changed when this has (caches key on it).
    generation: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and brings its schema
    /// up to date.
    pub fn open(dir: &Path, kind: EngineKind) -> Result<Store> {
        let engine: Box<dyn Engine> = match kind {
            EngineKind::Redb => Box::new(redb::RedbEngine::open(dir)?),
            #[cfg(feature = "sled")]
            EngineKind::Sled => Box::new(sled::SledEngine::open(dir)?),
            #[cfg(not(feature = "sled"))]
            EngineKind::Sled => {
                return Err(StoreError::Engine(
                    "this build has no sled engine (cargo feature `sled`)".into(),
                ))
            }
        };
        Self::with_engine(engine)
    }

    /// Wraps an open engine and brings its schema up to date.
    pub fn with_engine(engine: Box<dyn Engine>) -> Result<Store> {
        let store = Store {
            engine,
            generation: Default::default(),
        };
        store.write(migrate)?;
        Ok(store)
    }

    pub fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// Runs `body` in one durable transaction; nothing of it is kept if it
    /// returns an error.
    pub fn write<R>(&self, body: impl FnOnce(&mut WriteTx<'_>) -> Result<R>) -> Result<R> {
        let mut body = Some(body);
        let mut out = None;
        self.engine.write(&mut |tx| {
            let body = body
                .take()
                .ok_or_else(|| StoreError::Engine("transaction body ran twice".into()))?;
            out = Some(body(&mut WriteTx { tx })?);
            Ok(())
        })?;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        out.ok_or_else(|| StoreError::Engine("transaction body did not run".into()))
    }

    /// Rises with every committed write. Read it before reading the store:
    /// a result computed then is current while this has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .engine
            .get(tables::META, SCHEMA_KEY)?
            .and_then(|b| b.try_into().ok().map(u32::from_le_bytes))
            .unwrap_or(0))
    }

    pub fn vehicle(&self, device_id: u64) -> Result<Option<Vehicle>> {
        get_record(&*self.engine, tables::VEHICLES, &device_key(device_id))
    }

    /// Vehicles in device-id order, starting after `after`.
    pub fn vehicles(&self, after: Option<u64>, limit: usize) -> Result<Vec<Vehicle>> {
        let start = after.map(device_key);
        let lower = match &start {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        self.engine
            .scan(tables::VEHICLES, (lower, Bound::Unbounded), false, limit)?
            .iter()
            .map(|(_, v)| Vehicle::from_bytes(v))
            .collect()
    }

    pub fn dedupe(&self, device_id: u64) -> Result<DedupeWindow> {
        Ok(get_record(&*self.engine, tables::DEDUPE, &device_key(device_id))?.unwrap_or_default())
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        self.engine
            .get(tables::COUNTERS, name.as_bytes())?
            .map_or(Ok(0), |b| decode_u64(&b))
    }

    /// The sum of the counters named `from..=to` in byte order, read in
    /// one scan (e.g. one lead type's daily counters over 30 days).
    pub fn counter_sum(&self, from: &str, to: &str) -> Result<u64> {
        self.engine
            .scan(
                tables::COUNTERS,
                (
                    Bound::Included(from.as_bytes()),
                    Bound::Included(to.as_bytes()),
                ),
                false,
                usize::MAX,
            )?
            .iter()
            .try_fold(0u64, |sum, (_, v)| Ok(sum + decode_u64(v)?))
    }

    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        self.engine
            .scan(
                tables::COUNTERS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                usize::MAX,
            )?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).into_owned(), decode_u64(&v)?)))
            .collect()
    }

    /// The unit's most recent events, newest first.
    pub fn events(&self, device_id: u64, limit: usize) -> Result<Vec<VehicleEvent>> {
        let (lo, hi) = (pair_key(device_id, 0), pair_key(device_id, u64::MAX));
        self.engine
            .scan(
                tables::EVENTS,
                (Bound::Included(&lo[..]), Bound::Included(&hi[..])),
                true,
                limit,
            )?
            .iter()
            .map(|(_, v)| VehicleEvent::from_bytes(v))
            .collect()
    }

    /// Battery aggregates of hours `from_hour..=to_hour`, oldest first.
    pub fn battery_hours(
        &self,
        device_id: u64,
        from_hour: u64,
        to_hour: u64,
    ) -> Result<Vec<(u64, BatteryHour)>> {
        let (lo, hi) = (pair_key(device_id, from_hour), pair_key(device_id, to_hour));
        self.engine
            .scan(
                tables::BATTERY_HOURLY,
                (Bound::Included(&lo[..]), Bound::Included(&hi[..])),
                false,
                usize::MAX,
            )?
            .iter()
            .map(|(k, v)| {
                let hour = u64::from_be_bytes(
                    k[8..16]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("hour key".into()))?,
                );
                Ok((hour, BatteryHour::from_bytes(v)?))
            })
            .collect()
    }

    pub fn disk_size(&self) -> Result<u64> {
        self.engine.disk_size()
    }

    /// Parked battery samples from `from_hour` on (R-LEAD-BATT).
    pub fn battery_window(
        &self,
        device_id: u64,
        from_hour: u64,
    ) -> Result<crate::domain::lead::BatteryWindow> {
        battery_window(&*self.engine, device_id, from_hour)
    }
}

fn battery_window(
    r: &(impl engine::Read + ?Sized),
    device_id: u64,
    from_hour: u64,
) -> Result<crate::domain::lead::BatteryWindow> {
    let (lo, hi) = (
        pair_key(device_id, from_hour),
        pair_key(device_id, u64::MAX),
    );
    let mut w = crate::domain::lead::BatteryWindow::default();
    for (_, v) in r.scan(
        tables::BATTERY_HOURLY,
        (Bound::Included(&lo[..]), Bound::Included(&hi[..])),
        false,
        usize::MAX,
    )? {
        let h = BatteryHour::from_bytes(&v)?;
        w.sum_mv += h.parked_sum_mv;
        w.samples += h.parked_n as u64;
    }
    Ok(w)
}

/// Brings a store to [`SCHEMA_VERSION`]. A new store is stamped; an older
/// one runs each step in order, in the same transaction; a newer one is
/// refused rather than misread.
fn migrate(tx: &mut WriteTx<'_>) -> Result<()> {
    let found = tx
        .tx
        .get(tables::META, SCHEMA_KEY)?
        .and_then(|b| b.try_into().ok().map(u32::from_le_bytes));
    match found {
        None => {}
        Some(v) if v == SCHEMA_VERSION => return Ok(()),
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                found: v,
                known: SCHEMA_VERSION,
            });
        }
        // Each step `v -> v + 1`, in order, as versions are added.
        Some(1) => leads::index_lead_orders(tx)?,
        Some(v) => {
            return Err(StoreError::Corrupt(format!("unknown schema version {v}")));
        }
    }
    tx.tx
        .put(tables::META, SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
}

/// A write transaction with typed operations.
pub struct WriteTx<'a> {
    tx: &'a mut dyn Tx,
}

impl WriteTx<'_> {
    /// The raw transaction, for tables this module does not type yet.
    pub fn raw(&mut self) -> &mut dyn Tx {
        self.tx
    }

    pub fn vehicle(&self, device_id: u64) -> Result<Option<Vehicle>> {
        get_record(&*self.tx, tables::VEHICLES, &device_key(device_id))
    }

    pub fn put_vehicle(&mut self, v: &Vehicle) -> Result<()> {
        self.tx
            .put(tables::VEHICLES, &device_key(v.device_id), &v.to_bytes())
    }

    pub fn dedupe(&self, device_id: u64) -> Result<DedupeWindow> {
        Ok(get_record(&*self.tx, tables::DEDUPE, &device_key(device_id))?.unwrap_or_default())
    }

    pub fn put_dedupe(&mut self, device_id: u64, w: &DedupeWindow) -> Result<()> {
        self.tx
            .put(tables::DEDUPE, &device_key(device_id), &w.to_bytes())
    }

    pub fn add_counter(&mut self, name: &str, delta: i64) -> Result<u64> {
        let now = self
            .tx
            .get(tables::COUNTERS, name.as_bytes())?
            .map_or(Ok(0), |b| decode_u64(&b))?;
        let next = now.saturating_add_signed(delta);
        if next == 0 {
            self.tx.delete(tables::COUNTERS, name.as_bytes())?;
        } else {
            self.tx
                .put(tables::COUNTERS, name.as_bytes(), &next.to_le_bytes())?;
        }
        Ok(next)
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        self.tx
            .get(tables::COUNTERS, name.as_bytes())?
            .map_or(Ok(0), |b| decode_u64(&b))
    }

    pub fn set_counter(&mut self, name: &str, value: u64) -> Result<()> {
        self.tx
            .put(tables::COUNTERS, name.as_bytes(), &value.to_le_bytes())
    }

    /// Parked battery samples from `from_hour` on (R-LEAD-BATT).
    pub fn battery_window(
        &self,
        device_id: u64,
        from_hour: u64,
    ) -> Result<crate::domain::lead::BatteryWindow> {
        battery_window(&*self.tx, device_id, from_hour)
    }

    /// Adds one battery sample to its hour's aggregate.
    pub fn add_battery_sample(
        &mut self,
        device_id: u64,
        hour: u64,
        engine: EngineState,
        mv: u16,
    ) -> Result<()> {
        let key = pair_key(device_id, hour);
        let mut agg: BatteryHour =
            get_record(&*self.tx, tables::BATTERY_HOURLY, &key)?.unwrap_or_default();
        agg.add(engine, mv);
        self.tx.put(tables::BATTERY_HOURLY, &key, &agg.to_bytes())
    }

    /// Appends to the unit's history (numbered by `v.events_written`, which
    /// it advances; the caller writes `v`) and drops the event that falls
    /// out of the bounded window.
    pub fn append_event(&mut self, v: &mut Vehicle, event: &VehicleEvent) -> Result<()> {
        let n = v.events_written;
        self.tx
            .put(tables::EVENTS, &pair_key(v.device_id, n), &event.to_bytes())?;
        v.events_written += 1;
        if n >= EVENTS_PER_VEHICLE {
            self.tx.delete(
                tables::EVENTS,
                &pair_key(v.device_id, n - EVENTS_PER_VEHICLE),
            )?;
        }
        Ok(())
    }

    /// Drops one unit's battery aggregates older than `before_hour`;
    /// returns how many.
    pub fn prune_battery(&mut self, device_id: u64, before_hour: u64) -> Result<usize> {
        let (lo, hi) = (pair_key(device_id, 0), pair_key(device_id, before_hour));
        let old = self.tx.scan(
            tables::BATTERY_HOURLY,
            (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
            false,
            10_000,
        )?;
        for (k, _) in &old {
            self.tx.delete(tables::BATTERY_HOURLY, k)?;
        }
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vehicle::EventKind;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        (dir, store)
    }

    #[test]
    fn schema_is_stamped_and_a_newer_one_refused() {
        let (dir, store) = open();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .write(|tx| {
                tx.raw().put(
                    tables::META,
                    SCHEMA_KEY,
                    &(SCHEMA_VERSION + 1).to_le_bytes(),
                )
            })
            .unwrap();
        drop(store);
        match Store::open(dir.path(), EngineKind::Redb) {
            Err(StoreError::SchemaTooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
            other => panic!("expected SchemaTooNew, got {:?}", other.err()),
        }
    }

    #[test]
    fn record_version_byte_is_checked() {
        let w = DedupeWindow::default();
        let mut b = w.to_bytes();
        assert_eq!(b[0], DedupeWindow::VERSION);
        assert_eq!(DedupeWindow::from_bytes(&b).unwrap(), w);
        b[0] = 99;
        assert!(matches!(
            DedupeWindow::from_bytes(&b),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            DedupeWindow::from_bytes(&[]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn counters_add_in_the_transaction_and_survive_reopen() {
        let (dir, store) = open();
        store
            .write(|tx| {
                tx.add_counter(counters::MESSAGES, 5)?;
                tx.add_counter(counters::MESSAGES, 2)
            })
            .unwrap();
        let failed: Result<()> = store.write(|tx| {
            tx.add_counter(counters::MESSAGES, 100)?;
            Err(StoreError::Aborted("no".into()))
        });
        assert!(failed.is_err());
        drop(store);
        let store = Store::open(dir.path(), EngineKind::Redb).unwrap();
        assert_eq!(store.counter(counters::MESSAGES).unwrap(), 7);
        assert_eq!(store.counters().unwrap().get("messages"), Some(&7));
    }

    #[test]
    fn events_are_bounded_per_vehicle_and_newest_first() {
        let (_dir, store) = open();
        let mut v = Vehicle::new(42, 0, 0);
        store
            .write(|tx| {
                for i in 0..(EVENTS_PER_VEHICLE + 10) {
                    let e = VehicleEvent {
                        at_ms: i,
                        received_ms: i,
                        kind: EventKind::IgnitionOn {
                            odometer_km: i as u32,
                        },
                    };
                    tx.append_event(&mut v, &e)?;
                }
                tx.put_vehicle(&v)
            })
            .unwrap();
        let all = store.events(42, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, EVENTS_PER_VEHICLE);
        assert_eq!(all[0].at_ms, EVENTS_PER_VEHICLE + 9);
        assert_eq!(all.last().unwrap().at_ms, 10);
        assert!(store.events(43, 10).unwrap().is_empty());
    }

    #[test]
    fn battery_hours_keep_exact_sums_and_prune() {
        let (_dir, store) = open();
        store
            .write(|tx| {
                tx.add_battery_sample(1, 100, EngineState::Parked, 11_600)?;
                tx.add_battery_sample(1, 100, EngineState::Parked, 11_700)?;
                tx.add_battery_sample(1, 100, EngineState::Running, 14_200)?;
                tx.add_battery_sample(1, 101, EngineState::Parked, 12_000)?;
                tx.add_battery_sample(2, 100, EngineState::Parked, 9_000)
            })
            .unwrap();
        let hours = store.battery_hours(1, 0, u64::MAX).unwrap();
        assert_eq!(hours.len(), 2);
        assert_eq!(
            hours[0],
            (
                100,
                BatteryHour {
                    parked_sum_mv: 23_300,
                    parked_n: 2,
                    running_sum_mv: 14_200,
                    running_n: 1,
                    min_mv: 11_600,
                    max_mv: 14_200
                }
            )
        );
        assert_eq!(store.write(|tx| tx.prune_battery(1, 101)).unwrap(), 1);
        assert_eq!(store.battery_hours(1, 0, u64::MAX).unwrap().len(), 1);
        assert_eq!(store.battery_hours(2, 0, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn dedupe_window_remembers_the_last_keys() {
        let mut w = DedupeWindow::default();
        for s in 0..(DEDUPE_WINDOW as u16 + 4) {
            w.remember(s, 1000 + s as u64, s as u32);
        }
        assert_eq!(w.find(3, 1003), None, "fell out of the window");
        assert_eq!(w.find(4, 1004), Some(4));
        assert_eq!(w.find(4, 1005), None, "same seq, other time: a new message");
    }
}
