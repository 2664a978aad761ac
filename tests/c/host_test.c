/*
 * C host test of the sila-sqlite C ABI: every function, its errors, bad input (NULL for every
 * pointer argument, non-UTF-8 text, invalid JSON), asynchronous requests with callbacks on
 * worker threads, cancellation, transactions with their deadline, the versions operations,
 * many threads on shared handles, and use after close.
 *
 * Usage: host_test <scratch-dir>   (the directory must exist and be empty)
 * Exit status 0 when every check passed. Built and run by tests/c/run.sh under
 * AddressSanitizer (or valgrind).
 */
#define _POSIX_C_SOURCE 200809L
#include "sila_sqlite.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define EXPECT(call, want)                                                                \
    do {                                                                                  \
        sila_status st_ = (call);                                                         \
        sila_status want_ = (sila_status)(want);                                          \
        checks++;                                                                         \
        if (st_ != want_) {                                                               \
            fprintf(stderr, "%s:%d: %s returned %s, wanted %s: %s\n", __FILE__, __LINE__, \
                    #call, sila_status_name(st_), sila_status_name(want_),                \
                    sila_last_error_message());                                           \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define OK(call) EXPECT(call, SILA_OK)
#define NUL SILA_NUL_TERMINATED

static const char *const BAD_UTF8 = "\xff\xfe bad";

static const char *const MANIFEST =
    "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"main\"},"
    "{\"name\":\"ro\",\"readOnly\":true}]}}}";

static char scratch[512];

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", scratch, name);
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The single integer a query returns, or -1. */
static int64_t query_int(const sila_database *db, const char *sql) {
    sila_result *r = NULL;
    int64_t n = -1;
    if (sila_database_query(db, sql, NUL, NULL, 0, &r) == SILA_OK) {
        if (sila_result_int64(r, 0, 0, &n) != SILA_OK) n = -1;
    }
    sila_result_free(r);
    return n;
}

/* Copies the string value of "key" from a flat JSON document into out (empty if absent). */
static void json_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    const char *at;
    size_t n = 0;
    out[0] = '\0';
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    at = json ? strstr(json, pattern) : NULL;
    if (!at) return;
    at += strlen(pattern);
    while (at[n] && at[n] != '"' && n + 1 < cap) {
        out[n] = at[n];
        n++;
    }
    out[n] = '\0';
}

/* ------------------------------------------------------------------------------------- */

static void test_version_and_status(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", SILA_VERSION_MAJOR, SILA_VERSION_MINOR,
             SILA_VERSION_PATCH);
    CHECK(strcmp(sila_version(), expected) == 0);
    CHECK(sila_version_number() == SILA_VERSION_NUMBER);

    /* The numbers are a contract: pin them. */
    CHECK(SILA_OK == 0 && SILA_NOT_FOUND == 1 && SILA_INVALID_ARGUMENT == 3);
    CHECK(SILA_QUOTA_EXCEEDED == 7 && SILA_TIMEOUT == 8 && SILA_CANCELLED == 9);
    CHECK(SILA_SQLITE == 19 && SILA_PANIC == 21 && SILA_INTERNAL == 22);
    CHECK(strcmp(sila_status_name(SILA_OK), "OK") == 0);
    CHECK(strcmp(sila_status_name(SILA_QUOTA_EXCEEDED), "QUOTA_EXCEEDED") == 0);
    CHECK(strcmp(sila_status_name(SILA_PANIC), "PANIC") == 0);
    CHECK(strcmp(sila_status_name(9999), "UNKNOWN") == 0);
    CHECK(SILA_TYPE_INTEGER == 1 && SILA_TYPE_NULL == 5);
}

static void test_last_error(void) {
    char small[8];
    char big[256];
    size_t len;
    sila_workspace *ws = NULL;
    EXPECT(sila_workspace_open(NULL, NULL, &ws), SILA_INVALID_ARGUMENT);
    CHECK(ws == NULL);
    CHECK(sila_last_error_status() == SILA_INVALID_ARGUMENT);
    CHECK(sila_last_error_sqlite_code() == 0);
    CHECK(sila_last_error_retry_after_ms() == -1); /* only a budget refusal says when to retry */
    CHECK(strstr(sila_last_error_message(), "`dir` is NULL") != NULL);
    len = sila_last_error_message_copy(NULL, 0);
    CHECK(len == strlen(sila_last_error_message()));
    CHECK(sila_last_error_message_copy(small, sizeof small) == len);
    CHECK(strlen(small) == sizeof small - 1 && strncmp(small, sila_last_error_message(), 7) == 0);
    CHECK(sila_last_error_message_copy(big, sizeof big) == len);
    CHECK(strcmp(big, sila_last_error_message()) == 0);
    /* A success clears it. */
    {
        sila_workspace_options o = {.struct_size = sizeof o};
        char dir[600];
        path_in(dir, sizeof dir, "lasterr");
        OK(sila_workspace_open(dir, &o, &ws));
        CHECK(sila_last_error_status() == SILA_OK);
        CHECK(strcmp(sila_last_error_message(), "") == 0);
        sila_workspace_free(ws);
    }
}

