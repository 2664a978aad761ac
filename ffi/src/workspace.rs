//! `sila_workspace`: open, close and free a workspace; register apps; open databases; GC and
//! statistics.
//!
//! A workspace handle owns the shared state every handle derived from it points to
//! ([`WsShared`]): the open `Workspace` (None once closed) and weak links to the databases,
//! transactions and requests opened through it. `sila_workspace_close` empties it: databases
//! answer `SILA_INVALID_ARGUMENT` ("closed") from then on, open transactions roll back,
//! requests in flight are cancelled, and the engine shuts down (connections closed, workspace
//! lock released) once the calls still running on other threads return.

use crate::boundary::{
    cstr_arg, guard, guard_value, handle, opt_cstr_arg, out_arg, path_arg, str_arg, write_out, Result,
};
use crate::database::{sila_database, DbSlot};
use crate::result::{give_json, give_text};
use crate::status::sila_status;
use serde_json::json;
use sila_sqlite::{BrokerOptions, CancelToken, Error, ErrorCode, Workspace, WorkspaceOptions};
use std::ffi::c_char;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Things opened through a workspace that its close must reach.
#[derive(Default)]
struct Children {
    databases: Vec<Weak<DbSlot>>,
    transactions: Vec<Weak<crate::transaction::TxLink>>,
    requests: Vec<(Weak<crate::request::sila_request>, CancelToken)>,
}

/// The state shared by a workspace handle and everything opened through it.
pub(crate) struct WsShared {
    workspace: RwLock<Option<Workspace>>,
    children: Mutex<Children>,
}

impl WsShared {
    /// The open workspace, or `InvalidArgument` once it was closed.
    pub(crate) fn get(&self) -> Result<Workspace> {
        self.workspace
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "the workspace handle was closed"))
    }

    pub(crate) fn adopt_database(&self, slot: &Arc<DbSlot>) {
        let mut c = lock(&self.children);
        c.databases.retain(|w| w.strong_count() > 0);
        c.databases.push(Arc::downgrade(slot));
    }

    pub(crate) fn adopt_transaction(&self, link: &Arc<crate::transaction::TxLink>) {
        let mut c = lock(&self.children);
        c.transactions.retain(|w| w.strong_count() > 0);
        c.transactions.push(Arc::downgrade(link));
    }

    pub(crate) fn adopt_request(&self, request: &Arc<crate::request::sila_request>, cancel: CancelToken) {
        let mut c = lock(&self.children);
        c.requests.retain(|(w, _)| w.strong_count() > 0);
        c.requests.push((Arc::downgrade(request), cancel));
    }

    fn close(&self) -> Result<()> {
        let workspace = self.workspace.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(workspace) = workspace else {
            return Err(Error::new(ErrorCode::InvalidArgument, "the workspace handle is already closed"));
        };
        let children = std::mem::take(&mut *lock(&self.children));
        for (request, cancel) in children.requests {
            if request.strong_count() > 0 {
                cancel.cancel();
            }
        }
        for tx in children.transactions.iter().filter_map(Weak::upgrade) {
            tx.close_workspace();
        }
        for db in children.databases.iter().filter_map(Weak::upgrade) {
            db.close();
        }
        // The last `Workspace` clone closes connections, stops the workers and releases the
        // lock; clones held by calls still running on other threads delay that until they
        // return.
        drop(workspace);
        Ok(())
    }
}

/// An open workspace. Opaque; made by `sila_workspace_open`, released by
/// `sila_workspace_free`.
///
/// Thread-safety: functions taking a `const sila_workspace *` may be called from many threads
/// at once on one handle; `sila_workspace_close` and `sila_workspace_free` take it exclusively
/// (no other call on it may be running).
pub struct sila_workspace {
    shared: Arc<WsShared>,
}

