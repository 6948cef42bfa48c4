//! Pods outlive the agent (issue 17): each container is held by a `berth container-shim`,
//! so a killed agent leaves its pods running and the next one takes them on (same process,
//! container ID, start time and restart count; logs, exec and probes go on). A container that
//! ended meanwhile is handled by the restart policy with its recorded exit code. Stopping the
//! agent on purpose stops its pods unless `--keep-pods-on-exit` is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{Cluster, eventually};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: held
spec:
  replicas: 1
  selector:
    matchLabels: {app: held}
  template:
    metadata:
      labels: {app: held}
    spec:
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "date +%s%N > /tmp/started; touch /tmp/ready; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"]
        readinessProbe:
          exec: {command: ["cat", "/tmp/ready"]}
          periodSeconds: 1
          failureThreshold: 1
      - name: quitter
        image: busybox
        command: ["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done"]
"#;

fn pod_name(c: &Cluster) -> String {
    eventually("the held pod to exist", || {
        let name = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=held",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        (!name.is_empty()).then_some(name)
    })
}

fn get(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// The host PID the agent recorded for a container, and that process's start time.
fn process(c: &Cluster, pod: &str, container: &str) -> (u32, String) {
    let uid = get(c, pod, "{.metadata.uid}");
    let file = c
        .data_dir()
        .join("agent/pods")
        .join(uid)
        .join(format!("{container}.pid"));
    let pid: u32 = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .expect("a PID");
    (pid, start_time(pid).expect("the container's process runs"))
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19).map(str::to_owned)
}

