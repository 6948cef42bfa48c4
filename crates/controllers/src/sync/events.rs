//! Recording core/v1 Events, which `kubectl describe` shows under `Events:`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// The component name Events are attributed to.
pub(crate) const COMPONENT: &str = "berth-controllers";

/// Records an Event about `svc` (any namespaced object); failures are logged, never fatal.
pub(crate) async fn record<K>(client: &Client, svc: &K, type_: &str, reason: &str, message: &str)
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = svc.namespace().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        // Named as kubelet and kube-controller-manager name theirs: object name, a dot, and a
        // hex timestamp.
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                svc.name_any(),
                jiff::Timestamp::now().as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(svc.name_any()),
            namespace: Some(ns.clone()),
            uid: svc.uid(),
            resource_version: svc.resource_version(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(COMPONENT.into()),
        ..Default::default()
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::warn!(%ns, service = %svc.name_any(), error = %e, "recording an event");
    }
}
