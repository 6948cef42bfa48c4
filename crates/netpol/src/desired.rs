//! Where NetworkPolicies become nftables rules: [`desired`] computes the whole
//! `table ip berth-netpol` from the policies, pods and namespaces, with no I/O.
//!
//! Shape: three base chains, `egress-forward` and `egress-input` (filter, priority 0) and
//! `ingress-forward` (priority 1), each accepting established and related packets and a
//! pod's traffic to itself (`self`), then looking the pod address up in `egress-pods`
//! (source) or `ingress-pods` (destination), maps from the address of each isolated pod on
//! this node to the chain holding its rules. That chain accepts what one of the rules of the
//! policies selecting the pod allows and drops the rest; since `accept` only ends one base
//! chain, a packet between two isolated pods must pass both sides. The node's own packets
//! to its pods leave by the output hook, which the table leaves alone.
//!
//! A pod chain is named after a hash of its rules, so pods selected by the same policies
//! share it, and a chain never changes under its name. The rules refer to sets that depend
//! on the policy rule only (`ingress/NS/POLICY/N`: the addresses of the pods its selectors
//! match; `named/PROTO/NAME`: every `address . proto . port` a pod names NAME), so pods
//! coming and going change only set elements.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::policy::{
    Direction, NamespaceLabels, Peer, PodView, Policy, Port, Proto, Rule as PolicyRule,
};
use crate::ruleset::{Chain, Elem, Hook, Match, Rule, Ruleset, Set, SetKind, Side, Verdict};

/// The table's name (family `ip`).
pub const TABLE: &str = "berth-netpol";
/// Map: isolated pod address -> the chain of its ingress rules.
pub const INGRESS_PODS: &str = "ingress-pods";
/// Map: isolated pod address -> the chain of its egress rules.
pub const EGRESS_PODS: &str = "egress-pods";
/// Set of `address . address` for every pod here: a pod cannot block itself.
pub const SELF: &str = "self";

/// Which pods this enforcer guards and what else counts as a pod.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Isolate only pods with this `spec.nodeName`; `None`: every pod.
    pub node: Option<String>,
    /// Servers the node runs itself that policies should see as pods (berth's cluster DNS,
    /// as a `kube-system` pod labelled `k8s-app: kube-dns`): peers only, never isolated.
    pub node_pods: Vec<PodView>,
}

/// The table that enforces `policies` for the pods in `scope`.
pub fn desired<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    scope: &Scope,
) -> Ruleset {
    let mut policies: Vec<Policy> = policies.into_iter().map(Policy::from_object).collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut pods: Vec<PodView> = pods.into_iter().filter_map(PodView::from_pod).collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let world = World {
        policies,
        local: pods
            .iter()
            .filter(|p| scope.node.is_none() || p.node == scope.node)
            .cloned()
            .collect(),
        peers: pods
            .into_iter()
            .chain(scope.node_pods.iter().cloned())
            .collect(),
        namespaces: NamespaceLabels::new(namespaces),
    };
    world.ruleset()
}

/// What [`World::pod_chain`] computed already.
#[derive(Default)]
struct Chains {
    /// Each policy's rules in a direction, as nftables rules.
    flat: BTreeMap<(Direction, usize), Vec<Rule>>,
    /// The chain for a list of selecting policies.
    by_policies: BTreeMap<(Direction, Vec<usize>), String>,
}

struct World {
    /// Sorted by namespace and name, so the output does not depend on cache order.
    policies: Vec<Policy>,
    /// The pods policies may isolate.
    local: Vec<PodView>,
    /// Everything a selector may match.
    peers: Vec<PodView>,
    namespaces: NamespaceLabels,
}

