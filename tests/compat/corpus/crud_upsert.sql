-- Compatibility corpus: INSERT / UPDATE / DELETE / UPSERT / RETURNING.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: insert-forms
CREATE TABLE product (
  id INTEGER PRIMARY KEY,
  sku TEXT UNIQUE NOT NULL,
  name TEXT,
  price INTEGER DEFAULT 0,
  active INTEGER NOT NULL DEFAULT 1
);
INSERT INTO product (sku, name, price) VALUES ('A1', 'Apple', 120), ('B2', 'Banana', 45), ('C3', 'Cherry', 300);
INSERT INTO product (sku) VALUES ('D4');
INSERT INTO product VALUES (100, 'E5', 'Elder', 10, 0);
INSERT INTO product (sku, name) VALUES ('F6', 'Fig');
INSERT INTO product (name, sku) VALUES ('Grape', 'G7');
-- error: NOT NULL (DEFAULT VALUES leaves sku NULL)
INSERT INTO product DEFAULT VALUES;
-- error: UNIQUE sku
INSERT INTO product (sku, name) VALUES ('A1', 'dup');
-- error: PRIMARY KEY (rowid) conflict
INSERT INTO product (id, sku) VALUES (100, 'H8');
-- error: datatype mismatch for INTEGER PRIMARY KEY
INSERT INTO product (id, sku) VALUES ('abc', 'H8');
-- error: 3 columns but 2 values
INSERT INTO product (sku, name, price) VALUES ('H8', 'x');
INSERT INTO product (id, sku) VALUES ('200', 'H8');
SELECT id, sku, name, price, active FROM product ORDER BY id;

-- case: default-values
CREATE TABLE hit (id INTEGER PRIMARY KEY, n INTEGER DEFAULT 1, tag TEXT DEFAULT 'none', at TEXT DEFAULT '2024-01-01');
INSERT INTO hit DEFAULT VALUES;
INSERT INTO hit DEFAULT VALUES;
INSERT INTO hit (n) VALUES (NULL);
INSERT INTO hit (tag, at) VALUES ('manual', NULL);
SELECT id, n, tag, at FROM hit ORDER BY id;

-- case: insert-or-conflict-resolution
CREATE TABLE cfg (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1);
INSERT INTO cfg (key, value) VALUES ('theme', 'dark'), ('lang', 'en');
INSERT OR IGNORE INTO cfg (key, value) VALUES ('theme', 'light'), ('tz', 'UTC');
INSERT OR REPLACE INTO cfg (key, value, version) VALUES ('lang', 'fr', 2);
REPLACE INTO cfg (key, value) VALUES ('tz', 'CET');
INSERT OR IGNORE INTO cfg (key, value) VALUES ('x', NULL);
-- error: REPLACE cannot fix NOT NULL without a default
INSERT OR REPLACE INTO cfg (key, value) VALUES ('y', NULL);
-- error: ABORT (the default) on PRIMARY KEY conflict
INSERT OR ABORT INTO cfg (key, value) VALUES ('theme', 'x');
SELECT key, value, version FROM cfg ORDER BY key;
-- error: OR FAIL keeps the rows inserted before the failing one
INSERT OR FAIL INTO cfg (key, value) VALUES ('aa', '1'), ('theme', 'x'), ('zz', '2');
SELECT key, value, version FROM cfg ORDER BY key;

-- case: insert-select
CREATE TABLE src (id INTEGER PRIMARY KEY, grp TEXT, v INTEGER);
INSERT INTO src (grp, v) VALUES ('a', 1), ('a', 2), ('b', 3), ('b', 4), ('c', 5);
CREATE TABLE agg (grp TEXT PRIMARY KEY, total INTEGER, cnt INTEGER);
INSERT INTO agg (grp, total, cnt) SELECT grp, sum(v), count(*) FROM src GROUP BY grp ORDER BY grp;
-- error: UNIQUE conflict from INSERT ... SELECT
INSERT INTO agg SELECT grp, v, 1 FROM src WHERE id = 1;
INSERT INTO src (grp, v) SELECT grp, v * 10 FROM src WHERE v > 3 ORDER BY id;
SELECT id, grp, v FROM src ORDER BY id;
INSERT INTO agg SELECT 'd', 0, 0 WHERE 0;
INSERT INTO agg (grp) VALUES ('e'), ('f');
INSERT INTO agg (grp, total, cnt) VALUES ('g', (SELECT max(v) FROM src), (SELECT count(*) FROM src));
SELECT grp, total, cnt FROM agg ORDER BY grp;

