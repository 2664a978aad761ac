//! Runs the built `sila-sqlite` binary against temporary workspaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sila-sqlite");

/// A manifest with a 1 MB database (for quota refusals) and a read-only one.
const SMALL_MANIFEST: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":1},{"name":"logs","maxSizeMB":8,"readOnly":true}],"tier":"standard"}}}"#;

/// A temporary workspace directory, removed when dropped.
struct TempWs {
    dir: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn first_err_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or("")
    }

    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a failure with exit code 1, nothing on stdout, and returns stderr's first line.
    fn failed(&self) -> &str {
        assert_eq!(self.code, 1, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.stdout, "", "a failed command prints nothing on stdout");
        self.first_err_line()
    }
}

impl TempWs {
    fn new(name: &str) -> TempWs {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempWs { dir }
    }

    fn ws(&self) -> PathBuf {
        self.dir.join("ws")
    }

    fn run(&self, args: &[&str]) -> Out {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.run_with_stdin(&args, b"")
    }

    /// Runs with any (even non-UTF-8) arguments and `stdin` as standard input.
    fn run_with_stdin(&self, args: &[&OsStr], stdin: &[u8]) -> Out {
        let mut child = Command::new(BIN)
            .arg("--workspace")
            .arg(self.ws())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // The CLI may refuse before reading it all: a closed pipe is not the test's failure.
        let _ = input.write_all(stdin);
        drop(input);
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Registers `app` with `manifest`; returns its uuid.
    fn register(&self, app: &str, manifest: &str) -> String {
        let path = self.dir.join(format!("{app}.json"));
        std::fs::write(&path, manifest).unwrap();
        let out = self.run(&["app", "register", path.to_str().unwrap(), "--app", app]).ok();
        let line = out.stdout.trim_end();
        let (id, uuid) = line.split_once(' ').unwrap();
        assert_eq!(id, app);
        assert_eq!(uuid.len(), 36, "{line}");
        uuid.to_string()
    }

    fn sql(&self, app: &str, db: &str, sql: &str, params: &[&str]) -> Out {
        let mut args = vec!["sql", app, db, sql];
        for p in params {
            args.push("--param");
            args.push(p);
        }
        self.run(&args)
    }
}

impl Drop for TempWs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pretty JSON document printed after the `metrics` line of `demo`.
fn demo_metrics(stdout: &str) -> serde_json::Value {
    let start = stdout.find("\n{").expect("metrics JSON");
    serde_json::from_str(&stdout[start..]).unwrap()
}

#[test]
fn demo_runs_twice_and_prints_results_and_metrics() {
    let t = TempWs::new("demo");
    let first = t.run(&["demo"]).ok();
    assert!(first.stdout.contains("app          com.example.analytics (uuid "), "{}", first.stdout);
    assert!(first.stdout.contains("run 1: inserted 1000 events"), "{}", first.stdout);
    assert!(first.stdout.contains("COUNT(*) = 1000, user-7: 100"), "{}", first.stdout);
    assert!(first.stdout.contains("    run1-evt0997    "), "newest event of user-7 first:\n{}", first.stdout);
    let metrics = demo_metrics(&first.stdout);
    assert_eq!(metrics["app"], "com.example.analytics");
    assert_eq!(metrics["db"], "analytics");
    assert_eq!(metrics["metrics"]["rows_written"], 1000);
    assert!(metrics["metrics"]["execs"].as_u64().unwrap() >= 1000, "{metrics}");
    assert!(metrics["metrics"]["latency_us_p50"].is_u64(), "{metrics}");

    let second = t.run(&["demo"]).ok();
    assert!(second.stdout.contains("run 2: inserted 1000 events"), "{}", second.stdout);
    assert!(second.stdout.contains("COUNT(*) = 2000, user-7: 200"), "{}", second.stdout);
    assert!(second.stdout.contains("    run2-evt0997    "), "{}", second.stdout);
    assert!(
        second.stdout.contains("    run2-evt0957    "),
        "timestamps continue after the previous run, so the newest five are this run's:\n{}",
        second.stdout
    );
    assert_eq!(demo_metrics(&second.stdout)["metrics"]["errors_total"], 0);

    let count = t.sql("com.example.analytics", "analytics", "SELECT count(*) AS n FROM events", &[]).ok();
    assert_eq!(
        count.stdout,
        "{\"columns\":[\"n\"],\"rows\":[[2000]],\"changes\":0,\"last_insert_rowid\":0}\n"
    );
}

#[test]
fn app_register_is_idempotent_and_list_shows_every_app() {
    let t = TempWs::new("apps");
    let uuid = t.register("com.test.small", SMALL_MANIFEST);
    assert_eq!(t.register("com.test.small", SMALL_MANIFEST), uuid, "same manifest: same app");
    let other =
        t.register("com.test.other", r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}]}}}"#);
    let list = t.run(&["app", "list"]).ok();
    assert_eq!(
        list.stdout,
        format!(
            "com.test.other {other} standard a:256MB\ncom.test.small {uuid} standard main:1MB,logs:8MB:ro\n"
        )
    );

    let path = t.dir.join("different.json");
    std::fs::write(&path, r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"b"}]}}}"#).unwrap();
    let out = t.run(&["app", "register", path.to_str().unwrap(), "--app", "com.test.small"]);
    assert!(out.failed().starts_with("error[ALREADY_EXISTS]: "), "{}", out.stderr);

    std::fs::write(
        &path,
        r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"b","maxSizeMB":0}]}}}"#,
    )
    .unwrap();
    let out = t.run(&["app", "register", path.to_str().unwrap(), "--app", "com.test.bad"]);
    assert!(out.failed().starts_with("error[INVALID_MANIFEST]: "), "{}", out.stderr);
    assert!(out.stderr.contains("maxSizeMB"), "names the field: {}", out.stderr);

    let missing = t.dir.join("missing.json");
    let out = t.run(&["app", "register", missing.to_str().unwrap(), "--app", "com.test.x"]);
    assert!(out.failed().starts_with(&format!("error[IO]: reading manifest {}: ", missing.display())));
}

