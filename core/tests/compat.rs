//! The compatibility suite: application SQL run through the public API and through plain
//! SQLite (rusqlite, the same bundled SQLite, foreign keys on, WAL), statement by statement,
//! comparing column names, rows with their storage classes, changes, `last_insert_rowid` and
//! SQLite's error codes; and SQLite's own sqllogictest evidence files run through the API.
//!
//! The corpus is `tests/compat/corpus/*.sql` (format in `tests/compat/README.md`). Each case
//! starts from an empty database. Statements run one request each, as an app would send them;
//! a case that uses savepoints runs inside one transaction on both sides. The engine routes
//! like an SDK: `describe` asks SQLite whether the statement writes, then `exec` or `query`.
//!
//! What may differ is written down, with its reason, in [`DELIBERATE`] and in
//! `docs/compat.md`: every difference must be an engine refusal (a typed error) of a kind
//! listed there, never a different answer; and at least [`IDENTICAL_MIN_PERCENT`] of the
//! statements must give identical outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use rusqlite::types::ValueRef;
use sila_sqlite::{Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::fmt;
use std::path::{Path, PathBuf};
use support::TempDir;

const MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":64}],"tier":"standard"}}}"#;

/// Statements whose outcome must be identical, in percent of the corpus.
const IDENTICAL_MIN_PERCENT: f64 = 98.0;

/// Engine refusals that are deliberate, by error code and a phrase of their message (the
/// reasons are in docs/compat.md). A difference that matches none of these fails the suite.
const DELIBERATE: [(ErrorCode, &str); 4] = [
    (ErrorCode::PolicyDenied, "PRAGMA"),
    (ErrorCode::PolicyDenied, "transaction API"),
    (ErrorCode::PolicyDenied, "refused in a query"),
    (ErrorCode::PolicyDenied, "belongs to the engine"),
];

/// Statements whose outcome differs from plain SQLite for a reason written down in
/// docs/compat.md: (file, case, statement number from 1, reason). Each must still differ (a
/// stale entry fails the suite), and no other statement may.
const KNOWN: [(&str, &str, usize, &str); 5] = [
    // A request that fails changes nothing: plain SQLite keeps the rows INSERT OR FAIL and
    // RAISE(FAIL) wrote before the failure; the engine rolls the request back whole.
    ("crud_upsert.sql", "insert-or-conflict-resolution", 11, "failed request rolled back whole"),
    ("triggers_fk.sql", "trigger-raise-variants", 11, "failed request rolled back whole"),
    ("triggers_fk.sql", "trigger-raise-variants", 12, "failed request rolled back whole"),
    // Double-quoted strings are identifiers only (SQLITE_DBCONFIG_DQS_DML off).
    ("orm_patterns.sql", "orm-sqlalchemy-drizzle-quoting", 15, "double-quoted string literal"),
    // SQLITE_FULL of an exhausted AUTOINCREMENT rowid reads as QUOTA_EXCEEDED: SQLite gives the
    // same code and message as for max_page_count, and nothing tells them apart afterwards.
    ("crud_upsert.sql", "autoincrement-and-rowid", 8, "rowid exhaustion reported as quota"),
];

fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// One case of the corpus.
struct Case {
    file: String,
    name: String,
    statements: Vec<String>,
}

/// Whether `sql` ends a complete statement, as SQLite's own tokenizer sees it (a `;` inside a
/// trigger's BEGIN … END does not).
fn complete(sql: &str) -> bool {
    let Ok(text) = std::ffi::CString::new(sql) else { return false };
    // SAFETY: `text` is a live NUL-terminated string for the duration of the call;
    // sqlite3_complete only reads it.
    #[allow(unsafe_code)]
    let done = unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) };
    done != 0
}

fn parse_corpus(file: &str, text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- case:") {
            assert!(
                current.trim().is_empty(),
                "{file}: unterminated statement before case {name}: {current}"
            );
            current.clear();
            cases.push(Case {
                file: file.to_string(),
                name: name.trim().to_string(),
                statements: Vec::new(),
            });
            continue;
        }
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with("--")) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') && complete(&current) {
            let case = cases.last_mut().unwrap_or_else(|| panic!("{file}: SQL before the first case"));
            case.statements.push(current.trim().to_string());
            current.clear();
        }
    }
    assert!(current.trim().is_empty(), "{file}: unterminated statement at the end: {current}");
    cases
}