/// Options of `sila_workspace_open`. Zero in any field means "the engine's default", so
/// `sila_workspace_options o = { .struct_size = sizeof o };` (C) or
/// `sila_workspace_options o{}; o.struct_size = sizeof o;` (C++) is all defaults.
///
/// `struct_size` must be set to `sizeof(sila_workspace_options)` as the host's header
/// defines it: future versions only append fields, and the library reads only the fields
/// that fit in `struct_size` (the rest keep their defaults). A size smaller than version 1's
/// or larger than this library knows is `SILA_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct sila_workspace_options {
    /// `sizeof(sila_workspace_options)`.
    pub struct_size: u32,
    /// Worker threads shared by every database (default: 2 × cores, at most 16). Each open
    /// transaction (`sila_database_begin`) occupies one until it ends.
    pub worker_threads: u32,
    /// Deadline of one statement, in milliseconds (default 5000) → `SILA_TIMEOUT`.
    pub statement_timeout_ms: u32,
    /// Longest a transaction may hold the writer, in milliseconds (default 10000); past it the
    /// transaction is rolled back and answers `SILA_TIMEOUT`.
    pub transaction_timeout_ms: u32,
    /// Requests one app may have in flight at once (default 64) → `SILA_BUSY`.
    pub max_concurrent_requests_per_app: u32,
    /// SQLite's busy timeout, in milliseconds (default 5000).
    pub busy_timeout_ms: u32,
    /// Most rows one query may return (default 100000) → `SILA_RESULT_TOO_LARGE`.
    pub query_rows_max: u64,
    /// Most bytes one query result may hold (default 32 MiB: column names, text and blob bytes,
    /// 8 per number) →
    /// `SILA_RESULT_TOO_LARGE`.
    pub query_bytes_max: u64,
    /// Databases unused this long close their connections, in milliseconds (default 30000).
    pub idle_timeout_ms: u32,
    /// Reserved; must be 0.
    pub reserved: u32,
    /// (Version 2.) Longest a request waits for one of its app's
    /// `max_concurrent_requests_per_app` slots before `SILA_BUSY`, in milliseconds (default
    /// 5; `SILA_NO_WAIT` refuses at once). A request's slot is given back before it is
    /// answered, so a host with one request per app at a time never waits.
    pub admission_wait_ms: u32,
    /// (Version 2.) Reserved; must be 0.
    pub reserved2: u32,
}

/// `admission_wait_ms` that refuses at once when every slot is taken (0 means the default).
pub const SILA_NO_WAIT: u32 = u32::MAX;

/// Size of version 1 of `sila_workspace_options` (the first published layout, up to
/// `reserved`).
const OPTIONS_V1_SIZE: usize = std::mem::offset_of!(sila_workspace_options, admission_wait_ms);

impl sila_workspace_options {
    /// Reads the host's options: only the first `struct_size` bytes, which must cover at least
    /// version 1 and no more than this library knows.
    ///
    /// # Safety
    /// `ptr` is NULL or points to at least `(*ptr).struct_size` readable bytes (it must be
    /// readable for the first 4 bytes in any case).
    unsafe fn read(ptr: *const sila_workspace_options) -> Result<sila_workspace_options> {
        if ptr.is_null() {
            return Ok(sila_workspace_options::default());
        }
        // SAFETY: non-NULL; the first field is a u32 the host must always provide.
        let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
        if size < OPTIONS_V1_SIZE || size > std::mem::size_of::<sila_workspace_options>() {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!(
                    "options.struct_size is {size}; this library accepts {}..={} \
                     (set it to sizeof(sila_workspace_options))",
                    OPTIONS_V1_SIZE,
                    std::mem::size_of::<sila_workspace_options>()
                ),
            ));
        }
        // An older host's struct is shorter: the fields past its size keep their defaults
        // (all zero).
        let mut options = sila_workspace_options::default();
        // SAFETY: the host promised `size` readable bytes at `ptr`, and `size` is at most the
        // size of `options` (checked above), so the copy stays inside both. The regions cannot
        // overlap (`options` is a local). Every bit pattern is a valid value of these integer
        // fields, and padding bytes may hold anything.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&raw mut options).cast::<u8>(), size);
        }
        if options.reserved != 0 || options.reserved2 != 0 {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                "options.reserved and options.reserved2 must be 0",
            ));
        }
        Ok(options)
    }

    fn to_workspace_options(self) -> WorkspaceOptions {
        let mut broker = BrokerOptions::default();
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        if self.worker_threads > 0 {
            broker.worker_threads = self.worker_threads as usize;
        }
        if self.statement_timeout_ms > 0 {
            broker.statement_timeout = ms(self.statement_timeout_ms);
        }
        if self.transaction_timeout_ms > 0 {
            broker.transaction_timeout = ms(self.transaction_timeout_ms);
        }
        if self.max_concurrent_requests_per_app > 0 {
            broker.max_concurrent_requests_per_app = self.max_concurrent_requests_per_app as usize;
        }
        if self.busy_timeout_ms > 0 {
            broker.busy_timeout_ms = self.busy_timeout_ms;
        }
        if self.query_rows_max > 0 {
            broker.query_limits.rows_max = self.query_rows_max;
        }
        if self.query_bytes_max > 0 {
            broker.query_limits.bytes_max = self.query_bytes_max;
        }
        if self.idle_timeout_ms > 0 {
            broker.idle_timeout = ms(self.idle_timeout_ms);
        }
        match self.admission_wait_ms {
            0 => {}
            SILA_NO_WAIT => broker.admission_wait = Duration::ZERO,
            v => broker.admission_wait = ms(v),
        }
        WorkspaceOptions { broker, ..WorkspaceOptions::default() }
    }
}

