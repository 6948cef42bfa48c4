//! PATCH bodies: JSON patch (RFC 6902) and merge patch (RFC 7386) through the `json-patch`
//! crate, and Kubernetes strategic merge patch, written here because no maintained Rust crate
//! implements it. Strategic merge needs each list's merge key; `merge_key` holds the ones the
//! built-in types declare (`patchMergeKey` in their Go definitions).

use serde_json::{Map, Value};

/// The patch formats kube-apiserver accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().map(str::trim) {
            Some("application/json-patch+json") => Some(Self::Json),
            Some("application/merge-patch+json") => Some(Self::Merge),
            Some("application/strategic-merge-patch+json") => Some(Self::Strategic),
            Some("application/apply-patch+yaml" | "application/apply-patch+json") => {
                Some(Self::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied (rendered as a 400, or 422 for a failed `test` op).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Apply(String),
}

/// Applies `patch` to `doc`.
pub fn apply(
    kind: PatchType,
    doc: &mut Value,
    patch: &[u8],
    obj_kind: &str,
) -> Result<(), PatchError> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::patch(doc, &p).map_err(|e| PatchError::Apply(e.to_string()))
        }
        PatchType::Merge => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::merge(doc, &p);
            Ok(())
        }
        PatchType::Strategic | PatchType::Apply => {
            let p: Value = if kind == PatchType::Apply {
                json_or_yaml(patch)?
            } else {
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?
            };
            if !p.is_object() {
                return Err(PatchError::Decode("patch must be a JSON object".into()));
            }
            strategic(doc, &p, obj_kind, &mut Vec::new());
            Ok(())
        }
    }
}

/// A YAML document (YAML is a superset of JSON) as a JSON value.
pub fn from_yaml(body: &[u8]) -> Result<Value, PatchError> {
    serde_saphyr::from_slice(body).map_err(|e| PatchError::Decode(format!("yaml: {e}")))
}

/// An apply body: JSON when it parses as JSON, else YAML (`application/apply-patch+yaml`).
pub fn json_or_yaml(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body).or_else(|_| from_yaml(body))
}

/// The merge key of the list at `path` (field names from the root), if it merges by key.
/// `Some("")` marks a list of scalars merged as a set (`finalizers`).
pub(crate) fn merge_key(obj_kind: &str, path: &[String]) -> Option<&'static str> {
    let field = path.last()?.as_str();
    let parent = path
        .len()
        .checked_sub(2)
        .and_then(|i| path.get(i))
        .map(String::as_str);
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "finalizers" if parent == Some("metadata") => Some(""),
        "ports" if obj_kind == "Service" && path.len() == 2 => Some("port"),
        "ports"
            if matches!(
                parent,
                Some("containers" | "initContainers" | "ephemeralContainers")
            ) =>
        {
            Some("containerPort")
        }
        _ => None,
    }
}

/// Merges an applied configuration into `doc` (server-side apply's structured merge): maps
/// by key, keyed lists by their key, sets as sets, other lists and scalars replaced.
pub(crate) fn merge_applied(doc: &mut Value, config: &Value, obj_kind: &str) {
    strategic(doc, config, obj_kind, &mut Vec::new());
}

fn strategic(doc: &mut Value, patch: &Value, obj_kind: &str, path: &mut Vec<String>) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        *doc = Value::Object(m);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (d.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            // `$setElementOrder/...` only orders; `$patch`/`$retainKeys` were handled above.
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        path.push(k.clone());
        let key = merge_key(obj_kind, path);
        match (d.get_mut(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic(cur, v, obj_kind, path),
            (Some(Value::Array(cur)), Value::Array(items)) if key.is_some() => {
                merge_list(cur, items, key.unwrap_or_default(), obj_kind, path)
            }
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, v, obj_kind, path);
                d.insert(k.clone(), fresh);
            }
            (_, Value::Array(items)) => {
                d.insert(
                    k.clone(),
                    Value::Array(items.iter().filter(|i| !is_directive(i)).cloned().collect()),
                );
            }
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
        path.pop();
    }
}

fn is_directive(v: &Value) -> bool {
    v.get("$patch").is_some()
}

fn merge_list(
    cur: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    obj_kind: &str,
    path: &mut Vec<String>,
) {
    if key.is_empty() {
        for i in items {
            if !cur.contains(i) {
                cur.push(i.clone());
            }
        }
        return;
    }
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *cur = items.iter().filter(|i| !is_directive(i)).cloned().collect();
        return;
    }
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut cur[i], item, obj_kind, path),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, item, obj_kind, path);
                cur.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: PatchType, doc: Value, patch: Value, expected: Value) {
        let mut d = doc;
        apply(kind, &mut d, patch.to_string().as_bytes(), "Service").expect("applies");
        assert_eq!(d, expected);
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        check(
            PatchType::Strategic,
            json!({"spec":{"ports":[{"port":80,"name":"http"},{"port":443,"name":"https"}],"selector":{"app":"a"}}}),
            json!({"spec":{"ports":[{"port":80,"targetPort":8080}],"selector":{"app":"b","tier":null}}}),
            json!({"spec":{"ports":[{"port":80,"name":"http","targetPort":8080},{"port":443,"name":"https"}],"selector":{"app":"b"}}}),
        );
        check(
            PatchType::Strategic,
            json!({"spec":{"ports":[{"port":80},{"port":443}]}}),
            json!({"spec":{"ports":[{"port":443,"$patch":"delete"}]}}),
            json!({"spec":{"ports":[{"port":80}]}}),
        );
        check(
            PatchType::Strategic,
            json!({"metadata":{"finalizers":["a"]},"spec":{"externalIPs":["1.1.1.1"]}}),
            json!({"metadata":{"finalizers":["b"]},"spec":{"externalIPs":["2.2.2.2"]}}),
            json!({"metadata":{"finalizers":["a","b"]},"spec":{"externalIPs":["2.2.2.2"]}}),
        );
    }

    #[test]
    fn strategic_directives() {
        check(
            PatchType::Strategic,
            json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}}),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
            json!({"spec":{"strategy":{"type":"Recreate"}}}),
        );
        check(
            PatchType::Strategic,
            json!({"spec":{"ports":[{"port":80}]}}),
            json!({"$setElementOrder/spec":[],"spec":{"$setElementOrder/ports":[{"port":80}],"type":"NodePort"}}),
            json!({"spec":{"ports":[{"port":80}],"type":"NodePort"}}),
        );
    }

    #[test]
    fn json_and_merge_patches() {
        check(
            PatchType::Merge,
            json!({"a":{"b":1,"c":2}}),
            json!({"a":{"b":null,"d":3}}),
            json!({"a":{"c":2,"d":3}}),
        );
        check(
            PatchType::Json,
            json!({"spec":{"type":"ClusterIP"}}),
            json!([{"op":"replace","path":"/spec/type","value":"NodePort"}]),
            json!({"spec":{"type":"NodePort"}}),
        );
        let mut d = json!({});
        assert!(
            apply(
                PatchType::Json,
                &mut d,
                b"[{\"op\":\"remove\",\"path\":\"/x\"}]",
                "Service"
            )
            .is_err()
        );
        assert!(apply(PatchType::Strategic, &mut d, b"[1]", "Service").is_err());
        assert!(apply(PatchType::Merge, &mut d, b"{not json", "Service").is_err());
    }
}
