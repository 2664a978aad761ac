//! A restore makes its undo snapshot after the flip, so it must find room for it before:
//! with SNAPSHOTS_MAX snapshots listed, a restore is refused up front and changes nothing
//! (on the simulated disk, where a thousand snapshots take no real fsyncs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::store::record::SNAPSHOTS_MAX;
use sila_sqlite::versions::RestoreOptions;
use sila_sqlite::vfs::Vfs;
use sila_sqlite::{ErrorCode, Value, Workspace, WorkspaceOptions};
use sila_sqlite_sim::memfs::MemFs;
use sila_sqlite_sim::world::SimClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":16}],"tier":"standard"}}}"#;

#[test]
fn a_restore_without_room_for_its_undo_is_refused_before_it_flips() {
    let fs = MemFs::new();
    fs.create_dir(Path::new("/ws")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    {
        let options = WorkspaceOptions {
            uuid_seed: Some(3),
            clock: Arc::new(SimClock::default()),
            executor: Some(Arc::new(Stepper::new(64)) as Arc<dyn Executor>),
            ..WorkspaceOptions::default()
        };
        let ws = Workspace::open_with(vfs, PathBuf::from("/ws"), options).unwrap();
        ws.register_app("com.example.room", MANIFEST).unwrap();
        let db = ws.open_app("com.example.room").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE t (x INTEGER)", &[]).unwrap();
        let first = db.snapshot("empty").unwrap();
        for _ in 1..SNAPSHOTS_MAX {
            db.snapshot("filler").unwrap();
        }
        db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
        let e = db.snapshot("one too many").unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        let e = db.restore(first.id, RestoreOptions::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        assert!(e.message().contains("SNAPSHOTS_MAX"), "{e}");
        // Nothing changed, and the database still works.
        assert_eq!(db.snapshots().unwrap().len(), SNAPSHOTS_MAX);
        assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(1)));
        db.exec("INSERT INTO t VALUES (2)", &[]).unwrap();
        // With one snapshot dropped there is room again.
        db.drop_snapshot(first.id).unwrap();
        let other = db.snapshots().unwrap()[0].id;
        db.restore(other, RestoreOptions::default()).unwrap();
        assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(0)));
    }
}
