//! What app SQL may do: the authorizer policy, SQLite's run-time limits, and the
//! connection-level hardening that no SQL can undo.
//!
//! Who calls it: [`super::open`] applies [`harden`] to every connection it opens; the broker
//! installs [`install_authorizer`] on every connection it hands to app SQL. The broker's own
//! statements (BEGIN, SAVEPOINT, COMMIT, checkpoints) pass because the broker tells the
//! authorizer, through the `internal` callback, that it is the one preparing them.
//!
//! # The authorizer
//!
//! SQLite asks the authorizer about every action while it *prepares* a statement, so a refused
//! statement never runs and nothing is half-applied. [`authorize`] is the whole decision, a pure
//! function of the action; [`install_authorizer`] wraps it. When it refuses, the reason is
//! kept in a thread-local slot ([`take_denial`]) because SQLite itself only reports "not
//! authorized"; [`super::map_error`] takes it and builds an [`ErrorCode::PolicyDenied`] error
//! whose message names what was refused and why. The slot is written and read on the thread
//! that prepares the statement, so requests on other threads never see each other's reasons.
//!
//! | action | decision |
//! |---|---|
//! | SELECT, INSERT, UPDATE, DELETE, reads, recursive CTEs | allowed |
//! | CREATE/DROP/ALTER of tables, indexes, views, triggers; ANALYZE; REINDEX | allowed |
//! | CREATE TEMP table/index/view/trigger | allowed in exec, scripts, transactions and migration steps, where they live until the request or transaction ends (the broker then drops them, see [`take_temp_created`]); denied in a query. With the `tempObjects` relaxation: allowed everywhere, and they live on their connection |
//! | CREATE VIRTUAL TABLE | only modules in [`VTABLE_MODULES_ALLOWED`] |
//! | BEGIN, COMMIT, ROLLBACK | denied: transactions go through the API (a COMMIT inside a group commit would break the other requests' atomicity) |
//! | SAVEPOINT, RELEASE, ROLLBACK TO | allowed in exec, scripts, transactions and migration steps (they nest inside the request's or transaction's own savepoint or transaction, whose end releases whatever the app left open); denied in a query and for names starting with [`RESERVED_TABLE_PREFIX`] |
//! | ATTACH, DETACH | denied in SQL that reaches SQLite; `ATTACH 'sila://db/<name>' AS s` and `DETACH s` are answered by the broker (see below) |
//! | VACUUM, VACUUM INTO | denied: SQLite runs them through an internal ATTACH, which is refused; compaction (`Database::compact`) and export are API operations |
//! | PRAGMA | by the allowlist in [`pragma_rule`] |
//! | functions | all built-ins except [`FUNCTIONS_DENIED`]; in a query also [`FUNCTIONS_OF_THE_WRITER`] (on a reader they would always answer 0) |
//! | writing, creating, altering or dropping an engine table (`_sila_meta`, any name starting with [`RESERVED_TABLE_PREFIX`]), or indexing it or putting a trigger on it | denied; reading it is allowed |
//! | anything else (an action code this table does not know) | denied |
//!
//! `ATTACH 'sila://db/<name>' AS <schema>` of a database the app's manifest lists, and
//! `DETACH <schema>`, never reach SQLite as written: the API recognizes them
//! ([`crate::attach`]) and the broker attaches the named database's current file itself, on
//! every connection of the handle, read-only (`SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` is off: a
//! write there would bypass that database's writer queue, quota, snapshots and flips). Every
//! ATTACH the authorizer sees comes from app SQL and is refused; `SQLITE_LIMIT_ATTACHED` is
//! [`ATTACHED_MAX`] as a second wall.
//!
//! # PRAGMAs
//!
//! By the allowlist in [`super::pragma`]: introspection allowed, engine settings readable and
//! settable only to the value they have, `foreign_keys=OFF` only in a migration step.
//!
//! # Scopes
//!
//! Where a statement runs ([`Scope`]: a query on a reader, a request of a group commit, an
//! interactive transaction, a migration step) is set by the broker on the preparing thread
//! ([`in_scope`]); the rules above differ by scope only where SQLite's behaviour differs.
//!
//! # Run-time limits ([`LIMITS`])
//!
//! | limit | SQLite default | ours | why |
//! |---|---|---|---|
//! | `SQLITE_LIMIT_LENGTH` | 1 000 000 000 | 16 MiB | largest string, blob or row; bounds `zeroblob`/`randomblob`/`printf` bombs (results are capped at twice this, so anything stored reads back) |
//! | `SQLITE_LIMIT_SQL_LENGTH` | 1 000 000 000 | 1 000 000 bytes | bind data as parameters; bounds huge literal `IN` lists |
//! | `SQLITE_LIMIT_COLUMN` | 2000 | 500 | columns in a table, index, result, ORDER BY or GROUP BY |
//! | `SQLITE_LIMIT_EXPR_DEPTH` | 1000 | 256 | recursion in the parser and code generator; worker threads have 2 MiB stacks |
//! | `SQLITE_LIMIT_COMPOUND_SELECT` | 500 | 100 | terms of a UNION/EXCEPT/INTERSECT chain (multi-row VALUES is not limited by it) |
//! | `SQLITE_LIMIT_VDBE_OP` | 250 000 000 | 1 000 000 | opcodes of one prepared statement (about 24 MiB); bounds view-expansion bombs |
//! | `SQLITE_LIMIT_FUNCTION_ARG` | 1000 | 256 | arguments of one function call (`json_object` with 128 pairs fits) |
//! | `SQLITE_LIMIT_ATTACHED` | 10 | 4 | only the broker attaches, at most [`crate::attach::ATTACHMENTS_MAX`] of the app's own databases (see above) |
//! | `SQLITE_LIMIT_LIKE_PATTERN_LENGTH` | 50 000 | 1000 | bytes of a LIKE/GLOB pattern; matching cost grows with it |
//! | `SQLITE_LIMIT_VARIABLE_NUMBER` | 32 766 | 4096 | parameters of one statement (`?4096` is the highest) |
//! | `SQLITE_LIMIT_TRIGGER_DEPTH` | 1000 | 32 | nested trigger firing |
//! | `SQLITE_LIMIT_WORKER_THREADS` | 0 | 0 | no helper threads: a statement runs on the thread the broker gave it |
//!
//! Temporary storage: `temp_store=FILE` (set in [`super::open`]); explicit temporary objects
//! are refused above, so what remains is SQLite's own transient tables (sorting, DISTINCT,
//! materialized subqueries). They spill to files in the workspace's `tmp/`, which the engine's
//! SQLite VFS caps per file and per workspace ([`super::vfs::TempLimits`]).

