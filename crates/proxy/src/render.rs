//! The rule shape, in one place: the fixed skeleton of `table ip berth` (sets, base chains,
//! dispatch rules), the rule of a per-service-port chain, element encodings, and turning a
//! [`Op`] list into nf_tables messages, or the kernel's dump back into a [`Ruleset`].
//!
//! Shape: `service-ips` (`ipv4_addr . inet_proto . inet_service : verdict`) and
//! `service-nodeports` (`inet_proto . inet_service : verdict`) `goto` a chain per service
//! port; that chain DNATs to one of its endpoints, written into its own rules (see
//! [`service_rules`]) or, past [`crate::ruleset::INLINE_MAX`], looked up as
//! `id . numgen random mod N` in the one shared `endpoints` map. No anonymous sets, a
//! handful of named ones, so the load stays linear.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::nft::RawExpr;
use crate::nft::expr::{Base, CmpOp, MetaKey, Reject};
use crate::nft::{
    BaseChain, Data, Elem as NftElem, Expr, Hook, Msg, Reg, SetData, SetSpec, Verdict,
};
use crate::ruleset::{
    Backends, Elem, IpKey, Op, PortKey, Proto, Ruleset, SvcChain, parse_chain_name,
};

pub const TABLE: &str = "berth";
pub const SERVICE_IPS: &str = "service-ips";
pub const NODE_PORTS: &str = "service-nodeports";
pub const NO_ENDPOINTS: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODE_PORTS: &str = "no-endpoint-nodeports";
pub const ENDPOINTS: &str = "endpoints";
pub const HAIRPIN: &str = "hairpin";

// nft's datatype ids (for `nft list` to print keys readably); concatenations shift by 6.
const T_VERDICT: u32 = 1;
const T_IPV4: u32 = 7;
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const T_MARK: u32 = 19;
const fn concat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}
/// `RTN_LOCAL`, what `fib daddr type` yields for the node's own addresses.
const RTN_LOCAL: u32 = 2;

fn r(n: u32) -> Reg {
    Reg::r32(n)
}

fn load_daddr_proto_dport() -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: Base::Network,
            offset: 16,
            len: 4,
            dreg: r(0),
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r(1),
        },
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: r(2),
        },
    ]
}

/// `fib daddr type local meta l4proto . th dport` into r0, r1.
fn load_local_proto_dport() -> Vec<Expr> {
    vec![
        Expr::FibDaddrType { dreg: r(0) },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r(0),
        },
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: r(1),
        },
    ]
}

fn lookup(set: &str, dreg: Option<Reg>) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: r(0),
        dreg,
    }
}

fn jump(chain: &str) -> Vec<Expr> {
    vec![Expr::Immediate {
        dreg: Reg::VERDICT,
        data: Data::Verdict(Verdict::Jump(chain.into())),
    }]
}

/// The sets of the skeleton.
pub fn sets() -> Vec<SetSpec> {
    let set = |name: &str, key_len, key_type, data| SetSpec {
        name: name.into(),
        key_len,
        key_type,
        data,
        timeout: false,
    };
    let ip_key = concat(concat(T_IPV4, T_PROTO), T_SERVICE);
    let port_key = concat(T_PROTO, T_SERVICE);
    let _ = T_VERDICT;
    vec![
        set(SERVICE_IPS, 12, ip_key, SetData::Verdict),
        set(NODE_PORTS, 8, port_key, SetData::Verdict),
        set(NO_ENDPOINTS, 12, ip_key, SetData::None),
        set(NO_ENDPOINT_NODE_PORTS, 8, port_key, SetData::None),
        set(
            ENDPOINTS,
            8,
            concat(T_MARK, T_MARK),
            SetData::Value {
                len: 8,
                ty: concat(T_IPV4, T_SERVICE),
            },
        ),
        set(HAIRPIN, 8, concat(T_IPV4, T_IPV4), SetData::None),
    ]
}

/// One fixed chain with its rules.
pub struct FixedChain {
    pub name: &'static str,
    pub base: Option<BaseChain>,
    pub rules: Vec<Vec<Expr>>,
}