fn load_corpus() -> Vec<Case> {
    let dir = repo_dir("tests/compat/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            parse_corpus(&p.file_name().unwrap().to_string_lossy(), &std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

/// What a statement did, comparable across the two sides.
#[derive(Debug, Clone)]
enum Outcome {
    Done {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
        changes: u64,
        last_insert_rowid: i64,
    },
    /// SQLite's extended result code (and its message, not compared).
    Sqlite(i32, String),
    /// An engine refusal that is not SQLite's.
    Refused(ErrorCode, String),
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (
                Outcome::Done { columns: c1, rows: r1, changes: n1, last_insert_rowid: l1 },
                Outcome::Done { columns: c2, rows: r2, changes: n2, last_insert_rowid: l2 },
            ) => {
                c1 == c2
                    && n1 == n2
                    && l1 == l2
                    && r1.len() == r2.len()
                    && r1
                        .iter()
                        .zip(r2)
                        .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y)))
            }
            (Outcome::Sqlite(a, _), Outcome::Sqlite(b, _)) => a == b,
            _ => false,
        }
    }
}

/// Equal values of the same storage class; reals bit for bit.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done { columns, rows, changes, last_insert_rowid } => {
                let shown: Vec<String> = rows.iter().take(3).map(|r| format!("{r:?}")).collect();
                write!(
                    f,
                    "ok {columns:?} {} rows {} changes {changes} rowid {last_insert_rowid}",
                    rows.len(),
                    shown.join(" ")
                )
            }
            Outcome::Sqlite(code, message) => write!(f, "SQLite error {code}: {message}"),
            Outcome::Refused(code, message) => write!(f, "{} {message}", code.name()),
        }
    }
}

/// The engine's answer as an outcome.
fn outcome(r: sila_sqlite::Result<sila_sqlite::ExecResult>) -> Outcome {
    match r {
        Ok(r) => Outcome::Done {
            columns: r.rows.columns,
            rows: r.rows.rows,
            changes: r.changes,
            last_insert_rowid: r.last_insert_rowid,
        },
        Err(e) => engine_error(e),
    }
}

fn engine_error(e: sila_sqlite::Error) -> Outcome {
    match (e.code(), e.sqlite_code()) {
        (ErrorCode::Sqlite, Some(code)) => Outcome::Sqlite(code, e.message().to_string()),
        (code, _) => Outcome::Refused(code, e.message().to_string()),
    }
}

/// The engine's side: a fresh workspace and database per case.
struct Engine {
    _dir: TempDir,
    _ws: Workspace,
    db: Database,
}

impl Engine {
    fn new(name: &str) -> Engine {
        Engine::with_manifest(name, MANIFEST)
    }

    fn with_manifest(name: &str, manifest: &str) -> Engine {
        let dir = TempDir::new(&format!("compat-{name}"));
        let ws = Workspace::open(&dir.0, WorkspaceOptions::default()).unwrap();
        ws.register_app("com.example.compat", manifest).unwrap();
        let db = ws.open_app("com.example.compat").unwrap().open("main").unwrap();
        Engine { _dir: dir, _ws: ws, db }
    }

    /// Runs one statement as an SDK would route it: SQLite says whether it writes.
    fn run(&self, sql: &str) -> Outcome {
        let writes = match self.db.describe(sql) {
            Ok(info) => info.writes,
            Err(e) => return engine_error(e),
        };
        let answer = if writes {
            self.db.exec(sql, &[])
        } else {
            self.db.query(sql, &[]).map(|rows| sila_sqlite::ExecResult { rows, ..Default::default() })
        };
        outcome(answer)
    }

    /// Runs a whole case inside one transaction (a case with savepoints).
    fn run_in_transaction(&self, statements: &[String]) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let r = self.db.transaction(|tx| {
            for sql in statements {
                // On the writer: exec answers reads too (a reader would not see this
                // transaction's tables).
                outcomes.push(outcome(tx.exec(sql, &[])));
            }
            Ok(())
        });
        if let Err(e) = r {
            outcomes.push(engine_error(e));
        }
        outcomes
    }
}

