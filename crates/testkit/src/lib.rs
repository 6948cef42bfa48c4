//! One harness for every end-to-end test: a throwaway `berth server` (with its embedded store
//! or a real etcd) on free loopback ports, driven by the real `kubectl`, stopped by PID and
//! cleaned up on drop even when the test panics; [`Node`] is a throwaway network namespace (with
//! an "outside" namespace beside it) that tests run node components in, [`Process`] any
//! other process a test starts (such as `berth agent`), stopped by PID on drop, and
//! [`Registry`] an OCI registry inside a node's namespace.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `eventually` waits; `BERTH_TEST_PATIENCE_MS` overrides it on slow machines.
pub fn patience() -> Duration {
    let ms = std::env::var("BERTH_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    Duration::from_millis(ms)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after [`patience`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it right away).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A throwaway etcd (Debian's `etcd-server`) on free loopback ports, killed by PID on drop.
pub struct Etcd {
    child: Child,
    /// `127.0.0.1:PORT`
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=berth-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls=http://{client}"))
            .arg(format!("--advertise-client-urls=http://{client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=berth-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect(
                "etcd must be installed (Debian package etcd-server; scripts/deps.sh installs it)",
            );
        let etcd = Etcd {
            child,
            endpoint: client,
            dir,
        };
        eventually("etcd to become healthy", || etcd.healthy().then_some(()));
        etcd
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.endpoint) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(
            format!("GET /health HTTP/1.0\r\nHost: {}\r\n\r\n", self.endpoint).as_bytes(),
        )
        .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"") || body.contains("\"health\": \"true\"")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Freezes etcd (SIGSTOP): it keeps its connections but answers nothing, as a hung or
    /// partitioned etcd would; [`Etcd::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which store a test cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// A running `berth server` and the kubeconfig to reach it.
pub struct Cluster {
    bin: PathBuf,
    child: Option<Child>,
    pub url: String,
    pub kubeconfig: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    etcd: Option<Etcd>,
    starts: u32,
    flags: Vec<String>,
    /// Set when the server (and its node agent) runs inside a node netns; kubectl then runs
    /// in the node's "outside" netns.
    node: Option<Node>,
    /// Set for the default single-node mode: the server runs in this "host" netns and makes
    /// its node namespace itself; kubectl runs in the host.
    host: Option<Host>,
}

impl Cluster {
    /// Starts `berth server` (the binary at `bin`) on a free loopback port and waits for its
    /// ready line.
    pub fn start(bin: &Path, backend: Backend) -> Cluster {
        Cluster::start_with(bin, backend, &[])
    }

    /// Like [`Cluster::start`] with extra `berth server` flags (kept across restarts). The
    /// server runs without a node (`--no-node`).
    pub fn start_with(bin: &Path, backend: Backend, flags: &[&str]) -> Cluster {
        let etcd = (backend == Backend::Etcd).then(Etcd::start);
        Cluster::launch(
            bin,
            flags,
            &["--no-node".into()],
            free_port(),
            etcd,
            None,
            None,
        )
    }

    /// Builds the cluster's value (a fresh directory, `flags` then `extra`) and starts it.
    fn launch(
        bin: &Path,
        flags: &[&str],
        extra: &[String],
        port: u16,
        etcd: Option<Etcd>,
        node: Option<Node>,
        host: Option<Host>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        flags.extend_from_slice(extra);
        let mut c = Cluster {
            bin: bin.to_owned(),
            child: None,
            url: String::new(),
            kubeconfig: dir.path().join("data/kubeconfig"),
            port,
            dir,
            etcd,
            starts: 0,
            flags,
            node,
            host,
        };
        c.spawn();
        c
    }

    /// Starts `berth server` as a user would, with no node flags, inside a fresh [`Host`]
    /// netns that plays the machine: berth makes its node namespace (named by the host),
    /// the veth and the host routes itself. kubectl runs in the host.
    pub fn start_single_node(bin: &Path, flags: &[&str]) -> Cluster {
        let host = Host::new();
        let extra = [format!("--node-netns={}", host.node_netns())];
        Cluster::launch(bin, flags, &extra, 6443, None, None, Some(host))
    }

    /// The host netns, for clusters started with [`Cluster::start_single_node`].
    pub fn host(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// The server's data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Imports `image` (written as a docker-save tar named `reference`) into this cluster's
    /// image store with `berth image import`, as a user would; panics with its stderr on failure.
    pub fn import_image(&self, image: &berth_image::archive::ImageSpec, reference: &str) {
        let tar = self.dir().join("import.tar");
        std::fs::write(&tar, image.docker_save(&[reference]).expect("docker save"))
            .expect("writing the image archive");
        let out = Command::new(&self.bin)
            .args(["image", "import"])
            .arg(&tar)
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .output()
            .expect("berth image import");
        assert!(
            out.status.success(),
            "berth image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends SIGKILL to the server, as a crash would, leaving whatever it made in place.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `berth server` with its node agent (`--node`) inside a fresh node netns
    /// ([`Node`]), listening on the node's address; kubectl runs from the outside netns.
    pub fn start_on_node(bin: &Path, flags: &[&str]) -> Cluster {
        Cluster::on_node(bin, flags, true)
    }

    /// Waits until kubectl lists node [`NODE_NAME`] as Ready.
    pub fn wait_node_ready(&self) {
        eventually(&format!("{NODE_NAME} to be Ready"), || {
            let out = self.ok(&["get", "nodes"]);
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([NODE_NAME, "Ready"]))
                .then_some(())
        });
    }

    /// Like [`Cluster::start_on_node`] but without `--node`: only the API server and the
    /// controllers run in the node netns; start the agent with [`Cluster::start_agent`].
    pub fn start_on_node_without_agent(bin: &Path, flags: &[&str]) -> Cluster {
        Cluster::on_node(bin, flags, false)
    }

    fn on_node(bin: &Path, flags: &[&str], agent: bool) -> Cluster {
        let extra = match agent {
            true => vec![format!("--node={NODE_NAME}"), "--node-netns=current".into()],
            false => vec!["--no-node".into()],
        };
        Cluster::launch(bin, flags, &extra, 6443, None, Some(Node::new()), None)
    }

    /// Starts `berth agent --kubeconfig=KUBECONFIG --node=node-1 --data-dir=DATA` (the
    /// server's data directory, so [`Cluster::pod_netns`] sees its pods) plus `flags` as a
    /// separate process inside this cluster's node netns, and waits for its start line. Drop
    /// the returned [`Process`] before the cluster (declare it after): it gets SIGTERM, which
    /// stops its pods, then SIGKILL.
    pub fn start_agent(&self, flags: &[&str]) -> Process {
        let node = self
            .node
            .as_ref()
            .expect("start_agent needs a cluster started on a node");
        let mut cmd = node.command(&self.bin);
        cmd.arg("agent")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--node={NODE_NAME}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .args(flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let mut agent = Process::start("berth agent", cmd, &self.dir.path().join("agent"));
        eventually("berth agent to print its start line", || {
            agent.assert_running();
            agent.output().contains("agent for node").then_some(())
        });
        agent
    }

    /// The node netns, for clusters started with [`Cluster::start_on_node`].
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join(format!("server.{}.out", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let out = std::fs::File::create(self.stdout_path()).expect("server log");
        let err =
            std::fs::File::create(self.dir.path().join(format!("server.{}.log", self.starts)))
                .expect("server log");
        let (mut cmd, ip) = match (&self.node, &self.host) {
            (Some(n), _) => (n.command(&self.bin), NODE_IP),
            (None, Some(h)) => (h.command(&self.bin), "127.0.0.1"),
            (None, None) => (Command::new(&self.bin), "127.0.0.1"),
        };
        cmd.arg("server")
            .arg(format!("--bind={ip}:{}", self.port))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .args(&self.flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(e) = &self.etcd {
            cmd.arg(format!("--store=etcd://{}", e.endpoint));
        }
        self.child = Some(cmd.spawn().expect("starting berth server"));
        let path = self.stdout_path();
        let url = eventually("berth server to print its ready line", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("berth server exited with {status}:\n{}", self.log());
            }
            let text = std::fs::read_to_string(&path).ok()?;
            text.lines().find_map(|l| {
                l.split_once("ready at ")
                    .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
            })
        });
        self.url = url;
    }

    /// A `kube` client for this cluster, built from its kubeconfig as any kube-rs program
    /// would build it.
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config from the kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The etcd endpoint (`127.0.0.1:PORT`) when the cluster uses etcd.
    /// The cluster's etcd, when it has one.
    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    pub fn etcd_endpoint(&self) -> Option<&str> {
        self.etcd.as_ref().map(|e| e.endpoint.as_str())
    }

    /// Stops the server (SIGKILL by PID) without removing its data. A server with a node
    /// agent first gets SIGTERM and a few seconds to stop its pods, and whatever pod netns it
    /// left is deleted by name.
    pub fn stop(&mut self) {
        self.terminate();
        kill_holders(&self.data_dir().join("agent"));
        if self.node.is_some() {
            for ns in self.pod_netns() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        if let Some(h) = &self.host {
            // Whatever a server that did not stop cleanly left: berth's own cleanup.
            let _ = self.cleanup_command(h).output();
        }
    }

    /// Stops the server as [`Cluster::stop`] does but leaves what it leaves on purpose (pods
    /// kept with `--keep-pods-on-exit`, the node they are on) for [`Cluster::start_again`].
    pub fn stop_leaving_pods(&mut self) {
        self.terminate();
    }

    /// SIGTERM to the server (in a node or host: it has a node to take down), SIGKILL after
    /// 10 s.
    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.node.is_some() || self.host.is_some() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `berth cleanup` for this cluster's data directory and node namespace, in the host.
    pub fn cleanup_command(&self, host: &Host) -> Command {
        let mut cmd = host.command(&self.bin);
        cmd.arg("cleanup")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--node-netns={}", host.node_netns()));
        cmd
    }

    /// The pod network namespaces the agent's IPAM says it made (`berth-pod-<12 hex of uid>`).
    pub fn pod_netns(&self) -> Vec<String> {
        let state = std::fs::read_to_string(self.dir.path().join("data/agent/ipam.json"))
            .unwrap_or_default();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&state) else {
            return Vec::new();
        };
        v.get("pods")
            .and_then(|p| p.as_object())
            .map(|pods| {
                pods.keys()
                    .map(|uid| {
                        uid.chars()
                            .filter(char::is_ascii_hexdigit)
                            .map(|c| c.to_ascii_lowercase())
                            .take(12)
                            .collect::<String>()
                    })
                    .map(|hex| format!("berth-pod-{hex}"))
                    .filter(|ns| netns_list().contains(ns))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts the server again on the same port and data after [`Cluster::kill`] (or
    /// [`Cluster::stop_leaving_pods`]), leaving what the earlier one left (pods held by their shims) for it to take on.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again after kill");
        self.spawn();
    }

    /// [`Cluster::start_again`] with `flags` added to the server's (kept for later starts).
    pub fn start_again_with(&mut self, flags: &[&str]) {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self.start_again();
    }

    /// Stops and starts the server on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Where tests can put files (manifests).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to a file in the test directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("writing test file");
        p
    }

    /// Runs kubectl against this cluster with a private discovery cache.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = match (&self.node, &self.host) {
            (Some(n), _) => n.outside_command("kubectl"),
            (None, Some(h)) => h.command("kubectl"),
            (None, None) => Command::new("kubectl"),
        };
        let mut child = cmd
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl must be installed");
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}\n{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs kubectl, asserts failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Applies a manifest given as text (`kubectl apply -f -`) and returns stdout.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log (all starts), for failure reports.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            for ext in ["out", "log"] {
                s.push_str(
                    &std::fs::read_to_string(self.dir.path().join(format!("server.{i}.{ext}")))
                        .unwrap_or_default(),
                );
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- berth server log ---\n{}", self.log());
            if let Some(e) = &self.etcd {
                eprintln!(
                    "--- etcd log (tail) ---\n{}",
                    e.log()
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
}

/// Kills the containers that the agent with state in `state_dir` left running under their
/// shims (`pods/<uid>/<container>.shim`, which name the shim and the container's first
/// process), and the shims: a shim left its parent's session, so killing the agent leaves
/// it. Only processes that are still those shims and their children are signalled; an image
/// container's init (the child of `runc run`, in a session of its own) is killed first.
/// A pod's PID-namespace holder (`shareProcessNamespace`, recorded in
/// `/run/berth/ns/berth-pod-<12 hex of uid>/pause.json`) goes too, checked by its start time.
pub fn kill_holders(state_dir: &Path) {
    let Ok(pods) = std::fs::read_dir(state_dir.join("pods")) else {
        return;
    };
    let stat = |pid: u64| -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // (parent PID, start time): fields 4 and 22, counted from field 3 after the name.
        Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
    };
    let kill = |pid: u64, group: bool| {
        if let Ok(p) = i32::try_from(pid)
            && p > 1
        {
            let p = nix::unistd::Pid::from_raw(p);
            let _ = match group {
                true => nix::sys::signal::killpg(p, nix::sys::signal::Signal::SIGKILL),
                false => nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL),
            };
        }
    };
    for pod in pods.flatten() {
        let hex: String = pod
            .file_name()
            .to_string_lossy()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .take(12)
            .collect();
        let pause = Path::new("/run/berth/ns")
            .join(format!("berth-pod-{hex}"))
            .join("pause.json");
        if let Some(p) = std::fs::read(&pause)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        {
            let field = |k: &str| p.get(k).and_then(serde_json::Value::as_u64);
            if let (Some(pid), Some(start)) = (field("pid"), field("start"))
                && stat(pid).map(|s| s.1) == Some(start)
            {
                kill(pid, false);
            }
        }
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().extension().is_none_or(|x| x != "shim") {
                continue;
            }
            let Some(held) = std::fs::read(f.path())
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            else {
                continue;
            };
            let field = |k: &str| held.get(k).and_then(serde_json::Value::as_u64);
            let (Some(shim), Some(start), Some(pid)) =
                (field("shim"), field("shim_start"), field("pid"))
            else {
                continue;
            };
            if stat(shim).map(|s| s.1) != Some(start) {
                continue;
            }
            if stat(pid).map(|s| s.0) == Some(shim) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "runc" {
                    let children =
                        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                            .unwrap_or_default();
                    for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                        kill(c, false);
                    }
                }
                kill(pid, true);
            }
            kill(shim, false);
        }
    }
}

/// The node name clusters started on a [`Node`] give their agent.
pub const NODE_NAME: &str = "node-1";

/// A process a test started (for example `berth agent` in a node), with its output in files.
/// Dropping it sends SIGTERM by PID, waits up to 10 s, then SIGKILLs; when the test panics,
/// its output is printed.
pub struct Process {
    what: String,
    child: Option<Child>,
    out: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdin null and stdout+stderr going to `<log>.out` and `<log>.log`.
    pub fn start(what: &str, mut cmd: Command, log: &Path) -> Process {
        let out = log.with_extension("out");
        let stdout = std::fs::File::create(&out).expect("process output file");
        let stderr = std::fs::File::create(log.with_extension("log")).expect("process output file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Process {
            what: what.to_owned(),
            child: Some(child),
            out,
        }
    }

    /// The process id, until it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it printed so far: stdout, then stderr.
    pub fn output(&self) -> String {
        let mut s = std::fs::read_to_string(&self.out).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.out.with_extension("log")).unwrap_or_default());
        s
    }

    /// Panics with its output if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            panic!("{} exited with {status}:\n{}", self.what, self.output());
        }
    }

    /// Sends SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit; then SIGKILL. Returns the exit
    /// status if it exited by itself within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => break,
            }
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.what, self.output());
        }
    }
}

