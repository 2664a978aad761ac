//! Imports: every check named when it refuses, compressed sources and their size cap, a
//! source that cannot be read. A refused import changes nothing.

use super::*;

#[test]
fn import_accepts_a_good_file_and_names_the_failed_check_otherwise() {
    let (dir, ws, db) = setup("import");
    insert(&db, 2);
    let good = dir.0.join("good.sqlite");
    make_sqlite(&good, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('imported');");
    let before_source = std::fs::read(&good).unwrap();

    type Case = (&'static str, Box<dyn Fn(&Path)>, ErrorCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            "random",
            Box::new(|p: &Path| std::fs::write(p, vec![0x5a; 8192]).unwrap()),
            ErrorCode::Corrupt,
            "header",
        ),
        (
            "truncated",
            Box::new(|p: &Path| {
                let bytes = std::fs::read(p.with_file_name("good.sqlite")).unwrap();
                std::fs::write(p, &bytes[..bytes.len() - 100]).unwrap();
            }),
            ErrorCode::Corrupt,
            "page_size",
        ),
        (
            "corrupt-page",
            Box::new(|p: &Path| {
                let mut bytes = std::fs::read(p.with_file_name("good.sqlite")).unwrap();
                // Trash the b-tree page of the table (page 2).
                for b in &mut bytes[4096..4096 + 64] {
                    *b = 0xff;
                }
                std::fs::write(p, bytes).unwrap();
            }),
            ErrorCode::Corrupt,
            "integrity_check",
        ),
        (
            "malicious",
            Box::new(|p: &Path| {
                make_sqlite(
                    p,
                    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
                     CREATE TRIGGER evil AFTER INSERT ON notes BEGIN SELECT load_extension('/tmp/x.so'); END;",
                )
            }),
            ErrorCode::PolicyDenied,
            "schema",
        ),
        (
            "wal-without-checkpoint",
            Box::new(|p: &Path| {
                let conn = rusqlite::Connection::open(p).unwrap();
                conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE notes(x); INSERT INTO notes VALUES (1);").unwrap();
                // Copy the files while the WAL still holds the commits.
                let copy = p.with_extension("copy");
                std::fs::copy(p, &copy).unwrap();
                let mut wal = p.as_os_str().to_os_string();
                wal.push("-wal");
                let mut wal_copy = copy.as_os_str().to_os_string();
                wal_copy.push("-wal");
                std::fs::copy(&wal, &wal_copy).unwrap();
                drop(conn);
                std::fs::rename(&copy, p).unwrap();
                std::fs::rename(&wal_copy, &wal).unwrap();
            }),
            ErrorCode::InvalidArgument,
            "wal",
        ),
        (
            "big",
            Box::new(|p: &Path| {
                make_sqlite(p, "CREATE TABLE notes(x); INSERT INTO notes VALUES (zeroblob(3000000));")
            }),
            ErrorCode::QuotaExceeded,
            "",
        ),
    ];
    for (name, make, code, check) in cases {
        let path = dir.0.join(format!("{name}.sqlite"));
        make(&path);
        let before = db_files(&ws);
        let e = db.import(&path, ImportOptions::default()).unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e}");
        assert!(e.message().contains(&format!("'{check}'")) || check.is_empty(), "{name}: {e}");
        assert_eq!(db_files(&ws), before, "{name}: the refusal changed the database directory");
        assert_eq!(count(&db), 2, "{name}");
    }
    let e = db.import(&dir.0.join("missing.sqlite"), ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = db.import(&good, ImportOptions { expected_tables: vec!["users".into()] }).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("'expected_schema'"), "{e}");

    let report = db.import(&good, ImportOptions { expected_tables: vec!["notes".into()] }).unwrap();
    assert!(report.checks.contains(&"integrity_check") && report.checks.contains(&"journal_mode"));
    assert_eq!(db.query_value("SELECT body FROM notes", &[]).unwrap(), Some(Value::Text("imported".into())));
    assert_eq!(std::fs::read(&good).unwrap(), before_source, "the source file is never modified");
    db.exec("INSERT INTO notes(body) VALUES ('writable')", &[]).unwrap();
    assert_eq!(db.query_value("PRAGMA journal_mode", &[]).unwrap(), Some(Value::Text("wal".into())));

    // The import kept what it replaced: restoring its undo snapshot brings the two rows back.
    let undo = db.snapshots().unwrap().into_iter().find(|s| s.id == report.undo).unwrap();
    assert!(undo.label.starts_with("undo of import of"), "{}", undo.label);
    db.restore(report.undo, RestoreOptions { allow_schema_change: true }).unwrap();
    assert_eq!(count(&db), 2, "the undo snapshot holds the data the import replaced");
}