/// Plain SQLite: the same bundled library, foreign keys on, WAL, a file of its own.
struct Reference {
    _dir: TempDir,
    conn: rusqlite::Connection,
}

impl Reference {
    fn new(name: &str) -> Reference {
        let dir = TempDir::new(&format!("compat-ref-{name}"));
        std::fs::create_dir_all(&dir.0).unwrap();
        let conn = rusqlite::Connection::open(dir.0.join("ref.sqlite")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;").unwrap();
        Reference { _dir: dir, conn }
    }

    /// Runs one statement; `own_request`: it is a request of its own, which starts with
    /// `last_insert_rowid()` at 0 in the engine (statements of one transaction see each
    /// other's, as here).
    fn run(&self, sql: &str, own_request: bool) -> Outcome {
        if own_request {
            // SAFETY: `conn.handle()` is the live sqlite3* of `conn`, used on this thread only.
            #[allow(unsafe_code)]
            unsafe {
                rusqlite::ffi::sqlite3_set_last_insert_rowid(self.conn.handle(), 0);
            }
        }
        let before = self.conn.total_changes();
        let result = (|| -> rusqlite::Result<(Vec<String>, Vec<Vec<Value>>)> {
            let mut stmt = self.conn.prepare(sql)?;
            let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
            let width = columns.len();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mut values = Vec::with_capacity(width);
                for i in 0..width {
                    values.push(value_of(row.get_ref(i)?));
                }
                out.push(values);
            }
            Ok((columns, out))
        })();
        match result {
            Ok((columns, rows)) => {
                let changes = if self.conn.total_changes() == before { 0 } else { self.conn.changes() };
                Outcome::Done { columns, rows, changes, last_insert_rowid: self.conn.last_insert_rowid() }
            }
            Err(e @ (rusqlite::Error::SqliteFailure(..) | rusqlite::Error::SqlInputError { .. })) => {
                let code = e.sqlite_error().map_or_else(
                    || {
                        if let rusqlite::Error::SqlInputError { error, .. } = &e {
                            error.extended_code
                        } else {
                            0
                        }
                    },
                    |f| f.extended_code,
                );
                Outcome::Sqlite(code, e.to_string())
            }
            Err(other) => Outcome::Refused(ErrorCode::Internal, other.to_string()),
        }
    }
}

/// A value as the engine returns it: TEXT that is not UTF-8 comes back as its bytes.
fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_string()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn uses_savepoints(case: &Case) -> bool {
    case.statements.iter().any(|s| {
        let head = s.trim_start().get(..9).unwrap_or_default().to_ascii_uppercase();
        head.starts_with("SAVEPOINT") || head.starts_with("RELEASE") || head.starts_with("ROLLBACK")
    })
}