#[test]
fn app_update_changes_databases_and_unregister_exports_first_then_removes() {
    let t = TempWs::new("lifecycle");
    let uuid = t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "CREATE TABLE t (x)", &[]).ok();
    t.sql("com.test.small", "main", "INSERT INTO t VALUES (42)", &[]).ok();

    let path = t.dir.join("bigger.json");
    std::fs::write(
        &path,
        r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":2},{"name":"extra","maxSizeMB":1}]}}}"#,
    )
    .unwrap();
    let out = t.run(&["app", "update", path.to_str().unwrap(), "--app", "com.test.small"]).ok();
    assert_eq!(out.stdout, format!("com.test.small {uuid} standard main:2MB,extra:1MB\n"));
    let out = t.run(&["app", "update", path.to_str().unwrap(), "--app", "com.test.nobody"]);
    assert!(out.failed().starts_with("error[NOT_FOUND]: "), "{}", out.stderr);
    let out = t.sql("com.test.small", "logs", "SELECT 1", &[]);
    assert!(out.failed().starts_with("error[CAPABILITY_DENIED]: "), "the dropped database: {}", out.stderr);

    let exports = t.dir.join("final");
    std::fs::create_dir_all(&exports).unwrap();
    let out = t.run(&["app", "unregister", "com.test.small", "--export-dir", exports.to_str().unwrap()]).ok();
    assert!(out
        .stdout
        .ends_with("unregistered com.test.small; its files leave at the next `sila-sqlite gc`\n"));
    let exported = rusqlite::Connection::open(exports.join("main.sqlite")).unwrap();
    let x: i64 = exported.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(x, 42);
    assert!(exports.join("extra.sqlite").exists());
    assert_eq!(t.run(&["app", "list"]).ok().stdout, "");
    let out = t.run(&["app", "unregister", "com.test.small"]);
    assert!(out.failed().starts_with("error[NOT_FOUND]: "), "{}", out.stderr);
    t.run(&["gc"]).ok();
    assert!(!t.ws().join("apps").join(&uuid).exists());
}

