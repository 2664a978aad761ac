//! A SQLite VFS that runs SQLite's own IO on any [`Vfs`] — in simulation, on a
//! [`MemFs`](crate::memfs::MemFs) — so a simulated crash hits the database file, its rollback
//! journal and its WAL exactly where SQLite left them.
//!
//! # Use
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sila_sqlite_sim::{bridge, memfs::MemFs};
//! let fs = MemFs::new();
//! bridge::register("sim-0", Arc::new(fs.clone())).map_err(|e| e.to_string())?;
//! let db = rusqlite::Connection::open_with_flags_and_vfs(
//!     "/app.db",
//!     rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE,
//!     "sim-0",
//! )?;
//! # drop(db);
//! bridge::unregister("sim-0").map_err(|e| e.to_string())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every registration is independent: its own [`Vfs`], lock tables, shared memory, random
//! stream and clock. Give each simulation instance its own name; names are cheap, but each
//! distinct name ever used keeps a small (about 200 bytes) shell alive for the life of the
//! process (see *Lifetime* below), so a runner of many seeds should reuse a bounded set of
//! names (one per worker), unregistering between seeds.
//!
//! # What SQLite sees
//!
//! * **Paths** are the absolute paths of the [`Vfs`] namespace. `xFullPathname` returns an
//!   absolute path unchanged and refuses a relative one (`SQLITE_CANTOPEN`).
//! * **Files** map to [`VfsFile`] handles. `xRead` loops over short reads and, at end of
//!   file, zero-fills the rest and answers `SQLITE_IOERR_SHORT_READ` as SQLite requires.
//!   `xSync` is [`VfsFile::sync`]; a failure is `SQLITE_IOERR_FSYNC` (and the `Vfs` poisons
//!   the handle: every later call on it fails, which SQLite reports as an IO error).
//!   `SQLITE_FULL` is returned for [`VfsErrorKind::NoSpace`].
//! * **Directory entries**, like SQLite's unix VFS: a rollback journal, super-journal or WAL
//!   opened with `SQLITE_OPEN_CREATE` gets one `sync_dir` of its parent right after its first
//!   successful `xSync` (a failure is `SQLITE_IOERR_DIR_FSYNC`), and `xDelete` with `syncDir`
//!   syncs the parent after the unlink. The *main database file's* directory entry is never
//!   synced by the bridge (nor by SQLite's unix VFS): whoever creates a database file must
//!   `sync_dir` its directory, as the engine's flip protocol does. Note that in rollback
//!   (`DELETE`) journal mode only `synchronous=EXTRA` makes the journal's unlink durable; with
//!   `FULL`, a crash right after a commit can bring the journal back and roll that commit
//!   back — on a real Linux disk as here.
//! * **Temporary files** (`xOpen` with a NULL name: temp databases, statement journals,
//!   sorter spill files) live in process memory and never touch the [`Vfs`].
//! * **Sector size** 512. **Device characteristics** 0: the simulated disk promises no
//!   atomic writes, no safe append, no sequential ordering and no power-safe overwrite
//!   (future fault modes tear 512-byte sectors and reorder writes), so SQLite takes its
//!   most conservative paths (e.g. it pads WAL commits to a sector boundary).
//! * `xFileControl` answers `SQLITE_NOTFOUND` to every op (SQLite then uses its defaults).
//! * `xRandomness` is a SplitMix64 stream seeded per registration ([`BridgeOptions::seed`],
//!   default: a hash of the name). SQLite seeds its *process-global* PRNG from the default
//!   VFS, not from this one; [`seed_sqlite_prng`] makes that deterministic.
//! * `xSleep` never sleeps: it calls [`BridgeOptions::sleep`] (e.g. to advance a simulated
//!   clock) or yields the thread, and reports the full delay as slept, so `busy_timeout`
//!   counts simulated time. `xCurrentTime`/`xCurrentTimeInt64` come from
//!   [`BridgeOptions::clock`] (unix milliseconds; default [`DEFAULT_NOW_MS`]).
//! * `xDlOpen` and friends refuse: no extension is ever loaded through this VFS.
//!
//! # Locks (in process, per registration)
//!
//! Every registration keeps a table keyed by path; each open handle of a path is a
//! *holder* with its database lock level and its WAL slot masks. All lock decisions are
//! made under one mutex by looking at the other holders of the path:
//!
//! * `SHARED` is refused (`SQLITE_BUSY`) while another holder is at `PENDING` or above.
//! * `RESERVED` is refused while another holder is at `RESERVED` or above.
//! * `EXCLUSIVE` is refused while another holder is at `RESERVED` or above; otherwise the
//!   holder moves to `PENDING` (new `SHARED` requests now fail) and then to `EXCLUSIVE` once
//!   no other holder is at `SHARED` — if some still is, the answer is `SQLITE_BUSY` and the
//!   holder stays at `PENDING`, as with SQLite's unix VFS.
//! * `xUnlock` lowers the holder's level; `xCheckReservedLock` is true when any holder of
//!   the path (this one included) is at `RESERVED` or above.
//!
//! # Shared memory for WAL (in process, per registration and database path)
//!
//! The `-shm` of a database is never a file on the [`Vfs`]: it is a list of zeroed regions
//! of the size SQLite asks (32 KiB) held in the path's table entry. Each region is one heap
//! allocation, made once and never moved or resized, and SQLite gets its raw address; the
//! list only grows. The regions are freed when the last holder of the path unmaps or closes,
//! which is exactly what a crash does to a real `-shm` (SQLite rebuilds the wal-index from
//! the WAL when it finds it empty). The eight WAL lock slots are per-holder bit masks
//! (`shared`, `exclusive`): a shared lock on a slot is refused while another holder has it
//! exclusive; an exclusive lock on a range is refused while another holder has any slot of
//! it shared or exclusive (all-or-nothing). `xShmBarrier` is a sequentially consistent fence.
//!
//! # Safety
//!
//! All `unsafe` code is in this module: the `extern "C"` callbacks and a few helpers that
//! turn SQLite's pointers into references. Every callback null-checks its pointers, runs its
//! body under [`std::panic::catch_unwind`] (a panic becomes `SQLITE_IOERR_*` or
//! `SQLITE_ERROR`, never an unwind into C), and states its safety argument.
//!
//! # Lifetime
//!
//! SQLite keeps a pointer to a registered `sqlite3_vfs` and may be inside a call on it while
//! another thread unregisters it. So the `sqlite3_vfs` struct (with its name) lives in a
//! *shell* that is never freed; the shell points to the registration's state through a slot
//! that [`unregister`] empties (callbacks then fail cleanly) and a later [`register`] of the
//! same name refills. Open files hold their registration's state by reference count, so
//! they stay valid even if the registration goes away.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use rusqlite::ffi;
use sila_sqlite::vfs::{read_full, write_all_at, OpenMode, Vfs, VfsError, VfsErrorKind, VfsFile, VfsResult};

