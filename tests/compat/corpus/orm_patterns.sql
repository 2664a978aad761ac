-- Compatibility corpus: SQL as emitted by ORMs and migration tools
-- (Prisma, Django, Rails, SQLAlchemy, Drizzle, Knex-style), with literals in
-- place of bound parameters.
-- Lines starting with "-- error:" mark a statement expected to fail.

-- case: orm-prisma
CREATE TABLE "_prisma_migrations" (
    "id"                    TEXT PRIMARY KEY NOT NULL,
    "checksum"              TEXT NOT NULL,
    "finished_at"           DATETIME,
    "migration_name"        TEXT NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        DATETIME,
    "started_at"            DATETIME NOT NULL DEFAULT current_timestamp,
    "applied_steps_count"   INTEGER UNSIGNED NOT NULL DEFAULT 0
);
INSERT INTO "_prisma_migrations" ("id", "checksum", "migration_name", "started_at", "applied_steps_count")
VALUES ('6b1e2f4a-0000-4000-8000-000000000001', 'd1f0c3', '20240101000000_init', '2024-01-01 00:00:00', 0);
CREATE TABLE "User" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "isAdmin" BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE TABLE "Post" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "title" TEXT NOT NULL,
    "published" BOOLEAN NOT NULL DEFAULT false,
    "authorId" INTEGER NOT NULL,
    CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
UPDATE "_prisma_migrations" SET "finished_at" = '2024-01-01 00:00:01', "applied_steps_count" = 1
WHERE "id" = '6b1e2f4a-0000-4000-8000-000000000001';
INSERT INTO "main"."User" ("email", "name", "createdAt", "updatedAt")
VALUES ('alice@prisma.io', 'Alice', '2024-01-02 10:00:00', '2024-01-02 10:00:00')
RETURNING "id", "email", "name", "createdAt", "updatedAt", "isAdmin";
INSERT INTO "main"."User" ("email", "updatedAt") VALUES ('bob@prisma.io', '2024-01-03 09:00:00') RETURNING "id", "isAdmin";
-- error: UNIQUE on "User_email_key"
INSERT INTO "main"."User" ("email", "updatedAt") VALUES ('alice@prisma.io', '2024-01-04') RETURNING "id";
INSERT INTO "main"."Post" ("title", "authorId") VALUES ('Hello', 1), ('Draft', 1), ('Bob post', 2)
RETURNING "id", "title", "published";
-- error: FOREIGN KEY "Post_authorId_fkey"
INSERT INTO "main"."Post" ("title", "authorId") VALUES ('Ghost', 99) RETURNING "id";
SELECT "main"."User"."id", "main"."User"."email" FROM "main"."User"
WHERE "main"."User"."email" = 'alice@prisma.io' LIMIT 1 OFFSET 0;
SELECT "t0"."id", "t0"."title", "t1"."email" AS "author_email"
FROM "main"."Post" AS "t0" INNER JOIN "main"."User" AS "t1" ON "t1"."id" = "t0"."authorId"
WHERE "t0"."published" = 0 ORDER BY "t0"."id" ASC LIMIT 2 OFFSET 1;
SELECT COUNT(*) AS "_count" FROM (
  SELECT "main"."Post"."id" FROM "main"."Post" WHERE "main"."Post"."authorId" = 1 LIMIT -1 OFFSET 0
) AS "sub";
-- error: ON DELETE RESTRICT
DELETE FROM "main"."User" WHERE "id" = 1 RETURNING "id";
UPDATE "main"."User" SET "id" = 10 WHERE "id" = 2 RETURNING "id", "email";
UPDATE "main"."Post" SET "published" = true WHERE "id" IN (1, 3) RETURNING "id", "published";
SELECT "id", "authorId", "published" FROM "main"."Post" ORDER BY "id";
SELECT "id", "email", "isAdmin", typeof("isAdmin") FROM "main"."User" ORDER BY "id";
SELECT count(*) FROM "User" WHERE "createdAt" IS NOT NULL;
SELECT "id", "migration_name", "finished_at", "applied_steps_count" FROM "_prisma_migrations" ORDER BY "id";
SELECT name FROM sqlite_schema WHERE type = 'table' AND name = '_prisma_migrations';

