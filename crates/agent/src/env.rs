//! The environment Kubernetes gives every container: the Service variables
//! (`FOO_SERVICE_HOST`, `FOO_SERVICE_PORT[_NAME]`, `FOO_PORT[_80_TCP[_PROTO|_PORT|_ADDR]]`), for
//! the Services of the pod's namespace when `enableServiceLinks` is on and for the
//! `kubernetes` Service always, then the container's own `env` on top.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// The variables one Service contributes (none for headless and ExternalName Services).
fn for_service(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    else {
        return Vec::new();
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let name = env_name(svc.metadata.name.as_deref().unwrap_or_default());
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    let mut out = vec![
        (format!("{name}_SERVICE_HOST"), ip.to_owned()),
        (format!("{name}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                p.port.to_string(),
            ));
        }
    }
    out.push((
        format!("{name}_PORT"),
        format!(
            "{}://{ip}:{}",
            proto(first).to_ascii_lowercase(),
            first.port
        ),
    ));
    for p in ports {
        let (proto, port) = (proto(p), p.port);
        let prefix = format!("{name}_PORT_{port}_{proto}");
        let lower = proto.to_ascii_lowercase();
        out.push((prefix.clone(), format!("{lower}://{ip}:{port}")));
        out.push((format!("{prefix}_PROTO"), lower));
        out.push((format!("{prefix}_PORT"), port.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.to_owned()));
    }
    out
}

/// The Service variables for a pod in `namespace`; `services` may hold every Service.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let master = ns == "default" && name == "kubernetes";
        if master || (enable_service_links && ns == namespace) {
            out.extend(for_service(svc));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip, "ports": ports}})).expect("service")
    }

    fn check(services: &[Service], ns: &str, links: bool, expected: &[(&str, &str)]) {
        let got = service_env(services, ns, links);
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn variables_as_kubelet_writes_them() {
        let all = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc("web", "redis-master", "10.96.0.11", json!([{"port": 6379}])),
            svc("web", "headless", "None", json!([{"port": 80}])),
            svc("other", "db", "10.96.0.12", json!([{"port": 5432}])),
        ];
        check(
            &all,
            "web",
            true,
            &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
                ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                ("KUBERNETES_PORT_443_TCP_PORT", "443"),
                ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
                ("REDIS_MASTER_SERVICE_HOST", "10.96.0.11"),
                ("REDIS_MASTER_SERVICE_PORT", "6379"),
                ("REDIS_MASTER_PORT", "tcp://10.96.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.96.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.96.0.11"),
            ],
        );
        let off = service_env(&all, "web", false);
        assert!(off.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
    }
}

/// Whether a reference names a ConfigMap or a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn word(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }
}

/// The data of the ConfigMaps and Secrets a container refers to (`None`: not found).
pub type Sources = BTreeMap<(Source, String), Option<BTreeMap<String, String>>>;

