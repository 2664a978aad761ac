//! The audit trail through the public API: every operation that changed the workspace has its
//! record, with what it did; failures carry their code and are rate-limited; reads filter by
//! app, time and count; the log survives a reopen, cuts a torn tail, skips damaged lines and
//! stays within its size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::audit::{AuditLimits, AUDIT_FAILURE_INTERVAL_MS, AUDIT_READ_MAX, AUDIT_RECORD_BYTES_MAX};
use sila_sqlite::versions::{ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::{AuditQuery, AuditRecord, ErrorCode, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod support;
use support::TempDir;

const APP: &str = "com.example.notes";
const OTHER: &str = "com.example.other";
const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}]}}}"#;
const T0: u64 = 1_800_000_000_000;

/// A wall clock the test sets.
struct SetClock(AtomicU64);

impl sila_sqlite::clock::Clock for SetClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn open(root: &Path, audit: AuditLimits) -> (Workspace, Arc<SetClock>) {
    let clock = Arc::new(SetClock(AtomicU64::new(T0)));
    let options = WorkspaceOptions { clock: clock.clone(), audit, ..WorkspaceOptions::default() };
    (Workspace::open(root, options).unwrap(), clock)
}

fn all(ws: &Workspace) -> Vec<AuditRecord> {
    let read = ws.audit(&AuditQuery::default()).unwrap();
    assert_eq!(read.damaged, 0);
    read.records
}

fn ops(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.op.as_str()).collect()
}

fn segments(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(root.join("audit")).unwrap().map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn every_operation_that_changed_the_workspace_has_its_record() {
    let dir = TempDir::new("audit-ops");
    let root = dir.0.join("ws");
    let (ws, _) = open(&root, AuditLimits::default());
    let info = ws.register_app(APP, MANIFEST).unwrap();
    // Registering again, or updating to the same manifest, changes nothing: no record.
    ws.register_app(APP, MANIFEST).unwrap();
    ws.update_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    db.exec("INSERT INTO notes(body) VALUES ('a'), ('b')", &[]).unwrap();
    let snap = db.snapshot("before").unwrap();
    let undo = db.restore(snap.id, RestoreOptions::default()).unwrap();
    let export = dir.0.join("out.sqlite");
    let exported = db.export_to_path(&export).unwrap();
    let imported = db.import(&export, ImportOptions::default()).unwrap();
    let step = MigrationStep {
        from: 0,
        to: 1,
        up: "ALTER TABLE notes ADD COLUMN tag TEXT".into(),
        down: String::new(),
    };
    let plan = MigrationPlan { current_version: 1, steps: vec![step] };
    let migrated = db.migrate(&plan, false).unwrap();
    let compacted = db.compact().unwrap();
    db.drop_snapshot(snap.id).unwrap();
    // Upkeep that changes nothing is not recorded.
    db.checkpoint().unwrap();
    db.optimize().unwrap();
    assert!(db.check_integrity(true).unwrap().problems.is_empty());
    drop(db);
    let gc = ws.gc().unwrap();
    assert!(!gc.files.is_empty());
    let updated = ws.update_app(APP, &MANIFEST.replace("8}", "16}")).unwrap();
    ws.unregister_app(APP).unwrap();

    let records = all(&ws);
    assert_eq!(
        ops(&records),
        [
            "register_app",
            "snapshot",
            "restore",
            "export",
            "import",
            // The migration's safety snapshot, then the migration that names it.
            "snapshot",
            "migrate",
            "compact",
            "drop_snapshot",
            "gc",
            "update_app",
            "unregister_app"
        ]
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "{r:?}");
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.at_ms, T0);
        assert_eq!(r.app, if r.op == "gc" { "" } else { APP }, "{r:?}");
        let per_db = !["register_app", "update_app", "unregister_app", "gc"].contains(&r.op.as_str());
        assert_eq!(r.db, if per_db { "main" } else { "" }, "{r:?}");
    }
    let detail = |op: &str| records.iter().find(|r| r.op == op).unwrap().detail.clone();
    assert_eq!(records[5].detail["snapshot"], migrated.snapshot.unwrap().to_string());
    assert_eq!(detail("register_app")["app_uuid"], info.app_uuid.to_string());
    assert_eq!(detail("register_app")["databases"][0], "main");
    assert_eq!(detail("snapshot")["snapshot"], snap.id.to_string());
    assert_eq!(detail("snapshot")["bytes"], snap.size);
    assert_eq!(detail("snapshot")["crc32c"], format!("{:08x}", snap.crc32c));
    assert_eq!(detail("snapshot")["label"], "before");
    assert_eq!(detail("restore")["snapshot"], snap.id.to_string());
    assert_eq!(detail("restore")["undo"], undo.to_string());
    assert_eq!(detail("export")["file"], "out.sqlite", "the file's name, not the host's directory");
    assert_eq!(detail("export")["bytes"], exported);
    assert_eq!(detail("import")["file"], imported.file.to_string());
    assert_eq!(detail("import")["undo"], imported.undo.to_string());
    let m = detail("migrate");
    assert_eq!((m["from"].as_u64(), m["to"].as_u64()), (Some(migrated.from), Some(migrated.to)));
    assert_eq!(
        m["steps"][0]["checksum"],
        sila_sqlite::versions::step_checksum("ALTER TABLE notes ADD COLUMN tag TEXT")
    );
    assert_eq!(m["snapshot"], migrated.snapshot.unwrap().to_string());
    assert_eq!(detail("compact")["after_bytes"], compacted.after_bytes);
    assert_eq!(detail("drop_snapshot")["snapshot"], snap.id.to_string());
    assert_eq!(detail("gc")["files"], gc.files.len());
    let quota = detail("update_app")["quota_bytes"].as_u64();
    assert_eq!(quota, Some(updated.manifest.storage_quota_bytes()));
    assert_ne!(quota, detail("register_app")["quota_bytes"].as_u64());
}