fn ready(c: &Cluster, pod: &str) -> String {
    get(c, pod, r#"{.status.conditions[?(@.type=="Ready")].status}"#)
}

/// The highest `line N` in a log.
fn lines(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The highest `line N` the container logged so far, through `kubectl logs`.
fn last_line(c: &Cluster, pod: &str) -> u64 {
    lines(&c.ok(&["logs", pod, "-c", "main"]))
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A node whose agent runs as a process of its own (the test kills and restarts it), Ready;
/// with `busybox`, the busybox image is imported under that reference first.
fn node_with_agent(busybox: Option<&str>) -> (Cluster, berth_testkit::Process) {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let c = Cluster::start_on_node_without_agent(bin, &[]);
    if let Some(reference) = busybox {
        c.import_image(&berth_testkit::images::busybox(&["sh"]), reference);
    }
    let agent = c.start_agent(&[]);
    c.wait_node_ready();
    (c, agent)
}

#[test]
fn pods_outlive_a_killed_agent_and_are_adopted() {
    let (c, mut agent) = node_with_agent(None);
    c.apply(DEPLOYMENT);
    let pod = pod_name(&c);
    eventually("held to be Ready", || {
        (ready(&c, &pod) == "True").then_some(())
    });
    let (pid, started) = process(&c, &pod, "main");
    let (quitter, _) = process(&c, &pod, "quitter");
    let id = get(
        &c,
        &pod,
        "{.status.containerStatuses[?(@.name==\"main\")].containerID}",
    );
    let at = get(
        &c,
        &pod,
        "{.status.containerStatuses[?(@.name==\"main\")].state.running.startedAt}",
    );
    let inside = c.ok(&["exec", &pod, "-c", "main", "--", "cat", "/tmp/started"]);

    let log: PathBuf = c
        .data_dir()
        .join("agent/pods")
        .join(get(&c, &pod, "{.metadata.uid}"))
        .join("main.log");
    agent.kill();
    let before = lines(&std::fs::read_to_string(&log).unwrap_or_default());
    // Running on without an agent: the log grows; meanwhile one container ends (exit 3).
    eventually("the container to log on without an agent", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (lines(&text) > before + 5).then_some(())
    });
    assert_eq!(
        start_time(pid).as_ref(),
        Some(&started),
        "the container outlived the agent"
    );
    sigterm(quitter);
    eventually("the quitter to end", || {
        start_time(quitter).is_none().then_some(())
    });

    let agent = c.start_agent(&["--keep-pods-on-exit"]);
    eventually("the quitter's end to be reported and it restarted", || {
        let s = get(
            &c,
            &pod,
            "{.status.containerStatuses[?(@.name==\"quitter\")].restartCount} {.status.containerStatuses[?(@.name==\"quitter\")].lastState.terminated.exitCode}",
        );
        (s == "1 3").then_some(())
    });
    let main = "{.status.containerStatuses[?(@.name==\"main\")]";
    assert_eq!(
        get(&c, &pod, &format!("{main}.restartCount}}")),
        "0",
        "{}",
        get(&c, &pod, "{.status.containerStatuses}")
    );
    assert_eq!(get(&c, &pod, &format!("{main}.containerID}}")), id);
    assert_eq!(
        get(&c, &pod, &format!("{main}.state.running.startedAt}}")),
        at
    );
    assert_eq!(
        process(&c, &pod, "main"),
        (pid, started.clone()),
        "the same process"
    );
    assert_eq!(
        c.ok(&["exec", &pod, "-c", "main", "--", "cat", "/tmp/started"]),
        inside
    );
    let logs = c.ok(&["logs", &pod, "-c", "main"]);
    assert!(
        logs.starts_with("line 0\n"),
        "the log from before: {}",
        &logs[..logs.len().min(200)]
    );
    eventually("the log to go on", || {
        (last_line(&c, &pod) > before + 5).then_some(())
    });
    // The readiness probe runs again.
    c.ok(&["exec", &pod, "-c", "main", "--", "rm", "/tmp/ready"]);
    eventually("held to turn unready", || {
        (ready(&c, &pod) == "False").then_some(())
    });
    c.ok(&["exec", &pod, "-c", "main", "--", "touch", "/tmp/ready"]);
    eventually("held to be ready again", || {
        (ready(&c, &pod) == "True").then_some(())
    });

    // Stopped on purpose with --keep-pods-on-exit: the pod stays.
    let mut agent = agent;
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", agent.output());
    assert_eq!(start_time(pid).as_ref(), Some(&started), "kept on exit");
    let mut agent = c.start_agent(&[]);
    eventually("the next agent to take the pod on", || {
        let s = get(
            &c,
            &pod,
            &format!("{main}.restartCount}} {main}.state.running.startedAt}}"),
        );
        (s == format!("0 {at}") && ready(&c, &pod) == "True").then_some(())
    });
    assert_eq!(process(&c, &pod, "main").0, pid);

    // Stopped on purpose without the flag: the pod stops.
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", agent.output());
    eventually("the container to stop with the agent", || {
        start_time(pid).is_none().then_some(())
    });
}

/// The same for an image pod under runc: the shim holds `runc run`, the container's init
/// lives on, and the next agent signals it again (its stop ends the container).
#[test]
fn image_pods_outlive_a_killed_agent() {
    let (c, mut agent) = node_with_agent(Some("bbheld:1"));
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: img
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: bbheld:1
    imagePullPolicy: Never
    command: ["sh", "-c", "date > /tmp/started; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"]
"#,
    );
    eventually("img to run", || {
        (get(&c, "img", "{.status.phase}") == "Running").then_some(())
    });
    let (runc, started) = process(&c, "img", "main");
    // runc's child (of whichever of its threads started it).
    let init = std::fs::read_dir(format!("/proc/{runc}/task"))
        .expect("runc's threads")
        .flatten()
        .find_map(|t| {
            let children = std::fs::read_to_string(t.path().join("children")).ok()?;
            children.split_whitespace().next()?.parse::<u32>().ok()
        })
        .expect("the container's init");
    let init_started = start_time(init);
    let id = get(&c, "img", "{.status.containerStatuses[0].containerID}");
    let inside = c.ok(&["exec", "img", "--", "cat", "/tmp/started"]);

    agent.kill();
    let agent = c.start_agent(&[]);
    eventually("the next agent to take img on", || {
        let s = get(
            &c,
            "img",
            "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].containerID}",
        );
        (s == format!("0 {id}")).then_some(())
    });
    assert_eq!(process(&c, "img", "main"), (runc, started));
    assert_eq!(start_time(init), init_started, "the same container init");
    assert_eq!(c.ok(&["exec", "img", "--", "cat", "/tmp/started"]), inside);
    let before = last_line(&c, "img");
    eventually("img's log to go on", || {
        (last_line(&c, "img") > before).then_some(())
    });

    let mut agent = agent;
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", agent.output());
    eventually("the container to stop with the agent", || {
        (start_time(init).is_none() && start_time(runc).is_none()).then_some(())
    });
}

/// Console containers are held by their shims too: a terminal (`tty`) and a plain open stdin
/// (`stdin`) survive a killed agent with the same processes and no restart, and the next
/// agent attaches to them again; their logs run on across the restart.
#[test]
fn console_pods_outlive_a_killed_agent_and_attach_again() {
    let (c, mut agent) = node_with_agent(None);
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: consoles
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: term
    image: busybox
    stdin: true
    tty: true
  - name: pipe
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo \"got $l\"; done"]
"#,
    );
    eventually("consoles to run", || {
        (get(&c, "consoles", "{.status.phase}") == "Running").then_some(())
    });
    let term = process(&c, "consoles", "term");
    let pipe = process(&c, "consoles", "pipe");
    attach(&c, "consoles", "term", "echo $((6*7))", "42");
    attach(&c, "consoles", "pipe", "before", "got before");

    agent.kill();
    let mut agent = c.start_agent(&[]);
    attach(&c, "consoles", "term", "echo $((7*8))", "56");
    attach(&c, "consoles", "pipe", "after", "got after");
    assert_eq!(process(&c, "consoles", "term"), term, "the same shell");
    assert_eq!(process(&c, "consoles", "pipe"), pipe, "the same reader");
    assert_eq!(
        get(
            &c,
            "consoles",
            "{.status.containerStatuses[*].restartCount}"
        ),
        "0 0"
    );
    let logs = c.ok(&["logs", "consoles", "-c", "term"]);
    assert!(logs.contains("42") && logs.contains("56"), "{logs}");
    let logs = c.ok(&["logs", "consoles", "-c", "pipe"]);
    assert!(
        logs.contains("got before\n") && logs.contains("got after\n"),
        "{logs}"
    );

    // A killed agent's console shims are what the test harness's kill_holders clears.
    let shims = shims(&c, "consoles");
    assert_eq!(shims.len(), 2, "{shims:?}");
    agent.kill();
    berth_testkit::kill_holders(&c.data_dir().join("agent"));
    for pid in shims.into_iter().chain([term.0, pipe.0]) {
        eventually("the console containers and their shims to go", || {
            start_time(pid).is_none().then_some(())
        });
    }
}