use std::cell::RefCell;

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{ffi, Connection};

use super::errors::map_error;
pub use super::pragma::{pragma_rule, CurrentSettings, PragmaRule};
use crate::manifest::PolicyRelaxations;
use crate::{Error, ErrorCode, Result};

/// `SQLITE_LIMIT_LENGTH`: the largest string, blob or row, in bytes (16 MiB).
pub const LENGTH_BYTES_MAX: i32 = 16 * 1024 * 1024;
/// `SQLITE_LIMIT_SQL_LENGTH`: the longest SQL text, in bytes.
pub const SQL_LENGTH_BYTES_MAX: i32 = 1_000_000;
/// `SQLITE_LIMIT_COLUMN`: columns of a table, index, result set, ORDER BY or GROUP BY.
pub const COLUMNS_MAX: i32 = 500;
/// `SQLITE_LIMIT_EXPR_DEPTH`: depth of an expression tree.
pub const EXPR_DEPTH_MAX: i32 = 256;
/// `SQLITE_LIMIT_COMPOUND_SELECT`: terms of a compound SELECT.
pub const COMPOUND_SELECT_TERMS_MAX: i32 = 100;
/// `SQLITE_LIMIT_VDBE_OP`: opcodes of one prepared statement.
pub const VDBE_OPS_MAX: i32 = 1_000_000;
/// `SQLITE_LIMIT_FUNCTION_ARG`: arguments of one function call.
pub const FUNCTION_ARGS_MAX: i32 = 256;
/// `SQLITE_LIMIT_ATTACHED`: attached databases, only ever attached by the broker for
/// [`crate::attach`].
pub const ATTACHED_MAX: i32 = crate::attach::ATTACHMENTS_MAX as i32;
/// `SQLITE_LIMIT_LIKE_PATTERN_LENGTH`: bytes of a LIKE or GLOB pattern.
pub const LIKE_PATTERN_BYTES_MAX: i32 = 1000;
/// `SQLITE_LIMIT_VARIABLE_NUMBER`: the highest parameter number.
pub const VARIABLES_MAX: i32 = 4096;
/// `SQLITE_LIMIT_TRIGGER_DEPTH`: nesting of trigger firings.
pub const TRIGGER_DEPTH_MAX: i32 = 32;
/// `SQLITE_LIMIT_WORKER_THREADS`: helper threads one statement may start.
pub const WORKER_THREADS_MAX: i32 = 0;
/// `PRAGMA journal_size_limit`: a WAL is truncated to at most this many bytes when it resets.
pub const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Every run-time limit [`harden`] sets, with its value (the table in the module doc).
pub const LIMITS: [(Limit, i32); 12] = [
    (Limit::SQLITE_LIMIT_LENGTH, LENGTH_BYTES_MAX),
    (Limit::SQLITE_LIMIT_SQL_LENGTH, SQL_LENGTH_BYTES_MAX),
    (Limit::SQLITE_LIMIT_COLUMN, COLUMNS_MAX),
    (Limit::SQLITE_LIMIT_EXPR_DEPTH, EXPR_DEPTH_MAX),
    (Limit::SQLITE_LIMIT_COMPOUND_SELECT, COMPOUND_SELECT_TERMS_MAX),
    (Limit::SQLITE_LIMIT_VDBE_OP, VDBE_OPS_MAX),
    (Limit::SQLITE_LIMIT_FUNCTION_ARG, FUNCTION_ARGS_MAX),
    (Limit::SQLITE_LIMIT_ATTACHED, ATTACHED_MAX),
    (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, LIKE_PATTERN_BYTES_MAX),
    (Limit::SQLITE_LIMIT_VARIABLE_NUMBER, VARIABLES_MAX),
    (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, TRIGGER_DEPTH_MAX),
    (Limit::SQLITE_LIMIT_WORKER_THREADS, WORKER_THREADS_MAX),
];

