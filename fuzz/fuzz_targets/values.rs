//! Fuzz target `values`: a thin shim over [`helm_guard_fuzz::values`], where the harness lives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| helm_guard_fuzz::values(data));
