//! Capability manifests: what an app may have, validated strictly.
//!
//! The host passes the sqlite part of a sub-app's manifest:
//!
//! ```json
//! {"capabilities":{"sqlite":{"enabled":true,
//!   "dbs":[{"name":"analytics","maxSizeMB":256,"readOnly":false}],
//!   "tier":"standard"}}}
//! ```
//!
//! Validation is strict: unknown keys, wrong types, duplicate names, sizes of 0 or above the
//! tier's cap, more databases than the tier allows and `enabled:false` are refused with
//! [`ErrorCode::InvalidManifest`], and the message names the field (`capabilities.sqlite.dbs[1].maxSizeMB`).
//! Optional fields: `tier` (default `standard`), per database `maxSizeMB` (default: the
//! tier's default) and `readOnly` (default `false`), and `policy`, which relaxes a documented
//! subset of the SQL security policy for this app (see [`PolicyRelaxations`]; nothing in it
//! reaches the confinement of files):
//!
//! ```json
//! {"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],
//!   "policy":{"tempObjects":true,"recursiveTriggers":true}}}}
//! ```

use crate::names::DbName;
use crate::{Error, ErrorCode, Result};
use serde_json::{Map, Value};

/// One mebibyte; `maxSizeMB` counts these.
pub const MIB: u64 = 1024 * 1024;

/// Longest manifest text accepted, in bytes.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024;

/// A service tier: sets caps and durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Small apps: one 64 MB database, `synchronous=NORMAL`.
    Basic,
    /// The default: three databases of up to 256 MB, `synchronous=NORMAL`.
    Standard,
    /// Durable: eight databases of up to 1024 MB, `synchronous=FULL`.
    Premium,
}

/// The caps a tier sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    /// Largest `maxSizeMB` a database may ask for.
    pub db_size_mb_max: u64,
    /// `maxSizeMB` when the manifest does not say.
    pub db_size_mb_default: u64,
    /// Most databases an app may declare.
    pub dbs_max: usize,
    /// Whether commits use `synchronous=FULL` (every acknowledged commit survives power loss)
    /// rather than `NORMAL` (a crash may lose the last commits, never consistency).
    pub synchronous_full: bool,
    /// Cap on SQLite's page cache per connection, in KiB.
    pub cache_size_kib_max: u32,
    /// The app's storage quota is this many times the sum of its databases' `maxSizeMB`:
    /// room for the live files, snapshots and the copy an operation has in flight.
    pub storage_factor: u64,
    /// After a commit, a WAL larger than this is checkpointed (PASSIVE), in KiB: small
    /// databases fold sooner, so their WAL stays a small share of their quota.
    /// `BrokerOptions::wal_checkpoint_bytes` caps it for every tier.
    pub wal_checkpoint_kib: u64,
}

impl Tier {
    /// Every tier.
    pub const ALL: [Tier; 3] = [Tier::Basic, Tier::Standard, Tier::Premium];

    /// The manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Basic => "basic",
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }

    /// Parses the manifest spelling.
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tier's caps.
    pub fn limits(self) -> TierLimits {
        match self {
            Tier::Basic => TierLimits {
                db_size_mb_max: 64,
                db_size_mb_default: 64,
                dbs_max: 1,
                synchronous_full: false,
                cache_size_kib_max: 2 * 1024,
                storage_factor: 3,
                wal_checkpoint_kib: 1024,
            },
            Tier::Standard => TierLimits {
                db_size_mb_max: 256,
                db_size_mb_default: 256,
                dbs_max: 3,
                synchronous_full: false,
                cache_size_kib_max: 8 * 1024,
                storage_factor: 3,
                wal_checkpoint_kib: 4 * 1024,
            },
            Tier::Premium => TierLimits {
                db_size_mb_max: 1024,
                db_size_mb_default: 256,
                dbs_max: 8,
                synchronous_full: true,
                cache_size_kib_max: 32 * 1024,
                storage_factor: 4,
                wal_checkpoint_kib: 4 * 1024,
            },
        }
    }
}

/// One database an app may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSpec {
    /// Its name.
    pub name: DbName,
    /// The most bytes the live database file may hold.
    pub max_size_bytes: u64,
    /// Whether the app may only read it.
    pub read_only: bool,
    /// `incrementalVacuum`: the file is kept in SQLite's incremental auto-vacuum mode, and
    /// upkeep ([`crate::Workspace::maintain`]) gives the free pages deletes leave back to the
    /// quota a step at a time, without the copy a compaction makes. A database made before
    /// it was asked for takes the mode at its next compaction.
    pub incremental_vacuum: bool,
}

