//! Snapshots, restores with their undo, retention: consistent under concurrent writes,
//! refused before any IO when over quota, cloned where the filesystem can.

use super::*;

#[test]
fn snapshot_and_restore_with_undo() {
    let (_d, ws, db) = setup("restore");
    insert(&db, 10);
    let snap = db.snapshot("ten notes").unwrap();
    assert_eq!(snap.label, "ten notes");
    assert!(snap.size > 0);
    insert(&db, 5);
    let listed = db.snapshots().unwrap();
    assert_eq!(listed, vec![snap.clone()]);
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let snap_file = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, snap.id));
    assert!(
        std::fs::metadata(&snap_file).unwrap().permissions().readonly(),
        "snapshots are read-only on disk"
    );

    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 10, "restored to the snapshot");
    db.exec("INSERT INTO notes(body) VALUES ('after restore')", &[]).unwrap();
    assert_eq!(count(&db), 11);
    // The undo snapshot reverses the restore.
    db.restore(undo, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 15);
    // Each replaced version became an undo snapshot, and the WAL SQLite removed as its last
    // connection closed is not counted: nothing is garbage.
    let before = ws.ledger("com.example.notes").unwrap();
    assert_eq!(before.garbage_bytes, 0, "{before:?}");
    let freed = ws.gc().unwrap();
    assert_eq!((freed.bytes, freed.files.len()), (0, 0), "{freed:?}");
    // A dropped snapshot is garbage; GC frees it and the ledger follows.
    db.drop_snapshot(snap.id).unwrap();
    let freed = ws.gc().unwrap();
    assert_eq!(freed.bytes, snap.size, "{freed:?}");
    let after = ws.ledger("com.example.notes").unwrap();
    assert_eq!(after.garbage_bytes, 0);
    assert_eq!(after.used_bytes(), before.used_bytes() - snap.size);
    assert_eq!(count(&db), 15, "GC never touches the live file");
}

/// Usage is current without a reopen or an operation: the ledger counts the live file and
/// its side files as they are on disk when it is read, as writes grow the WAL.
#[test]
fn ledger_follows_the_live_files_as_sqlite_changes_them() {
    let (_d, ws, db) = setup("ledger-live");
    let on_disk = |ws: &Workspace| -> u64 {
        let key = ws.db_key("com.example.notes", "main").unwrap();
        let dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().contains(".sqlite"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let before = ws.ledger("com.example.notes").unwrap();
    assert_eq!(before.live_bytes, on_disk(&ws), "{before:?}");
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         INSERT INTO notes(body) SELECT hex(randomblob(200)) FROM n",
        &[],
    )
    .unwrap();
    let after = ws.ledger("com.example.notes").unwrap();
    assert!(after.live_bytes > before.live_bytes + 200 * 400, "{before:?} -> {after:?}");
    assert_eq!(after.live_bytes, on_disk(&ws), "{after:?}");
    assert!(after.side_bytes > 0, "the WAL holds the new rows: {after:?}");
}

#[test]
fn restore_refusals_change_nothing() {
    let (_d, ws, db) = setup("restore-refuse");
    insert(&db, 3);
    let snap = db.snapshot("s").unwrap();
    db.drop_snapshot(snap.id).unwrap();
    ws.gc().unwrap();
    // Taken after the snapshot: a snapshot checkpoints the WAL into the live file.
    let before = db_files(&ws);
    let e = db.restore(sila_sqlite::uuid::Uuid::from_u128(42), RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "a dropped snapshot cannot be restored");
    ws.gc().unwrap();
    assert_eq!(db_files(&ws), before);
    assert_eq!(count(&db), 3);

    // A snapshot of another schema version needs the caller's consent.
    let snap = db.snapshot("v0").unwrap();
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep {
            from: 0,
            to: 1,
            up: "ALTER TABLE notes ADD COLUMN tag TEXT".into(),
            down: "".into(),
        }],
    };
    db.migrate(&plan, false).unwrap();
    let e = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("allow_schema_change"), "{e}");
    assert_eq!(db.schema_version().unwrap(), 1);
    db.restore(snap.id, RestoreOptions { allow_schema_change: true }).unwrap();
    assert_eq!(db.schema_version().unwrap(), 0);
}

