//! SQLite running on the simulated disk through the engine's own SQLite VFS (the one
//! production runs over the real filesystem): basic IO, locks, WAL with concurrent readers,
//! crashes (durable images), sync failures, panics in the `Vfs`, and a seeded loop of random
//! transactions cut by crashes at random IO steps.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{params, Connection, ErrorCode, OpenFlags};
use sila_sqlite::clock::Clock;
use sila_sqlite::sqlite::vfs::{self as sqlite_vfs, SqliteVfs, TempLimits, VfsHooks};
use sila_sqlite::vfs::{DirEntry, LockGuard, OpenMode, Vfs, VfsFile, VfsResult};
use sila_sqlite_sim::memfs::{Faults, MemFs};

type TestResult = Result<(), Box<dyn Error>>;

const DB: &str = "/db/main.db";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registration of the engine's SQLite VFS over a `Vfs` (unregistered when dropped; drop
/// its connections first). Connections open through its engine name (any absolute path).
struct Sim {
    vfs: SqliteVfs,
    name: String,
}

/// A wall clock stopped at a fixed time.
struct FixedClock(u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
    fn sleep(&self, _: std::time::Duration) {
        std::thread::yield_now();
    }
}

impl Sim {
    fn new(vfs: Arc<dyn Vfs>) -> Result<Sim, Box<dyn Error>> {
        Sim::with_options(vfs, 1_704_067_200_000, 1)
    }

    fn with_options(vfs: Arc<dyn Vfs>, now_ms: u64, seed: u64) -> Result<Sim, Box<dyn Error>> {
        if !vfs.exists(Path::new("/tmp"))? {
            vfs.create_dir(Path::new("/tmp"))?;
        }
        let hooks = VfsHooks {
            tmp_dir: PathBuf::from("/tmp"),
            clock: Arc::new(FixedClock(now_ms)),
            seed,
            temp: TempLimits::default(),
        };
        let vfs = sqlite_vfs::register(vfs, hooks)?;
        let name = vfs.engine_name().to_string();
        Ok(Sim { vfs, name })
    }

    fn open(&self, path: &str) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Connection::open_with_flags_and_vfs(path, flags, self.name.as_str())
    }
}

/// A MemFs with a durable `/db` directory.
fn disk() -> Result<MemFs, Box<dyn Error>> {
    let fs = MemFs::new();
    fs.create_dir(Path::new("/db"))?;
    fs.sync_dir(Path::new("/"))?;
    Ok(fs)
}

fn integrity(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
}

fn count(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
}

fn sqlite_codes(err: &rusqlite::Error) -> Option<(ErrorCode, i32)> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => Some((e.code, e.extended_code)),
        _ => None,
    }
}

/// Opens `DB` in WAL mode with `synchronous`, creates `t(id, v)` and makes the database
/// file's directory entry durable (the engine does that for every new file).
fn wal_db(sim: &Sim, fs: &MemFs, synchronous: &str) -> Result<Connection, Box<dyn Error>> {
    let conn = sim.open(DB)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    conn.execute_batch(&format!(
        "PRAGMA synchronous={synchronous}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
    ))?;
    fs.sync_dir(Path::new("/db"))?;
    Ok(conn)
}

#[test]
fn create_insert_read_back() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let conn = sim.open(DB)?;
    conn.execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")?;
    for i in 0..100 {
        conn.execute(
            "INSERT INTO notes(body) VALUES (?1)",
            params![format!("note {i} {}", "x".repeat(i * 7))],
        )?;
    }
    let body: String = conn.query_row("SELECT body FROM notes WHERE id = 42", [], |r| r.get(0))?;
    assert_eq!(body, format!("note 41 {}", "x".repeat(41 * 7)));
    assert_eq!(count(&conn, "notes")?, 100);
    assert_eq!(integrity(&conn)?, "ok");
    assert!(fs.read(DB).is_some_and(|d| d.len() >= 4096), "the database lives on the Vfs");
    assert_eq!(sim.vfs.open_files(), 1);
    assert_eq!(sqlite_vfs::open_files(&sim.name), Some(1));
    drop(conn);
    assert_eq!(sim.vfs.open_files(), 0);
    Ok(())
}