/// A simulated wall clock: the current time in unix milliseconds.
pub type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;
/// A simulated sleep: called with the microseconds SQLite wants to sleep.
pub type SleepFn = Arc<dyn Fn(i64) + Send + Sync>;

/// What `xCurrentTime` reports without a clock hook: 2024-01-01T00:00:00Z in unix ms.
pub const DEFAULT_NOW_MS: i64 = 1_704_067_200_000;
/// The sector size reported to SQLite.
pub const SECTOR_SIZE: c_int = 512;
/// Longest path (bytes) the bridge accepts.
pub const MAX_PATHNAME: c_int = 1024;
/// Number of WAL lock slots SQLite uses (`SQLITE_SHM_NLOCK`).
const SHM_SLOTS: c_int = 8;
/// Cap on shared-memory regions per database (4096 × 32 KiB = 128 MiB of wal-index,
/// enough for 16 M WAL frames): a bogus region number cannot exhaust memory.
const SHM_REGIONS_MAX: usize = 4096;
/// Cap on an in-memory temp file (1 GiB).
const TEMP_BYTES_MAX: u64 = 1 << 30;
/// Offset between the unix epoch and the julian day epoch, in milliseconds.
const JULIAN_EPOCH_OFFSET_MS: i64 = 210_866_760_000_000;

/// Options of a registration (see [`register_with`]).
#[derive(Clone, Default)]
pub struct BridgeOptions {
    /// Seed of `xRandomness`; default: a hash of the registration name.
    pub seed: Option<u64>,
    /// The simulated clock, unix milliseconds; default: always [`DEFAULT_NOW_MS`].
    pub clock: Option<ClockFn>,
    /// Called by `xSleep` with the requested microseconds; default: yield the thread.
    pub sleep: Option<SleepFn>,
}

