-- Compatibility corpus: JSON functions, operators, table-valued functions,
-- aggregates, JSONB and generated columns over JSON.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: json-basics
SELECT json('{"a" : 1, "b" : [1, 2 ,3]}'),
       json_valid('{"a":1}'), json_valid('{a:1}'), json_valid('[1,2'),
       json_type('{"a":[1,2]}', '$.a'), json_type('{"a":1.5}', '$.a'), json_type('null'),
       json_array(1, 'two', 3.5, NULL, json('{"x":true}')),
       json_object('k', 1, 'n', NULL, 's', 'str');
SELECT json_extract('{"a":{"b":[10,20,30]}}', '$.a.b[1]'),
       json_extract('{"a":{"b":[10,20,30]}}', '$.a.b[#-1]'),
       json_extract('{"a":{"b":[10,20,30]}}', '$.a'),
       typeof(json_extract('{"a":1.5}', '$.a')),
       json_extract('{"a":1}', '$.missing'),
       json_extract('{"a":1,"b":2}', '$.a', '$.b'),
       json_extract('{"a.b":7}', '$."a.b"');
SELECT '{"a":{"b":"x"}}' -> '$.a',
       '{"a":{"b":"x"}}' ->> '$.a.b',
       '{"a":{"b":"x"}}' -> 'a' -> 'b',
       '[1,2,3]' ->> 2,
       '[1,2,3]' -> -1,
       typeof('{"n":5}' ->> 'n'),
       '{"n":5}' -> 'n',
       '{"t":true}' ->> 't',
       '{"s":"q\"uote"}' ->> 's';
SELECT json_array_length('[1,2,[3,4]]'), json_array_length('[1,2,[3,4]]', '$[2]'),
       json_quote('he said "hi"'), json_quote(3.0), json_quote(json('[1]')),
       json_error_position('{"a":1,}'), json_error_position('[1]'),
       json(' [ 1 , 2 ] '), json('{a:1, b:[2,],}');
-- error: malformed JSON
SELECT json('not json');
-- error: bad JSON path
SELECT json_extract('{"a":1}', 'bad path');

-- case: json-modify
CREATE TABLE doc (id INTEGER PRIMARY KEY, body TEXT NOT NULL CHECK (json_valid(body)));
INSERT INTO doc (body) VALUES ('{"name":"ann","tags":["a","b"],"addr":{"city":"Oslo"}}');
-- error: CHECK (json_valid)
INSERT INTO doc (body) VALUES ('{broken');
UPDATE doc SET body = json_set(body, '$.age', 31, '$.addr.zip', '0150') WHERE id = 1;
UPDATE doc SET body = json_insert(body, '$.age', 99, '$.tags[#]', 'c') WHERE id = 1;
UPDATE doc SET body = json_replace(body, '$.name', 'Ann', '$.nope', 1) WHERE id = 1;
SELECT id, body FROM doc ORDER BY id;
UPDATE doc SET body = json_remove(body, '$.tags[0]', '$.addr.city') WHERE id = 1;
SELECT id, body, body ->> '$.addr.zip', json_array_length(body, '$.tags') FROM doc ORDER BY id;
SELECT json_patch('{"a":1,"b":{"c":2,"d":3}}', '{"b":{"c":null,"e":4},"f":[1]}');
SELECT json_set('{"a":1}', '$.b', json('[1,2]')),
       json_set('{"a":1}', '$.b', '[1,2]'),
       json_set('{"a":1}', '$.c', json_object('x', 1)),
       json_set('[1,2,3]', '$[1]', 'two'),
       json_insert('[1,2,3]', '$[#]', 4),
       json_remove('[1,2,3]', '$[0]', '$[0]');
SELECT json_pretty('{"a":[1,2],"b":{}}');

-- case: json-each-tree
CREATE TABLE post (id INTEGER PRIMARY KEY, meta TEXT);
INSERT INTO post VALUES (1, '{"tags":["sql","rust"],"score":5}'), (2, '{"tags":["json"],"score":7}'), (3, '{"score":1}');
SELECT p.id, t.key, t.value, t.type
FROM post AS p, json_each(p.meta, '$.tags') AS t
ORDER BY p.id, t.key;
SELECT t.value AS tag, count(*) AS n
FROM post, json_each(post.meta, '$.tags') AS t
GROUP BY t.value ORDER BY n DESC, tag;
SELECT id FROM post
WHERE EXISTS (SELECT 1 FROM json_each(post.meta, '$.tags') WHERE value = 'rust')
ORDER BY id;
SELECT key, value, type, atom, fullkey, path
FROM json_tree('{"a":{"b":[1,{"c":null}]},"d":"x"}') ORDER BY fullkey;
SELECT key, value, type FROM json_each('[10, "x", 1.5, true, null, {"k":1}]') ORDER BY key;
SELECT key, value FROM json_each('{"z":1,"a":2,"m":3}') ORDER BY key;
SELECT sum(value) FROM json_each('[1,2,3,4]');
-- error: malformed JSON in json_each
SELECT key FROM json_each('[1,');

