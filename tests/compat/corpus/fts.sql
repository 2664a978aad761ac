-- Compatibility corpus: full-text search (FTS5, and FTS4 once).
-- Ranked queries always break ties by rowid.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: fts-match-basics
CREATE VIRTUAL TABLE article USING fts5(title, body);
INSERT INTO article (rowid, title, body) VALUES
  (1, 'SQLite tips', 'Use indexes to speed up queries in SQLite'),
  (2, 'Rust storage', 'Building a storage engine in Rust with SQLite'),
  (3, 'Cooking', 'A recipe for bread and butter'),
  (4, 'Query planning', 'The query planner chooses indexes'),
  (5, 'Bread', 'Sourdough bread needs time');
SELECT rowid, title FROM article WHERE article MATCH 'sqlite' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH 'title:bread' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH 'bread NOT sourdough' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH 'index*' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH '"storage engine"' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH 'query OR recipe' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH 'NEAR(indexes queries, 3)' ORDER BY rowid;
SELECT rowid FROM article WHERE article MATCH '(rust OR bread) NOT title:cooking' ORDER BY rowid;
SELECT rowid FROM article WHERE body MATCH 'rust' ORDER BY rowid;
SELECT rowid, title FROM article('bread') ORDER BY rowid;
SELECT count(*) FROM article WHERE article MATCH 'sqlite';
-- error: fts5 syntax error
SELECT rowid FROM article WHERE article MATCH 'sqlite AND';
-- error: no such fts5 column
SELECT rowid FROM article WHERE article MATCH 'nocol:x';

-- case: fts-ranking-and-auxiliary
CREATE VIRTUAL TABLE doc USING fts5(title, body);
INSERT INTO doc (rowid, title, body) VALUES
  (10, 'Intro to SQLite', 'SQLite is a small fast reliable database engine. SQLite is everywhere.'),
  (11, 'Postgres notes', 'A server database; unlike SQLite it runs as a separate process.'),
  (12, 'Embedded storage', 'Many apps embed SQLite for local storage and caching.'),
  (13, 'Gardening', 'Tomatoes need sun and water.');
SELECT rowid, title FROM doc WHERE doc MATCH 'sqlite' ORDER BY rank, rowid;
SELECT rowid FROM doc WHERE doc MATCH 'sqlite' ORDER BY bm25(doc, 10.0, 1.0), rowid;
SELECT rowid, round(bm25(doc), 6) FROM doc WHERE doc MATCH 'storage OR tomatoes' ORDER BY rowid;
SELECT rowid, highlight(doc, 0, '[', ']') AS t, highlight(doc, 1, '<b>', '</b>') AS b
FROM doc WHERE doc MATCH 'sqlite' ORDER BY rowid;
SELECT rowid, snippet(doc, 1, '>', '<', '...', 4) FROM doc WHERE doc MATCH 'storage' ORDER BY rowid;
SELECT rowid, snippet(doc, -1, '*', '*', '', 3) FROM doc WHERE doc MATCH 'water OR process' ORDER BY rowid;
SELECT rowid FROM doc WHERE doc MATCH 'sqlite' AND rowid > 10 ORDER BY rowid DESC LIMIT 1;
-- auxiliary functions on a full scan (no MATCH) return the column text
SELECT rowid, highlight(doc, 0, '[', ']') FROM doc ORDER BY rowid;

