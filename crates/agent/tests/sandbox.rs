//! Pod sandboxes inside a throwaway node (berth-testkit's `Node`).
//!
//! How a test enters the node: the test makes a `Node` and re-runs itself, the same test by
//! name, in a new process of this test binary inside the node netns (`Node::rerun_inside`,
//! i.e. `ip netns exec`). The inner run sees `inside_node()` and does the work. A whole
//! process in the node netns means the sandbox code finds the node as its own namespace, as
//! the agent will, and no harness thread ever calls setns. The outer run also deletes the pod
//! namespaces by name afterwards, so even an inner run that aborted leaves nothing behind.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};

use berth_agent::sandbox::{Bridge, Ipam, Sandbox, SandboxNames, netns_exists};
use berth_testkit::{Node, eventually, inside_node, netns_list};

/// The pod uids, from the outer run to the inner one.
const UIDS_ENV: &str = "BERTH_TEST_POD_UIDS";

#[test]
fn two_pods_on_one_bridge() {
    if inside_node().is_some() {
        return two_pods_inside_node();
    }
    let node = Node::new();
    let uids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].map(|u| u.to_string());
    let _pods = PodNetns::for_uids(&uids);
    node.rerun_inside("two_pods_on_one_bridge", &[(UIDS_ENV, &uids.join(","))]);
    let left = netns_list();
    for uid in &uids {
        let name = names(uid).netns;
        assert!(!left.contains(&name), "{name} left behind: {left:?}");
    }
}

fn two_pods_inside_node() {
    let uids: Vec<String> = std::env::var(UIDS_ENV)
        .expect("pod uids from the outer run")
        .split(',')
        .map(str::to_owned)
        .collect();
    let _pods = PodNetns::for_uids(&uids);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state = tempfile::tempdir().expect("state dir");
    let mut ipam = Ipam::open(state.path(), "10.244.0.0/24".parse().expect("cidr")).expect("ipam");
    let bridge = rt
        .block_on(Bridge::ensure("berth0", ipam.gateway()))
        .expect("bridge");
    // Idempotent: a second agent start keeps the bridge and its address.
    let again = rt
        .block_on(Bridge::ensure("berth0", ipam.gateway()))
        .expect("bridge again");
    assert_eq!(again, bridge);

    let ips: Vec<Ipv4Addr> = uids
        .iter()
        .map(|uid| ipam.allocate(uid).expect("pod IP"))
        .collect();
    assert_ne!(ips[0], ips[1]);
    let pods: Vec<Sandbox> = uids
        .iter()
        .zip(&ips)
        .enumerate()
        .map(|(i, (uid, ip))| {
            rt.block_on(Sandbox::create(uid, &format!("pod-{i}"), *ip, &bridge))
                .expect("sandbox")
        })
        .collect();
    let (a, b) = (&pods[0], &pods[1]);
    assert!(matches!(
        rt.block_on(Sandbox::create(&uids[0], "pod-0", ips[0], &bridge)),
        Err(berth_agent::Error::SandboxExists { .. })
    ));

    let ping =
        |from: &Sandbox, to: Ipv4Addr| in_pod(from, &["ping", "-c1", "-W2", &to.to_string()]);
    assert_ok(ping(a, ips[1]), "pod A pings pod B");
    assert_ok(ping(b, ips[0]), "pod B pings pod A");
    assert_ok(ping(a, bridge.gateway().addr()), "pod A pings the gateway");
    let route = in_pod(a, &["ip", "route", "show", "default"]);
    assert!(String::from_utf8_lossy(&route.stdout).contains("via 10.244.0.1 dev eth0"));

    both_listen_on_8080(a, b, &ips);

    for pod in pods {
        let uid = pod.pod_uid().to_owned();
        rt.block_on(pod.destroy()).expect("destroy");
        assert!(ipam.release(&uid).expect("release").is_some());
        // Destroying what is gone already is fine (an agent retrying after a crash).
        rt.block_on(Sandbox::destroy_pod(&uid))
            .expect("destroy again");
    }
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip link")
            .stdout,
    )
    .into_owned();
    for uid in &uids {
        let n = names(uid);
        assert!(!netns_exists(&n.netns), "{} still exists", n.netns);
        assert!(
            !links.contains(&n.host_veth),
            "{} still exists: {links}",
            n.host_veth
        );
    }
    assert_eq!(ipam.allocations().count(), 0);
    let reopened = Ipam::open(state.path(), ipam.cidr()).expect("reopen");
    assert_eq!(reopened.allocations().count(), 0);
}

