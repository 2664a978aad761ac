//! One open file of the engine's SQLite VFS: its [`VfsFile`], its holder in the lock table,
//! and, for an anonymous temporary file, the bytes it accounts for. Safe Rust; the
//! `extern "C"` methods in [`super::callbacks`] call these.

use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::ffi;

use super::locks::{self, PathEntry, SHM_REGIONS_MAX, SHM_SLOTS};
use super::{lock, VfsState};
use crate::fault::{FileKind, IoOp};
use crate::vfs::{read_full, write_all_at, OpenMode, VfsErrorKind, VfsFile};

/// The state behind one open `sqlite3_file`.
pub(super) struct FileState {
    state: Arc<VfsState>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    kind: FileKind,
    /// Holder id in the path's lock table.
    id: u64,
    /// The path's lock-table entry (`None` for temporary files: no locks, no shared memory).
    entry: Option<Arc<Mutex<PathEntry>>>,
    /// Opened as a main database (the only kind SQLite locks or maps shared memory for).
    main_db: bool,
    delete_on_close: bool,
    /// A new journal or WAL whose directory entry is synced after its first `xSync`.
    dir_sync_pending: AtomicBool,
    /// For a temporary file: the bytes counted against the temp caps.
    temp_accounted: Option<AtomicU64>,
}

/// How SQLite's open flags map to an [`OpenMode`].
fn open_mode(flags: c_int) -> OpenMode {
    let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
    if flags & ffi::SQLITE_OPEN_READONLY != 0 {
        OpenMode::Read
    } else if create && flags & ffi::SQLITE_OPEN_EXCLUSIVE != 0 {
        OpenMode::CreateNew
    } else if create {
        OpenMode::CreateOrOpen
    } else {
        OpenMode::ReadWrite
    }
}

impl VfsState {
    /// `xOpen`: a new file handle, or an SQLite error code. `path` is `None` for an anonymous
    /// temporary file.
    pub(super) fn open(self: &Arc<Self>, path: Option<PathBuf>, flags: c_int) -> Result<FileState, c_int> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let new_journal = flags & ffi::SQLITE_OPEN_CREATE != 0
            && flags
                & (ffi::SQLITE_OPEN_MAIN_JOURNAL | ffi::SQLITE_OPEN_SUPER_JOURNAL | ffi::SQLITE_OPEN_WAL)
                != 0;
        let (path, kind, mode, temp) = match path {
            Some(path) => {
                let kind = FileKind::of_path(&path);
                (path, kind, open_mode(flags), false)
            }
            None => {
                let path = self.hooks.tmp_dir.join(format!("sqlite-{id}.tmp"));
                (path, FileKind::Temp, OpenMode::CreateNew, true)
            }
        };
        let file =
            self.vfs.open(&path, mode).map_err(|e| self.code(&e, IoOp::Open, kind, ffi::SQLITE_CANTOPEN))?;
        let entry = if temp {
            None
        } else {
            // Under the table's lock (then the entry's, the order `close` takes them too), so a
            // close that empties the entry cannot drop it between the two steps.
            let mut paths = lock(&self.paths);
            let entry = paths.entry(path.clone()).or_default().clone();
            lock(&entry).holders.insert(id, locks::Holder::default());
            Some(entry)
        };
        self.open_files.fetch_add(1, Ordering::AcqRel);
        Ok(FileState {
            state: Arc::clone(self),
            file,
            path,
            kind,
            id,
            entry,
            main_db: flags & ffi::SQLITE_OPEN_MAIN_DB != 0,
            delete_on_close: temp || flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
            dir_sync_pending: AtomicBool::new(new_journal),
            temp_accounted: temp.then(|| AtomicU64::new(0)),
        })
    }

    /// `xDelete`.
    pub(super) fn delete(&self, path: &Path, sync_dir: bool) -> c_int {
        let kind = FileKind::of_path(path);
        match self.vfs.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind == VfsErrorKind::NotFound => {
                self.note_text(e.to_string());
                return ffi::SQLITE_IOERR_DELETE_NOENT;
            }
            Err(e) => return self.code(&e, IoOp::Write, kind, ffi::SQLITE_IOERR_DELETE),
        }
        if sync_dir {
            if let Some(parent) = path.parent() {
                if let Err(e) = self.vfs.sync_dir(parent) {
                    return self.code(&e, IoOp::SyncDir, FileKind::Directory, ffi::SQLITE_IOERR_DIR_FSYNC);
                }
            }
        }
        ffi::SQLITE_OK
    }

    /// `xAccess`.
    pub(super) fn access(&self, path: &Path, flags: c_int) -> Result<bool, c_int> {
        let kind = FileKind::of_path(path);
        let answer = if flags == ffi::SQLITE_ACCESS_EXISTS {
            // Like unix: an empty regular file does not "exist" (an empty journal is not hot).
            match self.vfs.file_len(path) {
                Ok(Some(0)) => self.vfs.list_dir(path).is_ok(),
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(e) => return Err(self.code(&e, IoOp::Read, kind, ffi::SQLITE_IOERR_ACCESS)),
            }
        } else {
            self.vfs.exists(path).map_err(|e| self.code(&e, IoOp::Read, kind, ffi::SQLITE_IOERR_ACCESS))?
        };
        Ok(answer)
    }

    /// Accounts growth of a temp file from `accounted` to `end` bytes against the caps.
    /// Returns the bytes added, or `None` (with the reason noted for the error mapping).
    fn temp_grow(&self, accounted: u64, end: u64) -> Option<u64> {
        let caps = (
            self.temp_file_bytes_max.load(Ordering::Relaxed),
            self.temp_bytes_total_max.load(Ordering::Relaxed),
        );
        match super::super::confine::temp_grow_within(accounted, end, caps, &self.temp_bytes_in_use) {
            Ok(grow) => Some(grow),
            Err(why) => {
                super::super::confine::refuse_with(why);
                None
            }
        }
    }
}

