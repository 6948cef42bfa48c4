//! Image pods: containers whose image is in the node's image store (`berth image import`)
//! run from that image's root filesystem under Debian's `runc`, as containerd's runc shim
//! would run them. [`Select`] is the agent's runtime: the store decides per container
//! between [`Oci`] and the host-process runtime ([`Processes`]).
//!
//! A container gets `POD_DIR/oci/<name>/`: `config.json` (an OCI runtime spec: the pod's
//! network, UTS and IPC namespaces, its own PID and mount ones, hostname = the pod's, the
//! pod's resolv.conf and hosts and the volume binds), `rootfs/`, and overlayfs's `upper/`
//! and `work/` over the image's unpacked root (a copy where overlayfs is not available).
//! The overlay is mounted inside a private mount namespace that `unshare` makes for the
//! runc process, so nothing is left mounted on the node when the container is gone.
//! `runc run` stays in the foreground: it is the child of the container's shim (which holds
//! its stdio, a terminal for `tty`), and its exit status is the container's. Signals go to the container's init directly (it is in
//! its own session and PID namespace, out of reach of a process-group signal).

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use berth_image::{Image, Store};
use k8s_openapi::api::core::v1::Container;
use nix::sys::signal::Signal;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};

use crate::runtime::{Console, Processes, Runtime, StartError, StartSpec, Started};

/// The capabilities containerd gives a container by default (its `oci.defaultUnixCaps`).
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Mounts the container's root (overlayfs, else a copy) in the private mount namespace
/// `unshare` made, clears a stale container of the same id, then becomes `runc run`.
/// Positional: lower upper work rootfs runc runc-root id bundle.
const LAUNCH: &str = r#"mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" 2>/dev/null || cp -a "$1/." "$4/" || exit 125
[ -e "$6/$7" ] && "$5" --root "$6" delete --force "$7" >/dev/null 2>&1
exec "$5" --root "$6" run --pid-file "$8/init.pid" --bundle "$8" "$7""#;

