//! The default single node, as a user starts it: `berth server` with no node flags, inside a
//! namespace that plays the machine. Everything is reached from that "host" (ClusterIP, pod
//! IP, LoadBalancer IP, node port, the cluster DNS), the README's walk runs verbatim, and a
//! stop (clean or `kill -9` then `berth cleanup`) leaves nothing behind.

use std::path::Path;

use berth_testkit::{Cluster, Host, eventually, netns_list};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// What a host netns holds that berth might have made: links, routes, nftables tables.
fn host_state(h: &Host) -> String {
    [
        h.ok(&["ip", "-o", "link"]),
        h.ok(&["ip", "route"]),
        h.ok(&["nft", "list", "tables"]),
    ]
    .concat()
}

/// The PIDs of the containers the node agent started (from its pid files).
fn container_pids(c: &Cluster) -> Vec<u32> {
    let mut out = Vec::new();
    let pods = c.data_dir().join("agent/pods");
    for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "pid")
                && let Some(pid) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            {
                out.push(pid);
            }
        }
    }
    out
}

fn curl(h: &Host, url: &str) -> String {
    let out = h.exec(&["curl", "-s", "-m", "5", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that what the node made is gone: its namespace, the pods' namespaces and
/// processes, and on the host every link but loopback, every route and every table.
fn assert_nothing_left(c: &Cluster, pod_netns: &[String], pids: &[u32]) {
    let h = c.host().expect("single node");
    let namespaces = netns_list();
    assert!(
        !namespaces.iter().any(|n| n == h.node_netns()),
        "node namespace left"
    );
    for ns in pod_netns {
        assert!(!namespaces.contains(ns), "pod namespace {ns} left");
    }
    // After a kill -9 the containers die by their parent-death signal, a moment later.
    eventually("the containers' processes to end", || {
        pids.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .then_some(())
    });
    let state = host_state(h);
    let links: Vec<&str> = state.lines().filter(|l| l.contains(": <")).collect();
    assert!(
        links.len() == 1 && links[0].contains(" lo:"),
        "links left on the host:\n{state}"
    );
    assert!(
        !state.contains("via") && !state.contains("table"),
        "routes or tables left on the host:\n{state}"
    );
}

#[test]
fn the_default_node_is_reachable_from_the_host_and_leaves_nothing() {
    let mut c = Cluster::start_single_node(bin(), &[]);
    let h = c.host().expect("single node");
    let readyz = h.ok(&[
        "curl",
        "-sk",
        "--cert",
        &c.data_dir().join("pki/admin.crt").display().to_string(),
        "--key",
        &c.data_dir().join("pki/admin.key").display().to_string(),
        "https://127.0.0.1:6443/readyz?verbose",
    ]);
    for check in [
        "controllers",
        "node-agent",
        "proxy",
        "dns",
        "ingress",
        "netpol",
    ] {
        assert!(readyz.contains(&format!("[+]{check} ok")), "{readyz}");
    }
    let node_ip = c.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    assert_eq!(node_ip, "10.201.0.2");

    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=traefik/whoami",
        "--replicas=2",
    ]);
    c.ok(&["expose", "deployment", "web", "--port=80"]);
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-lb",
        "--type=LoadBalancer",
        "--port=80",
    ]);
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web-np\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - port: 80\n    nodePort: 30007\n");
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let lb_ip = eventually("a LoadBalancer IP from the default pool", || {
        let ip = c.ok(&[
            "get",
            "svc",
            "web-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.is_empty()).then_some(ip)
    });
    assert!(lb_ip.starts_with("10.201.1."), "{lb_ip}");
    let pod_ip = c.ok(&["get", "pods", "-o", "jsonpath={.items[0].status.podIP}"]);
    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://{pod_ip}/"),
        format!("http://{lb_ip}/"),
        "http://10.201.0.2:30007/".to_owned(),
    ] {
        eventually(&format!("{url} to answer from the host"), || {
            curl(h, &url).contains("Hostname: web-").then_some(())
        });
    }
    let dig = h.ok(&[
        "dig",
        "+short",
        "+time=2",
        "@10.96.0.10",
        "web.default.svc.cluster.local",
    ]);
    assert_eq!(dig.trim(), cluster_ip);
    // The node holds the kube-dns address itself: UDP queries leave no conntrack entry.
    let flows = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            h.node_netns(),
            "conntrack",
            "-L",
            "-p",
            "udp",
            "--dport",
            "53",
        ])
        .output()
        .expect("conntrack");
    let flows = String::from_utf8_lossy(&flows.stdout);
    assert!(!flows.contains("10.96.0.10"), "{flows}");
    // Pods reach the API server through the `kubernetes` Service.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  containers:\n  - name: c\n    image: curlimages/curl\n    command: [\"sleep\", \"600\"]\n");
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    let version = c.ok(&[
        "exec",
        "client",
        "--",
        "curl",
        "-sk",
        "-m",
        "5",
        "https://kubernetes.default.svc.cluster.local/version",
    ]);
    assert!(version.contains("gitVersion"), "{version}");

    // A second server on the same data directory says one is running.
    let second = h
        .command(bin())
        .arg("server")
        .arg(format!("--data-dir={}", c.data_dir().display()))
        .arg("--node-netns=other")
        .output()
        .expect("second berth server");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another berth server"), "{err}");

    let pod_netns = c.pod_netns();
    assert_eq!(pod_netns.len(), 3, "{pod_netns:?}");
    let pids = container_pids(&c);
    assert_eq!(pids.len(), 3, "{pids:?}");
    c.stop();
    assert_nothing_left(&c, &pod_netns, &pids);
}

