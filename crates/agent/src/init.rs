//! `berth container-init`: the first program of every process container. It joins the pod's
//! network, UTS and IPC namespaces and gives the container its own mount and PID ones (or
//! joins the pod's PID namespace, held by its `sandbox::pause`, with `shareProcessNamespace`). Its
//! root is an overlay of the node's root file system with a private, in-memory upper layer,
//! so the container sees the node's programs but every write stays in the container; /tmp,
//! /run, /root, /home, /var/tmp and /var/log start empty, berth's data directory is hidden,
//! and the pod's /etc/resolv.conf, /etc/hosts and volumes are bound in. It then starts
//! `container-init --reap`, PID 1 of the new PID namespace, which runs the command as its
//! child, forwards signals to it and reaps orphans (as `docker run --init` does), so `ps`
//! in a pod shows only the pod's processes and SIGTERM reaches a shell that ignores it as
//! PID 1. Both ask to die with their parent, so everything dies with whoever started the
//! container: its `shim` (which outlives the agent).
//!
//! The three processes (agent -> container-init -> reaper -> command) exist because safe
//! Rust cannot fork: each step is a spawn of the `berth` binary.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// What `berth container-init` is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct InitArgs {
    pub netns: String,
    pub hostname: String,
    /// Start a session with the terminal on stdin as controlling terminal (`tty: true`).
    pub tty: bool,
    /// The container's working directory (`workingDir`), made if missing; `/` otherwise.
    pub workdir: Option<String>,
    /// Directories of the node copied into the container's root, replacing what is there
    /// (the files a host image needs, such as nginx's configuration).
    pub copies: Vec<Copy>,
    /// Volumes to bind into the container, in this order.
    pub binds: Vec<Bind>,
    /// Paths the container must not see (berth's data directory): covered by an empty,
    /// read-only file system.
    pub hide: Vec<String>,
    /// An empty directory of the agent's where the container's root is assembled (in the
    /// container's mount namespace only); without one the container shares the node's files.
    pub stage: Option<String>,
    pub argv: Vec<String>,
}

/// One volume mount: `source` (a directory or file the agent made) bound over `target`, made
/// in the container's root if missing; only the container's mount namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A directory tree of the node copied to `target` in the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub source: String,
    pub target: String,
}

impl InitArgs {
    /// `--netns NS --hostname NAME [--tty] [--workdir DIR] [--copy SOURCE TARGET]...
    /// [--bind|--ro-bind SOURCE TARGET]... [--hide PATH]... -- ARGV...`
    pub fn parse(args: &[String]) -> Result<InitArgs, String> {
        let mut it = args.iter();
        let (mut netns, mut hostname, mut tty, mut workdir) = (None, None, false, None);
        let mut stage = None;
        let (mut binds, mut copies, mut hide) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match it.next().map(String::as_str) {
                Some("--netns") => netns = it.next().cloned(),
                Some("--hostname") => hostname = it.next().cloned(),
                Some("--tty") => tty = true,
                Some("--workdir") => {
                    workdir = Some(it.next().cloned().ok_or("--workdir needs a directory")?);
                }
                Some("--stage") => {
                    stage = Some(it.next().cloned().ok_or("--stage needs a directory")?);
                }
                Some("--hide") => hide.push(it.next().cloned().ok_or("--hide needs a path")?),
                Some(flag @ ("--bind" | "--ro-bind" | "--copy")) => {
                    let (Some(source), Some(target)) = (it.next(), it.next()) else {
                        return Err(format!("{flag} needs a source and a target"));
                    };
                    let (source, target) = (source.clone(), target.clone());
                    if flag == "--copy" {
                        copies.push(Copy { source, target });
                    } else {
                        let read_only = flag == "--ro-bind";
                        binds.push(Bind {
                            source,
                            target,
                            read_only,
                        });
                    }
                }
                Some("--") => break,
                Some(other) => return Err(format!("unexpected argument {other:?}")),
                None => return Err("missing -- and the command".into()),
            }
        }
        let argv: Vec<String> = it.cloned().collect();
        if argv.is_empty() {
            return Err("no command after --".into());
        }
        Ok(InitArgs {
            netns: netns.ok_or("--netns is required")?,
            hostname: hostname.ok_or("--hostname is required")?,
            tty,
            workdir,
            copies,
            binds,
            hide,
            stage,
            argv,
        })
    }

    /// The command line the runtime starts for these arguments.
    pub fn command_line(&self) -> Vec<String> {
        let mut v = vec![
            "container-init".to_owned(),
            "--netns".into(),
            self.netns.clone(),
            "--hostname".into(),
            self.hostname.clone(),
        ];
        if self.tty {
            v.push("--tty".into());
        }
        if let Some(dir) = &self.workdir {
            v.extend(["--workdir".to_owned(), dir.clone()]);
        }
        for c in &self.copies {
            v.extend(["--copy".to_owned(), c.source.clone(), c.target.clone()]);
        }
        for b in &self.binds {
            let flag = if b.read_only { "--ro-bind" } else { "--bind" };
            v.extend([flag.to_owned(), b.source.clone(), b.target.clone()]);
        }
        for h in &self.hide {
            v.extend(["--hide".to_owned(), h.clone()]);
        }
        if let Some(dir) = &self.stage {
            v.extend(["--stage".to_owned(), dir.clone()]);
        }
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }
}

