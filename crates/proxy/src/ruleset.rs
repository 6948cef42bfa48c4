//! The typed ruleset: what the proxy's part of the `ip berth` table holds (per-service-port
//! chains and the elements of the shared maps), [`diff`] between two of them, and
//! [`Ruleset::apply_op`], the in-memory model of how the kernel applies each [`Op`].
//! The fixed part of the table (base chains, set declarations) lives in `render`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::error::{Error, Result};

/// An IP protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// Kubernetes' spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn from_k8s(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// `ip daddr . meta l4proto . th dport`: a ClusterIP, external IP or LoadBalancer IP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpKey {
    pub ip: Ipv4Addr,
    pub proto: Proto,
    pub port: u16,
}

/// `meta l4proto . th dport` on any local address: a NodePort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub proto: Proto,
    pub port: u16,
}

/// A chain of its own for a service port with more than [`SMALL_MAX`] endpoints or with
/// ClientIP affinity, `svc-<id>-<label>`: `id . numgen random mod endpoints` is looked up in
/// the shared `endpoints` map. Each such chain binds that map once more, and the kernel
/// checks every element added to a data map against every rule bound to it, so this is kept
/// for the few large or sticky Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcChain {
    pub id: u32,
    /// `namespace/name/portname`, for people reading `nft list` (the `nft` CLI takes `/` in
    /// names, not `:`).
    pub label: String,
    pub endpoints: u32,
    /// `sessionAffinity: ClientIP`'s timeout in seconds: the slot picked for a client is
    /// kept in the `affinity-slots` set (`saddr . id . slot`) and reused while it is
    /// refreshed; the chain then has a rule per slot before the picking one.
    pub affinity: Option<u32>,
}

/// Service ports with at most this many endpoints share the fixed chains and maps of their
/// endpoint count (`endpoints-ip-N`, `endpoints-port-N`) instead of a chain of their own.
pub const SMALL_MAX: u32 = 16;

impl SvcChain {
    pub fn name(&self) -> String {
        chain_name(self.id, &self.label)
    }
}

pub(crate) fn chain_name(id: u32, label: &str) -> String {
    format!("svc-{id}-{label}")
}

/// `svc-<id>-<label>` back to its parts.
pub(crate) fn parse_chain_name(name: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix("svc-")?;
    let (id, label) = rest.split_once('-')?;
    Some((id.parse().ok()?, label.to_owned()))
}

/// Where a Service address sends its packets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The fixed chain for `N` endpoints (1..=[`SMALL_MAX`]), which looks up
    /// `key . numgen random mod N` in the map for `N`.
    Small(u32),
    /// A [`SvcChain`] by name.
    Chain(String),
}

/// One endpoint of a small service port: its slot's count `N` (which map it is in) and
/// address.
pub type SlotEndpoint = (u32, SocketAddrV4);

/// Everything the proxy programs that changes with Services and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chains of large service ports, by name.
    pub chains: BTreeMap<String, SvcChain>,
    /// `service-ips`: ClusterIPs, external and LoadBalancer IPs -> `goto` their target.
    pub service_ips: BTreeMap<IpKey, Target>,
    /// `service-nodeports`: NodePorts -> `goto` their target.
    pub node_ports: BTreeMap<PortKey, Target>,
    /// `service-nodeports-local`: NodePorts of `externalTrafficPolicy: Local` Services ->
    /// `goto` the fixed chain for their N local endpoints, without masquerade (the client's
    /// address is kept).
    pub node_ports_local: BTreeMap<PortKey, u32>,
    /// `no-endpoint-services`: rejected at once.
    pub no_endpoints: BTreeSet<IpKey>,
    /// `no-endpoint-nodeports`: rejected at once on local addresses.
    pub no_endpoint_node_ports: BTreeSet<PortKey>,
    /// `endpoints-ip-N`: `ip . proto . port . slot` -> endpoint, for small service ports.
    pub ip_endpoints: BTreeMap<(IpKey, u32), SlotEndpoint>,
    /// `endpoints-port-N`: `proto . nodeport . slot` -> endpoint, for small service ports.
    pub port_endpoints: BTreeMap<(PortKey, u32), SlotEndpoint>,
    /// `endpoints`: `svc id . slot` -> endpoint, for [`SvcChain`]s.
    pub endpoints: BTreeMap<(u32, u32), SocketAddrV4>,
    /// `hairpin`: `ep . ep` for every endpoint IP, so a pod reaching itself through a
    /// Service is masqueraded (else it would answer itself from the wrong address).
    pub hairpin: BTreeSet<Ipv4Addr>,
}

