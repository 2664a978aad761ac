//! SQLite values and result sets, and their JSON encoding.
//!
//! This module owns the one mapping between SQLite's five storage classes and JSON that every
//! host sees (the C ABI and the CLI speak JSON):
//!
//! | SQLite            | JSON                                         |
//! |-------------------|----------------------------------------------|
//! | NULL              | `null`                                       |
//! | INTEGER           | a number without fraction or exponent        |
//! | REAL (finite)     | a number as `serde_json` prints an `f64` (`1.0`, `1e300`) |
//! | REAL (+∞, −∞, NaN)| `{"$real":"Infinity"}`, `{"$real":"-Infinity"}`, `{"$real":"NaN"}` |
//! | TEXT              | a string                                     |
//! | BLOB              | `{"$blob":"<standard base64 with padding>"}` |
//!
//! Non-finite reals get a tagged object rather than `null` or a bare string because SQLite
//! really returns them (`SELECT 1e999` is +∞): `null` would be indistinguishable from SQL NULL
//! and the string `"Infinity"` from the TEXT value `'Infinity'`. The tagged form round-trips
//! through [`Value::from_json`], like blobs do. (SQLite itself never stores NaN: binding one
//! stores NULL.)
//!
//! Parameters accept the same JSON plus `true`/`false`, which become the integers 1 and 0
//! because SQLite has no boolean type.
//!
//! TEXT that is not valid UTF-8 (SQLite does not check, e.g. `CAST(x'ff' AS TEXT)`) is read
//! as a [`Value::Blob`] of its exact bytes: a `String` (and JSON text) cannot carry it,
//! refusing would make such a row unreadable, and replacing invalid sequences with U+FFFD
//! would hand back something other than what is stored. Written back, the bytes are the same.
//!
//! [`Value::json_len`] gives the exact size of the compact JSON text of a value without
//! building it, matching `serde_json::to_string(&value.to_json())` byte for byte (the tests pin
//! this). The result byte cap counts [`Value::size_bytes`] instead: what the value holds.

use std::io;

use base64::Engine as _;
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde_json::{json, Map};

use crate::{Error, Result};

/// The JSON key of a tagged blob value.
const BLOB_TAG: &str = "$blob";
/// The JSON key of a tagged non-finite real value.
const REAL_TAG: &str = "$real";
/// What parameters accept, quoted in every refusal.
const ACCEPTED_JSON: &str = "null, a boolean, an integer from -9223372036854775808 to 9223372036854775807, \
     a finite number, a string, \
     {\"$blob\":\"<base64>\"} or {\"$real\":\"Infinity\"|\"-Infinity\"|\"NaN\"}";

