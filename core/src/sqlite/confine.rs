//! The confinement VFS: defence in depth behind the authorizer.
//!
//! [`register`] adds (once per process) an SQLite VFS named [`VFS_NAME`] that hands every IO,
//! locking and shared-memory call to SQLite's unix VFS ([`BASE_VFS`]), but first checks every
//! path SQLite asks for. The broker opens all of its connections through it, so even if the
//! authorizer ([`super::policy`]) were bypassed, SQL could only reach files the engine itself
//! lays out:
//!
//! * the path is absolute, valid UTF-8, and has no empty, `.` or `..` component;
//! * its directory is one the broker registered with [`allow_dir`] (a database's directory
//!   inside the workspace, `<ws>/apps/<app_uuid>/db/<db>`), exactly — not a subdirectory;
//! * its file name is `<stem>.sqlite` or one of SQLite's companions `-wal`, `-shm`, `-journal`,
//!   where the stem is 1–64 ASCII letters, digits, `-` or `_` (the store names files by UUID);
//! * neither the file nor its directory is a symbolic link (`lstat`). Between that check and
//!   the open a symlink could in principle be swapped in; the unix VFS opens every file with
//!   `O_NOFOLLOW`, so it would not be followed, and the directories are the workspace's own,
//!   which SQL has no way to create, rename or replace;
//! * super-journals (multi-database commits) are refused: attached databases are read-only,
//!   so no commit spans two files.
//!
//! Anonymous temporary files (SQLite passes no name: sorter spills, temporary b-trees,
//! statement journals) are opened by the unix VFS in its temp directory and unlinked at once,
//! behind methods of ours that count every byte written and refuse growth past
//! [`set_temp_limits`]' caps (per file and per process) with `SQLITE_FULL`, so temp storage
//! is bounded (the broker sets `temp_store=FILE`, see [`super::open`]). Extension loading through the
//! VFS (`xDlOpen`) always fails. A refused path makes the SQLite call fail with
//! `SQLITE_CANTOPEN` (or `SQLITE_IOERR_*` for access/delete); the reason is kept for
//! [`super::map_error`] ([`take_refusal`]) and counted ([`refusals`]).
//!
//! Limits of this layer, stated plainly: the directory registry is process-wide, so a
//! connection of app A is confined to the databases' directories the process has opened, not
//! to A's alone (the authorizer, which refuses every ATTACH app SQL carries, is what keeps A out
//! of B's files; the broker's own ATTACH names files it resolved from A's manifest); and a URI
//! filename with `vfs=` can select another VFS, which is why SQL may never name a file.
//!
//! Locking: the base is SQLite's `unix-excl` variant of the unix VFS. The first lock a
//! read-write connection takes on a database is an exclusive POSIX lock held for the process
//! until the last connection to that file closes; after that every lock and unlock between
//! connections of this process is bookkeeping in memory, and the wal-index lives in heap memory
//! instead of a `-shm` file. The engine owns its files (one process per workspace, see
//! `WORKSPACE_LOCKED`), so nothing is lost, and a read transaction no longer costs two
//! `fcntl` calls under SQLite's per-file mutex, which is what made two readers of one database
//! wait on each other. Consequences: another process (a `sqlite3` shell, a second host) cannot
//! open a live database while the workspace holds it (it gets `SQLITE_BUSY`); and after a crash
//! SQLite rebuilds the wal-index from the WAL when the file is next opened, as it does for a
//! `-shm` file it cannot trust. Read-only connections fall back to ordinary POSIX locks (SQLite's
//! rule); the broker opens none.
//!
//! Unsafe code: every `extern "C"` callback runs inside [`guarded`] (a panic becomes an SQLite
//! error code, never an unwind into C), and each `unsafe` block says why it is sound.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use rusqlite::ffi;

use crate::{Error, ErrorCode, Result};

/// The name the VFS is registered under.
pub const VFS_NAME: &str = "sila-confine";

/// The VFS it delegates to: SQLite's unix VFS with process-exclusive locks and an in-heap
/// wal-index (see the module doc).
pub const BASE_VFS: &std::ffi::CStr = c"unix-excl";

/// Longest file stem accepted, in bytes.
const STEM_BYTES_MAX: usize = 64;

