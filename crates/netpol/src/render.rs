//! The typed [`Ruleset`] and [`Op`]s as nf_tables messages for the proxy's netlink layer
//! (`berth_proxy::nft`): set specs, element keys, and each [`Match`] as expressions.

use berth_proxy::nft::expr::{Base, CmpOp, MetaKey};
use berth_proxy::nft::{
    BaseChain, Data, Elem as NftElem, Expr, Hook as NftHook, Msg, Reg, SetData, SetSpec,
    Verdict as NftVerdict,
};

use crate::ruleset::{Chain, Elem, Hook, Match, Op, Rule, Ruleset, SetKind, Side, Verdict};

// nft's datatype ids, for `nft list` to print keys readably; concatenations shift by 6.
const T_IPV4: u32 = 7;
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const fn concat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

/// `ct state` bits: established (1 << 1) and related (1 << 2).
const CT_ESTABLISHED_RELATED: u32 = 0b110;

fn r(n: u32) -> Reg {
    Reg::r32(n)
}

/// The messages that build `r` from nothing: the table, sets, chains, rules, elements.
pub fn create(r: &Ruleset) -> Vec<Msg> {
    let mut out = vec![Msg::NewTable];
    out.extend(
        r.sets
            .iter()
            .map(|(name, s)| Msg::NewSet(spec(name, s.kind))),
    );
    for (name, c) in &r.chains {
        out.push(new_chain(name, c));
    }
    for (name, c) in &r.chains {
        out.extend(rules(name, c));
    }
    for (name, s) in &r.sets {
        if !s.elems.is_empty() {
            out.push(Msg::NewElems {
                set: name.clone(),
                elems: s.elems.iter().map(elem).collect(),
            });
        }
    }
    out
}

/// The messages for `ops`, in their order.
pub fn messages(ops: &[Op]) -> Vec<Msg> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::AddSet(name, kind) => out.push(Msg::NewSet(spec(name, *kind))),
            Op::AddChain(name, c) => {
                out.push(new_chain(name, c));
                out.extend(rules(name, c));
            }
            Op::AddElems(set, elems) => out.push(Msg::NewElems {
                set: set.clone(),
                elems: elems.iter().map(elem).collect(),
            }),
            Op::DelElems(set, elems) => out.push(Msg::DelElems {
                set: set.clone(),
                elems: elems.iter().map(elem).collect(),
            }),
            Op::DelChain(name) => {
                out.push(Msg::FlushChain { name: name.clone() });
                out.push(Msg::DelChain { name: name.clone() });
            }
            Op::DelSet(name) => out.push(Msg::DelSet { name: name.clone() }),
        }
    }
    out
}

fn new_chain(name: &str, c: &Chain) -> Msg {
    Msg::NewChain {
        name: name.to_owned(),
        base: c.hook.map(|(hook, priority)| BaseChain {
            hook: match hook {
                Hook::Forward => NftHook::Forward,
                Hook::Input => NftHook::Input,
            },
            priority,
            kind: "filter",
        }),
    }
}

fn rules<'a>(chain: &'a str, c: &'a Chain) -> impl Iterator<Item = Msg> + 'a {
    c.rules.iter().map(move |rule| Msg::NewRule {
        chain: chain.to_owned(),
        exprs: exprs(rule),
    })
}

fn spec(name: &str, kind: SetKind) -> SetSpec {
    let (key_len, key_type, data) = match kind {
        SetKind::Addrs => (4, T_IPV4, SetData::None),
        SetKind::Pairs => (8, concat(T_IPV4, T_IPV4), SetData::None),
        SetKind::Endpoints => (
            12,
            concat(concat(T_IPV4, T_PROTO), T_SERVICE),
            SetData::None,
        ),
        SetKind::Vmap => (4, T_IPV4, SetData::Verdict),
    };
    SetSpec {
        name: name.to_owned(),
        key_len,
        key_type,
        data,
        timeout: false,
        dynamic: false,
    }
}

/// An element's key (each field of a concatenation padded to 4 bytes) and data.
pub fn elem(e: &Elem) -> NftElem {
    let (key, data) = match e {
        Elem::Addr(ip) => (ip.octets().to_vec(), None),
        Elem::Pair(a, b) => ([a.octets(), b.octets()].concat(), None),
        Elem::Endpoint(ip, proto, port) => {
            let [hi, lo] = port.to_be_bytes();
            let mut key = ip.octets().to_vec();
            key.extend([proto.number(), 0, 0, 0, hi, lo, 0, 0]);
            (key, None)
        }
        Elem::Goto(ip, chain) => (
            ip.octets().to_vec(),
            Some(Data::Verdict(NftVerdict::Goto(chain.clone()))),
        ),
    };
    NftElem { key, data }
}

