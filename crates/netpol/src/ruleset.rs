//! The typed content of `table ip berth-netpol`: chains of rules and named sets, what
//! [`crate::desired`] computes, [`diff`] compares and [`crate::render`] turns into nf_tables
//! messages. [`Ruleset::trace`] runs a packet through it, so tests check verdicts, not text.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::policy::Proto;

/// Which address of the packet a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Src,
    Dst,
}

/// The netfilter hooks the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Forward,
    Input,
}

/// One condition of a rule; a rule's conditions all hold for it to apply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    /// `ct state established,related`.
    Established,
    /// `ip saddr|daddr [!=] NET`.
    Addr { side: Side, net: Ipv4Net, not: bool },
    /// `ip saddr|daddr @SET` (a set of addresses).
    InSet { side: Side, set: String },
    /// `ip saddr . ip daddr @SET` (a set of address pairs).
    Pair { set: String },
    /// `meta l4proto P`.
    Proto(Proto),
    /// `th dport FIRST-LAST` (after a [`Match::Proto`]).
    Ports(u16, u16),
    /// `ip daddr . meta l4proto . th dport @SET`.
    Endpoint { set: String },
}

/// What a rule does when it applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// `ip saddr|daddr vmap @MAP`: `goto` the chain the address maps to, if any.
    Vmap {
        side: Side,
        map: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A chain: a base chain on a hook (filter type, policy accept) or a regular one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub hook: Option<(Hook, i32)>,
    pub rules: Vec<Rule>,
}

/// What a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    /// `ipv4_addr`
    Addrs,
    /// `ipv4_addr . ipv4_addr`
    Pairs,
    /// `ipv4_addr . inet_proto . inet_service`
    Endpoints,
    /// `ipv4_addr : verdict` (every verdict a `goto` to a chain).
    Vmap,
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    Addr(Ipv4Addr),
    Pair(Ipv4Addr, Ipv4Addr),
    Endpoint(Ipv4Addr, Proto, u16),
    /// `ADDR : goto CHAIN`.
    Goto(Ipv4Addr, String),
}

impl Elem {
    pub fn kind(&self) -> SetKind {
        match self {
            Elem::Addr(_) => SetKind::Addrs,
            Elem::Pair(..) => SetKind::Pairs,
            Elem::Endpoint(..) => SetKind::Endpoints,
            Elem::Goto(..) => SetKind::Vmap,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub kind: SetKind,
    pub elems: BTreeSet<Elem>,
}

impl Set {
    pub fn new(kind: SetKind) -> Set {
        Set {
            kind,
            elems: BTreeSet::new(),
        }
    }
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

/// One step of an incremental update. Chains are never changed in place: a chain's name
/// stands for its content (see [`crate::desired`]), so a different content is a new chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddSet(String, SetKind),
    AddChain(String, Chain),
    AddElems(String, Vec<Elem>),
    DelElems(String, Vec<Elem>),
    DelChain(String),
    DelSet(String),
}

/// How to bring the table from `old` to `new`: `Some(ops)` (in the order to send them:
/// new sets and chains, element changes, then what is gone), or `None` when only replacing
/// the table will do (a base chain, or a chain or set under the same name, changed).
pub fn diff(old: &Ruleset, new: &Ruleset) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    for (name, chain) in &old.chains {
        match new.chains.get(name) {
            Some(c) if c != chain => return None,
            None if chain.hook.is_some() => return None,
            _ => {}
        }
    }
    for (name, set) in &new.sets {
        match old.sets.get(name) {
            Some(s) if s.kind != set.kind => return None,
            Some(_) => {}
            None => {
                ops.push(Op::AddSet(name.clone(), set.kind));
                if !set.elems.is_empty() {
                    ops.push(Op::AddElems(
                        name.clone(),
                        set.elems.iter().cloned().collect(),
                    ));
                }
            }
        }
    }
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) {
            if chain.hook.is_some() {
                return None;
            }
            ops.push(Op::AddChain(name.clone(), chain.clone()));
        }
    }
    for (name, set) in &new.sets {
        let Some(was) = old.sets.get(name) else {
            continue;
        };
        let gone: Vec<Elem> = was.elems.difference(&set.elems).cloned().collect();
        let came: Vec<Elem> = set.elems.difference(&was.elems).cloned().collect();
        if !gone.is_empty() {
            ops.push(Op::DelElems(name.clone(), gone));
        }
        if !came.is_empty() {
            ops.push(Op::AddElems(name.clone(), came));
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            ops.push(Op::DelChain(name.clone()));
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            ops.push(Op::DelSet(name.clone()));
        }
    }
    Some(ops)
}