/// Virtual table modules an app may instantiate with CREATE VIRTUAL TABLE.
pub const VTABLE_MODULES_ALLOWED: [&str; 6] = ["fts3", "fts4", "fts5", "fts5vocab", "rtree", "rtree_i32"];

/// Functions app SQL may not call, with the reason. `readfile`, `writefile`, `edit` and
/// `fsdir` belong to SQLite's shell and are not compiled in; they are listed so that linking
/// them in later cannot open the host's files to apps.
pub const FUNCTIONS_DENIED: [(&str, &str); 7] = [
    ("load_extension", "it loads native code into the host process"),
    ("fts3_tokenizer", "its two-argument form registers a tokenizer from a raw pointer"),
    ("fts5", "it hands out a raw pointer to the FTS5 C API"),
    ("readfile", "it reads host files"),
    ("writefile", "it writes host files"),
    ("edit", "it runs a host editor"),
    ("fsdir", "it lists host directories"),
];

/// Prefix of the tables (and other schema objects) the engine owns, like `_sila_meta` (the
/// migrations' record). Compared without regard to ASCII case, as SQLite compares names.
pub const RESERVED_TABLE_PREFIX: &str = "_sila_";

/// Whether `name` is reserved for the engine ([`RESERVED_TABLE_PREFIX`]).
pub fn is_reserved_name(name: &str) -> bool {
    name.get(..RESERVED_TABLE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_TABLE_PREFIX))
}

/// The engine-owned object an action would write or change, if any (reading one is allowed).
fn engine_table_written<'a>(action: &AuthAction<'a>) -> Option<&'a str> {
    let named = match *action {
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::CreateTable { table_name }
        | AuthAction::CreateTempTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTempIndex { table_name, .. }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::DropTempIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::CreateTempTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
        | AuthAction::DropTempTrigger { table_name, .. } => table_name,
        AuthAction::CreateView { view_name }
        | AuthAction::CreateTempView { view_name }
        | AuthAction::DropView { view_name }
        | AuthAction::DropTempView { view_name } => view_name,
        AuthAction::CreateVtable { table_name, .. } | AuthAction::DropVtable { table_name, .. } => table_name,
        _ => return None,
    };
    is_reserved_name(named).then_some(named)
}

/// Where the statement being prepared runs. The broker sets it ([`in_scope`]) around app SQL;
/// what is allowed differs only where SQLite's behaviour differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// A query on a reader connection: autocommit, never writes. The default, so SQL prepared
    /// outside any scope gets the strictest rules.
    #[default]
    Read,
    /// A request of a group commit (`exec`, a script): its own savepoint inside the group's
    /// transaction.
    Request,
    /// A statement of an interactive transaction (the transaction API).
    Transaction,
    /// A step of a migration: foreign keys are off for the step (see [`super::pragma`]).
    Migration,
}

thread_local! {
    static SCOPE: std::cell::Cell<Scope> = const { std::cell::Cell::new(Scope::Read) };
    /// Set when the policy allowed a temporary object outside the `tempObjects` relaxation:
    /// the broker drops temporary objects when the request or transaction ends.
    static TEMP_CREATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, which prepares app SQL on this thread, in `scope`; the previous scope is back
/// afterwards, also when `f` panics.
pub fn in_scope<T>(scope: Scope, f: impl FnOnce() -> T) -> T {
    struct Restore(Scope);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPE.with(|s| s.replace(scope)));
    f()
}

