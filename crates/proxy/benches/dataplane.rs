//! The Services of the shared data-plane benchmark's topology, programmed as `berth proxy`'s full
//! sync does (`desired` + `diff` + one netlink batch): the test Service `default/test`
//! (ClusterIP 10.96.0.10, ports 80 and 5201, endpoints 10.244.0.3-7, pod B's addresses) and N
//! synthetic Services x 5 endpoints numbered as `gen_kube_proxy_rules.py` numbers them (N from
//! `BERTH_BENCH_SERVICES`, default 10,000). `--here` programs the calling network namespace
//! (refused in the root one) and exits leaving the table, for `scripts/bench-dataplane.sh`;
//! plain `cargo bench -p berth-proxy --bench dataplane` does it in a namespace of its own,
//! checks the kernel holds it and deletes the namespace.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Instant;

use berth_proxy::{Apply, Netlink, Node, Ruleset, desired, diff};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

/// The test Service's ClusterIP and endpoints (pod B in `netns_topology.sh`).
const TEST_CLUSTER_IP: &str = "10.96.0.10";
const TEST_ENDPOINTS: [&str; 5] = [
    "10.244.0.3",
    "10.244.0.4",
    "10.244.0.5",
    "10.244.0.6",
    "10.244.0.7",
];

fn service(ns: &str, name: &str, ip: &str, ports: &[(&str, u16)]) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": ip, "ports": ports},
    }))
    .expect("service")
}

fn slice(ns: &str, name: &str, ips: &[String], ports: &[(&str, u16)]) -> EndpointSlice {
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{name}-1"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("slice")
}

/// The objects: the test Service first, then synthetic Service `i` with ClusterIP
/// 10.96.1.0 + i and endpoints 10.244.1.0 + 5i .. + 4 on port 8080 (as the generator).
fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let test_ports = [("http", 80), ("iperf", 5201)];
    let test_ips: Vec<String> = TEST_ENDPOINTS.iter().map(|s| (*s).to_owned()).collect();
    let mut services = vec![service("default", "test", TEST_CLUSTER_IP, &test_ports)];
    let mut slices = vec![slice("default", "test", &test_ips, &test_ports)];
    let svc_base = u32::from(Ipv4Addr::new(10, 96, 1, 0));
    let pod_base = u32::from(Ipv4Addr::new(10, 244, 1, 0));
    for i in 0..n as u32 {
        let (ns, name) = (format!("ns-{}", i % 100), format!("svc-{i}"));
        let ip = Ipv4Addr::from(svc_base + i).to_string();
        let eps: Vec<String> = (0..5)
            .map(|j| Ipv4Addr::from(pod_base + i * 5 + j).to_string())
            .collect();
        services.push(service(&ns, &name, &ip, &[("http", 80)]));
        slices.push(slice(&ns, &name, &eps, &[("http", 8080)]));
    }
    (services, slices)
}

/// Programs the calling thread's namespace; returns the ruleset applied.
fn program(n: usize) -> Ruleset {
    let (services, slices) = objects(n);
    let mut nl = Netlink::open(1 << 14).expect("netlink");
    let t = Instant::now();
    let current = nl.read().expect("read");
    let want = desired(&services, &slices, &Node::default(), &current);
    let ops = diff(&current, &want);
    nl.apply(&ops).expect("apply");
    println!(
        "BENCH programmed table ip berth: {} Services x 5 endpoints + the test Service, {} ops in {:.1} ms",
        n,
        ops.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    want
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if std::env::args().any(|a| a == "--here") {
        assert!(
            !berth_proxy::sysctl::in_root_netns(),
            "--here programs the calling network namespace; never the root one"
        );
        program(n);
        return;
    }
    let ns = Netns(format!("berth-pxd-bench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip netns add");
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).expect("netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        let want = program(n);
        let back = Netlink::open(1 << 14)
            .expect("netlink")
            .read()
            .expect("read");
        assert_eq!(back, want, "the kernel holds what was applied");
    })
    .join()
    .expect("bench thread");
}
