//! The adversarial battery: SQL and API calls an untrusted app might send, each through the
//! public API, each asserting the exact error code and that nothing changed on disk outside
//! the attacking app's own directory (the rest of the workspace, the victim app's files, and a
//! directory beside the workspace that the attacks aim at).
//!
//! Import-related attacks (malicious schemas in imported files) belong with the versions work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::{BrokerOptions, Database, Error, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod support;
use support::TempDir;

const ATTACKER: &str = "com.example.attacker";
const VICTIM: &str = "com.example.victim";
const ATTACKER_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":4},{"name":"shared","maxSizeMB":4},{"name":"ro","readOnly":true}],"tier":"standard"}}}"#;
const VICTIM_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":4},{"name":"shared","maxSizeMB":4}],"tier":"standard"}}}"#;

/// How an attack reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `Database::query` (a reader connection).
    Query,
    /// `Database::exec` (the writer, inside a group commit).
    Exec,
    /// `Tx::exec` inside `Database::transaction`.
    Tx,
}

/// One SQL attack: how it is sent, the SQL, and the exact code it must get.
struct Attack {
    via: Via,
    sql: String,
    expect: ErrorCode,
}

fn attack(via: Via, sql: impl Into<String>, expect: ErrorCode) -> Attack {
    Attack { via, sql: sql.into(), expect }
}

/// A workspace with an attacking app and a victim app holding a secret.
struct Harness {
    _dir: TempDir,
    ws: Workspace,
    db: Database,
    attacker_dir: PathBuf,
    victim_file: PathBuf,
    /// A directory beside the workspace that escape attempts aim at.
    outside: PathBuf,
}

fn options() -> BrokerOptions {
    let mut options =
        BrokerOptions { statement_timeout: Duration::from_millis(400), ..BrokerOptions::default() };
    // A row flood hits this cap long before the statement timeout, even on a loaded machine.
    options.query_limits.rows_max = 10_000;
    options
}

fn harness(name: &str) -> Harness {
    harness_with(name, options())
}

fn harness_with(name: &str, broker: BrokerOptions) -> Harness {
    let dir = TempDir::new(name);
    let outside = dir.0.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let ws = Workspace::open(dir.0.join("ws"), WorkspaceOptions { broker, ..WorkspaceOptions::default() })
        .unwrap();
    let attacker = ws.register_app(ATTACKER, ATTACKER_MANIFEST).unwrap();
    ws.register_app(VICTIM, VICTIM_MANIFEST).unwrap();
    let victim = ws.open_app(VICTIM).unwrap().open("main").unwrap();
    victim.exec("CREATE TABLE secrets(k TEXT PRIMARY KEY, v TEXT)", &[]).unwrap();
    victim.exec("INSERT INTO secrets VALUES ('password', 'hunter2')", &[]).unwrap();
    drop(victim);
    // Close the victim's connections (checkpointing its WAL) so its files no longer change.
    ws.broker().close_idle(Duration::ZERO);
    let db = ws.open_app(ATTACKER).unwrap().open("sila://db/main").unwrap();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", &[]).unwrap();
    db.exec("INSERT INTO t(v) VALUES ('a'), ('b')", &[]).unwrap();
    let attacker_dir = ws.root().join("apps").join(attacker.app_uuid.to_string());
    let victim_file = find_sqlite_file(&ws.root().join("apps"), &attacker_dir);
    Harness { _dir: dir, ws, db, attacker_dir, victim_file, outside }
}

/// The victim's live `main` database file (the one `.sqlite` outside the attacker's dir that
/// holds the secret).
fn find_sqlite_file(apps: &Path, exclude: &Path) -> PathBuf {
    let mut found = Vec::new();
    walk(apps, &mut |p| {
        if !p.starts_with(exclude) && p.extension().is_some_and(|e| e == "sqlite") {
            found.push(p.to_path_buf());
        }
    });
    found.sort_by_key(|p| std::fs::metadata(p).map(|m| std::cmp::Reverse(m.len())).ok());
    found.into_iter().next().expect("the victim has a database file")
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        f(&path);
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, f);
        }
    }
}

/// Every file and directory under the workspace (minus the attacker's directory) and the
/// outside directory, with size and modification time.
type DiskImage = BTreeMap<PathBuf, (bool, u64, Option<SystemTime>)>;

