//! From a Service and its EndpointSlices to the DNS records the Kubernetes DNS specification
//! (schema 1.1.0) requires of them: A/AAAA, SRV for named ports, PTR, CNAME for ExternalName.
//! Pure functions; `zone` indexes what they produce.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

/// What DNS needs of a Service (boxed slices rather than `Vec`s: 10,000 of these are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
}

/// The part of a [`ServiceView`] its records are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub kind: ServiceKind,
    pub ports: Box<[PortView]>,
    /// `spec.publishNotReadyAddresses`: not-ready endpoints are published too.
    pub publish_not_ready: bool,
}

/// How a Service is reached, which decides its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`); empty while none is allocated yet.
    ClusterIp(Box<[IpAddr]>),
    /// `clusterIP: None`: the names resolve to the endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(Box<str>),
}

/// A port with a name (unnamed ports have no SRV record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    pub name: Box<str>,
    /// The lower-case protocol, `tcp`, `udp` or `sctp` (another value is kept as given).
    pub protocol: Protocol,
    pub port: u16,
}

/// A port's protocol as the `_<proto>` label of its SRV name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Other(Box<str>),
}

impl Protocol {
    fn of(protocol: Option<&String>) -> Self {
        match protocol.map(|p| p.to_ascii_lowercase()).as_deref() {
            None | Some("tcp") => Self::Tcp,
            Some("udp") => Self::Udp,
            Some("sctp") => Self::Sctp,
            Some(other) => Self::Other(other.into()),
        }
    }

    /// The lower-case name, e.g. `tcp`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
            Self::Other(p) => p,
        }
    }
}

/// What DNS needs of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceView {
    /// One entry per address (an endpoint with several addresses gives several entries).
    pub endpoints: Box<[EndpointView]>,
    pub ports: Box<[PortView]>,
}

/// One address of an endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub address: IpAddr,
    pub hostname: Option<Box<str>>,
    pub ready: bool,
}

impl ServiceKey {
    /// The key of a Kubernetes object (`None` without a name).
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        Some(Self {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name: meta.name.clone()?,
        })
    }
}

fn named_ports<'a>(
    ports: impl Iterator<Item = (Option<&'a String>, Option<&'a String>, Option<i32>)>,
) -> Box<[PortView]> {
    ports
        .filter_map(|(name, protocol, port)| {
            let name = name.filter(|n| !n.is_empty())?;
            Some(PortView {
                name: name.as_str().into(),
                protocol: Protocol::of(protocol),
                port: u16::try_from(port?).ok()?,
            })
        })
        .collect()
}

impl ServiceView {
    /// The view of a Service; `None` without a name.
    pub fn from_service(svc: &Service) -> Option<Self> {
        let key = ServiceKey::of(&svc.metadata)?;
        let default = Default::default();
        let spec = svc.spec.as_ref().unwrap_or(&default);
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            ServiceKind::ExternalName(spec.external_name.as_deref().unwrap_or_default().into())
        } else if spec.cluster_ip.as_deref() == Some("None") {
            ServiceKind::Headless
        } else {
            let ips = match spec.cluster_ips.as_deref() {
                Some(ips) if !ips.is_empty() => ips,
                _ => spec.cluster_ip.as_slice(),
            };
            ServiceKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
        };
        let ports = spec
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name.as_ref(), p.protocol.as_ref(), Some(p.port)));
        Some(Self {
            key,
            spec: ServiceSpec {
                kind,
                ports: named_ports(ports),
                publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            },
        })
    }
}

impl SliceView {
    /// The Service a slice belongs to and its view; `None` without the service-name label.
    pub fn from_slice(slice: &EndpointSlice) -> Option<(ServiceKey, Self)> {
        let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let key = ServiceKey {
            namespace: slice
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name: service.clone(),
        };
        let endpoints = slice
            .endpoints
            .iter()
            .flat_map(|e| {
                let hostname: Option<Box<str>> = e
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(Into::into);
                // An unset `ready` means ready (discovery.k8s.io/v1 API docs).
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                e.addresses
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .map(move |address| EndpointView {
                        address,
                        hostname: hostname.clone(),
                        ready,
                    })
            })
            .collect();
        let ports = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name.as_ref(), p.protocol.as_ref(), p.port));
        Some((
            key,
            Self {
                endpoints,
                ports: named_ports(ports),
            },
        ))
    }
}