/// Address of a [`Node`]'s end of its veth to the outside namespace.
pub const NODE_IP: &str = "192.168.231.1";
/// Address of the outside namespace's end of the veth to its [`Node`].
pub const OUTSIDE_IP: &str = "192.168.231.2";
/// Name of the veth end in both a [`Node`] and its outside namespace.
pub const NODE_LINK: &str = "eth0";
/// Set in a test process that [`Node::rerun_inside`] started inside a node; holds the node's
/// netns name.
pub const IN_NODE_ENV: &str = "BERTH_TEST_IN_NODE";

/// A throwaway "node": a network namespace with loopback up, joined by a veth pair to an
/// "outside" namespace (`NODE_IP`/30 on the node, `OUTSIDE_IP`/30 outside). Every link and
/// address lives inside these two namespaces, so each `Node` can reuse the same /30; nothing
/// touches the root namespace. `Drop` deletes both namespaces (and so the veth) even on panic.
pub struct Node {
    name: String,
    outside: String,
    /// Which namespaces exist, so a half-built node still cleans up what it made.
    made: Vec<String>,
}

impl Node {
    /// Creates the two namespaces and the veth between them; panics if `ip` fails.
    pub fn new() -> Node {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("berth-test-{}-{n}", std::process::id());
        let mut node = Node {
            outside: format!("{name}-out"),
            name,
            made: Vec::new(),
        };
        for ns in [node.name.clone(), node.outside.clone()] {
            // A namespace of this name can only be left over from a dead process that had our
            // PID (names hold the PID), so it is ours to replace.
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            node.made.push(ns);
        }
        let (node_ns, out_ns) = (node.name.clone(), node.outside.clone());
        // `ip -n` creates the pair inside the node netns and puts the peer straight into the
        // outside netns: no link ever exists in the root namespace.
        ip(&[
            "-n", &node_ns, "link", "add", NODE_LINK, "type", "veth", "peer", "name", NODE_LINK,
            "netns", &out_ns,
        ]);
        for (ns, addr) in [(&node_ns, NODE_IP), (&out_ns, OUTSIDE_IP)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                NODE_LINK,
            ]);
            ip(&["-n", ns, "link", "set", NODE_LINK, "up"]);
        }
        // A node's default route leads to the rest of the network (here: the outside netns),
        // as on any machine; ClusterIPs reached from the node itself are routed by it before
        // the proxy's DNAT.
        ip(&["-n", &node_ns, "route", "add", "default", "via", OUTSIDE_IP]);
        node
    }

    /// The node's netns name (for `ip netns exec`, `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outside netns name.
    pub fn outside_name(&self) -> &str {
        &self.outside
    }

    /// A `Command` that runs `program` inside the node netns (`ip netns exec NODE program`);
    /// add arguments and stdio as for any `Command`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_command(&self.name, program)
    }

    /// Like [`Node::command`], inside the outside netns.
    pub fn outside_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_command(&self.outside, program)
    }

    /// Runs `args[0]` with the rest as arguments inside the node netns and waits for it.
    pub fn exec(&self, args: &[&str]) -> Output {
        run_in(&self.name, args)
    }

    /// Runs `args[0]` with the rest as arguments inside the outside netns and waits for it.
    pub fn outside_exec(&self, args: &[&str]) -> Output {
        run_in(&self.outside, args)
    }

    /// Starts `cmd` (program, arguments, environment and working directory; stdin is null and
    /// stdout/stderr are inherited) inside the node netns. `ip netns exec` execs the program,
    /// so the child's PID is the program's: kill it by PID.
    pub fn spawn(&self, cmd: Command) -> Child {
        let mut inner = self.command(cmd.get_program());
        inner.args(cmd.get_args()).stdin(Stdio::null());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inner.env(k, v),
                None => inner.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        inner.spawn().expect("spawning inside the node netns")
    }

    /// Runs `work` on a new thread that has entered the node netns, and returns its result
    /// (panics propagate). Sockets the thread opens live in the node: a current-thread tokio
    /// runtime built inside `work` can reach the node's addresses (API server, pod IPs). Only
    /// that thread ever changes namespace.
    pub fn on_thread<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering netns {}: {e}", path.display()));
                work()
            });
            match t.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Runs the test named `test` (its full path within the test binary) again in a new process
    /// of this test binary inside the node netns, with [`IN_NODE_ENV`] set to the node's name
    /// and `env` added; panics with its output if it fails. This is how a test enters the node:
    /// a whole process in the netns, so no thread of the harness ever calls setns.
    pub fn rerun_inside(&self, test: &str, env: &[(&str, &str)]) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = self.command(exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(IN_NODE_ENV, &self.name)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("re-running the test inside the node");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{test} inside node {} failed ({}):\n{text}",
            self.name,
            out.status
        );
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the peer.
        for ns in self.made.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// A network namespace that plays the machine `berth server` is started on (loopback up,
