//! Builders for the unit tests: Services and Pods from compact JSON with sensible defaults.

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

/// Overlays `patch` onto `base` (objects merged key by key, anything else replaced).
pub(crate) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Service ns/web selecting app=web, port http 80 → 8080, with `extra` overlaid.
pub(crate) fn svc(extra: Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("test Service")
}

/// A running Pod of app=web in ns on node-1 with the given IP and readiness, `extra` overlaid.
pub(crate) fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Value {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    });
    merge(&mut v, extra);
    v
}

/// Parses test Pods.
pub(crate) fn pods(values: Vec<Value>) -> Vec<Pod> {
    values
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("test Pod"))
        .collect()
}
