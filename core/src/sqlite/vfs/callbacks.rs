//! The `extern "C"` side of the engine's SQLite VFS: the `sqlite3_vfs` methods and the
//! `sqlite3_io_methods` of every file, each a thin, panic-guarded trampoline into safe Rust
//! ([`super::file`], [`super::VfsState`]).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use rusqlite::ffi;

use super::file::FileState;
use super::registry::{serving_of, Serving};
use super::{lock, splitmix64, SECTOR_SIZE};
use crate::sqlite::confine;

/// Offset between the unix epoch and the julian day epoch, in milliseconds.
const JULIAN_EPOCH_OFFSET_MS: i64 = 210_866_760_000_000;

/// The `sqlite3_vfs` of a shell named `name` (its `pAppData` is set by the caller).
pub(super) fn vfs_struct(name: *const c_char, max_pathname: c_int) -> ffi::sqlite3_vfs {
    ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<RawFile>() as c_int,
        mxPathname: max_pathname,
        pNext: ptr::null_mut(),
        zName: name,
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
    }
}

/// Our `sqlite3_file` subclass: SQLite allocates `szOsFile` bytes (8-byte aligned) and
/// passes them to `xOpen`, which fills them in.
#[repr(C)]
struct RawFile {
    base: ffi::sqlite3_file,
    /// From `Box::into_raw`; freed by `xClose`.
    state: *mut FileState,
}

/// The io methods of every file the VFS opens.
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

/// Checks a path SQLite names on a confined (app) shell; the refusal's reason is kept for
/// the error mapping. Engine shells take any absolute path.
fn admitted(serving: &Serving, path: &str) -> bool {
    if !serving.confined {
        return true;
    }
    match serving.state.confine(path) {
        Ok(()) => true,
        Err(why) => {
            confine::refuse(path, why);
            false
        }
    }
}

/// `xOpen`.
/// Safety: `vfs` is our registered vfs (see [`serving_of`]); `name` is null or a valid C
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
        let Some(serving) = (unsafe { serving_of(vfs) }) else { return ffi::SQLITE_CANTOPEN };
        // SAFETY: `name` is null or a valid C string.
        let path = unsafe { path_arg(name) };
        if !name.is_null() {
            let Some(text) = path.as_ref().and_then(|p| p.to_str()).filter(|t| t.starts_with('/')) else {
                confine::refuse("(not absolute UTF-8)", "it is not an absolute UTF-8 path");
                return ffi::SQLITE_CANTOPEN;
            };
            if !admitted(&serving, text) {
                return ffi::SQLITE_CANTOPEN;
            }
        }
        if serving.confined && flags & ffi::SQLITE_OPEN_SUPER_JOURNAL != 0 {
            confine::refuse("(super-journal)", "multi-database commits are not offered");
            return ffi::SQLITE_CANTOPEN;
        }
        let state = match serving.state.open(path, flags) {
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
        let (Some(serving), Some(path)) = (unsafe { serving_of(vfs) }, unsafe { path_arg(name) }) else {
            return ffi::SQLITE_IOERR_DELETE;
        };
        if !path.to_str().is_some_and(|t| admitted(&serving, t)) {
            return ffi::SQLITE_IOERR_DELETE;
        }
        serving.state.delete(&path, sync_dir != 0)
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
        let (Some(serving), Some(path)) = (unsafe { serving_of(vfs) }, unsafe { path_arg(name) }) else {
            return ffi::SQLITE_IOERR_ACCESS;
        };
        if !path.to_str().is_some_and(|t| admitted(&serving, t)) {
            return ffi::SQLITE_IOERR_ACCESS;
        }
        match serving.state.access(&path, flags) {
            // SAFETY: `out` is null or writable.
            Ok(answer) if unsafe { put(out, c_int::from(answer)) } => ffi::SQLITE_OK,
            Ok(_) => ffi::SQLITE_IOERR_ACCESS,
            Err(code) => code,
        }
    })
}