/// Suffixes SQLite appends to a database's name for its companion files.
const COMPANION_SUFFIXES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// Directories files may be opened in (see the module doc).
static ALLOWED_DIRS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Paths refused since the process started.
static REFUSALS: AtomicU64 = AtomicU64::new(0);

/// The registration outcome: registered, or why registering failed.
static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

thread_local! {
    static LAST_REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Registers the VFS (once per process; later calls return the first outcome) and returns its
/// name for `Connection::open_with_flags_and_vfs`.
pub fn register() -> Result<&'static str> {
    match REGISTERED.get_or_init(register_once) {
        Ok(()) => Ok(VFS_NAME),
        Err(why) => {
            Err(Error::new(ErrorCode::Internal, format!("registering the {VFS_NAME} VFS failed: {why}")))
        }
    }
}

/// Allows files directly inside `dir` (which must be absolute) to be opened through the VFS.
/// Idempotent.
pub fn allow_dir(dir: &Path) -> Result<()> {
    let text = dir.to_str().filter(|t| t.starts_with('/') && t.len() > 1).ok_or_else(|| {
        Error::invalid_argument(format!("not an absolute UTF-8 directory: {}", dir.display()))
    })?;
    let text = text.trim_end_matches('/').to_string();
    ALLOWED_DIRS.write().unwrap_or_else(|p| p.into_inner()).insert(text);
    Ok(())
}

/// How many paths the VFS has refused since the process started.
pub fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

/// Takes the reason of the last refusal made on this thread, if any.
pub fn take_refusal() -> Option<String> {
    LAST_REFUSAL.with(|r| r.borrow_mut().take())
}

/// Forgets a refusal left on this thread by an earlier call that SQLite tolerated (an
/// `xAccess` probe that was refused but did not fail the statement), so it cannot relabel the
/// error of an unrelated later statement. Called before every statement the engine runs.
pub fn clear_refusal() {
    LAST_REFUSAL.with(|r| r.borrow_mut().take());
}

fn refuse(path: &str, why: &str) {
    REFUSALS.fetch_add(1, Ordering::Relaxed);
    // The path is shown escaped and shortened: it may come from SQL.
    let shown: String = path.escape_debug().take(200).collect();
    LAST_REFUSAL.with(|r| {
        *r.borrow_mut() = Some(format!(
            "the confinement VFS refused file {shown:?}: {why}; apps reach only their own databases"
        ))
    });
}

/// Checks a path against the rules of the module doc. `Err` carries the reason.
pub fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    let (dir, name) = split_path(path)?;
    check_name(name)?;
    let allowed = ALLOWED_DIRS.read().unwrap_or_else(|p| p.into_inner()).contains(dir);
    if !allowed {
        return Err("its directory is not a database directory of this workspace");
    }
    for p in [dir, path] {
        match std::fs::symlink_metadata(p) {
            Ok(meta) if meta.file_type().is_symlink() => return Err("it is or lies under a symbolic link"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p == path => {}
            Err(_) => return Err("its directory cannot be inspected"),
        }
    }
    Ok(())
}

/// Splits an absolute, normalized path into its directory and file name.
fn split_path(path: &str) -> std::result::Result<(&str, &str), &'static str> {
    if !path.starts_with('/') {
        return Err("it is not an absolute path");
    }
    if path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("it has an empty, '.' or '..' component");
    }
    let cut = path.rfind('/').ok_or("it is not an absolute path")?;
    let dir = path.get(..cut).ok_or("it is not an absolute path")?;
    let name = path.get(cut + 1..).ok_or("it has no file name")?;
    if dir.is_empty() {
        return Err("it lies in the root directory");
    }
    Ok((dir, name))
}

fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    let stem = COMPANION_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).and_then(|n| n.strip_suffix(".sqlite")))
        .ok_or("its name is not <stem>.sqlite or one of SQLite's -wal, -shm, -journal companions")?;
    let good = !stem.is_empty()
        && stem.len() <= STEM_BYTES_MAX
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if good {
        Ok(())
    } else {
        Err("its name is not a database file name the engine creates")
    }
}