/// Runs `berth container-init ARGS`, returning the command's exit status (128 + the signal
/// that ended it), or 127 after saying on stderr (the container's log) why it could not run.
pub fn main_for(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("--reap") => return reap(&args[1..]),
        Some("--exec") => return exec(&args[1..]),
        _ => {}
    }
    let result = InitArgs::parse(args).and_then(|a| enter(&a).map(|()| a));
    match result {
        Ok(a) => supervise(&a),
        Err(e) => {
            eprintln!("berth container-init: {e}");
            ExitCode::from(127)
        }
    }
}

/// The signals passed on to the container's command; SIGKILL needs no passing on, since
/// each process dies with its parent.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Blocks the forwarded signals and SIGCHLD, which are then taken with `sigwait`: the safe
/// way to wait for them without handlers, and the way a PID 1 receives signals sent to it.
/// Spawned children start with an empty mask (the standard library resets it).
fn block_signals() -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    Ok(set)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// The first process, outside the container's PID namespace: starts the reaper inside it,
/// passes signals on and exits as it does.
fn supervise(a: &InitArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("berth container-init: {e}");
        ExitCode::from(127)
    };
    let set = match block_signals() {
        Ok(set) => set,
        Err(e) => return fail(e),
    };
    // The path the agent started us by; bound at the same path in the container's root.
    let Some(exe) = std::env::args_os().next() else {
        return fail("no program path in argv".into());
    };
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["container-init", "--reap"]);
    if a.tty {
        cmd.arg("--tty");
    }
    // A group of its own, so the agent's signals to this process's group are passed on once.
    cmd.arg("--").args(&a.argv).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("starting the container's init: {e}")),
    };
    let reaper = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return exit_code(
                        status
                            .code()
                            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                    );
                }
            }
            Ok(sig) => {
                let _ = nix::sys::signal::kill(reaper, sig);
            }
            Err(_) => {}
        }
    }
}

