//! The audit trail: a durable, append-only log per workspace of what changed it.
//!
//! What is recorded: app registrations, manifest changes and unregistrations; migrations
//! (from, to, the checksum of every step, duration, outcome); snapshots, dropped snapshots,
//! retention, restores, imports, exports, backups, compactions; GC runs that removed
//! something; integrity checks that found a problem; and operations that failed, with their
//! error code (a quota refusal among them). Checkpoints and `PRAGMA optimize` are not
//! recorded (they change no data an operator asks about), nor are clean integrity checks, nor
//! failures that only say the call was malformed or named nothing ([`records_failure`]).
//!
//! Durability: an operation that succeeded is acknowledged only once its record is on the
//! disk (appended and synced), so every acknowledged operation has its record after any crash;
//! if the record cannot be written the operation answers that error instead (it may have
//! taken effect, as any operation whose last sync failed). A failure's record is synced too:
//! unsynced records could come back from a crash torn or out of order, in the middle of the
//! log (found by the simulation), where they would be indistinguishable from damage. After an IO
//! fault the workspace writes nothing (`crate::fault`), so a poisoning is not recorded here:
//! it is in the `tracing` events and the metrics, and the reopen that recovers from it starts
//! a clean log tail.
//!
//! Format: `audit/<first seq, 20 digits>.log` segments of JSON lines, each line followed by a
//! space and the CRC-32C of the JSON in 8 hex digits. Sequence numbers start at 1 and grow by
//! one per record. A crash during an append can leave a torn tail on the newest segment:
//! opening the workspace cuts it after the last whole, valid line. A damaged line elsewhere (bit rot)
//! is skipped by readers and counted ([`AuditRead::damaged`]).
//!
//! Retention: a new segment starts when the current one would pass
//! [`AuditLimits::segment_bytes`]; the oldest segments are removed while the log is larger
//! than [`AuditLimits::bytes_max`] (the newest segment is always kept). Reads are bounded by
//! [`AUDIT_READ_MAX`] records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Map, Value};

use crate::vfs::{OpenMode, Vfs};
use crate::{Error, ErrorCode, Result};

/// The audit directory, at the workspace root.
pub const AUDIT_DIR: &str = "audit";
/// Suffix of a segment file.
const SEGMENT_SUFFIX: &str = ".log";
/// Default for [`AuditLimits::segment_bytes`]: 1 MiB.
pub const AUDIT_SEGMENT_BYTES_DEFAULT: u64 = 1 << 20;
/// The largest [`AuditLimits::segment_bytes`]: a read holds one segment in memory.
pub const AUDIT_SEGMENT_BYTES_MAX: u64 = 64 << 20;
/// Default for [`AuditLimits::bytes_max`]: 16 MiB (tens of thousands of records).
pub const AUDIT_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// The most records one read returns (and the default of [`AuditQuery::limit`]).
pub const AUDIT_READ_MAX: usize = 10_000;
/// The longest line a record may take. A longer record keeps its fields but its detail is
/// replaced by `{"truncated": true}` (details are the engine's own and stay far below this).
pub const AUDIT_RECORD_BYTES_MAX: usize = 16 * 1024;

/// A failed operation is recorded at most once per this many milliseconds for the same app,
/// database, operation and error code; the next record says how many were left out
/// (`detail.suppressed`). An app that retries a refused operation in a loop cannot push the
/// history out of the log.
pub const AUDIT_FAILURE_INTERVAL_MS: u64 = 60_000;
/// How many (app, database, operation, code) keys that rate limit remembers; when full it
/// forgets them all (the next failure of each is recorded).
pub const AUDIT_FAILURE_KEYS_MAX: usize = 1024;

/// Whether a failure with this code is recorded: those that say something about the
/// workspace or its data (a quota or disk refusal, damage, a failed migration, a timeout),
/// not a call that named nothing or was malformed (those change nothing and an app could
/// send any number of them; a refused attack leaves the disk as it was).
pub fn records_failure(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::NotFound
            | ErrorCode::InvalidName
            | ErrorCode::InvalidArgument
            | ErrorCode::InvalidManifest
            | ErrorCode::CapabilityDenied
            | ErrorCode::AlreadyExists
            | ErrorCode::ReadOnly
            | ErrorCode::ResultTooLarge
            | ErrorCode::WriteInQuery
            | ErrorCode::WorkspaceLocked
            | ErrorCode::Poisoned
    )
}