/// Runs a callback body, turning a panic into `on_panic` instead of unwinding into SQLite.
fn guarded(on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// The path SQLite passed, if it is valid UTF-8.
///
/// # Safety
/// `name` must be null or a NUL-terminated string that outlives the returned reference (SQLite
/// guarantees this for the duration of a VFS call).
unsafe fn path_of<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

/// The unix VFS this one delegates to, stored in our `pAppData`.
///
/// # Safety
/// `vfs` must be the VFS object [`register_once`] registered.
unsafe fn base_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: our VFS object is leaked (lives forever) and its pAppData is the base VFS.
    unsafe { (*vfs).pAppData.cast::<ffi::sqlite3_vfs>() }
}

/// Checks `name` (which may be null, for anonymous files) and records a refusal.
///
/// # Safety
/// As [`path_of`].
unsafe fn admit(name: *const c_char) -> bool {
    if name.is_null() {
        return true;
    }
    // SAFETY: forwarded contract.
    match unsafe { path_of(name) } {
        None => {
            refuse("(not UTF-8)", "it is not valid UTF-8");
            false
        }
        Some(path) => match check_path(path) {
            Ok(()) => true,
            Err(why) => {
                refuse(path, why);
                false
            }
        },
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guarded(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: SQLite passes our VFS object and a valid (or null) file name.
        let (base, admitted) = unsafe { (base_of(vfs), admit(name)) };
        let super_journal = flags & ffi::SQLITE_OPEN_SUPER_JOURNAL != 0;
        if !admitted || super_journal {
            if super_journal {
                refuse("(super-journal)", "multi-database commits are not offered");
            }
            // SAFETY: `file` points at szOsFile writable bytes; SQLite must see no methods on
            // a failed open so it never calls xClose on it.
            unsafe { (*file).pMethods = std::ptr::null() };
            return ffi::SQLITE_CANTOPEN;
        }
        let Some(open) = (unsafe { (*base).xOpen }) else { return ffi::SQLITE_CANTOPEN };
        if !name.is_null() {
            // SAFETY: the base VFS is SQLite's static unix VFS; our szOsFile is larger than its
            // szOsFile, so `file` is large enough for it, and every argument is passed through.
            return unsafe { open(base, name, file, flags, out_flags) };
        }
        // An anonymous temp file: the unix file object goes after our header, and our methods
        // count its bytes against the temp caps.
        // SAFETY: `file` has szOsFile = TEMP_INNER_OFFSET + base szOsFile writable bytes, so the
        // inner object fits after the header; on failure SQLite must see no methods.
        let rc = unsafe { open(base, name, temp_inner(file), flags, out_flags) };
        let temp = file.cast::<TempFile>();
        // SAFETY: `temp` points at our (suitably sized and aligned) header.
        unsafe {
            (*temp).accounted = 0;
            (*temp).base.pMethods = if rc == ffi::SQLITE_OK { &TEMP_METHODS } else { std::ptr::null() };
        }
        rc
    })
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: as in `x_open`.
        let (base, admitted) = unsafe { (base_of(vfs), admit(name)) };
        if name.is_null() || !admitted {
            return ffi::SQLITE_IOERR_DELETE;
        }
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        match unsafe { (*base).xDelete } {
            Some(delete) => unsafe { delete(base, name, sync_dir) },
            None => ffi::SQLITE_IOERR_DELETE,
        }
    })
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    res_out: *mut c_int,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: as in `x_open`.
        let (base, admitted) = unsafe { (base_of(vfs), admit(name)) };
        if name.is_null() || !admitted {
            return ffi::SQLITE_IOERR_ACCESS;
        }
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        match unsafe { (*base).xAccess } {
            Some(access) => unsafe { access(base, name, flags, res_out) },
            None => ffi::SQLITE_IOERR_ACCESS,
        }
    })
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    guarded(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: as in `x_open`.
        let (base, path) = unsafe { (base_of(vfs), path_of(name)) };
        // A relative name would be resolved against the process's working directory.
        if !path.is_some_and(|p| p.starts_with('/')) || !unsafe { admit(name) } {
            if path.is_some_and(|p| !p.starts_with('/')) {
                refuse(path.unwrap_or_default(), "it is not an absolute path");
            }
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: delegation with the caller's arguments; `z_out` has `n_out` bytes.
        let rc = match unsafe { (*base).xFullPathname } {
            Some(full) => unsafe { full(base, name, n_out, z_out) },
            None => return ffi::SQLITE_CANTOPEN,
        };
        if rc & 0xff != ffi::SQLITE_OK {
            return rc;
        }
        // The unix VFS resolves symbolic links here: check what it produced as well.
        // SAFETY: on success the base VFS wrote a NUL-terminated path into `z_out`.
        if unsafe { admit(z_out) } {
            rc
        } else {
            ffi::SQLITE_CANTOPEN
        }
    })
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    refuse("(shared library)", "loading native code is disabled");
    std::ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n_byte: c_int, z_err: *mut c_char) {
    let message = c"extension loading is disabled by the sila-confine VFS";
    let n = usize::try_from(n_byte).unwrap_or(0);
    if n == 0 || z_err.is_null() {
        return;
    }
    let bytes = message.to_bytes();
    let len = bytes.len().min(n - 1);
    // SAFETY: SQLite gives `n_byte` writable bytes at `z_err`; we write `len + 1 <= n` of them.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), z_err, len);
        *z_err.add(len) = 0;
    }
}

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _handle: *mut c_void,
    _symbol: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    None
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _handle: *mut c_void) {}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n_byte: c_int, z_out: *mut c_char) -> c_int {
    guarded(0, || {
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        let base = unsafe { base_of(vfs) };
        match unsafe { (*base).xRandomness } {
            Some(f) => unsafe { f(base, n_byte, z_out) },
            None => 0,
        }
    })
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, microseconds: c_int) -> c_int {
    guarded(0, || {
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        let base = unsafe { base_of(vfs) };
        match unsafe { (*base).xSleep } {
            Some(f) => unsafe { f(base, microseconds) },
            None => 0,
        }
    })
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        let base = unsafe { base_of(vfs) };
        match unsafe { (*base).xCurrentTime } {
            Some(f) => unsafe { f(base, out) },
            None => ffi::SQLITE_ERROR,
        }
    })
}

