-- Compatibility corpus: R*Tree virtual tables (rtree and rtree_i32).
-- Coordinates are chosen to be exact in 32-bit floats.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: rtree-basic
CREATE VIRTUAL TABLE place_idx USING rtree(id, min_x, max_x, min_y, max_y);
INSERT INTO place_idx VALUES (1, 0, 10, 0, 10), (2, 5, 15, 5, 15), (3, 20, 30, 20, 30), (4, -5, -1, -5, -1), (5, 9.5, 9.75, 9.5, 9.75);
SELECT id FROM place_idx WHERE min_x <= 12 AND max_x >= 8 AND min_y <= 12 AND max_y >= 8 ORDER BY id;
SELECT id, min_x, max_x FROM place_idx WHERE max_x < 0 ORDER BY id;
SELECT id FROM place_idx WHERE min_x >= 0 AND max_x <= 16 AND min_y >= 0 AND max_y <= 16 ORDER BY id;
SELECT id, typeof(min_x), min_x FROM place_idx WHERE id = 5;
UPDATE place_idx SET min_x = 100, max_x = 110 WHERE id = 3;
DELETE FROM place_idx WHERE id = 4;
SELECT id, min_x, max_x, min_y, max_y FROM place_idx ORDER BY id;
INSERT INTO place_idx (min_x, max_x, min_y, max_y) VALUES (1, 2, 3, 4);
SELECT id, min_x, max_y FROM place_idx WHERE id > 5 ORDER BY id;
-- error: rtree constraint failed (min > max)
INSERT INTO place_idx VALUES (7, 10, 5, 0, 1);
-- error: UNIQUE constraint on the rtree id
INSERT INTO place_idx VALUES (1, 0, 1, 0, 1);
INSERT OR REPLACE INTO place_idx VALUES (1, 0, 1, 0, 1);
SELECT id, max_x FROM place_idx WHERE id = 1;
SELECT count(*) FROM place_idx;
SELECT rtreecheck('place_idx');

-- case: rtree-integer-aux-columns
CREATE VIRTUAL TABLE tile USING rtree_i32(id, x0, x1, y0, y1, +name, +kind);
INSERT INTO tile VALUES (1, 0, 100, 0, 100, 'base', 'land'), (2, 50, 60, 50, 60, 'lake', 'water'), (3, 200, 300, 0, 50, 'hill', 'land');
SELECT id, name, typeof(x0), x0 FROM tile WHERE x0 <= 55 AND x1 >= 55 ORDER BY id;
SELECT id, name FROM tile WHERE kind = 'land' AND y1 <= 60 ORDER BY id;
INSERT INTO tile VALUES (4, 2, 3, -10, -5, 'neg', 'x');
SELECT id, x0, x1, y0, y1, name, kind FROM tile ORDER BY id;
UPDATE tile SET name = 'pond' WHERE id = 2;
SELECT id, name FROM tile WHERE x0 >= 50 AND x1 <= 60 ORDER BY id;
-- error: wrong number of columns for an rtree table
CREATE VIRTUAL TABLE bad_rt USING rtree(id, a);

-- case: rtree-join-with-triggers
CREATE TABLE shop (id INTEGER PRIMARY KEY, name TEXT NOT NULL, lon REAL NOT NULL, lat REAL NOT NULL);
CREATE VIRTUAL TABLE shop_geo USING rtree(id, lon0, lon1, lat0, lat1);
CREATE TRIGGER shop_geo_ai AFTER INSERT ON shop BEGIN
  INSERT INTO shop_geo VALUES (new.id, new.lon, new.lon, new.lat, new.lat);
END;
CREATE TRIGGER shop_geo_ad AFTER DELETE ON shop BEGIN
  DELETE FROM shop_geo WHERE id = old.id;
END;
INSERT INTO shop (name, lon, lat) VALUES ('north', 10.75, 59.5), ('south', 10.5, 58.25), ('east', 11.25, 59.0), ('far', 20.0, 65.0);
SELECT s.id, s.name
FROM shop AS s JOIN shop_geo AS g ON g.id = s.id
WHERE g.lon0 >= 10 AND g.lon1 <= 11.5 AND g.lat0 >= 59 AND g.lat1 <= 60
ORDER BY s.id;
DELETE FROM shop WHERE name = 'north';
SELECT count(*) FROM shop_geo;
SELECT s.name FROM shop AS s WHERE s.id IN (SELECT id FROM shop_geo WHERE lat0 < 60) ORDER BY s.name;
-- error: NOT NULL on the base table, rtree untouched
INSERT INTO shop (name, lon, lat) VALUES ('nowhere', NULL, 1);
SELECT count(*), min(id), max(id) FROM shop_geo;
