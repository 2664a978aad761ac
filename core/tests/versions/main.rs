//! Versions through the public API: snapshot, restore with undo, import with validation,
//! export, backup, migrations, retention and GC. Every refusal leaves the database as it was.
//! One file per operation (`snapshot.rs` also holds restores and retention); the helpers
//! they share are here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::store::Retention;
use sila_sqlite::versions::{ImportOptions, MigrationPlan, MigrationStep, RestoreOptions};
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

#[path = "../support/mod.rs"]
mod support;
use support::{Call, FaultyFs, TempDir};

mod export;
mod import;
mod migrate;
mod snapshot;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":2}],"tier":"standard"}}}"#;

/// A 64 MiB database (192 MiB of app quota), for tests whose space depends on how far a
/// concurrent writer gets.
const ROOMY_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":64}],"tier":"standard"}}}"#;

fn setup(name: &str) -> (TempDir, Workspace, Database) {
    setup_with(name, MANIFEST)
}

fn setup_with(name: &str, manifest: &str) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions::default()).unwrap();
    ws.register_app("com.example.notes", manifest).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).unwrap();
    (dir, ws, db)
}

fn count(db: &Database) -> i64 {
    match db.query_value("SELECT count(*) FROM notes", &[]).unwrap() {
        Some(Value::Integer(n)) => n,
        other => panic!("{other:?}"),
    }
}

fn insert(db: &Database, n: i64) {
    for i in 0..n {
        db.exec("INSERT INTO notes(body) VALUES (?)", &[Value::Text(format!("note {i}"))]).unwrap();
    }
}

/// The files of the database's directory, with sizes (to prove a refusal changed nothing).
fn db_files(ws: &Workspace) -> Vec<(String, u64)> {
    let key = ws.db_key("com.example.notes", "main").unwrap();
    let dir = ws.root().join(sila_sqlite::store::layout::db_dir(key.app, &key.db));
    let mut out = Vec::new();
    for sub in [dir.clone(), dir.join("snapshots")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                // The live WAL and SHM change with any read; compare the rest.
                if !name.ends_with("-wal") && !name.ends_with("-shm") {
                    out.push((name, e.metadata().unwrap().len()));
                }
            }
        }
    }
    out.sort();
    out
}

fn make_sqlite(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn is_partial(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    sila_sqlite::store::layout::partial_of(&name).is_some()
}

/// Every file below `dir`, recursively, sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
