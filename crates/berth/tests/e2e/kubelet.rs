//! `kubectl logs`, `exec` and `port-forward` through the API server to the node agent's
//! server, in a throwaway node netns with kubectl outside it, as with a real kubelet.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use berth_testkit::{Cluster, eventually};

fn start() -> Cluster {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c
}

/// Applies a pod of busybox containers running `sh -c SCRIPT`. Scripts end in `exec` so that
/// no child outlives the container's process when the agent stops it.
fn pod(c: &Cluster, name: &str, containers: &[(&str, &str)]) {
    let mut m =
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n");
    for (cname, script) in containers {
        m.push_str(&format!(
            "  - name: {cname}\n    image: busybox\n    command: [\"sh\", \"-c\", {script:?}]\n"
        ));
    }
    c.apply(&m);
    eventually(&format!("{name} to run"), || {
        let phase = c.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
}

/// kubectl (or `program`) in the outside netns with this cluster's kubeconfig, not waited for.
pub(crate) fn outside(c: &Cluster, program: &str, args: &[&str]) -> Command {
    let node = c.node().expect("a node cluster");
    let mut cmd = node.outside_command(program);
    cmd.args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .env("HOME", c.dir());
    cmd
}

/// Runs `command` (a kubectl command line) in the outside netns with a terminal of its own
/// (`script`), for `-it`: the running child, what it has printed so far, and its input.
pub(crate) fn in_terminal(
    c: &Cluster,
    command: &str,
) -> (Reaped, Arc<Mutex<String>>, std::process::ChildStdin) {
    let mut tty = Reaped(
        outside(c, "script", &["-qec", command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script"),
    );
    let out = collect(&mut tty.0);
    let stdin = tty.0.stdin.take().expect("script's stdin");
    (tty, out, stdin)
}

/// Collects a child's stdout on a thread, so a test can look at it while the child runs.
pub(crate) fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    if let Some(mut stdout) = child.stdout.take() {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = out.lock() {
                    o.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    out
}

pub(crate) fn seen(out: &Arc<Mutex<String>>, want: &str) -> Option<String> {
    let o = out.lock().ok()?;
    o.contains(want).then(|| o.clone())
}

/// Kills a child by PID on drop, so a failing test leaves no kubectl behind.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs() {
    let c = start();
    pod(
        &c,
        "talker",
        &[("c", "echo hello; echo second; exec sleep 3600")],
    );
    let all = eventually("talker's output", || {
        let out = c.ok(&["logs", "talker"]);
        out.contains("second\n").then_some(out)
    });
    assert_eq!(all, "hello\nsecond\n");
    assert_eq!(c.ok(&["logs", "talker", "--tail=1"]), "second\n");
    assert_eq!(c.ok(&["logs", "talker", "--limit-bytes=3"]), "hel");
    // The agent's server lets in only clients with a certificate from the cluster CA.
    let node = c.node().expect("a node cluster");
    let direct = node.outside_exec(&[
        "curl",
        "-sk",
        "--max-time",
        "5",
        &format!(
            "https://{}:10250/containerLogs/default/talker/c",
            berth_testkit::NODE_IP
        ),
    ]);
    assert!(!direct.status.success(), "no client certificate, no logs");
    assert!(!String::from_utf8_lossy(&direct.stdout).contains("hello"));

    pod(
        &c,
        "pair",
        &[
            ("a", "echo from-a; exec sleep 3600"),
            ("b", "echo from-b; exec sleep 3600"),
        ],
    );
    eventually("b's output", || {
        (c.ok(&["logs", "pair", "-c", "b"]) == "from-b\n").then_some(())
    });
    // kubectl picks the first container itself and says so; the API server insists.
    let out = c.kubectl(&["logs", "pair"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-a\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Defaulted container \"a\" out of: a, b")
    );
    let err = c.fails(&["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"]);
    assert!(
        err.contains("a container name must be specified for pod pair, choose one of: [a b]"),
        "{err}"
    );
    let err = c.fails(&["logs", "pair", "-c", "zz"]);
    assert!(
        err.contains("container zz is not valid for pod pair"),
        "{err}"
    );
    let err = c.fails(&["logs", "nope"]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let err = c.fails(&["logs", "talker", "--previous"]);
    assert!(
        err.contains("previous terminated container \"c\" in pod \"talker\" not found"),
        "{err}"
    );

    // -f: a line written after kubectl started arrives; kubectl is then stopped by PID.
    pod(
        &c,
        "ticker",
        &[(
            "c",
            "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo later; exec sleep 3600",
        )],
    );
    let mut follow = Reaped(
        outside(&c, "kubectl", &["logs", "-f", "ticker"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let out = collect(&mut follow.0);
    eventually("the first line", || seen(&out, "first\n"));
    c.ok(&["exec", "ticker", "--", "touch", "/tmp/go"]);
    eventually("the later line", || seen(&out, "first\nlater\n"));
    assert!(
        matches!(follow.0.try_wait(), Ok(None)),
        "kubectl logs -f keeps following"
    );
}

#[test]
fn exec() {
    let c = start();
    pod(&c, "shell", &[("c", "exec sleep 3600")]);
    assert_eq!(c.ok(&["exec", "shell", "--", "hostname"]), "shell\n");
    let resolv = c.ok(&["exec", "shell", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    let env = c.ok(&["exec", "shell", "--", "env"]);
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1"), "{env}");

    let out = c.kubectl(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("err\n"), "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );

    let out = c.kubectl_stdin(&["exec", "-i", "shell", "--", "cat"], "hi\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // -it: kubectl needs a terminal of its own, which `script` gives it.
    let (mut tty, out, mut stdin) = in_terminal(&c, "kubectl exec -it shell -- sh");
    stdin
        .write_all(b"echo $((6*7)); exit\n")
        .expect("typing into the terminal");
    let text = eventually("42 from the terminal", || seen(&out, "42"));
    eventually("the interactive session to end", || {
        matches!(tty.0.try_wait(), Ok(Some(_))).then_some(())
    });
    drop(stdin);
    assert!(text.contains("42"), "{text}");

    let err = c.fails(&["exec", "nope", "--", "true"]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let err = c.fails(&["exec", "shell", "-c", "zz", "--", "true"]);
    assert!(err.contains("zz"), "{err}");
    let err = c.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/shell/exec?container=zz&command=true&stdout=1",
    ]);
    assert!(
        err.contains("container zz is not valid for pod shell"),
        "{err}"
    );
}

#[test]
fn port_forward() {
    let c = start();
    c.ok(&["run", "web", "--image=berth/whoami", "--port=8080"]);
    eventually("web to run", || {
        let phase = c.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
    let node = c.node().expect("a node cluster");
    let errors = c.dir().join("port-forward.err");
    let mut pf = Reaped(
        outside(
            &c,
            "kubectl",
            &["port-forward", "pod/web", "18080:8080", "18081:9"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).expect("stderr file"))
        .spawn()
        .expect("kubectl port-forward"),
    );
    let out = collect(&mut pf.0);
    eventually("kubectl to listen", || {
        seen(&out, "Forwarding from 127.0.0.1:18081")
    });
    let get = |port: u16| {
        let url = format!("http://127.0.0.1:{port}/");
        let out = node.outside_exec(&["curl", "-s", "--max-time", "5", &url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Several connections, one after another, each its own stream pair.
    for _ in 0..3 {
        let body = eventually("whoami through the forwarded port", || {
            let body = get(18080);
            body.contains("Hostname: web").then_some(body)
        });
        assert!(body.contains("Hostname: web"), "{body}");
    }
    // Nothing listens on port 9 in the pod: the agent says so on the error stream, and
    // kubectl gives up, as it does against a kubelet.
    assert_eq!(get(18081), "");
    eventually("kubectl port-forward to stop", || {
        matches!(pf.0.try_wait(), Ok(Some(_))).then_some(())
    });
    let err = std::fs::read_to_string(&errors).unwrap_or_default();
    assert!(
        err.contains("an error occurred forwarding 18081 -> 9: error forwarding port 9 to pod web"),
        "{err}"
    );
    // The agent dials the port on the pod's loopback, inside its namespace, as the kubelet does.
    assert!(
        err.contains("failed to connect to localhost:9 inside namespace")
            && err.contains("berth-pod-"),
        "{err}"
    );
}

/// `kubectl run -it --rm` as tutorial 003 uses it: the pod's shell gets a terminal, kubectl
/// attaches to it, the session's end completes the pod, and `--rm` deletes it.
#[test]
fn run_interactive_attaches_to_the_container() {
    let c = start();
    let (mut tty, out, mut stdin) = in_terminal(
        &c,
        "kubectl run bb --image=busybox --restart=Never -it --rm -- sh",
    );
    eventually("kubectl to attach", || seen(&out, "pressing enter"));
    stdin
        .write_all(b"hostname; echo $((6*7)); exit\n")
        .expect("typing into the terminal");
    let text = eventually("42 from the attached shell", || seen(&out, "42"));
    // The shell's prompt may land before the output or not, as the typed line's echo races
    // the shell starting: a line of its own, or after the prompt.
    assert!(
        text.lines()
            .any(|l| l.trim().trim_start_matches('#').trim() == "bb"),
        "the pod's hostname: {text}"
    );
    eventually("kubectl run to end", || {
        matches!(tty.0.try_wait(), Ok(Some(_))).then_some(())
    });
    drop(stdin);
    eventually("--rm to delete the pod", || {
        c.ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    // A container without stdin or a tty cannot be attached to.
    pod(&c, "plain", &[("c", "exec sleep 600")]);
    let err = c.fails(&["attach", "plain"]);
    assert!(err.contains("not running with stdin or a tty"), "{err}");
}

/// The Python client's interactive exec sends stdin in websocket text frames.
const PYTHON_EXEC: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
s = stream(v1.connect_get_namespaced_pod_exec, "py", "default", command=["cat"],
           stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
s.write_stdin("hello from text frames\n")
out = ""
for _ in range(50):
    s.update(timeout=0.2)
    out += s.read_stdout() or ""
    if "\n" in out:
        break
s.close()
print(out.strip())
"#;

#[test]
fn python_exec_stdin_in_text_frames() {
    let c = start();
    pod(&c, "py", &[("c", "exec sleep 600")]);
    let script = c.file("exec.py", PYTHON_EXEC);
    let script = script.to_string_lossy().into_owned();
    let kubeconfig = c.kubeconfig.to_string_lossy().into_owned();
    let out = outside(&c, "python3", &[&script, &kubeconfig])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "hello from text frames",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
