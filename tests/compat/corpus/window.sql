-- Compatibility corpus: window functions, frames, named windows, FILTER.
-- Every window that feeds a ROWS frame or a row-order-sensitive function
-- orders by a unique key, so results do not depend on scan order.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: window-ranking
CREATE TABLE score (id INTEGER PRIMARY KEY, player TEXT, team TEXT, pts INTEGER);
INSERT INTO score (player, team, pts) VALUES
  ('ann', 'red', 30), ('bob', 'red', 20), ('cy', 'blue', 30), ('di', 'blue', 10),
  ('ed', 'red', 20), ('fay', 'blue', 40), ('gus', 'red', 5);
SELECT id, player, pts,
       row_number() OVER (ORDER BY pts DESC, id) AS rn,
       rank() OVER (ORDER BY pts DESC) AS rnk,
       dense_rank() OVER (ORDER BY pts DESC) AS drnk
FROM score ORDER BY id;
SELECT id, team, pts,
       rank() OVER (PARTITION BY team ORDER BY pts DESC) AS team_rank,
       percent_rank() OVER (PARTITION BY team ORDER BY pts DESC) AS pr,
       cume_dist() OVER (PARTITION BY team ORDER BY pts DESC) AS cd
FROM score ORDER BY id;
SELECT id, ntile(3) OVER (ORDER BY id) AS bucket, ntile(2) OVER (PARTITION BY team ORDER BY id) AS half
FROM score ORDER BY id;
SELECT team, player FROM (
  SELECT team, player, row_number() OVER (PARTITION BY team ORDER BY pts DESC, id) AS rn FROM score
) WHERE rn = 1 ORDER BY team;
-- error: misuse of window function in WHERE
SELECT id FROM score WHERE row_number() OVER (ORDER BY id) > 2;
-- error: wrong number of arguments to ntile
SELECT ntile() OVER (ORDER BY id) FROM score;

-- case: window-lag-lead-values
CREATE TABLE reading (day INTEGER PRIMARY KEY, celsius INTEGER);
INSERT INTO reading VALUES (1, 10), (2, 12), (3, 9), (4, 15), (5, 15), (6, 11);
SELECT day, celsius,
       lag(celsius) OVER w AS prev,
       lead(celsius) OVER w AS next,
       lag(celsius, 2, -1) OVER w AS prev2,
       celsius - lag(celsius) OVER w AS delta
FROM reading WINDOW w AS (ORDER BY day) ORDER BY day;
SELECT day,
       first_value(celsius) OVER (ORDER BY day) AS first_t,
       last_value(celsius) OVER (ORDER BY day) AS last_default,
       last_value(celsius) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_all,
       nth_value(celsius, 3) OVER (ORDER BY day) AS third
