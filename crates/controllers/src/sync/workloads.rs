//! The ReplicaSet and Deployment controller loops: pods from ReplicaSets, ReplicaSets from
//! Deployments, status on both, as kube-controller-manager's controllers write them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, ReplicationControllerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, events, requeue_on_error};
use crate::{Error, deployment, replicaset};

/// Pods a ReplicaSet created or deleted that the Pod cache has not shown yet. Acting again
/// before it does would create or delete twice (upstream's "expectations").
#[derive(Default)]
pub(crate) struct Expectations {
    /// By ReplicaSet uid.
    pending: std::sync::Mutex<HashMap<String, Pending>>,
}

/// Names created and deleted by one sync, and when.
type Pending = (BTreeSet<String>, BTreeSet<String>, Instant);

impl Expectations {
    pub(crate) fn set(&self, rs_uid: &str, created: BTreeSet<String>, deleted: BTreeSet<String>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(rs_uid.to_owned(), (created, deleted, Instant::now()));
    }

    /// Whether the cache reflects everything this ReplicaSet did (or it waited long enough).
    pub(crate) fn satisfied(&self, rs_uid: &str, pods: &[Arc<Pod>]) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some((created, deleted, since)) = p.get(rs_uid) else {
            return true;
        };
        let names: BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let done = created.iter().all(|n| names.contains(n.as_str()))
            && deleted.iter().all(|n| {
                !names.contains(n.as_str())
                    || pods.iter().any(|p| {
                        p.metadata.name.as_deref() == Some(n)
                            && p.metadata.deletion_timestamp.is_some()
                    })
            });
        if done || since.elapsed() > Duration::from_secs(10) {
            p.remove(rs_uid);
            return true;
        }
        false
    }
}

/// The controller owner of an object of kind `kind`, as an ObjectRef in its namespace.
pub(crate) fn controller_of<K: Resource<DynamicType = ()>>(
    meta: &kube::api::ObjectMeta,
    kind: &str,
) -> Option<ObjectRef<K>> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)?;
    Some(ObjectRef::new(&owner.name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// The Pods of namespace `ns` in the cache that the owner with uid `owner` controls or
/// might adopt (the others its claim ignores).
pub(crate) fn pods_in(ctx: &Ctx, ns: &str, owner: &str) -> Vec<Arc<Pod>> {
    ctx.pods.claimable(ns, owner)
}

/// Which `K`s a Pod change concerns: its controller of kind `kind`, or, for an orphan,
/// every `K` of its namespace that might adopt it.
pub(crate) fn owner_or_adopters<K>(
    store: &kube::runtime::reflector::Store<K>,
    pod: &Pod,
    kind: &str,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match controller_of::<K>(&pod.metadata, kind) {
        Some(r) => vec![r],
        None => store
            .state()
            .iter()
            .filter(|o| o.namespace() == pod.namespace())
            .map(|o| ObjectRef::from_obj(&**o))
            .collect(),
    }
}

fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Adds (`Some`) or removes (`None`) `owner` in an object's ownerReferences.
fn owners_patch(
    meta: &kube::api::ObjectMeta,
    owner_uid: &str,
    add: Option<OwnerReference>,
) -> Value {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.uid != owner_uid)
        .collect();
    refs.extend(add);
    if refs.is_empty() {
        json!({"metadata": {"ownerReferences": null}})
    } else {
        json!({"metadata": {"ownerReferences": refs}})
    }
}

/// Makes `owner` the controller of `adopt` and drops it from `release`, as upstream's
/// ControllerRefManager does, so objects follow selector changes.
pub(crate) async fn claim<K, O>(
    api: &Api<K>,
    owner: &O,
    adopt: &[&K],
    release: &[&K],
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let uid = owner.uid().unwrap_or_default();
    let changes = adopt
        .iter()
        .map(|o| (o, Some(controller_ref(owner))))
        .chain(release.iter().map(|o| (o, None)));
    for (obj, add) in changes {
        let patch = owners_patch(obj.meta(), &uid, add);
        ignore_404(
            api.patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
        )?;
    }
    Ok(())
}

pub(crate) fn ignore_404<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

fn requeue(after: Option<Duration>) -> Action {
    after.map_or_else(Action::await_change, Action::requeue)
}

pub(crate) fn replicaset_controller(
    ctx: Arc<Ctx>,
    replicasets: impl Stream<Item = Arc<ReplicaSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<ReplicaSet>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<ReplicaSet>, Action), impl std::fmt::Display>> {
    let rs_store = ctx.replicasets.clone();
    Controller::for_shared_stream(replicasets, ctx.replicasets.clone())
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            owner_or_adopters(&rs_store, &pod, "ReplicaSet")
        })
        .reconcile_on(pods_gone)
        .run(reconcile_replicaset, requeue_on_error, ctx)
}

