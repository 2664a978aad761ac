//! Deciding whether a statement reads (→ `Database::query`) or writes (→ `Database::exec`)
//! without asking SQLite: the CLI only holds the broker's API, not a connection.
//!
//! The rule: skip whitespace and comments; the first keyword SELECT, VALUES, PRAGMA or
//! EXPLAIN reads. WITH reads unless the statement its common table expressions lead into (the
//! first SELECT/VALUES/INSERT/UPDATE/DELETE/REPLACE outside parentheses) writes. Anything
//! else writes; SQLite itself reports syntax errors.

/// Whether `sql` should run as a query (true) or as an exec (false).
pub fn is_read(sql: &str) -> bool {
    let mut words = TopLevelWords::new(sql);
    match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("SELECT" | "VALUES" | "PRAGMA" | "EXPLAIN") => true,
        Some("WITH") => {
            for word in words {
                match word.to_ascii_uppercase().as_str() {
                    "SELECT" | "VALUES" => return true,
                    "INSERT" | "UPDATE" | "DELETE" | "REPLACE" => return false,
                    _ => {}
                }
            }
            true
        }
        _ => false,
    }
}

/// The bare words of a statement outside parentheses, string literals, quoted identifiers
/// and comments, in order.
struct TopLevelWords<'a> {
    sql: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> TopLevelWords<'a> {
    fn new(sql: &'a str) -> Self {
        TopLevelWords { sql, pos: 0, depth: 0 }
    }

    fn rest(&self) -> &'a str {
        self.sql.get(self.pos..).unwrap_or("")
    }

    /// Advances past the first occurrence of `end` (or to the end of the text).
    fn skip_past(&mut self, start: usize, end: &str) {
        let from = self.pos + start;
        match self.sql.get(from..).and_then(|r| r.find(end)) {
            Some(i) => self.pos = from + i + end.len(),
            None => self.pos = self.sql.len(),
        }
    }
}

impl<'a> Iterator for TopLevelWords<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let rest = self.rest();
            let c = rest.chars().next()?;
            if rest.starts_with("--") {
                self.skip_past(2, "\n");
            } else if rest.starts_with("/*") {
                self.skip_past(2, "*/");
            } else if c == '\'' || c == '"' || c == '`' {
                // Doubled quotes inside are two adjacent literals to this scan: harmless.
                self.skip_past(1, &c.to_string());
            } else if c == '[' {
                self.skip_past(1, "]");
            } else if c == '(' {
                self.depth += 1;
                self.pos += 1;
            } else if c == ')' {
                self.depth = self.depth.saturating_sub(1);
                self.pos += 1;
            } else if c.is_alphanumeric() || c == '_' {
                let len = rest.find(|ch: char| !(ch.is_alphanumeric() || ch == '_')).unwrap_or(rest.len());
                let word = rest.get(..len).unwrap_or("");
                self.pos += len;
                if self.depth == 0 {
                    return Some(word);
                }
            } else {
                self.pos += c.len_utf8();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_read;

    #[test]
    fn reads_and_writes_are_told_apart() {
        for sql in [
            "SELECT 1",
            "  select * from t",
            "-- a comment\nSELECT 1",
            "/* c */ VALUES (1)",
            "PRAGMA integrity_check",
            "explain query plan select 1",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c",
            "with a as (select 1), \"b\" as materialized (select 2) select * from a, b",
        ] {
            assert!(is_read(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "create table t(x)",
            "DELETE FROM t",
            "UPDATE t SET x = 'SELECT'",
            "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
            "with a(x) as (select 1) delete from t where x in a",
            "",
            "SELEC 1",
            "BEGIN",
        ] {
            assert!(!is_read(sql), "{sql}");
        }
    }
}
