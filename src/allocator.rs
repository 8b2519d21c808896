//! The process's allocator, jemalloc, and what it is told: the one module with `unsafe` code
//! (its configuration symbol and one control call, no pointer arithmetic).
//!
//! Why not glibc's malloc. On the request path it cost ~5.5 µs of the guard's ~41 µs of CPU
//! per 4 KiB review, against ~0.7 µs in the no-op floor (`perf`, docs/performance.md): each
//! TLS record's plaintext is a fresh ~4 KiB `Vec` in rustls, and glibc serves every request
//! of that size by first consolidating the small chunks the admission work freed
//! (`malloc_consolidate`). jemalloc's thread caches serve both from per-thread bins. For the
//! cold start glibc needed care too (its mmap threshold and `malloc_trim`); jemalloc purges
//! any arena from any thread, so after a list every arena's free pages go back at once.
//!
//! Settings ([`MALLOC_CONF`]): two arenas, as glibc had (one per core here; more arenas
//! keep more free memory, and each thread's cache already takes the contention away), and a
//! background thread that returns free pages one second after they were freed
//! (`dirty_decay_ms`, jemalloc's default is ten), so memory freed by a list, a relist or a
//! burst of upgrades is returned without waiting for the next allocation: with ten seconds
//! the 10k × 10 list peaked at 206 MiB, with one at 152 MiB, for 0.5 s more CPU
//! (`examples/fleet.rs`). An operator overrides any of it with `_RJEM_MALLOC_CONF` (the
//! prefixed build's name for `MALLOC_CONF`), e.g. `narenas:8` on a many-core node.
//!
//! The binary and the measuring examples declare [`Allocator`] as their
//! `#[global_allocator]`; the library does not impose it on the tests. [`release_free_memory`]
//! works whichever allocator the process uses (jemalloc's arenas are simply empty when it is
//! not the global one).

/// The global allocator of the binary: `#[global_allocator] static A: Allocator = Allocator;`.
pub use tikv_jemallocator::Jemalloc as Allocator;

use std::ffi::CStr;
use std::ptr::null_mut;

use tikv_jemalloc_sys::mallctl;

/// jemalloc's options, read once at its first allocation (before `main`). A C string through a
/// thin pointer: jemalloc declares `const char *malloc_conf` and finds it by its name.
#[allow(unsafe_code)]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &CONF[0];

const CONF: &[u8] = b"narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// What jemalloc runs with: `(arenas, background thread running)`. Reading them also keeps
/// [`MALLOC_CONF`] in the link (the binary calls this at start and logs it).
pub fn settings() -> (Option<u32>, Option<bool>) {
    // The symbol's address taken from Rust: a reference the linker must keep, whatever LTO or
    // section garbage collection would otherwise drop.
    std::hint::black_box(&raw const MALLOC_CONF);
    (
        read::<u32>(c"opt.narenas"),
        read::<u8>(c"background_thread").map(|on| on != 0),
    )
}

/// Hands the free pages of every jemalloc arena back to the kernel. Takes each arena's lock
/// for a walk over its free extents: milliseconds after a 10k-release list, so call it after
/// large transient work, not per request.
pub fn release_free_memory() {
    // `MALLCTL_ARENAS_ALL` in jemalloc's control names: every arena at once.
    let _ = control(c"arena.4096.purge");
}

/// Runs a control that takes no value; whether jemalloc knew it.
#[allow(unsafe_code)]
fn control(name: &CStr) -> bool {
    // SAFETY: `name` is NUL-terminated; a control with no value takes null pointers and a
    // zero length, as jemalloc's `mallctl` documents. A non-zero result is an unknown name.
    unsafe { mallctl(name.as_ptr(), null_mut(), null_mut(), null_mut(), 0) == 0 }
}

/// Integer types any bit pattern of which is a value: what [`read`] may read into (jemalloc
/// may write part of a value before it refuses a size; a `bool` read is a `u8`).
trait Plain: Copy + Default {}
impl Plain for u8 {}
impl Plain for u32 {}
impl Plain for isize {}

/// A read-only control of an integer type (`unsigned`, `bool` as a byte, `ssize_t`).
#[allow(unsafe_code)]
fn read<T: Plain>(name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = size_of::<T>();
    // SAFETY: `value` is a writable `T` of `len` bytes and every bit pattern is a valid `T`
    // (`Plain`); jemalloc writes at most `len` bytes to it (failing with EINVAL if the
    // control's type has another size) and sets `len` to what it wrote; no new value.
    let rc = unsafe {
        mallctl(
            name.as_ptr(),
            (&raw mut value).cast(),
            &raw mut len,
            null_mut(),
            0,
        )
    };
    (rc == 0 && len == size_of::<T>()).then_some(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn jemalloc_takes_the_configuration_and_the_purge() {
        // jemalloc is linked into the tests too (not as their global allocator): it reads the
        // symbol at its first use. A symbol dropped by the linker or a malformed string would
        // leave its defaults (4 arenas per CPU, no background thread).
        assert_eq!(super::settings(), (Some(2), Some(true)));
        assert_eq!(super::read::<isize>(c"opt.dirty_decay_ms"), Some(1000));
        // The purge control exists (a wrong name would be a silent no-op).
        assert!(super::control(c"arena.4096.purge"));
        assert!(!super::control(c"arena.4096.purge_everything"));
    }
}
