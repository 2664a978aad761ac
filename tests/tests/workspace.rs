//! The workspace and its app registry, through the public API on the real filesystem:
//! the lock (in this process and from another one), the on-disk layout a registration
//! leaves, durability across reopen, idempotence, and refusals that change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::manifest::MIB;
use sila_sqlite::workspace::{Workspace, WorkspaceOptions};
use sila_sqlite::ErrorCode;
use sila_sqlite_tests::{
    is_canonical_uuid, names, tree, TempDir, OTHER_MANIFEST, SPEC_MANIFEST, SPEC_MANIFEST_DEFAULTS_OMITTED,
    TWO_DB_MANIFEST,
};
use std::path::Path;
use std::process::Command;

const APP: &str = "com.example.notes";

fn open(dir: &Path) -> Workspace {
    Workspace::open(dir, WorkspaceOptions::default()).unwrap()
}

fn open_err(dir: &Path) -> sila_sqlite::Error {
    Workspace::open(dir, WorkspaceOptions::default()).expect_err("the workspace must be locked")
}

#[test]
fn open_creates_the_layout_and_records_our_pid_in_lock() {
    let tmp = TempDir::new("layout");
    // A directory that does not exist yet: open creates it.
    let root = tmp.path().join("ws");
    let ws = open(&root);
    assert_eq!(names(&root), vec!["LOCK".to_string(), "apps".to_string(), "tmp".to_string()]);
    assert!(names(&root.join("tmp")).is_empty(), "tmp/ holds SQLite's spill files, none yet");
    assert!(root.join("apps").is_dir());
    assert!(names(&root.join("apps")).is_empty());
    let lock = std::fs::read_to_string(root.join("LOCK")).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string());
    assert!(ws.apps().is_empty());
    let report = ws.recovery_report();
    assert_eq!((report.apps, report.databases_ok), (0, 0));
    assert!(report.damaged.is_empty() && report.orphans.is_empty() && report.temps_removed.is_empty());
}

#[test]
fn second_open_in_the_same_process_is_refused_with_our_pid_until_the_first_is_dropped() {
    let tmp = TempDir::new("lock-same");
    let first = open(tmp.path());
    let err = open_err(tmp.path());
    assert_eq!(err.code(), ErrorCode::WorkspaceLocked, "{err}");
    let pid = format!("pid {}", std::process::id());
    assert!(err.message().contains(&pid), "message must name the holder ({pid}): {err}");
    // A clone shares the lock; it does not release it.
    let clone = first.clone();
    drop(first);
    assert_eq!(open_err(tmp.path()).code(), ErrorCode::WorkspaceLocked);
    drop(clone);
    let again = Workspace::open(tmp.path(), WorkspaceOptions::default());
    assert!(again.is_ok(), "the lock is released when the last handle drops: {:?}", again.err());
}

/// Set in the child process: the workspace directory it must try to open.
const CHILD_DIR_ENV: &str = "SILA_IT_LOCK_CHILD_DIR";
/// The child prints its outcome on one line that starts with this.
const CHILD_MARK: &str = "SILA-CHILD-RESULT";
const CROSS_PROCESS_TEST: &str = "another_process_gets_workspace_locked_with_the_holder_pid";

/// Re-runs this test binary with only [`CROSS_PROCESS_TEST`] selected, acting as the child,
/// and returns the child's outcome line.
fn run_child(dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", CROSS_PROCESS_TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR_ENV, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}\n{stdout}", out.status);
    // The harness prints `test <name> ... ` before the outcome on the same line. No outcome
    // means the child never ran the test (a wrong name runs zero tests).
    stdout
        .lines()
        .find_map(|l| l.split_once(CHILD_MARK).map(|(_, outcome)| outcome))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("the child printed no {CHILD_MARK} line:\n{stdout}"))
}

#[test]
fn another_process_gets_workspace_locked_with_the_holder_pid() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        // Child role: try to open the parent's workspace and say what happened.
        match Workspace::open(&dir, WorkspaceOptions::default()) {
            Ok(_) => println!("{CHILD_MARK} OK"),
            Err(e) => println!("{CHILD_MARK} {} {}", e.code().name(), e.message()),
        }
        return;
    }
    let tmp = TempDir::new("lock-proc");
    let ws = open(tmp.path());
    let outcome = run_child(tmp.path());
    assert!(outcome.starts_with("WORKSPACE_LOCKED "), "child saw: {outcome}");
    let pid = format!("pid {}", std::process::id());
    assert!(outcome.contains(&pid), "child's error must name the parent ({pid}): {outcome}");
    drop(ws);
    assert_eq!(run_child(tmp.path()), "OK", "the lock must be free once the parent dropped it");
}

