//! NetworkPolicies, Pods and Namespaces as the enforcer reads them: only the fields that
//! decide what may talk to what, with the API's defaults applied (policyTypes, protocol TCP,
//! empty `from`/`to`/`ports` meaning "all") and invalid parts matching nothing, as
//! kube-apiserver's validation would have refused them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use berth_api::selector::Selector;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label kube-apiserver puts on every Namespace, its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The protocols a NetworkPolicy port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// `TCP`, `UDP` or `SCTP`; absent means TCP, as the API defaults it.
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// A container port with a name, which policies may refer to by that name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

/// A pod as policies see it: where it is, its labels, its address and named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// `spec.nodeName`.
    pub node: Option<String>,
    pub ports: Vec<NamedPort>,
}

impl PodView {
    /// The pod, if policies apply to it: it has an IPv4 pod IP, is not on the host's
    /// network, and has not finished (Succeeded and Failed pods hold no address any more).
    pub fn from_pod(pod: &Pod) -> Option<PodView> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ip = status.pod_ip.as_deref()?.parse::<Ipv4Addr>().ok()?;
        let ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    proto: Proto::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        Some(PodView {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node: spec.node_name.clone(),
            ports,
        })
    }

    /// berth's cluster DNS, which the node runs itself at `ip`, as policies see CoreDNS: a
    /// `kube-system` pod labelled `k8s-app: kube-dns` with ports `dns` (UDP 53) and
    /// `dns-tcp` (TCP 53), so the usual "allow DNS" egress rules match it.
    pub fn cluster_dns(ip: Ipv4Addr) -> PodView {
        let port = |name: &str, proto| NamedPort {
            name: name.into(),
            proto,
            port: 53,
        };
        PodView {
            namespace: "kube-system".into(),
            name: "berth-dns".into(),
            labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            ip,
            node: None,
            ports: vec![port("dns", Proto::Udp), port("dns-tcp", Proto::Tcp)],
        }
    }

    /// The port numbers this pod names `name` for `proto`.
    pub fn resolve<'a>(&'a self, name: &'a str, proto: Proto) -> impl Iterator<Item = u16> + 'a {
        self.ports
            .iter()
            .filter(move |p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// Namespace labels by name, each with its name label even when the object lacks it.
#[derive(Debug, Clone, Default)]
pub struct NamespaceLabels(BTreeMap<String, BTreeMap<String, String>>);

impl NamespaceLabels {
    pub fn new<'a>(namespaces: impl IntoIterator<Item = &'a Namespace>) -> NamespaceLabels {
        NamespaceLabels(
            namespaces
                .into_iter()
                .filter_map(|n| {
                    let name = n.metadata.name.clone()?;
                    let mut labels = n.metadata.labels.clone().unwrap_or_default();
                    labels
                        .entry(NAMESPACE_NAME_LABEL.to_owned())
                        .or_insert_with(|| name.clone());
                    Some((name, labels))
                })
                .collect(),
        )
    }

    /// The labels of namespace `ns`; one not (yet) in the cache has only its name label.
    pub fn get(&self, ns: &str) -> std::borrow::Cow<'_, BTreeMap<String, String>> {
        match self.0.get(ns) {
            Some(l) => std::borrow::Cow::Borrowed(l),
            None => std::borrow::Cow::Owned(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                ns.to_owned(),
            )])),
        }
    }
}

/// Ingress or egress: which end of a connection a policy guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One NetworkPolicy, read.
#[derive(Debug, Clone)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// `None` when the selector is invalid: the policy selects nothing.
    pub selector: Option<Selector>,
    /// The ingress rules when the policy isolates for ingress (an empty list denies all).
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

/// One ingress or egress rule: a connection matches when it matches one of the peers and
/// one of the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: any peer (the list was missing or empty).
    pub peers: Option<Vec<Peer>>,
    /// `None`: any port and protocol.
    pub ports: Option<Vec<Port>>,
}

/// Which namespaces a pod peer's pods come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// The policy's own namespace (no namespaceSelector).
    Own,
    Matching(Selector),
}

/// One entry of `from` or `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    Block {
        cidr: Ipv4Net,
        except: Vec<Ipv4Net>,
    },
    /// Invalid (or IPv6): matches nothing.
    Nothing,
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    /// Every port of the protocol.
    Any(Proto),
    /// `port` (..= `endPort`).
    Range(Proto, u16, u16),
    /// A container port name, resolved against the pod at the far end of the rule's
    /// direction: the selected pod for ingress, the destination pod for egress.
    Named(Proto, String),
    /// Invalid: matches nothing.
    Nothing,
}