#[test]
fn retention_drops_old_snapshots_and_gc_frees_them() {
    let (_d, ws, db) = setup("retention");
    insert(&db, 5);
    let a = db.snapshot("a").unwrap();
    let b = db.snapshot("b").unwrap();
    let c = db.snapshot("c").unwrap();
    let dropped = db.apply_retention(Retention { keep_last: Some(1), max_age_ms: None }).unwrap();
    assert_eq!(dropped, vec![a.id, b.id]);
    assert_eq!(db.snapshots().unwrap(), vec![c]);
    let freed = ws.gc().unwrap();
    assert_eq!(freed.bytes, a.size + b.size);
    assert!(db.apply_retention(Retention { keep_last: Some(1), max_age_ms: None }).unwrap().is_empty());
}

#[test]
fn snapshot_over_quota_is_refused_before_any_io() {
    let (_d, ws, db) = setup("snapquota");
    // maxSizeMB 2, storage factor 3: 6 MiB for the app. Fill the database near 2 MiB.
    db.exec("CREATE TABLE big (b BLOB)", &[]).unwrap();
    for _ in 0..9 {
        db.exec("INSERT INTO big VALUES (zeroblob(200000))", &[]).unwrap();
    }
    let mut taken = 0;
    let err = loop {
        match db.snapshot("fill") {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 10, "the quota never refused");
    };
    assert_eq!(err.code(), ErrorCode::QuotaExceeded, "{err}");
    let q = err.quota().unwrap();
    let ledger = ws.ledger("com.example.notes").unwrap();
    assert_eq!(q.limit_bytes, ledger.quota_bytes);
    assert_eq!(ledger.in_flight_bytes, 0, "the refusal reserved nothing");
    assert_eq!(db.snapshots().unwrap().len(), taken);
}

/// The ids in a snapshot file, read with plain rusqlite (no sila, no WAL): it must open as a
/// self-contained file and pass integrity_check.
fn snapshot_ids(ws: &Workspace, id: sila_sqlite::uuid::Uuid) -> Vec<i64> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let path = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, id));
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete", "a snapshot is a rollback-journal file");
    let mut stmt = conn.prepare("SELECT id FROM notes ORDER BY id").unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    drop(stmt);
    drop(conn);
    let mut wal = path.into_os_string();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "reading a snapshot leaves no WAL beside it");
    ids
}

#[test]
fn snapshots_under_concurrent_writes_are_consistent_prefixes() {
    // Room for the WAL the writer grows (up to the 4 MiB checkpoint threshold) at every
    // snapshot, however fast it runs (see the restore test below).
    let (_d, ws, db) = setup_with("snapshot-concurrent", ROOMY_MANIFEST);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for id in 1..=20_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                db.exec("INSERT INTO notes(id, body) VALUES (?1, 'x')", &[Value::Integer(id)]).unwrap();
                acked.store(id, Ordering::SeqCst);
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(15));
        let before = acked.load(Ordering::SeqCst);
        let snap = db.snapshot("live").unwrap();
        let after = acked.load(Ordering::SeqCst);
        taken.push((snap.id, before, after));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    for (id, before, after) in &taken {
        let ids = snapshot_ids(&ws, *id);
        let n = ids.len() as i64;
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "a snapshot holds a gap-free prefix of the commits");
        assert!(n >= *before && n <= *after + 1, "snapshot of {n} rows taken between {before} and {after}");
    }
    let m = db.stats().metrics;
    assert_eq!(
        m.snapshots_by_copy,
        taken.len() as u64,
        "with no reader behind, every snapshot is a file copy"
    );
    assert_eq!(m.snapshots_by_backup, 0);
    // The live database kept every write and is still whole.
    assert_eq!(count(&db), acked.load(Ordering::SeqCst));
}

