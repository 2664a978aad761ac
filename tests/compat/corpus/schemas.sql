-- Compatibility corpus: schema definitions.
-- Column affinities, STRICT, WITHOUT ROWID, generated columns, defaults,
-- CHECK, collations, indexes (unique, partial, expression), views,
-- IF [NOT] EXISTS. Lines starting with "-- error:" mark a statement that is
-- expected to fail (for readers; the harness compares outcomes either way).

-- case: affinity-basics
CREATE TABLE aff (
  i INTEGER, t TEXT, b BLOB, r REAL, n NUMERIC,
  v VARCHAR(20), d DOUBLE PRECISION, f FLOAT, bo BOOLEAN,
  dt DATETIME, dc DECIMAL(10,2), untyped
);
INSERT INTO aff VALUES ('42', 42, x'0102', '3.5', '7.0', 12, '1e3', '2', 'true', '2024-01-01', '10.50', '5');
INSERT INTO aff VALUES ('4.0', 4.0, 'text', 1, '1e2', 'abc', 'x', NULL, 1, 20240101, '3.25', 5.0);
INSERT INTO aff VALUES ('0x1F', '007', 3, '  12  ', ' 12 ', 1.5, '-0', '9223372036854775807', 'false', 1.5, '1,5', x'00');
SELECT rowid, typeof(i), i, typeof(t), t, typeof(b), b, typeof(r), r, typeof(n), n
FROM aff ORDER BY rowid;
SELECT rowid, typeof(v), v, typeof(d), d, typeof(f), f, typeof(bo), bo
FROM aff ORDER BY rowid;
SELECT rowid, typeof(dt), dt, typeof(dc), dc, typeof(untyped), untyped
FROM aff ORDER BY rowid;
SELECT count(*) FROM aff WHERE i = 42;
SELECT count(*) FROM aff WHERE t = '42';

-- case: affinity-comparisons
SELECT typeof(1), typeof(1.0), typeof('1'), typeof(x'01'), typeof(NULL),
       typeof(1 + '1'), typeof('1' + '1.5'), typeof(CAST('5' AS NUMERIC)),
       typeof(CAST('5.0' AS NUMERIC)), typeof(CAST('5.5' AS NUMERIC));
CREATE TABLE cmp (n NUMERIC, t TEXT);
INSERT INTO cmp VALUES ('10', 10), ('9', 9), ('abc', 'abc'), (2.0, 2.0);
SELECT rowid, n, typeof(n), t, typeof(t) FROM cmp ORDER BY rowid;
SELECT rowid FROM cmp WHERE n = '10' ORDER BY rowid;
SELECT rowid FROM cmp WHERE t = 10 ORDER BY rowid;
SELECT n FROM cmp ORDER BY n;
SELECT t FROM cmp ORDER BY t;
SELECT rowid FROM cmp WHERE n > 5 ORDER BY rowid;