impl std::fmt::Debug for BridgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeOptions")
            .field("seed", &self.seed)
            .field("clock", &self.clock.is_some())
            .field("sleep", &self.sleep.is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Registration state (safe Rust)
// ---------------------------------------------------------------------------------------

/// The state of one registration.
struct Bridge {
    vfs: Arc<dyn Vfs>,
    clock: Option<ClockFn>,
    sleep: Option<SleepFn>,
    /// SplitMix64 state of `xRandomness`.
    rng: Mutex<u64>,
    /// Files opened through this registration and not yet closed.
    open_files: AtomicUsize,
    /// Source of holder ids.
    next_id: AtomicU64,
    /// Lock and shared-memory table, by path.
    paths: Mutex<BTreeMap<PathBuf, PathEntry>>,
    /// The last error, for `xGetLastError`.
    last_error: Mutex<String>,
}

/// The holders of one path, and its shared memory.
#[derive(Default)]
struct PathEntry {
    holders: BTreeMap<u64, Holder>,
    /// Region size SQLite asked for (0 before the first map).
    region_size: usize,
    /// The `-shm` regions; freed when no holder is mapped.
    shm: Vec<Region>,
}

/// One open handle's locks on its path.
#[derive(Debug, Default, Clone, Copy)]
struct Holder {
    /// `SQLITE_LOCK_NONE` … `SQLITE_LOCK_EXCLUSIVE`.
    level: c_int,
    /// Whether the handle has called `xShmMap` (and not `xShmUnmap`).
    shm_mapped: bool,
    /// WAL slots held shared (bit i = slot i).
    shm_shared: u8,
    /// WAL slots held exclusive.
    shm_excl: u8,
}

/// One shared-memory region: a heap block made by `Box::into_raw` and freed only by `Drop`,
/// so its address is stable for as long as the region exists. `u64` elements make it
/// 8-byte aligned, as SQLite's wal-index (which uses aligned 32-bit atomics) needs.
struct Region {
    block: *mut [u64],
}

// SAFETY: a `Region` owns its block exclusively on the Rust side (Rust never reads or writes
// the bytes); the bytes are shared with SQLite connections on any thread, which synchronize
// their access through the WAL lock slots and `xShmBarrier`, exactly as with real shared
// memory. Moving the owner between threads is therefore fine.
unsafe impl Send for Region {}

impl Region {
    fn new(bytes: usize) -> Region {
        let words = bytes.div_ceil(8);
        Region { block: Box::into_raw(vec![0u64; words].into_boxed_slice()) }
    }

    fn addr(&self) -> *mut c_void {
        self.block.cast::<c_void>()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `block` came from `Box::into_raw` in `Region::new` and is freed only here,
        // once. No connection uses it any more: regions are dropped only when every holder
        // of the path has unmapped or closed (SQLite never touches a region after xShmUnmap).
        drop(unsafe { Box::from_raw(self.block) });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a callback is caught; the data under the mutex stays consistent because
    // every mutation is completed before anything that can panic runs.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn is_main_db(flags: c_int) -> bool {
    flags & ffi::SQLITE_OPEN_MAIN_DB != 0
}

impl Bridge {
    fn note(&self, err: &VfsError) {
        *lock(&self.last_error) = err.to_string();
    }

    fn note_text(&self, text: impl Into<String>) {
        *lock(&self.last_error) = text.into();
    }

    /// An SQLite code for a `Vfs` error: `SQLITE_FULL` for no space, else `io_code`.
    fn code(&self, err: &VfsError, io_code: c_int) -> c_int {
        self.note(err);
        match err.kind {
            VfsErrorKind::NoSpace => ffi::SQLITE_FULL,
            _ => io_code,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.as_ref().map_or(DEFAULT_NOW_MS, |clock| clock())
    }

    fn randomness(&self, out: &mut [u8]) {
        let mut state = lock(&self.rng);
        for chunk in out.chunks_mut(8) {
            let word = splitmix64(&mut state).to_le_bytes();
            for (dst, src) in chunk.iter_mut().zip(word) {
                *dst = src;
            }
        }
    }

    fn sleep(&self, micros: c_int) -> c_int {
        match &self.sleep {
            Some(hook) => hook(i64::from(micros)),
            None => std::thread::yield_now(),
        }
        micros.max(0)
    }

    /// `xOpen`: a new file handle, or an SQLite error code.
    fn open(self: &Arc<Self>, path: Option<PathBuf>, flags: c_int) -> Result<FileState, c_int> {
        let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
        let exclusive = flags & ffi::SQLITE_OPEN_EXCLUSIVE != 0;
        let readonly = flags & ffi::SQLITE_OPEN_READONLY != 0;
        let delete_on_close = flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0;
        let new_journal = create
            && (flags
                & (ffi::SQLITE_OPEN_MAIN_JOURNAL | ffi::SQLITE_OPEN_SUPER_JOURNAL | ffi::SQLITE_OPEN_WAL))
                != 0;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (file, path): (Box<dyn VfsFile>, Option<PathBuf>) = match path {
            None => (Box::new(TempFile::default()), None),
            Some(path) => {
                let mode = if readonly {
                    OpenMode::Read
                } else if create && exclusive {
                    OpenMode::CreateNew
                } else if create {
                    OpenMode::CreateOrOpen
                } else {
                    OpenMode::ReadWrite
                };
                let file = self.vfs.open(&path, mode).map_err(|e| self.code(&e, ffi::SQLITE_CANTOPEN))?;
                lock(&self.paths).entry(path.clone()).or_default().holders.insert(id, Holder::default());
                (file, Some(path))
            }
        };
        self.open_files.fetch_add(1, Ordering::AcqRel);
        Ok(FileState {
            bridge: Arc::clone(self),
            file,
            path,
            id,
            main_db: is_main_db(flags),
            delete_on_close,
            dir_sync_pending: AtomicBool::new(new_journal),
        })
    }

    fn delete(&self, path: &Path, sync_dir: bool) -> c_int {
        match self.vfs.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind == VfsErrorKind::NotFound => {
                self.note(&e);
                return ffi::SQLITE_IOERR_DELETE_NOENT;
            }
            Err(e) => return self.code(&e, ffi::SQLITE_IOERR_DELETE),
        }
        if sync_dir {
            if let Some(parent) = path.parent() {
                if let Err(e) = self.vfs.sync_dir(parent) {
                    return self.code(&e, ffi::SQLITE_IOERR_DIR_FSYNC);
                }
            }
        }
        ffi::SQLITE_OK
    }

    fn access(&self, path: &Path, flags: c_int) -> Result<bool, c_int> {
        let answer = if flags == ffi::SQLITE_ACCESS_EXISTS {
            // Like unix: an empty regular file does not "exist" (an empty journal is not hot).
            match self.vfs.file_len(path) {
                Ok(Some(0)) => self.vfs.list_dir(path).is_ok(),
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(e) => return Err(self.code(&e, ffi::SQLITE_IOERR_ACCESS)),
            }
        } else {
            self.vfs.exists(path).map_err(|e| self.code(&e, ffi::SQLITE_IOERR_ACCESS))?
        };
        Ok(answer)
    }
}

/// An in-memory file for SQLite's anonymous temp files.
#[derive(Default)]
struct TempFile {
    data: Mutex<Vec<u8>>,
}

fn temp_err(op: &'static str, detail: &str) -> VfsError {
    VfsError::new(VfsErrorKind::Other, op, Path::new("<temp>"), detail)
}

impl VfsFile for TempFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        let data = lock(&self.data);
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let Some(src) = data.get(start..) else { return Ok(0) };
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        let end = offset.checked_add(buf.len() as u64).filter(|end| *end <= TEMP_BYTES_MAX);
        let (Some(end), Ok(start)) = (end, usize::try_from(offset)) else {
            return Err(temp_err("write", "temp file too large"));
        };
        let end = usize::try_from(end).map_err(|_| temp_err("write", "temp file too large"))?;
        let mut data = lock(&self.data);
        if data.len() < end {
            data.resize(end, 0);
        }
        if let Some(dst) = data.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn set_len(&self, len: u64) -> VfsResult<()> {
        if len > TEMP_BYTES_MAX {
            return Err(temp_err("truncate", "temp file too large"));
        }
        let len = usize::try_from(len).map_err(|_| temp_err("truncate", "temp file too large"))?;
        lock(&self.data).resize(len, 0);
        Ok(())
    }

    fn len(&self) -> VfsResult<u64> {
        Ok(lock(&self.data).len() as u64)
    }

    fn sync(&self) -> VfsResult<()> {
        Ok(())
    }
}

/// The state behind one open `sqlite3_file`.
struct FileState {
    bridge: Arc<Bridge>,
    file: Box<dyn VfsFile>,
    /// `None` for anonymous temp files (no locks, no shared memory).
    path: Option<PathBuf>,
    /// Holder id in the path's lock table.
    id: u64,
    /// Opened as a main database (the only kind SQLite locks or maps shared memory for).
    main_db: bool,
    delete_on_close: bool,
    /// A new journal or WAL whose directory entry is synced after its first `xSync`.
    dir_sync_pending: AtomicBool,
}

/// Returned by lock decisions: `Ok(())` granted, `Err(code)` refused or failed.
type LockResult = Result<(), c_int>;

impl FileState {
    fn read(&self, buf: &mut [u8], offset: i64) -> c_int {
        let Ok(offset) = u64::try_from(offset) else { return ffi::SQLITE_IOERR_READ };
        match read_full(self.file.as_ref(), buf, offset) {
            Ok(n) if n >= buf.len() => ffi::SQLITE_OK,
            Ok(n) => {
                if let Some(rest) = buf.get_mut(n..) {
                    rest.fill(0);
                }
                ffi::SQLITE_IOERR_SHORT_READ
            }
            Err(e) => self.bridge.code(&e, ffi::SQLITE_IOERR_READ),
        }
    }

    fn write(&self, buf: &[u8], offset: i64) -> c_int {
        let Ok(offset) = u64::try_from(offset) else { return ffi::SQLITE_IOERR_WRITE };
        match write_all_at(self.file.as_ref(), buf, offset) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => self.bridge.code(&e, ffi::SQLITE_IOERR_WRITE),
        }
    }

    fn truncate(&self, size: i64) -> c_int {
        let Ok(size) = u64::try_from(size) else { return ffi::SQLITE_IOERR_TRUNCATE };
        match self.file.set_len(size) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => self.bridge.code(&e, ffi::SQLITE_IOERR_TRUNCATE),
        }
    }

    fn sync(&self) -> c_int {
        if let Err(e) = self.file.sync() {
            return self.bridge.code(&e, ffi::SQLITE_IOERR_FSYNC);
        }
        if self.dir_sync_pending.swap(false, Ordering::AcqRel) {
            if let Some(parent) = self.path.as_deref().and_then(Path::parent) {
                if let Err(e) = self.bridge.vfs.sync_dir(parent) {
                    return self.bridge.code(&e, ffi::SQLITE_IOERR_DIR_FSYNC);
                }
            }
        }
        ffi::SQLITE_OK
    }

    fn size(&self) -> Result<i64, c_int> {
        let len = self.file.len().map_err(|e| self.bridge.code(&e, ffi::SQLITE_IOERR_FSTAT))?;
        i64::try_from(len).map_err(|_| ffi::SQLITE_IOERR_FSTAT)
    }

    /// Runs `f` on this handle's holder and all holders of its path, under the table lock.
    /// Anonymous temp files have no table entry: `f` is not run and `None` is returned.
    fn with_holders<R>(&self, f: impl FnOnce(&mut PathEntry, u64) -> R) -> Option<R> {
        let path = self.path.as_ref()?;
        let mut paths = lock(&self.bridge.paths);
        let entry = paths.get_mut(path)?;
        Some(f(entry, self.id))
    }

    fn lock(&self, want: c_int) -> c_int {
        let result = self.with_holders(|entry, me| lock_level(entry, me, want));
        match result {
            None | Some(Ok(())) => ffi::SQLITE_OK,
            Some(Err(code)) => code,
        }
    }

    fn unlock(&self, want: c_int) -> c_int {
        let _ = self.with_holders(|entry, me| {
            if let Some(holder) = entry.holders.get_mut(&me) {
                holder.level = holder.level.min(want);
            }
        });
        ffi::SQLITE_OK
    }

    fn check_reserved(&self) -> bool {
        self.with_holders(|entry, _| entry.holders.values().any(|h| h.level >= ffi::SQLITE_LOCK_RESERVED))
            .unwrap_or(false)
    }

    fn shm_map(&self, region: c_int, size: c_int, extend: bool) -> Result<*mut c_void, c_int> {
        if !self.main_db {
            return Err(ffi::SQLITE_IOERR_SHMMAP);
        }
        let (Ok(region), Ok(size)) = (usize::try_from(region), usize::try_from(size)) else {
            return Err(ffi::SQLITE_IOERR_SHMMAP);
        };
        if size == 0 || region >= SHM_REGIONS_MAX {
            self.bridge.note_text(format!("xShmMap: region {region} of {size} bytes refused"));
            return Err(ffi::SQLITE_IOERR_SHMSIZE);
        }
        let result = self.with_holders(|entry, me| -> Result<*mut c_void, c_int> {
            if entry.region_size != 0 && entry.region_size != size {
                return Err(ffi::SQLITE_IOERR_SHMSIZE);
            }
            let Some(holder) = entry.holders.get_mut(&me) else { return Err(ffi::SQLITE_IOERR_SHMMAP) };
            holder.shm_mapped = true;
            entry.region_size = size;
            if entry.shm.len() <= region {
                if !extend {
                    return Ok(ptr::null_mut());
                }
                while entry.shm.len() <= region {
                    entry.shm.push(Region::new(size));
                }
            }
            Ok(entry.shm.get(region).map_or(ptr::null_mut(), Region::addr))
        });
        result.unwrap_or(Err(ffi::SQLITE_IOERR_SHMMAP))
    }

    fn shm_lock(&self, offset: c_int, n: c_int, flags: c_int) -> c_int {
        if offset < 0 || n < 1 || offset.saturating_add(n) > SHM_SLOTS {
            return ffi::SQLITE_IOERR_SHMLOCK;
        }
        let mask = (((1u32 << n) - 1) << offset) as u8;
        let result = self.with_holders(|entry, me| shm_lock_slots(entry, me, mask, flags));
        match result {
            Some(Ok(())) => ffi::SQLITE_OK,
            Some(Err(code)) => code,
            None => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }

    /// Releases this handle's WAL slots and mapping; frees the regions if it was the last.
    fn shm_unmap(&self) {
        let _ = self.with_holders(shm_release);
    }

    /// `xClose`: releases every lock and mapping, forgets the holder, deletes the file if
    /// asked. Returns an SQLite code.
    fn close(self) -> c_int {
        let mut rc = ffi::SQLITE_OK;
        if let Some(path) = &self.path {
            let mut paths = lock(&self.bridge.paths);
            if let Some(entry) = paths.get_mut(path) {
                shm_release(entry, self.id);
                entry.holders.remove(&self.id);
                if entry.holders.is_empty() {
                    paths.remove(path);
                }
            }
        }
        let FileState { bridge, file, path, delete_on_close, .. } = self;
        drop(file);
        if delete_on_close {
            if let Some(path) = &path {
                match bridge.vfs.remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind == VfsErrorKind::NotFound => {}
                    Err(e) => rc = bridge.code(&e, ffi::SQLITE_IOERR_DELETE),
                }
            }
        }
        bridge.open_files.fetch_sub(1, Ordering::AcqRel);
        rc
    }
}