#[test]
fn relative_paths_are_refused_and_names_are_reused() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let err = sim.open("relative.db").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::CannotOpen), "{err:?}");
    let name = sim.name.clone();
    let conn = sim.open(DB)?;
    drop(sim);
    assert_eq!(sqlite_vfs::open_files(&name), None, "unregistered with its handle");
    // A name whose last registration still has an open file is not handed out again.
    let other = Sim::new(Arc::new(disk()?))?;
    assert_ne!(other.name, name, "still in use by an open connection");
    drop(conn);
    drop(other);
    let again = Sim::new(Arc::new(disk()?))?;
    assert!(again.name.starts_with("sila-vfs-"), "{}", again.name);
    Ok(())
}

#[test]
fn temp_files_and_clock_hook() -> TestResult {
    let fs = disk()?;
    let sim = Sim::with_options(Arc::new(fs.clone()), 1_234_567_890_000, 1)?;
    let conn = sim.open(DB)?;
    let now: i64 = conn.query_row("SELECT CAST(strftime('%s','now') AS INTEGER)", [], |r| r.get(0))?;
    assert_eq!(now, 1_234_567_890);
    // Temp tables and sorter spills go to anonymous temp files in the tmp directory.
    conn.execute_batch(
        "PRAGMA temp_store=FILE; PRAGMA cache_size=5; PRAGMA temp.cache_size=5;
         CREATE TEMP TABLE scratch(x BLOB);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 2000)
         INSERT INTO scratch SELECT randomblob(300) FROM c;",
    )?;
    let n: i64 =
        conn.query_row("SELECT count(*) FROM (SELECT x FROM scratch ORDER BY x)", [], |r| r.get(0))?;
    assert_eq!(n, 2000);
    assert!(sim.vfs.temp_bytes_in_use() > 0, "the temp table is on a temp file");
    drop(conn);
    assert_eq!(sim.vfs.temp_bytes_in_use(), 0);
    let names: Vec<PathBuf> = fs.files().into_keys().collect();
    assert_eq!(names, vec![PathBuf::from(DB)], "temp files are removed when closed");
    Ok(())
}

#[test]
fn rollback_journal_locks_between_connections() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let a = sim.open(DB)?;
    let b = sim.open(DB)?;
    a.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    a.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2);")?; // RESERVED
    let err = b.execute_batch("BEGIN IMMEDIATE").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::DatabaseBusy), "{err:?}");
    b.execute_batch("ROLLBACK").ok();
    assert_eq!(count(&b, "t")?, 1, "a reader still sees the committed state");
    b.execute_batch("BEGIN; SELECT count(*) FROM t;")?; // b holds SHARED in a read transaction
    let err = a.execute_batch("COMMIT").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::DatabaseBusy), "{err:?}");
    // a now holds PENDING: a new reader is kept out until the writer finishes.
    let c = sim.open(DB)?;
    let err = count(&c, "t").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::DatabaseBusy), "{err:?}");
    b.execute_batch("COMMIT")?;
    a.execute_batch("COMMIT")?;
    assert_eq!(count(&c, "t")?, 2);
    assert_eq!(count(&b, "t")?, 2);
    Ok(())
}