/// Why [`Ruleset::apply`] refused an op: the model and the kernel would disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct ApplyError {
    pub op: String,
    pub reason: &'static str,
}

/// A packet, as far as the table looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    pub dport: u16,
    /// Part of a connection conntrack has seen both ways (or related to one).
    pub established: bool,
}

impl Ruleset {
    /// Applies `ops` as the kernel would, refusing what it would refuse (a duplicate, a
    /// missing set or element, a chain still in use).
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        for op in ops {
            let fail = |reason| ApplyError {
                op: format!("{op:?}"),
                reason,
            };
            match op {
                Op::AddSet(name, kind) => {
                    if self.sets.insert(name.clone(), Set::new(*kind)).is_some() {
                        return Err(fail("set exists"));
                    }
                }
                Op::AddChain(name, chain) => {
                    if self.chains.insert(name.clone(), chain.clone()).is_some() {
                        return Err(fail("chain exists"));
                    }
                }
                Op::AddElems(set, elems) => {
                    let s = self.sets.get_mut(set).ok_or_else(|| fail("no such set"))?;
                    for e in elems {
                        if e.kind() != s.kind || !s.elems.insert(e.clone()) {
                            return Err(fail("element exists or has the wrong type"));
                        }
                    }
                }
                Op::DelElems(set, elems) => {
                    let s = self.sets.get_mut(set).ok_or_else(|| fail("no such set"))?;
                    for e in elems {
                        if !s.elems.remove(e) {
                            return Err(fail("no such element"));
                        }
                    }
                }
                Op::DelChain(name) => {
                    if self.chain_in_use(name) {
                        return Err(fail("chain in use"));
                    }
                    self.chains
                        .remove(name)
                        .ok_or_else(|| fail("no such chain"))?;
                }
                Op::DelSet(name) => {
                    if self.set_in_use(name) {
                        return Err(fail("set in use"));
                    }
                    self.sets.remove(name).ok_or_else(|| fail("no such set"))?;
                }
            }
        }
        Ok(())
    }

    fn chain_in_use(&self, chain: &str) -> bool {
        self.sets
            .values()
            .flat_map(|s| &s.elems)
            .any(|e| matches!(e, Elem::Goto(_, c) if c == chain))
    }

    fn set_in_use(&self, set: &str) -> bool {
        self.chains.values().flat_map(|c| &c.rules).any(|r| {
            matches!(&r.verdict, Verdict::Vmap { map, .. } if map == set)
                || r.matches.iter().any(|m| match m {
                    Match::InSet { set: s, .. }
                    | Match::Pair { set: s }
                    | Match::Endpoint { set: s } => s == set,
                    _ => false,
                })
        })
    }

    /// Whether the table lets `p` pass `hook`: every base chain on the hook, in priority
    /// order, must not drop it (a chain that accepts hands it to the next one).
    pub fn trace(&self, hook: Hook, p: &Packet) -> bool {
        let mut bases: Vec<(i32, &Chain)> = self
            .chains
            .values()
            .filter_map(|c| match c.hook {
                Some((h, prio)) if h == hook => Some((prio, c)),
                _ => None,
            })
            .collect();
        bases.sort_by_key(|(prio, _)| *prio);
        bases
            .into_iter()
            .all(|(_, c)| self.run(c, p, 0) != Some(false))
    }

    /// Runs one chain: `Some(true)` accept, `Some(false)` drop, `None` fell off its end.
    fn run(&self, chain: &Chain, p: &Packet, depth: u32) -> Option<bool> {
        if depth > 16 {
            return Some(false);
        }
        for rule in &chain.rules {
            if !rule.matches.iter().all(|m| self.holds(m, p)) {
                continue;
            }
            match &rule.verdict {
                Verdict::Accept => return Some(true),
                Verdict::Drop => return Some(false),
                Verdict::Vmap { side, map } => {
                    let addr = pick(*side, p);
                    let target = self.sets.get(map).and_then(|s| {
                        s.elems.iter().find_map(|e| match e {
                            Elem::Goto(a, c) if *a == addr => Some(c),
                            _ => None,
                        })
                    });
                    if let Some(c) = target {
                        // goto: the target's end is this chain's end.
                        return match self.chains.get(c) {
                            Some(next) => self.run(next, p, depth + 1),
                            None => Some(false),
                        };
                    }
                }
            }
        }
        None
    }

    fn holds(&self, m: &Match, p: &Packet) -> bool {
        let has = |set: &str, e: &Elem| self.sets.get(set).is_some_and(|s| s.elems.contains(e));
        match m {
            Match::Established => p.established,
            Match::Addr { side, net, not } => net.contains(&pick(*side, p)) != *not,
            Match::InSet { side, set } => has(set, &Elem::Addr(pick(*side, p))),
            Match::Pair { set } => has(set, &Elem::Pair(p.src, p.dst)),
            Match::Proto(proto) => proto.number() == p.proto,
            Match::Ports(first, last) => (*first..=*last).contains(&p.dport),
            Match::Endpoint { set } => [Proto::Tcp, Proto::Udp, Proto::Sctp]
                .into_iter()
                .find(|pr| pr.number() == p.proto)
                .is_some_and(|pr| has(set, &Elem::Endpoint(p.dst, pr, p.dport))),
        }
    }
}