/// The database-file lock decision (see the module docs).
fn lock_level(entry: &mut PathEntry, me: u64, want: c_int) -> LockResult {
    let current = entry.holders.get(&me).map_or(ffi::SQLITE_LOCK_NONE, |h| h.level);
    if want <= current {
        return Ok(());
    }
    let others_max = entry.holders.iter().filter(|(id, _)| **id != me).map(|(_, h)| h.level).max();
    let others_max = others_max.unwrap_or(ffi::SQLITE_LOCK_NONE);
    let granted = if want == ffi::SQLITE_LOCK_SHARED {
        if others_max >= ffi::SQLITE_LOCK_PENDING {
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_SHARED
    } else if want == ffi::SQLITE_LOCK_RESERVED {
        if current < ffi::SQLITE_LOCK_SHARED {
            return Err(ffi::SQLITE_IOERR_LOCK);
        }
        if others_max >= ffi::SQLITE_LOCK_RESERVED {
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_RESERVED
    } else {
        // EXCLUSIVE (or PENDING, which SQLite never asks for explicitly).
        if current < ffi::SQLITE_LOCK_SHARED {
            return Err(ffi::SQLITE_IOERR_LOCK);
        }
        if others_max >= ffi::SQLITE_LOCK_RESERVED {
            return Err(ffi::SQLITE_BUSY);
        }
        if let Some(holder) = entry.holders.get_mut(&me) {
            holder.level = ffi::SQLITE_LOCK_PENDING;
        }
        if want == ffi::SQLITE_LOCK_PENDING {
            return Ok(());
        }
        if others_max >= ffi::SQLITE_LOCK_SHARED {
            // Keep PENDING: no new reader gets in, the current ones drain.
            return Err(ffi::SQLITE_BUSY);
        }
        ffi::SQLITE_LOCK_EXCLUSIVE
    };
    match entry.holders.get_mut(&me) {
        Some(holder) => {
            holder.level = granted;
            Ok(())
        }
        None => Err(ffi::SQLITE_IOERR_LOCK),
    }
}

/// The WAL slot lock decision (see the module docs).
fn shm_lock_slots(entry: &mut PathEntry, me: u64, mask: u8, flags: c_int) -> LockResult {
    let (others_shared, others_excl) = entry
        .holders
        .iter()
        .filter(|(id, _)| **id != me)
        .fold((0u8, 0u8), |(s, x), (_, h)| (s | h.shm_shared, x | h.shm_excl));
    let Some(holder) = entry.holders.get_mut(&me) else { return Err(ffi::SQLITE_IOERR_SHMLOCK) };
    let unlock = flags & ffi::SQLITE_SHM_UNLOCK != 0;
    let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
    let shared = flags & ffi::SQLITE_SHM_SHARED != 0;
    let lock = flags & ffi::SQLITE_SHM_LOCK != 0;
    if unlock == lock || exclusive == shared {
        return Err(ffi::SQLITE_IOERR_SHMLOCK);
    }
    if unlock {
        holder.shm_shared &= !mask;
        holder.shm_excl &= !mask;
        return Ok(());
    }
    if shared {
        if others_excl & mask != 0 {
            return Err(ffi::SQLITE_BUSY);
        }
        holder.shm_shared |= mask;
    } else {
        if (others_shared | others_excl) & mask != 0 {
            return Err(ffi::SQLITE_BUSY);
        }
        holder.shm_excl |= mask;
    }
    Ok(())
}

/// Releases `me`'s WAL slots and mapping; frees the regions when no holder is mapped.
fn shm_release(entry: &mut PathEntry, me: u64) {
    if let Some(holder) = entry.holders.get_mut(&me) {
        holder.shm_mapped = false;
        holder.shm_shared = 0;
        holder.shm_excl = 0;
    }
    if !entry.holders.values().any(|h| h.shm_mapped) {
        entry.shm.clear();
        entry.region_size = 0;
    }
}

// ---------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------

/// The never-freed home of one name's `sqlite3_vfs` (see *Lifetime* in the module docs).
/// `#[repr(C)]` with `raw` first is not relied upon: callbacks find the shell via `pAppData`.
struct Shell {
    /// Handed to SQLite as `*mut sqlite3_vfs`.
    raw: UnsafeCell<ffi::sqlite3_vfs>,
    /// Owns the bytes `raw.zName` points to.
    _name: CString,
    /// The registration's state; `None` while unregistered.
    slot: RwLock<Option<Arc<Bridge>>>,
}

// SAFETY: `raw` is written by Rust only in `Shell::leak`, before the shell is shared with
// anyone. Afterwards only SQLite writes it (`pNext`, under SQLite's own global mutex, while
// registered), and Rust only passes its address. Every other field is `Sync` on its own.
unsafe impl Sync for Shell {}

impl Shell {
    /// Allocates a shell for `name` and leaks it: SQLite may hold its address forever.
    fn leak(name: CString) -> &'static Shell {
        let raw = ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: std::mem::size_of::<RawFile>() as c_int,
            mxPathname: MAX_PATHNAME,
            pNext: ptr::null_mut(),
            zName: name.as_ptr(),
            pAppData: ptr::null_mut(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: Some(x_dl_open),
            xDlError: Some(x_dl_error),
            xDlSym: Some(x_dl_sym),
            xDlClose: Some(x_dl_close),
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        };
        let shell = Box::into_raw(Box::new(Shell {
            raw: UnsafeCell::new(raw),
            _name: name,
            slot: RwLock::new(None),
        }));
        // SAFETY: `shell` is a fresh, valid, uniquely owned allocation; nobody else can see it
        // yet, so writing its `raw.pAppData` cannot race. It is never freed, so the `'static`
        // reference (and the self-pointer in pAppData) stays valid for the whole process.
        unsafe {
            (*(*shell).raw.get()).pAppData = shell.cast::<c_void>();
            &*shell
        }
    }

    fn vfs_ptr(&self) -> *mut ffi::sqlite3_vfs {
        self.raw.get()
    }

    fn bridge(&self) -> Option<Arc<Bridge>> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, bridge: Option<Arc<Bridge>>) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = bridge;
    }
}