#[test]
fn wal_readers_keep_their_snapshot_while_the_writer_commits() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let writer = wal_db(&sim, &fs, "FULL")?;
    writer.execute("INSERT INTO t(v) VALUES ('a')", [])?;
    let r1 = sim.open(DB)?;
    let r2 = sim.open(DB)?;
    r1.execute_batch("BEGIN")?;
    assert_eq!(count(&r1, "t")?, 1);
    writer.execute("INSERT INTO t(v) VALUES ('b')", [])?;
    r2.execute_batch("BEGIN")?;
    assert_eq!(count(&r2, "t")?, 2);
    writer.execute("INSERT INTO t(v) VALUES ('c')", [])?;
    assert_eq!(count(&r1, "t")?, 1, "r1 keeps its snapshot");
    assert_eq!(count(&r2, "t")?, 2, "r2 keeps its snapshot");
    // A checkpoint cannot pass the readers' marks; it must not disturb them either.
    let (busy, _, _): (i64, i64, i64) =
        writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    assert_eq!(busy, 0);
    assert_eq!(count(&r1, "t")?, 1);
    r1.execute_batch("COMMIT")?;
    r2.execute_batch("COMMIT")?;
    assert_eq!(count(&r1, "t")?, 3);
    assert_eq!(count(&r2, "t")?, 3);

    // A reader whose snapshot is the database file alone (empty WAL) holds back a
    // checkpoint that would copy newer pages into that file under it.
    writer.execute_batch("CREATE TABLE u(x);")?;
    writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    r1.execute_batch("BEGIN")?;
    assert_eq!(count(&r1, "u")?, 0);
    writer.execute("INSERT INTO u VALUES (1)", [])?;
    let (busy, log, done): (i64, i64, i64) =
        writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    assert!(busy == 0 && log > 0 && done < log, "the reader blocks the backfill: {busy} {log} {done}");
    assert_eq!(count(&r1, "u")?, 0, "r1 still reads its snapshot");
    // One writer at a time: the WAL write lock.
    let w2 = sim.open(DB)?;
    w2.execute_batch("BEGIN IMMEDIATE")?;
    let err = writer.execute_batch("BEGIN IMMEDIATE").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::DatabaseBusy), "{err:?}");
    w2.execute_batch("ROLLBACK")?;
    r1.execute_batch("COMMIT")?;
    assert_eq!(count(&r1, "u")?, 1);
    drop(w2);
    let names: Vec<PathBuf> = fs.files().into_keys().collect();
    assert_eq!(names, vec![PathBuf::from(DB), PathBuf::from(format!("{DB}-wal"))], "the -shm is not a file");
    drop((r1, r2, writer));
    assert_eq!(fs.read(format!("{DB}-wal")), None, "the last close checkpoints and deletes the WAL");
    Ok(())
}

#[test]
fn wal_one_writer_two_concurrent_readers() -> TestResult {
    const ACCOUNTS: i64 = 10;
    const TOTAL: i64 = 1000;
    const TRANSFERS: i64 = 300;
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    {
        let setup = sim.open(DB)?;
        setup.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);
             CREATE TABLE log(id INTEGER PRIMARY KEY, note TEXT);",
        )?;
        for id in 0..ACCOUNTS {
            setup.execute("INSERT INTO acct VALUES (?1, ?2)", params![id, TOTAL / ACCOUNTS])?;
        }
    }
    let keep_open = sim.open(DB)?; // keeps the WAL and -shm alive between connections
    let done = Arc::new(AtomicBool::new(false));
    let open = |name: String| -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags_and_vfs(DB, flags, name.as_str())?;
        conn.busy_handler(Some(|n: i32| {
            std::thread::yield_now();
            n < 1_000_000
        }))?;
        Ok(conn)
    };
    let writer = {
        let (name, done) = (sim.name.clone(), Arc::clone(&done));
        std::thread::spawn(move || -> Result<(), String> {
            let run = || -> rusqlite::Result<()> {
                let mut conn = open(name)?;
                conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=20;")?;
                for i in 0..TRANSFERS {
                    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let (from, to) = (i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS);
                    tx.execute("UPDATE acct SET bal = bal - ?1 WHERE id = ?2", params![i % 13, from])?;
                    tx.execute("UPDATE acct SET bal = bal + ?1 WHERE id = ?2", params![i % 13, to])?;
                    tx.execute("INSERT INTO log(note) VALUES (?1)", params!["x".repeat(200)])?;
                    tx.commit()?;
                }
                Ok(())
            };
            let result = run().map_err(|e| e.to_string());
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (name, done) = (sim.name.clone(), Arc::clone(&done));
            std::thread::spawn(move || -> Result<(u64, i64, usize), String> {
                let run = || -> Result<(u64, i64, usize), String> {
                    let conn = open(name).map_err(|e| e.to_string())?;
                    let (mut reads, mut last, mut distinct) = (0u64, -1i64, 0usize);
                    let snapshot = |conn: &Connection| -> rusqlite::Result<(i64, i64)> {
                        conn.query_row(
                            "SELECT (SELECT sum(bal) FROM acct), (SELECT count(*) FROM log)",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                    };
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let ((sum1, n1), (sum2, n2)) = (|| -> rusqlite::Result<_> {
                            conn.execute_batch("BEGIN")?;
                            let first = snapshot(&conn)?;
                            std::thread::yield_now();
                            let second = snapshot(&conn)?;
                            conn.execute_batch("COMMIT")?;
                            Ok((first, second))
                        })()
                        .map_err(|e| e.to_string())?;
                        if sum1 != TOTAL || sum2 != TOTAL || n1 != n2 || n1 < last {
                            return Err(format!(
                                "inconsistent read: sums {sum1} {sum2}, counts {n1} {n2}, last {last}"
                            ));
                        }
                        if n1 != last {
                            distinct += 1;
                        }
                        last = n1;
                        reads += 1;
                        if finished {
                            return Ok((reads, last, distinct));
                        }
                    }
                };
                run()
            })
        })
        .collect();
    writer.join().map_err(|_| "writer thread panicked")??;
    for reader in readers {
        let (reads, last, distinct) = reader.join().map_err(|_| "reader thread panicked")??;
        assert_eq!(last, TRANSFERS, "the final read sees every commit");
        assert!(reads >= 1 && distinct >= 1, "reads {reads}, distinct {distinct}");
        eprintln!("reader: {reads} consistent snapshots, {distinct} distinct states");
    }
    assert_eq!(integrity(&keep_open)?, "ok");
    Ok(())
}

