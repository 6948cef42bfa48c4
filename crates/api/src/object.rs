//! Decoding of request bodies into the shape kube-apiserver stores: every object goes through
//! its k8s-openapi type once, which drops fields the type does not know (kube-apiserver prunes
//! them too) and lets us name those fields for `fieldValidation=Strict|Warn`.

use serde_json::Value;

/// What decoding found out about a body.
#[derive(Debug)]
pub struct Decoded {
    /// The object as the typed schema sees it, unknown fields removed.
    pub object: Value,
    /// Dotted paths of fields the schema does not know (`spec.foo`), sorted by key.
    pub unknown_fields: Vec<String>,
}

/// Why a body could not be decoded as the expected type.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
}

macro_rules! round_trip {
    ($value:expr, $( ($group:literal, $kind:literal) => $ty:ty ),* $(,)?) => {
        |group: &str, kind: &str| -> Option<Result<Value, serde_json::Error>> {
            match (group, kind) {
                $( ($group, $kind) => Some(
                    // From a borrowed `Value`: the tree is read, not cloned first (a Pod's
                    // managed fields alone are hundreds of blocks).
                    <$ty as serde::Deserialize>::deserialize(&$value).and_then(serde_json::to_value)
                ), )*
                _ => None,
            }
        }
    };
}

/// Runs `obj` (which must already carry the right `apiVersion` and `kind`) through its typed
/// schema. Kinds without a schema pass through unchanged.
pub fn decode(group: &str, kind: &str, obj: Value) -> Result<Decoded, DecodeError> {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, discovery::v1 as discovery, networking::v1 as net,
    };
    let convert = round_trip!(obj,
        ("", "Namespace") => core::Namespace,
        ("", "Pod") => core::Pod,
        ("", "Service") => core::Service,
        ("", "Endpoints") => core::Endpoints,
        ("", "Event") => core::Event,
        ("", "ConfigMap") => core::ConfigMap,
        ("", "Secret") => core::Secret,
        ("", "ServiceAccount") => core::ServiceAccount,
        ("", "Node") => core::Node,
        ("", "ReplicationController") => core::ReplicationController,
        ("apps", "Deployment") => apps::Deployment,
        ("apps", "ReplicaSet") => apps::ReplicaSet,
        ("apps", "StatefulSet") => apps::StatefulSet,
        ("apps", "DaemonSet") => apps::DaemonSet,
        ("apps", "ControllerRevision") => apps::ControllerRevision,
        ("discovery.k8s.io", "EndpointSlice") => discovery::EndpointSlice,
        ("networking.k8s.io", "Ingress") => net::Ingress,
        ("networking.k8s.io", "IngressClass") => net::IngressClass,
        ("networking.k8s.io", "NetworkPolicy") => net::NetworkPolicy,
        ("events.k8s.io", "Event") => k8s_openapi::api::events::v1::Event,
    );
    match convert(group, kind) {
        None => Ok(Decoded {
            object: obj,
            unknown_fields: Vec::new(),
        }),
        Some(Err(e)) => Err(DecodeError {
            message: describe_serde_error(kind, &e),
        }),
        Some(Ok(pruned)) => {
            let mut unknown = Vec::new();
            unknown_fields(&obj, &pruned, "", &mut unknown);
            Ok(Decoded {
                object: pruned,
                unknown_fields: unknown,
            })
        }
    }
}

fn describe_serde_error(kind: &str, e: &serde_json::Error) -> String {
    // kube-apiserver reports Go's decoder message; ours names the same kind and the problem.
    format!("error decoding {kind}: {e}")
}

/// Collects paths present in `orig` but absent from `pruned`. Nulls count as absent in both,
/// since a typed round trip turns `field: null` into a missing field.
fn unknown_fields(orig: &Value, pruned: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, pruned) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match p.get(k) {
                    Some(pv) => unknown_fields(v, pv, &child, out),
                    None if v.is_null() => {}
                    // Empty maps/lists vanish in some typed round trips; they carry no data.
                    None if is_empty_container(v) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(o), Value::Array(p)) => {
            for (i, (ov, pv)) in o.iter().zip(p.iter()).enumerate() {
                unknown_fields(ov, pv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// An empty JSON object or array (what Go's `omitempty` drops).
pub fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(group: &str, kind: &str, input: Value, unknown: &[&str]) {
        let d = decode(group, kind, input).expect("decodes");
        assert_eq!(d.unknown_fields, unknown);
    }

    #[test]
    fn unknown_fields_are_named_and_dropped() {
        check(
            "",
            "Service",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":80,"bogus":1}],"foo":true}}),
            &["spec.foo", "spec.ports[0].bogus"],
        );
        check(
            "",
            "Service",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"a","labels":null}}),
            &[],
        );
        let d = decode(
            "",
            "Service",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"x":1}),
        )
        .expect("decodes");
        assert!(d.object.get("x").is_none());
    }

    #[test]
    fn wrong_types_are_errors() {
        let e = decode(
            "",
            "Service",
            json!({"apiVersion":"v1","kind":"Service","spec":{"ports":"x"}}),
        );
        assert!(e.is_err());
    }

    #[test]
    fn unknown_kinds_pass_through() {
        check("example.com", "Widget", json!({"a":{"b":1}}), &[]);
    }
}