-- case: fts-tokenizers-and-maintenance
CREATE VIRTUAL TABLE note USING fts5(body, tag UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2', prefix = '2 3');
INSERT INTO note (body, tag) VALUES ('Running runners ran quickly', 'a'), ('Café crème brûlée', 'b'), ('The runner runs', 'c');
SELECT rowid, tag FROM note WHERE note MATCH 'run' ORDER BY rowid;
SELECT rowid FROM note WHERE note MATCH 'cafe' ORDER BY rowid;
SELECT rowid FROM note WHERE note MATCH 'cr*' ORDER BY rowid;
SELECT rowid FROM note WHERE note MATCH '^the' ORDER BY rowid;
SELECT rowid, tag FROM note WHERE tag = 'c' ORDER BY rowid;
UPDATE note SET body = 'walking slowly' WHERE rowid = 3;
DELETE FROM note WHERE rowid = 2;
SELECT rowid, body FROM note WHERE note MATCH 'run OR walk' ORDER BY rowid;
INSERT INTO note (note) VALUES ('integrity-check');
INSERT INTO note (note) VALUES ('optimize');
SELECT rowid, body, tag FROM note ORDER BY rowid;
-- error: no such tokenizer
CREATE VIRTUAL TABLE bad_tok USING fts5(a, tokenize = 'nope');
CREATE VIRTUAL TABLE trig USING fts5(s, tokenize = 'trigram');
INSERT INTO trig (s) VALUES ('hello world'), ('yellow'), ('help');
SELECT rowid FROM trig WHERE trig MATCH 'llo' ORDER BY rowid;
SELECT rowid FROM trig WHERE s LIKE '%ELLO%' ORDER BY rowid;
SELECT rowid FROM trig WHERE s GLOB 'hel*' ORDER BY rowid;

-- case: fts-external-content
CREATE TABLE page (id INTEGER PRIMARY KEY, title TEXT NOT NULL, content TEXT NOT NULL);
CREATE VIRTUAL TABLE page_fts USING fts5(title, content, content = 'page', content_rowid = 'id');
CREATE TRIGGER page_ai AFTER INSERT ON page BEGIN
  INSERT INTO page_fts (rowid, title, content) VALUES (new.id, new.title, new.content);
END;
CREATE TRIGGER page_ad AFTER DELETE ON page BEGIN
  INSERT INTO page_fts (page_fts, rowid, title, content) VALUES ('delete', old.id, old.title, old.content);
END;
CREATE TRIGGER page_au AFTER UPDATE ON page BEGIN
  INSERT INTO page_fts (page_fts, rowid, title, content) VALUES ('delete', old.id, old.title, old.content);
  INSERT INTO page_fts (rowid, title, content) VALUES (new.id, new.title, new.content);
END;
INSERT INTO page (title, content) VALUES ('Home', 'Welcome to the home page'), ('About', 'About our company and team'), ('Contact', 'Contact the team by email');
SELECT p.id, p.title FROM page_fts JOIN page AS p ON p.id = page_fts.rowid WHERE page_fts MATCH 'team' ORDER BY p.id;
UPDATE page SET content = 'Email us anytime' WHERE id = 3;
DELETE FROM page WHERE id = 2;
SELECT rowid, title FROM page_fts WHERE page_fts MATCH 'team' ORDER BY rowid;
SELECT rowid, title FROM page_fts WHERE page_fts MATCH 'email' ORDER BY rowid;
SELECT rowid, highlight(page_fts, 1, '<', '>') FROM page_fts WHERE page_fts MATCH 'home' ORDER BY rowid;
INSERT INTO page_fts (page_fts) VALUES ('rebuild');
INSERT INTO page_fts (page_fts, rank) VALUES ('integrity-check', 1);
SELECT count(*) FROM page_fts WHERE page_fts MATCH 'welcome OR email';
-- error: NOT NULL on the content table, the trigger never runs
INSERT INTO page (title, content) VALUES ('Draft', NULL);

-- case: fts-contentless
CREATE VIRTUAL TABLE cl USING fts5(msg, content = '', contentless_delete = 1);
INSERT INTO cl (rowid, msg) VALUES (1, 'alpha beta'), (2, 'beta gamma'), (3, 'gamma delta');
SELECT rowid, msg FROM cl WHERE cl MATCH 'beta' ORDER BY rowid;
DELETE FROM cl WHERE rowid = 2;
SELECT rowid FROM cl WHERE cl MATCH 'gamma' ORDER BY rowid;
UPDATE cl SET msg = 'epsilon' WHERE rowid = 1;
SELECT rowid FROM cl WHERE cl MATCH 'epsilon OR alpha' ORDER BY rowid;
-- error: the 'delete' command is not allowed on a contentless_delete=1 table
INSERT INTO cl (cl, rowid, msg) VALUES ('delete', 3, 'gamma delta');

-- case: fts-legacy-module
CREATE VIRTUAL TABLE mail USING fts4(subject, body, tokenize=porter);
INSERT INTO mail (docid, subject, body) VALUES
  (1, 'Meeting tomorrow', 'Let us meet at noon'),
  (2, 'Lunch', 'Meeting for lunch?'),
  (3, 'Report', 'Quarterly numbers attached');
SELECT docid, subject FROM mail WHERE mail MATCH 'meeting' ORDER BY docid;
SELECT docid FROM mail WHERE subject MATCH 'lunch' ORDER BY docid;
SELECT docid, snippet(mail) FROM mail WHERE mail MATCH 'numbers' ORDER BY docid;
SELECT docid, offsets(mail) FROM mail WHERE mail MATCH 'meet*' ORDER BY docid;
SELECT docid, hex(matchinfo(mail)) FROM mail WHERE mail MATCH 'lunch' ORDER BY docid;
DELETE FROM mail WHERE docid = 2;
SELECT docid FROM mail WHERE mail MATCH 'meet' ORDER BY docid;
SELECT docid, subject FROM mail WHERE mail MATCH 'subject:report OR body:noon' ORDER BY docid;
