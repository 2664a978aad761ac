//! Migrations: validated, rolled back whole on a failed step, recorded; the engine's own
//! tables; the table-rebuild procedure.

use super::*;

fn five_steps(bad_step: Option<usize>) -> MigrationPlan {
    let ups = [
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT)",
        "ALTER TABLE notes ADD COLUMN tag_id INTEGER REFERENCES tags(id)",
        "CREATE INDEX idx_notes_tag ON notes(tag_id)",
        "INSERT INTO tags(name) VALUES ('inbox')",
        "CREATE TABLE archive (id INTEGER PRIMARY KEY)",
    ];
    let downs = [
        "DROP TABLE tags",
        "ALTER TABLE notes DROP COLUMN tag_id",
        "DROP INDEX idx_notes_tag",
        "DELETE FROM tags",
        "DROP TABLE archive",
    ];
    let steps = (0..5)
        .map(|i| MigrationStep {
            from: i as u64,
            to: i as u64 + 1,
            up: if Some(i) == bad_step { "CREATE TABLE broken (".to_string() } else { ups[i].to_string() },
            down: downs[i].to_string(),
        })
        .collect();
    MigrationPlan { current_version: 5, steps }
}

fn tables(db: &Database) -> Vec<Value> {
    db.query("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name", &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

#[test]
fn migrations_validate_roll_back_and_record() {
    let (_d, ws, db) = setup("migrate");
    insert(&db, 3);
    let before = tables(&db);
    let snaps_before = db.snapshots().unwrap().len();
    // Broken chains are refused before anything is touched (not even a snapshot).
    let mut gap = five_steps(None);
    gap.steps.remove(2);
    let mut dup = five_steps(None);
    dup.steps.push(MigrationStep { from: 1, to: 2, up: "SELECT 1".into(), down: "".into() });
    let mut cycle = five_steps(None);
    cycle.steps.push(MigrationStep { from: 7, to: 6, up: "SELECT 1".into(), down: "".into() });
    for (name, plan, word) in
        [("gap", gap, "gap"), ("duplicate", dup, "duplicate"), ("cycle", cycle, "cycle")]
    {
        let e = db.migrate(&plan, false).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MigrationFailed, "{name}");
        assert!(e.message().contains(word), "{name}: {e}");
    }
    assert_eq!(db.snapshots().unwrap().len(), snaps_before);

    // Failing SQL in step 3 of 5: everything rolls back, the error names the step.
    let e = db.migrate(&five_steps(Some(2)), false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed);
    assert!(e.message().contains("step 3 of 5 (2→3)") && e.message().contains("incomplete input"), "{e}");
    assert_eq!(tables(&db), before);
    assert_eq!(db.schema_version().unwrap(), 0);

    // A dry run reports and changes nothing.
    let report = db.migrate(&five_steps(None), true).unwrap();
    assert!(report.dry_run && report.applied.len() == 5);
    assert_eq!(tables(&db), before);
    assert_eq!(db.schema_version().unwrap(), 0);

    // The real run: auto-snapshot, all steps, recorded.
    let report = db.migrate(&five_steps(None), false).unwrap();
    assert_eq!((report.from, report.to), (0, 5));
    assert!(report.snapshot.is_some());
    assert_eq!(db.schema_version().unwrap(), 5);
    assert_eq!(count(&db), 3);
    let history =
        db.query("SELECT version, direction, checksum FROM _sila_meta ORDER BY rowid", &[]).unwrap();
    assert_eq!(history.rows.len(), 5);

    // A step edited after it was applied is detected.
    let mut edited = five_steps(None);
    edited.steps[0].up = "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL)".into();
    let e = db.migrate(&edited, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed);
    assert!(e.message().contains("edited after it was applied"), "{e}");

    // Downgrade through the down steps.
    let mut down = five_steps(None);
    down.current_version = 3;
    let report = db.migrate(&down, false).unwrap();
    assert_eq!(report.applied, vec![(5, 4), (4, 3)]);
    assert_eq!(db.schema_version().unwrap(), 3);
    assert!(!tables(&db).contains(&Value::Text("archive".into())));
    let _ = ws;
}

#[test]
fn a_migration_that_violates_a_foreign_key_is_rolled_back() {
    let (_d, _ws, db) = setup("fk");
    insert(&db, 1);
    let plan = MigrationPlan {
        current_version: 2,
        steps: vec![
            MigrationStep {
                from: 0,
                to: 1,
                up: "CREATE TABLE parent (id INTEGER PRIMARY KEY)".into(),
                down: "".into(),
            },
            MigrationStep {
                from: 1,
                to: 2,
                up: "CREATE TABLE child (p INTEGER REFERENCES parent(id)); INSERT INTO child VALUES (99)"
                    .into(),
                down: "".into(),
            },
        ],
    };
    let e = db.migrate(&plan, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert!(e.message().contains("FOREIGN KEY") || e.message().contains("foreign key"), "{e}");
    assert_eq!(db.schema_version().unwrap(), 0);
    assert!(!tables(&db).contains(&Value::Text("parent".into())));
}

#[test]
fn plan_json_has_the_sdk_shape() {
    let plan = MigrationPlan::from_json(
        r#"{"currentVersion":2,"steps":[{"from":0,"to":1,"up":"CREATE TABLE a(x)","down":"DROP TABLE a"},{"from":1,"to":2,"up":"CREATE INDEX i ON a(x)","down":"DROP INDEX i"}]}"#,
    )
    .unwrap();
    assert_eq!(plan.current_version, 2);
    assert_eq!(plan.steps[1].down, "DROP INDEX i");
    assert_eq!(MigrationPlan::from_json("{}").unwrap_err().code(), ErrorCode::InvalidArgument);
}

/// The engine's tables are the engine's (issue 15, item 8): an app reads `_sila_meta` but
/// cannot write, alter, drop, index or trigger it, in any case of its name, through exec, a
/// transaction, a migration step or a trigger of its own; the engine's migrations still record
/// themselves there.
#[test]
fn apps_read_the_engine_tables_but_never_change_them() {
    let (_d, _ws, db) = setup("reserved");
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep {
            from: 0,
            to: 1,
            up: "CREATE TABLE tags (x)".into(),
            down: "DROP TABLE tags".into(),
        }],
    };
    db.migrate(&plan, false).unwrap();
    let meta = || db.query("SELECT version, direction FROM _sila_meta", &[]).unwrap().rows;
    assert_eq!(meta(), vec![vec![Value::Integer(1), Value::Text("up".into())]], "reading is allowed");
    for sql in [
        "INSERT INTO _sila_meta (version, applied_at, step_from, step_to, direction, checksum) VALUES (9, 0, 0, 9, 'up', 'x')",
        "UPDATE _sila_meta SET version = 9",
        "DELETE FROM _sila_meta",
        "DROP TABLE _sila_meta",
        "ALTER TABLE _sila_meta ADD COLUMN y",
        "ALTER TABLE _sila_meta RENAME TO mine",
        "CREATE INDEX i ON _sila_meta(version)",
        "CREATE TRIGGER tr AFTER INSERT ON _sila_meta BEGIN SELECT 1; END",
        "UPDATE _SILA_META SET version = 9",
        "CREATE TABLE _sila_other (x)",
        "CREATE VIEW _sila_view AS SELECT 1",
    ] {
        let e = db.exec(sql, &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PolicyDenied, "{sql}: {e}");
        assert!(e.message().contains("belongs to the engine"), "{sql}: {e}");
        let e = db.transaction(|tx| tx.exec(sql, &[])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PolicyDenied, "{sql} in a transaction: {e}");
    }
    // A trigger of the app's own that would write the engine's table cannot fire.
    db.exec("CREATE TRIGGER sneaky AFTER INSERT ON notes BEGIN DELETE FROM _sila_meta; END", &[]).ok();
    let e = db.exec("INSERT INTO notes(body) VALUES ('x')", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e}");
    db.exec("DROP TRIGGER IF EXISTS sneaky", &[]).unwrap();
    // A migration step that writes it fails as a migration, and changes nothing.
    let bad = MigrationPlan {
        current_version: 2,
        steps: vec![
            plan.steps[0].clone(),
            MigrationStep { from: 1, to: 2, up: "DELETE FROM _sila_meta".into(), down: String::new() },
        ],
    };
    let e = db.migrate(&bad, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert_eq!(meta(), vec![vec![Value::Integer(1), Value::Text("up".into())]]);
    assert_eq!(db.schema_version().unwrap(), 1);
}

/// SQLite's table-rebuild procedure (foreign keys off, new table, copy, drop, rename) works as
/// a migration step: its children survive the DROP instead of cascading away, a step that
/// leaves a violation fails the migration, and foreign keys are enforced again afterwards.
/// Outside a migration, turning foreign keys off (which SQLite would silently ignore inside
/// the request's transaction) is refused; setting them on, as they are, succeeds.
#[test]
fn the_table_rebuild_procedure_works_in_a_migration_and_nowhere_else() {
    let (_d, _ws, db) = setup("rebuild");
    let schema = [
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE)",
        "INSERT INTO parent(id) VALUES (1), (2)",
        "INSERT INTO child(id, pid) VALUES (10, 1), (20, 2)",
    ];
    for sql in schema {
        db.exec(sql, &[]).unwrap();
    }
    let e = db.exec("PRAGMA foreign_keys = OFF", &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e}");
    assert!(e.message().contains("migration"), "{e}");
    db.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    let rebuild = "PRAGMA foreign_keys=OFF;
        CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO parent_new(id) SELECT id FROM parent;
        DROP TABLE parent;
        ALTER TABLE parent_new RENAME TO parent;
        PRAGMA foreign_key_check;
        PRAGMA foreign_keys=ON;";
    let plan = MigrationPlan {
        current_version: 1,
        steps: vec![MigrationStep { from: 0, to: 1, up: rebuild.into(), down: String::new() }],
    };
    db.migrate(&plan, true).unwrap();
    db.migrate(&plan, false).unwrap();
    let children = db.query_value("SELECT count(*) FROM child", &[]).unwrap();
    assert_eq!(children, Some(Value::Integer(2)), "the DROP of the rebuild cascaded");
    assert_eq!(db.query("SELECT name FROM parent", &[]).unwrap().rows.len(), 2);
    // Foreign keys are on again.
    let e = db.exec("INSERT INTO child(id, pid) VALUES (30, 99)", &[]).unwrap_err();
    assert_eq!(e.sqlite_code(), Some(787), "{e}");
    // A step that leaves a violation fails the migration and changes nothing.
    let orphaning = MigrationPlan {
        current_version: 2,
        steps: vec![
            plan.steps[0].clone(),
            MigrationStep {
                from: 1,
                to: 2,
                up: "DELETE FROM parent WHERE id = 1".into(),
                down: String::new(),
            },
        ],
    };
    let e = db.migrate(&orphaning, false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MigrationFailed, "{e}");
    assert!(e.message().contains("foreign key violation"), "{e}");
    assert_eq!(db.query_value("SELECT count(*) FROM parent", &[]).unwrap(), Some(Value::Integer(2)));
    assert_eq!(db.schema_version().unwrap(), 1);
}
