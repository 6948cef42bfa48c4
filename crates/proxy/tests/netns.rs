//! The proxy against the real kernel, inside network namespaces this test makes (and deletes
//! on drop): a "node" with the `berth0` bridge, three "pods" on it running TCP and UDP echo
//! servers that answer with their own IP, and an "outside" host on a veth to the node.
//! Traffic goes only to addresses inside these namespaces.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_proxy::ruleset::Op;
use berth_proxy::{Apply, Netlink, Node, Ruleset, desired, diff};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{CloneFlags, setns};
use serde_json::json;

const MARK: u32 = 1 << 14;

/// Named namespaces, deleted on drop even when the test panics.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("test step");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("test step");
    setns(&f, CloneFlags::CLONE_NEWNET).expect("test step");
}

/// Runs `f` on a fresh thread inside `ns` and waits for it.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("test step")
}

/// A pod's servers: TCP on 8080 and UDP on 8081, both answering with `me`.
fn serve(ns: &str, me: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_ = ns.to_owned();
    let tx2 = tx.clone();
    thread::spawn(move || {
        enter(&ns_);
        let l = TcpListener::bind("0.0.0.0:8080").expect("test step");
        tx.send(()).expect("test step");
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = std::io::Write::write_all(&mut s, me.as_bytes());
        }
    });
    let ns_ = ns.to_owned();
    thread::spawn(move || {
        enter(&ns_);
        let u = UdpSocket::bind("0.0.0.0:8081").expect("test step");
        tx2.send(()).expect("test step");
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(me.as_bytes(), from);
        }
    });
    rx.recv().expect("test step");
    rx.recv().expect("test step");
    // More ports, so that one Service can have more endpoints than the small maps take.
    for port in BIG_PORTS {
        let ns_ = ns.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            enter(&ns_);
            let l = TcpListener::bind(("0.0.0.0", port)).expect("test step");
            tx.send(()).expect("test step");
            for mut s in l.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut s, me.as_bytes());
            }
        });
        rx.recv().expect("test step");
    }
}

const BIG_PORTS: std::ops::Range<u16> = 9000..9007;

fn tcp_ask(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("test step");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Who answers `n` connections to `addr` from inside `ns`.
fn answers(ns: &str, addr: &'static str, n: usize, stop_when_all: usize) -> BTreeSet<String> {
    in_ns(ns, move || {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            seen.insert(tcp_ask(addr).expect("test step"));
            if seen.len() == stop_when_all {
                break;
            }
        }
        seen
    })
}

fn service(name: &str, ip: &str, port: i32, proto: &str, node_port: Option<i32>) -> Service {
    let mut p = json!({"name": "p", "port": port, "protocol": proto, "targetPort": "p"});
    let mut ty = "ClusterIP";
    if let Some(np) = node_port {
        p["nodePort"] = json!(np);
        ty = "NodePort";
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"type": ty, "clusterIP": ip, "ports": [p]},
    }))
    .expect("test step")
}

fn slice(svc: &str, port: i32, proto: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": svc,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": proto}],
        "endpoints": eps,
    }))
    .expect("test step")
}

/// 21 endpoints (3 pods x 7 ports, a slice per port as the EndpointSlice controller makes
/// for differing target ports): more than the small maps take, so "big" gets a chain.
fn big_slices() -> Vec<EndpointSlice> {
    BIG_PORTS
        .map(|p| slice("big", i32::from(p), "TCP", &PODS))
        .collect()
}

const PODS: [&str; 3] = ["10.244.0.11", "10.244.0.12", "10.244.0.13"];

fn world(web_pods: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut slices = big_slices();
    slices.extend([
        slice("web", 8080, "TCP", web_pods),
        slice("dns", 8081, "UDP", &PODS),
        slice("empty", 8080, "TCP", &[]),
    ]);
    (
        vec![
            service("web", "10.96.0.50", 80, "TCP", Some(30080)),
            service("dns", "10.96.0.51", 53, "UDP", None),
            service("empty", "10.96.0.52", 80, "TCP", Some(30081)),
            service("big", "10.96.0.53", 80, "TCP", None),
        ],
        slices,
    )
}

/// Reads the kernel, diffs against what `world` calls for, applies; returns the ops.
fn sync(node: &str, web_pods: &'static [&'static str]) -> (Vec<Op>, Ruleset) {
    in_ns(node, move || {
        let mut nl = Netlink::open(MARK).expect("test step");
        let current = nl.read().expect("test step");
        let (svcs, slices) = world(web_pods);
        let want = desired(&svcs, &slices, &Node::default(), &current);
        let ops = diff(&current, &want);
        nl.apply(&ops).expect("test step");
        (ops, want)
    })
}