/// The scope of the statement being prepared on this thread.
pub fn current_scope() -> Scope {
    SCOPE.with(|s| s.get())
}

/// Whether the policy allowed a temporary object on this thread since the last call (the
/// flag is cleared). The broker then drops the temporary objects at the end of the request or
/// transaction.
pub fn take_temp_created() -> bool {
    TEMP_CREATED.with(|t| t.replace(false))
}

/// Runs `f`, which prepares a migration step's SQL on this thread, in [`Scope::Migration`].
pub fn as_migration_step<T>(f: impl FnOnce() -> T) -> T {
    in_scope(Scope::Migration, f)
}

/// The policy of one connection: the app's relaxations and the connection's settings (for
/// "set a PRAGMA to the value it has").
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// What the app's manifest relaxes.
    pub relax: PolicyRelaxations,
    /// The connection's engine-owned settings.
    pub current: CurrentSettings,
}

/// Functions whose answer is the state of the connection that runs them: on a reader, which
/// never writes, they would always answer 0.
pub const FUNCTIONS_OF_THE_WRITER: [&str; 3] = ["last_insert_rowid", "changes", "total_changes"];

/// The decision for one action of app SQL in `scope`: `Ok` to allow, `Err(reason)` to refuse.
/// The reason is a full sentence naming what was refused and why; it never quotes literals
/// from the SQL.
pub fn authorize(action: &AuthAction<'_>, policy: &Policy, scope: Scope) -> std::result::Result<(), String> {
    let relax = &policy.relax;
    if let Some(table) = engine_table_written(action) {
        return Err(format!(
            "{} belongs to the engine (names starting with {RESERVED_TABLE_PREFIX} are reserved): apps may \
             read it but not write, create, alter or drop it, or put an index or trigger on it",
            identifier(table)
        ));
    }
    match *action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Insert { .. }
        | AuthAction::Update { .. }
        | AuthAction::Delete { .. }
        | AuthAction::Recursive
        | AuthAction::CreateTable { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::DropTable { .. }
        | AuthAction::DropIndex { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropTrigger { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropVtable { .. }
        | AuthAction::AlterTable { .. }
        | AuthAction::Analyze { .. }
        | AuthAction::Reindex { .. } => Ok(()),
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTempTrigger { .. } => temp_object(relax, scope),
        AuthAction::CreateVtable { module_name, .. } => {
            if VTABLE_MODULES_ALLOWED.iter().any(|m| m.eq_ignore_ascii_case(module_name)) {
                Ok(())
            } else {
                Err(format!(
                    "CREATE VIRTUAL TABLE … USING {} is refused: only these modules are allowed: {}",
                    identifier(module_name),
                    VTABLE_MODULES_ALLOWED.join(", ")
                ))
            }
        }
        AuthAction::Transaction { .. } => Err(TRANSACTION_CONTROL_REFUSED.to_string()),
        AuthAction::Savepoint { savepoint_name, .. } => savepoint(savepoint_name, scope),
        AuthAction::Attach { filename } => Err(attach_refusal(filename.is_empty())),
        AuthAction::Detach { .. } => Err("DETACH is refused: ATTACH is not offered to apps, so there is \
                                          nothing to detach"
            .to_string()),
        AuthAction::Pragma { pragma_name, pragma_value } => {
            super::pragma::decide(pragma_name, pragma_value, relax, &policy.current, scope)
        }
        AuthAction::Function { function_name } => function(function_name, scope),
        AuthAction::Unknown { code, .. } => Err(unknown_action(code)),
        // `AuthAction` is non-exhaustive: an action added by a newer rusqlite is refused until
        // this policy decides about it.
        _ => Err("the statement uses an action the security policy does not know; it is refused".to_string()),
    }
}

/// Why BEGIN, COMMIT and ROLLBACK are refused in app SQL.
pub const TRANSACTION_CONTROL_REFUSED: &str = "BEGIN, COMMIT and ROLLBACK are not allowed in SQL: use the \
     transaction API (inside it, and in exec and scripts, SAVEPOINT, RELEASE and ROLLBACK TO nest as in SQLite)";

fn savepoint(name: &str, scope: Scope) -> std::result::Result<(), String> {
    if is_reserved_name(name) {
        return Err(format!(
            "savepoint {} is refused: names starting with {RESERVED_TABLE_PREFIX} are the engine's",
            identifier(name)
        ));
    }
    match scope {
        Scope::Read => Err("SAVEPOINT, RELEASE and ROLLBACK TO are refused in a query, which runs in \
                            autocommit on a reader: use them in exec, a script or a transaction"
            .to_string()),
        Scope::Request | Scope::Transaction | Scope::Migration => Ok(()),
    }
}

fn temp_object(relax: &PolicyRelaxations, scope: Scope) -> std::result::Result<(), String> {
    if relax.temp_objects {
        return Ok(());
    }
    match scope {
        Scope::Request | Scope::Transaction | Scope::Migration => {
            TEMP_CREATED.with(|t| t.set(true));
            Ok(())
        }
        Scope::Read => Err("CREATE TEMP (table, index, view or trigger) is refused in a query: temporary \
                            objects live for the request or transaction that creates them (exec, a script, \
                            the transaction API) and are dropped when it ends"
            .to_string()),
    }
}

fn attach_refusal(empty_name: bool) -> String {
    if empty_name {
        // VACUUM attaches its scratch database under the empty name.
        "VACUUM is refused: compaction is an API operation (Database::compact, sila_database_compact, \
         `sila-sqlite compact APP DB`), which rewrites the file without stopping readers"
            .to_string()
    } else {
        "ATTACH (and VACUUM INTO, which attaches its output file) is refused: apps open each database \
         through the API by its logical name sila://db/<name>, and export is an API operation"
            .to_string()
    }
}

fn function(name: &str, scope: Scope) -> std::result::Result<(), String> {
    if let Some((f, why)) = FUNCTIONS_DENIED.iter().find(|(f, _)| f.eq_ignore_ascii_case(name)) {
        return Err(format!("the SQL function {f}() is refused: {why}"));
    }
    if scope == Scope::Read {
        if let Some(f) = FUNCTIONS_OF_THE_WRITER.iter().find(|f| f.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "{f}() is refused in a query: a query runs on a reader connection, which never writes, \
                 so it would always answer 0; read it with exec or inside the transaction that wrote \
                 (or use exec's changes and last_insert_rowid, or RETURNING)"
            ));
        }
    }
    Ok(())
}