/// One element of one of the maps or sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    ServiceIp(IpKey, Target),
    NodePort(PortKey, Target),
    NodePortLocal(PortKey, u32),
    NoEndpoints(IpKey),
    NoEndpointNodePort(PortKey),
    IpEndpoint((IpKey, u32), SlotEndpoint),
    PortEndpoint((PortKey, u32), SlotEndpoint),
    Endpoint((u32, u32), SocketAddrV4),
    Hairpin(Ipv4Addr),
}

/// One change to the table. A batch lists deletions of elements first, then chain
/// deletions, rule replacements, chain additions and element additions, so that no element
/// points at a missing chain and no chain is deleted while an element points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    DelElem(Elem),
    DelChain(SvcChain),
    /// Replaces the chain's rule (the endpoint count changed).
    SetRule(SvcChain),
    AddChain(SvcChain),
    AddElem(Elem),
}

/// The operations that turn `current` into `desired`, touching only what differs.
pub fn diff(current: &Ruleset, desired: &Ruleset) -> Vec<Op> {
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    map_diff(
        &current.service_ips,
        &desired.service_ips,
        &mut dels,
        &mut adds,
        |k, v| Elem::ServiceIp(*k, v.clone()),
    );
    map_diff(
        &current.node_ports,
        &desired.node_ports,
        &mut dels,
        &mut adds,
        |k, v| Elem::NodePort(*k, v.clone()),
    );
    map_diff(
        &current.node_ports_local,
        &desired.node_ports_local,
        &mut dels,
        &mut adds,
        |k, v| Elem::NodePortLocal(*k, *v),
    );
    map_diff(
        &current.ip_endpoints,
        &desired.ip_endpoints,
        &mut dels,
        &mut adds,
        |k, v| Elem::IpEndpoint(*k, *v),
    );
    map_diff(
        &current.port_endpoints,
        &desired.port_endpoints,
        &mut dels,
        &mut adds,
        |k, v| Elem::PortEndpoint(*k, *v),
    );
    map_diff(
        &current.endpoints,
        &desired.endpoints,
        &mut dels,
        &mut adds,
        |k, v| Elem::Endpoint(*k, *v),
    );
    set_diff(
        &current.no_endpoints,
        &desired.no_endpoints,
        &mut dels,
        &mut adds,
        |k| Elem::NoEndpoints(*k),
    );
    set_diff(
        &current.no_endpoint_node_ports,
        &desired.no_endpoint_node_ports,
        &mut dels,
        &mut adds,
        |k| Elem::NoEndpointNodePort(*k),
    );
    set_diff(
        &current.hairpin,
        &desired.hairpin,
        &mut dels,
        &mut adds,
        |k| Elem::Hairpin(*k),
    );
    let mut ops: Vec<Op> = dels.into_iter().map(Op::DelElem).collect();
    for (name, c) in &current.chains {
        if !desired.chains.contains_key(name) {
            ops.push(Op::DelChain(c.clone()));
        }
    }
    for (name, c) in &desired.chains {
        match current.chains.get(name) {
            Some(old) if old == c => {}
            Some(_) => ops.push(Op::SetRule(c.clone())),
            None => ops.push(Op::AddChain(c.clone())),
        }
    }
    // AddChain after SetRule keeps the order documented on `Op`.
    ops.sort_by_key(|op| match op {
        Op::DelElem(_) => 0,
        Op::DelChain(_) => 1,
        Op::SetRule(_) => 2,
        Op::AddChain(_) => 3,
        Op::AddElem(_) => 4,
    });
    ops.extend(adds.into_iter().map(Op::AddElem));
    ops
}

