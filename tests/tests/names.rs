//! Logical names through the public API (the grammar's unit tests live in `core`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::names::LogicalName;
use sila_sqlite::ErrorCode;

#[test]
fn logical_names_parse_round_trip_and_refuse_escapes() {
    let own = LogicalName::parse("sila://db/analytics").unwrap();
    assert_eq!((own.app, own.db.as_str()), (None, "analytics"));
    let named = LogicalName::parse("sila://app/com.example.notes/db/cache").unwrap();
    assert_eq!(named.app.as_ref().map(|a| a.as_str()), Some("com.example.notes"));
    assert_eq!(named.to_string(), "sila://app/com.example.notes/db/cache");

    for bad in [
        "analytics",
        "sila://db/",
        "sila://db/../app/x",
        "sila://db/a/b",
        "sila://db/current",
        "sila://db/Analytics",
        "sila://app/../db/x",
        "sila://app/com.example.notes/analytics",
        "file:///etc/passwd",
    ] {
        let err = LogicalName::parse(bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidName, "{bad}: {err}");
    }
}