/// Every shell ever made, by name; also serializes register and unregister.
static SHELLS: Mutex<BTreeMap<String, &'static Shell>> = Mutex::new(BTreeMap::new());

/// Registers (not as the default VFS) a SQLite VFS called `name` over `vfs`, with default
/// options (see [`register_with`]).
pub fn register(name: &str, vfs: Arc<dyn Vfs>) -> Result<(), String> {
    register_with(name, vfs, BridgeOptions::default())
}

/// Registers (not as the default VFS) a SQLite VFS called `name` over `vfs`. Open databases
/// through it with `Connection::open_with_flags_and_vfs(path, flags, name)`, `path` absolute
/// in `vfs`'s namespace. Fails if `name` is empty, holds a NUL, is registered already (by
/// this module or any other VFS in the process) or SQLite refuses it.
pub fn register_with(name: &str, vfs: Arc<dyn Vfs>, options: BridgeOptions) -> Result<(), String> {
    if name.is_empty() {
        return Err("bridge VFS name is empty".to_string());
    }
    let c_name = CString::new(name).map_err(|_| format!("bridge VFS name {name:?} contains NUL"))?;
    let mut shells = lock(&SHELLS);
    let shell = match shells.get(name) {
        Some(shell) if shell.bridge().is_some() => {
            return Err(format!("bridge VFS {name:?} is already registered"));
        }
        Some(shell) => *shell,
        None => {
            // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
            let existing = unsafe { ffi::sqlite3_vfs_find(c_name.as_ptr()) };
            if !existing.is_null() {
                return Err(format!("a SQLite VFS named {name:?} already exists"));
            }
            let shell = Shell::leak(c_name);
            shells.insert(name.to_string(), shell);
            shell
        }
    };
    let bridge = Bridge {
        vfs,
        clock: options.clock,
        sleep: options.sleep,
        rng: Mutex::new(options.seed.unwrap_or_else(|| fnv1a(name))),
        open_files: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        paths: Mutex::new(BTreeMap::new()),
        last_error: Mutex::new(String::new()),
    };
    shell.set(Some(Arc::new(bridge)));
    // SAFETY: the shell's sqlite3_vfs is fully initialized, lives forever at a fixed
    // address, and its callbacks find their state through the slot just filled.
    let rc = unsafe { ffi::sqlite3_vfs_register(shell.vfs_ptr(), 0) };
    if rc != ffi::SQLITE_OK {
        shell.set(None);
        return Err(format!("sqlite3_vfs_register({name:?}) failed with code {rc}"));
    }
    Ok(())
}

/// Unregisters the bridge VFS `name` and drops its state (the `Vfs` reference, lock tables,
/// shared memory). Refused while any file opened through it is still open (close every
/// connection first). Do not race it with opens of the same name: such an open may fail.
pub fn unregister(name: &str) -> Result<(), String> {
    let shells = lock(&SHELLS);
    let Some(shell) = shells.get(name).copied() else {
        return Err(format!("bridge VFS {name:?} is not registered"));
    };
    let Some(bridge) = shell.bridge() else {
        return Err(format!("bridge VFS {name:?} is not registered"));
    };
    let open = bridge.open_files.load(Ordering::Acquire);
    if open != 0 {
        return Err(format!(
            "bridge VFS {name:?} still has {open} open file(s); close its connections first"
        ));
    }
    // SAFETY: the pointer is this shell's registered sqlite3_vfs; unregistering a
    // registered VFS only unlinks it from SQLite's list.
    let rc = unsafe { ffi::sqlite3_vfs_unregister(shell.vfs_ptr()) };
    shell.set(None);
    if rc != ffi::SQLITE_OK {
        return Err(format!("sqlite3_vfs_unregister({name:?}) failed with code {rc}"));
    }
    Ok(())
}

/// Whether `name` is a registered bridge VFS.
pub fn is_registered(name: &str) -> bool {
    lock(&SHELLS).get(name).is_some_and(|shell| shell.bridge().is_some())
}

/// Files currently open through the bridge VFS `name` (`None` if it is not registered).
pub fn open_files(name: &str) -> Option<usize> {
    let shell = lock(&SHELLS).get(name).copied()?;
    shell.bridge().map(|bridge| bridge.open_files.load(Ordering::Acquire))
}