/// The bridge's MAC, as `ip -br link` prints it.
fn bridge_mac() -> String {
    let out = Command::new("ip")
        .args(["-br", "link", "show", "berth0"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned()
}

/// A bridge made here gets a MAC of its own, and one an earlier agent made without keeps the
/// MAC it had: either way it stays while pods (bridge ports) come and go, so the gateway
/// MAC pods cached never goes away with a deleted pod's veth.
#[test]
fn the_bridge_mac_stays_while_pods_come_and_go() {
    if inside_node().is_some() {
        return bridge_mac_inside_node();
    }
    let node = Node::new();
    let uids: Vec<String> = (0..6).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let _pods = PodNetns::for_uids(&uids);
    node.rerun_inside(
        "the_bridge_mac_stays_while_pods_come_and_go",
        &[(UIDS_ENV, &uids.join(","))],
    );
}

fn bridge_mac_inside_node() {
    let uids: Vec<String> = std::env::var(UIDS_ENV)
        .expect("pod uids from the outer run")
        .split(',')
        .map(str::to_owned)
        .collect();
    let _pods = PodNetns::for_uids(&uids);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state = tempfile::tempdir().expect("state dir");
    let mut ipam = Ipam::open(state.path(), "10.244.0.0/24".parse().expect("cidr")).expect("ipam");
    let cycle = |uids: &[String], ipam: &mut Ipam, bridge: &Bridge, mac: &str| {
        for (i, uid) in uids.iter().enumerate() {
            let ip = ipam.allocate(uid).expect("pod IP");
            let pod = rt
                .block_on(Sandbox::create(uid, &format!("pod-{i}"), ip, bridge))
                .expect("sandbox");
            assert_eq!(bridge_mac(), mac, "after adding a port");
            rt.block_on(pod.destroy()).expect("destroy");
            ipam.release(uid).expect("release");
            assert_eq!(bridge_mac(), mac, "after removing a port");
        }
    };
    let bridge = rt
        .block_on(Bridge::ensure("berth0", ipam.gateway()))
        .expect("bridge");
    assert_eq!(bridge_mac(), "02:be:0a:f4:00:01");
    cycle(&uids[..3], &mut ipam, &bridge, "02:be:0a:f4:00:01");

    // As an earlier agent left it: a bridge whose MAC the kernel picked.
    let del = Command::new("ip")
        .args(["link", "del", "berth0"])
        .output()
        .expect("ip");
    assert_ok(del, "deleting berth0");
    let add = Command::new("ip")
        .args(["link", "add", "berth0", "type", "bridge"])
        .output()
        .expect("ip");
    assert_ok(add, "adding berth0 as an earlier agent did");
    let old = bridge_mac();
    let bridge = rt
        .block_on(Bridge::ensure("berth0", ipam.gateway()))
        .expect("bridge");
    assert_eq!(bridge_mac(), old, "ensure keeps the MAC pods may hold");
    cycle(&uids[3..], &mut ipam, &bridge, &old);
}

/// Both pods serve on 0.0.0.0:8080 at once (each has its own port space) and reach each other.
fn both_listen_on_8080(a: &Sandbox, b: &Sandbox, ips: &[Ipv4Addr]) {
    let python = python();
    let mut servers = Servers(Vec::new());
    for pod in [a, b] {
        let child = Command::new("ip")
            .args(["netns", "exec", pod.netns(), &python])
            .args(["-m", "http.server", "8080", "--bind", "0.0.0.0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        servers.0.push(child);
    }
    for (from, to) in [(a, ips[1]), (b, ips[0])] {
        let url = format!("http://{to}:8080/");
        eventually(&format!("{url} to answer from {}", from.netns()), || {
            let out = in_pod(from, &["curl", "-s", "-o", "/dev/null", "-m", "2", &url]);
            out.status.success().then_some(())
        });
    }
    for child in &mut servers.0 {
        assert!(
            child.try_wait().expect("server status").is_none(),
            "a server exited: both must hold port 8080"
        );
    }
}

/// The real interpreter, not a pyenv shim, so the PID we kill is the server's.
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn in_pod(pod: &Sandbox, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", pod.netns()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec")
}

fn assert_ok(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names(uid: &str) -> SandboxNames {
    SandboxNames::for_uid(uid).expect("uuid")
}

/// Kills the servers it started, by PID, even when an assertion failed.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Deletes the pods' namespaces on drop (named namespaces outlive the node netns, which
/// does not contain them), so a failed assertion leaves nothing behind.
struct PodNetns(Vec<String>);

impl PodNetns {
    fn for_uids(uids: &[String]) -> PodNetns {
        PodNetns(uids.iter().map(|u| names(u).netns).collect())
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        for ns in &self.0 {
            if netns_exists(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}
