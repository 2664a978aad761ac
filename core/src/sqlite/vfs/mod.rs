//! The engine's SQLite VFS: every file SQLite opens, in production and in simulation, goes
//! through this code and then through the workspace's [`Vfs`].
//!
//! ```text
//!   SQLite ──▶ this VFS (confinement, lock table, wal-index, temp caps, error notes)
//!                └──▶ FencedVfs (the workspace's fault latch, crate::fault)
//!                       └──▶ RealFs (pread/pwrite/fsync)  |  MemFs (the simulated disk)
//! ```
//!
//! Only the last call differs between production and simulation, so what the simulation
//! proves about SQLite's IO (a failed fsync of the WAL or of the main file during a
//! checkpoint, a torn write, a full disk) is what production does. Every failure is seen by
//! [`crate::fault::FencedVfs`] below, which latches the first fault for the whole workspace.
//!
//! # Registration
//!
//! [`register`] makes one registration per workspace, under two names that share its state
//! (lock table, shared memory, temp accounting):
//!
//! * the **app** name, for every connection that runs app SQL: it confines paths (below);
//! * the **engine** name, for the engine's own connections (snapshot copies, import checks,
//!   backups to an operator's path): any absolute path, still through the workspace's `Vfs`.
//!
//! [`SqliteVfs`] unregisters both when dropped. A name is reused only after every file opened
//! under its last registration closed, so the set of names stays bounded by the number of
//! workspaces open at once.
//!
//! # What SQLite sees
//!
//! * **Paths** are absolute paths of the [`Vfs`] namespace; `xFullPathname` refuses relative
//!   ones. On the app name a path must also pass the confinement rules of
//!   [`super::confine`]: an allowed directory (the broker allows each database's directory),
//!   a `<stem>.sqlite` name or one of its companions, no symbolic link. A refused path is
//!   `SQLITE_CANTOPEN` and its reason is kept for [`super::map_error`].
//! * **Files** are [`VfsFile`] handles. `xRead` loops over short reads and, at end of file,
//!   zero-fills the rest and answers `SQLITE_IOERR_SHORT_READ` as SQLite requires. `xSync` is
//!   [`VfsFile::sync`]; a failure is `SQLITE_IOERR_FSYNC` (and the workspace's fault latch
//!   is set below us). `SQLITE_FULL` is returned for [`VfsErrorKind::NoSpace`].
//! * **Directory entries**, like SQLite's unix VFS: a rollback journal, super-journal or WAL
//!   opened with `SQLITE_OPEN_CREATE` gets one `sync_dir` of its parent right after its first
//!   successful `xSync`, and `xDelete` with `syncDir` syncs the parent after the unlink. The
//!   main database file's entry is made durable by whoever creates it (the store's plans).
//! * **Temporary files** (`xOpen` with a NULL name: sorter spills, temporary b-trees,
//!   statement journals) are files in the workspace's `tmp/` directory, removed at close (and
//!   by the next open after a crash). Every byte written to them is counted against a per-file
//!   and a per-workspace cap ([`TempLimits`]); growth past either is `SQLITE_FULL`, reported
//!   as `QUOTA_EXCEEDED` naming the cap. They never hold committed data and are never synced.
//! * **Locks and the wal-index** live in this process ([`locks`]); there is no `-shm` file.
//!   One process owns a workspace (`LOCK`), so that is every connection there is. A foreign
//!   process that opens a live database file directly (a `sqlite3` shell) is not excluded by
//!   any lock: it must not, as it must not edit any file of a live workspace.
//! * **Sector size** 4096 and **device characteristics** `POWERSAFE_OVERWRITE`, as SQLite's
//!   unix VFS reports for a local disk.
//! * `xRandomness` is a SplitMix64 stream ([`VfsHooks::seed`]); SQLite seeds its own PRNG from
//!   the default VFS, so this is used only when SQLite asks this VFS directly. `xSleep` calls
//!   [`Clock::sleep`] and `xCurrentTime` reads [`Clock::now_ms`], so the simulation's clock
//!   decides what `CURRENT_TIMESTAMP` is and how long a busy handler waits.
//! * `xDlOpen` and friends refuse: no extension is ever loaded.
//!
//! # Errors, noted per thread
//!
//! SQLite turns every failure into a bare result code. The VFS keeps the last one of this
//! thread ([`take_io_note`]): which operation failed on what kind of file, whether the disk was
//! full. [`super::map_error`] reads it to say `DISK_FULL` rather than `QUOTA_EXCEEDED` for an
//! `SQLITE_FULL` that was the disk's, and to name the failed operation and file kind (never the
//! path) in an IO error.
//!
//! # Safety
//!
//! All `unsafe` code is in [`callbacks`] and [`registry`]: the `extern "C"` callbacks and a
//! few helpers that turn SQLite's pointers into references. Every callback null-checks its
//! pointers, runs its body under [`std::panic::catch_unwind`] (a panic becomes
//! `SQLITE_IOERR_*` or `SQLITE_ERROR`, never an unwind into C), and states its safety argument.

