//! Changing a registered app: [`Workspace::update_app`] and [`Workspace::unregister_app`]
//! (the store's side, and what recovery makes of a crash in between, is in
//! `store/lifecycle.rs`).

use super::*;

impl Workspace {
    /// Replaces a registered app's capability manifest (JSON text). Durable on return.
    ///
    /// Databases the new manifest adds are created empty; databases it drops are removed
    /// (their files, snapshots included, leave through the next GC: export first what must
    /// be kept); the rest keep their content under the new limits, tier and policy.
    ///
    /// Refused, with nothing changed: `NotFound` for an unknown app, `InvalidManifest` for a
    /// manifest that does not validate, `QuotaExceeded` when a database already holds more
    /// than its new `maxSizeMB` or the databases kept hold more than the new quota, and
    /// `Busy` while a database whose limits change (or that is removed) is in use: every
    /// handle on it must be dropped first. A change that only adds databases touches no
    /// open database.
    pub fn update_app(&self, app_id: &str, manifest_json: &str) -> Result<AppInfo> {
        // An update to the same manifest changes nothing and is not recorded.
        self.app_operation(
            "update_app",
            app_id,
            || self.update_app_inner(app_id, manifest_json),
            |(info, changed)| changed.then(|| manifest_detail(info)),
        )
        .map(|(info, _)| info)
    }

    /// The app, and whether this call changed its manifest.
    fn update_app_inner(&self, app_id: &str, manifest_json: &str) -> Result<(AppInfo, bool)> {
        let app_id = AppId::new(app_id)?;
        let manifest = Manifest::parse(manifest_json)?;
        let info = self.app_info(app_id.as_str())?;
        let old = &info.manifest;
        if *old == manifest {
            let mut store = lock(&self.inner.store);
            let plan = store.plan_confirm_app(info.app_uuid)?;
            self.execute(&mut store, &plan)?;
            return Ok((info, false));
        }
        let only_additions = old.tier == manifest.tier
            && old.policy == manifest.policy
            && old.dbs.iter().all(|d| manifest.dbs.contains(d));
        let affected = if only_additions { Vec::new() } else { self.keys_of(&info) };
        let _out_of_service = self.inner.broker.retire(affected)?;
        // The limits are checked against what the files hold now (and the removed ones'
        // bytes are known to GC's summary).
        self.refresh_live_sizes(info.app_uuid);
        let added: Vec<DbName> =
            manifest.dbs.iter().filter(|d| old.db(&d.name).is_none()).map(|d| d.name.clone()).collect();
        let awaiting_gc = {
            let store = lock(&self.inner.store);
            let retired = store.retired();
            added
                .iter()
                .any(|name| retired.iter().any(|(root, _)| *root == layout::db_dir(info.app_uuid, name)))
        };
        if awaiting_gc {
            // A database of the same name was removed and its files are still there.
            self.gc()?;
        }
        let mut store = lock(&self.inner.store);
        // What was taken out of service was chosen from `info`: the record must be the same.
        if store.app(info.app_uuid).map(|r| &r.manifest) != Some(&info.manifest) {
            return Err(Error::new(
                ErrorCode::Busy,
                format!("app {:?} changed while this update started; retry", app_id.as_str()),
            ));
        }
        let now = self.inner.clock.now_ms();
        let files: Vec<Uuid> = {
            let mut uuids = lock(&self.inner.uuids);
            added.iter().map(|_| uuids.next(now)).collect()
        };
        let plan = store.plan_update_app(info.app_uuid, manifest, &files, now)?;
        self.execute(&mut store, &plan)?;
        let record = store.app(info.app_uuid).ok_or_else(|| Error::internal("updated app missing"))?;
        Ok((AppInfo::from(record), true))
    }

    /// Unregisters an app: it is gone on return (durably), its databases refuse every
    /// request, and its files (databases, snapshots, exports) leave through the next GC.
    /// Backups outside the app's directory stay. Export first what must be kept.
    ///
    /// `NotFound` for an unknown app; `Busy`, with nothing changed, while one of its
    /// databases is in use (every handle on them must be dropped first).
    pub fn unregister_app(&self, app_id: &str) -> Result<()> {
        self.app_operation(
            "unregister_app",
            app_id,
            || self.unregister_app_inner(app_id),
            |()| Some(json!({})),
        )
    }

    fn unregister_app_inner(&self, app_id: &str) -> Result<()> {
        let info = self.app_info(app_id)?;
        let _out_of_service = self.inner.broker.retire(self.keys_of(&info))?;
        self.refresh_live_sizes(info.app_uuid);
        let mut store = lock(&self.inner.store);
        let plan = store.plan_unregister_app(info.app_uuid)?;
        self.execute(&mut store, &plan)?;
        drop(store);
        self.inner.broker.forget_app(info.app_uuid);
        Ok(())
    }

    fn keys_of(&self, info: &AppInfo) -> Vec<DbKey> {
        info.manifest.dbs.iter().map(|d| DbKey { app: info.app_uuid, db: d.name.clone() }).collect()
    }
}
