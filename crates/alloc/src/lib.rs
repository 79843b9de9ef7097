//! The process's allocator: mimalloc, and how the process's memory is laid out and handed
//! back to the system. Every binary calls [`configure`] first thing in `main`.
//!
//! - **Transparent huge pages off.** mimalloc reserves its arena as one 1 GiB mapping and,
//!   where the kernel's THP mode is `madvise` (mimalloc asks for huge pages) or `always`, the
//!   kernel backs it with 2 MiB pages: one byte touched anywhere in a 2 MiB range makes all
//!   of it resident. Under the benchmark that was 22–38 MB of the server's resident memory
//!   (`AnonHugePages` in `/proc/<pid>/smaps_rollup`); without it the SQLite full stack's
//!   highest peak over the benchmark fell from 180 to 151 MB at the same throughput
//!   (decision 0012).
//! - **Freed memory returned at once.** mimalloc keeps memory it has freed for
//!   `purge_delay` milliseconds (1,000 by default in its version 3) before returning it to the
//!   kernel, so under load the resident set holds the last second's garbage on top of what
//!   is in use: 12–20 MB of the benchmark's SQLite peaks. [`return_memory_promptly`] makes
//!   the delay 0 unless the operator chose one with mimalloc's own `MIMALLOC_PURGE_DELAY`.

pub use mimalloc::MiMalloc;

/// Configures the process before any other thread exists: no transparent huge pages, and
/// freed memory returned to the kernel at once.
pub fn configure() {
    return_memory_promptly();
    no_transparent_huge_pages();
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`; it holds
/// for every mapping, present and future, and is inherited by child processes). Not being able
/// to set it (an old kernel, a seccomp filter) is not an error: the process only uses more
/// memory.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e`, the same in mimalloc 2 and
/// 3 (`libmimalloc-sys` names no constant for it). A test checks it against the option's
/// documented default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc reads the delay itself.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets mimalloc's purge delay to 0 (freed memory goes back to the kernel at once) unless
/// `MIMALLOC_PURGE_DELAY` is set. Call it first thing in `main`, before any other thread
/// exists.
fn return_memory_promptly() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        set_purge_delay(0);
    }
}

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; the option is read
    // each time mimalloc schedules a purge. It is called before any other thread exists
    // (`return_memory_promptly`'s contract), so nothing reads the entry while it is written.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, ms);
    }
}

#[cfg(test)]
fn purge_delay() -> std::ffi::c_long {
    // SAFETY: as in `set_purge_delay`; reading an option has no other effect.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the option table is the process's.
    #[test]
    fn the_option_is_mimallocs_purge_delay_and_is_set_to_zero() {
        if let Some(v) = std::env::var_os(PURGE_DELAY_ENV) {
            let v: std::ffi::c_long = v.to_string_lossy().parse().unwrap_or(-2);
            assert_eq!(purge_delay(), v, "the option at {PURGE_DELAY} does not follow {PURGE_DELAY_ENV}");
            return;
        }
        // 1,000 ms is purge_delay's default in mimalloc 3 (and no other option's): the index
        // names the right option.
        assert_eq!(purge_delay(), 1_000);
        return_memory_promptly();
        assert_eq!(purge_delay(), 0);
        set_purge_delay(25);
        assert_eq!(purge_delay(), 25);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_turned_off_for_the_process() {
        no_transparent_huge_pages();
        assert_eq!(rustix::thread::transparent_huge_pages_are_disabled().ok(), Some(true));
    }
}