/// The UDP endpoints `ops` take away from a Service address or NodePort (and do not give
/// back to it): their conntrack entries must go. Endpoints of large service ports are not
/// covered yet (their map keys do not carry the protocol).
pub fn removed_udp_endpoints(ops: &[Op]) -> BTreeSet<SocketAddrV4> {
    let mut removed = BTreeSet::new();
    let mut added = BTreeSet::new();
    for op in ops {
        let (set, e) = match op {
            Op::DelElem(e) => (&mut removed, e),
            Op::AddElem(e) => (&mut added, e),
            _ => continue,
        };
        match e {
            Elem::IpEndpoint((k, _), (_, a)) if k.proto == Proto::Udp => {
                set.insert((Some(*k), None, *a));
            }
            Elem::PortEndpoint((k, _), (_, a)) if k.proto == Proto::Udp => {
                set.insert((None, Some(*k), *a));
            }
            _ => {}
        }
    }
    removed.difference(&added).map(|(_, _, a)| *a).collect()
}

/// The chains whose ClientIP affinity entries may now be stale, each with the slots whose
/// endpoint left: chains that lost or swapped an endpoint, were replaced (count or affinity
/// changed) or deleted (their id may be reused).
pub fn affinity_touched(ops: &[Op]) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut out: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::DelElem(Elem::Endpoint((id, slot), _)) => {
                out.entry(*id).or_default().insert(*slot);
            }
            Op::DelChain(c) | Op::SetRule(c) => {
                out.entry(c.id).or_default();
            }
            _ => {}
        }
    }
    out
}

fn map_diff<K: Ord, V: PartialEq>(
    cur: &BTreeMap<K, V>,
    des: &BTreeMap<K, V>,
    dels: &mut Vec<Elem>,
    adds: &mut Vec<Elem>,
    elem: impl Fn(&K, &V) -> Elem,
) {
    for (k, v) in cur {
        if des.get(k) != Some(v) {
            dels.push(elem(k, v));
        }
    }
    for (k, v) in des {
        if cur.get(k) != Some(v) {
            adds.push(elem(k, v));
        }
    }
}

fn set_diff<K: Ord>(
    cur: &BTreeSet<K>,
    des: &BTreeSet<K>,
    dels: &mut Vec<Elem>,
    adds: &mut Vec<Elem>,
    elem: impl Fn(&K) -> Elem,
) {
    dels.extend(cur.difference(des).map(&elem));
    adds.extend(des.difference(cur).map(&elem));
}

fn refuse(op: &Op, reason: &'static str) -> Error {
    Error::Fake {
        op: format!("{op:?}"),
        reason,
    }
}

