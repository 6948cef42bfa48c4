//! What kube-controller-manager's ReplicaSet controller decides for one ReplicaSet: the Pods it
//! owns or adopts, the Pods it creates and the ones it deletes first, and the status it writes
//! (upstream `pkg/controller/replicaset` and `pkg/controller/controller_utils.go`).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::selector::Selector;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::owners::{Claim, claim, controller_ref, nonzero};
use crate::pods::{is_ready, is_terminal, is_terminating, name, namespace, node_name};

/// Most Pods one sync creates or deletes (upstream's `BurstReplicas`); the rest wait for the
/// next sync, so one huge scale-up cannot flood the API server.
pub const BURST_REPLICAS: usize = 500;

/// Pod annotation whose integer value makes a Pod cheaper (lower) or dearer (higher) to delete.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Condition type a ReplicaSet carries while creating or deleting Pods fails.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Longest name the API accepts; a `generateName` prefix must leave room for the suffix.
const MAX_NAME_LENGTH: usize = 253;

/// The Pods of one ReplicaSet, as upstream's `ClaimPods` sorts them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Owned<'a> {
    /// Active Pods the ReplicaSet controls and still selects.
    pub active: Vec<&'a Pod>,
    /// Active orphans it selects: set the ReplicaSet as their controller, then count them as
    /// active (see [`Owned::claimed`]).
    pub adopt: Vec<&'a Pod>,
    /// Pods it controls whose labels no longer match the selector: remove the owner reference.
    pub release: Vec<&'a Pod>,
}

impl<'a> Owned<'a> {
    /// The Pods the ReplicaSet manages once the adoptions are done: the input of [`plan`].
    pub fn claimed(&self) -> Vec<&'a Pod> {
        self.active.iter().chain(&self.adopt).copied().collect()
    }
}

/// Sorts `pods` into those `rs` owns, should adopt and should release. Pods of other namespaces,
/// finished Pods (Succeeded, Failed) and Pods being deleted are left out, as upstream filters
/// them before claiming.
pub fn owned_pods<'a>(rs: &ReplicaSet, pods: impl IntoIterator<Item = &'a Pod>) -> Owned<'a> {
    let selector = rs
        .spec
        .as_ref()
        .and_then(|s| Selector::from_label_selector(&s.selector).ok());
    let mut owned = Owned::default();
    for pod in pods {
        if namespace(&pod.metadata) != namespace(&rs.metadata)
            || is_terminal(pod)
            || is_terminating(pod)
        {
            continue;
        }
        match claim(&rs.metadata, selector.as_ref(), &pod.metadata) {
            Claim::Owned => owned.active.push(pod),
            Claim::Adopt => owned.adopt.push(pod),
            Claim::Release => owned.release.push(pod),
            Claim::Ignore => {}
        }
    }
    owned
}

/// A new Pod for `rs` (upstream `GetPodFromTemplate`): named by the API server from the prefix
/// `<rs-name>-`, with the template's labels, annotations, finalizers and spec, and the
/// ReplicaSet as its controller.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let rs_name = name(&rs.metadata);
    // Upstream falls back to the bare name when the dashed prefix would be invalid.
    let prefix = if rs_name.len() < MAX_NAME_LENGTH {
        format!("{rs_name}-")
    } else {
        rs_name.to_owned()
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// What one sync of a ReplicaSet should do.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSetPlan {
    /// Pods to create from [`pod_from_template`] (at most [`BURST_REPLICAS`]).
    pub create: usize,
    /// Names of Pods to delete, most expendable first (at most [`BURST_REPLICAS`]).
    pub delete: Vec<String>,
    /// The status to write (write it only when it differs from the current one).
    pub status: ReplicaSetStatus,
    /// When a ready Pod will have been ready for `minReadySeconds`, i.e. when the available
    /// count changes without any watch event: sync again after this long.
    pub requeue_after: Option<Duration>,
}

