//! The C ABI of sila-sqlite: a thin layer over the `sila-sqlite` crate, built as a static
//! library, a shared library and an rlib. `include/sila_sqlite.h` is generated from this
//! crate by cbindgen (see `cbindgen.toml`; a test fails when the checked-in header is stale).
//!
//! Conventions, the same for every function (after rustls-ffi and wasmtime's C API):
//!
//! * Every exported function and type starts with `sila_`. Handles are opaque pointers
//!   (`sila_workspace`, `sila_database`, `sila_transaction`, `sila_request`, `sila_result`);
//!   each has a `*_free` that accepts NULL.
//! * Fallible functions return a [`status::sila_status`] whose numbers are the stable
//!   `ErrorCode` numbers of the Rust crate (0 is `SILA_OK`). The message and SQLite's extended
//!   code of the last failure on the calling thread are read with `sila_last_error_*`.
//! * Every pointer argument is checked: NULL (where not documented as optional), a string
//!   that is not UTF-8, or JSON that does not parse is `SILA_INVALID_ARGUMENT` and changes
//!   nothing. Out-params are written only on success.
//! * Every body runs inside one panic boundary: a panic is `SILA_PANIC`, never an unwind into
//!   C (this needs the default `panic = "unwind"`).
//! * A `const` handle may be used from many threads at once; a non-const one needs exclusive
//!   access (one thread at a time). Each function's documentation says which.
//!
//! Module map: [`boundary`] (panic boundary, last error, argument checks), [`status`],
//! [`workspace`], [`database`], [`result`], [`request`] (asynchronous calls) and
//! [`transaction`] (begin / commit / rollback over the closure-based Rust API).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]
#![allow(non_camel_case_types, reason = "C type names follow the C convention of the header")]
#![allow(
    clippy::missing_safety_doc,
    reason = "every unsafe fn is an exported C function documented in the header; the pointer rules are stated once there"
)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod boundary;
pub mod database;
pub mod request;
pub mod result;
pub mod statement;
pub mod status;
pub mod transaction;
pub mod workspace;

use std::ffi::c_char;

/// Major version of the library this header belongs to.
pub const SILA_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const SILA_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const SILA_VERSION_PATCH: u32 = 0;
/// `MAJOR * 1000000 + MINOR * 1000 + PATCH`, comparable with `sila_version_number()`.
pub const SILA_VERSION_NUMBER: u32 = 1000;

/// The version of the linked library, "MAJOR.MINOR.PATCH" (static; never free it). Compare
/// with the header's `SILA_VERSION_*` macros to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn sila_version() -> *const c_char {
    boundary::guard_value(c"0.1.0".as_ptr(), || c"0.1.0".as_ptr())
}

/// The version of the linked library as `MAJOR * 1000000 + MINOR * 1000 + PATCH`, to compare
/// with `SILA_VERSION_NUMBER`.
#[no_mangle]
pub extern "C" fn sila_version_number() -> u32 {
    boundary::guard_value(SILA_VERSION_NUMBER, || SILA_VERSION_NUMBER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_the_crate_version() {
        let parse = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(SILA_VERSION_MAJOR, parse(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(SILA_VERSION_MINOR, parse(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(SILA_VERSION_PATCH, parse(env!("CARGO_PKG_VERSION_PATCH")));
        assert_eq!(
            SILA_VERSION_NUMBER,
            SILA_VERSION_MAJOR * 1_000_000 + SILA_VERSION_MINOR * 1000 + SILA_VERSION_PATCH
        );
        // SAFETY: `sila_version` returns a static NUL-terminated string.
        let text = unsafe { std::ffi::CStr::from_ptr(sila_version()) };
        assert_eq!(text.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