#[test]
fn a_restore_keeps_the_replaced_file_as_its_undo_without_copying() {
    let (_d, ws, db) = setup("restore-adopt");
    insert(&db, 4);
    let snap = db.snapshot("four").unwrap();
    insert(&db, 3);
    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 4);
    // The undo is a self-contained, read-only rollback-journal file with the 7 rows.
    assert_eq!(snapshot_ids(&ws, undo), (1..=7).collect::<Vec<_>>());
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let undo_file = ws.root().join(sila_sqlite::store::layout::snapshot_file(key.app, &key.db, undo));
    assert!(std::fs::metadata(&undo_file).unwrap().permissions().readonly());
    // It was the replaced file, renamed: the database directory holds only the new live file.
    let db_dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
    let live: Vec<String> = std::fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let m = db.stats().metrics;
    assert_eq!((m.snapshots_by_copy, m.snapshots_by_backup), (2, 0), "one snapshot, one kept file");
    // Nothing was written during the restore: the undo's checksum was taken on a second
    // thread while the snapshot was copied, not by reading the file again after the flip.
    assert_eq!(m.undo_sums_while_copying, 1);
    // GC has nothing of the replaced version left to free but its side files, and the ledger
    // agrees with the disk.
    ws.gc().unwrap();
    let ledger = ws.ledger("com.example.notes").unwrap();
    assert_eq!(ledger.garbage_bytes, 0);
    let on_disk: u64 = db_files(&ws).iter().filter(|(n, _)| n.ends_with(".sqlite")).map(|(_, s)| s).sum();
    assert_eq!(ledger.live_bytes + ledger.snapshot_bytes, on_disk, "{ledger:?}");
    // Undoing the restore brings all 7 rows back; its own undo is the 4-row version.
    // (The restore verifies the undo's checksum on the bytes it copies: a wrong early
    // checksum would fail here as CORRUPT.)
    let redo = db.restore(undo, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 7);
    assert_eq!(snapshot_ids(&ws, redo), (1..=4).collect::<Vec<_>>());
    assert_eq!(db.stats().metrics.undo_sums_while_copying, 2);
}