/// Opens (creating if needed) the workspace in directory `dir` and takes its exclusive lock;
/// runs recovery. `options` may be NULL for all defaults. On success `*workspace_out` is a
/// new handle the caller owns (release it with `sila_workspace_free`).
///
/// `dir` is a NUL-terminated path; any bytes but NUL are accepted (Linux paths need not be
/// UTF-8). A workspace held by another handle or process is `SILA_WORKSPACE_LOCKED`.
///
/// # Safety
/// `dir` is NULL or NUL-terminated; `options` is NULL or a readable options struct;
/// `workspace_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_open(
    dir: *const c_char,
    options: *const sila_workspace_options,
    workspace_out: *mut *mut sila_workspace,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let dir = unsafe { path_arg(dir, "dir") }?;
        out_arg(workspace_out, "workspace_out")?;
        // SAFETY: NULL or a readable options struct (caller's contract).
        let options = unsafe { sila_workspace_options::read(options) }?;
        let workspace = Workspace::open(dir, options.to_workspace_options())?;
        let shared = Arc::new(WsShared {
            workspace: RwLock::new(Some(workspace)),
            children: Mutex::new(Children::default()),
        });
        let boxed = Box::into_raw(Box::new(sila_workspace { shared }));
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(workspace_out, boxed) };
        Ok(())
    })
}

/// Closes the workspace: every database opened through it answers `SILA_INVALID_ARGUMENT`
/// from now on, open transactions roll back, requests in flight are cancelled (their
/// callbacks still run, with `SILA_CANCELLED` or their real outcome if they had finished).
/// Connections close, WAL files are checkpointed and the workspace lock is released once no
/// call is running on another thread (at once, when the host has stopped using it).
///
/// The handle stays allocated: free it with `sila_workspace_free` (freeing a closed handle is
/// safe). Closing twice is `SILA_INVALID_ARGUMENT`. Exclusive: no other call on this handle
/// may be running.
///
/// # Safety
/// `workspace` is NULL or a live workspace handle.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_close(workspace: *mut sila_workspace) -> sila_status {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let workspace = unsafe { handle(workspace.cast_const(), "workspace") }?;
        workspace.shared.close()
    })
}

/// Closes the workspace if it is still open (see `sila_workspace_close`) and frees the
/// handle. NULL is allowed and does nothing. Database handles opened through it stay valid
/// memory (their calls answer "closed") and must still be freed. Freeing twice is undefined.
///
/// # Safety
/// `workspace` is NULL or a live workspace handle, used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_free(workspace: *mut sila_workspace) {
    guard_value((), || {
        if workspace.is_null() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `sila_workspace_open`, freed once.
        let boxed = unsafe { Box::from_raw(workspace) };
        let _ = boxed.shared.close();
    })
}

fn app_info_json(info: &sila_sqlite::AppInfo) -> serde_json::Value {
    json!({
        "app_id": info.app_id.as_str(),
        "app_uuid": info.app_uuid.hyphenated().to_string(),
        "manifest": info.manifest.to_json(),
    })
}

/// Registers app `app_id` from its capability manifest (`manifest_json`, UTF-8, length in
/// bytes or `SILA_NUL_TERMINATED`), durably. Registering again with the same manifest is a
/// no-op; with a different one `SILA_ALREADY_EXISTS`. A bad manifest is
/// `SILA_INVALID_MANIFEST` naming the field.
///
/// On success, if `info_json_out` is not NULL, it receives
/// `{"app_id":…,"app_uuid":…,"manifest":{…}}` (free with `sila_string_free`) and
/// `*info_json_len_out` (if not NULL) its length. Thread-safe on a const workspace.
///
/// # Safety
/// Strings are NULL or valid as described; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_register_app(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    manifest_json: *const c_char,
    manifest_json_len: usize,
    info_json_out: *mut *mut c_char,
    info_json_len_out: *mut usize,
) -> sila_status {
    // SAFETY: the caller's contract, passed on whole.
    unsafe {
        with_manifest(
            workspace,
            app_id,
            manifest_json,
            manifest_json_len,
            info_json_out,
            info_json_len_out,
            Workspace::register_app,
        )
    }
}