unsafe extern "C" fn x_get_last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guarded(0, || {
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        let base = unsafe { base_of(vfs) };
        match unsafe { (*base).xGetLastError } {
            Some(f) => unsafe { f(base, n, out) },
            None => 0,
        }
    })
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: delegation with the caller's arguments to the static base VFS.
        let base = unsafe { base_of(vfs) };
        match unsafe { (*base).xCurrentTimeInt64 } {
            Some(f) => unsafe { f(base, out) },
            None => ffi::SQLITE_ERROR,
        }
    })
}

fn register_once() -> std::result::Result<(), String> {
    // SAFETY: sqlite3_vfs_find initializes SQLite if needed and returns a pointer to a static,
    // registered VFS object (or null); the name is a NUL-terminated constant.
    let base = unsafe { ffi::sqlite3_vfs_find(BASE_VFS.as_ptr()) };
    if base.is_null() {
        return Err(format!("SQLite has no {BASE_VFS:?} VFS (a unix build is required)"));
    }
    // SAFETY: `base` is non-null and points at a registered VFS, which SQLite never frees.
    let (base_name, sz_os_file, mx_pathname, base_version) = unsafe {
        (path_of((*base).zName).unwrap_or(""), (*base).szOsFile, (*base).mxPathname, (*base).iVersion)
    };
    if base_name == VFS_NAME || base_version < 2 {
        return Err(format!("the VFS {base_name:?} (version {base_version}) cannot be wrapped"));
    }
    let name = CString::new(VFS_NAME).map_err(|e| e.to_string())?;
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        // Room for a temp file's header before the unix file object (see `TempFile`).
        szOsFile: sz_os_file.saturating_add(c_int::try_from(TEMP_INNER_OFFSET).map_err(|e| e.to_string())?),
        mxPathname: mx_pathname,
        pNext: std::ptr::null_mut(),
        // Leaked below together with the VFS object: SQLite keeps both for the process's life.
        zName: name.into_raw(),
        pAppData: base.cast::<c_void>(),
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
    });
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` is a fully initialised, leaked (never freed) VFS object; registration
    // happens once per process (OnceLock), and makeDflt=0 leaves the default VFS alone.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_vfs_register returned {rc}"))
    }
}

// ----- anonymous temporary files: capped -------------------------------------------------------

/// Default of [`set_temp_limits`]' per-file cap: 256 MiB.
pub const TEMP_FILE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default of [`set_temp_limits`]' cap on all temporary files of the process together: 1 GiB.
pub const TEMP_BYTES_TOTAL_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;

static TEMP_FILE_BYTES_MAX: AtomicU64 = AtomicU64::new(TEMP_FILE_BYTES_MAX_DEFAULT);
static TEMP_BYTES_TOTAL_MAX: AtomicU64 = AtomicU64::new(TEMP_BYTES_TOTAL_MAX_DEFAULT);
static TEMP_BYTES_IN_USE: AtomicU64 = AtomicU64::new(0);

/// Sets the caps on anonymous temporary files (sorter spills, temporary b-trees for DISTINCT,
/// GROUP BY, materialized views and subqueries, statement journals): `per_file` bytes for any
/// one file and `total` bytes for all of them in the process. A write past either fails the
/// statement with `SQLITE_FULL`, which the engine reports as `QuotaExceeded` naming the cap.
/// Process-wide, like the VFS; the broker sets them from its options.
pub fn set_temp_limits(per_file: u64, total: u64) {
    TEMP_FILE_BYTES_MAX.store(per_file, Ordering::Relaxed);
    TEMP_BYTES_TOTAL_MAX.store(total, Ordering::Relaxed);
}

/// Bytes held by anonymous temporary files now, process-wide.
pub fn temp_bytes_in_use() -> u64 {
    TEMP_BYTES_IN_USE.load(Ordering::Relaxed)
}

/// The file object of an anonymous temporary file: our methods, the bytes it accounts for,
/// and the unix VFS's own file object right after it (at [`TEMP_INNER_OFFSET`]).
#[repr(C)]
struct TempFile {
    base: ffi::sqlite3_file,
    accounted: u64,
}

/// Where the wrapped unix file object starts inside a [`TempFile`]'s allocation (16-aligned).
const TEMP_INNER_OFFSET: usize = std::mem::size_of::<TempFile>().next_multiple_of(16);

/// The wrapped unix file object of a temp file.
///
/// # Safety
/// `file` must be a [`TempFile`] opened by [`x_open`], inside an allocation of our `szOsFile`.
unsafe fn temp_inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: our szOsFile is TEMP_INNER_OFFSET + the base's szOsFile, so the offset is in bounds.
    unsafe { file.cast::<u8>().add(TEMP_INNER_OFFSET).cast::<ffi::sqlite3_file>() }
}

/// The io methods of the wrapped file (set by the unix VFS's xOpen).
///
/// # Safety
/// As [`temp_inner`], after a successful open.
unsafe fn inner_methods<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a ffi::sqlite3_io_methods> {
    // SAFETY: the inner file was opened successfully, so its pMethods is a static method table.
    unsafe { (*temp_inner(file)).pMethods.as_ref() }
}

/// Accounts growth of a temp file to `end` bytes against the process's caps, or records why
/// it is refused. Returns the bytes added to the process's count.
fn temp_grow(accounted: u64, end: u64) -> std::result::Result<u64, ()> {
    let caps = (TEMP_FILE_BYTES_MAX.load(Ordering::Relaxed), TEMP_BYTES_TOTAL_MAX.load(Ordering::Relaxed));
    temp_grow_within(accounted, end, caps, &TEMP_BYTES_IN_USE).map_err(|why| {
        REFUSALS.fetch_add(1, Ordering::Relaxed);
        LAST_REFUSAL.with(|r| *r.borrow_mut() = Some(why));
    })
}

/// [`temp_grow`] against explicit caps `(per_file, total)` and counter; `Err` is the reason.
fn temp_grow_within(
    accounted: u64,
    end: u64,
    (per_file, total): (u64, u64),
    in_use: &AtomicU64,
) -> std::result::Result<u64, String> {
    if end <= accounted {
        return Ok(0);
    }
    let grow = end - accounted;
    if end > per_file {
        return Err(format!(
            "temporary storage of one statement (a sort, DISTINCT, GROUP BY or materialized subquery) \
             would pass temp_file_bytes_max ({per_file} bytes); narrow the query or add an index"
        ));
    }
    let before = in_use.fetch_add(grow, Ordering::AcqRel);
    if before.saturating_add(grow) > total {
        in_use.fetch_sub(grow, Ordering::AcqRel);
        return Err(format!(
            "temporary storage of all statements would pass temp_bytes_total_max ({total} bytes); retry later"
        ));
    }
    Ok(grow)
}

unsafe extern "C" fn temp_close(file: *mut ffi::sqlite3_file) -> c_int {
    guarded(ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: SQLite calls xClose once on a file our x_open opened as a TempFile.
        let (temp, methods) = unsafe { (&mut *file.cast::<TempFile>(), inner_methods(file)) };
        TEMP_BYTES_IN_USE.fetch_sub(std::mem::take(&mut temp.accounted), Ordering::AcqRel);
        // SAFETY: delegation to the inner file's own method.
        match methods.and_then(|m| m.xClose) {
            Some(close) => unsafe { close(temp_inner(file)) },
            None => ffi::SQLITE_OK,
        }
    })
}

unsafe extern "C" fn temp_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: a TempFile of ours; the arguments are SQLite's, passed through.
        match unsafe { inner_methods(file) }.and_then(|m| m.xRead) {
            Some(read) => unsafe { read(temp_inner(file), buf, amt, off) },
            None => ffi::SQLITE_IOERR_READ,
        }
    })
}

unsafe extern "C" fn temp_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: a TempFile of ours (SQLite serializes calls on one file).
        let temp = unsafe { &mut *file.cast::<TempFile>() };
        let end = u64::try_from(off).unwrap_or(u64::MAX).saturating_add(u64::try_from(amt).unwrap_or(0));
        let Ok(grow) = temp_grow(temp.accounted, end) else { return ffi::SQLITE_FULL };
        // SAFETY: delegation with SQLite's arguments.
        let rc = match unsafe { inner_methods(file) }.and_then(|m| m.xWrite) {
            Some(write) => unsafe { write(temp_inner(file), buf, amt, off) },
            None => ffi::SQLITE_IOERR_WRITE,
        };
        if rc == ffi::SQLITE_OK {
            temp.accounted += grow;
        } else {
            TEMP_BYTES_IN_USE.fetch_sub(grow, Ordering::AcqRel);
        }
        rc
    })
}

unsafe extern "C" fn temp_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guarded(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: a TempFile of ours.
        let temp = unsafe { &mut *file.cast::<TempFile>() };
        // SAFETY: delegation with SQLite's arguments.
        let rc = match unsafe { inner_methods(file) }.and_then(|m| m.xTruncate) {
            Some(truncate) => unsafe { truncate(temp_inner(file), size) },
            None => ffi::SQLITE_IOERR_TRUNCATE,
        };
        let size = u64::try_from(size).unwrap_or(0);
        if rc == ffi::SQLITE_OK && size < temp.accounted {
            TEMP_BYTES_IN_USE.fetch_sub(temp.accounted - size, Ordering::AcqRel);
            temp.accounted = size;
        }
        rc
    })
}

unsafe extern "C" fn temp_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSYNC, || match unsafe { inner_methods(file) }.and_then(|m| m.xSync) {
        // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
        Some(sync) => unsafe { sync(temp_inner(file), flags) },
        None => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn temp_file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSTAT, || match unsafe { inner_methods(file) }.and_then(|m| m.xFileSize) {
        // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
        Some(size) => unsafe { size(temp_inner(file), out) },
        None => ffi::SQLITE_IOERR_FSTAT,
    })
}

unsafe extern "C" fn temp_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_LOCK, || match unsafe { inner_methods(file) }.and_then(|m| m.xLock) {
        // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
        Some(lock) => unsafe { lock(temp_inner(file), level) },
        None => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn temp_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_UNLOCK, || match unsafe { inner_methods(file) }.and_then(|m| m.xUnlock) {
        // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
        Some(unlock) => unsafe { unlock(temp_inner(file), level) },
        None => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn temp_check_reserved(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        match unsafe { inner_methods(file) }.and_then(|m| m.xCheckReservedLock) {
            // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
            Some(check) => unsafe { check(temp_inner(file), out) },
            None => ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        }
    })
}

unsafe extern "C" fn temp_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guarded(ffi::SQLITE_NOTFOUND, || {
        // A size hint would make the unix VFS extend the file without a write, past the
        // accounting: temp files grow by writes only.
        if op == ffi::SQLITE_FCNTL_SIZE_HINT {
            return ffi::SQLITE_OK;
        }
        match unsafe { inner_methods(file) }.and_then(|m| m.xFileControl) {
            // SAFETY: a TempFile of ours; delegation with SQLite's arguments.
            Some(control) => unsafe { control(temp_inner(file), op, arg) },
            None => ffi::SQLITE_NOTFOUND,
        }
    })
}

unsafe extern "C" fn temp_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    guarded(4096, || match unsafe { inner_methods(file) }.and_then(|m| m.xSectorSize) {
        // SAFETY: a TempFile of ours; delegation.
        Some(sector) => unsafe { sector(temp_inner(file)) },
        None => 4096,
    })
}

unsafe extern "C" fn temp_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    guarded(0, || match unsafe { inner_methods(file) }.and_then(|m| m.xDeviceCharacteristics) {
        // SAFETY: a TempFile of ours; delegation.
        Some(device) => unsafe { device(temp_inner(file)) },
        None => 0,
    })
}

/// Methods of anonymous temp files. Version 1: no shared memory (temp files never use WAL) and
/// no memory-mapped IO (every byte goes through `xWrite`, where it is counted).
static TEMP_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(temp_close),
    xRead: Some(temp_read),
    xWrite: Some(temp_write),
    xTruncate: Some(temp_truncate),
    xSync: Some(temp_sync),
    xFileSize: Some(temp_file_size),
    xLock: Some(temp_lock),
    xUnlock: Some(temp_unlock),
    xCheckReservedLock: Some(temp_check_reserved),
    xFileControl: Some(temp_file_control),
    xSectorSize: Some(temp_sector_size),
    xDeviceCharacteristics: Some(temp_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The allowed directories (for tests and diagnostics).
pub fn allowed_dirs() -> Vec<PathBuf> {
    ALLOWED_DIRS.read().unwrap_or_else(|p| p.into_inner()).iter().map(PathBuf::from).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn temp_growth_is_refused_one_byte_past_either_cap() {
        let in_use = AtomicU64::new(0);
        let caps = (1000, 1500);
        assert_eq!(temp_grow_within(0, 1000, caps, &in_use), Ok(1000), "exactly the per-file cap fits");
        assert!(temp_grow_within(1000, 1001, caps, &in_use).is_err_and(|w| w.contains("temp_file_bytes_max")));
        assert_eq!(temp_grow_within(1000, 900, caps, &in_use), Ok(0), "rewriting inside the file is free");
        assert_eq!(in_use.load(Ordering::Relaxed), 1000);
        assert_eq!(temp_grow_within(0, 500, caps, &in_use), Ok(500), "exactly the total cap fits");
        let over = temp_grow_within(0, 1, caps, &in_use);
        assert!(over.is_err_and(|w| w.contains("temp_bytes_total_max")), "one byte past the total");
        assert_eq!(in_use.load(Ordering::Relaxed), 1500, "a refused growth is not counted");
    }

    #[test]
    fn a_tolerated_refusal_is_forgotten_before_the_next_statement() {
        refuse("/etc/passwd", "test");
        clear_refusal();
        assert_eq!(take_refusal(), None);
        refuse("/etc/passwd", "test");
        assert!(take_refusal().is_some_and(|r| r.contains("refused")));
    }

    use rusqlite::{Connection, OpenFlags};

    use super::*;
    use crate::sqlite::open::tests::TempDir;

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Connection::open_with_flags_and_vfs(path, flags, register().unwrap())
    }

    /// The base VFS's locking (module doc): connections of this process share a database in
    /// WAL mode with no `-shm` file, while the process holds an exclusive POSIX lock on it.
    #[test]
    fn databases_are_locked_for_the_process_and_keep_the_wal_index_in_memory() {
        let dir = TempDir::new("excl");
        let db_dir = dir.0.join("db");
        std::fs::create_dir_all(&db_dir).unwrap();
        allow_dir(&db_dir).unwrap();
        let path = db_dir.join("f.sqlite");
        let writer = open(&path).unwrap();
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        writer.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
        let reader = open(&path).unwrap();
        let read = |c: &Connection| -> i64 { c.query_row("SELECT sum(x) FROM t", [], |r| r.get(0)).unwrap() };
        assert_eq!(read(&reader), 1);
        // A reader in a transaction keeps its snapshot while the writer commits (WAL read marks
        // work between the connections, in memory).
        reader.execute_batch("BEGIN").unwrap();
        assert_eq!(read(&reader), 1);
        writer.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        assert_eq!(read(&reader), 1);
        reader.execute_batch("COMMIT").unwrap();
        assert_eq!(read(&reader), 3);
        assert!(Path::new(&format!("{}-wal", path.display())).exists());
        assert!(!Path::new(&format!("{}-shm", path.display())).exists(), "no -shm file");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata(&path).unwrap().ino();
            let pid = std::process::id();
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            let held = locks.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 6
                    && f[1] == "POSIX"
                    && f[3] == "WRITE"
                    && f[4] == pid.to_string()
                    && f[5].rsplit(':').next() == Some(ino.to_string().as_str())
            });
            assert!(held, "no exclusive lock of pid {pid} on inode {ino} in /proc/locks:\n{locks}");
        }
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(check_name("0190a5c4-1b2c-7d3e-8f40-123456789abc.sqlite"), Ok(()));
        assert_eq!(check_name("a.sqlite-wal"), Ok(()));
        assert_eq!(check_name("a.sqlite-shm"), Ok(()));
        assert_eq!(check_name("a.sqlite-journal"), Ok(()));
        for bad in ["a.db", ".sqlite", "a.sqlite-mj01", "a b.sqlite", "passwd", "a.sqlite.sqlite-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for bad in ["relative/a.sqlite", "/a.sqlite", "/x/../y/a.sqlite", "/x/./a.sqlite", "/x//a.sqlite", ""]
        {
            assert!(split_path(bad).is_err(), "{bad}");
        }
        assert_eq!(split_path("/x/y/a.sqlite"), Ok(("/x/y", "a.sqlite")));
    }

    #[test]
    fn allowed_directory_works_and_everything_else_is_refused() {
        let dir = TempDir::new("confine");
        let allowed = dir.0.join("db");
        let other = dir.0.join("other");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        allow_dir(&allowed).unwrap();

        // A database in an allowed directory works in WAL mode (main, -wal, -shm files).
        let conn = open(&allowed.join("f1.sqlite")).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
        // A sort that spills uses anonymous temp files, which are delegated.
        conn.execute_batch("PRAGMA temp_store=FILE; PRAGMA cache_size=10").unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 20000) \
                 SELECT DISTINCT randomblob(100) FROM c)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 20000);

        // Every other file is refused, even with the authorizer absent (raw connection).
        let before = refusals();
        let attempts = [
            format!("ATTACH '{}' AS x", other.join("f2.sqlite").display()),
            format!("ATTACH '{}' AS x", allowed.join("evil.db").display()),
            format!("ATTACH '{}/../other/f3.sqlite' AS x", allowed.display()),
            "ATTACH 'relative.sqlite' AS x".to_string(),
            format!("VACUUM INTO '{}'", other.join("copy.sqlite").display()),
        ];
        for sql in &attempts {
            let err = conn.execute_batch(sql).unwrap_err();
            let mapped = crate::sqlite::map_error(err, None);
            assert_eq!(mapped.code(), ErrorCode::PolicyDenied, "{sql}: {mapped}");
            assert!(mapped.message().contains("confinement VFS refused"), "{mapped}");
        }
        assert!(refusals() >= before + attempts.len() as u64);
        assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0, "nothing was created outside");

        // A symbolic link inside the allowed directory is refused.
        #[cfg(unix)]
        {
            let target = other.join("target.sqlite");
            drop(Connection::open(&target).unwrap());
            let link = allowed.join("link.sqlite");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            assert!(open(&link).is_err());
        }
        assert!(allowed_dirs().iter().any(|d| d == &allowed));
    }
}
