//! The PID-namespace holder of a pod with `shareProcessNamespace: true`: Kubernetes's pause
//! container. A PID namespace cannot be pinned by a bind mount as the network, UTS and IPC
//! ones are: once its PID 1 exits nothing can join it again. So such a pod gets one more
//! process, PID 1 of a new PID namespace, which reaps the orphans its containers leave and
//! otherwise waits; every container of the pod joins its namespace and sees the others'
//! processes. Pods without the flag get none (each container is PID 1 of its own).
//!
//! It is started through the shim's entry (`berth container-shim --pause ...`), leaves the
//! agent's session and is reparented away from the agent, so it outlives an agent restart
//! like the shims do; its PID and start time are kept beside the pinned namespaces
//! (`/run/berth/ns/<netns>/pause.json`), where a restarted agent finds it and the sandbox's
//! removal kills it (which ends every process left in the namespace).

use std::io::BufRead;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The holder of a pod's PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub pid: u32,
    /// Its start time (`/proc/PID/stat` field 22), so a reused PID is not taken for it.
    pub start: u64,
}

impl Pause {
    pub fn alive(&self) -> bool {
        crate::shim::start_time(self.pid) == Some(self.start)
    }
}

/// `/run/berth/ns/<netns>/pause.json`.
pub fn state_path(netns: &str) -> PathBuf {
    super::netns::shared_path(netns, "pause.json")
}

/// The pod's running PID-namespace holder, if it has one.
pub fn find(netns: &str) -> Option<Pause> {
    read(&state_path(netns))
}

/// The holder a state file names, if that process still runs.
fn read(path: &Path) -> Option<Pause> {
    let pause: Pause = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    pause.alive().then_some(pause)
}

/// Kills the pod's PID-namespace holder, and with it every process in its namespace.
pub(crate) fn kill(netns: &str) {
    if let Some(p) = find(netns)
        && let Ok(pid) = i32::try_from(p.pid)
    {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(state_path(netns));
}

/// Starts the holder for the pod whose network namespace is `netns` (whose shared UTS and
/// IPC namespaces it joins too, as the pause container holds them all) and pins its PID
/// namespace at `shared_path(netns, "pid")`, which the containers then join. Blocks until the
/// holder runs (a few milliseconds).
pub(crate) fn start(self_exe: &Path, netns: &str) -> Result<Pause> {
    let fail = |message: String| Error::Pause {
        netns: netns.to_owned(),
        message,
    };
    let state = state_path(netns);
    let root = super::netns::shared_path(netns, "pause.root");
    let mut child = std::process::Command::new(self_exe)
        .arg("container-shim")
        .arg("--pause")
        .arg(netns)
        .arg(&state)
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("starting it: {e}")))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    // The launcher exits once the holder runs; the holder is not our child.
    let _ = child.wait();
    let pause: Pause = serde_json::from_str(&line)
        .map_err(|_| fail("it did not start (see the agent's log)".into()))?;
    super::netns::pin(
        netns,
        pause.pid,
        "pid",
        &super::netns::shared_path(netns, "pid"),
    )?;
    Ok(pause)
}

/// `berth container-shim --pause NETNS STATE ROOT`: joins the pod's namespaces, makes a
/// new PID namespace whose PID 1 is `--pause-init ROOT` (started here), writes its PID and
/// start time to STATE and stdout, and exits, leaving it to the node's init.
/// `berth container-shim --pause-init ROOT`: that PID 1.
pub fn main_for(args: &[String]) -> ExitCode {
    let fail = |e: String| {
        eprintln!("berth pause: {e}");
        ExitCode::from(127)
    };
    let result = match args {
        [flag, netns, state, root] if flag == "--pause" => launch(netns, state, root),
        [flag, root] if flag == "--pause-init" => return init(Path::new(root)),
        _ => Err("usage: container-shim --pause NETNS STATE ROOT".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn launch(netns: &str, state: &str, root: &str) -> std::result::Result<(), String> {
    // Out of the agent's session and process group, as the shims are.
    let _ = nix::unistd::setsid();
    crate::init::join_pod_namespaces(netns)?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("a new PID namespace: {e}"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| format!("making {root}: {e}"))?;
    let exe = std::env::args_os()
        .next()
        .ok_or("no program path in argv")?;
    let child = std::process::Command::new(exe)
        .args(["container-shim", "--pause-init", root])
        // Holding none of the agent's files open (its log may be a pipe someone reads).
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting PID 1: {e}"))?;
    let pid = child.id();
    let pause = Pause {
        pid,
        start: crate::shim::start_time(pid).unwrap_or(0),
    };
    let json = serde_json::to_string(&pause).map_err(|e| e.to_string())?;
    crate::shim::write_atomically(Path::new(state), json.as_bytes())?;
    println!("{json}");
    Ok(())
}

/// PID 1 of the pod's PID namespace: its root an empty tmpfs (so `/proc/1/root` shows the
/// other containers nothing of the node), its name `pause`; reaps orphans, and exits on
/// SIGTERM or SIGINT (which PID 1 receives only when it waits for them, as here).
fn init(root: &Path) -> ExitCode {
    let _ = nix::sys::prctl::set_name(c"pause");
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("berth pause: blocking signals: {e}");
        return ExitCode::from(127);
    }
    if let Err(e) = empty_root(root) {
        // Still holds the namespace; only /proc/1/root shows more than it should.
        eprintln!("berth pause: {e}");
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                    waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
                {}
            }
            Ok(_) => return ExitCode::SUCCESS,
            Err(_) => {}
        }
    }
}

/// A mount namespace of its own whose root is an empty, read-only tmpfs at `root`.
fn empty_root(root: &Path) -> std::result::Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("a new mount namespace: {e}"))?;
    crate::init::slave_root()?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        Some("mode=0555,size=4k"),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", root.display()))?;
    nix::unistd::chdir(root).map_err(|e| format!("entering {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("letting the node's root go: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("entering /: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_found_only_while_it_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause.json");
        assert_eq!(read(&path), None);
        let me = std::process::id();
        let alive = Pause {
            pid: me,
            start: crate::shim::start_time(me).expect("runs"),
        };
        let write = |p: &Pause| {
            std::fs::write(&path, serde_json::to_vec(p).expect("json")).expect("write");
        };
        write(&alive);
        assert_eq!(read(&path), Some(alive));
        // The PID now names another process.
        write(&Pause {
            start: alive.start + 1,
            ..alive
        });
        assert_eq!(read(&path), None);
        std::fs::write(&path, "{garbage").expect("write");
        assert_eq!(read(&path), None);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &[][..],
            &["--pause"][..],
            &["--pause", "ns", "state"][..],
            &["--bogus", "x"][..],
        ] {
            let args: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(main_for(&args), ExitCode::from(127), "{bad:?}");
        }
    }
}
