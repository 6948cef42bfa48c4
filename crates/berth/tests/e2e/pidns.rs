//! `shareProcessNamespace: true` (issue 17): all containers of the pod share one PID
//! namespace whose PID 1 is the pod's pause process; each sees, signals and reads
//! `/proc/PID/root` of the others' processes. Without the flag each container has its own.
//! For host-program pods and image pods under runc alike; the pause outlives a restarted
//! agent (which takes it on) and goes with the pod.

use std::path::{Path, PathBuf};

use berth_testkit::{Cluster, eventually, images};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// A pod with containers `a` (`sleep 3601`) and `b` (`sleep 3602`, whose child is
/// `sleep 3603`) of `image`, sharing one
/// PID namespace when `share`.
fn pod(name: &str, image: &str, share: bool) -> String {
    let share = if share {
        "  shareProcessNamespace: true\n"
    } else {
        ""
    };
    // Host programs for `busybox`; an imported image otherwise, never pulled.
    let policy = if image == "busybox" {
        ""
    } else {
        "    imagePullPolicy: Never\n"
    };
    let container = |n: &str, script: &str| {
        format!("  - name: {n}\n    image: {image}\n{policy}    command: [sh, -c, '{script}']\n")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{share}  containers:\n{}{}",
        container("a", "exec sleep 3601"),
        // With a child of its own, which must end with b's command.
        container("b", "sleep 3603 & exec sleep 3602")
    )
}