/// How large the audit log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// A segment is closed before it would pass this many bytes (at least one record each).
    pub segment_bytes: u64,
    /// The oldest segments are removed while the log holds more than this.
    pub bytes_max: u64,
}

impl Default for AuditLimits {
    fn default() -> AuditLimits {
        AuditLimits { segment_bytes: AUDIT_SEGMENT_BYTES_DEFAULT, bytes_max: AUDIT_BYTES_MAX_DEFAULT }
    }
}

impl AuditLimits {
    /// Refuses limits that could not hold a record, or segments larger than
    /// [`AUDIT_SEGMENT_BYTES_MAX`].
    pub fn validate(&self) -> Result<()> {
        let min = AUDIT_RECORD_BYTES_MAX as u64;
        if !(min..=AUDIT_SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || self.bytes_max < self.segment_bytes
        {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!(
                    "audit limits: segment_bytes must be {min} to {AUDIT_SEGMENT_BYTES_MAX} and bytes_max at \
                     least segment_bytes (got {} and {})",
                    self.segment_bytes, self.bytes_max
                ),
            ));
        }
        Ok(())
    }
}

/// One record of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the log: 1, 2, 3, ... (a crash during an append may reuse its number).
    pub seq: u64,
    /// Wall time when the operation ended, in milliseconds since the unix epoch.
    pub at_ms: u64,
    /// The operation (`snapshot`, `restore`, `import`, `migrate`, `register_app`, `gc`, ...).
    pub op: String,
    /// The app's id; empty for workspace-wide operations (GC).
    pub app: String,
    /// The database's name; empty for app and workspace operations.
    pub db: String,
    /// `None` when it succeeded, else the error code's name (`QUOTA_EXCEEDED`, ...).
    pub error: Option<String>,
    /// How long the operation took, in milliseconds.
    pub duration_ms: u64,
    /// What the operation did (ids, sizes, versions, checksums), or the error's message.
    pub detail: Value,
}

impl AuditRecord {
    /// The record as JSON (`error` left out when it succeeded).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("seq".into(), json!(self.seq));
        m.insert("at_ms".into(), json!(self.at_ms));
        m.insert("op".into(), json!(self.op));
        m.insert("app".into(), json!(self.app));
        m.insert("db".into(), json!(self.db));
        m.insert("outcome".into(), json!(if self.error.is_none() { "ok" } else { "error" }));
        if let Some(code) = &self.error {
            m.insert("code".into(), json!(code));
        }
        m.insert("duration_ms".into(), json!(self.duration_ms));
        m.insert("detail".into(), self.detail.clone());
        Value::Object(m)
    }

    /// Reads a record written by [`Self::to_json`]; `None` if a field is missing or wrong.
    pub fn from_json(v: &Value) -> Option<AuditRecord> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let error = match v.get("outcome")?.as_str()? {
            "ok" => None,
            "error" => Some(text("code")?),
            _ => return None,
        };
        Some(AuditRecord {
            seq: v.get("seq")?.as_u64()?,
            at_ms: v.get("at_ms")?.as_u64()?,
            op: text("op")?,
            app: text("app")?,
            db: text("db")?,
            error,
            duration_ms: v.get("duration_ms")?.as_u64()?,
            detail: v.get("detail").cloned().unwrap_or(Value::Null),
        })
    }
}

/// Which records a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this app's records (workspace-wide ones, such as GC, are left out).
    pub app: Option<String>,
    /// Only records at or after this wall time (milliseconds since the unix epoch).
    pub since_ms: Option<u64>,
    /// At most this many records: the newest ones that match, oldest first. 1 to
    /// [`AUDIT_READ_MAX`].
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> AuditQuery {
        AuditQuery { app: None, since_ms: None, limit: AUDIT_READ_MAX }
    }
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditRead {
    /// The matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Lines skipped because they were damaged (checksum or format).
    pub damaged: u64,
}