#[test]
fn full_sync_commits_survive_a_crash() -> TestResult {
    const N: i64 = 50;
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let conn = wal_db(&sim, &fs, "FULL")?;
    for i in 0..N {
        conn.execute("INSERT INTO t(v) VALUES (?1)", params![format!("row {i}")])?;
    }
    // Power cut while the connection is open: boot a copy of the disk.
    let image = fs.durable_image();
    let after = Sim::new(Arc::new(image.clone()))?;
    let reopened = after.open(DB)?;
    assert_eq!(count(&reopened, "t")?, N);
    assert_eq!(integrity(&reopened)?, "ok");
    assert!(image.read(format!("{DB}-wal")).is_some(), "the commits were in the WAL");
    // And a real crash of the original disk, connections closed afterwards.
    fs.crash();
    drop(conn);
    let reopened = sim.open(DB)?;
    assert_eq!(count(&reopened, "t")?, N);
    assert_eq!(integrity(&reopened)?, "ok");
    reopened.execute("INSERT INTO t(v) VALUES ('after')", [])?;
    assert_eq!(count(&reopened, "t")?, N + 1);
    Ok(())
}

#[test]
fn unsynced_commits_leave_a_consistent_prefix() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let conn = wal_db(&sim, &fs, "FULL")?;
    for i in 0..20 {
        conn.execute("INSERT INTO t(id, v) VALUES (?1, 'synced')", params![i + 1])?;
    }
    conn.execute_batch("PRAGMA synchronous=OFF")?;
    for i in 20..60 {
        conn.execute("INSERT INTO t(id, v) VALUES (?1, ?2)", params![i + 1, "u".repeat(500)])?;
    }
    assert_eq!(count(&conn, "t")?, 60);
    let image = fs.durable_image();
    let after = Sim::new(Arc::new(image))?;
    let reopened = after.open(DB)?;
    assert_eq!(integrity(&reopened)?, "ok");
    let (n, max): (i64, i64) =
        reopened
            .query_row("SELECT count(*), coalesce(max(id), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    assert!((20..=60).contains(&n) && n == max, "a prefix of the commits: {n} rows, max id {max}");
    eprintln!("unsynced: {n} of 60 commits survived");
    Ok(())
}

