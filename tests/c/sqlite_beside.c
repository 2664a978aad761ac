/*
 * Symbol hygiene: a host that uses its own (system) SQLite beside sila-sqlite's bundled one.
 *
 * Passes when each side gets its own copy: the host's sqlite3_* calls reach the SQLite it was
 * compiled against (SQLITE_VERSION from its <sqlite3.h>), and sila-sqlite's queries run on
 * the bundled SQLite (a different version). Usage: sqlite_beside <scratch-dir>
 */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>

#include "sila_sqlite.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    char dir[600];
    char host_version[64] = "";
    char sila_version_text[64] = "";
    sqlite3 *conn = NULL;
    sqlite3_stmt *stmt = NULL;
    sila_workspace *ws = NULL;
    sila_database *db = NULL;
    sila_result *r = NULL;
    const char *text = NULL;
    size_t len = 0;
    int failures = 0;

    if (argc != 2) return 2;
    snprintf(dir, sizeof dir, "%s/beside", argv[1]);

    /* The host's own SQLite. */
    if (sqlite3_open(":memory:", &conn) != SQLITE_OK ||
        sqlite3_prepare_v2(conn, "SELECT sqlite_version()", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        fprintf(stderr, "host SQLite failed\n");
        return 1;
    }
    snprintf(host_version, sizeof host_version, "%s", (const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    sqlite3_close(conn);

    /* sila-sqlite's bundled SQLite. */
    if (sila_workspace_open(dir, NULL, &ws) != SILA_OK ||
        sila_workspace_register_app(ws, "com.example.beside",
                                    "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"d\"}]}}}",
                                    SILA_NUL_TERMINATED, NULL, NULL) != SILA_OK ||
        sila_workspace_open_database(ws, "com.example.beside", "d", &db) != SILA_OK ||
        sila_database_query(db, "SELECT sqlite_version()", SILA_NUL_TERMINATED, NULL, 0, &r) != SILA_OK ||
        sila_result_text(r, 0, 0, &text, &len) != SILA_OK) {
        fprintf(stderr, "sila-sqlite failed: %s\n", sila_last_error_message());
        return 1;
    }
    snprintf(sila_version_text, sizeof sila_version_text, "%s", text);
    sila_result_free(r);
    sila_database_free(db);
    sila_workspace_free(ws);

    printf("host compiled against SQLite %s, its calls ran on %s (sqlite3_libversion %s); "
           "sila-sqlite ran on %s\n",
           SQLITE_VERSION, host_version, sqlite3_libversion(), sila_version_text);
    if (strcmp(host_version, SQLITE_VERSION) != 0 || strcmp(sqlite3_libversion(), SQLITE_VERSION) != 0) {
        fprintf(stderr, "FAIL: the host's sqlite3_* calls did not reach the host's SQLite\n");
        failures++;
    }
    if (strcmp(sila_version_text, SQLITE_VERSION) == 0) {
        fprintf(stderr, "FAIL: sila-sqlite ran on the host's SQLite instead of its bundled one\n");
        failures++;
    }
    printf("%d passed, %d failed\n", 2 - failures, failures);
    return failures == 0 ? 0 : 1;
}
