//! Exports and backups: standalone whole files at any failure or crash, temporaries GC
//! removes, backup retention, destinations outside the workspace.

use super::*;

#[test]
fn export_and_backup_make_standalone_files() {
    let (dir, ws, db) = setup("export");
    insert(&db, 7);
    let dest = dir.0.join("out.sqlite");
    db.export_to_path(&dest).unwrap();
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 7);
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(db.export_to_path(&dest).unwrap_err().code(), ErrorCode::AlreadyExists);
    // Apps export only into their own area, by name.
    let path = db.export("monthly").unwrap();
    let key = ws.db_key("com.example.notes", "main").unwrap();
    assert!(path.starts_with(ws.root().join(sila_sqlite::store::layout::app_dir(key.app))));
    assert_eq!(db.export("../../etc/x").unwrap_err().code(), ErrorCode::InvalidName);
    assert_eq!(db.export("/tmp/x").unwrap_err().code(), ErrorCode::InvalidName);
    // Backups keep the newest N.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(db.backup(2).unwrap());
    }
    let backup_dir = ids[3].1.parent().unwrap().to_path_buf();
    let left = std::fs::read_dir(&backup_dir).unwrap().count();
    assert_eq!(left, 2);
    assert!(ids[3].1.exists() && ids[2].1.exists() && !ids[0].1.exists());
}

#[test]
fn compressed_exports_and_backups_open_after_gunzip_and_import_as_they_are() {
    use sila_sqlite::versions::ExportFormat;
    let (dir, _ws, db) = setup("gzip");
    insert(&db, 50);
    let path = db.export_as("mine", ExportFormat::SqliteGzip).unwrap();
    assert!(path.to_string_lossy().ends_with("/exports/mine.sqlite.gz"), "{}", path.display());
    let plain = gunzip(&path);
    assert!(plain.len() as u64 > std::fs::metadata(&path).unwrap().len(), "it is compressed");
    let unpacked = dir.0.join("unpacked.sqlite");
    std::fs::write(&unpacked, &plain).unwrap();
    let conn = rusqlite::Connection::open(&unpacked).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!((ok.as_str(), n), ("ok", 50));
    drop(conn);
    let exports = path.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["mine.sqlite.gz".to_string()], "no partial file is left behind");

    // Import takes the compressed file as it is.
    insert(&db, 5);
    let report = db.import(&path, ImportOptions::default()).unwrap();
    assert_eq!(report.checks.first(), Some(&"gzip"));
    assert_eq!(count(&db), 50);

    // Backups: the newest `keep_last` are kept, compressed or not.
    for _ in 0..3 {
        db.backup_as(2, ExportFormat::SqliteGzip).unwrap();
    }
    let (_, last) = db.backup(2).unwrap();
    let backups: Vec<String> = std::fs::read_dir(last.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert_eq!(backups.iter().filter(|n| n.ends_with(".sqlite.gz")).count(), 1, "{backups:?}");
}

/// Whether a path lies in an export area or the backup area.
fn in_export_or_backup_area(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "exports" || c.as_os_str() == "backups")
}

/// The files of the export area and the backup area.
fn export_and_backup_files(ws: &Workspace) -> Vec<PathBuf> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let mut out = files_below(&ws.root().join(sila_sqlite::store::layout::exports_dir(key.app)));
    out.extend(files_below(&ws.root().join("backups")));
    out
}