static void test_options(void) {
    char dir[600];
    sila_workspace *ws = NULL;
    sila_workspace_options o;
    path_in(dir, sizeof dir, "options");
    memset(&o, 0, sizeof o);
    EXPECT(sila_workspace_open(dir, &o, &ws), SILA_INVALID_ARGUMENT); /* struct_size 0 */
    CHECK(strstr(sila_last_error_message(), "struct_size") != NULL);
    o.struct_size = sizeof o + 8; /* from a newer header than this library */
    EXPECT(sila_workspace_open(dir, &o, &ws), SILA_INVALID_ARGUMENT);
    o.struct_size = sizeof o;
    o.reserved = 1;
    EXPECT(sila_workspace_open(dir, &o, &ws), SILA_INVALID_ARGUMENT);
    CHECK(ws == NULL);
    o.reserved = 0;
    EXPECT(sila_workspace_open(dir, &o, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_open("", &o, &ws), SILA_INVALID_ARGUMENT);
    /* A host built against version 1 of the struct (up to `reserved`): the rest default. */
    o.struct_size = (uint32_t)offsetof(sila_workspace_options, admission_wait_ms);
    o.admission_wait_ms = 7; /* past its size: never read */
    OK(sila_workspace_open(dir, &o, &ws));
    sila_workspace_free(ws);
    ws = NULL;
    o.struct_size = sizeof o;
    o.admission_wait_ms = 0;
    /* NULL options: all defaults. */
    OK(sila_workspace_open(dir, NULL, &ws));
    CHECK(ws != NULL);
    {
        sila_workspace *second = NULL;
        EXPECT(sila_workspace_open(dir, NULL, &second), SILA_WORKSPACE_LOCKED);
        CHECK(second == NULL);
    }
    sila_workspace_free(ws);
}

static void test_register_and_open(sila_workspace *ws, sila_database **db_out, sila_database **ro_out) {
    char *json = NULL;
    size_t len = 0;
    sila_database *db = NULL;

    EXPECT(sila_workspace_register_app(ws, "com.example.notes", "{\"capabilities\":", NUL, NULL, NULL),
           SILA_INVALID_MANIFEST);
    EXPECT(sila_workspace_register_app(ws, "com.example.notes",
                                       "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[],\"x\":1}}}",
                                       NUL, NULL, NULL),
           SILA_INVALID_MANIFEST);
    EXPECT(sila_workspace_register_app(ws, BAD_UTF8, MANIFEST, NUL, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_register_app(ws, "com.example.notes", BAD_UTF8, NUL, NULL, NULL),
           SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_register_app(ws, "../escape", MANIFEST, NUL, NULL, NULL), SILA_INVALID_NAME);
    /* The length counts: a prefix of the manifest is not JSON. */
    EXPECT(sila_workspace_register_app(ws, "com.example.notes", MANIFEST, 10, NULL, NULL),
           SILA_INVALID_MANIFEST);
    OK(sila_workspace_register_app(ws, "com.example.notes", MANIFEST, strlen(MANIFEST), &json, &len));
    CHECK(json != NULL && len == strlen(json));
    CHECK(json && strstr(json, "\"app_id\":\"com.example.notes\"") != NULL);
    sila_string_free(json);
    json = NULL;
    /* Same manifest again: a no-op. A different one: ALREADY_EXISTS. */
    OK(sila_workspace_register_app(ws, "com.example.notes", MANIFEST, NUL, NULL, NULL));
    EXPECT(sila_workspace_register_app(ws, "com.example.notes",
                                       "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"other\"}]}}}",
                                       NUL, NULL, NULL),
           SILA_ALREADY_EXISTS);
    OK(sila_workspace_apps(ws, &json, &len));
    CHECK(json && json[0] == '[' && strstr(json, "com.example.notes") != NULL);
    sila_string_free(json);
    json = NULL;

    /* App lifecycle: a second app updated (a database added) and unregistered. */
    EXPECT(sila_workspace_update_app(ws, "com.example.nobody", MANIFEST, NUL, NULL, NULL), SILA_NOT_FOUND);
    EXPECT(sila_workspace_update_app(ws, "com.example.notes", "{\"capabilities\":", NUL, NULL, NULL),
           SILA_INVALID_MANIFEST);
    OK(sila_workspace_register_app(ws, "com.example.brief",
                                   "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"a\"}]}}}",
                                   NUL, NULL, NULL));
    OK(sila_workspace_update_app(
        ws, "com.example.brief",
        "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}}", NUL,
        &json, &len));
    CHECK(json && strstr(json, "\"name\":\"b\"") != NULL);
    sila_string_free(json);
    json = NULL;
    OK(sila_workspace_open_database(ws, "com.example.brief", "b", &db));
    EXPECT(sila_workspace_unregister_app(ws, "com.example.brief"), SILA_BUSY);
    sila_database_free(db);
    db = NULL;
    OK(sila_workspace_unregister_app(ws, "com.example.brief"));
    EXPECT(sila_workspace_unregister_app(ws, "com.example.brief"), SILA_NOT_FOUND);
    EXPECT(sila_workspace_open_database(ws, "com.example.brief", "b", &db), SILA_NOT_FOUND);
    EXPECT(sila_workspace_unregister_app(NULL, "com.example.brief"), SILA_INVALID_ARGUMENT);

    EXPECT(sila_workspace_open_database(ws, "com.example.nobody", "main", &db), SILA_NOT_FOUND);
    EXPECT(sila_workspace_open_database(ws, "com.example.notes", "secret", &db), SILA_CAPABILITY_DENIED);
    EXPECT(sila_workspace_open_database(ws, "com.example.notes", "sila://app/com.example.other/db/main", &db),
           SILA_CAPABILITY_DENIED);
    EXPECT(sila_workspace_open_database(ws, "com.example.notes", BAD_UTF8, &db), SILA_INVALID_ARGUMENT);
    CHECK(db == NULL);
    OK(sila_workspace_open_database(ws, "com.example.notes", "sila://db/main", db_out));
    OK(sila_workspace_open_database(ws, "com.example.notes", "ro", ro_out));
}

static void test_exec_and_query(const sila_database *db, const sila_database *ro) {
    sila_result *r = NULL;
    const char *text = NULL;
    const char *name = NULL;
    const uint8_t *blob = NULL;
    size_t len = 0;
    int64_t i = 0;
    double d = 0;
    sila_type type = 0;
    const char *json = NULL;

    OK(sila_database_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, score REAL, data BLOB)",
                          NUL, NULL, 0, NULL));
    OK(sila_database_exec(db, "INSERT INTO t (name, score, data) VALUES (?, ?, ?)", NUL,
                          "[\"alpha\", 1.5, {\"$blob\":\"aGkh\"}]", NUL, &r));
    CHECK(sila_result_changes(r) == 1 && sila_result_last_insert_rowid(r) == 1);
    CHECK(sila_result_row_count(r) == 0 && sila_result_column_count(r) == 0);
    OK(sila_result_json(r, &json, &len));
    CHECK(strcmp(json, "{\"changes\":1,\"columns\":[],\"last_insert_rowid\":1,\"rows\":[],\"statements\":1}") == 0
          && len == strlen(json));
    sila_result_free(r);
    r = NULL;
    /* RETURNING rows come back from exec, cell by cell; query refuses a statement that writes. */
    OK(sila_database_exec(db, "INSERT INTO t (name, score) VALUES ('ret', 0.25) RETURNING id, name", NUL, NULL, 0,
                          &r));
    CHECK(sila_result_changes(r) == 1 && sila_result_last_insert_rowid(r) == 2);
    CHECK(sila_result_row_count(r) == 1 && sila_result_column_count(r) == 2);
    {
        int64_t id = 0;
        OK(sila_result_int64(r, 0, 0, &id));
        CHECK(id == 2);
    }
    sila_result_free(r);
    r = NULL;
    CHECK(sila_database_query(db, "DELETE FROM t WHERE name = 'ret' RETURNING id", NUL, NULL, 0, &r)
          == SILA_WRITE_IN_QUERY);
    CHECK(r == NULL);
    OK(sila_database_exec(db, "DELETE FROM t WHERE name = 'ret'", NUL, NULL, 0, NULL));
    /* A script: all of it, or (on an error, which names the statement) none of it. */
    OK(sila_database_execute_script(db, "CREATE TABLE s1 (x);\nINSERT INTO s1 VALUES (1), (2);\n", NUL, &r));
    CHECK(sila_result_changes(r) == 2);
    sila_result_free(r);
    r = NULL;
    CHECK(sila_database_execute_script(db, "INSERT INTO s1 VALUES (3);\nINSERT INTO nope VALUES (1);", NUL, &r)
          == SILA_SQLITE);
    CHECK(r == NULL);
    CHECK(strstr(sila_last_error_message(), "statement 2 of the script (line 2, column 1)") != NULL);
    OK(sila_database_query(db, "SELECT count(*) FROM s1", NUL, NULL, 0, &r));
    {
        int64_t n = 0;
        OK(sila_result_int64(r, 0, 0, &n));
        CHECK(n == 2);
    }
    sila_result_free(r);
    r = NULL;
    /* Parameters given by length, not NUL-terminated. */
    {
        const char params[] = "[\"beta\", 2, null]XXXX";
        OK(sila_database_exec(db, "INSERT INTO t (name, score, data) VALUES (?, ?, ?)", NUL, params,
                              strlen("[\"beta\", 2, null]"), NULL));
    }

    /* Bad input changes nothing. */
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "[\"x\"", NUL, NULL),
           SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "params_json") != NULL);
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "{\"a\":1}", NUL, NULL),
           SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "[[1]]", NUL, NULL),
           SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "[18446744073709551615]", NUL, NULL),
           SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, BAD_UTF8, NUL, NULL),
           SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_exec(db, BAD_UTF8, NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "UTF-8") != NULL);
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "[]", NUL, NULL),
           SILA_INVALID_ARGUMENT);
    CHECK(query_int(db, "SELECT count(*) FROM t") == 2);

    /* SQLite's errors keep its extended code. */
    EXPECT(sila_database_exec(db, "INSERT INTO t (name) VALUES ('alpha')", NUL, NULL, 0, NULL), SILA_SQLITE);
    CHECK(sila_last_error_sqlite_code() == 2067); /* SQLITE_CONSTRAINT_UNIQUE */
    CHECK(strstr(sila_last_error_message(), "UNIQUE") != NULL);
    EXPECT(sila_database_query(db, "SELEC nonsense", NUL, NULL, 0, &r), SILA_SQLITE);
    CHECK(sila_last_error_sqlite_code() == 1 && r == NULL);
    EXPECT(sila_database_exec(db, "BEGIN", NUL, NULL, 0, NULL), SILA_POLICY_DENIED);
    EXPECT(sila_database_exec(db, "PRAGMA journal_mode=DELETE", NUL, NULL, 0, NULL), SILA_POLICY_DENIED);
    EXPECT(sila_database_exec(ro, "CREATE TABLE x (a)", NUL, NULL, 0, NULL), SILA_READ_ONLY);

    /* Typed access. */
    OK(sila_database_query(db, "SELECT id, name, score, data, NULL AS nada FROM t ORDER BY id", NUL, NULL, 0, &r));
    CHECK(sila_result_column_count(r) == 5 && sila_result_row_count(r) == 2);
    OK(sila_result_column_name(r, 1, &name));
    CHECK(strcmp(name, "name") == 0);
    OK(sila_result_column_name(r, 4, &name));
    CHECK(strcmp(name, "nada") == 0);
    name = NULL;
    EXPECT(sila_result_column_name(r, 5, &name), SILA_INVALID_ARGUMENT);
    CHECK(name == NULL);
    OK(sila_result_type(r, 0, 0, &type));
    CHECK(type == SILA_TYPE_INTEGER);
    OK(sila_result_type(r, 0, 1, &type));
    CHECK(type == SILA_TYPE_TEXT);
    OK(sila_result_type(r, 0, 2, &type));
    CHECK(type == SILA_TYPE_REAL);
    OK(sila_result_type(r, 0, 3, &type));
    CHECK(type == SILA_TYPE_BLOB);
    OK(sila_result_type(r, 1, 3, &type));
    CHECK(type == SILA_TYPE_NULL);
    EXPECT(sila_result_type(r, 2, 0, &type), SILA_INVALID_ARGUMENT);
    OK(sila_result_int64(r, 1, 0, &i));
    CHECK(i == 2);
    OK(sila_result_double(r, 0, 2, &d));
    CHECK(d == 1.5);
    OK(sila_result_double(r, 1, 2, &d)); /* REAL column holding an integer affinity value */
    CHECK(d == 2.0);
    OK(sila_result_text(r, 0, 1, &text, &len));
    CHECK(len == 5 && strcmp(text, "alpha") == 0);
    OK(sila_result_blob(r, 0, 3, &blob, &len));
    CHECK(len == 3 && memcmp(blob, "hi!", 3) == 0);
    /* Wrong type or range: an error, and the out-param is left alone. */
    i = 42;
    EXPECT(sila_result_int64(r, 0, 1, &i), SILA_INVALID_ARGUMENT);
    CHECK(i == 42);
    EXPECT(sila_result_int64(r, 1, 3, &i), SILA_INVALID_ARGUMENT); /* NULL cell */
    EXPECT(sila_result_text(r, 0, 0, &text, &len), SILA_INVALID_ARGUMENT);
    EXPECT(sila_result_blob(r, 0, 1, &blob, &len), SILA_INVALID_ARGUMENT);
    EXPECT(sila_result_double(r, 0, 1, &d), SILA_INVALID_ARGUMENT);
    EXPECT(sila_result_int64(r, 0, 99, &i), SILA_INVALID_ARGUMENT);
    OK(sila_result_json(r, &json, &len));
    CHECK(strcmp(json, "{\"columns\":[\"id\",\"name\",\"score\",\"data\",\"nada\"],"
                       "\"rows\":[[1,\"alpha\",1.5,{\"$blob\":\"aGkh\"},null],[2,\"beta\",2.0,null,null]]}") == 0);
    sila_result_free(r);
    r = NULL;

    /* Text holding NUL bytes keeps its full length; an empty blob has a non-NULL pointer. */
    OK(sila_database_query(db, "SELECT CAST(x'610062' AS TEXT), x'', 1e999", NUL, NULL, 0, &r));
    OK(sila_result_text(r, 0, 0, &text, &len));
    CHECK(len == 3 && text[0] == 'a' && text[1] == '\0' && text[2] == 'b' && text[3] == '\0');
    OK(sila_result_blob(r, 0, 1, &blob, &len));
    CHECK(len == 0 && blob != NULL);
    OK(sila_result_json(r, &json, &len));
    CHECK(strstr(json, "{\"$real\":\"Infinity\"}") != NULL);
    sila_result_free(r);
    r = NULL;

    /* Parameters of every JSON kind. */
    OK(sila_database_query(db, "SELECT ?, ?, ?, ?, ?, ?", NUL,
                           "[true, -9223372036854775808, 0.25, \"t\", null, {\"$real\":\"-Infinity\"}]", NUL, &r));
    OK(sila_result_int64(r, 0, 0, &i));
    CHECK(i == 1);
    OK(sila_result_int64(r, 0, 1, &i));
    CHECK(i == INT64_MIN);
    OK(sila_result_type(r, 0, 4, &type));
    CHECK(type == SILA_TYPE_NULL);
    sila_result_free(r);
}