#[test]
fn restores_under_concurrent_writes_lose_no_acknowledged_write_and_their_undos_verify() {
    // Each restore reserves room for the live file and its WAL, which the writer grows up to
    // the checkpoint threshold (4 MiB) however fast it runs: a 64 MiB database (192 MiB of
    // quota) leaves room for that at every restore on any machine.
    let (_d, ws, db) = setup_with("restore-concurrent", ROOMY_MANIFEST);
    insert(&db, 50);
    let base = db.snapshot("base").unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            // At most 20,000 rows (a few hundred KiB a copy): base, five undos and the live
            // file fit the app's 6 MiB however fast the writer is.
            for id in 1_000..=21_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                db.exec("INSERT INTO notes(id, body) VALUES (?1, 'w')", &[Value::Integer(id)]).unwrap();
                acked.store(id, Ordering::SeqCst);
            }
        })
    };
    let mut undos = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        undos.push(db.restore(base.id, RestoreOptions::default()).unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let last = acked.load(Ordering::SeqCst);
    // Every acknowledged write is in the live file or in one of the undo snapshots (a restore
    // replaces what was written before it, and its undo keeps that).
    let mut seen: std::collections::BTreeSet<i64> =
        snapshot_ids(&ws, base.id).into_iter().filter(|id| *id >= 1_000).collect();
    for undo in &undos {
        seen.extend(snapshot_ids(&ws, *undo).into_iter().filter(|id| *id >= 1_000));
    }
    let live = db.query("SELECT id FROM notes WHERE id >= 1000", &[]).unwrap();
    for row in live.rows {
        if let Some(Value::Integer(id)) = row.first() {
            seen.insert(*id);
        }
    }
    let missing: Vec<i64> = (1_000..=last).filter(|id| !seen.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // Each undo restores: its recorded checksum matches its bytes, whichever way it was taken.
    // Each restore's own undo is dropped and collected, so the space needed does not depend on
    // how many rows the writer got in (the machine's speed).
    for undo in undos {
        let redo = db.restore(undo, RestoreOptions::default()).unwrap();
        db.drop_snapshot(redo).unwrap();
        ws.gc().unwrap();
    }
}

/// Snapshot and restore on a filesystem with reflinks (XFS, Btrfs) clone instead of copying.
/// Set `SILA_REFLINK_DIR` to a directory on such a filesystem (`.ci/run` mounts an XFS image
/// when it can) to run it there; elsewhere the same calls must fall back to copies cleanly.
#[test]
fn snapshot_and_restore_clone_where_the_filesystem_can_and_copy_elsewhere() {
    let reflink_dir = std::env::var_os("SILA_REFLINK_DIR").map(PathBuf::from);
    let dir = match &reflink_dir {
        Some(d) => {
            let dir = d.join(format!("sila-reflink-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        None => TempDir::new("reflink"),
    };
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 20);
    let snap = db.snapshot("twenty").unwrap();
    insert(&db, 5);
    assert_eq!(snapshot_ids(&ws, snap.id), (1..=20).collect::<Vec<_>>());
    db.restore(snap.id, RestoreOptions::default()).unwrap();
    assert_eq!(count(&db), 20);
    db.exec("INSERT INTO notes(body) VALUES ('after')", &[]).unwrap();
    assert_eq!(snapshot_ids(&ws, snap.id), (1..=20).collect::<Vec<_>>(), "the clone's writes never reach it");
    let reflinks = db.stats().metrics.reflinks;
    match reflink_dir {
        Some(d) => assert_eq!(reflinks, 2, "snapshot and restore both cloned on {}", d.display()),
        None => println!("note: SILA_REFLINK_DIR unset; {reflinks} reflinks on the default temp dir"),
    }
}

/// The flip is a restore's commit point: when keeping the undo fails after it (here with a
/// non-IO error), the restore has taken effect though the caller got an error, so the
/// database must refuse work until a reopen instead of serving a state it reported failed.
#[test]
fn a_restore_whose_undo_fails_after_the_flip_poisons_the_database() {
    let dir = TempDir::new("restore-undo-fails");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    // Once armed, reads of a snapshot opened for writing (only a restore's adoption of the
    // replaced file as its undo does that) see a zeroed SQLite header.
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on = armed.clone();
    let vfs = std::sync::Arc::new(FaultyFs::wrapping(move |path, mode, file| {
        let in_snapshots = path.parent().and_then(Path::file_name).is_some_and(|d| d == "snapshots");
        if in_snapshots && mode == sila_sqlite::vfs::OpenMode::ReadWrite && on.load(Ordering::SeqCst) {
            // Reads see a zeroed SQLite header.
            return Box::new(support::AfterRead(file, |buf: &mut [u8], offset: u64, n: usize| {
                for (i, byte) in buf.iter_mut().take(n).enumerate() {
                    if offset + (i as u64) < 16 {
                        *byte = 0;
                    }
                }
            }));
        }
        file
    }));
    let ws = Workspace::open_with(vfs.clone(), root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 4);
    let snap = db.snapshot("four").unwrap();
    insert(&db, 3);
    armed.store(true, Ordering::SeqCst);
    let err = db.restore(snap.id, RestoreOptions::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Corrupt, "{err}");
    let refused = db.query("SELECT count(*) FROM notes", &[]).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Poisoned, "{refused}");
    assert!(err.message().contains("took effect"), "{err}");
    assert_eq!(db.exec("INSERT INTO notes(body) VALUES ('x')", &[]).unwrap_err().code(), ErrorCode::Poisoned);
    // The store knows too: it refuses the database's plans, and its health says why.
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let health = ws.with_store(|s| s.health(&key)).unwrap();
    assert!(
        matches!(&health, sila_sqlite::store::Health::Poisoned(why) if why.contains("took effect")),
        "{health:?}"
    );
    drop(db);
    drop(ws);
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    assert_eq!(count(&db), 4, "the restore took effect at its flip");
}
