//! `tracing` spans for every request and every operation, for any subscriber the host
//! installs (a log formatter, OpenTelemetry through `tracing-opentelemetry`, a test's
//! capture). Without a subscriber a span costs one check of a cached flag.
//!
//! Two span names, at INFO level, target `sila_sqlite`:
//!
//! * `request` — one `query`, `exec`, `script` or `transaction`: from its submission (a
//!   query: from the moment it runs) to its answer. Fields: `app`, `db`, `op`, `sql`,
//!   `params`, `rows`, `duration_us`, `outcome` (`ok` or `error`) and `code` (the error code's
//!   name). `sql` is redacted ([`crate::redact::redact_sql`]: literals and parameters become
//!   `?`); `params` stays empty. Only with [`crate::BrokerOptions::capture_full_sql`] (a
//!   development option) do they hold the statement as written and its parameters.
//! * `operation` — one versions or workspace operation (`snapshot`, `restore`, `import`,
//!   `export`, `backup`, `migrate`, `drop_snapshot`, `retention`, `gc`, `register_app`…).
//!   Fields: `app`, `db` (empty for a workspace operation), `op`, `bytes` (what it wrote or
//!   freed, when it says), `duration_us`, `outcome`, `code`.
//!
//! Durations are measured on the workspace's clock (the simulation's is simulated); a
//! subscriber's own span timing measures wall time.

use crate::sqlite::Value;
use crate::{ErrorCode, Result};
use std::time::Duration;
use tracing::field::Empty;
use tracing::Span;

/// The span of one request; see the module docs. `full` shows the SQL as written and its
/// parameters (the dev option); otherwise the SQL is redacted and the parameters left out.
pub(crate) fn request(
    app: &str,
    db: &str,
    op: &'static str,
    sql: &str,
    params: &[Value],
    full: bool,
) -> Span {
    let span = tracing::info_span!(
        target: "sila_sqlite",
        "request",
        app,
        db,
        op,
        sql = Empty,
        params = Empty,
        rows = Empty,
        duration_us = Empty,
        outcome = Empty,
        code = Empty,
    );
    if !span.is_disabled() {
        if full {
            span.record("sql", sql);
            span.record("params", tracing::field::debug(params));
        } else {
            span.record("sql", crate::redact::redact_sql(sql).as_str());
        }
    }
    span
}

/// The span of one operation; see the module docs. `db` is empty for a workspace operation.
pub(crate) fn operation(app: &str, db: &str, op: &'static str) -> Span {
    tracing::info_span!(
        target: "sila_sqlite",
        "operation",
        app,
        db,
        op,
        bytes = Empty,
        duration_us = Empty,
        outcome = Empty,
        code = Empty,
    )
}

/// Records how a request or operation ended: its duration, `ok` or the error's code, and
/// its rows (a request) or bytes (an operation) when known.
pub(crate) fn finish(
    span: &Span,
    took: Duration,
    outcome: std::result::Result<(), ErrorCode>,
    count: Option<u64>,
) {
    if span.is_disabled() {
        return;
    }
    span.record("duration_us", u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    match outcome {
        Ok(()) => {
            span.record("outcome", "ok");
        }
        Err(code) => {
            span.record("outcome", "error");
            span.record("code", code.name());
        }
    }
    if let Some(n) = count {
        let field = if span.metadata().is_some_and(|m| m.name() == "operation") { "bytes" } else { "rows" };
        span.record(field, n);
    }
}

/// Runs `f` inside an operation's span and records its end; `bytes` tells what the result
/// says it wrote or freed.
pub(crate) fn traced<T>(
    span: Span,
    clock: &dyn crate::clock::Clock,
    f: impl FnOnce() -> Result<T>,
    bytes: impl FnOnce(&T) -> Option<u64>,
) -> Result<T> {
    let started = clock.monotonic();
    let result = span.in_scope(f);
    let took = clock.monotonic().saturating_sub(started);
    match &result {
        Ok(v) => finish(&span, took, Ok(()), bytes(v)),
        Err(e) => finish(&span, took, Err(e.code()), None),
    }
    result
}