/* ------------------------------------------------------------------------------------- */

/* A small deterministic generator for random bit patterns (xorshift64*). */
static uint64_t next_bits(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

/* Typed binds and getters, and exact values through both the typed and the JSON paths. */
static void test_statements_and_exact_values(const sila_database *db) {
    sila_statement *ins = NULL, *sel = NULL;
    sila_result *r = NULL;
    size_t index = 0;
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    int exact_typed = 0, exact_json = 0, tried = 0;

    OK(sila_database_exec(db, "CREATE TABLE vals (i INTEGER, r REAL, t TEXT, b BLOB)", NUL, NULL, 0, NULL));
    OK(sila_database_prepare(db, "INSERT INTO vals (i, r, t, b) VALUES (:i, ?2, $t, @b) RETURNING rowid", NUL, &ins));
    CHECK(sila_statement_parameter_count(ins) == 4 && sila_statement_writes(ins));
    OK(sila_statement_parameter_index(ins, ":i", &index));
    CHECK(index == 1);
    OK(sila_statement_parameter_index(ins, "@b", &index));
    CHECK(index == 4);
    EXPECT(sila_statement_parameter_index(ins, "i", &index), SILA_NOT_FOUND);
    EXPECT(sila_statement_bind_int64(ins, 0, 1), SILA_INVALID_ARGUMENT);
    EXPECT(sila_statement_bind_int64(ins, 5, 1), SILA_INVALID_ARGUMENT);
    EXPECT(sila_statement_query(ins, &r), SILA_WRITE_IN_QUERY);
    EXPECT(sila_database_prepare(db, "SELECT 1; SELECT 2", NUL, &sel), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_prepare(db, "SELEC 1", NUL, &sel), SILA_SQLITE);
    CHECK(sel == NULL);

    /* Every storage class, at its edges: INT64_MIN, a subnormal, text with a NUL, bytes with zeros. */
    OK(sila_statement_bind_int64(ins, 1, INT64_MIN));
    OK(sila_statement_bind_double(ins, 2, 5e-324));
    OK(sila_statement_bind_text(ins, 3, "a\0b", 3));
    OK(sila_statement_bind_blob(ins, 4, "\0\1\0", 3));
    OK(sila_statement_exec(ins, &r));
    CHECK(sila_result_changes(r) == 1 && sila_result_row_count(r) == 1);
    sila_result_free(r);
    r = NULL;
    OK(sila_database_prepare(db, "SELECT i, r, t, b, typeof(i) FROM vals WHERE rowid = ?", NUL, &sel));
    CHECK(!sila_statement_writes(sel));
    OK(sila_statement_bind_int64(sel, 1, 1));
    OK(sila_statement_query(sel, &r));
    {
        int64_t i = 0;
        double d = 0;
        const char *t = NULL;
        const uint8_t *b = NULL;
        size_t tlen = 0, blen = 0;
        double want = 5e-324;
        OK(sila_result_int64(r, 0, 0, &i));
        OK(sila_result_double(r, 0, 1, &d));
        OK(sila_result_text(r, 0, 2, &t, &tlen));
        OK(sila_result_blob(r, 0, 3, &b, &blen));
        CHECK(i == INT64_MIN && memcmp(&d, &want, sizeof d) == 0);
        CHECK(tlen == 3 && memcmp(t, "a\0b", 3) == 0);
        CHECK(blen == 3 && memcmp(b, "\0\1\0", 3) == 0);
    }
    sila_result_free(r);
    r = NULL;
    OK(sila_statement_clear_bindings(ins));
    OK(sila_statement_exec(ins, NULL));
    CHECK(query_int(db, "SELECT count(*) FROM vals WHERE i IS NULL AND r IS NULL AND t IS NULL AND b IS NULL") == 1);

    /* Random doubles come back bit for bit, typed and as JSON text (%.17g round-trips). */
    sila_statement_free(sel);
    sel = NULL;
    OK(sila_database_prepare(db, "SELECT ?", NUL, &sel));
    for (int k = 0; k < 2000; k++) {
        uint64_t bits = next_bits(&state);
        double d, back = 0;
        char json[64];
        memcpy(&d, &bits, sizeof d);
        if (d != d || d - d != 0) continue; /* NaN and infinities travel tagged; see value.rs */
        tried++;
        OK(sila_statement_bind_double(sel, 1, d));
        OK(sila_statement_query(sel, &r));
        OK(sila_result_double(r, 0, 0, &back));
        exact_typed += memcmp(&d, &back, sizeof d) == 0;
        sila_result_free(r);
        r = NULL;
        snprintf(json, sizeof json, "[%.17g]", d);
        OK(sila_database_query(db, "SELECT ?", NUL, json, NUL, &r));
        OK(sila_result_double(r, 0, 0, &back));
        exact_json += memcmp(&d, &back, sizeof d) == 0;
        sila_result_free(r);
        r = NULL;
    }
    CHECK(tried > 1000 && exact_typed == tried && exact_json == tried);
    /* An integer just outside the 64-bit range is refused the same way on either side. */
    EXPECT(sila_database_query(db, "SELECT ?", NUL, "[9223372036854775808]", NUL, &r), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_query(db, "SELECT ?", NUL, "[-9223372036854775809]", NUL, &r), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "outside SQLite's 64-bit range") != NULL);
    CHECK(r == NULL);
    sila_statement_free(sel);
    sila_statement_free(ins);
    sila_statement_free(NULL);
}

