//! `healthCheckNodePort`s of `externalTrafficPolicy: Local` LoadBalancer Services: an HTTP
//! listener per port on the node answering as kube-proxy's service health server does, 200
//! with the count of this node's ready endpoints when there are any, else 503, so a load
//! balancer sends traffic only to nodes that serve it locally.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::view::{ServiceType, ServiceView, SliceView};

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

/// The health check ports `services` ask for, with what each reports (from `slices` as
/// seen by this node). Slices are
/// read only when some Service asks (this runs at every sync).
pub fn checks<'a>(
    services: impl IntoIterator<Item = &'a ServiceView>,
    slices: impl IntoIterator<Item = &'a SliceView>,
) -> BTreeMap<u16, Check> {
    let mut wanted: BTreeMap<(&str, &str), u16> = BTreeMap::new();
    for svc in services {
        let local_lb = svc.type_ == ServiceType::LoadBalancer && svc.external_local;
        if let Some(port) = svc.health_check_node_port.filter(|_| local_lb) {
            wanted.insert(svc.key(), port);
        }
    }
    if wanted.is_empty() {
        return BTreeMap::new();
    }
    let mut local: BTreeMap<(&str, &str), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for s in slices {
        let Some(key) = s.service_key() else {
            continue;
        };
        if !wanted.contains_key(&key) {
            continue;
        }
        let here = s
            .endpoints
            .iter()
            .filter(|e| e.on_node && e.ready != Some(false));
        local
            .entry(key)
            .or_default()
            .extend(here.filter_map(|e| e.ip));
    }
    wanted
        .into_iter()
        .map(|(key, port)| {
            let check = Check {
                namespace: key.0.to_owned(),
                name: key.1.to_owned(),
                local_endpoints: local.get(&key).map_or(0, BTreeSet::len),
            };
            (port, check)
        })
        .collect()
}

/// The whole HTTP/1.1 answer for a check (kube-proxy's body and status codes).
pub fn response(check: &Check) -> Vec<u8> {
    // Namespaces and names are DNS labels: nothing in them needs JSON escaping.
    let body = format!(
        "{{\n  \"service\": {{\n    \"namespace\": \"{}\",\n    \"name\": \"{}\"\n  }},\n  \"localEndpoints\": {},\n  \"serviceProxyHealthy\": true\n}}\n",
        check.namespace, check.name, check.local_endpoints
    );
    let status = if check.local_endpoints > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The listeners, one per health check port, and what each currently reports.
#[derive(Default)]
pub struct Health {
    state: Arc<Mutex<BTreeMap<u16, Check>>>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

impl Health {
    /// Listens on every port of `want` (on all addresses), stops listening on the others
    /// and serves `want`'s reports from now on. A port that cannot be bound is logged and
    /// tried again at the next update.
    pub async fn update(&mut self, want: BTreeMap<u16, Check>) {
        self.listeners.retain(|port, task| {
            let keep = want.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in want.keys() {
            if self.listeners.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    let task = tokio::spawn(serve(l, *port, self.state.clone()));
                    self.listeners.insert(*port, task);
                }
                Err(e) => tracing::warn!(port, error = %e, "health check port not bound"),
            }
        }
        if let Ok(mut s) = self.state.lock() {
            *s = want;
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, port: u16, state: Arc<Mutex<BTreeMap<u16, Check>>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            // Read the request head (whatever it asks, the answer is the same), then answer.
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            let read = async {
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let check = state.lock().ok().and_then(|s| s.get(&port).cloned());
            if let Some(check) = check {
                let _ = conn.write_all(&response(&check)).await;
            }
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    use super::*;

    fn check(local: &[(&str, Option<bool>)], etp: &str, expected: Option<usize>) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                     "healthCheckNodePort": 32000, "clusterIP": "10.96.0.9",
                     "ports": [{"port": 80}]},
        }))
        .expect("service");
        let endpoints: Vec<_> = local
            .iter()
            .enumerate()
            .map(|(i, (node, ready))| {
                json!({"addresses": [format!("10.244.0.{i}")], "nodeName": node,
                       "conditions": {"ready": ready}})
            })
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": endpoints,
        }))
        .expect("slice");
        let svc = ServiceView::new(&svc).expect("a view");
        let slice = SliceView::new(&slice, "n1").expect("a view");
        let got = checks([&svc], [&slice]);
        assert_eq!(
            got.get(&32000).map(|c| c.local_endpoints),
            expected,
            "{got:?}"
        );
    }

    #[test]
    fn counts_ready_endpoints_on_this_node_only() {
        check(
            &[("n1", Some(true)), ("n1", None), ("n2", Some(true))],
            "Local",
            Some(2),
        );
        check(&[("n1", Some(false)), ("n2", Some(true))], "Local", Some(0));
        check(&[("n1", Some(true))], "Cluster", None);
    }

    #[test]
    fn answers_as_kube_proxy_does() {
        let mut c = Check {
            namespace: "ns".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let ok = String::from_utf8(response(&c)).expect("utf-8");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).expect("a body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["service"]["name"], "web");
        assert_eq!(v["localEndpoints"], 2);
        c.local_endpoints = 0;
        let down = String::from_utf8(response(&c)).expect("utf-8");
        assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
    }
}