fn get(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

fn running(c: &Cluster, pod: &str) {
    eventually(&format!("{pod}'s two containers to run"), || {
        let ready = get(c, pod, "{.status.containerStatuses[*].ready}");
        (ready == "true true").then_some(())
    });
}

/// `PID COMMAND LINE` for each process container `a` of `pod` sees, read from its /proc.
fn processes(c: &Cluster, pod: &str) -> Vec<(u32, String)> {
    let script =
        r#"for d in /proc/[0-9]*; do echo "${d#/proc/} $(tr '\0' ' ' < $d/cmdline)"; done"#;
    c.ok(&["exec", pod, "-c", "a", "--", "sh", "-c", script])
        .lines()
        .filter_map(|l| {
            let (pid, cmd) = l.split_once(' ')?;
            Some((pid.parse().ok()?, cmd.trim().to_owned()))
        })
        .collect()
}

/// The PID (in the pod's namespace) of `b`'s command, as `a` sees it.
fn b_pid(procs: &[(u32, String)]) -> Option<u32> {
    procs
        .iter()
        .find(|(_, cmd)| cmd == "sleep 3602")
        .map(|(pid, _)| *pid)
}

/// `/run/berth/ns/berth-pod-<12 hex of uid>/pause.json`: the pod's pause, as the agent
/// recorded it.
fn pause_file(c: &Cluster, pod: &str) -> PathBuf {
    let hex: String = get(c, pod, "{.metadata.uid}")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    Path::new("/run/berth/ns")
        .join(format!("berth-pod-{hex}"))
        .join("pause.json")
}

fn pause_pid(file: &Path) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("pause.json");
    v["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("a PID")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// What `a` of a sharing pod must see: the pause as PID 1, `b`'s command, whose root it reads
/// and which it can signal (the kill ends `b`, which restarts).
fn check_shared(c: &Cluster, pod: &str) {
    let procs = processes(c, pod);
    let one = procs.iter().find(|(pid, _)| *pid == 1);
    assert!(
        one.is_some_and(|(_, cmd)| cmd.contains("--pause-init")),
        "PID 1 is the pause: {procs:?}"
    );
    let sh = |script: &str| c.ok(&["exec", pod, "-c", "a", "--", "sh", "-c", script]);
    assert_eq!(sh("cat /proc/1/comm").trim(), "pause");
    let b = b_pid(&procs).unwrap_or_else(|| panic!("a sees b's sleep: {procs:?}"));
    assert_eq!(
        sh(&format!("cat /proc/{b}/root/etc/hostname")).trim(),
        pod,
        "a reads b's root"
    );
    sh(&format!("kill {b}"));
    eventually("b to restart after a killed its command", || {
        let n = get(
            c,
            pod,
            r#"{.status.containerStatuses[?(@.name=="b")].restartCount}"#,
        );
        (n == "1").then_some(())
    });
    running(c, pod);
    // The new run of b joined the same namespace; the old run's child ended with it.
    let procs = processes(c, pod);
    let again = b_pid(&procs);
    assert!(again.is_some_and(|p| p != b), "b's new process: {procs:?}");
    let children = procs.iter().filter(|(_, cmd)| cmd == "sleep 3603").count();
    assert_eq!(children, 1, "only the new run's child: {procs:?}");
}

#[test]
fn containers_of_a_pod_share_one_pid_namespace_when_asked() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    c.apply(&pod("shared", "busybox", true));
    c.apply(&pod("apart", "busybox", false));
    running(&c, "shared");
    running(&c, "apart");
    let pause = pause_file(&c, "shared");
    let pid = pause_pid(&pause);
    assert!(alive(pid), "the pause runs");
    check_shared(&c, "shared");

    // Without the flag: the container's own init as PID 1, nothing of b.
    let procs = processes(&c, "apart");
    assert!(b_pid(&procs).is_none(), "a does not see b: {procs:?}");
    assert!(
        procs
            .iter()
            .any(|(p, cmd)| *p == 1 && cmd.contains("container-init --reap")),
        "{procs:?}"
    );
    assert!(
        !pause_file(&c, "apart").exists(),
        "no pause without the flag"
    );

    c.ok(&["delete", "pod", "shared", "--wait=true"]);
    eventually("the pause to end with its pod", || {
        (!alive(pid)).then_some(())
    });
    assert!(!pause.exists());
}

#[test]
fn image_pods_share_one_pid_namespace_when_asked() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    c.import_image(&images::busybox(&["sh"]), "bbshare:1");
    c.apply(&pod("shared", "bbshare:1", true));
    c.apply(&pod("apart", "bbshare:1", false));
    running(&c, "shared");
    running(&c, "apart");
    // The image's own ps sees the pause as PID 1 and b's sleep.
    let ps = image_ps(&c, "shared");
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().take(2).eq(["1", "pause"])),
        "{ps}"
    );
    assert!(ps.contains("sleep 3602"), "{ps}");
    check_shared(&c, "shared");
    let ps = image_ps(&c, "apart");
    assert!(!ps.contains("sleep 3602") && !ps.contains("pause"), "{ps}");
}

#[test]
fn the_pause_outlives_a_killed_agent_and_is_taken_on() {
    let c = Cluster::start_on_node_without_agent(bin(), &[]);
    let mut agent = c.start_agent(&[]);
    c.wait_node_ready();
    c.apply(&pod("shared", "busybox", true));
    running(&c, "shared");
    let pid = pause_pid(&pause_file(&c, "shared"));
    let before = b_pid(&processes(&c, "shared"));
    agent.kill();
    let _agent = c.start_agent(&[]);
    eventually("the pod to be reported Ready again", || {
        let ready = get(
            &c,
            "shared",
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        );
        (ready == "True").then_some(())
    });
    assert!(alive(pid), "the same pause runs");
    assert_eq!(pause_pid(&pause_file(&c, "shared")), pid);
    assert_eq!(b_pid(&processes(&c, "shared")), before, "b's same process");
    check_shared(&c, "shared");
    c.ok(&["delete", "pod", "shared", "--wait=true"]);
    eventually("the pause to end with its pod", || {
        (!alive(pid)).then_some(())
    });
}

/// `ps` as the busybox image's own, in container `a` of `pod`.
fn image_ps(c: &Cluster, pod: &str) -> String {
    c.ok(&["exec", pod, "-c", "a", "--", "ps", "-o", "pid,comm,args"])
}