/// `container-init --reap [--tty] -- ARGV`: PID 1 of the container's PID namespace. Mounts
/// the namespace's /proc, runs the command, passes signals on to it, reaps
/// every orphan, and exits with the command's status (which ends every other process in the
/// namespace).
fn reap(args: &[String]) -> ExitCode {
    let fail = |e: String| {
        eprintln!("berth container-init: {e}");
        ExitCode::from(127)
    };
    let (tty, argv) = match args {
        [t, dash, argv @ ..] if t == "--tty" && dash == "--" => (true, argv),
        [dash, argv @ ..] if dash == "--" => (false, argv),
        _ => return fail("usage: container-init --reap [--tty] -- COMMAND...".into()),
    };
    let Some(program) = argv.first() else {
        return fail("no command after --".into());
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return fail(format!("asking to die with the container's init: {e}"));
    }
    // In the pod's shared PID namespace (whose PID 1 is the pod's pause) the container's
    // orphans come to this process, which ends them when the command ends, as the end of a
    // PID 1 would.
    let shared = nix::unistd::getpid().as_raw() != 1;
    if shared && let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(format!("becoming the container's subreaper: {e}"));
    }
    // /proc as this namespace sees it: `ps` lists the pod's processes only.
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>) {
        eprintln!("berth container-init: mounting /proc: {e}");
    }
    let set = match block_signals() {
        Ok(set) => set,
        Err(e) => return fail(e),
    };
    // Through `--exec`, which lets the signals blocked here through before the command runs
    // (a spawned child inherits the mask; resetting it between fork and exec takes unsafe
    // code).
    let Some(exe) = std::env::args_os().next() else {
        return fail("no program path in argv".into());
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["container-init", "--exec"]);
    if tty {
        cmd.arg("--tty");
    } else {
        cmd.process_group(0);
    }
    cmd.arg("--").args(argv);
    let main = match cmd.spawn() {
        Ok(child) => Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
        Err(e) => return fail(format!("cannot run {program:?}: {e}")),
    };
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == main => {
                        end_descendants(shared);
                        return exit_code(code);
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                        end_descendants(shared);
                        return exit_code(128 + sig as i32);
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(sig) => {
                // The command only, as container runtimes signal a container's PID 1; the
                // rest of the namespace ends when it does.
                let _ = nix::sys::signal::kill(main, sig);
            }
            Err(_) => {}
        }
    }
}

/// Kills and reaps what is left of the container once its command ended, when the reaper is
/// not its namespace's PID 1 (whose end would do that) but its subreaper: each round kills the
/// children left (orphans of theirs come next) until none is.
fn end_descendants(shared: bool) {
    if !shared {
        return;
    }
    let me = std::process::id();
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/self/task/{me}/children")).unwrap_or_default();
        let children: Vec<i32> = children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        if children.is_empty() {
            while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
            {}
            return;
        }
        for c in children {
            let _ = nix::sys::signal::kill(Pid::from_raw(c), Signal::SIGKILL);
        }
        let _ = waitpid(Pid::from_raw(-1), None);
    }
}

/// `container-init --exec [--tty] -- ARGV`: unblocks every signal and becomes the command;
/// with a terminal, through setsid(1), which makes it the terminal's session leader (the
/// TIOCSCTTY ioctl would otherwise take unsafe code here).
fn exec(args: &[String]) -> ExitCode {
    let (tty, argv) = match args {
        [t, dash, argv @ ..] if t == "--tty" && dash == "--" => (true, argv),
        [dash, argv @ ..] if dash == "--" => (false, argv),
        _ => (false, &[][..]),
    };
    let _ = SigSet::all().thread_unblock();
    let Some(program) = argv.first() else {
        eprintln!("berth container-init: no command after --");
        return ExitCode::from(127);
    };
    let mut argv: Vec<String> = argv.to_vec();
    if tty {
        argv.splice(0..0, ["setsid".to_owned(), "--ctty".to_owned()]);
    }
    let Ok(cargv) = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("berth container-init: the command has a NUL byte");
        return ExitCode::from(127);
    };
    let err = nix::unistd::execvp(&cargv[0], &cargv).err();
    eprintln!(
        "berth container-init: cannot run {program:?}: {}",
        err.map_or_else(String::new, |e| e.desc().to_owned())
    );
    ExitCode::from(127)
}