/// A rule's expressions: each match, then the verdict.
pub fn exprs(rule: &Rule) -> Vec<Expr> {
    let mut out: Vec<Expr> = rule.matches.iter().flat_map(match_exprs).collect();
    match &rule.verdict {
        Verdict::Accept => out.push(verdict(NftVerdict::Accept)),
        Verdict::Drop => out.push(verdict(NftVerdict::Drop)),
        Verdict::Vmap { side, map } => out.extend([
            addr(*side, 0),
            Expr::Lookup {
                set: map.clone(),
                sreg: r(0),
                dreg: Some(Reg::VERDICT),
            },
        ]),
    }
    out
}

fn verdict(v: NftVerdict) -> Expr {
    Expr::Immediate {
        dreg: Reg::VERDICT,
        data: Data::Verdict(v),
    }
}

/// `ip saddr|daddr` into register `reg`.
fn addr(side: Side, reg: u32) -> Expr {
    Expr::Payload {
        base: Base::Network,
        offset: match side {
            Side::Src => 12,
            Side::Dst => 16,
        },
        len: 4,
        dreg: r(reg),
    }
}

/// `th dport` into register `reg`.
fn dport(reg: u32) -> Expr {
    Expr::Payload {
        base: Base::Transport,
        offset: 2,
        len: 2,
        dreg: r(reg),
    }
}

fn l4proto(reg: u32) -> Expr {
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: r(reg),
    }
}

fn cmp(op: CmpOp, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: r(0),
        op,
        data,
    }
}

fn lookup(set: &str) -> Expr {
    Expr::Lookup {
        set: set.to_owned(),
        sreg: r(0),
        dreg: None,
    }
}

fn match_exprs(m: &Match) -> Vec<Expr> {
    match m {
        Match::Established => vec![
            Expr::Ct { key: 0, dreg: r(0) },
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            cmp(CmpOp::Neq, vec![0; 4]),
        ],
        Match::Addr { side, net, not } => {
            let op = if *not { CmpOp::Neq } else { CmpOp::Eq };
            let mut v = vec![addr(*side, 0)];
            if net.prefix_len() < 32 {
                v.push(Expr::Bitwise {
                    sreg: r(0),
                    dreg: r(0),
                    mask: net.netmask().octets().to_vec(),
                    xor: vec![0; 4],
                });
            }
            v.push(cmp(op, net.network().octets().to_vec()));
            v
        }
        Match::InSet { side, set } => vec![addr(*side, 0), lookup(set)],
        Match::Pair { set } => vec![addr(Side::Src, 0), addr(Side::Dst, 1), lookup(set)],
        Match::Proto(p) => vec![l4proto(0), cmp(CmpOp::Eq, vec![p.number()])],
        Match::Ports(first, last) if first == last => {
            vec![dport(0), cmp(CmpOp::Eq, first.to_be_bytes().to_vec())]
        }
        Match::Ports(first, last) => vec![
            dport(0),
            cmp(CmpOp::Gte, first.to_be_bytes().to_vec()),
            cmp(CmpOp::Lte, last.to_be_bytes().to_vec()),
        ],
        Match::Endpoint { set } => vec![addr(Side::Dst, 0), l4proto(1), dport(2), lookup(set)],
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::Proto;

    #[test]
    fn concatenated_keys_are_padded_per_field() {
        let e = elem(&Elem::Endpoint(Ipv4Addr::new(10, 0, 0, 1), Proto::Udp, 53));
        assert_eq!(e.key, [10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(e.key.len() as u32, spec("s", SetKind::Endpoints).key_len);
        let e = elem(&Elem::Pair(
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::new(5, 6, 7, 8),
        ));
        assert_eq!(e.key.len() as u32, spec("s", SetKind::Pairs).key_len);
    }

    #[test]
    fn port_ranges_compare_big_endian_bounds() {
        let v = match_exprs(&Match::Ports(80, 443));
        assert_eq!(
            v[1..],
            [cmp(CmpOp::Gte, vec![0, 80]), cmp(CmpOp::Lte, vec![1, 187])]
        );
    }
}
