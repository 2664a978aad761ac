-- Compatibility corpus: CTEs, subqueries, joins, compound SELECT,
-- aggregates and the scalar function library (strings, numbers, casts,
-- big integers, real formatting, dates with fixed inputs).
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: cte-recursive-counters
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10)
SELECT x, x * x AS sq FROM n ORDER BY x;
WITH RECURSIVE fib(a, b, i) AS (SELECT 0, 1, 1 UNION ALL SELECT b, a + b, i + 1 FROM fib WHERE i < 20)
SELECT i, a FROM fib ORDER BY i;
WITH RECURSIVE d(day) AS (
  SELECT date('2024-02-26') UNION ALL SELECT date(day, '+1 day') FROM d WHERE day < '2024-03-02'
)
SELECT day, strftime('%w', day) AS dow FROM d ORDER BY day;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 5)
SELECT sum(x) FROM n;
WITH RECURSIVE big(x) AS (SELECT 9223372036854775800 UNION ALL SELECT x + 1 FROM big WHERE x < 9223372036854775806)
SELECT count(*), max(x), typeof(max(x)) FROM big;
-- error: recursive aggregate queries are not supported
WITH RECURSIVE bad(x) AS (SELECT 1 UNION ALL SELECT max(x) + 1 FROM bad WHERE x < 3) SELECT x FROM bad;

-- case: cte-recursive-tree
CREATE TABLE category (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES category(id), name TEXT NOT NULL);
INSERT INTO category VALUES (1, NULL, 'root'), (2, 1, 'books'), (3, 1, 'music'), (4, 2, 'fiction'), (5, 2, 'science'), (6, 4, 'fantasy'), (7, 3, 'jazz');
WITH RECURSIVE tree(id, name, depth, path) AS (
  SELECT id, name, 0, name FROM category WHERE parent_id IS NULL
  UNION ALL
  SELECT c.id, c.name, t.depth + 1, t.path || '/' || c.name
  FROM category AS c JOIN tree AS t ON c.parent_id = t.id
)
SELECT id, depth, path FROM tree ORDER BY path;
WITH RECURSIVE up(id, parent_id, name, lvl) AS (
  SELECT id, parent_id, name, 0 FROM category WHERE id = 6
  UNION ALL
  SELECT c.id, c.parent_id, c.name, up.lvl + 1 FROM category AS c JOIN up ON c.id = up.parent_id
)
SELECT group_concat(name, ' < ' ORDER BY lvl) FROM up;
WITH RECURSIVE sub(id) AS (SELECT 2 UNION SELECT c.id FROM category AS c JOIN sub ON c.parent_id = sub.id)
SELECT count(*), sum(id) FROM sub;
WITH RECURSIVE walk(id, depth) AS (
  SELECT 1, 0 UNION ALL SELECT c.id, w.depth + 1 FROM category AS c JOIN walk AS w ON c.parent_id = w.id ORDER BY 2 DESC
)
SELECT id, depth FROM walk ORDER BY depth, id;
-- error: FOREIGN KEY (parent does not exist)
INSERT INTO category VALUES (8, 99, 'orphan');
-- error: FOREIGN KEY (row still has children)
DELETE FROM category WHERE id = 2;

-- case: cte-materialized-hints
CREATE TABLE t (id INTEGER PRIMARY KEY, g INTEGER, v INTEGER);
INSERT INTO t (g, v) VALUES (1, 10), (1, 20), (2, 5), (2, 7), (3, 1);
WITH s AS MATERIALIZED (SELECT g, sum(v) AS total FROM t GROUP BY g)
SELECT a.g, a.total, b.total AS next_total FROM s AS a JOIN s AS b ON b.g = a.g + 1 ORDER BY a.g;
WITH s AS NOT MATERIALIZED (SELECT id, v * 2 AS v2 FROM t)
SELECT id, v2 FROM s WHERE v2 > 10 ORDER BY id;
WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT x, y FROM a, b;
WITH t AS (SELECT 42 AS id) SELECT id FROM t;
INSERT INTO t (g, v) WITH extra(g, v) AS (VALUES (4, 40), (5, 50)) SELECT g, v FROM extra ORDER BY g;
WITH old AS (SELECT id FROM t WHERE v < 6) DELETE FROM t WHERE id IN old;
WITH bump AS (SELECT g FROM t GROUP BY g HAVING count(*) > 1) UPDATE t SET v = v + 1 WHERE g IN bump;
SELECT id, g, v FROM t ORDER BY id;
-- error: table a has 1 values for 2 columns
WITH a(x, y) AS (SELECT 1) SELECT * FROM a;

