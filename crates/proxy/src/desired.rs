//! Services + EndpointSlices -> the [`Ruleset`] that should be in the kernel. Pure: the
//! only state it reads is the previous ruleset, to keep each service port's chain id stable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ruleset::{IpKey, PortKey, Proto, Ruleset, SMALL_MAX, SvcChain, Target};

/// The label an EndpointSlice names its Service with.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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
    desired_with(services, slices, node, &mut Ids::from_ruleset(previous))
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
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &Node,
    ids: &mut Ids,
) -> Ruleset {
    let by_service = slices_by_service(slices);
    let mut services: Vec<&Service> = services.into_iter().collect();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut out = Ruleset::default();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        let ips = service_ips(svc);
        if spec.type_.as_deref() == Some("ExternalName") || ips.is_empty() {
            continue;
        }
        let local_only = spec.internal_traffic_policy.as_deref() == Some("Local");
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for port in spec.ports.iter().flatten() {
            let (Some(proto), Ok(svc_port)) = (
                Proto::from_k8s(port.protocol.as_deref()),
                u16::try_from(port.port),
            ) else {
                continue;
            };
            let plan = PortPlan {
                label: format!("{ns}/{name}/{}", port.name.as_deref().unwrap_or("")),
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
                eps: endpoints(slices, port, proto, local_only.then_some(node)),
                node_port_local_eps: (spec.external_traffic_policy.as_deref() == Some("Local"))
                    .then(|| endpoints(slices, port, proto, Some(node))),
                affinity: affinity_timeout(spec),
            };
            add_port(&mut out, plan, ids);
        }
    }
    out
}

/// The namespace and name of the Service a slice belongs to (its service-name label).
pub(crate) fn slice_service(s: &EndpointSlice) -> Option<(&str, &str)> {
    let ns = s.metadata.namespace.as_deref()?;
    let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((ns, svc.as_str()))
}

/// IPv4 EndpointSlices by the Service they name.
fn slices_by_service<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(key) = slice_service(s) else {
            continue;
        };
        if s.address_type == "IPv4" {
            by_service.entry(key).or_default().push(s);
        }
    }
    by_service
}

/// `sessionAffinity: ClientIP`'s timeout; kube-proxy's default is three hours.
fn affinity_timeout(spec: &ServiceSpec) -> Option<u32> {
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(10_800)
    })
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
                out.hairpin.extend(local.iter().map(|ep| *ep.ip()));
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
    out.hairpin.extend(p.eps.iter().map(|ep| *ep.ip()));
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
fn service_ips(svc: &Service) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    let cluster: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    if cluster
        .iter()
        .all(|ip| ip.as_str() == "None" || ip.is_empty())
    {
        return out;
    }
    let lb = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_ref());
    out.extend(
        cluster
            .into_iter()
            .chain(spec.external_ips.iter().flatten())
            .chain(lb)
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
    );
    out
}

/// The endpoints of one Service port: the slice port of the same name and protocol gives
/// the (already resolved) target port, so a named targetPort may differ per endpoint.
fn endpoints(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    proto: Proto,
    only_on: Option<&Node>,
) -> Vec<SocketAddrV4> {
    let mut c = Candidates::default();
    let want = port.name.as_deref().unwrap_or("");
    for slice in slices {
        for sp in slice.ports.iter().flatten() {
            if sp.name.as_deref().unwrap_or("") != want
                || Proto::from_k8s(sp.protocol.as_deref()) != Some(proto)
            {
                continue;
            }
            let Some(target) = sp.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &slice.endpoints {
                if let Some(node) = only_on
                    && ep.node_name.as_deref() != Some(node.name.as_str())
                {
                    continue;
                }
                let Some(ip) = ep
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
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