-- case: update-forms
CREATE TABLE emp (id INTEGER PRIMARY KEY, name TEXT NOT NULL, dept TEXT, salary INTEGER CHECK (salary > 0), mgr INTEGER);
INSERT INTO emp VALUES (1, 'Ann', 'eng', 100, NULL), (2, 'Bob', 'eng', 80, 1), (3, 'Cy', 'ops', 70, 1), (4, 'Di', 'ops', 60, 3);
UPDATE emp SET salary = salary + 5 WHERE dept = 'eng';
-- error: CHECK
UPDATE emp SET salary = 0 WHERE id = 4;
-- error: NOT NULL
UPDATE emp SET name = NULL WHERE id = 4;
UPDATE emp SET (dept, mgr) = ('mgmt', NULL) WHERE id = 1;
UPDATE emp SET salary = (SELECT max(salary) FROM emp) WHERE id = 4;
-- error: PRIMARY KEY conflict
UPDATE emp SET id = 2 WHERE id = 3;
UPDATE emp SET salary = salary WHERE 0;
SELECT id, name, dept, salary, mgr FROM emp ORDER BY id;
UPDATE OR IGNORE emp SET id = 1 WHERE id = 2;
UPDATE OR REPLACE emp SET name = 'Dee', id = 3 WHERE id = 4;
UPDATE emp SET name = upper(name), salary = salary * 2 WHERE salary < 90 AND dept IS NOT NULL;
SELECT id, name, dept, salary FROM emp ORDER BY id;

-- case: update-from
CREATE TABLE inventory (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);
CREATE TABLE shipment (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, n INTEGER NOT NULL);
INSERT INTO inventory VALUES ('a', 10), ('b', 5), ('c', 0);
INSERT INTO shipment (sku, n) VALUES ('a', 3), ('a', 2), ('b', 7), ('z', 1);
UPDATE inventory SET qty = qty + s.total
FROM (SELECT sku, sum(n) AS total FROM shipment GROUP BY sku) AS s
WHERE s.sku = inventory.sku;
SELECT sku, qty FROM inventory ORDER BY sku;
UPDATE inventory AS i SET qty = i.qty - sh.n FROM shipment AS sh WHERE sh.sku = i.sku AND sh.id = 3;
SELECT sku, qty FROM inventory ORDER BY sku;
UPDATE inventory SET qty = 0 FROM shipment WHERE shipment.sku = 'nothing';
-- error: ambiguous column name in UPDATE FROM
UPDATE inventory SET qty = 1 FROM shipment WHERE sku = 'a';

-- case: delete-forms
CREATE TABLE log (id INTEGER PRIMARY KEY, level TEXT, msg TEXT);
INSERT INTO log (level, msg) VALUES ('info', 'a'), ('warn', 'b'), ('info', 'c'), ('error', 'd'), ('debug', 'e');
DELETE FROM log WHERE level = 'debug';
DELETE FROM log WHERE id IN (SELECT id FROM log WHERE level = 'info' ORDER BY id LIMIT 1);
DELETE FROM log WHERE msg = 'nothing';
SELECT id, level, msg FROM log ORDER BY id;
DELETE FROM log WHERE NOT EXISTS (SELECT 1 FROM log AS l2 WHERE l2.level = log.level AND l2.id <> log.id);
SELECT id, level, msg FROM log ORDER BY id;
DELETE FROM log;
SELECT count(*) FROM log;
INSERT INTO log (level, msg) VALUES ('info', 'after');
SELECT id, level, msg FROM log ORDER BY id;

-- case: upsert-basic
CREATE TABLE counter (name TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, updated TEXT);
INSERT INTO counter (name, hits, updated) VALUES ('home', 1, 'd1')
  ON CONFLICT (name) DO UPDATE SET hits = hits + excluded.hits, updated = excluded.updated;
INSERT INTO counter (name, hits, updated) VALUES ('home', 1, 'd2')
  ON CONFLICT (name) DO UPDATE SET hits = hits + excluded.hits, updated = excluded.updated;
INSERT INTO counter (name, hits, updated) VALUES ('about', 5, 'd2'), ('home', 3, 'd3')
  ON CONFLICT (name) DO UPDATE SET hits = counter.hits + excluded.hits, updated = excluded.updated;
INSERT INTO counter (name, hits) VALUES ('home', 100) ON CONFLICT DO NOTHING;
INSERT INTO counter (name, hits) VALUES ('home', 100)
  ON CONFLICT (name) DO UPDATE SET hits = excluded.hits WHERE excluded.hits > counter.hits + 1000;
-- error: ON CONFLICT target matches no UNIQUE constraint
INSERT INTO counter (name, hits) VALUES ('home', 1) ON CONFLICT (hits) DO NOTHING;
-- error: NOT NULL raised by the DO UPDATE branch
INSERT INTO counter (name, hits) VALUES ('home', 1) ON CONFLICT (name) DO UPDATE SET hits = NULL;
SELECT name, hits, updated FROM counter ORDER BY name;