static void test_transactions(const sila_database *db, const sila_database *ro) {
    sila_transaction *tx = NULL;
    sila_result *r = NULL;
    int64_t n = 0;

    OK(sila_database_exec(db, "CREATE TABLE acct (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)", NUL, NULL, 0, NULL));

    /* Commit. */
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (?)", NUL, "[10]", NUL, &r));
    CHECK(sila_result_changes(r) == 1);
    sila_result_free(r);
    r = NULL;
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (?)", NUL, "[20]", NUL, NULL));
    OK(sila_transaction_query(tx, "SELECT sum(v) FROM acct", NUL, NULL, 0, &r));
    OK(sila_result_int64(r, 0, 0, &n));
    CHECK(n == 30);
    sila_result_free(r);
    r = NULL;
    /* Bad arguments are refused before anything runs: the transaction stays open. */
    EXPECT(sila_transaction_exec(tx, BAD_UTF8, NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (?)", NUL, "[", NUL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_transaction_query(tx, "SELECT 1", NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    OK(sila_transaction_commit(tx));
    EXPECT(sila_transaction_commit(tx), SILA_INVALID_ARGUMENT); /* finished */
    CHECK(strstr(sila_last_error_message(), "committed") != NULL);
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (1)", NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    sila_transaction_free(tx);
    tx = NULL;
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 30);

    /* Rollback. */
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (100)", NUL, NULL, 0, NULL));
    OK(sila_transaction_rollback(tx));
    EXPECT(sila_transaction_rollback(tx), SILA_INVALID_ARGUMENT);
    sila_transaction_free(tx);
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 30);

    /* A failing statement rolls the whole transaction back. */
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (1000)", NUL, NULL, 0, NULL));
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (NULL)", NUL, NULL, 0, NULL), SILA_SQLITE);
    CHECK(sila_last_error_sqlite_code() == 1299); /* SQLITE_CONSTRAINT_NOTNULL */
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (1)", NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "rolled back") != NULL);
    EXPECT(sila_transaction_commit(tx), SILA_INVALID_ARGUMENT);
    sila_transaction_free(tx);
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 30);

    /* Freeing an open transaction rolls it back. */
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (5000)", NUL, NULL, 0, NULL));
    sila_transaction_free(tx);
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 30);

    /* The maximum duration (transaction_timeout_ms = 1500 in this workspace) is enforced:
       the next statement after it answers TIMEOUT, and so does a late commit. */
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (7)", NUL, NULL, 0, NULL));
    sleep_ms(2000);
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (8)", NUL, NULL, 0, NULL), SILA_TIMEOUT);
    EXPECT(sila_transaction_commit(tx), SILA_INVALID_ARGUMENT);
    sila_transaction_free(tx);
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (9)", NUL, NULL, 0, NULL));
    sleep_ms(2000);
    EXPECT(sila_transaction_commit(tx), SILA_TIMEOUT);
    sila_transaction_free(tx);
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 30);
    /* The writer is free again. */
    OK(sila_database_exec(db, "INSERT INTO acct (v) VALUES (1)", NUL, NULL, 0, NULL));
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 31);

    tx = NULL;
    EXPECT(sila_database_begin(ro, &tx), SILA_READ_ONLY);
    CHECK(tx == NULL);
}

/* ------------------------------------------------------------------------------------- */

struct callback_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int free_in_callback;
    pthread_t thread;
    sila_status status;
    size_t rows;
};

