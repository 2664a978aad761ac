//! Temporary storage is bounded: a sort or DISTINCT that spills past the page cache writes
//! anonymous temp files in the workspace's `tmp/`, which the engine's SQLite VFS caps per file
//! (`temp_file_bytes_max`) and per workspace (`temp_bytes_total_max`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::broker::BrokerOptions;
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::path::PathBuf;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":32}],"tier":"basic"}}}"#;

/// Eight MiB of distinct text in a `basic` app (2 MiB page cache): any DISTINCT over it spills.
const SPILLING_QUERY: &str = "SELECT count(*) FROM (SELECT DISTINCT v FROM t)";

fn open(dir: &PathBuf, temp_file_bytes_max: u64, temp_bytes_total_max: u64) -> (Workspace, Database) {
    let broker = BrokerOptions { temp_file_bytes_max, temp_bytes_total_max, ..BrokerOptions::default() };
    let ws = Workspace::open(dir, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    if ws.app_info("com.example.temp").is_err() {
        ws.register_app("com.example.temp", MANIFEST).unwrap();
    }
    let db = ws.open_app("com.example.temp").unwrap().open("main").unwrap();
    (ws, db)
}

#[test]
fn temp_storage_is_capped_per_file_and_per_workspace() {
    let dir = std::env::temp_dir().join(format!("sila-temp-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (ws, db) = open(&dir, 64 << 20, 1 << 30);
        db.exec("CREATE TABLE t (v TEXT)", &[]).unwrap();
        db.exec(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000) \
             INSERT INTO t SELECT hex(randomblob(2000)) FROM c",
            &[],
        )
        .unwrap();
        // Under generous caps the spilling query answers.
        assert_eq!(db.query_value(SPILLING_QUERY, &[]).unwrap(), Some(Value::Integer(2000)));
        assert_eq!(ws.sqlite_vfs().temp_bytes_in_use(), 0, "temp files are gone with the statement");
        let tmp = std::fs::read_dir(dir.join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "and so are their files in tmp/");
    }
    {
        // One MiB per file: the spill is refused with the cap's name, and nothing is held.
        let (ws, db) = open(&dir, 1 << 20, 1 << 30);
        let e = db.query_value(SPILLING_QUERY, &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        assert!(e.message().contains("temp_file_bytes_max (1048576 bytes)"), "{e}");
        assert_eq!(ws.sqlite_vfs().temp_bytes_in_use(), 0);
        // The database is untouched and still answers queries that fit.
        assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(2000)));
        let e = db.exec("INSERT INTO t SELECT DISTINCT v FROM t", &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "a write that spills is refused alike: {e}");
        assert_eq!(db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(2000)));
        assert_eq!(db.stats().metrics.error_count(ErrorCode::QuotaExceeded), 2, "refusals are counted");
    }
    {
        // A workspace-wide total below what one query needs refuses it with that cap's name.
        let (ws, db) = open(&dir, 64 << 20, 1 << 20);
        let e = db.query_value(SPILLING_QUERY, &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        assert!(e.message().contains("temp_bytes_total_max (1048576 bytes)"), "{e}");
        assert_eq!(ws.sqlite_vfs().temp_bytes_in_use(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
