//! The reference model: what was acknowledged, the states the data may be in after a
//! crash, and the keys of operations whose outcome is unknown.

use super::*;

/// The reference model: every state the data went through, and what is durable.
#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    /// The rows acknowledged so far (the current state).
    pub(super) rows: BTreeSet<i64>,
    /// Every state since the last durable barrier, oldest first (the current one last).
    pub(super) history: Vec<BTreeSet<i64>>,
    /// Snapshot id → the rows it holds.
    pub(super) snapshots: BTreeMap<Uuid, BTreeSet<i64>>,
    /// Snapshots in manifest order.
    pub(super) snapshot_order: Vec<Uuid>,
    /// Acknowledged snapshots a failed operation may have dropped (a retention that failed
    /// after its manifest was replaced): gone after a crash is allowed for these only.
    pub(super) snapshots_maybe_gone: BTreeSet<Uuid>,
    /// Snapshots whose drop was acknowledged (by a drop or a retention): never again in the
    /// manifest.
    pub(super) dropped: BTreeSet<Uuid>,
    /// States an operation that did not answer (or failed) may still have produced.
    pub(super) in_flight: Vec<BTreeSet<i64>>,
    /// Keys written by operations that failed since the last durable point: a failed
    /// operation may still have taken effect whole (SQLite can report a commit failed after
    /// its commit frame reached the WAL), so these keys may be present or not.
    pub(super) maybe: BTreeSet<i64>,
    /// Acknowledged exports and backups: path → (its rows, gzip). An export must exist from
    /// its acknowledgement on; a backup may be removed by retention (see `backups_must`).
    pub(super) exports: BTreeMap<PathBuf, (BTreeSet<i64>, bool)>,
    /// The backups that must exist: those listed after the last acknowledged backup. A backup
    /// that failed may have removed any of them (it removes the oldest names once its own file
    /// is complete), so a failure empties this set until the next acknowledged backup.
    pub(super) backups_must: BTreeSet<PathBuf>,
    /// Whole states a failed operation may have committed past its commit point (a restore
    /// whose undo snapshot failed after the flip: the engine reports the error and poisons
    /// the database). They stay possible until the next acknowledged write, which proves
    /// the engine was not on one of them (it would have refused work), or a durable point.
    pub(super) in_doubt: Vec<BTreeSet<i64>>,
}

/// The schema version rides in the model's rows as a key of its own, far below every real
/// key: a migration is then a write like any other (acknowledged, durable as the tier makes
/// it, in snapshots, restored and imported with them), and the checks that hold for rows hold
/// for it. A read adds the database's version as that key ([`with_schema`]).
pub(super) const SCHEMA_KEY_BASE: i64 = i64::MIN / 2;

/// The pseudo-key of schema version `v`.
pub(super) fn schema_key(v: u64) -> i64 {
    SCHEMA_KEY_BASE.saturating_add(i64::try_from(v).unwrap_or(i64::MAX / 4))
}

/// `keys` (read from `kv`) with the pseudo-key of schema version `v`.
pub(super) fn with_schema(mut keys: BTreeSet<i64>, v: u64) -> BTreeSet<i64> {
    keys.insert(schema_key(v));
    keys
}

/// Keys above this carry large values (the `quota` profile draws its keys here, so that a
/// 1 MB database fills within a seed).
pub(super) const BIG_KEYS: i64 = 1 << 40;
/// Bytes of a large value.
const BIG_VALUE_BYTES: usize = 6 * 1024;

/// The value written with key `k`: every storage class in turn, so a read that returns
/// another value, or the same value in another class, is caught.
pub(super) fn value_of(k: i64) -> Value {
    if k > BIG_KEYS {
        return Value::Blob(k.to_le_bytes().iter().copied().cycle().take(BIG_VALUE_BYTES).collect());
    }
    match k.rem_euclid(4) {
        0 => Value::Integer(k.wrapping_mul(1_000_003)),
        1 => Value::Real(k as f64 / 7.0),
        2 => Value::Text(format!("v{k}-é")),
        _ => Value::Blob(k.to_le_bytes().repeat(3)),
    }
}

/// Whether `v` is exactly what [`value_of`] wrote (reals bit for bit).
pub(super) fn holds_value_of(k: i64, v: &Value) -> bool {
    match (value_of(k), v) {
        (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
        (want, got) => &want == got,
    }
}

/// A value for a message: its class and, for text and blobs, length and first bytes.
fn brief(v: &Value) -> String {
    match v {
        Value::Text(t) => format!("text of {} bytes {:?}", t.len(), t.chars().take(16).collect::<String>()),
        Value::Blob(b) => format!("blob of {} bytes {:02x?}", b.len(), b.iter().take(16).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

/// Keys and values read back, checked: every row's key is an integer and its value is the one
/// written with it.
pub(super) fn keys_of(rows: &sila_sqlite::Rows) -> Result<BTreeSet<i64>, String> {
    let mut keys = BTreeSet::new();
    for row in &rows.rows {
        match (row.first(), row.get(1)) {
            (Some(Value::Integer(k)), Some(v)) if holds_value_of(*k, v) => {
                keys.insert(*k);
            }
            (Some(Value::Integer(k)), Some(v)) => {
                return Err(format!("row {k} holds {}, but {} was written", brief(v), brief(&value_of(*k))))
            }
            other => return Err(format!("a row that is no (key, value) pair: {other:?}")),
        }
    }
    Ok(keys)
}

impl Model {
    pub(super) fn commit(&mut self, rows: BTreeSet<i64>, full: bool) {
        self.rows = rows;
        self.in_doubt.clear();
        if full {
            self.history = vec![self.rows.clone()];
        } else {
            self.history.push(self.rows.clone());
        }
    }

    pub(super) fn barrier(&mut self) {
        self.history = vec![self.rows.clone()];
        self.maybe.clear();
        self.in_doubt.clear();
    }

    /// Whether `rows` is what a reopen without a crash may show: the last acknowledged state
    /// or the state of an operation that failed but took effect whole, up to keys of failed
    /// operations.
    pub(super) fn allows_without_crash(&self, rows: &BTreeSet<i64>) -> bool {
        std::iter::once(&self.rows)
            .chain(self.in_flight.iter())
            .chain(self.in_doubt.iter())
            .any(|s| s.symmetric_difference(rows).all(|k| self.maybe.contains(k)))
    }

    /// Whether `rows` is a state the history allows, up to keys of failed operations.
    pub(super) fn allows(&self, rows: &BTreeSet<i64>) -> bool {
        self.history
            .iter()
            .chain(self.in_flight.iter())
            .chain(self.in_doubt.iter())
            .any(|s| s.symmetric_difference(rows).all(|k| self.maybe.contains(k)))
    }
}