impl Harness {
    fn disk(&self) -> DiskImage {
        let mut image = DiskImage::new();
        for root in [self.ws.root(), self.outside.as_path()] {
            walk(root, &mut |p| {
                // The workspace's tmp/ holds SQLite's spill files while a statement runs (they
                // are capped and removed at close): its entries come and go with any sort.
                // The audit trail records a write refused for quota, once a minute per
                // database (`audit_holds_at_most_the_attackers_quota_refusals` checks what).
                if p.starts_with(&self.attacker_dir)
                    || p.starts_with(self.ws.root().join("tmp"))
                    || p.starts_with(self.ws.root().join("audit"))
                {
                    return;
                }
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    image.insert(p.to_path_buf(), (m.is_dir(), m.len(), m.modified().ok()));
                }
            });
        }
        image
    }

    fn run(&self, via: Via, sql: &str, params: &[Value]) -> sila_sqlite::Result<()> {
        match via {
            Via::Query => self.db.query(sql, params).map(drop),
            Via::Exec => self.db.exec(sql, params).map(drop),
            Via::Tx => self.db.transaction(|tx| tx.exec(sql, params)).map(drop),
        }
    }

    /// Runs an attack and checks its code, that the disk outside the attacker's directory is
    /// unchanged, and that the attacker's own database still works.
    fn refused(&self, a: &Attack) -> Error {
        self.refused_with(a, &[])
    }

    fn refused_with(&self, a: &Attack, params: &[Value]) -> Error {
        let before = self.disk();
        let err = match self.run(a.via, &a.sql, params) {
            Ok(()) => panic!("attack succeeded: {:?} {}", a.via, short(&a.sql)),
            Err(e) => e,
        };
        assert_eq!(err.code(), a.expect, "{:?} {}\n  got: {err}", a.via, short(&a.sql));
        assert!(!err.message().is_empty());
        let after = self.disk();
        assert_eq!(
            before,
            after,
            "disk changed outside the attacker's directory: {:?} {}",
            a.via,
            short(&a.sql)
        );
        self.still_works();
        err
    }

    fn still_works(&self) {
        assert_eq!(self.db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(2)));
    }
}

fn short(sql: &str) -> String {
    sql.chars().take(160).collect()
}

fn policy_denied(h: &Harness, attacks: &[Attack], must_mention: &[&str]) {
    for (a, needle) in attacks.iter().zip(must_mention.iter().cycle()) {
        let err = h.refused(a);
        assert!(err.message().contains(needle), "{}: {err}", short(&a.sql));
    }
}

// ----- ATTACH, DETACH, VACUUM INTO ------------------------------------------------------------

fn attach_attacks(h: &Harness) -> Vec<Attack> {
    let outside = h.outside.join("stolen.sqlite").display().to_string();
    let victim = h.victim_file.display().to_string();
    let own = h.attacker_dir.join("db").join("main").join("copy.sqlite").display().to_string();
    use ErrorCode::PolicyDenied as P;
    vec![
        attack(Via::Exec, "ATTACH '/etc/passwd' AS x", P),
        attack(Via::Exec, format!("ATTACH '{outside}' AS x"), P),
        attack(Via::Query, format!("ATTACH '{outside}' AS x"), P),
        attack(Via::Tx, format!("ATTACH '{outside}' AS x"), P),
        attack(Via::Exec, "ATTACH 'relative-escape.sqlite' AS x", P),
        attack(Via::Exec, "ATTACH '../../../../etc/passwd' AS x", P),
        attack(Via::Exec, format!("ATTACH '{victim}' AS v"), P),
        attack(Via::Query, format!("ATTACH '{victim}' AS v"), P),
        attack(Via::Exec, "ATTACH 'sila://db/main' AS me", P),
        attack(Via::Exec, "ATTACH 'sila://db/shared' AS main", P),
        attack(Via::Exec, "ATTACH 'sila://db/not-in-manifest' AS n", P),
        attack(Via::Exec, format!("ATTACH 'sila://app/{VICTIM}/db/main' AS v"), P),
        attack(Via::Exec, format!("ATTACH 'file:{outside}?mode=rwc' AS x"), P),
        attack(Via::Exec, format!("ATTACH 'file:{victim}?mode=ro&vfs=unix' AS x"), P),
        attack(Via::Exec, "ATTACH 'file::memory:?cache=shared' AS m", P),
        attack(Via::Exec, "ATTACH ':memory:' AS m", P),
        attack(Via::Exec, "ATTACH '' AS scratch", P),
        attack(Via::Exec, format!("ATTACH '{own}' AS own"), P),
        attack(Via::Exec, "DETACH main", P),
        attack(Via::Exec, "DETACH DATABASE temp", P),
        // A query is refused before anything runs: SQLite says VACUUM writes.
        attack(Via::Query, format!("VACUUM INTO '{outside}'"), ErrorCode::WriteInQuery),
        attack(Via::Exec, format!("VACUUM INTO '{outside}'"), P),
        attack(Via::Tx, format!("VACUUM INTO '{own}'"), P),
        attack(Via::Query, "VACUUM", ErrorCode::WriteInQuery),
        attack(Via::Exec, "VACUUM", P),
    ]
}

