//! From a Service and its EndpointSlices to the DNS records the Kubernetes DNS specification
//! (schema 1.1.0) requires of them: A/AAAA, SRV for named ports, PTR, CNAME for ExternalName.
//! Pure functions; `zone` indexes what they produce.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's namespace and name (the namespace shared: the zone keeps one copy of each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: Arc<str>,
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

/// A port with a name (unnamed ports have no SRV record; the name is shared, as the zone
/// keeps one copy of each: most Services call their ports alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub port: u16,
}

/// A port's protocol as the `_<proto>` label of its SRV name: the three the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `None` for a protocol the API would have refused.
    fn of(protocol: Option<&String>) -> Option<Self> {
        match protocol.map(String::as_str) {
            None => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("tcp") => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("udp") => Some(Self::Udp),
            Some(p) if p.eq_ignore_ascii_case("sctp") => Some(Self::Sctp),
            Some(_) => None,
        }
    }

    /// The lower-case name, e.g. `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// What DNS needs of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceView {
    pub endpoints: Endpoints,
    pub ports: Box<[PortView]>,
}

/// One address of an endpoint of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointView<'a> {
    pub address: IpAddr,
    pub hostname: Option<&'a str>,
    pub ready: bool,
}

/// A slice's endpoints packed in one allocation, one entry per address (an endpoint with
/// several addresses gives several): a flags byte (ready, IPv6, hostname), the address (4 or
/// 16 bytes), then the hostname's length (2 bytes) and bytes. Kept for every slice (a
/// Service may turn headless), so 5 IPv4 endpoints take 25 bytes instead of 5 structs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoints(Box<[u8]>);

const READY: u8 = 1;
const V6: u8 = 2;
const HOSTNAME: u8 = 4;

impl Endpoints {
    /// Packs `all` (hostnames longer than 65,535 bytes, never valid labels, are dropped).
    pub fn pack<'a>(all: impl IntoIterator<Item = EndpointView<'a>>) -> Self {
        let mut out = Vec::new();
        for e in all {
            let host = e.hostname.filter(|h| u16::try_from(h.len()).is_ok());
            let mut flags = if e.ready { READY } else { 0 };
            if host.is_some() {
                flags |= HOSTNAME;
            }
            match e.address {
                IpAddr::V4(v4) => {
                    out.push(flags);
                    out.extend(v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(flags | V6);
                    out.extend(v6.octets());
                }
            }
            if let Some(h) = host {
                out.extend(u16::try_from(h.len()).unwrap_or(0).to_be_bytes());
                out.extend(h.as_bytes());
            }
        }
        Self(out.into())
    }

    /// The endpoints, in the order packed.
    pub fn iter(&self) -> impl Iterator<Item = EndpointView<'_>> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (&flags, after) = rest.split_first()?;
            let (address, after) = if flags & V6 != 0 {
                let (a, after) = after.split_first_chunk::<16>()?;
                (IpAddr::from(*a), after)
            } else {
                let (a, after) = after.split_first_chunk::<4>()?;
                (IpAddr::from(*a), after)
            };
            let (hostname, after) = if flags & HOSTNAME != 0 {
                let (len, after) = after.split_first_chunk::<2>()?;
                let (h, after) = after.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
                (Some(std::str::from_utf8(h).ok()?), after)
            } else {
                (None, after)
            };
            rest = after;
            Some(EndpointView {
                address,
                hostname,
                ready: flags & READY != 0,
            })
        })
    }
}

impl ServiceKey {
    /// The key of a Kubernetes object (`None` without a name).
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        Some(Self {
            namespace: meta.namespace.as_deref().unwrap_or("default").into(),
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
                protocol: Protocol::of(protocol)?,
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
                .as_deref()
                .unwrap_or("default")
                .into(),
            name: service.clone(),
        };
        let endpoints = Endpoints::pack(slice.endpoints.iter().flat_map(|e| {
            let hostname = e.hostname.as_deref().filter(|h| !h.is_empty());
            // An unset `ready` means ready (discovery.k8s.io/v1 API docs).
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            e.addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .map(move |address| EndpointView {
                    address,
                    hostname,
                    ready,
                })
        }));
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
    let ns: &str = &key.namespace;
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
            let label = match e.hostname {
                Some(h) => h.to_owned(),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn endpoints_unpack_as_packed(
            all in prop::collection::vec(
                (any::<IpAddr>(), prop::option::of("[a-z0-9-]{0,70}"), any::<bool>()),
                0..20,
            )
        ) {
            let views: Vec<EndpointView<'_>> = all
                .iter()
                .map(|(address, hostname, ready)| EndpointView {
                    address: *address,
                    hostname: hostname.as_deref(),
                    ready: *ready,
                })
                .collect();
            let packed = Endpoints::pack(views.iter().copied());
            prop_assert_eq!(packed.iter().collect::<Vec<_>>(), views);
        }
    }
}