-- case: orm-django
CREATE TABLE "django_migrations" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, "applied" datetime NOT NULL);
INSERT INTO "django_migrations" ("app", "name", "applied") VALUES ('contenttypes', '0001_initial', '2024-01-01 00:00:00.000000'), ('auth', '0001_initial', '2024-01-01 00:00:00.100000');
SELECT "django_migrations"."id", "django_migrations"."app", "django_migrations"."name", "django_migrations"."applied"
FROM "django_migrations" ORDER BY "django_migrations"."id" ASC;
CREATE TABLE "blog_entry" (
  "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "headline" varchar(255) NOT NULL,
  "pub_date" date NOT NULL,
  "rating" integer unsigned NOT NULL CHECK ("rating" >= 0),
  "is_draft" bool NOT NULL,
  "body" text NOT NULL
);
CREATE INDEX "blog_entry_pub_date_5a7b5e2c" ON "blog_entry" ("pub_date");
INSERT INTO "blog_entry" ("headline", "pub_date", "rating", "is_draft", "body") VALUES ('First', '2024-03-01', 5, 0, 'x') RETURNING "blog_entry"."id";
INSERT INTO "blog_entry" ("headline", "pub_date", "rating", "is_draft", "body") VALUES ('Second', '2024-03-05', 3, 1, 'y'), ('Third', '2024-04-01', 4, 0, 'z');
-- error: CHECK ("rating" >= 0)
INSERT INTO "blog_entry" ("headline", "pub_date", "rating", "is_draft", "body") VALUES ('Bad', '2024-04-02', -1, 0, 'z');
SELECT "blog_entry"."id", "blog_entry"."headline" FROM "blog_entry"
WHERE (NOT "blog_entry"."is_draft" AND "blog_entry"."pub_date" BETWEEN '2024-03-01' AND '2024-03-31')
ORDER BY "blog_entry"."pub_date" DESC, "blog_entry"."id" DESC;
SELECT COUNT(*) AS "__count" FROM "blog_entry" WHERE "blog_entry"."headline" LIKE '%ir%' ESCAPE '\';
SELECT (1) AS "a" FROM "blog_entry" WHERE "blog_entry"."id" = 2 LIMIT 1;
UPDATE "blog_entry" SET "rating" = ("blog_entry"."rating" + 1) WHERE "blog_entry"."id" IN (1, 3);
SELECT strftime('%Y', "blog_entry"."pub_date") AS "year", COUNT("blog_entry"."id") AS "n", SUM("blog_entry"."rating") AS "total"
FROM "blog_entry" GROUP BY 1 ORDER BY 1;
DELETE FROM "blog_entry" WHERE "blog_entry"."id" IN (2);
SELECT "id", "headline", "rating" FROM "blog_entry" ORDER BY "id";
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name IN ('django_migrations', 'blog_entry') ORDER BY name;