/// The last IO error the bridge VFS `name` saw (what `xGetLastError` reports).
pub fn last_error(name: &str) -> Option<String> {
    let shell = lock(&SHELLS).get(name).copied()?;
    shell.bridge().map(|bridge| lock(&bridge.last_error).clone())
}

/// Seeds SQLite's process-global PRNG (used for WAL salts, temp names, random rowids),
/// which SQLite otherwise seeds from the *default* VFS's randomness. Process-global: runs
/// of several simulations on parallel threads still interleave its use. `seed` 0 restores
/// seeding from the default VFS.
pub fn seed_sqlite_prng(seed: u32) {
    // The C side reads the argument as an `int`; the bit pattern is what matters.
    let seed = seed as c_int;
    let no_db: *mut ffi::sqlite3 = ptr::null_mut();
    // SAFETY: SQLITE_TESTCTRL_PRNG_SEED takes (int seed, sqlite3 *db); a NULL db is allowed
    // and means "use `seed` as given". It only resets SQLite's PRNG state under its mutex.
    unsafe {
        ffi::sqlite3_test_control(ffi::SQLITE_TESTCTRL_PRNG_SEED, seed, no_db);
    }
}

// ---------------------------------------------------------------------------------------
// The C boundary: extern "C" callbacks and the helpers that read SQLite's pointers.
// ---------------------------------------------------------------------------------------

/// Our `sqlite3_file` subclass: SQLite allocates `szOsFile` bytes (8-byte aligned) and
/// passes them to `xOpen`, which fills them in.
#[repr(C)]
struct RawFile {
    base: ffi::sqlite3_file,
    /// From `Box::into_raw`; freed by `xClose`.
    state: *mut FileState,
}

/// The io methods of every file the bridge opens.
static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

/// Runs `body`, turning a panic into `on_panic`: no unwind ever crosses into C.
fn guard(on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// The registration state of a VFS pointer SQLite passes to a vfs callback.
///
/// # Safety
/// `vfs` is null or a `sqlite3_vfs` pointer SQLite got from [`register_with`]: the `raw`
/// field of a leaked, never-freed [`Shell`] whose `pAppData` points to the shell itself.
unsafe fn bridge_of(vfs: *mut ffi::sqlite3_vfs) -> Option<Arc<Bridge>> {
    if vfs.is_null() {
        return None;
    }
    // SAFETY: per the contract `vfs` points to a live sqlite3_vfs; `pAppData` is never
    // written after the shell was published, so this read does not race.
    let app = unsafe { (*vfs).pAppData }.cast::<Shell>().cast_const();
    if app.is_null() {
        return None;
    }
    // SAFETY: `pAppData` of our vfs is the address of its leaked `Shell`, valid forever.
    let shell: &'static Shell = unsafe { &*app };
    shell.bridge()
}

/// The state of a file SQLite passes to an io method.
///
/// # Safety
/// `file` is null or a `sqlite3_file` that [`x_open`] filled in (its `pMethods` is
/// [`IO_METHODS`], so SQLite only calls our methods on it, and it is a [`RawFile`]), and
/// `xClose` has not run on it. SQLite serializes the calls on one file (it is used by one
/// connection, under that connection's mutex), so nothing frees the state meanwhile.
unsafe fn state_of<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a FileState> {
    if file.is_null() {
        return None;
    }
    // SAFETY: per the contract `file` is our RawFile, so reading its `state` field is valid.
    let state = unsafe { (*file.cast::<RawFile>()).state };
    if state.is_null() {
        return None;
    }
    // SAFETY: `state` came from `Box::into_raw` in `x_open` and is freed only by `x_close`.
    Some(unsafe { &*state })
}

/// A path SQLite passes (NUL-terminated UTF-8); `None` for NULL or non-UTF-8.
///
/// # Safety
/// `name` is null or points to a NUL-terminated string valid for the call.
unsafe fn path_arg(name: *const c_char) -> Option<PathBuf> {
    if name.is_null() {
        return None;
    }
    // SAFETY: per the contract `name` is a valid NUL-terminated string.
    let text = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    Some(PathBuf::from(text))
}

/// A mutable byte buffer SQLite passes.
///
/// # Safety
/// `buf` is null or valid for writes of `len` bytes, and not otherwise accessed during the
/// call.
unsafe fn out_bytes<'a>(buf: *mut c_void, len: c_int) -> Option<&'a mut [u8]> {
    let len = usize::try_from(len).ok()?;
    if buf.is_null() {
        return None;
    }
    // SAFETY: per the contract.
    Some(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// Stores `value` through an out-pointer SQLite passes, if it is not null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: per the contract.
    unsafe { out.write(value) };
    true
}

/// Copies `text` (truncated) NUL-terminated into `buf` of `len` bytes.
fn copy_c_string(buf: &mut [u8], text: &str) {
    let Some(room) = buf.len().checked_sub(1) else { return };
    let n = text.len().min(room);
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), text.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    if let Some(nul) = buf.get_mut(n) {
        *nul = 0;
    }
}

// --- vfs methods -------------------------------------------------------------------------

/// `xOpen`.
/// Safety: `vfs` is our registered vfs (see [`bridge_of`]); `name` is null or a valid C
/// string; `file` points to `szOsFile` writable bytes (8-byte aligned) that SQLite owns and
/// will pass to our io methods iff we leave `pMethods` non-null; `out_flags` is null or
/// writable.
unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    if file.is_null() {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: `file` is writable; a NULL pMethods tells SQLite not to call xClose if we fail.
    unsafe { (*file).pMethods = ptr::null() };
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: see the function's safety note.
        let Some(bridge) = (unsafe { bridge_of(vfs) }) else { return ffi::SQLITE_CANTOPEN };
        // SAFETY: `name` is null or a valid C string.
        let path = unsafe { path_arg(name) };
        if !name.is_null() && path.as_ref().is_none_or(|p| !p.is_absolute()) {
            bridge.note_text("xOpen: path is not absolute UTF-8");
            return ffi::SQLITE_CANTOPEN;
        }
        let state = match bridge.open(path, flags) {
            Ok(state) => state,
            Err(code) => return code,
        };
        let raw = RawFile {
            base: ffi::sqlite3_file { pMethods: &IO_METHODS },
            state: Box::into_raw(Box::new(state)),
        };
        // SAFETY: `file` points to szOsFile = size_of::<RawFile>() writable, 8-aligned bytes.
        // From here SQLite owns the state through the file and frees it with xClose.
        unsafe { file.cast::<RawFile>().write(raw) };
        // SAFETY: `out_flags` is null or writable.
        unsafe { put(out_flags, flags) };
        ffi::SQLITE_OK
    })
}

/// `xDelete`. Safety: `vfs` is ours; `name` is null or a valid C string.
unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: see the function's safety note.
        let (Some(bridge), Some(path)) = (unsafe { bridge_of(vfs) }, unsafe { path_arg(name) }) else {
            return ffi::SQLITE_IOERR_DELETE;
        };
        bridge.delete(&path, sync_dir != 0)
    })
}

