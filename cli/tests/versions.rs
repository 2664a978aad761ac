//! The versions verbs (snapshot, snapshots, restore, backup, export, import, migrate,
//! retention, gc), run through the built `sila-sqlite` binary against temporary workspaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sila-sqlite");

const APP: &str = "com.test.versions";

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":16}],"tier":"standard"}}}"#;

/// A temporary workspace directory with APP registered, removed when dropped.
struct TempWs {
    dir: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts success with nothing on stderr (stderr is not a terminal here, so no progress).
    fn quiet(self) -> Out {
        let out = self.ok();
        assert_eq!(out.stderr, "", "nothing on stderr when it is not a terminal");
        out
    }

    /// Asserts a failure with exit code 1, nothing on stdout, and returns stderr's first line.
    fn failed(&self) -> &str {
        assert_eq!(self.code, 1, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.stdout, "", "a failed command prints nothing on stdout");
        self.stderr.lines().next().unwrap_or("")
    }

    /// The single line of stdout, which must be a UUID.
    fn uuid(&self) -> String {
        let line = self.stdout.strip_suffix('\n').expect("one line");
        assert!(!line.contains('\n'), "exactly one line: {:?}", self.stdout);
        assert_eq!(line.len(), 36, "a UUID: {line:?}");
        assert_eq!(line.matches('-').count(), 4, "a UUID: {line:?}");
        line.to_string()
    }
}

impl TempWs {
    fn new(name: &str) -> TempWs {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli-versions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = TempWs { dir };
        let manifest = t.dir.join("manifest.json");
        std::fs::write(&manifest, MANIFEST).unwrap();
        t.run(&["app", "register", manifest.to_str().unwrap(), "--app", APP]).ok();
        t
    }

