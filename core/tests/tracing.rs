//! Trace spans (`core/src/trace.rs`) through a capturing subscriber: a `request` span for
//! every query, exec, script and transaction and an `operation` span for every versions and
//! workspace operation, each with its outcome; SQL redacted and parameters left out unless
//! the development option `capture_full_sql` is on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use sila_sqlite::versions::RestoreOptions;
use sila_sqlite::{BrokerOptions, Database, ErrorCode, Value, Workspace, WorkspaceOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::TempDir;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":8}],"tier":"standard"}}}"#;

/// A literal and a parameter no span may show by default.
const SECRET_LITERAL: &str = "hunter2-literal";
const SECRET_PARAM: &str = "hunter2-param";

/// One span: its name and every field recorded on it, as text.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

#[derive(Default)]
struct Spans {
    open: BTreeMap<u64, Captured>,
    closed: Vec<Captured>,
}

/// Records every span's fields; a closed span moves to `closed`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Spans>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut c = Captured { name: attrs.metadata().name().to_string(), ..Captured::default() };
        attrs.record(&mut Fields(&mut c.fields));
        self.0.lock().unwrap().open.insert(id.into_u64(), c);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(c) = spans.open.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut c.fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(c) = spans.open.remove(&id.into_u64()) {
            spans.closed.push(c);
        }
    }
}

impl Capture {
    /// Closed spans with this `op`.
    fn ops(&self, op: &str) -> Vec<Captured> {
        self.0.lock().unwrap().closed.iter().filter(|c| c.get("op") == Some(op)).cloned().collect()
    }

    fn all(&self) -> Vec<Captured> {
        let spans = self.0.lock().unwrap();
        spans.closed.iter().chain(spans.open.values()).cloned().collect()
    }
}

fn setup(name: &str, full_sql: bool) -> (TempDir, Workspace, Database) {
    let dir = TempDir::new(name);
    let broker = BrokerOptions { capture_full_sql: full_sql, ..BrokerOptions::default() };
    let ws = Workspace::open(&dir.0, WorkspaceOptions { broker, ..WorkspaceOptions::default() }).unwrap();
    ws.register_app("com.example.notes", MANIFEST).unwrap();
    let db = ws.open_app("com.example.notes").unwrap().open("main").unwrap();
    db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE)", &[]).unwrap();
    (dir, ws, db)
}

/// Runs `f` with the capturing subscriber as this thread's default.
fn captured(f: impl FnOnce()) -> Capture {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, f);
    capture
}

#[test]
fn every_request_has_a_span_with_its_outcome_and_redacted_sql() {
    let (_d, _ws, db) = setup("trace-requests", false);
    let capture = captured(|| {
        let insert = format!("INSERT INTO t (k, v) VALUES (1, '{SECRET_LITERAL}')");
        db.exec(&insert, &[]).unwrap();
        db.exec("INSERT INTO t (k, v) VALUES (?, ?)", &[Value::Integer(2), Value::Text(SECRET_PARAM.into())])
            .unwrap();
        let dup =
            db.exec("INSERT INTO t (k, v) VALUES (3, ?)", &[Value::Text(SECRET_PARAM.into())]).unwrap_err();
        assert_eq!(dup.code(), ErrorCode::Sqlite);
        let rows = db.query("SELECT v FROM t WHERE v = ?", &[Value::Text(SECRET_PARAM.into())]).unwrap();
        assert_eq!(rows.rows.len(), 1);
        db.execute_script("INSERT INTO t (k, v) VALUES (4, 'x'); DELETE FROM t WHERE k = 4").unwrap();
        db.transaction(|tx| tx.exec("UPDATE t SET v = 'y' WHERE k = 1", &[])).unwrap();
        db.submit_exec("INSERT INTO t (k, v) VALUES (5, 'z')", vec![]).wait().unwrap();
    });

    let execs = capture.ops("exec");
    assert_eq!(execs.len(), 4, "{execs:#?}");
    let first = &execs[0];
    assert_eq!(first.name, "request");
    assert_eq!(first.get("app"), Some("com.example.notes"));
    assert_eq!(first.get("db"), Some("main"));
    assert_eq!(first.get("sql"), Some("INSERT INTO t (k, v) VALUES (?, ?)"), "literals redacted");
    assert_eq!(first.get("outcome"), Some("ok"));
    assert_eq!(first.get("rows"), Some("1"));
    assert!(first.get("duration_us").is_some());
    assert_eq!(first.get("code"), None);
    let failed = &execs[2];
    assert_eq!((failed.get("outcome"), failed.get("code")), (Some("error"), Some("SQLITE")));

    let queries = capture.ops("query");
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].get("rows"), Some("1"));
    assert_eq!(queries[0].get("sql"), Some("SELECT v FROM t WHERE v = ?"));
    assert_eq!(capture.ops("script").len(), 1);
    let tx = capture.ops("transaction");
    assert_eq!((tx.len(), tx[0].get("outcome")), (1, Some("ok")));

    for span in capture.all() {
        assert_eq!(span.get("params"), None, "parameters only under capture_full_sql: {span:?}");
        for value in span.fields.values() {
            assert!(
                !value.contains(SECRET_LITERAL) && !value.contains(SECRET_PARAM),
                "a span shows app data by default: {span:?}"
            );
        }
    }
}