mod callbacks;
mod file;
pub(crate) mod locks;
mod registry;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::clock::Clock;
use crate::fault::{FileKind, IoOp};
use crate::vfs::{Vfs, VfsError, VfsErrorKind};
use crate::{Error, Result};

pub use registry::{open_files, register};

/// Default of [`TempLimits::file_bytes_max`]: 256 MiB.
pub const TEMP_FILE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default of [`TempLimits::total_bytes_max`]: 1 GiB.
pub const TEMP_BYTES_TOTAL_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Longest path (bytes) the VFS accepts.
pub const MAX_PATHNAME: i32 = 1024;
/// The sector size reported to SQLite (its unix VFS's default).
pub const SECTOR_SIZE: i32 = 4096;

/// Caps on SQLite's anonymous temporary files of one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TempLimits {
    /// Largest one temporary file may grow (`temp_file_bytes_max`).
    pub file_bytes_max: u64,
    /// Largest all temporary files of the workspace may be together (`temp_bytes_total_max`).
    pub total_bytes_max: u64,
}

impl Default for TempLimits {
    fn default() -> Self {
        TempLimits {
            file_bytes_max: TEMP_FILE_BYTES_MAX_DEFAULT,
            total_bytes_max: TEMP_BYTES_TOTAL_MAX_DEFAULT,
        }
    }
}

/// What a registration needs besides the [`Vfs`].
#[derive(Clone)]
pub struct VfsHooks {
    /// The directory anonymous temporary files are made in (the workspace's `tmp/`); it
    /// must exist.
    pub tmp_dir: PathBuf,
    /// Wall time for `xCurrentTime`, and `xSleep`.
    pub clock: Arc<dyn Clock>,
    /// Seed of `xRandomness`.
    pub seed: u64,
    /// Caps on temporary files.
    pub temp: TempLimits,
}

/// A registration: the two SQLite VFS names of a workspace (see the module doc). Dropping it
/// unregisters both.
pub struct SqliteVfs {
    state: Arc<VfsState>,
    app_name: String,
    engine_name: String,
}

impl std::fmt::Debug for SqliteVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteVfs").field("app", &self.app_name).field("engine", &self.engine_name).finish()
    }
}

impl SqliteVfs {
    /// The name app connections open through (confined).
    pub fn app_name(&self) -> &str {
        &self.app_name
    }

    /// The name the engine's own connections open through.
    pub fn engine_name(&self) -> &str {
        &self.engine_name
    }

    /// Allows app connections to open files directly inside `dir` (absolute). Idempotent.
    pub fn allow_dir(&self, dir: &Path) -> Result<()> {
        let text = dir.to_str().filter(|t| t.starts_with('/') && t.len() > 1).ok_or_else(|| {
            Error::invalid_argument(format!("not an absolute UTF-8 directory: {}", dir.display()))
        })?;
        let text = text.trim_end_matches('/').to_string();
        self.state.allowed_dirs.write().unwrap_or_else(PoisonError::into_inner).insert(text);
        Ok(())
    }

    /// The directories app connections may open files in (for tests and diagnostics).
    pub fn allowed_dirs(&self) -> Vec<PathBuf> {
        self.state
            .allowed_dirs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(PathBuf::from)
            .collect()
    }

    /// Sets the caps on temporary files.
    pub fn set_temp_limits(&self, limits: TempLimits) {
        self.state.temp_file_bytes_max.store(limits.file_bytes_max, Ordering::Relaxed);
        self.state.temp_bytes_total_max.store(limits.total_bytes_max, Ordering::Relaxed);
    }

    /// Bytes held by temporary files of this registration now.
    pub fn temp_bytes_in_use(&self) -> u64 {
        self.state.temp_bytes_in_use.load(Ordering::Relaxed)
    }

    /// The last IO error this registration saw (what `xGetLastError` reports).
    pub fn last_error(&self) -> String {
        lock(&self.state.last_error).clone()
    }