/// One SQLite value: a parameter to bind or a cell of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE-754 double; may be infinite when SQLite overflows (`1e999`).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// Parses a parameter from JSON (see the module doc for the mapping).
    ///
    /// Booleans become 1 and 0. A number with a fraction or an exponent is a REAL, parsed with
    /// correct rounding (the double printed by [`Value::to_json`] comes back bit for bit); one
    /// without is an INTEGER. Integers outside the i64 range (either side), numbers beyond a
    /// double's range, arrays and objects other than the `$blob` / `$real` tags are refused
    /// with [`crate::ErrorCode::InvalidArgument`].
    pub fn from_json(json: &serde_json::Value) -> Result<Value> {
        match json {
            serde_json::Value::Null => Ok(Value::Null),
            serde_json::Value::Bool(b) => Ok(Value::Integer(i64::from(*b))),
            serde_json::Value::Number(n) => Value::from_json_number(n),
            serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
            serde_json::Value::Array(_) => Err(Error::invalid_argument(format!(
                "a parameter cannot be an array; accepted: {ACCEPTED_JSON}"
            ))),
            serde_json::Value::Object(map) => Value::from_json_object(map),
        }
    }

    fn from_json_number(n: &serde_json::Number) -> Result<Value> {
        if let Some(i) = n.as_i64() {
            return Ok(Value::Integer(i));
        }
        // The number's text as written (serde_json keeps it: `arbitrary_precision`).
        let text = n.to_string();
        if !text.contains(['.', 'e', 'E']) {
            return Err(Error::invalid_argument(format!(
                "integer parameter {text} is outside SQLite's 64-bit range [{}, {}]; accepted: {ACCEPTED_JSON}",
                i64::MIN,
                i64::MAX
            )));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Value::Real(f)),
            _ => Err(Error::invalid_argument(format!(
                "number parameter {text} is beyond the range of a double; accepted: {ACCEPTED_JSON}"
            ))),
        }
    }

    fn from_json_object(map: &Map<String, serde_json::Value>) -> Result<Value> {
        let refuse = || {
            Error::invalid_argument(format!(
                "an object parameter must be exactly {{\"$blob\":\"<base64>\"}} or \
                 {{\"$real\":\"Infinity\"|\"-Infinity\"|\"NaN\"}}; accepted: {ACCEPTED_JSON}"
            ))
        };
        if map.len() != 1 {
            return Err(refuse());
        }
        if let Some(tagged) = map.get(BLOB_TAG) {
            let text = tagged.as_str().ok_or_else(refuse)?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| {
                Error::invalid_argument(format!("\"$blob\" parameter is not valid standard base64: {e}"))
            })?;
            return Ok(Value::Blob(bytes));
        }
        if let Some(tagged) = map.get(REAL_TAG) {
            return match tagged.as_str() {
                Some("Infinity") => Ok(Value::Real(f64::INFINITY)),
                Some("-Infinity") => Ok(Value::Real(f64::NEG_INFINITY)),
                Some("NaN") => Ok(Value::Real(f64::NAN)),
                _ => Err(refuse()),
            };
        }
        Err(refuse())
    }

    /// Encodes the value as JSON (see the module doc for the mapping).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => json!(i),
            Value::Real(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => serde_json::Value::Number(n),
                None => json!({ REAL_TAG: non_finite_name(*f) }),
            },
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Blob(b) => json!({ BLOB_TAG: base64::engine::general_purpose::STANDARD.encode(b) }),
        }
    }

    /// What the value holds in memory, as the result cap counts it
    /// ([`super::exec::QueryLimits::bytes_max`]): text and blob bytes, 8 for a number, 0 for
    /// NULL.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
        }
    }

    /// The exact byte length of `serde_json::to_string(&self.to_json())`, computed without
    /// building the JSON (no allocation).
    pub fn json_len(&self) -> usize {
        match self {
            Value::Null => "null".len(),
            Value::Integer(i) => integer_json_len(*i),
            Value::Real(f) if f.is_finite() => finite_real_json_len(*f),
            // {"$real":"<name>"}
            Value::Real(f) => TAGGED_OVERHEAD_LEN + REAL_TAG.len() + non_finite_name(*f).len(),
            Value::Text(s) => string_json_len(s),
            // {"$blob":"<base64>"}
            Value::Blob(b) => TAGGED_OVERHEAD_LEN + BLOB_TAG.len() + base64_len(b.len()),
        }
    }

    /// Borrows the value in rusqlite's form.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// The bytes of `{"` + `":"` + `"}` around a tag name and its string payload.
const TAGGED_OVERHEAD_LEN: usize = 2 + 3 + 2;

fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn integer_json_len(i: i64) -> usize {
    let sign = usize::from(i < 0);
    let mut magnitude = i.unsigned_abs();
    let mut digits = 1;
    // Bounded: a u64 has at most 20 decimal digits.
    while magnitude >= 10 {
        magnitude /= 10;
        digits += 1;
    }
    sign + digits
}

/// Counts bytes written through `io::Write` without storing them.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn finite_real_json_len(f: f64) -> usize {
    // serde_json's own float formatter decides the text (`1.0`, `1e300`), so count what it
    // writes rather than re-deriving its shortest-representation rules. Writing into the
    // counter cannot fail; a failure would only make the count smaller, never panic.
    let mut counter = ByteCounter(0);
    let _ = serde_json::to_writer(&mut counter, &f);
    counter.0
}

