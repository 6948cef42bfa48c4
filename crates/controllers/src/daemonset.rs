//! What kube-controller-manager's DaemonSet controller decides for one DaemonSet: a Pod on
//! every Node its template's `nodeSelector` admits, none elsewhere, old Pods replaced
//! `maxUnavailable` at a time under `RollingUpdate`, and the status `kubectl rollout status`
//! reads (upstream `pkg/controller/daemon`). Pods are bound to their Node at creation.

use std::collections::BTreeMap;

use berth_api::selector::Selector;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::owners::{Claim, claim, controller_ref, nonzero};
use crate::pods::{is_terminal, is_terminating, name, namespace, node_name};
use crate::replicaset::is_available;

pub use crate::history::REVISION_LABEL;

/// What one sync of a DaemonSet should do.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSetPlan {
    /// Nodes to create a Pod on.
    pub create_on: Vec<String>,
    /// Pods to delete: on Nodes the DaemonSet no longer runs on, extras on a Node, and old
    /// revisions being rolled.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

/// The template's revision hash, as the `controller-revision-hash` label carries it.
pub fn revision(ds: &DaemonSet) -> String {
    crate::history::template_hash(ds.spec.as_ref().map(|s| &s.template))
}

/// The active Pods of the namespace the DaemonSet owns, or should adopt (the caller sets
/// the owner reference): finished and terminating Pods are left out.
pub fn owned_pods<'a>(ds: &DaemonSet, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| Selector::from_label_selector(&s.selector).ok());
    pods.into_iter()
        .filter(|p| namespace(&p.metadata) == namespace(&ds.metadata))
        .filter(|p| !is_terminal(p) && !is_terminating(p))
        .filter(|p| {
            matches!(
                claim(&ds.metadata, selector.as_ref(), &p.metadata),
                Claim::Owned | Claim::Adopt
            )
        })
        .collect()
}