#[test]
fn the_development_option_shows_sql_as_written_and_its_parameters() {
    let (_d, _ws, db) = setup("trace-full", true);
    let capture = captured(|| {
        let sql = format!("INSERT INTO t (k, v) VALUES (?, '{SECRET_LITERAL}')");
        db.exec(&sql, &[Value::Integer(7)]).unwrap();
        db.query("SELECT k FROM t WHERE v = ?", &[Value::Text(SECRET_PARAM.into())]).unwrap();
    });
    let exec = &capture.ops("exec")[0];
    assert!(exec.get("sql").is_some_and(|s| s.contains(SECRET_LITERAL)), "{exec:?}");
    assert!(exec.get("params").is_some_and(|p| p.contains('7')), "{exec:?}");
    let query = &capture.ops("query")[0];
    assert!(query.get("params").is_some_and(|p| p.contains(SECRET_PARAM)), "{query:?}");
}

#[test]
fn every_operation_has_a_span_with_its_outcome() {
    let (_d, ws, db) = setup("trace-operations", false);
    db.exec("INSERT INTO t (k, v) VALUES (1, 'a')", &[]).unwrap();
    let capture = captured(|| {
        let snap = db.snapshot("before").unwrap();
        db.restore(snap.id, RestoreOptions::default()).unwrap();
        let missing = db.restore(sila_sqlite::uuid::Uuid::nil(), RestoreOptions::default()).unwrap_err();
        assert_eq!(missing.code(), ErrorCode::NotFound);
        db.drop_snapshot(snap.id).unwrap();
        ws.gc().unwrap();
        ws.register_app("com.example.other", MANIFEST).unwrap();
    });

    let snaps = capture.ops("snapshot");
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    let snap = &snaps[0];
    assert_eq!(snap.name, "operation");
    assert_eq!((snap.get("app"), snap.get("db")), (Some("com.example.notes"), Some("main")));
    assert_eq!(snap.get("outcome"), Some("ok"));
    assert!(snap.get("bytes").and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 0), "{snap:?}");

    let restores = capture.ops("restore");
    assert_eq!(restores.len(), 2);
    assert_eq!(restores[0].get("outcome"), Some("ok"));
    assert_eq!((restores[1].get("outcome"), restores[1].get("code")), (Some("error"), Some("NOT_FOUND")));
    assert_eq!(capture.ops("drop_snapshot").len(), 1);
    let gc = capture.ops("gc");
    assert_eq!((gc.len(), gc[0].get("outcome")), (1, Some("ok")));
    assert!(gc[0].get("bytes").is_some(), "{gc:?}");
    let register = capture.ops("register_app");
    assert_eq!((register.len(), register[0].get("app")), (1, Some("com.example.other")));
}