/// The part of the SQL security policy ([`crate::sqlite::policy`]) a manifest may relax.
/// Everything defaults to the strict policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyRelaxations {
    /// `tempObjects`: allow CREATE TEMP tables, indexes, views and triggers. They live on one
    /// pooled connection: visible only to later statements that happen to run there (within
    /// one transaction they are reliable), and their memory is outside the quota.
    pub temp_objects: bool,
    /// `recursiveTriggers`: allow `PRAGMA recursive_triggers=ON` (trigger nesting stays bounded
    /// by `SQLITE_LIMIT_TRIGGER_DEPTH`). The setting sticks to the connection that ran it.
    pub recursive_triggers: bool,
}

impl PolicyRelaxations {
    const KEYS: [&'static str; 2] = ["tempObjects", "recursiveTriggers"];

    fn parse(v: &Value, field: &str) -> Result<PolicyRelaxations> {
        let obj = object(v, field)?;
        only_keys(obj, field, &Self::KEYS)?;
        let flag = |key: &str| obj.get(key).map(|v| boolean(v, &join(field, key))).transpose();
        Ok(PolicyRelaxations {
            temp_objects: flag("tempObjects")?.unwrap_or(false),
            recursive_triggers: flag("recursiveTriggers")?.unwrap_or(false),
        })
    }

    fn to_json(self) -> Value {
        serde_json::json!({"tempObjects": self.temp_objects, "recursiveTriggers": self.recursive_triggers})
    }
}

/// A validated sqlite capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The tier.
    pub tier: Tier,
    /// The databases, in manifest order.
    pub dbs: Vec<DbSpec>,
    /// Relaxations of the SQL security policy (default: none).
    pub policy: PolicyRelaxations,
}

fn err(field: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::InvalidManifest, format!("{field}: {why}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| err(field, format!("expected an object, got {}", type_name(v))))
}

fn only_keys(map: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<()> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let path = if field.is_empty() { key.clone() } else { format!("{field}.{key}") };
            return Err(err(&path, format!("unknown key (allowed: {})", allowed.join(", "))));
        }
    }
    Ok(())
}

fn required<'a>(map: &'a Map<String, Value>, field: &str, key: &str) -> Result<&'a Value> {
    map.get(key).ok_or_else(|| err(&join(field, key), "is required"))
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_string()
    } else {
        format!("{field}.{key}")
    }
}

fn boolean(v: &Value, field: &str) -> Result<bool> {
    v.as_bool().ok_or_else(|| err(field, format!("expected a boolean, got {}", type_name(v))))
}

impl Manifest {
    /// Parses and validates manifest JSON text.
    pub fn parse(text: &str) -> Result<Manifest> {
        if text.len() > MANIFEST_BYTES_MAX {
            return Err(err(
                "manifest",
                format!("is {} bytes, the limit is {MANIFEST_BYTES_MAX}", text.len()),
            ));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| err("manifest", format!("invalid JSON: {e}")))?;
        Manifest::from_value(&value)
    }

    /// Validates an already-parsed manifest.
    pub fn from_value(root: &Value) -> Result<Manifest> {
        let top = object(root, "manifest")?;
        only_keys(top, "", &["capabilities"])?;
        let caps = object(required(top, "", "capabilities")?, "capabilities")?;
        only_keys(caps, "capabilities", &["sqlite"])?;
        let field = "capabilities.sqlite";
        let sqlite = object(required(caps, "capabilities", "sqlite")?, field)?;
        only_keys(sqlite, field, &["enabled", "dbs", "tier", "policy"])?;

        let enabled = boolean(required(sqlite, field, "enabled")?, &join(field, "enabled"))?;
        if !enabled {
            return Err(err(&join(field, "enabled"), "is false: the app has no sqlite capability"));
        }
        let tier = match sqlite.get("tier") {
            None => Tier::Standard,
            Some(v) => {
                let name = v.as_str().ok_or_else(|| {
                    err(&join(field, "tier"), format!("expected a string, got {}", type_name(v)))
                })?;
                Tier::from_name(name).ok_or_else(|| {
                    err(
                        &join(field, "tier"),
                        format!("unknown tier {name:?} (known: basic, standard, premium)"),
                    )
                })?
            }
        };
        let limits = tier.limits();
        let dbs_field = join(field, "dbs");
        let dbs_value = required(sqlite, field, "dbs")?;
        let dbs_array = dbs_value
            .as_array()
            .ok_or_else(|| err(&dbs_field, format!("expected an array, got {}", type_name(dbs_value))))?;
        if dbs_array.is_empty() {
            return Err(err(&dbs_field, "must list at least one database"));
        }
        if dbs_array.len() > limits.dbs_max {
            return Err(err(
                &dbs_field,
                format!(
                    "lists {} databases, tier {:?} allows {}",
                    dbs_array.len(),
                    tier.name(),
                    limits.dbs_max
                ),
            ));
        }
        let mut dbs: Vec<DbSpec> = Vec::with_capacity(dbs_array.len());
        for (i, entry) in dbs_array.iter().enumerate() {
            let f = format!("{dbs_field}[{i}]");
            let spec = parse_db(entry, &f, tier, &limits)?;
            if dbs.iter().any(|d| d.name == spec.name) {
                return Err(err(
                    &join(&f, "name"),
                    format!("duplicate database name {:?}", spec.name.as_str()),
                ));
            }
            dbs.push(spec);
        }
        let policy = match sqlite.get("policy") {
            None => PolicyRelaxations::default(),
            Some(v) => PolicyRelaxations::parse(v, &join(field, "policy"))?,
        };
        Ok(Manifest { tier, dbs, policy })
    }