impl Policy {
    pub fn from_object(np: &NetworkPolicy) -> Policy {
        let default = NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default);
        let selector = match &spec.pod_selector {
            Some(s) => selector(s),
            None => Some(Selector::everything()),
        };
        let egress_rules = spec.egress.as_deref().unwrap_or_default();
        // As kube-apiserver defaults policyTypes: Ingress always, Egress when there are
        // egress rules.
        let types: Vec<&str> = match &spec.policy_types {
            Some(t) if !t.is_empty() => t.iter().map(String::as_str).collect(),
            _ if egress_rules.is_empty() => vec!["Ingress"],
            _ => vec!["Ingress", "Egress"],
        };
        let ingress = types.contains(&"Ingress").then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| Rule::new(r.from.as_deref(), r.ports.as_deref()))
                .collect()
        });
        let egress = types.contains(&"Egress").then(|| {
            egress_rules
                .iter()
                .map(|r| Rule::new(r.to.as_deref(), r.ports.as_deref()))
                .collect()
        });
        Policy {
            namespace: np.metadata.namespace.clone().unwrap_or_default(),
            name: np.metadata.name.clone().unwrap_or_default(),
            selector,
            ingress,
            egress,
        }
    }

    /// Whether the policy applies to `pod` (same namespace, selected).
    pub fn selects(&self, pod: &PodView) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }

    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

impl Rule {
    fn new(peers: Option<&[NetworkPolicyPeer]>, ports: Option<&[NetworkPolicyPort]>) -> Rule {
        Rule {
            peers: peers
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(Peer::new).collect()),
            ports: ports
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(Port::new).collect()),
        }
    }
}

impl Peer {
    fn new(p: &NetworkPolicyPeer) -> Peer {
        if let Some(b) = &p.ip_block {
            if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                return Peer::Nothing;
            }
            let Some(cidr) = cidr(&b.cidr) else {
                return Peer::Nothing;
            };
            let mut except = Vec::new();
            for e in b.except.iter().flatten() {
                match self::cidr(e) {
                    Some(e) => except.push(e),
                    None => return Peer::Nothing,
                }
            }
            return Peer::Block { cidr, except };
        }
        let namespaces = match &p.namespace_selector {
            None => Namespaces::Own,
            Some(s) => match selector(s) {
                Some(s) => Namespaces::Matching(s),
                None => return Peer::Nothing,
            },
        };
        let pods = match &p.pod_selector {
            None if namespaces == Namespaces::Own => return Peer::Nothing,
            None => Selector::everything(),
            Some(s) => match selector(s) {
                Some(s) => s,
                None => return Peer::Nothing,
            },
        };
        Peer::Pods { namespaces, pods }
    }

    /// Whether pod `pod` (in a namespace labelled `ns_labels`) is this peer, for a policy
    /// in namespace `policy_ns`. Blocks match pods by address too.
    pub fn matches_pod(
        &self,
        policy_ns: &str,
        pod: &PodView,
        ns_labels: &BTreeMap<String, String>,
    ) -> bool {
        match self {
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    Namespaces::Own => pod.namespace == policy_ns,
                    Namespaces::Matching(s) => s.matches(ns_labels),
                };
                ns_ok && pods.matches(&pod.labels)
            }
            Peer::Block { .. } => self.matches_addr(pod.ip),
            Peer::Nothing => false,
        }
    }

    /// Whether an address is inside this block (and outside its exceptions).
    pub fn matches_addr(&self, ip: Ipv4Addr) -> bool {
        match self {
            Peer::Block { cidr, except } => {
                cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
            }
            _ => false,
        }
    }
}

impl Port {
    fn new(p: &NetworkPolicyPort) -> Port {
        let Some(proto) = Proto::parse(p.protocol.as_deref()) else {
            return Port::Nothing;
        };
        match (&p.port, p.end_port) {
            (None, None) => Port::Any(proto),
            (Some(IntOrString::Int(n)), end) => {
                let Ok(first) = u16::try_from(*n) else {
                    return Port::Nothing;
                };
                let last = match end.map(u16::try_from) {
                    None => first,
                    Some(Ok(last)) => last,
                    Some(Err(_)) => return Port::Nothing,
                };
                if first == 0 || last < first {
                    return Port::Nothing;
                }
                Port::Range(proto, first, last)
            }
            (Some(IntOrString::String(name)), None) if !name.is_empty() => {
                Port::Named(proto, name.clone())
            }
            _ => Port::Nothing,
        }
    }
}

