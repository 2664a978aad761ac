//! SQL redaction for logs: the shape of a statement without its data.
//!
//! [`redact_sql`] keeps keywords, identifiers (bare, `"quoted"`, `[bracketed]` and
//! `` `backticked` ``), operators and punctuation, and replaces every literal (strings,
//! numbers, blobs) and every bound parameter (`?`, `?NNN`, `:name`, `@name`, `#name`, `$name`)
//! with `?`. Comments are dropped and whitespace collapses to one space, so two statements
//! that differ only in their data redact to the same text.
//!
//! It follows SQLite's tokenizer closely enough that nothing a literal holds survives, and it
//! never panics: an unterminated quote or comment redacts everything to the end of the input.
//! A double-quoted token is kept as an identifier; connections opened by
//! [`crate::sqlite::open_connection`] turn off SQLite's fallback that reads an unknown
//! `"identifier"` in DML as a string literal, so that fallback cannot leak data here.
//!
//! The output is at most [`REDACTED_SQL_BYTES_MAX`] bytes; longer output is cut on a character
//! boundary and ends with `…`. The work done is linear in the input, and scanning stops once
//! the output is full.

/// The most bytes [`redact_sql`] returns, the truncation marker included.
pub const REDACTED_SQL_BYTES_MAX: usize = 1024;

/// Appended when the redacted text had to be cut.
const TRUNCATION_MARKER: &str = "…";

/// Returns `sql` with every literal and parameter replaced by `?`, comments removed and
/// whitespace collapsed; at most [`REDACTED_SQL_BYTES_MAX`] bytes.
pub fn redact_sql(sql: &str) -> String {
    let mut out = Output::default();
    let mut lexer = Lexer { sql, pos: 0 };
    // Bounded: every iteration consumes at least one byte of the input.
    while lexer.pos < sql.len() && !out.truncated {
        let start = lexer.pos;
        let token = lexer.next_token();
        debug_assert!(lexer.pos > start, "the lexer always advances");
        match token {
            Token::Space => out.space_pending = true,
            Token::Redacted => out.push("?"),
            Token::Keep(start, end) => out.push(sql.get(start..end).unwrap_or("?")),
        }
        if lexer.pos <= start {
            // Defensive: never loop forever, even if a lexer rule failed to advance.
            break;
        }
    }
    out.finish()
}

/// What one lexed token contributes to the output.
enum Token {
    /// Whitespace or a comment: at most one space between the neighbouring tokens.
    Space,
    /// A literal or a parameter.
    Redacted,
    /// Text kept as it is: the byte range in the input.
    Keep(usize, usize),
}

