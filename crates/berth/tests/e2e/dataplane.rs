//! The data plane on one node: Services reached through the proxy's nftables table (from pods,
//! from the node, from outside it) and by name through the cluster DNS, with the real kubectl
//! driving a whole cluster in a throwaway node netns.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_testkit::{Cluster, eventually};

fn start() -> Cluster {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c
}

/// A Deployment of `replicas` whoami pods on :8080 behind a Service on port 80 (named `http`).
fn whoami(c: &Cluster, name: &str, replicas: usize) -> String {
    c.ok(&[
        "create",
        "deployment",
        name,
        "--image=berth/whoami",
        &format!("--replicas={replicas}"),
        "--port=8080",
    ]);
    c.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    ));
    eventually(&format!("{replicas} ready endpoints of {name}"), || {
        let ips = c.ok(&[
            "get",
            "endpoints",
            name,
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        (ips.split_whitespace().count() == replicas).then_some(())
    });
    c.ok(&["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"])
}

/// A pod to run clients in (the host's programs, in the pod's network namespace).
fn client_pod(c: &Cluster) {
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"600\"]\n");
    eventually("the client pod to run", || {
        let phase = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
}

/// Runs `script` with sh inside the client pod; its stdout.
fn in_pod(c: &Cluster, script: &str) -> String {
    let out = c.kubectl(&["exec", "client", "--", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whoami hostnames `n` requests to `url` reached.
fn hostnames(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Hostname: "))
        .map(str::to_owned)
        .collect()
}

fn curl_loop(url: &str, n: usize) -> String {
    format!("for i in $(seq {n}); do curl -s --max-time 2 {url}; done")
}

#[test]
fn cluster_ips_and_node_ports_balance_over_ready_pods() {
    let c = start();
    let ip = whoami(&c, "web", 3);
    assert!(ip.starts_with("10.96."), "{ip}");
    client_pod(&c);
    // From a pod: all three pods answer within a bounded number of requests.
    let seen = eventually("all three pods behind the ClusterIP", || {
        let seen = hostnames(&in_pod(&c, &curl_loop(&format!("http://{ip}/"), 40)));
        (seen.len() == 3).then_some(seen)
    });
    assert!(seen.iter().all(|h| h.starts_with("web-")), "{seen:?}");
    // From the node itself.
    let node = c.node().expect("a node cluster");
    let out = node.exec(&["curl", "-s", "--max-time", "2", &format!("http://{ip}/")]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Hostname: web-"),
        "{out:?}"
    );
    // A Service without ready endpoints refuses at once instead of timing out.
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: nobody\nspec:\n  selector:\n    app: nobody\n  ports:\n  - port: 80\n");
    let nobody = c.ok(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    eventually("nobody's ClusterIP to refuse", || {
        let t = Instant::now();
        let out = node.exec(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{nobody}/"),
        ]);
        // curl's exit code 7: could not connect (refused), not 28 (timed out).
        (out.status.code() == Some(7) && t.elapsed() < Duration::from_secs(2)).then_some(())
    });
    // NodePort, from the "outside" machine, on the node's address.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-np",
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ]);
    let port = c.ok(&[
        "get",
        "svc",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let url = format!("http://192.168.231.1:{port}/");
    eventually("the NodePort from outside", || {
        let out = node.outside_exec(&["curl", "-s", "--max-time", "2", &url]);
        String::from_utf8_lossy(&out.stdout)
            .contains("Hostname: web-")
            .then_some(())
    });
    // Scaled down to one pod: the others get no more traffic.
    c.ok(&["scale", "deployment", "web", "--replicas=1"]);
    eventually("one pod behind the ClusterIP", || {
        let seen = hostnames(&in_pod(&c, &curl_loop(&format!("http://{ip}/"), 10)));
        (seen.len() == 1).then_some(())
    });
}

#[test]
fn services_are_found_by_name_through_the_cluster_dns() {
    let c = start();
    let ip = whoami(&c, "web", 2);
    client_pod(&c);
    // The kube-dns Service fronts the DNS server at the address in every pod's resolv.conf.
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.96.0.10"
    );
    // The resolver's search list and ndots:5, as every program in a pod uses them.
    let resolved = eventually("web to resolve from the pod", || {
        let out = in_pod(&c, "getent hosts web");
        out.split_whitespace().next().map(str::to_owned)
    });
    assert_eq!(resolved, ip);
    let fqdn = in_pod(&c, "dig +short web.default.svc.cluster.local");
    assert_eq!(fqdn.trim(), ip);
    let srv = in_pod(
        &c,
        "dig +short SRV _http._tcp.web.default.svc.cluster.local",
    );
    assert!(
        srv.trim().ends_with("80 web.default.svc.cluster.local."),
        "{srv}"
    );
    let missing = in_pod(&c, "dig nope.default.svc.cluster.local | grep status:");
    assert!(missing.contains("NXDOMAIN"), "{missing}");
    // The tutorials' way: curl a Service by its name.
    let body = in_pod(&c, "curl -s --max-time 2 http://web/");
    assert!(body.contains("Hostname: web-"), "{body}");
    // Over TCP too (through the proxy's TCP rule to the same server).
    let tcp = in_pod(&c, "dig +tcp +short web.default.svc.cluster.local");
    assert_eq!(tcp.trim(), ip);
}
