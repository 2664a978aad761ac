#![no_main]
//! cargo-fuzz target `import`: the body is shared with the stable replay test (see targets.rs).

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::import(data));
