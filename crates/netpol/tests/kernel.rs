//! The enforcer's table against the real kernel, inside network namespaces this test makes
//! (deleted on drop): a "node" with bridge `berth0` (br_netfilter on) and three "pods" on it
//! serving TCP and UDP on port 80. Tables are written by full replacement and by diffs, and
//! probed with real connections; traffic goes only to addresses inside these namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_netpol::{Netlink, Ruleset, Scope, desired, diff};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

/// Named namespaces, deleted on drop even when the test panics.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    thread::spawn(move || {
        let f_ns = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
        setns(&f_ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread")
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 11 + i as u8)
}

/// TCP and UDP servers on port 80 in `ns`, answering with "ok".
fn serve(ns: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_owned();
    thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        let tcp = TcpListener::bind("0.0.0.0:80").expect("bind tcp");
        let udp = UdpSocket::bind("0.0.0.0:80").expect("bind udp");
        tx.send(()).expect("ready");
        thread::spawn(move || {
            let mut buf = [0; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(b"ok", from);
            }
        });
        for s in tcp.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"ok");
        }
    });
    rx.recv().expect("server ready");
}

fn setup(names: &mut Namespaces) -> (String, Vec<String>) {
    let base = format!("bnpt-{}", std::process::id());
    let node = format!("{base}-node");
    ip(&["netns", "add", &node]);
    names.0.push(node.clone());
    let n = node.as_str();
    ip(&["-n", n, "link", "set", "lo", "up"]);
    ip(&["-n", n, "link", "add", "berth0", "type", "bridge"]);
    ip(&["-n", n, "addr", "add", "10.244.0.1/24", "dev", "berth0"]);
    ip(&["-n", n, "link", "set", "berth0", "up"]);
    let mut pods = Vec::new();
    for i in 0..3 {
        let pod = format!("{base}-p{i}");
        ip(&["netns", "add", &pod]);
        names.0.push(pod.clone());
        let veth = format!("vp{i}");
        ip(&[
            "-n", n, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ]);
        ip(&["-n", n, "link", "set", &veth, "master", "berth0", "up"]);
        ip(&["-n", &pod, "link", "set", "lo", "up"]);
        let addr = format!("{}/24", pod_ip(i));
        ip(&["-n", &pod, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &pod, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod, "route", "add", "default", "via", "10.244.0.1"]);
        serve(&pod);
        pods.push(pod);
    }
    serve(n);
    let set = in_ns(n, berth_proxy::sysctl::enable_bridge_netfilter).expect("sysctl");
    assert!(set, "the node is not the root namespace");
    (node, pods)
}

fn tcp(from: &str, to: Ipv4Addr) -> bool {
    in_ns(from, move || {
        let addr = SocketAddr::from((to, 80));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = String::new();
        s.read_to_string(&mut buf).is_ok() && buf == "ok"
    })
}

fn udp(from: &str, to: Ipv4Addr) -> bool {
    in_ns(from, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        if s.send_to(b"hi", (to, 80)).is_err() {
            return false;
        }
        let mut buf = [0; 8];
        matches!(s.recv_from(&mut buf), Ok((2, _)))
    })
}

fn objects(labels: [&str; 3]) -> (Vec<Pod>, Vec<Namespace>) {
    let pods = (0..3)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"namespace": "x", "name": format!("p{i}"),
                             "labels": {"app": labels[i]}},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"name": "web", "containerPort": 80}]}]},
                "status": {"phase": "Running", "podIP": pod_ip(i).to_string()},
            }))
            .expect("pod")
        })
        .collect();
    let ns = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("ns");
    (pods, vec![ns])
}

fn policy(name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": "x", "name": name}, "spec": spec}))
        .expect("policy")
}

/// Writes `want` into the node by a diff from `current` (or a replacement), as `run` does.
fn write(node: &str, current: Option<Ruleset>, want: &Ruleset) {
    let want = want.clone();
    in_ns(node, move || {
        let mut nl = Netlink::open().expect("netlink");
        match current.as_ref().and_then(|c| diff(c, &want)) {
            Some(ops) => nl.update(&ops).expect("update"),
            None => nl.replace(&want).expect("replace"),
        }
    });
}

