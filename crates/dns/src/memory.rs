//! How the DNS keeps its resident memory small after a large (re)list: the heap's free pages
//! are handed back (the process's malloc settings are the program's: `berth::tune_malloc`).
//! glibc only: no crate wraps `malloc_trim` (`libc` declares it), so it is called here;
//! elsewhere this does nothing.

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