/// A record before the log numbers it.
pub(crate) struct Entry<'a> {
    pub(crate) op: &'a str,
    pub(crate) app: &'a str,
    pub(crate) db: &'a str,
    pub(crate) error: Option<&'a Error>,
    pub(crate) duration_ms: u64,
    pub(crate) detail: Value,
}

/// What a failure record is rate-limited by: app, database, operation, code.
type FailureKey = (String, String, String, String);

/// The rate limit of failure records: one record per key per [`AUDIT_FAILURE_INTERVAL_MS`],
/// remembering at most [`AUDIT_FAILURE_KEYS_MAX`] keys (when full, it forgets them all).
#[derive(Debug, Default)]
struct FailureLimiter {
    /// Key → (when its last record was written, failures left out since).
    seen: HashMap<FailureKey, (u64, u64)>,
}

impl FailureLimiter {
    /// Whether a failure with `key` at `at_ms` is recorded: `Some(n)`, with `n` failures of
    /// the key left out since its last record, or `None` (left out, and counted).
    fn admit(&mut self, key: FailureKey, at_ms: u64) -> Option<u64> {
        let suppressed = match self.seen.get_mut(&key) {
            Some((last, suppressed)) if at_ms < last.saturating_add(AUDIT_FAILURE_INTERVAL_MS) => {
                *suppressed += 1;
                return None;
            }
            Some((_, suppressed)) => *suppressed,
            None => 0,
        };
        if self.seen.len() >= AUDIT_FAILURE_KEYS_MAX && !self.seen.contains_key(&key) {
            self.seen.clear();
        }
        self.seen.insert(key, (at_ms, 0));
        debug_assert!(self.seen.len() <= AUDIT_FAILURE_KEYS_MAX);
        Some(suppressed)
    }
}

/// One segment file.
#[derive(Debug, Clone, Copy)]
struct Segment {
    first_seq: u64,
    len: u64,
    /// Its directory entry has been synced (the first append to it does).
    entry_synced: bool,
}

#[derive(Debug)]
struct State {
    /// Oldest first. Empty until the first record.
    segments: Vec<Segment>,
    next_seq: u64,
    /// The `audit/` directory exists and its entry in the root is synced.
    dir_synced: bool,
    /// The rate limit of failure records.
    failures: FailureLimiter,
}

/// The log of one open workspace. Appends and reads take one lock: records are rare (one
/// per operation), and a read never sees a half-written line.
pub(crate) struct AuditLog {
    vfs: Arc<dyn Vfs>,
    root: PathBuf,
    dir: PathBuf,
    limits: AuditLimits,
    state: Mutex<State>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A record's line: the JSON, a space, the CRC-32C of the JSON, a newline.
fn encode_line(record: &AuditRecord) -> Vec<u8> {
    let mut json = record.to_json().to_string();
    if json.len() + 10 > AUDIT_RECORD_BYTES_MAX {
        let mut short = record.clone();
        short.detail = json!({"truncated": true});
        json = short.to_json().to_string();
    }
    format!("{json} {:08x}\n", crc32c::crc32c(json.as_bytes())).into_bytes()
}

/// The record of one line (without its newline); `None` if it is damaged.
fn decode_line(line: &[u8]) -> Option<AuditRecord> {
    let text = std::str::from_utf8(line).ok()?;
    let (json, crc) = text.rsplit_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(json.as_bytes()) {
        return None;
    }
    AuditRecord::from_json(&serde_json::from_str(json).ok()?)
}

/// The records of a segment's bytes, the damaged lines, and the end of the last valid line.
fn scan(bytes: &[u8]) -> (Vec<AuditRecord>, u64, usize) {
    let (mut records, mut damaged, mut valid_end, mut at) = (Vec::new(), 0u64, 0usize, 0usize);
    // Each round consumes one line; a tail without a newline is not a line.
    while let Some(nl) = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
        let line = bytes.get(at..at + nl).unwrap_or_default();
        match decode_line(line) {
            Some(r) => {
                records.push(r);
                valid_end = at + nl + 1;
            }
            None => damaged += 1,
        }
        at += nl + 1;
    }
    (records, damaged, valid_end)
}

