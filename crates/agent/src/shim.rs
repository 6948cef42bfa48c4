//! `berth container-shim`: the small process that holds one container so it outlives the
//! agent, as containerd's per-container shims do. The agent spawns the shim instead of the
//! container; the shim leaves the agent's session (no parent-death signal ties it to the
//! agent), starts the container's first process (`berth container-init` or runc, whose chain
//! still dies with the shim), writes the container's PID and start time to a state file,
//! tells the agent, reaps the container and writes its exit status to an exit file. A
//! console container's shim (`--tty`, `--stdin`) also holds its terminal or pipes and serves
//! them to the agent on a socket ([`crate::console`]).
//!
//! The agent waits for the shim's exit through a pidfd (which works on a process that is
//! not its child: a restarted agent [`find`]s the shims an earlier one left and waits on
//! them the same way), then reads the exit file.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use serde::{Deserialize, Serialize};

use crate::runtime::StartError;

/// What a shim writes once the container runs: which processes hold and are the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The shim.
    pub shim: u32,
    /// The shim's start time (`/proc/PID/stat` field 22), so a reused PID is not taken
    /// for it.
    pub shim_start: u64,
    /// The container's first process (what the worker signals and exec enters).
    pub pid: u32,
}

/// How a container held by a shim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What a restarted agent finds of a container an earlier agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Still running under its shim.
    Running(Held),
    /// Ended while no agent watched.
    Exited(Exit),
}

/// `DIR/<name>.shim`: a container's state file beside its log.
pub fn state_path(log: &Path) -> PathBuf {
    log.with_extension("shim")
}

/// `DIR/<name>.exit`: how the container ended.
pub fn exit_path(log: &Path) -> PathBuf {
    log.with_extension("exit")
}

/// The start time of process `pid` in clock ticks since boot; `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count after its `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Held {
    /// Whether the shim is still the process it was.
    pub fn alive(&self) -> bool {
        start_time(self.shim) == Some(self.shim_start)
    }
}

/// What an earlier agent left for the container logging to `log`: `None` when nothing (never
/// started by a shim, or the shim was killed before writing an exit).
pub fn find(log: &Path) -> Option<Found> {
    if let Ok(text) = std::fs::read(exit_path(log))
        && let Ok(exit) = serde_json::from_slice::<Exit>(&text)
    {
        return Some(Found::Exited(exit));
    }
    let held: Held = serde_json::from_slice(&std::fs::read(state_path(log)).ok()?).ok()?;
    held.alive().then_some(Found::Running(held))
}

/// Clears what a previous run of a container left, before it starts again.
pub fn forget(log: &Path) {
    let _ = std::fs::remove_file(state_path(log));
    let _ = std::fs::remove_file(exit_path(log));
    let _ = std::fs::remove_file(crate::console::socket_path(log));
}

/// The stdio a shim gives its container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Io {
    /// A terminal, whose master side the shim holds (`tty: true`).
    pub tty: bool,
    /// A stdin pipe the shim holds open (`stdin: true`); without `tty`, stdout and stderr
    /// are pipes too.
    pub stdin: bool,
    /// The command makes a session of its own (`setsid`, as runc with a terminal does): it
    /// stays in the shim's process group, since setsid(1) would fork as a group leader.
    pub same_group: bool,
}

impl Io {
    /// A console container's: what `kubectl attach` can join.
    pub fn console(&self) -> bool {
        self.tty || self.stdin
    }

    fn args(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.tty, "--tty"),
            (self.stdin, "--stdin"),
            (self.same_group, "--same-group"),
        ]
        .into_iter()
        .filter_map(|(on, arg)| on.then_some(arg))
    }
}

/// Kills the containers still held by shims in `pod_dir` (a pod that is gone) and their
/// shims; how many there were. Image containers' inits are killed directly: runc's
/// container is in a session of its own, out of reach of its runc's death.
pub fn kill_all(pod_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(pod_dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "shim") {
            continue;
        }
        let Some(Found::Running(held)) = find(&path.with_extension("log")) else {
            continue;
        };
        let kill = |pid: u32| {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        };
        if let Some(init) = crate::oci::container_init(held.pid) {
            kill(init);
        }
        crate::runtime::signal(held.pid, nix::sys::signal::Signal::SIGKILL);
        kill(held.shim);
        n += 1;
    }
    n
}