/// The same for an image pod's terminal: runc runs under the shim with the terminal the shim
/// holds, and the next agent attaches to the image's shell again.
#[test]
fn image_console_pods_outlive_a_killed_agent() {
    let (c, mut agent) = node_with_agent(Some("bbterm:1"));
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: imgterm
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: term
    image: bbterm:1
    imagePullPolicy: Never
    stdin: true
    tty: true
"#,
    );
    eventually("imgterm to run", || {
        (get(&c, "imgterm", "{.status.phase}") == "Running").then_some(())
    });
    let runc = process(&c, "imgterm", "term");
    attach(&c, "imgterm", "term", "echo $((6*7)) $TERM", "42 xterm");
    agent.kill();
    let _agent = c.start_agent(&[]);
    attach(&c, "imgterm", "term", "echo $((7*8)) $TERM", "56 xterm");
    assert_eq!(process(&c, "imgterm", "term"), runc, "the same runc");
    assert_eq!(
        get(&c, "imgterm", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    let logs = c.ok(&["logs", "imgterm"]);
    assert!(
        logs.contains("42 xterm") && logs.contains("56 xterm"),
        "{logs}"
    );
}

/// The shims holding a pod's containers, from their state files.
fn shims(c: &Cluster, pod: &str) -> Vec<u32> {
    let dir = c
        .data_dir()
        .join("agent/pods")
        .join(get(c, pod, "{.metadata.uid}"));
    std::fs::read_dir(dir)
        .expect("the pod's directory")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "shim"))
        .filter_map(|e| {
            let held: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            u32::try_from(held.get("shim")?.as_u64()?).ok()
        })
        .collect()
}

/// `kubectl attach` to a console container (`-it` in a terminal for `term`, `-i` with a pipe
/// otherwise) typing `line` until `want` comes back; again while the agent cannot attach yet
/// (just restarted: kubectl fails).
fn attach(c: &Cluster, pod: &str, container: &str, line: &str, want: &str) {
    use crate::kubelet::{Reaped, collect, in_terminal, outside, seen};
    use std::io::Write;
    eventually(
        &format!("{want:?} through kubectl attach to {container}"),
        || {
            let (mut kubectl, out, mut stdin) = if container == "term" {
                in_terminal(c, &format!("kubectl attach -it {pod} -c {container}"))
            } else {
                let mut child = Reaped(
                    outside(c, "kubectl", &["attach", "-i", pod, "-c", container])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .expect("kubectl"),
                );
                let out = collect(&mut child.0);
                let stdin = child.0.stdin.take().expect("kubectl's stdin");
                (child, out, stdin)
            };
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if seen(&out, want).is_some() {
                    return Some(());
                }
                if !matches!(kubectl.0.try_wait(), Ok(None)) {
                    return None;
                }
                let _ = stdin.write_all(format!("{line}\n").as_bytes());
                std::thread::sleep(Duration::from_millis(300));
            }
            None
        },
    );
}
