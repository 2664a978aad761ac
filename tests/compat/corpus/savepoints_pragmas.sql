-- Compatibility corpus: savepoints (balanced within each case) and the
-- allowed PRAGMAs.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: savepoint-basic
CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT);
SAVEPOINT a;
INSERT INTO item (name) VALUES ('one');
SAVEPOINT b;
INSERT INTO item (name) VALUES ('two');
ROLLBACK TO b;
INSERT INTO item (name) VALUES ('three');
RELEASE b;
SELECT id, name FROM item ORDER BY id;
ROLLBACK TO a;
SELECT count(*) FROM item;
INSERT INTO item (name) VALUES ('four');
RELEASE a;
SELECT id, name FROM item ORDER BY id;
-- error: no such savepoint
RELEASE no_such_sp;
-- error: no such savepoint
ROLLBACK TO no_such_sp;

-- case: savepoint-nested-with-errors
CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL CHECK (amount <> 0));
SAVEPOINT outer_sp;
INSERT INTO ledger (amount) VALUES (10);
SAVEPOINT inner_sp;
-- error: CHECK; only this statement is undone, the savepoints stay open
INSERT INTO ledger (amount) VALUES (0);
INSERT INTO ledger (amount) VALUES (20);
SAVEPOINT innermost;
UPDATE ledger SET amount = amount * 2;
SELECT id, amount FROM ledger ORDER BY id;
ROLLBACK TO inner_sp;
SELECT id, amount FROM ledger ORDER BY id;
-- error: innermost was cancelled by ROLLBACK TO inner_sp
RELEASE innermost;
RELEASE inner_sp;
RELEASE outer_sp;
SELECT id, amount FROM ledger ORDER BY id;

-- case: savepoint-same-name-shadowing
CREATE TABLE t (x INTEGER);
SAVEPOINT s;
INSERT INTO t VALUES (1);
SAVEPOINT s;
INSERT INTO t VALUES (2);
RELEASE s;
INSERT INTO t VALUES (3);
SELECT x FROM t ORDER BY x;
ROLLBACK TO s;
INSERT INTO t VALUES (4);
RELEASE s;
SELECT x FROM t ORDER BY x;

-- case: savepoint-schema-changes
SAVEPOINT migrate;
CREATE TABLE widget (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE INDEX widget_name ON widget(name);
INSERT INTO widget (name) VALUES ('a'), ('b');
SAVEPOINT step2;
ALTER TABLE widget ADD COLUMN color TEXT DEFAULT 'red';
DROP INDEX widget_name;
ROLLBACK TO step2;
RELEASE step2;
RELEASE migrate;
PRAGMA table_info(widget);
PRAGMA index_list(widget);
SELECT id, name FROM widget ORDER BY id;
SAVEPOINT undo_all;
DROP TABLE widget;
ROLLBACK TO undo_all;
RELEASE undo_all;
SELECT count(*) FROM widget;

-- case: savepoint-changes-and-rowids
CREATE TABLE ev (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT);
INSERT INTO ev (kind) VALUES ('a'), ('b');
SAVEPOINT sp;
INSERT INTO ev (kind) VALUES ('c'), ('d'), ('e');
DELETE FROM ev WHERE kind IN ('a', 'c');
ROLLBACK TO sp;
INSERT INTO ev (kind) VALUES ('f');
RELEASE sp;
SELECT id, kind FROM ev ORDER BY id;
SELECT name, seq FROM sqlite_sequence ORDER BY name;

-- case: pragma-user-version-application-id
PRAGMA user_version;
PRAGMA user_version = 7;
PRAGMA user_version;
PRAGMA user_version = 2147483647;
PRAGMA user_version;
PRAGMA user_version = -1;
PRAGMA user_version;
PRAGMA application_id;
PRAGMA application_id = 1095980116;
PRAGMA application_id;
SAVEPOINT v;
PRAGMA user_version = 8;
ROLLBACK TO v;
RELEASE v;
PRAGMA user_version;

-- case: pragma-table-introspection
CREATE TABLE thing (
  id INTEGER PRIMARY KEY,
  code TEXT NOT NULL COLLATE NOCASE,
  qty INTEGER DEFAULT 1,
  note TEXT,
  g INTEGER AS (qty * 2),
  UNIQUE (code, qty)
);
CREATE INDEX thing_note ON thing(note DESC) WHERE note IS NOT NULL;
CREATE INDEX thing_expr ON thing(lower(code), qty);
PRAGMA table_info(thing);
PRAGMA table_xinfo(thing);
PRAGMA index_list(thing);
PRAGMA index_info(sqlite_autoindex_thing_1);
PRAGMA index_xinfo(sqlite_autoindex_thing_1);
PRAGMA index_xinfo(thing_note);
PRAGMA index_xinfo(thing_expr);
PRAGMA table_info(nonexistent);
PRAGMA table_list(thing);
CREATE TABLE strictly (a INT PRIMARY KEY, b TEXT) STRICT, WITHOUT ROWID;
PRAGMA table_list(strictly);
CREATE VIEW thing_v AS SELECT id, code FROM thing;
PRAGMA table_list(thing_v);
PRAGMA table_info(thing_v);
SELECT name, type, ncol, wr, strict FROM pragma_table_list
WHERE schema = 'main' AND name IN ('thing', 'strictly', 'thing_v') ORDER BY name;
SELECT name, type, pk FROM pragma_table_info('thing') ORDER BY cid;

-- case: pragma-integrity-and-fk
CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
CREATE INDEX a_v ON a(v);
CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id));
INSERT INTO a (v) VALUES ('x'), ('y'), ('z');
INSERT INTO b (a_id) VALUES (1), (3);
PRAGMA integrity_check;
PRAGMA quick_check;
PRAGMA integrity_check(a);
PRAGMA foreign_keys;
PRAGMA foreign_keys = ON;
PRAGMA foreign_keys;
PRAGMA defer_foreign_keys;
PRAGMA foreign_key_check;
PRAGMA foreign_key_check(b);
PRAGMA foreign_key_list(b);
-- error: FOREIGN KEY
DELETE FROM a WHERE id = 3;
-- error: no such table in foreign_key_check
PRAGMA foreign_key_check(nope);

-- case: pragma-environment
-- These read settings that an embedding engine may legitimately choose
-- differently (journal mode, page size); kept apart so they are easy to skip.
PRAGMA page_size;
PRAGMA journal_mode;
PRAGMA journal_mode = WAL;
PRAGMA journal_mode;