/// Starts `cmd` (the container's first process, with its environment set) under a shim of
/// `self_exe`, its stdout and stderr appended to `log` (through the shim's console for
/// `io.console()`); returns once the container runs.
/// Off the async workers' scheduling while it waits for the shim's word.
pub fn spawn(
    self_exe: &Path,
    cmd: &std::process::Command,
    log: &Path,
    io: Io,
) -> Result<Held, StartError> {
    let run_error = |message: String| StartError {
        reason: "RunContainerError",
        message,
    };
    forget(log);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| run_error(format!("opening {}: {e}", log.display())))?;
    let mut shim = tokio::process::Command::new(self_exe);
    shim.arg("container-shim")
        .arg("--state")
        .arg(state_path(log))
        .arg("--exit")
        .arg(exit_path(log))
        .args(io.args())
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(out)
        // Reaped by tokio once dropped; the agent watches it through a pidfd instead.
        .kill_on_drop(false);
    let mut child = shim
        .spawn()
        .map_err(|e| run_error(format!("starting the container's shim: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| run_error("the shim's stdout is missing".into()))?
        .into_owned_fd()
        .map_err(|e| run_error(format!("reading the shim: {e}")))?;
    let read = || {
        let mut line = String::new();
        std::io::BufReader::new(std::fs::File::from(stdout))
            .read_line(&mut line)
            .map(|_| line)
    };
    let line =
        crate::oci::blocking(read).map_err(|e| run_error(format!("reading the shim: {e}")))?;
    match serde_json::from_str::<Held>(&line) {
        Ok(held) => Ok(held),
        // The shim said why on stderr (the log) and exits 127.
        Err(_) => Err(run_error(format!(
            "the container did not start: {}",
            last_line(log)
        ))),
    }
}

fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().last().unwrap_or_default().to_owned()
}

/// Waits until the shim holding a container exits, and returns how the container ended
/// (unknown, `None`s, when the shim was killed before it could say).
pub async fn wait(held: Held, log: PathBuf) -> Exit {
    let unknown = Exit {
        code: None,
        signal: None,
    };
    let pid = i32::try_from(held.shim)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let fd = pid
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok());
    // Opened before checking the start time: the pidfd then refers to the shim, or the PID
    // was reused and the shim is long gone.
    if let Some(fd) = fd
        && held.alive()
        && let Ok(fd) = watch(fd)
    {
        let _ = fd.readable().await;
    }
    match std::fs::read(exit_path(&log)) {
        Ok(text) => serde_json::from_slice(&text).unwrap_or(unknown),
        Err(_) => unknown,
    }
}

/// Registers a pidfd with tokio's reactor (readable once the process has exited).
/// `with_interest` is deprecated because a borrowed descriptor could be closed while
/// registered; an `OwnedFd` moved into the `AsyncFd` cannot be, which is the sound case
/// (the replacement, `register_with_interest`, is an unsafe fn for the general one).
#[allow(deprecated)]
fn watch(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
}