    fn ws(&self) -> PathBuf {
        self.dir.join("ws")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(BIN).arg("--workspace").arg(self.ws()).args(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs `verb APP main args…`.
    fn db(&self, verb: &str, args: &[&str]) -> Out {
        let mut all = vec![verb, APP, "main"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn exec(&self, sql: &str) {
        self.db("sql", &[sql]).ok();
    }

    /// The rows of a query, as JSON.
    fn rows(&self, sql: &str) -> serde_json::Value {
        let out = self.db("sql", &[sql]).ok();
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        doc["rows"].clone()
    }

    fn names(&self) -> serde_json::Value {
        self.rows("SELECT name FROM t ORDER BY name")
    }

    /// The schema version recorded by migrations (0 before the first).
    fn schema_version(&self) -> serde_json::Value {
        let exists = self.rows("SELECT count(*) FROM sqlite_schema WHERE name = '_sila_meta'");
        if exists == serde_json::json!([[0]]) {
            return serde_json::json!(0);
        }
        self.rows("SELECT version FROM _sila_meta ORDER BY rowid DESC LIMIT 1")[0][0].clone()
    }

    /// Snapshot ids listed by `snapshots`, oldest first.
    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.db("snapshots", &[]).quiet();
        out.stdout.lines().map(|l| l.split(' ').next().unwrap().to_string()).collect()
    }
}

impl Drop for TempWs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn snapshot_restore_round_trip_and_undo() {
    let t = TempWs::new("roundtrip");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('a')");

    let snap = t.db("snapshot", &["--label", "before b"]).quiet().uuid();
    t.exec("INSERT INTO t VALUES ('b')");
    assert_eq!(t.names(), serde_json::json!([["a"], ["b"]]));

    let undo = t.db("restore", &[&snap]).quiet().uuid();
    assert_ne!(undo, snap);
    assert_eq!(t.names(), serde_json::json!([["a"]]), "restored to the snapshot");

    let undo_of_undo = t.db("restore", &[&undo]).quiet().uuid();
    assert_eq!(t.names(), serde_json::json!([["a"], ["b"]]), "the undo snapshot reverses the restore");

    // Listing: oldest first, one line each: UUID SIZE SCHEMA CREATED LABEL.
    let list = t.db("snapshots", &[]).quiet();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    let first: Vec<&str> = lines[0].splitn(5, ' ').collect();
    assert_eq!(first[0], snap);
    assert!(first[1].parse::<u64>().unwrap() >= 4096, "size in bytes: {}", lines[0]);
    assert_eq!(first[2], "0", "schema version");
    assert!(first[3].ends_with('Z') && first[3].contains('T'), "UTC time: {}", lines[0]);
    assert_eq!(first[4], "before b");
    assert!(lines[1].starts_with(&format!("{undo} ")), "{}", list.stdout);
    assert!(lines[1].ends_with(&format!(" undo of restore of {snap}")), "{}", list.stdout);
    assert!(lines[2].starts_with(&format!("{undo_of_undo} ")), "{}", list.stdout);

    let json = t.db("snapshots", &["--json"]).quiet();
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let arr = doc.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{doc}");
    assert_eq!(arr[0]["id"], snap.as_str());
    assert_eq!(arr[0]["label"], "before b");
    assert_eq!(arr[0]["schema"], 0);
    assert_eq!(arr[0]["size"].as_u64().unwrap(), first[1].parse::<u64>().unwrap());
    assert!(arr[0]["created_ms"].as_u64().unwrap() > 1_600_000_000_000, "{doc}");
    assert_eq!(arr[0]["created"], first[3]);
    assert_eq!(arr[1]["id"], undo.as_str());
}

#[test]
fn restore_refuses_unknown_and_malformed_ids_and_changes_nothing() {
    let t = TempWs::new("restore-errors");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('a')");
    t.db("snapshot", &[]).quiet().uuid();

    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    let out = t.db("restore", &[unknown]);
    assert_eq!(
        out.failed(),
        format!("error[NOT_FOUND]: snapshot {unknown} does not exist (never taken, or dropped)")
    );
    let out = t.db("restore", &["not-a-uuid"]);
    assert!(
        out.failed().starts_with("error[INVALID_ARGUMENT]: snapshot id \"not-a-uuid\" is not a UUID"),
        "{}",
        out.stderr
    );
    let out = t.run(&["restore", "com.nope", "main", unknown]);
    assert_eq!(out.failed(), "error[NOT_FOUND]: app \"com.nope\" is not registered");

    assert_eq!(t.names(), serde_json::json!([["a"]]));
    assert_eq!(t.snapshot_ids().len(), 1, "no undo snapshot was taken for a refused restore");
}

#[test]
fn export_writes_a_standalone_file_sqlite_opens() {
    let t = TempWs::new("export");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('a'), ('b')");
    let file = t.path("out.sqlite");
    let out = t.db("export", &[file.to_str().unwrap()]).quiet();
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(out.stdout, format!("{len} bytes written to {}\n", file.display()));

    let conn =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete", "self-contained: no WAL needed");
    let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
    drop(conn);

    // The stock sqlite3 shell, when this machine has one.
    match Command::new("sqlite3").arg(&file).arg("PRAGMA integrity_check").output() {
        Ok(shell) => {
            assert!(shell.status.success(), "{}", String::from_utf8_lossy(&shell.stderr));
            assert_eq!(String::from_utf8_lossy(&shell.stdout), "ok\n");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: no sqlite3 on PATH; skipped the stock-shell integrity_check");
        }
        Err(e) => panic!("running sqlite3: {e}"),
    }

    let out = t.db("export", &[file.to_str().unwrap()]);
    assert_eq!(out.failed(), format!("error[ALREADY_EXISTS]: {} already exists", file.display()));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), len, "the existing file is untouched");
}

#[test]
fn export_gzip_round_trips_through_import() {
    let t = TempWs::new("export-gzip");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('kept')");
    let file = t.path("out.sqlite.gz");
    let out = t.db("export", &[file.to_str().unwrap(), "--gzip"]).quiet();
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(out.stdout, format!("{len} bytes written to {}\n", file.display()));
    assert_eq!(std::fs::read(&file).unwrap()[..2], [0x1f, 0x8b], "a gzip file");

    t.exec("DELETE FROM t");
    let out = t.db("import", &[file.to_str().unwrap()]).quiet();
    let checks = out.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(checks.starts_with("checks passed: gzip, header, "), "{}", out.stdout);
    assert_eq!(t.names(), serde_json::json!([["kept"]]));
}

#[test]
fn import_checks_the_file_and_refuses_random_bytes_changing_nothing() {
    let t = TempWs::new("import");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('live')");

    // Random bytes (a fixed xorshift stream, so a failure reproduces).
    let junk = t.path("junk.sqlite");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(&junk, &bytes).unwrap();
    let before = t.snapshot_ids();
    let out = t.db("import", &[junk.to_str().unwrap()]);
    let line = out.failed();
    assert!(line.starts_with("error[CORRUPT]: "), "{}", out.stderr);
    assert!(line.contains("'header'"), "names the check: {line}");
    assert_eq!(t.names(), serde_json::json!([["live"]]), "the database is unchanged");
    assert_eq!(t.snapshot_ids(), before);

    let missing = t.path("missing.sqlite");
    let out = t.db("import", &[missing.to_str().unwrap()]);
    assert!(out.failed().starts_with("error[NOT_FOUND]: "), "{}", out.stderr);

    // A good file: made with rusqlite, the way an operator would bring one.
    let good = t.path("good.sqlite");
    {
        let conn = rusqlite::Connection::open(&good).unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT); INSERT INTO t VALUES ('imported');").unwrap();
    }
    let out = t.db("import", &[good.to_str().unwrap(), "--expect-table", "nope"]);
    let line = out.failed();
    assert!(line.starts_with("error[INVALID_ARGUMENT]: "), "{}", out.stderr);
    assert!(line.contains("'expected_schema'") && line.contains("\"nope\""), "{line}");
    assert_eq!(t.names(), serde_json::json!([["live"]]));

