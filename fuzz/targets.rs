//! The fuzz targets' bodies: every parser of untrusted bytes, with what must hold for any
//! input. Shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, coverage-guided, on
//! nightly) and by `core/tests/fuzz_replay.rs`, which runs the checked-in corpora and a
//! bounded number of deterministic mutations of them on stable in every `cargo test`.
//!
//! What holds for every target: no panic; a refusal is a typed error of the code the parser
//! documents; what is accepted survives a round trip where the type has one.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sila_sqlite::store::record::{AppRecord, ManifestRecord, PointerRecord};
use sila_sqlite::{ErrorCode, Value};

/// A target's body.
pub type Target = fn(&[u8]);

/// The targets, by name (the corpus directory and the cargo-fuzz binary are named alike).
pub const TARGETS: [(&str, Target); 5] = [
    ("manifest", manifest),
    ("records", records),
    ("statement_gate", statement_gate),
    ("json_params", json_params),
    ("import", import),
];

/// A capability manifest from an app: valid, or `INVALID_MANIFEST`/`INVALID_NAME`.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = sila_sqlite::manifest::Manifest::parse(text) {
        assert!(
            matches!(e.code(), ErrorCode::InvalidManifest | ErrorCode::InvalidName),
            "a manifest refused with {}: {e}",
            e.code().name()
        );
    }
}

/// The engine's checksummed records as recovery reads them from disk (pointer, snapshot
/// manifest, app record): refused as `CORRUPT`, or decoded into a record that encodes back
/// to a record equal to it.
pub fn records(data: &[u8]) {
    let corrupt = |e: sila_sqlite::Error| {
        assert_eq!(e.code(), ErrorCode::Corrupt, "a record refused with {}: {e}", e.code().name());
    };
    match PointerRecord::decode(data, "pointer") {
        Ok(r) => assert_eq!(PointerRecord::decode(&r.encode(), "pointer").unwrap(), r),
        Err(e) => corrupt(e),
    }
    match ManifestRecord::decode(data, "manifest") {
        Ok(r) => assert_eq!(ManifestRecord::decode(&r.encode(), "manifest").unwrap(), r),
        Err(e) => corrupt(e),
    }
    match AppRecord::decode(data, "app record") {
        Ok(r) => assert_eq!(AppRecord::decode(&r.encode(), "app record").unwrap(), r),
        Err(e) => corrupt(e),
    }
}

/// SQL text before SQLite sees it: the ATTACH/DETACH recognizer, the redaction of SQL for
/// logs and metrics, and logical names.
pub fn statement_gate(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    for params in [&[][..], &[Value::Text("sila://db/other".into())][..]] {
        if let Some(Err(e)) = sila_sqlite::attach::parse(sql, params) {
            assert!(
                matches!(
                    e.code(),
                    ErrorCode::PolicyDenied | ErrorCode::InvalidArgument | ErrorCode::InvalidName
                ),
                "ATTACH refused with {}: {e}",
                e.code().name()
            );
        }
    }
    let redacted = sila_sqlite::redact::redact_sql(sql);
    assert!(redacted.len() <= sila_sqlite::redact::REDACTED_SQL_BYTES_MAX, "{redacted}");
    // No literal survives: the text of a string literal (made of letters and digits, at least
    // eight, found nowhere else in the input) never appears in the output.
    let quotes = sql.matches('\'').count();
    if let Some(secret) = sql.split('\'').nth(1) {
        let plain = secret.len() >= 8 && secret.chars().all(|c| c.is_ascii_alphanumeric());
        if plain
            && quotes >= 2
            && sql.matches(secret).count() == 1
            && !sql.contains(['"', '[', '`', '-', '/'])
        {
            assert!(!redacted.contains(secret), "{secret:?} survived in {redacted:?}");
        }
    }
    if let Err(e) = sila_sqlite::names::LogicalName::parse(sql) {
        assert!(
            matches!(e.code(), ErrorCode::InvalidName | ErrorCode::InvalidArgument),
            "a logical name refused with {}: {e}",
            e.code().name()
        );
    }
}

/// Parameters as JSON (the C ABI and the CLI): each accepted value comes back the same through
/// its JSON text; anything else is `INVALID_ARGUMENT`.
pub fn json_params(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let items = match &json {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for item in &items {
        match Value::from_json(item) {
            Ok(v) => {
                let text = serde_json::to_string(&v.to_json()).unwrap();
                assert_eq!(text.len(), v.json_len(), "{text}");
                let back = Value::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
                let same = match (&v, &back) {
                    (Value::Real(a), Value::Real(b)) => {
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                    }
                    (a, b) => a == b,
                };
                assert!(same, "{v:?} came back as {back:?} through {text}");
            }
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}"),
        }
    }
}

/// A file an app hands to import, as is and gzip-compressed: imported, or refused with a
/// typed error naming the failed check; either way the database keeps serving.
pub fn import(data: &[u8]) {
    use std::io::Write as _;
    use std::sync::{Mutex, OnceLock};
    static DB: OnceLock<Mutex<(std::path::PathBuf, sila_sqlite::Workspace, sila_sqlite::Database)>> =
        OnceLock::new();
    let cell = DB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sila-fuzz-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ws =
            sila_sqlite::Workspace::open(dir.join("ws"), sila_sqlite::WorkspaceOptions::default()).unwrap();
        ws.register_app(
            "com.example.fuzz",
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":16}]}}}"#,
        )
        .unwrap();
        let db = ws.open_app("com.example.fuzz").unwrap().open("main").unwrap();
        Mutex::new((dir, ws, db))
    });
    let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, _ws, db) = &*guard;
    let plain = dir.join("candidate.sqlite");
    std::fs::write(&plain, data).unwrap();
    let gz = dir.join("candidate.sqlite.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    for source in [&plain, &gz] {
        if let Err(e) = db.import(source, sila_sqlite::versions::ImportOptions::default()) {
            assert!(
                matches!(
                    e.code(),
                    ErrorCode::Corrupt
                        | ErrorCode::InvalidArgument
                        | ErrorCode::PolicyDenied
                        | ErrorCode::QuotaExceeded
                        | ErrorCode::Sqlite
                        | ErrorCode::NotFound
                ),
                "import refused with {}: {e}",
                e.code().name()
            );
        }
        assert!(db.query_value("SELECT 1", &[]).is_ok(), "the database stopped serving after an import");
    }
}