/// nothing else), for the default single-node mode. Programs run in it with `nsenter --net`,
/// which changes only the network namespace, so the node namespace berth makes is visible
/// to the test under /run/netns. `Drop` deletes the host and, if it is still there, the
/// node namespace named after it.
pub struct Host {
    name: String,
    node: String,
}

impl Host {
    pub fn new() -> Host {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let host = Host {
            name: format!("bh{pid}-{n}"),
            node: format!("bn{pid}-{n}"),
        };
        for ns in [&host.name, &host.node] {
            // Names hold our PID: a namespace of this name is left over from a dead process.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        ip(&["netns", "add", &host.name]);
        ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        host
    }

    /// The host netns's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node netns berth is told to make (`--node-netns`).
    pub fn node_netns(&self) -> &str {
        &self.node
    }

    /// A `Command` running `program` in the host (`nsenter --net=/run/netns/HOST program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `args[0]` with the rest as arguments in the host and waits for it.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter (util-linux) must be installed")
    }

    /// Like [`Host::exec`]; asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{} in host {} failed ({}):\n{}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for ns in [&self.node, &self.name] {
            if netns_list().contains(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

/// The name of the node netns this test process was started in by [`Node::rerun_inside`].
pub fn inside_node() -> Option<String> {
    std::env::var(IN_NODE_ENV).ok()
}

/// Names of all named network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("iproute2 must be installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn netns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

fn run_in(ns: &str, args: &[&str]) -> Output {
    let (program, rest) = args.split_first().expect("a program to run");
    netns_command(ns, program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec")
}

/// Runs `ip args..`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 must be installed");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_reaches_outside_and_is_gone_after_drop() {
        let node = Node::new();
        let (name, outside) = (node.name().to_owned(), node.outside_name().to_owned());
        assert!(netns_list().contains(&name));
        let ping = node.exec(&["ping", "-c1", "-W2", OUTSIDE_IP]);
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stdout)
        );
        let back = node.outside_exec(&["ping", "-c1", "-W2", NODE_IP]);
        assert!(back.status.success());
        // The node netns is not the root one: its only non-loopback link is the veth.
        let links = node.exec(&["ip", "-o", "link"]);
        assert_eq!(String::from_utf8_lossy(&links.stdout).lines().count(), 2);
        drop(node);
        let left = netns_list();
        assert!(
            !left.contains(&name) && !left.contains(&outside),
            "{left:?}"
        );
    }

    #[test]
    fn spawn_runs_inside_the_node() {
        let node = Node::new();
        let mut cmd = Command::new("ip");
        cmd.args(["-o", "addr", "show", "dev", NODE_LINK]);
        let status = node.spawn(cmd).wait().expect("wait");
        assert!(status.success(), "eth0 exists only inside the node");
    }

    #[test]
    fn on_thread_runs_inside_the_node() {
        let node = Node::new();
        let addr = format!("{NODE_IP}:0");
        assert!(node.on_thread(|| TcpListener::bind(&addr).is_ok()));
        assert!(TcpListener::bind(&addr).is_err(), "not in the root netns");
    }
}