#[test]
fn registration_lays_out_uuid_directories_and_checksummed_records() {
    let tmp = TempDir::new("register-layout");
    let ws = open(tmp.path());
    let info = ws.register_app(APP, TWO_DB_MANIFEST).unwrap();
    assert_eq!(info.app_id.as_str(), APP);

    let apps = names(&tmp.path().join("apps"));
    let uuid = info.app_uuid.hyphenated().to_string();
    assert_eq!(apps, vec![uuid.clone()], "one directory, named by the app's UUID");
    assert!(is_canonical_uuid(&apps[0]));
    let app_dir = tmp.path().join("apps").join(&uuid);
    assert_eq!(names(&app_dir), vec!["app.json".to_string(), "db".to_string()]);
    assert_eq!(names(&app_dir.join("db")), vec!["analytics".to_string(), "cache".to_string()]);

    for db in ["analytics", "cache"] {
        let key = ws.db_key(APP, db).unwrap();
        let pointer = ws.with_store(|s| s.pointer(&key).cloned()).unwrap();
        let file = format!("{}.sqlite", pointer.file.hyphenated());
        let db_dir = app_dir.join("db").join(db);
        let mut expected = vec!["current".to_string(), "manifest".to_string(), "snapshots".to_string(), file];
        expected.sort();
        assert_eq!(names(&db_dir), expected, "{db}");
        assert!(names(&db_dir.join("snapshots")).is_empty());
        let current = std::fs::read_to_string(db_dir.join("current")).unwrap();
        assert!(current.starts_with("sila-current 1\ngeneration 1\n"), "{current}");
        assert!(current.contains(&format!("\nfile {}\n", pointer.file.hyphenated())), "{current}");
        let manifest = std::fs::read_to_string(db_dir.join("manifest")).unwrap();
        assert!(manifest.starts_with("sila-manifest 1\ngeneration 1\ncount 0\n"), "{manifest}");
    }

    // app.json: one line of JSON, {"body":…,"crc32c":"…"}, the CRC over the body's bytes.
    let text = std::fs::read_to_string(app_dir.join("app.json")).unwrap();
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let body = value["body"].to_string();
    let crc = value["crc32c"].as_str().unwrap();
    assert_eq!(crc, format!("{:08x}", crc32c::crc32c(body.as_bytes())));
    assert!(text.starts_with(&format!("{{\"body\":{body},")), "the CRC covers the stored bytes");
    assert_eq!(value["body"]["appId"], APP);
    assert_eq!(value["body"]["appUuid"], uuid.as_str());
    assert_eq!(value["body"]["format"], 1);
}

#[test]
fn registration_is_durable_across_reopen() {
    let tmp = TempDir::new("register-durable");
    let ws = open(tmp.path());
    let info = ws.register_app(APP, SPEC_MANIFEST).unwrap();
    let other = ws.register_app("org.other", OTHER_MANIFEST).unwrap();
    assert_ne!(info.app_uuid, other.app_uuid);
    // Take the key first: `with_store` holds the store lock that `db_key` takes.
    let key = ws.db_key(APP, "analytics").unwrap();
    let pointer_before = ws.with_store(|s| s.pointer(&key).cloned()).unwrap();
    drop(ws);

    let ws = open(tmp.path());
    // Ordered by app id.
    assert_eq!(ws.apps(), vec![info.clone(), other.clone()]);
    assert_eq!(ws.app_info(APP).unwrap().app_uuid, info.app_uuid);
    let report = ws.recovery_report();
    assert_eq!((report.apps, report.databases_ok), (2, 2));
    assert!(report.damaged.is_empty() && report.orphans.is_empty() && report.unknown.is_empty());
    let key = ws.db_key(APP, "analytics").unwrap();
    assert_eq!(key.app, info.app_uuid);
    assert_eq!(ws.with_store(|s| s.pointer(&key).cloned()).unwrap(), pointer_before);

    let ledger = ws.ledger(APP).unwrap();
    assert_eq!(ledger.quota_bytes, 3 * 256 * MIB, "standard tier: 3 x sum of maxSizeMB");
    assert_eq!(ledger.used_bytes(), 0, "a new database file is empty: {ledger:?}");
    assert_eq!(ws.ledger("org.other").unwrap().quota_bytes, 3 * 4 * MIB);
    assert_eq!(ws.ledger("org.unknown").map_err(|e| e.code()), Err(ErrorCode::NotFound));
}

