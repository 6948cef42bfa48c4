//! Whether the kernel's OOM killer struck inside a container's memory cgroup, learnt as
//! containerd's shim learns it: on cgroup v1 an eventfd registered on the cgroup's
//! `memory.oom_control` through `cgroup.event_control` (the kernel signals it at every OOM in
//! the cgroup, and once more when the cgroup is removed); on v2 the `oom_kill` count in
//! `memory.events`, read until the cgroup goes. One thread per watched container, ending with
//! the cgroup. Written here: no maintained crate wraps the v1 notification API.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::mpsc;
use std::time::Duration;

/// How long after a lone signal with the cgroup gone the watcher waits for a second one.
/// An OOM signal read late (after the runtime removed the cgroup, before the kernel's
/// removal signal, which comes from a workqueue) looks like the removal until then.
const FOLLOW_UP: Duration = Duration::from_millis(300);

/// A container's OOM watch: ends with a verdict once the cgroup is gone or an OOM came.
#[derive(Debug)]
pub struct Watch {
    /// `true` once an OOM is known; `false` as the first guess when the cgroup went, which a
    /// `true` may follow (see [`FOLLOW_UP`]).
    verdict: mpsc::Receiver<bool>,
    /// The memory cgroup made for the container.
    dir: PathBuf,
}

impl Drop for Watch {
    /// The runtime removes the cgroup when the container ends; this covers a container that
    /// never started (an empty cgroup; one still in use is left alone by the kernel).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Watch {
    /// Whether an OOM kill happened, waiting at most `wait` for the watcher (which learns it
    /// at the latest when the runtime removes the cgroup, before the container's exit is
    /// seen). A container that died of SIGKILL, as the OOM killer's victims do, also waits
    /// out the watcher's doubt on a lone signal (at most [`FOLLOW_UP`]); others do not, so a
    /// clean exit is reported at once.
    pub fn killed(&self, wait: Duration, sigkilled: bool) -> bool {
        match self.verdict.recv_timeout(wait) {
            Ok(true) => true,
            Ok(false) if sigkilled => self.verdict.recv_timeout(FOLLOW_UP * 2).unwrap_or(false),
            _ => false,
        }
    }
}

/// Makes the memory cgroup at `cgroup` (relative to the hierarchy's root, as an OCI
/// `cgroupsPath` names it) and watches it. `None` when the node has no memory controller.
pub fn watch(cgroup: &Path) -> Option<Watch> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let v1_root = Path::new("/sys/fs/cgroup/memory");
    let v1 = v1_root.join(rel);
    let v2 = Path::new("/sys/fs/cgroup").join(rel);
    let (tx, rx) = mpsc::channel();
    // Made here, before the runtime (which takes an existing cgroup as it is and removes it
    // when the container ends), so the watch is in place before anything runs in it.
    if v1_root.join("memory.oom_control").exists() {
        std::fs::create_dir_all(&v1).ok()?;
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        std::fs::create_dir_all(&v2).ok()?;
    }
    let dir = if v1.join("memory.oom_control").exists() {
        let efd = register_v1(&v1)
            .inspect_err(
                |e| tracing::debug!(cgroup = %v1.display(), error = %e, "no OOM notifications"),
            )
            .ok()?;
        let dir = v1.clone();
        spawn(move || wait_v1(efd, &v1, &tx))?;
        dir
    } else if v2.join("memory.events").exists() {
        let dir = v2.clone();
        spawn(move || {
            let _ = tx.send(wait_v2(&v2));
        })?;
        dir
    } else {
        return None;
    };
    Some(Watch { verdict: rx, dir })
}

fn spawn(f: impl FnOnce() + Send + 'static) -> Option<()> {
    std::thread::Builder::new()
        .name("berth-oom".into())
        .spawn(f)
        .ok()
        .map(drop)
}

/// An eventfd the kernel signals at OOM in `dir` (a v1 memory cgroup) and at its removal.
fn register_v1(dir: &Path) -> std::io::Result<EventFd> {
    let control = std::fs::File::open(dir.join("memory.oom_control"))?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?;
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )?;
    // The kernel holds its own reference to memory.oom_control from here on.
    Ok(efd)
}

/// Blocks until the eventfd fires and sends the verdict: an OOM when it counted more than
/// the removal, or when the cgroup is still there. A lone signal with the cgroup gone is
/// the removal or an OOM read late: `false` goes out at once, and `true` after it if a
/// second signal (the removal) comes within [`FOLLOW_UP`].
fn wait_v1(efd: EventFd, dir: &Path, verdict: &mpsc::Sender<bool>) {
    let oom = match efd.read() {
        Ok(count) => count >= 2 || dir.exists(),
        Err(_) => false,
    };
    let _ = verdict.send(oom);
    if !oom && signalled_within(&efd, FOLLOW_UP) {
        let _ = verdict.send(true);
    }
}

/// Whether the eventfd is signalled within `wait`.
fn signalled_within(efd: &EventFd, wait: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Reads `oom_kill` from memory.events every few milliseconds until it rises or the cgroup
/// goes (v2 has no removal notification to block on).
fn wait_v2(dir: &Path) -> bool {
    let events: PathBuf = dir.join("memory.events");
    loop {
        match std::fs::read_to_string(&events) {
            Ok(text) if oom_kills(&text) > 0 => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
}

/// The `oom_kill` count of a memory.events (v2) or memory.oom_control (v1) file.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn oom_kill_counts_are_read_from_either_file() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 1);
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
            4
        );
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    /// The race of a loaded node: the OOM signal is read only after the cgroup is gone, and
    /// the removal signal comes after that read.
    #[test]
    fn an_oom_read_after_the_cgroup_went_is_still_an_oom() {
        let gone = Path::new("/nonexistent/berth-oom-test");
        let (tx, rx) = mpsc::channel();
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd");
        efd.write(1).expect("the OOM signal");
        let signal = efd.as_fd().try_clone_to_owned().expect("dup");
        let watcher = std::thread::spawn(move || wait_v1(efd, gone, &tx));
        std::thread::sleep(Duration::from_millis(50));
        nix::unistd::write(&signal, &1u64.to_ne_bytes()).expect("the removal signal");
        watcher.join().expect("watcher");
        let watch = Watch {
            verdict: rx,
            dir: gone.into(),
        };
        assert!(watch.killed(Duration::from_millis(200), true));
    }

    #[test]
    fn a_lone_signal_with_the_cgroup_gone_is_the_removal() {
        let gone = Path::new("/nonexistent/berth-oom-test");
        for sigkilled in [false, true] {
            let (tx, rx) = mpsc::channel();
            let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd");
            efd.write(1).expect("the removal signal");
            std::thread::spawn(move || wait_v1(efd, gone, &tx));
            let watch = Watch {
                verdict: rx,
                dir: gone.into(),
            };
            let asked = std::time::Instant::now();
            assert!(!watch.killed(Duration::from_millis(200), sigkilled));
            // A clean exit does not wait out the watcher's doubt.
            if !sigkilled {
                assert!(asked.elapsed() < FOLLOW_UP);
            }
        }
    }

    #[test]
    fn a_signal_with_the_cgroup_still_there_is_an_oom() {
        let here = std::env::temp_dir();
        let (tx, rx) = mpsc::channel();
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd");
        efd.write(1).expect("the OOM signal");
        wait_v1(efd, &here, &tx);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [true]);
    }
}
