//! The alternative storage engine on sled 0.34 (cargo feature `sled`), kept
//! behind the same [`Engine`] trait and test suite as redb so that the
//! power-cut test, not opinion, picks the default. sled's own transactions
//! cannot iterate, so this engine builds the transaction itself: one sled
//! tree whose keys start with the table's one-byte id, writers serialised by
//! a mutex, and a write transaction that keeps its puts and deletes in an
//! overlay that its own reads and scans merge over the tree. Commit applies
//! the overlay as one atomic sled batch, then makes it durable. sled's
//! `flush` writes the log with `sync_file_range`, which neither flushes the
//! file's metadata nor the drive's write cache (sled issues #1452, #1351),
//! so the commit also `fdatasync`s the files sled wrote; see
//! docs/storage-engines.md.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::engine::{Engine, KeyRange, Pairs, Read, Result, StoreError, Table, Tx};
use super::redb::{io_error, range_is_empty, sync_directory};

/// The directory the engine keeps inside the data directory.
pub const DIR_NAME: &str = "sled";

/// sled's default cache is 1 GiB; see the redb engine for why 64 MiB.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Pending writes of a transaction: `None` is a delete. Keys carry the
/// table prefix, so the map sorts exactly as the tree does.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The store on sled. All methods take `&self`.
pub struct SledEngine {
    dir: PathBuf,
    /// Reads hold the read side for one get or one whole scan; a commit holds
    /// the write side from applying its batch until it is durable (or, on
    /// failure, until the database is reopened without it). So no reader
    /// sees a commit half applied, or before it is on disk.
    state: RwLock<State>,
    /// Serialises write transactions (the overlay is only valid while no
    /// other writer changes the tree beneath it).
    writer: Mutex<BlobSync>,
}

struct State {
    /// `None` after a reopen failed; the next operation tries again.
    db: Option<OpenDb>,
    generation: u64,
}

struct OpenDb {
    db: sled::Db,
    /// sled's log file, opened a second time so the commit can fdatasync it:
    /// on Linux an fsync covers the file, whichever descriptor asks.
    log: File,
}

/// Large values go to files under `blobs/` that sled writes but never
/// syncs. Blob files are named by a rising log sequence number, so the
/// commit syncs only those above the highest one synced so far.
struct BlobSync {
    synced_up_to: Option<i64>,
}

impl SledEngine {
    /// Opens (creating when missing) the sled database in `dir/sled/`.
    pub fn open(dir: &Path) -> Result<SledEngine> {
        let dir = dir.join(DIR_NAME);
        let created = !dir.exists();
        let db = open_database(&dir)?;
        if created {
            if let Some(parent) = dir.parent() {
                sync_directory(parent).map_err(|e| io_error(parent, e))?;
            }
        }
        Ok(SledEngine {
            dir,
            state: RwLock::new(State {
                db: Some(db),
                generation: 0,
            }),
            writer: Mutex::new(BlobSync { synced_up_to: None }),
        })
    }

    /// The open database under a read guard, reopening it first when an
    /// earlier failure left none.
    fn database(&self) -> Result<(RwLockReadGuard<'_, State>, u64)> {
        loop {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.db.is_some() {
                let generation = state.generation;
                return Ok((state, generation));
            }
            drop(state);
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if state.db.is_none() {
                state.db = Some(reopen_database(&self.dir)?);
                state.generation += 1;
            }
        }
    }

    /// After an I/O error sled keeps failing (its "global error"), and a
    /// batch it applied in memory may not be on disk. Reopening drops both
    /// and recovers the log up to the last durable batch.
    fn reopen(state: &mut State, dir: &Path) {
        drop(state.db.take());
        state.generation += 1;
        match reopen_database(dir) {
            Ok(db) => {
                tracing::info!(path = %dir.display(), "reopened the store after an I/O error");
                state.db = Some(db);
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "store stays closed after an I/O error; retrying on next use");
            }
        }
    }

    fn reopen_after_failure(&self, seen_generation: u64) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation == seen_generation {
            Self::reopen(&mut state, &self.dir);
        }
    }

    fn read_with<T>(&self, read: impl Fn(&sled::Tree) -> Result<T, Failure>) -> Result<T> {
        let (state, generation) = self.database()?;
        let open = state.db.as_ref().ok_or_else(|| closed(&self.dir))?;
        match read(&open.db) {
            Ok(value) => Ok(value),
            Err(failure) if failure.latched => {
                drop(state);
                self.reopen_after_failure(generation);
                let (state, _) = self.database()?;
                let open = state.db.as_ref().ok_or_else(|| closed(&self.dir))?;
                read(&open.db).map_err(|failure| failure.error)
            }
            Err(failure) => Err(failure.error),
        }
    }

    fn failure(&self, error: sled::Error) -> Failure {
        map_error(&self.dir, error)
    }

    /// Applies `overlay` as one batch and makes it durable, or leaves the
    /// store as it was before. Runs under the writer mutex.
    fn commit(&self, overlay: Overlay, blobs: &mut BlobSync) -> Result<()> {
        if overlay.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in overlay {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.db.is_none() {
            state.db = Some(reopen_database(&self.dir)?);
            state.generation += 1;
        }
        let open = state.db.as_ref().ok_or_else(|| closed(&self.dir))?;
        let durable = open
            .db
            .apply_batch(batch)
            .and_then(|()| open.db.flush())
            .map_err(|e| self.failure(e).error)
            .and_then(|_bytes| open.log.sync_data().map_err(|e| io_error(&self.dir, e)))
            .and_then(|()| sync_new_blobs(&self.dir, blobs));
        if durable.is_err() {
            // The batch may be applied in memory but not on disk. Reopening
            // while still holding the write side means no reader ever sees it.
            Self::reopen(&mut state, &self.dir);
        }
        durable
    }
}