/// Helpers the benchmarks share: knobs from the environment, percentiles, process memory.
pub mod measure {
    use std::time::Duration;

    /// `name` from the environment as a number, or `default`.
    pub fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// The `p` quantile (0.0..=1.0) of `samples`, nearest rank.
    pub fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
        samples.sort();
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    }

    /// CPU time (user + system) a process has used, from /proc (10 ms resolution).
    pub fn cpu_time(pid: u32) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
            .sum();
        std::time::Duration::from_millis(ticks * 10)
    }

    /// Proportional set size of a process in KiB (its resident memory with pages shared with
    /// other processes divided among them), from /proc; what many copies of one binary cost.
    pub fn pss_kib(pid: u32) -> u64 {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory of a process in KiB, from /proc.
    pub fn rss_kib(pid: u32) -> u64 {
        status_kib(pid, "VmRSS")
    }

    /// The part of [`rss_kib`] that is file pages (the binary's code and read-only data).
    pub fn rss_file_kib(pid: u32) -> u64 {
        status_kib(pid, "RssFile")
    }

    /// A KiB field of `/proc/PID/status`; 0 if there is none.
    fn status_kib(pid: u32, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// A throwaway OCI registry (Debian's `docker-registry`, distribution 2.8) inside a
/// [`Node`]'s network namespace on 127.0.0.1, storing into a temp dir, optionally behind
/// htpasswd basic auth; killed by PID on drop. Reach it from processes in that namespace.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, as image references name it.
    pub addr: String,
}

/// A registry's token auth settings (distribution's `auth.token`).
pub struct TokenAuth<'a> {
    /// Where clients get tokens, e.g. `http://127.0.0.1:5006/token`.
    pub realm: &'a str,
    /// The `aud` tokens must carry.
    pub service: &'a str,
    /// The `iss` tokens must carry.
    pub issuer: &'a str,
    /// PEM certificates whose keys may sign tokens.
    pub bundle: &'a Path,
}

