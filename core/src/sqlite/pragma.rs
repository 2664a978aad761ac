//! The PRAGMA part of the SQL policy: which PRAGMAs an app may read and set, and where a
//! setting would not take effect.
//!
//! Introspection PRAGMAs are allowed with any argument (the argument names a table or index,
//! or bounds a check). Settings are readable but only [`PragmaRule::ReadWrite`] ones may be
//! set; the rest belong to the engine (durability, locking, memory, file layout) or would stick
//! to one pooled connection and make answers depend on which connection served a request.
//! `database_list` is refused because it reveals host file paths.
//!
//! Setting an engine-owned PRAGMA to the value it already has is accepted: it changes nothing,
//! and migration tools and ORMs send `PRAGMA journal_mode=WAL` or `PRAGMA synchronous=NORMAL`
//! as a matter of course. [`CurrentSettings`] holds each connection's values, read once when
//! the policy is installed (nothing but the engine can change them afterwards).
//!
//! A PRAGMA is never accepted where it would be ignored: `foreign_keys=OFF` inside a request's
//! transaction does nothing in SQLite, so it is refused outside a migration step
//! ([`super::policy::Scope::Migration`]), whose steps the engine runs with foreign keys off.

use rusqlite::Connection;

use super::policy::Scope;
use crate::manifest::PolicyRelaxations;

/// What an app may do with a PRAGMA on the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PragmaRule {
    /// Introspection or a bounded check: allowed with or without an argument (the argument
    /// names a table or index, or bounds the check).
    Any,
    /// A setting the app may read but not set (except to the value it has); setting it is
    /// refused with this reason.
    ReadOnly(&'static str),
    /// A setting the app may read and set.
    ReadWrite,
}

const ENGINE_SETTING: &str = "the engine sets it for every connection (durability, locking, memory and \
     file layout are not the app's to change)";
const STICKY_SETTING: &str = "it would stick to one pooled connection, so results would depend on which \
     connection served the request";

/// The PRAGMA allowlist: `None` means the PRAGMA is refused in every form.
pub fn pragma_rule(name: &str) -> Option<PragmaRule> {
    use PragmaRule::{Any, ReadOnly, ReadWrite};
    let rule = match name.to_ascii_lowercase().as_str() {
        "table_info" | "table_xinfo" | "table_list" | "index_list" | "index_info" | "index_xinfo"
        | "foreign_key_list" | "foreign_key_check" | "integrity_check" | "quick_check" | "collation_list"
        | "function_list" | "module_list" | "pragma_list" | "compile_options" | "optimize" => Any,
        "user_version" | "application_id" | "foreign_keys" | "defer_foreign_keys" => ReadWrite,
        "schema_version" => {
            ReadOnly("writing it makes SQLite misread the schema and can corrupt the database")
        }
        "page_count" | "freelist_count" | "data_version" | "encoding" => {
            ReadOnly("it is a property of the database file")
        }
        "page_size" | "auto_vacuum" => ReadOnly("it changes the file layout; compaction is an API operation"),
        "max_page_count" => ReadOnly("it is the database's size quota, set from the manifest"),
        "cache_size" | "cache_spill" | "mmap_size" => ReadOnly(ENGINE_SETTING),
        "journal_mode"
        | "synchronous"
        | "locking_mode"
        | "journal_size_limit"
        | "wal_autocheckpoint"
        | "temp_store"
        | "busy_timeout"
        | "fullfsync"
        | "checkpoint_fullfsync" => ReadOnly(ENGINE_SETTING),
        "query_only" => ReadOnly("it is how the engine keeps read requests from writing"),
        "trusted_schema" => {
            ReadOnly("turning it on would let triggers and views call functions with side effects")
        }
        "writable_schema" => {
            ReadOnly("it would let SQL edit sqlite_schema directly and corrupt the database")
        }
        "cell_size_check"
        | "secure_delete"
        | "recursive_triggers"
        | "automatic_index"
        | "ignore_check_constraints"
        | "legacy_alter_table"
        | "reverse_unordered_selects"
        | "analysis_limit" => ReadOnly(STICKY_SETTING),
        _ => return None,
    };
    Some(rule)
}