-- case: subqueries-and-joins
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE purchase (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), total INTEGER);
INSERT INTO customer VALUES (1, 'Ann', 'NO'), (2, 'Bob', 'SE'), (3, 'Cy', 'NO'), (4, 'Di', NULL);
INSERT INTO purchase (customer_id, total) VALUES (1, 50), (1, 70), (2, 20), (3, 200), (3, 5), (NULL, 9);
SELECT name FROM customer AS c
WHERE EXISTS (SELECT 1 FROM purchase AS p WHERE p.customer_id = c.id AND p.total > 60) ORDER BY name;
SELECT name FROM customer WHERE id NOT IN (SELECT customer_id FROM purchase WHERE customer_id IS NOT NULL) ORDER BY name;
SELECT count(*) FROM customer WHERE id NOT IN (SELECT customer_id FROM purchase);
SELECT name, (SELECT sum(total) FROM purchase WHERE customer_id = customer.id) AS spent FROM customer ORDER BY id;
SELECT name FROM customer WHERE country IN ('NO', 'DK') ORDER BY id;
SELECT count(*) FROM customer WHERE country IS NOT 'NO';
SELECT c.name, x.cnt
FROM customer AS c
JOIN (SELECT customer_id, count(*) AS cnt FROM purchase GROUP BY customer_id HAVING count(*) > 1) AS x ON x.customer_id = c.id
ORDER BY c.id;
SELECT (SELECT total FROM purchase ORDER BY total DESC), (SELECT total FROM purchase WHERE 0);
SELECT c.name, p.total FROM customer AS c LEFT JOIN purchase AS p ON p.customer_id = c.id ORDER BY c.id, p.id;
SELECT c.name, p.total FROM purchase AS p RIGHT JOIN customer AS c ON p.customer_id = c.id ORDER BY c.id, p.id;
SELECT c.id, p.id FROM customer AS c FULL OUTER JOIN purchase AS p ON p.customer_id = c.id AND p.total > 60 ORDER BY c.id, p.id;
SELECT c1.name, c2.name FROM customer AS c1 JOIN customer AS c2 ON c1.country = c2.country AND c1.id < c2.id ORDER BY c1.id, c2.id;
SELECT name, total FROM customer JOIN purchase ON purchase.customer_id = customer.id WHERE total BETWEEN 20 AND 100 ORDER BY purchase.id;
SELECT a.id, b.id FROM customer AS a CROSS JOIN customer AS b WHERE a.id + b.id = 5 ORDER BY a.id;
SELECT id, name FROM customer NATURAL JOIN (SELECT 2 AS id) ORDER BY id;
SELECT customer.name, purchase.total FROM customer JOIN purchase USING (id) ORDER BY id;
-- error: sub-select returns 2 columns - expected 1
SELECT name FROM customer WHERE id = (SELECT customer_id, total FROM purchase);
-- error: ambiguous column name
SELECT id FROM customer JOIN purchase ON purchase.customer_id = customer.id;