/// Whether the DaemonSet runs on `node`: the template's `nodeSelector` matches its labels.
/// (Taints are tolerated: daemons run everywhere they are selected, as with the
/// tolerations upstream adds.)
pub fn runs_on(ds: &DaemonSet, node: &Node) -> bool {
    let wanted = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.node_selector.as_ref());
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    wanted.is_none_or(|w| w.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The Pod for `node`: the template with the revision label, the DaemonSet as controller,
/// bound to the Node, with the tolerations upstream gives daemon Pods.
pub fn pod_for(ds: &DaemonSet, node: &str, revision: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.to_owned());
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !tolerations.iter().any(|t| t.key.as_deref() == Some(key)) {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
    let ds_name = name(&ds.metadata);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{ds_name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
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

/// One sync: `nodes` of the cluster, `pods` as from [`owned_pods`], at `now`.
pub fn plan(ds: &DaemonSet, nodes: &[&Node], pods: &[&Pod], now: Timestamp) -> DaemonSetPlan {
    let spec = ds.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let current = revision(ds);
    let mut on_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        on_node
            .entry(node_name(pod).unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| runs_on(ds, n))
        .map(|n| name(&n.metadata))
        .collect();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let (mut create_on, mut delete) = (Vec::new(), Vec::new());
    let mut misscheduled = 0;
    for (node, pods) in &on_node {
        if !eligible.contains(&node.as_str()) {
            misscheduled += pods.len();
            delete.extend(pods.iter().map(|p| name(&p.metadata).to_owned()));
        }
    }
    // One Pod per eligible Node: the oldest stays.
    let mut kept: Vec<&Pod> = Vec::new();
    for node in &eligible {
        let mut here = on_node.get(*node).cloned().unwrap_or_default();
        here.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                name(&p.metadata).to_owned(),
            )
        });
        match here.split_first() {
            None => create_on.push((*node).to_owned()),
            Some((first, extra)) => {
                kept.push(first);
                delete.extend(extra.iter().map(|p| name(&p.metadata).to_owned()));
            }
        }
    }
    let desired = eligible.len();
    let available = kept
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let ready = kept.iter().filter(|p| crate::pods::is_ready(p)).count();
    let updated = kept
        .iter()
        .filter(|p| revision_of(p) == Some(current.as_str()))
        .count();
    // RollingUpdate: old Pods go while fewer than maxUnavailable daemons are unavailable.
    let rolling = spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling {
        let max_unavailable = spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .map_or(1, |m| scaled(m, desired))
            .max(1);
        let mut unavailable = desired - available;
        let mut old: Vec<&&Pod> = kept
            .iter()
            .filter(|p| revision_of(p) != Some(current.as_str()))
            .collect();
        // Unavailable old Pods first: replacing them costs nothing.
        old.sort_by_key(|p| is_available(p, min_ready, now));
        for pod in old {
            if !is_available(pod, min_ready, now) {
                delete.push(name(&pod.metadata).to_owned());
            } else if unavailable < max_unavailable {
                unavailable += 1;
                delete.push(name(&pod.metadata).to_owned());
            }
        }
    }
    if deleting {
        create_on.clear();
        delete.clear();
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let mut status = ds.status.clone().unwrap_or_default();
    status.desired_number_scheduled = count(desired);
    status.current_number_scheduled = count(kept.len());
    status.number_misscheduled = count(misscheduled);
    status.number_ready = count(ready);
    status.number_available = nonzero(count(available));
    status.number_unavailable = nonzero(count(desired.saturating_sub(available)));
    status.updated_number_scheduled = nonzero(count(updated));
    status.observed_generation = nonzero(ds.metadata.generation.unwrap_or(0));
    DaemonSetPlan {
        create_on,
        delete,
        status,
    }
}

/// An absolute count or a percentage of `total`, rounded up as upstream rounds maxUnavailable.
fn scaled(v: &IntOrString, total: usize) -> usize {
    match v {
        IntOrString::Int(n) => usize::try_from(*n).unwrap_or(0),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |p| (p * total).div_ceil(100)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-01-01T00:10:00Z".parse().expect("time")
    }

    fn ds(node_selector: Option<serde_json::Value>) -> DaemonSet {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if let Some(sel) = node_selector {
            spec["nodeSelector"] = sel;
        }
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}}
        }))
        .expect("ds")
    }

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("node")
    }

    fn pod(name: &str, node: &str, rev: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "labels": {"app": "agent", REVISION_LABEL: rev},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                             "name": "agent", "uid": "ds-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" },
                 "lastTransitionTime": "2024-01-01T00:01:00Z"}]}
        }))
        .expect("pod")
    }

    #[test]
    fn a_pod_on_every_selected_node_and_none_elsewhere() {
        let d = ds(Some(json!({"role": "edge"})));
        let rev = revision(&d);
        let (a, b, c) = (
            node("a", json!({"role": "edge"})),
            node("b", json!({"role": "edge"})),
            node("c", json!({})),
        );
        let on_c = pod("agent-c", "c", &rev, true);
        let on_a = pod("agent-a", "a", &rev, true);
        let p = plan(&d, &[&a, &b, &c], &[&on_a, &on_c], now());
        assert_eq!(p.create_on, ["b"]);
        assert_eq!(p.delete, ["agent-c"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.current_number_scheduled, 1);
        assert_eq!(p.status.number_misscheduled, 1);
        assert_eq!(p.status.number_available, Some(1));
        assert_eq!(p.status.observed_generation, Some(3));
        let made = pod_for(&d, "b", &rev);
        assert_eq!(
            made.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("b")
        );
        assert_eq!(
            made.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL)),
            Some(&rev)
        );
    }

    #[test]
    fn rolling_updates_replace_one_available_pod_at_a_time() {
        let d = ds(None);
        let rev = revision(&d);
        let nodes = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        ];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let old = [
            pod("agent-a", "a", "old", true),
            pod("agent-b", "b", "old", true),
            pod("agent-c", "c", "old", false),
        ];
        let pods: Vec<&Pod> = old.iter().collect();
        let p = plan(&d, &nodes, &pods, now());
        // c is unavailable already: it goes, and uses up the one unavailable Pod allowed.
        assert_eq!(p.delete, ["agent-c"]);
        assert_eq!(p.status.updated_number_scheduled, None);
        let old = [
            pod("agent-a", "a", "old", true),
            pod("agent-b", "b", "old", true),
            pod("agent-c", "c", &rev, true),
        ];
        let pods: Vec<&Pod> = old.iter().collect();
        let p = plan(&d, &nodes, &pods, now());
        assert_eq!(p.delete, ["agent-a"], "one available Pod at a time");
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        let new = [
            pod("agent-a", "a", &rev, true),
            pod("agent-b", "b", &rev, true),
            pod("agent-c", "c", &rev, true),
        ];
        let pods: Vec<&Pod> = new.iter().collect();
        let p = plan(&d, &nodes, &pods, now());
        assert!(p.delete.is_empty() && p.create_on.is_empty());
        assert_eq!(p.status.updated_number_scheduled, Some(3));
        assert_eq!(p.status.number_unavailable, None);
    }
}
