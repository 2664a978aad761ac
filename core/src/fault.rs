//! One fault policy for a workspace: the first failed sync (or failed write) of any of its
//! files stops the whole workspace from acknowledging writes until it is reopened.
//!
//! Why the whole workspace and not one database: a failed `fsync` means the device (or the
//! filesystem on it) lost data it had accepted, and after such a failure the kernel may have
//! dropped the dirty pages and marked them clean, so a retried `fsync` that succeeds proves
//! nothing (PostgreSQL's "fsyncgate"; Rebello et al., *Can Applications Recover from fsync
//! Failures?*, ATC '20). Every database of a workspace lives on the same filesystem, so the
//! next failure may be anyone's. Storage engines that take durability seriously stop at the
//! first one (PostgreSQL PANICs and recovers from its WAL); we do the same without taking the
//! host process down: the [`FaultLatch`] records the first fault, and from then on
//!
//! * **nothing is acknowledged**: every write request, transaction, versions operation,
//!   registration and GC gets [`ErrorCode::Poisoned`] naming the fault (operation and kind of
//!   file, never a path), including requests that were already running when it happened;
//! * **nothing more reaches the disk**: [`FencedVfs`] refuses every write, truncate, sync,
//!   rename, create and remove of a workspace file, so a checkpoint at close cannot fold a
//!   WAL into a main file the device may be losing, and nothing is ever retried. The one
//!   exception is removing files no record refers to (SQLite's spills and dry-run copies in
//!   `tmp/`, the files of a failed export or backup), so a failed operation still leaves
//!   nothing behind;
//! * **reads of the database that failed stop too** (`Poisoned`): after a failed fsync the
//!   kernel may have dropped that file's dirty pages, so what a read finds there may be older
//!   than what was acknowledged, or torn (a WAL frame half old, half new); nothing it could
//!   answer is trustworthy. The failed file's directory decides which database that is (a
//!   fault in `tmp/`, an export area or a directory above the databases stops none);
//! * **reads of every other database go on**: their files had no failure, so their pages
//!   are what they acknowledged, and since nothing more is written after the fault, nothing
//!   more of theirs can fail. A query writes nothing and acknowledges no durability. Reopening
//!   the workspace recovers each database to its last durable state (SQLite replays or
//!   discards the WAL), and only then are writes taken again.
//!
//! Reopening in the same process: after a failed writeback Linux
//! may keep the pages it could not write in its page cache, marked clean, so a workspace
//! reopened by the same running host can read data that never reached the disk, until the
//! kernel evicts those pages (a new boot never sees them). Acknowledged data is not at risk
//! (nothing unacknowledged was ever answered as durable), but a database may show commits
//! that a later power cut takes back. So the process remembers every workspace file whose
//! sync or write failed ([`take_untrusted_cache`]), and the next open of that workspace in
//! the process drops their cached pages first ([`Vfs::drop_cache`]: `posix_fadvise(DONTNEED)`)
//! before recovery reads them. A different process cannot know; the kernel's own eviction is
//! all it has.
//!
//! What counts as a fault: a failed `sync` of a file, a failed `sync_dir`, a failed
//! writeback wait (the kernel reports a writeback error to one waiter only), and a failed
//! write or truncate other than "no space" — of any file under the workspace root. A full disk
//! (`ENOSPC` on a write) is a clean refusal: the kernel took nothing, SQLite rolls the
//! statement back, and the request gets [`ErrorCode::DiskFull`]. Files outside the workspace
//! (an import source, an operator's export destination) never trip the latch: their failures
//! say nothing about the workspace's device.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::vfs::{DirEntry, LockGuard, OpenMode, Vfs, VfsError, VfsErrorKind, VfsFile, VfsResult};
use crate::{Error, ErrorCode};

/// The IO operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Opening (or creating) a file.
    Open,
    /// A read.
    Read,
    /// A write.
    Write,
    /// A truncate or extension (`set_len`).
    Truncate,
    /// An fsync of a file.
    Sync,
    /// An fsync of a directory.
    SyncDir,
    /// Waiting for a range's writeback (counts as a failed fsync).
    Writeback,
}

impl IoOp {
    /// The word with its article, for messages ("an fsync", "a write").
    pub fn with_article(self) -> String {
        let article = if matches!(self, IoOp::Open | IoOp::Sync) { "an" } else { "a" };
        format!("{article} {}", self.as_str())
    }

    /// A word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Truncate => "truncate",
            IoOp::Sync => "fsync",
            IoOp::SyncDir => "directory fsync",
            IoOp::Writeback => "writeback",
        }
    }
}