-- case: compound-select
CREATE TABLE a (x INTEGER);
CREATE TABLE b (x INTEGER);
INSERT INTO a VALUES (1), (2), (2), (3), (NULL);
INSERT INTO b VALUES (2), (3), (4), (NULL);
SELECT x FROM a UNION SELECT x FROM b ORDER BY x;
SELECT x FROM a UNION ALL SELECT x FROM b ORDER BY x;
SELECT x FROM a INTERSECT SELECT x FROM b ORDER BY x;
SELECT x FROM a EXCEPT SELECT x FROM b ORDER BY x;
SELECT x, 'a' AS src FROM a UNION ALL SELECT x, 'b' FROM b ORDER BY src, x;
SELECT 1 AS n, 'one' AS w UNION ALL VALUES (2, 'two') UNION ALL SELECT 3, 'three' ORDER BY n DESC LIMIT 2;
SELECT x FROM a UNION SELECT x FROM b ORDER BY 1 DESC LIMIT 2 OFFSET 1;
SELECT column1, column2 FROM (VALUES (1, 'a'), (2, 'b'), (3, NULL)) ORDER BY column1;
SELECT count(*) FROM (SELECT x FROM a UNION SELECT x FROM b);
-- error: SELECTs to the left and right of UNION do not have the same number of result columns
SELECT x FROM a UNION SELECT x, x FROM b;
-- error: ORDER BY clause should come after UNION not before
SELECT x FROM a ORDER BY x UNION SELECT x FROM b;

-- case: group-by-aggregates
CREATE TABLE sale (id INTEGER PRIMARY KEY, rep TEXT, region TEXT, amount INTEGER, note TEXT);
INSERT INTO sale (rep, region, amount, note) VALUES
  ('ann', 'n', 100, 'x'), ('ann', 's', 50, NULL), ('bob', 'n', 75, 'y'),
  ('bob', 'n', 25, 'z'), ('cy', 's', NULL, NULL), ('cy', 's', 10, 'w');
SELECT rep, count(*), count(amount), sum(amount), total(amount), min(amount), max(amount), avg(amount)
FROM sale GROUP BY rep ORDER BY rep;
SELECT region, sum(amount) AS s FROM sale GROUP BY region HAVING sum(amount) > 100 ORDER BY region;
SELECT rep,
       group_concat(note ORDER BY id) AS notes,
       group_concat(region, ';' ORDER BY id DESC) AS regions,
       string_agg(amount, '+' ORDER BY amount DESC) AS amts
FROM sale GROUP BY rep ORDER BY rep;
SELECT group_concat(DISTINCT region ORDER BY region) FROM sale;
SELECT sum(amount), total(amount), count(*), max(amount), avg(amount) FROM sale WHERE 0;
SELECT count(DISTINCT rep), count(DISTINCT region), max(rep), min(note) FROM sale;
SELECT rep, region, sum(amount) FROM sale GROUP BY 1, 2 ORDER BY 1, 2;
SELECT rep, max(amount), note FROM sale GROUP BY rep ORDER BY rep;
SELECT rep, count(*) FROM sale GROUP BY rep HAVING count(*) > 1 AND sum(amount) < 0;
SELECT CASE WHEN amount >= 50 THEN 'big' WHEN amount IS NULL THEN 'none' ELSE 'small' END AS size, count(*)
FROM sale GROUP BY size ORDER BY size;
-- error: no such column in GROUP BY
SELECT rep, sum(amount) FROM sale GROUP BY nope;
-- error: misuse of aggregate in WHERE
SELECT rep FROM sale WHERE sum(amount) > 10;

-- case: string-functions
SELECT upper('straße'), lower('ÀBC'), length('héllo'), length(x'0001'), octet_length('héllo'),
       substr('hello world', 7), substr('hello', -3, 2), substr('hello', 0, 2), substring('hello', 2),
       instr('banana', 'an'), instr('banana', 'x');
SELECT replace('a-b-c', '-', '+'), trim('  pad  '), ltrim('xxhixx', 'x'), rtrim('xxhixx', 'x'),
       trim('--a--', '-'), '[' || ' a ' || ']', concat('a', NULL, 'b', 1), concat_ws('-', 'a', NULL, 'b', 2);
SELECT 'Hello' LIKE 'hel%', 'Hello' LIKE 'HEL_O', 'Hello' GLOB 'hel*', 'Hello' GLOB 'H?llo',
       'a_c' LIKE 'a\_c' ESCAPE '\', 'abc' LIKE 'a\_c' ESCAPE '\', 'file.txt' GLOB '*.[tT][xX][tT]',
       'Ä' LIKE 'ä', 'abc' NOT LIKE '%b%';