/// Replaces the manifest of registered app `app_id` (`manifest_json`, UTF-8, length in bytes
/// or `SILA_NUL_TERMINATED`), durably: databases it adds are created empty, databases it
/// drops are removed (their files leave through the next GC), the rest take the new limits.
/// `SILA_NOT_FOUND` for an unknown app, `SILA_INVALID_MANIFEST` naming the field,
/// `SILA_QUOTA_EXCEEDED` when what is stored would not fit the new limits, `SILA_BUSY`
/// while a database whose limits change is open (close its handles first); nothing
/// changes on any error.
///
/// On success, if `info_json_out` is not NULL, it receives the app as
/// [`sila_workspace_register_app`] gives it. Thread-safe on a const workspace.
///
/// # Safety
/// Strings are NULL or valid as described; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_update_app(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    manifest_json: *const c_char,
    manifest_json_len: usize,
    info_json_out: *mut *mut c_char,
    info_json_len_out: *mut usize,
) -> sila_status {
    // SAFETY: the caller's contract, passed on whole.
    unsafe {
        with_manifest(
            workspace,
            app_id,
            manifest_json,
            manifest_json_len,
            info_json_out,
            info_json_len_out,
            Workspace::update_app,
        )
    }
}

/// The body of [`sila_workspace_register_app`] and [`sila_workspace_update_app`]: `change`
/// with the app id and manifest text, the app's JSON to the out-pointers.
///
/// # Safety
/// As those functions: strings NULL or valid as described, out-pointers NULL or writable.
unsafe fn with_manifest(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    manifest_json: *const c_char,
    manifest_json_len: usize,
    info_json_out: *mut *mut c_char,
    info_json_len_out: *mut usize,
    change: fn(&Workspace, &str, &str) -> sila_sqlite::Result<sila_sqlite::AppInfo>,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (workspace, app_id, manifest) = unsafe {
            (
                handle(workspace, "workspace")?,
                cstr_arg(app_id, "app_id")?,
                str_arg(manifest_json, manifest_json_len, "manifest_json")?,
            )
        };
        let info = change(&workspace.shared.get()?, app_id, manifest)?;
        // SAFETY: NULL or writable (caller's contract).
        unsafe { give_json(&app_info_json(&info), info_json_out, info_json_len_out) };
        Ok(())
    })
}

/// Unregisters app `app_id`, durably: it is gone on return and its files leave through the
/// next GC (backups stay). `SILA_NOT_FOUND` for an unknown app; `SILA_BUSY`, with nothing
/// changed, while one of its databases is open (close its handles first). Thread-safe on
/// a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; `app_id` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_unregister_app(
    workspace: *const sila_workspace,
    app_id: *const c_char,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (workspace, app_id) = unsafe { (handle(workspace, "workspace")?, cstr_arg(app_id, "app_id")?) };
        workspace.shared.get()?.unregister_app(app_id)?;
        Ok(())
    })
}

/// Lists the registered apps as a JSON array of `{"app_id","app_uuid","manifest"}`, ordered
/// by app id, in `*json_out` (free with `sila_string_free`) and its length in
/// `*json_len_out` (may be NULL). Thread-safe on a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_apps(
    workspace: *const sila_workspace,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let workspace = unsafe { handle(workspace, "workspace") }?;
        out_arg(json_out, "json_out")?;
        let apps: Vec<serde_json::Value> = workspace.shared.get()?.apps().iter().map(app_info_json).collect();
        // SAFETY: checked non-NULL and writable.
        unsafe { give_json(&serde_json::Value::Array(apps), json_out, json_len_out) };
        Ok(())
    })
}