/// What kind of file an IO failure was on (messages name this, never the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A live database's main file.
    Database,
    /// A database's write-ahead log.
    Wal,
    /// A rollback journal.
    Journal,
    /// A snapshot file.
    Snapshot,
    /// A directory.
    Directory,
    /// A pointer, manifest or app record (or its temporary).
    Record,
    /// An export or backup file, or its temporary.
    Export,
    /// A scratch file (sorter spills, dry-run copies) in the workspace's `tmp/`.
    Temp,
    /// A segment of the audit trail (`audit/`).
    Audit,
    /// Anything else.
    Other,
}

impl FileKind {
    /// A phrase for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Database => "database file",
            FileKind::Wal => "write-ahead log",
            FileKind::Journal => "rollback journal",
            FileKind::Snapshot => "snapshot file",
            FileKind::Directory => "directory",
            FileKind::Record => "workspace record",
            FileKind::Export => "export or backup file",
            FileKind::Temp => "temporary file",
            FileKind::Audit => "audit log",
            FileKind::Other => "file",
        }
    }

    /// The kind of the file at `path`, from its name (the engine names every file it makes).
    pub fn of_path(path: &Path) -> FileKind {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
        let in_tmp = parent == crate::workspace::TMP_DIR;
        // `apps/<app>/exports/<file>` and `backups/<app>/<db>/<file>` (a database may be named
        // `exports` or `backups`: its files sit at other depths).
        let up = |n: usize| {
            path.ancestors().nth(n).and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("")
        };
        let in_exports = (up(1) == crate::store::layout::EXPORTS_DIR
            && up(3) == crate::store::layout::APPS_DIR)
            || up(3) == crate::store::layout::BACKUPS_DIR;
        if in_exports {
            FileKind::Export
        } else if name.ends_with("-wal") {
            FileKind::Wal
        } else if name.ends_with("-journal") {
            FileKind::Journal
        } else if in_tmp {
            FileKind::Temp
        } else if parent == crate::audit::AUDIT_DIR && name.ends_with(".log") {
            FileKind::Audit
        } else if name.ends_with(".partial") || name.ends_with(".gz") {
            FileKind::Export
        } else if name.ends_with(".sqlite") {
            if parent == crate::store::layout::SNAPSHOTS_DIR {
                FileKind::Snapshot
            } else {
                FileKind::Database
            }
        } else if ["current", "manifest", "app.json"].iter().any(|r| name.starts_with(r)) {
            FileKind::Record
        } else {
            FileKind::Other
        }
    }
}

/// The first fault of a workspace: what failed, on what kind of file, and the system's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: IoOp,
    /// The kind of file.
    pub file: FileKind,
    /// The operating system's (or simulated disk's) description, without the path.
    pub detail: String,
    /// The directory of the file (or the directory) that failed: the database whose files
    /// live there refuses reads too (module doc). Never shown.
    pub(crate) dir: Option<PathBuf>,
}

impl Fault {
    /// A fault of `op` on a file of kind `file` at `path`.
    pub(crate) fn at(op: IoOp, file: FileKind, detail: String, path: &Path) -> Fault {
        let dir = if file == FileKind::Directory { Some(path) } else { path.parent() };
        Fault { op, file, detail, dir: dir.map(Path::to_path_buf) }
    }

    /// Whether the failed file was in `dir` or directly below it (a database's directory and
    /// its `snapshots/`), or was `dir` itself.
    pub(crate) fn touches(&self, dir: &Path) -> bool {
        self.dir.as_deref().is_some_and(|d| d == dir || d.parent() == Some(dir))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of a {} failed ({})", self.op.with_article(), self.file.as_str(), self.detail)
    }
}

