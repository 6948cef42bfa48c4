//! The container runtime seen from the pod workers: start one container's process inside
//! a pod sandbox, signal it, and resolve what its image means. Today's runtime runs host
//! processes ([`Processes`]); [`crate::oci`] implements the same [`Runtime`] trait with runc.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Container;

pub use crate::console::Console;

/// Why a container could not be started, in the kubelet's terms: `reason` is what the
/// container's `waiting` state shows (`ErrImagePull`, `RunContainerError`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StartError {
    pub reason: &'static str,
    pub message: String,
}

/// Everything a runtime needs to start one container.
#[derive(Debug, Clone)]
pub struct StartSpec<'a> {
    /// The pod sandbox's network namespace.
    pub netns: &'a str,
    /// The pod's name, which is the container's hostname.
    pub hostname: &'a str,
    pub container: &'a Container,
    /// The container's full environment (Service variables, then its own `env`).
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log: &'a Path,
    /// The container's volumes, bound over their mount paths in its mount namespace.
    pub binds: Vec<crate::init::Bind>,
}

/// A started container: its main process, leader of a process group of its own (so a
/// signal reaches everything it started), and how to learn that it ended.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub exit: Waiter,
}

/// How the agent learns that a container ended.
#[derive(Debug)]
pub enum Waiter {
    /// A container held by a [`crate::shim`], which outlives the agent; its log's path.
    Shim(crate::shim::Held, PathBuf),
}

impl Waiter {
    /// Waits for the container's end: its exit code, or the signal that ended it; both
    /// `None` when that is unknown.
    pub async fn wait(self) -> (Option<i32>, Option<i32>) {
        match self {
            Waiter::Shim(held, log) => {
                let exit = crate::shim::wait(held, log).await;
                (exit.code, exit.signal)
            }
        }
    }
}

impl Started {
    /// A container under a shim that logs to `log`.
    pub(crate) fn held(held: crate::shim::Held, log: &Path) -> Started {
        Started {
            pid: held.pid,
            exit: Waiter::Shim(held, log.to_owned()),
        }
    }
}

/// Starts container processes.
pub trait Runtime: Send + Sync + 'static {
    /// Starts the container, held by a [`crate::shim`] so that it outlives the agent.
    /// Containers with `stdin` or `tty` come with their [`Console`] (a connection to the
    /// shim's console socket), which `kubectl attach` connects to.
    fn start(&self, spec: &StartSpec<'_>) -> Result<(Started, Option<Arc<Console>>), StartError>;

    /// Takes on a container an earlier agent started (held by a shim), whose main process
    /// is `pid`, logging to `log`: what the runtime keeps per container (runc's id, the OOM
    /// watch) is set up again.
    fn adopt(&self, _pid: u32, _log: &Path, _container: &Container) {}

    /// Signals the container whose main process (the child [`Runtime::start`] gave) is
    /// `pid`, and what it started.
    fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        signal(pid, sig);
    }

    /// Whether the container whose main process was `pid` (now exited) was killed by the
    /// kernel's OOM killer; asked once, when it has exited (`sigkilled`: by SIGKILL, as the
    /// OOM killer's victims are).
    fn oom_killed(&self, _pid: u32, _sigkilled: bool) -> bool {
        false
    }

    /// The container status's `imageID` for `image` (`repository@sha256:...` for an image
    /// the node has); empty when it has none.
    fn image_id(&self, _image: &str) -> String {
        String::new()
    }
}

/// Starts `cmd` (a container's first process) under a shim, one path for both runtimes:
/// a console container's shim holds its terminal or pipes, and its [`Console`] connects to
/// the shim. `same_group`: the command makes its own session (see [`crate::shim::Io`]).
pub(crate) fn start_held(
    self_exe: &Path,
    cmd: &std::process::Command,
    c: &Container,
    log: &Path,
    same_group: bool,
) -> Result<(Started, Option<Arc<Console>>), StartError> {
    let io = crate::shim::Io {
        tty: c.tty == Some(true),
        stdin: c.stdin == Some(true),
        same_group,
    };
    let held = crate::shim::spawn(self_exe, cmd, log, io)?;
    // The shim listens before it starts the container.
    let console = if io.console() {
        crate::console::reconnect(log, c)
    } else {
        None
    };
    Ok((Started::held(held, log), console))
}

