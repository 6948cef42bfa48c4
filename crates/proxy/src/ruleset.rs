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

/// A per-service-port chain `svc-<id>-<label>` and how it picks an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcChain {
    pub id: u32,
    /// `namespace/name:portname`, for people reading `nft list`.
    pub label: String,
    pub backends: Backends,
}

/// Up to [`INLINE_MAX`] endpoints are written into the chain's rules (rule `i` DNATs with
/// probability `1/(N-i)`, the last always); more go to the shared `endpoints` map, looked up
/// by `id . numgen random mod N`. Every rule bound to a data map costs the kernel a check per
/// element added to it, so binding the map from every service made loading quadratic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backends {
    Inline(Vec<SocketAddrV4>),
    /// The number of slots `0..N` the `endpoints` map holds for this chain's id.
    Map(u32),
}

/// The most endpoints a chain holds in its own rules.
pub const INLINE_MAX: usize = 16;

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

/// Everything the proxy programs that changes with Services and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Per-service-port chains by name.
    pub chains: BTreeMap<String, SvcChain>,
    /// `service-ips`: key -> `goto` the named chain.
    pub service_ips: BTreeMap<IpKey, String>,
    /// `service-nodeports`: key -> `goto` the named chain.
    pub node_ports: BTreeMap<PortKey, String>,
    /// `no-endpoint-services`: rejected at once.
    pub no_endpoints: BTreeSet<IpKey>,
    /// `no-endpoint-nodeports`: rejected at once on local addresses.
    pub no_endpoint_node_ports: BTreeSet<PortKey>,
    /// `endpoints`: `svc id . slot` -> endpoint address and port, for chains with
    /// [`Backends::Map`].
    pub endpoints: BTreeMap<(u32, u32), SocketAddrV4>,
    /// `hairpin`: `ep . ep` for every endpoint IP, so a pod reaching itself through a
    /// Service is masqueraded (else it would answer itself from the wrong address).
    pub hairpin: BTreeSet<Ipv4Addr>,
}

/// One element of one of the maps or sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    ServiceIp(IpKey, String),
    NodePort(PortKey, String),
    NoEndpoints(IpKey),
    NoEndpointNodePort(PortKey),
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
                if self.service_ips.values().any(|v| *v == name)
                    || self.node_ports.values().any(|v| *v == name)
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
                    Elem::NoEndpoints(k) => self.no_endpoints.remove(k),
                    Elem::NoEndpointNodePort(k) => self.no_endpoint_node_ports.remove(k),
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
        if let Elem::ServiceIp(_, chain) | Elem::NodePort(_, chain) = e
            && !self.chains.contains_key(chain)
        {
            return Err(refuse(op, "verdict points at a missing chain"));
        }
        match e {
            Elem::ServiceIp(k, chain) => put(&mut self.service_ips, *k, chain.clone(), op)?,
            Elem::NodePort(k, chain) => put(&mut self.node_ports, *k, chain.clone(), op)?,
            Elem::NoEndpoints(k) => {
                self.no_endpoints.insert(*k);
            }
            Elem::NoEndpointNodePort(k) => {
                self.no_endpoint_node_ports.insert(*k);
            }
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

    fn chain(id: u32, eps: &[u8]) -> SvcChain {
        SvcChain {
            id,
            label: format!("ns/s{id}:http"),
            backends: Backends::Inline(eps.iter().map(|e| ep(*e)).collect()),
        }
    }

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

    fn with_service(r: &mut Ruleset, id: u32, eps: &[u8]) {
        let c = chain(id, eps);
        r.service_ips.insert(key(id as u8), c.name());
        r.hairpin.extend(eps.iter().map(|e| *ep(*e).ip()));
        r.chains.insert(c.name(), c);
    }

    fn with_big_service(r: &mut Ruleset, id: u32, eps: &[u8]) {
        let mut c = chain(id, &[]);
        c.backends = Backends::Map(eps.len() as u32);
        r.service_ips.insert(key(id as u8), c.name());
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
        let c = chain(7, &[1]);
        assert_eq!(parse_chain_name(&c.name()), Some((7, c.label)));
        assert_eq!(parse_chain_name("services"), None);
    }

    #[test]
    fn from_empty_adds_everything_and_back() {
        let mut r = Ruleset::default();
        with_service(&mut r, 1, &[1, 2, 3]);
        // chain (with its rules), service-ip, 3 hairpins
        check(&Ruleset::default(), &r, 5);
        check(&r, &Ruleset::default(), 5);
    }

    #[test]
    fn removing_an_endpoint_touches_only_its_elements_and_the_rules() {
        let mut a = Ruleset::default();
        with_service(&mut a, 1, &[1, 2, 3]);
        with_big_service(&mut a, 2, &[4, 5, 6]);
        let mut b = Ruleset::default();
        with_service(&mut b, 1, &[1, 2]);
        with_big_service(&mut b, 2, &[4, 5]);
        // inline: hairpin element, rules; map: endpoint element, hairpin element, rule
        check(&a, &b, 5);
    }

    #[test]
    fn unchanged_is_empty() {
        let mut a = Ruleset::default();
        with_service(&mut a, 1, &[1]);
        check(&a, &a.clone(), 0);
    }
}