#[test]
fn a_failed_sync_is_an_io_error_and_the_image_stays_consistent() -> TestResult {
    let fs = disk()?;
    let sim = Sim::new(Arc::new(fs.clone()))?;
    let conn = wal_db(&sim, &fs, "FULL")?;
    for i in 0..10 {
        conn.execute("INSERT INTO t(v) VALUES (?1)", params![format!("acked {i}")])?;
    }
    fs.set_faults(Faults { fail_sync_after: Some(0), ..Faults::default() });
    let err = conn.execute("INSERT INTO t(v) VALUES ('doomed')", []).err();
    let codes = err.as_ref().and_then(sqlite_codes);
    assert_eq!(codes, Some((ErrorCode::SystemIoFailure, rusqlite::ffi::SQLITE_IOERR_FSYNC)), "{err:?}");
    assert!(sim.vfs.last_error().contains("EIO"), "{}", sim.vfs.last_error());
    // Fail-stop is the engine's job; the bridge must at least not report later success on
    // the poisoned WAL handle.
    let later = conn.execute("INSERT INTO t(v) VALUES ('after')", []);
    assert!(later.is_err(), "a write after a failed fsync must fail: {later:?}");
    let image = fs.durable_image();
    let after = Sim::new(Arc::new(image))?;
    let reopened = after.open(DB)?;
    assert_eq!(integrity(&reopened)?, "ok");
    assert_eq!(count(&reopened, "t")?, 10, "acknowledged commits present, the failed one absent");
    Ok(())
}

/// A `Vfs` whose files panic in `read_at` or `write_at` while armed.
struct PanicFs {
    fs: MemFs,
    armed: Arc<AtomicBool>,
}

struct PanicFile {
    inner: Box<dyn VfsFile>,
    armed: Arc<AtomicBool>,
}

impl PanicFile {
    #[allow(clippy::panic)]
    fn maybe_panic(&self, op: &str) {
        if self.armed.load(Ordering::SeqCst) {
            panic!("injected panic in {op}");
        }
    }
}

impl VfsFile for PanicFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        self.maybe_panic("read_at");
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        self.maybe_panic("write_at");
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> VfsResult<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> VfsResult<u64> {
        self.inner.len()
    }
    fn sync(&self) -> VfsResult<()> {
        self.inner.sync()
    }
}