/// The environment of process `pid` (a container's main process), from /proc.
pub fn process_env(pid: u32) -> Vec<(String, String)> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let (k, v) = std::str::from_utf8(kv).ok()?.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// A command that runs `argv` inside the container whose `berth container-init` is `pid`:
/// in its network, UTS, IPC and mount namespaces (its root, where the pod's resolv.conf and hosts
/// are mounted), in the PID namespace its command runs in, in its working directory and
/// with its environment. What exec probes and `kubectl exec` run.
pub fn in_container(pid: u32, argv: &[String]) -> std::process::Command {
    if let Some(init) = crate::oci::container_init(pid) {
        return crate::oci::in_container(init, argv);
    }
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg("-t")
        .arg(pid.to_string())
        .args(["--net", "--uts", "--ipc", "--mount", "--root", "--wd"])
        .arg(format!("--pid=/proc/{pid}/ns/pid_for_children"))
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(process_env(pid));
    cmd
}

/// Sets an exec session's terminal's size (which signals SIGWINCH to its foreground process
/// group). stty does the TIOCSWINSZ ioctl on the device by name.
pub async fn resize_tty(tty: Option<&Path>, cols: u16, rows: u16) {
    let Some(tty) = tty else { return };
    let _ = tokio::process::Command::new("stty")
        .arg("-F")
        .arg(tty)
        .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// The consoles of the containers running on this node, by (pod uid, container name).
#[derive(Debug, Default)]
pub struct Consoles(Mutex<HashMap<(String, String), Arc<Console>>>);

impl Consoles {
    pub fn get(&self, pod_uid: &str, container: &str) -> Option<Arc<Console>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(pod_uid.to_owned(), container.to_owned()))
            .cloned()
    }

    pub fn set(&self, pod_uid: &str, container: &str, console: Option<Arc<Console>>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (pod_uid.to_owned(), container.to_owned());
        match console {
            Some(c) => map.insert(key, c),
            None => map.remove(&key),
        };
    }
}

/// Signals the process group of a container's main process; a group already gone is fine.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    // Group 0 is the caller's own (and 1 would be init's): never a container's.
    let Ok(pid) = i32::try_from(pid)
        .map_err(drop)
        .and_then(|p| if p > 1 { Ok(p) } else { Err(()) })
    else {
        return;
    };
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
}

/// Runs containers as host processes, started through `berth container-init` (see
/// [`crate::init`]): in the pod's network namespace, with their own PID and mount namespaces
/// over a private overlay of the node's files, the pod's resolv.conf, hosts and hostname,
/// held by a [`crate::shim`].
#[derive(Debug, Clone)]
pub struct Processes {
    /// The `berth` binary, which runs the built-in workloads (`berth workload ...`).
    pub self_exe: PathBuf,
    /// The agent's state directory, where the files host images need are made.
    pub state_dir: PathBuf,
    /// Directories containers must not see (berth's data directory).
    pub hide: Vec<PathBuf>,
}

/// Images that stand for programs of the host when the container gives no command: the
/// ENTRYPOINT and CMD their real image has (args replace CMD, as with the real image). Any
/// image with a `command` runs that command from the host.
const HOST_IMAGES: &[(&str, &[&str], &[&str])] = &[
    ("busybox", &[], &["sh"]),
    ("alpine", &[], &["/bin/sh"]),
    ("debian", &[], &["bash"]),
    ("ubuntu", &[], &["/bin/bash"]),
    // netshoot's CMD is zsh, which Debian hosts rarely have.
    ("nicolaka/netshoot", &[], &["bash"]),
    ("netshoot", &[], &["bash"]),
    ("curlimages/curl", &["curl"], &["--help"]),
    // Debian's nginx package, when the host has it (berth's scripts do not install it, since
    // it would also start a service on the node).
    ("nginx", &[], &["nginx", "-g", "daemon off;"]),
];

/// Whether `image` means something without a store: a built-in workload or a host image
/// (registry hosts and tags aside). These are never pulled.
pub fn host_image(image: &str) -> bool {
    berth_workloads::Builtin::from_image(image).is_some()
        || HOST_IMAGES
            .iter()
            .any(|(n, _, _)| *n == berth_workloads::repository(image))
}

impl Processes {
    /// Whether `image` means something without a store: a built-in workload or a host image.
    pub fn knows(&self, image: &str) -> bool {
        host_image(image)
    }