/// The ConfigMaps and Secrets a container's `env` and `envFrom` refer to.
pub fn references(c: &k8s_openapi::api::core::v1::Container) -> Vec<(Source, String)> {
    let mut out = Vec::new();
    for f in c.env_from.iter().flatten() {
        if let Some(r) = &f.config_map_ref {
            out.push((Source::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &f.secret_ref {
            out.push((Source::Secret, r.name.clone()));
        }
    }
    for v in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
        if let Some(r) = &v.config_map_key_ref {
            out.push((Source::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &v.secret_key_ref {
            out.push((Source::Secret, r.name.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A container's own environment: `envFrom` (ConfigMaps and Secrets, with their prefix), then
/// `env`: plain values (with `$(VAR)` references to earlier variables expanded, as the kubelet
/// does), the pod fields `valueFrom.fieldRef` can name and ConfigMap/Secret keys from
/// `sources`. A missing ConfigMap, Secret or key that is not `optional` is an error worded as
/// the kubelet's CreateContainerConfigError.
pub fn container_env(
    c: &k8s_openapi::api::core::v1::Container,
    pod: &k8s_openapi::api::core::v1::Pod,
    pod_ip: &str,
    host_ip: &str,
    base: &[(String, String)],
    sources: &Sources,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let data = |kind: Source, name: &str| sources.get(&(kind, name.to_owned())).cloned().flatten();
    for f in c.env_from.iter().flatten() {
        let refs = [
            f.config_map_ref
                .as_ref()
                .map(|r| (Source::ConfigMap, &r.name, r.optional)),
            f.secret_ref
                .as_ref()
                .map(|r| (Source::Secret, &r.name, r.optional)),
        ];
        for (kind, name, optional) in refs.into_iter().flatten() {
            match data(kind, name) {
                Some(d) => {
                    let prefix = f.prefix.as_deref().unwrap_or_default();
                    out.extend(d.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
                }
                None if optional == Some(true) => {}
                None => return Err(format!("{} \"{name}\" not found", kind.word())),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let key_ref = e.value_from.as_ref().and_then(|v| {
            v.config_map_key_ref
                .as_ref()
                .map(|r| (Source::ConfigMap, &r.name, &r.key, r.optional))
                .or_else(|| {
                    v.secret_key_ref
                        .as_ref()
                        .map(|r| (Source::Secret, &r.name, &r.key, r.optional))
                })
        });
        if let Some((kind, name, key, optional)) = key_ref {
            let optional = optional == Some(true);
            match data(kind, name) {
                Some(d) => match d.get(key) {
                    Some(v) => out.push((e.name.clone(), v.clone())),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {key} in {} {}/{name}",
                            if kind == Source::ConfigMap {
                                "ConfigMap"
                            } else {
                                "Secret"
                            },
                            pod.metadata.namespace.as_deref().unwrap_or_default()
                        ));
                    }
                },
                None if optional => {}
                None => return Err(format!("{} \"{name}\" not found", kind.word())),
            }
            continue;
        }
        let value = if let Some(v) = &e.value {
            let lookup = |name: &str| {
                out.iter()
                    .rev()
                    .chain(base.iter().rev())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            expand(v, lookup)
        } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            let meta = &pod.metadata;
            let spec = pod.spec.as_ref();
            match f.field_path.as_str() {
                "metadata.name" => meta.name.clone().unwrap_or_default(),
                "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                "spec.serviceAccountName" => spec
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
                "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
                path => label_or_annotation(meta, path).unwrap_or_default(),
            }
        } else {
            continue;
        };
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

fn label_or_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    path: &str,
) -> Option<String> {
    let key = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    if let Some(k) = key("metadata.labels") {
        return meta.labels.as_ref()?.get(&k).cloned();
    }
    let k = key("metadata.annotations")?;
    meta.annotations.as_ref()?.get(&k).cloned()
}

/// Expands `$(NAME)` with `lookup`; `$$` is a literal `$`, and unknown references stay as
/// written (the kubelet's rules).
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod expand_tests {
    use super::expand;

    #[test]
    fn references_expand_like_the_kubelet() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_owned());
        assert_eq!(expand("x$(A)y", lookup), "x1y");
        assert_eq!(expand("$(B)", lookup), "$(B)");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("a$", lookup), "a$");
    }
}

#[cfg(test)]
mod container_env_tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Pod};

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("a container")
    }

    #[test]
    fn config_maps_secrets_fields_and_references() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}}
        }))
        .expect("a pod");
        let c = container(serde_json::json!({"name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "GREETING", "value": "hi $(NAME) on $(NODE_HOST)"},
            {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
        ]}));
        assert_eq!(
            references(&c),
            [
                (Source::ConfigMap, "cm".to_owned()),
                (Source::ConfigMap, "gone".to_owned()),
                (Source::Secret, "s".to_owned())
            ]
        );
        let mut sources = Sources::new();
        sources.insert(
            (Source::ConfigMap, "cm".into()),
            Some([("mode".to_owned(), "fast".to_owned())].into()),
        );
        sources.insert(
            (Source::Secret, "s".into()),
            Some([("pw".to_owned(), "hunter2".to_owned())].into()),
        );
        sources.insert((Source::ConfigMap, "gone".into()), None);
        let base = [("NODE_HOST".to_owned(), "n1".to_owned())];
        let env = container_env(&c, &pod, "10.0.0.2", "192.168.0.1", &base, &sources)
            .expect("all references resolve");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_mode"), Some("fast"));
        assert_eq!(get("NAME"), Some("p"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("PASS"), Some("hunter2"));
        assert_eq!(get("GREETING"), Some("hi p on n1"));
        assert_eq!(get("MAYBE"), None);
        sources.insert((Source::Secret, "s".into()), None);
        assert_eq!(
            container_env(&c, &pod, "", "", &base, &sources),
            Err("secret \"s\" not found".to_owned())
        );
    }
}