/// Scales `rs` towards `spec.replicas` (default 1) given the Pods it manages (`active`, as
/// from [`Owned::claimed`]) and computes its status at `now`. A ReplicaSet being deleted only
/// gets its status. The status counts the Pods as they are now, before the planned changes,
/// as upstream does.
pub fn plan(rs: &ReplicaSet, active: &[&Pod], now: Timestamp) -> ReplicaSetPlan {
    let spec = rs.spec.as_ref();
    let want = usize::try_from(spec.and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);

    let (mut create, mut delete) = (0, Vec::new());
    if rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            create = (want - active.len()).min(BURST_REPLICAS);
        } else if active.len() > want {
            let count = (active.len() - want).min(BURST_REPLICAS);
            delete = pods_to_delete(active, count, now);
        }
    }

    ReplicaSetPlan {
        create,
        delete,
        status: status(rs, active, min_ready, now),
        requeue_after: next_available(active, min_ready, now),
    }
}

/// Upstream `calculateStatus`: counts of the active Pods, the ReplicaFailure condition dropped
/// (this sync is assumed to succeed; the caller sets it when a create or delete fails).
fn status(rs: &ReplicaSet, active: &[&Pod], min_ready: i32, now: Timestamp) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let template_selector = Selector::from_map(&template_labels);
    let empty = BTreeMap::new();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled =
        count(&|p| template_selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)));
    let ready = count(&is_ready);
    let available = count(&|p| is_available(p, min_ready, now));

    let mut status = rs.status.clone().unwrap_or_default();
    let conditions: Vec<_> = status
        .conditions
        .take()
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != REPLICA_FAILURE)
        .collect();
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = i32::try_from(active.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = nonzero(fully_labeled);
    status.ready_replicas = nonzero(ready);
    status.available_replicas = nonzero(available);
    status.observed_generation = nonzero(rs.metadata.generation.unwrap_or(0));
    status
}

/// When the Pod turned Ready, if it is Ready (None also when the time is missing).
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    if !is_ready(pod) {
        return None;
    }
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Upstream `IsPodAvailable`: Ready, and Ready for longer than `min_ready` seconds.
pub(crate) fn is_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    ready_since(pod)
        .is_some_and(|t| now.duration_since(t) > SignedDuration::from_secs(i64::from(min_ready)))
}

/// How long until the first ready-but-not-yet-available Pod becomes available.
fn next_available(active: &[&Pod], min_ready: i32, now: Timestamp) -> Option<Duration> {
    if min_ready <= 0 {
        return None;
    }
    let window = SignedDuration::from_secs(i64::from(min_ready));
    active
        .iter()
        .filter(|p| !is_available(p, min_ready, now))
        .filter_map(|p| ready_since(p))
        .map(|t| window - now.duration_since(t))
        .min()
        .map(|d| d.max(SignedDuration::ZERO).unsigned_abs())
}

/// Upstream `getPodsToDelete`: the `count` Pods to delete first, by the ActivePodsWithRanks
/// order (see [`deletion_key`]). Deleting all needs no ranking.
fn pods_to_delete(active: &[&Pod], count: usize, now: Timestamp) -> Vec<String> {
    let mut pods: Vec<&Pod> = active.to_vec();
    if count < pods.len() {
        // Rank: how many of the ReplicaSet's Pods share the node; doubled-up Pods go first.
        let mut on_node: BTreeMap<String, usize> = BTreeMap::new();
        for pod in active {
            *on_node
                .entry(node_name(pod).unwrap_or_default())
                .or_default() += 1;
        }
        pods.sort_by_cached_key(|pod| {
            let rank = on_node
                .get(&node_name(pod).unwrap_or_default())
                .copied()
                .unwrap_or(0);
            deletion_key(pod, rank, now)
        });
    }
    pods.into_iter()
        .take(count)
        .map(|p| name(&p.metadata).to_owned())
        .collect()
}

