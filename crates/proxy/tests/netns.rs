//! The proxy against the real kernel, inside network namespaces this test makes (and deletes
//! on drop): a "node" with the `berth0` bridge, three "pods" on it running TCP and UDP echo
//! servers that answer with their own IP, and an "outside" host on a veth to the node.
//! Traffic goes only to addresses inside these namespaces.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_proxy::ruleset::{Op, affinity_touched, removed_udp_endpoints};
use berth_proxy::{Apply, Netlink, Node, Ruleset, desired, diff};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

mod common;
use common::*;

/// 21 endpoints (3 pods x 7 ports, a slice per port as the EndpointSlice controller makes
/// for differing target ports): more than the small maps take, so "big" gets a chain.
fn big_slices() -> Vec<EndpointSlice> {
    BIG_PORTS
        .map(|p| slice("big", i32::from(p), "TCP", &PODS))
        .collect()
}

fn world(
    web_pods: &[&str],
    dns_pods: &[&str],
    sticky_pods: &[&str],
) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut sticky = service("sticky", "10.96.0.54", 80, "TCP", None);
    if let Some(spec) = sticky.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
    }
    let mut local = service("local", "10.96.0.55", 80, "TCP", Some(30090));
    if let Some(spec) = local.spec.as_mut() {
        spec.external_traffic_policy = Some("Local".into());
    }
    let mut local_slice = slice("local", 8090, "TCP", &PODS);
    for ep in &mut local_slice.endpoints {
        ep.node_name = Some("node".into());
    }
    let mut slices = big_slices();
    slices.extend([
        slice("web", 8080, "TCP", web_pods),
        slice("dns", 8081, "UDP", dns_pods),
        slice("empty", 8080, "TCP", &[]),
        slice("sticky", 8080, "TCP", sticky_pods),
        slice("seen", 8090, "TCP", &PODS),
        local_slice,
    ]);
    (
        vec![
            service("web", "10.96.0.50", 80, "TCP", Some(30080)),
            service("dns", "10.96.0.51", 53, "UDP", None),
            service("empty", "10.96.0.52", 80, "TCP", Some(30081)),
            service("big", "10.96.0.53", 80, "TCP", None),
            sticky,
            service("seen", "10.96.0.56", 80, "TCP", Some(30091)),
            local,
        ],
        slices,
    )
}

/// Reads the kernel, diffs against what `world` calls for, applies and deletes the UDP
/// flows of removed endpoints (as `run` does); returns the ops.
fn sync_with(
    node: &str,
    web_pods: &[&str],
    dns_pods: &[&str],
    sticky_pods: &[&str],
) -> (Vec<Op>, Ruleset) {
    let (svcs, slices) = world(web_pods, dns_pods, sticky_pods);
    in_ns(node, move || {
        let mut nl = Netlink::open(MARK).expect("test step");
        let current = nl.read().expect("test step");
        let node = Node {
            name: "node".into(),
        };
        let want = desired(&svcs, &slices, &node, &current);
        let ops = diff(&current, &want);
        nl.apply(&ops).expect("test step");
        nl.delete_udp_flows(&removed_udp_endpoints(&ops))
            .expect("test step");
        nl.prune_affinity(&affinity_touched(&ops), &want)
            .expect("test step");
        (ops, want)
    })
}

fn sync(node: &str, web_pods: &[&str]) -> (Vec<Op>, Ruleset) {
    sync_with(node, web_pods, &PODS, &PODS)
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

    // UDP through a ClusterIP; when the endpoint a flow goes to is removed, its conntrack
    // entry goes too, so the same socket's next datagram reaches another endpoint.
    let (to_client, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_client) = std::sync::mpsc::channel();
    let client = {
        let pod = pods[1].clone();
        thread::spawn(move || {
            enter(&pod);
            let u = UdpSocket::bind("0.0.0.0:0").expect("test step");
            u.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("test step");
            for _ in 0..2 {
                u.send_to(b"hi", "10.96.0.51:53").expect("test step");
                let mut buf = [0u8; 64];
                let (n, from) = u.recv_from(&mut buf).expect("test step");
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                to_main.send((answer, from)).expect("test step");
                let _ = from_main.recv();
            }
        })
    };
    let (first, from) = from_client.recv().expect("test step");
    assert!(all.contains(&first), "{first}");
    assert_eq!(
        from,
        "10.96.0.51:53".parse::<SocketAddr>().expect("test step")
    );
    let rest: Vec<&str> = PODS.iter().copied().filter(|p| *p != first).collect();
    sync_with(&node, &PODS, &rest, &PODS);
    to_client.send(()).expect("test step");
    let (second, _) = from_client.recv().expect("test step");
    assert!(
        rest.contains(&second.as_str()),
        "{second} after removing {first}"
    );
    to_client.send(()).expect("test step");
    client.join().expect("test step");
    sync(&node, &PODS);

    // ClientIP affinity: a client sticks to one endpoint; when that endpoint goes, it
    // sticks to another.
    let stuck = answers(&pods[0], "10.96.0.54:80", 20, 2);
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    let first = stuck.into_iter().next().expect("test step");
    let rest: Vec<&str> = PODS.iter().copied().filter(|p| *p != first).collect();
    sync_with(&node, &PODS, &PODS, &rest);
    let stuck = answers(&pods[0], "10.96.0.54:80", 20, 2);
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert!(!stuck.contains(&first), "{stuck:?} still has {first}");
    // With a sticky Service and affinity entries in place, nft still prints the table.
    let listing = nft_list(&node);
    assert!(listing.contains("update @affinity-slots"), "{listing}");
    sync(&node, &PODS);

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

    // externalTrafficPolicy: Local keeps the outside client's address; Cluster masquerades
    // it to the node's address on the bridge.
    let seen = answers(&outside, "192.168.77.1:30090", 5, 2);
    assert_eq!(seen, BTreeSet::from(["192.168.77.2".to_owned()]));
    let seen = answers(&outside, "192.168.77.1:30091", 5, 2);
    assert_eq!(seen, BTreeSet::from(["10.244.0.1".to_owned()]));

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
    let deleted = in_ns(&node, || berth_proxy::cleanup().expect("test step"));
    assert!(deleted);
    assert!(
        nft_list(&node).contains("No such file"),
        "{}",
        nft_list(&node)
    );
}

#[test]
fn a_refused_batch_names_the_operation_and_changes_nothing() {
    use berth_proxy::nft::{Elem, Msg, SetData, SetSpec, Socket};
    let mut ns = Namespaces { names: Vec::new() };
    let name = ns.add(format!("berth-pxt-{}-tx", std::process::id()));
    let (err, table_left) = in_ns(&name, || {
        let mut sock = Socket::open().expect("test step");
        let mut batch = sock.batch("berth");
        batch.push(Msg::NewTable);
        batch.push(Msg::NewSet(SetSpec {
            name: "s".into(),
            key_len: 4,
            key_type: 7,
            data: SetData::None,
            timeout: false,
            dynamic: false,
        }));
        batch.push(Msg::NewElems {
            set: "s".into(),
            elems: vec![Elem {
                key: vec![10, 0, 0, 1],
                data: None,
            }],
        });
        batch.push(Msg::DelChain {
            name: "nope".into(),
        });
        let err = sock
            .commit(batch)
            .expect_err("the kernel refuses the batch");
        (err, sock.has_table("berth").expect("test step"))
    });
    match err {
        berth_proxy::Error::Kernel { op, source } => {
            assert_eq!(op, "delete chain nope");
            assert_eq!(source.raw_os_error(), Some(2), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!table_left, "the whole batch is rolled back");
}
