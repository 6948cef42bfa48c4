//! What kube-controller-manager's StatefulSet controller decides for one StatefulSet: Pods
//! with stable names `<set>-<ordinal>` created in order (each once its predecessors run and
//! are ready, unless `podManagementPolicy: Parallel`), removed from the highest ordinal down,
//! replaced one at a time from the highest ordinal down to `partition` when the template
//! changes, and the status `kubectl rollout status` reads (upstream
//! `pkg/controller/statefulset/stateful_set_control.go`).
//!
//! Each template is recorded as a ControllerRevision ([`crate::history`]); a Pod below the
//! partition that is deleted during a partitioned rollout comes back from the current
//! revision's template, as upstream rebuilds it. `volumeClaimTemplates` become `emptyDir`
//! volumes of the same name until berth has persistent volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::owners::{controller_ref, nonzero};
use crate::pods::{is_ready, is_terminal, is_terminating, name, namespace};

pub use crate::history::REVISION_LABEL;
/// The Pod label holding the Pod's own name (so a Service can select one Pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The Pod label holding its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What one sync should do.
#[derive(Debug, Clone, PartialEq)]
pub struct StatefulSetPlan {
    /// Pods to create, in this order.
    pub create: Vec<Pod>,
    /// Names of Pods to delete.
    pub delete: Vec<String>,
    /// The status to write (when it differs).
    pub status: StatefulSetStatus,
}

/// The hash of the set's template, as its revision's name and label carry it.
pub fn template_hash(sts: &StatefulSet) -> String {
    crate::history::template_hash(sts.spec.as_ref().map(|s| &s.template))
}

/// `<set>-<hash of the template>`, the update revision's name.
pub fn update_revision(sts: &StatefulSet) -> String {
    crate::history::revision_name(&sts.metadata, &template_hash(sts))
}

/// The ordinal of a Pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<usize> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    // "01" is not the name of ordinal 1.
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// The Pods `sts` controls (by owner uid), by ordinal.
pub fn owned_pods<'a>(
    sts: &StatefulSet,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> BTreeMap<usize, &'a Pod> {
    let uid = sts.metadata.uid.as_deref().unwrap_or_default();
    let set = name(&sts.metadata);
    pods.into_iter()
        .filter(|p| namespace(&p.metadata) == namespace(&sts.metadata))
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .filter_map(|p| Some((ordinal(set, name(&p.metadata))?, p)))
        .collect()
}

/// Pod `ordinal` of `sts` at `revision`: the template, a stable name, hostname and subdomain
/// (so `<pod>.<serviceName>` resolves), the identity labels and the set as controller.
pub fn pod_for(sts: &StatefulSet, ordinal: usize, revision: &str) -> Pod {
    let template = sts
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    pod_from(sts, template, ordinal, revision)
}

