//! Where things live inside a workspace. Every path the engine touches is built here, from
//! UUIDs and validated names only; all paths are relative to the workspace root.
//!
//! ```text
//! LOCK
//! apps/<app_uuid>/app.json
//! apps/<app_uuid>/db/<db>/current
//! apps/<app_uuid>/db/<db>/manifest
//! apps/<app_uuid>/db/<db>/<file_uuid>.sqlite   (+ -wal, -shm)
//! apps/<app_uuid>/db/<db>/snapshots/<snapshot_uuid>.sqlite
//! apps/<app_uuid>/exports/<name>.sqlite[.gz]
//! backups/<app_uuid>/<db>/<backup_uuid>.sqlite[.gz]
//! ```
//!
//! Exports and backups are written under a temporary name in their own directory
//! (`<final name>.<uuid>.partial`) and renamed once complete and synced; [`partial_of`] knows
//! those names, so GC can remove what a crash left.

use crate::names::DbName;
use std::path::PathBuf;
use uuid::Uuid;

/// The workspace lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The directory of all apps.
pub const APPS_DIR: &str = "apps";
/// The app record's file name.
pub const APP_RECORD: &str = "app.json";
/// What `app.json` is renamed to when the app is unregistered: the directory is garbage.
pub const APP_TOMBSTONE: &str = "app.json.removed";
/// The pointer record's file name.
pub const CURRENT: &str = "current";
/// The snapshot manifest's file name.
pub const MANIFEST: &str = "manifest";
/// The snapshot directory's name.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Suffix of temp files written before a rename.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of database files.
pub const DB_SUFFIX: &str = ".sqlite";
/// Suffixes SQLite adds beside a database file.
pub const SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// Suffix of an export or backup file still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// An app's export area, beside its databases.
pub const EXPORTS_DIR: &str = "exports";
/// The workspace's backup area.
pub const BACKUPS_DIR: &str = "backups";

/// `apps`
pub fn apps_dir() -> PathBuf {
    PathBuf::from(APPS_DIR)
}

/// `apps/<app>`
pub fn app_dir(app: Uuid) -> PathBuf {
    apps_dir().join(app.hyphenated().to_string())
}

/// `apps/<app>/app.json`
pub fn app_record(app: Uuid) -> PathBuf {
    app_dir(app).join(APP_RECORD)
}

/// `apps/<app>/app.json.tmp`
pub fn app_record_tmp(app: Uuid) -> PathBuf {
    app_dir(app).join(format!("{APP_RECORD}{TMP_SUFFIX}"))
}

/// `apps/<app>/app.json.removed`
pub fn app_tombstone(app: Uuid) -> PathBuf {
    app_dir(app).join(APP_TOMBSTONE)
}

/// `apps/<app>/db`
pub fn dbs_dir(app: Uuid) -> PathBuf {
    app_dir(app).join("db")
}

/// `apps/<app>/db/<db>`
pub fn db_dir(app: Uuid, db: &DbName) -> PathBuf {
    dbs_dir(app).join(db.as_str())
}

/// `…/<db>/current`
pub fn current(app: Uuid, db: &DbName) -> PathBuf {
    db_dir(app, db).join(CURRENT)
}

/// `…/<db>/current.tmp`
pub fn current_tmp(app: Uuid, db: &DbName) -> PathBuf {
    db_dir(app, db).join(format!("{CURRENT}{TMP_SUFFIX}"))
}

/// `…/<db>/manifest`
pub fn manifest(app: Uuid, db: &DbName) -> PathBuf {
    db_dir(app, db).join(MANIFEST)
}

/// `…/<db>/manifest.tmp`
pub fn manifest_tmp(app: Uuid, db: &DbName) -> PathBuf {
    db_dir(app, db).join(format!("{MANIFEST}{TMP_SUFFIX}"))
}

/// `…/<db>/snapshots`
pub fn snapshots_dir(app: Uuid, db: &DbName) -> PathBuf {
    db_dir(app, db).join(SNAPSHOTS_DIR)
}

/// The database file's name inside its db directory: `<uuid>.sqlite`.
pub fn db_file_name(file: Uuid) -> String {
    format!("{}{DB_SUFFIX}", file.hyphenated())
}

/// A snapshot's name relative to its db directory: `snapshots/<uuid>.sqlite`.
pub fn snapshot_rel(id: Uuid) -> String {
    format!("{SNAPSHOTS_DIR}/{}{DB_SUFFIX}", id.hyphenated())
}

/// `…/<db>/<file>.sqlite`
pub fn db_file(app: Uuid, db: &DbName, file: Uuid) -> PathBuf {
    db_dir(app, db).join(db_file_name(file))
}

/// `…/<db>/snapshots/<id>.sqlite`
pub fn snapshot_file(app: Uuid, db: &DbName, id: Uuid) -> PathBuf {
    db_dir(app, db).join(snapshot_rel(id))
}

/// `apps/<app>/exports`
pub fn exports_dir(app: Uuid) -> PathBuf {
    app_dir(app).join(EXPORTS_DIR)
}

/// `backups/<app>/<db>`
pub fn backups_dir(app: Uuid, db: &DbName) -> PathBuf {
    PathBuf::from(BACKUPS_DIR).join(app.hyphenated().to_string()).join(db.as_str())
}