/// A cursor over the SQL text. All rules advance by whole ASCII bytes or over runs of bytes
/// that end at an ASCII byte or the end of input, so every position is a char boundary.
struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn byte_at(&self, index: usize) -> Option<u8> {
        self.sql.as_bytes().get(index).copied()
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.byte_at(self.pos.saturating_add(ahead))
    }

    /// Advances while `pred` holds for the current byte.
    fn skip_while(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek(0).is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn next_token(&mut self) -> Token {
        let Some(first) = self.peek(0) else {
            return Token::Space;
        };
        let second = self.peek(1);
        match first {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                self.skip_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c));
                Token::Space
            }
            b'-' if second == Some(b'-') => {
                self.skip_while(|b| b != b'\n');
                Token::Space
            }
            b'/' if second == Some(b'*') => {
                self.pos += 2;
                self.skip_past("*/");
                Token::Space
            }
            b'\'' => {
                self.pos += 1;
                self.skip_quoted(b'\'');
                Token::Redacted
            }
            b'x' | b'X' if second == Some(b'\'') => {
                self.pos += 2;
                self.skip_quoted(b'\'');
                Token::Redacted
            }
            b'"' | b'`' => self.quoted_identifier(first, first),
            b'[' => self.quoted_identifier(b'[', b']'),
            b'0'..=b'9' => {
                self.number();
                Token::Redacted
            }
            b'.' if second.is_some_and(|b| b.is_ascii_digit()) => {
                self.number();
                Token::Redacted
            }
            b'?' => {
                self.pos += 1;
                self.skip_while(|b| b.is_ascii_digit());
                Token::Redacted
            }
            b':' | b'@' | b'#' if second.is_some_and(is_id_char) => {
                self.pos += 1;
                self.skip_while(is_id_char);
                Token::Redacted
            }
            b'$' if second.is_some_and(is_id_char) => {
                self.tcl_variable();
                Token::Redacted
            }
            b if is_id_char(b) => {
                let start = self.pos;
                self.skip_while(is_id_char);
                Token::Keep(start, self.pos)
            }
            _ => {
                // Any other ASCII byte (operators, punctuation) is kept alone. Bytes >= 0x80
                // are identifier characters, so this never splits a UTF-8 sequence.
                let start = self.pos;
                self.pos += 1;
                Token::Keep(start, self.pos)
            }
        }
    }

    /// Skips to just past `end`, or to the end of input when it never comes.
    fn skip_past(&mut self, end: &str) {
        let rest = self.sql.get(self.pos..).unwrap_or("");
        self.pos = match rest.find(end) {
            Some(offset) => self.pos + offset + end.len(),
            None => self.sql.len(),
        };
    }

    /// Skips a quoted run whose opening quote is already consumed; a doubled quote is an
    /// escaped quote. Returns whether the closing quote was found.
    fn skip_quoted(&mut self, quote: u8) -> bool {
        // Bounded: advances at least one byte per iteration.
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if b == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                } else {
                    return true;
                }
            }
        }
        false
    }

    /// A quoted identifier is kept verbatim; an unterminated one might be data, so it is
    /// redacted (with everything after it).
    fn quoted_identifier(&mut self, open: u8, close: u8) -> Token {
        let start = self.pos;
        self.pos += 1;
        let closed = if open == close {
            self.skip_quoted(close)
        } else {
            self.skip_while(|b| b != close);
            let found = self.peek(0).is_some();
            if found {
                self.pos += 1;
            }
            found
        };
        if closed {
            Token::Keep(start, self.pos)
        } else {
            Token::Redacted
        }
    }

    /// Hex (`0x1F`), decimal (`12`, `1.5`, `.5`, `1e-5`, `1_000`), and any identifier
    /// characters glued to it (SQLite rejects those, but they must not leak either).
    fn number(&mut self) {
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X')) {
            self.pos += 2;
            self.skip_while(|b| b.is_ascii_hexdigit() || b == b'_');
        } else {
            self.skip_while(|b| b.is_ascii_digit() || b == b'_');
            if self.peek(0) == Some(b'.') {
                self.pos += 1;
                self.skip_while(|b| b.is_ascii_digit() || b == b'_');
            }
            if matches!(self.peek(0), Some(b'e' | b'E')) {
                let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
                if self.peek(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1 + sign;
                    self.skip_while(|b| b.is_ascii_digit() || b == b'_');
                }
            }
        }
        self.skip_while(is_id_char);
    }

    /// `$name`, with SQLite's TCL-style `::` segments and one `(…)` suffix.
    fn tcl_variable(&mut self) {
        self.pos += 1;
        self.skip_while(is_id_char);
        // Bounded: each iteration consumes at least two bytes.
        while self.peek(0) == Some(b':') && self.peek(1) == Some(b':') {
            self.pos += 2;
            self.skip_while(is_id_char);
        }
        if self.peek(0) == Some(b'(') {
            self.skip_while(|b| b != b')');
            if self.peek(0).is_some() {
                self.pos += 1;
            }
        }
    }
}

/// SQLite's identifier characters: ASCII letters and digits, `_`, `$`, and every byte of a
/// non-ASCII UTF-8 character.
fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The redacted text under construction, capped at [`REDACTED_SQL_BYTES_MAX`].
#[derive(Default)]
struct Output {
    text: String,
    space_pending: bool,
    truncated: bool,
}

impl Output {
    fn push(&mut self, token: &str) {
        if self.space_pending && !self.text.is_empty() {
            self.push_capped(" ");
        }
        self.space_pending = false;
        self.push_capped(token);
    }