    let out = t.db("import", &[good.to_str().unwrap(), "--expect-table", "t"]).quiet();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with(&format!("imported {} as ", good.display())), "{}", out.stdout);
    assert_eq!(
        lines[1],
        "checks passed: header, page_size, wal, integrity_check, cell_size_check, schema, expected_schema, journal_mode"
    );
    assert_eq!(t.names(), serde_json::json!([["imported"]]));
    // The import kept the version it replaced; restoring that undoes it.
    let undo = lines[2]
        .strip_prefix("undo snapshot: ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no undo snapshot line: {}", out.stdout));
    assert!(t.snapshot_ids().contains(&undo.to_string()), "{undo} is listed");
    t.db("restore", &[undo, "--allow-schema-change"]).quiet();
    assert_eq!(t.names(), serde_json::json!([["live"]]), "restoring the undo brings the old data back");
}

#[test]
fn backup_prints_id_and_path_and_keeps_the_newest() {
    let t = TempWs::new("backup");
    t.exec("CREATE TABLE t (name TEXT)");
    let mut paths = Vec::new();
    for _ in 0..3 {
        let out = t.db("backup", &["--keep", "2"]).quiet();
        let (id, path) = out.stdout.trim_end().split_once(' ').unwrap();
        assert_eq!(id.len(), 36, "{}", out.stdout);
        let path = PathBuf::from(path);
        assert!(path.starts_with(t.ws().join("backups")), "{}", out.stdout);
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with(id), "{}", out.stdout);
        paths.push(path);
    }
    assert!(!paths[0].exists(), "only the newest 2 are kept");
    assert!(paths[1].exists() && paths[2].exists());
    let conn =
        rusqlite::Connection::open_with_flags(&paths[2], rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");

    let out = t.db("backup", &["--keep", "0"]);
    assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: --keep must be at least 1"), "{}", out.stderr);
}