impl Vfs for PanicFs {
    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>> {
        let inner = self.fs.open(path, mode)?;
        Ok(Box::new(PanicFile { inner, armed: Arc::clone(&self.armed) }))
    }
    fn create_dir(&self, path: &Path) -> VfsResult<()> {
        self.fs.create_dir(path)
    }
    fn remove_file(&self, path: &Path) -> VfsResult<()> {
        self.fs.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> VfsResult<()> {
        self.fs.remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.fs.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.fs.rename_noreplace(from, to)
    }
    fn sync_dir(&self, path: &Path) -> VfsResult<()> {
        self.fs.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>> {
        self.fs.list_dir(path)
    }
    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>> {
        self.fs.file_len(path)
    }
    fn exists(&self, path: &Path) -> VfsResult<bool> {
        self.fs.exists(path)
    }
    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>> {
        self.fs.lock_exclusive(path)
    }
}

#[test]
fn a_panic_in_the_vfs_becomes_an_sqlite_error() -> TestResult {
    let fs = disk()?;
    let armed = Arc::new(AtomicBool::new(false));
    let sim = Sim::new(Arc::new(PanicFs { fs: fs.clone(), armed: Arc::clone(&armed) }))?;
    let conn = sim.open(DB)?;
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    drop(conn);
    let conn = sim.open(DB)?;
    armed.store(true, Ordering::SeqCst);
    let err = count(&conn, "t").err();
    assert_eq!(err.as_ref().and_then(sqlite_codes).map(|c| c.0), Some(ErrorCode::SystemIoFailure), "{err:?}");
    armed.store(false, Ordering::SeqCst);
    assert_eq!(count(&conn, "t")?, 1, "the connection recovers once the Vfs behaves");
    armed.store(true, Ordering::SeqCst);
    let err = conn.execute("INSERT INTO t VALUES (2)", []).err();
    assert!(err.is_some(), "a panic on write fails the statement");
    armed.store(false, Ordering::SeqCst);
    assert_eq!(integrity(&conn)?, "ok");
    assert_eq!(count(&conn, "t")?, 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seeded crash loop
// ---------------------------------------------------------------------------------------

/// Takes a durable image of its MemFs just before the `n`-th mutating IO call (counting
/// from `arm`), so a crash lands anywhere inside SQLite's commit, checkpoint or close.
struct CrashFs {
    fs: MemFs,
    ctl: Arc<CrashCtl>,
}

struct CrashCtl {
    fs: MemFs,
    countdown: Mutex<Option<u64>>,
    image: Mutex<Option<MemFs>>,
    /// Set on the disk when the countdown is armed (after setup).
    faults: Faults,
}

impl CrashCtl {
    fn tick(&self) {
        let mut countdown = lock(&self.countdown);
        match *countdown {
            Some(0) => {
                *lock(&self.image) = Some(self.fs.durable_image());
                *countdown = None;
            }
            Some(n) => *countdown = Some(n - 1),
            None => {}
        }
    }

    fn arm(&self, calls: u64) {
        self.fs.set_faults(self.faults);
        *lock(&self.countdown) = Some(calls);
    }

    fn crashed(&self) -> bool {
        lock(&self.image).is_some()
    }

    /// The image taken at the crash point, or the disk as it is now if none was taken.
    fn take_image(&self) -> MemFs {
        *lock(&self.countdown) = None;
        lock(&self.image).take().unwrap_or_else(|| self.fs.durable_image())
    }
}

struct CrashFile {
    inner: Box<dyn VfsFile>,
    ctl: Arc<CrashCtl>,
}

impl VfsFile for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> VfsResult<usize> {
        self.ctl.tick();
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> VfsResult<()> {
        self.ctl.tick();
        self.inner.set_len(len)
    }
    fn len(&self) -> VfsResult<u64> {
        self.inner.len()
    }
    fn sync(&self) -> VfsResult<()> {
        self.ctl.tick();
        self.inner.sync()
    }
}

impl Vfs for CrashFs {
    fn open(&self, path: &Path, mode: OpenMode) -> VfsResult<Box<dyn VfsFile>> {
        if !matches!(mode, OpenMode::Read | OpenMode::ReadWrite) {
            self.ctl.tick();
        }
        let inner = self.fs.open(path, mode)?;
        Ok(Box::new(CrashFile { inner, ctl: Arc::clone(&self.ctl) }))
    }
    fn create_dir(&self, path: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.create_dir(path)
    }
    fn remove_file(&self, path: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.rename_noreplace(from, to)
    }
    fn sync_dir(&self, path: &Path) -> VfsResult<()> {
        self.ctl.tick();
        self.fs.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> VfsResult<Vec<DirEntry>> {
        self.fs.list_dir(path)
    }
    fn file_len(&self, path: &Path) -> VfsResult<Option<u64>> {
        self.fs.file_len(path)
    }
    fn exists(&self, path: &Path) -> VfsResult<bool> {
        self.fs.exists(path)
    }
    fn lock_exclusive(&self, path: &Path) -> VfsResult<Box<dyn LockGuard>> {
        self.fs.lock_exclusive(path)
    }
}

type Model = BTreeMap<i64, Vec<u8>>;

/// What one seed did: the committed states, and which commits were acknowledged durable.
struct Outcome {
    /// `states[j]`: the model after `j` commits (`states[0]` is the empty table).
    states: Vec<Model>,
    /// Commits acknowledged before the crash image was taken.
    acked: usize,
    /// Highest acknowledged commit that ran with a durable `synchronous` level.
    durable_floor: usize,
    /// Whether the image was taken during a step that may have committed one more.
    in_flight: bool,
}

fn random_blob(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = if rng.random_bool(0.2) { rng.random_range(1000..5000) } else { rng.random_range(1..200) };
    (0..len).map(|_| rng.random_range(0..=255u8)).collect()
}

/// One seed: setup, then random transactions (and checkpoints, reopens, readers) until the
/// crash point; returns the model and what was acknowledged.
fn run_workload(seed: u64, sim: &Sim, ctl: &CrashCtl, wal: bool) -> Result<Outcome, Box<dyn Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (durable_level, lazy_level) = if wal { ("FULL", "NORMAL") } else { ("EXTRA", "NORMAL") };
    let configure = |conn: &Connection, sync: &str| -> rusqlite::Result<()> {
        conn.execute_batch(&format!("PRAGMA synchronous={sync}; PRAGMA cache_size=8;"))
    };
    let mut conn = sim.open(DB)?;
    conn.query_row(&format!("PRAGMA journal_mode={}", if wal { "WAL" } else { "DELETE" }), [], |_| Ok(()))?;
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint={}; CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB NOT NULL);
         CREATE TABLE txlog(id INTEGER PRIMARY KEY);",
        match rng.random_range(0..3u32) {
            0 => 0,
            1 => 4,
            _ => 50,
        }
    ))?;
    configure(&conn, durable_level)?;
    conn.execute_batch("BEGIN; SELECT 1; COMMIT;")?;
    ctl.fs.sync_dir(Path::new("/db"))?; // the engine makes every new file's entry durable
    ctl.arm(rng.random_range(0..300));

    let mut states = vec![Model::new()];
    let (mut acked, mut durable_floor) = (0usize, 0usize);
    let mut reader: Option<Connection> = None;
    let transactions = rng.random_range(5..30);
    for _ in 0..transactions {
        if ctl.crashed() {
            return Ok(Outcome { states, acked, durable_floor, in_flight: false });
        }
        // Something other than a transaction, now and then.
        match rng.random_range(0..10u32) {
            0 if wal => {
                let mode = match rng.random_range(0..4u32) {
                    0 => "PASSIVE",
                    1 => "FULL",
                    2 => "RESTART",
                    _ => "TRUNCATE",
                };
                conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))?;
            }
            1 => {
                drop(std::mem::replace(&mut conn, sim.open(DB)?));
                configure(&conn, durable_level)?;
            }
            2 => {
                reader = match reader {
                    Some(r) => {
                        r.execute_batch("COMMIT")?;
                        None
                    }
                    None if wal => {
                        let r = sim.open(DB)?;
                        r.execute_batch("BEGIN")?;
                        let _: i64 = r.query_row("SELECT count(*) FROM kv", [], |row| row.get(0))?;
                        Some(r)
                    }
                    None => None,
                }
            }
            _ => {}
        }
        if ctl.crashed() {
            return Ok(Outcome { states, acked, durable_floor, in_flight: false });
        }
        let durable = rng.random_bool(0.6);
        configure(&conn, if durable { durable_level } else { lazy_level })?;
        let mut model = states.last().cloned().unwrap_or_default();
        let number = states.len() as i64;
        let tx = conn.transaction()?;
        for _ in 0..rng.random_range(1..12) {
            let key = rng.random_range(0..60i64);
            match rng.random_range(0..4u32) {
                0 => {
                    tx.execute("DELETE FROM kv WHERE k = ?1", params![key])?;
                    model.remove(&key);
                }
                _ => {
                    let blob = random_blob(&mut rng);
                    tx.execute("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)", params![key, blob])?;
                    model.insert(key, blob);
                }
            }
        }
        tx.execute("INSERT INTO txlog(id) VALUES (?1)", params![number])?;
        if rng.random_bool(0.1) {
            tx.rollback()?;
            continue;
        }
        tx.commit()?;
        states.push(model);
        if ctl.crashed() {
            // The image was taken inside this commit: it may or may not be in it.
            return Ok(Outcome { states, acked, durable_floor, in_flight: true });
        }
        acked = states.len() - 1;
        if durable {
            durable_floor = acked;
        }
    }
    drop(reader);
    // Closing runs the final checkpoint (and WAL delete): crash points there too.
    drop(conn);
    Ok(Outcome { states, acked, durable_floor, in_flight: false })
}