/// Opens database `db_name` of app `app_id`: a name from the app's manifest (`analytics`) or
/// a logical name (`sila://db/analytics`). A database the manifest does not list is
/// `SILA_CAPABILITY_DENIED`; an unregistered app `SILA_NOT_FOUND`. No connection opens until
/// the first request. On success `*database_out` is a new handle the caller owns (free with
/// `sila_database_free`). Thread-safe on a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; strings NULL or NUL-terminated; `database_out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_open_database(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    db_name: *const c_char,
    database_out: *mut *mut sila_database,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (workspace, app_id, db_name) = unsafe {
            (handle(workspace, "workspace")?, cstr_arg(app_id, "app_id")?, cstr_arg(db_name, "db_name")?)
        };
        out_arg(database_out, "database_out")?;
        let ws = workspace.shared.get()?;
        let app = ws.open_app(app_id)?;
        let db = app.open(db_name)?;
        let handle = sila_database::new(&workspace.shared, ws, db, app.info().app_uuid);
        // SAFETY: checked non-NULL and writable.
        unsafe { write_out(database_out, Box::into_raw(Box::new(handle))) };
        Ok(())
    })
}

/// Statistics as JSON: `{"databases":[{"app","db","db_bytes","wal_bytes","connections",
/// "metrics":{…}}…],"apps":[{"app_id","ledger":{"live_bytes","side_bytes","snapshot_bytes",
/// "in_flight_bytes","garbage_bytes","collectable_bytes","used_bytes","quota_bytes"}}…],
/// "connections_open":N,"databases_active":N}`. `app_id` and `db_name` (both may be NULL)
/// narrow it to one app and one of its databases. Databases appear once this process has
/// used them. Free `*json_out` with `sila_string_free`. Thread-safe on a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; strings NULL or NUL-terminated; out-pointers NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_stats(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    db_name: *const c_char,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (workspace, app_id, db_name) = unsafe {
            (
                handle(workspace, "workspace")?,
                opt_cstr_arg(app_id, "app_id")?,
                opt_cstr_arg(db_name, "db_name")?,
            )
        };
        out_arg(json_out, "json_out")?;
        let ws = workspace.shared.get()?;
        let databases: Vec<serde_json::Value> =
            ws.stats(app_id, db_name)?.iter().map(sila_sqlite::DbStats::to_json).collect();
        let mut apps = Vec::new();
        for info in ws.apps() {
            if app_id.is_some_and(|a| a != info.app_id.as_str()) {
                continue;
            }
            let l = ws.ledger(info.app_id.as_str())?;
            apps.push(json!({
                "app_id": info.app_id.as_str(),
                "ledger": l.to_json(),
            }));
        }
        let doc = json!({
            "databases": databases,
            "apps": apps,
            "connections_open": ws.broker().connections_open(),
            "databases_active": ws.broker().databases_active(),
        });
        // SAFETY: checked non-NULL and writable.
        unsafe { give_json(&doc, json_out, json_len_out) };
        Ok(())
    })
}

/// The workspace's metrics in the Prometheus text exposition format (ending with
/// `# EOF`): per active database requests, errors by code, a latency histogram, rows,
/// checkpoints, connections, cache hits and sizes; per app the quota and its use. Counters
/// count since the workspace was opened in this process. `*text_out` receives the text (free
/// with `sila_string_free`), `*len_out` its length when not NULL. Thread-safe on a const
/// workspace.
///
/// # Safety
/// `workspace` is NULL or live; `text_out` writable; `len_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_metrics(
    workspace: *const sila_workspace,
    text_out: *mut *mut c_char,
    len_out: *mut usize,
) -> sila_status {
    guard(|| {
        out_arg(text_out, "text_out")?;
        // SAFETY: NULL or live (caller's contract).
        let workspace = unsafe { handle(workspace, "workspace") }?;
        let text = workspace.shared.get()?.metrics_text()?;
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { give_text(&text, text_out, len_out) };
        Ok(())
    })
}

/// Reads the workspace's audit trail (`Workspace::audit`): what changed it, oldest first.
/// `app_id` NULL for every app (non-NULL: that app's records only); `since_ms` 0 for all
/// time, else only records at or after that wall time (milliseconds since the unix epoch);
/// `limit` 0 for the most one read returns (10,000), else the newest `limit` matching
/// records (above 10,000: `SILA_INVALID_ARGUMENT`). `*json_out` receives
/// `{"records":[{"seq","at_ms","op","app","db","outcome","code"?,"duration_ms","detail"}],
/// "damaged":N}` (free with `sila_string_free`; `damaged` counts lines skipped because they
/// failed their checksum), `*json_len_out` its length when not NULL. Thread-safe on a
/// const workspace.
///
/// # Safety
/// `workspace` is NULL or live; `app_id` NULL or a NUL-terminated string; `json_out`
/// writable; `json_len_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_audit(
    workspace: *const sila_workspace,
    app_id: *const c_char,
    since_ms: u64,
    limit: u32,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        out_arg(json_out, "json_out")?;
        // SAFETY: pointer arguments are NULL or valid (caller's contract).
        let (workspace, app_id) =
            unsafe { (handle(workspace, "workspace")?, opt_cstr_arg(app_id, "app_id")?) };
        let query = sila_sqlite::AuditQuery {
            app: app_id.map(str::to_string),
            since_ms: (since_ms > 0).then_some(since_ms),
            limit: if limit == 0 { sila_sqlite::audit::AUDIT_READ_MAX } else { limit as usize },
        };
        let read = workspace.shared.get()?.audit(&query)?;
        let records: Vec<serde_json::Value> = read.records.iter().map(|r| r.to_json()).collect();
        let doc = json!({ "records": records, "damaged": read.damaged });
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { give_json(&doc, json_out, json_len_out) };
        Ok(())
    })
}

