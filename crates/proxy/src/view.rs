//! What the proxy keeps of each Service and EndpointSlice: a compact projection made as each
//! watch event arrives (addresses parsed, enums for the strings it compares, nothing it never
//! reads), so 10,000 Services cost a few MB instead of the tens a cache of whole objects
//! takes (kube-proxy converts to its own `ServicePort`/`Endpoint` types for the same reason).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::external::{Prefix, parse_prefix};
use crate::ruleset::Proto;

/// The label naming an EndpointSlice's Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's `type`, as far as the proxy distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// `ClusterIP`, absent, or anything unknown.
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// `name` ("" when absent): matched against the slices' port names.
    pub name: Box<str>,
    /// `None` for a protocol the proxy does not handle.
    pub proto: Option<Proto>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// The parts of a Service the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub type_: ServiceType,
    /// `clusterIPs` (or `clusterIP`) name no address: `None`, empty or absent.
    pub headless: bool,
    /// `spec.clusterIP` is absent or `None` (what [`crate::external`] calls headless).
    pub no_cluster_ip: bool,
    /// The ClusterIPs, externalIPs and LoadBalancer ingress IPs that parse as IPv4, in that
    /// order.
    pub cluster_ips: Box<[Ipv4Addr]>,
    pub external_ips: Box<[Ipv4Addr]>,
    pub lb_ips: Box<[Ipv4Addr]>,
    pub internal_local: bool,
    pub external_local: bool,
    /// `healthCheckNodePort`, if set and in range.
    pub health_check_node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`'s timeout in seconds.
    pub affinity: Option<u32>,
    /// `loadBalancerSourceRanges` that parse (the API server validates them).
    pub source_ranges: Box<[Prefix]>,
    pub ports: Box<[PortView]>,
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePortView {
    pub name: Box<str>,
    pub proto: Option<Proto>,
    pub port: Option<u16>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointView {
    /// The first address, if it is IPv4.
    pub ip: Option<Ipv4Addr>,
    /// `nodeName` is the proxy's own node.
    pub on_node: bool,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

/// The parts of an EndpointSlice the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceView {
    pub namespace: Box<str>,
    /// Its `kubernetes.io/service-name` label; `None` without one (it then serves nothing).
    pub service: Option<Box<str>>,
    pub ipv4: bool,
    pub ports: Box<[SlicePortView]>,
    pub endpoints: Box<[EndpointView]>,
}

fn ipv4s<'a>(it: impl IntoIterator<Item = &'a String>) -> Box<[Ipv4Addr]> {
    it.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

fn port_view(p: &ServicePort) -> PortView {
    PortView {
        name: p.name.as_deref().unwrap_or("").into(),
        proto: Proto::from_k8s(p.protocol.as_deref()),
        port: p.port,
        node_port: p.node_port,
    }
}

impl ServiceView {
    /// The view of `svc`; `None` without a namespace, name or spec (the proxy skips those).
    pub fn new(svc: &Service) -> Option<ServiceView> {
        let spec = svc.spec.as_ref()?;
        let cluster: Vec<&String> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().collect(),
            _ => spec.cluster_ip.iter().collect(),
        };
        let lb = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_ref());
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(10_800)
        });
        Some(ServiceView {
            namespace: svc.metadata.namespace.as_deref()?.into(),
            name: svc.metadata.name.as_deref()?.into(),
            type_: match spec.type_.as_deref() {
                Some("NodePort") => ServiceType::NodePort,
                Some("LoadBalancer") => ServiceType::LoadBalancer,
                Some("ExternalName") => ServiceType::ExternalName,
                _ => ServiceType::ClusterIp,
            },
            headless: cluster
                .iter()
                .all(|ip| ip.as_str() == "None" || ip.is_empty()),
            no_cluster_ip: spec.cluster_ip.as_deref().is_none_or(|ip| ip == "None"),
            cluster_ips: ipv4s(cluster),
            external_ips: ipv4s(spec.external_ips.iter().flatten()),
            lb_ips: ipv4s(lb),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec
                .health_check_node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0),
            affinity,
            source_ranges: spec
                .load_balancer_source_ranges
                .iter()
                .flatten()
                .filter_map(|r| parse_prefix(r.trim()))
                .collect(),
            ports: spec.ports.iter().flatten().map(port_view).collect(),
        })
    }

    /// Namespace and name.
    pub fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl SliceView {
    /// The view of `slice` for the node named `node`; `None` without a namespace.
    pub fn new(slice: &EndpointSlice, node: &str) -> Option<SliceView> {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|s| s.as_str().into());
        let ports = slice.ports.iter().flatten().map(|p| SlicePortView {
            name: p.name.as_deref().unwrap_or("").into(),
            proto: Proto::from_k8s(p.protocol.as_deref()),
            port: p.port.and_then(|p| u16::try_from(p).ok()),
        });
        let endpoints = slice.endpoints.iter().map(|ep| {
            let cond = ep.conditions.as_ref();
            EndpointView {
                ip: ep.addresses.first().and_then(|a| a.parse().ok()),
                on_node: ep.node_name.as_deref() == Some(node),
                ready: cond.and_then(|c| c.ready),
                serving: cond.and_then(|c| c.serving),
                terminating: cond.and_then(|c| c.terminating),
            }
        });
        Some(SliceView {
            namespace: slice.metadata.namespace.as_deref()?.into(),
            service,
            ipv4: slice.address_type == "IPv4",
            ports: ports.collect(),
            endpoints: endpoints.collect(),
        })
    }

    /// The Service it belongs to: namespace and name.
    pub fn service_key(&self) -> Option<(&str, &str)> {
        Some((&self.namespace, self.service.as_deref()?))
    }
}

/// Views of `services`, skipping those without a namespace, name or spec.
pub fn services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<ServiceView> {
    services.into_iter().filter_map(ServiceView::new).collect()
}

/// Views of `slices` for the node named `node`.
pub fn slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> Vec<SliceView> {
    slices
        .into_iter()
        .filter_map(|s| SliceView::new(s, node))
        .collect()
}