/// A label selector, or `None` if it is invalid.
fn selector(s: &LabelSelector) -> Option<Selector> {
    Selector::from_label_selector(s).ok()
}

/// An IPv4 CIDR; host bits are cleared (`192.168.1.1/24` is valid in a policy).
fn cidr(s: &str) -> Option<Ipv4Net> {
    s.parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(spec: serde_json::Value) -> Policy {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": spec,
        }))
        .expect("policy");
        Policy::from_object(&np)
    }

    #[test]
    fn policy_types_default_as_the_api_does() {
        let p = policy(json!({"podSelector": {}}));
        assert_eq!(p.ingress, Some(vec![]));
        assert_eq!(p.egress, None);
        let p = policy(json!({"podSelector": {}, "egress": [{}]}));
        assert!(p.ingress.is_some());
        assert_eq!(p.egress.as_ref().map(Vec::len), Some(1));
        let p = policy(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}));
        assert_eq!(p.ingress, None);
        assert_eq!(p.egress, Some(vec![]));
    }

    #[test]
    fn peers_and_ports_read_with_defaults() {
        let p = policy(json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [], "ports": []},
                {"from": [
                    {"ipBlock": {"cidr": "10.0.0.1/8", "except": ["10.1.0.0/16"]}},
                    {"namespaceSelector": {}},
                    {"podSelector": {"matchLabels": {"a": "b"}}},
                    {"ipBlock": {"cidr": "fd00::/8"}},
                ], "ports": [
                    {"port": 80},
                    {"port": 8000, "endPort": 8080, "protocol": "UDP"},
                    {"port": "http"},
                    {"protocol": "SCTP"},
                    {"port": 10, "endPort": 5},
                    {"protocol": "ICMP"},
                ]},
            ],
        }));
        let rules = p.ingress.expect("ingress");
        assert_eq!(
            rules[0],
            Rule {
                peers: None,
                ports: None
            }
        );
        let peers = rules[1].peers.as_ref().expect("peers");
        assert_eq!(
            peers[0],
            Peer::Block {
                cidr: "10.0.0.0/8".parse().expect("net"),
                except: vec!["10.1.0.0/16".parse().expect("net")],
            }
        );
        assert!(matches!(
            &peers[1],
            Peer::Pods { namespaces: Namespaces::Matching(s), pods } if s.is_empty() && pods.is_empty()
        ));
        assert!(matches!(
            &peers[2],
            Peer::Pods {
                namespaces: Namespaces::Own,
                ..
            }
        ));
        assert_eq!(peers[3], Peer::Nothing);
        assert_eq!(
            rules[1].ports,
            Some(vec![
                Port::Range(Proto::Tcp, 80, 80),
                Port::Range(Proto::Udp, 8000, 8080),
                Port::Named(Proto::Tcp, "http".into()),
                Port::Any(Proto::Sctp),
                Port::Nothing,
                Port::Nothing,
            ])
        );
    }

    #[test]
    fn pods_without_an_address_or_finished_are_left_out() {
        let pod = |status: serde_json::Value| -> Option<PodView> {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"namespace": "x", "name": "a", "labels": {"app": "a"}},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 80},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 81},
                ]}]},
                "status": status,
            }))
            .expect("pod");
            PodView::from_pod(&p)
        };
        assert_eq!(pod(json!({"phase": "Pending"})), None);
        assert_eq!(
            pod(json!({"phase": "Succeeded", "podIP": "10.244.0.5"})),
            None
        );
        let v = pod(json!({"phase": "Running", "podIP": "10.244.0.5"})).expect("view");
        assert_eq!(v.ip, Ipv4Addr::new(10, 244, 0, 5));
        assert_eq!(v.resolve("http", Proto::Tcp).collect::<Vec<_>>(), [80]);
        assert_eq!(v.resolve("dns", Proto::Tcp).count(), 0);
        assert_eq!(v.resolve("dns", Proto::Udp).collect::<Vec<_>>(), [53]);
    }
}
