//! The one small trait a storage engine implements: named tables of sorted
//! byte keys and values, read snapshots, and atomic, durable write
//! transactions. Everything typed (records, key encoding, counters) is built
//! on top of it in `store/`, so an engine knows nothing of vehicles.

use std::ops::Bound;

/// A table: a stable one-byte id (used by engines that keep one keyspace)
/// and a name (used by engines with named tables). Both never change once
/// data has been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table {
    pub id: u8,
    pub name: &'static str,
}

/// Errors of the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full or the file system refused to write. Nothing of the
    /// failed transaction was applied.
    #[error("storage is full or read-only: {0}")]
    NoSpace(String),
    /// Another process holds the database (the appliance is running).
    #[error("the database is in use by another process: {0}")]
    Locked(String),
    /// The data on disk does not decode; the cause says where.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory was written by a newer schema.
    #[error("data directory has schema version {found}, this build knows up to {known}: upgrade Forecourt")]
    SchemaTooNew { found: u32, known: u32 },
    /// Any other engine or IO error.
    #[error("storage error: {0}")]
    Engine(String),
    /// A transaction body asked to abort; nothing was written.
    #[error("{0}")]
    Aborted(String),
}

impl StoreError {
    /// True when retrying the same transaction later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::NoSpace(_) | StoreError::Engine(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key range, as borrowed bounds.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Key/value pairs returned by a scan.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads, inside or outside a write transaction.
pub trait Read {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` pairs of `range` in key order, or in reverse key order
    /// when `reverse` is set.
    fn scan(&self, table: Table, range: KeyRange<'_>, reverse: bool, limit: usize)
        -> Result<Pairs>;
}

/// A write transaction: reads see its own writes.
pub trait Tx: Read {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes a key; true when it was there.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool>;
}

/// A storage engine. Reads outside a transaction see the last committed
/// state. [`Engine::write`] runs `body` in one transaction and commits it
/// durably (on disk, flushed, fsynced) before returning `Ok`; if `body`
/// returns an error, or the commit fails, nothing of it is visible, now or
/// after a restart. Writers are serialised.
pub trait Engine: Read + Send + Sync + 'static {
    /// "redb" or "sled".
    fn name(&self) -> &'static str;

    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;

    /// Bytes the engine's files take on disk.
    fn disk_size(&self) -> Result<u64>;
}
