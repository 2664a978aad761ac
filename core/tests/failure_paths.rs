//! Failure paths leave nothing behind (issue 14, item 4), as a property over every IO call of
//! every operation: run the operation once to count the calls it makes, then for each call k
//! run it again on a fresh copy of the same workspace with call k failing (an EIO), and check
//!
//! * in the process, right after the failure: no operation in flight, no lease, no database
//!   marked busy, no reservation left in the ledger; the operation's answer is an error or a
//!   success, never a hang; if the failure was no fault of the workspace (a read, a rename
//!   before a commit…), the database still takes a write;
//! * after a reopen on the plain filesystem and one GC: the database passes
//!   `integrity_check`, the ledger agrees with the bytes on disk, `tmp/` is empty, no
//!   `.partial` file is left anywhere, nothing is left for a second GC, and the operation's
//!   source (an import's file) is untouched.
//!
//! The calls counted are every call the engine makes through its `Vfs` while the operation
//! runs: SQLite's own reads, writes and syncs (through the engine's SQLite VFS), the store's
//! plans, the versions copies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::store::Retention;
use sila_sqlite::versions::{ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use support::{FaultyFs, TempDir};

const APP: &str = "com.example.fp";
const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;
const OTHER_MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"other","maxSizeMB":4}],"tier":"basic"}}}"#;
/// [`MANIFEST`] and one more database.
const UPDATED_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8},{"name":"extra","maxSizeMB":4}],"tier":"standard"}}}"#;
/// An app of the base with a row in its database, for [`Op::Unregister`].
const GONE: &str = "com.example.gone";
/// Rows in the base database.
const ROWS: i64 = 30;

/// An operation under test.
#[derive(Debug, Clone, Copy)]
enum Op {
    Exec,
    Snapshot,
    DropSnapshot,
    Restore,
    Import,
    Export,
    Backup,
    Migrate,
    Retention,
    Gc,
    Register,
    UpdateApp,
    Unregister,
}

impl Op {
    const ALL: [Op; 13] = [
        Op::Exec,
        Op::Snapshot,
        Op::DropSnapshot,
        Op::Restore,
        Op::Import,
        Op::Export,
        Op::Backup,
        Op::Migrate,
        Op::Retention,
        Op::Gc,
        Op::Register,
        Op::UpdateApp,
        Op::Unregister,
    ];

    fn run(self, ws: &Workspace, db: &Database, base: &Path) -> sila_sqlite::Result<()> {
        let first_snapshot = || db.snapshots().map(|s| s[0].id);
        match self {
            Op::Exec => db.exec("INSERT INTO notes(body) VALUES ('exec')", &[]).map(drop),
            Op::Snapshot => db.snapshot("under test").map(drop),
            Op::DropSnapshot => db.drop_snapshot(first_snapshot()?),
            Op::Restore => db.restore(first_snapshot()?, RestoreOptions::default()).map(drop),
            Op::Import => db.import(&base.join("source.sqlite"), ImportOptions::default()).map(drop),
            Op::Export => db.export("nightly").map(drop),
            Op::Backup => db.backup(2).map(drop),
            Op::Migrate => {
                let plan = MigrationPlan {
                    current_version: 1,
                    steps: vec![MigrationStep {
                        from: 0,
                        to: 1,
                        up: "ALTER TABLE notes ADD COLUMN tag TEXT".into(),
                        down: "ALTER TABLE notes DROP COLUMN tag".into(),
                    }],
                };
                db.migrate(&plan, false).map(drop)
            }
            Op::Retention => db.apply_retention(Retention { keep_last: Some(0), max_age_ms: None }).map(drop),
            Op::Gc => ws.gc().map(drop),
            Op::Register => ws.register_app("com.example.other", OTHER_MANIFEST).map(drop),
            // Adds a database beside the open one (an addition retires nothing).
            Op::UpdateApp => ws.update_app(APP, UPDATED_MANIFEST).map(drop),
            Op::Unregister => ws.unregister_app(GONE).map(drop),
        }
    }
}

