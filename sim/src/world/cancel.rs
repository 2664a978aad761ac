//! A write cancelled in the middle: one multi-row insert, run on a thread of its own
//! ([`super::paused`]), is stopped by the disk at a seeded read or write (while its statement
//! reads the tree, while its commit writes the WAL, or in the checkpoint after it); then the
//! simulation cancels it and lets it go on.
//!
//! What the model expects: the answer is either success (the cancellation came too late: every
//! row is committed) or `CANCELLED`, and then no row is there — a read right after finds none,
//! and neither may any later read; a disk fault may leave it either way (the keys are then in
//! doubt). Never a constraint error, never part of the rows.

use super::ops::is_fault_code;
use super::paused::{self, StopAt};
use super::*;
use sila_sqlite::CancelToken;

/// IO calls of the write's thread the disk lets pass before it stops one (drawn below this).
const STOP_AT_IO: u64 = 6;

impl World {
    /// [`Op::CancelMidWrite`]: the keys of `inner` (an insert, or a transaction that does not
    /// fail) in one statement, cancelled in the middle (module docs).
    pub(super) fn op_cancel_mid_write(
        &mut self,
        inner: &Op,
        seed: u64,
        full: bool,
    ) -> Result<String, String> {
        let keys: Vec<i64> = match inner {
            Op::Insert(k) => vec![*k],
            Op::Transaction(keys, false) => keys.clone(),
            _ => return self.apply_inner(inner, full),
        };
        let Ok(db) = self.db().cloned() else { return self.apply_inner(inner, full) };
        let at = ChaCha8Rng::seed_from_u64(seed).random_range(0..STOP_AT_IO);
        let rows = vec!["(?, ?)"; keys.len()].join(", ");
        let sql = format!("INSERT INTO kv (k, v) VALUES {rows}");
        let params: Vec<Value> =
            keys.iter().flat_map(|k| [Value::Integer(*k), model::value_of(*k)]).collect();
        let token = CancelToken::new();
        let poisoned_before = self.poisoned_by_fault;
        let mut next = self.model.rows.clone();
        next.extend(keys.iter().copied());
        self.model.in_flight = vec![next.clone()];
        let stop = StopAt { reads: true, writes: true, at, counts: Box::new(|_: &Path| true) };
        let write = {
            let (db, token) = (db.clone(), token.clone());
            paused::pause(&self.fs, "sim-cancelled-write", stop, move || db.exec_with(&sql, &params, &token))?
        };
        let when = match write.stopped_on() {
            Some(path) => {
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!("cancelled at IO {at} (on {file})")
            }
            None => "cancelled after its end".to_string(),
        };
        token.cancel();
        match write.finish(&self.fs)? {
            Ok(_) => {
                if poisoned_before {
                    return Err(
                        "fail-stop broken: a cancelled write was acknowledged after an fsync failure".into(),
                    );
                }
                self.model.commit(next, full);
                Ok(format!("acked; {when}"))
            }
            Err(e) if e.code() == ErrorCode::Cancelled => {
                // A definite answer: no crash may bring the rows back either.
                self.model.in_flight.clear();
                self.check_cancelled_absent(&db, &keys)?;
                Ok(format!("refused (CANCELLED), rows absent; {when}"))
            }
            Err(e) if self.refused_by_disk(e.code()) => {
                self.model.maybe.extend(keys.iter().copied());
                Ok(format!("error {}; {when}", e.code()))
            }
            Err(e) => Err(format!("a cancelled insert of fresh keys {keys:?} failed with {e}")),
        }
    }

    /// After a write answered `CANCELLED`: none of its rows is there.
    fn check_cancelled_absent(&self, db: &Database, keys: &[i64]) -> Result<(), String> {
        let marks = vec!["?"; keys.len()].join(", ");
        let params: Vec<Value> = keys.iter().map(|k| Value::Integer(*k)).collect();
        match db.query(&format!("SELECT k FROM kv WHERE k IN ({marks})"), &params) {
            Ok(rows) if rows.rows.is_empty() => Ok(()),
            Ok(rows) => {
                Err(format!("a write answered CANCELLED left {} of its rows {keys:?}", rows.rows.len()))
            }
            Err(e) if is_fault_code(e.code()) => Ok(()),
            Err(e) => Err(format!("reading back a cancelled write failed with {e}")),
        }
    }
}
