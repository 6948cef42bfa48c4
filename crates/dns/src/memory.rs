//! How `berth-dns` (and `berth dns`) keeps its resident memory small: one malloc arena
//! instead of one per thread, large blocks mapped on their own, and the heap's free pages
//! handed back after a large (re)list. glibc only: no crate wraps `mallopt` or `malloc_trim`
//! (`libc` declares them), so they are called here; elsewhere these do nothing.

/// Blocks this large or larger get mappings of their own (returned to the system when freed)
/// instead of the heap: the buffers of a list's pages would otherwise leave holes between
/// the zone's small long-lived blocks (~1.4 MB at 10,000 Services).
const MMAP_THRESHOLD: i32 = 64 * 1024;

/// One malloc arena for the whole process (`M_ARENA_MAX` 1): glibc otherwise gives threads
/// arenas of their own, and each keeps the pages the initial lists freed in it (~5 MB at
/// 10,000 Services). The server's threads allocate little while answering, so sharing one
/// arena costs no measurable speed. A fixed `M_MMAP_THRESHOLD` (glibc would raise it to the
/// largest block freed so far). Call before any thread starts (before the runtime).
#[allow(unsafe_code)]
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc tunables; it takes no pointers.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Gives the heap's free pages back to the system (glibc keeps them in its arenas, so a
/// one-off burst would stay in the RSS).
#[allow(unsafe_code)]
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers from us.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