/// Engine-owned settings an app may "set" to the value they have ([`CurrentSettings`]).
/// `schema_version` is not among them: writing it, even unchanged, rewrites the schema cookie.
pub const SETTINGS_SET_IF_UNCHANGED: [&str; 25] = [
    "page_size",
    "auto_vacuum",
    "max_page_count",
    "cache_size",
    "cache_spill",
    "mmap_size",
    "journal_mode",
    "synchronous",
    "locking_mode",
    "journal_size_limit",
    "wal_autocheckpoint",
    "temp_store",
    "busy_timeout",
    "fullfsync",
    "checkpoint_fullfsync",
    "query_only",
    "trusted_schema",
    "writable_schema",
    "cell_size_check",
    "secure_delete",
    "recursive_triggers",
    "automatic_index",
    "ignore_check_constraints",
    "legacy_alter_table",
    "reverse_unordered_selects",
];

/// The values of one connection's engine-owned settings ([`SETTINGS_SET_IF_UNCHANGED`]),
/// normalized with [`normalize`], as they were when the policy was installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentSettings {
    values: Vec<(&'static str, String)>,
}

impl CurrentSettings {
    /// Reads every setting of `conn` (one `PRAGMA name` each). A setting SQLite does not
    /// answer (none in this build) is left out, so setting it stays refused.
    pub fn read(conn: &Connection) -> CurrentSettings {
        let mut values = Vec::with_capacity(SETTINGS_SET_IF_UNCHANGED.len());
        for name in SETTINGS_SET_IF_UNCHANGED {
            let read = conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                Ok(match row.get_ref(0)? {
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).to_ascii_lowercase(),
                    _ => String::new(),
                })
            });
            if let Ok(value) = read {
                if let Some(normal) = normalize(name, &value) {
                    values.push((name, normal));
                }
            }
        }
        CurrentSettings { values }
    }

    /// Whether setting `name` to `value` would leave it as it is.
    pub fn unchanged(&self, name: &str, value: &str) -> bool {
        let Some(wanted) = normalize(name, value) else { return false };
        self.values.iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && *v == wanted)
    }
}

/// A PRAGMA value in the form SQLite reads it back: the keywords of enumerated settings as
/// their numbers, booleans as 0/1, integers without sign or leading zeros noise, words in
/// lower case. `None` for a value that is none of these (it never matches).
pub fn normalize(name: &str, value: &str) -> Option<String> {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase();
    let keyword: Option<i64> = match (name.to_ascii_lowercase().as_str(), v.as_str()) {
        ("synchronous", "off") => Some(0),
        ("synchronous", "normal") => Some(1),
        ("synchronous", "full") => Some(2),
        ("synchronous", "extra") => Some(3),
        ("temp_store", "default") => Some(0),
        ("temp_store", "file") => Some(1),
        ("temp_store", "memory") => Some(2),
        ("auto_vacuum", "none") => Some(0),
        ("auto_vacuum", "full") => Some(1),
        ("auto_vacuum", "incremental") => Some(2),
        ("secure_delete", "fast") => Some(2),
        (_, "on" | "yes" | "true") => Some(1),
        (_, "off" | "no" | "false") => Some(0),
        _ => None,
    };
    if let Some(n) = keyword {
        return Some(n.to_string());
    }
    if let Ok(n) = v.parse::<i64>() {
        return Some(n.to_string());
    }
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Some(v);
    }
    None
}

/// Why a PRAGMA outside the allowlist is refused (for the error message).
fn refusal_reason(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "database_list" => "it reveals host file paths",
        "wal_checkpoint" => "checkpoints are the engine's (on WAL size thresholds, or Database::checkpoint)",
        "shrink_memory" | "soft_heap_limit" | "hard_heap_limit" | "threads" => {
            "it changes process-wide memory or thread settings shared with other apps"
        }
        "temp_store_directory" | "data_store_directory" => "it points SQLite at a host directory",
        "incremental_vacuum" => "compaction is an API operation (Database::compact)",
        "case_sensitive_like" => STICKY_SETTING,
        _ => "it is not on the PRAGMA allowlist",
    }
}