impl AuditLog {
    /// Opens the log of the workspace at `root`: finds its segments and cuts a torn or
    /// unsynced tail off the newest one (after the last valid line).
    pub(crate) fn open(vfs: Arc<dyn Vfs>, root: &Path, limits: AuditLimits) -> Result<AuditLog> {
        limits.validate()?;
        let dir = root.join(AUDIT_DIR);
        let mut state = State {
            segments: Vec::new(),
            next_seq: 1,
            dir_synced: false,
            failures: FailureLimiter::default(),
        };
        if vfs.exists(&dir)? {
            state.dir_synced = true;
            let mut firsts: Vec<u64> = vfs
                .list_dir(&dir)?
                .iter()
                .filter(|e| !e.is_dir)
                .filter_map(|e| parse_segment_name(&e.name))
                .collect();
            firsts.sort_unstable();
            for first_seq in firsts {
                let len = vfs.file_len(&dir.join(segment_name(first_seq)))?.unwrap_or(0);
                state.segments.push(Segment { first_seq, len, entry_synced: true });
            }
        }
        let log = AuditLog { vfs, root: root.to_path_buf(), dir, limits, state: Mutex::new(state) };
        log.repair_tail()?;
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the newest segment after its last valid line and sets the next sequence number.
    fn repair_tail(&self) -> Result<()> {
        let mut state = self.lock();
        let Some(last) = state.segments.last().copied() else { return Ok(()) };
        let path = self.dir.join(segment_name(last.first_seq));
        let bytes = self.read_segment(&path, last.len)?;
        let (records, _, valid_end) = scan(&bytes);
        state.next_seq =
            records.last().map_or(last.first_seq, |r| r.seq.saturating_add(1)).max(last.first_seq);
        if (valid_end as u64) < last.len {
            let file = self.vfs.open(&path, OpenMode::ReadWrite)?;
            file.set_len(valid_end as u64)?;
            file.sync()?;
        }
        if let Some(seg) = state.segments.last_mut() {
            seg.len = valid_end as u64;
        }
        Ok(())
    }

    /// The bytes of a segment, at most what one may hold (a longer file is damaged past it).
    fn read_segment(&self, path: &Path, len: u64) -> Result<Vec<u8>> {
        let cap = self.limits.segment_bytes.saturating_add(AUDIT_RECORD_BYTES_MAX as u64);
        let want = usize::try_from(len.min(cap)).unwrap_or(0);
        let mut buf = vec![0u8; want];
        let file = self.vfs.open(path, OpenMode::Read)?;
        let n = crate::vfs::read_full(file.as_ref(), &mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Appends the record of an operation that succeeded and returns only once it is synced
    /// (and so is the way to it). Returns the record's sequence number.
    pub(crate) fn append(&self, entry: Entry<'_>, at_ms: u64) -> Result<u64> {
        let mut state = self.lock();
        self.append_locked(&mut state, entry, at_ms)
    }

    /// Appends (and syncs) the record of a failed operation, at most once per
    /// [`AUDIT_FAILURE_INTERVAL_MS`] for the same app, database, operation and code. A record
    /// that cannot be written is dropped: the failure itself is what the caller reports.
    pub(crate) fn append_failure(&self, mut entry: Entry<'_>, at_ms: u64) {
        let Some(error) = entry.error.filter(|e| records_failure(e.code())) else { return };
        let mut state = self.lock();
        let key = (
            entry.app.to_string(),
            entry.db.to_string(),
            entry.op.to_string(),
            error.code().name().to_string(),
        );
        let Some(suppressed) = state.failures.admit(key, at_ms) else { return };
        entry.detail = if suppressed > 0 {
            json!({"message": error.message(), "suppressed": suppressed})
        } else {
            json!({"message": error.message()})
        };
        let _ = self.append_locked(&mut state, entry, at_ms);
    }

    /// Appends (and syncs) an alarm (`entry.op` names it; its detail says what was seen),
    /// at most once per [`AUDIT_FAILURE_INTERVAL_MS`] for the same app, database and alarm,
    /// with the count of those left out since. Dropped if it cannot be written.
    pub(crate) fn append_alarm(&self, mut entry: Entry<'_>, at_ms: u64) {
        let mut state = self.lock();
        let key = (entry.app.to_string(), entry.db.to_string(), entry.op.to_string(), "ALARM".to_string());
        let Some(suppressed) = state.failures.admit(key, at_ms) else { return };
        if let (Some(detail), true) = (entry.detail.as_object_mut(), suppressed > 0) {
            detail.insert("suppressed".into(), json!(suppressed));
        }
        let _ = self.append_locked(&mut state, entry, at_ms);
    }

    /// Appends a record and syncs it, and the directory entries on the way to it.
    fn append_locked(&self, state: &mut State, entry: Entry<'_>, at_ms: u64) -> Result<u64> {
        let record = AuditRecord {
            seq: state.next_seq,
            at_ms,
            op: entry.op.to_string(),
            app: entry.app.to_string(),
            db: entry.db.to_string(),
            error: entry.error.map(|e| e.code().name().to_string()),
            duration_ms: entry.duration_ms,
            detail: entry.detail,
        };
        let line = encode_line(&record);
        let line_len = line.len() as u64;
        if !state.dir_synced {
            if !self.vfs.exists(&self.dir)? {
                self.vfs.create_dir(&self.dir)?;
            }
            self.vfs.sync_dir(&self.root)?;
            state.dir_synced = true;
        }
        let full =
            state.segments.last().is_none_or(|s| s.len > 0 && s.len + line_len > self.limits.segment_bytes);
        if full {
            state.segments.push(Segment { first_seq: record.seq, len: 0, entry_synced: false });
        }
        let Some(seg) = state.segments.last().copied() else {
            return Err(Error::internal("audit log without a segment after starting one"));
        };
        let path = self.dir.join(segment_name(seg.first_seq));
        let mode = if seg.len == 0 { OpenMode::CreateOrOpen } else { OpenMode::ReadWrite };
        let file = self.vfs.open(&path, mode)?;
        crate::vfs::write_all_at(file.as_ref(), &line, seg.len)?;
        if !crate::sabotage::active(crate::sabotage::Sabotage::AuditRecordNotDurable) {
            file.sync()?;
            if !seg.entry_synced {
                self.vfs.sync_dir(&self.dir)?;
            }
        }
        if let Some(last) = state.segments.last_mut() {
            last.len += line_len;
            last.entry_synced = true;
        }
        state.next_seq += 1;
        if full {
            self.trim(state);
        }
        Ok(record.seq)
    }

    /// Removes the oldest segments while the log is over its size (never the newest). A
    /// segment that cannot be removed stays; the next trim tries again.
    fn trim(&self, state: &mut State) {
        let mut total: u64 = state.segments.iter().map(|s| s.len).sum();
        while total > self.limits.bytes_max && state.segments.len() > 1 {
            let Some(oldest) = state.segments.first().copied() else { break };
            if self.vfs.remove_file(&self.dir.join(segment_name(oldest.first_seq))).is_err() {
                break;
            }
            state.segments.remove(0);
            total = total.saturating_sub(oldest.len);
        }
    }

    /// The records `query` asks for.
    pub(crate) fn read(&self, query: &AuditQuery) -> Result<AuditRead> {
        if query.limit == 0 || query.limit > AUDIT_READ_MAX {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("an audit read returns 1 to {AUDIT_READ_MAX} records (asked for {})", query.limit),
            ));
        }
        let state = self.lock();
        let mut out = AuditRead::default();
        let mut kept = std::collections::VecDeque::with_capacity(query.limit.min(1024));
        for seg in &state.segments {
            let bytes = self.read_segment(&self.dir.join(segment_name(seg.first_seq)), seg.len)?;
            let (records, damaged, _) = scan(&bytes);
            out.damaged += damaged;
            let wanted = records.into_iter().filter(|r| {
                query.app.as_deref().is_none_or(|a| r.app == a) && query.since_ms.is_none_or(|t| r.at_ms >= t)
            });
            for r in wanted {
                if kept.len() == query.limit {
                    kept.pop_front();
                }
                kept.push_back(r);
            }
        }
        out.records = kept.into();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> AuditRecord {
        AuditRecord {
            seq,
            at_ms: 1_700_000_000_000 + seq,
            op: "snapshot".into(),
            app: "com.example".into(),
            db: "main".into(),
            error: None,
            duration_ms: 3,
            detail: json!({"snapshot": "x y", "bytes": 4096}),
        }
    }

    fn key(n: usize) -> FailureKey {
        (format!("app{n}"), "main".into(), "import".into(), "QUOTA_EXCEEDED".into())
    }

    #[test]
    fn failure_records_are_limited_per_key_and_interval() {
        let mut limiter = FailureLimiter::default();
        assert_eq!(limiter.admit(key(0), 1_000), Some(0));
        assert_eq!(limiter.admit(key(0), 1_000 + AUDIT_FAILURE_INTERVAL_MS - 1), None);
        assert_eq!(limiter.admit(key(0), 1_000 + AUDIT_FAILURE_INTERVAL_MS - 1), None);
        assert_eq!(limiter.admit(key(1), 1_001), Some(0), "another key is its own");
        assert_eq!(limiter.admit(key(0), 1_000 + AUDIT_FAILURE_INTERVAL_MS), Some(2), "two left out");
        assert_eq!(limiter.admit(key(0), 1_000 + AUDIT_FAILURE_INTERVAL_MS + 1), None);
    }

    #[test]
    fn the_failure_limiter_remembers_at_most_its_keys() {
        let mut limiter = FailureLimiter::default();
        // N keys: all remembered, so key 0 is still limited.
        for n in 0..AUDIT_FAILURE_KEYS_MAX {
            assert_eq!(limiter.admit(key(n), 5), Some(0));
        }
        assert_eq!(limiter.seen.len(), AUDIT_FAILURE_KEYS_MAX);
        assert_eq!(limiter.admit(key(0), 6), None);
        // Key N+1: the table is full, so it forgets every key and key 0 is recorded again.
        assert_eq!(limiter.admit(key(AUDIT_FAILURE_KEYS_MAX), 7), Some(0));
        assert_eq!(limiter.seen.len(), 1);
        assert_eq!(limiter.admit(key(0), 8), Some(0));
    }

    #[test]
    fn lines_round_trip_and_damage_is_detected() {
        let line = encode_line(&record(7));
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert_eq!(decode_line(body), Some(record(7)));
        for i in 0..body.len() {
            let mut bad = body.to_vec();
            bad[i] ^= 0x04;
            assert_eq!(decode_line(&bad), None, "flipped bit in byte {i} went unnoticed");
        }
        let failed = AuditRecord { error: Some("QUOTA_EXCEEDED".into()), ..record(8) };
        let l = encode_line(&failed);
        assert_eq!(decode_line(&l[..l.len() - 1]), Some(failed));
    }

    #[test]
    fn scan_stops_at_a_torn_tail_and_skips_damaged_lines() {
        let mut bytes = encode_line(&record(1));
        let mut bad = encode_line(&record(2));
        bad[3] ^= 1;
        bytes.extend(bad);
        bytes.extend(encode_line(&record(3)));
        let whole = bytes.len();
        bytes.extend(&encode_line(&record(4))[..20]);
        let (records, damaged, end) = scan(&bytes);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!((damaged, end), (1, whole));
    }

    #[test]
    fn oversized_details_are_replaced_not_written() {
        let big = AuditRecord { detail: json!({"x": "y".repeat(AUDIT_RECORD_BYTES_MAX)}), ..record(1) };
        let line = encode_line(&big);
        assert!(line.len() <= AUDIT_RECORD_BYTES_MAX, "{}", line.len());
        let back = decode_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(back.detail, json!({"truncated": true}));
        assert_eq!(back.op, "snapshot");
    }

    #[test]
    fn segment_names_are_twenty_digits() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn limits_outside_one_record_to_the_segment_maximum_are_refused() {
        let min = AUDIT_RECORD_BYTES_MAX as u64;
        assert!(AuditLimits { segment_bytes: min, bytes_max: min }.validate().is_ok());
        assert!(AuditLimits { segment_bytes: min - 1, bytes_max: min }.validate().is_err());
        assert!(AuditLimits { segment_bytes: min, bytes_max: min - 1 }.validate().is_err());
        let max = AUDIT_SEGMENT_BYTES_MAX;
        assert!(AuditLimits { segment_bytes: max, bytes_max: max }.validate().is_ok());
        assert!(AuditLimits { segment_bytes: max + 1, bytes_max: max + 1 }.validate().is_err());
        assert!(AuditLimits::default().validate().is_ok());
    }
}