/// `nft list table ip berth-netpol` inside the node, its sets and chains sorted (nft lists
/// them in creation order).
fn listing(node: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            node,
            "nft",
            "list",
            "table",
            "ip",
            "berth-netpol",
        ])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let body = text
        .trim()
        .strip_prefix("table ip berth-netpol {")
        .and_then(|t| t.strip_suffix('}'))
        .expect("one table");
    let mut blocks: Vec<String> = body.split("\n\n").map(|b| b.trim().to_owned()).collect();
    blocks.sort();
    blocks
}

#[test]
fn policies_are_enforced_by_the_kernel_after_replacements_and_diffs() {
    let mut names = Namespaces(Vec::new());
    let (node, pods) = setup(&mut names);
    let (p0, p1, p2) = (&pods[0], &pods[1], &pods[2]);
    let (objs, nss) = objects(["a", "b", "c"]);
    let node_ip: Ipv4Addr = "10.244.0.1".parse().expect("ip");
    for (from, to) in [(p1, 0), (p0, 1), (p2, 0)] {
        assert!(tcp(from, pod_ip(to)) && udp(from, pod_ip(to)));
    }
    assert!(tcp(p2, node_ip));

    // p0 accepts nothing (but still reaches others, whose replies come back), and the node
    // itself still reaches it.
    let deny = policy(
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "a"}}}),
    );
    let t1 = desired([&deny], &objs, &nss, &Scope::default());
    write(&node, None, &t1);
    assert!(!tcp(p1, pod_ip(0)) && !udp(p1, pod_ip(0)));
    assert!(tcp(p0, pod_ip(1)) && udp(p0, pod_ip(1)));
    assert!(tcp(&node, pod_ip(0)) && udp(&node, pod_ip(0)));

    // Then p0 accepts p1 on TCP by the port's name, and p2 sends only to p1 (a diff).
    let allow = policy(
        "allow",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                            "ports": [{"port": "web"}]}]}),
    );
    let egress = policy(
        "egress",
        json!({"podSelector": {"matchLabels": {"app": "c"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.8/29",
                                               "except": ["10.244.0.11/32"]}}]}]}),
    );
    let t2 = desired([&deny, &allow, &egress], &objs, &nss, &Scope::default());
    write(&node, Some(t1), &t2);
    assert!(tcp(p1, pod_ip(0)));
    assert!(!udp(p1, pod_ip(0)));
    assert!(!tcp(p2, pod_ip(0)));
    assert!(tcp(p2, pod_ip(1)) && udp(p2, pod_ip(1)));
    assert!(!tcp(p2, node_ip), "egress to the node is filtered too");

    // Relabelled pods change only set elements: p2 becomes "b", p1 "c".
    let (moved, _) = objects(["a", "c", "b"]);
    let t3 = desired([&deny, &allow, &egress], &moved, &nss, &Scope::default());
    let ops = diff(&t2, &t3).expect("incremental");
    assert!(
        ops.iter().all(|op| matches!(
            op,
            berth_netpol::Op::AddElems(..) | berth_netpol::Op::DelElems(..)
        )),
        "{ops:?}"
    );
    write(&node, Some(t2), &t3);
    assert!(tcp(p2, pod_ip(0)) && !tcp(p1, pod_ip(0)));
    assert!(
        tcp(p1, pod_ip(2)) && !tcp(p1, node_ip),
        "p1 is egress-isolated now"
    );

    // What the diffs built is what a fresh table holds.
    let incremental = listing(&node);
    write(&node, None, &t3);
    assert_eq!(listing(&node), incremental);

    // And without policies everything flows again; the table is gone after cleanup.
    let t4 = desired([], &objs, &nss, &Scope::default());
    write(&node, Some(t3), &t4);
    assert!(tcp(p1, pod_ip(0)) && udp(p2, pod_ip(0)));
    assert!(in_ns(&node, berth_netpol::cleanup).expect("cleanup"));
    assert!(!in_ns(&node, berth_netpol::cleanup).expect("cleanup"));
}
