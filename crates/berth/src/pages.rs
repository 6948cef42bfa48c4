//! Resident memory the program no longer needs: the start-up pages of code and read-only
//! data once a long-running part is serving ([`unmap_clean_file_pages`]), and the free
//! pages left inside the heap after a burst ([`trim_heap_after_bursts`]).
//!
//! Code and read-only data are mapped from the binary and its libraries on first touch, a
//! whole fault-around window (64 KiB) at a time. Start-up (flag parsing, the kubeconfig's
//! YAML, TLS set-up, the first full list) touches most of the binary once, and those pages
//! stay counted in the process's resident memory for as long as it runs: 6.5 MiB of the
//! DNS's 8 MiB of code at 10,000 Services. Dropping the mappings of clean file pages after
//! sync leaves them in the page cache; the kernel maps back, on the next touch, only what
//! the server keeps running (2.7 MiB of the DNS's code).
//!
//! Only private read-only or executable file mappings with no anonymous (copied-on-write)
//! page are dropped: their contents are the file's, so nothing is lost. Relocated read-only
//! data (RELRO) has such pages and is always kept. No crate offers this; `madvise` comes
//! from `nix`.

use std::ops::Range;
use std::time::Duration;

/// A mapping of a file that can be dropped and faulted back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanMapping {
    pub range: Range<usize>,
    /// Its resident bytes when read.
    pub resident: usize,
}

/// The clean read-only and executable private file mappings in `smaps` (the text of
/// `/proc/self/smaps`). A mapping with any anonymous page, or whose fields cannot be read,
/// is left out.
pub fn clean_mappings(smaps: &str) -> Vec<CleanMapping> {
    /// A candidate mapping being read: its fields as they come.
    struct Reading {
        range: Range<usize>,
        resident: Option<usize>,
        anonymous_kib: Option<usize>,
    }
    impl Reading {
        fn clean(self) -> Option<CleanMapping> {
            (self.anonymous_kib? == 0).then_some(CleanMapping {
                range: self.range,
                resident: self.resident?,
            })
        }
    }
    let mut out = Vec::new();
    let mut current: Option<Reading> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            out.extend(current.take().and_then(Reading::clean));
            current = range.map(|range| Reading {
                range,
                resident: None,
                anonymous_kib: None,
            });
            continue;
        }
        let Some(reading) = current.as_mut() else {
            continue;
        };
        if let Some(kb) = field_kib(line, "Rss:") {
            reading.resident = kb.checked_mul(1024);
        } else if let Some(kb) = field_kib(line, "Anonymous:") {
            reading.anonymous_kib = Some(kb);
        }
    }
    out.extend(current.and_then(Reading::clean));
    out
}

/// `None` when `line` is not a mapping's header; `Some(None)` for a mapping that is not a
/// clean candidate, `Some(Some(range))` for a file mapped `r-xp` or `r--p`.
fn mapping_header(line: &str) -> Option<Option<Range<usize>>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    // offset, device, inode, then the path (which may hold spaces).
    let path = {
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            rest = rest.split_once(char::is_whitespace).map_or("", |(_, r)| r);
        }
        rest.trim()
    };
    let candidate = matches!(perms, "r-xp" | "r--p") && path.starts_with('/') && start < end;
    Some(candidate.then_some(start..end))
}

/// The value of a `Name:   123 kB` line.
fn field_kib(line: &str, name: &str) -> Option<usize> {
    let rest = line.strip_prefix(name)?.trim();
    rest.strip_suffix("kB")?.trim().parse().ok()
}

/// Drops the mappings of the process's clean code and read-only data pages, its program's
/// and its libraries' (see the module's docs); returns the resident bytes they had. The
/// kernel maps pages back as they are used.
#[allow(unsafe_code)]
pub fn unmap_clean_file_pages() -> std::io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in clean_mappings(&smaps) {
        let Some(start) = std::ptr::NonNull::new(m.range.start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is a whole private file mapping, read-only or executable, with
        // no anonymous page: dropping its pages loses no data, and the next
        // access maps the same bytes back from the file. No Rust object lives in it.
        unsafe {
            nix::sys::mman::madvise(
                start,
                m.range.len(),
                nix::sys::mman::MmapAdvise::MADV_DONTNEED,
            )
        }
        .map_err(std::io::Error::from)?;
        released += m.resident;
    }
    Ok(released)
}

/// How often [`trim_heap_after_bursts`] looks at the process's CPU time.
const TICK: Duration = Duration::from_secs(1);
/// Every how many ticks it looks at resident memory for growth.
const GROWTH_TICKS: u32 = 5;
/// Growth of resident memory, and free heap, that make a trim worth its cost (a walk of the
/// free chunks) while the process keeps working.
const TRIM_BYTES: usize = 8 << 20;
/// The same, once a burst has ended: the process is quiet, so a trim costs nothing that
/// competes.
const SETTLE_BYTES: usize = 2 << 20;
/// CPU time in one tick that makes it part of a burst, and under which a tick is quiet.
const BUSY: Duration = Duration::from_millis(100);
const QUIET: Duration = Duration::from_millis(20);
/// Quiet ticks after a burst that end it.
const QUIET_TICKS: u32 = 2;

