//! How glibc's allocator hands large buffers back to the system.
//!
//! glibc serves a request of at least `M_MMAP_THRESHOLD` bytes with its own
//! `mmap`, unmapped when freed. By default the threshold moves up to the
//! size of each such buffer freed, so after the first chunk of a chunked
//! copy, buffers of hundreds of KiB come from the per-thread arenas
//! instead, which keep what is freed. A 5M-row chunked copy peaked at 94 MB
//! RSS that way (`benches/chunked_vs_exported.sh`); with the threshold held
//! at [`MMAP_THRESHOLD`] and 4 MiB chunks, at 53 MB.
//!
//! A mapped buffer costs a page fault per 4 KiB it touches, so the
//! threshold sits above the buffers walpipe fills again and again: a
//! driver chunk ([`CHUNK_CAPACITY`]), a spill block and
//! a COPY piece, 256 KiB each. At 256 KiB, `walpipe tail` used up to 50%
//! more CPU on a large transaction.
//!
//! Invariants:
//! - Called once, at the start of `main`, before any other thread exists.
//! - Only the threshold changes; a libc other than glibc is left as it is.
//!
//! With `pg::receive_side`, the only `unsafe` code in walpipe:
//! `mallopt` has no safe wrapper in `libc`.
//!
//! [`CHUNK_CAPACITY`]: crate::pipeline::driver::CHUNK_CAPACITY

/// Requests of this size and more are mapped on their own, and unmapped when freed.
const MMAP_THRESHOLD: usize = 384 * 1024;
const _: () =
    assert!(MMAP_THRESHOLD > crate::pipeline::driver::CHUNK_CAPACITY, "a driver chunk would be mapped");

/// Holds glibc's mmap threshold at [`MMAP_THRESHOLD`].
#[allow(unsafe_code)]
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` takes two integers and changes the allocator's
        // settings under its own lock; no pointer is passed. A refusal (it
        // returns 0) leaves glibc's default: more memory, nothing worse.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    }
}
