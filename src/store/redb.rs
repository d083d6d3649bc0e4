//! The default storage engine: one redb file, `forecourt.redb`, with one redb
//! table per [`Table`]. redb gives snapshot reads beside a single writer and
//! fsyncs each commit, which is the durability contract of [`Engine`] as it
//! stands. What this module adds is the mapping of redb's errors onto
//! [`StoreError`] and recovery from a failed write: after an I/O error redb
//! refuses all further work until the database is closed and opened again,
//! so the engine does that itself rather than leave the appliance stuck
//! until a restart (a full SD card that is cleaned up must start taking
//! writes again).

use std::cell::{Cell, RefCell};
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};

use super::engine::{Engine, KeyRange, Pairs, Read, Result, StoreError, Table, Tx};

/// The one file the engine keeps in its directory.
pub const FILE_NAME: &str = "forecourt.redb";

/// redb's default page cache is 1 GiB, all of a small Raspberry Pi's memory.
/// The appliance's working set (recent records, counters, the outbox) is a
/// few megabytes, and a commit of a few hundred small records buffers well
/// under 1 MiB, so 64 MiB keeps reads cached without risking the OOM killer.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

type RawTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name)
}

/// The store on redb. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct RedbEngine {
    path: PathBuf,
    /// Readers and writers hold the read side for the length of one redb
    /// transaction; only closing and reopening after an I/O error takes the
    /// write side, so it never waits on anything but in-flight transactions.
    slot: RwLock<Slot>,
}

struct Slot {
    /// `None` after a reopen failed; the next operation tries again.
    db: Option<Database>,
    /// Bumped on every (re)open, so that two threads that saw the same
    /// failure reopen once, not twice.
    generation: u64,
}

impl RedbEngine {
    /// Opens (creating when missing) `dir/forecourt.redb`.
    pub fn open(dir: &Path) -> Result<RedbEngine> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(FILE_NAME);
        let created = !path.exists();
        let db = open_database(&path)?;
        if created {
            // The first commit fsyncs the file, not the directory entry that
            // names it; without this a power cut could lose the whole file.
            sync_directory(dir).map_err(|e| io_error(dir, e))?;
        }
        Ok(RedbEngine {
            path,
            slot: RwLock::new(Slot {
                db: Some(db),
                generation: 0,
            }),
        })
    }

    /// The open database under a read guard, reopening it first when an
    /// earlier failure left none.
    fn database(&self) -> Result<(RwLockReadGuard<'_, Slot>, u64)> {
        loop {
            let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
            if slot.db.is_some() {
                let generation = slot.generation;
                return Ok((slot, generation));
            }
            drop(slot);
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            if slot.db.is_none() {
                slot.db = Some(open_database(&self.path)?);
                slot.generation += 1;
            }
        }
    }

    /// Closes the database and opens it again, which is the only way out of
    /// redb's "previous I/O error" state; opening also repairs whatever a
    /// failed commit left half-written, back to the last durable commit.
    fn reopen_after_failure(&self, seen_generation: u64) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if slot.generation != seen_generation {
            return;
        }
        // Closing releases the file lock; the new handle cannot open before.
        drop(slot.db.take());
        slot.generation += 1;
        match open_database(&self.path) {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "reopened the store after an I/O error");
                slot.db = Some(db);
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "store stays closed after an I/O error; retrying on next use");
            }
        }
    }

    /// Runs one read transaction; a read that meets a latched I/O failure
    /// reopens the database and tries once more.
    fn read_with<T>(&self, read: impl Fn(&Database) -> Result<T, Failure>) -> Result<T> {
        let (slot, generation) = self.database()?;
        let db = slot.db.as_ref().ok_or_else(|| closed(&self.path))?;
        match read(db) {
            Ok(value) => Ok(value),
            Err(failure) if failure.latched => {
                drop(slot);
                self.reopen_after_failure(generation);
                let (slot, _) = self.database()?;
                let db = slot.db.as_ref().ok_or_else(|| closed(&self.path))?;
                read(db).map_err(|failure| failure.error)
            }
            Err(failure) => Err(failure.error),
        }
    }
}

