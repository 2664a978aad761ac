#!/usr/bin/env bash
# Makes a copy of the static library whose only global symbols are the sila_* functions.
#
#   ffi/private-staticlib.sh target/release/libsila_sqlite_ffi.a target/release/libsila_sqlite_ffi_private.a
#
# Why: libsila_sqlite_ffi.a carries a complete SQLite and the Rust standard library as
# ordinary global symbols. A host that links another SQLite (the system's -lsqlite3, or its
# own copy) gets one set of sqlite3_* definitions for both, chosen by the linker: in practice
# the host's own sqlite3_* calls bind to sila-sqlite's bundled copy (see ffi/README.md,
# "Symbol hygiene"). This script partially links every member into one object
# (`ld -r --whole-archive`), drops the embedded LLVM bitcode sections the Rust standard
# library ships (which binutils cannot read), and makes every defined symbol but sila_*
# local (`objcopy --keep-global-symbols`). The result links like the original, with the same
# link line; add -Wl,--gc-sections to drop the unused code that --whole-archive pulled in.
#
# Needs GNU binutils (ld, objcopy, nm, ar). ELF targets only.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <libsila_sqlite_ffi.a> <output.a>" >&2
    exit 2
fi
in="$1"
out="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ld -r --whole-archive "$in" -o "$work/all.o"
objcopy --remove-section=.llvmbc --remove-section=.llvmcmd "$work/all.o" "$work/native.o"
nm --defined-only -g "$work/native.o" | awk '$3 ~ /^sila_/ { print $3 }' > "$work/keep.txt"
if [ ! -s "$work/keep.txt" ]; then
    echo "$0: no sila_* symbols found in $in" >&2
    exit 1
fi
objcopy --keep-global-symbols="$work/keep.txt" "$work/native.o" "$work/sila_sqlite_ffi_private.o"
others="$(nm --defined-only -g "$work/sila_sqlite_ffi_private.o" | awk '$3 !~ /^sila_/' | wc -l)"
if [ "$others" -ne 0 ]; then
    echo "$0: $others global symbols besides sila_* remain" >&2
    exit 1
fi
rm -f "$out"
ar rcs "$out" "$work/sila_sqlite_ffi_private.o"
echo "$out: $(wc -l < "$work/keep.txt") global sila_* symbols, nothing else global"
