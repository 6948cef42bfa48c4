//! Tests of [`desired`]: packets traced through the typed table, case by case for the
//! patterns of the Kubernetes docs, and against a direct reading of the NetworkPolicy rules
//! (`reference`) for random policies; diffs between random worlds replay to the new table.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::policy::{NAMESPACE_NAME_LABEL, PodView};
use crate::ruleset::{Hook, Packet, diff};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const TCP: u8 = 6;
const UDP: u8 = 17;

fn namespace(name: &str, labels: Value) -> Namespace {
    let mut labels = labels;
    labels[NAMESPACE_NAME_LABEL] = json!(name);
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns")
}

/// A running pod on node `n` with ports `http` (TCP `http_port`), `serve-81` (TCP 81) and
/// `dns` (UDP 53).
fn pod(ns: &str, name: &str, labels: Value, last: u8, http_port: u16) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": http_port},
            {"name": "serve-81", "containerPort": 81},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ]}]},
        "status": {"phase": "Running", "podIP": format!("10.244.0.{last}")},
    }))
    .expect("pod")
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("policy")
}

/// Namespaces x (team a) and y (team b); pods x/a .10, x/b .11, y/a .12, y/b .13, labelled
/// `app` by their name.
#[derive(Debug)]
struct World {
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
}

fn world() -> World {
    World {
        namespaces: vec![
            namespace("x", json!({"team": "a"})),
            namespace("y", json!({"team": "b"})),
        ],
        pods: vec![
            pod("x", "a", json!({"app": "a"}), 10, 80),
            pod("x", "b", json!({"app": "b"}), 11, 80),
            pod("y", "a", json!({"app": "a"}), 12, 80),
            pod("y", "b", json!({"app": "b"}), 13, 8080),
        ],
    }
}

fn addr(name: &str) -> Ipv4Addr {
    match name {
        "x/a" => Ipv4Addr::new(10, 244, 0, 10),
        "x/b" => Ipv4Addr::new(10, 244, 0, 11),
        "y/a" => Ipv4Addr::new(10, 244, 0, 12),
        "y/b" => Ipv4Addr::new(10, 244, 0, 13),
        "node" => NODE,
        "outside" => OUTSIDE,
        other => other.parse().expect("address"),
    }
}

/// Whether the table passes a new connection's first packet: the node's own addresses are
/// reached through the input hook, everything else is forwarded.
fn passes(r: &Ruleset, p: &Packet) -> bool {
    let hook = if p.dst == NODE {
        Hook::Input
    } else {
        Hook::Forward
    };
    r.trace(hook, p)
}

/// `(from, to, proto, port, allowed)` for each connection, with `policies` in `world()`.
fn check(policies: &[NetworkPolicy], scope: &Scope, cases: &[(&str, &str, u8, u16, bool)]) {
    let w = world();
    let r = desired(policies, &w.pods, &w.namespaces, scope);
    for &(from, to, proto, dport, want) in cases {
        let p = Packet {
            src: addr(from),
            dst: addr(to),
            proto,
            dport,
            established: false,
        };
        assert_eq!(
            passes(&r, &p),
            want,
            "{from} -> {to} proto {proto} port {dport}\n{r:#?}"
        );
        // Replies of any connection pass.
        assert!(passes(
            &r,
            &Packet {
                established: true,
                ..p
            }
        ));
    }
}

#[test]
fn no_policy_allows_everything() {
    check(
        &[],
        &Scope::default(),
        &[
            ("x/a", "y/b", TCP, 80, true),
            ("outside", "x/a", UDP, 53, true),
        ],
    );
}

#[test]
fn default_deny_ingress_isolates_only_its_namespace() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    check(
        &[deny],
        &Scope::default(),
        &[
            ("x/b", "x/a", TCP, 80, false),
            ("y/a", "x/a", TCP, 80, false),
            ("outside", "x/b", TCP, 80, false),
            ("x/a", "y/a", TCP, 80, true),
            ("x/a", "x/a", TCP, 80, true),
            ("x/a", "node", UDP, 53, true),
        ],
    );
}