#[test]
fn attach_detach_and_vacuum_into_are_refused() {
    let h = harness("attach");
    let attacks = attach_attacks(&h);
    for a in &attacks {
        let err = h.refused(a);
        let m = err.message();
        assert!(
            m.contains("ATTACH")
                || m.contains("VACUUM")
                || m.contains("DETACH")
                || m.contains("run it with exec"),
            "{}: {err}",
            a.sql
        );
        // The message never echoes the path the attack named.
        assert!(!m.contains("passwd") && !m.contains("stolen"), "{err}");
    }
    // The name may also arrive as a parameter, where the authorizer sees no literal.
    let a = attack(Via::Exec, "ATTACH ? AS x", ErrorCode::PolicyDenied);
    h.refused_with(&a, &[Value::Text(h.outside.join("p.sqlite").display().to_string())]);
    let a = attack(Via::Exec, "VACUUM INTO ?", ErrorCode::PolicyDenied);
    h.refused_with(&a, &[Value::Text(h.outside.join("p.sqlite").display().to_string())]);
    assert_eq!(std::fs::read_dir(&h.outside).unwrap().count(), 0, "nothing was written outside");
}

// ----- Names: traversal in database names and app ids -----------------------------------------

#[test]
fn traversal_in_database_names_and_app_ids_is_refused() {
    let h = harness("names");
    let app = h.ws.open_app(ATTACKER).unwrap();
    let before = h.disk();
    let names: &[(&str, ErrorCode)] = &[
        ("../main", ErrorCode::InvalidName),
        ("main/../../victim", ErrorCode::InvalidName),
        ("sila://db/../../etc/passwd", ErrorCode::InvalidName),
        ("sila://db/main%2f..%2f..", ErrorCode::InvalidName),
        ("/etc/passwd", ErrorCode::InvalidName),
        ("MAIN", ErrorCode::InvalidName),
        ("current", ErrorCode::InvalidName),
        ("main\0", ErrorCode::InvalidName),
        ("mаin", ErrorCode::InvalidName), // Cyrillic 'а'
        ("sila://app/com.example.victim/db/main", ErrorCode::CapabilityDenied),
        ("sila://app/../db/main", ErrorCode::InvalidName),
        ("not-in-manifest", ErrorCode::CapabilityDenied),
    ];
    for (name, code) in names {
        let err = app.open(name).unwrap_err();
        assert_eq!(err.code(), *code, "{name:?}: {err}");
    }
    let ids: &[(&str, ErrorCode)] = &[
        ("../com.example.victim", ErrorCode::InvalidName),
        ("com.example.victim/..", ErrorCode::InvalidName),
        ("..", ErrorCode::InvalidName),
        ("a\\b", ErrorCode::InvalidName),
        ("com.example.unknown", ErrorCode::NotFound),
    ];
    for (id, code) in ids {
        assert_eq!(h.ws.open_app(id).unwrap_err().code(), *code, "open_app {id:?}");
        if *code == ErrorCode::InvalidName {
            let err = h.ws.register_app(id, ATTACKER_MANIFEST).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidName, "register {id:?}");
        }
    }
    // A manifest naming a traversal database is refused before anything is created.
    let evil = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"../../escape"}]}}}"#;
    assert_eq!(h.ws.register_app("com.example.evil", evil).unwrap_err().code(), ErrorCode::InvalidManifest);
    assert_eq!(before, h.disk());
}

// ----- Schema tampering -----------------------------------------------------------------------

