//! The Endpoints object that kube-controller-manager's Endpoints controller keeps for each
//! Service with a selector: the addresses of its ready and not-ready Pods, grouped by the set
//! of ports they serve, in the canonical layout of upstream's `endpoints.RepackSubsets`.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pods::{
    HEADLESS_LABEL, cluster_ip, find_port, hostname_for, is_external_name, is_ipv6, is_ready,
    node_name, pod_ips, pod_reference, protocol, publish_not_ready, same_reference, selected_pods,
    service_ip_set, service_ports, service_selector, should_be_in_endpoints,
};

/// Annotation set (to `truncated`) when more addresses exist than one Endpoints may hold.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// Most addresses (ready and not ready together) the controller writes into one Endpoints.
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;

/// The Endpoints the controller wants for `svc`, given all Pods it can see (Pods of other
/// namespaces or not matching the selector are ignored here).
///
/// None means the controller leaves the Endpoints of this name alone: Services of type
/// ExternalName and Services without a selector (whose Endpoints users write themselves).
pub fn desired_endpoints<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Option<Endpoints> {
    if is_external_name(svc) {
        return None;
    }
    let selector = service_selector(svc)?;
    let tolerate_unready = publish_not_ready(svc);
    let ports = service_ports(svc);
    // Headless Services may have no ports; their Pods are then listed without any.
    let portless = ports.is_empty() && cluster_ip(svc) == "None";

    let mut packer = Packer::default();
    for pod in selected_pods(svc, &selector, pods) {
        if !should_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = address_ip(svc, pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            node_name: node_name(pod),
            target_ref: Some(pod_reference(pod)),
            hostname: hostname_for(pod, svc).map(str::to_owned),
        };
        let ready = tolerate_unready || is_ready(pod);
        if portless {
            packer.add(&address, ready, None);
        }
        for svc_port in ports {
            // A Pod without the named port is left out for that port only.
            if let Some(number) = find_port(pod, svc_port) {
                packer.add(&address, ready, Some(PortKey::new(svc_port, number)));
            }
        }
    }

    let mut subsets = packer.finish();
    let truncated = truncate(&mut subsets);

    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if service_ip_set(svc) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    let annotations = truncated
        .then(|| BTreeMap::from([(OVER_CAPACITY_ANNOTATION.to_owned(), "truncated".to_owned())]));

    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            annotations,
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// Whether `current` already says what `desired` says in the parts the controller owns
/// (subsets, labels, the over-capacity annotation), so that writing it would change nothing.
/// Pod resourceVersions inside target references are ignored.
pub fn endpoints_equal(current: &Endpoints, desired: &Endpoints) -> bool {
    let labels = |e: &Endpoints| e.metadata.labels.clone().unwrap_or_default();
    let over_capacity = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION).cloned())
    };
    labels(current) == labels(desired)
        && over_capacity(current) == over_capacity(desired)
        && subsets_equal(
            current.subsets.as_deref().unwrap_or_default(),
            desired.subsets.as_deref().unwrap_or_default(),
        )
}

fn subsets_equal(a: &[EndpointSubset], b: &[EndpointSubset]) -> bool {
    let addresses_equal = |a: &Option<Vec<EndpointAddress>>, b: &Option<Vec<EndpointAddress>>| {
        let (a, b) = (
            a.as_deref().unwrap_or_default(),
            b.as_deref().unwrap_or_default(),
        );
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| {
                a.ip == b.ip
                    && a.hostname == b.hostname
                    && a.node_name == b.node_name
                    && same_reference(a.target_ref.as_ref(), b.target_ref.as_ref())
            })
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            addresses_equal(&a.addresses, &b.addresses)
                && addresses_equal(&a.not_ready_addresses, &b.not_ready_addresses)
                && a.ports.as_deref().unwrap_or_default() == b.ports.as_deref().unwrap_or_default()
        })
}

/// The Pod IP of the Service's primary family: `spec.ipFamilies[0]`, else the family of the
/// cluster IP, else (headless without families) the family of the Pod's own first IP.
fn address_ip(svc: &Service, pod: &Pod) -> Option<String> {
    let ips = pod_ips(pod);
    let first_family = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first());
    let want_v6 = match first_family {
        Some(family) => family == "IPv6",
        None if service_ip_set(svc) => is_ipv6(cluster_ip(svc)),
        None => ips.first().is_some_and(|ip| is_ipv6(ip)),
    };
    ips.into_iter()
        .find(|ip| is_ipv6(ip) == want_v6)
        .map(str::to_owned)
}