/// Files of any workspace of this process whose sync or write failed: their cached pages may
/// hold data the disk does not (see the module doc).
static UNTRUSTED_CACHE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Takes the files under `root` whose cached pages are not to be trusted (a sync or write of
/// them failed in this process), forgetting them: the caller drops their cache.
pub fn take_untrusted_cache(root: &Path) -> Vec<PathBuf> {
    let mut set = UNTRUSTED_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let taken: Vec<PathBuf> = set.iter().filter(|p| p.starts_with(root)).cloned().collect();
    for p in &taken {
        set.remove(p);
    }
    taken
}

fn distrust_cache(path: &Path) {
    UNTRUSTED_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(path.to_path_buf());
}

/// Holds a workspace's first fault. Set once, never cleared: a reopen makes a new one.
#[derive(Debug, Default)]
pub struct FaultLatch {
    fault: OnceLock<Fault>,
}

impl FaultLatch {
    /// A latch with no fault.
    pub fn new() -> FaultLatch {
        FaultLatch::default()
    }

    /// Records `fault` if it is the first; later ones are dropped (the first is the cause).
    pub fn record(&self, fault: Fault) {
        let _ = self.fault.set(fault);
    }

    /// The first fault, if one happened.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.get()
    }

    /// Whether a fault happened.
    pub fn is_set(&self) -> bool {
        self.fault.get().is_some()
    }

    /// `Ok` while no fault happened; afterwards the [`ErrorCode::Poisoned`] error every write
    /// gets (see the module doc).
    pub fn check(&self) -> crate::Result<()> {
        match self.fault.get() {
            None => Ok(()),
            Some(fault) => Err(Error::new(
                ErrorCode::Poisoned,
                format!(
                    "the workspace stopped accepting writes because {fault}; nothing was acknowledged \
                     after it; reopen the workspace to recover every database to its last durable state"
                ),
            )
            .with_fault(fault.clone())),
        }
    }

    /// `Ok` while no fault happened; afterwards the [`ErrorCode::Io`] error of an operation
    /// that ran to its end but must not be acknowledged: the fault may have happened during
    /// it (whatever error code, if any, SQLite made of it), so its outcome is unknown until the
    /// workspace is reopened. Checked after an operation's last IO, before it is answered.
    pub fn check_acknowledge(&self) -> crate::Result<()> {
        match self.fault.get() {
            None => Ok(()),
            Some(fault) => Err(Error::new(
                ErrorCode::Io,
                format!(
                    "not acknowledged: {fault} while this operation ran, so its outcome is unknown; the \
                     workspace accepts no more writes until it is reopened, which recovers every database \
                     to its last durable state"
                ),
            )
            .with_fault(fault.clone())),
        }
    }
}

/// A [`Vfs`] that applies the workspace's fault policy (module doc) to every call the engine
/// makes: the store's plans, the versions operations and SQLite's own IO (the engine's SQLite
/// VFS sits on top of this one). Files outside `root` pass through untouched.
pub struct FencedVfs {
    inner: Arc<dyn Vfs>,
    root: PathBuf,
    latch: Arc<FaultLatch>,
}

impl FencedVfs {
    /// Fences `inner` for the workspace at `root` with `latch`.
    pub fn new(inner: Arc<dyn Vfs>, root: PathBuf, latch: Arc<FaultLatch>) -> FencedVfs {
        FencedVfs { inner, root, latch }
    }

    fn governs(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }

    /// Refuses a mutating call on a workspace path once the latch is set.
    fn admit(&self, op: &'static str, path: &Path) -> VfsResult<()> {
        match self.latch.fault() {
            Some(fault) if self.governs(path) => Err(refusal(op, path, fault)),
            _ => Ok(()),
        }
    }

    /// Records the fault an error of a workspace path means, if it is one.
    fn observe<T>(&self, result: VfsResult<T>, op: IoOp, path: &Path, kind: FileKind) -> VfsResult<T> {
        if crate::sabotage::active(crate::sabotage::Sabotage::FaultLatchBlind) {
            return result;
        }
        if let Err(e) = &result {
            if self.governs(path) && is_fault(op, e.kind) {
                self.latch.record(Fault::at(op, kind, e.detail.clone(), path));
            }
        }
        result
    }
}

fn refusal(op: &'static str, path: &Path, fault: &Fault) -> VfsError {
    VfsError::new(
        VfsErrorKind::Poisoned,
        op,
        path,
        format!("the workspace stopped accepting writes because {fault}"),
    )
}

/// Whether `path` is a file no workspace record refers to: a file in the workspace's `tmp/`,
/// or in an app's export area or the backup directory (an export or backup that failed takes
/// its file back; retention, which removes old backups, is refused after a fault before it
/// starts), or an export's `.partial` temporary beside an operator's destination.
fn is_scratch(path: &Path) -> bool {
    matches!(FileKind::of_path(path), FileKind::Temp | FileKind::Export)
        || path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".partial"))
}

/// Whether a failed `op` with error `kind` is a fault (module doc): every failed sync; a
/// failed write or truncate unless the disk was full (a clean refusal) or the handle already
/// refused (the fault that poisoned it was recorded then).
fn is_fault(op: IoOp, kind: VfsErrorKind) -> bool {
    match op {
        IoOp::Sync | IoOp::SyncDir | IoOp::Writeback => kind != VfsErrorKind::NotFound,
        IoOp::Write | IoOp::Truncate => matches!(kind, VfsErrorKind::Other),
        IoOp::Open | IoOp::Read => false,
    }
}

