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

/// A container's OOM watch: ends with a verdict once the cgroup is gone or an OOM came.
#[derive(Debug)]
pub struct Watch {
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
    /// seen).
    pub fn killed(&self, wait: Duration) -> bool {
        self.verdict.recv_timeout(wait).unwrap_or(false)
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
        spawn(move || {
            let _ = tx.send(wait_v1(efd, &v1));
        })?;
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

/// Blocks until the eventfd fires: an OOM when it counted more than the removal, or when
/// the cgroup is still there.
fn wait_v1(efd: EventFd, dir: &Path) -> bool {
    match efd.read() {
        Ok(count) => count >= 2 || dir.exists(),
        Err(_) => false,
    }
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

    #[test]
    fn oom_kill_counts_are_read_from_either_file() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 1);
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
            4
        );
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