/// The fixed chains, in creation order (jump targets first). `mark` is the masquerade bit.
pub fn chains(mark: u32) -> Vec<FixedChain> {
    let base = |hook, priority, kind| {
        Some(BaseChain {
            hook,
            priority,
            kind,
        })
    };
    let mut services_ip = load_daddr_proto_dport();
    services_ip.push(lookup(SERVICE_IPS, Some(Reg::VERDICT)));
    let mut services_np = load_local_proto_dport();
    services_np.extend([
        lookup(NODE_PORTS, None),
        // meta mark set mark | MARK: traffic to a NodePort is masqueraded on the way out.
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: r(2),
        },
        Expr::Bitwise {
            sreg: r(2),
            dreg: r(2),
            mask: (!mark).to_ne_bytes().to_vec(),
            xor: mark.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r(2),
        },
        lookup(NODE_PORTS, Some(Reg::VERDICT)),
    ]);
    let masq_marked = vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: r(0),
        },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(0),
            mask: mark.to_ne_bytes().to_vec(),
            xor: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Neq,
            data: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Masquerade,
    ];
    let masq_hairpin = vec![
        Expr::Payload {
            base: Base::Network,
            offset: 12,
            len: 4,
            dreg: r(0),
        },
        Expr::Payload {
            base: Base::Network,
            offset: 16,
            len: 4,
            dreg: r(1),
        },
        lookup(HAIRPIN, None),
        Expr::Masquerade,
    ];
    // TCP gets a reset (an ICMP error for a forwarded pod's SYN was not honoured in our
    // tests), everything else ICMP port unreachable. `proto` is the register holding
    // l4proto after the loads.
    let reject = |mut load: Vec<Expr>, set: &str, proto: u32| {
        let mut tcp = load.clone();
        tcp.extend([
            lookup(set, None),
            Expr::Cmp {
                sreg: r(proto),
                op: CmpOp::Eq,
                data: vec![Proto::Tcp.number(), 0, 0, 0],
            },
            Expr::Reject(Reject::TcpReset),
        ]);
        load.extend([lookup(set, None), Expr::Reject(Reject::Icmp(3))]);
        [tcp, load]
    };
    let [reject_ip_tcp, reject_ip] = reject(load_daddr_proto_dport(), NO_ENDPOINTS, 1);
    let [reject_np_tcp, reject_np] = reject(load_local_proto_dport(), NO_ENDPOINT_NODE_PORTS, 0);
    vec![
        FixedChain {
            name: "services",
            base: None,
            rules: vec![services_ip, services_np],
        },
        FixedChain {
            name: "no-endpoints",
            base: None,
            rules: vec![reject_ip_tcp, reject_ip, reject_np_tcp, reject_np],
        },
        FixedChain {
            name: "nat-prerouting",
            base: base(Hook::Prerouting, -100, "nat"),
            rules: vec![jump("services")],
        },
        FixedChain {
            name: "nat-output",
            base: base(Hook::Output, -100, "nat"),
            rules: vec![jump("services")],
        },
        FixedChain {
            name: "nat-postrouting",
            base: base(Hook::Postrouting, 100, "nat"),
            rules: vec![masq_marked, masq_hairpin],
        },
        FixedChain {
            name: "filter-input",
            base: base(Hook::Input, 0, "filter"),
            rules: vec![jump("no-endpoints")],
        },
        FixedChain {
            name: "filter-forward",
            base: base(Hook::Forward, 0, "filter"),
            rules: vec![jump("no-endpoints")],
        },
        FixedChain {
            name: "filter-output",
            base: base(Hook::Output, 0, "filter"),
            rules: vec![jump("no-endpoints")],
        },
    ]
}

/// The messages that create the skeleton's missing parts. Existing chains keep their rules;
/// declaring an existing set again is a no-op.
pub fn skeleton(mark: u32, have_chains: &[String]) -> Vec<Msg> {
    let mut out = vec![Msg::NewTable];
    out.extend(sets().into_iter().map(Msg::NewSet));
    for c in chains(mark) {
        if have_chains.iter().any(|h| h == c.name) {
            continue;
        }
        out.push(Msg::NewChain {
            name: c.name.into(),
            base: c.base.clone(),
        });
        out.extend(c.rules.into_iter().map(|exprs| Msg::NewRule {
            chain: c.name.into(),
            exprs,
        }));
    }
    out
}