/// One compiled entry: a record at a name, or only the name's existence (an empty
/// non-terminal such as `<ns>.svc.<zone>` or `_tcp.<svc>.<ns>.svc.<zone>`).
pub type Entry = (Name, Option<RData>);

fn name(labels: &[&str], zone: &Name) -> Option<Name> {
    Name::from_labels(labels.iter().map(|l| l.to_ascii_lowercase().into_bytes()))
        .ok()?
        .append_domain(zone)
        .ok()
}

/// The label CoreDNS generates for an endpoint without a hostname: its address with dashes.
pub fn generated_hostname(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Every record of one Service given its slices, under `zone` (e.g. `cluster.local.`).
/// Names are lower case; a name that would not be a valid DNS name is left out.
pub fn compile<'a>(
    key: &ServiceKey,
    svc: &ServiceSpec,
    slices: impl Iterator<Item = &'a SliceView>,
    zone: &Name,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let ns = key.namespace.as_str();
    let Some(ns_name) = name(&[ns, "svc"], zone) else {
        return out;
    };
    out.push((ns_name.clone(), None));
    let Some(svc_name) = name(&[&key.name], &ns_name) else {
        return out;
    };
    match &svc.kind {
        ServiceKind::ExternalName(target) => {
            if let Ok(mut target) = Name::from_ascii(target) {
                target.set_fqdn(true);
                out.push((svc_name, Some(RData::CNAME(CNAME(target)))));
            }
        }
        ServiceKind::ClusterIp(ips) => {
            for ip in ips.iter() {
                out.push((svc_name.clone(), Some(address(*ip))));
                out.push((Name::from(*ip), Some(RData::PTR(PTR(svc_name.clone())))));
            }
            if !ips.is_empty() {
                for port in svc.ports.iter() {
                    srv(&mut out, &svc_name, port, port.port, &svc_name, 100);
                }
            }
        }
        ServiceKind::Headless => headless(&mut out, svc, slices, &svc_name),
    }
    out
}

fn srv(out: &mut Vec<Entry>, svc_name: &Name, port: &PortView, number: u16, target: &Name, w: u16) {
    let proto = format!("_{}", port.protocol.as_str());
    let Some(proto_name) = name(&[&proto], svc_name) else {
        return;
    };
    let Some(port_name) = name(&[&format!("_{}", port.name)], &proto_name) else {
        return;
    };
    out.push((proto_name, None));
    out.push((
        port_name,
        Some(RData::SRV(SRV::new(0, w, number, target.clone()))),
    ));
}

fn headless<'a>(
    out: &mut Vec<Entry>,
    svc: &ServiceSpec,
    slices: impl Iterator<Item = &'a SliceView>,
    svc_name: &Name,
) {
    // (hostname name, ip) pairs, deduplicated across slices; ports by (name, protocol, number).
    let mut hosts: BTreeSet<(Name, IpAddr)> = BTreeSet::new();
    let mut ports: Vec<PortView> = Vec::new();
    for slice in slices {
        for e in slice
            .endpoints
            .iter()
            .filter(|e| e.ready || svc.publish_not_ready)
        {
            let label = match &e.hostname {
                Some(h) => h.to_string(),
                None => generated_hostname(e.address),
            };
            if let Some(host) = name(&[&label], svc_name) {
                hosts.insert((host, e.address));
            }
        }
        for p in slice.ports.iter() {
            if !ports.contains(p) {
                ports.push(p.clone());
            }
        }
    }
    let targets: BTreeSet<&Name> = hosts.iter().map(|(h, _)| h).collect();
    let weight = u16::try_from(100 / targets.len().max(1))
        .unwrap_or(1)
        .max(1);
    for (host, ip) in &hosts {
        out.push((svc_name.clone(), Some(address(*ip))));
        out.push((host.clone(), Some(address(*ip))));
        out.push((Name::from(*ip), Some(RData::PTR(PTR(host.clone())))));
    }
    for port in &ports {
        for target in &targets {
            srv(out, svc_name, port, port.port, target, weight);
        }
    }
}