#[test]
fn schema_tampering_is_refused() {
    let h = harness("schema");
    use ErrorCode::{PolicyDenied as P, Sqlite as S};
    let attacks = vec![
        attack(Via::Exec, "PRAGMA writable_schema=1", P),
        attack(Via::Tx, "PRAGMA writable_schema=ON", P),
        attack(Via::Query, "PRAGMA writable_schema=RESET", P),
        attack(Via::Exec, "PRAGMA schema_version=1", P),
        // Defensive mode: SQLite itself refuses direct writes to the schema table.
        attack(Via::Exec, "UPDATE sqlite_schema SET sql = 'CREATE TABLE t(x)' WHERE name = 't'", S),
        attack(Via::Exec, "INSERT INTO sqlite_master VALUES ('table','x','x',2,'CREATE TABLE x(y)')", S),
        attack(Via::Exec, "DELETE FROM sqlite_master", S),
        // Temporary objects: refused in a query; elsewhere they end with their request (below).
        attack(Via::Query, "CREATE TEMP TABLE shadow(x)", P),
        attack(Via::Query, "CREATE TEMP VIEW tv AS SELECT 1", P),
        attack(Via::Exec, "CREATE VIRTUAL TABLE tok USING fts3tokenize(simple)", P),
        attack(Via::Exec, "CREATE VIRTUAL TABLE st USING dbstat", P),
    ];
    for a in &attacks {
        h.refused(a);
    }
    // A temporary table that shadows a main one, or a temporary trigger on a main table, lives
    // only for the request that made it: the next request sees the main schema.
    h.db.exec("CREATE TEMP TABLE t(v)", &[]).unwrap();
    h.db.exec(
        "CREATE TEMP TRIGGER tt AFTER INSERT ON main.t BEGIN SELECT RAISE(ABORT, 'hijacked'); END",
        &[],
    )
    .unwrap();
    h.db.exec("INSERT INTO t(v) VALUES ('main')", &[]).unwrap();
    h.db.exec("DELETE FROM t WHERE v = 'main'", &[]).unwrap();
    h.still_works();
    // Triggers and views that call refused functions: they may be created, but a statement
    // that would run them is refused while it is prepared, so nothing runs.
    h.db.exec("CREATE TABLE log(x)", &[]).unwrap();
    h.db.exec(
        "CREATE TRIGGER evil AFTER INSERT ON log BEGIN SELECT load_extension('/tmp/evil.so'); END",
        &[],
    )
    .unwrap();
    h.db.exec("CREATE VIEW evil_view AS SELECT fts3_tokenizer('simple') AS p", &[]).unwrap();
    let err = h.refused(&attack(Via::Exec, "INSERT INTO log VALUES (1)", P));
    assert!(err.message().contains("load_extension"), "{err}");
    let err = h.refused(&attack(Via::Query, "SELECT * FROM evil_view", P));
    assert!(err.message().contains("fts3_tokenizer"), "{err}");
    assert_eq!(h.db.query_value("SELECT count(*) FROM log", &[]).unwrap(), Some(Value::Integer(0)));
    assert_eq!(h.db.query_value("PRAGMA quick_check", &[]).unwrap(), Some(Value::Text("ok".into())));
}

// ----- PRAGMAs ----------------------------------------------------------------------------------

const DENIED_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode=DELETE",
    "PRAGMA journal_mode=OFF",
    "PRAGMA Journal_Mode = MEMORY",
    "PRAGMA main.journal_mode=TRUNCATE",
    "PRAGMA synchronous=OFF",
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA mmap_size=1073741824",
    "PRAGMA max_page_count=4294967294",
    "PRAGMA page_size=65536",
    "PRAGMA cache_size=-2000000",
    "PRAGMA cache_spill=0",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA temp_store_directory='/tmp'",
    "PRAGMA temp_store_directory",
    "PRAGMA data_store_directory='/tmp'",
    "PRAGMA wal_autocheckpoint=1",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "PRAGMA wal_checkpoint",
    "PRAGMA journal_size_limit=-1",
    "PRAGMA trusted_schema=ON",
    "PRAGMA cell_size_check=ON",
    "PRAGMA query_only=OFF",
    "PRAGMA busy_timeout=0",
    "PRAGMA soft_heap_limit=1",
    "PRAGMA hard_heap_limit=1",
    "PRAGMA threads=8",
    "PRAGMA shrink_memory",
    "PRAGMA database_list",
    "PRAGMA case_sensitive_like=1",
    "PRAGMA recursive_triggers=ON",
    "PRAGMA secure_delete=ON",
    "PRAGMA incremental_vacuum",
    "PRAGMA auto_vacuum=FULL",
    "PRAGMA encoding='UTF-16'",
    "PRAGMA ignore_check_constraints=ON",
    "PRAGMA legacy_alter_table=ON",
    "PRAGMA automatic_index=OFF",
    "PRAGMA analysis_limit=0",
    "PRAGMA fullfsync=ON",
    "PRAGMA count_changes=ON",
    "PRAGMA lock_status",
    "PRAGMA no_such_pragma",
    "SELECT * FROM pragma_database_list",
];