async fn reconcile_replicaset(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(plan) = sync_pods(&*rs, &rs, &ctx).await? else {
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    if rs.status.as_ref() != Some(&plan.status) {
        let mut next = (*rs).clone();
        next.status = Some(plan.status.clone());
        let api: Api<ReplicaSet> =
            Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
        api.replace_status(&rs.name_any(), &PostParams::default(), &next)
            .await?;
    }
    Ok(requeue(plan.requeue_after))
}

/// One sync of the Pods of `owner` (a ReplicaSet, or a ReplicationController seen as the
/// ReplicaSet `rs`): claims, creates and deletes as planned and returns the plan, whose status
/// the caller writes; `None` while the Pod cache has not yet shown the last sync's work.
async fn sync_pods<O>(
    owner: &O,
    rs: &ReplicaSet,
    ctx: &Ctx,
) -> Result<Option<replicaset::ReplicaSetPlan>, Error>
where
    O: Resource<DynamicType = ()>,
{
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let all = pods_in(ctx, &ns, &uid);
    if !ctx.expectations.satisfied(&uid, &all) {
        return Ok(None);
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = replicaset::owned_pods(rs, all.iter().map(|p| &**p));
    // An owner being deleted adopts nothing.
    let adopt: &[&Pod] = if rs.metadata.deletion_timestamp.is_none() {
        &owned.adopt
    } else {
        &[]
    };
    claim(&pods_api, owner, adopt, &owned.release).await?;
    let claimed = owned.claimed();
    let plan = replicaset::plan(rs, &claimed, jiff::Timestamp::now());
    let mut created = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    if rs.metadata.deletion_timestamp.is_none() {
        for _ in 0..plan.create {
            let mut pod = replicaset::pod_from_template(rs);
            pod.metadata.owner_references = Some(vec![controller_ref(owner)]);
            let pod = pods_api.create(&PostParams::default(), &pod).await?;
            let msg = format!("Created pod: {}", pod.name_any());
            events::record(&ctx.client, owner, "Normal", "SuccessfulCreate", &msg).await;
            created.insert(pod.name_any());
        }
        for name in &plan.delete {
            ignore_404(pods_api.delete(name, &DeleteParams::default()).await)?;
            let msg = format!("Deleted pod: {name}");
            events::record(&ctx.client, owner, "Normal", "SuccessfulDelete", &msg).await;
            deleted.insert(name.clone());
        }
    }
    if !created.is_empty() || !deleted.is_empty() {
        ctx.expectations.set(&uid, created, deleted);
    }
    Ok(Some(plan))
}

/// A ReplicationController as the ReplicaSet it amounts to (its selector as `matchLabels`),
/// so both share one plan, as upstream's controller wraps the ReplicaSet one.
fn as_replicaset(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    let status = rc
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| serde_json::from_value(v).ok());
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: spec.selector,
                match_expressions: None,
            },
            template: spec.template,
        }),
        status,
    }
}