impl Read for RedbEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_with(|db| {
            let txn = db.begin_read().map_err(|e| self.failure(e))?;
            let opened = match txn.open_table(definition(table)) {
                Ok(opened) => opened,
                // A table is created by its first write; until then it is empty.
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.failure(e)),
            };
            let value = opened.get(key).map_err(|e| self.failure(e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Pairs> {
        if limit == 0 || range_is_empty(range) {
            return Ok(Vec::new());
        }
        self.read_with(|db| {
            let txn = db.begin_read().map_err(|e| self.failure(e))?;
            let opened = match txn.open_table(definition(table)) {
                Ok(opened) => opened,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(self.failure(e)),
            };
            scan_table(&opened, range, reverse, limit).map_err(|e| self.failure(e))
        })
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let (slot, generation) = self.database()?;
        let db = slot.db.as_ref().ok_or_else(|| closed(&self.path))?;
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let failure = self.failure(e);
                if failure.latched {
                    drop(slot);
                    self.reopen_after_failure(generation);
                }
                return Err(failure.error);
            }
        };
        // Immediate is redb's default; said here because it is the contract.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.failure(e).error)?;

        let (outcome, latched) = {
            let mut tx = RedbTx {
                engine: self,
                txn: &txn,
                tables: RefCell::new(Vec::new()),
                latched: Cell::new(false),
            };
            let outcome = body(&mut tx);
            (outcome, tx.latched.get())
            // `tx` drops here: its tables must be closed before the commit.
        };

        let result = match outcome {
            Ok(()) => txn.commit().map_err(|e| self.failure(e)),
            Err(error) => {
                // Dropping would abort too; aborting explicitly surfaces the
                // (rare) failure to roll back in the log.
                if let Err(abort_error) = txn.abort() {
                    tracing::warn!(path = %self.path.display(), error = %abort_error, "aborting a write transaction failed");
                }
                Err(Failure { error, latched })
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(failure) => {
                if failure.latched || latched {
                    drop(slot);
                    self.reopen_after_failure(generation);
                }
                Err(failure.error)
            }
        }
    }

    fn disk_size(&self) -> Result<u64> {
        fs::metadata(&self.path)
            .map(|meta| meta.len())
            .map_err(|e| io_error(&self.path, e))
    }
}

/// A write transaction with the tables it has opened, so that a batch of
/// hundreds of puts to one table opens it once.
struct RedbTx<'t> {
    engine: &'t RedbEngine,
    txn: &'t WriteTransaction,
    /// A handful of tables per transaction: a vector beats a map here.
    tables: RefCell<Vec<(Table, RawTable<'t>)>>,
    /// Set when an operation hit an I/O error, after which redb refuses to
    /// commit and the database must be reopened.
    latched: Cell<bool>,
}

impl<'t> RedbTx<'t> {
    fn fail(&self, error: impl Into<redb::Error>) -> StoreError {
        let failure = self.engine.failure(error);
        if failure.latched {
            self.latched.set(true);
        }
        failure.error
    }

    /// The position of `table` in `tables`, opening (and so creating) it on
    /// first use.
    fn index_of(&self, table: Table) -> Result<usize> {
        let mut tables = self.tables.borrow_mut();
        if let Some(index) = tables.iter().position(|(t, _)| *t == table) {
            return Ok(index);
        }
        let opened = self
            .txn
            .open_table(definition(table))
            .map_err(|e| self.fail(e))?;
        tables.push((table, opened));
        Ok(tables.len() - 1)
    }
}

impl Read for RedbTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let index = self.index_of(table)?;
        let tables = self.tables.borrow();
        let value = tables[index].1.get(key).map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Pairs> {
        if limit == 0 || range_is_empty(range) {
            return Ok(Vec::new());
        }
        let index = self.index_of(table)?;
        let tables = self.tables.borrow();
        scan_table(&tables[index].1, range, reverse, limit).map_err(|e| self.fail(e))
    }
}

