#!/usr/bin/env bash
# Builds and runs the C and C++ host tests against the static library.
#
#   tests/c/run.sh [TARGET_PROFILE_DIR]      (default: target/debug; build it first with
#                                             cargo build -p sila-sqlite-ffi)
#
# Run by `cargo test -p sila-sqlite-ffi --test c_hosts`, which builds the library first.
# Steps: the header alone compiles as C99 and C++11; the C11 and C++17 host tests compile
# with -Wall -Wextra -Wpedantic -Werror, link with the documented line, and run under
# AddressSanitizer + LeakSanitizer (valgrind when ASan cannot run here); the README quick
# start builds and runs; a host linking the system SQLite beside ours shows the symbol clash
# with the plain archive and none with the private one (ffi/private-staticlib.sh).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
profile="${1:-$root/target/debug}"
lib="$profile/libsila_sqlite_ffi.a"
[ -f "$lib" ] || { echo "run.sh: $lib not found; run cargo build -p sila-sqlite-ffi first" >&2; exit 1; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# The documented link line (ffi/README.md). rustc's --print native-static-libs lists
# -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc; gcc adds libgcc_s and libc itself, and glibc
# 2.34+ keeps util and rt inside libc.
link=("$lib" -lpthread -ldl -lm)
warn=(-Wall -Wextra -Wpedantic -Werror)
inc=(-I "$root/include")

echo "== header alone: C99 and C++11"
gcc -std=c99 "${warn[@]}" -fsyntax-only -x c "$root/include/sila_sqlite.h"
g++ -std=c++11 "${warn[@]}" -fsyntax-only -x c++ "$root/include/sila_sqlite.h"

# AddressSanitizer (with LeakSanitizer on x86_64 Linux) if it works here, else valgrind.
cat > "$out/probe.c" <<'PROBE'
#include <stdlib.h>
int main(void) { char *p = malloc(4); p[0] = 1; free(p); return 0; }
PROBE
# SILA_HOST_CHECKER=valgrind forces valgrind.
if [ "${SILA_HOST_CHECKER:-}" != valgrind ] && gcc -fsanitize=address "$out/probe.c" -o "$out/probe" 2>/dev/null \
    && ASAN_OPTIONS=detect_leaks=1 "$out/probe"; then
    checker=asan
    san=(-fsanitize=address -fno-omit-frame-pointer)
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
    run() { "$@"; }
else
    checker=valgrind
    san=()
    run() { valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect "$@"; }
fi
echo "== checker: $checker"

echo "== C11 host test"
gcc -std=c11 "${warn[@]}" -g "${san[@]}" "${inc[@]}" "$root/tests/c/host_test.c" "${link[@]}" -o "$out/host_test_c"
mkdir "$out/c"
run "$out/host_test_c" "$out/c"

echo "== C++17 host test"
g++ -std=c++17 "${warn[@]}" -g "${san[@]}" "${inc[@]}" "$root/tests/c/host_test.cpp" "${link[@]}" -o "$out/host_test_cpp"
mkdir "$out/cpp"
run "$out/host_test_cpp" "$out/cpp"

echo "== README quick start"
gcc -std=c11 "${warn[@]}" "${san[@]}" "${inc[@]}" "$root/tests/c/quickstart.c" "${link[@]}" -o "$out/quickstart"
mkdir "$out/qs"
(cd "$out/qs" && run "$out/quickstart" > "$out/qs.txt")
grep -qx '{"columns":\["n"\],"rows":\[\[1\]\]}' "$out/qs.txt" || { echo "quick start printed: $(cat "$out/qs.txt")" >&2; exit 1; }

echo "== symbol hygiene: a host linking the system SQLite beside ours"
if [ -f /usr/include/sqlite3.h ]; then
    gcc -std=c11 "${warn[@]}" "${inc[@]}" "$root/tests/c/sqlite_beside.c" "$lib" -lsqlite3 -lpthread -ldl -lm -o "$out/beside_plain"
    mkdir "$out/bp"
    if "$out/beside_plain" "$out/bp" > "$out/bp.txt" 2> "$out/bp.err"; then
        echo "the plain archive no longer captures the host's sqlite3_* calls: update ffi/README.md" >&2
        cat "$out/bp.txt" "$out/bp.err" >&2
        exit 1
    fi
    echo "plain archive (documented hazard): $(head -1 "$out/bp.txt")"
    "$root/ffi/private-staticlib.sh" "$lib" "$out/libsila_sqlite_ffi_private.a"
    gcc -std=c11 "${warn[@]}" "${inc[@]}" "$root/tests/c/sqlite_beside.c" "$out/libsila_sqlite_ffi_private.a" -lsqlite3 -lpthread -ldl -lm -Wl,--gc-sections -o "$out/beside_private"
    mkdir "$out/bq"
    "$out/beside_private" "$out/bq"
else
    echo "SKIPPED: /usr/include/sqlite3.h missing (apt-get install libsqlite3-dev)" >&2
    exit 1
fi

echo "== all host tests passed ($checker)"
