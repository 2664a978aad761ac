/* The README's C quick start: build with the exact line in ffi/README.md. */
#include <stdio.h>
#include "sila_sqlite.h"

#define TRY(call) if ((call) != SILA_OK) { fprintf(stderr, "%s\n", sila_last_error_message()); return 1; }

int main(void) {
    sila_workspace *ws; sila_database *db; sila_result *rows; const char *json; size_t len;
    TRY(sila_workspace_open("./sila-workspace", NULL, &ws));
    TRY(sila_workspace_register_app(ws, "com.example.notes",
        "{\"capabilities\":{\"sqlite\":{\"enabled\":true,\"dbs\":[{\"name\":\"notes\"}]}}}",
        SILA_NUL_TERMINATED, NULL, NULL));
    TRY(sila_workspace_open_database(ws, "com.example.notes", "sila://db/notes", &db));
    TRY(sila_database_exec(db, "CREATE TABLE IF NOT EXISTS notes (body TEXT)", SILA_NUL_TERMINATED, NULL, 0, NULL));
    TRY(sila_database_exec(db, "INSERT INTO notes VALUES (?)", SILA_NUL_TERMINATED, "[\"hello\"]", SILA_NUL_TERMINATED, NULL));
    TRY(sila_database_query(db, "SELECT count(*) AS n FROM notes", SILA_NUL_TERMINATED, NULL, 0, &rows));
    TRY(sila_result_json(rows, &json, &len));
    printf("%s\n", json); /* {"columns":["n"],"rows":[[1]]} */
    sila_result_free(rows);
    sila_database_free(db);
    sila_workspace_free(ws);
    return 0;
}