/// Sort key putting the Pod to delete first lowest, following upstream's ActivePodsWithRanks
/// with LogarithmicScaleDown: unscheduled before scheduled; Pending, Unknown, then Running;
/// not ready before ready; lower deletion cost first; more Pods on the same node first; ready
/// more recently first (by power-of-two buckets of time since); more container restarts
/// first; created more recently first (buckets again); then by UID.
///
/// Upstream breaks ties inside a time bucket by UID at once; this key falls through to the
/// later criteria first, which keeps the order total (a comparator must be, in Rust).
type DeletionKey = (
    bool,
    u8,
    bool,
    i32,
    Reverse<usize>,
    i64,
    Reverse<i32>,
    i64,
    String,
);

fn deletion_key(pod: &Pod, rank: usize, now: Timestamp) -> DeletionKey {
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Pending, and anything upstream's ordinal table lacks (it reads as 0 there).
        _ => 0,
    };
    let cost = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    let ready = is_ready(pod);
    // Only ready Pods compare by ready time; missing times count as newest (deleted first).
    let ready_bucket = if ready {
        time_bucket(ready_since(pod), now)
    } else {
        0
    };
    let restarts = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().map(|c| c.restart_count).max())
        .unwrap_or(0);
    let created = time_bucket(pod.metadata.creation_timestamp.as_ref().map(|t| t.0), now);
    (
        node_name(pod).is_some(),
        phase,
        ready,
        cost,
        Reverse(rank),
        ready_bucket,
        Reverse(restarts),
        created,
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Upstream's logarithmic rank of a past instant: floor(log2(nanoseconds since)), -1 for the
/// future, lowest of all for a missing time.
fn time_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else {
        return i64::MIN;
    };
    let nanos = now.duration_since(t).as_nanos();
    if nanos <= 0 {
        return -1;
    }
    i64::from(127 - nanos.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::merge;
    use serde_json::{Value, json};

    const NOW: &str = "2024-01-01T00:10:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("test time")
    }

    /// ReplicaSet ns/web-abc (uid rs-uid) selecting app=web, `extra` overlaid.
    fn rs(extra: Value) -> ReplicaSet {
        let mut v = json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test ReplicaSet")
    }

    /// A Running Pod of rs-uid on node-1, Ready since `ready_at` (None: not ready).
    fn pod(name: &str, ready_at: Option<&str>, extra: Value) -> Pod {
        let ready = match ready_at {
            Some(t) => json!({"type": "Ready", "status": "True", "lastTransitionTime": t}),
            None => json!({"type": "Ready", "status": "False"}),
        };
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "labels": {"app": "web", "tier": "fe"},
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": "web-abc", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [ready]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test Pod")
    }

    const EARLY: Option<&str> = Some("2024-01-01T00:01:00Z");

    /// Plans for `rs` over `pods` and compares creates, deletions and status counts.
    fn check(case: &str, rs: ReplicaSet, pods: Vec<Pod>, want: Value) {
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&rs, &refs, now());
        let got = json!({
            "create": p.create,
            "delete": p.delete,
            "status": p.status,
            "requeueSecs": p.requeue_after.map(|d| d.as_secs()),
        });
        assert_eq!(got, want, "case {case}");
    }

    #[test]
    fn plan_cases() {
        check(
            "scale up from zero creates the missing pods",
            rs(json!({})),
            vec![],
            json!({"create": 3, "delete": [], "requeueSecs": null,
                   "status": {"replicas": 0, "observedGeneration": 2}}),
        );
        check(
            "scale down deletes unready, then unscheduled-first order",
            rs(json!({"spec": {"replicas": 1}})),
            vec![
                pod("a", EARLY, json!({})),
                pod("b", None, json!({})),
                pod(
                    "c",
                    EARLY,
                    json!({"spec": {"nodeName": null}, "status": {"phase": "Pending"}}),
                ),
            ],
            json!({"create": 0, "delete": ["c", "b"], "requeueSecs": null,
                   "status": {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2,
                              "availableReplicas": 2, "observedGeneration": 2}}),
        );
        check(
            "among ready pods: deletion cost, then doubled-up node, then newest ready",
            rs(json!({"spec": {"replicas": 2}})),
            vec![
                pod(
                    "cheap",
                    EARLY,
                    json!({"metadata": {"annotations": {POD_DELETION_COST: "-5"}},
                           "spec": {"nodeName": "node-2"}}),
                ),
                pod("old", EARLY, json!({})),
                pod("new", Some("2024-01-01T00:09:59Z"), json!({})),
                pod("alone", EARLY, json!({"spec": {"nodeName": "node-3"}})),
            ],
            json!({"create": 0, "delete": ["cheap", "new"], "requeueSecs": null,
                   "status": {"replicas": 4, "fullyLabeledReplicas": 4, "readyReplicas": 4,
                              "availableReplicas": 4, "observedGeneration": 2}}),
        );
        check(
            "minReadySeconds: ready pods become available only after the window",
            rs(json!({"spec": {"minReadySeconds": 60}})),
            vec![
                pod("a", EARLY, json!({})),
                pod("b", Some("2024-01-01T00:09:30Z"), json!({})),
                {
                    let mut p = pod("c", None, json!({}));
                    if let Some(labels) = p.metadata.labels.as_mut() {
                        labels.remove("tier");
                    }
                    p
                },
            ],
            json!({"create": 0, "delete": [], "requeueSecs": 30,
                   "status": {"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                              "availableReplicas": 1, "observedGeneration": 2}}),
        );
        check(
            "creates come in bursts of at most 500; ReplicaFailure is cleared",
            rs(
                json!({"spec": {"replicas": 1200}, "status": {"replicas": 0, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}]}}),
            ),
            vec![],
            json!({"create": 500, "delete": [], "requeueSecs": null,
                   "status": {"replicas": 0, "observedGeneration": 2}}),
        );
        check(
            "a ReplicaSet being deleted only reports status",
            rs(json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})),
            vec![],
            json!({"create": 0, "delete": [], "requeueSecs": null,
                   "status": {"replicas": 0, "observedGeneration": 2}}),
        );
    }

    #[test]
    fn owned_pods_claims_adopts_and_releases() {
        let rs = rs(json!({}));
        let orphan = |name: &str| pod(name, EARLY, json!({"metadata": {"ownerReferences": null}}));
        let pods = vec![
            pod("mine", EARLY, json!({})),
            orphan("orphan"),
            pod(
                "other-owner",
                EARLY,
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "x", "uid": "x-uid", "controller": true}]}}),
            ),
            pod(
                "relabeled",
                EARLY,
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
            pod("done", EARLY, json!({"status": {"phase": "Succeeded"}})),
            pod(
                "leaving",
                EARLY,
                json!({"metadata": {"deletionTimestamp": NOW}}),
            ),
            pod("elsewhere", EARLY, json!({"metadata": {"namespace": "x"}})),
            {
                let mut p = orphan("unselected");
                p.metadata.labels = None;
                p
            },
        ];
        let names = |v: &[&Pod]| -> Vec<String> {
            v.iter().map(|p| name(&p.metadata).to_owned()).collect()
        };
        let owned = owned_pods(&rs, &pods);
        assert_eq!(names(&owned.active), ["mine"]);
        assert_eq!(names(&owned.adopt), ["orphan"]);
        assert_eq!(names(&owned.release), ["relabeled"]);
        assert_eq!(names(&owned.claimed()), ["mine", "orphan"]);

        let dying = super::tests::rs(json!({"metadata": {"deletionTimestamp": NOW}}));
        let owned = owned_pods(&dying, &pods);
        assert_eq!(names(&owned.active), ["mine", "relabeled"]);
        assert!(owned.adopt.is_empty() && owned.release.is_empty());
    }

    #[test]
    fn pod_from_template_copies_the_template() {
        let rs = rs(json!({"spec": {"template": {"metadata": {
            "annotations": {"a": "b"}, "finalizers": ["f"]}}}}));
        let got = serde_json::to_value(pod_from_template(&rs)).expect("json");
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-abc-", "namespace": "ns",
                    "labels": {"app": "web", "tier": "fe"}, "annotations": {"a": "b"},
                    "finalizers": ["f"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-abc", "uid": "rs-uid", "controller": true,
                        "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}
            })
        );
    }
}