pub(crate) fn replication_controller_controller(
    ctx: Arc<Ctx>,
    rcs: impl Stream<Item = Arc<ReplicationController>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<ReplicationController>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<ReplicationController>, Action), impl std::fmt::Display>>
{
    let store = ctx.replication_controllers.clone();
    Controller::for_shared_stream(rcs, ctx.replication_controllers.clone())
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            owner_or_adopters(&store, &pod, "ReplicationController")
        })
        .reconcile_on(pods_gone)
        .run(reconcile_replication_controller, requeue_on_error, ctx)
}

async fn reconcile_replication_controller(
    rc: Arc<ReplicationController>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    let rs = as_replicaset(&rc);
    let Some(plan) = sync_pods(&*rc, &rs, &ctx).await? else {
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let status: Option<ReplicationControllerStatus> = serde_json::to_value(&plan.status)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok());
    if status.is_some() && rc.status != status {
        let mut next = (*rc).clone();
        next.status = status;
        let api: Api<ReplicationController> =
            Api::namespaced(ctx.client.clone(), &rc.namespace().unwrap_or_default());
        api.replace_status(&rc.name_any(), &PostParams::default(), &next)
            .await?;
    }
    Ok(requeue(plan.requeue_after))
}

pub(crate) fn deployment_controller(
    ctx: Arc<Ctx>,
    deployments: impl Stream<Item = Arc<Deployment>> + Send + 'static,
    replicasets: impl Stream<Item = Arc<ReplicaSet>> + Send + 'static,
    rs_gone: impl Stream<Item = ObjectRef<Deployment>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<Deployment>, Action), impl std::fmt::Display>> {
    Controller::for_shared_stream(deployments, ctx.deployments.clone())
        .watches_shared_stream(replicasets, |rs: Arc<ReplicaSet>| {
            controller_of::<Deployment>(&rs.metadata, "Deployment")
        })
        .reconcile_on(rs_gone)
        .run(reconcile_deployment, requeue_on_error, ctx)
}

async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let all: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let owned = deployment::owned_replicasets(&d, all.iter().map(|r| &**r));
    claim(&rs_api, &*d, &owned.adopt, &owned.release).await?;
    let mine: Vec<ReplicaSet> = owned
        .owned
        .iter()
        .chain(owned.adopt.iter())
        .map(|r| (*r).clone())
        .collect();
    let plan = deployment::plan(&d, &mine, jiff::Timestamp::now());
    if let Some(new_rs) = &plan.create_rs {
        match rs_api.create(&PostParams::default(), new_rs).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Our cache is behind, or the name collides; either way, look again shortly.
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            r => {
                r?;
            }
        }
    }
    for (name, to) in &plan.scale {
        let from = mine
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|r| r.spec.as_ref()?.replicas)
            .unwrap_or(0);
        let dir = if *to > from { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {name} from {from} to {to}");
        events::record(&ctx.client, &*d, "Normal", "ScalingReplicaSet", &msg).await;
    }
    if let Some(new_rs) = &plan.create_rs {
        let to = new_rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let msg = format!("Scaled up replica set {} from 0 to {to}", new_rs.name_any());
        events::record(&ctx.client, &*d, "Normal", "ScalingReplicaSet", &msg).await;
    }
    for (name, patch) in plan.rs_patches() {
        ignore_404(
            rs_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )?;
    }
    for name in &plan.delete_rs {
        ignore_404(rs_api.delete(name, &DeleteParams::background()).await)?;
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(rev) = &plan.revision
        && d.annotations().get(deployment::REVISION) != Some(rev)
    {
        let patch = json!({"metadata": {"annotations": {deployment::REVISION: rev}}});
        api.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        // The status write below would conflict with the new resourceVersion.
        return Ok(Action::requeue(Duration::from_millis(10)));
    }
    if d.status.as_ref() != Some(&plan.status) {
        let mut next = (*d).clone();
        next.status = Some(plan.status.clone());
        api.replace_status(&d.name_any(), &PostParams::default(), &next)
            .await?;
    }
    Ok(requeue(plan.requeue_after))
}
