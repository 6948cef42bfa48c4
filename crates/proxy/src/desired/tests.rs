//! Table-driven tests of `desired` and the property that `diff` always gets the kernel
//! (the in-memory model) from one desired ruleset to the next.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::ruleset::{Target, diff};
use crate::view::SERVICE_NAME_LABEL;

/// (name, protocol, port, nodePort)
type Port<'a> = (&'a str, &'a str, i32, Option<i32>);

fn service(name: &str, ty: &str, cluster_ip: &str, ports: &[Port]) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, port, np)| ServicePort {
                        name: Some((*n).into()),
                        protocol: Some((*p).into()),
                        port: *port,
                        node_port: *np,
                        target_port: Some(IntOrString::String((*n).into())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// (ip, ready, serving, terminating)
type Ep<'a> = (&'a str, bool, bool, bool);

fn slice(svc: &str, idx: usize, ports: &[(&str, &str, i32)], eps: &[Ep]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(format!("{svc}-{idx}")),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_owned(),
                svc.to_owned(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, port)| EndpointPort {
                    name: Some((*n).into()),
                    protocol: Some((*p).into()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        ),
        endpoints: eps
            .iter()
            .map(|(ip, ready, serving, terminating)| Endpoint {
                addresses: vec![(*ip).into()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// Endpoints behind each Service address as "ip:port/proto -> [addr]", rejected keys as
/// "ip:port/proto".
fn summary(r: &Ruleset) -> (Vec<String>, Vec<String>) {
    let mut chains: Vec<String> = r
        .service_ips
        .iter()
        .map(|(k, t)| {
            let eps: Vec<String> = match t {
                Target::Small(n) => (0..*n)
                    .filter_map(|s| r.ip_endpoints.get(&(*k, s)))
                    .map(|(_, a)| a.to_string())
                    .collect(),
                Target::Chain(c) => {
                    let c = &r.chains[c];
                    (0..c.endpoints)
                        .filter_map(|s| r.endpoints.get(&(c.id, s)))
                        .map(ToString::to_string)
                        .collect()
                }
            };
            format!("{}:{}/{} -> {}", k.ip, k.port, k.proto, eps.join(","))
        })
        .collect();
    chains.extend(
        r.node_ports
            .iter()
            .map(|(k, t)| format!("*:{}/{} -> {t:?}", k.port, k.proto)),
    );
    let rejected = r
        .no_endpoints
        .iter()
        .map(|k| format!("{}:{}/{}", k.ip, k.port, k.proto))
        .chain(
            r.no_endpoint_node_ports
                .iter()
                .map(|k| format!("*:{}/{}", k.port, k.proto)),
        )
        .collect();
    (chains, rejected)
}

fn check(services: &[Service], slices: &[EndpointSlice], chains: &[&str], rejected: &[&str]) {
    let r = desired(services, slices, &Node::default(), &Ruleset::default());
    let (c, rej) = summary(&r);
    assert_eq!(c, chains);
    assert_eq!(rej, rejected);
}

const WEB: Port = ("http", "TCP", 80, None);

#[test]
fn ready_endpoints_only() {
    check(
        &[service("web", "ClusterIP", "10.96.0.50", &[WEB])],
        &[slice(
            "web",
            0,
            &[("http", "TCP", 8080)],
            &[
                ("10.244.0.2", true, true, false),
                ("10.244.0.3", false, false, false),
                ("10.244.0.4", false, true, true),
            ],
        )],
        &["10.96.0.50:80/tcp -> 10.244.0.2:8080"],
        &[],
    );
}

#[test]
fn terminating_serving_only_when_nothing_is_ready() {
    check(
        &[service("web", "ClusterIP", "10.96.0.50", &[WEB])],
        &[slice(
            "web",
            0,
            &[("http", "TCP", 8080)],
            &[
                ("10.244.0.3", false, false, true),
                ("10.244.0.4", false, true, true),
            ],
        )],
        &["10.96.0.50:80/tcp -> 10.244.0.4:8080"],
        &[],
    );
}

#[test]
fn named_target_ports_resolve_per_slice() {
    check(
        &[service("web", "ClusterIP", "10.96.0.50", &[WEB])],
        &[
            slice(
                "web",
                0,
                &[("http", "TCP", 8080)],
                &[("10.244.0.2", true, true, false)],
            ),
            slice(
                "web",
                1,
                &[("http", "TCP", 9090)],
                &[("10.244.0.3", true, true, false)],
            ),
        ],
        &["10.96.0.50:80/tcp -> 10.244.0.2:8080,10.244.0.3:9090"],
        &[],
    );
}

#[test]
fn no_endpoints_rejects_cluster_ip_and_node_port() {
    check(
        &[service(
            "web",
            "NodePort",
            "10.96.0.50",
            &[
                ("http", "TCP", 80, Some(30007)),
                ("dns", "UDP", 53, Some(30053)),
            ],
        )],
        &[slice("web", 0, &[("dns", "UDP", 5353)], &[])],
        &[],
        &[
            "10.96.0.50:80/tcp",
            "10.96.0.50:53/udp",
            "*:30007/tcp",
            "*:30053/udp",
        ],
    );
}

#[test]
fn many_endpoints_go_to_the_shared_map() {
    let ips: Vec<String> = (1..=20).map(|i| format!("10.244.1.{i}")).collect();
    let eps: Vec<Ep> = ips
        .iter()
        .map(|ip| (ip.as_str(), true, true, false))
        .collect();
    let r = desired(
        &[service("web", "ClusterIP", "10.96.0.50", &[WEB])],
        &[slice("web", 0, &[("http", "TCP", 8080)], &eps)],
        &Node::default(),
        &Ruleset::default(),
    );
    let c = r.chains.values().next().expect("one chain");
    assert_eq!(c.endpoints, 20);
    assert_eq!(r.endpoints.len(), 20);
    assert!(r.ip_endpoints.is_empty());
    assert_eq!(r.hairpin.len(), 20);
}

#[test]
fn client_ip_affinity_gets_a_chain_with_its_timeout() {
    let mut svc = service("web", "ClusterIP", "10.96.0.50", &[WEB]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
    }
    let eps = [slice(
        "web",
        0,
        &[("http", "TCP", 8080)],
        &[("10.244.0.2", true, true, false)],
    )];
    let r = desired(&[svc], &eps, &Node::default(), &Ruleset::default());
    let c = r.chains.values().next().expect("one chain");
    assert_eq!((c.endpoints, c.affinity), (1, Some(10_800)));
    assert!(r.ip_endpoints.is_empty());
}

#[test]
fn loopback_endpoints_get_no_hairpin_element() {
    // The `kubernetes` Service of a server bound to 127.0.0.1: its endpoint is served, but a
    // hairpin element would masquerade every 127.0.0.1 -> 127.0.0.1 connection.
    let svc = service("kubernetes", "ClusterIP", "10.96.0.1", &[WEB]);
    let eps = [slice(
        "kubernetes",
        0,
        &[("http", "TCP", 6443)],
        &[
            ("127.0.0.1", true, true, false),
            ("10.244.0.2", true, true, false),
        ],
    )];
    let r = desired(&[svc], &eps, &Node::default(), &Ruleset::default());
    assert_eq!(r.ip_endpoints.len(), 2);
    assert_eq!(
        r.hairpin.into_iter().collect::<Vec<_>>(),
        vec![Ipv4Addr::new(10, 244, 0, 2)]
    );
}

#[test]
fn load_balancer_ingress_ips_are_service_addresses() {
    let mut svc = service(
        "web",
        "LoadBalancer",
        "10.96.0.50",
        &[("http", "TCP", 80, Some(30007))],
    );
    svc.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
        load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
            ingress: Some(vec![k8s_openapi::api::core::v1::LoadBalancerIngress {
                ip: Some("192.0.2.10".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let eps = [slice(
        "web",
        0,
        &[("http", "TCP", 8080)],
        &[("10.244.0.2", true, true, false)],
    )];
    let r = desired(&[svc], &eps, &Node::default(), &Ruleset::default());
    let ips: Vec<String> = r.service_ips.keys().map(|k| k.ip.to_string()).collect();
    assert_eq!(ips, ["10.96.0.50", "192.0.2.10"]);
    assert_eq!(r.node_ports.len(), 1);
}

#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
    let mut svc = service("web", "ClusterIP", "10.96.0.50", &[WEB]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.internal_traffic_policy = Some("Local".into());
    }
    let mut sl = slice(
        "web",
        0,
        &[("http", "TCP", 8080)],
        &[
            ("10.244.0.2", true, true, false),
            ("10.244.1.2", true, true, false),
        ],
    );
    sl.endpoints[0].node_name = Some("here".into());
    sl.endpoints[1].node_name = Some("there".into());
    let node = Node {
        name: "here".into(),
    };
    let r = desired(&[svc], &[sl], &node, &Ruleset::default());
    let eps: Vec<String> = r
        .ip_endpoints
        .values()
        .map(|(_, a)| a.to_string())
        .collect();
    assert_eq!(eps, ["10.244.0.2:8080"]);
}

#[test]
fn external_traffic_policy_local_node_ports_use_local_endpoints() {
    let mut svc = service(
        "web",
        "NodePort",
        "10.96.0.50",
        &[("http", "TCP", 80, Some(30007))],
    );
    if let Some(spec) = svc.spec.as_mut() {
        spec.external_traffic_policy = Some("Local".into());
    }
    let mut sl = slice(
        "web",
        0,
        &[("http", "TCP", 8080)],
        &[
            ("10.244.0.2", true, true, false),
            ("10.244.1.2", true, true, false),
        ],
    );
    sl.endpoints[0].node_name = Some("here".into());
    let node = Node {
        name: "here".into(),
    };
    let r = desired(&[svc.clone()], &[sl.clone()], &node, &Ruleset::default());
    assert!(r.node_ports.is_empty());
    let k = PortKey {
        proto: Proto::Tcp,
        port: 30007,
    };
    assert_eq!(r.node_ports_local.get(&k), Some(&1));
    // The ClusterIP still balances over both.
    assert_eq!(r.ip_endpoints.len(), 2);
    // No local endpoint: the NodePort refuses.
    sl.endpoints[0].node_name = Some("there".into());
    let r = desired(&[svc], &[sl], &node, &Ruleset::default());
    assert!(r.no_endpoint_node_ports.contains(&k));
}

#[test]
fn headless_and_external_name_get_nothing() {
    let eps = [slice(
        "h",
        0,
        &[("http", "TCP", 80)],
        &[("10.244.0.2", true, true, false)],
    )];
    check(&[service("h", "ClusterIP", "None", &[WEB])], &eps, &[], &[]);
    check(&[service("h", "ExternalName", "", &[WEB])], &eps, &[], &[]);
}

#[test]
fn node_ports_and_external_ips_get_the_endpoints_too() {
    let mut svc = service(
        "web",
        "NodePort",
        "10.96.0.50",
        &[("http", "TCP", 80, Some(30007))],
    );
    if let Some(spec) = svc.spec.as_mut() {
        spec.external_ips = Some(vec!["192.0.2.7".into()]);
    }
    let eps = [slice(
        "web",
        0,
        &[("http", "TCP", 8080)],
        &[("10.244.0.2", true, true, false)],
    )];
    let r = desired(&[svc], &eps, &Node::default(), &Ruleset::default());
    assert_eq!(r.service_ips.len(), 2);
    assert_eq!(r.node_ports.len(), 1);
    assert_eq!(r.ip_endpoints.len(), 2);
    assert_eq!(r.port_endpoints.len(), 1);
}

#[test]
fn ids_stay_with_their_service_port() {
    let ips: Vec<String> = (1..=20).map(|i| format!("10.244.1.{i}")).collect();
    let many: Vec<Ep> = ips
        .iter()
        .map(|ip| (ip.as_str(), true, true, false))
        .collect();
    let eps = |svc| slice(svc, 0, &[("http", "TCP", 80)], &many);
    let a = desired(
        &[service("b", "ClusterIP", "10.96.0.2", &[WEB])],
        &[eps("b")],
        &Node::default(),
        &Ruleset::default(),
    );
    let b = desired(
        &[
            service("a", "ClusterIP", "10.96.0.1", &[WEB]),
            service("b", "ClusterIP", "10.96.0.2", &[WEB]),
        ],
        &[eps("a"), eps("b")],
        &Node::default(),
        &a,
    );
    let id = |r: &Ruleset, label: &str| r.chains.values().find(|c| c.label == label).map(|c| c.id);
    assert_eq!(id(&a, "ns/b/http"), Some(0));
    assert_eq!(id(&b, "ns/b/http"), Some(0));
    assert_eq!(id(&b, "ns/a/http"), Some(1));
}

/// One random Service (by index, so IPs and node ports are unique) with its slice.
fn arb_service(i: usize) -> impl Strategy<Value = (Service, EndpointSlice)> {
    let types = prop_oneof![
        Just("ClusterIP"),
        Just("NodePort"),
        Just("ExternalName"),
        Just("headless")
    ];
    let ep = (1u8..40, any::<bool>(), any::<bool>(), any::<bool>());
    (
        types,
        prop_oneof![
            prop::collection::vec(ep.clone(), 0..6),
            prop::collection::vec(ep, 17..24)
        ],
        any::<bool>(),
        8000i32..8003,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(ty, eps, udp, target, sticky, local)| {
            let name = format!("s{i}");
            let ip = format!("10.96.0.{}", i + 1);
            let (ty, cip) = match ty {
                "headless" => ("ClusterIP", "None"),
                t => (t, ip.as_str()),
            };
            let np = Some(30000 + i as i32);
            let mut ports = vec![("http", "TCP", 80, np)];
            if udp {
                ports.push(("dns", "UDP", 53, np));
            }
            let mut svc = service(&name, ty, cip, &ports);
            if let Some(spec) = svc.spec.as_mut() {
                if sticky {
                    spec.session_affinity = Some("ClientIP".into());
                }
                if local {
                    spec.external_traffic_policy = Some("Local".into());
                }
            }
            let ips: Vec<(String, bool, bool, bool)> = eps
                .iter()
                .map(|(h, r, s, t)| (format!("10.244.0.{h}"), *r, *s, *t))
                .collect();
            let eps: Vec<Ep> = ips
                .iter()
                .map(|(ip, r, s, t)| (ip.as_str(), *r, *s, *t))
                .collect();
            let mut sl = slice(
                &name,
                0,
                &[("http", "TCP", target), ("dns", "UDP", 5353)],
                &eps,
            );
            // Every other endpoint is on this node (`Node::default()` has the empty name).
            for ep in sl.endpoints.iter_mut().step_by(2) {
                ep.node_name = Some(String::new());
            }
            (svc, sl)
        })
}

pub(crate) fn arb_world() -> impl Strategy<Value = Vec<(Service, EndpointSlice)>> {
    prop::collection::vec(any::<bool>(), 6).prop_flat_map(|present| {
        present
            .into_iter()
            .enumerate()
            .filter(|(_, p)| *p)
            .map(|(i, _)| arb_service(i))
            .collect::<Vec<_>>()
    })
}

pub(crate) fn ruleset_of(world: &[(Service, EndpointSlice)], previous: &Ruleset) -> Ruleset {
    desired(
        world.iter().map(|(s, _)| s),
        world.iter().map(|(_, e)| e),
        &Node::default(),
        previous,
    )
}

proptest! {
    #[test]
    fn applying_the_diff_yields_the_desired_state(a in arb_world(), b in arb_world()) {
        let start = ruleset_of(&a, &Ruleset::default());
        let mut kernel = Ruleset::default();
        kernel.apply_all(&diff(&Ruleset::default(), &start)).expect("kernel model refused the diff");
        prop_assert_eq!(&kernel, &start);

        let next = ruleset_of(&b, &kernel);
        let ops = diff(&kernel, &next);
        kernel.apply_all(&ops).expect("kernel model refused the diff");
        prop_assert_eq!(&kernel, &next);
        prop_assert!(diff(&kernel, &next).is_empty());

        // Ids follow their service port.
        for c in next.chains.values() {
            if let Some(old) = start.chains.values().find(|o| o.label == c.label) {
                prop_assert_eq!(old.id, c.id);
            }
        }
    }
}
