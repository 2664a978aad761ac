-- Compatibility corpus: triggers and foreign keys (PRAGMA foreign_keys=ON).
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: trigger-audit-log
CREATE TABLE account (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL DEFAULT 0);
CREATE TABLE audit (id INTEGER PRIMARY KEY, account_id INTEGER, action TEXT, old_balance INTEGER, new_balance INTEGER);
CREATE TRIGGER account_ai AFTER INSERT ON account BEGIN
  INSERT INTO audit (account_id, action, new_balance) VALUES (new.id, 'insert', new.balance);
END;
CREATE TRIGGER account_au AFTER UPDATE OF balance ON account WHEN old.balance <> new.balance BEGIN
  INSERT INTO audit (account_id, action, old_balance, new_balance) VALUES (new.id, 'update', old.balance, new.balance);
END;
CREATE TRIGGER account_bd BEFORE DELETE ON account BEGIN
  INSERT INTO audit (account_id, action, old_balance) VALUES (old.id, 'delete', old.balance);
END;
INSERT INTO account (owner, balance) VALUES ('ann', 100), ('bob', 50);
INSERT INTO account (owner) VALUES ('cy');
UPDATE account SET balance = balance + 10 WHERE owner = 'ann';
UPDATE account SET balance = balance WHERE owner = 'bob';
UPDATE account SET owner = 'Bob' WHERE owner = 'bob';
DELETE FROM account WHERE owner = 'ann';
-- error: NOT NULL; the BEFORE/AFTER trigger work is rolled back with the statement
INSERT INTO account (owner) VALUES (NULL);
SELECT id, account_id, action, old_balance, new_balance FROM audit ORDER BY id;
SELECT id, owner, balance FROM account ORDER BY id;
-- error: trigger already exists
CREATE TRIGGER account_ai AFTER INSERT ON account BEGIN SELECT 1; END;
-- error: no such table for trigger
CREATE TRIGGER ghost_ai AFTER INSERT ON ghost BEGIN SELECT 1; END;

-- case: trigger-raise-variants
CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);
CREATE TABLE stock_log (id INTEGER PRIMARY KEY, sku TEXT, qty INTEGER);
CREATE TRIGGER stock_no_negative BEFORE UPDATE OF qty ON stock WHEN new.qty < 0 BEGIN
  SELECT RAISE(ABORT, 'stock cannot go negative');
END;
CREATE TRIGGER stock_ignore_zero BEFORE INSERT ON stock WHEN new.qty = 0 BEGIN
  SELECT RAISE(IGNORE);
END;
CREATE TRIGGER stock_log_ai AFTER INSERT ON stock BEGIN
  INSERT INTO stock_log (sku, qty) VALUES (new.sku, new.qty);
  SELECT RAISE(FAIL, 'forbidden sku') WHERE new.sku = 'bad';
END;
INSERT INTO stock VALUES ('a', 5), ('zero', 0), ('b', 2);
-- error: RAISE(ABORT) undoes the whole UPDATE
UPDATE stock SET qty = qty - 3;
UPDATE stock SET qty = qty - 1;
SELECT sku, qty FROM stock ORDER BY sku;
-- error: RAISE(FAIL) keeps the rows changed before the failing row
INSERT INTO stock VALUES ('c', 1), ('bad', 1), ('d', 1);
SELECT sku, qty FROM stock ORDER BY sku;
SELECT id, sku, qty FROM stock_log ORDER BY id;
-- error: RAISE outside a trigger
SELECT RAISE(ABORT, 'nope');

-- case: trigger-instead-of-view
CREATE TABLE person (id INTEGER PRIMARY KEY, first TEXT NOT NULL, last TEXT NOT NULL);
CREATE VIEW person_v AS SELECT id, first || ' ' || last AS full_name FROM person;
CREATE TRIGGER person_v_ins INSTEAD OF INSERT ON person_v BEGIN
  INSERT INTO person (id, first, last)
  VALUES (new.id, substr(new.full_name, 1, instr(new.full_name, ' ') - 1), substr(new.full_name, instr(new.full_name, ' ') + 1));
END;
CREATE TRIGGER person_v_upd INSTEAD OF UPDATE OF full_name ON person_v BEGIN
  UPDATE person
  SET first = substr(new.full_name, 1, instr(new.full_name, ' ') - 1),
      last = substr(new.full_name, instr(new.full_name, ' ') + 1)
  WHERE id = old.id;
END;
CREATE TRIGGER person_v_del INSTEAD OF DELETE ON person_v BEGIN
  DELETE FROM person WHERE id = old.id;