fn enter(a: &InitArgs) -> Result<(), String> {
    // The agent keeps its own files private (umask 077); a container, and what is made for
    // it here, starts with the usual 022, as container runtimes give it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // New UTS and IPC namespaces of its own for a sandbox made before they were pinned.
    let mut own =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | join_pod_namespaces(&a.netns)?;
    // The pod's PID namespace when its containers share one (`shareProcessNamespace`): the
    // reaper and the command, started next, run in it beside the other containers' processes.
    let pid_ns = crate::sandbox::shared_ns_path(&a.netns, "pid");
    match std::fs::File::open(&pid_ns) {
        Ok(ns) => {
            setns(&ns, CloneFlags::CLONE_NEWPID)
                .map_err(|e| format!("joining {}: {e}", pid_ns.display()))?;
            own.remove(CloneFlags::CLONE_NEWPID);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("opening {}: {e}", pid_ns.display())),
    }
    unshare(own).map_err(|e| format!("new mount and PID namespaces: {e}"))?;
    slave_root()?;
    let etc = Path::new("/etc/netns").join(&a.netns);
    let root = match &a.stage {
        Some(stage) => overlay_root(Path::new(stage)),
        None => Err("no stage directory".to_owned()),
    };
    match root {
        Ok(root) => {
            populate(a, &root, &etc)?;
            pivot(&root)?;
            let dir = a.workdir.as_deref().unwrap_or("/");
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir);
            nix::unistd::chdir(dir).map_err(|e| format!("entering {dir}: {e}"))?;
        }
        Err(e) => {
            eprintln!("berth container-init: {e}; the container shares the node's file system");
            in_place(a, &etc)?;
            if let Some(dir) = &a.workdir {
                nix::unistd::chdir(dir.as_str()).map_err(|e| format!("entering {dir}: {e}"))?;
            }
        }
    }
    nix::unistd::sethostname(&a.hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("asking to die with the shim or agent that started it: {e}"))?;
    Ok(())
}

fn tmpfs(at: &Path, options: &str, extra: MsFlags) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra,
        Some(options),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", at.display()))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|e| format!("making {}: {e}", p.display()))
}