#[test]
fn failures_carry_their_code_and_a_repeated_one_is_recorded_once_a_minute() {
    let dir = TempDir::new("audit-failures");
    let (ws, clock) = open(&dir.0.join("ws"), AuditLimits::default());
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    let garbage = dir.0.join("garbage.sqlite");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let import = || db.import(&garbage, ImportOptions::default()).unwrap_err();
    assert_eq!(import().code(), ErrorCode::Corrupt);
    // Within the interval: left out, and counted.
    clock.0.store(T0 + AUDIT_FAILURE_INTERVAL_MS - 1, Ordering::SeqCst);
    import();
    import();
    // Another operation is recorded at once.
    let step = MigrationStep { from: 0, to: 1, up: "CREATE TABLE t (".into(), down: String::new() };
    let err = db.migrate(&MigrationPlan { current_version: 1, steps: vec![step] }, false).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MigrationFailed);
    // A call that names nothing changes nothing and is not recorded.
    let missing = sila_sqlite::uuid::Uuid::from_u128(42);
    assert_eq!(db.restore(missing, RestoreOptions::default()).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(ws.register_app("../x", MANIFEST).unwrap_err().code(), ErrorCode::InvalidName);
    clock.0.store(T0 + AUDIT_FAILURE_INTERVAL_MS, Ordering::SeqCst);
    import();
    let failed: Vec<AuditRecord> = all(&ws).into_iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(ops(&failed), ["import", "migrate", "import"], "{failed:?}");
    assert_eq!(failed[0].error.as_deref(), Some("CORRUPT"));
    assert_eq!(failed[1].error.as_deref(), Some("MIGRATION_FAILED"));
    assert!(failed[0].detail["message"].as_str().unwrap().contains("import"), "{:?}", failed[0]);
    assert_eq!(failed[0].detail.get("suppressed"), None);
    assert_eq!(failed[2].detail["suppressed"], 2);
}