#[test]
fn sql_prints_one_json_line_of_the_exact_shape() {
    let t = TempWs::new("sql");
    t.register("com.test.small", SMALL_MANIFEST);
    let create =
        t.sql("com.test.small", "main", "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)", &[]).ok();
    assert_eq!(create.stdout, "{\"columns\":[],\"rows\":[],\"changes\":0,\"last_insert_rowid\":0}\n");
    let insert = t
        .sql(
            "com.test.small",
            "sila://db/main",
            "INSERT INTO t VALUES (?, ?, ?, ?, ?), (-7, 0.5, 'two', NULL, ?)",
            &["42", "-1.5", "\"héllo \\\"q\\\"\"", r#"{"$blob":"aGkh"}"#, "null", "true"],
        )
        .ok();
    assert_eq!(insert.stdout, "{\"columns\":[],\"rows\":[],\"changes\":2,\"last_insert_rowid\":2}\n");
    let select =
        t.sql("com.test.small", "main", "SELECT i, r, s, b, n FROM t WHERE i > ? ORDER BY i", &["-100"]).ok();
    assert_eq!(
        select.stdout,
        "{\"columns\":[\"i\",\"r\",\"s\",\"b\",\"n\"],\"rows\":[[-7,0.5,\"two\",null,1],[42,-1.5,\"héllo \\\"q\\\"\",{\"$blob\":\"aGkh\"},null]],\"changes\":0,\"last_insert_rowid\":0}\n"
    );
    let cte = t
        .sql(
            "com.test.small",
            "main",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x, 1e999 AS inf FROM c",
            &[],
        )
        .ok();
    assert_eq!(
        cte.stdout,
        "{\"columns\":[\"x\",\"inf\"],\"rows\":[[1,{\"$real\":\"Infinity\"}],[2,{\"$real\":\"Infinity\"}],[3,{\"$real\":\"Infinity\"}]],\"changes\":0,\"last_insert_rowid\":0}\n"
    );
    let update = t.sql("com.test.small", "main", "UPDATE t SET n = ? WHERE i = ?", &["\"x\"", "42"]).ok();
    assert_eq!(update.stdout, "{\"columns\":[],\"rows\":[],\"changes\":1,\"last_insert_rowid\":0}\n");
    // SQLite decides where a statement runs: RETURNING rows and a PRAGMA that sets come back
    // from the writer; a PRAGMA that reads is a query.
    let returning = t
        .sql("com.test.small", "main", "INSERT INTO t(i) VALUES (7), (8) RETURNING i * 2 AS twice", &[])
        .ok();
    assert_eq!(
        returning.stdout,
        "{\"columns\":[\"twice\"],\"rows\":[[14],[16]],\"changes\":2,\"last_insert_rowid\":4}\n"
    );
    t.sql("com.test.small", "main", "PRAGMA user_version = 3", &[]).ok();
    let version = t.sql("com.test.small", "main", "PRAGMA user_version", &[]).ok();
    assert_eq!(
        version.stdout,
        "{\"columns\":[\"user_version\"],\"rows\":[[3]],\"changes\":0,\"last_insert_rowid\":0}\n"
    );
}

/// Doubles go in as JSON text and come out as JSON text bit for bit; an integer just outside
/// the 64-bit range is refused on either side, as at the C ABI.
#[test]
fn values_cross_the_cli_exactly() {
    let t = TempWs::new("exact");
    t.register("com.test.small", SMALL_MANIFEST);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut tried = 0;
    while tried < 24 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let d = f64::from_bits(state);
        if !d.is_finite() {
            continue;
        }
        tried += 1;
        let param = format!("{d:e}");
        let out = t.sql("com.test.small", "main", "SELECT ? AS d", &[&param]).ok();
        let printed = out.stdout.split("[[").nth(1).and_then(|r| r.split("]]").next()).unwrap_or_default();
        let back: f64 = printed.parse().unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(back.to_bits(), d.to_bits(), "{param} came back as {printed}");
    }
    for big in ["9223372036854775808", "-9223372036854775809"] {
        let out = t.sql("com.test.small", "main", "SELECT ?", &[big]);
        assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: "), "{big}: {}", out.stderr);
        assert!(out.stderr.contains("outside SQLite's 64-bit range"), "{}", out.stderr);
    }
}