/// A service-port chain's rules. Inline: rule `i` of `N` is `numgen random mod (N-i) == 0`
/// then `dnat` to endpoint `i` (so each is chosen with probability `1/N`), the last rule
/// unconditional. Map: `id . numgen random mod N` looked up in `endpoints`, then `dnat`.
pub fn service_rules(c: &SvcChain) -> Vec<Vec<Expr>> {
    match &c.backends {
        Backends::Inline(eps) => {
            let n = eps.len();
            eps.iter()
                .enumerate()
                .map(|(i, ep)| {
                    let mut rule = Vec::new();
                    if i + 1 < n {
                        rule.push(Expr::NumgenRandom {
                            dreg: r(0),
                            modulus: (n - i) as u32,
                        });
                        rule.push(Expr::Cmp {
                            sreg: r(0),
                            op: CmpOp::Eq,
                            data: 0u32.to_ne_bytes().to_vec(),
                        });
                    }
                    rule.extend([
                        Expr::Immediate {
                            dreg: r(1),
                            data: Data::Value(ep.ip().octets().to_vec()),
                        },
                        Expr::Immediate {
                            dreg: r(2),
                            data: Data::Value(ep.port().to_be_bytes().to_vec()),
                        },
                        Expr::Nat {
                            dnat: true,
                            addr: r(1),
                            port: Some(r(2)),
                        },
                    ]);
                    rule
                })
                .collect()
        }
        Backends::Map(n) => vec![vec![
            Expr::Immediate {
                dreg: r(0),
                data: Data::Value(c.id.to_ne_bytes().to_vec()),
            },
            Expr::NumgenRandom {
                dreg: r(1),
                modulus: *n,
            },
            lookup(ENDPOINTS, Some(r(2))),
            Expr::Nat {
                dnat: true,
                addr: r(2),
                port: Some(r(3)),
            },
        ]],
    }
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn ip_key(k: &IpKey) -> Vec<u8> {
    let mut v = k.ip.octets().to_vec();
    v.push(k.proto.number());
    pad4(&mut v);
    v.extend(k.port.to_be_bytes());
    pad4(&mut v);
    v
}

fn port_key(k: &PortKey) -> Vec<u8> {
    let mut v = vec![k.proto.number()];
    pad4(&mut v);
    v.extend(k.port.to_be_bytes());
    pad4(&mut v);
    v
}

fn addr_port(a: &SocketAddrV4) -> Vec<u8> {
    let mut v = a.ip().octets().to_vec();
    v.extend(a.port().to_be_bytes());
    pad4(&mut v);
    v
}

fn goto(chain: &str) -> Option<Data> {
    Some(Data::Verdict(Verdict::Goto(chain.into())))
}

/// The set an element lives in and its netlink form.
fn encode(e: &Elem) -> (&'static str, NftElem) {
    let (set, key, data) = match e {
        Elem::ServiceIp(k, chain) => (SERVICE_IPS, ip_key(k), goto(chain)),
        Elem::NodePort(k, chain) => (NODE_PORTS, port_key(k), goto(chain)),
        Elem::NoEndpoints(k) => (NO_ENDPOINTS, ip_key(k), None),
        Elem::NoEndpointNodePort(k) => (NO_ENDPOINT_NODE_PORTS, port_key(k), None),
        Elem::Endpoint((id, slot), a) => {
            let mut key = id.to_ne_bytes().to_vec();
            key.extend(slot.to_ne_bytes());
            (ENDPOINTS, key, Some(Data::Value(addr_port(a))))
        }
        Elem::Hairpin(ip) => {
            let mut key = ip.octets().to_vec();
            key.extend(ip.octets());
            (HAIRPIN, key, None)
        }
    };
    (set, NftElem { key, data })
}

/// The messages for `ops`, consecutive element operations on one set merged into one list.
pub fn messages(ops: &[Op]) -> Vec<Msg> {
    let mut out: Vec<Msg> = Vec::new();
    for op in ops {
        match op {
            Op::AddElem(e) | Op::DelElem(e) => {
                let add = matches!(op, Op::AddElem(_));
                let (set, elem) = encode(e);
                match out.last_mut() {
                    Some(Msg::NewElems { set: s, elems }) if add && s == set => elems.push(elem),
                    Some(Msg::DelElems { set: s, elems }) if !add && s == set => elems.push(elem),
                    _ => {
                        let (set, elems) = (set.to_owned(), vec![elem]);
                        out.push(if add {
                            Msg::NewElems { set, elems }
                        } else {
                            Msg::DelElems { set, elems }
                        });
                    }
                }
            }
            Op::DelChain(c) => out.push(Msg::DelChain { name: c.name() }),
            Op::SetRule(c) | Op::AddChain(c) => {
                out.push(if matches!(op, Op::SetRule(_)) {
                    Msg::FlushChain { name: c.name() }
                } else {
                    Msg::NewChain {
                        name: c.name(),
                        base: None,
                    }
                });
                out.extend(service_rules(c).into_iter().map(|exprs| Msg::NewRule {
                    chain: c.name(),
                    exprs,
                }));
            }
        }
    }
    out
}

fn parse_ip_key(k: &[u8]) -> Option<IpKey> {
    Some(IpKey {
        ip: Ipv4Addr::new(*k.first()?, *k.get(1)?, *k.get(2)?, *k.get(3)?),
        proto: Proto::from_number(*k.get(4)?)?,
        port: u16::from_be_bytes([*k.get(8)?, *k.get(9)?]),
    })
}

fn parse_port_key(k: &[u8]) -> Option<PortKey> {
    Some(PortKey {
        proto: Proto::from_number(*k.first()?)?,
        port: u16::from_be_bytes([*k.get(4)?, *k.get(5)?]),
    })
}

fn goto_target(d: &Option<Data>) -> Option<String> {
    match d {
        Some(Data::Verdict(Verdict::Goto(c))) => Some(c.clone()),
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Fills one set's worth of a ruleset from dumped elements; elements we would not have
/// written are skipped (the next diff does not know them, so they stay until cleanup).
pub fn read_elems(r: &mut Ruleset, set: &str, elems: &[NftElem]) {
    for e in elems {
        let k = &e.key;
        match set {
            SERVICE_IPS => {
                if let (Some(key), Some(c)) = (parse_ip_key(k), goto_target(&e.data)) {
                    r.service_ips.insert(key, c);
                }
            }
            NODE_PORTS => {
                if let (Some(key), Some(c)) = (parse_port_key(k), goto_target(&e.data)) {
                    r.node_ports.insert(key, c);
                }
            }
            NO_ENDPOINTS => {
                r.no_endpoints.extend(parse_ip_key(k));
            }
            NO_ENDPOINT_NODE_PORTS => {
                r.no_endpoint_node_ports.extend(parse_port_key(k));
            }
            ENDPOINTS => {
                let (Some(id), Some(slot), Some(Data::Value(v))) =
                    (u32_at(k, 0), u32_at(k, 4), &e.data)
                else {
                    continue;
                };
                if let (Some(ip), Some(port)) = (v.get(..4), v.get(4..6)) {
                    let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
                    let port = u16::from_be_bytes([port[0], port[1]]);
                    r.endpoints.insert((id, slot), SocketAddrV4::new(ip, port));
                }
            }
            HAIRPIN => {
                if let Some(ip) = k.get(..4) {
                    r.hairpin.insert(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
                }
            }
            _ => {}
        }
    }
}

/// A service-port chain as dumped, from its name and its rules' expressions: a `lookup`
/// means the map form (its `numgen` modulus is the slot count), else each rule's two
/// `immediate` values are an endpoint's address and port.
pub fn read_chain(name: &str, rules: &[&[RawExpr]]) -> Option<SvcChain> {
    let (id, label) = parse_chain_name(name)?;
    let is_map = rules
        .iter()
        .flat_map(|r| r.iter())
        .any(|e| e.name == "lookup");
    let backends = if is_map {
        let n = rules
            .iter()
            .flat_map(|r| r.iter())
            .find_map(RawExpr::numgen_modulus);
        Backends::Map(n.unwrap_or(0))
    } else {
        Backends::Inline(
            rules
                .iter()
                .filter_map(|rule| {
                    let mut values = rule.iter().filter_map(RawExpr::immediate_value);
                    let ip: [u8; 4] = values.next()?.try_into().ok()?;
                    let port: [u8; 2] = values.next()?.get(..2)?.try_into().ok()?;
                    Some(SocketAddrV4::new(ip.into(), u16::from_be_bytes(port)))
                })
                .collect(),
        )
    };
    Some(SvcChain {
        id,
        label,
        backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = IpKey {
            ip: Ipv4Addr::new(10, 96, 0, 50),
            proto: Proto::Udp,
            port: 53,
        };
        assert_eq!(ip_key(&k).len(), 12);
        assert_eq!(parse_ip_key(&ip_key(&k)), Some(k));
        let p = PortKey {
            proto: Proto::Tcp,
            port: 30007,
        };
        assert_eq!(parse_port_key(&port_key(&p)), Some(p));
    }

    #[test]
    fn elements_read_back_as_written() {
        let elems = [
            Elem::ServiceIp(
                IpKey {
                    ip: Ipv4Addr::new(10, 96, 0, 1),
                    proto: Proto::Tcp,
                    port: 443,
                },
                "svc-1-a/b:".into(),
            ),
            Elem::Endpoint(
                (1, 0),
                SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 8080),
            ),
            Elem::Hairpin(Ipv4Addr::new(10, 244, 0, 5)),
        ];
        let mut r = Ruleset::default();
        for e in &elems {
            let (set, ne) = encode(e);
            read_elems(&mut r, set, &[ne]);
        }
        let mut expected = Ruleset::default();
        for e in &elems {
            // The fake refuses verdicts to missing chains; insert directly instead.
            match e {
                Elem::ServiceIp(k, c) => {
                    expected.service_ips.insert(*k, c.clone());
                }
                Elem::Endpoint(k, a) => {
                    expected.endpoints.insert(*k, *a);
                }
                Elem::Hairpin(ip) => {
                    expected.hairpin.insert(*ip);
                }
                _ => {}
            }
        }
        assert_eq!(r, expected);
    }

    #[test]
    fn consecutive_element_ops_share_a_message() {
        let ops: Vec<Op> = (1..=3)
            .map(|i| Op::AddElem(Elem::Hairpin(Ipv4Addr::new(10, 0, 0, i))))
            .collect();
        assert_eq!(messages(&ops).len(), 1);
    }
}
