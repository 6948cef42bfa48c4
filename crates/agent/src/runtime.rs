//! The container runtime seen from the pod workers: start one container's process inside
//! a pod sandbox, signal it, and resolve what its image means. Today's runtime runs host
//! processes ([`Processes`]); an OCI runtime later implements the same [`Runtime`] trait.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::Container;
use tokio::process::{Child, Command};

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
}

/// Starts and signals container processes.
pub trait Runtime: Send + Sync + 'static {
    /// Starts the container; the returned child is the container's main process, leader of
    /// a process group of its own (so a signal reaches everything it started).
    fn start(&self, spec: &StartSpec<'_>) -> Result<Child, StartError>;
}

/// Signals the process group of a container's main process; a group already gone is fine.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
}

/// Runs containers as host processes: `ip netns exec` puts them in the pod's network
/// namespace (and bind-mounts /etc/netns/<name>/ over /etc, giving them the pod's resolv.conf
/// and hosts), `unshare --uts` gives them the pod's hostname, `setpriv --pdeathsig KILL`
/// makes them die with the agent.
#[derive(Debug, Clone)]
pub struct Processes {
    /// The `berth` binary, which runs the built-in workloads (`berth workload ...`).
    pub self_exe: PathBuf,
}

/// Images that stand for programs of the host when the container gives no command: the
/// default command their real image would run. Any image with a `command` runs that
/// command from the host.
const HOST_IMAGES: &[(&str, &[&str])] = &[
    ("busybox", &["sh"]),
    ("alpine", &["sh"]),
    ("debian", &["bash"]),
    ("ubuntu", &["bash"]),
    ("nicolaka/netshoot", &["bash"]),
    ("curlimages/curl", &["curl"]),
];

/// An image name without registry, tag or digest: `docker.io/library/busybox:1.36` → `busybox`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let (path, last) = match image.rsplit_once('/') {
        Some((p, l)) => (Some(p), l),
        None => (None, image),
    };
    let name_len = last.split(':').next().unwrap_or(last).len();
    let end = path.map_or(0, |p| p.len() + 1) + name_len;
    let image = &image[..end];
    let image = image
        .strip_prefix("docker.io/")
        .or_else(|| image.strip_prefix("registry-1.docker.io/"))
        .unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image)
}

impl Processes {
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
        if let Some((_, default)) = HOST_IMAGES.iter().find(|(n, _)| *n == repository(&image)) {
            let mut argv: Vec<String> = default.iter().map(|s| (*s).to_owned()).collect();
            if !args.is_empty() {
                // As with a real image: args replace the image's CMD, keeping its shell.
                argv.truncate(1);
                argv.extend(args);
            }
            return Ok(argv);
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
    fn start(&self, spec: &StartSpec<'_>) -> Result<Child, StartError> {
        let argv = self.argv(spec.container)?;
        let run_error = |message: String| StartError {
            reason: "RunContainerError",
            message,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log)
            .map_err(|e| run_error(format!("opening {}: {e}", spec.log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| run_error(format!("opening {}: {e}", spec.log.display())))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", spec.netns, "unshare", "--uts", "--"])
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .args(["/bin/sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(spec.hostname)
            .args(&argv)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOSTNAME", spec.hostname)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        if let Some(dir) = spec.container.working_dir.as_deref() {
            cmd.current_dir(dir);
        }
        cmd.spawn()
            .map_err(|e| run_error(format!("starting {argv:?}: {e}")))
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
    fn repositories_drop_registry_tag_and_digest() {
        assert_eq!(repository("busybox"), "busybox");
        assert_eq!(repository("busybox:1.36"), "busybox");
        assert_eq!(repository("docker.io/library/busybox:1.36"), "busybox");
        assert_eq!(
            repository("nicolaka/netshoot@sha256:abc"),
            "nicolaka/netshoot"
        );
        assert_eq!(repository("localhost:5000/app:v1"), "localhost:5000/app");
    }

    #[test]
    fn images_resolve_to_builtins_host_programs_or_a_clear_error() {
        let p = Processes {
            self_exe: "/bin/berth".into(),
        };
        assert_eq!(
            p.argv(&container("busybox:1.36", None, &[]))
                .expect("test setup"),
            ["sh"]
        );
        assert_eq!(
            p.argv(&container("busybox", None, &["-c", "echo hi"]))
                .expect("test setup"),
            ["sh", "-c", "echo hi"]
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
        let e = p
            .argv(&container("nginx", None, &[]))
            .expect_err("should fail");
        assert_eq!(e.reason, "ErrImagePull");
        assert!(e.message.contains("\"nginx\""), "{e}");
    }
}