-- case: orm-rails
CREATE TABLE "schema_migrations" ("version" varchar NOT NULL PRIMARY KEY);
CREATE TABLE "ar_internal_metadata" ("key" varchar NOT NULL PRIMARY KEY, "value" varchar, "created_at" datetime(6) NOT NULL, "updated_at" datetime(6) NOT NULL);
INSERT INTO "schema_migrations" ("version") VALUES ('20240101120000'), ('20240102120000');
INSERT INTO "ar_internal_metadata" ("key", "value", "created_at", "updated_at")
VALUES ('environment', 'test', '2024-01-01 12:00:00.000000', '2024-01-01 12:00:00.000000')
ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "updated_at" = excluded."updated_at";
INSERT INTO "ar_internal_metadata" ("key", "value", "created_at", "updated_at")
VALUES ('environment', 'development', '2024-02-01 12:00:00.000000', '2024-02-01 12:00:00.000000')
ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "updated_at" = excluded."updated_at";
SELECT "key", "value", "created_at", "updated_at" FROM "ar_internal_metadata" ORDER BY "key";
SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC;
-- error: PRIMARY KEY on schema_migrations
INSERT INTO "schema_migrations" ("version") VALUES ('20240101120000');
CREATE TABLE "comments" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL, "body" text, "post_id" integer NOT NULL, "created_at" datetime(6) NOT NULL, "updated_at" datetime(6) NOT NULL);
CREATE INDEX "index_comments_on_post_id" ON "comments" ("post_id");
INSERT INTO "comments" ("body", "post_id", "created_at", "updated_at") VALUES ('hi', 1, '2024-01-01 00:00:00', '2024-01-01 00:00:00') RETURNING "id";
INSERT INTO "comments" ("body", "post_id", "created_at", "updated_at") VALUES ('again', 1, '2024-01-02 00:00:00', '2024-01-02 00:00:00'), ('other', 2, '2024-01-03 00:00:00', '2024-01-03 00:00:00') RETURNING "id";
SELECT "comments".* FROM "comments" WHERE "comments"."post_id" = 1 ORDER BY "comments"."id" DESC LIMIT 1;
SELECT 1 AS one FROM "comments" WHERE "comments"."post_id" = 3 LIMIT 1;
SELECT "comments"."post_id", COUNT(*) AS "count_all" FROM "comments" GROUP BY "comments"."post_id" ORDER BY "comments"."post_id";
UPDATE "comments" SET "body" = 'edited', "updated_at" = '2024-01-05 00:00:00' WHERE "comments"."id" = 1;
DELETE FROM "comments" WHERE "comments"."post_id" = 2;
SELECT "id", "body", "updated_at" FROM "comments" ORDER BY "id";

-- case: orm-sqlalchemy-drizzle-quoting
CREATE TABLE `users` (
  `id` integer PRIMARY KEY NOT NULL,
  `name` text NOT NULL,
  `is_active` integer DEFAULT true NOT NULL,
  `meta` text DEFAULT '{}' NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS `users_name_unique` ON `users` (`name`);
CREATE UNIQUE INDEX IF NOT EXISTS `users_name_unique` ON `users` (`name`);
CREATE TABLE [order items] ([id] INTEGER PRIMARY KEY, [user id] INTEGER REFERENCES `users`(`id`) ON DELETE CASCADE, [sku] TEXT, [qty] INTEGER NOT NULL DEFAULT 1);
INSERT INTO `users` (`name`) VALUES ('ann'), ('bob') RETURNING `id`, `name`, `is_active`, `meta`;
INSERT INTO [order items] ([user id], [sku], [qty]) VALUES (1, 'A', 2), (1, 'B', 1), (2, 'A', 5);
SELECT users.id AS users_id, users.name AS users_name,
       count([order items].id) AS item_count, coalesce(sum([order items].qty), 0) AS total_qty
FROM users LEFT OUTER JOIN [order items] ON users.id = [order items].[user id]
GROUP BY users.id, users.name ORDER BY users.id;
SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users WHERE users.is_active = 1) AS anon_1;
UPDATE `users` SET `is_active` = false WHERE `users`.`id` = 2;
SELECT `id`, `name`, `is_active` FROM `users` WHERE `is_active` = true ORDER BY `id`;
DELETE FROM `users` WHERE `id` = 1;
SELECT [id], [user id], [sku] FROM [order items] ORDER BY [id];
-- error: UNIQUE on users_name_unique
INSERT INTO "users" ("name") VALUES ('bob');
SELECT "users"."id" FROM "users" WHERE "users"."name" IN ('ann', 'bob', 'cy') ORDER BY "users"."id" LIMIT 10 OFFSET 0;
-- a double-quoted name that matches no column falls back to a string literal
SELECT "id", "no_such_column" FROM users ORDER BY id;
-- error: backticks always mean an identifier
SELECT `no_such_column` FROM users;