-- case: strict-tables
CREATE TABLE s (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  qty INT,
  price REAL,
  data BLOB,
  anyv ANY
) STRICT;
INSERT INTO s VALUES (1, 'apple', 3, 1.25, x'cafe', 'x');
INSERT INTO s VALUES (2, 'pear', '4', 2, NULL, 5);
INSERT INTO s VALUES (3, 'plum', 3.0, '2.5', NULL, '007');
-- error: datatype mismatch (text into INT)
INSERT INTO s VALUES (4, 'kiwi', 'four', 1.0, NULL, NULL);
-- error: datatype mismatch (lossy real into INT)
INSERT INTO s VALUES (5, 'lime', 1.5, 1.0, NULL, NULL);
-- error: datatype mismatch (text into REAL)
INSERT INTO s VALUES (6, 'fig', 2, 'cheap', NULL, NULL);
SELECT id, name, qty, typeof(qty), price, typeof(price), typeof(data), anyv, typeof(anyv)
FROM s ORDER BY id;
-- error: datatype mismatch on update
UPDATE s SET qty = 'many' WHERE id = 1;
UPDATE s SET qty = qty + 1 WHERE id = 1;
-- error: unknown datatype in STRICT table
CREATE TABLE bad_strict (x VARCHAR(10)) STRICT;
CREATE TABLE strict_norowid (code TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT INTO strict_norowid VALUES ('a', 1), ('b', '2');
-- error: NOT NULL on STRICT WITHOUT ROWID
INSERT INTO strict_norowid VALUES ('c', NULL);
SELECT code, n, typeof(n) FROM strict_norowid ORDER BY code;

-- case: without-rowid
CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO kv VALUES ('b', 2), ('a', 1), ('c', 3);
-- error: PRIMARY KEY conflict
INSERT INTO kv VALUES ('a', 10);
-- error: NULL primary key in WITHOUT ROWID table
INSERT INTO kv VALUES (NULL, 5);
SELECT k, v FROM kv ORDER BY k;
CREATE TABLE edge (src INTEGER, dst INTEGER, w INTEGER, PRIMARY KEY (src, dst)) WITHOUT ROWID;
INSERT INTO edge VALUES (1, 2, 5), (1, 3, 15), (2, 3, 20);
SELECT src, dst, w FROM edge WHERE src = 1 ORDER BY dst;
-- error: PRIMARY KEY missing on WITHOUT ROWID table
CREATE TABLE nopk (a INTEGER) WITHOUT ROWID;
-- error: no such column rowid
SELECT rowid FROM kv;
UPDATE kv SET v = v * 100 WHERE k >= 'b';
SELECT k, v FROM kv ORDER BY k;

-- case: generated-columns
CREATE TABLE item (
  id INTEGER PRIMARY KEY,
  price_cents INTEGER NOT NULL,
  qty INTEGER NOT NULL DEFAULT 1,
  total_cents INTEGER GENERATED ALWAYS AS (price_cents * qty) STORED,
  label TEXT AS ('#' || id || ':' || qty) VIRTUAL,
  name TEXT,
  name_lower TEXT AS (lower(name))
);
INSERT INTO item (price_cents, qty, name) VALUES (250, 4, 'Widget'), (99, 1, 'GADGET');
INSERT INTO item (price_cents, name) VALUES (1000, 'Thing');
-- error: cannot INSERT into generated column
INSERT INTO item (id, price_cents, total_cents) VALUES (10, 1, 1);
UPDATE item SET qty = qty + 1 WHERE id = 2;
SELECT id, total_cents, typeof(total_cents), label, name_lower FROM item ORDER BY id;
CREATE INDEX item_total ON item(total_cents);
SELECT id FROM item WHERE total_cents > 150 ORDER BY total_cents DESC, id;
PRAGMA table_xinfo(item);

-- case: defaults-and-checks
CREATE TABLE acct (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL UNIQUE COLLATE NOCASE,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
  score REAL DEFAULT (1.5 * 2),
  created TEXT DEFAULT '2024-01-01 00:00:00',
  flags INTEGER DEFAULT (0x10 | 0x01),
  neg INTEGER DEFAULT -1,
  note TEXT DEFAULT NULL,
  CONSTRAINT email_has_at CHECK (instr(email, '@') > 1)
);
INSERT INTO acct (email) VALUES ('Ann@example.com');
INSERT INTO acct (email, balance) VALUES ('bob@example.com', 50);
-- error: UNIQUE with NOCASE collation
INSERT INTO acct (email) VALUES ('ANN@EXAMPLE.COM');
-- error: CHECK status
INSERT INTO acct (email, status) VALUES ('cy@example.com', 'banned');
-- error: named CHECK constraint
INSERT INTO acct (email) VALUES ('no-at-sign');
-- error: NOT NULL
INSERT INTO acct (email) VALUES (NULL);
INSERT INTO acct (email) VALUES ('eve@example.com');
SELECT id, email, status, balance, score, created, flags, neg, note FROM acct ORDER BY id;
SELECT name, seq FROM sqlite_sequence ORDER BY name;
SELECT id FROM acct WHERE email = 'BOB@EXAMPLE.COM';
UPDATE acct SET status = 'disabled' WHERE id = 2;
-- error: CHECK on update
UPDATE acct SET balance = balance - 100 WHERE id = 2;
SELECT id, status, balance FROM acct ORDER BY id;

-- case: collation
CREATE TABLE tag (name TEXT COLLATE NOCASE PRIMARY KEY, label TEXT COLLATE RTRIM, code TEXT);
INSERT INTO tag VALUES ('Rust', 'a  ', 'x'), ('go', 'b', 'Y'), ('SQL', 'c', 'z');
-- error: PRIMARY KEY conflict under NOCASE
INSERT INTO tag VALUES ('rust', 'd', 'w');
SELECT name FROM tag ORDER BY name;
SELECT name FROM tag WHERE name = 'sql';
SELECT count(*) FROM tag WHERE label = 'a';
SELECT code FROM tag ORDER BY code;
SELECT code FROM tag ORDER BY code COLLATE NOCASE;
SELECT 'abc' = 'ABC', 'abc' = 'ABC' COLLATE NOCASE, 'x ' = 'x' COLLATE RTRIM, 'a' < 'B', 'a' < 'B' COLLATE NOCASE;
-- error: no such collation sequence
SELECT name FROM tag ORDER BY name COLLATE klingon;

-- case: indexes
CREATE TABLE person (id INTEGER PRIMARY KEY, email TEXT, first TEXT, last TEXT, deleted_at TEXT, age INTEGER);
CREATE UNIQUE INDEX person_email_live ON person(lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX person_name ON person(last, first);
CREATE INDEX person_age_desc ON person(age DESC);
INSERT INTO person (email, first, last, age) VALUES ('a@x.io', 'Ann', 'Lee', 30), ('b@x.io', 'Bo', 'Kim', 25);
-- error: UNIQUE on expression index
INSERT INTO person (email, first, last, age) VALUES ('A@X.IO', 'Al', 'Ng', 40);
UPDATE person SET deleted_at = '2024-05-01' WHERE id = 1;
INSERT INTO person (email, first, last, age) VALUES ('A@X.IO', 'Al', 'Ng', 40);
CREATE INDEX IF NOT EXISTS person_name ON person(first);
-- error: index already exists
CREATE INDEX person_name ON person(first);
-- error: subqueries prohibited in partial index WHERE
CREATE INDEX bad_idx2 ON person(age) WHERE age > (SELECT 1);
PRAGMA index_list(person);
PRAGMA index_info(person_name);
PRAGMA index_xinfo(person_email_live);
SELECT id, email FROM person WHERE lower(email) = 'a@x.io' AND deleted_at IS NULL ORDER BY id;
SELECT id, last, first FROM person ORDER BY last, first, id;
SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'person' ORDER BY name;
DROP INDEX person_name;
DROP INDEX IF EXISTS person_name;
-- error: UNIQUE index cannot be created over duplicate data
CREATE UNIQUE INDEX person_email_all ON person(lower(email));

-- case: views
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL);
INSERT INTO orders VALUES (1, 'ann', 100, 'paid'), (2, 'bob', 250, 'open'), (3, 'ann', 75, 'paid'), (4, 'cy', 30, 'void');
CREATE VIEW paid_totals AS
  SELECT customer, sum(amount) AS total, count(*) AS n
  FROM orders WHERE status = 'paid' GROUP BY customer;
CREATE VIEW IF NOT EXISTS paid_totals AS SELECT 1;
CREATE VIEW open_orders (order_id, who) AS SELECT id, customer FROM orders WHERE status = 'open';
SELECT customer, total, n FROM paid_totals ORDER BY customer;
SELECT order_id, who FROM open_orders ORDER BY order_id;
-- error: cannot modify a view without INSTEAD OF trigger
INSERT INTO open_orders VALUES (9, 'dan');
DROP VIEW open_orders;
DROP VIEW IF EXISTS open_orders;
-- error: use DROP VIEW to delete a view
DROP TABLE paid_totals;
-- error: no such table (view was dropped)
SELECT * FROM open_orders;
-- a view over a missing column is accepted at CREATE time ...
CREATE VIEW broken AS SELECT nope FROM orders;
-- error: ... but fails when used
SELECT * FROM broken;

-- case: if-not-exists-and-drop
CREATE TABLE IF NOT EXISTS t1 (a INTEGER);
CREATE TABLE IF NOT EXISTS t1 (a INTEGER, b TEXT);
-- error: table already exists
CREATE TABLE t1 (x);
INSERT INTO t1 VALUES (1), (2);
SELECT count(*) FROM t1;
PRAGMA table_info(t1);
DROP TABLE IF EXISTS t2;
-- error: no such table
DROP TABLE t2;
CREATE TABLE t2 AS SELECT a, a * 2 AS doubled, 'x' || a AS tag FROM t1 ORDER BY a;
PRAGMA table_info(t2);
SELECT a, doubled, tag FROM t2 ORDER BY a;
DROP TABLE t1;
SELECT name FROM sqlite_schema WHERE name IN ('t1', 't2') ORDER BY name;
-- error: duplicate column name
CREATE TABLE dupcol (a INTEGER, A TEXT);

-- case: keyword-identifiers
CREATE TABLE "select" ("from" TEXT, "order" INTEGER, "group" TEXT);
INSERT INTO "select" VALUES ('k', 1, 'g'), ('j', 2, 'h');
SELECT "from", "order", "group" FROM "select" ORDER BY "order";
-- error: syntax error (unquoted keyword as table name)
CREATE TABLE select (x);
CREATE TABLE "Mixed Case Table" ("Col One" INTEGER, "col two" TEXT);
INSERT INTO "Mixed Case Table" VALUES (1, 'a');
SELECT "Col One", "col two" FROM "mixed case table";