    fn push_capped(&mut self, piece: &str) {
        let room = REDACTED_SQL_BYTES_MAX.saturating_sub(self.text.len());
        if piece.len() <= room {
            self.text.push_str(piece);
        } else {
            self.text.push_str(piece.get(..floor_char_boundary(piece, room)).unwrap_or(""));
            self.truncated = true;
        }
    }

    fn finish(mut self) -> String {
        if self.truncated {
            cut_with_marker(&mut self.text, REDACTED_SQL_BYTES_MAX);
        }
        self.text
    }
}

/// A copy of `text` of at most `bytes_max` bytes, cut on a char boundary and ending with `…`
/// when anything was cut (the marker counts against `bytes_max`). Copies no more than needed.
pub(crate) fn truncate_with_marker(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_owned();
    }
    let keep = floor_char_boundary(text, bytes_max.saturating_sub(TRUNCATION_MARKER.len()));
    let mut out = text.get(..keep).unwrap_or("").to_owned();
    if out.len() + TRUNCATION_MARKER.len() <= bytes_max {
        out.push_str(TRUNCATION_MARKER);
    }
    out
}

fn cut_with_marker(text: &mut String, bytes_max: usize) {
    let keep = bytes_max.saturating_sub(TRUNCATION_MARKER.len());
    text.truncate(floor_char_boundary(text, keep));
    if text.len() + TRUNCATION_MARKER.len() <= bytes_max {
        text.push_str(TRUNCATION_MARKER);
    }
}

