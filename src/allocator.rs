//! What the process tells its allocator, glibc's malloc: the one place with `unsafe` code
//! (two C calls, no pointers).
//!
//! A cold start moves gigabytes through short-lived large buffers: kube collects each list
//! page (500 Secrets, ~12 MiB) into one buffer before parsing it, records are gunzipped into
//! buffers of up to a few MiB. glibc first serves such blocks with `mmap` and, as they are
//! freed, raises its mmap threshold so that later ones come from the heap and reuse its pages.
//! The heap then keeps what they freed: 160 MiB RSS after a 10k releases × 10 revisions sync
//! for ~40 MiB in use. The image used to pin the threshold low (`MALLOC_MMAP_THRESHOLD_`),
//! which returned that memory but made every large buffer fresh pages: page faults were a
//! quarter of the cold start's CPU (`examples/fleet.rs`, profiled). So the threshold is
//! glibc's own, and once a list has been applied — the moment the big buffers are gone — the
//! free memory is handed back to the kernel ([`release_free_memory`], `malloc_trim`: a few
//! milliseconds once per list): 10k × 10 ready in 8 s of CPU instead of 12, RSS after the sync
//! ~60 MiB instead of 160 (docs/performance.md).
//!
//! Arenas: glibc gives each busy thread its own, each keeping its own free memory; two
//! are enough for two cores ([`configure`]), unless the operator says otherwise through
//! `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`. On other C libraries both calls do nothing.

/// Sets the allocator up; call first thing in `main`, before any thread starts.
pub fn configure() {
    let told = |var: &str| std::env::var_os(var).is_some();
    if !told("MALLOC_ARENA_MAX") && !told("GLIBC_TUNABLES") {
        glibc::set_arena_max(2);
    }
}

/// Hands memory malloc holds free back to the kernel (all arenas, the middle of the heap
/// included). Takes each arena's lock for the time of a walk over it: a few milliseconds
/// after a 10k-release list, so call it after large transient work, not per request.
pub fn release_free_memory() {
    glibc::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::ffi::c_int;

    /// `M_ARENA_MAX` from glibc's `malloc.h`.
    const M_ARENA_MAX: c_int = -8;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    pub fn set_arena_max(n: c_int) {
        // SAFETY: glibc's documented tuning call, with a documented parameter; no pointers. It
        // returns 0 on an unknown parameter, which leaves the default (nothing to do).
        let _ = unsafe { mallopt(M_ARENA_MAX, n) };
    }

    pub fn trim() {
        // SAFETY: thread-safe in glibc (it locks each arena); no pointers. The result only
        // says whether memory was released.
        let _ = unsafe { malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn set_arena_max(_: i32) {}
    pub fn trim() {}
}
