//! Taking databases out of service while their app changes (a manifest update or an
//! unregistration): their connections close, their shared state is forgotten, and none is
//! created again until the change is over, so the next open sees the new record.

use super::*;

/// Databases out of service; dropping it puts them back (an open then reads the app
/// record the change left).
pub struct Retirement {
    broker: Arc<BrokerShared>,
    keys: Vec<DbKey>,
}

impl Drop for Retirement {
    fn drop(&mut self) {
        let mut retiring = lock(&self.broker.retiring);
        for key in &self.keys {
            retiring.remove(key);
        }
    }
}

impl BrokerShared {
    /// Takes `keys` out of service: no shared state is created for them while the returned
    /// guard lives, and each active one has its connections closed and is forgotten.
    /// `Busy`, with nothing taken out, while one is in use (a `Database` handle, a request
    /// or a transaction holds it) or another change already holds it.
    pub fn retire(self: &Arc<Self>, keys: Vec<DbKey>) -> Result<Retirement> {
        {
            let mut retiring = lock(&self.retiring);
            if let Some(key) = keys.iter().find(|k| retiring.contains(*k)) {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!(
                        "database {:?} is being changed already; retry when that finishes",
                        key.db.as_str()
                    ),
                ));
            }
            retiring.extend(keys.iter().cloned());
        }
        let guard = Retirement { broker: self.clone(), keys };
        for key in &guard.keys {
            let Some(db) = self.active(key) else { continue };
            // Closing connections may release leases, which takes the store lock: no lock
            // is held here.
            let closed = db.close_all_idle();
            drop(db);
            let mut dbs = lock(&self.dbs);
            let unused = dbs.get(key).is_none_or(|d| Arc::strong_count(d) == 1);
            if !closed || !unused {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!(
                        "database {:?} is in use (an open handle, a request or a transaction); \
                         drop its handles and retry",
                        key.db.as_str()
                    ),
                ));
            }
            dbs.remove(key);
        }
        Ok(guard)
    }

    /// `Busy` while a change of its app holds the database out of service.
    pub(super) fn check_not_retiring(&self, key: &DbKey) -> Result<()> {
        if lock(&self.retiring).contains(key) {
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "database {:?} is being changed with its app; retry when that finishes",
                    key.db.as_str()
                ),
            ));
        }
        Ok(())
    }
}
