//! The garbage collector loop: woken by changes of owners and dependents (and every few
//! seconds regardless), it plans over the shared caches and acts through the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::Ctx;
use crate::gc::{Action, Node, plan};

/// Every object the collector looks at, from the caches.
fn nodes(ctx: &Ctx) -> Vec<Node> {
    fn all<K: Resource<DynamicType = ()> + Clone>(
        store: &kube::runtime::reflector::Store<K>,
    ) -> Vec<Node> {
        store
            .state()
            .iter()
            .map(|o| Node::new(&K::api_version(&()), &K::kind(&()), o.meta()))
            .collect()
    }
    let mut out = all(&ctx.deployments);
    out.extend(all(&ctx.replicasets));
    out.extend(all(&ctx.statefulsets));
    out.extend(all(&ctx.pods));
    out.extend(all(&ctx.services));
    out.extend(all(&ctx.slices));
    out
}

/// Whether the owner is really gone (or replaced by a namesake with another uid): a live read,
/// since the caches of different kinds lag each other.
async fn owner_gone(ctx: &Ctx, ns: Option<&str>, o: &OwnerReference) -> bool {
    async fn uid_of<K>(api: Api<K>, name: &str) -> Option<Option<String>>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match api.get_opt(name).await {
            Ok(found) => Some(found.and_then(|o| o.meta().uid.clone())),
            Err(_) => None,
        }
    }
    let ns = ns.unwrap_or("default");
    let c = ctx.client.clone();
    let current = match (o.api_version.as_str(), o.kind.as_str()) {
        ("apps/v1", "Deployment") => uid_of(Api::<Deployment>::namespaced(c, ns), &o.name).await,
        ("apps/v1", "ReplicaSet") => uid_of(Api::<ReplicaSet>::namespaced(c, ns), &o.name).await,
        ("apps/v1", "StatefulSet") => uid_of(Api::<StatefulSet>::namespaced(c, ns), &o.name).await,
        ("v1", "Service") => uid_of(Api::<Service>::namespaced(c, ns), &o.name).await,
        ("v1", "Pod") => uid_of(Api::<Pod>::namespaced(c, ns), &o.name).await,
        // Kinds the collector does not know are never assumed gone.
        _ => return false,
    };
    matches!(current, Some(uid) if uid.as_deref() != Some(o.uid.as_str()))
}

fn api_for(ctx: &Ctx, n: &Node) -> Option<Api<kube::api::DynamicObject>> {
    let (group, version) = n
        .api_version
        .split_once('/')
        .unwrap_or(("", n.api_version.as_str()));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &n.kind);
    let plural = match n.kind.as_str() {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "Pod" => "pods",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        _ => return None,
    };
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    Some(Api::namespaced_with(
        ctx.client.clone(),
        n.namespace.as_deref().unwrap_or("default"),
        &ar,
    ))
}

async fn act(ctx: &Ctx, action: Action) -> Result<(), kube::Error> {
    match action {
        Action::Delete {
            node,
            absent_owners,
        } => {
            for o in &absent_owners {
                if !owner_gone(ctx, node.namespace.as_deref(), o).await {
                    return Ok(());
                }
            }
            if let Some(api) = api_for(ctx, &node) {
                tracing::debug!(kind = %node.kind, name = %node.name, "collecting a dependent");
                match api.delete(&node.name, &DeleteParams::background()).await {
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    r => {
                        r?;
                    }
                }
            }
        }
        Action::Release { node, owner_uid } => {
            if let Some(api) = api_for(ctx, &node) {
                let owners: Vec<&OwnerReference> =
                    node.owners.iter().filter(|o| o.uid != owner_uid).collect();
                // An empty list is dropped, as Go's omitempty drops it upstream.
                let owners = if owners.is_empty() {
                    serde_json::Value::Null
                } else {
                    json!(owners)
                };
                let patch = json!({"metadata": {"ownerReferences": owners}});
                api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        Action::Finalize { node, finalizer } => {
            if let Some(api) = api_for(ctx, &node) {
                let rest: Vec<&String> =
                    node.finalizers.iter().filter(|f| *f != finalizer).collect();
                let patch = json!({"metadata": {"finalizers": rest}});
                api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Runs the collector until the task is dropped.
pub(crate) async fn run(ctx: Arc<Ctx>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        // Let a burst of changes land before planning once over all of them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for action in plan(&nodes(&ctx)) {
            if let Err(e) = act(&ctx, action).await {
                tracing::warn!(error = %e, "garbage collection step failed; will retry");
            }
        }
    }
}