#[test]
fn berth_cleanup_removes_what_a_killed_server_left() {
    let mut c = Cluster::start_single_node(bin(), &[]);
    c.ok(&["create", "deployment", "web", "--image=traefik/whoami"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pod_netns = c.pod_netns();
    assert_eq!(pod_netns.len(), 1);
    let pids = container_pids(&c);
    c.kill();
    let h = c.host().expect("single node");
    assert!(netns_list().iter().any(|n| n == h.node_netns()));
    let out = c.cleanup_command(h).output().expect("berth cleanup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("removed the sandboxes of 1 pod(s)")
            && text.contains(&format!("removed network namespace {}", h.node_netns())),
        "{text}"
    );
    assert_nothing_left(&c, &pod_netns, &pids);
    // A second cleanup finds nothing.
    let again = c.cleanup_command(h).output().expect("berth cleanup");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing else to remove"));
}

#[test]
fn a_restart_keeps_the_kubeconfig_and_the_pods_ips() {
    let mut c = Cluster::start_single_node(bin(), &[]);
    c.ok(&["create", "namespace", "team"]);
    c.ok(&["config", "set-context", "--current", "--namespace=team"]);
    c.ok(&["create", "deployment", "web", "--image=traefik/whoami"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let ip = c.ok(&["get", "pods", "-o", "jsonpath={.items[0].status.podIP}"]);
    c.restart();
    // Still namespace `team`: the kubeconfig was kept.
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let after = c.ok(&["get", "pods", "-o", "jsonpath={.items[0].status.podIP}"]);
    assert_eq!(ip, after);
    let h = c.host().expect("single node");
    eventually("the pod to answer from the host after the restart", || {
        curl(h, &format!("http://{after}/"))
            .contains("Hostname: web-")
            .then_some(())
    });
}

/// `--keep-pods-on-exit`: a server stopped on purpose leaves its node and pods, and the next
/// start takes the node on instead of making it afresh, so the pod answers on its IP before,
/// between and after, from the same process, never restarted.
#[test]
fn a_restart_keeping_pods_takes_on_the_node_and_its_pods() {
    let mut c = Cluster::start_single_node(bin(), &["--keep-pods-on-exit"]);
    c.ok(&["create", "deployment", "web", "--image=traefik/whoami"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let ip = c.ok(&["get", "pods", "-o", "jsonpath={.items[0].status.podIP}"]);
    let h = c.host().expect("single node");
    let answers = |h: &Host| curl(h, &format!("http://{ip}/")).contains("Hostname: web-");
    eventually("the pod to answer from the host", || {
        answers(h).then_some(())
    });
    let pids = container_pids(&c);
    assert!(!pids.is_empty());
    let started = |pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let before: Vec<Option<String>> = pids.iter().map(started).collect();
    c.stop_leaving_pods();
    let h = c.host().expect("single node");
    assert!(answers(h), "the pod answers while no server runs");
    let routes = |h: &Host| String::from_utf8_lossy(&h.exec(&["ip", "route"]).stdout).into_owned();
    assert!(routes(h).contains("10.201.1.0/24"), "{}", routes(h));
    // Another LoadBalancer pool this time: the old pool's host route goes, the new one comes.
    c.start_again_with(&["--lb-pool=10.201.7.0/24"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let h = c.host().expect("single node");
    assert!(answers(h), "the pod answers after the restart");
    let now = routes(h);
    assert!(
        now.contains("10.201.7.0/24") && !now.contains("10.201.1.0/24"),
        "{now}"
    );
    let after: Vec<Option<String>> = pids.iter().map(started).collect();
    // Field 22 (start time) and the PID: the same processes.
    let start_of = |s: &Option<String>| {
        s.as_ref()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().nth(19)?.to_owned()))
    };
    assert_eq!(
        before.iter().map(start_of).collect::<Vec<_>>(),
        after.iter().map(start_of).collect::<Vec<_>>(),
        "the same containers run"
    );
    assert!(after.iter().all(Option::is_some));
    assert_eq!(container_pids(&c), pids);
    assert_eq!(
        c.ok(&[
            "get",
            "pods",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].restartCount}"
        ]),
        "0"
    );
}

/// The README's "Five minutes with berth" block, run as written from a folder holding the
/// server's kubeconfig as `berth.kubeconfig` (what `scripts/run.sh` writes).
#[test]
fn the_readme_walk_runs_verbatim() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let marker = "<!-- walk:";
    let block = readme
        .split_once(marker)
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_owned())
        .expect("the README's walk block");
    let c = Cluster::start_single_node(bin(), &[]);
    let h = c.host().expect("single node");
    let cwd = c.dir().join("walk");
    std::fs::create_dir_all(&cwd).expect("walk dir");
    std::fs::copy(&c.kubeconfig, cwd.join("berth.kubeconfig")).expect("kubeconfig");
    let out = h
        .command("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(&cwd)
        .env("HOME", c.dir())
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walk failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Both curls reached a pod; dig answered the ClusterIP; the Endpoints list 3 pods.
    assert_eq!(stdout.matches("Hostname: web-").count(), 2, "{stdout}");
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(stdout.lines().any(|l| l == cluster_ip), "{stdout}");
    let endpoints = stdout.lines().last().unwrap_or_default();
    assert_eq!(endpoints.matches(":80").count(), 3, "{stdout}");
}

/// Without root the node cannot be made: berth says why and how to run without it.
#[test]
fn without_root_berth_says_how_to_run_without_a_node() {
    let host = Host::new();
    let dir = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    // nobody owns the data dir, so the failure is the node's, not the directory's.
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).expect("chown");
    let out = host
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .arg("server")
        .arg(format!("--data-dir={}", data.display()))
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("need root") && err.contains("--no-node"),
        "{err}"
    );
}
