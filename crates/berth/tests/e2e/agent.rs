//! The node agent, inside `berth server --node` and as `berth agent` on its own: the whole
//! cluster runs in a throwaway node netns and kubectl talks to it from an "outside" netns; pods
//! become processes with their own network namespace and IP on the node bridge.

use berth_testkit::{Cluster, eventually};

fn running_ip(c: &Cluster, pod: &str) -> String {
    eventually(&format!("{pod} to run"), || {
        let out = c.ok(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ]);
        out.strip_prefix("Running ")
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned)
    })
}

fn http_get(c: &Cluster, url: &str) -> Option<String> {
    let node = c.node()?;
    let out = node.exec(&["curl", "-s", "--max-time", "2", url]);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    body.contains("HTTP/1.1").then_some(body)
}

#[test]
fn pods_run_as_processes_with_their_own_ip() {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c.ok(&["run", "web", "--image=berth/whoami", "--port=8080"]);
    c.ok(&["run", "web2", "--image=traefik/whoami", "--port=8080"]);
    let (a, b) = (running_ip(&c, "web"), running_ip(&c, "web2"));
    assert_ne!(a, b);
    assert!(
        a.starts_with("10.244.0.") && b.starts_with("10.244.0."),
        "{a} {b}"
    );
    // Both listen on :8080, each in its own namespace.
    for ip in [&a, &b] {
        let body = eventually(&format!("whoami on {ip}"), || {
            http_get(&c, &format!("http://{ip}:8080/"))
        });
        assert!(body.contains(&format!("IP: {ip}")), "{body}");
    }
    let body = http_get(&c, &format!("http://{a}:8080/")).unwrap_or_default();
    assert!(
        body.contains("Hostname: web\n"),
        "the pod's name is its hostname: {body}"
    );
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains(&a) && wide.contains("node-1"), "{wide}");
    assert_eq!(c.pod_netns().len(), 2);
    let netns_files = |ns: &str| std::path::Path::new("/etc/netns").join(ns).exists();
    assert!(c.pod_netns().iter().all(|ns| netns_files(ns)));
    // The environment, DNS configuration and hostname a container sees.
    c.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ]);
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"env; cat /etc/resolv.conf /etc/hosts; hostname; umask; sleep 600\"]\n    env:\n    - name: GREETING\n      value: hello\n    - name: MODE\n      valueFrom:\n        configMapKeyRef:\n          name: settings\n          key: mode\n    - name: MY_IP\n      valueFrom:\n        fieldRef:\n          fieldPath: status.podIP\n");
    running_ip(&c, "shell");
    let uid = c.ok(&["get", "pod", "shell", "-o", "jsonpath={.metadata.uid}"]);
    let log = c.dir().join(format!("data/agent/pods/{uid}/c.log"));
    let out = eventually("the shell pod's output", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("\nshell\n").then_some(text)
    });
    // The agent's files are private; the container gets the usual umask.
    assert!(out.contains("\n0022\n"), "umask in the container:\n{out}");
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(log.parent().expect("pod dir")), 0o700);
    assert_eq!(mode(&c.dir().join("data/agent")), 0o700);
    assert_eq!(mode(&c.dir().join("data/agent/ipam.json")), 0o600);
    // The kubelet's labels, with Go's architecture names.
    let arch = c.ok(&[
        "get",
        "node",
        "node-1",
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/arch}",
    ]);
    assert!(["amd64", "arm64"].contains(&arch.as_str()), "{arch}");
    for want in [
        "GREETING=hello",
        "MODE=fast",
        "MY_IP=10.244.0.",
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_PORT_443_TCP_PORT=443",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
        "\tshell\n",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    // Pod to pod by IP: a container of one pod reaches the other.
    let body = c.ok(&[
        "exec",
        "shell",
        "--",
        "curl",
        "-s",
        "--max-time",
        "2",
        &format!("http://{b}:8080/"),
    ]);
    assert!(body.contains("Hostname: web2"), "{body}");
    c.ok(&["delete", "pod", "shell"]);
    // A deleted pod leaves no process, namespace, veth or IP behind.
    let web_uid = c.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let pid_file = c.dir().join(format!("data/agent/pods/{web_uid}/web.pid"));
    let pid = std::fs::read_to_string(&pid_file).expect("web's pid file");
    let links = || {
        let node = c.node().expect("a node cluster");
        String::from_utf8_lossy(&node.exec(&["ip", "-o", "link"]).stdout).into_owned()
    };
    let veth = format!("veth{}", &web_uid.replace('-', "")[..8]);
    assert!(links().contains(&veth), "{}", links());
    c.ok(&["delete", "pod", "web"]);
    eventually("web's namespace to go", || {
        (c.pod_netns().len() == 1).then_some(())
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "web's process is gone"
    );
    assert!(!links().contains(&veth), "{}", links());
    let ipam = std::fs::read_to_string(c.dir().join("data/agent/ipam.json")).unwrap_or_default();
    assert!(
        !ipam.contains(&web_uid) && !ipam.contains(&format!("\"{a}\"")),
        "{ipam}"
    );
    // An image that is neither built in nor given a command is pulled; one no registry
    // serves (here: nothing listens on the port) waits with a reason.
    c.ok(&["run", "nope", "--image=127.0.0.1:9/unknown:1"]);
    eventually("nope to wait with ErrImagePull", || {
        let r = c.ok(&[
            "get",
            "pod",
            "nope",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ]);
        (r == "ErrImagePull").then_some(())
    });
}

/// `berth agent` as its own process beside a `berth server` without `--node`, both in the
/// node netns: it registers the node, runs a pod, and on SIGTERM stops it and removes its
/// namespace.
#[test]
fn standalone_agent_runs_pods_and_stops_them_on_sigterm() {
    let c = Cluster::start_on_node_without_agent(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        &[],
    );
    assert!(
        !c.ok(&["get", "nodes"]).contains("node-1"),
        "no agent runs inside the server"
    );
    let mut agent = c.start_agent(&[]);
    c.wait_node_ready();
    c.ok(&["run", "web", "--image=berth/whoami", "--port=8080"]);
    let ip = running_ip(&c, "web");
    assert!(ip.starts_with("10.244.0."), "{ip}");
    let body = eventually(&format!("whoami on {ip}"), || {
        http_get(&c, &format!("http://{ip}:8080/"))
    });
    assert!(body.contains(&format!("IP: {ip}")), "{body}");
    let netns = c.pod_netns();
    assert_eq!(netns.len(), 1, "{netns:?}");
    let status = agent.terminate(std::time::Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent exits cleanly on SIGTERM: {status:?}\n{}",
        agent.output()
    );
    let left = berth_testkit::netns_list();
    assert!(
        !left.contains(&netns[0]),
        "{} is gone after SIGTERM: {left:?}",
        netns[0]
    );
    assert!(
        !std::path::Path::new("/etc/netns").join(&netns[0]).exists(),
        "its /etc/netns files are gone"
    );
    assert!(
        http_get(&c, &format!("http://{ip}:8080/")).is_none(),
        "the workload is stopped"
    );
}

/// Every pod is isolated from the node and from other pods, host programs or not: its own
/// PID namespace (its init and its command), a private overlay of the node's files (writes
/// stay in the container), empty /root and /tmp, berth's data directory hidden, `HOME`,
/// `workingDir` and /etc/hostname as a container runtime gives them.
#[test]
fn pods_are_isolated_from_the_node_and_each_other() {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    let spec = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    workingDir: /srv/app\n    command: [sh, -c, 'echo home=$HOME; exec sleep 3600']\n"
        )
    };
    c.apply(&spec("iso"));
    c.apply(&spec("other"));
    running_ip(&c, "iso");
    running_ip(&c, "other");
    let sh = |pod: &str, script: &str| c.ok(&["exec", pod, "--", "sh", "-c", script]);
    // PID 1 is the container's init, PID 2 its command; nothing of the node shows.
    assert!(
        sh("iso", "tr '\\0' ' ' < /proc/1/cmdline").contains("container-init --reap"),
        "{}",
        sh("iso", "cat /proc/1/cmdline")
    );
    assert_eq!(sh("iso", "cat /proc/2/comm"), "sleep\n");
    let pids = sh("iso", "ls -d /proc/[0-9]* | wc -l");
    assert!(
        pids.trim().parse::<u32>().is_ok_and(|n| n <= 5),
        "processes seen in the pod: {pids}"
    );
    // Writes to the node's files stay in the container.
    let marker = format!("/etc/berth-isolation-{}", std::process::id());
    assert_eq!(
        sh("iso", &format!("echo pod > {marker} && cat {marker}")),
        "pod\n"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "{marker} on the node"
    );
    assert!(!sh("other", &format!("cat {marker} 2>&1 || true")).contains("pod"));
    // Private directories: an empty /root, a /tmp without the node's files (the test's own
    // directory lies in the node's /tmp; only the berth binary is bound in when it lives
    // there); berth's data directory (the cluster's keys) is hidden.
    assert_eq!(sh("iso", "ls -A /root"), "");
    let test_dir = c.dir().display().to_string();
    if let Some(own) = test_dir.strip_prefix("/tmp/") {
        let tmp = sh("iso", "ls -A /tmp");
        assert!(!tmp.contains(own), "{own} seen in the pod's /tmp: {tmp}");
    }
    let data = c.dir().join("data");
    assert!(data.join("pki/ca.key").exists());
    assert_eq!(sh("iso", &format!("ls -A {} || true", data.display())), "");
    // What a container runtime gives a container.
    assert_eq!(sh("iso", "pwd"), "/srv/app\n");
    assert_eq!(sh("iso", "cat /etc/hostname"), "iso\n");
    let logs = eventually("iso's output", || {
        let out = c.ok(&["logs", "iso"]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(logs, "home=/root\n");
}

/// The `nginx` image behaves as the official one: its own configuration (server blocks in
/// /etc/nginx/conf.d), its welcome page, and its access log on stdout for `kubectl logs`.
#[test]
fn nginx_runs_as_its_image_does() {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c.ok(&["run", "nginx", "--image=nginx", "--port=80"]);
    let ip = running_ip(&c, "nginx");
    let node = c.node().expect("a node cluster");
    let body = eventually("nginx to answer", || {
        let out = node.exec(&["curl", "-s", "--max-time", "2", &format!("http://{ip}/")]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success().then_some(body)
    });
    assert!(body.contains("<title>Welcome to nginx!</title>"), "{body}");
    let logs = eventually("the access log line", || {
        let out = c.ok(&["logs", "nginx"]);
        out.contains("\"GET / HTTP/1.1\" 200").then_some(out)
    });
    assert!(logs.contains("curl/"), "{logs}");
    // The node's nginx files are untouched and unseen.
    assert!(
        !c.ok(&["exec", "nginx", "--", "ls", "/etc/nginx"])
            .contains("sites-enabled")
    );
}