    /// Files open through this registration now.
    pub fn open_files(&self) -> usize {
        self.state.open_files.load(Ordering::Acquire)
    }
}

impl Drop for SqliteVfs {
    fn drop(&mut self) {
        registry::unregister(&self.app_name);
        registry::unregister(&self.engine_name);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a callback is caught; the data under the mutex stays consistent because
    // every mutation is completed before anything that can panic runs.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of one registration, shared by its two names and by every file it opened.
struct VfsState {
    vfs: Arc<dyn Vfs>,
    hooks: VfsHooks,
    /// SplitMix64 state of `xRandomness`.
    rng: Mutex<u64>,
    /// Files opened through this registration and not yet closed.
    open_files: AtomicUsize,
    /// Source of holder ids and temp file names.
    next_id: AtomicU64,
    /// Lock and shared-memory table, by path; each entry has its own mutex, which every
    /// handle of the path keeps, so a lock decision never takes a registration-wide lock.
    paths: Mutex<BTreeMap<PathBuf, Arc<Mutex<locks::PathEntry>>>>,
    /// Directories app connections may open files in.
    allowed_dirs: RwLock<BTreeSet<String>>,
    temp_file_bytes_max: AtomicU64,
    temp_bytes_total_max: AtomicU64,
    temp_bytes_in_use: AtomicU64,
    /// The last error, for `xGetLastError`.
    last_error: Mutex<String>,
}

impl VfsState {
    fn new(vfs: Arc<dyn Vfs>, hooks: VfsHooks) -> VfsState {
        VfsState {
            vfs,
            rng: Mutex::new(hooks.seed),
            temp_file_bytes_max: AtomicU64::new(hooks.temp.file_bytes_max),
            temp_bytes_total_max: AtomicU64::new(hooks.temp.total_bytes_max),
            hooks,
            open_files: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            paths: Mutex::new(BTreeMap::new()),
            allowed_dirs: RwLock::new(BTreeSet::new()),
            temp_bytes_in_use: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    /// An SQLite code for a failed `op` on a file of `kind`: `SQLITE_FULL` for no space, else
    /// `io_code`. Notes the failure for `xGetLastError` and for this thread's error mapping.
    fn code(&self, err: &VfsError, op: IoOp, kind: FileKind, io_code: i32) -> i32 {
        *lock(&self.last_error) = err.to_string();
        let disk_full = err.kind == VfsErrorKind::NoSpace;
        LAST_IO.with(|n| {
            *n.borrow_mut() = Some(IoNote { op, file: kind, detail: err.detail.clone(), disk_full })
        });
        if disk_full {
            rusqlite::ffi::SQLITE_FULL
        } else {
            io_code
        }
    }

    fn note_text(&self, text: impl Into<String>) {
        *lock(&self.last_error) = text.into();
    }

    /// Checks a path against the confinement rules (app name only).
    fn confine(&self, path: &str) -> std::result::Result<(), &'static str> {
        let (dir, name) = super::confine::split_path(path)?;
        super::confine::check_name(name)?;
        let allowed = self.allowed_dirs.read().unwrap_or_else(PoisonError::into_inner).contains(dir);
        if !allowed {
            return Err("its directory is not a database directory of this workspace");
        }
        for p in [dir, path] {
            match self.vfs.is_symlink(Path::new(p)) {
                Ok(true) => return Err("it is or lies under a symbolic link"),
                Ok(false) => {}
                Err(_) => return Err("its directory cannot be inspected"),
            }
        }
        Ok(())
    }
}

/// What the VFS saw go wrong last on this thread (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoNote {
    /// The failed operation.
    pub op: IoOp,
    /// The kind of file.
    pub file: FileKind,
    /// The system's description, without the path.
    pub detail: String,
    /// The failure was a full disk.
    pub disk_full: bool,
}

thread_local! {
    static LAST_IO: RefCell<Option<IoNote>> = const { RefCell::new(None) };
}

/// Takes this thread's last IO note, if any.
pub fn take_io_note() -> Option<IoNote> {
    LAST_IO.with(|n| n.borrow_mut().take())
}

/// Forgets this thread's IO note (before a statement runs, so a tolerated failure of an
/// earlier one cannot relabel a later error).
pub fn clear_io_note() {
    LAST_IO.with(|n| n.borrow_mut().take());
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomness_is_seeded() {
        let mut a = 7u64;
        let mut b = 7u64;
        assert_eq!(splitmix64(&mut a), splitmix64(&mut b));
        assert_ne!(splitmix64(&mut a), 7);
    }
}
