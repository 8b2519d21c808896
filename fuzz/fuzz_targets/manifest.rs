//! Fuzz target `manifest`: a thin shim over [`helm_guard_fuzz::manifest`], where the harness lives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| helm_guard_fuzz::manifest(data));