fn unknown_action(code: i32) -> String {
    let what = match code {
        ffi::SQLITE_ATTACH => return attach_refusal(false),
        ffi::SQLITE_DETACH => "DETACH",
        ffi::SQLITE_PRAGMA => "a PRAGMA",
        ffi::SQLITE_FUNCTION => "a function call",
        _ => "",
    };
    if what.is_empty() {
        format!("authorizer action {code} is unknown to the security policy; the statement is refused")
    } else {
        format!("{what} in a form the security policy does not recognise is refused")
    }
}

/// An identifier from the SQL, shown safely: printable ASCII only, at most 64 characters.
pub(crate) fn identifier(name: &str) -> String {
    let clean: String = name.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    if clean.is_empty() {
        "(unprintable name)".to_string()
    } else {
        clean
    }
}

thread_local! {
    /// The reason of the last refusal on this thread, until [`take_denial`] takes it.
    static DENIAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn note_denial(reason: String) {
    DENIAL.with(|d| *d.borrow_mut() = Some(reason));
}

/// Takes the reason of the last refusal made on this thread, if any. [`super::map_error`] calls
/// it when SQLite reports an authorization failure.
pub fn take_denial() -> Option<String> {
    DENIAL.with(|d| d.borrow_mut().take())
}

/// Explains a refusal SQLite makes itself because of the policy's settings, from SQLite's
/// message: VACUUM inside a transaction (every app statement runs in one, so VACUUM can never
/// run there), and a function or virtual table with side effects used by a trigger or view
/// (`trusted_schema=OFF`). `None` for any other message.
pub fn explain_refusal(sqlite_message: &str) -> Option<String> {
    if sqlite_message.contains("cannot VACUUM") {
        return Some(attach_refusal(true));
    }
    let rest = sqlite_message.split("unsafe use of ").nth(1)?;
    let what: String =
        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || "_ ()\"".contains(*c)).collect();
    Some(format!(
        "{} is refused inside a trigger, view or schema expression: it may have side effects and the \
         schema is untrusted (trusted_schema=OFF)",
        what.trim().replace('"', "").chars().take(64).collect::<String>()
    ))
}

/// Installs the policy as `conn`'s authorizer. While `internal()` returns true (the broker is
/// preparing one of its own statements on this thread) everything is allowed.
pub fn install_authorizer(
    conn: &mut Connection,
    relax: PolicyRelaxations,
    internal: fn() -> bool,
) -> Result<()> {
    // Read before the authorizer exists: these PRAGMAs are the engine's own statements.
    let policy = Policy { relax, current: CurrentSettings::read(conn) };
    // rusqlite runs the callback inside a panic boundary (a panic becomes SQLITE_ERROR).
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if internal() {
            return Authorization::Allow;
        }
        match authorize(&ctx.action, &policy, current_scope()) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                note_denial(reason);
                Authorization::Deny
            }
        }
    }))
    .map_err(|e| map_error(e, None))
}

