//! The route table: which backend a request for HOST and PATH goes to, built from the
//! Ingresses of berth's class and the Services and EndpointSlices behind them. Pure: built
//! anew on every change and swapped in whole, so a request sees one table from start to end.
//!
//! Matching follows the Ingress API: an exact host beats a wildcard (`*.example.com` matches
//! one label), which beats a rule without host; within a host, `Exact` paths beat `Prefix`
//! ones, longer prefixes beat shorter, and a `Prefix` matches whole path elements (`/foo`
//! matches `/foo` and `/foo/bar`, not `/foobar`). `ImplementationSpecific` is a prefix.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// The IngressClass berth answers for; Ingresses without a class are berth's too, since it is
/// the default class.
pub const CLASS: &str = "berth";

/// Where one path of one Ingress goes: a Service port and the ready endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `namespace/service:port`, for logs and error pages.
    pub name: String,
    /// Ready endpoints (pod address and target port); empty answers 503.
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    Exact(String),
    /// Normalised without a trailing slash (`/` stays `/`).
    Prefix(String),
}

impl Match {
    fn matches(&self, path: &str) -> bool {
        match self {
            Match::Exact(p) => p == path,
            Match::Prefix(p) if p == "/" => true,
            Match::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Sorts the most specific first: Exact before Prefix, then longer before shorter.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Match::Exact(p) => (0, std::cmp::Reverse(p.len())),
            Match::Prefix(p) => (1, std::cmp::Reverse(p.len())),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Paths(Vec<(Match, usize)>);

impl Paths {
    fn find(&self, path: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(m, _)| m.matches(path))
            .map(|(_, b)| *b)
    }
}

/// Everything the proxy needs to route one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    backends: Vec<Backend>,
    exact: BTreeMap<String, Paths>,
    /// By the suffix after `*` (`.example.com`).
    wildcard: BTreeMap<String, Paths>,
    any_host: Paths,
    default_backend: Option<usize>,
    /// TLS certificate and key (PEM) by host, from the Ingresses' `tls` sections.
    pub tls: BTreeMap<String, (String, String)>,
}

/// What routing a request gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    To(&'a Backend),
    /// No rule matches and there is no default backend: 404.
    NotFound,
}

impl Table {
    /// Routes a request for `host` (any `:port` is dropped, case ignored) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Route<'_> {
        let host = host_only(host);
        let by_host = self
            .exact
            .get(host.as_ref())
            .and_then(|p| p.find(path))
            .or_else(|| {
                let suffix = host.find('.').map(|i| &host[i..])?;
                self.wildcard.get(suffix).and_then(|p| p.find(path))
            });
        let found = by_host
            .or_else(|| self.any_host.find(path))
            .or(self.default_backend);
        match found.and_then(|i| self.backends.get(i)) {
            Some(b) => Route::To(b),
            None => Route::NotFound,
        }
    }

    /// Whether no Ingress is served.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// `host[:port]` lowercased, without the port (and without a root dot). Borrowed when already
/// lower case, as clients send it: no allocation per request.
fn host_only(host: &str) -> std::borrow::Cow<'_, str> {
    let h = match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') =>
        {
            h
        }
        _ => host,
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

/// Whether berth serves this Ingress: its class is berth's, or it names none (berth is the
/// default class).
pub fn is_ours(ing: &Ingress) -> bool {
    let legacy = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"));
    match (
        ing.spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref()),
        legacy,
    ) {
        (Some(c), _) => c == CLASS,
        (None, Some(c)) => c == CLASS,
        (None, None) => true,
    }
}

