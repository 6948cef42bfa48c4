//! Facts about Services and Pods that the Endpoints and EndpointSlice controllers share, with
//! the rules of upstream's `k8s.io/endpointslice/util` and `api/v1/pod` helpers.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_api::selector::Selector;
use k8s_openapi::api::core::v1::{ContainerPort, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label the controllers put on what they write for a Service without a cluster IP.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The namespace of an object, "" when unset (as Go reads a missing string).
pub(crate) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// The name of an object, "" when unset.
pub(crate) fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Whether the Service has type ExternalName; such Services never get endpoints.
pub(crate) fn is_external_name(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "ExternalName")
}

/// The Service's pod selector, None when it has none. An empty map counts as none: upstream
/// tests for a nil map, and an empty one never survives a round trip through the API.
pub(crate) fn service_selector(svc: &Service) -> Option<Selector> {
    let selector = svc.spec.as_ref()?.selector.as_ref()?;
    if selector.is_empty() {
        return None;
    }
    Some(Selector::from_map(selector))
}

/// The Pods of `pods` that live in the Service's namespace and match its selector.
/// (Generic over `Borrow` so the controllers pass the cache's shared Pods without cloning.)
pub(crate) fn selected_pods<'a, P: Borrow<Pod>>(
    svc: &'a Service,
    selector: &'a Selector,
    pods: &'a [P],
) -> impl Iterator<Item = &'a Pod> + 'a {
    let empty = BTreeMap::new();
    pods.iter().map(Borrow::borrow).filter(move |pod| {
        namespace(&pod.metadata) == namespace(&svc.metadata)
            && selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
    })
}

/// Whether the Service has a real cluster IP (neither unset nor "None").
pub(crate) fn service_ip_set(svc: &Service) -> bool {
    let ip = cluster_ip(svc);
    !ip.is_empty() && ip != "None"
}

/// The Service's `spec.clusterIP`, "" when unset.
pub(crate) fn cluster_ip(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or_default()
}

/// The Service's ports, empty when it has none.
pub(crate) fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// Whether the Service publishes addresses of Pods that are not ready.
pub(crate) fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Whether the Pod's Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether the Pod is being deleted (it may still serve while it drains).
pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the Pod has finished for good (phase Succeeded or Failed).
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// The Pod's IPs in order. `status.podIP` stands in when `status.podIPs` is empty, so Pods
/// whose status was written by hand with only `podIP` still count.
pub(crate) fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// Whether a Pod belongs in Endpoints or EndpointSlices at all: it has an IP, has not
/// finished, and is not being deleted unless `include_terminating`.
pub(crate) fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// The hostname to publish for the Pod, when it asks for one under this Service's name
/// (`spec.hostname` set and `spec.subdomain` equal to the Service's name).
pub(crate) fn hostname_for<'a>(pod: &'a Pod, svc: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_subdomain = spec.subdomain.as_deref().unwrap_or_default() == name(&svc.metadata);
    let same_namespace = namespace(&pod.metadata) == namespace(&svc.metadata);
    (same_subdomain && same_namespace).then_some(hostname)
}

/// A protocol as the API server defaults it: TCP when unset.
pub(crate) fn protocol(value: Option<&str>) -> &str {
    value.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// The Pod port a Service port sends traffic to: a numeric targetPort as is (the port itself
/// when targetPort is unset), a named one looked up among the Pod's container ports and
/// sidecar (always-restarting init container) ports with the same protocol.
pub(crate) fn find_port(pod: &Pod, svc_port: &ServicePort) -> Option<i32> {
    let name = match &svc_port.target_port {
        None => return Some(svc_port.port),
        Some(IntOrString::Int(port)) => return Some(*port),
        Some(IntOrString::String(name)) => name,
    };
    let spec = pod.spec.as_ref()?;
    let want_protocol = protocol(svc_port.protocol.as_deref());
    let matches = |port: &&ContainerPort| {
        port.name.as_deref() == Some(name.as_str())
            && protocol(port.protocol.as_deref()) == want_protocol
    };
    let regular = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten());
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .flat_map(|c| c.ports.iter().flatten());
    regular
        .chain(sidecars)
        .find(matches)
        .map(|port| port.container_port)
}

/// Parses an IP the way upstream's `ParseIPSloppy` + `To4` classify it: IPv4-mapped IPv6
/// addresses count (and print) as IPv4.
pub(crate) fn parse_ip(ip: &str) -> Option<IpAddr> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// Whether the string is an IPv6 address (false for anything unparsable).
pub(crate) fn is_ipv6(ip: &str) -> bool {
    parse_ip(ip).is_some_and(|ip| ip.is_ipv6())
}

/// The reference from an endpoint to the Pod behind it.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".to_owned()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Whether two references name the same object, ignoring `resourceVersion` so that Pod
/// updates that do not matter to endpoints cause no writes.
pub(crate) fn same_reference(a: Option<&ObjectReference>, b: Option<&ObjectReference>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let strip = |r: &ObjectReference| ObjectReference {
                resource_version: None,
                ..r.clone()
            };
            strip(a) == strip(b)
        }
        _ => false,
    }
}

/// The Pod's node, when it has been scheduled.
pub(crate) fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}