-- case: upsert-multi-target
CREATE TABLE member (
  id INTEGER PRIMARY KEY,
  org TEXT NOT NULL,
  email TEXT NOT NULL,
  role TEXT NOT NULL,
  UNIQUE (org, email)
);
INSERT INTO member (org, email, role) VALUES ('acme', 'a@acme', 'admin'), ('acme', 'b@acme', 'user');
-- error: conflict on the primary key, which the ON CONFLICT target does not name
INSERT INTO member (id, org, email, role) VALUES (1, 'x', 'y', 'z')
  ON CONFLICT (org, email) DO UPDATE SET role = excluded.role;
INSERT INTO member (org, email, role) VALUES ('acme', 'b@acme', 'owner')
  ON CONFLICT (org, email) DO UPDATE SET role = excluded.role
  RETURNING id, role;
INSERT INTO member (id, org, email, role) VALUES (1, 'acme', 'a@acme', 'viewer')
  ON CONFLICT (id) DO UPDATE SET role = 'pk-hit'
  ON CONFLICT (org, email) DO UPDATE SET role = 'uk-hit'
  ON CONFLICT DO NOTHING;
INSERT INTO member (org, email, role) SELECT 'beta', email, role FROM member WHERE org = 'acme' ORDER BY id;
INSERT INTO member (org, email, role) SELECT org, email, 'bulk' FROM member WHERE true ORDER BY id
  ON CONFLICT (org, email) DO UPDATE SET role = excluded.role || '-' || member.role;
SELECT id, org, email, role FROM member ORDER BY id;

-- case: upsert-partial-index
CREATE TABLE session (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, active INTEGER NOT NULL, token TEXT);
CREATE UNIQUE INDEX session_one_active ON session(user_id) WHERE active = 1;
INSERT INTO session (user_id, active, token) VALUES (1, 1, 't1'), (1, 0, 'old'), (2, 1, 't2');
INSERT INTO session (user_id, active, token) VALUES (1, 1, 't3')
  ON CONFLICT (user_id) WHERE active = 1 DO UPDATE SET token = excluded.token;
-- error: ON CONFLICT target must repeat the partial index WHERE clause
INSERT INTO session (user_id, active, token) VALUES (2, 1, 't4')
  ON CONFLICT (user_id) DO UPDATE SET token = excluded.token;
SELECT id, user_id, active, token FROM session ORDER BY id;

-- case: returning
CREATE TABLE task (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, pts INTEGER);
INSERT INTO task (title, pts) VALUES ('write', 3), ('test', 5), ('ship', 8)
  RETURNING id, title, pts * 2 AS double_pts;
INSERT INTO task (title) VALUES ('plan') RETURNING *;
UPDATE task SET done = 1 WHERE pts >= 5 RETURNING id AS task_id, upper(title) AS shout, done;
DELETE FROM task WHERE done = 1 RETURNING id, title || '!' AS gone;
-- error: NOT NULL with RETURNING
INSERT INTO task (title) VALUES (NULL) RETURNING id;
UPDATE task SET pts = coalesce(pts, 0) + 1 RETURNING id, pts, typeof(pts);
-- error: no such column in RETURNING
INSERT INTO task (title) VALUES ('x') RETURNING nosuch;
INSERT INTO task (title, pts) SELECT title || '-copy', pts FROM task WHERE id = 1
  RETURNING id, title, (SELECT count(*) FROM task) AS seen;
SELECT id, title, done, pts FROM task ORDER BY id;

-- case: autoincrement-and-rowid
CREATE TABLE seq_test (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT UNIQUE);
INSERT INTO seq_test (v) VALUES ('a'), ('b'), ('c');
DELETE FROM seq_test WHERE v = 'c';
INSERT INTO seq_test (v) VALUES ('d');
REPLACE INTO seq_test (v) VALUES ('a');
SELECT id, v FROM seq_test ORDER BY id;
INSERT INTO seq_test (id, v) VALUES (9223372036854775807, 'max');
-- error: SQLITE_FULL, AUTOINCREMENT cannot go past the largest rowid
INSERT INTO seq_test (v) VALUES ('overflow');
SELECT id, v FROM seq_test ORDER BY id;
SELECT name, seq FROM sqlite_sequence ORDER BY name;
CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO plain (v) VALUES ('one');
INSERT INTO plain (id, v) VALUES (-5, 'neg'), (1000, 'big');
INSERT INTO plain (v) VALUES ('next');
SELECT id, v, rowid, _rowid_, oid FROM plain ORDER BY id;