static void on_complete(void *userdata, sila_request *request) {
    struct callback_state *s = (struct callback_state *)userdata;
    sila_result *r = NULL;
    sila_status st = sila_request_take_result(request, &r);
    size_t rows = sila_result_row_count(r);
    sila_result_free(r);
    if (s->free_in_callback) sila_request_free(request);
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->thread = pthread_self();
    s->status = st;
    s->rows = rows;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int wait_calls(struct callback_state *s, int calls) {
    struct timespec deadline;
    int ok;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&s->mu);
    while (s->calls < calls) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) != 0) break;
    }
    ok = s->calls >= calls;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void callback_state_init(struct callback_state *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void callback_state_destroy(struct callback_state *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static const char *const SLOW_SQL =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
    "SELECT count(*) FROM c";

/* An app's concurrency slots: N requests in flight is the limit, the N+1-th is BUSY (at once
   with SILA_NO_WAIT); a request's slot is free again before its answer arrives. */
static void test_admission(void) {
    char dir[600];
    sila_workspace *ws = NULL;
    sila_database *db = NULL;
    sila_request *held[2] = {NULL, NULL};
    sila_request *req = NULL;
    sila_result *r = NULL;
    sila_workspace_options o = {.struct_size = sizeof o};
    int i, busy = 0;

    path_in(dir, sizeof dir, "admission");
    o.max_concurrent_requests_per_app = 2;
    o.admission_wait_ms = SILA_NO_WAIT;
    o.reserved2 = 1;
    EXPECT(sila_workspace_open(dir, &o, &ws), SILA_INVALID_ARGUMENT);
    o.reserved2 = 0;
    OK(sila_workspace_open(dir, &o, &ws));
    if (ws == NULL) return;
    OK(sila_workspace_register_app(ws, "com.example.notes", MANIFEST, NUL, NULL, NULL));
    OK(sila_workspace_open_database(ws, "com.example.notes", "main", &db));
    if (db == NULL) return;
    OK(sila_database_exec(db, "CREATE TABLE n (v)", NUL, NULL, 0, &r));
    sila_result_free(r);
    r = NULL;
    for (i = 0; i < 2; i++) OK(sila_database_submit_query(db, SLOW_SQL, NUL, NULL, 0, NULL, NULL, &held[i]));
    /* N = 2 in flight: the third is refused. */
    EXPECT(sila_database_query(db, "SELECT 1", NUL, NULL, 0, &r), SILA_BUSY);
    CHECK(r == NULL);
    CHECK(strstr(sila_last_error_message(), "max_concurrent_requests_per_app is 2") != NULL);
    OK(sila_request_cancel(held[0]));
    EXPECT(sila_request_take_result(held[0], NULL), SILA_CANCELLED);
    sila_request_free(held[0]);
    /* One held: one at a time, each submitted the moment the last was answered, is never
       refused (a slot is given back before the answer). */
    for (i = 0; i < 200; i++) {
        req = NULL;
        if (sila_database_submit_exec(db, "INSERT INTO n (v) VALUES (1)", NUL, NULL, 0, NULL, NULL, &req) != SILA_OK) {
            busy++;
            continue;
        }
        if (sila_request_take_result(req, NULL) == SILA_BUSY) busy++;
        sila_request_free(req);
    }
    CHECK(busy == 0);
    CHECK(query_int(db, "SELECT count(*) FROM n") == 200);
    OK(sila_request_cancel(held[1]));
    EXPECT(sila_request_take_result(held[1], NULL), SILA_CANCELLED);
    sila_request_free(held[1]);
    sila_database_free(db);
    sila_workspace_free(ws);
}

static void test_async(const sila_database *db, const sila_database *ro) {
    struct callback_state s;
    sila_request *req = NULL;
    sila_result *r = NULL;
    int64_t n = 0;
    int i;

    callback_state_init(&s);
    /* Callback on a worker thread. */
    OK(sila_database_submit_query(db, "SELECT id FROM t", NUL, NULL, 0, on_complete, &s, &req));
    CHECK(wait_calls(&s, 1));
    CHECK(!pthread_equal(s.thread, pthread_self()));
    CHECK(s.status == SILA_OK && s.rows == 2);
    CHECK(sila_request_is_done(req));
    OK(sila_request_wait(req, 0));
    EXPECT(sila_request_take_result(req, &r), SILA_INVALID_ARGUMENT); /* taken by the callback */
    sila_request_free(req);
    req = NULL;

    /* Never inside the submit call, even when the answer is instant: a host may hold a lock
       across submit that its callback also takes. */
    for (i = 0; i < 30; i++) {
        s.calls = 0;
        req = NULL;
        OK(sila_database_submit_query(db, "SELECT 1", NUL, NULL, 0, on_complete, &s, &req));
        CHECK(wait_calls(&s, 1));
        CHECK(!pthread_equal(s.thread, pthread_self()));
        sila_request_free(req);
    }

    /* Poll and wait, no callback. */
    OK(sila_database_submit_exec(db, "INSERT INTO acct (v) VALUES (?)", NUL, "[2]", NUL, NULL, NULL, &req));
    OK(sila_request_wait(req, -1));
    CHECK(sila_request_is_done(req));
    OK(sila_request_take_result(req, &r));
    CHECK(sila_result_changes(r) == 1);
    sila_result_free(r);
    r = NULL;
    sila_request_free(req);
    CHECK(query_int(db, "SELECT sum(v) FROM acct") == 33);

    /* A failed request reports its error at take, every time. */
    OK(sila_database_submit_query(db, "SELECT * FROM missing_table", NUL, NULL, 0, NULL, NULL, &req));
    EXPECT(sila_request_take_result(req, &r), SILA_SQLITE);
    CHECK(strstr(sila_last_error_message(), "missing_table") != NULL);
    EXPECT(sila_request_take_result(req, &r), SILA_SQLITE);
    CHECK(r == NULL);
    sila_request_free(req);

    /* Bad arguments come back from submit, with no request; the engine's refusals (here
       READ_ONLY) are the request's outcome. */
    req = NULL;
    EXPECT(sila_database_submit_exec(db, "INSERT INTO t (name) VALUES (?)", NUL, "[oops]", NUL, NULL, NULL, &req),
           SILA_INVALID_ARGUMENT);
    CHECK(req == NULL);
    OK(sila_database_submit_exec(ro, "CREATE TABLE x (a)", NUL, NULL, 0, NULL, NULL, &req));
    EXPECT(sila_request_take_result(req, NULL), SILA_READ_ONLY);
    sila_request_free(req);

    /* Cancel a running query. */
    OK(sila_database_submit_query(db, SLOW_SQL, NUL, NULL, 0, NULL, NULL, &req));
    EXPECT(sila_request_wait(req, 50), SILA_TIMEOUT); /* still running */
    OK(sila_request_cancel(req));
    OK(sila_request_cancel(req)); /* idempotent */
    EXPECT(sila_request_take_result(req, &r), SILA_CANCELLED);
    sila_request_free(req);

    /* A long statement runs into the statement deadline (1000 ms in this workspace). */
    EXPECT(sila_database_query(db, SLOW_SQL, NUL, NULL, 0, &r), SILA_TIMEOUT);

    /* Fire and forget: free at once, the callback still runs (and must not free again). */
    s.calls = 0;
    for (i = 0; i < 5; i++) {
        req = NULL;
        OK(sila_database_submit_exec(db, "INSERT INTO acct (v) VALUES (0)", NUL, NULL, 0, on_complete, &s, &req));
        sila_request_free(req);
    }
    CHECK(wait_calls(&s, 5));
    /* The callback frees the request itself. */
    s.calls = 0;
    s.free_in_callback = 1;
    OK(sila_database_submit_query(db, "SELECT 1", NUL, NULL, 0, on_complete, &s, &req));
    CHECK(wait_calls(&s, 1));
    CHECK(s.status == SILA_OK && s.rows == 1);
    s.free_in_callback = 0;

    /* Cancel a burst of queued requests; every one completes, none hangs. */
    {
        sila_request *burst[16];
        int cancelled = 0;
        for (i = 0; i < 16; i++) {
            burst[i] = NULL;
            OK(sila_database_submit_query(db, SLOW_SQL, NUL, NULL, 0, NULL, NULL, &burst[i]));
        }
        for (i = 0; i < 16; i++) OK(sila_request_cancel(burst[i]));
        for (i = 0; i < 16; i++) {
            sila_status st = sila_request_take_result(burst[i], NULL);
            CHECK(st == SILA_CANCELLED || st == SILA_BUSY);
            cancelled += st == SILA_CANCELLED;
            sila_request_free(burst[i]);
        }
        CHECK(cancelled > 0);
    }
    n = query_int(db, "SELECT count(*) FROM acct WHERE v = 0");
    CHECK(n == 5);
    callback_state_destroy(&s);
}

/* ------------------------------------------------------------------------------------- */

static void test_versions(sila_workspace *ws, const sila_database *db) {
    char *json = NULL;
    size_t len = 0;
    char snap[64], undo[64], exported[600], copy[600];
    uint64_t version = 99;
    const char *plan =
        "{\"currentVersion\":2,\"steps\":["
        "{\"from\":0,\"to\":1,\"up\":\"CREATE TABLE m1 (a)\",\"down\":\"DROP TABLE m1\"},"
        "{\"from\":1,\"to\":2,\"up\":\"CREATE TABLE m2 (b)\",\"down\":\"DROP TABLE m2\"}]}";

    OK(sila_database_snapshot(db, "before cleanup", &json, &len));
    json_string(json, "id", snap, sizeof snap);
    CHECK(strlen(snap) == 36 && len == strlen(json));
    CHECK(strstr(json, "\"label\":\"before cleanup\"") != NULL);
    sila_string_free(json);
    EXPECT(sila_database_snapshot(db, BAD_UTF8, NULL, NULL), SILA_INVALID_ARGUMENT);
    OK(sila_database_snapshots(db, &json, NULL));
    CHECK(strstr(json, snap) != NULL);
    sila_string_free(json);

    OK(sila_database_exec(db, "DELETE FROM t", NUL, NULL, 0, NULL));
    CHECK(query_int(db, "SELECT count(*) FROM t") == 0);
    EXPECT(sila_database_restore(db, "not-a-uuid", 0, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_restore(db, "01890000-0000-7000-8000-000000000000", 0, NULL, NULL), SILA_NOT_FOUND);
    EXPECT(sila_database_restore(db, snap, 0x80, NULL, NULL), SILA_INVALID_ARGUMENT);
    OK(sila_database_restore(db, snap, 0, &json, NULL));
    json_string(json, "undo_snapshot", undo, sizeof undo);
    CHECK(strlen(undo) == 36);
    sila_string_free(json);
    CHECK(query_int(db, "SELECT count(*) FROM t") == 2);
    /* Restoring the undo snapshot reverses the restore. */
    OK(sila_database_restore(db, undo, SILA_RESTORE_ALLOW_SCHEMA_CHANGE, NULL, NULL));
    CHECK(query_int(db, "SELECT count(*) FROM t") == 0);
    OK(sila_database_restore(db, snap, 0, NULL, NULL));
    CHECK(query_int(db, "SELECT count(*) FROM t") == 2);

    OK(sila_database_backup(db, 2, &json, NULL));
    CHECK(strstr(json, "\"path\":\"") != NULL);
    sila_string_free(json);
    OK(sila_database_backup(db, 2, NULL, NULL));

    OK(sila_database_export(db, "nightly", &json, NULL));
    json_string(json, "path", exported, sizeof exported);
    CHECK(strstr(exported, "nightly.sqlite") != NULL);
    sila_string_free(json);
    EXPECT(sila_database_export(db, "nightly", NULL, NULL), SILA_ALREADY_EXISTS);
    EXPECT(sila_database_export(db, "../x", NULL, NULL), SILA_INVALID_NAME);
    path_in(copy, sizeof copy, "copy.sqlite");
    OK(sila_database_export_to_path(db, copy, &json, NULL));
    CHECK(strstr(json, "\"bytes\":") != NULL);
    sila_string_free(json);
    EXPECT(sila_database_export_to_path(db, copy, NULL, NULL), SILA_ALREADY_EXISTS);

    /* Compressed export and backup; import takes the .gz as it is. */
    {
        char zipped[600];
        OK(sila_database_export_gzip(db, "nightly", &json, NULL));
        json_string(json, "path", zipped, sizeof zipped);
        CHECK(strstr(zipped, "nightly.sqlite.gz") != NULL);
        sila_string_free(json);
        EXPECT(sila_database_export_gzip(db, "nightly", NULL, NULL), SILA_ALREADY_EXISTS);
        OK(sila_database_backup_gzip(db, 2, &json, NULL));
        CHECK(strstr(json, ".sqlite.gz\"") != NULL);
        sila_string_free(json);
        OK(sila_database_exec(db, "DELETE FROM t", NUL, NULL, 0, NULL));
        OK(sila_database_import(db, zipped, NULL, &json, NULL));
        CHECK(strstr(json, "\"gzip\"") != NULL);
        sila_string_free(json);
        CHECK(query_int(db, "SELECT count(*) FROM t") == 2);
        EXPECT(sila_database_export_gzip(NULL, "x", NULL, NULL), SILA_INVALID_ARGUMENT);
        EXPECT(sila_database_backup_gzip(NULL, 1, NULL, NULL), SILA_INVALID_ARGUMENT);
    }

    /* Import: change the live data, then import the copy back. */
    OK(sila_database_exec(db, "DELETE FROM t", NUL, NULL, 0, NULL));
    EXPECT(sila_database_import(db, copy, "{\"expected_tables\":[\"nope\"]}", NULL, NULL), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "expected_schema") != NULL);
    EXPECT(sila_database_import(db, copy, "{\"bogus\":1}", NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_import(db, copy, "{", NULL, NULL), SILA_INVALID_ARGUMENT);
    {
        char missing[600];
        path_in(missing, sizeof missing, "missing.sqlite");
        EXPECT(sila_database_import(db, missing, NULL, NULL, NULL), SILA_NOT_FOUND);
    }
    CHECK(query_int(db, "SELECT count(*) FROM t") == 0);
    OK(sila_database_import(db, copy, "{\"expected_tables\":[\"t\",\"acct\"]}", &json, NULL));
    CHECK(strstr(json, "integrity_check") != NULL);
    CHECK(strstr(json, "\"undo\":\"") != NULL);
    sila_string_free(json);
    CHECK(query_int(db, "SELECT count(*) FROM t") == 2);

    /* Migrations. */
    OK(sila_database_schema_version(db, &version));
    CHECK(version == 0);
    EXPECT(sila_database_migrate(db, "{\"currentVersion\":", NUL, false, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_migrate(db, BAD_UTF8, NUL, false, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_migrate(db, "{\"currentVersion\":3,\"steps\":[]}", NUL, false, NULL, NULL),
           SILA_MIGRATION_FAILED);
    OK(sila_database_migrate(db, plan, NUL, true, &json, NULL));
    CHECK(strstr(json, "\"dry_run\":true") != NULL);
    sila_string_free(json);
    OK(sila_database_schema_version(db, &version));
    CHECK(version == 0);
    OK(sila_database_migrate(db, plan, strlen(plan), false, &json, NULL));
    CHECK(strstr(json, "\"applied\":[[0,1],[1,2]]") != NULL);
    sila_string_free(json);
    OK(sila_database_schema_version(db, &version));
    CHECK(version == 2);
    CHECK(query_int(db, "SELECT count(*) FROM m2") == 0);

    /* Retention, drop, GC. */
    EXPECT(sila_database_drop_snapshot(db, "01890000-0000-7000-8000-000000000000"), SILA_NOT_FOUND);
    OK(sila_database_drop_snapshot(db, snap));
    EXPECT(sila_database_drop_snapshot(db, snap), SILA_NOT_FOUND);
    OK(sila_database_apply_retention(db, 1, 0, &json, NULL));
    CHECK(json[0] == '[');
    sila_string_free(json);
    OK(sila_database_snapshots(db, &json, NULL));
    CHECK(strstr(json, "\"id\"") != NULL && strstr(strstr(json, "\"id\"") + 1, "\"id\"") == NULL);
    sila_string_free(json);
    OK(sila_workspace_gc(ws, &json, &len));
    CHECK(strstr(json, "\"bytes_freed\":") != NULL && len == strlen(json));
    sila_string_free(json);
    OK(sila_workspace_gc(ws, NULL, NULL));

    /* Checkpoint and compaction: the rows stay, the file is rewritten. */
    {
        int64_t rows = query_int(db, "SELECT count(*) FROM t");
        OK(sila_database_checkpoint(db, &json, NULL));
        CHECK(strstr(json, "\"complete\":") != NULL && strstr(json, "\"wal_frames\":") != NULL);
        sila_string_free(json);
        OK(sila_database_checkpoint(db, NULL, NULL));
        OK(sila_database_compact(db, &json, &len));
        CHECK(strstr(json, "\"before_bytes\":") != NULL && strstr(json, "\"after_bytes\":") != NULL);
        CHECK(len == strlen(json));
        sila_string_free(json);
        OK(sila_database_compact(db, NULL, NULL));
        CHECK(query_int(db, "SELECT count(*) FROM t") == rows);
        OK(sila_workspace_gc(ws, NULL, NULL));
        OK(sila_workspace_maintain(ws, 60000, 1, 0, &json, &len));
        CHECK(strstr(json, "\"full_check\":true") != NULL && strstr(json, "\"problems\":[]") != NULL);
        CHECK(strstr(json, "\"db\":\"main\"") != NULL && strstr(json, "\"remaining\":0") != NULL);
        sila_string_free(json);
        OK(sila_workspace_maintain(ws, 0, 0, 1, NULL, NULL));
        EXPECT(sila_workspace_maintain(NULL, 0, 0, 0, NULL, NULL), SILA_INVALID_ARGUMENT);
    }

    /* Statistics. */
    OK(sila_database_stats(db, &json, &len));
    CHECK(strstr(json, "\"queries\":") != NULL && strstr(json, "\"db\":\"main\"") != NULL);
    sila_string_free(json);
    OK(sila_workspace_stats(ws, NULL, NULL, &json, NULL));
    CHECK(strstr(json, "\"quota_bytes\":") != NULL && strstr(json, "\"databases\":[") != NULL);
    sila_string_free(json);
    OK(sila_workspace_stats(ws, "com.example.notes", "main", &json, NULL));
    sila_string_free(json);
    EXPECT(sila_workspace_stats(ws, "com.example.nobody", NULL, &json, NULL), SILA_NOT_FOUND);
    EXPECT(sila_workspace_stats(ws, BAD_UTF8, NULL, &json, NULL), SILA_INVALID_ARGUMENT);
    OK(sila_workspace_metrics(ws, &json, &len));
    CHECK(strstr(json, "sila_requests_total{app=\"com.example.notes\",db=\"main\",kind=\"query\"}") != NULL);
    CHECK(strstr(json, "# TYPE sila_request_duration_seconds histogram") != NULL);
    CHECK(strstr(json, "sila_quota_bytes{app=\"com.example.notes\"}") != NULL);
    CHECK(len == strlen(json) && strcmp(json + len - 6, "# EOF\n") == 0);
    sila_string_free(json);
    EXPECT(sila_workspace_metrics(ws, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_metrics(NULL, &json, NULL), SILA_INVALID_ARGUMENT);

    /* The audit trail: the operations above, newest last; filters and bounds. */
    OK(sila_workspace_audit(ws, NULL, 0, 0, &json, &len));
    CHECK(len == strlen(json) && strstr(json, "\"op\":\"register_app\"") != NULL);
    CHECK(strstr(json, "\"op\":\"snapshot\"") != NULL && strstr(json, "\"op\":\"compact\"") != NULL);
    CHECK(strstr(json, "\"damaged\":0") != NULL);
    sila_string_free(json);
    OK(sila_workspace_audit(ws, "com.example.notes", 0, 1, &json, NULL));
    CHECK(strstr(json, "\"app\":\"com.example.notes\"") != NULL);
    {
        const char *first = strstr(json, "\"seq\":");
        CHECK(first != NULL && strstr(first + 1, "\"seq\":") == NULL); /* limit 1: one record */
    }
    sila_string_free(json);
    OK(sila_workspace_audit(ws, "com.example.nobody", 0, 0, &json, NULL));
    CHECK(strstr(json, "\"records\":[]") != NULL);
    sila_string_free(json);
    OK(sila_workspace_audit(ws, NULL, UINT64_MAX, 10000, &json, NULL));
    CHECK(strstr(json, "\"records\":[]") != NULL);
    sila_string_free(json);
    EXPECT(sila_workspace_audit(ws, NULL, 0, 10001, &json, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_audit(ws, BAD_UTF8, 0, 0, &json, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_audit(ws, NULL, 0, 0, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_audit(NULL, NULL, 0, 0, &json, NULL), SILA_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------------------------------- */

#define THREADS 8
#define ROUNDS 40

struct thread_arg {
    const sila_workspace *ws;
    const sila_database *db;
    int index;
    int failures;
};

static void *hammer(void *p) {
    struct thread_arg *a = (struct thread_arg *)p;
    char params[64];
    int i;
    for (i = 0; i < ROUNDS; i++) {
        sila_result *r = NULL;
        char *json = NULL;
        snprintf(params, sizeof params, "[%d]", a->index * 1000 + i);
        if (sila_database_exec(a->db, "INSERT INTO hammer (v) VALUES (?)", NUL, params, NUL, NULL) != SILA_OK)
            a->failures++;
        if (sila_database_query(a->db, "SELECT count(*) FROM hammer", NUL, NULL, 0, &r) != SILA_OK)
            a->failures++;
        sila_result_free(r);
        if (i % 10 == 0) {
            if (sila_workspace_stats(a->ws, NULL, NULL, &json, NULL) != SILA_OK) a->failures++;
            sila_string_free(json);
        }
        /* The last error is per thread: this thread's failure, not another's. */
        if (sila_database_query(a->db, "SELECT no_such_column FROM hammer", NUL, NULL, 0, &r) != SILA_SQLITE)
            a->failures++;
        if (strstr(sila_last_error_message(), "no_such_column") == NULL) a->failures++;
    }
    return NULL;
}

static void test_threads(sila_workspace *ws, const sila_database *db) {
    pthread_t threads[THREADS];
    struct thread_arg args[THREADS];
    int i;
    OK(sila_database_exec(db, "CREATE TABLE hammer (v INTEGER)", NUL, NULL, 0, NULL));
    for (i = 0; i < THREADS; i++) {
        args[i].ws = ws;
        args[i].db = db;
        args[i].index = i;
        args[i].failures = 0;
        CHECK(pthread_create(&threads[i], NULL, hammer, &args[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(args[i].failures == 0);
    }
    CHECK(query_int(db, "SELECT count(*) FROM hammer") == THREADS * ROUNDS);
}

/* ------------------------------------------------------------------------------------- */

/* NULL for every pointer argument that is not documented as optional. */
static void test_null_arguments(sila_workspace *ws, sila_database *db) {
    sila_result *r = NULL;
    sila_request *req = NULL;
    sila_transaction *tx = NULL;
    sila_database *d2 = NULL;
    char *json = NULL;
    const char *text = NULL;
    const uint8_t *blob = NULL;
    size_t len = 0;
    int64_t i = 0;
    double d = 0;
    uint64_t u = 0;
    sila_type type = 0;
    const int A = SILA_INVALID_ARGUMENT;

    EXPECT(sila_workspace_open(NULL, NULL, (sila_workspace **)&json), A);
    EXPECT(sila_workspace_close(NULL), A);
    EXPECT(sila_workspace_register_app(NULL, "a.b", MANIFEST, NUL, NULL, NULL), A);
    EXPECT(sila_workspace_register_app(ws, NULL, MANIFEST, NUL, NULL, NULL), A);
    EXPECT(sila_workspace_register_app(ws, "a.b", NULL, NUL, NULL, NULL), A);
    EXPECT(sila_workspace_apps(NULL, &json, NULL), A);
    EXPECT(sila_workspace_apps(ws, NULL, NULL), A);
    EXPECT(sila_workspace_open_database(NULL, "com.example.notes", "main", &d2), A);
    EXPECT(sila_workspace_open_database(ws, NULL, "main", &d2), A);
    EXPECT(sila_workspace_open_database(ws, "com.example.notes", NULL, &d2), A);
    EXPECT(sila_workspace_open_database(ws, "com.example.notes", "main", NULL), A);
    EXPECT(sila_workspace_stats(NULL, NULL, NULL, &json, NULL), A);
    EXPECT(sila_workspace_stats(ws, NULL, NULL, NULL, NULL), A);
    EXPECT(sila_workspace_gc(NULL, NULL, NULL), A);

    EXPECT(sila_database_query(NULL, "SELECT 1", NUL, NULL, 0, &r), A);
    EXPECT(sila_database_query(db, NULL, NUL, NULL, 0, &r), A);
    EXPECT(sila_database_query(db, "SELECT 1", NUL, NULL, 0, NULL), A);
    EXPECT(sila_database_exec(NULL, "SELECT 1", NUL, NULL, 0, NULL), A);
    EXPECT(sila_database_exec(db, NULL, 0, NULL, 0, NULL), A);
    EXPECT(sila_database_stats(NULL, &json, NULL), A);
    EXPECT(sila_database_stats(db, NULL, NULL), A);
    EXPECT(sila_database_snapshot(NULL, "x", NULL, NULL), A);
    EXPECT(sila_database_snapshot(db, NULL, NULL, NULL), A);
    EXPECT(sila_database_snapshots(NULL, &json, NULL), A);
    EXPECT(sila_database_snapshots(db, NULL, NULL), A);
    EXPECT(sila_database_drop_snapshot(NULL, "01890000-0000-7000-8000-000000000000"), A);
    EXPECT(sila_database_drop_snapshot(db, NULL), A);
    EXPECT(sila_database_apply_retention(NULL, 1, 0, NULL, NULL), A);
    EXPECT(sila_database_checkpoint(NULL, NULL, NULL), A);
    EXPECT(sila_database_compact(NULL, NULL, NULL), A);
    EXPECT(sila_database_restore(NULL, "01890000-0000-7000-8000-000000000000", 0, NULL, NULL), A);
    EXPECT(sila_database_restore(db, NULL, 0, NULL, NULL), A);
    EXPECT(sila_database_backup(NULL, 1, NULL, NULL), A);
    EXPECT(sila_database_import(NULL, "/tmp/x", NULL, NULL, NULL), A);
    EXPECT(sila_database_import(db, NULL, NULL, NULL, NULL), A);
    EXPECT(sila_database_export(NULL, "x", NULL, NULL), A);
    EXPECT(sila_database_export(db, NULL, NULL, NULL), A);
    EXPECT(sila_database_export_to_path(NULL, "/tmp/x", NULL, NULL), A);
    EXPECT(sila_database_export_to_path(db, NULL, NULL, NULL), A);
    EXPECT(sila_database_migrate(NULL, "{}", NUL, false, NULL, NULL), A);
    EXPECT(sila_database_migrate(db, NULL, NUL, false, NULL, NULL), A);
    EXPECT(sila_database_schema_version(NULL, &u), A);
    EXPECT(sila_database_schema_version(db, NULL), A);

    EXPECT(sila_database_submit_query(NULL, "SELECT 1", NUL, NULL, 0, NULL, NULL, &req), A);
    EXPECT(sila_database_submit_query(db, NULL, NUL, NULL, 0, NULL, NULL, &req), A);
    EXPECT(sila_database_submit_query(db, "SELECT 1", NUL, NULL, 0, NULL, NULL, NULL), A);
    EXPECT(sila_database_submit_exec(NULL, "SELECT 1", NUL, NULL, 0, NULL, NULL, &req), A);
    EXPECT(sila_database_submit_exec(db, NULL, NUL, NULL, 0, NULL, NULL, &req), A);
    EXPECT(sila_database_submit_exec(db, "SELECT 1", NUL, NULL, 0, NULL, NULL, NULL), A);
    CHECK(!sila_request_is_done(NULL));
    EXPECT(sila_request_wait(NULL, 0), A);
    EXPECT(sila_request_cancel(NULL), A);
    EXPECT(sila_request_take_result(NULL, &r), A);

    EXPECT(sila_database_begin(NULL, &tx), A);
    EXPECT(sila_database_begin(db, NULL), A);
    EXPECT(sila_transaction_query(NULL, "SELECT 1", NUL, NULL, 0, &r), A);
    EXPECT(sila_transaction_exec(NULL, "SELECT 1", NUL, NULL, 0, NULL), A);
    EXPECT(sila_transaction_commit(NULL), A);
    EXPECT(sila_transaction_rollback(NULL), A);
    OK(sila_database_begin(db, &tx));
    EXPECT(sila_transaction_query(tx, NULL, NUL, NULL, 0, &r), A);
    EXPECT(sila_transaction_exec(tx, NULL, NUL, NULL, 0, NULL), A);
    OK(sila_transaction_rollback(tx));
    sila_transaction_free(tx);

    EXPECT(sila_result_json(NULL, &text, &len), A);
    CHECK(sila_result_column_count(NULL) == 0 && sila_result_row_count(NULL) == 0);
    CHECK(sila_result_changes(NULL) == 0 && sila_result_last_insert_rowid(NULL) == 0);
    EXPECT(sila_result_column_name(NULL, 0, &text), A);
    EXPECT(sila_result_type(NULL, 0, 0, &type), A);
    EXPECT(sila_result_int64(NULL, 0, 0, &i), A);
    EXPECT(sila_result_double(NULL, 0, 0, &d), A);
    EXPECT(sila_result_text(NULL, 0, 0, &text, &len), A);
    EXPECT(sila_result_blob(NULL, 0, 0, &blob, &len), A);
    OK(sila_database_query(db, "SELECT 'x', x'00'", NUL, NULL, 0, &r));
    EXPECT(sila_result_json(r, NULL, &len), A);
    EXPECT(sila_result_json(r, &text, NULL), A);
    EXPECT(sila_result_column_name(r, 0, NULL), A);
    EXPECT(sila_result_type(r, 0, 0, NULL), A);
    EXPECT(sila_result_int64(r, 0, 0, NULL), A);
    EXPECT(sila_result_double(r, 0, 0, NULL), A);
    EXPECT(sila_result_text(r, 0, 0, NULL, &len), A);
    EXPECT(sila_result_text(r, 0, 0, &text, NULL), A);
    EXPECT(sila_result_blob(r, 0, 1, NULL, &len), A);
    EXPECT(sila_result_blob(r, 0, 1, &blob, NULL), A);
    sila_result_free(r);

    /* Nothing was written through any out-param. */
    CHECK(d2 == NULL && req == NULL && json == NULL);

    /* Every free accepts NULL. */
    sila_workspace_free(NULL);
    sila_database_free(NULL);
    sila_transaction_free(NULL);
    sila_request_free(NULL);
    sila_result_free(NULL);
    sila_string_free(NULL);
}

/* ------------------------------------------------------------------------------------- */

static void test_close(sila_workspace *ws, sila_database *db, sila_database *ro, const char *dir) {
    sila_request *req = NULL;
    sila_transaction *tx = NULL;
    sila_result *r = NULL;
    sila_status st;

    sila_statement *stmt = NULL;
    OK(sila_database_prepare(db, "SELECT 1", NUL, &stmt));
    /* Work in flight when the workspace closes. */
    OK(sila_database_submit_query(db, SLOW_SQL, NUL, NULL, 0, NULL, NULL, &req));
    OK(sila_database_begin(db, &tx));
    OK(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (123456)", NUL, NULL, 0, NULL));

    OK(sila_workspace_close(ws));
    EXPECT(sila_workspace_close(ws), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_query(db, "SELECT 1", NUL, NULL, 0, &r), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "closed") != NULL);
    EXPECT(sila_database_exec(ro, "SELECT 1", NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_database_submit_query(db, "SELECT 1", NUL, NULL, 0, NULL, NULL, &req), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_register_app(ws, "a.b", MANIFEST, NUL, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_workspace_gc(ws, NULL, NULL), SILA_INVALID_ARGUMENT);
    EXPECT(sila_statement_query(stmt, &r), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "closed") != NULL);
    sila_statement_free(stmt);
    st = sila_request_take_result(req, NULL);
    CHECK(st == SILA_CANCELLED || st == SILA_INTERNAL);
    sila_request_free(req);
    /* The host's misuse, not a cancellation: the workspace it closed rolled the transaction back. */
    EXPECT(sila_transaction_commit(tx), SILA_INVALID_ARGUMENT);
    CHECK(strstr(sila_last_error_message(), "workspace of this transaction was closed") != NULL);
    EXPECT(sila_transaction_exec(tx, "INSERT INTO acct (v) VALUES (1)", NUL, NULL, 0, NULL), SILA_INVALID_ARGUMENT);
    sila_transaction_free(tx);

    /* Free after close is safe, in any order. */
    sila_database_free(db);
    sila_workspace_free(ws);
    sila_database_free(ro);

    /* The lock was released: reopen, and find the committed data (and not the rolled back). */
    ws = NULL;
    db = NULL;
    OK(sila_workspace_open(dir, NULL, &ws));
    OK(sila_workspace_open_database(ws, "com.example.notes", "main", &db));
    CHECK(query_int(db, "SELECT count(*) FROM acct WHERE v = 123456") == 0);
    CHECK(query_int(db, "SELECT count(*) FROM hammer") == THREADS * ROUNDS);
    sila_workspace_free(ws); /* closes; the database handle answers "closed" */
    EXPECT(sila_database_query(db, "SELECT 1", NUL, NULL, 0, &r), SILA_INVALID_ARGUMENT);
    sila_database_free(db);
}

int main(int argc, char **argv) {
    char dir[600];
    sila_workspace *ws = NULL;
    sila_database *db = NULL;
    sila_database *ro = NULL;
    sila_workspace_options o = {.struct_size = sizeof o};

    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    snprintf(scratch, sizeof scratch, "%s", argv[1]);
    path_in(dir, sizeof dir, "ws");

    test_version_and_status();
    test_last_error();
    test_options();
    test_admission();

    o.statement_timeout_ms = 1000;
    o.transaction_timeout_ms = 1500;
    OK(sila_workspace_open(dir, &o, &ws));
    if (ws == NULL) return 1;
    test_register_and_open(ws, &db, &ro);
    if (db == NULL || ro == NULL) return 1;
    test_exec_and_query(db, ro);
    test_statements_and_exact_values(db);
    test_transactions(db, ro);
    test_async(db, ro);
    test_versions(ws, db);
    test_threads(ws, db);
    test_null_arguments(ws, db);
    test_close(ws, db, ro, dir);

    printf("C host test: %d checks, %d failed\n", checks, failures);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