FROM reading ORDER BY day;
SELECT day, lead(day, 1) OVER (ORDER BY celsius, day) AS next_day_by_temp FROM reading ORDER BY day;
SELECT day, max(celsius) OVER (ORDER BY day ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS max3,
       min(celsius) OVER (ORDER BY day ROWS BETWEEN CURRENT ROW AND 2 FOLLOWING) AS min_next3
FROM reading ORDER BY day;
-- error: second argument to nth_value must be a positive integer
SELECT nth_value(celsius, 0) OVER (ORDER BY day) FROM reading;

-- case: window-frames
CREATE TABLE tx (id INTEGER PRIMARY KEY, acct TEXT, day INTEGER, amt INTEGER);
INSERT INTO tx (acct, day, amt) VALUES
  ('a', 1, 100), ('a', 1, 50), ('a', 2, -30), ('a', 4, 20),
  ('b', 1, 10), ('b', 3, 10), ('b', 3, 5), ('b', 6, -2);
SELECT id, acct, day, amt, sum(amt) OVER (PARTITION BY acct ORDER BY id) AS running
FROM tx ORDER BY id;
SELECT id,
       sum(amt) OVER (PARTITION BY acct ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS pair_sum,
       count(*) OVER (PARTITION BY acct ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING) AS cnt
FROM tx ORDER BY id;
SELECT id,
       sum(amt) OVER (PARTITION BY acct ORDER BY day RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) AS r1,
       sum(amt) OVER (PARTITION BY acct ORDER BY day RANGE BETWEEN CURRENT ROW AND 2 FOLLOWING) AS r2,
       sum(amt) OVER (PARTITION BY acct ORDER BY day) AS r_default
FROM tx ORDER BY id;
SELECT id,
       sum(amt) OVER (PARTITION BY acct ORDER BY day GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) AS g1,
       count(*) OVER (ORDER BY day GROUPS CURRENT ROW) AS same_day
FROM tx ORDER BY id;
SELECT id,
       sum(amt) OVER (ORDER BY day, id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE CURRENT ROW) AS before_me,
       sum(amt) OVER (ORDER BY day GROUPS BETWEEN CURRENT ROW AND CURRENT ROW EXCLUDE TIES) AS ex_ties,
       sum(amt) OVER (ORDER BY day RANGE BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING EXCLUDE GROUP) AS ex_group
FROM tx ORDER BY id;
-- error: RANGE with offset needs exactly one ORDER BY term
SELECT sum(amt) OVER (ORDER BY day, id RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) FROM tx;
-- error: unsupported frame specification
SELECT sum(amt) OVER (ORDER BY id ROWS BETWEEN 1 FOLLOWING AND 1 PRECEDING) FROM tx;

-- case: window-named-and-filter
CREATE TABLE visit (id INTEGER PRIMARY KEY, page TEXT, ms INTEGER, bot INTEGER);
INSERT INTO visit (page, ms, bot) VALUES ('/', 120, 0), ('/', 80, 1), ('/a', 300, 0), ('/', 60, 0), ('/a', 20, 1), ('/b', 500, 0);
SELECT page,
       count(*) AS all_hits,
       count(*) FILTER (WHERE bot = 0) AS humans,
       sum(ms) FILTER (WHERE bot = 0) AS human_ms,
       max(ms) FILTER (WHERE bot = 1) AS max_bot_ms
FROM visit GROUP BY page ORDER BY page;
SELECT id, page,
       sum(ms) OVER win AS page_ms,
       count(*) FILTER (WHERE bot = 0) OVER win AS page_humans,
       max(ms) OVER (win ORDER BY id) AS running_max
FROM visit WINDOW win AS (PARTITION BY page) ORDER BY id;
SELECT id, avg(ms) OVER (ORDER BY id ROWS 2 PRECEDING) AS moving_avg FROM visit ORDER BY id;
SELECT id, group_concat(page, '|') OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS ctx
FROM visit ORDER BY id;
SELECT id, sum(ms) OVER a AS s, count(*) OVER b AS c
FROM visit WINDOW a AS (ORDER BY id), b AS (a ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
ORDER BY id;
-- error: no such window
SELECT id, sum(ms) OVER nowin FROM visit;

-- case: window-over-aggregates
CREATE TABLE monthly (m TEXT PRIMARY KEY, revenue INTEGER);
INSERT INTO monthly VALUES ('2023-11', 80), ('2023-12', 120), ('2024-01', 100), ('2024-02', 140), ('2024-03', 90), ('2024-04', 200);
WITH d AS (
  SELECT m, revenue, revenue - lag(revenue) OVER (ORDER BY m) AS diff FROM monthly
)
SELECT m, revenue, diff,
       CASE WHEN diff > 0 THEN 'up' WHEN diff < 0 THEN 'down' ELSE '-' END AS trend
FROM d ORDER BY m;
SELECT m, revenue, sum(revenue) OVER (ORDER BY m) * 100 / sum(revenue) OVER () AS cum_pct FROM monthly ORDER BY m;
SELECT m, revenue, rank() OVER (ORDER BY revenue DESC) AS r FROM monthly ORDER BY r, m;
SELECT substr(m, 1, 4) AS y, sum(revenue) AS total,
       row_number() OVER (ORDER BY sum(revenue) DESC) AS pos,
       sum(sum(revenue)) OVER () AS grand
FROM monthly GROUP BY y ORDER BY y;
SELECT count(*) OVER () AS n, m FROM monthly ORDER BY m LIMIT 2;
