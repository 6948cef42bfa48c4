//! core/v1 Events as the kubelet and kube-controller-manager write them (what `kubectl
//! describe` shows under `Events:`); every component that reports builds them here. Also the
//! field mapping between core/v1 and events.k8s.io/v1 Events, which are one stored object
//! (kube-apiserver keeps both versions in core's storage and converts on the way).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Value, json};

/// events.k8s.io/v1 field names and the core/v1 names of the same fields, as upstream's
/// conversion (pkg/apis/events/v1) maps them; every other field has one name in both.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// A core/v1 Event (as stored) in its events.k8s.io/v1 form. Anything but an object is
/// returned as it is.
pub fn to_events_v1(core: Value) -> Value {
    convert(core, "events.k8s.io/v1", |(v1, core)| (core, v1))
}

/// An events.k8s.io/v1 Event in its core/v1 form, the one stored.
pub fn to_core_v1(ev: Value) -> Value {
    convert(ev, "v1", |pair| pair)
}

fn convert(
    obj: Value,
    api_version: &str,
    direction: fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut moved = Vec::new();
    for pair in RENAMED {
        let (from, to) = direction(pair);
        if let Some(v) = m.remove(from) {
            moved.push((to, v));
        }
    }
    // Written after every removal, so no renamed field lands on one not yet moved.
    for (to, v) in moved {
        m.insert(to.to_owned(), v);
    }
    if m.contains_key("apiVersion") {
        m.insert("apiVersion".into(), json!(api_version));
    }
    Value::Object(m)
}

/// A new Event about `object` from `component` (and `host`, for node components).
pub fn event(
    object: ObjectReference,
    component: &str,
    host: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) -> Event {
    let now = jiff::Timestamp::now();
    Event {
        // Named as upstream names them: the object's name, a dot and a hex timestamp.
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                object.name.as_deref().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: object.namespace.clone(),
            ..Default::default()
        },
        involved_object: object,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: host.map(str::to_owned),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: host.map(str::to_owned),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_after_their_object() {
        let ev = event(
            ObjectReference {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            "kubelet",
            Some("node-1"),
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
        );
        assert!(ev.metadata.name.expect("named").starts_with("web."));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(ev.source.expect("source").host.as_deref(), Some("node-1"));
        assert_eq!(ev.count, Some(1));
    }

    #[test]
    fn events_v1_and_core_map_field_for_field() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "message": "Started container", "reason": "Started", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "reportingComponent": "kubelet", "reportingInstance": "node-1",
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:01Z",
            "count": 2, "eventTime": null, "action": "Start",
        });
        let v1 = to_events_v1(core.clone());
        assert_eq!(
            v1,
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "web.1", "namespace": "default"},
                "regarding": {"kind": "Pod", "name": "web"},
                "note": "Started container", "reason": "Started", "type": "Normal",
                "deprecatedSource": {"component": "kubelet", "host": "node-1"},
                "reportingController": "kubelet", "reportingInstance": "node-1",
                "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2026-01-01T00:00:01Z",
                "deprecatedCount": 2, "eventTime": null, "action": "Start",
            })
        );
        assert_eq!(to_core_v1(v1), core);
        assert_eq!(to_core_v1(json!("x")), json!("x"));
    }
}