impl Registry {
    /// Starts a registry on 127.0.0.1:`port` in `node`; with `user` = (name, password) it
    /// asks for basic auth (apache2-utils' `htpasswd -B`). Waits until `/v2/` answers.
    pub fn start(node: &Node, port: u16, user: Option<(&str, &str)>) -> Registry {
        Self::start_with(node, port, user, None, None)
    }

    /// Starts a registry serving HTTPS with the PEM certificate and key files `tls`.
    pub fn start_tls(node: &Node, port: u16, tls: (&Path, &Path)) -> Registry {
        Self::start_with(node, port, None, Some(tls), None)
    }

    /// Starts a registry that asks for bearer tokens from `token.realm` (distribution's token
    /// auth), signed by a certificate in `token.bundle`.
    pub fn start_token(node: &Node, port: u16, token: &TokenAuth<'_>) -> Registry {
        Self::start_with(node, port, None, None, Some(token))
    }

    fn start_with(
        node: &Node,
        port: u16,
        user: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
        token: Option<&TokenAuth<'_>>,
    ) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(t) = token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.bundle.display()
            ));
        }
        if let Some((name, password)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", name, password])
                .output()
                .expect("htpasswd (apache2-utils, scripts/deps.sh) must be installed");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let log = dir.path().join("registry.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec docker-registry serve \"$1\" >\"$2\" 2>&1", "sh"])
            .arg(&config_path)
            .arg(&log);
        let registry = Registry {
            child: node.spawn(cmd),
            dir,
            addr,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/v2/", registry.addr);
        eventually("the registry to answer", || {
            let out = node.exec(&["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]);
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            (code == "200" || code == "401").then_some(())
        });
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- registry log ---\n{}", self.log());
        }
    }
}