/// An overlay of the node's root file system (lower) and a tmpfs (upper) at STAGE/root: the
/// container reads the node's files and writes only to memory it loses when it ends.
fn overlay_root(stage: &Path) -> Result<PathBuf, String> {
    tmpfs(stage, "mode=0700", MsFlags::empty())?;
    let root = stage.join("root");
    let made = [stage.join("upper"), stage.join("work"), root.clone()]
        .iter()
        .try_for_each(|d| mkdir(d, 0o755));
    let options = format!(
        "lowerdir=/,upperdir={},workdir={}",
        stage.join("upper").display(),
        stage.join("work").display()
    );
    let mounted = made.and_then(|()| {
        mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("no overlay of the node's root ({e})"))
    });
    if let Err(e) = mounted {
        let _ = umount2(stage, MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(root)
}

/// Fills the new root: the kernel's file systems, empty private directories, the pod's
/// files, copies, volumes; then hides what must stay hidden.
fn populate(a: &InitArgs, root: &Path, etc: &Path) -> Result<(), String> {
    let dev = root.join("dev");
    mount(
        Some("/dev"),
        &dev,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding /dev: {e}"))?;
    tmpfs(&dev.join("shm"), "mode=1777", MsFlags::empty())?;
    // A /sys that shows the pod's own network devices; best effort, as nothing the pod runs
    // depends on it.
    let _ = mount(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    for (dir, mode) in PRIVATE_DIRS {
        let p = root.join(dir);
        mkdir(&p, 0o755)?;
        tmpfs(&p, &format!("mode={mode:o}"), MsFlags::empty())?;
    }
    for file in ["resolv.conf", "hosts"] {
        let from = etc.join(file);
        if from.exists() {
            // A symlink (to systemd-resolved's file, say) is replaced by a file to bind over.
            let to = root.join("etc").join(file);
            if to.is_symlink() {
                let _ = std::fs::remove_file(&to);
            }
            if !to.exists() {
                std::fs::write(&to, "").map_err(|e| format!("making {}: {e}", to.display()))?;
            }
            bind_at(&from, &to, false)?;
        }
    }
    let hostname = root.join("etc/hostname");
    if hostname.is_symlink() {
        let _ = std::fs::remove_file(&hostname);
    }
    std::fs::write(&hostname, format!("{}\n", a.hostname))
        .map_err(|e| format!("writing /etc/hostname: {e}"))?;
    for c in &a.copies {
        let to = resolve_in(root, &c.target)?;
        if to.is_dir() && !to.is_symlink() {
            let _ = std::fs::remove_dir_all(&to);
        } else {
            let _ = std::fs::remove_file(&to);
        }
        copy_tree(Path::new(&c.source), &to)
            .map_err(|e| format!("copying {} to {}: {e}", c.source, c.target))?;
    }
    for b in &a.binds {
        let source = Path::new(&b.source);
        let to = resolve_in(root, &b.target)?;
        if !to.exists() {
            if source.is_dir() {
                mkdir(&to, 0o755)?;
            } else {
                if let Some(parent) = to.parent() {
                    mkdir(parent, 0o755)?;
                }
                std::fs::write(&to, "").map_err(|e| format!("making {}: {e}", b.target))?;
            }
        }
        bind_at(source, &to, b.read_only)
            .map_err(|e| format!("volume {} at {}: {e}", b.source, b.target))?;
    }
    for h in &a.hide {
        let p = resolve_in(root, h)?;
        if p.is_dir() {
            tmpfs(&p, "mode=0755", MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}

/// Directories every container gets empty and private, with their modes.
const PRIVATE_DIRS: &[(&str, u32)] = &[
    ("tmp", 0o1777),
    ("var/tmp", 0o1777),
    ("run", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("var/log", 0o755),
];

/// Makes `root` the process's root and lets the old one go (runc's `pivot_root(".", ".")`).
fn pivot(root: &Path) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(|e| format!("entering the new root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("letting the node's root go: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("entering /: {e}"))
}

/// `path` inside `root`, with every symlink on the way resolved as if `root` were `/`
/// (what runc's securejoin does), so nothing made or mounted for the container lands
/// outside its root, whatever `..` or links the path or the node's files hold.
pub fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, String> {
    fn parts(p: &Path) -> impl Iterator<Item = OsString> + '_ {
        p.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
    }
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = parts(Path::new(path)).collect();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            done.pop();
            continue;
        }
        let at: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        match std::fs::read_link(&at) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(format!("too many symbolic links in {path}"));
                }
                if target.is_absolute() {
                    done.clear();
                }
                for p in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(p);
                }
            }
            Err(_) => done.push(part),
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// Copies a directory tree (files, directories, symlinks as links) to `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_symlink() {
        return std::os::unix::fs::symlink(std::fs::read_link(from)?, to);
    }
    if !meta.is_dir() {
        return std::fs::copy(from, to).map(|_| ());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// The old layout, when the node has no overlayfs: the node's file system with the pod's
/// resolv.conf, hosts and volumes bound over it (targets must exist on the node).
fn in_place(a: &InitArgs, etc: &Path) -> Result<(), String> {
    for file in ["resolv.conf", "hosts"] {
        let from = etc.join(file);
        if from.exists() {
            bind_at(&from, &Path::new("/etc").join(file), false)?;
        }
    }
    for b in &a.binds {
        bind_at(Path::new(&b.source), Path::new(&b.target), b.read_only)
            .map_err(|e| format!("volume {} at {}: {e}", b.source, b.target))?;
    }
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    Ok(())
}

/// Binds `from` over `to`, read-only when asked (a second, remounting call: a bind mount
/// takes MS_RDONLY only on remount).
fn bind_at(from: &Path, to: &Path, read_only: bool) -> Result<(), String> {
    let fail = |e: nix::Error| format!("binding {} over {}: {e}", from.display(), to.display());
    mount(
        Some(from),
        to,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail)?;
    if read_only {
        mount(
            None::<&str>,
            to,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Joins the pod's network namespace and the UTS and IPC namespaces its containers share;
/// returns the flags of those the sandbox has not pinned (made before they were).
pub(crate) fn join_pod_namespaces(netns: &str) -> Result<CloneFlags, String> {
    let path = crate::sandbox::netns_path(netns);
    let ns = std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining {netns}: {e}"))?;
    let mut missing = CloneFlags::empty();
    for (kind, flag) in [
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
    ] {
        let path = crate::sandbox::shared_ns_path(netns, kind);
        match std::fs::File::open(&path) {
            Ok(ns) => setns(&ns, flag).map_err(|e| format!("joining {}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing |= flag,
            Err(e) => return Err(format!("opening {}: {e}", path.display())),
        }
    }
    Ok(missing)
}

/// Makes every mount below `/` a slave in a fresh mount namespace, so mounts made here never
/// reach the node's namespace (while the node's still propagate in).
pub(crate) fn slave_root() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave mount: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_round_trip() {
        let a = InitArgs {
            netns: "berth-pod-0123456789ab".into(),
            hostname: "web".into(),
            tty: true,
            binds: vec![
                Bind {
                    source: "/state/pods/u/volumes/conf".into(),
                    target: "/etc/nginx/conf.d".into(),
                    read_only: true,
                },
                Bind {
                    source: "/state/pods/u/volumes/scratch".into(),
                    target: "/tmp".into(),
                    read_only: false,
                },
            ],
            hide: vec!["/var/lib/berth".into()],
            copies: vec![Copy {
                source: "/state/host-images/nginx/etc".into(),
                target: "/etc/nginx".into(),
            }],
            workdir: Some("/srv".into()),
            stage: Some("/state/pods/u/c.root".into()),
            argv: strings(&["sh", "-c", "echo --netns"]),
        };
        let line = a.command_line();
        assert_eq!(line[0], "container-init");
        assert_eq!(InitArgs::parse(&line[1..]), Ok(a));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &[][..],
            &["--netns", "x", "--hostname", "h", "--"][..],
            &["--hostname", "h", "--", "sh"][..],
            &["--bogus"][..],
            &[
                "--netns",
                "x",
                "--hostname",
                "h",
                "--bind",
                "/a",
                "--",
                "sh",
            ][..],
        ] {
            assert!(InitArgs::parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_resolve_inside_the_root_through_links() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("var")).expect("setup");
        std::fs::create_dir_all(r.join("run")).expect("setup");
        std::os::unix::fs::symlink("/run", r.join("var/run")).expect("setup");
        std::os::unix::fs::symlink("../../../../etc", r.join("run/up")).expect("setup");
        std::os::unix::fs::symlink("loop", r.join("loop")).expect("setup");
        let at = |p: &str| resolve_in(r, p).expect("resolves");
        assert_eq!(at("/var/run/x"), r.join("run/x"));
        assert_eq!(at("/run/up/passwd"), r.join("etc/passwd"));
        assert_eq!(at("/../../etc/shadow"), r.join("etc/shadow"));
        assert_eq!(at("a/./b/../c"), r.join("a/c"));
        assert!(resolve_in(r, "/loop/x").is_err());
    }

    proptest::proptest! {
        /// Whatever the path and links, the result stays under the root and has no `..`.
        #[test]
        fn resolved_paths_never_leave_the_root(
            path in "[a-c./]{0,24}",
            links in proptest::collection::vec(("[a-c]", "[a-c./]{0,12}"), 0..4),
        ) {
            let root = tempfile::tempdir().expect("tempdir");
            for (name, target) in &links {
                let _ = std::os::unix::fs::symlink(target, root.path().join(name));
            }
            if let Ok(p) = resolve_in(root.path(), &path) {
                proptest::prop_assert!(p.starts_with(root.path()), "{p:?}");
                proptest::prop_assert!(
                    !p.components().any(|c| c == Component::ParentDir),
                    "{p:?}"
                );
            }
        }
    }
}