#[test]
fn default_deny_egress_and_allow_dns() {
    let deny = policy(
        "y",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    check(
        std::slice::from_ref(&deny),
        &Scope::default(),
        &[
            ("y/a", "x/a", TCP, 80, false),
            ("y/a", "node", UDP, 53, false),
            ("y/a", "outside", TCP, 443, false),
            ("x/a", "y/a", TCP, 80, true),
        ],
    );
    // DNS by port, to anywhere.
    let by_port = policy(
        "y",
        "dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}]}),
    );
    check(
        &[deny.clone(), by_port],
        &Scope::default(),
        &[
            ("y/a", "node", UDP, 53, true),
            ("y/a", "node", TCP, 53, true),
            ("y/a", "node", UDP, 54, false),
            ("y/a", "x/a", TCP, 80, false),
        ],
    );
    // DNS by the kube-dns pods' labels and named port, which berth's DNS on the node has.
    let by_pod = policy(
        "y",
        "dns",
        json!({"podSelector": {}, "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": "dns", "protocol": "UDP"}]}]}),
    );
    let scope = Scope {
        node_pods: vec![PodView::cluster_dns(DNS)],
        ..Scope::default()
    };
    check(
        &[deny, by_pod],
        &scope,
        &[
            ("y/a", "node", UDP, 53, true),
            ("y/a", "node", TCP, 53, false),
            ("y/a", "x/a", UDP, 53, false),
        ],
    );
}

#[test]
fn selectors_pick_peers_by_pod_namespace_or_both() {
    let from = |peer: Value| {
        policy(
            "x",
            "p",
            json!({"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [peer]}]}),
        )
    };
    let pods = from(json!({"podSelector": {"matchLabels": {"app": "b"}}}));
    check(
        &[pods],
        &Scope::default(),
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("y/b", "x/a", TCP, 80, false),
            ("y/a", "x/b", TCP, 80, true),
        ],
    );
    let namespaces = from(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}}));
    check(
        &[namespaces],
        &Scope::default(),
        &[
            ("x/b", "x/a", TCP, 80, false),
            ("y/a", "x/a", TCP, 80, true),
            ("y/b", "x/a", UDP, 9, true),
        ],
    );
    let both = from(json!({"namespaceSelector": {"matchLabels": {"team": "b"}},
                           "podSelector": {"matchLabels": {"app": "b"}}}));
    check(
        &[both],
        &Scope::default(),
        &[
            ("y/a", "x/a", TCP, 80, false),
            ("y/b", "x/a", TCP, 80, true),
            ("x/b", "x/a", TCP, 80, false),
        ],
    );
}

#[test]
fn ip_blocks_with_exceptions() {
    let p = policy(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/24",
                                                  "except": ["10.244.0.12/32"]}}]}],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.201.0.0/16"}}]}]}),
    );
    check(
        &[p],
        &Scope::default(),
        &[
            ("y/b", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 80, false),
            ("outside", "x/a", TCP, 80, false),
            ("x/a", "outside", TCP, 6443, true),
            ("x/a", "y/b", TCP, 80, false),
        ],
    );
}

#[test]
fn numeric_named_and_ranged_ports() {
    let ports = |ports: Value| {
        policy(
            "y",
            "p",
            json!({"podSelector": {}, "ingress": [{"ports": ports}]}),
        )
    };
    check(
        &[ports(json!([{"port": 80}]))],
        &Scope::default(),
        &[
            ("x/a", "y/a", TCP, 80, true),
            ("x/a", "y/a", TCP, 81, false),
            ("x/a", "y/a", UDP, 80, false),
        ],
    );
    // `http` is 80 on y/a and 8080 on y/b: resolved per destination pod.
    check(
        &[ports(json!([{"port": "http"}]))],
        &Scope::default(),
        &[
            ("x/a", "y/a", TCP, 80, true),
            ("x/a", "y/b", TCP, 80, false),
            ("x/a", "y/b", TCP, 8080, true),
        ],
    );
    check(
        &[ports(
            json!([{"port": 80, "endPort": 81}, {"protocol": "UDP"}]),
        )],
        &Scope::default(),
        &[
            ("x/a", "y/a", TCP, 79, false),
            ("x/a", "y/a", TCP, 81, true),
            ("x/a", "y/a", UDP, 5000, true),
            ("x/a", "y/a", 1, 0, false),
        ],
    );
    // Egress to a named port: the destination pod's.
    let egress = policy(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "http"}]}]}),
    );
    check(
        &[egress],
        &Scope::default(),
        &[
            ("x/a", "y/b", TCP, 8080, true),
            ("x/a", "y/b", TCP, 80, false),
            ("x/a", "outside", TCP, 80, false),
        ],
    );
}