/// An agent started through `ip netns exec` has a mount namespace of its own with a fresh
/// sysfs, without the cgroup mounts runc needs: they are mounted again (the same hierarchies
/// the first mount namespace has), once, in that namespace only.
const CGROUPS: &str = r#"grep -q ' - cgroup' /proc/self/mountinfo && exit 0
[ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ] && exit 0
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
awk '/ - cgroup2? / { split($0, a, " - "); split(a[2], b, " "); print $5, b[1], b[3] }' /proc/1/mountinfo |
while read -r mp fs opts; do
  case "$mp" in /sys/fs/cgroup/*) mkdir -p "$mp" && mount -t "$fs" -o "$opts" "$fs" "$mp" ;; esac
done"#;

/// Runs containers from imported images with runc.
#[derive(Debug)]
pub struct Oci {
    store: Store,
    runc: PathBuf,
    /// runc's `--root`: its state of the containers this agent runs.
    root: PathBuf,
    /// runc run's PID -> container id, for signals.
    runs: Mutex<HashMap<u32, String>>,
    /// runc run's PID -> the watch on its container's memory cgroup.
    ooms: Mutex<HashMap<u32, crate::oom::Watch>>,
}

impl Oci {
    /// The runtime over the store of `data_dir`, with runc state in `state_dir/runc`; `None`
    /// (image pods unavailable) when runc is not installed. Containers a previous agent left
    /// are removed.
    pub fn new(data_dir: &Path, state_dir: &Path) -> Option<Oci> {
        let Some(runc) = find_runc() else {
            tracing::warn!(
                "runc is not installed: images in the store are not run (scripts/deps.sh installs it)"
            );
            return None;
        };
        let store = match Store::open(data_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "the image store cannot be opened; no image pods");
                return None;
            }
        };
        let root = state_dir.join("runc");
        let oci = Oci {
            store,
            runc,
            root,
            runs: Mutex::default(),
            ooms: Mutex::default(),
        };
        oci.sweep(&held_ids(state_dir));
        let cgroups = std::process::Command::new("sh")
            .args(["-c", CGROUPS])
            .stdin(Stdio::null())
            .status();
        if !cgroups.is_ok_and(|s| s.success()) {
            tracing::warn!("could not mount the cgroup hierarchies runc needs");
        }
        Some(oci)
    }

    /// Deletes every container in our runc root that no shim holds: what an agent that died
    /// left (a held container is adopted by its pod's worker).
    fn sweep(&self, keep: &std::collections::HashSet<String>) {
        sweep(&self.runc, &self.root, keep);
    }

    /// The node's image store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The image `c` runs, if the store has it.
    pub fn image(&self, c: &Container) -> Option<Image> {
        let name = c.image.as_deref()?;
        match self.store.resolve(name) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(image = name, error = %chain(&e), "not an image of the store");
                None
            }
        }
    }

    fn start_image(
        &self,
        spec: &StartSpec<'_>,
        image: &Image,
        self_exe: &Path,
    ) -> Result<(Started, Option<Arc<Console>>), StartError> {
        let c = spec.container;
        let run_error = |message: String| StartError {
            reason: "RunContainerError",
            message,
        };
        let lower = blocking(|| self.store.rootfs(image))
            .map_err(|e| run_error(format!("unpacking {}: {}", image.reference, chain(&e))))?;
        let pod_dir = spec.log.parent().unwrap_or(Path::new("/"));
        let bundle = pod_dir.join("oci").join(&c.name);
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle)
                .map_err(|e| run_error(format!("clearing {}: {e}", bundle.display())))?;
        }
        for d in ["rootfs", "upper", "work"] {
            let p = bundle.join(d);
            std::fs::create_dir_all(&p)
                .and_then(|()| std::fs::set_permissions(&p, PermissionsExt::from_mode(0o755)))
                .map_err(|e| run_error(format!("making {}: {e}", p.display())))?;
        }
        let hostname = bundle.join("hostname");
        std::fs::write(&hostname, format!("{}\n", spec.hostname))
            .and_then(|()| std::fs::set_permissions(&hostname, PermissionsExt::from_mode(0o644)))
            .map_err(|e| run_error(format!("writing {}: {e}", hostname.display())))?;
        let id = container_id(pod_dir, &c.name);
        let mut config = runtime_spec(spec, image, &lower, &bundle)?;
        if let Some(linux) = config.linux_mut() {
            linux.set_cgroups_path(Some(cgroup_path(&id)));
            linux.set_resources(Some(resources(c)));
        }
        let body = serde_json::to_vec_pretty(&config)
            .map_err(|e| run_error(format!("encoding config.json: {e}")))?;
        std::fs::write(bundle.join("config.json"), body)
            .map_err(|e| run_error(format!("writing config.json: {e}")))?;
        // Made private here; the shim appends to it.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(spec.log)
            .map_err(|e| run_error(format!("opening {}: {e}", spec.log.display())))?;
        let tty = c.tty == Some(true);
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"]);
        if tty {
            // runc's stdin (the terminal its shim holds) becomes its controlling terminal, so
            // a resize (SIGWINCH) reaches it and it resizes the container's; setsid keeps the
            // PID, it is no group leader.
            cmd.args(["setsid", "-c"]);
        }
        cmd.args(["sh", "-c", LAUNCH, "sh"])
            .arg(&lower)
            .arg(bundle.join("upper"))
            .arg(bundle.join("work"))
            .arg(bundle.join("rootfs"))
            .arg(&self.runc)
            .arg(&self.root)
            .arg(&id)
            .arg(&bundle)
            .env_clear()
            .env("PATH", DEFAULT_PATH);
        // Watched from before the container runs, so no OOM comes before the watch.
        let oom = crate::oom::watch(&cgroup_path(&id));
        // With a terminal, runc's own session (setsid above): it stays in the shim's group.
        let (started, console) = crate::runtime::start_held(self_exe, &cmd, c, spec.log, tty)?;
        self.track(started.pid, id, oom);
        wait_started(started.pid, &bundle.join("init.pid"));
        Ok((started, console))
    }

    /// Remembers runc run `pid`'s container id (for signals) and its OOM watch.
    fn track(&self, pid: u32, id: String, oom: Option<crate::oom::Watch>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.insert(pid, id);
        if let Some(watch) = oom {
            let mut ooms = self.ooms.lock().unwrap_or_else(|p| p.into_inner());
            ooms.insert(pid, watch);
        }
    }

    /// Signals the container runc `pid` runs: its init, the child runc made in the
    /// container's PID namespace (what `runc kill` would do, without a runc process, so a
    /// SIGKILL on the agent's way out lands before it exits); the process group while runc
    /// has not made the container yet. False when `pid` is no runc of ours.
    fn signal(&self, pid: u32, sig: Signal) -> bool {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !runs.contains_key(&pid) {
            return false;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            runs.remove(&pid);
            return true;
        }
        match container_init(pid).and_then(|p| i32::try_from(p).ok()) {
            Some(init) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), sig);
            }
            None => crate::runtime::signal(pid, sig),
        }
        true
    }
}

/// `runc delete --force` for every container in `root` but those in `keep`; how many there
/// were.
fn sweep(runc: &Path, root: &Path, keep: &std::collections::HashSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if keep.contains(&id) {
            continue;
        }
        let deleted = std::process::Command::new(runc)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        n += usize::from(deleted);
    }
    n
}

/// Removes the containers an agent with state in `state_dir` left (`berth cleanup`): those
/// its shims still hold, then every image container; how many image containers there were.
pub fn remove_containers(state_dir: &Path) -> usize {
    for pod in pod_dirs(state_dir) {
        crate::shim::kill_all(&pod);
    }
    match find_runc() {
        Some(runc) => sweep(
            &runc,
            &state_dir.join("runc"),
            &std::collections::HashSet::new(),
        ),
        None => 0,
    }
}

fn pod_dirs(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return Vec::new();
    };
    entries.flatten().map(|e| e.path()).collect()
}

/// The runc ids of the containers that shims still hold.
fn held_ids(state_dir: &Path) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    for pod in pod_dirs(state_dir) {
        let Ok(entries) = std::fs::read_dir(&pod) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "shim")
                && let Some(crate::shim::Found::Running(_)) =
                    crate::shim::find(&path.with_extension("log"))
                && let Some(name) = path.file_stem()
            {
                ids.insert(container_id(&pod, &name.to_string_lossy()));
            }
        }
    }
    ids
}

fn find_runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Waits (up to 10 s) until runc has started the container's process (it writes the
/// `--pid-file` just before), or runc has exited: the container is Running only then, as
/// the kubelet reports it once the runtime's StartContainer returns. Off the async workers'
/// cooperative scheduling when it can ([`blocking`]).
fn wait_started(pid: u32, pid_file: &Path) {
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    let wait = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pid_file.exists() && std::time::Instant::now() < deadline && !exited() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    blocking(wait);
}

/// Runs `f`, which blocks (unpacking, waiting for runc), telling a multi-threaded tokio
/// runtime first so its other tasks move to other workers.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// An error with its causes, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// runc's container id: the pod's uid (its directory) and the container's name.
fn container_id(pod_dir: &Path, name: &str) -> String {
    let uid = pod_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{uid}-{name}")
}

/// The argv Kubernetes runs: `command` replaces the image's ENTRYPOINT (and drops its
/// CMD), `args` replace CMD.
pub fn argv(c: &Container, entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    if !command.is_empty() {
        return command.into_iter().chain(args).collect();
    }
    let tail = if args.is_empty() { cmd.to_vec() } else { args };
    entrypoint.iter().cloned().chain(tail).collect()
}

/// The environment: the image's, overlaid by the container's (`spec.env`), then HOSTNAME
/// and, when neither sets it, HOME.
pub fn environment(
    image_env: &[String],
    spec_env: &[(String, String)],
    hostname: &str,
    home: &str,
) -> Vec<String> {
    fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_owned(),
            None => env.push((k.to_owned(), v.to_owned())),
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    set(&mut env, "PATH", DEFAULT_PATH);
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k, v);
    }
    set(&mut env, "HOSTNAME", hostname);
    for (k, v) in spec_env {
        set(&mut env, k, v);
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        set(&mut env, "HOME", home);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The image's `User` (`uid[:gid]` or names from the image's /etc/passwd and /etc/group),
/// overridden by the container's securityContext; with the user's home directory.
fn user(c: &Container, image_user: &str, rootfs: &Path) -> Result<(u32, u32, String), String> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let lookup = |file: &str, name: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.first().is_some_and(|n| n == name) || f.get(2).is_some_and(|u| u == name))
    };
    let (u, g) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let (mut uid, mut gid, mut home) = (0u32, 0u32, "/root".to_owned());
    if !u.is_empty() {
        match (u.parse::<u32>(), lookup(&passwd, u)) {
            (_, Some(f)) => {
                uid = f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                gid = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
                home = f.get(5).cloned().unwrap_or(home);
            }
            (Ok(n), None) => {
                uid = n;
                home = "/".into();
            }
            (Err(_), None) => {
                return Err(format!(
                    "unable to find user {u}: no matching entries in passwd file"
                ));
            }
        }
    }
    if let Some(g) = g {
        gid = match (g.parse::<u32>(), lookup(&group, g)) {
            (Ok(n), _) => n,
            (_, Some(f)) => f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
            _ => {
                return Err(format!(
                    "unable to find group {g}: no matching entries in group file"
                ));
            }
        };
    }
    let sc = c.security_context.as_ref();
    if let Some(ru) = sc
        .and_then(|s| s.run_as_user)
        .and_then(|v| u32::try_from(v).ok())
    {
        uid = ru;
    }
    if let Some(rg) = sc
        .and_then(|s| s.run_as_group)
        .and_then(|v| u32::try_from(v).ok())
    {
        gid = rg;
    }
    Ok((uid, gid, home))
}

fn bind(source: impl AsRef<Path>, target: &str, read_only: bool) -> Result<Mount, StartError> {
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    if read_only {
        options.push("ro".into());
    }
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source.as_ref())
        .options(options)
        .build()
        .map_err(|e| StartError {
            reason: "CreateContainerError",
            message: format!("mount {target}: {e}"),
        })
}

/// The OCI runtime spec (config.json) of one container.
fn runtime_spec(
    spec: &StartSpec<'_>,
    image: &Image,
    lower: &Path,
    bundle: &Path,
) -> Result<Spec, StartError> {
    let c = spec.container;
    let create_error = |message: String| StartError {
        reason: "CreateContainerError",
        message,
    };
    let ic = image.config.config().clone().unwrap_or_default();
    let args = argv(
        c,
        &ic.entrypoint().clone().unwrap_or_default(),
        &ic.cmd().clone().unwrap_or_default(),
    );
    if args.is_empty() {
        return Err(create_error(
            "failed to generate container spec: no command specified".into(),
        ));
    }
    let (uid, gid, home) =
        user(c, ic.user().as_deref().unwrap_or(""), lower).map_err(create_error)?;
    let mut env = environment(
        &ic.env().clone().unwrap_or_default(),
        &spec.env,
        spec.hostname,
        &home,
    );
    if c.tty == Some(true) && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| ic.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps: std::collections::HashSet<Capability> = DEFAULT_CAPS.iter().copied().collect();
    let mut process = ProcessBuilder::default()
        .terminal(c.tty == Some(true))
        .args(args)
        .env(env)
        .cwd(cwd)
        .no_new_privileges(false)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(|e| create_error(e.to_string()))?,
        )
        .build()
        .map_err(|e| create_error(e.to_string()))?;
    if let Some(mut capabilities) = process.capabilities().clone() {
        capabilities.set_bounding(Some(caps.clone()));
        capabilities.set_effective(Some(caps.clone()));
        capabilities.set_permitted(Some(caps));
        capabilities.set_inheritable(None);
        capabilities.set_ambient(None);
        process.set_capabilities(Some(capabilities));
    }
    // The pod's shared UTS, IPC (and PID) namespaces, if its sandbox pinned them.
    let shared = |netns: &str, kind: &str| {
        Some(crate::sandbox::shared_ns_path(netns, kind)).filter(|p| p.exists())
    };
    let ns = |typ, path: Option<PathBuf>| -> Result<LinuxNamespace, StartError> {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().map_err(|e| create_error(e.to_string()))
    };
    let namespaces = vec![
        // The pod's, held by its pause, with `shareProcessNamespace`; its own otherwise.
        ns(LinuxNamespaceType::Pid, shared(spec.netns, "pid"))?,
        ns(
            LinuxNamespaceType::Network,
            Some(PathBuf::from("/run/netns").join(spec.netns)),
        )?,
        ns(LinuxNamespaceType::Ipc, shared(spec.netns, "ipc"))?,
        ns(LinuxNamespaceType::Uts, shared(spec.netns, "uts"))?,
        ns(LinuxNamespaceType::Mount, None)?,
    ];
    let defaults = Spec::default();
    let mut linux = defaults.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    let linux = LinuxBuilder::default()
        .namespaces(linux.namespaces().clone().unwrap_or_default())
        .masked_paths(linux.masked_paths().clone().unwrap_or_default())
        .readonly_paths(linux.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(|e| create_error(e.to_string()))?;
    let etc = PathBuf::from("/etc/netns").join(spec.netns);
    let mut mounts = defaults.mounts().clone().unwrap_or_default();
    mounts.push(bind(etc.join("resolv.conf"), "/etc/resolv.conf", false)?);
    mounts.push(bind(etc.join("hosts"), "/etc/hosts", false)?);
    mounts.push(bind(bundle.join("hostname"), "/etc/hostname", false)?);
    for b in &spec.binds {
        mounts.push(bind(&b.source, &b.target, b.read_only)?);
    }
    let mut config = Spec::default();
    config.set_hostname(Some(spec.hostname.to_owned()));
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path(bundle.join("rootfs"))
            .readonly(false)
            .build()
            .map_err(|e| create_error(e.to_string()))?,
    ));
    config.set_mounts(Some(mounts));
    config.set_linux(Some(linux));
    Ok(config)
}

/// The agent's runtime: image pods under runc when the store has the container's image,
/// host processes otherwise.
#[derive(Debug)]
pub struct Select {
    pub oci: Option<Arc<Oci>>,
    pub processes: Processes,
}

impl Runtime for Select {
    fn start(&self, spec: &StartSpec<'_>) -> Result<(Started, Option<Arc<Console>>), StartError> {
        let c = spec.container;
        if let Some(oci) = &self.oci
            && let Some(image) = oci.image(c)
        {
            return oci.start_image(spec, &image, &self.processes.self_exe);
        }
        let name = c.image.clone().unwrap_or_default();
        if c.image_pull_policy.as_deref() == Some("Never") && !self.processes.knows(&name) {
            return Err(StartError {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{name}\" is not present with pull policy of Never"
                ),
            });
        }
        self.processes.start(spec)
    }

    fn adopt(&self, pid: u32, log: &Path, container: &Container) {
        let Some(oci) = &self.oci else { return };
        if container_init(pid).is_none() {
            return;
        }
        let pod_dir = log.parent().unwrap_or(Path::new("/"));
        let id = container_id(pod_dir, &container.name);
        let oom = crate::oom::watch(&cgroup_path(&id));
        oci.track(pid, id, oom);
    }

    fn image_id(&self, image: &str) -> String {
        let Some(oci) = &self.oci else {
            return String::new();
        };
        match (
            oci.store.resolve(image),
            berth_image::Reference::parse(image),
        ) {
            (Ok(Some(i)), Ok(r)) => format!("{}@{}", r.repository(), i.digest),
            _ => String::new(),
        }
    }

    fn signal(&self, pid: u32, sig: Signal) {
        if !self.oci.as_ref().is_some_and(|o| o.signal(pid, sig)) {
            crate::runtime::signal(pid, sig);
        }
    }

    fn oom_killed(&self, pid: u32, sigkilled: bool) -> bool {
        let Some(oci) = &self.oci else { return false };
        let watch = oci
            .ooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        // The watcher has its verdict once runc removed the cgroup, which it does before it
        // exits: a short wait covers the thread's scheduling.
        watch.is_some_and(|w| w.killed(std::time::Duration::from_millis(200), sigkilled))
    }
}

/// The container's cgroup (`cgroupsPath`), under `berth/` in every hierarchy.
fn cgroup_path(id: &str) -> PathBuf {
    Path::new("/berth").join(id)
}

/// The cgroup limits of a container's `resources`, as the kubelet sets them: CPU shares
/// from the request (2 without one), a CFS quota per 100 ms period from the limit, the
/// memory limit in bytes. Unparsable quantities (the API server validates them) are ignored.
pub fn resources(c: &Container) -> LinuxResources {
    use berth_api::quantity::Quantity;
    const PERIOD: u64 = 100_000;
    let r = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .and_then(|q| Quantity::parse(&q.0).ok())
    };
    let cpu_request = get(&r.requests, "cpu").or_else(|| get(&r.limits, "cpu"));
    let shares = cpu_request.map_or(2, |q| {
        u64::try_from(q.ceil_millis().saturating_mul(1024) / 1000)
            .unwrap_or(0)
            .clamp(2, 262_144)
    });
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(shares));
    if let Some(limit) = get(&r.limits, "cpu") {
        let quota = limit.ceil_millis().saturating_mul(i128::from(PERIOD)) / 1000;
        cpu.set_quota(Some(i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)));
        cpu.set_period(Some(PERIOD));
    }
    let mut out = LinuxResources::default();
    out.set_cpu(Some(cpu));
    if let Some(limit) = get(&r.limits, "memory") {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(i64::try_from(limit.ceil_units()).unwrap_or(i64::MAX)));
        out.set_memory(Some(memory));
    }
    out
}

/// The container's init process when `pid` is a `runc run` (an image pod's main process,
/// as the pod worker knows it): its child, in the container's namespaces.
pub fn container_init(pid: u32) -> Option<u32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() != "runc" {
        return None;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let children = std::fs::read_to_string(t.path().join("children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    })
}

/// A command running `argv` in an image container whose init is `init`: all its
/// namespaces (so its root, its processes only), its environment, user and working
/// directory, as runc's exec would.
pub fn in_container(init: u32, argv: &[String]) -> std::process::Command {
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap_or_default();
    let id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg("-t")
        .arg(init.to_string())
        .args(["--net", "--uts", "--ipc", "--pid", "--mount", "--wd"])
        .arg(format!("--setuid={}", id("Uid:")))
        .arg(format!("--setgid={}", id("Gid:")))
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(crate::runtime::process_env(init));
    cmd
}

#[cfg(test)]
mod tests;