/// `PRAGMA foreign_keys = <value>`. SQLite ignores it inside a transaction, and every request
/// runs in one (a group commit, a transaction of the API): turning foreign keys off there would
/// be accepted and do nothing, and the table-rebuild procedure would then cascade its deletes.
/// So outside a migration step only the value in force (ON) is accepted.
fn foreign_keys(value: &str, scope: Scope) -> std::result::Result<(), String> {
    if scope == Scope::Migration || normalize("foreign_keys", value).as_deref() == Some("1") {
        return Ok(());
    }
    Err("PRAGMA foreign_keys cannot be turned off here: every request runs inside a transaction, \
         where SQLite ignores it; schema changes that need foreign keys off (rebuilding a table) \
         belong in a migration, whose steps run with foreign keys off and are checked with \
         foreign_key_check before they commit"
        .to_string())
}

/// The decision for `PRAGMA name` (`value` is `None`) or `PRAGMA name = value`.
pub fn decide(
    name: &str,
    value: Option<&str>,
    relax: &PolicyRelaxations,
    current: &CurrentSettings,
    scope: Scope,
) -> std::result::Result<(), String> {
    let shown = super::policy::identifier(name);
    if name.eq_ignore_ascii_case("foreign_keys") {
        if let Some(v) = value {
            return foreign_keys(v, scope);
        }
    }
    match pragma_rule(name) {
        Some(PragmaRule::Any | PragmaRule::ReadWrite) => Ok(()),
        Some(PragmaRule::ReadOnly(_)) if value.is_none() => Ok(()),
        Some(PragmaRule::ReadOnly(_))
            if relax.recursive_triggers && name.eq_ignore_ascii_case("recursive_triggers") =>
        {
            Ok(())
        }
        Some(PragmaRule::ReadOnly(_)) if value.is_some_and(|v| current.unchanged(name, v)) => Ok(()),
        Some(PragmaRule::ReadOnly(why)) => Err(format!(
            "PRAGMA {shown} may be read but not set by apps (setting it to the value it has is accepted): {why}"
        )),
        None => Err(format!("PRAGMA {shown} is refused: {}", refusal_reason(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_normalize_as_sqlite_reads_them_back() {
        assert_eq!(normalize("synchronous", "NORMAL").as_deref(), Some("1"));
        assert_eq!(normalize("synchronous", "'full'").as_deref(), Some("2"));
        assert_eq!(normalize("temp_store", "FILE").as_deref(), Some("1"));
        assert_eq!(normalize("query_only", "yes").as_deref(), Some("1"));
        assert_eq!(normalize("trusted_schema", "Off").as_deref(), Some("0"));
        assert_eq!(normalize("cache_size", "-2000").as_deref(), Some("-2000"));
        assert_eq!(normalize("cache_size", "+0010").as_deref(), Some("10"));
        assert_eq!(normalize("journal_mode", "WAL").as_deref(), Some("wal"));
        assert_eq!(normalize("journal_mode", "w a l"), None);
        assert_eq!(normalize("journal_mode", ""), None);
    }

    #[test]
    fn setting_an_engine_pragma_to_its_value_is_accepted_and_only_then() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA temp_store=FILE; PRAGMA cache_size=-2000")
            .unwrap();
        let current = CurrentSettings::read(&conn);
        let relax = PolicyRelaxations::default();
        let ok = |name: &str, value: &str| decide(name, Some(value), &relax, &current, Scope::Request);
        assert_eq!(ok("synchronous", "NORMAL"), Ok(()));
        assert_eq!(ok("synchronous", "1"), Ok(()));
        assert_eq!(ok("temp_store", "file"), Ok(()));
        assert_eq!(ok("cache_size", "-2000"), Ok(()));
        let refused = ok("synchronous", "OFF").unwrap_err();
        assert!(refused.contains("may be read but not set"), "{refused}");
        assert!(ok("cache_size", "-2001").is_err());
        assert!(ok("temp_store", "MEMORY").is_err());
        // schema_version is never written, even unchanged.
        assert!(ok("schema_version", "0").is_err());
    }

    #[test]
    fn foreign_keys_off_only_in_a_migration_step() {
        let current = CurrentSettings::default();
        let relax = PolicyRelaxations::default();
        for scope in [Scope::Read, Scope::Request, Scope::Transaction] {
            assert!(decide("foreign_keys", Some("OFF"), &relax, &current, scope).is_err());
            assert!(decide("foreign_keys", Some("0"), &relax, &current, scope).is_err());
            assert_eq!(decide("foreign_keys", Some("on"), &relax, &current, scope), Ok(()));
        }
        assert_eq!(decide("foreign_keys", Some("OFF"), &relax, &current, Scope::Migration), Ok(()));
    }
}