impl Read for SledEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = prefixed(table, key);
        self.read_with(|tree| {
            let value = tree.get(&key).map_err(|e| self.failure(e))?;
            Ok(value.map(|v| v.to_vec()))
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
        self.read_with(|tree| {
            merged_scan(tree, None, table, range, reverse, limit).map_err(|e| self.failure(e))
        })
    }
}

impl Engine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        // A panicking body poisons the mutex; its overlay died with it, so
        // the next writer can go on.
        let mut blobs = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, generation) = self.database()?;
        let open = state.db.as_ref().ok_or_else(|| closed(&self.dir))?;
        let mut tx = SledTx {
            engine: self,
            tree: &open.db,
            overlay: Overlay::new(),
            latched: Cell::new(false),
        };
        let outcome = body(&mut tx);
        let SledTx {
            overlay, latched, ..
        } = tx;
        let latched = latched.get();
        drop(state);
        match outcome {
            Ok(()) if !latched => self.commit(overlay, &mut blobs),
            Ok(()) => {
                // The body swallowed an I/O error; its reads may be wrong, so
                // nothing of it is applied.
                self.reopen_after_failure(generation);
                Err(StoreError::Engine(format!(
                    "{}: a read in the transaction failed; nothing was written",
                    self.dir.display()
                )))
            }
            Err(error) => {
                if latched {
                    self.reopen_after_failure(generation);
                }
                Err(error)
            }
        }
    }

    fn disk_size(&self) -> Result<u64> {
        directory_size(&self.dir).map_err(|e| io_error(&self.dir, e))
    }
}

/// A write transaction: the overlay of pending writes over the tree.
struct SledTx<'e> {
    engine: &'e SledEngine,
    tree: &'e sled::Tree,
    overlay: Overlay,
    /// Set when a read hit an I/O error: sled then fails everything until
    /// reopened, and the transaction must not commit.
    latched: Cell<bool>,
}

impl SledTx<'_> {
    fn fail(&self, error: sled::Error) -> StoreError {
        let failure = self.engine.failure(error);
        if failure.latched {
            self.latched.set(true);
        }
        failure.error
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => {
                let value = self.tree.get(key).map_err(|e| self.fail(e))?;
                Ok(value.map(|v| v.to_vec()))
            }
        }
    }
}

impl Read for SledTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(&prefixed(table, key))
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
        merged_scan(self.tree, Some(&self.overlay), table, range, reverse, limit)
            .map_err(|e| self.fail(e))
    }
}

impl Tx for SledTx<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay
            .insert(prefixed(table, key), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        let key = prefixed(table, key);
        let existed = self.lookup(&key)?.is_some();
        self.overlay.insert(key, None);
        Ok(existed)
    }
}

/// The tree's pairs of a scan, in the scan's direction.
type CommittedPairs = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;
/// The overlay's pending writes of a scan, in the scan's direction.
type PendingPairs<'o> = Box<dyn Iterator<Item = (&'o Vec<u8>, &'o Option<Vec<u8>>)> + 'o>;

/// Up to `limit` pairs of `table` in `range`: the tree's, with `overlay`'s
/// pending puts and deletes (when in a transaction) taking precedence.
fn merged_scan(
    tree: &sled::Tree,
    overlay: Option<&Overlay>,
    table: Table,
    range: KeyRange<'_>,
    reverse: bool,
    limit: usize,
) -> Result<Pairs, sled::Error> {
    let bounds = prefixed_range(table, range);
    let committed = tree.range::<Vec<u8>, _>(bounds.clone());
    let mut committed: CommittedPairs = if reverse {
        Box::new(committed.rev())
    } else {
        Box::new(committed)
    };
    let empty = Overlay::new();
    let pending = overlay.unwrap_or(&empty).range::<[u8], _>((
        bounds.0.as_ref().map(Vec::as_slice),
        bounds.1.as_ref().map(Vec::as_slice),
    ));
    let mut pending: PendingPairs<'_> = if reverse {
        Box::new(pending.rev())
    } else {
        Box::new(pending)
    };

    // Which of two keys comes first in the scan's direction.
    let first = |a: &[u8], b: &[u8]| {
        let order = a.cmp(b);
        if reverse {
            order.reverse()
        } else {
            order
        }
    };

    let mut pairs = Vec::with_capacity(limit.min(256));
    let mut next_committed = committed.next().transpose()?;
    let mut next_pending = pending.next();
    while pairs.len() < limit {
        let take_pending = match (&next_committed, next_pending) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((key, _)), Some((pending_key, _))) => {
                match first(pending_key, key) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        // The pending write replaces the committed pair.
                        next_committed = committed.next().transpose()?;
                        true
                    }
                }
            }
        };
        if take_pending {
            if let Some((key, Some(value))) = next_pending {
                pairs.push((unprefixed(key).to_vec(), value.clone()));
            }
            next_pending = pending.next();
        } else if let Some((key, value)) = next_committed.take() {
            pairs.push((unprefixed(&key).to_vec(), value.to_vec()));
            next_committed = committed.next().transpose()?;
        }
    }
    Ok(pairs)
}

