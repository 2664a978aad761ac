//! The `Vfs` trait: the only door from sila-sqlite to the operating system's files.
//!
//! Everything the engine stores (pointer records, manifests, app records, database files)
//! goes through a [`Vfs`]. Production uses [`RealFs`]; the simulation crate implements the
//! same trait over an in-memory disk that loses unsynced data at a simulated crash.
//!
//! # Contract (what every implementation must do, and what callers may assume)
//!
//! * Paths are absolute or relative to the process; the engine only passes paths it built
//!   itself under the workspace root.
//! * [`VfsFile::read_at`] may return fewer bytes than asked (a *short read*) even before the
//!   end of the file; `Ok(0)` means end of file. [`VfsFile::write_at`] may write fewer bytes
//!   than given (a *short write*); callers loop ([`read_full`], [`write_all_at`]).
//! * Data written to a file is durable only after [`VfsFile::sync`] returns `Ok` on that
//!   file. A crash before that may keep any subset of the unsynced writes.
//! * A directory entry (a file or directory created in it, a rename into or out of it, an
//!   unlink) is durable only after [`Vfs::sync_dir`] of that directory returns `Ok`.
//!   [`Vfs::rename`] replaces the target atomically: any observer, and the disk after a
//!   crash, sees either the old or the new target, never neither. [`Vfs::rename_noreplace`]
//!   instead refuses, atomically, a target that exists.
//! * A failed `sync` is fatal for the data it covered: the kernel may have dropped the dirty
//!   pages, so a later `sync` that succeeds proves nothing. Implementations latch the
//!   first failure: the handle is *poisoned* and every later call on it returns
//!   [`VfsErrorKind::Poisoned`]; the engine poisons the whole database above it
//!   (fail-stop, no retry-then-succeed). A failed [`VfsFile::wait_writeback`] counts as a
//!   failed `sync` (the kernel reports a writeback error to one waiter only).
//! * [`VfsFile::start_writeback`] and [`VfsFile::wait_writeback`] only pace the writing of
//!   long copies; they promise no durability, and doing nothing is a valid implementation.
//! * Errors carry a [`VfsErrorKind`] so callers can tell "not found" and "no space" from
//!   other IO failures.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What went wrong in a [`Vfs`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfsErrorKind {
    /// The path does not exist.
    NotFound,
    /// The path already exists (exclusive create).
    AlreadyExists,
    /// The device is full.
    NoSpace,
    /// An earlier `sync` on this handle failed; the handle refuses all work.
    Poisoned,
    /// The lock is held by someone else.
    Locked,
    /// Any other IO failure.
    Other,
}

/// An error from a [`Vfs`] call: a kind, the path involved and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfsError {
    /// The category of the failure.
    pub kind: VfsErrorKind,
    /// The operation that failed (`"sync"`, `"rename"`…).
    pub op: &'static str,
    /// The path the operation was about.
    pub path: PathBuf,
    /// The operating system's description.
    pub detail: String,
}

impl VfsError {
    /// A new error.
    pub fn new(kind: VfsErrorKind, op: &'static str, path: &Path, detail: impl Into<String>) -> Self {
        VfsError { kind, op, path: path.to_path_buf(), detail: detail.into() }
    }

    fn from_io(op: &'static str, path: &Path, err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => VfsErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => VfsErrorKind::AlreadyExists,
            io::ErrorKind::StorageFull => VfsErrorKind::NoSpace,
            io::ErrorKind::WouldBlock => VfsErrorKind::Locked,
            _ => VfsErrorKind::Other,
        };
        VfsError::new(kind, op, path, err.to_string())
    }
}

impl fmt::Display for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.detail)
    }
}

impl std::error::Error for VfsError {}

impl From<VfsError> for crate::Error {
    fn from(err: VfsError) -> Self {
        use crate::ErrorCode;
        let code = match err.kind {
            VfsErrorKind::NotFound => ErrorCode::NotFound,
            VfsErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            VfsErrorKind::NoSpace => ErrorCode::DiskFull,
            VfsErrorKind::Poisoned => ErrorCode::Poisoned,
            VfsErrorKind::Locked => ErrorCode::WorkspaceLocked,
            VfsErrorKind::Other => ErrorCode::Io,
        };
        crate::Error::new(code, err.to_string())
    }
}