fn pick(side: Side, p: &Packet) -> Ipv4Addr {
    match side {
        Side::Src => p.src,
        Side::Dst => p.dst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: SetKind, elems: &[Elem]) -> Set {
        Set {
            kind,
            elems: elems.iter().cloned().collect(),
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 0, last)
    }

    fn table(pods: &[(u8, &str)], chains: &[&str]) -> Ruleset {
        let mut r = Ruleset::default();
        r.chains.insert(
            "base".into(),
            Chain {
                hook: Some((Hook::Forward, 0)),
                rules: vec![Rule {
                    matches: vec![],
                    verdict: Verdict::Vmap {
                        side: Side::Dst,
                        map: "pods".into(),
                    },
                }],
            },
        );
        for c in chains {
            r.chains.insert(
                (*c).into(),
                Chain {
                    hook: None,
                    rules: vec![Rule {
                        matches: vec![Match::InSet {
                            side: Side::Src,
                            set: format!("{c}-peers"),
                        }],
                        verdict: Verdict::Accept,
                    }],
                },
            );
            r.sets.insert(
                format!("{c}-peers"),
                set(SetKind::Addrs, &[Elem::Addr(ip(9))]),
            );
        }
        let elems: Vec<Elem> = pods
            .iter()
            .map(|(n, c)| Elem::Goto(ip(*n), (*c).into()))
            .collect();
        r.sets.insert("pods".into(), set(SetKind::Vmap, &elems));
        r
    }

    #[test]
    fn diff_orders_ops_so_the_kernel_takes_them() {
        let old = table(&[(2, "a"), (3, "a")], &["a"]);
        let new = table(&[(2, "b"), (4, "b")], &["b"]);
        let ops = diff(&old, &new).expect("incremental");
        let mut model = old.clone();
        model.apply(&ops).expect("applies");
        assert_eq!(model, new);
        assert_eq!(diff(&new, &new), Some(vec![]));
        // A changed base chain needs the whole table replaced.
        let mut other = new.clone();
        if let Some(c) = other.chains.get_mut("base") {
            c.rules.clear();
        }
        assert_eq!(diff(&new, &other), None);
    }

    #[test]
    fn trace_follows_the_vmap_and_drops_at_the_end() {
        let mut r = table(&[(2, "a")], &["a"]);
        if let Some(c) = r.chains.get_mut("a") {
            c.rules.push(Rule {
                matches: vec![],
                verdict: Verdict::Drop,
            });
        }
        let p = |src, dst| Packet {
            src: ip(src),
            dst: ip(dst),
            proto: 6,
            dport: 80,
            established: false,
        };
        assert!(r.trace(Hook::Forward, &p(9, 2)), "peer allowed");
        assert!(!r.trace(Hook::Forward, &p(8, 2)), "others dropped");
        assert!(r.trace(Hook::Forward, &p(8, 3)), "unisolated pod");
        assert!(r.trace(Hook::Input, &p(8, 2)), "no chain on input");
    }
}
