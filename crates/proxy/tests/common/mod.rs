//! Helpers shared by the tests that run the proxy against the kernel: namespaces deleted on
//! drop, a node with the `berth0` bridge and three pods running echo servers, clients.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{CloneFlags, setns};
use serde_json::json;

pub const MARK: u32 = 1 << 14;

/// Named namespaces, deleted on drop even when the test panics.
pub struct Namespaces {
    pub names: Vec<String>,
}

impl Namespaces {
    pub fn add(&mut self, name: String) -> String {
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

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("test step");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("test step");
    setns(&f, CloneFlags::CLONE_NEWNET).expect("test step");
}

/// Runs `f` on a fresh thread inside `ns` and waits for it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("test step")
}

/// A pod's servers: TCP on 8080 and UDP on 8081, both answering with `me`.
pub fn serve(ns: &str, me: &'static str) {
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
    // Port 8090 answers with the client's address, as whoami shows it.
    let ns_ = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(&ns_);
        let l = TcpListener::bind("0.0.0.0:8090").expect("test step");
        tx.send(()).expect("test step");
        for mut s in l.incoming().flatten() {
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = std::io::Write::write_all(&mut s, peer.as_bytes());
        }
    });
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

pub const BIG_PORTS: std::ops::Range<u16> = 9000..9007;

pub fn tcp_ask(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("test step");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Who answers `n` connections to `addr` from inside `ns`.
pub fn answers(ns: &str, addr: &'static str, n: usize, stop_when_all: usize) -> BTreeSet<String> {
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

pub fn service(name: &str, ip: &str, port: i32, proto: &str, node_port: Option<i32>) -> Service {
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

pub fn slice(svc: &str, port: i32, proto: &str, ips: &[&str]) -> EndpointSlice {
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

pub const PODS: [&str; 3] = ["10.244.0.11", "10.244.0.12", "10.244.0.13"];

pub fn setup(ns: &mut Namespaces) -> (String, Vec<String>, String) {
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