/// Asserts that an export or backup file is a complete database of `notes` rows.
fn assert_complete(path: &Path, notes: i64) {
    let plain = if path.to_string_lossy().ends_with(".gz") {
        let unpacked = path.with_extension("check");
        std::fs::write(&unpacked, gunzip(path)).unwrap();
        unpacked
    } else {
        path.to_path_buf()
    };
    let read = || -> rusqlite::Result<(String, i64)> {
        let conn = rusqlite::Connection::open_with_flags(&plain, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let n: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?;
        Ok((ok, n))
    };
    let len = std::fs::metadata(path).unwrap().len();
    match read() {
        Ok((ok, n)) => assert_eq!((ok.as_str(), n), ("ok", notes), "{} is complete", path.display()),
        Err(e) => panic!("{} ({len} bytes) is not a complete database: {e}", path.display()),
    }
    if plain != path {
        std::fs::remove_file(plain).unwrap();
    }
}

/// Runs `op` (an export or a backup) once per call it makes into the export and backup areas,
/// failing that call, or with `crash`, that call and every later one (as a machine that stops
/// there: no cleanup reaches the disk). Then it reopens the workspace on the real filesystem
/// and checks what is left: every file under a final name is complete, and GC removes every
/// temporary and reports it. With `strict`, a failed `op` must have left no file at all.
fn check_every_fault_point(
    name: &str,
    crash: bool,
    strict: bool,
    op: impl Fn(&Database) -> sila_sqlite::Result<PathBuf>,
) {
    const NOTES: i64 = 40;
    let dir = TempDir::new(name);
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    {
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        ws.register_app("com.example.notes", MANIFEST).unwrap();
        let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
        insert(&db, NOTES);
    }
    for fault_at in 1..200usize {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, on) = (calls.clone(), armed.clone());
        let rule = move |call: &Call<'_>| {
            // Recovery's scan on open lists the export area too; only the operation counts.
            if !on.load(Ordering::SeqCst) || !in_export_or_backup_area(call.path) {
                return false;
            }
            let mut seen = seen.lock().unwrap();
            seen.push(format!("{} {} @{}", call.op, call.path.display(), call.offset));
            seen.len() == fault_at || (crash && seen.len() > fault_at)
        };
        let vfs = std::sync::Arc::new(FaultyFs::failing(rule));
        let result = {
            let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
            let before = export_and_backup_files(&ws);
            let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
            armed.store(true, Ordering::SeqCst);
            let result = op(&db);
            armed.store(false, Ordering::SeqCst);
            if strict && result.is_err() {
                assert_eq!(
                    export_and_backup_files(&ws),
                    before,
                    "a failed operation leaves nothing (fault at {fault_at})"
                );
            }
            result
        };
        let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
        let (partials, complete): (Vec<PathBuf>, Vec<PathBuf>) =
            export_and_backup_files(&ws).into_iter().partition(|p| is_partial(p));
        for path in &complete {
            assert_complete(path, NOTES);
        }
        let freed = ws.gc().unwrap();
        let freed_partials: Vec<PathBuf> =
            freed.files.iter().filter(|p| is_partial(p)).map(|p| ws.root().join(p)).collect();
        let mut sorted = freed_partials.clone();
        sorted.sort();
        assert_eq!(sorted, partials, "GC removes and reports every temporary (fault at {fault_at})");
        assert!(export_and_backup_files(&ws).iter().all(|p| !is_partial(p)));
        let calls = calls.lock().unwrap();
        if let Ok(path) = &result {
            assert!(complete.contains(path), "{}", path.display());
            let Some(faulted) = calls.get(fault_at - 1) else { return };
            // Only the best-effort removal of a temporary may fail unseen (GC removed it).
            assert!(faulted.starts_with("remove_file") && faulted.contains(".partial"), "{calls:#?}");
        }
        // The next run exports anew under the same name (a crash after the rename may have
        // left the complete file).
        for path in complete.iter().filter(|p| p.to_string_lossy().contains("/exports/")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    panic!("{name}: the operation never completed");
}

#[test]
fn an_export_failing_at_any_step_leaves_no_file_behind() {
    use sila_sqlite::versions::ExportFormat;
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        check_every_fault_point("export-fault", false, true, |db| db.export_as("faulty", format));
    }
}

/// Without the temporary name, a crash left a truncated file under the final name (and a
/// truncated newest backup could push a good one out of retention).
#[test]
fn a_crash_at_any_step_of_an_export_or_backup_leaves_only_complete_files_and_gc_removes_the_rest() {
    use sila_sqlite::versions::ExportFormat;
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        check_every_fault_point("export-crash", true, false, |db| db.export_as("crashed", format));
        check_every_fault_point("backup-crash", true, false, |db| db.backup_as(2, format).map(|(_, p)| p));
    }
}