/// Gives the heap's free pages back after a burst, from a thread of its own: when a burst
/// of work has ended (a second with 100 ms of CPU, then two with less than 20 ms) and the
/// process has grown 2 MiB over the least resident memory seen since the last trim, and
/// every 5 s during long bursts when it has grown 8 MiB, `malloc_trim(0)` returns the
/// whole free pages among the live blocks (when glibc holds as much free inside its heap),
/// and the code and read-only data the burst touched are unmapped
/// ([`unmap_clean_file_pages`]; the scale bench's server kept 24.5 MiB of its binary
/// resident after creating 10,000 Services and Pods). `free` alone returns only the top of
/// the heap, so the per-object buffers of a large LIST stay resident as holes between
/// long-lived blocks (the API server at 10,000 Services + 10,000 Pods, etcd backend:
/// 152 MiB, 183 MiB after 10 LISTs of every kind and 166 MiB 10 s later before this;
/// 152 MiB 10 s later with it). Without the end-of-burst rule, the scale bench read
/// 128 MiB where a trim gave 119. An idle tick reads only the process's CPU clock: trimming
/// on growth every second trimmed during the bursts themselves and doubled the idle CPU of
/// the embedded store's server. Elsewhere than glibc and Linux it does nothing.
pub fn trim_heap_after_bursts() {
    let spawned = std::thread::Builder::new()
        .name("berth-heap-trim".into())
        .spawn(|| {
            if free_heap().is_none() {
                return;
            }
            let mut trim = Trim::default();
            let mut cpu = process_cpu();
            for tick in 1u32.. {
                std::thread::sleep(TICK);
                let now = process_cpu();
                let ended = trim.tick(now.saturating_sub(cpu));
                cpu = now;
                if !ended && tick % GROWTH_TICKS != 0 {
                    continue;
                }
                let Some(resident) = resident_bytes() else {
                    return;
                };
                let min = if ended { SETTLE_BYTES } else { TRIM_BYTES };
                // The free count walks malloc's bins: only read once memory has grown.
                let free = || free_heap().unwrap_or(0);
                if trim.due(resident, free, min) {
                    trim_heap();
                    // The burst's code goes too: what keeps running maps back.
                    let code = unmap_clean_file_pages().unwrap_or(0);
                    tracing::debug!(code_kib = code / 1024, ended, "heap trimmed after a burst");
                    trim.trimmed(resident_bytes().unwrap_or(resident));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no heap trimming thread; memory freed after bursts stays resident");
    }
}

/// When to trim. The free heap alone cannot say: free chunks stay counted as free after
/// their pages are returned, and a burst that reuses and frees them again leaves the count
/// where it was with the pages resident again. Resident memory says it: a trim is due when
/// it has grown over the least seen since the last trim, and there is free heap to return.
#[derive(Debug, Default)]
struct Trim {
    floor: usize,
    /// A busy tick was seen since the last burst ended.
    burst: bool,
    /// Quiet ticks in a row.
    quiet: u32,
}

impl Trim {
    /// After a tick that took `cpu` of CPU time: whether it ends a burst.
    fn tick(&mut self, cpu: Duration) -> bool {
        if cpu >= BUSY {
            self.burst = true;
            self.quiet = 0;
            return false;
        }
        self.quiet = if cpu < QUIET { self.quiet + 1 } else { 0 };
        let ended = self.burst && self.quiet >= QUIET_TICKS;
        if ended {
            self.burst = false;
        }
        ended
    }

    /// Whether a trim is due at `resident` bytes with `free()` heap bytes: both over
    /// `min`, the first over the floor (`free` is asked only then).
    fn due(&mut self, resident: usize, free: impl FnOnce() -> usize, min: usize) -> bool {
        self.floor = self.floor.min(resident);
        resident > self.floor.saturating_add(min) && free() > min
    }

    /// After a trim, at `resident` bytes.
    fn trimmed(&mut self, resident: usize) {
        self.floor = resident;
    }
}

/// The CPU time this process has used, all threads (nix's `clock_gettime` needs a feature
/// that would rebuild every crate using nix; `libc` declares it).
#[allow(unsafe_code)]
fn process_cpu() -> Duration {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the one timespec it is given.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// This process's resident bytes (`VmRSS`), `None` where `/proc` does not say.
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: usize = kb.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// The bytes free inside malloc's heaps, `None` elsewhere than glibc. No crate wraps
/// `mallinfo2` or `malloc_trim` (`libc` declares them).
#[allow(unsafe_code)]
fn free_heap() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: reads malloc's own counters under its locks; no pointers.
        Some(unsafe { nix::libc::mallinfo2() }.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Returns the whole free pages inside malloc's heaps to the system.
#[allow(unsafe_code)]
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: adjusts malloc's own state under its locks; no pointers.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMAPS: &str = "\
5555000-5556000 r--p 00000000 fe:00 42 /opt/berth dns
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
5556000-5558000 r-xp 00001000 fe:00 42 /opt/berth dns
Size:                  8 kB
Rss:                   8 kB
Anonymous:             0 kB
5558000-5559000 r--p 00003000 fe:00 42 /opt/berth dns
Size:                  4 kB
Rss:                   4 kB
Anonymous:             4 kB
5559000-555a000 rw-p 00004000 fe:00 42 /opt/berth dns
Size:                  4 kB
Rss:                   4 kB
Anonymous:             4 kB
7f00000-7f01000 r-xp 00000000 fe:00 7 /usr/lib/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
7f02000-7f03000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn picks_clean_file_mappings_only() {
        let got = clean_mappings(SMAPS);
        assert_eq!(
            got,
            vec![
                CleanMapping {
                    range: 0x5555000..0x5556000,
                    resident: 4096
                },
                CleanMapping {
                    range: 0x5556000..0x5558000,
                    resident: 8192
                },
                CleanMapping {
                    range: 0x7f00000..0x7f01000,
                    resident: 4096
                },
            ]
        );
    }

    #[test]
    fn a_mapping_without_its_anonymous_count_is_kept() {
        let smaps = "1000-2000 r-xp 00000000 fe:00 42 /bin/x\nRss: 4 kB\n";
        assert!(clean_mappings(smaps).is_empty());
    }

    fn rss() -> usize {
        resident_bytes().expect("VmRSS")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn free_heap_among_live_blocks_is_given_back() {
        // 96 MiB in 4 KiB blocks, every 32nd kept: the rest is free, but between kept
        // blocks, where `free` alone never returns it.
        let mut blocks: Vec<Vec<u8>> = (0..24_576).map(|i| vec![(i as u8) | 1; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(32).map(std::mem::take).collect();
        drop(blocks);
        let free = free_heap().expect("glibc");
        assert!(free > 64 << 20, "{free} bytes free");
        let mut trim = Trim::default();
        let before = rss();
        assert!(trim.due(before, || free, 8 << 20));
        trim_heap();
        let after = rss();
        trim.trimmed(after);
        assert!(
            before.saturating_sub(after) > 48 << 20,
            "resident {before} -> {after}"
        );
        // Trimmed chunks stay free, but nothing grew: no second trim.
        assert!(!trim.due(rss(), || free_heap().expect("glibc"), 8 << 20));
        assert!(kept.iter().all(|b| b.len() == 4096));
    }

    #[test]
    fn trims_follow_growth_over_the_least_resident_seen() {
        let mut t = Trim::default();
        assert!(!t.due(5, || 50, 10), "5 over 0");
        assert!(t.due(20, || 50, 10), "20 over 0");
        assert!(!t.due(20, || 5, 10), "grown, but too little free");
        t.trimmed(14);
        assert!(!t.due(20, || 50, 10), "6 over the 14 after the trim");
        assert!(!t.due(12, || 50, 10), "shrinking lowers the floor to 12");
        assert!(t.due(23, || 50, 10), "11 over 12");
        assert!(!t.due(usize::MAX, || usize::MAX, usize::MAX), "no overflow");
        assert!(resident_bytes().is_some_and(|r| r > 0));
    }

    #[test]
    fn a_burst_ends_after_quiet_ticks() {
        let ms = Duration::from_millis;
        let mut t = Trim::default();
        assert!(
            !t.tick(ms(0)) && !t.tick(ms(0)) && !t.tick(ms(0)),
            "idle is no burst"
        );
        assert!(!t.tick(ms(500)), "busy");
        assert!(!t.tick(ms(1)), "one quiet tick");
        assert!(
            !t.tick(ms(50)),
            "neither busy nor quiet starts the count again"
        );
        assert!(!t.tick(ms(1)));
        assert!(t.tick(ms(1)), "two quiet ticks end it");
        assert!(!t.tick(ms(1)) && !t.tick(ms(1)), "once");
        assert!(process_cpu() > Duration::ZERO);
    }

    fn own_clean_mappings() -> Vec<CleanMapping> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        clean_mappings(&smaps)
    }

    #[test]
    fn this_processs_code_is_found_and_runs_after_it_is_dropped() {
        let found = own_clean_mappings();
        assert!(
            found.iter().any(|m| m.resident > 0),
            "no resident clean mapping: {found:?}"
        );
        // Dropped while this and other tests run: the next instructions fault back.
        let released = unmap_clean_file_pages().expect("madvise");
        assert!(released > 0);
        assert_eq!(format!("{:?}", Some(40 + 2)), "Some(42)");
        assert!(!own_clean_mappings().is_empty());
    }

    proptest! {
        #[test]
        fn any_text_reads_without_panic(text in "(([0-9a-f]{1,8}-[0-9a-f]{1,8} [rwxp-]{4} [0-9a-f]+ [0-9:]+ [0-9]+ ?/?[a-z ]*)|(Rss|Anonymous|Size): *[0-9 ]*(kB)?|.{0,20})(\n.{0,30}){0,8}") {
            let _ = clean_mappings(&text);
        }
    }
}
