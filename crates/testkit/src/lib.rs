//! One harness for every end-to-end test: a throwaway `berth server` (with its embedded store
//! or a real etcd) on free loopback ports, driven by the real `kubectl`, stopped by PID and
//! cleaned up on drop even when the test panics. (Network-namespace nodes join in later.)

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
}

impl Cluster {
    /// Starts `berth server` (the binary at `bin`) on a free loopback port and waits for its
    /// ready line.
    pub fn start(bin: &Path, backend: Backend) -> Cluster {
        Cluster::start_with(bin, backend, &[])
    }

    /// Like [`Cluster::start`] with extra `berth server` flags (kept across restarts).
    pub fn start_with(bin: &Path, backend: Backend, flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = (backend == Backend::Etcd).then(Etcd::start);
        let mut c = Cluster {
            bin: bin.to_owned(),
            child: None,
            url: String::new(),
            kubeconfig: dir.path().join("data/kubeconfig"),
            port: free_port(),
            dir,
            etcd,
            starts: 0,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        c.spawn();
        c
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
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg(format!("--bind=127.0.0.1:{}", self.port))
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
    pub fn etcd_endpoint(&self) -> Option<&str> {
        self.etcd.as_ref().map(|e| e.endpoint.as_str())
    }

    /// Stops the server (SIGKILL by PID) without removing its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        let mut child = Command::new("kubectl")
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