/// The largest char boundary of `s` at or below `index`.
fn floor_char_boundary(s: &str, index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    let mut i = index;
    // Bounded: a UTF-8 character is at most 4 bytes, and 0 is always a boundary.
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn literals_and_parameters_become_placeholders() {
        let cases = [
            ("SELECT * FROM t WHERE a = 1", "SELECT * FROM t WHERE a = ?"),
            ("select a,b from t where name='bob' and x>=-12.5e3", "select a,b from t where name=? and x>=-?"),
            (
                "INSERT INTO t VALUES ('it''s', X'DEADBEEF', 0xFF, .5, 1e5, 1_000)",
                "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
            ),
            (
                "SELECT ?, ?12, :name, @name, #n, $name, $a::b(c d) FROM t",
                "SELECT ?, ?, ?, ?, ?, ?, ? FROM t",
            ),
            (
                "SELECT \"col 1\", [my col2], `x3` FROM \"t\"\"q\"",
                "SELECT \"col 1\", [my col2], `x3` FROM \"t\"\"q\"",
            ),
            ("SELECT t1.c2 FROM t1", "SELECT t1.c2 FROM t1"),
            ("  SELECT\n\t1   -- secret 42\n  FROM /* hidden 7 */ t  ", "SELECT ? FROM t"),
            ("a/**/b", "a b"),
            ("SELECT x'ab' || y", "SELECT ? || y"),
            ("SELECT 'unterminated secret 99", "SELECT ?"),
            ("SELECT \"unterminated 99", "SELECT ?"),
            ("SELECT [unterminated 99", "SELECT ?"),
            ("SELECT 1 /* unterminated 99", "SELECT ?"),
            ("SELECT 12abc, 0x1g", "SELECT ?, ?"),
            ("SELECT é, 'é' FROM ünï", "SELECT é, ? FROM ünï"),
            ("", ""),
            ("   \n ", ""),
        ];
        for (sql, expected) in cases {
            assert_eq!(redact_sql(sql), expected, "input: {sql:?}");
        }
    }

    #[test]
    fn truncated_copy_respects_the_cap() {
        assert_eq!(truncate_with_marker("abc", 3), "abc");
        assert_eq!(truncate_with_marker("abcdef", 5), "ab…");
        // "é" is two bytes: never cut inside it.
        assert_eq!(truncate_with_marker("éééé", 6), "é…");
        assert_eq!(truncate_with_marker("abcdef", 2), "");
    }

    #[test]
    fn same_shape_redacts_the_same() {
        assert_eq!(
            redact_sql("SELECT * FROM t WHERE id = 1 AND name = 'a'"),
            redact_sql("SELECT *  FROM t\nWHERE id = 99999 AND name = 'other' -- c")
        );
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        let long = format!("SELECT {} FROM t", "ééé_col, ".repeat(500));
        let out = redact_sql(&long);
        assert!(out.len() <= REDACTED_SQL_BYTES_MAX, "{}", out.len());
        assert!(out.ends_with(TRUNCATION_MARKER));
        assert!(out.starts_with("SELECT ééé_col, "));

        // Exactly at the cap: kept whole, no marker.
        let exact = "a".repeat(REDACTED_SQL_BYTES_MAX);
        assert_eq!(redact_sql(&exact), exact);
        // One byte more: cut, marker added, still within the cap.
        let over = "a".repeat(REDACTED_SQL_BYTES_MAX + 1);
        let out = redact_sql(&over);
        assert_eq!(out.len(), REDACTED_SQL_BYTES_MAX);
        assert!(out.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn random_bytes_never_panic_and_redaction_is_stable() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
        let alphabet = b"'\"`[]-/*?:@#$0123456789xXeE._ ()\n\tabc\xc3\xa9\xff";
        for _ in 0..5000 {
            let len = rng.random_range(0..200);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.random_bool(0.7) {
                        alphabet[rng.random_range(0..alphabet.len())]
                    } else {
                        rng.random::<u8>()
                    }
                })
                .collect();
            let sql = String::from_utf8_lossy(&bytes);
            let out = redact_sql(&sql);
            assert!(out.len() <= REDACTED_SQL_BYTES_MAX);
            assert!(out.len() <= sql.len(), "redaction never grows short input: {sql:?} -> {out:?}");
            assert_eq!(redact_sql(&out), out, "redaction is idempotent for {sql:?}");
        }
        // Long random inputs exercise the cap.
        for _ in 0..50 {
            let len = rng.random_range(1000..5000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
            let out = redact_sql(&String::from_utf8_lossy(&bytes));
            assert!(out.len() <= REDACTED_SQL_BYTES_MAX);
        }
    }

    /// Builds statements from known tokens, so the exact redaction is known, and checks that
    /// no literal, parameter or comment content survives.
    #[test]
    fn generated_statements_leak_no_literal() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
        let kept = [
            "SELECT",
            "FROM",
            "WHERE",
            "AND",
            "INSERT",
            "VALUES",
            "tbl",
            "col_a",
            "\"quoted col\"",
            "[bracket col]",
            "`tick col`",
            "=",
            ",",
            "(",
            ")",
            "*",
            "<",
            ">=",
            "||",
            "-",
            "+",
            "/",
        ];
        for _ in 0..2000 {
            let mut sql = String::new();
            let mut expected: Vec<String> = Vec::new();
            for _ in 0..rng.random_range(1..30) {
                let secret = rng.random_range(0..1_000_000u32);
                let (text, shown) = match rng.random_range(0..12) {
                    0 => (format!("{secret}"), Some("?".to_owned())),
                    1 => (format!("{secret}.{secret}e-{}", secret % 300), Some("?".to_owned())),
                    2 => (format!("0x{secret:X}"), Some("?".to_owned())),
                    3 => (format!("'SECRET {secret} it''s'"), Some("?".to_owned())),
                    4 => (format!("X'{secret:08x}'"), Some("?".to_owned())),
                    5 => (format!("?{}", secret % 100), Some("?".to_owned())),
                    6 => (format!(":p{secret}"), Some("?".to_owned())),
                    7 => (format!("$v{secret}::w{secret}(SECRET {secret})"), Some("?".to_owned())),
                    8 => (format!("-- SECRET {secret}\n"), None),
                    9 => (format!("/* SECRET {secret} */"), None),
                    _ => {
                        let k = kept[rng.random_range(0..kept.len())];
                        (k.to_owned(), Some(k.to_owned()))
                    }
                };
                sql.push_str(&text);
                sql.push_str([" ", "\n", "\t  ", " \r\n "][rng.random_range(0..4)]);
                expected.extend(shown);
            }
            let out = redact_sql(&sql);
            assert_eq!(out, expected.join(" "), "input: {sql:?}");
            assert!(!out.chars().any(|c| c.is_ascii_digit()), "digit leaked: {sql:?} -> {out:?}");
            assert!(!out.contains("SECRET"), "literal leaked: {sql:?} -> {out:?}");
        }
    }
}