fn setup(ns: &mut Namespaces) -> (String, Vec<String>, String) {
    let base = format!("berth-pxt-{}", std::process::id());
    let node = ns.add(format!("{base}-node"));
    let n = node.as_str();
    ip(&["-n", n, "link", "set", "lo", "up"]);
    ip(&["-n", n, "link", "add", "berth0", "type", "bridge"]);
    ip(&["-n", n, "addr", "add", "10.244.0.1/24", "dev", "berth0"]);
    ip(&["-n", n, "link", "set", "berth0", "up"]);
    ip(&["-n", n, "route", "add", "10.96.0.0/12", "dev", "berth0"]);
    in_ns(n, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("test step")
    });
    let mut pods = Vec::new();
    for (i, pod_ip) in PODS.iter().enumerate() {
        let pod = ns.add(format!("{base}-p{i}"));
        let veth = format!("vp{i}");
        ip(&[
            "-n", n, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ]);
        ip(&["-n", n, "link", "set", &veth, "master", "berth0", "up"]);
        // As kubelet's hairpin-veth mode: a pod reaching itself through a Service is DNATed
        // back out of the bridge port it came in on.
        ip(&[
            "-n",
            n,
            "link",
            "set",
            &veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ]);
        ip(&["-n", &pod, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &pod,
            "addr",
            "add",
            &format!("{pod_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &pod, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod, "route", "add", "default", "via", "10.244.0.1"]);
        serve(&pod, pod_ip);
        pods.push(pod);
    }
    let out = ns.add(format!("{base}-out"));
    ip(&[
        "-n", n, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", &out,
    ]);
    ip(&["-n", n, "addr", "add", "192.168.77.1/24", "dev", "vout"]);
    ip(&["-n", n, "link", "set", "vout", "up"]);
    ip(&["-n", &out, "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
    ip(&["-n", &out, "link", "set", "eth0", "up"]);
    let set = in_ns(n, berth_proxy::sysctl::enable_bridge_netfilter).expect("test step");
    assert!(set);
    (node, pods, out)
}

fn nft_list(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "berth"])
        .output()
        .expect("test step");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn services_through_the_kernel() {
    let mut ns = Namespaces { names: Vec::new() };
    let (node, pods, outside) = setup(&mut ns);
    let all: BTreeSet<String> = PODS.iter().map(|s| s.to_string()).collect();

    let (ops, want) = sync(&node, &PODS);
    assert!(!ops.is_empty());
    println!("{}", nft_list(&node));

    // Read back: the kernel holds exactly what was applied, so a restart changes nothing.
    let back = in_ns(&node, || {
        Netlink::open(MARK)
            .expect("test step")
            .read()
            .expect("test step")
    });
    assert_eq!(back, want);
    let (ops, _) = sync(&node, &PODS);
    assert!(ops.is_empty(), "{ops:?}");

    // ClusterIP from a pod (one of the three answers is itself: hairpin) and from the node.
    assert_eq!(answers(&pods[0], "10.96.0.50:80", 100, 3), all);
    assert_eq!(answers(&node, "10.96.0.50:80", 100, 3), all);
    // A Service with more endpoints than the small maps take has a chain of its own.
    assert!(
        want.chains.values().any(|c| c.endpoints == 21),
        "{:?}",
        want.chains
    );
    assert_eq!(answers(&pods[1], "10.96.0.53:80", 100, 3), all);

    // UDP through a ClusterIP.
    let got = in_ns(&pods[1], || {
        let u = UdpSocket::bind("0.0.0.0:0").expect("test step");
        u.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("test step");
        u.send_to(b"hi", "10.96.0.51:53").expect("test step");
        let mut buf = [0u8; 64];
        let (n, from) = u.recv_from(&mut buf).expect("test step");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    assert!(all.contains(&got.0), "{got:?}");
    assert_eq!(
        got.1,
        "10.96.0.51:53".parse::<SocketAddr>().expect("test step")
    );

    // No endpoints: refused at once, from a pod, from the node, and on the NodePort.
    for (from, addr) in [
        (pods[0].clone(), "10.96.0.52:80"),
        (node.clone(), "10.96.0.52:80"),
        (outside.clone(), "192.168.77.1:30081"),
    ] {
        let (err, took) = in_ns(&from, move || {
            let t = Instant::now();
            (tcp_ask(addr).map_err(|e| e.kind()), t.elapsed())
        });
        assert_eq!(err, Err(ErrorKind::ConnectionRefused), "{addr} from {from}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // NodePort on the node's address from outside (masqueraded: the outside has no route
    // to the pods).
    assert_eq!(answers(&outside, "192.168.77.1:30080", 100, 3), all);

    // One endpoint fewer: only elements change (the ClusterIP and the NodePort move from
    // the 3-endpoint maps to the 2-endpoint ones, with their endpoints).
    let (ops, _) = sync(&node, &PODS[..2]);
    assert!(
        ops.iter()
            .all(|op| matches!(op, Op::AddElem(_) | Op::DelElem(_))),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 2 * (2 + 3 + 2), "{ops:?}");
    let two: BTreeSet<String> = PODS[..2].iter().map(|s| s.to_string()).collect();
    assert_eq!(answers(&pods[0], "10.96.0.50:80", 40, 3), two);

    // Cleanup removes the table.
    let deleted = in_ns(&node, || {
        Netlink::open(MARK)
            .expect("test step")
            .delete_table()
            .expect("test step")
    });
    assert!(deleted);
    assert!(
        nft_list(&node).contains("No such file"),
        "{}",
        nft_list(&node)
    );
}