-- case: json-aggregates
CREATE TABLE sale (id INTEGER PRIMARY KEY, region TEXT, product TEXT, qty INTEGER);
INSERT INTO sale (region, product, qty) VALUES ('eu', 'a', 3), ('eu', 'b', 1), ('us', 'a', 5), ('us', 'c', 2), ('eu', 'a', 4);
SELECT region, json_group_array(product ORDER BY id) AS products
FROM sale GROUP BY region ORDER BY region;
SELECT json_group_object(product, total ORDER BY product)
FROM (SELECT product, sum(qty) AS total FROM sale GROUP BY product);
SELECT json_object('region', region,
                   'items', json_group_array(json_object('p', product, 'q', qty) ORDER BY id))
FROM sale GROUP BY region ORDER BY region;
SELECT json_group_array(qty ORDER BY qty DESC, id) FROM sale;
SELECT json_group_array(product ORDER BY id) FROM sale WHERE qty > 100;
SELECT json_array_length(json_group_array(id)) FROM sale;

-- case: jsonb
SELECT typeof(jsonb('{"a":1}')), json(jsonb('{"a":[1,2,{"b":null}]}')), hex(jsonb('[]')), hex(jsonb('1'));
SELECT json(jsonb_extract(jsonb('{"a":{"b":2}}'), '$.a')),
       jsonb_extract(jsonb('{"a":{"b":2}}'), '$.a.b'),
       typeof(jsonb_extract(jsonb('{"a":{"b":2}}'), '$.a'));
CREATE TABLE jb (id INTEGER PRIMARY KEY, data BLOB);
INSERT INTO jb (data) VALUES (jsonb('{"n":1,"s":"x"}')), (jsonb_object('n', 2, 's', 'y')), (jsonb_array(1, 2, 3));
SELECT id, typeof(data), json(data), data ->> '$.n', json_type(data) FROM jb ORDER BY id;
UPDATE jb SET data = jsonb_set(data, '$.n', 10) WHERE id = 1;
UPDATE jb SET data = jsonb_insert(data, '$[#]', 4) WHERE id = 3;
SELECT id, json(data), hex(data) FROM jb ORDER BY id;
SELECT json_group_array(json(data) ORDER BY id) FROM jb;
SELECT json_valid(jsonb('[1]'), 4), json_valid('[1]', 4), json_valid('{a:1}', 2), json_valid('{a:1}', 1);
SELECT json(jsonb('{"x":1}')) = json('{"x" : 1}');
-- error: malformed JSON
SELECT jsonb('{"a":');

-- case: json-generated-columns
CREATE TABLE event (
  id INTEGER PRIMARY KEY,
  payload TEXT NOT NULL,
  kind TEXT GENERATED ALWAYS AS (payload ->> '$.kind') VIRTUAL,
  user_id INTEGER GENERATED ALWAYS AS (json_extract(payload, '$.user.id')) STORED
);
CREATE INDEX event_kind ON event(kind);
CREATE INDEX event_ts ON event(payload ->> '$.ts');
INSERT INTO event (payload) VALUES
  ('{"kind":"login","user":{"id":7},"ts":100}'),
  ('{"kind":"click","user":{"id":7},"ts":105}'),
  ('{"kind":"login","user":{"id":9},"ts":90}');
-- error: malformed JSON while computing the STORED column
INSERT INTO event (payload) VALUES ('oops');
SELECT id, kind, user_id, typeof(user_id) FROM event ORDER BY id;
SELECT kind, count(*) FROM event GROUP BY kind ORDER BY kind;
SELECT id FROM event WHERE payload ->> '$.ts' >= 100 ORDER BY payload ->> '$.ts', id;
UPDATE event SET payload = json_set(payload, '$.kind', 'logout') WHERE id = 3;
SELECT id, kind FROM event WHERE kind = 'logout' ORDER BY id;
SELECT user_id, json_group_array(kind ORDER BY id) FROM event GROUP BY user_id ORDER BY user_id;