/// Boots the crash image and checks it against the outcome.
fn check_image(image: MemFs, outcome: &Outcome) -> Result<usize, Box<dyn Error>> {
    let sim = Sim::new(Arc::new(image))?;
    let conn = sim.open(DB)?;
    let check = integrity(&conn)?;
    if check != "ok" {
        return Err(format!("integrity_check: {check}").into());
    }
    let j: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM txlog", [], |r| r.get(0))?;
    let logged = count(&conn, "txlog")?;
    let j = usize::try_from(j)?;
    if usize::try_from(logged)? != j {
        return Err(format!("txlog holds {logged} rows but its max id is {j}: not a prefix").into());
    }
    let upper = if outcome.in_flight { outcome.acked + 1 } else { outcome.acked };
    if j < outcome.durable_floor || j > upper {
        return Err(format!(
            "recovered commit {j}, expected {}..={upper} (acked {}, durable floor {})",
            outcome.durable_floor, outcome.acked, outcome.durable_floor
        )
        .into());
    }
    let mut stmt = conn.prepare("SELECT k, v FROM kv ORDER BY k")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    let found: Model = rows.collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    if outcome.states.get(j) != Some(&found) {
        return Err(format!("table content differs from the model after commit {j}").into());
    }
    // The recovered database takes new writes.
    conn.execute("INSERT INTO txlog(id) VALUES (?1)", params![j as i64 + 1000])?;
    Ok(j)
}

