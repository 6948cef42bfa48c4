//! core/v1 Events as the kubelet and kube-controller-manager write them (what `kubectl
//! describe` shows under `Events:`); every component that reports builds them here.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

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
}