#[test]
fn policies_add_up_across_namespaces() {
    // x/a may send only to y; y/a accepts only from x: both must agree.
    let egress = policy(
        "x",
        "out",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
    );
    let ingress = policy(
        "y",
        "in",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                                      "podSelector": {"matchLabels": {"app": "b"}}}]}]}),
    );
    let more = policy(
        "y",
        "more",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    check(
        &[egress, ingress, more],
        &Scope::default(),
        &[
            ("x/a", "y/a", TCP, 80, false),
            ("x/b", "y/a", TCP, 80, true),
            ("y/b", "y/a", TCP, 80, true),
            ("x/a", "y/b", TCP, 80, false),
            ("x/a", "x/b", TCP, 80, false),
            ("x/b", "x/a", TCP, 80, true),
        ],
    );
}

#[test]
fn only_pods_on_this_node_are_isolated_and_replicas_share_a_chain() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    let w = world();
    let here = Scope {
        node: Some("n".into()),
        ..Scope::default()
    };
    let r = desired([&deny], &w.pods, &w.namespaces, &here);
    assert_eq!(r.sets[INGRESS_PODS].elems.len(), 2);
    let pod_chains = r.chains.values().filter(|c| c.hook.is_none()).count();
    assert_eq!(pod_chains, 1, "x/a and x/b share one chain");
    let elsewhere = Scope {
        node: Some("m".into()),
        ..Scope::default()
    };
    let r = desired([&deny], &w.pods, &w.namespaces, &elsewhere);
    assert!(r.sets[INGRESS_PODS].elems.is_empty());
}

// --- the reference: NetworkPolicy semantics read directly off the objects ---

fn labels_match(
    sel: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    match sel {
        None => true,
        Some(s) => {
            berth_api::selector::Selector::from_label_selector(s).is_ok_and(|s| s.matches(labels))
        }
    }
}

fn pod_at(pods: &[Pod], ip: Ipv4Addr) -> Option<&Pod> {
    pods.iter()
        .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(&ip.to_string()))
}

fn ns_labels(nss: &[Namespace], ns: &str) -> std::collections::BTreeMap<String, String> {
    nss.iter()
        .find(|n| n.metadata.name.as_deref() == Some(ns))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default()
}

fn reference(policies: &[NetworkPolicy], pods: &[Pod], nss: &[Namespace], p: &Packet) -> bool {
    if p.established || p.src == p.dst {
        return true;
    }
    let src = pod_at(pods, p.src);
    let dst = pod_at(pods, p.dst);
    side_allows(policies, nss, p, src, p.dst, dst, false)
        && side_allows(policies, nss, p, dst, p.src, src, true)
}

