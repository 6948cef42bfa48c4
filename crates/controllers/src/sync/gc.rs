//! The garbage collector loop: woken by changes of owners and dependents (and every few
//! seconds regardless), it plans over the shared caches and acts through the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::Ctx;
use crate::gc::{Action, Node, Objects, plan_over};
use crate::index::Indexed;

/// The collector's graph: one [`Objects`] per kind it watches, each kept by the task that
/// drives that kind's watch.
#[derive(Clone, Default)]
pub(crate) struct Graph {
    pub deployments: Indexed<Objects>,
    pub replicasets: Indexed<Objects>,
    pub replication_controllers: Indexed<Objects>,
    pub daemonsets: Indexed<Objects>,
    pub statefulsets: Indexed<Objects>,
    pub pods: Indexed<Objects>,
    pub services: Indexed<Objects>,
    pub slices: Indexed<Objects>,
    pub revisions: Indexed<Objects>,
}

impl Graph {
    /// The number of changes so far and, when it differs from `seen` (or `always`), the plan.
    fn plan(&self, seen: Option<u64>, always: bool) -> (u64, Option<Vec<Action>>) {
        let kinds = [
            self.deployments.read(),
            self.replicasets.read(),
            self.replication_controllers.read(),
            self.daemonsets.read(),
            self.statefulsets.read(),
            self.pods.read(),
            self.services.read(),
            self.slices.read(),
            self.revisions.read(),
        ];
        let changes = kinds.iter().map(|k| k.changes()).sum();
        if !always && seen == Some(changes) {
            return (changes, None);
        }
        let nodes: Vec<&Node> = kinds.iter().flat_map(|k| k.candidates()).collect();
        let actions = plan_over(&nodes, |uid| kinds.iter().find_map(|k| k.get(uid)));
        (changes, Some(actions))
    }
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
        ("apps/v1", "DaemonSet") => uid_of(Api::<DaemonSet>::namespaced(c, ns), &o.name).await,
        ("v1", "Service") => uid_of(Api::<Service>::namespaced(c, ns), &o.name).await,
        ("v1", "ReplicationController") => {
            uid_of(Api::<ReplicationController>::namespaced(c, ns), &o.name).await
        }
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
        "ReplicationController" => "replicationcontrollers",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "Pod" => "pods",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "ControllerRevision" => "controllerrevisions",
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

/// Runs the collector until the task is dropped. A wake-up plans only when the graph changed
/// since the last plan or that plan had steps (which may have failed or found an owner not
/// yet gone): planning again over the same graph would give the same empty plan.
pub(crate) async fn run(ctx: Arc<Ctx>, wake: Arc<tokio::sync::Notify>) {
    let mut seen = None;
    let mut pending = false;
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        // Let a burst of changes land before planning once over all of them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (changes, actions) = ctx.graph.plan(seen, pending);
        seen = Some(changes);
        let Some(actions) = actions else {
            continue;
        };
        pending = !actions.is_empty();
        for action in actions {
            if let Err(e) = act(&ctx, action).await {
                tracing::warn!(error = %e, "garbage collection step failed; will retry");
            }
        }
    }
}
