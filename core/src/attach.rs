//! ATTACH and DETACH of an app's own databases, as SQL the broker answers itself.
//!
//! An app may run `ATTACH [DATABASE] 'sila://db/<name>' AS <schema>` (the name also as a
//! bound parameter, `?` or `?NNN`) and `DETACH [DATABASE] <schema>` through `exec` or
//! `query`. These statements never reach SQLite as written: [`parse`] recognizes them, the
//! API checks the name against the app's manifest and records the attachment on the database
//! handle, and the broker attaches the named database's *current file*, read-only, on every
//! connection of the handle before it serves a request (and again after that database flips
//! to a new version). So an attachment is a property of the database handle, seen the same by
//! every request whichever pooled connection serves it, and never a file path an app chose.
//!
//! Attached databases are always read-only (`SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` is off): a
//! write through another handle's connection would bypass that database's writer queue,
//! quota (`max_page_count`), snapshots and flips. Writes go through the database's own handle.
//! At most [`ATTACHMENTS_MAX`] databases are attached to one handle.
//!
//! Any other ATTACH or DETACH (a path, a URI, `:memory:`, another app's database, a name the
//! manifest does not list, the database itself, inside a transaction) is refused with
//! `PolicyDenied`; SQL that reaches SQLite with an ATTACH in it is refused by the authorizer.

use crate::names::{DbName, LogicalName};
use crate::sqlite::Value;
use crate::{Error, ErrorCode, Result};

/// Databases attached to one database handle at most (`SQLITE_LIMIT_ATTACHED` matches).
pub const ATTACHMENTS_MAX: usize = 4;

/// Longest schema name an attachment may use, in bytes.
pub const SCHEMA_NAME_BYTES_MAX: usize = 64;

/// An ATTACH or DETACH statement the broker answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `ATTACH 'sila://db/<db>' AS <schema>`.
    Attach {
        /// The database to attach (of the same app).
        db: DbName,
        /// The schema name it is attached as.
        schema: String,
    },
    /// `DETACH <schema>`.
    Detach {
        /// The schema name to detach.
        schema: String,
    },
}

/// Why an ATTACH is refused, shown to the app. It never echoes what the app named: the
/// name may be a host path.
fn refused(why: &str) -> Error {
    Error::new(
        ErrorCode::PolicyDenied,
        format!(
            "ATTACH is refused: {why}; apps attach only their own databases, as \
             ATTACH 'sila://db/<name>' AS <schema>, with <name> listed in their manifest"
        ),
    )
}

/// One token of the small grammar this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword or identifier), as written.
    Word(String),
    /// A quoted identifier (`"x"`, `[x]`, `` `x` ``), unquoted.
    Quoted(String),
    /// A string literal, unquoted.
    Text(String),
    /// A positional parameter: `?` is `None`, `?N` is `Some(N)`.
    Param(Option<usize>),
    /// `;` (only allowed last).
    Semicolon,
    /// Anything else.
    Other,
}