    /// The argv a container runs: its command and args; for a built-in image the `berth`
    /// binary's workload on the container's first port; for a host image its default command.
    pub fn argv(&self, c: &Container) -> Result<Vec<String>, StartError> {
        let args = c.args.clone().unwrap_or_default();
        if let Some(command) = &c.command {
            return Ok(command.iter().cloned().chain(args).collect());
        }
        let image = c.image.clone().unwrap_or_default();
        if let Some(b) = berth_workloads::Builtin::from_image(&image) {
            let port = c
                .ports
                .iter()
                .flatten()
                .next()
                .map_or(i32::from(b.default_port()), |p| p.container_port);
            let mut argv = vec![
                self.self_exe.display().to_string(),
                "workload".into(),
                b.name().into(),
                "--port".into(),
                port.to_string(),
            ];
            argv.extend(args);
            return Ok(argv);
        }
        if let Some((_, entrypoint, cmd)) = HOST_IMAGES
            .iter()
            .find(|(n, _, _)| *n == berth_workloads::repository(&image))
        {
            let tail: Vec<String> = if args.is_empty() {
                cmd.iter().map(|s| (*s).to_owned()).collect()
            } else {
                args
            };
            return Ok(entrypoint
                .iter()
                .map(|s| (*s).to_owned())
                .chain(tail)
                .collect());
        }
        Err(StartError {
            reason: "ErrImagePull",
            message: format!(
                "image {image:?} is not a built-in workload or a known host image, and the container has no command"
            ),
        })
    }
}

impl Runtime for Processes {
    fn start(&self, spec: &StartSpec<'_>) -> Result<(Started, Option<Arc<Console>>), StartError> {
        let argv = self.argv(spec.container)?;
        let run_error = |message: String| StartError {
            reason: "RunContainerError",
            message,
        };
        let io_error = |what: &str, e: std::io::Error| run_error(format!("{what}: {e}"));
        // Made private here; the shim appends to it.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(spec.log)
            .map_err(|e| io_error(&format!("opening {}", spec.log.display()), e))?;
        let c = spec.container;
        let tty = c.tty == Some(true);
        // Beside the log: an empty directory the container's root is assembled on.
        let stage = spec.log.with_extension("root");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&stage)
            .map_err(|e| io_error(&format!("making {}", stage.display()), e))?;
        let repository = berth_workloads::repository(c.image.as_deref().unwrap_or_default());
        let copies = crate::hostfiles::for_image(&self.state_dir, repository)
            .map_err(|e| io_error("making the image's files", e))?;
        // The berth binary itself, for built-in workloads and the container's init, wherever
        // it lies (a hidden or private directory, say).
        let exe = self.self_exe.display().to_string();
        let mut binds = vec![crate::init::Bind {
            source: exe.clone(),
            target: exe,
            read_only: true,
        }];
        binds.extend(spec.binds.iter().cloned());
        let init = crate::init::InitArgs {
            netns: spec.netns.to_owned(),
            hostname: spec.hostname.to_owned(),
            tty,
            workdir: c.working_dir.clone().filter(|d| !d.is_empty()),
            copies,
            binds,
            hide: self.hide.iter().map(|p| p.display().to_string()).collect(),
            stage: Some(stage.display().to_string()),
            argv,
        };
        // The shim puts the command in a group of its own, which the agent signals;
        // container-init passes signals on.
        let mut cmd = std::process::Command::new(&self.self_exe);
        cmd.args(init.command_line());
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOSTNAME", spec.hostname)
            // What a container runtime gives root when the image says nothing.
            .env("HOME", "/root");
        if tty {
            cmd.env("TERM", "xterm");
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        start_held(&self.self_exe, &cmd, c, spec.log, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: Option<&[&str]>, args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: command.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| (*s).to_owned()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn images_resolve_to_builtins_host_programs_or_a_clear_error() {
        let p = Processes {
            self_exe: "/bin/berth".into(),
            state_dir: "/s".into(),
            hide: Vec::new(),
        };
        assert_eq!(
            p.argv(&container("busybox:1.36", None, &[]))
                .expect("test setup"),
            ["sh"]
        );
        assert_eq!(
            p.argv(&container("busybox", None, &["sh", "-c", "echo hi"]))
                .expect("test setup"),
            ["sh", "-c", "echo hi"]
        );
        assert_eq!(
            p.argv(&container("r.deso.tech/library/netshoot", None, &[]))
                .expect("test setup"),
            ["bash"]
        );
        assert_eq!(
            p.argv(&container("curlimages/curl", None, &["-s", "x"]))
                .expect("test setup"),
            ["curl", "-s", "x"]
        );
        assert_eq!(
            p.argv(&container("anything", Some(&["sleep"]), &["5"]))
                .expect("test setup"),
            ["sleep", "5"]
        );
        assert_eq!(
            p.argv(&container("berth/whoami", None, &[]))
                .expect("test setup")[..3],
            ["/bin/berth", "workload", "whoami"]
        );
        assert_eq!(
            p.argv(&container("nginx:1.27", None, &[]))
                .expect("test setup"),
            ["nginx", "-g", "daemon off;"]
        );
        let e = p
            .argv(&container("httpd", None, &[]))
            .expect_err("should fail");
        assert_eq!(e.reason, "ErrImagePull");
        assert!(e.message.contains("\"httpd\""), "{e}");
    }
}
