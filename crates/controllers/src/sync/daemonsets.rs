//! The DaemonSet controller loop: a Pod per selected Node, bound at creation, rolled by
//! revision, status written (see [`crate::daemonset`]). Woken by its DaemonSets, their Pods
//! and every Node change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use super::workloads::{claim, ignore_404, owner_or_adopters, pods_in};
use super::{Ctx, events, requeue_on_error};
use crate::{Error, daemonset, history};

pub(crate) fn controller(
    ctx: Arc<Ctx>,
    daemonsets: impl Stream<Item = Arc<DaemonSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    nodes: impl Stream<Item = Arc<Node>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<DaemonSet>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<DaemonSet>, Action), impl std::fmt::Display>> {
    let (by_ns, all) = (ctx.daemonsets.clone(), ctx.daemonsets.clone());
    Controller::for_shared_stream(daemonsets, ctx.daemonsets.clone())
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            owner_or_adopters(&by_ns, &pod, "DaemonSet")
        })
        .watches_shared_stream(nodes, move |_node: Arc<Node>| {
            all.state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        })
        .reconcile_on(pods_gone)
        .run(reconcile, requeue_on_error, ctx)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let all = pods_in(&ctx, &ns, &uid);
    if !ctx.expectations.satisfied(&uid, &all) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = daemonset::owned_pods(&ds, all.iter().map(|p| &**p));
    let orphans: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| crate::owners::controller_of(&p.metadata).is_none())
        .collect();
    if ds.metadata.deletion_timestamp.is_none() {
        claim(&pods_api, &*ds, &orphans, &[]).await?;
    }
    let hash = daemonset::revision(&ds);
    let in_use: BTreeSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(daemonset::REVISION_LABEL))
        .map(|h| history::revision_name(&ds.metadata, h))
        .collect();
    let no_template = PodTemplateSpec::default();
    let spec = ds.spec.as_ref();
    let owner = history::Owner {
        kind: "DaemonSet",
        meta: &ds.metadata,
        template: spec.map_or(&no_template, |s| &s.template),
        limit: spec.and_then(|s| s.revision_history_limit).unwrap_or(10),
        hash_label: daemonset::REVISION_LABEL,
        hash: &hash,
    };
    super::history::sync(&ctx, owner, &in_use, None).await?;
    let nodes = ctx.nodes.state();
    let nodes: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let plan = daemonset::plan(&ds, &nodes, &owned, jiff::Timestamp::now());
    let revision = hash;
    let (mut created, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for node in &plan.create_on {
        let pod = pods_api
            .create(
                &PostParams::default(),
                &daemonset::pod_for(&ds, node, &revision),
            )
            .await?;
        let msg = format!("Created pod: {}", pod.name_any());
        events::record(&ctx.client, &*ds, "Normal", "SuccessfulCreate", &msg).await;
        created.insert(pod.name_any());
    }
    for name in &plan.delete {
        ignore_404(pods_api.delete(name, &DeleteParams::default()).await)?;
        let msg = format!("Deleted pod: {name}");
        events::record(&ctx.client, &*ds, "Normal", "SuccessfulDelete", &msg).await;
        deleted.insert(name.clone());
    }
    if !created.is_empty() || !deleted.is_empty() {
        ctx.expectations.set(&uid, created, deleted);
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let mut next = (*ds).clone();
        next.status = Some(plan.status);
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&ds.name_any(), &PostParams::default(), &next)
            .await?;
    }
    // minReadySeconds makes Pods available with no event to wake on.
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    Ok(if min_ready > 0 {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}
