//! A host that stops in the middle of an export (the CLI on Ctrl-C): `abandon_partials`
//! leaves no temporary beside the destination, the export fails, and none starts after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::{ErrorCode, Workspace, WorkspaceOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use support::{FaultyFs, TempDir};

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;

#[test]
fn an_abandoned_export_leaves_no_file_and_no_later_one_starts() {
    let dir = TempDir::new("interrupt");
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The host "stops" when the export syncs its temporary: the file is there, whole, and
    // not yet renamed into place.
    let ws_slot: Arc<OnceLock<Workspace>> = Arc::new(OnceLock::new());
    let removed = Arc::new(AtomicUsize::new(usize::MAX));
    let (slot, seen) = (ws_slot.clone(), removed.clone());
    let vfs = Arc::new(FaultyFs::failing(move |call| {
        let partial = call.path.to_string_lossy().ends_with(".partial");
        if call.op == "sync" && partial && seen.load(Ordering::SeqCst) == usize::MAX {
            seen.store(0, Ordering::SeqCst);
            if let Some(ws) = slot.get() {
                seen.store(ws.abandon_partials(), Ordering::SeqCst);
            }
        }
        false
    }));
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let ws = Workspace::open_with(vfs, root.canonicalize().unwrap(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.x", MANIFEST).unwrap();
    let db = ws.open_app("com.example.x").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (x)", &[]).unwrap();
    db.exec("INSERT INTO t VALUES (randomblob(10000))", &[]).unwrap();
    ws_slot.set(ws.clone()).ok().unwrap();

    let dest = out.join("copy.sqlite");
    let err = db.export_to_path(&dest).unwrap_err();
    assert_eq!(removed.load(Ordering::SeqCst), 1, "the temporary was removed while written");
    assert_ne!(err.code(), ErrorCode::Internal, "{err}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // Nothing starts after: no temporary is even created.
    let err = db.export_to_path(&dest).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    // Reads and writes go on; the workspace is not harmed.
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
}
