//! Builds the static library, then builds and runs the C and C++ host programs of
//! `tests/c/` with `tests/c/run.sh` (gcc/g++ with `-Wall -Wextra -Wpedantic -Werror`, the
//! header alone as C99 and C++11, the documented link line, AddressSanitizer with leak
//! checking or valgrind, and the symbol-hygiene host linking the system SQLite beside ours).
//! Fails unless every program exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/`: this test binary lives in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

#[test]
fn c_and_cpp_hosts_pass_under_a_sanitizer() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().expect("the workspace root").to_path_buf();
    let profile = profile_dir();
    // `cargo test` builds only the rlib for tests; build the staticlib (and cdylib) of the
    // same profile into the same target directory.
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(&root).args(["build", "--locked", "-p", "sila-sqlite-ffi"]);
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    if let Some(target_dir) = profile.parent() {
        build.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p sila-sqlite-ffi failed");
    let lib = profile.join("libsila_sqlite_ffi.a");
    assert!(lib.exists(), "{} was not built", lib.display());

    let output = Command::new("bash")
        .arg(root.join("tests/c/run.sh"))
        .arg(&profile)
        .current_dir(&root)
        .output()
        .expect("run tests/c/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "tests/c/run.sh failed ({}); see the output above", output.status);
    assert!(stdout.contains("all host tests passed"), "run.sh did not finish: {stdout}");
}
