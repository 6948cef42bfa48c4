//! Recording core/v1 Events, which `kubectl describe` shows under `Events:`.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// The component name Events are attributed to.
pub(crate) const COMPONENT: &str = "berth-controllers";

/// Records an Event about `obj` (any namespaced object); failures are logged, never fatal.
pub(crate) async fn record<K>(client: &Client, obj: &K, type_: &str, reason: &str, message: &str)
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = obj.namespace().unwrap_or_default();
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(obj.name_any()),
        namespace: Some(ns.clone()),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        ..Default::default()
    };
    let ev = berth_api::events::event(reference, COMPONENT, None, type_, reason, message);
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::warn!(%ns, object = %obj.name_any(), error = %e, "recording an event");
    }
}
