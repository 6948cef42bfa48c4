//! Services + EndpointSlices -> the [`Ruleset`] that should be in the kernel. Pure: the
//! only state it reads is the previous ruleset, to keep each service port's chain id stable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ruleset::{IpKey, PortKey, Proto, Ruleset, SMALL_MAX, SvcChain, Target};
use crate::view::{self, PortView, ServiceType, ServiceView, SliceView};

/// What the proxy knows about the node it programs.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// The Node's name: endpoints elsewhere are skipped for `internalTrafficPolicy: Local`.
    pub name: String,
}

/// Ready endpoints of one Service port and the terminating-but-serving fallback.
#[derive(Default)]
struct Candidates {
    ready: BTreeSet<SocketAddrV4>,
    serving_terminating: BTreeSet<SocketAddrV4>,
}

/// The ruleset for `services` and `slices` on `node`. Large service ports keep the chain
/// id they have in `previous`; new ones get the lowest id used by neither.
///
/// As kube-proxy: headless and ExternalName Services get nothing; only IPv4 slices count;
/// endpoints are the ready ones, or the serving terminating ones when none is ready; a
/// port with no endpoints is rejected at once on all its addresses.
pub fn desired<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &Node,
    previous: &Ruleset,
) -> Ruleset {
    let services = view::services(services);
    let slices = view::slices(slices, &node.name);
    desired_from(&services, &slices, previous)
}

/// [`desired`] from the proxy's views of the objects (made for the same node).
pub fn desired_from<'a>(
    services: impl IntoIterator<Item = &'a ServiceView>,
    slices: impl IntoIterator<Item = &'a SliceView>,
    previous: &Ruleset,
) -> Ruleset {
    desired_with(services, slices, &mut Ids::from_ruleset(previous))
}

/// Chain ids of large service ports by label, and which are taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ids {
    by_label: HashMap<String, u32>,
    used: BTreeSet<u32>,
    next_free: u32,
}

impl Ids {
    pub(crate) fn from_ruleset(r: &Ruleset) -> Ids {
        let by_label: HashMap<String, u32> =
            r.chains.values().map(|c| (c.label.clone(), c.id)).collect();
        let used = by_label.values().copied().collect();
        Ids {
            by_label,
            used,
            next_free: 0,
        }
    }

    /// The label's id, or the lowest free one (which it keeps from then on).
    fn get(&mut self, label: &str) -> u32 {
        if let Some(id) = self.by_label.get(label) {
            return *id;
        }
        while self.used.contains(&self.next_free) {
            self.next_free += 1;
        }
        let id = self.next_free;
        self.used.insert(id);
        self.by_label.insert(label.to_owned(), id);
        id
    }
}

/// [`desired`] with ids from (and added to) `ids`.
pub(crate) fn desired_with<'a>(
    services: impl IntoIterator<Item = &'a ServiceView>,
    slices: impl IntoIterator<Item = &'a SliceView>,
    ids: &mut Ids,
) -> Ruleset {
    let by_service = slices_by_service(slices);
    let mut services: Vec<&ServiceView> = services.into_iter().collect();
    services.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut out = Ruleset::default();
    for svc in services {
        let (ns, name) = svc.key();
        let ips = service_ips(svc);
        if svc.type_ == ServiceType::ExternalName || ips.is_empty() {
            continue;
        }
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let node_ports = matches!(svc.type_, ServiceType::NodePort | ServiceType::LoadBalancer);
        for port in &svc.ports {
            let (Some(proto), Ok(svc_port)) = (port.proto, u16::try_from(port.port)) else {
                continue;
            };
            let plan = PortPlan {
                label: format!("{ns}/{name}/{}", port.name),
                ip_keys: ips
                    .iter()
                    .map(|ip| IpKey {
                        ip: *ip,
                        proto,
                        port: svc_port,
                    })
                    .collect(),
                node_port: port
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|p| u16::try_from(p).ok())
                    .map(|port| PortKey { proto, port }),
                eps: endpoints(slices, port, proto, svc.internal_local),
                node_port_local_eps: svc
                    .external_local
                    .then(|| endpoints(slices, port, proto, true)),
                affinity: svc.affinity,
            };
            add_port(&mut out, plan, ids);
        }
    }
    out
}

/// The IPv4 slices of each Service, by namespace and name.
fn slices_by_service<'a>(
    slices: impl IntoIterator<Item = &'a SliceView>,
) -> BTreeMap<(&'a str, &'a str), Vec<&'a SliceView>> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&SliceView>> = BTreeMap::new();
    for s in slices {
        let Some(key) = s.service_key() else {
            continue;
        };
        if s.ipv4 {
            by_service.entry(key).or_default().push(s);
        }
    }
    by_service
}