SELECT printf('%5d|%-5s|%.2f|%05.1f|%x|%X|%o|%e|%%|%c', 42, 'ab', 3.14159, 2.5, 255, 255, 8, 12345.678, 'xyz'),
       format('%s has %d items', 'cart', 3), printf('%,d', 1234567), printf('%q', 'it''s'),
       printf('%Q', NULL), printf('%w', 'a"b'), printf('%.3s', 'abcdef'), printf('%+d %+d', 5, -5), printf('%d', '12abc');
SELECT hex('abc'), hex(255), unhex('616263'), typeof(unhex('6')), unhex('61 62', ' '), unhex('zz'),
       quote('it''s'), quote(x'00ff'), quote(1.5), quote(NULL), quote(12), char(72, 105), unicode('€');
SELECT length(NULL), upper(NULL), coalesce(NULL, NULL, 'z'), ifnull(NULL, 'd'), nullif(5, 5), nullif(5, 6),
       iif(1 > 2, 'yes', 'no'), CASE 3 WHEN 1 THEN 'one' WHEN 3 THEN 'three' ELSE 'many' END, CASE WHEN NULL THEN 'x' END;
SELECT 'a' || 1 || 2.5 || NULL, 'x' || NULL IS NULL, typeof('1' || '2'), '12' + '3', '3 apples' + 1, 'abc' * 2;
-- error: wrong number of arguments to function substr()
SELECT substr();
-- error: no such function
SELECT left('abc', 1);

-- case: numeric-edge-cases
SELECT 7 / 2, -7 / 2, 7 % 3, -7 % 3, 7 % -3, 7.0 / 2, 7 / 2.0, 1 / 0, 1 % 0, 1.0 / 0, 5 % 2.5, 5.5 % 2;
SELECT CAST('42' AS INTEGER), CAST('12abc' AS INTEGER), CAST('abc' AS INTEGER), CAST(3.99 AS INTEGER),
       CAST(-3.99 AS INTEGER), CAST('  7  ' AS INTEGER), CAST('1e3' AS INTEGER), CAST('0x10' AS INTEGER),
       CAST(x'3132' AS INTEGER), CAST(NULL AS INTEGER), CAST('-0' AS INTEGER), CAST('+5' AS INTEGER);
SELECT CAST('3.5' AS REAL), CAST('1e-2' AS REAL), CAST(10 AS TEXT), CAST(1.0 AS TEXT), CAST(1e20 AS TEXT),
       CAST('9.0' AS NUMERIC), typeof(CAST('9.0' AS NUMERIC)), CAST('abc' AS NUMERIC), CAST(12 AS BLOB),
       typeof(CAST(12 AS BLOB)), CAST('1e3' AS NUMERIC), CAST(' 12 ' AS NUMERIC);
SELECT 9223372036854775807, typeof(9223372036854775807), -9223372036854775808, typeof(-9223372036854775808),
       9223372036854775808, typeof(9223372036854775808), CAST('9223372036854775808' AS INTEGER),
       CAST(9.3e18 AS INTEGER), CAST(-9.3e18 AS INTEGER), CAST('-9223372036854775809' AS INTEGER);
SELECT 9223372036854775807 + 1, typeof(9223372036854775807 + 1), -9223372036854775807 - 2,
       9223372036854775807 * 2, abs(-9223372036854775807), 4611686018427387904 * 2, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF;
SELECT 0.1 + 0.2, 0.1 + 0.2 = 0.3, 1e308 * 10, -1e308 * 10, (1e308 * 10) - (1e308 * 10), 1e999, 1.0, 100.0, 1e15, 1e16, 123456789.125, 2.5e-7, -0.0;
SELECT round(2.5), round(-2.5), round(3.14159, 2), round(1234.5678, -2), round(0.5), round(1.005, 2), typeof(round(2)),
       abs(-5), abs(-5.5), abs('x'), abs(NULL), sign(-3), sign(0), sign(2.5), sign('a');
