// C++ host test of the sila-sqlite C ABI: the header in a C++17 program, RAII ownership of
// every handle type, std::thread hosts sharing const handles, callbacks that bounce into a
// C++ future without letting an exception cross the C boundary, and cancellation.
//
// Usage: host_test_cpp <scratch-dir>. Exit status 0 when every check passed.
#include "sila_sqlite.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

void check(bool ok, const char *what, int line) {
    ++checks;
    if (!ok) {
        std::fprintf(stderr, "host_test.cpp:%d: CHECK failed: %s\n", line, what);
        ++failures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

// A library failure as a C++ exception, thrown only on the host's own threads.
struct sila_error : std::runtime_error {
    sila_status status;
    int sqlite_code;
    sila_error(sila_status s, const char *message)
        : std::runtime_error(std::string(sila_status_name(s)) + ": " + message),
          status(s),
          sqlite_code(sila_last_error_sqlite_code()) {}
};

void ok(sila_status s) {
    if (s != SILA_OK) throw sila_error(s, sila_last_error_message());
}

template <typename T, void (*Free)(T *)>
struct deleter {
    void operator()(T *p) const { Free(p); }
};
using workspace_ptr = std::unique_ptr<sila_workspace, deleter<sila_workspace, sila_workspace_free>>;
using database_ptr = std::unique_ptr<sila_database, deleter<sila_database, sila_database_free>>;
using result_ptr = std::unique_ptr<sila_result, deleter<sila_result, sila_result_free>>;
using request_ptr = std::unique_ptr<sila_request, deleter<sila_request, sila_request_free>>;
using tx_ptr = std::unique_ptr<sila_transaction, deleter<sila_transaction, sila_transaction_free>>;
using string_ptr = std::unique_ptr<char, deleter<char, sila_string_free>>;

result_ptr query(const sila_database *db, const std::string &sql, const std::string &params = "[]") {
    sila_result *r = nullptr;
    ok(sila_database_query(db, sql.data(), sql.size(), params.data(), params.size(), &r));
    return result_ptr(r);
}

int64_t query_int(const sila_database *db, const std::string &sql) {
    auto r = query(db, sql);
    int64_t v = 0;
    ok(sila_result_int64(r.get(), 0, 0, &v));
    return v;
}

void exec(const sila_database *db, const std::string &sql, const std::string &params = "[]") {
    ok(sila_database_exec(db, sql.data(), sql.size(), params.data(), params.size(), nullptr));
}

std::string json_of(const sila_result *r) {
    const char *json = nullptr;
    size_t len = 0;
    ok(sila_result_json(r, &json, &len));
    return std::string(json, len);
}

// The callback side of a request: completes a promise with the row count, or with the
// status. It never throws: any exception is caught here, inside the callback.
struct completion {
    std::promise<std::pair<sila_status, size_t>> promise;
    std::thread::id thread;
};

extern "C" void on_done(void *userdata, sila_request *request) {
    auto *c = static_cast<completion *>(userdata);
    try {
        c->thread = std::this_thread::get_id();
        sila_result *r = nullptr;
        sila_status s = sila_request_take_result(request, &r);
        result_ptr owned(r);
        c->promise.set_value({s, sila_result_row_count(owned.get())});
    } catch (...) {
        // Never let an exception unwind into the library.
    }
}

void run(const std::string &scratch) {
    const std::string dir = scratch + "/ws";
    sila_workspace_options options{};
    options.struct_size = sizeof options;
    options.worker_threads = 4;
    sila_workspace *raw_ws = nullptr;
    ok(sila_workspace_open(dir.c_str(), &options, &raw_ws));
    workspace_ptr ws(raw_ws);

    const std::string manifest =
        R"({"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"events"}],"tier":"premium"}}})";
    char *info = nullptr;
    size_t info_len = 0;
    ok(sila_workspace_register_app(ws.get(), "com.example.cpp", manifest.data(), manifest.size(), &info,
                                   &info_len));
    string_ptr info_owned(info);
    CHECK(std::string(info, info_len).find("\"tier\":\"premium\"") != std::string::npos);

    sila_database *raw_db = nullptr;
    ok(sila_workspace_open_database(ws.get(), "com.example.cpp", "events", &raw_db));
    database_ptr db(raw_db);

    exec(db.get(), "CREATE TABLE events (id TEXT PRIMARY KEY, ts INTEGER, payload BLOB)");

    // A transaction through RAII: the guard rolls back unless committed.
    {
        sila_transaction *raw_tx = nullptr;
        ok(sila_database_begin(db.get(), &raw_tx));
        tx_ptr tx(raw_tx);
        for (int i = 0; i < 100; ++i) {
            std::string params = "[\"e" + std::to_string(i) + "\", " + std::to_string(i) + ", {\"$blob\":\"AAEC\"}]";
            const std::string sql = "INSERT INTO events VALUES (?, ?, ?)";
            ok(sila_transaction_exec(tx.get(), sql.data(), sql.size(), params.data(), params.size(), nullptr));
        }
        sila_result *r = nullptr;
        const std::string count = "SELECT count(*) FROM events";
        ok(sila_transaction_query(tx.get(), count.data(), count.size(), nullptr, 0, &r));
        result_ptr owned(r);
        const std::string expected = R"j({"columns":["count(*)"],"rows":[[100]]})j";
        CHECK(json_of(owned.get()) == expected);
        ok(sila_transaction_commit(tx.get()));
    }
    {
        sila_transaction *raw_tx = nullptr;
        ok(sila_database_begin(db.get(), &raw_tx));
        tx_ptr tx(raw_tx);
        const std::string sql = "DELETE FROM events";
        ok(sila_transaction_exec(tx.get(), sql.data(), sql.size(), nullptr, 0, nullptr));
        // tx goes out of scope without commit: rolled back.
    }
    CHECK(query_int(db.get(), "SELECT count(*) FROM events") == 100);

    // Errors become exceptions on the host's thread, with SQLite's extended code.
    try {
        exec(db.get(), "INSERT INTO events VALUES ('e1', 0, NULL)");
        CHECK(false);
    } catch (const sila_error &e) {
        CHECK(e.status == SILA_SQLITE);
        CHECK(e.sqlite_code == 1555);  // SQLITE_CONSTRAINT_PRIMARYKEY
    }

    // Typed access to a blob cell.
    {
        auto r = query(db.get(), "SELECT payload FROM events WHERE id = ?", R"(["e7"])");
        const uint8_t *data = nullptr;
        size_t len = 0;
        ok(sila_result_blob(r.get(), 0, 0, &data, &len));
        CHECK(len == 3 && data[0] == 0 && data[1] == 1 && data[2] == 2);
    }

    // Many std::threads on one const database handle and one const workspace handle.
    {
        std::atomic<int> errors{0};
        std::vector<std::thread> threads;
        const sila_database *shared = db.get();
        const sila_workspace *shared_ws = ws.get();
        for (int t = 0; t < 6; ++t) {
            threads.emplace_back([t, shared, shared_ws, &errors] {
                for (int i = 0; i < 30; ++i) {
                    try {
                        exec(shared, "INSERT INTO events VALUES (?, ?, NULL)",
                             "[\"t" + std::to_string(t) + "-" + std::to_string(i) + "\", 1]");
                        if (query_int(shared, "SELECT count(*) FROM events") < 100) ++errors;
                        char *json = nullptr;
                        ok(sila_workspace_apps(shared_ws, &json, nullptr));
                        string_ptr owned(json);
                    } catch (const sila_error &) {
                        ++errors;
                    }
                }
            });
        }
        for (auto &t : threads) t.join();
        CHECK(errors.load() == 0);
        CHECK(query_int(db.get(), "SELECT count(*) FROM events") == 100 + 6 * 30);
    }

    // Async: callback into a promise; the callback runs on a worker thread.
    {
        completion c;
        auto future = c.promise.get_future();
        sila_request *raw = nullptr;
        const std::string sql = "SELECT id FROM events ORDER BY id";
        ok(sila_database_submit_query(db.get(), sql.data(), sql.size(), nullptr, 0, on_done, &c, &raw));
        request_ptr req(raw);
        CHECK(future.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
        auto [status, rows] = future.get();
        CHECK(status == SILA_OK && rows == 280);
        CHECK(c.thread != std::this_thread::get_id());
    }

    // Cancellation of a long query, completing through the callback.
    {
        completion c;
        auto future = c.promise.get_future();
        sila_request *raw = nullptr;
        const std::string sql =
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
            "SELECT count(*) FROM c";
        ok(sila_database_submit_query(db.get(), sql.data(), sql.size(), nullptr, 0, on_done, &c, &raw));
        request_ptr req(raw);
        ok(sila_request_cancel(req.get()));
        CHECK(future.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
        CHECK(future.get().first == SILA_CANCELLED);
    }

    // A snapshot and its listing through the owned-string type.
    {
        char *json = nullptr;
        ok(sila_database_snapshot(db.get(), "cpp", &json, nullptr));
        string_ptr owned(json);
        CHECK(std::string(json).find("\"label\":\"cpp\"") != std::string::npos);
    }

    ok(sila_workspace_close(ws.get()));
    CHECK(sila_database_query(db.get(), "SELECT 1", SILA_NUL_TERMINATED, nullptr, 0, nullptr) ==
          SILA_INVALID_ARGUMENT);
    // unique_ptrs free the database and then the closed workspace.
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    CHECK(std::string(sila_version()) == std::to_string(SILA_VERSION_MAJOR) + "." +
                                             std::to_string(SILA_VERSION_MINOR) + "." +
                                             std::to_string(SILA_VERSION_PATCH));
    try {
        run(argv[1]);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        ++failures;
    }
    std::printf("C++ host test: %d checks, %d failed\n", checks, failures);
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