/// The compact JSON length of a string, with serde_json's escaping rules: `"` and `\` take two
/// bytes, the control characters \b \t \n \f \r take two, other bytes below 0x20 take six
/// (`\u00XX`), everything else (including non-ASCII UTF-8) is copied.
pub(crate) fn string_json_len(s: &str) -> usize {
    let needs_escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // The common case, no byte to escape, in one pass the compiler can vectorize.
    if s.bytes().filter(|&b| needs_escape(b)).count() == 0 {
        return s.len() + 2;
    }
    let escaped: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum();
    escaped + 2
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

impl From<ValueRef<'_>> for Value {
    fn from(value: ValueRef<'_>) -> Value {
        match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            // Valid UTF-8 is the rule: checked with the fast validator, copied once. TEXT that
            // is not valid UTF-8 (SQL can make it: `CAST(x'ff' AS TEXT)`, or a crafted file)
            // cannot be a `String`; it comes back as its exact bytes, never with replacement
            // characters that would change what was stored.
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(text) => Value::Text(text.to_owned()),
                Err(_) => Value::Blob(t.to_vec()),
            },
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_value_ref()))
    }
}

impl FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Value::from(value))
    }
}

/// A result set: column names and rows of values, in SQLite's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// The result column names (aliases where the SQL gave them).
    pub columns: Vec<String>,
    /// The rows; every row has `columns.len()` values.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// `{"columns":[…],"rows":[[…],…]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| serde_json::Value::Array(row.iter().map(Value::to_json).collect()))
            .collect();
        json!({ "columns": self.columns, "rows": rows })
    }

    /// The exact byte length of the compact JSON text of [`Rows::to_json`].
    pub fn json_len(&self) -> usize {
        let mut len = rows_doc_base_len(&self.columns);
        for (index, row) in self.rows.iter().enumerate() {
            len += row_json_len(row) + usize::from(index > 0);
        }
        len
    }
}

/// The length of `{"columns":[…],"rows":[]}` for these columns: the document with no rows.
pub(crate) fn rows_doc_base_len<S: AsRef<str>>(columns: &[S]) -> usize {
    let names: usize = columns.iter().map(|c| string_json_len(c.as_ref())).sum();
    let commas = columns.len().saturating_sub(1);
    // {"columns":  [ names ]  ,"rows":  []  }
    r#"{"columns":"#.len() + 2 + names + commas + r#","rows":"#.len() + 2 + 1
}

/// The length of one row's JSON array `[v1,v2,…]`.
pub(crate) fn row_json_len(row: &[Value]) -> usize {
    let values: usize = row.iter().map(Value::json_len).sum();
    2 + values + row.len().saturating_sub(1)
}

/// What a successful `exec` (or script) did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecResult {
    /// Rows inserted, updated or deleted by the statement itself (not by triggers); 0 for
    /// statements that change no rows (DDL, SELECT). For a script, the sum over its statements.
    pub changes: u64,
    /// The rowid of the last row this request (or, inside a transaction, the transaction)
    /// inserted, as SQLite's `last_insert_rowid()` reads it at the end of the statement; 0 when
    /// nothing was inserted. A neighbour in the same group commit never shows here.
    pub last_insert_rowid: i64,
    /// The rows the statement returned: `INSERT … RETURNING`, or a SELECT given to exec, with
    /// their column names, under the same caps as a query's result. Empty (no columns) for a
    /// statement that returns none, and for a script.
    pub rows: Rows,
    /// Statements that ran: 1 for exec, the count of a script's statements (empty ones, like
    /// a lone `;`, are not counted).
    pub statements: u64,
}

impl ExecResult {
    /// `{"changes":…,"last_insert_rowid":…,"statements":…,"columns":[…],"rows":[…]}`
    /// (the columns and rows as in [`Rows::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = self.rows.to_json();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("changes".into(), self.changes.into());
            obj.insert("last_insert_rowid".into(), self.last_insert_rowid.into());
            obj.insert("statements".into(), self.statements.into());
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use rand::{RngExt as _, SeedableRng as _};