/// Result of a [`Vfs`] call.
pub type VfsResult<T> = Result<T, VfsError>;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; create the file if missing (its directory entry is not durable until
    /// `sync_dir` of the parent).
    CreateOrOpen,
    /// Read and write; create the file, failing with `AlreadyExists` if it exists.
    CreateNew,
    /// Read and write; create the file or truncate it to zero length.
    CreateTruncate,
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// An open file. Methods take `&self` so one handle may serve several readers.
pub trait VfsFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`. May return fewer (a short read) even
    /// before end of file; `Ok(0)` means `offset` is at or past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize>;
    /// Writes up to `buf.len()` bytes at `offset`, extending the file as needed (a gap reads
    /// as zeros). May write fewer (a short write). Not durable until [`VfsFile::sync`].
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize>;
    /// Sets the length; growing zero-fills. Not durable until [`VfsFile::sync`].
    fn set_len(&self, len: u64) -> VfsResult<()>;
    /// The current length in bytes.
    fn len(&self) -> VfsResult<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> VfsResult<bool> {
        Ok(self.len()? == 0)
    }
    /// Makes every completed write and `set_len` on this file durable. A failure poisons the
    /// handle: every later call returns [`VfsErrorKind::Poisoned`].
    fn sync(&self) -> VfsResult<()>;
    /// A hint: start writing the range's completed writes to the disk now, without waiting
    /// for them. It promises nothing (only [`VfsFile::sync`] makes data durable) and reports
    /// nothing (a failure shows at the next `sync` or [`VfsFile::wait_writeback`]). The
    /// default does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
    /// Writes the range's completed writes to the disk and waits until they are written. Not
    /// a durability promise either (the file's size and metadata still need `sync`), but it
    /// keeps a long copy from piling up dirty pages: with at most a window or two in flight,
    /// the final `sync` has little left, and other files' syncs (a writer's WAL) never queue
    /// behind the whole copy. A failure counts as a failed sync: the handle is poisoned. The
    /// default does nothing.
    fn wait_writeback(&self, _offset: u64, _len: u64) -> VfsResult<()> {
        Ok(())
    }
}

/// The filesystem interface of the engine. See the module docs for the contract.
pub trait Vfs: Send + Sync {
    /// Opens (or creates, per `mode`) a file.
    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>>;
    /// Creates a directory whose parent exists. Durable after `sync_dir` of the parent.
    /// Fails with `AlreadyExists` if it exists.
    fn create_dir(&self, path: &Path) -> VfsResult<()>;
    /// Removes a file. Durable after `sync_dir` of the parent.
    fn remove_file(&self, path: &Path) -> VfsResult<()>;
    /// Removes an empty directory. Durable after `sync_dir` of the parent.
    fn remove_dir(&self, path: &Path) -> VfsResult<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it is a file. Both must be in the
    /// same directory tree of one filesystem. Durable after `sync_dir` of both parents.
    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()>;
    /// Gives the file `from` the name `to` only if `to` does not exist, atomically: fails with
    /// [`VfsErrorKind::AlreadyExists`] (changing nothing) if it does, even if it appeared a
    /// moment ago. Afterwards `from` is gone. Durable after `sync_dir` of both parents; a
    /// crash before that may leave the file under either name or both.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()>;
    /// Makes the directory's entries (creates, renames, unlinks) durable. A failure is
    /// fatal for the entries it covered, like a failed file `sync`.
    fn sync_dir(&self, path: &Path) -> VfsResult<()>;
    /// Lists a directory, sorted by name. `.` and `..` are not listed.
    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>>;
    /// The length of a file, or `None` if the path does not exist.
    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>>;
    /// Whether the path exists (file or directory).
    fn exists(&self, path: &Path) -> VfsResult<bool>;
    /// Whether the path is a symbolic link (not followed). The default: no filesystem of
    /// ours has links.
    fn is_symlink(&self, _path: &Path) -> VfsResult<bool> {
        Ok(false)
    }
    /// Takes an exclusive, non-blocking lock on the file at `path` (creating it), for the
    /// life of the returned guard. If the lock is held elsewhere, fails with
    /// [`VfsErrorKind::Locked`] and the detail names the holder's pid when it is known.
    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>>;
    /// Marks a file read-only (or writable again) for everyone, as snapshots are. The default
    /// does nothing: a filesystem without permissions has nothing to mark.
    fn set_read_only(&self, _path: &Path, _read_only: bool) -> VfsResult<()> {
        Ok(())
    }
    /// Asks the operating system to drop the cached pages of the file at `path`, so later
    /// reads come from the disk. Used after a failed sync: the kernel may keep pages it could
    /// not write, marked clean, and serve them as if they were on the disk. A hint: doing
    /// nothing is valid (the default), and a missing file is not an error.
    fn drop_cache(&self, _path: &Path) -> VfsResult<()> {
        Ok(())
    }
    /// Bytes free for unprivileged writes on the filesystem holding `path`, if known.
    fn free_bytes(&self, _path: &Path) -> VfsResult<Option<u64>> {
        Ok(None)
    }
    /// Makes `to` (which must not exist) a copy-on-write clone of `from`, sharing its blocks
    /// (a reflink: O(1) whatever the size). `Ok(false)` when this filesystem cannot (then
    /// `to` does not exist and the caller copies instead). Like a copy, the clone is durable
    /// only after `sync` of it and `sync_dir` of its parent. The default cannot.
    fn clone_file(&self, _from: &Path, _to: &Path) -> VfsResult<bool> {
        Ok(false)
    }
    /// How many `sync` / `sync_dir` calls have failed on this filesystem since it was
    /// created. The engine reads it around every operation that writes a database: if it
    /// grew, the database is poisoned (fail-stop), whatever error SQLite made of it.
    fn sync_failures(&self) -> u64 {
        0
    }
}

/// Holds a lock taken by [`Vfs::lock_exclusive`] until dropped.
pub trait LockGuard: Send + Sync {}

/// Width of the pid recorded in a workspace's lock file (padded with spaces, then a newline):
/// wider than any pid, so every open overwrites the record in place.
pub const LOCK_PID_WIDTH: usize = 20;

/// Bound on the loop iterations of [`read_full`] and [`write_all_at`]: a file that keeps
/// answering with zero-length progress is reported as an error instead of looping forever.
pub const SHORT_IO_RETRIES_MAX: usize = 1024;

/// Reads until `buf` is full or end of file; returns the bytes read.
pub fn read_full(file: &dyn VfsFile, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
    let mut done = 0usize;
    let mut rounds = 0usize;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else { break };
        let n = file.read_at(rest, offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
        rounds += 1;
        if rounds > SHORT_IO_RETRIES_MAX + buf.len() / 512 {
            return Err(VfsError::new(VfsErrorKind::Other, "read", Path::new(""), "too many short reads"));
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `offset`, looping over short writes.
pub fn write_all_at(file: &dyn VfsFile, buf: &[u8], offset: u64) -> VfsResult<()> {
    let mut done = 0usize;
    let mut stalls = 0usize;
    while done < buf.len() {
        let Some(rest) = buf.get(done..) else { break };
        let n = file.write_at(rest, offset + done as u64)?;
        if n == 0 {
            stalls += 1;
            if stalls > SHORT_IO_RETRIES_MAX {
                return Err(VfsError::new(
                    VfsErrorKind::Other,
                    "write",
                    Path::new(""),
                    "write makes no progress",
                ));
            }
        }
        done += n;
    }
    Ok(())
}

/// Largest file [`read_file`] reads: records are small, and a huge one is corruption.
pub const RECORD_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Reads a whole (small) file. Files larger than [`RECORD_BYTES_MAX`] are refused.
pub fn read_file(vfs: &dyn Vfs, path: &Path) -> VfsResult<Vec<u8>> {
    let file = vfs.open(path, OpenMode::Read)?;
    let len = file.len()?;
    if len > RECORD_BYTES_MAX {
        return Err(VfsError::new(
            VfsErrorKind::Other,
            "read",
            path,
            format!("file of {len} bytes is too large for a record"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    let n = read_full(file.as_ref(), &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// Creates or truncates `path` and writes `bytes` (not synced).
pub fn write_file(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> VfsResult<Box<dyn VfsFile>> {
    let file = vfs.open(path, OpenMode::CreateTruncate)?;
    write_all_at(file.as_ref(), bytes, 0)?;
    Ok(file)
}

/// Bytes moved per call by [`copy_file`] and [`checksum_file`].
pub const COPY_CHUNK_BYTES: usize = 1024 * 1024;

/// [`copy_file`] writes back in windows of this many bytes: it starts each window's
/// writeback when the window is full ([`VfsFile::start_writeback`]) and waits for the one
/// before it ([`VfsFile::wait_writeback`]), so at most two windows of the copy are dirty or in
/// flight at a time.
pub const COPY_WRITEBACK_BYTES: u64 = 8 * 1024 * 1024;

/// Copies `from` to a new file `to` (which must not exist) and returns the CRC-32C and size of
/// what was copied. Nothing is synced: the caller's plan syncs the copy before relying on it.
pub fn copy_file(vfs: &dyn Vfs, from: &Path, to: &Path) -> VfsResult<(u32, u64)> {
    copy_file_with(vfs, from, to, |_, _| ())
}

/// [`copy_file`] that lets `edit(offset, chunk)` change each chunk before it is written (and
/// checksummed): the returned CRC-32C is of the bytes written. Chunks are
/// [`COPY_CHUNK_BYTES`] long (the last one shorter), so the first chunk holds at least the
/// first 64 KiB of the file when the file is that long.
pub fn copy_file_with(
    vfs: &dyn Vfs,
    from: &Path,
    to: &Path,
    edit: impl FnMut(u64, &mut [u8]),
) -> VfsResult<(u32, u64)> {
    let src = vfs.open(from, OpenMode::Read)?;
    let dst = vfs.open(to, OpenMode::CreateNew)?;
    copy_contents(src.as_ref(), dst.as_ref(), edit)
}

/// The loop of [`copy_file_with`]: copies all of `src` into `dst` from offset 0, writing back
/// in windows of [`COPY_WRITEBACK_BYTES`].
fn copy_contents(
    src: &dyn VfsFile,
    dst: &dyn VfsFile,
    mut edit: impl FnMut(u64, &mut [u8]),
) -> VfsResult<(u32, u64)> {
    let len = src.len()?;
    let mut buf = chunk_buffer(len);
    let (mut crc, mut offset) = (0u32, 0u64);
    // The window being filled starts at `window`; the one before it (if any) is `started`.
    let (mut window, mut started) = (0u64, None::<(u64, u64)>);
    while offset < len {
        let n = read_full(src, &mut buf, offset)?;
        let Some(chunk) = buf.get_mut(..n) else { break };
        if n == 0 {
            break;
        }
        edit(offset, chunk);
        write_all_at(dst, chunk, offset)?;
        crc = crc32c::crc32c_append(crc, chunk);
        offset += n as u64;
        if offset - window >= COPY_WRITEBACK_BYTES {
            dst.start_writeback(window, offset - window);
            if let Some((at, len)) = started {
                dst.wait_writeback(at, len)?;
            }
            started = Some((window, offset - window));
            window = offset;
        }
    }
    Ok((crc, offset))
}

/// A buffer for reading a file of `len` bytes in chunks of [`COPY_CHUNK_BYTES`]: no larger
/// than the file, so a small file does not cost a zeroed mebibyte (the chunks are the same).
pub(crate) fn chunk_buffer(len: u64) -> Vec<u8> {
    vec![0u8; usize::try_from(len).map_or(COPY_CHUNK_BYTES, |len| len.min(COPY_CHUNK_BYTES))]
}

/// The CRC-32C and size of a file's content.
pub fn checksum_file(vfs: &dyn Vfs, path: &Path) -> VfsResult<(u32, u64)> {
    checksum_file_with(vfs, path, |_, _| ())
}

/// The CRC-32C and size of a file's content as `edit(offset, chunk)` changes it (chunks as in
/// [`copy_file_with`]): the checksum a [`copy_file_with`] with the same `edit` would return.
pub fn checksum_file_with(
    vfs: &dyn Vfs,
    path: &Path,
    mut edit: impl FnMut(u64, &mut [u8]),
) -> VfsResult<(u32, u64)> {
    let file = vfs.open(path, OpenMode::Read)?;
    let len = file.len()?;
    let mut buf = chunk_buffer(len);
    let (mut crc, mut offset) = (0u32, 0u64);
    while offset < len {
        let n = read_full(file.as_ref(), &mut buf, offset)?;
        let Some(chunk) = buf.get_mut(..n) else { break };
        if n == 0 {
            break;
        }
        edit(offset, chunk);
        crc = crc32c::crc32c_append(crc, chunk);
        offset += n as u64;
    }
    Ok((crc, offset))
}

/// Creates `path` and any missing parents (each durable only after `sync_dir` of its parent).
/// Bounded by the number of path components.
pub fn create_dir_all(vfs: &dyn Vfs, path: &Path) -> VfsResult<()> {
    create_missing_dirs(vfs, path).map(|_| ())
}

/// [`create_dir_all`], then makes the new directories durable: `sync_dir` of the parent of
/// each directory that was missing, so that after a crash `path` is still there (a file in
/// it still needs its own sync and a `sync_dir(path)`). A directory another caller created
/// in the meantime counts as missing: its creator may not have synced it yet.
pub fn create_dir_all_durable(vfs: &dyn Vfs, path: &Path) -> VfsResult<()> {
    for dir in create_missing_dirs(vfs, path)? {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            vfs.sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates the missing directories of `path`, outermost first; returns them in that order.
fn create_missing_dirs(vfs: &dyn Vfs, path: &Path) -> VfsResult<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || vfs.exists(p)? {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    missing.reverse();
    for dir in &missing {
        match vfs.create_dir(dir) {
            Err(e) if e.kind == VfsErrorKind::AlreadyExists => {}
            other => other?,
        }
    }
    Ok(missing)
}

/// A file wrapper that latches the first failed `sync`: afterwards every call fails with
/// [`VfsErrorKind::Poisoned`]. Used by [`RealFs`]; usable over any [`VfsFile`].
pub struct LatchedFile<F> {
    inner: F,
    path: PathBuf,
    poisoned: AtomicBool,
    failures: Option<Arc<AtomicU64>>,
}

impl<F: VfsFile> LatchedFile<F> {
    /// Wraps `inner`, which was opened at `path`.
    pub fn new(inner: F, path: PathBuf) -> Self {
        LatchedFile { inner, path, poisoned: AtomicBool::new(false), failures: None }
    }

    /// Also counts this file's failed syncs in `failures` (see [`Vfs::sync_failures`]).
    pub fn counting(mut self, failures: Arc<AtomicU64>) -> Self {
        self.failures = Some(failures);
        self
    }

    fn check(&self, op: &'static str) -> VfsResult<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(VfsError::new(
                VfsErrorKind::Poisoned,
                op,
                &self.path,
                "an earlier sync failed on this file; reopen the database",
            ));
        }
        Ok(())
    }
}

impl<F: VfsFile> VfsFile for LatchedFile<F> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        self.check("read")?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        self.check("write")?;
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> VfsResult<()> {
        self.check("truncate")?;
        self.inner.set_len(len)
    }
    fn len(&self) -> VfsResult<u64> {
        self.check("stat")?;
        self.inner.len()
    }
    fn sync(&self) -> VfsResult<()> {
        self.check("sync")?;
        let result = self.inner.sync();
        if result.is_err() {
            self.poisoned.store(true, Ordering::Release);
            if let Some(f) = &self.failures {
                f.fetch_add(1, Ordering::AcqRel);
            }
        }
        result
    }
    fn start_writeback(&self, offset: u64, len: u64) {
        if self.check("writeback").is_ok() {
            self.inner.start_writeback(offset, len);
        }
    }
    fn wait_writeback(&self, offset: u64, len: u64) -> VfsResult<()> {
        self.check("writeback")?;
        let result = self.inner.wait_writeback(offset, len);
        if result.is_err() {
            // The kernel hands a write error to one waiter only: this one. The next fsync will
            // not see it, so the handle is poisoned here as if that fsync had failed.
            self.poisoned.store(true, Ordering::Release);
            if let Some(f) = &self.failures {
                f.fetch_add(1, Ordering::AcqRel);
            }
        }
        result
    }
}

/// The real filesystem (Linux): `pread`/`pwrite`, `fsync` of files and of directories.
#[derive(Debug, Default, Clone)]
pub struct RealFs {
    sync_failures: Arc<AtomicU64>,
}

impl RealFs {
    /// A handle on the real filesystem with its own count of failed syncs.
    pub fn new() -> RealFs {
        RealFs::default()
    }
}

struct RealFile {
    file: File,
    path: PathBuf,
}

impl RealFile {
    /// `sync_file_range(2)` on the file.
    #[cfg(target_os = "linux")]
    fn sync_range(&self, offset: u64, len: u64, flags: libc::c_uint) -> VfsResult<()> {
        use std::os::fd::AsRawFd;
        let out_of_range =
            || VfsError::new(VfsErrorKind::Other, "sync_file_range", &self.path, "range out of bounds");
        let offset = libc::off64_t::try_from(offset).map_err(|_| out_of_range())?;
        let len = libc::off64_t::try_from(len).map_err(|_| out_of_range())?;
        // SAFETY: sync_file_range takes an open file descriptor (owned by `self.file` for the
        // whole call) and three integers; it touches no memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, flags) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if writeback_unsupported(err.raw_os_error()) {
                // Pacing is only an optimisation: where the file cannot do it, the final
                // fsync writes everything, as it did before.
                return Ok(());
            }
            return Err(VfsError::from_io("sync_file_range", &self.path, &err));
        }
        Ok(())
    }
}

/// Whether a `sync_file_range` error means the file or filesystem cannot pace writeback (then
/// doing nothing is right), as opposed to a write that failed (which must poison).
#[cfg(target_os = "linux")]
fn writeback_unsupported(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE))
}

impl VfsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        self.file.read_at(buf, offset).map_err(|e| VfsError::from_io("read", &self.path, &e))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        self.file.write_at(buf, offset).map_err(|e| VfsError::from_io("write", &self.path, &e))
    }
    fn set_len(&self, len: u64) -> VfsResult<()> {
        self.file.set_len(len).map_err(|e| VfsError::from_io("truncate", &self.path, &e))
    }
    fn len(&self) -> VfsResult<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| VfsError::from_io("stat", &self.path, &e))
    }
    fn sync(&self) -> VfsResult<()> {
        self.file.sync_all().map_err(|e| VfsError::from_io("sync", &self.path, &e))
    }
    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) {
        // Ignored on purpose: a hint, and a write error it meets is seen by a later wait or
        // fsync (SYNC_FILE_RANGE_WRITE alone does not consume the file's error state).
        let _ = self.sync_range(offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
    #[cfg(target_os = "linux")]
    fn wait_writeback(&self, offset: u64, len: u64) -> VfsResult<()> {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        self.sync_range(offset, len, flags)
    }
}

/// The result of a way of renaming, or that the filesystem does not support that way.
enum Unsupported {
    Yes,
    No(VfsResult<()>),
}

/// `renameat2(from, to, RENAME_NOREPLACE)`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_by_flag(from: &Path, to: &Path) -> Unsupported {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (Ok(c_from), Ok(c_to)) = (c(from), c(to)) else {
        return Unsupported::No(Err(VfsError::new(VfsErrorKind::Other, "rename", from, "path contains NUL")));
    };
    // SAFETY: both pointers are valid NUL-terminated strings owned by this frame for the whole
    // call; AT_FDCWD makes them relative to the working directory like std::fs::rename; the
    // kernel reads the two strings and touches no other memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Unsupported::No(Ok(()));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Unsupported::Yes,
        _ => Unsupported::No(Err(VfsError::from_io("rename", to, &err))),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_by_flag(_from: &Path, _to: &Path) -> Unsupported {
    Unsupported::Yes
}

/// A hard link at `to`, then the unlink of `from` (the link taken back if that fails).
fn rename_by_link(from: &Path, to: &Path) -> Unsupported {
    if let Err(e) = std::fs::hard_link(from, to) {
        return match e.raw_os_error() {
            // No hard links on this filesystem (EPERM is what vfat answers).
            Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK) => Unsupported::Yes,
            _ => Unsupported::No(Err(VfsError::from_io("link", to, &e))),
        };
    }
    Unsupported::No(std::fs::remove_file(from).map_err(|e| {
        // Take the new name back (best effort) so that a failure changes nothing.
        let _ = std::fs::remove_file(to);
        VfsError::from_io("unlink", from, &e)
    }))
}

/// The last resort: refuses an existing `to`, then renames (not atomic).
fn rename_after_check(from: &Path, to: &Path) -> VfsResult<()> {
    match std::fs::symlink_metadata(to) {
        Ok(_) => Err(VfsError::new(VfsErrorKind::AlreadyExists, "rename", to, "target exists")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::rename(from, to).map_err(|e| VfsError::from_io("rename", from, &e))
        }
        Err(e) => Err(VfsError::from_io("stat", to, &e)),
    }
}

struct RealLock {
    _file: File,
}

impl LockGuard for RealLock {}

impl Vfs for RealFs {
    fn sync_failures(&self) -> u64 {
        self.sync_failures.load(Ordering::Acquire)
    }

    fn set_read_only(&self, path: &Path, read_only: bool) -> VfsResult<()> {
        let mut perms =
            std::fs::metadata(path).map_err(|e| VfsError::from_io("stat", path, &e))?.permissions();
        perms.set_readonly(read_only);
        std::fs::set_permissions(path, perms).map_err(|e| VfsError::from_io("chmod", path, &e))
    }

    fn drop_cache(&self, path: &Path) -> VfsResult<()> {
        use std::os::fd::AsRawFd;
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(VfsError::from_io("open", path, &e)),
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is open and owned by
        // `file` for the whole call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(VfsError::from_io("fadvise", path, &io::Error::from_raw_os_error(rc)))
        }
    }

    fn clone_file(&self, from: &Path, to: &Path) -> VfsResult<bool> {
        use std::os::fd::AsRawFd;
        let src = File::open(from).map_err(|e| VfsError::from_io("open", from, &e))?;
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(|e| VfsError::from_io("open", to, &e))?;
        // SAFETY: FICLONE takes the destination fd and the source fd as its argument; both are
        // open files owned by this frame for the whole call, and the kernel reads nothing else.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        drop(dst);
        // Whatever happened, `to` must not be left behind half made.
        std::fs::remove_file(to).map_err(|e| VfsError::from_io("unlink", to, &e))?;
        match err.raw_os_error() {
            // No reflink on this filesystem, across filesystems, or for this file type.
            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS) => Ok(false),
            _ => Err(VfsError::from_io("clone", from, &err)),
        }
    }

    fn free_bytes(&self, path: &Path) -> VfsResult<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| VfsError::new(VfsErrorKind::Other, "statvfs", path, "path contains NUL"))?;
        // SAFETY: statvfs is a plain C struct of integers, so all-zero is a valid value; the
        // call gets a valid NUL-terminated path and a writable struct owned by this frame, and
        // writes only into that struct.
        #[allow(unsafe_code)]
        let (rc, stat) = unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            let rc = libc::statvfs(c_path.as_ptr(), &mut stat);
            (rc, stat)
        };
        if rc != 0 {
            return Err(VfsError::from_io("statvfs", path, &io::Error::last_os_error()));
        }
        Ok(Some(stat.f_bavail.saturating_mul(stat.f_frsize)))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateOrOpen => options.read(true).write(true).create(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => options.read(true).write(true).create(true).truncate(true),
        };
        let file = options.open(path).map_err(|e| VfsError::from_io("open", path, &e))?;
        let file = LatchedFile::new(RealFile { file, path: path.to_path_buf() }, path.to_path_buf());
        Ok(Box::new(file.counting(self.sync_failures.clone())))
    }

    fn create_dir(&self, path: &Path) -> VfsResult<()> {
        std::fs::create_dir(path).map_err(|e| VfsError::from_io("mkdir", path, &e))
    }

    fn remove_file(&self, path: &Path) -> VfsResult<()> {
        std::fs::remove_file(path).map_err(|e| VfsError::from_io("unlink", path, &e))
    }

    fn remove_dir(&self, path: &Path) -> VfsResult<()> {
        std::fs::remove_dir(path).map_err(|e| VfsError::from_io("rmdir", path, &e))
    }

    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()> {
        std::fs::rename(from, to).map_err(|e| VfsError::from_io("rename", from, &e))
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()> {
        // The best the filesystem offers: renameat2(RENAME_NOREPLACE) (one atomic step); else
        // a hard link, which fails atomically on an existing name, then the unlink of `from`;
        // else (neither supported, e.g. some FUSE filesystems) a check and a plain rename,
        // which cannot refuse a file created between the two.
        match rename_by_flag(from, to) {
            Unsupported::No(result) => return result,
            Unsupported::Yes => {}
        }
        match rename_by_link(from, to) {
            Unsupported::No(result) => result,
            Unsupported::Yes => rename_after_check(from, to),
        }
    }

    fn sync_dir(&self, path: &Path) -> VfsResult<()> {
        // On Linux a directory opened read-only can be fsync'ed; that makes its entries durable.
        let dir = File::open(path).map_err(|e| VfsError::from_io("open dir", path, &e))?;
        dir.sync_all().map_err(|e| {
            self.sync_failures.fetch_add(1, Ordering::AcqRel);
            VfsError::from_io("sync dir", path, &e)
        })
    }

    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| VfsError::from_io("list", path, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| VfsError::from_io("list", path, &e))?;
            let file_type = entry.file_type().map_err(|e| VfsError::from_io("stat", path, &e))?;
            // Names that are not UTF-8 are not ours; listing them lossily lets recovery report them.
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push(DirEntry { name, is_dir: file_type.is_dir() });
        }
        out.sort();
        Ok(out)
    }

    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VfsError::from_io("stat", path, &e)),
        }
    }

    fn is_symlink(&self, path: &Path) -> VfsResult<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(meta.file_type().is_symlink()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(VfsError::from_io("lstat", path, &e)),
        }
    }

    fn exists(&self, path: &Path) -> VfsResult<bool> {
        Ok(self.file_len(path)?.is_some())
    }

    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| VfsError::from_io("open lock", path, &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                let holder = holder.trim();
                let detail = if holder.is_empty() {
                    "held by another process (pid unknown)".to_string()
                } else {
                    format!("held by pid {holder}")
                };
                return Err(VfsError::new(VfsErrorKind::Locked, "lock", path, detail));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(VfsError::from_io("lock", path, &e)),
        }
        // Record our pid so a second opener can name the holder. Best effort: the lock itself
        // is the flock, not this text. A fixed-width record overwrites the last one in place:
        // truncating the file first costs a filesystem journal transaction on every open.
        let pid = format!("{:<LOCK_PID_WIDTH$}\n", std::process::id());
        if file.metadata().map(|m| m.len()).ok() != Some(pid.len() as u64) {
            let _ = file.set_len(0);
        }
        let _ = file.write_at(pid.as_bytes(), 0);
        Ok(Box::new(RealLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct FailingSync {
        syncs: AtomicUsize,
    }

    impl VfsFile for FailingSync {
        fn read_at(&self, _buf: &mut [u8], _offset: u64) -> VfsResult<usize> {
            Ok(0)
        }
        fn write_at(&self, buf: &[u8], _offset: u64) -> VfsResult<usize> {
            Ok(buf.len())
        }
        fn set_len(&self, _len: u64) -> VfsResult<()> {
            Ok(())
        }
        fn len(&self) -> VfsResult<u64> {
            Ok(0)
        }
        fn sync(&self) -> VfsResult<()> {
            // Fails the first time only: a naive retry would then "succeed".
            if self.syncs.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(VfsError::new(VfsErrorKind::Other, "sync", Path::new("x"), "EIO"))
            } else {
                Ok(())
            }
        }
    }

    /// A file in memory that logs the writeback calls made on it, and fails every wait when
    /// told to.
    #[derive(Default)]
    struct Recorder {
        data: std::sync::Mutex<Vec<u8>>,
        log: std::sync::Mutex<Vec<(&'static str, u64, u64)>>,
        fail_wait: bool,
    }

    impl VfsFile for Recorder {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
            let data = self.data.lock().unwrap();
            let from = data.get(offset as usize..).unwrap_or_default();
            let n = from.len().min(buf.len());
            buf[..n].copy_from_slice(&from[..n]);
            Ok(n)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
            let mut data = self.data.lock().unwrap();
            let end = offset as usize + buf.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(buf);
            Ok(buf.len())
        }
        fn set_len(&self, len: u64) -> VfsResult<()> {
            self.data.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn len(&self) -> VfsResult<u64> {
            Ok(self.data.lock().unwrap().len() as u64)
        }
        fn sync(&self) -> VfsResult<()> {
            Ok(())
        }
        fn start_writeback(&self, offset: u64, len: u64) {
            self.log.lock().unwrap().push(("start", offset, len));
        }
        fn wait_writeback(&self, offset: u64, len: u64) -> VfsResult<()> {
            self.log.lock().unwrap().push(("wait", offset, len));
            if self.fail_wait {
                return Err(VfsError::new(VfsErrorKind::Other, "sync_file_range", Path::new("x"), "EIO"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_copy_writes_back_in_windows_with_at_most_two_in_flight() {
        const W: u64 = COPY_WRITEBACK_BYTES;
        let len = 2 * W + 3 * 1024 * 1024 + 17;
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let src = Recorder { data: std::sync::Mutex::new(content.clone()), ..Recorder::default() };
        let dst = Recorder::default();
        let (crc, copied) = copy_contents(&src, &dst, |_, _| ()).unwrap();
        assert_eq!((crc, copied), (crc32c::crc32c(&content), len));
        assert!(*dst.data.lock().unwrap() == content);
        // Each full window is started when it fills; the one before it is waited for right
        // after, so no more than two windows are ever dirty or in flight. The tail is left to
        // the caller's sync.
        assert_eq!(*dst.log.lock().unwrap(), vec![("start", 0, W), ("start", W, W), ("wait", 0, W)]);
    }

    #[test]
    fn a_failed_writeback_wait_latches_poison_and_counts_as_a_failed_sync() {
        let failures = Arc::new(AtomicU64::new(0));
        let file = LatchedFile::new(Recorder { fail_wait: true, ..Recorder::default() }, PathBuf::from("x"))
            .counting(failures.clone());
        assert_eq!(file.write_at(b"abc", 0).map_err(|e| e.kind), Ok(3));
        file.start_writeback(0, 3);
        assert_eq!(file.wait_writeback(0, 3).map_err(|e| e.kind), Err(VfsErrorKind::Other));
        // The kernel reports a writeback error to one waiter: the next fsync would succeed,
        // so the latch must answer for it.
        assert_eq!(file.sync().map_err(|e| e.kind), Err(VfsErrorKind::Poisoned));
        assert_eq!(failures.load(Ordering::SeqCst), 1);
    }

    /// Only "cannot do it" answers are ignored; a write error must reach the latch.
    #[cfg(target_os = "linux")]
    #[test]
    fn writeback_errors_that_mean_unsupported_are_told_from_write_errors() {
        for errno in [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP, libc::ESPIPE] {
            assert!(writeback_unsupported(Some(errno)), "{errno}");
        }
        for errno in [libc::EIO, libc::ENOSPC, libc::EDQUOT, libc::EBADF, libc::ENOMEM] {
            assert!(!writeback_unsupported(Some(errno)), "{errno}");
        }
        assert!(!writeback_unsupported(None));
    }

    #[test]
    fn real_files_accept_writeback_calls() {
        let path = std::env::temp_dir().join(format!("sila-vfs-writeback-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let fs = RealFs::new();
        let file = fs.open(&path, OpenMode::CreateNew).unwrap();
        write_all_at(file.as_ref(), &[7u8; 64 * 1024], 0).unwrap();
        file.start_writeback(0, 64 * 1024);
        file.wait_writeback(0, 64 * 1024).unwrap();
        file.sync().unwrap();
        assert_eq!(fs.sync_failures(), 0);
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn dropping_the_cache_of_a_file_keeps_its_data_and_a_missing_file_is_fine() {
        let dir = std::env::temp_dir().join(format!("sila-vfs-drop-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fs = RealFs::new();
        let path = dir.join("f");
        drop(write_file(&fs, &path, b"kept").unwrap());
        fs.drop_cache(&path).unwrap();
        assert_eq!(read_file(&fs, &path).unwrap(), b"kept");
        fs.drop_cache(&dir.join("missing")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn first_failed_sync_latches_poison() {
        let file = LatchedFile::new(FailingSync { syncs: AtomicUsize::new(0) }, PathBuf::from("x"));
        assert_eq!(file.write_at(b"abc", 0).map_err(|e| e.kind), Ok(3));
        assert_eq!(file.sync().map_err(|e| e.kind), Err(VfsErrorKind::Other));
        // The inner file would succeed now; the latch must not let it.
        assert_eq!(file.sync().map_err(|e| e.kind), Err(VfsErrorKind::Poisoned));
        assert_eq!(file.write_at(b"abc", 0).map_err(|e| e.kind), Err(VfsErrorKind::Poisoned));
        let mut buf = [0u8; 4];
        assert_eq!(file.read_at(&mut buf, 0).map_err(|e| e.kind), Err(VfsErrorKind::Poisoned));
    }

    #[test]
    fn clone_file_clones_or_leaves_nothing_behind() {
        // On a filesystem with reflinks (SILA_REFLINK_DIR, see .ci/run) it must clone.
        let base = std::env::var_os("SILA_REFLINK_DIR").map(PathBuf::from);
        let must_clone = base.is_some();
        let dir = base.unwrap_or_else(std::env::temp_dir).join(format!("sila-clone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fs = RealFs::new();
        let (from, to) = (dir.join("a"), dir.join("b"));
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&from, &bytes).unwrap();
        let cloned = fs.clone_file(&from, &to).unwrap();
        assert!(cloned || !must_clone, "no clone on a reflink filesystem");
        if cloned {
            assert_eq!(std::fs::read(&to).unwrap(), bytes);
            // Copy-on-write: writing the clone leaves the source alone.
            std::fs::write(&to, b"changed").unwrap();
            assert_eq!(std::fs::read(&from).unwrap(), bytes);
            let again = fs.clone_file(&from, &to).unwrap_err();
            assert_eq!(again.kind, VfsErrorKind::AlreadyExists, "{again}");
        } else {
            assert!(!to.exists(), "a refused clone leaves no file");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn real_fs_round_trip_and_rename() {
        let dir = std::env::temp_dir().join(format!("sila-vfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fs = RealFs::new();
        fs.create_dir(&dir).map_err(|e| e.to_string()).ok();
        let a = dir.join("a");
        let file = write_file(&fs, &a, b"hello").map_err(|e| e.to_string());
        assert!(file.is_ok());
        if let Ok(f) = file {
            assert!(f.sync().is_ok());
        }
        assert!(fs.sync_dir(&dir).is_ok());
        assert_eq!(read_file(&fs, &a).ok(), Some(b"hello".to_vec()));
        let b = dir.join("b");
        assert!(fs.rename(&a, &b).is_ok());
        assert_eq!(fs.file_len(&a).ok(), Some(None));
        assert_eq!(fs.file_len(&b).ok(), Some(Some(5)));
        let names: Vec<String> = fs.list_dir(&dir).unwrap_or_default().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["b".to_string()]);
        assert_eq!(fs.open(&a, OpenMode::Read).err().map(|e| e.kind), Some(VfsErrorKind::NotFound));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target_and_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("sila-vfs-noreplace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fs = RealFs::new();
        fs.create_dir(&dir).unwrap();
        let (tmp, dest, other) = (dir.join("tmp"), dir.join("dest"), dir.join("other"));
        write_file(&fs, &tmp, b"new").unwrap();
        write_file(&fs, &dest, b"theirs").unwrap();
        let e = fs.rename_noreplace(&tmp, &dest).unwrap_err();
        assert_eq!(e.kind, VfsErrorKind::AlreadyExists, "{e}");
        assert_eq!(read_file(&fs, &dest).unwrap(), b"theirs".to_vec());
        assert_eq!(read_file(&fs, &tmp).unwrap(), b"new".to_vec());
        fs.rename_noreplace(&tmp, &other).unwrap();
        assert_eq!(read_file(&fs, &other).unwrap(), b"new".to_vec());
        assert_eq!(fs.file_len(&tmp).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each way of renaming without replacing, alone: the renameat2 flag, the hard link and
    /// the check-then-rename fallback refuse an existing target and change nothing.
    #[test]
    fn every_way_of_renaming_without_replacing_refuses_an_existing_target() {
        let dir = std::env::temp_dir().join(format!("sila-vfs-noreplace-ways-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let by_flag = |from: &Path, to: &Path| match rename_by_flag(from, to) {
            Unsupported::No(r) => r,
            Unsupported::Yes => rename_after_check(from, to),
        };
        let by_link = |from: &Path, to: &Path| match rename_by_link(from, to) {
            Unsupported::No(r) => r,
            Unsupported::Yes => panic!("this filesystem has hard links"),
        };
        type Way<'a> = &'a dyn Fn(&Path, &Path) -> VfsResult<()>;
        let ways: [(&str, Way<'_>); 3] =
            [("flag", &by_flag), ("link", &by_link), ("check", &rename_after_check)];
        for (name, way) in ways {
            let (tmp, dest, other) = (
                dir.join(format!("{name}-tmp")),
                dir.join(format!("{name}-dest")),
                dir.join(format!("{name}-other")),
            );
            std::fs::write(&tmp, b"new").unwrap();
            std::fs::write(&dest, b"theirs").unwrap();
            assert_eq!(way(&tmp, &dest).map_err(|e| e.kind), Err(VfsErrorKind::AlreadyExists), "{name}");
            assert_eq!(std::fs::read(&dest).unwrap(), b"theirs", "{name}");
            assert_eq!(std::fs::read(&tmp).unwrap(), b"new", "{name}");
            way(&tmp, &other).unwrap();
            assert_eq!(std::fs::read(&other).unwrap(), b"new", "{name}");
            assert!(!tmp.exists(), "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn second_lock_is_refused_with_pid() {
        let dir = std::env::temp_dir().join(format!("sila-lock-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("LOCK");
        let first = RealFs::new().lock_exclusive(&path);
        assert!(first.is_ok());
        let second = RealFs::new().lock_exclusive(&path);
        let err = second.err().map(|e| (e.kind, e.detail));
        assert_eq!(err.as_ref().map(|e| e.0), Some(VfsErrorKind::Locked));
        let pid = std::process::id().to_string();
        assert!(err.map(|e| e.1.contains(&pid)).unwrap_or(false));
        drop(first);
        assert!(RealFs::new().lock_exclusive(&path).is_ok(), "lock is released on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