END;
INSERT INTO person_v (id, full_name) VALUES (1, 'Ada Lovelace'), (2, 'Alan Turing'), (3, 'Grace Hopper');
UPDATE person_v SET full_name = 'Alan M Turing' WHERE id = 2;
DELETE FROM person_v WHERE id = 3;
SELECT id, first, last FROM person ORDER BY id;
SELECT id, full_name FROM person_v ORDER BY id;
-- error: PRIMARY KEY conflict raised inside the INSTEAD OF trigger
INSERT INTO person_v (id, full_name) VALUES (1, 'Dup Licate');
-- error: cannot create INSTEAD OF trigger on a table
CREATE TRIGGER bad_instead INSTEAD OF INSERT ON person BEGIN SELECT 1; END;
-- error: cannot create BEFORE trigger on a view
CREATE TRIGGER bad_before BEFORE INSERT ON person_v BEGIN SELECT 1; END;

-- case: trigger-nested-counters
CREATE TABLE folder (id INTEGER PRIMARY KEY, parent_id INTEGER, name TEXT, item_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE file (id INTEGER PRIMARY KEY, folder_id INTEGER NOT NULL REFERENCES folder(id), name TEXT);
CREATE TRIGGER file_ai AFTER INSERT ON file BEGIN
  UPDATE folder SET item_count = item_count + 1 WHERE id = new.folder_id;
END;
CREATE TRIGGER file_ad AFTER DELETE ON file BEGIN
  UPDATE folder SET item_count = item_count - 1 WHERE id = old.folder_id;
END;
CREATE TRIGGER file_au AFTER UPDATE OF folder_id ON file BEGIN
  UPDATE folder SET item_count = item_count - 1 WHERE id = old.folder_id;
  UPDATE folder SET item_count = item_count + 1 WHERE id = new.folder_id;
END;
-- recursive_triggers is off by default, so this only reaches the direct parent
CREATE TRIGGER folder_bump AFTER UPDATE OF item_count ON folder WHEN new.parent_id IS NOT NULL BEGIN
  UPDATE folder SET item_count = item_count + (new.item_count - old.item_count) WHERE id = new.parent_id;
END;
INSERT INTO folder (id, parent_id, name) VALUES (1, NULL, 'root'), (2, 1, 'docs'), (3, 2, 'deep');
INSERT INTO file (folder_id, name) VALUES (3, 'a.txt'), (3, 'b.txt'), (2, 'c.txt');
UPDATE file SET folder_id = 2 WHERE name = 'a.txt';
DELETE FROM file WHERE name = 'b.txt';
-- error: FOREIGN KEY
INSERT INTO file (folder_id, name) VALUES (99, 'x');
SELECT id, name, item_count FROM folder ORDER BY id;
SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name;
DROP TRIGGER folder_bump;
DROP TRIGGER IF EXISTS folder_bump;

-- case: trigger-normalize-and-touch
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, updated_at TEXT);
CREATE TRIGGER users_check BEFORE INSERT ON users WHEN new.email NOT LIKE '%@%' BEGIN
  SELECT RAISE(ABORT, 'invalid email');
END;
CREATE TRIGGER users_norm AFTER INSERT ON users BEGIN
  UPDATE users SET email = lower(trim(email)) WHERE id = new.id;
END;
CREATE TRIGGER users_touch AFTER UPDATE OF email ON users BEGIN
  UPDATE users SET updated_at = '2024-01-01T00:00:00Z' WHERE id = new.id;
END;
INSERT INTO users (email) VALUES ('  Ann@Example.COM ');
-- error: RAISE(ABORT) in BEFORE INSERT
INSERT INTO users (email) VALUES ('nope');
INSERT INTO users (email) VALUES ('bob@x.io') RETURNING id, email, updated_at;
UPDATE users SET email = 'NEW@x.io' WHERE id = 1;
SELECT id, email, updated_at FROM users ORDER BY id;

