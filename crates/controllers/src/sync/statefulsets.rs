//! The StatefulSet controller loop: Pods for each StatefulSet as `statefulset::plan` orders
//! them, its ControllerRevisions and its status, written through the API.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use super::workloads::controller_of;
use super::{Ctx, events, requeue_on_error};
use crate::{Error, history, statefulset};

pub(crate) fn controller(
    ctx: Arc<Ctx>,
    sets: impl Stream<Item = Arc<StatefulSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<StatefulSet>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<StatefulSet>, Action), impl std::fmt::Display>> {
    Controller::for_shared_stream(sets, ctx.statefulsets.clone())
        .watches_shared_stream(pods, |pod: Arc<Pod>| {
            controller_of::<StatefulSet>(&pod.metadata, "StatefulSet")
        })
        .reconcile_on(pods_gone)
        .run(reconcile, requeue_on_error, ctx)
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.uid().unwrap_or_default();
    let all = super::workloads::pods_in(&ctx, &ns, &uid);
    let owned = statefulset::owned_pods(&sts, all.iter().map(|p| &**p));
    let hash = statefulset::template_hash(&sts);
    let update = history::revision_name(&sts.metadata, &hash);
    let current = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|c| !c.is_empty());
    let mut in_use: BTreeSet<String> = owned
        .values()
        .filter_map(|p| p.labels().get(statefulset::REVISION_LABEL).cloned())
        .collect();
    in_use.extend(current.iter().cloned());
    let no_template = PodTemplateSpec::default();
    let spec = sts.spec.as_ref();
    let owner = history::Owner {
        kind: "StatefulSet",
        meta: &sts.metadata,
        template: spec.map_or(&no_template, |s| &s.template),
        limit: spec.and_then(|s| s.revision_history_limit).unwrap_or(10),
        hash_label: history::HASH_LABEL,
        hash: &hash,
    };
    let current_template = super::history::sync(&ctx, owner, &in_use, current.as_deref()).await?;
    let current = current
        .as_deref()
        .filter(|c| *c != update)
        .zip(current_template.as_ref());
    let plan = statefulset::plan(&sts, &owned, current);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let set = sts.name_any();
    for pod in &plan.create {
        let pod_name = pod.name_any();
        match pods.create(&PostParams::default(), pod).await {
            // The cache is behind: the Pod exists already (or is still going away).
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            r => {
                r?;
            }
        }
        let msg = format!("create Pod {pod_name} in StatefulSet {set} successful");
        events::record(&ctx.client, &*sts, "Normal", "SuccessfulCreate", &msg).await;
    }
    for pod_name in &plan.delete {
        match pods.delete(pod_name, &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            r => {
                r?;
            }
        }
        let msg = format!("delete Pod {pod_name} in StatefulSet {set} successful");
        events::record(&ctx.client, &*sts, "Normal", "SuccessfulDelete", &msg).await;
    }
    if sts.status.as_ref() != Some(&plan.status) {
        let mut next = (*sts).clone();
        next.status = Some(plan.status.clone());
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&set, &PostParams::default(), &next)
            .await
        {
            // A newer StatefulSet is on its way to the cache; it brings another reconcile.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            r => {
                r?;
            }
        }
    }
    Ok(Action::await_change())
}