#[test]
fn each_denied_pragma_is_refused_on_every_path() {
    let h = harness("pragmas");
    for (i, sql) in DENIED_PRAGMAS.iter().enumerate() {
        // Spread the PRAGMAs over the three ways in, and send the most dangerous on all three.
        let vias: &[Via] = if i < 6 {
            &[Via::Query, Via::Exec, Via::Tx]
        } else {
            &[[Via::Query, Via::Exec, Via::Tx][i % 3]]
        };
        for via in vias {
            let err = h.refused(&attack(*via, *sql, ErrorCode::PolicyDenied));
            assert!(err.message().contains("PRAGMA"), "{sql}: {err}");
        }
    }
    // Every refusal is counted in the database's metrics.
    let refused = h.db.stats().metrics.error_count(ErrorCode::PolicyDenied);
    assert!(refused >= DENIED_PRAGMAS.len() as u64, "{refused} refusals counted");
    // The settings are unchanged on the connections the app uses.
    assert_eq!(h.db.query_value("PRAGMA journal_mode", &[]).unwrap(), Some(Value::Text("wal".into())));
    assert_eq!(
        h.db.exec("PRAGMA journal_mode", &[]).unwrap().rows.rows,
        vec![vec![Value::Text("wal".into())]]
    );
    // The engine's VFS offers no memory mapping at all: SQLite answers no row.
    let mmap = h.db.query_value("PRAGMA mmap_size", &[]).unwrap();
    assert!(matches!(mmap, None | Some(Value::Integer(0))), "{mmap:?}");
    assert_eq!(h.db.query_value("PRAGMA trusted_schema", &[]).unwrap(), Some(Value::Integer(0)));
    // A query still cannot write: refused before it runs.
    assert_eq!(h.db.query("INSERT INTO t(v) VALUES ('x')", &[]).unwrap_err().code(), ErrorCode::WriteInQuery);
    // The allowlist works.
    for sql in [
        "PRAGMA table_info(t)",
        "PRAGMA index_list(t)",
        "PRAGMA integrity_check",
        "PRAGMA foreign_key_check",
        "PRAGMA user_version",
        "PRAGMA page_count",
        "SELECT * FROM pragma_table_info('t')",
    ] {
        h.db.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Setting an engine's PRAGMA to the value it has changes nothing and is accepted, as
    // migration tools and ORMs send it.
    for sql in [
        "PRAGMA journal_mode=WAL",
        "PRAGMA temp_store=FILE",
        "PRAGMA busy_timeout=5000",
        "PRAGMA trusted_schema=OFF",
        "PRAGMA foreign_keys=ON",
        "PRAGMA cell_size_check=OFF",
    ] {
        h.db.exec(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        h.db.transaction(|tx| tx.exec(sql, &[])).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    h.db.exec("PRAGMA user_version=7", &[]).unwrap();
    assert_eq!(h.db.query_value("PRAGMA user_version", &[]).unwrap(), Some(Value::Integer(7)));
}

// ----- Functions ----------------------------------------------------------------------------

#[test]
fn dangerous_functions_are_refused() {
    let h = harness("functions");
    use ErrorCode::{PolicyDenied as P, Sqlite as S};
    let attacks = [
        attack(Via::Query, "SELECT load_extension('/tmp/evil.so')", P),
        attack(Via::Exec, "SELECT load_extension('/tmp/evil.so', 'sqlite3_evil_init')", P),
        attack(Via::Query, "SELECT LOAD_EXTENSION('libc.so.6')", P),
        attack(Via::Query, "SELECT fts3_tokenizer('simple')", P),
        attack(Via::Exec, "SELECT fts3_tokenizer('evil', x'4141414141414141')", P),
        attack(Via::Query, "SELECT fts5(NULL)", P),
        // Shell-only file functions are not compiled in at all.
        attack(Via::Query, "SELECT readfile('/etc/passwd')", S),
        attack(Via::Exec, "SELECT writefile('/tmp/sila-pwned', 'x')", S),
    ];
    let mentions = [
        "load_extension",
        "load_extension",
        "load_extension",
        "fts3_tokenizer",
        "fts3_tokenizer",
        "fts5",
        "no such function",
        "no such function",
    ];
    policy_denied(&h, &attacks, &mentions);
    assert!(!Path::new("/tmp/sila-pwned").exists());
}

// ----- Transactions in SQL ------------------------------------------------------------------

#[test]
fn transaction_control_in_sql_is_refused() {
    let h = harness("txcontrol");
    for sql in ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK"] {
        for via in [Via::Exec, Via::Tx, Via::Query] {
            let err = h.refused(&attack(via, sql, ErrorCode::PolicyDenied));
            assert!(err.message().contains("transaction API"), "{sql}: {err}");
        }
    }
    // Savepoints nest inside a request or transaction, never in a query (autocommit on a
    // reader) and never under the engine's own names.
    for sql in ["SAVEPOINT s", "RELEASE s", "ROLLBACK TO s"] {
        let err = h.refused(&attack(Via::Query, sql, ErrorCode::PolicyDenied));
        assert!(err.message().contains("refused in a query"), "{sql}: {err}");
    }
    for sql in ["SAVEPOINT _sila_request", "RELEASE _sila_request", "ROLLBACK TO _SILA_request"] {
        for via in [Via::Exec, Via::Tx] {
            let err = h.refused(&attack(via, sql, ErrorCode::PolicyDenied));
            assert!(err.message().contains("engine's"), "{sql}: {err}");
        }
    }
    // The engine's own statements sit in the statement cache, where SQLite does not ask the
    // authorizer again: app SQL never reaches them, whatever its text.
    for sql in [
        "/* sila internal */ SAVEPOINT _sila_request",
        "  /* sila internal */ RELEASE _sila_request",
        "/* sila internal */ PRAGMA defer_foreign_keys",
    ] {
        for via in [Via::Exec, Via::Query] {
            let err = h.refused(&attack(via, sql, ErrorCode::PolicyDenied));
            assert!(err.message().contains("marker"), "{sql}: {err}");
        }
    }
    // A savepoint the app leaves open ends with its request: nothing leaks into the next one.
    h.db.exec("SAVEPOINT s", &[]).unwrap();
    let err = h.db.exec("RELEASE s", &[]).unwrap_err();
    assert!(err.message().contains("no such savepoint"), "{err}");
}

// ----- Resource bombs -----------------------------------------------------------------------

#[test]
fn size_and_complexity_bombs_are_refused_without_hurting_the_database() {
    let h = harness("bombs");
    use ErrorCode::{
        InvalidArgument as A, QuotaExceeded as Q, ResultTooLarge as R, Sqlite as S, Timeout as T,
    };
    let in_list: String = (0..200_000).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let deep = format!("SELECT 1{}", " + 1".repeat(400));
    let compound = vec!["SELECT 1"; 150].join(" UNION ALL ");
    let columns: String = (0..600).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ");
    let pattern = "%a".repeat(1000);
    let args = vec!["1"; 300].join(",");
    let bombs = vec![
        attack(Via::Query, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c", T),
        attack(Via::Exec, "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c WHERE x < 0)", T),
        attack(Via::Query, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c", R),
        attack(Via::Query, "SELECT zeroblob(2000000000)", A),
        attack(Via::Query, "SELECT randomblob(1000000000)", A),
        attack(Via::Exec, "INSERT INTO t(v) VALUES (zeroblob(100000000))", A),
        attack(Via::Query, "SELECT printf('%.*c', 2000000000, 'x')", A),
        attack(Via::Query, "SELECT length(group_concat(zeroblob(1000000))) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100) SELECT x FROM c)", A),
        attack(Via::Query, "SELECT replace(hex(zeroblob(5000000)), '00', 'ffffffff')", A),
        attack(Via::Exec, "INSERT INTO t(v) VALUES (zeroblob(10000000))", Q),
        attack(Via::Query, format!("SELECT 1 WHERE 1 IN ({in_list})"), A),
        attack(Via::Query, deep, S),
        attack(Via::Query, compound, S),
        attack(Via::Exec, format!("CREATE TABLE wide({columns})"), S),
        attack(Via::Query, format!("SELECT 'a' LIKE '{pattern}'"), S),
        attack(Via::Query, format!("SELECT max({args})"), S),
        attack(Via::Query, "SELECT ?5000", S),
        attack(Via::Query, "SELECT randomblob(100) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 50000) SELECT x FROM c)", R),
        attack(Via::Query, "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000000) SELECT DISTINCT randomblob(64) FROM c)", T),
    ];
    for a in &bombs {
        h.refused(a);
    }
    // A huge IN list bound as parameters is refused before anything is bound.
    let params: Vec<Value> = (0..5000).map(Value::Integer).collect();
    let placeholders = vec!["?"; 5000].join(",");
    let a = attack(Via::Query, format!("SELECT 1 WHERE 1 IN ({placeholders})"), S);
    h.refused_with(&a, &params);
    // Nested triggers deeper than SQLITE_LIMIT_TRIGGER_DEPTH.
    for i in 0..=40 {
        h.db.exec(&format!("CREATE TABLE chain{i}(x)"), &[]).unwrap();
    }
    for i in 0..40 {
        h.db.exec(
            &format!("CREATE TRIGGER tr{i} AFTER INSERT ON chain{i} BEGIN INSERT INTO chain{}(x) VALUES (new.x); END", i + 1),
            &[],
        )
        .unwrap();
    }
    let err = h.refused(&attack(Via::Exec, "INSERT INTO chain0 VALUES (1)", S));
    assert!(err.message().contains("trigger"), "{err}");
    // A view-expansion bomb: each level doubles the program.
    h.db.exec("CREATE VIEW v0 AS SELECT 1 AS x", &[]).unwrap();
    for i in 1..=24 {
        h.db.exec(&format!("CREATE VIEW v{i} AS SELECT a.x FROM v{} a, v{} b", i - 1, i - 1), &[]).unwrap();
    }
    let err = h.db.query("SELECT count(*) FROM v24", &[]).unwrap_err();
    assert!(matches!(err.code(), ErrorCode::Sqlite | ErrorCode::Timeout), "{err}");
    // The quota refusal left the database consistent and usable.
    assert_eq!(h.db.query_value("PRAGMA quick_check", &[]).unwrap(), Some(Value::Text("ok".into())));
    h.db.exec("INSERT INTO chain40 VALUES (1)", &[]).unwrap();
    // The audit trail holds the write refused for quota, once (and nothing else of the
    // bombs): an attacker cannot fill it.
    let records = h.ws.audit(&sila_sqlite::AuditQuery::default()).unwrap().records;
    let refusals: Vec<_> = records.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!((refusals[0].op.as_str(), refusals[0].error.as_deref()), ("write", Some("QUOTA_EXCEEDED")));
}

// ----- Budgets --------------------------------------------------------------------------------

#[test]
fn budget_exhaustion_is_refused_with_the_refill_time_and_spares_other_apps() {
    let broker = BrokerOptions {
        statements_per_minute: 40,
        rows_read_per_minute: 1_000,
        rows_written_per_minute: 100,
        ..options()
    };
    let h = harness_with("budget", broker);
    // Setup used 3 statements of the attacker's budget (CREATE, INSERT, and the harness's
    // still_works is not run yet). Burn the rest.
    let mut refused = None;
    for i in 0..100 {
        match h.db.query_value("SELECT 1", &[]) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, err) = refused.expect("the statement budget runs out");
    assert!(i <= 40, "refused after {i} statements");
    assert_eq!(err.code(), ErrorCode::BudgetExceeded, "{err}");
    assert!(err.message().contains("statements_per_minute is 40"), "{err}");
    assert!(err.message().contains(" ms"), "names the time until refill: {err}");
    // Every kind of request is refused, including transactions and non-blocking calls.
    assert_eq!(
        h.db.exec("INSERT INTO t(v) VALUES ('x')", &[]).unwrap_err().code(),
        ErrorCode::BudgetExceeded
    );
    assert_eq!(h.db.transaction(|_| Ok(())).unwrap_err().code(), ErrorCode::BudgetExceeded);
    assert_eq!(h.db.submit_query("SELECT 1", vec![]).wait().unwrap_err().code(), ErrorCode::BudgetExceeded);
    // Every refusal is counted in the database's metrics.
    // (the query that ran out, then the exec, the transaction and the non-blocking query).
    assert_eq!(h.db.stats().metrics.error_count(ErrorCode::BudgetExceeded), 4);
    // Another app is not affected.
    let victim = h.ws.open_app(VICTIM).unwrap().open("main").unwrap();
    assert_eq!(
        victim.query_value("SELECT v FROM secrets", &[]).unwrap(),
        Some(Value::Text("hunter2".into()))
    );
}

#[test]
fn row_budgets_are_charged_after_the_fact_and_refuse_the_next_request() {
    let broker = BrokerOptions { rows_read_per_minute: 500, rows_written_per_minute: 50, ..options() };
    let h = harness_with("rowbudget", broker);
    let rows = h
        .db
        .query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 800) SELECT x FROM c", &[])
        .unwrap();
    assert_eq!(rows.rows.len(), 800, "a request admitted runs to the end");
    let err = h.db.query("SELECT 1", &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BudgetExceeded);
    assert!(err.message().contains("rows_read_per_minute is 500"), "{err}");

    let h = harness_with("rowbudget-w", BrokerOptions { rows_written_per_minute: 50, ..options() });
    h.db.exec(
        "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 60) SELECT x FROM c)",
        &[],
    )
    .unwrap();
    let err = h.db.exec("DELETE FROM t", &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BudgetExceeded);
    assert!(err.message().contains("rows_written_per_minute is 50"), "{err}");
}

// ----- Concurrency ------------------------------------------------------------------------------

#[test]
fn many_concurrent_requests_from_one_app_are_bounded() {
    let broker = BrokerOptions {
        max_concurrent_requests_per_app: 16,
        statement_timeout: Duration::from_secs(3),
        ..options()
    };
    let h = harness_with("flood", broker);
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
    let pending: Vec<_> = (0..200).map(|_| h.db.submit_query(forever, vec![])).collect();
    let victim = h.ws.open_app(VICTIM).unwrap().open("main").unwrap();
    // While the attacker holds every slot it may, the victim is served.
    for _ in 0..20 {
        assert_eq!(victim.query_value("SELECT count(*) FROM secrets", &[]).unwrap(), Some(Value::Integer(1)));
    }
    assert!(h.ws.broker().connections_open() <= 2 * (BrokerOptions::default().readers_max + 1));
    let mut busy = 0;
    for p in pending {
        p.cancel();
        match p.wait() {
            Err(e) if e.code() == ErrorCode::Busy => busy += 1,
            Err(e) => assert!(matches!(e.code(), ErrorCode::Cancelled | ErrorCode::Timeout), "{e}"),
            Ok(r) => panic!("an endless query finished: {r:?}"),
        }
    }
    assert!(busy >= 200 - 16, "at most 16 admitted, {busy} refused");
    h.still_works();
}

#[test]
fn two_apps_racing_on_the_same_logical_name_stay_apart() {
    let h = harness("race");
    let a = h.ws.open_app(ATTACKER).unwrap().open("sila://db/shared").unwrap();
    let b = h.ws.open_app(VICTIM).unwrap().open("sila://db/shared").unwrap();
    a.exec("CREATE TABLE IF NOT EXISTS owner(app TEXT, n INTEGER)", &[]).unwrap();
    b.exec("CREATE TABLE IF NOT EXISTS owner(app TEXT, n INTEGER)", &[]).unwrap();
    let threads: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
        .into_iter()
        .flat_map(|(db, who)| {
            (0..4).map(move |t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        db.exec(
                            "INSERT INTO owner VALUES (?, ?)",
                            &[Value::Text(who.into()), Value::Integer(t * 100 + i)],
                        )
                        .unwrap();
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (db, who) in [(&a, "a"), (&b, "b")] {
        let rows = db.query("SELECT app, count(*) FROM owner GROUP BY app", &[]).unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![Value::Text(who.into()), Value::Integer(200)]],
            "{who} sees only its rows"
        );
    }
    // The same logical name is a different file in each app's directory.
    let a_files: Vec<_> =
        std::fs::read_dir(h.attacker_dir.join("db").join("shared")).unwrap().flatten().collect();
    assert!(!a_files.is_empty());
    // Neither app can name the other's database.
    let app = h.ws.open_app(ATTACKER).unwrap();
    assert_eq!(
        app.open(&format!("sila://app/{VICTIM}/db/shared")).unwrap_err().code(),
        ErrorCode::CapabilityDenied
    );
}

// ----- Other ways in -----------------------------------------------------------------------

#[test]
fn writes_through_reads_and_read_only_databases_are_refused() {
    let h = harness("readonly");
    use ErrorCode::{PolicyDenied as P, Sqlite as S};
    let attacks = [
        attack(Via::Query, "INSERT INTO t(v) VALUES ('via query')", ErrorCode::WriteInQuery),
        attack(Via::Query, "DELETE FROM t", ErrorCode::WriteInQuery),
        attack(Via::Query, "PRAGMA query_only=0", P),
        attack(Via::Query, "SELECT * FROM secrets", S),
        attack(Via::Query, "SELECT * FROM main.secrets", S),
        attack(Via::Query, "SELECT * FROM victim.secrets", S),
    ];
    for a in &attacks {
        h.refused(a);
    }
    let ro = h.ws.open_app(ATTACKER).unwrap().open("ro").unwrap();
    assert_eq!(ro.exec("CREATE TABLE x(y)", &[]).unwrap_err().code(), ErrorCode::ReadOnly);
    assert_eq!(
        ro.transaction(|tx| tx.exec("CREATE TABLE x(y)", &[])).unwrap_err().code(),
        ErrorCode::ReadOnly
    );
}

/// The broker's own statements (checkpoints, savepoints) still pass the policy that refuses
/// them to apps.
#[test]
fn the_broker_itself_still_checkpoints_and_commits() {
    let broker = BrokerOptions { wal_checkpoint_bytes: 64 * 1024, ..options() };
    let h = harness_with("internal", broker);
    for i in 0..200 {
        h.db.exec("INSERT INTO t(v) VALUES (?)", &[Value::Text(format!("{i:0>1000}"))]).unwrap();
    }
    let stats = h.db.stats();
    assert!(stats.metrics.checkpoints > 0, "the broker's PRAGMA wal_checkpoint passed: {:?}", stats.metrics);
    assert_eq!(h.db.query_value("SELECT count(*) FROM t", &[]).unwrap(), Some(Value::Integer(202)));
}

#[test]
fn battery_has_at_least_sixty_distinct_attacks() {
    let h = harness("count");
    let sql_attacks = attach_attacks(&h).len() + 2 // parameter forms
        + 12 + 2 // schema tampering + trigger/view
        + DENIED_PRAGMAS.len()
        + 8 // functions
        + 8 // transaction control statements
        + 19 + 1 + 1 + 1 // bombs, parameter IN list, trigger chain, view bomb
        + 6; // reads and read-only
    let api_attacks = 12 + 5 + 1 // names, app ids, manifest
        + 2 // budgets
        + 1 // flood
        + 1; // race
    assert!(sql_attacks + api_attacks >= 60, "{sql_attacks} + {api_attacks}");
}