/// The temporary name an export or backup file has until it is complete:
/// `<final name>.<uuid>.partial`.
pub fn partial_name(final_name: &std::ffi::OsStr, id: Uuid) -> std::ffi::OsString {
    let mut name = final_name.to_os_string();
    name.push(format!(".{}{PARTIAL_SUFFIX}", id.hyphenated()));
    name
}

/// The export or backup temporary ([`partial_name`]) a file name belongs to: the name itself,
/// or the temporary a file SQLite keeps beside one while it writes it (`-journal`) is for.
/// `None` for any other name.
pub fn partial_of(name: &str) -> Option<&str> {
    let base = SIDE_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    base.ends_with(PARTIAL_SUFFIX).then_some(base)
}

/// Whether `temporary` (a name [`partial_of`] returned) is a temporary of the final name
/// `final_name`: exactly `<final_name>.<uuid>.partial`.
pub fn is_partial_of(temporary: &str, final_name: &str) -> bool {
    temporary
        .strip_suffix(PARTIAL_SUFFIX)
        .and_then(|rest| rest.strip_prefix(final_name))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|id| Uuid::parse_str(id).is_ok())
}

/// What a file inside a db directory is, judged by its name relative to that directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `current` or `manifest`.
    Record,
    /// `current.tmp` or `manifest.tmp`: left by an interrupted operation.
    Temp,
    /// `<uuid>.sqlite`.
    Database(Uuid),
    /// `<uuid>.sqlite-wal`, `-shm` or `-journal`.
    Side(Uuid),
    /// `snapshots/<uuid>.sqlite`.
    Snapshot(Uuid),
    /// Anything else: never touched, reported to the operator.
    Unknown,
}

fn parse_uuid_name(stem: &str) -> Option<Uuid> {
    let id = Uuid::try_parse(stem).ok()?;
    (id.hyphenated().to_string() == stem).then_some(id)
}

/// Classifies a path relative to a db directory.
pub fn classify(rel: &str) -> FileKind {
    if rel == CURRENT || rel == MANIFEST {
        return FileKind::Record;
    }
    // No allocation here: GC, the ledger and the checks classify every file name they see.
    if rel.strip_suffix(TMP_SUFFIX).is_some_and(|r| r == CURRENT || r == MANIFEST) {
        return FileKind::Temp;
    }
    if let Some(name) = rel.strip_prefix(SNAPSHOTS_DIR).and_then(|r| r.strip_prefix('/')) {
        return match name.strip_suffix(DB_SUFFIX).and_then(parse_uuid_name) {
            Some(id) => FileKind::Snapshot(id),
            None => FileKind::Unknown,
        };
    }
    if let Some(stem) = rel.strip_suffix(DB_SUFFIX) {
        return parse_uuid_name(stem).map(FileKind::Database).unwrap_or(FileKind::Unknown);
    }
    for side in SIDE_SUFFIXES {
        if let Some(stem) = rel.strip_suffix(side).and_then(|s| s.strip_suffix(DB_SUFFIX)) {
            return parse_uuid_name(stem).map(FileKind::Side).unwrap_or(FileKind::Unknown);
        }
    }
    FileKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        let id = Uuid::from_u128(42);
        let s = id.hyphenated().to_string();
        assert_eq!(classify("current"), FileKind::Record);
        assert_eq!(classify("manifest.tmp"), FileKind::Temp);
        assert_eq!(classify(&format!("{s}.sqlite")), FileKind::Database(id));
        assert_eq!(classify(&format!("{s}.sqlite-wal")), FileKind::Side(id));
        assert_eq!(classify(&format!("{s}.sqlite-shm")), FileKind::Side(id));
        assert_eq!(classify(&format!("snapshots/{s}.sqlite")), FileKind::Snapshot(id));
        assert_eq!(classify(&format!("{}.sqlite", s.to_uppercase())), FileKind::Unknown);
        assert_eq!(classify("notes.txt"), FileKind::Unknown);
        assert_eq!(classify("snapshots/x.sqlite"), FileKind::Unknown);
    }

    #[test]
    fn partial_names_are_recognised_and_never_classified_as_databases() {
        let id = Uuid::from_u128(7);
        let partial = partial_name(std::ffi::OsStr::new("monthly.sqlite.gz"), id);
        let partial = partial.to_str().unwrap();
        assert_eq!(partial, format!("monthly.sqlite.gz.{}.partial", id.hyphenated()));
        assert_eq!(partial_of(partial), Some(partial));
        assert_eq!(partial_of(&format!("{partial}-journal")), Some(partial));
        // Backups are `<uuid>.sqlite`: their temporaries must not look like one to retention.
        let backup = partial_name(std::ffi::OsStr::new(&db_file_name(id)), Uuid::from_u128(8));
        assert_eq!(classify(backup.to_str().unwrap()), FileKind::Unknown, "retention never counts it");
        assert!(is_partial_of(partial, "monthly.sqlite.gz"));
        assert!(!is_partial_of(partial, "monthly.sqlite"), "another final name's temporary");
        assert!(!is_partial_of(partial, "sqlite.gz"));
        assert!(!is_partial_of("monthly.sqlite.gz.not-a-uuid.partial", "monthly.sqlite.gz"));
        for complete in ["monthly.sqlite", "monthly.sqlite.gz", "partial.sqlite", "x.partial.sqlite"] {
            assert_eq!(partial_of(complete), None);
        }
    }
}