#[test]
fn scripts_run_from_a_file_or_stdin_as_one_atomic_request() {
    let t = TempWs::new("script");
    t.register("com.test.small", SMALL_MANIFEST);
    let file = t.dir.join("schema.sql");
    std::fs::write(
        &file,
        "-- the schema\nCREATE TABLE a (x INTEGER PRIMARY KEY, y TEXT);\nCREATE INDEX a_y ON a(y);\n\
         INSERT INTO a(y) VALUES ('p'), ('q');\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = t.run(&["sql", "com.test.small", "main", "-f", path]).ok();
    assert_eq!(out.stdout, "{\"statements\":3,\"changes\":2,\"last_insert_rowid\":2}\n");
    // All or nothing: the third statement fails, the first two are gone with it.
    let broken = "INSERT INTO a(y) VALUES ('r');\nCREATE TABLE b (z);\n  INSERT INTO a(x) VALUES (1);\n";
    let args = ["sql", "com.test.small", "main", "--file", "-"].map(OsStr::new);
    let out = t.run_with_stdin(&args, broken.as_bytes());
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.lines().next().unwrap_or_default(),
        "error[SQLITE]: statement 3 of the script (line 3, column 3): UNIQUE constraint failed: a.x (sqlite code 1555)"
    );
    let count = t.sql("com.test.small", "main", "SELECT count(*) AS n FROM a", &[]).ok();
    assert_eq!(count.stdout, "{\"columns\":[\"n\"],\"rows\":[[2]],\"changes\":0,\"last_insert_rowid\":0}\n");
    let missing = t.sql("com.test.small", "main", "SELECT count(*) FROM b", &[]);
    assert_eq!(missing.code, 1, "CREATE TABLE b was rolled back");
    // Scripts take no parameters, and a script is not given with a statement.
    let out = t.run(&["sql", "com.test.small", "main", "-f", path, "--param", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = t.run(&["sql", "com.test.small", "main", "SELECT 1", "-f", path]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = t.run(&["sql", "com.test.small", "main", "-f", "/no/such/script.sql"]);
    assert!(out.stderr.starts_with("error[IO]: opening the script /no/such/script.sql"), "{}", out.stderr);
}

#[test]
fn errors_print_code_first_line_and_exit_1() {
    let t = TempWs::new("errors");
    t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "CREATE TABLE t (x)", &[]).ok();

    let out = t.sql("com.nope", "main", "SELECT 1", &[]);
    assert_eq!(out.failed(), "error[NOT_FOUND]: app \"com.nope\" is not registered");

    let out = t.sql("com.test.small", "../x", "SELECT 1", &[]);
    assert_eq!(
        out.failed(),
        "error[INVALID_NAME]: invalid database name \"../x\": contains a path separator"
    );

    let out = t.sql("com.test.small", "other", "SELECT 1", &[]);
    assert_eq!(
        out.failed(),
        "error[CAPABILITY_DENIED]: app \"com.test.small\" has no database \"other\" in its manifest"
    );

    let out = t.sql("com.test.small", "main", "SELEC 1", &[]);
    assert!(out.failed().starts_with("error[SQLITE]: near \"SELEC\": syntax error"), "{}", out.stderr);

    let out = t.sql("com.test.small", "main", "INSERT INTO t VALUES (zeroblob(2000000))", &[]);
    assert!(out.failed().starts_with("error[QUOTA_EXCEEDED]: "), "{}", out.stderr);
    let count = t.sql("com.test.small", "main", "SELECT count(*) FROM t", &[]).ok();
    assert!(count.stdout.contains("\"rows\":[[0]]"), "the refused write changed nothing: {}", count.stdout);

    let out = t.sql(
        "com.test.small",
        "main",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000000) SELECT x FROM c",
        &[],
    );
    assert!(out.failed().starts_with("error[RESULT_TOO_LARGE]: "), "{}", out.stderr);

    let out = t.sql("com.test.small", "logs", "CREATE TABLE y (x)", &[]);
    assert!(out.failed().starts_with("error[READ_ONLY]: "), "{}", out.stderr);

    let out = t.sql("com.test.small", "main", "SELECT ?", &["{bad"]);
    assert!(
        out.failed().starts_with("error[INVALID_ARGUMENT]: --param \"{bad\" is not a JSON value"),
        "{}",
        out.stderr
    );
    let out = t.sql("com.test.small", "main", "SELECT ?", &["[1]"]);
    assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: "), "{}", out.stderr);

    // The wrong number of parameters.
    let out = t.sql("com.test.small", "main", "SELECT ?, ?", &["1"]);
    assert!(out.failed().starts_with("error[INVALID_ARGUMENT]: "), "{}", out.stderr);
    assert!(out.stderr.contains("expects 2 parameters, got 1"), "{}", out.stderr);

    // SQL that is not UTF-8, as an argument and on standard input.
    use std::os::unix::ffi::OsStrExt as _;
    let bad = OsStr::from_bytes(b"SELECT '\xff'");
    let args = [OsStr::new("sql"), OsStr::new("com.test.small"), OsStr::new("main"), bad];
    let out = t.run_with_stdin(&args, b"");
    assert_eq!(out.failed(), "error[INVALID_ARGUMENT]: the SQL argument is not valid UTF-8");
    let args = ["sql", "com.test.small", "main", "-"].map(OsStr::new);
    let out = t.run_with_stdin(&args, b"SELECT '\xff'");
    assert_eq!(out.failed(), "error[INVALID_ARGUMENT]: the SQL on standard input is not valid UTF-8");

    // Usage errors are clap's: exit code 2.
    let out = t.run(&["sql", "com.test.small"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = t.run(&["no-such-command"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// SQL read from standard input (`-`) is accepted up to the engine's SQL length limit and
/// refused one byte past it, naming the limit.
#[test]
fn sql_on_standard_input_at_the_length_limit() {
    let t = TempWs::new("sql-length");
    t.register("com.test.small", SMALL_MANIFEST);
    let limit = usize::try_from(sila_sqlite::sqlite::policy::SQL_LENGTH_BYTES_MAX).unwrap();
    let statement = |len: usize| {
        let mut sql = b"SELECT 42 AS v -- ".to_vec();
        sql.resize(len, b'x');
        sql
    };
    let args = ["sql", "com.test.small", "main", "-"].map(OsStr::new);
    let out = t.run_with_stdin(&args, &statement(limit)).ok();
    assert_eq!(out.stdout.trim_end(), r#"{"columns":["v"],"rows":[[42]],"changes":0,"last_insert_rowid":0}"#);
    let out = t.run_with_stdin(&args, &statement(limit + 1));
    assert_eq!(
        out.failed(),
        format!("error[INVALID_ARGUMENT]: the SQL on standard input is longer than SQL_LENGTH_BYTES_MAX ({limit} bytes)")
    );
}

/// A recursive CTE that never ends is stopped at the statement timeout (set per run with
/// `--statement-timeout-ms`) plus a small slack, and changes nothing.
#[test]
fn a_statement_that_never_ends_times_out() {
    let t = TempWs::new("timeout");
    t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "CREATE TABLE t (x)", &[]).ok();
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let out = t.run(&["--statement-timeout-ms", "300", "sql", "com.test.small", "main", forever]);
    assert!(out.failed().starts_with("error[TIMEOUT]: "), "{}", out.stderr);
    let endless_insert =
        "INSERT INTO t SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c WHERE x < 0)";
    let out = t.run(&["--statement-timeout-ms", "300", "sql", "com.test.small", "main", endless_insert]);
    assert!(out.failed().starts_with("error[TIMEOUT]: "), "{}", out.stderr);
    let count = t.sql("com.test.small", "main", "SELECT count(*) FROM t", &[]).ok();
    assert!(count.stdout.contains("\"rows\":[[0]]"), "{}", count.stdout);
    // The option's bounds are usage errors.
    for bad in ["0", "86400001", "soon"] {
        let out = t.run(&["--statement-timeout-ms", bad, "sql", "com.test.small", "main", "SELECT 1"]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
    }
    let out =
        t.run(&["--statement-timeout-ms", "86400000", "sql", "com.test.small", "main", "SELECT 1"]).ok();
    assert!(out.stdout.contains("[[1]]"), "{}", out.stdout);
    // The lower bound is accepted (the statement may then time out, but it is not a usage error).
    let out = t.run(&["--statement-timeout-ms", "1", "sql", "com.test.small", "main", "SELECT 1"]);
    assert_ne!(out.code, 2, "{}", out.stderr);
}

/// Ctrl-C (SIGINT) stops a running command with exit code 130 and `CANCELLED`; the
/// workspace opens again afterwards. (That no export temporary is left is
/// `core/tests/interrupt.rs`, on the same `Workspace::abandon_partials` the handler calls.)
#[test]
fn ctrl_c_stops_a_command_with_exit_130_and_the_workspace_is_fine() {
    let t = TempWs::new("ctrl-c");
    t.register("com.test.small", SMALL_MANIFEST);
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let child = Command::new(BIN)
        .arg("--workspace")
        .arg(t.ws())
        // It waits for the lock: the probes below hold it for a moment each.
        .args([
            "--wait-ms",
            "60000",
            "--statement-timeout-ms",
            "86400000",
            "sql",
            "com.test.small",
            "main",
            forever,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the workspace is opened: once another process finds
    // the workspace locked, it is there. Bounded: 2,000 tries.
    let locked = (0..2000).any(|_| {
        let out = t.run(&["stats"]);
        if out.code == 1 && out.stderr.starts_with("error[WORKSPACE_LOCKED]: ") {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    });
    assert!(locked, "the query never held the workspace");
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.starts_with("error[CANCELLED]: interrupted"), "{stderr}");
    assert_eq!(out.stdout, b"");
    t.run(&["stats"]).ok();
}

/// A statement read from standard input is read before the workspace is locked: a slow
/// writer on the pipe does not keep other processes out.
#[test]
fn waiting_for_sql_on_stdin_does_not_hold_the_workspace() {
    let t = TempWs::new("stdin-wait");
    t.register("com.test.small", SMALL_MANIFEST);
    let mut waiting = Command::new(BIN)
        .arg("--workspace")
        .arg(t.ws())
        .args(["sql", "com.test.small", "main", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is blocked reading its standard input (the kernel shows the syscall it
    // sleeps in: read on fd 0); the workspace must be free while it waits there.
    let read_nr = if cfg!(target_arch = "aarch64") { "63" } else { "0" };
    let blocked = format!("{read_nr} 0x0 ");
    let syscall = format!("/proc/{}/syscall", waiting.id());
    let mut polls = 0;
    while !std::fs::read_to_string(&syscall).is_ok_and(|s| s.starts_with(&blocked)) {
        polls += 1;
        assert!(polls < 10_000, "the CLI never blocked on its standard input");
        std::thread::yield_now();
    }
    t.run(&["app", "list"]).ok();
    let mut input = waiting.stdin.take().unwrap();
    input.write_all(b"SELECT 7 AS seven").unwrap();
    drop(input);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        r#"{"columns":["seven"],"rows":[[7]],"changes":0,"last_insert_rowid":0}"#
    );
}

#[test]
fn a_directory_without_a_workspace_is_refused_unless_a_command_creates_one() {
    let t = TempWs::new("no-workspace");
    // A mistyped path: refused, and nothing is created there.
    for args in [&["app", "list"][..], &["sql", "com.test.small", "main", "SELECT 1"], &["gc"], &["stats"]] {
        let out = t.run(args);
        let line = out.failed();
        assert!(line.starts_with("error[NOT_FOUND]: no workspace at "), "{args:?}: {line}");
        assert!(line.contains("--create"), "says how to create one: {line}");
        assert!(!t.ws().exists(), "{args:?} created {}", t.ws().display());
    }
    // An existing directory that holds no workspace is refused as well.
    std::fs::create_dir_all(t.ws()).unwrap();
    assert!(t.run(&["app", "list"]).failed().starts_with("error[NOT_FOUND]: "));
    assert_eq!(std::fs::read_dir(t.ws()).unwrap().count(), 0, "nothing was written into it");
    // --create makes one on purpose; `app register` and `demo` do so by themselves.
    t.run(&["--create", "app", "list"]).ok();
    t.run(&["app", "list"]).ok();
    std::fs::remove_dir_all(t.ws()).unwrap();
    t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "SELECT 1", &[]).ok();
}

#[test]
fn a_second_process_gets_workspace_locked() {
    let t = TempWs::new("locked");
    t.register("com.test.small", SMALL_MANIFEST);
    let held = sila_sqlite::Workspace::open(t.ws(), sila_sqlite::WorkspaceOptions::default()).unwrap();
    let out = t.run(&["app", "list"]);
    assert!(out.failed().starts_with("error[WORKSPACE_LOCKED]: "), "{}", out.stderr);
    let out = t.run(&["demo"]);
    assert!(out.failed().starts_with("error[WORKSPACE_LOCKED]: "), "{}", out.stderr);
    drop(held);
    let list = t.run(&["app", "list"]).ok();
    assert!(list.stdout.starts_with("com.test.small "), "{}", list.stdout);
}

#[test]
fn wait_ms_waits_for_the_workspace_and_says_how_long_it_waited() {
    let t = TempWs::new("wait");
    t.register("com.test.small", SMALL_MANIFEST);
    let held = sila_sqlite::Workspace::open(t.ws(), sila_sqlite::WorkspaceOptions::default()).unwrap();
    // Still held when the wait ends: refused, naming the wait.
    let out = t.run(&["--wait-ms", "100", "app", "list"]);
    let line = out.failed();
    assert!(line.starts_with("error[WORKSPACE_LOCKED]: "), "{line}");
    assert!(line.contains("still locked after --wait-ms 100"), "{line}");
    // Given back while the CLI waits: it goes on. The wait is far longer than the release
    // needs, so the outcome does not depend on the machine's speed.
    let waiting = Command::new(BIN)
        .arg("--workspace")
        .arg(t.ws())
        .args(["--wait-ms", "600000", "app", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Free the lock only once the CLI has found it taken and sleeps between two tries (the
    // kernel shows the syscall it sleeps in: nanosleep or clock_nanosleep).
    let sleeping = if cfg!(target_arch = "aarch64") { ["101 ", "115 "] } else { ["35 ", "230 "] };
    let syscall = format!("/proc/{}/syscall", waiting.id());
    let mut polls = 0;
    while !std::fs::read_to_string(&syscall).is_ok_and(|s| sleeping.iter().any(|n| s.starts_with(n))) {
        polls += 1;
        assert!(polls < 100_000, "the CLI never waited for the lock");
        std::thread::yield_now();
    }
    drop(held);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("com.test.small "));
    // The option's bounds: zero and a day are accepted, a day and a millisecond is a usage
    // error.
    for ok in ["0", "86400000"] {
        t.run(&["--wait-ms", ok, "app", "list"]).ok();
    }
    for bad in ["86400001", "-1", "soon"] {
        assert_eq!(t.run(&["--wait-ms", bad, "app", "list"]).code, 2, "{bad}");
    }
}

#[test]
fn stats_reports_databases_and_ledgers_as_json() {
    let t = TempWs::new("stats");
    let uuid = t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "CREATE TABLE t (x)", &[]).ok();
    let out = t.run(&["stats", "com.test.small", "main"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let dbs = doc["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1, "{doc}");
    assert_eq!(dbs[0]["app"], "com.test.small");
    assert_eq!(dbs[0]["db"], "main");
    assert!(dbs[0]["db_bytes"].as_u64().unwrap() > 0, "{doc}");
    assert!(dbs[0]["connections"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(dbs[0]["metrics"]["queries"], 1, "only the SELECT 1 of this process: {doc}");
    let apps = doc["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["app_uuid"], uuid.as_str());
    assert!(apps[0]["ledger"]["live_bytes"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(apps[0]["ledger"]["quota_bytes"], 3 * 9 * 1024 * 1024, "{doc}");

    let all = t.run(&["stats"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(doc["databases"].as_array().unwrap().len(), 2, "every database of every app: {doc}");

    let out = t.run(&["stats", "com.nope"]);
    assert_eq!(out.failed(), "error[NOT_FOUND]: app \"com.nope\" is not registered");
}

#[test]
fn check_passes_a_healthy_workspace_and_fails_on_a_flipped_bit() {
    let t = TempWs::new("check");
    let uuid = t.register("com.test.small", SMALL_MANIFEST);
    t.run(&["demo"]).ok();
    let healthy = t.run(&["check"]).ok();
    assert!(healthy.stdout.contains("  ok         com.example.analytics/analytics\n"), "{}", healthy.stdout);
    assert!(healthy.stdout.contains("  ok         com.test.small/main\n"), "{}", healthy.stdout);
    assert!(healthy.stdout.contains("result       ok"), "{}", healthy.stdout);
    assert_eq!(healthy.stderr, "");

    let current = t.ws().join("apps").join(&uuid).join("db").join("main").join("current");
    let mut bytes = std::fs::read(&current).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&current, &bytes).unwrap();

    let out = t.run(&["check"]);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("DAMAGED"), "{}", out.stdout);
    assert!(out.stdout.contains("error[CORRUPT]: "), "{}", out.stdout);
    assert!(out.stdout.contains("checksum"), "{}", out.stdout);
    assert!(out.stdout.contains("  ok         com.example.analytics/analytics\n"), "others still checked");
    assert!(out.first_err_line().starts_with("error[CORRUPT]: check found 1 problem(s)"), "{}", out.stderr);

    // The damaged database refuses work with the same code; the others keep working.
    let out = t.sql("com.test.small", "main", "SELECT 1", &[]);
    assert!(out.failed().starts_with("error[CORRUPT]: "), "{}", out.stderr);
    t.sql("com.example.analytics", "analytics", "SELECT count(*) FROM events", &[]).ok();
}

#[test]
fn check_reports_a_database_that_fails_integrity_check() {
    let t = TempWs::new("integrity");
    let uuid = t.register("com.test.small", SMALL_MANIFEST);
    t.sql("com.test.small", "main", "CREATE TABLE t (x TEXT)", &[]).ok();
    t.sql(
        "com.test.small",
        "main",
        "INSERT INTO t WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 2000) SELECT printf('%050d', n) FROM c",
        &[],
    )
    .ok();
    let dir = t.ws().join("apps").join(&uuid).join("db").join("main");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096 * 8, "the table spans pages: {}", bytes.len());
    // Scribble over the cell pointer array of the first full table leaf page (type 0x0d) past
    // the schema page: every cell then points outside the page.
    let page = (2..bytes.len() / 4096)
        .map(|p| p * 4096)
        .find(|&at| bytes[at] == 0x0d && u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]) >= 10)
        .expect("a full leaf page");
    let cells = usize::from(u16::from_be_bytes([bytes[page + 3], bytes[page + 4]]));
    for b in &mut bytes[page + 8..page + 8 + 2 * cells] {
        *b = 0xAB;
    }
    std::fs::write(&file, &bytes).unwrap();

    let out = t.run(&["check"]);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("  FAILED     error[CORRUPT]: com.test.small/main"), "{}", out.stdout);
    assert!(out.first_err_line().starts_with("error[CORRUPT]: check found 1 problem(s)"), "{}", out.stderr);
}

#[test]
fn metrics_prints_the_prometheus_exposition_with_every_app_quota() {
    let t = TempWs::new("metrics");
    t.run(&["demo"]).ok();
    let out = t.run(&["metrics"]).ok();
    let text = &out.stdout;
    assert!(text.contains("# TYPE sila_quota_bytes gauge"), "{text}");
    assert!(text.contains("sila_quota_bytes{app=\"com.example.analytics\"} "), "{text}");
    assert!(text.contains("sila_quota_used_bytes{app=\"com.example.analytics\",kind=\"live\"} "), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}
