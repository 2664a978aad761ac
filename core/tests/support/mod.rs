//! What the core integration tests share: a temporary directory, and a real filesystem that
//! fails (like an EIO) the calls a rule picks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes `<tmp>/sila-core-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sila-core-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One call a [`FaultyFs`] is asked to make: the operation, its path and (for reads and
/// writes) its offset.
pub struct Call<'a> {
    /// The operation (`"write"`, `"sync"`, `"rename"`…).
    pub op: &'static str,
    /// The path it is about.
    pub path: &'a Path,
    /// The offset of a read or write (0 otherwise).
    pub offset: u64,
}

pub type Rule = dyn Fn(&Call<'_>) -> bool + Send + Sync;

pub type BoxFile = Box<dyn sila_sqlite::vfs::VfsFile>;

pub type Wrap = dyn Fn(&Path, sila_sqlite::vfs::OpenMode, BoxFile) -> BoxFile + Send + Sync;

/// The real filesystem, failing (like an EIO) every call its rule picks, and handing every
/// file it opens to its wrapper.
pub struct FaultyFs {
    inner: sila_sqlite::vfs::RealFs,
    fails: std::sync::Arc<Rule>,
    wrap: Box<Wrap>,
}

impl FaultyFs {
    /// Fails the calls `fails` picks.
    pub fn failing(fails: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static) -> FaultyFs {
        FaultyFs {
            inner: sila_sqlite::vfs::RealFs::new(),
            fails: std::sync::Arc::new(fails),
            wrap: Box::new(|_, _, f| f),
        }
    }

    /// Fails nothing; every opened file goes through `wrap`.
    pub fn wrapping(
        wrap: impl Fn(&Path, sila_sqlite::vfs::OpenMode, BoxFile) -> BoxFile + Send + Sync + 'static,
    ) -> FaultyFs {
        FaultyFs {
            inner: sila_sqlite::vfs::RealFs::new(),
            fails: std::sync::Arc::new(|_| false),
            wrap: Box::new(wrap),
        }
    }
}

struct FaultyFile {
    inner: Box<dyn sila_sqlite::vfs::VfsFile>,
    path: PathBuf,
    fails: std::sync::Arc<Rule>,
}

fn check(fails: &Rule, op: &'static str, path: &Path, offset: u64) -> sila_sqlite::vfs::VfsResult<()> {
    if fails(&Call { op, path, offset }) {
        return Err(sila_sqlite::vfs::VfsError::new(
            sila_sqlite::vfs::VfsErrorKind::Other,
            op,
            path,
            "injected failure",
        ));
    }
    Ok(())
}

impl sila_sqlite::vfs::VfsFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        check(&*self.fails, "read", &self.path, offset)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        check(&*self.fails, "write", &self.path, offset)?;
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "set_len", &self.path, len)?;
        self.inner.set_len(len)
    }
    fn len(&self) -> sila_sqlite::vfs::VfsResult<u64> {
        check(&*self.fails, "len", &self.path, 0)?;
        self.inner.len()
    }
    fn sync(&self) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "sync", &self.path, 0)?;
        self.inner.sync()
    }
}

impl sila_sqlite::vfs::Vfs for FaultyFs {
    fn open(
        &self,
        path: &Path,
        mode: sila_sqlite::vfs::OpenMode,
    ) -> sila_sqlite::vfs::VfsResult<Box<dyn sila_sqlite::vfs::VfsFile>> {
        check(&*self.fails, "open", path, 0)?;
        let inner = (self.wrap)(path, mode, self.inner.open(path, mode)?);
        Ok(Box::new(FaultyFile { inner, path: path.to_path_buf(), fails: self.fails.clone() }))
    }
    fn create_dir(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "create_dir", path, 0)?;
        self.inner.create_dir(path)
    }
    fn remove_file(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "remove_file", path, 0)?;
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "remove_dir", path, 0)?;
        self.inner.remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "rename", from, 0)?;
        self.inner.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "rename", from, 0)?;
        self.inner.rename_noreplace(from, to)
    }
    fn sync_dir(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "sync_dir", path, 0)?;
        self.inner.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<Vec<sila_sqlite::vfs::DirEntry>> {
        check(&*self.fails, "list_dir", path, 0)?;
        self.inner.list_dir(path)
    }
    fn file_len(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<Option<u64>> {
        check(&*self.fails, "file_len", path, 0)?;
        self.inner.file_len(path)
    }
    fn exists(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<bool> {
        check(&*self.fails, "exists", path, 0)?;
        self.inner.exists(path)
    }
    fn lock_exclusive(
        &self,
        path: &Path,
    ) -> sila_sqlite::vfs::VfsResult<Box<dyn sila_sqlite::vfs::LockGuard>> {
        self.inner.lock_exclusive(path)
    }
    fn set_read_only(&self, path: &Path, read_only: bool) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "set_read_only", path, 0)?;
        self.inner.set_read_only(path, read_only)
    }
    fn drop_cache(&self, path: &Path) -> sila_sqlite::vfs::VfsResult<()> {
        check(&*self.fails, "drop_cache", path, 0)?;
        self.inner.drop_cache(path)
    }
    fn sync_failures(&self) -> u64 {
        self.inner.sync_failures()
    }
}