/// Test images made from this machine's files, without a registry: a busybox image from
/// Debian's `busybox-static` (`/bin/busybox` and its applets as symlinks, plus
/// `/etc/berth-image`, a file only the image has), written by `berth_image::archive`.
pub mod images {
    use berth_image::archive::{ImageSpec, LayerBuilder};

    /// The applets the tests use, as symlinks to /bin/busybox.
    const APPLETS: &[&str] = &[
        "sh", "cat", "echo", "ls", "ps", "sleep", "hostname", "env", "id", "printenv", "touch",
        "mkdir", "rm", "true", "false", "wget", "nc", "httpd", "test", "[", "kill", "pwd",
        "nslookup", "dd",
    ];

    /// What `/etc/berth-image` holds.
    pub const MARKER: &str = "made by berth-testkit";

    /// A busybox image whose CMD is `cmd` (ENTRYPOINT unset).
    pub fn busybox(cmd: &[&str]) -> ImageSpec {
        let busybox = std::fs::read("/bin/busybox")
            .or_else(|_| std::fs::read("/usr/bin/busybox"))
            .expect("busybox-static is installed (scripts/deps.sh)");
        let mut layer = LayerBuilder::default()
            .dir("bin")
            .file("bin/busybox", &busybox, 0o755);
        for a in APPLETS {
            layer = layer.symlink(&format!("bin/{a}"), "busybox");
        }
        let layer = layer
            .dir("etc")
            .file("etc/berth-image", format!("{MARKER}\n").as_bytes(), 0o644)
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
            .dir("root")
            .dir("tmp");
        ImageSpec {
            layers: vec![layer.build()],
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }
}
