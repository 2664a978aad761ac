-- Compatibility corpus: ALTER TABLE and table rebuilds done the way
-- migration tools do them (foreign keys stay ON throughout).
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: alter-add-column
CREATE TABLE profile (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO profile (name) VALUES ('ann'), ('bob');
ALTER TABLE profile ADD COLUMN bio TEXT;
ALTER TABLE profile ADD COLUMN karma INTEGER NOT NULL DEFAULT 0;
ALTER TABLE profile ADD COLUMN lang TEXT DEFAULT 'en' CHECK (length(lang) = 2);
ALTER TABLE profile ADD score REAL DEFAULT 1.5;
ALTER TABLE profile ADD COLUMN name_len INTEGER GENERATED ALWAYS AS (length(name)) VIRTUAL;
-- error: NOT NULL column needs a non-NULL default
ALTER TABLE profile ADD COLUMN verified BOOLEAN NOT NULL;
-- error: cannot add a UNIQUE column
ALTER TABLE profile ADD COLUMN uid INTEGER UNIQUE;
-- error: cannot add a PRIMARY KEY column
ALTER TABLE profile ADD COLUMN pk2 INTEGER PRIMARY KEY;
-- error: non-constant default
ALTER TABLE profile ADD COLUMN ts TEXT DEFAULT CURRENT_TIMESTAMP;
-- error: cannot add a STORED generated column
ALTER TABLE profile ADD COLUMN name_up TEXT AS (upper(name)) STORED;
-- error: duplicate column name
ALTER TABLE profile ADD COLUMN name TEXT;
-- error: CHECK on the added column
INSERT INTO profile (name, lang) VALUES ('cy', 'nob');
INSERT INTO profile (name, lang, karma) VALUES ('cy', 'nb', 3);
SELECT id, name, bio, karma, lang, score, name_len FROM profile ORDER BY id;
PRAGMA table_info(profile);
ALTER TABLE profile ADD COLUMN parent_id INTEGER REFERENCES profile(id);
-- error: REFERENCES column with a non-NULL default while foreign keys are on
ALTER TABLE profile ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 1 REFERENCES profile(id);
UPDATE profile SET parent_id = 1 WHERE id > 1;
-- error: FOREIGN KEY on the added column
UPDATE profile SET parent_id = 99 WHERE id = 1;
SELECT id, parent_id FROM profile ORDER BY id;
SELECT sql FROM sqlite_schema WHERE name = 'profile';

-- case: alter-add-column-check-existing-rows
CREATE TABLE metric (id INTEGER PRIMARY KEY, v INTEGER);
INSERT INTO metric (v) VALUES (1), (2);
-- error: CHECK fails for the rows already in the table
ALTER TABLE metric ADD COLUMN unit TEXT CHECK (unit IS NOT NULL);
ALTER TABLE metric ADD COLUMN unit TEXT DEFAULT 'ms' CHECK (unit IN ('ms', 's'));
SELECT id, v, unit FROM metric ORDER BY id;

-- case: alter-rename
CREATE TABLE old_name (id INTEGER PRIMARY KEY, title TEXT, body TEXT);
CREATE INDEX old_name_title ON old_name(title);
CREATE VIEW old_titles AS SELECT id, title FROM old_name;
CREATE TRIGGER old_name_ai AFTER INSERT ON old_name BEGIN
  UPDATE old_name SET body = coalesce(body, title) WHERE id = new.id;
END;
INSERT INTO old_name (title) VALUES ('a'), ('b');
ALTER TABLE old_name RENAME COLUMN title TO headline;
ALTER TABLE old_name RENAME TO article;
-- error: no such table
ALTER TABLE missing RENAME TO y;
-- error: name already used by a view
ALTER TABLE article RENAME TO old_titles;
INSERT INTO article (headline) VALUES ('c');
SELECT id, headline, body FROM article ORDER BY id;
SELECT * FROM old_titles ORDER BY id;
SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE tbl_name IN ('article', 'old_titles') ORDER BY type, name;
ALTER TABLE article RENAME COLUMN headline TO "Head Line";
SELECT "Head Line" FROM article ORDER BY id;
PRAGMA index_info(old_name_title);

-- case: alter-rename-fk-parent
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
INSERT INTO parent VALUES (1);
INSERT INTO child VALUES (1, 1);
ALTER TABLE parent RENAME TO guardian;
SELECT sql FROM sqlite_schema WHERE name = 'child';
PRAGMA foreign_key_list(child);
-- error: FOREIGN KEY follows the renamed parent
INSERT INTO child VALUES (2, 2);
ALTER TABLE guardian RENAME COLUMN id TO gid;
PRAGMA foreign_key_list(child);
-- error: dropping a parent that still has children
DROP TABLE guardian;
DELETE FROM child;
DROP TABLE guardian;
-- error: the child's REFERENCES clause now names a missing table
INSERT INTO child VALUES (3, NULL);
SELECT id, parent_id FROM child ORDER BY id;

-- case: alter-drop-column
CREATE TABLE wide (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c TEXT, d TEXT UNIQUE, e INTEGER CHECK (e > 0), f TEXT);
CREATE INDEX wide_b ON wide(b);
CREATE VIEW wide_v AS SELECT id, c FROM wide;
INSERT INTO wide VALUES (1, 'a1', 10, 'c1', 'd1', 1, 'f1'), (2, 'a2', 20, 'c2', 'd2', 2, 'f2');
ALTER TABLE wide DROP COLUMN a;
-- error: column is indexed
ALTER TABLE wide DROP COLUMN b;
-- error: PRIMARY KEY column
ALTER TABLE wide DROP COLUMN id;
-- error: UNIQUE column
ALTER TABLE wide DROP COLUMN d;
-- error: column used by a view
ALTER TABLE wide DROP COLUMN c;
ALTER TABLE wide DROP COLUMN e;
DROP INDEX wide_b;
ALTER TABLE wide DROP COLUMN b;
ALTER TABLE wide DROP f;
SELECT * FROM wide ORDER BY id;
PRAGMA table_info(wide);
SELECT sql FROM sqlite_schema WHERE name = 'wide';
PRAGMA integrity_check;

-- case: alter-drop-column-fk-and-generated
CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE player (
  id INTEGER PRIMARY KEY,
  team_id INTEGER,
  nick TEXT,
  coach_id INTEGER REFERENCES team(id),
  nick_len INTEGER AS (length(nick)),
  FOREIGN KEY (team_id) REFERENCES team(id)
);
INSERT INTO team VALUES (1, 'red');
INSERT INTO player (team_id, nick) VALUES (1, 'zed');
-- error: column named by a table-level FOREIGN KEY constraint
ALTER TABLE player DROP COLUMN team_id;
-- a column-level REFERENCES goes away with its column
ALTER TABLE player DROP COLUMN coach_id;
PRAGMA foreign_key_list(player);
-- error: column used by a generated column
ALTER TABLE player DROP COLUMN nick;
ALTER TABLE player DROP COLUMN nick_len;
SELECT * FROM player ORDER BY id;

-- case: alter-rebuild-table
CREATE TABLE setting (id INTEGER PRIMARY KEY, key TEXT, value TEXT, scope TEXT);
CREATE INDEX setting_key ON setting(key);
INSERT INTO setting (key, value, scope) VALUES ('a', '1', 'user'), ('b', '2', NULL), ('c', 'three', 'global');
CREATE TABLE setting_new (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  value INTEGER,
  scope TEXT NOT NULL DEFAULT 'global' CHECK (scope IN ('user', 'global'))
);
INSERT INTO setting_new (id, key, value, scope)
  SELECT id, key, CAST(value AS INTEGER), coalesce(scope, 'global') FROM setting ORDER BY id;
DROP TABLE setting;
ALTER TABLE setting_new RENAME TO setting;
CREATE INDEX setting_scope ON setting(scope);
PRAGMA foreign_key_check;
PRAGMA integrity_check;
SELECT id, key, value, typeof(value), scope FROM setting ORDER BY id;
SELECT type, name, sql FROM sqlite_schema WHERE tbl_name = 'setting' ORDER BY name;
-- error: UNIQUE added by the rebuild
INSERT INTO setting (key, value, scope) VALUES ('a', 5, 'user');
-- error: CHECK added by the rebuild
INSERT INTO setting (key, value, scope) VALUES ('d', 5, 'team');
INSERT INTO setting (key, value) VALUES ('d', 5);
SELECT id, key, scope FROM setting ORDER BY id;

-- case: alter-rebuild-child-table
CREATE TABLE club (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE fan (id INTEGER PRIMARY KEY, club_id INTEGER REFERENCES club(id), nick TEXT);
INSERT INTO club VALUES (1, 'red'), (2, 'blue');
INSERT INTO fan (club_id, nick) VALUES (1, 'a'), (2, 'b'), (1, 'c');
CREATE TABLE fan_new (
  id INTEGER PRIMARY KEY,
  club_id INTEGER NOT NULL REFERENCES club(id) ON DELETE CASCADE,
  nick TEXT NOT NULL,
  rating INTEGER NOT NULL DEFAULT 1000
);
INSERT INTO fan_new (id, club_id, nick) SELECT id, club_id, nick FROM fan ORDER BY id;
DROP TABLE fan;
ALTER TABLE fan_new RENAME TO fan;
CREATE INDEX fan_club ON fan(club_id);
PRAGMA foreign_key_check(fan);
DELETE FROM club WHERE id = 1;
SELECT id, club_id, nick, rating FROM fan ORDER BY id;
PRAGMA foreign_key_list(fan);
PRAGMA index_list(fan);