/// Whether `guarded` (if a pod) may exchange `p` with the peer at `peer_ip`.
#[allow(clippy::too_many_arguments)]
fn side_allows(
    policies: &[NetworkPolicy],
    nss: &[Namespace],
    p: &Packet,
    guarded: Option<&Pod>,
    peer_ip: Ipv4Addr,
    peer: Option<&Pod>,
    ingress: bool,
) -> bool {
    let Some(g) = guarded else { return true };
    let g_ns = g.metadata.namespace.clone().unwrap_or_default();
    let g_labels = g.metadata.labels.clone().unwrap_or_default();
    let mut isolated = false;
    for np in policies {
        let spec = np.spec.clone().unwrap_or_default();
        if np.metadata.namespace.as_deref() != Some(&g_ns)
            || !labels_match(&spec.pod_selector, &g_labels)
        {
            continue;
        }
        let types = spec.policy_types.clone().unwrap_or_else(|| {
            let mut t = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        });
        let want = if ingress { "Ingress" } else { "Egress" };
        if !types.iter().any(|t| t == want) {
            continue;
        }
        isolated = true;
        let rules: Vec<(Option<Vec<_>>, Option<Vec<_>>)> = if ingress {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.clone(), r.ports.clone()))
                .collect()
        } else {
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.clone(), r.ports.clone()))
                .collect()
        };
        // Named ports are the destination pod's.
        let dst_pod = if ingress { Some(g) } else { peer };
        for (peers, ports) in rules {
            let peer_ok = match peers.filter(|v| !v.is_empty()) {
                None => true,
                Some(list) => list.iter().any(|pr| {
                    if let Some(b) = &pr.ip_block {
                        let cidr: ipnet::Ipv4Net = b.cidr.parse().expect("cidr");
                        return cidr.trunc().contains(&peer_ip)
                            && !b.except.iter().flatten().any(|e| {
                                e.parse::<ipnet::Ipv4Net>()
                                    .expect("cidr")
                                    .trunc()
                                    .contains(&peer_ip)
                            });
                    }
                    let Some(pp) = peer else { return false };
                    let pp_ns = pp.metadata.namespace.clone().unwrap_or_default();
                    let ns_ok = match &pr.namespace_selector {
                        None => pp_ns == g_ns,
                        s => labels_match(s, &ns_labels(nss, &pp_ns)),
                    };
                    ns_ok
                        && labels_match(
                            &pr.pod_selector,
                            &pp.metadata.labels.clone().unwrap_or_default(),
                        )
                }),
            };
            let port_ok = match ports.filter(|v| !v.is_empty()) {
                None => true,
                Some(list) => list.iter().any(|q| {
                    let proto = match q.protocol.as_deref().unwrap_or("TCP") {
                        "TCP" => TCP,
                        "UDP" => UDP,
                        _ => 132,
                    };
                    if proto != p.proto {
                        return false;
                    }
                    match &q.port {
                        None => true,
                        Some(IntOrString::Int(n)) => {
                            let end = q.end_port.unwrap_or(*n);
                            (*n..=end).contains(&i32::from(p.dport))
                        }
                        Some(IntOrString::String(name)) => dst_pod.is_some_and(|d| {
                            d.spec
                                .iter()
                                .flat_map(|s| &s.containers)
                                .flat_map(|c| c.ports.iter().flatten())
                                .any(|cp| {
                                    cp.name.as_deref() == Some(name)
                                        && cp.protocol.as_deref().unwrap_or("TCP")
                                            == q.protocol.as_deref().unwrap_or("TCP")
                                        && cp.container_port == i32::from(p.dport)
                                })
                        }),
                    }
                }),
            };
            if peer_ok && port_ok {
                return true;
            }
        }
    }
    !isolated
}

// --- random worlds ---

fn selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|v| json!({"matchLabels": {"app": v}})),
        Just(json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]})),
    ]
}

fn ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["a", "b"]).prop_map(|v| json!({"matchLabels": {"team": v}})),
    ]
}

fn peer() -> impl Strategy<Value = Value> {
    let pod_ip = (10u8..14).prop_map(|n| format!("10.244.0.{n}/32"));
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (ns_selector(), selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        (
            prop::sample::select(vec![
                "10.244.0.0/24",
                "10.244.0.8/29",
                "0.0.0.0/0",
                "10.201.0.0/16"
            ]),
            prop::option::weighted(0.7, pod_ip)
        )
            .prop_map(|(cidr, ex)| {
                let except: Vec<String> =
                    ex.into_iter().filter(|_| cidr != "10.201.0.0/16").collect();
                json!({"ipBlock": {"cidr": cidr, "except": except}})
            }),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!({"port": 80}),
        json!({"port": 80, "endPort": 81}),
        json!({"port": "http"}),
        json!({"port": "serve-81"}),
        json!({"protocol": "UDP"}),
        json!({"protocol": "UDP", "port": 53}),
        json!({"protocol": "UDP", "port": "dns"}),
    ])
}