/// One Endpoints port; field order gives the order ports are listed in a subset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn new(svc_port: &ServicePort, number: i32) -> Self {
        Self {
            name: svc_port.name.clone().unwrap_or_default(),
            port: number,
            protocol: protocol(svc_port.protocol.as_deref()).to_owned(),
            app_protocol: svc_port.app_protocol.clone(),
        }
    }

    fn to_port(&self) -> EndpointPort {
        EndpointPort {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// Identifies an address: its IP and the UID of the Pod behind it. The derived order is the
/// order addresses are listed in (by IP, then UID).
type AddressKey = (String, String);

/// Collects (address, readiness, port) facts and lays them out as upstream's RepackSubsets
/// does: addresses offering exactly the same ports (with the same readiness) share a subset.
#[derive(Default)]
struct Packer {
    addresses: BTreeMap<AddressKey, EndpointAddress>,
    /// Per port (None for "no ports"), each address and whether it is ready there.
    by_port: BTreeMap<Option<PortKey>, BTreeMap<AddressKey, bool>>,
}

impl Packer {
    fn add(&mut self, address: &EndpointAddress, ready: bool, port: Option<PortKey>) {
        let uid = address
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default();
        let key = (address.ip.clone(), uid);
        self.addresses
            .entry(key.clone())
            .or_insert_with(|| address.clone());
        let readiness = self
            .by_port
            .entry(port)
            .or_default()
            .entry(key)
            .or_insert(ready);
        // Not ready anywhere wins over ready.
        *readiness = *readiness && ready;
    }

    fn finish(self) -> Vec<EndpointSubset> {
        let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
        for (port, readiness) in self.by_port {
            let ports = groups.entry(readiness.into_iter().collect()).or_default();
            if let Some(port) = port {
                ports.push(port.to_port());
            }
        }
        groups
            .into_iter()
            .map(|(members, ports)| {
                let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
                for (key, is_ready) in members {
                    let Some(address) = self.addresses.get(&key).cloned() else {
                        continue;
                    };
                    if is_ready {
                        ready.push(address);
                    } else {
                        not_ready.push(address);
                    }
                }
                EndpointSubset {
                    addresses: (!ready.is_empty()).then_some(ready),
                    not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                    ports: (!ports.is_empty()).then_some(ports),
                }
            })
            .collect()
    }
}

/// Cuts the subsets down to [`MAX_ENDPOINTS_CAPACITY`] addresses as upstream does: not-ready
/// addresses go first; each subset keeps a share proportional to its size (rounded up, so
/// the last ones may get less). Returns whether anything was cut.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |f: fn(&EndpointSubset) -> &Option<Vec<EndpointAddress>>| -> usize {
        subsets
            .iter()
            .map(|s| f(s).as_ref().map_or(0, Vec::len))
            .sum()
    };
    let total_ready = count(|s| &s.addresses);
    let total_not_ready = count(|s| &s.not_ready_addresses);
    if total_ready + total_not_ready <= MAX_ENDPOINTS_CAPACITY {
        return false;
    }
    let cut_ready = total_ready > MAX_ENDPOINTS_CAPACITY;
    let (budget, total) = if cut_ready {
        (MAX_ENDPOINTS_CAPACITY, total_ready)
    } else {
        (MAX_ENDPOINTS_CAPACITY - total_ready, total_not_ready)
    };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        if cut_ready {
            subset.not_ready_addresses = None;
        }
        let list = if cut_ready {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let have = list.as_ref().map_or(0, Vec::len);
        // Integer form of ceil(have / total * budget); total > 0 because something is cut.
        let share = (have * budget).div_ceil(total).min(left);
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(share);
            left -= addresses.len();
            if addresses.is_empty() {
                *list = None;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, svc};
    use serde_json::{Value, json};

    /// An address as the controller writes it for a Pod made by [`pod`].
    fn addr(name: &str, ip: &str) -> Value {
        json!({"ip": ip, "nodeName": "node-1",
               "targetRef": {"kind": "Pod", "namespace": "ns", "name": name, "uid": format!("uid-{name}")}})
    }

    /// Runs the controller logic and compares labels and subsets with `want` (None: no
    /// Endpoints wanted).
    fn check(case: &str, svc: Service, pods: Vec<Value>, want: Option<Value>) {
        let pods = crate::testing::pods(pods);
        let got = desired_endpoints(&svc, &pods).map(|e| {
            let mut v = json!({"labels": e.metadata.labels, "subsets": e.subsets});
            if let Some(obj) = v.as_object_mut() {
                obj.retain(|_, v| !v.is_null());
            }
            v
        });
        assert_eq!(got, want, "case {case}");
    }

    #[test]
    fn desired_endpoints_cases() {
        let http = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
        check(
            "selector matches by equality; other apps and namespaces are ignored",
            svc(json!({})),
            vec![
                pod("b", "10.0.0.2", true, json!({})),
                pod("a", "10.0.0.1", true, json!({})),
                pod(
                    "other",
                    "10.0.0.3",
                    true,
                    json!({"metadata": {"labels": {"app": "db"}}}),
                ),
                pod(
                    "elsewhere",
                    "10.0.0.4",
                    true,
                    json!({"metadata": {"namespace": "x"}}),
                ),
            ],
            Some(json!({"labels": {"team": "a"}, "subsets": [
                {"addresses": [addr("a", "10.0.0.1"), addr("b", "10.0.0.2")], "ports": http}
            ]})),
        );
        check(
            "ready and not-ready pods share a subset in separate lists",
            svc(json!({})),
            vec![
                pod("a", "10.0.0.1", true, json!({})),
                pod("b", "10.0.0.2", false, json!({})),
                pod("c", "10.0.0.3", true, json!({"status": {"conditions": []}})),
            ],
            Some(json!({"labels": {"team": "a"}, "subsets": [{
                "addresses": [addr("a", "10.0.0.1")],
                "notReadyAddresses": [addr("b", "10.0.0.2"), addr("c", "10.0.0.3")],
                "ports": http
            }]})),
        );
        check(
            "publishNotReadyAddresses lists unready and terminating pods as ready",
            svc(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![
                pod("a", "10.0.0.1", false, json!({})),
                pod(
                    "b",
                    "10.0.0.2",
                    true,
                    json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                ),
            ],
            Some(json!({"labels": {"team": "a"}, "subsets": [
                {"addresses": [addr("a", "10.0.0.1"), addr("b", "10.0.0.2")], "ports": http}
            ]})),
        );
        check(
            "terminating, terminal and IP-less pods are left out",
            svc(json!({})),
            vec![
                pod("a", "10.0.0.1", true, json!({})),
                pod(
                    "gone",
                    "10.0.0.2",
                    true,
                    json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                ),
                pod(
                    "done",
                    "10.0.0.3",
                    false,
                    json!({"status": {"phase": "Succeeded"}}),
                ),
                pod(
                    "failed",
                    "10.0.0.4",
                    false,
                    json!({"status": {"phase": "Failed"}}),
                ),
                pod("pending", "", false, json!({"status": {"podIPs": []}})),
            ],
            Some(json!({"labels": {"team": "a"}, "subsets": [
                {"addresses": [addr("a", "10.0.0.1")], "ports": http}
            ]})),
        );
        let named = svc(json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}
        ]}}));
        let with_port = |name: &str, ip: &str, number: i32| {
            pod(
                name,
                ip,
                true,
                json!({"spec": {"containers": [
                    {"name": "c", "image": "i", "ports": [{"name": "web", "containerPort": number}]}
                ]}}),
            )
        };
        check(
            "a named targetPort resolving differently splits subsets; pods without it are left out",
            named,
            vec![
                with_port("a", "10.0.0.1", 8080),
                with_port("b", "10.0.0.2", 9090),
                with_port("c", "10.0.0.3", 8080),
                pod("none", "10.0.0.4", true, json!({})),
            ],
            Some(json!({"labels": {"team": "a"}, "subsets": [
                {"addresses": [addr("a", "10.0.0.1"), addr("c", "10.0.0.3")],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [addr("b", "10.0.0.2")],
                 "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]},
            ]})),
        );
        check(
            "multi-port services list every port, sorted, with appProtocol",
            svc(json!({"spec": {"ports": [
                {"name": "metrics", "port": 9100, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "appProtocol": "dns"},
            ]}})),
            vec![pod("a", "10.0.0.1", true, json!({}))],
            Some(json!({"labels": {"team": "a"}, "subsets": [{
                "addresses": [addr("a", "10.0.0.1")],
                "ports": [
                    {"name": "dns", "port": 5353, "protocol": "UDP", "appProtocol": "dns"},
                    {"name": "metrics", "port": 9100, "protocol": "TCP"},
                ]
            }]})),
        );
        check(
            "headless without ports: addresses with no ports, headless label, hostname",
            svc(json!({"spec": {"clusterIP": "None", "ports": null}})),
            vec![
                pod(
                    "a",
                    "10.0.0.1",
                    true,
                    json!({"spec": {"hostname": "a", "subdomain": "web"}}),
                ),
                pod(
                    "b",
                    "10.0.0.2",
                    true,
                    json!({"spec": {"hostname": "b", "subdomain": "other"}}),
                ),
            ],
            Some(
                json!({"labels": {"team": "a", HEADLESS_LABEL: ""}, "subsets": [{
                    "addresses": [
                        {"ip": "10.0.0.1", "hostname": "a", "nodeName": "node-1",
                         "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}},
                        addr("b", "10.0.0.2"),
                    ]
                }]}),
            ),
        );
        check(
            "no matching pods: Endpoints without subsets",
            svc(json!({})),
            vec![],
            Some(json!({"labels": {"team": "a"}})),
        );
        check(
            "dual-stack pod: the address of the Service's primary family",
            svc(json!({"spec": {"ipFamilies": ["IPv6", "IPv4"], "clusterIP": "fd00::10"}})),
            vec![pod(
                "a",
                "10.0.0.1",
                true,
                json!({"status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}),
            )],
            Some(json!({"labels": {"team": "a"}, "subsets": [{
                "addresses": [{"ip": "fd00::1", "nodeName": "node-1",
                               "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}}],
                "ports": http
            }]})),
        );
        check(
            "selector-less Service: left to its users",
            svc(json!({"spec": {"selector": null}})),
            vec![pod("a", "10.0.0.1", true, json!({}))],
            None,
        );
        check(
            "ExternalName Service: nothing",
            svc(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})),
            vec![pod("a", "10.0.0.1", true, json!({}))],
            None,
        );
    }

    #[test]
    fn metadata_capacity_and_equality() {
        let service = svc(json!({}));
        let pods: Vec<Pod> = (0..1200)
            .map(|i| {
                let ip = format!("10.1.{}.{}", i / 250, i % 250);
                serde_json::from_value(pod(&format!("p{i}"), &ip, i % 2 == 0, json!({})))
                    .expect("test Pod")
            })
            .collect();
        let Some(eps) = desired_endpoints(&service, &pods) else {
            panic!("no Endpoints for a Service with a selector");
        };
        assert_eq!(eps.metadata.name.as_deref(), Some("web"));
        assert_eq!(eps.metadata.namespace.as_deref(), Some("ns"));
        let annotations = eps.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(OVER_CAPACITY_ANNOTATION)
                .map(String::as_str),
            Some("truncated")
        );
        let subsets = eps.subsets.clone().unwrap_or_default();
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(
            (ready, not_ready),
            (600, 400),
            "ready addresses are kept first"
        );

        assert!(endpoints_equal(&eps, &eps));
        let mut stale_rv = eps.clone();
        for subset in stale_rv.subsets.iter_mut().flatten() {
            for a in subset.addresses.iter_mut().flatten() {
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = Some("42".to_owned());
                }
            }
        }
        assert!(
            endpoints_equal(&stale_rv, &eps),
            "Pod resourceVersions do not matter"
        );
        let mut relabelled = eps.clone();
        relabelled.metadata.labels = None;
        assert!(!endpoints_equal(&relabelled, &eps));
        let mut fewer = eps.clone();
        fewer.subsets = None;
        assert!(!endpoints_equal(&fewer, &eps));
    }
}