impl FileState {
    fn code(&self, err: &crate::vfs::VfsError, op: IoOp, io_code: c_int) -> c_int {
        self.state.code(err, op, self.kind, io_code)
    }

    pub(super) fn read(&self, buf: &mut [u8], offset: i64) -> c_int {
        let Ok(offset) = u64::try_from(offset) else { return ffi::SQLITE_IOERR_READ };
        match read_full(self.file.as_ref(), buf, offset) {
            Ok(n) if n >= buf.len() => ffi::SQLITE_OK,
            Ok(n) => {
                if let Some(rest) = buf.get_mut(n..) {
                    rest.fill(0);
                }
                ffi::SQLITE_IOERR_SHORT_READ
            }
            Err(e) => self.code(&e, IoOp::Read, ffi::SQLITE_IOERR_READ),
        }
    }

    pub(super) fn write(&self, buf: &[u8], offset: i64) -> c_int {
        let Ok(offset) = u64::try_from(offset) else { return ffi::SQLITE_IOERR_WRITE };
        let grow = match &self.temp_accounted {
            None => 0,
            Some(accounted) => {
                let end = offset.saturating_add(buf.len() as u64);
                match self.state.temp_grow(accounted.load(Ordering::Relaxed), end) {
                    Some(grow) => grow,
                    None => return ffi::SQLITE_FULL,
                }
            }
        };
        let rc = match write_all_at(self.file.as_ref(), buf, offset) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => self.code(&e, IoOp::Write, ffi::SQLITE_IOERR_WRITE),
        };
        if let Some(accounted) = &self.temp_accounted {
            if rc == ffi::SQLITE_OK {
                accounted.fetch_add(grow, Ordering::Relaxed);
            } else {
                self.state.temp_bytes_in_use.fetch_sub(grow, Ordering::AcqRel);
            }
        }
        rc
    }

    pub(super) fn truncate(&self, size: i64) -> c_int {
        let Ok(size) = u64::try_from(size) else { return ffi::SQLITE_IOERR_TRUNCATE };
        if let Some(accounted) = &self.temp_accounted {
            // Temp files grow by writes only (counted there); shrinking gives bytes back.
            let before = accounted.load(Ordering::Relaxed);
            if size > before {
                return ffi::SQLITE_OK;
            }
        }
        match self.file.set_len(size) {
            Ok(()) => {
                if let Some(accounted) = &self.temp_accounted {
                    let before = accounted.swap(size, Ordering::Relaxed);
                    self.state.temp_bytes_in_use.fetch_sub(before.saturating_sub(size), Ordering::AcqRel);
                }
                ffi::SQLITE_OK
            }
            Err(e) => self.code(&e, IoOp::Truncate, ffi::SQLITE_IOERR_TRUNCATE),
        }
    }

    pub(super) fn sync(&self) -> c_int {
        if self.temp_accounted.is_some() {
            // Temporary files hold nothing that must survive a crash.
            return ffi::SQLITE_OK;
        }
        if let Err(e) = self.file.sync() {
            return self.code(&e, IoOp::Sync, ffi::SQLITE_IOERR_FSYNC);
        }
        if self.dir_sync_pending.swap(false, Ordering::AcqRel) {
            if let Some(parent) = self.path.parent() {
                if let Err(e) = self.state.vfs.sync_dir(parent) {
                    return self.state.code(
                        &e,
                        IoOp::SyncDir,
                        FileKind::Directory,
                        ffi::SQLITE_IOERR_DIR_FSYNC,
                    );
                }
            }
        }
        ffi::SQLITE_OK
    }

    pub(super) fn size(&self) -> Result<i64, c_int> {
        let len = self.file.len().map_err(|e| self.code(&e, IoOp::Read, ffi::SQLITE_IOERR_FSTAT))?;
        i64::try_from(len).map_err(|_| ffi::SQLITE_IOERR_FSTAT)
    }

    /// Runs `f` on this handle's path entry and id, under the entry's mutex. Temporary files
    /// have no entry: `f` is not run and `None` is returned.
    fn with_holders<R>(&self, f: impl FnOnce(&mut PathEntry, u64) -> R) -> Option<R> {
        let entry = self.entry.as_ref()?;
        Some(f(&mut lock(entry), self.id))
    }

    pub(super) fn lock(&self, want: c_int) -> c_int {
        match self.with_holders(|entry, me| locks::lock_level(entry, me, want)) {
            None | Some(Ok(())) => ffi::SQLITE_OK,
            Some(Err(code)) => code,
        }
    }

    pub(super) fn unlock(&self, want: c_int) -> c_int {
        let _ = self.with_holders(|entry, me| {
            if let Some(holder) = entry.holders.get_mut(&me) {
                holder.level = holder.level.min(want);
            }
        });
        ffi::SQLITE_OK
    }

    pub(super) fn check_reserved(&self) -> bool {
        self.with_holders(|entry, _| entry.holders.values().any(|h| h.level >= ffi::SQLITE_LOCK_RESERVED))
            .unwrap_or(false)
    }

    pub(super) fn shm_map(&self, region: c_int, size: c_int, extend: bool) -> Result<*mut c_void, c_int> {
        if !self.main_db {
            return Err(ffi::SQLITE_IOERR_SHMMAP);
        }
        let (Ok(region), Ok(size)) = (usize::try_from(region), usize::try_from(size)) else {
            return Err(ffi::SQLITE_IOERR_SHMMAP);
        };
        if size == 0 || region >= SHM_REGIONS_MAX {
            self.state.note_text(format!("xShmMap: region {region} of {size} bytes refused"));
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
                    entry.shm.push(locks::Region::new(size));
                }
            }
            Ok(entry.shm.get(region).map_or(ptr::null_mut(), locks::Region::addr))
        });
        result.unwrap_or(Err(ffi::SQLITE_IOERR_SHMMAP))
    }

    pub(super) fn shm_lock(&self, offset: c_int, n: c_int, flags: c_int) -> c_int {
        if offset < 0 || n < 1 || offset.saturating_add(n) > SHM_SLOTS {
            return ffi::SQLITE_IOERR_SHMLOCK;
        }
        let mask = (((1u32 << n) - 1) << offset) as u8;
        match self.with_holders(|entry, me| locks::shm_lock_slots(entry, me, mask, flags)) {
            Some(Ok(())) => ffi::SQLITE_OK,
            Some(Err(code)) => code,
            None => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }

    /// Releases this handle's WAL slots and mapping; frees the regions if it was the last.
    pub(super) fn shm_unmap(&self) {
        let _ = self.with_holders(locks::shm_release);
    }

    /// `xClose`: releases every lock and mapping, forgets the holder, gives back a temp file's
    /// bytes, deletes the file if asked. Returns an SQLite code.
    pub(super) fn close(self) -> c_int {
        let mut rc = ffi::SQLITE_OK;
        if let Some(entry) = &self.entry {
            let mut paths = lock(&self.state.paths);
            let mut e = lock(entry);
            locks::shm_release(&mut e, self.id);
            e.holders.remove(&self.id);
            if e.holders.is_empty() {
                drop(e);
                paths.remove(&self.path);
            }
        }
        let FileState { state, file, path, delete_on_close, temp_accounted, kind, .. } = self;
        drop(file);
        if let Some(accounted) = temp_accounted {
            state.temp_bytes_in_use.fetch_sub(accounted.into_inner(), Ordering::AcqRel);
        }
        if delete_on_close {
            match state.vfs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind == VfsErrorKind::NotFound => {}
                Err(e) => rc = state.code(&e, IoOp::Write, kind, ffi::SQLITE_IOERR_DELETE),
            }
        }
        state.open_files.fetch_sub(1, Ordering::AcqRel);
        rc
    }
}