-- case: fk-cascade-setnull-restrict
CREATE TABLE author (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE book (
  id INTEGER PRIMARY KEY,
  author_id INTEGER NOT NULL REFERENCES author(id) ON DELETE CASCADE ON UPDATE CASCADE,
  title TEXT
);
CREATE TABLE review (id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES book(id) ON DELETE SET NULL, stars INTEGER);
CREATE TABLE loan (id INTEGER PRIMARY KEY, book_id INTEGER NOT NULL REFERENCES book(id) ON DELETE RESTRICT);
CREATE INDEX book_author ON book(author_id);
INSERT INTO author VALUES (1, 'Le Guin'), (2, 'Pratchett');
INSERT INTO book VALUES (10, 1, 'Earthsea'), (11, 1, 'Dispossessed'), (20, 2, 'Mort');
INSERT INTO review VALUES (100, 10, 5), (101, 11, 4), (102, 20, 5);
INSERT INTO loan VALUES (1000, 20);
-- error: FOREIGN KEY on insert
INSERT INTO book VALUES (30, 3, 'Ghost');
UPDATE author SET id = 5 WHERE id = 1;
SELECT id, author_id, title FROM book ORDER BY id;
DELETE FROM author WHERE id = 5;
SELECT id, author_id FROM book ORDER BY id;
SELECT id, book_id, stars FROM review ORDER BY id;
-- error: RESTRICT reached through a cascade
DELETE FROM author WHERE id = 2;
DELETE FROM loan;
DELETE FROM author WHERE id = 2;
SELECT (SELECT count(*) FROM book), (SELECT count(*) FROM review WHERE book_id IS NULL), (SELECT count(*) FROM author);
PRAGMA foreign_key_list(book);
PRAGMA foreign_key_list(review);
PRAGMA foreign_key_check;

-- case: fk-set-default-and-composite
CREATE TABLE region (code TEXT PRIMARY KEY);
INSERT INTO region VALUES ('none'), ('eu'), ('us');
CREATE TABLE office (id INTEGER PRIMARY KEY, region TEXT NOT NULL DEFAULT 'none' REFERENCES region(code) ON DELETE SET DEFAULT);
INSERT INTO office (region) VALUES ('eu'), ('us'), ('eu');
DELETE FROM region WHERE code = 'eu';
SELECT id, region FROM office ORDER BY id;
-- error: SET DEFAULT target row is the one being deleted
DELETE FROM region WHERE code = 'none';
CREATE TABLE ver (pkg TEXT, num INTEGER, PRIMARY KEY (pkg, num));
CREATE TABLE dep (id INTEGER PRIMARY KEY, pkg TEXT, num INTEGER, FOREIGN KEY (pkg, num) REFERENCES ver (pkg, num));
INSERT INTO ver VALUES ('a', 1), ('a', 2);
INSERT INTO dep (pkg, num) VALUES ('a', 2), ('a', NULL);
-- error: composite FOREIGN KEY
INSERT INTO dep (pkg, num) VALUES ('a', 3);
SELECT id, pkg, num FROM dep ORDER BY id;
PRAGMA foreign_key_list(dep);
CREATE TABLE bad_ref (x INTEGER REFERENCES ver(num));
-- error: foreign key mismatch (parent key is not unique)
INSERT INTO bad_ref VALUES (1);

-- case: fk-deferred
CREATE TABLE node (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES node(id) DEFERRABLE INITIALLY DEFERRED, name TEXT);
INSERT INTO node VALUES (1, NULL, 'root');
-- child before parent inside one statement: fine for a deferred key
INSERT INTO node VALUES (3, 2, 'child'), (2, 1, 'mid');
-- error: a deferred violation still open when the autocommit statement ends
INSERT INTO node VALUES (9, 8, 'dangling');
-- error: same, on UPDATE
UPDATE node SET parent_id = 42 WHERE id = 2;
SELECT id, parent_id, name FROM node ORDER BY id;
CREATE TABLE emp (id INTEGER PRIMARY KEY, mgr INTEGER REFERENCES emp(id));
-- immediate keys are checked at the end of the statement, so a cycle inserted at once is fine
INSERT INTO emp VALUES (1, 2), (2, 1);
-- error: immediate FOREIGN KEY
INSERT INTO emp VALUES (3, 4);
SELECT id, mgr FROM emp ORDER BY id;
PRAGMA defer_foreign_keys;
PRAGMA foreign_key_check(node);
PRAGMA foreign_key_list(node);

-- case: fk-deferred-in-savepoint
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
SAVEPOINT load;
INSERT INTO child VALUES (1, 10);
PRAGMA foreign_key_check;
INSERT INTO parent VALUES (10);
PRAGMA foreign_key_check;
RELEASE load;
SELECT c.id, p.id FROM child AS c JOIN parent AS p ON p.id = c.parent_id ORDER BY c.id;
SAVEPOINT bad;
INSERT INTO child VALUES (2, 20);
-- error: deferred violation still pending when the outermost savepoint is released
RELEASE bad;
ROLLBACK TO bad;
RELEASE bad;
SELECT id, parent_id FROM child ORDER BY id;