    /// The canonical JSON form (every default filled in), as stored in the app record.
    pub fn to_json(&self) -> Value {
        let dbs: Vec<Value> = self
            .dbs
            .iter()
            .map(|d| {
                let mut db = serde_json::json!({
                    "name": d.name.as_str(),
                    "maxSizeMB": d.max_size_bytes / MIB,
                    "readOnly": d.read_only,
                });
                // Written only when asked for, so the canonical form of other manifests is
                // unchanged.
                if let (true, Some(map)) = (d.incremental_vacuum, db.as_object_mut()) {
                    map.insert("incrementalVacuum".into(), Value::Bool(true));
                }
                db
            })
            .collect();
        let mut sqlite = serde_json::json!({"enabled": true, "dbs": dbs, "tier": self.tier.name()});
        // Written only when relaxed, so the canonical form of a strict manifest is unchanged.
        if self.policy != PolicyRelaxations::default() {
            if let Some(map) = sqlite.as_object_mut() {
                map.insert("policy".to_string(), self.policy.to_json());
            }
        }
        serde_json::json!({"capabilities": {"sqlite": sqlite}})
    }

    /// The database spec by name.
    pub fn db(&self, name: &DbName) -> Option<&DbSpec> {
        self.dbs.iter().find(|d| &d.name == name)
    }

    /// The app's total storage quota in bytes: live files, snapshots and in-flight copies.
    pub fn storage_quota_bytes(&self) -> u64 {
        let sum: u64 = self.dbs.iter().map(|d| d.max_size_bytes).sum();
        sum.saturating_mul(self.tier.limits().storage_factor)
    }
}