#[test]
fn migrate_dry_run_changes_nothing_real_run_applies_failing_step_rolls_back() {
    let t = TempWs::new("migrate");
    t.exec("CREATE TABLE t (name TEXT)");
    t.exec("INSERT INTO t VALUES ('a')");
    let plan = t.path("steps.json");
    std::fs::write(
        &plan,
        r#"{"currentVersion":2,"steps":[
            {"from":0,"to":1,"up":"CREATE TABLE u (x INTEGER)","down":"DROP TABLE u"},
            {"from":1,"to":2,"up":"ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 7","down":"ALTER TABLE t DROP COLUMN n"}]}"#,
    )
    .unwrap();
    let plan_arg = plan.to_str().unwrap();

    let dry = t.db("migrate", &[plan_arg, "--dry-run"]).quiet();
    assert_eq!(
        dry.stdout,
        "version   0 → 2\nsteps     2 would apply: 0→1, 1→2\nsnapshot  dry run: nothing changed\n"
    );
    assert_eq!(t.schema_version(), 0);
    assert_eq!(t.rows("SELECT count(*) FROM sqlite_schema WHERE name = 'u'"), serde_json::json!([[0]]));
    assert!(t.snapshot_ids().is_empty(), "a dry run takes no snapshot");

    let real = t.db("migrate", &[plan_arg]).quiet();
    let lines: Vec<&str> = real.stdout.lines().collect();
    assert_eq!(lines[..2], ["version   0 → 2", "steps     2 applied: 0→1, 1→2"], "{}", real.stdout);
    let snap = lines[2].strip_prefix("snapshot  ").unwrap().split(' ').next().unwrap();
    assert_eq!(t.snapshot_ids(), [snap], "the automatic snapshot is listed");
    let again = t.db("migrate", &[plan_arg]).quiet();
    assert_eq!(
        again.stdout,
        "version   2 → 2\nsteps     none: already at version 2\nsnapshot  none (nothing changed)\n"
    );
    assert_eq!(t.schema_version(), 2);
    assert_eq!(t.rows("SELECT name, n FROM t"), serde_json::json!([["a", 7]]));

    // The pre-migration snapshot has schema version 0: restoring it needs the flag.
    let out = t.db("restore", &[snap]);
    let line = out.failed();
    assert!(line.starts_with("error[INVALID_ARGUMENT]: "), "{line}");
    assert!(line.contains("schema version 0 and the database has 2; pass --allow-schema-change"), "{line}");
    assert_eq!(t.schema_version(), 2, "the refused restore changed nothing");
    let undo = t.db("restore", &[snap, "--allow-schema-change"]).quiet().uuid();
    assert_eq!(t.schema_version(), 0);
    assert_eq!(t.rows("SELECT name FROM t"), serde_json::json!([["a"]]));
    t.db("restore", &[&undo, "--allow-schema-change"]).quiet().uuid();
    assert_eq!(t.schema_version(), 2);

    // Step 3 of the chain fails: MIGRATION_FAILED naming it, and the database stays at 2.
    std::fs::write(
        &plan,
        r#"{"currentVersion":4,"steps":[
            {"from":0,"to":1,"up":"CREATE TABLE u (x INTEGER)","down":"DROP TABLE u"},
            {"from":1,"to":2,"up":"ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 7","down":"ALTER TABLE t DROP COLUMN n"},
            {"from":2,"to":3,"up":"CREATE TABLE v (y)","down":"DROP TABLE v"},
            {"from":3,"to":4,"up":"INSERT INTO no_such_table VALUES (1)","down":""}]}"#,
    )
    .unwrap();
    let out = t.db("migrate", &[plan_arg]);
    let line = out.failed();
    assert!(line.starts_with("error[MIGRATION_FAILED]: migration step 2 of 2 (3→4) failed: "), "{line}");
    assert!(line.contains("no_such_table"), "SQLite's message: {line}");
    assert_eq!(t.schema_version(), 2);
    assert_eq!(t.rows("SELECT count(*) FROM sqlite_schema WHERE name = 'v'"), serde_json::json!([[0]]));
    assert_eq!(t.rows("SELECT name, n FROM t"), serde_json::json!([["a", 7]]));

    // Bad plan files get typed errors.
    std::fs::write(&plan, "{not json").unwrap();
    let out = t.db("migrate", &[plan_arg]);
    assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: "), "{}", out.stderr);
    let missing = t.path("missing.json");
    let out = t.db("migrate", &[missing.to_str().unwrap()]);
    assert!(
        out.failed().starts_with(&format!("error[IO]: reading migration plan {}: ", missing.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn retention_drops_old_snapshots_and_gc_frees_their_bytes() {
    let t = TempWs::new("retention");
    t.exec("CREATE TABLE t (name TEXT)");
    let ids: Vec<String> =
        (0..3).map(|i| t.db("snapshot", &["--label", &format!("s{i}")]).quiet().uuid()).collect();
    assert_eq!(t.snapshot_ids(), ids);

    let out = t.db("retention", &[]);
    assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: give a policy"), "{}", out.stderr);

    let out = t.db("retention", &["--keep-last", "1"]).ok();
    assert_eq!(out.stdout, format!("{}\n{}\n", ids[0], ids[1]), "stdout is exactly the dropped ids");
    assert!(out.stderr.contains("gc"), "suggests gc: {}", out.stderr);
    assert_eq!(t.snapshot_ids(), [ids[2].clone()]);

    let gc = t.run(&["gc"]).quiet();
    let summary = gc.stdout.lines().last().unwrap();
    let freed: u64 = summary
        .strip_prefix("gc       ")
        .and_then(|s| s.split(", ").nth(1))
        .and_then(|s| s.strip_suffix(" bytes freed"))
        .unwrap_or_else(|| panic!("summary line: {summary}"))
        .parse()
        .unwrap();
    assert!(freed >= 2 * 4096, "{}", gc.stdout);
    for id in &ids[..2] {
        assert!(
            gc.stdout.lines().any(|l| l.starts_with("removed  ") && l.contains(id.as_str())),
            "{}",
            gc.stdout
        );
    }
    assert!(!gc.stdout.contains(&ids[2]), "the kept snapshot stays: {}", gc.stdout);

    let again = t.run(&["gc"]).quiet();
    assert_eq!(again.stdout, "gc       0 file(s) removed, 0 bytes freed\n");
    let out = t.db("retention", &["--keep-last", "1"]).ok();
    assert_eq!(out.stdout, "", "nothing more to drop");

    // The kept snapshot still restores.
    t.db("restore", &[&ids[2]]).quiet().uuid();
}

/// On a terminal the long copies show a one-line progress note. `script` provides one; where
/// it is missing the check is skipped with a note.
#[test]
fn progress_shows_on_a_terminal() {
    let t = TempWs::new("tty");
    t.exec("CREATE TABLE t (name TEXT)");
    let cmd = format!("'{BIN}' --workspace '{}' snapshot {APP} main", t.ws().display());
    let out = match Command::new("script").args(["-qec", &cmd, "/dev/null"]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: no `script` on PATH; skipped the terminal progress check");
            return;
        }
        Err(e) => panic!("running script: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("snapshot: working… done in "), "{text}");
    assert!(text.contains(" ms"), "{text}");
    assert_eq!(t.snapshot_ids().len(), 1);
}

#[test]
fn checkpoint_and_compact_keep_the_rows_and_shrink_the_file() {
    let t = TempWs::new("compact");
    t.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)");
    t.exec(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 2000) \
         INSERT INTO t SELECT i, hex(randomblob(500)) FROM k",
    );
    t.exec("DELETE FROM t WHERE id > 20");
    let out = t.db("checkpoint", &[]).quiet();
    assert!(out.stdout.starts_with("checkpoint ") && out.stdout.contains("complete"), "{}", out.stdout);
    let out = t.db("compact", &[]).quiet();
    let sizes: Vec<u64> = out
        .stdout
        .strip_prefix("compact  ")
        .and_then(|s| s.split(" bytes").next())
        .map(|s| s.split(" -> ").map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(sizes[1] * 10 < sizes[0], "{}", out.stdout);
    assert_eq!(t.rows("SELECT count(*) FROM t"), serde_json::json!([[20]]));
    let gc = t.run(&["gc"]).quiet();
    assert!(gc.stdout.contains("1 file(s) removed"), "the replaced file: {}", gc.stdout);
    let out = t.run(&["compact", APP, "nope"]);
    assert!(out.failed().starts_with("error[CAPABILITY_DENIED]"), "{}", out.stderr);
}

#[test]
fn maintain_checks_every_database_and_collects_garbage() {
    let t = TempWs::new("maintain");
    t.exec("CREATE TABLE t (x)");
    for label in ["a", "b"] {
        t.db("snapshot", &["--label", label]).quiet();
    }
    let out = t.run(&["maintain", "--full", "--keep-last", "1"]).quiet();
    assert!(
        out.stdout.contains(&format!("maintain   {APP} main integrity_check: ok, 1 snapshot(s) dropped")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("gc       1 file(s) removed"), "{}", out.stdout);
    let out = t.run(&["maintain", "--budget-ms", "0"]).quiet();
    assert!(out.stdout.contains("main quick_check: ok"), "{}", out.stdout);
}

#[test]
fn audit_prints_what_changed_the_workspace_across_runs() {
    let t = TempWs::new("audit");
    t.exec("CREATE TABLE t (x)");
    let snap = t.db("snapshot", &["--label", "nightly"]).quiet().uuid();
    let undo = t.db("restore", &[&snap]).quiet().uuid();
    // Each CLI run is its own process: the trail is on disk, not in memory.
    let out = t.run(&["audit"]).quiet();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let fields = |line: &str| line.splitn(7, ' ').map(str::to_string).collect::<Vec<_>>();
    let first = fields(lines[0]);
    assert_eq!((first[0].as_str(), first[2].as_str(), first[3].as_str()), ("1", "register_app", APP));
    assert!(first[1].ends_with('Z') && first[1].contains('T'), "UTC time: {}", lines[0]);
    assert_eq!(first[4], "ok");
    let second = fields(lines[1]);
    assert_eq!((second[2].as_str(), second[3].as_str()), ("snapshot", &*format!("{APP}/main")));
    assert!(second[6].contains(&snap) && second[6].contains("nightly"), "{}", lines[1]);
    assert!(lines[2].contains(" restore ") && lines[2].contains(&undo), "{}", lines[2]);

    // A refused import is recorded with its code.
    let garbage = t.path("garbage.sqlite");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    assert!(t.db("import", &[garbage.to_str().unwrap()]).failed().contains("CORRUPT"));
    let out = t.run(&["audit", "--json", "--app", APP, "--limit", "1"]).quiet();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["damaged"], 0);
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{doc}");
    assert_eq!(
        (&records[0]["op"], &records[0]["outcome"], &records[0]["code"]),
        (&"import".into(), &"error".into(), &"CORRUPT".into())
    );

    // --since: a duration before now, or unix milliseconds.
    assert_eq!(t.run(&["audit", "--since", "1h"]).quiet().stdout.lines().count(), 4);
    assert_eq!(t.run(&["audit", "--since", "99999999999999"]).quiet().stdout, "");
    assert_eq!(t.run(&["audit", "--app", "com.test.nobody"]).quiet().stdout, "");
    assert!(t.run(&["audit", "--since", "soon"]).failed().contains("INVALID_ARGUMENT"));
    assert!(t.run(&["audit", "--limit", "0"]).failed().contains("INVALID_ARGUMENT"));
    assert!(t.run(&["audit", "--limit", "10001"]).failed().contains("INVALID_ARGUMENT"));
    assert_eq!(t.run(&["audit", "--limit", "10000"]).quiet().stdout.lines().count(), 4);
}