/// The ready endpoints of `ns/service`'s port `port` (a number or a port name).
fn endpoints(
    services: &[&Service],
    slices: &[&EndpointSlice],
    ns: &str,
    service: &str,
    port: &PortRef,
) -> Vec<SocketAddr> {
    let Some(svc) = services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(service)
    }) else {
        return Vec::new();
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .cloned()
        .unwrap_or_default();
    let Some(svc_port) = ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    }) else {
        return Vec::new();
    };
    let port_name = svc_port.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(ns)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == service)
            && s.address_type == "IPv4"
    }) {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() {
                    out.push(SocketAddr::from((ip, target)));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

enum PortRef {
    Number(i32),
    Name(String),
}

/// The route table for `ingresses` (only berth's are read) over the current Services and
/// slices; `secrets` maps `namespace/name` to a TLS Secret's certificate and key (PEM).
pub fn build(
    ingresses: &[&Ingress],
    services: &[&Service],
    slices: &[&EndpointSlice],
    secrets: &BTreeMap<String, (String, String)>,
) -> Table {
    let mut t = Table::default();
    // Oldest first, as controllers resolve conflicting rules: the first Ingress to claim a
    // host and path keeps it.
    let mut ours: Vec<&&Ingress> = ingresses.iter().filter(|i| is_ours(i)).collect();
    ours.sort_by_key(|i| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    let mut add_backend = |ns: &str, b: &IngressBackend| -> Option<usize> {
        let svc = b.service.as_ref()?;
        let port = svc.port.as_ref()?;
        let port = match (&port.name, port.number) {
            (Some(name), _) if !name.is_empty() => PortRef::Name(name.clone()),
            (_, Some(n)) => PortRef::Number(n),
            _ => return None,
        };
        let label = match &port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(n) => n.clone(),
        };
        t.backends.push(Backend {
            name: format!("{ns}/{}:{label}", svc.name),
            endpoints: endpoints(services, slices, ns, &svc.name, &port),
        });
        Some(t.backends.len() - 1)
    };
    let mut rules: Vec<(Option<String>, Match, usize)> = Vec::new();
    let mut default_backend = None;
    let mut tls = BTreeMap::new();
    for ing in ours {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = ing.spec.as_ref() else {
            continue;
        };
        if default_backend.is_none()
            && let Some(b) = &spec.default_backend
        {
            default_backend = add_backend(ns, b);
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase());
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                let p = path.path.clone().unwrap_or_else(|| "/".into());
                let m = match path.path_type.as_str() {
                    "Exact" => Match::Exact(p),
                    _ => {
                        let trimmed = p.trim_end_matches('/');
                        Match::Prefix(if trimmed.is_empty() {
                            "/".into()
                        } else {
                            trimmed.into()
                        })
                    }
                };
                if let Some(b) = add_backend(ns, &path.backend) {
                    rules.push((host.clone(), m, b));
                }
            }
        }
        for entry in spec.tls.iter().flatten() {
            let Some(secret) = entry
                .secret_name
                .as_ref()
                .and_then(|s| secrets.get(&format!("{ns}/{s}")))
            else {
                continue;
            };
            for host in entry.hosts.iter().flatten() {
                tls.entry(host.to_ascii_lowercase())
                    .or_insert_with(|| secret.clone());
            }
        }
    }
    for (host, m, b) in rules {
        let paths = match host {
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => t.wildcard.entry(suffix.to_owned()).or_default(),
                None => t.exact.entry(h).or_default(),
            },
            None => &mut t.any_host,
        };
        if !paths.0.iter().any(|(have, _)| *have == m) {
            paths.0.push((m, b));
        }
    }
    for paths in t
        .exact
        .values_mut()
        .chain(t.wildcard.values_mut())
        .chain(std::iter::once(&mut t.any_host))
    {
        paths.0.sort_by_key(|(m, _)| m.rank());
    }
    t.default_backend = default_backend;
    t.tls = tls;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ingress(name: &str, spec: Value) -> Ingress {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .expect("test Ingress")
    }

    fn service(name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .expect("test Service")
    }

    fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        }))
        .expect("test slice")
    }

    fn path(p: &str, ty: &str, svc: &str) -> Value {
        json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    fn table(ings: &[Ingress]) -> Table {
        let services = [service("web"), service("api"), service("empty")];
        let slices = [
            slice("web", &["10.244.0.2"]),
            slice("api", &["10.244.0.3", "10.244.0.4"]),
        ];
        build(
            &ings.iter().collect::<Vec<_>>(),
            &services.iter().collect::<Vec<_>>(),
            &slices.iter().collect::<Vec<_>>(),
            &BTreeMap::new(),
        )
    }

    fn to(t: &Table, host: &str, p: &str) -> Option<String> {
        match t.route(host, p) {
            Route::To(b) => Some(b.name.clone()),
            Route::NotFound => None,
        }
    }

    #[test]
    fn hosts_and_paths_pick_the_most_specific_rule() {
        let t = table(&[ingress(
            "a",
            json!({"rules": [
                {"host": "shop.example.com", "http": {"paths": [path("/", "Prefix", "web"), path("/api", "Prefix", "api"), path("/exact", "Exact", "empty")]}},
                {"host": "*.example.org", "http": {"paths": [path("/", "Prefix", "api")]}},
                {"http": {"paths": [path("/any", "Prefix", "web")]}},
            ]}),
        )]);
        assert_eq!(
            to(&t, "shop.example.com", "/").as_deref(),
            Some("default/web:80")
        );
        assert_eq!(
            to(&t, "SHOP.example.com:8080", "/api/v1").as_deref(),
            Some("default/api:80")
        );
        assert_eq!(
            to(&t, "shop.example.com", "/api").as_deref(),
            Some("default/api:80")
        );
        assert_eq!(
            to(&t, "shop.example.com", "/apix").as_deref(),
            Some("default/web:80")
        );
        assert_eq!(
            to(&t, "shop.example.com", "/exact").as_deref(),
            Some("default/empty:80")
        );
        assert_eq!(
            to(&t, "shop.example.com", "/exact/").as_deref(),
            Some("default/web:80")
        );
        assert_eq!(
            to(&t, "a.example.org", "/x").as_deref(),
            Some("default/api:80")
        );
        assert_eq!(
            to(&t, "a.b.example.org", "/x"),
            None,
            "a wildcard is one label"
        );
        assert_eq!(to(&t, "example.org", "/x"), None);
        assert_eq!(
            to(&t, "other.test", "/any/thing").as_deref(),
            Some("default/web:80")
        );
        assert_eq!(to(&t, "other.test", "/"), None);
    }

    #[test]
    fn endpoints_are_the_ready_ones_of_the_named_port() {
        let t = table(&[ingress(
            "a",
            json!({"defaultBackend": {"service": {"name": "api", "port": {"name": "http"}}}}),
        )]);
        let Route::To(b) = t.route("x", "/anything") else {
            panic!("default backend");
        };
        assert_eq!(
            b.endpoints,
            [
                "10.244.0.3:8080".parse::<SocketAddr>().expect("addr"),
                "10.244.0.4:8080".parse().expect("addr")
            ]
        );
        let t = table(&[ingress(
            "a",
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "empty")]}}]}),
        )]);
        let Route::To(b) = t.route("x", "/") else {
            panic!("route");
        };
        assert!(b.endpoints.is_empty(), "no slice: 503");
    }

    #[test]
    fn other_classes_are_not_served() {
        let t = table(&[ingress(
            "a",
            json!({"ingressClassName": "nginx", "rules": [{"http": {"paths": [path("/", "Prefix", "web")]}}]}),
        )]);
        assert!(t.is_empty());
        let t = table(&[ingress(
            "a",
            json!({"ingressClassName": "berth", "rules": [{"http": {"paths": [path("/", "Prefix", "web")]}}]}),
        )]);
        assert!(!t.is_empty());
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_only("Example.COM:443"), "example.com");
        assert_eq!(host_only("example.com"), "example.com");
        assert_eq!(host_only("example.com."), "example.com");
    }

    proptest::proptest! {
        /// A prefix matches exactly the paths made of its elements and more elements.
        #[test]
        fn prefixes_match_whole_elements(a in "[a-z]{1,4}", b in "[a-z]{0,4}", rest in "(/[a-z]{0,3}){0,2}") {
            let m = Match::Prefix(format!("/{a}"));
            let p = format!("/{a}{b}{rest}");
            proptest::prop_assert_eq!(m.matches(&p), b.is_empty());
        }
    }
}