/// Applies the hardening no SQL can undo: the run-time [`LIMITS`], defensive mode, no
/// extension loading, no FTS3 pointer tokenizers, no ATTACH that creates or writes files,
/// untrusted schema, `mmap_size=0` and `journal_size_limit`. Called by [`super::open`] on every
/// connection before any other SQL runs on it.
pub fn harden(conn: &Connection) -> Result<()> {
    let sql_err = |e| map_error(e, None);
    for (limit, value) in LIMITS {
        conn.set_limit(limit, value).map_err(sql_err)?;
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true).map_err(sql_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false).map_err(sql_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false).map_err(sql_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false).map_err(sql_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false).map_err(sql_err)?;
    disable_load_extension(conn)?;
    // (An in-memory database answers neither PRAGMA with a row, so the values are not read back
    // here; `super::open`'s tests check them on files.)
    conn.pragma_update(None, "mmap_size", 0).map_err(sql_err)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES).map_err(sql_err)?;
    Ok(())
}

/// Turns off both the C API and the SQL function for loading extensions (rusqlite exposes this
/// switch only with its `load_extension` feature, which this crate does not enable).
fn disable_load_extension(conn: &Connection) -> Result<()> {
    let mut now_enabled: std::os::raw::c_int = 1;
    // SAFETY: `conn.handle()` is the live sqlite3* owned by `conn` for the whole call.
    // SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION takes exactly (int onoff, int *pResult); the out
    // pointer is a local on this stack frame.
    #[allow(unsafe_code)]
    let rc = unsafe {
        ffi::sqlite3_db_config(
            conn.handle(),
            ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
            0 as std::os::raw::c_int,
            &mut now_enabled as *mut std::os::raw::c_int,
        )
    };
    if rc != ffi::SQLITE_OK || now_enabled != 0 {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("could not turn off extension loading (rc {rc}, enabled {now_enabled})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Policy {
        Policy::default()
    }

    fn relaxed(relax: PolicyRelaxations) -> Policy {
        Policy { relax, ..Default::default() }
    }

    /// The decision in a request of a group commit (exec), the usual scope.
    fn authorize_exec(action: &AuthAction<'_>, policy: &Policy) -> std::result::Result<(), String> {
        authorize(action, policy, Scope::Request)
    }

    fn pragma_action<'a>(name: &'a str, value: Option<&'a str>) -> AuthAction<'a> {
        AuthAction::Pragma { pragma_name: name, pragma_value: value }
    }

    #[test]
    fn pragma_allowlist() {
        let allowed = [
            ("table_info", Some("t")),
            ("TABLE_INFO", Some("t")),
            ("index_list", Some("t")),
            ("integrity_check", None),
            ("integrity_check", Some("10")),
            ("quick_check", None),
            ("foreign_key_check", None),
            ("user_version", Some("7")),
            ("user_version", None),
            ("application_id", Some("1")),
            ("foreign_keys", Some("ON")),
            ("foreign_keys", None),
            ("defer_foreign_keys", Some("ON")),
            ("journal_mode", None),
            ("schema_version", None),
            ("page_count", None),
            ("optimize", None),
            ("compile_options", None),
        ];
        for (name, value) in allowed {
            assert_eq!(authorize_exec(&pragma_action(name, value), &strict()), Ok(()), "{name} {value:?}");
        }
        assert!(authorize(&pragma_action("foreign_keys", Some("OFF")), &strict(), Scope::Migration).is_ok());
        let refused = [
            ("foreign_keys", Some("OFF"), "migration"),
            ("foreign_keys", Some("0"), "migration"),
            ("journal_mode", Some("DELETE"), "may be read but not set"),
            ("Journal_Mode", Some("off"), "may be read but not set"),
            ("synchronous", Some("OFF"), "engine sets it"),
            ("writable_schema", Some("1"), "edit sqlite_schema"),
            ("schema_version", Some("1"), "misread the schema"),
            ("max_page_count", Some("1000000"), "size quota"),
            ("cache_size", Some("-1000000"), "engine sets it"),
            ("query_only", Some("0"), "keeps read requests from writing"),
            ("trusted_schema", Some("1"), "side effects"),
            ("temp_store_directory", None, "host directory"),
            ("database_list", None, "host file paths"),
            ("wal_checkpoint", Some("TRUNCATE"), "checkpoints are the engine's"),
            ("wal_checkpoint", None, "checkpoints are the engine's"),
            ("hard_heap_limit", Some("1"), "process-wide"),
            ("no_such_pragma", None, "allowlist"),
            ("case_sensitive_like", Some("1"), "pooled connection"),
        ];
        for (name, value, why) in refused {
            let reason = authorize_exec(&pragma_action(name, value), &strict()).unwrap_err();
            assert!(reason.contains(why), "{name}: {reason}");
            assert!(reason.to_ascii_lowercase().contains(&name.to_ascii_lowercase()), "{reason}");
        }
        // Nothing in a value ever reaches the message.
        let reason =
            authorize_exec(&pragma_action("journal_mode", Some("secret-value")), &strict()).unwrap_err();
        assert!(!reason.contains("secret"), "{reason}");
    }

    #[test]
    fn functions_modules_and_control() {
        for f in ["load_extension", "LOAD_EXTENSION", "fts3_tokenizer", "readfile", "writefile"] {
            let reason = authorize_exec(&AuthAction::Function { function_name: f }, &strict()).unwrap_err();
            assert!(reason.contains("is refused"), "{reason}");
        }
        for f in ["abs", "json_extract", "randomblob", "sqlite_version"] {
            assert_eq!(authorize_exec(&AuthAction::Function { function_name: f }, &strict()), Ok(()));
        }
        let fts = AuthAction::CreateVtable { table_name: "docs", module_name: "fts5" };
        assert_eq!(authorize_exec(&fts, &strict()), Ok(()));
        let other = AuthAction::CreateVtable { table_name: "x", module_name: "fts3tokenize" };
        assert!(authorize_exec(&other, &strict()).unwrap_err().contains("only these modules"));
        let attach = AuthAction::Attach { filename: "/etc/passwd" };
        let reason = authorize_exec(&attach, &strict()).unwrap_err();
        assert!(reason.contains("ATTACH") && !reason.contains("passwd"), "{reason}");
        assert!(authorize_exec(&AuthAction::Attach { filename: "" }, &strict())
            .unwrap_err()
            .contains("VACUUM"));
        let unknown = AuthAction::Unknown { code: ffi::SQLITE_ATTACH, arg1: None, arg2: None };
        assert!(authorize_exec(&unknown, &strict()).unwrap_err().contains("ATTACH"));
        let unknown = AuthAction::Unknown { code: 99, arg1: None, arg2: None };
        assert!(authorize_exec(&unknown, &strict()).unwrap_err().contains("99"));
    }

    #[test]
    fn engine_tables_are_read_only_for_apps() {
        assert!(
            is_reserved_name("_sila_meta") && is_reserved_name("_SILA_Meta") && is_reserved_name("_sila_")
        );
        assert!(
            !is_reserved_name("_sila") && !is_reserved_name("sila_meta") && !is_reserved_name("x_sila_meta")
        );
        assert_eq!(
            authorize_exec(&AuthAction::Read { table_name: "_sila_meta", column_name: "version" }, &strict()),
            Ok(())
        );
        for action in [
            AuthAction::Insert { table_name: "_sila_meta" },
            AuthAction::Delete { table_name: "_Sila_Meta" },
            AuthAction::DropTable { table_name: "_sila_meta" },
            AuthAction::CreateTable { table_name: "_sila_new" },
        ] {
            assert!(
                authorize_exec(&action, &strict()).is_err_and(|r| r.contains("belongs to the engine")),
                "{action:?}"
            );
        }
        assert_eq!(authorize_exec(&AuthAction::Insert { table_name: "notes" }, &strict()), Ok(()));
    }

    #[test]
    fn relaxations_open_only_their_subset() {
        let temp = AuthAction::CreateTempTable { table_name: "t" };
        assert!(authorize(&temp, &strict(), Scope::Read).is_err());
        let temps = relaxed(PolicyRelaxations { temp_objects: true, ..Default::default() });
        assert_eq!(authorize(&temp, &temps, Scope::Read), Ok(()));
        let rt = pragma_action("recursive_triggers", Some("ON"));
        assert!(authorize_exec(&rt, &temps).is_err());
        let triggers = relaxed(PolicyRelaxations { recursive_triggers: true, ..Default::default() });
        assert_eq!(authorize_exec(&rt, &triggers), Ok(()));
        // A relaxation never opens anything outside its subset.
        assert!(authorize_exec(&pragma_action("journal_mode", Some("off")), &triggers).is_err());
    }

    #[test]
    fn scopes_decide_savepoints_temp_objects_and_writer_functions() {
        let sp = |name| AuthAction::Savepoint {
            operation: rusqlite::hooks::TransactionOperation::Begin,
            savepoint_name: name,
        };
        for scope in [Scope::Request, Scope::Transaction, Scope::Migration] {
            assert_eq!(authorize(&sp("orm_1"), &strict(), scope), Ok(()));
            let reserved = authorize(&sp("_SILA_request"), &strict(), scope).unwrap_err();
            assert!(reserved.contains("are the engine's"), "{reserved}");
            let _ = take_temp_created();
            assert_eq!(authorize(&AuthAction::CreateTempTable { table_name: "t" }, &strict(), scope), Ok(()));
            assert!(take_temp_created(), "the broker is told to drop it");
            assert!(!take_temp_created());
            let f = AuthAction::Function { function_name: "last_insert_rowid" };
            assert_eq!(authorize(&f, &strict(), scope), Ok(()));
        }
        let in_query = authorize(&sp("orm_1"), &strict(), Scope::Read).unwrap_err();
        assert!(in_query.contains("refused in a query"), "{in_query}");
        assert!(authorize(&AuthAction::CreateTempTable { table_name: "t" }, &strict(), Scope::Read).is_err());
        assert!(!take_temp_created());
        for f in FUNCTIONS_OF_THE_WRITER {
            let why =
                authorize(&AuthAction::Function { function_name: f }, &strict(), Scope::Read).unwrap_err();
            assert!(why.contains("always answer 0"), "{why}");
        }
        let begin = AuthAction::Transaction { operation: rusqlite::hooks::TransactionOperation::Begin };
        for scope in [Scope::Read, Scope::Request, Scope::Transaction, Scope::Migration] {
            assert_eq!(authorize(&begin, &strict(), scope), Err(TRANSACTION_CONTROL_REFUSED.to_string()));
        }
        assert_eq!(current_scope(), Scope::Read);
        let inner = in_scope(Scope::Transaction, || in_scope(Scope::Request, current_scope));
        assert_eq!(inner, Scope::Request);
        assert_eq!(current_scope(), Scope::Read, "restored");
    }

    #[test]
    fn installed_authorizer_refuses_with_a_reason_and_lets_internal_through() {
        fn never() -> bool {
            false
        }
        let mut conn = Connection::open_in_memory().unwrap();
        harden(&conn).unwrap();
        install_authorizer(&mut conn, PolicyRelaxations::default(), never).unwrap();
        let _ = take_denial();
        let err = map_error(conn.execute_batch("PRAGMA journal_mode=DELETE").unwrap_err(), None);
        assert_eq!(err.code(), ErrorCode::PolicyDenied, "{err}");
        assert!(err.message().contains("PRAGMA journal_mode may be read but not set"), "{err}");
        assert_eq!(take_denial(), None, "map_error consumed the reason");
        let err = map_error(conn.execute_batch("SELECT load_extension('x')").unwrap_err(), None);
        assert_eq!(err.code(), ErrorCode::PolicyDenied, "{err}");
        assert!(err.message().contains("load_extension"), "{err}");
        conn.execute_batch("CREATE TABLE t(x); PRAGMA table_info(t); PRAGMA user_version=3").unwrap();

        fn always() -> bool {
            true
        }
        install_authorizer(&mut conn, PolicyRelaxations::default(), always).unwrap();
        conn.execute_batch("BEGIN; PRAGMA wal_checkpoint; COMMIT").unwrap();
    }

    #[test]
    fn sqlite_own_refusals_are_explained() {
        let v = explain_refusal("cannot VACUUM from within a transaction").unwrap();
        assert!(v.contains("VACUUM is refused"), "{v}");
        let f = explain_refusal("unsafe use of fts3_tokenizer()").unwrap();
        assert!(f.starts_with("fts3_tokenizer() is refused inside a trigger, view"), "{f}");
        let t = explain_refusal("unsafe use of virtual table \"x\"").unwrap();
        assert!(t.starts_with("virtual table x is refused"), "{t}");
        assert_eq!(explain_refusal("no such table: t"), None);
    }

    #[test]
    fn limits_are_applied() {
        let conn = Connection::open_in_memory().unwrap();
        harden(&conn).unwrap();
        for (limit, value) in LIMITS {
            assert_eq!(conn.limit(limit).unwrap(), value, "{limit:?}");
        }
        assert!(!conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE).unwrap());
        let err = map_error(conn.execute_batch("SELECT zeroblob(17000000)").unwrap_err(), None);
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
        let deep = format!("SELECT 1{}", "+1".repeat(300));
        let err = map_error(conn.execute_batch(&deep).unwrap_err(), None);
        assert!(err.message().contains("maximum depth 256"), "{err}");
    }
}
