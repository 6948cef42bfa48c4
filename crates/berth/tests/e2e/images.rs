//! Image pods (issue 17): a busybox image made by the test from Debian's busybox-static,
//! imported with `berth image import` as a docker-save tar and as an OCI archive, run under
//! runc with `imagePullPolicy: Never`: logs, exec into the image's own files and processes,
//! graceful deletion that leaves no runc container or bundle behind.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_testkit::{Cluster, eventually, images};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

fn berth_image(c: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("image")
        .args(args)
        .arg(format!("--data-dir={}", c.data_dir().display()))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("berth image");
    if let Some(data) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(data).expect("write the archive");
    }
    let out = child.wait_with_output().expect("berth image");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "berth image {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn pod(name: &str, image: &str, args: Option<&str>) -> String {
    let args = args.map(|a| format!("    args: {a}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Never\n{args}"
    )
}

fn running(c: &Cluster, name: &str) {
    eventually(&format!("{name} to run"), || {
        let phase = c.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
}

#[test]
fn imported_busybox_runs_under_runc() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let image = images::busybox(&["sh", "-c", "echo started from the image; exec sleep 3600"]);
    let docker = c.dir().join("bb.tar");
    std::fs::write(
        &docker,
        image.docker_save(&["bbtest:1"]).expect("docker save"),
    )
    .expect("write");
    let out = berth_image(&c, &["import", &docker.display().to_string()], None);
    assert!(out.contains("imported docker.io/library/bbtest:1"), "{out}");
    let oci = image
        .oci_archive("docker.io/library/bbtest:oci")
        .expect("oci archive");
    let out = berth_image(&c, &["import", "-"], Some(&oci));
    assert!(
        out.contains("imported docker.io/library/bbtest:oci"),
        "{out}"
    );
    let ls = berth_image(&c, &["ls"], None);
    assert!(
        ls.contains("docker.io/library/bbtest:1") && ls.contains("docker.io/library/bbtest:oci"),
        "{ls}"
    );

    c.apply(&pod("bb", "bbtest:1", None));
    c.apply(&pod(
        "bb-oci",
        "docker.io/library/bbtest:oci",
        Some("[sh, -c, 'echo oci $HOME; exec sleep 3600']"),
    ));
    c.apply(&pod("absent", "absent:1", None));
    // An image container and a host-program one in one pod.
    c.apply(&format!(
        "{}  - name: side\n    image: busybox\n    command: [sh, -c, 'exec sleep 3600']\n",
        pod("pair", "bbtest:1", None)
    ));
    c.apply(&format!(
        "{}    workingDir: /tmp\n    securityContext:\n      runAsUser: 1000\n      runAsGroup: 1000\n",
        pod("bb-user", "bbtest:1", None)
    ));
    running(&c, "bb");
    running(&c, "bb-oci");
    eventually("the image's CMD in the log", || {
        c.ok(&["logs", "bb"])
            .contains("started from the image")
            .then_some(())
    });
    eventually("args replacing CMD, HOME from /root", || {
        c.ok(&["logs", "bb-oci"])
            .contains("oci /root")
            .then_some(())
    });
    let id = c.ok(&[
        "get",
        "pod",
        "bb",
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert!(id.starts_with("docker.io/library/bbtest@sha256:"), "{id}");
    // The image's own files, not the host's.
    assert_eq!(
        c.ok(&["exec", "bb", "--", "cat", "/etc/berth-image"])
            .trim(),
        images::MARKER
    );
    c.fails(&["exec", "bb", "--", "cat", "/etc/os-release"]);
    assert_eq!(c.ok(&["exec", "bb", "--", "hostname"]).trim(), "bb");
    // Its own PID namespace: the sleep as PID 1 and ps itself.
    let ps = c.ok(&["exec", "bb", "--", "ps", "-o", "pid,comm"]);
    let procs: Vec<&str> = ps.lines().skip(1).collect();
    assert!(
        procs.len() <= 3
            && procs
                .iter()
                .any(|l| l.split_whitespace().eq(["1", "sleep"])),
        "{ps}"
    );
    // The container's user and working directory, for its process and for exec.
    running(&c, "bb-user");
    assert_eq!(c.ok(&["exec", "bb-user", "--", "id", "-u"]).trim(), "1000");
    assert_eq!(c.ok(&["exec", "bb-user", "--", "pwd"]).trim(), "/tmp");
    // A pod's containers share its UTS and IPC namespaces (as with the pause container),
    // whatever runs them, and not the node's or another pod's.
    running(&c, "pair");
    let ns = |pod: &str, container: &str, kind: &str| {
        let out = c.ok(&[
            "exec",
            pod,
            "-c",
            container,
            "--",
            "ls",
            "-l",
            &format!("/proc/self/ns/{kind}"),
        ]);
        let id = out.split_once("->").map(|(_, id)| id.trim().to_owned());
        id.unwrap_or_else(|| panic!("no namespace in {out}"))
    };
    for kind in ["uts", "ipc"] {
        let main = ns("pair", "main", kind);
        assert_eq!(main, ns("pair", "side", kind), "{kind} shared in the pod");
        assert_ne!(main, ns("bb-user", "main", kind), "{kind} of another pod");
        let node = std::fs::read_link(format!("/proc/self/ns/{kind}")).expect("own ns");
        assert_ne!(main, node.display().to_string(), "{kind} of the node");
    }
    let waiting = c.ok(&[
        "get",
        "pod",
        "absent",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ]);
    assert_eq!(waiting, "ErrImageNeverPull");

    // Deletion: SIGTERM (PID 1 ignores it), SIGKILL after the grace period, nothing left.
    let started = std::time::Instant::now();
    c.ok(&["delete", "pod", "bb", "bb-oci", "bb-user", "pair"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let runc_root = c.data_dir().join("agent/runc");
    eventually("no runc containers left", || {
        let left = std::fs::read_dir(&runc_root)
            .map(|d| d.count())
            .unwrap_or(0);
        (left == 0).then_some(())
    });
    let pods = c.data_dir().join("agent/pods");
    let bundles = std::fs::read_dir(&pods)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("oci").exists())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(bundles, 0, "bundles left in {}", pods.display());
    let rm = berth_image(&c, &["rm", "bbtest:1"], None);
    assert!(rm.contains("removed docker.io/library/bbtest:1"), "{rm}");
}

/// Restarts, `--previous` logs, an exec readiness probe and SIGTERM reaching a container's
/// own handler (deletion then takes less than the grace period), all for an image pod.
#[test]
fn image_pods_restart_probe_and_stop_gracefully() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let image = images::busybox(&["sh", "-c", "echo run; sleep 1; exit 3"]);
    let tar = c.dir().join("bb.tar");
    std::fs::write(&tar, image.docker_save(&["bbtest:2"]).expect("docker save")).expect("write");
    berth_image(&c, &["import", &tar.display().to_string()], None);
    c.apply(&pod("crash", "bbtest:2", None));
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: term\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: main\n    image: bbtest:2\n    imagePullPolicy: Never\n    command: [sh, -c, \"trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.2; done\"]\n    readinessProbe:\n      exec:\n        command: [cat, /etc/berth-image]\n      periodSeconds: 1\n",
    );
    eventually("crash to restart", || {
        let n = c.ok(&[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        (n.parse::<u32>().unwrap_or(0) >= 1).then_some(())
    });
    let last = c.ok(&[
        "get",
        "pod",
        "crash",
        "-o",
        "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}",
    ]);
    assert_eq!(last, "3");
    assert!(c.ok(&["logs", "crash", "--previous"]).contains("run"));
    eventually("term to be Ready through its exec probe", || {
        let ready = c.ok(&[
            "get",
            "pod",
            "term",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ]);
        (ready == "true").then_some(())
    });
    // Volumes are bound into the image's root: a ConfigMap read-only, an emptyDir writable.
    c.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=greeting=hello from a configmap",
    ]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vols\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: bbtest:2\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n    volumeMounts:\n    - {name: conf, mountPath: /etc/app}\n    - {name: scratch, mountPath: /data}\n  volumes:\n  - name: conf\n    configMap: {name: app}\n  - name: scratch\n    emptyDir: {}\n",
    );
    running(&c, "vols");
    assert_eq!(
        c.ok(&["exec", "vols", "--", "cat", "/etc/app/greeting"]),
        "hello from a configmap"
    );
    c.ok(&["exec", "vols", "--", "touch", "/data/written"]);
    c.fails(&["exec", "vols", "--", "touch", "/etc/app/nope"]);
    // resources become the container's cgroup limits; going over the memory limit is an
    // OOM kill the status reports as the kubelet does.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: limited\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: bbtest:2\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n    resources:\n      limits: {memory: 16Mi, cpu: 250m}\n",
    );
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hog\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: bbtest:2\n    imagePullPolicy: Never\n    command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]\n    resources:\n      limits: {memory: 16Mi}\n",
    );
    running(&c, "limited");
    let limits = c.ok(&[
        "exec",
        "limited",
        "--",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
    ]);
    let limits: Vec<&str> = limits.split_whitespace().collect();
    assert!(
        limits == ["16777216", "25000"] || limits == ["16777216", "25000", "100000"],
        "{limits:?}"
    );
    let terminated = eventually("the hog to be OOM-killed", || {
        let t = c.ok(&[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}",
        ]);
        (!t.trim().is_empty()).then_some(t)
    });
    assert_eq!(terminated, "OOMKilled 137", "{}", c.ok(&["logs", "hog"]));

    let started = std::time::Instant::now();
    c.ok(&["delete", "pod", "term"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "SIGTERM reached the trap: {:?}",
        started.elapsed()
    );
}