fn rule(peers_key: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.8, prop::collection::vec(peer(), 0..3)),
        prop::option::weighted(0.6, prop::collection::vec(port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = json!({});
            if let Some(p) = peers {
                r[peers_key] = json!(p);
            }
            if let Some(p) = ports {
                r["ports"] = json!(p);
            }
            r
        })
}

fn any_policy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(vec!["x", "y"]),
        0u32..1000,
        selector(),
        prop::option::of(prop::sample::subsequence(vec!["Ingress", "Egress"], 1..=2)),
        prop::option::of(prop::collection::vec(rule("from"), 0..2)),
        prop::option::of(prop::collection::vec(rule("to"), 0..2)),
    )
        .prop_map(|(ns, n, sel, types, ingress, egress)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(t) = types {
                spec["policyTypes"] = json!(t);
            }
            if let Some(i) = ingress {
                spec["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                spec["egress"] = json!(e);
            }
            policy(ns, &format!("p{n}"), spec)
        })
}

fn any_world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 4),
        prop::collection::vec(prop::sample::select(vec![80u16, 8080]), 4),
        prop::sample::select(vec!["a", "b"]),
        prop::collection::vec(any::<bool>(), 4),
    )
        .prop_map(|(apps, http, y_team, present)| {
            let names = [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")];
            World {
                namespaces: vec![
                    namespace("x", json!({"team": "a"})),
                    namespace("y", json!({"team": y_team})),
                ],
                pods: names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| present[*i] || *i == 0)
                    .map(|(i, (ns, name))| {
                        pod(ns, name, json!({"app": apps[i]}), 10 + i as u8, http[i])
                    })
                    .collect(),
            }
        })
}

fn any_packet() -> impl Strategy<Value = Packet> {
    let host = prop_oneof![
        4 => (10u8..14).prop_map(|n| Ipv4Addr::new(10, 244, 0, n)),
        1 => prop::sample::select(vec![OUTSIDE, Ipv4Addr::new(8, 8, 8, 8)]),
    ];
    (
        host.clone(),
        host,
        prop::sample::select(vec![TCP, UDP, 1]),
        prop::sample::select(vec![53u16, 80, 81, 8080]),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(src, dst, proto, dport, established)| Packet {
            src,
            dst,
            proto,
            dport,
            established,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_table_decides_as_the_reference(
        w in any_world(),
        policies in prop::collection::vec(any_policy(), 1..4),
        packets in prop::collection::vec(any_packet(), 16),
    ) {
        let r = desired(&policies, &w.pods, &w.namespaces, &Scope::default());
        for p in &packets {
            let want = reference(&policies, &w.pods, &w.namespaces, p);
            prop_assert_eq!(passes(&r, p), want, "{:?}\npolicies: {:#?}", p, policies);
        }
    }

    #[test]
    fn a_diff_replays_to_the_new_table(
        a in any_world(),
        b in any_world(),
        pa in prop::collection::vec(any_policy(), 0..3),
        pb in prop::collection::vec(any_policy(), 0..3),
    ) {
        let old = desired(&pa, &a.pods, &a.namespaces, &Scope::default());
        let new = desired(&pb, &b.pods, &b.namespaces, &Scope::default());
        let ops = diff(&old, &new);
        // The skeleton never changes, so a diff always exists between two desired tables.
        prop_assert!(ops.is_some());
        let mut model = old.clone();
        model.apply(&ops.unwrap_or_default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&model, &new);
        prop_assert_eq!(diff(&new, &new), Some(vec![]));
    }
}