/// `xFullPathname`: absolute paths unchanged (after the confinement check on an app shell),
/// relative ones refused: they would be resolved against the process's working directory.
/// Safety: `vfs` is ours; `name` is null or a valid C string; `out` is null or writable for
/// `n_out` bytes.
unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: see the function's safety note.
        let Some(serving) = (unsafe { serving_of(vfs) }) else { return ffi::SQLITE_CANTOPEN };
        if name.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `name` is a valid C string.
        let c_name = unsafe { CStr::from_ptr(name) };
        let Some(text) = c_name.to_str().ok().filter(|t| t.starts_with('/')) else {
            confine::refuse(&c_name.to_string_lossy(), "it is not an absolute UTF-8 path");
            return ffi::SQLITE_CANTOPEN;
        };
        if !admitted(&serving, text) {
            return ffi::SQLITE_CANTOPEN;
        }
        let bytes = c_name.to_bytes_with_nul();
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
    confine::refuse("(shared library)", "loading native code is disabled");
    ptr::null_mut()
}

/// `xDlError`. Safety: `out` is null or writable for `n` bytes.
unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let _ = guard(ffi::SQLITE_ERROR, || {
        // SAFETY: `out` is null or writable for `n` bytes.
        if let Some(buf) = unsafe { out_bytes(out.cast::<c_void>(), n) } {
            copy_c_string(buf, "loadable extensions are not supported by the sila VFS");
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

/// `xRandomness`: the registration's seeded stream. Safety: `vfs` is ours; `out` is null or
/// writable for `n` bytes.
unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guard(0, || {
        // SAFETY: see the function's safety note.
        let (Some(serving), Some(buf)) =
            (unsafe { serving_of(vfs) }, unsafe { out_bytes(out.cast::<c_void>(), n) })
        else {
            return 0;
        };
        let mut state = lock(&serving.state.rng);
        for chunk in buf.chunks_mut(8) {
            let word = splitmix64(&mut state).to_le_bytes();
            for (dst, src) in chunk.iter_mut().zip(word) {
                *dst = src;
            }
        }
        n
    })
}

/// `xSleep`: the workspace clock's sleep (the simulation's does not block). Safety: `vfs` is
/// ours.
unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    guard(0, || {
        let micros = micros.max(0);
        // SAFETY: see the function's safety note.
        if let Some(serving) = unsafe { serving_of(vfs) } {
            let wait = std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0));
            serving.state.hooks.clock.sleep(wait);
        }
        micros
    })
}

/// The workspace clock's wall time in unix milliseconds.
fn now_ms(vfs: *mut ffi::sqlite3_vfs) -> i64 {
    // SAFETY: `vfs` is one SQLite passed to a vfs callback of ours.
    let serving = unsafe { serving_of(vfs) };
    let ms = serving.map_or(0, |s| s.state.hooks.clock.now_ms());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `xCurrentTime` (julian days). Safety: `vfs` is ours; `out` is null or writable.
unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        let days = (now_ms(vfs) as f64) / 86_400_000.0 + 2_440_587.5;
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
        // SAFETY: `out` is null or writable.
        if unsafe { put(out, now_ms(vfs).saturating_add(JULIAN_EPOCH_OFFSET_MS)) } {
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
        if let (Some(serving), Some(buf)) =
            (unsafe { serving_of(vfs) }, unsafe { out_bytes(out.cast::<c_void>(), n) })
        {
            copy_c_string(buf, &lock(&serving.state.last_error));
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

/// `xFileControl`: no op is implemented; SQLite falls back to its defaults (a size hint
/// would grow a file past the temp accounting, which counts writes).
unsafe extern "C" fn x_file_control(_file: *mut ffi::sqlite3_file, _op: c_int, _arg: *mut c_void) -> c_int {
    ffi::SQLITE_NOTFOUND
}

/// `xSectorSize`.
unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    SECTOR_SIZE
}

/// `xDeviceCharacteristics`: `POWERSAFE_OVERWRITE`, as SQLite's unix VFS reports for a
/// local disk (see the module docs).
unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
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
