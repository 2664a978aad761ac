//! An export or backup reported done survives a power cut, even when the operation created
//! the directory it lives in (on the simulated disk, where an unsynced directory entry is
//! lost at a crash with everything below it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::vfs::Vfs;
use sila_sqlite::{Value, Workspace, WorkspaceOptions};
use sila_sqlite_sim::memfs::MemFs;
use sila_sqlite_sim::world::SimClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":16}],"tier":"standard"}}}"#;

const ROWS: i64 = 500;

/// Opens the bytes a crashed disk kept at `path` with stock SQLite (from a real temporary
/// file) and returns (integrity_check, row count of `t`).
fn check_copy(fs: &MemFs, path: &Path, scratch: &Path) -> (String, i64) {
    let bytes = fs.read(path).unwrap_or_else(|| panic!("{} is gone after the crash", path.display()));
    std::fs::write(scratch, &bytes).unwrap();
    let conn =
        rusqlite::Connection::open_with_flags(scratch, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    (ok, n)
}

#[test]
fn an_export_and_a_backup_reported_done_survive_a_power_cut() {
    let fs = MemFs::new();
    fs.create_dir(Path::new("/ws")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let (export, backup) = {
        let options = WorkspaceOptions {
            uuid_seed: Some(5),
            clock: Arc::new(SimClock::default()),
            executor: Some(Arc::new(Stepper::new(64)) as Arc<dyn Executor>),
            ..WorkspaceOptions::default()
        };
        let ws = Workspace::open_with(vfs, PathBuf::from("/ws"), options).unwrap();
        ws.register_app("com.example.crash", MANIFEST).unwrap();
        let db = ws.open_app("com.example.crash").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
        db.transaction(|tx| {
            for i in 0..ROWS {
                tx.exec("INSERT INTO t VALUES (?)", &[Value::Integer(i)])?;
            }
            Ok(())
        })
        .unwrap();
        // The first export and the first backup create their directories.
        let export = db.export("nightly").unwrap();
        let (_, backup) = db.backup(3).unwrap();
        (export, backup)
    };
    // Power cut right after both calls returned: only what was synced is left.
    fs.crash();
    let scratch = std::env::temp_dir().join(format!("sila-sim-export-crash-{}.sqlite", std::process::id()));
    for path in [&export, &backup] {
        let (ok, n) = check_copy(&fs, path, &scratch);
        assert_eq!((ok.as_str(), n), ("ok", ROWS), "{}", path.display());
    }
    let _ = std::fs::remove_file(&scratch);
}