/// One service port's addresses and endpoints, before they are written into a ruleset.
struct PortPlan {
    label: String,
    ip_keys: Vec<IpKey>,
    node_port: Option<PortKey>,
    eps: Vec<SocketAddrV4>,
    /// `externalTrafficPolicy: Local`: the endpoints on this node, for the NodePort.
    node_port_local_eps: Option<Vec<SocketAddrV4>>,
    affinity: Option<u32>,
}

/// Writes one service port: rejected if it has no endpoints, into the maps for its endpoint
/// count if small and not sticky, else into a chain of its own. A NodePort with
/// `externalTrafficPolicy: Local` goes to its local endpoints, unmasqueraded.
fn add_port(out: &mut Ruleset, mut p: PortPlan, ids: &mut Ids) {
    if let (Some(k), Some(local)) = (p.node_port, &p.node_port_local_eps) {
        let n = local.len() as u32;
        // More local endpoints than the small maps take: served as Cluster (masqueraded).
        if n <= SMALL_MAX {
            p.node_port = None;
            if n == 0 {
                out.no_endpoint_node_ports.insert(k);
            } else {
                out.node_ports_local.insert(k, n);
                out.hairpin.extend(hairpin(local));
                for (slot, ep) in local.iter().enumerate() {
                    out.port_endpoints.insert((k, slot as u32), (n, *ep));
                }
            }
        }
    }
    if p.eps.is_empty() {
        out.no_endpoints.extend(p.ip_keys);
        out.no_endpoint_node_ports.extend(p.node_port);
        return;
    }
    out.hairpin.extend(hairpin(&p.eps));
    let n = p.eps.len() as u32;
    if n <= SMALL_MAX && p.affinity.is_none() {
        for k in p.ip_keys {
            out.service_ips.insert(k, Target::Small(n));
            for (slot, ep) in p.eps.iter().enumerate() {
                out.ip_endpoints.insert((k, slot as u32), (n, *ep));
            }
        }
        if let Some(k) = p.node_port {
            out.node_ports.insert(k, Target::Small(n));
            for (slot, ep) in p.eps.iter().enumerate() {
                out.port_endpoints.insert((k, slot as u32), (n, *ep));
            }
        }
        return;
    }
    let id = ids.get(&p.label);
    for (slot, ep) in p.eps.iter().enumerate() {
        out.endpoints.insert((id, slot as u32), *ep);
    }
    let chain = SvcChain {
        id,
        label: p.label,
        endpoints: n,
        affinity: p.affinity,
    };
    let target = Target::Chain(chain.name());
    out.service_ips
        .extend(p.ip_keys.into_iter().map(|k| (k, target.clone())));
    if let Some(k) = p.node_port {
        out.node_ports.insert(k, target);
    }
    out.chains.insert(chain.name(), chain);
}

/// ClusterIPs, external IPs and LoadBalancer ingress IPs (IPv4 only); none if headless.
/// The endpoint IPs that need a hairpin element. Not loopback ones (the `kubernetes`
/// Service of an API server bound to 127.0.0.1): `ip saddr . ip daddr @hairpin masquerade`
/// would then catch every plain 127.0.0.1 -> 127.0.0.1 connection, and the kernel drops a
/// masquerade on `lo` ("lo ate my IP address").
fn hairpin(eps: &[SocketAddrV4]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    eps.iter().map(|ep| *ep.ip()).filter(|ip| !ip.is_loopback())
}

fn service_ips(svc: &ServiceView) -> BTreeSet<Ipv4Addr> {
    if svc.headless {
        return BTreeSet::new();
    }
    svc.cluster_ips
        .iter()
        .chain(&svc.external_ips)
        .chain(&svc.lb_ips)
        .copied()
        .collect()
}

/// The endpoints of one Service port: the slice port of the same name and protocol gives
/// the (already resolved) target port, so a named targetPort may differ per endpoint.
fn endpoints(
    slices: &[&SliceView],
    port: &PortView,
    proto: Proto,
    only_on_node: bool,
) -> Vec<SocketAddrV4> {
    let mut c = Candidates::default();
    for slice in slices {
        for sp in &slice.ports {
            if sp.name != port.name || sp.proto != Some(proto) {
                continue;
            }
            let Some(target) = sp.port else {
                continue;
            };
            for ep in &slice.endpoints {
                if only_on_node && !ep.on_node {
                    continue;
                }
                let Some(ip) = ep.ip else {
                    continue;
                };
                let ready = ep.ready.unwrap_or(true);
                let serving = ep.serving.unwrap_or(ready);
                let terminating = ep.terminating.unwrap_or(false);
                let addr = SocketAddrV4::new(ip, target);
                if ready {
                    c.ready.insert(addr);
                } else if serving && terminating {
                    c.serving_terminating.insert(addr);
                }
            }
        }
    }
    let chosen = if c.ready.is_empty() {
        c.serving_terminating
    } else {
        c.ready
    };
    chosen.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests;