/// Seed 000's flow with a real image: `docker save` format -> `berth image import` -> the
/// tutorial's own Deployment (`number-crunch:local`, `imagePullPolicy: Never`) and Service;
/// the image (busybox httpd on 8080, a second layer with its page) answers through the
/// Service's DNS name from inside one of its pods.
#[test]
fn seed_000_imported_number_crunch_behind_its_service() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let mut image = images::busybox(&[]);
    image.layers.push(
        berth_image::archive::LayerBuilder::default()
            .dir("www")
            .file("www/index.html", b"number-crunch from an image\n", 0o644)
            .build(),
    );
    image.entrypoint = Some(vec![
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        "8080".into(),
        "-h".into(),
        "/www".into(),
    ]);
    let tar = c.dir().join("number-crunch.tar");
    std::fs::write(
        &tar,
        image
            .docker_save(&["number-crunch:local"])
            .expect("docker save"),
    )
    .expect("write");
    berth_image(&c, &["import", &tar.display().to_string()], None);
    let example = |f: &str| {
        format!(
            "{}/../../examples/000-number-crunch/{f}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    c.ok(&["apply", "-f", &example("number-crunch-deployment.yml")]);
    c.ok(&["apply", "-f", &example("number-crunch-service.yml")]);
    c.ok(&[
        "rollout",
        "status",
        "deployment/number-crunch-app",
        "--timeout=60s",
    ]);
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=number-crunch",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    eventually("the Service to answer from the image", || {
        let out = c.kubectl(&[
            "exec",
            &pod,
            "--",
            "wget",
            "-qO-",
            "http://number-crunch-service:8080/",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .contains("number-crunch from an image")
            .then_some(())
    });
}

/// The first try, with busybox imported: `kubectl run -it` gets the image's shell on
/// a terminal (runc's console proxied to the agent's), not the host's.
#[test]
fn run_interactive_in_an_imported_busybox() {
    use crate::kubelet::{in_terminal, seen};
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let tar = c.dir().join("bb.tar");
    std::fs::write(
        &tar,
        images::busybox(&["sh"])
            .docker_save(&["busybox"])
            .expect("archive"),
    )
    .expect("write");
    berth_image(&c, &["import", &tar.display().to_string()], None);
    let (mut tty, out, mut stdin) = in_terminal(
        &c,
        "kubectl run bb --image=busybox --restart=Never -it --rm -- sh",
    );
    eventually("kubectl to attach", || seen(&out, "pressing enter"));
    stdin
        .write_all(b"cat /etc/berth-image; echo $((6*7)) $HOME $TERM; exit\n")
        .expect("typing into the terminal");
    let text = eventually("42 from the attached shell", || {
        seen(&out, "42 /root xterm")
    });
    assert!(text.contains(images::MARKER), "the image's shell: {text}");
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
}

/// A server stopping stops its image containers too (they are not its children's children
/// by process group: each is signalled at its init), and leaves no runc state behind.
#[test]
fn stopping_the_server_stops_image_containers() {
    let mut c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let tar = c.dir().join("bb.tar");
    let image = images::busybox(&["sh", "-c", "exec sleep 3600"]);
    std::fs::write(&tar, image.docker_save(&["bbtest:3"]).expect("archive")).expect("write");
    berth_image(&c, &["import", &tar.display().to_string()], None);
    c.apply(&pod("lingers", "bbtest:3", None));
    running(&c, "lingers");
    let pods = c.data_dir().join("agent/pods");
    let init: u32 = eventually("the container's init.pid", || {
        std::fs::read_dir(&pods).ok()?.flatten().find_map(|e| {
            std::fs::read_to_string(e.path().join("oci/main/init.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    });
    assert!(Path::new(&format!("/proc/{init}")).exists());
    c.stop();
    eventually("the container's init to be gone", || {
        (!Path::new(&format!("/proc/{init}")).exists()).then_some(())
    });
    let left = std::fs::read_dir(c.data_dir().join("agent/runc"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "runc state left");
}

/// The default single node (the agent in the machine's mount namespace, not under `ip netns
/// exec`): an image pod runs, and its overlay is mounted only in runc's private namespace,
/// never in the machine's.
#[test]
fn single_node_runs_an_image_pod_without_host_mounts() {
    let c = Cluster::start_single_node(bin(), &[]);
    let tar = c.dir().join("bb.tar");
    let image = images::busybox(&["sh", "-c", "echo single; exec sleep 3600"]);
    std::fs::write(&tar, image.docker_save(&["bbtest:4"]).expect("archive")).expect("write");
    berth_image(&c, &["import", &tar.display().to_string()], None);
    c.apply(&pod("single", "bbtest:4", None));
    running(&c, "single");
    eventually("its output", || {
        c.ok(&["logs", "single"]).contains("single").then_some(())
    });
    assert_eq!(
        c.ok(&["exec", "single", "--", "cat", "/etc/berth-image"])
            .trim(),
        images::MARKER
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let data = c.data_dir().display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&data)),
        "mounts under {data} in the machine's namespace:\n{mounts}"
    );
    c.ok(&["delete", "pod", "single", "--grace-period=1"]);
}

/// Busybox's own resolver, as tutorial 004 runs `nslookup svc-destination` in a busybox pod:
/// a Service by its short name (the pod's search list) and by its full name, answered by
/// the cluster DNS.
#[test]
fn busybox_nslookup_finds_services_by_name() {
    let c = Cluster::start_on_node(bin(), &[]);
    c.wait_node_ready();
    let image = images::busybox(&["sleep", "3600"]);
    let tar = image.docker_save(&["busybox:dns"]).expect("docker save");
    berth_image(&c, &["import", "-"], Some(&tar));
    c.apply(&pod("bb", "busybox:dns", None));
    running(&c, "bb");
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "svc-destination",
        "--tcp=80:80",
    ]);
    let ip = c.ok(&[
        "get",
        "svc",
        "svc-destination",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for name in [
        "svc-destination",
        "svc-destination.default.svc.cluster.local",
    ] {
        let out = eventually(&format!("nslookup {name}"), || {
            let out = c.kubectl(&["exec", "bb", "--", "nslookup", name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(&ip).then_some(text)
        });
        assert!(
            out.contains("10.96.0.10"),
            "the cluster DNS answered: {out}"
        );
        assert!(
            out.contains("svc-destination.default.svc.cluster.local"),
            "{out}"
        );
    }
}