#[test]
fn reads_filter_by_app_and_time_and_return_the_newest_records() {
    let dir = TempDir::new("audit-query");
    let (ws, clock) = open(&dir.0.join("ws"), AuditLimits::default());
    ws.register_app(APP, MANIFEST).unwrap();
    clock.0.store(T0 + 10, Ordering::SeqCst);
    ws.register_app(OTHER, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    for i in 0..3 {
        clock.0.store(T0 + 20 + i, Ordering::SeqCst);
        db.snapshot(&format!("s{i}")).unwrap();
    }
    let read = |app: Option<&str>, since_ms: Option<u64>, limit: usize| {
        let q = AuditQuery { app: app.map(str::to_string), since_ms, limit };
        ws.audit(&q).unwrap().records.iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    assert_eq!(read(None, None, AUDIT_READ_MAX), [1, 2, 3, 4, 5]);
    assert_eq!(read(Some(APP), None, AUDIT_READ_MAX), [1, 3, 4, 5]);
    assert_eq!(read(Some(OTHER), None, AUDIT_READ_MAX), [2]);
    assert_eq!(read(None, Some(T0 + 10), AUDIT_READ_MAX), [2, 3, 4, 5]);
    assert_eq!(read(None, Some(T0 + 21), AUDIT_READ_MAX), [4, 5]);
    assert_eq!(read(Some(APP), None, 2), [4, 5], "the newest two, oldest first");
    assert_eq!(read(None, None, 1), [5]);
    for bad in [0, AUDIT_READ_MAX + 1] {
        let q = AuditQuery { limit: bad, ..AuditQuery::default() };
        assert_eq!(ws.audit(&q).unwrap_err().code(), ErrorCode::InvalidArgument);
    }
}

#[test]
fn the_log_survives_a_reopen_cuts_a_torn_tail_and_skips_a_damaged_line() {
    let dir = TempDir::new("audit-reopen");
    let root = dir.0.join("ws");
    {
        let (ws, _) = open(&root, AuditLimits::default());
        ws.register_app(APP, MANIFEST).unwrap();
        let db = ws.open_app(APP).unwrap().open("main").unwrap();
        db.snapshot("one").unwrap();
        db.snapshot("two").unwrap();
    }
    let segment = segments(&root).pop().unwrap();
    let whole = std::fs::read(&segment).unwrap();
    // A crash mid-append: half a line, then garbage without a newline.
    let mut torn = whole.clone();
    torn.extend_from_slice(br#"{"seq":4,"at_ms":1,"op":"snap"#);
    std::fs::write(&segment, &torn).unwrap();
    {
        let (ws, _) = open(&root, AuditLimits::default());
        assert_eq!(std::fs::read(&segment).unwrap(), whole, "the torn tail is cut at open");
        assert_eq!(ops(&all(&ws)), ["register_app", "snapshot", "snapshot"]);
        let db = ws.open_app(APP).unwrap().open("main").unwrap();
        db.snapshot("three").unwrap();
        assert_eq!(all(&ws).last().unwrap().seq, 4, "numbering goes on after the last valid record");
    }
    // Bit rot in the middle line: it is skipped and counted, the others read.
    let mut bytes = std::fs::read(&segment).unwrap();
    let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[second_line + 12] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let (ws, _) = open(&root, AuditLimits::default());
    let read = ws.audit(&AuditQuery::default()).unwrap();
    assert_eq!(read.damaged, 1);
    assert_eq!(read.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "only a tail is ever cut");
}

#[test]
fn retention_removes_the_oldest_segments_and_keeps_the_newest() {
    let dir = TempDir::new("audit-retention");
    let root = dir.0.join("ws");
    let seg = AUDIT_RECORD_BYTES_MAX as u64;
    let limits = AuditLimits { segment_bytes: seg, bytes_max: 2 * seg };
    let (ws, _) = open(&root, limits);
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    // Each snapshot record is a few hundred bytes: 300 of them fill about five segments.
    let mut last = None;
    for i in 0..300 {
        let s = db.snapshot(&format!("s{i}")).unwrap();
        db.drop_snapshot(s.id).unwrap();
        last = Some(s.id);
    }
    let files = segments(&root);
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(total <= 2 * seg, "{total} bytes in {} segments", files.len());
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= seg, "{f:?}");
    }
    let records = all(&ws);
    assert_ne!(records[0].op, "register_app", "the oldest records are gone");
    let newest = records.last().unwrap();
    assert_eq!(newest.seq, 601);
    assert_eq!(newest.detail["snapshot"], last.unwrap().to_string());
    // The first record kept starts a segment: its number names the oldest file.
    let first =
        files[0].file_name().unwrap().to_str().unwrap().trim_end_matches(".log").parse::<u64>().unwrap();
    assert_eq!(records[0].seq, first);
    assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let bad = AuditLimits { segment_bytes: seg - 1, bytes_max: 2 * seg };
    let err =
        Workspace::open(dir.0.join("other"), WorkspaceOptions { audit: bad, ..WorkspaceOptions::default() })
            .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

/// A write refused for quota is recorded (once a minute per database, with the count left
/// out since), inside a transaction too; a database poisoned because its integrity check
/// found damage is recorded with the reason.
#[test]
fn quota_refusals_of_writes_and_poisonings_are_recorded() {
    let dir = TempDir::new("audit-quota-poison");
    let root = dir.0.join("ws");
    let small = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":1}]}}}"#;
    let path = {
        let (ws, clock) = open(&root, AuditLimits::default());
        ws.register_app(APP, small).unwrap();
        let db = ws.open_app(APP).unwrap().open("main").unwrap();
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)", &[]).unwrap();
        db.exec("CREATE INDEX t_body ON t(body)", &[]).unwrap();
        let big = || db.exec("INSERT INTO t(body) VALUES (randomblob(200000))", &[]);
        let mut refused = 0;
        for _ in 0..20 {
            if let Err(e) = big() {
                assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
                refused += 1;
            }
        }
        assert!(refused >= 2, "the database filled: {refused} refusals");
        let e =
            db.transaction(|tx| tx.exec("INSERT INTO t(body) VALUES (randomblob(900000))", &[])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        let writes: Vec<AuditRecord> = all(&ws).into_iter().filter(|r| r.op == "write").collect();
        assert_eq!(writes.len(), 1, "once a minute: {writes:?}");
        assert_eq!(writes[0].error.as_deref(), Some("QUOTA_EXCEEDED"));
        assert!(writes[0].detail["message"].as_str().unwrap().contains("maxSizeMB"), "{:?}", writes[0]);
        clock.0.store(T0 + AUDIT_FAILURE_INTERVAL_MS, Ordering::SeqCst);
        big().unwrap_err();
        let writes: Vec<AuditRecord> = all(&ws).into_iter().filter(|r| r.op == "write").collect();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1].detail["suppressed"], u64::try_from(refused).unwrap());
        db.exec("DELETE FROM t WHERE id > 1", &[]).unwrap();
        support::live_file(&ws, APP, "main")
    };
    support::scribble_page(&path, 3);
    let (ws, _clock) = open(&root, AuditLimits::default());
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    assert!(!db.check_integrity(true).unwrap().problems.is_empty());
    assert_eq!(db.query("SELECT 1", &[]).unwrap_err().code(), ErrorCode::Poisoned);
    let poisoned: Vec<AuditRecord> = all(&ws).into_iter().filter(|r| r.op == "poisoned").collect();
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    assert!(poisoned[0].detail["why"].as_str().unwrap().contains("damaged"), "{:?}", poisoned[0]);
    assert_eq!((poisoned[0].app.as_str(), poisoned[0].db.as_str()), (APP, "main"));
}