#[test]
fn a_damaged_or_oversized_compressed_import_changes_nothing() {
    use sila_sqlite::versions::ExportFormat;
    let (dir, ws, db) = setup("gzip-bad");
    insert(&db, 3);
    let good = std::fs::read(db.export_as("good", ExportFormat::SqliteGzip).unwrap()).unwrap();
    let before = db_files(&ws);

    let truncated = dir.0.join("truncated.sqlite.gz");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let e = db.import(&truncated, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.message().contains("'gzip'"), "{e}");

    // 3 MiB of zeros compress to a few KiB; the database allows 2 MiB.
    let bomb = dir.0.join("bomb.sqlite.gz");
    std::fs::write(&bomb, gzip(&vec![0u8; 3 << 20])).unwrap();
    let e = db.import(&bomb, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");

    // Compressed garbage passes gzip and fails the SQLite header check.
    let junk = dir.0.join("junk.sqlite.gz");
    std::fs::write(&junk, gzip(&[0x5a; 8192])).unwrap();
    let e = db.import(&junk, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.message().contains("'header'"), "{e}");

    ws.gc().unwrap();
    assert_eq!(db_files(&ws), before);
    assert_eq!(count(&db), 3);
}

/// A source that cannot be read is the filesystem's failure (`IO`), not a damaged file: only
/// bad gzip data is `CORRUPT` naming the 'gzip' check (see
/// `a_damaged_or_oversized_compressed_import_changes_nothing`). And it is the caller's file
/// that failed, not the workspace's: the database is not poisoned, keeps serving reads and
/// writes at once, and is exactly as before.
#[test]
fn a_read_error_in_an_import_source_is_io_and_leaves_the_database_serving() {
    let dir = TempDir::new("source-unreadable");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    // Noise compresses badly: the decoder must read well past its first buffer to finish.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let compressed = dir.0.join("unreadable.sqlite.gz");
    std::fs::write(&compressed, gzip(&noise)).unwrap();
    let compressed_len = std::fs::metadata(&compressed).unwrap().len();
    assert!(compressed_len > 128 * 1024, "{compressed_len}");
    // A valid database larger than one copy chunk (1 MiB), so the copy reads it in several
    // calls, and under the manifest's 2 MB cap.
    let plain = dir.0.join("unreadable.sqlite");
    make_sqlite(
        &plain,
        "PRAGMA page_size=4096; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3500) \
         INSERT INTO notes(body) SELECT hex(randomblob(200)) FROM n;",
    );
    let plain_len = std::fs::metadata(&plain).unwrap().len();
    assert!(plain_len > 1024 * 1024 && plain_len < 2_000_000, "{plain_len}");
    let (gz, pl) = (compressed.clone(), plain.clone());
    // The first bytes (the magic) and the gzip size trailer read fine; the bodies do not.
    let rule = move |call: &Call<'_>| {
        call.op == "read"
            && ((call.path == gz && call.offset > 0 && call.offset + 4 < compressed_len)
                || (call.path == pl && call.offset > 0))
    };
    let vfs = std::sync::Arc::new(FaultyFs::failing(rule));
    let ws = Workspace::open_with(vfs, root.clone(), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    insert(&db, 3);
    for (source, what) in [(&compressed, "compressed"), (&plain, "plain")] {
        let e = db.import(source, ImportOptions::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Io, "{what}: {e}");
        assert!(!e.message().contains("'gzip'"), "{what}: the data was never judged: {e}");
        assert!(e.message().contains("injected failure"), "{what}: the filesystem's error is kept: {e}");
        assert_eq!(count(&db), 3, "{what}: nothing was imported and reads go on");
    }
    insert(&db, 1);
    assert_eq!(count(&db), 4, "writes go on");
    drop(db);
    drop(ws);
    let ws = Workspace::open(&root, WorkspaceOptions::default()).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    assert_eq!(count(&db), 4, "only the app's own write changed the database");
}

/// Writes a valid database of exactly `pages` pages of 4096 bytes: one row whose blob spills
/// into overflow pages, one page per 4092 bytes of it.
fn database_of_pages(path: &Path, pages: i64) {
    let mut blob = (pages - 3) * 4092;
    for _ in 0..16 {
        let _ = std::fs::remove_file(path);
        make_sqlite(
            path,
            &format!(
                "PRAGMA page_size=4096; CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB); \
                 INSERT INTO notes(body) VALUES (zeroblob({blob}));"
            ),
        );
        let conn = rusqlite::Connection::open(path).unwrap();
        let have: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        if have == pages {
            return;
        }
        blob += (pages - have) * 4092;
    }
    panic!("no database of {pages} pages");
}

/// The zip-bomb guard at its boundary through import: a database exactly as large as the
/// size cap decompresses and imports; the same bytes and one more are refused by the guard.
#[test]
fn a_compressed_import_exactly_at_the_size_cap_is_accepted_and_one_byte_more_is_refused() {
    let (dir, _ws, db) = setup("gzip-cap");
    let cap: u64 = 2 << 20; // MANIFEST's maxSizeMB
    let plain = dir.0.join("at-cap.sqlite");
    database_of_pages(&plain, (cap / 4096) as i64);
    let mut bytes = std::fs::read(&plain).unwrap();
    assert_eq!(bytes.len() as u64, cap);

    let over = dir.0.join("over-cap.sqlite.gz");
    bytes.push(0);
    std::fs::write(&over, gzip(&bytes)).unwrap();
    let e = db.import(&over, ImportOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
    assert_eq!(e.quota().map(|q| q.limit_bytes), Some(cap), "{e}");
    assert!(e.message().contains("decompressed import"), "the guard refused it: {e}");
    assert_eq!(count(&db), 0);

    let at = dir.0.join("at-cap.sqlite.gz");
    bytes.pop();
    std::fs::write(&at, gzip(&bytes)).unwrap();
    let report = db.import(&at, ImportOptions::default()).unwrap();
    assert_eq!(report.checks.first(), Some(&"gzip"));
    assert_eq!(report.size, cap);
    assert_eq!(count(&db), 1);
}