/// `berth container-shim --state FILE --exit FILE [--tty] [--stdin] [--same-group] --
/// COMMAND...`: see the module docs. Exits as the container did (128 + its signal), 127 when
/// it could not start it.
pub fn main_for(args: &[String]) -> ExitCode {
    if args.first().is_some_and(|a| a.starts_with("--pause")) {
        return crate::sandbox::pause::main_for(args);
    }
    let fail = |e: String| {
        eprintln!("berth container-shim: {e}");
        ExitCode::from(127)
    };
    let Some((state, exit_to, io, argv)) = parse(args) else {
        return fail(
            "usage: container-shim --state FILE --exit FILE [--tty] [--stdin] [--same-group] -- COMMAND..."
                .into(),
        );
    };
    // Out of the agent's session and process group: a terminal's ^C or a signal to the
    // agent's group does not reach the container through us.
    let _ = nix::unistd::setsid();
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    if !io.same_group {
        // A group of its own, which the agent signals, as before the shim.
        cmd.process_group(0);
    }
    let console = if io.console() {
        let socket = crate::console::socket_path(state);
        match crate::console::Server::bind(&socket, io.tty, &mut cmd) {
            Ok(s) => Some(s),
            Err(e) => return fail(e),
        }
    } else {
        let stderr = std::io::stderr();
        let log = |what| {
            stderr
                .as_fd()
                .try_clone_to_owned()
                .map(Stdio::from)
                .map_err(|e| format!("duplicating the log for {what}: {e}"))
        };
        match (log("stdout"), log("stderr")) {
            (Ok(o), Ok(e)) => cmd.stdout(o).stderr(e),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        None
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("starting {:?}: {e}", argv[0])),
    };
    // The command holds the parent's copies of the terminal's slave side: the output ends
    // only once the container's are closed.
    drop(cmd);
    let drained = match console.map(|s| {
        let log = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
        Ok::<_, std::io::Error>(s.serve(&mut child, &log))
    }) {
        None => None,
        Some(Ok(Ok(d))) => Some(d),
        Some(Ok(Err(e))) => return fail(e),
        Some(Err(e)) => return fail(format!("duplicating the log: {e}")),
    };
    let me = std::process::id();
    let held = Held {
        shim: me,
        shim_start: start_time(me).unwrap_or(0),
        pid: child.id(),
    };
    let said = serde_json::to_string(&held)
        .map_err(|e| e.to_string())
        .and_then(|json| write_atomically(state, json.as_bytes()).map(|()| json))
        .and_then(|json| {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}")
                .and_then(|()| stdout.flush())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = said {
        // The agent may be gone already; the container runs on, its state unknown.
        eprintln!("berth container-shim: recording the container: {e}");
    }
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => return fail(format!("waiting for the container: {e}")),
    };
    if let Some(d) = drained {
        // Its last output logged (and sent) before its exit is reported.
        d.wait(std::time::Duration::from_secs(2));
    }
    let exit = Exit {
        code: status.code(),
        signal: status.signal(),
    };
    if let Ok(json) = serde_json::to_vec(&exit) {
        let _ = write_atomically(exit_to, &json);
    }
    let code = exit.code.unwrap_or_else(|| 128 + exit.signal.unwrap_or(0));
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// The shim's arguments: state file, exit file, stdio, the container's command.
fn parse(args: &[String]) -> Option<(&Path, &Path, Io, &[String])> {
    let [s, state, e, exit, rest @ ..] = args else {
        return None;
    };
    if s != "--state" || e != "--exit" {
        return None;
    }
    let mut io = Io::default();
    for (i, a) in rest.iter().enumerate() {
        match a.as_str() {
            "--tty" => io.tty = true,
            "--stdin" => io.stdin = true,
            "--same-group" => io.same_group = true,
            "--" => {
                let argv = rest.get(i + 1..).filter(|a| !a.is_empty())?;
                return Some((Path::new(state), Path::new(exit), io, argv));
            }
            _ => return None,
        }
    }
    None
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`: readers
/// see the whole file or none.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_s_arguments_parse() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let plain = args(&["--state", "s", "--exit", "e", "--", "sh", "-c", "x"]);
        let (state, exit, io, argv) = parse(&plain).expect("parses");
        assert_eq!((state, exit), (Path::new("s"), Path::new("e")));
        assert_eq!(io, Io::default());
        assert_eq!(argv, ["sh", "-c", "x"]);
        let console = args(&[
            "--state",
            "s",
            "--exit",
            "e",
            "--tty",
            "--same-group",
            "--",
            "runc",
        ]);
        let (_, _, io, _) = parse(&console).expect("parses");
        assert_eq!(
            io,
            Io {
                tty: true,
                stdin: false,
                same_group: true
            }
        );
        assert_eq!(Io { stdin: true, ..io }.args().count(), 3);
        for bad in [
            &["--state", "s", "--exit", "e", "--"][..],
            &["--state", "s", "--exit", "e", "--bogus", "--", "sh"],
            &["--exit", "e", "--state", "s", "--", "sh"],
            &["--state", "s", "--exit", "e", "sh"],
            &[],
        ] {
            assert!(parse(&args(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_process_start_time_is_read_past_odd_names() {
        let me = std::process::id();
        let t = start_time(me).expect("this process runs");
        assert!(t > 0);
        assert_eq!(start_time(me), Some(t), "stable");
        assert_eq!(start_time(u32::MAX), None);
    }

    fn json(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap_or_default()
    }

    fn check(files: &[(&str, String)], expected: Option<Found>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web.log");
        for (ext, text) in files {
            std::fs::write(log.with_extension(ext), text).expect("test file");
        }
        assert_eq!(find(&log), expected, "{files:?}");
    }

    #[test]
    fn what_an_earlier_agent_left_is_found() {
        let me = std::process::id();
        let alive = Held {
            shim: me,
            shim_start: start_time(me).expect("runs"),
            pid: 4242,
        };
        let reused = Held {
            shim_start: alive.shim_start + 1,
            ..alive
        };
        let exit = Exit {
            code: Some(3),
            signal: None,
        };
        check(&[], None);
        check(&[("shim", json(&alive))], Some(Found::Running(alive)));
        // The shim's PID now names another process: the container is gone, its end unknown.
        check(&[("shim", json(&reused))], None);
        check(&[("shim", "{garbage".into())], None);
        // Once the exit is written it counts, whatever the state says.
        check(
            &[("shim", json(&alive)), ("exit", json(&exit))],
            Some(Found::Exited(exit)),
        );
    }
}