/// A checkpoint that a running read keeps from completing raises the starvation alarm once
/// the WAL is over `wal_starvation_alarm_bytes`: not at it, at the first checkpoint past it,
/// and then at most once a minute.
#[test]
fn a_starved_checkpoint_past_the_alarm_size_is_recorded_once() {
    use support::ReadGate;
    const ALARM_PAGES: u64 = 8;
    let dir = TempDir::new("audit-starved");
    let root = dir.0.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    let gate = Arc::new(ReadGate::default());
    let vfs = Arc::new(gate.wrapping(|path| {
        let name = path.to_string_lossy();
        name.ends_with(".sqlite") || name.ends_with("-wal")
    }));
    let clock = Arc::new(SetClock(AtomicU64::new(T0)));
    let broker = sila_sqlite::BrokerOptions {
        wal_checkpoint_bytes: 1,
        wal_starvation_alarm_bytes: ALARM_PAGES * 4096,
        ..Default::default()
    };
    let options = WorkspaceOptions { clock: clock.clone(), broker, ..WorkspaceOptions::default() };
    let ws = Workspace::open_with(vfs, root, options).unwrap();
    ws.register_app(APP, MANIFEST).unwrap();
    let db = ws.open_app(APP).unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[]).unwrap();
    db.query("SELECT count(*) FROM t", &[]).unwrap();
    db.exec("INSERT INTO t VALUES (0)", &[]).unwrap();
    let reader = gate.stop_a_read(&db, "SELECT count(*) FROM t");
    let alarms = || all(&ws).into_iter().filter(|r| r.op == "checkpoint_starved").collect::<Vec<_>>();
    for i in 1..=3 * ALARM_PAGES as i64 {
        db.exec("INSERT INTO t VALUES (?)", &[sila_sqlite::Value::Integer(i)]).unwrap();
        let wal = db.stats().wal_bytes;
        match alarms().as_slice() {
            [] => assert!(wal <= (ALARM_PAGES + 1) * 4096, "no alarm with {wal} bytes of WAL"),
            [alarm] => {
                let at = alarm.detail["wal_bytes"].as_u64().unwrap();
                assert!(at > ALARM_PAGES * 4096 && at <= (ALARM_PAGES + 1) * 4096, "{alarm:?}");
            }
            more => panic!("once a minute: {more:?}"),
        }
    }
    assert_eq!(alarms().len(), 1);
    gate.release();
    reader.join().unwrap().unwrap();
    assert!(db.stats().metrics.checkpoints_incomplete >= 2 * ALARM_PAGES);
}
