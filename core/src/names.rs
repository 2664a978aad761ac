//! Names: database names, app ids and logical database URIs.
//!
//! Nothing an app supplies becomes a path component unchecked. App directories are UUIDs
//! assigned at registration; database names are checked here against a strict grammar:
//!
//! * **database name** — 1 to 64 bytes of lowercase ASCII letters, digits, `_` and `-`,
//!   starting with a letter or digit, and not one of the reserved names [`RESERVED_DB_NAMES`].
//!   Lowercase only, so two names never collide on a case-insensitive filesystem.
//! * **app id** — 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`, starting with a
//!   letter or digit, without `..`.
//! * **logical name** — `sila://db/<db>` or `sila://app/<appId>/db/<db>`.
//!
//! Anything else — empty, too long, `/`, `\`, NUL, control characters, non-ASCII look-alikes —
//! is refused with [`ErrorCode::InvalidName`] and a message saying which rule it broke.

use crate::{Error, ErrorCode, Result};
use std::fmt;

/// Longest database name or app id, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// Names that are files or directories of the database layout and can never be databases.
pub const RESERVED_DB_NAMES: [&str; 5] = ["current", "manifest", "snapshots", "lock", "tmp"];

/// A validated database name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbName(String);

/// A validated app id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId(String);

fn invalid(kind: &str, value: &str, why: &str) -> Error {
    // The value is shown escaped so control characters in it cannot garble a log line.
    Error::new(
        ErrorCode::InvalidName,
        format!("invalid {kind} {:?}: {why}", value.escape_debug().to_string()),
    )
}

fn check_common(kind: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(kind, value, "must not be empty"));
    }
    if value.len() > NAME_BYTES_MAX {
        return Err(invalid(
            kind,
            value,
            &format!("is {} bytes, the limit is {NAME_BYTES_MAX}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii()) {
        return Err(invalid(kind, value, &format!("contains non-ASCII character U+{:04X}", c as u32)));
    }
    if let Some(c) = value.chars().find(|c| c.is_ascii_control()) {
        return Err(invalid(kind, value, &format!("contains control character 0x{:02x}", c as u32)));
    }
    if value.contains('/') || value.contains('\\') {
        return Err(invalid(kind, value, "contains a path separator"));
    }
    if value.contains("..") {
        return Err(invalid(kind, value, "contains \"..\""));
    }
    let first = value.chars().next().unwrap_or('\0');
    if !first.is_ascii_alphanumeric() {
        return Err(invalid(kind, value, "must start with a letter or digit"));
    }
    Ok(())
}

impl DbName {
    /// Validates a database name.
    pub fn new(value: &str) -> Result<DbName> {
        check_common("database name", value)?;
        if let Some(c) =
            value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(invalid(
                "database name",
                value,
                &format!("character {c:?} is not allowed (use a-z, 0-9, '_' and '-')"),
            ));
        }
        if RESERVED_DB_NAMES.contains(&value) {
            return Err(invalid("database name", value, "is reserved"));
        }
        Ok(DbName(value.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AppId {
    /// Validates an app id.
    pub fn new(value: &str) -> Result<AppId> {
        check_common("app id", value)?;
        if let Some(c) =
            value.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
        {
            return Err(invalid(
                "app id",
                value,
                &format!("character {c:?} is not allowed (use letters, digits, '.', '_' and '-')"),
            ));
        }
        Ok(AppId(value.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed logical database name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalName {
    /// The app named explicitly (`sila://app/<appId>/db/<db>`), or `None` for `sila://db/<db>`,
    /// which means "the calling app".
    pub app: Option<AppId>,
    /// The database.
    pub db: DbName,
}

/// The scheme prefix of logical names.
pub const LOGICAL_PREFIX: &str = "sila://";

impl LogicalName {
    /// Parses `sila://db/<db>` or `sila://app/<appId>/db/<db>`.
    pub fn parse(value: &str) -> Result<LogicalName> {
        let bad = |why: &str| invalid("logical name", value, why);
        let rest = value.strip_prefix(LOGICAL_PREFIX).ok_or_else(|| {
            bad("must start with sila:// (sila://db/<name> or sila://app/<appId>/db/<name>)")
        })?;
        if let Some(db) = rest.strip_prefix("db/") {
            return Ok(LogicalName { app: None, db: DbName::new(db)? });
        }
        if let Some(app_rest) = rest.strip_prefix("app/") {
            let (app, db) =
                app_rest.split_once("/db/").ok_or_else(|| bad("expected sila://app/<appId>/db/<name>"))?;
            return Ok(LogicalName { app: Some(AppId::new(app)?), db: DbName::new(db)? });
        }
        Err(bad("expected sila://db/<name> or sila://app/<appId>/db/<name>"))
    }
}

impl fmt::Display for LogicalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.app {
            None => write!(f, "sila://db/{}", self.db),
            Some(app) => write!(f, "sila://app/{app}/db/{}", self.db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_err(value: &str) -> ErrorCode {
        DbName::new(value).err().map(|e| e.code()).unwrap_or(ErrorCode::Internal)
    }

    #[test]
    fn accepts_good_db_names() {
        for name in ["analytics", "cache", "a", "db-2", "x_y", &"a".repeat(64)] {
            assert!(DbName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_bad_db_names() {
        let long = "a".repeat(65);
        let bad = [
            "",
            long.as_str(),
            "..",
            "a..b",
            "../etc",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\tb",
            "\u{7f}",
            "аnalytics", // Cyrillic а: a look-alike
            "ａ",        // full-width a
            "Analytics",
            "-lead",
            "_lead",
            ".hidden",
            "a b",
            "a:b",
            "current",
            "manifest",
            "snapshots",
        ];
        for name in bad {
            assert_eq!(db_err(name), ErrorCode::InvalidName, "{name:?}");
        }
    }

    #[test]
    fn error_names_the_rule() {
        let err = DbName::new("current").err().map(|e| e.message().to_string()).unwrap_or_default();
        assert!(err.contains("reserved"), "{err}");
        let err = DbName::new(&"a".repeat(65)).err().map(|e| e.message().to_string()).unwrap_or_default();
        assert!(err.contains("65 bytes") && err.contains("64"), "{err}");
    }

    #[test]
    fn app_ids() {
        assert!(AppId::new("com.example.notes").is_ok());
        assert!(AppId::new("App_1-x").is_ok());
        for bad in ["", "a/b", "..", "a..b", ".x", "a b", "é", "a\0"] {
            assert_eq!(AppId::new(bad).err().map(|e| e.code()), Some(ErrorCode::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn logical_names_parse_and_print() {
        let n = LogicalName::parse("sila://db/analytics").unwrap();
        assert_eq!(n.app, None);
        assert_eq!(n.db.as_str(), "analytics");
        assert_eq!(n.to_string(), "sila://db/analytics");
        let n = LogicalName::parse("sila://app/com.x/db/cache").unwrap();
        assert_eq!(n.app.as_ref().map(|a| a.as_str()), Some("com.x"));
        assert_eq!(n.to_string(), "sila://app/com.x/db/cache");
        for bad in [
            "analytics",
            "sila://db/",
            "sila://db/../x",
            "sila://db/a/b",
            "sila://app/x/cache",
            "sila://app//db/x",
            "file:///etc/passwd",
            "sila://DB/x",
            "sila://db/x?mode=rw",
        ] {
            assert_eq!(
                LogicalName::parse(bad).err().map(|e| e.code()),
                Some(ErrorCode::InvalidName),
                "{bad}"
            );
        }
    }
}