/// Builds the base workspace once: `main` with [`ROWS`] rows, a snapshot, a flip (a restore,
/// so there is garbage for GC), and an import source beside the workspace.
fn base(dir: &Path) {
    let ws = Workspace::open(dir.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    for i in 0..ROWS {
        db.exec("INSERT INTO notes(body) VALUES (?)", &[Value::Text(format!("note {i}"))]).unwrap();
    }
    ws.register_app(GONE, OTHER_MANIFEST).unwrap();
    let gone = ws.open_app(GONE).unwrap().open("other").unwrap();
    gone.exec("CREATE TABLE t (x)", &[]).unwrap();
    drop(gone);
    let snap = db.snapshot("base").unwrap();
    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    db.drop_snapshot(undo).unwrap();
    let source = rusqlite::Connection::open(dir.join("source.sqlite")).unwrap();
    source
        .execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
             INSERT INTO notes(body) VALUES ('imported'), ('imported too');",
        )
        .unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// Runs `op` on a fresh copy of the base with the `fail_at`-th call of the operation failing
/// (`None`: nothing fails); returns the calls the operation made, and checks every property
/// of the module doc.
fn trial(base_dir: &Path, work: &Path, op: Op, fail_at: Option<usize>) -> Vec<String> {
    let _ = std::fs::remove_dir_all(work);
    copy_tree(base_dir, work);
    let root = work.join("ws").canonicalize().unwrap();
    let source_before = std::fs::read(work.join("source.sqlite")).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let armed = Arc::new(AtomicBool::new(false));
    let (seen, on) = (calls.clone(), armed.clone());
    let vfs = Arc::new(FaultyFs::failing(move |call| {
        if !on.load(Ordering::SeqCst) {
            return false;
        }
        let mut seen = seen.lock().unwrap();
        seen.push(format!("{} {} @{}", call.op, call.path.display(), call.offset));
        Some(seen.len()) == fail_at
    }));
    let label = format!("{op:?} failing call {fail_at:?}");
    {
        let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
        let db = ws.open_app(APP).unwrap().open("main").unwrap();
        // Warm the connections so the operation's calls are its own.
        db.query_value("SELECT count(*) FROM notes", &[]).unwrap();
        armed.store(true, Ordering::SeqCst);
        let result = op.run(&ws, &db, work);
        armed.store(false, Ordering::SeqCst);
        if fail_at.is_none() {
            if let Err(e) = &result {
                panic!("{label}: the operation fails with nothing failing: {e}");
            }
        }
        let held = ws.with_store(|s| s.held());
        assert_eq!((held.ops, held.leases), (0, 0), "{label}: {held:?} after {result:?}");
        assert!(held.busy.is_empty(), "{label}: busy {held:?} after {result:?}");
        let ledger = ws.ledger(APP).unwrap();
        assert_eq!(ledger.in_flight_bytes, 0, "{label}: a reservation leaked after {result:?}");
        if result.is_err() && ws.fault().is_none() {
            // Not a fault of the workspace (a failed read, a step before a commit): the
            // database is as it was and takes writes.
            let write = db.exec("INSERT INTO notes(body) VALUES ('after')", &[]);
            assert!(
                write.is_ok() || write.as_ref().is_err_and(|e| e.code() == ErrorCode::Poisoned),
                "{label}: {write:?} after {result:?}"
            );
        }
    }
    // Reopen on the plain filesystem: recovery, then GC.
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    assert!(ws.recovery_report().damaged.is_empty(), "{label}: {:?}", ws.recovery_report().damaged);
    ws.gc().unwrap();
    let again = ws.gc().unwrap();
    assert!(again.files.is_empty(), "{label}: a second GC still found {:?}", again.files);
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    let ok = db.query_value("PRAGMA integrity_check", &[]).unwrap();
    assert_eq!(ok, Some(Value::Text("ok".into())), "{label}");
    let ledger = ws.ledger(APP).unwrap();
    assert_eq!((ledger.in_flight_bytes, ledger.garbage_bytes), (0, 0), "{label}: {ledger:?}");
    let mut files = Vec::new();
    files_under(&root, &mut files);
    let tmp: Vec<&PathBuf> = files.iter().filter(|p| p.parent() == Some(&root.join("tmp"))).collect();
    assert!(tmp.is_empty(), "{label}: tmp/ holds {tmp:?}");
    let partial: Vec<&PathBuf> = files.iter().filter(|p| p.to_string_lossy().ends_with(".partial")).collect();
    assert!(partial.is_empty(), "{label}: {partial:?}");
    let app_dir = root.join("apps").join(ws.app_info(APP).unwrap().app_uuid.hyphenated().to_string());
    let data: u64 = files
        .iter()
        .filter(|p| p.starts_with(app_dir.join("db")))
        .filter(|p| p.to_string_lossy().contains(".sqlite"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(ledger.live_bytes + ledger.snapshot_bytes, data, "{label}: ledger {ledger:?} vs disk");
    assert_eq!(std::fs::read(work.join("source.sqlite")).unwrap(), source_before, "{label}: source");
    let calls = calls.lock().unwrap().clone();
    calls
}

#[test]
fn every_failed_io_call_of_every_operation_leaves_nothing_behind() {
    let dir = TempDir::new("failure-paths");
    let base_dir = dir.0.join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    base(&base_dir);
    let work = dir.0.join("work");
    let mut trials = 0usize;
    for op in Op::ALL {
        let calls = trial(&base_dir, &work, op, None);
        assert!(!calls.is_empty(), "{op:?} made no IO call: the fault injection does not reach it");
        for k in 1..=calls.len() {
            trial(&base_dir, &work, op, Some(k));
            trials += 1;
        }
        println!("{op:?}: {} calls, each failed once", calls.len());
    }
    println!("{trials} trials");
}

/// A file on a disk that may be full: while `full` is set, every write fails with `ENOSPC`
/// (nothing written), as the kernel answers when no block is free.
struct FullDiskFile {
    inner: support::BoxFile,
    path: PathBuf,
    full: Arc<AtomicBool>,
}

impl sila_sqlite::vfs::VfsFile for FullDiskFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> sila_sqlite::vfs::VfsResult<usize> {
        if self.full.load(Ordering::SeqCst) {
            let kind = sila_sqlite::vfs::VfsErrorKind::NoSpace;
            return Err(sila_sqlite::vfs::VfsError::new(
                kind,
                "write",
                &self.path,
                "No space left on device",
            ));
        }
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> sila_sqlite::vfs::VfsResult<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> sila_sqlite::vfs::VfsResult<u64> {
        self.inner.len()
    }
    fn sync(&self) -> sila_sqlite::vfs::VfsResult<()> {
        self.inner.sync()
    }
}

/// A full disk gets `DISK_FULL` whether SQL or an operation meets it, distinct from the app's
/// own quota; it is no fault (nothing was written, nothing is lost), so the workspace keeps
/// going and the same requests succeed once there is room.
#[test]
fn a_full_disk_is_disk_full_for_sql_and_operations_alike_and_changes_nothing() {
    let dir = TempDir::new("disk-full");
    let base_dir = dir.0.join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    base(&base_dir);
    let root = base_dir.join("ws").canonicalize().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let flag = full.clone();
    let vfs = Arc::new(FaultyFs::wrapping(move |path, _mode, inner| {
        Box::new(FullDiskFile { inner, path: path.to_path_buf(), full: flag.clone() })
    }));
    let ws = Workspace::open_with(vfs, root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    let count = |db: &Database| db.query_value("SELECT count(*) FROM notes", &[]).unwrap();
    let before = count(&db);
    let snapshots = db.snapshots().unwrap().len();
    full.store(true, Ordering::SeqCst);
    let blob = Value::Blob(vec![7u8; 64 * 1024]);
    let sql = db.exec("INSERT INTO notes(body) VALUES (?)", std::slice::from_ref(&blob)).unwrap_err();
    assert_eq!(sql.code(), ErrorCode::DiskFull, "{sql}");
    assert!(sql.message().contains("full") && !sql.message().contains(&*dir.0.to_string_lossy()), "{sql}");
    let op = db.snapshot("no room").unwrap_err();
    assert_eq!(op.code(), ErrorCode::DiskFull, "{op}");
    assert!(ws.fault().is_none(), "a full disk is no fault: {:?}", ws.fault());
    assert_eq!(count(&db), before, "the refused write changed nothing");
    assert_eq!(db.snapshots().unwrap().len(), snapshots);
    full.store(false, Ordering::SeqCst);
    db.exec("INSERT INTO notes(body) VALUES (?)", &[blob]).unwrap();
    db.snapshot("room again").unwrap();
    let ok = db.query_value("PRAGMA integrity_check", &[]).unwrap();
    assert_eq!(ok, Some(Value::Text("ok".into())));
}

/// After a fault in one database's file, the whole workspace stops taking writes, the
/// database whose file failed stops answering reads, and every other database still answers
/// reads, including one never opened before the fault (its WAL is created for the read). The
/// next open in this process drops the cached pages of the file that failed, and writes again.
#[test]
fn after_a_fault_other_databases_still_answer_reads_and_nothing_takes_writes() {
    const TWO: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":8},{"name":"b","maxSizeMB":8},{"name":"c","maxSizeMB":8}],"tier":"premium"}}}"#;
    let dir = TempDir::new("fault-reads");
    let root = dir.0.join("ws");
    {
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        ws.register_app(APP, TWO).unwrap();
        for name in ["a", "b", "c"] {
            let db = ws.open_app(APP).unwrap().open(name).unwrap();
            db.exec("CREATE TABLE t (x)", &[]).unwrap();
            db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
        }
    }
    let root = root.canonicalize().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let on = armed.clone();
    // Once armed, every sync of `a`'s WAL fails.
    let a_dir = Arc::new(Mutex::new(PathBuf::new()));
    let a_dir_rule = a_dir.clone();
    let vfs = Arc::new(FaultyFs::failing(move |call| {
        on.load(Ordering::SeqCst)
            && call.op == "sync"
            && call.path.to_string_lossy().ends_with("-wal")
            && call.path.parent() == Some(a_dir_rule.lock().unwrap().as_path())
    }));
    let ws = Workspace::open_with(vfs, root, WorkspaceOptions::default()).unwrap();
    let app = ws.open_app(APP).unwrap();
    let (a, b) = (app.open("a").unwrap(), app.open("b").unwrap());
    let key = ws.db_key(APP, "a").unwrap();
    *a_dir.lock().unwrap() = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
    assert_eq!(b.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(1)));
    armed.store(true, Ordering::SeqCst);
    let e = a.exec("INSERT INTO t VALUES (2)", &[]).unwrap_err();
    assert!(matches!(e.code(), ErrorCode::Io | ErrorCode::Poisoned), "{e}");
    let fault = ws.fault().expect("the failed WAL sync is the workspace's fault");
    assert_eq!(fault.file, sila_sqlite::fault::FileKind::Wal);
    for db in [&a, &b] {
        let e = db.exec("INSERT INTO t VALUES (3)", &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
        assert!(e.message().contains("write-ahead log") && !e.message().contains('/'), "{e}");
    }
    let e = a.query_value("SELECT count(*) FROM t", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Poisoned, "reads of the database whose file failed stop: {e}");
    assert_eq!(b.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(1)));
    // A read whose sort spills to a temporary file still answers.
    let spill =
        "SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 30000) \
                 SELECT DISTINCT randomblob(200) FROM c)";
    assert_eq!(b.query_value(spill, &[]).unwrap(), Some(Value::Integer(30000)));
    let c = app.open("c").unwrap();
    assert_eq!(
        c.query_value("SELECT count(*) FROM t", &[]).unwrap(),
        Some(Value::Integer(1)),
        "never opened before"
    );
    assert_eq!(c.snapshot("no").unwrap_err().code(), ErrorCode::Poisoned);
    let a_wal: Vec<PathBuf> = {
        let dir = a_dir.lock().unwrap().clone();
        let mut wal: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
        wal.retain(|p| p.to_string_lossy().ends_with("-wal"));
        wal
    };
    let root = ws.root().to_path_buf();
    drop((a, b, c, app, ws));
    // The next open of the workspace in this process drops the cached pages of the file whose
    // sync failed before recovery reads it (the kernel may keep pages it could not write).
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let seen = dropped.clone();
    let vfs = Arc::new(FaultyFs::failing(move |call| {
        if call.op == "drop_cache" {
            seen.lock().unwrap().push(call.path.to_path_buf());
        }
        false
    }));
    let ws = Workspace::open_with(vfs, root, WorkspaceOptions::default()).unwrap();
    assert_eq!(*dropped.lock().unwrap(), a_wal, "the failed WAL's cache is dropped, and nothing else");
    let a = ws.open_app(APP).unwrap().open("a").unwrap();
    a.exec("INSERT INTO t VALUES (4)", &[]).unwrap();
}