fn parse_db(entry: &Value, f: &str, tier: Tier, limits: &TierLimits) -> Result<DbSpec> {
    let obj = object(entry, f)?;
    only_keys(obj, f, &["name", "maxSizeMB", "readOnly", "incrementalVacuum"])?;
    let name_v = required(obj, f, "name")?;
    let name_s = name_v
        .as_str()
        .ok_or_else(|| err(&join(f, "name"), format!("expected a string, got {}", type_name(name_v))))?;
    let name = DbName::new(name_s).map_err(|e| err(&join(f, "name"), e.message()))?;
    let size_mb = match obj.get("maxSizeMB") {
        None => limits.db_size_mb_default,
        Some(v) => {
            let n = v.as_u64().ok_or_else(|| {
                err(&join(f, "maxSizeMB"), format!("expected a whole number of MB, got {}", v))
            })?;
            if n == 0 || n > limits.db_size_mb_max {
                return Err(err(
                    &join(f, "maxSizeMB"),
                    format!(
                        "must be between 1 and {} for tier {:?}, got {n}",
                        limits.db_size_mb_max,
                        tier.name()
                    ),
                ));
            }
            n
        }
    };
    let read_only = match obj.get("readOnly") {
        None => false,
        Some(v) => boolean(v, &join(f, "readOnly"))?,
    };
    let incremental_vacuum = match obj.get("incrementalVacuum") {
        None => false,
        Some(v) => boolean(v, &join(f, "incrementalVacuum"))?,
    };
    Ok(DbSpec { name, max_size_bytes: size_mb * MIB, read_only, incremental_vacuum })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics","maxSizeMB":256,"readOnly":false}],"tier":"standard"}}}"#;

    fn refusal(text: &str) -> String {
        match Manifest::parse(text) {
            Ok(m) => panic!("accepted {text}: {m:?}"),
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::InvalidManifest, "{e}");
                e.message().to_string()
            }
        }
    }

    #[test]
    fn parses_the_spec_example_and_fills_defaults() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.tier, Tier::Standard);
        assert_eq!(m.dbs.len(), 1);
        assert_eq!(m.dbs[0].max_size_bytes, 256 * MIB);
        let m =
            Manifest::parse(r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}]}}}"#).unwrap();
        assert_eq!(m.tier, Tier::Standard);
        assert_eq!(m.dbs[0].max_size_bytes, 256 * MIB);
        assert!(!m.dbs[0].read_only);
        assert!(!m.dbs[0].incremental_vacuum);
        let text =
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","incrementalVacuum":true}]}}}"#;
        let m = Manifest::parse(text).unwrap();
        assert!(m.dbs[0].incremental_vacuum);
        assert_eq!(Manifest::from_value(&m.to_json()).unwrap(), m, "round-trips");
        // The canonical form round-trips.
        let again = Manifest::from_value(&m.to_json()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn each_refusal_names_the_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "manifest: invalid JSON"),
            ("[]", "manifest: expected an object"),
            (r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}]}},"x":1}"#, "x: unknown key"),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"extra":1}}}"#,
                "capabilities.sqlite.extra: unknown key",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","size":1}]}}}"#,
                "capabilities.sqlite.dbs[0].size: unknown key",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":"yes","dbs":[{"name":"a"}]}}}"#,
                "capabilities.sqlite.enabled: expected a boolean",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":false,"dbs":[{"name":"a"}]}}}"#,
                "capabilities.sqlite.enabled: is false",
            ),
            (
                r#"{"capabilities":{"sqlite":{"dbs":[{"name":"a"}]}}}"#,
                "capabilities.sqlite.enabled: is required",
            ),
            (r#"{"capabilities":{"sqlite":{"enabled":true}}}"#, "capabilities.sqlite.dbs: is required"),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":{}}}}"#,
                "capabilities.sqlite.dbs: expected an array",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[]}}}"#,
                "capabilities.sqlite.dbs: must list",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"a"}]}}}"#,
                "capabilities.sqlite.dbs[1].name: duplicate",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":0}]}}}"#,
                "capabilities.sqlite.dbs[0].maxSizeMB: must be between 1 and 256",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":257}]}}}"#,
                "capabilities.sqlite.dbs[0].maxSizeMB: must be between 1 and 256",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":65}],"tier":"basic"}}}"#,
                "must be between 1 and 64",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1.5}]}}}"#,
                "dbs[0].maxSizeMB: expected a whole number",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":"1"}]}}}"#,
                "dbs[0].maxSizeMB: expected a whole number",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","readOnly":1}]}}}"#,
                "dbs[0].readOnly: expected a boolean",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":7}]}}}"#,
                "dbs[0].name: expected a string",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"../x"}]}}}"#,
                "dbs[0].name: invalid database name",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"current"}]}}}"#,
                "dbs[0].name: invalid database name",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"tier":"gold"}}}"#,
                "capabilities.sqlite.tier: unknown tier",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}}}"#,
                "capabilities.sqlite.dbs: lists 4 databases, tier \"standard\" allows 3",
            ),
            (
                r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"b"}],"tier":"basic"}}}"#,
                "allows 1",
            ),
        ];
        for (text, expected) in cases {
            let msg = refusal(text);
            assert!(msg.contains(expected), "for {text}\n  got: {msg}\n  want: {expected}");
        }
    }

    #[test]
    fn boundaries_of_size_and_count() {
        let at_cap = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":256}]}}}"#;
        assert!(Manifest::parse(at_cap).is_ok());
        let one = r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1}]}}}"#;
        assert_eq!(Manifest::parse(one).unwrap().dbs[0].max_size_bytes, MIB);
        let three =
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"},{"name":"b"},{"name":"c"}]}}}"#;
        assert_eq!(Manifest::parse(three).unwrap().dbs.len(), 3);
        let huge = format!("{{\"capabilities\":{{}},\"pad\":\"{}\"}}", "x".repeat(MANIFEST_BYTES_MAX));
        assert!(refusal(&huge).contains("limit"));
    }

    #[test]
    fn policy_relaxations_parse_validate_and_round_trip() {
        let strict = Manifest::parse(GOOD).unwrap();
        assert_eq!(strict.policy, PolicyRelaxations::default());
        assert!(strict.to_json()["capabilities"]["sqlite"].get("policy").is_none(), "strict form unchanged");
        let relaxed = Manifest::parse(
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"policy":{"tempObjects":true}}}}"#,
        )
        .unwrap();
        assert_eq!(relaxed.policy, PolicyRelaxations { temp_objects: true, recursive_triggers: false });
        assert_eq!(Manifest::from_value(&relaxed.to_json()).unwrap(), relaxed);
        assert!(refusal(
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"policy":{"attach":true}}}}"#
        )
        .contains("capabilities.sqlite.policy.attach: unknown key"));
        assert!(refusal(
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a"}],"policy":{"tempObjects":1}}}}"#
        )
        .contains("capabilities.sqlite.policy.tempObjects: expected a boolean"));
    }

    #[test]
    fn premium_is_full_sync_and_quota_scales() {
        let m = Manifest::parse(
            r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"a","maxSizeMB":1024},{"name":"b","maxSizeMB":1}],"tier":"premium"}}}"#,
        )
        .unwrap();
        assert!(m.tier.limits().synchronous_full);
        assert_eq!(m.storage_quota_bytes(), 1025 * MIB * 4);
    }
}