/// Counts of one crash loop.
#[derive(Debug, Default)]
struct LoopStats {
    seeds: u64,
    /// The crash image was taken before the workload ended.
    mid_run: usize,
    /// ... inside a commit.
    mid_commit: usize,
    /// The image held fewer commits than were acknowledged (lazily synced ones lost).
    lost_lazy: usize,
    failures: Vec<String>,
}

/// Runs `seeds` seeds; `faults` are set on the disk right after each seed's setup.
fn crash_loop(seeds: std::ops::Range<u64>, faults: Faults) -> Result<LoopStats, Box<dyn Error>> {
    let mut stats = LoopStats::default();
    for seed in seeds {
        stats.seeds += 1;
        let fs = disk()?;
        let ctl = Arc::new(CrashCtl {
            fs: fs.clone(),
            countdown: Mutex::new(None),
            image: Mutex::new(None),
            faults,
        });
        let wal = seed % 5 != 4;
        let sim = Sim::with_options(
            Arc::new(CrashFs { fs: fs.clone(), ctl: Arc::clone(&ctl) }),
            1_704_067_200_000,
            seed,
        )?;
        let mode = if wal { "wal" } else { "delete" };
        let outcome = match run_workload(seed, &sim, &ctl, wal) {
            Ok(outcome) => outcome,
            Err(e) => {
                stats.failures.push(format!("seed {seed} ({mode}): workload failed: {e}"));
                continue;
            }
        };
        stats.mid_run += usize::from(ctl.crashed());
        stats.mid_commit += usize::from(outcome.in_flight);
        let image = ctl.take_image();
        match check_image(image, &outcome) {
            Ok(j) if j < outcome.acked => stats.lost_lazy += 1,
            Ok(_) => {}
            Err(e) => stats.failures.push(format!("seed {seed} ({mode}): {e}")),
        }
    }
    Ok(stats)
}

#[test]
fn seeded_random_transactions_and_crashes() -> TestResult {
    let stats = crash_loop(0..200, Faults::default())?;
    eprintln!(
        "{} seeds: {} crashed mid-run ({} inside a transaction), {} recovered an older (lazily synced) \
         commit, {} failures",
        stats.seeds,
        stats.mid_run,
        stats.mid_commit,
        stats.lost_lazy,
        stats.failures.len()
    );
    assert!(stats.failures.is_empty(), "{:#?}", stats.failures);
    assert!(stats.mid_run >= 100 && stats.mid_commit >= 20, "crash points too late to prove much: {stats:?}");
    Ok(())
}

/// The loop must catch a disk whose file syncs lie: acknowledged FULL commits vanish.
#[test]
fn the_crash_loop_catches_lying_syncs() -> TestResult {
    let stats = crash_loop(0..40, Faults { lie_sync: true, ..Faults::default() })?;
    assert!(stats.failures.iter().any(|f| f.contains("expected")), "lying syncs went unnoticed: {stats:?}");
    Ok(())
}