/// Stops the reads of one thread (the one that armed it) from the files it gates, at the
/// first such read, until released: a read held in the middle, for tests of what a running
/// read holds back.
#[derive(Default)]
pub struct ReadGate {
    /// (the armed thread, it is stopped now, released).
    state: std::sync::Mutex<(Option<std::thread::ThreadId>, bool, bool)>,
    changed: std::sync::Condvar,
}

impl ReadGate {
    /// The real filesystem, with the files `gated` picks behind this gate.
    pub fn wrapping(
        self: &std::sync::Arc<Self>,
        gated: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> FaultyFs {
        let gate = self.clone();
        FaultyFs::wrapping(move |path, _mode, file| {
            if gated(path) {
                let gate = gate.clone();
                return Box::new(AfterRead(file, move |_: &mut [u8], _, _| gate.pass()));
            }
            file
        })
    }

    /// Runs `sql` on `db` on a thread of its own that arms the gate, and returns once that
    /// read is stopped at the gate (holding its snapshot of the database) with its thread,
    /// which answers after [`ReadGate::release`].
    pub fn stop_a_read(
        self: &std::sync::Arc<Self>,
        db: &sila_sqlite::Database,
        sql: &'static str,
    ) -> std::thread::JoinHandle<sila_sqlite::Result<sila_sqlite::Rows>> {
        let (db, gate) = (db.clone(), self.clone());
        let reader = std::thread::spawn(move || {
            gate.arm_for_this_thread();
            db.query(sql, &[])
        });
        self.wait_until_stopped();
        reader
    }

    /// Arms the gate for the calling thread.
    fn arm_for_this_thread(&self) {
        self.state.lock().unwrap().0 = Some(std::thread::current().id());
    }

    /// Waits until the armed thread is stopped at a read.
    fn wait_until_stopped(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.1 {
            s = self.changed.wait(s).unwrap();
        }
    }

    /// Lets the stopped thread go on (and every later read pass).
    pub fn release(&self) {
        self.state.lock().unwrap().2 = true;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 != Some(std::thread::current().id()) || s.2 {
            return;
        }
        s.1 = true;
        self.changed.notify_all();
        while !s.2 {
            s = self.changed.wait(s).unwrap();
        }
    }
}

/// A file whose every read is handed, once done, to a hook (it may change the bytes read,
/// or stop the thread): the one wrapper the tests' read faults share.
pub struct AfterRead<F>(pub BoxFile, pub F);

impl<F: Fn(&mut [u8], u64, usize) + Send + Sync> sila_sqlite::vfs::VfsFile for AfterRead<F> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        let n = self.0.read_at(buf, offset)?;
        (self.1)(buf, offset, n);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> sila_sqlite::vfs::VfsResult<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> sila_sqlite::vfs::VfsResult<u64> {
        self.0.len()
    }
    fn sync(&self) -> sila_sqlite::vfs::VfsResult<()> {
        self.0.sync()
    }
}

/// The live file of database `db` of `app`, on the real filesystem.
pub fn live_file(ws: &sila_sqlite::Workspace, app: &str, db: &str) -> PathBuf {
    let key = ws.db_key(app, db).unwrap();
    let file = ws.with_store(|s| s.pointer(&key).map(|p| p.file)).unwrap();
    ws.root().join(sila_sqlite::store::layout::db_file(key.app, &key.db, file))
}

/// Scribbles over the middle of b-tree page `page` (counted from 0; not page 0, whose
/// header SQLite reads first) of the closed database file at `path`: damage that
/// `integrity_check` finds.
pub fn scribble_page(path: &Path, page: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = 4096 * page;
    for b in &mut bytes[at + 200..at + 1200] {
        *b = 0x5a;
    }
    std::fs::write(path, &bytes).unwrap();
}