    /// Every double (random bit patterns, and the awkward ones) goes to JSON text and back bit
    /// for bit; NaN comes back as NaN (SQLite stores none: it binds NaN as NULL).
    #[test]
    fn doubles_round_trip_bit_exactly_through_json_text() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut samples: Vec<f64> = (0..200_000).map(|_| f64::from_bits(rng.random::<u64>())).collect();
        samples.extend([
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324,
            0.1,
            1.0 / 3.0,
            9007199254740993.0,
        ]);
        for f in samples {
            let text = serde_json::to_string(&Value::Real(f).to_json()).unwrap();
            assert_eq!(text.len(), Value::Real(f).json_len(), "{text}");
            let back = Value::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
            match back {
                Value::Real(b) if f.is_nan() => assert!(b.is_nan()),
                Value::Real(b) => assert_eq!(b.to_bits(), f.to_bits(), "{f:e} via {text}"),
                other => panic!("{f:e} came back as {other:?}"),
            }
        }
    }

    #[test]
    fn integers_outside_i64_are_refused_on_both_sides_and_doubles_stay_doubles() {
        let parse = |t: &str| Value::from_json(&serde_json::from_str(t).unwrap());
        assert_eq!(parse("9223372036854775807").unwrap(), Value::Integer(i64::MAX));
        assert_eq!(parse("-9223372036854775808").unwrap(), Value::Integer(i64::MIN));
        for t in
            ["9223372036854775808", "-9223372036854775809", "18446744073709551616", "-100000000000000000000"]
        {
            let err = parse(t).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{t}");
            assert!(err.message().contains("outside SQLite's 64-bit range"), "{err}");
        }
        assert_eq!(parse("1.0").unwrap(), Value::Real(1.0));
        assert_eq!(parse("-0.0").unwrap(), Value::Real(-0.0));
        assert_eq!(parse("1e3").unwrap(), Value::Real(1000.0));
        assert_eq!(parse("9.3e18").unwrap(), Value::Real(9.3e18));
        assert!(parse("1e400").unwrap_err().message().contains("beyond the range of a double"));
    }

    fn compact(v: &serde_json::Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn samples() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Integer(0),
            Value::Integer(7),
            Value::Integer(-10),
            Value::Integer(i64::MAX),
            Value::Integer(i64::MIN),
            Value::Real(0.0),
            Value::Real(-0.0),
            Value::Real(1.0),
            Value::Real(0.1),
            Value::Real(1e300),
            Value::Real(-2.5e-300),
            Value::Real(f64::MIN_POSITIVE),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Real(f64::NAN),
            Value::Text(String::new()),
            Value::Text("plain".into()),
            Value::Text("quote \" backslash \\ slash / tab \t nl \n cr \r ff \u{c} bs \u{8}".into()),
            Value::Text("nul \u{0} esc \u{1b} del \u{7f} unicode é ✓ 🦀".into()),
            Value::Blob(vec![]),
            Value::Blob(vec![1]),
            Value::Blob(vec![1, 2]),
            Value::Blob(vec![1, 2, 3]),
            Value::Blob((0..=255).collect()),
        ]
    }

    #[test]
    fn string_json_len_matches_serde_json_for_every_ascii_character_anywhere() {
        let long = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(3);
        for c in (0u8..=0x7f).map(char::from).chain(['é', '✓', '🦀']) {
            for s in [c.to_string(), format!("{long}{c}"), format!("{c}{long}"), format!("{long}{c}{long}")] {
                assert_eq!(
                    string_json_len(&s),
                    compact(&serde_json::Value::String(s.clone())).len(),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_read_as_its_exact_bytes() {
        let v = Value::from(ValueRef::Text(b"ok \xff\xfe end"));
        assert_eq!(v, Value::Blob(b"ok \xff\xfe end".to_vec()));
        assert_eq!(Value::from(ValueRef::Text("é".as_bytes())), Value::Text("é".into()));
    }

    #[test]
    fn json_len_matches_serde_json_exactly() {
        for v in samples() {
            assert_eq!(v.json_len(), compact(&v.to_json()).len(), "{v:?} -> {}", compact(&v.to_json()));
        }
    }

    #[test]
    fn rows_json_len_matches_serde_json_exactly() {
        let mut rows = Rows { columns: vec![], rows: vec![] };
        assert_eq!(rows.json_len(), compact(&rows.to_json()).len());
        rows.columns = vec!["a".into(), "we\"ird\n".into(), "é".into()];
        assert_eq!(rows.json_len(), compact(&rows.to_json()).len());
        let values = samples();
        for chunk in values.chunks(3) {
            let mut row = chunk.to_vec();
            row.resize(3, Value::Null);
            rows.rows.push(row);
            assert_eq!(rows.json_len(), compact(&rows.to_json()).len());
        }
        assert_eq!(
            compact(&Rows { columns: vec!["x".into()], rows: vec![] }.to_json()),
            r#"{"columns":["x"],"rows":[]}"#
        );
    }

    #[test]
    fn json_round_trips_every_sample() {
        for v in samples() {
            let back = Value::from_json(&v.to_json()).unwrap();
            match (&v, &back) {
                (Value::Real(a), Value::Real(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(v, back),
            }
        }
    }

    #[test]
    fn json_mapping_is_as_documented() {
        assert_eq!(compact(&Value::Real(f64::INFINITY).to_json()), r#"{"$real":"Infinity"}"#);
        assert_eq!(compact(&Value::Real(f64::NEG_INFINITY).to_json()), r#"{"$real":"-Infinity"}"#);
        assert_eq!(compact(&Value::Blob(b"hi!".to_vec()).to_json()), r#"{"$blob":"aGkh"}"#);
        assert_eq!(compact(&Value::Real(1.0).to_json()), "1.0");
        assert_eq!(compact(&Value::Integer(1).to_json()), "1");
        assert_eq!(Value::from_json(&json!(true)).unwrap(), Value::Integer(1));
        assert_eq!(Value::from_json(&json!(false)).unwrap(), Value::Integer(0));
        assert_eq!(Value::from_json(&json!(1.5)).unwrap(), Value::Real(1.5));
        assert_eq!(Value::from_json(&json!(i64::MIN)).unwrap(), Value::Integer(i64::MIN));
        assert_eq!(Value::from_json(&json!("Infinity")).unwrap(), Value::Text("Infinity".into()));
    }

    #[test]
    fn from_json_refuses_what_sqlite_cannot_hold() {
        let refused = [
            json!(u64::MAX),
            json!(i64::MAX as u64 + 1),
            json!([1, 2]),
            json!({}),
            json!({"a": 1}),
            json!({"$blob": 5}),
            json!({"$blob": "not base64!"}),
            json!({"$blob": "aGkh", "x": 1}),
            json!({"$real": "inf"}),
        ];
        for j in refused {
            let err = Value::from_json(&j).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{j}");
            assert!(err.message().contains("accepted") || err.message().contains("base64"), "{err}");
        }
        let err = Value::from_json(&json!(u64::MAX)).unwrap_err();
        assert!(err.message().contains("18446744073709551615"), "{err}");
    }

    #[test]
    fn binds_and_reads_through_rusqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for v in samples() {
            let back: Value = conn.query_row("SELECT ?1", [&v], |r| r.get(0)).unwrap();
            match (&v, &back) {
                // SQLite stores NaN as NULL.
                (Value::Real(a), _) if a.is_nan() => assert_eq!(back, Value::Null),
                _ => assert_eq!(v, back),
            }
        }
        let inf: Value = conn.query_row("SELECT 1e999", [], |r| r.get(0)).unwrap();
        assert_eq!(inf, Value::Real(f64::INFINITY));
        let bad: Value = conn.query_row("SELECT CAST(x'ff41' AS TEXT)", [], |r| r.get(0)).unwrap();
        assert_eq!(bad, Value::Blob(vec![0xff, 0x41]), "its bytes, not a replacement character");
    }
}