SELECT 1 << 62, 1 << 63, 1 << 64, -1 >> 1, 6 & 3, 6 | 3, ~5, 5 > 3 > 0, 10 BETWEEN 1 AND 5 + 5;
SELECT max(1, NULL, 3), min(2, 'a', 1), max('a', 'B'), 1 < '2', '10' < '9', 10 < 9, NULL = NULL, NULL IS NULL,
       1 IN (1, NULL), 2 IN (1, NULL), 2 NOT IN (1, NULL), NULL IS DISTINCT FROM 1, NULL IS NOT DISTINCT FROM NULL, TRUE + TRUE;
-- error: integer overflow
SELECT abs(-9223372036854775808);
-- error: integer overflow in sum()
SELECT sum(x) FROM (SELECT 9223372036854775807 AS x UNION ALL SELECT 1);

-- case: big-integer-storage
CREATE TABLE big (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT);
INSERT INTO big (n, r, t) VALUES (9223372036854775807, 9223372036854775807, 9223372036854775807);
INSERT INTO big (n, r, t) VALUES (-9223372036854775808, -1, '-9223372036854775808');
INSERT INTO big (n, r, t) VALUES ('9223372036854775808', '9007199254740993', 9007199254740993);
INSERT INTO big (n, r, t) VALUES (9007199254740993, 9007199254740993.0, 1.5e300);
SELECT id, n, typeof(n), r, typeof(r), t, typeof(t) FROM big ORDER BY id;
SELECT id FROM big WHERE n > 9007199254740992 ORDER BY n, id;
SELECT sum(n) FROM big WHERE id IN (1, 2);
SELECT total(n) FROM big WHERE id IN (1, 2);
UPDATE big SET n = n - 1 WHERE id = 1;
SELECT n, n + 0 = 9223372036854775806 FROM big WHERE id = 1;

-- case: date-functions
SELECT date('2024-02-29', '+1 year'), date('2024-01-31', '+1 month'), date('2024-03-31', '-1 month', 'start of month'),
       datetime('2024-01-01 12:00:00', '+90 minutes'), time('13:45:10', '-15 seconds'),
       date('2024-05-15', 'weekday 0'), date('2024-05-15', 'start of year', '+45 days');
SELECT strftime('%Y-%W', '2024-01-01'), strftime('%j', '2024-12-31'), strftime('%s', '2024-01-01 00:00:00'),
       strftime('%H:%M', '2024-01-01T08:05:00'), strftime('%w %u', '2024-06-02'),
       strftime('%Y-%m-%d %H:%M:%f', 1700000000.5, 'unixepoch'), strftime('%d/%m/%Y', '2024-07-04');
SELECT julianday('2000-01-01'), julianday('2024-03-01') - julianday('2024-02-01'), unixepoch('2024-01-01 00:00:00'),
       unixepoch('1970-01-02'), datetime(0, 'unixepoch'), datetime(1704067200, 'unixepoch'), date(2460000.5),
       datetime('2024-01-01T10:00:00+02:00'), datetime('2024-06-01 12:00', '+1 day', '-1 hour');
SELECT date('not a date'), datetime('2024-13-01'), date('2024-02-30'), typeof(date('x')), date('2024-02-29', '+1 year', '-1 year');
SELECT timediff('2024-03-01', '2024-02-01'), date('2024-01-31', '+1 month', 'floor'), date('2024-01-31', '+1 month', 'ceiling'),
       date('2023-12-31', 'start of month', '+1 month', '-1 day'), unixepoch('2024-01-01', '+1 day') - unixepoch('2024-01-01');
CREATE TABLE booking (id INTEGER PRIMARY KEY, starts TEXT NOT NULL, nights INTEGER NOT NULL);
INSERT INTO booking (starts, nights) VALUES ('2024-02-27', 3), ('2024-12-30', 4), ('2023-02-27', 3);
SELECT id, starts, date(starts, '+' || nights || ' days') AS ends, strftime('%Y', starts) AS y FROM booking ORDER BY starts;
SELECT strftime('%Y', starts) AS y, count(*), sum(nights) FROM booking GROUP BY y ORDER BY y;