-- case: orm-pagination-and-counts
CREATE TABLE article (id INTEGER PRIMARY KEY, title TEXT NOT NULL, score INTEGER NOT NULL, author TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
INSERT INTO article (id, title, score, author)
SELECT i, 'Post ' || i, (i * 37) % 11, CASE i % 3 WHEN 0 THEN 'ann' WHEN 1 THEN 'bob' ELSE NULL END FROM n ORDER BY i;
SELECT count(*), sum(score), min(title), max(title) FROM article;
SELECT id, title, score FROM article ORDER BY score DESC, id ASC LIMIT 5;
SELECT id, title, score FROM article ORDER BY score DESC, id ASC LIMIT 5 OFFSET 5;
SELECT id, title FROM article ORDER BY id LIMIT 10, 3;
SELECT id, score FROM article WHERE (score, id) < (5, 20) ORDER BY score DESC, id DESC LIMIT 4;
SELECT count(*) FROM (SELECT id FROM article WHERE author IS NOT NULL LIMIT 100);
SELECT author, count(*) AS n, max(score) AS best FROM article GROUP BY author ORDER BY author NULLS LAST;
SELECT id FROM article ORDER BY author DESC NULLS FIRST, id LIMIT 3;
SELECT id FROM article ORDER BY id LIMIT -1 OFFSET 23;
SELECT id FROM article ORDER BY id LIMIT 0;
-- error: datatype mismatch in LIMIT
SELECT id FROM article ORDER BY id LIMIT 'x';

-- case: orm-blobs-and-booleans
CREATE TABLE file_blob (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  data BLOB,
  is_public INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1))
);
INSERT INTO file_blob (name, data, is_public) VALUES
  ('a.bin', x'00ff10', 1), ('empty', x'', 0), ('zeros', zeroblob(4), TRUE), ('text-as-blob', CAST('hi' AS BLOB), FALSE);
-- error: CHECK (boolean column)
INSERT INTO file_blob (name, is_public) VALUES ('bad', 2);
SELECT id, name, hex(data), length(data), typeof(data), is_public FROM file_blob ORDER BY id;
SELECT id, data FROM file_blob ORDER BY id;
SELECT name FROM file_blob WHERE data = x'00000000' ORDER BY id;
SELECT name FROM file_blob WHERE data = 'hi' ORDER BY id;
SELECT name FROM file_blob WHERE data = CAST('hi' AS BLOB) ORDER BY id;
SELECT x'41' = 'A', CAST(x'41' AS TEXT), typeof(x''), length(zeroblob(0)), hex(zeroblob(3));
SELECT id, substr(data, 2, 2), hex(substr(data, 2, 2)), instr(data, x'10') FROM file_blob WHERE id = 1;
SELECT id, is_public = TRUE, NOT is_public, is_public IS TRUE, iif(is_public, 'yes', 'no') FROM file_blob ORDER BY id;
UPDATE file_blob SET data = NULL WHERE length(data) = 0 RETURNING id, data;
-- error: malformed blob literal
SELECT x'0g';
-- error: blob literal with an odd number of hex digits
SELECT x'abc';

-- case: orm-upsert-and-soft-delete
CREATE TABLE "tags" ("id" INTEGER PRIMARY KEY, "slug" TEXT NOT NULL, "label" TEXT NOT NULL, "deleted_at" TEXT);
CREATE UNIQUE INDEX "tags_slug_live" ON "tags" ("slug") WHERE "deleted_at" IS NULL;
INSERT INTO "tags" ("slug", "label") VALUES ('rust', 'Rust'), ('sql', 'SQL');
UPDATE "tags" SET "deleted_at" = '2024-02-01T00:00:00Z' WHERE "slug" = 'sql';
INSERT INTO "tags" ("slug", "label") VALUES ('sql', 'SQL v2')
ON CONFLICT ("slug") WHERE "deleted_at" IS NULL DO UPDATE SET "label" = excluded."label"
RETURNING "id", "slug", "label";
INSERT INTO "tags" ("slug", "label") VALUES ('rust', 'Rust Lang')
ON CONFLICT ("slug") WHERE "deleted_at" IS NULL DO UPDATE SET "label" = excluded."label"
RETURNING "id", "slug", "label";
-- error: live duplicate slug
INSERT INTO "tags" ("slug", "label") VALUES ('rust', 'again');
SELECT "id", "slug", "label", "deleted_at" FROM "tags" ORDER BY "id";
SELECT "slug", count(*) FROM "tags" GROUP BY "slug" HAVING count(*) > 1 ORDER BY "slug";