impl World {
    fn ruleset(&self) -> Ruleset {
        let mut out = skeleton();
        let mut by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.policies.iter().enumerate() {
            by_ns.entry(&p.namespace).or_default().push(i);
        }
        let mut chains = Chains::default();
        let mut maps: [BTreeMap<_, String>; 2] = Default::default();
        for pod in &self.local {
            add(&mut out, SELF, Elem::Pair(pod.ip, pod.ip));
            let selecting: Vec<usize> = by_ns
                .get(pod.namespace.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| self.policies[i].selects(pod))
                .collect();
            for (d, dir) in [Direction::Ingress, Direction::Egress]
                .into_iter()
                .enumerate()
            {
                let ids: Vec<usize> = selecting
                    .iter()
                    .copied()
                    .filter(|&i| self.policies[i].rules(dir).is_some())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let chain = self.pod_chain(&mut out, &mut chains, dir, ids);
                // Two pods with one address (a reused IP): the first one named wins.
                maps[d].entry(pod.ip).or_insert(chain);
            }
        }
        for (map, entries) in [INGRESS_PODS, EGRESS_PODS].into_iter().zip(maps) {
            for (ip, chain) in entries {
                add(&mut out, map, Elem::Goto(ip, chain));
            }
        }
        out
    }

    /// The chain of a pod isolated in direction `dir` by the policies `ids` (indices into
    /// `policies`): their rules, then drop. Added to `out` the first time.
    fn pod_chain(
        &self,
        out: &mut Ruleset,
        chains: &mut Chains,
        dir: Direction,
        ids: Vec<usize>,
    ) -> String {
        if let Some(name) = chains.by_policies.get(&(dir, ids.clone())) {
            return name.clone();
        }
        let mut rules: Vec<Rule> = Vec::new();
        for &i in &ids {
            let flat = chains.flat.entry((dir, i)).or_insert_with(|| {
                let policy = &self.policies[i];
                policy
                    .rules(dir)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .flat_map(|(n, rule)| self.flatten(out, policy, dir, n, rule))
                    .collect()
            });
            for r in flat.iter() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
        rules.push(Rule {
            matches: Vec::new(),
            verdict: Verdict::Drop,
        });
        let mut h = std::hash::DefaultHasher::new();
        rules.hash(&mut h);
        let name = format!("{}-{:016x}", dir.name(), h.finish());
        out.chains
            .entry(name.clone())
            .or_insert(Chain { hook: None, rules });
        chains.by_policies.insert((dir, ids), name.clone());
        name
    }

    /// One policy rule as nftables rules (peers x ports, each accepting), adding the sets
    /// they use to `out`.
    fn flatten(
        &self,
        out: &mut Ruleset,
        policy: &Policy,
        dir: Direction,
        index: usize,
        rule: &PolicyRule,
    ) -> Vec<Rule> {
        let side = match dir {
            Direction::Ingress => Side::Src,
            Direction::Egress => Side::Dst,
        };
        let peers: Vec<Vec<Match>> = match &rule.peers {
            None => vec![Vec::new()],
            Some(list) => {
                let mut peers = Vec::new();
                if list.iter().any(|p| matches!(p, Peer::Pods { .. })) {
                    let set = self.peer_set(out, policy, dir, index, list);
                    peers.push(vec![Match::InSet { side, set }]);
                }
                for p in list {
                    if let Peer::Block { cidr, except } = p {
                        let mut m = vec![Match::Addr {
                            side,
                            net: *cidr,
                            not: false,
                        }];
                        m.extend(except.iter().map(|e| Match::Addr {
                            side,
                            net: *e,
                            not: true,
                        }));
                        peers.push(m);
                    }
                }
                peers
            }
        };
        let ports: Vec<Vec<Match>> = match &rule.ports {
            None => vec![Vec::new()],
            Some(list) => list
                .iter()
                .flat_map(|port| match port {
                    Port::Any(proto) => vec![vec![Match::Proto(*proto)]],
                    Port::Range(proto, first, last) => {
                        vec![vec![Match::Proto(*proto), Match::Ports(*first, *last)]]
                    }
                    // The destination pod's port of that name: for ingress the guarded pod's
                    // own, for egress the peer's; either way `daddr . proto . dport`.
                    Port::Named(proto, name) => vec![vec![Match::Endpoint {
                        set: self.named_set(out, *proto, name),
                    }]],
                    Port::Nothing => Vec::new(),
                })
                .collect(),
        };
        let mut rules = Vec::new();
        for peer in &peers {
            for port in &ports {
                rules.push(Rule {
                    matches: peer.iter().chain(port).cloned().collect(),
                    verdict: Verdict::Accept,
                });
            }
        }
        rules
    }

    /// The set of addresses of the pods the selector peers of one policy rule match.
    fn peer_set(
        &self,
        out: &mut Ruleset,
        policy: &Policy,
        dir: Direction,
        index: usize,
        peers: &[Peer],
    ) -> String {
        let name = set_name(&format!(
            "{}/{}/{}/{index}",
            dir.name(),
            policy.namespace,
            policy.name
        ));
        if !out.sets.contains_key(&name) {
            let mut set = Set::new(SetKind::Addrs);
            for pod in &self.peers {
                let labels = self.namespaces.get(&pod.namespace);
                if peers
                    .iter()
                    .filter(|p| matches!(p, Peer::Pods { .. }))
                    .any(|p| p.matches_pod(&policy.namespace, pod, &labels))
                {
                    set.elems.insert(Elem::Addr(pod.ip));
                }
            }
            out.sets.insert(name.clone(), set);
        }
        name
    }

    /// The set of every pod's `address . proto . port` for ports named `name`.
    fn named_set(&self, out: &mut Ruleset, proto: Proto, name: &str) -> String {
        let set = set_name(&format!("named/{}/{name}", proto.name()));
        if !out.sets.contains_key(&set) {
            let elems: BTreeSet<Elem> = self
                .peers
                .iter()
                .flat_map(|p| {
                    p.resolve(name, proto)
                        .map(|n| Elem::Endpoint(p.ip, proto, n))
                })
                .collect();
            out.sets.insert(
                set.clone(),
                Set {
                    kind: SetKind::Endpoints,
                    elems,
                },
            );
        }
        set
    }
}

/// `name`, or a hash of it when it is too long for the kernel (255 bytes).
fn set_name(name: &str) -> String {
    if name.len() <= 200 {
        return name.to_owned();
    }
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    format!(
        "{}/{:016x}",
        &name[..name.find('/').unwrap_or(0)],
        h.finish()
    )
}

fn add(out: &mut Ruleset, set: &str, e: Elem) {
    if let Some(s) = out.sets.get_mut(set) {
        s.elems.insert(e);
    }
}

/// The base chains and the maps they look pods up in.
fn skeleton() -> Ruleset {
    let head = || {
        vec![
            Rule {
                matches: vec![Match::Established],
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![Match::Pair { set: SELF.into() }],
                verdict: Verdict::Accept,
            },
        ]
    };
    let base = |hook, prio, side, map: &str| {
        let mut rules = head();
        rules.push(Rule {
            matches: Vec::new(),
            verdict: Verdict::Vmap {
                side,
                map: map.into(),
            },
        });
        Chain {
            hook: Some((hook, prio)),
            rules,
        }
    };
    let mut r = Ruleset::default();
    r.chains.insert(
        "egress-forward".into(),
        base(Hook::Forward, 0, Side::Src, EGRESS_PODS),
    );
    r.chains.insert(
        "egress-input".into(),
        base(Hook::Input, 0, Side::Src, EGRESS_PODS),
    );
    r.chains.insert(
        "ingress-forward".into(),
        base(Hook::Forward, 1, Side::Dst, INGRESS_PODS),
    );
    r.sets.insert(INGRESS_PODS.into(), Set::new(SetKind::Vmap));
    r.sets.insert(EGRESS_PODS.into(), Set::new(SetKind::Vmap));
    r.sets.insert(SELF.into(), Set::new(SetKind::Pairs));
    r
}

#[cfg(test)]
mod tests;