/// Splits `sql` into tokens, skipping whitespace and comments. `None` when a quote or
/// comment is not closed. Linear in the input: every round consumes at least one byte.
fn tokens(sql: &str) -> Option<Vec<Token>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql.get(i..)?.find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = i + 2 + sql.get(i + 2..)?.find("*/")? + 2;
            }
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if b == b'[' { b']' } else { b };
                let mut text = Vec::new();
                let mut j = i + 1;
                loop {
                    let c = *bytes.get(j)?;
                    if c == close {
                        // A doubled quote is one quote character (not for brackets).
                        if close != b']' && bytes.get(j + 1) == Some(&close) {
                            text.push(c);
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    text.push(c);
                    j += 1;
                }
                let text = String::from_utf8(text).ok()?;
                out.push(if b == b'\'' { Token::Text(text) } else { Token::Quoted(text) });
                i = j + 1;
            }
            b'?' => {
                let digits = bytes.get(i + 1..)?.iter().take_while(|c| c.is_ascii_digit()).count();
                let n = match digits {
                    0 => None,
                    _ => Some(sql.get(i + 1..i + 1 + digits)?.parse().ok()?),
                };
                out.push(Token::Param(n));
                i += 1 + digits;
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                let len = bytes
                    .get(i..)?
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'$' || **c >= 0x80)
                    .count();
                out.push(Token::Word(sql.get(i..i + len)?.to_string()));
                i += len;
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Recognizes an ATTACH or DETACH statement. `None` when `sql` is some other statement (it
/// goes to SQLite as usual); `Some(Err)` when it is an ATTACH or DETACH this engine refuses
/// (always `PolicyDenied`, naming why). `params` are the request's positional parameters.
pub fn parse(sql: &str, params: &[Value]) -> Option<Result<Statement>> {
    let first = sql.trim_start().get(..6)?;
    let is_attach = first.eq_ignore_ascii_case("attach");
    if !is_attach && !first.eq_ignore_ascii_case("detach") {
        return None;
    }
    let Some(mut toks) = tokens(sql) else {
        return Some(Err(refused("the statement has an unclosed quote or comment")));
    };
    if toks.last() == Some(&Token::Semicolon) {
        toks.pop();
    }
    let word = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    // ATTACH/DETACH [DATABASE] …
    let skip = if word(toks.get(1), "database") { 2 } else { 1 };
    let rest = toks.get(skip..).unwrap_or_default();
    Some(if is_attach { parse_attach(rest, params) } else { parse_detach(rest) })
}

fn parse_attach(rest: &[Token], params: &[Value]) -> Result<Statement> {
    let [target, Token::Word(as_kw), schema] = rest else {
        return Err(refused("the statement is not of the form ATTACH 'sila://db/<name>' AS <schema>"));
    };
    if !as_kw.eq_ignore_ascii_case("as") {
        return Err(refused("the statement is not of the form ATTACH 'sila://db/<name>' AS <schema>"));
    }
    let name = match target {
        Token::Text(t) => t.clone(),
        Token::Param(n) => {
            let index = n.unwrap_or(1).checked_sub(1).ok_or_else(|| refused("?0 is not a parameter"))?;
            match params.get(index) {
                Some(Value::Text(t)) => t.clone(),
                _ => return Err(refused("the database parameter is not a text value")),
            }
        }
        _ => return Err(refused("the database must be a string literal or a parameter")),
    };
    if !name.starts_with(crate::names::LOGICAL_PREFIX) {
        return Err(refused("files, URIs and in-memory databases cannot be attached"));
    }
    let logical = LogicalName::parse(&name).map_err(|_| refused("the logical name is not valid"))?;
    if logical.app.is_some() {
        return Err(refused("only the calling app's databases can be attached, named sila://db/<name>"));
    }
    Ok(Statement::Attach { db: logical.db, schema: schema_name(schema)? })
}

fn parse_detach(rest: &[Token]) -> Result<Statement> {
    let [schema] = rest else {
        return Err(Error::new(
            ErrorCode::PolicyDenied,
            "DETACH is refused: the statement is not of the form DETACH <schema>",
        ));
    };
    Ok(Statement::Detach { schema: schema_name(schema)? })
}

/// A schema name: a word or quoted identifier of letters, digits and `_`, not `main` or
/// `temp`, at most [`SCHEMA_NAME_BYTES_MAX`] bytes.
fn schema_name(token: &Token) -> Result<String> {
    let name = match token {
        Token::Word(w) | Token::Quoted(w) => w,
        _ => return Err(refused("the schema name must be an identifier")),
    };
    let good = !name.is_empty()
        && name.len() <= SCHEMA_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if !good {
        return Err(refused(
            "the schema name must be 1-64 ASCII letters, digits or _, not starting with a digit",
        ));
    }
    if name.eq_ignore_ascii_case("main") || name.eq_ignore_ascii_case("temp") {
        return Err(Error::new(
            ErrorCode::PolicyDenied,
            "ATTACH/DETACH is refused: main and temp are the connection's own schemas",
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Statement {
        match parse(sql, &[]) {
            Some(Ok(s)) => s,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn refused_code(sql: &str, params: &[Value]) -> ErrorCode {
        match parse(sql, params) {
            Some(Err(e)) => {
                assert!(e.message().contains("ATTACH") || e.message().contains("DETACH"), "{e}");
                e.code()
            }
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn db(name: &str) -> DbName {
        DbName::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_the_forms_it_offers() {
        let want = Statement::Attach { db: db("notes"), schema: "n".into() };
        assert_eq!(ok("ATTACH 'sila://db/notes' AS n"), want);
        assert_eq!(ok("  attach database 'sila://db/notes' as N ;"), want);
        assert_eq!(ok("ATTACH /* c */ 'sila://db/notes' -- c\n AS \"n\""), want);
        let p = [Value::Text("sila://db/notes".into())];
        assert_eq!(parse("ATTACH ? AS n", &p).and_then(|r| r.ok()), Some(want.clone()));
        assert_eq!(parse("ATTACH ?1 AS [n]", &p).and_then(|r| r.ok()), Some(want));
        assert_eq!(ok("DETACH n"), Statement::Detach { schema: "n".into() });
        assert_eq!(ok("detach database `N`;"), Statement::Detach { schema: "n".into() });
    }

    #[test]
    fn leaves_other_statements_to_sqlite() {
        for sql in ["SELECT 1", "INSERT INTO attach VALUES (1)", "", "at", "attachment"] {
            if let Some(r) = parse(sql, &[]) {
                // "attachment" starts with "attach": it is parsed and refused, never run.
                assert!(r.is_err(), "{sql}");
            }
        }
        assert!(parse("SELECT 'ATTACH'", &[]).is_none());
    }

    #[test]
    fn refuses_everything_else_without_echoing_it() {
        let p = [Value::Text("/etc/passwd".into()), Value::Integer(3)];
        for (sql, params) in [
            ("ATTACH '/etc/passwd' AS x", &[][..]),
            ("ATTACH 'file:/tmp/stolen.sqlite?vfs=unix' AS x", &[]),
            ("ATTACH ':memory:' AS m", &[]),
            ("ATTACH '' AS m", &[]),
            ("ATTACH 'sila://app/com.victim/db/main' AS v", &[]),
            ("ATTACH 'sila://db/../escape' AS v", &[]),
            ("ATTACH ? AS x", &p[..]),
            ("ATTACH ?2 AS x", &p[..]),
            ("ATTACH ?9 AS x", &p[..]),
            ("ATTACH ?0 AS x", &p[..]),
            ("ATTACH 'sila://db/notes' AS main", &[]),
            ("ATTACH 'sila://db/notes' AS temp", &[]),
            ("ATTACH 'sila://db/notes' AS \"a b\"", &[]),
            ("ATTACH 'sila://db/notes' AS 1x", &[]),
            ("ATTACH 'sila://db/notes' AS n; DROP TABLE t", &[]),
            ("ATTACH 'sila://db/notes' || '' AS n", &[]),
            ("ATTACH 'sila://db/notes", &[]),
            ("ATTACH 'sila://db/notes' n", &[]),
            ("DETACH main", &[]),
            ("DETACH a b", &[]),
            ("DETACH", &[]),
        ] {
            assert_eq!(refused_code(sql, params), ErrorCode::PolicyDenied, "{sql}");
            if let Some(Err(e)) = parse(sql, params) {
                assert!(!e.message().contains("passwd") && !e.message().contains("stolen"), "{e}");
            }
        }
    }

    #[test]
    fn schema_names_are_bounded() {
        let long = format!("ATTACH 'sila://db/notes' AS {}", "a".repeat(SCHEMA_NAME_BYTES_MAX));
        assert!(matches!(parse(&long, &[]), Some(Ok(_))), "exactly the bound");
        let longer = format!("ATTACH 'sila://db/notes' AS {}", "a".repeat(SCHEMA_NAME_BYTES_MAX + 1));
        assert!(matches!(parse(&longer, &[]), Some(Err(_))), "one past the bound");
    }
}