#[test]
fn application_sql_behaves_as_plain_sqlite() {
    let cases = load_corpus();
    assert!(
        cases.len() >= 80 && cases.iter().map(|c| c.statements.len()).sum::<usize>() >= 1000,
        "the corpus shrank"
    );
    let (mut total, mut identical) = (0usize, 0usize);
    let mut deliberate = Vec::new();
    let mut unexplained = Vec::new();
    let mut known_seen: Vec<(&str, &str, usize, &str)> = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let engine = Engine::new(&n.to_string());
        let reference = Reference::new(&n.to_string());
        let in_transaction = uses_savepoints(case);
        let ours: Vec<Outcome> = if in_transaction {
            reference.run("BEGIN", true);
            engine.run_in_transaction(&case.statements)
        } else {
            case.statements.iter().map(|sql| engine.run(sql)).collect()
        };
        let theirs: Vec<Outcome> =
            case.statements.iter().map(|sql| reference.run(sql, !in_transaction)).collect();
        for (i, sql) in case.statements.iter().enumerate() {
            total += 1;
            let (a, b) = (&ours[i], &theirs[i]);
            if a == b {
                identical += 1;
                continue;
            }
            let line = format!(
                "{}/{} #{}: {}\n    engine:    {a}\n    sqlite:    {b}",
                case.file,
                case.name,
                i + 1,
                sql.replace('\n', " ")
            );
            if let Some(known) =
                KNOWN.iter().find(|(f, c, n, _)| *f == case.file && *c == case.name && *n == i + 1)
            {
                known_seen.push(*known);
                deliberate.push(format!("{line}\n    known:     {}", known.3));
                continue;
            }
            match a {
                Outcome::Refused(code, message)
                    if DELIBERATE.iter().any(|(c, m)| c == code && message.contains(m)) =>
                {
                    deliberate.push(line)
                }
                _ => unexplained.push(line),
            }
        }
    }
    let percent = 100.0 * identical as f64 / total.max(1) as f64;
    println!(
        "compat: {identical} of {total} statements identical ({percent:.1}%), {} deliberate refusals",
        deliberate.len()
    );
    for line in &deliberate {
        println!("deliberate: {line}");
    }
    assert!(
        unexplained.is_empty(),
        "{} differences no deliberate refusal explains:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let stale: Vec<_> = KNOWN.iter().filter(|k| !known_seen.contains(k)).collect();
    assert!(
        stale.is_empty(),
        "listed differences that no longer differ (update KNOWN and docs/compat.md): {stale:?}"
    );
    assert!(percent >= IDENTICAL_MIN_PERCENT, "only {percent:.1}% identical");
}

// ----- sqllogictest ---------------------------------------------------------------------------

/// The engine as a sqllogictest database. SQLite's files keep TEMP views across statements,
/// which the engine allows only with the manifest's `tempObjects` relaxation, and then on the
/// connection that made them: so this app has the relaxation and sends every statement to
/// the writer with exec (which returns rows as a query does).
struct SltEngine(Engine);

const SLT_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":64}],"policy":{"tempObjects":true}}}}"#;

impl SltEngine {
    fn new(name: &str) -> SltEngine {
        SltEngine(Engine::with_manifest(name, SLT_MANIFEST))
    }
}

#[derive(Debug)]
struct SltError(String);

impl fmt::Display for SltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

/// A cell as SQLite's sqllogictest prints it: NULL, "(empty)" for an empty string, reals with
/// three decimals, control and non-ASCII characters as '@'.
fn slt_cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format!("{f:.3}"),
        Value::Text(s) if s.is_empty() => "(empty)".into(),
        Value::Text(s) => s.chars().map(|c| if (' '..='~').contains(&c) { c } else { '@' }).collect(),
        Value::Blob(b) => b.iter().map(|&c| if (32..=126).contains(&c) { c as char } else { '@' }).collect(),
    }
}

impl sqllogictest::DB for SltEngine {
    type Error = SltError;
    type ColumnType = sqllogictest::DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<sqllogictest::DBOutput<Self::ColumnType>, SltError> {
        match outcome(self.0.db.exec(sql, &[])) {
            Outcome::Done { columns, changes, .. } if columns.is_empty() => {
                Ok(sqllogictest::DBOutput::StatementComplete(changes))
            }
            Outcome::Done { columns, rows, .. } => Ok(sqllogictest::DBOutput::Rows {
                types: vec![sqllogictest::DefaultColumnType::Any; columns.len()],
                rows: rows.iter().map(|r| r.iter().map(slt_cell).collect()).collect(),
            }),
            other => Err(SltError(other.to_string())),
        }
    }
}

#[test]
fn sqlite_sqllogictest_evidence_files_pass_through_the_api() {
    let dir = repo_dir("tests/compat/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{} files", files.len());
    let mut failures = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let mut runner =
            sqllogictest::Runner::new(move || async move { Ok(SltEngine::new(&format!("slt-{n}"))) });
        runner.add_label("sqlite");
        // SQLite's runner ignores words after a condition (`onlyif sqlite # empty RHS`); this
        // runner's parser does not, so those trailing comments are cut.
        let script: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|line| match line.split_once('#') {
                Some((condition, _)) if line.starts_with("onlyif") || line.starts_with("skipif") => {
                    condition.trim_end()
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = runner.run_script_with_name(&script, file.display().to_string()) {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
