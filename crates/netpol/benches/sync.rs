//! Sync figures for the NetworkPolicy table, in a network namespace of its own (deleted at
//! the end): N pods (`BERTH_BENCH_PODS`, default 1,000) in 20 namespaces under 100 policies,
//! the first full write, then 200 changes (a pod relabelled, a pod replaced by a new one, a
//! policy edited), each computed from scratch (`desired` + `diff`) and applied as the loop
//! does, with the time from change to kernel. Run with `cargo bench -p berth-netpol --bench
//! sync`; it prints, it asserts only that every step applies.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_netpol::{Netlink, Ruleset, Scope, desired, diff};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use nix::sched::{CloneFlags, setns};
use serde_json::json;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const NAMESPACES: usize = 20;

fn pod(i: usize, generation: usize, app: usize) -> Pod {
    let n = i + generation * 7919;
    let ip = Ipv4Addr::new(
        10,
        128 + (n / 65536 % 64) as u8,
        (n / 256 % 256) as u8,
        (n % 256) as u8,
    );
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns{}", i % NAMESPACES), "name": format!("p{i}"),
                     "labels": {"app": format!("app{app}"), "tier": if i.is_multiple_of(3) { "db" } else { "web" }}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string()},
    }))
    .expect("pod")
}

fn namespace(i: usize) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": format!("ns{i}"),
                                               "labels": {"team": format!("t{}", i % 4)}}}))
    .expect("namespace")
}

/// Policy `i` of five kinds: deny all, from pods of an app, from a team's namespaces on the
/// named port, from an address block but one /24, egress to a tier plus DNS.
fn policy(i: usize, variant: usize) -> NetworkPolicy {
    let ns = format!("ns{}", i % NAMESPACES);
    let app = json!({"matchLabels": {"app": format!("app{}", (i + variant) % 10)}});
    let spec = match i % 5 {
        0 => json!({"podSelector": {}}),
        1 => {
            json!({"podSelector": app, "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}]}]})
        }
        2 => {
            json!({"podSelector": app, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}],
                                                      "ports": [{"port": "http"}]}]})
        }
        3 => json!({"podSelector": app, "ingress": [{"from": [{"ipBlock": {"cidr": "10.128.0.0/16",
                                                                            "except": [format!("10.128.{variant}.0/24")]}}]}]}),
        _ => json!({"podSelector": app, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"port": 5432, "endPort": 5440}]},
                               {"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    };
    serde_json::from_value(
        json!({"metadata": {"namespace": ns, "name": format!("np{i}")}, "spec": spec}),
    )
    .expect("policy")
}

fn in_netns(path: &str, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(path).expect("netns");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f();
        })
        .join()
        .expect("thread");
    })
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let pods_n: usize = std::env::var("BERTH_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let ns = Netns(format!("berth-npbench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip netns add (needs root)");
    let path = format!("/run/netns/{}", ns.0);

    // All on one thread inside the namespace with one socket, as the enforcer's loop runs.
    in_netns(&path, || run(pods_n));
}

fn run(pods_n: usize) {
    let namespaces: Vec<Namespace> = (0..NAMESPACES).map(namespace).collect();
    let mut pods: Vec<Pod> = (0..pods_n).map(|i| pod(i, 0, i % 10)).collect();
    let mut policies: Vec<NetworkPolicy> = (0..100).map(|i| policy(i, 0)).collect();
    let scope = Scope::default();
    let mut nl = Netlink::open().expect("netlink");

    let start = Instant::now();
    let mut current = desired(&policies, &pods, &namespaces, &scope);
    let computed = start.elapsed();
    nl.replace(&current).expect("first write");
    let elems: usize = current.sets.values().map(|s| s.elems.len()).sum();
    println!(
        "{pods_n} pods, {} policies: desired {computed:?}, first write {:?} ({} chains, {} sets, {elems} elements)",
        policies.len(),
        start.elapsed(),
        current.chains.len(),
        current.sets.len()
    );

    let mut compute = Vec::new();
    let mut commit = Vec::new();
    let mut total = Vec::new();
    let mut ops_n = Vec::new();
    for step in 1..=200usize {
        let i = step * 37 % pods_n;
        match step % 3 {
            0 => pods[i] = pod(i, 0, (step * 7) % 10),
            1 => pods[i] = pod(i, step, i % 10),
            _ => policies[step % 100] = policy(step % 100, step),
        }
        let start = Instant::now();
        let want: Ruleset = desired(&policies, &pods, &namespaces, &scope);
        let ops = diff(&current, &want);
        compute.push(start.elapsed());
        let t = Instant::now();
        match &ops {
            Some(ops) if ops.is_empty() => {}
            Some(ops) => nl.update(ops).expect("update"),
            None => nl.replace(&want).expect("replace"),
        }
        commit.push(t.elapsed());
        total.push(start.elapsed());
        ops_n.push(ops.map_or(usize::MAX, |o| o.len()));
        current = want;
    }
    println!(
        "one change: desired+diff p50 {:?} p99 {:?}; the transaction p50 {:?} p99 {:?}; change to kernel p50 {:?} p99 {:?}; ops per change max {}",
        percentile(compute.clone(), 0.5),
        percentile(compute, 0.99),
        percentile(commit.clone(), 0.5),
        percentile(commit, 0.99),
        percentile(total.clone(), 0.5),
        percentile(total, 0.99),
        ops_n.iter().max().copied().unwrap_or(0)
    );
}
