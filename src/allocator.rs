//! The process's memory allocator, and how promptly it gives freed memory
//! back to the system.
//!
//! mimalloc rather than glibc's malloc: glibc keeps freed memory in
//! per-thread arenas, so after a burst of ingest or a large query the
//! process stays hundreds of MiB above what it uses, past the memory
//! budget; mimalloc returns freed pages to the system.
//!
//! It returns them only after its purge delay, though (1 s by default in
//! mimalloc 3), and a delayed purge runs only when some thread next calls
//! into the allocator's arena code. Under overload that left a 384 MiB
//! budget's server at 650–750 MiB resident with every budget share within
//! its limit, and at 530–625 MiB of heap after the load had stopped: freed
//! pages waiting to be purged. [`return_freed_memory_promptly`] cuts the
//! delay to 100 ms.
//!
//! Why not 0 (measured with the debug build on a loaded 2-core machine,
//! the same 20 s `loupe gen` load, medians of 3): 0 takes about 35 % more
//! page faults than 10 ms (memory returned and at once faulted back in).
//! Why 100 ms rather than 10: each request's buffers were returned between
//! requests and faulted back in, zeroed by the kernel; release span ingest
//! (`loupe gen --signals traces`, 12 s, six alternated pairs) took 4 %
//! less CPU per span at 100 ms (median 176.6 k spans per CPU-second
//! against 169.3 k; every pair faster), for 33 MiB more anonymous memory
//! at the overload test's peak (294 against 261 MiB, of a 384 MiB budget).

use std::ffi::c_long;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same number in
/// the v2 and v3 sources libmimalloc-sys builds); libmimalloc-sys exports
/// no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc reads the same option:
/// an operator's explicit setting wins over ours.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// The purge delay we run with, in milliseconds: freed pages go back to
/// the system at the next allocator activity 100 ms after being freed.
const PURGE_DELAY_MS: c_long = 100;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless
/// `MIMALLOC_PURGE_DELAY` is set. Call first thing in `main`, before any
/// other thread starts: mimalloc's option setters are not thread safe.
pub fn return_freed_memory_promptly() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: `mi_option_set` writes one entry of mimalloc's option table;
    // the option number is in range (checked by the test below against
    // mimalloc's default) and no other thread runs yet, so nothing reads
    // the entry while it is written.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an option; test-only, so the option table is only read here.
    fn option(option: libmimalloc_sys::mi_option_t) -> c_long {
        // SAFETY: reads one entry of mimalloc's option table; nothing in
        // this test binary writes options concurrently (only the test
        // below sets one, after reading).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_get(option)
        }
    }

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return;
        }
        // 1000 ms is mimalloc 3's purge delay default and the default of
        // no other option: the number names the right option.
        assert_eq!(option(MI_OPTION_PURGE_DELAY), 1000);
        return_freed_memory_promptly();
        assert_eq!(option(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
    }
}