/// `xAccess`. Safety: `vfs` is ours; `name` is null or a valid C string; `out` is null or
/// writable.
unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: see the function's safety note.
        let (Some(bridge), Some(path)) = (unsafe { bridge_of(vfs) }, unsafe { path_arg(name) }) else {
            return ffi::SQLITE_IOERR_ACCESS;
        };
        match bridge.access(&path, flags) {
            // SAFETY: `out` is null or writable.
            Ok(answer) if unsafe { put(out, c_int::from(answer)) } => ffi::SQLITE_OK,
            Ok(_) => ffi::SQLITE_IOERR_ACCESS,
            Err(code) => code,
        }
    })
}

/// `xFullPathname`: absolute paths unchanged, relative ones refused. Safety: `name` is null
/// or a valid C string; `out` is null or writable for `n_out` bytes.
unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        if name.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `name` is a valid C string.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
        if bytes.first() != Some(&b'/') {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `out` is null or writable for `n_out` bytes.
        let Some(buf) = (unsafe { out_bytes(out.cast::<c_void>(), n_out) }) else {
            return ffi::SQLITE_CANTOPEN;
        };
        match buf.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                ffi::SQLITE_OK
            }
            None => ffi::SQLITE_CANTOPEN,
        }
    })
}

/// `xDlOpen`: extensions are never loaded through this VFS.
unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    ptr::null_mut()
}

/// `xDlError`. Safety: `out` is null or writable for `n` bytes.
unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let _ = guard(ffi::SQLITE_ERROR, || {
        // SAFETY: `out` is null or writable for `n` bytes.
        if let Some(buf) = unsafe { out_bytes(out.cast::<c_void>(), n) } {
            copy_c_string(buf, "loadable extensions are not supported by the sila bridge VFS");
        }
        ffi::SQLITE_OK
    });
}

/// `xDlSym`: nothing is ever loaded, so no symbol is found.
unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _handle: *mut c_void,
    _symbol: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    None
}

/// `xDlClose`: nothing to close.
unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _handle: *mut c_void) {}

/// `xRandomness`: the registration's deterministic stream. Safety: `vfs` is ours; `out` is
/// null or writable for `n` bytes.
unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guard(0, || {
        // SAFETY: see the function's safety note.
        let (Some(bridge), Some(buf)) =
            (unsafe { bridge_of(vfs) }, unsafe { out_bytes(out.cast::<c_void>(), n) })
        else {
            return 0;
        };
        bridge.randomness(buf);
        n
    })
}

/// `xSleep`: never sleeps (see the module docs). Safety: `vfs` is ours.
unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    guard(0, || {
        // SAFETY: see the function's safety note.
        match unsafe { bridge_of(vfs) } {
            Some(bridge) => bridge.sleep(micros),
            None => micros.max(0),
        }
    })
}

/// `xCurrentTime` (julian days). Safety: `vfs` is ours; `out` is null or writable.
unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: see the function's safety note.
        let now = unsafe { bridge_of(vfs) }.map_or(DEFAULT_NOW_MS, |bridge| bridge.now_ms());
        let days = (now as f64) / 86_400_000.0 + 2_440_587.5;
        // SAFETY: `out` is null or writable.
        if unsafe { put(out, days) } {
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_ERROR
        }
    })
}

/// `xCurrentTimeInt64` (julian day milliseconds). Safety: `vfs` is ours; `out` is null or
/// writable.
unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut ffi::sqlite3_int64) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: see the function's safety note.
        let now = unsafe { bridge_of(vfs) }.map_or(DEFAULT_NOW_MS, |bridge| bridge.now_ms());
        // SAFETY: `out` is null or writable.
        if unsafe { put(out, now.saturating_add(JULIAN_EPOCH_OFFSET_MS)) } {
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_ERROR
        }
    })
}

/// `xGetLastError`: copies the last IO error's text; there is no errno, so it returns 0.
/// Safety: `vfs` is ours; `out` is null or writable for `n` bytes.
unsafe extern "C" fn x_get_last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guard(0, || {
        // SAFETY: see the function's safety note.
        if let (Some(bridge), Some(buf)) =
            (unsafe { bridge_of(vfs) }, unsafe { out_bytes(out.cast::<c_void>(), n) })
        {
            copy_c_string(buf, &lock(&bridge.last_error));
        }
        0
    })
}

// --- io methods --------------------------------------------------------------------------
// Shared safety argument: `file` is null or a file our xOpen filled in and not yet closed
// (see [`state_of`]); the other pointers are as SQLite documents for each method.

/// `xClose`: releases locks and shared memory, frees the state.
unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    if file.is_null() {
        return ffi::SQLITE_OK;
    }
    let raw = file.cast::<RawFile>();
    // SAFETY: `file` is our RawFile (pMethods is IO_METHODS); taking the state pointer and
    // nulling it makes a second xClose (which SQLite never does) harmless.
    let state = unsafe { std::mem::replace(&mut (*raw).state, ptr::null_mut()) };
    if state.is_null() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: `state` came from `Box::into_raw` in x_open and is freed only here, once.
    let state = unsafe { Box::from_raw(state) };
    guard(ffi::SQLITE_IOERR_CLOSE, move || state.close())
}

/// `xRead`: a short read zero-fills the rest and answers `SQLITE_IOERR_SHORT_READ`.
/// Safety: `buf` is null or writable for `amount` bytes.
unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: see the shared safety argument and the function's note.
        let (Some(state), Some(buf)) = (unsafe { state_of(file) }, unsafe { out_bytes(buf, amount) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        state.read(buf, offset)
    })
}

/// `xWrite`. Safety: `buf` is null or readable for `amount` bytes.
unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: see the shared safety argument.
        let Some(state) = (unsafe { state_of(file) }) else { return ffi::SQLITE_IOERR_WRITE };
        let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
        if buf.is_null() {
            return ffi::SQLITE_IOERR_WRITE;
        }
        // SAFETY: `buf` is readable for `amount` bytes for the duration of the call.
        let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        state.write(bytes, offset)
    })
}

/// `xTruncate`.
unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: see the shared safety argument.
        unsafe { state_of(file) }.map_or(ffi::SQLITE_IOERR_TRUNCATE, |state| state.truncate(size))
    })
}

/// `xSync`: `VfsFile::sync` (NORMAL and FULL alike), then the pending directory sync.
unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: see the shared safety argument.
        unsafe { state_of(file) }.map_or(ffi::SQLITE_IOERR_FSYNC, FileState::sync)
    })
}

/// `xFileSize`. Safety: `out` is null or writable.
unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: see the shared safety argument.
        let Some(state) = (unsafe { state_of(file) }) else { return ffi::SQLITE_IOERR_FSTAT };
        match state.size() {
            // SAFETY: `out` is null or writable.
            Ok(size) if unsafe { put(out, size) } => ffi::SQLITE_OK,
            Ok(_) => ffi::SQLITE_IOERR_FSTAT,
            Err(code) => code,
        }
    })
}