/// Does a bounded share of the workspace's upkeep (`Workspace::maintain`): for each
/// database in turn, continuing where the last call stopped, while `budget_ms` lasts (one
/// database always runs): an integrity check (SQLite's full `integrity_check` on every
/// `full_check_every`-th pass over all databases, 0 meaning 8, else `quick_check`),
/// `PRAGMA optimize`, and, when `keep_last` is not 0, retention keeping the newest
/// `keep_last` snapshots; then GC. A damaged database is reported and refused
/// (`SILA_POISONED`) until the workspace is reopened. If `json_out` is not NULL it receives
/// `{"databases":[{"app","db","full_check","problems":[…],"snapshots_dropped","pages_freed","error"}],
/// "remaining","pass","gc":{"files_removed","bytes_freed"}}` (free with `sila_string_free`).
/// Thread-safe on a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_maintain(
    workspace: *const sila_workspace,
    budget_ms: u64,
    full_check_every: u32,
    keep_last: u32,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let workspace = unsafe { handle(workspace, "workspace") }?;
        let options = sila_sqlite::maintenance::MaintenanceOptions {
            budget: Duration::from_millis(budget_ms),
            full_check_every: if full_check_every == 0 {
                sila_sqlite::maintenance::FULL_CHECK_EVERY_DEFAULT
            } else {
                full_check_every
            },
            retention: (keep_last > 0).then_some(sila_sqlite::store::Retention {
                keep_last: Some(keep_last as usize),
                max_age_ms: None,
            }),
            gc: true,
        };
        let report = workspace.shared.get()?.maintain(&options)?;
        let databases: Vec<serde_json::Value> = report
            .databases
            .iter()
            .map(|d| {
                json!({
                    "app": d.app_id,
                    "db": d.db,
                    "full_check": d.full_check,
                    "problems": d.problems,
                    "snapshots_dropped": d.snapshots_dropped,
                    "pages_freed": d.pages_freed,
                    "error": d.error,
                })
            })
            .collect();
        let gc = report.gc.as_ref().map(|g| {
            json!({
                "files_removed": g.files.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
                "bytes_freed": g.bytes,
            })
        });
        let doc =
            json!({ "databases": databases, "remaining": report.remaining, "pass": report.pass, "gc": gc });
        // SAFETY: NULL or writable.
        unsafe { give_json(&doc, json_out, json_len_out) };
        Ok(())
    })
}

/// Garbage collection: removes every file nothing references (no pointer, snapshot,
/// lease or operation in flight). If `json_out` is not NULL it receives
/// `{"files_removed":[…],"bytes_freed":N,"kept_leased":[…]}` (workspace-relative paths; free
/// with `sila_string_free`). Thread-safe on a const workspace.
///
/// # Safety
/// `workspace` is NULL or live; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sila_workspace_gc(
    workspace: *const sila_workspace,
    json_out: *mut *mut c_char,
    json_len_out: *mut usize,
) -> sila_status {
    guard(|| {
        // SAFETY: NULL or live (caller's contract).
        let workspace = unsafe { handle(workspace, "workspace") }?;
        let summary = workspace.shared.get()?.gc()?;
        let paths = |v: &[std::path::PathBuf]| -> Vec<String> {
            v.iter().map(|p| p.to_string_lossy().into_owned()).collect()
        };
        let doc = json!({
            "files_removed": paths(&summary.files),
            "bytes_freed": summary.bytes,
            "kept_leased": paths(&summary.kept_leased),
        });
        // SAFETY: NULL or writable.
        unsafe { give_json(&doc, json_out, json_len_out) };
        Ok(())
    })
}