impl Vfs for FencedVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>> {
        let mut mode = mode;
        if self.latch.is_set() && self.governs(path) && !is_scratch(path) {
            // After a fault nothing new is created, but reads go on: a reader connection opens
            // an existing database file (SQLite asks for create-or-open), and a read
            // transaction in WAL mode opens the WAL, creating it empty if the database had
            // none (an empty WAL holds nothing; every write to it is refused).
            match mode {
                OpenMode::Read | OpenMode::ReadWrite => {}
                OpenMode::CreateOrOpen if self.inner.exists(path)? => mode = OpenMode::ReadWrite,
                OpenMode::CreateOrOpen if FileKind::of_path(path) == FileKind::Wal => {}
                _ => self.admit("open", path)?,
            }
        }
        let file = self.inner.open(path, mode)?;
        if !self.governs(path) {
            return Ok(file);
        }
        Ok(Box::new(FencedFile {
            inner: file,
            path: path.to_path_buf(),
            kind: FileKind::of_path(path),
            latch: self.latch.clone(),
        }))
    }
    fn create_dir(&self, path: &Path) -> VfsResult<()> {
        self.admit("mkdir", path)?;
        self.inner.create_dir(path)
    }
    fn remove_file(&self, path: &Path) -> VfsResult<()> {
        // Scratch files (SQLite's spills, dry-run copies, export and backup temporaries) are
        // removed even after a fault: nothing refers to them, and a failed operation should
        // leave nothing behind. Everything else waits for the reopen's recovery.
        if !is_scratch(path) {
            self.admit("unlink", path)?;
        }
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> VfsResult<()> {
        self.admit("rmdir", path)?;
        self.inner.remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.admit("rename", from)?;
        self.admit("rename", to)?;
        self.inner.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.admit("rename", from)?;
        self.admit("rename", to)?;
        self.inner.rename_noreplace(from, to)
    }
    fn sync_dir(&self, path: &Path) -> VfsResult<()> {
        self.admit("sync dir", path)?;
        let result = self.inner.sync_dir(path);
        self.observe(result, IoOp::SyncDir, path, FileKind::Directory)
    }
    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>> {
        self.inner.list_dir(path)
    }
    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>> {
        self.inner.file_len(path)
    }
    fn exists(&self, path: &Path) -> VfsResult<bool> {
        self.inner.exists(path)
    }
    fn is_symlink(&self, path: &Path) -> VfsResult<bool> {
        self.inner.is_symlink(path)
    }
    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>> {
        self.inner.lock_exclusive(path)
    }
    fn set_read_only(&self, path: &Path, read_only: bool) -> VfsResult<()> {
        self.admit("chmod", path)?;
        self.inner.set_read_only(path, read_only)
    }
    fn free_bytes(&self, path: &Path) -> VfsResult<Option<u64>> {
        self.inner.free_bytes(path)
    }
    fn drop_cache(&self, path: &Path) -> VfsResult<()> {
        self.inner.drop_cache(path)
    }
    fn clone_file(&self, from: &Path, to: &Path) -> VfsResult<bool> {
        self.admit("clone", to)?;
        self.inner.clone_file(from, to)
    }
    fn sync_failures(&self) -> u64 {
        self.inner.sync_failures()
    }
}

/// A workspace file under the fault policy.
struct FencedFile {
    inner: Box<dyn VfsFile>,
    path: PathBuf,
    kind: FileKind,
    latch: Arc<FaultLatch>,
}

impl FencedFile {
    /// Refuses a mutating call once the latch is set, except on SQLite's scratch files in
    /// `tmp/` (sorts and temporary b-trees of the reads that go on): nothing there is ever
    /// committed data.
    fn admit(&self, op: &'static str) -> VfsResult<()> {
        match self.latch.fault() {
            Some(fault) if self.kind != FileKind::Temp => Err(refusal(op, &self.path, fault)),
            _ => Ok(()),
        }
    }

    fn observe<T>(&self, result: VfsResult<T>, op: IoOp) -> VfsResult<T> {
        if crate::sabotage::active(crate::sabotage::Sabotage::FaultLatchBlind) {
            return result;
        }
        if let Err(e) = &result {
            if is_fault(op, e.kind) {
                distrust_cache(&self.path);
                self.latch.record(Fault::at(op, self.kind, e.detail.clone(), &self.path));
            }
        }
        result
    }
}