#[test]
fn gc_removes_leftover_temporaries_of_exports_and_backups_and_nothing_else() {
    use sila_sqlite::versions::ExportFormat;
    let (_d, ws, db) = setup("partial-leftovers");
    insert(&db, 5);
    let export = db.export_as("monthly", ExportFormat::SqliteGzip).unwrap();
    let refused = db.export_as("monthly", ExportFormat::SqliteGzip).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::AlreadyExists, "{refused}");
    assert_eq!(export_and_backup_files(&ws), vec![export.clone()], "a refused export creates nothing");
    let (_, backup) = db.backup(1).unwrap();
    let exports = export.parent().unwrap();
    let backups = backup.parent().unwrap();
    // What a crash leaves: temporaries of both areas, and a journal SQLite kept beside one.
    let id = "01890000-0000-7000-8000-000000000000";
    let leftovers = [
        exports.join(format!("monthly.sqlite.gz.{id}.partial")),
        exports.join(format!("weekly.sqlite.{id}.partial")),
        exports.join(format!("weekly.sqlite.{id}.partial-journal")),
        backups.join(format!("{id}.sqlite.{id}.partial")),
    ];
    for (i, path) in leftovers.iter().enumerate() {
        std::fs::write(path, vec![7u8; 100 * (i + 1)]).unwrap();
    }
    // Retention counts complete backups only: the temporary neither counts nor is dropped.
    let (_, newest) = db.backup(1).unwrap();
    assert!(!backup.exists() && newest.exists() && leftovers[3].exists());
    let complete: Vec<(PathBuf, Vec<u8>)> = [export.clone(), newest.clone()]
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();

    let freed = ws.gc().unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} is removed", path.display());
        assert!(freed.files.contains(&path.strip_prefix(ws.root()).unwrap().to_path_buf()), "{freed:?}");
    }
    assert!(freed.bytes >= 1000, "{freed:?}");
    for (path, bytes) in &complete {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} is untouched", path.display());
    }
    assert_eq!(export_and_backup_files(&ws), vec![export, newest]);
    assert_eq!(ws.gc().unwrap().files, Vec::<PathBuf>::new(), "nothing left to free");
}

/// The destination is checked before the copy; a file that appears at it while the export is
/// written (another process, an operator) is not overwritten: the rename refuses it.
#[test]
fn an_export_never_overwrites_a_file_that_appeared_while_it_was_written() {
    use sila_sqlite::versions::ExportFormat;
    let dir = TempDir::new("export-race");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for format in [ExportFormat::Sqlite, ExportFormat::SqliteGzip] {
        let dest = out.join(format!("race{}", format.suffix()));
        let theirs = dest.clone();
        // Opening the export's temporary (it is, to sync it, after the copy) makes someone
        // else's file appear under the final name.
        let vfs = std::sync::Arc::new(FaultyFs::wrapping(move |path, _mode, file| {
            if is_partial(path) && path.parent() == theirs.parent() && !theirs.exists() {
                std::fs::write(&theirs, b"someone else's file").unwrap();
            }
            file
        }));
        let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
        if ws.open_app("com.example.notes").is_err() {
            ws.register_app("com.example.notes", MANIFEST).unwrap();
        }
        let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
        insert(&db, 2);
        let e = db.export_to_path_as(&dest, format).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyExists, "{format:?}: {e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's file", "{format:?}: not overwritten");
        let left: Vec<_> = files_below(&out).into_iter().filter(|p| is_partial(p)).collect();
        assert!(left.is_empty(), "{format:?}: temporaries left: {left:?}");
        // Not an IO failure of the workspace: the database goes on.
        insert(&db, 1);
    }
}