impl Ruleset {
    /// Applies one operation as the kernel would, refusing what it would refuse: deleting
    /// what is absent, adding a key that holds other data, pointing at a missing chain,
    /// deleting a chain an element still points at.
    pub fn apply_op(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::AddChain(c) => {
                if self.chains.insert(c.name(), c.clone()).is_some() {
                    return Err(refuse(op, "chain exists"));
                }
            }
            Op::SetRule(c) => match self.chains.get_mut(&c.name()) {
                Some(old) => *old = c.clone(),
                None => return Err(refuse(op, "no such chain")),
            },
            Op::DelChain(c) => {
                let name = c.name();
                let target = Target::Chain(name.clone());
                if self.service_ips.values().any(|v| *v == target)
                    || self.node_ports.values().any(|v| *v == target)
                {
                    return Err(refuse(op, "chain in use"));
                }
                if self.chains.remove(&name).is_none() {
                    return Err(refuse(op, "no such chain"));
                }
            }
            Op::AddElem(e) => self.add_elem(op, e)?,
            Op::DelElem(e) => {
                let gone = match e {
                    Elem::ServiceIp(k, _) => self.service_ips.remove(k).is_some(),
                    Elem::NodePort(k, _) => self.node_ports.remove(k).is_some(),
                    Elem::NodePortLocal(k, _) => self.node_ports_local.remove(k).is_some(),
                    Elem::NoEndpoints(k) => self.no_endpoints.remove(k),
                    Elem::NoEndpointNodePort(k) => self.no_endpoint_node_ports.remove(k),
                    Elem::IpEndpoint(k, _) => self.ip_endpoints.remove(k).is_some(),
                    Elem::PortEndpoint(k, _) => self.port_endpoints.remove(k).is_some(),
                    Elem::Endpoint(k, _) => self.endpoints.remove(k).is_some(),
                    Elem::Hairpin(k) => self.hairpin.remove(k),
                };
                if !gone {
                    return Err(refuse(op, "no such element"));
                }
            }
        }
        Ok(())
    }

    fn add_elem(&mut self, op: &Op, e: &Elem) -> Result<()> {
        fn put<K: Ord, V: PartialEq>(m: &mut BTreeMap<K, V>, k: K, v: V, op: &Op) -> Result<()> {
            match m.get(&k) {
                Some(old) if *old != v => Err(refuse(op, "key holds other data")),
                _ => {
                    m.insert(k, v);
                    Ok(())
                }
            }
        }
        match e {
            Elem::ServiceIp(_, Target::Chain(c)) | Elem::NodePort(_, Target::Chain(c))
                if !self.chains.contains_key(c) =>
            {
                return Err(refuse(op, "verdict points at a missing chain"));
            }
            Elem::ServiceIp(_, Target::Small(n))
            | Elem::NodePort(_, Target::Small(n))
            | Elem::NodePortLocal(_, n)
            | Elem::IpEndpoint(_, (n, _))
            | Elem::PortEndpoint(_, (n, _))
                if !(1..=SMALL_MAX).contains(n) =>
            {
                return Err(refuse(op, "no such fixed chain or map"));
            }
            _ => {}
        }
        match e {
            Elem::ServiceIp(k, chain) => put(&mut self.service_ips, *k, chain.clone(), op)?,
            Elem::NodePort(k, chain) => put(&mut self.node_ports, *k, chain.clone(), op)?,
            Elem::NodePortLocal(k, n) => put(&mut self.node_ports_local, *k, *n, op)?,
            Elem::NoEndpoints(k) => {
                self.no_endpoints.insert(*k);
            }
            Elem::NoEndpointNodePort(k) => {
                self.no_endpoint_node_ports.insert(*k);
            }
            Elem::IpEndpoint(k, v) => put(&mut self.ip_endpoints, *k, *v, op)?,
            Elem::PortEndpoint(k, v) => put(&mut self.port_endpoints, *k, *v, op)?,
            Elem::Endpoint(k, v) => put(&mut self.endpoints, *k, *v, op)?,
            Elem::Hairpin(k) => {
                self.hairpin.insert(*k);
            }
        }
        Ok(())
    }

    /// Applies `ops` in order, stopping at the first refusal (the kernel would roll the
    /// whole batch back; callers keep their own copy if they need that).
    pub fn apply_all(&mut self, ops: &[Op]) -> Result<()> {
        ops.iter().try_for_each(|op| self.apply_op(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080)
    }

    fn key(last: u8) -> IpKey {
        IpKey {
            ip: Ipv4Addr::new(10, 96, 0, last),
            proto: Proto::Tcp,
            port: 80,
        }
    }

    fn with_service(r: &mut Ruleset, svc: u8, eps: &[u8]) {
        let n = eps.len() as u32;
        r.service_ips.insert(key(svc), Target::Small(n));
        for (slot, e) in eps.iter().enumerate() {
            r.ip_endpoints.insert((key(svc), slot as u32), (n, ep(*e)));
            r.hairpin.insert(*ep(*e).ip());
        }
    }

    fn with_big_service(r: &mut Ruleset, id: u32, eps: &[u8]) {
        let c = SvcChain {
            id,
            label: format!("ns/s{id}/http"),
            endpoints: eps.len() as u32,
            affinity: None,
        };
        r.service_ips.insert(key(id as u8), Target::Chain(c.name()));
        for (slot, e) in eps.iter().enumerate() {
            r.endpoints.insert((id, slot as u32), ep(*e));
            r.hairpin.insert(*ep(*e).ip());
        }
        r.chains.insert(c.name(), c);
    }

    fn check(current: &Ruleset, desired: &Ruleset, expected_ops: usize) {
        let ops = diff(current, desired);
        let mut state = current.clone();
        state
            .apply_all(&ops)
            .expect("kernel model refused the diff");
        assert_eq!(&state, desired);
        assert_eq!(ops.len(), expected_ops, "{ops:#?}");
    }

    #[test]
    fn chain_names_round_trip() {
        assert_eq!(
            parse_chain_name(&chain_name(7, "ns/a/b")),
            Some((7, "ns/a/b".into()))
        );
        assert_eq!(parse_chain_name("services"), None);
    }

    #[test]
    fn from_empty_adds_everything_and_back() {
        let mut r = Ruleset::default();
        with_service(&mut r, 1, &[1, 2, 3]);
        with_big_service(&mut r, 2, &[4, 5]);
        // small: service-ip, 3 endpoints, 3 hairpins; big: chain, service-ip, 2 + 2
        check(&Ruleset::default(), &r, 13);
        check(&r, &Ruleset::default(), 13);
    }

    #[test]
    fn removing_an_endpoint_touches_only_elements_or_one_rule() {
        let mut a = Ruleset::default();
        with_service(&mut a, 1, &[1, 2, 3]);
        with_big_service(&mut a, 2, &[4, 5, 6]);
        let mut b = Ruleset::default();
        with_service(&mut b, 1, &[1, 2]);
        with_big_service(&mut b, 2, &[4, 5]);
        // small: service-ip moves from 3 to 2 (2 ops), 3 endpoints out of map 3, 2 into
        // map 2, a hairpin; big: an endpoint, a hairpin, the rule.
        check(&a, &b, 2 + 5 + 1 + 3);
    }

    #[test]
    fn only_udp_endpoints_that_leave_a_key_need_their_flows_deleted() {
        let udp = |last| IpKey {
            proto: Proto::Udp,
            ..key(last)
        };
        let mut a = Ruleset::default();
        a.service_ips.insert(udp(1), Target::Small(3));
        a.service_ips.insert(key(2), Target::Small(1));
        for (slot, e) in [1, 2, 3].into_iter().enumerate() {
            a.ip_endpoints.insert((udp(1), slot as u32), (3, ep(e)));
        }
        a.ip_endpoints.insert((key(2), 0), (1, ep(9)));
        let mut b = a.clone();
        b.service_ips.insert(udp(1), Target::Small(2));
        b.ip_endpoints.clear();
        // 10.244.0.2 moves from slot 1 of map 3 to slot 1 of map 2; .3 leaves; the TCP
        // service's endpoint leaves too but has no UDP flows.
        b.ip_endpoints.insert((udp(1), 0), (2, ep(1)));
        b.ip_endpoints.insert((udp(1), 1), (2, ep(2)));
        let gone = removed_udp_endpoints(&diff(&a, &b));
        assert_eq!(gone, BTreeSet::from([ep(3)]));
    }

    #[test]
    fn unchanged_is_empty() {
        let mut a = Ruleset::default();
        with_service(&mut a, 1, &[1]);
        check(&a, &a.clone(), 0);
    }
}