#[test]
fn registering_again_is_idempotent_and_a_different_manifest_is_refused() {
    let tmp = TempDir::new("register-again");
    let ws = open(tmp.path());
    let info = ws.register_app(APP, SPEC_MANIFEST).unwrap();
    let before = tree(tmp.path());

    assert_eq!(ws.register_app(APP, SPEC_MANIFEST).unwrap(), info);
    // The same manifest spelled with its defaults left out validates to the same value.
    assert_eq!(ws.register_app(APP, SPEC_MANIFEST_DEFAULTS_OMITTED).unwrap(), info);
    assert_eq!(tree(tmp.path()), before, "an idempotent register writes nothing");

    let smaller = SPEC_MANIFEST.replace("\"maxSizeMB\":256", "\"maxSizeMB\":128");
    let err = ws.register_app(APP, &smaller).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    assert!(err.message().contains(APP), "{err}");
    assert_eq!(tree(tmp.path()), before, "a refused register writes nothing");
    assert_eq!(ws.apps(), vec![info.clone()]);

    // Idempotence holds across reopen too: the durable record is what is compared.
    drop(ws);
    let ws = open(tmp.path());
    assert_eq!(ws.register_app(APP, SPEC_MANIFEST).unwrap(), info);
    assert_eq!(ws.register_app(APP, &smaller).map_err(|e| e.code()), Err(ErrorCode::AlreadyExists));
}

#[test]
fn bad_manifests_are_refused_naming_the_field_and_nothing_is_created() {
    let tmp = TempDir::new("bad-manifest");
    let ws = open(tmp.path());
    let before = tree(tmp.path());
    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid JSON"),
        (
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"quota":1}}}"#,
            "capabilities.sqlite.quota",
        ),
        (
            r#"{"capabilities":{"sqlite":{"enabled":false,"dbs":[{"name":"a"}]}}}"#,
            "capabilities.sqlite.enabled",
        ),
        (r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"a"}]}}}"#, "dbs[1].name"),
        (
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":0}]}}}"#,
            "dbs[0].maxSizeMB",
        ),
        (
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":257}]}}}"#,
            "dbs[0].maxSizeMB",
        ),
        (
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}}}"#,
            "capabilities.sqlite.dbs",
        ),
        (
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","readOnly":"no"}]}}}"#,
            "dbs[0].readOnly",
        ),
        (r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"../x"}]}}}"#, "dbs[0].name"),
        (r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"current"}]}}}"#, "dbs[0].name"),
    ];
    for (manifest, field) in cases {
        let err = ws.register_app(APP, manifest).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidManifest, "{manifest}: {err}");
        assert!(err.message().contains(field), "{manifest}: message must name {field}: {err}");
        assert_eq!(tree(tmp.path()), before, "{manifest}: something was written");
    }
    assert!(ws.apps().is_empty());
    assert_eq!(ws.app_info(APP).map_err(|e| e.code()), Err(ErrorCode::NotFound));
}

#[test]
fn bad_app_ids_are_refused_and_nothing_is_created() {
    let tmp = TempDir::new("bad-app-id");
    let ws = open(tmp.path());
    let before = tree(tmp.path());
    let too_long = "a".repeat(65);
    let bad = [
        "",
        "../x",
        "..",
        too_long.as_str(),
        "a/b",
        "a\\b",
        "a\0b",
        "a\nb",
        "com.ex\u{0430}mple", // Cyrillic а, a look-alike of Latin a
    ];
    for id in bad {
        let err = ws.register_app(id, SPEC_MANIFEST).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidName, "{id:?}: {err}");
        assert_eq!(tree(tmp.path()), before, "{id:?}: something was written");
    }
    assert!(ws.apps().is_empty());
    // The boundary: 64 bytes is allowed.
    let longest = "a".repeat(64);
    assert_eq!(ws.register_app(&longest, SPEC_MANIFEST).unwrap().app_id.as_str(), longest);
}