/// A failed sync of an export's file in a directory the host named outside the workspace
/// (a failing USB stick, say) fails the export, and nothing else: the workspace's files are
/// not the ones that failed, so the database goes on taking writes without a reopen.
#[test]
fn a_failed_sync_outside_the_workspace_fails_the_export_only() {
    let dir = TempDir::new("export-outside-sync");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.canonicalize().unwrap();
    let failing = out.clone();
    let vfs = std::sync::Arc::new(FaultyFs::failing(move |call| {
        call.op == "sync" && call.path.parent() == Some(failing.as_path())
    }));
    let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 2);
    let e = db.export_to_path(&out.join("x.sqlite")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    assert!(files_below(&out).is_empty(), "nothing is left in the host's directory");
    insert(&db, 1);
    assert_eq!(count(&db), 3);
    // An export into the workspace's own area still works.
    db.export("inside").unwrap();
}

/// A wall clock the test sets (deadlines keep the process's monotonic time).
struct SetClock(std::sync::atomic::AtomicU64);

impl sila_sqlite::clock::Clock for SetClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Backup retention keeps the newest backups in the order they were made, even when they are
/// made in the same millisecond (UUID v7 names then sorted by their random bits) or the
/// clock steps back; and the backup just made is never the one retention removes.
#[test]
fn backup_retention_follows_the_order_of_making_whatever_the_clock_does() {
    let dir = TempDir::new("backup-clock");
    let root = dir.0.join("ws");
    let t0 = 1_800_000_000_000u64;
    let open = |at: u64| {
        let clock = std::sync::Arc::new(SetClock(std::sync::atomic::AtomicU64::new(at)));
        let options = WorkspaceOptions { clock: clock.clone(), ..WorkspaceOptions::default() };
        (Workspace::open(&root, options).unwrap(), clock)
    };
    let (ws, clock) = open(t0);
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    // Ten backups in one millisecond, then ten after the clock stepped back a day; keep 3.
    let mut made = Vec::new();
    for i in 0..20 {
        if i == 10 {
            clock.0.store(t0 - 86_400_000, Ordering::SeqCst);
        }
        insert(&db, 1);
        let (_, path) = db.backup(3).unwrap();
        assert!(path.exists(), "backup {i} exists when it is returned");
        made.push(path);
    }
    let kept = |dir: &Path| -> Vec<PathBuf> { files_below(dir) };
    let backups = made[0].parent().unwrap().to_path_buf();
    assert_eq!(kept(&backups), made[17..].to_vec(), "the three made last");
    assert_complete(&made[19], 20);
    drop(db);
    drop(ws);
    // A restart with the clock a week back: the new backup's name sorts before the others.
    let (ws, _clock) = open(t0 - 7 * 86_400_000);
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    let (_, path) = db.backup(1).unwrap();
    assert_eq!(kept(&backups), vec![path.clone()], "keep_last 1 keeps the backup just made");
    assert_complete(&path, 20);
}

/// An export to a host path that a crash cut short leaves its temporary beside the
/// destination, where GC never looks; the next export to that destination removes it, and
/// nothing else in the directory.
#[test]
fn an_export_to_a_host_path_removes_the_leftovers_of_an_earlier_one_to_the_same_name() {
    let (dir, _ws, db) = setup("host-leftovers");
    insert(&db, 3);
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let dest = out.join("nightly.sqlite");
    let id = "01890000-0000-7000-8000-000000000000";
    let leftovers = [
        out.join(format!("nightly.sqlite.{id}.partial")),
        out.join(format!("nightly.sqlite.{id}.partial-journal")),
    ];
    let others = [
        out.join(format!("weekly.sqlite.{id}.partial")),
        out.join(format!("nightly.sqlite.gz.{id}.partial")),
        out.join("nightly.sqlite.notes.partial"),
        out.join("notes.txt"),
    ];
    for path in leftovers.iter().chain(&others) {
        std::fs::write(path, b"left behind").unwrap();
    }
    db.export_to_path(&dest).unwrap();
    assert_complete(&dest, 3);
    let mut expected: Vec<PathBuf> = others.to_vec();
    expected.push(dest.clone());
    expected.sort();
    assert_eq!(files_below(&out), expected, "only the leftovers of nightly.sqlite are gone");
}
