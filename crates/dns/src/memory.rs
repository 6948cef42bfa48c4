//! How `berth dns` run alone keeps its resident memory small: one malloc arena instead of one
//! per thread, the heap's free pages handed back after a large (re)list, and the pages of the
//! executable and libraries that only start-up used let go once the zone is in. glibc and Linux only: no
//! crate wraps `mallopt`, `malloc_trim` or `madvise` of our own mappings (`libc` declares
//! them), so they are called here; elsewhere these do nothing.

/// One malloc arena for the whole process (`M_ARENA_MAX` 1): glibc otherwise gives threads
/// arenas of their own, and each keeps the pages the initial lists freed in it (~5 MB at
/// 10,000 Services). The server's threads allocate little while answering, so sharing one
/// arena costs no measurable speed. Call before any thread starts (before the runtime).
#[allow(unsafe_code)]
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; it takes no pointers.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
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

/// The mappings of `/proc/self/smaps` that may be let go: read-only, private, of a file
/// (the executable, the C library), with no private copies of pages (relocated data such as
/// `.data.rel.ro` has some, and must stay).
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            let perms = words.next().unwrap_or_default();
            let path = words.nth(3).unwrap_or_default();
            let readonly = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
            current = (readonly && path.starts_with('/') && lo < hi).then_some((lo, hi));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && words.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

/// Lets the kernel drop this process's page table entries for the read-only, unmodified
/// mappings of its executable and libraries (code and constants), so that what start-up
/// alone ran (the kubeconfig, TLS set-up, decoding the first lists) no longer counts in the
/// RSS; what runs later is faulted back in from the page cache, where the pages stay (they
/// are the files'). Returns the bytes of mappings advised.
#[allow(unsafe_code)]
pub fn release_startup_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut advised = 0;
        for (lo, hi) in clean_file_mappings(&smaps) {
            // SAFETY: [lo, hi) is a whole read-only private mapping of a file with no private
            // pages (smaps' Anonymous 0, and a read-only mapping cannot get any later), so
            // dropping its page table entries changes no contents: every page reads back the
            // same from the file's page cache, as it would have anyway. Nothing is written.
            let done = unsafe {
                nix::libc::madvise(
                    lo as *mut nix::libc::c_void,
                    hi - lo,
                    nix::libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                advised += hi - lo;
            }
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:01 12 /usr/bin/berth
Size:               1024 kB
Anonymous:             0 kB
55d0a0100000-55d0a0400000 r-xp 00100000 fe:01 12 /usr/bin/berth
Size:               3072 kB
Anonymous:             0 kB
55d0a0400000-55d0a0500000 r--p 00400000 fe:01 12 /usr/bin/berth
Size:               1024 kB
Anonymous:           812 kB
55d0a0500000-55d0a0510000 rw-p 00500000 fe:01 12 /usr/bin/berth
Size:                 64 kB
Anonymous:             0 kB
7f0000000000-7f0000200000 r-xp 00000000 fe:01 40 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               2048 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            [
                (0x55d0_a000_0000, 0x55d0_a010_0000),
                (0x55d0_a010_0000, 0x55d0_a040_0000),
                (0x7f00_0000_0000, 0x7f00_0020_0000),
            ]
        );
    }

    #[test]
    fn releasing_pages_keeps_the_process_working() {
        // Whatever it advised, code and constants still read the same afterwards.
        let before = format!("{:?}", (1..5).map(|i| i * 3).collect::<Vec<_>>());
        let _ = release_startup_pages();
        let after = format!("{:?}", (1..5).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(before, after);
        return_freed_memory();
    }
}