impl VfsFile for FencedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        self.admit("write")?;
        let result = self.inner.write_at(buf, offset);
        self.observe(result, IoOp::Write)
    }
    fn set_len(&self, len: u64) -> VfsResult<()> {
        self.admit("truncate")?;
        let result = self.inner.set_len(len);
        self.observe(result, IoOp::Truncate)
    }
    fn len(&self) -> VfsResult<u64> {
        self.inner.len()
    }
    fn sync(&self) -> VfsResult<()> {
        self.admit("sync")?;
        let result = self.inner.sync();
        self.observe(result, IoOp::Sync)
    }
    fn start_writeback(&self, offset: u64, len: u64) {
        if self.admit("writeback").is_ok() {
            self.inner.start_writeback(offset, len);
        }
    }
    fn wait_writeback(&self, offset: u64, len: u64) -> VfsResult<()> {
        self.admit("writeback")?;
        let result = self.inner.wait_writeback(offset, len);
        self.observe(result, IoOp::Writeback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_come_from_the_engine_names() {
        let db = "/ws/apps/0190a5c4-1b2c-7d3e-8f40-123456789abc/db/main";
        let f = |p: String| FileKind::of_path(Path::new(&p));
        assert_eq!(f(format!("{db}/0190a5c4-1b2c-7d3e-8f40-123456789abd.sqlite")), FileKind::Database);
        assert_eq!(f(format!("{db}/x.sqlite-wal")), FileKind::Wal);
        assert_eq!(f(format!("{db}/x.sqlite-journal")), FileKind::Journal);
        assert_eq!(f(format!("{db}/snapshots/x.sqlite")), FileKind::Snapshot);
        assert_eq!(f(format!("{db}/current")), FileKind::Record);
        assert_eq!(f(format!("{db}/current.tmp")), FileKind::Record);
        assert_eq!(f(format!("{db}/manifest")), FileKind::Record);
        assert_eq!(f("/ws/tmp/sqlite-1.tmp".into()), FileKind::Temp);
        assert_eq!(f("/ws/backups/a/b/x.sqlite.gz".into()), FileKind::Export);
        assert_eq!(f("/ws/apps/a/exports/x.sqlite".into()), FileKind::Export);
        assert_eq!(
            f("/ws/apps/a/db/exports/x.sqlite".into()),
            FileKind::Database,
            "a database named exports"
        );
        assert_eq!(f("/ws/apps/a/db/backups/x.sqlite-wal".into()), FileKind::Wal, "a database named backups");
        assert_eq!(f("/ws/backups/a/b/x.sqlite.0190.partial".into()), FileKind::Export);
        assert_eq!(f("/host/out/x.sqlite.0190.partial".into()), FileKind::Export);
    }

    #[test]
    fn only_the_first_fault_is_kept_and_it_refuses_writes() {
        let latch = FaultLatch::new();
        assert!(latch.check().is_ok());
        latch.record(Fault::at(
            IoOp::Sync,
            FileKind::Wal,
            "EIO".into(),
            Path::new("/ws/apps/a/db/m/x.sqlite-wal"),
        ));
        latch.record(Fault::at(IoOp::Write, FileKind::Database, "later".into(), Path::new("/ws/x.sqlite")));
        let err = latch.check().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Poisoned);
        assert!(err.message().contains("an fsync of a write-ahead log failed (EIO)"), "{err}");
        assert_eq!(err.fault().map(|f| f.file), Some(FileKind::Wal));
        let fault = latch.fault().unwrap();
        assert!(fault.touches(Path::new("/ws/apps/a/db/m")), "its database");
        assert!(!fault.touches(Path::new("/ws/apps/a/db/n")), "another database");
        let snap = Fault::at(
            IoOp::Sync,
            FileKind::Snapshot,
            "EIO".into(),
            Path::new("/ws/apps/a/db/m/snapshots/s.sqlite"),
        );
        assert!(snap.touches(Path::new("/ws/apps/a/db/m")), "a snapshot of its database");
        let dir = Fault::at(IoOp::SyncDir, FileKind::Directory, "EIO".into(), Path::new("/ws/apps/a/db/m"));
        assert!(dir.touches(Path::new("/ws/apps/a/db/m")), "its directory");
    }

    #[test]
    fn a_full_disk_is_no_fault_but_every_failed_sync_is() {
        assert!(!is_fault(IoOp::Write, VfsErrorKind::NoSpace));
        assert!(is_fault(IoOp::Write, VfsErrorKind::Other));
        assert!(is_fault(IoOp::Sync, VfsErrorKind::NoSpace));
        assert!(is_fault(IoOp::SyncDir, VfsErrorKind::Other));
        assert!(!is_fault(IoOp::Read, VfsErrorKind::Other));
        assert!(!is_fault(IoOp::Write, VfsErrorKind::Poisoned));
    }
}