fn prefixed(table: Table, key: &[u8]) -> Vec<u8> {
    let mut prefixed = Vec::with_capacity(1 + key.len());
    prefixed.push(table.id);
    prefixed.extend_from_slice(key);
    prefixed
}

fn unprefixed(key: &[u8]) -> &[u8] {
    key.get(1..).unwrap_or_default()
}

/// The tree range holding exactly `range` of `table`.
fn prefixed_range(table: Table, range: KeyRange<'_>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match range.0 {
        Bound::Included(key) => Bound::Included(prefixed(table, key)),
        Bound::Excluded(key) => Bound::Excluded(prefixed(table, key)),
        Bound::Unbounded => Bound::Included(vec![table.id]),
    };
    let end = match range.1 {
        Bound::Included(key) => Bound::Included(prefixed(table, key)),
        Bound::Excluded(key) => Bound::Excluded(prefixed(table, key)),
        Bound::Unbounded => match table.id.checked_add(1) {
            Some(next) => Bound::Excluded(vec![next]),
            None => Bound::Unbounded,
        },
    };
    (start, end)
}

struct Failure {
    error: StoreError,
    latched: bool,
}

fn map_error(dir: &Path, error: sled::Error) -> Failure {
    match error {
        sled::Error::Io(io) => {
            // sled reports its file lock as a plain io::Error of kind Other.
            let error = if io.kind() == std::io::ErrorKind::Other
                && io.to_string().contains("could not acquire lock")
            {
                StoreError::Locked(format!("{} is already open", dir.display()))
            } else {
                io_error(dir, io)
            };
            Failure {
                error,
                latched: true,
            }
        }
        sled::Error::Corruption { at, .. } => Failure {
            error: StoreError::Corrupt(format!("{} at {at:?}", dir.display())),
            latched: true,
        },
        other => Failure {
            error: StoreError::Engine(format!("{}: {other}", dir.display())),
            latched: false,
        },
    }
}

fn open_database(dir: &Path) -> Result<OpenDb> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .open()
        .map_err(|e| map_error(dir, e).error)?;
    let log_path = dir.join("db");
    let log = File::open(&log_path).map_err(|e| io_error(&log_path, e))?;
    Ok(OpenDb { db, log })
}

/// Opens the database again after this engine closed its own handle. sled
/// releases its file lock only when the last of its background threads lets
/// go of the file, which can be a moment after the handle is dropped, so a
/// `Locked` here is our own shadow: wait for it, boundedly. (A first open
/// does not wait: there `Locked` means another process.)
fn reopen_database(dir: &Path) -> Result<OpenDb> {
    const ATTEMPTS: u32 = 100;
    const PAUSE: Duration = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match open_database(dir) {
            Err(StoreError::Locked(_)) if attempt < ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(PAUSE);
            }
            other => return other,
        }
    }
}

fn closed(dir: &Path) -> StoreError {
    StoreError::Engine(format!("{} is closed after an I/O error", dir.display()))
}

/// fdatasyncs the blob files written since the last commit, then the
/// directory that names them.
fn sync_new_blobs(dir: &Path, blobs: &mut BlobSync) -> Result<()> {
    let blob_dir = dir.join("blobs");
    let entries = match fs::read_dir(&blob_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&blob_dir, e)),
    };
    let mut highest = blobs.synced_up_to;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&blob_dir, e))?;
        let Some(lsn) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if blobs.synced_up_to.is_some_and(|synced| lsn <= synced) {
            continue;
        }
        let path = entry.path();
        match File::open(&path) {
            Ok(file) => file.sync_data().map_err(|e| io_error(&path, e))?,
            // sled removes blobs it no longer needs, possibly just now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path, e)),
        }
        highest = highest.max(Some(lsn));
    }
    if highest != blobs.synced_up_to {
        sync_directory(&blob_dir).map_err(|e| io_error(&blob_dir, e))?;
        blobs.synced_up_to = highest;
    }
    Ok(())
}

fn directory_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            directory_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