impl Tx for RedbTx<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let index = self.index_of(table)?;
        let mut tables = self.tables.borrow_mut();
        let result = tables[index].1.insert(key, value).map(drop);
        result.map_err(|e| self.fail(e))
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        let index = self.index_of(table)?;
        let mut tables = self.tables.borrow_mut();
        let result = tables[index].1.remove(key).map(|old| old.is_some());
        result.map_err(|e| self.fail(e))
    }
}

fn scan_table<T>(
    table: &T,
    range: KeyRange<'_>,
    reverse: bool,
    limit: usize,
) -> Result<Pairs, redb::StorageError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let entries = table.range::<&[u8]>(range)?;
    let mut pairs = Vec::with_capacity(limit.min(256));
    let mut push = |entry: Result<_, redb::StorageError>| -> Result<bool, redb::StorageError> {
        let (key, value): (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, &[u8]>) = entry?;
        pairs.push((key.value().to_vec(), value.value().to_vec()));
        Ok(pairs.len() < limit)
    };
    if reverse {
        for entry in entries.rev() {
            if !push(entry)? {
                break;
            }
        }
    } else {
        for entry in entries {
            if !push(entry)? {
                break;
            }
        }
    }
    Ok(pairs)
}

/// A redb error mapped for the caller, and whether redb has latched it (it
/// then refuses everything until the database is reopened).
struct Failure {
    error: StoreError,
    latched: bool,
}

impl RedbEngine {
    fn failure(&self, error: impl Into<redb::Error>) -> Failure {
        let error = error.into();
        let latched = matches!(
            error,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
        );
        Failure {
            error: map_error(&self.path, error),
            latched,
        }
    }
}

fn open_database(path: &Path) -> Result<Database> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| map_error(path, e.into()))
}

fn closed(path: &Path) -> StoreError {
    StoreError::Engine(format!("{} is closed after an I/O error", path.display()))
}

fn map_error(path: &Path, error: redb::Error) -> StoreError {
    match error {
        redb::Error::Io(io) => io_error(path, io),
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked(format!("{} is already open", path.display()))
        }
        redb::Error::Corrupted(cause) => {
            StoreError::Corrupt(format!("{}: {cause}", path.display()))
        }
        redb::Error::PreviousIo => StoreError::Engine(format!(
            "{}: an earlier write failed with an I/O error; reopening",
            path.display()
        )),
        other => StoreError::Engine(format!("{}: {other}", path.display())),
    }
}

/// Maps an I/O error, telling a full or read-only disk (which the user can
/// fix) and a file that is not a database apart from everything else.
pub(super) fn io_error(path: &Path, error: io::Error) -> StoreError {
    match no_space_errno(&error) {
        // Rebuilt from the errno: engines wrap the OS error in their own
        // (sled as `Custom { .. Os { code: 28, .. } }`), which users should
        // not have to read.
        Some(errno) => StoreError::NoSpace(format!(
            "{}: {}",
            path.display(),
            io::Error::from_raw_os_error(errno)
        )),
        None if error.kind() == io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("{}: {error}", path.display()))
        }
        None => StoreError::Engine(format!("{}: {error}", path.display())),
    }
}

/// The errno of a "disk full", "quota exceeded" or "read-only file system"
/// error, however deeply an engine wrapped it.
fn no_space_errno(error: &io::Error) -> Option<i32> {
    match error.raw_os_error() {
        Some(errno @ (libc::ENOSPC | libc::EROFS | libc::EDQUOT)) => return Some(errno),
        Some(_) => return None,
        None => {}
    }
    match error.kind() {
        io::ErrorKind::StorageFull => Some(libc::ENOSPC),
        io::ErrorKind::ReadOnlyFilesystem => Some(libc::EROFS),
        _ => error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
            .and_then(no_space_errno),
    }
}

/// True when no key can lie in `range` (start after end, or an empty
/// half-open interval). Engines answer such a scan with nothing instead of
/// handing it to a B-tree that panics on it.
pub(super) fn range_is_empty(range: KeyRange<'_>) -> bool {
    match range {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end))
        | (Bound::Excluded(start), Bound::Excluded(end)) => start >= end,
    }
}

/// Makes a new directory entry durable (POSIX leaves it to the directory).
pub(super) fn sync_directory(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