/// `xLock`.
unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: see the shared safety argument.
        unsafe { state_of(file) }.map_or(ffi::SQLITE_IOERR_LOCK, |state| state.lock(level))
    })
}

/// `xUnlock`.
unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: see the shared safety argument.
        unsafe { state_of(file) }.map_or(ffi::SQLITE_IOERR_UNLOCK, |state| state.unlock(level))
    })
}

/// `xCheckReservedLock`. Safety: `out` is null or writable.
unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: see the shared safety argument.
        let Some(state) = (unsafe { state_of(file) }) else { return ffi::SQLITE_IOERR_CHECKRESERVEDLOCK };
        let reserved = c_int::from(state.check_reserved());
        // SAFETY: `out` is null or writable.
        if unsafe { put(out, reserved) } {
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_IOERR_CHECKRESERVEDLOCK
        }
    })
}

/// `xFileControl`: no op is implemented; SQLite falls back to its defaults.
unsafe extern "C" fn x_file_control(_file: *mut ffi::sqlite3_file, _op: c_int, _arg: *mut c_void) -> c_int {
    ffi::SQLITE_NOTFOUND
}

/// `xSectorSize`.
unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    SECTOR_SIZE
}

/// `xDeviceCharacteristics`: none (see the module docs).
unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    0
}

/// `xShmMap`. Safety: `out` is null or writable for one pointer.
unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    if out.is_null() {
        return ffi::SQLITE_IOERR_SHMMAP;
    }
    // SAFETY: `out` is writable; SQLite reads it only after we return.
    unsafe { out.write(ptr::null_mut()) };
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: see the shared safety argument.
        let Some(state) = (unsafe { state_of(file) }) else { return ffi::SQLITE_IOERR_SHMMAP };
        match state.shm_map(region, size, extend != 0) {
            Ok(addr) => {
                // SAFETY: `out` is writable. `addr` is null or a region that stays allocated
                // at this address until every holder of the path has unmapped or closed.
                unsafe { out.write(addr) };
                ffi::SQLITE_OK
            }
            Err(code) => code,
        }
    })
}

/// `xShmLock`.
unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: see the shared safety argument.
        unsafe { state_of(file) }.map_or(ffi::SQLITE_IOERR_SHMLOCK, |state| state.shm_lock(offset, n, flags))
    })
}

/// `xShmBarrier`: a full memory fence between the connections sharing the regions.
unsafe extern "C" fn x_shm_barrier(_file: *mut ffi::sqlite3_file) {
    fence(Ordering::SeqCst);
}

/// `xShmUnmap`: the `-shm` is memory only, so `delete` changes nothing: the regions go
/// when the last holder unmaps.
unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: see the shared safety argument.
        if let Some(state) = unsafe { state_of(file) } {
            state.shm_unmap();
        }
        ffi::SQLITE_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_with(ids: &[u64]) -> PathEntry {
        let mut entry = PathEntry::default();
        for id in ids {
            entry.holders.insert(*id, Holder::default());
        }
        entry
    }

    #[test]
    fn lock_levels_follow_sqlite_semantics() {
        let mut e = entry_with(&[1, 2, 3]);
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 2, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_RESERVED), Ok(()));
        assert_eq!(lock_level(&mut e, 2, ffi::SQLITE_LOCK_RESERVED), Err(ffi::SQLITE_BUSY));
        // A reader still holds SHARED: the writer stops at PENDING.
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_EXCLUSIVE), Err(ffi::SQLITE_BUSY));
        assert_eq!(e.holders.get(&1).map(|h| h.level), Some(ffi::SQLITE_LOCK_PENDING));
        // PENDING keeps new readers out.
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Err(ffi::SQLITE_BUSY));
        if let Some(h) = e.holders.get_mut(&2) {
            h.level = ffi::SQLITE_LOCK_NONE;
        }
        assert_eq!(lock_level(&mut e, 1, ffi::SQLITE_LOCK_EXCLUSIVE), Ok(()));
        assert_eq!(e.holders.get(&1).map(|h| h.level), Some(ffi::SQLITE_LOCK_EXCLUSIVE));
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Err(ffi::SQLITE_BUSY));
        if let Some(h) = e.holders.get_mut(&1) {
            h.level = ffi::SQLITE_LOCK_SHARED;
        }
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_SHARED), Ok(()));
        assert_eq!(lock_level(&mut e, 3, ffi::SQLITE_LOCK_NONE), Ok(()), "lower is a no-op");
    }

    #[test]
    fn wal_slots_are_shared_or_exclusive() {
        let lock_sh = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_SHARED;
        let lock_ex = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        let unlock_sh = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_SHARED;
        let unlock_ex = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        let mut e = entry_with(&[1, 2]);
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_1000, lock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, lock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b1111_1000, lock_ex), Err(ffi::SQLITE_BUSY));
        assert_eq!(e.holders.get(&2).map(|h| h.shm_excl), Some(0), "all or nothing");
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_0001, lock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_sh), Err(ffi::SQLITE_BUSY));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_ex), Err(ffi::SQLITE_BUSY));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_0001, unlock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_0001, lock_ex), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 1, 0b0000_1000, unlock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, unlock_sh), Ok(()));
        assert_eq!(shm_lock_slots(&mut e, 2, 0b0000_1000, lock_ex), Ok(()));
        assert_eq!(
            shm_lock_slots(&mut e, 2, 0b0000_1000, lock_ex | ffi::SQLITE_SHM_UNLOCK),
            Err(ffi::SQLITE_IOERR_SHMLOCK)
        );
        // Unmapping releases everything and frees the regions with the last mapper.
        e.shm.push(Region::new(32768));
        for h in e.holders.values_mut() {
            h.shm_mapped = true;
        }
        shm_release(&mut e, 1);
        assert_eq!(e.shm.len(), 1);
        shm_release(&mut e, 2);
        assert!(e.shm.is_empty());
        assert_eq!(shm_lock_slots(&mut e, 1, 0b1111_1111, lock_ex), Ok(()));
    }

    #[test]
    fn randomness_is_seeded() {
        let mut a = 7u64;
        let mut b = 7u64;
        assert_eq!(splitmix64(&mut a), splitmix64(&mut b));
        assert_ne!(fnv1a("a"), fnv1a("b"));
    }

    #[test]
    fn temp_file_round_trip() -> VfsResult<()> {
        let t = TempFile::default();
        assert_eq!(t.write_at(b"abc", 2)?, 3);
        let mut buf = [9u8; 8];
        assert_eq!(t.read_at(&mut buf, 0)?, 5);
        assert_eq!(buf.get(..5), Some(&b"\0\0abc"[..]));
        t.set_len(1)?;
        assert_eq!(t.len()?, 1);
        assert_eq!(t.read_at(&mut buf, 7)?, 0);
        assert!(t.write_at(b"x", TEMP_BYTES_MAX).is_err());
        Ok(())
    }
}
