//! Reading and writing the `metadata` of objects held as JSON, and the storage key layout.

use berth_api::resources::Resource;
use serde_json::{Map, Value};

/// Metadata accessors for an object held as `serde_json::Value`.
pub trait ObjectMeta {
    fn meta_str(&self, field: &str) -> Option<&str>;
    fn meta_mut(&mut self) -> &mut Map<String, Value>;

    fn name(&self) -> Option<&str> {
        self.meta_str("name")
    }
    fn namespace(&self) -> Option<&str> {
        self.meta_str("namespace")
    }
    fn resource_version(&self) -> Option<&str> {
        self.meta_str("resourceVersion")
    }
    fn set_meta(&mut self, field: &str, value: Value) {
        self.meta_mut().insert(field.to_owned(), value);
    }
    fn remove_meta(&mut self, field: &str) -> Option<Value> {
        self.meta_mut().remove(field)
    }
}

impl ObjectMeta for Value {
    fn meta_str(&self, field: &str) -> Option<&str> {
        self.get("metadata")?.get(field)?.as_str()
    }

    fn meta_mut(&mut self) -> &mut Map<String, Value> {
        if !self.is_object() {
            *self = Value::Object(Map::new());
        }
        let obj = match self {
            Value::Object(m) => m,
            _ => unreachable!("made an object above"),
        };
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        match meta {
            Value::Object(m) => m,
            _ => unreachable!("made an object above"),
        }
    }
}

/// Labels of an object as a map (empty when absent or malformed).
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Storage key of a collection: `/{group or core}/{plural}/` and, for one namespace, `.../{ns}/`.
pub fn collection_key(r: &Resource, namespace: Option<&str>) -> String {
    // events.k8s.io Events live where core Events do, as kube-apiserver stores them.
    let group = match r.group {
        "" | "events.k8s.io" => "core",
        g => g,
    };
    match namespace {
        Some(ns) if r.namespaced => format!("/{group}/{}/{ns}/", r.plural),
        _ => format!("/{group}/{}/", r.plural),
    }
}

/// Storage key of one object.
pub fn object_key(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", collection_key(r, namespace))
}

/// The current time as kube-apiserver writes timestamps (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