/// Pod `ordinal` of `sts` made from `template` (the one `revision` recorded).
pub fn pod_from(
    sts: &StatefulSet,
    template: PodTemplateSpec,
    ordinal: usize,
    revision: &str,
) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let pod_name = format!("{}-{ordinal}", name(&sts.metadata));
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_owned());
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    pod_spec.subdomain = spec.service_name.filter(|s| !s.is_empty());
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim_name = name(&claim.metadata).to_owned();
        if !volumes.iter().any(|v| v.name == claim_name) {
            volumes.push(Volume {
                name: claim_name,
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
        }
    }
    if volumes.is_empty() {
        pod_spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "StatefulSet",
                &sts.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    running && is_ready(pod) && !is_terminating(pod)
}

/// One sync of `sts` given the Pods it controls (as from [`owned_pods`]) and the current
/// revision's name and template, when it is still recorded: Pods below the partition are
/// made from it.
pub fn plan(
    sts: &StatefulSet,
    pods: &BTreeMap<usize, &Pod>,
    current: Option<(&str, &PodTemplateSpec)>,
) -> StatefulSetPlan {
    let spec = sts.spec.as_ref();
    let replicas = usize::try_from(spec.and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let parallel = spec.and_then(|s| s.pod_management_policy.as_deref()) == Some("Parallel");
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(0);
    let update = update_revision(sts);
    let status = status(sts, pods, &update);
    let mut out = StatefulSetPlan {
        create: Vec::new(),
        delete: Vec::new(),
        status,
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return out;
    }
    let monotonic = !parallel;
    // Pods that finished for good are deleted, to be made again.
    for (_, pod) in pods
        .iter()
        .filter(|(i, p)| **i < replicas && is_terminal(p))
    {
        if !is_terminating(pod) {
            out.delete.push(name(&pod.metadata).to_owned());
        }
    }
    if !out.delete.is_empty() {
        return out;
    }
    // Upstream `newVersionedStatefulSetPod`: below a rolling update's partition, a Pod is
    // made at the current revision.
    let make = |ordinal: usize| match current {
        Some((rev, template)) if rolling && ordinal < partition && rev != update => {
            pod_from(sts, template.clone(), ordinal, rev)
        }
        _ => pod_for(sts, ordinal, &update),
    };
    // Create the missing ones, in order; an OrderedReady set waits for each to be ready.
    for ordinal in 0..replicas {
        match pods.get(&ordinal) {
            None => {
                out.create.push(make(ordinal));
                if monotonic {
                    return out;
                }
            }
            Some(pod) if monotonic && !running_and_ready(pod) => return out,
            Some(_) => {}
        }
    }
    if !out.create.is_empty() {
        return out;
    }
    // Remove the condemned, highest ordinal first; one at a time when ordered.
    for (_, pod) in pods.range(replicas..).rev() {
        if is_terminating(pod) {
            if monotonic {
                return out;
            }
            continue;
        }
        out.delete.push(name(&pod.metadata).to_owned());
        if monotonic {
            return out;
        }
    }
    if !out.delete.is_empty() {
        return out;
    }
    // Rolling update: replace one Pod at a time from the highest ordinal down to the partition,
    // each once every Pod is running and ready again.
    if rolling && pods.values().all(|p| running_and_ready(p)) {
        for ordinal in (partition..replicas).rev() {
            if let Some(pod) = pods.get(&ordinal)
                && revision_of(pod) != Some(update.as_str())
            {
                out.delete.push(name(&pod.metadata).to_owned());
                return out;
            }
        }
    }
    out
}

/// Upstream's status: counts over the Pods as they are, the revisions, the generation seen.
fn status(sts: &StatefulSet, pods: &BTreeMap<usize, &Pod>, update: &str) -> StatefulSetStatus {
    let live: Vec<&Pod> = pods
        .values()
        .copied()
        .filter(|p| !is_terminating(p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let replicas =
        usize::try_from(sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let old = sts.status.clone().unwrap_or_default();
    let updated = count(&|p| revision_of(p) == Some(update));
    // Once every wanted Pod runs the update revision, it is the current one.
    let current_revision = match old.current_revision.as_deref() {
        Some(c) if !c.is_empty() && usize::try_from(updated).unwrap_or(0) < replicas => {
            c.to_owned()
        }
        _ => update.to_owned(),
    };
    let current = count(&|p| revision_of(p) == Some(current_revision.as_str()));
    let ready = count(&|p| is_ready(p));
    StatefulSetStatus {
        replicas: i32::try_from(live.len()).unwrap_or(i32::MAX),
        ready_replicas: nonzero(ready),
        available_replicas: Some(ready),
        current_replicas: nonzero(current),
        updated_replicas: nonzero(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update.to_owned()),
        observed_generation: sts.metadata.generation,
        collision_count: Some(0),
        conditions: old.conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::merge;
    use serde_json::{Value, json};

    fn sts(extra: Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "sts-uid", "generation": 1},
            "spec": {"replicas": 3, "serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                     "podManagementPolicy": "OrderedReady",
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                     "template": {"metadata": {"labels": {"app": "nginx"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test StatefulSet")
    }

    /// Pod `ordinal` of `s` as the API returns it, running and ready or not.
    fn pod(s: &StatefulSet, ordinal: usize, ready: bool) -> Pod {
        let mut p = pod_for(s, ordinal, &update_revision(s));
        p.metadata.uid = Some(format!("pod-{ordinal}"));
        p.status = serde_json::from_value(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }))
        .expect("status");
        p
    }

    fn owned(pods: &[Pod]) -> BTreeMap<usize, &Pod> {
        pods.iter()
            .map(|p| (ordinal("web", name(&p.metadata)).expect("ordinal"), p))
            .collect()
    }

    fn created(plan: &StatefulSetPlan) -> Vec<String> {
        plan.create
            .iter()
            .map(|p| name(&p.metadata).to_owned())
            .collect()
    }

    #[test]
    fn ordinals_are_parsed_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
        assert_eq!(ordinal("web", "web-a"), None);
    }

    #[test]
    fn pods_get_a_stable_identity() {
        let s = sts(
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}}),
        );
        let p = pod_for(&s, 2, "web-abc");
        assert_eq!(name(&p.metadata), "web-2");
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let labels = p.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "nginx");
        let volumes = spec.volumes.as_ref().expect("volumes");
        assert_eq!(volumes[0].name, "www");
        assert!(volumes[0].empty_dir.is_some());
        let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StatefulSet", "sts-uid")
        );
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time() {
        let s = sts(json!({}));
        assert_eq!(created(&plan(&s, &BTreeMap::new(), None)), ["web-0"]);
        let pods = [pod(&s, 0, false)];
        assert!(
            plan(&s, &owned(&pods), None).create.is_empty(),
            "web-0 is not ready yet"
        );
        let pods = [pod(&s, 0, true)];
        assert_eq!(created(&plan(&s, &owned(&pods), None)), ["web-1"]);
        let pods = [pod(&s, 0, true), pod(&s, 1, true), pod(&s, 2, true)];
        let p = plan(&s, &owned(&pods), None);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.status.ready_replicas, Some(3));
        assert_eq!(p.status.updated_replicas, Some(3));
        assert_eq!(p.status.current_revision, p.status.update_revision);
    }

    #[test]
    fn parallel_creates_and_deletes_at_once() {
        let s = sts(json!({"spec": {"podManagementPolicy": "Parallel"}}));
        assert_eq!(
            created(&plan(&s, &BTreeMap::new(), None)),
            ["web-0", "web-1", "web-2"]
        );
        let s = sts(json!({"spec": {"podManagementPolicy": "Parallel", "replicas": 1}}));
        let pods = [pod(&s, 0, true), pod(&s, 1, true), pod(&s, 2, false)];
        assert_eq!(plan(&s, &owned(&pods), None).delete, ["web-2", "web-1"]);
    }

    #[test]
    fn scaling_down_removes_the_highest_ordinal_first() {
        let s = sts(json!({"spec": {"replicas": 1}}));
        let pods = [pod(&s, 0, true), pod(&s, 1, true), pod(&s, 2, true)];
        assert_eq!(plan(&s, &owned(&pods), None).delete, ["web-2"]);
        let mut going = pod(&s, 2, true);
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let pods = [pod(&s, 0, true), pod(&s, 1, true), going];
        assert!(
            plan(&s, &owned(&pods), None).delete.is_empty(),
            "web-2 first"
        );
    }

    #[test]
    fn a_template_change_rolls_from_the_top_down_to_the_partition() {
        let old = sts(json!({}));
        let new = sts(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}},
                                      "updateStrategy": {"rollingUpdate": {"partition": 1}}},
                             "status": {"currentRevision": update_revision(&old)}}),
        );
        let pods = [pod(&old, 0, true), pod(&old, 1, true), pod(&old, 2, true)];
        let p = plan(&new, &owned(&pods), None);
        assert_eq!(p.delete, ["web-2"]);
        assert_eq!(p.status.updated_replicas, None);
        assert_eq!(p.status.current_revision, Some(update_revision(&old)));
        // web-2 back at the new revision: web-1 next; web-0 is below the partition.
        let pods = [pod(&old, 0, true), pod(&old, 1, true), pod(&new, 2, true)];
        assert_eq!(plan(&new, &owned(&pods), None).delete, ["web-1"]);
        let pods = [pod(&old, 0, true), pod(&new, 1, true), pod(&new, 2, true)];
        let p = plan(&new, &owned(&pods), None);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.updated_replicas, Some(2));
        // While a replaced Pod is not ready, nothing else is touched.
        let pods = [pod(&old, 0, true), pod(&old, 1, true), pod(&new, 2, false)];
        assert!(plan(&new, &owned(&pods), None).delete.is_empty());
    }

    #[test]
    fn a_pod_below_the_partition_comes_back_at_the_current_revision() {
        let old = sts(json!({}));
        let new = sts(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}},
                                      "updateStrategy": {"rollingUpdate": {"partition": 2}}},
                             "status": {"currentRevision": update_revision(&old)}}),
        );
        let old_template = old.spec.as_ref().expect("spec").template.clone();
        let current = Some((update_revision(&old), old_template));
        let current = current.as_ref().map(|(n, t)| (n.as_str(), t));
        // web-0 (below the partition) was deleted mid-rollout.
        let pods = [pod(&new, 2, true), pod(&old, 1, true)];
        let p = plan(&new, &owned(&pods), current);
        let made = &p.create[0];
        assert_eq!(name(&made.metadata), "web-0");
        assert_eq!(revision_of(made), Some(update_revision(&old).as_str()));
        let image = made.spec.as_ref().expect("spec").containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some("nginx"));
        // At or above the partition, and with no revision recorded, the update template.
        let pods = [pod(&old, 0, true), pod(&old, 1, true)];
        let p = plan(&new, &owned(&pods), current);
        assert_eq!(
            revision_of(&p.create[0]),
            Some(update_revision(&new).as_str())
        );
        let pods = [pod(&new, 2, true), pod(&old, 1, true)];
        let p = plan(&new, &owned(&pods), None);
        assert_eq!(
            revision_of(&p.create[0]),
            Some(update_revision(&new).as_str())
        );
    }

    #[test]
    fn only_pods_it_controls_count() {
        let s = sts(json!({}));
        let mine = pod(&s, 0, true);
        let mut other = pod(&s, 1, true);
        other.metadata.owner_references = None;
        let pods = [mine, other];
        let owned = owned_pods(&s, pods.iter());
        assert_eq!(owned.keys().copied().collect::<Vec<_>>(), [0]);
    }
}
